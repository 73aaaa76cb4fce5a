//! Retries: which failures may pass, exponential backoff with full jitter,
//! `Retry-After`, and the event that reports each retry.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::{Error, Event, EventHandler, Operation, RetryPolicy};

/// A failed attempt, and whether another one may succeed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) retry: bool,
    /// The registry's `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }

    pub(crate) fn transient(error: Error) -> Failure {
        Failure {
            error,
            retry: true,
            retry_after: None,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::fatal(error)
    }
}

/// Statuses worth another attempt: the registry or a proxy in front of it
/// is overloaded or restarting.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status) && status != 501
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>` (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The retry state of one operation.
pub(crate) struct Retrier<'a> {
    operation: &'a Operation,
    policy: RetryPolicy,
    events: Option<&'a EventHandler>,
    /// Failed attempts in a row.
    failures: u32,
    /// Failed attempts in all.
    total: u32,
}

impl<'a> Retrier<'a> {
    pub(crate) fn new(
        operation: &'a Operation,
        policy: RetryPolicy,
        events: Option<&'a EventHandler>,
    ) -> Retrier<'a> {
        Retrier {
            operation,
            policy,
            events,
            failures: 0,
            total: 0,
        }
    }

    /// The transfer moved forward: the next failure counts as the first.
    pub(crate) fn progressed(&mut self) {
        self.failures = 0;
    }

    /// After a failed attempt: the error if it is final or retries ran out,
    /// else waits the backoff delay (reporting it) and returns.
    pub(crate) async fn failed(&mut self, failure: Failure) -> Result<(), Error> {
        self.failures += 1;
        self.total += 1;
        if !failure.retry {
            return Err(failure.error);
        }
        if self.failures >= self.policy.max_attempts.max(1) {
            return Err(Error::GaveUp {
                operation: self.operation.clone(),
                attempts: self.total,
                last: Box::new(failure.error),
            });
        }
        let delay = match failure.retry_after {
            Some(after) => after.min(self.policy.max_retry_after),
            None => backoff(&self.policy, self.failures, &mut rand::rng()),
        };
        if let Some(events) = self.events {
            events(&Event::Retry {
                operation: self.operation.clone(),
                attempt: self.failures,
                delay,
                reason: failure.error.to_string(),
            });
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Full jitter: uniform in `0..=min(max, initial * 2^(failures-1))`.
fn backoff(policy: &RetryPolicy, failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = policy
        .initial_delay
        .saturating_mul(1u32 << (failures.saturating_sub(1)).min(20));
    let cap = exp.min(policy.max_delay);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        let mut rng = rand::rng();
        for failures in 1..40 {
            let cap = (Duration::from_millis(100) * 2u32.pow((failures - 1).min(20)))
                .min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(backoff(&policy, failures, &mut rng) <= cap);
            }
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 416, 501] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }
}
