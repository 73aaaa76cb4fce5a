//! The overlay snapshotter against the kernel: real layers in a real
//! store, real overlay mounts (so these tests need root; CI runs them as
//! root), and other processes re-executing this binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Barrier, Mutex};

use kiln_build::{
    ActiveSnapshot, CommitOptions, Committed, Layer, OverlaySnapshotter, ReadOnlyMount, Sealed,
    Snapshot, SnapshotError, Snapshotter, UnpackEvent, chain_id,
};
use kiln_image::compress::{self, BlobWriter, CompressOptions};
use kiln_image::document::Descriptor;
use kiln_image::layer::{self, WriteOptions};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, SnapshotRecord, SnapshotState, Store, Unsynced};
use kiln_testkit::need::{Root, need};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};

// ---- the suite every snapshotter passes -----------------------------------

mod suite {
    use std::path::Path;
    use std::sync::Arc;

    use kiln_build::{OverlaySnapshotter, Snapshotter};
    use kiln_image::Store;

    fn overlay(store: &Store, _dir: &Path) -> Option<Arc<dyn Snapshotter>> {
        super::need(super::Root)?;
        Some(Arc::new(OverlaySnapshotter::new(store).unwrap()))
    }

    kiln_build::snapshotter_suite!(overlay);
}

