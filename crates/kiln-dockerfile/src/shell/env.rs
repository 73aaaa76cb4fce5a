//! The variables a word is expanded against.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use super::unicode;

/// A set of environment variables (or build arguments) to expand against.
///
/// `get` is an exact, case-sensitive look-up; a [`Lex`](super::Lex) whose
/// [`EnvCase`] is `Insensitive` finds the key itself through `keys`.
///
/// Implemented for lists of `(name, value)` pairs with the meaning of
/// BuildKit's `KEY=VALUE` lists (a later entry for the same name wins), and
/// for `BTreeMap`/`HashMap`.
pub trait Env {
    /// The value of `key`, compared exactly.
    fn get(&self, key: &str) -> Option<&str>;
    /// Every key, in the order later entries win (for a list: list order,
    /// duplicates included).
    fn keys(&self) -> Vec<&str>;
}

/// How variable names compare.
///
/// BuildKit picks this with Go build tags (`equal_env_unix.go`,
/// `equal_env_windows.go`), i.e. from the OS BuildKit itself runs on, not from
/// the target platform: a Linux builder is case-sensitive even for a Windows
/// image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EnvCase {
    /// Unix: `$pwd` and `$PWD` are different variables.
    #[default]
    Sensitive,
    /// Windows: names are upper-cased (Go's `strings.ToUpper`) before they
    /// are compared, so `$pwd` finds `PWD`; among keys that differ only in
    /// case the last one wins.
    Insensitive,
}

impl EnvCase {
    /// Look `name` up in `env` the way this platform compares names.
    pub(crate) fn lookup<'e, E: Env + ?Sized>(self, env: &'e E, name: &str) -> Option<&'e str> {
        match self {
            EnvCase::Sensitive => env.get(name),
            EnvCase::Insensitive => {
                // BuildKit's Windows getter stores every key upper-cased, so
                // the key written last among those equal after upper-casing
                // is the one that counts.
                let wanted = unicode::to_upper(name);
                let key = env
                    .keys()
                    .into_iter()
                    .rev()
                    .find(|key| unicode::to_upper(key) == wanted)?;
                env.get(key)
            }
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }

    fn keys(&self) -> Vec<&str> {
        self.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn get(&self, key: &str) -> Option<&str> {
        Env::get(self.as_slice(), key)
    }

    fn keys(&self) -> Vec<&str> {
        Env::keys(self.as_slice())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn get(&self, key: &str) -> Option<&str> {
        Env::get(self.as_slice(), key)
    }

    fn keys(&self) -> Vec<&str> {
        Env::keys(self.as_slice())
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Env for BTreeMap<K, V> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(AsRef::as_ref)
    }

    fn keys(&self) -> Vec<&str> {
        BTreeMap::keys(self).map(Borrow::borrow).collect()
    }
}

impl<K: Borrow<str> + Hash + Eq, V: AsRef<str>, S: BuildHasher> Env for HashMap<K, V, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(AsRef::as_ref)
    }

    fn keys(&self) -> Vec<&str> {
        HashMap::keys(self).map(Borrow::borrow).collect()
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }

    fn keys(&self) -> Vec<&str> {
        (**self).keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_entries_win() {
        let env = [("car", "hat"), ("car", "bike")];
        assert_eq!(env.get("car"), Some("bike"));
        assert_eq!(env.get("bus"), None);
    }

    #[test]
    fn insensitive_lookup_takes_the_last_key() {
        let env = vec![("PWD", "/home"), ("pwd", "/other")];
        assert_eq!(EnvCase::Insensitive.lookup(&env, "Pwd"), Some("/other"));
        assert_eq!(EnvCase::Sensitive.lookup(&env, "PWD"), Some("/home"));
        assert_eq!(EnvCase::Sensitive.lookup(&env, "Pwd"), None);
    }
}
