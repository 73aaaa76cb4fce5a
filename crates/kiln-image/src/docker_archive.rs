//! `docker save` archives: written for `docker load`, read into a store.
//!
//! What is written follows `docker save` of Docker 25 and later, which
//! makes the archive an OCI layout as well: `blobs/sha256/<hex>` holds the
//! configs, layers and manifests; `manifest.json` lists each image's
//! config, tags and layers by path (what `docker load` with the classic
//! image store reads); `index.json` and `oci-layout` make it an OCI layout
//! (what `docker load` with the containerd image store reads, naming
//! images by their `io.containerd.image.name` annotation); `repositories`
//! is the legacy tag map. Layers are written as stored, compressed or not:
//! both loaders decompress what they find.
//!
//! Reading accepts that shape and the older one (`<id>/layer.tar`,
//! `<id>.json`, layers deduplicated by symlinks). When the archive carries
//! the OCI manifest of an image, it is kept as it is, so the image keeps
//! its digest; otherwise kiln writes a manifest for it. Layers are stored
//! as they come: an uncompressed `layer.tar` stays uncompressed, with the
//! uncompressed layer media type, because compressing it would cost a
//! core-minute per GB on import for nothing locally (snapshots unpack it
//! either way), and its digest stays its diffID; an exporter that pushes
//! to a registry compresses then. Every layer's uncompressed digest is
//! checked against the config's diffIDs.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use kiln_fs::CopyStats;

use serde::{Deserialize, Serialize};

use crate::document::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Document, ImageConfig, Index, Manifest,
};
use crate::layout::{
    TarOut, TarSink, entry_name, ingest_entry, normalize_name, read_small, tar_error,
};
use crate::media::{Compression, Format};
use crate::store::{Store, StoreError};
use crate::{Digest, HashingWriter, Platform, Reference};

/// An image to write: a manifest, or an index to pick a platform from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    pub target: Descriptor,
    /// Written as `RepoTags`; `latest` is added to untagged references.
    pub tags: Vec<Reference>,
}

/// An image read from an archive into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Its manifest in the store, with the platform of its config.
    pub manifest: Descriptor,
    /// The config digest: the image ID of Docker's classic image store.
    pub config: Digest,
    /// Its `RepoTags`, normalised (`alpine` → `docker.io/library/alpine:latest`).
    pub tags: Vec<Reference>,
}

/// One entry of `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Writes `images` (for an index, the manifest for `platform`) as a
/// docker archive, streaming the blobs from the store (copied by the
/// kernel into a file, as [`layout::write_tar`](crate::layout::write_tar)
/// does). Returns the output and how the blob bytes were copied.
pub fn write<W: TarSink>(
    store: &Store,
    out: W,
    images: &[ArchiveImage],
    platform: &Platform,
) -> Result<(W, CopyStats), StoreError> {
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index_entries = Vec::new();
    let mut contents = Vec::new();
    for image in images {
        let manifest = store.select_manifest(&image.target, platform)?;
        let config: ImageConfig = store
            .read_document::<ImageConfig>(&manifest.value().config)?
            .into_value();
        let tags: Vec<Reference> = image
            .tags
            .iter()
            .map(|t| t.clone().with_default_tag())
            .collect();
        let path = |d: &Descriptor| format!("blobs/sha256/{}", d.digest.hex());
        let layers = &manifest.value().layers;
        // `repositories` maps each tag to the top layer's file, as the
        // legacy format did with its layer directories.
        for t in &tags {
            if let (Some(tag), Some(top)) = (&t.tag, layers.last()) {
                let name = Reference {
                    tag: None,
                    digest: None,
                    ..t.clone()
                }
                .familiar();
                repositories
                    .entry(name)
                    .or_default()
                    .insert(tag.clone(), top.digest.hex().to_string());
            }
        }
        entries.push(ManifestEntry {
            config: path(&manifest.value().config),
            repo_tags: Some(tags.iter().map(Reference::familiar).collect()),
            layers: layers.iter().map(path).collect(),
        });
        let described = manifest.descriptor().with_platform(&config.platform());
        if tags.is_empty() {
            index_entries.push(described.clone());
        }
        for t in &tags {
            let mut d = described.clone();
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_string(), t.to_string());
            if let Some(tag) = &t.tag {
                d.annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
            }
            index_entries.push(d);
        }
        contents.push(manifest.descriptor());
        contents.extend(manifest.value().blobs().cloned());
    }

    let mut tar = TarOut::new(out);
    tar.file("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")?;
    tar.file(
        "index.json",
        Document::new(Index::new(Format::Oci, index_entries)).bytes(),
    )?;
    tar.file("manifest.json", &json(&entries))?;
    if !repositories.is_empty() {
        tar.file("repositories", &json(&repositories))?;
    }
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for d in &contents {
        tar.blob(store, d)?;
    }
    tar.finish()
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("archive metadata serialises to JSON")
}