// ---- support ---------------------------------------------------------------

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    snap: OverlaySnapshotter,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        need(Root)?;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let snap = OverlaySnapshotter::new(&store).unwrap();
        Some(Fixture { tmp, store, snap })
    }

    /// A fresh directory for building a layer tree.
    fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join("trees").join(name);
        fs_err::create_dir_all(&dir).unwrap();
        dir
    }

    /// The layer blob of `dir` (an overlay-format tree: 0/0 devices are
    /// whiteouts, `trusted.overlay.opaque=y` marks opaque dirs) in the store.
    fn layer(&self, dir: &Path, compression: Compression, format: Format) -> Layer {
        let ingest = self.store.ingest().unwrap();
        let mut blob = BlobWriter::new(ingest, &CompressOptions::new(compression)).unwrap();
        layer::write(dir, &mut blob, &WriteOptions::default()).unwrap();
        let (ingest, info) = blob.finish().unwrap();
        ingest.commit().unwrap();
        Layer {
            diff_id: info.diff_id,
            blob: Descriptor::new(compression.layer_media_type(format), info.digest, info.size),
        }
    }

    /// Prepares `layers`: the snapshots, and the chain IDs it unpacked.
    fn prepare_noting_unpacks(&self, layers: &[Layer]) -> (Vec<Snapshot>, Vec<Digest>) {
        let unpacked = Mutex::new(Vec::new());
        let chain = self
            .snap
            .prepare_with(layers, &|e| {
                if let UnpackEvent::Finished { chain_id, .. } = e {
                    unpacked.lock().unwrap().push(chain_id.clone());
                }
            })
            .unwrap();
        (chain, unpacked.into_inner().unwrap())
    }

    fn root(&self) -> PathBuf {
        fs_err::canonicalize(self.store.root()).unwrap()
    }

    fn record(&self, chain_id: &Digest) -> Option<SnapshotRecord> {
        self.store.read(|r| r.snapshot(chain_id)).unwrap()
    }

    /// What is left under `active/`.
    fn active_entries(&self) -> Vec<String> {
        names(&self.root().join("active"))
    }

    /// The upper dir of the active snapshot `active`: what its step
    /// changed, in overlayfs's format (`active/<pid>-<n>-<key>/upper`).
    fn upper(&self, active: &dyn ActiveSnapshot) -> PathBuf {
        let suffix = format!("-{}", active.key());
        let dir = self
            .active_entries()
            .into_iter()
            .find(|n| n.ends_with(&suffix))
            .unwrap();
        self.root().join("active").join(dir).join("upper")
    }

    /// The mounts under the store root.
    fn mounts(&self) -> Vec<String> {
        let root = self.root();
        mountinfo()
            .into_iter()
            .filter(|(point, _)| Path::new(point).starts_with(&root))
            .map(|(point, _)| point)
            .collect()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// (mount point, super options) of every mount (paths without escapes in
/// these tests).
fn mountinfo() -> Vec<(String, String)> {
    fs_err::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (
                fields[4].to_string(),
                fields.last().copied().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn write(path: &Path, data: &str) {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).unwrap();
    }
    fs_err::write(path, data).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsecs as _,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

fn opaque(dir: &Path) {
    rustix::fs::lsetxattr(dir, "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
}

/// A mounted tree, canonically: path → "dir 755", "file 644 <content>",
/// "link <target>", "chr 0:0".
fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for name in names(dir) {
            let path = dir.join(&name);
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let m = fs_err::symlink_metadata(&path).unwrap();
            let mode = m.mode() & 0o7777;
            let desc = if m.is_dir() {
                walk(root, &path, out);
                format!("dir {mode:o}")
            } else if m.file_type().is_symlink() {
                format!("link {}", fs_err::read_link(&path).unwrap().display())
            } else if m.is_file() {
                format!("file {mode:o} {}", fs_err::read_to_string(&path).unwrap())
            } else {
                format!("other {:o} {}", m.mode(), m.rdev())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn tree(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One entry of a layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

/// The entries of a layer blob, in order; checks the diffID on the way.
fn layer_entries(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Vec<Entry> {
    let compression = Compression::from_media_type(&layer.media_type).unwrap();
    let blob = store.open_blob(&layer.digest).unwrap();
    let mut tar_bytes = Vec::new();
    compress::decompress(blob, compression)
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        Digest::of(&tar_bytes),
        *diff_id,
        "the diffID is the tar's digest"
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            let mode = e.header().mode().unwrap();
            let mtime = e.header().mtime().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Entry {
                name,
                mode,
                mtime,
                data,
            }
        })
        .collect()
}

fn entry_names(store: &Store, committed: &Committed) -> Vec<String> {
    let layer = committed.layer.as_ref().expect("a layer");
    layer_entries(store, &layer.descriptor, &layer.diff_id)
        .into_iter()
        .map(|e| e.name)
        .collect()
}

/// Commits with the defaults; returns the entry names of the layer, or
/// `None` when the step made no layer.
fn commit_names(store: &Store, active: Box<dyn ActiveSnapshot>) -> Option<Vec<String>> {
    let committed = active.commit(&CommitOptions::default()).unwrap();
    committed.layer.as_ref()?;
    Some(entry_names(store, &committed))
}

/// Seals, then writes and finishes the layer as a background commit
/// does; the layer's entry names, or `None` when the step made none.
fn seal_names(
    store: &Store,
    active: Box<dyn ActiveSnapshot>,
    parents: &[Snapshot],
) -> Option<Vec<String>> {
    let committed = match active.seal(&CommitOptions::default()).unwrap() {
        Sealed::Unchanged => return None,
        Sealed::Committed(committed) => *committed,
        Sealed::Pending(pending) => {
            let written = pending.write(parents, &Default::default()).unwrap();
            pending.finish(written, parents).unwrap()
        }
    };
    committed.layer.as_ref()?;
    Some(entry_names(store, &committed))
}

/// Three layers: a base (gzip, OCI), one that deletes, replaces and hides
/// (zstd, Docker), one that deletes what the second added (uncompressed).
fn three_layers(f: &Fixture) -> Vec<Layer> {
    let l0 = f.scratch("l0");
    write(&l0.join("etc/conf"), "a");
    write(&l0.join("bin/tool"), "#!/bin/sh");
    chmod(&l0.join("bin/tool"), 0o755);
    write(&l0.join("d/a"), "a");
    write(&l0.join("d/sub/c"), "c");
    write(&l0.join("x"), "x");
    write(&l0.join("keep"), "keep");
    write(&l0.join("opt/dir/f"), "f");
    std::os::unix::fs::symlink("etc/conf", l0.join("conf-link")).unwrap();

    let l1 = f.scratch("l1");
    write(&l1.join("etc/conf"), "b");
    whiteout(&l1.join("x"));
    fs_err::create_dir(l1.join("d")).unwrap();
    opaque(&l1.join("d"));
    write(&l1.join("d/new"), "new");
    write(&l1.join("l1"), "one");

    let l2 = f.scratch("l2");
    fs_err::create_dir(l2.join("d")).unwrap();
    whiteout(&l2.join("d/new"));
    write(&l2.join("keep"), "kept twice");
    write(&l2.join("opt/dir/g"), "g");

    vec![
        f.layer(&l0, Compression::Gzip, Format::Oci),
        f.layer(&l1, Compression::Zstd, Format::Docker),
        f.layer(&l2, Compression::None, Format::Oci),
    ]
}

/// What the three layers show, stacked.
fn three_layers_view() -> BTreeMap<String, String> {
    tree(&[
        ("bin", "dir 755"),
        ("bin/tool", "file 755 #!/bin/sh"),
        ("conf-link", "link etc/conf"),
        ("d", "dir 755"),
        ("etc", "dir 755"),
        ("etc/conf", "file 644 b"),
        ("keep", "file 644 kept twice"),
        ("l1", "file 644 one"),
        ("opt", "dir 755"),
        ("opt/dir", "dir 755"),
        ("opt/dir/f", "file 644 f"),
        ("opt/dir/g", "file 644 g"),
    ])
}

/// A one-layer base, prepared.
fn base(f: &Fixture) -> Vec<Snapshot> {
    f.snap.prepare(&[base_layer(f)]).unwrap()
}

/// A layer with an /etc as images have it, times from a tar.
fn base_layer(f: &Fixture) -> Layer {
    let dir = f.scratch("base");
    write(&dir.join("etc/passwd"), "root:x:0:0");
    write(&dir.join("etc/group"), "root:x:0:");
    write(&dir.join("usr/bin/sh"), "sh");
    for p in [
        "etc/passwd",
        "etc/group",
        "etc",
        "usr/bin/sh",
        "usr/bin",
        "usr",
    ] {
        set_mtime(&dir.join(p), 1_600_000_000, 0);
    }
    f.layer(&dir, Compression::Gzip, Format::Oci)
}

// ---- prepare ---------------------------------------------------------------

#[test]
fn prepare_unpacks_a_chain_with_spec_chain_ids() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = three_layers(&f);
    let (chain, unpacked) = f.prepare_noting_unpacks(&layers);
    assert_eq!(unpacked.len(), 3);

    // OCI image spec, config.md: ChainID(L0) = DiffID(L0),
    // ChainID(L0|..|Ln) = SHA256(ChainID(L0|..|Ln-1) + " " + DiffID(Ln)).
    let d: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let c1 = Digest::of(format!("{} {}", d[0], d[1]).as_bytes());
    let c2 = Digest::of(format!("{c1} {}", d[2]).as_bytes());
    let ids: Vec<&Digest> = chain.iter().map(Snapshot::chain_id).collect();
    assert_eq!(ids, [&layers[0].diff_id, &c1, &c2]);
    assert_eq!(chain_id(Some(&c1), &layers[2].diff_id), c2);

    for (s, l) in chain.iter().zip(&layers) {
        let record = f.record(s.chain_id()).unwrap();
        assert_eq!(record.state, SnapshotState::Ready);
        assert_eq!(record.layer.as_ref(), Some(&l.blob.digest));
        assert!(s.dir().starts_with(f.root().join("snapshots")));
    }
    // Each layer alone, in overlay format: the second holds a whiteout
    // device and an opaque directory.
    let x = fs_err::symlink_metadata(chain[1].dir().join("x")).unwrap();
    assert!(x.file_type().is_char_device() && x.rdev() == 0);

    // Stacked, they show what the layers mean.
    let ro = f.snap.mount_readonly(&chain).unwrap();
    assert_eq!(describe(ro.root()), three_layers_view());
    // Read-only indeed.
    assert!(fs_err::write(ro.root().join("new"), "n").is_err());
    ro.release().unwrap();

    // Prepared once: the second call needs no blob at all.
    for l in &layers {
        fs_err::remove_file(f.store.blob_path(&l.blob.digest)).unwrap();
    }
    let again = f
        .snap
        .prepare_with(&layers, &|e| panic!("unpacked again: {e:?}"))
        .unwrap();
    assert_eq!(again, chain);
}

/// A "registry" for a layer the store only knows the source of: its blob
/// written in 64 KiB chunks, 20 ms apart, reported as the registry's
/// fetcher reports them; with `restart`, started over in a fresh ingest
/// after the first chunk has had time to be read (as a retry from another
/// source does).
struct Chunked {
    bytes: Vec<u8>,
    restart: bool,
}

impl kiln_image::BlobFetcher for Chunked {
    fn fetch(
        &self,
        _: &Store,
        _: &Descriptor,
        _: &[kiln_image::BlobSource],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        unreachable!("an unpack follows the fetch")
    }

    fn fetch_following(
        &self,
        store: &Store,
        blob: &Descriptor,
        _: &[kiln_image::BlobSource],
        wrote: &(dyn Fn(&Path, u64) + Send + Sync),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use std::io::Write;
        let mut restart = self.restart;
        let mut ingest = store.ingest_expected(&blob.digest, Some(blob.size))?;
        let mut chunks = self.bytes.chunks(64 << 10);
        while let Some(chunk) = chunks.next() {
            ingest.write_all(chunk)?;
            ingest.flush()?;
            wrote(ingest.path(), ingest.written());
            std::thread::sleep(std::time::Duration::from_millis(20));
            if restart {
                restart = false;
                std::thread::sleep(std::time::Duration::from_millis(300));
                ingest = store.ingest_expected(&blob.digest, Some(blob.size))?;
                chunks = self.bytes.chunks(64 << 10);
            }
        }
        ingest.commit()?;
        Ok(())
    }
}

#[test]
fn a_layer_is_unpacked_as_it_downloads_and_again_if_the_download_starts_over() {
    for restart in [false, true] {
        let Some(f) = Fixture::new() else {
            return;
        };
        let dir = f.scratch("big");
        write(&dir.join("etc/hostname"), "kiln");
        // 1 MiB that gzip cannot shrink: sixteen chunks of the blob.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write(&dir.join("opt/noise"), "");
        fs_err::write(dir.join("opt/noise"), &noise).unwrap();
        let layer = f.layer(&dir, Compression::Gzip, Format::Oci);
        // The blob leaves the store for its "registry".
        let bytes = fs_err::read(f.store.blob_path(&layer.blob.digest)).unwrap();
        assert!(bytes.len() > 8 * (64 << 10), "{}", bytes.len());
        fs_err::remove_file(f.store.blob_path(&layer.blob.digest)).unwrap();
        f.store
            .update(|w| w.add_blob_source(&layer.blob, "reg.example", "base"))
            .unwrap();
        f.store
            .set_fetcher(std::sync::Arc::new(Chunked { bytes, restart }));
        let (chain, unpacked) = f.prepare_noting_unpacks(std::slice::from_ref(&layer));
        assert_eq!(unpacked.len(), 1, "restart {restart}");
        let unpacked_noise = fs_err::read(chain[0].dir().join("opt/noise")).unwrap();
        assert!(unpacked_noise == noise, "restart {restart}");
        assert_eq!(
            fs_err::read_to_string(chain[0].dir().join("etc/hostname")).unwrap(),
            "kiln"
        );
        let record = f.record(chain[0].chain_id()).unwrap();
        assert_eq!(record.state, SnapshotState::Ready);
        // The blob was stored, verified, on the way.
        assert!(f.store.contains(&layer.blob.digest).unwrap());
    }
}

#[test]
fn prepare_checks_diff_ids_and_media_types() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let dir = f.scratch("l");
    write(&dir.join("f"), "f");
    let good = f.layer(&dir, Compression::Gzip, Format::Oci);

    let mut wrong = good.clone();
    wrong.diff_id = Digest::of(b"not this layer");
    let e = f.snap.prepare(std::slice::from_ref(&wrong)).unwrap_err();
    assert!(matches!(e, SnapshotError::DiffIdMismatch { .. }), "{e}");
    assert_eq!(
        f.record(&wrong.diff_id),
        None,
        "no record of a failed unpack"
    );
    assert_eq!(
        names(&f.root().join("snapshots")).len(),
        1,
        "only its lock file"
    );

    let mut odd = good.clone();
    odd.blob.media_type = "application/octet-stream".to_string();
    let e = f.snap.prepare(&[odd]).unwrap_err();
    assert!(
        matches!(e, SnapshotError::UnsupportedMediaType { .. }),
        "{e}"
    );

    f.snap.prepare(&[good]).unwrap();
}

#[test]
fn threads_preparing_one_chain_unpack_it_once() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = three_layers(&f);
    let unpacks = Mutex::new(0);
    let barrier = Barrier::new(4);
    let results: Vec<Vec<Snapshot>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    f.snap
                        .prepare_with(&layers, &|e| {
                            if matches!(e, UnpackEvent::Finished { .. }) {
                                *unpacks.lock().unwrap() += 1;
                            }
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(*unpacks.lock().unwrap(), 3);
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    let ro = f.snap.mount_readonly(&results[0]).unwrap();
    assert_eq!(describe(ro.root()), three_layers_view());
}

// ---- other processes ---------------------------------------------------------

/// Set in a re-executed test binary: which part it plays.
const CHILD_ROLE: &str = "KILN_SNAPSHOT_TEST_ROLE";
const CHILD_STORE: &str = "KILN_SNAPSHOT_TEST_STORE";
const CHILD_LAYERS: &str = "KILN_SNAPSHOT_TEST_LAYERS";
/// The prefix of what a child reports on stdout (the harness prints too).
const REPORT: &str = "kiln-child:";

fn encode_layers(layers: &[Layer]) -> String {
    layers
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l.diff_id, l.blob.media_type, l.blob.digest, l.blob.size
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn decode_layers(s: &str) -> Vec<Layer> {
    s.split(';')
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Layer {
                diff_id: f[0].parse().unwrap(),
                blob: Descriptor::new(f[1], f[2].parse().unwrap(), f[3].parse().unwrap()),
            }
        })
        .collect()
}

fn spawn_child(role: &str, store: &Path, layers: &[Layer]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_STORE, store)
        .env(CHILD_LAYERS, encode_layers(layers))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The reports of a child, up to the report `until` (or its end: a child
/// that dies early makes the test fail, not hang).
fn reports(child: &mut std::process::Child, until: Option<&str>) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness may have started the line ("test child_process ... ").
        if let Some((_, report)) = line.split_once(REPORT) {
            out.push(report.trim().to_string());
            if Some(report.trim()) == until {
                return out;
            }
        }
    }
    out
}

/// Not a test of its own: the body of the processes the tests below start.
/// Does nothing when run by the harness.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let store = Store::open(std::env::var(CHILD_STORE).unwrap()).unwrap();
    let snap = OverlaySnapshotter::new(&store).unwrap();
    let layers = decode_layers(&std::env::var(CHILD_LAYERS).unwrap());
    match role.as_str() {
        "prepare" => {
            let unpacked = Mutex::new(0);
            snap.prepare_with(&layers, &|e| {
                if matches!(e, UnpackEvent::Finished { .. }) {
                    *unpacked.lock().unwrap() += 1;
                }
            })
            .unwrap();
            println!("{REPORT} unpacked {}", unpacked.into_inner().unwrap());
        }
        "activate-and-hang" => {
            let chain = snap.prepare(&layers).unwrap();
            let active = snap.activate(&chain, "doomed step").unwrap();
            write(&active.root().join("work-in-progress"), "w");
            println!("{REPORT} ready");
            // Until kill -9. Should the parent die first, its end of our
            // stdin closes and we exit as abruptly (no Drop runs either way),
            // so no test run leaves this process behind.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(3);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn processes_preparing_one_chain_unpack_it_once() {
    let Some(f) = Fixture::new() else {
        return;
    };
    // Large enough that the two processes overlap (not asserted: the
    // outcome must be the same either way).
    let dir = f.scratch("big");
    let mut data = Vec::with_capacity(8 << 20);
    let mut x: u64 = 1;
    while data.len() < 8 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs_err::write(dir.join("random"), &data).unwrap();
    let mut layers = three_layers(&f);
    layers.insert(1, f.layer(&dir, Compression::Gzip, Format::Oci));

    let mut children: Vec<_> = (0..2)
        .map(|_| spawn_child("prepare", f.store.root(), &layers))
        .collect();
    let mut unpacked = 0;
    for child in &mut children {
        let r = reports(child, None);
        assert!(child.wait().unwrap().success());
        assert_eq!(r.len(), 1, "{r:?}");
        unpacked += r[0]
            .strip_prefix("unpacked ")
            .unwrap()
            .parse::<usize>()
            .unwrap();
    }
    assert_eq!(unpacked, layers.len(), "each layer unpacked by one process");
    let chain = f
        .snap
        .prepare_with(&layers, &|e| panic!("not ready: {e:?}"))
        .unwrap();
    let ro = f.snap.mount_readonly(&chain).unwrap();
    let seen = fs_err::read(ro.root().join("random")).unwrap();
    assert!(seen == data);
}

#[test]
fn sweep_cleans_up_after_kill_9() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = vec![base_layer(&f)];
    let chain = f.snap.prepare(&layers).unwrap();
    // A live step of our own, which sweep must leave alone.
    let ours = f.snap.activate(&chain, "alive").unwrap();

    let mut child = spawn_child("activate-and-hang", f.store.root(), &layers);
    assert_eq!(reports(&mut child, Some("ready")), ["ready"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(f.mounts().len(), 2, "the dead child's mount outlives it");

    // A snapshot a dead process was unpacking.
    let stuck = Digest::of(b"stuck");
    let stuck_dir = f.root().join("snapshots").join(stuck.hex());
    write(&stuck_dir.join("half"), "h");
    f.store
        .update(|w| {
            w.put_snapshot(
                &stuck,
                &SnapshotRecord {
                    dir: stuck.hex().to_string(),
                    state: SnapshotState::Unpacking,
                    layer: None,
                    unsynced: None,
                },
            )
        })
        .unwrap();

    let report = f.snap.sweep().unwrap();
    assert_eq!(report.unmounted.len(), 1, "{report:?}");
    assert_eq!(report.active_removed.len(), 1, "{report:?}");
    assert_eq!(report.snapshots_removed, std::slice::from_ref(&stuck));
    assert_eq!(f.mounts(), [ours.root().to_str().unwrap()]);
    assert!(!stuck_dir.exists());
    assert_eq!(f.record(&stuck), None);
    // Our step is intact.
    write(&ours.root().join("still-mine"), "m");
    drop(ours);
    assert_eq!(f.active_entries(), Vec::<String>::new());
    assert_eq!(f.snap.sweep().unwrap(), Default::default());
}

/// Rewrites the unsynced stamp of a snapshot's record.
fn restamp(f: &Fixture, chain_id: &Digest, stamp: Option<Unsynced>) {
    let mut record = f.record(chain_id).unwrap();
    record.unsynced = stamp;
    f.store
        .update(|w| w.put_snapshot(chain_id, &record))
        .unwrap();
}

fn this_boot() -> String {
    fs_err::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_snapshot_an_earlier_boot_left_unsynced_is_made_again_and_swept() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = vec![base_layer(&f)];
    let chain = f.snap.prepare(&layers).unwrap();
    let id = chain[0].chain_id().clone();
    let stamp = f.record(&id).unwrap().unsynced.expect("ready, not flushed");
    assert_eq!(stamp.boot_id, this_boot());

    // As if written before a power loss that took its file's data.
    let earlier = Unsynced {
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        since: stamp.since,
    };
    restamp(&f, &id, Some(earlier.clone()));
    fs_err::write(chain[0].dir().join("usr/bin/sh"), "").unwrap();
    let (again, unpacked) = f.prepare_noting_unpacks(&layers);
    assert_eq!(unpacked, std::slice::from_ref(&id));
    assert_eq!(
        fs_err::read_to_string(again[0].dir().join("usr/bin/sh")).unwrap(),
        "sh"
    );
    assert_eq!(
        f.record(&id).unwrap().unsynced.unwrap().boot_id,
        this_boot()
    );

    // Sweep removes one that nothing made again.
    restamp(&f, &id, Some(earlier));
    let report = f.snap.sweep().unwrap();
    assert_eq!(report.unsynced_removed, std::slice::from_ref(&id));
    assert_eq!(f.record(&id), None);
    assert!(!again[0].dir().exists());
}

#[test]
fn sweep_flushes_snapshots_unsynced_for_longer_than_writeback_takes() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = vec![base_layer(&f)];
    let chain = f.snap.prepare(&layers).unwrap();
    let id = chain[0].chain_id().clone();

    // Just written: left to writeback.
    assert_eq!(f.snap.sweep().unwrap(), Default::default());
    assert!(f.record(&id).unwrap().unsynced.is_some());

    restamp(
        &f,
        &id,
        Some(Unsynced {
            boot_id: this_boot(),
            since: 1_000_000_000,
        }),
    );
    let report = f.snap.sweep().unwrap();
    assert_eq!(report.synced, std::slice::from_ref(&id));
    assert_eq!(f.record(&id).unwrap().unsynced, None);
    // Still the same snapshot, used as it is.
    let again = f
        .snap
        .prepare_with(&layers, &|e| panic!("unpacked again: {e:?}"))
        .unwrap();
    assert_eq!(again, chain);
}

// ---- activate and commit -----------------------------------------------------

#[test]
fn commit_writes_what_changed_as_a_layer() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let dir = f.scratch("l0");
    write(&dir.join("etc/conf"), "a");
    write(&dir.join("bin/tool"), "tool");
    write(&dir.join("d/a"), "a");
    write(&dir.join("d/b"), "b");
    write(&dir.join("x"), "x");
    write(&dir.join("keep"), "keep");
    write(&dir.join("untouched/deep/file"), "u");
    let parents = f
        .snap
        .prepare(&[f.layer(&dir, Compression::Gzip, Format::Oci)])
        .unwrap();

    let active = f.snap.activate(&parents, "step 1").unwrap();
    let r = active.root().to_path_buf();
    assert_eq!(f.mounts(), [r.to_str().unwrap()]);
    assert_eq!(
        fs_err::metadata(&r).unwrap().mode() & 0o7777,
        0o755,
        "the root keeps the image's mode"
    );
    write(&r.join("n"), "new");
    fs_err::remove_file(r.join("x")).unwrap();
    write(&r.join("keep"), "changed");
    fs_err::remove_dir_all(r.join("d")).unwrap();
    write(&r.join("d/new"), "n");
    chmod(&r.join("bin/tool"), 0o755);
    write(&r.join("newdir/sub/file"), "s");
    let _ = fs_err::read(r.join("untouched/deep/file")).unwrap();
    let seen = describe(&r);

    let mut opts = CommitOptions::default();
    opts.compression = Compression::Zstd;
    opts.format = Format::Docker;
    let committed = active.commit(&opts).unwrap();
    let layer = committed.layer.clone().unwrap();
    assert_eq!(
        layer.descriptor.media_type,
        "application/vnd.docker.image.rootfs.diff.tar.zstd"
    );
    assert_eq!(
        f.store.blob_size(&layer.descriptor.digest).unwrap(),
        Some(layer.descriptor.size)
    );
    let entries = layer_entries(&f.store, &layer.descriptor, &layer.diff_id);
    let entry_names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        entry_names,
        [
            "bin/",
            "bin/tool",
            "d/",
            "d/.wh..wh..opq",
            "d/new",
            "keep",
            "n",
            "newdir/",
            "newdir/sub/",
            "newdir/sub/file",
            // Where `x` sorts, as layer::write puts whiteouts.
            ".wh.x",
        ]
    );
    let tool = entries.iter().find(|e| e.name == "bin/tool").unwrap();
    assert_eq!((tool.mode, &tool.data[..]), (0o755, &b"tool"[..]));

    // The upper dir became the snapshot, keyed by the chain.
    let expected = chain_id(Some(parents[0].chain_id()), &layer.diff_id);
    assert_eq!(layer.snapshot.chain_id(), &expected);
    assert_eq!(
        committed.chain,
        [parents[0].clone(), layer.snapshot.clone()]
    );
    let record = f.record(&expected).unwrap();
    assert_eq!(record.state, SnapshotState::Ready);
    assert_eq!(record.layer, Some(layer.descriptor.digest.clone()));
    assert_eq!(f.mounts(), Vec::<String>::new());
    assert_eq!(f.active_entries(), Vec::<String>::new());

    // And the next step sees what this one left.
    let next = f.snap.activate(&committed.chain, "step 2").unwrap();
    assert_eq!(describe(next.root()), seen);
    next.discard().unwrap();
}

#[test]
fn committing_nothing_gives_no_layer() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let parents = base(&f);
    let active = f.snap.activate(&parents, "noop").unwrap();
    let _ = fs_err::read(active.root().join("etc/passwd")).unwrap();
    let committed = active.commit(&CommitOptions::default()).unwrap();
    assert_eq!(committed.layer, None);
    assert_eq!(committed.chain, parents);
    assert_eq!(f.active_entries(), Vec::<String>::new());

    // FROM scratch: an empty lower dir under the upper.
    let scratch = f.snap.activate(&[], "scratch").unwrap();
    assert_eq!(describe(scratch.root()), BTreeMap::new());
    assert_eq!(
        fs_err::metadata(scratch.root()).unwrap().mode() & 0o7777,
        0o755
    );
    let committed = scratch.commit(&CommitOptions::default()).unwrap();
    assert_eq!(committed.layer, None);
    assert!(committed.chain.is_empty());

    let scratch = f.snap.activate(&[], "scratch").unwrap();
    write(&scratch.root().join("hello"), "hi");
    let committed = scratch.commit(&CommitOptions::default()).unwrap();
    assert_eq!(entry_names(&f.store, &committed), ["hello"]);
    let layer = committed.layer.unwrap();
    assert_eq!(layer.snapshot.chain_id(), &layer.diff_id, "a bottom layer");
}

