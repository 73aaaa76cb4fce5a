//! Anonymous pushes and pulls against the real registry: blobs small and
//! large, monolithic and chunked, manifests by tag and digest, mounts, and
//! the errors a missing manifest gives.

mod common;

use bytes::Bytes;
use common::{client, digest_of, reference, repo};
use kiln_image::{Digest, Reference, media};
use kiln_registry::{
    Error, Event, FileSink, FileSource, PushOutcome, RegistryClient, UploadPolicy,
};
use kiln_testkit::{FaultProxy, Faults, Registry, RegistryOptions, TestImage, random_bytes};

fn start() -> Option<Registry> {
    Registry::start(RegistryOptions::default())
}

#[tokio::test]
async fn small_blob_pushes_once_and_pulls_back() {
    let Some(registry) = start() else { return };
    let (client, recorder, _config) = client();
    let repository = repo(&registry.host(), "kiln/small");
    let data = Bytes::from(random_bytes(10_000, 1));
    let digest = digest_of(&data);

    assert_eq!(
        client.blob_exists(&repository, &digest).await.unwrap(),
        None
    );
    let outcome = client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(
        client.blob_exists(&repository, &digest).await.unwrap(),
        Some(10_000)
    );
    let again = client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    assert_eq!(again, PushOutcome::Existed);

    let mut pulled = Vec::new();
    let size = client
        .fetch_blob(&repository, &digest, Some(10_000), &mut pulled)
        .await
        .unwrap();
    assert_eq!((size, &pulled[..]), (10_000, &data[..]));

    let events = recorder.events();
    assert!(events.iter().any(|e| matches!(e, Event::BlobExists { .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Progress {
            bytes: 10_000,
            total: Some(10_000),
            ..
        }
    )));
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
}

/// Counts the requests of each kind that reached the registry.
fn count(proxy: &FaultProxy, method: &str, part: &str) -> usize {
    proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == method && e.target.contains(part))
        .count()
}

#[tokio::test]
async fn large_blobs_go_in_chunks_and_small_ones_in_one_put() {
    let Some(registry) = start() else { return };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let recorder = common::Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(recorder.options(config.path()).upload(UploadPolicy {
        monolithic_max: 4 << 20,
        chunk_size: 4 << 20,
    }));
    let dir = tempfile::tempdir().unwrap();
    let repository = repo(&proxy.host(), "kiln/chunked");

    // 18 MiB + 123 bytes: five PATCHes (4+4+4+4+2 MiB and change), a final PUT.
    let big = dir.path().join("big");
    let size = (18 << 20) + 123;
    let digest = kiln_testkit::write_random_file(&big, size, 2).unwrap();
    let source = FileSource::open(&big).unwrap();
    let outcome = client
        .push_blob(&repository, &digest, &source, None)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(count(&proxy, "PATCH", "/blobs/uploads/"), 5);
    assert_eq!(count(&proxy, "PUT", "/blobs/uploads/"), 1);

    let mut sink = FileSink::create(dir.path().join("big.pulled")).unwrap();
    let pulled = client
        .fetch_blob(&repository, &digest, Some(size), &mut sink)
        .await
        .unwrap();
    assert_eq!(pulled, size);
    drop(sink.into_file().unwrap());
    assert_eq!(
        Digest::of(&fs_err::read(dir.path().join("big.pulled")).unwrap()),
        digest
    );

    // 3 MiB: one PUT with the body, no PATCH.
    let small = Bytes::from(random_bytes(3 << 20, 3));
    let small_digest = digest_of(&small);
    let patches = count(&proxy, "PATCH", "/blobs/uploads/");
    client
        .push_blob(&repository, &small_digest, &small, None)
        .await
        .unwrap();
    assert_eq!(count(&proxy, "PATCH", "/blobs/uploads/"), patches);
    let mut pulled = Vec::new();
    client
        .fetch_blob(&repository, &small_digest, None, &mut pulled)
        .await
        .unwrap();
    assert_eq!(pulled, small);

    // Progress reached the total of the big push and pull, in steps.
    let progress: Vec<u64> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Progress {
                bytes,
                total: Some(t),
                ..
            } if t == size => Some(bytes),
            _ => None,
        })
        .collect();
    assert!(progress.len() > 10, "{progress:?}");
    assert_eq!(progress.iter().filter(|&&b| b == size).count(), 2);
}

