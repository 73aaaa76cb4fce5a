//! The engine end to end: Dockerfiles in, images in the store out, checked
//! through the store and the image config, and rebuilt from the cache.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_build::engine::{BuildRequest, BuildResult, Engine};
use kiln_build::events::Event;
use kiln_image::Store;
use kiln_image::document::{ImageConfig, Manifest};
use kiln_registry::{ClientOptions, RegistryClient};
use kiln_sandbox::RuncExecutor;
use kiln_testkit::need::{Runc, need};

struct Harness {
    root: tempfile::TempDir,
    store: Store,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    /// `None` (the test skips) where steps cannot run: they need root
    /// and runc.
    fn new() -> Option<Harness> {
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
        })
    }

    fn build(
        &self,
        context: &Path,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
    ) -> (
        Result<BuildResult, kiln_build::engine::BuildError>,
        Vec<Event>,
    ) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = Arc::clone(&events);
        let sink = Arc::new(move |e: Event| sink_events.lock().unwrap().push(e));
        let executor = Arc::new(RuncExecutor::new(self.root.path().join("runc")));
        let client = RegistryClient::new(ClientOptions::default());
        let engine = Engine::new(
            self.store.clone(),
            client,
            self.runtime.handle().clone(),
            executor,
            sink,
        )
        .unwrap();
        let mut request = BuildRequest::new(
            context.to_path_buf(),
            context.join("Dockerfile"),
            dockerfile.as_bytes().to_vec(),
        );
        tweak(&mut request);
        let result = engine.build(&request);
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    fn config(&self, result: &BuildResult) -> ImageConfig {
        let manifest = self
            .store
            .read_document::<Manifest>(&result.images[0].manifest)
            .unwrap();
        self.store
            .read_document::<ImageConfig>(&manifest.value().config)
            .unwrap()
            .into_value()
    }

    fn layer_count(&self, result: &BuildResult) -> usize {
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
fn busybox_image(store: &Store) -> String {
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
fn flatten(store: &Store, result: &BuildResult) -> tempfile::TempDir {
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
            &kiln_image::layer::ExtractOptions::new(kiln_image::layer::WhiteoutMode::Apply),
        )
        .unwrap();
    }
    out
}

fn logs(events: &[Event]) -> String {
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

fn cached_steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::StepCached { .. }))
        .count()
}

fn started_steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count()
}

#[test]
fn copy_workdir_and_metadata_from_scratch_then_cached() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    fs_err::create_dir_all(ctx.path().join("src")).unwrap();
    fs_err::write(ctx.path().join("src/main.c"), "int main(){}\n").unwrap();
    fs_err::write(ctx.path().join("ignored.log"), "noise\n").unwrap();
    fs_err::write(ctx.path().join(".dockerignore"), "*.log\n").unwrap();
    let dockerfile = "FROM scratch\nENV APP=/app\nWORKDIR $APP\nCOPY a.txt .\nCOPY src/ src/\nCOPY *.log /logs/\nLABEL a=b\nEXPOSE 8080\nCMD [\"/app/run\"]\n";
    let (result, events) = h.build(ctx.path(), dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let config = h.config(&result);
    let c = config.config.as_ref().unwrap();
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.cmd.as_deref(), Some(&["/app/run".to_string()][..]));
    assert_eq!(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.starts_with("APP="))
            .map(String::as_str),
        Some("APP=/app")
    );
    assert!(c.exposed_ports.as_ref().unwrap().contains_key("8080/tcp"));
    assert_eq!(
        c.labels.as_ref().unwrap().get("a").map(String::as_str),
        Some("b")
    );
    // WORKDIR, COPY a.txt, COPY src/: three layers; the ignored *.log copies nothing.
    assert_eq!(h.layer_count(&result), 3, "{events:#?}");
    assert_eq!(config.history.iter().filter(|h| !h.empty_layer).count(), 3);
    assert_eq!(started_steps(&events), 4);

    // Nothing changed: every filesystem step comes from the cache.
    let (again, events) = h.build(ctx.path(), dockerfile, |_| {});
    let again = again.unwrap();
    assert_eq!(started_steps(&events), 0, "{events:#?}");
    assert_eq!(cached_steps(&events), 4);
    assert_eq!(h.layer_count(&again), 3);
    assert_eq!(h.config(&again).rootfs.diff_ids, config.rootfs.diff_ids);

    // One file changed: its step and the ones after it run again.
    fs_err::write(ctx.path().join("src/main.c"), "int main(){return 1;}\n").unwrap();
    let (third, events) = h.build(ctx.path(), dockerfile, |_| {});
    third.unwrap();
    assert_eq!(
        started_steps(&events),
        2,
        "COPY src/ and COPY *.log rerun:\n{events:#?}"
    );
    assert_eq!(cached_steps(&events), 2);
}

#[test]
fn multi_stage_copy_from_and_target() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("x"), "x\n").unwrap();
    let dockerfile = "FROM scratch AS one\nCOPY x /one/x\n\nFROM scratch AS two\nCOPY x /two/x\n\nFROM scratch\nCOPY --from=one /one /from-one\nCOPY --from=1 /two/x /from-two\n";
    let (result, events) = h.build(ctx.path(), dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert_eq!(h.layer_count(&result), 2);
    let (only_one, _) = h.build(ctx.path(), dockerfile, |r| r.target = Some("one".into()));
    assert_eq!(h.layer_count(&only_one.unwrap()), 1);
}

