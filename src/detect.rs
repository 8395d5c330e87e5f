//! Change detection: a record compared with its stored snapshot becomes a CREATE, an UPDATE
//! with exactly the changed fields, or nothing.
//!
//! Rules (per record, tracked fields only):
//! - no snapshot, during the baseline: store a snapshot, publish nothing — unless the record
//!   was updated after the baseline started (see [`Phase::Baseline`]): then it changed while a
//!   long first poll was under way and is published as first seen;
//! - no snapshot after the baseline: CREATE when `created` and `updated` differ by at most the
//!   tolerance, otherwise UPDATE (a record we never saw that was changed since it was created);
//!   both list every tracked field (the Cloud Elements rule);
//! - tracked values differ: UPDATE listing only the differing fields, in configuration order —
//!   **whatever the dates say**, unless the vendor's monotonic revision (ServiceNow
//!   `sys_mod_count`) proves the copy older than the snapshot (then it is a stale copy, ignored);
//! - no tracked difference: no message (a no-op update, counted); the snapshot's date moves;
//! - no tracked difference and an older date: a stale copy, ignored.
//!
//! **Clocks that go backwards.** A vendor's updated date is one node's clock, sometimes a local
//! time: node skew, a clock step, or a DST fold (01:20 PST after 01:50 PDT) can make a later
//! change carry an earlier date. Dropping such a change because its date is not newer loses it
//! for good (every later poll sees the same date), so a difference in tracked values wins over
//! the date. The price, for vendors without a revision: a stale read from an eventually
//! consistent API (a lagging replica serving the previous copy) is published as an UPDATE that
//! flips a value back for one poll; the next poll reads the current copy and publishes it again,
//! so consumers end on the right value. A vendor revision removes that price. A local time in a
//! DST fold names two instants; the one not older than the snapshot is taken (the source reads
//! the earlier one for the cursor, which is the safe side there).
//!
//! A field added to the configuration later is absent from old snapshots; it is learnt silently
//! rather than reported as a change of every record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::contract::{Change, EventType};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::fingerprint::{missing_hash, name_tag, value_hash, Fingerprint, Layout};
use crate::record::{scalar_text, FieldPath, SourceRecord};

/// What is stored about a record between polls: fingerprints of its tracked values, not the
/// values (see [`crate::fingerprint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The record's updated date when last seen.
    pub updated: DateTime<Utc>,
    /// The vendor's monotonic revision of the record when last seen (ServiceNow
    /// `sys_mod_count`), if the vendor has one.
    pub revision: Option<u64>,
    /// Fingerprints of the tracked values.
    pub fingerprint: Fingerprint,
}

/// The key a snapshot's revision was stored under beside its tracked values before
/// fingerprints (it holds a `,`, which no contract field name may).
const LEGACY_REVISION: &str = ",revision";

impl Snapshot {
    /// A snapshot as pollbus stored it before fingerprints: `updated` and the JSON object of
    /// tracked values (contract name → value, plus the revision under `",revision"` when
    /// known). Converting it gives the fingerprints the same values read from the vendor give,
    /// so nothing looks changed.
    pub fn from_legacy(updated: DateTime<Utc>, mut fields: Map<String, Value>) -> Snapshot {
        let revision = fields.remove(LEGACY_REVISION).and_then(|v| v.as_u64());
        Snapshot {
            updated,
            revision,
            fingerprint: Fingerprint::of_values(fields.iter().map(|(k, v)| (k.as_str(), v))),
        }
    }

    /// Identifies this version of the record: its date and its record fingerprint
    /// (`<updated ns>|<fingerprint as 16 hex digits>`). Message ids are made from it.
    pub fn version(&self) -> String {
        format!(
            "{}|{:016x}",
            self.updated.timestamp_nanos_opt().unwrap_or_default(),
            self.fingerprint.record
        )
    }
}

/// Where `onBehalfOf` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnBehalfOfSource {
    /// Not configured: `onBehalfOf` is null.
    None,
    /// A record field.
    Field(FieldPath),
    /// A fixed value.
    Value(String),
}

/// The result of comparing one record with its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A change to publish.
    Changed(Change),
    /// First sight during the baseline: remembered, not published.
    Baseline,
    /// Same date, same values: nothing to do (the overlap window re-reads such records).
    Unchanged,
    /// A newer date but no tracked field changed: not published, counted.
    NoOp,
    /// An older copy than what we have (same values under an older date, or a revision that
    /// proves it older): ignored.
    Stale,
}

/// The outcome and, when it must be written, the new snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// What happened.
    pub outcome: Outcome,
    /// The snapshot to store, if it changed.
    pub snapshot: Option<Snapshot>,
}

/// Which poll of a resource a record is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The resource's first poll, taking its silent baseline. `changed_since` is when that poll
    /// started: a record first seen with an updated date at or after it changed while the
    /// baseline was being read (a 1M-row baseline takes many minutes) and is published, not
    /// swallowed. The vendor's dates are compared with pollbus's clock: a vendor clock running
    /// behind by some seconds can hide a change made in the baseline's first seconds; one
    /// running ahead publishes a few records changed just before it (harmless).
    Baseline {
        /// Records updated at or after this instant are published as first seen.
        changed_since: DateTime<Utc>,
    },
    /// Every poll after the baseline (or a first poll that emits everything).
    Steady,
}

