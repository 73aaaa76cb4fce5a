//! OCI image layouts (image-spec `image-layout.md`): `oci-layout`,
//! `index.json` and `blobs/sha256/<hex>`, as a directory or a tar stream,
//! written from a [`Store`] and read into one.
//!
//! Blobs are streamed, never held in memory. On the way in every blob is
//! checked against its digest (an ingest with the expected digest). On the
//! way out a blob is copied by the kernel where it can be, so that an
//! export costs the write of its output and nothing else: into a tar that
//! is a regular file with `copy_file_range(2)`, into a layout directory by
//! a reflink or `copy_file_range` ([`kiln_fs::copy_file_in_kernel`]). Those
//! bytes never reach kiln, so they are checked by size only: the store
//! checked their digest when it took them in (and `kiln store verify`
//! re-checks). A blob that does pass through kiln (a tar on a pipe, a
//! filesystem that cannot copy) is checked against its digest, as before.
//!
//! A layout directory never hardlinks the store's blobs, though it would
//! cost nothing: the link would share the inode, so a `chmod` or a write
//! to the layout (root ignores the blobs' 0444 mode) would change the
//! store's blob under its digest, for every later build and export.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use kiln_fs::CopyStats;

use crate::document::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Document, ImageDocument, Index,
};
use crate::media::{self, Format};
use crate::store::{DOCUMENT_LIMIT, Store, StoreError};
use crate::{Digest, HashingReader, Reference};

/// The `imageLayoutVersion` written and accepted.
pub const LAYOUT_VERSION: &str = "1.0.0";
const OCI_LAYOUT_FILE: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";

/// An image named in a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutImage {
    /// `org.opencontainers.image.ref.name`: what `oci:DIR:NAME` selects.
    /// kiln writes the tag, as BuildKit and `docker save` do.
    pub name: Option<String>,
    /// The full reference (`io.containerd.image.name`), when known.
    pub reference: Option<Reference>,
    /// The manifest or index, without the naming annotations.
    pub target: Descriptor,
}

impl LayoutImage {
    /// Named after `reference`: its tag (`latest` if it has none) as the
    /// ref name, the full reference beside it.
    pub fn tagged(reference: &Reference, target: Descriptor) -> LayoutImage {
        let reference = reference.clone().with_default_tag();
        LayoutImage {
            name: reference.tag.clone(),
            reference: Some(reference),
            target,
        }
    }

    /// With only a ref name (`oci:DIR:name`).
    pub fn named(name: impl Into<String>, target: Descriptor) -> LayoutImage {
        LayoutImage {
            name: Some(name.into()),
            reference: None,
            target,
        }
    }

    /// The descriptor as `index.json` lists it.
    fn index_entry(&self) -> Descriptor {
        let mut d = self.target.clone();
        if let Some(name) = &self.name {
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_string(), name.clone());
        }
        if let Some(r) = &self.reference {
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_string(), r.to_string());
        }
        d
    }

    fn from_index_entry(mut d: Descriptor) -> LayoutImage {
        let name = d.annotations.remove(ANNOTATION_REF_NAME);
        let image_name = d.annotations.remove(ANNOTATION_IMAGE_NAME);
        // Some tools put the full reference in the ref name; a bare tag is
        // not a reference (`1` would parse as `docker.io/library/1`).
        let reference = image_name
            .as_deref()
            .or(name.as_deref().filter(|n| n.contains(['/', ':', '@'])))
            .and_then(|r| Reference::parse(r).ok());
        LayoutImage {
            name,
            reference,
            target: d,
        }
    }
}

/// Writes `images` and every blob they need into the layout at `dir`,
/// created if missing. An existing layout is added to: its entries keep
/// their places unless one of `images` takes their ref name. Returns how
/// the blob bytes were copied (a blob already there is not copied).
pub fn write_dir(
    store: &Store,
    dir: &Path,
    images: &[LayoutImage],
) -> Result<CopyStats, StoreError> {
    write_dir_with(store, dir, images, true)
}

