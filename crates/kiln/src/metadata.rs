//! `--metadata-file`: what a build or `kiln imagetools create` made, in the
//! keys buildx writes (BuildKit's exporter response), so that CI steps
//! written for buildx read kiln's file unchanged:
//!
//! - `containerimage.digest`: the manifest, or the index of several
//!   platforms.
//! - `containerimage.descriptor`: its `mediaType`, `digest` and `size`, and
//!   for a single-platform image its `platform` (as BuildKit writes it).
//! - `containerimage.config.digest`: the config of a single-platform image.
//! - `image.name`: the names it was pushed to (or tagged as), comma-joined;
//!   pushed by digest, the repositories.
//!
//! buildx has no key for each platform's manifest of a multi-platform
//! build; kiln adds `containerimage.digest/<os>/<arch>[/<variant>]` and
//! `containerimage.config.digest/<platform>`, suffixed by the platform as
//! BuildKit suffixes its own per-platform keys (`containerimage.config/
//! linux/amd64`). buildx's `buildx.build.ref` names a builder, which kiln
//! does not have, and is left out.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_image::document::Descriptor;
use kiln_image::{Digest, Platform};
use serde::Serialize;

const IMAGE_DIGEST: &str = "containerimage.digest";
const IMAGE_DESCRIPTOR: &str = "containerimage.descriptor";
const CONFIG_DIGEST: &str = "containerimage.config.digest";
const IMAGE_NAME: &str = "image.name";

/// One platform's image of a build.
pub(crate) struct PlatformImage {
    pub(crate) platform: Platform,
    pub(crate) manifest: Descriptor,
    pub(crate) config: Digest,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Descriptor(Box<Descriptor>),
}

/// The keys, sorted as Go writes a map.
#[derive(Default)]
pub(crate) struct Metadata(BTreeMap<String, Value>);

impl Metadata {
    /// A build's image: `target` (a manifest, or the index of `images`),
    /// named `names` (comma-joined) when it was pushed or tagged.
    pub(crate) fn of_build(
        target: &Descriptor,
        images: &[PlatformImage],
        names: Option<String>,
    ) -> Metadata {
        let mut m = Metadata::default();
        let mut descriptor = bare(target);
        match images {
            [only] if only.manifest.digest == target.digest => {
                descriptor = descriptor.with_platform(&only.platform);
                m.text(CONFIG_DIGEST, only.config.to_string());
            }
            _ => {
                for image in images {
                    let p = &image.platform;
                    m.text(
                        &format!("{IMAGE_DIGEST}/{p}"),
                        image.manifest.digest.to_string(),
                    );
                    m.text(&format!("{CONFIG_DIGEST}/{p}"), image.config.to_string());
                }
            }
        }
        m.text(IMAGE_DIGEST, target.digest.to_string());
        m.0.insert(
            IMAGE_DESCRIPTOR.into(),
            Value::Descriptor(Box::new(descriptor)),
        );
        if let Some(names) = names {
            m.text(IMAGE_NAME, names);
        }
        m
    }

    /// An index `kiln imagetools create` pushed to the repositories
    /// `repositories` (buildx writes the descriptor and the names; the
    /// digest is kiln's, for the same jq line as after a build).
    pub(crate) fn of_index(index: &Descriptor, repositories: &[String]) -> Metadata {
        let mut m = Metadata::default();
        m.text(IMAGE_DIGEST, index.digest.to_string());
        m.0.insert(
            IMAGE_DESCRIPTOR.into(),
            Value::Descriptor(Box::new(bare(index))),
        );
        m.text(IMAGE_NAME, repositories.join(","));
        m
    }

    fn text(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), Value::Text(value));
    }

    /// Indented by two spaces, as buildx's `json.MarshalIndent`.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.0).expect("metadata serialises to JSON")
    }

    /// Writes the file whole or not at all: a temp file beside it, renamed
    /// over it (a CI step reading it never sees half), mode 0644 as buildx.
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        crate::files::write_whole(
            path,
            &self.to_json(),
            std::fs::Permissions::from_mode(0o644),
            "metadata",
            "the metadata file ",
        )
    }
}

/// The media type, digest and size of `d` (a store's descriptor may carry
/// more than BuildKit reports).
fn bare(d: &Descriptor) -> Descriptor {
    Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::media;

    fn digest(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn json(m: &Metadata) -> serde_json::Value {
        serde_json::from_slice(&m.to_json()).unwrap()
    }

    #[test]
    fn a_single_platform_build_reads_as_buildx_writes_it() {
        let manifest = Descriptor::new(media::OCI_MANIFEST, digest("m"), 480);
        let image = PlatformImage {
            platform: Platform::parse("linux/arm64").unwrap(),
            manifest: manifest.clone(),
            config: digest("c"),
        };
        let m = Metadata::of_build(&manifest, &[image], Some("localhost:5000/app".into()));
        let text = String::from_utf8(m.to_json()).unwrap();
        let expected = format!(
            r#"{{
  "containerimage.config.digest": "{c}",
  "containerimage.descriptor": {{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "{d}",
    "size": 480,
    "platform": {{
      "architecture": "arm64",
      "os": "linux"
    }}
  }},
  "containerimage.digest": "{d}",
  "image.name": "localhost:5000/app"
}}"#,
            c = digest("c"),
            d = digest("m"),
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_multi_platform_build_names_each_platforms_manifest() {
        let index = Descriptor::new(media::OCI_INDEX, digest("i"), 700);
        let images: Vec<PlatformImage> = ["linux/amd64", "linux/arm/v7"]
            .iter()
            .map(|p| PlatformImage {
                platform: Platform::parse(p).unwrap(),
                manifest: Descriptor::new(media::OCI_MANIFEST, digest(p), 400),
                config: digest(&format!("config {p}")),
            })
            .collect();
        let v = json(&Metadata::of_build(&index, &images, None));
        assert_eq!(v["containerimage.digest"], digest("i").to_string());
        assert_eq!(
            v["containerimage.descriptor"],
            serde_json::json!({
                "mediaType": media::OCI_INDEX, "digest": digest("i").to_string(), "size": 700
            })
        );
        assert_eq!(
            v["containerimage.digest/linux/arm/v7"],
            digest("linux/arm/v7").to_string()
        );
        assert_eq!(
            v["containerimage.config.digest/linux/amd64"],
            digest("config linux/amd64").to_string()
        );
        // No single config, and no name when none was given.
        assert!(v.get("containerimage.config.digest").is_none());
        assert!(v.get("image.name").is_none());
        assert_eq!(v.as_object().unwrap().len(), 6);
    }

    #[test]
    fn an_index_has_its_descriptor_and_repositories() {
        let index = Descriptor::new(media::OCI_INDEX, digest("i"), 900);
        let v = json(&Metadata::of_index(
            &index,
            &["localhost:5000/a".into(), "localhost:5000/b".into()],
        ));
        assert_eq!(v["image.name"], "localhost:5000/a,localhost:5000/b");
        assert_eq!(v["containerimage.descriptor"]["size"], 900);
        assert_eq!(v["containerimage.digest"], digest("i").to_string());
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        fs_err::write(&path, "old").unwrap();
        let index = Descriptor::new(media::OCI_INDEX, digest("i"), 900);
        let m = Metadata::of_index(&index, &["r/a".into()]);
        m.write(&path).unwrap();
        assert_eq!(fs_err::read(&path).unwrap(), m.to_json());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs_err::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Nothing left beside it.
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 1);
        let err = m.write(&dir.path().join("no/such/dir/m.json")).unwrap_err();
        assert!(format!("{err:#}").contains("no/such/dir/m.json"), "{err:#}");
    }
}
