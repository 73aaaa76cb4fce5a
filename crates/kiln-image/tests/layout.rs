//! OCI image layouts: round trips through a directory and a tar, and
//! skopeo reading what kiln writes (and the other way round).

mod store_support;

use std::process::Command;

use kiln_image::layout::{self, LayoutImage};
use kiln_image::{Digest, Platform, Reference, Store, StoreError};
use kiln_testkit::need::{Tool, need};
use store_support::{make_image, make_index, run};

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// A store with a single-platform image and a two-platform index.
fn source() -> (tempfile::TempDir, Store, Vec<LayoutImage>) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let (single, _) = make_image(&store, "single", 3, &amd64, true);
    let multi = make_index(&store, "multi", &["linux/amd64", "linux/arm64"]);
    let images = vec![
        LayoutImage::tagged(&reference("example.com/app:1"), single),
        LayoutImage::tagged(&reference("example.com/multi"), multi),
    ];
    (root, store, images)
}

fn same_content(a: &Store, b: &Store, images: &[LayoutImage], read: &[LayoutImage]) {
    assert_eq!(read, images);
    for image in images {
        let blobs = a.image_blobs(&image.target).unwrap();
        assert_eq!(b.image_blobs(&image.target).unwrap(), blobs);
        for d in blobs {
            assert_eq!(
                fs_err::read(b.blob_path(&d.digest)).unwrap(),
                fs_err::read(a.blob_path(&d.digest)).unwrap()
            );
        }
    }
    assert!(b.verify().unwrap().is_ok());
}

#[test]
fn directory_round_trip() {
    let (_root, store, images) = source();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    layout::write_dir(&store, &dir, &images).unwrap();
    assert_eq!(
        fs_err::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["1", "latest"]);
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "example.com/app:1"
    );

    let other = tempfile::tempdir().unwrap();
    let copy = Store::open(other.path()).unwrap();
    let read = layout::read_dir(&copy, &dir).unwrap();
    same_content(&store, &copy, &images, &read);

    // Writing again adds to the layout and replaces same-named entries.
    let extra = LayoutImage::named("extra", images[0].target.clone());
    layout::write_dir(&store, &dir, std::slice::from_ref(&extra)).unwrap();
    let again = layout::read_dir(&copy, &dir).unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again[2], extra);
}

#[test]
fn tar_round_trip_is_deterministic() {
    let (_root, store, images) = source();
    let tar = layout::write_tar(&store, Vec::new(), &images).unwrap().0;
    assert_eq!(
        layout::write_tar(&store, Vec::new(), &images).unwrap().0,
        tar
    );
    let other = tempfile::tempdir().unwrap();
    let copy = Store::open(other.path()).unwrap();
    let read = layout::read_tar(&copy, tar.as_slice()).unwrap();
    same_content(&store, &copy, &images, &read);
}

#[test]
fn a_corrupt_blob_in_a_tar_is_refused() {
    let (_root, store, images) = source();
    let mut tar = layout::write_tar(&store, Vec::new(), &images[..1])
        .unwrap()
        .0;
    // Flip a byte inside the config blob's data (it is JSON: find it).
    let config = store
        .select_manifest(&images[0].target, &Platform::parse("linux/amd64").unwrap())
        .unwrap()
        .value()
        .config
        .clone();
    let bytes = fs_err::read(store.blob_path(&config.digest)).unwrap();
    let at = tar
        .windows(bytes.len())
        .position(|w| w == bytes.as_slice())
        .unwrap();
    tar[at + 5] ^= 0x20;
    let other = tempfile::tempdir().unwrap();
    let copy = Store::open(other.path()).unwrap();
    let err = layout::read_tar(&copy, tar.as_slice()).unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, .. } if *expected == config.digest),
        "{err}"
    );
    assert!(!copy.contains(&config.digest).unwrap());
    let damaged = Digest::of(&tar[at..at + bytes.len()]);
    assert!(!copy.contains(&damaged).unwrap());
}

#[test]
fn skopeo_reads_what_kiln_writes() {
    if need(Tool::Skopeo).is_none() {
        return;
    }
    let (_root, store, images) = source();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    layout::write_dir(&store, &dir, &images).unwrap();
    let manifest = store
        .select_manifest(&images[0].target, &Platform::parse("linux/amd64").unwrap())
        .unwrap();

    let inspect: serde_json::Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", &format!("oci:{}:1", dir.display())])
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], manifest.digest().to_string());
    let layers: Vec<String> = manifest
        .value()
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers));
    assert_eq!(inspect["Architecture"], "amd64");

    let copied = out.path().join("copied");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", dir.display()),
        &format!("dir:{}", copied.display()),
    ]));
    let manifest_bytes = fs_err::read(copied.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&manifest_bytes), *manifest.digest());
    for d in manifest.value().blobs() {
        assert_eq!(
            fs_err::read(copied.join(d.digest.hex())).unwrap(),
            fs_err::read(store.blob_path(&d.digest)).unwrap()
        );
    }

    // The tar form, and the multi-platform index, through skopeo too.
    let archive = out.path().join("layout.tar");
    layout::write_tar(&store, fs_err::File::create(&archive).unwrap(), &images).unwrap();
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:latest", archive.display()),
    ]));
    assert_eq!(Digest::of(raw.as_bytes()), images[1].target.digest, "{raw}");

    // And kiln reads a layout skopeo wrote.
    let theirs = out.path().join("theirs");
    run(Command::new("skopeo").args([
        "copy",
        &format!("dir:{}", copied.display()),
        &format!("oci:{}:again", theirs.display()),
    ]));
    let fresh = tempfile::tempdir().unwrap();
    let copy = Store::open(fresh.path()).unwrap();
    let read = layout::read_dir(&copy, &theirs).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].name.as_deref(), Some("again"));
    assert_eq!(read[0].target.digest, *manifest.digest());
    assert!(copy.verify().unwrap().is_ok());
}
