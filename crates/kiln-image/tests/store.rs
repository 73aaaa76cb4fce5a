//! The content store: ingest, index, concurrency across threads and
//! processes, crashes, prune and verify. Real files, real child processes.

mod store_support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use kiln_image::document::Descriptor;
use kiln_image::{
    CacheRecord, Digest, Platform, Problem, Reference, SnapshotRecord, SnapshotState, Store,
    StoreError, StoreOptions,
};
use store_support::{files_in, make_image, make_index, spawn_child, wait_for_file};

const CHILD_ROLE: &str = "KILN_STORE_TEST_ROLE";
const CHILD_ROOT: &str = "KILN_STORE_TEST_ROOT";
const CHILD_ARG: &str = "KILN_STORE_TEST_ARG";

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so two processes can
/// write the same blob without sharing it.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---- ingest --------------------------------------------------------------

#[test]
fn ingest_commits_a_verified_blob() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let data = bytes(1, 3 << 20);
    let digest = Digest::of(&data);
    let mut ingest = store
        .ingest_expected(&digest, Some(data.len() as u64))
        .unwrap();
    for chunk in data.chunks(100_000) {
        ingest.write_all(chunk).unwrap();
    }
    // Nothing visible before the commit.
    assert!(!store.contains(&digest).unwrap());
    let blob = ingest.commit().unwrap();
    assert_eq!(
        (blob.digest.clone(), blob.size),
        (digest.clone(), data.len() as u64)
    );
    assert_eq!(fs_err::read(store.blob_path(&digest)).unwrap(), data);
    assert!(files_in(&root.path().join("ingest")).is_empty());
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn ingest_with_wrong_digest_fails_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let claimed = Digest::of(b"what the registry promised");
    let mut ingest = store.ingest_expected(&claimed, None).unwrap();
    ingest.write_all(b"what it sent").unwrap();
    let err = ingest.commit().unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, .. } if *expected == claimed),
        "{err}"
    );
    assert!(err.to_string().contains(&claimed.to_string()), "{err}");
    assert!(!store.contains(&claimed).unwrap());
    assert!(!store.contains(&Digest::of(b"what it sent")).unwrap());
    assert!(files_in(&root.path().join("ingest")).is_empty());
    assert!(files_in(&root.path().join("blobs/sha256")).is_empty());
}

#[test]
fn ingest_rejects_more_bytes_than_expected_at_once() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let data = b"0123456789";
    let mut ingest = store.ingest_expected(&Digest::of(data), Some(4)).unwrap();
    let err = ingest.write_all(data).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(
        ingest.commit(),
        Err(StoreError::SizeMismatch { .. })
    ));
    assert!(files_in(&root.path().join("ingest")).is_empty());
}

#[test]
fn dropping_an_uncommitted_ingest_removes_its_temp_file() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut ingest = store.ingest().unwrap();
    ingest.write_all(&bytes(2, 10_000)).unwrap();
    ingest.flush().unwrap();
    assert_eq!(files_in(&root.path().join("ingest")).len(), 1);
    drop(ingest);
    assert!(files_in(&root.path().join("ingest")).is_empty());
    assert!(files_in(&root.path().join("blobs/sha256")).is_empty());
}

