//! One way to poll a source in a test: a SQLite state file in a temp dir, a clock, a
//! [`MemorySink`] that validates every message against the schemas, and a
//! [`Poller`](pollbus::poll::Poller) built with `Poller::new` per poll.
//!
//! The source is either built by `pollbus::source::build` from the configuration (a real vendor
//! over HTTP: [`Harness::vendor`]) or a [`ScriptedSource`] in memory ([`Harness::scripted`]).
//! A restart opens a new store connection on the same file and, for a built source, builds a new
//! source (no token in memory), as a new process would.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use pollbus::clock::{Clock, ManualClock};
use pollbus::config::Config;
use pollbus::contract::TraceContext;
use pollbus::outbox::Publisher;
use pollbus::poll::{PollError, PollReport, Poller};
use pollbus::source::{self, Resource, Source, SourceContext};
use pollbus::store::sqlite::SqliteStore;
use pollbus::store::{ResourceKey, Store};

use crate::scripted::ScriptedSource;
use crate::sink::MemorySink;
use crate::t;

/// A source polled into a SQLite file and drained into a [`MemorySink`].
pub struct Harness<S: Source + ?Sized = dyn Source> {
    /// Holds the state file.
    pub dir: tempfile::TempDir,
    /// The parsed configuration; the first source is the one polled.
    pub config: Config,
    /// The current store connection.
    pub store: Arc<dyn Store>,
    /// The source under test.
    pub source: Arc<S>,
    /// Receives every published message.
    pub sink: Arc<MemorySink>,
    /// The poll loop's clock.
    pub clock: Arc<dyn Clock>,
    /// `source`, as the poller takes it.
    polled: Arc<dyn Source>,
    manual: Option<Arc<ManualClock>>,
}

/// Parses a test configuration, panicking with the error.
pub fn parse_config(toml: &str) -> Config {
    Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("config: {e}"))
}

fn build_source(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> Arc<dyn Source> {
    source::build(
        &config.sources[0],
        &SourceContext {
            clock: clock.clone(),
            tokens: store.clone(),
            budget: store.clone(),
            metrics: None,
        },
    )
    .unwrap_or_else(|e| panic!("build: {e}"))
}

async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    Arc::new(SqliteStore::open(&url).await.unwrap())
}

impl Harness<dyn Source> {
    /// Parses `toml` (one source) and builds its source on a fresh SQLite file; the poll
    /// loop's clock is manual and starts at `now` (HTTP and OAuth use real time).
    pub async fn vendor(toml: &str, now: DateTime<Utc>) -> Harness {
        let manual = Arc::new(ManualClock::new(now));
        Self::with_clock(parse_config(toml), manual.clone(), Some(manual)).await
    }

    /// Builds the source of `config` with the system clock.
    pub async fn vendor_system_clock(config: Config) -> Harness {
        Self::with_clock(config, Arc::new(pollbus::clock::SystemClock), None).await
    }

    /// A new process: a new store connection on the same file and a new source (no token in
    /// memory).
    pub async fn restart(&mut self) {
        self.store = open_store(&self.dir).await;
        self.source = build_source(&self.config, &self.store, &self.clock);
        self.polled = self.source.clone();
    }

    async fn with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
        manual: Option<Arc<ManualClock>>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let source = build_source(&config, &store, &clock);
        Harness {
            dir,
            config,
            store,
            polled: source.clone(),
            source,
            sink: MemorySink::new(),
            clock,
            manual,
        }
    }
}

impl Harness<ScriptedSource> {
    /// A [`ScriptedSource`] for the first source of `config`, with a manual clock at
    /// 2024-06-01T12:00:00Z.
    pub async fn scripted(config: Config) -> Harness<ScriptedSource> {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let manual = Arc::new(ManualClock::new(t("2024-06-01T12:00:00Z")));
        let source = ScriptedSource::new();
        Harness {
            dir,
            config,
            store,
            polled: source.clone(),
            source,
            sink: MemorySink::new(),
            clock: manual.clone(),
            manual: Some(manual),
        }
    }

    /// A new process: a new store connection on the same file; the scripted vendor lives on.
    pub async fn restart(&mut self) {
        self.store = open_store(&self.dir).await;
    }

    /// Polls `customers` once and drains the outbox.
    pub async fn cycle(&self) -> PollReport {
        self.poll("customers").await
    }
}

impl<S: Source + ?Sized> Harness<S> {
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

    /// A poller for resource `name` on the current store and source.
    pub fn poller(&self, name: &str) -> Poller {
        Poller::new(
            self.polled.clone(),
            Arc::new(self.resource(name)),
            self.store.clone(),
            self.clock.clone(),
            self.config.sink.topic_prefix(),
            self.config.outbox.max_rows,
        )
    }

    /// A publisher from the store into the sink, with short backoffs.
    pub fn publisher(&self) -> Publisher {
        let mut outbox = self.config.outbox.clone();
        outbox.backoff_min = Duration::from_millis(5);
        outbox.backoff_max = Duration::from_millis(20);
        Publisher::new(self.store.clone(), self.sink.clone(), outbox)
    }

    /// Polls `name` once and drains the outbox into the sink (also when the poll failed).
    pub async fn try_poll(&self, name: &str) -> Result<PollReport, PollError> {
        let report = self
            .poller(name)
            .poll(&TraceContext::random(), &CancellationToken::new())
            .await;
        self.publisher().drain().await.expect("drain succeeds");
        report
    }

    /// Polls `name` once and drains the outbox; panics when the poll fails.
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

    /// Moves the poll loop's clock; panics with the system clock.
    pub fn advance(&self, by: chrono::Duration) {
        self.manual
            .as_ref()
            .expect("a harness with a manual clock")
            .advance(by);
    }
}
