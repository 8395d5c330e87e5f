//! `pollbus replay`: publish again the current state of every record of one resource updated in
//! a window, for a subscriber that lost messages ("send again everything that changed since
//! Tuesday 10:00").
//!
//! **What is sent.** The vendor is read the way a poll reads it — pages of records updated at or
//! after `--since`, through the same source, request budget and OAuth tokens — and every record
//! updated in the window (`since <= updated < until`, checked on each record) becomes an UPDATE
//! listing every tracked field with its current value ([`crate::detect::Detector::replay`]; the
//! contract has no snapshot event). Each message carries [`REPLAY`] = the replay's id and, for
//! a replay meant for one subscription, [`REPLAY_FOR`] = its name; the other subscriptions of
//! the topic ignore it with [`REPLAY_RULE`]. Ordered sources stop at the first page that lies
//! wholly after `until`; unordered ones are read to the end.
//!
//! **Idempotent.** The replay id is a hash of the request as given (the resource, `since`,
//! `until` — or its absence, never "now" — and `for`), so the same command gets the same id;
//! a message's version is `<replay id>|<record version>` (the record's updated date and
//! fingerprint), so its MessageId depends only on the replay and the record's state: running
//! the same replay again within the topic's duplicate-detection window sends nothing twice,
//! while a record changed since is sent in its new state. The MessageIds differ from the
//! original change messages', which the topic may have seen.
//!
//! **Untouched state.** A replay writes no snapshot and no cursor: polling goes on as if it
//! had not happened. Its messages go through the outbox ([`OutboxQueue`], one transaction per
//! page), so a broker outage loses none; `pollbus replay` publishes them itself, or leaves them
//! to the daemon holding the state file.
//!
//! A record updated while the replay reads may be read twice (before and after the change):
//! both copies are sent, the older first (same partition key, outbox order), so the subscriber
//! ends on the current state.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{Config, ResourceLookupError};
use crate::contract::{format_timestamp, Message, MessageContext, TraceContext};
use crate::outbox::Publisher;
use crate::record::SourceRecord;
use crate::source::{Resource, Source, SourceError};
use crate::store::{PageCommit, PageStore, ResourceKey, StoreError};

pub use crate::contract::{REPLAY, REPLAY_FOR};

/// The SQL filter the *other* subscriptions of a topic use (as their rule, or combined by
/// `AND` with the one they have) so they ignore replays meant for someone else; `{subscription}`
/// is the subscription's own name. Replays without `--for`, and every ordinary message, pass.
pub const REPLAY_RULE: &str =
    "NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = '{subscription}'";

/// [`REPLAY_RULE`] for the subscription `subscription`.
pub fn replay_rule(subscription: &str) -> String {
    REPLAY_RULE.replace("{subscription}", subscription)
}

/// Longest subscription name Service Bus accepts.
const MAX_SUBSCRIPTION_CHARS: usize = 50;

/// How long a replay waits for a running daemon to publish from a full outbox before it stops.
const QUEUE_STALL: Duration = Duration::from_secs(60);

/// Why a replay could not be made or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `--since` or `--until` is not a time pollbus reads.
    #[error("--{flag} {value:?}: {problem}")]
    BadTime {
        /// `since` or `until`.
        flag: &'static str,
        /// The text given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The window is empty or lies in the future.
    #[error("{0}")]
    BadWindow(String),
    /// `--for` is not a subscription name Service Bus accepts.
    #[error("--for {value:?}: {problem}")]
    BadSubscription {
        /// The text given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--resource` names no single configured resource.
    #[error(transparent)]
    Resource(#[from] ResourceLookupError),
    /// The vendor failed; pages already queued stay in the outbox.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The topic's outbox stayed full: the sink takes nothing.
    #[error("the outbox holds {depth} messages for {topic} (outbox.max_rows {max_rows}) and the sink is not taking them; the replay stopped after queueing {queued} messages, which stay in the outbox — run the same replay again once the sink is back (what was sent already is dropped by duplicate detection)")]
    OutboxFull {
        /// The topic.
        topic: String,
        /// Its rows waiting.
        depth: u64,
        /// `outbox.max_rows`.
        max_rows: u64,
        /// Messages this replay queued before it stopped.
        queued: u64,
    },
}

impl ReplayError {
    /// Whether the request itself is wrong (exit 64), rather than the run failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReplayError::BadTime { .. }
                | ReplayError::BadWindow(_)
                | ReplayError::BadSubscription { .. }
                | ReplayError::Resource(_)
        )
    }
}