#[test]
fn two_threads_ingest_the_same_blob() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let other = Store::open(root.path()).unwrap();
    let data = Arc::new(bytes(3, 4 << 20));
    let digest = Digest::of(&data);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for st in [&store, &other] {
            let (data, digest, barrier) = (&data, &digest, &barrier);
            s.spawn(move || {
                let mut ingest = st.ingest_expected(digest, Some(data.len() as u64)).unwrap();
                barrier.wait();
                for chunk in data.chunks(64 << 10) {
                    ingest.write_all(chunk).unwrap();
                }
                ingest.commit().unwrap()
            });
        }
    });
    assert_eq!(fs_err::read(store.blob_path(&digest)).unwrap(), *data);
    assert!(files_in(&root.path().join("ingest")).is_empty());
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn two_processes_ingest_the_same_blob() {
    let root = tempfile::tempdir().unwrap();
    Store::open(root.path()).unwrap();
    let go = root.path().join("go");
    let children: Vec<_> = (0..2)
        .map(|_| {
            spawn_child(
                "child_process_entry",
                &[
                    (CHILD_ROLE, "ingest-same".to_string()),
                    (CHILD_ROOT, root.path().display().to_string()),
                    (CHILD_ARG, go.display().to_string()),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    fs_err::write(&go, b"").unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(root.path()).unwrap();
    let data = bytes(4, 8 << 20);
    assert_eq!(
        fs_err::read(store.blob_path(&Digest::of(&data))).unwrap(),
        data
    );
    assert!(files_in(&root.path().join("ingest")).is_empty());
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.blobs, 1);
}

// ---- the index -----------------------------------------------------------

#[test]
fn tags_resolve_and_record_the_image() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "a", 2, &amd64(), true);
    let r = reference("example.com/app:1");
    assert_eq!(store.tag(&r, &image).unwrap(), None);
    assert_eq!(store.resolve(&r).unwrap(), Some(image.clone()));
    // Normalised: `alpine` is `docker.io/library/alpine:latest`.
    store.tag(&reference("alpine"), &image).unwrap();
    assert_eq!(
        store
            .resolve(&reference("docker.io/library/alpine:latest"))
            .unwrap(),
        Some(image.clone())
    );
    let tags: Vec<String> = store
        .tags()
        .unwrap()
        .iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(
        tags,
        ["docker.io/library/alpine:latest", "example.com/app:1"]
    );
    let record = store.read(|r| r.image(&image.digest)).unwrap().unwrap();
    assert_eq!(record.platforms, [amd64()]);
    assert_eq!(record.created.as_deref(), Some("2024-01-02T03:04:05Z"));

    let index = make_index(&store, "multi", &["linux/amd64", "linux/arm64/v8"]);
    store
        .tag(&reference("example.com/multi:1"), &index)
        .unwrap();
    let record = store.read(|r| r.image(&index.digest)).unwrap().unwrap();
    assert_eq!(
        record.platforms,
        [amd64(), Platform::parse("linux/arm64").unwrap()]
    );

    assert_eq!(store.untag(&r).unwrap(), Some(image));
    assert_eq!(store.resolve(&r).unwrap(), None);
}

#[test]
fn reads_leave_the_index_file_as_it_was() {
    // A writable open of the index marks the file open and its close
    // records allocator state: five flushes of the disk to look up a tag,
    // each one waiting behind a layer's writeback on a busy disk. Lookups,
    // and opening a store whose index is made, write nothing.
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "a", 2, &amd64(), true);
    let r = reference("example.com/app:1");
    store.tag(&r, &image).unwrap();
    drop(store);
    let path = root.path().join("index.redb");
    let before = fs_err::read(&path).unwrap();
    let mtime = fs_err::metadata(&path).unwrap().modified().unwrap();
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.resolve(&r).unwrap(), Some(image.clone()));
    assert_eq!(store.tags().unwrap().len(), 1);
    assert!(store.read(|r| r.image(&image.digest)).unwrap().is_some());
    assert!(store.read(|r| r.cache_entries()).unwrap().is_empty());
    drop(store);
    assert!(
        fs_err::read(&path).unwrap() == before,
        "the index was rewritten"
    );
    assert_eq!(fs_err::metadata(&path).unwrap().modified().unwrap(), mtime);
}

#[test]
fn tagging_a_missing_image_fails() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let ghost = Descriptor::new(kiln_image::media::OCI_MANIFEST, Digest::of(b"nothing"), 7);
    let err = store.tag(&reference("x/y:1"), &ghost).unwrap_err();
    assert!(matches!(err, StoreError::BlobNotFound { .. }), "{err}");
    assert!(store.tags().unwrap().is_empty());
}

