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

/// A running `pollbus run --config pollbus.toml` in a directory: its admin address, and its
/// stderr collected in the background (so it never blocks on a full pipe). Killed (SIGKILL) on
/// drop unless it was waited for.
pub struct RunningPollbus {
    /// The process.
    pub child: std::process::Child,
    /// The admin server's address (`host:port`), from its start-up log line.
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl RunningPollbus {
    /// Starts `bin run --config pollbus.toml` in `dir` (`RUST_LOG=info`) and waits for the
    /// admin server's log line. Panics, with what it logged, when it exits before serving.
    pub fn start(bin: &str, dir: &Path) -> RunningPollbus {
        Self::start_with_env(bin, dir, &[])
    }

    /// [`RunningPollbus::start`] with `env` added to the process's environment.
    pub fn start_with_env(bin: &str, dir: &Path, env: &[(String, String)]) -> RunningPollbus {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin)
            .args(["run", "--config", "pollbus.toml"])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("pollbus starts");
        let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                let seen = log.lock().unwrap().clone();
                let _ = child.wait();
                panic!("pollbus exited before serving:\n{seen}");
            }
            log.lock().unwrap().push_str(&line);
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        RunningPollbus { child, addr, log }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` (e.g. `-KILL`, `-TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for the process to end; its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for pollbus")
    }
}

impl Drop for RunningPollbus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
