//! Image documents: manifests, indexes and configs, OCI and Docker schema 2.
//!
//! These are kiln's own serde types rather than `oci-spec`'s, because a
//! document's bytes are its identity and oci-spec fights that: its
//! annotations, labels, `ExposedPorts` and `Volumes` are `HashMap`s, so the
//! same config serialises to different bytes (and digests) from run to run;
//! and its config lacks Docker's `Healthcheck`, `OnBuild`, `Shell` and
//! `ArgsEscaped`, which Dockerfiles set. Here every map is a `BTreeMap` and
//! field order is fixed, so [`Document::new`] is canonical.
//!
//! A [`Document`] keeps the exact bytes it was parsed from: kiln never
//! re-serialises a document it did not write, since that would change its
//! digest.
//!
//! [`combine`] makes one index of several manifests and indexes (`kiln
//! imagetools create`), with [`Annotation`]s as buildx spells them.

mod annotation;
mod combine;
mod config;
mod descriptor;
mod manifest;

pub use annotation::{Annotation, AnnotationError, AnnotationKind};
pub use combine::{
    ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE, CombineError, IndexSource, combine,
};
pub use config::{ContainerConfig, Empty, Healthcheck, History, ImageConfig, RootFs};
pub use descriptor::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, ImagePlatform};
pub use manifest::{Index, Manifest};

/// `1970-01-01T00:00:00Z` for a Unix time: the form of `created` in image
/// configs and history (civil-from-days, H. Hinnant).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, the inverse of
/// [`rfc3339`] (fractions dropped); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(tz.as_bytes()[0], b'+' | b'-') => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600
                + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant), the inverse of `rfc3339`'s.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Digest;
use crate::media;

/// Why bytes are not the document they were said to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    #[error("invalid {kind} ({media_type}): {reason}")]
    Invalid {
        kind: &'static str,
        media_type: String,
        reason: String,
    },
    #[error("{kind} says its media type is {embedded} but it was described as {described}")]
    MediaTypeMismatch {
        kind: &'static str,
        embedded: String,
        described: String,
    },
    #[error("expected a {kind} media type, got {media_type}")]
    WrongKind {
        kind: &'static str,
        media_type: String,
    },
    #[error("unsupported {kind} schema version {version}: only schema 2 is supported")]
    SchemaVersion { kind: &'static str, version: u64 },
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Manifest {}
    impl Sealed for super::Index {}
    impl Sealed for super::ImageConfig {}
}

/// The document types: [`Manifest`], [`Index`] and [`ImageConfig`].
pub trait DocumentKind: Serialize + DeserializeOwned + sealed::Sealed {
    /// `manifest`, `index`, `config`: for messages.
    const KIND: &'static str;

    /// The media type to assume when neither the describer nor the
    /// document names one.
    #[doc(hidden)]
    fn default_media_type() -> &'static str;

    /// Whether a document of this kind may have this media type.
    #[doc(hidden)]
    fn accepts(media_type: &str) -> bool;

    /// The `mediaType` (and `schemaVersion`) the document carries itself.
    #[doc(hidden)]
    fn embedded(&self) -> (Option<&str>, Option<u32>);
}

impl DocumentKind for Manifest {
    const KIND: &'static str = "manifest";

    fn default_media_type() -> &'static str {
        media::OCI_MANIFEST
    }

    fn accepts(media_type: &str) -> bool {
        media::is_manifest(media_type)
    }

    fn embedded(&self) -> (Option<&str>, Option<u32>) {
        (self.media_type.as_deref(), Some(self.schema_version))
    }
}

impl DocumentKind for Index {
    const KIND: &'static str = "index";

    fn default_media_type() -> &'static str {
        media::OCI_INDEX
    }

    fn accepts(media_type: &str) -> bool {
        media::is_index(media_type)
    }

    fn embedded(&self) -> (Option<&str>, Option<u32>) {
        (self.media_type.as_deref(), Some(self.schema_version))
    }
}

impl DocumentKind for ImageConfig {
    const KIND: &'static str = "config";

    fn default_media_type() -> &'static str {
        media::OCI_CONFIG
    }

    // Artifacts put other JSON types in the config slot; any JSON that
    // parses as a config is taken.
    fn accepts(_: &str) -> bool {
        true
    }

    fn embedded(&self) -> (Option<&str>, Option<u32>) {
        (None, None)
    }
}

/// A parsed document with the exact bytes it came from (or was written
/// as), their digest and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<T> {
    value: T,
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
}

impl<T: DocumentKind> Document<T> {
    /// Serialises `value` canonically (fixed field order, sorted maps,
    /// compact JSON). A manifest or index takes its own `mediaType` when it
    /// has one, else the OCI type.
    pub fn new(value: T) -> Document<T> {
        let media_type = value
            .embedded()
            .0
            .unwrap_or(T::default_media_type())
            .to_string();
        Document::with_media_type(media_type, value)
    }

