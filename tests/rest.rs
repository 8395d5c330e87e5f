//! The generic REST source through real HTTP and real SQLite: the seeds' SageOne customers
//! expressed as a `rest` resource (URL template, `$items`, `$next`), every paging style, and
//! malformed bodies.

use pollbus_testkit::rest::RestSim;
use pollbus_testkit::{t, Harness};

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

#[tokio::test]
async fn sageone_customers_create_update_delete() {
    let api = RestSim::start().await;
    let base = api.base_url().to_string();
    api.put("c1", "Kari", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z");
    api.put("c2", "Ola", "2024-05-01T10:00:05Z", "2024-05-01T10:00:05Z");
    let h = Harness::vendor(
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

    api.put(
        "c3",
        "Bjørn",
        "2024-05-02T09:00:00Z",
        "2024-05-02T09:00:00Z",
    );
    api.put(
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
    let log = api.log();
    let second_poll_first = log
        .iter()
        .find(|q| q.contains("2024-05-01T09%3A59%3A05Z") || q.contains("2024-05-01T09:59:05Z"));
    assert!(second_poll_first.is_some(), "{log:?}");
    assert!(
        log.iter().all(|q| q.contains("contact_type_id=CUSTOMER")),
        "{log:?}"
    );

    api.delete("c2");
    // The id listing pages by offset, where a record deleted mid-listing can hide another:
    // a record counts as deleted once two reconciliations in a row missed it.
    h.advance(chrono::Duration::hours(2));
    let r = h.poll("customers").await;
    assert_eq!(r.deleted, 0, "missed once: {r:?}");
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
        let api = RestSim::start().await;
        let base = api.base_url().to_string();
        for i in 0..7 {
            api.put(
                &format!("c{i}"),
                "X",
                "2024-05-01T10:00:00Z",
                &format!("2024-05-01T10:00:0{i}Z"),
            );
        }
        let h = Harness::vendor(
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
    let api = RestSim::start().await;
    let base = api.base_url().to_string();
    api.put("c1", "Kari", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z");
    let h = Harness::vendor(
        &config(&base, 10, r#"{ kind = "none" }"#, "", ""),
        t("2024-06-01T12:00:00Z"),
    )
    .await;
    h.poll("customers").await;
    let cursor = h.cursor("customers").await;
    api.put(
        "c1",
        "Kari N",
        "2024-05-01T10:00:00Z",
        "2024-05-01T11:00:00Z",
    );
    api.set_malformed(true);
    let err = h.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("sage/customers: GET http://") && err.contains("malformed JSON"),
        "{err}"
    );
    assert_eq!(h.cursor("customers").await, cursor);
    api.set_malformed(false);

    // A records pointer that finds nothing is named.
    let wrong = config(&base, 10, r#"{ kind = "none" }"#, "", "")
        .replace("records = \"/$items\"", "records = \"/data\"");
    let w = Harness::vendor(&wrong, t("2024-06-01T12:00:00Z")).await;
    let err = w.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("no array of records at JSON pointer \"/data\""),
        "{err}"
    );

    let unauthorized =
        config(&base, 10, r#"{ kind = "none" }"#, "", "").replace("sage-token", "wrong-token");
    let u = Harness::vendor(&unauthorized, t("2024-06-01T12:00:00Z")).await;
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
    let sim = RestSim::start().await;
    let base = sim.base_url().to_string();
    let text = config(
        &base,
        10,
        r#"{ kind = "next-url", pointer = "/$next" }"#,
        "",
        "",
    )
    .replace("url = \"/contacts?", "url = \"/loop?");
    let h = Harness::vendor(&text, t("2024-06-01T12:00:00Z")).await;
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

/// A token endpoint that answers every request with a 200 JSON body of `size` bytes, no
/// `Content-Length` (the body ends when the connection closes). Returns its URL.
async fn oversized_token_endpoint(size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                let pad = "a".repeat(size.saturating_sub(40));
                let body = format!(r#"{{"access_token":"t","pad":"{pad}"}}"#);
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn an_oversized_token_response_is_refused_naming_the_cap() {
    let api = RestSim::start().await;
    let token_url = oversized_token_endpoint(8 * 1024 * 1024).await;
    let oauth = format!(
        r#"auth = {{ kind = "oauth2", grant = "client_credentials", token_url = "{token_url}", client_id = "c", client_secret = "client-secret-value" }}"#
    );
    let toml = config(api.base_url(), 10, r#"{ kind = "none" }"#, "", "").replace(
        r#"auth = { kind = "bearer", token = "sage-token" }"#,
        &oauth,
    );
    let h = Harness::vendor(&toml, t("2024-06-01T12:00:00Z")).await;
    let err = h.try_poll("customers").await.unwrap_err().to_string();
    assert!(
        err.contains("token response exceeds the 65536 byte limit"),
        "{err}"
    );
    assert!(!err.contains("client-secret-value"), "{err}");
}

/// Injected: while pollbus pages through contacts (by id, pages of 2; the API cannot order by
/// date), someone changes `c1` — on the page already read — and `c4`, on a later page, was
/// changed 3 minutes later still. The API's clock (`Date`) reads 12:00:00 when the listing
/// begins. The cursor stops there instead of at c4's 12:03:00, so the next poll (overlap 60 s)
/// still finds c1's 12:01:00 change.
#[tokio::test]
async fn a_change_on_a_page_already_read_is_found_by_the_next_poll() {
    let api = RestSim::start().await;
    let base = api.base_url().to_string();
    for id in ["c1", "c2", "c3", "c4"] {
        api.put(id, "Old", "2024-06-01T11:00:00Z", "2024-06-01T11:00:00Z");
    }
    let h = Harness::vendor(
        &config(
            &base,
            2,
            r#"{ kind = "page", page_param = "page", size_param = "items_per_page" }"#,
            "",
            "",
        ),
        t("2024-06-01T12:00:00Z"),
    )
    .await;
    h.poll("customers").await;
    api.set_clock(Some(t("2024-06-01T12:00:00Z")));
    api.put(
        "c4",
        "Later",
        "2024-06-01T11:00:00Z",
        "2024-06-01T12:03:00Z",
    );
    api.put_after_request(
        1,
        "c1",
        "Meanwhile",
        t("2024-06-01T11:00:00Z"),
        t("2024-06-01T12:01:00Z"),
    );
    let r = h.poll("customers").await;
    assert_eq!(r.updated, 1, "c4 only: {r:?}");
    assert_eq!(
        h.cursor("customers").await,
        Some(t("2024-06-01T12:00:00Z")),
        "the API's clock at the start, not c4's date"
    );
    h.advance(chrono::Duration::minutes(5));
    api.set_clock(Some(t("2024-06-01T12:05:00Z")));
    let r = h.poll("customers").await;
    assert_eq!(r.updated, 1, "c1's change: {r:?}");
    let last = h.sink.messages().pop().unwrap();
    assert_eq!(
        (last.body.id.as_str(), last.body.timestamp.as_str()),
        ("c1", "2024-06-01T12:01:00Z")
    );
}
