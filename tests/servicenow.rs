//! The ServiceNow source through real HTTP against the simulator and real SQLite: detection,
//! keyset paging, OAuth, rate limits, malformed bodies, deletes, parent/child, restarts.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use pollbus::config::Config;
use pollbus::contract::{PropertyValue, TraceContext};
use pollbus_testkit::cli::http_get;
use pollbus_testkit::servicenow::{self as sim_sn, Fault, RateLimit, ServiceNowSim};
use pollbus_testkit::{t, Harness};

const OAUTH: &str = r#"auth = { kind = "oauth2", grant = "password", client_id = "pollbus", client_secret = "pollbus-secret", username = "admin", password = "admin" }"#;

fn config(base: &str, page_size: u32, resources: &str) -> Config {
    let text = format!(
        r#"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
overlap = "60s"
page_size = {page_size}
max_attempts = 4
{OAUTH}
{resources}
"#
    );
    Config::parse(&text, "sn.toml").unwrap_or_else(|e| panic!("{e}"))
}

const CONTACTS: &str = r#"
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = { FirstName = "first_name", LastName = "last_name", Email = "email", Company = "company" }
  on_behalf_of = { field = "sys_updated_by" }
  deletes = "audit"
"#;

/// The simulator and a harness polling it (system clock: the simulator keeps its own).
struct SnHarness {
    sim: ServiceNowSim,
    inner: Harness,
}

impl Deref for SnHarness {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.inner
    }
}

impl DerefMut for SnHarness {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.inner
    }
}

impl SnHarness {
    async fn new(page_size: u32, resources: &str) -> SnHarness {
        let sim = ServiceNowSim::start().await;
        sim.set_now(t("2024-05-01T10:00:00Z"));
        let config = config(sim.base_url(), page_size, resources);
        let inner = Harness::vendor_system_clock(config).await;
        SnHarness { sim, inner }
    }

    fn contact(&self, first: &str, last: &str) -> String {
        self.sim.insert(
            "customer_contact",
            json!({"first_name": first, "last_name": last, "email": format!("{first}@example.no").to_lowercase()}),
        )
    }
}

#[tokio::test]
async fn create_update_delete_with_exact_fields_and_values() {
    let h = SnHarness::new(100, CONTACTS).await;
    let existing = h.contact("Kari", "Nordmann");
    let r = h.poll("customer_contact").await;
    assert_eq!((r.baseline, r.messages()), (1, 0));

    h.sim.advance(Duration::from_secs(30));
    let company = h
        .sim
        .insert("core_company", json!({"name": "Bertel O. Steen"}));
    let new = h.contact("Bjørn", "Ødegård");
    h.sim.advance(Duration::from_secs(5));
    h.sim.update(
        "customer_contact",
        &existing,
        json!({"last_name": "Strøm", "company": company}),
    );
    let r = h.poll("customer_contact").await;
    assert_eq!((r.created, r.updated), (1, 1), "{r:?}");
    let msgs = h.sink.messages();
    let create = msgs.iter().find(|m| m.body.id == new).unwrap();
    assert_eq!(create.body.even_type.code(), 1);
    assert_eq!(
        create.body.changed_fields,
        "FirstName,LastName,Email,Company"
    );
    assert_eq!(
        create.application_properties["LastName"],
        PropertyValue::String("Ødegård".into())
    );
    assert_eq!(create.body.timestamp, "2024-05-01T10:00:30Z");
    assert_eq!(create.body.on_behalf_of.as_deref(), Some("admin"));
    let update = msgs.iter().find(|m| m.body.id == existing).unwrap();
    assert_eq!(update.body.changed_fields, "LastName,Company");
    assert_eq!(
        update.application_properties["Company"],
        PropertyValue::String(company.clone()),
        "reference → sys_id"
    );
    assert_eq!(update.body.timestamp, "2024-05-01T10:00:35Z");

    h.sim.advance(Duration::from_secs(5));
    assert!(h.sim.delete("customer_contact", &new));
    let r = h.poll("customer_contact").await;
    assert_eq!(r.deleted, 1, "{r:?}");
    let delete = h.sink.messages().pop().unwrap();
    assert_eq!(
        (delete.body.even_type.code(), delete.body.id.as_str()),
        (3, new.as_str())
    );
    assert_eq!(
        delete.body.timestamp, "2024-05-01T10:00:40Z",
        "the audit row's time"
    );

    // The request pollbus sent: only the fields it needs, keyset ordering, no count.
    let req = h
        .sim
        .table_requests()
        .into_iter()
        .find(|r| r.table() == Some("customer_contact"))
        .unwrap();
    assert_eq!(
        req.param("sysparm_fields"),
        Some("sys_id,sys_updated_on,sys_created_on,first_name,last_name,email,company,sys_updated_by,sys_class_name,sys_mod_count")
    );
    assert!(req
        .param("sysparm_query")
        .unwrap()
        .ends_with("^ORDERBYsys_updated_on^ORDERBYsys_id"));
    assert_eq!(req.param("sysparm_no_count"), Some("true"));
    assert_eq!(req.param("sysparm_exclude_reference_link"), Some("true"));
    assert!(
        h.sim.requests().iter().all(|r| r.ignored_query.is_empty()),
        "every query part was understood"
    );
    h.sink.assert_unique();
}

