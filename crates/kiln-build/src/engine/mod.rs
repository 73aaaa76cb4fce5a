//! The build engine: a plan of stages, run stage by stage (independent
//! stages and platforms at once), step by step, each step keyed for the
//! cache, executed on an overlay snapshot when the cache has nothing.
//!
//! ```text
//! BuildRequest ─parse, plan─▶ Plan (per platform)
//!   per stage (a thread each; waits for the stages it reads)
//!     base: scratch | image (store, else pulled) | an earlier stage
//!     per instruction: StageScope::dispatch (expansion, ARG/ENV)
//!       metadata (ENV, CMD, ...) → ConfigState + history
//!       RUN, COPY, ADD, WORKDIR → cache key → hit: reuse the layer
//!                                           → miss: activate, execute, commit
//!   target stage → image config + manifest (+ index for several platforms)
//! ```

mod cache_key;
mod config;
mod copy;
mod error;
mod prehash;
mod run;
mod stage;
mod stage_image;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_dockerfile::instructions;
use kiln_dockerfile::plan::{self, Base, BuildOptions, Plan};
use kiln_image::document::{Descriptor, Document, ImageConfig, Index, Manifest};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, Platform, Store};
use kiln_registry::RegistryClient;
use kiln_sandbox::{Executor, RunControl};

pub(crate) use self::cache_key::VERSION as CACHE_KEY_VERSION;
pub(crate) use self::error::with_causes;
pub use self::error::{BuildError, Cause};
use self::stage::{StageOutcome, StageRunner, Step};
pub use self::stage_image::StageImage;
use self::stage_image::{StagePush, find_stage, needed_stages, stage_key};
use crate::events::{Event, EventSink, StepId, millis};
use crate::export::{self, Encoding};
use crate::remote_cache::{
    self, CacheError, CacheFrom, CacheLocation, CacheMode, CacheTo, Exported, Imported,
    MountsExport, StepRecord,
};
use crate::run::{CacheMounts, RunError, Secrets};
use crate::watchdog::{Backoff, Limits, SAMPLE_EVERY, StepPolicy, StepSettings};
use crate::{BuildContext, HashMemo, OverlaySnapshotter, Snapshotter};

/// A secret for `RUN --mount=type=secret`: its id and where its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// `RUN` network mode for the whole build (`--network`).
/// The build arg that sets the image's times (reproducible-builds.org).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildNetwork {
    #[default]
    Host,
    None,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile on disk (for the ignore-file rule), and its text.
    pub dockerfile: PathBuf,
    pub dockerfile_text: Vec<u8>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Platforms to build (one image each; an index when several).
    pub platforms: Vec<Platform>,
    pub secrets: Vec<SecretSpec>,
    pub network: BuildNetwork,
    /// Ignore the cache (every step runs; results are still recorded).
    pub no_cache: bool,
    /// Look base images up in the registry even when the store has them.
    pub pull: bool,
    /// How the layers the build makes are compressed, and at which level
    /// (`None`: the codec's default, see `kiln_image::compress`), and the
    /// media types of the image it returns. Outputs may ask for another
    /// encoding ([`Encoding`]). `SOURCE_DATE_EPOCH` is a build arg,
    /// as in BuildKit (see [`BuildRequest::source_date_epoch`]).
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub format: Format,
    /// `--step-timeout`: the longest one attempt of a RUN step may run
    /// (cache-lock waits included); `None` (the default) or zero for no
    /// limit.
    pub step_timeout: Option<Duration>,
    /// `--stall-timeout`: how long a RUN step's process tree may go
    /// without output, CPU or I/O before it is killed (see
    /// the watchdog); [`BuildRequest::DEFAULT_STALL_TIMEOUT`] by
    /// default, `None` or zero never.
    pub stall_timeout: Option<Duration>,
    /// `--retries`: how many more times a RUN step that stalled, timed
    /// out or exited non-zero runs, each time from its clean parent;
    /// [`BuildRequest::DEFAULT_RETRIES`] by default.
    pub retries: u32,
    /// The wait before the first retry, doubled for each one after.
    pub retry_backoff: Duration,
    /// `--cache-from`: caches whose entries answer what the store misses,
    /// tried in order.
    pub cache_from: Vec<CacheFrom>,
    /// `--cache-to`: caches the build's entries are written to.
    pub cache_to: Vec<CacheTo>,
    /// `--stage-image`: stages taken from their image when it exists,
    /// else built and pushed as one (docs/CACHE.md).
    pub stage_images: Vec<StageImage>,
    /// `--label`: labels set on the built image's config, over the
    /// Dockerfile's own (buildx's rule: the image the build returns, not
    /// the stages it read, nor stage images).
    pub labels: BTreeMap<String, String>,
}

