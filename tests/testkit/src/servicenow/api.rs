//! The HTTP surface: Table API routes, `/oauth_token.do`, faults, headers and the request log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::query::{parse, parse_utc, Columns, FieldType, DATE_FORMAT};
use super::store::{Store, Stored};
use super::{auth, lock, read, ApiVersion, Fault, FaultTarget, LoggedRequest, Shared};

/// Largest request body read (token requests are tiny).
const MAX_BODY: usize = 64 * 1024;

/// Default `sysparm_limit`.
const DEFAULT_LIMIT: usize = 10_000;

/// Larger `sysparm_limit`/`sysparm_offset` values act like this one (beyond any table's size;
/// keeps the paging arithmetic far from overflow).
const MAX_PAGE: usize = 1 << 40;

/// Headers every Table API answer carries (from a real instance's response).
const INSTANCE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/json;charset=UTF-8"),
    ("Server", "ServiceNow"),
    ("X-Content-Type-Options", "nosniff"),
    ("Pragma", "no-store,no-cache"),
    (
        "Cache-Control",
        "no-cache,no-store,must-revalidate,max-age=-1",
    ),
    ("Expires", "0"),
    (
        "Strict-Transport-Security",
        "max-age=63072000; includeSubDomains",
    ),
    ("Server-Timing", "sem_wait;dur=0, sesh_wait;dur=0"),
];

/// Builds the router.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/now/table/{table}", get(table_default))
        .route("/api/now/v1/table/{table}", get(table_v1))
        .route("/api/now/v2/table/{table}", get(table_v2))
        .route("/api/now/table/{table}/{sys_id}", get(record_default))
        .route("/api/now/v1/table/{table}/{sys_id}", get(record_v1))
        .route("/api/now/v2/table/{table}/{sys_id}", get(record_v2))
        .route("/oauth_token.do", post(token))
        .fallback(unknown)
        .with_state(shared)
}

/// The route a Table API request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Default,
    V1,
    V2,
}

impl Route {
    /// The path segment after `/api/now/` (used in reference links).
    fn prefix(self) -> &'static str {
        match self {
            Route::Default => "",
            Route::V1 => "v1/",
            Route::V2 => "v2/",
        }
    }

    fn version(self, default: ApiVersion) -> ApiVersion {
        match self {
            Route::Default => default,
            Route::V1 => ApiVersion::V1,
            Route::V2 => ApiVersion::V2,
        }
    }
}

type Shd = State<Arc<Shared>>;

async fn table_default(State(s): Shd, Path(t): Path<String>, req: Request) -> Response {
    table_entry(s, Route::Default, t, None, req).await
}

async fn table_v1(State(s): Shd, Path(t): Path<String>, req: Request) -> Response {
    table_entry(s, Route::V1, t, None, req).await
}

async fn table_v2(State(s): Shd, Path(t): Path<String>, req: Request) -> Response {
    table_entry(s, Route::V2, t, None, req).await
}

async fn record_default(State(s): Shd, Path(p): Path<(String, String)>, req: Request) -> Response {
    table_entry(s, Route::Default, p.0, Some(p.1), req).await
}

async fn record_v1(State(s): Shd, Path(p): Path<(String, String)>, req: Request) -> Response {
    table_entry(s, Route::V1, p.0, Some(p.1), req).await
}

async fn record_v2(State(s): Shd, Path(p): Path<(String, String)>, req: Request) -> Response {
    table_entry(s, Route::V2, p.0, Some(p.1), req).await
}

/// What the log needs to know about a request.
struct Incoming {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    authorization: Option<String>,
    at: chrono::DateTime<Utc>,
    started: Instant,
}

