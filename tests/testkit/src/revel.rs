//! A Revel Systems API simulator for tests: `/resources/{Resource}/` (and `/enterprise/…`) list
//! endpoints with Tastypie filters (`field__gte`, `__gt`, `__lte`, `__lt`, `__exact`, `field=`),
//! `order_by` (once per field, `-` for descending; a comma list is refused as Tastypie does), `limit`/`offset` (`limit=0` = everything),
//! `format=json`, the `API-AUTHENTICATION: key:secret` header, and injectable faults.
//!
//! Records look exactly like the real TimeSheetEntry captures in
//! `shared/reference/fixtures/revel/`: integer `id`, `resource_uri`, foreign keys as URIs and
//! `created_date`/`updated_date` as naive local times of the establishment's zone with
//! microseconds (no fraction when it is zero, as Django prints it). `meta` carries `limit`,
//! `offset`, `time_zone` and `total_count`; `next`/`previous` only when enabled, since real
//! captures lack them. Filters compare dates as local times, as the API does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

/// The credentials the simulator accepts by default.
pub const API_AUTHENTICATION: &str = "revel-key:revel-secret";

/// A failure to inject into the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This HTTP status with a JSON error body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RateLimited { retry_after: u64 },
    /// 200 with a body cut in half.
    Malformed,
    /// 200 with JSON that lacks `objects`.
    WrongShape,
}

#[derive(Debug, Clone)]
struct Record {
    id: i64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    fields: Map<String, Value>,
}

struct Inner {
    zone: Tz,
    credentials: String,
    with_next: bool,
    /// Filters (`field__op=`) are ignored, as an API would for a field it cannot filter on.
    ignore_filters: bool,
    /// The most records one answer holds, whatever `limit` asks (0 = no cap).
    max_limit: usize,
    /// Resource name → records by id.
    resources: BTreeMap<String, BTreeMap<i64, Record>>,
    /// Per request in order: a fault, or `None` to answer normally.
    faults: VecDeque<Option<Fault>>,
    log: Vec<String>,
}

/// A running simulator.
pub struct RevelSim {
    base: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<oneshot::Sender<()>>,
}

/// A TimeSheetEntry shaped like the captures (dates and ids are filled in per record).
pub fn timesheet(employee: u32, role: &str, clock_out: Option<&str>) -> Value {
    json!({
        "break_length": null, "break_type": null, "clock_in": "2018-08-20T09:00:00",
        "clock_out": clock_out, "created_by": "/enterprise/User/213/",
        "department_name": "Service Crew", "employee": format!("/resources/Employee/{employee}/"),
        "establishment": "/enterprise/Establishment/15/", "is_auto_clock_out": null,
        "returned_date": null, "role_name": role, "role_wage": 0.0, "stage": 0,
        "updated_by": "/enterprise/User/213/"
    })
}

