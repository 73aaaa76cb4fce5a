//! The snapshotter suite against the fake, which the engine tests stand
//! on: as any user, no mounts. (The overlay snapshotter runs the same
//! suite in tests/snapshot.rs, as root.)

use std::path::Path;
use std::sync::Arc;

use kiln_build::Snapshotter;
use kiln_build::testing::FakeSnapshotter;
use kiln_image::Store;

fn fake(store: &Store, dir: &Path) -> Option<Arc<dyn Snapshotter>> {
    Some(Arc::new(FakeSnapshotter::new(store, dir).unwrap()))
}

kiln_build::snapshotter_suite!(fake);
