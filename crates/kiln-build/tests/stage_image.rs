//! `--stage-image NAME=REPO` and `Engine::stage_keys` against a real
//! registry. Each [`Harness`] is a machine of its own (its own store): one
//! builds the stage and pushes it as `REPO:<stage key>`, a fresh one finds
//! the image by the key it computes without building and takes it instead
//! of the stage, as CI runners do with a pre-built base image.

mod build_support;

use std::time::Duration;

use build_support::{Harness, busybox_image, flatten, started_steps};
use kiln_build::{BuildError, BuildResult, Event, StageImage};
use kiln_image::document::{ImageConfig, Manifest};
use kiln_image::{Digest, Platform, Reference};
use kiln_registry::{ClientOptions, RegistryClient, RetryPolicy};
use kiln_testkit::{Fault, FaultProxy, Faults, Registry, RegistryOptions, Rule};

/// A base stage that installs requirements (a RUN whose output differs
/// each time it runs: the same `/req/installed` in two images means the
/// second did not run it), built on a tools stage only it reads, and an
/// app stage that copies the app on top.
const APP: &str = r#"FROM kiln.test/busybox:1 AS tools
RUN echo tool > /tool
FROM kiln.test/busybox:1 AS base
COPY --from=tools /tool /opt/tool
COPY requirements.txt /req/
RUN cat /proc/sys/kernel/random/uuid > /req/installed && cat /req/requirements.txt >> /req/installed
ENV BASE_READY=1
WORKDIR /srv
CMD ["cat", "/req/installed"]
FROM base AS app
COPY app.txt /srv/
"#;

fn context(requirements: &str, app: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("requirements.txt"), requirements).unwrap();
    fs_err::write(ctx.path().join("app.txt"), app).unwrap();
    ctx
}

fn stage_image(spec: &str) -> StageImage {
    StageImage::parse(spec).unwrap()
}

fn key(h: &Harness, ctx: &std::path::Path, dockerfile: &str, stage: &str) -> Digest {
    let keys = h.stage_keys(ctx, dockerfile, stage, |_| {}).unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].1.clone()
}

fn notes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Note { message } | Event::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The stages whose steps the build planned (and so ran or took from the
/// cache).
fn planned_stages(events: &[Event]) -> Vec<String> {
    let mut stages: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepPlanned { stage, .. } => Some(stage.clone()),
            _ => None,
        })
        .collect();
    stages.dedup();
    stages
}

fn file(h: &Harness, result: &BuildResult, path: &str) -> String {
    let files = flatten(&h.store, result);
    fs_err::read_to_string(files.path().join(path)).unwrap()
}

/// The image config a registry holds for `reference`, and its layer count.
fn pushed_image(reference: &Reference) -> Option<(ImageConfig, usize)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(ClientOptions::default());
    let manifest = runtime.block_on(client.get_manifest(reference)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&manifest.bytes).unwrap();
    let mut config = Vec::new();
    runtime
        .block_on(client.fetch_blob(
            &kiln_registry::Repository::of(reference),
            &manifest.config.digest,
            Some(manifest.config.size),
            &mut config,
        ))
        .unwrap();
    Some((
        serde_json::from_slice(&config).unwrap(),
        manifest.layers.len(),
    ))
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

