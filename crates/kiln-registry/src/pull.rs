//! Blob existence checks and downloads: streamed into a [`BlobSink`],
//! hashed on the way, resumed with `Range` after an interruption, redirects
//! followed without handing credentials to another host.

use std::sync::Arc;

use kiln_image::{Digest, Sha256};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::auth::repository_scope;
use crate::client::{Call, Endpoint};
use crate::event::Progress;
use crate::http::{parse_content_range, status_failure, transport_failure};
use crate::retry::Failure;
use crate::{BlobSink, Error, Event, Operation, OperationKind, RegistryClient, Repository};

/// Hops followed before a redirect chain counts as a loop.
const MAX_REDIRECTS: usize = 10;

/// Why a download attempt ended early.
enum Interrupted {
    /// Retry from where the sink is.
    Failed(Failure),
    /// The bytes so far cannot be trusted: reset the sink and start over.
    StartOver(String),
}

impl From<Failure> for Interrupted {
    fn from(f: Failure) -> Interrupted {
        Interrupted::Failed(f)
    }
}

impl RegistryClient {
    /// The blob's size if the repository has it, `None` if not.
    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, Error> {
        let operation = Operation::new(
            OperationKind::BlobExists,
            &repository.registry,
            Some(&repository.name),
            Some(digest.to_string()),
        );
        let scopes = [repository_scope(&repository.name, false)];
        self.blob_exists_as(&operation, repository, digest, &scopes)
            .await
    }

