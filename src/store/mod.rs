//! State: cursors, snapshots, the outbox, dead letters and tokens.
//!
//! **Checkpoint rule.** Everything one page produces — new snapshots, removed snapshots, outbox
//! rows and the moved cursor — is written in one transaction ([`Store::commit_page`]). The cursor
//! therefore only moves once the changes it covers are durable in the outbox, and a crash at any
//! point either redoes a page (same deterministic message ids) or resends outbox rows the sink
//! never acknowledged.

pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::contract::Message;
use crate::detect::Snapshot;

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

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or database is not a pollbus state store; nothing was changed.
    #[error("{location} is not a pollbus state database ({detail}); refusing to touch it")]
    NotPollbus {
        /// The file or database (without credentials).
        location: String,
        /// What was found.
        detail: String,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open state store {location}: {source}")]
    Open {
        /// The file or database (without credentials).
        location: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("state store {operation} failed: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A stored value could not be decoded.
    #[error("state store holds an unreadable {what}: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it is unreadable.
        detail: String,
    },
}

/// Shorthand for mapping sqlx errors.
pub(crate) fn query_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

/// The state store.
#[async_trait]
pub trait Store: Send + Sync {
    /// The resource's progress; `None` before its first committed page.
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError>;

    /// Snapshots of the given ids (those that exist).
    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError>;

    /// Writes one page atomically (the checkpoint rule).
    async fn commit_page(&self, key: &ResourceKey, page: PageCommit) -> Result<(), StoreError>;

    /// Marks `ids` as present in reconciliation run `run`.
    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
    ) -> Result<(), StoreError>;

    /// Snapshots not marked in run `run` and last written before `before` (records that
    /// appeared during the listing are not considered missing).
    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
    ) -> Result<Vec<(String, Snapshot)>, StoreError>;

    /// How many snapshots the resource has.
    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError>;

    /// The oldest `limit` outbox rows, in publication order.
    async fn outbox_next(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;

    /// Deletes acknowledged rows.
    async fn outbox_ack(&self, seqs: &[i64]) -> Result<(), StoreError>;

    /// Records a failed attempt on rows that stay in the outbox.
    async fn outbox_failed(&self, seqs: &[i64], error: &str) -> Result<(), StoreError>;

    /// Moves a row the sink rejected for good to the dead-letter table.
    async fn outbox_dead(&self, seq: i64, reason: &str) -> Result<(), StoreError>;

    /// Outbox depth, age and dead-letter count.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Dead letters, oldest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError>;

    /// Moves dead letters (all, or the given seqs) back to the outbox; returns how many.
    async fn retry_dead(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError>;

    /// A stored token (OAuth access/refresh tokens), by name.
    async fn token(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores a token, replacing the previous one atomically.
    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Every resource with its state and snapshot count.
    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError>;
}

/// Opens the store at `url` (`sqlite:…` or `postgres://…`), migrating it.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(StoreError::NotPollbus {
            location: url.split(':').next().unwrap_or_default().to_string(),
            detail: "only sqlite state stores are available in this build".into(),
        })
    }
}

/// Nanoseconds since the epoch, the stores' time representation.
pub(crate) fn to_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}
