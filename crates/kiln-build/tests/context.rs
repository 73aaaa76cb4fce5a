//! The build context as COPY/ADD sees it: ignore files, source resolution
//! (wildcards, cleaning, symlinks), walks with `--exclude` and `--parents`.
//! Real directories on disk; BuildKit's behaviour is the reference.

mod context_support;

use std::path::Path;

use context_support::{Tree, paths, walked, walked_with};
use kiln_build::{BuildContext, ContextError, CopyFilter, EntryKind, Selection};

fn not_found(err: ContextError) -> String {
    match err {
        ContextError::NotFound { path, .. } => path,
        other => panic!("expected not found, got {other:?}"),
    }
}

// ---- ignore files --------------------------------------------------------

#[test]
fn the_dockerfile_specific_ignore_file_wins_over_dockerignore() {
    let t = Tree::new();
    t.file("a.txt", "a")
        .file("b.txt", "b")
        .file("build/Dockerfile.dev", "FROM scratch\n")
        .file("build/Dockerfile.dev.dockerignore", "b.txt\n")
        .ignore("a.txt\n");

    let dev = BuildContext::open(t.root(), &t.path("build/Dockerfile.dev")).unwrap();
    assert_eq!(
        dev.ignore_file(),
        Some(t.path("build/Dockerfile.dev.dockerignore").as_path())
    );
    assert_eq!(paths(&dev.resolve("a.txt").unwrap()), ["a.txt"]);
    assert_eq!(not_found(dev.resolve("b.txt").unwrap_err()), "/b.txt");

    let plain = t.open();
    assert_eq!(plain.ignore_file(), Some(t.path(".dockerignore").as_path()));
    assert_eq!(not_found(plain.resolve("a.txt").unwrap_err()), "/a.txt");
    assert_eq!(paths(&plain.resolve("b.txt").unwrap()), ["b.txt"]);

    // An empty Dockerfile-specific file still wins: nothing is ignored.
    t.file("build/Dockerfile.dev.dockerignore", "");
    let dev = BuildContext::open(t.root(), &t.path("build/Dockerfile.dev")).unwrap();
    assert_eq!(paths(&dev.resolve("a.txt").unwrap()), ["a.txt"]);
}

#[test]
fn without_an_ignore_file_nothing_is_ignored() {
    let t = Tree::new();
    t.file(".git/HEAD", "ref");
    let ctx = t.open();
    assert_eq!(ctx.ignore_file(), None);
    assert!(ctx.ignore_patterns().patterns().is_empty());
    assert_eq!(paths(&ctx.resolve(".git/HEAD").unwrap()), [".git/HEAD"]);
}

/// BuildKit reads the Dockerfile and the ignore file outside the context
/// transfer, so an ignored Dockerfile still builds; COPY cannot see it.
#[test]
fn an_ignored_dockerfile_builds_but_is_not_copied() {
    let t = Tree::new();
    t.ignore("Dockerfile\n.dockerignore\n");
    let ctx = t.open();
    assert!(ctx.is_ignored("Dockerfile").unwrap());
    assert_eq!(
        not_found(ctx.resolve("Dockerfile").unwrap_err()),
        "/Dockerfile"
    );
    assert_eq!(
        not_found(ctx.resolve(".dockerignore").unwrap_err()),
        "/.dockerignore"
    );
    assert_eq!(walked(&ctx, "."), [""]);
}

#[test]
fn a_bad_ignore_pattern_names_the_file() {
    let t = Tree::new();
    t.ignore("ok\n!\n");
    let err = BuildContext::open(t.root(), &t.path("Dockerfile")).unwrap_err();
    assert!(
        matches!(&err, ContextError::IgnoreFile { path, .. } if path.ends_with(".dockerignore")),
        "{err:?}"
    );
}

