//! Cache mounts in a cache (`--cache-to ...,mounts=true`; docs/CACHE.md,
//! "Cache mounts"): the contents of the build's `RUN --mount=type=cache`
//! directories, so that a pip or apt download cache outlives the runner.
//!
//! They are one more child of the cache's index, beside the platforms'
//! children and without a platform (a cache mount is one cache for every
//! platform of a build): its config lists the mounts by the key their
//! directory has in the store, its layers are their tars. Readers that do
//! not know it look for platforms and never see it; writers that do not
//! know it replace their platforms' children and keep it.
//!
//! - [`Imported::mount_source`]: what a `--cache-from` has, as the
//!   [`CacheSource`] that fills a cache the first time a build takes it.
//! - [`prepare`]: the build's mounts as entries and blobs for one cache:
//!   over `mounts-max-size` the biggest are left out (a warning), one held
//!   by another build is left out (a warning), one the cache already has
//!   with the same contents is not read again, nor sent.
//! - [`Prepared::merge_into`]: the mounts child merged (by key, ours win,
//!   expired ones dropped) and written, unless it already holds ours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use kiln_fs::human_bytes as human;
use kiln_image::document::{Descriptor, Document, Manifest, parse_rfc3339, rfc3339};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, Store};
use kiln_registry::RegistryClient;
use serde::{Deserialize, Serialize};

use super::place::Place;
use super::{CacheError, CacheLocation, Imported, format};
use crate::engine::with_causes;
use crate::events::Event;
use crate::export::Encoding;
use crate::run::{CacheMounts, CacheSource, CacheTar, Contents, UsedCache};

/// The media type of a mounts config, and the `artifactType` of the
/// mounts manifest and of its descriptor in the cache's index.
pub const CACHE_MOUNTS_MEDIA_TYPE: &str = "application/vnd.kiln.cache.mounts.v1+json";

const FORMAT: &str = "kiln-cache-mounts";
const VERSION: u32 = 1;

/// The mounts child's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMountsConfig {
    pub format: String,
    pub version: u32,
    /// The format of the mounts' keys (`kiln-cache-mount-v1`).
    pub keys: String,
    pub mounts: Vec<CacheMount>,
}

/// One cache mount's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheMount {
    /// The cache's directory name in a store's `cache-mounts/`: sha256 of
    /// its id and what seeds it (mode, owner, or `from=` source), hex.
    pub key: String,
    /// The mount's `id` (its target when it has none), for people.
    #[serde(default)]
    pub id: String,
    /// An index into the manifest's layers: an uncompressed tar of the
    /// directory's contents (the directory itself not an entry), compressed
    /// as the layer's media type says.
    pub layer: usize,
    /// sha256 of the uncompressed tar.
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
    /// Bytes of the files in it (what `mounts-max-size` counts).
    #[serde(default)]
    pub size: u64,
    /// When these contents were written (RFC 3339).
    pub created: String,
    /// When the mount stops counting (RFC 3339), as a cache entry.
    pub expires: String,
}

impl CacheMountsConfig {
    fn new(mounts: Vec<CacheMount>) -> CacheMountsConfig {
        CacheMountsConfig {
            format: FORMAT.to_string(),
            version: VERSION,
            keys: crate::run::CACHE_MOUNT_KEY_VERSION.to_string(),
            mounts,
        }
    }

    /// Reads a config; one of another format, version or key format is an
    /// error saying so.
    pub fn parse(bytes: &[u8]) -> Result<CacheMountsConfig, CacheError> {
        let config: CacheMountsConfig =
            serde_json::from_slice(bytes).map_err(|e| CacheError::Format {
                reason: format!("cache mounts: {e}"),
            })?;
        if config.format != FORMAT || config.version != VERSION {
            return Err(CacheError::Format {
                reason: format!(
                    "{} version {}, this kiln reads {FORMAT} version {VERSION}",
                    config.format, config.version
                ),
            });
        }
        if config.keys != crate::run::CACHE_MOUNT_KEY_VERSION {
            return Err(CacheError::Format {
                reason: format!(
                    "cache mount keys in format {}, this kiln makes {}",
                    config.keys,
                    crate::run::CACHE_MOUNT_KEY_VERSION
                ),
            });
        }
        Ok(config)
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a mounts config serialises")
    }
}

