//! `--cache-to ...,mounts=true`: `RUN --mount=type=cache` contents that
//! outlive the runner, through a real registry and OCI layout directories.
//! Each [`Harness`] is a machine of its own (its own store, so its own
//! cache mounts): one writes the cache, a fresh one reads it.

mod build_support;

use std::path::Path;

use build_support::{Harness, flatten, started_steps, warnings};
use kiln_build::{
    BuildResult, CACHE_MOUNTS_MEDIA_TYPE, CacheFrom, CacheMountsConfig, CacheTo, Event,
};
use kiln_image::Reference;
use kiln_image::document::{Descriptor, Index, Manifest};
use kiln_registry::{ClientOptions, RegistryClient, Repository};
use kiln_testkit::{FaultProxy, Faults, Registry, RegistryOptions};

/// A RUN that writes `$V` into its cache mount when given one, and copies
/// what the mount holds into the image (`/seen`; `none` if nothing). Any
/// other `NONCE` makes another step, so that a runner whose store has the
/// step still runs it.
const APP: &str = r#"FROM kiln.test/busybox:1
ARG V
ARG NONCE
RUN --mount=type=cache,target=/root/.cache/x sh -c 'if [ -n "$V" ]; then echo "$V" > /root/.cache/x/f; fi; cat /root/.cache/x/f > /seen 2>/dev/null || echo none > /seen'
"#;

/// Builds APP with these args, writing and reading these caches; what the
/// step saw in its mount, and the events.
fn build(
    h: &Harness,
    args: &[(&str, &str)],
    to: Option<&str>,
    from: Option<&str>,
) -> (BuildResult, Vec<Event>) {
    let ctx = tempfile::tempdir().unwrap();
    let (result, events) = h.build(ctx.path(), APP, |r| {
        for (k, v) in args {
            r.build_args.insert(k.to_string(), v.to_string());
        }
        r.cache_to = to.map(|s| CacheTo::parse(s).unwrap()).into_iter().collect();
        r.cache_from = from
            .map(|s| CacheFrom::parse(s).unwrap())
            .into_iter()
            .collect();
    });
    (result.unwrap(), events)
}

fn seen(h: &Harness, result: &BuildResult) -> String {
    let files = flatten(&h.store, result);
    fs_err::read_to_string(files.path().join("seen")).unwrap()
}

/// The registry cache's index and its mounts child (manifest, config).
fn read_mounts(reference: &str) -> (Index, Option<(Descriptor, Manifest, CacheMountsConfig)>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(ClientOptions::default());
    let reference = Reference::parse(reference).unwrap();
    let index: Index = serde_json::from_slice(
        &runtime
            .block_on(client.get_manifest(&reference))
            .unwrap()
            .bytes,
    )
    .unwrap();
    let Some(child) = index
        .manifests
        .iter()
        .find(|d| d.artifact_type.as_deref() == Some(CACHE_MOUNTS_MEDIA_TYPE))
        .cloned()
    else {
        return (index, None);
    };
    let by_digest = Reference {
        tag: None,
        digest: Some(child.digest.clone()),
        ..reference.clone()
    };
    let manifest: Manifest = serde_json::from_slice(
        &runtime
            .block_on(client.get_manifest(&by_digest))
            .unwrap()
            .bytes,
    )
    .unwrap();
    let mut config = Vec::new();
    runtime
        .block_on(client.fetch_blob(
            &Repository::of(&reference),
            &manifest.config.digest,
            Some(manifest.config.size),
            &mut config,
        ))
        .unwrap();
    let config = CacheMountsConfig::parse(&config).unwrap();
    (index, Some((child, manifest, config)))
}

