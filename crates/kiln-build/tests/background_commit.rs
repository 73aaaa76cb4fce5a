//! Commits in the background (issue #16): a step's layer is written while
//! the next step runs on its files. Real overlay mounts and runc, as root.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kiln_build::{BuildError, Encoding, Event, StepId};

mod build_support;

use build_support::{Harness, busybox_image, cached_steps, logs};

/// The step planned at `line` of the Dockerfile.
fn step_at(events: &[Event], line: usize) -> StepId {
    events
        .iter()
        .find_map(|e| match e {
            Event::StepPlanned { step, line: l, .. } if *l == line => Some(*step),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no step at line {line}"))
}

fn position(events: &[Event], found: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(found)
}

/// Where `step`'s StepStarted is among `events`.
fn started_at(events: &[Event], step: StepId) -> usize {
    position(
        events,
        |e| matches!(e, Event::StepStarted { step: s } if *s == step),
    )
    .unwrap()
}

/// Where `step`'s StepDone is among `events`.
fn done_at(events: &[Event], step: StepId) -> usize {
    position(
        events,
        |e| matches!(e, Event::StepDone { step: s, .. } if *s == step),
    )
    .unwrap()
}

fn note_at(events: &[Event], step: StepId, text: &str) -> bool {
    events.iter().any(
        |e| matches!(e, Event::StepNote { step: s, text: t } if *s == step && t.contains(text)),
    )
}

/// What the build left under `<store>/active`: nothing, once it is over.
fn active_entries(h: &Harness) -> Vec<String> {
    match fs_err::read_dir(h.store.root().join("active")) {
        Ok(list) => list
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_nothing_mounted(root: &Path) {
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "no mount of this build remains:\n{mounts}"
    );
}

/// Builds `dockerfile` in `ctx` twice, with SOURCE_DATE_EPOCH and no
/// cache: its layers written in the background, then each step waiting for
/// its commit. `check` looks at each build (`true` for the first); both
/// must give the same image byte for byte (with rewrite-timestamp, as files
/// made at run time carry the time they were made), and leave nothing
/// active or mounted.
fn same_image_both_ways(
    h: &Harness,
    ctx: &Path,
    dockerfile: &str,
    check: impl Fn(bool, &[Event], &kiln_build::BuildResult),
) {
    let mut images = Vec::new();
    for background in [true, false] {
        let (result, events) = h.build_on(
            ctx,
            dockerfile,
            |r| {
                r.build_args
                    .insert("SOURCE_DATE_EPOCH".into(), "1700000000".into());
                r.no_cache = true;
            },
            |engine| engine.background_commits = background,
        );
        let result = result.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
        check(background, &events, &result);
        let encoding = Encoding {
            epoch: Some(1_700_000_000),
            rewrite_timestamps: true,
            ..Encoding::default()
        };
        let (target, encoded) =
            kiln_build::encode_image(&h.store, &result.target, &result.images, &encoding).unwrap();
        images.push((
            target.digest,
            encoded[0].config.rootfs.diff_ids.clone(),
            h.config(&result).history,
        ));
        assert!(active_entries(h).is_empty(), "{:?}", active_entries(h));
    }
    assert_eq!(images[0].2, images[1].2, "the histories differ");
    assert_eq!(images[0].1, images[1].1, "the layers differ");
    assert_eq!(images[0].0, images[1].0, "the images differ");
    assert!(h.store.verify().unwrap().is_ok());
    assert_nothing_mounted(h.root.path());
}

const PIPELINE: &str = "FROM IMAGE\n\
     RUN mkdir -p /out/a /out/b && for i in $(seq 1 200); do echo file $i > /out/a/$i; done \
         && seq 1 400000 > /out/b/big && rm /bin/vi && echo x > /out/gone\n\
     RUN sleep 1 && rm /out/gone /out/a/7 && echo after > /out/after\n\
     COPY a.txt /app/\n\
     RUN rm -r /out/b\n\
     WORKDIR /work/here\n\
     RUN true\n";

#[test]
fn a_pipelined_build_gives_the_image_of_a_serial_one() {
    // One context and SOURCE_DATE_EPOCH, no cache: the build whose steps
    // run while the layer below is written, and the build where each step
    // waits for its commit, give the same image byte for byte (with
    // rewrite-timestamp, as files made at run time carry the time they
    // were made).
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    let dockerfile = PIPELINE.replace("IMAGE", &base);
    same_image_both_ways(&h, ctx.path(), &dockerfile, |background, events, _| {
        let first = step_at(events, 2);
        let second = step_at(events, 3);
        let second_started = position(
            events,
            |e| matches!(e, Event::StepStarted { step } if *step == second),
        );
        let first_done = position(
            events,
            |e| matches!(e, Event::StepDone { step, .. } if *step == first),
        );
        let settled_after = events
            .iter()
            .find_map(|e| match e {
                Event::StepDone {
                    step,
                    settled_after_ms,
                    ..
                } if *step == first => Some(*settled_after_ms),
                _ => None,
            })
            .unwrap();
        if background {
            // The sleep ran while the layer below was written.
            assert!(
                note_at(events, first, "writing its layer in the background"),
                "{events:#?}"
            );
            assert!(second_started < first_done, "{events:#?}");
            // The step ended with its layer, before the sleep did, when it
            // was recorded (unless its layer took the whole sleep).
            assert!(
                settled_after > 0 || note_at(events, first, "waiting for its layer"),
                "{events:#?}"
            );
        } else {
            assert!(second_started > first_done, "{events:#?}");
            assert_eq!(settled_after, 0);
        }
    });
}

#[test]
fn a_short_step_between_does_not_make_the_next_wait_for_a_big_layer() {
    // A big layer, a COPY, a RUN: the COPY is sealed while the big layer
    // is still being written and waits for it stacked on it, so the RUN
    // starts at once on the files of both (serially, the RUN starts after
    // the big layer is done). Both layers are written beside it, each
    // compared with what is below it, and the image is the serial build's.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    // Incompressible: its layer takes a while to write.
    kiln_testkit::write_random_file(&ctx.path().join("big.bin"), 48 << 20, 16).unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    let dockerfile = format!(
        "FROM {base}\n\
         RUN --mount=type=bind,source=big.bin,target=/src/big.bin \
             cp /src/big.bin /big && mkdir /d && echo one > /d/one && echo x > /d/gone\n\
         COPY a.txt /d/\n\
         RUN test -s /big && cat /d/a.txt /d/one > /both && rm /d/gone && sleep 1\n"
    );
    same_image_both_ways(&h, ctx.path(), &dockerfile, |background, events, result| {
        let (big, copy, last) = (step_at(events, 2), step_at(events, 3), step_at(events, 4));
        let started = |step| started_at(events, step);
        let done = |step| done_at(events, step);
        if background {
            assert!(started(last) < done(big), "{events:#?}");
            assert!(started(last) < done(copy), "{events:#?}");
            assert!(
                note_at(events, copy, "writing its layer in the background"),
                "{events:#?}"
            );
        } else {
            assert!(started(last) > done(big), "{events:#?}");
        }
        // Recorded in order whatever finished first.
        assert!(
            done(big) < done(copy) && done(copy) < done(last),
            "{events:#?}"
        );
        let dir = build_support::flatten(&h.store, result);
        assert_eq!(
            fs_err::read_to_string(dir.path().join("both")).unwrap(),
            "alpha\none\n"
        );
        assert!(!dir.path().join("d/gone").exists());
    });
}

#[test]
fn a_step_that_changes_nothing_between_does_not_make_the_next_wait() {
    // A big layer, a RUN that changes no file, a RUN: the one between is
    // sealed with nothing to write while the big layer is still being
    // written, and is recorded after it (an empty layer in the history, in
    // its place), so the last RUN starts at once.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    // Incompressible: its layer takes a while to write.
    kiln_testkit::write_random_file(&ctx.path().join("big.bin"), 48 << 20, 16).unwrap();
    let dockerfile = format!(
        "FROM {base}\n\
         RUN --mount=type=bind,source=big.bin,target=/src/big.bin cp /src/big.bin /big\n\
         RUN test -s /big\n\
         RUN cmp -s /big /big && echo ok > /checked && sleep 1\n"
    );
    same_image_both_ways(&h, ctx.path(), &dockerfile, |background, events, result| {
        let (big, between, last) = (step_at(events, 2), step_at(events, 3), step_at(events, 4));
        let started = |step| started_at(events, step);
        let done = |step| done_at(events, step);
        if background {
            assert!(started(last) < done(big), "{events:#?}");
            assert!(started(last) < done(between), "{events:#?}");
        } else {
            assert!(started(last) > done(big), "{events:#?}");
        }
        assert!(
            done(big) < done(between) && done(between) < done(last),
            "{events:#?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::StepDone { step, layer_size: None, .. } if *step == between
            )),
            "{events:#?}"
        );
        let dir = build_support::flatten(&h.store, result);
        assert_eq!(
            fs_err::read_to_string(dir.path().join("checked")).unwrap(),
            "ok\n"
        );
    });
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs_err::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_background_commit_that_fails_fails_the_build_with_its_step() {
    // The store on a 48 MiB tmpfs: a step that fits, whose layer does not,
    // followed by a long one. The layer's failure stops the step running
    // on it and is the build's error, named with its line; nothing of it
    // is recorded, nothing stays mounted or under active/.
    let Some(mut h) = Harness::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"), "48m");
    h.store = kiln_image::Store::open(disk.0.join("store")).unwrap();
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {base}\nRUN head -c 26000000 /dev/urandom > /big\nRUN sleep 60\nRUN echo never\n"
    );
    let started = Instant::now();
    let (result, events) = h.build(ctx.path(), &dockerfile, |_| {});
    let err = result.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the sleeping step was stopped"
    );
    assert_eq!(
        err.location().map(|l| l.start_line),
        Some(2),
        "{err}\n{events:#?}"
    );
    assert!(
        matches!(err, BuildError::Commit { .. }),
        "{err:?}\n{events:#?}"
    );
    assert!(err.message().contains("committing the step"), "{err}");
    let first = step_at(&events, 2);
    assert!(events.iter().any(
        |e| matches!(e, Event::StepFailed { step, reason, .. } if *step == first && reason.contains("committing"))
    ));
    nothing_of_the_step_kept(&h, &events, 2);
    drop(h);
    drop(disk);
}