/// The RUN sandbox creates /etc/resolv.conf, /etc/hosts and /etc/hostname
/// as mount points and removes them afterwards: overlayfs has copied /etc
/// up by then. BuildKit's overlay differ drops a copied-up directory whose
/// type, mode, owner (and capabilities) equal the lower one's, whatever its
/// mtime, unless something under it changed; and a copied-up file whose
/// metadata, size and mtime are equal, with equal content when both mtimes
/// are whole seconds.
#[test]
fn copied_up_but_unchanged_is_no_change() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let parents = base(&f);
    // Each step twice: committed at once, and sealed (the seal looks only
    // for a first change, the background write diffs it all): the same
    // layer either way.
    let step = |key: &str, run: &dyn Fn(&Path)| {
        let active = f.snap.activate(&parents, key).unwrap();
        run(active.root());
        let committed = commit_names(&f.store, active);
        let active = f
            .snap
            .activate(&parents, &format!("{key}, sealed"))
            .unwrap();
        run(active.root());
        assert_eq!(seal_names(&f.store, active, &parents), committed, "{key}");
        committed
    };

    // The sandbox's stubs, removed, /etc's times restored as kiln-sandbox
    // does.
    let stubs = |r: &Path| {
        for stub in ["etc/resolv.conf", "etc/hosts", "etc/hostname"] {
            write(&r.join(stub), "");
        }
        for stub in ["etc/resolv.conf", "etc/hosts", "etc/hostname"] {
            fs_err::remove_file(r.join(stub)).unwrap();
        }
    };
    assert_eq!(
        step("stubs", &|r| {
            stubs(r);
            set_mtime(&r.join("etc"), 1_600_000_000, 0);
        }),
        None
    );
    // Without the times restored: a directory's mtime is not compared.
    assert_eq!(step("stubs, new mtime", &stubs), None);
    // Mode changed and changed back.
    assert_eq!(
        step("chmod back", &|r| {
            chmod(&r.join("etc"), 0o700);
            chmod(&r.join("etc"), 0o755);
        }),
        None
    );
    // A file copied up by a no-op chown (same owner, times, content).
    assert_eq!(
        step("chown", &|r| {
            rustix::fs::chown(
                r.join("usr/bin/sh"),
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::ROOT),
            )
            .unwrap();
        }),
        None
    );
    // Rewritten with the same bytes and its time put back.
    assert_eq!(
        step("rewrite same", &|r| {
            write(&r.join("etc/passwd"), "root:x:0:0");
            set_mtime(&r.join("etc/passwd"), 1_600_000_000, 0);
        }),
        None
    );

    // A socket (a tar cannot hold one) changes nothing either.
    assert_eq!(
        step("socket", &|r| {
            let listener = std::os::unix::net::UnixListener::bind(r.join("etc/agent.sock"));
            drop(listener.unwrap());
        }),
        None
    );
    // Nor does a whiteout of a name no lower layer has (overlayfs makes
    // none, but an upper dir may hold one: BuildKit's `checkDelete`).
    let active = f.snap.activate(&parents, "ghost").unwrap();
    whiteout(&f.upper(&*active).join("ghost"));
    assert_eq!(commit_names(&f.store, active), None);
    let active = f.snap.activate(&parents, "ghost-sealed").unwrap();
    whiteout(&f.upper(&*active).join("ghost"));
    assert_eq!(seal_names(&f.store, active, &parents), None);

    // Real changes next to the stubs keep /etc and only them.
    assert_eq!(
        step("one file", &|r| {
            stubs(r);
            write(&r.join("etc/new.conf"), "n");
        }),
        Some(vec!["etc/".into(), "etc/new.conf".into()])
    );
    assert_eq!(
        step("other bytes, same size and time", &|r| {
            write(&r.join("etc/passwd"), "root:y:0:0");
            set_mtime(&r.join("etc/passwd"), 1_600_000_000, 0);
        }),
        Some(vec!["etc/".into(), "etc/passwd".into()])
    );
    assert_eq!(
        step("delete", &|r| fs_err::remove_file(r.join("etc/group"))
            .unwrap()),
        Some(vec!["etc/".into(), "etc/.wh.group".into()])
    );
    assert_eq!(
        step("chmod", &|r| chmod(&r.join("etc"), 0o700)),
        Some(vec!["etc/".into()])
    );
    // kiln compares every xattr a layer keeps (BuildKit only file
    // capabilities).
    assert_eq!(
        step("xattr", &|r| rustix::fs::lsetxattr(
            r.join("usr/bin"),
            "user.note",
            b"x",
            XattrFlags::empty()
        )
        .unwrap()),
        Some(vec!["usr/".into(), "usr/bin/".into()])
    );
    // A deep change keeps every copied-up parent, nothing else.
    assert_eq!(
        step("deep", &|r| {
            stubs(r);
            write(&r.join("usr/bin/new"), "n");
        }),
        Some(vec!["usr/".into(), "usr/bin/".into(), "usr/bin/new".into()])
    );
}