#[tokio::test]
async fn an_idle_poll_costs_one_request() {
    let h = SnHarness::new(100, CONTACTS).await;
    h.contact("A", "B");
    h.poll("customer_contact").await;
    h.sim.clear_requests();
    let r = h.poll("customer_contact").await;
    assert_eq!(r.messages(), 0);
    let table: Vec<_> = h
        .sim
        .table_requests()
        .into_iter()
        .filter(|r| r.table() == Some("customer_contact"))
        .collect();
    assert_eq!(table.len(), 1, "records: one request for an idle poll");
    println!(
        "idle poll: {} record request(s), {} request(s) in all (records + delete audit)",
        table.len(),
        h.sim.table_requests().len()
    );
}

#[tokio::test]
async fn many_records_in_one_second_across_page_boundaries() {
    let h = SnHarness::new(10, CONTACTS).await;
    h.poll("customer_contact").await; // empty baseline
    h.sim.advance(Duration::from_secs(10));
    let ids: Vec<String> = (0..35)
        .map(|i| h.contact(&format!("P{i}"), "Same"))
        .collect();
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 35, "{r:?}");
    let got: HashSet<String> = h
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
    h.sink.assert_unique();
    let pages = h
        .sim
        .table_requests()
        .into_iter()
        .filter(|r| r.table() == Some("customer_contact"))
        .count();
    assert_eq!(
        pages,
        1 + 4,
        "baseline + 4 pages of 10/10/10/5 (the short last page has no rel=next)"
    );
}

#[tokio::test]
async fn a_record_updated_while_being_paged_is_published_with_its_last_change() {
    let h = SnHarness::new(5, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    let ids: Vec<String> = (0..12).map(|i| h.contact(&format!("Q{i}"), "X")).collect();
    // Page 1 is served, then the first record changes before page 2 is asked for.
    let poller = h.poller("customer_contact");
    let first = poller
        .source
        .fetch(&poller.resource, t("2024-05-01T09:00:00Z"), None)
        .await
        .unwrap();
    assert_eq!(first.records.len(), 5);
    h.sim.advance(Duration::from_secs(1));
    h.sim
        .update("customer_contact", &ids[0], json!({"last_name": "Changed"}));
    let r = h.poll("customer_contact").await;
    assert_eq!((r.created, r.updated), (12, 0), "{r:?}");
    let latest = h
        .sink
        .messages()
        .into_iter()
        .find(|m| m.body.id == ids[0])
        .unwrap();
    assert_eq!(
        latest.application_properties["LastName"],
        PropertyValue::String("Changed".into())
    );
    h.sink.assert_unique();
}

#[tokio::test]
async fn acl_short_pages_are_not_the_end() {
    let h = SnHarness::new(5, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    for i in 0..12 {
        h.contact(
            &format!("R{i}"),
            if i % 3 == 0 { "Hidden" } else { "Visible" },
        );
    }
    h.sim
        .hide(|f| f.get("last_name").map(String::as_str) == Some("Hidden"));
    let r = h.poll("customer_contact").await;
    assert_eq!(
        r.created, 8,
        "every visible record despite short pages: {r:?}"
    );
}

#[tokio::test]
async fn token_expiry_mid_poll_refreshes_once_and_tokens_survive_a_restart() {
    let mut h = SnHarness::new(5, CONTACTS).await;
    for i in 0..12 {
        h.contact(&format!("T{i}"), "X");
    }
    h.sim.expire_access_tokens();
    h.poll("customer_contact").await;
    let logins = h.sim.token_requests().len();
    assert_eq!(logins, 1, "one password login");
    h.sim.expire_access_tokens();
    h.sim.advance(Duration::from_secs(10));
    h.contact("After", "Expiry");
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 1);
    let grants: Vec<String> = h
        .sim
        .token_requests()
        .iter()
        .filter_map(|r| r.param("grant_type").map(str::to_string))
        .collect();
    assert_eq!(
        grants,
        ["password", "refresh_token"],
        "401 → one refresh with the stored refresh token"
    );
    assert!(h.sim.requests().iter().any(|r| r.status == 401));
    h.restart().await;
    h.sim.clear_requests();
    h.poll("customer_contact").await;
    assert!(
        h.sim.token_requests().is_empty(),
        "a restart reuses the stored token"
    );
}

#[tokio::test]
async fn bad_credentials_stop_the_source_with_a_clear_error() {
    let h = SnHarness::new(5, CONTACTS).await;
    h.sim
        .configure(|c| c.users = vec![("admin".into(), "other".into())]);
    let err = h
        .poller("customer_contact")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(
        err.contains("refused the password grant (HTTP 401: server_error: access_denied)"),
        "{err}"
    );
    assert!(
        !err.contains("pollbus-secret") && !err.contains("admin\""),
        "no secret in {err}"
    );
    // The next attempt waits (backoff) instead of hammering the token endpoint.
    let again = h
        .poller("customer_contact")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("waiting") && again.contains("before the next login attempt"),
        "{again}"
    );
    assert_eq!(h.sim.token_requests().len(), 1);
}

