//! How a [`RegistryClient`](crate::RegistryClient) connects, authenticates,
//! times out and retries.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::mirror::Mirrors;
use crate::{Event, EventHandler, Mirror};

/// Settings of a [`RegistryClient`](crate::RegistryClient), built with
/// chained setters from [`ClientOptions::default()`].
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) docker_certs_dir: Option<PathBuf>,
    pub(crate) docker_config_dir: Option<PathBuf>,
    pub(crate) credential_helper_path: Option<Vec<PathBuf>>,
    pub(crate) credentials: BTreeMap<String, Credentials>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) helper_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) upload: UploadPolicy,
    pub(crate) user_agent: String,
    pub(crate) resolve: BTreeMap<String, IpAddr>,
    pub(crate) mirrors: Mirrors,
    pub(crate) on_event: Option<EventHandler>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            docker_certs_dir: Some(PathBuf::from("/etc/docker/certs.d")),
            docker_config_dir: None,
            credential_helper_path: None,
            credentials: BTreeMap::new(),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            helper_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            upload: UploadPolicy::default(),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_string(),
            resolve: BTreeMap::new(),
            mirrors: Mirrors::default(),
            on_event: None,
        }
    }
}

impl ClientOptions {
    /// Speak HTTPS to `registry` (`host[:port]`, as in image references)
    /// without verifying its certificate, falling back to plain HTTP, as
    /// Docker's `--insecure-registry` does. Loopback registries always use
    /// plain HTTP and need no entry. `*` means every registry (Kaniko's
    /// `--insecure-pull`, whose registries are the Dockerfile's to name).
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Self {
        self.insecure_registries.push(registry.into());
        self
    }

    /// Trust the CA certificates (PEM, one or more) in `path` besides the
    /// system's roots, for every registry.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Where per-registry certificates live, Docker's layout:
    /// `<dir>/<host[:port]>/*.crt` are extra CAs, `*.cert` + `*.key` a client
    /// certificate. Default `/etc/docker/certs.d`; `None` turns it off.
    pub fn docker_certs_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.docker_certs_dir = dir;
        self
    }

    /// The directory of `config.json` (credentials, helpers). Default:
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub fn docker_config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.docker_config_dir = Some(dir.into());
        self
    }

    /// Directories searched for `docker-credential-<name>` programs, in
    /// order. Default: `$PATH`.
    pub fn credential_helper_path(mut self, dirs: Vec<PathBuf>) -> Self {
        self.credential_helper_path = Some(dirs);
        self
    }

    /// Use these credentials for `registry`, ahead of the docker config.
    pub fn credentials(mut self, registry: impl Into<String>, credentials: Credentials) -> Self {
        self.credentials.insert(registry.into(), credentials);
        self
    }

    /// How long a TCP + TLS connection may take. Default 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may go without a byte moving (sent or received,
    /// headers or body) before the attempt is abandoned and retried or
    /// resumed. Default 60 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a `docker-credential-*` helper may run. Default 60 s.
    pub fn credential_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn upload(mut self, policy: UploadPolicy) -> Self {
        self.upload = policy;
        self
    }

    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Connect to `ip` for `host` instead of asking DNS (the port still
    /// comes from the reference). For tests and split-horizon setups.
    pub fn resolve(mut self, host: impl Into<String>, ip: IpAddr) -> Self {
        self.resolve.insert(host.into(), ip);
        self
    }

    /// Pull `registry`'s images from `mirror` first ([`pull_image`](crate::pull_image)
    /// only: pushes, manifests asked for by name and caches go to the
    /// registry named). Mirrors of one registry are tried in the order
    /// added; Docker Hub is `docker.io` by any of its names.
    pub fn pull_mirror(mut self, registry: &str, mirror: Mirror) -> Self {
        self.mirrors.add(registry, mirror);
        self
    }

    /// Whether a pull whose every mirror failed tries the registry itself.
    /// Default true; false is Kaniko's `--skip-default-registry-fallback`.
    pub fn mirror_fallback(mut self, fallback: bool) -> Self {
        self.mirrors.fallback = fallback;
        self
    }

    /// Receive every [`Event`] (retries, resumes, progress).
    pub fn on_event(mut self, handler: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(handler));
        self
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("ca_files", &self.ca_files)
            .field("docker_certs_dir", &self.docker_certs_dir)
            .field("docker_config_dir", &self.docker_config_dir)
            .field("credential_helper_path", &self.credential_helper_path)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .field("upload", &self.upload)
            .field("user_agent", &self.user_agent)
            .field("resolve", &self.resolve)
            .field("mirrors", &self.mirrors)
            .finish_non_exhaustive()
    }
}

/// When and how often to try again. Connection errors, stalls, 5xx, 408 and
/// 429 are retried; other 4xx fail at once.
///
/// The delay before retry `n` is drawn uniformly from
/// `0..=min(max_delay, initial_delay * 2^(n-1))` ("full jitter"), or is the
/// registry's `Retry-After` (capped at `max_retry_after`) when it sent one.
/// A transfer that moved forward before failing starts its count again, so
/// a multi-GB blob over a flaky link finishes as long as it progresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row (the first one included) before giving up.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// How blobs are uploaded: one `PUT` up to `monolithic_max` bytes, else
/// `PATCH` requests of `chunk_size` bytes (raised to the registry's
/// `OCI-Chunk-Min-Length`), so that an interrupted upload resumes from the
/// last chunk the registry confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPolicy {
    pub monolithic_max: u64,
    pub chunk_size: u64,
}

impl Default for UploadPolicy {
    fn default() -> UploadPolicy {
        UploadPolicy {
            monolithic_max: 32 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// User name and password (or personal access token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in `config.json`), exchanged
    /// at the token realm for access tokens.
    IdentityToken { username: String, token: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::IdentityToken { username, .. } => f
                .debug_struct("IdentityToken")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}
