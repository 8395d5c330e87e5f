//! The SAP Concur source through real HTTP against the simulator and real SQLite: detection,
//! `NextPage` paging, geolocation, rotating refresh tokens across a restart, `invalid_grant`,
//! reconciled deletes, and errors that leave the cursor where it was.

use serde_json::json;

use pollbus::poll::PollError;
use pollbus::source::SourceError;
use pollbus_testkit::concur::{report, ConcurSim, Fault, TokenRequest, CLIENT};
use pollbus_testkit::{param, t, Harness};

const REPORTS: &str = "reports";

fn config(sim: &ConcurSim, page_size: u32) -> String {
    // The simulator's geolocation is the login host on another port (plain http): allowed
    // explicitly, as anything outside `*.concursolutions.com` must be.
    let (login, geo) = (sim.login_url(), sim.geo_url());
    format!(
        r#"
[[sources]]
name = "concur"
kind = "concur"
base_url = "{login}"
source_system = "Concur"
overlap = "60s"
page_size = {page_size}
max_attempts = 3
concur = {{ allowed_hosts = ["{geo}"] }}
auth = {{ kind = "oauth2", client_id = "{}", client_secret = "{}", refresh_token = "refresh-0" }}
  [[sources.resources]]
  name = "reports"
  entity = "expense-report"
  fields = {{ Name = "Name", Total = "Total", Approval = "ApprovalStatusCode", Owner = "OwnerLoginID" }}
  on_behalf_of = {{ field = "OwnerName" }}
  deletes = "reconcile"
"#,
        CLIENT.0, CLIENT.1
    )
}

async fn harness(sim: &ConcurSim, page_size: u32) -> Harness {
    Harness::vendor(&config(sim, page_size), t("2024-06-01T12:00:00Z")).await
}

fn token(host: &'static str, refresh: &str, status: u16) -> TokenRequest {
    TokenRequest {
        host,
        grant_type: "refresh_token".into(),
        refresh_token: refresh.into(),
        status,
    }
}

const A: &str = "F4F027007E814C1CA70E";
const B: &str = "0B3C1E9D2A7F4E6B8C10";
const C: &str = "9A8B7C6D5E4F3A2B1C0D";

#[tokio::test]
async fn create_update_delete_end_to_end() {
    let sim = ConcurSim::start("refresh-0").await;
    sim.insert(
        A,
        t("2024-05-01T10:00:00.57Z"),
        report("Canadian Tax", 1900.0),
    );
    sim.insert(C, t("2024-05-01T10:00:01Z"), report("Oslo trip", 250.0));
    let h = harness(&sim, 2).await;
    let r = h.poll(REPORTS).await;
    assert_eq!((r.baseline, r.messages()), (2, 0), "{r:?}");

    sim.insert(B, t("2024-05-01T11:00:00.1Z"), report("Bergen trip", 120.5));
    sim.update(
        A,
        t("2024-05-01T11:00:02.987Z"),
        json!({"ApprovalStatusCode": "A_APPR", "Total": 1950.0}),
    );
    sim.update(
        C,
        t("2024-05-01T11:00:03Z"),
        json!({"LastComment": "untracked"}),
    );
    let r = h.poll(REPORTS).await;
    assert_eq!((r.created, r.updated, r.noop), (1, 1, 1), "{r:?}");
    assert_eq!(r.pages, 2, "three reports in pages of two: {r:?}");
    let msgs = h.sink.messages();
    let create = msgs.iter().find(|m| m.body.id == B).unwrap();
    assert_eq!(create.body.even_type.code(), 1);
    assert_eq!(create.body.changed_fields, "Name,Total,Approval,Owner");
    assert_eq!(create.body.timestamp, "2024-05-01T11:00:00.100Z");
    assert_eq!(
        create.body.on_behalf_of.as_deref(),
        Some("Canadian Traveler")
    );
    assert_eq!(create.topic, "api.event.expense-report");
    let update = msgs.iter().find(|m| m.body.id == A).unwrap();
    assert_eq!(
        (
            update.body.even_type.code(),
            update.body.changed_fields.as_str()
        ),
        (2, "Total,Approval")
    );
    assert_eq!(update.body.timestamp, "2024-05-01T11:00:02.987Z");
    assert_eq!(h.cursor(REPORTS).await, Some(t("2024-05-01T11:00:03Z")));

    // Every API request went to the geolocation, with the documented parameters.
    let requests = sim.api_requests();
    assert!(
        requests.iter().all(|(host, _)| *host == "geo"),
        "{requests:?}"
    );
    let first = requests
        .iter()
        .rev()
        .find(|(_, q)| param(q, "modifiedDateAfter").is_some())
        .unwrap();
    assert_eq!(
        param(&first.1, "modifiedDateAfter").as_deref(),
        Some("2024-05-01T09:59:01.000")
    );
    assert_eq!(param(&first.1, "limit").as_deref(), Some("2"));
    assert_eq!(param(&first.1, "user").as_deref(), Some("ALL"));

    sim.delete(B);
    // The id listing pages by offset, where a record deleted mid-listing can hide another:
    // a record counts as deleted once two reconciliations in a row missed it.
    h.advance(chrono::Duration::hours(2));
    let r = h.poll(REPORTS).await;
    assert_eq!(r.deleted, 0, "missed once: {r:?}");
    h.advance(chrono::Duration::hours(2));
    let r = h.poll(REPORTS).await;
    assert_eq!(r.deleted, 1, "{r:?}");
    let delete = h.sink.messages().pop().unwrap();
    assert_eq!(
        (delete.body.even_type.code(), delete.body.id.as_str()),
        (3, B)
    );
}

