//! The outbox publisher: drains the outbox to the sink in batches, per topic, oldest first.
//!
//! - The outbox is read **per topic** (the topics with waiting rows, then each topic's oldest
//!   rows); a partition key belongs to one topic, so per-partition-key order is the outbox order,
//!   and one topic's rows can never fill the batch window of another.
//! - A row is deleted only after the sink acknowledged it.
//! - A transient sink error leaves the rows in place (attempts counted) and the publisher backs
//!   off (capped exponential with jitter, at least the broker's suggested wait) before it tries
//!   again, oldest first.
//! - A topic-level problem ([`SinkError::Blocked`]: the topic is missing, refuses us, is
//!   disabled or full) **pauses that topic**: its rows stay in the outbox, it is retried with its
//!   own capped backoff, `pollbus_topic_blocked{topic,reason}` is 1 and an ERROR says what to
//!   fix. Other topics keep flowing.
//! - A message the sink rejects for good moves to the dead-letter table with the reason — never
//!   dropped; `pollbus state retry-dead` requeues it in its original place.
//! - **Poison messages**: a batch that failed transiently twice is sent one message at a time;
//!   a message that keeps failing while others are accepted moves to the dead-letter table
//!   after `outbox.max_attempts` failures, and the messages behind it continue (those of its
//!   partition key wait behind it until then, keeping their order). During a broker outage
//!   nothing is accepted, so nothing is dead-lettered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::OutboxConfig;
use crate::contract::Message;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, TopicBlock};
use crate::store::{OutboxRow, OutboxStore, StoreError};

/// What one drain achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Messages acknowledged by the sink.
    pub published: u64,
    /// Messages moved to the dead-letter table.
    pub dead: u64,
    /// Topics paused for a topic-level problem after this drain, with why.
    pub blocked: Vec<(String, TopicBlock)>,
}