impl BuildRequest {
    pub fn new(context: PathBuf, dockerfile: PathBuf, dockerfile_text: Vec<u8>) -> BuildRequest {
        BuildRequest {
            context,
            dockerfile,
            dockerfile_text,
            target: None,
            build_args: BTreeMap::new(),
            platforms: vec![Platform::host()],
            secrets: Vec::new(),
            network: BuildNetwork::Host,
            no_cache: false,
            pull: false,
            compression: Compression::Gzip,
            compression_level: None,
            format: Format::Oci,
            step_timeout: None,
            stall_timeout: Some(BuildRequest::DEFAULT_STALL_TIMEOUT),
            retries: BuildRequest::DEFAULT_RETRIES,
            retry_backoff: Backoff::DEFAULT.first,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            stage_images: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    /// Ten minutes: longer than any honest silence of a compiler or a
    /// package manager, far shorter than a CI job's own timeout.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

    /// None: a step that fails fails the build, as in BuildKit.
    pub const DEFAULT_RETRIES: u32 = 0;

    /// The `SOURCE_DATE_EPOCH` build arg, as BuildKit reads it: Unix
    /// seconds, the image's and its history's `created` time (and the
    /// time `rewrite-timestamp` outputs clamp files to). Buildx passes the
    /// variable of its environment as this build arg; so does `kiln build`.
    pub fn source_date_epoch(&self) -> Result<Option<i64>, BuildError> {
        let Some(value) = self.build_args.get(SOURCE_DATE_EPOCH) else {
            return Ok(None);
        };
        value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(Some)
            .ok_or_else(|| BuildError::SourceDateEpoch {
                value: value.clone(),
            })
    }

    /// The encoding of the image the build returns: its layers'
    /// compression and level, its media types, its times.
    pub fn encoding(&self) -> Result<Encoding, BuildError> {
        Ok(Encoding {
            compression: self.compression,
            level: self.compression_level,
            format: self.format,
            epoch: self.source_date_epoch()?,
            ..Encoding::default()
        })
    }

    /// What the watchdog applies to a RUN step without `# kiln:` settings.
    pub fn step_policy(&self) -> StepPolicy {
        StepPolicy {
            limits: Limits {
                timeout: self.step_timeout.filter(|d| !d.is_zero()),
                stall: self.stall_timeout.filter(|d| !d.is_zero()),
            },
            retries: self.retries,
            backoff: Backoff {
                first: self.retry_backoff,
                ..Backoff::DEFAULT
            },
        }
    }
}

/// One platform's image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub platform: Platform,
    /// The manifest, in the store.
    pub manifest: Descriptor,
    pub config: ImageConfig,
    /// How many of its layers, bottom first, are a base image's as pulled
    /// (kept in their compression unless an output forces another).
    pub base_layers: usize,
    /// The cache keys of the steps behind its layers, base stages' included.
    pub step_keys: Vec<Digest>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// What to tag or export: the manifest, or an index of several.
    pub target: Descriptor,
    pub images: Vec<BuiltImage>,
    pub steps_run: u32,
    pub steps_cached: u32,
    /// The RUN steps that needed more than one attempt, and how many.
    pub attempts: BTreeMap<StepId, u32>,
}

/// See [`Engine::layers_ahead`].
pub type LayersAhead = Arc<dyn Fn(&Platform, &[Descriptor]) + Send + Sync>;

/// What a build needs from its surroundings.
pub struct Engine {
    pub store: Store,
    pub snapshotter: Arc<dyn Snapshotter>,
    pub client: RegistryClient,
    pub runtime: tokio::runtime::Handle,
    pub executor: Arc<dyn Executor>,
    pub events: EventSink,
    /// Set to stop the build: running steps are cancelled and cleaned up.
    pub cancel: Arc<AtomicBool>,
    /// Set (with `cancel`) to stop the layers still being written in the
    /// background too: their steps are not recorded and run again in the
    /// next build. Unset, a cancelled build waits for them.
    pub stop_writing: Arc<AtomicBool>,
    /// How many layers are being written in the background now.
    pub(crate) writing: Arc<AtomicUsize>,
    /// How often the watchdog looks at a running RUN step
    /// (`SAMPLE_EVERY`); tests with millisecond limits look more often.
    pub sample_every: Duration,
    /// Whether a step's layer is written in the background while the next
    /// step runs on its files (on by default; off, each step waits for its
    /// commit). Snapshotters that cannot stack a step on a sealed one
    /// (the tree one) commit at once either way.
    pub background_commits: bool,
    /// Told the target stage's layers (bottom first, all of them so far)
    /// each time a step adds one, with the image's platform: an exporter
    /// may write them before the build ends ([`crate::OciTarAhead`]).
    /// Called on the stage's thread; it should not wait long.
    pub layers_ahead: Option<LayersAhead>,
    /// The sandbox runs in flight, so a cancel reaches them.
    pub(crate) running: Arc<Mutex<Vec<RunControl>>>,
}

/// A layer being written, counted in [`Engine::layers_being_written`]
/// while this lives.
pub(crate) struct Writing(Arc<AtomicUsize>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`Engine::cancel`] does, for threads that do not hold the engine
/// (a background commit that failed).
#[derive(Clone)]
pub(crate) struct Canceller {
    cancel: Arc<AtomicBool>,
    running: Arc<Mutex<Vec<RunControl>>>,
}

impl Canceller {
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        for control in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            control.cancel();
        }
    }
}

/// Cleans up after kiln processes that died without doing it themselves
/// (kill -9, OOM kill, power loss): their containers (killed and deleted),
/// the mounts and active dirs of their snapshots, half-made snapshots, and
/// their scratch, secret and download dirs. What live processes hold is
/// left alone, so any kiln may run it at any time: the engine does at start
/// and the CLI before every command that opens a store (docs/RELIABILITY.md).
pub fn sweep_after_crash(
    store: &Store,
    executor: &dyn Executor,
    snapshotter: &dyn Snapshotter,
) -> Result<(), BuildError> {
    // The containers first, as their processes may use those mounts.
    executor
        .sweep()
        .map_err(BuildError::sweep("cleaning up runs of a crashed kiln"))?;
    snapshotter.sweep()?;
    let scratch = store.root().join("tmp");
    fs_err::create_dir_all(&scratch)
        .map_err(RunError::from)
        .and_then(|()| crate::run::sweep_scratch(&scratch))
        .map_err(|e| BuildError::Scratch {
            source: Cause::new(e),
        })?;
    Secrets::new()
        .sweep()
        .map_err(BuildError::sweep("removing stale secrets"))?;
    kiln_fs::sweep(store.root(), DOWNLOAD_PREFIX)
        .map_err(BuildError::sweep("removing stale downloads"))?;
    Ok(())
}

