//! SAP Concur Expense v3 source (`kind = "concur"`).
//!
//! - Records: `GET {base}/api/v3.0/expense/{resource}?modifiedDateAfter=T&limit=N&user=ALL`
//!   (v4 has no modified-date search), `T` = the poll's start instant in UTC as
//!   `yyyy-MM-ddTHH:mm:ss.SSS` (truncated, so never later than the cursor). Pages follow the
//!   body's `NextPage` URL (absolute; null or absent ends the listing), which is only followed
//!   on the host pollbus is talking to, so the bearer token never leaves it. The API does not
//!   order by modification date, so [`Source::ordered`] is `false`: the poll loop moves the
//!   cursor only after the last page.
//! - Auth: OAuth 2.0 refresh-token grant at `<base>/oauth2/v0/token` (see
//!   [`crate::http::auth`]): the rotated refresh token replaces the stored one atomically, and the
//!   returned `geolocation` becomes the base URL of every later request, token requests
//!   included — only when it is https on `*.concursolutions.com` (or matches
//!   `concur.allowed_hosts`); a refused one is neither used nor stored, and polls fail naming
//!   it. A refused refresh token (`invalid_grant`) stops the source with an error telling
//!   the operator to re-authorize.
//! - Deletes: reconciliation only (the same listing without `modifiedDateAfter`).
//! - Errors: v3 `{"Error": {"Message"}}` bodies are named in messages; 429 and 503 are retried
//!   by the HTTP layer with `Retry-After`.
//! - Configuration: [`DEFAULTS`] (`ID`, `LastModifiedDate`/`CreateDate` as
//!   `yyyy-MM-dd'T'HH:mm:ss.SSS`, 100 per page — the most v3 returns); resource names are v3
//!   expense resources (`reports`); `[sources.concur]` settings.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::vendor::{
    get_records, is_plain_resource_name, misplaced_settings, vendor_error, ImportHints, JsonPage,
    Vendor,
};
use super::{BuildError, IdPage, Page, Resource, Source, SourceContext, SourceError};
use crate::config::{
    problem, Problem, ResourceConfig, SourceConfig, SourceKind, VendorDefaults, VendorRules,
};
use crate::http::auth::Auth;
use crate::http::origin::HostPolicy;
use crate::http::{HttpClient, HttpError};

/// The OAuth 2.0 token endpoint under a Concur base URL.
pub const TOKEN_PATH: &str = "/oauth2/v0/token";

/// Most records a v3 list endpoint returns per page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// What pollbus assumes of a Concur source.
pub const DEFAULTS: VendorDefaults = VendorDefaults {
    kind: SourceKind::Concur,
    name: "concur",
    id_field: "ID",
    updated_field: "LastModifiedDate",
    created_field: "CreateDate",
    date_format: Some("yyyy-MM-dd'T'HH:mm:ss.SSS"),
    page_size: MAX_PAGE_SIZE,
    class_field: None,
    revision_field: None,
    delete_audit: false,
    http: true,
    token_path: TOKEN_PATH,
    bookkeeping_fields: &[],
};

/// The Cloud Elements `concur` element.
const IMPORT: ImportHints = ImportHints {
    elements: &["concur"],
    source_system: "Concur",
    hubs: &[("/hubs/expense/reports", "reports")],
    filter: Some("modifiedDateAfter"),
};

/// The SAP Concur vendor (`kind = "concur"`).
pub struct Concur;

impl VendorRules for Concur {
    fn defaults(&self) -> &'static VendorDefaults {
        &DEFAULTS
    }

    fn check_settings(&self, s: &SourceConfig, path: &str, p: &mut Vec<Problem>) {
        let Some(concur) = &s.concur else { return };
        misplaced_settings(&DEFAULTS, s, path, p);
        let user = &concur.user;
        if user.trim().is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problem(
                p,
                format!("{path}.concur.user"),
                format!("{user:?} must be \"ALL\" or a login id without spaces"),
            );
        }
    }

    fn validate_source(&self, s: &SourceConfig, path: &str, p: &mut Vec<Problem>) {
        if let Some(size) = s.page_size.filter(|n| *n > MAX_PAGE_SIZE) {
            problem(
                p,
                format!("{path}.page_size"),
                format!("{size} is above 100, the most SAP Concur v3 returns per page"),
            );
        }
    }

    fn validate_resource(
        &self,
        _source: &SourceConfig,
        r: &ResourceConfig,
        path: &str,
        p: &mut Vec<Problem>,
    ) {
        if !is_plain_resource_name(&r.name, '_') {
            problem(
                p,
                format!("{path}.name"),
                format!(
                    "{:?} is not a Concur expense v3 resource name such as reports",
                    r.name
                ),
            );
        }
    }
}

impl Vendor for Concur {
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(ConcurSource::new(config, ctx)?))
    }

    fn import_hints(&self) -> Option<&'static ImportHints> {
        Some(&IMPORT)
    }
}

