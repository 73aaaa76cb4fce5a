//! `--cache-to` and `--cache-from` against a real registry and OCI layout
//! directories. Each [`Harness`] is a machine of its own (its own store):
//! one writes the cache, a fresh one reads it, as CI runners do.

mod build_support;

use std::path::Path;
use std::time::Duration;

use build_support::{Harness, busybox_image, cached_steps, flatten, started_steps};
use bytes::Bytes;
use kiln_build::{
    BuildError, BuildResult, CACHE_MEDIA_TYPE, CacheConfig, CacheFrom, CacheTo, Event,
};
use kiln_image::document::{Descriptor, Document, Index, Manifest};
use kiln_image::media::Format;
use kiln_image::{Digest, Platform, Reference};
use kiln_registry::{ClientOptions, RegistryClient, Repository, RetryPolicy};
use kiln_testkit::{Fault, FaultProxy, Faults, Registry, RegistryOptions, Rule};

/// Two COPYs around a RUN whose output differs each time it runs: the
/// same `/made` in two images means the second took the RUN from a cache.
const APP: &str = "FROM kiln.test/busybox:1
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /made && cat /a.txt >> /made
COPY b.txt /b.txt
";

fn context(a: &str, b: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), a).unwrap();
    fs_err::write(ctx.path().join("b.txt"), b).unwrap();
    ctx
}

fn to(spec: &str) -> CacheTo {
    CacheTo::parse(spec).unwrap()
}

fn from(spec: &str) -> CacheFrom {
    CacheFrom::parse(spec).unwrap()
}

fn made(h: &Harness, result: &BuildResult) -> String {
    let files = flatten(&h.store, result);
    fs_err::read_to_string(files.path().join("made")).unwrap()
}

fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Retries quick enough for a test, as many as the default.
fn quick_client() -> ClientOptions {
    ClientOptions::default()
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(1),
        })
        .idle_timeout(Duration::from_secs(2))
}

/// The cache at `reference`, as a registry holds it: its index, and each
/// child's platform, manifest and config.
fn read_cache(reference: &str) -> (Index, Vec<(Platform, Manifest, CacheConfig)>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(ClientOptions::default());
    let reference = Reference::parse(reference).unwrap();
    let repository = Repository::of(&reference);
    let index: Index = serde_json::from_slice(
        &runtime
            .block_on(client.get_manifest(&reference))
            .unwrap()
            .bytes,
    )
    .unwrap();
    let children = index
        .manifests
        .iter()
        .map(|child| {
            let bytes = runtime
                .block_on(client.get_manifest(&by_digest(&reference, &child.digest)))
                .unwrap()
                .bytes;
            let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
            let mut config = Vec::new();
            runtime
                .block_on(client.fetch_blob(
                    &repository,
                    &manifest.config.digest,
                    Some(manifest.config.size),
                    &mut config,
                ))
                .unwrap();
            let config = CacheConfig::parse(&config).unwrap();
            (child.platform().unwrap(), manifest, config)
        })
        .collect();
    (index, children)
}

