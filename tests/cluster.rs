//! Several replicas on one real PostgreSQL database: leases split the work, a killed replica's
//! resources are taken over within `lease_ttl + interval`, no change is lost or published
//! twice (except with the same message id), and a replica frozen past its lease cannot write.

mod pg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use pollbus::clock::SystemClock;
use pollbus::config::Config;
use pollbus::contract::Message;
use pollbus::daemon::App;
use pollbus::poll::{PollError, Poller};
use pollbus::sink::{Sink, SinkError};
use pollbus::source::{DeletePage, IdPage, Page, Resource, Source, SourceError};
use pollbus::store::fenced::FencedStore;
use pollbus::store::postgres::PgStore;
use pollbus::store::{
    LeaseStore, OutboxGauge, PageStore, ResourceKey, Store, StoreError, StoreOptions,
};
use pollbus_testkit::scripted::customer;
use pollbus_testkit::{MemorySink, ScriptedSource};

const RESOURCES: usize = 12;
const LEASE_TTL: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_millis(500);

/// Who fetched what, when.
type FetchLog = Arc<Mutex<Vec<(String, String, Instant)>>>;

/// A replica's view of the shared vendor: records every fetch with the replica's id; fetches
/// wait for a permit while the gate is closed (a frozen replica).
struct Observed {
    inner: Arc<ScriptedSource>,
    replica: String,
    log: FetchLog,
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Source for Observed {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        self.log.lock().unwrap().push((
            self.replica.clone(),
            resource.name.clone(),
            Instant::now(),
        ));
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.inner.fetch(resource, since, token).await
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        self.inner.list_ids(resource, token).await
    }

    async fn deleted_since(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<DeletePage, SourceError> {
        self.inner.deleted_since(resource, since, token).await
    }
}

/// A replica's way to the shared sink; while `hang` is set, publishing never completes (a
/// replica stuck in a send, holding its claimed outbox rows).
struct HangingSink {
    inner: Arc<MemorySink>,
    hang: AtomicBool,
}

#[async_trait]
impl Sink for HangingSink {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.publish(topic, messages).await
    }

    fn describe(&self) -> String {
        "hanging memory".into()
    }
}

/// One source with 12 resources (entity e00…e11, so message ids differ per resource). The kind
/// is `demo` only to pass validation: the tests hand every replica the scripted vendor.
fn config(replica: &str) -> Config {
    let mut text = format!(
        r#"
[cluster]
lease_ttl = "2s"
claim_timeout = "2s"
replica_id = "{replica}"

[admin]
listen = "127.0.0.1:0"

[outbox]
backoff_min = "50ms"
backoff_max = "200ms"

[[sources]]
name = "crm"
kind = "demo"
source_system = "CRM"
interval = "1s"
jitter = "0s"
overlap = "60s"
page_size = 50
"#
    );
    for i in 0..RESOURCES {
        text.push_str(&format!(
            r#"
  [[sources.resources]]
  name = "r{i:02}"
  entity = "e{i:02}"
  fields = {{ FirstName = "first_name", City = "address.city" }}
"#
        ));
    }
    let mut config = Config::parse(&text, "cluster.toml").unwrap_or_else(|e| panic!("{e}"));
    config.sources[0].interval = INTERVAL; // below the 1s a user may configure
    config
}

/// A replica in its own runtime, so killing it drops every task and connection at once.
struct Replica {
    id: String,
    runtime: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    store: Arc<PgStore>,
    sink: Arc<HangingSink>,
}

