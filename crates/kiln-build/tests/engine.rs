//! The engine's decisions on fakes: which stages run when, what comes from
//! the cache, how a failing RUN is retried, and how the watchdog ends a
//! hung or endless one. The snapshotter is the FakeSnapshotter (plain
//! directories, real layers and chain IDs), the executor a FakeExecutor
//! (scripted RUN steps, no process), so these run as any user, with no
//! runc, no mounts and no network, in milliseconds. tests/build.rs and
//! tests/watchdog.rs run the real thing as root.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_build::testing::{FakeExecutor, FakeSnapshotter, Script};
use kiln_build::{BuildError, BuildRequest, BuildResult, Engine};
use kiln_build::{Event, EventSink, StepId};
use kiln_image::document::{ImageConfig, Manifest};
use kiln_image::media::Compression;
use kiln_image::{Digest, Store};
use kiln_registry::{ClientOptions, RegistryClient};

// ---- support ---------------------------------------------------------------

struct Harness {
    tmp: tempfile::TempDir,
    store: Store,
    snapshotter: Arc<FakeSnapshotter>,
    executor: Arc<FakeExecutor>,
    runtime: tokio::runtime::Runtime,
}

/// A build's outcome and everything it reported, in order.
struct Built {
    result: Result<BuildResult, BuildError>,
    events: Vec<Event>,
    took: Duration,
}

impl Harness {
    fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let snapshotter =
            Arc::new(FakeSnapshotter::new(&store, &tmp.path().join("snapshots")).unwrap());
        fs_err::create_dir_all(tmp.path().join("context")).unwrap();
        // Only pulls and downloads would use it; these builds make none.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Harness {
            tmp,
            store,
            snapshotter,
            executor: Arc::new(FakeExecutor::new()),
            runtime,
        }
    }

    fn context(&self) -> PathBuf {
        self.tmp.path().join("context")
    }

    /// Writes a file of the build context.
    fn file(&self, name: &str, text: &str) {
        fs_err::write(self.context().join(name), text).unwrap();
    }

    /// Builds `dockerfile` (watchdog sampling every 10 ms, retries 10 ms
    /// apart), with `tweak` applied to the request.
    fn build(&self, dockerfile: &str, tweak: impl FnOnce(&mut BuildRequest)) -> Built {
        self.build_with(dockerfile, tweak, Arc::new(|_| {}))
    }

    /// [`Harness::build`], also telling `watch` each event as it happens
    /// (on the thread of the stage that emits it).
    fn build_with(
        &self,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
        watch: EventSink,
    ) -> Built {
        self.build_on_engine(dockerfile, tweak, watch, |_| {})
    }

    /// [`Harness::build_with`], with `on_engine` given the engine before
    /// the build starts.
    fn build_on_engine(
        &self,
        dockerfile: &str,
        tweak: impl FnOnce(&mut BuildRequest),
        watch: EventSink,
        on_engine: impl FnOnce(&mut Engine),
    ) -> Built {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink: EventSink = {
            let events = events.clone();
            Arc::new(move |e: Event| {
                watch(e.clone());
                events.lock().unwrap().push(e);
            })
        };
        let mut engine = Engine::with_snapshotter(
            self.store.clone(),
            self.snapshotter.clone(),
            RegistryClient::new(ClientOptions::default()),
            self.runtime.handle().clone(),
            self.executor.clone(),
            sink,
        )
        .unwrap();
        engine.sample_every = Duration::from_millis(10);
        on_engine(&mut engine);
        let mut request = BuildRequest::new(
            self.context(),
            self.context().join("Dockerfile"),
            dockerfile.as_bytes().to_vec(),
        );
        request.retry_backoff = Duration::from_millis(10);
        tweak(&mut request);
        let started = Instant::now();
        let result = engine.build(&request);
        let took = started.elapsed();
        let events = events.lock().unwrap().clone();
        assert_eq!(
            self.snapshotter.leftovers(),
            Vec::<PathBuf>::new(),
            "every step root and view is gone"
        );
        Built {
            result,
            events,
            took,
        }
    }

    /// The layers' diffIDs of a built image.
    fn diff_ids(&self, result: &BuildResult) -> Vec<Digest> {
        self.config(result).rootfs.diff_ids
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

    /// The files of a built image, its layers applied in order, as
    /// `path → contents` (directories left out).
    fn files(&self, result: &BuildResult) -> HashMap<String, String> {
        let out = tempfile::tempdir().unwrap();
        let manifest = self
            .store
            .read_document::<Manifest>(&result.images[0].manifest)
            .unwrap();
        for layer in &manifest.value().layers {
            let c = Compression::from_media_type(&layer.media_type).unwrap();
            let tar =
                kiln_image::compress::decompress(self.store.open_blob(&layer.digest).unwrap(), c)
                    .unwrap();
            kiln_image::layer::extract(
                tar,
                out.path(),
                &kiln_image::layer::ExtractOptions::new(kiln_image::layer::Whiteouts::Apply),
            )
            .unwrap();
        }
        let mut files = HashMap::new();
        let mut dirs = vec![out.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs_err::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(out.path()).unwrap();
                    let text = fs_err::read_to_string(&path).unwrap();
                    files.insert(rel.to_string_lossy().into_owned(), text);
                }
            }
        }
        files
    }

    /// A one-layer base image (`/etc/os-release`) for the host's platform,
    /// tagged `name` in the store; no registry involved.
    fn base_image(&self, name: &str) -> String {
        let tree = self.tmp.path().join("base-tree");
        fs_err::create_dir_all(tree.join("etc")).unwrap();
        fs_err::write(tree.join("etc/os-release"), "ID=fake\n").unwrap();
        kiln_testkit::busybox::image_of_tree(&self.store, name, &tree)
    }
}

