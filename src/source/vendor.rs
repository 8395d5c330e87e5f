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

/// GETs `url`, parses the JSON body and takes the array at JSON `pointer` as the records, each
/// with only the keys the resource reads ([`Resource::record_keys`]; vendors whose listings all
/// return the resource's own records use this). A body that is not JSON, or has no array
/// there, is a [`SourceError`] naming the request and `expected`.
pub async fn get_records(
    http: &HttpClient,
    resource: &Resource,
    url: &url::Url,
    pointer: &str,
    expected: &str,
) -> Result<JsonPage, SourceError> {
    let response = http.get(url).await.map_err(|e| vendor_error(resource, e))?;
    if let Some((body, records)) =
        super::narrow::parse_page(&response.body, pointer, &resource.record_keys)
    {
        return Ok(JsonPage {
            response,
            body,
            records,
        });
    }
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
    let mut body = match response.json(&request) {
        Ok(body) => body,
        // One record the parser refuses (a lone surrogate, nesting deeper than it allows) must
        // not cost the page: read the records one by one, each bad one as a stand-in.
        Err(e) => match lenient_page(&response.body, pointer) {
            Some((body, records)) => {
                return Ok(JsonPage {
                    response,
                    body,
                    records,
                })
            }
            None => return Err(vendor_error(resource, e)),
        },
    };
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

/// Reads a page whose body as a whole the JSON parser refused, when the fault lies inside
/// records: the body is walked along JSON `pointer` as shallow objects of raw values (raw
/// values are scanned without recursion and without decoding strings, so neither deep nesting
/// nor a lone surrogate stops them), then each record of the array is parsed on its own. A
/// record that fails becomes a stand-in `{"$pollbus-unparseable": {"position", "reason"}}`
/// ([`crate::record::UNPARSEABLE`]), which the reader skips and counts. The rest of the body is
/// kept as far as it parses (members that do not parse are null). `None` when the body is not
/// even well-formed JSON or has no array at `pointer`: then the page fails as before.
pub fn lenient_page(body: &[u8], pointer: &str) -> Option<(Value, Vec<Value>)> {
    use serde_json::value::RawValue;
    fn walk(raw: &RawValue, path: &[String]) -> Option<(Value, Vec<Value>)> {
        let Some((first, rest)) = path.split_first() else {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
            let records = items
                .iter()
                .enumerate()
                .map(|(position, item)| {
                    serde_json::from_str::<Value>(item.get()).unwrap_or_else(|e| {
                        serde_json::json!({ crate::record::UNPARSEABLE: {
                            "position": position,
                            "reason": e.to_string(),
                        }})
                    })
                })
                .collect();
            return Some((Value::Array(Vec::new()), records));
        };
        let members: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_str(raw.get()).ok()?;
        let mut object = serde_json::Map::new();
        let mut found = None;
        for (name, value) in members {
            if &name == first {
                let (inner, records) = walk(value, rest)?;
                object.insert(name, inner);
                found = Some(records);
            } else {
                object.insert(
                    name,
                    serde_json::from_str(value.get()).unwrap_or(Value::Null),
                );
            }
        }
        Some((Value::Object(object), found?))
    }
    let raw: &RawValue = serde_json::from_slice(body).ok()?;
    let path: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    walk(raw, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Injected: one record with a lone surrogate and one nested 200 levels deep (serde_json
    /// stops at 128) among good ones. The page is read; each bad record becomes a stand-in
    /// naming its position; the rest of the body survives.
    #[test]
    fn a_page_with_unparseable_records_keeps_the_good_ones() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let body = format!(
            r#"{{"meta": {{"next": null}}, "result": [{{"id": "a"}}, {{"id": "b", "name": "\ud800"}}, {{"id": "c", "x": {deep}}}, {{"id": "d"}}]}}"#
        );
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "the page as a whole is refused"
        );
        let (rest, records) = lenient_page(body.as_bytes(), "/result").unwrap();
        assert_eq!(rest["meta"]["next"], Value::Null);
        assert_eq!(rest["result"], serde_json::json!([]));
        assert_eq!(records.len(), 4);
        assert_eq!(records[0]["id"], "a");
        assert_eq!(records[3]["id"], "d");
        for (i, bad) in [(1, "hex escape"), (2, "recursion")] {
            let stand_in = &records[i][crate::record::UNPARSEABLE];
            assert_eq!(stand_in["position"], i, "{stand_in}");
            assert!(
                stand_in["reason"].as_str().unwrap().contains(bad),
                "{stand_in}"
            );
        }
        // A body that is not JSON at all, or has no array there, still fails.
        assert!(lenient_page(b"<html>", "/result").is_none());
        assert!(lenient_page(br#"{"result": 5}"#, "/result").is_none());
        // A top-level array (pointer "").
        let (_, records) = lenient_page(br#"[{"id": 1}, {"id": "\udfff"}]"#, "").unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[1].get(crate::record::UNPARSEABLE).is_some());
    }
}
