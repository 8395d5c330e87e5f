//! HTTP-level tests of the simulator, through reqwest.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::*;

fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp literal")
}

/// The body of `fixtures/servicenow/error_rate_limit_429.json`.
fn fixture_429() -> Value {
    json!({
        "error": {
            "message": "Rate limit exceeded",
            "detail": "Rate limit of 100 requests per hour for Table API exceeded"
        },
        "status": "failure"
    })
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn result(&self) -> Vec<Value> {
        self.json()["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn field(&self, name: &str) -> Vec<String> {
        self.result()
            .iter()
            .map(|r| r[name].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request sent");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body read"),
    }
}

/// GET `path` with these query parameters as admin/admin.
async fn get(sn: &ServiceNowSim, path: &str, params: &[(&str, &str)]) -> Answer {
    let url = format!("{}{path}", sn.base_url());
    let request = reqwest::Client::new()
        .get(url)
        .query(params)
        .basic_auth(DEFAULT_USER.0, Some(DEFAULT_USER.1));
    send(request).await
}

async fn token(sn: &ServiceNowSim, form: &[(&str, &str)]) -> Answer {
    let url = format!("{}/oauth_token.do", sn.base_url());
    send(reqwest::Client::new().post(url).form(form)).await
}

async fn password_grant(sn: &ServiceNowSim) -> Value {
    let a = token(
        sn,
        &[
            ("grant_type", "password"),
            ("client_id", DEFAULT_CLIENT.0),
            ("client_secret", DEFAULT_CLIENT.1),
            ("username", DEFAULT_USER.0),
            ("password", DEFAULT_USER.1),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

async fn bearer_get(sn: &ServiceNowSim, access: &str) -> Answer {
    let request = reqwest::Client::new()
        .get(sn.table_url("incident"))
        .bearer_auth(access);
    send(request).await
}

/// Three incidents at distinct seconds, the caller a sys_user.
async fn seeded() -> (ServiceNowSim, Vec<String>, String) {
    let sn = ServiceNowSim::start().await;
    sn.set_now(t("2024-05-01T09:00:00Z"));
    let caller = sn.insert(
        "sys_user",
        json!({"name": "Joe Employee", "user_name": "joe"}),
    );
    let mut ids = Vec::new();
    for (i, at) in ["10:00:00", "10:00:01", "10:00:02"].iter().enumerate() {
        sn.set_now(t(&format!("2024-05-01T{at}Z")));
        ids.push(sn.insert(
            "incident",
            json!({"number": format!("INC000{i}"), "state": (i + 1).to_string(),
                   "caller_id": caller, "short_description": format!("Email down {i}")}),
        ));
    }
    (sn, ids, caller)
}

fn is_sys_id(s: &str) -> bool {
    s.len() == 32
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[tokio::test]
async fn records_are_shaped_like_the_real_thing() {
    let (sn, ids, caller) = seeded().await;
    let a = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "ORDERBYnumber")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(a.header("server"), Some("ServiceNow"));
    assert_eq!(a.header("x-total-count"), Some("3"));
    assert_eq!(a.header("x-transaction-id").map(str::len), Some(12));
    assert_eq!(a.header("link"), None, "a single page has no Link");
    let first = &a.result()[0];
    for (name, value) in first.as_object().unwrap() {
        assert!(
            value.is_string() || name == "caller_id",
            "{name} is {value}"
        );
    }
    assert_eq!(first["sys_id"], json!(ids[0]));
    assert!(is_sys_id(&ids[0]));
    assert_eq!(first["sys_updated_on"], json!("2024-05-01 10:00:00"));
    assert_eq!(first["sys_created_on"], json!("2024-05-01 10:00:00"));
    assert_eq!(first["sys_class_name"], json!("incident"));
    assert_eq!(first["sys_mod_count"], json!("0"));
    assert_eq!(first["sys_updated_by"], json!("admin"));
    assert_eq!(
        first["opened_at"],
        json!(""),
        "declared columns without value are empty"
    );
    assert_eq!(
        first["caller_id"],
        json!({"link": format!("{}/api/now/table/sys_user/{caller}", sn.base_url()), "value": caller})
    );
    assert_eq!(
        first["assigned_to"],
        json!(""),
        "an empty reference is a plain empty string"
    );
    let v2 = get(&sn, "/api/now/v2/table/incident", &[("sysparm_limit", "1")]).await;
    let link = v2.result()[0]["caller_id"]["link"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link.contains("/api/now/v2/table/sys_user/"), "{link}");
}

#[tokio::test]
async fn encoded_queries_filter_and_order() {
    let (sn, _, _) = seeded().await;
    let numbers = |q: &'static str| {
        let sn = &sn;
        async move {
            get(sn, "/api/now/table/incident", &[("sysparm_query", q)])
                .await
                .field("number")
        }
    };
    assert_eq!(
        numbers("state=1^ORstate=3^ORDERBYDESCnumber").await,
        ["INC0002", "INC0000"]
    );
    assert_eq!(
        numbers("state=1^NQstate=2^ORDERBYnumber").await,
        ["INC0000", "INC0001"]
    );
    assert_eq!(
        numbers("stateIN2,3^ORDERBYnumber").await,
        ["INC0001", "INC0002"]
    );
    assert_eq!(numbers("short_descriptionLIKEdown 1").await, ["INC0001"]);
    assert_eq!(
        numbers("short_descriptionLIKEDOWN").await,
        Vec::<String>::new()
    );
    assert_eq!(
        numbers("numberSTARTSWITHINC^numberENDSWITH2").await,
        ["INC0002"]
    );
    assert_eq!(
        numbers("state!=1^ORDERBYnumber").await,
        ["INC0001", "INC0002"]
    );
    assert_eq!(
        numbers("sys_updated_on>=2024-05-01 10:00:01^ORDERBYsys_updated_on^ORDERBYsys_id").await,
        ["INC0001", "INC0002"]
    );
    assert_eq!(
        numbers("sys_updated_on<2024-05-01 10:00:01").await,
        ["INC0000"]
    );
}

#[tokio::test]
async fn invalid_query_parts_are_silently_ignored_and_logged() {
    let (sn, _, _) = seeded().await;
    let a = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "u_nosuch=1^state=2")],
    )
    .await;
    assert_eq!(a.field("number"), ["INC0001"]);
    let all = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "u_nosuch=1")],
    )
    .await;
    assert_eq!(all.result().len(), 3, "an invalid query returns everything");
    let log = sn.table_requests();
    assert_eq!(log[0].ignored_query, vec!["u_nosuch=1"]);
    assert_eq!(log[0].param("sysparm_query"), Some("u_nosuch=1^state=2"));
    sn.configure(|c| c.invalid_query_returns_no_rows = true);
    let none = get(
        &sn,
        "/api/now/v2/table/incident",
        &[("sysparm_query", "u_nosuch=1")],
    )
    .await;
    assert_eq!((none.status, none.result().len()), (200, 0));
}

