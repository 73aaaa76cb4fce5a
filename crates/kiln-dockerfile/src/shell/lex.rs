//! The lexer proper: quotes, escapes, `$` expansion and word splitting.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::str::Chars;

use super::env::{Env, EnvCase};
use super::error::{ExpandError, ExpandErrorKind};
use super::pattern;
use super::unicode;

/// How deep `${…}` substitutions may nest (`${A:-${B:-${C}}}` is 3 levels).
///
/// BuildKit has no limit; kiln stops here so that no input can overflow the
/// stack. Real Dockerfiles nest two or three levels.
pub const MAX_NESTING: usize = 100;

/// BuildKit's shell-word lexer (`shell.Lex`).
///
/// The flags are the ones BuildKit's parser and dispatcher set for
/// particular uses; all are off for ordinary expansion of instruction
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lex {
    /// The escape character: `\` by default, `` ` `` after `# escape=``.
    pub escape: char,
    /// Keep quote characters in the result (quotes still group text).
    pub raw_quotes: bool,
    /// Keep escape characters in the result (they still escape).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written (`$X`, `${X}`,
    /// `${X:-w}`, …) instead of expanding them. Used to look for heredocs
    /// before the build arguments are known.
    pub skip_unset_env: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
    /// How variable names compare.
    pub platform: EnvCase,
}

/// The result of [`Lex::process_word_with_matches`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Expanded {
    /// The expanded word.
    pub value: String,
    /// Names looked up and found (as written in the word).
    pub matched: BTreeSet<String>,
    /// Names looked up and not found (as written in the word).
    pub unmatched: BTreeSet<String>,
}

impl Default for Lex {
    fn default() -> Lex {
        Lex::new('\\')
    }
}

impl Lex {
    /// A lexer with the given escape character and every flag off.
    pub fn new(escape: char) -> Lex {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
            platform: EnvCase::Sensitive,
        }
    }

    /// Expand `word` into one string; white space is kept.
    pub fn process_word<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.run(word, env).map(|done| done.value)
    }

    /// Expand `word` and split it into words on white space that is not
    /// quoted or escaped. As in a shell, the value of an unquoted `$X` (and
    /// the operand of an unquoted `${X:-…}`) is split too, a quoted one is
    /// not. Empty words are dropped (`""` alone gives no word).
    pub fn process_words<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.run(word, env).map(|done| done.words)
    }

    /// Like [`process_word`](Lex::process_word), and also report which
    /// variable names were looked up, found or not (for linting, e.g.
    /// BuildKit's `UndefinedVar`).
    pub fn process_word_with_matches<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Expanded, ExpandError> {
        self.run(word, env).map(|done| Expanded {
            value: done.value,
            matched: done.matched,
            unmatched: done.unmatched,
        })
    }

    fn run<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Done, ExpandError> {
        let mut chars = word.chars().peekable();
        // Go's text/scanner, which BuildKit reads the word with, skips a
        // byte order mark at the very start of its input.
        chars.next_if_eq(&'\u{feff}');
        let mut scan = Scanner {
            lex: self,
            env,
            chars,
            raw_escapes: self.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match scan.process_until(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Done {
                value,
                words,
                matched: scan.matched,
                unmatched: scan.unmatched,
            }),
            Err(kind) => Err(ExpandError {
                word: word.to_owned(),
                kind,
            }),
        }
    }
}

