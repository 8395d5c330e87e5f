//! A page store for `pollbus poll-once --dry-run`: reads the real state, writes nothing to it.
//!
//! Every page commit lands in memory instead (snapshots, removals, the resource state and the
//! messages), and later reads of the same poll see it, so a dry run detects exactly what a real
//! poll would — except deletes by reconciliation, which need the listing's marks written: a dry
//! run skips them (it reports no absent records) and says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::contract::Message;

/// What a dry run would have written, per resource.
#[derive(Default)]
struct Overlay {
    snapshots: HashMap<String, Option<Snapshot>>,
    state: Option<ResourceState>,
}

/// Reads from `inner`, keeps every write in memory (see the module docs).
pub struct DryRunStore {
    inner: Arc<dyn PageStore>,
    overlay: Mutex<HashMap<ResourceKey, Overlay>>,
    messages: Mutex<Vec<Message>>,
}

impl DryRunStore {
    /// A dry-run view of `inner`.
    pub fn new(inner: Arc<dyn PageStore>) -> Self {
        DryRunStore {
            inner,
            overlay: Mutex::new(HashMap::new()),
            messages: Mutex::new(Vec::new()),
        }
    }

    /// The messages the polls would have published, in order; empties the list.
    pub fn take_messages(&self) -> Vec<Message> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Overlay>> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl OutboxGauge for DryRunStore {
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }

    async fn outbox_depth_in(&self, _topic: &str) -> Result<u64, StoreError> {
        // A dry run never pauses for a full outbox: it publishes nothing.
        Ok(0)
    }
}

#[async_trait]
impl PageStore for DryRunStore {
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError> {
        if let Some(state) = self.overlay().get(key).and_then(|o| o.state.clone()) {
            return Ok(Some(state));
        }
        self.inner.resource_state(key).await
    }

    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        let mut found = self.inner.snapshots(key, ids).await?;
        if let Some(o) = self.overlay().get(key) {
            for id in ids {
                match o.snapshots.get(id) {
                    Some(Some(s)) => {
                        found.insert(id.clone(), s.clone());
                    }
                    Some(None) => {
                        found.remove(id);
                    }
                    None => {}
                }
            }
        }
        Ok(found)
    }

    async fn commit_page(&self, key: &ResourceKey, page: PageCommit) -> Result<(), StoreError> {
        {
            let mut overlay = self.overlay();
            let o = overlay.entry(key.clone()).or_default();
            for (id, snapshot) in page.snapshots {
                o.snapshots.insert(id, Some(snapshot));
            }
            for id in page.removed {
                o.snapshots.insert(id, None);
            }
            if let Some(state) = page.state {
                o.state = Some(state);
            }
        }
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(page.messages);
        Ok(())
    }

    async fn reconcile_mark(
        &self,
        _key: &ResourceKey,
        _run: i64,
        _ids: &[String],
        _fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        _run: i64,
        _before: DateTime<Utc>,
        _fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        tracing::info!(resource = %key, "dry run: deletes by reconciliation are not computed (they need the listing's marks written)");
        Ok(0)
    }

    async fn reconcile_absent(
        &self,
        _key: &ResourceKey,
        _run: i64,
        _before: DateTime<Utc>,
        _min_missed: u32,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        Ok(Vec::new())
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
        // A dry run writes nothing; nothing in it requests a resync either.
        let _ = (key, at);
        Ok(())
    }
}

/// The token and budget roles of a dry run: tokens are read from the real store and written to
/// memory (a login's tokens serve the rest of the run and are then forgotten); the request
/// budget grants every request (one poll, and nothing may be written to take from the shared
/// budget; the vendor's own limits still apply).
pub struct DryRunTokens {
    inner: Arc<dyn TokenStore>,
    written: Mutex<HashMap<String, String>>,
}

impl DryRunTokens {
    /// Tokens read from `inner`, written to memory.
    pub fn new(inner: Arc<dyn TokenStore>) -> Self {
        DryRunTokens {
            inner,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl TokenStore for DryRunTokens {
    async fn token(&self, name: &str) -> Result<Option<String>, StoreError> {
        if let Some(v) = self.written().get(name) {
            return Ok(Some(v.clone()));
        }
        self.inner.token(name).await
    }

    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.written().insert(name.to_string(), value.to_string());
        Ok(())
    }

    async fn claim_token_refresh(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn release_token_refresh(&self, _name: &str, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn keeps_tokens(&self) -> bool {
        false
    }
}

#[async_trait]
impl BudgetStore for DryRunTokens {
    async fn take_request_budget(
        &self,
        _source: &str,
        _n: u32,
        _per_hour: u32,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        Ok(None)
    }
}
