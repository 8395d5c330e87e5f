//! An SAP Concur simulator for tests: Expense Reports v3
//! (`GET /api/v3.0/expense/reports?modifiedDateAfter=&limit=&user=ALL&offset=<marker>`) and the
//! OAuth 2.0 token endpoint (`POST /oauth2/v0/token`, refresh-token grant, form-encoded).
//!
//! It listens on two addresses, as Concur has a global login host and per-company
//! "geolocations": the token endpoint answers on both and always returns the second
//! (`geo_url`) as `geolocation`; the reports API answers only there (elsewhere 403 with the v3
//! error body of the docs example). Every refresh **rotates** the refresh token: the old one
//! stops working, and presenting a rotated-away one again is **reuse**: every token of the
//! grant is revoked (`invalid_grant`), as reuse detection does. Records, token responses and error bodies are shaped like the documentation
//! examples in `shared/reference/fixtures/concur/`: report ids of 20 uppercase hex digits,
//! dates without zone and with a variable number of fraction digits, `expires_in` as a string.
//! Items are returned in id order (not by modification date), `NextPage` is an absolute URL
//! with an opaque `offset` marker, or null on the last page.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

/// The OAuth client the simulator knows.
pub const CLIENT: (&str, &str) = ("concur-client", "concur-secret");

/// A failure to inject into the next API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status with a v3 error body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RateLimited { retry_after: u64 },
    /// 200 with a body cut in half.
    Malformed,
}

#[derive(Debug, Clone)]
struct Report {
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    fields: Map<String, Value>,
}

/// One token request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `login` or `geo`: which address it reached.
    pub host: &'static str,
    pub grant_type: String,
    pub refresh_token: String,
    pub status: u16,
}

struct Inner {
    geo_url: String,
    refresh_tokens: HashSet<String>,
    /// Refresh tokens already exchanged (rotated away): presenting one again is reuse.
    spent: HashSet<String>,
    /// `expires_in` of issued access tokens, seconds.
    lifetime: u64,
    /// Refresh-token reuses seen (each revoked every token, as reuse detection does).
    reuses: usize,
    access_tokens: HashSet<String>,
    issued: u32,
    reports: BTreeMap<String, Report>,
    faults: VecDeque<Fault>,
    /// Faults for requests that follow a `NextPage` (carry an `offset`).
    page_faults: VecDeque<Fault>,
    token_log: Vec<TokenRequest>,
    api_log: Vec<(&'static str, String)>,
}

/// A running simulator.
pub struct ConcurSim {
    login: String,
    geo: String,
    inner: Arc<Mutex<Inner>>,
    stops: Vec<oneshot::Sender<()>>,
}

/// The fields of a report as in the documentation example, for a given name and total.
pub fn report(name: &str, total: f64) -> Value {
    let mut v = json!({
        "Name": name, "Total": total, "CurrencyCode": "CAD", "Country": "CA",
        "CountrySubdivision": "CA-BC", "SubmitDate": null, "ProcessingPaymentDate": null,
        "PaidDate": null, "ReceiptsReceived": false, "UserDefinedDate": "2013-09-02T00:00:00",
        "LastComment": "", "OwnerLoginID": "CAtraveler@concurconnect2.com",
        "OwnerName": "Canadian Traveler", "ApproverLoginID": null, "ApproverName": null,
        "ApprovalStatusName": "Not Submitted", "ApprovalStatusCode": "A_NOTF",
        "PaymentStatusName": "Not Paid", "PaymentStatusCode": "P_NOTP", "PersonalAmount": 0,
        "AmountDueEmployee": total, "AmountDueCompanyCard": 0, "TotalClaimedAmount": total,
        "TotalApprovedAmount": 0, "LedgerName": "DEFAULT",
        "PolicyID": "gWmINGEAkQoamAzOARD9NEBtuv0ppnbJ4lQ", "EverSentBack": false,
        "HasException": false
    });
    // OrgUnit1..6 and Custom1..20, null as in the example.
    let names = (1..=6)
        .map(|i| format!("OrgUnit{i}"))
        .chain((1..=20).map(|i| format!("Custom{i}")));
    for name in names {
        v[name] = Value::Null;
    }
    v
}

/// A date as Concur writes it: no zone, milliseconds without trailing zeros
/// (`2013-09-02T19:46:01.57`), none at all on a whole second.
fn concur_date(at: DateTime<Utc>) -> String {
    let text = at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    let text = text.trim_end_matches('0');
    text.trim_end_matches('.').to_string()
}

fn v3_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"Error": {
            "Message": message,
            "Server-Time": "2019-03-12T07:56:32",
            "Id": "65F68719-3FF5-459E-8B94-5FC93A5CD045"
        }})),
    )
        .into_response()
}

