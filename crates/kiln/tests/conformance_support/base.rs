//! The base images every case builds on, made here (no internet) and pushed
//! once per test run to a loopback registry that both builders pull from.
//!
//! - `busybox`: Debian's static busybox with every applet as a symlink
//!   (`/bin/sh -> /bin/busybox`, `/usr/bin/env -> /bin/busybox`, ...),
//!   `/etc/passwd` and `/etc/group` with root, daemon, a user (1000) and
//!   nobody, `/tmp` 1777, `/root` 0700, and `Env PATH`, `Cmd ["sh"]` as the
//!   Docker Hub image has. No `/dev`, `/proc`, `/sys` or `/etc/hosts`: the
//!   mount points a RUN needs must not leak into its layer. An index for
//!   linux/amd64 and linux/arm64 (same bytes; only amd64 runs here), so
//!   `--platform` and the platform args have something to select.
//! - `bare`: the same files, a config with no `Env` or `Cmd`.
//! - `layered`: busybox plus a second layer with things to delete, replace
//!   and copy (a tree, an opaque-dir candidate, hard links, a setuid file,
//!   a fifo, files owned by 1000:1000, symlinks through directories) and a
//!   config that sets every runtime field, for inheritance.
//! - `onbuild`: busybox with ONBUILD triggers.
//!
//! Layers are uncompressed tars with fixed mtimes (`BASE_MTIME`) and
//! numeric owners, so the same bytes come out on every run.

use std::path::Path;
use std::process::Command;

use kiln_image::Digest;
use serde_json::{Value, json};

/// mtime of every base image file: 2021-01-01T00:00:00Z.
pub(crate) const BASE_MTIME: u64 = 1_609_459_200;

/// Names a case may use in its Dockerfile as `{{name}}`, with where each is.
#[derive(Debug, Clone)]
pub(crate) struct BaseImages {
    /// `127.0.0.1:PORT`.
    pub(crate) registry: String,
}

impl BaseImages {
    /// The full reference of a base image by placeholder name.
    pub(crate) fn reference(&self, name: &str) -> Option<String> {
        let repo = match name {
            "busybox" => "kiln-test/busybox:1",
            "bare" => "kiln-test/bare:1",
            "layered" => "kiln-test/layered:1",
            "onbuild" => "kiln-test/onbuild:1",
            "registry" => return Some(self.registry.clone()),
            _ => return None,
        };
        Some(format!("{}/{repo}", self.registry))
    }

    /// Replaces `{{name}}` placeholders in `text`; unknown names are errors.
    pub(crate) fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed placeholder in {rest:?}"))?;
            let name = rest[start + 2..start + end].trim();
            let value = self
                .reference(name)
                .ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
            out.push_str(&rest[..start]);
            out.push_str(&value);
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A tar being made, entry by entry.
struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(BASE_MTIME);
        h.set_size(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32, owner: (u64, u64)) -> &mut Self {
        let mut h = Layer::header(tar::EntryType::Directory, mode, owner);
        self.tar
            .append_data(&mut h, format!("{path}/"), &[][..])
            .expect("tar in memory");
        self
    }

