//! Content digests of COPY sources, and the memo that keeps an unchanged
//! context from being read again: counted through the memo's stats, across
//! memo instances and across processes sharing a store.

mod context_support;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use context_support::{Tree, age, memo, set_mtime, sources};
use kiln_build::{BuildContext, CONTEXT_DIGEST_VERSION, ContextError, HashMemo, Selection};
use kiln_image::{Digest, Store};
use kiln_testkit::need::{Root, need};
use sha2::Digest as _;

fn digest(t: &Tree, s: &[&str]) -> Digest {
    t.open().digest(&sources(s), &[], &memo()).unwrap()
}

// ---- what the digest covers ---------------------------------------------

#[test]
fn the_same_tree_has_the_same_digest() {
    let build = |t: &Tree| {
        t.file("src/a.txt", "alpha")
            .file("src/b/c.txt", "gamma")
            .symlink("src/l", "a.txt")
            .chmod("src", 0o755)
            .chmod("src/b", 0o750);
    };
    let (one, two) = (Tree::new(), Tree::new());
    build(&one);
    build(&two);
    assert_eq!(digest(&one, &["src"]), digest(&two, &["src"]));
    assert_eq!(digest(&one, &["src"]), digest(&one, &["src"]));
}

#[test]
fn timestamps_do_not_change_the_digest() {
    let t = Tree::new();
    t.file("src/a.txt", "alpha").file("src/b.txt", "beta");
    let before = digest(&t, &["src"]);
    set_mtime(&t.path("src/a.txt"), 1_000_000_000, 5);
    set_mtime(&t.path("src"), 1_000_000_000, 0);
    assert_eq!(digest(&t, &["src"]), before);
}

#[test]
fn owners_do_not_change_the_digest() {
    // COPY gives files to root or --chown: their owner in the context
    // does not matter.
    if need(Root).is_none() {
        return;
    }
    let t = Tree::new();
    t.file("src/a.txt", "alpha").file("src/b.txt", "beta");
    let before = digest(&t, &["src"]);
    std::os::unix::fs::lchown(t.path("src/b.txt"), Some(4242), Some(4242)).unwrap();
    assert_eq!(digest(&t, &["src"]), before);
}

#[test]
fn what_copy_carries_changes_the_digest() {
    let t = Tree::new();
    t.file("src/a.txt", "alpha")
        .file("src/b.txt", "beta")
        .symlink("src/l", "a.txt");
    let base = digest(&t, &["src"]);
    let mut seen = vec![base.clone()];
    let mut changed = |what: &str| {
        let d = digest(&t, &["src"]);
        assert!(!seen.contains(&d), "{what} did not change the digest");
        seen.push(d);
    };
    t.file("src/a.txt", "alphA");
    changed("content");
    t.chmod("src/a.txt", 0o600);
    changed("mode");
    t.chmod("src/a.txt", 0o4600);
    changed("setuid");
    fs_err::rename(t.path("src/b.txt"), t.path("src/c.txt")).unwrap();
    changed("rename");
    fs_err::remove_file(t.path("src/l")).unwrap();
    t.symlink("src/l", "c.txt");
    changed("symlink target");
    t.dir("src/empty");
    changed("empty directory");
    t.chmod("src", 0o700);
    changed("mode of the source directory");
    let xattr = rustix::fs::lsetxattr(
        t.path("src/c.txt"),
        "user.kiln.test",
        b"1",
        rustix::fs::XattrFlags::empty(),
    );
    if xattr.is_ok() {
        changed("xattr");
    }
    // The sources as given are part of what is described.
    assert_ne!(digest(&t, &["src"]), digest(&t, &["./src"]));
}

#[test]
fn ignored_and_excluded_files_do_not_change_the_digest() {
    let t = Tree::new();
    t.file("src/main.rs", "fn main() {}")
        .file("src/debug.log", "1")
        .file("src/notes.md", "n")
        .ignore("**/*.log\n");
    let ctx = t.open();
    let m = memo();
    let excludes = sources(&["*.md"]);
    let d = |ctx: &BuildContext| ctx.digest(&sources(&["src"]), &excludes, &m).unwrap();
    let before = d(&ctx);
    t.file("src/debug.log", "2")
        .file("src/more.log", "3")
        .file("src/notes.md", "changed");
    assert_eq!(d(&ctx), before);
    // Exclude patterns are part of the description, and an included
    // change shows.
    assert_ne!(ctx.digest(&sources(&["src"]), &[], &m).unwrap(), before);
    t.file("src/main.rs", "fn main() { }");
    assert_ne!(d(&ctx), before);
}

