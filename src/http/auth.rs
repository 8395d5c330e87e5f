//! Vendor authentication: basic, bearer, custom header, and OAuth 2.0 with refresh.
//!
//! OAuth 2.0 tokens (access token, expiry, the current refresh token and the vendor's
//! `geolocation`) are kept in a [`TokenCache`] (the state store implements it) under
//! `oauth/<source>`, so a restart does not log
//! in again and a rotated refresh token (SAP Concur returns a new one on every refresh) replaces
//! the old one atomically. A token is refreshed a minute before it expires and once on a 401. A
//! refresh token configured anew by the operator (its fingerprint differs from the one the
//! stored token came from) wins over the stored one. A failed login makes the source wait with
//! capped exponential backoff before it asks the token endpoint again.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use reqwest::RequestBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{OAuthGrant, Secret};

/// Where OAuth tokens persist between runs: named opaque texts, replaced atomically. The state
/// store implements it (`store::StoreTokenCache`), the way it implements
/// [`RequestBudget`](super::budget::RequestBudget), so `http` does not depend on the store.
#[async_trait::async_trait]
pub trait TokenCache: Send + Sync {
    /// The token stored under `name`, if any.
    async fn token(&self, name: &str) -> Result<Option<String>, TokenCacheError>;

    /// Stores `value` under `name`, replacing the previous one atomically.
    async fn put_token(&self, name: &str, value: &str) -> Result<(), TokenCacheError>;

    /// Claims the refresh of token `name` for `holder` for `ttl`: `true` when nobody else holds
    /// an unexpired claim. A cache shared by several processes must make this exclusive
    /// (rotating refresh tokens: one refresh at a time); the default, for a cache no one else
    /// shares, always grants.
    async fn claim_refresh(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, TokenCacheError> {
        Ok(true)
    }

    /// Ends `holder`'s claim on refreshing `name`.
    async fn release_refresh(&self, _name: &str, _holder: &str) -> Result<(), TokenCacheError> {
        Ok(())
    }

    /// Whether tokens obtained here are kept for the next user of the stored refresh token.
    /// `false` for a cache that forgets them (a dry run): spending a refresh token there would
    /// rotate it away from the running pollbus (vendors that rotate refresh tokens invalidate
    /// the old one, or revoke the whole grant when it is presented again), so it is not spent.
    fn keeps_tokens(&self) -> bool {
        true
    }
}

/// A [`TokenCache`] failure, with the backend's message (never the token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenCacheError(pub String);

use super::origin::HostPolicy;

/// Why authentication failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the grant.
    #[error("token endpoint {url} refused the {grant} grant (HTTP {status}: {message}){hint}")]
    Rejected {
        /// The token endpoint.
        url: String,
        /// The grant used.
        grant: &'static str,
        /// HTTP status.
        status: u16,
        /// The vendor's message.
        message: String,
        /// What the operator should do.
        hint: String,
    },
    /// The token endpoint could not be reached or answered nonsense.
    #[error("token endpoint {url}: {reason}")]
    Unavailable {
        /// The token endpoint.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The token response named a base URL (`geolocation`) the host policy refuses.
    #[error("token endpoint {url} names the geolocation {geolocation:?}, which is refused: {reason}; the tokens are kept but not sent there — if it is right, add it to the source's concur.allowed_hosts")]
    Geolocation {
        /// The token endpoint.
        url: String,
        /// The refused geolocation.
        geolocation: String,
        /// Why it is refused.
        reason: String,
    },
    /// A cache that forgets tokens (a dry run) would have to spend a refresh token.
    #[error("a dry run needs a new OAuth access token (none is stored, or it expired) and would have to spend the refresh token to get it, which the vendor may rotate away from the running pollbus; run without --dry-run first (a poll stores a fresh token), then dry-run while it is valid")]
    WouldSpendRefreshToken,
    /// A recent login failed; the source waits before trying again.
    #[error("waiting {wait_secs} s before the next login attempt after: {last}")]
    Backoff {
        /// Seconds left to wait.
        wait_secs: u64,
        /// The last failure.
        last: String,
    },
    /// The state store failed.
    #[error("cannot {what} the OAuth token in the state store: {reason}")]
    Store {
        /// Read or write.
        what: &'static str,
        /// The store's error.
        reason: String,
    },
}

impl AuthError {
    /// Whether the vendor refused the refresh token for good (`invalid_grant`): only an
    /// operator re-authorizing can fix it.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, AuthError::Rejected { grant: "refresh_token", message, .. } if message.contains("invalid_grant"))
    }
}

