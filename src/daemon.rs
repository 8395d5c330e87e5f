//! The running pollbus: one task per resource on its interval (with jitter; never two polls of
//! one resource at once), one outbox publisher, and a graceful stop.
//!
//! Stop sequence: the stop token is cancelled (SIGINT/SIGTERM) → resource tasks finish the page
//! in flight and end → the publisher flushes the outbox within what is left of
//! `shutdown_grace`. Every page is one transaction, so even an abrupt exit leaves consistent
//! state.
//!
//! Leases: a resource task polls only while this replica holds the resource's lease (see
//! [`crate::store::lease`]), and writes every page under that lease's fence, so a replica that
//! lost it (paused, partitioned) cannot write. With SQLite this replica holds every lease.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::{AdminServer, Readiness};
use crate::clock::Clock;
use crate::config::{Config, SourceConfig};
use crate::metrics::Metrics;
use crate::outbox::Publisher;
use crate::poll::{PollError, PollReport, Poller};
use crate::sink::Sink;
use crate::source::{self, Resource, Source, SourceContext};
use crate::store::fenced::FencedStore;
use crate::store::lease::LeaseKeeper;
use crate::store::{self, ResourceKey, Store, StoreOptions};

/// Why pollbus could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state store.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A source.
    #[error(transparent)]
    Source(#[from] source::BuildError),
    /// The sink.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkBuildError),
    /// The admin server could not start.
    #[error("admin server: {0}")]
    Admin(String),
    /// `--resource` named nothing.
    #[error(
        "no resource named {0:?} (use RESOURCE or SOURCE/RESOURCE as `pollbus check` lists them)"
    )]
    UnknownResource(String),
}

/// Builds a source from its configuration ([`source::build`], or scripted sources in tests).
pub type SourceBuilder =
    dyn Fn(&SourceConfig, &SourceContext) -> Result<Arc<dyn Source>, source::BuildError>;

/// A poller and the fenced store its pages are written through.
type FencedPoller = (Arc<Poller>, Arc<FencedStore>);

/// A configured, connected pollbus.
pub struct App {
    config: Config,
    store: Arc<dyn Store>,
    sink: Arc<dyn Sink>,
    pollers: Vec<Arc<Poller>>,
    /// Each poller's store, fenced by the lease held when its poll starts (same order).
    fenced: Vec<Arc<FencedStore>>,
    leases: Arc<LeaseKeeper>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

impl App {
    /// Opens the store, builds the sink and every source.
    pub async fn start(mut config: Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        let replica_id = config
            .cluster
            .replica_id
            .get_or_insert_with(store::default_replica_id)
            .clone();
        let options = StoreOptions {
            replica_id,
            claim_timeout: config.cluster.claim_timeout,
        };
        let store = store::open_with(config.state.url.expose(), &options).await?;
        let sink = crate::sink::build(&config.sink).await?;
        Self::with_parts(config, store, sink, clock)
    }

    /// Builds an app from an opened store and sink (tests pass their own).
    pub fn with_parts(
        config: Config,
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        clock: Arc<dyn Clock>,
    ) -> Result<App, StartError> {
        Self::with_sources(config, store, sink, clock, &source::build)
    }

    /// Builds an app whose sources come from `build` (tests pass scripted sources). The
    /// replica id is `cluster.replica_id`, or a generated one.
    pub fn with_sources(
        config: Config,
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        clock: Arc<dyn Clock>,
        build: &SourceBuilder,
    ) -> Result<App, StartError> {
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(Metrics::new());
        let ctx = SourceContext {
            clock: clock.clone(),
            store: store.clone(),
            metrics: Some(metrics.clone()),
        };
        let mut pollers = Vec::new();
        let mut fenced = Vec::new();
        for source_config in &config.sources {
            let source = build(source_config, &ctx)?;
            for r in &source_config.resources {
                let fenced_store = Arc::new(FencedStore::new(store.clone()));
                fenced.push(fenced_store.clone());
                pollers.push(Arc::new(Poller {
                    source: source.clone(),
                    resource: Arc::new(Resource::build(source_config, r)),
                    store: fenced_store,
                    clock: clock.clone(),
                    topic_prefix: config.sink.topic_prefix().to_string(),
                    wake: wake.clone(),
                    max_outbox_rows: config.outbox.max_rows,
                }));
            }
        }
        let keys: Vec<ResourceKey> = pollers
            .iter()
            .map(|p| ResourceKey::new(&p.resource.source, &p.resource.name))
            .collect();
        let replica = config
            .cluster
            .replica_id
            .clone()
            .unwrap_or_else(store::default_replica_id);
        let leases = Arc::new(LeaseKeeper::new(
            store.clone(),
            replica,
            keys,
            config.cluster.lease_ttl,
        ));
        Ok(App {
            config,
            store,
            sink,
            pollers,
            fenced,
            leases,
            wake,
            metrics,
            ready: Arc::new(Readiness::default()),
        })
    }

