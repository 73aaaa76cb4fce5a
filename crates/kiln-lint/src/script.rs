//! A small command splitter for the shell text of a `RUN`: enough to find
//! which programs a step runs, with which words, on which line. Not a shell.
//!
//! It splits on `&&`, `||`, `;`, `|`, `&`, newlines and parentheses, removes
//! quotes and escapes, drops redirections (`> f`, `2>&1`, `<<EOF`) and
//! comments, peels `VAR=value` prefixes and the wrappers `sudo`, `env`,
//! `nohup`, `timeout`, `exec`, `command`, `nice`, `xargs`, and reads
//! `sh -c 'script'` again as a script. Limits: `$(...)` and backquotes stay
//! inside the word they appear in (their commands are not seen), control
//! structures (`if`, `for`, `case`) are only stripped of their keywords,
//! variables are not expanded, and heredocs inside the script are not read.

/// One word of a command and the Dockerfile line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) text: String,
    pub(crate) line: usize,
}

/// One program run by a script, wrappers and assignments peeled off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// The program's base name (`/usr/bin/apt-get` → `apt-get`).
    pub(crate) name: String,
    /// The program as written (`/etc/init.d/nginx`).
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) line: usize,
    /// `VAR=value` given to this command only (prefix or `env`).
    pub(crate) env: Vec<(String, String)>,
    /// Variables exported earlier in the same script (`export X=y`).
    pub(crate) exported: Vec<(String, String)>,
    /// Ended by a lone `&`.
    pub(crate) background: bool,
    pub(crate) nohup: bool,
    /// Run under `timeout DURATION`.
    pub(crate) timeout: bool,
}

impl Invocation {
    /// The value of `name` for this command: its own assignments, then the
    /// script's exports.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .chain(self.exported.iter().rev())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A character of the script with its line.
type Chars = Vec<(char, usize)>;

/// Joins the lines of an instruction as BuildKit does: `escape` + newline
/// continues the line, and blank or comment lines after a continuation are
/// skipped. Each character keeps its Dockerfile line.
pub(crate) fn join_instruction(lines: &[&str], first_line: usize, escape: char) -> Chars {
    let mut out = Vec::new();
    let mut continued = false;
    for (i, raw) in lines.iter().enumerate() {
        let line = first_line + i;
        let trimmed = raw.trim_start();
        if continued && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let end = raw.trim_end_matches([' ', '\t']);
        if let Some(body) = end.strip_suffix(escape) {
            out.extend(body.chars().map(|c| (c, line)));
            continued = true;
        } else {
            out.extend(raw.chars().map(|c| (c, line)));
            out.push(('\n', line));
            continued = false;
        }
    }
    out
}

/// A script body (heredoc) whose first line is `first_line`.
pub(crate) fn body_chars(text: &str, first_line: usize) -> Chars {
    let mut line = first_line;
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        out.push((c, line));
        if c == '\n' {
            line += 1;
        }
    }
    out
}

/// Words of one simple command, whether a lone `&` ended it, and whether
/// a pipe (`|`, `|&`) did.
struct RawCommand {
    words: Vec<Word>,
    background: bool,
    piped: bool,
}

