//! Failures between client and registry, injected by the testkit's
//! FaultProxy in front of the real registry: dropped connections mid-blob,
//! stalls longer than the idle timeout, 5xx and 429 with Retry-After, a
//! server that ignores Range, upload sessions the registry drops. The
//! assertions count retries, resumes and bytes; none measures time.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Recorder, digest_of, reference, repo};
use kiln_image::media;
use kiln_registry::{Event, FileSink, FileSource, PushOutcome, RegistryClient, UploadPolicy};
use kiln_testkit::{
    Fault, FaultProxy, Faults, Registry, RegistryOptions, Rule, TestImage, random_bytes,
    write_random_file,
};

const MIB: u64 = 1 << 20;

fn client_with(
    recorder: &Recorder,
    config: &tempfile::TempDir,
    idle: Duration,
    upload: UploadPolicy,
) -> RegistryClient {
    RegistryClient::new(
        recorder
            .options(config.path())
            .idle_timeout(idle)
            .upload(upload),
    )
}

/// Push then pull ~300 MB through drops, stalls, 500s and 429s. Neither
/// transfer starts over: the bytes sent and received stay well under twice
/// the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_blob_survives_drops_stalls_and_errors() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let size = 300 * MIB + 12_345;
    let stall = Duration::from_secs(5);
    let idle = Duration::from_secs(2);
    let faults = Faults::new()
        // Push: the existence check fails once.
        .rule(
            Rule::new(Fault::Status {
                status: 503,
                retry_after: None,
            })
            .method("HEAD")
            .path("/blobs/"),
        )
        // The 2nd and (its retry) 3rd PATCH drop after 10 MiB, never
        // reaching the registry (a body-buffering proxy in between).
        .rule(
            Rule::new(Fault::DropRequest { after: 10 * MIB })
                .method("PATCH")
                .skip(1)
                .times(2),
        )
        // A later PATCH is held past the idle timeout.
        .rule(
            Rule::new(Fault::StallRequest { duration: stall })
                .method("PATCH")
                .skip(3),
        )
        // Another is answered 500 after its whole body was sent.
        .rule(
            Rule::new(Fault::Status {
                status: 500,
                retry_after: None,
            })
            .method("PATCH")
            .skip(4),
        )
        // The final PUT is rate limited once.
        .rule(
            Rule::new(Fault::Status {
                status: 429,
                retry_after: Some("1".into()),
            })
            .method("PUT")
            .path("digest="),
        )
        // Pull: a drop mid-blob, a stall mid-blob, a 500, a 429.
        .rule(
            Rule::new(Fault::DropResponse { after: 50 * MIB })
                .method("GET")
                .path("/blobs/sha256:"),
        )
        .rule(
            Rule::new(Fault::StallResponse {
                after: 70 * MIB,
                duration: stall,
            })
            .method("GET")
            .path("/blobs/sha256:"),
        )
        .rule(
            Rule::new(Fault::Status {
                status: 500,
                retry_after: None,
            })
            .method("GET")
            .path("/blobs/sha256:"),
        )
        .rule(
            Rule::new(Fault::Status {
                status: 429,
                retry_after: Some("1".into()),
            })
            .method("GET")
            .path("/blobs/sha256:"),
        );
    let proxy = FaultProxy::start(&registry.host(), faults);
    let recorder = Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = client_with(
        &recorder,
        &config,
        idle,
        UploadPolicy {
            monolithic_max: 32 * MIB,
            chunk_size: 32 * MIB,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let digest = write_random_file(&path, size, 300).unwrap();
    let repository = repo(&proxy.host(), "kiln/huge");

    // Push.
    let outcome = client
        .push_blob(
            &repository,
            &digest,
            &FileSource::open(&path).unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    let push_stats = proxy.stats();
    for rule in 0..5 {
        let want = if rule == 1 { 2 } else { 1 };
        assert_eq!(
            proxy.fired(rule),
            want,
            "push rule {rule}: {:?}",
            proxy.exchanges()
        );
    }
    let push_retries = recorder.retries();
    assert!(push_retries.len() >= 6, "{push_retries:?}");
    assert!(
        push_retries
            .iter()
            .any(|(_, delay, _)| *delay == Duration::from_secs(1)),
        "Retry-After was not honoured: {push_retries:?}"
    );
    assert!(
        push_retries
            .iter()
            .any(|(_, _, reason)| reason.contains("stalled")),
        "{push_retries:?}"
    );
    let resumes = recorder.resumes();
    assert!(
        resumes.len() >= 3 && resumes.iter().all(|&o| o > 0),
        "{resumes:?}"
    );
    assert!(recorder.restarts().is_empty(), "{:?}", recorder.restarts());
    assert!(
        push_stats.request_body_bytes < size * 3 / 2,
        "sent {} bytes for a {size}-byte blob",
        push_stats.request_body_bytes
    );
    assert_eq!(
        client.blob_exists(&repository, &digest).await.unwrap(),
        Some(size)
    );

    // Pull.
    recorder.clear();
    let pulled = dir.path().join("pulled");
    let mut sink = FileSink::create(&pulled).unwrap();
    let got = client
        .fetch_blob(&repository, &digest, Some(size), &mut sink)
        .await
        .unwrap();
    assert_eq!(got, size);
    drop(sink.into_file().unwrap());
    for rule in 5..9 {
        assert_eq!(
            proxy.fired(rule),
            1,
            "pull rule {rule}: {:?}",
            proxy.exchanges()
        );
    }
    let pull_retries = recorder.retries();
    assert!(pull_retries.len() >= 4, "{pull_retries:?}");
    assert!(
        pull_retries
            .iter()
            .any(|(_, _, reason)| reason.contains("stalled")),
        "{pull_retries:?}"
    );
    assert!(
        pull_retries
            .iter()
            .any(|(_, delay, _)| *delay == Duration::from_secs(1))
    );
    let resumes = recorder.resumes();
    assert!(
        resumes.len() >= 2 && resumes.iter().all(|&o| o >= 50 * MIB),
        "{resumes:?}"
    );
    assert!(recorder.restarts().is_empty(), "{:?}", recorder.restarts());
    let pulled_bytes = proxy.stats().response_body_bytes - push_stats.response_body_bytes;
    assert!(
        pulled_bytes < size * 3 / 2,
        "received {pulled_bytes} bytes for a {size}-byte blob"
    );
    assert_eq!(kiln_testkit::sha256_file(&pulled).unwrap(), digest);
}

/// A PATCH cut mid-body reaches the registry partly; Distribution then
/// drops the session (its recorded offset no longer matches). The client
/// finds out and starts a new session.
#[tokio::test]
async fn an_upload_session_the_registry_dropped_starts_over() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new().rule(
            Rule::new(Fault::CutRequest { after: MIB })
                .method("PATCH")
                .skip(2),
        ),
    );
    let recorder = Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = client_with(
        &recorder,
        &config,
        Duration::from_secs(10),
        UploadPolicy {
            monolithic_max: MIB,
            chunk_size: 4 * MIB,
        },
    );
    let data = Bytes::from(random_bytes((20 * MIB) as usize, 21));
    let digest = digest_of(&data);
    let repository = repo(&proxy.host(), "kiln/cut");
    let outcome = client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(proxy.fired(0), 1);
    let restarts = recorder.restarts();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(restarts[0].contains("upload session"), "{restarts:?}");
    let mut pulled = Vec::new();
    client
        .fetch_blob(&repository, &digest, None, &mut pulled)
        .await
        .unwrap();
    assert_eq!(pulled, data);
}