/// A local time as Django prints it: microseconds, none when zero.
fn local_text(zone: Tz, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&zone).naive_local();
    if local.nanosecond() == 0 {
        local.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        local.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

fn parse_local(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
}

impl Record {
    fn json(&self, resource: &str, zone: Tz) -> Value {
        let mut v = self.fields.clone();
        let uri = format!("/resources/{resource}/{}/", self.id);
        v.insert("id".into(), json!(self.id));
        v.insert("created_date".into(), json!(local_text(zone, self.created)));
        v.insert("updated_date".into(), json!(local_text(zone, self.updated)));
        v.insert("resource_uri".into(), json!(uri));
        if resource == "TimeSheetEntry" {
            v.insert("parent".into(), json!(uri));
        }
        // Keys in the captures' (alphabetical) order.
        Value::Object(
            v.into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        )
    }
}

/// Orders two JSON values the way a database would: dates as local times, numbers as numbers.
fn compare(a: &Value, b: &str) -> Option<std::cmp::Ordering> {
    match a {
        Value::Number(n) => n.as_f64()?.partial_cmp(&b.parse::<f64>().ok()?),
        Value::String(s) => match (parse_local(s), parse_local(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => Some(s.as_str().cmp(b)),
        },
        Value::Bool(x) => Some(x.cmp(&(b == "true" || b == "1"))),
        _ => None,
    }
}

fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => match (parse_local(x), parse_local(y)) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => x.cmp(y),
        },
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn list(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let mut inner = inner.lock().unwrap();
    inner.log.push(format!("/resources/{resource}/?{query}"));
    let authorized = headers
        .get("API-AUTHENTICATION")
        .and_then(|v| v.to_str().ok())
        == Some(inner.credentials.as_str());
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "Authentication credentials were not provided or are invalid.",
        );
    }
    match inner.faults.pop_front().flatten() {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "Service temporarily unavailable");
        }
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Request was throttled.");
            r.headers_mut()
                .insert("Retry-After", retry_after.to_string().parse().unwrap());
            return r;
        }
        Some(Fault::Malformed) => {
            return (
                StatusCode::OK,
                "{\"meta\": {\"limit\": 20, \"offset\": 0}, \"objects\": [{\"id\": 18",
            )
                .into_response()
        }
        Some(Fault::WrongShape) => {
            return (StatusCode::OK, axum::Json(json!({"detail": "ok"}))).into_response()
        }
        None => {}
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !params.iter().any(|(k, v)| k == "format" && v == "json") {
        return (StatusCode::OK, "<?xml version=\"1.0\"?><response/>").into_response();
    }
    let zone = inner.zone;
    let mut rows: Vec<Value> = inner
        .resources
        .get(&resource)
        .map(|m| m.values().map(|r| r.json(&resource, zone)).collect())
        .unwrap_or_default();
    let mut limit: usize = 20;
    let mut offset: usize = 0;
    let mut order_by: Vec<String> = Vec::new();
    for (key, value) in &params {
        match key.as_str() {
            "format" => {}
            "limit" => limit = value.parse().unwrap_or(20),
            "offset" => offset = value.parse().unwrap_or(0),
            // Stock Tastypie: `request.GET.getlist('order_by')`, each value one field name
            // (`-` for descending); anything else is refused with Tastypie's InvalidSortError.
            "order_by" => {
                let field = value.trim_start_matches('-');
                let known = rows.first().is_none_or(|r| r.get(field).is_some());
                if field.is_empty() || field.contains(',') || !known {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({
                            "error": format!("No matching '{value}' field for ordering on.")
                        })),
                    )
                        .into_response();
                }
                order_by.push(value.clone());
            }
            _ if inner.ignore_filters => {}
            _ => {
                let (field, op) = key.rsplit_once("__").unwrap_or((key.as_str(), "exact"));
                rows.retain(|row| {
                    let Some(ord) = row.get(field).and_then(|v| compare(v, value)) else {
                        return false;
                    };
                    match op {
                        "gte" => ord.is_ge(),
                        "gt" => ord.is_gt(),
                        "lte" => ord.is_le(),
                        "lt" => ord.is_lt(),
                        _ => ord.is_eq(),
                    }
                });
            }
        }
    }
    if inner.max_limit > 0 && (limit == 0 || limit > inner.max_limit) {
        limit = inner.max_limit;
    }
    rows.sort_by(|a, b| {
        for key in &order_by {
            let (field, desc) = match key.strip_prefix('-') {
                Some(f) => (f, true),
                None => (key.as_str(), false),
            };
            let o = order(
                a.get(field).unwrap_or(&Value::Null),
                b.get(field).unwrap_or(&Value::Null),
            );
            let o = if desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let total = rows.len();
    let page: Vec<Value> = if limit == 0 {
        rows.into_iter().skip(offset).collect()
    } else {
        rows.into_iter().skip(offset).take(limit).collect()
    };
    let mut meta = json!({
        "limit": limit, "offset": offset, "time_zone": zone.name(), "total_count": total
    });
    if inner.with_next {
        let more = limit > 0 && offset + page.len() < total;
        meta["next"] = if more {
            json!(format!(
                "/resources/{resource}/?format=json&limit={limit}&offset={}",
                offset + limit
            ))
        } else {
            Value::Null
        };
        meta["previous"] = Value::Null;
    }
    (
        StatusCode::OK,
        axum::Json(json!({"meta": meta, "objects": page})),
    )
        .into_response()
}

impl RevelSim {
    /// Starts a simulator whose establishment is in `zone`.
    pub async fn start(zone: Tz) -> RevelSim {
        let inner = Arc::new(Mutex::new(Inner {
            zone,
            credentials: API_AUTHENTICATION.into(),
            with_next: false,
            max_limit: 0,
            ignore_filters: false,
            resources: BTreeMap::new(),
            faults: VecDeque::new(),
            log: Vec::new(),
        }));
        let app = Router::new()
            .route("/resources/{resource}/", get(list))
            .route("/enterprise/{resource}/", get(list))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        RevelSim {
            base: format!("http://{addr}"),
            inner,
            stop: Some(stop),
        }
    }

    /// The base URL (`https://<subdomain>.revelup.com` in production).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether `meta` carries `next`/`previous` (Tastypie default) or not (real captures).
    pub fn set_meta_next(&self, on: bool) {
        self.inner.lock().unwrap().with_next = on;
    }

    /// Ignores every filter from now on.
    pub fn ignore_filters(&self) {
        self.inner.lock().unwrap().ignore_filters = true;
    }

    /// Caps every answer at `n` records, whatever `limit` asks (`meta.limit` says so).
    pub fn set_max_limit(&self, n: usize) {
        self.inner.lock().unwrap().max_limit = n;
    }

    /// Creates a record of `resource` at `at` (created = updated).
    pub fn insert(&self, resource: &str, id: i64, at: DateTime<Utc>, fields: Value) {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.inner
            .lock()
            .unwrap()
            .resources
            .entry(resource.to_string())
            .or_default()
            .insert(
                id,
                Record {
                    id,
                    created: at,
                    updated: at,
                    fields,
                },
            );
    }

    /// Changes fields of a record and moves its updated date to `at`.
    pub fn update(&self, resource: &str, id: i64, at: DateTime<Utc>, patch: Value) {
        let mut inner = self.inner.lock().unwrap();
        let record = inner
            .resources
            .get_mut(resource)
            .and_then(|m| m.get_mut(&id))
            .expect("known record");
        record.updated = at;
        for (k, v) in patch.as_object().cloned().unwrap_or_default() {
            record.fields.insert(k, v);
        }
    }

    /// Deletes a record.
    pub fn delete(&self, resource: &str, id: i64) {
        if let Some(m) = self.inner.lock().unwrap().resources.get_mut(resource) {
            m.remove(&id);
        }
    }

    /// Answers the next requests with these faults, in order.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.inject_after(0, fault, times);
    }

    /// Answers the next `skip` requests normally, then fails `times` with `fault` (e.g. a
    /// failure on the second page of a poll).
    pub fn inject_after(&self, skip: usize, fault: Fault, times: usize) {
        let mut inner = self.inner.lock().unwrap();
        inner.faults.extend(std::iter::repeat_n(None, skip));
        inner.faults.extend(std::iter::repeat_n(Some(fault), times));
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    /// Requests seen so far (`path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.inner.lock().unwrap().log.clear();
    }
}

impl Drop for RevelSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
