//! `pollbus poll-once`: one poll of each resource (or one), then publish and exit.

use std::process::ExitCode;

use pollbus::config::Config;

/// Polls once and reports the counts on stderr. Exit 1 when a poll failed or messages are
/// left in the outbox.
pub async fn poll_once(config: Config, resource: Option<&str>) -> anyhow::Result<ExitCode> {
    let app = super::start(config).await?;
    let (report, errors, left) = app.poll_once(resource).await?;
    eprintln!(
        "pollbus: polled {} pages, {} records: {} created, {} updated, {} deleted, {} no-op, {} skipped; outbox left {}",
        report.pages, report.records, report.created, report.updated, report.deleted,
        report.noop, report.skipped, left
    );
    for e in &errors {
        eprintln!("pollbus: poll failed: {e}");
    }
    Ok(if errors.is_empty() && left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
