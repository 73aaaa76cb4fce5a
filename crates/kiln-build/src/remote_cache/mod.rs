//! The build cache outside the store (docs/CACHE.md): `--cache-to` writes
//! the cache records of a build to a registry or a directory, in kiln's own
//! format, and `--cache-from` reads them back as one more source of cache
//! records, keyed as the store's are.
//!
//! - [`CacheTo`] and [`CacheFrom`] are the flags, as buildx spells them.
//! - [`import`] reads each source's entries for one platform, in order
//!   (the first source with a key wins); a source that is missing or
//!   unreadable is a warning, never a failure.
//! - A hit's layer blob is checked to be in its source when the step is
//!   taken from the cache, and recorded as the blob's source
//!   ([`Imported::claim`]): it is fetched when a later step or an output
//!   reads it; a blob that is gone makes the step run instead.
//! - [`export`] merges the build's entries into the cache (other platforms'
//!   children kept, expired entries dropped) and checks, after writing, that
//!   no concurrent writer's index replaced its own.
//! - With `mounts=true`, the contents of the build's cache mounts go along,
//!   as one more child of the index (`mounts` module); `--cache-from`
//!   restores them into cache mounts that are new or empty.

mod format;
mod mounts;
mod place;
mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_image::document::{Descriptor, Document, ImageConfig, Index, Manifest};
use kiln_image::media::{self, Format};
use kiln_image::{Digest, Platform, Store, StoreError};
use kiln_registry::RegistryClient;

use crate::engine::with_causes;
use crate::events::Event;

pub use self::format::{CACHE_MEDIA_TYPE, CacheConfig, CacheEntry};
pub(crate) use self::mounts::MountsExport;
pub use self::mounts::{CACHE_MOUNTS_MEDIA_TYPE, CacheMount, CacheMountsConfig};
use self::place::Place;
pub use self::spec::{
    CacheFrom, CacheLocation, CacheMode, CacheTo, DEFAULT_MOUNTS_MAX_SIZE,
    DEFAULT_TTL as DEFAULT_CACHE_TTL,
};

/// Why a cache could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A `--cache-to` or `--cache-from` kiln cannot read.
    #[error("cache {spec}: {reason}")]
    Spec { spec: String, reason: String },

    /// A cache document that is not kiln's format, version 1.
    #[error("not a kiln cache: {reason}")]
    Format { reason: String },

    #[error("cache {cache}")]
    Registry {
        cache: String,
        #[source]
        source: Box<kiln_registry::TransferError>,
    },

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A `--cache-to` ref that names something else (an image).
    #[error("{cache} is an image, not a kiln cache: writing the cache there would replace it")]
    NotACache { cache: String },

    /// An entry's layer blob that the cache no longer has.
    #[error("cache {cache}: blob {digest} is gone")]
    BlobGone { cache: String, digest: Digest },

    /// Other writers kept replacing the cache's index.
    #[error("cache {cache}: other writers replaced its index {attempts} times in a row")]
    Contended { cache: String, attempts: u32 },

    #[error("converting a layer for the cache")]
    Encode {
        #[source]
        source: Box<crate::export::ExportError>,
    },
}

/// A step's result, as a cache export writes it.
#[derive(Debug, Clone)]
pub(crate) struct StepRecord {
    /// The platform of the build (the cache index's child).
    pub(crate) platform: String,
    pub(crate) key: Digest,
    pub(crate) parent: Digest,
    /// The layer and its diffID, for a step that changed files.
    pub(crate) layer: Option<(Descriptor, Digest)>,
    pub(crate) stage: String,
    pub(crate) instruction: String,
    pub(crate) created: String,
    pub(crate) millis: u64,
}

/// One imported entry: where its layer is.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) layer: Option<(Descriptor, Digest)>,
    /// Which `--cache-from` it came from.
    source: usize,
}

/// What `--cache-from` gave, for the platforms of one build.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    sources: Vec<CacheLocation>,
    hits: HashMap<Digest, Hit>,
    /// Cache mounts' contents, by key (`mounts` module).
    mounts: HashMap<String, mounts::MountHit>,
}

impl Imported {
    pub(crate) fn get(&self, key: &Digest) -> Option<&Hit> {
        self.hits.get(key)
    }

    /// The `--cache-from` `hit` came from.
    pub(crate) fn location(&self, hit: &Hit) -> &CacheLocation {
        &self.sources[hit.source]
    }