#[test]
fn snapshot_and_cache_records() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = Digest::of(b"chain");
    let layer = store.write_blob(b"layer").unwrap();
    let snapshot = SnapshotRecord {
        dir: "17".to_string(),
        state: SnapshotState::Unpacking,
        layer: Some(layer.digest.clone()),
        unsynced: None,
    };
    let cache = CacheRecord {
        layer: Some(layer.descriptor(kiln_image::media::OCI_LAYER)),
        diff_id: Some(layer.digest.clone()),
        config: None,
    };
    store
        .update(|w| {
            w.put_snapshot(&chain, &snapshot)?;
            w.put_cache("v1:step:abc", &cache)?;
            Ok(())
        })
        .unwrap();
    // A failing transaction changes nothing.
    let failed: Result<(), StoreError> = store.update(|w| {
        w.remove_snapshot(&chain)?;
        Err(StoreError::Index {
            path: "test".into(),
            reason: "abort".into(),
        })
    });
    assert!(failed.is_err());
    let ready = SnapshotRecord {
        state: SnapshotState::Ready,
        ..snapshot.clone()
    };
    assert_eq!(
        store.update(|w| w.put_snapshot(&chain, &ready)).unwrap(),
        Some(snapshot)
    );
    store
        .read(|r| {
            assert_eq!(r.snapshot(&chain)?, Some(ready.clone()));
            assert_eq!(r.snapshots()?, vec![(chain.clone(), ready.clone())]);
            assert_eq!(r.cache("v1:step:abc")?, Some(cache.clone()));
            assert_eq!(r.cache("v1:step:other")?, None);
            assert_eq!(r.cache_entries()?.len(), 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.update(|w| w.remove_cache("v1:step:abc")).unwrap(),
        Some(cache)
    );
    assert!(store.read(|r| r.cache_entries()).unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused() {
    let root = tempfile::tempdir().unwrap();
    drop(Store::open(root.path()).unwrap());
    {
        const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let db = redb::Database::create(root.path().join("index.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", kiln_image::SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(root.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == kiln_image::SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade kiln"), "{err}");
}

#[test]
fn a_held_lock_times_out_naming_its_holder() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let waits = Arc::new(Mutex::new(Vec::new()));
    let seen = waits.clone();
    let impatient = Store::open_with(
        root.path(),
        StoreOptions {
            lock_timeout: Duration::from_millis(300),
            report_after: Duration::from_millis(50),
            on_lock_wait: Some(Arc::new(move |w| seen.lock().unwrap().push(w.clone()))),
        },
    )
    .unwrap();
    let err = store.update(|_| Ok(impatient.tags().unwrap_err())).unwrap();
    let me = format!("pid {}: update", std::process::id());
    assert!(
        matches!(&err, StoreError::LockTimeout { holder: Some(h), .. } if *h == me),
        "{err}"
    );
    assert!(err.to_string().contains("index.lock"), "{err}");
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].holder.as_deref(), Some(me.as_str()));
}

#[test]
fn two_processes_tag_and_untag_without_lost_updates() {
    const N: usize = 40;
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "shared", 1, &amd64(), false);
    store
        .tag(&reference("localhost/kiln-test/base:1"), &image)
        .unwrap();
    let go = root.path().join("go");
    let children: Vec<_> = (0..2)
        .map(|id| {
            spawn_child(
                "child_process_entry",
                &[
                    (CHILD_ROLE, format!("tagger:{id}:{N}")),
                    (CHILD_ROOT, root.path().display().to_string()),
                    (CHILD_ARG, go.display().to_string()),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    fs_err::write(&go, b"").unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let tags = store.tags().unwrap();
    for id in 0..2 {
        for i in 0..N {
            let r = reference(&format!("localhost/kiln-test/c{id}:{i}"));
            let present = tags.iter().any(|(t, _)| *t == r);
            assert_eq!(present, i % 3 != 0, "{r}");
        }
    }
    // Every read-modify-write of the counter landed.
    let counter = store
        .resolve(&reference("localhost/kiln-test/counter"))
        .unwrap()
        .unwrap();
    assert_eq!(counter.annotations["count"], (2 * N).to_string());
    assert!(store.verify().unwrap().is_ok());
}

// ---- crashes -------------------------------------------------------------

#[test]
fn kill_during_ingest_then_reopen_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "before", 2, &amd64(), true);
    store.tag(&reference("x/before:1"), &image).unwrap();
    drop(store);
    let ready = root.path().join("ready");
    let mut child = spawn_child(
        "child_process_entry",
        &[
            (CHILD_ROLE, "ingest-and-hang".to_string()),
            (CHILD_ROOT, root.path().display().to_string()),
            (CHILD_ARG, ready.display().to_string()),
        ],
    );
    wait_for_file(&ready, Duration::from_secs(30));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The dead process's half-written temp file is there until an open.
    assert_eq!(files_in(&root.path().join("ingest")).len(), 1);
    let store = Store::open(root.path()).unwrap();
    assert!(files_in(&root.path().join("ingest")).is_empty());
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(
        store.resolve(&reference("x/before:1")).unwrap(),
        Some(image)
    );
}

#[test]
fn kill_during_a_transaction_then_reopen_and_verify() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "before", 1, &amd64(), true);
    store.tag(&reference("x/committed:1"), &image).unwrap();
    // Kept open: its next lookup finds the index left open by the dead
    // writer, which only a writable open (a repair) can read.
    let open_before = store;
    let ready = root.path().join("ready");
    let mut child = spawn_child(
        "child_process_entry",
        &[
            (CHILD_ROLE, "transaction-and-hang".to_string()),
            (CHILD_ROOT, root.path().display().to_string()),
            (CHILD_ARG, ready.display().to_string()),
        ],
    );
    wait_for_file(&ready, Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        open_before.resolve(&reference("x/committed:1")).unwrap(),
        Some(image.clone())
    );
    drop(open_before);
    let store = Store::open_with(
        root.path(),
        StoreOptions {
            lock_timeout: Duration::from_secs(5),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // The uncommitted tag is not there; the committed one is.
    assert_eq!(store.resolve(&reference("x/uncommitted:1")).unwrap(), None);
    assert_eq!(
        store.resolve(&reference("x/committed:1")).unwrap(),
        Some(image.clone())
    );
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    store.tag(&reference("x/after:1"), &image).unwrap();
}

#[test]
fn kill_at_random_points_never_breaks_the_store() {
    let root = tempfile::tempdir().unwrap();
    Store::open(root.path()).unwrap();
    for round in 0..10u64 {
        let ready = root.path().join(format!("ready-{round}"));
        let mut child = spawn_child(
            "child_process_entry",
            &[
                (CHILD_ROLE, format!("churn:{round}")),
                (CHILD_ROOT, root.path().display().to_string()),
                (CHILD_ARG, ready.display().to_string()),
            ],
        );
        wait_for_file(&ready, Duration::from_secs(30));
        // Prune while the child writes and tags: its leases must keep
        // every blob of an image it is about to tag.
        {
            let store = Store::open(root.path()).unwrap();
            std::thread::sleep(Duration::from_millis(10 + 23 * round));
            store.prune().unwrap();
            let report = store.verify().unwrap();
            assert!(report.is_ok(), "round {round}, live: {:?}", report.problems);
        }
        std::thread::sleep(Duration::from_millis(7 * round));
        child.kill().unwrap(); // SIGKILL, wherever it is
        child.wait().unwrap();
        let store = Store::open(root.path()).unwrap();
        assert!(files_in(&root.path().join("ingest")).is_empty());
        assert!(files_in(&root.path().join("leases")).is_empty());
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.problems);
        // And it is usable: the tags resolve to complete images.
        for (r, d) in store.tags().unwrap() {
            store.image_blobs(&d).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        store.prune().unwrap();
        assert!(store.verify().unwrap().is_ok());
    }
}

#[test]
fn default_root_follows_kiln_root_then_the_user() {
    for (kiln_root, xdg, expected) in [
        ("/srv/kiln-elsewhere", "", "/srv/kiln-elsewhere".to_string()),
        (
            "",
            "/tmp/xdg-data",
            if rustix::process::geteuid().is_root() {
                "/var/lib/kiln".to_string()
            } else {
                "/tmp/xdg-data/kiln".to_string()
            },
        ),
    ] {
        let mut child = spawn_child(
            "child_process_entry",
            &[
                (CHILD_ROLE, "default-root".to_string()),
                (CHILD_ROOT, String::new()),
                (CHILD_ARG, expected),
                ("KILN_ROOT", kiln_root.to_string()),
                ("XDG_DATA_HOME", xdg.to_string()),
            ],
        );
        assert!(child.wait().unwrap().success());
    }
}

// ---- verify --------------------------------------------------------------

fn writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn verify_catches_a_flipped_byte() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "flip", 2, &amd64(), true);
    store.tag(&reference("x/flip:1"), &image).unwrap();
    assert!(store.verify().unwrap().is_ok());
    let manifest = store.select_manifest(&image, &amd64()).unwrap();
    let layer = &manifest.value().layers[1].digest;
    let path = store.blob_path(layer);
    writable(&path);
    let mut data = fs_err::read(&path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
    fs_err::write(&path, &data).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    match &report.problems[0] {
        Problem::CorruptBlob {
            path: p, expected, ..
        } => {
            assert_eq!((p, expected), (&path, layer));
        }
        other => panic!("{other}"),
    }
    assert!(report.problems[0].to_string().contains(layer.hex()));
}

#[test]
fn verify_catches_a_truncated_blob_and_a_missing_one() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "trunc", 2, &amd64(), true);
    store.tag(&reference("x/trunc:1"), &image).unwrap();
    let manifest = store.select_manifest(&image, &amd64()).unwrap();
    let config = store.blob_path(&manifest.value().config.digest);
    writable(&config);
    let data = fs_err::read(&config).unwrap();
    fs_err::write(&config, &data[..data.len() - 10]).unwrap();
    let gone = &manifest.value().layers[0].digest;
    fs_err::remove_file(store.blob_path(gone)).unwrap();
    let report = store.verify().unwrap();
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(report.problems.len(), 2, "{text:?}");
    assert!(
        report.problems.iter().any(|p| matches!(p,
        Problem::CorruptBlob { expected, .. } if *expected == manifest.value().config.digest)),
        "{text:?}"
    );
    assert!(report.problems.iter().any(|p| matches!(p,
        Problem::MissingBlob { digest, referenced_by } if digest == gone && referenced_by.contains(&image.digest.to_string()))), "{text:?}");
}

// ---- prune ---------------------------------------------------------------

#[test]
fn prune_keeps_what_tags_and_records_reach_and_drops_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (kept, _) = make_image(&store, "kept", 2, &amd64(), true);
    let index = make_index(&store, "multi", &["linux/amd64", "linux/arm64"]);
    store.tag(&reference("x/kept:1"), &kept).unwrap();
    store.tag(&reference("x/multi:1"), &index).unwrap();
    let kept_blobs = store.image_blobs(&kept).unwrap();
    let index_blobs = store.image_blobs(&index).unwrap();

    // Written through handles that are gone: their leases have ended.
    let (dropped, cached_layer, snap_layer, dropped_blobs) = {
        let other = Store::open(root.path()).unwrap();
        let (dropped, _) = make_image(&other, "dropped", 2, &amd64(), true);
        other.tag(&reference("x/dropped:1"), &dropped).unwrap();
        other.untag(&reference("x/dropped:1")).unwrap();
        let cached = other.write_blob(b"cached layer").unwrap();
        let snap = other.write_blob(b"snapshot layer").unwrap();
        let blobs = other.image_blobs(&dropped).unwrap();
        (dropped, cached, snap, blobs)
    };
    store
        .update(|w| {
            w.put_cache(
                "k",
                &CacheRecord {
                    layer: Some(cached_layer.descriptor(kiln_image::media::OCI_LAYER)),
                    ..Default::default()
                },
            )?;
            w.put_snapshot(
                &Digest::of(b"chain"),
                &SnapshotRecord {
                    dir: "1".into(),
                    state: SnapshotState::Ready,
                    layer: Some(snap_layer.digest.clone()),
                    unsynced: None,
                },
            )?;
            Ok(())
        })
        .unwrap();
    // A live handle's fresh blob is kept though nothing tags it yet.
    let live = Store::open(root.path()).unwrap();
    let (pending, _) = make_image(&live, "pending", 1, &amd64(), false);

    let report = store.prune().unwrap();
    for d in kept_blobs.iter().chain(&index_blobs) {
        assert!(
            store.contains(&d.digest).unwrap(),
            "tagged {d:?} was pruned"
        );
    }
    for d in [&cached_layer.digest, &snap_layer.digest, &pending.digest] {
        assert!(store.contains(d).unwrap(), "{d} was pruned");
    }
    for d in &dropped_blobs {
        assert!(!store.contains(&d.digest).unwrap(), "{} survived", d.digest);
        assert!(report.removed.contains(&d.digest));
    }
    assert_eq!(report.removed.len(), dropped_blobs.len());
    assert!(report.freed_bytes > 0);
    assert_eq!(report.records_removed, 1);
    assert_eq!(store.read(|r| r.image(&dropped.digest)).unwrap(), None);
    assert!(store.verify().unwrap().is_ok());

    // Once its handle is gone, the pending image goes too.
    drop(live);
    let report = store.prune().unwrap();
    assert!(report.removed.contains(&pending.digest));
    assert!(store.contains(&kept.digest).unwrap());
}

#[test]
fn prune_from_another_process_spares_blobs_about_to_be_tagged() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "build", 3, &amd64(), true);
    // Another process prunes while this one holds the untagged image.
    let mut child = spawn_child(
        "child_process_entry",
        &[
            (CHILD_ROLE, "prune".to_string()),
            (CHILD_ROOT, root.path().display().to_string()),
            (CHILD_ARG, String::new()),
        ],
    );
    assert!(child.wait().unwrap().success());
    store.tag(&reference("x/build:1"), &image).unwrap();
    store.image_blobs(&image).unwrap();
    assert!(store.verify().unwrap().is_ok());
}

