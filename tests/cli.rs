//! The `pollbus` binary: exit codes, messages, the quickstart, and the state commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use pollbus_testkit::cli::{http_get_blocking, pollbus, text, RunningPollbus};
use pollbus_testkit::schema;

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");

const DEMO: &str = r#"
[state]
url = "sqlite://./state/pollbus.db"
[sink]
kind = "jsonl"
path = "./out/messages.jsonl"
[[sources]]
name = "demo"
kind = "demo"
source_system = "CRM"
  [sources.demo]
  seed = 1
  records = 30
  changes_per_minute = 600
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = { FirstName = "first_name", City = "address.city", Vip = "vip", Street = "address.street" }
  on_behalf_of = { field = "updated_by" }
  initial = "emit"
"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pollbus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn check_prints_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), DEMO);
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &["check", "--config", "pollbus.toml"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("state: sqlite://./state/pollbus.db"),
        "{plan}"
    );
    assert!(
        plan.contains("demo/customers -> topic api.event.customer"),
        "{plan}"
    );
    assert!(plan.contains("FirstName=first_name"), "{plan}");
}

#[test]
fn bad_configs_exit_64_with_one_precise_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            DEMO.replace("seed = 1", "seed = 1\ncolour = \"red\""),
            vec!["pollbus.toml:13 (colour): unknown field `colour`"],
        ),
        (
            DEMO.replace(
                "source_system = \"CRM\"",
                "source_system = \"CRM\"\ninterval = \"often\"",
            ),
            vec!["pollbus.toml:11 (interval):", "often"],
        ),
        (
            DEMO.replace("records = 30", "records = \"many\""),
            vec!["pollbus.toml:13 (records): invalid type: string \"many\", expected u32"],
        ),
        (
            DEMO.replace(
                "url = \"sqlite://./state/pollbus.db\"",
                "url = \"${env:POLLBUS_CLI_TEST_UNSET}\"",
            ),
            vec!["state.url: environment variable POLLBUS_CLI_TEST_UNSET is not set"],
        ),
        (
            DEMO.replace("[sink]", "[sink]\n").replace(
                "url = \"sqlite",
                "url = \"${file:/nonexistent/secret}\"\n#url = \"sqlite",
            ),
            vec!["state.url: cannot read secret file /nonexistent/secret"],
        ),
        (
            format!("{DEMO}\n{}", &DEMO[DEMO.find("[[sources]]").unwrap()..]),
            vec!["sources[1].name: duplicate source name \"demo\""],
        ),
        (
            DEMO.replace("entity = \"customer\"", "entity = \"cust/omer\""),
            vec!["sources[0].resources[0].entity: \"cust/omer\" contains '/'"],
        ),
        (
            DEMO.replace("City = \"address.city\"", "City = \"\""),
            vec!["sources[0].resources[0].fields.City: empty vendor path"],
        ),
    ];
    for (config, expected) in cases {
        write_config(dir.path(), &config);
        let out = pollbus(
            BIN,
            Some(dir.path()),
            &["check", "--config", "pollbus.toml"],
            &[],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        let problem_lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("pollbus: config error: "))
            .collect();
        assert_eq!(problem_lines.len(), 1, "one line per problem:\n{err}");
        for e in expected {
            assert!(problem_lines[0].contains(e), "expected {e:?} in {err:?}");
        }
        assert!(out.stdout.is_empty());
        // run refuses the same config the same way, before anything starts
        let out = pollbus(
            BIN,
            Some(dir.path()),
            &["run", "--config", "pollbus.toml"],
            &[],
        );
        assert_eq!(out.status.code(), Some(64));
        assert!(!dir.path().join("state").exists(), "nothing started");
    }
}

