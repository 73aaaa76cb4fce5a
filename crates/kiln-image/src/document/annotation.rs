//! `--annotation` as buildx spells it: `[TYPE[\[PLATFORM\]]:]KEY=VALUE`,
//! where TYPE says which document or descriptor gets it (`index`,
//! `index-descriptor`, `manifest`, `manifest-descriptor`).

use crate::Platform;

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// No type given: the tool's default (buildx's exporters: the manifest).
    Default,
    /// `index:` the index itself.
    Index,
    /// `index-descriptor:` the descriptor of the index (in an OCI layout).
    IndexDescriptor,
    /// `manifest:` each image manifest.
    Manifest,
    /// `manifest-descriptor:` each manifest's descriptor in the index.
    ManifestDescriptor,
}

impl AnnotationKind {
    /// The prefix as written (`""` for [`AnnotationKind::Default`]).
    pub fn as_str(self) -> &'static str {
        match self {
            AnnotationKind::Default => "",
            AnnotationKind::Index => "index",
            AnnotationKind::IndexDescriptor => "index-descriptor",
            AnnotationKind::Manifest => "manifest",
            AnnotationKind::ManifestDescriptor => "manifest-descriptor",
        }
    }
}

/// One `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub kind: AnnotationKind,
    /// `manifest-descriptor[linux/arm64]:`: only the entries of this
    /// platform (normalised); `None` for all.
    pub platform: Option<Platform>,
    pub key: String,
    pub value: String,
    /// As written, for messages.
    pub spec: String,
}

/// Why an `--annotation` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid annotation {spec:?}: {reason}")]
pub struct AnnotationError {
    pub spec: String,
    pub reason: String,
}

impl Annotation {
    /// Parses `KEY=VALUE`, `index:KEY=VALUE`,
    /// `manifest-descriptor[linux/amd64]:KEY=VALUE`, as buildx's
    /// `ParseAnnotations` does (the type is lower-case letters and dashes;
    /// the key has no blanks; the value is everything after the first `=`).
    pub fn parse(spec: &str) -> Result<Annotation, AnnotationError> {
        let bad = |reason: String| AnnotationError {
            spec: spec.to_string(),
            reason,
        };
        let (left, value) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected key=value".into()))?;
        let (kind, platform, key) =
            split_type(left).ok_or_else(|| bad("expected [type[platform]:]key=value".into()))?;
        let kind = match kind {
            "" => AnnotationKind::Default,
            "index" => AnnotationKind::Index,
            "index-descriptor" => AnnotationKind::IndexDescriptor,
            "manifest" => AnnotationKind::Manifest,
            "manifest-descriptor" => AnnotationKind::ManifestDescriptor,
            other => {
                return Err(bad(format!(
                    "unknown type {other:?} (index, index-descriptor, manifest, manifest-descriptor)"
                )));
            }
        };
        let platform = match platform {
            Some(p) => Some(Platform::parse(p).map_err(bad)?),
            None => None,
        };
        Ok(Annotation {
            kind,
            platform,
            key: key.to_string(),
            value: value.to_string(),
            spec: spec.to_string(),
        })
    }
}

/// `type[platform]:key` → its parts, as buildx's pattern
/// `^(?:([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?:)?(\S+)$` reads them.
fn split_type(left: &str) -> Option<(&str, Option<&str>, &str)> {
    let no_blank = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
    let typed = (|| {
        let kind_end = left
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .filter(|&i| i > 0)?;
        let (kind, rest) = left.split_at(kind_end);
        let (platform, rest) = match rest.strip_prefix('[') {
            Some(inner) => {
                let (p, after) = inner.split_once(']')?;
                let valid = !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'-'));
                (Some(valid.then_some(p)?), after)
            }
            None => (None, rest),
        };
        let key = rest.strip_prefix(':')?;
        no_blank(key).then_some((kind, platform, key))
    })();
    // Without a type, the whole left side is the key (`a:b` with a type
    // `a` that is no known type is still read as a type, as buildx does).
    typed.or_else(|| no_blank(left).then_some(("", None, left)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(spec: &str) -> (AnnotationKind, Option<String>, String, String) {
        let a = Annotation::parse(spec).unwrap();
        (a.kind, a.platform.map(|p| p.to_string()), a.key, a.value)
    }

    #[test]
    fn annotations_parse_as_buildx_reads_them() {
        use AnnotationKind::*;
        assert_eq!(
            parts("org.opencontainers.image.title=x"),
            (
                Default,
                None,
                "org.opencontainers.image.title".into(),
                "x".into()
            )
        );
        assert_eq!(
            parts("index:org.opencontainers.image.description=a = b"),
            (
                Index,
                None,
                "org.opencontainers.image.description".into(),
                "a = b".into()
            )
        );
        assert_eq!(
            parts("manifest-descriptor[linux/arm64/v8]:k=v"),
            (
                ManifestDescriptor,
                Some("linux/arm64".into()),
                "k".into(),
                "v".into()
            )
        );
        assert_eq!(
            parts("manifest:k="),
            (Manifest, None, "k".into(), "".into())
        );
        assert_eq!(
            parts("index-descriptor:k=v").0,
            IndexDescriptor,
            "parsed; whether it applies is the caller's business"
        );
        // buildx's pattern backtracks: with nothing after the colon, the
        // whole of it is an untyped key.
        assert_eq!(
            parts("index:=v"),
            (Default, None, "index:".into(), "v".into())
        );
        for (bad, why) in [
            ("novalue", "expected key=value"),
            ("bogus:k=v", "unknown type \"bogus\""),
            ("index:a b=v", "expected [type[platform]:]key=value"),
            ("=v", "expected [type[platform]:]key=value"),
            ("manifest[linux/nope/x/y]:k=v", "invalid platform"),
        ] {
            let err = Annotation::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid annotation {bad:?}: ")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }
}
