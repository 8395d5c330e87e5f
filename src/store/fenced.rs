//! A store wrapper that writes pages only under a lease: the daemon gives each resource's
//! poller one, and sets the fence of the lease held when the poll starts. Every other call
//! passes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;

/// Adds the current poll's fence to every [`Store::commit_page`]; without one, pages are
/// refused with [`StoreError::LeaseLost`].
pub struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Mutex<Option<Fence>>,
}

impl FencedStore {
    /// Wraps `inner`, holding no fence yet.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FencedStore {
            inner,
            fence: Mutex::new(None),
        }
    }

    /// Sets (or clears) the fence pages are written under.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Store for FencedStore {
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError> {
        self.inner.resource_state(key).await
    }

    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        self.inner.snapshots(key, ids).await
    }

    async fn commit_page(&self, key: &ResourceKey, mut page: PageCommit) -> Result<(), StoreError> {
        if page.fence.is_none() {
            match self.fence() {
                Some(fence) => page.fence = Some(fence),
                None => {
                    return Err(StoreError::NotLeased {
                        resource: key.to_string(),
                    })
                }
            }
        }
        self.inner.commit_page(key, page).await
    }

    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
    ) -> Result<(), StoreError> {
        self.inner.reconcile_mark(key, run, ids).await
    }

    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        self.inner.reconcile_absent(key, run, before).await
    }

    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError> {
        self.inner.snapshot_count(key).await
    }

    async fn outbox_next(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.inner.outbox_next(limit).await
    }

    async fn outbox_ack(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.inner.outbox_ack(seqs).await
    }

    async fn outbox_failed(&self, seqs: &[i64], error: &str) -> Result<(), StoreError> {
        self.inner.outbox_failed(seqs, error).await
    }

    async fn outbox_dead(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        self.inner.outbox_dead(seq, reason).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError> {
        self.inner.dead_letters(limit).await
    }

    async fn retry_dead(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
        self.inner.retry_dead(seqs).await
    }

    async fn token(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.token(name).await
    }

    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_token(name, value).await
    }

    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError> {
        self.inner.summaries().await
    }

    async fn acquire_leases(
        &self,
        replica: &str,
        keys: &[ResourceKey],
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        self.inner.acquire_leases(replica, keys, ttl).await
    }

    async fn release_leases(
        &self,
        replica: &str,
        keys: Option<&[ResourceKey]>,
    ) -> Result<(), StoreError> {
        self.inner.release_leases(replica, keys).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.leases().await
    }

    async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        self.inner.live_replicas().await
    }

    async fn take_request_budget(
        &self,
        source: &str,
        n: u32,
        per_hour: u32,
    ) -> Result<Option<Duration>, StoreError> {
        self.inner.take_request_budget(source, n, per_hour).await
    }
}
