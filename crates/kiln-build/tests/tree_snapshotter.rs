//! The tree snapshotter (no mounts: what `--isolation chroot` builds on):
//! the snapshotter suite, then what working in place must get right.
//! As any user; as root the owners are checked too.

use std::path::Path;
use std::sync::Arc;

use kiln_build::{Snapshotter, TreeSnapshotter};
use kiln_image::Store;

fn tree(store: &Store, _dir: &Path) -> Option<Arc<dyn Snapshotter>> {
    Some(Arc::new(TreeSnapshotter::new(store).unwrap()))
}

kiln_build::snapshotter_suite!(tree, in_place);