/// One runner builds the base stage and pushes it under its key; a fresh
/// runner computes the same key without building, takes the image instead
/// of the stage (neither it nor the tools stage it reads runs) and gets
/// the same image. Editing the app keeps the key; editing the
/// requirements changes it, and the stage is built and pushed again.
#[test]
fn stage_images_are_reused_by_key_and_rebuilt_when_the_key_changes() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (Some(first), Some(fresh)) = (Harness::with_busybox(), Harness::with_busybox()) else {
        return;
    };
    let repo = format!("{}/app/base", registry.host());
    let spec = stage_image(&format!("base={repo}"));
    let ctx = context("numpy==2.0\n", "app v1\n");

    let base_key = key(&first, ctx.path(), APP, "base");
    let image = spec.reference(&base_key);
    assert_eq!(image.tag.as_deref(), Some(base_key.hex()));
    assert!(pushed_image(&image).is_none());

    let (built, events) = first.build(ctx.path(), APP, |r| r.stage_images = vec![spec.clone()]);
    let built = built.unwrap();
    let notes_first = notes(&events);
    assert!(
        notes_first
            .iter()
            .any(|n| n.contains(&format!("no image {image} yet, building the stage"))),
        "{notes_first:?}"
    );
    assert!(
        notes_first
            .iter()
            .any(|n| n.contains(&format!("stage base: pushed image {image}"))),
        "{notes_first:?}"
    );
    assert_eq!(planned_stages(&events), ["tools", "base", "app"]);
    // RUN in tools; COPY, COPY, RUN, WORKDIR in base; COPY in app.
    assert_eq!(started_steps(&events), 6);

    // The pushed image is the stage, runnable: its config and layers.
    let (config, layers) = pushed_image(&image).expect("the stage image was pushed");
    let env = config.config.as_ref().unwrap().env.clone().unwrap();
    assert!(env.contains(&"BASE_READY=1".to_string()), "{env:?}");
    let container = config.config.as_ref().unwrap();
    assert_eq!(container.working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        container.cmd.as_deref(),
        Some(&["cat".to_string(), "/req/installed".to_string()][..])
    );
    assert_eq!(config.rootfs.diff_ids.len(), layers);
    let app_config = first.config(&built);
    assert_eq!(
        config.rootfs.diff_ids[..],
        app_config.rootfs.diff_ids[..layers],
        "the app is built on the pushed layers"
    );

    // A fresh runner: the same key, computed without building; the image
    // stands for the stage, and the app comes out the same.
    assert_eq!(key(&fresh, ctx.path(), APP, "base"), base_key);
    let (reused, events) = fresh.build(ctx.path(), APP, |r| r.stage_images = vec![spec.clone()]);
    let reused = reused.unwrap();
    let notes_fresh = notes(&events);
    assert!(
        notes_fresh
            .iter()
            .any(|n| n.contains(&format!("stage base: using image {image}"))),
        "{notes_fresh:?}"
    );
    assert!(
        !notes_fresh.iter().any(|n| n.contains("pushed")),
        "{notes_fresh:?}"
    );
    assert_eq!(
        planned_stages(&events),
        ["app"],
        "neither base nor tools runs"
    );
    assert_eq!(started_steps(&events), 1);
    let fresh_config = fresh.config(&reused);
    // The stage's layers are the pushed ones; the app's COPY layer holds
    // /srv with the time the copy changed it, as BuildKit's does, so it
    // is compared by its files below.
    assert_eq!(
        fresh_config.rootfs.diff_ids[..layers],
        app_config.rootfs.diff_ids[..layers]
    );
    assert_eq!(
        fresh_config.rootfs.diff_ids.len(),
        app_config.rootfs.diff_ids.len()
    );
    assert_eq!(file(&fresh, &reused, "srv/app.txt"), "app v1\n");
    assert_eq!(fresh_config.config, app_config.config);
    assert_eq!(
        fresh_config.history.len(),
        app_config.history.len(),
        "{:#?}",
        fresh_config.history
    );
    let created_by = |c: &ImageConfig| -> Vec<Option<String>> {
        c.history.iter().map(|h| h.created_by.clone()).collect()
    };
    assert_eq!(created_by(&fresh_config), created_by(&app_config));
    assert_eq!(
        file(&fresh, &reused, "req/installed"),
        file(&first, &built, "req/installed"),
        "the requirements were not installed again"
    );
    assert_eq!(file(&fresh, &reused, "opt/tool"), "tool\n");

    // An app edit keeps the base key: the base is taken again.
    fs_err::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    assert_eq!(key(&fresh, ctx.path(), APP, "base"), base_key);
    let (edited, events) = fresh.build(ctx.path(), APP, |r| r.stage_images = vec![spec.clone()]);
    let edited = edited.unwrap();
    assert_eq!(planned_stages(&events), ["app"]);
    assert_eq!(file(&fresh, &edited, "srv/app.txt"), "app v2\n");
    assert_eq!(
        file(&fresh, &edited, "req/installed"),
        file(&first, &built, "req/installed")
    );

    // A requirements edit changes it: the stage is built (its RUN again)
    // and pushed under the new key.
    fs_err::write(ctx.path().join("requirements.txt"), "numpy==2.1\n").unwrap();
    let new_key = key(&fresh, ctx.path(), APP, "base");
    assert_ne!(new_key, base_key);
    let (rebuilt, events) = fresh.build(ctx.path(), APP, |r| r.stage_images = vec![spec.clone()]);
    let rebuilt = rebuilt.unwrap();
    let new_image = spec.reference(&new_key);
    assert!(
        notes(&events)
            .iter()
            .any(|n| n.contains(&format!("stage base: pushed image {new_image}"))),
        "{:?}",
        notes(&events)
    );
    assert_eq!(planned_stages(&events), ["tools", "base", "app"]);
    let installed = file(&fresh, &rebuilt, "req/installed");
    assert!(installed.ends_with("numpy==2.1\n"), "{installed}");
    assert_ne!(installed, file(&first, &built, "req/installed"));
    assert!(pushed_image(&new_image).is_some());
}

