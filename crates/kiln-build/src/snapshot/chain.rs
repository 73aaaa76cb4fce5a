//! Chain IDs: the identity of a stack of layers.
//!
//! OCI image spec, config.md, "Layer ChainID":
//! `ChainID(L0) = DiffID(L0)`, and
//! `ChainID(L0|...|Ln) = SHA256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln))`,
//! the digests written out as `sha256:<hex>`. A layer's directory only
//! means something on the layers it was made over, so snapshots are keyed
//! by chain ID, not diffID.

use kiln_image::Digest;

/// The chain ID of the stack `parent` (none for the bottom layer) with the
/// layer `diff_id` on top.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
    }
}

/// The chain IDs of every prefix of a stack of layers, bottom first.
pub(crate) fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let next = chain_id(out.last(), diff_id);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula of the OCI image spec (config.md, "Layer ChainID").
    #[test]
    fn follows_the_spec_formula() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let ids = chain_ids([&a, &b, &c]);
        assert_eq!(ids[0], a);
        let ab = Digest::of(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        assert_eq!(ids[1], ab);
        let abc = Digest::of(format!("sha256:{} sha256:{}", ab.hex(), c.hex()).as_bytes());
        assert_eq!(ids[2], abc);
        assert!(chain_ids([]).is_empty());
    }

    /// A value computed outside kiln: `printf 'sha256:e3b0… sha256:2c26…' |
    /// sha256sum`.
    #[test]
    fn known_vector() {
        let l0: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let l1: Digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
            .parse()
            .unwrap();
        let ids = chain_ids([&l0, &l1]);
        assert_eq!(ids[0], l0);
        assert_eq!(
            ids[1].to_string(),
            "sha256:fad80c1405b3ffb90795bcffc40d5c212e8e1c853012d008ce7072e1da8f4297"
        );
    }
}
