//! The store's roles: one trait per concern, each taken by the part of pollbus that needs it.
//!
//! | trait | methods | taken by |
//! |---|---|---|
//! | [`PageStore`] | cursors, snapshots, reconciliation, the page commit | the poll loop ([`crate::poll::Poller`]), [`super::fenced::FencedStore`] |
//! | [`OutboxGauge`] | outbox depth, age, dead-letter count | the poll loop (back-pressure), the publisher (metrics) |
//! | [`OutboxStore`] | claim, acknowledge, fail, dead-letter outbox rows | the publisher ([`crate::outbox::Publisher`]) |
//! | [`DeadLetterStore`] | list and requeue dead letters | `pollbus state dead` / `retry-dead` |
//! | [`LeaseStore`] | leases and live replicas | the lease keeper ([`super::lease::LeaseKeeper`]) |
//! | [`Store`] | all of the above, tokens and the request budget | [`super::open`], the daemon and commands that need several |
//!
//! [`super::sqlite::SqliteStore`] and [`super::postgres::PgStore`] implement every role.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    DeadRow, Fence, Lease, LeaseGrant, OutboxRow, OutboxStats, PageCommit, ResourceKey,
    ResourceState, ResourceSummary, StoreError,
};
use crate::detect::Snapshot;

/// Outbox depth, age and dead-letter count: the poll loop reads it for back-pressure
/// (`outbox.max_rows`), the publisher for its gauges and `state show` for its report.
#[async_trait]
pub trait OutboxGauge: Send + Sync {
    /// Outbox depth, age and dead-letter count.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Rows waiting for `topic` (polling pauses per topic at `outbox.max_rows`).
    async fn outbox_depth_in(&self, topic: &str) -> Result<u64, StoreError>;
}

/// Cursors, snapshots and the page commit: what the poll loop reads and writes.
#[async_trait]
pub trait PageStore: OutboxGauge {
    /// The resource's progress; `None` before its first committed page.
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError>;

    /// Snapshots of the given ids (those that exist).
    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError>;

    /// Writes one page atomically (the checkpoint rule): snapshots, outbox rows and the cursor.
    async fn commit_page(&self, key: &ResourceKey, page: PageCommit) -> Result<(), StoreError>;

    /// Marks `ids` as present in reconciliation run `run`. With a `fence`, the marks are
    /// written only if that lease is still held (checked in the same transaction); otherwise
    /// [`StoreError::LeaseLost`] and nothing is written — a replica that lost the lease cannot
    /// change what the new owner's reconciliation deletes.
    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Counts one more miss on every snapshot not marked in run `run` and last written before
    /// `before` (records that appeared during the listing are not missing); returns how many
    /// — without loading any, so the reconcile guard is applied before memory is spent. With a
    /// `fence`, written only while that lease is held, as [`PageStore::reconcile_mark`].
    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError>;

    /// Snapshots not marked in run `run`, last written before `before`, and missed by at
    /// least `min_missed` reconciliations in a row (see [`PageStore::reconcile_miss`]).
    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        min_missed: u32,
    ) -> Result<Vec<(String, Snapshot)>, StoreError>;

    /// How many snapshots the resource has.
    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError>;

    /// Records that a resync of `key` was requested at `at` (`pollbus resync`): the resource's
    /// next poll starts one. Written apart from the page commit, which never overwrites it.
    async fn request_resync(&self, key: &ResourceKey, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every resource with its state and snapshot count.
    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError>;
}

