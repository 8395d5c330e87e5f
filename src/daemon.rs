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
//!
//! No task dies silently. A poll that panics is caught: logged at ERROR with its source and
//! resource, counted in `pollbus_task_restarts_total{task="poll"}`, and tried again after a
//! capped exponential backoff (not the interval); after [`DEAD_AFTER`] panics in a row the
//! resource task counts as dead and gives up its lease for a `lease_ttl`, so another replica
//! can try, until a poll completes again. The publisher and the lease keeper run supervised:
//! a panic or an unexpected end is logged, counted (`task="publisher"`, `task="leases"`) and
//! restarted with backoff; a publisher that dies [`DEAD_AFTER`] times in a row without running
//! a minute counts as dead. `/live` fails while the publisher or every resource task is dead,
//! so the orchestrator restarts the process.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::{AdminServer, Readiness};
use crate::clock::Clock;
use crate::config::{Config, SourceConfig};
use crate::metrics::{Declared, Metrics};
use crate::outbox::Publisher;
use crate::poll::{PollError, PollReport, Poller};
use crate::sink::Sink;
use crate::source::{self, Resource, Source, SourceContext, SourceError};
use crate::status::{LastPoll, PageResource, PollBoard, PollOutcome, StatusPage};
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
    admin_addr: OnceLock<std::net::SocketAddr>,
    /// The last poll of each resource, for the status page.
    board: Arc<PollBoard>,
}

/// Panics in a row after which a task counts as dead (`/live` may fail, a resource task gives
/// up its lease for a while).
pub const DEAD_AFTER: u32 = 3;