/// `uid:gid` of this process, for `COPY --chown`: a copy from the context
/// gives files root's owner unless told otherwise, which only root may;
/// any user may give its own files to itself.
fn me() -> String {
    format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

impl Built {
    fn ok(&self) -> &BuildResult {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("{}\n{:#?}", e.message(), self.events),
        }
    }

    fn err(&self) -> &BuildError {
        match &self.result {
            Ok(_) => panic!("the build succeeded:\n{:#?}", self.events),
            Err(e) => e,
        }
    }

    /// The step whose title contains `text`.
    fn step(&self, text: &str) -> StepId {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::StepPlanned { step, text: t, .. } if t.contains(text) => Some(*step),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no step {text:?}"))
    }

    /// Where in the event list the first event `f` picks is.
    fn position(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no such event in {:#?}", self.events))
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    fn started(&self) -> usize {
        self.count(|e| matches!(e, Event::StepStarted { .. }))
    }

    fn cached(&self) -> usize {
        self.count(|e| matches!(e, Event::StepCached { .. }))
    }
}

/// Lets `n` threads meet: each [`arrive`](Meeting::arrive)s and waits for
/// the others, up to a bound.
struct Meeting {
    arrived: Mutex<usize>,
    all_here: Condvar,
    n: usize,
}

impl Meeting {
    fn new(n: usize) -> Meeting {
        Meeting {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            n,
        }
    }

    /// True if everyone arrived within 5 s.
    fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, Duration::from_secs(5), |a| *a < self.n)
            .unwrap();
        *arrived >= self.n
    }
}

// ---- the scheduler ---------------------------------------------------------

/// Two stages that read nothing of each other run at once: each one's RUN
/// waits, as it starts, for the other's to start too, which a build that
/// ran them one after the other would never get to. The last stage's
/// COPY --from waits for the stage it reads and sees its files.
#[test]
fn independent_stages_run_at_once_and_a_reader_waits_for_its_source() {
    let h = Harness::new();
    h.executor
        .script("make-a", [Script::success().write("/out/a", "made by a")])
        .script("make-b", [Script::success().write("/out/b", "made by b")]);
    let dockerfile = "FROM scratch AS a\nRUN make-a\n\n\
                      FROM scratch AS b\nRUN make-b\n\n\
                      FROM scratch\nCOPY --from=a /out/a /a\nCOPY --from=b /out/b /b\n";

    let titles: Arc<Mutex<HashMap<StepId, String>>> = Arc::default();
    let meeting = Arc::new(Meeting::new(2));
    let met = Arc::new(Mutex::new(Vec::new()));
    let watch: EventSink = {
        let (titles, meeting, met) = (titles.clone(), meeting.clone(), met.clone());
        Arc::new(move |e: Event| match e {
            Event::StepPlanned { step, text, .. } => {
                titles.lock().unwrap().insert(step, text);
            }
            Event::StepStarted { step } => {
                let title = titles.lock().unwrap()[&step].clone();
                if title.contains("RUN make-") {
                    let ok = meeting.arrive();
                    met.lock().unwrap().push(ok);
                }
            }
            _ => {}
        })
    };
    let built = h.build_with(dockerfile, |_| {}, watch);
    let result = built.ok();
    assert_eq!(*met.lock().unwrap(), [true, true], "both RUNs ran at once");

    let files = h.files(result);
    assert_eq!(files["a"], "made by a");
    assert_eq!(files["b"], "made by b");
    // The reader's step started only once its source stage was done.
    let make_a = built.step("RUN make-a");
    let copy_a = built.step("COPY --from=a");
    let a_done = built.position(|e| matches!(e, Event::StepDone { step, .. } if *step == make_a));
    let copy_started =
        built.position(|e| matches!(e, Event::StepStarted { step } if *step == copy_a));
    assert!(a_done < copy_started, "{:#?}", built.events);
    assert!(built.took < Duration::from_secs(2), "{:?}", built.took);
}