#[tokio::test]
async fn v1_answers_404_for_nothing_v2_an_empty_list() {
    let (sn, _, _) = seeded().await;
    let q = [("sysparm_query", "number=NOPE")];
    let v1 = get(&sn, "/api/now/v1/table/incident", &q).await;
    assert_eq!(v1.status, 404);
    assert_eq!(
        v1.json(),
        json!({"error": {"message": "No Record found",
            "detail": "Records matching query not found. Check query parameter or offset parameter"},
            "status": "failure"})
    );
    let v2 = get(&sn, "/api/now/v2/table/incident", &q).await;
    assert_eq!((v2.status, v2.json()), (200, json!({"result": []})));
    let default = get(&sn, "/api/now/table/incident", &q).await;
    assert_eq!(default.status, 200, "unversioned answers as v2 by default");
    sn.configure(|c| c.default_version = ApiVersion::V1);
    assert_eq!(get(&sn, "/api/now/table/incident", &q).await.status, 404);
    let bad = get(&sn, "/api/now/table/u_nope", &[]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["error"]["message"],
        json!("Invalid table u_nope")
    );
    assert_eq!(bad.json()["status"], json!("failure"));
}

#[tokio::test]
async fn fields_display_values_and_reference_links() {
    let (sn, ids, caller) = seeded().await;
    let q = |extra: &'static [(&'static str, &'static str)]| {
        let mut p = vec![
            ("sysparm_query", "number=INC0000"),
            ("sysparm_fields", "number,caller_id,sys_updated_on,nosuch"),
        ];
        p.extend_from_slice(extra);
        p
    };
    let plain = get(&sn, "/api/now/table/incident", &q(&[])).await.result()[0].clone();
    let keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["caller_id", "number", "sys_updated_on"],
        "unknown names ignored"
    );
    let bare = get(
        &sn,
        "/api/now/table/incident",
        &q(&[("sysparm_exclude_reference_link", "true")]),
    )
    .await;
    assert_eq!(bare.result()[0]["caller_id"], json!(caller));
    let display = get(
        &sn,
        "/api/now/table/incident",
        &q(&[("sysparm_display_value", "true")]),
    )
    .await;
    let link = format!("{}/api/now/table/sys_user/{caller}", sn.base_url());
    assert_eq!(
        display.result()[0]["caller_id"],
        json!({"display_value": "Joe Employee", "link": link})
    );
    assert_eq!(display.result()[0]["number"], json!("INC0000"));
    let all = get(
        &sn,
        "/api/now/table/incident",
        &q(&[("sysparm_display_value", "all")]),
    )
    .await;
    assert_eq!(
        all.result()[0]["caller_id"],
        json!({"display_value": "Joe Employee", "value": caller, "link": link})
    );
    assert_eq!(
        all.result()[0]["number"],
        json!({"display_value": "INC0000", "value": "INC0000"})
    );
    let all_bare = get(
        &sn,
        "/api/now/table/incident",
        &q(&[
            ("sysparm_display_value", "all"),
            ("sysparm_exclude_reference_link", "true"),
        ]),
    )
    .await;
    assert_eq!(
        all_bare.result()[0]["caller_id"],
        json!({"display_value": "Joe Employee", "value": caller})
    );
    sn.configure(|c| c.user_time_zone = chrono::FixedOffset::east_opt(3600).unwrap());
    let local = get(
        &sn,
        "/api/now/table/incident",
        &q(&[("sysparm_display_value", "true")]),
    )
    .await;
    assert_eq!(
        local.result()[0]["sys_updated_on"],
        json!("2024-05-01 11:00:00")
    );
    let one = get(&sn, &format!("/api/now/table/incident/{}", ids[1]), &[]).await;
    assert_eq!(one.json()["result"]["number"], json!("INC0001"));
    let missing = get(&sn, "/api/now/table/incident/0123", &[]).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn dot_walked_fields_in_queries_and_field_lists() {
    let (sn, _, caller) = seeded().await;
    let company = sn.insert("core_company", json!({"name": "Acme"}));
    sn.update("sys_user", &caller, json!({"company": company}));
    let params = [
        (
            "sysparm_query",
            "caller_id.company.name=Acme^number=INC0001",
        ),
        (
            "sysparm_fields",
            "number,caller_id.name,caller_id.company.name,caller_id.nosuch",
        ),
    ];
    let a = get(&sn, "/api/now/table/incident", &params).await;
    assert_eq!(
        a.result(),
        vec![
            json!({"number": "INC0001", "caller_id.name": "Joe Employee", "caller_id.company.name": "Acme"})
        ]
    );
    let none = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "caller_id.name=Nobody")],
    )
    .await;
    assert!(none.result().is_empty());
    let walked_off = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "number.name=x")],
    )
    .await;
    assert_eq!(
        walked_off.result().len(),
        3,
        "a walk through a non-reference is invalid, so ignored"
    );
}

