//! Generic JSON REST source (`kind = "rest"`): any API described by a URL template, a JSON
//! pointer to the records and a paging style (see [`crate::config::RestResourceConfig`]).
//!
//! - The first request of a poll is the resource's `rest.url` template rendered at the poll's
//!   start instant (placeholder output percent-encoded), relative to `base_url` unless absolute.
//!   A template without placeholders polls everything every time; the snapshot diff still
//!   publishes only changes.
//! - Paging: `none`; `offset` / `page` add their parameters and stop at a short page; `next-url`
//!   follows a URL in the body (relative ones resolve against `base_url`); `link-header` follows
//!   `Link: <…>; rel="next"`. Next-page URLs are only followed on `base_url`'s origin, so
//!   credentials never leave it.
//! - Nothing is known about the API's order, so [`Source::ordered`] is `false`: the cursor moves
//!   after the last page of a poll.
//! - Deletes: reconciliation lists the template rendered at the Unix epoch.
//! - Configuration: [`DEFAULTS`] (`id`, `updated_at`/`created_at` in RFC 3339, 1000 per page);
//!   every resource of a `rest` source has a `rest` table (URL template, records pointer,
//!   paging), and no resource of another kind may have one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::vendor::{get_records, ImportHints, JsonPage, Vendor};
use super::{BuildError, IdPage, Page, Resource, Source, SourceContext, SourceError};
use crate::config::{
    problem, Problem, ResourceConfig, RestPaging, RestResourceConfig, SourceConfig, SourceKind,
    VendorDefaults, VendorRules,
};
use crate::formats::datefmt::Zone;
use crate::formats::template::UrlTemplate;
use crate::http::HttpClient;

/// What pollbus assumes of a generic REST source.
pub const DEFAULTS: VendorDefaults = VendorDefaults {
    kind: SourceKind::Rest,
    name: "rest",
    id_field: "id",
    updated_field: "updated_at",
    created_field: "created_at",
    date_format: None,
    page_size: 1000,
    class_field: None,
    revision_field: None,
    delete_audit: false,
    http: true,
    token_path: "/oauth/token",
    bookkeeping_fields: &[],
};

/// The Cloud Elements `sageone` element, which fronts Sage Business Cloud Accounting v3.1: a
/// plain REST API.
const IMPORT: ImportHints = ImportHints {
    elements: &["sageone"],
    source_system: "SageOne",
    hubs: &[("/hubs/finance/customers", "customers")],
    filter: Some("updated_or_created_since"),
};

/// The generic REST vendor (`kind = "rest"`).
pub struct Rest;

impl VendorRules for Rest {
    fn defaults(&self) -> &'static VendorDefaults {
        &DEFAULTS
    }

    fn check_resource_settings(
        &self,
        s: &SourceConfig,
        r: &ResourceConfig,
        path: &str,
        p: &mut Vec<Problem>,
    ) {
        let Some(rest) = &r.rest else { return };
        if s.kind != SourceKind::Rest {
            problem(
                p,
                format!("{path}.rest"),
                format!(
                    "rest settings on resource {:?} of a source of kind {:?}",
                    r.name,
                    s.kind.as_str()
                ),
            );
        }
        validate_rest(r, rest, &format!("{path}.rest"), p);
    }

    fn validate_resource(
        &self,
        _source: &SourceConfig,
        r: &ResourceConfig,
        path: &str,
        p: &mut Vec<Problem>,
    ) {
        if r.rest.is_none() {
            problem(
                p,
                format!("{path}.rest"),
                format!("resource {:?} of a rest source needs rest.url", r.name),
            );
        }
    }
}

impl Vendor for Rest {
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(RestSource::new(config, ctx)?))
    }

    fn import_hints(&self) -> Option<&'static ImportHints> {
        Some(&IMPORT)
    }
}

/// The zone of a resource's updated dates (`dates.updated_timezone`; UTC when unset or bad —
/// validation reports a bad one).
fn updated_zone(r: &ResourceConfig) -> Zone {
    r.dates
        .updated_timezone
        .as_deref()
        .and_then(|z| Zone::parse(z).ok())
        .unwrap_or_default()
}