/// A fresh runner takes every step from the cache another runner pushed,
/// RUN included, and after a one-line edit runs only the step it changes.
#[test]
fn a_fresh_runner_takes_every_step_from_a_registry_cache() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:main", registry.host());
    let ctx = context("one\n", "b\n");
    let (written, events) = first.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache},mode=max"))];
    });
    let written = written.unwrap();
    assert_eq!(started_steps(&events), 3);
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));

    let (read, events) = fresh.build(ctx.path(), APP, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
    });
    let read = read.unwrap();
    assert_eq!(started_steps(&events), 0, "every step from the cache");
    assert_eq!(cached_steps(&events), 3);
    assert_eq!(
        made(&fresh, &read),
        made(&first, &written),
        "the RUN did not run again"
    );
    assert_eq!(
        first.config(&written).rootfs.diff_ids,
        fresh.config(&read).rootfs.diff_ids
    );

    // The second run's store now has the entries: an edit to b.txt runs the
    // last COPY alone, without --cache-from.
    fs_err::write(ctx.path().join("b.txt"), "b, edited\n").unwrap();
    let (edited, events) = fresh.build(ctx.path(), APP, |_| {});
    let edited = edited.unwrap();
    assert_eq!(started_steps(&events), 1);
    assert_eq!(made(&fresh, &edited), made(&first, &written));

    // The cache is kiln's format: one index, one child for this platform,
    // the layers the blobs themselves.
    let (index, children) = read_cache(&cache);
    assert_eq!(index.manifests.len(), 1);
    let (platform, manifest, config) = &children[0];
    assert!(platform.matches(&Platform::host()));
    assert_eq!(manifest.config.media_type, CACHE_MEDIA_TYPE);
    assert_eq!(manifest.artifact_type.as_deref(), Some(CACHE_MEDIA_TYPE));
    assert_eq!(config.entries.len(), 3);
    assert_eq!(manifest.layers.len(), 3);
    let run = config
        .entries
        .iter()
        .find(|e| e.instruction.starts_with("RUN "))
        .unwrap();
    let layer = &manifest.layers[run.layer.unwrap()];
    let image = first
        .store
        .read_document::<Manifest>(&written.images[0].manifest)
        .unwrap();
    assert!(image.value().layers.contains(layer), "the image's own blob");
}

/// Two matrix jobs write their platforms into one ref at the same time;
/// both platforms' entries survive, and a third runner takes both.
#[test]
fn two_runners_writing_different_platforms_to_one_ref_keep_both() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(amd), Some(arm), Some(both)) = (
        Harness::with_busybox(),
        Harness::with_busybox(),
        Harness::with_busybox(),
    ) else {
        return;
    };
    let cache = format!("{}/app/cache:matrix", registry.host());
    let dockerfile = "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n";
    let ctx = context("a\n", "b\n");
    let build = |h: &Harness, platform: &str| {
        let (result, events) = h.build(ctx.path(), dockerfile, |r| {
            r.platforms = vec![Platform::parse(platform).unwrap()];
            r.cache_to = vec![to(&format!("type=registry,ref={cache},mode=max"))];
        });
        result.unwrap();
        assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    };
    std::thread::scope(|s| {
        s.spawn(|| build(&amd, "linux/amd64"));
        s.spawn(|| build(&arm, "linux/arm64"));
    });

    let (index, children) = read_cache(&cache);
    let mut platforms: Vec<String> = children.iter().map(|(p, ..)| p.to_string()).collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index:?}");
    for (_, _, config) in &children {
        assert_eq!(config.entries.len(), 2);
    }

    let (result, events) = both.build(ctx.path(), dockerfile, |r| {
        r.platforms = vec![
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/arm64").unwrap(),
        ];
        r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
    });
    assert_eq!(result.unwrap().images.len(), 2);
    assert_eq!(started_steps(&events), 0);
    assert_eq!(cached_steps(&events), 4);

    // A later write of one platform keeps the other's child as it was.
    let before = index
        .manifests
        .iter()
        .find(|d| d.platform().unwrap().architecture == "arm64")
        .unwrap()
        .digest
        .clone();
    fs_err::write(ctx.path().join("b.txt"), "b2\n").unwrap();
    build(&amd, "linux/amd64");
    let (index, children) = read_cache(&cache);
    assert!(index.manifests.iter().any(|d| d.digest == before));
    let amd64 = children
        .iter()
        .find(|(p, ..)| p.architecture == "amd64")
        .unwrap();
    assert_eq!(amd64.2.entries.len(), 3, "the old b.txt's entry is kept");
}

