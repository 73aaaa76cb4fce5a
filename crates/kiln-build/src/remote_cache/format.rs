//! kiln's cache format, version 1 (docs/CACHE.md): the config of a cache
//! manifest, and how two of them merge.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_image::Digest;
use kiln_image::document::parse_rfc3339;
use serde::{Deserialize, Serialize};

use super::CacheError;

/// The media type of a cache config, and the `artifactType` of a cache
/// manifest.
pub const CACHE_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";

const FORMAT: &str = "kiln-cache";
const VERSION: u32 = 1;

/// A cache manifest's config: one platform's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub format: String,
    pub version: u32,
    /// The cache-key format the entries' keys are in.
    pub keys: String,
    pub platform: String,
    pub entries: Vec<CacheEntry>,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub key: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// An index into the manifest's layers; none for a step that changed
    /// no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    #[serde(default, rename = "diffID", skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub instruction: String,
    /// When the step ran (RFC 3339).
    pub created: String,
    /// When the entry stops counting (RFC 3339): its writer's `ttl` after
    /// it was written.
    pub expires: String,
    #[serde(default)]
    pub build_millis: u64,
}

impl CacheConfig {
    pub(crate) fn new(platform: String, entries: Vec<CacheEntry>) -> CacheConfig {
        CacheConfig {
            format: FORMAT.to_string(),
            version: VERSION,
            keys: crate::engine::CACHE_KEY_VERSION.to_string(),
            platform,
            entries,
        }
    }

    /// Reads a config; one kiln cannot use (another format or version, or
    /// keys in another format) is an error saying so.
    pub fn parse(bytes: &[u8]) -> Result<CacheConfig, CacheError> {
        let config: CacheConfig =
            serde_json::from_slice(bytes).map_err(|e| CacheError::Format {
                reason: e.to_string(),
            })?;
        if config.format != FORMAT || config.version != VERSION {
            return Err(CacheError::Format {
                reason: format!(
                    "{} version {}, this kiln reads {FORMAT} version {VERSION}",
                    config.format, config.version
                ),
            });
        }
        if config.keys != crate::engine::CACHE_KEY_VERSION {
            return Err(CacheError::Format {
                reason: format!(
                    "keys in format {}, this kiln makes {}",
                    config.keys,
                    crate::engine::CACHE_KEY_VERSION
                ),
            });
        }
        Ok(config)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cache config serialises")
    }
}

impl CacheEntry {
    /// Whether the entry is past its expiry at `now` (Unix seconds). An
    /// entry whose expiry cannot be read counts as expired.
    pub(crate) fn expired(&self, now: i64) -> bool {
        parse_rfc3339(&self.expires).is_none_or(|at| at < now)
    }
}

/// The expiry of an entry written at `now` with `ttl`.
pub(crate) fn expiry(now: i64, ttl: Duration) -> String {
    kiln_image::document::rfc3339(now.saturating_add(ttl.as_secs().min(i64::MAX as u64) as i64))
}

/// `ours` merged over `theirs`: every key once, ours winning; expired
/// entries dropped; sorted by key, so the same entries give the same
/// bytes.
pub(crate) fn merge(ours: Vec<CacheEntry>, theirs: Vec<CacheEntry>, now: i64) -> Vec<CacheEntry> {
    let mut by_key: BTreeMap<Digest, CacheEntry> = BTreeMap::new();
    for e in theirs.into_iter().chain(ours) {
        by_key.insert(e.key.clone(), e);
    }
    by_key.into_values().filter(|e| !e.expired(now)).collect()
}

#[cfg(test)]
mod tests {
    use kiln_image::document::rfc3339;

    use super::*;

    fn entry(n: u8, created: i64) -> CacheEntry {
        CacheEntry {
            key: Digest::of(&[n]),
            parent: None,
            layer: None,
            diff_id: None,
            stage: "s".into(),
            instruction: format!("RUN {n}"),
            created: rfc3339(created),
            expires: expiry(created, HOUR),
            build_millis: 1,
        }
    }

    #[test]
    fn an_unreadable_expiry_counts_as_expired() {
        let mut e = entry(1, 0);
        e.expires = "garbage".into();
        assert!(e.expired(0));
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_merge_keeps_both_sides_ours_first_and_drops_the_expired() {
        let now = 1_700_000_000;
        let mut mine = entry(1, now);
        mine.instruction = "mine".into();
        let theirs = vec![entry(1, now - 10), entry(2, now - 10), entry(3, now - 7200)];
        let merged = merge(vec![mine.clone(), entry(4, now)], theirs, now);
        let keys: Vec<&str> = merged.iter().map(|e| e.instruction.as_str()).collect();
        assert_eq!(merged.len(), 3, "{keys:?}");
        assert!(merged.contains(&mine));
        assert!(!merged.iter().any(|e| e.instruction == "RUN 3"), "expired");
        let sorted = merged.windows(2).all(|w| w[0].key < w[1].key);
        assert!(sorted);
    }

    #[test]
    fn configs_of_other_versions_are_refused() {
        let c = CacheConfig::new("linux/amd64".into(), vec![entry(1, 0)]);
        let bytes = c.to_bytes();
        assert_eq!(CacheConfig::parse(&bytes).unwrap(), c);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""diffID""#) || !text.contains("diff"));
        let v2 = text.replace(r#""version":1"#, r#""version":2"#);
        assert!(CacheConfig::parse(v2.as_bytes()).is_err());
        let keys = text.replace(crate::engine::CACHE_KEY_VERSION, "kiln-cache-v0");
        assert!(CacheConfig::parse(keys.as_bytes()).is_err());
        assert!(CacheConfig::parse(b"{not json").is_err());
    }
}