    fn file(&mut self, path: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> &mut Self {
        let mut h = Layer::header(tar::EntryType::Regular, mode, owner);
        h.set_size(data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .expect("tar in memory");
        self
    }

    fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) -> &mut Self {
        // A hard link's header repeats its target's mode, as tar writes it.
        let mode = if kind == tar::EntryType::Link {
            0o644
        } else {
            0o777
        };
        let mut h = Layer::header(kind, mode, (0, 0));
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar in memory");
        self
    }

    fn special(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        dev: (u32, u32),
    ) -> &mut Self {
        let mut h = Layer::header(kind, mode, (0, 0));
        h.set_device_major(dev.0).expect("a gnu header");
        h.set_device_minor(dev.1).expect("a gnu header");
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("tar in memory");
        self
    }

    fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("tar in memory")
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

const GROUP: &str = "root:x:0:\n\
daemon:x:1:\n\
wheel:x:10:root\n\
staff:x:50:user\n\
user:x:1000:\n\
nogroup:x:65534:\n";

/// The busybox root filesystem as one layer.
fn busybox_layer() -> Vec<u8> {
    let busybox = fs_err::read("/bin/busybox").expect("/bin/busybox (busybox-static) is installed");
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|a| a != "bin/busybox" && a.contains('/'))
        .collect();
    applets.sort();
    let root = (0, 0);
    let mut l = Layer::new();
    for dir in [
        "bin",
        "etc",
        "home",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "var",
        "var/spool",
        "var/www",
    ] {
        l.dir(dir, 0o755, root);
    }
    l.dir("home/user", 0o755, (1000, 1000))
        .dir("root", 0o700, root)
        .dir("tmp", 0o1777, root)
        .file("bin/busybox", 0o755, root, &busybox)
        .file("etc/passwd", 0o644, root, PASSWD.as_bytes())
        .file("etc/group", 0o644, root, GROUP.as_bytes());
    for applet in &applets {
        l.link(tar::EntryType::Symlink, applet, "/bin/busybox");
    }
    l.finish()
}

/// What `layered` adds over busybox.
fn layered_layer() -> Vec<u8> {
    use tar::EntryType::{Block, Char, Fifo, Link, Symlink};
    let root = (0, 0);
    let user = (1000, 1000);
    let mut l = Layer::new();
    l.dir("data", 0o755, root)
        .dir("data/tree", 0o755, root)
        .dir("data/tree/sub", 0o750, user)
        .file("data/tree/a.txt", 0o644, root, b"a\n")
        .file("data/tree/sub/b.txt", 0o600, user, b"b\n")
        .dir("data/tree/sub/deeper", 0o755, root)
        .file("data/tree/sub/deeper/c.txt", 0o644, root, b"c\n")
        .dir("data/opaque", 0o755, root)
        .file("data/opaque/old1", 0o644, root, b"old1\n")
        .file("data/opaque/old2", 0o644, root, b"old2\n")
        .file("data/hard1", 0o644, root, b"linked\n")
        .link(Link, "data/hard2", "data/hard1")
        .file("data/setuid", 0o4755, root, b"#!/bin/sh\necho setuid\n")
        .file("data/setgid", 0o2755, (0, 50), b"#!/bin/sh\necho setgid\n")
        .dir("data/sticky", 0o1777, root)
        .file("data/owned", 0o640, user, b"owned by user\n")
        .special(Fifo, "data/fifo", 0o644, (0, 0))
        .special(Char, "data/null", 0o666, (1, 3))
        .special(Block, "data/loop9", 0o660, (7, 9))
        .link(Symlink, "data/tree-link", "tree")
        .link(Symlink, "data/abs-link", "/data/tree/sub")
        .link(Symlink, "data/dangling", "/nonexistent/file")
        .dir("etc/app", 0o755, root)
        .file("etc/app/app.conf", 0o644, root, b"key=value\n")
        .file("etc/app/remove-me", 0o644, root, b"remove me\n");
    l.finish()
}

/// One image of an OCI layout: blobs written, manifest descriptor returned.
fn write_image(
    layout: &Path,
    layers: &[&[u8]],
    config: Value,
    platform: (&str, Option<&str>),
) -> Value {
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| -> Digest {
        let d = Digest::of(bytes);
        fs_err::write(blobs.join(d.hex()), bytes).expect("write blob");
        d
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let d = put(layer);
        diff_ids.push(d.to_string());
        layer_descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.to_string(),
            "size": layer.len(),
        }));
    }
    let mut config = config;
    config["architecture"] = json!(platform.0);
    config["os"] = json!("linux");
    if let Some(v) = platform.1 {
        config["variant"] = json!(v);
    }
    config["created"] = json!("2021-01-01T00:00:00Z");
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["history"] = Value::Array(
        (0..layers.len())
            .map(|i| json!({"created": "2021-01-01T00:00:00Z", "created_by": format!("kiln conformance base layer {i}")}))
            .collect(),
    );
    let config_bytes = serde_json::to_vec(&config).expect("json");
    let config_digest = put(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    let digest = put(&manifest_bytes);
    let mut platform_json = json!({"architecture": platform.0, "os": "linux"});
    if let Some(v) = platform.1 {
        platform_json["variant"] = json!(v);
    }
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest.to_string(),
        "size": manifest_bytes.len(),
        "platform": platform_json,
    })
}

