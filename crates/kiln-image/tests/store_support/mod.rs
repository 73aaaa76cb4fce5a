//! Helpers shared by the store, layout and docker-archive tests: images
//! made of real layer tars, child processes, and the docker/skopeo gate.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_image::document::{Descriptor, Document, ImageConfig, Index, Manifest, RootFs};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, Platform, Store};

/// A layer tar with a few files whose content depends on `seed`.
pub(crate) fn layer_tar(seed: &str, files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    b.append_data(&mut dir, "kiln/", std::io::empty()).unwrap();
    for i in 0..files {
        let body = format!("{seed} file {i}\n").repeat(i + 1);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, format!("kiln/{seed}-{i}.txt"), body.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap()
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A test image in `store`: `layers` layers (gzip when `compress`),
/// a config for `platform`, an OCI manifest. Returns the manifest's
/// descriptor (with platform) and the layer diffIDs.
pub(crate) fn make_image(
    store: &Store,
    seed: &str,
    layers: usize,
    platform: &Platform,
    compress: bool,
) -> (Descriptor, Vec<Digest>) {
    make_image_with(store, seed, layers, platform, compress, Format::Oci)
}

pub(crate) fn make_image_with(
    store: &Store,
    seed: &str,
    layers: usize,
    platform: &Platform,
    compress: bool,
    format: Format,
) -> (Descriptor, Vec<Digest>) {
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for i in 0..layers {
        let tar = layer_tar(&format!("{seed}-{i}"), 3 + i);
        diff_ids.push(Digest::of(&tar));
        let (bytes, c) = if compress {
            (gzip(&tar), Compression::Gzip)
        } else {
            (tar, Compression::None)
        };
        let blob = store.write_blob(&bytes).unwrap();
        descs.push(blob.descriptor(c.layer_media_type(format)));
    }
    let config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".to_string()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(kiln_image::document::ContainerConfig {
            env: Some(vec![format!("SEED={seed}")]),
            cmd: Some(vec!["/bin/sh".to_string()]),
            ..Default::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: diff_ids.clone(),
        },
        ..Default::default()
    };
    let config = Document::with_media_type(format.config(), config);
    let config_desc = store.put_document(&config).unwrap();
    let manifest = Document::new(Manifest::new(format, config_desc, descs));
    let d = store
        .put_document(&manifest)
        .unwrap()
        .with_platform(platform);
    (d, diff_ids)
}

/// A multi-platform image: one manifest per platform and an OCI index.
pub(crate) fn make_index(store: &Store, seed: &str, platforms: &[&str]) -> Descriptor {
    let manifests = platforms
        .iter()
        .map(|p| {
            let p = Platform::parse(p).unwrap();
            make_image(store, &format!("{seed}-{p}"), 2, &p, true).0
        })
        .collect();
    store
        .put_document(&Document::new(Index::new(Format::Oci, manifests)))
        .unwrap()
}

/// Re-runs this test binary as a child executing only `test`, with `env`.
pub(crate) fn spawn_child(test: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for `path` to exist (a child's "I am there" signal).
pub(crate) fn wait_for_file(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Files in a directory.
pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    match fs_err::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs a command, panicking with its output on failure; returns stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether dockerd uses the containerd image store, where an image's ID is
/// its manifest's digest rather than its config's.
pub(crate) fn docker_uses_containerd_store() -> bool {
    run(Command::new("docker").args(["info", "--format", "{{json .DriverStatus}}"]))
        .contains("io.containerd.snapshotter")
}
