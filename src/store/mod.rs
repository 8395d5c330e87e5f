//! State: cursors, snapshots, the outbox, dead letters, leases, tokens and request budgets.
//!
//! Each concern is a role trait ([`roles`]): the poll loop takes a [`PageStore`], the publisher
//! an [`OutboxStore`], the lease keeper a [`LeaseStore`]; [`Store`] combines them for [`open`]
//! and the commands that need several. [`sqlite::SqliteStore`] and [`postgres::PgStore`]
//! implement every role.
//!
//! **Checkpoint rule.** Everything one page produces — new snapshots, removed snapshots, outbox
//! rows and the moved cursor — is written in one transaction ([`PageStore::commit_page`]). The cursor
//! therefore only moves once the changes it covers are durable in the outbox, and a crash at any
//! point either redoes a page (same deterministic message ids) or resends outbox rows the sink
//! never acknowledged.

pub mod budget;
pub mod dry_run;
mod error;
pub mod fenced;
pub mod lease;
pub mod postgres;
pub mod roles;
mod snapshot_rows;
pub mod sqlite;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::contract::Message;
use crate::detect::Snapshot;

pub use error::StoreError;
pub(crate) use error::{lease_lost, query_err};
pub use lease::fair_share;
pub(crate) use lease::{plan_leases, LeaseRow};
pub use roles::{
    BudgetStore, DeadLetterStore, LeaseStore, OutboxGauge, OutboxStore, PageStore, Store,
    TokenStore,
};
pub use tokens::StoreTokenCache;

/// Identifies a polled resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// Source name.
    pub source: String,
    /// Resource name.
    pub resource: String,
}

impl ResourceKey {
    /// A key for `source`/`resource`.
    pub fn new(source: impl Into<String>, resource: impl Into<String>) -> Self {
        ResourceKey {
            source: source.into(),
            resource: resource.into(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.source, self.resource)
    }
}

/// Per-resource progress. The row exists once the first (baseline) poll completed a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceState {
    /// Whether the first full poll (the baseline) has completed.
    pub baseline_done: bool,
    /// Highest updated date committed; the next poll starts at this minus the overlap.
    pub cursor: Option<DateTime<Utc>>,
    /// When ids were last reconciled.
    pub last_reconcile: Option<DateTime<Utc>>,
    /// Position in the vendor's delete audit.
    pub audit_cursor: Option<DateTime<Utc>>,
    /// When the last complete resync started.
    pub last_resync: Option<DateTime<Utc>>,
    /// When a resync was last requested (`pollbus resync`); one is due when this is later than
    /// `last_resync`. Read only: a page commit never writes it ([`PageStore::request_resync`]
    /// does).
    pub resync_requested: Option<DateTime<Utc>>,
    /// The resync under way: when it started, and the vendor page token it reads next (`None`
    /// while `resync_started` is set: the first page).
    pub resync_started: Option<DateTime<Utc>>,
    /// See `resync_started`.
    pub resync_token: Option<String>,
}

/// What one page writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct PageCommit {
    /// When the page was processed (the poll's clock); stored with snapshots so a
    /// reconciliation can tell records written during its listing.
    pub at: DateTime<Utc>,
    /// Snapshots to insert or replace.
    pub snapshots: Vec<(String, Snapshot)>,
    /// Snapshots to remove (deleted records).
    pub removed: Vec<String>,
    /// Messages to append to the outbox.
    pub messages: Vec<Message>,
    /// The resource's new state, when it moves.
    pub state: Option<ResourceState>,
    /// When set, the page is written only if this lease is still held (checked in the same
    /// transaction); otherwise [`StoreError::LeaseLost`] and nothing is written.
    pub fence: Option<Fence>,
}

/// Proof that a writer holds a resource's lease: its owner and fencing token. Every takeover
/// increments the token, so a writer that lost its lease can never write again with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The replica holding the lease.
    pub owner: String,
    /// The fencing token (grows with every takeover).
    pub token: i64,
}

/// A resource's lease as held by a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The resource.
    pub key: ResourceKey,
    /// Owner and fencing token.
    pub fence: Fence,
    /// When the lease ends unless renewed (the database's clock).
    pub expires_at: DateTime<Utc>,
}