/// The issue's test: a fresh runner's step finds in its cache mount what
/// the previous runner left there, through a registry. A later write
/// without `mounts=true` keeps the mounts (they are another child).
#[test]
fn a_restored_cache_mount_holds_what_the_previous_runner_left() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:mounts", registry.host());
    let (written, events) = build(
        &first,
        &[("V", "left by runner A")],
        Some(&format!("type=registry,ref={cache},mounts=true")),
        None,
    );
    assert_eq!(seen(&first, &written), "left by runner A\n");
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));

    let (index, mounts) = read_mounts(&cache);
    let (child, manifest, config) = mounts.expect("a mounts child");
    assert!(child.platform.is_none(), "one cache for every platform");
    assert_eq!(
        manifest.artifact_type.as_deref(),
        Some(CACHE_MOUNTS_MEDIA_TYPE)
    );
    assert_eq!(config.mounts.len(), 1);
    let mount = &config.mounts[0];
    assert_eq!(mount.id, "/root/.cache/x");
    assert_eq!(mount.size, "left by runner A\n".len() as u64);
    assert!(
        manifest.layers[mount.layer]
            .media_type
            .ends_with("tar+gzip")
    );
    assert_eq!(
        index.manifests.len(),
        2,
        "the platform's child and the mounts'"
    );

    // Another step (NONCE), on a runner that starts empty.
    let (read, events) = build(
        &fresh,
        &[("NONCE", "b")],
        None,
        Some(&format!("type=registry,ref={cache}")),
    );
    assert_eq!(started_steps(&events), 1);
    assert_eq!(seen(&fresh, &read), "left by runner A\n");
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::StepNote { text, .. }
            if text.starts_with("restoring cache mount /root/.cache/x"))),
        "{events:?}"
    );

    // Entries written without mounts=true: the mounts child stays.
    build(
        &fresh,
        &[("NONCE", "c")],
        Some(&format!("type=registry,ref={cache}")),
        None,
    );
    let (index, mounts) = read_mounts(&cache);
    assert_eq!(mounts.map(|(c, ..)| c.digest), Some(child.digest));
    assert_eq!(index.manifests.len(), 2);
}

/// The same through an OCI layout directory (`type=local`), in the cache's
/// own compression.
#[test]
fn a_local_cache_directory_carries_cache_mounts_too() {
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    build(
        &first,
        &[("V", "local one")],
        Some(&format!(
            "type=local,dest={},mounts=true,compression=zstd",
            cache.display()
        )),
        None,
    );
    let top: Index = read_layout(&cache, None);
    let index: Index = read_layout(&cache, Some(&top.manifests[0].digest));
    let child = index
        .manifests
        .iter()
        .find(|d| d.artifact_type.as_deref() == Some(CACHE_MOUNTS_MEDIA_TYPE))
        .expect("a mounts child");
    let manifest: Manifest = read_layout(&cache, Some(&child.digest));
    assert_eq!(manifest.layers.len(), 1);
    assert!(manifest.layers[0].media_type.ends_with("+zstd"));

    let (read, events) = build(
        &fresh,
        &[("NONCE", "b")],
        None,
        Some(&format!("type=local,src={}", cache.display())),
    );
    assert_eq!(seen(&fresh, &read), "local one\n");
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
}

fn read_layout<T: serde::de::DeserializeOwned>(
    dir: &Path,
    digest: Option<&kiln_image::Digest>,
) -> T {
    let path = match digest {
        Some(d) => dir.join("blobs/sha256").join(d.hex()),
        None => dir.join("index.json"),
    };
    serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
}

/// Over `mounts-max-size` the biggest mounts are left out, named in a
/// warning; the build does not fail, and the rest are written.
#[test]
fn cache_mounts_over_the_size_cap_are_left_out_with_a_warning() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let dockerfile = r#"FROM kiln.test/busybox:1
RUN --mount=type=cache,id=small,target=/small --mount=type=cache,id=big,target=/big sh -c 'echo tiny > /small/f && dd if=/dev/zero of=/big/f bs=1024 count=2048 2>/dev/null'
"#;
    let ctx = tempfile::tempdir().unwrap();
    let cache = format!("{}/app/cache:capped", registry.host());
    let (result, events) = h.build(ctx.path(), dockerfile, |r| {
        r.cache_to = vec![
            CacheTo::parse(&format!(
                "type=registry,ref={cache},mounts=true,mounts-max-size=1m"
            ))
            .unwrap(),
        ];
    });
    result.unwrap();
    let warnings = warnings(&events);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("mounts-max-size=1.0 MiB")
            && warnings[0].contains("/big (id big) (2.0 MiB)")
            && !warnings[0].contains("small"),
        "{warnings:?}"
    );
    let (_, mounts) = read_mounts(&cache);
    let (_, _, config) = mounts.unwrap();
    let ids: Vec<&str> = config.mounts.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["small"]);

    // A cap of nothing leaves out every mount, and still writes the entries.
    let other = format!("{}/app/cache:none", registry.host());
    let (result, events) = h.build(ctx.path(), dockerfile, |r| {
        r.no_cache = true;
        r.cache_to = vec![
            CacheTo::parse(&format!(
                "type=registry,ref={other},mounts=true,mounts-max-size=0"
            ))
            .unwrap(),
        ];
    });
    result.unwrap();
    let warnings = build_support::warnings(&events);
    assert!(
        warnings.len() == 1 && warnings[0].contains("/small (id small)"),
        "{warnings:?}"
    );
    let (index, mounts) = read_mounts(&other);
    assert!(mounts.is_none(), "{index:?}");
    assert_eq!(index.manifests.len(), 1);
}

