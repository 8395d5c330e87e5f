//! The whole daemon under a bad day on the publishing side: the real `pollbus run` binary polls
//! the ServiceNow simulator and publishes to the Service Bus emulator through a TCP proxy,
//! while a ServiceNow user keeps changing records and the test injects, one after another:
//!
//! 1. the broker unreachable for 10 s (the proxy drops every connection and refuses new ones);
//! 2. `com.microsoft:server-busy` on every send to the topic for 6 s;
//! 3. the process killed with SIGKILL, and started again at once;
//! 4. the topic answering `amqp:not-found` for 5 s (deleted, then created again);
//! 5. the SAS key regenerated: the broker refuses the old key at once (its links are detached)
//!    and the mounted secret file gets the new connection string 2 s later, as a Kubernetes
//!    secret update arrives after the rotation;
//! 6. SIGKILL again, and a third start.
//!
//! Afterwards Microsoft's Python SDK receives the subscription: every change the user made
//! arrives, exactly once (a message sent again after a lost acknowledgement or a kill carries
//! the same MessageId and the topic's duplicate detection drops it), and nothing else.
//!
//! Not injected here, with the reason: a poison message (it needs a broker that refuses one
//! message and accepts the others; `tests/pipeline.rs` covers it against a sink that does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use pollbus_testkit::cli::{http_get, RunningPollbus};
use pollbus_testkit::servicenow::ServiceNowSim;
use pollbus_testkit::subscriber::subscriber;
use pollbus_testkit::t;
use servicebus_emulator::Emulator;

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");

const EMULATOR: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Topics":[
  {"Name":"api.event.customer","Properties":{"RequiresDuplicateDetection":true,"DuplicateDetectionHistoryTimeWindow":"PT10M"},
   "Subscriptions":[{"Name":"crm-sync","Properties":{"MaxDeliveryCount":5}}]}
]}],"Logging":{"Type":"File"}}}"#;

