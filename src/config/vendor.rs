//! What the configuration needs to know about a kind of source, asked of the vendor itself.
//!
//! Each vendor module in `crate::source` owns its defaults ([`VendorDefaults`]) and its
//! validation rules ([`VendorRules`]); `crate::source` registers them for every [`SourceKind`]
//! by implementing [`VendorRegistry`]. The configuration only states the interface, so it
//! imports nothing of `source` (the module graph stays a DAG: `source` → `config`), yet its
//! validation asks each vendor instead of matching on kinds.

use super::model::{ResourceConfig, SourceConfig, SourceKind};
use super::Problem;

/// A vendor's defaults: what pollbus assumes when a resource or source does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorDefaults {
    /// The kind this vendor is registered as.
    pub kind: SourceKind,
    /// The kind as written in the configuration (`kind = "…"`).
    pub name: &'static str,
    /// The id field of a resource that does not name one (`id_field`).
    pub id_field: &'static str,
    /// The updated-date field (`dates.updated_field`).
    pub updated_field: &'static str,
    /// The created-date field (`dates.created_field`).
    pub created_field: &'static str,
    /// The Java date pattern of the vendor's dates; `None`: RFC 3339.
    pub date_format: Option<&'static str>,
    /// Records per page when `page_size` is not set.
    pub page_size: u32,
    /// The field naming a record's class (parent/child de-duplication), if the vendor has one.
    pub class_field: Option<&'static str>,
    /// A field the vendor bumps on every write (a revision counter), if it has one: it tells a
    /// later copy of a record from an older one when their dates disagree.
    pub revision_field: Option<&'static str>,
    /// Whether the vendor has a delete audit (`deletes = "audit"`).
    pub delete_audit: bool,
    /// Whether the source talks HTTP (needs `base_url`, takes `auth`).
    pub http: bool,
    /// The OAuth 2.0 token endpoint under `base_url` when `auth.token_url` is not set.
    pub token_path: &'static str,
    /// Top-level bookkeeping fields the vendor rewrites on every write (who wrote last, a
    /// write counter): `fields = "*"` leaves them out, or every UPDATE would list them. The
    /// record's id, dates and revision are always left out as well.
    pub bookkeeping_fields: &'static [&'static str],
}

/// A vendor's validation rules, beyond the checks every source gets. Problems are pushed with
/// their config path; messages are lowercase and name the offending value.
pub trait VendorRules: Sync {
    /// The vendor's defaults.
    fn defaults(&self) -> &'static VendorDefaults;

    /// Checks this vendor's own settings table (e.g. `[sources.servicenow]`) on *any* source,
    /// naming it when it is set on a source of another kind. `path` is the source's path.
    fn check_settings(&self, _source: &SourceConfig, _path: &str, _problems: &mut Vec<Problem>) {}

    /// Checks a source of this vendor's kind. `path` is the source's path.
    fn validate_source(&self, _source: &SourceConfig, _path: &str, _problems: &mut Vec<Problem>) {}

    /// Checks this vendor's own resource settings table (e.g. `rest`) on a resource of *any*
    /// source, naming it when the source is of another kind. `path` is the resource's path.
    fn check_resource_settings(
        &self,
        _source: &SourceConfig,
        _resource: &ResourceConfig,
        _path: &str,
        _problems: &mut Vec<Problem>,
    ) {
    }

    /// Checks a resource of a source of this vendor's kind (e.g. its name, which becomes part
    /// of a URL or a query). `path` is the resource's path.
    fn validate_resource(
        &self,
        _source: &SourceConfig,
        _resource: &ResourceConfig,
        _path: &str,
        _problems: &mut Vec<Problem>,
    ) {
    }
}

/// The registered vendors. Implemented for [`SourceKind`] by `crate::source`, whose
/// registration table has one entry per vendor.
pub trait VendorRegistry: Sized {
    /// The rules of this kind's vendor.
    fn rules(self) -> &'static dyn VendorRules;

    /// Every registered vendor's rules, in registration order.
    fn all_rules() -> Vec<&'static dyn VendorRules>;
}

impl SourceKind {
    /// The kind as written in the configuration.
    pub fn as_str(self) -> &'static str {
        self.rules().defaults().name
    }

    /// The id field used when a resource does not name one.
    pub fn default_id_field(self) -> &'static str {
        self.rules().defaults().id_field
    }
}

/// Pushes a problem at `path`.
pub fn problem(problems: &mut Vec<Problem>, path: impl Into<String>, message: impl Into<String>) {
    problems.push(Problem {
        path: path.into(),
        message: message.into(),
    });
}
