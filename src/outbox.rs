//! The outbox publisher: drains the outbox to the sink in batches, oldest first.
//!
//! - Rows are read in outbox order and grouped by topic; a partition key belongs to one topic,
//!   so per-partition-key order is the outbox order.
//! - A row is deleted only after the sink acknowledged it.
//! - A transient sink error leaves the rows in place (attempts counted) and the publisher backs
//!   off (capped exponential with jitter) before it tries again, oldest first.
//! - A message the sink rejects for good moves to the dead-letter table with the reason — never
//!   dropped; `pollbus state retry-dead` requeues it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::OutboxConfig;
use crate::contract::Message;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};
use crate::store::{OutboxRow, OutboxStore, StoreError};

/// What one drain achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Messages acknowledged by the sink.
    pub published: u64,
    /// Messages moved to the dead-letter table.
    pub dead: u64,
}

/// Why a drain stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The sink failed transiently; the rows stay in the outbox.
    #[error("sink failed, messages stay in the outbox: {0}")]
    Sink(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Drains the outbox to a sink.
pub struct Publisher {
    store: Arc<dyn OutboxStore>,
    sink: Arc<dyn Sink>,
    config: OutboxConfig,
    metrics: Option<Arc<Metrics>>,
}

impl Publisher {
    /// A publisher from `store` to `sink`.
    pub fn new(store: Arc<dyn OutboxStore>, sink: Arc<dyn Sink>, config: OutboxConfig) -> Self {
        Publisher {
            store,
            sink,
            config,
            metrics: None,
        }
    }

    /// Records published, failed and dead-lettered messages and the outbox depth in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Refreshes the outbox gauges.
    pub async fn record_depth(&self) {
        if let (Some(m), Ok(stats)) = (&self.metrics, self.store.outbox_stats().await) {
            m.outbox_depth.set(stats.depth as i64);
            let age = stats
                .oldest
                .map(|t| (chrono::Utc::now() - t).num_seconds().max(0))
                .unwrap_or(0);
            m.outbox_oldest_age.set(age);
        }
    }

    /// Publishes until the outbox is empty or the sink fails transiently.
    pub async fn drain(&self) -> Result<DrainReport, DrainError> {
        let mut report = DrainReport::default();
        loop {
            let rows = self.store.outbox_next(self.config.batch_size).await?;
            if rows.is_empty() {
                return Ok(report);
            }
            let mut by_topic: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
            for row in rows {
                by_topic
                    .entry(row.message.topic.clone())
                    .or_default()
                    .push(row);
            }
            let mut transient = None;
            for (topic, rows) in by_topic {
                match self.send(&topic, &rows, &mut report).await {
                    Ok(()) => {}
                    Err(DrainError::Sink(reason)) => transient = Some(reason),
                    Err(e) => return Err(e),
                }
            }
            if let Some(reason) = transient {
                return Err(DrainError::Sink(reason));
            }
        }
    }

    /// Sends one topic's rows; splits a batch whose bad message is unknown.
    async fn send(
        &self,
        topic: &str,
        rows: &[OutboxRow],
        report: &mut DrainReport,
    ) -> Result<(), DrainError> {
        let messages: Vec<Message> = rows.iter().map(|r| r.message.clone()).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let started = std::time::Instant::now();
        let outcome = self.sink.publish(topic, &messages).await;
        if let Some(m) = &self.metrics {
            m.publish_duration.observe(started.elapsed().as_secs_f64());
            match &outcome {
                Ok(()) => m
                    .published
                    .with_label_values(&[topic])
                    .inc_by(seqs.len() as u64),
                Err(SinkError::Transient { .. }) => m
                    .publish_failures
                    .with_label_values(&[topic])
                    .inc_by(seqs.len() as u64),
                Err(SinkError::Rejected { .. }) => {}
            }
        }
        match outcome {
            Ok(()) => {
                self.store.outbox_ack(&seqs).await?;
                report.published += seqs.len() as u64;
                tracing::debug!(topic, messages = seqs.len(), "published batch");
                Ok(())
            }
            Err(SinkError::Transient { reason }) => {
                self.store.outbox_failed(&seqs, &reason).await?;
                tracing::warn!(topic, messages = seqs.len(), %reason, "sink failed; will retry");
                Err(DrainError::Sink(format!("{topic}: {reason}")))
            }
            Err(SinkError::Rejected {
                index: Some(i),
                reason,
            }) if i < rows.len() => {
                self.dead(&rows[i], &reason).await?;
                report.dead += 1;
                Ok(()) // the rest of the batch is sent on the next round, in order
            }
            Err(SinkError::Rejected { reason, .. }) if rows.len() == 1 => {
                self.dead(&rows[0], &reason).await?;
                report.dead += 1;
                Ok(())
            }
            Err(SinkError::Rejected { .. }) => {
                for row in rows {
                    Box::pin(self.send(topic, std::slice::from_ref(row), report)).await?;
                }
                Ok(())
            }
        }
    }

    async fn dead(&self, row: &OutboxRow, reason: &str) -> Result<(), StoreError> {
        if let Some(m) = &self.metrics {
            m.dead_lettered
                .with_label_values(&[&row.message.topic])
                .inc();
        }
        tracing::error!(
            topic = %row.message.topic,
            message_id = %row.message.message_id,
            %reason,
            "sink rejected a message for good; moved to the dead-letter table (pollbus state dead)"
        );
        self.store.outbox_dead(row.seq, reason).await
    }

    /// Drains whenever `wake` is notified (and at least every second) until `stop`, backing off
    /// after failures.
    pub async fn run(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut backoff = self.backoff();
        loop {
            let drained = self.drain().await;
            self.record_depth().await;
            let wait = match drained {
                Ok(report) => {
                    if report.published + report.dead > 0 {
                        tracing::info!(
                            published = report.published,
                            dead = report.dead,
                            "outbox drained"
                        );
                    }
                    backoff = self.backoff();
                    Duration::from_secs(1)
                }
                Err(e) => {
                    let wait = backoff
                        .next()
                        .unwrap_or(self.config.backoff_max)
                        .min(self.config.backoff_max);
                    tracing::warn!(error = %e, retry_in = ?wait, "outbox publication paused");
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.backoff_min)
            .with_max_delay(self.config.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Drains until empty, retrying transient failures with backoff, for at most `grace`.
    /// Returns the rows still waiting.
    pub async fn flush(&self, grace: Duration) -> Result<u64, StoreError> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut backoff = self.backoff();
        loop {
            match self.drain().await {
                Ok(_) => return Ok(0),
                Err(DrainError::Store(e)) => return Err(e),
                Err(DrainError::Sink(reason)) => {
                    let wait = backoff
                        .next()
                        .unwrap_or(self.config.backoff_max)
                        .min(self.config.backoff_max);
                    if tokio::time::Instant::now() + wait >= deadline {
                        let left = self.store.outbox_stats().await?.depth;
                        tracing::warn!(%reason, left, "flush gave up; messages stay in the outbox");
                        return Ok(left);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
