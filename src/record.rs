//! Vendor records: reading ids, dates and tracked fields out of raw JSON.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A dotted path into a JSON record (`address.city`, `emails.0.value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

/// Why a vendor path is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty vendor path")]
    Empty,
    /// Two dots in a row, or a leading/trailing dot.
    #[error("empty segment in vendor path {0:?}")]
    EmptySegment(String),
}

impl FieldPath {
    /// Parses a dotted path.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.trim().is_empty() {
            return Err(PathError::Empty);
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(PathError::EmptySegment(text.to_string()));
        }
        Ok(FieldPath {
            text: text.to_string(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first segment (the top-level field), e.g. for `sysparm_fields`.
    pub fn root(&self) -> &str {
        &self.segments[0]
    }

    /// The value at this path, if present. Numeric segments index arrays. A top-level key that
    /// itself contains dots (`"a.b": 1`) is found too.
    pub fn get<'a>(&self, record: &'a Value) -> Option<&'a Value> {
        if let Some(v) = record.get(&self.text) {
            return Some(v);
        }
        let mut current = record;
        for segment in &self.segments {
            current = match current {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// A record as a source hands it to detection: id and dates read, the raw JSON kept for the
/// tracked fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// The record's id as a string (numbers are formatted).
    pub id: String,
    /// When the record was last updated (UTC). For a local time in a DST fold this is the
    /// earlier of its two instants (safe for the cursor); see [`SourceRecord::updated_later`].
    pub updated: DateTime<Utc>,
    /// The later instant of `updated` when the vendor wrote a local time that a DST fold makes
    /// ambiguous (01:20 on fall-back night happens twice); `None` otherwise. Detection uses it
    /// when the earlier instant would be older than the snapshot.
    pub updated_later: Option<DateTime<Utc>>,
    /// The vendor's monotonic per-record version (ServiceNow `sys_mod_count`), if it has one:
    /// it proves a copy older when the clock cannot.
    pub revision: Option<u64>,
    /// When the record was created, if known.
    pub created: Option<DateTime<Utc>>,
    /// The most specific table/class the record belongs to (ServiceNow `sys_class_name`), used
    /// to emit a parent/child record once.
    pub class: Option<String>,
    /// The vendor record (values normalized by the source, e.g. reference fields to ids).
    pub raw: Value,
    /// A problem that did not stop the record: an unreadable created date, read as unknown.
    pub degraded: Option<RecordError>,
}

/// The key of the stand-in a source puts where the vendor sent a record the JSON parser
/// refuses (a lone surrogate, nesting deeper than the parser allows) while the rest of the page
/// is fine: `{"$pollbus-unparseable": {"position": N, "reason": "…"}}`. The reader turns it into
/// [`RecordError::Unparseable`], so that record alone is skipped and counted.
pub const UNPARSEABLE: &str = "$pollbus-unparseable";

/// A record that cannot be processed; it is skipped with a warning and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No usable id.
    #[error("record has no id in field {field:?}")]
    MissingId {
        /// The id field.
        field: String,
    },
    /// No updated date.
    #[error("record {id} has no updated date in field {field:?}")]
    MissingUpdated {
        /// The record id.
        id: String,
        /// The updated field.
        field: String,
    },
    /// A date that does not match its format.
    #[error("record {id}: {field} {value:?}: {reason}")]
    BadDate {
        /// The record id.
        id: String,
        /// The date field.
        field: String,
        /// The value found.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A created date that does not match its format: the record is read with no created date.
    #[error("record {id}: created date {field} {value:?} read as unknown: {reason}")]
    BadCreated {
        /// The record id.
        id: String,
        /// The date field.
        field: String,
        /// The value found.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The vendor sent this record as JSON the parser refuses (the rest of the page was read).
    #[error("record #{position} of the page is not readable JSON: {reason}")]
    Unparseable {
        /// Its position in the page (from 0).
        position: u64,
        /// The parser's complaint.
        reason: String,
    },
}

impl RecordError {
    /// A short, stable name for the problem: the `reason` label of
    /// `pollbus_records_skipped_total` (one of [`crate::metrics::RECORD_PROBLEMS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::MissingId { .. } => "no_id",
            RecordError::MissingUpdated { .. } => "no_updated_date",
            RecordError::BadDate { .. } => "bad_date",
            RecordError::Unparseable { .. } => "unparseable",
            RecordError::BadCreated { .. } => "bad_created_date",
        }
    }

    /// The record's id, when it was read.
    pub fn id(&self) -> Option<&str> {
        match self {
            RecordError::MissingUpdated { id, .. }
            | RecordError::BadDate { id, .. }
            | RecordError::BadCreated { id, .. } => Some(id),
            RecordError::MissingId { .. } | RecordError::Unparseable { .. } => None,
        }
    }
}

/// Parses one date value; `Ok(None)` for sentinel values meaning "no date".
pub trait DateParser: Send + Sync {
    /// Parses `value` into UTC.
    fn parse(&self, value: &str) -> Result<Option<DateTime<Utc>>, String>;

    /// The later instant `value` names when it is a local time in a DST fold (where
    /// [`parse`](Self::parse) answers the earlier one); `None` when it names one instant.
    fn later_in_fold(&self, _value: &str) -> Option<DateTime<Utc>> {
        None
    }
}

/// RFC 3339 dates (`2024-05-01T10:00:00Z`, `…+02:00`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339;

impl DateParser for Rfc3339 {
    fn parse(&self, value: &str) -> Result<Option<DateTime<Utc>>, String> {
        DateTime::parse_from_rfc3339(value)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|e| format!("not an RFC 3339 date ({e})"))
    }
}

/// Reads id, dates and class out of raw records of one resource.
pub struct RecordReader {
    /// Path of the id field.
    pub id: FieldPath,
    /// Path of the updated date.
    pub updated: FieldPath,
    /// Parser of the updated date.
    pub updated_format: Box<dyn DateParser>,
    /// Path of the created date, if any.
    pub created: Option<FieldPath>,
    /// Parser of the created date.
    pub created_format: Box<dyn DateParser>,
    /// Path of the class field (ServiceNow `sys_class_name`), if any.
    pub class: Option<FieldPath>,
    /// Path of the vendor's monotonic per-record version (ServiceNow `sys_mod_count`), if any.
    pub revision: Option<FieldPath>,
}

impl RecordReader {
    /// Reads one record.
    pub fn read(&self, raw: Value) -> Result<SourceRecord, RecordError> {
        if let Some(stand_in) = raw.get(UNPARSEABLE) {
            return Err(RecordError::Unparseable {
                position: stand_in
                    .get("position")
                    .and_then(Value::as_u64)
                    .unwrap_or_default(),
                reason: stand_in
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let id = self
            .id
            .get(&raw)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RecordError::MissingId {
                field: self.id.as_str().to_string(),
            })?;
        let updated_text = self
            .updated
            .get(&raw)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RecordError::MissingUpdated {
                id: id.clone(),
                field: self.updated.as_str().to_string(),
            })?;
        let updated = self
            .updated_format
            .parse(&updated_text)
            .map_err(|reason| RecordError::BadDate {
                id: id.clone(),
                field: self.updated.as_str().to_string(),
                value: updated_text.clone(),
                reason,
            })?
            .ok_or_else(|| RecordError::MissingUpdated {
                id: id.clone(),
                field: self.updated.as_str().to_string(),
            })?;
        let mut degraded = None;
        let created = match &self.created {
            None => None,
            Some(path) => match path.get(&raw).and_then(scalar_text) {
                None => None,
                Some(text) if text.is_empty() => None,
                Some(text) => match self.created_format.parse(&text) {
                    Ok(created) => created,
                    // The created date only tells a CREATE from an UPDATE: without it the
                    // record is still published (as detection decides without a date).
                    Err(reason) => {
                        degraded = Some(RecordError::BadCreated {
                            id: id.clone(),
                            field: path.as_str().to_string(),
                            value: text.clone(),
                            reason,
                        });
                        None
                    }
                },
            },
        };
        let updated_later = self
            .updated_format
            .later_in_fold(&updated_text)
            .filter(|later| *later > updated);
        let class = self
            .class
            .as_ref()
            .and_then(|p| p.get(&raw))
            .and_then(scalar_text);
        // A version that does not read as a count is no proof of anything: ignored.
        let revision = self
            .revision
            .as_ref()
            .and_then(|p| p.get(&raw))
            .and_then(scalar_text)
            .and_then(|text| text.trim().parse::<u64>().ok());
        Ok(SourceRecord {
            id,
            updated,
            updated_later,
            revision,
            created,
            class,
            raw,
            degraded,
        })
    }
}

/// An id value as text: non-empty strings and numbers; others `None`.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Strings as they are; numbers and booleans formatted; others `None`.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reader() -> RecordReader {
        RecordReader {
            id: FieldPath::parse("id").unwrap(),
            updated: FieldPath::parse("meta.updated").unwrap(),
            updated_format: Box::new(Rfc3339),
            created: Some(FieldPath::parse("created").unwrap()),
            created_format: Box::new(Rfc3339),
            class: None,
            revision: Some(FieldPath::parse("rev").unwrap()),
        }
    }

    #[test]
    fn paths_reach_nested_values_and_array_items() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": "x"}]}, "d.e": true});
        assert_eq!(
            FieldPath::parse("a.b.1.c").unwrap().get(&v),
            Some(&json!("x"))
        );
        assert_eq!(FieldPath::parse("d.e").unwrap().get(&v), Some(&json!(true)));
        assert_eq!(FieldPath::parse("a.z").unwrap().get(&v), None);
        assert_eq!(FieldPath::parse("").unwrap_err(), PathError::Empty);
    }

    #[test]
    fn reads_numeric_ids_and_dates() {
        let r = reader()
            .read(json!({"id": 7, "meta": {"updated": "2024-05-01T10:00:00+02:00"}}))
            .unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.updated.to_rfc3339(), "2024-05-01T08:00:00+00:00");
        assert_eq!(r.created, None);
        assert_eq!((r.revision, r.updated_later), (None, None));
    }

    #[test]
    fn reads_a_revision_only_when_it_is_a_count() {
        let read = |rev: Value| {
            reader()
                .read(json!({"id": 1, "meta": {"updated": "2024-05-01T10:00:00Z"}, "rev": rev}))
                .unwrap()
                .revision
        };
        assert_eq!(read(json!("12")), Some(12));
        assert_eq!(read(json!(7)), Some(7));
        assert_eq!(read(json!("-1")), None);
        assert_eq!(read(json!("many")), None);
        assert_eq!(read(json!(null)), None);
    }

    #[test]
    fn bad_records_name_the_record_and_field() {
        let e = reader()
            .read(json!({"meta": {"updated": "x"}}))
            .unwrap_err();
        assert_eq!(e.to_string(), "record has no id in field \"id\"");
        let e = reader().read(json!({"id": "a"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record a has no updated date in field \"meta.updated\""
        );
        let e = reader()
            .read(json!({"id": "a", "meta": {"updated": "yesterday"}}))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("record a: meta.updated \"yesterday\": not an RFC 3339"),
            "{e}"
        );
    }

    #[test]
    fn an_unreadable_created_date_degrades_the_record_instead_of_skipping_it() {
        let r = reader()
            .read(
                json!({"id": "a", "meta": {"updated": "2024-05-01T10:00:00Z"}, "created": "soon"}),
            )
            .unwrap();
        assert_eq!(r.created, None);
        let problem = r.degraded.expect("noted");
        assert_eq!(problem.reason(), "bad_created_date");
        assert_eq!(problem.id(), Some("a"));
        assert!(
            problem.to_string().contains("\"soon\" read as unknown"),
            "{problem}"
        );
    }

    #[test]
    fn a_stand_in_for_unparseable_json_is_skipped_with_its_position() {
        let e = reader()
            .read(json!({UNPARSEABLE: {"position": 3, "reason": "lone leading surrogate"}}))
            .unwrap_err();
        assert_eq!(e.reason(), "unparseable");
        assert_eq!(
            e.to_string(),
            "record #3 of the page is not readable JSON: lone leading surrogate"
        );
    }

    #[test]
    fn every_problem_has_a_declared_metric_reason() {
        let problems = [
            RecordError::MissingId { field: "id".into() },
            RecordError::MissingUpdated {
                id: "a".into(),
                field: "u".into(),
            },
            RecordError::BadDate {
                id: "a".into(),
                field: "u".into(),
                value: "x".into(),
                reason: "r".into(),
            },
            RecordError::Unparseable {
                position: 0,
                reason: "r".into(),
            },
            RecordError::BadCreated {
                id: "a".into(),
                field: "c".into(),
                value: "x".into(),
                reason: "r".into(),
            },
        ];
        let reasons: Vec<&str> = problems.iter().map(RecordError::reason).collect();
        assert_eq!(reasons, crate::metrics::RECORD_PROBLEMS);
    }
}
