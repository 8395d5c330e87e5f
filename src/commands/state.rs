//! `pollbus state`: the state store's cursors, outbox and dead letters, and requeueing them.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use pollbus::cli::StateAction;
use pollbus::config::Config;
use pollbus::contract::format_timestamp;
use pollbus::store::{Store, StoreError};

use super::timestamp_or;

/// Opens the configured state store and runs `action` on it, printing to stdout.
pub async fn run(config: &Config, action: StateAction) -> anyhow::Result<ExitCode> {
    let store = pollbus::store::open(config.state.url.expose()).await?;
    state(store.as_ref(), action, &mut std::io::stdout()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a `pollbus state` action, writing its output to `out`.
pub async fn state(
    store: &dyn Store,
    action: StateAction,
    out: &mut dyn Write,
) -> Result<(), StoreError> {
    let mut text = String::new();
    match action {
        StateAction::Show => {
            let stats = store.outbox_stats().await?;
            let _ = writeln!(
                text,
                "outbox: {} waiting{}; dead letters: {}",
                stats.depth,
                stats
                    .oldest
                    .map(|t| format!(", oldest written {}", format_timestamp(t)))
                    .unwrap_or_default(),
                stats.dead
            );
            let summaries = store.summaries().await?;
            if summaries.is_empty() {
                let _ = writeln!(text, "no resource has been polled yet");
            }
            for s in summaries {
                let _ = writeln!(
                    text,
                    "{}: cursor {}, {} snapshots, baseline {}, last reconcile {}",
                    s.key,
                    timestamp_or(s.state.cursor, "none"),
                    s.snapshots,
                    if s.state.baseline_done {
                        "done"
                    } else {
                        "in progress"
                    },
                    timestamp_or(s.state.last_reconcile, "never"),
                );
                if let Some(started) = s.state.resync_started {
                    let _ = writeln!(
                        text,
                        "  resync under way since {} ({})",
                        format_timestamp(started),
                        if s.state.resync_token.is_some() {
                            "past its first page"
                        } else {
                            "at its first page"
                        }
                    );
                } else if s.state.last_resync.is_some() || s.state.resync_requested.is_some() {
                    let _ = writeln!(
                        text,
                        "  last resync {}{}",
                        timestamp_or(s.state.last_resync, "never"),
                        match (s.state.resync_requested, s.state.last_resync) {
                            (Some(r), last) if last.is_none_or(|l| r > l) =>
                                format!(", one requested {}", format_timestamp(r)),
                            _ => String::new(),
                        }
                    );
                }
            }
        }
        StateAction::Dead { limit } => {
            let rows = store.dead_letters(limit).await?;
            if rows.is_empty() {
                let _ = writeln!(text, "no dead letters");
            }
            for d in rows {
                let _ = writeln!(
                    text,
                    "seq {} topic {} message {} failed {}: {}",
                    d.seq,
                    d.message.topic,
                    d.message.message_id,
                    format_timestamp(d.failed_at),
                    d.reason
                );
            }
        }
        StateAction::RetryDead { seqs } => {
            let filter = (!seqs.is_empty()).then_some(seqs.as_slice());
            let n = store.retry_dead(filter).await?;
            let _ = writeln!(text, "requeued {n} dead letters to the outbox");
        }
    }
    let _ = out.write_all(text.as_bytes());
    Ok(())
}
