//! Docker archives: what kiln writes loads in the real `docker load`, what
//! the real `docker save` writes reads into the store, and the old format
//! (`<id>/layer.tar`) reads too.

mod store_support;

use std::path::Path;
use std::process::Command;

use kiln_image::docker_archive::{self, ArchiveImage};
use kiln_image::document::{Document, ImageConfig, RootFs};
use kiln_image::media::{self, Format};
use kiln_image::{Digest, Platform, Reference, Store, StoreError};
use kiln_testkit::need::{Docker, need};
use store_support::{docker_uses_containerd_store, gzip, layer_tar, make_image, make_index, run};

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

/// Removes the named docker images when the test ends, pass or fail.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", name]).output();
        }
    }
}

fn inspect(name: &str) -> serde_json::Value {
    let out = run(Command::new("docker").args(["image", "inspect", name]));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// The file contents of `path` in the image's filesystem (via a created,
/// never started, container: the test images have no binaries).
fn file_in_image(image: &str, path: &str, scratch: &Path) -> String {
    let ctr = run(Command::new("docker").args(["create", image, "/none"]));
    let ctr = ctr.trim();
    let dest = scratch.join(ctr);
    let copied = Command::new("docker")
        .args(["cp", &format!("{ctr}:{path}"), &dest.display().to_string()])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rm", ctr]).output();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    fs_err::read_to_string(dest).unwrap()
}

#[test]
fn docker_loads_what_kiln_writes() {
    if need(Docker).is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let pid = std::process::id();
    let gz_name = format!("kiln-test/archive-gz-{pid}:1");
    let raw_name = format!("kiln-test/archive-raw-{pid}:2");
    let multi_name = format!("localhost:5000/kiln-test/archive-multi-{pid}:3");
    let _cleanup = DockerImages(vec![gz_name.clone(), raw_name.clone(), multi_name.clone()]);

    let (gz, gz_diffs) = make_image(&store, &format!("gz{pid}"), 2, &amd64(), true);
    let (raw, raw_diffs) = make_image(&store, &format!("raw{pid}"), 1, &amd64(), false);
    let multi = make_index(
        &store,
        &format!("multi{pid}"),
        &["linux/arm64", "linux/amd64"],
    );
    let images = [
        ArchiveImage {
            target: gz.clone(),
            tags: vec![reference(&gz_name)],
        },
        ArchiveImage {
            target: raw.clone(),
            tags: vec![reference(&raw_name)],
        },
        ArchiveImage {
            target: multi.clone(),
            tags: vec![reference(&multi_name)],
        },
    ];
    let archive = root.path().join("images.tar");
    docker_archive::write(
        &store,
        fs_err::File::create(&archive).unwrap(),
        &images,
        &amd64(),
    )
    .unwrap();
    let loaded = run(Command::new("docker").args(["load", "-i", &archive.display().to_string()]));

    let containerd = docker_uses_containerd_store();
    let multi_amd64 = store.select_manifest(&multi, &amd64()).unwrap();
    for (name, manifest, diffs) in [
        (
            &gz_name,
            store.select_manifest(&gz, &amd64()).unwrap(),
            gz_diffs,
        ),
        (
            &raw_name,
            store.select_manifest(&raw, &amd64()).unwrap(),
            raw_diffs,
        ),
        (&multi_name, multi_amd64.clone(), {
            let c = store
                .read_document::<ImageConfig>(&multi_amd64.value().config)
                .unwrap();
            c.value().rootfs.diff_ids.clone()
        }),
    ] {
        let info = inspect(name);
        // The classic store names an image by its config, the containerd
        // store by its manifest.
        let expected_id = if containerd {
            manifest.digest().to_string()
        } else {
            manifest.value().config.digest.to_string()
        };
        assert_eq!(info["Id"], expected_id, "{name}: {loaded}");
        let familiar = reference(name).familiar();
        assert!(
            info["RepoTags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| *t == familiar),
            "{name}: {}",
            info["RepoTags"]
        );
        let layers: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(
            info["RootFS"]["Layers"],
            serde_json::json!(layers),
            "{name}"
        );
        assert_eq!(info["Architecture"], "amd64");
    }
    // The layers were applied, compressed and not.
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(
        file_in_image(&gz_name, &format!("/kiln/gz{pid}-1-2.txt"), scratch.path()),
        format!("gz{pid}-1 file 2\n").repeat(3)
    );
    assert_eq!(
        file_in_image(
            &raw_name,
            &format!("/kiln/raw{pid}-0-0.txt"),
            scratch.path()
        ),
        format!("raw{pid}-0 file 0\n")
    );
}

/// A rootfs tar to `docker import`: a few files, and busybox when the
/// machine has it (scripts/test installs busybox-static).
fn rootfs_tar(pid: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, body: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, body).unwrap();
    };
    add("etc/kiln", format!("imported by {pid}\n").as_bytes(), 0o644);
    if let Ok(busybox) = fs_err::read("/bin/busybox") {
        add("bin/busybox", &busybox, 0o755);
    }
    b.into_inner().unwrap()
}