/// A monolithic PUT dropped mid-body is sent again in the same session.
#[tokio::test]
async fn a_dropped_monolithic_put_is_sent_again() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new().rule(
            Rule::new(Fault::DropRequest { after: MIB })
                .method("PUT")
                .path("digest="),
        ),
    );
    let recorder = Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = client_with(
        &recorder,
        &config,
        Duration::from_secs(10),
        UploadPolicy::default(),
    );
    let data = Bytes::from(random_bytes((3 * MIB) as usize, 22));
    let digest = digest_of(&data);
    let repository = repo(&proxy.host(), "kiln/put");
    client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    assert_eq!(proxy.fired(0), 1);
    assert_eq!(recorder.retries().len(), 1, "{:?}", recorder.retries());
    assert!(recorder.restarts().is_empty());
    assert_eq!(
        proxy
            .exchanges()
            .iter()
            .filter(|e| e.method == "POST")
            .count(),
        1,
        "one session"
    );
    assert_eq!(
        client.blob_exists(&repository, &digest).await.unwrap(),
        Some(3 * MIB)
    );
}

/// After a drop, a server that answers the ranged request with the whole
/// blob is read past the bytes the sink already has.
#[tokio::test]
async fn a_server_that_ignores_range_is_read_past_what_arrived() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new()
            .rule(
                Rule::new(Fault::DropResponse { after: 3 * MIB })
                    .method("GET")
                    .path("/blobs/sha256:"),
            )
            .rule(
                Rule::new(Fault::IgnoreRange)
                    .method("GET")
                    .path("/blobs/sha256:"),
            ),
    );
    let (client, recorder, _config) = common::client();
    let data = Bytes::from(random_bytes((8 * MIB) as usize, 23));
    let digest = digest_of(&data);
    let repository = repo(&proxy.host(), "kiln/range");
    client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    let mut pulled = Vec::new();
    client
        .fetch_blob(&repository, &digest, Some(data.len() as u64), &mut pulled)
        .await
        .unwrap();
    assert_eq!(pulled, data);
    assert_eq!((proxy.fired(0), proxy.fired(1)), (1, 1));
    let restarts = recorder.restarts();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(restarts[0].contains("ignored the range"), "{restarts:?}");
}