/// The key follows what the stage is: its files and instructions, and the
/// config it ends with (a trailing ENV changes it), never the stages after
/// it or the other stages' files; each platform has its own.
#[test]
fn a_stage_key_follows_the_stage_and_nothing_after_it() {
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let ctx = context("numpy==2.0\n", "app v1\n");
    let base = key(&h, ctx.path(), APP, "base");
    assert_eq!(key(&h, ctx.path(), APP, "BASE"), base, "names in any case");

    let longer_app = format!("{APP}RUN echo more\n");
    assert_eq!(key(&h, ctx.path(), &longer_app, "base"), base);
    fs_err::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    assert_eq!(key(&h, ctx.path(), APP, "base"), base);

    let trailing_env = APP.replace("CMD [", "ENV MORE=1\nCMD [");
    assert_ne!(key(&h, ctx.path(), &trailing_env, "base"), base);
    let tools_edit = APP.replace("echo tool", "echo tool2");
    assert_ne!(
        key(&h, ctx.path(), &tools_edit, "base"),
        base,
        "a stage it copies from"
    );
    fs_err::write(ctx.path().join("requirements.txt"), "numpy==2.1\n").unwrap();
    assert_ne!(key(&h, ctx.path(), APP, "base"), base);

    // FROM scratch keys for any platform without running anything.
    let scratch = "FROM scratch AS base\nCOPY requirements.txt /\nFROM base\n";
    let platforms = ["linux/amd64", "linux/arm64"].map(|p| Platform::parse(p).unwrap());
    let keys = h
        .stage_keys(ctx.path(), scratch, "base", |r| {
            r.platforms = platforms.to_vec()
        })
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].0, platforms[0]);
    assert_ne!(keys[0].1, keys[1].1);

    let error = h
        .stage_keys(ctx.path(), APP, "nope", |_| {})
        .unwrap_err()
        .message();
    assert_eq!(
        error,
        r#"the Dockerfile has no stage named "nope" (its stages: tools, base, app)"#
    );
}

/// An unreachable registry is a warning and a build of the stage; then the
/// push fails the build, naming the stage and the image. A registry that
/// refuses the push does the same.
#[test]
fn an_unreachable_stage_image_builds_the_stage_and_a_failed_push_fails() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_client(quick_client()) else {
        return;
    };
    busybox_image(&h.store);
    let ctx = context("numpy==2.0\n", "app v1\n");
    let (result, events) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![stage_image("base=127.0.0.1:1/app/base")];
    });
    let error = result.unwrap_err();
    assert!(
        matches!(error, BuildError::StageImagePush { .. }),
        "{error:?}"
    );
    assert!(
        error
            .message()
            .starts_with("pushing the image of stage base to 127.0.0.1:1/app/base:"),
        "{}",
        error.message()
    );
    let warnings = notes(&events);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("127.0.0.1:1/app/base:") && w.contains("not looked up")),
        "{warnings:?}"
    );
    assert_eq!(planned_stages(&events), ["tools", "base", "app"]);

    let proxy = FaultProxy::start(
        &registry.host(),
        Faults::new().rule(
            Rule::new(Fault::Status {
                status: 403,
                retry_after: None,
            })
            .method("PUT")
            .path("/manifests/"),
        ),
    );
    let (result, _) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![stage_image(&format!("base={}/app/base", proxy.host()))];
    });
    let error = result.unwrap_err();
    assert!(
        matches!(error, BuildError::StageImagePush { .. }),
        "{error:?}"
    );
}

/// `--no-cache` reads no stage image: the stage runs, and its image is
/// pushed again under the same key. A `--stage-image` must name a stage of
/// the Dockerfile, once.
#[test]
fn no_cache_builds_the_stage_and_a_stage_image_names_a_stage() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(h) = Harness::with_busybox() else {
        return;
    };
    let repo = format!("{}/app/base", registry.host());
    let spec = stage_image(&format!("base={repo}"));
    let ctx = context("numpy==2.0\n", "app v1\n");
    let (first, _) = h.build(ctx.path(), APP, |r| r.stage_images = vec![spec.clone()]);
    let first = first.unwrap();
    let (again, events) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![spec.clone()];
        r.no_cache = true;
    });
    let again = again.unwrap();
    assert_eq!(planned_stages(&events), ["tools", "base", "app"]);
    assert_eq!(started_steps(&events), 6);
    let image = spec.reference(&key(&h, ctx.path(), APP, "base"));
    assert!(
        notes(&events)
            .iter()
            .any(|n| n.contains(&format!("pushed image {image}"))),
        "{:?}",
        notes(&events)
    );
    assert_ne!(
        file(&h, &again, "req/installed"),
        file(&h, &first, "req/installed")
    );

    let (result, _) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![stage_image(&format!("bsae={repo}"))];
    });
    assert_eq!(
        result.unwrap_err().message(),
        format!(
            r#"--stage-image bsae={repo}: the Dockerfile has no stage named "bsae" (its stages: tools, base, app)"#
        )
    );
    let (result, _) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![spec.clone(), stage_image(&format!("base={repo}2"))];
    });
    let message = result.unwrap_err().message();
    assert!(message.contains("stage base is given twice"), "{message}");

    // A stage the target does not need: a warning, nothing read or pushed.
    let (result, events) = h.build(ctx.path(), APP, |r| {
        r.stage_images = vec![spec.clone()];
        r.target = Some("tools".into());
    });
    result.unwrap();
    let warnings = notes(&events);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the target tools does not need stage base")),
        "{warnings:?}"
    );
}