#[tokio::test]
async fn a_429_storm_completes_without_sending_before_retry_after() {
    let h = SnHarness::new(5, CONTACTS).await;
    for i in 0..7 {
        h.contact(&format!("S{i}"), "X");
    }
    h.sim.inject(Fault::RateLimited { retry_after: 1 }, 2);
    let r = h.poll("customer_contact").await;
    assert_eq!(r.baseline, 7);
    let reqs: Vec<_> = h.sim.table_requests();
    let limited: Vec<_> = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 429)
        .collect();
    assert_eq!(limited.len(), 2);
    for (i, r) in limited {
        let next = &reqs[i + 1];
        let gap = (next.at - r.at).to_std().unwrap();
        assert!(
            gap >= Duration::from_millis(990),
            "request {} came {gap:?} after a 429 with Retry-After: 1",
            i + 1
        );
    }
}

#[tokio::test]
async fn the_request_budget_keeps_under_the_instance_rule() {
    let text = CONTACTS.to_string();
    let mut h = SnHarness::new(5, &text).await;
    h.config.sources[0].max_requests_per_hour = Some(3);
    h.restart().await;
    h.sim.set_rate_limit(Some(RateLimit::per_hour(3)));
    h.contact("A", "B");
    h.poll("customer_contact").await; // token + records (1 page + empty) + … within 3 table requests
    let over = tokio::time::timeout(
        Duration::from_millis(500),
        h.poller("customer_contact")
            .poll(&TraceContext::random(), &CancellationToken::new()),
    )
    .await;
    assert!(
        over.is_err(),
        "the fourth request waits for the budget instead of being sent"
    );
    assert!(
        h.sim.requests().iter().all(|r| r.status != 429),
        "never exceeded the instance rule"
    );
}

#[tokio::test]
async fn malformed_json_is_a_clear_error_and_the_next_poll_succeeds() {
    let h = SnHarness::new(5, CONTACTS).await;
    h.contact("A", "B");
    h.poll("customer_contact").await;
    let key = pollbus::store::ResourceKey::new("sn", "customer_contact");
    let before = h.store.resource_state(&key).await.unwrap();
    h.sim.advance(Duration::from_secs(10));
    h.contact("C", "D");
    for fault in [
        Fault::MalformedJson,
        Fault::TruncatedJson,
        Fault::Hibernating,
    ] {
        h.sim.inject(fault.clone(), 1);
        let err = h
            .poller("customer_contact")
            .poll(&TraceContext::random(), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("malformed JSON") && err.contains("/api/now/table/customer_contact"),
            "{fault:?}: {err}"
        );
        assert_eq!(
            h.store.resource_state(&key).await.unwrap(),
            before,
            "cursor unchanged"
        );
    }
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 1);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let h = SnHarness::new(5, CONTACTS).await;
    h.contact("A", "B");
    h.sim.inject(Fault::Status(503), 2);
    h.poll("customer_contact").await;
    assert_eq!(
        h.sim
            .table_requests()
            .iter()
            .filter(|r| r.status == 503)
            .count(),
        2
    );
    h.sim.inject(Fault::Status(403), 1);
    let err = h
        .poller("customer_contact")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 403"), "{err}");
    assert_eq!(
        h.sim
            .table_requests()
            .iter()
            .filter(|r| r.status == 403)
            .count(),
        1,
        "never retried"
    );
}

