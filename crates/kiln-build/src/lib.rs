//! kiln's build engine: a Dockerfile and a context in, an image out.
//!
//! - [`Engine::build`] runs a [`BuildRequest`]: stages in parallel, each
//!   step keyed and cached or run on a [`Snapshotter`]'s root (RUN through
//!   an executor, under the watchdog), and returns a [`BuildResult`]. The
//!   engine never prints: it reports [`Event`]s, the CLI renders them.
//!   [`Engine::stage_keys`] keys a stage without building it; with a
//!   [`StageImage`] a build takes the stage from `REPO:<that key>`, or
//!   pushes it there.
//! - Exporters: an [`Output`] asks for an [`Encoding`]; [`encode_image`]
//!   applies it (layers cached in another encoding converted once), and
//!   [`write_oci`], [`write_docker`] and [`write_local`] write the image.
//! - [`sweep_after_crash`]: what killed kiln processes left (containers,
//!   mounts, temporary dirs), cleaned up; the engine runs it at start.
//! - [`find_image`], [`select_image`] and [`container_spec`] run a stored
//!   image as a container (`kiln run`).
//! - The parts the engine is made of, usable alone: the build context
//!   ([`BuildContext`], [`HashMemo`]), COPY/ADD file operations
//!   ([`copy_sources`]), RUN steps ([`run_step`]) and snapshotters
//!   ([`OverlaySnapshotter`]); fakes of the snapshotter and executor for
//!   tests behind the `testing` feature (`kiln_build::testing`).

mod container;
mod context;
mod emulation;
mod engine;
mod events;
mod export;
mod ops;
mod remote_cache;
mod run;
mod snapshot;
mod stop;
#[cfg(feature = "testing")]
pub mod testing;
mod watchdog;

pub use crate::container::{
    ContainerError, ContainerOptions, RunnableImage, StartFailure, container_command,
    container_environment, container_id, container_spec, find_image, image_layers, select_image,
};
pub use crate::context::{
    BuildContext, CONTEXT_DIGEST_VERSION, ContextEntry, ContextError, CopyFilter, EntryKind,
    HashMemo, Selection,
};
pub use crate::engine::{
    BuildError, BuildNetwork, BuildRequest, BuildResult, BuiltImage, Cause, Engine, LayersAhead,
    SOURCE_DATE_EPOCH, SecretSource, SecretSpec, StageImage, sweep_after_crash,
};
pub use crate::events::{Event, EventSink, Hang, StepId, Stream};
pub use crate::export::{
    Dest, Encoding, ExportError, OciTarAhead, Output, OutputKind, encode_image,
    record_layer_encoding, stored_images, write_docker, write_local, write_oci,
};
pub use crate::ops::{
    Chmod, CopyError, CopyOptions, CopyStats, Fetcher, FilterDecision, Owner, SourceItem,
    copy_sources, expand_source, resolve_chown,
};
pub use crate::remote_cache::{
    CACHE_MEDIA_TYPE, CACHE_MOUNTS_MEDIA_TYPE, CacheConfig, CacheEntry, CacheError, CacheFrom,
    CacheLocation, CacheMode, CacheMount, CacheMountsConfig, CacheTo, DEFAULT_CACHE_TTL,
    DEFAULT_MOUNTS_MAX_SIZE,
};
pub use crate::run::{
    CacheMounts, ContentRef, DirSources, MountSources, RunError, RunStep, Secrets, cache_key_parts,
    run_step, sweep_scratch,
};
pub use crate::snapshot::{
    ActiveSnapshot, CommitOptions, Committed, Layer, OverlaySnapshotter, PendingCommit,
    ReadOnlyMount, Sealed, Snapshot, SnapshotError, Snapshotter, TreeSnapshotter, UnpackEvent,
    WrittenLayer, chain_id,
};
pub use crate::watchdog::TAIL_LINES;
