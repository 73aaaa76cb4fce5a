//! COPY and ADD semantics that Docker 26's BuildKit cannot show (see
//! `ops_buildkit.rs`), hostile inputs, downloads and error texts, on real
//! directories. Runs as root (owners, devices).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_build::{self, Chmod, CopyError, CopyOptions, Fetcher, FilterDecision, Owner, SourceItem};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, rel: &str, data: &str, mode: u32) -> PathBuf {
    let p = dir.join(rel);
    fs_err::create_dir_all(p.parent().unwrap()).unwrap();
    fs_err::write(&p, data).unwrap();
    fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    fs_err::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    let md = fs_err::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

fn mtime(p: &Path) -> i64 {
    fs_err::symlink_metadata(p).unwrap().mtime()
}

fn copy(
    sources: &[SourceItem],
    root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<kiln_build::CopyStats, CopyError> {
    kiln_build::copy_sources(sources, root, dest, "/", opts)
}

fn item(ctx: &Path, path: &str) -> SourceItem {
    SourceItem::new(ctx, path).reset_owners()
}

// ---------------------------------------------------------------- tars

/// One raw ustar entry: whatever name and link the test wants, `..`
/// included (the `tar` crate refuses to write those).
struct Raw<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    mode: u32,
    uid: u32,
    gid: u32,
    data: &'a [u8],
}

fn raw(name: &str, kind: u8) -> Raw<'_> {
    Raw {
        name,
        kind,
        link: "",
        mode: if kind == b'5' { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        data: b"",
    }
}

fn tar_bytes(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{:0width$o}\0", v, width = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(e.mode));
        octal(&mut h, 108, 8, u64::from(e.uid));
        octal(&mut h, 116, 8, u64::from(e.gid));
        octal(&mut h, 124, 12, e.data.len() as u64);
        octal(&mut h, 136, 12, 1_500_000_000);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Nothing was written next to the destination root.
fn assert_untouched(sentinel: &Path) {
    let names: Vec<_> = fs_err::read_dir(sentinel)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.is_empty(),
        "written outside the destination: {names:?}"
    );
}

// ---------------------------------------------------------------- ADD archives

#[test]
fn hostile_archive_names_are_refused_and_stay_inside() {
    let work = tmp();
    let outside = work.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    let root = work.path().join("root");
    fs_err::create_dir(&root).unwrap();
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();

    for (i, name) in [
        "../outside/evil",
        "a/../../outside/evil",
        "/../../outside/evil",
    ]
    .iter()
    .enumerate()
    {
        let arc = format!("t{i}.tar");
        fs_err::write(
            ctx.join(&arc),
            tar_bytes(&[Raw {
                data: b"x",
                ..raw(name, b'0')
            }]),
        )
        .unwrap();
        let err = copy(&[item(&ctx, &arc)], &root, "/dest/", &CopyOptions::add()).unwrap_err();
        assert!(
            matches!(err, CopyError::ArchiveEscape { .. }),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains("is outside extraction root"),
            "{err}"
        );
    }
    // A hardlink to a file outside.
    fs_err::write(
        ctx.join("h.tar"),
        tar_bytes(&[Raw {
            link: "../../outside/secret",
            ..raw("h", b'1')
        }]),
    )
    .unwrap();
    let err = copy(&[item(&ctx, "h.tar")], &root, "/dest/", &CopyOptions::add()).unwrap_err();
    assert!(matches!(err, CopyError::ArchiveEscape { .. }), "{err}");
    assert_untouched(&outside);
}