fn parse_after(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap())
        })
        .ok()
        .map(|n| n.and_utc())
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    host: &'static str,
}

async fn token(State(ctx): State<Ctx>, body: String) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut inner = ctx.inner.lock().unwrap();
    let geolocation = inner.geo_url.clone();
    let grant_type = field("grant_type");
    let refresh = field("refresh_token");
    let (status, response) = if field("client_id") != CLIENT.0 || field("client_secret") != CLIENT.1
    {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "client authentication failed", "code": 1, "geolocation": geolocation}),
        )
    } else if grant_type == "refresh_token" && inner.spent.contains(&refresh) {
        // Reuse detection: a rotated-away refresh token presented again means it leaked (or a
        // client raced itself); every token of the grant is revoked.
        inner.reuses += 1;
        inner.refresh_tokens.clear();
        inner.access_tokens.clear();
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "refresh token reuse detected; the grant is revoked", "code": 108, "geolocation": geolocation}),
        )
    } else if grant_type != "refresh_token" || !inner.refresh_tokens.remove(&refresh) {
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "bad or expired refresh token", "code": 108, "geolocation": geolocation}),
        )
    } else {
        inner.spent.insert(refresh.clone());
        inner.issued += 1;
        let n = inner.issued;
        let (access, rotated) = (format!("access-{n}"), format!("refresh-{n}"));
        inner.access_tokens.insert(access.clone());
        inner.refresh_tokens.insert(rotated.clone());
        (
            StatusCode::OK,
            json!({
                "expires_in": inner.lifetime.to_string(), "scope": "app-scopes", "token_type": "Bearer",
                "access_token": access, "refresh_token": rotated, "id_token": "oidc_token",
                "geolocation": geolocation
            }),
        )
    };
    inner.token_log.push(TokenRequest {
        host: ctx.host,
        grant_type,
        refresh_token: refresh,
        status: status.as_u16(),
    });
    (status, axum::Json(response)).into_response()
}

async fn reports(
    State(ctx): State<Ctx>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let mut inner = ctx.inner.lock().unwrap();
    inner.api_log.push((ctx.host, query.clone()));
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !inner.access_tokens.contains(bearer) {
        return v3_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if ctx.host != "geo" {
        return v3_error(StatusCode::FORBIDDEN, "Forbidden Request");
    }
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let fault = match params.contains_key("offset") {
        true => inner.page_faults.pop_front(),
        false => inner.faults.pop_front(),
    };
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return v3_error(status, "Service Unavailable");
        }
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = v3_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            r.headers_mut()
                .insert("Retry-After", retry_after.to_string().parse().unwrap());
            return r;
        }
        Some(Fault::Malformed) => {
            return (StatusCode::OK, "{\"Items\": [{\"Name\": \"Canadian").into_response()
        }
        None => {}
    }
    if params.get("user").map(String::as_str) != Some("ALL") {
        return v3_error(
            StatusCode::BAD_REQUEST,
            "this client lists every user's reports",
        );
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25);
    if limit == 0 || limit > 100 {
        return v3_error(StatusCode::BAD_REQUEST, "limit must be 1 to 100");
    }
    let after = match params.get("modifiedDateAfter") {
        Some(text) => match parse_after(text) {
            Some(t) => Some(t),
            None => return v3_error(StatusCode::BAD_REQUEST, "Invalid modifiedDateAfter"),
        },
        None => None,
    };
    // The opaque marker: the last id of the previous page, hex-encoded.
    let from = params
        .get("offset")
        .and_then(|o| hex::decode(o).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let matching: Vec<(&String, &Report)> = inner
        .reports
        .iter()
        .filter(|(_, r)| after.is_none_or(|a| r.modified > a))
        .filter(|(id, _)| from.as_ref().is_none_or(|f| id.as_str() > f.as_str()))
        .collect();
    let more = matching.len() > limit;
    let items: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|(id, r)| {
            let mut v = r.fields.clone();
            v.insert("CreateDate".into(), json!(concur_date(r.created)));
            v.insert("LastModifiedDate".into(), json!(concur_date(r.modified)));
            v.insert("ID".into(), json!(id));
            v.insert(
                "URI".into(),
                json!(format!("{}/api/v3.0/expense/reports/{id}", inner.geo_url)),
            );
            Value::Object(v)
        })
        .collect();
    let next = if more {
        let last = items
            .last()
            .and_then(|i| i["ID"].as_str())
            .unwrap_or_default();
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if k != "offset" {
                q.append_pair(k, v);
            }
        }
        q.append_pair("offset", &hex::encode(last));
        json!(format!(
            "{}/api/v3.0/expense/reports?{}",
            inner.geo_url,
            q.finish()
        ))
    } else {
        Value::Null
    };
    (
        StatusCode::OK,
        axum::Json(json!({"Items": items, "NextPage": next})),
    )
        .into_response()
}

