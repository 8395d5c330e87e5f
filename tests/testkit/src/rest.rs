//! A Sage-Accounting-like contacts API for the generic REST source: `GET /v3.1/contacts` with
//! bearer auth (`sage-token`), `updated_or_created_since`, `page`/`items_per_page` or
//! `offset`/`limit` paging, `$items`/`$next` bodies and a `Link` header; `GET /v3.1/loop`, whose
//! `$next` always names the same page; and hooks to change contacts, inject faults and read the
//! request log. Contacts come in id order (the API cannot order by date).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::t;

/// The bearer token the API accepts.
pub const TOKEN: &str = "sage-token";

/// A running contacts API (it stops with the test's runtime).
pub struct RestSim {
    api: Shared,
    base: String,
}

impl RestSim {
    /// Starts the API on an ephemeral port.
    pub async fn start() -> RestSim {
        let api = Shared::default();
        let base = serve(api.clone()).await;
        RestSim { api, base }
    }

    /// The base URL (`http://127.0.0.1:port/v3.1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Inserts or replaces a contact.
    pub fn put(&self, id: &str, name: &str, created: &str, updated: &str) {
        self.put_at(id, name, t(created), t(updated));
    }

    /// Inserts or replaces a contact, dates as values.
    pub fn put_at(&self, id: &str, name: &str, created: DateTime<Utc>, updated: DateTime<Utc>) {
        let mut api = self.api.lock().unwrap();
        api.contacts.retain(|c| c.0 != id);
        api.contacts
            .push((id.into(), name.into(), created, updated));
    }

    /// Removes a contact.
    pub fn delete(&self, id: &str) {
        self.api.lock().unwrap().contacts.retain(|c| c.0 != id);
    }

    /// Answers every contacts request with a truncated body while on.
    pub fn set_malformed(&self, on: bool) {
        self.api.lock().unwrap().malformed = on;
    }

    /// Answers the next `skip` contacts requests normally, then fails `times` with `status`.
    pub fn inject_after(&self, skip: usize, status: u16, times: usize) {
        let mut api = self.api.lock().unwrap();
        api.faults.extend(std::iter::repeat_n(None, skip));
        api.faults.extend(std::iter::repeat_n(Some(status), times));
    }

    /// Sends `Date: <at>` (the API's own clock) on every contacts answer from now on; `None`:
    /// the HTTP server's real time.
    pub fn set_clock(&self, at: Option<DateTime<Utc>>) {
        self.api.lock().unwrap().clock = at;
    }

    /// Puts a contact right after the `n`-th contacts request from now (1-based) is answered:
    /// a change made by someone else while pollbus pages.
    pub fn put_after_request(
        &self,
        n: usize,
        id: &str,
        name: &str,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) {
        let mut api = self.api.lock().unwrap();
        let at = api.log.len() + n;
        api.pending
            .push((at, (id.into(), name.into(), created, updated)));
    }

    /// Answers the next contacts request `429 Too Many Requests` with `Retry-After: <value>`
    /// (any text: a vendor may send absurd values).
    pub fn rate_limit_once(&self, retry_after: &str) {
        self.api
            .lock()
            .unwrap()
            .rate_limits
            .push_back(retry_after.to_string());
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        self.api.lock().unwrap().faults.clear();
    }

    /// The query strings of the contacts requests so far.
    pub fn log(&self) -> Vec<String> {
        self.api.lock().unwrap().log.clone()
    }
}

/// A Sage-Accounting-like contacts API: `updated_or_created_since`, `page`/`items_per_page`
/// or `offset`/`limit` paging, `$items`/`$next` bodies and a `Link` header, bearer auth.
#[derive(Default)]
struct Api {
    contacts: Vec<Contact>,
    log: Vec<String>,
    malformed: bool,
    /// Per contacts request in order: a status to fail with, or `None` to answer normally.
    faults: VecDeque<Option<u16>>,
    /// The API's clock for the `Date` header, when set.
    clock: Option<DateTime<Utc>>,
    /// `Retry-After` values of 429 answers to give, one per contacts request.
    rate_limits: VecDeque<String>,
    /// Contacts to put once the log holds this many requests (see `put_after_request`).
    pending: Vec<(usize, Contact)>,
}

