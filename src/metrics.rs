//! Prometheus metrics, on an explicit registry passed to whoever records (no global state).
//! Counters end in `_total`; labels are bounded (source, resource, event, topic, status — never
//! a record id). Recorded per poll and per batch, not per record.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What one poll counted, as metrics records it (the poll loop's `PollReport` converts into it,
/// so this module depends on nothing else of the crate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollCounts {
    /// Records received.
    pub records: u64,
    /// Records skipped as unreadable.
    pub skipped: u64,
    /// Skipped and degraded records by reason.
    pub unreadable: Vec<(&'static str, u64)>,
    /// Updates that changed no tracked field.
    pub noop: u64,
    /// CREATE messages.
    pub created: u64,
    /// UPDATE messages.
    pub updated: u64,
    /// DELETE messages.
    pub deleted: u64,
    /// Whether polling was skipped because the outbox is full.
    pub paused: bool,
    /// Pages a resync read in this poll.
    pub resync_pages: u64,
    /// Changes a resync found that the incremental poll had missed: creates, updates, deletes.
    pub resync_repairs: [u64; 3],
    /// Whether a resync completed in this poll.
    pub resync_completed: bool,
}

/// Every metric pollbus exports.
pub struct Metrics {
    registry: Registry,
    /// Polls by outcome (`ok`, `error`, `paused`, `panic`).
    pub polls: IntCounterVec,
    /// Records received from vendors.
    pub records: IntCounterVec,
    /// Records skipped or read in part, by reason ([`RECORD_PROBLEMS`]).
    pub records_skipped: IntCounterVec,
    /// Changes detected, by event type.
    pub changes: IntCounterVec,
    /// Updates that changed no tracked field.
    pub noop_updates: IntCounterVec,
    /// Duration of one poll.
    pub poll_duration: HistogramVec,
    /// Vendor HTTP requests by status (`0` = no response).
    pub http_requests: IntCounterVec,
    /// Waits imposed by vendor rate limits.
    pub rate_limit_waits: IntCounterVec,
    /// Seconds between now and the resource's cursor.
    pub cursor_lag: IntGaugeVec,
    /// Rows waiting in the outbox.
    pub outbox_depth: IntGauge,
    /// Age of the oldest outbox row, seconds.
    pub outbox_oldest_age: IntGauge,
    /// Messages acknowledged by the sink, by topic.
    pub published: IntCounterVec,
    /// Sink failures (transient, retried), by topic.
    pub publish_failures: IntCounterVec,
    /// Messages moved to the dead-letter table, by topic.
    pub dead_lettered: IntCounterVec,
    /// 1 while a topic is paused for a topic-level problem (`reason`: `not_found`,
    /// `unauthorized`, `disabled`, `quota_exceeded`), else 0.
    pub topic_blocked: IntGaugeVec,
    /// OAuth token requests that succeeded, by source.
    pub token_refreshes: IntCounterVec,
    /// Sink batch duration.
    pub publish_duration: Histogram,
    /// 1 while running.
    pub up: IntGauge,
    /// Tasks restarted after a panic or an unexpected end, by task (`poll`, `publisher`,
    /// `leases`).
    pub task_restarts: IntCounterVec,
    /// Unix time of the resource's last successful poll.
    pub last_success: IntGaugeVec,
    /// Polls that failed to authenticate (token request refused, credentials rejected), by
    /// source.
    pub auth_failures: IntCounterVec,
    /// The configured poll interval of each resource, seconds (alerts compare the age of the
    /// last successful poll with it).
    pub poll_interval: GaugeVec,
    /// 1 while this replica holds the resource's lease, else 0.
    pub lease_owned: IntGaugeVec,
    /// Times this replica gained a resource's lease.
    pub lease_acquisitions: IntCounterVec,
    /// Rows in the dead-letter table.
    pub dead_letters: IntGauge,
    /// Pages read by resyncs.
    pub resync_pages: IntCounterVec,
    /// Changes a resync found that incremental polling had missed, by event (should stay 0).
    pub resync_repairs: IntCounterVec,
    /// Resyncs that read the whole resource.
    pub resyncs_completed: IntCounterVec,
}