const PARENT_AND_CHILD: &str = r#"
  [[sources.resources]]
  name = "sys_user"
  entity = "user"
  fields = { FirstName = "first_name", LastName = "last_name" }
  deletes = "audit"
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = { FirstName = "first_name", LastName = "last_name" }
  deletes = "audit"
"#;

#[tokio::test]
async fn a_child_record_is_published_once_for_the_child_entity() {
    let h = SnHarness::new(50, PARENT_AND_CHILD).await;
    h.poll("sys_user").await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    let contact = h.contact("Child", "Record");
    let user = h.sim.insert(
        "sys_user",
        json!({"first_name": "Plain", "last_name": "User"}),
    );
    let parent = h.poll("sys_user").await;
    let child = h.poll("customer_contact").await;
    assert_eq!((parent.created, parent.delegated), (1, 1), "{parent:?}");
    assert_eq!(child.created, 1);
    let summary: Vec<(String, String)> = h
        .sink
        .messages()
        .iter()
        .map(|m| (m.topic.clone(), m.body.id.clone()))
        .collect();
    assert_eq!(summary.len(), 2);
    assert!(summary.contains(&("api.event.customer".into(), contact.clone())));
    assert!(summary.contains(&("api.event.user".into(), user.clone())));
    h.sim.advance(Duration::from_secs(10));
    h.sim.delete("customer_contact", &contact);
    h.poll("sys_user").await;
    h.poll("customer_contact").await;
    let deletes: Vec<_> = h
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.body.even_type.code() == 3)
        .collect();
    assert_eq!(deletes.len(), 1, "one DELETE, for the child");
    assert_eq!(deletes[0].topic, "api.event.customer");
}

const BOTH_DELETES: &str = r#"
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = { FirstName = "first_name" }
  deletes = "both"
  reconcile_interval = "1m"
  reconcile_max_delete_ratio = 1.0
"#;

