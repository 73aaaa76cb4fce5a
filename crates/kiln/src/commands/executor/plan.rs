//! Kaniko's flags read into what kiln does: `kiln build` flags, registry
//! settings, the files written after the build, and a note for each flag
//! that changes nothing here. Pure but for the environment lookup it is
//! given, so that `--print-plan` shows it and tests check it flag by flag.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ValueEnum as _;
use kiln_build::SOURCE_DATE_EPOCH;
use kiln_image::{DOCKER_HUB, Digest, Reference};
use serde::Serialize;

use super::ExecutorArgs;
use super::source::ContextSource;
use crate::context::GlobalArgs;
use crate::progress::ProgressMode;

/// The tag of the cache ref in `--cache-repo` (a repository, in Kaniko's
/// terms; kiln's cache is one ref in it).
const CACHE_TAG: &str = "buildcache";

#[derive(Debug, Serialize)]
pub(crate) struct Plan {
    pub(crate) context: ContextSource,
    pub(crate) context_sub_path: Option<String>,
    pub(crate) dockerfile: String,
    /// `kiln build`'s flags, but for `--file` and the context.
    pub(crate) build: Vec<String>,
    /// Registries spoken to without TLS verification (or over plain
    /// HTTP); `*` is every one.
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) ca_files: Vec<PathBuf>,
    /// At least this many attempts per registry request.
    pub(crate) registry_attempts: Option<u32>,
    /// `--log-format`, as kiln's `--progress`.
    pub(crate) progress: Option<String>,
    pub(crate) destinations: Vec<String>,
    pub(crate) digest_file: Option<PathBuf>,
    pub(crate) image_name_digest_file: Option<PathBuf>,
    pub(crate) image_name_tag_digest_file: Option<PathBuf>,
    /// One line for each flag given that kiln takes but does nothing with.
    pub(crate) notes: Vec<String>,
    /// `-v` below info: the notes are not printed.
    pub(crate) quiet: bool,
    /// `--cleanup`: the steps' trees removed before kiln exits, not left
    /// to the container's end (or the next kiln command's sweep).
    pub(crate) cleanup: bool,
}

/// Kaniko's log levels, most quiet first (logrus's names).
const LEVELS: [&str; 7] = ["panic", "fatal", "error", "warn", "info", "debug", "trace"];

