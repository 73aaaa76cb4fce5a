//! Platforms (`linux/arm64/v8`) as Dockerfiles, `--platform` and image
//! indexes name them, normalised the way containerd's `platforms` package
//! does, and matched the way it picks a manifest from an index.

use std::fmt;

/// An OS, an architecture and an optional variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (or `arch` alone, meaning Linux),
    /// normalising architecture aliases (`x86_64` → `amd64`, `aarch64` →
    /// `arm64`) and default variants (`arm64/v8` → `arm64`, `amd64/v1` →
    /// `amd64`, `arm` → `arm/v7`).
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let invalid = || format!("{spec:?}: invalid platform, expected os/arch[/variant]");
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(invalid());
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let (os, arch, variant) = match lower.as_slice() {
            [arch] if is_known_arch(arch) => ("linux".to_string(), arch.clone(), None),
            [os] => (os.clone(), host_architecture().to_string(), None),
            [os, arch] => (os.clone(), arch.clone(), None),
            [os, arch, variant] => (os.clone(), arch.clone(), Some(variant.clone())),
            _ => return Err(invalid()),
        };
        if !os
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid());
        }
        let (architecture, variant) = normalize_arch(&arch, variant.as_deref());
        Ok(Platform {
            os: if os == "macos" { "darwin".into() } else { os },
            architecture,
            variant,
        })
    }

    /// The platform of the machine kiln runs on (Linux).
    pub fn host() -> Platform {
        let (architecture, variant) = normalize_arch(host_architecture(), None);
        Platform {
            os: "linux".to_string(),
            architecture,
            variant,
        }
    }
}

impl Platform {
    /// A platform from the fields of an OCI descriptor or image config,
    /// normalised (`aarch64` → `arm64`, `arm64` + `v8` → `arm64`).
    pub fn from_parts(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase);
        let (architecture, variant) =
            normalize_arch(&architecture.to_ascii_lowercase(), variant.as_deref());
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// Whether an image for `other` runs here, as containerd's matcher
    /// decides: same OS and architecture, and the same variant, where an
    /// `arm` host also runs older variants (`arm/v7` runs `arm/v6`, `arm/v5`)
    /// and an `amd64` host runs `amd64` without a variant level.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        match (&self.variant, &other.variant) {
            (a, b) if a == b => true,
            (Some(mine), Some(theirs)) if self.architecture == "arm" => {
                arm_level(theirs) <= arm_level(mine)
            }
            (Some(_), None) if self.architecture == "amd64" => true,
            _ => false,
        }
    }
}

fn arm_level(variant: &str) -> u32 {
    variant.trim_start_matches('v').parse().unwrap_or(u32::MAX)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "amd64"
            | "x86_64"
            | "x86-64"
            | "arm64"
            | "aarch64"
            | "arm"
            | "armhf"
            | "armel"
            | "386"
            | "i386"
            | "ppc64le"
            | "s390x"
            | "riscv64"
            | "mips64le"
            | "loong64"
    )
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.map(str::to_string);
    match arch {
        "i386" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = variant.filter(|v| v != "8" && v != "v8");
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") => "v7".to_string(),
                Some("5") | Some("6") | Some("8") => format!("v{}", variant.unwrap_or_default()),
                Some(v) => v.to_string(),
            };
            ("arm".into(), Some(v))
        }
        other => (other.to_string(), variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        assert_eq!(p("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("Linux/ARM64"), "linux/arm64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("windows/amd64"), "windows/amd64");
    }

    #[test]
    fn matching() {
        let host = Platform::parse("linux/arm/v7").unwrap();
        assert!(host.matches(&Platform::from_parts("linux", "arm", Some("v6"))));
        assert!(!host.matches(&Platform::from_parts("linux", "arm", Some("v8"))));
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches(&Platform::from_parts("linux", "aarch64", Some("v8"))));
        assert!(!arm64.matches(&Platform::from_parts("linux", "amd64", None)));
        assert!(
            Platform::parse("linux/amd64/v3")
                .unwrap()
                .matches(&Platform::from_parts("linux", "amd64", None))
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "linux/", "/amd64", "linux/amd64/v8/x", "li nux/amd64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