// ---- child processes -----------------------------------------------------

/// The other side of the multi-process tests: does nothing unless run by
/// `spawn_child` with a role.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let root = std::env::var(CHILD_ROOT).unwrap();
    let arg = std::env::var(CHILD_ARG).unwrap();
    if role == "default-root" {
        assert_eq!(Store::default_root(), Path::new(&arg));
        return;
    }
    let store = Store::open(&root).unwrap();
    let parts: Vec<&str> = role.split(':').collect();
    match parts.as_slice() {
        ["ingest-same"] => {
            let data = bytes(4, 8 << 20);
            let digest = Digest::of(&data);
            let mut ingest = store
                .ingest_expected(&digest, Some(data.len() as u64))
                .unwrap();
            wait_for_file(Path::new(&arg), Duration::from_secs(30));
            for chunk in data.chunks(256 << 10) {
                ingest.write_all(chunk).unwrap();
            }
            ingest.commit().unwrap();
        }
        ["ingest-and-hang"] => {
            let mut ingest = store.ingest().unwrap();
            ingest.write_all(&bytes(5, 1 << 20)).unwrap();
            ingest.flush().unwrap();
            fs_err::write(&arg, b"").unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        ["transaction-and-hang"] => {
            let image = store.resolve(&reference("x/committed:1")).unwrap().unwrap();
            store
                .update(|w| {
                    w.set_tag(&reference("x/uncommitted:1"), &image)?;
                    fs_err::write(&arg, b"").unwrap();
                    std::thread::sleep(Duration::from_secs(120));
                    Ok(())
                })
                .unwrap();
        }
        ["tagger", id, n] => {
            let n: usize = n.parse().unwrap();
            let base = store
                .resolve(&reference("localhost/kiln-test/base:1"))
                .unwrap()
                .unwrap();
            wait_for_file(Path::new(&arg), Duration::from_secs(30));
            for i in 0..n {
                let r = reference(&format!("localhost/kiln-test/c{id}:{i}"));
                store.tag(&r, &base).unwrap();
                if i % 3 == 0 {
                    store.untag(&r).unwrap();
                }
                store
                    .update(|w| {
                        let counter = reference("localhost/kiln-test/counter");
                        let mut d = w.tag(&counter)?.unwrap_or_else(|| base.clone());
                        let count: usize =
                            d.annotations.get("count").map_or(0, |c| c.parse().unwrap());
                        d.annotations
                            .insert("count".into(), (count + 1).to_string());
                        w.set_tag(&counter, &d)?;
                        Ok(())
                    })
                    .unwrap();
            }
        }
        ["churn", round] => {
            let round: u64 = round.parse().unwrap();
            let mut marked = false;
            for i in 0.. {
                let seed = format!("churn-{round}-{i}");
                let (image, _) = make_image(&store, &seed, 2, &amd64(), i % 2 == 0);
                let r = reference(&format!("x/churn:{}", i % 5));
                store.tag(&r, &image).unwrap();
                store
                    .update(|w| {
                        w.put_cache(&seed, &CacheRecord::default())?;
                        Ok(())
                    })
                    .unwrap();
                if i % 4 == 0 {
                    store.untag(&r).unwrap();
                }
                let mut ingest = store.ingest().unwrap();
                ingest.write_all(&bytes(i + 1, 100_000)).unwrap();
                if i % 3 == 0 {
                    ingest.commit().unwrap();
                } // else dropped: removed
                if !marked {
                    fs_err::write(&arg, b"").unwrap();
                    marked = true;
                }
            }
        }
        ["prune"] => {
            let report = store.prune().unwrap();
            assert!(report.removed.is_empty(), "{report:?}");
        }
        other => panic!("unknown role {other:?}"),
    }
}