/// Checks a resource's `rest` table at `path`: the URL template compiles, the records and
/// next-URL pointers are JSON pointers, paging parameters are query parameter names.
fn validate_rest(r: &ResourceConfig, rest: &RestResourceConfig, path: &str, p: &mut Vec<Problem>) {
    let zone = updated_zone(r);
    if rest.url.trim().is_empty() {
        problem(p, format!("{path}.url"), "empty url template");
    } else if let Err(e) = UrlTemplate::compile(&rest.url, &zone) {
        problem(
            p,
            format!("{path}.url"),
            format!("resource {:?}: {e}", r.name),
        );
    }
    let pointer = |p: &mut Vec<Problem>, key: &str, value: &str, empty_ok: bool| {
        if (value.is_empty() && !empty_ok) || (!value.is_empty() && !value.starts_with('/')) {
            problem(
                p,
                format!("{path}.{key}"),
                format!("{value:?} is not a JSON pointer (e.g. \"/data\")"),
            );
        }
    };
    pointer(p, "records", &rest.records, true);
    let mut param = |key: &str, value: &str| {
        if value.trim().is_empty() || value.contains(['&', '=', '#', ' ']) {
            problem(
                p,
                format!("{path}.paging.{key}"),
                format!("{value:?} is not a query parameter name"),
            );
        }
    };
    match &rest.paging {
        RestPaging::Offset {
            offset_param,
            limit_param,
        } => {
            param("offset_param", offset_param);
            param("limit_param", limit_param);
        }
        RestPaging::Page {
            page_param,
            size_param,
            ..
        } => {
            param("page_param", page_param);
            param("size_param", size_param);
        }
        RestPaging::NextUrl { pointer: next } => pointer(p, "paging.pointer", next, false),
        RestPaging::None | RestPaging::LinkHeader => {}
    }
}

/// A generic REST API.
pub struct RestSource {
    base: Url,
    http: Arc<HttpClient>,
    resources: HashMap<String, (UrlTemplate, RestResourceConfig)>,
}

/// Percent-encodes placeholder output for a URL (keeps `A-Z a-z 0-9 - . _ ~ :`).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `rel="next"` target of a `Link` header.
fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

use crate::record::id_text;

impl RestSource {
    /// Builds the source from its configuration.
    pub fn new(config: &SourceConfig, ctx: &SourceContext) -> Result<Self, BuildError> {
        let err = |message: String| BuildError {
            source_name: config.name.clone(),
            message,
        };
        let (base, http) = super::vendor_client(config, ctx)?;
        let mut resources = HashMap::new();
        for r in &config.resources {
            let rest = r
                .rest
                .clone()
                .ok_or_else(|| err(format!("resource {:?} has no rest.url", r.name)))?;
            let zone = updated_zone(r);
            let template = UrlTemplate::compile(&rest.url, &zone)
                .map_err(|e| err(format!("resource {:?}: rest.url: {e}", r.name)))?;
            resources.insert(r.name.clone(), (template, rest));
        }
        Ok(RestSource {
            base,
            http: Arc::new(http),
            resources,
        })
    }

    /// `target` as a URL: absolute as is, otherwise appended to `base_url`.
    fn resolve(&self, resource: &Resource, target: &str) -> Result<Url, SourceError> {
        let text = if target.starts_with("https://") || target.starts_with("http://") {
            target.to_string()
        } else {
            format!(
                "{}/{}",
                self.base.as_str().trim_end_matches('/'),
                target.trim_start_matches('/')
            )
        };
        Url::parse(&text).map_err(|e| SourceError::Vendor {
            resource: resource.key(),
            message: format!("{text:?} is not a URL: {e}"),
        })
    }

    fn settings(
        &self,
        resource: &Resource,
    ) -> Result<&(UrlTemplate, RestResourceConfig), SourceError> {
        self.resources
            .get(&resource.name)
            .ok_or_else(|| SourceError::Vendor {
                resource: resource.key(),
                message: "resource is not configured on this source".into(),
            })
    }

