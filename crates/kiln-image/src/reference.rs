//! Image references, parsed and normalised as Docker's `reference` package
//! does: `alpine` is `docker.io/library/alpine:latest`.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`.
    pub registry: String,
    /// `library/alpine`, `org/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {value:?}: {reason}")]
pub struct ReferenceError {
    pub value: String,
    pub reason: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        if s.len() > 4096 {
            return Err(err("too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|e| err(e.reason))?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(err("invalid tag"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(err("invalid registry host"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err("invalid repository name"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("repository name must not be more than 255 characters"));
        }
        Ok(Reference {
            registry: if registry == "index.docker.io" {
                DOCKER_HUB.into()
            } else {
                registry
            },
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// With `latest` as the tag when neither tag nor digest was given.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    /// The host to speak the registry API to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, or the digest as a string, to ask the registry for.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The short form Docker prints: `alpine:3.19`, `org/app:1`, `localhost:5000/x:y`.
    pub fn familiar(&self) -> String {
        let mut name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            name = format!("{name}:{t}");
        }
        if let Some(d) = &self.digest {
            name = format!("{name}@{d}");
        }
        name
    }

    /// Whether the registry is on this machine (plain HTTP, as Docker does).
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let sep_start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

fn valid_registry(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.contains(']');
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/alpine:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().with_default_tag().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(full("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(full("org/app"), "docker.io/org/app:latest");
        assert_eq!(full("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("ghcr.io/a/b/c:1.0-rc_1"), "ghcr.io/a/b/c:1.0-rc_1");
        assert_eq!(full("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(
            full("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("alpine@{d}"))
            .unwrap()
            .with_default_tag();
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_digest(), d);
        assert_eq!(
            Reference::parse("localhost:5000/app:v1")
                .unwrap()
                .familiar(),
            "localhost:5000/app:v1"
        );
        assert_eq!(Reference::parse("alpine:3").unwrap().familiar(), "alpine:3");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "-a",
            "a-",
            "host:port/x",
            "a@sha256:zz",
            "a..b",
            ":tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_registries() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.5.5.5",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["docker.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