pub(crate) fn plan(
    args: &ExecutorArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Plan> {
    let on = |flag: Option<bool>| flag.unwrap_or(false);
    let no_push = on(args.no_push);
    let mut notes = Vec::new();
    let mut build: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: &str| {
        build.push(name.to_string());
        build.push(value.to_string());
    };

    // Destinations: Kaniko's checks, in its words.
    let destinations: Vec<Reference> = args
        .destinations
        .iter()
        .map(|d| {
            Reference::parse(d)
                .map(Reference::with_default_tag)
                .with_context(|| format!("--destination {d}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(d) = destinations.iter().find(|d| d.digest.is_some()) {
        bail!(
            "--destination {}: a destination is a tag, not a digest",
            d.familiar()
        );
    }
    if !no_push && destinations.is_empty() {
        bail!("you must provide --destination, or use --no-push");
    }
    if destinations.is_empty() && args.image_name_digest_file.is_some() {
        bail!("you must provide --destination if setting --image-name-with-digest-file");
    }
    if destinations.is_empty() && args.image_name_tag_digest_file.is_some() {
        bail!("you must provide --destination if setting --image-name-tag-with-digest-file");
    }
    let context = ContextSource::parse(&args.context, env("GIT_PULL_METHOD").as_deref())?;

    for d in &args.destinations {
        flag("--tag", d);
    }
    if let Some(target) = &args.target {
        flag("--target", target);
    }
    flag("--isolation", &args.isolation);
    let mut epoch_given = false;
    for arg in &args.build_args {
        // Kaniko: `KEY` alone takes $KEY, empty when unset (kiln build
        // would refuse an unset one).
        let arg = match arg.split_once('=') {
            Some(_) => arg.clone(),
            None => format!("{arg}={}", env(arg).unwrap_or_default()),
        };
        epoch_given |= arg.starts_with(&format!("{SOURCE_DATE_EPOCH}="));
        flag("--build-arg", &arg);
    }
    let reproducible = on(args.reproducible);
    if reproducible && !epoch_given {
        // Kaniko's reproducible images are created at the epoch.
        flag("--build-arg", &format!("{SOURCE_DATE_EPOCH}=0"));
    }
    for label in &args.labels {
        flag("--label", label);
    }
    if let Some(platform) = &args.custom_platform {
        flag("--platform", platform);
    }
    if args.skip_unused_stages == Some(false) {
        notes.push(
            "--skip-unused-stages=false: kiln builds only the stages the target needs".into(),
        );
    }

    // Outputs: the encoding every one of them takes.
    let mut encoding = String::new();
    if let Some(c) = &args.compression {
        match c.as_str() {
            "gzip" | "zstd" => encoding.push_str(&format!(",compression={c}")),
            other => bail!("--compression {other}: gzip or zstd"),
        }
    }
    if args.compression_level != -1 {
        encoding.push_str(&format!(",compression-level={}", args.compression_level));
    }
    if reproducible {
        encoding.push_str(",rewrite-timestamp=true");
    }
    if !no_push {
        flag("--output", &format!("type=image,push=true{encoding}"));
    } else if !destinations.is_empty() && !encoding.is_empty() {
        // The store's copy (and the digest files) in the asked encoding.
        flag("--output", &format!("type=image{encoding}"));
    }
    if let Some(path) = &args.tar_path {
        flag("--output", &format!("type=docker,{}{encoding}", dest(path)));
    }
    if let Some(path) = &args.oci_layout_path {
        flag("--output", &format!("type=oci,{}{encoding}", dest(path)));
    }

    // The cache: kiln's registry cache in Kaniko's cache repository.
    let mut cache_registry = None;
    if on(args.cache) {
        let ttl = kiln_dockerfile::go::parse_duration(&args.cache_ttl)
            .map_err(|e| anyhow::anyhow!("--cache-ttl {}: {e}", args.cache_ttl))?;
        if ttl <= 0 {
            bail!("--cache-ttl {}: must be positive", args.cache_ttl);
        }
        let ttl = format!("{}s", (ttl as u64).div_ceil(1_000_000_000));
        let repo = match (&args.cache_repo, destinations.first()) {
            (Some(repo), _) => repo.clone(),
            (None, Some(first)) => format!("{}/cache", repository(first)),
            (None, None) => {
                bail!("if using cache with --no-push, specify cache repo with --cache-repo")
            }
        };
        let (from, to) = match repo.strip_prefix("oci:") {
            Some(dir) => (
                format!("type=local,{}", csv(&format!("src={dir}"))),
                format!("type=local,{}", csv(&format!("dest={dir}"))),
            ),
            None => {
                let mut r =
                    Reference::parse(&repo).with_context(|| format!("--cache-repo {repo}"))?;
                if r.tag.is_none() && r.digest.is_none() {
                    r.tag = Some(CACHE_TAG.to_string());
                }
                cache_registry = Some(r.registry.clone());
                let r = r.to_string();
                (
                    format!("type=registry,ref={r}"),
                    format!("type=registry,ref={r}"),
                )
            }
        };
        flag("--cache-from", &from);
        if !on(args.no_push_cache) {
            // Kaniko warns when a cache layer cannot be pushed, and builds on.
            flag(
                "--cache-to",
                &format!("{to},mode=max,ttl={ttl},ignore-error=true"),
            );
        }
    } else if args.cache_repo.is_some() {
        notes.push("--cache-repo without --cache=true: no cache is read or written".into());
    }
    if args.cache_dir.is_some() {
        notes.push("--cache-dir: kiln keeps base images in its store (--root)".into());
    }
    if args.cache_copy_layers.is_some() {
        notes.push("--cache-copy-layers: kiln's cache holds COPY steps always".into());
    }
    if args.cache_run_layers == Some(false) {
        notes.push("--cache-run-layers=false: kiln's cache holds RUN steps always".into());
    }

    // Registries.
    let mut insecure: Vec<String> = Vec::new();
    let mut add = |host: &str| {
        if !insecure.iter().any(|h| h == host) {
            insecure.push(host.to_string());
        }
    };
    if on(args.insecure) || on(args.skip_tls_verify) {
        for d in &destinations {
            add(&d.registry);
        }
        if let Some(r) = &cache_registry {
            add(r);
        }
    }
    if on(args.insecure_pull) || on(args.skip_tls_verify_pull) {
        add("*");
    }
    for host in &args.skip_tls_verify_registry {
        add(host);
    }
    let ca_files = args
        .registry_certificate
        .iter()
        .map(|c| match c.split_once('=') {
            Some((host, file)) if !host.is_empty() && !file.is_empty() => Ok(PathBuf::from(file)),
            _ => bail!("--registry-certificate {c}: expected HOST=FILE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Pull mirrors, in Kaniko's order: the maps (flags, then
    // $KANIKO_REGISTRY_MAP), then the Docker Hub mirrors (flags, then
    // $KANIKO_REGISTRY_MIRROR).
    let mut mirrors: Vec<(String, String)> = Vec::new();
    for spec in args
        .registry_map
        .iter()
        .cloned()
        .chain(env("KANIKO_REGISTRY_MAP"))
    {
        mirrors.extend(registry_map(&spec)?);
    }
    for mirror in args
        .registry_mirror
        .iter()
        .cloned()
        .chain(env("KANIKO_REGISTRY_MIRROR").filter(|m| !m.is_empty()))
    {
        mirror
            .parse::<kiln_registry::Mirror>()
            .with_context(|| format!("--registry-mirror {mirror}"))?;
        mirrors.push((DOCKER_HUB.to_string(), mirror));
    }
    for (registry, mirror) in &mirrors {
        flag("--registry-mirror", &format!("{registry}={mirror}"));
    }
    if on(args.skip_default_registry_fallback) {
        if mirrors.is_empty() {
            notes.push(
                "--skip-default-registry-fallback: no --registry-mirror or --registry-map, \
                 nothing to skip"
                    .into(),
            );
        } else {
            build.push("--skip-default-registry-fallback".into());
        }
    }
    let retries = args.push_retry.max(args.image_download_retry);
    let registry_attempts = (retries > 0).then(|| retries.saturating_add(1));
    if args.image_fs_extract_retry > 0 {
        notes.push("--image-fs-extract-retry: kiln unpacks a layer once and checks it".into());
    }

    // The watchdog, kiln's own flags: on with kiln build's defaults.
    if let Some(t) = &args.step_timeout {
        humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("--step-timeout {t}: {e}"))?;
        build.push("--step-timeout".into());
        build.push(t.clone());
    }
    if let Some(t) = &args.stall_timeout {
        humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("--stall-timeout {t}: {e}"))?;
        build.push("--stall-timeout".into());
        build.push(t.clone());
    }
    if let Some(n) = args.retries {
        build.push("--retries".into());
        build.push(n.to_string());
    }

    // What changes nothing here.
    for (given, note) in [
        (
            !args.ignore_path.is_empty(),
            "--ignore-path: kiln's steps run in a container; nothing of the host enters a layer",
        ),
        (
            args.ignore_var_run.is_some(),
            "--ignore-var-run: kiln's steps run in a container; nothing of the host enters a layer",
        ),
        (
            args.kaniko_dir.is_some(),
            "--kaniko-dir: kiln works in its store (--root)",
        ),
        (
            args.force.is_some(),
            "--force: kiln runs inside or outside a container alike",
        ),
        (
            args.skip_push_permission_check.is_some(),
            "--skip-push-permission-check: kiln's first push is the check",
        ),
        (
            args.log_timestamp.is_some(),
            "--log-timestamp: kiln's plain progress gives each step's time instead",
        ),
        (
            args.snapshot_mode.is_some(),
            "--snapshot-mode: kiln's layers are overlayfs diffs; there is nothing to choose",
        ),
        (
            args.use_new_run.is_some(),
            "--use-new-run: kiln has one way to run a step",
        ),
        (
            args.single_snapshot.is_some(),
            "--single-snapshot: kiln makes a layer per step",
        ),
        (
            args.compressed_caching.is_some(),
            "--compressed-caching: kiln's cache holds layers as pushed",
        ),
    ] {
        if given {
            notes.push(note.to_string());
        }
    }

    let level = LEVELS
        .iter()
        .position(|l| *l == args.verbosity.to_ascii_lowercase())
        .with_context(|| {
            format!(
                "--verbosity {}: one of {}",
                args.verbosity,
                LEVELS.join(", ")
            )
        })?;
    let progress = match args.log_format.as_deref() {
        None => None,
        Some("text") => Some("plain"),
        Some("color") => Some("auto"),
        Some("json") => Some("json"),
        Some(other) => bail!("--log-format {other}: text, color or json"),
    };

    Ok(Plan {
        context,
        context_sub_path: args.context_sub_path.clone().filter(|s| !s.is_empty()),
        dockerfile: args.dockerfile.clone(),
        build,
        insecure_registries: insecure,
        ca_files,
        registry_attempts,
        progress: progress.map(String::from),
        destinations: args.destinations.clone(),
        digest_file: args.digest_file.clone(),
        image_name_digest_file: args.image_name_digest_file.clone(),
        image_name_tag_digest_file: args.image_name_tag_digest_file.clone(),
        notes,
        quiet: level < LEVELS.iter().position(|l| *l == "info").unwrap_or(4),
        cleanup: on(args.cleanup),
    })
}

/// One `--registry-map` value as Kaniko reads it: `REGISTRY=MIRROR` pairs
/// separated by `;`, a registry named again adding a mirror after its
/// others; kiln also takes `REGISTRY=MIRROR;MIRROR2` for two mirrors of one
/// registry. Empty is nothing (a `--registry-map=$VAR` left unset).
fn registry_map(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in spec.split(';').filter(|p| !p.is_empty()) {
        let (registry, mirror) = match (part.split_once('='), pairs.last()) {
            (Some((registry, mirror)), _) => (registry.to_string(), mirror),
            (None, Some((registry, _))) => (registry.clone(), part),
            (None, None) => bail!("--registry-map {spec}: expected REGISTRY=MIRROR, got {part:?}"),
        };
        let host = registry
            .parse::<kiln_registry::Mirror>()
            .ok()
            .filter(|m| m.prefix.is_empty());
        if host.is_none() {
            bail!("--registry-map {spec}: {registry:?} is not a registry host");
        }
        mirror
            .parse::<kiln_registry::Mirror>()
            .with_context(|| format!("--registry-map {spec}"))?;
        pairs.push((registry, mirror.to_string()));
    }
    Ok(pairs)
}

/// `dest=PATH` as one CSV field of an `--output` spec.
fn dest(path: &Path) -> String {
    csv(&format!("dest={}", path.display()))
}

/// A field of buildx's CSV specs, quoted when it must be.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// `REGISTRY/REPO` as go-containerregistry names it (Kaniko's files):
/// Docker Hub is `index.docker.io`.
fn repository(r: &Reference) -> String {
    let registry = match r.registry.as_str() {
        "docker.io" => "index.docker.io",
        other => other,
    };
    format!("{registry}/{}", r.repository)
}

/// Kaniko's rule: the Dockerfile as given if it exists, else inside the
/// context.
pub(crate) fn dockerfile_path(given: &str, context: &Path) -> anyhow::Result<PathBuf> {
    if given == "-" || Path::new(given).is_file() {
        return Ok(given.into());
    }
    let inside = context.join(given);
    if inside.is_file() {
        return Ok(inside);
    }
    bail!(
        "please provide a valid path to a Dockerfile within the build context with --dockerfile \
         ({given} is not a file, nor {})",
        inside.display()
    )
}

impl Plan {
    /// Every command's options with this plan's registry settings added.
    pub(crate) fn global_args(&self, mut global: GlobalArgs) -> GlobalArgs {
        for host in &self.insecure_registries {
            if !global.insecure_registries.contains(host) {
                global.insecure_registries.push(host.clone());
            }
        }
        global.ca_files.extend(self.ca_files.iter().cloned());
        if let Some(n) = self.registry_attempts {
            global.registry_attempts = global.registry_attempts.max(n);
        }
        if let Some(p) = &self.progress
            && let Ok(mode) = ProgressMode::from_str(p, true)
        {
            global.progress = mode;
        }
        global
    }

    /// Kaniko's digest files: the digest alone, and a line per destination
    /// naming it by digest (with its tag in the second).
    pub(crate) fn write_digest_files(&self, digest: &Digest) -> anyhow::Result<()> {
        let refs: Vec<Reference> = self
            .destinations
            .iter()
            .map(|d| Ok(Reference::parse(d)?.with_default_tag()))
            .collect::<anyhow::Result<_>>()?;
        if let Some(path) = &self.digest_file {
            write(path, digest.to_string())?;
        }
        if let Some(path) = &self.image_name_digest_file {
            let text: String = refs
                .iter()
                .map(|r| format!("{}@{digest}\n", repository(r)))
                .collect();
            write(path, text)?;
        }
        if let Some(path) = &self.image_name_tag_digest_file {
            let text: String = refs
                .iter()
                .map(|r| {
                    let tag = r.tag.as_deref().unwrap_or("latest");
                    format!("{}:{tag}@{digest}\n", repository(r))
                })
                .collect();
            write(path, text)?;
        }
        Ok(())
    }
}

/// As Kaniko: the parent made if missing, the file 0644.
fn write(path: &Path, text: String) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::write(path, text)?;
    Ok(())
}