#[test]
fn two_hundred_layers_mount() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers: Vec<Layer> = (0..200)
        .map(|i| {
            let dir = f.scratch(&format!("layer{i}"));
            write(&dir.join(format!("files/f{i:03}")), &i.to_string());
            write(&dir.join("top"), &i.to_string());
            f.layer(&dir, Compression::None, Format::Oci)
        })
        .collect();
    let chain = f.snap.prepare(&layers).unwrap();
    // A classic lowerdir= of these paths is far over mount(2)'s page.
    let joined: usize = chain.iter().map(|s| s.dir().as_os_str().len() + 1).sum();
    assert!(joined > 4096, "{joined}");

    let active = f.snap.activate(&chain, "tall").unwrap();
    let options = mountinfo()
        .into_iter()
        .find(|(p, _)| Path::new(p) == active.root())
        .unwrap()
        .1;
    // The lower dirs went in one by one, topmost first, as `lowerdir+`
    // (the kernel lists them so); the fallback would show one `lowerdir=`.
    let top = format!("lowerdir+={},", chain[199].dir().display());
    let bottom = format!("lowerdir+={},", chain[0].dir().display());
    let (t, b) = (options.find(&top), options.find(&bottom));
    assert!(t.is_some() && b.is_some() && t < b, "{options}");
    assert!(
        !options.contains("redirect_dir=on") && !options.contains("metacopy=on"),
        "{options}"
    );
    assert_eq!(
        fs_err::read_to_string(active.root().join("top")).unwrap(),
        "199"
    );
    assert_eq!(names(&active.root().join("files")).len(), 200);
    write(&active.root().join("top"), "200");
    let committed = active.commit(&CommitOptions::default()).unwrap();
    assert_eq!(entry_names(&f.store, &committed), ["top"]);
    assert_eq!(committed.chain.len(), 201);
}

