//! Snapshots of a run's processes for the watchdog.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use kiln_sandbox::{
    Collect, Executor, NetworkMode, ProcessState, ProcessTree, Protocol, RunControl, SocketState,
};
use kiln_testkit::need::{Runc, need};

use crate::harness::{BOUND, Sandbox, bounded, eventually};

/// Runs `script` until `ready` accepts a snapshot, then cancels the run
/// and returns that snapshot.
fn snapshot_when(
    sb: &Sandbox,
    spec: kiln_sandbox::RunSpec,
    ready: impl Fn(&ProcessTree) -> bool + Sync,
) -> ProcessTree {
    let control = RunControl::new();
    let output = Collect::new();
    bounded(|| {
        std::thread::scope(|s| {
            let run = s.spawn(|| sb.exec.run(&spec, &output, &control));
            let mut last = ProcessTree::default();
            let tree = eventually("a matching snapshot", || {
                assert!(
                    !run.is_finished(),
                    "the run ended early: {}\nlast snapshot: {last:#?}",
                    output.stderr_text()
                );
                let tree = control.snapshot();
                if ready(&tree) {
                    return Some(tree);
                }
                last = tree;
                None
            });
            control.cancel();
            assert!(run.join().unwrap().unwrap().cancelled);
            tree
        })
    })
}

#[test]
fn snapshot_shows_both_sleeps_with_wait_channels_and_cpu() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.spec("sleep 100 & sleep 100");
    let tree = snapshot_when(&sb, spec, |t| {
        let sleeps: Vec<_> = t.processes.iter().filter(|p| p.comm == "sleep").collect();
        sleeps.len() == 2
            && sleeps
                .iter()
                .all(|p| p.state == ProcessState::Sleeping && p.wchan.is_some())
    });
    let first = &tree.processes[0];
    assert_eq!(first.ns_pid, Some(1), "{first:#?}");
    let sleeps: Vec<_> = tree
        .processes
        .iter()
        .filter(|p| p.comm == "sleep")
        .collect();
    for p in &sleeps {
        assert_eq!(p.cmdline, ["sleep", "100"]);
        assert!(p.wchan.as_deref().is_some_and(|w| !w.is_empty()));
        assert!(p.syscall.is_some(), "blocked in nanosleep: {p:#?}");
        assert!(p.io.is_some());
        assert!(p.ns_pid.is_some_and(|n| n > 1) || p.pid == first.pid);
    }
    // Parents are in the tree (or are runc, for the first process).
    for p in &tree.processes[1..] {
        assert!(tree.processes.iter().any(|q| q.pid == p.ppid));
    }
    let cpu: Duration = tree.processes.iter().map(|p| p.cpu_time()).sum();
    assert_eq!(tree.totals.cpu_time, cpu);
    assert!(tree.totals.cpu_time_with_reaped >= tree.totals.cpu_time);
    assert_eq!(tree.totals.processes, tree.processes.len());
    let rchar: u64 = tree
        .processes
        .iter()
        .filter_map(|p| p.io)
        .map(|io| io.rchar)
        .sum();
    assert_eq!(tree.totals.io.rchar, rchar);
    assert!(rchar > 0, "exec reads the binary");
    sb.assert_no_leftovers();
}

#[test]
fn snapshot_shows_a_tcp_connection_to_the_host() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // nc keeps the connection while its stdin (the sleep) stays open.
    let mut spec = sb.spec(&format!("sleep 1000 | nc {} {}", addr.ip(), addr.port()));
    spec.network = NetworkMode::Host;
    let tree = std::thread::scope(|s| {
        let accepted = s.spawn(|| {
            listener.set_nonblocking(true).unwrap();
            eventually("the connection", || match listener.accept() {
                Ok((stream, peer)) => Some((stream, peer)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("{e}"),
            })
        });
        let tree = snapshot_when(&sb, spec, |t| {
            t.processes
                .iter()
                .flat_map(|p| &p.sockets)
                .any(|s| s.remote == addr)
        });
        let (mut stream, peer) = accepted.join().unwrap();
        // The cancel closed the connection.
        stream.set_read_timeout(Some(BOUND)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        (tree, peer)
    });
    let (tree, peer) = tree;
    let nc = tree
        .processes
        .iter()
        .find(|p| p.comm == "nc")
        .expect("nc in the tree");
    let socket = nc
        .sockets
        .iter()
        .find(|s| s.remote == addr)
        .expect("nc's socket");
    assert_eq!(socket.protocol, Protocol::Tcp);
    assert_eq!(socket.state, SocketState::Established);
    assert_eq!(socket.local, peer);
    assert!(socket.inode > 0);
    sb.assert_no_leftovers();
}
