//! Content descriptors and the platform object they carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Platform};

/// `org.opencontainers.image.ref.name`: the name of an image in an OCI
/// layout's `index.json` (a tag, as BuildKit and `docker save` write it).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `io.containerd.image.name`: the full reference, as containerd and
/// `docker save` write it beside the ref name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// What an index or manifest says about another blob: its type, digest and
/// size (the OCI descriptor; a Docker schema 2 descriptor has the same shape).
///
/// Maps are `BTreeMap`s so that a serialised document is the same bytes on
/// every run: its digest is its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<ImagePlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Embedded content (base64), kept so that a document read and written
    /// again loses nothing kiln does not understand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }

    /// With `platform` set.
    pub fn with_platform(mut self, platform: &Platform) -> Descriptor {
        self.platform = Some(ImagePlatform::from(platform));
        self
    }

    /// The normalised platform (`aarch64` → `arm64`, `arm64/v8` → `arm64`).
    pub fn platform(&self) -> Option<Platform> {
        self.platform.as_ref().map(ImagePlatform::normalized)
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// The platform object of a descriptor, as written (not normalised):
/// what a document says is kept, and [`ImagePlatform::normalized`] gives
/// the value to compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImagePlatform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl ImagePlatform {
    pub fn normalized(&self) -> Platform {
        Platform::from_parts(&self.os, &self.architecture, self.variant.as_deref())
    }
}

impl From<&Platform> for ImagePlatform {
    fn from(p: &Platform) -> ImagePlatform {
        ImagePlatform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
            ..ImagePlatform::default()
        }
    }
}