#[tokio::test]
async fn paging_headers_limit_offset_and_count() {
    let (sn, _, _) = seeded().await;
    let params = [
        ("sysparm_query", "ORDERBYnumber"),
        ("display_value", "True"),
        ("sysparm_limit", "1"),
        ("sysparm_offset", "0"),
    ];
    let a = get(&sn, "/api/now/v2/table/incident", &params).await;
    assert_eq!(a.field("number"), ["INC0000"]);
    assert_eq!(a.header("x-total-count"), Some("3"));
    let base = format!(
        "{}/api/now/v2/table/incident?sysparm_query=ORDERBYnumber&display_value=True",
        sn.base_url()
    );
    let expected = format!(
        "<{base}&sysparm_limit=1&sysparm_offset=0>;rel=\"first\",<{base}&sysparm_limit=1&sysparm_offset=-1>;rel=\"prev\",<{base}&sysparm_limit=1&sysparm_offset=1>;rel=\"next\",<{base}&sysparm_limit=1&sysparm_offset=2>;rel=\"last\""
    );
    assert_eq!(a.header("link"), Some(expected.as_str()));
    let last = get(
        &sn,
        "/api/now/v2/table/incident",
        &[
            ("sysparm_query", "ORDERBYnumber"),
            ("sysparm_limit", "2"),
            ("sysparm_offset", "2"),
        ],
    )
    .await;
    assert_eq!(last.field("number"), ["INC0002"]);
    let link = last.header("link").unwrap();
    assert!(!link.contains("rel=\"next\""), "{link}");
    assert!(link.contains("sysparm_offset=2>;rel=\"last\""), "{link}");
    let no_count = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_no_count", "true"), ("sysparm_limit", "2")],
    )
    .await;
    assert_eq!(no_count.header("x-total-count"), None);
    assert_eq!(no_count.result().len(), 2);
    let link = no_count.header("link").unwrap();
    assert!(
        link.contains("rel=\"next\"") && !link.contains("rel=\"last\""),
        "{link}"
    );
    let suppressed = get(
        &sn,
        "/api/now/table/incident",
        &[
            ("sysparm_limit", "1"),
            ("sysparm_suppress_pagination_header", "true"),
        ],
    )
    .await;
    assert_eq!(suppressed.header("link"), None);
}