// ---- blob sources: layers fetched when read ------------------------------

/// A fetcher that copies from another store (standing in for a registry:
/// kiln-registry's fetcher is tested against a real one), counting calls.
struct CopyFrom {
    store: Store,
    corrupt: bool,
    calls: Mutex<Vec<(Digest, Vec<String>)>>,
}

impl kiln_image::BlobFetcher for CopyFrom {
    fn fetch(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[kiln_image::BlobSource],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.calls.lock().unwrap().push((
            blob.digest.clone(),
            sources
                .iter()
                .map(|s| format!("{}/{}", s.registry, s.repository))
                .collect(),
        ));
        let mut bytes = self.store.read_blob(&blob.digest)?;
        if self.corrupt {
            bytes[0] ^= 1;
        }
        let mut ingest = store.ingest_expected(&blob.digest, Some(blob.size))?;
        ingest.write_all(&bytes)?;
        ingest.commit()?;
        Ok(())
    }
}

/// An image whose layers only a "registry" (another store) has: the store
/// knows where they are, opens them by fetching, verifies and prunes
/// around them.
#[test]
fn a_layer_with_a_known_source_is_fetched_when_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Store::open(dir.path().join("registry")).unwrap();
    let (image, _) = make_image(&registry, "remote", 2, &amd64(), true);
    let store = Store::open(dir.path().join("runner")).unwrap();
    let layers = registry
        .read_document::<kiln_image::document::Manifest>(&image)
        .unwrap()
        .into_value()
        .layers;
    assert_eq!(layers.len(), 2);
    // The documents come over; the layers stay where they are.
    for d in registry.image_blobs(&image).unwrap() {
        if !layers.contains(&d) {
            store
                .write_blob(&registry.read_blob(&d.digest).unwrap())
                .unwrap();
        }
    }
    store
        .update(|w| {
            for d in &layers {
                w.add_blob_source(d, "old.example", "base")?;
                w.add_blob_source(d, "reg.example", "base")?;
                w.add_blob_source(d, "reg.example", "base")?;
            }
            Ok(())
        })
        .unwrap();
    store.tag(&reference("reg.example/base:1"), &image).unwrap();
    let first = &layers[0].digest;
    assert!(!store.contains(first).unwrap());
    assert!(store.available(first).unwrap());
    let known = store.read(|r| r.blob_sources(first)).unwrap().unwrap();
    assert_eq!(known.size, layers[0].size);
    let names: Vec<&str> = known.sources.iter().map(|s| s.registry.as_str()).collect();
    assert_eq!(
        names,
        ["reg.example", "old.example"],
        "newest first, once each"
    );

    // Nothing set to fetch: an error that says where the blob is.
    let err = store.open_blob(first).unwrap_err();
    assert!(matches!(err, StoreError::NotFetched { .. }), "{err}");
    assert!(err.to_string().contains("reg.example/base"), "{err}");
    // Verify counts a remote layer as no problem.
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // A fetcher that brings bad bytes: the ingest refuses them, nothing
    // is left under the digest.
    store.set_fetcher(Arc::new(CopyFrom {
        store: registry.clone(),
        corrupt: true,
        calls: Mutex::default(),
    }));
    let err = store.open_blob(first).unwrap_err();
    assert!(matches!(err, StoreError::Fetch { .. }), "{err}");
    assert!(!store.contains(first).unwrap());

    let fetcher = Arc::new(CopyFrom {
        store: registry.clone(),
        corrupt: false,
        calls: Mutex::default(),
    });
    store.set_fetcher(fetcher.clone());
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut store.open_blob(first).unwrap(), &mut read).unwrap();
    assert_eq!(read, registry.read_blob(first).unwrap());
    store.ensure_blob(&layers[1].digest).unwrap();
    store.ensure_blob(&layers[1].digest).unwrap();
    let calls = fetcher.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "each blob fetched once: {calls:?}");
    assert_eq!(calls[0].1, ["reg.example/base", "old.example/base"]);

    // Prune keeps the sources of what a tag reaches and forgets the rest.
    store
        .update(|w| {
            w.add_blob_source(
                &Descriptor::new(kiln_image::media::OCI_LAYER, Digest::of(b"gone"), 4),
                "reg.example",
                "x",
            )
        })
        .unwrap();
    store.prune().unwrap();
    assert!(
        store
            .read(|r| r.blob_sources(&Digest::of(b"gone")))
            .unwrap()
            .is_none()
    );
    assert!(store.read(|r| r.blob_sources(first)).unwrap().is_some());
}