impl Incoming {
    fn of(req: &Request) -> Incoming {
        let params = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Incoming {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            params,
            authorization: req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            at: Utc::now(),
            started: Instant::now(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.param(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// An answer being built.
#[derive(Debug, Default)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    user: Option<String>,
    ignored: Vec<String>,
    examined: usize,
    fault: Option<Fault>,
    /// Send half the body, then drop the connection.
    disconnect: bool,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: instance_headers(),
            body: serde_json::to_vec(body).unwrap_or_default(),
            ..Reply::default()
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

fn instance_headers() -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = INSTANCE_HEADERS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let transaction = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    headers.push(("X-Transaction-ID".into(), transaction));
    headers
}

/// `{"error": {"message", "detail"}, "status": "failure"}`.
fn sn_error(status: u16, message: &str, detail: Value) -> Reply {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    Reply::json(status, &body)
}

fn unauthenticated() -> Reply {
    sn_error(
        401,
        "User Not Authenticated",
        json!("Required to provide Auth information"),
    )
    .header("WWW-Authenticate", "BASIC realm=\"Service-now\"")
    .header("X-Is-Logged-In", "false")
}

fn rate_limited(retry_after: u64, limit: u32) -> Reply {
    let detail = format!("Rate limit of {limit} requests per hour for Table API exceeded");
    sn_error(429, "Rate limit exceeded", json!(detail))
        .header("Retry-After", retry_after.to_string())
}

fn no_record(detail: &str) -> Reply {
    sn_error(404, "No Record found", json!(detail))
}

async fn table_entry(
    shared: Arc<Shared>,
    route: Route,
    table: String,
    sys_id: Option<String>,
    req: Request,
) -> Response {
    let incoming = Incoming::of(&req);
    let fault = shared.take_fault(FaultTarget::Table);
    let reply = match early_fault(&shared, &fault).await {
        Some(reply) => reply,
        None => {
            let mut reply = table_reply(&shared, &incoming, route, &table, sys_id.as_deref());
            late_fault(&mut reply, &fault);
            reply
        }
    };
    finish(&shared, incoming, Reply { fault, ..reply })
}

fn table_reply(
    shared: &Shared,
    incoming: &Incoming,
    route: Route,
    table: &str,
    sys_id: Option<&str>,
) -> Reply {
    let Some(user) = auth::authenticate(shared, incoming.authorization.as_deref()) else {
        return unauthenticated();
    };
    let rule = lock(&shared.config).rate_limit.clone();
    let decision = rule
        .as_ref()
        .map(|rule| lock(&shared.rate).hit(&user, rule));
    let mut reply = match &decision {
        Some(d) if !d.allowed => rate_limited(
            d.retry_after,
            rule.as_ref().map_or(0, |r| r.requests_per_hour),
        ),
        _ => query_reply(shared, incoming, route, table, sys_id),
    };
    if let Some(d) = decision {
        reply.headers.extend(d.headers);
    }
    reply.user = Some(user);
    reply
}

/// Faults answered before the request is looked at; `Delay` sleeps and lets it through.
async fn early_fault(shared: &Shared, fault: &Option<Fault>) -> Option<Reply> {
    match fault.as_ref()? {
        Fault::Delay(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        Fault::Status(code) => Some(status_fault(*code)),
        Fault::RateLimited { retry_after } => {
            let limit = lock(&shared.config)
                .rate_limit
                .as_ref()
                .map_or(100, |r| r.requests_per_hour);
            Some(rate_limited(*retry_after, limit))
        }
        Fault::Hibernating => Some(Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "text/html;charset=UTF-8".into())],
            body: HIBERNATING_PAGE.as_bytes().to_vec(),
            ..Reply::default()
        }),
        Fault::TruncatedJson | Fault::MalformedJson | Fault::Disconnect | Fault::BadRecords => None,
    }
}

const HIBERNATING_PAGE: &str = "<html><head><title>Instance Hibernating page</title></head>\
<body><p>Your instance is hibernating. Log in to wake it up.</p></body></html>";

fn status_fault(code: u16) -> Reply {
    if code == 401 {
        return unauthenticated();
    }
    let code = if (100..=999).contains(&code) {
        code
    } else {
        500
    };
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    sn_error(code, reason, json!(format!("Injected HTTP {code}")))
}

/// Faults that spoil an otherwise normal answer.
fn late_fault(reply: &mut Reply, fault: &Option<Fault>) {
    match fault {
        Some(Fault::TruncatedJson) => {
            let keep = reply.body.len() / 2;
            reply.body.truncate(keep);
        }
        Some(Fault::MalformedJson) => {
            if reply.body.last() == Some(&b'}') {
                reply.body.pop();
                reply.body.extend_from_slice(b",\"x\":undefined}");
            } else {
                reply.body.extend_from_slice(b"undefined");
            }
        }
        Some(Fault::Disconnect) => reply.disconnect = true,
        Some(Fault::BadRecords) => {
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            // The first string value of the first record: `"result":[{"k":"v` → `…v\ud800`.
            let spoiled = text.find("\"result\":[{").and_then(|start| {
                let value_start = text[start..].find(":\"").map(|i| start + i + 2)?;
                let value_end = text[value_start..].find('"').map(|i| value_start + i)?;
                let mut out = text.clone();
                out.insert_str(value_end, "\\ud800");
                // The second record: add a deep field after its opening brace.
                let second = out[value_end..].find("},{").map(|i| value_end + i + 3)?;
                let deep = format!("\"deep\":{}1{},", "[".repeat(200), "]".repeat(200));
                out.insert_str(second, &deep);
                Some(out)
            });
            if let Some(out) = spoiled {
                reply.body = out.into_bytes();
            }
        }
        _ => {}
    }
}

/// The Table API parameters of a request.
struct TableParams {
    query: String,
    fields: Option<Vec<String>>,
    limit: usize,
    offset: usize,
    count: bool,
    exclude_links: bool,
    display: Shape,
    pagination_header: bool,
}

/// `sysparm_display_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Value,
    Display,
    All,
}

impl TableParams {
    fn of(incoming: &Incoming) -> TableParams {
        let fields = incoming.param("sysparm_fields").map(|f| {
            f.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        let display = match incoming.param("sysparm_display_value") {
            Some(v) if v.eq_ignore_ascii_case("true") => Shape::Display,
            Some(v) if v.eq_ignore_ascii_case("all") => Shape::All,
            _ => Shape::Value,
        };
        TableParams {
            query: incoming.param("sysparm_query").unwrap_or("").to_string(),
            fields: fields.filter(|f| !f.is_empty()),
            limit: incoming
                .param("sysparm_limit")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .map_or(DEFAULT_LIMIT, |n| n.min(MAX_PAGE)),
            offset: incoming
                .param("sysparm_offset")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map_or(0, |n| n.clamp(0, MAX_PAGE as i64) as usize),
            count: !incoming.flag("sysparm_no_count"),
            exclude_links: incoming.flag("sysparm_exclude_reference_link"),
            display,
            pagination_header: !incoming.flag("sysparm_suppress_pagination_header"),
        }
    }
}

/// A table's columns for the query planner, dot-walks included.
struct TableColumns<'a> {
    store: &'a Store,
    table: &'a str,
    columns: &'a BTreeMap<String, FieldType>,
}

impl Columns for TableColumns<'_> {
    fn field_type(&self, field: &str) -> Option<FieldType> {
        match self.columns.get(field) {
            Some(kind) => Some(kind.clone()),
            None if field.contains('.') => self.store.column_type(self.table, field),
            None => None,
        }
    }
}

/// How records are rendered for one request.
struct Render<'a> {
    store: &'a Store,
    base_url: &'a str,
    prefix: &'static str,
    display: Shape,
    exclude_links: bool,
    zone: chrono::FixedOffset,
}

