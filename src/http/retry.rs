//! Which HTTP failures are worth retrying, and how long to wait.
//!
//! Retry 408, 429 and 5xx and connection errors; never other 4xx. Waits grow exponentially with
//! jitter between `backoff_min` and `backoff_max` (via `backon`); a server's `Retry-After`
//! (seconds or an HTTP date) or `X-RateLimit-Reset` (unix seconds) is honoured as a lower bound —
//! no request is sent before it — up to `max_retry_after`, beyond which the poll gives up and
//! the next interval tries again. Every server-requested wait is first clamped to
//! `max_retry_wait` (config, default 15 min), so no vendor answer silences a source longer.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;

/// Whether a response status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// A wait requested by the server, already clamped to the longest wait pollbus accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerWait {
    /// How long to wait (at most the `max` given to [`server_wait`]).
    pub wait: Duration,
    /// The header that asked for it (`retry-after` or `x-ratelimit-reset`).
    pub header: &'static str,
    /// The header's value as received (at most 64 characters), for the warning.
    pub value: String,
    /// Whether the requested wait was longer than `max` (or unreadable as a number of any
    /// size) and was cut to `max`.
    pub clamped: bool,
}

/// How long the server asked us to wait, from `Retry-After` (delta seconds or HTTP date) or
/// `X-RateLimit-Reset` (unix seconds), relative to `now` and clamped to `max`.
///
/// Vendor values never panic: seconds beyond `u64`, exponents (`1e13`), fractions, negative
/// numbers and dates beyond what `SystemTime` holds are read with checked arithmetic; a wait
/// in the past is zero, one beyond `max` is `max` (`clamped`), and an unreadable value is no
/// wait at all.
pub fn server_wait(headers: &HeaderMap, now: SystemTime, max: Duration) -> Option<ServerWait> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    };
    let found = text("retry-after")
        .and_then(|v| retry_after(&v, now).map(|w| ("retry-after", v, w)))
        .or_else(|| {
            text("x-ratelimit-reset")
                .and_then(|v| rate_limit_reset(&v, now).map(|w| ("x-ratelimit-reset", v, w)))
        });
    let (header, value, requested) = found?;
    let clamped = requested.is_none_or(|w| w > max);
    Some(ServerWait {
        wait: requested.unwrap_or(max).min(max),
        header,
        value: value.chars().take(64).collect(),
        clamped,
    })
}

/// `Retry-After`: `Some(None)` when the value is a number too large for a `Duration`.
#[allow(clippy::option_option)]
fn retry_after(value: &str, now: SystemTime) -> Option<Option<Duration>> {
    if let Some(secs) = seconds(value) {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(Some(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// `X-RateLimit-Reset` (unix seconds): `Some(None)` when the instant is beyond `SystemTime`.
#[allow(clippy::option_option)]
fn rate_limit_reset(value: &str, now: SystemTime) -> Option<Option<Duration>> {
    let secs = seconds(value)?;
    Some(
        secs.and_then(|s| SystemTime::UNIX_EPOCH.checked_add(s))
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
    )
}

/// A number of seconds (integer, fraction or exponent): negative → zero, beyond a
/// `Duration` (infinity included) → `Some(None)`, not a number → `None`.
#[allow(clippy::option_option)]
fn seconds(value: &str) -> Option<Option<Duration>> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Some(Duration::from_secs(secs)));
    }
    let secs = value.parse::<f64>().ok().filter(|s| !s.is_nan())?;
    if secs <= 0.0 {
        return Some(Some(Duration::ZERO));
    }
    Some(Duration::try_from_secs_f64(secs).ok())
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
            Some(server) => {
                server.max(delay.min(server.saturating_add(Duration::from_millis(250))))
            }
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

    const MAX: Duration = Duration::from_secs(900);

    fn wait(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
        server_wait(h, now, MAX).map(|w| w.wait)
    }

    #[test]
    fn retry_after_seconds_date_and_rate_limit_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(wait(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        assert_eq!(wait(&h, now), Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1700000042"));
        assert_eq!(wait(&h, now), Some(Duration::from_secs(42)));
        assert_eq!(wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn hostile_waits_are_clamped_not_panics() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (header, value, expected, clamped) in [
            ("retry-after", "18446744073709551615", MAX, true),
            ("retry-after", "99999999999", MAX, true),
            ("retry-after", "1e13", MAX, true),
            ("retry-after", "1e400", MAX, true),
            ("retry-after", "inf", MAX, true),
            ("retry-after", "184467440737095516160000", MAX, true),
            ("retry-after", "-5", Duration::ZERO, false),
            ("retry-after", "1.5", Duration::from_millis(1500), false),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT", MAX, true),
            (
                "retry-after",
                "Thu, 01 Jan 1970 00:00:00 GMT",
                Duration::ZERO,
                false,
            ),
            ("x-ratelimit-reset", "18446744073709551615", MAX, true),
            ("x-ratelimit-reset", "-1", Duration::ZERO, false),
            ("x-ratelimit-reset", "1e300", MAX, true),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header, HeaderValue::from_static(value));
            let w = server_wait(&h, now, MAX).unwrap_or_else(|| panic!("{header}: {value}"));
            assert_eq!(
                (w.wait, w.clamped),
                (expected, clamped),
                "{header}: {value}"
            );
            assert_eq!((w.header, w.value.as_str()), (header, value));
        }
        for garbage in ["soon", "NaN", "", "1,5"] {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static(garbage));
            assert_eq!(wait(&h, now), None, "{garbage:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_header_value_panics(
            retry in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            text in "[-+0-9.eE ]{0,30}|[A-Za-z0-9:, ]{0,40}",
            now in proptest::num::u64::ANY,
            max in proptest::num::u64::ANY,
        ) {
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now % (1 << 40))).unwrap();
            let max = Duration::from_secs(max);
            for value in [HeaderValue::from_bytes(&retry), HeaderValue::from_str(&text)].into_iter().flatten() {
                for header in ["retry-after", "x-ratelimit-reset"] {
                    let mut h = HeaderMap::new();
                    h.insert(header, value.clone());
                    if let Some(w) = server_wait(&h, now, max) {
                        proptest::prop_assert!(w.wait <= max);
                        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(1));
                        proptest::prop_assert!(b.next_wait(Some(w.wait)) >= w.wait);
                    }
                }
            }
        }
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
