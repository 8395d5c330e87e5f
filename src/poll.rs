//! One poll of one resource: fetch pages since the cursor, detect changes, commit each page.
//!
//! **Cursor safety.** A poll asks for records updated at or after `cursor − overlap`, ordered by
//! (updated, id); the snapshot diff drops what was already seen. After each page, snapshots,
//! outbox rows and the cursor (the highest updated date of the page) are committed together, so
//! the cursor never passes a change that is not durable. Equal timestamps across page
//! boundaries, late commits within the overlap and restarts at any point therefore lose and
//! double nothing. Sources that cannot order their pages move the cursor only after the last
//! page of a poll, and never past the vendor's clock when the listing began (its first
//! answer's `Date` header): a record changed while pollbus paged may sit on a page already read,
//! dated before the newest record seen, and the next poll must still read it.
//!
//! **The first poll.** With `initial = "baseline"` the first poll remembers records silently,
//! except those updated after it started: they changed while the baseline was being read and are published as first seen (see [`crate::detect::Phase`]).
//!
//! **Deletes.** With `deletes = "audit"` the vendor's delete audit is read after the records;
//! with `"reconcile"` all ids are listed every `reconcile_interval` and known ids that are gone
//! are deleted. Either path removes the snapshot with the DELETE, so the other finds nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::InitialMode;
use crate::contract::{Change, EventType, Message, MessageContext, TraceContext};
use crate::detect::{Outcome, Phase, Snapshot};
use crate::metrics::PollCounts;
use crate::record::SourceRecord;
use crate::source::{Resource, Source, SourceError};
use crate::store::{PageCommit, PageStore, ResourceKey, ResourceState, StoreError};

/// Counts a skipped or degraded record in `report` by reason, keeping the first problem.
fn note_unreadable(report: &mut PollReport, problem: &crate::record::RecordError) {
    *report.unreadable.entry(problem.reason()).or_default() += 1;
    if report.unreadable_sample.is_none() {
        report.unreadable_sample = Some(problem.to_string().chars().take(300).collect());
    }
}

/// A page being fetched ahead while the previous one is committed. Dropping it aborts the
/// request (a poll that ends early leaves nothing running).
struct Prefetch(tokio::task::JoinHandle<Result<crate::source::Page, SourceError>>);

impl Prefetch {
    fn start(
        source: Arc<dyn Source>,
        resource: Arc<Resource>,
        since: DateTime<Utc>,
        token: String,
    ) -> Prefetch {
        use tracing::Instrument;
        Prefetch(tokio::spawn(
            async move { source.fetch(&resource, since, Some(&token)).await }
                .instrument(tracing::Span::current()),
        ))
    }

