//! A page store that writes pages only under a lease: the daemon gives each resource's
//! poller one, and sets the fence of the lease held when the poll starts. Every other call
//! passes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;

/// Adds the current poll's fence to every [`PageStore::commit_page`] and
/// [`PageStore::reconcile_mark`]; without one, they are refused with [`StoreError::NotLeased`].
pub struct FencedStore {
    inner: Arc<dyn PageStore>,
    fence: Mutex<Option<Fence>>,
}

impl FencedStore {
    /// Wraps `inner`, holding no fence yet.
    pub fn new(inner: Arc<dyn PageStore>) -> Self {
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
impl OutboxGauge for FencedStore {
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }

    async fn outbox_depth_in(&self, topic: &str) -> Result<u64, StoreError> {
        self.inner.outbox_depth_in(topic).await
    }
}

#[async_trait]
impl PageStore for FencedStore {
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
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        match fence.cloned().or_else(|| self.fence()) {
            Some(fence) => self.inner.reconcile_mark(key, run, ids, Some(&fence)).await,
            None => Err(StoreError::NotLeased {
                resource: key.to_string(),
            }),
        }
    }

    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        match fence.cloned().or_else(|| self.fence()) {
            Some(fence) => {
                self.inner
                    .reconcile_miss(key, run, before, Some(&fence))
                    .await
            }
            None => Err(StoreError::NotLeased {
                resource: key.to_string(),
            }),
        }
    }

    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        min_missed: u32,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        self.inner
            .reconcile_absent(key, run, before, min_missed)
            .await
    }

    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError> {
        self.inner.snapshot_count(key).await
    }

    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError> {
        self.inner.summaries().await
    }

    async fn request_resync(
        &self,
        key: &ResourceKey,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.inner.request_resync(key, at).await
    }
}
