//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The upstream conformance vectors (`../shared/conformance` beside the
/// project, or `KILN_CONFORMANCE_DIR`). Tests that need them print a visible
/// notice and pass when they are absent; they are present in CI.
pub fn conformance_dir(sub: &str) -> Option<PathBuf> {
    let base = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    let dir = base.join(sub);
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: conformance data {} not found; skipping (set KILN_CONFORMANCE_DIR)",
            dir.display()
        );
        None
    }
}
