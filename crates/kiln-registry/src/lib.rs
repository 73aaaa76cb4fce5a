//! kiln's registry client (OCI distribution API v2).