/// [`write_dir`], with the kernel's copies turned off when `in_kernel` is
/// false: every byte read, hashed and written by kiln (for tests that
/// compare both ways).
#[doc(hidden)]
pub fn write_dir_with(
    store: &Store,
    dir: &Path,
    images: &[LayoutImage],
    in_kernel: bool,
) -> Result<CopyStats, StoreError> {
    let blobs = dir.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).map_err(StoreError::io(&blobs))?;
    let mut stats = CopyStats::default();
    let mut done = HashSet::new();
    for image in images {
        for d in store.image_blobs(&image.target)? {
            if !done.insert(d.digest.clone()) || !store.available(&d.digest)? {
                continue;
            }
            let dest = blobs.join(d.digest.hex());
            if fs_err::metadata(&dest).is_ok_and(|m| m.len() == d.size) {
                continue;
            }
            // Copy beside, then rename: an interrupted export never leaves
            // a short file under a digest's name.
            let temp = blobs.join(format!(".{}.{}.tmp", d.digest.hex(), std::process::id()));
            let blob = store.open_blob(&d.digest)?;
            let output = fs_err::File::create(&temp).map_err(StoreError::io(&temp))?;
            match copy_blob(&d, blob, output, &temp, in_kernel) {
                Ok(s) => stats += s,
                Err(e) => {
                    let _ = fs_err::remove_file(&temp);
                    return Err(e);
                }
            }
            fs_err::rename(&temp, &dest).map_err(StoreError::io(&dest))?;
        }
    }

    let layout = dir.join("oci-layout");
    fs_err::write(&layout, OCI_LAYOUT_FILE).map_err(StoreError::io(&layout))?;

    let index_path = dir.join("index.json");
    let mut entries: Vec<Descriptor> = match fs_err::read(&index_path) {
        Ok(bytes) => parse_index(&index_path, bytes)?.into_value().manifests,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io(&index_path)(e)),
    };
    let ours: Vec<Descriptor> = images.iter().map(LayoutImage::index_entry).collect();
    entries.retain(|e| {
        !ours.contains(e)
            && e.ref_name()
                .is_none_or(|n| !images.iter().any(|i| i.name.as_deref() == Some(n)))
    });
    entries.extend(ours);
    let index = Document::new(Index::new(Format::Oci, entries));
    let temp = dir.join(format!(".index.json.{}.tmp", std::process::id()));
    fs_err::write(&temp, index.bytes()).map_err(StoreError::io(&temp))?;
    fs_err::rename(&temp, &index_path).map_err(StoreError::io(&index_path))?;
    Ok(stats)
}

/// A blob into a layout directory's file: by the kernel when `in_kernel`
/// and it can (checked by size), else through kiln (checked by digest).
fn copy_blob(
    d: &Descriptor,
    blob: crate::Blob,
    mut output: fs_err::File,
    temp: &Path,
    in_kernel: bool,
) -> Result<CopyStats, StoreError> {
    check_size(d, &blob)?;
    let mut stats = CopyStats::default();
    if in_kernel {
        stats = kiln_fs::copy_file_in_kernel(blob.file(), output.file())
            .map_err(StoreError::io(temp))?;
    }
    let done = stats.cloned + stats.in_kernel;
    if done == 0 {
        return copy_checked(d, blob, output, temp);
    }
    if done < d.size {
        // The kernel stopped part way (rare: an error after some bytes).
        stats += kiln_fs::copy_range(blob.file(), done, d.size - done, &mut output, None)
            .map_err(StoreError::io(temp))?;
    }
    Ok(stats)
}

/// A blob copied through kiln, hashed on the way.
fn copy_checked(
    d: &Descriptor,
    blob: crate::Blob,
    mut output: fs_err::File,
    temp: &Path,
) -> Result<CopyStats, StoreError> {
    let mut input = HashingReader::new(blob);
    let copied = io::copy(&mut input, &mut output).map_err(StoreError::io(temp));
    let (_, actual, size) = input.finish();
    copied.and_then(|_| check(&d.digest, actual, size))?;
    Ok(CopyStats {
        in_userspace: size,
        ..CopyStats::default()
    })
}

fn check_size(d: &Descriptor, blob: &crate::Blob) -> Result<(), StoreError> {
    if blob.size() == d.size {
        Ok(())
    } else {
        Err(StoreError::SizeMismatch {
            what: d.digest.to_string(),
            expected: d.size,
            actual: blob.size(),
        })
    }
}

/// Writes `images` as an OCI layout in tar form: `oci-layout`, then each
/// blob once (an image's layers bottom first, then its config and its
/// manifest; an index after its manifests), then `index.json`. Layers
/// first, so that a build can write an image's finished layers before it
/// has the rest ([`TarAhead`]); `index.json` last, as BuildKit's tars
/// have it. Returns the output and how the blob bytes were copied.
pub fn write_tar<W: TarSink>(
    store: &Store,
    out: W,
    images: &[LayoutImage],
) -> Result<(W, CopyStats), StoreError> {
    let mut tar = TarOut::new(out);
    write_head(&mut tar)?;
    let order = tar_order(store, images)?;
    write_rest(tar, store, &order, images)
}

