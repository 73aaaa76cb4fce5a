//! `kiln ci`'s pipelines as data: a checked [`Spec`] in, a YAML tree out,
//! one module per CI system. No I/O: `commands/ci.rs` reads the flags into
//! a `Spec` and writes what comes out.
//!
//! Every pipeline has the same shape (docs/CI.md): one job per platform,
//! each building that platform alone and pushing it by digest, then a
//! merge job that pushes one index of the digests under the tags with
//! `kiln imagetools create`. The shell each job runs is written here once;
//! the CI systems differ in how a job gets a runner, credentials and the
//! digests of the others.

mod github;
mod gitlab;
mod k8s;
mod yaml;

use std::time::Duration;

use kiln_image::Platform;

pub(crate) use github::workflow as github_workflow;
pub(crate) use gitlab::pipeline as gitlab_pipeline;
pub(crate) use k8s::{K8s, jobs as k8s_jobs, usage as k8s_usage};
pub(crate) use yaml::Yaml;

/// What a pipeline builds and how, checked.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The repository the image goes to, without tag or digest, as given.
    pub(crate) image: String,
    /// Its registry host (`docker.io` for Docker Hub), for the login.
    pub(crate) registry: String,
    pub(crate) platforms: Vec<PlatformJob>,
    /// The index's tags: literal tags or shell variable references
    /// (`$CI_COMMIT_SHA`, `v1-${BUILD}`); empty means the CI system's
    /// commit SHA.
    pub(crate) tags: Vec<String>,
    /// `-f` as `kiln build` takes it, relative to the job's directory.
    pub(crate) dockerfile: Option<String>,
    pub(crate) context: String,
    /// `KEY=VALUE`, passed on as written.
    pub(crate) build_args: Vec<String>,
    /// A registry cache ref (`REPO:TAG`), read and written by every
    /// platform's job: kiln's cache keeps one child per platform in it.
    pub(crate) cache_ref: Option<String>,
    pub(crate) step_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    /// The longest a job may run; longer than a step may.
    pub(crate) job_timeout: Duration,
}

/// One platform's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlatformJob {
    pub(crate) platform: Platform,
    /// The runner label of a native runner; `None` runs on the default
    /// runner, an amd64 machine, emulating other architectures.
    pub(crate) runner: Option<String>,
}

impl PlatformJob {
    /// `linux-arm64-v8`: the platform in a name (artifact, file, tag).
    pub(crate) fn slug(&self) -> String {
        self.platform.to_string().replace('/', "-")
    }

    /// QEMU's name for the architecture when the job emulates it: no
    /// native runner, and an architecture an amd64 machine does not run.
    pub(crate) fn emulated(&self) -> Option<&'static str> {
        if self.runner.is_some() {
            return None;
        }
        Some(match self.platform.architecture.as_str() {
            "amd64" | "386" => return None,
            "arm64" => "aarch64",
            "arm" => "arm",
            "ppc64le" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "mips64le" => "mips64el",
            "loong64" => "loongarch64",
            _ => "unknown",
        })
    }
}

/// Architectures QEMU (and so the CI jobs) can emulate; `kiln ci` refuses
/// other ones without a native runner.
pub(crate) const EMULATED_ARCHITECTURES: &[&str] = &[
    "arm64", "arm", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
];

/// What the hosted systems need beyond the spec.
#[derive(Debug, Clone)]
pub(crate) struct Hosted {
    /// Shell that puts `kiln` on PATH; `None`: a step that fails saying
    /// so (kiln has no release channel yet).
    pub(crate) install: Option<String>,
    /// The branch whose pushes build and push the image.
    pub(crate) branch: String,
}

/// The install step's script when none was given: a failure that says why.
fn missing_install() -> String {
    "echo 'kiln has no release channel yet: regenerate this pipeline with `kiln ci ... --install CMD`, CMD putting kiln on PATH' >&2\nexit 1\n".to_string()
}

/// A word for a POSIX shell: as is when nothing in it is special, else in
/// single quotes.
pub(crate) fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.' | b'/' | b':' | b'=' | b'@' | b',' | b'+' | b'-'
                )
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A tag as a shell word: one with variable references in double quotes,
/// so that they expand (a tag holds nothing else special, `Spec::tags`).
fn tag_word(tag: &str) -> String {
    if tag.contains('$') {
        format!("\"{tag}\"")
    } else {
        sh_quote(tag)
    }
}