impl CacheMount {
    fn expired(&self, now: i64) -> bool {
        parse_rfc3339(&self.expires).is_none_or(|at| at < now)
    }
}

/// Whether `d` is a cache index's mounts child.
fn is_mounts_child(d: &Descriptor) -> bool {
    d.artifact_type.as_deref() == Some(CACHE_MOUNTS_MEDIA_TYPE)
}

/// The mounts child of a cache index: its manifest and config, each mount
/// with its layer's descriptor; `None` if the index has none.
pub(super) fn read(
    place: &Place<'_>,
    children: &[Descriptor],
) -> Result<Option<(CacheMountsConfig, Vec<Descriptor>)>, CacheError> {
    let Some(child) = children.iter().find(|d| is_mounts_child(d)) else {
        return Ok(None);
    };
    let bytes = place.read_blob(child)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| CacheError::Format {
        reason: format!("cache mounts manifest {}: {e}", child.digest),
    })?;
    if manifest.config.media_type != CACHE_MOUNTS_MEDIA_TYPE {
        return Err(CacheError::Format {
            reason: format!(
                "manifest {} has a {} config",
                child.digest, manifest.config.media_type
            ),
        });
    }
    let config = CacheMountsConfig::parse(&place.read_blob(&manifest.config)?)?;
    // A mount whose layer the manifest lacks is no mount.
    let mut layers = Vec::new();
    let mut mounts = Vec::new();
    for m in config.mounts {
        if let Some(d) = manifest.layers.get(m.layer) {
            layers.push(d.clone());
            mounts.push(m);
        }
    }
    Ok(Some((CacheMountsConfig { mounts, ..config }, layers)))
}

/// A mount a `--cache-from` has.
#[derive(Debug, Clone)]
pub(super) struct MountHit {
    layer: Descriptor,
    diff_id: Digest,
    /// Which `--cache-from`.
    source: usize,
}

/// Adds the unexpired mounts of source `source` that no earlier source
/// has; how many.
pub(super) fn add_hits(
    hits: &mut HashMap<String, MountHit>,
    source: usize,
    (config, layers): (CacheMountsConfig, Vec<Descriptor>),
    now: i64,
) -> usize {
    let mut added = 0;
    for (m, layer) in config.mounts.into_iter().zip(layers) {
        if m.expired(now) || hits.contains_key(&m.key) {
            continue;
        }
        hits.insert(
            m.key,
            MountHit {
                layer,
                diff_id: m.diff_id,
                source,
            },
        );
        added += 1;
    }
    added
}

impl Imported {
    /// What the `--cache-from`s have for cache mounts, fetched (into the
    /// store, verified) when a step first takes one; `None` if nothing.
    pub(crate) fn mount_source(
        &self,
        store: &Store,
        client: &RegistryClient,
        runtime: &tokio::runtime::Handle,
    ) -> Option<Arc<dyn CacheSource>> {
        if self.mounts.is_empty() {
            return None;
        }
        Some(Arc::new(Restorer {
            store: store.clone(),
            client: client.clone(),
            runtime: runtime.clone(),
            sources: self.sources.clone(),
            mounts: self.mounts.clone(),
        }))
    }
}

#[derive(Debug)]
struct Restorer {
    store: Store,
    client: RegistryClient,
    runtime: tokio::runtime::Handle,
    sources: Vec<CacheLocation>,
    mounts: HashMap<String, MountHit>,
}

impl CacheSource for Restorer {
    fn has(&self, key: &str) -> bool {
        self.mounts.contains_key(key)
    }