#[test]
fn poll_once_writes_valid_lines_and_never_repeats_a_change() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), DEMO);
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &["poll-once", "--config", "pollbus.toml"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = lines(&dir.path().join("out/messages.jsonl"));
    assert!(
        first.len() >= 15,
        "30 slots give most of 30 customers, got {}",
        first.len()
    );
    for line in &first {
        schema::assert_valid_message(line);
    }
    // Immediately again: nothing changed in the demo within milliseconds (or a few did).
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &[
            "poll-once",
            "--config",
            "pollbus.toml",
            "--resource",
            "demo/customers",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = lines(&dir.path().join("out/messages.jsonl"));
    let ids: std::collections::HashSet<&str> = all
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), all.len(), "no message id twice");
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &[
            "poll-once",
            "--config",
            "pollbus.toml",
            "--resource",
            "nope",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(64),
        "a usage error, as for replay and resync"
    );
    assert!(
        text(&out.stderr).contains("no resource named \"nope\""),
        "{}",
        text(&out.stderr)
    );
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &[
            "poll-once",
            "--config",
            "pollbus.toml",
            "--resource",
            "nope",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("no resource named \"nope\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn state_show_dead_and_retry_dead() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), DEMO);
    let show = pollbus(
        BIN,
        Some(dir.path()),
        &["state", "--config", "pollbus.toml", "show"],
        &[],
    );
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert!(text(&show.stdout).contains("no resource has been polled yet"));
    assert!(pollbus(
        BIN,
        Some(dir.path()),
        &["poll-once", "--config", "pollbus.toml"],
        &[]
    )
    .status
    .success());
    let show = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "show"],
            &[],
        )
        .stdout,
    );
    assert!(
        show.starts_with("outbox: 0 waiting; dead letters: 0"),
        "{show}"
    );
    assert!(show.contains("demo/customers: cursor 20"), "{show}");
    assert!(show.contains("baseline done"), "{show}");
    let dead = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "dead"],
            &[],
        )
        .stdout,
    );
    assert_eq!(dead.trim(), "no dead letters");
    let retry = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "retry-dead"],
            &[],
        )
        .stdout,
    );
    assert_eq!(retry.trim(), "requeued 0 dead letters to the outbox");
}

#[test]
fn a_state_file_that_is_not_pollbus_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), DEMO);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let db = dir.path().join("state/pollbus.db");

    std::fs::write(&db, b"this is someone's notes, not a database").unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &["poll-once", "--config", "pollbus.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not a pollbus state database (not an SQLite file)"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "file untouched");

    std::fs::remove_file(&db).unwrap();
    let status = Command::new("python3")
        .args(["-c", &format!("import sqlite3; c=sqlite3.connect('{}'); c.execute('create table invoices(id)'); c.commit()", db.display())])
        .status()
        .unwrap();
    assert!(status.success());
    let before = std::fs::read(&db).unwrap();
    let out = pollbus(
        BIN,
        Some(dir.path()),
        &["state", "--config", "pollbus.toml", "show"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("it has tables invoices"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "foreign SQLite database untouched"
    );
    assert!(!dir.path().join("state/pollbus.db-wal").exists());
}

/// The README's first command: the quickstart prints valid messages within 15 s and stops
/// cleanly on SIGTERM with the outbox empty.
#[test]
fn quickstart_prints_valid_messages_quickly_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let elapsed = started.elapsed();
    assert!(!line.is_empty(), "no message before the stream ended");
    schema::assert_valid_message(&serde_json::from_str(&line).unwrap());
    assert!(
        elapsed < Duration::from_secs(15),
        "first message after {elapsed:?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    for l in rest.lines() {
        schema::assert_valid_message(&serde_json::from_str(l).unwrap());
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("outbox_left=0"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        dir.path().join("data/pollbus.db").exists(),
        "state under ./data"
    );
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `run` serves /live, /ready and /metrics; the counters move; SIGTERM withdraws readiness,
/// flushes the outbox and exits 0.
#[test]
fn run_serves_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = DEMO
        .replace(
            "[[sources]]",
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[sources]]",
        )
        .replace(
            "source_system = \"CRM\"",
            "source_system = \"CRM\"\ninterval = \"1s\"",
        );
    write_config(dir.path(), &config);
    let mut child = Command::new(BIN)
        .args(["run", "--config", "pollbus.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "pollbus exited before serving"
        );
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_string());
        }
    }
    let addr = addr.unwrap();
    assert_eq!(http_get_blocking(&addr, "/live").0, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        let (status, body) = http_get_blocking(&addr, "/metrics");
        assert_eq!(status, 200);
        metrics = body;
        if metric(
            &metrics,
            "pollbus_messages_published_total{topic=\"api.event.customer\"}",
        ) > 0.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        http_get_blocking(&addr, "/ready").0,
        200,
        "store open and sink connected"
    );
    let created = metric(
        &metrics,
        "pollbus_changes_total{event=\"create\",resource=\"customers\",source=\"demo\"}",
    ) + metric(
        &metrics,
        "pollbus_changes_total{event=\"update\",resource=\"customers\",source=\"demo\"}",
    );
    assert!(created > 0.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "pollbus_polls_total{outcome=\"ok\",resource=\"customers\",source=\"demo\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "pollbus_messages_published_total{topic=\"api.event.customer\"}"
        ) > 0.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("pollbus_poll_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pollbus_cursor_lag_seconds{resource=\"customers\",source=\"demo\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pollbus_outbox_depth"), "{metrics}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait().unwrap();
    assert_eq!(out.code(), Some(0), "{rest}");
    assert!(rest.contains("outbox_left=0"), "{rest}");
    let show = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "show"],
            &[],
        )
        .stdout,
    );
    assert!(show.starts_with("outbox: 0 waiting"), "{show}");
}

