//! kiln's image formats and storage.
//!
//! - [`Digest`]: content addresses (`sha256:…`), hashing readers and writers.
//! - [`media`]: OCI and Docker media types, layer compression.
//! - [`Reference`]: image references (`alpine`, `localhost:5000/x/y:1@sha256:…`),
//!   normalised as Docker does.

mod digest;
mod reference;

pub mod media;

pub use crate::digest::{Digest, DigestError, HashingReader, HashingWriter, Sha256};
pub use crate::reference::{DOCKER_HUB, Reference, ReferenceError, is_loopback_host};
pub use kiln_platform::Platform;
