//! `RUN --network`, `--security` and `--device` (BuildKit's
//! `commands_runnetwork.go`, `commands_runsecurity.go`,
//! `commands_rundevice.go`). None of them is expanded.

use std::fmt;

use super::mount::{csv_fields, with_suggestion};
use crate::goconv::{parse_bool, quote};
use crate::suggest::suggest;

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// The build's own network mode (the default).
    #[default]
    Default,
    /// No network but loopback.
    None,
    /// The host's network; needs the `network.host` entitlement.
    Host,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }

    /// BuildKit's check: the exact (case-sensitive) names only.
    pub(crate) fn parse(value: &str) -> Result<NetworkMode, String> {
        match value {
            "default" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(format!("invalid network mode {}", quote(value))),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityMode {
    /// The default confinement.
    #[default]
    Sandbox,
    /// All capabilities, no masked paths; needs the `security.insecure`
    /// entitlement.
    Insecure,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Sandbox => "sandbox",
            SecurityMode::Insecure => "insecure",
        }
    }

    pub(crate) fn parse(value: &str) -> Result<SecurityMode, String> {
        match value {
            "sandbox" => Ok(SecurityMode::Sandbox),
            "insecure" => Ok(SecurityMode::Insecure),
            _ => Err(format!("security {} is not valid", quote(value))),
        }
    }
}

impl fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RUN --device=name[,required]`: a CDI device (`vendor.com/class=name`,
/// or a whole class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

/// BuildKit's `ParseDevice`: a CSV record whose first bare field (or
/// `name=`) is the name; any field that is not a known key is the name while
/// none is set (so `vendor.com/class=x` is a name, not a key).
pub(crate) fn parse_device(spec: &str) -> Result<Device, String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv devices: {e}"))?;
    let mut device = Device {
        name: String::new(),
        required: false,
    };
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.to_lowercase() == "required" {
                device.required = true;
            } else if device.name.is_empty() {
                device.name = field.clone();
            } else {
                return Err(format!("invalid field '{field}' must be a key=value pair"));
            }
            continue;
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "name" => {
                if !device.name.is_empty() {
                    return Err(format!("device name already set to {}", device.name));
                }
                device.name = value.to_string();
            }
            "required" => {
                device.required =
                    parse_bool(value).ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            }
            _ if device.name.is_empty() => device.name = field.clone(),
            _ => {
                return Err(with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    suggest(&key, &["name", "required"], true),
                ));
            }
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, required: bool) -> Device {
        Device {
            name: name.to_string(),
            required,
        }
    }

    #[test]
    fn devices_as_buildkit_reads_them() {
        let ok = [
            (
                "vendor1.com/device=foo",
                device("vendor1.com/device=foo", false),
            ),
            ("vendor1.com/device", device("vendor1.com/device", false)),
            (
                "vendor1.com/device=foo,required",
                device("vendor1.com/device=foo", true),
            ),
            (
                "vendor1.com/device=foo,required=true",
                device("vendor1.com/device=foo", true),
            ),
            (
                "vendor1.com/device=foo,required=false",
                device("vendor1.com/device=foo", false),
            ),
            (
                "name=vendor1.com/device=foo",
                device("vendor1.com/device=foo", false),
            ),
            (
                "name=vendor1.com/device=foo,required",
                device("vendor1.com/device=foo", true),
            ),
        ];
        for (spec, want) in ok {
            assert_eq!(parse_device(spec).unwrap(), want, "{spec}");
        }
        assert_eq!(
            parse_device("vendor1.com/device=foo,name=vendor2.com/device=bar").unwrap_err(),
            "device name already set to vendor1.com/device=foo"
        );
        assert_eq!(
            parse_device("a,b").unwrap_err(),
            "invalid field 'b' must be a key=value pair"
        );
        assert_eq!(
            parse_device("a,requird=1").unwrap_err(),
            "unexpected key 'requird' in 'requird=1' (did you mean required?)"
        );
        assert_eq!(
            parse_device("a,required=maybe").unwrap_err(),
            "invalid value for required: maybe"
        );
    }

    #[test]
    fn network_and_security_names() {
        assert_eq!(NetworkMode::parse("none"), Ok(NetworkMode::None));
        assert_eq!(
            NetworkMode::parse("bridge"),
            Err("invalid network mode \"bridge\"".to_string())
        );
        assert_eq!(SecurityMode::parse("insecure"), Ok(SecurityMode::Insecure));
        assert_eq!(
            SecurityMode::parse("Insecure"),
            Err("security \"Insecure\" is not valid".to_string())
        );
    }
}