/// A second SIGTERM exits at once (130) even while the outbox flush is still retrying, and
/// the state stays consistent: the unsent messages wait in the outbox for the next start.
#[test]
fn a_second_signal_exits_at_once_without_losing_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "shutdown_grace = \"60s\"\n{}",
        DEMO.replace(
            "[sink]\nkind = \"jsonl\"\npath = \"./out/messages.jsonl\"",
            "[admin]\nlisten = \"127.0.0.1:0\"\n[sink]\nkind = \"servicebus\"\nconnection_string = \"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true\"",
        )
    );
    write_config(dir.path(), &config);
    let mut child = Command::new(BIN)
        .args(["run", "--config", "pollbus.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    while !line.contains("outbox publication paused") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "exited early:\n{seen}"
        );
        seen.push_str(&line);
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while !line.contains("stopping: finishing in-flight pages") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "exited early:\n{seen}"
        );
        seen.push_str(&line);
    }
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    let show = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "show"],
            &[],
        )
        .stdout,
    );
    let waiting: u64 = show
        .strip_prefix("outbox: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        waiting > 0,
        "the undelivered messages wait for the next start: {show}"
    );
}

/// [`DEMO`] with the admin server on an ephemeral port, a 1 s interval and a `lease_ttl` far
/// longer than the tests wait, so a poll that had to wait out a predecessor's lease cannot pass.
fn demo_with_long_lease() -> String {
    DEMO.replace(
        "[[sources]]",
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nlease_ttl = \"300s\"\n\n[[sources]]",
    )
    .replace(
        "source_system = \"CRM\"",
        "source_system = \"CRM\"\ninterval = \"1s\"",
    )
}

/// Scrapes `pollbus` until its first successful poll; how long that took from `since`, or
/// `None` after `limit`.
fn first_poll(p: &RunningPollbus, since: Instant, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        let (_, body) = http_get_blocking(&p.addr, "/metrics");
        if metric(
            &body,
            "pollbus_polls_total{outcome=\"ok\",resource=\"customers\",source=\"demo\"}",
        ) >= 1.0
        {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Injected: the daemon is killed with SIGKILL (no lease release) and started again on the
/// same SQLite file, with `lease_ttl = 300s`. The new process takes the writer lock, ends its
/// dead predecessor's leases and polls at once instead of waiting 300 s; the restart time is
/// printed (a measurement, not an assertion on speed: the limit is far above it).
#[test]
fn a_killed_daemon_on_sqlite_polls_again_at_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &demo_with_long_lease());
    let first = RunningPollbus::start(BIN, dir.path());
    let started = Instant::now();
    let took = first_poll(&first, started, Duration::from_secs(30));
    assert!(took.is_some(), "first start never polled:\n{}", first.log());
    first.signal("-KILL");
    drop(first);
    let restarted = Instant::now();
    let second = RunningPollbus::start(BIN, dir.path());
    let took = first_poll(&second, restarted, Duration::from_secs(60));
    let log = second.log();
    let took = took
        .unwrap_or_else(|| panic!("the restarted daemon waited for the dead one's lease:\n{log}"));
    assert!(
        log.contains("ended the leases of a previous pollbus process"),
        "{log}"
    );
    eprintln!(
        "restart to first poll (SIGKILL, then start, lease_ttl 300 s): {} ms",
        took.as_millis()
    );
}

