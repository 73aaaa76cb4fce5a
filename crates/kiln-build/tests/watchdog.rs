//! The watchdog end to end, with real hangs under runc: a step that sleeps
//! forever, one that waits on a TCP server that never answers, a lock held
//! by a concurrent build, a step timeout, retries, `# kiln:` settings; and
//! the steps it must leave alone (silent CPU work, slow steady output, a
//! background child). Each ends within its bound and leaves no process,
//! mount or temporary directory behind. These tests need root; CI runs
//! them as root.
//!
//! Limits are short (2-3 s); the bounds only keep a hang from hanging the
//! suite. No speed is asserted.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_build::Event;
use kiln_build::{BuildError, BuildRequest, BuildResult, Engine};
use kiln_image::Store;
use kiln_registry::{ClientOptions, RegistryClient};
use kiln_sandbox::RuncExecutor;
use kiln_testkit::need::{Runc, need};
use kiln_testkit::process::assert_no_process;

/// Long enough for a loaded CI machine; never used to assert speed.
const BOUND: Duration = Duration::from_secs(180);

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

// ---- support ---------------------------------------------------------------

struct Harness {
    root: tempfile::TempDir,
    store: Store,
    runtime: tokio::runtime::Runtime,
    base: String,
    context: tempfile::TempDir,
}

type Events = Arc<Mutex<Vec<Event>>>;

impl Harness {
    fn new() -> Option<Harness> {
        need(Runc)?;
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("store")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let base = busybox_image(&store);
        Some(Harness {
            root,
            store,
            runtime,
            base,
            context: tempfile::tempdir().unwrap(),
        })
    }

    fn engine(&self) -> (Arc<Engine>, Events) {
        let events: Events = Arc::default();
        let sink_events = Arc::clone(&events);
        let sink = Arc::new(move |e: Event| sink_events.lock().unwrap().push(e));
        let executor = Arc::new(RuncExecutor::new(self.root.path().join("runc")));
        let engine = Engine::new(
            self.store.clone(),
            RegistryClient::new(ClientOptions::default()),
            self.runtime.handle().clone(),
            executor,
            sink,
        )
        .unwrap();
        (Arc::new(engine), events)
    }

    /// `FROM <busybox>` then `body`, built with `tweak` applied.
    fn request(&self, body: &str, tweak: impl FnOnce(&mut BuildRequest)) -> BuildRequest {
        let text = format!("FROM {}\n{body}", self.base);
        let mut request = BuildRequest::new(
            self.context.path().to_path_buf(),
            self.context.path().join("Dockerfile"),
            text.into_bytes(),
        );
        request.no_cache = true;
        request.retry_backoff = Duration::from_millis(100);
        tweak(&mut request);
        request
    }

    fn build(
        &self,
        body: &str,
        tweak: impl FnOnce(&mut BuildRequest),
    ) -> (Result<BuildResult, BuildError>, Vec<Event>) {
        let request = self.request(body, tweak);
        let (engine, events) = self.engine();
        let result = bounded(move || engine.build(&request));
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    /// Nothing of any build is left: no mount under the test's root, no
    /// active snapshot, no scratch directory, no runc state or bundle.
    fn assert_clean(&self) {
        let root = fs_err::canonicalize(self.root.path()).unwrap();
        let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        let ours: Vec<&str> = mounts
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|p| Path::new(p).starts_with(&root))
            })
            .collect();
        assert!(ours.is_empty(), "mounts left: {ours:#?}");
        let store = self.store.root();
        for dir in [
            store.join("active"),
            store.join("tmp"),
            self.root.path().join("runc/state"),
            self.root.path().join("runc/bundles"),
        ] {
            let left = entries(&dir);
            assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    match fs_err::read_dir(dir) {
        Ok(list) => list
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs `f` on a thread and ends the test process if it does not return
/// within [`BOUND`].
fn bounded<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let handle = s.spawn(move || {
            let value = f();
            let _ = tx.send(());
            value
        });
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(BOUND) {
            eprintln!("did not finish within {BOUND:?}");
            std::process::exit(101);
        }
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// The diagnoses among `events`, also printed for the test's log.
fn diagnoses(events: &[Event]) -> Vec<String> {
    let texts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepDiagnosis { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    for text in &texts {
        eprintln!("{text}");
    }
    texts
}

fn retries(events: &[Event]) -> Vec<(u32, u32, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepRetry {
                attempt,
                max,
                reason,
                ..
            } => Some((*attempt, *max, reason.clone())),
            _ => None,
        })
        .collect()
}

fn logs(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepLog { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// The position of the first event matching `f`.
fn position(events: &[Event], f: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(f)
}

/// A busybox image (static busybox with every applet, /etc/passwd, /tmp)
/// in the store; returns its name.
fn busybox_image(store: &Store) -> String {
    use kiln_testkit::busybox::{BUSYBOX_TAG, image};
    image(store, BUSYBOX_TAG, &[])
}

// ---- hangs -----------------------------------------------------------------

#[test]
fn a_step_that_sleeps_forever_is_diagnosed_killed_and_cleaned_up() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build("RUN echo before the hang; sleep 86401\n", |r| {
        r.stall_timeout = secs(2);
    });
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::Stalled { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "step 1 (Dockerfile:2) stalled: no output, CPU or I/O for 2s (killed)"
    );
    assert_eq!(err.location().map(|l| l.start_line), Some(2));
    let texts = diagnoses(&events);
    assert_eq!(texts.len(), 1, "{events:#?}");
    let text = &texts[0];
    assert!(
        text.contains("RUN echo before the hang; sleep 86401"),
        "{text}"
    );
    assert!(text.contains("| before the hang"), "the last lines: {text}");
    assert!(text.contains("sleep 86401"), "the process tree: {text}");
    assert!(
        text.contains("nanosleep"),
        "the wait channel or syscall: {text}"
    );
    assert!(text.contains("fail the build"), "{text}");
    let diagnosed = position(&events, |e| matches!(e, Event::StepDiagnosis { .. })).unwrap();
    let failed = position(&events, |e| matches!(e, Event::StepFailed { .. })).unwrap();
    assert!(diagnosed < failed);
    assert_no_process("86401");
    h.assert_clean();
}

/// A TCP server that accepts connections and never answers; it holds
/// them until the test ends.
fn silent_server() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let _ = tx.send(());
            // Read what the client sends, so its send queue drains, and
            // keep the connection open without a byte in return.
            let mut s = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
            held.push(stream);
        }
    });
    (port, rx)
}