/// The restart backoff of a task: from `min` (at most 1 s) up to 5 minutes, with jitter.
fn restart_backoff(min: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(min.min(Duration::from_secs(1)))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A panic's message, for the log.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs the task `make` builds in its own tokio task until `stop`; a panic or an end before
/// `stop` is logged at ERROR, counted in `pollbus_task_restarts_total{task}`, and the task
/// starts again after a backoff. `dead` is told when it died [`DEAD_AFTER`] times in a row
/// without running a minute (`true`), and when a restart has run a minute again (`false`).
async fn supervise<F, Fut>(
    task: &'static str,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    dead: impl Fn(bool) + Send + 'static,
    make: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    const HEALTHY_AFTER: Duration = Duration::from_secs(60);
    let mut backoff = restart_backoff(Duration::from_secs(1));
    let mut deaths = 0u32;
    loop {
        // Aborted when the supervisor is dropped (a stop that outlived the grace period).
        let mut handle = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(make()));
        let started = tokio::time::Instant::now();
        let outcome = loop {
            tokio::select! {
                outcome = &mut handle => break outcome,
                _ = tokio::time::sleep_until(started + HEALTHY_AFTER), if deaths > 0 => {
                    if deaths >= DEAD_AFTER {
                        tracing::info!(task, "the task runs again after dying");
                        dead(false);
                    }
                    deaths = 0;
                    backoff = restart_backoff(Duration::from_secs(1));
                }
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let reason = match outcome {
            Ok(()) => "it ended before the stop".to_string(),
            Err(e) if e.is_panic() => format!("panic: {}", panic_text(&*e.into_panic())),
            Err(e) => e.to_string(),
        };
        deaths += 1;
        metrics.task_restarts.with_label_values(&[task]).inc();
        let wait = backoff.next().unwrap_or(Duration::from_secs(300));
        tracing::error!(task, %reason, deaths, restart_in_ms = wait.as_millis() as u64, "task died; restarting it");
        if deaths == DEAD_AFTER {
            dead(true);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
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
            session_timeout: (config.cluster.lease_ttl / 4).max(Duration::from_secs(1)),
            sqlite_writer: true,
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
            tokens: store.clone(),
            budget: store.clone(),
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
                    last_resync_page: Default::default(),
                    resyncs: true,
                }));
            }
        }
        let keys: Vec<ResourceKey> = pollers
            .iter()
            .map(|p| ResourceKey::new(&p.resource.source, &p.resource.name))
            .collect();
        let topics: Vec<String> = pollers
            .iter()
            .map(|p| format!("{}{}", config.sink.topic_prefix(), p.resource.entity))
            .collect();
        let declared: Vec<Declared> = pollers
            .iter()
            .zip(&topics)
            .map(|(p, topic)| Declared {
                source: &p.resource.source,
                resource: &p.resource.name,
                topic,
                interval_seconds: poller_interval(&config, p).0.as_secs_f64(),
            })
            .collect();
        metrics.declare(&declared);
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
            admin_addr: OnceLock::new(),
            board: Arc::new(PollBoard::default()),
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

    /// The admin server's address, once [`App::run`] has bound it.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr.get().copied()
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

    /// Asks every resource's vendor for one whole record (every field it returns, not only the
    /// configured ones): `pollbus check --probe --fields`. Per resource: the record, `None`
    /// when the resource has no record, or the vendor's error.
    pub async fn samples(
        &self,
    ) -> Vec<(
        Arc<crate::source::Resource>,
        Result<Option<serde_json::Value>, crate::source::SourceError>,
    )> {
        let mut out = Vec::new();
        for poller in &self.pollers {
            let source_config = self
                .config
                .sources
                .iter()
                .find(|s| s.name == poller.resource.source)
                .expect("every poller's source is configured");
            let mut whole = Resource::build(source_config, &poller.resource.config);
            whole.record_keys = crate::source::narrow::RecordKeys::all();
            let result = poller.source.sample(&whole).await;
            out.push((poller.resource.clone(), result));
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
            let result = poll_logged(&poller, &stop, &self.metrics, &self.board).await;
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
            tracing::info!(%addr, "admin server: / (status) /live /ready /metrics");
            let _ = self.admin_addr.set(addr);
            let server = server.with_status(Arc::new(self.status_page()));
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
            tokio::spawn(supervise(
                "leases",
                stop.clone(),
                self.metrics.clone(),
                |_| {},
                move || {
                    let leases = leases.clone();
                    let stop = stop.clone();
                    async move { leases.run(stop).await }
                },
            ))
        };
        tokio::spawn(lease_metrics(
            self.leases.clone(),
            self.metrics.clone(),
            leases_stop.clone(),
        ));
        for (poller, fenced) in self.pollers.iter().zip(&self.fenced) {
            let poller = poller.clone();
            let lease = LeaseSlot {
                fenced: fenced.clone(),
                leases: self.leases.clone(),
                hold_back: self.config.cluster.lease_ttl,
            };
            let stop = polls_stop.clone();
            let interval = poller_interval(&self.config, &poller);
            let metrics = self.metrics.clone();
            let ready = self.ready.clone();
            let board = self.board.clone();
            ready.poll_task_started();
            tasks.spawn(supervise(
                "poll",
                stop.clone(),
                metrics.clone(),
                |_| {},
                move || {
                    let lease = LeaseSlot {
                        fenced: lease.fenced.clone(),
                        leases: lease.leases.clone(),
                        hold_back: lease.hold_back,
                    };
                    resource_loop(
                        poller.clone(),
                        lease,
                        interval,
                        stop.clone(),
                        metrics.clone(),
                        ready.clone(),
                        board.clone(),
                    )
                },
            ));
        }
        let publisher = Arc::new(self.publisher());
        let publisher_task = {
            let publisher = publisher.clone();
            let wake = self.wake.clone();
            let stop = publisher_stop.clone();
            let ready = self.ready.clone();
            tokio::spawn(supervise(
                "publisher",
                stop.clone(),
                self.metrics.clone(),
                move |dead| ready.publisher_dead(dead),
                move || {
                    let publisher = publisher.clone();
                    let wake = wake.clone();
                    let stop = stop.clone();
                    async move { publisher.run(wake, stop).await }
                },
            ))
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
        // Everything after the stop signal fits in the grace period, whatever the broker or
        // the store does: each step gets what is left of it, and a step that hangs (a broker
        // that accepts but never answers) is abandoned — its rows stay in the outbox.
        let deadline = started + grace;
        let left_of_grace = || deadline.saturating_duration_since(tokio::time::Instant::now());
        leases_stop.cancel();
        let lease_task_abort = lease_task.abort_handle();
        if tokio::time::timeout(left_of_grace(), lease_task)
            .await
            .is_err()
        {
            lease_task_abort.abort();
        }
        if tokio::time::timeout(left_of_grace(), self.leases.release())
            .await
            .is_err()
        {
            tracing::warn!("the store did not answer within the grace period; the leases expire on their own after lease_ttl");
        }
        publisher_stop.cancel();
        let publisher_abort = publisher_task.abort_handle();
        if tokio::time::timeout(left_of_grace(), publisher_task)
            .await
            .is_err()
        {
            publisher_abort.abort();
        }
        let left = match tokio::time::timeout(left_of_grace(), publisher.flush(left_of_grace()))
            .await
        {
            Ok(left) => left?,
            Err(_) => {
                let left = tokio::time::timeout(Duration::from_secs(1), self.store.outbox_stats())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map_or(0, |s| s.depth);
                tracing::warn!(
                    left,
                    grace = ?grace,
                    "the sink did not answer within the grace period; the unsent messages stay in the outbox for the next start"
                );
                left
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), publisher.record_depth()).await;
        admin_stop.cancel();
        tracing::info!(
            outbox_left = left,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopped"
        );
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

impl App {
    /// The status page over this app's store and resources.
    fn status_page(&self) -> StatusPage {
        let resources = self
            .pollers
            .iter()
            .map(|p| PageResource {
                key: ResourceKey::new(&p.resource.source, &p.resource.name),
                topic: format!("{}{}", self.config.sink.topic_prefix(), p.resource.entity),
                interval: poller_interval(&self.config, p).0,
            })
            .collect();
        // Only the URL's scheme is looked at: the URL itself may hold a password.
        let backend = if self.config.state.url.expose().starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        StatusPage::new(
            self.store.clone(),
            self.board.clone(),
            resources,
            self.leases.replica().to_string(),
            backend,
        )
    }
}

/// Mirrors this replica's leases into `pollbus_lease_owned` (1 held, 0 not) and counts each
/// lease gained in `pollbus_lease_acquisitions_total`, until `stop`.
async fn lease_metrics(leases: Arc<LeaseKeeper>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut held = leases.subscribe();
    let mut before: std::collections::BTreeSet<ResourceKey> = Default::default();
    loop {
        let now: std::collections::BTreeSet<ResourceKey> =
            held.borrow_and_update().keys().cloned().collect();
        for key in now.difference(&before) {
            let l = &[key.source.as_str(), key.resource.as_str()];
            metrics.lease_owned.with_label_values(l).set(1);
            metrics.lease_acquisitions.with_label_values(l).inc();
        }
        for key in before.difference(&now) {
            metrics
                .lease_owned
                .with_label_values(&[key.source.as_str(), key.resource.as_str()])
                .set(0);
        }
        before = now;
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = held.changed() => if changed.is_err() { break },
        }
    }
    for key in &before {
        metrics
            .lease_owned
            .with_label_values(&[key.source.as_str(), key.resource.as_str()])
            .set(0);
    }
}

/// The failing part of a poll, as the status page names it.
fn failure_kind(e: &PollError) -> &'static str {
    match e {
        PollError::Source(SourceError::Auth { .. }) => "auth",
        PollError::Source(SourceError::Vendor { .. }) => "vendor",
        PollError::Source(SourceError::Unsupported { .. }) => "unsupported",
        PollError::Store(
            store::StoreError::LeaseLost { .. } | store::StoreError::NotLeased { .. },
        ) => "lease lost",
        PollError::Store(_) => "store",
        PollError::ReconcileGuard { .. } => "reconcile guard",
    }
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
    board: &PollBoard,
) -> Result<PollReport, PollError> {
    let trace = crate::contract::TraceContext::random();
    let span = tracing::info_span!(
        "poll",
        source = %poller.resource.source,
        resource = %poller.resource.name,
        trace_id = %trace.trace_id_hex(),
    );
    crate::telemetry::join(&span, &trace);
    async {
        let started = std::time::Instant::now();
        let result = poller.poll(&trace, stop).await;
        let (source, resource) = (&poller.resource.source, &poller.resource.name);
        match &result {
            Ok(r) => {
                metrics.poll(source, resource, &r.into(), started.elapsed().as_secs_f64());
                metrics
                    .last_success
                    .with_label_values(&[source, resource])
                    .set(poller.clock.now().timestamp());
            }
            Err(_) => metrics.poll_failed(source, resource, started.elapsed().as_secs_f64()),
        }
        let key = ResourceKey::new(source, resource);
        if let Err(PollError::Source(SourceError::Auth { .. })) = &result {
            metrics.auth_failures.with_label_values(&[source]).inc();
        }
        board.record(
            &key,
            LastPoll {
                at: poller.clock.now(),
                outcome: match &result {
                    Ok(r) if r.paused => PollOutcome::Paused,
                    Ok(_) => PollOutcome::Ok,
                    Err(e) => PollOutcome::Failed(failure_kind(e)),
                },
                records: result.as_ref().map_or(0, |r| r.records),
                changes: result
                    .as_ref()
                    .map_or(0, |r| r.created + r.updated + r.deleted),
                duration: started.elapsed(),
            },
        );
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
    /// How long a resource task that keeps dying gives its lease up.
    hold_back: Duration,
}

/// Polls while this replica holds the resource's lease (under that lease's fence); otherwise
/// waits until the lease keeper gains it. A poll that panics is logged, counted and tried
/// again after a backoff; after [`DEAD_AFTER`] in a row the task counts as dead and gives up its
/// lease for a while (until a poll completes again).
async fn resource_loop(
    poller: Arc<Poller>,
    lease: LeaseSlot,
    (interval, jitter): (Duration, Duration),
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    board: Arc<PollBoard>,
) {
    let key = ResourceKey::new(&poller.resource.source, &poller.resource.name);
    let mut held = lease.leases.subscribe();
    let mut panics = 0u32;
    let mut backoff = restart_backoff(interval);
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
        let outcome = AssertUnwindSafe(poll_logged(&poller, &stop, &metrics, &board))
            .catch_unwind()
            .await;
        lease.fenced.set_fence(None);
        let wait = match outcome {
            Ok(_) => {
                if panics >= DEAD_AFTER {
                    tracing::info!(source = %key.source, resource = %key.resource, "the resource task polls again after dying");
                    ready.poll_task_dead(false);
                }
                panics = 0;
                backoff = restart_backoff(interval);
                let extra = if jitter.is_zero() {
                    Duration::ZERO
                } else {
                    rand::rng().random_range(Duration::ZERO..jitter)
                };
                interval + extra
            }
            Err(payload) => {
                panics += 1;
                metrics.task_restarts.with_label_values(&["poll"]).inc();
                metrics
                    .polls
                    .with_label_values(&[&key.source, &key.resource, "panic"])
                    .inc();
                let wait = backoff.next().unwrap_or(interval);
                tracing::error!(
                    source = %key.source,
                    resource = %key.resource,
                    panic = %panic_text(&*payload),
                    panics_in_a_row = panics,
                    restart_in_ms = wait.as_millis() as u64,
                    "poll task panicked; polling again from the committed cursor"
                );
                if panics == DEAD_AFTER {
                    ready.poll_task_dead(true);
                }
                if panics >= DEAD_AFTER {
                    tracing::error!(
                        source = %key.source,
                        resource = %key.resource,
                        hold_back_s = lease.hold_back.as_secs(),
                        "the resource task keeps dying; giving up its lease so another replica can try"
                    );
                    lease.leases.hold_back(&key, lease.hold_back).await;
                }
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
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
