//! The client: one HTTP transport per trust setting, one endpoint per
//! registry (scheme and challenge, learnt by a ping), and `send`, which
//! every operation goes through: authorization, the idle timeout, and a
//! second try after a 401 with a fresh token.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use kiln_image::{Reference, is_loopback_host};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::auth::AuthCache;
use crate::auth::challenge::{self, Challenge};
use crate::auth::docker_config::DockerConfig;
use crate::event::Progress;
use crate::http::{Activity, idle_watch, stalled, status_failure, transport_failure};
use crate::retry::{Failure, Retrier};
use crate::{BlobSource, ClientOptions, Error, Operation, OperationKind};

/// A distribution API v2 client. Cheap to clone; clones share connections,
/// credentials and tokens.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A repository of a registry: where blobs are pushed and pulled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// As in references: `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/alpine`.
    pub name: String,
}

impl Repository {
    pub fn new(registry: impl Into<String>, name: impl Into<String>) -> Repository {
        Repository {
            registry: registry.into(),
            name: name.into(),
        }
    }

    /// The repository of a reference (its tag and digest left out).
    pub fn of(reference: &Reference) -> Repository {
        Repository::new(&reference.registry, &reference.repository)
    }
}

impl From<&Reference> for Repository {
    fn from(reference: &Reference) -> Repository {
        Repository::of(reference)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

pub(crate) struct Inner {
    pub(crate) options: ClientOptions,
    pub(crate) docker_config_dir: Option<PathBuf>,
    pub(crate) auth: AuthCache,
    transports: Mutex<HashMap<Trust, reqwest::Client>>,
    endpoints: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Endpoint>>>>>,
}

/// How a connection's peer is trusted; one reqwest client each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    /// Plain HTTP.
    Plain,
    /// HTTPS without certificate verification (`--insecure-registry`).
    Insecure,
    /// HTTPS verified against the system roots, the extra CA files and
    /// `certs.d/<host>`.
    Verified(String),
}

/// A registry as the client speaks to it.
pub(crate) struct Endpoint {
    /// As in references (`docker.io`).
    pub(crate) registry: String,
    /// `https://registry-1.docker.io/`.
    pub(crate) base: Url,
    pub(crate) http: reqwest::Client,
    challenge: Mutex<Option<Challenge>>,
}

impl Endpoint {
    pub(crate) fn challenge(&self) -> Option<Challenge> {
        self.challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_challenge(&self, challenge: Challenge) {
        *self
            .challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(challenge);
    }

    /// `<base>/v2/<path>`.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v2/{path}"));
        url
    }

    /// Whether `url` is this registry (same scheme, host and port): only
    /// then does a request carry the registry's credentials.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }
}

/// What to send in a request body. Streams are made again for every try.
pub(crate) enum Payload<'a> {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of `source` from `offset`.
    Source {
        source: &'a dyn BlobSource,
        offset: u64,
        len: u64,
    },
}

/// One request of an operation.
pub(crate) struct Call<'a> {
    pub(crate) operation: &'a Operation,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Payload<'a>,
    /// Bearer scopes the request needs.
    pub(crate) scopes: &'a [String],
    /// Reports upload progress as the body is sent.
    pub(crate) progress: Option<&'a Arc<Progress>>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(
        operation: &'a Operation,
        method: Method,
        url: Url,
        scopes: &'a [String],
    ) -> Call<'a> {
        Call {
            operation,
            method,
            url,
            headers: HeaderMap::new(),
            body: Payload::Empty,
            scopes,
            progress: None,
        }
    }

    pub(crate) fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub(crate) fn body(mut self, body: Payload<'a>) -> Self {
        self.body = body;
        self
    }
}