/// A writer whose index another writer replaced right after its `PUT` (one
/// that read the index before it) reads the index back, finds its child
/// gone, merges again and puts it back: both platforms survive. The proxy
/// holds the answer to the amd64 writer's `PUT` (which has landed) while
/// the arm64 writer's stale index lands.
#[test]
fn a_writer_whose_index_was_replaced_after_its_put_merges_again() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(arm), Some(amd)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let path = "app/cache:raced";
    let direct = format!("{}/{path}", registry.host());
    let dockerfile = "FROM scratch\nCOPY a.txt /a.txt\n";
    let ctx = context("a\n", "");
    let build = |h: &Harness, platform: &str, cache: &str| {
        let (result, events) = h.build(ctx.path(), dockerfile, |r| {
            r.platforms = vec![Platform::parse(platform).unwrap()];
            r.cache_to = vec![to(&format!("type=registry,ref={cache}"))];
        });
        result.unwrap();
        assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    };
    build(&arm, "linux/arm64", &direct);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(ClientOptions::default());
    let reference = Reference::parse(&direct).unwrap();
    // What the other writer read, and puts back after amd64's PUT.
    let stale = runtime.block_on(client.get_manifest(&reference)).unwrap();

    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new().rule(
            Rule::new(Fault::HoldResponse {
                duration: Duration::from_millis(500),
            })
            .method("PUT")
            .path("/manifests/raced"),
        ),
    );
    let has_amd64 = |index: &Index| {
        index
            .manifests
            .iter()
            .any(|d| d.platform().is_some_and(|p| p.architecture == "amd64"))
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let now = runtime.block_on(client.get_manifest(&reference)).unwrap();
                if has_amd64(&serde_json::from_slice(&now.bytes).unwrap()) {
                    runtime
                        .block_on(client.put_manifest(
                            &reference,
                            &stale.media_type,
                            stale.bytes.clone(),
                        ))
                        .unwrap();
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "amd64's PUT never landed"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        build(&amd, "linux/amd64", &format!("{}/{path}", proxy.host()));
    });

    let (index, children) = read_cache(&direct);
    let mut platforms: Vec<String> = children.iter().map(|(p, ..)| p.to_string()).collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index:?}");
    assert_eq!(proxy.fired(0), 1, "the PUT was not held");
    let puts = proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "PUT" && e.target.contains("/manifests/raced"))
        .count();
    assert_eq!(
        puts, 2,
        "amd64 put its index once: it never saw it replaced"
    );
}

/// An entry past its `ttl` is ignored when read and dropped when the cache
/// is next written; one within it is kept.
#[test]
fn entries_past_their_ttl_are_ignored_and_dropped() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(second)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:ttl", registry.host());
    let dockerfile = "FROM scratch\nCOPY a.txt /a.txt\n";
    let one = context("one\n", "");
    let (result, _) = first.build(one.path(), dockerfile, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache},ttl=1s"))];
    });
    result.unwrap();
    assert_eq!(read_cache(&cache).1[0].2.entries.len(), 1);
    std::thread::sleep(Duration::from_millis(2100));

    let (result, events) = second.build(one.path(), dockerfile, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
    });
    result.unwrap();
    assert_eq!(cached_steps(&events), 0, "the expired entry was used");
    assert_eq!(started_steps(&events), 1);

    // Written again with other contents: the expired entry goes, and the
    // new one stays next to what a third write adds.
    let two = context("two\n", "");
    let (result, _) = second.build(two.path(), dockerfile, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache}"))];
    });
    result.unwrap();
    let entries = &read_cache(&cache).1[0].2.entries;
    assert_eq!(entries.len(), 1);
    let three = context("three\n", "");
    let (result, _) = second.build(three.path(), dockerfile, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache}"))];
    });
    result.unwrap();
    assert_eq!(read_cache(&cache).1[0].2.entries.len(), 2);
}

/// A cache that is not there yet, or a registry that is not there at all,
/// is one warning each; the build goes on without it.
#[test]
fn a_missing_cache_is_a_warning() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_client(quick_client()) else {
        return;
    };
    busybox_image(&h.store);
    let ctx = context("a\n", "b\n");
    let missing = format!("{}/app/cache:never-written", registry.host());
    let (result, events) = h.build(ctx.path(), APP, |r| {
        r.cache_from = vec![
            from(&format!("type=registry,ref={missing}")),
            from("type=registry,ref=127.0.0.1:1/app/cache:main"),
        ];
    });
    result.unwrap();
    let warnings = warnings(&events);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains(&missing) && warnings[0].contains("not found"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("127.0.0.1:1/app/cache:main"),
        "{warnings:?}"
    );
    assert_eq!(started_steps(&events), 3);
}

