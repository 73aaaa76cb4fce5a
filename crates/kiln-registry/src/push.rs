//! Blob uploads: skip what exists, mount across repositories, one `PUT`
//! for small blobs and `PATCH` chunks for large ones, and after an
//! interruption ask the registry how far it got and go on from there.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use kiln_image::Digest;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::auth::repository_scope;
use crate::client::{Call, Endpoint, Payload};
use crate::event::Progress;
use crate::http::{Activity, parse_upload_range, status_failure};
use crate::manifest::header_digest;
use crate::retry::{Failure, Retrier};
use crate::{BlobSource, Error, Event, Operation, OperationKind, RegistryClient, Repository};

/// How much a blocking read of a [`BlobSource`] hands to the request body.
const READ_CHUNK: u64 = 256 << 10;

/// What [`RegistryClient::push_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The bytes were sent.
    Uploaded,
    /// The repository already had the blob.
    Existed,
    /// The registry linked the blob from another repository.
    Mounted { from: String },
}

/// An upload session the registry opened.
#[derive(Debug, Clone)]
struct Session {
    location: Url,
    /// Bytes the registry has confirmed.
    offset: u64,
    /// `OCI-Chunk-Min-Length`, when the registry sets one.
    min_chunk: u64,
}

enum Started {
    Session(Session),
    Mounted(String),
}

enum Step {
    Advanced(Session),
    Done(Option<Digest>),
}

/// Why asking for an upload's status failed.
enum StatusError {
    /// The registry no longer knows the session (Distribution drops a
    /// session whose data grew behind its back, e.g. a `PATCH` cut short).
    Gone(String),
    Failed(Failure),
}