impl Engine {
    /// An engine on `store` with the overlay snapshotter.
    pub fn new(
        store: Store,
        client: RegistryClient,
        runtime: tokio::runtime::Handle,
        executor: Arc<dyn Executor>,
        events: EventSink,
    ) -> Result<Engine, BuildError> {
        let snapshotter = Arc::new(OverlaySnapshotter::new(&store)?);
        Engine::with_snapshotter(store, snapshotter, client, runtime, executor, events)
    }

    /// An engine on `store` with another snapshotter (the tests' fake).
    pub fn with_snapshotter(
        store: Store,
        snapshotter: Arc<dyn Snapshotter>,
        client: RegistryClient,
        runtime: tokio::runtime::Handle,
        executor: Arc<dyn Executor>,
        events: EventSink,
    ) -> Result<Engine, BuildError> {
        sweep_after_crash(&store, &*executor, &*snapshotter)?;
        // Base layers and cache hits stay in their registry until a step
        // or an export reads them: the store fetches them then, with this
        // client.
        store.set_fetcher(Arc::new(kiln_registry::RegistryFetcher::new(
            client.clone(),
            runtime.clone(),
        )));
        Ok(Engine {
            store,
            snapshotter,
            client,
            runtime,
            executor,
            events,
            cancel: Arc::new(AtomicBool::new(false)),
            stop_writing: Arc::new(AtomicBool::new(false)),
            writing: Arc::default(),
            sample_every: SAMPLE_EVERY,
            background_commits: true,
            layers_ahead: None,
            running: Arc::default(),
        })
    }

    /// Whether a RUN for another architecture is checked for emulation
    /// before it starts (the executor runs real programs).
    pub(crate) fn checks_emulation(&self) -> bool {
        self.executor.runs_real_programs()
    }

    /// Stops the build: marks it cancelled and cancels running steps.
    /// The layers of the steps that ran are still written (in the
    /// background, [`layers_being_written`](Engine::layers_being_written))
    /// and recorded whole, so the next build reuses them.
    pub fn cancel(&self) {
        self.canceller().cancel();
    }

    /// [`cancel`](Engine::cancel), and the layers being written stop too
    /// (a second Ctrl-C): nothing of them is stored or recorded.
    pub fn cancel_now(&self) {
        self.stop_writing.store(true, Ordering::SeqCst);
        self.cancel();
    }

    /// How many steps' layers are being written in the background: what a
    /// cancelled build still waits for.
    pub fn layers_being_written(&self) -> usize {
        self.writing.load(Ordering::SeqCst)
    }

    /// One more layer in [`layers_being_written`](Engine::layers_being_written),
    /// until the returned guard is dropped.
    pub(crate) fn count_writing(&self) -> Writing {
        self.writing.fetch_add(1, Ordering::SeqCst);
        Writing(Arc::clone(&self.writing))
    }

    pub(crate) fn canceller(&self) -> Canceller {
        Canceller {
            cancel: Arc::clone(&self.cancel),
            running: Arc::clone(&self.running),
        }
    }

