//! Helpers shared by the layer tests: building trees with every kind of
//! file, describing a tree canonically, and writing tars by hand.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};
use sha2::Digest as _;

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).unwrap();
    }
    fs_err::write(path, data).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

pub fn mknod(path: &Path, kind: FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

pub fn symlink(target: &str, path: &Path) {
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// A tree with one of everything a layer can hold.
pub fn rich_tree(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs_err::create_dir_all(p("usr/bin")).unwrap();
    fs_err::create_dir_all(p("etc/ssl")).unwrap();
    fs_err::create_dir_all(p("tmp")).unwrap();
    fs_err::create_dir_all(p("var/empty")).unwrap();
    write_file(&p("etc/hostname"), b"kiln\n");
    write_file(&p("etc/empty"), b"");
    write_file(&p("usr/bin/tool"), b"#!/bin/sh\necho tool\n");
    chmod(&p("usr/bin/tool"), 0o755);
    write_file(&p("usr/bin/suid"), b"setuid binary");
    lchown(&p("usr/bin/suid"), 0, 0);
    chmod(&p("usr/bin/suid"), 0o4755);
    write_file(&p("usr/bin/sgid"), b"setgid binary");
    lchown(&p("usr/bin/sgid"), 0, 42);
    chmod(&p("usr/bin/sgid"), 0o2711);
    chmod(&p("tmp"), 0o1777);
    fs_err::create_dir(p("usr/shared")).unwrap();
    chmod(&p("usr/shared"), 0o2775);

    // Owners: ordinary, nobody, and one too big for the ustar field.
    write_file(&p("home/user/notes"), b"mine");
    lchown(&p("home/user/notes"), 1000, 1000);
    lchown(&p("home/user"), 1000, 100);
    write_file(&p("home/nobody"), b"");
    lchown(&p("home/nobody"), 65534, 65534);
    write_file(&p("home/big-ids"), b"ids over 2^21");
    lchown(&p("home/big-ids"), 3_000_000, 4_000_000);

    // Xattrs, one value holding a newline and a NUL (a capability set of
    // CAP_DAC_OVERRIDE|CAP_FOWNER is byte 0x0a).
    write_file(&p("usr/bin/ping"), b"ping");
    let cap = [
        1, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    lsetxattr(&p("usr/bin/ping"), "security.capability", &cap);
    lsetxattr(&p("etc/hostname"), "user.comment", b"line1\nline2");
    lsetxattr(&p("etc/ssl"), "trusted.kiln", b"dir xattr");
    lsetxattr(&p("etc/ssl"), "user.a", b"");

    // Hardlinks, in one directory and across two.
    write_file(&p("usr/lib/libfoo.so.1"), b"library bytes");
    fs_err::hard_link(p("usr/lib/libfoo.so.1"), p("usr/lib/libfoo-copy.so")).unwrap();
    fs_err::hard_link(p("usr/lib/libfoo.so.1"), p("etc/libfoo-link")).unwrap();

    // Symlinks: relative, absolute, dangling, long.
    symlink("libfoo.so.1", &p("usr/lib/libfoo.so"));
    symlink("/etc/hostname", &p("etc/hostname-abs"));
    symlink("../nowhere", &p("etc/dangling"));
    let long_target = format!("/{}", "long-target-component/".repeat(12));
    symlink(&long_target, &p("etc/long-link"));
    lchown(&p("etc/long-link"), 7, 8);

    // Devices and a FIFO.
    fs_err::create_dir(p("dev")).unwrap();
    mknod(&p("dev/null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(&p("dev/loop0"), FileType::BlockDevice, 0o660, 7, 0);
    mknod(
        &p("dev/big"),
        FileType::CharacterDevice,
        0o600,
        4095,
        1_048_575,
    );
    mknod(&p("run-fifo"), FileType::Fifo, 0o644, 0, 0);

    // Long names: a path over 100 bytes, a component of 255, a path over
    // 255 and a name that is not UTF-8.
    let long_dir = p(&format!("long/{}", "d".repeat(120)));
    write_file(&long_dir.join("file"), b"deep");
    write_file(&p(&format!("long/{}", "n".repeat(255))), b"255");
    let mut deep = p("long");
    for i in 0..5 {
        deep = deep.join(format!("{i}{}", "x".repeat(80)));
    }
    write_file(&deep.join("leaf"), b"over 255 bytes of path");
    write_file(
        &root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"not utf-8",
    );

    // A bigger file across many blocks.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_file(&p("var/big.bin"), &big);

    // Times: ordinary, before the epoch, after 2242 (beyond ustar's
    // 12-byte octal field).
    set_mtime(&p("etc/hostname"), 1_000_000_000);
    set_mtime(&p("etc/empty"), -86_400);
    set_mtime(&p("var/big.bin"), 9_000_000_000);
    set_mtime(&p("etc/hostname-abs"), 1_234_567_890);
    // Directories last: writing into them moved their mtimes.
    for (i, dir) in walk(root).iter().rev().enumerate() {
        let full = root.join(OsStr::from_bytes(dir));
        if full.symlink_metadata().unwrap().is_dir() {
            set_mtime(&full, 1_600_000_000 + i as i64);
        }
    }
}

/// Relative paths under `root`, depth first, names sorted bytewise.
pub fn walk(root: &Path) -> Vec<Vec<u8>> {
    fn go(root: &Path, rel: &[u8], out: &mut Vec<Vec<u8>>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let mut names: Vec<Vec<u8>> = fs_err::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        for name in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            out.push(child.clone());
            let meta = root
                .join(OsStr::from_bytes(&child))
                .symlink_metadata()
                .unwrap();
            if meta.is_dir() {
                go(root, &child, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, b"", &mut out);
    out
}

/// Which parts of a tree [`describe`] compares.
#[derive(Clone, Copy)]
pub struct Describe {
    pub dir_mtimes: bool,
    pub xattrs: bool,
}

impl Default for Describe {
    fn default() -> Self {
        Describe {
            dir_mtimes: true,
            xattrs: true,
        }
    }
}

/// One line per path: kind, mode, owner, size, content digest or target,
/// device numbers, mtime, xattrs (overlayfs's own left out) and, for the
/// second and later names of a file, which name it is a link of.
pub fn describe(root: &Path, what: Describe) -> Vec<String> {
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = Vec::new();
    for rel in walk(root) {
        let path = root.join(OsStr::from_bytes(&rel));
        let name = String::from_utf8_lossy(&rel).into_owned();
        let m = path.symlink_metadata().unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "other"
            }
        };
        let mut line = format!(
            "{name} {kind} {:o} {}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(f) = first.get(&(m.dev(), m.ino())) {
                out.push(format!("{name} link-of {f}"));
                continue;
            }
            first.insert((m.dev(), m.ino()), name.clone());
        }
        if ft.is_file() {
            let mut h = sha2::Sha256::new();
            let mut f = fs_err::File::open(&path).unwrap();
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            line += &format!(" size={} sha={}", m.len(), &hex::encode(h.finalize())[..16]);
        }
        if ft.is_symlink() {
            let t = fs_err::read_link(&path).unwrap();
            line += &format!(" -> {}", t.display());
        }
        if kind == "char" || kind == "block" {
            let rdev = m.rdev();
            line += &format!(
                " dev={},{}",
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev)
            );
        }
        if !ft.is_dir() || what.dir_mtimes {
            line += &format!(" mtime={}", m.mtime());
        }
        if what.xattrs {
            for (k, v) in xattrs(&path) {
                line += &format!(" {k}={}", hex::encode(v));
            }
        }
        out.push(line);
    }
    out
}

/// The xattrs of a path (not following symlinks), overlayfs's own left out.
pub fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("security.selinux") {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let n = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        value.truncate(n);
        out.push((name, value));
    }
    out.sort();
    out
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 64 * 1024];
    let n = rustix::fs::lgetxattr(path, name, &mut value[..]).ok()?;
    value.truncate(n);
    Some(value)
}

/// An entry as the `tar` crate (an independent reader) sees it.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub name: String,
    pub flag: char,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: String,
}

