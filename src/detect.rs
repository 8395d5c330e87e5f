//! Change detection: a record compared with its stored snapshot becomes a CREATE, an UPDATE
//! with exactly the changed fields, or nothing.
//!
//! Rules (per record, tracked fields only):
//! - no snapshot, during the baseline: store a snapshot, publish nothing;
//! - no snapshot after the baseline: CREATE when `created` and `updated` differ by at most the
//!   tolerance, otherwise UPDATE (a record we never saw that was changed since it was created);
//!   both list every tracked field (the Cloud Elements rule);
//! - snapshot newer than the record: stale copy (e.g. a lagging replica or the overlap window),
//!   ignored;
//! - tracked values differ: UPDATE listing only the differing fields, in configuration order;
//! - no tracked difference: no message (a no-op update, counted); the snapshot's date moves.
//!
//! A field added to the configuration later is absent from old snapshots; it is learnt silently
//! rather than reported as a change of every record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::contract::{Change, EventType};
use crate::record::{scalar_text, FieldPath, SourceRecord};

/// What is stored about a record between polls: its tracked values, not the whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The record's updated date when last seen.
    pub updated: DateTime<Utc>,
    /// Tracked values by contract field name.
    pub values: Map<String, Value>,
}

impl Snapshot {
    /// Identifies this version of the record: its date and a hash of its tracked values.
    pub fn version(&self) -> String {
        /// Feeds serialized JSON straight into the hash (no string per value).
        struct Feed<'a>(&'a mut Sha256);
        impl std::io::Write for Feed<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Sha256::new();
        for (k, v) in &self.values {
            h.update(k.as_bytes());
            h.update([0]);
            serde_json::to_writer(Feed(&mut h), v).expect("a JSON value serializes");
            h.update([0]);
        }
        format!(
            "{}|{}",
            self.updated.timestamp_nanos_opt().unwrap_or_default(),
            hex::encode(&h.finalize()[..8])
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
    /// Older than what we have: ignored.
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

/// Compares records of one resource with their snapshots.
#[derive(Debug, Clone)]
pub struct Detector {
    fields: Vec<(String, FieldPath)>,
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
        Detector {
            fields,
            on_behalf_of,
            create_tolerance,
        }
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

    /// The tracked values of a record (missing paths are null).
    pub fn values(&self, record: &Value) -> Map<String, Value> {
        self.fields
            .iter()
            .map(|(name, path)| {
                (
                    name.clone(),
                    path.get(record).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
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

    /// Compares `record` with its stored snapshot. `baseline` is true while the resource's
    /// first poll is taking its silent baseline.
    pub fn detect(
        &self,
        record: &SourceRecord,
        prior: Option<&Snapshot>,
        baseline: bool,
    ) -> Detection {
        let Some(prior) = prior else {
            let snapshot = Snapshot {
                updated: record.updated,
                values: self.values(&record.raw),
            };
            if baseline {
                return Detection {
                    outcome: Outcome::Baseline,
                    snapshot: Some(snapshot),
                };
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
            let changed = self
                .fields
                .iter()
                .map(|(name, _)| (name.clone(), snapshot.values[name].clone()))
                .collect();
            return Detection {
                outcome: Outcome::Changed(self.change(kind, record, changed, &snapshot)),
                snapshot: Some(snapshot),
            };
        };
        if record.updated < prior.updated {
            return Detection {
                outcome: Outcome::Stale,
                snapshot: None,
            };
        }
        // Compare in place: the common case (an overlap re-read, nothing changed) allocates
        // nothing; the new snapshot is built only when something must be written.
        let mut changed = Vec::new();
        let mut learnt = false;
        for (name, path) in &self.fields {
            let value = path.get(&record.raw).unwrap_or(&Value::Null);
            match prior.values.get(name) {
                Some(old) if old != value => changed.push((name.clone(), value.clone())),
                Some(_) => {}
                None => learnt = true,
            }
        }
        if changed.is_empty() && !learnt && record.updated == prior.updated {
            return Detection {
                outcome: Outcome::Unchanged,
                snapshot: None,
            };
        }
        let snapshot = Snapshot {
            updated: record.updated,
            values: self.values(&record.raw),
        };
        if !changed.is_empty() {
            return Detection {
                outcome: Outcome::Changed(self.change(
                    EventType::Update,
                    record,
                    changed,
                    &snapshot,
                )),
                snapshot: Some(snapshot),
            };
        }
        Detection {
            outcome: if record.updated == prior.updated {
                Outcome::Unchanged
            } else {
                Outcome::NoOp
            },
            snapshot: Some(snapshot),
        }
    }

    fn change(
        &self,
        kind: EventType,
        record: &SourceRecord,
        changed: Vec<(String, Value)>,
        snapshot: &Snapshot,
    ) -> Change {
        Change {
            kind,
            id: record.id.clone(),
            timestamp: record.updated,
            changed,
            on_behalf_of: self.on_behalf_of(Some(&record.raw)),
            version: snapshot.version(),
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
            created: created.map(|c| c.parse().unwrap()),
            class: None,
            raw: json!({"first_name": name, "address": {"city": city}, "by": "IFS"}),
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
        let d = detector().detect(&r, None, false);
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
            changed(&detector().detect(&r, None, false)).0,
            EventType::Update
        );
        let r = rec("2024-01-01T00:00:05Z", None, "A", "B");
        assert_eq!(
            changed(&detector().detect(&r, None, false)).0,
            EventType::Update
        );
    }

    #[test]
    fn baseline_is_silent_but_remembers() {
        let r = rec("2024-01-01T00:00:00Z", None, "A", "B");
        let d = detector().detect(&r, None, true);
        assert_eq!(d.outcome, Outcome::Baseline);
        assert!(d.snapshot.is_some());
    }

    #[test]
    fn update_lists_only_differing_fields() {
        let det = detector();
        let old = rec("2024-01-01T00:00:00Z", None, "A", "Oslo");
        let snap = det.detect(&old, None, true).snapshot.unwrap();
        let new = rec("2024-01-01T00:00:00Z", None, "A", "Bergen");
        let d = det.detect(&new, Some(&snap), false);
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
        let snap = det.detect(&r, None, true).snapshot.unwrap();
        let same = det.detect(&r, Some(&snap), false);
        assert_eq!((same.outcome, same.snapshot), (Outcome::Unchanged, None));
        let later = rec("2024-01-01T00:00:20Z", None, "A", "B");
        let noop = det.detect(&later, Some(&snap), false);
        assert_eq!(noop.outcome, Outcome::NoOp);
        assert_eq!(noop.snapshot.unwrap().updated, later.updated);
        let older = rec("2024-01-01T00:00:05Z", None, "X", "Y");
        assert_eq!(
            det.detect(&older, Some(&snap), false).outcome,
            Outcome::Stale
        );
    }

    #[test]
    fn newly_configured_field_is_learnt_silently() {
        let det = detector();
        let r = rec("2024-01-01T00:00:10Z", None, "A", "B");
        let mut snap = det.detect(&r, None, true).snapshot.unwrap();
        snap.values.remove("City");
        let d = det.detect(&r, Some(&snap), false);
        assert_eq!(d.outcome, Outcome::Unchanged);
        assert!(d.snapshot.unwrap().values.contains_key("City"));
    }

    #[test]
    fn version_hashes_each_value_as_its_json_text() {
        let values: Map<String, Value> = serde_json::from_value(
            json!({"A": "Strøm \"q\"", "B": null, "C": {"x": [1, 2.5]}, "D": 12345678901234567890u64}),
        )
        .unwrap();
        let snapshot = Snapshot {
            updated: "2024-05-01T10:00:00Z".parse().unwrap(),
            values: values.clone(),
        };
        // The message id depends on it: the same bytes as hashing each value's `to_string()`.
        let mut h = Sha256::new();
        for (k, v) in &values {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.to_string().as_bytes());
            h.update([0]);
        }
        let expected = format!("1714557600000000000|{}", hex::encode(&h.finalize()[..8]));
        assert_eq!(snapshot.version(), expected);
    }

    #[test]
    fn versions_differ_by_values_and_deletion_uses_the_last_one() {
        let det = detector();
        let a = det.detect(&rec("2024-01-01T00:00:10Z", None, "A", "B"), None, true);
        let b = det.detect(&rec("2024-01-01T00:00:10Z", None, "A", "C"), None, true);
        let (a, b) = (a.snapshot.unwrap(), b.snapshot.unwrap());
        assert_ne!(a.version(), b.version());
        let del = det.deletion("1", &a, "2024-02-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            (del.kind, del.version, del.on_behalf_of),
            (EventType::Delete, a.version(), None)
        );
    }
}