/// `--target` builds the stages the target needs and no other.
#[test]
fn only_the_stages_the_target_needs_are_built() {
    let h = Harness::new();
    h.executor
        .script("make-a", [Script::success().write("/a", "a")])
        .script("make-b", [Script::success().write("/b", "b")]);
    let dockerfile = "FROM scratch AS a\nRUN make-a\n\n\
                      FROM scratch AS b\nRUN make-b\n\n\
                      FROM a AS c\nRUN make-a\n";
    let built = h.build(dockerfile, |r| r.target = Some("c".into()));
    built.ok();
    assert_eq!(h.executor.count("make-a"), 2);
    assert_eq!(h.executor.count("make-b"), 0, "stage b is not needed");
}

// ---- the cache -------------------------------------------------------------

/// The same Dockerfile and context again: every filesystem step is a cache
/// hit, nothing runs, and (with SOURCE_DATE_EPOCH) the image is the same.
#[test]
fn a_second_build_is_all_cache_hits() {
    let h = Harness::new();
    h.file("app.txt", "app v1\n");
    h.executor.script(
        "make",
        [Script::success()
            .write("/app/bin", "binary")
            .stdout("compiled")],
    );
    let dockerfile = format!(
        "FROM scratch\nCOPY --chown={me} app.txt /app/\nRUN make\nENV MODE=prod\nWORKDIR /app\n",
        me = me()
    );
    // SOURCE_DATE_EPOCH fixes the image's times, so two builds are one image.
    let epoch = |r: &mut BuildRequest| {
        r.build_args
            .insert("SOURCE_DATE_EPOCH".into(), "1700000000".into());
    };
    let first = h.build(&dockerfile, epoch);
    let first_result = first.ok();
    assert_eq!(
        (first_result.steps_run, first_result.steps_cached),
        (3, 0),
        "COPY, RUN and WORKDIR ran; ENV is config"
    );
    assert!(
        first
            .events
            .iter()
            .any(|e| matches!(e, Event::StepLog { line, .. } if line == "compiled"))
    );
    let files = h.files(first_result);
    assert_eq!(files["app/app.txt"], "app v1\n");
    assert_eq!(files["app/bin"], "binary");

    let second = h.build(&dockerfile, epoch);
    let second_result = second.ok();
    assert_eq!(
        (second_result.steps_run, second_result.steps_cached),
        (0, 3)
    );
    assert_eq!((second.started(), second.cached()), (0, 3));
    assert_eq!(h.executor.count("make"), 1, "the RUN ran once");
    assert_eq!(second_result.target, first_result.target, "the same image");
}

/// A base image's layers are unpacked only when a step needs their files:
/// once in the first build, never in a build that is all cache hits.
#[test]
fn a_cached_build_unpacks_no_base_layer() {
    let h = Harness::new();
    let base = h.base_image("kiln.test/base:1");
    h.executor.script(
        "configure",
        [Script::success().write("/etc/app.conf", "on")],
    );
    let dockerfile = format!("FROM {base}\nRUN configure\n");
    let first = h.build(&dockerfile, |_| {});
    let files = h.files(first.ok());
    assert_eq!(files["etc/os-release"], "ID=fake\n");
    assert_eq!(files["etc/app.conf"], "on");
    assert_eq!(h.snapshotter.unpacked().len(), 1, "the base layer, once");

    let second = h.build(&dockerfile, |_| {});
    assert_eq!(second.ok().steps_cached, 1);
    assert_eq!(h.snapshotter.unpacked().len(), 1, "nothing more unpacked");
}

