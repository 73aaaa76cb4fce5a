//! Image documents: canonical bytes, kept bytes, media-type checks, and
//! platform selection from an index.

use std::collections::BTreeMap;

use kiln_image::document::{
    ContainerConfig, Descriptor, Document, DocumentError, Empty, ImageConfig, ImageDocument,
    ImagePlatform, Index, Manifest,
};
use kiln_image::media::{self, Format};
use kiln_image::{Digest, Platform};

fn desc(media_type: &str, seed: &str) -> Descriptor {
    let bytes = seed.as_bytes();
    Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
}

fn entry(seed: &str, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
    let mut d = desc(media::OCI_MANIFEST, seed);
    d.platform = Some(ImagePlatform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(Into::into),
        ..Default::default()
    });
    d
}

#[test]
fn serialisation_is_canonical() {
    let labels: BTreeMap<String, String> = [("z", "1"), ("a", "2"), ("m", "3")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = || ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(labels.clone()),
            exposed_ports: Some(
                ["8080/tcp", "443/tcp", "53/udp"]
                    .into_iter()
                    .map(|p| (p.to_string(), Empty {}))
                    .collect(),
            ),
            entrypoint: Some(vec![]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = Document::with_media_type(media::OCI_CONFIG, config());
    let b = Document::with_media_type(media::OCI_CONFIG, config());
    assert_eq!(a.bytes(), b.bytes());
    let text = std::str::from_utf8(a.bytes()).unwrap();
    assert_eq!(
        text,
        r#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"443/tcp":{},"53/udp":{},"8080/tcp":{}},"Entrypoint":[],"Labels":{"a":"2","m":"3","z":"1"}},"rootfs":{"type":"layers","diff_ids":[]}}"#
    );
    assert_eq!(*a.digest(), Digest::of(a.bytes()));
    assert_eq!(a.descriptor().size, a.bytes().len() as u64);
}

#[test]
fn parsing_keeps_the_original_bytes() {
    // Not canonical: spaces, key order, fields kiln does not know.
    let raw = br#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "config": {"size": 3, "digest": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "mediaType": "application/vnd.docker.container.image.v1+json"},
      "layers": [],
      "x-vendor": {"kept": true}
    }"#
    .to_vec();
    let doc = Document::<Manifest>::parse(media::DOCKER_MANIFEST, raw.clone()).unwrap();
    assert_eq!(doc.bytes(), raw.as_slice());
    assert_eq!(*doc.digest(), Digest::of(&raw));
    assert_eq!(doc.media_type(), media::DOCKER_MANIFEST);
    assert_eq!(doc.value().config.size, 3);
    // And the same without a described media type: the embedded one.
    let doc = Document::<Manifest>::parse("", raw).unwrap();
    assert_eq!(doc.media_type(), media::DOCKER_MANIFEST);
}

#[test]
fn docker_and_oci_flavours() {
    for format in [Format::Oci, Format::Docker] {
        let m = Manifest::new(format, desc(format.config(), "c"), vec![]);
        let doc = Document::new(m);
        assert_eq!(doc.media_type(), format.manifest());
        let again = Document::<Manifest>::parse(format.manifest(), doc.bytes().to_vec()).unwrap();
        assert_eq!(again, doc);
        let index = Document::new(Index::new(format, vec![doc.descriptor()]));
        assert_eq!(index.media_type(), format.index());
        match ImageDocument::parse("", index.bytes().to_vec()).unwrap() {
            ImageDocument::Index(i) => assert_eq!(i.value().manifests[0], doc.descriptor()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn refuses_ambiguous_and_old_documents() {
    let index = Document::new(Index::new(Format::Oci, vec![]));
    // An index described as a manifest.
    let err = ImageDocument::parse(media::OCI_MANIFEST, index.bytes().to_vec()).unwrap_err();
    assert!(
        matches!(
            err,
            DocumentError::MediaTypeMismatch { .. } | DocumentError::Invalid { .. }
        ),
        "{err}"
    );
    // A manifest that claims another type than its descriptor.
    let m = Document::new(Manifest::new(
        Format::Oci,
        desc(media::OCI_CONFIG, "c"),
        vec![],
    ));
    let err = Document::<Manifest>::parse(media::DOCKER_MANIFEST, m.bytes().to_vec()).unwrap_err();
    assert!(
        matches!(err, DocumentError::MediaTypeMismatch { .. }),
        "{err}"
    );
    // Docker schema 1.
    let v1 = br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[],"config":{"mediaType":"a","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":1}}"#;
    let err = Document::<Manifest>::parse("", v1.to_vec()).unwrap_err();
    assert!(
        matches!(err, DocumentError::SchemaVersion { version: 1, .. }),
        "{err}"
    );
    // A layer type where a manifest belongs.
    let err = ImageDocument::parse(media::OCI_LAYER_GZIP, m.bytes().to_vec()).unwrap_err();
    assert!(matches!(err, DocumentError::WrongKind { .. }), "{err}");
    // Not JSON.
    assert!(Document::<ImageConfig>::parse(media::OCI_CONFIG, b"\x1f\x8b".to_vec()).is_err());
}

fn multi_platform_index() -> Index {
    let mut attestation = entry("att", "unknown", "unknown", None);
    attestation.annotations.insert(
        "vnd.docker.reference.type".into(),
        "attestation-manifest".into(),
    );
    Index::new(
        Format::Oci,
        vec![
            entry("amd64", "linux", "amd64", None),
            entry("amd64v2", "linux", "amd64", Some("v2")),
            entry("arm64", "linux", "arm64", Some("v8")),
            entry("armv6", "linux", "arm", Some("v6")),
            entry("armv7", "linux", "arm", Some("v7")),
            entry("win", "windows", "amd64", None),
            attestation,
        ],
    )
}

fn pick(index: &Index, want: &str) -> Option<String> {
    let want = Platform::parse(want).unwrap();
    index.select(&want).map(|d| {
        ["amd64", "amd64v2", "arm64", "armv6", "armv7", "win", "att"]
            .into_iter()
            .find(|s| Digest::of(s.as_bytes()) == d.digest)
            .unwrap()
            .to_string()
    })
}

#[test]
fn selects_the_platform_from_an_index() {
    let index = multi_platform_index();
    let cases = [
        ("linux/amd64", Some("amd64")),
        ("linux/x86_64", Some("amd64")),
        // amd64/v1 is amd64.
        ("linux/amd64/v1", Some("amd64")),
        ("linux/amd64/v2", Some("amd64v2")),
        // A v3 host runs plain amd64 (kiln_platform's matcher does not
        // rank amd64 variant levels, so the v2 entry is not a candidate).
        ("linux/amd64/v3", Some("amd64")),
        // arm64 ≡ arm64/v8 ≡ aarch64.
        ("linux/arm64", Some("arm64")),
        ("linux/arm64/v8", Some("arm64")),
        ("linux/aarch64", Some("arm64")),
        // arm/v7 runs v6 too but prefers v7, though v6 comes first.
        ("linux/arm/v7", Some("armv7")),
        ("linux/arm", Some("armv7")),
        ("linux/arm/v6", Some("armv6")),
        ("linux/arm/v5", None),
        ("windows/amd64", Some("win")),
        ("linux/s390x", None),
    ];
    for (want, expected) in cases {
        assert_eq!(pick(&index, want).as_deref(), expected, "{want}");
    }
    // The attestation never matches, and is not a platform of the image.
    assert!(!index.platforms().iter().any(|p| p.os == "unknown"));
    assert_eq!(index.platforms().len(), 6);
}

#[test]
fn descriptor_platforms_are_normalised_when_read() {
    let d = entry("x", "linux", "aarch64", Some("8"));
    assert_eq!(
        d.platform().unwrap(),
        Platform::parse("linux/arm64").unwrap()
    );
    // But written as they were.
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains(r#""architecture":"aarch64""#), "{json}");
    let index = Index::new(Format::Oci, vec![d]);
    assert!(
        index
            .select(&Platform::parse("linux/arm64").unwrap())
            .is_some()
    );
}