    /// As [`Document::new`], for configs: `Format::config()` gives the type.
    pub fn with_media_type(media_type: impl Into<String>, value: T) -> Document<T> {
        // Cannot fail: every map in these types has string keys.
        let bytes = serde_json::to_vec(&value).expect("documents serialise to JSON");
        Document {
            digest: Digest::of(&bytes),
            value,
            bytes,
            media_type: media_type.into(),
        }
    }

    /// Parses `bytes`, which a descriptor (or `Content-Type`) described as
    /// `media_type` (`""` for unknown), keeping them as they are.
    pub fn parse(media_type: &str, bytes: Vec<u8>) -> Result<Document<T>, DocumentError> {
        let value: T = serde_json::from_slice(&bytes).map_err(|e| DocumentError::Invalid {
            kind: T::KIND,
            media_type: media_type.to_string(),
            reason: e.to_string(),
        })?;
        let (embedded, version) = value.embedded();
        if let Some(version) = version
            && version != 2
        {
            return Err(DocumentError::SchemaVersion {
                kind: T::KIND,
                version: version.into(),
            });
        }
        // A document that claims another type than its describer said is
        // refused: an ambiguous document could be read as a manifest by one
        // tool and as an index by another (CVE-2021-41190).
        if let Some(embedded) = embedded
            && !media_type.is_empty()
            && embedded != media_type
        {
            return Err(DocumentError::MediaTypeMismatch {
                kind: T::KIND,
                embedded: embedded.to_string(),
                described: media_type.to_string(),
            });
        }
        let media_type = if media_type.is_empty() {
            embedded.unwrap_or(T::default_media_type()).to_string()
        } else {
            media_type.to_string()
        };
        if !T::accepts(&media_type) {
            return Err(DocumentError::WrongKind {
                kind: T::KIND,
                media_type,
            });
        }
        Ok(Document {
            digest: Digest::of(&bytes),
            value,
            bytes,
            media_type,
        })
    }
}

impl<T> Document<T> {
    pub fn value(&self) -> &T {
        &self.value
    }

    pub fn into_value(self) -> T {
        self.value
    }

    /// The bytes that were parsed or written: the bytes that are hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// A descriptor of these bytes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

/// What a manifest reference resolves to: one image, or an index of them.
// Unboxed: these live one at a time on the stack, while a document is
// looked at; the size difference is a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDocument {
    Manifest(Document<Manifest>),
    Index(Document<Index>),
}

impl ImageDocument {
    /// Parses a manifest or index. The media type decides when given
    /// (`""` for unknown); otherwise the document's own `mediaType`, then
    /// its shape (`manifests` makes an index).
    pub fn parse(media_type: &str, bytes: Vec<u8>) -> Result<ImageDocument, DocumentError> {
        let is_index = if media_type.is_empty() {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Probe {
                media_type: Option<String>,
                manifests: Option<serde::de::IgnoredAny>,
            }
            let probe: Probe =
                serde_json::from_slice(&bytes).map_err(|e| DocumentError::Invalid {
                    kind: "manifest",
                    media_type: String::new(),
                    reason: e.to_string(),
                })?;
            match probe.media_type.as_deref() {
                Some(t) => media::is_index(t),
                None => probe.manifests.is_some(),
            }
        } else if media::is_index(media_type) {
            true
        } else if media::is_manifest(media_type) {
            false
        } else {
            return Err(DocumentError::WrongKind {
                kind: "manifest",
                media_type: media_type.to_string(),
            });
        };
        Ok(if is_index {
            ImageDocument::Index(Document::parse(media_type, bytes)?)
        } else {
            ImageDocument::Manifest(Document::parse(media_type, bytes)?)
        })
    }

    pub fn descriptor(&self) -> Descriptor {
        match self {
            ImageDocument::Manifest(d) => d.descriptor(),
            ImageDocument::Index(d) => d.descriptor(),
        }
    }

    pub fn digest(&self) -> &Digest {
        match self {
            ImageDocument::Manifest(d) => d.digest(),
            ImageDocument::Index(d) => d.digest(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            ImageDocument::Manifest(d) => d.bytes(),
            ImageDocument::Index(d) => d.bytes(),
        }
    }

    /// The descriptors this document points at (manifests of an index;
    /// config and layers of a manifest).
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            ImageDocument::Manifest(d) => d.value().blobs().collect(),
            ImageDocument::Index(d) => d.value().manifests.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn rfc3339_round_trips_and_reads_offsets_and_fractions() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
        for t in [0, 1, 951_782_400, 1_709_208_000, 4_102_444_800, -86_400] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-02-29 12:00:00Z",
            "2024-02-29T12:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