    fn open(&self, key: &str) -> Result<CacheTar, String> {
        let hit = self.mounts.get(key).ok_or("not in the cache")?;
        let location = &self.sources[hit.source];
        let failed =
            |e: &(dyn std::error::Error + 'static)| format!("cache {location}: {}", with_causes(e));
        // Claimed (a registry's blob recorded as a source of the store's),
        // then fetched now by the store when it is opened: a mount is
        // unpacked before its step, not read lazily.
        Place::new(location, &self.client, &self.runtime)
            .and_then(|place| place.claim(&self.store, &hit.layer))
            .map_err(|e| failed(&e))?;
        let compression = Compression::from_media_type(&hit.layer.media_type).ok_or_else(|| {
            format!(
                "cache {location}: layer {} has the unknown media type {}",
                hit.layer.digest, hit.layer.media_type
            )
        })?;
        let blob = self
            .store
            .open_blob(&hit.layer.digest)
            .map_err(|e| failed(&e))?;
        let tar = kiln_image::compress::decompress(blob, compression).map_err(|e| failed(&e))?;
        Ok(CacheTar {
            tar,
            diff_id: hit.diff_id.clone(),
            from: format!("cache {location}"),
        })
    }
}

/// What `--cache-to ...,mounts=true` writes besides the entries.
pub(crate) struct MountsExport<'a> {
    /// The build's caches: which it took, and their directories.
    pub(crate) caches: &'a CacheMounts,
    /// `mounts-max-size`.
    pub(crate) max_size: u64,
    /// The encoding of the mounts' layers (the cache's).
    pub(crate) encoding: &'a Encoding,
    /// Where a mount's tar is written before it is compressed.
    pub(crate) scratch: &'a Path,
    /// Where warnings go (a mount left out never fails the build).
    pub(crate) report: &'a dyn Fn(Event),
}

/// The build's mounts, ready to merge into one cache.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Each with its layer: the cache's own when its contents are the same.
    ours: Vec<(CacheMount, Descriptor)>,
    /// Blobs in the store the cache needs.
    blobs: Vec<Descriptor>,
}

/// The build's mounts as entries for the cache whose index's children are
/// `children`, expiring `ttl` after `now`. A mount left out (over the
/// size cap, held by another build, unreadable) is a warning.
pub(super) fn prepare(
    export: &MountsExport<'_>,
    place: &Place<'_>,
    children: &[Descriptor],
    store: &Store,
    now: i64,
    ttl: std::time::Duration,
) -> Prepared {
    let warn = |message: String| {
        (export.report)(Event::Warning {
            message,
            line: None,
        })
    };
    let theirs: HashMap<String, (CacheMount, Descriptor)> = match read(place, children) {
        Ok(Some((config, layers))) => config
            .mounts
            .into_iter()
            .zip(layers)
            .filter(|(m, _)| !m.expired(now))
            .map(|(m, d)| (m.key.clone(), (m, d)))
            .collect(),
        // Rewritten whole when it cannot be read.
        Ok(None) | Err(_) => HashMap::new(),
    };
    let mut sized = Vec::new();
    for used in export.caches.used() {
        match export.caches.measure(&used) {
            Ok(size) => sized.push((used, size)),
            Err(e) => warn(format!(
                "cache mount {} not written to the cache: {}",
                name(&used),
                with_causes(&e)
            )),
        }
    }
    let (kept, over) = under_cap(sized, export.max_size);
    if !over.is_empty() {
        let list: Vec<String> = over
            .iter()
            .map(|(u, size)| format!("{} ({})", name(u), human(*size)))
            .collect();
        warn(format!(
            "cache mounts over mounts-max-size={} not written to the cache: {}",
            human(export.max_size),
            list.join(", ")
        ));
    }
    let expires = format::expiry(now, ttl);
    let mut prepared = Prepared::default();
    for (used, _) in kept {
        match mount(export, store, &used, theirs.get(&used.key)) {
            Ok(Some((diff_id, size, layer, new))) => {
                let created = match theirs.get(&used.key) {
                    Some((m, _)) if !new => m.created.clone(),
                    _ => rfc3339(now),
                };
                if new {
                    prepared.blobs.push(layer.clone());
                }
                prepared.ours.push((
                    CacheMount {
                        key: used.key.clone(),
                        id: used.id.clone(),
                        layer: 0,
                        diff_id,
                        size,
                        created,
                        expires: expires.clone(),
                    },
                    layer,
                ));
            }
            Ok(None) => {
                let holders = export.caches.holders(&used);
                warn(format!(
                    "cache mount {} not written to the cache: in use by {}",
                    name(&used),
                    if holders.is_empty() {
                        "another build".to_string()
                    } else {
                        holders
                    }
                ));
            }
            Err(reason) => warn(format!(
                "cache mount {} not written to the cache: {reason}",
                name(&used)
            )),
        }
    }
    prepared
}