/// A stage on an image says which image, of which platform, with which
/// layers, before its steps run; a stage on scratch or a stage does not.
#[test]
fn a_stage_on_an_image_announces_its_base() {
    let h = Harness::new();
    let base = h.base_image("kiln.test/base:2");
    h.executor.script("configure", [Script::success()]);
    let dockerfile = format!(
        "FROM {base} AS a\nRUN configure\nFROM a\nENV X=1\nFROM scratch\nCOPY --from=a /etc/os-release /\n"
    );
    let built = h.build(&dockerfile, |_| {});
    built.ok();
    let bases: Vec<&Event> = built
        .events
        .iter()
        .filter(|e| matches!(e, Event::StageBase { .. }))
        .collect();
    assert_eq!(bases.len(), 1, "{bases:?}");
    let Event::StageBase {
        stage,
        line,
        image,
        manifest,
        expected_platform,
        image_platform,
        layers,
        ..
    } = bases[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (stage.as_str(), *line, image.as_str()),
        ("a", 1, base.as_str())
    );
    assert!(manifest.starts_with("sha256:"), "{manifest}");
    assert_eq!(expected_platform, image_platform);
    assert_eq!(layers.len(), 1);
    assert!(layers[0].starts_with("sha256:"));
    let configure = built.step("RUN configure");
    let announced = built
        .events
        .iter()
        .position(|e| matches!(e, Event::StageBase { .. }));
    let started = built
        .events
        .iter()
        .position(|e| matches!(e, Event::StepStarted { step } if *step == configure));
    assert!(
        announced < started,
        "the base comes before the stage's steps"
    );
}

/// A changed COPY source changes that step's key and, through the parent
/// key, the key of every step after it: those run again, the ones before
/// come from the cache, and their layers are the same.
#[test]
fn a_changed_copy_source_reruns_that_step_and_the_ones_after() {
    let h = Harness::new();
    h.file("a.txt", "a\n");
    h.file("b.txt", "b v1\n");
    h.executor
        .script("step-one", [Script::success().write("/one", "1")])
        .script("step-two", [Script::success().write("/two", "2")]);
    let dockerfile = format!(
        "FROM scratch\nCOPY --chown={me} a.txt /\nRUN step-one\n\
         COPY --chown={me} b.txt /\nRUN step-two\n",
        me = me()
    );
    let first = h.build(&dockerfile, |_| {});
    let before = h.diff_ids(first.ok());
    assert_eq!(before.len(), 4);

    h.file("b.txt", "b v2\n");
    let second = h.build(&dockerfile, |_| {});
    let result = second.ok();
    assert_eq!((result.steps_run, result.steps_cached), (2, 2));
    assert_eq!(h.executor.count("step-one"), 1, "before the change: cached");
    assert_eq!(h.executor.count("step-two"), 2, "after it: run again");
    let after = h.diff_ids(result);
    assert_eq!(after[..2], before[..2], "the cached layers are reused");
    assert_ne!(after[2], before[2], "COPY b.txt made a new layer");
    assert_eq!(h.files(result)["b.txt"], "b v2\n");
    // The cache key of COPY a.txt did not change: the cached step is the
    // same one in both builds.
    let cached = second.step("COPY --chown");
    assert!(
        second
            .events
            .iter()
            .any(|e| matches!(e, Event::StepCached { step, .. } if *step == cached))
    );
}

/// `--no-cache` runs every step, and still records what they made: the
/// build after it is all cache hits again.
#[test]
fn no_cache_runs_every_step_and_still_records_them() {
    let h = Harness::new();
    h.file("app.txt", "app\n");
    h.executor
        .script("make", [Script::success().write("/bin/app", "app")]);
    let dockerfile = format!(
        "FROM scratch\nCOPY --chown={me} app.txt /\nRUN make\n",
        me = me()
    );
    h.build(&dockerfile, |_| {}).ok();
    let uncached = h.build(&dockerfile, |r| r.no_cache = true);
    assert_eq!(uncached.ok().steps_run, 2);
    assert_eq!(uncached.cached(), 0);
    assert_eq!(h.executor.count("make"), 2);
    let again = h.build(&dockerfile, |_| {});
    assert_eq!(again.ok().steps_cached, 2);
    assert_eq!(h.executor.count("make"), 2);
}

// ---- retries ---------------------------------------------------------------