/// Injected: a second `pollbus run` on the state file of a running one. It exits 1 at once
/// with an error naming the file, the lock and the holder's pid; the first keeps running and
/// its state file is not touched by the second.
#[test]
fn a_second_daemon_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &demo_with_long_lease());
    let first = RunningPollbus::start(BIN, dir.path());
    assert!(first_poll(&first, Instant::now(), Duration::from_secs(30)).is_some());
    let second = pollbus(
        BIN,
        Some(dir.path()),
        &["run", "--config", "pollbus.toml"],
        &[],
    );
    let err = text(&second.stderr);
    assert_ne!(second.status.code(), Some(0), "{err}");
    assert!(
        err.contains("is in use by another pollbus process"),
        "{err}"
    );
    assert!(err.contains("state/pollbus.db.lock"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert_eq!(http_get_blocking(&first.addr, "/live").0, 200);
    // The read-only state commands still work beside the running daemon.
    let show = pollbus(
        BIN,
        Some(dir.path()),
        &["state", "--config", "pollbus.toml", "show"],
        &[],
    );
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
}

/// Injected: a broker that accepts TCP connections and never answers (a hung Service Bus
/// front end), with messages waiting in the outbox. SIGTERM still ends pollbus with exit 0
/// within `shutdown_grace` (3 s here), and the unsent messages stay in the outbox.
#[test]
fn sigterm_exits_within_the_grace_even_when_the_broker_hangs() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = black_hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in black_hole.incoming().flatten() {
            held.push(conn); // read nothing, answer nothing, close nothing
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "shutdown_grace = \"3s\"\n{}",
        DEMO.replace(
            "[sink]\nkind = \"jsonl\"\npath = \"./out/messages.jsonl\"",
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\n[sink]\nkind = \"servicebus\"\nconnection_string = \"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true\""),
        )
        .replace("source_system = \"CRM\"", "source_system = \"CRM\"\ninterval = \"1s\"")
    );
    write_config(dir.path(), &config);
    let mut p = RunningPollbus::start(BIN, dir.path());
    // Wait until changes wait in the outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_poll(&p, Instant::now(), Duration::from_millis(100)).is_none() {
        assert!(Instant::now() < deadline, "never polled:\n{}", p.log());
    }
    p.signal("-TERM");
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM with a 3 s grace:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    let log = p.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took < Duration::from_secs(3 + 5),
        "exited {} ms after SIGTERM, grace 3 s:\n{log}",
        took.as_millis()
    );
    eprintln!(
        "SIGTERM to exit with a hung broker, grace 3 s: {} ms",
        took.as_millis()
    );
    let show = text(
        &pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "show"],
            &[],
        )
        .stdout,
    );
    assert!(!show.starts_with("outbox: 0 waiting"), "{show}");
}

/// `poll-once --dry-run` prints what a poll would publish and writes nothing: on a fresh
/// directory it prints every record the demo vendor has (as first seen) and creates no state
/// file; after a real poll it leaves the state file byte-identical (and its write-ahead log;
/// SQLite may create an empty one to read the file), what `state show` reports unchanged, and
/// the sink untouched.
#[test]
fn poll_once_dry_run_prints_the_messages_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), DEMO);
    let dry = || {
        pollbus(
            BIN,
            Some(dir.path()),
            &["poll-once", "--config", "pollbus.toml", "--dry-run"],
            &[],
        )
    };
    let out = dry();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let printed: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(!printed.is_empty(), "{err}");
    for m in &printed {
        schema::assert_valid_message(m);
    }
    assert!(
        err.contains(&format!("would publish {} messages", printed.len())),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "no state file created");
    assert!(!dir.path().join("out").exists(), "the sink is not used");

    let real = pollbus(
        BIN,
        Some(dir.path()),
        &["poll-once", "--config", "pollbus.toml"],
        &[],
    );
    assert_eq!(real.status.code(), Some(0), "{}", text(&real.stderr));
    let sink = dir.path().join("out/messages.jsonl");
    let show = || {
        let out = pollbus(
            BIN,
            Some(dir.path()),
            &["state", "--config", "pollbus.toml", "show"],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let (state_before, sink_before) = (show(), std::fs::read(&sink).unwrap());
    // The state file and its write-ahead log, byte for byte (the -shm index is SQLite's
    // shared memory, which readers write).
    let files = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with("-shm"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let bytes_before = files();
    assert!(
        bytes_before
            .iter()
            .any(|(name, b)| name.ends_with(".db") && !b.is_empty()),
        "{:?}",
        bytes_before.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(1500)); // the demo changes records meanwhile
    let out = dry();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("nothing was written to the state store"),
        "{err}"
    );
    // SQLite creates an empty write-ahead log beside a WAL-mode file it reads when none is
    // there (a reader needs one to exist); nothing is written into it, or into the file.
    let bytes_after: Vec<(String, Vec<u8>)> = files()
        .into_iter()
        .filter(|(name, bytes)| {
            !(name.ends_with("-wal")
                && bytes.is_empty()
                && !bytes_before.iter().any(|(before, _)| before == name))
        })
        .collect();
    let describe = |files: &[(String, Vec<u8>)]| {
        files
            .iter()
            .map(|(name, bytes)| format!("{name}: {} bytes", bytes.len()))
            .collect::<Vec<_>>()
    };
    assert!(
        bytes_after == bytes_before,
        "the state changed under a dry run: before {:?}, after {:?}",
        describe(&bytes_before),
        describe(&bytes_after)
    );
    assert_eq!(show(), state_before, "state unchanged");
    assert_eq!(std::fs::read(&sink).unwrap(), sink_before, "sink untouched");
}
