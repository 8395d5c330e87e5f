//! Entra ID end to end, offline: the real `pollbus run` binary authenticates to the Service Bus
//! emulator with **workload identity** (as on AKS) or **managed identity** (IMDS), against the
//! local authority of `pollbus_testkit::entra`:
//!
//! federated token file → `POST {AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token` (HTTPS with
//! a test CA, given to pollbus as `sink.identity_ca_file`) → RS256 access token for
//! `https://servicebus.azure.net` → `$cbs` put-token of type `jwt`, which the emulator
//! validates against the authority's JWKS and authorizes by role assignment → renewal before
//! expiry, whether or not anything is being sent.
//!
//! Tokens live 4 s here, so every run renews several times; the topic has no duplicate
//! detection, so a message sent twice would reach the subscriber (Microsoft's Python SDK)
//! twice. Also covered: the federated token file rotated on disk, a revoked role (the topic
//! pauses with an ERROR naming the role; nothing is dead-lettered), a federated credential
//! that does not match, a pod without the workload identity environment, and a machine without
//! a managed identity.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pollbus_testkit::cli::{self, http_get, RunningPollbus};
use pollbus_testkit::entra::Authority;
use pollbus_testkit::servicenow::ServiceNowSim;
use pollbus_testkit::subscriber::subscriber;
use pollbus_testkit::t;
use servicebus_emulator::{EntraAuth, Role, ServerSettings};

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");
const TENANT: &str = "3f0c2a1e-7b44-4c5d-9a0e-5d1b2c3d4e5f";
const CLIENT_ID: &str = "6a1d0c9b-2e3f-4a5b-8c7d-0e1f2a3b4c5d";
const WORKLOAD_OID: &str = "0b9e8d7c-6f5a-4b3c-9d2e-1f0a9b8c7d6e";
const MANAGED_OID: &str = "5c4b3a29-1807-4f6e-8d5c-4b3a29180716";
const SUBJECT: &str = "system:serviceaccount:integrations:pollbus";
const TOPIC: &str = "api.event.customer";
const SUBSCRIPTION: &str = "crm-sync";
/// Access tokens live this long in these tests.
const TOKEN_LIFETIME: Duration = Duration::from_secs(4);

const EMULATOR: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Topics":[
  {"Name":"api.event.customer","Subscriptions":[{"Name":"crm-sync","Properties":{"MaxDeliveryCount":5}}]}
]}],"Logging":{"Type":"File"}}}"#;

/// The authority, the emulator trusting it, the ServiceNow simulator and pollbus's folder.
struct World {
    authority: Authority,
    emulator: servicebus_emulator::Emulator,
    sim: ServiceNowSim,
    dir: tempfile::TempDir,
    token_file: PathBuf,
    /// (sys_id, last name) of every change the ServiceNow user made.
    written: BTreeSet<(String, String)>,
    ids: Vec<String>,
}

