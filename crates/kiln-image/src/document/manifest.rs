//! Image manifests and indexes (OCI, and Docker schema 2, whose manifest
//! and manifest list have the same shape), and platform selection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Platform;
use crate::document::Descriptor;
use crate::media::{self, Format};

/// A single-platform image: a config and layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    /// Required by Docker schema 2, recommended by OCI: kiln always writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A schema 2 manifest with `format`'s media type.
    pub fn new(format: Format, config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(format.manifest().to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The config and the layers: every blob this manifest needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// A multi-platform image: an OCI index or a Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An index with `format`'s media type (OCI index or Docker manifest list).
    pub fn new(format: Format, manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(format.index().to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The image manifest that runs on `want`, picked as containerd does:
    /// entries are compared normalised (`arm64/v8` is `arm64`, `amd64/v1`
    /// is `amd64`); an exact match wins, then the closest older variant
    /// (`arm/v7` before `arm/v6` on an `arm/v7` host), then index order.
    /// Entries without a platform, and attestation manifests (BuildKit's
    /// `unknown/unknown`), never match.
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        let want = Platform::from_parts(&want.os, &want.architecture, want.variant.as_deref());
        let mut best: Option<(u32, &Descriptor)> = None;
        for d in &self.manifests {
            if !media::is_manifest(&d.media_type) {
                continue;
            }
            let Some(p) = d.platform() else { continue };
            if !want.matches(&p) {
                continue;
            }
            let rank = if p == want {
                u32::MAX
            } else {
                variant_level(p.variant.as_deref())
            };
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, d));
            }
        }
        best.map(|(_, d)| d)
    }

    /// The normalised platforms of the image manifests, in index order.
    pub fn platforms(&self) -> Vec<Platform> {
        self.manifests
            .iter()
            .filter(|d| media::is_manifest(&d.media_type))
            .filter_map(Descriptor::platform)
            .filter(|p| p.os != "unknown")
            .collect()
    }
}

/// `v7` → 7; no variant is the lowest level.
fn variant_level(variant: Option<&str>) -> u32 {
    variant
        .and_then(|v| v.trim_start_matches('v').parse().ok())
        .unwrap_or(0)
}