#[test]
fn archive_symlinks_cannot_lead_writes_out() {
    let work = tmp();
    let outside = work.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    let root = work.path().join("root");
    fs_err::create_dir(&root).unwrap();
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();
    let abs_outside = outside.to_str().unwrap().to_owned();
    let tar = tar_bytes(&[
        Raw {
            link: "/",
            ..raw("up", b'2')
        },
        Raw {
            link: "../../../../../../../../..",
            ..raw("rel", b'2')
        },
        Raw {
            link: &abs_outside,
            ..raw("abs", b'2')
        },
        Raw {
            data: b"1",
            ..raw("up/evil1", b'0')
        },
        Raw {
            data: b"2",
            ..raw("rel/evil2", b'0')
        },
        Raw {
            data: b"3",
            ..raw("abs/evil3", b'0')
        },
        Raw {
            link: "up/evil1",
            ..raw("hl", b'1')
        },
    ]);
    fs_err::write(ctx.join("s.tar.gz"), gzip(&tar)).unwrap();
    // A symlink already in the destination, pointing out.
    fs_err::create_dir_all(root.join("dest")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dest/pre")).unwrap();
    let tar2 = tar_bytes(&[Raw {
        data: b"4",
        ..raw("pre/evil4", b'0')
    }]);
    fs_err::write(ctx.join("p.tar"), tar2).unwrap();

    copy(
        &[item(&ctx, "s.tar.gz"), item(&ctx, "p.tar")],
        &root,
        "/dest/",
        &CopyOptions::add(),
    )
    .unwrap();
    assert_untouched(&outside);
    // The writes resolved inside the extraction directory.
    let dest = root.join("dest");
    assert_eq!(fs_err::read_to_string(dest.join("evil1")).unwrap(), "1");
    assert_eq!(fs_err::read_to_string(dest.join("evil2")).unwrap(), "2");
    let inner = dest.join(abs_outside.trim_start_matches('/'));
    assert_eq!(fs_err::read_to_string(inner.join("evil3")).unwrap(), "3");
    assert_eq!(fs_err::read_to_string(inner.join("evil4")).unwrap(), "4");
    assert_eq!(
        fs_err::metadata(dest.join("hl")).unwrap().ino(),
        fs_err::metadata(dest.join("evil1")).unwrap().ino()
    );
}

#[test]
fn add_chown_keeps_archive_owners_and_chmod_does_not_apply() {
    // Docker 26's BuildKit (the conformance reference) keeps the archive's
    // owners under --chown, which only owns the directories made for the
    // destination (newer BuildKit's `mapArchiveHeaderOwner` replaces them).
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::create_dir_all(&root).unwrap();
    let tar = tar_bytes(&[
        Raw {
            uid: 1234,
            gid: 5678,
            mode: 0o700,
            ..raw("d/", b'5')
        },
        Raw {
            uid: 1234,
            gid: 5678,
            mode: 0o4755,
            data: b"x",
            ..raw("d/f", b'0')
        },
    ]);
    fs_err::write(ctx.join("a.tgz"), gzip(&tar)).unwrap();
    let opts = CopyOptions::add()
        .chown(Owner { uid: 9, gid: 10 })
        .chmod(Chmod::parse("600").unwrap());
    let stats = copy(&[item(&ctx, "a.tgz")], &root, "/x", &opts).unwrap();
    assert_eq!(stats.archives, 1);
    assert_eq!(owner(&root.join("x")), (9, 10));
    assert_eq!(mode(&root.join("x")), 0o755);
    assert_eq!(owner(&root.join("x/d")), (1234, 5678));
    assert_eq!(mode(&root.join("x/d")), 0o700);
    assert_eq!(owner(&root.join("x/d/f")), (1234, 5678));
    assert_eq!(mode(&root.join("x/d/f")), 0o4755);
    assert_eq!(mtime(&root.join("x/d/f")), 1_500_000_000);
    assert_eq!(mtime(&root.join("x/d")), 1_500_000_000);

    // Without --chown the archive's owners stay.
    copy(&[item(&ctx, "a.tgz")], &root, "/y/", &CopyOptions::add()).unwrap();
    assert_eq!(owner(&root.join("y/d/f")), (1234, 5678));
}

#[test]
fn unpack_false_and_copy_keep_archives_whole() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::create_dir_all(&root).unwrap();
    let tgz = gzip(&tar_bytes(&[Raw {
        data: b"x",
        ..raw("f", b'0')
    }]));
    fs_err::write(ctx.join("a.tgz"), &tgz).unwrap();
    copy(
        &[item(&ctx, "a.tgz")],
        &root,
        "/n/",
        &CopyOptions::add().unpack(false),
    )
    .unwrap();
    assert_eq!(fs_err::read(root.join("n/a.tgz")).unwrap(), tgz);
    copy(&[item(&ctx, "a.tgz")], &root, "/c/", &CopyOptions::copy()).unwrap();
    assert_eq!(fs_err::read(root.join("c/a.tgz")).unwrap(), tgz);
    // An empty file and a truncated tar are no archives.
    fs_err::write(ctx.join("empty.tar"), b"").unwrap();
    fs_err::write(ctx.join("short.tar"), &tar_bytes(&[raw("f", b'0')])[..100]).unwrap();
    copy(
        &[item(&ctx, "empty.tar"), item(&ctx, "short.tar")],
        &root,
        "/e/",
        &CopyOptions::add(),
    )
    .unwrap();
    assert!(root.join("e/empty.tar").is_file());
    assert!(root.join("e/short.tar").is_file());
}