/// Compares records of one resource with their snapshots.
#[derive(Debug, Clone)]
pub struct Detector {
    /// `fields = "*"`: every top-level field of each record except these is tracked, and
    /// `fields` is empty.
    whole: Option<Arc<Whole>>,
    fields: Vec<(String, FieldPath)>,
    /// Each field's name tag, in configuration order.
    tags: Vec<u32>,
    /// Field indexes in ascending tag order (the layout's order).
    by_tag: Vec<usize>,
    /// The layout of every snapshot this detector writes.
    layout: Arc<Layout>,
    on_behalf_of: OnBehalfOfSource,
    create_tolerance: Duration,
}

impl Detector {
    /// A detector for tracked `fields` (contract name, vendor path) in configuration order.
    pub fn new(
        fields: Vec<(String, FieldPath)>,
        on_behalf_of: OnBehalfOfSource,
        create_tolerance: Duration,
    ) -> Self {
        // Two names with one tag would be one field to the snapshot; the configuration
        // refuses them (`config::validate`), so here they only ever differ.
        let tags: Vec<u32> = fields.iter().map(|(name, _)| name_tag(name)).collect();
        let mut by_tag: Vec<usize> = (0..fields.len()).collect();
        by_tag.sort_by_key(|&i| tags[i]);
        by_tag.dedup_by_key(|i| tags[*i]);
        let layout = Arc::new(Layout::named(
            by_tag
                .iter()
                .map(|&i| (tags[i], fields[i].0.clone()))
                .collect(),
        ));
        Detector {
            whole: None,
            fields,
            tags,
            by_tag,
            layout,
            on_behalf_of,
            create_tolerance,
        }
    }

    /// A detector tracking every top-level field of each record (`fields = "*"`) except
    /// `exclude` (the record's id, dates and revision, the vendor's bookkeeping fields and the
    /// user's list). A field a record does not carry reads as null: one that appears with a
    /// value, or disappears, is a change of that field.
    pub fn whole(
        exclude: impl IntoIterator<Item = String>,
        on_behalf_of: OnBehalfOfSource,
        create_tolerance: Duration,
    ) -> Self {
        let mut d = Detector::new(Vec::new(), on_behalf_of, create_tolerance);
        d.whole = Some(Arc::new(Whole {
            exclude: exclude.into_iter().collect(),
            warned: Default::default(),
            layouts: Default::default(),
        }));
        d
    }

    /// Whether every top-level field is tracked (`fields = "*"`).
    pub fn tracks_all(&self) -> bool {
        self.whole.is_some()
    }

    /// The record field `onBehalfOf` comes from, if any.
    pub fn on_behalf_of_path(&self) -> Option<&FieldPath> {
        match &self.on_behalf_of {
            OnBehalfOfSource::Field(path) => Some(path),
            _ => None,
        }
    }

    /// The tracked fields.
    pub fn fields(&self) -> &[(String, FieldPath)] {
        &self.fields
    }

    /// The value hash of every tracked field of a record, in configuration order (missing
    /// paths hash as null).
    pub fn hashes(&self, record: &Value) -> Vec<u64> {
        self.fields
            .iter()
            .map(|(_, path)| value_hash(path.get(record).unwrap_or(&Value::Null)))
            .collect()
    }

    /// The fingerprint of a record whose field hashes ([`Detector::hashes`]) are `hashes`.
    pub fn fingerprint(&self, hashes: &[u64]) -> Fingerprint {
        let pairs: Vec<(u32, u64)> = self
            .by_tag
            .iter()
            .map(|&i| (self.tags[i], hashes[i]))
            .collect();
        Fingerprint::from_hashes(self.layout.clone(), &pairs)
    }

    /// The tracked value of field `i` of a record (null when missing).
    fn value(&self, i: usize, record: &Value) -> Value {
        self.fields[i].1.get(record).cloned().unwrap_or(Value::Null)
    }

    fn on_behalf_of(&self, record: Option<&Value>) -> Option<String> {
        match &self.on_behalf_of {
            OnBehalfOfSource::None => None,
            OnBehalfOfSource::Value(v) => Some(v.clone()),
            OnBehalfOfSource::Field(path) => record
                .and_then(|r| path.get(r))
                .and_then(scalar_text)
                .filter(|s| !s.is_empty()),
        }
    }

