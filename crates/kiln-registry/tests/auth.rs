//! Authentication against the real registry: basic auth (htpasswd) with
//! credentials from a docker config's `auths`, `credsStore` and
//! `credHelpers`; bearer tokens from a token server the registry trusts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use common::{Recorder, digest_of, reference, repo};
use kiln_image::media;
use kiln_registry::{Error, PushOutcome, RegistryClient};
use kiln_testkit::{Registry, RegistryOptions, TestImage, TokenAuth, random_bytes};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

fn write_config(dir: &Path, json: &serde_json::Value) {
    fs_err::write(dir.join("config.json"), json.to_string()).unwrap();
}

fn auth_entry(user: &str, password: &str) -> serde_json::Value {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({ "auth": auth })
}

/// Pushes a blob and an image, pulls them back: everything an
/// authenticated client does.
async fn round_trip(client: &RegistryClient, host: &str, name: &str) {
    let repository = repo(host, name);
    let data = Bytes::from(random_bytes(100_000, 7));
    let digest = digest_of(&data);
    let outcome = client
        .push_blob(&repository, &digest, &data, None)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    let mut pulled = Vec::new();
    client
        .fetch_blob(&repository, &digest, None, &mut pulled)
        .await
        .unwrap();
    assert_eq!(pulled, data);

    let image = TestImage::small();
    common::push_blobs(client, host, name, &image).await;
    let tagged = reference(host, &format!("{name}:v1"));
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

fn htpasswd_registry() -> Option<Registry> {
    Registry::start(RegistryOptions {
        htpasswd: Some((USER.into(), PASSWORD.into())),
        ..RegistryOptions::default()
    })
}

#[tokio::test]
async fn basic_auth_with_credentials_from_docker_config_auths() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let host = registry.host();
    let config = tempfile::tempdir().unwrap();
    write_config(
        config.path(),
        &serde_json::json!({ "auths": { host.clone(): auth_entry(USER, PASSWORD) } }),
    );
    let recorder = Recorder::default();
    let client = RegistryClient::new(recorder.options(config.path()));
    round_trip(&client, &host, "kiln/basic").await;
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());

    // Without credentials, and with a wrong password: refused at once, with
    // the registry's message.
    for config_json in [
        serde_json::json!({}),
        serde_json::json!({ "auths": { host.clone(): auth_entry(USER, "wrong") } }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config_json);
        let recorder = Recorder::default();
        let client = RegistryClient::new(recorder.options(dir.path()));
        let err = client
            .get_manifest(&reference(&host, "kiln/basic:v1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { status: 401, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("authentication required"), "{err}");
        assert!(recorder.retries().is_empty());
    }
}

/// A `docker-credential-kilntest` that knows one server, and logs each
/// question to `<dir>/asked`.
fn write_helper(dir: &Path, server: &str) {
    let script = format!(
        r#"#!/bin/sh
[ "$1" = get ] || {{ echo "unsupported: $1" >&2; exit 2; }}
read -r server
echo "$server" >> "{dir}/asked"
if [ "$server" = "{server}" ]; then
  printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\n' "$server"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
        dir = dir.display()
    );
    let path = dir.join("docker-credential-kilntest");
    fs_err::write(&path, script).unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn basic_auth_with_credentials_from_a_helper() {
    let Some(registry) = htpasswd_registry() else {
        return;
    };
    let host = registry.host();
    let helpers = tempfile::tempdir().unwrap();
    write_helper(helpers.path(), &host);

    for (name, config_json) in [
        (
            "kiln/store",
            serde_json::json!({ "credsStore": "kilntest" }),
        ),
        (
            "kiln/helper",
            serde_json::json!({ "auths": { host.clone(): {} }, "credHelpers": { host.clone(): "kilntest" } }),
        ),
    ] {
        let config = tempfile::tempdir().unwrap();
        write_config(config.path(), &config_json);
        let recorder = Recorder::default();
        // The helper's directory goes in the options, not in $PATH: tests
        // run in parallel and PATH is process-wide.
        let client = RegistryClient::new(
            recorder
                .options(config.path())
                .credential_helper_path(vec![helpers.path().to_path_buf()]),
        );
        round_trip(&client, &host, name).await;
    }
    // Asked once per client (then cached), with the registry's host.
    let asked = fs_err::read_to_string(helpers.path().join("asked")).unwrap();
    assert_eq!(asked, format!("{host}\n{host}\n"));

    // A helper that is not there is an error that names it.
    let config = tempfile::tempdir().unwrap();
    write_config(
        config.path(),
        &serde_json::json!({ "credsStore": "absent" }),
    );
    let client = RegistryClient::new(
        Recorder::default()
            .options(config.path())
            .credential_helper_path(vec![helpers.path().to_path_buf()]),
    );
    let err = client
        .get_manifest(&reference(&host, "kiln/helper:v1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("docker-credential-absent"),
        "{err}"
    );
}

fn token_registry(auth: TokenAuth) -> Option<Registry> {
    Registry::start(RegistryOptions {
        token_auth: Some(auth),
        ..RegistryOptions::default()
    })
}

#[tokio::test]
async fn bearer_tokens_from_the_realm_with_basic_credentials() {
    let Some(registry) = token_registry(TokenAuth {
        users: vec![(USER.into(), PASSWORD.into())],
        ..TokenAuth::default()
    }) else {
        return;
    };
    let host = registry.host();
    let tokens = registry.token_server().unwrap();
    let config = tempfile::tempdir().unwrap();
    write_config(
        config.path(),
        &serde_json::json!({ "auths": { host.clone(): auth_entry(USER, PASSWORD) } }),
    );
    let recorder = Recorder::default();
    let client = RegistryClient::new(recorder.options(config.path()));
    round_trip(&client, &host, "kiln/bearer").await;

    let requests = tokens.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.granted && r.account.as_deref() == Some(USER))
    );
    assert!(
        requests
            .iter()
            .any(|r| r.scopes == ["repository:kiln/bearer:pull,push"]),
        "{requests:?}"
    );
    // Cached per scope set: one token for pushing, one for pulling.
    assert_eq!(tokens.issued(), 2, "{requests:?}");
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());

    // Anonymous: the token server refuses, and so does the client, at once.
    let recorder = Recorder::default();
    let anonymous_config = tempfile::tempdir().unwrap();
    let anonymous = RegistryClient::new(recorder.options(anonymous_config.path()));
    let err = anonymous
        .get_manifest(&reference(&host, "kiln/bearer:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("authentication required"), "{err}");
    assert!(recorder.retries().is_empty());
}

#[tokio::test]
async fn an_expired_token_is_refreshed_on_401() {
    let Some(registry) = token_registry(TokenAuth {
        expired_tokens: 1,
        ..TokenAuth::default()
    }) else {
        return;
    };
    let host = registry.host();
    let tokens = registry.token_server().unwrap();
    let (client, recorder, _config) = common::client();
    let repository = repo(&host, "kiln/refresh");
    let data = Bytes::from(random_bytes(1000, 8));
    client
        .push_blob(&repository, &digest_of(&data), &data, None)
        .await
        .unwrap();
    // The first token was refused, a second one fetched; no retry needed.
    assert_eq!(tokens.issued(), 2);
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
    assert_eq!(
        client
            .blob_exists(&repository, &digest_of(&data))
            .await
            .unwrap(),
        Some(1000)
    );
}

#[tokio::test]
async fn an_identity_token_is_exchanged_at_the_realm() {
    let Some(registry) = token_registry(TokenAuth {
        users: vec![(USER.into(), PASSWORD.into())],
        refresh_tokens: vec!["kiln-refresh-token".into()],
        ..TokenAuth::default()
    }) else {
        return;
    };
    let host = registry.host();
    let config = tempfile::tempdir().unwrap();
    write_config(
        config.path(),
        &serde_json::json!({ "auths": { host.clone(): { "auth": "", "identitytoken": "kiln-refresh-token" } } }),
    );
    let client = RegistryClient::new(Recorder::default().options(config.path()));
    round_trip(&client, &host, "kiln/identity").await;
    let requests = registry.token_server().unwrap().requests();
    assert!(
        requests
            .iter()
            .all(|r| r.account.as_deref() == Some("refresh-token-user")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn pull_only_tokens_cannot_push() {
    let Some(registry) = token_registry(TokenAuth {
        users: vec![(USER.into(), PASSWORD.into())],
        anonymous_pull: true,
        ..TokenAuth::default()
    }) else {
        return;
    };
    let host = registry.host();
    let (client, recorder, _config) = common::client();
    assert_eq!(
        client
            .blob_exists(&repo(&host, "kiln/ro"), &digest_of(b"x"))
            .await
            .unwrap(),
        None
    );
    let data = Bytes::from_static(b"not allowed");
    let err = client
        .push_blob(&repo(&host, "kiln/ro"), &digest_of(&data), &data, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(recorder.retries().is_empty(), "{:?}", recorder.retries());
}