impl RegistryClient {
    /// Uploads the blob `digest` read from `source`, unless the repository
    /// has it. With `mount_from` (a repository of the same registry), asks
    /// the registry to link the blob from there first.
    ///
    /// Blobs up to [`UploadPolicy::monolithic_max`](crate::UploadPolicy)
    /// go in one `PUT`, larger ones in `PATCH` chunks. After a failure the
    /// registry is asked how many bytes it holds and the upload goes on from
    /// there; if it dropped the session, a new one starts from zero.
    pub async fn push_blob<S: BlobSource + ?Sized>(
        &self,
        repository: &Repository,
        digest: &Digest,
        source: &S,
        mount_from: Option<&str>,
    ) -> Result<PushOutcome, Error> {
        let inner = &self.inner;
        let operation = Operation::new(
            OperationKind::PushBlob,
            &repository.registry,
            Some(&repository.name),
            Some(digest.to_string()),
        );
        let mount_from = mount_from.filter(|from| *from != repository.name);
        let mut scopes = vec![repository_scope(&repository.name, true)];
        if let Some(from) = mount_from {
            scopes.push(repository_scope(from, false));
        }
        if self
            .blob_exists_as(&operation, repository, digest, &scopes)
            .await?
            .is_some()
        {
            inner.emit(Event::BlobExists {
                operation: operation.clone(),
            });
            return Ok(PushOutcome::Existed);
        }
        let endpoint = inner.endpoint(&repository.registry).await?;
        let size = source.size();
        let source: &dyn BlobSource = &DynSource(source);
        let progress = Arc::new(Progress::new(
            operation.clone(),
            Some(size),
            inner.options.on_event.clone(),
        ));
        let policy = inner.options.upload;
        let mut retrier = inner.retrier(&operation);
        let ctx = Ctx {
            endpoint: &endpoint,
            operation: &operation,
            repository,
            digest,
            scopes: &scopes,
        };
        let mut session = match self.start_upload(&ctx, mount_from, &mut retrier).await? {
            Started::Mounted(from) => {
                inner.emit(Event::Mounted {
                    operation: operation.clone(),
                    from: from.clone(),
                });
                return Ok(PushOutcome::Mounted { from });
            }
            Started::Session(s) => s,
        };
        let mut restarts = 0;
        let mut check_status = false;
        let mut restarted_for_digest = false;
        loop {
            if check_status {
                match self.upload_status(&ctx, &session).await {
                    Ok(status) => {
                        check_status = false;
                        let offset = status.offset.min(size);
                        if offset > 0 {
                            inner.emit(Event::Resume {
                                operation: operation.clone(),
                                offset,
                            });
                        }
                        session = Session { offset, ..status };
                    }
                    Err(StatusError::Failed(f)) => {
                        retrier.failed(f).await?;
                        continue;
                    }
                    Err(StatusError::Gone(reason)) => {
                        // The last request may have completed the upload and
                        // only its answer was lost.
                        if self
                            .blob_exists_as(&operation, repository, digest, &scopes)
                            .await?
                            .is_some()
                        {
                            progress.report(size);
                            return Ok(PushOutcome::Uploaded);
                        }
                        // Each new session starts from zero, so progress
                        // does not excuse them: their number is bounded.
                        restarts += 1;
                        if restarts > inner.options.retry.max_attempts.max(1) {
                            return Err(Error::GaveUp {
                                operation: operation.clone(),
                                attempts: restarts,
                                last: Box::new(Error::Protocol {
                                    operation,
                                    message: reason,
                                }),
                            });
                        }
                        let reason = format!("the registry dropped the upload session: {reason}");
                        session = self.restart_upload(&ctx, reason, &mut retrier).await?;
                        check_status = false;
                        continue;
                    }
                }
            }
            let step = if session.offset == 0 && size <= policy.monolithic_max {
                self.finish_upload(&ctx, &session, Some((source, size)), &progress)
                    .await
            } else if session.offset < size {
                let chunk = policy.chunk_size.max(session.min_chunk).max(1);
                let len = chunk.min(size - session.offset);
                self.patch_upload(&ctx, &session, source, len, &progress)
                    .await
            } else {
                self.finish_upload(&ctx, &session, None, &progress).await
            };
            match step {
                Ok(Step::Done(stored)) => {
                    if let Some(stored) = stored
                        && stored != *digest
                    {
                        return Err(Error::DigestMismatch {
                            operation,
                            expected: digest.clone(),
                            actual: stored,
                        });
                    }
                    progress.report(size);
                    return Ok(PushOutcome::Uploaded);
                }
                Ok(Step::Advanced(next)) => {
                    if next.offset > session.offset {
                        retrier.progressed();
                    }
                    session = next;
                }
                Err(f) if f.retry => {
                    retrier.failed(f).await?;
                    check_status = true;
                }
                Err(f) if !restarted_for_digest && is_rejected_upload(&f.error) => {
                    // The registry's bytes do not hash to the digest: a
                    // resumed upload went wrong somewhere. Once, start over.
                    restarted_for_digest = true;
                    session = self
                        .restart_upload(&ctx, f.error.to_string(), &mut retrier)
                        .await?;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    /// Asks the registry to link the blob `digest` from `from`, another
    /// repository of the same registry, into `repository` without sending
    /// its bytes: `Mounted`, or `Existed` if the repository had it; `None`
    /// if the registry would rather have the bytes (the upload session it
    /// opened instead is cancelled).
    pub async fn mount_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        from: &str,
    ) -> Result<Option<PushOutcome>, Error> {
        let inner = &self.inner;
        let operation = Operation::new(
            OperationKind::PushBlob,
            &repository.registry,
            Some(&repository.name),
            Some(digest.to_string()),
        );
        if from == repository.name {
            return Ok(None);
        }
        let scopes = vec![
            repository_scope(&repository.name, true),
            repository_scope(from, false),
        ];
        if self
            .blob_exists_as(&operation, repository, digest, &scopes)
            .await?
            .is_some()
        {
            inner.emit(Event::BlobExists {
                operation: operation.clone(),
            });
            return Ok(Some(PushOutcome::Existed));
        }
        let endpoint = inner.endpoint(&repository.registry).await?;
        let mut retrier = inner.retrier(&operation);
        let ctx = Ctx {
            endpoint: &endpoint,
            operation: &operation,
            repository,
            digest,
            scopes: &scopes,
        };
        match self.start_upload(&ctx, Some(from), &mut retrier).await? {
            Started::Mounted(from) => {
                inner.emit(Event::Mounted {
                    operation: operation.clone(),
                    from: from.clone(),
                });
                Ok(Some(PushOutcome::Mounted { from }))
            }
            Started::Session(session) => {
                // Best effort: a session left open expires on its own.
                let call = Call::new(
                    ctx.operation,
                    Method::DELETE,
                    session.location.clone(),
                    ctx.scopes,
                );
                let _ = inner.send(ctx.endpoint, &call).await;
                Ok(None)
            }
        }
    }

    /// Reports why the upload starts over and opens a new session.
    async fn restart_upload(
        &self,
        ctx: &Ctx<'_>,
        reason: String,
        retrier: &mut Retrier<'_>,
    ) -> Result<Session, Error> {
        self.inner.emit(Event::Restart {
            operation: ctx.operation.clone(),
            reason,
        });
        match self.start_upload(ctx, None, retrier).await? {
            Started::Session(session) => Ok(session),
            // `start_upload` only reports a mount it asked for.
            Started::Mounted(_) => Err(Error::Protocol {
                operation: ctx.operation.clone(),
                message: "an upload without a mount request was answered as a mount".into(),
            }),
        }
    }

    /// `POST /blobs/uploads/` (with `?mount=&from=` to link instead).
    async fn start_upload(
        &self,
        ctx: &Ctx<'_>,
        mount_from: Option<&str>,
        retrier: &mut Retrier<'_>,
    ) -> Result<Started, Error> {
        let inner = &self.inner;
        let mut url = ctx
            .endpoint
            .url(&format!("{}/blobs/uploads/", ctx.repository.name));
        if let Some(from) = mount_from {
            url.query_pairs_mut()
                .append_pair("mount", &ctx.digest.to_string())
                .append_pair("from", from);
        }
        loop {
            let call = Call::new(ctx.operation, Method::POST, url.clone(), ctx.scopes);
            let attempt = async {
                let response = inner.send(ctx.endpoint, &call).await?;
                match response.status() {
                    StatusCode::CREATED if mount_from.is_some() => {
                        Ok(Started::Mounted(mount_from.unwrap_or_default().to_string()))
                    }
                    StatusCode::ACCEPTED => {
                        let location = location(ctx, &response, &url)?;
                        let min_chunk = response
                            .headers()
                            .get("oci-chunk-min-length")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        Ok(Started::Session(Session {
                            location,
                            offset: 0,
                            min_chunk,
                        }))
                    }
                    _ => Err(
                        status_failure(ctx.operation, response, inner.options.idle_timeout).await,
                    ),
                }
            };
            match attempt.await {
                Ok(started) => return Ok(started),
                Err(f) => retrier.failed(f).await?,
            }
        }
    }

    /// `PATCH` of `len` bytes from the session's offset.
    async fn patch_upload(
        &self,
        ctx: &Ctx<'_>,
        session: &Session,
        source: &dyn BlobSource,
        len: u64,
        progress: &Arc<Progress>,
    ) -> Result<Step, Failure> {
        let inner = &self.inner;
        let start = session.offset;
        let mut call = Call::new(
            ctx.operation,
            Method::PATCH,
            session.location.clone(),
            ctx.scopes,
        )
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_RANGE, &format!("{start}-{}", start + len - 1))
        .body(Payload::Source {
            source,
            offset: start,
            len,
        });
        call.progress = Some(progress);
        let response = inner.send(ctx.endpoint, &call).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_failure(ctx.operation, response, inner.options.idle_timeout).await);
        }
        let offset = parse_upload_range(response.headers()).unwrap_or(start + len);
        let location = match response.headers().get(LOCATION) {
            Some(_) => location(ctx, &response, &session.location)?,
            None => session.location.clone(),
        };
        Ok(Step::Advanced(Session {
            location,
            offset,
            min_chunk: session.min_chunk,
        }))
    }