    /// Compares `record` with its stored snapshot, in `phase`.
    pub fn detect(
        &self,
        record: &SourceRecord,
        prior: Option<&Snapshot>,
        phase: Phase,
    ) -> Detection {
        let (hashes, fingerprint) = match &self.whole {
            None => {
                let hashes = self.hashes(&record.raw);
                let fingerprint = self.fingerprint(&hashes);
                (hashes, fingerprint)
            }
            Some(whole) => (Vec::new(), whole.fingerprint(&record.raw)),
        };
        let Some(prior) = prior else {
            let snapshot = Snapshot {
                updated: record.updated,
                revision: record.revision,
                fingerprint,
            };
            if let Phase::Baseline { changed_since } = phase {
                if record.updated_later.unwrap_or(record.updated) < changed_since {
                    return Detection {
                        outcome: Outcome::Baseline,
                        snapshot: Some(snapshot),
                    };
                }
            }
            let created_now = record.created.is_some_and(|created| {
                (record.updated - created)
                    .abs()
                    .to_std()
                    .is_ok_and(|d| d <= self.create_tolerance)
            });
            let kind = if created_now {
                EventType::Create
            } else {
                EventType::Update
            };
            let changed = self.every(&snapshot);
            return Detection {
                outcome: Outcome::Changed(self.change(
                    kind,
                    record,
                    record.updated,
                    changed,
                    &snapshot,
                    prior,
                )),
                snapshot: Some(snapshot),
            };
        };
        // A local time in a DST fold is the instant that is not older than the snapshot.
        let updated = match record.updated_later {
            Some(later) if record.updated < prior.updated && later >= prior.updated => later,
            _ => record.updated,
        };
        let proven_older = matches!(
            (record.revision, prior.revision),
            (Some(copy), Some(known)) if copy < known
        );
        if proven_older && updated <= prior.updated {
            return Detection {
                outcome: Outcome::Stale,
                snapshot: None,
            };
        }
        // The common case (an overlap re-read, nothing changed) is one 64-bit comparison; the
        // fields are compared only when the record fingerprint differs.
        let mut changed = Vec::new();
        let mut learnt = false;
        let mut whole_changed = Vec::new();
        if let (Some(whole), true) = (&self.whole, fingerprint.record != prior.fingerprint.record) {
            (whole_changed, learnt) = whole.changed(&fingerprint, &prior.fingerprint);
        } else if fingerprint.record != prior.fingerprint.record {
            let same_layout = Arc::ptr_eq(&fingerprint.layout, &prior.fingerprint.layout)
                || fingerprint.layout == prior.fingerprint.layout;
            for (i, hash) in hashes.iter().enumerate() {
                match prior.fingerprint.field(self.tags[i]) {
                    Some(old) if old != *hash as u32 => changed.push(i),
                    Some(_) => {}
                    None => learnt = true,
                }
            }
            // Same fields, different record fingerprint, no field fingerprint differs: a 32-bit
            // collision hides which field changed (2^-32 per changed field). Every field is
            // listed, so no change is lost.
            if changed.is_empty() && same_layout {
                changed = (0..self.fields.len()).collect();
            }
            // Fields that are no longer configured are dropped from the snapshot silently.
            learnt |= !same_layout;
        }
        let changed = match &self.whole {
            None => Changed::Listed(changed),
            Some(_) => Changed::Whole(whole_changed),
        };
        if changed.is_empty() && updated < prior.updated {
            // The same values under an older date: an older copy, or the overlap re-reading a
            // change published with a date that went back. Nothing to do.
            return Detection {
                outcome: Outcome::Stale,
                snapshot: None,
            };
        }
        let revision_moved = record.revision.is_some() && record.revision != prior.revision;
        if changed.is_empty() && !learnt && !revision_moved && updated == prior.updated {
            return Detection {
                outcome: Outcome::Unchanged,
                snapshot: None,
            };
        }
        let snapshot = Snapshot {
            updated,
            revision: record.revision,
            fingerprint,
        };
        if !changed.is_empty() {
            return Detection {
                outcome: Outcome::Changed(self.change(
                    EventType::Update,
                    record,
                    updated,
                    changed,
                    &snapshot,
                    Some(prior),
                )),
                snapshot: Some(snapshot),
            };
        }
        Detection {
            outcome: if updated == prior.updated {
                Outcome::Unchanged
            } else {
                Outcome::NoOp
            },
            snapshot: Some(snapshot),
        }
    }

    /// The change of `record`: `changed` names the changed fields; their values are read from
    /// the record only now (a field of `fields = "*"` the record no longer carries is null,
    /// named from the `prior` snapshot's layout).
    fn change(
        &self,
        kind: EventType,
        record: &SourceRecord,
        updated: DateTime<Utc>,
        changed: Changed,
        snapshot: &Snapshot,
        prior: Option<&Snapshot>,
    ) -> Change {
        let changed = match changed {
            Changed::Listed(indexes) => indexes
                .into_iter()
                .map(|i| (self.fields[i].0.clone(), self.value(i, &record.raw)))
                .collect(),
            Changed::Whole(tags) => {
                let whole = self.whole.as_deref().expect("whole-record detector");
                whole.values(
                    &record.id,
                    &tags,
                    &record.raw,
                    &snapshot.fingerprint.layout,
                    prior.map(|p| &*p.fingerprint.layout),
                )
            }
        };
        Change {
            kind,
            id: record.id.clone(),
            timestamp: updated,
            changed,
            on_behalf_of: self.on_behalf_of(Some(&record.raw)),
            version: snapshot.version(),
        }
    }

    /// The current state of `record` as an UPDATE listing every tracked field with its value,
    /// whatever its snapshot says (`pollbus replay`: the contract has no snapshot event). Its
    /// version is the record's own — its updated date and record fingerprint, what
    /// [`Snapshot::version`] gives for the snapshot detection stores of this copy.
    pub fn replay(&self, record: &SourceRecord) -> Change {
        let fingerprint = match &self.whole {
            None => self.fingerprint(&self.hashes(&record.raw)),
            Some(whole) => whole.fingerprint(&record.raw),
        };
        let snapshot = Snapshot {
            updated: record.updated,
            revision: record.revision,
            fingerprint,
        };
        let every = self.every(&snapshot);
        self.change(
            EventType::Update,
            record,
            record.updated,
            every,
            &snapshot,
            None,
        )
    }

    /// Every tracked field of the record `snapshot` was taken of.
    fn every(&self, snapshot: &Snapshot) -> Changed {
        match &self.whole {
            None => Changed::Listed((0..self.fields.len()).collect()),
            Some(_) => Changed::Whole(snapshot.fingerprint.layout.tags().to_vec()),
        }
    }