#[tokio::test]
async fn manifests_by_tag_and_by_digest() {
    let Some(registry) = start() else { return };
    let (client, _recorder, _config) = client();
    let host = registry.host();
    let image = TestImage::small();
    common::push_blobs(&client, &host, "kiln/image", &image).await;

    let tagged = reference(&host, "kiln/image:v1");
    let digest = client
        .put_manifest(
            &tagged,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    assert_eq!(digest, image.manifest.digest);

    let by_tag = client.get_manifest(&tagged).await.unwrap();
    assert_eq!(by_tag.bytes, image.manifest.bytes);
    assert_eq!(by_tag.media_type, media::OCI_MANIFEST);
    assert_eq!(by_tag.digest, digest);

    let by_digest_ref = reference(&host, &format!("kiln/image@{digest}"));
    let by_digest = client.get_manifest(&by_digest_ref).await.unwrap();
    assert_eq!(by_digest, by_tag);

    let info = client.head_manifest(&tagged).await.unwrap().unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(info.size, image.manifest.size());
    assert_eq!(info.media_type, media::OCI_MANIFEST);
    assert_eq!(
        client
            .head_manifest(&reference(&host, "kiln/image:nope"))
            .await
            .unwrap(),
        None
    );

    // A manifest pushed by digest alone (as index children are).
    common::push_blobs(&client, &host, "kiln/untagged", &image).await;
    let untagged = reference(&host, &format!("kiln/untagged@{digest}"));
    client
        .put_manifest(
            &untagged,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        client.get_manifest(&untagged).await.unwrap().bytes,
        image.manifest.bytes
    );

    // Bytes that do not match the digest in the reference are not sent.
    let wrong = Reference::parse(&format!("{host}/kiln/untagged@{}", Digest::of(b"x"))).unwrap();
    let err = client
        .put_manifest(
            &wrong,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn blobs_mount_across_repositories() {
    let Some(registry) = start() else { return };
    let (client, recorder, _config) = client();
    let host = registry.host();
    let data = Bytes::from(random_bytes(50_000, 4));
    let digest = digest_of(&data);
    client
        .push_blob(&repo(&host, "kiln/source"), &digest, &data, None)
        .await
        .unwrap();

    let target = repo(&host, "kiln/target");
    let outcome = client
        .push_blob(&target, &digest, &data, Some("kiln/source"))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PushOutcome::Mounted {
            from: "kiln/source".to_string()
        }
    );
    assert_eq!(
        client.blob_exists(&target, &digest).await.unwrap(),
        Some(50_000)
    );
    assert!(recorder.events().iter().any(|e| matches!(
        e,
        Event::Mounted { from, .. } if from == "kiln/source"
    )));

    // A mount source without the blob: the registry opens an upload instead.
    let other = Bytes::from(random_bytes(1000, 5));
    let outcome = client
        .push_blob(
            &repo(&host, "kiln/third"),
            &digest_of(&other),
            &other,
            Some("kiln/source"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
}

#[tokio::test]
async fn a_missing_manifest_fails_at_once_with_the_registry_message() {
    let Some(registry) = start() else { return };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let (client, recorder, _config) = client();
    let missing = reference(&proxy.host(), "kiln/none:nope");

    let err = client.get_manifest(&missing).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let text = err.to_string();
    assert!(text.contains("manifest unknown"), "{text}");
    assert!(text.contains("MANIFEST_UNKNOWN"), "{text}");
    assert!(text.contains("kiln/none:nope"), "{text}");
    assert!(matches!(
        &err,
        Error::Status { status: 404, code: Some(code), .. } if code == "MANIFEST_UNKNOWN"
    ));
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
    assert_eq!(count(&proxy, "GET", "/manifests/nope"), 1);

    // Same for a blob.
    let digest = Digest::of(b"not there");
    let err = client
        .fetch_blob(
            &repo(&proxy.host(), "kiln/none"),
            &digest,
            None,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("blob unknown"), "{err}");
    assert!(recorder.retries().is_empty());
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_then_given_up() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (client, recorder, _config) = client();
    let err = client
        .get_manifest(&reference(&format!("127.0.0.1:{port}"), "kiln/x:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GaveUp { attempts: 5, .. }), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("ping 127.0.0.1"), "{chain}");
    assert!(chain.to_lowercase().contains("connect"), "{chain}");
    assert_eq!(recorder.retries().len(), 4);
}