/// A mount whose contents the cache has is neither read into a tar again
/// nor sent: its blob is not even asked about. Changed, it is replaced.
#[test]
fn an_unchanged_cache_mount_is_not_uploaded_again() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host(), Faults::new());
    let cache = format!("{}/app/cache:same", proxy.host());
    let to = format!("type=registry,ref={cache},mounts=true");
    build(&h, &[("V", "one")], Some(&to), None);
    let (_, mounts) = read_mounts(&cache);
    let (child, manifest, config) = mounts.unwrap();
    let blob = manifest.layers[config.mounts[0].layer].digest.clone();
    assert!(
        proxy
            .exchanges()
            .iter()
            .any(|e| e.target.contains(blob.hex())),
        "the first build sent it"
    );

    // Another step uses the mount and changes nothing in it.
    let before = proxy.exchanges().len();
    let (result, events) = build(&h, &[("NONCE", "2")], Some(&to), None);
    assert_eq!(seen(&h, &result), "one\n");
    assert_eq!(started_steps(&events), 1);
    let after: Vec<String> = proxy.exchanges()[before..]
        .iter()
        .map(|e| format!("{} {}", e.method, e.target))
        .collect();
    assert!(
        !after.iter().any(|e| e.contains(blob.hex())),
        "the unchanged mount was sent again: {after:?}"
    );
    let (_, mounts) = read_mounts(&cache);
    let (same, _, again) = mounts.unwrap();
    assert_eq!(
        same.digest, child.digest,
        "the mounts child was not rewritten"
    );
    assert_eq!(again, config);

    // Changed: one mount still, with the new contents.
    build(&h, &[("V", "two")], Some(&to), None);
    let (_, mounts) = read_mounts(&cache);
    let (_, manifest, changed) = mounts.unwrap();
    assert_eq!(changed.mounts.len(), 1);
    assert_ne!(changed.mounts[0].diff_id, config.mounts[0].diff_id);
    assert_ne!(manifest.layers[changed.mounts[0].layer].digest, blob);
}

/// A runner whose cache mount holds something keeps it: the cache's
/// contents are for mounts that start empty.
#[test]
fn a_cache_mount_with_contents_is_never_overwritten() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(second)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:kept", registry.host());
    build(
        &first,
        &[("V", "from A")],
        Some(&format!("type=registry,ref={cache},mounts=true")),
        None,
    );
    build(&second, &[("V", "from B")], None, None);
    let (read, events) = build(
        &second,
        &[("NONCE", "x")],
        None,
        Some(&format!("type=registry,ref={cache}")),
    );
    assert_eq!(seen(&second, &read), "from B\n");
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
}

/// A mount whose blob the registry lost: a warning, and the step runs with
/// the mount empty.
#[test]
fn a_cache_mount_whose_blob_is_gone_starts_empty_with_a_warning() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let cache = format!("{}/app/cache:gone", registry.host());
    build(
        &first,
        &[("V", "lost")],
        Some(&format!("type=registry,ref={cache},mounts=true")),
        None,
    );
    let (_, mounts) = read_mounts(&cache);
    let (_, manifest, config) = mounts.unwrap();
    let hex = manifest.layers[config.mounts[0].layer]
        .digest
        .hex()
        .to_string();
    fs_err::remove_dir_all(
        registry
            .dir()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex),
    )
    .unwrap();

    let (read, events) = build(
        &fresh,
        &[("NONCE", "b")],
        None,
        Some(&format!("type=registry,ref={cache}")),
    );
    assert_eq!(seen(&fresh, &read), "none\n");
    let warnings = warnings(&events);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cache mount /root/.cache/x")
            && warnings[0].contains("not restored")
            && warnings[0].contains(&cache),
        "{warnings:?}"
    );
}