/// Reconciliation runs every minute: pretend a minute passed by clearing its timestamp.
async fn make_reconcile_due(h: &SnHarness) {
    let key = pollbus::store::ResourceKey::new("sn", "customer_contact");
    let mut state = h.store.resource_state(&key).await.unwrap().unwrap();
    state.last_reconcile = Some(t("2000-01-01T00:00:00Z"));
    h.store
        .commit_page(
            &key,
            pollbus::store::PageCommit {
                at: chrono::Utc::now(),
                state: Some(state),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// Injected: a run of 5 records hidden by ACLs (applied after `sysparm_limit`) between two
/// visible ones, with pages of 2: the instance answers `200 {"result": []}` with `rel="next"`
/// twice in a row. pollbus pages past them with `sysparm_offset` and publishes the visible
/// record behind them in the same poll.
#[tokio::test]
async fn a_run_of_hidden_rows_longer_than_a_page_is_not_the_end() {
    let h = SnHarness::new(2, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    let before = h.contact("Before", "Visible");
    for i in 0..5 {
        h.sim.advance(Duration::from_secs(1));
        h.contact(&format!("H{i}"), "Hidden");
    }
    h.sim.advance(Duration::from_secs(1));
    let behind = h.contact("Behind", "Visible");
    h.sim
        .hide(|f| f.get("last_name").map(String::as_str) == Some("Hidden"));
    h.sim.clear_requests();
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 2, "{r:?}");
    let created: HashSet<String> = h
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(created, HashSet::from([before, behind]));
    let offsets: Vec<String> = h
        .sim
        .table_requests()
        .iter()
        .filter(|r| r.path.ends_with("/customer_contact"))
        .filter_map(|r| r.param("sysparm_offset").map(str::to_string))
        .collect();
    assert!(
        !offsets.is_empty(),
        "paged past the hidden rows with sysparm_offset"
    );
    // The next poll does not stop at the hidden run either: a change behind it arrives.
    h.sim.advance(Duration::from_secs(5));
    let later = h.contact("Later", "Visible");
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 1, "{r:?}");
    assert!(h.sink.messages().iter().any(|m| m.body.id == later));
    h.sink.assert_unique();
}

/// Injected: 6 records the integration user may not read (ACLs) sort, by sys_id, between the
/// first and the last two records pollbus knows; the id listing (pages of 3) meets two empty
/// pages with `rel="next"`. Reconciliation lists on past them and deletes nothing: a cut
/// listing never makes live records look deleted.
#[tokio::test]
async fn hidden_rows_in_the_id_listing_do_not_make_live_records_look_deleted() {
    let h = SnHarness::new(3, BOTH_DELETES).await;
    for id in ["a0", "a1", "z0", "z1"] {
        h.sim.insert(
            "customer_contact",
            json!({"sys_id": id, "first_name": id, "last_name": "Visible"}),
        );
    }
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    for i in 0..6 {
        h.sim.insert(
            "customer_contact",
            json!({"sys_id": format!("b{i}"), "first_name": "H", "last_name": "Hidden"}),
        );
    }
    h.sim
        .hide(|f| f.get("last_name").map(String::as_str) == Some("Hidden"));
    make_reconcile_due(&h).await;
    let r = h.poll("customer_contact").await;
    assert_eq!(r.deleted, 0, "{r:?}");
    assert!(
        h.sink
            .messages()
            .iter()
            .all(|m| m.body.even_type.code() != 3),
        "no DELETE for a live record"
    );
}

/// Injected: a delete recorded in `sys_audit_delete` within the overlap. An idle poll then
/// costs one records request and one audit request (a short audit page without `rel="next"`
/// ends the audit listing as it ends the records listing).
#[tokio::test]
async fn an_idle_poll_costs_one_records_request_and_one_audit_request() {
    let h = SnHarness::new(5, CONTACTS).await;
    let ids: Vec<String> = (0..3).map(|i| h.contact(&format!("I{i}"), "X")).collect();
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(5));
    h.sim.delete("customer_contact", &ids[0]);
    let r = h.poll("customer_contact").await;
    assert_eq!(r.deleted, 1);
    for _ in 0..2 {
        h.sim.advance(Duration::from_secs(5));
        h.sim.clear_requests();
        let r = h.poll("customer_contact").await;
        assert_eq!(r.messages(), 0, "{r:?}");
        let paths: Vec<String> = h
            .sim
            .table_requests()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(
            paths.len(),
            2,
            "one records and one audit request: {paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.ends_with("/sys_audit_delete")),
            "{paths:?}"
        );
    }
}

#[tokio::test]
async fn audit_and_reconcile_deletes_emit_one_delete_each() {
    let h = SnHarness::new(3, BOTH_DELETES).await;
    let ids: Vec<String> = (0..7).map(|i| h.contact(&format!("D{i}"), "X")).collect();
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    h.sim.delete("customer_contact", &ids[0]); // audited
    h.sim.purge("customer_contact", &ids[1]); // Table Cleaner: no audit row
    let r = h.poll("customer_contact").await;
    assert_eq!(
        r.deleted, 1,
        "the audit finds one; reconciliation is not due yet"
    );
    make_reconcile_due(&h).await;
    let r = h.poll("customer_contact").await;
    assert_eq!(r.deleted, 1, "reconciliation finds the purged one: {r:?}");
    let deleted: Vec<String> = h
        .sink
        .messages()
        .iter()
        .filter(|m| m.body.even_type.code() == 3)
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(deleted, [ids[0].clone(), ids[1].clone()]);
    let list = h
        .sim
        .table_requests()
        .into_iter()
        .filter(|r| r.param("sysparm_fields") == Some("sys_id"))
        .count();
    assert_eq!(
        list,
        3 + 2,
        "ids listed in keyset pages of 3: 7 ids at the baseline, 5 now"
    );
}

#[tokio::test]
async fn restart_in_the_middle_of_a_resource_loses_and_doubles_nothing() {
    let mut h = SnHarness::new(4, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    let ids: HashSet<String> = (0..14).map(|i| h.contact(&format!("M{i}"), "X")).collect();
    // Page 1 is answered; page 2 fails through every retry: the process gives up mid-resource.
    h.sim.inject(Fault::Delay(Duration::ZERO), 1);
    h.sim.inject(Fault::Status(500), 10);
    let err = h
        .poller("customer_contact")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    let key = pollbus::store::ResourceKey::new("sn", "customer_contact");
    assert_eq!(
        h.store.outbox_stats().await.unwrap().depth,
        4,
        "page 1 is durable in the outbox"
    );
    assert!(h
        .store
        .resource_state(&key)
        .await
        .unwrap()
        .unwrap()
        .cursor
        .is_some());
    h.sim.clear_faults();
    h.restart().await;
    h.poll("customer_contact").await;
    let got: HashSet<String> = h
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(got, ids);
    h.sink.assert_unique();
}

#[tokio::test]
async fn check_probe_reports_missing_fields() {
    let h = SnHarness::new(
        5,
        &CONTACTS.replace("Email = \"email\"", "Email = \"e_mail\""),
    )
    .await;
    h.contact("A", "B");
    let r = &h.poller("customer_contact");
    let record = h.source.probe(&r.resource).await.unwrap().unwrap();
    assert_eq!(
        r.resource.missing_fields(&record),
        ["field Email \"e_mail\""]
    );
}

/// The request cost of a big change set, measured (printed) and bounded by the paging rule:
/// 10,000 changed records at page size 1000 take 10 full pages, and one more (empty) request
/// when the tenth page's `Link` header still offers a next page.
#[tokio::test]
async fn ten_thousand_changes_at_page_1000() {
    let h = SnHarness::new(1000, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    let records = (0..10_000).map(|i| {
        let mut f = sim_sn::Fields::new();
        f.insert("first_name".into(), format!("N{i}"));
        f.insert("last_name".into(), "Bulk".into());
        f
    });
    h.sim.bulk_insert("customer_contact", records).unwrap();
    h.sim.clear_requests();
    let r = h.poll("customer_contact").await;
    assert_eq!(r.created, 10_000);
    let record_requests = h
        .sim
        .table_requests()
        .into_iter()
        .filter(|r| r.table() == Some("customer_contact"))
        .count();
    println!(
        "10,000 changed records at page 1000: {record_requests} record requests ({:.2} per 1,000 changes), {} requests in all",
        record_requests as f64 / 10.0,
        h.sim.requests().len()
    );
    assert!(
        (10..=11).contains(&record_requests),
        "10 full pages, plus one empty page when the tenth page's Link still offers a next page"
    );
    h.sink.assert_unique();
}

#[tokio::test]
async fn oversized_responses_are_refused_with_a_clear_error() {
    let mut h = SnHarness::new(50, CONTACTS).await;
    h.config.sources[0].max_response_bytes = 2048;
    h.restart().await;
    for i in 0..40 {
        h.contact(&format!("Big{i}"), "Record");
    }
    let err = h
        .poller("customer_contact")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds the 2048 byte limit"), "{err}");
}

#[test]
fn servicenow_names_are_checked_because_bad_queries_return_everything() {
    let text = r#"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "https://acme.service-now.com"
source_system = "SN"
  [[sources.resources]]
  name = "sys_user^ORDERBYname"
  entity = "user"
  fields = { City = "city name", Ok = "caller_id.name" }
"#;
    let err = Config::parse(text, "sn.toml").unwrap_err().to_string();
    assert!(
        err.contains(
            "sources[0].resources[0].name: \"sys_user^ORDERBYname\" is not a ServiceNow name"
        ),
        "{err}"
    );
    assert!(
        err.contains("sources[0].resources[0].fields.City: \"city name\" is not a ServiceNow name"),
        "{err}"
    );
    assert!(
        !err.contains("fields.Ok"),
        "dot-walked reference fields are allowed: {err}"
    );
}

/// Runs the real binary with distinctive secrets at debug level, JSON logs and the admin
/// server, through a successful run and a failed login, and greps every byte it produced
/// (logs, errors, metrics, messages) for the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_errors_metrics_or_messages() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    const PASSWORD: &str = "Pw-7c1f9e-never-print";
    const CLIENT_SECRET: &str = "Cs-42ab77-never-print";
    let sim = ServiceNowSim::start_with(sim_sn::SimConfig {
        users: vec![("admin".into(), PASSWORD.into())],
        oauth_clients: vec![("pollbus".into(), CLIENT_SECRET.into())],
        ..Default::default()
    })
    .await;
    sim.insert(
        "customer_contact",
        json!({"first_name": "Secret", "last_name": "Keeper"}),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[log]
format = "json"
filter = "debug"
[sink]
kind = "jsonl"
path = "out.jsonl"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{}"
source_system = "ServiceNow"
interval = "1s"
auth = {{ kind = "oauth2", grant = "password", client_id = "pollbus", client_secret = "${{env:SN_CLIENT_SECRET}}", username = "admin", password = "${{env:SN_PASSWORD}}" }}
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = {{ FirstName = "first_name" }}
  initial = "emit"
"#,
        sim.base_url()
    );
    std::fs::write(dir.path().join("pollbus.toml"), config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pollbus"))
        .args(["run", "--config", "pollbus.toml"])
        .current_dir(dir.path())
        .env("SN_PASSWORD", PASSWORD)
        .env("SN_CLIENT_SECRET", CLIENT_SECRET)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut all = String::new();
    let mut addr = None;
    while addr.is_none() {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).await.unwrap() > 0,
            "pollbus exited early:\n{all}"
        );
        if line.contains("admin server") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            addr = v["addr"].as_str().map(str::to_string);
        }
        all.push_str(&line);
    }
    let addr = addr.unwrap();
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(&addr, "/metrics").await.1;
        if metrics.contains("pollbus_messages_published_total{topic=\"api.event.customer\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("pollbus_token_refreshes_total{source=\"sn\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pollbus_http_requests_total{source=\"sn\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(tokio::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap()
        .success());
    err.read_to_string(&mut all).await.unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(0), "{all}");
    // A failed login: the error paths print the token endpoint's answer, never the secret.
    sim.expire_all_tokens();
    let failed = tokio::process::Command::new(env!("CARGO_BIN_EXE_pollbus"))
        .args(["poll-once", "--config", "pollbus.toml"])
        .current_dir(dir.path())
        .env("SN_PASSWORD", format!("{PASSWORD}-wrong"))
        .env("SN_CLIENT_SECRET", CLIENT_SECRET)
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let failed_text = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        failed_text.contains("refused the password grant"),
        "{failed_text}"
    );
    let messages = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(
        all.contains("\"message\":\"poll done\""),
        "JSON logs with the poll: {all}"
    );
    for (what, text) in [
        ("logs", &all),
        ("stdout", &out),
        ("metrics", &metrics),
        ("failed run", &failed_text),
        ("messages", &messages),
    ] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(CLIENT_SECRET),
            "a secret leaked into the {what}"
        );
    }
}

