//! End-to-end benchmark: the real `pollbus` binary polling the ServiceNow simulator with N
//! incident records, publishing to the Service Bus emulator or a jsonl file, measured from the
//! outside; and `tap-rest-api-msdk` extracting the same data, for comparison.
//!
//! Run with `scripts/bench` (all sizes) or `cargo bench --bench e2e -- --help`.
//!
//! Phases per N and sink, against one pollbus process:
//! - baseline: the first poll reads every record and stores its snapshot (publishes nothing);
//! - idle: the next poll, nothing changed;
//! - changed: 10% of the records get an update; every one must arrive as a message.
//!
//! The simulator and the emulator run inside this process, so pollbus's CPU and memory figures
//! are pollbus's alone (read from `/proc` and `wait4`).

mod process;
mod report;
mod tap;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;

use pollbus_testkit::servicenow::{fields_of, ServiceNowSim};
use report::{Phase, Run};

const TABLE: &str = "incident";
const SUBSCRIPTION: &str = "api.event.incident/Subscriptions/bench";

/// End-to-end benchmark of pollbus against the ServiceNow simulator (see docs/performance.md).
#[derive(Parser, Debug)]
struct Args {
    /// Record counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000usize, 100_000, 1_000_000])]
    n: Vec<usize>,
    /// Sinks to run: `emulator` (Service Bus over AMQP) and/or `jsonl`.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["emulator".to_string(), "jsonl".to_string()])]
    sinks: Vec<String>,
    /// Skip the tap-rest-api-msdk comparison.
    #[arg(long)]
    no_tap: bool,
    /// Poll interval given to pollbus (the latency figures include waiting for the next poll).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Records per page (pollbus `page_size`, the tap's `sysparm_limit`).
    #[arg(long, default_value_t = 1000)]
    page_size: u32,
    /// Share of records changed in the third phase.
    #[arg(long, default_value_t = 0.10)]
    change_ratio: f64,
    /// pollbus `outbox.batch_size` (default: pollbus's default).
    #[arg(long)]
    outbox_batch: Option<u32>,
    /// Also write the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Keep pollbus's state in a fresh database on this PostgreSQL server (e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`) instead of SQLite; the state figure is then
    /// the snapshot table with its indexes and TOAST plus the layouts table.
    #[arg(long)]
    postgres: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    pollbus::sink::servicebus::ensure_crypto_provider();
    let pollbus = PathBuf::from(env!("CARGO_BIN_EXE_pollbus"));
    let tap = if args.no_tap {
        None
    } else {
        Some(tap::Tap::setup().context("setting up tap-rest-api-msdk (scripts/setup-bench.sh)")?)
    };
    let fixture = fixture()?;
    let tracked = tracked_fields(&fixture);
    let mut runs = Vec::new();
    let mut taps = Vec::new();
    for &n in &args.n {
        let mut last_sim = None;
        for (round, sink) in args.sinks.iter().enumerate() {
            // A fresh instance per run, so no run re-reads another run's changes.
            let sim = loaded_sim(&fixture, n).await?;
            let run =
                run_pollbus(&args, &pollbus, &sim.0, &sim.1, &tracked, sink, round + 1).await?;
            report::print_run(&run);
            runs.push(run);
            if let Some((old, _)) = last_sim.replace(sim) {
                old.stop().await;
            }
        }
        if let Some(tap) = &tap {
            let (sim, _) = match last_sim.take() {
                Some(s) => s,
                None => loaded_sim(&fixture, n).await?,
            };
            let result = tap.run(&sim, n, args.page_size, &tracked).await?;
            report::print_tap(&result);
            taps.push(result);
            sim.stop().await;
        } else if let Some((sim, _)) = last_sim.take() {
            sim.stop().await;
        }
    }
    let markdown = report::markdown(&args_summary(&args), &runs, &taps);
    println!("\n{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// A simulator holding `n` incidents, and their sys_ids.
async fn loaded_sim(fixture: &Value, n: usize) -> Result<(ServiceNowSim, Vec<String>)> {
    eprintln!("== N = {n}: loading the simulator");
    let sim = ServiceNowSim::start().await;
    sim.use_system_clock();
    let loaded = Instant::now();
    let ids = load(&sim, fixture, n)?;
    eprintln!("   {n} records in {:.1} s", loaded.elapsed().as_secs_f64());
    Ok((sim, ids))
}

fn args_summary(args: &Args) -> String {
    format!(
        "interval {}, page size {}, {}% changed, outbox batch {}",
        humantime::format_duration(args.interval),
        args.page_size,
        args.change_ratio * 100.0,
        args.outbox_batch
            .map(|b| b.to_string())
            .unwrap_or_else(|| "default".into())
    )
}

/// The recorded incident from a real instance (92 fields).
fn fixture() -> Result<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures/servicenow/table_incident_page.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let page: Value = serde_json::from_str(&text)?;
    Ok(page["result"][0].clone())
}

/// The 60 tracked fields: the fixture's first 60 non-system columns (as in benches/hot_paths).
pub fn tracked_fields(fixture: &Value) -> Vec<String> {
    fixture
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !k.starts_with("sys_"))
                .take(60)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Inserts `n` incidents shaped like the fixture, updated one per second up to an hour ago.
fn load(sim: &ServiceNowSim, fixture: &Value, n: usize) -> Result<Vec<String>> {
    let base = fields_of(fixture);
    let last = Utc::now() - chrono::Duration::hours(1);
    let first = last - chrono::Duration::seconds(n as i64);
    let records = (0..n).map(|i| {
        let mut f = base.clone();
        f.remove("sys_id");
        let at = (first + chrono::Duration::seconds(i as i64))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        f.insert("sys_updated_on".into(), at.clone());
        f.insert("sys_created_on".into(), at);
        f.insert("number".into(), format!("INC{:07}", i + 1));
        f.insert("task_effective_number".into(), format!("INC{:07}", i + 1));
        f.insert(
            "short_description".into(),
            format!("Unable to connect to email ({i})"),
        );
        f
    });
    sim.bulk_insert(TABLE, records)
        .map_err(|e| anyhow::anyhow!("loading the simulator: {e}"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn config(
    args: &Args,
    dir: &Path,
    state_url: &str,
    sim: &ServiceNowSim,
    (sink, connection): (&str, Option<&str>),
    admin: u16,
    tracked: &[String],
) -> String {
    let sink = match (sink, connection) {
        ("emulator", Some(c)) => format!("kind = \"servicebus\"\nconnection_string = \"{c}\""),
        _ => format!(
            "kind = \"jsonl\"\npath = \"{}\"",
            dir.join("out.jsonl").display()
        ),
    };
    let fields = tracked
        .iter()
        .map(|f| format!("{f} = \"{f}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[state]
url = "{state_url}"
[sink]
{sink}
{outbox}
[admin]
listen = "127.0.0.1:{admin}"
[log]
format = "text"
filter = "warn"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "{base}"
source_system = "ServiceNow"
interval = "{interval}"
jitter = "0s"
page_size = {page}
auth = {{ kind = "basic", username = "admin", password = "admin" }}
  [[sources.resources]]
  name = "{TABLE}"
  entity = "incident"
  fields = {{ {fields} }}
  on_behalf_of = {{ field = "sys_updated_by" }}
"#,
        base = sim.base_url(),
        interval = humantime::format_duration(args.interval),
        page = args.page_size,
        outbox = args
            .outbox_batch
            .map(|b| format!("[outbox]\nbatch_size = {b}"))
            .unwrap_or_default(),
    )
}

/// Reads pollbus's Prometheus text and sums the samples of `name` whose labels contain
/// `label` (e.g. `outcome="ok"`).
async fn metric(client: &reqwest::Client, admin: u16, name: &str, label: &str) -> Result<f64> {
    let text = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until pollbus has finished `polls` successful polls.
async fn wait_polls(
    child: &mut Child,
    client: &reqwest::Client,
    admin: u16,
    polls: f64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("pollbus exited early with {status}");
        }
        if let Ok(done) = metric(client, admin, "pollbus_polls_total", "outcome=\"ok\"").await {
            if done >= polls {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("pollbus did not finish poll {polls} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Table API requests and response bytes since the simulator's log was cleared, the arrival of
/// the first one after `after`,
/// and the time the simulator spent answering.
fn sim_traffic(
    sim: &ServiceNowSim,
    after: DateTime<Utc>,
) -> (usize, usize, Option<DateTime<Utc>>, Duration) {
    let requests = sim.table_requests();
    let bytes = requests.iter().map(|r| r.response_bytes).sum();
    let first = requests
        .iter()
        .map(|r| r.at)
        .filter(|at| *at >= after)
        .min();
    let busy = requests.iter().map(|r| r.elapsed).sum();
    (requests.len(), bytes, first, busy)
}

/// Messages seen so far: each arrival in order, and the distinct record ids (a batch re-sent
/// after a lost acknowledgement arrives twice: at-least-once; the first arrival counts).
#[derive(Default)]
struct Arrivals {
    list: Vec<(SystemTime, String)>,
    ids: HashSet<String>,
}

impl Arrivals {
    fn add(&mut self, at: SystemTime, id: String) {
        self.ids.insert(id.clone());
        self.list.push((at, id));
    }
}

/// Where delivered messages are observed. Updated incrementally: the wait loop asks for the
/// count every few milliseconds, so nothing here may cost in proportion to what already arrived.
enum Observer {
    /// Drained as messages arrive: an emulator entity holds at most 100,000 messages.
    Emulator(servicebus_emulator::Emulator, Mutex<Arrivals>),
    Jsonl(Arc<Mutex<Arrivals>>, tokio::task::JoinHandle<()>),
}

impl Observer {
    /// Distinct records delivered so far.
    fn delivered(&self) -> Result<usize> {
        match self {
            Observer::Emulator(e, seen) => {
                let messages = e
                    .receive(SUBSCRIPTION, usize::MAX)
                    .map_err(|err| anyhow::anyhow!("draining the emulator: {err}"))?;
                let mut seen = seen.lock().unwrap();
                for m in &messages {
                    let at = match m.annotation("x-opt-enqueued-time") {
                        Some(serde_amqp::Value::Timestamp(t)) => {
                            SystemTime::UNIX_EPOCH + Duration::from_millis(t.milliseconds() as u64)
                        }
                        other => bail!("message without an enqueued time: {other:?}"),
                    };
                    let body: Value = serde_json::from_slice(&m.body_data())?;
                    seen.add(at, id_of(&body)?);
                }
                Ok(seen.ids.len())
            }
            Observer::Jsonl(seen, _) => Ok(seen.lock().unwrap().ids.len()),
        }
    }

    /// The first arrival of each record, and how many arrivals were repeats.
    fn arrivals(&self) -> Result<(Vec<(SystemTime, String)>, usize)> {
        self.delivered()?;
        let seen = match self {
            Observer::Emulator(_, seen) => seen.lock().unwrap(),
            Observer::Jsonl(seen, _) => seen.lock().unwrap(),
        };
        let mut first: HashMap<&str, SystemTime> = HashMap::with_capacity(seen.ids.len());
        for (at, id) in &seen.list {
            let e = first.entry(id.as_str()).or_insert(*at);
            *e = (*e).min(*at);
        }
        let out = first
            .into_iter()
            .map(|(id, at)| (at, id.to_string()))
            .collect();
        Ok((out, seen.list.len() - seen.ids.len()))
    }
}

fn id_of(body: &Value) -> Result<String> {
    body.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("message without an id: {body}"))
}

/// Follows the jsonl file, stamping each new line with the time it was seen.
fn tail(path: PathBuf) -> Observer {
    let seen = Arc::new(Mutex::new(Arrivals::default()));
    let out = seen.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut offset = 0u64;
        let mut partial = Vec::new();
        loop {
            if let Ok(mut file) = std::fs::File::open(&path) {
                if file.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                    let mut chunk = Vec::new();
                    if let Ok(read) = file.read_to_end(&mut chunk) {
                        offset += read as u64;
                        partial.extend_from_slice(&chunk);
                        let now = SystemTime::now();
                        let complete = partial
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1);
                        let mut seen = out.lock().unwrap();
                        for line in partial[..complete].split(|b| *b == b'\n') {
                            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                                if let Ok(id) = id_of(&v["body"]) {
                                    seen.add(now, id);
                                }
                            }
                        }
                        drop(seen);
                        partial.drain(..complete);
                    }
                }
            }
            if Arc::strong_count(&out) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    Observer::Jsonl(seen, task)
}

async fn run_pollbus(
    args: &Args,
    pollbus: &Path,
    sim: &ServiceNowSim,
    ids: &[String],
    tracked: &[String],
    sink: &str,
    round: usize,
) -> Result<Run> {
    let n = ids.len();
    eprintln!("-- N = {n}, sink {sink}");
    let dir = tempfile::tempdir()?;
    let observer = match sink {
        "emulator" => {
            let config = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Topics":[
              {"Name":"api.event.incident","Subscriptions":[{"Name":"bench"}]}]}],
              "Logging":{"Type":"File"}}}"#;
            let emulator = servicebus_emulator::Emulator::start(
                servicebus_emulator::Config::from_json_str(config)?,
            )
            .await
            .map_err(|e| anyhow::anyhow!("starting the emulator: {e}"))?;
            Observer::Emulator(emulator, Mutex::new(Arrivals::default()))
        }
        "jsonl" => tail(dir.path().join("out.jsonl")),
        other => bail!("unknown sink {other:?} (emulator, jsonl)"),
    };
    let connection = match &observer {
        Observer::Emulator(e, _) => Some(e.connection_string()),
        Observer::Jsonl(..) => None,
    };
    let admin = free_port()?;
    let config_path = dir.path().join("pollbus.toml");
    let pg = match &args.postgres {
        Some(admin_url) => Some(PgState::create(admin_url).await?),
        None => None,
    };
    let state_url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("state.db").display()),
    };
    std::fs::write(
        &config_path,
        config(
            args,
            dir.path(),
            &state_url,
            sim,
            (sink, connection.as_deref()),
            admin,
            tracked,
        ),
    )?;
    let client = reqwest::Client::new();
    sim.clear_requests();

    // (a) baseline
    let started = Instant::now();
    let mut child = Command::new(pollbus)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("pollbus.log"))?)
        .spawn()
        .context("starting pollbus")?;
    let pid = child.id();
    let timeout = Duration::from_secs(60 + n as u64 / 1000);
    let result = async {
        wait_polls(&mut child, &client, admin, 1.0, timeout).await?;
        let wall = started.elapsed();
        let usage = process::sample(pid)?;
        let (requests, bytes, _, sim_busy) = sim_traffic(sim, DateTime::<Utc>::MIN_UTC);
        let baseline = Phase {
            name: "baseline",
            records: n,
            changes: 0,
            wall,
            cpu_s: usage.cpu_s,
            peak_rss: usage.peak_rss,
            requests,
            bytes,
            sim_busy,
            latencies: Vec::new(),
        };

        // (b) idle poll
        sim.clear_requests();
        let before = process::sample(pid)?;
        process::reset_peak(pid);
        let idle_start = Instant::now();
        wait_polls(&mut child, &client, admin, 2.0, timeout).await?;
        let after = process::sample(pid)?;
        let (requests, bytes, _, sim_busy) = sim_traffic(sim, DateTime::<Utc>::MIN_UTC);
        let idle = Phase {
            name: "idle",
            records: 0,
            changes: 0,
            wall: idle_start.elapsed(),
            cpu_s: after.cpu_s - before.cpu_s,
            peak_rss: after.peak_rss,
            requests,
            bytes,
            sim_busy,
            latencies: Vec::new(),
        };

        // (c) 10% changed
        let step = (1.0 / args.change_ratio).round().max(1.0) as usize;
        let changed: Vec<&String> = ids.iter().skip(round - 1).step_by(step).collect();
        sim.clear_requests();
        process::reset_peak(pid);
        let before = process::sample(pid)?;
        let t0 = Utc::now();
        let mut updated_at = HashMap::with_capacity(changed.len());
        for (i, id) in changed.iter().enumerate() {
            let patch = serde_json::json!({
                "short_description": format!("Changed by the benchmark, round {round} ({i})"),
                "state": "2",
                "priority": "1",
            });
            if !sim.update(TABLE, id, patch) {
                bail!("simulator update of {id} changed nothing");
            }
            updated_at.insert(id.to_string(), SystemTime::now());
        }
        let k = changed.len();
        let deadline = Instant::now() + timeout;
        while observer.delivered()? < k {
            if let Some(status) = child.try_wait()? {
                bail!("pollbus exited early with {status}");
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {k} changes delivered within {timeout:?}",
                    observer.delivered()?
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = process::sample(pid)?;
        let (arrivals, repeats) = observer.arrivals()?;
        if repeats > 0 {
            eprintln!("   {repeats} messages arrived twice (re-sent after a lost acknowledgement)");
        }
        let (requests, bytes, first, sim_busy) = sim_traffic(sim, t0);
        let first: SystemTime = first.context("no request after the updates")?.into();
        let last = arrivals
            .iter()
            .map(|(at, _)| *at)
            .max()
            .context("no arrivals")?;
        let mut latencies = Vec::with_capacity(arrivals.len());
        for (at, id) in &arrivals {
            let from = updated_at.get(id).with_context(|| {
                format!("a message for {id}, which the benchmark did not change")
            })?;
            latencies.push(at.duration_since(*from).unwrap_or_default().as_secs_f64());
        }
        if arrivals.len() != k {
            bail!("{} messages arrived for {k} changes", arrivals.len());
        }
        let changes = Phase {
            name: "10% changed",
            records: k,
            changes: k,
            wall: last.duration_since(first).unwrap_or_default(),
            cpu_s: after.cpu_s - before.cpu_s,
            peak_rss: after.peak_rss,
            requests,
            bytes,
            sim_busy,
            latencies,
        };
        Ok::<_, anyhow::Error>(vec![baseline, idle, changes])
    }
    .await;
    let peak_so_far = match &result {
        Ok(phases) => phases.iter().map(|p| p.peak_rss).max().unwrap_or(0),
        Err(_) => 0,
    };
    process::terminate(pid);
    let exit = process::wait(child, started, peak_so_far)?;
    let phases = match result {
        Ok(p) => p,
        Err(e) => {
            let log = std::fs::read_to_string(dir.path().join("pollbus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{e:#}\npollbus log (last lines):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    };
    if exit.code != Some(0) {
        bail!("pollbus exited with {:?} after SIGTERM", exit.code);
    }
    if let Observer::Jsonl(seen, task) = observer {
        drop(seen);
        task.await?;
    }
    let size = |f: &str| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len());
    let (db, wal) = match &pg {
        Some(pg) => (pg.state_bytes().await?, 0),
        None => (
            size("state.db") + size("state.db-wal"),
            size("state.db-wal"),
        ),
    };
    if let Some(pg) = pg {
        pg.drop().await;
    }
    Ok(Run {
        n,
        sink: sink.to_string(),
        phases,
        total: exit.usage,
        state_bytes: db,
        wal_bytes: wal,
    })
}

/// A fresh PostgreSQL database for one run's state.
struct PgState {
    admin: String,
    name: String,
    url: String,
}

impl PgState {
    async fn create(admin: &str) -> Result<PgState> {
        use sqlx::Connection;
        let name = format!("pollbus_bench_{:08x}", rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
        Ok(PgState {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// The snapshot table (heap, TOAST, indexes) and the layouts table, after a VACUUM so
    /// dead rows of updated snapshots are not counted as live state.
    async fn state_bytes(&self) -> Result<u64> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        sqlx::query("VACUUM snapshots").execute(&mut conn).await?;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT pg_total_relation_size('snapshots') + pg_total_relation_size('snapshot_layouts')",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(bytes as u64)
    }

    async fn drop(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
