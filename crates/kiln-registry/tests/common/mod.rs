//! Shared by the integration tests: a client with fast retries whose
//! events are recorded, and small conveniences.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kiln_image::{Digest, Reference};
use kiln_registry::{ClientOptions, Event, RegistryClient, Repository, RetryPolicy};
use kiln_testkit::TestImage;

/// Collects every event of a client.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    pub fn retries(&self) -> Vec<(u32, Duration, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Retry {
                    attempt,
                    delay,
                    reason,
                    ..
                } => Some((attempt, delay, reason)),
                _ => None,
            })
            .collect()
    }

    pub fn resumes(&self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Resume { offset, .. } => Some(offset),
                _ => None,
            })
            .collect()
    }

    pub fn restarts(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Restart { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// Options with fast retries (tests wait milliseconds, not seconds)
    /// that record into this recorder, reading no docker config of the
    /// machine.
    pub fn options(&self, config_dir: &std::path::Path) -> ClientOptions {
        let sink = self.0.clone();
        ClientOptions::default()
            .retry(fast_retries())
            .docker_config_dir(config_dir)
            .docker_certs_dir(None)
            .on_event(move |e| sink.lock().unwrap().push(e.clone()))
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A client with recorded events and no credentials.
pub fn client() -> (RegistryClient, Recorder, tempfile::TempDir) {
    let recorder = Recorder::default();
    let config = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(recorder.options(config.path()));
    (client, recorder, config)
}

pub fn reference(host: &str, path: &str) -> Reference {
    Reference::parse(&format!("{host}/{path}")).unwrap()
}

pub fn repo(host: &str, name: &str) -> Repository {
    Repository::new(host, name)
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// Pushes `image`'s layer and config blobs to `host`/`name` (no manifest).
pub async fn push_blobs(client: &RegistryClient, host: &str, name: &str, image: &TestImage) {
    let repository = repo(host, name);
    for blob in [&image.layer, &image.config] {
        client
            .push_blob(
                &repository,
                &blob.digest,
                &Bytes::from(blob.bytes.clone()),
                None,
            )
            .await
            .unwrap();
    }
}