    /// The page, or the fetch's error. A fetch that panicked is re-raised here, in the poll,
    /// so the poll task's supervision sees it as before.
    async fn page(mut self, resource: &Resource) -> Result<crate::source::Page, SourceError> {
        match (&mut self.0).await {
            Ok(page) => page,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(SourceError::Vendor {
                resource: resource.key(),
                message: format!("fetching the next page was cancelled: {e}"),
            }),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one poll did; logged per poll and summed by `poll-once`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Pages fetched.
    pub pages: u64,
    /// Requests sent to the vendor.
    pub requests: u64,
    /// Records received.
    pub records: u64,
    /// Records skipped as unreadable (missing id/date, bad date, JSON the parser refuses).
    pub skipped: u64,
    /// Records read with a part left out (an unreadable created date).
    pub degraded: u64,
    /// Skipped and degraded records by reason ([`crate::metrics::RECORD_PROBLEMS`]).
    pub unreadable: BTreeMap<&'static str, u64>,
    /// The first skipped or degraded record's problem, for the poll's one warning.
    pub unreadable_sample: Option<String>,
    /// Records left to a configured child resource (parent/child de-duplication).
    pub delegated: u64,
    /// Records remembered silently by the baseline.
    pub baseline: u64,
    /// CREATE messages.
    pub created: u64,
    /// UPDATE messages.
    pub updated: u64,
    /// DELETE messages.
    pub deleted: u64,
    /// Updates that changed no tracked field.
    pub noop: u64,
    /// Records re-read unchanged (the overlap window).
    pub unchanged: u64,
    /// Older copies of records than their snapshot (ignored).
    pub stale: u64,
    /// Whether polling was skipped because the outbox is full.
    pub paused: bool,
    /// Pages a resync read.
    pub resync_pages: u64,
    /// Changes a resync found that incremental polling had missed: creates, updates, deletes.
    pub resync_repairs: [u64; 3],
    /// Whether a resync completed.
    pub resync_completed: bool,
}

impl From<&PollReport> for PollCounts {
    fn from(report: &PollReport) -> Self {
        PollCounts {
            records: report.records,
            skipped: report.skipped,
            unreadable: report
                .unreadable
                .iter()
                .map(|(reason, n)| (*reason, *n))
                .collect(),
            noop: report.noop,
            created: report.created,
            updated: report.updated,
            deleted: report.deleted,
            paused: report.paused,
            resync_pages: report.resync_pages,
            resync_repairs: report.resync_repairs,
            resync_completed: report.resync_completed,
        }
    }
}

impl PollReport {
    /// Adds another report's counts to this one.
    pub fn add(&mut self, o: &PollReport) {
        self.pages += o.pages;
        self.requests += o.requests;
        self.records += o.records;
        self.skipped += o.skipped;
        self.degraded += o.degraded;
        for (reason, n) in &o.unreadable {
            *self.unreadable.entry(reason).or_default() += n;
        }
        if self.unreadable_sample.is_none() {
            self.unreadable_sample = o.unreadable_sample.clone();
        }
        self.delegated += o.delegated;
        self.baseline += o.baseline;
        self.created += o.created;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.noop += o.noop;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.paused |= o.paused;
        self.resync_pages += o.resync_pages;
        for (a, b) in self.resync_repairs.iter_mut().zip(o.resync_repairs) {
            *a += b;
        }
        self.resync_completed |= o.resync_completed;
    }

    /// Messages written to the outbox.
    pub fn messages(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

/// Why a poll failed; the next interval tries again from the committed cursor.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The vendor failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reconciliation would delete too much and was refused.
    #[error("{resource}: reconciliation would delete {absent} of {known} known records (more than reconcile_max_delete_ratio {ratio}); refused — check the source, or raise the ratio")]
    ReconcileGuard {
        /// The resource.
        resource: String,
        /// Ids missing from the listing.
        absent: usize,
        /// Ids known.
        known: u64,
        /// The configured ratio.
        ratio: f64,
    },
}

/// Polls one resource of one source.
pub struct Poller {
    /// The vendor.
    pub source: Arc<dyn Source>,
    /// The resource.
    pub resource: Arc<Resource>,
    /// Cursors, snapshots and the page commit (the daemon passes a
    /// [`crate::store::fenced::FencedStore`], so pages are written under the resource's lease).
    pub store: Arc<dyn PageStore>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Topic prefix for messages.
    pub topic_prefix: String,
    /// Poked after each commit that wrote messages.
    pub wake: Arc<Notify>,
    /// Polling pauses while the outbox holds this many rows.
    pub max_outbox_rows: u64,
    /// When this poller last fetched a resync page: the next one, in the next poll too, waits
    /// out the resync's pace from there.
    pub last_resync_page: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Whether polls run resyncs (due, requested or under way); `poll-once --dry-run` does not.
    pub resyncs: bool,
}

impl Poller {
    /// A poller for `resource` of `source`, committing into `store` and stamping messages for
    /// topics named `topic_prefix` + entity; it pauses while the outbox holds
    /// `max_outbox_rows` rows of its topic and pokes a fresh [`Notify`] (replace `wake` to share one).
    pub fn new(
        source: Arc<dyn Source>,
        resource: Arc<Resource>,
        store: Arc<dyn PageStore>,
        clock: Arc<dyn Clock>,
        topic_prefix: impl Into<String>,
        max_outbox_rows: u64,
    ) -> Poller {
        Poller {
            source,
            resource,
            store,
            clock,
            topic_prefix: topic_prefix.into(),
            wake: Arc::new(Notify::new()),
            max_outbox_rows,
            last_resync_page: Default::default(),
            resyncs: true,
        }
    }

    fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.resource.source, &self.resource.name)
    }

    fn context(&self) -> MessageContext<'_> {
        MessageContext {
            source: &self.resource.source,
            source_system: &self.resource.source_system,
            entity: &self.resource.entity,
            topic_prefix: &self.topic_prefix,
        }
    }