    /// The DELETE of a known record, detected at `at`. Its message id depends only on the last
    /// known version, so the audit and the reconciliation finding the same delete agree.
    pub fn deletion(&self, id: &str, prior: &Snapshot, at: DateTime<Utc>) -> Change {
        Change {
            kind: EventType::Delete,
            id: id.to_string(),
            timestamp: at,
            changed: Vec::new(),
            on_behalf_of: self.on_behalf_of(None),
            version: prior.version(),
        }
    }
}

/// The fields a change lists: indexes of listed fields, or tags of whole-record fields.
enum Changed {
    Listed(Vec<usize>),
    Whole(Vec<u32>),
}

impl Changed {
    fn is_empty(&self) -> bool {
        match self {
            Changed::Listed(v) => v.is_empty(),
            Changed::Whole(v) => v.is_empty(),
        }
    }
}

/// Whole-record tracking (`fields = "*"`): which top-level fields are left out, and the
/// warnings given once.
#[derive(Debug)]
struct Whole {
    exclude: HashSet<String>,
    /// Whether a field that cannot be tracked (a name that is no contract field name, two
    /// names with one tag, a vanished field whose name is unknown) was warned about.
    warned: AtomicBool,
    /// The named layouts of the field sets seen, by layout id: records of one shape share one
    /// (no names copied per record), and an equal layout is the same `Arc`.
    layouts: Mutex<HashMap<u32, Arc<Layout>>>,
}

/// Field sets [`Whole`] keeps named layouts of; a vendor whose records vary more (it omits
/// nulls) starts over past it.
const WHOLE_LAYOUTS_KEPT: usize = 1024;