    fn scratch_dir(&self) -> PathBuf {
        self.store.root().join("tmp")
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub(crate) fn emit(&self, event: Event) {
        (self.events)(event);
    }

    /// Builds `request`; the images are in the store, not yet tagged.
    pub fn build(&self, request: &BuildRequest) -> Result<BuildResult, BuildError> {
        let started = Instant::now();
        if let Some(level) = request.compression_level {
            // Now, not when the first layer is committed.
            kiln_image::compress::check_level(request.compression, level)
                .map_err(|source| BuildError::CompressionLevel { source })?;
        }
        let encoding = request.encoding()?;
        let prepared = self.prepare(request)?;
        let (plans, platforms) = (&prepared.plans, &prepared.platforms);
        self.check_stage_images(request, &plans[0])?;
        let target_name = plans[0].stages[plans[0].target].display_name();
        self.emit(Event::BuildStarted {
            target: target_name,
            platforms: platforms.iter().map(ToString::to_string).collect(),
            stages: plans[0]
                .order
                .iter()
                .map(|&i| plans[0].stages[i].display_name())
                .collect(),
        });

        let counter = AtomicU32::new(1);
        let mut secrets = Secrets::new();
        for spec in &request.secrets {
            let loaded = match &spec.source {
                SecretSource::File(path) => secrets.insert_file(spec.id.clone(), path),
                SecretSource::Env(var) => secrets.insert_env(spec.id.clone(), var),
            };
            loaded.map_err(|e| BuildError::Secret {
                id: spec.id.clone(),
                source: Cause::new(e),
            })?;
        }
        // `--no-cache` reads no cache, the store's or another's.
        let cache_from: &[CacheFrom] = if request.no_cache {
            &[]
        } else {
            &request.cache_from
        };
        let remote = remote_cache::import(
            cache_from,
            platforms,
            &self.client,
            &self.runtime,
            remote_cache::unix_now(),
            |event| self.emit(event),
        );
        let shared = self.shared(request, encoding, &prepared, &counter, secrets, remote);
        let multi = shared.multi;
        let prehashed = prehash::selections(&plans[0]);
        let outcomes: Vec<Result<Built, BuildError>> = std::thread::scope(|scope| {
            // The context files the steps read, hashed while the bases
            // are pulled (prehash.rs); it stops with the build.
            let (context, memo) = (shared.context, shared.memo);
            let _ = std::thread::Builder::new()
                .name("kiln-prehash".to_string())
                .spawn_scoped(scope, move || {
                    // Below the pulls and steps: it only takes what they
                    // leave idle (its hashing threads inherit this).
                    stage::below_the_steps();
                    prehash::prehash(context, memo, &prehashed);
                });
            let handles: Vec<_> = plans
                .iter()
                .zip(platforms)
                .map(|(plan, platform)| {
                    let shared = &shared;
                    scope.spawn(move || self.build_platform(plan, platform, shared))
                })
                .collect();
            let outcomes = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(BuildError::Panicked)))
                .collect();
            // Nothing digests the context any more but the prehash: it
            // stops now, in the middle of a file.
            memo.halt();
            outcomes
        });
        let mut images = Vec::new();
        let (mut run, mut cached) = (0, 0);
        let mut stage_pushes = Vec::new();
        for outcome in outcomes {
            let built = outcome?;
            images.push(built.image);
            run += built.run;
            cached += built.cached;
            stage_pushes.extend(built.stage_pushes);
        }
        // A cancel after the last step began (its layer being written, say)
        // is still a cancel: the layers are recorded whole, the image is
        // neither exported nor pushed.
        if self.cancelled() {
            return Err(BuildError::Cancelled);
        }
        let records =
            std::mem::take(&mut *shared.records.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(inline) = request
            .cache_to
            .iter()
            .find(|to| to.location == CacheLocation::Inline)
        {
            for image in &mut images {
                let entries = self.inline_cache(image, &records, inline, request.format)?;
                self.emit(Event::Note {
                    message: format!("cache inline: {entries} entries in the image's config"),
                });
            }
        }
        let target = if multi {
            let manifests: Vec<Descriptor> = images.iter().map(|i| i.manifest.clone()).collect();
            let index = Document::new(Index::new(request.format, manifests));
            self.store
                .put_document(&index)
                .map_err(BuildError::store("storing the image index"))?
        } else {
            images[0].manifest.clone()
        };
        // Layers cached from a build in another encoding come out in this
        // one (and SOURCE_DATE_EPOCH reaches cached history entries).
        let (target, images) =
            export::encode_image(&self.store, &target, &images, &shared.encoding).map_err(|e| {
                BuildError::Export {
                    source: Cause::new(e),
                }
            })?;
        for to in request
            .cache_to
            .iter()
            .filter(|to| to.location != CacheLocation::Inline)
        {
            let began = Instant::now();
            let done = self.export_cache(to, &records, &images, &shared.encoding, &shared.caches);
            match done {
                Ok(exported) => self.emit(Event::Note {
                    message: if exported.written {
                        format!(
                            "cache {}: {} entries written, {} layers uploaded{}, in {:.1}s",
                            to.location,
                            exported.entries,
                            exported.uploaded,
                            if to.mounts {
                                format!(
                                    "; {} cache mounts, {} uploaded",
                                    exported.mounts, exported.mounts_uploaded
                                )
                            } else {
                                String::new()
                            },
                            began.elapsed().as_secs_f64()
                        )
                    } else {
                        format!(
                            "cache {}: holds all {} entries{} already, not written",
                            to.location,
                            exported.entries,
                            if to.mounts {
                                format!(" and {} cache mounts", exported.mounts)
                            } else {
                                String::new()
                            }
                        )
                    },
                }),
                Err(e) if to.ignore_error => self.emit(Event::Warning {
                    message: format!("cache {} not written: {}", to.location, with_causes(&e)),
                    line: None,
                }),
                Err(e) => {
                    return Err(BuildError::CacheExport {
                        cache: to.location.to_string(),
                        source: Cause::new(e),
                    });
                }
            }
        }
        self.push_stage_images(&stage_pushes, &shared.encoding)?;
        self.emit(Event::BuildDone {
            image: Some(target.digest.to_string()),
            duration_ms: millis(started.elapsed()),
        });
        Ok(BuildResult {
            target,
            images,
            steps_run: run,
            steps_cached: cached,
            attempts: std::mem::take(
                &mut *shared.attempts.lock().unwrap_or_else(|e| e.into_inner()),
            ),
        })
    }

