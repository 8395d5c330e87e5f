//! The generic REST source through real HTTP and real SQLite: the seeds' SageOne customers
//! expressed as a `rest` resource (URL template, `$items`, `$next`), every paging style, and
//! malformed bodies.

mod support;
#[path = "support"]
#[allow(dead_code, unused_imports)]
mod sim {
    pub mod harness;
}

use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use sim::harness::VendorHarness;
use support::t;

/// A Sage-Accounting-like contacts API: `updated_or_created_since`, `page`/`items_per_page`
/// or `offset`/`limit` paging, `$items`/`$next` bodies and a `Link` header, bearer auth.
#[derive(Default)]
struct Api {
    /// (id, name, created, updated)
    contacts: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)>,
    log: Vec<String>,
    malformed: bool,
}

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
    let mut items: Vec<&(String, String, DateTime<Utc>, DateTime<Utc>)> = api
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
    response
}

/// An API whose `$next` always names the same page.
async fn endless() -> Response {
    axum::Json(json!({"$next": "/loop?page=2", "$items": [
        {"id": "c1", "name": "A", "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"}
    ]}))
    .into_response()
}

async fn start(api: Shared) -> String {
    let app = Router::new()
        .route("/v3.1/contacts", get(contacts))
        .route("/v3.1/loop", get(endless))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v3.1")
}

/// The seeds' SageOne `customers` resource as a `rest` resource.
/// `query` is appended to the template (e.g. the API's own page size for `next-url`).
fn config(base: &str, page_size: u32, paging: &str, query: &str, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "sage"
kind = "rest"
base_url = "{base}"
source_system = "SageOne"
overlap = "60s"
page_size = {page_size}
max_attempts = 2
auth = {{ kind = "bearer", token = "sage-token" }}
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  id_field = "id"
  fields = {{ Name = "name" }}
  deletes = "reconcile"
  dates = {{ updated_field = "updated_at", updated_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", updated_timezone = "GMT", created_field = "created_at", created_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", created_timezone = "GMT" }}
  rest = {{ url = "/contacts?contact_type_id=CUSTOMER&updated_or_created_since=${{date:yyyy-MM-dd'T'HH:mm:ss'Z'}}{query}", records = "/$items", paging = {paging} }}
  {extra}
"#
    )
}

fn put(api: &Shared, id: &str, name: &str, created: &str, updated: &str) {
    let mut api = api.lock().unwrap();
    api.contacts.retain(|c| c.0 != id);
    api.contacts
        .push((id.into(), name.into(), t(created), t(updated)));
}

#[tokio::test]
async fn sageone_customers_create_update_delete() {
    let api: Shared = Shared::default();
    let base = start(api.clone()).await;
    put(
        &api,
        "c1",
        "Kari",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00Z",
    );
    put(
        &api,
        "c2",
        "Ola",
        "2024-05-01T10:00:05Z",
        "2024-05-01T10:00:05Z",
    );
    let h = VendorHarness::new(
        &config(
            &base,
            1,
            r#"{ kind = "next-url", pointer = "/$next" }"#,
            "&items_per_page=1",
            "",
        ),
        t("2024-06-01T12:00:00Z"),
    )
    .await;
    let r = h.poll("customers").await;
    assert_eq!((r.baseline, r.pages), (2, 2), "{r:?}");

    put(
        &api,
        "c3",
        "Bjørn",
        "2024-05-02T09:00:00Z",
        "2024-05-02T09:00:00Z",
    );
    put(
        &api,
        "c1",
        "Kari Nordmann",
        "2024-05-01T10:00:00Z",
        "2024-05-02T09:30:00Z",
    );
    let r = h.poll("customers").await;
    assert_eq!((r.created, r.updated), (1, 1), "{r:?}");
    let msgs = h.sink.messages();
    let create = msgs.iter().find(|m| m.body.id == "c3").unwrap();
    assert_eq!(
        (create.body.even_type.code(), create.body.timestamp.as_str()),
        (1, "2024-05-02T09:00:00Z")
    );
    let update = msgs.iter().find(|m| m.body.id == "c1").unwrap();
    assert_eq!(
        (
            update.body.even_type.code(),
            update.body.changed_fields.as_str()
        ),
        (2, "Name")
    );
    assert_eq!(h.cursor("customers").await, Some(t("2024-05-02T09:30:00Z")));
    // The template rendered at cursor − overlap (the first poll's cursor 10:00:05 − 60 s).
    let log = api.lock().unwrap().log.clone();
    let second_poll_first = log
        .iter()
        .find(|q| q.contains("2024-05-01T09%3A59%3A05Z") || q.contains("2024-05-01T09:59:05Z"));
    assert!(second_poll_first.is_some(), "{log:?}");
    assert!(
        log.iter().all(|q| q.contains("contact_type_id=CUSTOMER")),
        "{log:?}"
    );

    api.lock().unwrap().contacts.retain(|c| c.0 != "c2");
    h.advance(chrono::Duration::hours(2));
    let r = h.poll("customers").await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert_eq!(h.sink.messages().pop().unwrap().body.id, "c2");
}

