//! The subcommands of the `pollbus` binary, one file each; `main.rs` parses the command line,
//! loads the configuration and dispatches here. Each command prints its own output and returns
//! the process's exit code.

pub mod check;
pub mod dlq;
pub mod import;
pub mod plan;
pub mod poll_once;
pub mod replay;
pub mod resync;
pub mod run;
pub mod state;

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use pollbus::clock::SystemClock;
use pollbus::config::Config;
use pollbus::contract::format_timestamp;
use pollbus::daemon::App;

/// EX_USAGE: the configuration (or the input to import) is invalid.
pub const EXIT_CONFIG: u8 = 64;

/// Starts the daemon's parts (store, sink, sources) on the system clock.
async fn start(config: Config) -> anyhow::Result<App> {
    App::start(config, Arc::new(SystemClock))
        .await
        .context("cannot start")
}

/// `t` as the contract writes timestamps, or `none` when there is none.
fn timestamp_or(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map(format_timestamp).unwrap_or_else(|| none.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_timestamps_print_the_placeholder() {
        assert_eq!(timestamp_or(None, "never"), "never");
        let t = "2024-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(timestamp_or(Some(t), "never"), format_timestamp(t));
    }
}