/// A RUN that fails once is run again, after the backoff, on a fresh root
/// of its clean parents: what the failed attempt wrote is not in the image.
#[test]
fn a_failing_run_is_retried_from_a_clean_root() {
    let h = Harness::new();
    h.executor.script(
        "flaky",
        [
            Script::exit(1)
                .write("/half-done", "x")
                .stderr("network glitch"),
            Script::success().write("/done", "ok"),
        ],
    );
    let built = h.build("FROM scratch\nRUN flaky\n", |r| r.retries = 1);
    let result = built.ok();
    let step = built.step("RUN flaky");
    assert_eq!(result.attempts.get(&step), Some(&2));
    let retry = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepRetry {
                attempt,
                max,
                reason,
                ..
            } => Some((*attempt, *max, reason.clone())),
            _ => None,
        })
        .expect("a StepRetry event");
    assert_eq!((retry.0, retry.1), (2, 2));
    assert!(retry.2.contains("exit code: 1"), "{}", retry.2);
    let files = h.files(result);
    assert_eq!(files.get("done").map(String::as_str), Some("ok"));
    assert!(!files.contains_key("half-done"), "{files:?}");
}

/// A RUN that fails every time fails the build after its last attempt,
/// saying how many it had; nothing of it is left behind.
#[test]
fn a_run_failing_every_attempt_fails_after_its_retries() {
    let h = Harness::new();
    h.executor.script("broken", [Script::exit(3)]);
    let built = h.build("FROM scratch\n\nRUN broken\n", |r| r.retries = 2);
    let err = built.err();
    assert!(
        matches!(err, BuildError::Run { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.location().map(|l| l.start_line), Some(3));
    let message = err.message();
    assert!(message.contains("exit code: 3"), "{message}");
    assert!(message.ends_with("(after 3 attempts)"), "{message}");
    assert_eq!(h.executor.count("broken"), 3);
    assert_eq!(built.count(|e| matches!(e, Event::StepRetry { .. })), 2);
}

/// What a build's report reads from the events: the stages each stage
/// waits for, each step's key and layer, a failed RUN's exit code.
#[test]
fn the_events_say_what_a_report_needs() {
    let h = Harness::new();
    h.executor
        .script("make", [Script::success().write("/out/a", "a")])
        .script("broken", [Script::exit(7)]);
    let dockerfile =
        "FROM scratch AS a\nRUN make\n\nFROM scratch\nCOPY --from=a /out/a /a\nRUN broken\n";
    let built = h.build(dockerfile, |_| {});
    built.err();
    let needs: Vec<(String, Vec<String>)> = built
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StagePlanned { stage, needs, .. } => Some((stage.clone(), needs.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        needs,
        [
            ("a".to_string(), vec![]),
            ("stage-1".to_string(), vec!["a".to_string()])
        ]
    );
    let make = built.step("RUN make");
    let key = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepKeyed { step, key } if *step == make => Some(key.clone()),
            _ => None,
        })
        .expect("the RUN's key");
    assert!(key.starts_with("sha256:"), "{key}");
    let (digest, size) = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepDone {
                step,
                layer_digest,
                layer_size,
                ..
            } if *step == make => Some((layer_digest.clone(), *layer_size)),
            _ => None,
        })
        .expect("the RUN done");
    assert!(digest.unwrap().starts_with("sha256:"));
    assert!(size.unwrap() > 0);
    let broken = built.step("RUN broken");
    let code = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepFailed {
                step, exit_code, ..
            } if *step == broken => Some(*exit_code),
            _ => None,
        })
        .expect("the RUN failed");
    assert_eq!(code, Some(7));
}

/// Without `--retries` a failing RUN runs once, even if it would pass
/// the second time.
#[test]
fn without_retries_a_failure_is_final() {
    let h = Harness::new();
    h.executor
        .script("broken", [Script::exit(2), Script::success()]);
    let built = h.build("FROM scratch\nRUN broken\n", |_| {});
    assert!(matches!(built.err(), BuildError::Run { attempts: 1, .. }));
    assert_eq!(h.executor.count("broken"), 1);
}

// ---- the watchdog ----------------------------------------------------------