impl World {
    async fn start(credential: &str) -> World {
        let authority = Authority::start(TENANT).await;
        authority.set_token_lifetime(TOKEN_LIFETIME);
        authority.register_workload(CLIENT_ID, WORKLOAD_OID, SUBJECT);
        // The emulator trusts the keys the authority publishes (fetched over HTTPS, trusting
        // the test CA).
        let jwks = fetch_jwks(&authority).await;
        let entra = EntraAuth::new(&jwks, &authority.issuer(), TENANT).unwrap();
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
        let ca = dir.path().join("authority-ca.pem");
        std::fs::write(&ca, authority.ca_pem()).unwrap();
        let token_file = dir.path().join("azure-identity-token");
        std::fs::write(
            &token_file,
            authority.service_account_token(SUBJECT, Duration::from_secs(3600)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pollbus.toml"),
            config(&sim, emulator.addr(), credential, &ca),
        )
        .unwrap();
        let mut world = World {
            authority,
            emulator,
            sim,
            dir,
            token_file,
            written: BTreeSet::new(),
            ids: Vec::new(),
        };
        for i in 0..5 {
            let v = format!("c{i}-v0");
            let id = world
                .sim
                .insert("customer_contact", json!({"last_name": v}));
            world.written.insert((id.clone(), v));
            world.ids.push(id);
        }
        world
    }

    /// The environment the AKS webhook injects into a labelled pod.
    fn workload_env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
            ("AZURE_TENANT_ID".into(), TENANT.into()),
            (
                "AZURE_FEDERATED_TOKEN_FILE".into(),
                self.token_file.display().to_string(),
            ),
            ("AZURE_AUTHORITY_HOST".into(), self.authority.url().into()),
        ]
    }

    /// IMDS (`http://169.254.169.254`) reached through the fake, as a proxy; loopback direct.
    fn imds_env(&self) -> Vec<(String, String)> {
        vec![
            ("HTTP_PROXY".into(), self.authority.imds_url()),
            ("NO_PROXY".into(), "127.0.0.1,localhost".into()),
        ]
    }

    async fn start_pollbus(&self, env: Vec<(String, String)>) -> RunningPollbus {
        let dir = self.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || RunningPollbus::start_with_env(BIN, &dir, &env))
            .await
            .unwrap()
    }

    /// One change by the ServiceNow user.
    fn change(&mut self, n: usize) {
        let i = n % self.ids.len();
        let v = format!("c{i}-v{n}");
        self.sim.advance(Duration::from_millis(300));
        self.sim
            .update("customer_contact", &self.ids[i], json!({"last_name": v}));
        self.written.insert((self.ids[i].clone(), v));
    }

    /// Receives the subscription with the Python SDK; asserts every change arrived exactly
    /// once and nothing else.
    async fn assert_received_exactly_once(&self, log: &str) {
        let expected = self.written.len();
        let got = subscriber(
            &self.emulator.connection_string(),
            &[
                "receive",
                "--topic",
                TOPIC,
                "--subscription",
                SUBSCRIPTION,
                "--count",
                &expected.to_string(),
                "--wait",
                "10",
            ],
        )
        .await;
        let left = self
            .emulator
            .counts(&format!("{TOPIC}/Subscriptions/{SUBSCRIPTION}"))
            .unwrap();
        assert_eq!(left.active, 0, "nothing beyond the changes written");
        let mut received: BTreeMap<(String, String), usize> = BTreeMap::new();
        for m in &got {
            let id = m["body"]["id"].as_str().unwrap().to_string();
            let value = m["application_properties"]["LastName"]["value"]
                .as_str()
                .unwrap()
                .to_string();
            *received.entry((id, value)).or_default() += 1;
        }
        let doubled: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "delivered twice: {doubled:?}\n{log}");
        let received: BTreeSet<_> = received.into_keys().collect();
        let lost: Vec<_> = self.written.difference(&received).collect();
        assert!(lost.is_empty(), "lost: {lost:?}\n{log}");
    }
}