fn write_head<W: TarSink>(tar: &mut TarOut<W>) -> Result<(), StoreError> {
    tar.file("oci-layout", OCI_LAYOUT_FILE)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")
}

/// The blobs of `order` not written yet, then `index.json`.
fn write_rest<W: TarSink>(
    mut tar: TarOut<W>,
    store: &Store,
    order: &[Descriptor],
    images: &[LayoutImage],
) -> Result<(W, CopyStats), StoreError> {
    for d in order {
        tar.blob(store, d)?;
    }
    let entries = images.iter().map(LayoutImage::index_entry).collect();
    tar.file(
        "index.json",
        Document::new(Index::new(Format::Oci, entries)).bytes(),
    )?;
    tar.finish()
}

/// The blobs of `images` in the order of a layout tar: for each image,
/// its layers bottom first, its config, its manifest, and an index after
/// its manifests; each blob once. The blobs are those of
/// [`Store::image_blobs`] (a foreign layer left out, a lazy one in).
fn tar_order(store: &Store, images: &[LayoutImage]) -> Result<Vec<Descriptor>, StoreError> {
    let mut rank = HashMap::new();
    let mut listed = Vec::new();
    let mut seen = HashSet::new();
    for image in images {
        rank_blobs(store, &image.target, &mut rank)?;
        for d in store.image_blobs(&image.target)? {
            if seen.insert(d.digest.clone()) {
                listed.push(d);
            }
        }
    }
    listed.sort_by_key(|d| rank.get(&d.digest).copied().unwrap_or(usize::MAX));
    Ok(listed)
}

/// Numbers `d` and what it references in [`tar_order`]'s order.
fn rank_blobs(
    store: &Store,
    d: &Descriptor,
    rank: &mut HashMap<Digest, usize>,
) -> Result<(), StoreError> {
    if rank.contains_key(&d.digest) {
        return Ok(());
    }
    if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
        match store.read_image(d)? {
            ImageDocument::Manifest(m) => {
                let m = m.value();
                for child in m.layers.iter().chain(m.blobs()) {
                    let next = rank.len();
                    rank.entry(child.digest.clone()).or_insert(next);
                }
            }
            ImageDocument::Index(i) => {
                for child in &i.value().manifests {
                    rank_blobs(store, child, rank)?;
                }
            }
        }
    }
    let next = rank.len();
    rank.entry(d.digest.clone()).or_insert(next);
    Ok(())
}

/// An OCI layout tar begun while its image is still being built: the
/// blobs of the image's finished bottom layers are written, and made
/// durable, as soon as the build has them ([`TarAhead::layers`]), the rest
/// once the image is done ([`TarAhead::finish`]), so the end of a build
/// waits only for what its last layers add. The bytes are
/// [`write_tar`]'s whatever was written ahead: if what was written does
/// not lead the finished image's blobs (a layer re-encoded at the end),
/// the file is cut back and written again from its head.
pub struct TarAhead {
    tar: TarOut<fs_err::File>,
    /// Where the blobs begin.
    head: u64,
    /// The layers handed in and written so far (a layer given twice is
    /// written once).
    given: Vec<Digest>,
}

impl TarAhead {
    /// Writes the head (`oci-layout` and the blob directories) to `file`.
    pub fn new(file: fs_err::File) -> Result<TarAhead, StoreError> {
        let mut tar = TarOut::new(file);
        write_head(&mut tar)?;
        let head = tar.position().map_err(tar_error("head"))?;
        Ok(TarAhead {
            tar,
            head,
            given: Vec::new(),
        })
    }

    /// `layers` are the image's bottom layers as far as the build has
    /// them (all of them, bottom first, every time): writes the blobs of
    /// those it has not written, up to the first not in the store yet, and
    /// makes them durable. Returns how many blobs are written ahead. A list
    /// that no longer begins with what it began with before writes nothing
    /// more.
    pub fn layers(&mut self, store: &Store, layers: &[Descriptor]) -> Result<usize, StoreError> {
        if !layers
            .iter()
            .map(|d| &d.digest)
            .zip(&self.given)
            .all(|(a, b)| a == b)
            || layers.len() < self.given.len()
        {
            return Ok(self.tar.written.len());
        }
        let before = self.tar.written.len();
        for d in &layers[self.given.len()..] {
            if !store.contains(&d.digest)? {
                break;
            }
            // Once however often it is given.
            self.tar.blob(store, d)?;
            self.given.push(d.digest.clone());
        }
        if self.tar.written.len() > before {
            self.tar.sync().map_err(tar_error("blobs"))?;
        }
        Ok(self.tar.written.len())
    }