#[test]
fn dropping_an_active_snapshot_unmounts_and_removes_it() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let parents = base(&f);
    let active = f.snap.activate(&parents, "dropped").unwrap();
    write(&active.root().join("scratch"), "s");
    assert_eq!(f.mounts().len(), 1);
    assert_eq!(f.active_entries().len(), 2, "its dir and lock file");
    drop(active);
    assert_eq!(f.mounts(), Vec::<String>::new());
    assert_eq!(f.active_entries(), Vec::<String>::new());

    let active = f.snap.activate(&parents, "discarded").unwrap();
    active.discard().unwrap();
    let ro = f.snap.mount_readonly(&parents).unwrap();
    drop(ro);
    assert_eq!(f.mounts(), Vec::<String>::new());
    assert_eq!(f.active_entries(), Vec::<String>::new());
    // Nothing of the dropped steps reached a snapshot.
    assert_eq!(f.snap.list().unwrap().len(), 1);
}

#[test]
fn a_mounted_snapshot_is_not_removed() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = three_layers(&f);
    let chain = f.snap.prepare(&layers).unwrap();
    let target = chain[1].chain_id().clone();
    let active = f.snap.activate(&chain, "user").unwrap();

    let e = f.snap.remove(&target).unwrap_err();
    assert!(matches!(e, SnapshotError::InUse { .. }), "{e}");
    let listed = f.snap.list().unwrap();
    let info = listed.iter().find(|i| i.chain_id == target).unwrap();
    assert_eq!(
        info.state,
        SnapshotState::Ready,
        "the refusal undid Removing"
    );
    assert!(
        info.used_by.as_deref().unwrap().ends_with("-user"),
        "{info:?}"
    );
    assert!(chain[1].dir().exists());
    drop(active);

    assert!(f.snap.remove(&target).unwrap());
    assert!(!f.snap.remove(&target).unwrap());
    assert!(!chain[1].dir().exists());
    assert_eq!(f.record(&target), None);
    // Activation refuses what is gone; prepare brings it back.
    let e = f.snap.activate(&chain, "late").unwrap_err();
    assert!(matches!(e, SnapshotError::NotReady { .. }), "{e}");
    let again = f.snap.prepare(&layers).unwrap();
    assert_eq!(again, chain);
    let ro = f.snap.mount_readonly(&again).unwrap();
    assert_eq!(describe(ro.root()), three_layers_view());
}

