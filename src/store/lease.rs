//! Keeps one replica's leases: acquires its fair share, renews every third of `lease_ttl`,
//! takes over leases of replicas that stopped renewing, and tells resource tasks which leases
//! (with their fences) it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Fence, LeaseGrant, LeaseStore, ResourceKey, StoreError};

/// Held leases: resource → fence.
pub type Held = HashMap<ResourceKey, Fence>;

/// One replica's lease loop.
pub struct LeaseKeeper {
    store: Arc<dyn LeaseStore>,
    replica: String,
    keys: Vec<ResourceKey>,
    ttl: Duration,
    held: watch::Sender<Held>,
}

impl LeaseKeeper {
    /// A keeper for `replica` over the configured `keys`.
    pub fn new(
        store: Arc<dyn LeaseStore>,
        replica: String,
        keys: Vec<ResourceKey>,
        ttl: Duration,
    ) -> Self {
        LeaseKeeper {
            store,
            replica,
            keys,
            ttl,
            held: watch::Sender::new(Held::new()),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Watches the held leases.
    pub fn subscribe(&self) -> watch::Receiver<Held> {
        self.held.subscribe()
    }

    /// The fence of `key`'s lease, when held.
    pub fn fence(&self, key: &ResourceKey) -> Option<Fence> {
        self.held.borrow().get(key).cloned()
    }

    /// Renews, balances and takes over once; publishes what is held.
    pub async fn tick(&self) -> Result<LeaseGrant, StoreError> {
        let grant = self
            .store
            .acquire_leases(&self.replica, &self.keys, self.ttl)
            .await?;
        let now: Held = grant
            .held
            .iter()
            .map(|l| (l.key.clone(), l.fence.clone()))
            .collect();
        self.held.send_if_modified(|held| {
            if *held == now {
                return false;
            }
            let gained: Vec<String> = now
                .iter()
                .filter(|(k, f)| held.get(*k) != Some(*f))
                .map(|(k, _)| k.to_string())
                .collect();
            let lost: Vec<String> = held
                .keys()
                .filter(|k| !now.contains_key(*k))
                .map(ToString::to_string)
                .collect();
            tracing::info!(
                replica = %self.replica,
                held = now.len(),
                share = grant.share,
                live_replicas = grant.live_replicas,
                gained = ?gained,
                lost = ?lost,
                "leases changed"
            );
            *held = now.clone();
            true
        });
        Ok(grant)
    }

    /// Keeps the leases until `stop`: renews every `ttl / 3`, and comes back just after the
    /// earliest foreign lease expires so a dead replica's resources are taken over promptly.
    /// When renewing fails for a whole `ttl`, every lease is dropped locally (the database
    /// expires them anyway, and fenced writes would fail).
    pub async fn run(&self, stop: CancellationToken) {
        let renew_every = (self.ttl / 3).max(Duration::from_millis(100));
        let mut last_ok = Instant::now();
        loop {
            let wait = match self.tick().await {
                Ok(grant) => {
                    last_ok = Instant::now();
                    grant
                        .next_expiry
                        .map(|d| d + Duration::from_millis(20))
                        .unwrap_or(renew_every)
                        .min(renew_every)
                }
                Err(e) => {
                    tracing::warn!(replica = %self.replica, error = %e, "cannot renew leases; retrying");
                    if last_ok.elapsed() >= self.ttl {
                        self.held.send_if_modified(|held| {
                            let had = !held.is_empty();
                            held.clear();
                            had
                        });
                    }
                    renew_every.min(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Gives up every lease (graceful stop), so other replicas take over at once.
    pub async fn release(&self) {
        self.held.send_replace(Held::new());
        if let Err(e) = self.store.release_leases(&self.replica, None).await {
            tracing::warn!(replica = %self.replica, error = %e, "cannot release leases; they expire by themselves");
        }
    }
}