    /// Writes the rest of the layout of `images`; returns the file and how
    /// the blob bytes were copied (those written ahead included).
    pub fn finish(
        mut self,
        store: &Store,
        images: &[LayoutImage],
    ) -> Result<(fs_err::File, CopyStats), StoreError> {
        let order = tar_order(store, images)?;
        // The blobs written, in the order written.
        let mut seen = HashSet::new();
        let written: Vec<&Digest> = self.given.iter().filter(|d| seen.insert(*d)).collect();
        let leads = order.len() >= written.len()
            && order.iter().zip(&written).all(|(d, w)| &d.digest == *w);
        if !leads {
            self.tar.rewind(self.head).map_err(tar_error("blobs"))?;
        }
        write_rest(self.tar, store, &order, images)
    }
}

/// Reads the layout at `dir` into the store, checking every blob against
/// its digest; returns the images its `index.json` names.
pub fn read_dir(store: &Store, dir: &Path) -> Result<Vec<LayoutImage>, StoreError> {
    let layout_path = dir.join("oci-layout");
    let layout = fs_err::read(&layout_path).map_err(StoreError::io(&layout_path))?;
    check_layout_version(&layout_path, &layout)?;
    let index_path = dir.join("index.json");
    let bytes = fs_err::read(&index_path).map_err(StoreError::io(&index_path))?;
    let index = parse_index(&index_path, bytes)?;
    let mut seen = HashSet::new();
    for d in &index.value().manifests {
        import_from_dir(store, dir, d, &mut seen)?;
    }
    Ok(index
        .into_value()
        .manifests
        .into_iter()
        .map(LayoutImage::from_index_entry)
        .collect())
}

fn import_from_dir(
    store: &Store,
    dir: &Path,
    d: &Descriptor,
    seen: &mut HashSet<Digest>,
) -> Result<(), StoreError> {
    if !seen.insert(d.digest.clone()) {
        return Ok(());
    }
    if store.reuse(&d.digest)? != Some(d.size) {
        let path = dir.join("blobs/sha256").join(d.digest.hex());
        let mut file = match fs_err::File::open(&path) {
            Ok(f) => f,
            // A foreign layer lives at its URLs, not in the layout.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !d.urls.is_empty() => return Ok(()),
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        let mut ingest = store.ingest_expected(&d.digest, Some(d.size))?;
        io::copy(&mut file, &mut ingest).map_err(StoreError::io(&path))?;
        ingest.commit()?;
    }
    if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
        let doc = store.read_image(d)?;
        for child in doc.children() {
            import_from_dir(store, dir, child, seen)?;
        }
    }
    Ok(())
}

/// Reads an OCI layout tar stream into the store in one pass: each blob is
/// ingested as it comes, checked against the digest in its name; the
/// images of `index.json` must then be complete in the store.
pub fn read_tar<R: Read>(store: &Store, input: R) -> Result<Vec<LayoutImage>, StoreError> {
    let mut layout = None;
    let mut index = None;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(tar_error("archive"))? {
        let mut entry = entry.map_err(tar_error("archive"))?;
        let name = entry_name(&entry);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        match name.as_str() {
            "oci-layout" => layout = Some(read_small(&mut entry, &name)?),
            "index.json" => index = Some(read_small(&mut entry, &name)?),
            _ => {
                if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                    let digest = Digest::from_hex(hex).map_err(|e| StoreError::Archive {
                        entry: name.clone(),
                        reason: e.to_string(),
                    })?;
                    ingest_entry(store, &mut entry, &name, Some(&digest))?;
                }
            }
        }
    }
    let label = PathBuf::from("<tar>");
    let layout = layout.ok_or_else(|| StoreError::Layout {
        path: label.clone(),
        reason: "no oci-layout file".to_string(),
    })?;
    check_layout_version(&label.join("oci-layout"), &layout)?;
    let index = index.ok_or_else(|| StoreError::Layout {
        path: label.clone(),
        reason: "no index.json".to_string(),
    })?;
    let index = parse_index(&label.join("index.json"), index)?;
    for d in &index.value().manifests {
        // Every blob the images need must now be in the store.
        store.image_blobs(d)?;
    }
    Ok(index
        .into_value()
        .manifests
        .into_iter()
        .map(LayoutImage::from_index_entry)
        .collect())
}