    /// Puts the inline cache (`--cache-to type=inline`) into `image`'s
    /// config: a new config and manifest; returns how many entries.
    fn inline_cache(
        &self,
        image: &mut BuiltImage,
        records: &[StepRecord],
        to: &CacheTo,
        format: Format,
    ) -> Result<usize, BuildError> {
        let cache = remote_cache::inline_cache(records, image, remote_cache::unix_now(), to.ttl);
        let entries = cache.entries.len();
        let mut config = image.config.clone();
        config.inline_cache =
            Some(
                serde_json::to_value(&cache).map_err(|e| BuildError::CacheExport {
                    cache: to.location.to_string(),
                    source: Cause::new(CacheError::Format {
                        reason: e.to_string(),
                    }),
                })?,
            );
        let store_err = BuildError::store("storing the image with its inline cache");
        let config_desc = self
            .store
            .put_document(&Document::with_media_type(format.config(), config.clone()))
            .map_err(store_err)?;
        let mut manifest = self
            .store
            .read_document::<Manifest>(&image.manifest)
            .map_err(BuildError::store("reading the built image"))?
            .into_value();
        manifest.config = config_desc;
        let mut desc = self
            .store
            .put_document(&Document::new(manifest))
            .map_err(BuildError::store("storing the image with its inline cache"))?;
        desc.platform = image.manifest.platform.clone();
        desc.annotations = image.manifest.annotations.clone();
        image.manifest = desc;
        image.config = config;
        Ok(entries)
    }