/// Injected: a page whose first record holds a lone surrogate escape and whose second record
/// nests 200 arrays deep (the parser stops at 128), among 4 good records. Those two records
/// alone are skipped and counted by reason; the good ones are published in the same poll, and
/// the next poll goes on normally.
#[tokio::test]
async fn one_bad_record_spoils_nothing_else() {
    let h = SnHarness::new(100, CONTACTS).await;
    h.poll("customer_contact").await;
    h.sim.advance(Duration::from_secs(10));
    for i in 0..6 {
        h.sim.advance(Duration::from_secs(1));
        h.contact(&format!("B{i}"), "X");
    }
    h.sim.inject(sim_sn::Fault::BadRecords, 1);
    let r = h.poll("customer_contact").await;
    assert_eq!((r.created, r.skipped), (4, 2), "{r:?}");
    assert_eq!(r.unreadable.get("unparseable"), Some(&2), "{r:?}");
    assert!(
        r.unreadable_sample
            .as_deref()
            .is_some_and(|s| s.contains("not readable JSON")),
        "{r:?}"
    );
    // The next poll goes on; the two records, readable again and within the overlap, are
    // published then.
    h.sim.advance(Duration::from_secs(5));
    h.contact("After", "X");
    let r = h.poll("customer_contact").await;
    assert_eq!((r.created, r.skipped), (3, 0), "{r:?}");
    h.sink.assert_unique();
}

