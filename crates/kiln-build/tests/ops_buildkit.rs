//! COPY and ADD against BuildKit itself: each case is a Dockerfile built
//! `FROM scratch` by Docker's BuildKit (`docker buildx build --output
//! type=tar`, nothing pulled) and carried out by `kiln_build::ops` on a
//! directory; the two trees must be the same: paths, types, modes, owners,
//! file contents, symlink targets, hardlinks, and modification times
//! where BuildKit keeps the source's (a time BuildKit sets to "now" must be
//! recent in kiln's tree too).
//!
//! Docker 26 ships BuildKit 0.13: its frontend has no `--parents`,
//! `--unpack` or `--exclude`, ignores symbolic and invalid `--chmod`
//! values, and extracts archives with go-archive (archive owners kept under
//! `--chown`). Those behaviours are tested against current BuildKit's
//! source in `ops.rs` instead.
//!
//! Needs root and a running dockerd with buildx (`scripts/test` starts
//! one); without them the tests skip, by kiln-testkit's rule
//! (`kiln_testkit::need`: a failure under `CI=true`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_build::{Chmod, CopyOptions, SourceItem};
use kiln_dockerfile::instructions::{Command as Instr, SourcesAndDest, parse_dockerfile};
use kiln_testkit::need::{Docker, Root, need};

/// A time far enough in the past that a copied entry with it kept the
/// source's time, and one with a recent time got "now".
const OLD: i64 = 1_600_000_000;

/// Root (kiln's side sets owners) and dockerd with buildx (BuildKit's).
fn can_compare() -> bool {
    need(Root).is_some() && need(Docker).is_some()
}

/// One file system entry, as both sides are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    /// File content or symlink target.
    data: Vec<u8>,
    /// The other names of a hardlinked file, sorted.
    links: Vec<String>,
}

struct Tree {
    nodes: BTreeMap<String, Node>,
    mtimes: BTreeMap<String, i64>,
}

/// The tar BuildKit's tar exporter wrote.
fn read_tar(path: &Path) -> Tree {
    let mut archive = tar::Archive::new(fs_err::File::open(path).unwrap());
    let mut nodes = BTreeMap::new();
    let mut mtimes = BTreeMap::new();
    let mut hard: Vec<(String, String)> = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        if name.is_empty() {
            continue;
        }
        let h = entry.header();
        let kind = match h.entry_type() {
            t if t.is_dir() => 'd',
            t if t.is_symlink() => 'l',
            t if t.is_hard_link() => 'h',
            t if t.is_fifo() => 'p',
            t if t.is_character_special() => 'c',
            t if t.is_block_special() => 'b',
            _ => 'f',
        };
        let mut data = Vec::new();
        if kind == 'l' || kind == 'h' {
            data = entry.link_name_bytes().unwrap().into_owned();
        } else if kind == 'f' {
            entry.read_to_end(&mut data).unwrap();
        }
        let h = entry.header();
        if kind == 'h' {
            hard.push((
                name,
                String::from_utf8_lossy(&data)
                    .trim_start_matches("./")
                    .to_string(),
            ));
            continue;
        }
        mtimes.insert(name.clone(), h.mtime().unwrap() as i64);
        nodes.insert(
            name,
            Node {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                data,
                links: Vec::new(),
            },
        );
    }
    // A hardlink entry is another name of its target.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, target) in hard {
        groups.entry(target).or_default().push(name);
    }
    for (target, names) in groups {
        let mut all: Vec<String> = names.clone();
        all.push(target.clone());
        all.sort();
        let node = nodes
            .get(&target)
            .cloned()
            .expect("hardlink target in the tar");
        for name in &all {
            let mut n = node.clone();
            n.links = all.iter().filter(|x| *x != name).cloned().collect();
            nodes.insert(name.clone(), n);
            mtimes.insert(name.clone(), mtimes[&target]);
        }
    }
    Tree { nodes, mtimes }
}