/// How requests of a source are authenticated.
#[derive(Clone, Default)]
pub enum Auth {
    /// Nothing.
    #[default]
    None,
    /// HTTP basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// A custom header.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret,
    },
    /// OAuth 2.0 with refresh.
    OAuth2(Arc<OAuth2>),
}

impl Auth {
    /// Adds credentials to a request.
    pub async fn apply(&self, builder: RequestBuilder) -> Result<RequestBuilder, AuthError> {
        Ok(match self {
            Auth::None => builder,
            Auth::Basic { username, password } => {
                builder.basic_auth(username, Some(password.expose()))
            }
            Auth::Bearer(token) => builder.bearer_auth(token.expose()),
            Auth::Header { name, value } => builder.header(name.as_str(), value.expose()),
            Auth::OAuth2(oauth) => builder.bearer_auth(oauth.access_token().await?),
        })
    }

    /// Whether a 401 is worth one token refresh.
    pub fn refreshable(&self) -> bool {
        matches!(self, Auth::OAuth2(_))
    }

    /// Forgets the current access token (after a 401).
    pub async fn invalidate(&self) {
        if let Auth::OAuth2(oauth) = self {
            oauth.invalidate().await;
        }
    }
}

/// OAuth 2.0 client settings.
#[derive(Clone)]
pub struct OAuth2Config {
    /// Token endpoint.
    pub token_url: url::Url,
    /// Grant type.
    pub grant: OAuthGrant,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// User name (password grant).
    pub username: Option<String>,
    /// Password (password grant).
    pub password: Option<Secret>,
    /// Refresh token as configured (refresh-token grant).
    pub refresh_token: Option<Secret>,
    /// Ask the token endpoint at the vendor's `geolocation` once one is known (SAP Concur: the
    /// same path as `token_url`, on the company's base URL).
    pub follow_geolocation: bool,
    /// Where a `geolocation` named by a token response may point (SAP Concur); `None` ignores
    /// the field. A refused one is neither used nor stored.
    pub geolocation_hosts: Option<HostPolicy>,
}

/// A token as stored in the state store. Never printed.
#[derive(Clone, Serialize, Deserialize)]
struct Token {
    access_token: String,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Fingerprint of the configured refresh token this token descends from.
    #[serde(default)]
    configured: Option<String>,
    /// SAP Concur's base URL for this company (only one the host policy allows).
    #[serde(default)]
    geolocation: Option<String>,
    /// A geolocation the vendor named but the host policy refused (kept in memory only, to
    /// fail the source's requests naming it).
    #[serde(skip)]
    refused_geolocation: Option<String>,
}

struct Failure {
    until: Instant,
    /// The waits after the next failures ([`login_backoff`]).
    waits: Box<dyn Iterator<Item = Duration> + Send>,
    last: String,
}

/// An OAuth 2.0 token manager for one source.
pub struct OAuth2 {
    config: OAuth2Config,
    store: Arc<dyn TokenCache>,
    token_name: String,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    token: Mutex<Option<Token>>,
    failure: Mutex<Option<Failure>>,
    /// Counts successful token requests (metrics).
    pub refreshes: std::sync::atomic::AtomicU64,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    source: String,
    /// This process's name when it claims a refresh in the token cache.
    holder: String,
    /// How long a refresh claim lasts unless released (a claimer that died mid-refresh).
    claim_ttl: std::time::Duration,
}

