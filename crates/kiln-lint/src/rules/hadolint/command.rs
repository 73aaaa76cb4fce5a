//! How hadolint's rules read one shell command's words: options are the
//! words that start with `-` (`--name[=v]` is `name`, `-abc` is `a`, `b`,
//! `c`), everything else is an argument, and an option's value is the word
//! after it unless written with `=`.

use crate::script::SimpleCommand;

impl SimpleCommand {
    /// Named `name` (one of `names`) with one of `args` among its words.
    pub(crate) fn is(&self, names: &[&str], args: &[&str]) -> bool {
        names.contains(&self.name.as_str()) && self.args.iter().any(|a| args.contains(&a.as_str()))
    }

    /// The options of each word, with the word's index.
    pub(crate) fn flags(&self) -> Vec<(&str, usize)> {
        let mut out = Vec::new();
        for (i, arg) in self.args.iter().enumerate() {
            if arg == "-" || arg == "--" {
                continue;
            }
            if let Some(long) = arg.strip_prefix("--") {
                out.push((long.split('=').next().unwrap_or(long), i));
            } else if let Some(short) = arg.strip_prefix('-') {
                for (at, c) in short.char_indices() {
                    out.push((&short[at..at + c.len_utf8()], i));
                }
            }
        }
        out
    }

    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags().iter().any(|(f, _)| *f == flag)
    }

    pub(crate) fn has_any_flag(&self, flags: &[&str]) -> bool {
        self.flags().iter().any(|(f, _)| flags.contains(f))
    }

    pub(crate) fn count_flag(&self, flag: &str) -> usize {
        self.flags().iter().filter(|(f, _)| *f == flag).count()
    }

    pub(crate) fn has_arg(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// The words that are not options (`-` and `--` are words).
    pub(crate) fn args_no_flags(&self) -> Vec<&str> {
        let flagged: Vec<usize> = self.flags().iter().map(|(_, i)| *i).collect();
        self.args
            .iter()
            .enumerate()
            .filter(|(i, _)| !flagged.contains(i))
            .map(|(_, a)| a.as_str())
            .collect()
    }

    /// The command without the values of `flags` (the word after each,
    /// unless the option has `=`).
    pub(crate) fn drop_flag_values(&self, flags: &[&str]) -> SimpleCommand {
        let drop: Vec<usize> = self
            .flags()
            .iter()
            .filter(|(f, i)| flags.contains(f) && !self.args[*i].contains('='))
            .map(|(_, i)| i + 1)
            .collect();
        SimpleCommand {
            name: self.name.clone(),
            args: self
                .args
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, a)| a.clone())
                .collect(),
            line: self.line,
        }
    }

    /// The values given to option `flag` (the word after it).
    pub(crate) fn flag_values(&self, flag: &str) -> Vec<&str> {
        self.flags()
            .iter()
            .filter(|(f, _)| *f == flag)
            .filter_map(|(_, i)| self.args.get(i + 1))
            .map(String::as_str)
            .collect()
    }
}

/// The words after the first `install` (and any more `install`s right after).
pub(crate) fn after_install<'a>(words: &[&'a str]) -> Vec<&'a str> {
    words
        .iter()
        .skip_while(|w| **w != "install")
        .skip_while(|w| **w == "install")
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> SimpleCommand {
        SimpleCommand {
            name: words[0].into(),
            args: words[1..].iter().map(|w| w.to_string()).collect(),
            line: 1,
        }
    }

    #[test]
    fn options_and_their_values() {
        let c = cmd(&[
            "apt-get",
            "-qy",
            "--target-release=x",
            "-t",
            "bookworm",
            "install",
            "-",
            "a",
        ]);
        assert!(c.has_flag("q") && c.has_flag("y") && c.has_flag("target-release"));
        assert_eq!(c.args_no_flags(), ["bookworm", "install", "-", "a"]);
        assert_eq!(
            c.drop_flag_values(&["t", "target-release"]).args_no_flags(),
            ["install", "-", "a"]
        );
        assert_eq!(c.flag_values("t"), ["bookworm"]);
        assert_eq!(after_install(&c.args_no_flags()), ["-", "a"]);
    }
}