#[test]
fn ignored_files_are_invisible_to_sources_and_walks() {
    let t = Tree::new();
    t.file("app.py", "print()")
        .file("debug.log", "x")
        .file("secret/key", "k")
        .file("src/trace.log", "t")
        .file("src/main.py", "m")
        .ignore("*.log\nsecret\n**/*.log\n");
    let ctx = t.open();
    assert_eq!(
        not_found(ctx.resolve("debug.log").unwrap_err()),
        "/debug.log"
    );
    assert_eq!(not_found(ctx.resolve("secret").unwrap_err()), "/secret");
    assert_eq!(
        not_found(ctx.resolve("secret/key").unwrap_err()),
        "/secret/key"
    );
    // A wildcard does not match ignored files: here it matches nothing.
    assert!(ctx.resolve("*.log").unwrap().is_empty());
    assert_eq!(
        walked(&ctx, "."),
        [
            "",
            ".dockerignore",
            "Dockerfile",
            "app.py",
            "src",
            "src/main.py"
        ]
    );
    assert!(ctx.is_ignored("secret/key").unwrap());
    assert!(!ctx.is_ignored("src/main.py").unwrap());
}

#[test]
fn exceptions_below_an_excluded_directory_are_still_found() {
    let t = Tree::new();
    t.file("docs/keep.md", "k")
        .file("docs/other.md", "o")
        .file("docs/deep/x.txt", "x")
        .ignore("docs\n!docs/keep.md\n");
    let ctx = t.open();
    assert_eq!(
        paths(&ctx.resolve("docs/keep.md").unwrap()),
        ["docs/keep.md"]
    );
    assert_eq!(
        not_found(ctx.resolve("docs/other.md").unwrap_err()),
        "/docs/other.md"
    );
    // The excluded directory is sent because something below it is.
    let docs = ctx.resolve("docs").unwrap();
    assert_eq!(docs[0].kind(), EntryKind::Dir);
    assert_eq!(walked(&ctx, "docs"), ["docs", "docs/keep.md"]);
    assert_eq!(
        walked(&ctx, "."),
        ["", ".dockerignore", "Dockerfile", "docs", "docs/keep.md"]
    );
    assert!(!ctx.is_ignored("docs").unwrap());
    assert!(ctx.is_ignored("docs/deep").unwrap());
}

#[test]
fn a_wildcard_exception_makes_every_excluded_directory_searched() {
    let t = Tree::new();
    t.file("vendor/a/README.md", "r")
        .file("vendor/a/lib.rs", "l")
        .file("vendor/b/lib.rs", "l")
        .ignore("vendor\n!**/*.md\n");
    let ctx = t.open();
    assert_eq!(
        walked(&ctx, "."),
        [
            "",
            ".dockerignore",
            "Dockerfile",
            "vendor",
            "vendor/a",
            "vendor/a/README.md"
        ]
    );
    // Nothing below vendor/b is sent, so it is not there.
    assert_eq!(not_found(ctx.resolve("vendor/b").unwrap_err()), "/vendor/b");
    assert_eq!(paths(&ctx.resolve("vendor/*").unwrap()), ["vendor/a"]);
}

// ---- sources ---------------------------------------------------------------

#[test]
fn wildcards_match_one_component_each_with_go_syntax() {
    let t = Tree::new();
    t.file("a.txt", "")
        .file("b.txt", "")
        .file("c.md", "")
        .file("dir/x.txt", "")
        .file("dir2/y.txt", "")
        .file("dir2/sub/z.txt", "");
    let ctx = t.open();
    let resolve = |s: &str| paths(&ctx.resolve(s).unwrap());
    assert_eq!(resolve("*.txt"), ["a.txt", "b.txt"]);
    assert_eq!(resolve("?.txt"), ["a.txt", "b.txt"]);
    assert_eq!(resolve("[ab].txt"), ["a.txt", "b.txt"]);
    assert_eq!(resolve("[^a].txt"), ["b.txt"]);
    assert_eq!(resolve("[a-b].*"), ["a.txt", "b.txt"]);
    assert_eq!(resolve("dir*/*.txt"), ["dir/x.txt", "dir2/y.txt"]);
    assert_eq!(resolve("dir*"), ["dir", "dir2"]);
    assert_eq!(resolve("*/sub/*"), ["dir2/sub/z.txt"]);
    // A wildcard that matches nothing names nothing (AllowEmptyWildcard).
    assert!(resolve("nothing*").is_empty());
    // Its fixed part must exist, though: fsutil walks it.
    assert_eq!(
        not_found(ctx.resolve("missing/*.txt").unwrap_err()),
        "/missing"
    );
    assert!(matches!(
        ctx.resolve("a[").unwrap_err(),
        ContextError::BadSource { pattern } if pattern == "a["
    ));
}