fn grant_name(grant: OAuthGrant) -> &'static str {
    match grant {
        OAuthGrant::RefreshToken => "refresh_token",
        OAuthGrant::Password => "password",
        OAuthGrant::ClientCredentials => "client_credentials",
    }
}

fn fingerprint(secret: &Secret) -> String {
    hex::encode(&Sha256::digest(secret.expose().as_bytes())[..8])
}

/// The longest token lifetime believed: a token response claiming more is refreshed after
/// this anyway (a refresh costs one request; a wrong, huge `expires_in` would otherwise keep a
/// revoked token forever, or overflow the clock).
const MAX_TOKEN_LIFETIME_S: i64 = 24 * 3600;

/// The lifetime assumed when a token response names none (or an unusable one).
const DEFAULT_TOKEN_LIFETIME_S: i64 = 1800;

/// A token response's `expires_in`, read without trusting it.
#[derive(Debug, PartialEq)]
struct Lifetime {
    /// Seconds to use, within 0..=`MAX_TOKEN_LIFETIME_S`.
    seconds: i64,
    /// The value as received, when it was not used as is (for the warning).
    odd: Option<String>,
}

/// Reads `expires_in` (a number or a string holding one): integers and fractions within
/// 0..=24 h are used; larger values are cut to 24 h; negative, non-numeric or non-finite
/// values fall back to 30 min; absent means 30 min. Never panics, whatever the vendor sends.
fn token_lifetime(value: Option<&Value>) -> Lifetime {
    let number = match value {
        None | Some(Value::Null) => {
            return Lifetime {
                seconds: DEFAULT_TOKEN_LIFETIME_S,
                odd: None,
            }
        }
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let shown = || {
        let text = value.map(Value::to_string).unwrap_or_default();
        Some(text.chars().take(64).collect())
    };
    match number {
        Some(n) if n.is_finite() && (0.0..=MAX_TOKEN_LIFETIME_S as f64).contains(&n) => Lifetime {
            seconds: n as i64,
            odd: None,
        },
        Some(n) if n > MAX_TOKEN_LIFETIME_S as f64 => Lifetime {
            seconds: MAX_TOKEN_LIFETIME_S,
            odd: shown(),
        },
        _ => Lifetime {
            seconds: DEFAULT_TOKEN_LIFETIME_S,
            odd: shown(),
        },
    }
}

/// The most a token endpoint's response may hold: a token response is a few kilobytes; more
/// is refused rather than buffered (a hostile or broken endpoint cannot exhaust memory).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Refresh this long before the access token expires.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// After the vendor refused a refresh token (`invalid_grant`), the source stops asking for this
/// long — in practice until an operator re-authorizes and restarts pollbus (a configured
/// refresh token that differs from the one the stored token came from wins at start).
const STOP_AFTER_INVALID_GRANT: Duration = Duration::from_secs(24 * 3600);

/// The longest wait between two failed logins.
const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Waits after consecutive failed logins: 5 s, 10 s, 20 s … up to ten minutes, without jitter.
fn login_backoff() -> Box<dyn Iterator<Item = Duration> + Send> {
    Box::new(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(5))
            .with_max_delay(LOGIN_BACKOFF_MAX)
            .without_max_times()
            .build(),
    )
}

impl OAuth2 {
    /// A token manager keeping its tokens in `store` under `oauth/<source>`.
    pub fn new(
        source: &str,
        config: OAuth2Config,
        store: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
        timeout: Duration,
    ) -> Self {
        OAuth2 {
            config,
            store,
            token_name: format!("oauth/{source}"),
            clock,
            client: super::reqwest_client(timeout, reqwest::redirect::Policy::none()),
            token: Mutex::new(None),
            failure: Mutex::new(None),
            refreshes: std::sync::atomic::AtomicU64::new(0),
            metrics: None,
            source: source.to_string(),
            holder: format!("{:016x}", rand::random::<u64>()),
            // Two token requests with their timeouts, plus a margin.
            claim_ttl: timeout.saturating_mul(2) + std::time::Duration::from_secs(10),
        }
    }

