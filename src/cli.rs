//! The command line: `run`, `poll-once`, `check`, `state`.

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