// ---------------------------------------------------------------- ADD URLs

/// A one-file HTTP server on loopback: `/file.bin` with a Last-Modified,
/// `/` without, anything else 404. Serves connections until the test
/// process ends.
fn http_server(body: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let (status, extra) = match path.as_str() {
                "/dl/file.bin" => ("200 OK", "Last-Modified: Fri, 04 Mar 2022 05:06:07 GMT\r\n"),
                "/" => (
                    "200 OK",
                    "Content-Disposition: attachment; filename=\"cd.bin\"\r\n",
                ),
                _ => ("404 Not Found", ""),
            };
            let body: &[u8] = if status.starts_with("200") { body } else { b"" };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://{addr}")
}

const BODY: &[u8] = b"hello\n";
const BODY_SHA256: &str = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

#[tokio::test]
async fn add_url_with_checksum() {
    let base = http_server(BODY);
    let work = tmp();
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    let fetcher = Fetcher::new().unwrap();

    let url = format!("{base}/dl/file.bin");
    let dl = fetcher
        .fetch(&url, Some(BODY_SHA256), work.path())
        .await
        .unwrap();
    assert_eq!(dl.file_name(), "file.bin");
    assert_eq!(dl.digest(), BODY_SHA256);
    copy(
        &[SourceItem::downloaded(&dl)],
        &root,
        "/url/",
        &CopyOptions::add(),
    )
    .unwrap();
    let f = root.join("url/file.bin");
    assert_eq!(fs_err::read(&f).unwrap(), BODY);
    // BuildKit's HTTP source: 0600, Last-Modified as mtime, root's.
    assert_eq!(mode(&f), 0o600);
    assert_eq!(mtime(&f), 1_646_370_367);
    assert_eq!(owner(&f), (0, 0));
    copy(
        &[SourceItem::downloaded(&dl)],
        &root,
        "/urlfile",
        &CopyOptions::add().chmod(Chmod::parse("644").unwrap()),
    )
    .unwrap();
    assert_eq!(mode(&root.join("urlfile")), 0o644);

    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = fetcher
        .fetch(&url, Some(&wrong), work.path())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("digest mismatch for {url}: {BODY_SHA256} (expected: {wrong})")
    );

    // No path segment: __unnamed__ (Content-Disposition is not read), mtime 0.
    let dl = fetcher
        .fetch(&format!("{base}/"), None, work.path())
        .await
        .unwrap();
    assert_eq!(dl.file_name(), "__unnamed__");
    assert_eq!(mtime(&dl.path()), 0);

    let err = fetcher
        .fetch(&format!("{base}/missing"), None, work.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with("invalid response status 404"),
        "{err}"
    );
    let err = fetcher
        .fetch(&url, Some("md5:abc"), work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::InvalidChecksum { .. }), "{err}");
    // Nothing is left behind by failed downloads but the successful ones.
    let left: Vec<_> = fs_err::read_dir(work.path()).unwrap().collect();
    assert_eq!(left.len(), 3, "{left:?}");
}

#[tokio::test]
async fn downloads_unpack_only_when_asked() {
    static TGZ: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let tgz = TGZ.get_or_init(|| {
        gzip(&tar_bytes(&[Raw {
            data: b"x",
            ..raw("inside", b'0')
        }]))
    });
    let base = http_server(tgz);
    let work = tmp();
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    let dl = Fetcher::new()
        .unwrap()
        .fetch(&format!("{base}/dl/file.bin"), None, work.path())
        .await
        .unwrap();
    copy(
        &[SourceItem::downloaded(&dl)],
        &root,
        "/a/",
        &CopyOptions::add(),
    )
    .unwrap();
    assert!(root.join("a/file.bin").is_file());
    copy(
        &[SourceItem::downloaded(&dl)],
        &root,
        "/b/",
        &CopyOptions::add().unpack(true),
    )
    .unwrap();
    assert!(root.join("b/inside").is_file());
}

// ---------------------------------------------------------------- COPY