#[test]
fn parents_and_wildcards_are_described_by_what_they_select() {
    let t = Tree::new();
    t.file("a/b/x.txt", "x")
        .file("a/c/y.txt", "y")
        .file("a/c/z.md", "z");
    let ctx = t.open();
    let m = memo();
    let d = |sel: Selection| ctx.digest_selection(&sel, &m).unwrap();
    let txt = d(Selection::new(["a/./*/*.txt"]).parents(true));
    t.file("a/c/z.md", "changed");
    assert_eq!(d(Selection::new(["a/./*/*.txt"]).parents(true)), txt);
    t.file("a/c/y.txt", "changed");
    assert_ne!(d(Selection::new(["a/./*/*.txt"]).parents(true)), txt);
    // A wildcard that matches nothing has a digest all the same.
    let empty = d(Selection::new(["*.none"]));
    assert_eq!(d(Selection::new(["*.none"])), empty);
}

/// The documented encoding, written out independently: a change to the
/// format must change this test too (and bump the version).
#[test]
fn the_digest_follows_the_documented_encoding() {
    let t = Tree::new();
    t.file("src/a.txt", "hello\n")
        .file("src/bin/run", "#!/bin/sh\n")
        .chmod("src/bin/run", 0o755)
        .chmod("src/bin", 0o755)
        .chmod("src", 0o755)
        .symlink("src/link", "a.txt");

    let mut e = Vec::new();
    let bytes = |e: &mut Vec<u8>, b: &[u8]| {
        e.extend_from_slice(&(b.len() as u64).to_be_bytes());
        e.extend_from_slice(b);
    };
    e.extend_from_slice(b"kiln-context-digest\0");
    e.extend_from_slice(&1u32.to_be_bytes());
    e.push(0); // no --parents
    e.extend_from_slice(&0u32.to_be_bytes()); // no excludes
    e.extend_from_slice(&1u32.to_be_bytes()); // one source
    bytes(&mut e, b"src");
    e.extend_from_slice(&1u32.to_be_bytes()); // naming one entry
    bytes(&mut e, b"src");
    let mut entry = |rel: &[u8], kind: u8, mode: u32, body: &[u8]| {
        e.push(1);
        bytes(&mut e, rel);
        e.push(kind);
        e.extend_from_slice(&mode.to_be_bytes());
        e.extend_from_slice(body);
        e.extend_from_slice(&0u32.to_be_bytes()); // no xattrs
    };
    let file = |content: &[u8]| {
        let mut b = (content.len() as u64).to_be_bytes().to_vec();
        b.extend_from_slice(&sha2::Sha256::digest(content));
        b
    };
    let mut link = 5u64.to_be_bytes().to_vec();
    link.extend_from_slice(b"a.txt");
    entry(b"", 2, 0o755, b"");
    entry(b"a.txt", 1, 0o644, &file(b"hello\n"));
    entry(b"bin", 2, 0o755, b"");
    entry(b"bin/run", 1, 0o755, &file(b"#!/bin/sh\n"));
    entry(b"link", 3, 0o777, &link);
    e.push(0);

    let want = Digest::of(&e);
    assert_eq!(CONTEXT_DIGEST_VERSION, 1);
    assert_eq!(digest(&t, &["src"]), want);
    assert_eq!(
        want.to_string(),
        "sha256:e72c2ad6ad22380b7a497badd783ece90df3c60d354f785f7987c8c9ec5c4c02"
    );
}

// ---- the memo --------------------------------------------------------------

/// 2,000 files in 20 directories, and the Dockerfile.
fn big_tree() -> Tree {
    let t = Tree::new();
    for d in 0..20 {
        for f in 0..100 {
            t.file(&format!("d{d:02}/f{f:03}.txt"), format!("file {d} {f}\n"));
        }
    }
    t
}

const FILES: u64 = 2001;

