//! Sparse files as GNU tar writes them (old GNU `S` entries with extension
//! blocks, and the PAX formats 0.0, 0.1 and 1.0): extracted with their
//! holes, so a huge logical size costs neither memory nor disk nor time.

mod layer_support;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln_image::layer::{self, ExtractOptions, Whiteouts};
use kiln_testkit::need::{Root, need};
use layer_support::*;

const FORMATS: [&[&str]; 4] = [
    &["--format=gnu"],
    &["--format=posix", "--sparse-version=0.0"],
    &["--format=posix", "--sparse-version=0.1"],
    &["--format=posix", "--sparse-version=1.0"],
];

/// Writes `segments` (offset, byte, length) into a file of `size` bytes,
/// leaving holes between them.
fn sparse_file(path: &Path, size: u64, segments: &[(u64, u8, usize)]) {
    let f = fs_err::File::create(path).unwrap().into_file();
    for &(offset, byte, len) in segments {
        f.write_all_at(&vec![byte; len], offset).unwrap();
    }
    f.set_len(size).unwrap();
}

fn gnu_tar(src: &Path, format: &[&str], out: &Path) -> Vec<u8> {
    run(Command::new("tar")
        .args(format)
        .args(["--sparse", "--numeric-owner", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(src)
        .arg("."));
    fs_err::read(out).unwrap()
}

#[test]
fn sparse_entries_extract_exactly() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    // Ten segments: more than the four an old GNU header holds, so the map
    // continues in extension blocks.
    let segments: Vec<(u64, u8, usize)> = (0..10u64)
        .map(|i| {
            (
                i * 3 * 1024 * 1024 + i * 4096,
                b'a' + i as u8,
                4096 + 512 * i as usize,
            )
        })
        .collect();
    sparse_file(&src.join("sparse"), 40 << 20, &segments);
    // A sparse file ending in data and one that is all hole.
    sparse_file(&src.join("tail"), 1 << 20, &[(1_044_480, b'z', 4096)]);
    sparse_file(&src.join("empty"), 8 << 20, &[]);
    write_file(&src.join("plain"), b"not sparse");

    for format in FORMATS {
        let tar = gnu_tar(&src, format, &tmp.path().join("s.tar"));
        let dst = tmp.path().join(format!("dst{}", format.join("")));
        fs_err::create_dir(&dst).unwrap();
        let stats = layer::extract(&tar[..], &dst, &ExtractOptions::new(Whiteouts::Apply))
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        for name in ["sparse", "tail", "empty", "plain"] {
            run(Command::new("cmp").arg(src.join(name)).arg(dst.join(name)));
        }
        let m = fs_err::metadata(dst.join("sparse")).unwrap();
        assert!(m.blocks() * 512 < 1 << 20, "{format:?}: holes were written");
        assert_eq!(
            fs_err::metadata(dst.join("empty")).unwrap().blocks(),
            0,
            "{format:?}"
        );
        assert!(stats.bytes < 1 << 20, "{format:?}: {stats:?}");
        // GNU tar's real names, not its PAX 1.0 stand-ins.
        let names: Vec<String> = walk(&dst)
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(names, ["empty", "plain", "sparse", "tail"], "{format:?}");
    }
}

#[test]
fn a_terabyte_of_holes_is_free() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    let size = 1u64 << 40;
    sparse_file(
        &src.join("huge"),
        size,
        &[(0, b'<', 100), (size / 2, b'|', 4096), (size - 3, b'>', 3)],
    );
    for format in FORMATS {
        let tar = gnu_tar(&src, format, &tmp.path().join("h.tar"));
        assert!(tar.len() < 1 << 20, "GNU tar stored the holes");
        let dst = tmp.path().join(format!("dst{}", format.join("")));
        fs_err::create_dir(&dst).unwrap();
        layer::extract(&tar[..], &dst, &ExtractOptions::new(Whiteouts::Apply)).unwrap();
        let f = fs_err::File::open(dst.join("huge")).unwrap().into_file();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), size);
        assert!(m.blocks() * 512 < 1 << 20);
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, size - 3).unwrap();
        assert_eq!(&buf, b">>>");
        f.read_exact_at(&mut buf, size / 2 + 4094).unwrap();
        assert_eq!(&buf, b"||\0");
        f.read_exact_at(&mut buf, 98).unwrap();
        assert_eq!(&buf, b"<<\0");
        fs_err::remove_dir_all(&dst).unwrap();
    }
}