    /// Makes a hit's layer available to the store: from a registry, its
    /// source recorded after a check that the blob is there (it is fetched
    /// only when a step or an export reads it); from a directory, copied.
    pub(crate) fn claim(
        &self,
        hit: &Hit,
        store: &Store,
        client: &RegistryClient,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), CacheError> {
        let Some((layer, _)) = &hit.layer else {
            return Ok(());
        };
        Place::new(&self.sources[hit.source], client, runtime)?.claim(store, layer)
    }
}

/// Whether the store has the blob, or one of the registries it came from
/// still does (asked, as a registry may have dropped it since).
pub(crate) fn reachable(
    store: &Store,
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    digest: &Digest,
) -> bool {
    if store.contains(digest).unwrap_or(false) {
        return true;
    }
    let Ok(Some(known)) = store.read(|r| r.blob_sources(digest)) else {
        return false;
    };
    known.sources.iter().any(|s| {
        let repository = kiln_registry::Repository::new(&s.registry, &s.repository);
        matches!(
            runtime.block_on(client.blob_exists(&repository, digest)),
            Ok(Some(_))
        )
    })
}

/// Reads the entries of `sources` for `platforms`, in order: the first
/// source with a key keeps it. What was found is told to `report` as a
/// note; what cannot be read as a warning, and skipped.
pub(crate) fn import(
    sources: &[CacheFrom],
    platforms: &[Platform],
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    now: i64,
    mut report: impl FnMut(Event),
) -> Imported {
    let mut warn = |message| report_warning(&mut report, message);
    let mut imported = Imported {
        sources: sources.iter().map(|s| s.location.clone()).collect(),
        ..Imported::default()
    };
    let mut notes = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let place = match Place::new(&source.location, client, runtime) {
            Ok(place) => place,
            Err(e) => {
                warn(with_causes(&e));
                continue;
            }
        };
        let index = match place.read_index() {
            Ok(Some(index)) => index,
            Ok(None) => {
                warn(format!(
                    "cache {} not found: building without it",
                    source.location
                ));
                continue;
            }
            Err(e) => {
                warn(format!(
                    "cache {} not used: {}",
                    source.location,
                    with_causes(&e)
                ));
                continue;
            }
        };
        match mounts::read(&place, &index.manifests) {
            Ok(Some(found)) => {
                let n = mounts::add_hits(&mut imported.mounts, i, found, now);
                notes.push(format!("cache {}: {n} cache mounts", source.location));
            }
            Ok(None) => {}
            Err(e) => warn(format!(
                "cache {}: cache mounts not used: {}",
                source.location,
                with_causes(&e)
            )),
        }
        for platform in platforms {
            let Some(child) = index
                .manifests
                .iter()
                .find(|d| d.platform().is_some_and(|p| p.matches(platform)))
            else {
                notes.push(format!("cache {}: nothing for {platform}", source.location));
                continue;
            };
            match read_child(&place, child) {
                Ok((manifest, config)) => {
                    let before = imported.hits.len();
                    for e in config.entries {
                        if e.expired(now) || imported.hits.contains_key(&e.key) {
                            continue;
                        }
                        let layer = match (e.layer, e.diff_id) {
                            (Some(i), Some(diff)) => match manifest.layers.get(i) {
                                Some(d) => Some((d.clone(), diff)),
                                None => continue,
                            },
                            (None, _) => None,
                            (Some(_), None) => continue,
                        };
                        imported.hits.insert(e.key, Hit { layer, source: i });
                    }
                    notes.push(format!(
                        "cache {}: {} entries for {platform}",
                        source.location,
                        imported.hits.len() - before
                    ));
                }
                Err(e) => warn(format!(
                    "cache {} for {platform} not used: {}",
                    source.location,
                    with_causes(&e)
                )),
            }
        }
    }
    for message in notes {
        report(Event::Note { message });
    }
    imported
}

fn report_warning(report: &mut impl FnMut(Event), message: String) {
    report(Event::Warning {
        message,
        line: None,
    });
}

/// A cache child: its manifest and config, checked to be kiln's.
fn read_child(
    place: &Place<'_>,
    child: &Descriptor,
) -> Result<(Manifest, CacheConfig), CacheError> {
    let bytes = place.read_blob(child)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| CacheError::Format {
        reason: format!("cache manifest {}: {e}", child.digest),
    })?;
    let config_bytes = place.read_blob(&manifest.config)?;
    if manifest.config.media_type == CACHE_MEDIA_TYPE {
        return Ok((manifest, CacheConfig::parse(&config_bytes)?));
    }
    if !media::is_config(&manifest.config.media_type) {
        return Err(CacheError::Format {
            reason: format!(
                "manifest {} has a {} config",
                child.digest, manifest.config.media_type
            ),
        });
    }
    // An image: its inline cache, whose layers are the image's own.
    let image: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| CacheError::Format {
            reason: format!("image config {}: {e}", manifest.config.digest),
        })?;
    let Some(inline) = image.inline_cache else {
        return Err(CacheError::Format {
            reason: format!("image {} has no inline kiln cache", child.digest),
        });
    };
    let config = CacheConfig::parse(&serde_json::to_vec(&inline).unwrap_or_default())?;
    // An entry must name the layer the image has at its index.
    let entries = config
        .entries
        .iter()
        .filter(|e| match (e.layer, &e.diff_id) {
            (Some(i), Some(diff)) => image.rootfs.diff_ids.get(i) == Some(diff),
            (None, _) => true,
            (Some(_), None) => false,
        })
        .cloned()
        .collect();
    Ok((manifest, CacheConfig { entries, ..config }))
}