async fn serve(
    inner: Arc<Mutex<Inner>>,
    host: &'static str,
    listener: tokio::net::TcpListener,
) -> oneshot::Sender<()> {
    let app = Router::new()
        .route("/oauth2/v0/token", post(token))
        .route("/api/v3.0/expense/reports", get(reports))
        .with_state(Ctx { inner, host });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    stop
}

impl ConcurSim {
    /// Starts the simulator with one valid refresh token, `initial_refresh`.
    pub async fn start(initial_refresh: &str) -> ConcurSim {
        let login = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let geo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let login_url = format!("http://{}", login.local_addr().unwrap());
        let geo_url = format!("http://{}", geo.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            geo_url: geo_url.clone(),
            refresh_tokens: HashSet::from([initial_refresh.to_string()]),
            spent: HashSet::new(),
            lifetime: 3600,
            reuses: 0,
            access_tokens: HashSet::new(),
            issued: 0,
            reports: BTreeMap::new(),
            faults: VecDeque::new(),
            page_faults: VecDeque::new(),
            token_log: Vec::new(),
            api_log: Vec::new(),
        }));
        let stops = vec![
            serve(inner.clone(), "login", login).await,
            serve(inner.clone(), "geo", geo).await,
        ];
        ConcurSim {
            login: login_url,
            geo: geo_url,
            inner,
            stops,
        }
    }

    /// The global login address (configured as `base_url`).
    pub fn login_url(&self) -> &str {
        &self.login
    }

    /// The company's geolocation (returned by the token endpoint).
    pub fn geo_url(&self) -> &str {
        &self.geo
    }

    /// Creates a report; `id` is 20 uppercase hex digits.
    pub fn insert(&self, id: &str, at: DateTime<Utc>, fields: Value) {
        self.inner.lock().unwrap().reports.insert(
            id.to_string(),
            Report {
                created: at,
                modified: at,
                fields: fields.as_object().cloned().unwrap_or_default(),
            },
        );
    }

    /// Changes a report and its `LastModifiedDate`.
    pub fn update(&self, id: &str, at: DateTime<Utc>, patch: Value) {
        let mut inner = self.inner.lock().unwrap();
        let r = inner.reports.get_mut(id).expect("known report");
        r.modified = at;
        for (k, v) in patch.as_object().cloned().unwrap_or_default() {
            r.fields.insert(k, v);
        }
    }

    /// Deletes a report.
    pub fn delete(&self, id: &str) {
        self.inner.lock().unwrap().reports.remove(id);
    }

    /// Answers the next API requests with these faults.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut inner = self.inner.lock().unwrap();
        for _ in 0..times {
            inner.faults.push_back(fault.clone());
        }
    }

    /// Answers the next requests that follow a `NextPage` with these faults.
    pub fn inject_next_page(&self, fault: Fault, times: usize) {
        let mut inner = self.inner.lock().unwrap();
        for _ in 0..times {
            inner.page_faults.push_back(fault.clone());
        }
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.faults.clear();
        inner.page_faults.clear();
    }

    /// Makes every access token invalid (the next API request gets 401).
    pub fn expire_access_tokens(&self) {
        self.inner.lock().unwrap().access_tokens.clear();
    }

    /// Sets `expires_in` of the access tokens issued from now on (3600 by default).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.inner.lock().unwrap().lifetime = seconds;
    }

    /// How many times a rotated-away refresh token was presented again (each time every token
    /// of the grant was revoked).
    pub fn refresh_token_reuses(&self) -> usize {
        self.inner.lock().unwrap().reuses
    }

    /// Revokes every refresh token (the user disconnected the app).
    pub fn revoke_refresh_tokens(&self) {
        self.inner.lock().unwrap().refresh_tokens.clear();
    }

    /// Token requests so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.inner.lock().unwrap().token_log.clone()
    }

    /// API requests so far: (`login` or `geo`, query string).
    pub fn api_requests(&self) -> Vec<(&'static str, String)> {
        self.inner.lock().unwrap().api_log.clone()
    }
}

impl Drop for ConcurSim {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}