#[test]
fn a_step_waiting_on_a_silent_server_names_the_remote_address() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (port, accepted) = silent_server();
    let (result, events) = h.build(
        &format!("RUN wget -q -O /dev/null http://127.0.0.1:{port}/never-answers\n"),
        |r| r.stall_timeout = secs(2),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::Stalled { .. }), "{err}");
    assert!(accepted.try_recv().is_ok(), "the step connected");
    let text = &diagnoses(&events)[0];
    assert!(
        text.contains(&format!("-> 127.0.0.1:{port} ESTABLISHED")),
        "the socket and its peer: {text}"
    );
    assert!(text.contains("wget -q -O /dev/null"), "{text}");
    assert_no_process("never-answers");
    h.assert_clean();
}

#[test]
fn a_step_past_its_timeout_is_killed_even_while_it_prints() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build(
        "RUN while true; do echo still going 86405; sleep 0.2; done\n",
        |r| {
            r.step_timeout = secs(3);
        },
    );
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::TimedOut { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "step 1 (Dockerfile:2) timed out: still running after 3s (killed)"
    );
    let text = &diagnoses(&events)[0];
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("| still going 86405"), "{text}");
    assert_no_process("86405");
    h.assert_clean();
}

// ---- what must be left alone -----------------------------------------------

#[test]
fn silent_cpu_work_and_slow_steady_output_are_not_stalls() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build(
        "RUN end=$(( $(date +%s) + 7 )); while [ \"$(date +%s)\" -lt \"$end\" ]; do :; done\n\
         RUN for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 1; done\n",
        |r| r.stall_timeout = secs(3),
    );
    result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert!(diagnoses(&events).is_empty(), "{events:#?}");
    assert!(logs(&events).contains(&"tick 8".to_string()));
    h.assert_clean();
}

#[test]
fn a_background_child_does_not_keep_the_step_alive() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build("RUN sleep 86403 & echo main is done\n", |r| {
        r.stall_timeout = None;
    });
    result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert!(logs(&events).contains(&"main is done".to_string()));
    assert_no_process("86403");
    h.assert_clean();
}

// ---- locks -----------------------------------------------------------------