fn query_reply(
    shared: &Shared,
    incoming: &Incoming,
    route: Route,
    table: &str,
    sys_id: Option<&str>,
) -> Reply {
    let config = shared.config();
    let params = TableParams::of(incoming);
    let store = read(&shared.store);
    if !store.has_table(table) {
        return sn_error(400, &format!("Invalid table {table}"), Value::Null);
    }
    let columns = store.columns(table);
    let render = Render {
        store: &store,
        base_url: &shared.base_url,
        prefix: route.prefix(),
        display: params.display,
        exclude_links: params.exclude_links,
        zone: config.user_time_zone,
    };
    let known = TableColumns {
        store: &store,
        table,
        columns: &columns,
    };
    let out_columns = output_columns(&known, params.fields.as_deref());
    if let Some(id) = sys_id {
        return single_record(shared, &render, &out_columns, table, id);
    }
    let plan = parse(&params.query).plan(&known, config.user_time_zone);
    let refuse = config.invalid_query_returns_no_rows && !plan.ignored.is_empty();
    let limit = if refuse { 0 } else { params.limit };
    let window = match store.select(table, &plan, params.offset, limit, params.count) {
        Ok(w) => w,
        Err(e) => return sn_error(400, &e.to_string(), Value::Null),
    };
    let acl = read(&shared.acl).clone();
    let records: Vec<Value> = window
        .rows
        .iter()
        .filter(|r| acl.as_ref().is_none_or(|hide| !hide(&r.fields())))
        .map(|r| render_record(&render, &out_columns, r))
        .collect();
    let mut reply = if records.is_empty() && route.version(config.default_version) == ApiVersion::V1
    {
        no_record("Records matching query not found. Check query parameter or offset parameter")
    } else {
        Reply::json(200, &json!({"result": records}))
    };
    if let Some(total) = window.total {
        reply = reply.header("X-Total-Count", total.to_string());
    }
    let link = link_header(
        &shared.base_url,
        incoming,
        &params,
        window.total,
        window.more,
    );
    if let Some(link) = link.filter(|_| params.pagination_header) {
        reply = reply.header("Link", link);
    }
    reply.ignored = plan.ignored;
    reply.examined = window.examined;
    reply
}

