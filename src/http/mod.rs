//! The shared HTTP layer of every vendor source: one reqwest client per source with
//! authentication, retries with backoff and `Retry-After`, a request budget, and capped
//! response bodies. Sources only build URLs and parse bodies.

pub mod auth;
pub mod budget;
pub mod origin;
pub mod retry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use self::auth::{Auth, AuthError};
use self::budget::RequestBudget;
use self::retry::{retryable_status, server_wait, Backoff};

/// Knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Timeout of one request (connect + response).
    pub timeout: Duration,
    /// Attempts per request before the poll gives up (it retries next interval).
    pub max_attempts: u32,
    /// First retry wait.
    pub backoff_min: Duration,
    /// Longest retry wait.
    pub backoff_max: Duration,
    /// Longest server-requested wait (`Retry-After`) honoured within one poll; a longer one
    /// ends the poll and holds the source's requests back until it is over.
    pub max_retry_after: Duration,
    /// Longest wait any vendor header may impose at all (config `max_retry_wait`): longer or
    /// unreadably large values are clamped to it, with a warning.
    pub max_retry_wait: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(60),
            max_attempts: 6,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            max_retry_wait: Duration::from_secs(15 * 60),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (at most `max_response_bytes`).
    pub body: Vec<u8>,
    /// Requests sent to get it (1 + retries).
    pub attempts: u32,
}

impl HttpResponse {
    /// The body as JSON, or an error naming the request and what is wrong with the body.
    pub fn json(&self, what: &str) -> Result<Value, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::BadBody {
            request: what.to_string(),
            reason: format!(
                "malformed JSON ({e}); body starts {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(120)])
            ),
        })
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The vendor answered with an error status that is not retried (or retries ran out).
    #[error("{request}: HTTP {status}{}", vendor_suffix(.message))]
    Status {
        /// Method and URL.
        request: String,
        /// The status.
        status: u16,
        /// The vendor's error message, if the body had one.
        message: Option<String>,
    },
    /// The vendor could not be reached (after retries).
    #[error("{request}: {reason}")]
    Transport {
        /// Method and URL.
        request: String,
        /// What failed.
        reason: String,
    },
    /// The vendor asked us to wait longer than `max_retry_after`.
    #[error("{request}: rate limited; the server asks to wait {wait_secs} s, more than this poll waits — retrying next interval")]
    RateLimited {
        /// Method and URL.
        request: String,
        /// The requested wait.
        wait_secs: u64,
    },
    /// The body is unusable (malformed, too large, unexpected shape).
    #[error("{request}: {reason}")]
    BadBody {
        /// Method and URL.
        request: String,
        /// What is wrong.
        reason: String,
    },
    /// The vendor redirected to another origin (not followed; no credential sent there).
    #[error("{request}: {refused}")]
    Redirect {
        /// Method and URL.
        request: String,
        /// Where it redirected to.
        refused: origin::RedirectRefused,
    },
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

fn vendor_suffix(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// Extracts a vendor's error message from an error body: ServiceNow
/// `{"error":{"message","detail"}}`, Concur `{"Error":{"Message"}}`, OAuth
/// `{"error","error_description"}`, `{"message"}`, or the start of a text body.
pub fn vendor_error_message(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let s = |v: &Value| v.as_str().map(str::to_string);
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            let msg = e.get("message").and_then(s).unwrap_or_default();
            return Some(
                match e.get("detail").and_then(s).filter(|d| !d.is_empty()) {
                    Some(detail) => format!("{msg} ({detail})"),
                    None => msg,
                },
            );
        }
        if let Some(m) = v.pointer("/Error/Message").and_then(s) {
            return Some(m);
        }
        if let Some(e) = v.get("error").and_then(s) {
            return Some(match v.get("error_description").and_then(s) {
                Some(d) => format!("{e}: {d}"),
                None => e,
            });
        }
        if let Some(m) = v.get("message").and_then(s) {
            return Some(m);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    Some(text.chars().take(200).collect())
}

/// Counters of one client, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Response body bytes received.
    pub bytes: AtomicU64,
    /// Retries after a retryable failure.
    pub retries: AtomicU64,
    /// Waits imposed by the server (429/503 with Retry-After, rate-limit reset).
    pub rate_limit_waits: AtomicU64,
}

