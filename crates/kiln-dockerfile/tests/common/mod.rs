//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The sub-directories of `dir`, sorted by name.
pub(crate) fn sorted_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// A small deterministic PRNG (xorshift64*), so generated cases are
/// reproducible from a seed without extra dependencies.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "from",
    "run",
    "Copy",
    "env",
    "onbuild",
    "RUNN",
    "FNTRYPOINT",
    "foo",
];

const FLAGS: &[&str] = &[
    "--from=build",
    "--mount=type=cache,target=/root/.cache",
    "--link",
    "--chown=1000:1000",
    "--a=\"b c\"",
    "--x='y z'",
    "--",
    "--network=none",
    "--flag",
    "--e=\\\"q",
    "--é=ü",
    "--interval=5s",
    "--platform=$BUILDPLATFORM",
];

const WORDS: &[&str] = &[
    "a",
    "b=c",
    "x=\"y z\"",
    "k='v w'",
    "$VAR",
    "${VAR:-def}",
    "\"quoted word\"",
    "'single'",
    "esc\\ aped",
    "/path/to",
    "a\\",
    "\\$x",
    "`tick`",
    "é",
    "♥",
    "\u{a0}nb",
    "[",
    "]",
    "\"",
    "'",
    "=",
    "==",
    "a=",
    "=b",
    "#notcomment",
    "<<EOF",
    "<<-EOF",
    "3<<EOF",
    "<<'EOF'",
    "<<\"E\"OF",
    "<<EOF2",
    "<< EOF",
    "<<",
    "alpine AS build",
    "AS",
    "scratch",
    "&&",
    "echo",
    "\\\\",
    "x\\\"y",
    "'a\\'b'",
    "\t",
    "${a}b",
    "c:\\\\dir",
];

const JSONS: &[&str] = &[
    "[\"a\", \"b\"]",
    "[\"a\"]",
    "[]",
    "['a']",
    "[\"a\",]",
    "[1]",
    "[\"a\", null]",
    "[\"a\"] trailing",
    "[ \"sh\", \"-c\", \"echo $HOME\" ]",
    "[\"\\u00e9\\t\\\"\"]",
    "[\"unterminated]",
    "[\"a\" \"b\"]",
    "[[\"x\"]]",
    "[\"<<EOF\"]",
    " [\"lead\"]",
    "[\"\\ud800\"]",
];

fn gen_word(rng: &mut Rng) -> String {
    let mut w = String::new();
    for _ in 0..=rng.below(2) {
        w.push_str(rng.pick(WORDS));
    }
    w
}

fn gen_args(rng: &mut Rng) -> String {
    if rng.chance(20) {
        return rng.pick(JSONS).to_string();
    }
    let n = rng.below(5);
    let mut parts = Vec::new();
    for _ in 0..n {
        parts.push(gen_word(rng));
    }
    let sep = if rng.chance(15) { "  \t" } else { " " };
    parts.join(sep)
}

fn gen_instruction(rng: &mut Rng, escape: char) -> String {
    let mut line = String::new();
    if rng.chance(10) {
        line.push_str(rng.pick(&["  ", "\t", " \u{a0}"]));
    }
    let kw = rng.pick(KEYWORDS);
    line.push_str(kw);
    if kw.eq_ignore_ascii_case("onbuild") && rng.chance(80) {
        line.push(' ');
        line.push_str(rng.pick(KEYWORDS));
    }
    for _ in 0..rng.below(3) {
        if rng.chance(40) {
            line.push(' ');
            line.push_str(rng.pick(FLAGS));
        }
    }
    let args = gen_args(rng);
    if !args.is_empty() || rng.chance(70) {
        line.push(' ');
        line.push_str(&args);
    }
    // Continuations, with comments, blank lines and trailing blanks.
    let mut out = line;
    for _ in 0..rng.below(3) {
        if !rng.chance(30) {
            break;
        }
        out.push(escape);
        if rng.chance(20) {
            out.push_str(rng.pick(&[" ", " \t", "  "]));
        }
        out.push('\n');
        if rng.chance(20) {
            out.push_str(rng.pick(&[
                "# a comment\n",
                "  # indented comment\n",
                "\n",
                "   \n",
                "#\n",
            ]));
        }
        out.push_str(rng.pick(&["", "  ", "\t"]));
        out.push_str(&gen_args(rng));
    }
    if rng.chance(5) {
        out.push(escape);
    }
    out.push('\n');
    // Heredoc bodies (right or wrong terminators).
    if out.contains("<<") && rng.chance(85) {
        for _ in 0..=rng.below(2) {
            let body = rng.pick(&[
                "echo hi\n",
                "\tindented $X\n",
                "# not a comment\n",
                "",
                "line one\nline two\n",
            ]);
            out.push_str(body);
            out.push_str(rng.pick(&["EOF\n", "\tEOF\n", "EOF2\n", "E\n", "EOF \n"]));
        }
    }
    out
}

/// A random Dockerfile built from the parser's tricky corners.
pub(crate) fn gen_dockerfile(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.chance(5) {
        out.push('\u{feff}');
    }
    let mut escape = '\\';
    if rng.chance(25) {
        let directive = rng.pick(&[
            "# escape=`\n",
            "#escape=\\\n",
            "# syntax=docker/dockerfile:1\n",
            "# check=skip=all\n",
            "# Escape = ` \n",
            "#  directive=x\n",
            "# escape=x\n",
            "# escape=`\n# escape=`\n",
            "# syntax=a\n# escape=`\n",
            "# comment\n# escape=`\n",
        ]);
        if directive.starts_with("# escape=`")
            || directive == "# Escape = ` \n"
            || directive.ends_with("a\n# escape=`\n")
        {
            escape = '`';
        }
        out.push_str(directive);
    }
    for _ in 0..=rng.below(6) {
        match rng.below(10) {
            0 => out.push_str(rng.pick(&["\n", "# comment\n", "   \n", "#\n", "\t# x\n"])),
            _ => out.push_str(&gen_instruction(rng, escape)),
        }
    }
    if rng.chance(10) {
        out = out.replace('\n', "\r\n");
    }
    if rng.chance(5) {
        out.pop();
    }
    out
}
