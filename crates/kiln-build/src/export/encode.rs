//! An image in the encoding an output asks for: layer compression and
//! level, OCI or Docker media types, and `SOURCE_DATE_EPOCH` times.
//!
//! A layer is stored once, in whatever encoding it was first written
//! (committed by a build, pulled, converted before); when an output asks
//! for another, the layer is converted here and the conversion is recorded
//! as a layer variant in the store, so the next export in that encoding
//! costs nothing. The cache key of a step never depends on the encoding:
//! a step cached with gzip layers is a hit for a zstd build, and its layer
//! comes out zstd.

use kiln_image::compress::{DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL};
use kiln_image::document::{
    Descriptor, Document, ImageConfig, ImageDocument, Index, Manifest, rfc3339,
};
use kiln_image::media::{self, Compression, Format};
use kiln_image::{Digest, LayerVariant, Store};

use super::ExportError;
use super::rewrite::{self, Conversion};
use crate::engine::BuiltImage;

/// How an output wants its image encoded (buildx's exporter attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// `compression=`: of the layers the build made (and of every layer
    /// with `force`).
    pub compression: Compression,
    /// `compression-level=`; `None` for the codec's default.
    pub level: Option<i32>,
    /// `force-compression=true`: base image layers too.
    pub force: bool,
    /// `oci-mediatypes=`: OCI or Docker schema 2 media types.
    pub format: Format,
    /// `SOURCE_DATE_EPOCH`: the config's and every history entry's
    /// `created`.
    pub epoch: Option<i64>,
    /// `rewrite-timestamp=true`: file times in the build's layers clamped
    /// to `epoch` (the layers, and so their diffIDs, change).
    pub rewrite_timestamps: bool,
}

impl Default for Encoding {
    /// What buildx gives without attributes: gzip at kiln's default level,
    /// OCI media types, times as built.
    fn default() -> Encoding {
        Encoding {
            compression: Compression::Gzip,
            level: None,
            force: false,
            format: Format::Oci,
            epoch: None,
            rewrite_timestamps: false,
        }
    }
}

impl Encoding {
    /// The level layers are compressed at: the one asked for, else the
    /// codec's default (kiln's gzip 4, libzstd's 3).
    pub fn effective_level(&self) -> i32 {
        self.level.unwrap_or(match self.compression {
            Compression::Gzip => DEFAULT_GZIP_LEVEL,
            Compression::Zstd => DEFAULT_ZSTD_LEVEL,
            Compression::None => 0,
        })
    }

    /// The name of what a layer becomes in this encoding, as layer
    /// variants are recorded: `gzip-4`, `zstd-3`, `uncompressed`, and
    /// `+mtime<=<epoch>` when timestamps are rewritten.
    pub(crate) fn layer_recipe(&self, rewrite: bool) -> String {
        let mut name = match self.compression {
            Compression::None => "uncompressed".to_string(),
            c => format!("{}-{}", c.name(), self.effective_level()),
        };
        if let (true, Some(epoch)) = (rewrite, self.epoch) {
            name.push_str(&format!("+mtime<={epoch}"));
        }
        name
    }

    /// Whether layers are rewritten at all.
    fn rewrites(&self) -> bool {
        self.rewrite_timestamps && self.epoch.is_some()
    }
}

/// Records that the layer `diff_id` was written as `descriptor` in
/// `encoding` (by a commit, say), so that exporting it so converts nothing.
pub fn record_layer_encoding(
    store: &Store,
    diff_id: &Digest,
    descriptor: &Descriptor,
    encoding: &Encoding,
) -> Result<(), ExportError> {
    let variant = LayerVariant {
        diff_id: diff_id.clone(),
        descriptor: plain(descriptor),
    };
    store.update(|w| w.put_layer_variant(diff_id, &encoding.layer_recipe(false), &variant))?;
    Ok(())
}