/// A `--cache-to` that cannot be written fails the build, naming it,
/// unless `ignore-error=true` makes it a warning.
#[test]
fn an_unwritable_cache_fails_the_build_unless_ignored() {
    let Some(h) = Harness::with_client(quick_client()) else {
        return;
    };
    busybox_image(&h.store);
    let ctx = context("a\n", "b\n");
    let cache = "127.0.0.1:1/app/cache:main";
    let (result, _) = h.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache}"))];
    });
    let error = result.unwrap_err();
    assert!(matches!(error, BuildError::CacheExport { .. }), "{error:?}");
    let message = error.message();
    assert!(message.contains(cache), "{message}");

    let (result, events) = h.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache},ignore-error=true"))];
    });
    result.unwrap();
    let warnings = warnings(&events);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(cache), "{warnings:?}");
}

/// Cache documents that are not kiln's cache version 1 are a warning and a
/// full build, never a wrong image.
#[test]
fn a_corrupt_cache_manifest_costs_a_warning_and_a_rebuild() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(ClientOptions::default());
    for (name, config) in [
        ("garbage", &b"{\"format\": \"kiln-cache\", \"entries\": 7"[..]),
        (
            "version2",
            &br#"{"format":"kiln-cache","version":2,"keys":"x","platform":"linux/amd64","entries":[]}"#[..],
        ),
    ] {
        let cache = format!("{}/app/cache:{name}", registry.host());
        let reference = Reference::parse(&cache).unwrap();
        let repository = Repository::of(&reference);
        let config_desc = Descriptor::new(CACHE_MEDIA_TYPE, Digest::of(config), config.len() as u64);
        runtime
            .block_on(client.push_blob(
                &repository,
                &config_desc.digest,
                &Bytes::copy_from_slice(config),
                None,
            ))
            .unwrap();
        let mut manifest = Manifest::new(Format::Oci, config_desc, Vec::new());
        manifest.artifact_type = Some(CACHE_MEDIA_TYPE.to_string());
        let manifest = Document::new(manifest);
        runtime
            .block_on(client.put_manifest(
                &by_digest(&reference, &manifest.descriptor().digest),
                &manifest.descriptor().media_type,
                Bytes::copy_from_slice(manifest.bytes()),
            ))
            .unwrap();
        let index = Document::new(Index::new(
            Format::Oci,
            vec![manifest.descriptor().with_platform(&Platform::host())],
        ));
        runtime
            .block_on(client.put_manifest(
                &reference,
                &index.descriptor().media_type,
                Bytes::copy_from_slice(index.bytes()),
            ))
            .unwrap();

        let ctx = context(name, "b\n");
        let (result, events) = h.build(ctx.path(), APP, |r| {
            r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
        });
        result.unwrap();
        let warnings = warnings(&events);
        assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
        assert!(warnings[0].contains("not a kiln cache"), "{name}: {warnings:?}");
        assert_eq!(started_steps(&events), 3, "{name}");
    }
}

/// An entry whose layer blob the registry no longer has: a warning, that
/// step runs, the steps before it still come from the cache.
#[test]
fn a_cache_entry_whose_blob_is_gone_runs_its_step() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:gone", registry.host());
    let ctx = context("a\n", "b\n");
    let (written, _) = first.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache},mode=max"))];
    });
    let written = written.unwrap();
    let (_, children) = read_cache(&cache);
    let (_, manifest, config) = &children[0];
    let run = config
        .entries
        .iter()
        .find(|e| e.instruction.starts_with("RUN "))
        .unwrap();
    let gone = &manifest.layers[run.layer.unwrap()].digest;
    let hex = gone.hex();
    fs_err::remove_dir_all(
        registry
            .dir()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex),
    )
    .unwrap();

    let (read, events) = fresh.build(ctx.path(), APP, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
    });
    let read = read.unwrap();
    let warnings = warnings(&events);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("running the step"), "{warnings:?}");
    // Keys follow the Dockerfile, not what a step made: the COPYs on both
    // sides still come from the cache, the RUN alone ran (a new /made).
    assert_eq!(cached_steps(&events), 2);
    assert_eq!(started_steps(&events), 1);
    assert_ne!(made(&fresh, &read), made(&first, &written));
}