/// The HTTP client of one source.
pub struct HttpClient {
    client: reqwest::Client,
    source: String,
    auth: Auth,
    budget: Option<Arc<dyn RequestBudget>>,
    options: HttpOptions,
    /// No request is sent before this instant (a server's Retry-After outlives one request).
    not_before: Mutex<Option<Instant>>,
    /// Counters.
    pub stats: Arc<HttpStats>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A reqwest client with pollbus's user agent and timeout, following redirects as `redirects`
/// says (see [`origin`]) and never sending a `Referer`.
pub fn reqwest_client(timeout: Duration, redirects: reqwest::redirect::Policy) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("pollbus/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(15)))
        .redirect(redirects)
        .referer(false)
        .build()
        .expect("reqwest client builds")
}

impl HttpClient {
    /// A client for `source` with `auth` and an optional request budget.
    pub fn new(
        source: &str,
        auth: Auth,
        budget: Option<Arc<dyn RequestBudget>>,
        options: HttpOptions,
    ) -> Self {
        HttpClient {
            client: reqwest_client(options.timeout, origin::same_origin_redirects()),
            source: source.to_string(),
            auth,
            budget,
            options,
            not_before: Mutex::new(None),
            stats: Arc::new(HttpStats::default()),
            metrics: None,
        }
    }

    /// Counts requests by status and rate-limit waits in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    fn count(&self, status: u16) {
        if let Some(m) = &self.metrics {
            m.http_requests
                .with_label_values(&[&self.source, &status.to_string()])
                .inc();
        }
    }

    /// The source this client belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How this client authenticates (e.g. to read an OAuth 2.0 token's geolocation).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// GET `url` with authentication, retries and the budget.
    pub async fn get(&self, url: &url::Url) -> Result<HttpResponse, HttpError> {
        self.send(Method::GET, url, &[]).await
    }

