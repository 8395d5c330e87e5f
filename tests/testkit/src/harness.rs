//! A real vendor source (built by `pollbus::source::build` from a TOML configuration) polled
//! into a SQLite file and drained into a [`MemorySink`] that validates every message against
//! the schemas. The poll loop's clock is manual; HTTP and OAuth use real time.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use pollbus::clock::{Clock, ManualClock};
use pollbus::config::Config;
use pollbus::contract::TraceContext;
use pollbus::poll::{PollError, PollReport, Poller};
use pollbus::source::{self, Resource, Source, SourceContext};
use pollbus::store::sqlite::SqliteStore;
use pollbus::store::{ResourceKey, Store};

use crate::support::MemorySink;

/// Everything a vendor test needs.
pub struct VendorHarness {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sink: Arc<MemorySink>,
    pub source: Arc<dyn Source>,
    pub clock: Arc<ManualClock>,
}

impl VendorHarness {
    /// Parses `toml` (one source) and builds its source on a fresh SQLite file.
    pub async fn new(toml: &str, now: DateTime<Utc>) -> VendorHarness {
        let config = Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("config: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let store = Self::open(&dir).await;
        let clock = Arc::new(ManualClock::new(now));
        let source = Self::build(&config, &store, &clock);
        VendorHarness {
            dir,
            config,
            store,
            sink: MemorySink::new(),
            source,
            clock,
        }
    }

    fn build(config: &Config, store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Arc<dyn Source> {
        source::build(
            &config.sources[0],
            &SourceContext {
                clock: clock.clone() as Arc<dyn Clock>,
                store: store.clone(),
                metrics: None,
            },
        )
        .unwrap_or_else(|e| panic!("build: {e}"))
    }

    async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        Arc::new(SqliteStore::open(&url).await.unwrap())
    }

    /// A new process: a new store connection on the same file and a new source (no token in
    /// memory).
    pub async fn restart(&mut self) {
        self.store = Self::open(&self.dir).await;
        self.source = Self::build(&self.config, &self.store, &self.clock);
    }

    /// The runtime form of a configured resource.
    pub fn resource(&self, name: &str) -> Resource {
        let sc = &self.config.sources[0];
        let r = sc
            .resources
            .iter()
            .find(|r| r.name == name)
            .expect("configured resource");
        Resource::build(sc, r)
    }

    fn poller(&self, name: &str) -> Poller {
        Poller {
            source: self.source.clone(),
            resource: Arc::new(self.resource(name)),
            store: self.store.clone(),
            clock: self.clock.clone() as Arc<dyn Clock>,
            topic_prefix: "api.event.".into(),
            wake: Arc::new(tokio::sync::Notify::new()),
            max_outbox_rows: 100_000,
        }
    }

    /// Polls `name` once and drains the outbox into the sink.
    pub async fn try_poll(&self, name: &str) -> Result<PollReport, PollError> {
        let report = self
            .poller(name)
            .poll(&TraceContext::random(), &CancellationToken::new())
            .await;
        pollbus::outbox::Publisher::new(
            self.store.clone(),
            self.sink.clone(),
            self.config.outbox.clone(),
        )
        .drain()
        .await
        .unwrap();
        report
    }

    /// Polls `name` once; panics when the poll fails.
    pub async fn poll(&self, name: &str) -> PollReport {
        self.try_poll(name)
            .await
            .unwrap_or_else(|e| panic!("poll of {name} failed: {e}"))
    }

    /// The committed cursor of resource `name`.
    pub async fn cursor(&self, name: &str) -> Option<DateTime<Utc>> {
        let key = ResourceKey::new(&self.config.sources[0].name, name);
        self.store
            .resource_state(&key)
            .await
            .unwrap()
            .and_then(|s| s.cursor)
    }

    /// Moves the poll loop's clock.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }
}
