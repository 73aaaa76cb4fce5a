//! KL109 (ADD of a URL without a checksum) and KL111 (unpinned base of a
//! stage others build on).

use super::{Hit, hit};

/// KL109 for one `ADD` source.
pub(crate) fn add_url(line: usize, source: &str, checksum: bool) -> Option<Hit> {
    let lower = source.to_ascii_lowercase();
    let url = lower.starts_with("http://") || lower.starts_with("https://");
    // BuildKit reads these as git repositories, which a commit pins.
    let path = lower.split(['?', '#']).next().unwrap_or(&lower);
    let git = path.ends_with(".git");
    (url && !git && !checksum).then(|| {
        hit(
            "KL109",
            line,
            format!("ADD {source} without --checksum=sha256:..."),
        )
    })
}

/// Whether an image reference names a moving target: no tag, or `latest`,
/// and no digest. References with variables are not judged.
pub(crate) fn unpinned(base: &str) -> bool {
    if base.contains('$') || base.contains('@') || base.eq_ignore_ascii_case("scratch") {
        return false;
    }
    let last = base.rsplit('/').next().unwrap_or(base);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

pub(crate) fn unpinned_base(line: usize, stage: &str, base: &str, used_at: usize) -> Hit {
    hit(
        "KL111",
        line,
        format!(
            "stage {stage} starts from {base}, which is not pinned, and line {used_at} builds on it"
        ),
    )
}