/// One configured resource, as [`Metrics::declare`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The resource's name.
    pub resource: &'a str,
    /// The topic its messages go to.
    pub topic: &'a str,
    /// The poll interval, seconds.
    pub interval_seconds: f64,
}

/// Why a vendor record was skipped (`no_id`, `no_updated_date`, `bad_date`, `unparseable`) or
/// read in part (`bad_created_date`): the `reason` label of `pollbus_records_skipped_total`.
pub const RECORD_PROBLEMS: [&str; 5] = [
    "no_id",
    "no_updated_date",
    "bad_date",
    "unparseable",
    "bad_created_date",
];

/// Why the sink may block a topic (`reason` of `pollbus_topic_blocked`).
pub const TOPIC_BLOCKED_REASONS: [&str; 4] =
    ["not_found", "unauthorized", "disabled", "quota_exceeded"];

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    /// A fresh registry with every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let sr = &["source", "resource"];
        let polls = counter(
            &registry,
            "pollbus_polls_total",
            "Polls by outcome (ok, error, paused, panic).",
            &["source", "resource", "outcome"],
        );
        let records = counter(
            &registry,
            "pollbus_records_total",
            "Records received from vendors.",
            sr,
        );
        let records_skipped = counter(
            &registry,
            "pollbus_records_skipped_total",
            "Vendor records skipped or read in part, by reason (no_id, no_updated_date, bad_date, unparseable: skipped; bad_created_date: read without it).",
            &["source", "resource", "reason"],
        );
        let changes = counter(
            &registry,
            "pollbus_changes_total",
            "Changes detected and written to the outbox.",
            &["source", "resource", "event"],
        );
        let noop_updates = counter(
            &registry,
            "pollbus_noop_updates_total",
            "Updates that changed no tracked field (no message).",
            sr,
        );
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "pollbus_poll_duration_seconds",
                "Duration of one poll of a resource.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            sr,
        )
        .expect("valid metric");
        registry
            .register(Box::new(poll_duration.clone()))
            .expect("unique metric");
        let http_requests = counter(
            &registry,
            "pollbus_http_requests_total",
            "Vendor HTTP requests by status (0 = no response).",
            &["source", "status"],
        );
        let rate_limit_waits = counter(
            &registry,
            "pollbus_rate_limit_waits_total",
            "Waits imposed by vendor rate limits (Retry-After, X-RateLimit-Reset).",
            &["source"],
        );
        let cursor_lag = IntGaugeVec::new(
            Opts::new(
                "pollbus_cursor_lag_seconds",
                "Now minus the resource's cursor.",
            ),
            sr,
        )
        .expect("valid metric");
        registry
            .register(Box::new(cursor_lag.clone()))
            .expect("unique metric");
        let outbox_depth = IntGauge::new("pollbus_outbox_depth", "Rows waiting in the outbox.")
            .expect("valid metric");
        registry
            .register(Box::new(outbox_depth.clone()))
            .expect("unique metric");
        let outbox_oldest_age = IntGauge::new(
            "pollbus_outbox_oldest_age_seconds",
            "Age of the oldest outbox row.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_oldest_age.clone()))
            .expect("unique metric");
        let published = counter(
            &registry,
            "pollbus_messages_published_total",
            "Messages acknowledged by the sink.",
            &["topic"],
        );
        let publish_failures = counter(
            &registry,
            "pollbus_messages_failed_total",
            "Messages whose send failed transiently (they stay in the outbox).",
            &["topic"],
        );
        let dead_lettered = counter(
            &registry,
            "pollbus_messages_dead_lettered_total",
            "Messages the sink rejected for good (moved to the dead-letter table).",
            &["topic"],
        );
        let topic_blocked = IntGaugeVec::new(
            Opts::new(
                "pollbus_topic_blocked",
                "1 while a topic is paused for a topic-level problem (its messages wait in the outbox).",
            ),
            &["topic", "reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(topic_blocked.clone()))
            .expect("unique metric");
        let token_refreshes = counter(
            &registry,
            "pollbus_token_refreshes_total",
            "OAuth tokens obtained.",
            &["source"],
        );
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "pollbus_publish_duration_seconds",
                "Duration of one sink batch.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(publish_duration.clone()))
            .expect("unique metric");
        let up = IntGauge::new("pollbus_up", "1 while pollbus runs.").expect("valid metric");
        registry
            .register(Box::new(up.clone()))
            .expect("unique metric");
        up.set(1);
        let task_restarts = counter(
            &registry,
            "pollbus_task_restarts_total",
            "Tasks restarted after a panic or an unexpected end (poll, publisher, leases).",
            &["task"],
        );
        let last_success = IntGaugeVec::new(
            Opts::new(
                "pollbus_last_success_timestamp_seconds",
                "Unix time of the resource's last successful poll.",
            ),
            sr,
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_success.clone()))
            .expect("unique metric");
        let auth_failures = counter(
            &registry,
            "pollbus_auth_failures_total",
            "Polls that failed to authenticate with the vendor.",
            &["source"],
        );
        let poll_interval = GaugeVec::new(
            Opts::new(
                "pollbus_poll_interval_seconds",
                "The configured poll interval of the resource.",
            ),
            sr,
        )
        .expect("valid metric");
        registry
            .register(Box::new(poll_interval.clone()))
            .expect("unique metric");
        let lease_owned = gauge_vec(
            &registry,
            "pollbus_lease_owned",
            "1 while this replica holds the resource's lease.",
            sr,
        );
        let lease_acquisitions = counter(
            &registry,
            "pollbus_lease_acquisitions_total",
            "Times this replica gained the resource's lease.",
            sr,
        );
        let dead_letters = IntGauge::new(
            "pollbus_dead_letters",
            "Rows in the dead-letter table (see `pollbus dlq`).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(dead_letters.clone()))
            .expect("unique metric");
        let resync_pages = counter(
            &registry,
            "pollbus_resync_pages_total",
            "Pages read by anti-entropy resyncs (resync_interval, pollbus resync).",
            sr,
        );
        let resync_repairs = counter(
            &registry,
            "pollbus_resync_repairs_total",
            "Changes a resync found that incremental polling had missed (create, update, delete); should stay 0.",
            &["source", "resource", "event"],
        );
        let resyncs_completed = counter(
            &registry,
            "pollbus_resyncs_completed_total",
            "Resyncs that read the whole resource.",
            sr,
        );
        Metrics {
            registry,
            polls,
            records,
            records_skipped,
            changes,
            noop_updates,
            poll_duration,
            http_requests,
            rate_limit_waits,
            cursor_lag,
            outbox_depth,
            outbox_oldest_age,
            published,
            publish_failures,
            dead_lettered,
            topic_blocked,
            token_refreshes,
            publish_duration,
            up,
            task_restarts,
            last_success,
            auth_failures,
            poll_interval,
            lease_owned,
            lease_acquisitions,
            dead_letters,
            resync_pages,
            resync_repairs,
            resyncs_completed,
        }
    }

    /// Declares every configured resource: sets its poll interval and creates its per-source,
    /// per-resource and per-topic series at zero, so rates and alerts see them before the
    /// first event (a counter that appears only at its first increment hides that increment
    /// from `increase()`).
    pub fn declare(&self, resources: &[Declared<'_>]) {
        for r in resources {
            let l = &[r.source, r.resource];
            self.poll_interval
                .with_label_values(l)
                .set(r.interval_seconds);
            for outcome in ["ok", "error", "paused"] {
                self.polls
                    .with_label_values(&[r.source, r.resource, outcome]);
            }
            for event in ["create", "update", "delete"] {
                self.changes
                    .with_label_values(&[r.source, r.resource, event]);
            }
            self.records.with_label_values(l);
            for reason in RECORD_PROBLEMS {
                self.records_skipped
                    .with_label_values(&[r.source, r.resource, reason]);
            }
            self.noop_updates.with_label_values(l);
            self.resync_pages.with_label_values(l);
            self.resyncs_completed.with_label_values(l);
            for event in ["create", "update", "delete"] {
                self.resync_repairs
                    .with_label_values(&[r.source, r.resource, event]);
            }
            self.lease_owned.with_label_values(l);
            self.lease_acquisitions.with_label_values(l);
            self.rate_limit_waits.with_label_values(&[r.source]);
            self.token_refreshes.with_label_values(&[r.source]);
            self.auth_failures.with_label_values(&[r.source]);
            self.published.with_label_values(&[r.topic]);
            self.publish_failures.with_label_values(&[r.topic]);
            self.dead_lettered.with_label_values(&[r.topic]);
            for reason in TOPIC_BLOCKED_REASONS {
                self.topic_blocked.with_label_values(&[r.topic, reason]);
            }
        }
    }

    /// Records one poll's report.
    pub fn poll(&self, source: &str, resource: &str, report: &PollCounts, seconds: f64) {
        let l = &[source, resource];
        let outcome = if report.paused { "paused" } else { "ok" };
        self.polls
            .with_label_values(&[source, resource, outcome])
            .inc();
        self.records.with_label_values(l).inc_by(report.records);
        for (reason, n) in &report.unreadable {
            self.records_skipped
                .with_label_values(&[source, resource, reason])
                .inc_by(*n);
        }
        self.noop_updates.with_label_values(l).inc_by(report.noop);
        for (event, n) in [
            ("create", report.created),
            ("update", report.updated),
            ("delete", report.deleted),
        ] {
            self.changes
                .with_label_values(&[source, resource, event])
                .inc_by(n);
        }
        self.poll_duration.with_label_values(l).observe(seconds);
        self.resync_pages
            .with_label_values(l)
            .inc_by(report.resync_pages);
        for (event, n) in ["create", "update", "delete"]
            .into_iter()
            .zip(report.resync_repairs)
        {
            self.resync_repairs
                .with_label_values(&[source, resource, event])
                .inc_by(n);
        }
        if report.resync_completed {
            self.resyncs_completed.with_label_values(l).inc();
        }
    }

    /// Records a failed poll.
    pub fn poll_failed(&self, source: &str, resource: &str, seconds: f64) {
        self.polls
            .with_label_values(&[source, resource, "error"])
            .inc();
        self.poll_duration
            .with_label_values(&[source, resource])
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8 exposition")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_total_suffix_and_bounded_labels() {
        let m = Metrics::new();
        let report = PollCounts {
            records: 5,
            created: 2,
            updated: 1,
            resync_pages: 3,
            resync_repairs: [0, 1, 2],
            resync_completed: true,
            ..Default::default()
        };
        m.poll("crm", "customers", &report, 0.2);
        m.http_requests.with_label_values(&["crm", "200"]).inc();
        let text = m.render();
        assert!(
            text.contains(
                "pollbus_changes_total{event=\"create\",resource=\"customers\",source=\"crm\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("pollbus_records_total{resource=\"customers\",source=\"crm\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("pollbus_http_requests_total{source=\"crm\",status=\"200\"} 1"),
            "{text}"
        );
        for line in [
            "pollbus_resync_pages_total{resource=\"customers\",source=\"crm\"} 3",
            "pollbus_resync_repairs_total{event=\"delete\",resource=\"customers\",source=\"crm\"} 2",
            "pollbus_resync_repairs_total{event=\"update\",resource=\"customers\",source=\"crm\"} 1",
            "pollbus_resyncs_completed_total{resource=\"customers\",source=\"crm\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for line in text
            .lines()
            .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
        {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}