async fn start(
    i: usize,
    url: &str,
    source: &Arc<ScriptedSource>,
    sink: &Arc<MemorySink>,
    log: &FetchLog,
) -> Replica {
    let id = format!("replica-{i}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let options = StoreOptions {
        replica_id: id.clone(),
        claim_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let url = url.to_string();
    let store = runtime
        .spawn(async move { Arc::new(PgStore::open(&url, &options).await.unwrap()) })
        .await
        .unwrap();
    let observed: Arc<dyn Source> = Arc::new(Observed {
        inner: source.clone(),
        replica: id.clone(),
        log: log.clone(),
        gate: None,
    });
    let sink = Arc::new(HangingSink {
        inner: sink.clone(),
        hang: AtomicBool::new(false),
    });
    let app = App::with_sources(
        config(&id),
        store.clone(),
        sink.clone(),
        Arc::new(SystemClock),
        &move |_, _| Ok(observed.clone()),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let done = {
        let stop = stop.clone();
        runtime.spawn(async move {
            app.run(stop).await.unwrap();
        })
    };
    Replica {
        id,
        runtime: Some(runtime),
        stop,
        done,
        store,
        sink,
    }
}

impl Replica {
    /// SIGKILL: every task and connection of the replica vanishes, nothing is released.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.done).await;
        self.kill();
    }
}

/// Waits until `check` holds, failing with `what` after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn owners(store: &dyn Store) -> BTreeMap<String, String> {
    store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.key.resource, l.fence.owner))
        .collect()
}

fn per_owner(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for o in owners.values() {
        *counts.entry(o.clone()).or_insert(0) += 1;
    }
    counts
}