/// Reads a `--since`/`--until` value: RFC 3339 with a zone (`2024-05-07T10:00:00Z`,
/// `2024-05-07T10:00:00+02:00`, `2024-05-07 10:00+02:00`; seconds and their fraction optional).
/// A time without a zone is refused: which 10:00 was meant is not pollbus's guess.
pub fn parse_time(flag: &'static str, text: &str) -> Result<DateTime<Utc>, ReplayError> {
    let bad = |problem: String| ReplayError::BadTime {
        flag,
        value: text.to_string(),
        problem,
    };
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z"] {
        if let Ok(at) = DateTime::parse_from_str(t, format) {
            return Ok(at.with_timezone(&Utc));
        }
    }
    let zoneless = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .any(|f| NaiveDateTime::parse_from_str(t, f).is_ok())
        || NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok();
    if zoneless {
        return Err(bad(
            "the time has no zone: add Z for UTC or an offset such as +02:00 (e.g. 2024-05-07T10:00:00+02:00)".into(),
        ));
    }
    Err(bad(
        "not a time: use RFC 3339 with a zone, e.g. 2024-05-07T10:00:00Z or 2024-05-07T10:00:00+02:00".into(),
    ))
}

/// Checks a `--for` value: a Service Bus subscription name (1–50 letters, digits, `.`, `-`, `_`,
/// starting and ending with a letter or digit), so it also sits safely in the SQL rule's quotes.
fn check_subscription(name: &str) -> Result<(), ReplayError> {
    let bad = |problem: &str| ReplayError::BadSubscription {
        value: name.to_string(),
        problem: problem.to_string(),
    };
    if name.is_empty() || name.chars().count() > MAX_SUBSCRIPTION_CHARS {
        return Err(bad("a subscription name has 1 to 50 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad(
            "a subscription name has only letters, digits, '.', '-' and '_'",
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err(bad(
            "a subscription name starts and ends with a letter or digit",
        ));
    }
    Ok(())
}

/// What to replay: one resource, a window of updated dates, and optionally the subscription it
/// is meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The source's name.
    pub source: String,
    /// The resource's name.
    pub resource: String,
    /// Records updated at or after this instant.
    pub since: DateTime<Utc>,
    /// …and before this one; `None`: no end.
    pub until: Option<DateTime<Utc>>,
    /// The subscription the replay is meant for (`pollbus-replay-for`).
    pub target: Option<String>,
}

impl ReplayRequest {
    /// Reads a request as given on the command line (`--resource`, `--since`, `--until`,
    /// `--for`) against `config`; `now` refuses a window that starts in the future.
    pub fn parse(
        config: &Config,
        resource: &str,
        since: &str,
        until: Option<&str>,
        target: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ReplayRequest, ReplayError> {
        let (source, resource_config) = config.resource_named(resource)?;
        let since = parse_time("since", since)?;
        let until = until.map(|u| parse_time("until", u)).transpose()?;
        if let Some(until) = until.filter(|u| *u <= since) {
            return Err(ReplayError::BadWindow(format!(
                "--until {} is not after --since {}: the window is empty",
                format_timestamp(until),
                format_timestamp(since)
            )));
        }
        if since > now {
            return Err(ReplayError::BadWindow(format!(
                "--since {} is in the future (now is {}): nothing was updated then yet",
                format_timestamp(since),
                format_timestamp(now)
            )));
        }
        if let Some(t) = target {
            check_subscription(t)?;
        }
        Ok(ReplayRequest {
            source: source.name.clone(),
            resource: resource_config.name.clone(),
            since,
            until,
            target: target.map(str::to_string),
        })
    }

    /// The replay's id: 16 hex digits of SHA-256 over the request (resource, `since`, `until`
    /// or its absence, `for`), so the same request always has the same id, whatever the
    /// spelling of its instants (`10:00+02:00` is `08:00Z`) and whenever it runs.
    pub fn id(&self) -> String {
        let instant = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let until = self.until.map(instant).unwrap_or_default();
        let mut h = Sha256::new();
        for part in [
            "pollbus-replay/1",
            self.source.as_str(),
            self.resource.as_str(),
            instant(self.since).as_str(),
            until.as_str(),
            self.target.as_deref().unwrap_or_default(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..8])
    }

    /// `source/resource`.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.source, &self.resource)
    }

    /// Whether the record was updated in the window. A local time that a DST fold makes
    /// ambiguous counts when either of its instants is in it.
    pub fn covers(&self, record: &SourceRecord) -> bool {
        let inside = |t: DateTime<Utc>| t >= self.since && self.until.is_none_or(|until| t < until);
        inside(record.updated) || record.updated_later.is_some_and(inside)
    }

    /// The properties every message of the replay carries: [`REPLAY`] and, with a target,
    /// [`REPLAY_FOR`].
    pub fn marks(&self) -> Vec<(&'static str, String)> {
        let mut marks = vec![(REPLAY, self.id())];
        if let Some(t) = &self.target {
            marks.push((REPLAY_FOR, t.clone()));
        }
        marks
    }
}

impl fmt::Display for ReplayRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}, records updated from {} ",
            self.source,
            self.resource,
            format_timestamp(self.since)
        )?;
        match self.until {
            Some(until) => write!(f, "until {} (excluded)", format_timestamp(until))?,
            None => write!(f, "on (no end)")?,
        }
        match &self.target {
            Some(t) => write!(f, ", for subscription {t:?}"),
            None => write!(f, ", for every subscription"),
        }
    }
}

