//! Running the `pollbus` binary and reading its admin endpoints.
//!
//! The binary's path is only known to the package that builds it, so callers pass
//! `env!("CARGO_BIN_EXE_pollbus")`.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `pollbus args` (in `dir` when given, with `env` added and `RUST_LOG` removed) and
/// waits for it.
pub fn pollbus(bin: &str, dir: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(bin);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.output().expect("pollbus runs")
}

/// Process output as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `GET http://{addr}{path}`: the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("body of {path}: {e}"));
    (status, body)
}

/// [`http_get`] for tests without a runtime.
pub fn http_get_blocking(addr: &str, path: &str) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(http_get(addr, path))
}
