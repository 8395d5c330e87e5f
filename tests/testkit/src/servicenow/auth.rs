//! Authentication and rate limiting: basic auth, OAuth tokens from `/oauth_token.do`, and the
//! per-user hourly request budget.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};

use super::{lock, AuthKind, RateLimit, Shared};

/// One issued token.
#[derive(Debug, Clone)]
struct Grant {
    user: String,
    client: String,
    expires: Instant,
}

/// Issued access and refresh tokens.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    access: HashMap<String, Grant>,
    refresh: HashMap<String, Grant>,
}

impl Tokens {
    fn issue(map: &mut HashMap<String, Grant>, user: &str, client: &str, ttl: Duration) -> String {
        let token = random_token();
        map.insert(
            token.clone(),
            Grant {
                user: user.to_string(),
                client: client.to_string(),
                expires: Instant::now() + ttl,
            },
        );
        token
    }

    fn valid<'a>(map: &'a HashMap<String, Grant>, token: &str) -> Option<&'a Grant> {
        map.get(token).filter(|g| g.expires > Instant::now())
    }

    /// The user of a valid access token.
    pub(super) fn access_user(&self, token: &str) -> Option<String> {
        Self::valid(&self.access, token).map(|g| g.user.clone())
    }

    /// Expires every access token.
    pub(super) fn expire_access(&mut self) {
        self.access.clear();
    }

    /// Expires every token.
    pub(super) fn expire_all(&mut self) {
        self.access.clear();
        self.refresh.clear();
    }
}

/// An 86-character URL-safe token like the instance's.
fn random_token() -> String {
    let mut bytes = [0u8; 64];
    rand::rng().fill(&mut bytes[..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Classifies an `Authorization` header.
pub(super) fn auth_kind(header: Option<&str>) -> AuthKind {
    let Some(header) = header else {
        return AuthKind::None;
    };
    let scheme = header.split(' ').next().unwrap_or("").to_ascii_lowercase();
    match scheme.as_str() {
        "basic" => AuthKind::Basic,
        "bearer" => AuthKind::Bearer,
        _ => AuthKind::Other,
    }
}

/// Decodes `Basic base64(user:password)`.
pub(super) fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The user a Table API request acts as, if its credentials are valid.
pub(super) fn authenticate(shared: &Shared, header: Option<&str>) -> Option<String> {
    let header = header?;
    match auth_kind(Some(header)) {
        AuthKind::Basic => {
            let config = lock(&shared.config);
            let (user, password) = basic_credentials(header)?;
            let known = config
                .users
                .iter()
                .any(|(u, p)| *u == user && *p == password);
            (config.basic_auth && known).then_some(user)
        }
        AuthKind::Bearer => {
            let token = header.split_once(' ')?.1.trim();
            lock(&shared.tokens).access_user(token)
        }
        _ => None,
    }
}

/// The body of every refused token request.
pub(super) fn access_denied() -> Value {
    json!({"error": "server_error", "error_description": "access_denied"})
}

/// Runs a token request (form fields, plus client credentials from a Basic header if any).
/// Returns the token response and the user, or `None` for "access_denied".
pub(super) fn grant(
    shared: &Shared,
    form: &[(String, String)],
    basic: Option<(String, String)>,
) -> Option<(Value, String)> {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let config = shared.config();
    let (client_id, client_secret) = match (field("client_id"), field("client_secret")) {
        (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
        _ => basic?,
    };
    let client_ok = config
        .oauth_clients
        .iter()
        .any(|(id, secret)| *id == client_id && *secret == client_secret);
    if !client_ok {
        return None;
    }
    let mut tokens = lock(&shared.tokens);
    let (user, refresh) = match field("grant_type")? {
        "password" => {
            let (user, password) = (field("username")?, field("password")?);
            let known = config.users.iter().any(|(u, p)| u == user && p == password);
            if !known {
                return None;
            }
            let refresh = Tokens::issue(
                &mut tokens.refresh,
                user,
                &client_id,
                config.refresh_token_ttl,
            );
            (user.to_string(), Some(refresh))
        }
        "refresh_token" => {
            let refresh = field("refresh_token")?;
            let grant = Tokens::valid(&tokens.refresh, refresh)?;
            if grant.client != client_id {
                return None;
            }
            (grant.user.clone(), Some(refresh.to_string()))
        }
        "client_credentials" => (config.client_credentials_user.clone()?, None),
        _ => return None,
    };
    let access = Tokens::issue(
        &mut tokens.access,
        &user,
        &client_id,
        config.access_token_ttl,
    );
    let mut body = json!({
        "access_token": access,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": config.access_token_ttl.as_secs(),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    Some((body, user))
}

/// Request counts of the current rate-limit window.
#[derive(Debug)]
pub(super) struct RateState {
    window_start: Instant,
    counts: HashMap<String, u32>,
}

/// The outcome of counting one request against the rule.
#[derive(Debug)]
pub(super) struct RateDecision {
    pub allowed: bool,
    /// Whole seconds until the window resets (at least 1).
    pub retry_after: u64,
    pub headers: Vec<(String, String)>,
}

impl RateState {
    pub(super) fn new() -> RateState {
        RateState {
            window_start: Instant::now(),
            counts: HashMap::new(),
        }
    }

    /// Counts a request by `user` under `rule`.
    pub(super) fn hit(&mut self, user: &str, rule: &RateLimit) -> RateDecision {
        let window = rule.window.max(Duration::from_millis(1));
        let passed = self.window_start.elapsed().as_nanos() / window.as_nanos();
        if passed > 0 {
            let passed = u32::try_from(passed).unwrap_or(u32::MAX);
            self.window_start += window.saturating_mul(passed);
            if self.window_start > Instant::now() {
                self.window_start = Instant::now();
            }
            self.counts.clear();
        }
        let count = self.counts.entry(user.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        let remaining = window.saturating_sub(self.window_start.elapsed());
        let retry_after = remaining.as_secs_f64().ceil().max(1.0) as u64;
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + retry_after;
        RateDecision {
            allowed: *count <= rule.requests_per_hour,
            retry_after,
            headers: vec![
                (
                    "X-RateLimit-Limit".into(),
                    rule.requests_per_hour.to_string(),
                ),
                ("X-RateLimit-Reset".into(), reset.to_string()),
                ("X-RateLimit-Rule".into(), rule.rule_sys_id.clone()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_the_instance_s() {
        let t = random_token();
        assert_eq!(t.len(), 86);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn basic_header_decodes() {
        let h = format!("Basic {}", STANDARD.encode("admin:pa:ss"));
        assert_eq!(
            basic_credentials(&h),
            Some(("admin".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(auth_kind(Some("bearer x")), AuthKind::Bearer);
        assert_eq!(auth_kind(Some("Digest x")), AuthKind::Other);
        assert_eq!(auth_kind(None), AuthKind::None);
    }

    #[test]
    fn rate_windows_count_per_user() {
        let rule = RateLimit::per_hour(2);
        let mut state = RateState::new();
        assert!(state.hit("a", &rule).allowed);
        assert!(state.hit("a", &rule).allowed);
        let third = state.hit("a", &rule);
        assert!(!third.allowed);
        assert!(third.retry_after > 3500 && third.retry_after <= 3600);
        assert!(
            state.hit("b", &rule).allowed,
            "another user has its own budget"
        );
    }
}
