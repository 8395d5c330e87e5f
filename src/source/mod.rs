//! Sources: the systems pollbus polls. A source only builds requests, parses responses and
//! pages; the poll loop (`crate::poll`), detection and state are shared by all of them.
//!
//! A source answers three questions for a resource:
//! - [`Source::fetch`]: records updated at or after `since`, one page at a time, ordered by
//!   (updated, id) when [`Source::ordered`] says so;
//! - [`Source::list_ids`]: every id that exists now (for `deletes = "reconcile"`);
//! - [`Source::deleted_since`]: ids the vendor's audit says were deleted (for `deletes = "audit"`).
//!
//! Continuation tokens are opaque strings owned by the source (a keyset position, an offset, a
//! next-page URL), so the poll loop never knows a vendor's paging style.

pub mod demo;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{ResourceConfig, SourceConfig, SourceKind};
use crate::detect::{Detector, OnBehalfOfSource};
use crate::record::{FieldPath, RecordReader, Rfc3339};

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Raw records (values normalized by the source).
    pub records: Vec<Value>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<String>,
    /// HTTP requests (or equivalent) this page cost.
    pub requests: u32,
}

/// One page of ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPage {
    /// Ids that exist.
    pub ids: Vec<String>,
    /// Where the next page starts; `None` when done.
    pub next: Option<String>,
}

/// One page of audited deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletePage {
    /// Deleted ids and when they were deleted.
    pub deletes: Vec<(String, DateTime<Utc>)>,
    /// Where the next page starts; `None` when done.
    pub next: Option<String>,
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The vendor answered with an error or could not be reached; retried next interval.
    #[error("{resource}: {message}")]
    Vendor {
        /// The resource being polled.
        resource: String,
        /// What went wrong, naming the URL and status (never a secret).
        message: String,
    },
    /// Authentication failed; the source stops until a later retry succeeds.
    #[error("{resource}: authentication failed: {message}")]
    Auth {
        /// The resource being polled.
        resource: String,
        /// What went wrong.
        message: String,
    },
    /// The source cannot do this (e.g. no delete audit).
    #[error("{resource}: {what} is not supported by this source")]
    Unsupported {
        /// The resource.
        resource: String,
        /// The operation.
        what: &'static str,
    },
}

/// A system pollbus polls.
#[async_trait]
pub trait Source: Send + Sync {
    /// Records of `resource` updated at or after `since`, continuing at `token`.
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError>;

    /// Whether pages are ordered by (updated, id), so the cursor may move after every page.
    /// Unordered sources move it only after the last page of a poll.
    fn ordered(&self) -> bool {
        true
    }

    /// Every id that exists now, a page at a time.
    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError>;

    /// Ids deleted at or after `since` according to the vendor's audit.
    async fn deleted_since(
        &self,
        resource: &Resource,
        _since: DateTime<Utc>,
        _token: Option<&str>,
    ) -> Result<DeletePage, SourceError> {
        Err(SourceError::Unsupported {
            resource: resource.name.clone(),
            what: "delete audit",
        })
    }
}

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
    /// Records whose class is one of these belong to another configured (child) resource and
    /// are left to it (parent/child de-duplication).
    pub skip_classes: Vec<String>,
    /// Records per page.
    pub page_size: u32,
    /// How far before the cursor a poll starts.
    pub overlap: std::time::Duration,
}

impl Resource {
    /// Builds the runtime form of `r`, a resource of `source`.
    pub fn build(source: &SourceConfig, r: &ResourceConfig) -> Resource {
        let kind = source.kind;
        let path = |p: &str| FieldPath::parse(p).expect("validated path");
        let id = path(r.id_field.as_deref().unwrap_or(kind.default_id_field()));
        let (updated_default, created_default) = match kind {
            SourceKind::Servicenow => ("sys_updated_on", "sys_created_on"),
            SourceKind::Revel => ("updated_date", "created_date"),
            SourceKind::Concur => ("LastModifiedDate", "CreateDate"),
            SourceKind::Rest | SourceKind::Demo => ("updated_at", "created_at"),
        };
        let dates = &r.dates;
        let reader = RecordReader {
            id,
            updated: path(dates.updated_field.as_deref().unwrap_or(updated_default)),
            updated_format: Box::new(Rfc3339),
            created: Some(path(
                dates.created_field.as_deref().unwrap_or(created_default),
            )),
            created_format: Box::new(Rfc3339),
            class: (kind == SourceKind::Servicenow).then(|| path("sys_class_name")),
        };
        let on_behalf_of = match &r.on_behalf_of {
            Some(o) => match (&o.field, &o.value) {
                (Some(f), _) => OnBehalfOfSource::Field(path(f)),
                (None, Some(v)) => OnBehalfOfSource::Value(v.clone()),
                (None, None) => OnBehalfOfSource::None,
            },
            None => OnBehalfOfSource::None,
        };
        let fields = r
            .fields
            .iter()
            .map(|(name, vendor)| (name.clone(), path(vendor)))
            .collect();
        Resource {
            source: source.name.clone(),
            source_system: source.source_system.clone(),
            name: r.name.clone(),
            entity: r.entity.clone(),
            config: r.clone(),
            reader,
            detector: Detector::new(fields, on_behalf_of, r.create_tolerance),
            skip_classes: Vec::new(),
            page_size: source.page_size.unwrap_or(match kind {
                SourceKind::Concur => 100,
                _ => 1000,
            }),
            overlap: source.overlap,
        }
    }

    /// `source/resource`, for logs and state keys.
    pub fn key(&self) -> String {
        format!("{}/{}", self.source, self.name)
    }
}

/// What sources may need from the rest of pollbus.
#[derive(Clone)]
pub struct SourceContext {
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// Why a source could not be built.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {message}")]
pub struct BuildError {
    /// The source's name.
    pub source_name: String,
    /// What is missing.
    pub message: String,
}

/// Builds the source described by `config`.
pub fn build(config: &SourceConfig, ctx: &SourceContext) -> Result<Arc<dyn Source>, BuildError> {
    match config.kind {
        SourceKind::Demo => Ok(Arc::new(demo::DemoSource::new(
            config.demo.clone().unwrap_or_default(),
            ctx.clock.clone(),
        ))),
        other => Err(BuildError {
            source_name: config.name.clone(),
            message: format!(
                "kind {:?} is not available in this build yet",
                other.as_str()
            ),
        }),
    }
}