#[test]
fn a_wait_for_a_lock_held_by_another_build_counts_toward_the_stall() {
    let Some(h) = Harness::new() else {
        return;
    };
    let mount = "--mount=type=cache,target=/shared,id=watchdog-lock,sharing=locked";
    // Build A holds the cache and sleeps, with no stall check of its own.
    let holder = h.request(
        &format!("RUN {mount} echo holding the lock; sleep 86406\n"),
        |r| r.stall_timeout = None,
    );
    let (engine_a, events_a) = h.engine();
    let (result_a, (result_b, events_b)) = bounded(|| {
        std::thread::scope(|s| {
            let a = {
                let engine_a = Arc::clone(&engine_a);
                s.spawn(move || engine_a.build(&holder))
            };
            // Build B starts once A holds the lock.
            while !logs(&events_a.lock().unwrap()).contains(&"holding the lock".to_string()) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let b = h.build(&format!("RUN {mount} echo got it\n"), |r| {
                r.stall_timeout = secs(2)
            });
            engine_a.cancel();
            (a.join().unwrap(), b)
        })
    });
    let err = result_b.unwrap_err();
    assert!(matches!(err, BuildError::Stalled { .. }), "{err}");
    let dockerfile = h.context.path().join("Dockerfile").display().to_string();
    let notes: Vec<&str> = events_b
        .iter()
        .filter_map(|e| match e {
            Event::StepNote { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("held by build {dockerfile} (pid"))),
        "{notes:#?}"
    );
    let text = &diagnoses(&events_b)[0];
    assert!(
        text.contains(&format!(
            "waiting for cache mount /shared (id \"watchdog-lock\", sharing=locked): held by build {dockerfile} (pid {})",
            std::process::id()
        )),
        "{text}"
    );
    assert!(text.contains("its command has not started"), "{text}");
    assert!(!logs(&events_b).contains(&"got it".to_string()));
    assert!(
        matches!(result_a, Err(BuildError::Cancelled)),
        "{result_a:?}"
    );
    assert_no_process("86406");
    h.assert_clean();
}

// ---- retries and per-step settings -----------------------------------------

#[test]
fn a_failing_step_is_retried_from_a_clean_parent() {
    let Some(h) = Harness::new() else {
        return;
    };
    // The count lives in a cache mount, which survives attempts; /dirty is
    // in the step's root, which must not.
    let (result, events) = h.build(
        "RUN --mount=type=cache,target=/count,id=retry-count \
         test ! -e /dirty || exit 9; touch /dirty; \
         n=$(( $(cat /count/n 2>/dev/null || echo 0) + 1 )); echo $n > /count/n; \
         echo attempt $n; [ $n -ge 3 ]\n",
        |r| r.retries = 2,
    );
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert_eq!(result.attempts.get(&1), Some(&3), "{:?}", result.attempts);
    let retries = retries(&events);
    assert_eq!(retries.len(), 2, "{events:#?}");
    assert_eq!((retries[0].0, retries[0].1), (2, 3));
    assert_eq!((retries[1].0, retries[1].1), (3, 3));
    assert!(
        retries[0]
            .2
            .contains("did not complete successfully: exit code: 1"),
        "{retries:?}"
    );
    assert!(logs(&events).contains(&"attempt 3".to_string()));
    h.assert_clean();
}

#[test]
fn a_step_that_stalls_once_succeeds_on_its_retry() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build(
        "# kiln: stall=2s retries=1\n\
         RUN --mount=type=cache,target=/count,id=stall-once \
         if [ -e /count/tried ]; then echo second try; else touch /count/tried; sleep 86407; fi\n",
        |r| r.stall_timeout = None,
    );
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert_eq!(result.attempts.get(&1), Some(&2));
    let text = &diagnoses(&events)[0];
    assert!(text.contains("retry (attempt 2 of 2)"), "{text}");
    let retries = retries(&events);
    assert_eq!(retries.len(), 1);
    assert!(
        retries[0]
            .2
            .starts_with("step 1 (Dockerfile:3) stalled: no output, CPU or I/O for 2s"),
        "{retries:?}"
    );
    assert!(logs(&events).contains(&"second try".to_string()));
    assert_no_process("86407");
    h.assert_clean();
}

#[test]
fn kiln_comments_set_limits_per_step() {
    let Some(h) = Harness::new() else {
        return;
    };
    // The build has no stall check; the step's comment sets one, and two
    // attempts. A comment above another instruction does nothing.
    let (result, events) = h.build(
        "# kiln: stall=1s\nENV A=b\n# runs forever\n# kiln: stall=2s retries=1\nRUN sleep 86408\n",
        |r| r.stall_timeout = None,
    );
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "step 2 (Dockerfile:6) stalled: no output, CPU or I/O for 2s (killed after 2 attempts)"
    );
    assert_eq!(diagnoses(&events).len(), 2);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Warning { message, line: Some(2) } if message.contains("RUN steps only")
    )));
    assert_no_process("86408");
    h.assert_clean();
}

#[test]
fn a_bad_kiln_comment_fails_before_anything_runs() {
    let Some(h) = Harness::new() else {
        return;
    };
    let (result, events) = h.build(
        "RUN echo first\n# kiln: stall=5 minutes\nRUN echo second\n",
        |_| {},
    );
    let err = result.unwrap_err();
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    assert!(
        err.message()
            .starts_with("invalid `# kiln:` comment: stall=5: "),
        "{err:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::StepStarted { .. })),
        "{events:#?}"
    );
}