/// The entries of the steps behind `image`'s layers, as an inline cache
/// (`--cache-to type=inline`): each layer named by its index among the
/// image's.
pub(crate) fn inline_cache(
    records: &[StepRecord],
    image: &crate::BuiltImage,
    now: i64,
    ttl: Duration,
) -> CacheConfig {
    let platform = image.platform.to_string();
    let expires = format::expiry(now, ttl);
    let keys: HashSet<&Digest> = image.step_keys.iter().collect();
    let diff_ids = &image.config.rootfs.diff_ids;
    let mut entries = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.platform == platform && keys.contains(&r.key))
    {
        let (layer, diff_id) = match &r.layer {
            Some((_, diff)) => match diff_ids
                .iter()
                .enumerate()
                .skip(image.base_layers)
                .find(|(_, d)| *d == diff)
            {
                Some((i, _)) => (Some(i), Some(diff.clone())),
                None => continue,
            },
            None => (None, None),
        };
        entries.push(CacheEntry {
            key: r.key.clone(),
            parent: Some(r.parent.clone()),
            layer,
            diff_id,
            stage: r.stage.clone(),
            instruction: r.instruction.clone(),
            created: r.created.clone(),
            expires: expires.clone(),
            build_millis: r.millis,
        });
    }
    CacheConfig::new(platform, format::merge(entries, Vec::new(), now))
}

/// What a cache export did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exported {
    /// The build's entries the cache now holds.
    pub(crate) entries: usize,
    /// Layer blobs sent (the others the cache had).
    pub(crate) uploaded: usize,
    /// False when the cache already held every entry: nothing was written.
    pub(crate) written: bool,
    /// With `mounts=true`: the build's cache mounts the cache holds, and
    /// how many of their blobs were sent.
    pub(crate) mounts: usize,
    pub(crate) mounts_uploaded: usize,
}

/// Gives a layer (its descriptor and diffID) in the cache's encoding.
pub(crate) type EncodeLayer<'a> =
    dyn Fn(&Descriptor, &Digest) -> Result<(Descriptor, Digest), CacheError> + 'a;

/// How many times a write whose index another writer replaced is tried.
const ATTEMPTS: u32 = 5;