/// What [`LeaseStore::acquire_leases`] granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Leases the replica holds now (renewed or newly taken), ordered by key.
    pub held: Vec<Lease>,
    /// Live replicas, this one included.
    pub live_replicas: usize,
    /// The fair share: at most this many leases are held while other replicas are alive.
    pub share: usize,
    /// How soon the earliest lease held by another replica expires, when one does; a replica
    /// may come back then to take it over.
    pub next_expiry: Option<Duration>,
}

/// An outbox row waiting for the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Position in the outbox (ascending = publication order).
    pub seq: i64,
    /// The message.
    pub message: Message,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A message the sink rejected for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRow {
    /// Its former outbox position.
    pub seq: i64,
    /// The message.
    pub message: Message,
    /// Why the sink rejected it.
    pub reason: String,
    /// When it was moved here.
    pub failed_at: DateTime<Utc>,
}

/// Outbox depth and age, for metrics and `state show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Rows waiting.
    pub depth: u64,
    /// When the oldest waiting row was written.
    pub oldest: Option<DateTime<Utc>>,
    /// Rows in the dead-letter table.
    pub dead: u64,
}

/// A resource's state and snapshot count, for `state show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSummary {
    /// The resource.
    pub key: ResourceKey,
    /// Its progress.
    pub state: ResourceState,
    /// Records remembered.
    pub snapshots: u64,
}

/// How a store is opened (besides its URL).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This replica's id: the claimer of outbox rows it publishes (PostgreSQL).
    pub replica_id: String,
    /// How long claimed outbox rows stay with their claimer before another replica may
    /// reclaim them (PostgreSQL).
    pub claim_timeout: Duration,
    /// PostgreSQL: the longest one of this replica's sessions may sit idle inside a
    /// transaction (`idle_in_transaction_session_timeout`); it may wait twice as long for a
    /// lock (`lock_timeout`) and run a statement three times as long (`statement_timeout`). A
    /// replica frozen inside the lease or claim transaction (a paused VM, a stuck node) is cut
    /// off by the server after this, so it cannot stall the others for longer. The daemon uses
    /// a quarter of `cluster.lease_ttl`.
    pub session_timeout: Duration,
    /// SQLite: take the state file's writer lock (`<file>.lock`) for as long as the store is
    /// open, refusing to open a file another process holds, and end the leases a previous
    /// process left (it cannot be running: the lock is ours). The daemon sets it; the state
    /// commands (`state show`, `dlq`) do not, so they can read a running daemon's file.
    pub sqlite_writer: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            replica_id: default_replica_id(),
            claim_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(10),
            sqlite_writer: false,
        }
    }
}

/// `POD_NAME`, `HOSTNAME` or the host name, plus a random suffix, so a restarted replica never
/// takes over its predecessor's identity while its leases or claims are still live.
pub fn default_replica_id() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().chars().take(100).collect::<String>())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pollbus".to_string());
    format!("{base}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Opens the store at `url` (`sqlite:…` or `postgres://…`), migrating it, with default
/// [`StoreOptions`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the store at `url` (`sqlite:…` or `postgres://…`), migrating it.
pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        if options.sqlite_writer {
            Ok(Arc::new(sqlite::SqliteStore::open_writer(url).await?))
        } else {
            Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, options).await?))
    } else {
        Err(StoreError::NotPollbus {
            location: url.split(':').next().unwrap_or_default().to_string(),
            detail: "the url must start with sqlite: or postgres://".into(),
        })
    }
}

/// Opens the store at `url` for `poll-once --dry-run`: a SQLite file read-only (see
/// [`sqlite::SqliteStore::open_read_only`]); PostgreSQL as [`open`] does (migrating it), since a
/// dry run's writes all go to memory ([`dry_run`]).
pub async fn open_read_only(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open_read_only(url).await?))
    } else {
        open(url).await
    }
}

/// One hour in nanoseconds.
pub(crate) const HOUR_NANOS: i64 = 3_600_000_000_000;

/// The start of the clock hour holding `now` (nanoseconds).
pub(crate) fn budget_window(now: i64) -> i64 {
    now - now.rem_euclid(HOUR_NANOS)
}

/// How long from `now` until the window that started at `window` ends.
pub(crate) fn budget_wait(window: i64, now: i64) -> Duration {
    Duration::from_nanos((window + HOUR_NANOS - now).max(0) as u64)
}

/// Nanoseconds since the epoch, the stores' time representation.
pub(crate) fn to_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}