pub fn tar_listing(tar: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            TarEntry {
                name: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                flag: h.entry_type().as_byte() as char,
                size: e.size(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

pub fn tar_names(tar: &[u8]) -> Vec<String> {
    tar_listing(tar).into_iter().map(|e| e.name).collect()
}

/// A ustar header block written field by field, with none of the checks a
/// tar library makes: for archives no honest writer produces.
pub fn raw_header(name: &[u8], flag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 1_600_000_000);
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    checksum(&mut b);
    b
}

pub fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

pub fn checksum(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// Builds a tar from raw entries.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    pub fn header(&mut self, h: [u8; 512]) -> &mut Self {
        self.bytes.extend_from_slice(&h);
        self
    }

    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.header(raw_header(name.as_bytes(), b'0', data.len() as u64, b""))
            .data(data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.header(raw_header(name.as_bytes(), b'5', 0, b""))
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(raw_header(name.as_bytes(), b'2', 0, target.as_bytes()))
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(raw_header(name.as_bytes(), b'1', 0, target.as_bytes()))
    }

    /// A PAX header of the given records for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + rest.to_string().len();
            if len.to_string().len() != rest.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.header(raw_header(b"PaxHeaders/x", b'x', data.len() as u64, b""))
            .data(&data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.bytes)
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