/// A RUN that hangs (no output, no CPU) is diagnosed and killed once the
/// stall timeout passes, and the build fails as stalled (the CLI's exit 3).
#[test]
fn a_hanging_run_is_killed_as_stalled() {
    let h = Harness::new();
    h.executor.script("wait-forever", [Script::hang()]);
    let built = h.build("FROM scratch\nRUN wait-forever\n", |r| {
        r.stall_timeout = Some(Duration::from_millis(150));
    });
    let err = built.err();
    assert!(
        matches!(err, BuildError::Stalled { attempts: 1, limit, .. } if *limit == Duration::from_millis(150)),
        "{err:?}"
    );
    let diagnosis = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepDiagnosis { text, .. } => Some(text.clone()),
            _ => None,
        })
        .expect("a diagnosis before the kill");
    assert!(diagnosis.contains("stalled"), "{diagnosis}");
    assert!(
        diagnosis.contains("hrtimer_nanosleep"),
        "the tree: {diagnosis}"
    );
    let runs = h.executor.runs();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].exit.cancelled, "killed: {:?}", runs[0].exit);
    assert!(built.took < Duration::from_secs(2), "{:?}", built.took);
}

/// A stalled attempt is retried like a failed one, and a later attempt
/// that finishes makes the step succeed.
#[test]
fn a_stalled_run_is_retried() {
    let h = Harness::new();
    h.executor.script(
        "fetch",
        [Script::hang(), Script::success().write("/fetched", "yes")],
    );
    let built = h.build("FROM scratch\nRUN fetch\n", |r| {
        r.stall_timeout = Some(Duration::from_millis(100));
        r.retries = 1;
    });
    let result = built.ok();
    assert_eq!(result.attempts.get(&built.step("RUN fetch")), Some(&2));
    assert_eq!(h.files(result)["fetched"], "yes");
    let reason = built
        .events
        .iter()
        .find_map(|e| match e {
            Event::StepRetry { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("stalled"), "{reason}");
}

/// A RUN busy on the CPU without printing anything is progress, not a
/// stall; the step timeout still ends it (the CLI's exit 4).
#[test]
fn a_busy_run_is_not_stalled_but_the_step_timeout_ends_it() {
    let h = Harness::new();
    h.executor.script("crunch", [Script::busy()]);
    let built = h.build("FROM scratch\nRUN crunch\n", |r| {
        r.stall_timeout = Some(Duration::from_millis(100));
        r.step_timeout = Some(Duration::from_millis(400));
    });
    let err = built.err();
    assert!(
        matches!(err, BuildError::TimedOut { limit, .. } if *limit == Duration::from_millis(400)),
        "{err:?}"
    );
    assert!(built.took >= Duration::from_millis(400));
    assert!(built.took < Duration::from_secs(2), "{:?}", built.took);
}

/// Nothing of the watchdog applies to a step that ends in time.
#[test]
fn a_quick_run_under_limits_is_left_alone() {
    let h = Harness::new();
    h.executor
        .script("quick", [Script::success().stdout("done").write("/q", "q")]);
    let built = h.build("FROM scratch\nRUN quick\n", |r| {
        r.stall_timeout = Some(Duration::from_millis(200));
        r.step_timeout = Some(Duration::from_secs(5));
    });
    built.ok();
    assert_eq!(built.count(|e| matches!(e, Event::StepDiagnosis { .. })), 0);
}

// ---- the context ------------------------------------------------------------

/// Bytes this process has read (`rchar` of /proc/self/io): each test runs
/// in a process of its own.
fn bytes_read() -> u64 {
    let io = fs_err::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_cancel_stops_hashing_a_huge_context_file() {
    // Ctrl-C while a step's key needs the digest of an 8 GiB file (sparse:
    // nothing on disk, but read whole as any file): the digest stops
    // between two reads, and so does the one of the thread that hashes
    // the context ahead; the build ends cancelled long before either has
    // read the file. Without the stop both read it all (16 GiB).
    let h = Harness::new();
    let big = fs_err::File::create(h.context().join("big.bin")).unwrap();
    big.set_len(8 << 30).unwrap();
    let before = bytes_read();
    let built = h.build_on_engine(
        "FROM scratch\nRUN --mount=type=bind,source=big.bin,target=/big.bin true\n",
        |_| {},
        Arc::new(|_| {}),
        |engine| {
            let cancel = Arc::clone(&engine.cancel);
            std::thread::spawn(move || {
                let started = Instant::now();
                while bytes_read() - before < 64 << 20
                    && started.elapsed() < Duration::from_secs(60)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        },
    );
    let read = bytes_read() - before;
    assert!(
        matches!(built.result, Err(BuildError::Cancelled)),
        "{:?}\n{:#?}",
        built.result,
        built.events
    );
    assert!(read < 4 << 30, "{read} bytes read");
    assert!(h.executor.runs().is_empty(), "{:?}", h.executor.runs());
}

/// The largest file named `name` below `dir`, 0 if none.
fn largest_named(dir: &std::path::Path, name: &str) -> u64 {
    let mut largest = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name() == name {
                largest = largest.max(meta.len());
            }
        }
    }
    largest
}

/// Builds `dockerfile`, cancelling it once a file named `name` below the
/// snapshotter's directory holds 64 MiB; how large such a file ever got.
/// The build must end cancelled.
fn cancelled_while_writing(h: &Harness, dockerfile: &str, name: &'static str) -> u64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let snapshots = h.tmp.path().join("snapshots");
    let done = Arc::new(AtomicBool::new(false));
    let largest = Arc::new(AtomicU64::new(0));
    let built = h.build_on_engine(
        dockerfile,
        |_| {},
        Arc::new(|_| {}),
        |engine| {
            let cancel = Arc::clone(&engine.cancel);
            let (done, largest) = (Arc::clone(&done), Arc::clone(&largest));
            std::thread::spawn(move || {
                while !done.load(SeqCst) {
                    let now = largest_named(&snapshots, name);
                    largest.fetch_max(now, SeqCst);
                    if now >= 64 << 20 {
                        cancel.store(true, SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        },
    );
    done.store(true, SeqCst);
    assert!(
        matches!(built.result, Err(BuildError::Cancelled)),
        "{:?}\n{:#?}",
        built.result,
        built.events
    );
    let largest = largest.load(SeqCst);
    assert!(largest > 0, "{name} was never seen");
    largest
}

#[test]
fn a_cancel_stops_a_copy_in_the_middle_of_a_big_file() {
    // Ctrl-C while a COPY copies a 1 GiB file (sparse in the context, its
    // copy written whole): the copy stops within a chunk, the build ends
    // cancelled and the step's root is gone. The copy is watched in the
    // snapshotter's directory: it never reaches the file's size (without
    // the stop it does, and the build ends before the cancel is seen).
    let h = Harness::new();
    let size = 1u64 << 30;
    fs_err::File::create(h.context().join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let largest = cancelled_while_writing(&h, "FROM scratch\nCOPY big.bin /\n", "big.bin");
    assert!(largest < size, "the copy reached {largest} bytes");
}

#[test]
fn a_cancel_stops_an_add_unpacking_a_big_archive() {
    // The same for `ADD big.tar`: a tar of one 1 GiB member (its content
    // zeros, sparse on disk) stops being read once the build is cancelled.
    let h = Harness::new();
    let size = 1u64 << 30;
    let mut header = tar::Header::new_ustar();
    header.set_path("big.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut archive = fs_err::File::create(h.context().join("big.tar")).unwrap();
    std::io::Write::write_all(&mut archive, header.as_bytes()).unwrap();
    // The member's content and the two end blocks: zeros.
    archive.set_len(512 + size + 1024).unwrap();
    let largest = cancelled_while_writing(&h, "FROM scratch\nADD big.tar /out/\n", "big.bin");
    assert!(largest < size, "the unpack reached {largest} bytes");
}

#[test]
fn a_cancel_after_the_last_step_ended_is_still_a_cancel() {
    // Ctrl-C when the last step is done (its layer being written, the
    // image about to be made): the build ends cancelled, not built, and
    // the step's layer is recorded whole, so the next build reuses it.
    let h = Harness::new();
    h.file("a.txt", "alpha\n");
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch: EventSink = {
        let cancel = Arc::clone(&cancel);
        Arc::new(move |e| {
            if matches!(e, Event::StepDone { .. }) {
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let dockerfile = "FROM scratch\nCOPY a.txt /\n";
    let built = h.build_on_engine(
        dockerfile,
        |_| {},
        watch,
        |engine| {
            engine.cancel = Arc::clone(&cancel);
        },
    );
    assert!(
        matches!(built.result, Err(BuildError::Cancelled)),
        "{:?}",
        built.result
    );
    let again = h.build(dockerfile, |_| {});
    assert_eq!(h.files(again.ok())["a.txt"], "alpha\n");
    assert!(
        again
            .events
            .iter()
            .any(|e| matches!(e, Event::StepCached { .. })),
        "{:#?}",
        again.events
    );
}
