//! `--cache-to` and `--cache-from`, as buildx spells them.

use std::path::PathBuf;
use std::time::Duration;

use kiln_image::Reference;
use kiln_image::media::Compression;

use super::CacheError;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=REF`: an index in a registry, by tag.
    Registry(Reference),
    /// `type=local,dest=DIR` / `src=DIR`: an OCI layout directory, the
    /// index named `tag` (default `latest`) in its `index.json`.
    Local { dir: PathBuf, tag: String },
    /// `--cache-to type=inline`: in the built image's config, read back
    /// with `--cache-from type=registry,ref=IMAGE`.
    Inline,
}

/// Which steps a cache export keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps whose layers are in the exported image.
    #[default]
    Min,
    /// Every filesystem step of every stage built.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// Entries older than this are dropped (and ignored when read).
    pub ttl: Duration,
    /// A cache that cannot be written is a warning, not a failure.
    pub ignore_error: bool,
    /// The layers' compression and level in the cache; `None`: as built.
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    /// `mounts=true`: the contents of the build's `RUN --mount=type=cache`
    /// directories are written too (docs/CACHE.md).
    pub mounts: bool,
    /// `mounts-max-size=`: the most bytes of files the written mounts may
    /// hold together; the biggest are left out until the rest fit.
    pub mounts_max_size: u64,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: CacheLocation,
}

/// A week: what a CI branch's cache is worth keeping for.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// 2 GiB of cache mounts: a pip or apt download cache of a large ML image,
/// not a copy of every wheel ever built.
pub const DEFAULT_MOUNTS_MAX_SIZE: u64 = 2 << 30;

/// The fields of a spec, `key=value` comma separated; a spec without `=`
/// is a registry reference (buildx's shorthand).
fn fields(spec: &str) -> Result<Vec<(&str, &str)>, CacheError> {
    if !spec.contains('=') {
        return Ok(vec![("type", "registry"), ("ref", spec)]);
    }
    spec.split(',')
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| bad(spec, format!("{f:?} is not key=value")))
        })
        .collect()
}

fn bad(spec: &str, reason: String) -> CacheError {
    CacheError::Spec {
        spec: spec.to_owned(),
        reason,
    }
}

fn location(
    spec: &str,
    kind: Option<&str>,
    reference: Option<&str>,
    dir: Option<&str>,
    dir_key: &str,
    tag: Option<&str>,
) -> Result<CacheLocation, CacheError> {
    match kind {
        Some("registry") => {
            let r = reference.ok_or_else(|| bad(spec, "ref= is required".into()))?;
            let reference = Reference::parse(r)
                .map_err(|e| bad(spec, e.to_string()))?
                .with_default_tag();
            Ok(CacheLocation::Registry(reference))
        }
        Some("local") => Ok(CacheLocation::Local {
            dir: dir
                .ok_or_else(|| bad(spec, format!("{dir_key}= is required")))?
                .into(),
            tag: tag.unwrap_or("latest").to_string(),
        }),
        Some("inline") if dir_key == "dest" => Ok(CacheLocation::Inline),
        Some("inline") => Err(bad(
            spec,
            "type=inline is for --cache-to; read an image's inline cache with \
             --cache-from type=registry,ref=IMAGE"
                .into(),
        )),
        Some(other @ ("gha" | "s3" | "azblob")) => Err(bad(
            spec,
            format!("type={other} is not supported (registry, local)"),
        )),
        Some(other) => Err(bad(
            spec,
            format!("unknown type {other:?} (registry, local)"),
        )),
        None => Err(bad(spec, "type= is required".into())),
    }
}

impl CacheTo {
    pub fn parse(spec: &str) -> Result<CacheTo, CacheError> {
        let (mut kind, mut reference, mut dest, mut tag) = (None, None, None, None);
        let mut to = CacheTo {
            location: CacheLocation::Local {
                dir: PathBuf::new(),
                tag: String::new(),
            },
            mode: CacheMode::Min,
            ttl: DEFAULT_TTL,
            ignore_error: false,
            compression: None,
            level: None,
            mounts: false,
            mounts_max_size: DEFAULT_MOUNTS_MAX_SIZE,
        };
        let mut max_size_given = false;
        let flag = |k: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(bad(spec, format!("{k} {other:?} is not true or false"))),
        };
        for (k, v) in fields(spec)? {
            match k {
                "type" => kind = Some(v),
                "ref" => reference = Some(v),
                "dest" => dest = Some(v),
                "tag" => tag = Some(v),
                "mode" => {
                    to.mode = match v {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        other => {
                            return Err(bad(spec, format!("mode {other:?} is not min or max")));
                        }
                    }
                }
                "ttl" => {
                    to.ttl = humantime::parse_duration(v)
                        .map_err(|e| bad(spec, format!("ttl {v:?}: {e}")))?
                }
                "ignore-error" => to.ignore_error = flag(k, v)?,
                "compression" => {
                    to.compression = Some(match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::None,
                        other => {
                            return Err(bad(
                                spec,
                                format!("unknown compression {other:?} (gzip, zstd, uncompressed)"),
                            ));
                        }
                    })
                }
                "compression-level" => {
                    to.level = Some(v.parse().map_err(|_| {
                        bad(spec, format!("compression-level {v:?} is not a number"))
                    })?)
                }
                "mounts" => to.mounts = flag(k, v)?,
                // Docker's sizes (`--memory`, tmpfs `size=`): binary units
                // whatever the spelling, 500MB = 500m = 500MiB.
                "mounts-max-size" => {
                    to.mounts_max_size = kiln_dockerfile::go::ram_in_bytes(v)
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| {
                            bad(
                                spec,
                                format!("mounts-max-size {v:?} is not a size (2GiB, 500m, 1024)"),
                            )
                        })?;
                    max_size_given = true;
                }
                // buildx's, for its own cache format; kiln's is always an
                // OCI image manifest with OCI media types.
                "oci-mediatypes" | "image-manifest" | "force-compression" => {
                    flag(k, v)?;
                }
                other => return Err(bad(spec, format!("unknown key {other:?}"))),
            }
        }
        if max_size_given && !to.mounts {
            return Err(bad(
                spec,
                "mounts-max-size= without mounts=true: no mounts are written".into(),
            ));
        }
        to.location = location(spec, kind, reference, dest, "dest", tag)?;
        if to.location == CacheLocation::Inline && to.mode == CacheMode::Max {
            return Err(bad(
                spec,
                "type=inline holds the image's own steps (mode=min); \
                 use type=registry for mode=max"
                    .into(),
            ));
        }
        // An image's config has no room for files.
        if to.location == CacheLocation::Inline && to.mounts {
            return Err(bad(
                spec,
                "type=inline cannot hold cache mounts; use type=registry for mounts=true".into(),
            ));
        }
        Ok(to)
    }
}

impl CacheFrom {
    pub fn parse(spec: &str) -> Result<CacheFrom, CacheError> {
        let (mut kind, mut reference, mut src, mut tag) = (None, None, None, None);
        for (k, v) in fields(spec)? {
            match k {
                "type" => kind = Some(v),
                "ref" => reference = Some(v),
                "src" => src = Some(v),
                "tag" => tag = Some(v),
                // buildx's: a specific cache manifest; kiln reads the ref's.
                "digest" => {}
                other => return Err(bad(spec, format!("unknown key {other:?}"))),
            }
        }
        Ok(CacheFrom {
            location: location(spec, kind, reference, src, "src", tag)?,
        })
    }
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
            CacheLocation::Inline => write!(f, "inline"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildx() {
        let to = CacheTo::parse("type=registry,ref=reg.test/app:cache,mode=max,ttl=24h,ignore-error=true,compression=zstd").unwrap();
        assert_eq!(
            to.location,
            CacheLocation::Registry(Reference::parse("reg.test/app:cache").unwrap())
        );
        assert_eq!(to.mode, CacheMode::Max);
        assert_eq!(to.ttl, Duration::from_secs(24 * 3600));
        assert!(to.ignore_error);
        assert_eq!(to.compression, Some(Compression::Zstd));
        let to = CacheTo::parse("type=local,dest=/tmp/c").unwrap();
        assert_eq!(
            to.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert_eq!((to.mode, to.ttl), (CacheMode::Min, DEFAULT_TTL));
        let from = CacheFrom::parse("reg.test/app:cache").unwrap();
        assert_eq!(
            from.location,
            CacheLocation::Registry(Reference::parse("reg.test/app:cache").unwrap())
        );
        let from = CacheFrom::parse("type=local,src=/tmp/c,tag=main").unwrap();
        assert_eq!(
            from.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "main".into()
            }
        );
        // A ref without a tag is `latest`.
        let from = CacheFrom::parse("type=registry,ref=reg.test/app").unwrap();
        assert_eq!(from.location.to_string(), "reg.test/app:latest");
        assert!(!to.mounts);
        let to = CacheTo::parse("type=local,dest=/tmp/c,mounts=true").unwrap();
        assert!(to.mounts);
        assert_eq!(to.mounts_max_size, DEFAULT_MOUNTS_MAX_SIZE);
        for (size, bytes) in [("500MB", 500 << 20), ("2GiB", 2 << 30), ("1.5g", 3 << 29)] {
            let to = CacheTo::parse(&format!(
                "type=local,dest=/tmp/c,mounts=true,mounts-max-size={size}"
            ))
            .unwrap();
            assert_eq!(to.mounts_max_size, bytes, "{size}");
        }
        for bad in [
            "type=registry,ref=x,mounts=yes",
            "type=registry,ref=x,mounts=true,mounts-max-size=lots",
            "type=registry,ref=x,mounts=true,mounts-max-size=-1",
            "type=registry,ref=x,mounts-max-size=1g",
            "type=registry,ref=x,mounts=false,mounts-max-size=1g",
            "type=registry",
            "type=local",
            "type=registry,ref=x,mode=all",
            "type=inline,mode=max",
            "type=inline,mounts=true",
            "type=registry,ref=x,ttl=soon",
            "type=gha",
            "type=registry,ref=x,bogus=1",
        ] {
            let err = CacheTo::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("cache {bad}: ")), "{err}");
        }
        assert_eq!(
            CacheTo::parse("type=inline").unwrap().location,
            CacheLocation::Inline
        );
        let err = CacheFrom::parse("type=inline").unwrap_err().to_string();
        assert!(
            err.contains("--cache-from type=registry,ref=IMAGE"),
            "{err}"
        );
    }
}
