//! `kiln ci github|gitlab|k8s`: a ready pipeline that builds each platform
//! on its own runner and merges them (docs/CI.md). The flags are read and
//! checked here, each error naming its flag; `crate::pipeline` makes the
//! YAML.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use kiln_image::{Platform, Reference};

use crate::pipeline::{self, Hosted, K8s, PlatformJob, Spec, Yaml};

/// Print a CI pipeline that builds each platform on its own runner and merges them.
#[derive(Subcommand)]
pub(crate) enum CiCommand {
    /// A GitHub Actions workflow (.github/workflows/*.yml).
    Github(HostedArgs),
    /// A GitLab CI pipeline (.gitlab-ci.yml).
    Gitlab(HostedArgs),
    /// Kubernetes Jobs: an Indexed Job, one index per platform, and a merge Job.
    K8s(K8sArgs),
}

#[derive(Args)]
pub(crate) struct CommonArgs {
    /// The build context, relative to the repository root.
    #[arg(default_value = ".")]
    context: String,
    /// The Dockerfile as `kiln build -f` takes it, relative to the repository root
    /// [default: CONTEXT/Dockerfile].
    #[arg(short, long, value_name = "FILE")]
    file: Option<String>,
    /// The platforms, one job each (comma-separated or repeated).
    #[arg(
        long = "platforms",
        alias = "platform",
        value_name = "OS/ARCH[/VARIANT]",
        value_delimiter = ',',
        default_value = "linux/amd64"
    )]
    platforms: Vec<String>,
    /// The repository to push to, without a tag (`reg.example/team/app`).
    #[arg(long, value_name = "REPO")]
    image: String,
    /// A tag of the merged index (repeatable); `$VAR` references expand in the job
    /// [default: the commit SHA (github, gitlab)].
    #[arg(short, long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Build PLATFORM on native runners with this label (repeatable); other platforms run on
    /// the default runner, under QEMU when it cannot run them.
    #[arg(long = "runner", value_name = "PLATFORM=LABEL")]
    runners: Vec<String>,
    /// A registry cache every job reads and writes (`REPO:TAG`; mode=max, one child per
    /// platform inside).
    #[arg(long, value_name = "REF")]
    cache_ref: Option<String>,
    /// `kiln build --step-timeout` in every job.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = humantime::parse_duration)]
    step_timeout: Duration,
    /// `kiln build --stall-timeout` in every job.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
    /// The longest a build job may run (timeout-minutes, timeout, activeDeadlineSeconds).
    #[arg(long, value_name = "DURATION", default_value = "3h", value_parser = humantime::parse_duration)]
    job_timeout: Duration,
    /// A build argument passed to every build (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Write the pipeline here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// YAML, or the same document as JSON.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Args)]
pub(crate) struct HostedArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Shell that puts kiln (and runc) on the runner's PATH [default: a step that fails:
    /// kiln has no release channel yet].
    #[arg(long, value_name = "CMD")]
    install: Option<String>,
    /// The branch whose pushes build the image.
    #[arg(long, default_value = "main")]
    branch: String,
}

#[derive(Args)]
pub(crate) struct K8sArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The image with kiln (and `sh` on its PATH, as in kiln's -debug image) the pods run.
    #[arg(long, value_name = "IMAGE")]
    kiln_image: String,
    /// The repository the pods clone.
    #[arg(long, value_name = "URL")]
    git_url: String,
    /// The branch or tag they clone.
    #[arg(long, value_name = "REF", default_value = "main")]
    git_ref: String,
    /// The image that clones it (`git` on its PATH).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "docker.io/alpine/git:latest"
    )]
    git_image: String,
    /// A Secret of type kubernetes.io/dockerconfigjson with the push credentials.
    #[arg(long, value_name = "NAME", default_value = "kiln-registry")]
    registry_secret: String,
    /// The Jobs' name prefix [default: the repository's last path component].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