#[test]
fn an_unchanged_tree_is_not_read_again() {
    let t = big_tree();
    let root = tempfile::tempdir().unwrap();
    age();
    let ctx = t.open();
    let everything = sources(&["."]);

    let m =
        HashMemo::new(Store::open(root.path()).unwrap()).with_racy_window(context_support::WINDOW);
    let first = ctx.digest(&everything, &[], &m).unwrap();
    let s = m.stats();
    assert_eq!(s.files_hashed, FILES);
    assert_eq!(s.memo_hits(), 0);
    assert!(s.bytes_read > 0);
    let count = Store::open(root.path())
        .unwrap()
        .read(|r| r.context_hash_count())
        .unwrap();
    assert_eq!(count, FILES);

    // The same build: the in-memory layer answers.
    let again = ctx.digest(&everything, &[], &m).unwrap();
    let s = m.stats() - s;
    assert_eq!(again, first);
    assert_eq!((s.files_hashed, s.bytes_read, s.read_calls), (0, 0, 0));
    assert_eq!(s.memory_hits, FILES);
    assert_eq!(s.entries_walked, FILES + 21);

    // The next build: a new memo on the same store.
    let m =
        HashMemo::new(Store::open(root.path()).unwrap()).with_racy_window(context_support::WINDOW);
    let next = t.open().digest(&everything, &[], &m).unwrap();
    let s = m.stats();
    assert_eq!(next, first);
    assert_eq!((s.files_hashed, s.bytes_read, s.read_calls), (0, 0, 0));
    assert_eq!(s.store_hits, FILES);

    // Another process.
    let child = child_digest(t.root(), root.path());
    assert_eq!(child.digest, first.to_string());
    assert_eq!((child.hashed, child.bytes, child.reads), (0, 0, 0));
    assert_eq!(child.store_hits, FILES);
}

#[test]
fn a_changed_file_is_the_only_one_read_again() {
    let t = big_tree();
    age();
    let ctx = t.open();
    let m = memo();
    let everything = sources(&["."]);
    let first = ctx.digest(&everything, &[], &m).unwrap();
    let before = m.stats();

    t.file("d07/f042.txt", "a longer replacement\n");
    age();
    let second = ctx.digest(&everything, &[], &m).unwrap();
    let s = m.stats() - before;
    assert_ne!(second, first);
    assert_eq!(s.files_hashed, 1);
    assert_eq!(s.bytes_read, "a longer replacement\n".len() as u64);
    assert_eq!(s.memory_hits, FILES - 1);

    // A touch re-reads the file, and finds the same content.
    let before = m.stats();
    set_mtime(&t.path("d03/f001.txt"), 1_500_000_000, 0);
    age();
    assert_eq!(ctx.digest(&everything, &[], &m).unwrap(), second);
    assert_eq!((m.stats() - before).files_hashed, 1);
}

/// Same size, mtime put back (as `tar x` or `touch -d` would): only the
/// ctime shows the change, and the memo checks it.
#[test]
fn a_same_size_change_with_its_mtime_restored_is_read_again() {
    let t = Tree::new();
    t.file("src/config", "debug=0\n");
    age();
    let ctx = t.open();
    let m = memo();
    let first = ctx.digest(&sources(&["src"]), &[], &m).unwrap();
    let remembered = m.stats();
    assert_eq!(ctx.digest(&sources(&["src"]), &[], &m).unwrap(), first);
    assert_eq!(
        (m.stats() - remembered).files_hashed,
        0,
        "the hash was remembered"
    );

    let path = t.path("src/config");
    let old = fs_err::metadata(&path).unwrap();
    fs_err::write(&path, "debug=1\n").unwrap();
    set_mtime(&path, old.mtime(), old.mtime_nsec());
    let new = fs_err::metadata(&path).unwrap();
    assert_eq!(
        (new.ino(), new.size(), new.mtime(), new.mtime_nsec()),
        (old.ino(), old.size(), old.mtime(), old.mtime_nsec())
    );
    age();
    let before = m.stats();
    assert_ne!(ctx.digest(&sources(&["src"]), &[], &m).unwrap(), first);
    assert_eq!((m.stats() - before).files_hashed, 1);
}

/// With the default racy window, a file written a moment ago is hashed
/// every time: its ctime could still stay put through a rewrite.
#[test]
fn a_file_changed_a_moment_ago_is_not_remembered() {
    let t = Tree::new();
    t.file("fresh", "new");
    let ctx = t.open();
    let m = HashMemo::in_memory();
    ctx.digest(&sources(&["fresh"]), &[], &m).unwrap();
    ctx.digest(&sources(&["fresh"]), &[], &m).unwrap();
    let s = m.stats();
    assert_eq!((s.files_hashed, s.memo_hits()), (2, 0));
}