/// The message version of a record's version in replay `id`: `<id>|<record version>`.
pub fn replay_version(id: &str, record_version: &str) -> String {
    format!("{id}|{record_version}")
}

/// What a replay read and sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Pages fetched.
    pub pages: u64,
    /// Requests sent to the vendor.
    pub requests: u64,
    /// Records received.
    pub records: u64,
    /// Records received that were updated outside the window.
    pub outside: u64,
    /// Records skipped as unreadable (missing id or date, bad date…).
    pub skipped: u64,
    /// Records left to a configured child resource (parent/child de-duplication).
    pub delegated: u64,
    /// Messages made: one per record updated in the window.
    pub messages: u64,
    /// Whether an ordered source's listing was left at the first page past `until`.
    pub stopped_at_until: bool,
}

/// Where a replay's messages go, a page at a time, in order.
#[async_trait]
pub trait ReplayOutput: Send {
    /// Takes one page's messages.
    async fn page(&mut self, messages: Vec<Message>) -> Result<(), ReplayError>;
}

/// `--dry-run`: counts the messages and keeps the first few; queues and sends nothing.
#[derive(Debug, Default)]
pub struct Preview {
    /// Messages the replay would send.
    pub messages: u64,
    /// The first of them.
    pub sample: Vec<Message>,
    keep: usize,
}

impl Preview {
    /// A preview keeping the first `keep` messages.
    pub fn new(keep: usize) -> Preview {
        Preview {
            keep,
            ..Preview::default()
        }
    }
}

#[async_trait]
impl ReplayOutput for Preview {
    async fn page(&mut self, messages: Vec<Message>) -> Result<(), ReplayError> {
        self.messages += messages.len() as u64;
        let room = self.keep.saturating_sub(self.sample.len());
        self.sample.extend(messages.into_iter().take(room));
        Ok(())
    }
}