/// Makes `engine` run `then` each time a step's layer starts being
/// written in the background (its note), before the event goes on.
fn on_background_write(engine: &mut kiln_build::Engine, then: impl Fn() + Send + Sync + 'static) {
    let inner = Arc::clone(&engine.events);
    engine.events = Arc::new(move |e: Event| {
        if matches!(&e, Event::StepNote { text, .. } if text.contains("in the background")) {
            then();
        }
        inner(e);
    });
}

/// Nothing of the step at `line` was kept: no cache record, nothing under
/// active/ or mounted, a store that verifies.
fn nothing_of_the_step_kept(h: &Harness, events: &[Event], line: usize) {
    let step = step_at(events, line);
    let key = events
        .iter()
        .find_map(|e| match e {
            Event::StepKeyed { step: s, key } if *s == step => Some(key.clone()),
            _ => None,
        })
        .unwrap();
    assert!(h.store.read(|r| r.cache(&key)).unwrap().is_none());
    assert!(active_entries(h).is_empty(), "{:?}", active_entries(h));
    assert_nothing_mounted(h.store.root());
    assert!(h.store.verify().unwrap().is_ok());
}

/// Whether a blob being written under `ingest` has bytes yet.
fn blob_begun(ingest: &Path) -> bool {
    fs_err::read_dir(ingest).is_ok_and(|list| {
        list.flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
    })
}