    /// Counts token refreshes in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The base URL the vendor told us to use (SAP Concur `geolocation`), once known and
    /// allowed by the host policy; an error when the vendor named one the policy refuses.
    pub async fn geolocation(&self) -> Result<Option<url::Url>, AuthError> {
        let slot = self.token.lock().await;
        let Some(token) = slot.as_ref() else {
            return Ok(None);
        };
        if let Some(refused) = &token.refused_geolocation {
            return Err(AuthError::Geolocation {
                url: self.config.token_url.to_string(),
                geolocation: refused.clone(),
                reason: self
                    .accepted_geolocation(refused)
                    .err()
                    .unwrap_or_else(|| "refused earlier".into()),
            });
        }
        Ok(token
            .geolocation
            .as_deref()
            .and_then(|g| self.accepted_geolocation(g).ok()))
    }

    /// `raw` as a URL, when the host policy allows it.
    fn accepted_geolocation(&self, raw: &str) -> Result<url::Url, String> {
        let policy = self
            .config
            .geolocation_hosts
            .as_ref()
            .ok_or_else(|| "this source does not use geolocations".to_string())?;
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err("not an http(s) URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("it carries user information".into());
        }
        policy.check(&url)?;
        Ok(url)
    }

    /// Checks a token's geolocation against the host policy: a refused one is moved aside
    /// (never used, never stored) and logged.
    fn screen_geolocation(&self, token: &mut Token) {
        let Some(raw) = token.geolocation.take() else {
            return;
        };
        if self.config.geolocation_hosts.is_none() {
            return;
        }
        match self.accepted_geolocation(&raw) {
            Ok(_) => token.geolocation = Some(raw),
            Err(reason) => {
                tracing::error!(
                    source = %self.source,
                    geolocation = %raw,
                    %reason,
                    "the token response names a geolocation that is refused; no credential is sent there"
                );
                token.refused_geolocation = Some(raw);
            }
        }
    }

    /// Forgets the access token; the next request refreshes it.
    pub async fn invalidate(&self) {
        if let Some(t) = self.token.lock().await.as_mut() {
            t.expires_at = DateTime::<Utc>::UNIX_EPOCH;
        }
    }