    /// [`blob_exists`](Self::blob_exists) on behalf of another operation
    /// (a push checks first, with its push scopes).
    pub(crate) async fn blob_exists_as(
        &self,
        operation: &Operation,
        repository: &Repository,
        digest: &Digest,
        scopes: &[String],
    ) -> Result<Option<u64>, Error> {
        let inner = &self.inner;
        let endpoint = inner.endpoint(&repository.registry).await?;
        let url = endpoint.url(&format!("{}/blobs/{digest}", repository.name));
        let mut retrier = inner.retrier(operation);
        loop {
            let call = Call::new(operation, Method::HEAD, url.clone(), scopes);
            let attempt = async {
                let response = self.send_following(&endpoint, &call).await?;
                match response.status() {
                    StatusCode::OK => Ok(Some(
                        response
                            .headers()
                            .get(CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    )),
                    StatusCode::NOT_FOUND => Ok(None),
                    _ => Err(status_failure(operation, response, inner.options.idle_timeout).await),
                }
            };
            match attempt.await {
                Ok(found) => return Ok(found),
                Err(f) => retrier.failed(f).await?,
            }
        }
    }

    /// Downloads a blob into `sink` and verifies its digest (and `size`,
    /// when given). An interrupted download resumes at `sink.written()`
    /// with a `Range` request; a server that ignores `Range` is read past
    /// the bytes the sink has. Returns the blob's size.
    ///
    /// The sink is reset first if it holds anything: its bytes would have
    /// to be hashed again to be verified.
    pub async fn fetch_blob<S: BlobSink + Send + ?Sized>(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: Option<u64>,
        sink: &mut S,
    ) -> Result<u64, Error> {
        let inner = &self.inner;
        let operation = Operation::new(
            OperationKind::PullBlob,
            &repository.registry,
            Some(&repository.name),
            Some(digest.to_string()),
        );
        let sink_error = |source| Error::Sink {
            operation: operation.clone(),
            source,
        };
        let endpoint = inner.endpoint(&repository.registry).await?;
        let scopes = [repository_scope(&repository.name, false)];
        let url = endpoint.url(&format!("{}/blobs/{digest}", repository.name));
        let progress = Arc::new(Progress::new(
            operation.clone(),
            size,
            inner.options.on_event.clone(),
        ));
        if sink.written() != 0 {
            sink.reset().map_err(sink_error)?;
        }
        let mut hasher = Sha256::new();
        let mut retrier = inner.retrier(&operation);
        let mut started_over_for_digest = false;
        let mut interrupted = false;
        loop {
            let before = hasher.len();
            if interrupted && before > 0 {
                inner.emit(Event::Resume {
                    operation: operation.clone(),
                    offset: before,
                });
            }
            let attempt = self
                .fetch_attempt(
                    &endpoint,
                    &operation,
                    &url,
                    &scopes,
                    size,
                    sink,
                    &mut hasher,
                    &progress,
                )
                .await;
            let failure = match attempt {
                Ok(()) => {
                    let actual = hasher.clone().finish();
                    let len = hasher.len();
                    if actual == *digest {
                        if let Some(size) = size
                            && size != len
                        {
                            return Err(Error::SizeMismatch {
                                operation,
                                expected: size,
                                actual: len,
                            });
                        }
                        return Ok(len);
                    }
                    // A resumed download stitched from a server that
                    // misreported its ranges is the likely cause: once,
                    // start over from zero.
                    let mismatch = Error::DigestMismatch {
                        operation: operation.clone(),
                        expected: digest.clone(),
                        actual,
                    };
                    if started_over_for_digest {
                        return Err(mismatch);
                    }
                    started_over_for_digest = true;
                    Interrupted::StartOver(mismatch.to_string())
                }
                Err(i) => i,
            };
            interrupted = true;
            let failure = match failure {
                Interrupted::Failed(f) => f,
                Interrupted::StartOver(reason) => {
                    sink.reset().map_err(sink_error)?;
                    hasher = Sha256::new();
                    inner.emit(Event::Restart {
                        operation: operation.clone(),
                        reason: reason.clone(),
                    });
                    Failure::transient(Error::Protocol {
                        operation: operation.clone(),
                        message: reason,
                    })
                }
            };
            if hasher.len() > before {
                retrier.progressed();
            }
            retrier.failed(failure).await?;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_attempt<S: BlobSink + Send + ?Sized>(
        &self,
        endpoint: &Endpoint,
        operation: &Operation,
        url: &Url,
        scopes: &[String],
        size: Option<u64>,
        sink: &mut S,
        hasher: &mut Sha256,
        progress: &Progress,
    ) -> Result<(), Interrupted> {
        let inner = &self.inner;
        let idle = inner.options.idle_timeout;
        let offset = hasher.len();
        let mut call = Call::new(operation, Method::GET, url.clone(), scopes);
        if offset > 0 {
            call = call.header(RANGE, &format!("bytes={offset}-"));
        }
        let mut response = self.send_following(endpoint, &call).await?;
        // Bytes of the answer the sink already has.
        let mut skip = 0;
        match response.status() {
            StatusCode::OK => {
                if offset > 0 {
                    skip = offset;
                    inner.emit(Event::Restart {
                        operation: operation.clone(),
                        reason: format!(
                            "the registry ignored the range request; skipping {offset} bytes already written"
                        ),
                    });
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, _, _)) if start <= offset => skip = offset - start,
                    _ => {
                        return Err(Interrupted::StartOver(format!(
                            "the registry answered range {offset}- with {:?}",
                            response.headers().get(CONTENT_RANGE)
                        )));
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                if size == Some(offset) {
                    // Everything had arrived; only the end of the answer was lost.
                    return Ok(());
                }
                return Err(Interrupted::StartOver(format!(
                    "the registry cannot serve the blob from byte {offset}"
                )));
            }
            _ => return Err(status_failure(operation, response, idle).await.into()),
        }
        loop {
            let chunk = match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(transport_failure(operation, &e).into()),
                Err(_) => return Err(crate::http::stalled(operation, idle).into()),
            };
            let mut data = &chunk[..];
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                data = &data[n..];
                skip -= n as u64;
            }
            if data.is_empty() {
                continue;
            }
            let len = hasher.len() + data.len() as u64;
            if let Some(size) = size
                && len > size
            {
                return Err(Failure::fatal(Error::SizeMismatch {
                    operation: operation.clone(),
                    expected: size,
                    actual: len,
                })
                .into());
            }
            sink.write(data).map_err(|source| {
                Failure::fatal(Error::Sink {
                    operation: operation.clone(),
                    source,
                })
            })?;
            hasher.update(data);
            progress.report(hasher.len());
        }
        if let Some(size) = size
            && hasher.len() < size
        {
            return Err(Failure::transient(Error::Transport {
                operation: operation.clone(),
                reason: format!("the answer ended at byte {} of {size}", hasher.len()),
            })
            .into());
        }
        Ok(())
    }

    /// Sends a GET or HEAD and follows redirects (object stores behind
    /// registries answer 307 with a signed URL). Credentials go only to the
    /// registry itself; headers such as `Range` go everywhere.
    pub(crate) async fn send_following(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
    ) -> Result<reqwest::Response, Failure> {
        let inner = &self.inner;
        let operation = call.operation;
        let mut response = inner.send(endpoint, call).await?;
        let mut url = call.url.clone();
        for _ in 0..MAX_REDIRECTS {
            if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
                .ok_or_else(|| {
                    Failure::fatal(Error::Protocol {
                        operation: operation.clone(),
                        message: format!("redirect {} without a Location", response.status()),
                    })
                })?;
            url = location;
            let (http, authorization) = if endpoint.same_origin(&url) {
                (
                    endpoint.http.clone(),
                    inner
                        .authorization(endpoint, call.scopes, &[], false)
                        .await?,
                )
            } else {
                (inner.transport_for_url(operation, &url)?, None)
            };
            response = inner.execute(&http, call, &url, authorization).await?;
        }
        Err(Failure::fatal(Error::Protocol {
            operation: operation.clone(),
            message: format!("more than {MAX_REDIRECTS} redirects"),
        }))
    }
}