fn single_record(
    shared: &Shared,
    render: &Render<'_>,
    columns: &[(String, FieldType)],
    table: &str,
    sys_id: &str,
) -> Reply {
    let acl = read(&shared.acl).clone();
    let record = render
        .store
        .get_in(table, sys_id)
        .filter(|r| acl.as_ref().is_none_or(|hide| !hide(&r.fields())));
    match record {
        Some(r) => Reply::json(200, &json!({"result": render_record(render, columns, r)})),
        None => no_record("Record doesn't exist or ACL restricts the record retrieval"),
    }
}

/// The columns to render: the asked ones that exist (unknown names ignored; dot-walks like
/// `caller_id.name` allowed), else all of the table's.
fn output_columns(known: &TableColumns<'_>, asked: Option<&[String]>) -> Vec<(String, FieldType)> {
    let Some(names) = asked else {
        return known
            .columns
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    };
    let mut out: Vec<(String, FieldType)> = Vec::new();
    for name in names {
        if let Some(t) = known.field_type(name) {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), t));
            }
        }
    }
    out
}

fn render_record(render: &Render<'_>, columns: &[(String, FieldType)], record: &Stored) -> Value {
    let mut out = Map::new();
    for (name, kind) in columns {
        let value = render.store.value(record, name);
        out.insert(name.clone(), render_field(render, kind, value));
    }
    Value::Object(out)
}

/// One field in the shape `sysparm_display_value` / `sysparm_exclude_reference_link` ask for.
fn render_field(render: &Render<'_>, kind: &FieldType, value: &str) -> Value {
    let link = match kind {
        FieldType::Reference(target) if !value.is_empty() && !render.exclude_links => {
            Some(format!(
                "{}/api/now/{}table/{target}/{value}",
                render.base_url, render.prefix
            ))
        }
        _ => None,
    };
    match (render.display, link) {
        (Shape::Value, Some(link)) => json!({"link": link, "value": value}),
        (Shape::Value, None) => json!(value),
        (Shape::Display, Some(link)) => {
            json!({"display_value": display_text(render, kind, value), "link": link})
        }
        (Shape::Display, None) => json!(display_text(render, kind, value)),
        (Shape::All, link) => {
            let mut field =
                json!({"display_value": display_text(render, kind, value), "value": value});
            if let Some(link) = link {
                field["link"] = json!(link);
            }
            field
        }
    }
}

/// A value as the user sees it: dates in the user's zone, references as the target's display
/// value.
fn display_text(render: &Render<'_>, kind: &FieldType, value: &str) -> String {
    match kind {
        FieldType::DateTime => match parse_utc(value) {
            Some(utc) => render
                .zone
                .from_utc_datetime(&utc)
                .format(DATE_FORMAT)
                .to_string(),
            None => value.to_string(),
        },
        FieldType::Reference(_) if value.is_empty() => String::new(),
        FieldType::Reference(_) => render
            .store
            .get(value)
            .map(|r| render.store.display_value(r))
            .unwrap_or_default(),
        _ => value.to_string(),
    }
}

/// `Link: <…>;rel="first",<…>;rel="prev",<…>;rel="next",<…>;rel="last"`, echoing the caller's
/// other parameters. Absent for a single page; `prev` is sent on the first page too (offset
/// −limit), as a real instance does. Without a count, `last` is unknown and `next` is sent when
/// more records match.
fn link_header(
    base_url: &str,
    incoming: &Incoming,
    params: &TableParams,
    total: Option<usize>,
    more: bool,
) -> Option<String> {
    let (offset, limit) = (params.offset as i64, params.limit as i64);
    let single = match total {
        Some(total) => total == 0 || (offset == 0 && total as i64 <= limit),
        None => offset == 0 && !more,
    };
    if single {
        return None;
    }
    let url = |o: i64| page_url(base_url, incoming, limit, o);
    let mut links = vec![
        format!("<{}>;rel=\"first\"", url(0)),
        format!("<{}>;rel=\"prev\"", url(offset - limit)),
    ];
    let has_next = total.map_or(more, |t| offset + limit < t as i64);
    if has_next {
        links.push(format!("<{}>;rel=\"next\"", url(offset + limit)));
    }
    if let Some(total) = total {
        let last = ((total as i64 - 1) / limit) * limit;
        links.push(format!("<{}>;rel=\"last\"", url(last)));
    }
    Some(links.join(","))
}