#[tokio::test]
async fn rotated_refresh_tokens_survive_a_restart_and_follow_the_geolocation() {
    let sim = ConcurSim::start("refresh-0").await;
    sim.insert(A, t("2024-05-01T10:00:00Z"), report("Canadian Tax", 1900.0));
    let mut h = harness(&sim, 100).await;
    h.poll(REPORTS).await;
    // The access token lasts an hour; two hours later it is refreshed at the geolocation.
    h.advance(chrono::Duration::hours(2));
    h.poll(REPORTS).await;
    // A new process: the configured refresh-0 was used up long ago; the stored refresh-2 works.
    h.restart().await;
    h.advance(chrono::Duration::hours(2));
    sim.update(
        A,
        t("2024-05-01T12:00:00Z"),
        json!({"Name": "Canadian Tax (fixed)"}),
    );
    let r = h.poll(REPORTS).await;
    assert_eq!(r.updated, 1, "{r:?}");
    // A 401 (access token revoked early) costs one refresh, not a failed poll.
    sim.expire_access_tokens();
    h.poll(REPORTS).await;
    assert_eq!(
        sim.token_requests(),
        [
            token("login", "refresh-0", 200),
            token("geo", "refresh-1", 200),
            token("geo", "refresh-2", 200),
            token("geo", "refresh-3", 200),
        ]
    );
    assert!(sim.api_requests().iter().all(|(host, _)| *host == "geo"));
}

#[tokio::test]
async fn an_explicit_token_url_is_kept_after_the_geolocation_is_known() {
    let sim = ConcurSim::start("refresh-0").await;
    sim.insert(A, t("2024-05-01T10:00:00Z"), report("Canadian Tax", 1900.0));
    let text = config(&sim, 100).replace(
        "auth = { kind = \"oauth2\",",
        &format!(
            "auth = {{ kind = \"oauth2\", token_url = \"{}/oauth2/v0/token\",",
            sim.login_url()
        ),
    );
    let h = Harness::vendor(&text, t("2024-06-01T12:00:00Z")).await;
    h.poll(REPORTS).await;
    h.advance(chrono::Duration::hours(2));
    h.poll(REPORTS).await;
    assert_eq!(
        sim.token_requests(),
        [
            token("login", "refresh-0", 200),
            token("login", "refresh-1", 200)
        ]
    );
    assert!(sim.api_requests().iter().all(|(host, _)| *host == "geo"));
}

