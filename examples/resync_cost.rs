//! What an anti-entropy resync of a large ServiceNow table costs: requests, response bytes and,
//! at a given pace, how long it takes. Polls N incidents (the baseline), changes one record
//! without moving its date, requests a resync and runs it with the pace lifted (6000 pages a
//! minute); prints the counts, the repair found, and the duration a given
//! `resync_pages_per_minute` would give.
//!
//! ```text
//! cargo run --release --example resync_cost -- 100000 1000 6   # records, page size, pages/min
//! ```

use std::time::{Duration, Instant};

use serde_json::json;

use pollbus::config::Config;
use pollbus::store::ResourceKey;
use pollbus_testkit::servicenow::{fields_of, ServiceNowSim};
use pollbus_testkit::{t, Harness};

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: records, page size, pages per minute")
        })
        .collect();
    let (n, page, per_minute) = (
        *args.first().unwrap_or(&100_000),
        *args.get(1).unwrap_or(&1_000),
        *args.get(2).unwrap_or(&6),
    );
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2024-05-01T10:00:00Z"));
    let ids = sim
        .bulk_insert(
            "incident",
            (0..n).map(|i| {
                fields_of(&json!({
                    "number": format!("INC{i:07}"),
                    "short_description": format!("Printer {i} jams"),
                    "state": "1",
                    "priority": "3",
                }))
            }),
        )
        .expect("insert");
    let text = format!(
        r#"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{}"
source_system = "ServiceNow"
interval = "1h"
page_size = {page}
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "incident"
  entity = "incident"
  fields = {{ Number = "number", Summary = "short_description", State = "state", Priority = "priority" }}
  resync_pages_per_minute = 6000
"#,
        sim.base_url()
    );
    let config = Config::parse(&text, "resync_cost.toml").expect("config");
    let h = Harness::vendor_system_clock(config).await;
    let r = h.poll("incident").await;
    assert_eq!(r.baseline, n, "baseline");
    // One record an hour later moves the cursor past the overlap: the N records are behind it,
    // as in a table polled for a while.
    sim.advance(Duration::from_secs(3600));
    sim.insert(
        "incident",
        json!({"number": "INC-LATER", "short_description": "later"}),
    );
    let r = h.poll("incident").await;
    assert_eq!(r.messages(), 1, "the later record");
    let quiet = &ids[(n / 2) as usize];
    let old = sim.record("incident", quiet).expect("record");
    sim.update(
        "incident",
        quiet,
        json!({"state": "2", "sys_updated_on": old.get("sys_updated_on"), "sys_mod_count": old.get("sys_mod_count")}),
    );
    h.store
        .request_resync(&ResourceKey::new("sn", "incident"), chrono::Utc::now())
        .await
        .expect("request");
    let before = sim.table_requests();
    let started = Instant::now();
    let r = h.poll("incident").await;
    let elapsed = started.elapsed();
    let after = sim.table_requests();
    let resync: Vec<_> = after[before.len()..]
        .iter()
        // The resync's pages: everything since 1970, then keyset continuations (the poll
        // before it reads one short page of the last minute).
        .filter(|q| {
            q.param("sysparm_query")
                .is_some_and(|q| q.starts_with("sys_updated_on>=1970") || q.contains("^NQ"))
        })
        .collect();
    let bytes: usize = resync.iter().map(|q| q.response_bytes).sum();
    assert!(r.resync_completed, "{r:?}");
    assert_eq!(
        r.resync_repairs,
        [0, 1, 0],
        "the record changed without its date: {r:?}"
    );
    println!("records                 {n}");
    println!("page size               {page}");
    println!("resync pages            {}", r.resync_pages);
    println!("resync requests         {}", resync.len());
    println!(
        "response bytes          {bytes} ({:.1} MB)",
        bytes as f64 / 1e6
    );
    println!("repairs (c/u/d)         {:?}", r.resync_repairs);
    println!(
        "wall time, pace lifted  {:.1} s (6000 pages/min: {:.1} s of it waiting)",
        elapsed.as_secs_f64(),
        (r.resync_pages.saturating_sub(1)) as f64 * 0.01
    );
    println!(
        "at {per_minute} pages/min       {:.1} min",
        r.resync_pages as f64 / per_minute as f64
    );
}
