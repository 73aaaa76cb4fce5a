//! Exporters: what a build, or a stored image, becomes on its way out.
//!
//! Every output (`--output` of `kiln build`, `kiln export`) is an
//! [`Output`]: where it goes ([`OutputKind`]: an OCI layout, a docker
//! archive, the image's files, a registry, the store) and the [`Encoding`]
//! it asks for (compression and level, media types, `SOURCE_DATE_EPOCH`,
//! rewritten timestamps). The encoding is applied here, at export, never
//! at commit: [`encode_image`] gives the image in that encoding, converting the
//! layers whose blob is in another (a layer cached from a gzip build, for
//! a zstd output) and recording each conversion in the store, so that
//! what a user asks for is what comes out, whatever the cache holds, and
//! asking again costs nothing. Then [`write_oci`], [`write_docker`] and
//! [`write_local`] write it (pushing is kiln-registry's).
//!
//! ```text
//! build result ─▶ encode(Encoding) ─▶ manifest/index in the store ─▶ write_oci | write_docker
//!   (layers as committed or cached)    (converted layers recorded)     | write_local | push
//! ```

mod encode;
mod error;
mod output;
mod rewrite;
mod write;

pub(crate) use encode::encode_layer;
pub use encode::{Encoding, encode_image, record_layer_encoding, stored_images};
pub use error::ExportError;
pub use output::{Dest, Output, OutputKind};
pub use write::{OciTarAhead, write_docker, write_local, write_oci};
