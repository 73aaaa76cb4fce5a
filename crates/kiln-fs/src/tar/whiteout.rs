//! Whiteouts: how a layer says "this path of a lower layer is gone".
//!
//! In a layer tar (OCI image spec, layer.md, "Whiteouts") a deleted `NAME`
//! is an empty entry `.wh.NAME` beside it, and a directory whose lower
//! contents are all hidden holds an entry `.wh..wh..opq`. Other `.wh..wh.`
//! names are AUFS bookkeeping and mean nothing.
//!
//! On disk, overlayfs (Documentation/filesystems/overlayfs.rst, "whiteouts
//! and opaque directories") marks a deleted name with a character device
//! 0/0 of that name, and an opaque directory with the xattr
//! `trusted.overlay.opaque=y` (`user.overlay.opaque` on a `userxattr`
//! mount).

/// The prefix of a whiteout entry's name.
pub const PREFIX: &[u8] = b".wh.";
/// The prefix of AUFS metadata names, which includes the opaque marker.
const META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a name in a layer tar means for whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide the lower contents of the directory.
    Opaque,
    /// `.wh.NAME`: hide `NAME` of the lower layers.
    Remove(&'a [u8]),
    /// Another `.wh..wh.` name: ignored, as Docker ignores it.
    Meta,
}

/// Classifies the last component of an entry name.
pub fn classify(name: &[u8]) -> Option<Whiteout<'_>> {
    if name == OPAQUE {
        Some(Whiteout::Opaque)
    } else if name.starts_with(META_PREFIX) {
        Some(Whiteout::Meta)
    } else {
        name.strip_prefix(PREFIX).map(Whiteout::Remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(classify(b".wh..wh.plnk"), Some(Whiteout::Meta));
        assert_eq!(classify(b".wh.foo"), Some(Whiteout::Remove(b"foo")));
        assert_eq!(classify(b"foo.wh."), None);
    }
}