/// (id, name, created, updated)
type Contact = (String, String, DateTime<Utc>, DateTime<Utc>);

type Shared = Arc<Mutex<Api>>;

async fn contacts(
    State(api): State<Shared>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = q.unwrap_or_default();
    let mut api = api.lock().unwrap();
    api.log.push(q.clone());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sage-token") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!([{"$severity": "error", "$message": "Unauthorized"}])),
        )
            .into_response();
    }
    if let Some(retry_after) = api.rate_limits.pop_front() {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!([{"$severity": "error", "$message": "Too many requests"}])),
        )
            .into_response();
        if let Ok(value) = retry_after.parse() {
            response.headers_mut().insert("retry-after", value);
        }
        return response;
    }
    if let Some(status) = api.faults.pop_front().flatten() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            axum::Json(json!([{"$severity": "error", "$message": "Service unavailable"}])),
        )
            .into_response();
    }
    if api.malformed {
        return (StatusCode::OK, "{\"$items\": [").into_response();
    }
    let p = |k: &str| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    let since: Option<DateTime<Utc>> =
        p("updated_or_created_since").map(|s| s.parse().expect("RFC 3339 since"));
    let mut items: Vec<&Contact> = api
        .contacts
        .iter()
        .filter(|c| since.is_none_or(|s| c.3 >= s))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let total = items.len();
    let (skip, take) = match (p("page"), p("items_per_page"), p("offset"), p("limit")) {
        (page, Some(size), _, _) => {
            let page: usize = page.map_or(1, |p| p.parse().unwrap());
            let size: usize = size.parse().unwrap();
            ((page - 1) * size, size)
        }
        (_, _, Some(offset), Some(limit)) => (offset.parse().unwrap(), limit.parse().unwrap()),
        _ => (0, usize::MAX),
    };
    let page: Vec<Value> = items
        .iter()
        .skip(skip)
        .take(take)
        .map(|(id, name, created, updated)| {
            json!({"id": id, "displayed_as": name, "name": name, "contact_types": [{"id": "CUSTOMER"}],
                   "created_at": created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                   "updated_at": updated.format("%Y-%m-%dT%H:%M:%SZ").to_string()})
        })
        .collect();
    let more = take != usize::MAX && skip + take < total;
    let page_no = skip / take.max(1) + 1;
    let next = more.then(|| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k != "page" {
                s.append_pair(&k, &v);
            }
        }
        s.append_pair("page", &(page_no + 1).to_string());
        format!("/contacts?{}", s.finish())
    });
    let mut response = axum::Json(json!({
        "$total": total, "$page": page_no, "$next": next, "$back": null,
        "$itemsPerPage": take.min(total), "$items": page
    }))
    .into_response();
    if let Some(next) = &next {
        let link = format!(
            "<{}/v3.1{next}>; rel=\"next\"",
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| format!("http://{h}"))
                .unwrap_or_default()
        );
        response.headers_mut().insert("link", link.parse().unwrap());
    }
    if let Some(at) = api.clock {
        let date = httpdate::fmt_http_date(std::time::SystemTime::from(at));
        response.headers_mut().insert("date", date.parse().unwrap());
    }
    let answered = api.log.len();
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut api.pending)
        .into_iter()
        .partition(|(at, _)| *at <= answered);
    api.pending = later;
    for (_, contact) in due {
        api.contacts.retain(|c| c.0 != contact.0);
        api.contacts.push(contact);
    }
    response
}

/// An API whose `$next` always names the same page.
async fn endless() -> Response {
    axum::Json(json!({"$next": "/loop?page=2", "$items": [
        {"id": "c1", "name": "A", "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"}
    ]}))
    .into_response()
}

async fn serve(api: Shared) -> String {
    let app = Router::new()
        .route("/v3.1/contacts", get(contacts))
        .route("/v3.1/loop", get(endless))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v3.1")
}
