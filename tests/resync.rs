//! Anti-entropy resyncs (`resync_interval`, `pollbus resync`) against the ServiceNow simulator:
//! what incremental polling cannot see — a record changed without moving `sys_updated_on` (an
//! import, a direct database fix), a row removed without an audit entry (Table Cleaner) — is
//! found, published as a normal UPDATE / DELETE and counted as a repair; an unchanged table
//! costs only the configured pages per minute and repairs nothing.

use std::ops::Deref;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use pollbus::config::Config;
use pollbus::contract::TraceContext;
use pollbus::store::ResourceKey;
use pollbus_testkit::cli::{pollbus, text};
use pollbus_testkit::servicenow::ServiceNowSim;
use pollbus_testkit::{t, Harness};

fn config(base: &str, interval: &str, resync: &str) -> Config {
    let text = format!(
        r#"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
interval = "{interval}"
overlap = "60s"
page_size = 10
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = {{ FirstName = "first_name", LastName = "last_name" }}
  {resync}
"#
    );
    Config::parse(&text, "sn.toml").unwrap_or_else(|e| panic!("{e}"))
}

struct Setup {
    sim: ServiceNowSim,
    h: Harness,
    ids: Vec<String>,
}

impl Deref for Setup {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// `n` contacts, their silent baseline taken.
async fn setup(n: usize, interval: &str, resync: &str) -> Setup {
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2024-05-01T10:00:00Z"));
    // Ten seconds apart: incremental polls re-read only the last minute (the overlap).
    let ids = (0..n)
        .map(|i| {
            sim.advance(Duration::from_secs(10));
            sim.insert(
                "customer_contact",
                json!({"first_name": format!("F{i}"), "last_name": format!("L{i}")}),
            )
        })
        .collect();
    let h = Harness::vendor_system_clock(config(sim.base_url(), interval, resync)).await;
    let r = h.poll("customer_contact").await;
    assert_eq!((r.baseline as usize, r.messages()), (n, 0));
    Setup { sim, h, ids }
}

fn key() -> ResourceKey {
    ResourceKey::new("sn", "customer_contact")
}

fn resync_requests(sim: &ServiceNowSim, since: usize) -> Vec<chrono::DateTime<chrono::Utc>> {
    sim.table_requests()[since..]
        .iter()
        .filter(|r| {
            // A resync's first page asks for everything since 1970; its next pages continue
            // from the last record read (keyset); incremental polls here read one page.
            r.path.ends_with("/customer_contact")
                && r.param("sysparm_query").is_some_and(|q| {
                    q.starts_with("sys_updated_on>=1970-01-01") || q.contains("^NQ")
                })
        })
        .map(|r| r.at)
        .collect()
}

/// Injected: one record's last name changed with `sys_updated_on` and `sys_mod_count` left as
/// they were, and another record removed with no audit row. Incremental polls see neither; the
/// requested resync publishes exactly one UPDATE naming `LastName` and one DELETE, counts both
/// as repairs, and a second resync finds nothing.
#[tokio::test]
async fn a_resync_finds_what_incremental_polling_cannot_see_and_counts_repairs() {
    let s = setup(
        25,
        "1m",
        "deletes = \"audit\"\n  resync_pages_per_minute = 6000",
    )
    .await;
    s.sim.advance(Duration::from_secs(600));
    let quiet = s.ids[5].clone();
    let old = s.sim.record("customer_contact", &quiet).unwrap();
    assert!(s.sim.update(
        "customer_contact",
        &quiet,
        json!({"last_name": "Endret i databasen",
               "sys_updated_on": old.get("sys_updated_on"),
               "sys_mod_count": old.get("sys_mod_count")})
    ));
    assert_eq!(
        s.sim
            .record("customer_contact", &quiet)
            .unwrap()
            .get("sys_updated_on"),
        old.get("sys_updated_on"),
        "the date did not move"
    );
    let purged = s.ids[17].clone();
    assert!(s.sim.purge("customer_contact", &purged));
    let r = s.poll("customer_contact").await;
    assert_eq!((r.messages(), r.resync_pages), (0, 0), "{r:?}");

    s.store
        .request_resync(&key(), chrono::Utc::now())
        .await
        .unwrap();
    let r = s.poll("customer_contact").await;
    assert_eq!(
        (r.resync_pages, r.resync_completed, r.resync_repairs),
        (3, true, [0, 1, 1]),
        "25 records at 10 a page; one update and one delete repaired: {r:?}"
    );
    let msgs = s.sink.messages();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    let update = msgs.iter().find(|m| m.body.id == quiet).unwrap();
    assert_eq!(
        (
            update.body.even_type.code(),
            update.body.changed_fields.as_str()
        ),
        (2, "LastName")
    );
    assert_eq!(
        update.application_properties["LastName"],
        pollbus::contract::PropertyValue::String("Endret i databasen".into())
    );
    let delete = msgs.iter().find(|m| m.body.id == purged).unwrap();
    assert_eq!(delete.body.even_type.code(), 3);
    let state = s.store.resource_state(&key()).await.unwrap().unwrap();
    assert!(state.resync_started.is_none() && state.last_resync.is_some());

    // Not due again (no interval, no new request): polls do not resync.
    let r = s.poll("customer_contact").await;
    assert_eq!((r.resync_pages, r.messages()), (0, 0));
    // A second resync finds nothing left to repair.
    s.store
        .request_resync(&key(), chrono::Utc::now())
        .await
        .unwrap();
    let r = s.poll("customer_contact").await;
    assert_eq!(
        (r.resync_pages, r.resync_repairs, r.messages()),
        (3, [0, 0, 0], 0)
    );
    assert_eq!(s.sink.messages().len(), 2);
}

/// With `deletes = "reconcile"` a row removed without a trace is found by reconciliations, not
/// missed: the resync's sweep publishes its DELETE earlier, and it is no repair.
#[tokio::test]
async fn a_delete_only_a_reconciliation_would_find_is_published_but_no_repair() {
    let s = setup(
        15,
        "1m",
        "deletes = \"reconcile\"\n  reconcile_interval = \"24h\"\n  resync_pages_per_minute = 6000",
    )
    .await;
    assert!(s.sim.purge("customer_contact", &s.ids[3]));
    s.store
        .request_resync(&key(), chrono::Utc::now())
        .await
        .unwrap();
    let r = s.poll("customer_contact").await;
    assert_eq!(
        (r.resync_completed, r.deleted, r.resync_repairs),
        (true, 1, [0, 0, 0]),
        "{r:?}"
    );
    let msgs = s.sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (msgs[0].body.even_type.code(), msgs[0].body.id.as_str()),
        (3, s.ids[3].as_str())
    );
}

