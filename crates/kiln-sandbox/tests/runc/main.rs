//! kiln-sandbox against the real runc, in real namespaces, on a busybox
//! root. These tests need root (CI runs as root) and `runc` and a static
//! busybox (`busybox-static`) on the host: scripts/test installs both.

mod harness;

mod isolation;
mod lifecycle;
mod process_tree;
mod running;