#[test]
fn escaped_wildcards_match_literally() {
    let t = Tree::new();
    t.file("d/x*y", "star")
        .file("d/xzy", "z")
        .file("q/a?b", "q")
        .file("q/acb", "c");
    let ctx = t.open();
    assert_eq!(paths(&ctx.resolve("d*/x\\*y").unwrap()), ["d/x*y"]);
    assert_eq!(paths(&ctx.resolve("d*/x*y").unwrap()), ["d/x*y", "d/xzy"]);
    assert_eq!(paths(&ctx.resolve("[q]/a\\?b").unwrap()), ["q/a?b"]);
    assert_eq!(paths(&ctx.resolve("d/[x]\\*y").unwrap()), ["d/x*y"]);
    // Without an unescaped wildcard the path is looked up as written, the
    // backslash included, as fsutil's ResolveWildcards does.
    assert_eq!(not_found(ctx.resolve("d/x\\*y").unwrap_err()), "/d/x\\*y");
    t.file("lit/a\\*b", "backslash");
    let ctx = t.open();
    assert_eq!(paths(&ctx.resolve("lit/a\\*b").unwrap()), ["lit/a\\*b"]);
}

#[test]
fn sources_are_cleaned_inside_the_context() {
    let t = Tree::new();
    t.file("a.txt", "a").file("sub/b.txt", "b");
    let ctx = t.open();
    for source in [
        "a.txt",
        "/a.txt",
        "./a.txt",
        "../../a.txt",
        "sub/../a.txt",
        "/../a.txt",
    ] {
        let found = ctx.resolve(source).unwrap();
        assert_eq!(paths(&found), ["a.txt"], "{source}");
        assert_eq!(
            found[0].disk_path(),
            t.path("a.txt").canonicalize().unwrap()
        );
    }
    for source in [".", "/", "..", "../..", "sub/.."] {
        let found = ctx.resolve(source).unwrap();
        assert_eq!(found[0].path(), Path::new(""), "{source}");
        assert_eq!(found[0].name(), None);
        assert_eq!(found[0].kind(), EntryKind::Dir);
    }
    assert_eq!(paths(&ctx.resolve("../sub/").unwrap()), ["sub"]);
}

#[test]
fn not_found_names_the_path_as_buildkit_does() {
    let t = Tree::new();
    let ctx = t.open();
    let err = ctx.resolve("nope").unwrap_err();
    assert_eq!(err.to_string(), "\"/nope\": not found in the build context");
    let err = ctx.resolve("./x/../nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "source \"./x/../nope\": \"/nope\" not found in the build context"
    );
}

#[test]
fn symlinks_on_the_way_are_followed_inside_the_context() {
    let t = Tree::new();
    t.file("real/file", "f")
        .symlink("link", "real")
        .symlink("abs", "/real")
        .symlink("up", "sub/../real/file")
        .symlink("chain", "link")
        .dir("sub");
    let ctx = t.open();
    let e = &ctx.resolve("link/file").unwrap()[0];
    assert_eq!(e.path(), Path::new("link/file"));
    assert_eq!(e.resolved_path(), Path::new("real/file"));
    assert_eq!(e.kind(), EntryKind::File);
    // An absolute target is read from the context root, as in a chroot.
    assert_eq!(
        ctx.resolve("abs/file").unwrap()[0].resolved_path(),
        Path::new("real/file")
    );
    assert_eq!(
        ctx.resolve("up").unwrap()[0].resolved_path(),
        Path::new("real/file")
    );
    // The source itself is followed too, and keeps its name.
    let e = &ctx.resolve("chain").unwrap()[0];
    assert_eq!(e.kind(), EntryKind::Dir);
    assert_eq!(e.name(), Some("chain".as_ref()));
    assert_eq!(e.resolved_path(), Path::new("real"));
    assert_eq!(walked(&ctx, "chain"), ["real", "real/file"]);
    // Wildcard matches that are symlinks are followed as well.
    let e = ctx.resolve("l?nk").unwrap();
    assert_eq!(paths(&e), ["link"]);
    assert_eq!(e[0].kind(), EntryKind::Dir);
    // And the fixed part of a wildcard source.
    assert_eq!(paths(&ctx.resolve("link/*").unwrap()), ["link/file"]);
}