    /// Reads a request: the Dockerfile parsed, its `# kiln:` settings read
    /// and it planned for each platform (warnings reported), the context
    /// opened.
    fn prepare(&self, request: &BuildRequest) -> Result<Prepared, BuildError> {
        let ast = kiln_dockerfile::parse(&request.dockerfile_text)?;
        for w in &ast.warnings {
            self.emit(Event::Warning {
                message: w.message.clone(),
                line: Some(w.start_line),
            });
        }
        let dockerfile =
            instructions::parse_dockerfile(&ast).map_err(kiln_dockerfile::Error::from)?;
        // Every RUN's `# kiln:` settings, read once: a bad comment on line
        // 90 fails now, not after the steps above it ran.
        let settings = StepSettings::read(&dockerfile, |ignored| {
            self.emit(Event::Warning {
                message: ignored.to_string(),
                line: Some(ignored.line),
            });
        })
        .map_err(BuildError::step_settings)?;
        let context = BuildContext::open(&request.context, &request.dockerfile)?;
        // A cancel stops a digest in the middle of the context.
        let memo = HashMemo::new(self.store.clone()).stopping_on(Arc::clone(&self.cancel));
        let platforms = if request.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            request.platforms.clone()
        };
        let mut plans = Vec::new();
        for platform in &platforms {
            let options = BuildOptions {
                build_args: request.build_args.clone(),
                target: request.target.clone(),
                target_platform: platform.clone(),
                build_platform: Platform::host(),
            };
            let plan = plan::plan(&dockerfile, ast.escape, &options)
                .map_err(kiln_dockerfile::Error::from)?;
            plans.push(plan);
        }
        // Warnings are the same for every platform: report them once.
        for w in &plans[0].warnings {
            self.emit(Event::Warning {
                message: w.message.clone(),
                line: w.location.map(|l| l.start_line),
            });
        }
        Ok(Prepared {
            settings,
            context,
            memo,
            platforms,
            plans,
        })
    }

    /// What every stage of a build of `request` shares.
    fn shared<'a>(
        &self,
        request: &'a BuildRequest,
        encoding: Encoding,
        prepared: &'a Prepared,
        counter: &'a AtomicU32,
        secrets: Secrets,
        remote: Imported,
    ) -> Shared<'a> {
        // Waiters read "held by build <this> (pid N)": the Dockerfile
        // tells two builds apart, the pid is added.
        let mut caches = CacheMounts::new(self.store.root())
            .with_build(request.dockerfile.display().to_string());
        // A cache mount a --cache-from has starts from its contents.
        if let Some(source) = remote.mount_source(&self.store, &self.client, &self.runtime) {
            caches = caches.with_source(source);
        }
        Shared {
            request,
            encoding,
            context: &prepared.context,
            memo: &prepared.memo,
            settings: prepared.settings.clone(),
            step_counter: counter,
            multi: prepared.platforms.len() > 1,
            secrets,
            caches,
            scratch: self.scratch_dir(),
            dockerfile_name: dockerfile_name(&request.dockerfile),
            attempts: Mutex::default(),
            pulls: Mutex::default(),
            remote,
            records: Mutex::default(),
        }
    }

    /// `--stage-image` names stages of the Dockerfile, each once; one the
    /// target does not need is a warning.
    fn check_stage_images(&self, request: &BuildRequest, plan: &Plan) -> Result<(), BuildError> {
        let mut seen = HashSet::new();
        for spec in &request.stage_images {
            let named = format!("{}={}", spec.stage, spec.repository.name());
            let stage = find_stage(plan, &spec.stage).map_err(|reason| BuildError::StageImage {
                spec: named.clone(),
                reason,
            })?;
            if !seen.insert(stage) {
                return Err(BuildError::StageImage {
                    spec: named,
                    reason: format!("stage {} is given twice", spec.stage),
                });
            }
            if !plan.order.contains(&stage) {
                self.emit(Event::Warning {
                    message: format!(
                        "--stage-image {named}: the target {} does not need stage {}; no image is read or pushed",
                        plan.stages[plan.target].display_name(),
                        spec.stage
                    ),
                    line: None,
                });
            }
        }
        Ok(())
    }

    /// The key of stage `name` for each platform of `request`: the tag of
    /// its image under `--stage-image` (see [`StageImage::reference`]),
    /// computed without building anything.
    pub fn stage_keys(
        &self,
        request: &BuildRequest,
        name: &str,
    ) -> Result<Vec<(Platform, Digest)>, BuildError> {
        let prepared = self.prepare(request)?;
        let stage = find_stage(&prepared.plans[0], name)
            .map_err(|reason| BuildError::NoSuchStage { reason })?;
        let counter = AtomicU32::new(1);
        let shared = self.shared(
            request,
            request.encoding()?,
            &prepared,
            &counter,
            Secrets::new(),
            Imported::default(),
        );
        let mut keys = Vec::new();
        for (plan, platform) in prepared.plans.iter().zip(&prepared.platforms) {
            let platforms = stage_platforms(plan, platform);
            let keyed = self.key_stages(plan, platform, &platforms, &shared, &[stage])?;
            keys.push((
                platform.clone(),
                stage_key(&keyed[&stage], &platforms[&stage]),
            ));
        }
        Ok(keys)
    }

    /// Writes one `--cache-to`: with `mode=min` the steps behind the
    /// built images' layers, with `mode=max` every step; layers in the
    /// cache's encoding (its own `compression=`, else the build's); with
    /// `mounts=true` the contents of the cache mounts the build took.
    fn export_cache(
        &self,
        to: &CacheTo,
        records: &[StepRecord],
        images: &[BuiltImage],
        build: &Encoding,
        caches: &CacheMounts,
    ) -> Result<Exported, CacheError> {
        let wanted: Vec<StepRecord> = match to.mode {
            CacheMode::Max => records.to_vec(),
            CacheMode::Min => {
                let keys: std::collections::HashSet<&Digest> =
                    images.iter().flat_map(|i| &i.step_keys).collect();
                records
                    .iter()
                    .filter(|r| keys.contains(&r.key))
                    .cloned()
                    .collect()
            }
        };
        let mut encoding = Encoding {
            epoch: None,
            rewrite_timestamps: false,
            format: Format::Oci,
            ..*build
        };
        if let Some(c) = to.compression {
            if c != encoding.compression {
                encoding.level = None;
            }
            encoding.compression = c;
        }
        if to.level.is_some() {
            encoding.level = to.level;
        }
        let encode = |d: &Descriptor, diff: &Digest| {
            export::encode_layer(&self.store, d, diff, &encoding, true).map_err(|e| {
                CacheError::Encode {
                    source: Box::new(e),
                }
            })
        };
        let report = |event| self.emit(event);
        let scratch = self.scratch_dir();
        let mounts = to.mounts.then(|| MountsExport {
            caches,
            max_size: to.mounts_max_size,
            encoding: &encoding,
            scratch: &scratch,
            report: &report,
        });
        remote_cache::export(
            to,
            &wanted,
            &self.store,
            &self.client,
            &self.runtime,
            remote_cache::unix_now(),
            &encode,
            mounts.as_ref(),
        )
    }

    /// Runs every stage the target needs for one platform, each on its own
    /// thread as soon as the stages it reads are done; a `--stage-image`
    /// stage whose image exists is that image, and the stages only it
    /// needed are not built.
    fn build_platform(
        &self,
        plan: &Plan,
        platform: &Platform,
        shared: &Shared<'_>,
    ) -> Result<Built, BuildError> {
        let stage_platforms = &stage_platforms(plan, platform);
        let stage_images = self.stage_images(plan, platform, stage_platforms, shared)?;
        let reused = &stage_images.reused;
        let order: Vec<usize> = needed_stages(plan, &reused.keys().copied().collect())
            .into_iter()
            .filter(|i| !reused.contains_key(i))
            .collect();
        let board = Board::default();
        for (&i, outcome) in reused {
            board.finish(i, Ok(outcome.clone()));
        }
        let steps = plan_steps(plan, &order, &shared.settings, shared.step_counter);
        for &i in &order {
            let stage = &plan.stages[i];
            self.emit(Event::StagePlanned {
                stage: stage.display_name(),
                platform: shared.multi.then(|| platform.to_string()),
                needs: stage
                    .stage_deps()
                    .into_iter()
                    .map(|d| plan.stages[d].display_name())
                    .collect(),
            });
            let total = stage.stage.commands.len();
            for (position, (c, step)) in stage.stage.commands.iter().zip(&steps[&i]).enumerate() {
                self.emit(Event::StepPlanned {
                    // Every planned step has a number; only triggers lack one.
                    step: step.id.unwrap_or_default(),
                    stage: stage.display_name(),
                    platform: shared.multi.then(|| platform.to_string()),
                    line: c.location().start_line,
                    text: format!(
                        "[{} {}/{total}] {}",
                        stage.display_name(),
                        position + 1,
                        one_line(&c.origin().code)
                    ),
                });
            }
        }
        let result = std::thread::scope(|scope| {
            for &i in &order {
                let board = &board;
                let steps = steps.get(&i).cloned().unwrap_or_default();
                scope.spawn(move || {
                    let runner = StageRunner {
                        engine: self,
                        plan,
                        stage: i,
                        platform: &stage_platforms[&i],
                        target_platform: platform,
                        shared,
                        board,
                        steps,
                        downloads: Mutex::default(),
                        scratch_dirs: Mutex::default(),
                        pending: Mutex::default(),
                        keys_only: false,
                    };
                    let outcome = runner.run();
                    board.finish(i, outcome);
                });
            }
            board.wait(plan.target)
        });
        let target = result?;
        // The stage images this build made, each an image of its stage's
        // platform, to push once the build is done.
        let mut stage_pushes = Vec::new();
        for (i, spec) in stage_images.to_push {
            if !order.contains(&i) {
                continue;
            }
            let outcome = board.get(i)?;
            let platform = &stage_platforms[&i];
            let (manifest, config) =
                self.write_image(&outcome, platform, &BTreeMap::new(), shared)?;
            stage_pushes.push(StagePush {
                stage: plan.stages[i].display_name(),
                reference: spec.reference(&stage_key(&outcome, platform)),
                image: BuiltImage {
                    platform: platform.clone(),
                    manifest,
                    config,
                    base_layers: outcome.base_layers,
                    step_keys: outcome.keys.clone(),
                },
            });
        }
        // The image is for its target stage's platform (`FROM
        // --platform=linux/arm64` gives an arm64 image, as in BuildKit).
        let platform = &stage_platforms[&plan.target];
        let (manifest, config) =
            self.write_image(&target, platform, &shared.request.labels, shared)?;
        let (run, cached) = board.counts();
        Ok(Built {
            image: BuiltImage {
                platform: platform.clone(),
                manifest,
                config,
                base_layers: target.base_layers,
                step_keys: target.keys.clone(),
            },
            run,
            cached,
            stage_pushes,
        })
    }

    /// The target stage's final config and manifest, in the store, with
    /// `labels` over the stage's own.
    fn write_image(
        &self,
        outcome: &StageOutcome,
        platform: &Platform,
        labels: &BTreeMap<String, String>,
        shared: &Shared<'_>,
    ) -> Result<(Descriptor, ImageConfig), BuildError> {
        let request = shared.request;
        let mut config = outcome.config.config.clone();
        if !labels.is_empty() {
            let container = config.config.get_or_insert_with(Default::default);
            let own = container.labels.get_or_insert_with(BTreeMap::new);
            own.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        config.created = Some(stage::created_time(shared.encoding.epoch));
        config.architecture = platform.architecture.clone();
        config.os = platform.os.clone();
        config.variant = platform.variant.clone();
        config.rootfs.diff_ids = outcome.layers.iter().map(|l| l.diff_id.clone()).collect();
        let doc = Document::with_media_type(request.format.config(), config.clone());
        let config_desc = self
            .store
            .put_document(&doc)
            .map_err(BuildError::store("storing the image config"))?;
        let layers = outcome
            .layers
            .iter()
            .map(|l| l.descriptor.clone())
            .collect();
        let manifest = Document::new(Manifest::new(request.format, config_desc, layers));
        let desc = self
            .store
            .put_document(&manifest)
            .map_err(BuildError::store("storing the manifest"))?
            .with_platform(platform);
        Ok((desc, config))
    }
}

