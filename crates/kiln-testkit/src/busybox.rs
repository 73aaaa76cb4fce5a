//! Busybox (static, from Debian's `busybox-static`) as a tiny base image
//! for tests that run steps: the rootfs on disk, and the image in a store.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_image::Store;
use kiln_image::compress::{BlobWriter, CompressOptions};
use kiln_image::document::{ContainerConfig, Document, ImageConfig, Manifest, RootFs};
use kiln_image::media::{Compression, Format};

/// The tag [`image`] gives the image unless told otherwise.
pub const BUSYBOX_TAG: &str = "kiln.test/busybox:1";

/// The static busybox binary; panics with how to install it when missing.
pub fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox is missing: install busybox-static (scripts/test does)")
}

/// A user of the rootfs beyond root: `name:x:uid:uid`, home `/home/name`.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub name: &'a str,
    pub uid: u32,
}

/// Writes a busybox rootfs into `root`: /bin/busybox with a symlink per
/// applet, /etc/passwd and /etc/group with root and `users`, /root, each
/// user's home, and /tmp (mode 1777).
pub fn rootfs(root: &Path, users: &[User<'_>]) {
    for d in ["bin", "etc", "tmp", "root"] {
        fs_err::create_dir_all(root.join(d)).unwrap();
    }
    fs_err::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = busybox();
    fs_err::copy(&busybox, root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .unwrap();
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for user in users {
        let User { name, uid } = user;
        fs_err::create_dir_all(root.join("home").join(name)).unwrap();
        passwd.push_str(&format!(
            "{name}:x:{uid}:{uid}:{name}:/home/{name}:/bin/sh\n"
        ));
        group.push_str(&format!("{name}:x:{uid}:\n"));
    }
    fs_err::write(root.join("etc/passwd"), passwd).unwrap();
    fs_err::write(root.join("etc/group"), group).unwrap();
}

/// A one-layer busybox image (see [`rootfs`]) for the host's platform,
/// with `PATH=/bin`, tagged `tag` in `store`. Returns the tag.
pub fn image(store: &Store, tag: &str, users: &[User<'_>]) -> String {
    let dir = tempfile::tempdir().unwrap();
    rootfs(dir.path(), users);
    image_of_tree(store, tag, dir.path())
}

/// A one-layer image of the directory `tree` for the host's platform,
/// with `PATH=/bin`, tagged `tag` in `store`, no registry involved.
/// Returns the tag. File times are clamped to 1970: the same tree is the
/// same image in every store, as a base pulled by digest would be.
pub fn image_of_tree(store: &Store, tag: &str, tree: &Path) -> String {
    let ingest = store.ingest().unwrap();
    let mut writer = BlobWriter::new(ingest, &CompressOptions::new(Compression::Gzip)).unwrap();
    let mut options = kiln_image::layer::WriteOptions::default();
    options.epoch = Some(0);
    kiln_image::layer::write(tree, &mut writer, &options).unwrap();
    let (ingest, layer) = writer.finish().unwrap();
    let blob = ingest.commit().unwrap();
    let platform = kiln_image::Platform::host();
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/bin".into()]),
            ..ContainerConfig::default()
        }),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        ..ImageConfig::default()
    };
    let config_desc = store
        .put_document(&Document::with_media_type(Format::Oci.config(), config))
        .unwrap();
    let manifest = Document::new(Manifest::new(
        Format::Oci,
        config_desc,
        vec![blob.descriptor(Compression::Gzip.layer_media_type(Format::Oci))],
    ));
    let desc = store.put_document(&manifest).unwrap();
    store
        .tag(&kiln_image::Reference::parse(tag).unwrap(), &desc)
        .unwrap();
    tag.to_string()
}
