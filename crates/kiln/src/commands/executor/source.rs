//! Kaniko's `--context`: where the build context comes from, read without
//! I/O ([`ContextSource::parse`]), then made a directory ([`fetch`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use kiln_fs::tar::{ApplyOptions, apply};
use serde::Serialize;

/// A `--context` as Kaniko spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum ContextSource {
    /// `dir://PATH` or a plain path.
    Dir { path: PathBuf },
    /// `tar://FILE` (gzip, zstd or plain).
    Tar { file: PathBuf },
    /// `tar://stdin`: the same, on standard input.
    Stdin,
    /// `git://HOST/REPO.git#REF#COMMIT`, cloned over https (or
    /// `$GIT_PULL_METHOD`); `git:///PATH#REF`, a repository on this machine.
    Git {
        url: String,
        reference: Option<String>,
        commit: Option<String>,
    },
}

impl ContextSource {
    /// Reads `--context`; the stores kiln cannot read from yet are an
    /// error naming them. `pull_method` is `$GIT_PULL_METHOD` (Kaniko's
    /// scheme for `git://`: `https` unless it says `http`).
    pub(crate) fn parse(s: &str, pull_method: Option<&str>) -> anyhow::Result<ContextSource> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(ContextSource::Dir { path: s.into() });
        };
        Ok(match scheme {
            "dir" => ContextSource::Dir { path: rest.into() },
            "tar" if rest == "stdin" => ContextSource::Stdin,
            "tar" => ContextSource::Tar { file: rest.into() },
            "git" => {
                let mut parts = rest.split('#');
                let repo = parts.next().unwrap_or_default();
                let reference = parts.next().filter(|r| !r.is_empty()).map(String::from);
                let commit = parts.next().filter(|c| !c.is_empty()).map(String::from);
                if repo.is_empty() {
                    bail!("--context {s}: no repository after git://");
                }
                let url = if repo.starts_with('/') {
                    // A repository on this machine: file:// keeps the fetch
                    // shallow (a plain path makes git copy it whole).
                    format!("file://{repo}")
                } else {
                    let method = match pull_method {
                        Some("http") => "http",
                        _ => "https",
                    };
                    format!("{method}://{repo}")
                };
                ContextSource::Git {
                    url,
                    reference,
                    commit,
                }
            }
            "s3" => bail!(unsupported(s, "an S3 bucket (s3://)")),
            "gs" => bail!(unsupported(s, "a Google Cloud Storage bucket (gs://)")),
            "https" | "http" if is_azure_blob(rest) => {
                bail!(unsupported(s, "an Azure Blob Storage container"))
            }
            other => bail!(
                "--context {s}: the scheme {other}:// is not one Kaniko or kiln knows \
                 (dir://, tar://, git://, or a path)"
            ),
        })
    }
}

fn unsupported(s: &str, what: &str) -> String {
    format!(
        "--context {s}: a build context in {what} is not supported by kiln; \
         download it first and give kiln a path, tar:// or git:// context"
    )
}

/// `https://ACCOUNT.blob.core.windows.net/CONTAINER/...` (Kaniko's Azure
/// context).
fn is_azure_blob(rest: &str) -> bool {
    let host = rest.split('/').next().unwrap_or_default();
    host.ends_with(".blob.core.windows.net")
}

/// The context as a directory: a `Dir` as it is, the others unpacked or
/// cloned into `scratch` (which the caller removes).
pub(crate) fn fetch(source: &ContextSource, scratch: &Path) -> anyhow::Result<PathBuf> {
    match source {
        ContextSource::Dir { path } => Ok(path.clone()),
        ContextSource::Tar { file } => {
            let input = fs_err::File::open(file)?;
            unpack(input, &file.display().to_string(), scratch)
        }
        ContextSource::Stdin => unpack(std::io::stdin(), "standard input", scratch),
        ContextSource::Git {
            url,
            reference,
            commit,
        } => clone(url, reference.as_deref(), commit.as_deref(), scratch),
    }
}