/// `images` (one per platform; `target` is the manifest, or the index of
/// them) in `encoding`: returns the new target and images, written to the
/// store. Documents and layers already as asked are reused as they are, so
/// an image encoded the way it was built comes back unchanged.
pub fn encode_image(
    store: &Store,
    target: &Descriptor,
    images: &[BuiltImage],
    encoding: &Encoding,
) -> Result<(Descriptor, Vec<BuiltImage>), ExportError> {
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        out.push(encode_platform(store, image, encoding)?);
    }
    if !media::is_index(&target.media_type) {
        let [only] = out.as_slice() else {
            return Err(ExportError::Shape {
                reason: format!("a single manifest for {} images", images.len()),
            });
        };
        return Ok((only.manifest.clone(), out));
    }
    let index = store.read_document::<Index>(target)?;
    let mut value = index.value().clone();
    value.media_type = Some(encoding.format.index().to_string());
    value.manifests = out.iter().map(|i| i.manifest.clone()).collect();
    if &value == index.value() {
        return Ok((target.clone(), out));
    }
    let desc = store.put_document(&Document::new(value))?;
    Ok((desc, out))
}

/// The images a stored manifest or index holds, for exporting an image
/// that was not just built: every layer counts as the image's own.
pub fn stored_images(store: &Store, target: &Descriptor) -> Result<Vec<BuiltImage>, ExportError> {
    let manifests = match store.read_image(target)? {
        ImageDocument::Index(index) => index.value().manifests.clone(),
        ImageDocument::Manifest(_) => vec![target.clone()],
    };
    let mut images = Vec::new();
    for manifest in manifests {
        if !media::is_manifest(&manifest.media_type) {
            // Attestations and other artifacts are not images to export.
            continue;
        }
        let doc = store.read_document::<Manifest>(&manifest)?;
        let config = store
            .read_document::<ImageConfig>(&doc.value().config)?
            .into_value();
        images.push(BuiltImage {
            platform: manifest.platform().unwrap_or_else(|| config.platform()),
            manifest,
            config,
            base_layers: 0,
            step_keys: Vec::new(),
        });
    }
    Ok(images)
}

fn encode_platform(
    store: &Store,
    image: &BuiltImage,
    encoding: &Encoding,
) -> Result<BuiltImage, ExportError> {
    let manifest = store.read_document::<Manifest>(&image.manifest)?;
    let mut config = store
        .read_document::<ImageConfig>(&manifest.value().config)?
        .into_value();
    let mut layers = Vec::with_capacity(manifest.value().layers.len());
    for (i, layer) in manifest.value().layers.iter().enumerate() {
        let diff_id = config
            .rootfs
            .diff_ids
            .get(i)
            .cloned()
            .ok_or_else(|| ExportError::Shape {
                reason: format!(
                    "manifest {} has more layers than its config has diffIDs",
                    image.manifest.digest
                ),
            })?;
        let own = i >= image.base_layers;
        let (desc, new_diff_id) = if own || encoding.force {
            encode_layer(store, layer, &diff_id, encoding, own)?
        } else {
            // A base image's layer, as it was pulled; only its media type
            // follows the format, where the same bytes have a name there.
            (retype(layer, encoding.format), diff_id.clone())
        };
        if new_diff_id != diff_id {
            config.rootfs.diff_ids[i] = new_diff_id;
        }
        layers.push(desc);
    }
    if let Some(epoch) = encoding.epoch {
        // BuildKit: SOURCE_DATE_EPOCH is the image's `created` and every
        // history entry's, cached ones included.
        let at = rfc3339(epoch);
        config.created = Some(at.clone());
        for h in &mut config.history {
            h.created = Some(at.clone());
        }
    }
    let config_doc = Document::with_media_type(encoding.format.config(), config.clone());
    let config_desc = store.put_document(&config_doc)?;
    let mut value = manifest.value().clone();
    value.media_type = Some(encoding.format.manifest().to_string());
    value.config = config_desc;
    value.layers = layers;
    let manifest_desc = if &value == manifest.value() {
        image.manifest.clone()
    } else {
        let mut d = store.put_document(&Document::new(value))?;
        d.platform = image.manifest.platform.clone();
        d.annotations = image.manifest.annotations.clone();
        d
    };
    Ok(BuiltImage {
        platform: image.platform.clone(),
        manifest: manifest_desc,
        config,
        base_layers: image.base_layers,
        step_keys: image.step_keys.clone(),
    })
}