/// Queues each page's messages in the outbox, in one transaction (no snapshot, no cursor).
/// While the topic holds `outbox.max_rows` rows it makes room first: with a publisher, by
/// publishing (for up to `grace`); without one (the daemon holding the state file publishes),
/// by waiting for the daemon while it makes progress. A topic that stays full stops the replay
/// with [`ReplayError::OutboxFull`].
pub struct OutboxQueue {
    store: Arc<dyn PageStore>,
    key: ResourceKey,
    topic: String,
    max_rows: u64,
    publisher: Option<Arc<Publisher>>,
    grace: Duration,
    clock: Arc<dyn Clock>,
    /// Messages queued so far.
    pub queued: u64,
}

impl OutboxQueue {
    /// A queue into `store` for `topic` of resource `key`, pausing at `max_rows` rows; with a
    /// `publisher`, a full topic is published (for up to `grace`) before the replay goes on.
    pub fn new(
        store: Arc<dyn PageStore>,
        key: ResourceKey,
        topic: String,
        max_rows: u64,
        publisher: Option<Arc<Publisher>>,
        grace: Duration,
        clock: Arc<dyn Clock>,
    ) -> OutboxQueue {
        OutboxQueue {
            store,
            key,
            topic,
            max_rows,
            publisher,
            grace,
            clock,
            queued: 0,
        }
    }

    async fn make_room(&self) -> Result<(), ReplayError> {
        let mut depth = self.store.outbox_depth_in(&self.topic).await?;
        if depth < self.max_rows {
            return Ok(());
        }
        tracing::info!(
            topic = %self.topic,
            depth,
            max_rows = self.max_rows,
            "the topic's outbox is full; the replay waits for it to be published"
        );
        match &self.publisher {
            Some(publisher) => {
                publisher.flush(self.grace).await?;
                depth = self.store.outbox_depth_in(&self.topic).await?;
            }
            None => {
                let mut lowest = depth;
                let mut progress = tokio::time::Instant::now();
                while depth >= self.max_rows && progress.elapsed() < QUEUE_STALL {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    depth = self.store.outbox_depth_in(&self.topic).await?;
                    if depth < lowest {
                        lowest = depth;
                        progress = tokio::time::Instant::now();
                    }
                }
            }
        }
        if depth < self.max_rows {
            return Ok(());
        }
        Err(ReplayError::OutboxFull {
            topic: self.topic.clone(),
            depth,
            max_rows: self.max_rows,
            queued: self.queued,
        })
    }
}

#[async_trait]
impl ReplayOutput for OutboxQueue {
    async fn page(&mut self, messages: Vec<Message>) -> Result<(), ReplayError> {
        self.make_room().await?;
        let n = messages.len() as u64;
        let commit = PageCommit {
            at: self.clock.now(),
            messages,
            ..PageCommit::default()
        };
        self.store.commit_page(&self.key, commit).await?;
        self.queued += n;
        Ok(())
    }
}

/// Reads a resource's records updated in a window and makes their replay messages.
pub struct Replayer {
    source: Arc<dyn Source>,
    resource: Arc<Resource>,
    request: ReplayRequest,
    id: String,
    topic_prefix: String,
    trace: TraceContext,
}

impl Replayer {
    /// A replay of `request` reading `resource` from `source`, for topics named
    /// `topic_prefix` + entity. Its messages share one trace.
    pub fn new(
        source: Arc<dyn Source>,
        resource: Arc<Resource>,
        request: ReplayRequest,
        topic_prefix: impl Into<String>,
    ) -> Replayer {
        Replayer {
            source,
            resource,
            id: request.id(),
            request,
            topic_prefix: topic_prefix.into(),
            trace: TraceContext::random(),
        }
    }

    /// The replay's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic the messages go to.
    pub fn topic(&self) -> String {
        format!("{}{}", self.topic_prefix, self.resource.entity)
    }