// The macros reset state that the last expansion leaves unread.
#[allow(unused_assignments)]
fn lex(chars: &[(char, usize)]) -> Vec<RawCommand> {
    let mut commands = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word = String::new();
    let mut word_line = 0;
    let mut in_word = false;
    let mut skip_next_word = false;
    let mut i = 0;
    let n = chars.len();
    macro_rules! end_word {
        () => {
            if in_word {
                if skip_next_word {
                    skip_next_word = false;
                } else {
                    words.push(Word {
                        text: std::mem::take(&mut word),
                        line: word_line,
                    });
                }
                word.clear();
                in_word = false;
            }
        };
    }
    macro_rules! end_command {
        ($bg:expr) => {
            end_command!($bg, false)
        };
        ($bg:expr, $pipe:expr) => {
            end_word!();
            skip_next_word = false;
            if !words.is_empty() {
                commands.push(RawCommand {
                    words: std::mem::take(&mut words),
                    background: $bg,
                    piped: $pipe,
                });
            }
        };
    }
    while i < n {
        let (c, line) = chars[i];
        let next = chars.get(i + 1).map(|&(c, _)| c);
        if !in_word {
            word_line = line;
        }
        match c {
            ' ' | '\t' | '\r' => end_word!(),
            '\n' => {
                end_command!(false);
            }
            '#' if !in_word => {
                while i < n && chars[i].0 != '\n' {
                    i += 1;
                }
                continue;
            }
            '\\' => {
                match next {
                    Some('\n') => {}
                    Some(e) => {
                        word.push(e);
                        in_word = true;
                    }
                    None => {}
                }
                i += 2;
                continue;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < n && chars[i].0 != '\'' {
                    word.push(chars[i].0);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < n && chars[i].0 != '"' {
                    if chars[i].0 == '\\' && i + 1 < n {
                        let e = chars[i + 1].0;
                        if !matches!(e, '"' | '\\' | '$' | '`') {
                            word.push('\\');
                        }
                        if e != '\n' {
                            word.push(e);
                        }
                        i += 2;
                        continue;
                    }
                    word.push(chars[i].0);
                    i += 1;
                }
            }
            '$' if matches!(next, Some('(') | Some('{')) => {
                // $(...) and ${...}: kept in the word, balanced.
                let (open, close) = if next == Some('(') {
                    ('(', ')')
                } else {
                    ('{', '}')
                };
                in_word = true;
                word.push('$');
                let mut depth = 0;
                i += 1;
                while i < n {
                    let ch = chars[i].0;
                    word.push(ch);
                    if ch == open {
                        depth += 1;
                    } else if ch == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            '`' => {
                in_word = true;
                word.push('`');
                i += 1;
                while i < n && chars[i].0 != '`' {
                    word.push(chars[i].0);
                    i += 1;
                }
                word.push('`');
            }
            '&' | '|' | ';' | '(' | ')' => {
                if c == '&' && next == Some('>') {
                    // &> file, &>> file
                    end_word!();
                    i += 2;
                    while i < n && chars[i].0 == '>' {
                        i += 1;
                    }
                    skip_next_word = true;
                    continue;
                }
                let double = next == Some(c) && matches!(c, '&' | '|' | ';');
                end_command!(c == '&' && !double, c == '|' && !double);
                i += if double || (c == '|' && next == Some('&')) {
                    2
                } else {
                    1
                };
                continue;
            }
            '>' | '<' => {
                // A redirection: an all-digit word before it is its fd.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                } else {
                    end_word!();
                }
                i += 1;
                while i < n && matches!(chars[i].0, '>' | '<' | '|' | '-') {
                    i += 1;
                }
                if i < n && chars[i].0 == '&' {
                    i += 1;
                    while i < n && (chars[i].0.is_ascii_digit() || chars[i].0 == '-') {
                        i += 1;
                    }
                } else {
                    skip_next_word = true;
                }
                continue;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    end_command!(false);
    commands
}

const RESERVED: [&str; 14] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
    "esac",
];

fn is_assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((name.to_string(), value.to_string()))
}

fn base_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Whether `name` is a POSIX-like shell whose scripts this module can read.
pub(crate) fn is_posix_shell(name: &str) -> bool {
    matches!(
        base_name(name),
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh" | "busybox"
    )
}

/// Splits a script into the programs it runs.
pub(crate) fn invocations(chars: &[(char, usize)]) -> Vec<Invocation> {
    process(lex(chars))
}

/// The program an exec-form command line runs (`["apt-get", "install"]`),
/// on `line`; a shell given `-c` has its script read.
pub(crate) fn argv_invocations(argv: &[String], line: usize) -> Vec<Invocation> {
    let words = argv
        .iter()
        .map(|a| Word {
            text: a.clone(),
            line,
        })
        .collect();
    process(vec![RawCommand {
        words,
        background: false,
        piped: false,
    }])
}

fn process(commands: Vec<RawCommand>) -> Vec<Invocation> {
    let mut out = Vec::new();
    let mut exported: Vec<(String, String)> = Vec::new();
    for raw in commands {
        let mut words = raw.words.into_iter().peekable();
        while words
            .peek()
            .is_some_and(|w| RESERVED.contains(&w.text.as_str()))
        {
            words.next();
        }
        let words: Vec<Word> = words.collect();
        let Some(first) = words.first() else { continue };
        if matches!(first.text.as_str(), "for" | "case" | "select") {
            continue;
        }
        if matches!(first.text.as_str(), "export" | "declare" | "typeset") {
            exported.extend(words[1..].iter().filter_map(|w| is_assignment(&w.text)));
            continue;
        }
        if let Some(inv) = peel(&words, raw.background, &exported) {
            // `sh -c 'script'`: the script's commands, on the line of `sh`.
            if is_posix_shell(&inv.name)
                && let Some(script) = dash_c_script(&inv.args)
            {
                let chars: Chars = script.chars().map(|c| (c, inv.line)).collect();
                let mut inner = invocations(&chars);
                for i in &mut inner {
                    i.env.splice(0..0, inv.env.iter().cloned());
                    i.exported.splice(0..0, exported.iter().cloned());
                    i.background |= inv.background;
                    i.nohup |= inv.nohup;
                    i.timeout |= inv.timeout;
                }
                out.extend(inner);
            } else {
                out.push(inv);
            }
        }
    }
    out
}

/// The script of `sh -c script`, `bash -exc script`.
pub(crate) fn dash_c_script(args: &[String]) -> Option<&str> {
    let mut iter = args.iter();
    let mut seen_c = false;
    for arg in iter.by_ref() {
        if arg.starts_with('-') && !arg.starts_with("--") && arg.contains('c') {
            seen_c = true;
        } else if arg == "-o" {
            continue;
        } else if !arg.starts_with('-') && seen_c {
            return Some(arg);
        }
    }
    None
}

fn peel(words: &[Word], background: bool, exported: &[(String, String)]) -> Option<Invocation> {
    let mut env = Vec::new();
    let mut nohup = false;
    let mut timeout = false;
    let mut i = 0;
    loop {
        while let Some(a) = words.get(i).and_then(|w| is_assignment(&w.text)) {
            env.push(a);
            i += 1;
        }
        let word = words.get(i)?;
        let skip_opts = |i: &mut usize, with_arg: &[&str]| {
            while let Some(w) = words.get(*i) {
                if w.text == "--" {
                    *i += 1;
                    break;
                }
                if !w.text.starts_with('-') || w.text == "-" {
                    break;
                }
                *i += if with_arg.contains(&w.text.as_str()) {
                    2
                } else {
                    1
                };
            }
        };
        match base_name(&word.text) {
            "sudo" => {
                i += 1;
                skip_opts(
                    &mut i,
                    &["-u", "-g", "-C", "-h", "-p", "-r", "-t", "-U", "-D"],
                );
            }
            "env" => {
                i += 1;
                skip_opts(&mut i, &["-u", "-C", "-S"]);
            }
            "nohup" => {
                nohup = true;
                i += 1;
            }
            "exec" | "command" | "builtin" | "stdbuf" | "ionice" => {
                i += 1;
                skip_opts(&mut i, &["-a", "-c", "-n", "-i", "-o", "-e"]);
            }
            "nice" => {
                i += 1;
                skip_opts(&mut i, &["-n"]);
            }
            "timeout" => {
                timeout = true;
                i += 1;
                skip_opts(&mut i, &["-s", "-k", "--signal", "--kill-after"]);
                i += 1; // the duration
            }
            "xargs" => {
                i += 1;
                skip_opts(
                    &mut i,
                    &["-n", "-P", "-I", "-L", "-d", "-s", "-a", "-E", "-i"],
                );
            }
            name => {
                return Some(Invocation {
                    name: name.to_string(),
                    program: word.text.clone(),
                    args: words[i + 1..].iter().map(|w| w.text.clone()).collect(),
                    line: word.line,
                    env,
                    exported: exported.to_vec(),
                    background,
                    nohup,
                    timeout,
                });
            }
        }
    }
}

/// One simple command as a shell parser sees it, the way hadolint's rules
/// read a `RUN`: the first word is the name (no wrapper is peeled but
/// `command`, `builtin`, `exec` and `busybox`, as ShellCheck's
/// `getCommandName` does), every word after it is an argument, and the
/// commands inside `$(...)` and backquotes are commands too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimpleCommand {
    pub(crate) name: String,
    /// The words after the first, unquoted; `$VAR` written `${VAR}`.
    pub(crate) args: Vec<String>,
    pub(crate) line: usize,
}

/// A script's simple commands in order (each before those nested in its
/// words), and whether it pipes one command into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Script {
    pub(crate) commands: Vec<SimpleCommand>,
    pub(crate) pipes: bool,
}

impl Script {
    /// Adds another script's commands (a heredoc body) after these.
    pub(crate) fn extend(&mut self, other: Script) {
        self.commands.extend(other.commands);
        self.pipes |= other.pipes;
    }
}

/// The simple commands of a script (see [`SimpleCommand`]).
pub(crate) fn simple_commands(chars: &[(char, usize)]) -> Script {
    let mut script = Script::default();
    for raw in lex(chars) {
        script.pipes |= raw.piped;
        let mut words = raw.words.as_slice();
        while words
            .first()
            .is_some_and(|w| RESERVED.contains(&w.text.as_str()))
        {
            words = &words[1..];
        }
        let nested: Vec<Script> = words
            .iter()
            .flat_map(|w| nested_scripts(&w.text, w.line))
            .map(|inner| simple_commands(&inner))
            .collect();
        // `for`/`case` headers are not commands, nor are `[ ... ]` and
        // `[[ ... ]]`, which ShellCheck parses as conditions.
        let skip = words.first().is_some_and(|w| {
            matches!(
                w.text.as_str(),
                "for" | "case" | "select" | "in" | "[" | "[["
            )
        });
        let mut start = 0;
        while words
            .get(start)
            .is_some_and(|w| is_assignment(&w.text).is_some())
        {
            start += 1;
        }
        if !skip && let Some(first) = words.get(start) {
            script.commands.push(SimpleCommand {
                name: effective_name(&words[start..]),
                args: words[start + 1..]
                    .iter()
                    .map(|w| braced_variables(&w.text))
                    .collect(),
                line: first.line,
            });
        }
        for inner in nested {
            script.extend(inner);
        }
    }
    script
}

/// The name ShellCheck gives a command: the first word, or for `command`,
/// `builtin`, `busybox` and `exec` the word they run.
fn effective_name(words: &[Word]) -> String {
    let first = words[0].text.as_str();
    let rest = &words[1..];
    let target = match first {
        "command" | "builtin" | "busybox" => rest.first().filter(|w| !w.text.starts_with('-')),
        "exec" => {
            let mut i = 0;
            while let Some(w) = rest.get(i) {
                match w.text.as_str() {
                    "-a" => i += 2,
                    t if t.starts_with('-') => i += 1,
                    _ => break,
                }
            }
            rest.get(i)
        }
        _ => None,
    };
    target.map_or(first, |w| w.text.as_str()).to_string()
}

/// The scripts inside `$(...)` and backquotes in a word, each on `line`.
fn nested_scripts(word: &str, line: usize) -> Vec<Chars> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars.get(i + 1) == Some(&'(') && chars.get(i + 2) != Some(&'(') {
            let mut depth = 0;
            let mut j = i + 1;
            while j < chars.len() {
                match chars[j] {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            out.push(
                chars[i + 2..j.min(chars.len())]
                    .iter()
                    .map(|&c| (c, line))
                    .collect(),
            );
            i = j + 1;
        } else if chars[i] == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '`')
                .map_or(chars.len(), |p| i + 1 + p);
            out.push(chars[i + 1..end].iter().map(|&c| (c, line)).collect());
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// `$NAME` written as `${NAME}`, as ShellCheck's simplified words have it.
fn braced_variables(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        let starts_name = chars
            .peek()
            .is_some_and(|&n| n.is_ascii_alphabetic() || n == '_');
        if c == '$' && starts_name {
            out.push_str("${");
            while let Some(&n) = chars.peek() {
                if !(n.is_ascii_alphanumeric() || n == '_') {
                    break;
                }
                out.push(n);
                chars.next();
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(script: &str) -> Vec<(String, usize, bool)> {
        invocations(&body_chars(script, 1))
            .into_iter()
            .map(|i| (i.name, i.line, i.background))
            .collect()
    }

    #[test]
    fn splits_on_operators_and_keeps_lines() {
        assert_eq!(
            names("a x && b 'y && z' || c;d | e\nf 2>&1 &\ng > /dev/null"),
            vec![
                ("a".into(), 1, false),
                ("b".into(), 1, false),
                ("c".into(), 1, false),
                ("d".into(), 1, false),
                ("e".into(), 1, false),
                ("f".into(), 2, true),
                ("g".into(), 3, false),
            ]
        );
    }

    #[test]
    fn peels_prefixes_and_wrappers() {
        let inv = invocations(&body_chars(
            "X=1 sudo -E env Y=2 nohup /usr/bin/apt-get install -y a",
            1,
        ));
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].name, "apt-get");
        assert_eq!(inv[0].args, ["install", "-y", "a"]);
        assert_eq!(inv[0].var("X"), Some("1"));
        assert_eq!(inv[0].var("Y"), Some("2"));
        assert!(inv[0].nohup);
    }

    #[test]
    fn reads_sh_c_and_exports() {
        let inv = invocations(&body_chars(
            "export DEBIAN_FRONTEND=noninteractive; sh -c 'apt-get update && apt-get install -y x'",
            1,
        ));
        assert_eq!(inv.len(), 2);
        assert_eq!(inv[1].var("DEBIAN_FRONTEND"), Some("noninteractive"));
    }

    #[test]
    fn simple_commands_are_named_by_their_first_word() {
        let script = simple_commands(&body_chars(
            "X=1 sudo apt-get install -y $PKG | tee log\nx=$(cd /; ls `pwd`) && exec -a n apt-get update\nfor f in a b; do rm $f; done",
            1,
        ));
        let got: Vec<(&str, usize)> = script
            .commands
            .iter()
            .map(|c| (c.name.as_str(), c.line))
            .collect();
        assert_eq!(
            got,
            [
                ("sudo", 1),
                ("tee", 1),
                ("cd", 2),
                ("ls", 2),
                ("pwd", 2),
                ("apt-get", 2),
                ("rm", 3)
            ]
        );
        assert_eq!(
            script.commands[0].args,
            ["apt-get", "install", "-y", "${PKG}"]
        );
        assert!(script.pipes);
        assert!(!simple_commands(&body_chars("a || b && c", 1)).pipes);
    }

    #[test]
    fn joins_continuations_skipping_comments() {
        let lines = ["RUN a \\", "  # note", "  && b `", "c"];
        let chars = join_instruction(&lines, 10, '\\');
        let got: Vec<_> = invocations(&chars)
            .into_iter()
            .map(|i| (i.name, i.line))
            .collect();
        assert_eq!(got, [("RUN".to_string(), 10), ("b".to_string(), 12)]);
    }
}