/// An unchanged table of 45 records (5 pages) at `resync_pages_per_minute = 120` and a poll
/// every second, a resync requested (the interval, an hour, counts from the baseline): each poll reads at most 2 resync pages (1 s × 120/min), half a second apart,
/// and goes on where the last one stopped (its position is committed, and every poll here
/// is a new `Poller`, as after a restart); the whole resync costs 5 requests and repairs
/// nothing. A change made meanwhile the normal way is published by the incremental poll and is
/// no repair.
#[tokio::test]
async fn an_unchanged_table_costs_the_configured_pages_per_minute_and_repairs_nothing() {
    let s = setup(
        45,
        "1s",
        "resync_interval = \"1h\"\n  resync_pages_per_minute = 120",
    )
    .await;
    // The baseline read everything: the first resync falls due an hour after it.
    let r = s.poll("customer_contact").await;
    assert_eq!(r.resync_pages, 0);
    s.store
        .request_resync(&key(), chrono::Utc::now())
        .await
        .unwrap();
    let mut pages = Vec::new();
    let mut polls = 0;
    // One poller for every poll, as in the daemon: the pace holds across polls too.
    let poller = s.poller("customer_contact");
    let before = s.sim.table_requests().len();
    loop {
        polls += 1;
        let r = poller
            .poll(&TraceContext::random(), &CancellationToken::new())
            .await
            .unwrap();
        s.publisher().drain().await.unwrap();
        assert_eq!(r.resync_repairs, [0, 0, 0], "{r:?}");
        pages.push(r.resync_pages);
        if polls == 2 {
            s.sim.advance(Duration::from_secs(5));
            assert!(s
                .sim
                .update("customer_contact", &s.ids[40], json!({"first_name": "Ny"})));
        }
        if r.resync_completed {
            break;
        }
        assert!(polls < 5, "{pages:?}");
    }
    assert_eq!(pages, [2, 2, 1], "pages per poll");
    let at = resync_requests(&s.sim, before);
    assert_eq!(at.len(), 5, "one request per page");
    for w in at.windows(2) {
        let gap = (w[1] - w[0]).to_std().unwrap();
        assert!(
            gap >= Duration::from_millis(490),
            "{gap:?} between resync pages"
        );
    }
    let msgs = s.sink.messages();
    assert_eq!(msgs.len(), 1, "the normal update only: {msgs:#?}");
    assert_eq!(msgs[0].body.changed_fields, "FirstName");
    // Due again only after resync_interval (1h).
    let r = s.poll("customer_contact").await;
    assert_eq!(r.resync_pages, 0);
}

/// `pollbus resync SOURCE/RESOURCE` records a request in the state file; a dry run leaves it;
/// the next `pollbus poll-once` runs the resync; `pollbus state show` tells when it last ran. An unknown
/// resource exits 64 naming it.
#[tokio::test(flavor = "multi_thread")]
async fn the_resync_command_requests_one_that_the_next_poll_runs() {
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2024-05-01T10:00:00Z"));
    for i in 0..12 {
        sim.insert(
            "customer_contact",
            json!({"first_name": format!("F{i}"), "last_name": "L"}),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
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
base_url = "{}"
source_system = "ServiceNow"
page_size = 10
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = {{ FirstName = "first_name" }}
  resync_pages_per_minute = 6000
"#,
            sim.base_url()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_pollbus");
    let run = |args: &[&str]| pollbus(bin, Some(dir.path()), args, &[]);
    let out = run(&["poll-once", "--config", "pollbus.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(&[
        "resync",
        "--config",
        "pollbus.toml",
        "nope/customer_contact",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("no resource \"nope/customer_contact\" is configured"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["resync", "--config", "pollbus.toml", "sn/customer_contact"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("resync of sn/customer_contact requested"),
        "{stdout}"
    );
    assert!(
        stdout.contains("last complete resync: 20"),
        "the baseline read everything: {stdout}"
    );

    // A dry run shows one poll; it runs no resync (paced background work).
    let out = run(&["poll-once", "--config", "pollbus.toml", "--dry-run"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("resync started"), "{stderr}");

    let out = run(&["poll-once", "--config", "pollbus.toml"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resync started"), "{stderr}");
    assert!(stderr.contains("resync completed"), "{stderr}");

    let out = run(&["state", "--config", "pollbus.toml", "show"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("  last resync 20"), "{stdout}");
    // Ran once: the next poll does not resync again.
    let out = run(&["poll-once", "--config", "pollbus.toml"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("resync started"), "{stderr}");
}