#[tokio::test]
async fn default_limit_is_ten_thousand() {
    let sn = ServiceNowSim::start().await;
    let rows = (0..10_001).map(|i| Fields::from([("number".to_string(), format!("N{i:05}"))]));
    sn.bulk_insert("incident", rows).unwrap();
    let a = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_fields", "sys_id")],
    )
    .await;
    assert_eq!(a.result().len(), 10_000);
    assert_eq!(a.header("x-total-count"), Some("10001"));
    assert!(a
        .header("link")
        .unwrap()
        .contains("sysparm_limit=10000&sysparm_offset=10000>;rel=\"next\""));
}

#[tokio::test]
async fn acl_hides_after_the_limit_so_pages_come_back_short() {
    let (sn, _, _) = seeded().await;
    sn.hide(|r| r.get("number").map(String::as_str) == Some("INC0001"));
    let q = [("sysparm_query", "ORDERBYnumber"), ("sysparm_limit", "2")];
    let first = get(&sn, "/api/now/table/incident", &q).await;
    assert_eq!(first.field("number"), ["INC0000"], "a short page");
    assert_eq!(
        first.header("x-total-count"),
        Some("3"),
        "counted before ACLs"
    );
    assert!(first.header("link").unwrap().contains("rel=\"next\""));
    let second = get(
        &sn,
        "/api/now/table/incident",
        &[q[0], q[1], ("sysparm_offset", "2")],
    )
    .await;
    assert_eq!(second.field("number"), ["INC0002"]);
    sn.clear_acl();
    assert_eq!(
        get(&sn, "/api/now/table/incident", &q).await.result().len(),
        2
    );
}

#[tokio::test]
async fn child_records_show_in_the_parent_with_the_same_sys_id() {
    let sn = ServiceNowSim::start().await;
    let company = sn.insert(
        "customer_account",
        json!({"name": "Acme", "number": "ACC0001"}),
    );
    let contact = sn.insert(
        "customer_contact",
        json!({"name": "Jane Contact", "account": company, "company": company}),
    );
    let user = sn.insert("sys_user", json!({"name": "Fred"}));
    let users = get(
        &sn,
        "/api/now/table/sys_user",
        &[("sysparm_query", "ORDERBYname")],
    )
    .await;
    assert_eq!(users.field("sys_id"), [user.clone(), contact.clone()]);
    assert_eq!(
        users.field("sys_class_name"),
        ["sys_user", "customer_contact"]
    );
    assert!(
        users.result()[1].get("account").is_none(),
        "a parent shows its own columns"
    );
    let contacts = get(&sn, "/api/now/table/customer_contact", &[]).await;
    assert_eq!(contacts.field("sys_id"), [contact.as_str()]);
    assert_eq!(
        contacts.result()[0]["account"]["link"],
        json!(format!(
            "{}/api/now/table/customer_account/{company}",
            sn.base_url()
        ))
    );
    let companies = get(&sn, "/api/now/table/core_company", &[]).await;
    assert_eq!(companies.field("sys_class_name"), ["customer_account"]);
    // An update through the parent moves the record in both tables.
    sn.set_now(t("2030-01-01T00:00:00Z"));
    assert!(sn.update("sys_user", &contact, json!({"name": "Jane C."})));
    let q = [("sysparm_query", "sys_updated_on>=2030-01-01 00:00:00")];
    assert_eq!(
        get(&sn, "/api/now/table/customer_contact", &q)
            .await
            .field("name"),
        ["Jane C."]
    );
    assert_eq!(
        get(&sn, "/api/now/table/sys_user", &q)
            .await
            .field("sys_mod_count"),
        ["1"]
    );
}