#[test]
fn symlinks_never_lead_out_of_the_context() {
    let outside = tempfile::tempdir().unwrap();
    fs_err::write(outside.path().join("secret"), "s").unwrap();
    let outside_abs = outside.path().canonicalize().unwrap();
    let t = Tree::new();
    t.symlink("climb", "../../../../../../../../secret")
        .symlink("abs", &outside_abs.join("secret").to_string_lossy())
        .symlink("dir", &outside_abs.to_string_lossy());
    let ctx = t.open();
    assert_eq!(not_found(ctx.resolve("climb").unwrap_err()), "/climb");
    assert_eq!(not_found(ctx.resolve("abs").unwrap_err()), "/abs");
    assert_eq!(
        not_found(ctx.resolve("dir/secret").unwrap_err()),
        "/dir/secret"
    );
    // What the link names inside the context is what it means.
    t.file("secret", "inside");
    let inside_copy = format!("{}/secret", outside_abs.to_string_lossy());
    t.file(inside_copy.trim_start_matches('/'), "inside too");
    let ctx = t.open();
    let e = &ctx.resolve("climb").unwrap()[0];
    assert_eq!(e.resolved_path(), Path::new("secret"));
    assert!(e.disk_path().starts_with(ctx.root()));
    let e = &ctx.resolve("abs").unwrap()[0];
    assert_eq!(
        e.resolved_path(),
        Path::new(inside_copy.trim_start_matches('/'))
    );
    assert!(e.disk_path().starts_with(ctx.root()));
}

#[test]
fn ignored_symlinks_and_ignored_targets_are_not_found() {
    let t = Tree::new();
    t.file("private/key", "k")
        .file("public/page", "p")
        .symlink("to_private", "private/key")
        .symlink("hidden_link", "public")
        .ignore("private\nhidden_link\n");
    let ctx = t.open();
    assert_eq!(
        not_found(ctx.resolve("to_private").unwrap_err()),
        "/to_private"
    );
    assert_eq!(
        not_found(ctx.resolve("hidden_link/page").unwrap_err()),
        "/hidden_link/page"
    );
    // `..` out of a path that is not there climbs back to what is.
    assert_eq!(
        ctx.resolve("hidden_link/../public/page").unwrap()[0].resolved_path(),
        Path::new("public/page")
    );
}

#[test]
fn dangling_and_looping_symlinks() {
    let t = Tree::new();
    t.symlink("dangling", "nowhere")
        .symlink("loop_a", "loop_b")
        .symlink("loop_b", "loop_a")
        .symlink("m1", "nowhere");
    let ctx = t.open();
    assert_eq!(not_found(ctx.resolve("dangling").unwrap_err()), "/dangling");
    assert!(matches!(
        ctx.resolve("loop_a").unwrap_err(),
        ContextError::TooManySymlinks { .. }
    ));
    // A wildcard match that leads nowhere fails the source, as BuildKit's
    // copy of it does.
    assert_eq!(not_found(ctx.resolve("m?").unwrap_err()), "/m1");
}

#[test]
fn symlinks_below_a_copied_directory_are_entries_not_followed() {
    let t = Tree::new();
    t.file("app/real/x", "x")
        .symlink("app/link", "real")
        .symlink("app/out", "/etc");
    let ctx = t.open();
    let entry = &ctx.resolve("app").unwrap()[0];
    let walk: Vec<_> = ctx
        .walk(entry, &CopyFilter::all())
        .map(Result::unwrap)
        .collect();
    let kinds: Vec<(String, EntryKind)> = walk
        .iter()
        .map(|w| (w.rel_path().to_string_lossy().into_owned(), w.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (String::new(), EntryKind::Dir),
            ("link".into(), EntryKind::Symlink),
            ("out".into(), EntryKind::Symlink),
            ("real".into(), EntryKind::Dir),
            ("real/x".into(), EntryKind::File),
        ]
    );
    assert!(walk[0].is_root());
    assert_eq!(walk[4].disk_path(), ctx.root().join("app/real/x"));
}

// ---- --exclude and --parents ----------------------------------------------

