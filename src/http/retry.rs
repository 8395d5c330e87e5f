//! Which HTTP failures are worth retrying, and how long to wait.
//!
//! Retry 408, 429 and 5xx and connection errors; never other 4xx. Waits grow exponentially with
//! jitter between `backoff_min` and `backoff_max` (via `backon`); a server's `Retry-After`
//! (seconds or an HTTP date) or `X-RateLimit-Reset` (unix seconds) is honoured as a lower bound —
//! no request is sent before it — up to `max_retry_after`, beyond which the poll gives up and
//! the next interval tries again.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;

/// Whether a response status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// How long the server asked us to wait, from `Retry-After` (delta seconds or HTTP date) or
/// `X-RateLimit-Reset` (unix seconds), relative to `now`.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(value) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    let reset = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The retry schedule of one request.
pub struct Backoff {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    max: Duration,
}

impl Backoff {
    /// Capped exponential backoff with jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        let delays = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build();
        Backoff {
            delays: Box::new(delays),
            max,
        }
    }

    /// The next wait: the backoff delay, raised to the server's requested wait if longer.
    pub fn next_wait(&mut self, server: Option<Duration>) -> Duration {
        // backon's jitter may add up to one more delay; the cap is the cap.
        let delay = self.delays.next().unwrap_or(self.max).min(self.max);
        match server {
            Some(server) => server.max(delay.min(server + Duration::from_millis(250))),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_date_and_rate_limit_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(server_wait(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        assert_eq!(server_wait(&h, now), Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1700000042"));
        assert_eq!(server_wait(&h, now), Some(Duration::from_secs(42)));
        assert_eq!(server_wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn server_wait_is_a_lower_bound_and_backoff_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..20 {
            assert!(b.next_wait(None) <= Duration::from_secs(2));
        }
        let w = b.next_wait(Some(Duration::from_secs(5)));
        assert!(
            w >= Duration::from_secs(5) && w <= Duration::from_millis(5250),
            "{w:?}"
        );
    }
}