/// The same listing of a directory kiln wrote.
fn read_dir(root: &Path) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut mtimes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    fn walk(
        root: &Path,
        dir: &Path,
        nodes: &mut BTreeMap<String, Node>,
        mtimes: &mut BTreeMap<String, i64>,
        inodes: &mut HashMap<(u64, u64), Vec<String>>,
    ) {
        let mut entries: Vec<_> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let md = fs_err::symlink_metadata(&path).unwrap();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, data) = if ft.is_dir() {
                ('d', Vec::new())
            } else if ft.is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                (
                    'l',
                    fs_err::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if ft.is_fifo() {
                ('p', Vec::new())
            } else if ft.is_char_device() {
                ('c', Vec::new())
            } else if ft.is_block_device() {
                ('b', Vec::new())
            } else {
                ('f', fs_err::read(&path).unwrap())
            };
            if kind == 'f' && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(name.clone());
            }
            mtimes.insert(name.clone(), md.mtime());
            nodes.insert(
                name,
                Node {
                    kind,
                    mode: md.permissions().mode() & 0o7777,
                    uid: md.uid().into(),
                    gid: md.gid().into(),
                    data,
                    links: Vec::new(),
                },
            );
            if ft.is_dir() {
                walk(root, &path, nodes, mtimes, inodes);
            }
        }
    }
    walk(root, root, &mut nodes, &mut mtimes, &mut inodes);
    for names in inodes.values() {
        for name in names {
            let mut links: Vec<String> = names.iter().filter(|x| *x != name).cloned().collect();
            links.sort();
            nodes.get_mut(name).unwrap().links = links;
        }
    }
    // Symlinks have no mode of their own to compare.
    for node in nodes.values_mut() {
        if node.kind == 'l' {
            node.mode = 0o777;
        }
    }
    Tree { nodes, mtimes }
}

/// A build context: files written by `setup`, all with old times unless
/// `setup` says otherwise.
struct Case {
    dir: tempfile::TempDir,
    dockerfile: String,
}

impl Case {
    fn new(dockerfile: &str, setup: impl FnOnce(&Path)) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs_err::create_dir(&ctx).unwrap();
        setup(&ctx);
        age(&ctx, OLD);
        Case {
            dir,
            dockerfile: dockerfile.to_owned(),
        }
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// BuildKit's result: the tree, or the error it printed.
    fn buildkit(&self) -> Result<Tree, String> {
        let df = self.dir.path().join("Dockerfile");
        fs_err::write(&df, &self.dockerfile).unwrap();
        let out = self.dir.path().join("out.tar");
        let res = Command::new("docker")
            .args(["buildx", "build", "--no-cache", "-q", "-f"])
            .arg(&df)
            .arg("--output")
            .arg(format!("type=tar,dest={}", out.display()))
            .arg(self.ctx())
            .output()
            .unwrap();
        if !res.status.success() {
            return Err(String::from_utf8_lossy(&res.stderr).into_owned());
        }
        Ok(read_tar(&out))
    }

    /// kiln's result: the last stage's root, or the first error.
    fn kiln(&self) -> Result<Tree, String> {
        let ast = kiln_dockerfile::parse(self.dockerfile.as_bytes()).unwrap();
        let df = parse_dockerfile(&ast).unwrap();
        let mut roots: HashMap<String, PathBuf> = HashMap::new();
        let mut last = PathBuf::new();
        for (i, stage) in df.stages.iter().enumerate() {
            let root = self.dir.path().join(format!("stage{i}"));
            fs_err::create_dir(&root).unwrap();
            if let Some(base) = roots.get(&stage.base_name) {
                // FROM <stage>: start from a copy of its root.
                let st = Command::new("cp")
                    .arg("-a")
                    .arg(base.join("."))
                    .arg(&root)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            let mut workdir = "/".to_string();
            for cmd in &stage.commands {
                match cmd {
                    Instr::Workdir(w) => {
                        workdir = if w.path.starts_with('/') {
                            w.path.clone()
                        } else {
                            format!("{}/{}", workdir.trim_end_matches('/'), w.path)
                        };
                        fs_err::create_dir_all(root.join(workdir.trim_start_matches('/'))).unwrap();
                    }
                    Instr::Copy(c) => {
                        let from = c.from.as_ref().map(|f| roots[f].clone());
                        let opts = options(CopyOptions::copy(), &root, &c.chown, &c.chmod)?;
                        self.run(&c.sources, from.as_deref(), &root, &workdir, &opts)?;
                    }
                    Instr::Add(c) => {
                        let opts = options(CopyOptions::add(), &root, &c.chown, &c.chmod)?;
                        self.run(&c.sources, None, &root, &workdir, &opts)?;
                    }
                    other => panic!("the cases use COPY, ADD and WORKDIR only, not {other:?}"),
                }
            }
            if let Some(name) = &stage.name {
                roots.insert(name.clone(), root.clone());
            }
            last = root;
        }
        Ok(read_dir(&last))
    }

    fn run(
        &self,
        sources: &SourcesAndDest,
        from: Option<&Path>,
        root: &Path,
        workdir: &str,
        opts: &CopyOptions,
    ) -> Result<(), String> {
        let mut items = Vec::new();
        for path in &sources.paths {
            let tree = from.map_or(self.ctx(), Path::to_path_buf);
            for item in kiln_build::expand_source(&tree, path, false).map_err(|e| e.to_string())? {
                // The context's owners are reset by BuildKit's transfer.
                items.push(if from.is_some() {
                    item
                } else {
                    item.reset_owners()
                });
            }
        }
        for content in &sources.contents {
            items.push(SourceItem::inline(&content.path, content.data.clone()));
        }
        kiln_build::copy_sources(&items, root, &sources.dest, workdir, opts)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn options(
    opts: CopyOptions,
    root: &Path,
    chown: &Option<String>,
    chmod: &Option<String>,
) -> Result<CopyOptions, String> {
    let mut opts = opts;
    if let Some(c) = chown {
        opts = opts.chown(kiln_build::resolve_chown(root, c).map_err(|e| e.to_string())?);
    }
    if let Some(c) = chmod {
        opts = opts.chmod(Chmod::parse(c).map_err(|e| e.to_string())?);
    }
    Ok(opts)
}

/// Sets every time under `dir` (itself included) to `t`, not following
/// symlinks.
fn age(dir: &Path, t: i64) {
    for entry in walk_all(dir) {
        set_time(&entry, t);
    }
    set_time(dir, t);
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs_err::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk_all(&p));
        }
        out.push(p);
    }
    out
}

