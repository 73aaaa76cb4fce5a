//! Cancel, background children, panics: every run ends with nothing left.

use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_sandbox::{Collect, Executor, RunControl, Stream};
use kiln_testkit::need::{Runc, need};

use crate::harness::{Sandbox, bounded, eventually, pids_running, unique_secs};

#[test]
fn cancel_kills_the_whole_tree() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let before = sb.listing();
    let spec = sb.spec("sleep 1001 & sleep 1002 & wait");
    let control = RunControl::new();
    let output = Collect::new();
    let (exit, seen) = bounded(|| {
        std::thread::scope(|s| {
            let run = s.spawn(|| sb.exec.run(&spec, &output, &control));
            let tree = eventually("both sleeps", || {
                let tree = control.snapshot();
                let sleeps = tree.processes.iter().filter(|p| p.comm == "sleep").count();
                (sleeps == 2).then_some(tree)
            });
            control.cancel();
            (run.join().unwrap(), tree)
        })
    });
    let exit = exit.unwrap();
    assert!(exit.cancelled);
    assert_eq!(exit.signal(), Some(9));
    assert!(control.is_finished());
    assert_eq!(seen.processes.len(), 3, "{:#?}", seen.processes);
    for p in &seen.processes {
        let alive = fs_err::read(format!("/proc/{}/cmdline", p.pid))
            .is_ok_and(|c| c.split(|&b| b == 0).next() == p.cmdline.first().map(|s| s.as_bytes()));
        assert!(!alive, "{} ({:?}) survived the cancel", p.pid, p.cmdline);
    }
    assert!(control.snapshot().processes.is_empty());
    assert_eq!(sb.listing(), before);
    sb.assert_no_leftovers();
}

#[test]
fn a_run_cancelled_before_it_starts_ends_at_once() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let control = RunControl::new();
    control.cancel();
    let secs = unique_secs();
    let spec = sb.spec(&format!("sleep {secs}"));
    let exit = bounded(|| sb.exec.run(&spec, &Collect::new(), &control)).unwrap();
    assert!(exit.cancelled);
    assert!(pids_running(&["sleep", &secs]).is_empty());
    sb.assert_no_leftovers();
}

#[test]
fn background_children_die_with_the_command() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let before = sb.listing();
    // The background sleep keeps stdout open: the run must still end when
    // sh does (pid 1 exits, the kernel kills the rest of its namespace).
    let secs = unique_secs();
    let (result, output) = sb.run(&sb.spec(&format!("sleep {secs} & echo started; exit 0")));
    let exit = result.unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!exit.cancelled);
    assert_eq!(output.stdout_text(), "started\n");
    assert!(
        pids_running(&["sleep", &secs]).is_empty(),
        "the background sleep survived"
    );
    assert_eq!(sb.listing(), before);
    sb.assert_no_leftovers();
}

#[test]
fn a_panicking_sink_ends_the_run_and_cleans_up() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let before = sb.listing();
    let sink = |stream: Stream, _: &[u8]| {
        if stream == Stream::Stdout {
            panic!("sink exploded");
        }
    };
    let control = RunControl::new();
    let secs = unique_secs();
    let spec = sb.spec(&format!("echo boom; sleep {secs}"));
    let caught = bounded(|| catch_unwind(AssertUnwindSafe(|| sb.exec.run(&spec, &sink, &control))));
    let payload = caught.expect_err("the sink's panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"sink exploded"));
    assert!(control.is_finished());
    assert!(pids_running(&["sleep", &secs]).is_empty());
    assert_eq!(sb.listing(), before);
    sb.assert_no_leftovers();
}

#[test]
fn many_runs_in_parallel_each_clean_up() {
    if need(Runc).is_none() {
        return;
    }
    // One executor, one root per run (a root takes one run at a time).
    let roots: Vec<Sandbox> = (0..4).map(|_| Sandbox::new()).collect();
    let exec = &roots[0].exec;
    let outputs: Vec<String> = bounded(|| {
        std::thread::scope(|s| {
            let runs: Vec<_> = roots
                .iter()
                .enumerate()
                .map(|(i, sb)| {
                    s.spawn(move || {
                        let output = Collect::new();
                        let spec = sb.spec(&format!("echo run {i}"));
                        let exit = exec.run(&spec, &output, &RunControl::new()).unwrap();
                        assert!(exit.success(), "{}", output.stderr_text());
                        output.stdout_text()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    });
    assert_eq!(outputs, ["run 0\n", "run 1\n", "run 2\n", "run 3\n"]);
    roots[0].assert_no_leftovers();
}

#[test]
fn sweep_leaves_live_runs_and_clears_dead_ones() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    // A bundle left by a kiln process that no longer exists.
    let stale = sb.exec.bundle_dir().join("kiln-4194304999-0-0.abc");
    fs_err::create_dir_all(&stale).unwrap();
    let mine = sb
        .exec
        .bundle_dir()
        .join(format!("kiln-{}-9-0.abc", std::process::id()));
    fs_err::create_dir_all(&mine).unwrap();
    assert_eq!(sb.exec.sweep().unwrap(), 0);
    assert!(!stale.exists());
    assert!(mine.exists());
    fs_err::remove_dir(&mine).unwrap();
}