#[test]
fn chown_by_name_from_the_destination_passwd() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    write(&ctx, "a.txt", "a", 0o644);
    write(
        &root,
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        0o644,
    );
    write(
        &root,
        "etc/group",
        "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        0o644,
    );
    for (spec, want) in [
        ("app", (1000, 1001)),
        ("app:staff", (1000, 50)),
        ("1000", (1000, 1000)),
        ("7:staff", (7, 50)),
    ] {
        let o = kiln_build::resolve_chown(&root, spec).unwrap();
        let dest = format!("/{}/deep/f", spec.replace(':', "_"));
        copy(
            &[item(&ctx, "a.txt")],
            &root,
            &dest,
            &CopyOptions::copy().chown(o),
        )
        .unwrap();
        let f = root.join(dest.trim_start_matches('/'));
        assert_eq!(owner(&f), want, "{spec}");
        // Created parents get the owner too (fsutil's MkdirAll chowner).
        assert_eq!(owner(f.parent().unwrap()), want, "{spec}");
    }
    // As in BuildKit: a name /etc/passwd lacks is root, a group
    // /etc/group lacks keeps the user's; without the file it is an error.
    assert_eq!(
        kiln_build::resolve_chown(&root, "nobody").unwrap(),
        Owner { uid: 0, gid: 0 }
    );
    assert_eq!(
        kiln_build::resolve_chown(&root, "app:nogroup").unwrap(),
        Owner {
            uid: 1000,
            gid: 1001
        }
    );
    let bare = tmp();
    let err = kiln_build::resolve_chown(bare.path(), "nobody").unwrap_err();
    assert_eq!(err.to_string(), "invalid --chown=nobody");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("unable to find user nobody")
    );
}

#[test]
fn symbolic_chmod_applies_to_files_and_directories() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "dir/f", "f", 0o640);
    write(&ctx, "dir/x", "x", 0o750);
    fs_err::set_permissions(ctx.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    fs_err::create_dir(ctx.join("dir/sub")).unwrap();
    fs_err::set_permissions(ctx.join("dir/sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let opts = CopyOptions::copy().chmod(Chmod::parse("go+rX,u-w").unwrap());
    copy(&[item(&ctx, "dir")], &root, "/d", &opts).unwrap();
    assert_eq!(
        mode(&root.join("d")),
        0o755,
        "the destination directory keeps its mode"
    );
    assert_eq!(mode(&root.join("d/f")), 0o444);
    assert_eq!(mode(&root.join("d/x")), 0o555);
    assert_eq!(mode(&root.join("d/sub")), 0o555);
    let heredoc = SourceItem::inline("EOF", "x");
    copy(
        &[heredoc],
        &root,
        "/h",
        &CopyOptions::copy().chmod(Chmod::parse("a+x").unwrap()),
    )
    .unwrap();
    assert_eq!(mode(&root.join("h")), 0o755);
}

#[test]
fn error_texts() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "a.txt", "a", 0o644);
    write(&ctx, "b.txt", "b", 0o644);
    let two = [item(&ctx, "a.txt"), item(&ctx, "b.txt")];
    let err = copy(&two, &root, "/file", &CopyOptions::copy()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    let err = copy(&two, &root, "/file", &CopyOptions::add()).unwrap_err();
    assert!(err.to_string().starts_with("When using ADD with"));
    // An existing directory is a directory destination (BuildKit copies
    // `COPY a b .` into WORKDIR).
    fs_err::create_dir(root.join("dir")).unwrap();
    copy(&two, &root, "/dir", &CopyOptions::copy()).unwrap();
    kiln_build::copy_sources(&two, &root, ".", "/dir", &CopyOptions::copy()).unwrap();
    assert!(root.join("dir/b.txt").is_file());

    assert_eq!(
        Chmod::parse("64a").unwrap_err().to_string(),
        "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
    );
    assert_eq!(
        Chmod::parse("10000").unwrap_err().to_string(),
        "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"
    );
    let err = copy(&[item(&ctx, "missing")], &root, "/x", &CopyOptions::copy()).unwrap_err();
    assert!(matches!(err, CopyError::SourceNotFound { .. }), "{err}");
    assert!(err.to_string().contains("\"/missing\" not found"), "{err}");
    // A file cannot become a directory's contents.
    write(&root, "plain", "p", 0o644);
    fs_err::create_dir(ctx.join("d")).unwrap();
    let err = copy(&[item(&ctx, "d")], &root, "/plain", &CopyOptions::copy()).unwrap_err();
    assert_eq!(err.to_string(), "cannot copy to non-directory: /plain");
}

#[test]
fn copying_onto_existing_entries() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    let outside = work.path().join("outside");
    fs_err::create_dir_all(&outside).unwrap();
    write(&ctx, "a.txt", "new", 0o600);
    write(&root, "f", "old", 0o644);
    copy(&[item(&ctx, "a.txt")], &root, "/f", &CopyOptions::copy()).unwrap();
    assert_eq!(fs_err::read_to_string(root.join("f")).unwrap(), "new");
    assert_eq!(mode(&root.join("f")), 0o600);
    // A symlink at the destination resolves inside the root, even when it
    // points out of it.
    std::os::unix::fs::symlink(outside.join("x"), root.join("out")).unwrap();
    copy(&[item(&ctx, "a.txt")], &root, "/out", &CopyOptions::copy()).unwrap();
    assert_untouched(&outside);
    let inside = root.join(outside.join("x").to_str().unwrap().trim_start_matches('/'));
    assert_eq!(fs_err::read_to_string(inside).unwrap(), "new");
    // Below a copied directory, a symlink in the way is replaced, never
    // followed.
    write(&ctx, "tree/link", "data", 0o644);
    fs_err::create_dir_all(root.join("t")).unwrap();
    std::os::unix::fs::symlink(outside.join("y"), root.join("t/link")).unwrap();
    copy(&[item(&ctx, "tree")], &root, "/t", &CopyOptions::copy()).unwrap();
    assert!(root.join("t/link").is_file() && !root.join("t/link").is_symlink());
    assert_untouched(&outside);
}