/// A process left over from the step still holds a file of the root: the
/// upper dir could still change, so it is not archived; and the mount is
/// still not left behind.
#[test]
fn a_busy_root_is_not_committed() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let parents = base(&f);
    let active = f.snap.activate(&parents, "busy").unwrap();
    write(&active.root().join("log"), "l");
    let open = fs_err::File::open(active.root().join("log")).unwrap();
    let e = active.commit(&CommitOptions::default()).unwrap_err();
    assert!(matches!(e, SnapshotError::Unmount { .. }), "{e}");
    assert_eq!(f.mounts(), Vec::<String>::new(), "detached");
    assert_eq!(f.active_entries(), Vec::<String>::new());
    drop(open);
}

#[test]
fn parents_must_form_a_chain() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let layers = three_layers(&f);
    let chain = f.snap.prepare(&layers).unwrap();
    let shuffled = [chain[1].clone(), chain[0].clone()];
    let e = f.snap.activate(&shuffled, "bad").unwrap_err();
    assert!(
        matches!(e, SnapshotError::BrokenChain { position: 0, .. }),
        "{e}"
    );
    assert_eq!(f.active_entries(), Vec::<String>::new());
}

/// The engine runs steps on several threads.
#[test]
fn handles_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Box<dyn ActiveSnapshot>>();
    shareable::<Box<dyn ReadOnlyMount>>();
    shareable::<OverlaySnapshotter>();
}