    /// The final `PUT ?digest=`, with the whole blob (`body`) or nothing.
    async fn finish_upload(
        &self,
        ctx: &Ctx<'_>,
        session: &Session,
        body: Option<(&dyn BlobSource, u64)>,
        progress: &Arc<Progress>,
    ) -> Result<Step, Failure> {
        let inner = &self.inner;
        let mut url = session.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &ctx.digest.to_string());
        let mut call = Call::new(ctx.operation, Method::PUT, url, ctx.scopes)
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some((source, len)) = body {
            call = call.body(Payload::Source {
                source,
                offset: 0,
                len,
            });
            call.progress = Some(progress);
        }
        let response = inner.send(ctx.endpoint, &call).await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => {
                Ok(Step::Done(header_digest(response.headers())))
            }
            _ => Err(status_failure(ctx.operation, response, inner.options.idle_timeout).await),
        }
    }

    /// `GET <upload location>`: how many bytes the registry holds.
    async fn upload_status(
        &self,
        ctx: &Ctx<'_>,
        session: &Session,
    ) -> Result<Session, StatusError> {
        let inner = &self.inner;
        let call = Call::new(
            ctx.operation,
            Method::GET,
            session.location.clone(),
            ctx.scopes,
        );
        let response = inner
            .send(ctx.endpoint, &call)
            .await
            .map_err(StatusError::Failed)?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                let offset = parse_upload_range(response.headers()).unwrap_or(0);
                let location = match response.headers().get(LOCATION) {
                    Some(_) => {
                        location(ctx, &response, &session.location).map_err(StatusError::Failed)?
                    }
                    None => session.location.clone(),
                };
                Ok(Session {
                    location,
                    offset,
                    min_chunk: session.min_chunk,
                })
            }
            _ => {
                let failure =
                    status_failure(ctx.operation, response, inner.options.idle_timeout).await;
                if failure.retry {
                    Err(StatusError::Failed(failure))
                } else {
                    Err(StatusError::Gone(failure.error.to_string()))
                }
            }
        }
    }
}