/// Reads a docker archive into the store in one pass; returns its images.
/// Manifests kiln writes for archives without OCI manifests use `format`'s
/// media types.
pub fn read<R: Read>(
    store: &Store,
    input: R,
    format: Format,
) -> Result<Vec<LoadedImage>, StoreError> {
    let mut manifest_json = None;
    let mut index_json = None;
    // Archive path → the blob it was stored as.
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();

    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(tar_error("archive"))? {
        let mut entry = entry.map_err(tar_error("archive"))?;
        let name = entry_name(&entry);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            // A symlink is relative to its directory, a hard link to the root.
            let target = if kind.is_symlink() && !target.starts_with('/') {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                normalize_name(&format!("{dir}/{target}"))
            } else {
                normalize_name(&target)
            };
            links.push((name, target));
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let base = name.rsplit('/').next().unwrap_or(&name);
        match name.as_str() {
            "manifest.json" => manifest_json = Some(read_small(&mut entry, &name)?),
            "index.json" => index_json = Some(read_small(&mut entry, &name)?),
            "oci-layout" | "repositories" => {}
            // The v1 metadata of the old format: nothing kiln needs.
            _ if name.contains('/') && (base == "json" || base == "VERSION") => {}
            _ => {
                let expected = name
                    .strip_prefix("blobs/sha256/")
                    .and_then(|h| Digest::from_hex(h).ok());
                let blob = ingest_entry(store, &mut entry, &name, expected.as_ref())?;
                files.insert(name, blob);
            }
        }
    }
    // Links may come before their targets; resolve chains a few deep.
    for _ in 0..8 {
        for (name, target) in &links {
            if let Some(blob) = files.get(target).cloned() {
                files.entry(name.clone()).or_insert(blob);
            }
        }
    }

    let manifest_json = manifest_json.ok_or_else(|| StoreError::Archive {
        entry: "manifest.json".to_string(),
        reason: "missing: not a docker archive (an OCI layout reads with layout::read_tar)"
            .to_string(),
    })?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(&manifest_json).map_err(|e| StoreError::Archive {
            entry: "manifest.json".to_string(),
            reason: e.to_string(),
        })?;
    let oci_manifests = match index_json {
        Some(bytes) => oci_manifests(store, bytes),
        None => Vec::new(),
    };

    let resolve = |path: &str| {
        files
            .get(&normalize_name(path))
            .cloned()
            .ok_or_else(|| StoreError::Archive {
                entry: path.to_string(),
                reason: "listed in manifest.json but not in the archive".to_string(),
            })
    };
    let mut loaded = Vec::new();
    for entry in &entries {
        let (config_digest, config_size) = resolve(&entry.config)?;
        let config_bytes = store.read_blob(&config_digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| StoreError::Archive {
                entry: entry.config.clone(),
                reason: format!("invalid image config: {e}"),
            })?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(StoreError::Archive {
                entry: entry.config.clone(),
                reason: format!(
                    "config lists {} diffIDs but manifest.json {} layers",
                    config.rootfs.diff_ids.len(),
                    entry.layers.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (digest, size) = resolve(path)?;
            let compression = check_diff_id(store, &digest, diff_id)?;
            layers.push(Descriptor::new(
                compression.layer_media_type(format),
                digest,
                size,
            ));
        }
        let platform = config.platform();
        let reused = oci_manifests.iter().find(|(_, m)| {
            m.config.digest == config_digest
                && m.layers.len() == layers.len()
                && m.layers
                    .iter()
                    .zip(&layers)
                    .all(|(a, b)| a.digest == b.digest)
        });
        let manifest = match reused {
            Some((d, _)) => d.clone(),
            None => {
                let config_desc =
                    Descriptor::new(format.config(), config_digest.clone(), config_size);
                store.put_document(&Document::new(Manifest::new(format, config_desc, layers)))?
            }
        }
        .with_platform(&platform);
        let tags = entry
            .repo_tags
            .iter()
            .flatten()
            .map(|t| Reference::parse(t).map(Reference::with_default_tag))
            .collect::<Result<Vec<_>, _>>()?;
        loaded.push(LoadedImage {
            manifest,
            config: config_digest,
            tags,
        });
    }
    Ok(loaded)
}

/// The image manifests `index.json` lists that are in the store (the
/// archive's own blobs). Docker 25's classic store wrote manifests without
/// their layers; the caller only takes one whose layers match.
fn oci_manifests(store: &Store, bytes: Vec<u8>) -> Vec<(Descriptor, Manifest)> {
    let Ok(index) = Document::<Index>::parse("", bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in &index.value().manifests {
        let mut d = d.clone();
        d.annotations.clear();
        if let Ok(m) = store.read_document::<Manifest>(&d) {
            out.push((d.clone(), m.into_value()));
        }
    }
    out
}

/// Decompresses the layer blob and checks its digest against `diff_id`;
/// returns the compression found.
fn check_diff_id(
    store: &Store,
    layer: &Digest,
    diff_id: &Digest,
) -> Result<Compression, StoreError> {
    let path = store.blob_path(layer);
    let mut blob = store.open_blob(layer)?;
    let mut head = [0u8; 4];
    let n = read_head(&mut blob, &mut head).map_err(StoreError::io(&path))?;
    let compression = Compression::detect(&head[..n]);
    let actual = match compression {
        Compression::None => layer.clone(),
        Compression::Gzip | Compression::Zstd => {
            let blob = io::Cursor::new(head[..n].to_vec()).chain(blob);
            let mut hasher = HashingWriter::new(io::sink());
            let copied = match compression {
                Compression::Gzip => {
                    io::copy(&mut flate2::read::MultiGzDecoder::new(blob), &mut hasher)
                }
                _ => zstd::stream::read::Decoder::new(blob)
                    .and_then(|mut d| io::copy(&mut d, &mut hasher)),
            };
            copied.map_err(|e| StoreError::Archive {
                entry: path.display().to_string(),
                reason: format!("cannot decompress layer {layer}: {e}"),
            })?;
            hasher.finish().1
        }
    };
    if actual != *diff_id {
        return Err(StoreError::DiffIdMismatch {
            layer: layer.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(compression)
}

fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