/// GET the JWKS over HTTPS, trusting only the test CA.
async fn fetch_jwks(authority: &Authority) -> String {
    let ca = reqwest::Certificate::from_pem(authority.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("{}/{}/discovery/v2.0/keys", authority.url(), TENANT);
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn config(
    sim: &ServiceNowSim,
    emulator: std::net::SocketAddr,
    credential: &str,
    ca: &Path,
) -> String {
    format!(
        r#"
shutdown_grace = "10s"
[state]
url = "sqlite://./state/pollbus.db"
[admin]
listen = "127.0.0.1:0"
[sink]
kind = "servicebus"
namespace = "{emulator}"
use_development_emulator = true
credential = "{credential}"
identity_ca_file = "{ca}"
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
        ca = ca.display(),
    )
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (up to `limit`) until `done` holds for pollbus's metrics text.
async fn wait_metrics(
    daemon: &RunningPollbus,
    limit: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let started = Instant::now();
    loop {
        let (_, text) = http_get(&daemon.addr, "/metrics").await;
        if done(&text) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what} not within {limit:?}:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to `limit`) until pollbus has logged `needle`.
async fn wait_log(daemon: &RunningPollbus, limit: Duration, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let log = daemon.log();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            started.elapsed() < limit,
            "no {needle:?} logged within {limit:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn polls_ok(text: &str) -> f64 {
    metric(text, "pollbus_polls_total{outcome=\"ok\"").unwrap_or(0.0)
}

/// Waits for two more polls and an empty outbox, then stops pollbus gracefully; its log.
async fn catch_up_and_stop(mut daemon: RunningPollbus) -> String {
    let polls_then = polls_ok(&http_get(&daemon.addr, "/metrics").await.1);
    wait_metrics(&daemon, Duration::from_secs(30), "catching up", |text| {
        polls_ok(text) >= polls_then + 2.0 && metric(text, "pollbus_outbox_depth ") == Some(0.0)
    })
    .await;
    daemon.signal("-TERM");
    let log = daemon.log();
    assert_eq!(daemon.wait().code(), Some(0), "{log}");
    daemon.log()
}

/// Lines of `log` at `level` (`ERROR`, `WARN`).
fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(level)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_identity_publishes_renews_4s_tokens_and_follows_the_rotated_token_file() {
    let mut world = World::start("workload_identity").await;
    world
        .emulator
        .entra()
        .unwrap()
        .assign(WORKLOAD_OID, Role::DataSender, Some(TOPIC));
    // The first projected token expires 9 s after start: a pollbus that kept presenting it
    // after the rotation below would be refused from then on (AADSTS700024).
    let first_sa = world
        .authority
        .service_account_token(SUBJECT, Duration::from_secs(9));
    std::fs::write(&world.token_file, &first_sa).unwrap();

    let daemon = world.start_pollbus(world.workload_env()).await;
    wait_metrics(&daemon, Duration::from_secs(30), "the first poll", |t| {
        polls_ok(t) >= 1.0
    })
    .await;
    let started = Instant::now();
    let mut n = 0;
    let mut rotated = None;
    // 6 s of changes, the token file rotated at 3 s (as the kubelet does it), then 9 s without
    // any change (two token lifetimes: only the renewal task keeps the link authorized), then
    // 3 s of changes again.
    while started.elapsed() < Duration::from_secs(18) {
        let s = started.elapsed();
        if rotated.is_none() && s >= Duration::from_secs(3) {
            let sa = world
                .authority
                .service_account_token(SUBJECT, Duration::from_secs(3600));
            let tmp = world.dir.path().join("..token.tmp");
            std::fs::write(&tmp, &sa).unwrap();
            std::fs::rename(&tmp, &world.token_file).unwrap();
            rotated = Some(unix_ms());
        }
        if s < Duration::from_secs(6) || s >= Duration::from_secs(15) {
            n += 1;
            world.change(n);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = catch_up_and_stop(daemon).await;
    let cbs_before_subscriber = world.emulator.cbs_counts();
    world.assert_received_exactly_once(&log).await;

    let requests = world.authority.requests();
    let refused: Vec<_> = requests.iter().filter(|r| r.refused.is_some()).collect();
    assert!(
        refused.is_empty(),
        "token requests refused: {refused:?}\n{log}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.client_id == CLIENT_ID && r.endpoint == "workload"),
        "{requests:?}"
    );
    // ~20 s with 4 s tokens renewed at half-life: about ten requests, one per renewal (not
    // one per topic or per send).
    assert!(
        (5..=20).contains(&requests.len()),
        "{} token requests: {requests:?}",
        requests.len()
    );
    // The rotated file was picked up: later requests present the new token, and none
    // presented the first one after it was replaced.
    let first_jti = requests[0].assertion_id.clone();
    let rotated = rotated.expect("rotated");
    let after: Vec<_> = requests.iter().filter(|r| r.at_ms > rotated).collect();
    assert!(after.len() >= 3, "{requests:?}");
    assert!(
        after.iter().all(|r| r.assertion_id != first_jti),
        "the old service account token was presented after the rotation: {requests:?}"
    );
    // One put-token per topic and token, all accepted.
    assert_eq!(cbs_before_subscriber.jwt_refused, 0, "{log}");
    assert_eq!(cbs_before_subscriber.sas_accepted, 0);
    assert!(
        cbs_before_subscriber.jwt_accepted >= requests.len() as u64,
        "{cbs_before_subscriber:?} for {} tokens",
        requests.len()
    );
    assert!(lines_at(&log, "ERROR").is_empty(), "{log}");
    assert!(lines_at(&log, "WARN").is_empty(), "{log}");
    eprintln!(
        "token requests: {}; put-tokens: {:?}",
        requests.len(),
        cbs_before_subscriber
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_role_pauses_the_topic_with_an_error_naming_the_role_and_nothing_is_lost() {
    let mut world = World::start("workload_identity").await;
    let entra = world.emulator.entra().unwrap().clone();
    entra.assign(WORKLOAD_OID, Role::DataSender, None);
    let daemon = world.start_pollbus(world.workload_env()).await;
    wait_metrics(
        &daemon,
        Duration::from_secs(30),
        "the creates published",
        |t| metric(t, "pollbus_messages_published_total").unwrap_or(0.0) >= 5.0,
    )
    .await;

    // The role is removed: once the token in force expires, the link is detached and
    // re-attaching is refused.
    // The user keeps changing records meanwhile.
    entra.revoke(WORKLOAD_OID);
    let revoked = Instant::now();
    let mut n = 0;
    let error = loop {
        n += 1;
        world.change(n);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = daemon.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("'Send' claim(s) are required"))
        {
            break line.to_string();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(20),
            "no refusal within 20 s of the revocation:\n{log}"
        );
    };
    assert!(
        error.contains("ERROR") && error.contains("topic paused"),
        "{error}"
    );
    assert!(error.contains("Azure Service Bus Data Sender"), "{error}");
    assert!(error.contains(CLIENT_ID), "the identity is named: {error}");
    let (_, text) = http_get(&daemon.addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "pollbus_topic_blocked{reason=\"unauthorized\",topic=\"api.event.customer\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "pollbus_dead_letters ").unwrap_or(0.0), 0.0);
    assert!(metric(&text, "pollbus_outbox_depth ").unwrap_or(0.0) > 0.0);

    // The role is granted again (on the topic this time): the topic resumes by itself.
    entra.assign(WORKLOAD_OID, Role::DataSender, Some(TOPIC));
    wait_log(&daemon, Duration::from_secs(20), "resumed").await;
    let log = catch_up_and_stop(daemon).await;
    assert!(
        !log.contains("dead-letter") && !log.contains("dead letter"),
        "{log}"
    );
    world.assert_received_exactly_once(&log).await;
    eprintln!("revoked role: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_identity_misconfigurations_say_what_to_fix() {
    let world = World::start("workload_identity").await;
    world
        .emulator
        .entra()
        .unwrap()
        .assign(WORKLOAD_OID, Role::DataSender, None);

    // 1. The pod lacks the label azure.workload.identity/use (the webhook injected nothing):
    //    pollbus does not start and says which variable is missing and why.
    let empty: Vec<(String, String)> = [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ]
    .iter()
    .map(|k| (k.to_string(), String::new()))
    .collect();
    let dir = world.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        cli::pollbus(
            BIN,
            Some(&dir),
            &["run", "--config", "pollbus.toml"],
            &empty,
        )
    })
    .await
    .unwrap();
    let stderr = cli::text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("AZURE_CLIENT_ID is not set"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("azure.workload.identity/use"), "{line}");
    assert!(line.contains("azure.workload.identity/client-id"), "{line}");
    eprintln!(
        "no webhook environment (exit {:?}): {line}",
        out.status.code()
    );

    // 2. The federated credential names another service account: Entra refuses
    //    (AADSTS70021); the topic pauses with an ERROR saying what to check.
    world.authority.register_workload(
        CLIENT_ID,
        WORKLOAD_OID,
        "system:serviceaccount:default:other",
    );
    let daemon = world.start_pollbus(world.workload_env()).await;
    let error = wait_log(&daemon, Duration::from_secs(30), "topic paused").await;
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("AADSTS70021"), "{error}");
    assert!(
        error.contains(SUBJECT),
        "the presented subject is named: {error}"
    );
    assert!(error.contains("federated credential"), "{error}");
    assert!(!error.contains("eyJ"), "no token in the log: {error}");
    eprintln!("federated credential mismatch: {error}");
    drop(daemon);

    // 3. The client id names no application in the tenant (a wrong ServiceAccount
    //    annotation): AADSTS700016.
    let mut env = world.workload_env();
    env[0].1 = "ffffffff-0000-4000-8000-000000000000".into();
    let daemon = world.start_pollbus(env).await;
    let error = wait_log(&daemon, Duration::from_secs(30), "topic paused").await;
    assert!(error.contains("AADSTS700016"), "{error}");
    eprintln!("unknown client id: {error}");
    drop(daemon);
    assert_eq!(
        world.emulator.cbs_counts().jwt_accepted,
        0,
        "no token was ever put"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managed_identity_through_imds_publishes_and_renews_and_a_missing_identity_pauses() {
    let mut world = World::start("managed_identity").await;
    world
        .emulator
        .entra()
        .unwrap()
        .assign(MANAGED_OID, Role::DataSender, Some(TOPIC));
    // No IDENTITY_ENDPOINT / MSI_ENDPOINT: the VM / AKS node IMDS endpoint.
    let env = world.imds_env();

    // No managed identity on the machine yet: IMDS answers "Identity not found".
    let daemon = world.start_pollbus(env).await;
    let error = wait_log(&daemon, Duration::from_secs(30), "topic paused").await;
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("has not been assigned"), "{error}");
    assert!(error.contains("managed identity is assigned"), "{error}");
    eprintln!("no managed identity: {error}");

    // The identity is assigned: the topic resumes, and 4 s tokens are renewed for 10 s.
    world.authority.set_managed_identity(Some(MANAGED_OID));
    wait_log(&daemon, Duration::from_secs(20), "resumed").await;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(10) {
        // Changes for 3 s, then idle: the renewal task alone keeps the link authorized.
        if started.elapsed() < Duration::from_secs(3) {
            n += 1;
            world.change(n);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    n += 1;
    world.change(n);
    let log = catch_up_and_stop(daemon).await;
    world.assert_received_exactly_once(&log).await;
    let issued: Vec<_> = world
        .authority
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "imds" && r.refused.is_none())
        .collect();
    assert!(issued.len() >= 4, "{issued:?}");
    let errors = lines_at(&log, "ERROR");
    assert!(
        errors.iter().all(|l| l.contains("has not been assigned")),
        "only the missing identity was an error: {errors:?}"
    );
}

#[tokio::test]
async fn the_emulator_accepts_only_valid_tokens_of_its_authority() {
    let authority = Authority::start(TENANT).await;
    let entra = EntraAuth::new(&authority.jwks(), &authority.issuer(), TENANT).unwrap();
    let valid = authority.access_claims(WORKLOAD_OID, Duration::from_secs(60));
    let claims = entra
        .validate(&authority.sign_access_token(&valid))
        .unwrap();
    assert_eq!(claims.oid, WORKLOAD_OID);

    let with = |key: &str, value: Value| {
        let mut c = valid.clone();
        c[key] = value;
        authority.sign_access_token(&c)
    };
    let cases = [
        (
            "forged",
            authority.sign_with_foreign_key(&valid),
            "InvalidSignature",
        ),
        ("expired", with("exp", json!(1_000)), "ExpiredToken"),
        (
            "not yet valid",
            with("nbf", json!(4_000_000_000u64)),
            "InvalidToken",
        ),
        (
            "other audience",
            with("aud", json!("https://storage.azure.com")),
            "InvalidAudience",
        ),
        (
            "other issuer",
            with("iss", json!("https://login.example/other/v2.0")),
            "InvalidIssuer",
        ),
        (
            "other tenant",
            with("tid", json!("00000000-0000-0000-0000-000000000000")),
            "InvalidIssuer",
        ),
        ("no oid", with("oid", json!("")), "InvalidToken"),
        (
            "not a JWT",
            "SharedAccessSignature sr=x".to_string(),
            "InvalidToken",
        ),
    ];
    for (case, token, expected) in cases {
        let e = entra.validate(&token).expect_err(case).to_string();
        assert!(e.starts_with(expected), "{case}: {e}");
    }

    // Roles: Data Sender on one topic sends there only; Data Owner on the namespace does all.
    entra.assign("a", Role::DataSender, Some(TOPIC));
    entra.assign("b", Role::DataOwner, None);
    assert!(entra.rights("a", TOPIC).send);
    assert!(!entra.rights("a", TOPIC).listen);
    assert!(!entra.rights("a", "api.event.other").send);
    assert!(entra.rights("b", "api.event.other/subscriptions/x").listen);
    entra.revoke("a");
    assert!(!entra.rights("a", TOPIC).any());
}