impl RegistryClient {
    /// A client with `options`. Nothing is contacted until the first
    /// operation; credentials are read when a registry asks for them.
    pub fn new(options: ClientOptions) -> RegistryClient {
        let docker_config_dir = options
            .docker_config_dir
            .clone()
            .or_else(DockerConfig::default_dir);
        RegistryClient {
            inner: Arc::new(Inner {
                options,
                docker_config_dir,
                auth: AuthCache::default(),
                transports: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }
}

/// The host the API of `registry` is served from (`docker.io` →
/// `registry-1.docker.io`).
pub(crate) fn api_host(registry: &str) -> String {
    Reference {
        registry: registry.to_string(),
        repository: String::new(),
        tag: None,
        digest: None,
    }
    .api_host()
    .to_string()
}

impl Inner {
    pub(crate) fn retrier<'a>(&'a self, operation: &'a Operation) -> Retrier<'a> {
        Retrier::new(
            operation,
            self.options.retry,
            self.options.on_event.as_ref(),
        )
    }

    pub(crate) fn emit(&self, event: crate::Event) {
        if let Some(handler) = &self.options.on_event {
            handler(&event);
        }
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.options
            .insecure_registries
            .iter()
            .any(|r| r == "*" || r == host || api_host(r) == host)
    }

    /// The client for `trust`, built on first use.
    fn transport(&self, operation: &Operation, trust: &Trust) -> Result<reqwest::Client, Error> {
        let mut transports = self
            .transports
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = transports.get(trust) {
            return Ok(client.clone());
        }
        let o = &self.options;
        let mut builder = reqwest::Client::builder()
            .user_agent(o.user_agent.clone())
            .connect_timeout(o.connect_timeout)
            // Redirects are followed by hand, so that credentials never
            // reach another host and Range survives each hop.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .dns_resolver(Arc::new(crate::NameResolver::new()));
        for (host, ip) in &o.resolve {
            // Port 0: the port of the URL is used.
            builder = builder.resolve(host, SocketAddr::new(*ip, 0));
        }
        match trust {
            Trust::Plain => {}
            Trust::Insecure => builder = builder.danger_accept_invalid_certs(true),
            Trust::Verified(host) => {
                for file in &o.ca_files {
                    for cert in read_certificates(file)? {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                if let Some(dir) = &o.docker_certs_dir {
                    builder = docker_certs(builder, &dir.join(host))?;
                }
            }
        }
        let client = builder.build().map_err(|e| Error::Transport {
            operation: operation.clone(),
            reason: crate::http::error_chain(&e),
        })?;
        transports.insert(trust.clone(), client.clone());
        Ok(client)
    }

    /// The client for a URL outside the registry API (token realm, redirect).
    pub(crate) fn transport_for_url(
        &self,
        operation: &Operation,
        url: &Url,
    ) -> Result<reqwest::Client, Error> {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let trust = if url.scheme() == "http" {
            Trust::Plain
        } else if self.is_insecure(&host) {
            Trust::Insecure
        } else {
            Trust::Verified(host)
        };
        self.transport(operation, &trust)
    }

    /// The endpoint of `registry`, pinged on first use (with retries).
    pub(crate) async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>, Error> {
        let cell = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(registry.to_string())
            .or_default()
            .clone();
        let endpoint = cell.get_or_try_init(|| self.connect(registry)).await?;
        Ok(endpoint.clone())
    }

    /// Finds the scheme as Docker does (loopback: HTTP; insecure: HTTPS
    /// without verification, then HTTP; else verified HTTPS) and the
    /// challenge `GET /v2/` answers with.
    async fn connect(&self, registry: &str) -> Result<Arc<Endpoint>, Error> {
        let host = api_host(registry);
        let operation = Operation::new(OperationKind::Ping, registry, None, None);
        let candidates: Vec<(&str, Trust)> = if is_loopback_host(&host) {
            vec![("http", Trust::Plain)]
        } else if self.is_insecure(registry) || self.is_insecure(&host) {
            vec![("https", Trust::Insecure), ("http", Trust::Plain)]
        } else {
            vec![("https", Trust::Verified(host.clone()))]
        };
        let mut retrier = self.retrier(&operation);
        loop {
            let mut failure = None;
            for (scheme, trust) in &candidates {
                let http = self.transport(&operation, trust)?;
                let base =
                    Url::parse(&format!("{scheme}://{host}/")).map_err(|e| Error::Protocol {
                        operation: operation.clone(),
                        message: format!("registry host {host:?}: {e}"),
                    })?;
                match self.ping(&operation, &http, &base).await {
                    Ok(challenge) => {
                        return Ok(Arc::new(Endpoint {
                            registry: registry.to_string(),
                            base,
                            http,
                            challenge: Mutex::new(challenge),
                        }));
                    }
                    Err(Ping::Status(f)) => {
                        // The scheme works; the registry is unwell.
                        failure = Some(f);
                        break;
                    }
                    Err(Ping::Transport(f)) => failure = Some(f),
                }
            }
            let failure = failure.unwrap_or_else(|| {
                Failure::fatal(Error::Protocol {
                    operation: operation.clone(),
                    message: "no way to connect".to_string(),
                })
            });
            retrier.failed(failure).await?;
        }
    }

    async fn ping(
        &self,
        operation: &Operation,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Option<Challenge>, Ping> {
        let idle = self.options.idle_timeout;
        let mut url = base.clone();
        url.set_path("/v2/");
        let activity = Activity::new();
        let response = match idle_watch(http.get(url).send(), &activity, idle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Ping::Transport(transport_failure(operation, &e))),
            Err(()) => return Err(Ping::Transport(stalled(operation, idle))),
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(challenge::parse));
        }
        if crate::retry::is_retryable_status(status.as_u16()) {
            return Err(Ping::Status(
                status_failure(operation, response, idle).await,
            ));
        }
        // 200, or a registry that answers /v2/ oddly but may serve the rest.
        Ok(None)
    }

    /// Sends `call` with the authorization its scopes need; after a 401,
    /// learns the challenge, fetches a fresh token and tries once more.
    /// A second 401 is final.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
    ) -> Result<reqwest::Response, Failure> {
        let authorization = self
            .authorization(endpoint, call.scopes, &[], false)
            .await?;
        let response = self
            .execute(&endpoint.http, call, &call.url, authorization.clone())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(challenge::parse)
        else {
            return Err(status_failure(call.operation, response, self.options.idle_timeout).await);
        };
        let extra: Vec<String> = match &challenge {
            Challenge::Bearer { scope: Some(s), .. } => vec![s.clone()],
            _ => Vec::new(),
        };
        let retry_basic = matches!(challenge, Challenge::Basic) && authorization.is_none();
        let retry_bearer = matches!(challenge, Challenge::Bearer { .. });
        endpoint.set_challenge(challenge);
        let fresh = if retry_basic || retry_bearer {
            self.authorization(endpoint, call.scopes, &extra, true)
                .await?
        } else {
            None
        };
        let Some(fresh) = fresh else {
            return Err(status_failure(call.operation, response, self.options.idle_timeout).await);
        };
        drop(response);
        let response = self
            .execute(&endpoint.http, call, &call.url, Some(fresh))
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(status_failure(call.operation, response, self.options.idle_timeout).await);
        }
        Ok(response)
    }

    /// One HTTP exchange up to the response headers, under the idle timeout
    /// (which the request body's progress keeps alive).
    pub(crate) async fn execute(
        &self,
        http: &reqwest::Client,
        call: &Call<'_>,
        url: &Url,
        authorization: Option<HeaderValue>,
    ) -> Result<reqwest::Response, Failure> {
        let operation = call.operation;
        let activity = Activity::new();
        let source_error: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let mut request = http
            .request(call.method.clone(), url.clone())
            .headers(call.headers.clone());
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        request = match &call.body {
            Payload::Empty if call.method == Method::GET || call.method == Method::HEAD => request,
            Payload::Empty => request.body(Vec::new()),
            Payload::Bytes(bytes) => request.body(bytes.clone()),
            Payload::Source {
                source,
                offset,
                len,
            } => {
                let body = crate::push::source_body(
                    *source,
                    *offset,
                    *len,
                    activity.clone(),
                    call.progress.cloned(),
                    source_error.clone(),
                )
                .map_err(|source| {
                    Failure::fatal(Error::Source {
                        operation: operation.clone(),
                        source,
                    })
                })?;
                request.header(CONTENT_LENGTH, len.to_string()).body(body)
            }
        };
        match idle_watch(request.send(), &activity, self.options.idle_timeout).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                if let Some(source) = source_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    return Err(Failure::fatal(Error::Source {
                        operation: operation.clone(),
                        source,
                    }));
                }
                Err(transport_failure(operation, &e))
            }
            Err(()) => Err(stalled(operation, self.options.idle_timeout)),
        }
    }
}