// ---- a blob read as it downloads -----------------------------------------

/// A fetcher that writes a blob in chunks, each only once the test lets it
/// (a channel per chunk), and reports each write as the registry's does.
/// `restart_after` starts the blob over in a fresh ingest after that many
/// chunks, as a retry from another source does; `corrupt` flips a byte of
/// the last chunk.
struct Stepwise {
    bytes: Vec<u8>,
    chunk: usize,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
    restart_after: Option<usize>,
    corrupt: bool,
}

impl kiln_image::BlobFetcher for Stepwise {
    fn fetch(
        &self,
        _: &Store,
        _: &Descriptor,
        _: &[kiln_image::BlobSource],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        unreachable!("the store follows this fetch")
    }

    fn fetch_following(
        &self,
        store: &Store,
        blob: &Descriptor,
        _: &[kiln_image::BlobSource],
        wrote: &(dyn Fn(&Path, u64) + Send + Sync),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let go = self.go.lock().unwrap();
        let mut ingest = store.ingest_expected(&blob.digest, Some(blob.size))?;
        let chunks: Vec<&[u8]> = self.bytes.chunks(self.chunk).collect();
        let mut i = 0;
        let mut restarted = false;
        while i < chunks.len() {
            go.recv()?;
            let mut chunk = chunks[i].to_vec();
            if self.corrupt && i + 1 == chunks.len() {
                chunk[0] ^= 1;
            }
            ingest.write_all(&chunk)?;
            ingest.flush()?;
            wrote(ingest.path(), ingest.written());
            i += 1;
            if Some(i) == self.restart_after && !restarted {
                restarted = true;
                i = 0;
                ingest = store.ingest_expected(&blob.digest, Some(blob.size))?;
            }
        }
        ingest.commit()?;
        Ok(())
    }
}