/// Reading a cache through drops, stalls and 503s: the client's retries
/// carry it, and the image is the one the cache describes.
#[test]
fn a_cache_behind_a_faulty_proxy_still_gives_the_right_image() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(first) = Harness::with_busybox() else {
        return;
    };
    let Some(fresh) = Harness::with_client(quick_client()) else {
        return;
    };
    busybox_image(&fresh.store);
    let ctx = context("a\n", "b\n");
    let path = "app/cache:faulty";
    let (written, _) = first.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!(
            "type=registry,ref={}/{path},mode=max",
            registry.host()
        ))];
    });
    let written = written.unwrap();

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
                Rule::new(Fault::DropResponse { after: 10 })
                    .method("GET")
                    .path("/blobs/sha256:")
                    .times(2),
            )
            .rule(
                Rule::new(Fault::StallResponse {
                    after: 0,
                    duration: Duration::from_secs(4),
                })
                .method("GET")
                .path("/blobs/sha256:")
                .skip(2)
                .times(1),
            ),
    );
    let (read, events) = fresh.build(ctx.path(), APP, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={}/{path}", proxy.host()))];
    });
    let read = read.unwrap();
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    assert_eq!(started_steps(&events), 0);
    // The layers come through the proxy as the image's files are read.
    assert_eq!(made(&fresh, &read), made(&first, &written));
    assert_eq!(
        first.config(&written).rootfs.diff_ids,
        fresh.config(&read).rootfs.diff_ids
    );
    assert!(proxy.fired(0) > 0 && proxy.fired(1) > 0 && proxy.fired(2) > 0);
}

/// `mode=min` keeps the steps behind the image's layers; `mode=max` every
/// stage's. Both written by one build (`--cache-to` repeats).
#[test]
fn mode_min_keeps_the_images_steps_and_max_every_stages() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(with_min), Some(with_max)) = (
        Harness::with_busybox(),
        Harness::with_busybox(),
        Harness::with_busybox(),
    ) else {
        return;
    };
    let dockerfile = "FROM kiln.test/busybox:1 AS build
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /made
FROM kiln.test/busybox:1
COPY --from=build /made /made
";
    let ctx = context("a\n", "");
    let min = format!("{}/app/cache:min", registry.host());
    let max = format!("{}/app/cache:max", registry.host());
    let (written, _) = first.build(ctx.path(), dockerfile, |r| {
        r.cache_to = vec![
            to(&format!("type=registry,ref={min}")),
            to(&format!("type=registry,ref={max},mode=max")),
        ];
    });
    let written = written.unwrap();
    assert_eq!(read_cache(&min).1[0].2.entries.len(), 1);
    assert_eq!(read_cache(&max).1[0].2.entries.len(), 3);

    let (read, events) = with_max.build(ctx.path(), dockerfile, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={max}"))];
    });
    assert_eq!(started_steps(&events), 0);
    assert_eq!(made(&with_max, &read.unwrap()), made(&first, &written));

    // With min the build stage's steps are not in the cache and run again;
    // the final COPY's key is the same (keys follow the Dockerfile), so it
    // comes from the cache, with the first runner's /made.
    let (read, events) = with_min.build(ctx.path(), dockerfile, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={min}"))];
    });
    assert_eq!(started_steps(&events), 2);
    assert_eq!(cached_steps(&events), 1);
    assert_eq!(made(&with_min, &read.unwrap()), made(&first, &written));
}

