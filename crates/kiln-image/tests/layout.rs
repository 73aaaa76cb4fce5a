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

/// The entry names of a tar, in order.
fn tar_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_tar_written_ahead_has_the_bytes_of_one_written_after() {
    // A build hands TarAhead its image's layers one more at a time, some
    // not in the store yet, and the list may turn out not to lead the
    // finished image (a layer re-encoded at the end): whatever was
    // written ahead, the file is write_tar's, byte for byte.
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let (image, _) = make_image(&store, "ahead", 4, &amd64, true);
    let (other, _) = make_image(&store, "other", 1, &amd64, true);
    let layers = |d: &kiln_image::document::Descriptor| {
        store
            .read_document::<kiln_image::document::Manifest>(d)
            .unwrap()
            .value()
            .layers
            .clone()
    };
    let (mine, foreign) = (layers(&image), layers(&other)[0].clone());
    let mut missing = mine[2].clone();
    missing.digest = Digest::of(b"not in the store");
    let images = [LayoutImage::tagged(
        &reference("example.com/ahead:1"),
        image.clone(),
    )];
    let serial = layout::write_tar(&store, Vec::new(), &images).unwrap().0;
    let names = tar_names(&serial);
    let blob = |d: &kiln_image::document::Descriptor| format!("blobs/sha256/{}", d.digest.hex());
    assert_eq!(names.first().map(String::as_str), Some("oci-layout"));
    assert_eq!(names.last().map(String::as_str), Some("index.json"));
    let at = |name: &str| names.iter().position(|n| n == name).unwrap();
    for pair in mine.windows(2) {
        assert!(at(&blob(&pair[0])) < at(&blob(&pair[1])), "{names:?}");
    }
    assert!(at(&blob(&mine[3])) < at(&blob(&image)), "{names:?}");

    let out = tempfile::tempdir().unwrap();
    type Feed<'a> = (&'a str, Vec<Vec<kiln_image::document::Descriptor>>, usize);
    let one_more = (1..=mine.len()).map(|n| mine[..n].to_vec()).collect();
    let mut with_missing = mine.clone();
    with_missing[2] = missing.clone();
    let mut longer = mine.clone();
    longer.push(foreign.clone());
    let cases: Vec<Feed> = vec![
        ("nothing ahead", vec![], 0),
        ("one more layer each time", one_more, 4),
        (
            "a layer not in the store yet",
            vec![with_missing, mine.clone()],
            4,
        ),
        (
            "a bottom that changed",
            vec![vec![foreign.clone()], mine.clone()],
            1,
        ),
        ("a layer the image does not have", vec![longer], 5),
    ];
    for (case, feeds, ahead) in cases {
        let path = out.path().join(format!("{case}.tar"));
        let mut tar = layout::TarAhead::new(fs_err::File::create(&path).unwrap()).unwrap();
        let mut written = 0;
        for feed in &feeds {
            written = tar.layers(&store, feed).unwrap();
        }
        assert_eq!(written, ahead, "{case}");
        let (file, _) = tar.finish(&store, &images).unwrap();
        drop(file);
        assert!(
            fs_err::read(&path).unwrap() == serial,
            "{case}: not write_tar's bytes"
        );
    }
    let copy = tempfile::tempdir().unwrap();
    let copy = Store::open(copy.path()).unwrap();
    let read = layout::read_tar(&copy, serial.as_slice()).unwrap();
    same_content(&store, &copy, &images, &read);
}