#[test]
fn kiln_reads_what_docker_saves() {
    if need(Docker).is_none() {
        return;
    }
    let pid = std::process::id();
    let name = format!("kiln-test/saved-{pid}:1");
    let again = format!("kiln-test/saved-again-{pid}:2");
    let _cleanup = DockerImages(vec![name.clone(), again.clone()]);
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = scratch.path().join("rootfs.tar");
    fs_err::write(&rootfs, rootfs_tar(pid)).unwrap();
    run(Command::new("docker").args(["import", &rootfs.display().to_string(), &name]));
    let saved = scratch.path().join("saved.tar");
    run(Command::new("docker").args(["save", "-o", &saved.display().to_string(), &name]));
    let info = inspect(&name);

    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let loaded =
        docker_archive::read(&store, fs_err::File::open(&saved).unwrap(), Format::Oci).unwrap();
    assert_eq!(loaded.len(), 1);
    let image = &loaded[0];
    assert_eq!(image.tags, [reference(&name)]);
    let manifest = store.select_manifest(&image.manifest, &amd64()).unwrap();
    let config = store
        .read_document::<ImageConfig>(&manifest.value().config)
        .unwrap();
    let layers: Vec<String> = config
        .value()
        .rootfs
        .diff_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(info["RootFS"]["Layers"], serde_json::json!(layers));
    if docker_uses_containerd_store() {
        // Docker's own manifest was kept, so the image keeps its ID.
        assert_eq!(info["Id"], image.manifest.digest.to_string());
    } else {
        assert_eq!(info["Id"], image.config.to_string());
    }
    assert_eq!(image.manifest.platform(), Some(amd64()));
    store.tag(&image.tags[0], &image.manifest).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // Back out through kiln's writer, into docker under another name.
    let out = scratch.path().join("again.tar");
    docker_archive::write(
        &store,
        fs_err::File::create(&out).unwrap(),
        &[ArchiveImage {
            target: image.manifest.clone(),
            tags: vec![reference(&again)],
        }],
        &amd64(),
    )
    .unwrap();
    run(Command::new("docker").args(["load", "-i", &out.display().to_string()]));
    assert_eq!(inspect(&again)["Id"], info["Id"]);
    if Path::new("/bin/busybox").exists() {
        let said = run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &again,
            "/bin/busybox",
            "cat",
            "/etc/kiln",
        ]));
        assert_eq!(said, format!("imported by {pid}\n"));
    }
}

