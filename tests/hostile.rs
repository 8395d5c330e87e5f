//! pollbus under hostile and odd vendor behaviour (issue 14, items 1–3), through real HTTP on
//! local servers:
//! - a panicking source is caught, logged with its resource, counted, and polled again; one that
//!   keeps panicking gives up its lease and fails `/live`; a panicking sink is restarted;
//! - vendor waits (`Retry-After`) and token lifetimes (`expires_in`) of any size never panic
//!   and never silence a source beyond `max_retry_wait`;
//! - credentials stay on their origin: a second server (`Capture`) records every request it
//!   receives, and in no redirect / next-page / geolocation case, for no auth kind, receives
//!   one (let alone a credential or a `Referer`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use pollbus::clock::{Clock, SystemClock};
use pollbus::config::Config;
use pollbus::contract::Message;
use pollbus::daemon::App;
use pollbus::http::{HttpClient, HttpError};
use pollbus::sink::{Sink, SinkError};
use pollbus::source::{self, IdPage, Page, Resource, Source, SourceContext, SourceError};
use pollbus::store::sqlite::SqliteStore;
use pollbus::store::{ResourceKey, Store};

// ---------------------------------------------------------------------------------------------
// Log capture

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged so far in this test process (nextest runs one test per process).
fn logs() -> String {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    let buf = LOGS.get_or_init(|| {
        let buf = LogBuf(Arc::new(Mutex::new(Vec::new())));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Servers

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The other server: records method, URI, every header and the body of each request.
#[derive(Clone, Default)]
struct Capture {
    seen: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Capture {
    async fn start() -> Capture {
        let mut capture = Capture::default();
        let router = Router::new()
            .fallback(capture_any)
            .with_state(capture.clone());
        capture.url = serve(router).await;
        capture
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Fails when any request arrived (naming what it carried).
    fn assert_untouched(&self, case: &str) {
        let seen = self.seen();
        assert!(
            seen.is_empty(),
            "{case}: the other server received {seen:#?}"
        );
    }
}

async fn capture_any(
    State(c): State<Capture>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut text = format!("{method} {uri}\n");
    for (k, v) in &headers {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    text.push_str(&String::from_utf8_lossy(&body));
    c.seen.lock().unwrap().push(text);
    Json(json!({"access_token": "captured", "expires_in": 3600, "Items": [], "items": []}))
}

/// The vendor: token endpoints, redirects to the other server, rate limits, pages.
#[derive(Clone)]
struct Vendor {
    capture: String,
    geolocation: Arc<Mutex<String>>,
    /// Requests per `/limited/{value}`.
    limited: Arc<Mutex<HashMap<String, usize>>>,
    /// Whether the same-origin redirect target saw a credential.
    credentialed: Arc<AtomicUsize>,
}

fn redirect(status: u16, location: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("location", location.to_string())],
    )
        .into_response()
}

fn token_body(geolocation: Option<&str>) -> Value {
    let mut body = json!({
        "access_token": "at-SECRET",
        "token_type": "Bearer",
        "expires_in": 10_000_000_000_000_i64,
        "refresh_token": "rt-SECRET-rotated",
    });
    if let Some(g) = geolocation {
        body["geolocation"] = json!(g);
    }
    body
}

impl Vendor {
    async fn start(capture: &Capture) -> (Vendor, String) {
        let vendor = Vendor {
            capture: capture.url.clone(),
            geolocation: Arc::new(Mutex::new(String::new())),
            limited: Arc::default(),
            credentialed: Arc::default(),
        };
        let router = Router::new()
            .route("/token", post(|| async { Json(token_body(None)) }))
            .route(
                "/token-{status}",
                post(
                    |State(v): State<Vendor>, Path(status): Path<u16>| async move {
                        redirect(status, &format!("{}/token", v.capture))
                    },
                ),
            )
            .route(
                "/oauth2/v0/token",
                post(|State(v): State<Vendor>| async move {
                    let g = v.geolocation.lock().unwrap().clone();
                    Json(token_body(Some(&g)))
                }),
            )
            .route(
                "/api/v3.0/expense/reports",
                get(|| async { Json(json!({"Items": [], "NextPage": null})) }),
            )
            .route(
                "/data-{status}",
                get(
                    |State(v): State<Vendor>, Path(status): Path<u16>| async move {
                        redirect(status, &format!("{}/data", v.capture))
                    },
                ),
            )
            .route("/same", get(|| async { redirect(302, "/ok") }))
            .route(
                "/ok",
                get(|State(v): State<Vendor>, headers: HeaderMap| async move {
                    if headers.contains_key("authorization")
                        || headers.contains_key("api-authentication")
                    {
                        v.credentialed.fetch_add(1, Ordering::SeqCst);
                    }
                    Json(json!({"ok": true}))
                }),
            )
            .route(
                "/limited/{value}",
                get(
                    |State(v): State<Vendor>, Path(value): Path<String>| async move {
                        let n = {
                            let mut limited = v.limited.lock().unwrap();
                            let n = limited.entry(value.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        if n == 1 {
                            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", value)], "slow down")
                                .into_response()
                        } else {
                            Json(json!({"ok": true})).into_response()
                        }
                    },
                ),
            )
            .route(
                "/items",
                get(|State(v): State<Vendor>| async move {
                    (
                        [(
                            "link",
                            format!("<{}/items?page=2>; rel=\"next\"", v.capture),
                        )],
                        Json(json!({"items": [item()], "next": format!("{}/items?page=2", v.capture)})),
                    )
                }),
            )
            .with_state(vendor.clone());
        let url = serve(router).await;
        (vendor, url)
    }
}

fn item() -> Value {
    json!({"id": "1", "name": "Ada", "updated_at": "2024-05-01T10:00:00Z", "created_at": "2024-05-01T10:00:00Z"})
}

// ---------------------------------------------------------------------------------------------
// Configurations

/// Every auth kind, with credentials that all contain `SECRET`.
fn auth_kinds(token_url: &str) -> Vec<(&'static str, String)> {
    let oauth = |grant: &str, extra: &str| {
        format!(
            r#"{{ kind = "oauth2", token_url = "{token_url}", grant = "{grant}", client_id = "client", client_secret = "cs-SECRET"{extra} }}"#
        )
    };
    vec![
        (
            "basic",
            r#"{ kind = "basic", username = "user", password = "pw-SECRET" }"#.into(),
        ),
        (
            "bearer",
            r#"{ kind = "bearer", token = "bearer-SECRET" }"#.into(),
        ),
        (
            "header",
            r#"{ kind = "header", name = "API-AUTHENTICATION", value = "key:hdr-SECRET" }"#.into(),
        ),
        (
            "oauth2 password",
            oauth("password", r#", username = "user", password = "pw-SECRET""#),
        ),
        (
            "oauth2 refresh_token",
            oauth("refresh_token", r#", refresh_token = "rt-SECRET""#),
        ),
        ("oauth2 client_credentials", oauth("client_credentials", "")),
    ]
}

fn oauth_kinds(token_url: &str) -> Vec<(&'static str, String)> {
    auth_kinds(token_url)
        .into_iter()
        .filter(|(k, _)| k.starts_with("oauth2"))
        .collect()
}

/// A `rest` source on `base` with `auth`, paging `paging`.
fn rest_config(base: &str, auth: &str, paging: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[[sources]]
name = "vendor"
kind = "rest"
base_url = "{base}"
source_system = "V"
max_attempts = 2
{extra}
auth = {auth}
  [[sources.resources]]
  name = "items"
  entity = "item"
  fields = {{ Name = "name" }}
  dates = {{ updated_field = "updated_at", updated_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", updated_timezone = "GMT", created_field = "created_at", created_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", created_timezone = "GMT" }}
  rest = {{ url = "/items", records = "/items", paging = {paging} }}
"#
    );
    Config::parse(&text, "hostile.toml").unwrap_or_else(|e| panic!("{e}"))
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    (dir, store)
}

fn ctx(store: &Arc<dyn Store>) -> SourceContext {
    SourceContext {
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        tokens: store.clone(),
        budget: store.clone(),
        metrics: None,
    }
}

async fn client(config: &Config, store: &Arc<dyn Store>) -> HttpClient {
    let base = url::Url::parse(config.sources[0].base_url.as_deref().unwrap()).unwrap();
    source::http_client(&config.sources[0], &ctx(store), &base, "/token").unwrap()
}

fn url(text: &str) -> url::Url {
    url::Url::parse(text).unwrap()
}

fn assert_no_secret(case: &str, text: &str) {
    assert!(!text.contains("SECRET"), "{case}: a secret leaked: {text}");
}

// ---------------------------------------------------------------------------------------------
// 3. Credentials stay on their origin

/// A 301/302/303/307/308 to another port is not followed, for any auth kind: the request fails
/// naming the Location, and the other server receives nothing. A same-origin redirect is still
/// followed with the credentials (the control).
#[tokio::test]
async fn cross_origin_redirects_are_refused_for_every_auth_kind() {
    let _ = logs();
    let capture = Capture::start().await;
    let (vendor, base) = Vendor::start(&capture).await;
    for (kind, auth) in auth_kinds(&format!("{base}/token")) {
        let (_dir, store) = store().await;
        let config = rest_config(&base, &auth, r#"{ kind = "none" }"#, "");
        let http = client(&config, &store).await;
        for status in [301, 302, 303, 307, 308] {
            let case = format!("{kind}, HTTP {status}");
            let err = http
                .get(&url(&format!("{base}/data-{status}")))
                .await
                .expect_err(&case);
            assert!(matches!(err, HttpError::Redirect { .. }), "{case}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("{}/data", capture.url)),
                "{case}: the error names the Location: {text}"
            );
            assert_no_secret(&case, &text);
        }
        capture.assert_untouched(kind);
        let before = vendor.credentialed.load(Ordering::SeqCst);
        let ok = http.get(&url(&format!("{base}/same"))).await;
        assert!(
            ok.is_ok(),
            "{kind}: a same-origin redirect is followed: {ok:?}"
        );
        assert_eq!(
            vendor.credentialed.load(Ordering::SeqCst),
            before + 1,
            "{kind}: with its credential"
        );
    }
    assert_no_secret("logs", &logs());
}

/// Token requests follow no redirect at all: a 302/307/308 from the token endpoint is an error
/// naming the Location; the client secret, password and refresh token go nowhere else.
#[tokio::test]
async fn token_requests_follow_no_redirect() {
    let _ = logs();
    let capture = Capture::start().await;
    let (_vendor, base) = Vendor::start(&capture).await;
    for status in [302, 307, 308] {
        for (kind, auth) in oauth_kinds(&format!("{base}/token-{status}")) {
            let case = format!("{kind}, token endpoint HTTP {status}");
            let (_dir, store) = store().await;
            let config = rest_config(&base, &auth, r#"{ kind = "none" }"#, "");
            let http = client(&config, &store).await;
            let err = http
                .get(&url(&format!("{base}/ok")))
                .await
                .expect_err(&case);
            let text = err.to_string();
            assert!(matches!(err, HttpError::Auth(_)), "{case}: {err:?}");
            assert!(
                text.contains(&format!("{}/token", capture.url)) && text.contains("no redirect"),
                "{case}: {text}"
            );
            assert_no_secret(&case, &text);
            capture.assert_untouched(&case);
        }
    }
    assert_no_secret("logs", &logs());
}

/// `Link: rel="next"` and next-page URLs in the body that point to another origin are refused
/// before any credential is attached, for every auth kind.
#[tokio::test]
async fn next_page_urls_elsewhere_are_refused_for_every_auth_kind() {
    let _ = logs();
    let capture = Capture::start().await;
    let (_vendor, base) = Vendor::start(&capture).await;
    for paging in [
        r#"{ kind = "link-header" }"#,
        r#"{ kind = "next-url", pointer = "/next" }"#,
    ] {
        for (kind, auth) in auth_kinds(&format!("{base}/token")) {
            let case = format!("{kind}, paging {paging}");
            let (_dir, store) = store().await;
            let config = rest_config(&base, &auth, paging, "");
            let source = source::build(&config.sources[0], &ctx(&store)).unwrap();
            let resource = Resource::build(&config.sources[0], &config.sources[0].resources[0]);
            let since = DateTime::<Utc>::UNIX_EPOCH;
            let first = source.fetch(&resource, since, None).await.expect(&case);
            let next = first.next.expect("a next page is offered");
            assert!(next.starts_with(&capture.url), "{case}: {next}");
            let err = source
                .fetch(&resource, since, Some(&next))
                .await
                .expect_err(&case);
            let text = err.to_string();
            assert!(
                text.contains(&next) && text.contains("refusing"),
                "{case}: {text}"
            );
            assert_no_secret(&case, &text);
            capture.assert_untouched(&case);
        }
    }
}

fn concur_config(base: &str, auth: &str, allowed: Option<&str>) -> Config {
    let concur = match allowed {
        Some(a) => format!("concur = {{ allowed_hosts = [\"{a}\"] }}"),
        None => String::new(),
    };
    let text = format!(
        r#"
[[sources]]
name = "concur"
kind = "concur"
base_url = "{base}"
source_system = "Concur"
max_attempts = 2
{concur}
auth = {auth}
  [[sources.resources]]
  name = "reports"
  entity = "expense-report"
  fields = {{ Name = "Name" }}
"#
    );
    Config::parse(&text, "concur.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// Concur's `geolocation` from a token response is used only when https on an allowed host (or
/// an origin listed in `allowed_hosts`): an http one on another port, or an https one on a host
/// outside `*.concursolutions.com`, is a clear error, never stored, and receives nothing — for
/// every OAuth grant. One listed in `allowed_hosts` is used (the control).
#[tokio::test]
async fn concur_geolocations_outside_the_allowed_hosts_are_refused() {
    let _ = logs();
    let capture = Capture::start().await;
    let (vendor, base) = Vendor::start(&capture).await;
    let token_url = format!("{base}/oauth2/v0/token");
    let cases = [
        // (geolocation, allowed_hosts, refused)
        (capture.url.clone(), Some(base.clone()), true),
        (capture.url.clone(), None, true),
        ("https://evil.example.com".to_string(), None, true),
        (
            "https://us.api.concursolutions.com.evil.example".to_string(),
            None,
            true,
        ),
    ];
    for (geolocation, allowed, refused) in cases {
        for (kind, _) in oauth_kinds(&token_url) {
            let case = format!("{kind}, geolocation {geolocation}, allowed {allowed:?}");
            *vendor.geolocation.lock().unwrap() = geolocation.clone();
            let (_dir, store) = store().await;
            // The default token endpoint under base_url: the geolocation would be followed.
            let auth = oauth_kinds("unused")
                .into_iter()
                .find(|(k, _)| *k == kind)
                .unwrap()
                .1
                .replace(r#"token_url = "unused", "#, "");
            let config = concur_config(&base, &auth, allowed.as_deref());
            let source = source::build(&config.sources[0], &ctx(&store)).unwrap();
            let resource = Resource::build(&config.sources[0], &config.sources[0].resources[0]);
            let result = source
                .fetch(&resource, DateTime::<Utc>::UNIX_EPOCH, None)
                .await;
            assert!(refused, "only refusals here");
            let err = result.expect_err(&case);
            let text = err.to_string();
            assert!(
                text.contains(&geolocation)
                    && text.contains("refused")
                    && text.contains("allowed_hosts"),
                "{case}: {text}"
            );
            assert_no_secret(&case, &text);
            let stored = store
                .token("oauth/concur")
                .await
                .unwrap()
                .unwrap_or_default();
            assert!(
                !stored.contains(&geolocation),
                "{case}: the refused geolocation is not stored: {stored}"
            );
            // A second poll fails the same way and still sends nothing there.
            let again = source
                .fetch(&resource, DateTime::<Utc>::UNIX_EPOCH, None)
                .await;
            assert!(again.is_err(), "{case}");
            capture.assert_untouched(&case);
        }
    }
    // The control: listed in allowed_hosts, the geolocation is where requests go.
    *vendor.geolocation.lock().unwrap() = capture.url.clone();
    let (_dir, store) = store().await;
    let auth = r#"{ kind = "oauth2", client_id = "client", client_secret = "cs-SECRET", refresh_token = "rt-SECRET" }"#;
    let config = concur_config(&base, auth, Some(&capture.url));
    let source = source::build(&config.sources[0], &ctx(&store)).unwrap();
    let resource = Resource::build(&config.sources[0], &config.sources[0].resources[0]);
    source
        .fetch(&resource, DateTime::<Utc>::UNIX_EPOCH, None)
        .await
        .expect("an allowed geolocation is used");
    let seen = capture.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(
        seen[0].starts_with("GET /api/v3.0/expense/reports"),
        "{seen:#?}"
    );
    assert!(
        !seen[0].to_ascii_lowercase().contains("referer"),
        "{seen:#?}"
    );
    let logged = logs();
    assert!(
        logged.contains("geolocation") && logged.contains("refused"),
        "the refusal is logged: {logged}"
    );
    assert_no_secret("logs", &logged);
}

// ---------------------------------------------------------------------------------------------
// 2. Vendor numbers never panic

/// `Retry-After` values far beyond `max_retry_wait` (and beyond what a `Duration` or an
/// `Instant` holds) are clamped to it with a warning naming the header and the value: the
/// request is retried after `max_retry_wait`, not never. Today: a panic, or silence.
#[tokio::test]
async fn huge_retry_after_is_clamped_to_max_retry_wait() {
    let _ = logs();
    let capture = Capture::start().await;
    let (_vendor, base) = Vendor::start(&capture).await;
    let config = rest_config(
        &base,
        r#"{ kind = "none" }"#,
        r#"{ kind = "none" }"#,
        r#"max_retry_wait = "1s""#,
    );
    let (_dir, store) = store().await;
    let http = client(&config, &store).await;
    for value in [
        "99999999999",
        "18446744073709551615",
        "1e13",
        "99999999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let started = Instant::now();
        // The server answers the first request with the (percent-decoded) last path segment
        // as `Retry-After`, then 200.
        let mut request = url(&format!("{base}/limited/x"));
        request.set_path(&format!("/limited/{value}"));
        let response = tokio::time::timeout(Duration::from_secs(20), http.get(&request))
            .await
            .unwrap_or_else(|_| panic!("Retry-After: {value} silenced the source"));
        assert!(response.is_ok(), "{value}: {response:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "{value}: waited {waited:?}, expected max_retry_wait (1 s)"
        );
    }
    let logged = logs();
    assert!(
        logged.contains("retry-after")
            && logged.contains("99999999999")
            && logged.contains("max_retry_wait"),
        "the clamp is logged with the header and its value: {logged}"
    );
    capture.assert_untouched("rate limits");
}

/// A token response's `expires_in` of `1e13` seconds (today: a panic adding it to the clock)
/// gives a usable token.
#[tokio::test]
async fn huge_expires_in_gives_a_usable_token() {
    let _ = logs();
    let capture = Capture::start().await;
    let (_vendor, base) = Vendor::start(&capture).await;
    for (kind, auth) in oauth_kinds(&format!("{base}/token")) {
        let (_dir, store) = store().await;
        let config = rest_config(&base, &auth, r#"{ kind = "none" }"#, "");
        let http = client(&config, &store).await;
        let response = http.get(&url(&format!("{base}/ok"))).await;
        assert!(response.is_ok(), "{kind}: {response:?}");
        let stored: Value =
            serde_json::from_str(&store.token("oauth/vendor").await.unwrap().unwrap()).unwrap();
        let expires: DateTime<Utc> = stored["expires_at"].as_str().unwrap().parse().unwrap();
        assert!(
            expires <= Utc::now() + chrono::Duration::hours(25),
            "{kind}: the lifetime is bounded: {expires}"
        );
    }
    let logged = logs();
    assert!(logged.contains("expires_in"), "{logged}");
    assert_no_secret("logs", &logged);
}

// ---------------------------------------------------------------------------------------------
// 1. No task dies silently

/// A source whose first `panics` fetches panic.
struct Panicky {
    panics: AtomicUsize,
    fetches: AtomicUsize,
}

#[async_trait]
impl Source for Panicky {
    async fn fetch(
        &self,
        _resource: &Resource,
        _since: DateTime<Utc>,
        _token: Option<&str>,
    ) -> Result<Page, SourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let left = self.panics.load(Ordering::SeqCst);
        if left > 0 {
            self.panics.store(left - 1, Ordering::SeqCst);
            panic!("injected panic in fetch");
        }
        Ok(Page {
            records: vec![json!({
                "id": "1",
                "first_name": "Ada",
                "updated_at": "2024-05-01T10:00:00Z",
                "created_at": "2024-05-01T10:00:00Z",
            })],
            next: None,
            requests: 1,
            vendor_time: None,
        })
    }

    async fn list_ids(
        &self,
        _resource: &Resource,
        _token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        Ok(IdPage {
            ids: vec!["1".into()],
            next: None,
        })
    }
}

/// A sink that panics on its first `panics` publishes, then keeps what it gets.
#[derive(Default)]
struct PanickySink {
    panics: AtomicUsize,
    received: Mutex<Vec<Message>>,
}

#[async_trait]
impl Sink for PanickySink {
    async fn publish(&self, _topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let left = self.panics.load(Ordering::SeqCst);
        if left > 0 {
            self.panics.store(left - 1, Ordering::SeqCst);
            panic!("injected panic in publish");
        }
        self.received.lock().unwrap().extend_from_slice(messages);
        Ok(())
    }

    fn describe(&self) -> String {
        "panicky memory".into()
    }
}

fn daemon_config() -> Config {
    let text = r#"
[admin]
listen = "127.0.0.1:0"

[outbox]
backoff_min = "50ms"
backoff_max = "200ms"

[cluster]
lease_ttl = "2s"

[[sources]]
name = "crm"
kind = "demo"
source_system = "CRM"
interval = "1s"
jitter = "0s"

  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = { FirstName = "first_name" }
  initial = "emit"
"#;
    Config::parse(text, "daemon.toml").unwrap_or_else(|e| panic!("{e}"))
}

struct Running {
    app: Arc<App>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<u64>,
    _dir: tempfile::TempDir,
}

async fn run(source: Arc<Panicky>, sink: Arc<PanickySink>) -> Running {
    let (dir, store) = store().await;
    let source: Arc<dyn Source> = source;
    let app = Arc::new(
        App::with_sources(
            daemon_config(),
            store,
            sink,
            Arc::new(SystemClock),
            &move |_, _| Ok(source.clone()),
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let done = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move { app.run(stop).await.unwrap() })
    };
    Running {
        app,
        stop,
        done,
        _dir: dir,
    }
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_get(app: &App, path: &str) -> (u16, String) {
    let addr = app.admin_addr().expect("admin server bound");
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A source panicking on its first two fetches: each panic is logged at ERROR naming the source
/// and resource and counted; the resource is polled again (not after a restart of pollbus) and
/// its change published; `/live` stays 200. Today: the task dies silently, never polls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_poll_is_logged_counted_and_polled_again() {
    let _ = logs();
    let source = Arc::new(Panicky {
        panics: AtomicUsize::new(2),
        fetches: AtomicUsize::new(0),
    });
    let sink = Arc::new(PanickySink::default());
    let running = run(source.clone(), sink.clone()).await;
    eventually(
        "a message after two panics",
        Duration::from_secs(30),
        || !sink.received.lock().unwrap().is_empty(),
    )
    .await;
    assert!(source.fetches.load(Ordering::SeqCst) >= 3);
    let app = running.app.clone();
    let metrics = app.metrics().render();
    assert_eq!(
        metric(&metrics, r#"pollbus_task_restarts_total{task="poll"}"#),
        Some(2.0),
        "{metrics}"
    );
    eventually("the last-success gauge", Duration::from_secs(10), || {
        metric(
            &app.metrics().render(),
            r#"pollbus_last_success_timestamp_seconds{resource="customers",source="crm"}"#,
        )
        .is_some_and(|t| t > 1.7e9)
    })
    .await;
    let logged = logs();
    let panic_lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("poll task panicked"))
        .collect();
    assert_eq!(panic_lines.len(), 2, "{logged}");
    for line in panic_lines {
        assert!(
            line.contains("ERROR")
                && line.contains("source=crm")
                && line.contains("resource=customers")
                && line.contains("injected panic in fetch"),
            "{line}"
        );
    }
    assert_eq!(admin_get(&app, "/live").await.0, 200);
    running.stop.cancel();
    running.done.await.unwrap();
}

/// A source that always panics: after three panics in a row its lease is given up (another
/// replica could take it) and, as it is the only resource task, `/live` answers 503 so the
/// orchestrator restarts the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_keeps_panicking_releases_its_lease_and_fails_live() {
    let _ = logs();
    let source = Arc::new(Panicky {
        panics: AtomicUsize::new(usize::MAX),
        fetches: AtomicUsize::new(0),
    });
    let running = run(source.clone(), Arc::new(PanickySink::default())).await;
    let app = running.app.clone();
    eventually("the lease to be taken", Duration::from_secs(10), || {
        app.leases()
            .fence(&ResourceKey::new("crm", "customers"))
            .is_some()
    })
    .await;
    let started = Instant::now();
    loop {
        let (status, body) = admin_get(&app, "/live").await;
        if status == 503 {
            assert!(body.contains("every resource task keeps dying"), "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "/live stays 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(source.fetches.load(Ordering::SeqCst) >= 3);
    let logged = logs();
    assert!(
        logged.contains("giving up its lease so another replica can try"),
        "{logged}"
    );
    eventually("the lease given up", Duration::from_secs(10), || {
        app.leases()
            .fence(&ResourceKey::new("crm", "customers"))
            .is_none()
    })
    .await;
    running.stop.cancel();
    running.done.await.unwrap();
}

/// A sink that panics on its first publish: the publisher is restarted (counted, logged) and
/// the message is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_publisher_is_restarted() {
    let _ = logs();
    let source = Arc::new(Panicky {
        panics: AtomicUsize::new(0),
        fetches: AtomicUsize::new(0),
    });
    let sink = Arc::new(PanickySink {
        panics: AtomicUsize::new(1),
        received: Mutex::default(),
    });
    let running = run(source, sink.clone()).await;
    eventually(
        "delivery after the publisher's panic",
        Duration::from_secs(30),
        || !sink.received.lock().unwrap().is_empty(),
    )
    .await;
    let app = running.app.clone();
    assert_eq!(
        metric(
            &app.metrics().render(),
            r#"pollbus_task_restarts_total{task="publisher"}"#
        ),
        Some(1.0)
    );
    let logged = logs();
    assert!(
        logged.lines().any(|l| l.contains("ERROR")
            && l.contains("task died")
            && l.contains("publisher")
            && l.contains("injected panic in publish")),
        "{logged}"
    );
    assert_eq!(admin_get(&app, "/live").await.0, 200);
    running.stop.cancel();
    running.done.await.unwrap();
}

/// Injected: the vendor returns records without one tracked field (a migrated resource whose
/// request leaves it out). The first poll warns once, naming the field and its vendor path;
/// later polls stay quiet; the other fields are published as before.
#[tokio::test]
async fn a_tracked_field_missing_from_every_record_is_warned_about_once() {
    let _ = logs();
    let rig = pollbus_testkit::Harness::scripted(pollbus_testkit::scripted::config(10, "")).await;
    for i in 0..3 {
        rig.source.put(
            &format!("m{i}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            // no "vip": the configuration tracks Vip = "vip"
            json!({"first_name": "A", "address": {"city": "B"}, "by": "IFS"}),
        );
    }
    // one poller, as the daemon keeps one per resource
    let poller = rig.poller("customers");
    let (trace, stop) = (
        pollbus::contract::TraceContext::random(),
        CancellationToken::new(),
    );
    poller.poll(&trace, &stop).await.unwrap();
    let warning = "tracked fields are missing from every record of this poll";
    let text = logs();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("Vip (vendor path \"vip\")") && !lines[0].contains("City"),
        "{}",
        lines[0]
    );
    rig.source
        .update("m0", "2024-06-01T10:05:00Z", json!({"first_name": "Z"}));
    poller.poll(&trace, &stop).await.unwrap();
    rig.publisher().drain().await.unwrap();
    let text = logs();
    assert_eq!(
        text.lines().filter(|l| l.contains(warning)).count(),
        1,
        "warned once: {text}"
    );
    assert_eq!(
        rig.sink.messages().last().unwrap().body.changed_fields,
        "FirstName"
    );
}