/// Why a drain stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The sink failed transiently; the rows stay in the outbox.
    #[error("sink failed, messages stay in the outbox: {reason}")]
    Sink {
        /// What failed, naming the topic.
        reason: String,
        /// The broker's suggested wait (server-busy), when it gave one.
        retry_after: Option<Duration>,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A topic paused for a topic-level problem.
struct Pause {
    block: TopicBlock,
    until: Instant,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
}

/// Drains the outbox to a sink.
pub struct Publisher {
    store: Arc<dyn OutboxStore>,
    sink: Arc<dyn Sink>,
    config: OutboxConfig,
    metrics: Option<Arc<Metrics>>,
    paused: Mutex<HashMap<String, Pause>>,
    /// Messages the sink accepted since this publisher started.
    accepted: std::sync::atomic::AtomicU64,
    /// Per outbox seq: failures of that message alone that came after other messages had been
    /// accepted since its previous failure (see [`Publisher::strike`]).
    strikes: Mutex<HashMap<i64, Strike>>,
}

/// The poison count of one message.
#[derive(Debug, Clone, Copy, Default)]
struct Strike {
    /// [`Publisher::accepted`] at its last failure.
    accepted_then: u64,
    /// Failures that counted.
    count: u32,
}

impl Publisher {
    /// A publisher from `store` to `sink`.
    pub fn new(store: Arc<dyn OutboxStore>, sink: Arc<dyn Sink>, config: OutboxConfig) -> Self {
        Publisher {
            store,
            sink,
            config,
            metrics: None,
            paused: Mutex::new(HashMap::new()),
            accepted: std::sync::atomic::AtomicU64::new(0),
            strikes: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one failure of message `seq` sent alone; returns its strikes: failures that
    /// came after the sink had accepted other messages since the previous one. During a broker
    /// outage nothing is accepted, so strikes do not grow and nothing is taken for poison.
    fn strike(&self, seq: i64) -> u32 {
        let accepted = self.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        let s = strikes.entry(seq).or_insert(Strike {
            accepted_then: accepted,
            count: 1,
        });
        if accepted > s.accepted_then {
            s.count += 1;
            s.accepted_then = accepted;
        }
        s.count
    }

    fn accepted(&self, seqs: &[i64]) {
        self.accepted
            .fetch_add(seqs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        if !strikes.is_empty() {
            for seq in seqs {
                strikes.remove(seq);
            }
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
            m.dead_letters.set(stats.dead as i64);
        }
    }

    /// Topics paused now for a topic-level problem, with why.
    pub fn blocked_topics(&self) -> Vec<(String, TopicBlock)> {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = paused.iter().map(|(t, p)| (t.clone(), p.block)).collect();
        out.sort();
        out
    }

    /// Whether `topic` is paused until later than `now`.
    fn is_paused(&self, topic: &str, now: Instant) -> bool {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused.get(topic).is_some_and(|p| p.until > now)
    }

    /// Pauses `topic` (or extends its pause) after a topic-level problem.
    fn pause(&self, topic: &str, block: TopicBlock, reason: &str) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let pause = paused.entry(topic.to_string()).or_insert_with(|| Pause {
            block,
            until: Instant::now(),
            backoff: Box::new(self.backoff()),
        });
        let previous = pause.block;
        pause.block = block;
        let wait = pause
            .backoff
            .next()
            .unwrap_or(self.config.backoff_max)
            .min(self.config.backoff_max);
        pause.until = Instant::now() + wait;
        if let Some(m) = &self.metrics {
            if previous != block {
                let _ = m
                    .topic_blocked
                    .remove_label_values(&[topic, previous.label()]);
            }
            m.topic_blocked
                .with_label_values(&[topic, block.label()])
                .set(1);
        }
        tracing::error!(
            topic,
            reason = block.label(),
            retry_in = ?wait,
            error = %reason,
            "topic paused; its messages wait in the outbox until it is fixed: {}",
            block.fix()
        );
    }

    /// Ends `topic`'s pause after a successful send.
    fn resume(&self, topic: &str) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pause) = paused.remove(topic) {
            if let Some(m) = &self.metrics {
                m.topic_blocked
                    .with_label_values(&[topic, pause.block.label()])
                    .set(0);
            }
            tracing::info!(topic, "topic accepts messages again; resumed");
        }
    }

    /// Publishes until every topic that is not paused is empty, or the sink fails
    /// transiently. Paused topics are skipped until their backoff ends, then tried again.
    pub async fn drain(&self) -> Result<DrainReport, DrainError> {
        let mut report = DrainReport::default();
        loop {
            let now = Instant::now();
            let topics: Vec<String> = self
                .store
                .outbox_topics()
                .await?
                .into_iter()
                .filter(|t| !self.is_paused(t, now))
                .collect();
            let mut progressed = false;
            let mut transient = None;
            for topic in topics {
                let rows = self
                    .store
                    .outbox_next_in(&topic, self.config.batch_size)
                    .await?;
                if rows.is_empty() {
                    continue; // claimed by another replica
                }
                match self.send(&topic, &rows, &mut report).await {
                    Ok(()) => {
                        progressed = true;
                        self.resume(&topic);
                    }
                    Err(SendError::Blocked { block, reason }) => self.pause(&topic, block, &reason),
                    Err(SendError::Drain(DrainError::Sink {
                        reason,
                        retry_after,
                    })) => {
                        let longest = match &transient {
                            Some((_, Some(w))) => retry_after.max(Some(*w)),
                            _ => retry_after,
                        };
                        transient = Some((reason, longest));
                    }
                    Err(SendError::Drain(e)) => return Err(e),
                }
            }
            if let Some((reason, retry_after)) = transient {
                report.blocked = self.blocked_topics();
                return Err(DrainError::Sink {
                    reason,
                    retry_after,
                });
            }
            if !progressed {
                report.blocked = self.blocked_topics();
                return Ok(report);
            }
        }
    }

    /// Sends one topic's rows; splits a batch whose bad message is unknown.
    async fn send(
        &self,
        topic: &str,
        rows: &[OutboxRow],
        report: &mut DrainReport,
    ) -> Result<(), SendError> {
        let messages: Vec<Message> = rows.iter().map(|r| r.message.clone()).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let started = std::time::Instant::now();
        let span = tracing::info_span!("publish", topic, messages = messages.len());
        crate::telemetry::join_batch(&span, &messages);
        let outcome = {
            use tracing::Instrument;
            self.sink.publish(topic, &messages).instrument(span).await
        };
        if let Some(m) = &self.metrics {
            m.publish_duration.observe(started.elapsed().as_secs_f64());
            match &outcome {
                Ok(()) => m
                    .published
                    .with_label_values(&[topic])
                    .inc_by(seqs.len() as u64),
                Err(SinkError::Transient { .. } | SinkError::Blocked { .. }) => m
                    .publish_failures
                    .with_label_values(&[topic])
                    .inc_by(seqs.len() as u64),
                Err(SinkError::Rejected { .. }) => {}
            }
        }
        match outcome {
            Ok(()) => {
                self.store.outbox_ack(&seqs).await.map_err(drain_store)?;
                self.accepted(&seqs);
                report.published += seqs.len() as u64;
                tracing::debug!(topic, messages = seqs.len(), "published batch");
                Ok(())
            }
            Err(SinkError::Transient {
                reason,
                retry_after,
            }) => {
                self.store
                    .outbox_failed(&seqs, &reason)
                    .await
                    .map_err(drain_store)?;
                tracing::warn!(topic, messages = seqs.len(), %reason, "sink failed; will retry");
                if rows.len() > 1 && rows[0].attempts + 1 >= ISOLATE_AFTER {
                    // The same batch keeps failing: find out whether one message is to blame.
                    return self.send_one_by_one(topic, rows, report).await;
                }
                if rows.len() == 1 && self.strike(rows[0].seq) >= self.config.max_attempts {
                    self.poison(&rows[0], &reason).await.map_err(drain_store)?;
                    report.dead += 1;
                    return Ok(());
                }
                Err(SendError::Drain(DrainError::Sink {
                    reason: format!("{topic}: {reason}"),
                    retry_after,
                }))
            }
            Err(SinkError::Blocked { block, reason }) => {
                self.store
                    .outbox_failed(&seqs, &reason)
                    .await
                    .map_err(drain_store)?;
                Err(SendError::Blocked { block, reason })
            }
            Err(SinkError::Rejected {
                index: Some(i),
                reason,
            }) if i < rows.len() => {
                self.dead(&rows[i], &reason).await.map_err(drain_store)?;
                report.dead += 1;
                Ok(()) // the rest of the batch is sent on the next round, in order
            }
            Err(SinkError::Rejected { reason, .. }) if rows.len() == 1 => {
                self.dead(&rows[0], &reason).await.map_err(drain_store)?;
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

    /// Sends `rows` one message at a time after their batch failed repeatedly, so a message the
    /// broker keeps refusing cannot hold up the others. Rows behind a failed one with the same
    /// partition key wait (order per key); a failed message that has now failed
    /// `outbox.max_attempts` times while others were accepted is poison and moves to the
    /// dead-letter table. Fails (transiently) when a message failed and stays.
    async fn send_one_by_one(
        &self,
        topic: &str,
        rows: &[OutboxRow],
        report: &mut DrainReport,
    ) -> Result<(), SendError> {
        let mut stuck: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut failed: Vec<(&OutboxRow, String, Option<Duration>)> = Vec::new();
        // Each message alone: `strike` is taken after the round, once others had their turn.
        for row in rows {
            if stuck.contains(row.message.session_id.as_str()) {
                continue;
            }
            let outcome = self
                .sink
                .publish(topic, std::slice::from_ref(&row.message))
                .await;
            if let Some(m) = &self.metrics {
                match &outcome {
                    Ok(()) => m.published.with_label_values(&[topic]).inc(),
                    Err(SinkError::Transient { .. } | SinkError::Blocked { .. }) => {
                        m.publish_failures.with_label_values(&[topic]).inc()
                    }
                    Err(SinkError::Rejected { .. }) => {}
                }
            }
            match outcome {
                Ok(()) => {
                    self.store
                        .outbox_ack(&[row.seq])
                        .await
                        .map_err(drain_store)?;
                    self.accepted(&[row.seq]);
                    report.published += 1;
                }
                Err(SinkError::Transient {
                    reason,
                    retry_after,
                }) => {
                    self.store
                        .outbox_failed(&[row.seq], &reason)
                        .await
                        .map_err(drain_store)?;
                    stuck.insert(row.message.session_id.as_str());
                    failed.push((row, reason, retry_after));
                }
                Err(SinkError::Blocked { block, reason }) => {
                    return Err(SendError::Blocked { block, reason })
                }
                Err(SinkError::Rejected { reason, .. }) => {
                    self.dead(row, &reason).await.map_err(drain_store)?;
                    report.dead += 1;
                }
            }
        }
        let mut waiting = None;
        for (row, reason, retry_after) in failed {
            if self.strike(row.seq) >= self.config.max_attempts {
                self.poison(row, &reason).await.map_err(drain_store)?;
                report.dead += 1;
            } else if waiting.is_none() {
                waiting = Some((reason, retry_after));
            }
        }
        match waiting {
            None => Ok(()),
            Some((reason, retry_after)) => Err(SendError::Drain(DrainError::Sink {
                reason: format!("{topic}: {reason}"),
                retry_after,
            })),
        }
    }

    /// Moves a message that failed `outbox.max_attempts` times while others were accepted to
    /// the dead-letter table, naming the count and the last error.
    async fn poison(&self, row: &OutboxRow, last_error: &str) -> Result<(), StoreError> {
        let reason = format!(
            "failed {} times while other messages were accepted (outbox.max_attempts); last error: {last_error}",
            self.config.max_attempts
        );
        self.strikes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&row.seq);
        self.dead(row, &reason).await
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
                    let wait = self.next_wait(&mut backoff, &e);
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

    /// The wait after a failed drain: the next backoff step, at least the broker's suggested
    /// wait, never above `backoff_max`.
    fn next_wait(
        &self,
        backoff: &mut impl Iterator<Item = Duration>,
        error: &DrainError,
    ) -> Duration {
        let step = backoff.next().unwrap_or(self.config.backoff_max);
        let asked = match error {
            DrainError::Sink {
                retry_after: Some(w),
                ..
            } => *w,
            _ => Duration::ZERO,
        };
        step.max(asked).min(self.config.backoff_max)
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.backoff_min)
            .with_max_delay(self.config.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Drains until empty, retrying transient failures with backoff, for at most `grace`.
    /// Returns the rows still waiting (those of paused topics included).
    pub async fn flush(&self, grace: Duration) -> Result<u64, StoreError> {
        let deadline = Instant::now() + grace;
        let mut backoff = self.backoff();
        loop {
            match self.drain().await {
                Ok(report) => {
                    let left = self.store.outbox_stats().await?.depth;
                    if left > 0 {
                        tracing::warn!(left, blocked = ?report.blocked, "flush left the rows of paused topics in the outbox");
                    }
                    return Ok(left);
                }
                Err(DrainError::Store(e)) => return Err(e),
                Err(e) => {
                    let wait = self.next_wait(&mut backoff, &e);
                    if Instant::now() + wait >= deadline {
                        let left = self.store.outbox_stats().await?.depth;
                        tracing::warn!(error = %e, left, "flush gave up; messages stay in the outbox");
                        return Ok(left);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Failed attempts of a batch after which its messages are sent one at a time, to find a
/// message the broker keeps refusing (see [`Publisher::send_one_by_one`]).
const ISOLATE_AFTER: u32 = 2;

/// Why one topic's send did not complete.
enum SendError {
    /// The topic has a topic-level problem.
    Blocked { block: TopicBlock, reason: String },
    /// A transient failure or a store failure.
    Drain(DrainError),
}

fn drain_store(e: StoreError) -> SendError {
    SendError::Drain(DrainError::Store(e))
}
