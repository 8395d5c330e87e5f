//! What every vendor module provides, and the helpers they share.
//!
//! A vendor module (`servicenow.rs`, `revel.rs`, …) is one room: its [`VendorDefaults`], its
//! validation rules ([`VendorRules`]), how its [`Source`] is built, its parent/child classes and
//! the importer's hints all live there, behind one unit struct implementing [`Vendor`]. The
//! registration table in [`super::VENDORS`] lists them.

use std::sync::Arc;

use serde_json::Value;

use super::{BuildError, Resource, Source, SourceContext, SourceError};
use crate::config::{Problem, SourceConfig, VendorDefaults, VendorRules};
use crate::http::{HttpClient, HttpError, HttpResponse};

/// A vendor pollbus can poll: its configuration rules plus how to build its source.
pub trait Vendor: VendorRules + AsRules {
    /// Builds the source described by `config` (a source of this vendor's kind).
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError>;

    /// Classes whose records a resource on `table` leaves to another configured resource of
    /// the same source (parent/child de-duplication); empty for vendors without classes.
    fn skip_classes(&self, _config: &SourceConfig, _table: &str) -> Vec<String> {
        Vec::new()
    }

    /// How `pollbus import cloud-elements` maps this vendor's Cloud Elements elements, if any.
    fn import_hints(&self) -> Option<&'static ImportHints> {
        None
    }
}

/// A vendor as its configuration rules (an upcast that works on every supported Rust).
pub trait AsRules {
    /// `self` as [`VendorRules`].
    fn as_rules(&self) -> &dyn VendorRules;
}

impl<T: VendorRules> AsRules for T {
    fn as_rules(&self) -> &dyn VendorRules {
        self
    }
}

/// What the Cloud Elements importer knows about a vendor (`pollbus import cloud-elements`).
/// The default id and updated fields come from the vendor's [`VendorDefaults`].
#[derive(Debug)]
pub struct ImportHints {
    /// The Cloud Elements element keys (`element.key`) imported as this vendor.
    pub elements: &'static [&'static str],
    /// The `source_system` written for an imported source.
    pub source_system: &'static str,
    /// Hub path (`/hubs/helpdesk/accounts`) → vendor resource.
    pub hubs: &'static [(&'static str, &'static str)],
    /// The vendor's own name of the time filter (`None`: the updated field).
    pub filter: Option<&'static str>,
}

/// Pushes "`key` settings on a source of kind …" when `key`'s table is set on a source of
/// another kind than `owner`'s.
pub fn misplaced_settings(
    owner: &VendorDefaults,
    source: &SourceConfig,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if source.kind != owner.kind {
        crate::config::problem(
            problems,
            format!("{path}.{}", owner.name),
            format!(
                "{} settings on a source of kind {:?}",
                owner.name,
                source.kind.as_str()
            ),
        );
    }
}

/// Whether `name` is a plain resource path: letters, digits, `_` and `extra`, no leading,
/// trailing or double `/`.
pub fn is_plain_resource_name(name: &str, extra: char) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == extra)
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
}

/// Maps an HTTP error to a source error, keeping authentication failures apart.
pub fn vendor_error(resource: &Resource, e: HttpError) -> SourceError {
    match e {
        HttpError::Auth(a) => SourceError::Auth {
            resource: resource.key(),
            message: a.to_string(),
        },
        other => SourceError::Vendor {
            resource: resource.key(),
            message: other.to_string(),
        },
    }
}

/// One GET of a page of vendor records: the response (headers, attempts), the rest of the JSON
/// body, and the records taken out of it (moved, not copied).
pub struct JsonPage {
    /// The response; its body bytes are still there for diagnostics.
    pub response: HttpResponse,
    /// The parsed body, with the records array taken out.
    pub body: Value,
    /// The records.
    pub records: Vec<Value>,
}

/// GETs `url`, parses the JSON body and takes the array at JSON `pointer` as the records. A
/// body that is not JSON, or has no array there, is a [`SourceError`] naming the request and
/// `expected`.
pub async fn get_records(
    http: &HttpClient,
    resource: &Resource,
    url: &url::Url,
    pointer: &str,
    expected: &str,
) -> Result<JsonPage, SourceError> {
    let response = http.get(url).await.map_err(|e| vendor_error(resource, e))?;
    records_of(response, resource, url, pointer, expected)
}

/// Parses the JSON body of `response` (the answer to a GET of `url`) and takes the array at
/// JSON `pointer` as the records, like [`get_records`].
pub fn records_of(
    response: HttpResponse,
    resource: &Resource,
    url: &url::Url,
    pointer: &str,
    expected: &str,
) -> Result<JsonPage, SourceError> {
    let request = format!("GET {url}");
    let mut body = response
        .json(&request)
        .map_err(|e| vendor_error(resource, e))?;
    match body.pointer_mut(pointer).map(Value::take) {
        Some(Value::Array(records)) => Ok(JsonPage {
            response,
            body,
            records,
        }),
        _ => Err(vendor_error(
            resource,
            HttpError::BadBody {
                request,
                reason: expected.to_string(),
            },
        )),
    }
}
