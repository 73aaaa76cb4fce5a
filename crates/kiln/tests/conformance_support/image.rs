//! An OCI layout tarball (what `--output type=oci,dest=X.tar` writes) read
//! back into what the comparison looks at: per platform, the image config
//! and the filesystem the layers make when applied in order.
//!
//! The flattening is done here, in memory, independently of kiln's own
//! layer code (kiln must not be its own oracle): a layer's whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) delete from the layers below it, then its
//! entries are added, a directory over a directory keeping the children,
//! anything else replacing what was there with everything below it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use kiln_image::Digest;
use serde_json::Value;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// One path of a flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: u64,
    /// sha256 of a regular file's content.
    pub(crate) digest: Option<String>,
    /// A symlink's target.
    pub(crate) link: Option<String>,
    /// Major and minor of a device node.
    pub(crate) device: Option<(u32, u32)>,
    pub(crate) mtime: u64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub(crate) xattrs: BTreeMap<String, Vec<u8>>,
    /// Paths with the same inode are hard links of each other.
    pub(crate) inode: u64,
    /// Made up because an entry below it came without it.
    pub(crate) implied: bool,
}

/// One platform's image.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) platform: String,
    /// The config document (`architecture`, `os`, `config`, ...).
    pub(crate) config: Value,
    /// Absolute path (`/etc/passwd`) to what is there.
    pub(crate) tree: BTreeMap<String, Node>,
}

impl Image {
    /// The sets of paths sharing an inode, each sorted, for regular files
    /// linked more than once.
    pub(crate) fn hardlink_groups(&self) -> Vec<Vec<String>> {
        let mut by_inode: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (path, node) in &self.tree {
            if node.kind == Kind::File {
                by_inode.entry(node.inode).or_default().push(path.clone());
            }
        }
        let mut groups: Vec<Vec<String>> = by_inode.into_values().filter(|g| g.len() > 1).collect();
        groups.sort();
        groups
    }
}

/// Reads every image of an OCI layout tarball, one per platform (attestation
/// manifests left out), sorted by platform.
pub(crate) fn read_oci_tar(path: &Path) -> Result<Vec<Image>, String> {
    let file = fs_err::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        let mut entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{name}: {e}"))?;
        files.insert(name, bytes);
    }
    let blob = |digest: &str| -> Result<&Vec<u8>, String> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| format!("blob {digest} missing from {}", path.display()))
    };
    let json = |bytes: &[u8]| -> Result<Value, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    };
    let index = json(files.get("index.json").ok_or("index.json missing")?)?;

    let mut manifests = Vec::new();
    let mut queue: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
    while let Some(desc) = queue.pop() {
        let media = desc["mediaType"].as_str().unwrap_or_default();
        let doc = json(blob(desc["digest"].as_str().unwrap_or_default())?)?;
        if media.contains("index")
            || media.contains("manifest.list")
            || doc.get("manifests").is_some()
        {
            queue.extend(doc["manifests"].as_array().cloned().unwrap_or_default());
            continue;
        }
        let annotations = &desc["annotations"];
        if annotations["vnd.docker.reference.type"] == "attestation-manifest" {
            continue;
        }
        manifests.push(doc);
    }
    let mut images = Vec::new();
    for manifest in manifests {
        let config = json(blob(
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        )?)?;
        let platform = platform_of(&config);
        let mut tree = Tree::default();
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        for layer in &layers {
            let bytes = blob(layer["digest"].as_str().unwrap_or_default())?;
            let (_, tar) =
                kiln_image::compress::decompress_detect(&bytes[..]).map_err(|e| e.to_string())?;
            tree.apply(tar)
                .map_err(|e| format!("layer {}: {e}", layer["digest"]))?;
        }
        images.push(Image {
            platform,
            config,
            tree: tree.nodes,
        });
    }
    images.sort_by(|a, b| a.platform.cmp(&b.platform));
    Ok(images)
}

/// `os/arch[/variant]` of a config.
pub(crate) fn platform_of(config: &Value) -> String {
    let mut p = format!(
        "{}/{}",
        config["os"].as_str().unwrap_or("?"),
        config["architecture"].as_str().unwrap_or("?")
    );
    if let Some(v) = config["variant"].as_str().filter(|v| !v.is_empty()) {
        p.push('/');
        p.push_str(v);
    }
    p
}

/// A layer entry read whole, before it is applied.
struct Entry {
    path: String,
    node: Node,
    /// A hard link's target path.
    hardlink: Option<String>,
}

#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

