//! Microsoft's Python `azure-servicebus` SDK as the subscriber (`tests/e2e/subscriber.py`), in
//! the venv `scripts/setup-python.sh` builds (or `POLLBUS_PYTHON`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with the SDK: `POLLBUS_PYTHON`, or the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POLLBUS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "Python venv missing at {}: run scripts/setup-python.sh",
        venv.display()
    );
    venv
}

/// Runs `subscriber.py args` against `connection`; the JSON line it printed per message.
/// Panics (with its output) when it fails or takes more than 120 s.
pub async fn subscriber(connection: &str, args: &[&str]) -> Vec<Value> {
    let script = repo().join("tests/e2e/subscriber.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(script)
            .args(args)
            .env("SB_CONNECTION_STRING", connection)
            .env("PYTHONUNBUFFERED", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("subscriber finished within 120 s")
    .expect("subscriber runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "subscriber {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}