/// A duration as kiln's flags and the CI systems read it (`2h`, `1h 30m`).
pub(crate) fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The `kiln build` of one platform: `kiln` (however a job runs it), then
/// the flags, one per line. `platform`, `output` and `metadata` are shell
/// words.
fn build_command(spec: &Spec, kiln: &str, platform: &str, output: &str, metadata: &str) -> String {
    let mut words = vec![
        format!("{kiln} build --progress plain"),
        format!("--platform {platform}"),
        format!("--output {output}"),
        format!("--metadata-file {metadata}"),
        format!(
            "--step-timeout {} --stall-timeout {}",
            sh_quote(&duration(spec.step_timeout)),
            sh_quote(&duration(spec.stall_timeout))
        ),
    ];
    if let Some(cache) = &spec.cache_ref {
        words.push(format!(
            "--cache-from {}",
            sh_quote(&format!("type=registry,ref={cache}"))
        ));
        words.push(format!(
            "--cache-to {}",
            sh_quote(&format!(
                "type=registry,ref={cache},mode=max,ignore-error=true"
            ))
        ));
    }
    for arg in &spec.build_args {
        words.push(format!("--build-arg {}", sh_quote(arg)));
    }
    if let Some(file) = &spec.dockerfile {
        words.push(format!("--file {}", sh_quote(file)));
    }
    words.push(sh_quote(&spec.context));
    words.join(" \\\n  ") + "\n"
}

