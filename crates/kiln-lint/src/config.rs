//! What decides which findings are reported and at which level: a
//! hadolint configuration file (`.hadolint.yaml`), hadolint's comment
//! pragmas (`# hadolint ignore=DL3008`) and BuildKit's `# check=`
//! directive. Pure: the caller finds and reads the file.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::{Yaml, YamlLoader};

use crate::finding::Severity;

/// A configuration, as hadolint's `.hadolint.yaml` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `ignored`: rules never reported.
    pub ignored: BTreeSet<String>,
    /// `override`: a rule's level (`None`: `ignore`/`none`, not reported).
    /// A rule that is off by default is turned on by a level.
    pub overrides: BTreeMap<String, Option<Severity>>,
    /// `failure-threshold`: the lowest level that fails (`ignore`/`none`
    /// are read as `style`: every finding fails).
    pub failure_threshold: Option<Severity>,
    /// `trustedRegistries`: when not empty, DL3026 reports images from
    /// other registries (`*.example.com` and `example.*` match as in
    /// hadolint).
    pub trusted_registries: Vec<String>,
    /// `disable-ignore-pragma`: `# hadolint ignore=` comments do nothing.
    pub disable_ignore_pragma: bool,
}

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

fn error(message: impl Into<String>) -> ConfigError {
    ConfigError {
        message: message.into(),
    }
}

impl Config {
    /// Reads a hadolint configuration (YAML). Keys kiln has no use for
    /// (`format`, `no-color`, `label-schema`, ...) are accepted and left
    /// alone; a known key with a value of the wrong shape is an error.
    pub fn from_hadolint_yaml(text: &str) -> Result<Config, ConfigError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| error(e.to_string()))?;
        let mut config = Config::default();
        let Some(doc) = docs.into_iter().next() else {
            return Ok(config);
        };
        let map = match doc {
            Yaml::Hash(map) => map,
            Yaml::Null => return Ok(config),
            _ => return Err(error("the configuration is not a mapping of keys")),
        };
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            match key {
                "ignored" => config.ignored.extend(strings(key, &value)?),
                "trustedRegistries" => config.trusted_registries = strings(key, &value)?,
                "failure-threshold" => {
                    let level = value
                        .as_str()
                        .ok_or_else(|| error("failure-threshold is not a string"))?;
                    config.failure_threshold = Some(level_of(level)?.unwrap_or(Severity::Style));
                }
                "disable-ignore-pragma" => {
                    config.disable_ignore_pragma = value
                        .as_bool()
                        .ok_or_else(|| error("disable-ignore-pragma is not true or false"))?;
                }
                "override" => {
                    let Yaml::Hash(levels) = value else {
                        if value.is_null() {
                            continue;
                        }
                        return Err(error(
                            "override is not a mapping of levels (error, warning, info, style) to rule lists",
                        ));
                    };
                    for (level, rules) in levels {
                        let name = level.as_str().unwrap_or_default();
                        let severity = level_of(name)?;
                        for rule in strings(&format!("override.{name}"), &rules)? {
                            config.overrides.insert(rule, severity);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(config)
    }
}

/// A level's name: `error`, `warning`, `info`, `style`, or `ignore`/`none`
/// (`None`).
fn level_of(name: &str) -> Result<Option<Severity>, ConfigError> {
    Ok(Some(match name {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        "style" => Severity::Style,
        "ignore" | "none" => return Ok(None),
        other => {
            return Err(error(format!(
                "{other:?} is not a level (error, warning, info, style, ignore, none)"
            )));
        }
    }))
}

fn strings(key: &str, value: &Yaml) -> Result<Vec<String>, ConfigError> {
    match value {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| error(format!("{key}: {i:?} is not a string")))
            })
            .collect(),
        _ => Err(error(format!("{key} is not a list"))),
    }
}

/// hadolint's comment pragmas in one Dockerfile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pragmas {
    /// `# hadolint ignore=A,B`: line → the rules ignored on it (the line
    /// right after the comment).
    pub(crate) lines: BTreeMap<usize, BTreeSet<String>>,
    /// `# hadolint global ignore=A,B`.
    pub(crate) global: BTreeSet<String>,
    /// The lines of `# hadolint ignore=` comments (DL1001).
    pub(crate) comments: Vec<usize>,
}

impl Pragmas {
    /// Reads each comment `(line, text without #)`.
    pub(crate) fn read<'a>(comments: impl IntoIterator<Item = (usize, &'a str)>) -> Pragmas {
        let mut pragmas = Pragmas::default();
        for (line, text) in comments {
            if let Some(rules) = pragma(text, false) {
                pragmas.lines.entry(line + 1).or_default().extend(rules);
                pragmas.comments.push(line);
            } else if let Some(rules) = pragma(text, true) {
                pragmas.global.extend(rules);
            }
        }
        pragmas
    }

    pub(crate) fn ignores(&self, rule: &str, line: usize) -> bool {
        self.global.contains(rule) || self.lines.get(&line).is_some_and(|r| r.contains(rule))
    }
}

