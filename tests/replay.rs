//! `pollbus replay` end to end: the ServiceNow simulator → the `pollbus` binary → the jsonl
//! sink, or the Service Bus emulator with Microsoft's Python `azure-servicebus` SDK as the
//! subscriber (the venv from `scripts/setup-python.sh`, or `POLLBUS_PYTHON`).
//!
//! Every scenario seeds the same timeline and replays the window [10:05, 10:15): records `r`
//! (created 10:05), `q` (created 10:00, updated 10:06) and `s` (created 10:10); `p` (10:00,
//! updated 10:50 after the baseline), `u` (10:15, the excluded end), `v`, `w`, `x` lie outside.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Timelike, Utc};
use serde_json::{json, Value};

use pollbus::config::Config;
use pollbus::detect::Snapshot;
use pollbus::replay::ReplayRequest;
use pollbus::store::sqlite::SqliteStore;
use pollbus::store::{ResourceKey, ResourceState, Store};
use pollbus_testkit::cli::RunningPollbus;
use pollbus_testkit::schema;
use pollbus_testkit::servicenow::ServiceNowSim;
use pollbus_testkit::subscriber::subscriber;
use pollbus_testkit::t;
use servicebus_emulator::Emulator;

mod pg;

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");

/// The window every scenario replays, as an operator would type it (`until` in local time).
const SINCE: &str = "2024-05-01T10:05:00Z";
const UNTIL: &str = "2024-05-01T12:15:00+02:00";
/// The window of most tests here.
const WINDOW: &[&str] = &[
    "--resource",
    "customer_contact",
    "--since",
    SINCE,
    "--until",
    UNTIL,
];
/// The window, for subscription `crm-sync`.
const FOR_CRM_SYNC: &[&str] = &[
    "--resource",
    "customer_contact",
    "--since",
    SINCE,
    "--until",
    UNTIL,
    "--for",
    "crm-sync",
];

/// The seeded records by name.
struct Seeded {
    ids: HashMap<&'static str, String>,
}

impl Seeded {
    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }

    fn all(&self) -> Vec<String> {
        self.ids.values().cloned().collect()
    }

    /// The names of `ids`, in order.
    fn names(&self, ids: &[String]) -> Vec<&'static str> {
        ids.iter()
            .map(|id| {
                *self
                    .ids
                    .iter()
                    .find(|(_, v)| *v == id)
                    .unwrap_or_else(|| panic!("unknown id {id}"))
                    .0
            })
            .collect()
    }
}

/// The timeline of the module docs, up to 10:40 (the update of `p` comes after the baseline).
fn seed(sim: &ServiceNowSim) -> Seeded {
    let mut ids = HashMap::new();
    let contact = |first: &str| {
        sim.insert(
            "customer_contact",
            json!({"first_name": first, "last_name": "Nordmann", "email": format!("{}@example.no", first.to_lowercase())}),
        )
    };
    sim.set_now(t("2024-05-01T10:00:00Z"));
    ids.insert("p", contact("Per"));
    ids.insert("q", contact("Quinn"));
    sim.set_now(t("2024-05-01T10:05:00Z"));
    ids.insert("r", contact("Rut"));
    sim.set_now(t("2024-05-01T10:06:00Z"));
    assert!(sim.update("customer_contact", &ids["q"], json!({"last_name": "Strøm"})));
    for (name, first, at) in [
        ("s", "Siv", "10:10"),
        ("u", "Unn", "10:15"),
        ("v", "Vår", "10:20"),
        ("w", "Wenche", "10:30"),
        ("x", "Xander", "10:40"),
    ] {
        sim.set_now(t(&format!("2024-05-01T{at}:00Z")));
        ids.insert(name, contact(first));
    }
    Seeded { ids }
}