/// Manifests: 503s, a stall past the idle timeout and a 429 with
/// Retry-After, then success.
#[tokio::test]
async fn manifest_requests_are_retried_through_errors_and_stalls() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new()
            .rule(
                Rule::new(Fault::Status {
                    status: 503,
                    retry_after: None,
                })
                .method("GET")
                .path("/manifests/")
                .times(2),
            )
            .rule(
                Rule::new(Fault::StallRequest {
                    duration: Duration::from_secs(5),
                })
                .method("GET")
                .path("/manifests/"),
            )
            .rule(
                Rule::new(Fault::Status {
                    status: 429,
                    retry_after: Some("1".into()),
                })
                .method("GET")
                .path("/manifests/"),
            ),
    );
    let recorder = Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = client_with(
        &recorder,
        &config,
        Duration::from_secs(2),
        UploadPolicy::default(),
    );
    let host = proxy.host();
    let image = TestImage::small();
    common::push_blobs(&client, &host, "kiln/flaky", &image).await;
    let tagged = reference(&host, "kiln/flaky:v1");
    client
        .put_manifest(
            &tagged,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    recorder.clear();
    let manifest = client.get_manifest(&tagged).await.unwrap();
    assert_eq!(manifest.digest, image.manifest.digest);
    let retries = recorder.retries();
    assert_eq!(retries.len(), 4, "{retries:?}");
    assert_eq!(
        retries
            .iter()
            .map(|(attempt, _, _)| *attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(retries[0].2.contains("503"), "{retries:?}");
    assert!(retries[2].2.contains("stalled"), "{retries:?}");
    assert_eq!(retries[3].1, Duration::from_secs(1), "{retries:?}");
    assert!(retries[3].2.contains("429"), "{retries:?}");
    // Every event names what was being done.
    for event in recorder.events() {
        if let Event::Retry { operation, .. } = event {
            assert_eq!(
                operation.to_string(),
                format!("get manifest {host}/kiln/flaky:v1")
            );
        }
    }
}

/// Blob GETs that redirect to another host (as registries backed by object
/// storage do) are followed, and the registry's credentials stay with the
/// registry.
#[tokio::test]
async fn redirects_are_followed_without_leaking_credentials() {
    let blob = Bytes::from(random_bytes(200_000, 24));
    let digest = digest_of(&blob);
    let storage = redirect::Storage::start(blob.clone());
    let registry = redirect::Registry::start(&digest, &storage.url());
    let config = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let client = RegistryClient::new(recorder.options(config.path()).credentials(
        registry.host(),
        kiln_registry::Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        },
    ));
    let mut pulled = Vec::new();
    client
        .fetch_blob(
            &repo(&registry.host(), "kiln/redirect"),
            &digest,
            None,
            &mut pulled,
        )
        .await
        .unwrap();
    assert_eq!(pulled, blob);
    assert!(
        registry.saw_authorization(),
        "the registry got no credentials"
    );
    assert_eq!(storage.requests(), 1);
    assert!(
        !storage.saw_authorization(),
        "credentials leaked to the storage host"
    );
}

/// Two hand-rolled servers: a registry that wants basic auth and redirects
/// blob GETs, and a storage host on another loopback address.
mod redirect {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use kiln_image::Digest;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Serves requests on `listener` with `answer(request head)`.
    fn serve(
        listener: std::net::TcpListener,
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) {
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let (r, mut w) = stream.into_split();
                        let mut r = BufReader::new(r);
                        loop {
                            let mut head = String::new();
                            loop {
                                let mut line = String::new();
                                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == "\r\n" {
                                    break;
                                }
                                head.push_str(&line);
                            }
                            if w.write_all(&answer(&head)).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn has_authorization(head: &str) -> bool {
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("authorization:"))
    }

    pub(crate) struct Storage {
        addr: SocketAddr,
        requests: Arc<AtomicUsize>,
        authorization: Arc<AtomicBool>,
    }

    impl Storage {
        /// On 127.0.0.2: another host than the registry's 127.0.0.1.
        pub(crate) fn start(blob: Bytes) -> Storage {
            let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let authorization = Arc::new(AtomicBool::new(false));
            let (r, a) = (requests.clone(), authorization.clone());
            serve(listener, move |head| {
                r.fetch_add(1, Ordering::SeqCst);
                if has_authorization(head) {
                    a.store(true, Ordering::SeqCst);
                }
                response("200 OK", &[], &blob)
            });
            Storage {
                addr,
                requests,
                authorization,
            }
        }

        pub(crate) fn url(&self) -> String {
            format!("http://{}/bucket/blob?signature=x", self.addr)
        }

        pub(crate) fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        pub(crate) fn saw_authorization(&self) -> bool {
            self.authorization.load(Ordering::SeqCst)
        }
    }

    pub(crate) struct Registry {
        addr: SocketAddr,
        authorization: Arc<AtomicBool>,
    }

    impl Registry {
        pub(crate) fn start(digest: &Digest, location: &str) -> Registry {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let authorization = Arc::new(AtomicBool::new(false));
            let a = authorization.clone();
            let blob_path = format!("/v2/kiln/redirect/blobs/{digest}");
            let location = location.to_string();
            serve(listener, move |head| {
                if !has_authorization(head) {
                    return response(
                        "401 Unauthorized",
                        &[("WWW-Authenticate", "Basic realm=\"test\"")],
                        b"",
                    );
                }
                a.store(true, Ordering::SeqCst);
                if head.starts_with(&format!("GET {blob_path} ")) {
                    response("307 Temporary Redirect", &[("Location", &location)], b"")
                } else {
                    response("200 OK", &[], b"{}")
                }
            });
            Registry {
                addr,
                authorization,
            }
        }

        pub(crate) fn host(&self) -> String {
            self.addr.to_string()
        }

        pub(crate) fn saw_authorization(&self) -> bool {
            self.authorization.load(Ordering::SeqCst)
        }
    }
}