struct Done {
    value: String,
    words: Vec<String>,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// The words of a [`Lex::process_words`] result as they are built (lex.go
/// `wordsStruct`).
///
/// Empty words never come out: lex.go also tracks an `inWord` flag, but it
/// only splits when the current word is non-empty, so `a "" b` is `a`, `b`.
///
/// Each [`Scanner::process_until`] level has its own `Words`. Newer lex.go
/// shares one buffer (`shellWord.wordsBuffer`) between the nested levels and
/// resets it on entry, which drops the text before a `${X:-…}` from the
/// words (`pre${X:-a}` → `a`); that is a bug we do not copy.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    /// An unquoted character: white space ends the current word.
    fn add_char(&mut self, ch: char) {
        if !unicode::is_space(ch) {
            self.current.push(ch);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// An escaped character: never splits.
    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
    }

    /// The value of an unquoted `$` expansion: split on its white space.
    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    /// A quoted string: never splits.
    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// One run of the lexer over one word (lex.go `shellWord`).
struct Scanner<'a, E: ?Sized> {
    lex: &'a Lex,
    env: &'a E,
    chars: Peekable<Chars<'a>>,
    /// Whether escape characters are kept; the `#`, `%` and `/` operators
    /// turn it on while their pattern is read, so the pattern sees `\*`.
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a, E: Env + ?Sized> Scanner<'a, E> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        self.chars.next()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// lex.go `getEnv`: look a name up and record whether it was found.
    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        let value = self.lex.platform.lookup(self.env, name);
        let seen = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !seen.contains(name) {
            seen.insert(name.to_owned());
        }
        value
    }