/// The incident recorded from a real instance (92 columns).
fn recorded_incident() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures/servicenow/table_incident_page.json"
    );
    let page: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    page["result"][0].clone()
}

/// A configuration file polling table `incident` at `base` into `out.jsonl`, state in
/// `state.db`, up to the resource's fields (the caller appends them).
fn incident_cli_config(base: &str) -> String {
    format!(
        r#"
[state]
url = "sqlite://state.db"
[sink]
kind = "jsonl"
path = "out.jsonl"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "incident"
  entity = "incident"
"#
    )
}

/// `pollbus check --probe --fields` on the recorded incident (92 columns from a real instance):
/// the field map lists every column the table returns, not only the configured one, minus the
/// id and date fields; pasted below the resource it is a valid configuration.
#[tokio::test(flavor = "multi_thread")]
async fn check_probe_fields_prints_the_whole_records_field_map_ready_to_paste() {
    let incident = recorded_incident();
    let sim = ServiceNowSim::start().await;
    sim.insert("incident", incident.clone());
    let dir = tempfile::tempdir().unwrap();
    let head = incident_cli_config(sim.base_url());
    std::fs::write(
        dir.path().join("pollbus.toml"),
        format!("{head}  fields = {{ Number = \"number\" }}\n"),
    )
    .unwrap();
    let out = pollbus_testkit::cli::pollbus(
        env!("CARGO_BIN_EXE_pollbus"),
        Some(dir.path()),
        &["check", "--config", "pollbus.toml", "--probe", "--fields"],
        &[],
    );
    let stdout = pollbus_testkit::cli::text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        pollbus_testkit::cli::text(&out.stderr)
    );
    let block = &stdout[stdout.find("[sources.resources.fields]").expect(&stdout)..];
    let map: toml::Table = toml::from_str(block).unwrap();
    let fields = map["sources"]["resources"]["fields"].as_table().unwrap();
    for (key, value) in fields {
        assert_eq!(
            value.as_str(),
            Some(key.as_str()),
            "contract name = vendor field"
        );
    }
    // id, dates and revision, and the bookkeeping fields every write rewrites: what
    // `fields = "*"` leaves out too
    let left_out = [
        "sys_id",
        "sys_updated_on",
        "sys_created_on",
        "sys_mod_count",
        "sys_updated_by",
    ];
    for key in incident.as_object().unwrap().keys() {
        assert_eq!(
            fields.contains_key(key),
            !left_out.contains(&key.as_str()),
            "{key}"
        );
    }
    assert!(fields.len() >= 87, "{}", fields.len());
    // pasted below the resource, in place of its fields
    std::fs::write(dir.path().join("pollbus.toml"), format!("{head}{block}")).unwrap();
    let config = Config::load(&dir.path().join("pollbus.toml")).unwrap();
    assert_eq!(
        config.sources[0].resources[0].fields.listed().len(),
        fields.len()
    );
}