/// `/root/.cache/pip` or `/root/.cache/pip (id pip)`.
fn name(used: &UsedCache) -> String {
    if used.id == used.target {
        used.target.clone()
    } else {
        format!("{} (id {})", used.target, used.id)
    }
}

/// Things with their sizes.
type Sized<T> = Vec<(T, u64)>;

/// The smallest first, while they fit in `max` together: so the biggest
/// are the ones left out (returned second, biggest last).
fn under_cap<T>(mut sized: Sized<T>, max: u64) -> (Sized<T>, Sized<T>) {
    sized.sort_by_key(|(_, size)| *size);
    let mut total = 0u64;
    let fit = sized
        .iter()
        .take_while(|(_, size)| {
            total = total.saturating_add(*size);
            total <= max
        })
        .count();
    let over = sized.split_off(fit);
    (sized, over)
}

/// One mount: its diffID, size and layer, and whether the layer is new to
/// the cache (a blob in the store to send); `None` if another build holds
/// it. The cache's layer when it already has these contents; else a blob
/// in the cache's encoding: one the store has for this diffID, or the
/// tar compressed now.
fn mount(
    export: &MountsExport<'_>,
    store: &Store,
    used: &UsedCache,
    theirs: Option<&(CacheMount, Descriptor)>,
) -> Result<Option<(Digest, u64, Descriptor, bool)>, String> {
    let caches = export.caches;
    let err = |e: &(dyn std::error::Error + 'static)| with_causes(e);
    let Some(mut contents) = caches
        .contents(used, true, export.scratch)
        .map_err(|e| err(&e))?
    else {
        return Ok(None);
    };
    loop {
        let (diff_id, size) = match &contents {
            Contents::Known { diff_id, size } | Contents::Read { diff_id, size, .. } => {
                (diff_id.clone(), *size)
            }
        };
        if let Some((m, layer)) = theirs
            && m.diff_id == diff_id
        {
            return Ok(Some((diff_id, size, layer.clone(), false)));
        }
        match contents {
            Contents::Read { tar, .. } => {
                let layer = compress(store, tar, &diff_id, export.encoding)?;
                return Ok(Some((diff_id, size, layer, true)));
            }
            Contents::Known { .. } => {
                if let Some(layer) =
                    stored(store, &diff_id, export.encoding).map_err(|e| err(&e))?
                {
                    return Ok(Some((diff_id, size, layer, true)));
                }
                // Known, but its blob is gone from the store: read it.
                match caches
                    .contents(used, false, export.scratch)
                    .map_err(|e| err(&e))?
                {
                    Some(read) => contents = read,
                    None => return Ok(None),
                }
            }
        }
    }
}

/// The store's blob of the tar `diff_id` in `encoding`, if it has one.
fn stored(
    store: &Store,
    diff_id: &Digest,
    encoding: &Encoding,
) -> Result<Option<Descriptor>, CacheError> {
    let recipe = encoding.layer_recipe(false);
    match store.read(|r| r.layer_variant(diff_id, &recipe))? {
        // Leased (reuse): a prune must not take it before it is written out.
        Some(v) if store.reuse(&v.descriptor.digest)?.is_some() => Ok(Some(v.descriptor)),
        _ => Ok(None),
    }
}

/// A mount's tar compressed into the store in the cache's encoding, and
/// recorded as that tar's blob in that encoding (a layer variant), so
/// that a later export of the same contents compresses nothing.
fn compress(
    store: &Store,
    tar: std::fs::File,
    diff_id: &Digest,
    encoding: &Encoding,
) -> Result<Descriptor, String> {
    let err = |e: &(dyn std::error::Error + 'static)| with_causes(e);
    let mut opts = kiln_image::compress::CompressOptions::new(encoding.compression);
    if let Some(level) = encoding.level {
        opts = opts.level(level);
    }
    let ingest = store.ingest().map_err(|e| err(&e))?;
    let (ingest, info) = kiln_image::compress::compress(tar, ingest, &opts).map_err(|e| err(&e))?;
    if info.diff_id != *diff_id {
        return Err(format!(
            "its tar changed on disk ({} then {})",
            diff_id, info.diff_id
        ));
    }
    ingest.commit().map_err(|e| err(&e))?;
    let layer = Descriptor::new(
        encoding.compression.layer_media_type(Format::Oci),
        info.digest,
        info.size,
    );
    crate::export::record_layer_encoding(store, diff_id, &layer, encoding).map_err(|e| err(&e))?;
    Ok(layer)
}

impl Prepared {
    pub(super) fn is_empty(&self) -> bool {
        self.ours.is_empty()
    }

    /// How many mounts of the build the cache will hold.
    pub(super) fn len(&self) -> usize {
        self.ours.len()
    }

    /// Whether the mounts child among `children` holds every one of ours
    /// with the same contents, none expiring before `fresh_until`, and no
    /// expired mount (the rule of the entries: see `holds`).
    pub(super) fn held(
        &self,
        place: &Place<'_>,
        children: &[Descriptor],
        now: i64,
        fresh_until: i64,
    ) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(Some((config, _))) = read(place, children) else {
            return false;
        };
        holds(&config, &self.ours, now, fresh_until)
    }

    /// Sends the blobs of ours the cache did not have, each once; how many
    /// were sent.
    pub(super) fn push(
        &self,
        place: &Place<'_>,
        store: &Store,
        pushed: &mut HashSet<Digest>,
    ) -> Result<usize, CacheError> {
        let mut sent = 0;
        for d in &self.blobs {
            if pushed.insert(d.digest.clone()) && place.push_from_store(store, d)? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Takes the mounts child out of `children` and puts back the one to
    /// keep: theirs if it holds ours, else ours merged over theirs (their
    /// unexpired mounts of other keys kept), written to the cache with
    /// its blobs. Whether it wrote one, and how many blobs it sent.
    pub(super) fn merge_into(
        &self,
        place: &Place<'_>,
        store: &Store,
        children: &mut Vec<Descriptor>,
        pushed: &mut HashSet<Digest>,
        now: i64,
        fresh_until: i64,
    ) -> Result<(bool, usize), CacheError> {
        if self.is_empty() {
            return Ok((false, 0));
        }
        let theirs = read(place, children).ok().flatten();
        let at = children.iter().position(is_mounts_child);
        if let (Some(_), Some((config, _))) = (at, &theirs)
            && holds(config, &self.ours, now, fresh_until)
        {
            return Ok((false, 0));
        }
        if let Some(i) = at {
            children.remove(i);
        }
        let sent = self.push(place, store, pushed)?;
        let mut by_key: BTreeMap<String, (CacheMount, Descriptor)> = BTreeMap::new();
        if let Some((config, layers)) = theirs {
            for (m, d) in config.mounts.into_iter().zip(layers) {
                by_key.insert(m.key.clone(), (m, d));
            }
        }
        for (m, d) in &self.ours {
            by_key.insert(m.key.clone(), (m.clone(), d.clone()));
        }
        let mut layers: Vec<Descriptor> = Vec::new();
        let mut mounts = Vec::new();
        for (_, (mut m, d)) in by_key {
            if m.expired(now) {
                continue;
            }
            m.layer = match layers.iter().position(|l| l.digest == d.digest) {
                Some(i) => i,
                None => {
                    layers.push(d);
                    layers.len() - 1
                }
            };
            mounts.push(m);
        }
        let config = CacheMountsConfig::new(mounts).to_bytes();
        let config_desc = Descriptor::new(
            CACHE_MOUNTS_MEDIA_TYPE,
            Digest::of(&config),
            config.len() as u64,
        );
        place.push_document(&config_desc, &config)?;
        let mut manifest = Manifest::new(Format::Oci, config_desc, layers);
        manifest.artifact_type = Some(CACHE_MOUNTS_MEDIA_TYPE.to_string());
        let doc = Document::new(manifest);
        let mut desc = doc.descriptor();
        place.push_document(&desc, doc.bytes())?;
        desc.artifact_type = Some(CACHE_MOUNTS_MEDIA_TYPE.to_string());
        children.push(desc);
        Ok((true, sent))
    }

    /// The digest of the mounts child among `children`, for the read-back
    /// check of a registry write.
    pub(super) fn child(children: &[Descriptor]) -> Option<&Digest> {
        children
            .iter()
            .find(|d| is_mounts_child(d))
            .map(|d| &d.digest)
    }
}

fn holds(
    config: &CacheMountsConfig,
    ours: &[(CacheMount, Descriptor)],
    now: i64,
    fresh_until: i64,
) -> bool {
    let theirs: HashMap<&str, &CacheMount> =
        config.mounts.iter().map(|m| (m.key.as_str(), m)).collect();
    config.mounts.iter().all(|m| !m.expired(now))
        && ours.iter().all(|(m, _)| {
            theirs.get(m.key.as_str()).is_some_and(|t| {
                t.diff_id == m.diff_id
                    && parse_rfc3339(&t.expires).is_some_and(|at| at >= fresh_until)
            })
        })
}

#[cfg(test)]
mod tests {
    use kiln_image::document::Index;

    use super::*;

    fn mount(key: &str, diff: &[u8], expires: i64) -> CacheMount {
        CacheMount {
            key: key.into(),
            id: key.into(),
            layer: 0,
            diff_id: Digest::of(diff),
            size: 1,
            created: rfc3339(0),
            expires: rfc3339(expires),
        }
    }

    #[test]
    fn the_biggest_are_left_out_until_the_rest_fit() {
        let sized = vec![("a", 5), ("b", 50), ("c", 1), ("d", 20)];
        let (kept, over) = under_cap(sized.clone(), 30);
        assert_eq!(kept, [("c", 1), ("a", 5), ("d", 20)]);
        assert_eq!(over, [("b", 50)]);
        let (kept, over) = under_cap(sized.clone(), 0);
        assert!(kept.is_empty());
        assert_eq!(over.len(), 4);
        let (kept, _) = under_cap(sized, u64::MAX);
        assert_eq!(kept.len(), 4);
    }

    #[test]
    fn a_child_holds_ours_with_the_same_contents_and_time_left() {
        let d = Descriptor::new("x", Digest::of(b"l"), 1);
        let ours = vec![(mount("k", b"1", 100), d.clone())];
        let config = CacheMountsConfig::new(vec![mount("k", b"1", 100), mount("j", b"2", 100)]);
        assert!(holds(&config, &ours, 10, 60));
        assert!(!holds(&config, &ours, 10, 200), "near its expiry");
        let changed = vec![(mount("k", b"other", 100), d)];
        assert!(!holds(&config, &changed, 10, 60));
        let with_expired = CacheMountsConfig::new(vec![mount("k", b"1", 100), mount("j", b"2", 5)]);
        assert!(!holds(&with_expired, &ours, 10, 60));
    }

    #[test]
    fn configs_of_other_versions_are_refused() {
        let c = CacheMountsConfig::new(vec![mount("k", b"1", 100)]);
        let bytes = c.to_bytes();
        assert_eq!(CacheMountsConfig::parse(&bytes).unwrap(), c);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""diffID""#), "{text}");
        let v2 = text.replace(r#""version":1"#, r#""version":2"#);
        assert!(CacheMountsConfig::parse(v2.as_bytes()).is_err());
        let keys = text.replace(crate::run::CACHE_MOUNT_KEY_VERSION, "kiln-cache-mount-v0");
        assert!(CacheMountsConfig::parse(keys.as_bytes()).is_err());
    }

    /// A reader of version 1 entries (before mounts) looks for its
    /// platform's child: a mounts child has none, so it is never taken for
    /// one; and the entries' config ignores what it does not know.
    #[test]
    fn readers_that_look_for_platforms_never_see_the_mounts_child() {
        let mut child = Descriptor::new(kiln_image::media::OCI_MANIFEST, Digest::of(b"m"), 1);
        child.artifact_type = Some(CACHE_MOUNTS_MEDIA_TYPE.to_string());
        let index = Index::new(Format::Oci, vec![child]);
        let platform = kiln_image::Platform::parse("linux/amd64").unwrap();
        assert!(
            !index
                .manifests
                .iter()
                .any(|d| d.platform().is_some_and(|p| p.matches(&platform)))
        );
        assert!(is_mounts_child(&index.manifests[0]));
    }
}
