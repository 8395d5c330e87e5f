//! Writes tests/data/legacy-state/ with THIS (old) pollbus. Not committed.
use pollbus_testkit::cli::{pollbus, text};
use pollbus_testkit::servicenow::ServiceNowSim;
use serde_json::{json, Value};
mod pg;
const BIN: &str = env!("CARGO_BIN_EXE_pollbus");
const OUT: &str = "/work/main/tests/data/legacy-state";
/// The records the legacy state remembers: 40 incidents, one a second from 2024-06-01 10:00:00,
/// with plain, empty, non-ASCII, quoted and numeric-looking values.
pub fn legacy_records() -> Vec<Value> {
    (0..40)
        .map(|i| {
            json!({
                "sys_id": format!("{i:032x}"),
                "number": format!("INC{:07}", 10_000 + i),
                "short_description": format!("Skjermen på kontor {i} er \"svart\""),
                "state": (i % 7).to_string(),
                "priority": if i % 3 == 0 { String::new() } else { (i % 5).to_string() },
                "category": "hardware",
                "sys_updated_on": format!("2024-06-01 10:00:{i:02}"),
                "sys_created_on": "2024-05-01 08:00:00",
            })
        })
        .collect()
}

/// The configuration both versions poll with; the overlap reaches back over every record, so
/// the first poll after the upgrade compares all 40 with their converted snapshots.
pub fn config(base_url: &str, state_url: &str) -> String {
    format!(
        r#"
[state]
url = "{state_url}"
[sink]
kind = "jsonl"
path = "out.jsonl"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base_url}"
source_system = "ServiceNow"
overlap = "1h"
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "incident"
  entity = "incident"
  fields = {{ Number = "number", Summary = "short_description", State = "state", Priority = "priority", Category = "category" }}
"#
    )
}

/// A simulator holding [`legacy_records`], its clock at 2024-06-01 12:00 (after all of them).
pub async fn simulator() -> ServiceNowSim {
    let sim = ServiceNowSim::start().await;
    sim.set_now(pollbus_testkit::t("2024-06-01T12:00:00Z"));
    for r in legacy_records() {
        sim.insert("incident", r);
    }
    sim
}


fn run(dir: &std::path::Path) {
    let out = pollbus(BIN, Some(dir), &["poll-once", "--config", "pollbus.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn generate() {
    std::fs::create_dir_all(OUT).unwrap();
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pollbus.toml"), config(sim.base_url(), "sqlite://state.db")).unwrap();
    run(dir.path());
    assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default(), "", "baseline is silent");
    // one file, no WAL beside it
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", dir.path().join("state.db").display())).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    sqlx::query("PRAGMA journal_mode=DELETE").execute(&mut conn).await.unwrap();
    drop(conn);
    std::fs::copy(dir.path().join("state.db"), format!("{OUT}/state.db")).unwrap();

    let db = pg::TestDb::create().await;
    std::fs::write(dir.path().join("pollbus.toml"), config(sim.base_url(), &db.url)).unwrap();
    run(dir.path());
    let out = std::process::Command::new("pg_dump").args(["--no-owner", "--no-privileges", "--no-comments", "--inserts", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // psql meta-commands (\\restrict) and the empty search_path are psql's business: dropped
    let dump: String = String::from_utf8(out.stdout).unwrap().lines()
        .filter(|l| !l.starts_with('\\') && !l.contains("set_config('search_path'"))
        .map(|l| format!("{l}\n")).collect();
    std::fs::write(format!("{OUT}/postgres.sql"), dump).unwrap();
}