/// A Concur company.
pub struct ConcurSource {
    base: Url,
    user: String,
    http: Arc<HttpClient>,
}

/// One answer of a v3 list endpoint.
struct Listing {
    records: Vec<Value>,
    next: Option<String>,
    requests: u32,
    vendor_time: Option<DateTime<Utc>>,
}

/// A `NextPage` equal to the page just read would be requested forever.
pub(crate) fn same_page_guard(
    resource: &Resource,
    current: Option<&str>,
    next: Option<&str>,
) -> Result<(), SourceError> {
    match (current, next) {
        (Some(current), Some(next)) if current == next => Err(SourceError::Vendor {
            resource: resource.key(),
            message: format!("the next page {next:?} is the page just read; stopping rather than paging in circles"),
        }),
        _ => Ok(()),
    }
}

use crate::record::id_text;

/// Where a token response's `geolocation` may point: `concur.allowed_hosts` (default
/// `*.concursolutions.com`, https only).
pub fn geolocation_hosts(config: &SourceConfig) -> Result<HostPolicy, String> {
    let hosts = config.concur.clone().unwrap_or_default().allowed_hosts;
    HostPolicy::parse(&hosts).map_err(|e| format!("concur.allowed_hosts: {e}"))
}

impl ConcurSource {
    /// Builds the source from its configuration.
    pub fn new(config: &SourceConfig, ctx: &SourceContext) -> Result<Self, BuildError> {
        let (base, http) = super::vendor_client(config, ctx)?;
        Ok(ConcurSource {
            base,
            user: config.concur.clone().unwrap_or_default().user,
            http: Arc::new(http),
        })
    }

    /// The base URL in force: the OAuth geolocation once known, else the configured one. Gets
    /// a token first, so the very first request already goes to the geolocation.
    async fn base(&self, resource: &Resource) -> Result<Url, SourceError> {
        let Auth::OAuth2(oauth) = self.http.auth() else {
            return Ok(self.base.clone());
        };
        oauth
            .access_token()
            .await
            .map_err(|e| vendor_error(resource, HttpError::Auth(e)))?;
        // Only a geolocation the source's `allowed_hosts` allow is used; a refused one fails
        // the request before any credential is attached.
        Ok(oauth
            .geolocation()
            .await
            .map_err(|e| vendor_error(resource, HttpError::Auth(e)))?
            .unwrap_or_else(|| self.base.clone()))
    }

    async fn first_url(
        &self,
        resource: &Resource,
        params: &[(&str, String)],
    ) -> Result<Url, SourceError> {
        let mut url = self.base(resource).await?;
        url.set_path(&format!("/api/v3.0/expense/{}", resource.name));
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.append_pair("limit", &resource.page_size.to_string());
            q.append_pair("user", &self.user);
        }
        Ok(url)
    }

    /// A `NextPage` URL, accepted only on the host in use.
    async fn next_url(&self, resource: &Resource, next: &str) -> Result<Url, SourceError> {
        let base = self.base(resource).await?;
        let url = Url::parse(next).map_err(|e| SourceError::Vendor {
            resource: resource.key(),
            message: format!("NextPage {next:?} is not a URL: {e}"),
        })?;
        if url.origin() != base.origin() {
            return Err(SourceError::Vendor {
                resource: resource.key(),
                message: format!(
                    "NextPage {next:?} points away from {}; refusing to send the token there",
                    base.origin().ascii_serialization()
                ),
            });
        }
        Ok(url)
    }

    async fn list(&self, resource: &Resource, url: Url) -> Result<Listing, SourceError> {
        let JsonPage {
            response,
            body,
            records: items,
        } = get_records(
            &self.http,
            resource,
            &url,
            "/Items",
            "expected a JSON object with an \"Items\" array",
        )
        .await?;
        let next = match body.get("NextPage") {
            Some(Value::String(s)) if !s.trim().is_empty() && !items.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(Listing {
            records: items,
            next,
            requests: response.attempts,
            vendor_time: super::vendor_time(&response.headers),
        })
    }
}

#[async_trait]
impl Source for ConcurSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let url = match token {
            Some(next) => self.next_url(resource, next).await?,
            None => {
                let after = since.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
                self.first_url(resource, &[("modifiedDateAfter", after)])
                    .await?
            }
        };
        let listing = self.list(resource, url).await?;
        same_page_guard(resource, token, listing.next.as_deref())?;
        Ok(Page {
            records: listing.records,
            next: listing.next,
            requests: listing.requests,
            vendor_time: listing.vendor_time,
        })
    }

    fn ordered(&self) -> bool {
        false
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        let url = match token {
            Some(next) => self.next_url(resource, next).await?,
            None => self.first_url(resource, &[]).await?,
        };
        let listing = self.list(resource, url).await?;
        same_page_guard(resource, token, listing.next.as_deref())?;
        let ids = listing
            .records
            .iter()
            .filter_map(|r| resource.reader.id.get(r).and_then(id_text))
            .collect();
        Ok(IdPage {
            ids,
            next: listing.next,
        })
    }
}