pub(crate) fn run(command: CiCommand) -> anyhow::Result<std::process::ExitCode> {
    let command_line = std::iter::once("kiln".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| pipeline::sh_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let (docs, header, common) = match command {
        CiCommand::Github(args) => {
            let spec = spec(&args.common, true)?;
            let hosted = hosted(&args)?;
            (
                vec![pipeline::github_workflow(&spec, &hosted)],
                String::new(),
                args.common,
            )
        }
        CiCommand::Gitlab(args) => {
            let spec = spec(&args.common, true)?;
            let hosted = hosted(&args)?;
            (
                vec![pipeline::gitlab_pipeline(&spec, &hosted)],
                String::new(),
                args.common,
            )
        }
        CiCommand::K8s(args) => {
            if !args.common.runners.is_empty() {
                bail!(
                    "--runner: kiln ci k8s runs every platform from one pod template, which cannot \
                     pick a node per platform; foreign platforms run under QEMU on the nodes \
                     (docs/CI.md)"
                );
            }
            if args.common.tags.is_empty() {
                bail!("--tag: kiln ci k8s needs at least one tag (there is no CI commit variable)");
            }
            let spec = spec(&args.common, false)?;
            let k8s = k8s(&args, &spec)?;
            let usage = pipeline::k8s_usage(&spec, &k8s);
            (pipeline::k8s_jobs(&spec, &k8s), usage, args.common)
        }
    };
    let text = match common.format {
        Format::Json => {
            let values: Vec<_> = docs.iter().map(Yaml::to_json).collect();
            let value = match <[_; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_json::to_string_pretty(&value)? + "\n"
        }
        Format::Yaml => {
            let mut text = pipeline::header(&command_line) + &header;
            for (i, doc) in docs.iter().enumerate() {
                if i > 0 {
                    text.push_str("---\n");
                }
                text.push_str(&doc.to_yaml());
            }
            text
        }
    };
    match &common.output {
        Some(path) => fs_err::write(path, text)?,
        None => print!("{text}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn hosted(args: &HostedArgs) -> anyhow::Result<Hosted> {
    if args.install.is_none() {
        eprintln!(
            "warning: no --install: the pipeline's install step fails until it has a command \
             that puts kiln on PATH (kiln has no release channel yet)"
        );
    }
    if args.branch.is_empty() || args.branch.contains(['"', '\n']) {
        bail!("--branch {:?}: not a branch name", args.branch);
    }
    Ok(Hosted {
        install: args.install.clone().filter(|i| !i.trim().is_empty()),
        branch: args.branch.clone(),
    })
}

fn k8s(args: &K8sArgs, spec: &Spec) -> anyhow::Result<K8s> {
    Reference::parse(&args.kiln_image)
        .with_context(|| format!("--kiln-image {}", args.kiln_image))?;
    Reference::parse(&args.git_image).with_context(|| format!("--git-image {}", args.git_image))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => spec.image.rsplit('/').next().unwrap_or("kiln").to_string(),
    };
    // A Job's name is a DNS label, and its pods' names add a suffix.
    if name.is_empty()
        || name.len() > 40
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        bail!(
            "--name {name:?}: a Job name prefix is lower-case letters, digits and '-', at most 40"
        );
    }
    if !dns_subdomain(&args.registry_secret) {
        bail!(
            "--registry-secret {:?}: not a Secret name",
            args.registry_secret
        );
    }
    if args.git_url.is_empty() || args.git_url.starts_with('-') {
        bail!("--git-url {:?}: not a repository URL", args.git_url);
    }
    if args.git_ref.is_empty() || args.git_ref.starts_with('-') {
        bail!("--git-ref {:?}: not a branch or tag", args.git_ref);
    }
    let longest = spec
        .platforms
        .iter()
        .map(|j| j.slug().len())
        .max()
        .unwrap_or(0);
    if spec.tags[0].len() + 1 + longest > 128 {
        bail!(
            "--tag {}: too long for the per-platform tags (TAG-<platform>, at most 128)",
            spec.tags[0]
        );
    }
    Ok(K8s {
        name,
        kiln_image: args.kiln_image.clone(),
        git_url: args.git_url.clone(),
        git_ref: args.git_ref.clone(),
        git_image: args.git_image.clone(),
        registry_secret: args.registry_secret.clone(),
    })
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The flags every target shares, checked. `variables`: whether tags may
/// name the CI system's variables.
fn spec(args: &CommonArgs, variables: bool) -> anyhow::Result<Spec> {
    let reference =
        Reference::parse(&args.image).with_context(|| format!("--image {}", args.image))?;
    if reference.tag.is_some() || reference.digest.is_some() {
        bail!(
            "--image {}: a repository without tag or digest (tags are --tag)",
            args.image
        );
    }
    let mut platforms: Vec<PlatformJob> = Vec::new();
    for p in &args.platforms {
        let platform =
            Platform::parse(p.trim()).map_err(|e| anyhow::anyhow!("--platforms: {e}"))?;
        if platforms.iter().any(|j| j.platform == platform) {
            bail!("--platforms: {platform} is given twice");
        }
        platforms.push(PlatformJob {
            platform,
            runner: None,
        });
    }
    for r in &args.runners {
        let Some((p, label)) = r.split_once('=') else {
            bail!("--runner {r:?}: expected PLATFORM=LABEL");
        };
        let platform = Platform::parse(p).map_err(|e| anyhow::anyhow!("--runner: {e}"))?;
        let Some(job) = platforms.iter_mut().find(|j| j.platform == platform) else {
            bail!("--runner {r:?}: {platform} is not in --platforms");
        };
        if label.is_empty() || label.contains(['\n', '"', '\'', '$']) {
            bail!("--runner {r:?}: expected a runner label after '='");
        }
        if job.runner.is_some() {
            bail!("--runner: {platform} is given two runners");
        }
        job.runner = Some(label.to_string());
    }
    if let Some(job) = platforms.iter().find(|j| {
        j.runner.is_none()
            && !matches!(j.platform.architecture.as_str(), "amd64" | "386")
            && !pipeline::EMULATED_ARCHITECTURES.contains(&j.platform.architecture.as_str())
    }) {
        bail!(
            "--platforms: {} has no native runner and QEMU cannot emulate it here; give it one \
             with --runner {}=LABEL",
            job.platform,
            job.platform
        );
    }
    for tag in &args.tags {
        check_tag(tag, variables)?;
    }
    if let Some(cache) = &args.cache_ref {
        let r = Reference::parse(cache).with_context(|| format!("--cache-ref {cache}"))?;
        if r.tag.is_none() || r.digest.is_some() {
            bail!(
                "--cache-ref {cache}: a tagged ref, e.g. {}:buildcache",
                r.name()
            );
        }
    }
    for arg in &args.build_args {
        if !arg.contains('=') || arg.starts_with('=') || arg.contains('\n') {
            bail!("--build-arg {arg:?}: expected KEY=VALUE");
        }
    }
    if args.step_timeout.is_zero() || args.stall_timeout.is_zero() {
        bail!("--step-timeout and --stall-timeout: a pipeline keeps both on (not 0)");
    }
    if args.step_timeout >= args.job_timeout {
        bail!(
            "--step-timeout {}: not below --job-timeout {}, so the CI system would kill the job \
             before kiln could diagnose the step",
            pipeline::duration(args.step_timeout),
            pipeline::duration(args.job_timeout)
        );
    }
    if args.context.is_empty() || args.context.contains('\n') {
        bail!("CONTEXT {:?}: not a directory path", args.context);
    }
    if args.file.as_ref().is_some_and(|f| f.is_empty() || f == "-") {
        bail!("--file: a path in the repository (a pipeline has no standard input to read)");
    }
    Ok(Spec {
        image: args.image.clone(),
        registry: reference.registry.clone(),
        platforms,
        tags: args.tags.clone(),
        dockerfile: args.file.clone(),
        context: args.context.clone(),
        build_args: args.build_args.clone(),
        cache_ref: args.cache_ref.clone(),
        step_timeout: args.step_timeout,
        stall_timeout: args.stall_timeout,
        job_timeout: args.job_timeout,
    })
}

/// A tag: Docker's tag characters, and with `variables`, `$NAME` or
/// `${NAME}` references (the job's shell expands them).
fn check_tag(tag: &str, variables: bool) -> anyhow::Result<()> {
    let mut literal = String::new();
    let mut rest = tag;
    while let Some(i) = rest.find('$') {
        if !variables {
            bail!("--tag {tag:?}: Kubernetes Jobs have no CI variables; give a literal tag");
        }
        literal.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, next) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => bail!("--tag {tag:?}: unclosed ${{"),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("--tag {tag:?}: expected $NAME or ${{NAME}} after '$'");
        }
        literal.push('x');
        rest = next;
    }
    literal.push_str(rest);
    let valid = !literal.is_empty()
        && literal.len() <= 128
        && literal.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && literal
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        bail!("--tag {tag:?}: not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_docker_tags_with_variables_where_the_ci_has_them() {
        for ok in [
            "1.2",
            "latest",
            "$CI_COMMIT_SHA",
            "v1-${GITHUB_RUN_ID}",
            "a_$X.b",
        ] {
            check_tag(ok, true).unwrap();
        }
        for bad in [
            "", "-x", "a/b", "a:b", "$", "${X", "$1", "${a-b}", "a b", "x\"y",
        ] {
            assert!(check_tag(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_tag("$X", false).is_err());
        check_tag("1.2", false).unwrap();
    }
}