/// (entity, record id, City) of every message received, and the distinct message ids per change.
fn received(sink: &MemorySink) -> (BTreeSet<(String, String, String)>, usize) {
    let mut ids: HashMap<(String, String, String), BTreeSet<String>> = HashMap::new();
    for m in sink.messages() {
        let city = match m.application_properties.get("City") {
            Some(pollbus::contract::PropertyValue::String(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        ids.entry((m.body.entity_type.clone(), m.body.id.clone(), city))
            .or_default()
            .insert(m.message_id.clone());
    }
    let most = ids.values().map(BTreeSet::len).max().unwrap_or(0);
    (ids.into_keys().collect(), most)
}

fn expected(changes: &[(&str, &str)]) -> BTreeSet<(String, String, String)> {
    (0..RESOURCES)
        .flat_map(|i| {
            changes
                .iter()
                .map(move |(id, city)| (format!("e{i:02}"), id.to_string(), city.to_string()))
        })
        .collect()
}

fn now_text() -> String {
    Utc::now().to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_split_twelve_resources_and_take_over_a_killed_one() {
    let db = pg::TestDb::create().await;
    let source = ScriptedSource::new();
    for id in ["1", "2", "3"] {
        source.put(
            id,
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            customer("Åse", "Oslo"),
        );
    }
    let sink = MemorySink::new();
    let log: FetchLog = Arc::default();
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start(i, &db.url, &source, &sink, &log).await);
    }
    let observer = PgStore::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();

    // Balanced: 4 leases each, every resource leased.
    eventually("4 leases per replica", Duration::from_secs(20), || async {
        let o = owners(&observer).await;
        o.len() == RESOURCES
            && per_owner(&o).values().all(|&n| n == RESOURCES / 3)
            && per_owner(&o).len() == 3
    })
    .await;
    eventually("every baseline done", Duration::from_secs(20), || async {
        let s = observer.summaries().await.unwrap();
        s.len() == RESOURCES && s.iter().all(|s| s.state.baseline_done)
    })
    .await;

    // Every resource is polled by exactly one replica, its lease holder.
    let leased = owners(&observer).await;
    let window_start = Instant::now();
    tokio::time::sleep(INTERVAL * 3).await;
    let mut pollers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (replica, resource, at) in log.lock().unwrap().iter() {
        if *at >= window_start {
            pollers
                .entry(resource.clone())
                .or_default()
                .insert(replica.clone());
        }
    }
    assert_eq!(
        pollers.len(),
        RESOURCES,
        "every resource polled: {pollers:?}"
    );
    for (resource, by) in &pollers {
        assert_eq!(
            by.iter().collect::<Vec<_>>(),
            [&leased[resource]],
            "{resource} polled by exactly its lease holder"
        );
    }

    // Changes are published once per resource.
    source.update(
        "1",
        &now_text(),
        serde_json::json!({"address": {"city": "Bergen"}}),
    );
    eventually(
        "first change everywhere",
        Duration::from_secs(20),
        || async { received(&sink).0 == expected(&[("1", "Bergen")]) },
    )
    .await;

    // Kill replica 0 (no release, no flush) and change things right away.
    let victim = replicas.remove(0);
    let victim_id = victim.id.clone();
    let victim_resources: Vec<String> = leased
        .iter()
        .filter(|(_, o)| **o == victim_id)
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(victim_resources.len(), 4);

    // The victim gets stuck sending, holding claimed outbox rows when it dies.
    victim.sink.hang.store(true, Ordering::SeqCst);
    let mut conn = db.connect().await;
    let mut changes: Vec<(String, String)> = vec![("1".into(), "Bergen".into())];
    let mut stuck = 0i64;
    for round in 0..5 {
        let city = format!("Molde {round}");
        source.update(
            "3",
            &now_text(),
            serde_json::json!({"address": {"city": city}}),
        );
        changes.push(("3".into(), city));
        let started = Instant::now();
        while stuck == 0 && started.elapsed() < Duration::from_secs(3) {
            stuck = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE claimed_by = $1")
                .bind(&victim_id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stuck > 0 {
            break;
        }
    }
    assert!(stuck > 0, "the victim never claimed outbox rows");

    let mut victim = victim;
    let killed_at = Instant::now();
    victim.kill();
    source.update(
        "2",
        &now_text(),
        serde_json::json!({"address": {"city": "Tromsø"}}),
    );
    source.update(
        "1",
        &now_text(),
        serde_json::json!({"address": {"city": "Bodø"}}),
    );

    eventually(
        "victim's resources taken over",
        Duration::from_secs(20),
        || async {
            let o = owners(&observer).await;
            victim_resources
                .iter()
                .all(|r| o.get(r).is_some_and(|owner| *owner != victim_id))
        },
    )
    .await;
    let takeover = victim_resources
        .iter()
        .map(|resource| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let first = log
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(by, r, at)| r == resource && *by != victim_id && *at >= killed_at)
                    .map(|(_, _, at)| *at - killed_at);
                if let Some(d) = first {
                    break d;
                }
                assert!(Instant::now() < deadline, "{resource} never polled again");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .max()
        .unwrap();
    println!(
        "takeover: the killed replica's {} resources were polled by survivors {} ms after the kill \
         (lease_ttl {} ms + interval {} ms)",
        victim_resources.len(),
        takeover.as_millis(),
        LEASE_TTL.as_millis(),
        INTERVAL.as_millis()
    );
    assert!(
        takeover <= LEASE_TTL + INTERVAL,
        "takeover took {takeover:?}, more than lease_ttl + interval"
    );
    let balanced = per_owner(&owners(&observer).await);
    assert_eq!(
        balanced.values().copied().collect::<Vec<_>>(),
        [6, 6],
        "{balanced:?}"
    );

    // No change lost, none published twice with different message ids.
    changes.push(("2".into(), "Tromsø".into()));
    changes.push(("1".into(), "Bodø".into()));
    let want = expected(
        &changes
            .iter()
            .map(|(id, city)| (id.as_str(), city.as_str()))
            .collect::<Vec<_>>(),
    );
    eventually(
        "every change after the kill",
        Duration::from_secs(20),
        || async { received(&sink).0 == want },
    )
    .await;
    eventually("outbox drained", Duration::from_secs(20), || async {
        observer.outbox_stats().await.unwrap().depth == 0
    })
    .await;
    let (got, most_ids) = received(&sink);
    assert_eq!(got, want);
    assert_eq!(most_ids, 1, "a change was published under two message ids");
    let duplicates = sink.messages().len() - want.len();
    println!(
        "messages: {} changes, {} deliveries ({} duplicates with the same message id); the killed \
         replica held {stuck} claimed outbox rows, published by survivors after claim_timeout",
        want.len(),
        sink.messages().len(),
        duplicates
    );
    let statements: u64 = replicas.iter().map(|r| r.store.statements()).sum();
    let fetches = log.lock().unwrap().len();
    println!(
        "survivors sent {statements} SQL statements in total; all replicas fetched {fetches} pages"
    );

    for r in replicas {
        r.stop().await;
    }
    assert!(
        observer.leases().await.unwrap().is_empty(),
        "a graceful stop releases every lease"
    );
}

#[tokio::test]
async fn a_replica_frozen_past_its_lease_cannot_commit() {
    let db = pg::TestDb::create().await;
    let options = |id: &str| StoreOptions {
        replica_id: id.into(),
        claim_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let a_store: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, &options("a")).await.unwrap());
    let b_raw = Arc::new(PgStore::open(&db.url, &options("b")).await.unwrap());
    let b_store: Arc<dyn Store> = b_raw.clone();
    let source = ScriptedSource::new();
    for i in 0..120 {
        source.put(
            &format!("{i:03}"),
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            customer("Åse", "Oslo"),
        );
    }
    let config = config("a");
    let key = ResourceKey::new("crm", "r00");
    let ttl = Duration::from_millis(1000);
    let log: FetchLog = Arc::default();
    let poller = |store: Arc<dyn Store>, replica: &str, gate: Option<Arc<Semaphore>>| {
        let fenced = Arc::new(FencedStore::new(store));
        let poller = Poller::new(
            Arc::new(Observed {
                inner: source.clone(),
                replica: replica.into(),
                log: log.clone(),
                gate,
            }),
            Arc::new(Resource::build(
                &config.sources[0],
                &config.sources[0].resources[0],
            )),
            fenced.clone(),
            Arc::new(SystemClock),
            "api.event.",
            100_000,
        );
        (poller, fenced)
    };
    let trace = pollbus::contract::TraceContext::random();
    let stop = CancellationToken::new();

    // A holds the lease and starts polling; it freezes before its first page arrives.
    let grant = a_store
        .acquire_leases("a", std::slice::from_ref(&key), ttl)
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (a_poller, a_fenced) = poller(a_store.clone(), "a", Some(gate.clone()));
    a_fenced.set_fence(Some(grant.held[0].fence.clone()));
    let frozen = tokio::spawn(async move {
        let trace = pollbus::contract::TraceContext::random();
        a_poller.poll(&trace, &CancellationToken::new()).await
    });

    // Its lease expires; B takes over and does the work.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let grant = b_store
        .acquire_leases("b", std::slice::from_ref(&key), ttl)
        .await
        .unwrap();
    assert_eq!(grant.held.len(), 1, "B takes over the expired lease");
    let (b_poller, b_fenced) = poller(b_store.clone(), "b", None);
    b_fenced.set_fence(Some(grant.held[0].fence.clone()));
    let before = b_raw.statements();
    let report = b_poller.poll(&trace, &stop).await.unwrap();
    let statements = b_raw.statements() - before;
    assert_eq!(report.baseline, 120);

    // A wakes up: its page is refused, nothing it saw is written.
    gate.add_permits(100);
    let result = frozen.await.unwrap();
    match result {
        Err(PollError::Store(StoreError::LeaseLost {
            resource, owner, ..
        })) => {
            assert_eq!((resource.as_str(), owner.as_str()), ("crm/r00", "a"));
        }
        other => panic!("a frozen replica committed: {other:?}"),
    }
    assert_eq!(b_store.snapshot_count(&key).await.unwrap(), 120);

    // Rows and statements per page, measured on B's baseline and on a page of updates.
    println!(
        "baseline: {} pages of up to 50 records, {} SQL statements ({:.1} per page, incl. the \
         poll's state and outbox-depth reads)",
        report.pages,
        statements,
        statements as f64 / report.pages as f64
    );
    for i in 0..50 {
        source.update(
            &format!("{i:03}"),
            &now_text(),
            serde_json::json!({"address": {"city": "Bergen"}}),
        );
    }
    let before = b_raw.statements();
    let report = b_poller.poll(&trace, &stop).await.unwrap();
    let statements = b_raw.statements() - before;
    println!(
        "updates: {} pages, {} messages, {} SQL statements ({:.1} per page); each page with \
         changes writes its snapshots (one upsert), its outbox rows (one insert), the cursor row \
         and checks the lease row",
        report.pages,
        report.messages(),
        statements,
        statements as f64 / report.pages as f64
    );
    assert_eq!(report.updated, 50);
}

#[tokio::test]
async fn migrations_from_two_processes_at_once_run_once() {
    let db = pg::TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pollbus.toml");
    std::fs::write(
        &config,
        r#"
[state]
url = "${env:POLLBUS_STATE_URL}"

[[sources]]
name = "demo"
kind = "demo"
source_system = "DEMO"
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = { City = "address.city" }
"#,
    )
    .unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pollbus"))
            .args(["state", "--config", config.to_str().unwrap(), "show"])
            .env("POLLBUS_STATE_URL", &db.url)
            .output()
    };
    let (a, b) = tokio::join!(spawn(), spawn());
    for out in [a.unwrap(), b.unwrap()] {
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = db.connect().await;
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let files = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
    assert_eq!(migrations, files, "each migration applied once");
}

/// Injected: three replicas on one PostgreSQL database poll SAP Concur (the simulator), whose
/// refresh tokens rotate on every refresh and whose reuse detection revokes the whole grant
/// when a rotated-away refresh token is presented again; access tokens last 63 s, so with the
/// 60 s renewal margin each one is refreshed after about 3 s. For 12 s every replica fetches
/// as fast as it can. Exactly one replica refreshes at a time and each refresh presents the
/// newest refresh token: no `invalid_grant`, no reuse, no failed fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn rotating_refresh_tokens_are_refreshed_by_one_replica_at_a_time() {
    use pollbus_testkit::concur::{report, ConcurSim, CLIENT};
    let db = pg::TestDb::create().await;
    let sim = ConcurSim::start("refresh-0").await;
    sim.set_token_lifetime(63);
    sim.insert(
        "F4F027007E814C1CA70E",
        pollbus_testkit::t("2024-05-01T10:00:00Z"),
        report("Oslo trip", 250.0),
    );
    let text = format!(
        r#"
[[sources]]
name = "concur"
kind = "concur"
base_url = "{login}"
source_system = "Concur"
page_size = 10
concur = {{ allowed_hosts = ["{geo}"] }}
auth = {{ kind = "oauth2", client_id = "{id}", client_secret = "{secret}", refresh_token = "refresh-0" }}
  [[sources.resources]]
  name = "reports"
  entity = "expense-report"
  fields = {{ Name = "Name" }}
"#,
        login = sim.login_url(),
        geo = sim.geo_url(),
        id = CLIENT.0,
        secret = CLIENT.1,
    );
    let config = Config::parse(&text, "concur.toml").unwrap_or_else(|e| panic!("{e}"));
    let sc = &config.sources[0];
    let resource = Arc::new(Resource::build(sc, &sc.resources[0]));
    let mut tasks = Vec::new();
    for replica in ["a", "b", "c"] {
        let options = StoreOptions {
            replica_id: replica.into(),
            ..StoreOptions::default()
        };
        let store: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, &options).await.unwrap());
        let source = pollbus::source::build(
            sc,
            &pollbus::source::SourceContext {
                clock: Arc::new(SystemClock),
                tokens: store.clone(),
                budget: store,
                metrics: None,
            },
        )
        .unwrap();
        let resource = resource.clone();
        tasks.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(12);
            let (mut fetches, mut failures) = (0u32, Vec::new());
            while Instant::now() < until {
                match source
                    .fetch(&resource, DateTime::<Utc>::UNIX_EPOCH, None)
                    .await
                {
                    Ok(_) => fetches += 1,
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (replica, fetches, failures)
        }));
    }
    for task in tasks {
        let (replica, fetches, failures) = task.await.unwrap();
        assert!(failures.is_empty(), "replica {replica}: {failures:?}");
        assert!(fetches > 10, "replica {replica} fetched {fetches} pages");
    }
    let tokens = sim.token_requests();
    let refused: Vec<_> = tokens.iter().filter(|r| r.status != 200).collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(sim.refresh_token_reuses(), 0);
    assert!(
        tokens.len() >= 3,
        "tokens expired and were refreshed several times: {}",
        tokens.len()
    );
    // Each refresh presented the token the previous one issued.
    for (i, r) in tokens.iter().enumerate() {
        assert_eq!(r.refresh_token, format!("refresh-{i}"), "{tokens:?}");
    }
    println!(
        "3 replicas, 12 s, access tokens refreshed every ~3 s: {} refreshes, none refused",
        tokens.len()
    );
}