#[test]
fn exclude_patterns_match_below_the_source() {
    let t = Tree::new();
    t.file("src/a.md", "")
        .file("src/a.rs", "")
        .file("src/sub/b.md", "")
        .file("src/sub/keep.md", "")
        .file("src/target/big.o", "");
    let ctx = t.open();
    let filter = |p: &[&str]| CopyFilter::excluding(p).unwrap();
    assert_eq!(
        walked_with(&ctx, "src", &filter(&["*.md"])),
        [
            "src",
            "src/a.rs",
            "src/sub",
            "src/sub/b.md",
            "src/sub/keep.md",
            "src/target",
            "src/target/big.o"
        ]
    );
    assert_eq!(
        walked_with(&ctx, "src", &filter(&["**/*.md", "target"])),
        ["src", "src/a.rs", "src/sub"]
    );
    // `!` exceptions bring entries back from below an excluded directory.
    assert_eq!(
        walked_with(&ctx, "src", &filter(&["sub", "!sub/keep.md"])),
        [
            "src",
            "src/a.md",
            "src/a.rs",
            "src/sub",
            "src/sub/keep.md",
            "src/target",
            "src/target/big.o"
        ]
    );
    assert!(matches!(
        CopyFilter::excluding(&["!"]).unwrap_err(),
        ContextError::CopyPattern {
            flag: "--exclude",
            ..
        }
    ));
}

/// moby/buildkit#5489: BuildKit never matches `--exclude` against the
/// copied source itself, so `COPY --exclude=a *` still copies `a`.
#[test]
fn exclude_never_filters_the_source_itself() {
    let t = Tree::new();
    t.file("a", "").file("b", "");
    let ctx = t.open();
    let selection = Selection::new(["*"]).excluding(["a"]);
    let selected = ctx.select(&selection).unwrap();
    assert_eq!(paths(selected[0].entries()), ["Dockerfile", "a", "b"]);
    let a = &selected[0].entries()[1];
    assert_eq!(ctx.walk(a, selected[0].filter()).count(), 1);
}

#[test]
fn parents_keep_the_path_below_the_pivot() {
    let t = Tree::new();
    t.file("a/b/x.txt", "")
        .file("a/b/y.md", "")
        .file("a/c/z.txt", "")
        .file("top.txt", "");
    let ctx = t.open();
    let rels = |sel: Selection| -> Vec<Vec<String>> {
        ctx.select(&sel)
            .unwrap()
            .iter()
            .map(|s| {
                s.entries()
                    .iter()
                    .flat_map(|e| ctx.walk(e, s.filter()))
                    .map(|w| w.unwrap().rel_path().to_string_lossy().into_owned())
                    .collect()
            })
            .collect()
    };
    // `a/./b/*.txt`: the pivot is `a`, and `b/x.txt` is kept below it; `b`
    // is created for it although the pattern does not match it.
    assert_eq!(
        rels(Selection::new(["a/./b/*.txt"]).parents(true)),
        [["", "b", "b/x.txt"]]
    );
    // Without `/./` the pivot is the context root.
    assert_eq!(
        rels(Selection::new(["a/*/*.txt"]).parents(true)),
        [["", "a", "a/b", "a/b/x.txt", "a/c", "a/c/z.txt"]]
    );
    assert_eq!(
        rels(
            Selection::new(["a/./b/*"])
                .parents(true)
                .excluding(["**/*.md"])
        ),
        [["", "b", "b/x.txt"]]
    );
    // A path without wildcards must exist.
    assert_eq!(
        not_found(
            ctx.select(&Selection::new(["a/./nope"]).parents(true))
                .unwrap_err()
        ),
        "/a/nope"
    );
}

/// Linux names are bytes: one that is not UTF-8 is walked, matched by
/// wildcards and described with its own bytes.
#[test]
fn names_that_are_not_utf8_are_entries_like_any_other() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs_err::create_dir_all(t.path("src")).unwrap();
    fs_err::write(t.path("src").join(name), "bytes").unwrap();
    let ctx = t.open();
    let found = ctx.resolve("src/*.txt").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name(), Some(name));
    assert_eq!(ctx.resolve("src/caf?.txt").unwrap().len(), 1);
    let entry = &ctx.resolve("src").unwrap()[0];
    let walked: Vec<_> = ctx
        .walk(entry, &CopyFilter::all())
        .map(|w| w.unwrap().rel_path().as_os_str().as_bytes().to_vec())
        .collect();
    assert_eq!(walked, [b"".to_vec(), b"caf\xe9.txt".to_vec()]);
}