/// A store whose only copy of a 1 MiB blob is at a source, fetched by a
/// [`Stepwise`] fetcher; the sender lets its chunks go.
fn stepwise_store(
    dir: &Path,
    restart_after: Option<usize>,
    corrupt: bool,
) -> (Store, Digest, Vec<u8>, std::sync::mpsc::Sender<()>) {
    let store = Store::open(dir).unwrap();
    let bytes = bytes(9, 1 << 20);
    let blob = Descriptor::new(
        kiln_image::media::OCI_LAYER_GZIP,
        Digest::of(&bytes),
        1 << 20,
    );
    store
        .update(|w| w.add_blob_source(&blob, "reg.example", "base"))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    store.set_fetcher(Arc::new(Stepwise {
        bytes: bytes.clone(),
        chunk: 256 << 10,
        go: Mutex::new(rx),
        restart_after,
        corrupt,
    }));
    (store, blob.digest, bytes, tx)
}

#[test]
fn a_blob_being_fetched_is_read_as_it_arrives_and_ends_once_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (store, digest, bytes, go) = stepwise_store(dir.path(), None, false);
    // One chunk let through: its bytes are readable while the other three
    // are not downloaded (a reader that waited for the whole blob would
    // never get them).
    let (got, first) = std::sync::mpsc::channel();
    let opener = store.clone();
    let reader = std::thread::spawn(move || {
        let mut blob = opener.open_blob_following(&digest).unwrap();
        assert!(blob.fetching());
        let mut first = vec![0; 256 << 10];
        blob.read_exact(&mut first).unwrap();
        got.send(first).unwrap();
        blob
    });
    go.send(()).unwrap();
    let first = first
        .recv_timeout(Duration::from_secs(30))
        .expect("the first chunk is read before the others come");
    assert!(first == bytes[..256 << 10]);
    let mut blob = reader.join().unwrap();
    let digest = Digest::of(&bytes);
    assert!(!store.contains(&digest).unwrap());
    for _ in 0..3 {
        go.send(()).unwrap();
    }
    let mut rest = Vec::new();
    blob.read_to_end(&mut rest).unwrap();
    assert!(rest == bytes[256 << 10..]);
    // The end came after the blob was verified and stored.
    assert!(store.contains(&digest).unwrap());
    assert!(!blob.broken());
    drop(blob);
    // Stored now: read from the store, no fetch (its channel is gone).
    drop(go);
    let mut again = Vec::new();
    store
        .open_blob_following(&digest)
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    assert!(again == bytes);
}