/// One layer in `encoding`: as it is when it already is, else a recorded
/// variant, else converted now (and recorded). `own`: a layer the build
/// made, whose timestamps are rewritten when asked.
pub(crate) fn encode_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    encoding: &Encoding,
    own: bool,
) -> Result<(Descriptor, Digest), ExportError> {
    let rewrite = own && encoding.rewrites();
    let recipe = encoding.layer_recipe(rewrite);
    // Leased (reuse, not contains): a variant another process made is
    // reached by no root, and a prune before the export writes it out
    // would take it.
    if let Some(v) = store.read(|r| r.layer_variant(diff_id, &recipe))?
        && store.reuse(&v.descriptor.digest)?.is_some()
    {
        return Ok((retype(&v.descriptor, encoding.format), v.diff_id));
    }
    let have = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
        ExportError::UnknownLayer {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        }
    })?;
    // Without a record, a blob in the asked compression is taken as it is
    // only if no level was asked for: its level is not known (pulled, or
    // written before levels were recorded).
    if !rewrite && have == encoding.compression && encoding.level.is_none() {
        return Ok((retype(layer, encoding.format), diff_id.clone()));
    }
    let conversion = Conversion {
        compression: encoding.compression,
        level: encoding.level,
        clamp_mtime: if rewrite { encoding.epoch } else { None },
    };
    let made = rewrite::convert(store, layer, have, &conversion)?;
    let variant = LayerVariant {
        diff_id: made.diff_id.clone(),
        descriptor: plain(&made.descriptor),
    };
    store.update(|w| w.put_layer_variant(diff_id, &recipe, &variant))?;
    Ok((retype(&made.descriptor, encoding.format), made.diff_id))
}

/// A layer descriptor with its media type in `format` (the bytes are the
/// same: only the name differs). Types kiln does not know are kept.
fn retype(layer: &Descriptor, format: Format) -> Descriptor {
    let mut d = layer.clone();
    if let Some(c) = Compression::from_media_type(&layer.media_type)
        && layer.media_type != media::DOCKER_FOREIGN_LAYER
    {
        d.media_type = c.layer_media_type(format).to_string();
    }
    d
}

/// Digest, size and media type only: what a variant record keeps.
fn plain(d: &Descriptor) -> Descriptor {
    Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_name_the_codec_level_and_clamp() {
        let mut e = Encoding::default();
        assert_eq!(e.layer_recipe(false), "gzip-4");
        e.compression = Compression::Zstd;
        assert_eq!(e.layer_recipe(false), "zstd-3");
        e.level = Some(9);
        e.epoch = Some(1_700_000_000);
        assert_eq!(e.layer_recipe(false), "zstd-9");
        assert_eq!(e.layer_recipe(true), "zstd-9+mtime<=1700000000");
        e.compression = Compression::None;
        assert_eq!(e.layer_recipe(false), "uncompressed");
    }

    #[test]
    fn media_types_follow_the_format() {
        let gz = Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(b"x"), 1);
        assert_eq!(
            retype(&gz, Format::Docker).media_type,
            media::DOCKER_LAYER_GZIP
        );
        let foreign = Descriptor::new(media::DOCKER_FOREIGN_LAYER, Digest::of(b"y"), 1);
        assert_eq!(
            retype(&foreign, Format::Oci).media_type,
            media::DOCKER_FOREIGN_LAYER
        );
    }
}