    async fn page(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let (template, rest) = self.settings(resource)?;
        let size = u64::from(resource.page_size);
        let first = || self.resolve(resource, &template.render_with(since, encode));
        let (url, position) = match (&rest.paging, token) {
            (RestPaging::NextUrl { .. } | RestPaging::LinkHeader, Some(next)) => {
                let url = self.resolve(resource, next)?;
                if url.origin() != self.base.origin() {
                    return Err(SourceError::Vendor {
                        resource: resource.key(),
                        message: format!(
                            "next page {next:?} points away from {}; refusing to send credentials there",
                            self.base.origin().ascii_serialization()
                        ),
                    });
                }
                (url, 0)
            }
            (
                RestPaging::Offset {
                    offset_param,
                    limit_param,
                },
                token,
            ) => {
                let offset: u64 = token.and_then(|t| t.parse().ok()).unwrap_or(0);
                let mut url = first()?;
                url.query_pairs_mut()
                    .append_pair(offset_param, &offset.to_string())
                    .append_pair(limit_param, &size.to_string());
                (url, offset)
            }
            (
                RestPaging::Page {
                    page_param,
                    size_param,
                    first: first_page,
                },
                token,
            ) => {
                let page: u64 = token
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(u64::from(*first_page));
                let mut url = first()?;
                url.query_pairs_mut()
                    .append_pair(page_param, &page.to_string())
                    .append_pair(size_param, &size.to_string());
                (url, page)
            }
            _ => (first()?, 0),
        };
        let JsonPage {
            response,
            body,
            records,
        } = get_records(
            &self.http,
            resource,
            &url,
            &rest.records,
            &format!("no array of records at JSON pointer {:?}", rest.records),
        )
        .await?;
        let full = records.len() as u64 >= size && !records.is_empty();
        let next = match &rest.paging {
            RestPaging::None => None,
            RestPaging::Offset { .. } => {
                full.then(|| (position + records.len() as u64).to_string())
            }
            RestPaging::Page { .. } => full.then(|| (position + 1).to_string()),
            RestPaging::NextUrl { pointer } => match body.pointer(pointer) {
                Some(Value::String(s)) if !s.trim().is_empty() && !records.is_empty() => {
                    Some(s.clone())
                }
                _ => None,
            },
            RestPaging::LinkHeader => response
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(link_next)
                .filter(|_| !records.is_empty()),
        };
        if matches!(
            rest.paging,
            RestPaging::NextUrl { .. } | RestPaging::LinkHeader
        ) {
            super::concur::same_page_guard(resource, token, next.as_deref())?;
        }
        Ok(Page {
            records,
            next,
            requests: response.attempts,
            vendor_time: super::vendor_time(&response.headers),
        })
    }
}

#[async_trait]
impl Source for RestSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        self.page(resource, since, token).await
    }

    fn ordered(&self) -> bool {
        false
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        let page = self
            .page(resource, DateTime::<Utc>::UNIX_EPOCH, token)
            .await?;
        let ids = page
            .records
            .iter()
            .filter_map(|r| resource.reader.id.get(r).and_then(id_text))
            .collect();
        Ok(IdPage {
            ids,
            next: page.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_are_read() {
        let h = r#"<https://api.example.com/items?page=1>; rel="prev", <https://api.example.com/items?page=3>; rel="next""#;
        assert_eq!(
            link_next(h).as_deref(),
            Some("https://api.example.com/items?page=3")
        );
        assert_eq!(link_next(r#"<https://x/a>; rel="last""#), None);
        assert_eq!(link_next("garbage"), None);
        assert_eq!(
            link_next("<https://x/b>; rel=next").as_deref(),
            Some("https://x/b")
        );
    }

    #[test]
    fn placeholder_output_is_percent_encoded() {
        assert_eq!(
            encode("2024-07-01T12:00:00+02:00"),
            "2024-07-01T12:00:00%2B02:00"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