/// `type=local`: a directory a CI cache action saves and restores, in the
/// cache's own compression.
#[test]
fn a_local_cache_directory_round_trips() {
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = context("a\n", "b\n");
    let (written, _) = first.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!(
            "type=local,dest={},mode=max,compression=zstd",
            cache.display()
        ))];
    });
    let written = written.unwrap();
    let index: Index =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let layout: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let cache_index: Index = read_layout_json(&cache, &index.manifests[0].digest);
    let manifest: Manifest = read_layout_json(&cache, &cache_index.manifests[0].digest);
    assert_eq!(manifest.layers.len(), 3);
    assert!(
        manifest
            .layers
            .iter()
            .all(|l| l.media_type.ends_with("+zstd")),
        "{:?}",
        manifest.layers
    );

    let (read, events) = fresh.build(ctx.path(), APP, |r| {
        r.cache_from = vec![from(&format!("type=local,src={}", cache.display()))];
    });
    let read = read.unwrap();
    assert_eq!(started_steps(&events), 0);
    assert_eq!(made(&fresh, &read), made(&first, &written));
}

fn by_digest(reference: &Reference, digest: &Digest) -> Reference {
    let mut r = reference.clone();
    r.tag = None;
    r.digest = Some(digest.clone());
    r
}

fn read_layout_json<T: serde::de::DeserializeOwned>(dir: &Path, digest: &Digest) -> T {
    serde_json::from_slice(&fs_err::read(dir.join("blobs/sha256").join(digest.hex())).unwrap())
        .unwrap()
}

/// A build whose entries the cache already holds writes nothing: no blob,
/// no manifest, no index (an unchanged tree in CI costs a few GETs).
#[test]
fn a_cache_that_holds_every_entry_is_not_written_again() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let cache = format!("{}/app/cache:same", proxy.host());
    let ctx = context("a\n", "b\n");
    let build = || {
        let (result, _) = h.build(ctx.path(), APP, |r| {
            r.cache_to = vec![to(&format!("type=registry,ref={cache},mode=max"))];
        });
        result.unwrap();
    };
    build();
    let second = proxy.exchanges().len();
    assert!(second > 0);
    build();
    let exchanges = proxy.exchanges();
    let after: Vec<_> = exchanges[second..]
        .iter()
        .map(|e| format!("{} {}", e.method, e.target))
        .collect();
    assert!(
        after.iter().all(|e| e.starts_with("GET ")),
        "the second build wrote: {after:?}"
    );
    assert!(
        after.iter().any(|e| e.contains("/manifests/same")),
        "{after:?}"
    );
}

/// The blob digests a run of requests fetched (`GET .../blobs/sha256:...`).
fn blob_gets(exchanges: &[kiln_testkit::Exchange]) -> Vec<String> {
    exchanges
        .iter()
        .filter(|e| e.method == "GET")
        .filter_map(|e| e.target.split("/blobs/").nth(1))
        .map(|d| d.split('?').next().unwrap_or(d).to_string())
        .collect()
}

