//! kiln's build engine: a Dockerfile and a context in, an image out.
//!
//! The engine never prints: it reports events, the CLI renders them.
