//! Pull mirrors against real registries: the image taken from the mirror
//! (under its prefix) without a request to its own registry, a mirror
//! without it passed over for the registry, and no fallback when it is
//! turned off. The origin's requests are counted through a proxy.

mod common;

use bytes::Bytes;
use common::{Recorder, reference};
use kiln_image::{Store, media};
use kiln_registry::{Event, Mirror, PullOptions, RegistryClient, TransferError, pull_image};
use kiln_testkit::{FaultProxy, Faults, Registry, RegistryOptions, TestImage};

/// Pushes `image` to `host` as `name:1`.
async fn seed(client: &RegistryClient, host: &str, name: &str, image: &TestImage) {
    common::push_blobs(client, host, name, image).await;
    client
        .put_manifest(
            &reference(host, &format!("{name}:1")),
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_take_the_mirror_first_and_fall_back_unless_told_not_to() {
    let (Some(origin), Some(mirror)) = (
        Registry::start(RegistryOptions::default()),
        Registry::start(RegistryOptions::default()),
    ) else {
        return;
    };
    let origin = FaultProxy::start(&origin.host(), Faults::new());
    let config = tempfile::tempdir().unwrap();
    let seeder = RegistryClient::new(Recorder::default().options(config.path()));
    let image = TestImage::small();
    seed(&seeder, &origin.host(), "base/app", &image).await;
    seed(&seeder, &mirror.host(), "proxy/base/app", &image).await;
    let seeded = origin.exchanges().len();
    let asked = || origin.exchanges()[seeded..].to_vec();
    let wanted = reference(&origin.host(), "base/app:1");
    let options = PullOptions {
        lazy_layers: true,
        ..PullOptions::default()
    };
    let with_mirror = |prefix: &str, fallback: bool| {
        let recorder = Recorder::default();
        let mirror: Mirror = format!("{}/{prefix}", mirror.host()).parse().unwrap();
        let client = RegistryClient::new(
            recorder
                .options(config.path())
                .pull_mirror(&origin.host(), mirror)
                .mirror_fallback(fallback),
        );
        (client, recorder)
    };

    // From the mirror, under its prefix; the origin never asked. The
    // layer left there is known to be in the mirror.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let (client, recorder) = with_mirror("proxy", true);
    let pulled = pull_image(&client, &store, &wanted, &options)
        .await
        .unwrap();
    assert_eq!(
        pulled.source,
        reference(&mirror.host(), "proxy/base/app:1"),
        "{pulled:?}"
    );
    assert!(asked().is_empty(), "{:?}", asked());
    assert_eq!(store.resolve(&wanted).unwrap(), Some(pulled.target.clone()));
    let known = store
        .read(|r| r.blob_sources(&image.layer.digest))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            known.sources[0].registry.as_str(),
            known.sources[0].repository.as_str()
        ),
        (mirror.host().as_str(), "proxy/base/app")
    );
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::Mirrored { mirror: m, .. } if *m == format!("{}/proxy", mirror.host()))),
        "{:?}",
        recorder.events()
    );

    // A mirror without the image: the origin gives it.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let (client, recorder) = with_mirror("elsewhere", true);
    let pulled = pull_image(&client, &store, &wanted, &options)
        .await
        .unwrap();
    assert_eq!(pulled.source, wanted.clone().with_default_tag());
    assert!(!asked().is_empty());
    let failed: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MirrorFailed { mirror, .. } => Some(mirror),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [format!("{}/elsewhere", mirror.host())]);

    // No fallback: the error names the mirror, the origin is not asked.
    let before = asked().len();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let (client, _recorder) = with_mirror("elsewhere", false);
    let err = pull_image(&client, &store, &wanted, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::NoMirror { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("tried {}/elsewhere (", mirror.host())),
        "{text}"
    );
    assert_eq!(asked().len(), before, "{:?}", asked());
    assert_eq!(store.resolve(&wanted).unwrap(), None);
}
