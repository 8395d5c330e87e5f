//! `pollbus poll-once`: one poll of each resource (or one), then publish and exit; with
//! `--dry-run`, print what it would publish and write nothing.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use pollbus::clock::{Clock, SystemClock};
use pollbus::config::Config;
use pollbus::contract::TraceContext;
use pollbus::daemon::StartError;
use pollbus::poll::{PollReport, Poller};
use pollbus::source::{Resource, SourceContext};
use pollbus::store::dry_run::{DryRunStore, DryRunTokens};

use super::EXIT_CONFIG;

/// Polls once and reports the counts on stderr. Exit 1 when a poll failed or messages are
/// left in the outbox.
pub async fn poll_once(config: Config, resource: Option<&str>) -> anyhow::Result<ExitCode> {
    let app = super::start(config).await?;
    let (report, errors, left) = match app.poll_once(resource).await {
        Err(e @ StartError::UnknownResource(_)) => {
            eprintln!("pollbus: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        result => result?,
    };
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

/// A state file that does not exist yet is not created by a dry run: the run reads an empty
/// store in a temporary file instead, removed afterwards.
struct DryState {
    url: String,
    scratch: Option<std::path::PathBuf>,
}

impl DryState {
    fn for_url(url: &str) -> DryState {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| std::path::PathBuf::from(rest.split('?').next().unwrap_or(rest)));
        match path {
            Some(p) if !p.exists() => {
                let scratch = std::env::temp_dir().join(format!(
                    "pollbus-dry-run-{}-{:08x}.db",
                    std::process::id(),
                    rand_suffix()
                ));
                DryState {
                    url: format!("sqlite://{}", scratch.display()),
                    scratch: Some(scratch),
                }
            }
            _ => DryState {
                url: url.to_string(),
                scratch: None,
            },
        }
    }
}

impl Drop for DryState {
    fn drop(&mut self) {
        if let Some(p) = &self.scratch {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = p.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// `poll-once --dry-run`: polls each resource (or one) once against the real vendor and the real
/// state, keeps every write in memory ([`DryRunStore`]), prints the messages a real poll would
/// publish on stdout (one JSON line each, the `stdout` sink's format) and a summary on stderr.
/// Nothing is written to the state store: a SQLite file is opened read-only (it keeps every
/// byte), OAuth tokens a vendor login yields are kept in memory for the run, the shared request
/// budget is not drawn from, and the sink is not used. Deletes by reconciliation are not
/// computed. Exit 1 when a poll failed.
pub async fn dry_run(config: Config, resource: Option<&str>) -> anyhow::Result<ExitCode> {
    let state = DryState::for_url(config.state.url.expose());
    let store = match state.scratch {
        // a scratch file is new: created and migrated like any state file
        Some(_) => pollbus::store::open(&state.url).await,
        None => pollbus::store::open_read_only(&state.url).await,
    }
    .context("cannot open the state store")?;
    let dry = Arc::new(DryRunStore::new(store.clone()));
    let tokens = Arc::new(DryRunTokens::new(store.clone()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = SourceContext {
        clock: clock.clone(),
        tokens: tokens.clone(),
        budget: tokens,
        metrics: None,
    };
    let mut report = PollReport::default();
    let mut errors = Vec::new();
    let mut polled = 0;
    for sc in &config.sources {
        let source = pollbus::source::build(sc, &ctx).context("cannot build the source")?;
        for r in &sc.resources {
            let key = format!("{}/{}", sc.name, r.name);
            if resource.is_some_and(|f| f != r.name && f != key) {
                continue;
            }
            polled += 1;
            let mut poller = Poller::new(
                source.clone(),
                Arc::new(Resource::build(sc, r)),
                dry.clone(),
                clock.clone(),
                config.sink.topic_prefix(),
                config.outbox.max_rows,
            );
            // A resync is paced background work (minutes of it); a dry run shows one poll.
            poller.resyncs = false;
            match poller
                .poll(&TraceContext::random(), &CancellationToken::new())
                .await
            {
                Ok(r) => report.add(&r),
                Err(e) => errors.push(e),
            }
        }
    }
    if let Some(filter) = resource.filter(|_| polled == 0) {
        eprintln!(
            "pollbus: {}",
            StartError::UnknownResource(filter.to_string())
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let messages = dry.take_messages();
    let lines = pollbus::sink::to_lines(&messages);
    std::io::stdout()
        .lock()
        .write_all(&lines)
        .context("cannot write to stdout")?;
    eprintln!(
        "pollbus: dry run: polled {} pages, {} records; would publish {} messages ({} created, {} updated, {} deleted; {} no-op, {} skipped); nothing was written to the state store",
        report.pages,
        report.records,
        messages.len(),
        report.created,
        report.updated,
        report.deleted,
        report.noop,
        report.skipped
    );
    for e in &errors {
        eprintln!("pollbus: poll failed: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