fn config_text(sim: &ServiceNowSim, sink: &str, extra: &str) -> String {
    format!(
        r#"shutdown_grace = "3s"
{extra}
[state]
url = "sqlite://./state/pollbus.db"

{sink}

[outbox]
backoff_min = "50ms"
backoff_max = "200ms"

[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
page_size = 2
max_requests_per_hour = 100000
interval = "1h"
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = {{ FirstName = "first_name", LastName = "last_name", Email = "email" }}
  on_behalf_of = {{ field = "sys_updated_by" }}
"#,
        base = sim.base_url()
    )
}

const JSONL: &str = "[sink]\nkind = \"jsonl\"\npath = \"./out/messages.jsonl\"";

/// A configuration in a temporary directory (state and sink files beside it).
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(config: &str) -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pollbus.toml"), config).unwrap();
        Dir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> Config {
        let text = std::fs::read_to_string(self.path().join("pollbus.toml")).unwrap();
        let mut config = Config::parse(&text, "pollbus.toml").unwrap_or_else(|e| panic!("{e}"));
        config.resolve_secrets().unwrap();
        config
    }

    fn sink(&self) -> PathBuf {
        self.path().join("out/messages.jsonl")
    }

    /// The jsonl sink's lines, each checked against the message schema.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.sink())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let m: Value = serde_json::from_str(l).expect("each line is JSON");
                schema::assert_valid_message(&m);
                m
            })
            .collect()
    }

    /// `pollbus <command> --config pollbus.toml <args>` in this directory.
    async fn pollbus(&self, command: &str, args: &[&str]) -> Run {
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new(BIN)
                .arg(command)
                .args(["--config", "pollbus.toml"])
                .args(args)
                .current_dir(self.path())
                .env_remove("RUST_LOG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("pollbus {command} {args:?} finished within 120 s"))
        .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn replay(&self, args: &[&str]) -> Run {
        self.pollbus("replay", args).await
    }

    /// Everything a replay must leave alone (see [`StateView`]), read from the SQLite file
    /// without writing to it.
    async fn state(&self, ids: &[String]) -> StateView {
        let url = format!(
            "sqlite://{}",
            self.path().join("state/pollbus.db").display()
        );
        StateView::of(&SqliteStore::open_read_only(&url).await.unwrap(), ids).await
    }

    /// Requests drawn from the shared budget of source `sn` in the current clock hour.
    async fn budget_used(&self) -> i64 {
        let url = format!(
            "sqlite://{}?mode=ro",
            self.path().join("state/pollbus.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let window = pollbus_window(Utc::now());
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT sum(used) FROM request_budget WHERE source = 'sn' AND window_start = ?",
        )
        .bind(window)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        used.unwrap_or(0)
    }
}

/// The start of the clock hour holding `now`, in nanoseconds (the budget's window).
fn pollbus_window(now: chrono::DateTime<Utc>) -> i64 {
    let hour = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    hour.timestamp_nanos_opt().unwrap()
}

/// Everything a replay must leave alone: the resource's state (cursor, baseline), every
/// snapshot, the per-resource summaries — and the outbox depth.
#[derive(Debug, PartialEq)]
struct StateView {
    resource: Option<ResourceState>,
    snapshots: HashMap<String, Snapshot>,
    summaries: String,
    outbox: u64,
}

impl StateView {
    async fn of(store: &dyn Store, ids: &[String]) -> StateView {
        let key = ResourceKey::new("sn", "customer_contact");
        StateView {
            resource: store.resource_state(&key).await.unwrap(),
            snapshots: store.snapshots(&key, ids).await.unwrap(),
            summaries: format!("{:?}", store.summaries().await.unwrap()),
            outbox: store.outbox_stats().await.unwrap().depth,
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The replay id the command printed (`pollbus: replay <id>: …`).
    fn replay_id(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("pollbus: replay "))
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("no replay id printed:\n{}", self.stderr))
            .to_string()
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

/// The simulator with the seeded timeline and a state whose baseline is taken and whose
/// cursor moved past `p`'s update at 10:50 (one ordinary UPDATE published).
async fn polled(sink: &str, extra: &str) -> (ServiceNowSim, Seeded, Dir) {
    let sim = ServiceNowSim::start().await;
    let seeded = seed(&sim);
    let dir = Dir::new(&config_text(&sim, sink, extra));
    dir.pollbus("poll-once", &[]).await.assert_code(0);
    sim.set_now(t("2024-05-01T10:50:00Z"));
    assert!(sim.update(
        "customer_contact",
        seeded.id("p"),
        json!({"last_name": "Olsen"})
    ));
    dir.pollbus("poll-once", &[]).await.assert_code(0);
    (sim, seeded, dir)
}

fn property<'a>(m: &'a Value, name: &str) -> &'a Value {
    &m["application_properties"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_the_window_once_per_record_with_every_field_and_leaves_the_state_alone() {
    let (sim, seeded, dir) = polled(JSONL, "").await;
    let ordinary = dir.lines();
    assert_eq!(ordinary.len(), 1, "the update of p: {ordinary:?}");
    let before = dir.state(&seeded.all()).await;
    assert!(before
        .resource
        .as_ref()
        .is_some_and(|s| s.cursor == Some(t("2024-05-01T10:50:00Z"))));
    let budget_hour = pollbus_window(Utc::now());
    let budget_before = dir.budget_used().await;
    sim.clear_requests();

    let run = dir.replay(FOR_CRM_SYNC).await;
    run.assert_code(0);
    let id = run.replay_id();
    let expected_id = ReplayRequest::parse(
        &dir.config(),
        "sn/customer_contact",
        "2024-05-01T12:05:00+02:00",
        Some("2024-05-01T10:15:00Z"),
        Some("crm-sync"),
        Utc::now(),
    )
    .unwrap()
    .id();
    assert_eq!(
        id, expected_id,
        "the id is the request's, however it is spelled"
    );
    assert!(
        run.stderr.contains(&format!(
            "pollbus: replay {id}: sn/customer_contact, records updated from 2024-05-01T10:05:00Z until 2024-05-01T10:15:00Z (excluded), for subscription \"crm-sync\""
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = '<their own name>'"
        ),
        "{}",
        run.stderr
    );
    // An ordered listing stops at the first page past the window: [r q] [s u] [v w], not [x p].
    assert!(
        run.stderr.contains(&format!(
            "pollbus: replay {id}: read 3 pages, 6 records (3 outside the window, 0 unreadable, 0 left to a child resource); queued 3 messages for api.event.customer"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(sim.table_requests().len(), 3, "{:?}", sim.table_requests());
    assert!(run.stderr.contains("outbox left 0"), "{}", run.stderr);
    if pollbus_window(Utc::now()) == budget_hour {
        assert_eq!(
            dir.budget_used().await - budget_before,
            3,
            "every vendor request is drawn from the shared budget"
        );
    }

    let all = dir.lines();
    let replayed = &all[ordinary.len()..];
    let ids: Vec<String> = replayed
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seeded.names(&ids),
        ["r", "q", "s"],
        "the window, in updated order"
    );
    for m in replayed {
        let body = &m["body"];
        assert_eq!(m["topic"], "api.event.customer");
        assert_eq!(body["evenType"], 2, "an UPDATE, never a CREATE");
        assert_eq!(body["changedFields"], "FirstName,LastName,Email");
        assert_eq!(body["sourceSystem"], "ServiceNow");
        assert_eq!(body["onBehalfOf"], "admin");
        assert_eq!(property(m, "pollbus-replay"), id.as_str());
        assert_eq!(property(m, "pollbus-replay-for"), "crm-sync");
        let record = sim
            .record("customer_contact", body["id"].as_str().unwrap())
            .unwrap();
        for (field, column) in [
            ("FirstName", "first_name"),
            ("LastName", "last_name"),
            ("Email", "email"),
        ] {
            assert_eq!(property(m, field), &json!(record[column]), "{field}");
        }
    }
    let q = &replayed[1];
    assert_eq!(property(q, "LastName"), "Strøm", "the current value");
    assert_eq!(
        q["body"]["timestamp"], "2024-05-01T10:06:00Z",
        "its updated date"
    );
    let message_ids: Vec<&str> = replayed
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert!(!message_ids.contains(&ordinary[0]["message_id"].as_str().unwrap()));

    // The same replay again (spelled another way): the same id and MessageIds.
    let again = dir
        .replay(&[
            "--resource",
            "sn/customer_contact",
            "--since",
            "2024-05-01T12:05:00+02:00",
            "--until",
            "2024-05-01T10:15:00Z",
            "--for",
            "crm-sync",
        ])
        .await;
    again.assert_code(0);
    assert_eq!(again.replay_id(), id);
    let all = dir.lines();
    let second: Vec<&str> = all[ordinary.len() + 3..]
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(second, message_ids);

    // Another target is another replay: other MessageIds.
    let other = dir
        .replay(&[
            "--resource",
            "customer_contact",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--for",
            "audit",
        ])
        .await;
    other.assert_code(0);
    assert_ne!(other.replay_id(), id);
    let all = dir.lines();
    let third: BTreeSet<&str> = all[ordinary.len() + 6..]
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(third.len(), 3);
    assert!(third.iter().all(|m| !message_ids.contains(m)));

    // An open window (no --until, no --for): "now" is not part of the id, so a later run is
    // the same replay; a record changed in between is sent in its new state, under a new
    // MessageId, while the unchanged ones repeat theirs.
    let open = || dir.replay(&["--resource", "customer_contact", "--since", SINCE]);
    let first = open().await;
    first.assert_code(0);
    let first_lines = dir.lines().split_off(ordinary.len() + 9);
    assert_eq!(first_lines.len(), 8, "r q s u v w x p: {first_lines:?}");
    for m in &first_lines {
        assert_eq!(property(m, "pollbus-replay"), first.replay_id().as_str());
        assert!(m["application_properties"]
            .get("pollbus-replay-for")
            .is_none());
    }
    sim.set_now(t("2024-05-01T11:00:00Z"));
    assert!(sim.update(
        "customer_contact",
        seeded.id("r"),
        json!({"first_name": "Ruth"})
    ));
    let later = open().await;
    later.assert_code(0);
    assert_eq!(later.replay_id(), first.replay_id());
    let later_lines = dir.lines().split_off(ordinary.len() + 17);
    let by_id = |lines: &[Value]| -> HashMap<String, String> {
        lines
            .iter()
            .map(|m| {
                (
                    m["body"]["id"].as_str().unwrap().to_string(),
                    m["message_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (before_change, after_change) = (by_id(&first_lines), by_id(&later_lines));
    assert_eq!((before_change.len(), after_change.len()), (8, 8));
    for (record, message_id) in &after_change {
        if record == seeded.id("r") {
            assert_ne!(
                &before_change[record], message_id,
                "r changed: a new version"
            );
        } else {
            assert_eq!(
                &before_change[record],
                message_id,
                "{:?} unchanged",
                seeded.names(std::slice::from_ref(record))
            );
        }
    }
    let ruth = later_lines
        .iter()
        .find(|m| m["body"]["id"] == seeded.id("r"))
        .unwrap();
    assert_eq!(property(ruth, "FirstName"), "Ruth");

    // Nothing of the poll's state moved: cursor, baseline, every snapshot, the outbox.
    assert_eq!(dir.state(&seeded.all()).await, before);
    let polled_again = dir.pollbus("poll-once", &[]).await;
    polled_again.assert_code(0);
    let after_poll = dir.lines();
    assert_eq!(
        after_poll.len(),
        ordinary.len() + 26,
        "the next poll publishes r's change once, as if no replay had happened"
    );
    let last = after_poll.last().unwrap();
    assert_eq!(last["body"]["changedFields"], "FirstName");
    assert!(last["application_properties"]
        .get("pollbus-replay")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_counts_and_a_sample_and_queues_nothing() {
    let (sim, seeded, dir) = polled(JSONL, "").await;
    let before = dir.state(&seeded.all()).await;
    let sink_before = std::fs::read(dir.sink()).unwrap();
    let budget_hour = pollbus_window(Utc::now());
    let budget_before = dir.budget_used().await;
    sim.clear_requests();
    let run = dir
        .replay(&[
            "--resource",
            "customer_contact",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--for",
            "crm-sync",
            "--dry-run",
        ])
        .await;
    run.assert_code(0);
    let id = run.replay_id();
    assert!(
        run.stderr.contains(&format!(
            "pollbus: dry run of replay {id}: would send 3 messages to api.event.customer (one per record updated in the window); read 3 pages, 6 records (3 outside the window, 0 unreadable, 0 left to a child resource); sample on stdout: the first 2; nothing was queued or sent"
        )),
        "{}",
        run.stderr
    );
    let sample: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(sample.len(), 2);
    for m in &sample {
        schema::assert_valid_message(m);
        assert_eq!(property(m, "pollbus-replay"), id.as_str());
        assert_eq!(property(m, "pollbus-replay-for"), "crm-sync");
        assert_eq!(m["body"]["changedFields"], "FirstName,LastName,Email");
    }
    assert_eq!(sample[0]["body"]["id"], seeded.id("r"));
    // The vendor was read (through the shared budget); nothing was queued or sent.
    assert_eq!(sim.table_requests().len(), 3);
    if pollbus_window(Utc::now()) == budget_hour {
        assert_eq!(dir.budget_used().await - budget_before, 3);
    }
    assert_eq!(dir.state(&seeded.all()).await, before);
    assert_eq!(
        std::fs::read(dir.sink()).unwrap(),
        sink_before,
        "sink untouched"
    );

    // The real replay sends what the dry run showed, under the same MessageIds.
    dir.replay(&[
        "--resource",
        "customer_contact",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--for",
        "crm-sync",
    ])
    .await
    .assert_code(0);
    let lines = dir.lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["message_id"], sample[0]["message_id"]);
    assert_eq!(lines[2]["message_id"], sample[1]["message_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_exit_64_naming_the_value() {
    let sim = ServiceNowSim::start().await;
    let dir = Dir::new(&config_text(&sim, JSONL, ""));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--resource", "customer_contact", "--since", "tuesday 10:00"],
            "pollbus: replay: --since \"tuesday 10:00\": not a time: use RFC 3339 with a zone",
        ),
        (
            &["--resource", "customer_contact", "--since", "2024-05-07T10:00"],
            "pollbus: replay: --since \"2024-05-07T10:00\": the time has no zone: add Z for UTC or an offset such as +02:00",
        ),
        (
            &["--resource", "customer_contact", "--since", SINCE, "--until", "2024-05-01T10:00:00Z"],
            "pollbus: replay: --until 2024-05-01T10:00:00Z is not after --since 2024-05-01T10:05:00Z: the window is empty",
        ),
        (
            &["--resource", "customer_contact", "--since", SINCE, "--until", "soon"],
            "pollbus: replay: --until \"soon\": not a time",
        ),
        (
            &["--resource", "sn/incident", "--since", SINCE],
            "pollbus: replay: no resource \"sn/incident\" is configured (use SOURCE/RESOURCE as `pollbus check` lists them)",
        ),
        (
            &["--resource", "customer_contact", "--since", SINCE, "--for", "crm sync"],
            "pollbus: replay: --for \"crm sync\": a subscription name has only letters, digits, '.', '-' and '_'",
        ),
        (
            &["--resource", "customer_contact", "--since", "2999-01-01T00:00:00Z"],
            "pollbus: replay: --since 2999-01-01T00:00:00Z is in the future",
        ),
    ];
    for (args, expected) in cases {
        let run = dir.replay(args).await;
        run.assert_code(64);
        assert!(run.stderr.contains(expected), "{args:?}:\n{}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    assert_eq!(
        sim.request_count(),
        0,
        "a bad request asks the vendor nothing"
    );
    assert!(!dir.path().join("state").exists(), "nor opens the state");
    // The help names the rule other subscriptions use.
    let help = tokio::process::Command::new(BIN)
        .args(["replay", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(
            "NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = '<their own name>'"
        ),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_is_published_before_the_replay_goes_on() {
    let (_sim, seeded, dir) = polled(JSONL, "").await;
    let text = std::fs::read_to_string(dir.path().join("pollbus.toml"))
        .unwrap()
        .replace("[outbox]", "[outbox]\nmax_rows = 2\nbatch_size = 2");
    std::fs::write(dir.path().join("pollbus.toml"), text).unwrap();
    let run = dir.replay(WINDOW).await;
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("the topic's outbox is full; the replay waits for it to be published"),
        "{}",
        run.stderr
    );
    let lines = dir.lines();
    let ids: Vec<String> = lines[1..]
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seeded.names(&ids), ["r", "q", "s"]);
}

/// Service Bus that refuses connections (nothing listens on the port) and a one-page outbox:
/// the replay publishes what it can, stops when the topic's outbox stays full, says so and
/// exits 1; what it queued stays in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stops_when_the_outbox_stays_full_and_keeps_what_it_queued() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let sink = format!(
        "[sink]\nkind = \"servicebus\"\nconnection_string = \"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=s;UseDevelopmentEmulator=true;\"\nsend_timeout = \"2s\""
    );
    let sim = ServiceNowSim::start().await;
    let seeded = seed(&sim);
    let dir = Dir::new(
        &config_text(&sim, &sink, "").replace("[outbox]", "[outbox]\nmax_rows = 2\nbatch_size = 2"),
    );
    dir.pollbus("poll-once", &[]).await.assert_code(0);
    let before = dir.state(&seeded.all()).await;
    let run = dir.replay(WINDOW).await;
    run.assert_code(1);
    let id = run.replay_id();
    assert!(
        run.stderr.contains(&format!(
            "pollbus: replay {id} failed after queueing 2 messages: the outbox holds 2 messages for api.event.customer (outbox.max_rows 2) and the sink is not taking them"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("outbox left 2"), "{}", run.stderr);
    let after = dir.state(&seeded.all()).await;
    assert_eq!(after.outbox, 2);
    assert_eq!(
        (after.resource, after.snapshots),
        (before.resource, before.snapshots)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_beside_a_running_daemon_is_published_by_it() {
    let sim = ServiceNowSim::start().await;
    let seeded = seed(&sim);
    let dir = Dir::new(&config_text(
        &sim,
        JSONL,
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let path = dir.path().to_path_buf();
    let mut daemon = tokio::task::spawn_blocking(move || RunningPollbus::start(BIN, &path))
        .await
        .unwrap();
    let run = dir.replay(FOR_CRM_SYNC).await;
    run.assert_code(0);
    let id = run.replay_id();
    assert!(
        run.stderr.contains(&format!(
            "pollbus: replay {id}: the pollbus holding the state file (pid {}",
            daemon.child.id()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("publishes the 3 queued messages from its outbox"),
        "{}",
        run.stderr
    );
    // The daemon's publisher sends them (it drains at least every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let replayed = loop {
        let replayed: Vec<Value> = dir
            .lines()
            .into_iter()
            .filter(|m| property(m, "pollbus-replay") == id.as_str())
            .collect();
        if replayed.len() == 3 || std::time::Instant::now() > deadline {
            break replayed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<String> = replayed
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seeded.names(&ids), ["r", "q", "s"], "{}", daemon.log());
    daemon.signal("-TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

/// With PostgreSQL state the replay publishes itself (claiming outbox rows under a replica id of
/// its own) and leaves cursor and snapshots alone, as with SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_on_postgres_state_publishes_itself_and_leaves_the_state_alone() {
    let db = pg::TestDb::create().await;
    let sim = ServiceNowSim::start().await;
    let seeded = seed(&sim);
    let dir =
        Dir::new(&config_text(&sim, JSONL, "").replace("sqlite://./state/pollbus.db", &db.url));
    dir.pollbus("poll-once", &[]).await.assert_code(0);
    let store = pollbus::store::open(&db.url).await.unwrap();
    let before = StateView::of(store.as_ref(), &seeded.all()).await;
    assert!(before.resource.is_some());
    let run = dir.replay(FOR_CRM_SYNC).await;
    run.assert_code(0);
    assert!(run.stderr.contains("outbox left 0"), "{}", run.stderr);
    let lines = dir.lines();
    let ids: Vec<String> = lines
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seeded.names(&ids), ["r", "q", "s"]);
    assert!(lines
        .iter()
        .all(|m| property(m, "pollbus-replay") == run.replay_id().as_str()));
    assert_eq!(StateView::of(store.as_ref(), &seeded.all()).await, before);
}

/// The Service Bus emulator's topic with four subscriptions: two that filter replays meant for
/// others out with the documented rule, one that takes everything (`$Default`), one that takes
/// no replay at all.
const EMULATOR: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Topics":[
  {"Name":"api.event.customer","Properties":{"RequiresDuplicateDetection":true,"DuplicateDetectionHistoryTimeWindow":"PT10M"},
   "Subscriptions":[
     {"Name":"crm-sync","Rules":[{"Name":"replays-for-others","Properties":{"FilterType":"Sql",
       "SqlFilter":{"SqlExpression":"NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = 'crm-sync'"}}}]},
     {"Name":"audit","Rules":[{"Name":"replays-for-others","Properties":{"FilterType":"Sql",
       "SqlFilter":{"SqlExpression":"NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = 'audit'"}}}]},
     {"Name":"everything"},
     {"Name":"no-replays","Rules":[{"Name":"no-replays","Properties":{"FilterType":"Sql",
       "SqlFilter":{"SqlExpression":"NOT EXISTS([pollbus-replay])"}}}]}]}
]}],"Logging":{"Type":"File"}}}"#;

async fn emulator() -> Emulator {
    Emulator::start(servicebus_emulator::Config::from_json_str(EMULATOR).unwrap())
        .await
        .unwrap()
}

fn servicebus_sink(emulator: &Emulator) -> String {
    format!(
        "[sink]\nkind = \"servicebus\"\nconnection_string = \"{}\"\nsend_timeout = \"20s\"",
        emulator.connection_string()
    )
}

fn active(emulator: &Emulator, subscription: &str) -> usize {
    emulator
        .counts(&format!("api.event.customer/Subscriptions/{subscription}"))
        .unwrap()
        .active
}

async fn receive(emulator: &Emulator, subscription: &str, count: usize) -> Vec<Value> {
    subscriber(
        &emulator.connection_string(),
        &[
            "receive",
            "--topic",
            "api.event.customer",
            "--subscription",
            subscription,
            "--count",
            &count.to_string(),
            "--wait",
            "5",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reaches_its_subscription_with_its_marks_and_not_the_others() {
    let emulator = emulator().await;
    let (_sim, seeded, dir) = polled(&servicebus_sink(&emulator), "").await;
    // The ordinary UPDATE of p reached every subscription.
    for s in ["crm-sync", "audit", "everything", "no-replays"] {
        assert_eq!(active(&emulator, s), 1, "{s}");
    }
    let run = dir.replay(FOR_CRM_SYNC).await;
    run.assert_code(0);
    let id = run.replay_id();
    assert_eq!(
        active(&emulator, "audit"),
        1,
        "the rule keeps a replay for crm-sync out"
    );
    assert_eq!(active(&emulator, "no-replays"), 1);
    assert_eq!(
        active(&emulator, "everything"),
        4,
        "$Default (1=1) takes everything"
    );

    let got = receive(&emulator, "crm-sync", 4).await;
    let replayed: Vec<&Value> = got
        .iter()
        .filter(|m| m["application_properties"].get("pollbus-replay").is_some())
        .collect();
    assert_eq!(replayed.len(), 3, "{got:?}");
    let ids: Vec<String> = replayed
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seeded.names(&ids), ["r", "q", "s"]);
    for m in &replayed {
        let props = &m["application_properties"];
        assert_eq!(props["pollbus-replay"], json!({"type": "str", "value": id}));
        assert_eq!(
            props["pollbus-replay-for"],
            json!({"type": "str", "value": "crm-sync"})
        );
        assert_eq!(m["body"]["evenType"], 2);
        assert_eq!(m["body"]["changedFields"], "FirstName,LastName,Email");
        for field in ["FirstName", "LastName", "Email"] {
            assert_eq!(props[field]["type"], "str", "{field}: {props}");
        }
        assert_eq!(
            m["session_id"],
            format!("customer.{}", m["body"]["id"].as_str().unwrap())
        );
        assert_eq!(m["content_type"], "application/json");
    }
    assert_eq!(
        replayed[1]["application_properties"]["LastName"]["value"],
        "Strøm"
    );
    let audit = receive(&emulator, "audit", 1).await;
    assert!(audit[0]["application_properties"]
        .get("pollbus-replay")
        .is_none());

    // The same replay again within the duplicate-detection window: the broker drops it all.
    let again = dir.replay(FOR_CRM_SYNC).await;
    again.assert_code(0);
    assert_eq!(again.replay_id(), id);
    assert_eq!(active(&emulator, "crm-sync"), 0, "nothing sent twice");
    assert_eq!(active(&emulator, "everything"), 4);

    // A replay for every subscription (no --for) reaches those with the rule too, but not the
    // subscription that takes no replays.
    dir.replay(&[
        "--resource",
        "customer_contact",
        "--since",
        SINCE,
        "--until",
        UNTIL,
    ])
    .await
    .assert_code(0);
    assert_eq!(active(&emulator, "crm-sync"), 3);
    assert_eq!(active(&emulator, "audit"), 3);
    assert_eq!(active(&emulator, "everything"), 7);
    assert_eq!(active(&emulator, "no-replays"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_service_bus_is_down_waits_in_the_outbox_and_a_later_publish_delivers_it() {
    let mut emulator = emulator().await;
    let (_sim, seeded, dir) = polled(&servicebus_sink(&emulator), "").await;
    emulator.stop().await;
    let run = dir.replay(FOR_CRM_SYNC).await;
    run.assert_code(1);
    let id = run.replay_id();
    assert!(
        run.stderr
            .contains(&format!("pollbus: replay {id}: read 3 pages")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "pollbus: replay {id}: outbox left 3: the sink did not take them within 3s; they stay in the outbox and `pollbus run` or `pollbus poll-once` publishes them"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(dir.state(&seeded.all()).await.outbox, 3);
    let show = dir.pollbus("state", &["show"]).await;
    show.assert_code(0);
    assert!(
        show.stdout.starts_with("outbox: 3 waiting"),
        "{}",
        show.stdout
    );

    // Service Bus is back (an empty broker): the next publish delivers the replay.
    emulator.restart().await.unwrap();
    dir.pollbus("poll-once", &[]).await.assert_code(0);
    assert_eq!(dir.state(&seeded.all()).await.outbox, 0);
    let got = receive(&emulator, "crm-sync", 3).await;
    let ids: Vec<String> = got
        .iter()
        .map(|m| m["body"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seeded.names(&ids), ["r", "q", "s"]);
    for m in &got {
        assert_eq!(
            m["application_properties"]["pollbus-replay"]["value"],
            id.as_str()
        );
        assert_eq!(
            m["application_properties"]["pollbus-replay-for"]["value"],
            "crm-sync"
        );
    }
    assert_eq!(active(&emulator, "audit"), 0);
}