/// The format before Docker 25: `<id>/layer.tar`, `<id>/json`,
/// `<config hex>.json`, a symlink for a repeated layer.
fn legacy_archive(config: &[u8], config_hex: &str, layers: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, body).unwrap();
    };
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        file(&mut b, &format!("{id}/VERSION"), b"1.0");
        file(&mut b, &format!("{id}/json"), b"{}");
        if i > 0 && layers[i] == layers[0] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            h.set_mtime(0);
            b.append_link(
                &mut h,
                format!("{id}/layer.tar"),
                format!("../{:064x}/layer.tar", 1),
            )
            .unwrap();
        } else {
            file(&mut b, &format!("{id}/layer.tar"), layer);
        }
        paths.push(format!("{id}/layer.tar"));
    }
    file(&mut b, &format!("{config_hex}.json"), config);
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [tag],
        "Layers": paths,
    }]);
    file(&mut b, "manifest.json", manifest.to_string().as_bytes());
    file(&mut b, "repositories", b"{}");
    b.into_inner().unwrap()
}

fn legacy_image(layers: &[Vec<u8>], diff_ids: Vec<Digest>) -> (Vec<u8>, Digest) {
    let config = Document::with_media_type(
        media::DOCKER_CONFIG,
        ImageConfig {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
            ..Default::default()
        },
    );
    let archive = legacy_archive(config.bytes(), config.digest().hex(), layers, "old/style:7");
    (archive, config.digest().clone())
}

#[test]
fn reads_the_old_docker_save_format() {
    let one = layer_tar("legacy-1", 2);
    let two = gzip(&layer_tar("legacy-2", 3));
    let layers = vec![one.clone(), two.clone(), one.clone()];
    let diff_ids = vec![
        Digest::of(&one),
        Digest::of(&layer_tar("legacy-2", 3)),
        Digest::of(&one),
    ];
    let (archive, config) = legacy_image(&layers, diff_ids);
    for format in [Format::Oci, Format::Docker] {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let loaded = docker_archive::read(&store, archive.as_slice(), format).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].config, config);
        assert_eq!(loaded[0].tags, [reference("docker.io/old/style:7")]);
        assert_eq!(loaded[0].manifest.media_type, format.manifest());
        assert_eq!(
            loaded[0].manifest.platform(),
            Some(Platform::parse("linux/arm64").unwrap())
        );
        let manifest = store
            .select_manifest(&loaded[0].manifest, &amd64())
            .unwrap();
        let types: Vec<&str> = manifest
            .value()
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        // Uncompressed layers stay uncompressed: digest = diffID.
        let plain = media::Compression::None.layer_media_type(format);
        let gz = media::Compression::Gzip.layer_media_type(format);
        assert_eq!(types, [plain, gz, plain]);
        assert_eq!(manifest.value().layers[0].digest, Digest::of(&one));
        assert_eq!(manifest.value().layers[1].digest, Digest::of(&two));
        assert_eq!(manifest.value().config.media_type, format.config());
        store.tag(&loaded[0].tags[0], &loaded[0].manifest).unwrap();
        assert!(store.verify().unwrap().is_ok());
    }
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let one = layer_tar("real", 2);
    let (archive, _) = legacy_image(
        std::slice::from_ref(&one),
        vec![Digest::of(b"something else")],
    );
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let err = docker_archive::read(&store, archive.as_slice(), Format::Oci).unwrap_err();
    assert!(
        matches!(&err, StoreError::DiffIdMismatch { actual, .. } if *actual == Digest::of(&one)),
        "{err}"
    );
    // And a gzip layer is checked through its decompressed bytes.
    let (archive, _) = legacy_image(&[gzip(&one)], vec![Digest::of(b"something else")]);
    let err = docker_archive::read(&store, archive.as_slice(), Format::Oci).unwrap_err();
    assert!(
        matches!(&err, StoreError::DiffIdMismatch { actual, .. } if *actual == Digest::of(&one)),
        "{err}"
    );
}

#[test]
fn an_oci_layout_is_not_a_docker_archive() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (image, _) = make_image(&store, "x", 1, &amd64(), true);
    let tar = kiln_image::layout::write_tar(
        &store,
        Vec::new(),
        &[kiln_image::layout::LayoutImage::named("x", image)],
    )
    .unwrap()
    .0;
    let err = docker_archive::read(&store, tar.as_slice(), Format::Oci).unwrap_err();
    assert!(err.to_string().contains("layout::read_tar"), "{err}");
}