/// Shell that prints the pushed digest from a `--metadata-file`
/// (`"containerimage.digest": "sha256:…"`, one key a line as kiln writes
/// it) without needing jq on the runner.
fn digest_from_metadata(metadata: &str) -> String {
    format!(r#"sed -n 's/^ *"containerimage\.digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' {metadata}"#)
}

/// The per-platform build step: build and push by digest, the metadata
/// file at `metadata` (outside the build context), then the digest into
/// `digests/SLUG` for the merge job. The directory is made after the build
/// so that a context of `.` never holds it.
fn build_and_record(
    spec: &Spec,
    kiln: &str,
    platform: &str,
    metadata: &str,
    digests: &str,
    slug: &str,
) -> String {
    let mut script = format!("set -eu\nmetadata={metadata}\ndigests={digests}\n");
    script.push_str(&build_command(
        spec,
        kiln,
        platform,
        &sh_quote(&format!(
            "type=registry,name={},push-by-digest=true",
            spec.image
        )),
        "\"$metadata\"",
    ));
    script.push_str(&format!(
        "digest=$({})\n",
        digest_from_metadata("\"$metadata\"")
    ));
    script.push_str(
        "test -n \"$digest\" || { echo \"no containerimage.digest in $metadata\" >&2; exit 1; }\n",
    );
    script.push_str("mkdir -p \"$digests\"\n");
    script.push_str(&format!("echo \"$digest\" > \"$digests\"/{slug}\n"));
    script.push_str(&format!("echo \"pushed {}@$digest\"\n", spec.image));
    script
}

/// The merge step: every platform's digest file under `digests`, one
/// index pushed under each tag, then read back.
fn merge_script(spec: &Spec, kiln: &str, digests: &str, default_tag: &str) -> String {
    let tags: Vec<String> = if spec.tags.is_empty() {
        vec![default_tag.to_string()]
    } else {
        spec.tags.clone()
    };
    let n = spec.platforms.len();
    let repo = sh_quote(&spec.image);
    let mut script = format!("set -eu\ndigests={digests}\n");
    script.push_str(&format!(
        "test \"$(ls \"$digests\" | wc -l)\" -eq {n} || {{ echo \"expected {n} digests in $digests:\" >&2; ls -l \"$digests\" >&2; exit 1; }}\n"
    ));
    script.push_str("set --\n");
    script.push_str(&format!(
        "for f in \"$digests\"/*; do set -- \"$@\" {repo}@\"$(cat \"$f\")\"; done\n"
    ));
    let tag_flags: Vec<String> = tags
        .iter()
        .map(|t| format!("-t {repo}:{}", tag_word(t)))
        .collect();
    script.push_str(&format!(
        "{kiln} imagetools create {} \"$@\"\n",
        tag_flags.join(" ")
    ));
    script.push_str(&format!(
        "{kiln} imagetools inspect {repo}:{}\n",
        tag_word(&tags[0])
    ));
    script
}

/// The first lines of every pipeline: what made it and how to remake it,
/// each line a comment (an argument may hold a newline).
pub(crate) fn header(command_line: &str) -> String {
    let made = format!(
        "Generated by `{command_line}`\n(kiln {}). Regenerate it rather than editing by hand; \
         docs/CI.md says what each job does.",
        env!("CARGO_PKG_VERSION")
    );
    made.lines().map(|l| format!("# {l}\n")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-platform spec: amd64 on the default runner, arm64 on a native one.
    pub(crate) fn spec() -> Spec {
        Spec {
            image: "reg.example/team/app".into(),
            registry: "reg.example".into(),
            platforms: vec![
                PlatformJob {
                    platform: Platform::parse("linux/amd64").unwrap(),
                    runner: None,
                },
                PlatformJob {
                    platform: Platform::parse("linux/arm64").unwrap(),
                    runner: Some("ubuntu-24.04-arm".into()),
                },
            ],
            tags: vec![],
            dockerfile: Some("docker/Dockerfile".into()),
            context: ".".into(),
            build_args: vec!["PY=3.12".into(), "NOTE=a b".into()],
            cache_ref: Some("reg.example/team/app:buildcache".into()),
            step_timeout: Duration::from_secs(2 * 3600),
            stall_timeout: Duration::from_secs(600),
            job_timeout: Duration::from_secs(3 * 3600),
        }
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(sh_quote("linux/amd64"), "linux/amd64");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(tag_word("$CI_COMMIT_SHA"), "\"$CI_COMMIT_SHA\"");
        assert_eq!(tag_word("1.2"), "1.2");
    }

    #[test]
    fn a_platform_without_a_native_runner_is_emulated_unless_amd64_runs_it() {
        let job = |p: &str, runner: Option<&str>| PlatformJob {
            platform: Platform::parse(p).unwrap(),
            runner: runner.map(str::to_string),
        };
        assert_eq!(job("linux/amd64", None).emulated(), None);
        assert_eq!(job("linux/386", None).emulated(), None);
        assert_eq!(job("linux/arm64", None).emulated(), Some("aarch64"));
        assert_eq!(job("linux/arm/v7", None).emulated(), Some("arm"));
        assert_eq!(job("linux/arm64", Some("arm")).emulated(), None);
        assert_eq!(job("linux/arm/v7", None).slug(), "linux-arm-v7");
    }

    #[test]
    fn the_build_command_carries_every_flag_quoted() {
        let cmd = build_command(
            &spec(),
            "kiln",
            "\"$PLATFORM\"",
            "type=registry,name=r/a,push-by-digest=true",
            "m.json",
        );
        assert_eq!(
            cmd,
            "kiln build --progress plain \\\n  \
             --platform \"$PLATFORM\" \\\n  \
             --output type=registry,name=r/a,push-by-digest=true \\\n  \
             --metadata-file m.json \\\n  \
             --step-timeout 2h --stall-timeout 10m \\\n  \
             --cache-from type=registry,ref=reg.example/team/app:buildcache \\\n  \
             --cache-to type=registry,ref=reg.example/team/app:buildcache,mode=max,ignore-error=true \\\n  \
             --build-arg PY=3.12 \\\n  \
             --build-arg 'NOTE=a b' \\\n  \
             --file docker/Dockerfile \\\n  \
             .\n"
        );
    }

    /// The digest extraction reads what kiln's `--metadata-file` writes,
    /// and not the per-platform keys.
    #[test]
    fn the_digest_is_read_from_kilns_own_metadata_file() {
        use crate::metadata::{Metadata, PlatformImage};
        use kiln_image::Digest;
        use kiln_image::document::Descriptor;
        let digest = |c: &str| {
            format!("sha256:{}", c.repeat(64))
                .parse::<Digest>()
                .unwrap()
        };
        let image = PlatformImage {
            platform: Platform::parse("linux/arm64").unwrap(),
            manifest: Descriptor::new(kiln_image::media::OCI_MANIFEST, digest("a"), 10),
            config: digest("c"),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        Metadata::of_build(
            &image.manifest,
            std::slice::from_ref(&image),
            Some("r/a".into()),
        )
        .write(&path)
        .unwrap();
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &digest_from_metadata(&sh_quote(path.to_str().unwrap())),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{}\n", digest("a"))
        );
    }
}