impl Whole {
    /// The tracked fields of `raw`: every top-level key but the excluded ones, with its tag
    /// and value hash, in tag order.
    fn fields<'a>(&self, raw: &'a Value) -> Vec<(u32, &'a str, u64)> {
        let Some(object) = raw.as_object() else {
            return Vec::new();
        };
        let mut fields: Vec<(u32, &str, u64)> = object
            .iter()
            .filter(|(k, _)| !self.exclude.contains(k.as_str()))
            .filter(|(k, _)| {
                let ok = !k.trim().is_empty() && !k.contains(',');
                if !ok {
                    self.warn_once(&format!(
                        "vendor field {k:?} is not a contract field name (empty or with ','): not tracked"
                    ));
                }
                ok
            })
            .map(|(k, v)| (name_tag(k), k.as_str(), value_hash(v)))
            .collect();
        fields.sort_unstable_by_key(|f| f.0);
        let before = fields.len();
        fields.dedup_by_key(|f| f.0);
        if fields.len() != before {
            self.warn_once(
                "two vendor field names share a 32-bit fingerprint tag (about one record shape in 10^6 at 100 fields): the second is not tracked",
            );
        }
        fields
    }

    /// The fingerprint of `raw`'s tracked fields, under a layout that names them.
    fn fingerprint(&self, raw: &Value) -> Fingerprint {
        let fields = self.fields(raw);
        let plain = Layout::new(fields.iter().map(|f| f.0).collect());
        let layout = {
            let mut known = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
            match known.get(&plain.id()) {
                Some(l) if **l == plain => l.clone(),
                _ => {
                    if known.len() >= WHOLE_LAYOUTS_KEPT {
                        known.clear();
                    }
                    let named = Arc::new(Layout::named(
                        fields.iter().map(|f| (f.0, f.1.to_string())).collect(),
                    ));
                    known.insert(named.id(), named.clone());
                    named
                }
            }
        };
        let hashes: Vec<(u32, u64)> = fields.iter().map(|f| (f.0, f.2)).collect();
        Fingerprint::from_hashes(layout, &hashes)
    }

    /// The tags of the fields that differ between `now` and `prior` (a field only one of them
    /// has compares with null), and whether the snapshot learns something without a change
    /// (a field appearing as null, a field the earlier layout did not have).
    fn changed(&self, now: &Fingerprint, prior: &Fingerprint) -> (Vec<u32>, bool) {
        let null = missing_hash() as u32;
        let mut changed = Vec::new();
        for (tag, hash) in now.layout.tags().iter().zip(&now.fields) {
            match prior.field(*tag) {
                Some(old) if old != *hash => changed.push(*tag),
                Some(_) => {}
                None if *hash != null => changed.push(*tag),
                None => {}
            }
        }
        for (tag, hash) in prior.layout.tags().iter().zip(&prior.fields) {
            if now.field(*tag).is_none() && *hash != null {
                changed.push(*tag);
            }
        }
        let same_layout = now.layout == prior.layout;
        // Same fields, different record fingerprint, no field fingerprint differs: a 32-bit
        // collision hides which field changed; every field is listed so nothing is lost.
        if changed.is_empty() && same_layout {
            changed = now.layout.tags().to_vec();
        }
        (changed, !same_layout)
    }

    /// The changed fields of record `id` with their values, sorted by name: read from `raw`,
    /// or null for a field it no longer carries (named by the prior snapshot's layout).
    fn values(
        &self,
        id: &str,
        tags: &[u32],
        raw: &Value,
        now: &Layout,
        prior: Option<&Layout>,
    ) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = Vec::with_capacity(tags.len());
        for tag in tags {
            if let Some(name) = now.name_of(*tag) {
                out.push((
                    name.to_string(),
                    raw.get(name).cloned().unwrap_or(Value::Null),
                ));
            } else if let Some(name) = prior.and_then(|p| p.name_of(*tag)) {
                out.push((name.to_string(), Value::Null));
            } else {
                self.warn_once(&format!(
                    "record {id}: a field it no longer carries (tag {tag:08x}) has no known name (its snapshot was written without field names); it is left out of changedFields"
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn warn_once(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("fields = \"*\": {what} (warned once per resource)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detector() -> Detector {
        Detector::new(
            vec![
                ("FirstName".into(), FieldPath::parse("first_name").unwrap()),
                ("City".into(), FieldPath::parse("address.city").unwrap()),
            ],
            OnBehalfOfSource::Field(FieldPath::parse("by").unwrap()),
            Duration::from_secs(1),
        )
    }

    fn rec(updated: &str, created: Option<&str>, name: &str, city: &str) -> SourceRecord {
        SourceRecord {
            id: "1".into(),
            updated: updated.parse().unwrap(),
            updated_later: None,
            revision: None,
            created: created.map(|c| c.parse().unwrap()),
            class: None,
            raw: json!({"first_name": name, "address": {"city": city}, "by": "IFS"}),
            degraded: None,
        }
    }

    /// A baseline that started long after every record of these tests.
    fn baseline() -> Phase {
        Phase::Baseline {
            changed_since: "2100-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn changed(d: &Detection) -> (EventType, Vec<&str>) {
        match &d.outcome {
            Outcome::Changed(c) => (c.kind, c.changed.iter().map(|(k, _)| k.as_str()).collect()),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn new_record_is_create_when_created_close_to_updated() {
        let r = rec(
            "2024-01-01T00:00:01Z",
            Some("2024-01-01T00:00:00.5Z"),
            "Åse",
            "Tromsø",
        );
        let d = detector().detect(&r, None, Phase::Steady);
        assert_eq!(changed(&d), (EventType::Create, vec!["FirstName", "City"]));
        let Outcome::Changed(c) = &d.outcome else {
            unreachable!()
        };
        assert_eq!(c.on_behalf_of.as_deref(), Some("IFS"));
    }

    #[test]
    fn new_record_is_update_when_created_long_before_or_unknown() {
        let r = rec(
            "2024-01-01T00:00:05Z",
            Some("2024-01-01T00:00:00Z"),
            "A",
            "B",
        );
        assert_eq!(
            changed(&detector().detect(&r, None, Phase::Steady)).0,
            EventType::Update
        );
        let r = rec("2024-01-01T00:00:05Z", None, "A", "B");
        assert_eq!(
            changed(&detector().detect(&r, None, Phase::Steady)).0,
            EventType::Update
        );
    }

    #[test]
    fn baseline_is_silent_but_remembers() {
        let r = rec("2024-01-01T00:00:00Z", None, "A", "B");
        let d = detector().detect(&r, None, baseline());
        assert_eq!(d.outcome, Outcome::Baseline);
        assert!(d.snapshot.is_some());
    }

    #[test]
    fn update_lists_only_differing_fields() {
        let det = detector();
        let old = rec("2024-01-01T00:00:00Z", None, "A", "Oslo");
        let snap = det.detect(&old, None, baseline()).snapshot.unwrap();
        let new = rec("2024-01-01T00:00:00Z", None, "A", "Bergen");
        let d = det.detect(&new, Some(&snap), Phase::Steady);
        assert_eq!(changed(&d), (EventType::Update, vec!["City"]));
        let Outcome::Changed(c) = d.outcome else {
            unreachable!()
        };
        assert_eq!(c.changed[0].1, json!("Bergen"));
    }

    #[test]
    fn unchanged_noop_and_stale() {
        let det = detector();
        let r = rec("2024-01-01T00:00:10Z", None, "A", "B");
        let snap = det.detect(&r, None, baseline()).snapshot.unwrap();
        let same = det.detect(&r, Some(&snap), Phase::Steady);
        assert_eq!((same.outcome, same.snapshot), (Outcome::Unchanged, None));
        let later = rec("2024-01-01T00:00:20Z", None, "A", "B");
        let noop = det.detect(&later, Some(&snap), Phase::Steady);
        assert_eq!(noop.outcome, Outcome::NoOp);
        assert_eq!(noop.snapshot.unwrap().updated, later.updated);
        let older = rec("2024-01-01T00:00:05Z", None, "A", "B");
        let stale = det.detect(&older, Some(&snap), Phase::Steady);
        assert_eq!((stale.outcome, stale.snapshot), (Outcome::Stale, None));
    }

    #[test]
    fn other_values_under_an_older_or_equal_date_are_published() {
        let det = detector();
        let snap = det
            .detect(
                &rec("2024-01-01T00:00:10Z", None, "A", "B"),
                None,
                baseline(),
            )
            .snapshot
            .unwrap();
        for date in ["2024-01-01T00:00:05Z", "2024-01-01T00:00:10Z"] {
            let back = rec(date, None, "A", "C");
            let d = det.detect(&back, Some(&snap), Phase::Steady);
            assert_eq!(changed(&d), (EventType::Update, vec!["City"]), "{date}");
            let Outcome::Changed(c) = &d.outcome else {
                unreachable!()
            };
            assert_eq!(c.timestamp, back.updated);
            // The snapshot holds this copy: re-reading it publishes nothing more.
            let again = det.detect(&back, d.snapshot.as_ref(), Phase::Steady);
            assert_eq!(again.outcome, Outcome::Unchanged, "{date}");
        }
    }

    #[test]
    fn a_revision_proves_a_copy_older_than_the_date_can() {
        let det = detector();
        let versioned = |updated: &str, city: &str, revision: Option<u64>| SourceRecord {
            revision,
            ..rec(updated, None, "A", city)
        };
        let snap = det
            .detect(
                &versioned("2024-01-01T00:00:10Z", "B", Some(5)),
                None,
                baseline(),
            )
            .snapshot
            .unwrap();
        assert_eq!(snap.revision, Some(5));
        // a lagging replica: lower revision, date not newer → stale, whatever the values
        for date in ["2024-01-01T00:00:05Z", "2024-01-01T00:00:10Z"] {
            let d = det.detect(&versioned(date, "Old", Some(4)), Some(&snap), Phase::Steady);
            assert_eq!((d.outcome, d.snapshot), (Outcome::Stale, None), "{date}");
        }
        // a later revision under an earlier date (node skew) → published
        let d = det.detect(
            &versioned("2024-01-01T00:00:05Z", "New", Some(6)),
            Some(&snap),
            Phase::Steady,
        );
        assert_eq!(changed(&d), (EventType::Update, vec!["City"]));
        assert_eq!(d.snapshot.unwrap().revision, Some(6));
        // no revision on either side proves nothing → published
        let d = det.detect(
            &versioned("2024-01-01T00:00:05Z", "Old", None),
            Some(&snap),
            Phase::Steady,
        );
        assert_eq!(changed(&d).0, EventType::Update);
        // a revision that moved with no tracked change is remembered without a message
        let d = det.detect(
            &versioned("2024-01-01T00:00:10Z", "B", Some(7)),
            Some(&snap),
            Phase::Steady,
        );
        assert_eq!(d.outcome, Outcome::Unchanged);
        assert_eq!(d.snapshot.unwrap().revision, Some(7));
    }

    #[test]
    fn a_local_time_in_a_dst_fold_is_the_instant_not_older_than_the_snapshot() {
        let det = detector();
        // 01:50 PDT (08:50 UTC) is known; the vendor now writes 01:20, which is 08:20 UTC
        // (PDT) or 09:20 UTC (PST).
        let snap = det
            .detect(
                &rec("2024-11-03T08:50:00Z", None, "A", "B"),
                None,
                baseline(),
            )
            .snapshot
            .unwrap();
        let folded = SourceRecord {
            updated_later: Some("2024-11-03T09:20:00Z".parse().unwrap()),
            ..rec("2024-11-03T08:20:00Z", None, "A", "C")
        };
        let d = det.detect(&folded, Some(&snap), Phase::Steady);
        assert_eq!(changed(&d), (EventType::Update, vec!["City"]));
        let Outcome::Changed(c) = &d.outcome else {
            unreachable!()
        };
        assert_eq!(
            c.timestamp,
            "2024-11-03T09:20:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let snap = d.snapshot.unwrap();
        assert_eq!(snap.updated, c.timestamp);
        // the next poll reads the same text: the same instant, nothing to publish
        assert_eq!(
            det.detect(&folded, Some(&snap), Phase::Steady).outcome,
            Outcome::Unchanged
        );
    }

    #[test]
    fn a_baseline_publishes_records_changed_after_it_started() {
        let det = detector();
        let phase = Phase::Baseline {
            changed_since: "2024-01-01T12:00:00Z".parse().unwrap(),
        };
        let before = rec(
            "2024-01-01T11:59:59Z",
            Some("2024-01-01T00:00:00Z"),
            "A",
            "B",
        );
        assert_eq!(det.detect(&before, None, phase).outcome, Outcome::Baseline);
        for at in ["2024-01-01T12:00:00Z", "2024-01-01T12:30:00Z"] {
            let during = rec(at, Some("2024-01-01T00:00:00Z"), "A", "B");
            let d = det.detect(&during, None, phase);
            assert_eq!(changed(&d), (EventType::Update, vec!["FirstName", "City"]));
            assert!(d.snapshot.is_some());
        }
        // created during the baseline: a CREATE, as after it
        let created = rec(
            "2024-01-01T12:30:00Z",
            Some("2024-01-01T12:30:00Z"),
            "A",
            "B",
        );
        assert_eq!(
            changed(&det.detect(&created, None, phase)).0,
            EventType::Create
        );
    }

    #[test]
    fn a_snapshot_stored_as_values_converts_to_the_fingerprint_detection_makes() {
        let det = detector();
        let r = rec("2024-01-01T00:00:10Z", None, "A", "B");
        let snap = Snapshot {
            revision: Some(9),
            ..det.detect(&r, None, baseline()).snapshot.unwrap()
        };
        // as pollbus stored it before fingerprints: the tracked values and the revision
        let old: Map<String, Value> =
            serde_json::from_value(json!({"FirstName": "A", "City": "B", ",revision": 9})).unwrap();
        let back = Snapshot::from_legacy(snap.updated, old);
        assert_eq!(back, snap);
        assert_eq!(
            det.detect(&r, Some(&back), Phase::Steady).outcome,
            Outcome::Unchanged
        );
        // snapshots stored before revisions existed
        let old: Map<String, Value> =
            serde_json::from_value(json!({"FirstName": "A", "City": "B"})).unwrap();
        let back = Snapshot::from_legacy(snap.updated, old);
        assert_eq!(back.revision, None);
        // the message version ignores the revision
        assert_eq!(back.version(), snap.version());
        // a converted value that differs is found as before
        let changed_city = rec("2024-01-01T00:00:20Z", None, "A", "C");
        assert_eq!(
            changed(&det.detect(&changed_city, Some(&back), Phase::Steady)),
            (EventType::Update, vec!["City"])
        );
    }

    #[test]
    fn newly_configured_field_is_learnt_silently() {
        let det = detector();
        let r = rec("2024-01-01T00:00:10Z", None, "A", "B");
        // a snapshot written while only FirstName was tracked
        let old: Map<String, Value> = serde_json::from_value(json!({"FirstName": "A"})).unwrap();
        let snap = Snapshot::from_legacy(r.updated, old.clone());
        let d = det.detect(&r, Some(&snap), Phase::Steady);
        assert_eq!(d.outcome, Outcome::Unchanged);
        let learnt = d.snapshot.unwrap();
        assert_eq!(learnt.fingerprint.layout, det.layout);
        // and a change of the old field alone is still told apart from the new field
        let r2 = rec("2024-01-01T00:00:20Z", None, "Z", "B");
        assert_eq!(
            changed(&det.detect(&r2, Some(&snap), Phase::Steady)),
            (EventType::Update, vec!["FirstName"])
        );
        // a field no longer configured is dropped silently
        let wider: Map<String, Value> =
            serde_json::from_value(json!({"FirstName": "A", "City": "B", "Gone": 1})).unwrap();
        let d = det.detect(
            &r,
            Some(&Snapshot::from_legacy(r.updated, wider)),
            Phase::Steady,
        );
        assert_eq!(d.outcome, Outcome::Unchanged);
        assert_eq!(d.snapshot.unwrap().fingerprint.layout, det.layout);
    }

    /// Injected: a snapshot whose record fingerprint differs while every field fingerprint
    /// matches (what a 32-bit field collision looks like). Every field is listed: the UPDATE is
    /// wider, nothing is lost.
    #[test]
    fn a_field_fingerprint_collision_lists_every_field() {
        let det = detector();
        let r = rec("2024-01-01T00:00:10Z", None, "A", "B");
        let mut snap = det.detect(&r, None, baseline()).snapshot.unwrap();
        snap.fingerprint.record ^= 1;
        let later = rec("2024-01-01T00:00:20Z", None, "A", "B");
        assert_eq!(
            changed(&det.detect(&later, Some(&snap), Phase::Steady)),
            (EventType::Update, vec!["FirstName", "City"])
        );
    }

    #[test]
    fn version_is_the_date_and_the_record_fingerprint() {
        let values: Map<String, Value> = serde_json::from_value(
            json!({"A": "Strøm \"q\"", "B": null, "C": {"x": [1, 2.5]}, "D": 12345678901234567890u64}),
        )
        .unwrap();
        let snapshot = Snapshot::from_legacy("2024-05-01T10:00:00Z".parse().unwrap(), values);
        let expected = format!("1714557600000000000|{:016x}", snapshot.fingerprint.record);
        assert_eq!(snapshot.version(), expected);
        assert_eq!(snapshot.version(), "1714557600000000000|6b432d7da85249c5");
    }

    #[test]
    fn a_replay_is_an_update_of_every_field_with_the_records_own_version() {
        let det = detector();
        let r = rec(
            "2024-01-01T00:00:10Z",
            Some("2024-01-01T00:00:10Z"),
            "Åse",
            "Tromsø",
        );
        let c = det.replay(&r);
        assert_eq!(
            c.kind,
            EventType::Update,
            "never a CREATE, even when just created"
        );
        assert_eq!(
            c.changed,
            vec![
                ("FirstName".to_string(), json!("Åse")),
                ("City".to_string(), json!("Tromsø"))
            ]
        );
        assert_eq!(
            (c.id.as_str(), c.timestamp, c.on_behalf_of.as_deref()),
            ("1", r.updated, Some("IFS"))
        );
        // the version detection stores for this copy, whatever snapshot is known
        let stored = det.detect(&r, None, Phase::Steady).snapshot.unwrap();
        assert_eq!(c.version, stored.version());
        let older = det
            .detect(
                &rec("2024-01-01T00:00:00Z", None, "A", "B"),
                None,
                baseline(),
            )
            .snapshot
            .unwrap();
        assert_eq!(
            det.detect(&r, Some(&older), Phase::Steady)
                .snapshot
                .unwrap()
                .version(),
            c.version
        );
        // another value, another version
        let moved = rec("2024-01-01T00:00:10Z", None, "Åse", "Bodø");
        assert_ne!(det.replay(&moved).version, c.version);
    }

    #[test]
    fn versions_differ_by_values_and_deletion_uses_the_last_one() {
        let det = detector();
        let a = det.detect(
            &rec("2024-01-01T00:00:10Z", None, "A", "B"),
            None,
            baseline(),
        );
        let b = det.detect(
            &rec("2024-01-01T00:00:10Z", None, "A", "C"),
            None,
            baseline(),
        );
        let (a, b) = (a.snapshot.unwrap(), b.snapshot.unwrap());
        assert_ne!(a.version(), b.version());
        let del = det.deletion("1", &a, "2024-02-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            (del.kind, del.version, del.on_behalf_of),
            (EventType::Delete, a.version(), None)
        );
    }

    fn whole() -> Detector {
        Detector::whole(
            [
                "sys_id".to_string(),
                "sys_updated_on".to_string(),
                "sys_mod_count".to_string(),
            ],
            OnBehalfOfSource::None,
            Duration::from_secs(1),
        )
    }

    fn raw_rec(updated: &str, raw: Value) -> SourceRecord {
        SourceRecord {
            id: "1".into(),
            updated: updated.parse().unwrap(),
            updated_later: None,
            revision: None,
            created: None,
            class: None,
            raw,
            degraded: None,
        }
    }

    fn values(d: &Detection) -> Vec<(String, Value)> {
        match &d.outcome {
            Outcome::Changed(c) => c.changed.clone(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn whole_record_tracking_lists_exactly_the_changed_top_level_fields() {
        let d = whole();
        let first = raw_rec(
            "2024-01-01T00:00:00Z",
            json!({"sys_id": "a1", "sys_updated_on": "2024-01-01 00:00:00", "sys_mod_count": "3",
                   "short_description": "Printer", "state": "1", "caller": {"id": "u7"}, "note": null}),
        );
        let created = d.detect(&first, None, Phase::Steady);
        assert_eq!(
            changed(&created),
            (
                EventType::Update,
                vec!["caller", "note", "short_description", "state"]
            ),
            "every tracked field by name, the excluded ones left out"
        );
        let prior = created.snapshot.unwrap();
        // Bookkeeping changes alone are no change.
        let touched = raw_rec(
            "2024-01-01T00:01:00Z",
            json!({"sys_id": "a1", "sys_updated_on": "2024-01-01 00:01:00", "sys_mod_count": "4",
                   "short_description": "Printer", "state": "1", "caller": {"id": "u7"}, "note": null}),
        );
        assert_eq!(
            d.detect(&touched, Some(&prior), Phase::Steady).outcome,
            Outcome::NoOp
        );
        // A value changes, a nested object changes, a null field vanishes (null either way).
        let next = raw_rec(
            "2024-01-01T00:02:00Z",
            json!({"sys_id": "a1", "sys_updated_on": "2024-01-01 00:02:00", "sys_mod_count": "5",
                   "short_description": "Printer", "state": "2", "caller": {"id": "u8"}}),
        );
        let det = d.detect(&next, Some(&prior), Phase::Steady);
        assert_eq!(
            values(&det),
            vec![
                ("caller".to_string(), json!({"id": "u8"})),
                ("state".to_string(), json!("2")),
            ]
        );
        let prior = det.snapshot.unwrap();
        // A field the record stops carrying is a change to null, named from the snapshot; a
        // field that appears with a value is a change from null.
        let later = raw_rec(
            "2024-01-01T00:03:00Z",
            json!({"sys_id": "a1", "sys_updated_on": "2024-01-01 00:03:00",
                   "state": "2", "caller": {"id": "u8"}, "priority": 1}),
        );
        let det = d.detect(&later, Some(&prior), Phase::Steady);
        assert_eq!(
            values(&det),
            vec![
                ("priority".to_string(), json!(1)),
                ("short_description".to_string(), Value::Null),
            ]
        );
        // The same copy again: nothing.
        let again = d.detect(&later, det.snapshot.as_ref(), Phase::Steady);
        assert_eq!(again.outcome, Outcome::Unchanged);
    }

    #[test]
    fn whole_record_tracking_names_a_vanished_field_only_from_a_layout_that_knows_names() {
        let d = whole();
        let first = raw_rec("2024-01-01T00:00:00Z", json!({"a": 1, "b": 2}));
        let prior = d.detect(&first, None, Phase::Steady).snapshot.unwrap();
        // The same fingerprint under a layout read from a store that kept no names.
        let nameless = Snapshot {
            fingerprint: Fingerprint {
                layout: Arc::new(Layout::new(prior.fingerprint.layout.tags().to_vec())),
                ..prior.fingerprint.clone()
            },
            ..prior.clone()
        };
        let next = raw_rec("2024-01-01T00:01:00Z", json!({"a": 1}));
        assert_eq!(
            values(&d.detect(&next, Some(&prior), Phase::Steady)),
            vec![("b".to_string(), Value::Null)]
        );
        let det = d.detect(&next, Some(&nameless), Phase::Steady);
        assert!(
            matches!(&det.outcome, Outcome::Changed(c) if c.changed.is_empty()),
            "still an UPDATE (the record changed), without the field it cannot name: {det:?}"
        );
    }

    #[test]
    fn whole_records_of_one_shape_share_one_named_layout() {
        let d = whole();
        let a = d.detect(
            &raw_rec("2024-01-01T00:00:00Z", json!({"a": 1, "b": "x"})),
            None,
            Phase::Steady,
        );
        let b = d.detect(
            &raw_rec("2024-01-01T00:00:00Z", json!({"a": 2, "b": "y"})),
            None,
            Phase::Steady,
        );
        let (a, b) = (a.snapshot.unwrap(), b.snapshot.unwrap());
        assert!(Arc::ptr_eq(&a.fingerprint.layout, &b.fingerprint.layout));
        assert_eq!(a.fingerprint.layout.name_of(name_tag("b")), Some("b"));
    }

    #[test]
    fn a_whole_record_replay_lists_every_field_by_name() {
        let r = raw_rec(
            "2024-01-01T00:00:00Z",
            json!({"sys_id": "a1", "sys_mod_count": "2", "b": 2, "a": null}),
        );
        let change = whole().replay(&r);
        assert_eq!(change.kind, EventType::Update);
        assert_eq!(
            change.changed,
            vec![("a".to_string(), Value::Null), ("b".to_string(), json!(2))]
        );
    }

    #[test]
    fn whole_record_tracking_skips_names_a_contract_cannot_carry() {
        let d = whole();
        let r = raw_rec("2024-01-01T00:00:00Z", json!({"a,b": 1, " ": 2, "ok": 3}));
        assert_eq!(changed(&d.detect(&r, None, Phase::Steady)).1, vec!["ok"]);
    }
}