/// `fields = "*"` on the recorded incident (92 columns from a real instance): the table is read
/// without `sysparm_fields`, the baseline is silent, and an update publishes `changedFields` of
/// exactly the columns that changed — not the bookkeeping ServiceNow rewrites on every write
/// (`sys_updated_on`, `sys_updated_by`, `sys_mod_count`), each value in the properties.
#[tokio::test(flavor = "multi_thread")]
async fn whole_record_tracking_publishes_exactly_the_changed_columns_of_a_recorded_incident() {
    let incident = recorded_incident();
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2016-12-15T00:00:00Z"));
    let sys_id = sim.insert("incident", incident.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        format!(
            "{}  fields = \"*\"\n  exclude = [\"sys_tags\"]\n",
            incident_cli_config(sim.base_url())
        ),
    )
    .unwrap();
    let poll = || {
        let out = pollbus_testkit::cli::pollbus(
            env!("CARGO_BIN_EXE_pollbus"),
            Some(dir.path()),
            &["poll-once", "--config", "pollbus.toml"],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            pollbus_testkit::cli::text(&out.stderr)
        );
    };
    let messages = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join("out.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    poll();
    assert_eq!(messages().len(), 0, "the baseline is silent");
    let table = sim.table_requests();
    assert!(!table.is_empty());
    assert!(
        table.iter().all(|r| r.param("sysparm_fields").is_none()),
        "every column is asked for"
    );

    sim.set_now(t("2016-12-16T09:00:00Z"));
    assert!(sim.update(
        "incident",
        &sys_id,
        json!({"short_description": "Unable to connect to email (VPN)", "state": "2"})
    ));
    poll();
    sim.set_now(t("2016-12-16T10:00:00Z"));
    assert!(sim.update(
        "incident",
        &sys_id,
        json!({"priority": "1", "sys_tags": "vip"})
    ));
    poll();
    let published = messages();
    assert_eq!(published.len(), 2, "{published:#?}");
    let changed: Vec<&str> = published
        .iter()
        .map(|m| m["body"]["changedFields"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["short_description,state", "priority"]);
    let props = &published[0]["application_properties"];
    assert_eq!(
        props["short_description"],
        "Unable to connect to email (VPN)"
    );
    assert_eq!(props["state"], "2");
    assert!(props.get("sys_mod_count").is_none(), "{props}");
    assert_eq!(published[1]["application_properties"]["priority"], "1");
}
