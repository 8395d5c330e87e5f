//! Keeps one replica's leases: acquires its fair share, renews every third of `lease_ttl`,
//! takes over leases of replicas that stopped renewing, and tells resource tasks which leases
//! (with their fences) it holds. Also the pure lease plan both backends run inside
//! [`LeaseStore::acquire_leases`].

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
    /// Resources this replica gives up until the instant (their task keeps dying here).
    held_back: std::sync::Mutex<HashMap<ResourceKey, Instant>>,
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
            held_back: std::sync::Mutex::new(HashMap::new()),
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
        let keys = self.wanted();
        let grant = self
            .store
            .acquire_leases(&self.replica, &keys, self.ttl)
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

    /// The keys this replica wants now: all but those held back.
    fn wanted(&self) -> Vec<ResourceKey> {
        let mut back = self.held_back.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        back.retain(|_, until| *until > now);
        self.keys
            .iter()
            .filter(|k| !back.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Gives up `key`'s lease and does not take it again for `period`, so another replica can
    /// try the resource (its task keeps dying here).
    pub async fn hold_back(&self, key: &ResourceKey, period: Duration) {
        let until = Instant::now() + period;
        self.held_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), until);
        self.held
            .send_if_modified(|held| held.remove(key).is_some());
        let keys = [key.clone()];
        if let Err(e) = self.store.release_leases(&self.replica, Some(&keys)).await {
            tracing::warn!(replica = %self.replica, resource = %key, error = %e, "cannot release the lease; it expires by itself");
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

/// The fair share of `resources` among `replicas`: ceil(resources / replicas).
pub fn fair_share(resources: usize, replicas: usize) -> usize {
    resources.div_ceil(replicas.max(1))
}

/// A lease row as read inside [`LeaseStore::acquire_leases`]'s transaction.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRow {
    pub key: ResourceKey,
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at: i64,
}

/// What a replica does with the lease rows of its resources.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LeasePlan {
    /// Held and kept: extend.
    pub renew: Vec<ResourceKey>,
    /// Held above the fair share: give up.
    pub release: Vec<ResourceKey>,
    /// Free or expired: take over (token + 1).
    pub take: Vec<ResourceKey>,
    /// Nanoseconds until the earliest lease of another replica expires.
    pub next_expiry: Option<i64>,
}

/// Decides renewals, releases and takeovers (pure; both backends use it). `rows` are the lease
/// rows of the replica's resources, `now` the database's time in nanoseconds.
pub(crate) fn plan_leases(rows: &[LeaseRow], me: &str, share: usize, now: i64) -> LeasePlan {
    let mut rows: Vec<&LeaseRow> = rows.iter().collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let live = |r: &LeaseRow| r.owner.is_some() && r.expires_at > now;
    let mut plan = LeasePlan::default();
    for r in rows
        .iter()
        .filter(|r| live(r) && r.owner.as_deref() == Some(me))
    {
        if plan.renew.len() < share {
            plan.renew.push(r.key.clone());
        } else {
            plan.release.push(r.key.clone());
        }
    }
    for r in rows.iter().filter(|r| !live(r)) {
        if plan.renew.len() + plan.take.len() >= share {
            break;
        }
        plan.take.push(r.key.clone());
    }
    plan.next_expiry = rows
        .iter()
        .filter(|r| live(r) && r.owner.as_deref() != Some(me))
        .map(|r| r.expires_at - now)
        .min();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(resource: &str, owner: Option<&str>, expires_at: i64) -> LeaseRow {
        LeaseRow {
            key: ResourceKey::new("s", resource),
            owner: owner.map(str::to_string),
            token: 1,
            expires_at,
        }
    }

    fn names(keys: &[ResourceKey]) -> Vec<&str> {
        keys.iter().map(|k| k.resource.as_str()).collect()
    }

    #[test]
    fn plan_keeps_the_share_and_takes_only_dead_leases() {
        let rows = [
            row("a", Some("me"), 100),
            row("b", Some("me"), 100),
            row("c", Some("me"), 100),
            row("d", Some("other"), 70),
            row("e", Some("other"), 5), // expired
            row("f", None, 0),
        ];
        let plan = plan_leases(&rows, "me", 2, 10);
        assert_eq!(names(&plan.renew), ["a", "b"]);
        assert_eq!(names(&plan.release), ["c"]);
        assert!(plan.take.is_empty());
        assert_eq!(plan.next_expiry, Some(60));

        let plan = plan_leases(&rows, "me", 5, 10);
        assert_eq!(names(&plan.renew), ["a", "b", "c"]);
        assert_eq!(names(&plan.take), ["e", "f"]);
        let plan = plan_leases(&rows, "me", 4, 10);
        assert_eq!(names(&plan.take), ["e"]);
    }

    #[test]
    fn my_expired_lease_is_a_takeover_not_a_renewal() {
        let plan = plan_leases(&[row("a", Some("me"), 5)], "me", 1, 10);
        assert!(plan.renew.is_empty());
        assert_eq!(names(&plan.take), ["a"]);
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(12, 3), 4);
        assert_eq!(fair_share(12, 5), 3);
        assert_eq!(fair_share(12, 0), 12);
        assert_eq!(fair_share(0, 2), 0);
    }
}
