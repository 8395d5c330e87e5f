//! A resource ready to poll: the runtime form of a [`ResourceConfig`], with the record reader
//! and detector compiled from it and the vendor's defaults filled in.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::narrow::RecordKeys;
use crate::config::{ResourceConfig, SourceConfig};
use crate::detect::{Detector, OnBehalfOfSource};
use crate::formats::datefmt::{JavaDateFormat, Zone};
use crate::record::{DateParser, FieldPath, RecordReader, Rfc3339};

/// A resource ready to poll: its configuration plus the reader and detector built from it.
pub struct Resource {
    /// The source's name.
    pub source: String,
    /// `sourceSystem`.
    pub source_system: String,
    /// The vendor table / resource name.
    pub name: String,
    /// The entity (`type`, topic suffix).
    pub entity: String,
    /// The configuration it was built from.
    pub config: ResourceConfig,
    /// Reads id, dates and class from raw records.
    pub reader: RecordReader,
    /// Compares records with snapshots.
    pub detector: Detector,
    /// The top-level fields `fields = "*"` leaves out (id, dates, revision, the vendor's
    /// bookkeeping fields, `exclude`), sorted; also what `check --probe --fields` leaves out.
    pub untracked: Vec<String>,
    /// Records whose class is one of these belong to another configured (child) resource and
    /// are left to it (parent/child de-duplication).
    pub skip_classes: Vec<String>,
    /// Records per page.
    pub page_size: u32,
    /// How far before the cursor a poll starts.
    pub overlap: std::time::Duration,
    /// How often the resource is polled (the source's `interval`).
    pub interval: std::time::Duration,
    /// How far ahead of pollbus's clock a record date may move the cursor.
    pub max_clock_skew: std::time::Duration,
    /// The top-level record keys this resource reads; vendors that return every column read
    /// only these (see [`super::narrow`]).
    pub record_keys: RecordKeys,
    /// Whether the warning about tracked fields missing from every record was logged (once
    /// per process and resource).
    pub missing_warned: std::sync::atomic::AtomicBool,
}

