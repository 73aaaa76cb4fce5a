//! The engine harness shared by the end-to-end build tests: a store of its
//! own per harness (one per simulated machine), builds through runc, and
//! helpers to read what came out.

#![allow(dead_code)] // each test crate uses its own part

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_build::Event;
use kiln_build::{BuildError, BuildRequest, BuildResult, Engine};
use kiln_image::document::{ImageConfig, Manifest};
use kiln_image::{Digest, Platform, Store};
use kiln_registry::{ClientOptions, RegistryClient};
use kiln_sandbox::RuncExecutor;
use kiln_testkit::need::{Runc, need};

pub(crate) struct Harness {
    pub(crate) root: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) client: RegistryClient,
}

impl Harness {
    /// `None` (the test skips) where steps cannot run: they need root
    /// and runc.
    pub(crate) fn new() -> Option<Harness> {
        need(Runc)?;
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("store")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Harness {
            root,
            store,
            runtime,
            client: RegistryClient::new(ClientOptions::default()),
        })
    }

    /// The same, with the busybox base in its store: a machine whose
    /// builds start from the same image as every other such machine's (a
    /// base is pulled by digest, so their cache keys agree).
    pub(crate) fn with_busybox() -> Option<Harness> {
        let h = Harness::new()?;
        busybox_image(&h.store);
        Some(h)
    }

    /// The same, its registry client made with `options`.
    pub(crate) fn with_client(options: ClientOptions) -> Option<Harness> {
        let mut h = Harness::new()?;
        h.client = RegistryClient::new(options);
        Some(h)
    }

    pub(crate) fn build(
        &self,
        context: &Path,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
    ) -> (Result<BuildResult, BuildError>, Vec<Event>) {
        self.build_on(context, dockerfile, tweak, |_| {})
    }

    /// [`Harness::build`] on an engine `on_engine` sets up
    /// (`background_commits`, a cancel).
    pub(crate) fn build_on(
        &self,
        context: &Path,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
        on_engine: impl FnOnce(&mut Engine),
    ) -> (Result<BuildResult, BuildError>, Vec<Event>) {
        self.with_engine(context, dockerfile, tweak, on_engine, |engine, request| {
            engine.build(request)
        })
    }

    /// `kiln stage-key`: the key of `stage` for each platform.
    pub(crate) fn stage_keys(
        &self,
        context: &Path,
        dockerfile: &str,
        stage: &str,
        tweak: impl FnOnce(&mut BuildRequest),
    ) -> Result<Vec<(Platform, Digest)>, BuildError> {
        self.with_engine(
            context,
            dockerfile,
            tweak,
            |_| {},
            |engine, request| engine.stage_keys(request, stage),
        )
        .0
    }

    /// `work` done on an engine of this machine, for the request `tweak`
    /// makes; the events it reported.
    fn with_engine<T>(
        &self,
        context: &Path,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
        on_engine: impl FnOnce(&mut Engine),
        work: impl FnOnce(&Engine, &BuildRequest) -> T,
    ) -> (T, Vec<Event>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = Arc::clone(&events);
        let sink = Arc::new(move |e: Event| sink_events.lock().unwrap().push(e));
        let executor = Arc::new(RuncExecutor::new(self.root.path().join("runc")));
        let mut engine = Engine::new(
            self.store.clone(),
            self.client.clone(),
            self.runtime.handle().clone(),
            executor,
            sink,
        )
        .unwrap();
        on_engine(&mut engine);
        let mut request = BuildRequest::new(
            context.to_path_buf(),
            context.join("Dockerfile"),
            dockerfile.as_bytes().to_vec(),
        );
        tweak(&mut request);
        let result = work(&engine, &request);
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    pub(crate) fn config(&self, result: &BuildResult) -> ImageConfig {
        let manifest = self
            .store
            .read_document::<Manifest>(&result.images[0].manifest)
            .unwrap();
        self.store
            .read_document::<ImageConfig>(&manifest.value().config)
            .unwrap()
            .into_value()
    }

    pub(crate) fn layer_count(&self, result: &BuildResult) -> usize {
        self.store
            .read_document::<Manifest>(&result.images[0].manifest)
            .unwrap()
            .value()
            .layers
            .len()
    }
}

/// A busybox image (static busybox with every applet, /etc/passwd with
/// root and app:1000, /tmp) tagged `kiln.test/busybox:1` in the store.
pub(crate) fn busybox_image(store: &Store) -> String {
    use kiln_testkit::busybox::{BUSYBOX_TAG, User, image};
    image(
        store,
        BUSYBOX_TAG,
        &[User {
            name: "app",
            uid: 1000,
        }],
    )
}

/// The files of the built image, flattened, in a temp dir.
pub(crate) fn flatten(store: &Store, result: &BuildResult) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let manifest = store
        .read_document::<Manifest>(&result.images[0].manifest)
        .unwrap();
    for layer in &manifest.value().layers {
        let c = kiln_image::media::Compression::from_media_type(&layer.media_type).unwrap();
        let tar =
            kiln_image::compress::decompress(store.open_blob(&layer.digest).unwrap(), c).unwrap();
        kiln_image::layer::extract(
            tar,
            out.path(),
            &kiln_image::layer::ExtractOptions::new(kiln_image::layer::Whiteouts::Apply),
        )
        .unwrap();
    }
    out
}

pub(crate) fn logs(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| {
            if let Event::StepLog { line, .. } = e {
                Some(line.as_str())
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn cached_steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::StepCached { .. }))
        .count()
}

pub(crate) fn started_steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count()
}

pub(crate) fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}