/// Publishing the outbox: what [`crate::outbox::Publisher`] uses.
#[async_trait]
pub trait OutboxStore: OutboxGauge {
    /// The oldest `limit` outbox rows, in publication order. With PostgreSQL the rows are
    /// claimed for this replica (until acknowledged, failed or the claim timeout), and a row is
    /// returned only with every earlier row of its partition key.
    async fn outbox_next(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;

    /// Topics with rows waiting, the topic of the oldest row first.
    async fn outbox_topics(&self) -> Result<Vec<String>, StoreError>;

    /// Like [`OutboxStore::outbox_next`], for one topic's rows only (the publisher reads per
    /// topic, so one topic's rows cannot fill the batch window of the others).
    async fn outbox_next_in(&self, topic: &str, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;

    /// Deletes acknowledged rows.
    async fn outbox_ack(&self, seqs: &[i64]) -> Result<(), StoreError>;

    /// Records a failed attempt on rows that stay in the outbox.
    async fn outbox_failed(&self, seqs: &[i64], error: &str) -> Result<(), StoreError>;

    /// Moves a row the sink rejected for good to the dead-letter table.
    async fn outbox_dead(&self, seq: i64, reason: &str) -> Result<(), StoreError>;
}

/// Messages the sink rejected for good: listed and requeued by the operator.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Dead letters, oldest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError>;

    /// Moves dead letters (all, or the given seqs) back to the outbox, each in its original
    /// place (its seq), so it is published before later changes of its partition key that
    /// still wait; returns how many.
    async fn retry_dead(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError>;
}

/// Resource leases shared by the replicas: what [`super::lease::LeaseKeeper`] uses.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Announces `replica` as alive for `ttl`, then renews the leases it holds among `keys`,
    /// releases those above its fair share (ceil(keys / live replicas)) and takes free or
    /// expired ones up to that share. One transaction; a takeover increments the fencing token.
    async fn acquire_leases(
        &self,
        replica: &str,
        keys: &[ResourceKey],
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError>;

    /// Gives up `replica`'s leases (all, or those of `keys`) so others may take them at once;
    /// releasing all also withdraws the replica from the live set.
    async fn release_leases(
        &self,
        replica: &str,
        keys: Option<&[ResourceKey]>,
    ) -> Result<(), StoreError>;

    /// Every lease row with its owner, live or not (for tests and `state show`).
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// Replicas whose heartbeat has not expired, sorted.
    async fn live_replicas(&self) -> Result<Vec<String>, StoreError>;
}

/// OAuth tokens, shared by every replica and every restart: what [`super::StoreTokenCache`]
/// hands to the HTTP layer.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// A stored token (OAuth access/refresh tokens), by name.
    async fn token(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores a token, replacing the previous one atomically.
    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Claims the refresh of token `name` for `holder` for `ttl`: `true` when no other holder
    /// has an unexpired claim. With rotating refresh tokens only one replica may refresh at a
    /// time; the others wait and read the token it stores.
    async fn claim_token_refresh(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Ends `holder`'s claim on refreshing token `name`.
    async fn release_token_refresh(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Whether tokens put here are kept for the next user (`false`: a dry run's memory; see
    /// `http::auth::TokenCache::keeps_tokens`).
    fn keeps_tokens(&self) -> bool {
        true
    }
}

/// The request budget shared by every replica (`max_requests_per_hour`): what
/// [`super::budget::SharedBudget`] draws from.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Takes `n` requests from `source`'s budget of `per_hour` requests per clock hour, shared
    /// by every replica. `None`: granted. `Some(wait)`: the budget is used up; nothing was
    /// taken, and the hour ends after `wait`. Windows are clock hours of the store's clock
    /// (fixed, not sliding: a burst at the end of one hour and the start of the next may reach
    /// twice the budget within sixty minutes); a request larger than the whole budget is granted
    /// alone in an untouched hour rather than never. PostgreSQL uses the database's clock.
    async fn take_request_budget(
        &self,
        source: &str,
        n: u32,
        per_hour: u32,
    ) -> Result<Option<Duration>, StoreError>;
}

/// The whole state store: every role. What [`super::open`] returns and what the daemon and the
/// commands that need several roles take; each part of pollbus takes only its role (an
/// `Arc<dyn Store>` coerces to any of them).
pub trait Store:
    PageStore + OutboxStore + DeadLetterStore + LeaseStore + TokenStore + BudgetStore
{
}

impl<T> Store for T where
    T: PageStore + OutboxStore + DeadLetterStore + LeaseStore + TokenStore + BudgetStore
{
}