/// Writes an OCI layout holding one multi-platform image (amd64 + arm64).
fn write_layout(layout: &Path, layers: &[&[u8]], config: &Value) {
    fs_err::create_dir_all(layout.join("blobs/sha256")).expect("layout dir");
    let manifests = vec![
        write_image(layout, layers, config.clone(), ("amd64", None)),
        write_image(layout, layers, config.clone(), ("arm64", Some("v8"))),
    ];
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let index_bytes = serde_json::to_vec(&index).expect("json");
    let index_digest = Digest::of(&index_bytes);
    fs_err::write(
        layout.join("blobs/sha256").join(index_digest.hex()),
        &index_bytes,
    )
    .expect("write index");
    let top = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest.to_string(),
            "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    fs_err::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).expect("json"),
    )
    .expect("write index.json");
    fs_err::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
}

/// Pushes a layout's image (every platform) to `dest` with skopeo.
fn push(layout: &Path, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The default PATH, as BuildKit sets it for Linux.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes the base images and pushes them to `registry` (`127.0.0.1:PORT`),
/// also under the Docker Hub names the BuildKit integration tests use
/// (`library/busybox:latest`, `library/alpine:latest`, ...).
pub(crate) fn publish(registry: &str, work: &Path) -> BaseImages {
    let busybox = busybox_layer();
    let layered = layered_layer();
    let plain = json!({"config": {"Env": [format!("PATH={DEFAULT_PATH}")], "Cmd": ["sh"]}});
    let bare = json!({"config": {}});
    let rich = json!({"config": {
        "Env": [format!("PATH={DEFAULT_PATH}"), "BASE_VAR=from-base", "SHARED=base"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo base"],
        "WorkingDir": "/data",
        "Labels": {"base.label": "yes", "override.me": "base"},
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/base-volume": {}},
        "StopSignal": "SIGQUIT",
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000i64, "Retries": 3},
    }});
    let onbuild = json!({"config": {
        "Env": [format!("PATH={DEFAULT_PATH}")],
        "Cmd": ["sh"],
        "OnBuild": ["RUN echo triggered > /onbuild-ran", "ENV FROM_TRIGGER=1", "LABEL trigger=yes"],
    }});
    let images: [(&str, Vec<&[u8]>, &Value); 4] = [
        ("busybox", vec![&busybox], &plain),
        ("bare", vec![&busybox], &bare),
        ("layered", vec![&busybox, &layered], &rich),
        ("onbuild", vec![&busybox], &onbuild),
    ];
    for (name, layers, config) in images {
        let layout = work.join(format!("layout-{name}"));
        write_layout(&layout, &layers, config);
        push(&layout, &format!("{registry}/kiln-test/{name}:1"));
        if name == "busybox" {
            for alias in [
                "library/busybox:latest",
                "library/busybox:stable",
                "library/busybox:1",
                "library/busybox:1.36",
                "library/busybox:stable-musl",
                "library/busybox:stable-glibc",
                "library/busybox:stable-uclibc",
                "library/alpine:latest",
                "library/alpine:3",
                "library/debian:latest",
            ] {
                push(&layout, &format!("{registry}/{alias}"));
            }
        }
    }
    BaseImages {
        registry: registry.to_string(),
    }
}