#[tokio::test]
async fn invalid_grant_stops_the_source_with_a_re_authorize_error() {
    let sim = ConcurSim::start("refresh-0").await;
    sim.insert(A, t("2024-05-01T10:00:00Z"), report("Canadian Tax", 1900.0));
    let h = harness(&sim, 100).await;
    h.poll(REPORTS).await;
    let cursor = h.cursor(REPORTS).await;
    sim.revoke_refresh_tokens();
    h.advance(chrono::Duration::hours(2));
    for attempt in 0..3 {
        let err = h.try_poll(REPORTS).await.unwrap_err();
        assert!(
            matches!(err, PollError::Source(SourceError::Auth { .. })),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(text.contains("re-authorize pollbus"), "{text}");
        assert!(
            !text.contains("refresh-1") && !text.contains(CLIENT.1),
            "no secret: {text}"
        );
        assert_eq!(h.cursor(REPORTS).await, cursor, "attempt {attempt}");
    }
    assert_eq!(
        sim.token_requests().len(),
        2,
        "one login, one refused refresh; then the source stops asking: {:?}",
        sim.token_requests()
    );
}

#[tokio::test]
async fn errors_are_clear_and_leave_the_cursor_unchanged() {
    let sim = ConcurSim::start("refresh-0").await;
    for (i, id) in [A, B, C].iter().enumerate() {
        sim.insert(
            id,
            t(&format!("2024-05-01T10:00:0{i}Z")),
            report("Trip", 10.0),
        );
    }
    let h = harness(&sim, 2).await;
    h.poll(REPORTS).await;
    let cursor = h.cursor(REPORTS).await;
    for id in [A, B, C] {
        sim.update(id, t("2024-05-01T11:00:00Z"), json!({"Total": 20.0}));
    }
    // The second page fails: pages are not ordered by date, so the cursor stays put although
    // the first page was committed.
    sim.inject_next_page(Fault::Status(503), 3);
    let err = h.try_poll(REPORTS).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 503: Service Unavailable"), "{err}");
    assert!(err.contains("/api/v3.0/expense/reports?"), "{err}");
    assert_eq!(
        h.cursor(REPORTS).await,
        cursor,
        "unordered pages keep the cursor until the last"
    );

    sim.inject(Fault::Malformed, 1);
    let err = h.try_poll(REPORTS).await.unwrap_err().to_string();
    assert!(err.contains("malformed JSON"), "{err}");
    assert_eq!(h.cursor(REPORTS).await, cursor);

    // 429 with Retry-After is waited out; the poll then completes and moves the cursor.
    sim.inject(Fault::RateLimited { retry_after: 1 }, 1);
    let r = h.poll(REPORTS).await;
    assert_eq!(
        r.updated, 1,
        "the first page's two were published before the failure: {r:?}"
    );
    assert_eq!(h.sink.messages().len(), 3);
    assert_eq!(h.cursor(REPORTS).await, Some(t("2024-05-01T11:00:00Z")));
}

/// Injected: the access token expires before a `poll-once --dry-run` on a vendor that rotates
/// refresh tokens and revokes the grant when a rotated-away one is presented again. The dry run
/// must not spend the stored refresh token (it would keep the new one only in memory, and the
/// daemon's next refresh would be a reuse): it fails naming why, sends no token request, and the
/// real poll afterwards refreshes with the stored token — no reuse, nothing revoked.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_never_spends_a_rotating_refresh_token() {
    let sim = ConcurSim::start("refresh-0").await;
    sim.insert(A, t("2024-06-01T10:00:00Z"), report("Oslo", 10.0));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        format!(
            "[state]\nurl = \"sqlite://state.db\"\n[sink]\nkind = \"jsonl\"\npath = \"out.jsonl\"\n{}",
            config(&sim, 10)
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_pollbus");
    let run = |args: &[&str]| pollbus_testkit::cli::pollbus(bin, Some(dir.path()), args, &[]);
    let out = run(&["poll-once", "--config", "pollbus.toml"]);
    assert!(
        out.status.success(),
        "{}",
        pollbus_testkit::cli::text(&out.stderr)
    );
    let logins = sim.token_requests().len();
    assert_eq!(logins, 1, "the configured refresh token, once");

    sim.expire_access_tokens();
    let out = run(&["poll-once", "--config", "pollbus.toml", "--dry-run"]);
    let stderr = pollbus_testkit::cli::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a dry run needs a new OAuth access token"),
        "{stderr}"
    );
    assert_eq!(sim.token_requests().len(), logins, "no token request");

    let out = run(&["poll-once", "--config", "pollbus.toml"]);
    assert!(
        out.status.success(),
        "{}",
        pollbus_testkit::cli::text(&out.stderr)
    );
    let requests = sim.token_requests();
    assert_eq!(requests.len(), logins + 1);
    assert_eq!(requests[logins].status, 200, "{requests:?}");
    assert_eq!(sim.refresh_token_reuses(), 0);
}