#[test]
fn a_file_that_vanishes_under_a_background_commit_fails_the_build_with_its_step() {
    // While the step's layer is written (`/big` first, byte order: once
    // its blob has bytes, the writer is inside /big), a file after it is
    // removed from the upper directory behind kiln's back: the layer is
    // not made without it, the build fails with the step's line and the
    // file's path, and nothing of it is recorded. The same with a COPY
    // sealed on it while it is written (stacked on it, pending too):
    // nothing of that one is recorded either.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    for between in ["", "COPY a.txt /\n"] {
        let dockerfile = format!(
            "FROM {base}\nRUN head -c 30000000 /dev/urandom > /big && echo v > /vanishing\n{between}RUN sleep 60\n"
        );
        let (active, ingest) = (h.store.root().join("active"), h.store.root().join("ingest"));
        let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let remove_on_note = |engine: &mut kiln_build::Engine| {
            let removed = Arc::clone(&removed);
            let once = std::sync::Once::new();
            on_background_write(engine, move || {
                let (active, ingest, removed) =
                    (active.clone(), ingest.clone(), Arc::clone(&removed));
                once.call_once(|| {
                    std::thread::spawn(move || {
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while !blob_begun(&ingest) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        for slot in fs_err::read_dir(&active).unwrap() {
                            let file = slot.unwrap().path().join("upper/vanishing");
                            if fs_err::remove_file(&file).is_ok() {
                                removed.lock().unwrap().push(file);
                            }
                        }
                    });
                });
            });
        };
        let started = Instant::now();
        let (result, events) = h.build_on(ctx.path(), &dockerfile, |_| {}, remove_on_note);
        let err = result.unwrap_err();
        let removed = removed.lock().unwrap().clone();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the sleeping step was stopped"
        );
        assert!(
            matches!(err, BuildError::Commit { .. }),
            "{err:?}\n{events:#?}"
        );
        assert_eq!(err.location().map(|l| l.start_line), Some(2), "{err}");
        let message = err.message();
        assert!(
            message.contains(removed[0].to_str().unwrap()) && message.contains("No such file"),
            "{message}"
        );
        nothing_of_the_step_kept(&h, &events, 2);
        if !between.is_empty() {
            let copy = step_at(&events, 3);
            if note_at(&events, copy, "writing its layer in the background") {
                assert!(events.iter().any(|e| matches!(e,
                    Event::StepFailed { step, reason, .. } if *step == copy && reason.contains("not recorded"))),
                    "{events:#?}");
            }
            if events
                .iter()
                .any(|e| matches!(e, Event::StepKeyed { step, .. } if *step == copy))
            {
                nothing_of_the_step_kept(&h, &events, 3);
            }
        }
    }
}

