//! `pollbus replay`: publish again the current state of the records of one resource updated in
//! a window (see [`pollbus::replay`] for what is sent and why it is idempotent).
//!
//! Who publishes: with PostgreSQL, or a SQLite state file no other process holds, the replay
//! queues its messages and publishes the outbox itself (like `poll-once`), then says what is
//! left. When a running pollbus holds the SQLite file, the replay only queues (SQLite takes the
//! writes of both) and that process's publisher sends the messages within a second or so. A
//! replay needs no lease: it writes no snapshot or cursor.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use pollbus::clock::{Clock, SystemClock};
use pollbus::config::Config;
use pollbus::outbox::Publisher;
use pollbus::replay::{OutboxQueue, Preview, ReplayReport, ReplayRequest, Replayer, REPLAY_RULE};
use pollbus::source::{Resource, SourceContext};
use pollbus::store::{self, Store, StoreError, StoreOptions};

use super::EXIT_CONFIG;

/// Messages a dry run prints as its sample.
const SAMPLE: usize = 2;

/// The command line of `pollbus replay`, as given.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    /// `--resource`.
    pub resource: String,
    /// `--since`.
    pub since: String,
    /// `--until`.
    pub until: Option<String>,
    /// `--for`.
    pub for_subscription: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
}

/// Who publishes the replay's messages.
enum Publishing {
    /// This process (it holds the SQLite state file, or the state is PostgreSQL).
    Here,
    /// The pollbus process holding the SQLite state file.
    Holder(String),
}

/// Runs a replay (or its dry run) and reports on stderr. Exit 64 for a bad request, 1 when the
/// vendor or the store failed or messages are left in the outbox.
pub async fn replay(config: Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let request = match ReplayRequest::parse(
        &config,
        &args.resource,
        &args.since,
        args.until.as_deref(),
        args.for_subscription.as_deref(),
        clock.now(),
    ) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("pollbus: replay: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let source_config = config
        .sources
        .iter()
        .find(|s| s.name == request.source)
        .context("the request's source is configured")?;
    let resource_config = source_config
        .resources
        .iter()
        .find(|r| r.name == request.resource)
        .context("the request's resource is configured")?;
    let id = request.id();
    eprintln!("pollbus: replay {id}: {request}");
    if request.target.is_some() {
        eprintln!(
            "pollbus: the topic's other subscriptions ignore it with the SQL rule {}",
            REPLAY_RULE.replace("{subscription}", "<their own name>")
        );
    }
    let (store, publishing) = open_state(&config, args.dry_run).await?;
    let ctx = SourceContext {
        clock: clock.clone(),
        tokens: store.clone(),
        budget: store.clone(),
        metrics: None,
    };
    let source = pollbus::source::build(source_config, &ctx).context("cannot build the source")?;
    let replayer = Replayer::new(
        source,
        Arc::new(Resource::build(source_config, resource_config)),
        request.clone(),
        config.sink.topic_prefix(),
    );
    if args.dry_run {
        return dry_run(&replayer).await;
    }
    let topic = replayer.topic();
    let publisher = match &publishing {
        Publishing::Here => {
            let sink = pollbus::sink::build(&config.sink)
                .await
                .context("cannot build the sink")?;
            Some(Arc::new(Publisher::new(
                store.clone(),
                sink,
                config.outbox.clone(),
            )))
        }
        Publishing::Holder(_) => None,
    };
    let mut queue = OutboxQueue::new(
        store.clone(),
        request.key(),
        topic.clone(),
        config.outbox.max_rows,
        publisher.clone(),
        config.shutdown_grace,
        clock,
    );
    let result = replayer.run(&mut queue).await;
    let queued = queue.queued;
    let failed = match &result {
        Ok(report) => {
            eprintln!(
                "pollbus: replay {id}: {}; queued {queued} messages for {topic}",
                read(report)
            );
            false
        }
        Err(e) => {
            eprintln!("pollbus: replay {id} failed after queueing {queued} messages: {e}");
            true
        }
    };
    match (publishing, publisher) {
        (Publishing::Here, Some(publisher)) => {
            let left = publisher
                .flush(config.shutdown_grace)
                .await
                .context("cannot read the outbox")?;
            if left == 0 {
                eprintln!("pollbus: replay {id}: published; outbox left 0");
            } else {
                eprintln!(
                    "pollbus: replay {id}: outbox left {left}: the sink did not take them within {}; they stay in the outbox and `pollbus run` or `pollbus poll-once` publishes them (or run this replay again: what was sent is dropped by duplicate detection)",
                    humantime::format_duration(config.shutdown_grace)
                );
            }
            Ok(if failed || left > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        (Publishing::Holder(holder), _) => {
            eprintln!(
                "pollbus: replay {id}: the pollbus holding the state file ({holder}) publishes the {queued} queued messages from its outbox"
            );
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        (Publishing::Here, None) => unreachable!("a replay publishing here has a publisher"),
    }
}

/// Opens the state store. A real replay takes a SQLite file's writer lock like `poll-once`
/// (then it publishes itself); when a running pollbus holds it, the file is opened beside that
/// process, which publishes. A dry run never takes the lock. PostgreSQL outbox rows are
/// claimed under a replica id of the replay's own (`replay-…`).
async fn open_state(
    config: &Config,
    dry_run: bool,
) -> anyhow::Result<(Arc<dyn Store>, Publishing)> {
    let url = config.state.url.expose();
    let options = StoreOptions {
        replica_id: format!("replay-{}", store::default_replica_id()),
        claim_timeout: config.cluster.claim_timeout,
        session_timeout: (config.cluster.lease_ttl / 4).max(std::time::Duration::from_secs(1)),
        sqlite_writer: !dry_run,
    };
    match store::open_with(url, &options).await {
        Ok(store) => Ok((store, Publishing::Here)),
        Err(StoreError::InUse { holder, .. }) => {
            let beside = StoreOptions {
                sqlite_writer: false,
                ..options
            };
            let store = store::open_with(url, &beside)
                .await
                .context("cannot open the state store")?;
            tracing::info!(%holder, "the state file is held by a running pollbus; the replay queues its messages for it to publish");
            Ok((store, Publishing::Holder(holder)))
        }
        Err(e) => Err(e).context("cannot open the state store"),
    }
}

/// What a replay read, for the summary line.
fn read(report: &ReplayReport) -> String {
    format!(
        "read {} pages, {} records ({} outside the window, {} unreadable, {} left to a child resource)",
        report.pages, report.records, report.outside, report.skipped, report.delegated
    )
}

/// `--dry-run`: reads the window as the replay would (drawing on the shared request budget,
/// with the stored OAuth tokens), prints the first messages on stdout (one JSON line each, the
/// `stdout` sink's format) and the counts on stderr; queues and sends nothing.
async fn dry_run(replayer: &Replayer) -> anyhow::Result<ExitCode> {
    let id = replayer.id();
    let mut preview = Preview::new(SAMPLE);
    let result = replayer.run(&mut preview).await;
    std::io::stdout()
        .lock()
        .write_all(&pollbus::sink::to_lines(&preview.sample))
        .context("cannot write to stdout")?;
    match result {
        Ok(report) => {
            eprintln!(
                "pollbus: dry run of replay {id}: would send {} messages to {} (one per record updated in the window); {}; sample on stdout: the first {}; nothing was queued or sent",
                report.messages,
                replayer.topic(),
                read(&report),
                preview.sample.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "pollbus: dry run of replay {id} failed after {} messages: {e}",
                preview.messages
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
