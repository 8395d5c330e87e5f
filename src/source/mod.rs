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
//!
//! Files: this one holds the [`Source`] trait, its page and error types and the vendor
//! registration ([`VENDORS`]); [`resource`] compiles a [`Resource`] from its configuration,
//! [`client`] builds a vendor's HTTP client, [`vendor`] holds the [`Vendor`] trait and the
//! helpers vendors share. Each vendor is one module (`servicenow`, `revel`, `concur`, `rest`,
//! `demo`): defaults, validation rules, paging, importer hints and its [`Source`].
//!
//! A new vendor is one new module implementing [`Vendor`], its `pub mod` line and one entry
//! in [`VENDORS`] here, plus its variant of [`SourceKind`] in the configuration.

pub mod client;
pub mod concur;
pub mod demo;
pub mod narrow;
pub mod resource;
pub mod rest;
pub mod revel;
pub mod servicenow;
pub mod vendor;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{SourceConfig, SourceKind, VendorRegistry, VendorRules};

pub use client::{http_client, vendor_client};
pub use resource::Resource;
pub use vendor::{get_records, vendor_error, ImportHints, JsonPage, Vendor};

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Raw records (values normalized by the source).
    pub records: Vec<Value>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<String>,
    /// HTTP requests (or equivalent) this page cost.
    pub requests: u32,
    /// The vendor's clock when it answered (its `Date` header), when it sent one. Unordered
    /// sources' cursors never move past the first page's (see `crate::poll`).
    pub vendor_time: Option<DateTime<Utc>>,
}

/// The vendor's clock from a response's `Date` header (an HTTP-date), if it sent a valid one.
pub fn vendor_time(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(text)
        .ok()
        .map(DateTime::<Utc>::from)
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

    /// Whether the id listing pages by keyset, so a record deleted during the listing cannot
    /// hide another. A listing paged by offset (or by an opaque marker the vendor computes from
    /// one) can skip a record when others disappear mid-listing; reconciliation then deletes
    /// only records missed by two listings in a row. By default: as [`Source::ordered`].
    fn stable_id_listing(&self) -> bool {
        self.ordered()
    }

    /// Every id that exists now, a page at a time.
    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError>;

    /// One record of the resource, to check the configuration against (`pollbus check
    /// --probe`); `None` when the resource is empty.
    async fn probe(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        let page = self
            .fetch(resource, DateTime::<Utc>::UNIX_EPOCH, None)
            .await?;
        Ok(page.records.into_iter().next())
    }

    /// One record of the resource with every field the vendor returns, not only the
    /// configured ones (`pollbus check --probe --fields`); `resource` keeps every record key
    /// ([`narrow::RecordKeys::all`]). `None` when the resource is empty.
    async fn sample(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        self.probe(resource).await
    }

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

/// What sources may need from the rest of pollbus.
#[derive(Clone)]
pub struct SourceContext {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where OAuth tokens are kept (the state store, shared by replicas and restarts).
    pub tokens: Arc<dyn crate::store::TokenStore>,
    /// Where the shared request budget is drawn from (the state store).
    pub budget: Arc<dyn crate::store::BudgetStore>,
    /// Where HTTP requests, rate-limit waits and token refreshes are counted, if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
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

/// The registered vendors, one entry each. [`SourceKind`] names them in the configuration;
/// every kind has exactly one entry here (a unit test checks it).
pub static VENDORS: &[&dyn Vendor] = &[
    &servicenow::ServiceNow,
    &revel::Revel,
    &concur::Concur,
    &rest::Rest,
    &demo::Demo,
];

/// The vendor registered for `kind`.
pub fn vendor(kind: SourceKind) -> &'static dyn Vendor {
    VENDORS
        .iter()
        .copied()
        .find(|v| v.defaults().kind == kind)
        .unwrap_or_else(|| unreachable!("source kind {kind:?} has no entry in VENDORS"))
}

impl VendorRegistry for SourceKind {
    fn rules(self) -> &'static dyn VendorRules {
        vendor(self).as_rules()
    }

    fn all_rules() -> Vec<&'static dyn VendorRules> {
        VENDORS.iter().map(|v| v.as_rules()).collect()
    }
}

/// Builds the source described by `config`.
pub fn build(config: &SourceConfig, ctx: &SourceContext) -> Result<Arc<dyn Source>, BuildError> {
    vendor(config.kind).build(config, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the configuration accepts (the schema's enum) has exactly one vendor, which
    /// writes the kind the way the configuration does.
    #[test]
    fn every_source_kind_is_registered_once() {
        let schema = crate::config::Config::json_schema();
        let kinds = schema
            .pointer("/$defs/SourceKind/oneOf")
            .and_then(serde_json::Value::as_array)
            .expect("SourceKind in the schema");
        assert_eq!(kinds.len(), VENDORS.len());
        for k in kinds {
            let name = k
                .pointer("/const")
                .or_else(|| k.pointer("/enum/0"))
                .and_then(serde_json::Value::as_str)
                .expect("a kind name");
            let kind: SourceKind =
                serde_json::from_value(serde_json::Value::String(name.into())).unwrap();
            let registered: Vec<_> = VENDORS
                .iter()
                .filter(|v| v.defaults().kind == kind)
                .collect();
            assert_eq!(registered.len(), 1, "{name}");
            assert_eq!(registered[0].defaults().name, name);
        }
    }

    /// A vendor's settings table is checked by its vendor wherever it is set: on a source of
    /// another kind it is named as misplaced and its values are still checked.
    #[test]
    fn vendors_check_their_settings_on_any_source() {
        let text = r#"
[[sources]]
name = "sn"
kind = "servicenow"
base_url = "https://x.service-now.com"
source_system = "SN"
demo = { records = 0 }
  [[sources.resources]]
  name = "incident"
  entity = "incident"
  fields = { A = "a" }
  rest = { url = "", paging = { kind = "next-url", pointer = "next" } }
"#;
        let err = crate::config::Config::parse(text, "t").unwrap_err();
        let mut lines: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "sources[0].demo.records: 0 is outside 1..=1000000",
                "sources[0].demo: demo settings on a source of kind \"servicenow\"",
                "sources[0].resources[0].rest.paging.pointer: \"next\" is not a JSON pointer (e.g. \"/data\")",
                "sources[0].resources[0].rest.url: empty url template",
                "sources[0].resources[0].rest: rest settings on resource \"incident\" of a source of kind \"servicenow\"",
            ]
        );
    }
}
