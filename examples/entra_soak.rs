//! A longer Entra ID run than the test suite's: `pollbus run` on workload identity against the
//! local authority and the emulator, with short-lived tokens, for a given time; prints the
//! token requests the authority answered, the `$cbs` put-tokens the emulator answered, and
//! whether Microsoft's Python SDK received every change exactly once.
//!
//! ```text
//! cargo build && cargo run --example entra_soak -- 60 5   # seconds, token lifetime (s)
//! ```
//!
//! The ServiceNow user changes a record every 500 ms during the first and last thirds and
//! nothing in between (only the renewal task keeps the link authorized then). Exits non-zero
//! when a change was lost or doubled, a token request or put-token was refused, or pollbus
//! logged a warning or an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use pollbus_testkit::cli::{http_get, RunningPollbus};
use pollbus_testkit::entra::Authority;
use pollbus_testkit::servicenow::ServiceNowSim;
use pollbus_testkit::subscriber::python;
use pollbus_testkit::t;
use servicebus_emulator::{EntraAuth, Role, ServerSettings};

const TENANT: &str = "3f0c2a1e-7b44-4c5d-9a0e-5d1b2c3d4e5f";
const CLIENT_ID: &str = "6a1d0c9b-2e3f-4a5b-8c7d-0e1f2a3b4c5d";
const OID: &str = "0b9e8d7c-6f5a-4b3c-9d2e-1f0a9b8c7d6e";
const SUBJECT: &str = "system:serviceaccount:integrations:pollbus";
const EMULATOR: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Topics":[
  {"Name":"api.event.customer","Subscriptions":[{"Name":"crm-sync","Properties":{"MaxDeliveryCount":5}}]}
]}],"Logging":{"Type":"File"}}}"#;

/// What Microsoft's Python SDK receives (up to `count` messages, waiting 10 s for each).
async fn receive(connection: &str, count: usize) -> Vec<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/subscriber.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args([
            "receive",
            "--topic",
            "api.event.customer",
            "--subscription",
            "crm-sync",
        ])
        .args(["--count", &count.to_string(), "--wait", "10"])
        .env("SB_CONNECTION_STRING", connection)
        .output()
        .await
        .expect("subscriber runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(60, |a| a.parse().expect("seconds"));
    let lifetime: u64 = args
        .next()
        .map_or(5, |a| a.parse().expect("token lifetime"));
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|examples| examples.parent())
        .unwrap()
        .join("pollbus");
    assert!(bin.exists(), "build pollbus first: {}", bin.display());
    let bin = bin.display().to_string();

    let authority = Authority::start(TENANT).await;
    authority.set_token_lifetime(Duration::from_secs(lifetime));
    authority.register_workload(CLIENT_ID, OID, SUBJECT);
    let entra = EntraAuth::new(&authority.jwks(), &authority.issuer(), TENANT).unwrap();
    entra.assign(OID, Role::DataSender, Some("api.event.customer"));
    let emulator = servicebus_emulator::Emulator::start_on(
        servicebus_emulator::Config::from_json_str(EMULATOR).unwrap(),
        ServerSettings {
            entra: Some(Arc::new(entra)),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let sim = ServiceNowSim::start().await;
    sim.set_now(t("2024-05-01T10:00:00Z"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, authority.ca_pem()).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        authority.service_account_token(SUBJECT, Duration::from_secs(3600)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        format!(
            r#"
[state]
url = "sqlite://./state/pollbus.db"
[admin]
listen = "127.0.0.1:0"
[sink]
kind = "servicebus"
namespace = "{ns}"
use_development_emulator = true
credential = "workload_identity"
identity_ca_file = "{ca}"
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
            ns = emulator.addr(),
            ca = ca.display(),
            base = sim.base_url(),
        ),
    )
    .unwrap();
    let mut written = BTreeSet::new();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let v = format!("c{i}-v0");
            let id = sim.insert("customer_contact", json!({"last_name": v}));
            written.insert((id.clone(), v));
            id
        })
        .collect();

    let env = vec![
        ("AZURE_CLIENT_ID".to_string(), CLIENT_ID.to_string()),
        ("AZURE_TENANT_ID".to_string(), TENANT.to_string()),
        (
            "AZURE_FEDERATED_TOKEN_FILE".to_string(),
            token_file.display().to_string(),
        ),
        (
            "AZURE_AUTHORITY_HOST".to_string(),
            authority.url().to_string(),
        ),
    ];
    let work = dir.path().to_path_buf();
    let mut daemon =
        tokio::task::spawn_blocking(move || RunningPollbus::start_with_env(&bin, &work, &env))
            .await
            .unwrap();
    // The creates are published by the first poll before anyone changes anything (a change
    // before it would only be seen as the create's state).
    while metric(
        &http_get(&daemon.addr, "/metrics").await.1,
        "pollbus_polls_total{outcome=\"ok\"",
    ) < 1.0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let third = Duration::from_secs(seconds) / 3;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let s = started.elapsed();
        if s < third || s >= 2 * third {
            n += 1;
            let i = n % ids.len();
            let v = format!("c{i}-v{n}");
            sim.advance(Duration::from_millis(500));
            sim.update("customer_contact", &ids[i], json!({"last_name": v}));
            written.insert((ids[i].clone(), v));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let run = started.elapsed();
    let polls_then = metric(
        &http_get(&daemon.addr, "/metrics").await.1,
        "pollbus_polls_total{outcome=\"ok\"",
    );
    loop {
        let (_, text) = http_get(&daemon.addr, "/metrics").await;
        if metric(&text, "pollbus_polls_total{outcome=\"ok\"") >= polls_then + 2.0
            && metric(&text, "pollbus_outbox_depth ") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.signal("-TERM");
    daemon.wait();
    let log = daemon.log();
    let cbs = emulator.cbs_counts();
    let requests = authority.requests();

    std::fs::write(dir.path().join("../entra_soak_pollbus.log"), &log).ok();
    let got = receive(&emulator.connection_string(), written.len()).await;
    let mut received: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in &got {
        let key = (
            m["body"]["id"].as_str().unwrap_or_default().to_string(),
            m["application_properties"]["LastName"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        *received.entry(key).or_default() += 1;
    }
    let doubled = received.values().filter(|c| **c > 1).count();
    let missing: Vec<_> = written
        .iter()
        .filter(|k| !received.contains_key(*k))
        .collect();
    let lost = missing.len();
    let refused = requests.iter().filter(|r| r.refused.is_some()).count();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();

    println!(
        "run: {:.1} s with {lifetime} s tokens, 1 topic",
        run.as_secs_f64()
    );
    println!(
        "token requests: {} ({} refused), one every {:.1} s on average",
        requests.len(),
        refused,
        if requests.len() > 1 {
            (requests[requests.len() - 1].at_ms - requests[0].at_ms) as f64
                / 1000.0
                / (requests.len() - 1) as f64
        } else {
            0.0
        }
    );
    println!(
        "put-tokens: {} jwt accepted, {} jwt refused",
        cbs.jwt_accepted, cbs.jwt_refused
    );
    println!(
        "messages: {} changes written, {} received, {lost} lost, {doubled} doubled",
        written.len(),
        got.len()
    );
    if !missing.is_empty() {
        println!("missing: {missing:?}");
    }
    println!("pollbus warnings and errors: {}", problems.len());
    for p in &problems {
        println!("  {p}");
    }
    if lost + doubled + refused + problems.len() > 0 || cbs.jwt_refused > 0 {
        std::process::exit(1);
    }
}
