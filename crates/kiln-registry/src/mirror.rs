//! Pull mirrors: registries that pulls of another registry's images try
//! first, in order, before that registry itself (Docker's and BuildKit's
//! `mirrors`, Kaniko's `--registry-mirror` and `--registry-map`). Pushes
//! and caches never go through them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kiln_image::{DOCKER_HUB, Reference};

/// A registry that serves another's images, under a repository prefix or
/// not: `mirror.gcr.io`, `127.0.0.1:5000`, `harbor.example/dockerhub-proxy`.
/// The image `docker.io/library/alpine:3` comes from the last one as
/// `harbor.example/dockerhub-proxy/library/alpine:3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mirror {
    /// `host[:port]`, as in references.
    pub registry: String,
    /// Repository path put before the image's, without slashes at its ends;
    /// empty for none.
    pub prefix: String,
}

/// Why a string is not a mirror.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mirror {value:?}: {reason}")]
pub struct MirrorError {
    pub value: String,
    pub reason: String,
}

impl FromStr for Mirror {
    type Err = MirrorError;

    /// `HOST[:PORT][/PREFIX]`, without a scheme (a loopback mirror is
    /// spoken to over plain HTTP, another over HTTPS, as every registry;
    /// `--insecure-registry` for one without a certificate).
    fn from_str(s: &str) -> Result<Mirror, MirrorError> {
        let err = |reason: &str| MirrorError {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains("://") {
            return Err(err(
                "give the host without a scheme (mirror.example or mirror.example/prefix)",
            ));
        }
        let (host, prefix) = match s.split_once('/') {
            Some((host, prefix)) => (host, prefix.trim_end_matches('/')),
            None => (s, ""),
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        // The host and the prefix checked as a reference's are, with a
        // repository under them; a host without a dot or port is taken as
        // the host it names (a reference would read it as Docker Hub's path).
        let probe = format!(
            "mirror.invalid/{prefix}{}x",
            if prefix.is_empty() { "" } else { "/" }
        );
        Reference::parse(&probe).map_err(|_| err("invalid repository prefix"))?;
        let valid_host = Reference::parse(&format!("{host}:1/x"))
            .map(|r| r.registry == format!("{host}:1"))
            .unwrap_or(false)
            || Reference::parse(&format!("{host}/x"))
                .map(|r| r.registry == host)
                .unwrap_or(false);
        if !valid_host {
            return Err(err("invalid registry host"));
        }
        Ok(Mirror {
            registry: canonical_registry(host).to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.registry)
        } else {
            write!(f, "{}/{}", self.registry, self.prefix)
        }
    }
}

impl Mirror {
    /// Where this mirror keeps `image` (a reference of the registry it
    /// mirrors): the same repository under the prefix, the same tag and
    /// digest.
    pub fn reference(&self, image: &Reference) -> Reference {
        let repository = if self.prefix.is_empty() {
            image.repository.clone()
        } else {
            format!("{}/{}", self.prefix, image.repository)
        };
        Reference {
            registry: self.registry.clone(),
            repository,
            tag: image.tag.clone(),
            digest: image.digest.clone(),
        }
    }
}

/// Docker Hub by any of its names (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`) is `docker.io`, as references name it; other
/// registries as given.
pub(crate) fn canonical_registry(registry: &str) -> &str {
    match registry {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// The mirrors of every registry that has some, in the order they are
/// tried, and whether a pull falls back to the registry itself when every
/// mirror fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mirrors {
    pub(crate) by_registry: BTreeMap<String, Vec<Mirror>>,
    pub(crate) fallback: bool,
}

impl Default for Mirrors {
    fn default() -> Mirrors {
        Mirrors {
            by_registry: BTreeMap::new(),
            fallback: true,
        }
    }
}

impl Mirrors {
    pub(crate) fn add(&mut self, registry: &str, mirror: Mirror) {
        let list = self
            .by_registry
            .entry(canonical_registry(registry).to_string())
            .or_default();
        if !list.contains(&mirror) {
            list.push(mirror);
        }
    }

    /// The mirrors to try for `registry`'s images, in order.
    pub(crate) fn of(&self, registry: &str) -> &[Mirror] {
        self.by_registry
            .get(canonical_registry(registry))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_with_or_without_a_prefix() {
        for (given, registry, prefix) in [
            ("mirror.gcr.io", "mirror.gcr.io", ""),
            ("127.0.0.1:5000", "127.0.0.1:5000", ""),
            ("localhost:5000/hub", "localhost:5000", "hub"),
            ("harbor.example/proxy/hub/", "harbor.example", "proxy/hub"),
            ("mirror", "mirror", ""),
            ("index.docker.io", "docker.io", ""),
        ] {
            let m: Mirror = given.parse().unwrap();
            assert_eq!((m.registry.as_str(), m.prefix.as_str()), (registry, prefix));
        }
        for bad in [
            "https://mirror.gcr.io",
            "",
            "/prefix",
            "mirror.example/UPPER",
            "mir ror.example",
            "mirror.example/a//b",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_mirror_keeps_the_repository_under_its_prefix() {
        let image = Reference::parse("alpine:3.20").unwrap();
        let plain: Mirror = "mirror.gcr.io".parse().unwrap();
        assert_eq!(
            plain.reference(&image).to_string(),
            "mirror.gcr.io/library/alpine:3.20"
        );
        let prefixed: Mirror = "harbor.example/hub".parse().unwrap();
        assert_eq!(
            prefixed.reference(&image).to_string(),
            "harbor.example/hub/library/alpine:3.20"
        );
    }

    #[test]
    fn docker_hub_has_one_entry_whatever_its_name() {
        let mut mirrors = Mirrors::default();
        mirrors.add("index.docker.io", "a.example".parse().unwrap());
        mirrors.add("docker.io", "b.example".parse().unwrap());
        mirrors.add("docker.io", "a.example".parse().unwrap());
        let names: Vec<String> = mirrors
            .of("registry-1.docker.io")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["a.example", "b.example"]);
        assert!(mirrors.of("ghcr.io").is_empty());
    }
}