    /// This replica's leases.
    pub fn leases(&self) -> &Arc<LeaseKeeper> {
        &self.leases
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn publisher(&self) -> Publisher {
        Publisher::new(
            self.store.clone(),
            self.sink.clone(),
            self.config.outbox.clone(),
        )
        .with_metrics(self.metrics.clone())
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn selected(&self, filter: Option<&str>) -> Result<Vec<FencedPoller>, StartError> {
        let chosen: Vec<_> = self
            .pollers
            .iter()
            .zip(&self.fenced)
            .filter(|(p, _)| filter.is_none_or(|f| p.resource.name == f || p.resource.key() == f))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        let Some(filter) = filter else {
            return Ok(chosen);
        };
        if chosen.is_empty() {
            return Err(StartError::UnknownResource(filter.to_string()));
        }
        Ok(chosen)
    }

    /// Checks that the sink can publish to every configured topic, sending nothing
    /// (`pollbus check --probe`).
    pub async fn probe_sink(&self) -> Vec<(String, Result<(), crate::sink::SinkError>)> {
        let mut topics: Vec<String> = self
            .pollers
            .iter()
            .map(|p| format!("{}{}", self.config.sink.topic_prefix(), p.resource.entity))
            .collect();
        topics.sort();
        topics.dedup();
        self.sink.probe(&topics).await
    }

    /// Asks every resource's vendor for one record and lists configured paths it lacks
    /// (`pollbus check --probe`). Per resource: `Ok(missing)` (empty when all is well, `None`
    /// when the resource has no record to check) or the vendor's error.
    pub async fn probe(
        &self,
    ) -> Vec<(
        String,
        Result<Option<Vec<String>>, crate::source::SourceError>,
    )> {
        let mut out = Vec::new();
        for poller in &self.pollers {
            let result = poller
                .source
                .probe(&poller.resource)
                .await
                .map(|record| record.map(|r| poller.resource.missing_fields(&r)));
            out.push((poller.resource.key(), result));
        }
        out
    }

    /// Polls each (or the named) resource once, then drains the outbox. Returns the summed
    /// report, the poll errors, and the outbox rows left (non-zero when the sink failed).
    pub async fn poll_once(
        &self,
        filter: Option<&str>,
    ) -> Result<(PollReport, Vec<PollError>, u64), StartError> {
        let stop = CancellationToken::new();
        let mut total = PollReport::default();
        let mut errors = Vec::new();
        let selected = self.selected(filter)?;
        self.leases.tick().await?;
        for (poller, fenced) in selected {
            let key = ResourceKey::new(&poller.resource.source, &poller.resource.name);
            let Some(fence) = self.leases.fence(&key) else {
                tracing::warn!(resource = %key, "another replica holds this resource's lease; skipped");
                errors.push(PollError::Store(store::StoreError::NotLeased {
                    resource: key.to_string(),
                }));
                continue;
            };
            fenced.set_fence(Some(fence));
            let result = poll_logged(&poller, &stop, &self.metrics).await;
            fenced.set_fence(None);
            match result {
                Ok(report) => total.add(&report),
                Err(e) => errors.push(e),
            }
        }
        self.leases.release().await;
        let left = self.publisher().flush(self.config.shutdown_grace).await?;
        Ok((total, errors, left))
    }

    /// Runs until `stop` is cancelled, then stops gracefully. Returns the outbox rows left.
    pub async fn run(&self, stop: CancellationToken) -> Result<u64, StartError> {
        let admin_stop = CancellationToken::new();
        if self.config.admin.enabled {
            let server = AdminServer::bind(
                self.config.admin.listen,
                self.metrics.clone(),
                self.ready.clone(),
            )
            .await
            .map_err(|e| {
                StartError::Admin(format!(
                    "cannot listen on {}: {e}",
                    self.config.admin.listen
                ))
            })?;
            let addr = server
                .local_addr()
                .map_err(|e| StartError::Admin(e.to_string()))?;
            tracing::info!(%addr, "admin server: /live /ready /metrics");
            tokio::spawn(server.serve(admin_stop.clone()));
        }
        self.ready.store_ready();
        {
            let sink = self.sink.clone();
            let ready = self.ready.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut waits = sink_connect_backoff();
                loop {
                    match sink.connect().await {
                        Ok(()) => return ready.sink_ready(),
                        Err(e) => tracing::warn!(error = %e, "sink not connected yet; not ready"),
                    }
                    let wait = waits.next().unwrap_or(Duration::from_secs(30));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            });
        }
        let polls_stop = stop.child_token();
        let publisher_stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        if let Err(e) = self.leases.tick().await {
            tracing::warn!(error = %e, "cannot take leases yet; retrying");
        }
        let leases_stop = CancellationToken::new();
        let lease_task = {
            let leases = self.leases.clone();
            let stop = leases_stop.clone();
            tokio::spawn(async move { leases.run(stop).await })
        };
        for (poller, fenced) in self.pollers.iter().zip(&self.fenced) {
            let poller = poller.clone();
            let lease = LeaseSlot {
                fenced: fenced.clone(),
                leases: self.leases.clone(),
            };
            let stop = polls_stop.clone();
            let interval = poller_interval(&self.config, &poller);
            let metrics = self.metrics.clone();
            tasks.spawn(async move { resource_loop(poller, lease, interval, stop, metrics).await });
        }
        let publisher = Arc::new(self.publisher());
        let publisher_task = {
            let publisher = publisher.clone();
            let wake = self.wake.clone();
            let stop = publisher_stop.clone();
            tokio::spawn(async move { publisher.run(wake, stop).await })
        };
        tracing::info!(
            resources = self.pollers.len(),
            sink = %self.sink.describe(),
            "pollbus running"
        );
        stop.cancelled().await;
        self.ready.stopping();
        let grace = self.config.shutdown_grace;
        let started = tokio::time::Instant::now();
        tracing::info!(grace = ?grace, "stopping: finishing in-flight pages, then flushing the outbox");
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("pages still in flight at the end of the grace period; abandoning them (their cursor did not move)");
            tasks.abort_all();
        }
        leases_stop.cancel();
        let _ = lease_task.await;
        self.leases.release().await;
        publisher_stop.cancel();
        let _ = publisher_task.await;
        let left = publisher
            .flush(grace.saturating_sub(started.elapsed()))
            .await?;
        publisher.record_depth().await;
        admin_stop.cancel();
        tracing::info!(outbox_left = left, "stopped");
        Ok(left)
    }
}

/// Waits between attempts to connect the sink: 0.5 s, 1 s, 2 s … up to 30 s, without jitter.
fn sink_connect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build()
}