/// Lazy layers: a fresh runner whose every step hits the registry cache
/// fetches no layer to build, none to push to the same registry (base and
/// cached layers are linked from their repositories), and exactly the
/// image's layers, once each, to write an OCI layout.
#[test]
fn a_fully_cached_build_fetches_no_layer_until_an_export_reads_it() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::new(), Harness::new()) else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let host = proxy.host();
    // The base lives in the registry, as a CI runner's base does.
    busybox_image(&first.store);
    let base = format!("{host}/base/busybox:1");
    first
        .runtime
        .block_on(kiln_registry::push_image(
            &first.client,
            &first.store,
            &Reference::parse("kiln.test/busybox:1").unwrap(),
            &Reference::parse(&base).unwrap(),
            4,
        ))
        .unwrap();
    let dockerfile = APP.replace("kiln.test/busybox:1", &base);
    let cache = format!("{host}/app/cache:main");
    let ctx = context("a\n", "b\n");
    let (written, _) = first.build(ctx.path(), &dockerfile, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={cache},mode=max"))];
    });
    let written = written.unwrap();

    let before = proxy.exchanges().len();
    let (read, events) = fresh.build(ctx.path(), &dockerfile, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={cache}"))];
    });
    let read = read.unwrap();
    assert_eq!(started_steps(&events), 0);
    let manifest = fresh
        .store
        .read_document::<Manifest>(&read.images[0].manifest)
        .unwrap()
        .into_value();
    let layers: Vec<String> = manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(layers.len(), 4, "the base's and three steps'");
    let fetched = blob_gets(&proxy.exchanges()[before..]);
    assert!(
        fetched.iter().all(|d| !layers.contains(d)),
        "the build fetched layers: {fetched:?}"
    );

    // Pushed to the same registry: every layer linked, none fetched.
    let before = proxy.exchanges().len();
    let image = format!("{host}/app/image:1");
    let pushed = fresh
        .runtime
        .block_on(kiln_registry::push_descriptor(
            &fresh.client,
            &fresh.store,
            &read.target,
            &Reference::parse(&image).unwrap(),
            &Reference::parse(&image).unwrap(),
            4,
        ))
        .unwrap();
    assert_eq!((pushed.uploaded, pushed.mounted), (1, 4), "{pushed:?}");
    let fetched = blob_gets(&proxy.exchanges()[before..]);
    assert!(
        fetched.iter().all(|d| !layers.contains(d)),
        "the push fetched layers: {fetched:?}"
    );
    // What was pushed is whole: a third machine pulls and reads it.
    let Some(puller) = Harness::new() else {
        return;
    };
    let pulled = puller
        .runtime
        .block_on(kiln_registry::pull_image(
            &puller.client,
            &puller.store,
            &Reference::parse(&image).unwrap(),
            &kiln_registry::PullOptions::default(),
        ))
        .unwrap();
    assert_eq!(pulled.target.digest, read.images[0].manifest.digest);

    // An OCI layout needs the bytes: each layer fetched once, then read
    // from the store.
    let before = proxy.exchanges().len();
    let out = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        kiln_build::write_oci(
            &fresh.store,
            &kiln_build::Dest::Dir(out.path().join("layout")),
            &Reference::parse("app:1").unwrap(),
            &read.target,
        )
        .unwrap();
    }
    let mut fetched = blob_gets(&proxy.exchanges()[before..]);
    fetched.sort();
    let mut expected = layers.clone();
    expected.sort();
    assert_eq!(fetched, expected);
    assert_eq!(made(&fresh, &read), made(&first, &written));
}

/// `--cache-to type=inline`: the entries ride in the pushed image's config;
/// `--cache-from` the image's ref reads them; an image built on it does not
/// inherit them; and a registry cache written over an image is refused.
#[test]
fn an_inline_cache_in_a_pushed_image_serves_a_fresh_runner() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let ctx = context("a\n", "b\n");
    let (written, events) = first.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to("type=inline")];
    });
    let written = written.unwrap();
    assert!(
        events.iter().any(|e| matches!(e, Event::Note { message } if message == "cache inline: 3 entries in the image's config")),
        "{events:?}"
    );
    let config = first.config(&written);
    let inline =
        CacheConfig::parse(&serde_json::to_vec(config.inline_cache.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(inline.entries.len(), 3);
    let image = format!("{}/app/image:1", registry.host());
    first
        .runtime
        .block_on(kiln_registry::push_descriptor(
            &first.client,
            &first.store,
            &written.target,
            &Reference::parse(&image).unwrap(),
            &Reference::parse(&image).unwrap(),
            4,
        ))
        .unwrap();

    let (read, events) = fresh.build(ctx.path(), APP, |r| {
        r.cache_from = vec![from(&format!("type=registry,ref={image}"))];
    });
    let read = read.unwrap();
    assert_eq!(started_steps(&events), 0);
    assert_eq!(made(&fresh, &read), made(&first, &written));

    // Built on the image: the base's inline cache is not the child's.
    let child = format!("FROM {image}\nCOPY b.txt /c.txt\n");
    let (built, _) = fresh.build(ctx.path(), &child, |_| {});
    assert_eq!(fresh.config(&built.unwrap()).inline_cache, None);

    // A registry cache aimed at the image's ref would replace the image.
    let (result, _) = fresh.build(ctx.path(), APP, |r| {
        r.cache_to = vec![to(&format!("type=registry,ref={image}"))];
    });
    let error = result.unwrap_err().message();
    assert!(error.contains("is an image, not a kiln cache"), "{error}");
}