/// A tar archive (gzip, zstd or plain) unpacked into `scratch/context`
/// through kiln-fs's one extractor, with the rules of an `ADD` archive.
fn unpack(
    input: impl Read + Send + 'static,
    name: &str,
    scratch: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = scratch.join("context");
    fs_err::create_dir(&dir)?;
    let (_, tar) = kiln_image::compress::decompress_detect(input)
        .with_context(|| format!("reading the context archive {name}"))?;
    let root =
        kiln_fs::Root::open(&dir).map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?;
    // Decompressed on a thread of its own while the files are written.
    let (applied, _) = kiln_image::compress::read_ahead(tar, |tar| {
        apply(tar, &root, &ApplyOptions::add_archive(None))
    });
    applied.with_context(|| format!("unpacking the context archive {name}"))?;
    Ok(dir)
}

/// A shallow clone of `reference` (the remote's HEAD when `None`) into
/// `scratch/context`, at `commit` when given (then the history of the
/// reference is fetched, as a commit need not be its tip). Kaniko reads
/// `$GIT_USERNAME`/`$GIT_PASSWORD` (or `$GIT_TOKEN`) for https remotes.
fn clone(
    url: &str,
    reference: Option<&str>,
    commit: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = scratch.join("context");
    fs_err::create_dir(&dir)?;
    let url = with_credentials(url);
    git(&dir, &["init", "--quiet"])?;
    let mut fetch = vec!["fetch", "--quiet", "--no-tags"];
    if commit.is_none() {
        fetch.extend(["--depth", "1"]);
    }
    fetch.push(&url);
    fetch.push(reference.unwrap_or("HEAD"));
    git(&dir, &fetch).with_context(|| {
        format!(
            "fetching {} from {}",
            reference.unwrap_or("HEAD"),
            redacted(&url)
        )
    })?;
    git(
        &dir,
        &[
            "checkout",
            "--quiet",
            "--detach",
            commit.unwrap_or("FETCH_HEAD"),
        ],
    )?;
    // Submodules as Kaniko's go-git clone leaves them: not fetched.
    Ok(dir)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Never stop to ask for a password: CI has no one to answer.
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn with_credentials(url: &str) -> String {
    let user = std::env::var("GIT_USERNAME").ok();
    let secret = std::env::var("GIT_PASSWORD")
        .ok()
        .or_else(|| std::env::var("GIT_TOKEN").ok());
    match (url.split_once("://"), user, secret) {
        (Some((scheme, rest)), user, Some(secret)) if scheme.starts_with("http") => {
            let user = user.unwrap_or_else(|| "oauth2".to_string());
            format!("{scheme}://{user}:{secret}@{rest}")
        }
        _ => url.to_string(),
    }
}

/// The URL with any password left out, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ContextSource {
        ContextSource::parse(s, None).unwrap()
    }

    #[test]
    fn each_kaniko_scheme() {
        assert_eq!(
            parse("/workspace/"),
            ContextSource::Dir {
                path: "/workspace/".into()
            }
        );
        assert_eq!(
            parse("dir://ctx"),
            ContextSource::Dir { path: "ctx".into() }
        );
        assert_eq!(
            parse("tar://ctx.tar.gz"),
            ContextSource::Tar {
                file: "ctx.tar.gz".into()
            }
        );
        assert_eq!(parse("tar://stdin"), ContextSource::Stdin);
        assert_eq!(
            parse("git://github.com/acme/app.git#refs/heads/main#abc123"),
            ContextSource::Git {
                url: "https://github.com/acme/app.git".into(),
                reference: Some("refs/heads/main".into()),
                commit: Some("abc123".into()),
            }
        );
        assert_eq!(
            ContextSource::parse("git://h/r.git", Some("http")).unwrap(),
            ContextSource::Git {
                url: "http://h/r.git".into(),
                reference: None,
                commit: None,
            }
        );
        assert_eq!(
            parse("git:///srv/app.git#v1"),
            ContextSource::Git {
                url: "file:///srv/app.git".into(),
                reference: Some("v1".into()),
                commit: None,
            }
        );
    }

    #[test]
    fn object_stores_are_named_in_the_error() {
        for (s, named) in [
            ("s3://bucket/ctx.tar.gz", "s3://"),
            ("gs://bucket/ctx.tar.gz", "gs://"),
            (
                "https://acct.blob.core.windows.net/c/ctx.tar.gz",
                "Azure Blob Storage",
            ),
            ("ftp://x/y", "ftp://"),
        ] {
            let err = ContextSource::parse(s, None).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn a_password_is_not_in_messages() {
        assert_eq!(redacted("https://u:secret@h/r.git"), "https://***@h/r.git");
        assert_eq!(redacted("file:///srv/r"), "file:///srv/r");
    }
}