fn page_url(base_url: &str, incoming: &Incoming, limit: i64, offset: i64) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &incoming.params {
        if k != "sysparm_limit" && k != "sysparm_offset" {
            query.append_pair(k, v);
        }
    }
    query.append_pair("sysparm_limit", &limit.to_string());
    query.append_pair("sysparm_offset", &offset.to_string());
    format!("{base_url}{}?{}", incoming.path, query.finish())
}

/// `POST /oauth_token.do`: form-encoded only.
async fn token(State(shared): Shd, req: Request) -> Response {
    let mut incoming = Incoming::of(&req);
    let fault = shared.take_fault(FaultTarget::Token);
    if let Some(reply) = early_fault(&shared, &fault).await {
        return finish(&shared, incoming, Reply { fault, ..reply });
    }
    let form_encoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await;
    let mut reply = match (form_encoded, body) {
        (_, Err(_)) => token_denied(413),
        (false, _) => token_denied(401),
        (true, Ok(bytes)) => {
            let form: Vec<(String, String)> =
                url::form_urlencoded::parse(&bytes).into_owned().collect();
            incoming.params = redacted(&form);
            let basic = incoming
                .authorization
                .as_deref()
                .and_then(auth::basic_credentials);
            match auth::grant(&shared, &form, basic) {
                Some((body, user)) => Reply {
                    user: Some(user),
                    ..token_json(200, &body)
                },
                None => token_denied(401),
            }
        }
    };
    late_fault(&mut reply, &fault);
    finish(&shared, incoming, Reply { fault, ..reply })
}

fn token_json(status: u16, body: &Value) -> Reply {
    Reply {
        status,
        headers: vec![
            (
                "Content-Type".into(),
                "application/json;charset=UTF-8".into(),
            ),
            ("Cache-Control".into(), "no-store".into()),
            ("Pragma".into(), "no-cache".into()),
        ],
        body: serde_json::to_vec(body).unwrap_or_default(),
        ..Reply::default()
    }
}

fn token_denied(status: u16) -> Reply {
    token_json(status, &auth::access_denied())
}

fn redacted(form: &[(String, String)]) -> Vec<(String, String)> {
    form.iter()
        .map(|(k, v)| {
            let secret = matches!(k.as_str(), "password" | "client_secret" | "refresh_token");
            (k.clone(), if secret { "***".into() } else { v.clone() })
        })
        .collect()
}

/// Any other path.
async fn unknown(State(shared): Shd, req: Request) -> Response {
    let incoming = Incoming::of(&req);
    let reply = sn_error(
        400,
        "Requested URI does not represent any resource",
        Value::Null,
    );
    finish(&shared, incoming, reply)
}

/// Logs the request and turns the reply into a response.
fn finish(shared: &Shared, incoming: Incoming, reply: Reply) -> Response {
    let sent = if reply.disconnect {
        reply.body.len() / 2
    } else {
        reply.body.len()
    };
    shared.record(LoggedRequest {
        method: incoming.method,
        path: incoming.path,
        params: incoming.params,
        auth: auth::auth_kind(incoming.authorization.as_deref()),
        user: reply.user.clone(),
        status: reply.status,
        response_bytes: sent,
        at: incoming.at,
        elapsed: incoming.started.elapsed(),
        ignored_query: reply.ignored.clone(),
        fault: reply.fault.clone(),
        examined: reply.examined,
    });
    into_response(reply)
}

fn into_response(reply: Reply) -> Response {
    let body = if reply.disconnect {
        broken_body(reply.body)
    } else {
        Body::from(reply.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// A body that sends its first half, then fails (the connection is dropped).
fn broken_body(body: Vec<u8>) -> Body {
    let half = Bytes::from(body[..body.len() / 2].to_vec());
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected disconnect",
        )),
    ];
    let stream = futures::stream::iter(chunks);
    Body::from_stream(futures::StreamExt::then(stream, |item| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        item
    }))
}