/// The steps of the stages in `order` (the stages a platform's build
/// runs, in plan order), numbered in that order (so the output lists them
/// that way; `counter` numbers across platforms), each RUN with its
/// `# kiln:` settings.
fn plan_steps(
    plan: &Plan,
    order: &[usize],
    settings: &StepSettings,
    counter: &AtomicU32,
) -> HashMap<usize, Vec<Step>> {
    let mut steps = HashMap::new();
    for &i in order {
        let stage: Vec<Step> = (0..plan.stages[i].stage.commands.len())
            .map(|c| Step {
                id: Some(counter.fetch_add(1, Ordering::SeqCst)),
                settings: settings.get(i, c),
            })
            .collect();
        steps.insert(i, stage);
    }
    steps
}

/// Each stage's platform: its `FROM --platform`, else its base stage's,
/// else the build's (BuildKit's dispatch inherits a base stage's
/// platform). TARGETPLATFORM stays the build's. Every stage of the
/// Dockerfile, as `kiln stage-key` may key one the target does not need.
fn stage_platforms(plan: &Plan, platform: &Platform) -> HashMap<usize, Platform> {
    let mut platforms: HashMap<usize, Platform> = HashMap::new();
    // A base stage comes before the stages built on it.
    for (i, stage) in plan.stages.iter().enumerate() {
        let p = match (&stage.platform, &stage.base) {
            (Some(p), _) => p.clone(),
            (None, Base::Stage(b)) => platforms
                .get(b)
                .cloned()
                .unwrap_or_else(|| platform.clone()),
            (None, _) => platform.clone(),
        };
        platforms.insert(i, p);
    }
    platforms
}

/// A request read: the Dockerfile parsed and planned for each platform,
/// its `# kiln:` settings, the context.
struct Prepared {
    settings: StepSettings,
    context: BuildContext,
    memo: HashMemo,
    platforms: Vec<Platform>,
    plans: Vec<Plan>,
}

/// One platform's build: its image, its step counts, the stage images
/// it made.
struct Built {
    image: BuiltImage,
    run: u32,
    cached: u32,
    stage_pushes: Vec<StagePush>,
}

/// What every stage of a build shares.
pub(crate) struct Shared<'a> {
    pub(crate) request: &'a BuildRequest,
    /// The request's encoding: what commits write, what the result is in.
    pub(crate) encoding: Encoding,
    pub(crate) context: &'a BuildContext,
    pub(crate) memo: &'a HashMemo,
    /// Every RUN's `# kiln:` settings, read when the build started.
    pub(crate) settings: StepSettings,
    pub(crate) step_counter: &'a AtomicU32,
    pub(crate) multi: bool,
    pub(crate) secrets: Secrets,
    pub(crate) caches: CacheMounts,
    /// Temporary directories of RUN steps (on disk, outside any overlay).
    pub(crate) scratch: PathBuf,
    /// How messages name the Dockerfile (`Dockerfile` in `Dockerfile:12`).
    pub(crate) dockerfile_name: String,
    /// RUN steps that needed more than one attempt.
    pub(crate) attempts: Mutex<BTreeMap<StepId, u32>>,
    /// Base images pulled by this build, by reference and platform: stages
    /// on one base wait for one pull instead of each pulling it.
    pub(crate) pulls: Mutex<HashMap<String, PullCell>>,
    /// What `--cache-from` gave.
    pub(crate) remote: Imported,
    /// Every filesystem step's result, for `--cache-to`.
    pub(crate) records: Mutex<Vec<StepRecord>>,
}

