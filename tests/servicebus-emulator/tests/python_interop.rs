//! Runs the Python scenarios in `interop/scenarios.py` (Microsoft's `azure-servicebus` SDK)
//! against a fresh emulator each. Needs the venv made by `scripts/setup-python.sh`
//! (or `POLLBUS_PYTHON` pointing at a Python with `azure-servicebus` installed).

use std::{path::PathBuf, process::Stdio, time::Duration};

use servicebus_emulator::{Config, Emulator};
use tokio::{process::Command, sync::Semaphore};

/// At most this many SDK processes at once: the scenarios have second-scale lock timings and
/// the machine may be small.
static PYTHON_SLOTS: Semaphore = Semaphore::const_new(3);

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POLLBUS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = crate_dir().join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "Python venv missing at {}: run scripts/setup-python.sh (or set POLLBUS_PYTHON)",
        venv.display()
    );
    venv
}

fn config() -> Config {
    Config::from_file(&crate_dir().join("interop/Config.json")).expect("interop/Config.json parses")
}

async fn run_python(args: &[&str], connection_string: &str) -> (bool, String) {
    let _slot = PYTHON_SLOTS.acquire().await.expect("semaphore open");
    let child = Command::new(python())
        .arg(crate_dir().join("interop/scenarios.py"))
        .args(args)
        .env("SB_CONNECTION_STRING", connection_string)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run scripts/setup-python.sh",
                python().display()
            )
        });
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("scenario finished within 180 s")
        .expect("scenario output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn scenario(name: &str) -> Emulator {
    let emulator = Emulator::start(config()).await.expect("emulator starts");
    let (ok, output) = run_python(&[name], &emulator.connection_string()).await;
    println!("{output}");
    assert!(ok, "Python scenario {name} failed:\n{output}");
    assert!(
        output.contains(&format!("PASS: {name}")),
        "scenario {name} did not report PASS:\n{output}"
    );
    emulator
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let emulator = scenario(stringify!($name)).await;
                after(stringify!($name), &emulator);
            }
        )*
    };
}

scenarios!(
    topic_fanout,
    topic_filter,
    complete_abandon,
    dead_letter,
    lock_expiry,
    max_delivery,
    duplicate_detection,
    sessions,
    session_wait,
    oversize,
    peek,
    schedule,
    renew_lock,
    defer,
    receive_and_delete,
    ttl_dead_letter,
    wrong_key,
);

/// Broker-side checks after a scenario, through the library's inspection API.
fn after(name: &str, emulator: &Emulator) {
    let counts = |e: &str| {
        emulator
            .counts(e)
            .unwrap_or_else(|| panic!("entity {e} exists"))
    };
    match name {
        "topic_fanout" | "topic_filter" => {
            for sub in [
                "api.event.contact/Subscriptions/sub-a",
                "api.event.contact/Subscriptions/sub-b",
            ] {
                assert_eq!(counts(sub).active + counts(sub).locked, 0, "{sub} drained");
            }
        }
        "duplicate_detection" => assert_eq!(counts("dedup").active, 0),
        "max_delivery" => assert_eq!(
            counts("maxdelivery").dead_letter,
            0,
            "DLQ message completed"
        ),
        "schedule" => assert_eq!(counts("orders").scheduled, 0, "cancelled message removed"),
        "oversize" => assert_eq!(
            counts("orders").active,
            0,
            "the oversize message was not enqueued"
        ),
        "wrong_key" => assert_eq!(
            counts("orders").active,
            0,
            "nothing enqueued with a wrong key"
        ),
        _ => {}
    }
}

#[tokio::test]
async fn every_python_scenario_has_a_test() {
    let (ok, output) = run_python(&["--list"], "").await;
    assert!(ok, "listing scenarios failed:\n{output}");
    let mut listed: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut ours = SCENARIOS.to_vec();
    listed.sort_unstable();
    ours.sort_unstable();
    assert_eq!(
        listed, ours,
        "scenarios.py and python_interop.rs list different scenarios"
    );
}