fn set_time(path: &Path, t: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: t,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn compress_gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn write(ctx: &Path, rel: &str, data: &str, mode: u32) {
    let p = ctx.join(rel);
    fs_err::create_dir_all(p.parent().unwrap()).unwrap();
    fs_err::write(&p, data).unwrap();
    fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(ctx: &Path, rel: &str, mode: u32) {
    let p = ctx.join(rel);
    fs_err::create_dir_all(&p).unwrap();
    fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(ctx: &Path, target: &str, rel: &str) {
    std::os::unix::fs::symlink(target, ctx.join(rel)).unwrap();
}

/// Builds `case` both ways and compares.
fn check(case: &Case) {
    check_except(case, &[]);
}

/// [`check`], without comparing the mtimes of the paths in `skip`.
fn check_except(case: &Case, skip: &[&str]) {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let want = case
        .buildkit()
        .unwrap_or_else(|e| panic!("BuildKit failed:\n{e}"));
    let got = case.kiln().unwrap_or_else(|e| panic!("kiln failed: {e}"));
    if std::env::var_os("KILN_OPS_DUMP").is_some() {
        eprintln!("{}:\n{:#?}", case.dockerfile, want.nodes);
    }
    assert!(!want.nodes.is_empty());
    let paths = |t: &Tree| t.nodes.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        paths(&got),
        paths(&want),
        "paths differ for\n{}",
        case.dockerfile
    );
    for (path, w) in &want.nodes {
        assert_eq!(
            &got.nodes[path], w,
            "{path} differs for\n{}",
            case.dockerfile
        );
        let (wt, gt) = (want.mtimes[path], got.mtimes[path]);
        if skip.contains(&path.as_str()) {
            continue;
        }
        if wt < start - 3600 {
            assert_eq!(
                gt, wt,
                "{path}: BuildKit kept the source's mtime, kiln did not"
            );
        } else {
            assert!(
                gt >= start - 60,
                "{path}: BuildKit set a new mtime ({wt}), kiln kept {gt}"
            );
        }
    }
}

/// Both fail, BuildKit's message containing `text` and kiln's too.
fn check_error(case: &Case, text: &str) {
    let want = case.buildkit().err().expect("BuildKit should fail");
    assert!(want.contains(text), "BuildKit said:\n{want}");
    let got = case.kiln().err().expect("kiln should fail");
    assert!(got.contains(text), "kiln said: {got}");
}

fn context(ctx: &Path) {
    write(ctx, "a.txt", "a\n", 0o644);
    write(ctx, "b.txt", "bb\n", 0o600);
    write(ctx, "run.sh", "#!/bin/sh\n", 0o755);
    mkdir(ctx, "dir", 0o755);
    write(ctx, "dir/c", "c\n", 0o644);
    mkdir(ctx, "dir/sub", 0o700);
    write(ctx, "dir/sub/d", "d\n", 0o640);
    mkdir(ctx, "dir/empty", 0o750);
    symlink(ctx, "c", "dir/lnk");
    symlink(ctx, "../a.txt", "dir/up");
    symlink(ctx, "dir", "dirlink");
    symlink(ctx, "a.txt", "alink");
    fs_err::hard_link(ctx.join("dir/c"), ctx.join("dir/c2")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ctx.join("dir/fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

#[test]
fn file_to_directory() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch\n\
         COPY a.txt /dir/\n\
         COPY b.txt /dir\n\
         COPY run.sh /nested/deep/tool\n\
         COPY alink /links/\n\
         COPY a.txt /dir/a.txt\n",
        context,
    ));
}

#[test]
fn directory_contents() {
    if !can_compare() {
        return;
    }
    let case = Case::new(
        "FROM scratch\n\
         COPY dir /d1\n\
         COPY dir /d2/\n\
         COPY dirlink /d3/\n\
         COPY dir /d1\n\
         COPY . /all/\n",
        context,
    );
    // BuildKit's context transfer gives the context's top directory the
    // time of the transfer, and the copy then gives it to /all; kiln reads
    // the context as it is on disk.
    check_except(&case, &["all"]);
}

#[test]
fn wildcards() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch\n\
         COPY *.txt /w/\n\
         COPY d* /m/\n\
         COPY a*.txt /single\n\
         COPY dir/*/d /deep/\n\
         COPY [ab].txt ?un.sh /class/\n\
         COPY nomatch* /none/\n",
        context,
    ));
}

#[test]
fn destination_without_trailing_slash() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch\n\
         COPY a.txt /newfile\n\
         COPY dir /newdir\n\
         WORKDIR /wd\n\
         COPY a.txt rel\n\
         COPY a.txt b.txt .\n\
         COPY run.sh sub/../tool\n\
         WORKDIR deeper\n\
         COPY dir .\n",
        context,
    ));
}

#[test]
fn chown_by_id() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch\n\
         COPY --chown=1000 a.txt /x\n\
         COPY --chown=1000:7 a.txt /y\n\
         COPY --chown=root:5 a.txt /z\n\
         COPY --chown=5:root dir /w/\n\
         COPY --chown=33:44 a.txt /own/deep/f\n\
         COPY --chown=8:9 dir /own/\n",
        context,
    ));
}

#[test]
fn chmod_octal() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch\n\
         COPY --chmod=640 dir /dm\n\
         COPY --chmod=4755 a.txt /suid\n\
         COPY a.txt /existing/\n\
         COPY --chmod=0600 a.txt /existing\n\
         COPY --chmod=755 --chown=1:2 run.sh b.txt /both/\n",
        context,
    ));
}

#[test]
fn heredoc_sources() {
    if !can_compare() {
        return;
    }
    // BuildKit caches the file it makes for a heredoc even under
    // --no-cache, so its mtime is whenever this test first ran on the
    // machine: only kiln's side of those mtimes can be checked.
    check_except(
        &Case::new(
            "FROM scratch\n\
             COPY <<EOF /here\nhello\nEOF\n\
             COPY --chmod=755 <<EOF2 /here2/\n#!/bin/sh\necho hi\nEOF2\n\
             COPY --chown=3:4 <<A <<B /two/\none\nA\ntwo\nB\n",
            context,
        ),
        &["here", "here2/EOF2", "two/A", "two/B"],
    );
}

#[test]
fn add_local_archives() {
    if !can_compare() {
        return;
    }
    let case = Case::new(
        "FROM scratch\n\
         ADD a.tar.gz /gz/\n\
         ADD plain.tar /plain\n\
         ADD b.tbz c.txz /multi/\n\
         ADD d.tzst /zst/\n\
         ADD named.txt /named/\n\
         ADD single.gz /single/\n\
         ADD a.txt /notarchive\n",
        |ctx| {
            context(ctx);
            let arc = ctx.parent().unwrap().join("arc");
            mkdir(&arc, "top/inner", 0o700);
            write(&arc, "top/t", "t\n", 0o644);
            write(&arc, "top/x.sh", "x\n", 0o4755);
            symlink(&arc, "t", "top/tl");
            fs_err::hard_link(arc.join("top/t"), arc.join("top/thard")).unwrap();
            write(&arc, "top/inner/i", "i\n", 0o600);
            Command::new("chown")
                .args(["-R", "1234:5678"])
                .arg(&arc)
                .status()
                .unwrap();
            age(&arc, OLD - 1000);
            // GNU tar writes the archive; the codecs are the crates', so the
            // test needs no compressor binaries.
            let out = Command::new("tar")
                .arg("-C")
                .arg(&arc)
                .args(["-cf", "-", "top"])
                .output()
                .unwrap();
            assert!(out.status.success());
            let plain = out.stdout;
            fs_err::write(ctx.join("plain.tar"), &plain).unwrap();
            fs_err::write(ctx.join("a.tar.gz"), compress_gzip(&plain)).unwrap();
            fs_err::copy(ctx.join("a.tar.gz"), ctx.join("named.txt")).unwrap();
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            bz.write_all(&plain).unwrap();
            fs_err::write(ctx.join("b.tbz"), bz.finish().unwrap()).unwrap();
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
            xz.write_all(&plain).unwrap();
            fs_err::write(ctx.join("c.txz"), xz.finish().unwrap()).unwrap();
            fs_err::write(ctx.join("d.tzst"), zstd::encode_all(&plain[..], 3).unwrap()).unwrap();
            fs_err::write(ctx.join("single.gz"), compress_gzip(b"not a tar\n")).unwrap();
        },
    );
    check(&case);
}

#[test]
fn copy_from_a_stage_keeps_owners() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch AS s1\n\
         ADD a.tar.gz /gz/\n\
         COPY --chown=7:8 dir /owned/\n\
         FROM scratch\n\
         COPY --from=s1 /gz /x\n\
         COPY --from=s1 /gz/top/t /file\n\
         COPY --from=s1 /owned/sub /sub/\n\
         COPY --from=s1 /gz/top/tl /followed\n",
        |ctx| {
            context(ctx);
            let arc = ctx.parent().unwrap().join("arc");
            mkdir(&arc, "top", 0o755);
            write(&arc, "top/t", "t\n", 0o644);
            symlink(&arc, "t", "top/tl");
            Command::new("chown")
                .args(["-R", "1234:5678"])
                .arg(&arc)
                .status()
                .unwrap();
            age(&arc, OLD - 1000);
            let out = Command::new("tar")
                .arg("-C")
                .arg(&arc)
                .args(["-cf", "-", "top"])
                .output()
                .unwrap();
            assert!(out.status.success());
            fs_err::write(ctx.join("a.tar.gz"), compress_gzip(&out.stdout)).unwrap();
        },
    ));
}

#[test]
fn destination_symlinks_resolve_inside_the_root() {
    if !can_compare() {
        return;
    }
    check(&Case::new(
        "FROM scratch AS base\n\
         COPY base /\n\
         FROM base\n\
         COPY a.txt /abs/\n\
         COPY a.txt /lib/f2\n\
         COPY a.txt /lib/sub/f3\n\
         COPY b.txt /abs\n\
         COPY dir /rel\n",
        |ctx| {
            context(ctx);
            mkdir(ctx, "base/usr/lib", 0o755);
            symlink(ctx, "usr/lib", "base/lib");
            symlink(ctx, "/usr/lib", "base/abs");
            symlink(ctx, "../../usr/lib", "base/rel");
        },
    ));
}

#[test]
fn directory_over_a_file_is_refused() {
    if !can_compare() {
        return;
    }
    check_error(
        &Case::new(
            "FROM scratch AS base\nCOPY a.txt /t/sub\nFROM base\nCOPY tree /t/\n",
            |ctx| {
                context(ctx);
                write(ctx, "tree/sub/s", "s\n", 0o644);
            },
        ),
        "cannot copy to non-directory",
    );
}

#[test]
fn file_over_a_directory_is_refused() {
    if !can_compare() {
        return;
    }
    check_error(
        &Case::new(
            "FROM scratch AS base\nCOPY tree /u/\nFROM base\nCOPY tree2 /u/\n",
            |ctx| {
                write(ctx, "tree/sub/s", "s\n", 0o644);
                write(ctx, "tree2/sub", "t\n", 0o644);
            },
        ),
        "cannot replace to directory",
    );
}

#[test]
fn directory_over_a_symlink_to_a_directory_is_refused() {
    if !can_compare() {
        return;
    }
    check_error(
        &Case::new(
            "FROM scratch AS base\nCOPY base /\nFROM base\nCOPY rootfs /\n",
            |ctx| {
                mkdir(ctx, "base/usr/lib", 0o755);
                symlink(ctx, "usr/lib", "base/lib");
                write(ctx, "rootfs/lib/libx", "x\n", 0o644);
            },
        ),
        "cannot copy to non-directory",
    );
}