/// (interval, jitter) of a poller's source.
fn poller_interval(config: &Config, poller: &Poller) -> (Duration, Duration) {
    config
        .sources
        .iter()
        .find(|s| s.name == poller.resource.source)
        .map(|s| (s.interval, s.effective_jitter()))
        .unwrap_or((Duration::from_secs(60), Duration::ZERO))
}

async fn poll_logged(
    poller: &Poller,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Result<PollReport, PollError> {
    let trace = crate::contract::TraceContext::random();
    let span = tracing::info_span!(
        "poll",
        source = %poller.resource.source,
        resource = %poller.resource.name,
        trace_id = %trace.trace_id_hex(),
    );
    async {
        let started = std::time::Instant::now();
        let result = poller.poll(&trace, stop).await;
        let (source, resource) = (&poller.resource.source, &poller.resource.name);
        match &result {
            Ok(r) => metrics.poll(source, resource, &r.into(), started.elapsed().as_secs_f64()),
            Err(_) => metrics.poll_failed(source, resource, started.elapsed().as_secs_f64()),
        }
        let key = ResourceKey::new(source, resource);
        if let Ok(Some(state)) = poller.store.resource_state(&key).await {
            if let Some(cursor) = state.cursor {
                let lag = (poller.clock.now() - cursor).num_seconds().max(0);
                metrics.cursor_lag.with_label_values(&[source, resource]).set(lag);
            }
        }
        match &result {
            Ok(r) => tracing::info!(
                pages = r.pages,
                records = r.records,
                created = r.created,
                updated = r.updated,
                deleted = r.deleted,
                noop = r.noop,
                skipped = r.skipped,
                baseline = r.baseline,
                ms = started.elapsed().as_millis() as u64,
                "poll done"
            ),
            Err(PollError::Store(
                e @ (store::StoreError::LeaseLost { .. } | store::StoreError::NotLeased { .. }),
            )) => tracing::warn!(error = %e, "lease lost during the poll; its new holder continues from the committed cursor"),
            Err(e) => tracing::error!(error = %e, "poll failed; retrying next interval from the committed cursor"),
        }
        result
    }
    .instrument(span)
    .await
}

/// A resource task's view of its lease.
struct LeaseSlot {
    fenced: Arc<FencedStore>,
    leases: Arc<LeaseKeeper>,
}

/// Polls while this replica holds the resource's lease (under that lease's fence); otherwise
/// waits until the lease keeper gains it.
async fn resource_loop(
    poller: Arc<Poller>,
    lease: LeaseSlot,
    (interval, jitter): (Duration, Duration),
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let key = ResourceKey::new(&poller.resource.source, &poller.resource.name);
    let mut held = lease.leases.subscribe();
    loop {
        let fence = held.borrow_and_update().get(&key).cloned();
        let Some(fence) = fence else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = held.changed() => if changed.is_err() { return },
            }
            continue;
        };
        lease.fenced.set_fence(Some(fence));
        let _ = poll_logged(&poller, &stop, &metrics).await;
        lease.fenced.set_fence(None);
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..jitter)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval + extra) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_connect_backoff_doubles_from_half_a_second_up_to_thirty() {
        let waits: Vec<u128> = sink_connect_backoff()
            .take(9)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