#[test]
fn a_fetch_that_fails_verification_fails_the_read_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, digest, _, go) = stepwise_store(dir.path(), None, true);
    let mut blob = store.open_blob_following(&digest).unwrap();
    for _ in 0..3 {
        go.send(()).unwrap();
    }
    let mut read = vec![0; 3 << 18];
    blob.read_exact(&mut read).unwrap();
    // The last chunk is the bad one: its bytes come, and then no end but
    // the fetch's error.
    go.send(()).unwrap();
    let err = blob.read_to_end(&mut read).unwrap_err();
    assert_eq!(read.len(), 1 << 20);
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(chain.contains("was expected"), "{chain}");
    assert!(!blob.broken());
    drop(blob);
    assert!(!store.contains(&digest).unwrap());
    assert!(files_in(&dir.path().join("ingest")).is_empty());
}

#[test]
fn a_fetch_that_starts_over_after_bytes_were_read_breaks_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (store, digest, bytes, go) = stepwise_store(dir.path(), Some(2), false);
    let mut blob = store.open_blob_following(&digest).unwrap();
    go.send(()).unwrap();
    let mut first = vec![0; 256 << 10];
    blob.read_exact(&mut first).unwrap();
    // Two chunks, then the fetch starts over in another file: what was
    // read cannot be vouched for by the new download.
    for _ in 0..6 {
        go.send(()).unwrap();
    }
    let mut rest = Vec::new();
    let err = blob.read_to_end(&mut rest).unwrap_err();
    assert!(err.to_string().contains("started over"), "{err}");
    assert!(blob.broken());
    // Dropping the reader waits for the fetch, which stores the blob for
    // the caller to read again.
    drop(blob);
    let mut again = Vec::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    assert!(again == bytes);
}
