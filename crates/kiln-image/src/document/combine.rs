//! One index out of several manifests and indexes, as `docker buildx
//! imagetools create` makes it: an index source gives its entries, a
//! manifest source gives itself (with its config's platform).
//!
//! Unlike buildx, the entries are sorted (by platform, then digest; an
//! attestation manifest right after the image it describes), so the same
//! sources give the same index, and the same digest, in any order; and two
//! images of one platform are refused instead of both listed, since a
//! client would pick one of them at random.

use std::collections::BTreeMap;

use crate::Platform;
use crate::document::{
    Annotation, AnnotationKind, Descriptor, Document, ImageDocument, ImagePlatform, Index,
};
use crate::media::Format;

/// BuildKit's annotation on an attestation manifest in an index: its kind
/// (`attestation-manifest`), and the digest of the image it is about.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// A manifest or an index to put in a combined index.
#[derive(Debug, Clone)]
pub struct IndexSource {
    /// How the user named it (`localhost:5000/app@sha256:…`): for messages.
    pub name: String,
    pub document: ImageDocument,
    /// A manifest's platform (read from its config); unused for an index,
    /// whose entries carry their own.
    pub platform: Option<ImagePlatform>,
}

/// Why sources do not make an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CombineError {
    #[error("no sources to combine")]
    NoSources,
    #[error("{first} and {second} are both {platform}: an index holds one image per platform")]
    SamePlatform {
        platform: String,
        first: String,
        second: String,
    },
    #[error("{source_name}: the manifest's config names no platform (os and architecture)")]
    NoPlatform { source_name: String },
    #[error("annotation {spec:?}: {reason}")]
    Annotation { spec: String, reason: String },
}

/// An entry of the index being made, and what it came from.
struct Entry {
    descriptor: Descriptor,
    /// `localhost:5000/app@sha256:…`, or `sha256:… of localhost:5000/app:1`.
    origin: String,
}

