//! Exports whose blob bytes the kernel copies (`copy_file_range`,
//! reflinks) give the same bytes as exports that copy them through kiln,
//! and take the kernel's way where they can.

mod store_support;

use std::path::Path;

use kiln_fs::CopyStats;
use kiln_image::docker_archive::{self, ArchiveImage};
use kiln_image::layout::{self, LayoutImage};
use kiln_image::{Digest, Platform, Reference, Store};
use store_support::{make_image, make_index};

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

/// A store with a single-platform image and a two-platform index.
fn source() -> (tempfile::TempDir, Store, Vec<LayoutImage>) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (single, _) = make_image(&store, "single", 3, &amd64(), true);
    let multi = make_index(&store, "multi", &["linux/amd64", "linux/arm64"]);
    let images = vec![
        LayoutImage::tagged(&reference("example.com/app:1"), single),
        LayoutImage::tagged(&reference("example.com/multi"), multi),
    ];
    (root, store, images)
}

/// The sum of the blob sizes `images` need, each blob once.
fn blob_bytes(store: &Store, images: &[LayoutImage]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    images
        .iter()
        .flat_map(|i| store.image_blobs(&i.target).unwrap())
        .filter(|d| seen.insert(d.digest.clone()))
        .map(|d| d.size)
        .sum()
}

/// The output directory sits beside the store (the same filesystem), as
/// `copy_file_range` needs since Linux 5.19.
fn out_file(store: &Store, name: &str) -> std::path::PathBuf {
    store.root().join(name)
}

fn kernel_only(stats: CopyStats, bytes: u64) {
    assert!(bytes > 0);
    assert_eq!(stats.in_userspace, 0, "{stats:?}");
    assert_eq!(stats.cloned + stats.in_kernel, bytes, "{stats:?}");
}

#[test]
fn an_oci_tar_is_the_same_whether_the_kernel_copies_or_kiln_does() {
    let (_root, store, images) = source();
    let (through_kiln, slow) = layout::write_tar(&store, Vec::new(), &images).unwrap();
    assert_eq!(slow.in_kernel, 0);
    assert_eq!(slow.in_userspace, blob_bytes(&store, &images));

    let path = out_file(&store, "out.tar");
    let file = fs_err::File::create(&path).unwrap();
    let (_, fast) = layout::write_tar(&store, file, &images).unwrap();
    kernel_only(fast, blob_bytes(&store, &images));
    assert!(fs_err::read(&path).unwrap() == through_kiln);
}

#[test]
fn a_docker_archive_is_the_same_whether_the_kernel_copies_or_kiln_does() {
    let (_root, store, images) = source();
    let images: Vec<ArchiveImage> = images
        .into_iter()
        .map(|i| ArchiveImage {
            tags: vec![i.reference.unwrap()],
            target: i.target,
        })
        .collect();
    let (through_kiln, slow) =
        docker_archive::write(&store, Vec::new(), &images, &amd64()).unwrap();
    assert_eq!(slow.in_kernel, 0);
    assert!(slow.in_userspace > 0);

    let path = out_file(&store, "docker.tar");
    let file = fs_err::File::create(&path).unwrap();
    let (_, fast) = docker_archive::write(&store, file, &images, &amd64()).unwrap();
    kernel_only(fast, slow.in_userspace);
    assert!(fs_err::read(&path).unwrap() == through_kiln);
}

#[test]
fn a_tar_after_other_bytes_in_the_file_lands_after_them() {
    // The kernel writes at the file's position: what was there stays.
    let (_root, store, images) = source();
    let (through_kiln, _) = layout::write_tar(&store, Vec::new(), &images[..1]).unwrap();
    let path = out_file(&store, "prefixed.tar");
    let mut file = fs_err::File::create(&path).unwrap();
    std::io::Write::write_all(&mut file, b"prefix").unwrap();
    let (_, fast) = layout::write_tar(&store, file, &images[..1]).unwrap();
    assert!(fast.in_kernel > 0);
    let written = fs_err::read(&path).unwrap();
    assert!(written[..6] == *b"prefix" && written[6..] == through_kiln);
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            (name, fs_err::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_layout_directory_is_the_same_whether_the_kernel_copies_or_kiln_does() {
    let (_root, store, images) = source();
    let bytes = blob_bytes(&store, &images);
    let slow_dir = out_file(&store, "slow");
    let slow = layout::write_dir_with(&store, &slow_dir, &images, false).unwrap();
    assert_eq!(
        (slow.in_kernel, slow.cloned, slow.in_userspace),
        (0, 0, bytes)
    );

    let fast_dir = out_file(&store, "fast");
    let fast = layout::write_dir(&store, &fast_dir, &images).unwrap();
    kernel_only(fast, bytes);
    let written = files(&fast_dir);
    assert!(written == files(&slow_dir));
    for (name, content) in &written {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(Digest::of(content).hex(), hex);
        }
    }
    // Writing again copies nothing: the blobs are there.
    let again = layout::write_dir(&store, &fast_dir, &images).unwrap();
    assert_eq!(again.total(), 0);
}

#[test]
fn a_layout_directory_does_not_share_the_stores_inodes() {
    // A hardlink would let a write to the layout change the store's blob.
    use std::os::unix::fs::MetadataExt;
    let (_root, store, images) = source();
    let dir = out_file(&store, "layout");
    layout::write_dir(&store, &dir, &images).unwrap();
    for d in store.image_blobs(&images[0].target).unwrap() {
        let ours = fs_err::metadata(dir.join("blobs/sha256").join(d.digest.hex())).unwrap();
        let stores = fs_err::metadata(store.blob_path(&d.digest)).unwrap();
        assert_ne!((ours.dev(), ours.ino()), (stores.dev(), stores.ino()));
    }
}