fn check_layout_version(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: OciLayout = serde_json::from_slice(bytes).map_err(|e| StoreError::Layout {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if layout.version != LAYOUT_VERSION {
        return Err(StoreError::Layout {
            path: path.to_path_buf(),
            reason: format!(
                "image layout version {:?}, only {LAYOUT_VERSION} is supported",
                layout.version
            ),
        });
    }
    Ok(())
}

/// `index.json` may omit its media type; it is an OCI index either way.
fn parse_index(path: &Path, bytes: Vec<u8>) -> Result<Document<Index>, StoreError> {
    Document::parse("", bytes).map_err(|e| StoreError::Layout {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

// ---- tar plumbing shared with the docker archive ----------------------

pub(crate) fn tar_error(entry: &str) -> impl Fn(io::Error) -> StoreError + '_ {
    move |e| StoreError::Archive {
        entry: entry.to_string(),
        reason: e.to_string(),
    }
}

/// The entry's path, without `./` or a leading `/`.
pub(crate) fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    normalize_name(&raw)
}

pub(crate) fn normalize_name(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A small metadata file, read whole (bounded: it is not a blob).
pub(crate) fn read_small(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    entry
        .take(DOCUMENT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(tar_error(name))?;
    if bytes.len() as u64 > DOCUMENT_LIMIT {
        return Err(StoreError::Archive {
            entry: name.to_string(),
            reason: format!("larger than {DOCUMENT_LIMIT} bytes"),
        });
    }
    Ok(bytes)
}

/// Streams a tar entry into the store (skipped if the store already has
/// the expected blob); returns its digest and size.
pub(crate) fn ingest_entry<R: Read>(
    store: &Store,
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, u64), StoreError> {
    let size = entry.size();
    if let Some(d) = expected
        && store.reuse(d)? == Some(size)
    {
        return Ok((d.clone(), size));
    }
    let mut ingest = match expected {
        Some(d) => store.ingest_expected(d, Some(size))?,
        None => store.ingest()?,
    };
    io::copy(entry, &mut ingest).map_err(tar_error(name))?;
    let blob = ingest.commit()?;
    Ok((blob.digest, blob.size))
}

fn check(expected: &Digest, actual: Digest, size: u64) -> Result<(), StoreError> {
    if *expected == actual {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
            size,
        })
    }
}

/// Reads from blobs and writes to the tar go in pieces this big: the tar
/// crate copies through an 8 KiB buffer, which made a 1 GiB export cost
/// 260,000 system calls (5 s of system time on a VM).
const COPY_BUFFER: usize = 1 << 20;

/// Where a tar is written: any writer, and for a file the descriptor the
/// kernel copies blobs into (`copy_file_range` needs a regular file; a
/// pipe or a terminal is written to the ordinary way).
pub trait TarSink: Write {
    /// The descriptor blob bytes may be copied into, at its position.
    fn copy_target(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl TarSink for Vec<u8> {}

impl TarSink for std::fs::File {
    fn copy_target(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl TarSink for fs_err::File {
    fn copy_target(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// `kiln export ... > image.tar` gets the kernel's copies too.
impl TarSink for io::StdoutLock<'_> {
    fn copy_target(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// A tar being written with fixed metadata (mtime 0, root-owned), so the
/// same images give the same bytes.
pub(crate) struct TarOut<W: Write> {
    builder: tar::Builder<io::BufWriter<W>>,
    written: HashSet<Digest>,
    /// The output's descriptor (a duplicate: it shares the position) when
    /// it is a regular file, for `copy_file_range`.
    target: Option<OwnedFd>,
    stats: CopyStats,
}

impl<W: TarSink> TarOut<W> {
    pub(crate) fn new(out: W) -> TarOut<W> {
        let target = out
            .copy_target()
            .filter(|fd| kiln_fs::is_regular_file(*fd))
            .and_then(|fd| fd.try_clone_to_owned().ok());
        TarOut {
            builder: tar::Builder::new(io::BufWriter::with_capacity(COPY_BUFFER, out)),
            written: HashSet::new(),
            target,
            stats: CopyStats::default(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub(crate) fn dir(&mut self, name: &str) -> Result<(), StoreError> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(tar_error(name))
    }

    pub(crate) fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        self.builder
            .append_data(&mut h, name, bytes)
            .map_err(tar_error(name))
    }

    /// `blobs/sha256/<hex>`, streamed from the store and checked against
    /// its digest; written once however often it is asked for.
    pub(crate) fn blob(&mut self, store: &Store, d: &Descriptor) -> Result<(), StoreError> {
        if self.written.contains(&d.digest) {
            return Ok(());
        }
        let name = format!("blobs/sha256/{}", d.digest.hex());
        let blob = store.open_blob(&d.digest)?;
        if blob.size() != d.size {
            return Err(StoreError::SizeMismatch {
                what: d.digest.to_string(),
                expected: d.size,
                actual: blob.size(),
            });
        }
        let mut h = Self::header(tar::EntryType::Regular, 0o444, blob.size());
        match self.target.as_ref().map(|fd| fd.as_fd()) {
            Some(target) => {
                let copied = Self::blob_in_kernel(&mut self.builder, target, &mut h, &name, blob)
                    .map_err(tar_error(&name))?;
                if let Some((actual, size)) = copied.checked {
                    check(&d.digest, actual, size)?;
                }
                self.stats += copied.stats;
            }
            None => {
                let mut reader =
                    io::BufReader::with_capacity(COPY_BUFFER, HashingReader::new(blob));
                self.builder
                    .append_data(&mut h, &name, &mut reader)
                    .map_err(tar_error(&name))?;
                let (_, actual, size) = reader.into_inner().finish();
                check(&d.digest, actual, size)?;
                self.stats.in_userspace += size;
            }
        }
        self.written.insert(d.digest.clone());
        Ok(())
    }

    /// The entry as `append_data` writes it (header, data, zeros to the
    /// 512-byte block), the data copied by the kernel from the blob file
    /// to the output, straight after the flushed buffer. What the kernel
    /// will not copy goes through kiln, hashed when that is all of it.
    fn blob_in_kernel(
        builder: &mut tar::Builder<io::BufWriter<W>>,
        target: BorrowedFd<'_>,
        h: &mut tar::Header,
        name: &str,
        blob: crate::Blob,
    ) -> io::Result<KernelCopy> {
        // Blob names (`blobs/sha256/<64 hex>`) fit the header: no GNU
        // long-name entry, which `append_data` would add first.
        h.set_path(name)?;
        h.set_cksum();
        builder.append(h, io::empty())?;
        let out = builder.get_mut();
        out.flush()?;
        let size = blob.size();
        let in_kernel = kiln_fs::copy_in_kernel(blob.file().as_fd(), 0, target, size)?;
        let rest = size - in_kernel;
        let mut checked = None;
        if rest > 0 {
            let mut blob = blob;
            blob.seek(SeekFrom::Start(in_kernel))?;
            let mut reader = HashingReader::new(blob.take(rest));
            let copied = io::copy(&mut reader, out)?;
            if copied < rest {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob ended early",
                ));
            }
            let (_, actual, n) = reader.finish();
            if in_kernel == 0 {
                checked = Some((actual, n));
            }
        }
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0; 512][..pad as usize])?;
        Ok(KernelCopy {
            stats: CopyStats {
                in_kernel,
                in_userspace: rest,
                ..CopyStats::default()
            },
            checked,
        })
    }

    /// Bytes written so far (the buffer flushed).
    fn position(&mut self) -> io::Result<u64>
    where
        W: Seek,
    {
        let out = self.builder.get_mut();
        out.flush()?;
        out.get_mut().stream_position()
    }

    pub(crate) fn finish(self) -> Result<(W, CopyStats), StoreError> {
        let stats = self.stats;
        let out = self
            .builder
            .into_inner()
            .and_then(|out| out.into_inner().map_err(io::IntoInnerError::into_error))
            .map_err(tar_error("end of archive"))?;
        Ok((out, stats))
    }
}

impl TarOut<fs_err::File> {
    /// Flushes and makes what is written durable.
    fn sync(&mut self) -> io::Result<()> {
        let out = self.builder.get_mut();
        out.flush()?;
        out.get_ref().sync_data()
    }

    /// Cuts the file back to its first `len` bytes and writes on from
    /// there, as if no blob had been written.
    fn rewind(&mut self, len: u64) -> io::Result<()> {
        let out = self.builder.get_mut();
        out.flush()?;
        let file = out.get_mut();
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        self.written.clear();
        self.stats = CopyStats::default();
        Ok(())
    }
}

/// How [`TarOut::blob_in_kernel`] copied a blob, and its digest and size
/// when every byte went through kiln.
struct KernelCopy {
    stats: CopyStats,
    checked: Option<(Digest, u64)>,
}
