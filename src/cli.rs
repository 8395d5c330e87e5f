//! The command line (clap definitions): `run`, `poll-once`, `replay`, `check`, `dlq`, `import`,
//! `state`.
//! The commands themselves are in the binary's `commands` folder.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pollbus — turns SaaS systems without change events into change notifications on Azure
/// Service Bus.
#[derive(Debug, Parser)]
#[command(name = "pollbus", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll every resource on its interval and publish changes until
    /// SIGINT/SIGTERM.
    Run {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
    },
    /// Poll each resource once, publish what changed, and exit (non-zero if anything failed or
    /// messages are left in the outbox).
    PollOnce {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// Only this resource (RESOURCE or SOURCE/RESOURCE).
        #[arg(long)]
        resource: Option<String>,
        /// Print the messages the poll would publish (stdout format) and write nothing: no
        /// snapshot, cursor or outbox row; the sink is not used.
        #[arg(long)]
        dry_run: bool,
    },
    /// Publish again the current state of one resource's records updated in a window (for a
    /// subscriber that lost messages), then exit (64 for a bad request, non-zero if the vendor
    /// failed or messages are left in the outbox).
    ///
    /// Each record goes as an UPDATE listing every tracked field, marked with `pollbus-replay` =
    /// the replay's id (and `pollbus-replay-for` with --for), through the outbox; snapshots and
    /// cursors are untouched; the same replay run again makes the same MessageIds.
    #[command(
        after_help = "Subscriptions other than --for ignore a replay with the SQL rule
  NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = '<their own name>'
(see README, \"Replay\")."
    )]
    Replay {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// The resource: SOURCE/RESOURCE, or RESOURCE when no other source has one so named.
        #[arg(long)]
        resource: String,
        /// Replay records updated at or after this instant: RFC 3339 with a zone, e.g.
        /// 2024-05-07T10:00:00+02:00 or 2024-05-07T08:00:00Z.
        #[arg(long, value_name = "TIME")]
        since: String,
        /// …and before this instant (excluded); without it the window has no end.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Meant for this subscription: sets `pollbus-replay-for`, which the topic's other
        /// subscriptions filter out with the SQL rule below.
        #[arg(long = "for", value_name = "SUBSCRIPTION")]
        for_subscription: Option<String>,
        /// Read the window and print how many records and messages the replay would send and
        /// a sample (stdout format); queue and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the configuration and print the plan: sources, resources, topics, state.
    /// Exits 64 when the configuration is invalid.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// Also ask each vendor for one record per resource and report configured fields it
        /// lacks (sends requests; opens the state store for stored tokens).
        #[arg(long)]
        probe: bool,
        /// With --probe: also print each resource's field map from one whole record the vendor
        /// returns, in TOML ready to paste (`[sources.resources.fields]`).
        #[arg(long, requires = "probe")]
        fields: bool,
    },
    /// Inspect and repair a Service Bus subscription's dead-letter queue (uses the sink's
    /// connection settings).
    Dlq {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Convert another tool's configuration into a pollbus configuration; prints a warning
    /// for every item it cannot map. Exits 64 when the input cannot be imported.
    Import {
        /// What to import.
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Request an anti-entropy resync of one resource: its next poll re-reads the whole
    /// resource at `resync_pages_per_minute` and publishes what incremental polling missed.
    Resync {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// The resource: SOURCE/RESOURCE (or RESOURCE when only one source has it).
        resource: String,
    },
    /// Inspect and repair the state store.
    State {
        /// The configuration file.
        #[arg(long, short, env = "POLLBUS_CONFIG")]
        config: PathBuf,
        /// What to show or do.
        #[command(subcommand)]
        action: StateAction,
    },
}

/// `pollbus dlq …` actions on a subscription's dead-letter queue.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show dead-lettered messages (reason, description, delivery count, enqueued time, body)
    /// without removing them.
    Peek {
        /// The topic (e.g. api.event.customer).
        #[arg(long)]
        topic: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        /// Most messages to show.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Send dead-lettered messages back to the topic with their properties, then complete them
    /// in the dead-letter queue.
    Resubmit {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        /// Most messages to resubmit.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Only list what would be resubmitted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead-lettered messages (all, or those enqueued before --older-than ago).
    Purge {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        /// Only messages enqueued longer ago than this (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

impl DlqAction {
    /// The topic and subscription whose dead-letter queue the action works on.
    pub fn target(&self) -> (&str, &str) {
        match self {
            DlqAction::Peek {
                topic,
                subscription,
                ..
            }
            | DlqAction::Resubmit {
                topic,
                subscription,
                ..
            }
            | DlqAction::Purge {
                topic,
                subscription,
                ..
            } => (topic, subscription),
        }
    }
}

/// `pollbus import …` sources.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// A Cloud Elements / SAP Open Connectors instance body (the JSON posted to `/instances`).
    /// Secrets become `${env:…}` references.
    CloudElements {
        /// The instance JSON file.
        file: PathBuf,
        /// Write the configuration to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `pollbus state …` actions.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Cursors, snapshot counts, outbox depth and dead letters.
    Show,
    /// List messages the sink rejected for good, with the reason.
    Dead {
        /// Most rows to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Move dead letters back to the outbox (all, or the given --seq values).
    RetryDead {
        /// Only these dead letters (their seq as `state dead` lists them).
        #[arg(long = "seq")]
        seqs: Vec<i64>,
    },
}