/// `hadolint [global] ignore=DL3008, SC2086 # reason` → the rules, read as
/// hadolint reads them (spaces or tabs around the words, ids of the
/// letters D, L, S, C and digits).
fn pragma(text: &str, global: bool) -> Option<Vec<String>> {
    let blank = |c: char| c == ' ' || c == '\t';
    let rest = text.trim_start_matches(blank).strip_prefix("hadolint")?;
    if !rest.starts_with(blank) {
        return None;
    }
    let mut rest = rest.trim_start_matches(blank);
    if global {
        rest = rest.strip_prefix("global")?;
        if !rest.starts_with(blank) {
            return None;
        }
        rest = rest.trim_start_matches(blank);
    }
    let list = rest
        .strip_prefix("ignore")?
        .trim_start_matches(blank)
        .strip_prefix('=')?;
    let list = list.split('#').next().unwrap_or(list);
    let rules: Vec<String> = list
        .split(',')
        .map(|r| r.trim_matches(blank).to_string())
        .collect();
    let valid = |r: &String| !r.is_empty() && r.chars().all(|c| "DLSC0123456789".contains(c));
    rules.iter().all(valid).then_some(rules)
}

/// BuildKit's `# check=skip=A,B;error=true;experimental=C` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CheckDirective {
    pub(crate) skip: BTreeSet<String>,
    pub(crate) skip_all: bool,
    pub(crate) experimental: BTreeSet<String>,
    pub(crate) experimental_all: bool,
    /// `error=true`: findings of BuildKit's checks fail the build.
    pub(crate) error: bool,
}

impl CheckDirective {
    /// Reads the directive's value (BuildKit's `parseLintOptions`:
    /// `;`-separated `key=value`, lists separated by `,`).
    pub(crate) fn parse(value: &str) -> CheckDirective {
        let mut check = CheckDirective::default();
        for part in value.split(';') {
            let Some((key, value)) = part.trim().split_once('=') else {
                continue;
            };
            let list = || {
                value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            match key.trim() {
                "skip" if value.trim() == "all" => check.skip_all = true,
                "skip" => check.skip.extend(list()),
                "experimental" if value.trim() == "all" => check.experimental_all = true,
                "experimental" => check.experimental.extend(list()),
                "error" => check.error = value.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        check
    }

    /// A `check=...` comment above an instruction (text without `#`; the
    /// value ends at the first space, as BuildKit cuts it).
    pub(crate) fn from_comment(comment: &str) -> Option<CheckDirective> {
        let (name, value) = comment.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("check") {
            return None;
        }
        let value = value.trim_start();
        Some(CheckDirective::parse(
            value.split(' ').next().unwrap_or(value),
        ))
    }

    /// This directive with `local`'s skips and experiments added.
    pub(crate) fn merged(&self, local: &CheckDirective) -> CheckDirective {
        let mut out = self.clone();
        out.skip.extend(local.skip.iter().cloned());
        out.skip_all |= local.skip_all;
        out.experimental.extend(local.experimental.iter().cloned());
        out.experimental_all |= local.experimental_all;
        out
    }

    /// Whether BuildKit reports a check: an experimental one when asked
    /// for, another unless skipped.
    pub(crate) fn runs(&self, rule: &str, experimental: bool) -> bool {
        if experimental {
            self.experimental_all || self.experimental.contains(rule)
        } else {
            !(self.skip_all || self.skip.contains(rule))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_hadolint_yaml() {
        let config = Config::from_hadolint_yaml(
            "ignored:\n  - DL3008\n  - DL3009\nfailure-threshold: warning\noverride:\n  error: [DL3015]\n  ignore:\n    - DL3059\ntrustedRegistries:\n- docker.io\n- '*.example.com'\nformat: json\n",
        )
        .unwrap();
        assert_eq!(
            config.ignored.iter().collect::<Vec<_>>(),
            ["DL3008", "DL3009"]
        );
        assert_eq!(config.failure_threshold, Some(Severity::Warning));
        assert_eq!(config.overrides["DL3015"], Some(Severity::Error));
        assert_eq!(config.overrides["DL3059"], None);
        assert_eq!(config.trusted_registries, ["docker.io", "*.example.com"]);
        assert_eq!(Config::from_hadolint_yaml("").unwrap(), Config::default());
        assert!(Config::from_hadolint_yaml("ignored: DL3008\n").is_err());
        assert!(Config::from_hadolint_yaml("failure-threshold: fatal\n").is_err());
    }

    #[test]
    fn reads_pragmas_as_hadolint_does() {
        assert_eq!(
            pragma(" hadolint ignore=DL3008,DL3009", false).unwrap(),
            ["DL3008", "DL3009"]
        );
        assert_eq!(
            pragma("hadolint ignore = DL3008 , SC2086 # why", false).unwrap(),
            ["DL3008", "SC2086"]
        );
        assert_eq!(
            pragma("hadolint global ignore=DL3003", true).unwrap(),
            ["DL3003"]
        );
        assert!(pragma("hadolint global ignore=DL3003", false).is_none());
        assert!(pragma("hadolint ignore=KL101", false).is_none());
        assert!(pragma("hadolintignore=DL3008", false).is_none());
    }

    #[test]
    fn reads_the_check_directive() {
        let c = CheckDirective::parse("skip=JSONArgsRecommended,StageNameCasing;error=true");
        assert!(c.error && !c.runs("StageNameCasing", false) && c.runs("FromAsCasing", false));
        let c = CheckDirective::parse("skip=all;experimental=InvalidDefinitionDescription");
        assert!(!c.runs("FromAsCasing", false));
        assert!(c.runs("InvalidDefinitionDescription", true) && !c.runs("CopyIgnoredFile", true));
    }
}