/// A TCP proxy that can be cut: while down, it closes every connection it carries and every
/// new one at once (the broker is unreachable).
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (d, g) = (down.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            down,
            generation,
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

fn config(sim: &ServiceNowSim, connection_file: &std::path::Path) -> String {
    format!(
        r#"
shutdown_grace = "10s"
[state]
url = "sqlite://./state/pollbus.db"
[admin]
listen = "127.0.0.1:0"
[sink]
kind = "servicebus"
connection_string = "${{file:{connection}}}"
send_timeout = "5s"
[outbox]
backoff_min = "100ms"
backoff_max = "1s"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
interval = "1s"
jitter = "0s"
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "customer_contact"
  entity = "customer"
  fields = {{ LastName = "last_name" }}
  on_behalf_of = {{ value = "IFS" }}
  initial = "emit"
"#,
        base = sim.base_url(),
        connection = connection_file.display(),
    )
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts `pollbus run` in `dir`, off the async runtime (it waits for the admin log line).
async fn start(dir: &std::path::Path) -> RunningPollbus {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || RunningPollbus::start(BIN, &dir))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_arrives_exactly_once_through_a_bad_day() {
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2024-05-01T10:00:00Z"));
    let emulator = Emulator::start(servicebus_emulator::Config::from_json_str(EMULATOR).unwrap())
        .await
        .unwrap();
    let proxy = Proxy::start(emulator.addr()).await;
    let connection = emulator
        .connection_string()
        .replace(&emulator.addr().to_string(), &proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("servicebus-connection");
    std::fs::write(&secret, &connection).unwrap();
    std::fs::write(dir.path().join("pollbus.toml"), config(&sim, &secret)).unwrap();

    // What the ServiceNow user writes: 20 contacts, then one change every 250 ms, each contact
    // changed every 5 s (so each change is seen by a poll of its own).
    let mut written: BTreeSet<(String, String)> = BTreeSet::new();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let v = format!("c{i}-v0");
            let id = sim.insert("customer_contact", json!({"last_name": v}));
            written.insert((id.clone(), v));
            id
        })
        .collect();

    let mut daemon = start(dir.path()).await;
    // The 20 creates are published by the first poll before anyone changes anything.
    let first = Instant::now();
    while metric(
        &http_get(&daemon.addr, "/metrics").await.1,
        "pollbus_polls_total{outcome=\"ok\"",
    )
    .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            first.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut logs = String::new();
    let started = Instant::now();
    let at = |s: u64| started + Duration::from_secs(s);
    let mut step = 0;
    let mut changes = 0usize;
    while started.elapsed() < Duration::from_secs(46) {
        changes += 1;
        let i = changes % ids.len();
        let v = format!("c{i}-v{changes}");
        sim.advance(Duration::from_millis(250));
        sim.update("customer_contact", &ids[i], json!({"last_name": v}));
        written.insert((ids[i].clone(), v));
        let now = Instant::now();
        match step {
            0 if now >= at(4) => {
                eprintln!("chaos: broker unreachable for 10 s");
                proxy.set_down(true);
                step = 1;
            }
            1 if now >= at(14) => {
                proxy.set_down(false);
                eprintln!("chaos: server-busy for 6 s");
                emulator.broker().fail_sends(
                    "api.event.customer",
                    "com.microsoft:server-busy",
                    "The server is busy. Please retry the operation.",
                    Duration::from_secs(6),
                );
                step = 2;
            }
            2 if now >= at(22) => {
                eprintln!("chaos: SIGKILL, start again");
                daemon.signal("-KILL");
                daemon.wait();
                logs.push_str(&daemon.log());
                daemon = start(dir.path()).await;
                step = 3;
            }
            3 if now >= at(26) => {
                eprintln!("chaos: topic not found for 5 s");
                emulator.broker().fail_sends(
                    "api.event.customer",
                    "amqp:not-found",
                    "The messaging entity 'sbemulatorns:topic:api.event.customer' could not be found.",
                    Duration::from_secs(5),
                );
                step = 4;
            }
            4 if now >= at(32) => {
                eprintln!("chaos: SAS key regenerated; the secret file follows 2 s later");
                emulator.rotate_key("cm90YXRlZC1rZXk=");
                step = 5;
            }
            5 if now >= at(34) => {
                let rotated = emulator
                    .connection_string()
                    .replace(&emulator.addr().to_string(), &proxy.addr.to_string());
                std::fs::write(&secret, rotated).unwrap();
                step = 6;
            }
            6 if now >= at(40) => {
                eprintln!("chaos: SIGKILL again, start again");
                daemon.signal("-KILL");
                daemon.wait();
                logs.push_str(&daemon.log());
                daemon = start(dir.path()).await;
                step = 7;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(step, 7, "every fault was injected");

    // The user stops; pollbus catches up: a poll after the last change, and an empty outbox.
    let caught_up = Instant::now();
    let polls_then = metric(
        &http_get(&daemon.addr, "/metrics").await.1,
        "pollbus_polls_total{outcome=\"ok\"",
    )
    .unwrap_or(0.0);
    loop {
        let (_, text) = http_get(&daemon.addr, "/metrics").await;
        let polls = metric(&text, "pollbus_polls_total{outcome=\"ok\"").unwrap_or(0.0);
        let depth = metric(&text, "pollbus_outbox_depth ").unwrap_or(1.0);
        if polls >= polls_then + 2.0 && depth == 0.0 {
            break;
        }
        assert!(
            caught_up.elapsed() < Duration::from_secs(60),
            "pollbus did not catch up within 60 s (outbox depth {depth}):\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "caught up {} ms after the last change",
        caught_up.elapsed().as_millis()
    );
    daemon.signal("-TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log());
    logs.push_str(&daemon.log());

    // Microsoft's SDK receives exactly the changes written, each once.
    let expected = written.len();
    let got = subscriber(
        &emulator.connection_string(),
        &[
            "receive",
            "--topic",
            "api.event.customer",
            "--subscription",
            "crm-sync",
            "--count",
            &expected.to_string(),
            "--wait",
            "10",
        ],
    )
    .await;
    let left = emulator
        .counts("api.event.customer/Subscriptions/crm-sync")
        .unwrap();
    assert_eq!(left.active, 0, "nothing beyond the changes written");
    let mut received: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for m in &got {
        let body: &Value = &m["body"];
        let id = body["id"].as_str().unwrap().to_string();
        let value = m["application_properties"]["LastName"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        received
            .entry((id, value))
            .or_default()
            .push(m["message_id"].as_str().unwrap().to_string());
    }
    let doubled: Vec<_> = received.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "changes delivered twice: {doubled:?}");
    let received: BTreeSet<(String, String)> = received.into_keys().collect();
    let lost: Vec<_> = written.difference(&received).collect();
    assert!(
        lost.is_empty(),
        "{} of {expected} changes lost: {lost:?}\n{logs}",
        lost.len()
    );
    assert_eq!(received.len(), expected);
    eprintln!(
        "chaos: {expected} changes written, {} received once each, none lost",
        got.len()
    );
    for expected_log in [
        "outbox publication paused",
        "ended the leases of a previous pollbus process",
        "topic paused",
        "sink.connection_string changed",
    ] {
        assert!(logs.contains(expected_log), "log lacks {expected_log:?}");
    }
}
