//! How the client picks the scheme and trusts certificates: HTTPS with an
//! extra CA (from the options or Docker's `certs.d`), insecure registries
//! (no verification, then plain HTTP), plain HTTP for loopback names. A
//! resolve override points non-loopback names at 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use common::{Recorder, digest_of, reference, repo};
use kiln_image::media;
use kiln_registry::{ClientOptions, Error, RegistryClient};
use kiln_testkit::{Registry, RegistryOptions, TestImage, TlsOptions, random_bytes};

const NAME: &str = "registry.kiln.test";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn tls_registry() -> Option<Registry> {
    Registry::start(RegistryOptions {
        tls: Some(TlsOptions {
            dns_names: vec![NAME.to_string()],
            client_auth: false,
        }),
        ..RegistryOptions::default()
    })
}

async fn round_trip(client: &RegistryClient, host: &str) {
    let repository = repo(host, "kiln/tls");
    let data = Bytes::from(random_bytes(70_000, 11));
    let digest = digest_of(&data);
    client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    let mut pulled = Vec::new();
    client
        .fetch_blob(&repository, &digest, None, &mut pulled)
        .await
        .unwrap();
    assert_eq!(pulled, data);
    let image = TestImage::small();
    common::push_blobs(client, host, "kiln/tls", &image).await;
    let tagged = reference(host, "kiln/tls:v1");
    client
        .put_manifest(
            &tagged,
            media::OCI_MANIFEST,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        client.get_manifest(&tagged).await.unwrap().digest,
        image.manifest.digest
    );
}

fn options(recorder: &Recorder, config: &tempfile::TempDir) -> ClientOptions {
    recorder.options(config.path()).resolve(NAME, LOCALHOST)
}

#[tokio::test]
async fn https_with_an_extra_ca_file() {
    let Some(registry) = tls_registry() else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let client =
        RegistryClient::new(options(&recorder, &config).ca_file(registry.ca_pem().unwrap()));
    round_trip(&client, &host).await;
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
}

#[tokio::test]
async fn https_with_a_ca_in_docker_certs_d() {
    let Some(registry) = tls_registry() else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let certs = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(certs.path().join(&host)).unwrap();
    fs_err::copy(
        registry.ca_pem().unwrap(),
        certs.path().join(&host).join("ca.crt"),
    )
    .unwrap();
    let config = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(
        options(&Recorder::default(), &config).docker_certs_dir(Some(certs.path().to_path_buf())),
    );
    round_trip(&client, &host).await;
}

#[tokio::test]
async fn an_untrusted_certificate_fails_at_once() {
    let Some(registry) = tls_registry() else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let client = RegistryClient::new(options(&recorder, &config));
    let err = client
        .get_manifest(&reference(&host, "kiln/tls:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
}

#[tokio::test]
async fn an_insecure_registry_is_not_verified() {
    let Some(registry) = tls_registry() else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();
    let client =
        RegistryClient::new(options(&Recorder::default(), &config).insecure_registry(host.clone()));
    round_trip(&client, &host).await;
}

/// `*` (Kaniko's `--insecure-pull`, which names no registry) is every one.
#[tokio::test]
async fn the_insecure_wildcard_is_every_registry() {
    let Some(registry) = tls_registry() else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options(&Recorder::default(), &config).insecure_registry("*"));
    round_trip(&client, &host).await;
}

#[tokio::test]
async fn an_insecure_registry_falls_back_to_plain_http() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();
    let client =
        RegistryClient::new(options(&Recorder::default(), &config).insecure_registry(host.clone()));
    round_trip(&client, &host).await;

    // Not declared insecure: HTTPS only, which a plain HTTP server cannot
    // speak; no retry fixes that.
    let recorder = Recorder::default();
    let strict = RegistryClient::new(options(&recorder, &config));
    let err = strict
        .get_manifest(&reference(&host, "kiln/tls:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());

    // `localhost` is loopback: plain HTTP without asking.
    let local = format!("localhost:{}", registry.port());
    round_trip(&strict, &local).await;
}

#[tokio::test]
async fn a_client_certificate_from_docker_certs_d() {
    let Some(registry) = Registry::start(RegistryOptions {
        tls: Some(TlsOptions {
            dns_names: vec![NAME.to_string()],
            client_auth: true,
        }),
        ..RegistryOptions::default()
    }) else {
        return;
    };
    let host = format!("{NAME}:{}", registry.port());
    let config = tempfile::tempdir().unwrap();

    // Trusting the server is not enough: it wants a client certificate.
    let recorder = Recorder::default();
    let anonymous =
        RegistryClient::new(options(&recorder, &config).ca_file(registry.ca_pem().unwrap()));
    let err = anonymous
        .get_manifest(&reference(&host, "kiln/tls:v1"))
        .await
        .unwrap_err();
    // TLS 1.3 reports the refusal after the handshake: an alert, or a
    // closed connection (retried) when the alert is lost in the race.
    assert!(
        matches!(err, Error::Transport { .. } | Error::GaveUp { .. }),
        "{err}"
    );

    // Docker's layout: certs.d/<host>/{ca.crt, client.cert, client.key}.
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join(&host);
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::copy(registry.ca_pem().unwrap(), dir.join("ca.crt")).unwrap();
    let client_cert = registry.client_cert().unwrap();
    fs_err::write(dir.join("client.cert"), &client_cert.cert_pem).unwrap();
    fs_err::write(dir.join("client.key"), &client_cert.key_pem).unwrap();
    let client = RegistryClient::new(
        options(&Recorder::default(), &config).docker_certs_dir(Some(certs.path().to_path_buf())),
    );
    round_trip(&client, &host).await;
}
