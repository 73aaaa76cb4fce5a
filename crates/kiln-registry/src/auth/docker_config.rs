//! Credentials as Docker finds them: `config.json` `auths` entries, the
//! `credsStore` and `credHelpers` programs (`docker-credential-<name> get`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;

use crate::{Credentials, Error};

/// The server address Docker uses for Docker Hub credentials.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The parts of `config.json` that hold credentials.
#[derive(Debug, Default)]
pub(crate) struct DockerConfig {
    path: PathBuf,
    auths: BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// Where the credentials for one registry are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Source {
    None,
    Inline(Credentials),
    /// A helper program's name (`desktop` for `docker-credential-desktop`)
    /// and the server address to ask it for.
    Helper {
        name: String,
        server: String,
    },
}

impl DockerConfig {
    /// `<dir>/config.json`; an absent file is an empty config.
    pub(crate) fn load(dir: &Path) -> Result<DockerConfig, Error> {
        let path = dir.join("config.json");
        let text = match fs_err::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path,
                    ..DockerConfig::default()
                });
            }
            Err(e) => {
                return Err(Error::DockerConfig {
                    message: e.to_string(),
                    path,
                });
            }
        };
        let file: File = serde_json::from_str(&text).map_err(|e| Error::DockerConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(DockerConfig {
            path,
            auths: file.auths,
            creds_store: file.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: file.cred_helpers,
        })
    }

    /// The default directory: `$DOCKER_CONFIG`, else `~/.docker`.
    pub(crate) fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".docker"))
    }

    /// Where to find credentials for `registry` (as in references:
    /// `docker.io`, `ghcr.io`, `localhost:5000`), in Docker's order:
    /// `credHelpers`, then `credsStore`, then `auths`.
    pub(crate) fn source(&self, registry: &str) -> Result<Source, Error> {
        let keys = lookup_keys(registry);
        let server = keys[0].clone();
        for key in &keys {
            if let Some(helper) = self.cred_helpers.get(key) {
                return Ok(Source::Helper {
                    name: helper.clone(),
                    server,
                });
            }
        }
        if let Some(store) = &self.creds_store {
            return Ok(Source::Helper {
                name: store.clone(),
                server,
            });
        }
        let entry = keys.iter().find_map(|k| self.auths.get(k)).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| keys.contains(&hostname_of(k).to_string()))
                .map(|(_, v)| v)
        });
        match entry {
            Some(entry) => self.decode(registry, entry),
            None => Ok(Source::None),
        }
    }

    fn decode(&self, registry: &str, entry: &AuthEntry) -> Result<Source, Error> {
        let invalid = |message: String| Error::DockerConfig {
            path: self.path.clone(),
            message,
        };
        let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| invalid(format!("auths.{registry}.auth is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| invalid(format!("auths.{registry}.auth is not UTF-8")))?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                invalid(format!("auths.{registry}.auth is not username:password"))
            })?;
            username = Some(u.to_string());
            password = Some(p.to_string());
        }
        if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
            return Ok(Source::Inline(Credentials::IdentityToken {
                username: username.unwrap_or_default(),
                token,
            }));
        }
        match (username, password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Source::Inline(Credentials::Basic { username, password }))
            }
            _ => Ok(Source::None),
        }
    }
}

/// The keys a registry's credentials may be stored under, the server
/// address Docker uses first.
fn lookup_keys(registry: &str) -> Vec<String> {
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return vec![
            DOCKER_HUB_SERVER.to_string(),
            "index.docker.io".to_string(),
            "docker.io".to_string(),
            "registry-1.docker.io".to_string(),
        ];
    }
    vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ]
}

/// Docker's `ConvertToHostname`: `https://host/v1/` → `host`.
fn hostname_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Runs `docker-credential-<name> get` with `server` on stdin. `Ok(None)`
/// when the helper has no credentials for it.
pub(crate) async fn run_helper(
    name: &str,
    server: &str,
    registry: &str,
    search: Option<&[PathBuf]>,
    timeout: Duration,
) -> Result<Option<Credentials>, Error> {
    let program = format!("docker-credential-{name}");
    let fail = |message: String| Error::CredentialHelper {
        helper: program.clone(),
        registry: registry.to_string(),
        message,
    };
    let path = find_program(&program, search)
        .ok_or_else(|| fail("not found in the helper search path".to_string()))?;
    let mut child = tokio::process::Command::new(&path)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is answered by its output.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer in {}s", timeout.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = [stdout.trim(), stderr.trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("no output");
        return Err(fail(format!("{}: {message}", output.status)));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: Answer =
        serde_json::from_str(stdout.trim()).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    // Docker's convention for OAuth refresh tokens kept by helpers.
    if answer.username == "<token>" {
        return Ok(Some(Credentials::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }));
    }
    Ok(Some(Credentials::Basic {
        username: answer.username,
        password: answer.secret,
    }))
}

fn find_program(program: &str, search: Option<&[PathBuf]>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = match search {
        Some(dirs) => dirs.to_vec(),
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("config.json"), json).unwrap();
        DockerConfig::load(dir.path()).unwrap()
    }

    fn basic(u: &str, p: &str) -> Source {
        Source::Inline(Credentials::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auths_entries_in_every_form() {
        let c = config(
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://ghcr.io/v2/": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="},
                "quay.io": {"auth": "", "identitytoken": "refresh"},
                "empty.example": {}
            }}"#,
        );
        assert_eq!(c.source("127.0.0.1:5000").unwrap(), basic("user", "pa:ss"));
        assert_eq!(c.source("ghcr.io").unwrap(), basic("bob", "pw"));
        assert_eq!(c.source("docker.io").unwrap(), basic("hub", "hub"));
        assert_eq!(
            c.source("quay.io").unwrap(),
            Source::Inline(Credentials::IdentityToken {
                username: String::new(),
                token: "refresh".into()
            })
        );
        assert_eq!(c.source("empty.example").unwrap(), Source::None);
        assert_eq!(c.source("other.example").unwrap(), Source::None);
    }

    #[test]
    fn helpers_come_first() {
        let c = config(
            r#"{"auths": {"a.example": {"auth": "dTpw"}},
                "credsStore": "desktop",
                "credHelpers": {"b.example": "ecr-login"}}"#,
        );
        assert_eq!(
            c.source("b.example").unwrap(),
            Source::Helper {
                name: "ecr-login".into(),
                server: "b.example".into()
            }
        );
        assert_eq!(
            c.source("a.example").unwrap(),
            Source::Helper {
                name: "desktop".into(),
                server: "a.example".into()
            }
        );
        assert_eq!(
            c.source("docker.io").unwrap(),
            Source::Helper {
                name: "desktop".into(),
                server: DOCKER_HUB_SERVER.into()
            }
        );
    }

    #[test]
    fn absent_and_broken_configs() {
        let dir = tempfile::tempdir().unwrap();
        let c = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(c.source("x.example").unwrap(), Source::None);
        fs_err::write(dir.path().join("config.json"), "{").unwrap();
        let err = DockerConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("docker config "), "{err}");
        let c = config(r#"{"auths": {"x.example": {"auth": "!!"}}}"#);
        assert!(c.source("x.example").is_err());
    }
}