    /// Reads the window page by page and hands each page's messages to `out`. Stops at the
    /// first error; the pages `out` took before it stay taken.
    pub async fn run(&self, out: &mut dyn ReplayOutput) -> Result<ReplayReport, ReplayError> {
        let mut report = ReplayReport::default();
        let started = std::time::Instant::now();
        tracing::info!(
            replay = %self.id,
            resource = %self.resource.key(),
            since = %format_timestamp(self.request.since),
            until = %self.request.until.map(format_timestamp).unwrap_or_default(),
            target = self.request.target.as_deref().unwrap_or_default(),
            trace_id = %self.trace.trace_id_hex(),
            "replay started"
        );
        let result = self.pages(out, &mut report).await;
        match &result {
            Ok(()) => tracing::info!(
                replay = %self.id,
                pages = report.pages,
                records = report.records,
                outside = report.outside,
                skipped = report.skipped,
                messages = report.messages,
                ms = started.elapsed().as_millis() as u64,
                "replay read its window"
            ),
            Err(e) => tracing::error!(
                replay = %self.id,
                pages = report.pages,
                messages = report.messages,
                error = %e,
                "replay stopped"
            ),
        }
        result.map(|()| report)
    }

    async fn pages(
        &self,
        out: &mut dyn ReplayOutput,
        report: &mut ReplayReport,
    ) -> Result<(), ReplayError> {
        let ctx = MessageContext {
            source: &self.resource.source,
            source_system: &self.resource.source_system,
            entity: &self.resource.entity,
            topic_prefix: &self.topic_prefix,
        };
        let marks = self.request.marks();
        let ordered = self.source.ordered();
        let mut token: Option<String> = None;
        let mut first_problem: Option<String> = None;
        loop {
            let page = self
                .source
                .fetch(&self.resource, self.request.since, token.as_deref())
                .await?;
            report.pages += 1;
            report.requests += u64::from(page.requests);
            report.records += page.records.len() as u64;
            let mut earliest: Option<DateTime<Utc>> = None;
            let mut messages = Vec::new();
            for raw in page.records {
                let record = match self.resource.reader.read(raw) {
                    Ok(record) => record,
                    Err(e) => {
                        report.skipped += 1;
                        first_problem.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                earliest = Some(earliest.map_or(record.updated, |e| e.min(record.updated)));
                if record
                    .class
                    .as_ref()
                    .is_some_and(|c| self.resource.skip_classes.contains(c))
                {
                    report.delegated += 1;
                    continue;
                }
                if !self.request.covers(&record) {
                    report.outside += 1;
                    continue;
                }
                let mut change = self.resource.detector.replay(&record);
                change.version = replay_version(&self.id, &change.version);
                messages.push(Message::build_with(&change, &ctx, &self.trace, &marks));
            }
            report.messages += messages.len() as u64;
            if !messages.is_empty() {
                out.page(messages).await?;
            }
            // Ordered by updated date: a page that starts at or after `until` ends the window
            // (an empty page — rows hidden by ACLs — proves nothing).
            let past = ordered
                && self
                    .request
                    .until
                    .is_some_and(|until| earliest.is_some_and(|e| e >= until));
            match page.next {
                Some(next) if !past => token = Some(next),
                Some(_) => {
                    report.stopped_at_until = true;
                    break;
                }
                None => break,
            }
        }
        if let Some(first) = first_problem {
            tracing::warn!(
                replay = %self.id,
                skipped = report.skipped,
                first = %first,
                "records the vendor sent could not be read; they were not replayed"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
[[sources]]
name = "crm"
kind = "demo"
source_system = "CRM"
resources = [
  { name = "customers", entity = "customer", fields = { A = "a" } },
  { name = "shared", entity = "shared", fields = { A = "a" } },
]
[[sources]]
name = "erp"
kind = "demo"
source_system = "ERP"
resources = [{ name = "shared", entity = "other", fields = { A = "a" } }]
"#,
            "replay.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> DateTime<Utc> {
        "2024-05-10T00:00:00Z".parse().unwrap()
    }

    fn request(
        resource: &str,
        since: &str,
        until: Option<&str>,
        target: Option<&str>,
    ) -> Result<ReplayRequest, ReplayError> {
        ReplayRequest::parse(&config(), resource, since, until, target, now())
    }

    #[test]
    fn times_need_a_zone_and_every_spelling_of_an_instant_is_one_instant() {
        let utc: DateTime<Utc> = "2024-05-07T08:00:00Z".parse().unwrap();
        for text in [
            "2024-05-07T08:00:00Z",
            "2024-05-07T10:00:00+02:00",
            "2024-05-07 10:00:00+02:00",
            "2024-05-07T10:00+02:00",
            "2024-05-07 08:00Z",
            " 2024-05-07T08:00:00.000Z ",
        ] {
            assert_eq!(parse_time("since", text).unwrap(), utc, "{text}");
        }
        let e = parse_time("since", "2024-05-07T10:00").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--since \"2024-05-07T10:00\": the time has no zone: add Z for UTC or an offset such as +02:00 (e.g. 2024-05-07T10:00:00+02:00)"
        );
        assert!(e.is_usage());
        assert!(parse_time("until", "2024-05-07")
            .unwrap_err()
            .to_string()
            .contains("has no zone"));
        let e = parse_time("until", "tuesday").unwrap_err().to_string();
        assert!(e.starts_with("--until \"tuesday\": not a time"), "{e}");
        assert!(parse_time("since", "2024-02-30T10:00:00Z").is_err());
    }

    #[test]
    fn a_request_names_one_resource_and_a_window_that_is_not_empty() {
        let r = request("customers", "2024-05-07T08:00:00Z", None, None).unwrap();
        assert_eq!(
            (r.source.as_str(), r.resource.as_str()),
            ("crm", "customers")
        );
        let r = request("erp/shared", "2024-05-07T08:00:00Z", None, None).unwrap();
        assert_eq!(r.key(), ResourceKey::new("erp", "shared"));
        let cases = [
            (
                request("shared", "2024-05-07T08:00:00Z", None, None),
                "resource \"shared\" is configured in several sources (crm/shared, erp/shared); name one as SOURCE/RESOURCE",
            ),
            (
                request("crm/nope", "2024-05-07T08:00:00Z", None, None),
                "no resource \"crm/nope\" is configured (use SOURCE/RESOURCE as `pollbus check` lists them)",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", Some("2024-05-07T10:00:00+02:00"), None),
                "--until 2024-05-07T08:00:00Z is not after --since 2024-05-07T08:00:00Z: the window is empty",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", Some("2024-05-06T08:00:00Z"), None),
                "--until 2024-05-06T08:00:00Z is not after --since 2024-05-07T08:00:00Z: the window is empty",
            ),
            (
                request("customers", "2024-06-01T00:00:00Z", None, None),
                "--since 2024-06-01T00:00:00Z is in the future (now is 2024-05-10T00:00:00Z): nothing was updated then yet",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", None, Some("crm sync")),
                "--for \"crm sync\": a subscription name has only letters, digits, '.', '-' and '_'",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", None, Some("x' OR 1=1 OR 'x")),
                "--for \"x' OR 1=1 OR 'x\": a subscription name has only letters, digits, '.', '-' and '_'",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", None, Some("-sync")),
                "--for \"-sync\": a subscription name starts and ends with a letter or digit",
            ),
            (
                request("customers", "2024-05-07T08:00:00Z", None, Some(&"s".repeat(51))),
                "a subscription name has 1 to 50 characters",
            ),
        ];
        for (result, expected) in cases {
            let e = result.unwrap_err();
            assert!(e.is_usage(), "{e}");
            assert!(e.to_string().ends_with(expected), "{e}\nwanted: {expected}");
        }
        assert!(request(
            "customers",
            "2024-05-07T08:00:00Z",
            None,
            Some("crm-sync.v2_a")
        )
        .is_ok());
    }

    #[test]
    fn the_id_is_the_request_not_the_moment_it_runs() {
        let id = |since: &str, until: Option<&str>, target: Option<&str>| {
            request("customers", since, until, target).unwrap().id()
        };
        let base = id("2024-05-07T08:00:00Z", None, None);
        assert_eq!(base.len(), 16);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        // the same request, whenever and however it is spelled
        assert_eq!(base, id("2024-05-07T10:00:00+02:00", None, None));
        let full_name = request("crm/customers", "2024-05-07T08:00:00Z", None, None).unwrap();
        assert_eq!(
            full_name.id(),
            base,
            "RESOURCE and SOURCE/RESOURCE name one resource"
        );
        let later = ReplayRequest::parse(
            &config(),
            "crm/customers",
            "2024-05-07T08:00:00Z",
            None,
            None,
            now() + chrono::Duration::days(3),
        )
        .unwrap();
        assert_eq!(
            later.id(),
            base,
            "an open window does not put now into the id"
        );
        // every part of the request makes a different replay
        let others = [
            id("2024-05-07T08:00:01Z", None, None),
            id("2024-05-07T08:00:00Z", Some("2024-05-08T00:00:00Z"), None),
            id("2024-05-07T08:00:00Z", Some("2024-05-09T00:00:00Z"), None),
            id("2024-05-07T08:00:00Z", None, Some("crm-sync")),
            id("2024-05-07T08:00:00Z", None, Some("audit")),
            request("erp/shared", "2024-05-07T08:00:00Z", None, None)
                .unwrap()
                .id(),
        ];
        let mut all: Vec<&String> = others.iter().chain([&base]).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), others.len() + 1, "{others:?}");
    }

    #[test]
    fn the_window_includes_since_excludes_until_and_takes_either_instant_of_a_fold() {
        let r = request(
            "customers",
            "2024-05-07T08:00:00Z",
            Some("2024-05-07T09:00:00Z"),
            None,
        )
        .unwrap();
        let at = |updated: &str, later: Option<&str>| SourceRecord {
            id: "1".into(),
            updated: updated.parse().unwrap(),
            updated_later: later.map(|l| l.parse().unwrap()),
            revision: None,
            created: None,
            class: None,
            raw: serde_json::Value::Null,
            degraded: None,
        };
        assert!(r.covers(&at("2024-05-07T08:00:00Z", None)));
        assert!(r.covers(&at("2024-05-07T08:59:59.999Z", None)));
        assert!(!r.covers(&at("2024-05-07T09:00:00Z", None)));
        assert!(!r.covers(&at("2024-05-07T07:59:59Z", None)));
        assert!(r.covers(&at("2024-05-07T07:30:00Z", Some("2024-05-07T08:30:00Z"))));
        let open = request("customers", "2024-05-07T08:00:00Z", None, None).unwrap();
        assert!(open.covers(&at("2030-01-01T00:00:00Z", None)));
    }

    #[test]
    fn marks_and_the_rule_name_the_target() {
        let r = request("customers", "2024-05-07T08:00:00Z", None, Some("crm-sync")).unwrap();
        assert_eq!(
            r.marks(),
            vec![(REPLAY, r.id()), (REPLAY_FOR, "crm-sync".to_string())]
        );
        let all = request("customers", "2024-05-07T08:00:00Z", None, None).unwrap();
        assert_eq!(all.marks(), vec![(REPLAY, all.id())]);
        assert_eq!(
            replay_rule("audit"),
            "NOT EXISTS([pollbus-replay-for]) OR [pollbus-replay-for] = 'audit'"
        );
        assert_eq!(
            r.to_string(),
            "crm/customers, records updated from 2024-05-07T08:00:00Z on (no end), for subscription \"crm-sync\""
        );
        let windowed = request(
            "customers",
            "2024-05-07T10:00:00+02:00",
            Some("2024-05-07T12:00:00Z"),
            None,
        )
        .unwrap();
        assert_eq!(
            windowed.to_string(),
            "crm/customers, records updated from 2024-05-07T08:00:00Z until 2024-05-07T12:00:00Z (excluded), for every subscription"
        );
        assert_eq!(replay_version("abc", "1|ff"), "abc|1|ff");
    }
}