/// What every request of one push shares.
struct Ctx<'a> {
    endpoint: &'a Endpoint,
    operation: &'a Operation,
    repository: &'a Repository,
    digest: &'a Digest,
    scopes: &'a [String],
}

/// The final `PUT` was refused because of the bytes, not the request.
fn is_rejected_upload(error: &Error) -> bool {
    matches!(
        error,
        Error::Status { status: 400, code: Some(code), .. }
            if matches!(code.as_str(), "DIGEST_INVALID" | "BLOB_UPLOAD_INVALID" | "SIZE_INVALID")
    )
}

/// The `Location` of an answer, resolved against the request URL.
fn location(ctx: &Ctx<'_>, response: &reqwest::Response, base: &Url) -> Result<Url, Failure> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base.join(v).ok())
        .ok_or_else(|| {
            Failure::fatal(Error::Protocol {
                operation: ctx.operation.clone(),
                message: format!("upload answer {} without a Location", response.status()),
            })
        })
}

/// Lets a `?Sized` source go where `&dyn BlobSource` is needed.
struct DynSource<'a, S: ?Sized>(&'a S);

impl<S: BlobSource + ?Sized> BlobSource for DynSource<'_, S> {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        self.0.open_at(offset)
    }
}

/// A request body of `len` bytes of `source` from `offset`: read on a
/// blocking thread into a small queue (bounded memory), touching the idle
/// clock and reporting progress as the connection takes each piece. A read
/// error is also left in `error` so that the caller can tell it from a
/// network error.
pub(crate) fn source_body(
    source: &dyn BlobSource,
    offset: u64,
    len: u64,
    activity: Activity,
    progress: Option<Arc<Progress>>,
    error: Arc<Mutex<Option<io::Error>>>,
) -> io::Result<reqwest::Body> {
    let mut reader = source.open_at(offset)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut remaining = len;
        while remaining > 0 {
            let mut buf = vec![0u8; usize::try_from(remaining.min(READ_CHUNK)).unwrap_or(0)];
            let n = match read_some(&mut reader, &mut buf) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the blob source ended {remaining} bytes early"),
                )),
                other => other,
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    *error.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(io::Error::new(e.kind(), e.to_string()));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            buf.truncate(n);
            remaining -= n as u64;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                // The request was dropped.
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold((rx, 0u64), move |(mut rx, mut sent)| {
        let activity = activity.clone();
        let progress = progress.clone();
        async move {
            let item = rx.recv().await?;
            if let Ok(bytes) = &item {
                sent += bytes.len() as u64;
                activity.touch();
                if let Some(progress) = &progress {
                    progress.report(offset + sent);
                }
            }
            Some((item, (rx, sent)))
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
