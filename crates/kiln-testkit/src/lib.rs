//! Test support for kiln: real services on loopback, and faults on demand.
//!
//! - [`Registry`]: the real Distribution registry (`docker-registry serve`)
//!   on a free loopback port, optionally with basic auth (htpasswd), bearer
//!   token auth (a [`TokenServer`] signing ES256 JWTs) or TLS (a fresh
//!   [`TestCa`]). Killed, with its files, on drop. `Registry::start`
//!   returns `None` when the binary is missing, by the rule of [`need`].
//! - [`FaultProxy`]: an HTTP/1.1 proxy that drops, cuts, stalls or answers
//!   errors for the requests its [`Rule`]s match, and counts what fired and
//!   how many bytes went through.
//! - [`TestImage`], [`random_bytes`], [`write_random_file`], [`sha256_file`]:
//!   content to push, and a quick check of what was pulled.
//!
//! - [`need`]: the one rule for a test that needs root, runc, docker, a
//!   program, the conformance vectors or BuildKit's parser oracle: skipped
//!   with a notice where it is missing, a failure under `CI=true`.
//! - [`busybox`]: a busybox rootfs and base image for tests that run steps.
//! - [`own_image`]: kiln's own image (scripts/image), built from the static
//!   kiln and loaded into docker once, for tests that run it there.
//! - [`process`]: processes a test left behind, found by a marker.
//!
//! The proxy and the token server run on their own runtime thread, so they
//! work from sync tests and from any async runtime.
//!
//! ```no_run
//! use kiln_testkit::{FaultProxy, Fault, Faults, Registry, RegistryOptions, Rule};
//! let Some(registry) = Registry::start(RegistryOptions::default()) else { return };
//! let proxy = FaultProxy::start(
//!     &registry.host(),
//!     Faults::new().rule(Rule::new(Fault::DropResponse { after: 1 << 20 }).method("GET").path("/blobs/")),
//! );
//! // ... pull through proxy.host() ...
//! assert_eq!(proxy.fired(0), 1);
//! ```

mod background;
pub mod busybox;
mod http1;
mod image;
pub mod need;
pub mod own_image;
mod pki;
pub mod process;
mod proxy;
mod registry;
mod token;

pub use crate::image::{Blob, TestImage, random_bytes, sha256_file, write_random_file};
pub use crate::pki::{IssuedCert, TestCa};
pub use crate::proxy::{Exchange, Fault, FaultProxy, Faults, Rule, Stats};
pub use crate::registry::{Registry, RegistryOptions, TlsOptions};
pub use crate::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenAuth, TokenRequest, TokenServer};
