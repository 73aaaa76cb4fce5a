//! Manifests and indexes: get, head and put, by tag or digest.

use bytes::Bytes;
use kiln_image::{Digest, Reference, media};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};

use crate::auth::repository_scope;
use crate::client::{Call, Endpoint, Payload};
use crate::http::{MAX_MANIFEST, read_body, status_failure};
use crate::retry::Failure;
use crate::{Error, Operation, OperationKind, RegistryClient};

/// A manifest or index as the registry stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The exact bytes: their digest is the manifest's identity.
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What a `HEAD` on a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

fn accept() -> String {
    media::MANIFEST_TYPES.join(", ")
}

impl RegistryClient {
    /// Fetches a manifest or index by tag or digest (`latest` when the
    /// reference has neither). Fetched by digest, the bytes are verified
    /// against it; by tag, against `Docker-Content-Digest` when sent.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Manifest, Error> {
        let inner = &self.inner;
        let target = reference.tag_or_digest();
        let operation = Operation::new(
            OperationKind::GetManifest,
            &reference.registry,
            Some(&reference.repository),
            Some(target.clone()),
        );
        let endpoint = inner.endpoint(&reference.registry).await?;
        let scopes = [repository_scope(&reference.repository, false)];
        let url = endpoint.url(&format!("{}/manifests/{target}", reference.repository));
        let mut retrier = inner.retrier(&operation);
        loop {
            let call =
                Call::new(&operation, Method::GET, url.clone(), &scopes).header(ACCEPT, &accept());
            match self.get_manifest_once(&endpoint, &call, reference).await {
                Ok(m) => return Ok(m),
                Err(f) => retrier.failed(f).await?,
            }
        }
    }

    async fn get_manifest_once(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
        reference: &Reference,
    ) -> Result<Manifest, Failure> {
        let inner = &self.inner;
        let operation = call.operation;
        let idle = inner.options.idle_timeout;
        let response = inner.send(endpoint, call).await?;
        if response.status() != StatusCode::OK {
            return Err(status_failure(operation, response, idle).await);
        }
        let headers = response.headers().clone();
        let bytes = Bytes::from(read_body(operation, response, MAX_MANIFEST, idle).await?);
        let digest = Digest::of(&bytes);
        let claimed = header_digest(&headers);
        for expected in [reference.digest.as_ref(), claimed.as_ref()]
            .into_iter()
            .flatten()
        {
            if *expected != digest {
                return Err(Failure::fatal(Error::DigestMismatch {
                    operation: operation.clone(),
                    expected: expected.clone(),
                    actual: digest,
                }));
            }
        }
        let media_type = media_type(&headers, Some(&bytes));
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The digest, media type and size of a manifest without its body;
    /// `None` when the registry has no such tag or digest.
    pub async fn head_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<ManifestInfo>, Error> {
        let inner = &self.inner;
        let target = reference.tag_or_digest();
        let operation = Operation::new(
            OperationKind::HeadManifest,
            &reference.registry,
            Some(&reference.repository),
            Some(target.clone()),
        );
        let endpoint = inner.endpoint(&reference.registry).await?;
        let scopes = [repository_scope(&reference.repository, false)];
        let url = endpoint.url(&format!("{}/manifests/{target}", reference.repository));
        let mut retrier = inner.retrier(&operation);
        let info = loop {
            let call =
                Call::new(&operation, Method::HEAD, url.clone(), &scopes).header(ACCEPT, &accept());
            let attempt = async {
                let response = inner.send(&endpoint, &call).await?;
                match response.status() {
                    StatusCode::OK => Ok(Some(response.headers().clone())),
                    StatusCode::NOT_FOUND => Ok(None),
                    _ => {
                        Err(status_failure(&operation, response, inner.options.idle_timeout).await)
                    }
                }
            };
            match attempt.await {
                Ok(info) => break info,
                Err(f) => retrier.failed(f).await?,
            }
        };
        let Some(headers) = info else {
            return Ok(None);
        };
        let size = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (header_digest(&headers), size) {
            (Some(digest), Some(size)) => Ok(Some(ManifestInfo {
                media_type: media_type(&headers, None),
                digest,
                size,
            })),
            // Some registries leave the digest out of HEAD answers.
            _ => {
                let m = self.get_manifest(reference).await?;
                Ok(Some(ManifestInfo {
                    size: m.bytes.len() as u64,
                    media_type: m.media_type,
                    digest: m.digest,
                }))
            }
        }
    }

    /// Stores a manifest under the reference's tag, or its digest when it
    /// has no tag, and returns the manifest's digest.
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, Error> {
        let inner = &self.inner;
        let digest = Digest::of(&bytes);
        let target = match (&reference.tag, &reference.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => digest.to_string(),
        };
        let operation = Operation::new(
            OperationKind::PutManifest,
            &reference.registry,
            Some(&reference.repository),
            Some(target.clone()),
        );
        if let Some(expected) = &reference.digest
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                operation,
                expected: expected.clone(),
                actual: digest,
            });
        }
        let endpoint = inner.endpoint(&reference.registry).await?;
        let scopes = [repository_scope(&reference.repository, true)];
        let url = endpoint.url(&format!("{}/manifests/{target}", reference.repository));
        let mut retrier = inner.retrier(&operation);
        loop {
            let call = Call::new(&operation, Method::PUT, url.clone(), &scopes)
                .header(CONTENT_TYPE, media_type)
                .body(Payload::Bytes(bytes.clone()));
            let attempt = async {
                let response = inner.send(&endpoint, &call).await?;
                match response.status() {
                    StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => {
                        Ok(header_digest(response.headers()))
                    }
                    _ => {
                        Err(status_failure(&operation, response, inner.options.idle_timeout).await)
                    }
                }
            };
            match attempt.await {
                Ok(Some(stored)) if stored != digest => {
                    return Err(Error::DigestMismatch {
                        operation,
                        expected: digest,
                        actual: stored,
                    });
                }
                Ok(_) => return Ok(digest),
                Err(f) => retrier.failed(f).await?,
            }
        }
    }
}

pub(crate) fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The media type from `Content-Type`, else from the document's own
/// `mediaType` field.
fn media_type(headers: &HeaderMap, body: Option<&[u8]>) -> String {
    let header = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty() && v != "application/json" && v != "text/plain");
    if let Some(header) = header {
        return header;
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    body.and_then(|b| serde_json::from_slice::<Doc>(b).ok())
        .and_then(|d| d.media_type)
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string())
}