#[tokio::test]
async fn deletes_write_sys_audit_delete_unless_no_audit_delete() {
    let sn = ServiceNowSim::start().await;
    sn.define_table(TableDef::new("u_quiet").no_audit_delete());
    sn.set_now(t("2024-05-01T10:00:00Z"));
    let inc = sn.insert("incident", json!({"number": "INC1"}));
    let quiet = sn.insert("u_quiet", json!({"name": "q"}));
    let contact = sn.insert("customer_contact", json!({"name": "c"}));
    let cleaned = sn.insert("incident", json!({"number": "INC2"}));
    sn.set_now(t("2024-05-02T08:30:00Z"));
    assert!(sn.delete("incident", &inc));
    assert!(sn.delete("u_quiet", &quiet));
    assert!(sn.delete("sys_user", &contact));
    assert!(sn.purge("incident", &cleaned));
    assert!(!sn.delete("incident", &inc), "already gone");
    assert_eq!(sn.count("incident"), 0);
    let q = [(
        "sysparm_query",
        "tablenameINincident,u_quiet,customer_contact^sys_created_on>=2024-05-02 00:00:00^ORDERBYsys_created_on",
    )];
    let audit = get(&sn, "/api/now/table/sys_audit_delete", &q).await;
    assert_eq!(audit.status, 200);
    let rows = audit.result();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["tablename"].as_str().unwrap().into(),
                r["documentkey"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(keys.contains(&("incident".into(), inc.clone())));
    assert!(keys.contains(&("customer_contact".into(), contact.clone())));
    assert!(rows
        .iter()
        .all(|r| r["sys_created_on"] == json!("2024-05-02 08:30:00")));
    assert!(rows
        .iter()
        .all(|r| is_sys_id(r["sys_id"].as_str().unwrap())));
    let gone = get(&sn, &format!("/api/now/table/incident/{inc}"), &[]).await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn many_records_in_one_second_page_by_keyset() {
    let sn = ServiceNowSim::start().await;
    sn.set_now(t("2024-05-01T10:00:00Z"));
    for i in 0..25 {
        sn.insert("incident", json!({"number": format!("INC{i:04}")}));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<(String, String)> = None;
    loop {
        let q = match &cursor {
            None => "sys_updated_on>=2024-05-01 10:00:00^ORDERBYsys_updated_on^ORDERBYsys_id".to_string(),
            Some((at, id)) => format!(
                "sys_updated_on>{at}^NQsys_updated_on={at}^sys_id>{id}^ORDERBYsys_updated_on^ORDERBYsys_id"
            ),
        };
        let params = [
            ("sysparm_query", q.as_str()),
            ("sysparm_limit", "10"),
            ("sysparm_no_count", "true"),
        ];
        let page = get(&sn, "/api/now/table/incident", &params).await;
        let rows = page.result();
        if rows.is_empty() {
            break;
        }
        let last = rows.last().unwrap();
        cursor = Some((
            last["sys_updated_on"].as_str().unwrap().into(),
            last["sys_id"].as_str().unwrap().into(),
        ));
        seen.extend(page.field("sys_id"));
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "sys_id order within the second");
    assert_eq!(
        sn.table_requests().len(),
        4,
        "three pages and the empty end"
    );
    assert!(sn
        .table_requests()
        .iter()
        .all(|r| r.ignored_query.is_empty()));
}

#[tokio::test]
async fn keyset_queries_do_not_scan_the_table() {
    let sn = ServiceNowSim::start().await;
    let started = Instant::now();
    let rows = (0..30_000u32).map(|i| {
        let at = format!(
            "2024-01-01 {:02}:{:02}:{:02}",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60
        );
        Fields::from([
            ("sys_updated_on".to_string(), at),
            ("number".to_string(), format!("INC{i}")),
        ])
    });
    sn.bulk_insert("incident", rows).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bulk insert took {:?}",
        started.elapsed()
    );
    let q = "sys_updated_on>=2024-01-01 05:00:00^ORDERBYsys_updated_on^ORDERBYsys_id";
    let a = get(
        &sn,
        "/api/now/table/incident",
        &[
            ("sysparm_query", q),
            ("sysparm_limit", "100"),
            ("sysparm_no_count", "true"),
            ("sysparm_fields", "sys_id,sys_updated_on"),
        ],
    )
    .await;
    assert_eq!(a.result().len(), 100);
    assert_eq!(
        a.result()[0]["sys_updated_on"],
        json!("2024-01-01 05:00:00")
    );
    let examined = sn.table_requests()[0].examined;
    assert!(examined <= 101, "examined {examined} index entries");
}

#[tokio::test]
async fn clock_and_updates_drive_the_system_columns() {
    let sn = ServiceNowSim::start().await;
    sn.set_now(t("2024-05-01T10:00:00.750Z"));
    assert_eq!(sn.now(), t("2024-05-01T10:00:00Z"));
    let a = sn.insert(
        "incident",
        json!({"number": "INC1", "state": 1, "active": true}),
    );
    let b = sn.insert(
        "incident",
        json!({"number": "INC2", "sys_created_on": "2020-01-01 00:00:00", "sys_updated_on": "2020-01-02 03:04:05"}),
    );
    sn.advance(Duration::from_secs(90));
    assert!(sn.update("incident", &a, json!({"state": "2"})));
    assert!(
        !sn.update("incident", &a, json!({"state": "2"})),
        "no change, no bump"
    );
    let rec = sn.record("incident", &a).unwrap();
    assert_eq!(rec["state"], "2");
    assert_eq!(rec["active"], "true");
    assert_eq!(rec["sys_created_on"], "2024-05-01 10:00:00");
    assert_eq!(rec["sys_updated_on"], "2024-05-01 10:01:30");
    assert_eq!(rec["sys_mod_count"], "1");
    let rec = sn.record("incident", &b).unwrap();
    assert_eq!(rec["sys_updated_on"], "2020-01-02 03:04:05");
    assert!(sn.update(
        "incident",
        &b,
        json!({"state": "7", "sys_updated_on": "2020-01-03 00:00:00"})
    ));
    assert_eq!(
        sn.record("incident", &b).unwrap()["sys_updated_on"],
        "2020-01-03 00:00:00"
    );
    sn.use_system_clock();
    assert!((Utc::now() - sn.now()).num_seconds().abs() <= 2);
}

#[tokio::test]
async fn oauth_password_refresh_and_client_credentials() {
    let (sn, _, _) = seeded().await;
    let grant = password_grant(&sn).await;
    assert_eq!(grant["token_type"], json!("Bearer"));
    assert_eq!(grant["expires_in"], json!(1799));
    assert_eq!(grant["scope"], json!("useraccount"));
    let access = grant["access_token"].as_str().unwrap().to_string();
    let refresh = grant["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(access.len(), 86);
    let a = bearer_get(&sn, &access).await;
    assert_eq!(a.status, 200);
    assert_eq!(sn.table_requests()[0].auth, AuthKind::Bearer);
    assert_eq!(sn.table_requests()[0].user.as_deref(), Some("admin"));
    let refreshed = token(
        &sn,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", DEFAULT_CLIENT.0),
            ("client_secret", DEFAULT_CLIENT.1),
            ("refresh_token", &refresh),
        ],
    )
    .await
    .json();
    assert_eq!(
        refreshed["refresh_token"],
        json!(refresh),
        "same refresh token while valid"
    );
    assert_ne!(refreshed["access_token"], json!(access));
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", DEFAULT_CLIENT.0),
        ("client_secret", DEFAULT_CLIENT.1),
    ];
    let refused = token(&sn, &cc).await;
    assert_eq!(
        refused.status, 401,
        "off unless the instance property is set"
    );
    sn.configure(|c| c.client_credentials_user = Some("integration".into()));
    let granted = token(&sn, &cc).await.json();
    assert!(granted.get("refresh_token").is_none());
    let cc_access = granted["access_token"].as_str().unwrap();
    assert_eq!(bearer_get(&sn, cc_access).await.status, 200);
    let log = sn.token_requests();
    assert_eq!(log[0].param("grant_type"), Some("password"));
    assert_eq!(log[0].param("password"), Some("***"));
}

#[tokio::test]
async fn oauth_refusals() {
    let sn = ServiceNowSim::start().await;
    let denied = json!({"error": "server_error", "error_description": "access_denied"});
    let bad = token(
        &sn,
        &[
            ("grant_type", "password"),
            ("client_id", DEFAULT_CLIENT.0),
            ("client_secret", DEFAULT_CLIENT.1),
            ("username", "admin"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!((bad.status, bad.json()), (401, denied.clone()));
    let bad_client = token(
        &sn,
        &[
            ("grant_type", "password"),
            ("client_id", "x"),
            ("client_secret", "y"),
            ("username", "admin"),
            ("password", "admin"),
        ],
    )
    .await;
    assert_eq!(bad_client.status, 401);
    let json_body = reqwest::Client::new()
        .post(format!("{}/oauth_token.do", sn.base_url()))
        .json(
            &json!({"grant_type": "password", "client_id": DEFAULT_CLIENT.0,
            "client_secret": DEFAULT_CLIENT.1, "username": "admin", "password": "admin"}),
        );
    let json_body = send(json_body).await;
    assert_eq!(
        (json_body.status, json_body.json()),
        (401, denied.clone()),
        "form-encoded only"
    );
    let unknown_refresh = token(
        &sn,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", DEFAULT_CLIENT.0),
            ("client_secret", DEFAULT_CLIENT.1),
            ("refresh_token", "nope"),
        ],
    )
    .await;
    assert_eq!(unknown_refresh.status, 401);
}

#[tokio::test]
async fn tokens_expire() {
    let sn = ServiceNowSim::start_with(SimConfig {
        access_token_ttl: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let grant = password_grant(&sn).await;
    assert_eq!(grant["expires_in"], json!(1));
    let access = grant["access_token"].as_str().unwrap();
    assert_eq!(bearer_get(&sn, access).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = bearer_get(&sn, access).await;
    assert_eq!(expired.status, 401);
    assert_eq!(
        expired.json(),
        json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
               "status": "failure"})
    );
    let grant = password_grant(&sn).await;
    let refresh = grant["refresh_token"].as_str().unwrap().to_string();
    sn.configure(|c| c.access_token_ttl = Duration::from_secs(1799));
    let grant = password_grant(&sn).await;
    let access = grant["access_token"].as_str().unwrap();
    sn.expire_access_tokens();
    assert_eq!(bearer_get(&sn, access).await.status, 401);
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", DEFAULT_CLIENT.0),
        ("client_secret", DEFAULT_CLIENT.1),
        ("refresh_token", refresh.as_str()),
    ];
    assert_eq!(
        token(&sn, &form).await.status,
        200,
        "the refresh token survives"
    );
    sn.expire_all_tokens();
    assert_eq!(token(&sn, &form).await.status, 401);
}

#[tokio::test]
async fn basic_auth_and_missing_auth() {
    let (sn, _, _) = seeded().await;
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
    let anonymous = send(reqwest::Client::new().get(sn.table_url("incident"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.json()["error"]["message"],
        json!("User Not Authenticated")
    );
    let wrong = reqwest::Client::new()
        .get(sn.table_url("incident"))
        .basic_auth("admin", Some("nope"));
    assert_eq!(send(wrong).await.status, 401);
    sn.configure(|c| c.basic_auth = false);
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 401);
    let kinds: Vec<AuthKind> = sn.requests().iter().map(|r| r.auth).collect();
    assert_eq!(
        kinds,
        [
            AuthKind::Basic,
            AuthKind::None,
            AuthKind::Basic,
            AuthKind::Basic
        ]
    );
}

#[tokio::test]
async fn rate_limit_budget_then_429() {
    let (sn, _, _) = seeded().await;
    sn.set_rate_limit(Some(RateLimit::per_hour(2)));
    let first = get(&sn, "/api/now/table/incident", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(
        first.header("x-ratelimit-rule"),
        Some("a5ec56a3db3fb2001fd1ecd8db961960")
    );
    let reset: u64 = first.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = Utc::now().timestamp() as u64;
    assert!(reset > now && reset <= now + 3601, "{reset} vs {now}");
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
    let denied = get(&sn, "/api/now/table/incident", &[]).await;
    assert_eq!(denied.status, 429);
    let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    let mut expected = fixture_429();
    expected["error"]["detail"] = json!("Rate limit of 2 requests per hour for Table API exceeded");
    assert_eq!(denied.json(), expected);
    sn.set_rate_limit(Some(
        RateLimit::per_hour(1).with_window(Duration::from_millis(600)),
    ));
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 429);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        get(&sn, "/api/now/table/incident", &[]).await.status,
        200,
        "a new window"
    );
}

#[tokio::test]
async fn injected_status_and_rate_limit_faults_apply_n_times() {
    let (sn, _, _) = seeded().await;
    sn.inject(Fault::Status(503), 2);
    sn.inject(Fault::RateLimited { retry_after: 7 }, 1);
    sn.inject(Fault::Status(500), 1);
    let statuses = [503, 503, 429, 500, 200];
    for expected in statuses {
        let a = get(&sn, "/api/now/table/incident", &[]).await;
        assert_eq!(a.status, expected);
        if expected == 429 {
            assert_eq!(a.header("retry-after"), Some("7"));
            assert_eq!(a.json(), fixture_429());
        } else if expected != 200 {
            assert_eq!(a.json()["status"], json!("failure"));
            assert!(a.json()["error"]["message"].is_string());
        }
    }
    let faults: Vec<Option<Fault>> = sn.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(faults[2], Some(Fault::RateLimited { retry_after: 7 }));
    assert_eq!(faults[4], None);
    sn.inject(Fault::Status(401), 1);
    let a = get(&sn, "/api/now/table/incident", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.json()["error"]["message"],
        json!("User Not Authenticated")
    );
    sn.inject(Fault::Status(500), 3);
    sn.clear_faults();
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
}

#[tokio::test]
async fn injected_body_faults() {
    let (sn, _, _) = seeded().await;
    let clean = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "ORDERBYnumber")],
    )
    .await;
    sn.inject(Fault::TruncatedJson, 1);
    let cut = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_query", "ORDERBYnumber")],
    )
    .await;
    assert_eq!(cut.status, 200);
    assert!(serde_json::from_str::<Value>(&cut.text).is_err());
    assert!(!cut.text.is_empty() && clean.text.starts_with(&cut.text[..20]));
    assert_eq!(sn.requests()[1].response_bytes, cut.text.len());
    sn.inject(Fault::MalformedJson, 1);
    let bad = get(&sn, "/api/now/table/incident", &[]).await;
    let err = serde_json::from_str::<Value>(&bad.text).unwrap_err();
    assert!(err.is_syntax(), "{err}");
    sn.inject(Fault::Hibernating, 1);
    let html = get(&sn, "/api/now/table/incident", &[]).await;
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    sn.inject(Fault::Disconnect, 1);
    let response = reqwest::Client::new()
        .get(sn.table_url("incident"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.is_err(), "the body breaks off");
    assert_eq!(
        get(&sn, "/api/now/table/incident", &[])
            .await
            .result()
            .len(),
        3
    );
}

