//! An instruction's `--flag` words, read as BuildKit's `bflag.go` reads them.
//!
//! Each instruction declares the flags it takes, then the words are checked
//! in order: a bare `--` ends them; every other word must start with `--`;
//! the name (up to the first `=`) must be declared, else `unknown flag`
//! with a case-sensitive suggestion among the declared names; only
//! repeatable flags may be given twice. A boolean takes `--x`, `--x=true`
//! or `--x=false` (any case), not `--x=`; a string needs `=` (`--x=` is
//! the empty string).

use crate::suggest::suggest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    Strings,
}

#[derive(Debug)]
struct Declared {
    name: &'static str,
    kind: Kind,
    value: String,
    values: Vec<String>,
    used: bool,
}

/// A flag word that `Flags::parse` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlagError {
    /// `unknown flag: --x`, with a declared name to suggest.
    Unknown {
        flag: String,
        suggestion: Option<String>,
    },
    /// Any other refusal; `flag` is the word up to its `=`.
    Invalid { flag: String, message: String },
}

/// The flags one instruction takes, and then the values it was given.
#[derive(Debug)]
pub(crate) struct Flags<'a> {
    words: &'a [String],
    declared: Vec<Declared>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(words: &'a [String]) -> Flags<'a> {
        Flags {
            words,
            declared: Vec::new(),
        }
    }

    fn declare(&mut self, name: &'static str, kind: Kind, value: &str) {
        debug_assert!(self.get(name).is_none(), "flag {name} declared twice");
        self.declared.push(Declared {
            name,
            kind,
            value: value.to_string(),
            values: Vec::new(),
            used: false,
        });
    }

    pub(crate) fn bool(&mut self, name: &'static str, default: bool) {
        self.declare(name, Kind::Bool, if default { "true" } else { "false" });
    }

    pub(crate) fn string(&mut self, name: &'static str, default: &str) {
        self.declare(name, Kind::String, default);
    }

    pub(crate) fn strings(&mut self, name: &'static str) {
        self.declare(name, Kind::Strings, "");
    }

    fn get(&self, name: &str) -> Option<&Declared> {
        self.declared.iter().find(|d| d.name == name)
    }

    /// Checks the words against the declared flags and records their values.
    pub(crate) fn parse(&mut self) -> Result<(), FlagError> {
        for word in self.words {
            if word == "--" {
                return Ok(());
            }
            let Some(body) = word.strip_prefix("--") else {
                return Err(FlagError::Invalid {
                    flag: word.clone(),
                    message: format!("arg should start with -- : {word}"),
                });
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let flag = format!("--{name}");
            let names: Vec<&str> = self.declared.iter().map(|d| d.name).collect();
            let Some(declared) = self.declared.iter_mut().find(|d| d.name == name) else {
                return Err(FlagError::Unknown {
                    suggestion: suggest(name, &names, true),
                    flag,
                });
            };
            if declared.used && declared.kind != Kind::Strings {
                return Err(FlagError::Invalid {
                    message: format!("duplicate flag specified: {flag}"),
                    flag,
                });
            }
            declared.used = true;
            let missing = |flag: String| FlagError::Invalid {
                message: format!("missing a value on flag: {flag}"),
                flag,
            };
            match (declared.kind, value) {
                (Kind::Bool, Some("")) => return Err(missing(flag)),
                (Kind::Bool, None) => declared.value = "true".to_string(),
                (Kind::Bool, Some(value)) => match value.to_lowercase().as_str() {
                    "true" => declared.value = "true".to_string(),
                    "false" => declared.value = "false".to_string(),
                    _ => {
                        return Err(FlagError::Invalid {
                            message: format!(
                                "expecting boolean value for flag {flag}, not: {value}"
                            ),
                            flag,
                        });
                    }
                },
                (Kind::String | Kind::Strings, None) => return Err(missing(flag)),
                (Kind::String, Some(value)) => declared.value = value.to_string(),
                (Kind::Strings, Some(value)) => declared.values.push(value.to_string()),
            }
        }
        Ok(())
    }

    /// A string flag's value (its default when not given).
    pub(crate) fn value(&self, name: &str) -> &str {
        self.get(name).map_or("", |d| d.value.as_str())
    }

    /// A string flag's value, `None` when empty: BuildKit treats an empty
    /// value as not given.
    pub(crate) fn non_empty(&self, name: &str) -> Option<String> {
        Some(self.value(name))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    pub(crate) fn is_true(&self, name: &str) -> bool {
        self.value(name) == "true"
    }

    /// A boolean flag's value when it was given at all.
    pub(crate) fn given_bool(&self, name: &str) -> Option<bool> {
        self.used(name).then(|| self.is_true(name))
    }

    pub(crate) fn used(&self, name: &str) -> bool {
        self.get(name).is_some_and(|d| d.used)
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.get(name).map(|d| d.values.clone()).unwrap_or_default()
    }

    /// The names of the flags given, sorted.
    pub(crate) fn used_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .declared
            .iter()
            .filter(|d| d.used)
            .map(|d| d.name.to_string())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn err(list: &[&str]) -> FlagError {
        let w = words(list);
        let mut f = Flags::new(&w);
        f.string("str1", "HI");
        f.bool("bool1", false);
        f.strings("many");
        f.parse().unwrap_err()
    }

    fn message(e: FlagError) -> String {
        match e {
            FlagError::Unknown { flag, suggestion } => {
                format!("unknown flag: {flag} {suggestion:?}")
            }
            FlagError::Invalid { message, .. } => message,
        }
    }

    #[test]
    fn values_and_defaults() {
        let w = words(&["--bool1", "--str1=BYE", "--many=a", "--many=b"]);
        let mut f = Flags::new(&w);
        f.string("str1", "HI");
        f.string("str2", "def");
        f.bool("bool1", false);
        f.bool("bool2", true);
        f.strings("many");
        f.parse().unwrap();
        assert_eq!(f.value("str1"), "BYE");
        assert_eq!(f.value("str2"), "def");
        assert!(f.is_true("bool1"));
        assert!(f.is_true("bool2"));
        assert_eq!(f.given_bool("bool2"), None);
        assert_eq!(f.values("many"), ["a", "b"]);
        assert_eq!(f.used_names(), ["bool1", "many", "str1"]);
    }

    #[test]
    fn empty_string_value_and_bool_forms() {
        let w = words(&["--str1=", "--bool1=FALSE"]);
        let mut f = Flags::new(&w);
        f.string("str1", "HI");
        f.bool("bool1", true);
        f.parse().unwrap();
        assert_eq!(f.value("str1"), "");
        assert_eq!(f.given_bool("bool1"), Some(false));
    }

    #[test]
    fn a_bare_double_dash_ends_the_flags() {
        let w = words(&["--", "--nonsense"]);
        let mut f = Flags::new(&w);
        f.parse().unwrap();
    }

    #[test]
    fn refusals() {
        assert_eq!(message(err(&["--str1"])), "missing a value on flag: --str1");
        assert_eq!(message(err(&["--many"])), "missing a value on flag: --many");
        assert_eq!(
            message(err(&["--bool1="])),
            "missing a value on flag: --bool1"
        );
        assert_eq!(
            message(err(&["--bool1=yes"])),
            "expecting boolean value for flag --bool1, not: yes"
        );
        assert_eq!(
            message(err(&["--str1=a", "--str1=b"])),
            "duplicate flag specified: --str1"
        );
        assert_eq!(message(err(&["-x"])), "arg should start with -- : -x");
        assert_eq!(
            message(err(&["--bool2"])),
            "unknown flag: --bool2 Some(\"bool1\")"
        );
        assert_eq!(message(err(&["--zzzzzz=1"])), "unknown flag: --zzzzzz None");
    }
}