enum Ping {
    /// The registry answered 5xx/429: retry the same scheme.
    Status(Failure),
    /// No HTTP answer: try the next scheme.
    Transport(Failure),
}

/// The certificates of a PEM file.
fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let pem = fs_err::read(path).map_err(|e| Error::Certificate {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Certificate {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(Error::Certificate {
            path: path.to_path_buf(),
            message: "no PEM certificate in the file".to_string(),
        });
    }
    Ok(certs)
}

/// Docker's `certs.d/<host>`: every `*.crt` is a CA; a `<name>.cert` with a
/// `<name>.key` is the client certificate.
fn docker_certs(
    mut builder: reqwest::ClientBuilder,
    dir: &Path,
) -> Result<reqwest::ClientBuilder, Error> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(builder),
        Err(e) => {
            return Err(Error::Certificate {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                for cert in read_certificates(&path)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Some("cert") => {
                let key = path.with_extension("key");
                let mut pem = fs_err::read(&path).map_err(|e| Error::Certificate {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                pem.extend(fs_err::read(&key).map_err(|e| Error::Certificate {
                    path: key.clone(),
                    message: e.to_string(),
                })?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|e| Error::Certificate {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                builder = builder.identity(identity);
            }
            _ => {}
        }
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine spawns transfers on a multi-threaded runtime.
    #[test]
    fn the_client_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let client = RegistryClient::new(ClientOptions::default());
        send_sync(&client);
        let repository = Repository::new("localhost:5000", "kiln/x");
        let reference = Reference::parse("localhost:5000/kiln/x:1").unwrap();
        let digest = kiln_image::Digest::of(b"");
        let mut sink = Vec::new();
        send(client.fetch_blob(&repository, &digest, None, &mut sink));
        send(client.push_blob(&repository, &digest, &Bytes::new(), None));
        send(client.get_manifest(&reference));
        send(client.put_manifest(&reference, "x", Bytes::new()));
    }

    #[test]
    fn api_hosts_and_origins() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
        let endpoint = Endpoint {
            registry: "r.example:5000".into(),
            base: Url::parse("https://r.example:5000/").unwrap(),
            http: reqwest::Client::new(),
            challenge: Mutex::new(None),
        };
        assert_eq!(
            endpoint.url("a/b/blobs/x").as_str(),
            "https://r.example:5000/v2/a/b/blobs/x"
        );
        for (url, same) in [
            ("https://r.example:5000/v2/x", true),
            ("http://r.example:5000/v2/x", false),
            ("https://r.example/v2/x", false),
            ("https://s3.example/bucket", false),
        ] {
            assert_eq!(
                endpoint.same_origin(&Url::parse(url).unwrap()),
                same,
                "{url}"
            );
        }
    }
}