#[test]
fn hard_linked_files_are_read_once() {
    let t = Tree::new();
    t.file("src/a", "shared content");
    fs_err::hard_link(t.path("src/a"), t.path("src/b")).unwrap();
    let m = HashMemo::in_memory();
    t.open()
        .digest(&sources(&["src", "src/a", "src/*"]), &[], &m)
        .unwrap();
    let s = m.stats();
    assert_eq!(s.files_hashed, 1);
    assert_eq!(s.bytes_read, "shared content".len() as u64);
}

#[test]
fn excluded_directories_are_not_walked() {
    let t = Tree::new();
    for i in 0..200 {
        t.file(&format!("node_modules/p{i}/index.js"), "x");
    }
    t.file("app.js", "a").ignore("node_modules\n");
    let m = HashMemo::in_memory();
    t.open().digest(&sources(&["."]), &[], &m).unwrap();
    // The root, Dockerfile, .dockerignore, app.js and node_modules itself.
    assert_eq!(m.stats().entries_walked, 5);

    // An exception below it makes it searched, as BuildKit must.
    t.ignore("node_modules\n!node_modules/p7\n");
    let m = HashMemo::in_memory();
    let ctx = t.open();
    ctx.digest(&sources(&["."]), &[], &m).unwrap();
    assert_eq!(m.stats().entries_walked, 5 + 200 + 1);
    // Dockerfile, .dockerignore, app.js and node_modules/p7/index.js.
    assert_eq!(m.stats().files_hashed, 4);

    // --exclude prunes the same way.
    let m = HashMemo::in_memory();
    t.ignore("");
    t.open()
        .digest(&sources(&["."]), &sources(&["node_modules"]), &m)
        .unwrap();
    assert_eq!(m.stats().entries_walked, 5);
}

// ---- another process -------------------------------------------------------

const CHILD: &str = "KILN_CONTEXT_TEST_CHILD";

struct ChildStats {
    digest: String,
    hashed: u64,
    bytes: u64,
    reads: u64,
    store_hits: u64,
}

#[test]
fn a_stopped_digest_ends_at_once_and_keeps_the_batches_it_finished() {
    // 3,000 small files, then an 8 GiB one (sparse: nothing on disk, but
    // read whole as any file). The stop flag is set while the big one is
    // read: the digest ends with `Stopped` long before its end, and the
    // hashes of the first batch of files (2,048 entries, all small) are
    // in the store for the next build.
    let t = Tree::new();
    for i in 0..3000 {
        t.file(&format!("a/f{i:04}"), format!("small {i}\n"));
    }
    t.dir("z");
    fs_err::File::create(t.path("z/big.bin"))
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    age();
    let stop = Arc::new(AtomicBool::new(false));
    let m = HashMemo::new(Store::open(root.path()).unwrap())
        .with_racy_window(context_support::WINDOW)
        .stopping_on(Arc::clone(&stop));
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) && m.stats().bytes_read < 64 << 20 {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::SeqCst);
        });
        let result = t.open().digest(&sources(&["."]), &[], &m);
        // The watcher ends, whatever the digest did.
        stop.store(true, Ordering::SeqCst);
        result
    });
    assert!(matches!(result, Err(ContextError::Stopped)), "{result:?}");
    let read = m.stats().bytes_read;
    assert!(read < 4 << 30, "{read} bytes read");
    let kept = Store::open(root.path())
        .unwrap()
        .read(|r| r.context_hash_count())
        .unwrap();
    assert!((2000..3000).contains(&kept), "{kept} hashes kept");
}

/// Runs [`child_process_entry`] in a new process of this test binary.
fn child_digest(context: &std::path::Path, store: &std::path::Path) -> ChildStats {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{}\n{}", context.display(), store.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The test harness prints the test's name on the same line.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"));
    let fields: Vec<&str> = line.split(' ').collect();
    let num = |i: usize| fields[i].parse::<u64>().unwrap();
    ChildStats {
        digest: fields[0].to_owned(),
        hashed: num(1),
        bytes: num(2),
        reads: num(3),
        store_hits: num(4),
    }
}

/// Not a test on its own: computes a digest when run by [`child_digest`].
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (context, store) = spec.split_once('\n').unwrap();
    let context = std::path::Path::new(context);
    let ctx = BuildContext::open(context, &context.join("Dockerfile")).unwrap();
    let m = HashMemo::new(Store::open(store).unwrap());
    let d = ctx.digest(&sources(&["."]), &[], &m).unwrap();
    let s = m.stats();
    println!(
        "CHILD {d} {} {} {} {}",
        s.files_hashed, s.bytes_read, s.read_calls, s.store_hits
    );
}