    /// Sends a request; `headers` are added to every attempt. 2xx → the response; retryable
    /// failures are retried; other statuses are errors carrying the vendor's message.
    pub async fn send(
        &self,
        method: Method,
        url: &url::Url,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, HttpError> {
        let request = format!("{method} {url}");
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        let mut refreshed = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.wait_not_before().await;
            if let Some(budget) = &self.budget {
                budget.take().await;
            }
            let mut builder: RequestBuilder = self.client.request(method.clone(), url.clone());
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            builder = self.auth.apply(builder).await?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = builder.send().await;
            let (retry_reason, server) = match outcome {
                Err(e) if e.is_redirect() => {
                    self.count(0);
                    if let Some(refused) = origin::refused_redirect(&e) {
                        return Err(HttpError::Redirect {
                            request,
                            refused: origin::RedirectRefused {
                                location: refused.location.clone(),
                                origin: refused.origin.clone(),
                            },
                        });
                    }
                    return Err(HttpError::Transport {
                        request,
                        reason: transport_reason(&e),
                    });
                }
                Err(e) => {
                    self.count(0);
                    (format!("request failed: {}", transport_reason(&e)), None)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.count(status);
                    let headers = resp.headers().clone();
                    let body = self.read_body(resp, &request).await?;
                    if (200..300).contains(&status) {
                        return Ok(HttpResponse {
                            status,
                            headers,
                            body,
                            attempts,
                        });
                    }
                    if status == 401 && self.auth.refreshable() && !refreshed {
                        refreshed = true;
                        tracing::info!(source = %self.source, "HTTP 401; refreshing the access token once");
                        self.auth.invalidate().await;
                        continue;
                    }
                    let message = vendor_error_message(&body);
                    if !retryable_status(status) || attempts >= self.options.max_attempts {
                        return Err(HttpError::Status {
                            request,
                            status,
                            message,
                        });
                    }
                    let server = self.server_wait(&headers, &request);
                    (format!("HTTP {status}{}", vendor_suffix(&message)), server)
                }
            };
            if attempts >= self.options.max_attempts {
                return Err(HttpError::Transport {
                    request,
                    reason: format!("{retry_reason} (gave up after {attempts} attempts)"),
                });
            }
            if let Some(wait) = server {
                self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.rate_limit_waits.with_label_values(&[&self.source]).inc();
                }
                if wait
                    > self
                        .options
                        .max_retry_after
                        .min(self.options.max_retry_wait)
                {
                    self.set_not_before(wait).await;
                    return Err(HttpError::RateLimited {
                        request,
                        wait_secs: wait.as_secs(),
                    });
                }
            }
            let wait = backoff.next_wait(server);
            if server.is_some() {
                self.set_not_before(wait).await;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                source = %self.source,
                %request,
                reason = %retry_reason,
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait a response's headers ask for, clamped to `max_retry_wait` with a warning
    /// naming the header and its value.
    fn server_wait(&self, headers: &HeaderMap, request: &str) -> Option<Duration> {
        let w = server_wait(headers, SystemTime::now(), self.options.max_retry_wait)?;
        if w.clamped {
            tracing::warn!(
                source = %self.source,
                %request,
                header = w.header,
                value = %w.value,
                max_retry_wait_s = self.options.max_retry_wait.as_secs(),
                "the vendor asks for a longer wait than max_retry_wait (or an unreadable one); waiting max_retry_wait"
            );
        }
        Some(w.wait)
    }

    async fn wait_not_before(&self) {
        let until = *self.not_before.lock().await;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    async fn set_not_before(&self, wait: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(wait.min(self.options.max_retry_wait))
            .unwrap_or(now);
        let mut nb = self.not_before.lock().await;
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        request: &str,
    ) -> Result<Vec<u8>, HttpError> {
        let max = self.options.max_response_bytes;
        if resp.content_length().is_some_and(|n| n as usize > max) {
            return Err(HttpError::BadBody {
                request: request.to_string(),
                reason: format!(
                    "response body of {} bytes exceeds the {max} byte limit",
                    resp.content_length().unwrap_or_default()
                ),
            });
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max {
                        return Err(HttpError::BadBody {
                            request: request.to_string(),
                            reason: format!("response body exceeds the {max} byte limit"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(HttpError::Transport {
                        request: request.to_string(),
                        reason: format!("reading the body failed: {}", transport_reason(&e)),
                    })
                }
            }
        }
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(body)
    }
}

/// A transport error's cause chain without URLs (they are named by the caller).
fn transport_reason(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    if e.is_timeout() {
        parts.push("timed out".to_string());
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        let text = e.to_string();
        // reqwest appends " for url (…)"; the caller names the request already.
        parts.push(text.split(" for url (").next().unwrap_or(&text).to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages_are_extracted() {
        let sn = br#"{"error":{"message":"No Record found","detail":"Record doesn't exist"},"status":"failure"}"#;
        assert_eq!(
            vendor_error_message(sn).unwrap(),
            "No Record found (Record doesn't exist)"
        );
        let concur = br#"{"Error":{"Message":"Unauthorized","Server-Time":"x","Id":"1"}}"#;
        assert_eq!(vendor_error_message(concur).unwrap(), "Unauthorized");
        let oauth = br#"{"error":"server_error","error_description":"access_denied"}"#;
        assert_eq!(
            vendor_error_message(oauth).unwrap(),
            "server_error: access_denied"
        );
        assert_eq!(
            vendor_error_message(b"<html>Bad gateway</html>").unwrap(),
            "<html>Bad gateway</html>"
        );
        assert_eq!(vendor_error_message(b""), None);
    }
}
