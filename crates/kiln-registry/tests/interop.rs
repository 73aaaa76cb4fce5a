//! Interoperability with skopeo (containers/image): what kiln pushes,
//! skopeo reads; what skopeo pushes, kiln pulls with the same digests.

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::{reference, repo};
use kiln_image::{Digest, media};
use kiln_testkit::need::{Tool, need};
use kiln_testkit::{Registry, RegistryOptions, TestImage};

/// `skopeo` with `args`: its stdout; panics with its stderr when it fails.
fn skopeo(skopeo: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new(skopeo)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo {args:?}: {e}"));
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn skopeo_reads_what_kiln_pushes() {
    let Some(bin) = need(Tool::Skopeo) else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let host = registry.host();
    let (client, _recorder, _config) = common::client();
    let image = TestImage::small();
    common::push_blobs(&client, &host, "kiln/interop", &image).await;
    client
        .put_manifest(
            &reference(&host, "kiln/interop:v1"),
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();

    let url = format!("docker://{host}/kiln/interop:v1");
    let inspect = skopeo(&bin, &["inspect", "--tls-verify=false", &url]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.manifest.digest.to_string());
    assert_eq!(
        inspect["Layers"],
        serde_json::json!([image.layer.digest.to_string()])
    );
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    let raw = skopeo(&bin, &["inspect", "--raw", "--tls-verify=false", &url]);
    assert_eq!(raw, image.manifest.bytes);
    let config = skopeo(
        &bin,
        &["inspect", "--config", "--raw", "--tls-verify=false", &url],
    );
    assert_eq!(config, image.config.bytes);
}

#[tokio::test]
async fn kiln_pulls_what_skopeo_pushes() {
    let Some(bin) = need(Tool::Skopeo) else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let host = registry.host();
    let image = TestImage::new(&[
        ("app/main.py", b"print('pushed by skopeo')\n"),
        ("app/data.bin", &[7u8; 5000]),
    ]);
    let layout = tempfile::tempdir().unwrap();
    image.write_oci_layout(layout.path(), "v2").unwrap();
    let source = format!("oci:{}:v2", layout.path().display());
    let dest = format!("docker://{host}/kiln/from-skopeo:v2");
    skopeo(
        &bin,
        &[
            "copy",
            "--insecure-policy",
            "--dest-tls-verify=false",
            &source,
            &dest,
        ],
    );
    let raw = skopeo(&bin, &["inspect", "--raw", "--tls-verify=false", &dest]);

    let (client, recorder, _config) = common::client();
    let manifest = client
        .get_manifest(&reference(&host, "kiln/from-skopeo:v2"))
        .await
        .unwrap();
    assert_eq!(manifest.bytes, raw);
    assert_eq!(manifest.digest, Digest::of(&raw));
    // skopeo copied the layout's manifest unchanged.
    assert_eq!(manifest.digest, image.manifest.digest);
    assert_eq!(manifest.media_type, media::OCI_MANIFEST);

    // Every blob the manifest names, pulled and verified.
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let mut descriptors = vec![parsed["config"].clone()];
    descriptors.extend(parsed["layers"].as_array().unwrap().iter().cloned());
    let repository = repo(&host, "kiln/from-skopeo");
    for descriptor in descriptors {
        let digest: Digest = descriptor["digest"].as_str().unwrap().parse().unwrap();
        let size = descriptor["size"].as_u64().unwrap();
        let mut bytes = Vec::new();
        client
            .fetch_blob(&repository, &digest, Some(size), &mut bytes)
            .await
            .unwrap();
        let expected = [&image.config, &image.layer]
            .into_iter()
            .find(|b| b.digest == digest)
            .expect("a blob of the image");
        assert_eq!(bytes, expected.bytes);
    }
    // And by digest, the pinned way.
    let pinned = reference(&host, &format!("kiln/from-skopeo@{}", manifest.digest));
    assert_eq!(client.get_manifest(&pinned).await.unwrap().bytes, raw);
    assert!(recorder.retries().is_empty());
}