/// How long a registry writer waits after its `PUT` before reading the
/// index back: three times its own read-to-put time, within these bounds.
/// A writer that read the index before ours landed and puts its own within
/// that wait is seen, and merged with. That window is a handful of small
/// requests (the layers went up before); the floor is for a writer slower
/// than us, a busier runner or one further from the registry. The wait is
/// after every build's last step, so the floor is no longer than that:
/// 100 ms, many times the window of a writer beside its registry (a few
/// ms on loopback).
const SETTLE_MIN: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Writes `records` (grouped by platform) into the cache `to`, merged with
/// what is there. `encode` gives each layer in the cache's encoding. A
/// cache that already holds every record (not near its expiry) is left
/// as it is. With `mounts`, the build's cache mounts go into the cache's
/// mounts child the same way (`mounts` module).
#[allow(clippy::too_many_arguments)]
pub(crate) fn export(
    to: &CacheTo,
    records: &[StepRecord],
    store: &Store,
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    now: i64,
    encode: &EncodeLayer<'_>,
    mounts: Option<&MountsExport<'_>>,
) -> Result<Exported, CacheError> {
    let place = Place::new(&to.location, client, runtime)?;
    let expires = format::expiry(now, to.ttl);
    // Entries that still have more than half their time are not rewritten.
    let fresh_until = now.saturating_add((to.ttl / 2).as_secs().min(i64::MAX as u64) as i64);
    // Our entries and layers, per platform, in the cache's encoding.
    let mut ours: BTreeMap<String, Vec<(CacheEntry, Option<Descriptor>)>> = BTreeMap::new();
    for r in records {
        let layer = match &r.layer {
            Some((d, diff)) => Some(encode(d, diff)?),
            None => None,
        };
        let entry = CacheEntry {
            key: r.key.clone(),
            parent: Some(r.parent.clone()),
            layer: None,
            diff_id: layer.as_ref().map(|(_, diff)| diff.clone()),
            stage: r.stage.clone(),
            instruction: r.instruction.clone(),
            created: r.created.clone(),
            expires: expires.clone(),
            build_millis: r.millis,
        };
        ours.entry(r.platform.clone())
            .or_default()
            .push((entry, layer.map(|(d, _)| d)));
    }
    // A directory is locked while it is read, merged and written; a
    // registry has no lock and no compare-and-swap: see below.
    let _lock = place.lock()?;
    // A first look: a cache that holds everything is left alone, and the
    // layers of the children that change go up now, so that the window
    // between reading the index to merge and putting it stays short.
    let mut pushed = HashSet::new();
    let mut exported = Exported {
        entries: records.len(),
        uploaded: 0,
        written: false,
        mounts: 0,
        mounts_uploaded: 0,
    };
    let first = cache_children(&place)?;
    let mounts = mounts.map(|m| mounts::prepare(m, &place, &first, store, now, to.ttl));
    let mut all_held = true;
    if let Some(m) = &mounts {
        exported.mounts = m.len();
        if !m.held(&place, &first, now, fresh_until) {
            all_held = false;
            exported.mounts_uploaded += m.push(&place, store, &mut pushed)?;
        }
    }
    for (platform, entries) in &ours {
        let parsed = Platform::parse(platform).map_err(|reason| CacheError::Format { reason })?;
        let held = first
            .iter()
            .find(|d| d.platform().is_some_and(|p| p == parsed))
            .and_then(|child| read_child(&place, child).ok())
            .is_some_and(|(_, config)| holds(&config, entries, now, fresh_until));
        if !held {
            all_held = false;
            exported.uploaded += push_layers(&place, store, entries, &mut pushed)?;
        }
    }
    if all_held {
        return Ok(exported);
    }
    exported.written = true;
    for _ in 0..ATTEMPTS {
        let began = Instant::now();
        let mut children = cache_children(&place)?;
        let mut written = Vec::new();
        let mut changed = false;
        for (platform, entries) in &ours {
            let parsed =
                Platform::parse(platform).map_err(|reason| CacheError::Format { reason })?;
            let theirs = match children
                .iter()
                .position(|d| d.platform().is_some_and(|p| p == parsed))
            {
                Some(i) => {
                    let child = children.remove(i);
                    // A child that cannot be read is replaced, not merged.
                    read_child(&place, &child)
                        .ok()
                        .map(|(manifest, config)| (child, manifest, config))
                }
                None => None,
            };
            let child = match theirs {
                Some((child, _, config)) if holds(&config, entries, now, fresh_until) => child,
                theirs => {
                    changed = true;
                    // Layers go up before the manifest that names them.
                    exported.uploaded += push_layers(&place, store, entries, &mut pushed)?;
                    let theirs = theirs.map(|(_, manifest, config)| (manifest, config));
                    write_child(&place, &parsed, entries, theirs, now)?
                }
            };
            written.push(child.digest.clone());
            children.push(child);
        }
        if let Some(m) = &mounts {
            let (wrote, sent) =
                m.merge_into(&place, store, &mut children, &mut pushed, now, fresh_until)?;
            exported.mounts_uploaded += sent;
            if wrote {
                changed = true;
                written.extend(mounts::Prepared::child(&children).cloned());
            }
        }
        if !changed {
            return Ok(exported);
        }
        children.sort_by_key(|d| d.platform().map(|p| p.to_string()).unwrap_or_default());
        let index = Document::new(Index::new(Format::Oci, children));
        place.put_index(&index)?;
        if !place.is_registry() {
            return Ok(exported);
        }
        // Another writer may have read the index before our PUT and put
        // its own after it, without our children. Wait for such a PUT to
        // land, read back, and merge again if ours are gone.
        std::thread::sleep((began.elapsed() * 3).clamp(SETTLE_MIN, SETTLE_MAX));
        let kept = place.read_index()?.is_some_and(|i| {
            written
                .iter()
                .all(|w| i.manifests.iter().any(|d| &d.digest == w))
        });
        if kept {
            return Ok(exported);
        }
    }
    Err(CacheError::Contended {
        cache: to.location.to_string(),
        attempts: ATTEMPTS,
    })
}