#[tokio::test]
async fn every_paging_style_reads_every_record() {
    let styles = [
        (
            r#"{ kind = "next-url", pointer = "/$next" }"#,
            "&items_per_page=2",
            4,
        ),
        (r#"{ kind = "link-header" }"#, "&items_per_page=2", 4),
        (
            r#"{ kind = "page", page_param = "page", size_param = "items_per_page" }"#,
            "",
            4,
        ),
        (r#"{ kind = "offset" }"#, "", 4),
        (r#"{ kind = "none" }"#, "", 1),
    ];
    for (paging, query, pages) in styles {
        let api: Shared = Shared::default();
        let base = start(api.clone()).await;
        for i in 0..7 {
            put(
                &api,
                &format!("c{i}"),
                "X",
                "2024-05-01T10:00:00Z",
                &format!("2024-05-01T10:00:0{i}Z"),
            );
        }
        let h = VendorHarness::new(
            &config(&base, 2, paging, query, "initial = \"emit\""),
            t("2024-06-01T12:00:00Z"),
        )
        .await;
        let r = h.poll("customers").await;
        assert_eq!((r.records, r.pages), (7, pages), "{paging}: {r:?}");
        let mut ids: Vec<String> = h
            .sink
            .messages()
            .iter()
            .map(|m| m.body.id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 7, "{paging}");
        ids.dedup();
        assert_eq!(ids.len(), 7, "{paging}: no duplicates");
        assert_eq!(
            h.cursor("customers").await,
            Some(t("2024-05-01T10:00:06Z")),
            "{paging}"
        );
    }
}

#[tokio::test]
async fn bad_bodies_and_refused_auth_keep_the_cursor() {
    let api: Shared = Shared::default();
    let base = start(api.clone()).await;
    put(
        &api,
        "c1",
        "Kari",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00Z",
    );
    let h = VendorHarness::new(
        &config(&base, 10, r#"{ kind = "none" }"#, "", ""),
        t("2024-06-01T12:00:00Z"),
    )
    .await;
    h.poll("customers").await;
    let cursor = h.cursor("customers").await;
    put(
        &api,
        "c1",
        "Kari N",
        "2024-05-01T10:00:00Z",
        "2024-05-01T11:00:00Z",
    );
    api.lock().unwrap().malformed = true;
    let err = h.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("sage/customers: GET http://") && err.contains("malformed JSON"),
        "{err}"
    );
    assert_eq!(h.cursor("customers").await, cursor);
    api.lock().unwrap().malformed = false;

    // A records pointer that finds nothing is named.
    let wrong = config(&base, 10, r#"{ kind = "none" }"#, "", "")
        .replace("records = \"/$items\"", "records = \"/data\"");
    let w = VendorHarness::new(&wrong, t("2024-06-01T12:00:00Z")).await;
    let err = w.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("no array of records at JSON pointer \"/data\""),
        "{err}"
    );

    let unauthorized =
        config(&base, 10, r#"{ kind = "none" }"#, "", "").replace("sage-token", "wrong-token");
    let u = VendorHarness::new(&unauthorized, t("2024-06-01T12:00:00Z")).await;
    let err = u.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 401") && !err.contains("wrong-token"),
        "{err}"
    );

    let r = h.poll("customers").await;
    assert_eq!(r.updated, 1, "{r:?}");
}

#[tokio::test]
async fn a_next_page_naming_itself_stops_the_poll() {
    let base = start(Shared::default()).await;
    let text = config(
        &base,
        10,
        r#"{ kind = "next-url", pointer = "/$next" }"#,
        "",
        "",
    )
    .replace("url = \"/contacts?", "url = \"/loop?");
    let h = VendorHarness::new(&text, t("2024-06-01T12:00:00Z")).await;
    let poll = tokio::time::timeout(std::time::Duration::from_secs(30), h.try_poll("customers"));
    let err = poll
        .await
        .expect("no endless paging")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the next page \"/loop?page=2\" is the page just read"),
        "{err}"
    );
    assert_eq!(
        h.cursor("customers").await,
        None,
        "unordered: no cursor before the last page"
    );
}

#[test]
fn template_and_paging_problems_are_config_errors_naming_the_resource() {
    let text = config(
        "https://api.example.com",
        10,
        r#"{ kind = "next-url", pointer = "next" }"#,
        "",
        "",
    )
    .replace("${date:", "${nope:");
    let err = pollbus::config::Config::parse(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sources[0].resources[0].rest.url: resource \"customers\": unknown placeholder '${nope:"), "{err}");
    assert!(
        err.contains("sources[0].resources[0].rest.paging.pointer: \"next\" is not a JSON pointer"),
        "{err}"
    );
}