    /// A valid access token, refreshing or logging in as needed.
    pub async fn access_token(&self) -> Result<String, AuthError> {
        let mut slot = self.token.lock().await;
        if slot.is_none() {
            *slot = self.load().await?;
        }
        let configured = self.config.refresh_token.as_ref().map(fingerprint);
        if let Some(t) = slot.as_ref() {
            let fresh = t.expires_at - EXPIRY_MARGIN > self.clock.now();
            let same_origin = configured.is_none() || t.configured == configured;
            if fresh && same_origin {
                return Ok(t.access_token.clone());
            }
        }
        if let Some(f) = self.failure.lock().await.as_ref() {
            let now = Instant::now();
            if f.until > now {
                return Err(AuthError::Backoff {
                    wait_secs: (f.until - now).as_secs().max(1),
                    last: f.last.clone(),
                });
            }
        }
        // An access token the vendor refused ([`OAuth2::invalidate`]) is not taken back from
        // the store.
        let refused = slot
            .as_ref()
            .filter(|t| t.expires_at == DateTime::<Utc>::UNIX_EPOCH)
            .map(|t| t.access_token.clone());
        // One refresh at a time across every process sharing the token cache: with rotating
        // refresh tokens, the refresh token in memory may already be spent by another replica.
        // Claim the refresh, then re-read the stored token — another replica may have
        // refreshed it meanwhile (then use its token), and otherwise its refresh token is the
        // newest one.
        loop {
            let claimed = self
                .store
                .claim_refresh(&self.token_name, &self.holder, self.claim_ttl)
                .await
                .map_err(|e| AuthError::Store {
                    what: "claim the refresh of",
                    reason: e.to_string(),
                })?;
            if let Some(stored) = self.load().await? {
                let fresh = stored.expires_at - EXPIRY_MARGIN > self.clock.now()
                    && refused.as_ref() != Some(&stored.access_token);
                let same_origin = configured.is_none() || stored.configured == configured;
                if fresh && same_origin {
                    if claimed {
                        self.release_claim().await;
                    }
                    let access = stored.access_token.clone();
                    *slot = Some(stored);
                    return Ok(access);
                }
                *slot = Some(stored);
            }
            if claimed {
                break;
            }
            tracing::debug!(token = %self.token_name, "another process refreshes this token; waiting for it");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let previous = slot
            .take()
            .filter(|t| configured.is_none() || t.configured == configured);
        let obtained = self.obtain(previous.as_ref(), configured).await;
        self.release_claim().await;
        match obtained {
            Ok(token) => {
                *self.failure.lock().await = None;
                let access = token.access_token.clone();
                *slot = Some(token);
                Ok(access)
            }
            Err(e) => {
                *slot = previous;
                let mut failure = self.failure.lock().await;
                let mut waits = failure.take().map_or_else(login_backoff, |f| f.waits);
                let backoff = waits.next().unwrap_or(LOGIN_BACKOFF_MAX);
                let wait = if e.is_invalid_grant() {
                    STOP_AFTER_INVALID_GRANT
                } else {
                    backoff
                };
                tracing::error!(token = %self.token_name, error = %e, retry_in_s = wait.as_secs(), "login failed; this source waits, others go on");
                *failure = Some(Failure {
                    until: Instant::now() + wait,
                    waits,
                    last: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Ends this process's refresh claim (best effort: an unreleased claim expires).
    async fn release_claim(&self) {
        if let Err(e) = self
            .store
            .release_refresh(&self.token_name, &self.holder)
            .await
        {
            tracing::warn!(token = %self.token_name, error = %e, "could not release the refresh claim; it expires on its own");
        }
    }

    async fn load(&self) -> Result<Option<Token>, AuthError> {
        let stored = self
            .store
            .token(&self.token_name)
            .await
            .map_err(|e| AuthError::Store {
                what: "read",
                reason: e.to_string(),
            })?;
        let mut token: Option<Token> = stored.and_then(|text| serde_json::from_str(&text).ok());
        if let Some(t) = token.as_mut() {
            self.screen_geolocation(t);
        }
        Ok(token)
    }

    /// Gets a new token: refresh with the stored refresh token when there is one (falling back
    /// to the configured grant), else the configured grant.
    async fn obtain(
        &self,
        previous: Option<&Token>,
        configured: Option<String>,
    ) -> Result<Token, AuthError> {
        let keeps = self.store.keeps_tokens();
        if !keeps && self.config.grant == OAuthGrant::RefreshToken {
            return Err(AuthError::WouldSpendRefreshToken);
        }
        // Where tokens are forgotten, the stored refresh token is not spent: the configured
        // grant logs in afresh instead.
        let stored_refresh = previous
            .and_then(|t| t.refresh_token.clone())
            .filter(|_| keeps);
        let endpoint = self.endpoint(previous);
        let endpoint = &endpoint;
        let result = match (&stored_refresh, self.config.grant) {
            (Some(refresh), _) => {
                let r = self
                    .request(endpoint, OAuthGrant::RefreshToken, Some(refresh))
                    .await;
                match (r, self.config.grant) {
                    (Err(e), OAuthGrant::Password | OAuthGrant::ClientCredentials) => {
                        tracing::info!(error = %e, "refresh token refused; logging in again");
                        self.request(endpoint, self.config.grant, None).await
                    }
                    (r, _) => r,
                }
            }
            (None, OAuthGrant::RefreshToken) => {
                let configured_token = self
                    .config
                    .refresh_token
                    .as_ref()
                    .map(|s| s.expose().to_string());
                self.request(
                    endpoint,
                    OAuthGrant::RefreshToken,
                    configured_token.as_ref(),
                )
                .await
            }
            (None, grant) => self.request(endpoint, grant, None).await,
        };
        let mut token = result?;
        self.screen_geolocation(&mut token);
        if token.refresh_token.is_none() {
            token.refresh_token = stored_refresh.or_else(|| {
                (self.config.grant == OAuthGrant::RefreshToken)
                    .then(|| {
                        self.config
                            .refresh_token
                            .as_ref()
                            .map(|s| s.expose().to_string())
                    })
                    .flatten()
            });
        }
        if token.geolocation.is_none() && token.refused_geolocation.is_none() {
            token.geolocation = previous.and_then(|p| p.geolocation.clone());
        }
        token.configured = configured;
        let text = serde_json::to_string(&token).expect("token serializes");
        self.store
            .put_token(&self.token_name, &text)
            .await
            .map_err(|e| AuthError::Store {
                what: "write",
                reason: e.to_string(),
            })?;
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.token_refreshes.with_label_values(&[&self.source]).inc();
        }
        Ok(token)
    }

    /// The token endpoint: the configured one, or the same path at the vendor's geolocation once
    /// known (when `follow_geolocation`).
    fn endpoint(&self, previous: Option<&Token>) -> url::Url {
        let geolocation = previous
            .filter(|_| self.config.follow_geolocation)
            .and_then(|t| t.geolocation.as_deref())
            .and_then(|g| self.accepted_geolocation(g).ok());
        match geolocation {
            Some(mut url) => {
                url.set_path(self.config.token_url.path());
                url
            }
            None => self.config.token_url.clone(),
        }
    }

    async fn request(
        &self,
        endpoint: &url::Url,
        grant: OAuthGrant,
        refresh: Option<&String>,
    ) -> Result<Token, AuthError> {
        let url = endpoint.to_string();
        let body = self.form(grant, refresh);
        let unavailable = |reason: String| AuthError::Unavailable {
            url: url.clone(),
            reason,
        };
        let response = self
            .client
            .post(endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {}", e.without_url())))?;
        self.read_token(response, grant, &url).await
    }

    fn form(&self, grant: OAuthGrant, refresh: Option<&String>) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", grant_name(grant));
        form.append_pair("client_id", &self.config.client_id);
        form.append_pair("client_secret", self.config.client_secret.expose());
        match grant {
            OAuthGrant::Password => {
                form.append_pair(
                    "username",
                    self.config.username.as_deref().unwrap_or_default(),
                );
                form.append_pair(
                    "password",
                    self.config
                        .password
                        .as_ref()
                        .map(|p| p.expose())
                        .unwrap_or_default(),
                );
            }
            OAuthGrant::RefreshToken => {
                form.append_pair(
                    "refresh_token",
                    refresh.map(String::as_str).unwrap_or_default(),
                );
            }
            OAuthGrant::ClientCredentials => {}
        }
        form.finish()
    }

    async fn read_token(
        &self,
        response: reqwest::Response,
        grant: OAuthGrant,
        url: &str,
    ) -> Result<Token, AuthError> {
        let url = url.to_string();
        let unavailable = |reason: String| AuthError::Unavailable {
            url: url.clone(),
            reason,
        };
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| {
                    String::from_utf8_lossy(l.as_bytes())
                        .chars()
                        .take(200)
                        .collect::<String>()
                })
                .unwrap_or_default();
            return Err(unavailable(format!(
                "HTTP {status} redirecting to {location:?}; token requests follow no redirect, so the client secret and tokens were sent nowhere else — configure the final token URL"
            )));
        }
        let mut response = response;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                        return Err(unavailable(format!(
                            "token response exceeds the {MAX_TOKEN_RESPONSE_BYTES} byte limit"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(unavailable(format!(
                        "reading the body failed: {}",
                        e.without_url()
                    )))
                }
            }
        }
        if !(200..300).contains(&status) {
            let message = super::vendor_error_message(&body).unwrap_or_else(|| "no details".into());
            if status >= 500 {
                return Err(unavailable(format!("HTTP {status}: {message}")));
            }
            let hint = if message.contains("invalid_grant") && grant == OAuthGrant::RefreshToken {
                "; the refresh token is no longer valid: re-authorize pollbus with the vendor and update the refresh_token secret".to_string()
            } else {
                "; check the client id, secret and credentials".to_string()
            };
            return Err(AuthError::Rejected {
                url,
                grant: grant_name(grant),
                status,
                message,
                hint,
            });
        }
        let (token, odd) = parse_token(&body, self.clock.now()).map_err(unavailable)?;
        if let Some(value) = odd {
            tracing::warn!(
                source = %self.source,
                expires_in = %value,
                "the token response's expires_in is not a usable number of seconds; using a bounded lifetime instead"
            );
        }
        Ok(token)
    }
}

/// Reads a 2xx token response received at `now`: the token, and the `expires_in` value when it
/// was not used as is. Never panics, whatever the body.
fn parse_token(body: &[u8], now: DateTime<Utc>) -> Result<(Token, Option<String>), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed token response ({e})"))?;
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "token response has no access_token".to_string())?
        .to_string();
    let lifetime = token_lifetime(v.get("expires_in"));
    let expires_at = now
        .checked_add_signed(chrono::Duration::seconds(lifetime.seconds))
        .unwrap_or(now);
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let token = Token {
        access_token,
        expires_at,
        refresh_token: text("refresh_token"),
        configured: None,
        geolocation: text("geolocation"),
        refused_geolocation: None,
    };
    Ok((token, lifetime.odd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expires_in_is_bounded_whatever_the_vendor_sends() {
        let cases = [
            (json!(3600), 3600, false),
            (json!("3600"), 3600, false),
            (json!(" 59.9 "), 59, false),
            (json!(0), 0, false),
            (json!(1e13), MAX_TOKEN_LIFETIME_S, true),
            (json!(10_000_000_000_000_i64), MAX_TOKEN_LIFETIME_S, true),
            (json!(u64::MAX), MAX_TOKEN_LIFETIME_S, true),
            (json!("1e400"), MAX_TOKEN_LIFETIME_S, true),
            (json!(-5), DEFAULT_TOKEN_LIFETIME_S, true),
            (json!("-1e300"), DEFAULT_TOKEN_LIFETIME_S, true),
            (json!("NaN"), DEFAULT_TOKEN_LIFETIME_S, true),
            (json!("soon"), DEFAULT_TOKEN_LIFETIME_S, true),
            (json!([1]), DEFAULT_TOKEN_LIFETIME_S, true),
        ];
        for (value, seconds, odd) in cases {
            let l = token_lifetime(Some(&value));
            assert_eq!((l.seconds, l.odd.is_some()), (seconds, odd), "{value}");
        }
        assert_eq!(token_lifetime(None).seconds, DEFAULT_TOKEN_LIFETIME_S);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[-+0-9.eE ]{0,24}".prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest::proptest! {
        #[test]
        fn no_token_body_panics(
            expires_in in json_value(),
            geolocation in json_value(),
            refresh in json_value(),
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            now_s in -8_000_000_000_000i64..8_000_000_000_000i64,
        ) {
            let now = DateTime::<Utc>::from_timestamp(now_s, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let body = json!({
                "access_token": "a",
                "expires_in": expires_in,
                "geolocation": geolocation,
                "refresh_token": refresh,
            });
            let (token, _) = parse_token(body.to_string().as_bytes(), now).unwrap();
            proptest::prop_assert!(token.expires_at >= now);
            proptest::prop_assert!(token.expires_at - now <= chrono::Duration::seconds(MAX_TOKEN_LIFETIME_S));
            let _ = parse_token(&raw, now);
            for edge in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
                let (token, _) = parse_token(body.to_string().as_bytes(), edge).unwrap();
                proptest::prop_assert!(token.expires_at >= edge);
            }
        }
    }

    #[test]
    fn login_backoff_doubles_from_five_seconds_up_to_ten_minutes() {
        let waits: Vec<u64> = login_backoff().take(10).map(|d| d.as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }
}
