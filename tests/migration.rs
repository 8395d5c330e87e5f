//! State written by the previous pollbus (snapshots of JSON values, before fingerprints) is
//! converted in place, publishes nothing, and goes on detecting changes field by field.
//!
//! The state in `tests/data/legacy-state/` was written by pollbus at commit 089325d (the last
//! one before fingerprints) polling [`legacy_records`] from the ServiceNow simulator; its
//! README says how. SQLite: the state file itself; PostgreSQL: a `pg_dump` of the database.

use std::path::Path;

use pollbus_testkit::cli::{pollbus, text};
use pollbus_testkit::servicenow::ServiceNowSim;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

mod pg;

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");

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

fn messages(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn poll_once(dir: &Path) -> String {
    let out = pollbus(
        BIN,
        Some(dir),
        &["poll-once", "--config", "pollbus.toml"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// After the upgrade: nothing published for the 40 unchanged records, then one field changed
/// in the vendor gives one UPDATE naming exactly that field.
async fn upgrade_publishes_nothing_then_detects(dir: &Path, sim: &ServiceNowSim) {
    let stderr = poll_once(dir);
    assert!(
        stderr.contains("converted snapshots written by an earlier pollbus"),
        "{stderr}"
    );
    assert_eq!(messages(dir), Vec::<Value>::new(), "nothing published");
    sim.set_now(pollbus_testkit::t("2024-06-01T12:30:00Z"));
    assert!(sim.update(
        "incident",
        &format!("{:032x}", 7),
        json!({"short_description": "Skjermen virker igjen"})
    ));
    let stderr = poll_once(dir);
    assert!(
        !stderr.contains("converted snapshots"),
        "converted once: {stderr}"
    );
    let published = messages(dir);
    assert_eq!(published.len(), 1, "{published:?}");
    let body = &published[0]["body"];
    assert_eq!(
        (
            body["id"].as_str(),
            body["evenType"].as_i64(),
            body["changedFields"].as_str()
        ),
        (
            Some(format!("{:032x}", 7).as_str()),
            Some(2),
            Some("Summary")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_state_file_of_the_previous_version_converts_without_publishing() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/legacy-state/state.db"
        ),
        &file,
    )
    .unwrap();
    // Measured on a copy: connecting would put the legacy file in WAL mode before pollbus sees it.
    let measured = dir.path().join("legacy-measured.db");
    std::fs::copy(&file, &measured).unwrap();
    let before = snapshot_table_pages(&measured).await;
    std::fs::write(
        dir.path().join("pollbus.toml"),
        config(sim.base_url(), "sqlite://state.db"),
    )
    .unwrap();
    upgrade_publishes_nothing_then_detects(dir.path(), &sim).await;

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let row =
        sqlx::query("SELECT count(*), count(fp), count(fields), max(length(fp)) FROM snapshots")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let (rows, with_fp, with_values, fp_bytes): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((rows, with_fp, with_values), (40, 40, 0));
    assert_eq!(
        fp_bytes,
        14 + 8 + 5 * 4,
        "14 bytes, the revision, 4 per field"
    );
    let layouts: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshot_layouts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(layouts, 1);
    drop(conn);
    // The whole file is no measure here: the new version adds tables and indexes, and how much
    // of the write-ahead log is checkpointed into it when the test looks varies. The snapshot
    // table's own pages are: values became fingerprints (JSON values of 5 fields → 42 bytes a
    // row) and the file was compacted, so the table holds fewer pages and fewer used bytes.
    let after = snapshot_table_pages(&file).await;
    assert!(
        after.0 < before.0 && after.1 * 5 <= before.1 * 3,
        "snapshot table (bytes in pages, bytes used): {before:?} → {after:?}"
    );
}

/// The bytes of the pages the `snapshots` table occupies and the bytes of them in use
/// (SQLite's `dbstat`, read through the write-ahead log, so it does not depend on when the log
/// is checkpointed).
async fn snapshot_table_pages(file: &Path) -> (i64, i64) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let row = sqlx::query(
        "SELECT sum(pgsize), sum(pgsize - unused) FROM dbstat WHERE name = 'snapshots'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

/// A dry run never migrates: on a state file of the previous version it is refused with what to
/// run first, and the file keeps every byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_refuses_a_state_file_of_the_previous_version_and_leaves_it_alone() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let legacy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/legacy-state/state.db"
    );
    std::fs::copy(legacy, &file).unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        config(sim.base_url(), "sqlite://state.db"),
    )
    .unwrap();
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &["poll-once", "--config", "pollbus.toml", "--dry-run"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    // The legacy file is at migration 6; this pollbus at its newest, one per migration file.
    let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert!(
        stderr.contains(&format!(
            "its schema is version 6, this pollbus uses {newest}; run it once without --dry-run"
        )),
        "{stderr}"
    );
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(legacy).unwrap(),
        "the file is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_state_of_the_previous_version_converts_without_publishing() {
    let sim = simulator().await;
    let db = pg::TestDb::create().await;
    let dump = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/legacy-state/postgres.sql"
    ))
    .unwrap();
    let mut conn = db.connect().await;
    sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
    let legacy: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshots")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(legacy, 40, "the dump holds the legacy snapshots");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        config(sim.base_url(), &db.url),
    )
    .unwrap();
    upgrade_publishes_nothing_then_detects(dir.path(), &sim).await;

    let row = sqlx::query("SELECT count(*), count(fp), count(fields) FROM snapshots")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (rows, with_fp, with_values): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, with_fp, with_values), (40, 40, 0));
    drop(conn);
    drop(db);
}

/// Injected: three replicas of the new version start at once on a PostgreSQL state of the
/// previous version. Each converts what the others have not locked (`SKIP LOCKED`); all open,
/// every row ends converted, one layout is stored, and every replica reads the same snapshots.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_together_convert_a_postgres_state_once() {
    use pollbus::store::{PageStore, ResourceKey, StoreOptions};
    let db = pg::TestDb::create().await;
    let dump = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/legacy-state/postgres.sql"
    ))
    .unwrap();
    let mut conn = db.connect().await;
    sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
    let open = |n: u32| {
        let url = db.url.clone();
        async move {
            let options = StoreOptions {
                replica_id: format!("replica-{n}"),
                ..StoreOptions::default()
            };
            pollbus::store::postgres::PgStore::open(&url, &options).await
        }
    };
    let (a, b, c) = tokio::join!(open(1), open(2), open(3));
    let stores = [a.unwrap(), b.unwrap(), c.unwrap()];
    let row = sqlx::query("SELECT count(*), count(fp), count(fields) FROM snapshots")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (rows, with_fp, with_values): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, with_fp, with_values), (40, 40, 0));
    let layouts: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshot_layouts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(layouts, 1);
    // every replica reads the converted snapshots the same
    let key = ResourceKey::new("sn", "incident");
    let ids: Vec<String> = (0..40).map(|i| format!("{i:032x}")).collect();
    let first = stores[0].snapshots(&key, &ids).await.unwrap();
    assert_eq!(first.len(), 40);
    for s in &stores[1..] {
        assert_eq!(s.snapshots(&key, &ids).await.unwrap(), first);
    }
    drop(conn);
    drop(db);
}