    /// Read up to `stop` (consumed, not included) or to the end of the word
    /// when `stop` is `None` (lex.go `processStopOn`). Returns the text and
    /// its split into words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandErrorKind> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandErrorKind> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            // The special characters are checked before the escape
            // character, as in lex.go (matters only for odd escape chars).
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_str(&value);
                }
                '\'' if quotes => {
                    let quoted = self.process_single_quote()?;
                    result.push_str(&quoted);
                    words.add_raw_str(&quoted);
                }
                '"' if quotes => {
                    let quoted = self.process_double_quote()?;
                    result.push_str(&quoted);
                    words.add_raw_str(&quoted);
                }
                '<' => {
                    // `<<` and the blanks after it stay in one word with the
                    // name that follows, so `<< EOF` reads as a heredoc
                    // marker (BuildKit v0.22, moby/buildkit#5817).
                    let marker = self.process_possible_heredoc();
                    result.push_str(&marker);
                    words.add_raw_str(&marker);
                }
                _ => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            // Callers turn this into their own message (BuildKit's "matching
            // }" text never reaches the user).
            Some('/') => Err(ExpandErrorKind::MissingSlash),
            Some(_) => Err(ExpandErrorKind::MissingBrace),
            None => Ok((result, words.finish())),
        }
    }

    /// `<`, or `<<`, an optional `-` and any blanks (lex.go
    /// `processPossibleHeredoc`; BuildKit's tests require `<<- EOF` too).
    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut marker = "<<".to_string();
        if self.peek() == Some('-') {
            self.next();
            marker.push('-');
        }
        while let Some(ch) = self.peek().filter(|c| unicode::is_space(*c)) {
            marker.push(ch);
            self.next();
        }
        marker
    }

    /// `'…'`: everything literal up to the next `'`; there is no escape.
    fn process_single_quote(&mut self) -> Result<String, ExpandErrorKind> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"…"`: `$` still expands; the escape character escapes only `"`, `$`
    /// and itself and is kept literally before anything else (`"\t"` is
    /// `\t`).
    fn process_double_quote(&mut self) -> Result<String, ExpandErrorKind> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // The quote is unterminated; the next turn says so.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                                self.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `$name`, `${name}` and `${name<op>…}` (lex.go `processDollar`).
    fn process_dollar(&mut self) -> Result<String, ExpandErrorKind> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                // `$` before something that is not a name is literal.
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value.to_owned(),
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ExpandErrorKind::TooDeep { limit: MAX_NESTING });
        }
        self.depth += 1;
        let result = self.process_braced();
        self.depth -= 1;
        result
    }

    /// The rest of `${…}` after the `{`.
    fn process_braced(&mut self) -> Result<String, ExpandErrorKind> {
        let name = self.process_name();
        let ch = self.next();
        // What follows the name, as BuildKit prints it in errors: Go's
        // string(rune) of the end of input (-1) is U+FFFD.
        let mut modifier: String = ch.unwrap_or(char::REPLACEMENT_CHARACTER).into();
        match ch {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value.to_owned(),
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                // `:` makes a set-but-empty variable count as unset. BuildKit
                // reads the next character as the operator whatever it is, and
                // only rejects an unknown one after reading the word and
                // looking the variable up (so `${X:=y}` is kept as written
                // under `skip_unset_env` when X is unset).
                let null_is_unset = ch == Some(':');
                let op = if null_is_unset { self.next() } else { ch };
                if null_is_unset {
                    modifier.push(op.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                let is_trim = matches!(op, Some('#' | '%'));
                if null_is_unset && is_trim {
                    return Err(ExpandErrorKind::UnsupportedModifier { modifier });
                }
                // Trim patterns keep their escapes, so `\*` reaches the
                // pattern matcher.
                let word = self.nested_until('}', is_trim, ExpandErrorKind::MissingBrace)?;
                let found = self.lookup(&name);
                if found.is_none() && self.lex.skip_unset_env {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                // An unset variable is the empty string from here on, as in
                // lex.go (so `${UNSET#\x}` still reports the bad pattern).
                let unset = found.is_none() || (null_is_unset && found == Some(""));
                let value = found.unwrap_or_default();
                match op {
                    Some('-') if unset => Ok(word),
                    Some('-') => Ok(value.to_owned()),
                    Some('+') if unset => Ok(String::new()),
                    Some('+') => Ok(word),
                    Some('?') if found.is_none() => Err(ExpandErrorKind::Unset {
                        name,
                        message: message_or(word, "is not allowed to be unset"),
                    }),
                    Some('?') if unset => Err(ExpandErrorKind::Empty {
                        name,
                        message: message_or(word, "is not allowed to be empty"),
                    }),
                    Some('?') => Ok(value.to_owned()),
                    Some(trim @ ('#' | '%')) => {
                        // `##`/`%%` (the word starts with the operator again)
                        // remove the longest match, `#`/`%` the shortest.
                        let (pattern, greedy) = match word.strip_prefix(trim) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        if trim == '%' {
                            pattern::trim_suffix(pattern, value, greedy)
                        } else {
                            pattern::trim_prefix(pattern, value, greedy)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier { modifier }),
                }
            }
            Some('/') => {
                let all = self.chars.next_if_eq(&'/').is_some();
                let pattern = self.nested_until('/', true, ExpandErrorKind::MissingSlash)?;
                let replacement = self.nested_until('}', true, ExpandErrorKind::MissingBrace)?;
                let found = self.lookup(&name);
                if found.is_none() && self.lex.skip_unset_env {
                    // BuildKit writes one `/` back even for `//`.
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                pattern::replace(&pattern, found.unwrap_or_default(), &replacement, all)
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier { modifier }),
        }
    }

    /// Read the operand of an operator up to `stop`. Any error that leaves
    /// the word used up is reported as the missing `stop` (lex.go checks
    /// `Peek() == EOF` after a failed `processStopOn`), so `${X:-"a}` is a
    /// missing `}`, not an unterminated quote.
    fn nested_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: ExpandErrorKind,
    ) -> Result<String, ExpandErrorKind> {
        match self.process_until(Some(stop), raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.at_end() => Err(missing),
            Err(err) => Err(err),
        }
    }

    /// A variable name (lex.go `processName`): a run of digits (positional
    /// parameters, `$10` is "10"), one special parameter character, or
    /// letters, digits and `_`. May be empty.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && unicode::is_digit(ch) {
                while let Some(digit) = self.chars.next_if(|&c| unicode::is_digit(c)) {
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                name.push(ch);
                return name;
            }
            if !unicode::is_letter(ch) && !unicode::is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// POSIX special parameters (XCU 2.5.2). `0` is caught as a digit first.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn message_or(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}
