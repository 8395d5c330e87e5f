//! `pollbus resync SOURCE/RESOURCE`: requests an anti-entropy resync of one resource. The
//! request is written to the state store (beside a running daemon too: SQLite serializes the
//! write, PostgreSQL is shared), and the poll of that resource that comes next — the daemon's,
//! whichever replica holds the lease, or `pollbus poll-once` — starts it.

use std::process::ExitCode;

use pollbus::config::Config;
use pollbus::store::ResourceKey;

use super::{timestamp_or, EXIT_CONFIG};

/// Finds `target` (`SOURCE/RESOURCE`, or `RESOURCE` when only one source has it) and records a
/// resync request for it; prints what happens next.
pub async fn resync(config: &Config, target: &str) -> anyhow::Result<ExitCode> {
    let (source, resource) = match config.resource_named(target) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("pollbus: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let key = ResourceKey::new(&source.name, &resource.name);
    let store = pollbus::store::open(config.state.url.expose()).await?;
    let at = chrono::Utc::now();
    store.request_resync(&key, at).await?;
    let state = store.resource_state(&key).await?.unwrap_or_default();
    println!(
        "resync of {}/{} requested; the resource's next poll starts it (polls every {}; with no daemon running, `pollbus poll-once --resource {}/{}` does)",
        key.source,
        key.resource,
        humantime::format_duration(source.interval),
        key.source,
        key.resource
    );
    println!(
        "it reads the whole resource at {} pages per minute between polls; progress: pollbus_resync_pages_total, changes incremental polling missed: pollbus_resync_repairs_total (each logged)",
        resource.resync_pages_per_minute
    );
    println!(
        "last complete resync: {}",
        timestamp_or(state.last_resync, "never")
    );
    if let Some(started) = state.resync_started {
        println!(
            "a resync started {} is under way; the requested one follows it",
            timestamp_or(Some(started), "")
        );
    }
    Ok(ExitCode::SUCCESS)
}