#[tokio::test]
async fn injected_delay_and_token_faults() {
    let (sn, _, _) = seeded().await;
    sn.inject(Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(sn.requests()[0].elapsed >= Duration::from_millis(300));
    sn.inject_for(FaultTarget::Token, Fault::Status(500), 1);
    let form = [
        ("grant_type", "password"),
        ("client_id", DEFAULT_CLIENT.0),
        ("client_secret", DEFAULT_CLIENT.1),
        ("username", "admin"),
        ("password", "admin"),
    ];
    assert_eq!(token(&sn, &form).await.status, 500);
    assert_eq!(
        get(&sn, "/api/now/table/incident", &[]).await.status,
        200,
        "table unaffected"
    );
    assert_eq!(token(&sn, &form).await.status, 200);
}

#[tokio::test]
async fn request_log_and_counters() {
    let (sn, _, _) = seeded().await;
    let a = get(
        &sn,
        "/api/now/table/incident",
        &[("sysparm_limit", "2"), ("sysparm_query", "ORDERBYnumber")],
    )
    .await;
    let log = sn.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/api/now/table/incident");
    assert_eq!(r.table(), Some("incident"));
    assert_eq!(
        r.params,
        vec![
            ("sysparm_limit".to_string(), "2".to_string()),
            ("sysparm_query".to_string(), "ORDERBYnumber".to_string())
        ]
    );
    assert_eq!(r.auth, AuthKind::Basic);
    assert_eq!(r.status, 200);
    assert_eq!(r.response_bytes, a.text.len());
    assert!((Utc::now() - r.at).num_seconds() < 5);
    let other = get(&sn, "/api/now/v2/nothing/here", &[]).await;
    assert_eq!(other.status, 400);
    assert_eq!(sn.request_count(), 2);
    assert_eq!(sn.table_requests().len(), 1);
    sn.clear_requests();
    assert_eq!(sn.request_count(), 0);
    let waiter = sn.wait_for_requests(1, Duration::from_millis(50)).await;
    assert!(!waiter);
    get(&sn, "/api/now/table/incident", &[]).await;
    assert!(sn.wait_for_requests(1, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn stop_and_resume() {
    let (sn, _, _) = seeded().await;
    assert_eq!(get(&sn, "/api/now/table/incident", &[]).await.status, 200);
    sn.stop().await;
    let refused = reqwest::Client::new()
        .get(sn.table_url("incident"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens");
    sn.resume().await.unwrap();
    assert_eq!(
        get(&sn, "/api/now/table/incident", &[])
            .await
            .result()
            .len(),
        3
    );
}

#[tokio::test]
async fn hostile_input_gets_answers_not_panics() {
    let (sn, _, _) = seeded().await;
    let odd = [
        vec![("sysparm_limit", "99999999999999999999999"), ("sysparm_offset", "-5")],
        vec![("sysparm_limit", "9223372036854775807"), ("sysparm_offset", "9223372036854775807")],
        vec![("sysparm_query", "^^^^OR^NQ^ORDERBY^ORDERBYDESC^=^!=x^stateBETWEEN1^sys_idIN")],
        vec![("sysparm_query", "sys_updated_on>javascript:gs.dateGenerate('2024-13-99','25:00:00')")],
        vec![("sysparm_query", "sys_updated_on>2024-05-02^sys_updated_on<2024-05-01^ORDERBYDESCsys_updated_on^ORDERBYDESCsys_id")],
        vec![("sysparm_query", "sys_id>zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz^sys_id<a")],
        vec![("sysparm_fields", ",,,.,..,caller_id..name"), ("sysparm_display_value", "ALL")],
    ];
    for params in odd {
        let a = get(&sn, "/api/now/v2/table/incident", &params).await;
        assert_eq!(a.status, 200, "{params:?}: {}", a.text);
        assert!(a.json()["result"].is_array());
    }
    let long_id = "f".repeat(500);
    let a = get(&sn, &format!("/api/now/table/incident/{long_id}"), &[]).await;
    assert_eq!(a.status, 404);
    let a = get(&sn, "/api/now/table/%FF%FE", &[]).await;
    assert!(a.status == 400 || a.status == 404, "{}", a.status);
    let huge = "x".repeat(200_000);
    let big = reqwest::Client::new()
        .post(format!("{}/oauth_token.do", sn.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&junk={huge}"));
    assert_eq!(send(big).await.status, 413);
    assert_eq!(
        get(&sn, "/api/now/table/incident", &[])
            .await
            .result()
            .len(),
        3,
        "still serving"
    );
}