/// One pull's outcome (the pulled descriptor, or the error).
pub(crate) type PullCell = Arc<
    std::sync::OnceLock<
        Result<kiln_image::document::Descriptor, Cause<kiln_registry::TransferError>>,
    >,
>;

/// Finished stages of one platform's build, for the stages that wait on them.
#[derive(Default)]
pub(crate) struct Board {
    /// Each finished stage's outcome; a failed one's error is in `errors`.
    done: Mutex<HashMap<usize, Option<Arc<StageOutcome>>>>,
    errors: Mutex<Vec<(usize, BuildError)>>,
    changed: Condvar,
    counts: Mutex<(u32, u32)>,
}

impl Board {
    fn finish(&self, stage: usize, outcome: Result<StageOutcome, BuildError>) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match outcome {
            Ok(o) => {
                let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                counts.0 += o.steps_run;
                counts.1 += o.steps_cached;
                Some(Arc::new(o))
            }
            Err(e) => {
                // Kept whole for the caller; the stages that wait on this
                // one fail with `StageFailed`.
                self.errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((stage, e));
                None
            }
        };
        done.insert(stage, entry);
        self.changed.notify_all();
    }

    /// Waits for `stage`; its outcome, or why there is none.
    pub(crate) fn get(&self, stage: usize) -> Result<Arc<StageOutcome>, BuildError> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(entry) = done.get(&stage) {
                return entry.clone().ok_or(BuildError::StageFailed { stage });
            }
            done = self.changed.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wait(&self, target: usize) -> Result<StageOutcome, BuildError> {
        let result = self.get(target);
        // A failed stage's own error beats "a stage it needs failed".
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if !errors.is_empty() {
            errors.sort_by_key(|(stage, _)| *stage);
            return Err(errors.remove(0).1);
        }
        result.map(|o| (*o).clone())
    }

    fn counts(&self) -> (u32, u32) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `ADD <url>` downloads go to `<store root>/<DOWNLOAD_PREFIX><pid>-<n>/`
/// (kiln-fs's [`kiln_fs::OwnedDir`]) for the length of a stage.
pub(crate) const DOWNLOAD_PREFIX: &str = "kiln-add-";

/// The Dockerfile's file name, as messages show it (`Dockerfile:12`);
/// standard input reads as `Dockerfile`.
fn dockerfile_name(path: &std::path::Path) -> String {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if name != "-" => name.to_string(),
        _ => "Dockerfile".to_string(),
    }
}

/// The first line of an instruction, for step titles.
pub(crate) fn one_line(code: &str) -> String {
    let first = code.lines().next().unwrap_or("");
    let joined: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 120 {
        format!("{}…", joined.chars().take(119).collect::<String>())
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RUN's `# kiln:` settings reach its step through the plan: read
    /// once from the text when the build starts, then carried by the step
    /// that `run_attempts` makes its policy from.
    #[test]
    fn each_planned_run_carries_its_own_kiln_settings() {
        let text = "FROM scratch AS base\n\
                    COPY a /a\n\
                    # kiln: retries=2 stall=0\n\
                    RUN x\n\
                    FROM base AS final\n\
                    # kiln: timeout=20m\n\
                    RUN y\n\
                    FROM scratch AS unused\n\
                    # kiln: retries=9\n\
                    RUN z\n";
        let ast = kiln_dockerfile::parse(text.as_bytes()).unwrap();
        let dockerfile = instructions::parse_dockerfile(&ast).unwrap();
        let settings = StepSettings::read(&dockerfile, |_| {}).unwrap();
        let options = BuildOptions {
            build_args: BTreeMap::new(),
            target: Some("final".into()),
            target_platform: Platform::host(),
            build_platform: Platform::host(),
        };
        let plan = plan::plan(&dockerfile, ast.escape, &options).unwrap();
        let steps = plan_steps(&plan, &plan.order, &settings, &AtomicU32::new(1));

        let ids = |stage: usize| steps[&stage].iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(0), [Some(1), Some(2)]);
        assert_eq!(ids(1), [Some(3)]);
        assert!(!steps.contains_key(&2), "a stage the target does not need");

        let request = BuildRequest::new("ctx".into(), "Dockerfile".into(), Vec::new());
        let policy = |step: &Step| request.step_policy().with(&step.settings);
        assert_eq!(policy(&steps[&0][0]), request.step_policy(), "COPY");
        let run_x = policy(&steps[&0][1]);
        assert_eq!(run_x.retries, 2);
        assert_eq!(run_x.limits.stall, None);
        let run_y = policy(&steps[&1][0]);
        assert_eq!(run_y.limits.timeout, Some(Duration::from_secs(1200)));
        assert_eq!(
            run_y.limits.stall,
            Some(BuildRequest::DEFAULT_STALL_TIMEOUT)
        );
        assert_eq!(run_y.retries, BuildRequest::DEFAULT_RETRIES);
    }
}