/// The children of the cache index at `place` (none if there is none). A
/// ref that names an image is refused: writing the cache would replace it.
/// Every kiln cache child counts, not only the platforms' entries: the
/// mounts child, and any kind a later kiln adds, are put back as they were.
fn cache_children(place: &Place<'_>) -> Result<Vec<Descriptor>, CacheError> {
    let children = place.read_index()?.map(|i| i.manifests).unwrap_or_default();
    if !children.iter().all(is_kiln_child) {
        return Err(CacheError::NotACache {
            cache: place.name(),
        });
    }
    Ok(children)
}

/// Whether a cache index's child is one of kiln's: its `artifactType` is
/// a kiln cache media type (`application/vnd.kiln.cache.v1+json`, the
/// mounts', or one a later kiln adds).
fn is_kiln_child(d: &Descriptor) -> bool {
    d.artifact_type
        .as_deref()
        .is_some_and(|t| t.starts_with(KILN_CACHE_TYPES))
}

/// The prefix every kiln cache media type shares.
const KILN_CACHE_TYPES: &str = "application/vnd.kiln.cache.";

/// Pushes the layers of `entries` not pushed yet; how many were sent (the
/// cache did not have them).
fn push_layers(
    place: &Place<'_>,
    store: &Store,
    entries: &[(CacheEntry, Option<Descriptor>)],
    pushed: &mut HashSet<Digest>,
) -> Result<usize, CacheError> {
    let mut sent = 0;
    for d in entries.iter().filter_map(|(_, layer)| layer.as_ref()) {
        if pushed.insert(d.digest.clone()) && place.push_from_store(store, d)? {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Whether a cache child already holds every entry of `ours` with the
/// same layer, none expiring before `fresh_until`, and nothing expired.
fn holds(
    config: &CacheConfig,
    ours: &[(CacheEntry, Option<Descriptor>)],
    now: i64,
    fresh_until: i64,
) -> bool {
    let theirs: HashMap<&Digest, &CacheEntry> =
        config.entries.iter().map(|e| (&e.key, e)).collect();
    config.entries.iter().all(|e| !e.expired(now))
        && ours.iter().all(|(e, _)| {
            theirs.get(&e.key).is_some_and(|t| {
                t.diff_id == e.diff_id
                    && kiln_image::document::parse_rfc3339(&t.expires)
                        .is_some_and(|at| at >= fresh_until)
            })
        })
}

/// One platform's child: our entries merged over theirs, their layers
/// (already in the cache) and ours, the config and the manifest written.
fn write_child(
    place: &Place<'_>,
    platform: &Platform,
    ours: &[(CacheEntry, Option<Descriptor>)],
    theirs: Option<(Manifest, CacheConfig)>,
    now: i64,
) -> Result<Descriptor, CacheError> {
    // Every entry with its layer as a descriptor, then indexed afresh.
    let mut layer_of: HashMap<Digest, Descriptor> = HashMap::new();
    let mut their_entries = Vec::new();
    if let Some((manifest, config)) = theirs {
        for mut e in config.entries {
            match e.layer.take() {
                Some(i) => match manifest.layers.get(i) {
                    Some(d) => {
                        layer_of.insert(e.key.clone(), d.clone());
                        their_entries.push(e);
                    }
                    None => continue,
                },
                None => their_entries.push(e),
            }
        }
    }
    let mut our_entries = Vec::new();
    for (e, layer) in ours {
        if let Some(d) = layer {
            layer_of.insert(e.key.clone(), d.clone());
        }
        our_entries.push(e.clone());
    }
    let merged = format::merge(our_entries, their_entries, now);
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut entries = Vec::with_capacity(merged.len());
    for mut e in merged {
        if let Some(d) = layer_of.get(&e.key) {
            let i = match layers.iter().position(|l| l.digest == d.digest) {
                Some(i) => i,
                None => {
                    layers.push(d.clone());
                    layers.len() - 1
                }
            };
            e.layer = Some(i);
        }
        entries.push(e);
    }
    let config = CacheConfig::new(platform.to_string(), entries);
    let config_bytes = config.to_bytes();
    let config_desc = Descriptor::new(
        CACHE_MEDIA_TYPE,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    place.push_document(&config_desc, &config_bytes)?;
    let mut manifest = Manifest::new(Format::Oci, config_desc, layers);
    manifest.artifact_type = Some(CACHE_MEDIA_TYPE.to_string());
    let doc = Document::new(manifest);
    let desc = doc.descriptor();
    place.push_document(&desc, doc.bytes())?;
    let mut desc = desc.with_platform(platform);
    desc.artifact_type = Some(CACHE_MEDIA_TYPE.to_string());
    debug_assert!(media::is_manifest(&desc.media_type));
    Ok(desc)
}

/// The Unix time now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