#[test]
fn a_build_cancelled_during_a_background_commit_keeps_only_whole_layers() {
    // Ctrl-C while a layer is written in the background: the step on it
    // is stopped, the layer is finished and recorded whole (or not at
    // all), and the rebuild reuses it and makes the same image as a build
    // that was never interrupted.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {base}\nRUN head -c 20000000 /dev/urandom > /big && echo one > /one\nRUN sleep 30\n"
    );
    let cancel_on_note = |engine: &mut kiln_build::Engine| {
        let cancel = Arc::clone(&engine.cancel);
        on_background_write(engine, move || cancel.store(true, Ordering::SeqCst));
    };
    let started = Instant::now();
    let (result, events) = h.build_on(ctx.path(), &dockerfile, |_| {}, cancel_on_note);
    assert!(
        matches!(result, Err(BuildError::Cancelled)),
        "{result:?}\n{events:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(active_entries(&h).is_empty(), "{:?}", active_entries(&h));
    assert_nothing_mounted(h.root.path());
    assert!(h.store.verify().unwrap().is_ok());

    let (again, events) = h.build(ctx.path(), &dockerfile.replace("sleep 30", "true"), |_| {});
    let again = again.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
    assert_eq!(cached_steps(&events), 1, "the finished layer is reused");
    let (fresh, events) = h.build(ctx.path(), &dockerfile.replace("sleep 30", "true"), |r| {
        r.no_cache = true
    });
    let fresh = fresh.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
    // The reused layer holds the step's files: the same paths and sizes as
    // one made now.
    let files = |result: &kiln_build::BuildResult| {
        let dir = build_support::flatten(&h.store, result);
        let big = fs_err::metadata(dir.path().join("big")).unwrap().len();
        let one = fs_err::read_to_string(dir.path().join("one")).unwrap();
        (big, one)
    };
    assert_eq!(files(&again), files(&fresh));
    assert_eq!(files(&again), (20_000_000, "one\n".to_string()));
}

#[test]
fn a_second_cancel_drops_the_layers_being_written() {
    // Ctrl-C twice while a big layer is written in the background: the
    // write stops at once, nothing of the step is stored or recorded (no
    // blob begun left in ingest/), and the next build runs the step again.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile =
        format!("FROM {base}\nRUN head -c 200000000 /dev/urandom > /big\nRUN sleep 30\n");
    let stop_on_note = |engine: &mut kiln_build::Engine| {
        let (cancel, stop) = (Arc::clone(&engine.cancel), Arc::clone(&engine.stop_writing));
        on_background_write(engine, move || {
            stop.store(true, Ordering::SeqCst);
            cancel.store(true, Ordering::SeqCst);
        });
    };
    let (result, events) = h.build_on(ctx.path(), &dockerfile, |_| {}, stop_on_note);
    assert!(
        matches!(result, Err(BuildError::Cancelled)),
        "{result:?}\n{events:#?}"
    );
    nothing_of_the_step_kept(&h, &events, 2);
    let ingest = h.store.root().join("ingest");
    assert!(!blob_begun(&ingest), "{:?}", fs_err::read_dir(&ingest));

    let (again, events) = h.build(ctx.path(), &dockerfile.replace("sleep 30", "true"), |_| {});
    again.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
    assert_eq!(cached_steps(&events), 0, "{}", logs(&events));
}

#[test]
#[ignore = "a timing, not a check: cargo nextest run --run-ignored only"]
fn timing_a_big_layer_then_a_sleep() {
    // A RUN that writes KILN_TIMING_MB (default 1024) MiB of files that
    // compress poorly, then `RUN sleep 3`: serial, the sleep waits for the
    // commit; in the background, it overlaps it. Prints both build times.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let mb: u64 = std::env::var("KILN_TIMING_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dockerfile = format!(
        "FROM {base}\nRUN mkdir /data && for i in $(seq 1 {n}); do head -c 16777216 /dev/urandom > /data/$i; done\nRUN sleep 3\n",
        n = mb / 16
    );
    for background in [false, true] {
        let started = Instant::now();
        let (result, events) = h.build_on(
            ctx.path(),
            &dockerfile,
            |r| r.no_cache = true,
            |engine| engine.background_commits = background,
        );
        result.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
        let commit = events.iter().find_map(|e| match e {
            Event::StepCommitted {
                archive_ms,
                store_ms,
                size,
                ..
            } if *size > 1 << 20 => Some((archive_ms + store_ms, *size)),
            _ => None,
        });
        eprintln!(
            "background commits {background}: build {:.1}s, big layer (ms, bytes) {commit:?}",
            started.elapsed().as_secs_f64()
        );
    }
}