#[test]
fn a_step_reading_another_stage_is_not_timed_while_it_waits_for_it() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {base} AS slow\nRUN sleep 4 && echo made > /made\n\n\
         FROM {base}\nRUN --mount=from=slow,target=/slow cat /slow/made > /seen\n\
         COPY --from=slow /made /copied\n"
    );
    let (result, events) = h.build(ctx.path(), &dockerfile, |_| {});
    result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let step = |text: &str| {
        events
            .iter()
            .find_map(|e| match e {
                Event::StepPlanned { step, text: t, .. } if t.contains(text) => Some(*step),
                _ => None,
            })
            .unwrap()
    };
    let duration = |wanted: u32| {
        events
            .iter()
            .find_map(|e| match e {
                Event::StepDone {
                    step, duration_ms, ..
                } if *step == wanted => Some(*duration_ms),
                _ => None,
            })
            .unwrap()
    };
    assert!(duration(step("sleep 4")) >= 4000);
    // Both readers started with the build and waited about 4 s for the
    // slow stage; their times are their own work only (a margin for a
    // loaded machine: a cat and a one-file copy, not a speed check).
    for reader in [step("cat /slow"), step("COPY --from")] {
        assert!(duration(reader) < 4000, "step {reader}: {events:#?}");
    }
}

#[test]
fn errors_name_the_line() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    let (result, _) = h.build(ctx.path(), "FROM scratch\n\nCOPY missing.txt /\n", |_| {});
    let err = result.unwrap_err();
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn run_steps_users_heredocs_cache_mounts_and_caching() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("in.txt"), "input\n").unwrap();
    let dockerfile = format!(
        "FROM {base}\nARG GREETING=hi\nCOPY in.txt /work/\nWORKDIR /work\nRUN echo \"$GREETING from $(pwd)\" > out.txt && cat in.txt >> out.txt\n\
         RUN --mount=type=cache,target=/cache echo run >> /cache/count && wc -l < /cache/count > /work/seen\n\
         RUN <<EOF\nset -e\necho heredoc > /work/heredoc\nrm /work/in.txt\nEOF\nUSER app\nRUN id -u > /tmp/uid\nRUN echo to stdout && echo to stderr >&2\n"
    );
    let (result, events) = h.build(ctx.path(), &dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let fs = flatten(&h.store, &result);
    let read = |p: &str| fs_err::read_to_string(fs.path().join(p)).unwrap();
    assert_eq!(read("work/out.txt"), "hi from /work\ninput\n");
    assert_eq!(read("work/seen").trim(), "1");
    assert_eq!(read("work/heredoc"), "heredoc\n");
    assert!(
        !fs.path().join("work/in.txt").exists(),
        "deleted by a later step (a whiteout)"
    );
    assert!(
        !fs.path().join("cache").join("count").exists(),
        "cache mounts never land in a layer"
    );
    assert_eq!(read("tmp/uid").trim(), "1000");
    let log = logs(&events);
    assert!(
        log.contains("to stdout") && log.contains("to stderr"),
        "{log}"
    );

    // Rebuild with a different build arg: the first RUN and everything after it reruns;
    // the cache mount has kept its contents.
    let (again, events) = h.build(ctx.path(), &dockerfile, |r| {
        r.build_args.insert("GREETING".into(), "hello".into());
    });
    let again = again.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let fs = flatten(&h.store, &again);
    assert_eq!(
        fs_err::read_to_string(fs.path().join("work/out.txt")).unwrap(),
        "hello from /work\ninput\n"
    );
    assert_eq!(
        fs_err::read_to_string(fs.path().join("work/seen"))
            .unwrap()
            .trim(),
        "2"
    );
    assert_eq!(
        cached_steps(&events),
        2,
        "COPY and WORKDIR come from the cache"
    );
}

#[test]
fn a_failing_run_names_its_line_and_leaves_nothing_mounted() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let (result, events) = h.build(
        ctx.path(),
        &format!("FROM {base}\nRUN echo fine\nRUN echo about to fail; exit 3\n"),
        |_| {},
    );
    let err = result.unwrap_err();
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    assert!(
        err.to_string()
            .contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::StepFailed { .. })));
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(h.root.path().to_str().unwrap()),
        "no mount of this build remains:\n{mounts}"
    );
}

#[test]
fn the_same_inputs_give_the_same_image_with_source_date_epoch() {
    // Two builds at different times without the cache, one context: with
    // SOURCE_DATE_EPOCH every layer and the image itself are identical,
    // RUN layers (files made at run time) included.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    let dockerfile = "FROM scratch AS files\nCOPY a.txt /a.txt\n\
                      FROM IMAGE\nCOPY --from=files /a.txt /app/\n\
                      RUN mkdir -p /out && echo made > /out/made.txt && touch /out/stamp\n\
                      CMD [\"/bin/sh\"]\n";
    let mut digests = Vec::new();
    for round in 0..2 {
        if round == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let dockerfile = dockerfile.replace("IMAGE", &base);
        let (result, events) = h.build(ctx.path(), &dockerfile, |r| {
            r.epoch = Some(1_700_000_000);
            r.no_cache = true;
        });
        assert_eq!(cached_steps(&events), 0);
        let result = result.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
        let config = h.config(&result);
        assert_eq!(
            config
                .created
                .as_deref()
                .map(|c| c.starts_with("2023-11-14T22:13:20")),
            Some(true),
            "{:?}",
            config.created
        );
        digests.push((result.target.digest.clone(), config.rootfs.diff_ids.clone()));
    }
    assert_eq!(digests[0].1, digests[1].1, "layers differ");
    assert_eq!(digests[0].0, digests[1].0, "the images differ");
}