/// The index of `sources` with `annotations` (only `index:` and
/// `manifest-descriptor:` ones apply: the others would change documents
/// that already exist). A single index source and no annotation give that
/// index's own bytes, as buildx does: a copy keeps its digest.
///
/// The bytes are JSON indented by two spaces, as buildx writes an index.
pub fn combine(
    sources: &[IndexSource],
    annotations: &[Annotation],
) -> Result<Document<Index>, CombineError> {
    if let ([only], []) = (sources, annotations)
        && let ImageDocument::Index(index) = &only.document
    {
        return Ok(index.clone());
    }
    if sources.is_empty() {
        return Err(CombineError::NoSources);
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut add = |descriptor: Descriptor, origin: String| {
        // The same manifest twice is listed once, what each says merged
        // (buildx's addDesc).
        if let Some(old) = entries
            .iter_mut()
            .find(|e| e.descriptor.digest == descriptor.digest)
        {
            if descriptor.platform.is_some() {
                old.descriptor.platform = descriptor.platform;
            }
            old.descriptor.annotations.extend(descriptor.annotations);
        } else {
            entries.push(Entry { descriptor, origin });
        }
    };
    for source in sources {
        match &source.document {
            ImageDocument::Index(index) => {
                for child in &index.value().manifests {
                    add(
                        child.clone(),
                        format!("{} of {}", child.digest, source.name),
                    );
                }
            }
            ImageDocument::Manifest(manifest) => {
                let platform = source
                    .platform
                    .clone()
                    .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
                    .ok_or_else(|| CombineError::NoPlatform {
                        source_name: source.name.clone(),
                    })?;
                let mut descriptor = manifest.descriptor();
                descriptor.platform = Some(platform);
                add(descriptor, source.name.clone());
            }
        }
    }
    let mut entries = order(entries)?;

    let format = if entries.iter().all(|e| {
        e.descriptor
            .media_type
            .starts_with("application/vnd.docker.")
    }) {
        Format::Docker
    } else {
        Format::Oci
    };
    let mut index_annotations = BTreeMap::new();
    for a in annotations {
        let refuse = |reason: &str| {
            Err(CombineError::Annotation {
                spec: a.spec.clone(),
                reason: reason.to_string(),
            })
        };
        if format == Format::Docker {
            return refuse(
                "every source is a Docker manifest, and a Docker manifest list has no annotations",
            );
        }
        match a.kind {
            AnnotationKind::Index => {
                index_annotations.insert(a.key.clone(), a.value.clone());
            }
            AnnotationKind::ManifestDescriptor => {
                for e in &mut entries {
                    let matches = match (&a.platform, e.descriptor.platform()) {
                        (None, _) => true,
                        (Some(want), Some(has)) => *want == has,
                        (Some(_), None) => false,
                    };
                    if matches {
                        e.descriptor
                            .annotations
                            .insert(a.key.clone(), a.value.clone());
                    }
                }
            }
            AnnotationKind::Default | AnnotationKind::Manifest => {
                return refuse(
                    "give it a type: index: or manifest-descriptor: (a manifest annotation would \
                     change the manifests, which exist already)",
                );
            }
            AnnotationKind::IndexDescriptor => {
                return refuse("an index pushed to a registry has no descriptor to annotate");
            }
        }
    }

    let mut index = Index::new(format, entries.into_iter().map(|e| e.descriptor).collect());
    index.annotations = index_annotations;
    // Cannot fail: every map in an index has string keys.
    let bytes = serde_json::to_vec_pretty(&index).expect("an index serialises to JSON");
    Ok(Document::parse(format.index(), bytes).expect("an index made here parses"))
}

/// The identity of an image entry's platform: two entries with the same
/// one are ambiguous. `os.version` tells Windows builds apart.
fn platform_key(d: &Descriptor) -> Option<(Platform, Option<String>)> {
    let platform = d.platform()?;
    (platform.os != "unknown").then(|| {
        let os_version = d.platform.as_ref().and_then(|p| p.os_version.clone());
        (platform, os_version)
    })
}

/// Images sorted by platform then digest (entries without a platform
/// last), each followed by its attestation manifests; two images of one
/// platform are an error naming both.
fn order(entries: Vec<Entry>) -> Result<Vec<Entry>, CombineError> {
    let attests = |e: &Entry| -> Option<String> {
        let a = &e.descriptor.annotations;
        (a.get(ANNOTATION_REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST))
            .then(|| a.get(ANNOTATION_REFERENCE_DIGEST).cloned())
            .flatten()
    };
    let digests: Vec<String> = entries
        .iter()
        .map(|e| e.descriptor.digest.to_string())
        .collect();
    // An attestation whose image is not here stands on its own.
    let (attestations, mut images): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| attests(e).is_some_and(|d| digests.contains(&d)));
    let key = |e: &Entry| {
        (
            platform_key(&e.descriptor).is_none(),
            platform_key(&e.descriptor),
            e.descriptor.platform(),
            e.descriptor.digest.to_string(),
        )
    };
    images.sort_by_key(key);
    for pair in images.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if let Some(p) = platform_key(&a.descriptor)
            && platform_key(&b.descriptor).as_ref() == Some(&p)
        {
            return Err(CombineError::SamePlatform {
                platform: match &p.1 {
                    Some(v) => format!("{} ({v})", p.0),
                    None => p.0.to_string(),
                },
                first: a.origin.clone(),
                second: b.origin.clone(),
            });
        }
    }
    let mut attestations = attestations;
    attestations.sort_by_key(|e| e.descriptor.digest.to_string());
    let mut out = Vec::with_capacity(images.len() + attestations.len());
    for image in images {
        let digest = image.descriptor.digest.to_string();
        out.push(image);
        let (mine, rest): (Vec<Entry>, Vec<Entry>) = attestations
            .into_iter()
            .partition(|a| attests(a).as_deref() == Some(digest.as_str()));
        out.extend(mine);
        attestations = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use crate::document::Manifest;
    use crate::media;

    fn manifest(seed: &str, format: Format) -> Document<Manifest> {
        let config = Descriptor::new(format.config(), Digest::of(seed.as_bytes()), 2);
        Document::new(Manifest::new(format, config, Vec::new()))
    }

    fn image(seed: &str, platform: &str) -> IndexSource {
        let m = manifest(seed, Format::Oci);
        IndexSource {
            name: format!("r/app@{}", m.digest()),
            document: ImageDocument::Manifest(m),
            platform: Some(ImagePlatform::from(&Platform::parse(platform).unwrap())),
        }
    }

    fn entries(index: &Document<Index>) -> Vec<(String, String)> {
        index
            .value()
            .manifests
            .iter()
            .map(|d| {
                (
                    d.platform
                        .as_ref()
                        .map_or("-".into(), |p| format!("{}/{}", p.os, p.architecture)),
                    d.digest.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_same_sources_in_any_order_give_the_same_index() {
        let (amd, arm) = (image("a", "linux/amd64"), image("b", "linux/arm64"));
        let one = combine(&[amd.clone(), arm.clone()], &[]).unwrap();
        let two = combine(&[arm.clone(), amd.clone()], &[]).unwrap();
        assert_eq!(one.digest(), two.digest());
        assert_eq!(one.bytes(), two.bytes());
        assert_eq!(one.media_type(), media::OCI_INDEX);
        let platforms: Vec<String> = entries(&one).into_iter().map(|e| e.0).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        // Indented JSON, as buildx writes it; the bytes parse back.
        let text = String::from_utf8(one.bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("{\n  \"schemaVersion\": 2,\n  \"mediaType\""),
            "{text}"
        );
        // The same image twice is listed once.
        let again = combine(&[amd.clone(), arm, amd], &[]).unwrap();
        assert_eq!(again.digest(), one.digest());
    }

    #[test]
    fn two_images_of_one_platform_are_refused_naming_both() {
        let (a, b) = (image("a", "linux/amd64"), image("b", "linux/amd64"));
        let err = combine(&[a.clone(), b.clone()], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&a.name) && msg.contains(&b.name), "{msg}");
        assert!(msg.contains("linux/amd64"), "{msg}");
        // arm64/v8 is arm64.
        let c = image("c", "linux/arm64/v8");
        let d = image("d", "linux/arm64");
        assert!(matches!(
            combine(&[c, d], &[]),
            Err(CombineError::SamePlatform { .. })
        ));
    }

    #[test]
    fn an_index_source_gives_its_entries_and_attestations_follow_their_image() {
        let arm = image("arm", "linux/arm64");
        let amd = manifest("amd", Format::Oci);
        let att = manifest("att", Format::Oci);
        let mut att_desc = att
            .descriptor()
            .with_platform(&Platform::from_parts("unknown", "unknown", None));
        att_desc.annotations.insert(
            ANNOTATION_REFERENCE_TYPE.into(),
            ATTESTATION_MANIFEST.into(),
        );
        att_desc
            .annotations
            .insert(ANNOTATION_REFERENCE_DIGEST.into(), amd.digest().to_string());
        // The attestation first in its index: kiln puts it after its image.
        let index = Document::new(Index::new(
            Format::Oci,
            vec![
                att_desc,
                amd.descriptor()
                    .with_platform(&Platform::parse("linux/amd64").unwrap()),
            ],
        ));
        let source = IndexSource {
            name: "r/app:amd".into(),
            document: ImageDocument::Index(index.clone()),
            platform: None,
        };
        // Alone and unannotated, an index is copied as it is.
        let copy = combine(std::slice::from_ref(&source), &[]).unwrap();
        assert_eq!(copy.bytes(), index.bytes());

        let merged = combine(&[arm.clone(), source.clone()], &[]).unwrap();
        assert_eq!(
            entries(&merged),
            [
                ("linux/amd64".into(), amd.digest().to_string()),
                ("unknown/unknown".into(), att.digest().to_string()),
                ("linux/arm64".into(), arm.document.digest().to_string()),
            ]
        );
        // Appending an image of a platform the index has is refused, with
        // the entry of the index named.
        let other_amd = image("amd2", "linux/amd64");
        let msg = combine(&[source, other_amd], &[]).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{} of r/app:amd", amd.digest())),
            "{msg}"
        );
    }

    #[test]
    fn index_and_descriptor_annotations_apply_the_others_are_refused() {
        let (amd, arm) = (image("a", "linux/amd64"), image("b", "linux/arm64"));
        let notes: Vec<Annotation> = [
            "index:org.opencontainers.image.description=multi",
            "manifest-descriptor[linux/arm64]:note=arm only",
            "manifest-descriptor:all=yes",
        ]
        .iter()
        .map(|s| Annotation::parse(s).unwrap())
        .collect();
        let index = combine(&[amd.clone(), arm.clone()], &notes).unwrap();
        let value = index.value();
        assert_eq!(
            value.annotations["org.opencontainers.image.description"],
            "multi"
        );
        assert_eq!(value.manifests[0].annotations.get("note"), None);
        assert_eq!(value.manifests[1].annotations["note"], "arm only");
        assert!(
            value
                .manifests
                .iter()
                .all(|m| m.annotations["all"] == "yes")
        );

        for bad in ["k=v", "manifest:k=v", "index-descriptor:k=v"] {
            let a = Annotation::parse(bad).unwrap();
            let err = combine(&[amd.clone(), arm.clone()], &[a]).unwrap_err();
            assert!(
                matches!(err, CombineError::Annotation { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn docker_manifests_make_a_manifest_list_without_annotations() {
        let source = |seed: &str, platform: &str| {
            let m = manifest(seed, Format::Docker);
            IndexSource {
                name: seed.into(),
                document: ImageDocument::Manifest(m),
                platform: Some(ImagePlatform::from(&Platform::parse(platform).unwrap())),
            }
        };
        let sources = [source("a", "linux/amd64"), source("b", "linux/arm/v7")];
        let list = combine(&sources, &[]).unwrap();
        assert_eq!(list.media_type(), media::DOCKER_MANIFEST_LIST);
        let a = Annotation::parse("index:k=v").unwrap();
        assert!(matches!(
            combine(&sources, &[a]),
            Err(CombineError::Annotation { .. })
        ));
        // One OCI entry makes it an OCI index.
        let mixed = [sources[0].clone(), image("c", "linux/s390x")];
        assert_eq!(combine(&mixed, &[]).unwrap().media_type(), media::OCI_INDEX);
    }

    #[test]
    fn a_manifest_without_a_platform_is_refused() {
        let mut source = image("a", "linux/amd64");
        source.platform = None;
        assert_eq!(
            combine(&[source.clone()], &[]).unwrap_err(),
            CombineError::NoPlatform {
                source_name: source.name
            }
        );
        assert_eq!(combine(&[], &[]).unwrap_err(), CombineError::NoSources);
    }
}