/// `./a/b/` → `/a/b`; the root is `/`.
fn clean(path: &str) -> String {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn is_below(path: &str, dir: &str) -> bool {
    if dir == "/" {
        path != "/"
    } else {
        path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
    }
}

impl Tree {
    fn apply(&mut self, tar: impl Read) -> Result<(), String> {
        let mut archive = tar::Archive::new(tar);
        let mut entries = Vec::new();
        let mut whiteouts = Vec::new();
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean(&raw);
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            if name == ".wh..wh..opq" {
                whiteouts.push((parent(&path).to_string(), true));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let dir = parent(&path);
                whiteouts.push((clean(&format!("{dir}/{hidden}")), false));
                continue;
            }
            if path == "/" {
                continue;
            }
            entries.push(read_entry(&mut entry, path)?);
        }
        // Whiteouts hide what the layers below have, never this layer's own.
        for (path, opaque) in whiteouts {
            let doomed: Vec<String> = self
                .nodes
                .keys()
                .filter(|p| is_below(p, &path) || (!opaque && **p == path))
                .cloned()
                .collect();
            for p in doomed {
                self.nodes.remove(&p);
            }
        }
        for entry in entries {
            self.add(entry)?;
        }
        Ok(())
    }

    fn add(&mut self, entry: Entry) -> Result<(), String> {
        let Entry {
            path,
            mut node,
            hardlink,
        } = entry;
        let mut ancestors = Vec::new();
        let mut dir = parent(&path);
        while dir != "/" {
            ancestors.push(dir.to_string());
            dir = parent(dir);
        }
        for dir in ancestors.into_iter().rev() {
            match self.nodes.get(&dir) {
                Some(n) if n.kind == Kind::Dir => {}
                _ => {
                    self.remove_below(&dir);
                    self.nodes.insert(dir, implied_dir());
                }
            }
        }
        if let Some(target) = hardlink {
            let target = clean(&target);
            let linked = self
                .nodes
                .get(&target)
                .ok_or_else(|| format!("{path}: hard link to missing {target}"))?
                .clone();
            node = linked;
        } else if node.kind == Kind::File {
            self.next_inode += 1;
            node.inode = self.next_inode;
        }
        match self.nodes.get(&path) {
            Some(old) if old.kind == Kind::Dir && node.kind == Kind::Dir => {}
            Some(_) => self.remove_below(&path),
            None => {}
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    fn remove_below(&mut self, dir: &str) {
        let below: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| is_below(p, dir))
            .cloned()
            .collect();
        for p in below {
            self.nodes.remove(&p);
        }
    }
}

fn implied_dir() -> Node {
    Node {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        digest: None,
        link: None,
        device: None,
        mtime: 0,
        xattrs: BTreeMap::new(),
        inode: 0,
        implied: true,
    }
}

fn read_entry<R: Read>(entry: &mut tar::Entry<'_, R>, path: String) -> Result<Entry, String> {
    let mut xattrs = BTreeMap::new();
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
            }
        }
    }
    let header = entry.header().clone();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        other => return Err(format!("{path}: unexpected entry type {other:?}")),
    };
    let link_name = entry
        .link_name_bytes()
        .map(|l| String::from_utf8_lossy(&l).into_owned());
    let hardlink = (header.entry_type() == tar::EntryType::Link)
        .then(|| link_name.clone())
        .flatten();
    let mut digest = None;
    let mut size = 0;
    if kind == Kind::File && hardlink.is_none() {
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{path}: {e}"))?;
        size = bytes.len() as u64;
        digest = Some(Digest::of(&bytes).to_string());
    }
    let device = matches!(kind, Kind::Char | Kind::Block).then(|| {
        (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        )
    });
    Ok(Entry {
        path,
        hardlink,
        node: Node {
            kind,
            mode: header.mode().map_err(|e| e.to_string())? & 0o7777,
            uid: header.uid().map_err(|e| e.to_string())?,
            gid: header.gid().map_err(|e| e.to_string())?,
            size,
            digest,
            link: (kind == Kind::Symlink).then(|| link_name.unwrap_or_default()),
            device,
            mtime: header.mtime().unwrap_or(0),
            xattrs,
            inode: 0,
            implied: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        use tar::EntryType::{Directory as D, Link as L, Regular as F};
        let mut t = Tree::default();
        t.apply(
            &layer(&[
                ("a/", D, b"", ""),
                ("a/x", F, b"1", ""),
                ("a/y", F, b"2", ""),
                ("b", F, b"3", ""),
            ])[..],
        )
        .unwrap();
        t.apply(
            &layer(&[
                ("a/.wh..wh..opq", F, b"", ""),
                ("a/z", F, b"4", ""),
                (".wh.b", F, b"", ""),
                ("c", L, b"", "a/z"),
            ])[..],
        )
        .unwrap();
        let paths: Vec<&str> = t.nodes.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/a", "/a/z", "/c"]);
        assert_eq!(t.nodes["/a/z"].inode, t.nodes["/c"].inode);
    }
}