    /// One full poll: records, then audited deletes, then (when due) reconciliation. Stops
    /// between pages when `stop` is cancelled.
    /// `trace` is the poll's trace; its id is in every message's `Diagnostic-Id`.
    pub async fn poll(
        &self,
        trace: &TraceContext,
        stop: &CancellationToken,
    ) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        // Per topic: a topic that is paused (missing, unauthorized…) fills only its own share,
        // so it pauses only the resources that publish to it.
        let topic = format!("{}{}", self.topic_prefix, self.resource.entity);
        let depth = self.store.outbox_depth_in(&topic).await?;
        if depth >= self.max_outbox_rows {
            tracing::warn!(
                resource = %self.key(),
                topic,
                depth,
                max_rows = self.max_outbox_rows,
                "outbox is full for this topic; polling paused until the sink catches up"
            );
            report.paused = true;
            return Ok(report);
        }
        let key = self.key();
        let mut state = self.store.resource_state(&key).await?.unwrap_or_default();
        self.poll_records(&key, &mut state, trace, stop, &mut report)
            .await?;
        if stop.is_cancelled() || !state.baseline_done {
            self.warn_unreadable(&report);
            return Ok(report);
        }
        let config = &self.resource.config;
        if config.deletes.audits() {
            self.poll_audit(&key, &mut state, trace, &mut report)
                .await?;
        }
        let now = self.clock.now();
        let due = state.last_reconcile.is_none_or(|last| {
            (now - last)
                .to_std()
                .is_ok_and(|age| age >= config.reconcile_interval)
        });
        // A resync under way marks what it reads in the reconciliation's column and deletes
        // what it did not read when it ends: a reconciliation meanwhile would spoil its marks,
        // and is not needed.
        if config.deletes.reconciles() && due && state.resync_started.is_none() {
            self.reconcile(&key, &mut state, trace, &mut report).await?;
        }
        if self.resyncs {
            self.resync(&key, &mut state, trace, stop, &mut report)
                .await?;
        }
        self.warn_unreadable(&report);
        Ok(report)
    }

    /// Anti-entropy: when a resync is due (`resync_interval`) or requested (`pollbus resync`),
    /// or one is under way, reads the next pages of the whole resource at
    /// `resync_pages_per_minute` — as many as fit in one poll interval, so polls go on — and
    /// compares every record with its snapshot like a poll does. Its position is committed with
    /// each page (a restart or another replica goes on from there). A difference in a record
    /// the incremental poll had already passed (updated at or before the cursor) is a *repair*:
    /// logged with the id and fields and counted in `pollbus_resync_repairs_total`. When the
    /// last page is read, known records it did not read are deleted (unless `deletes = "off"`),
    /// under the reconciliation's guard, in the same commit; such a delete is a repair when the
    /// vendor's delete audit should have reported it (`deletes = "audit"` or `"both"`).
    async fn resync(
        &self,
        key: &ResourceKey,
        state: &mut ResourceState,
        trace: &TraceContext,
        stop: &CancellationToken,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let config = &self.resource.config;
        let now = self.clock.now();
        if state.resync_started.is_none() {
            let requested = state
                .resync_requested
                .is_some_and(|r| state.last_resync.is_none_or(|last| r > last));
            let due = config.resync_interval.is_some_and(|every| {
                state
                    .last_resync
                    .is_none_or(|last| (now - last).to_std().is_ok_and(|age| age >= every))
            });
            if !requested && !due {
                return Ok(());
            }
            state.resync_started = Some(now);
            state.resync_token = None;
            tracing::info!(
                resource = %self.resource.key(),
                reason = if requested { "requested" } else { "resync_interval" },
                pages_per_minute = config.resync_pages_per_minute,
                "resync started: re-reading the whole resource to find changes the incremental poll missed"
            );
        }
        let started = state.resync_started.expect("set above");
        let run = started.timestamp_nanos_opt().unwrap_or_default();
        let per_minute = f64::from(config.resync_pages_per_minute.max(1));
        let pause = std::time::Duration::from_secs_f64(60.0 / per_minute);
        let pages = (self.resource.interval.as_secs_f64() / 60.0 * per_minute).max(1.0) as u64;
        for _ in 0..pages {
            let previous = *self.last_resync_page.lock().expect("resync pace");
            if let Some(previous) = previous {
                tokio::select! {
                    _ = tokio::time::sleep_until(previous + pause) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
            *self.last_resync_page.lock().expect("resync pace") = Some(tokio::time::Instant::now());
            let page = self
                .source
                .fetch(
                    &self.resource,
                    DateTime::<Utc>::UNIX_EPOCH,
                    state.resync_token.as_deref(),
                )
                .await?;
            report.resync_pages += 1;
            report.requests += u64::from(page.requests);
            report.records += page.records.len() as u64;
            let records = self.read_records(page.records, report);
            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            let passed: HashMap<String, bool> = records
                .iter()
                .map(|r| (r.id.clone(), state.cursor.is_some_and(|c| r.updated <= c)))
                .collect();
            let mut commit = self
                .detect(key, records, Phase::Steady, trace, report)
                .await?;
            for m in &commit.messages {
                if passed.get(&m.body.id).copied().unwrap_or(false) {
                    self.repaired(m, report);
                }
            }
            self.store.reconcile_mark(key, run, &ids, None).await?;
            let last = page.next.is_none();
            state.resync_token = page.next;
            if last {
                if config.deletes != crate::config::DeleteMode::Off {
                    let (deletions, _, _) = self.absent(key, run, started).await?;
                    let ctx = self.context();
                    for (id, snapshot) in deletions {
                        let change = self.resource.detector.deletion(&id, &snapshot, now);
                        count(report, &change);
                        let message = Message::build(&change, &ctx, trace);
                        // The audit should have reported it; a reconciliation would only
                        // have found it later, which is no miss.
                        if config.deletes.audits() {
                            self.repaired(&message, report);
                        }
                        commit.messages.push(message);
                        commit.removed.push(id);
                    }
                    if config.deletes.reconciles() {
                        state.last_reconcile = Some(started);
                    }
                }
                state.resync_started = None;
                state.resync_token = None;
                state.last_resync = Some(started);
                report.resync_completed = true;
            }
            commit.state = Some(state.clone());
            let wrote = !commit.messages.is_empty();
            self.store.commit_page(key, commit).await?;
            if wrote {
                self.wake.notify_one();
            }
            if last {
                tracing::info!(
                    resource = %self.resource.key(),
                    repairs = report.resync_repairs.iter().sum::<u64>(),
                    "resync completed"
                );
                return Ok(());
            }
            if stop.is_cancelled() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A change a resync found in a record the incremental poll had passed: counted and logged.
    fn repaired(&self, message: &Message, report: &mut PollReport) {
        let (i, event) = match message.body.even_type {
            EventType::Create => (0, "create"),
            EventType::Update => (1, "update"),
            EventType::Delete => (2, "delete"),
        };
        report.resync_repairs[i] += 1;
        tracing::warn!(
            resource = %self.resource.key(),
            id = %message.body.id,
            event,
            fields = %message.body.changed_fields,
            "resync found a change the incremental poll had missed (the vendor changed the record without moving its updated date, or deleted it without a trace); published"
        );
    }

    /// The known records a listing that started at `started` (mark `run`: a reconciliation's
    /// or a resync's) did not list, to delete; with how many it missed and how many listings
    /// in a row must miss a record. Refused by `reconcile_max_delete_ratio`.
    async fn absent(
        &self,
        key: &ResourceKey,
        run: i64,
        started: DateTime<Utc>,
    ) -> Result<(Vec<(String, Snapshot)>, u64, u32), PollError> {
        // Count first, load later: a listing cut short would otherwise load every snapshot of
        // the resource before the guard refuses it.
        let missed = self.store.reconcile_miss(key, run, started, None).await?;
        let known = self.store.snapshot_count(key).await?;
        let ratio = self.resource.config.reconcile_max_delete_ratio;
        if ratio < 1.0 && known > 0 && missed as f64 > ratio * known as f64 {
            return Err(PollError::ReconcileGuard {
                resource: self.resource.key(),
                absent: missed as usize,
                known,
                ratio,
            });
        }
        // An offset-paged listing can skip a record when others are deleted meanwhile: only
        // records missed by two listings in a row are deleted then.
        let min_missed = if self.source.stable_id_listing() {
            1
        } else {
            2
        };
        let absent = self
            .store
            .reconcile_absent(key, run, started, min_missed)
            .await?;
        Ok((absent, missed, min_missed))
    }

    /// One warning per poll for the records it skipped or degraded: how many, by reason, and
    /// the first one's problem (a vendor with many bad records does not flood the log).
    fn warn_unreadable(&self, report: &PollReport) {
        if report.skipped + report.degraded == 0 {
            return;
        }
        let reasons: Vec<String> = report
            .unreadable
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        tracing::warn!(
            resource = %self.resource.key(),
            skipped = report.skipped,
            degraded = report.degraded,
            reasons = %reasons.join(","),
            first = report.unreadable_sample.as_deref().unwrap_or_default(),
            "records the vendor sent could not be read in full; the others were processed"
        );
    }

    async fn poll_records(
        &self,
        key: &ResourceKey,
        state: &mut ResourceState,
        trace: &TraceContext,
        stop: &CancellationToken,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        // Records updated after the baseline started changed while it was being read: they
        // are published, not swallowed. A baseline resumed after a restart counts from the
        // resumed poll's start.
        let phase = if !state.baseline_done && self.resource.config.initial == InitialMode::Baseline
        {
            Phase::Baseline {
                changed_since: self.clock.now(),
            }
        } else {
            Phase::Steady
        };
        let horizon = self.horizon();
        let since = self.since(state.cursor.map(|c| c.min(horizon)));
        let ordered = self.source.ordered();
        let mut pending_cursor = state.cursor;
        let mut token: Option<String> = None;
        // The vendor's clock when the listing began (its first answer's `Date`).
        let mut vendor_start: Option<DateTime<Utc>> = None;
        // The next page is fetched while this one is detected and committed (its token is
        // known): at most two pages in memory, and the vendor's latency overlaps pollbus's work.
        let mut prefetch: Option<Prefetch> = None;
        // Tracked fields not yet seen in any record of this poll (checked until each is seen,
        // and only until the warning below was given once).
        let mut unseen: Vec<usize> = if self
            .resource
            .missing_warned
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Vec::new()
        } else {
            (0..self.resource.detector.fields().len()).collect()
        };
        loop {
            let page = match prefetch.take() {
                Some(next) => next.page(&self.resource).await?,
                None => {
                    self.source
                        .fetch(&self.resource, since, token.as_deref())
                        .await?
                }
            };
            if let Some(next) = page.next.as_deref().filter(|_| !stop.is_cancelled()) {
                prefetch = Some(Prefetch::start(
                    self.source.clone(),
                    self.resource.clone(),
                    since,
                    next.to_string(),
                ));
            }
            if token.is_none() {
                vendor_start = page.vendor_time;
            }
            report.pages += 1;
            report.requests += u64::from(page.requests);
            report.records += page.records.len() as u64;
            let records = self.read_records(page.records, report);
            if !unseen.is_empty() {
                let fields = self.resource.detector.fields();
                unseen.retain(|&i| !records.iter().any(|r| fields[i].1.get(&r.raw).is_some()));
            }
            if let Some(max) = records.iter().map(|r| r.updated).max() {
                pending_cursor = pending_cursor.max(Some(self.clamp_future(max, horizon)));
            }
            let last = page.next.is_none();
            let mut commit = self.detect(key, records, phase, trace, report).await?;
            if ordered {
                state.cursor = pending_cursor;
            } else if last {
                // Unordered paging: a record changed while we paged may sit on a page already
                // read, dated before the newest one seen. The cursor stops at the vendor's
                // clock when the listing began, so the next poll reads every change made since.
                state.cursor = match (pending_cursor, vendor_start) {
                    (Some(c), Some(v)) if v < c => Some(v),
                    (c, _) => c,
                };
            }
            if last {
                // A baseline reads the whole resource: it counts as a resync (the first one
                // falls due `resync_interval` after it, not at once).
                if let Phase::Baseline { changed_since } = phase {
                    state.last_resync.get_or_insert(changed_since);
                }
                state.baseline_done = true;
            }
            commit.state = Some(state.clone());
            let wrote_messages = !commit.messages.is_empty();
            // A failed commit (a lost lease, the store down) ends the poll: the page fetched
            // ahead is dropped unread (`Prefetch` aborts its request on drop).
            self.store.commit_page(key, commit).await?;
            if wrote_messages {
                self.wake.notify_one();
            }
            // A stop finishes the page whose fetch has begun (here: the one fetched ahead),
            // then ends the poll at that page's boundary.
            if last && report.records > 0 {
                self.warn_missing_fields(&unseen);
            }
            if last || (stop.is_cancelled() && prefetch.is_none()) {
                return Ok(());
            }
            token = page.next;
        }
    }

    /// One warning (per process and resource) for tracked fields that no record of a whole
    /// poll carried: they would be published as null and never change, silently — a field map
    /// that names the wrong vendor field, or a URL whose field list (`attributes=`,
    /// `sysparm_fields`) leaves them out.
    fn warn_missing_fields(&self, unseen: &[usize]) {
        if unseen.is_empty()
            || self
                .resource
                .missing_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let fields = self.resource.detector.fields();
        let missing: Vec<String> = unseen
            .iter()
            .map(|&i| format!("{} (vendor path {:?})", fields[i].0, fields[i].1.as_str()))
            .collect();
        tracing::warn!(
            resource = %self.resource.key(),
            fields = %missing.join(", "),
            "tracked fields are missing from every record of this poll: they read as null and no change to them can be seen; check the field map (pollbus check --probe) and that the request asks the vendor for them"
        );
    }

    /// The latest instant a cursor may reach: now plus `max_clock_skew` (checked).
    fn horizon(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        chrono::Duration::from_std(self.resource.max_clock_skew)
            .ok()
            .and_then(|skew| now.checked_add_signed(skew))
            .unwrap_or(now)
    }

    /// Where a listing starts: the cursor minus the overlap (checked), or the beginning.
    fn since(&self, cursor: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let overlap = chrono::Duration::from_std(self.resource.overlap).unwrap_or_default();
        cursor
            .map(|c| c.checked_sub_signed(overlap).unwrap_or(c))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// A vendor date as a cursor candidate: one past the horizon stops there, with a warning
    /// (a far-future date would otherwise put every later change behind the cursor).
    fn clamp_future(&self, at: DateTime<Utc>, horizon: DateTime<Utc>) -> DateTime<Utc> {
        if at <= horizon {
            return at;
        }
        tracing::warn!(
            resource = %self.resource.key(),
            date = %at.to_rfc3339(),
            horizon = %horizon.to_rfc3339(),
            "a vendor date lies beyond now + max_clock_skew; the cursor stops at now + max_clock_skew"
        );
        horizon
    }

    /// Reads raw records; unreadable ones and those delegated to a child resource are dropped.
    fn read_records(
        &self,
        raw: Vec<serde_json::Value>,
        report: &mut PollReport,
    ) -> Vec<SourceRecord> {
        let mut out = Vec::with_capacity(raw.len());
        for value in raw {
            match self.resource.reader.read(value) {
                Ok(r) => {
                    if let Some(problem) = &r.degraded {
                        report.degraded += 1;
                        note_unreadable(report, problem);
                    }
                    if r.class
                        .as_ref()
                        .is_some_and(|c| self.resource.skip_classes.contains(c))
                    {
                        report.delegated += 1;
                    } else {
                        out.push(r);
                    }
                }
                Err(e) => {
                    report.skipped += 1;
                    tracing::debug!(resource = %self.resource.key(), error = %e, "record skipped");
                    note_unreadable(report, &e);
                }
            }
        }
        out
    }

    /// Compares a page of records with their snapshots and builds the page's commit.
    async fn detect(
        &self,
        key: &ResourceKey,
        records: Vec<SourceRecord>,
        phase: Phase,
        trace: &TraceContext,
        report: &mut PollReport,
    ) -> Result<PageCommit, PollError> {
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let known: HashMap<String, Snapshot> = self.store.snapshots(key, &ids).await?;
        let mut commit = PageCommit {
            at: self.clock.now(),
            ..PageCommit::default()
        };
        let ctx = self.context();
        let detector = &self.resource.detector;
        let mut written: HashMap<String, usize> = HashMap::new();
        for record in &records {
            // A record repeated within the page compares with the snapshot written for its
            // first copy.
            let prior = match written.get(&record.id) {
                Some(&i) => Some(&commit.snapshots[i].1),
                None => known.get(&record.id),
            };
            let detection = detector.detect(record, prior, phase);
            match &detection.outcome {
                Outcome::Changed(change) => {
                    count(report, change);
                    commit.messages.push(Message::build(change, &ctx, trace));
                }
                Outcome::Baseline => report.baseline += 1,
                Outcome::Unchanged => report.unchanged += 1,
                Outcome::NoOp => report.noop += 1,
                Outcome::Stale => report.stale += 1,
            }
            if let Some(snapshot) = detection.snapshot {
                match written.get(&record.id) {
                    Some(&i) => commit.snapshots[i].1 = snapshot,
                    None => {
                        written.insert(record.id.clone(), commit.snapshots.len());
                        commit.snapshots.push((record.id.clone(), snapshot));
                    }
                }
            }
        }
        Ok(commit)
    }

    async fn poll_audit(
        &self,
        key: &ResourceKey,
        state: &mut ResourceState,
        trace: &TraceContext,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let horizon = self.horizon();
        let since = self.since(state.audit_cursor.map(|c| c.min(horizon)));
        let mut token: Option<String> = None;
        loop {
            let page = self
                .source
                .deleted_since(&self.resource, since, token.as_deref())
                .await?;
            report.requests += 1;
            if let Some(max) = page.deletes.iter().map(|(_, at)| *at).max() {
                state.audit_cursor = state
                    .audit_cursor
                    .max(Some(self.clamp_future(max, horizon)));
            }
            let ids: Vec<String> = page.deletes.iter().map(|(id, _)| id.clone()).collect();
            let known = self.store.snapshots(key, &ids).await?;
            let deletions = page
                .deletes
                .iter()
                .filter_map(|(id, at)| known.get(id).map(|s| (id.clone(), s.clone(), *at)))
                .collect();
            let commit = self.deletions(deletions, state, trace, report);
            self.commit_deletions(key, commit).await?;
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
    }

    async fn reconcile(
        &self,
        key: &ResourceKey,
        state: &mut ResourceState,
        trace: &TraceContext,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let started = self.clock.now();
        let run = started.timestamp_nanos_opt().unwrap_or_default();
        let mut token: Option<String> = None;
        let mut listed = 0usize;
        loop {
            let page = self
                .source
                .list_ids(&self.resource, token.as_deref())
                .await?;
            report.requests += 1;
            listed += page.ids.len();
            self.store.reconcile_mark(key, run, &page.ids, None).await?;
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let (absent, missed, min_missed) = self.absent(key, run, started).await?;
        tracing::info!(
            resource = %self.resource.key(),
            listed,
            missed,
            deleted = absent.len(),
            min_missed,
            "reconciled ids"
        );
        state.last_reconcile = Some(started);
        let deletions = absent
            .into_iter()
            .map(|(id, snapshot)| (id, snapshot, started))
            .collect();
        let commit = self.deletions(deletions, state, trace, report);
        self.commit_deletions(key, commit).await
    }

    fn deletions(
        &self,
        deletions: Vec<(String, Snapshot, DateTime<Utc>)>,
        state: &ResourceState,
        trace: &TraceContext,
        report: &mut PollReport,
    ) -> PageCommit {
        let ctx = self.context();
        let mut commit = PageCommit {
            at: self.clock.now(),
            state: Some(state.clone()),
            ..PageCommit::default()
        };
        for (id, snapshot, at) in deletions {
            let change = self.resource.detector.deletion(&id, &snapshot, at);
            count(report, &change);
            commit.messages.push(Message::build(&change, &ctx, trace));
            commit.removed.push(id);
        }
        commit
    }

    async fn commit_deletions(
        &self,
        key: &ResourceKey,
        commit: PageCommit,
    ) -> Result<(), PollError> {
        let wrote = !commit.messages.is_empty();
        self.store.commit_page(key, commit).await?;
        if wrote {
            self.wake.notify_one();
        }
        Ok(())
    }
}

fn count(report: &mut PollReport, change: &Change) {
    match change.kind {
        EventType::Create => report.created += 1,
        EventType::Update => report.updated += 1,
        EventType::Delete => report.deleted += 1,
    }
}
