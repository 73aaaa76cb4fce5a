//! HTTP details of the distribution API: error bodies, `Range` and
//! `Content-Range`, turning transport errors into text, and the idle
//! timeout that every request and body read runs under.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::retry::{Failure, is_retryable_status, parse_retry_after};
use crate::{Error, Operation};

/// The most of an error body read (and of a manifest: 4 MiB, containerd's limit).
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;
pub(crate) const MAX_MANIFEST: usize = 4 << 20;

/// `{"errors":[{"code":..,"message":..}]}` → (first code, "message (CODE); ...").
/// Anything else: the body's first line, or the status' reason.
pub(crate) fn registry_message(status: u16, body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
        // Token servers answer {"details": "..."}.
        #[serde(default)]
        details: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    if let Ok(parsed) = serde_json::from_slice::<Body>(body) {
        let code = parsed.errors.iter().find_map(|e| e.code.clone());
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| match (&e.message, &e.code) {
                (Some(m), Some(c)) if !m.is_empty() => format!("{m} ({c})"),
                (Some(m), None) => m.clone(),
                (_, Some(c)) => c.clone(),
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return (code, parts.join("; "));
        }
        if let Some(details) = parsed.details.filter(|d| !d.is_empty()) {
            return (None, details);
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let message = match line {
        Some(l) if l.len() > 200 => format!("{}…", &l[..l.floor_char_boundary(200)]),
        Some(l) => l.to_string(),
        None => reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_lowercase(),
    };
    (None, message)
}

/// The failure for an unexpected status: retryable for 5xx/408/429 (with
/// `Retry-After`), final for the rest. Reads the error body (bounded, under
/// the idle timeout).
pub(crate) async fn status_failure(
    operation: &Operation,
    response: reqwest::Response,
    idle: Duration,
) -> Failure {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = read_limited(response, MAX_ERROR_BODY, idle)
        .await
        .unwrap_or_default();
    let (code, message) = registry_message(status, &body);
    let error = if status == 401 {
        Error::Unauthorized {
            operation: operation.clone(),
            status,
            message,
        }
    } else {
        Error::Status {
            operation: operation.clone(),
            status,
            code,
            message,
        }
    };
    Failure {
        error,
        retry: is_retryable_status(status),
        retry_after,
    }
}

/// Reads at most `limit` bytes of a body, each chunk under the idle timeout.
/// `None` when the body is longer than `limit` or the read failed.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    idle: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > limit {
                    return None;
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Some(out),
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// A body read in full, each chunk under the idle timeout.
pub(crate) async fn read_body(
    operation: &Operation,
    mut response: reqwest::Response,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > limit {
                    return Err(Failure::fatal(Error::Protocol {
                        operation: operation.clone(),
                        message: format!("body larger than {limit} bytes"),
                    }));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(out),
            Ok(Err(e)) => return Err(transport_failure(operation, &e)),
            Err(_) => return Err(stalled(operation, idle)),
        }
    }
}

pub(crate) fn stalled(operation: &Operation, idle: Duration) -> Failure {
    Failure::transient(Error::Stalled {
        operation: operation.clone(),
        idle,
    })
}

/// A transport error as a failure: retryable, except certificate problems,
/// which no retry fixes.
pub(crate) fn transport_failure(operation: &Operation, error: &reqwest::Error) -> Failure {
    let mut reason = error_chain(error);
    let lower = reason.to_ascii_lowercase();
    // A certificate the client refuses, or a TLS alert from the server (it
    // refused ours): no retry changes either.
    let certificate = lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("fatal alert");
    // rustls' answer to a peer that is not speaking TLS at all.
    let not_tls = reason.contains("corrupt message");
    if not_tls {
        reason.push_str(
            " (the registry does not speak TLS; for plain HTTP declare it an insecure registry)",
        );
    }
    let fatal = certificate || not_tls || error.is_builder() || error.is_redirect();
    let error = Error::Transport {
        operation: operation.clone(),
        reason,
    };
    if fatal {
        Failure::fatal(error)
    } else {
        Failure::transient(error)
    }
}

/// The causes of a reqwest error, innermost last, without the URL (the
/// operation already names what was asked) and without repeats.
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let top = error.without_url_ref();
    parts.push(top);
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(url) => text
                .replace(&format!(" for url ({url})"), "")
                .replace(&format!(" ({url})"), ""),
            None => text,
        }
    }
}

/// `Content-Range: bytes <start>-<end>/<total|*>` → (start, end, total).
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// The bytes a registry holds of an upload, from its `Range: 0-<last>`
/// header (some send `bytes=0-<last>`). Distribution answers `0-0` both for
/// nothing and for one byte; nothing is the safe reading, as re-sending a
/// byte the registry has fails its digest check rather than corrupting.
pub(crate) fn parse_upload_range(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(reqwest::header::RANGE)?.to_str().ok()?.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

/// When a request last moved a byte: the idle timeout's clock.
#[derive(Clone)]
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Runs `fut` until it finishes, or until `activity` has not been touched for
/// `idle` (then `Err(())`; dropping `fut` aborts the request).
pub(crate) async fn idle_watch<F: Future>(
    fut: F,
    activity: &Activity,
    idle: Duration,
) -> Result<F::Output, ()> {
    activity.touch();
    tokio::pin!(fut);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.last() + idle <= Instant::now() {
                    return Err(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            registry_message(404, body),
            (
                Some("MANIFEST_UNKNOWN".to_string()),
                "manifest unknown (MANIFEST_UNKNOWN)".to_string()
            )
        );
        assert_eq!(
            registry_message(401, br#"{"details":"incorrect username or password"}"#).1,
            "incorrect username or password"
        );
        assert_eq!(
            registry_message(502, b"\n<html>bad gateway</html>\n").1,
            "<html>bad gateway</html>"
        );
        assert_eq!(registry_message(404, b"").1, "not found");
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("items 0-9/10"), None);
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("0-0", Some(0)),
            ("0-999", Some(1000)),
            ("bytes=0-9", Some(10)),
            ("5-9", None),
            ("x", None),
        ] {
            h.insert(reqwest::header::RANGE, v.parse().unwrap());
            assert_eq!(parse_upload_range(&h), want, "{v}");
        }
    }

    #[tokio::test]
    async fn idle_watch_fires_only_without_activity() {
        let activity = Activity::new();
        let idle = Duration::from_millis(500);
        // Touched every 50 ms for 1 s: never idle.
        let busy = {
            let activity = activity.clone();
            async move {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    activity.touch();
                }
                7
            }
        };
        assert_eq!(idle_watch(busy, &activity, idle).await, Ok(7));
        let quiet = tokio::time::sleep(Duration::from_secs(30));
        assert_eq!(idle_watch(quiet, &activity, idle).await, Err(()));
    }
}