impl Resource {
    /// Builds the runtime form of `r`, a resource of `source`.
    pub fn build(source: &SourceConfig, r: &ResourceConfig) -> Resource {
        let vendor = super::vendor(source.kind);
        let defaults = vendor.defaults();
        let path = |p: &str| FieldPath::parse(p).expect("validated path");
        let id = path(r.id_field.as_deref().unwrap_or(defaults.id_field));
        let dates = &r.dates;
        let parser = |format: &Option<String>, zone: &Option<String>| -> Box<dyn DateParser> {
            let zone = zone
                .as_deref()
                .map(|z| Zone::parse(z).expect("validated zone"))
                .unwrap_or_default();
            match format.as_deref().or(defaults.date_format) {
                Some(p) => Box::new(JavaDates {
                    format: JavaDateFormat::compile(p).expect("validated pattern"),
                    zone,
                }),
                None => Box::new(Rfc3339),
            }
        };
        let reader = RecordReader {
            id,
            updated: path(
                dates
                    .updated_field
                    .as_deref()
                    .unwrap_or(defaults.updated_field),
            ),
            updated_format: parser(&dates.updated_format, &dates.updated_timezone),
            created: Some(path(
                dates
                    .created_field
                    .as_deref()
                    .unwrap_or(defaults.created_field),
            )),
            created_format: parser(&dates.created_format, &dates.created_timezone),
            class: defaults.class_field.map(path),
            revision: defaults.revision_field.map(path),
        };
        let on_behalf_of = match &r.on_behalf_of {
            Some(o) => match (&o.field, &o.value) {
                (Some(f), _) => OnBehalfOfSource::Field(path(f)),
                (None, Some(v)) => OnBehalfOfSource::Value(v.clone()),
                (None, None) => OnBehalfOfSource::None,
            },
            None => OnBehalfOfSource::None,
        };
        let fields: Vec<(String, FieldPath)> = r
            .fields
            .listed()
            .iter()
            .map(|(name, vendor)| (name.clone(), path(vendor)))
            .collect();
        let on_behalf_of_path = match &on_behalf_of {
            OnBehalfOfSource::Field(p) => Some(p.clone()),
            _ => None,
        };
        let record_keys = if r.fields.is_all() {
            RecordKeys::all()
        } else {
            RecordKeys::of(
                [Some(&reader.id), Some(&reader.updated)]
                    .into_iter()
                    .chain([
                        reader.created.as_ref(),
                        reader.class.as_ref(),
                        reader.revision.as_ref(),
                    ])
                    .chain([on_behalf_of_path.as_ref()])
                    .flatten()
                    .chain(fields.iter().map(|(_, p)| p)),
            )
        };
        let untracked = whole_record_exclusions(&reader, defaults.bookkeeping_fields, &r.exclude);
        let detector = if r.fields.is_all() {
            Detector::whole(untracked.clone(), on_behalf_of, r.create_tolerance)
        } else {
            Detector::new(fields, on_behalf_of, r.create_tolerance)
        };
        Resource {
            source: source.name.clone(),
            source_system: source.source_system.clone(),
            name: r.name.clone(),
            entity: r.entity.clone(),
            config: r.clone(),
            reader,
            detector,
            untracked,
            skip_classes: vendor.skip_classes(source, &r.name),
            page_size: source.page_size.unwrap_or(defaults.page_size),
            overlap: source.overlap,
            interval: source.interval,
            max_clock_skew: source.max_clock_skew,
            record_keys,
            missing_warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The configured paths missing from `record` (`pollbus check --probe`): id, dates, tracked
    /// fields and the on-behalf-of field, each as `what "path"`.
    pub fn missing_fields(&self, record: &Value) -> Vec<String> {
        let mut paths: Vec<(String, &FieldPath)> = vec![
            ("id_field".into(), &self.reader.id),
            ("updated date".into(), &self.reader.updated),
        ];
        if let Some(created) = &self.reader.created {
            paths.push(("created date".into(), created));
        }
        for (name, path) in self.detector.fields() {
            paths.push((format!("field {name}"), path));
        }
        if let Some(path) = self.detector.on_behalf_of_path() {
            paths.push(("on_behalf_of".into(), path));
        }
        paths
            .into_iter()
            .filter(|(_, p)| p.get(record).is_none())
            .map(|(what, p)| format!("{what} {:?}", p.as_str()))
            .collect()
    }

    /// `source/resource`, for logs and state keys.
    pub fn key(&self) -> String {
        format!("{}/{}", self.source, self.name)
    }
}

/// The top-level fields `fields = "*"` leaves out: the record's id, dates, class-independent
/// revision (read for detection or carried in the body: `id`, `timestamp`), the vendor's
/// bookkeeping fields and the user's `exclude`. A dotted path leaves out nothing (its top-level
/// object holds other fields).
pub fn whole_record_exclusions(
    reader: &RecordReader,
    bookkeeping: &[&str],
    exclude: &[String],
) -> Vec<String> {
    let own = [Some(&reader.id), Some(&reader.updated)]
        .into_iter()
        .chain([reader.created.as_ref(), reader.revision.as_ref()])
        .flatten()
        .filter(|p| p.as_str() == p.root())
        .map(|p| p.as_str().to_string());
    let mut out: Vec<String> = own
        .chain(bookkeeping.iter().map(|f| f.to_string()))
        .chain(exclude.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Vendor dates in a Java date pattern, local times in a zone; sentinels such as
/// `0001-01-01T00:00:00` read as "no date".
struct JavaDates {
    format: JavaDateFormat,
    zone: Zone,
}

impl DateParser for JavaDates {
    fn parse(&self, value: &str) -> Result<Option<DateTime<Utc>>, String> {
        self.format
            .parse_optional(value, &self.zone)
            .map_err(|e| e.to_string())
    }

    fn later_in_fold(&self, value: &str) -> Option<DateTime<Utc>> {
        self.format.later_in_fold(value, &self.zone)
    }
}
