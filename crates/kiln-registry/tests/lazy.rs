//! Lazy layers against the real registry: a pull that leaves the layers
//! where they are, a push that links them from there, a push elsewhere and
//! a read that fetch them, each counted from the requests the registry saw.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{client, reference, repo};
use kiln_image::document::Descriptor;
use kiln_image::{Store, media};
use kiln_registry::{PullOptions, RegistryFetcher, pull_image, push_descriptor};
use kiln_testkit::{FaultProxy, Faults, Registry, RegistryOptions, TestImage};

/// `GET`s of the blob with this digest through `proxy`.
fn gets(proxy: &FaultProxy, digest: &str) -> usize {
    proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "GET" && e.target.contains(&format!("/blobs/{digest}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_layers_are_linked_on_push_and_fetched_only_when_read() {
    let (Some(registry), Some(other)) = (
        Registry::start(RegistryOptions::default()),
        Registry::start(RegistryOptions::default()),
    ) else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let (client, _recorder, _config) = client();
    let image = TestImage::small();
    let base = repo(&proxy.host(), "base/small");
    for blob in [&image.layer, &image.config] {
        client
            .push_blob(&base, &blob.digest, &Bytes::from(blob.bytes.clone()), None)
            .await
            .unwrap();
    }
    let base_ref = reference(&proxy.host(), "base/small:1");
    client
        .put_manifest(
            &base_ref,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    let layer = image.layer.digest.to_string();

    // The pull stores the manifest and config, and where the layer is.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let options = PullOptions {
        lazy_layers: true,
        ..PullOptions::default()
    };
    let pulled = pull_image(&client, &store, &base_ref, &options)
        .await
        .unwrap();
    assert_eq!(gets(&proxy, &layer), 0);
    assert_eq!(pulled.downloaded, 1, "the config only");
    assert!(!store.contains(&image.layer.digest).unwrap());
    let known = store
        .read(|r| r.blob_sources(&image.layer.digest))
        .unwrap()
        .unwrap();
    assert_eq!(known.sources[0].repository, "base/small");
    assert_eq!(known.size, image.layer.size());
    assert_eq!(store.image_blobs(&pulled.target).unwrap().len(), 3);

    // Pushed to another repository of the same registry: linked.
    let same = reference(&proxy.host(), "app/small:1");
    let pushed = push_descriptor(&client, &store, &pulled.target, &same, &same, 4)
        .await
        .unwrap();
    assert_eq!((pushed.mounted, pushed.uploaded), (1, 1), "{pushed:?}");
    assert_eq!(gets(&proxy, &layer), 0);
    assert!(!store.contains(&image.layer.digest).unwrap());

    // Pushed to another registry: fetched once, then uploaded.
    let elsewhere = reference(&other.host(), "app/small:1");
    let pushed = push_descriptor(&client, &store, &pulled.target, &elsewhere, &elsewhere, 4)
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, 2, "{pushed:?}");
    assert_eq!(gets(&proxy, &layer), 1);
    assert!(store.contains(&image.layer.digest).unwrap());

    // Another store, read through its fetcher: fetched at the first read
    // (from a thread of its own, as this test runs inside the runtime).
    let other_store = Store::open(dir.path().join("other")).unwrap();
    let pulled = pull_image(&client, &other_store, &base_ref, &options)
        .await
        .unwrap();
    other_store.set_fetcher(Arc::new(RegistryFetcher::new(
        client.clone(),
        tokio::runtime::Handle::current(),
    )));
    let layer_desc: Descriptor = store
        .read_document::<kiln_image::document::Manifest>(&pulled.target)
        .unwrap()
        .into_value()
        .layers[0]
        .clone();
    let read = tokio::task::spawn_blocking(move || other_store.read_blob(&layer_desc.digest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, image.layer.bytes);
    assert_eq!(gets(&proxy, &layer), 2);
}