#[test]
fn source_symlinks_resolve_inside_their_tree() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&work.path().join("secret"), "s", "secret", 0o600);
    write(&ctx, "etc/passwd", "inside", 0o644);
    fs_err::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink("../secret/s", ctx.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("abs")).unwrap();
    let err = copy(&[item(&ctx, "up")], &root, "/up", &CopyOptions::copy()).unwrap_err();
    assert!(matches!(err, CopyError::SourceNotFound { .. }), "{err}");
    copy(&[item(&ctx, "abs")], &root, "/abs", &CopyOptions::copy()).unwrap();
    assert_eq!(fs_err::read_to_string(root.join("abs")).unwrap(), "inside");
}

#[test]
fn parents_keep_the_path_below_the_pivot() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "a/b/c/d.txt", "d", 0o640);
    write(&ctx, "a/b/e.txt", "e", 0o644);
    write(&ctx, "x/pkg.json", "1", 0o644);
    write(&ctx, "y/pkg.json", "2", 0o644);
    write(&ctx, "y/other", "3", 0o644);
    fs_err::set_permissions(ctx.join("a/b/c"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let old = 1_500_000_000;
    for d in ["a", "a/b", "a/b/c"] {
        let f = fs_err::File::open(ctx.join(d)).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(old);
        f.file()
            .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    // COPY --parents a/b/c/d.txt /p/ : the whole path.
    let items = kiln_build::expand_source(&ctx, "a/b/c/d.txt", true).unwrap();
    copy(&items, &root, "/p/", &CopyOptions::copy()).unwrap();
    assert_eq!(
        fs_err::read_to_string(root.join("p/a/b/c/d.txt")).unwrap(),
        "d"
    );
    assert!(!root.join("p/a/b/e.txt").exists());
    // Created parents are copies of the source's directories.
    assert_eq!(mode(&root.join("p/a/b/c")), 0o750);
    assert_eq!(mtime(&root.join("p/a/b/c")), old as i64);

    // COPY --parents a/./b/c/d.txt /q/ : the path below the pivot.
    let items = kiln_build::expand_source(&ctx, "a/./b/c/d.txt", true).unwrap();
    copy(&items, &root, "/q/", &CopyOptions::copy()).unwrap();
    assert!(root.join("q/b/c/d.txt").is_file());
    assert!(!root.join("q/a").exists());

    // COPY --parents */pkg.json /app/
    let items = kiln_build::expand_source(&ctx, "*/pkg.json", true).unwrap();
    assert_eq!(items.len(), 2);
    copy(&items, &root, "/app/", &CopyOptions::copy()).unwrap();
    assert_eq!(
        fs_err::read_to_string(root.join("app/x/pkg.json")).unwrap(),
        "1"
    );
    assert_eq!(
        fs_err::read_to_string(root.join("app/y/pkg.json")).unwrap(),
        "2"
    );
    assert!(!root.join("app/y/other").exists());

    // A directory keeps its name and contents.
    let items = kiln_build::expand_source(&ctx, "a/b", true).unwrap();
    copy(&items, &root, "/dirp", &CopyOptions::copy()).unwrap();
    assert!(root.join("dirp/a/b/c/d.txt").is_file());
    assert!(root.join("dirp/a/b/e.txt").is_file());
}

#[test]
fn filters_exclude_and_descend() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "src/a.rs", "a", 0o644);
    write(&ctx, "src/a.log", "l", 0o644);
    write(&ctx, "target/debug/x", "x", 0o644);
    write(&ctx, "logs/keep/k.log", "k", 0o644);
    write(&ctx, "logs/drop.log", "d", 0o644);
    fs_err::create_dir_all(ctx.join("logs/empty")).unwrap();
    // --exclude=*.log --exclude=target, with !logs/keep brought back: the
    // kind of filter a .dockerignore makes.
    let filter = Arc::new(|rel: &Path, is_dir: bool| {
        let s = rel.to_str().unwrap();
        if s == "target" {
            FilterDecision::Exclude
        } else if s.starts_with("logs/keep") {
            FilterDecision::Include
        } else if s == "logs" && is_dir {
            FilterDecision::Descend
        } else if s.starts_with("logs/") || s.ends_with(".log") {
            FilterDecision::Exclude
        } else {
            FilterDecision::Include
        }
    });
    let src = item(&ctx, "").with_filter(filter);
    copy(&[src], &root, "/out/", &CopyOptions::copy()).unwrap();
    let mut found: Vec<String> = Vec::new();
    for e in walk(&root.join("out")) {
        found.push(
            e.strip_prefix(root.join("out"))
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    found.sort();
    assert_eq!(
        found,
        ["logs", "logs/keep", "logs/keep/k.log", "src", "src/a.rs"]
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn xattrs_devices_and_hardlinks() {
    let work = tmp();
    let stage = work.path().join("stage");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    let f = write(&stage, "t/f", "f", 0o644);
    rustix::fs::setxattr(&f, "user.kiln", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(
        &f,
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        stage.join("t/null").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    fs_err::hard_link(&f, stage.join("t/f2")).unwrap();
    // A link whose other name is outside the copied tree: a plain file.
    fs_err::hard_link(&f, stage.join("elsewhere")).unwrap();
    std::os::unix::fs::chown(stage.join("t/null"), Some(42), Some(43)).unwrap();

    let stats = copy(
        &[SourceItem::new(&stage, "t")],
        &root,
        "/t",
        &CopyOptions::copy(),
    )
    .unwrap();
    assert_eq!(
        (stats.files, stats.hardlinks, stats.devices),
        (1, 1, 1),
        "{stats:?}"
    );
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(root.join("t/f").as_path(), "user.kiln", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    assert!(
        rustix::fs::getxattr(
            root.join("t/f").as_path(),
            "trusted.overlay.opaque",
            &mut buf[..]
        )
        .is_err()
    );
    let md = fs_err::symlink_metadata(root.join("t/null")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(
        (md.uid(), md.gid()),
        (42, 43),
        "owners of a stage's files are kept"
    );
    assert_eq!(
        fs_err::metadata(root.join("t/f")).unwrap().ino(),
        fs_err::metadata(root.join("t/f2")).unwrap().ino()
    );
    assert_eq!(fs_err::metadata(root.join("t/f")).unwrap().nlink(), 2);
}

#[test]
fn created_time_sets_every_time() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "d/f", "f", 0o644);
    std::os::unix::fs::symlink("f", ctx.join("d/l")).unwrap();
    let epoch = UNIX_EPOCH + Duration::from_secs(1_234_567_890);
    let opts = CopyOptions::copy().created_time(epoch);
    // The directory last: copying a file into it afterwards would change
    // its mtime, in BuildKit as here.
    copy(
        &[SourceItem::inline("EOF", "x"), item(&ctx, "d")],
        &root,
        "/new/dir/",
        &opts,
    )
    .unwrap();
    // ("new" too is created with that time, but creating "new/dir" in it
    // then changes it, in BuildKit's MkdirAll as here.)
    for p in ["new/dir", "new/dir/f", "new/dir/l", "new/dir/EOF"] {
        assert_eq!(mtime(&root.join(p)), 1_234_567_890, "{p}");
    }
    // Without it, a heredoc is written now.
    copy(
        &[SourceItem::inline("NOW", "x")],
        &root,
        "/",
        &CopyOptions::copy(),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(mtime(&root.join("NOW")) >= now - 60);
    assert_eq!(mode(&root.join("NOW")), 0o644);
}

#[test]
fn empty_wildcards_copy_nothing() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    write(&ctx, "a.txt", "a", 0o644);
    let items = kiln_build::expand_source(&ctx, "*.none", false).unwrap();
    assert!(items.is_empty());
    let stats = copy(&items, &root, "/x/", &CopyOptions::copy()).unwrap();
    assert_eq!(stats, kiln_build::CopyStats::default());
    assert!(!root.join("x").exists());
    let err = kiln_build::expand_source(&ctx, "nodir/*.txt", false).unwrap_err();
    assert!(matches!(err, CopyError::SourceNotFound { .. }), "{err}");
}

// ------------------------------------------- Docker 26 compatibility

#[test]
fn archive_directory_entries_replace_a_symlink_and_empty_owner_fields_are_root() {
    // testDockerfileAddArchiveThroughAbsoluteSymlink: Docker 26's untar
    // replaces `bin -> /usr/bin` with the archive's `bin/` directory. The
    // tar crate's GNU headers leave uid/gid as NULs: Go reads 0.
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [("bin/", &b""[..]), ("bin/tool", &b"tool"[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    fs_err::write(ctx.join("payload.tar"), b.into_inner().unwrap()).unwrap();
    copy(
        &[item(&ctx, "payload.tar")],
        &root,
        "/",
        &CopyOptions::add(),
    )
    .unwrap();
    assert!(fs_err::symlink_metadata(root.join("bin")).unwrap().is_dir());
    assert_eq!(
        fs_err::read_to_string(root.join("bin/tool")).unwrap(),
        "tool"
    );
    assert!(!root.join("usr/bin/tool").exists());
    assert_eq!(owner(&root.join("bin/tool")), (0, 0));
}

#[test]
fn several_archives_unpack_into_a_destination_without_a_slash() {
    // `ADD *.tar /dest`: every archive unpacks into /dest (BuildKit); a
    // plain file among several sources still needs a directory.
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(
        ctx.join("a.tar"),
        tar_bytes(&[Raw {
            data: b"a",
            ..raw("a.txt", b'0')
        }]),
    )
    .unwrap();
    fs_err::write(
        ctx.join("b.tar"),
        tar_bytes(&[Raw {
            data: b"b",
            ..raw("b.txt", b'0')
        }]),
    )
    .unwrap();
    write(&ctx, "plain.txt", "p", 0o644);
    let sources = [item(&ctx, "a.tar"), item(&ctx, "b.tar")];
    copy(&sources, &root, "/dest", &CopyOptions::add()).unwrap();
    assert_eq!(
        fs_err::read_to_string(root.join("dest/a.txt")).unwrap(),
        "a"
    );
    assert_eq!(
        fs_err::read_to_string(root.join("dest/b.txt")).unwrap(),
        "b"
    );
    let mixed = [item(&ctx, "a.tar"), item(&ctx, "plain.txt")];
    let err = copy(&mixed, &root, "/other", &CopyOptions::add()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the destination must be a directory and end with a /"),
        "{err}"
    );
    // COPY never unpacks: two archives are two files.
    let err = copy(&sources, &root, "/copied", &CopyOptions::copy()).unwrap_err();
    assert!(err.to_string().contains("When using COPY"), "{err}");
}

#[test]
fn a_context_socket_becomes_an_empty_file() {
    let work = tmp();
    let ctx = work.path().join("ctx");
    let root = work.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    fs_err::create_dir_all(&ctx).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(ctx.join("s.sock")).unwrap();
    fs_err::set_permissions(ctx.join("s.sock"), std::fs::Permissions::from_mode(0o755)).unwrap();
    copy(&[item(&ctx, ".")], &root, "/", &CopyOptions::copy()).unwrap();
    let meta = fs_err::symlink_metadata(root.join("s.sock")).unwrap();
    assert!(meta.is_file());
    assert_eq!((meta.len(), meta.mode() & 0o7777), (0, 0o755));
}
