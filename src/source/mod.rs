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

pub mod concur;
pub mod demo;
pub mod rest;
pub mod revel;
pub mod servicenow;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{AuthConfig, ResourceConfig, SourceConfig, SourceKind};
use crate::detect::{Detector, OnBehalfOfSource};
use crate::formats::datefmt;
use crate::http::auth::{Auth, OAuth2, OAuth2Config};
use crate::http::budget::RequestBudget;
use crate::http::{HttpClient, HttpOptions};
use crate::record::{DateParser, FieldPath, RecordReader, Rfc3339};
use crate::store::{Store, StoreTokenCache};

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

    /// One record of the resource, to check the configuration against (`pollbus check
    /// --probe`); `None` when the resource is empty.
    async fn probe(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        let page = self
            .fetch(resource, DateTime::<Utc>::UNIX_EPOCH, None)
            .await?;
        Ok(page.records.into_iter().next())
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
        let parser = |format: &Option<String>, zone: &Option<String>| -> Box<dyn DateParser> {
            let zone = zone
                .as_deref()
                .map(|z| datefmt::Zone::parse(z).expect("validated zone"))
                .unwrap_or_default();
            let pattern = format.as_deref().or(match kind {
                SourceKind::Servicenow => Some(servicenow::DATE_FORMAT),
                SourceKind::Revel => Some("yyyy-MM-dd'T'HH:mm:ss.SSSSSS"),
                SourceKind::Concur => Some("yyyy-MM-dd'T'HH:mm:ss.SSS"),
                SourceKind::Rest | SourceKind::Demo => None,
            });
            match pattern {
                Some(p) => Box::new(JavaDates {
                    format: datefmt::JavaDateFormat::compile(p).expect("validated pattern"),
                    zone,
                }),
                None => Box::new(Rfc3339),
            }
        };
        let reader = RecordReader {
            id,
            updated: path(dates.updated_field.as_deref().unwrap_or(updated_default)),
            updated_format: parser(&dates.updated_format, &dates.updated_timezone),
            created: Some(path(
                dates.created_field.as_deref().unwrap_or(created_default),
            )),
            created_format: parser(&dates.created_format, &dates.created_timezone),
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
            skip_classes: match kind {
                SourceKind::Servicenow => servicenow::delegated_classes(source, &r.name),
                _ => Vec::new(),
            },
            page_size: source.page_size.unwrap_or(match kind {
                SourceKind::Concur => 100,
                _ => 1000,
            }),
            overlap: source.overlap,
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

/// Vendor dates in a Java date pattern, local times in a zone; sentinels such as
/// `0001-01-01T00:00:00` read as "no date".
struct JavaDates {
    format: datefmt::JavaDateFormat,
    zone: datefmt::Zone,
}

impl DateParser for JavaDates {
    fn parse(&self, value: &str) -> Result<Option<DateTime<Utc>>, String> {
        self.format
            .parse_optional(value, &self.zone)
            .map_err(|e| e.to_string())
    }
}

/// What sources may need from the rest of pollbus.
#[derive(Clone)]
pub struct SourceContext {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The state store (OAuth tokens).
    pub store: Arc<dyn Store>,
    /// Where HTTP requests, rate-limit waits and token refreshes are counted, if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// One GET of a page of vendor records: the response (headers, attempts), the rest of the JSON
/// body, and the records taken out of it (moved, not copied).
pub struct JsonPage {
    /// The response; its body bytes are still there for diagnostics.
    pub response: crate::http::HttpResponse,
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
    use servicenow::vendor_error;
    let request = format!("GET {url}");
    let response = http.get(url).await.map_err(|e| vendor_error(resource, e))?;
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
            crate::http::HttpError::BadBody {
                request,
                reason: expected.to_string(),
            },
        )),
    }
}

/// The base URL and HTTP client of a vendor source (see [`http_client`]).
pub fn vendor_client(
    config: &SourceConfig,
    ctx: &SourceContext,
    default_token_path: &str,
) -> Result<(url::Url, HttpClient), BuildError> {
    let err = |message: String| BuildError {
        source_name: config.name.clone(),
        message,
    };
    let base = config
        .base_url
        .as_deref()
        .ok_or_else(|| err("base_url is required".into()))
        .and_then(|u| url::Url::parse(u).map_err(|e| err(format!("base_url {u:?}: {e}"))))?;
    let http = http_client(config, ctx, &base, default_token_path).map_err(err)?;
    Ok((base, http))
}

/// The HTTP client of a vendor source: auth from the configuration (OAuth 2.0 token endpoint
/// `default_token_path` under `base` unless configured), the request budget, retry settings.
pub fn http_client(
    config: &SourceConfig,
    ctx: &SourceContext,
    base: &url::Url,
    default_token_path: &str,
) -> Result<HttpClient, String> {
    let options = HttpOptions {
        timeout: config.request_timeout,
        max_attempts: config.max_attempts,
        max_response_bytes: config.max_response_bytes as usize,
        ..HttpOptions::default()
    };
    let auth = match &config.auth {
        AuthConfig::None => Auth::None,
        AuthConfig::Basic { username, password } => Auth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        AuthConfig::Bearer { token } => Auth::Bearer(token.clone()),
        AuthConfig::Header { name, value } => Auth::Header {
            name: name.clone(),
            value: value.clone(),
        },
        AuthConfig::Oauth2 {
            token_url,
            grant,
            client_id,
            client_secret,
            username,
            password,
            refresh_token,
        } => {
            let follow_geolocation = token_url.is_none();
            let token_url = match token_url {
                Some(u) => url::Url::parse(u).map_err(|e| format!("auth.token_url {u:?}: {e}"))?,
                None => base
                    .join(default_token_path)
                    .map_err(|e| format!("token endpoint under {base}: {e}"))?,
            };
            Auth::OAuth2(Arc::new(
                OAuth2::new(
                    &config.name,
                    OAuth2Config {
                        token_url,
                        grant: *grant,
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        username: username.clone(),
                        password: password.clone(),
                        refresh_token: refresh_token.clone(),
                        follow_geolocation,
                    },
                    Arc::new(StoreTokenCache::new(ctx.store.clone())),
                    ctx.clock.clone(),
                    config.request_timeout,
                )
                .with_metrics(ctx.metrics.clone()),
            ))
        }
    };
    // Shared through the state store, so the budget holds across all replicas together.
    let budget = config.max_requests_per_hour.map(|n| {
        Arc::new(crate::store::budget::SharedBudget::per_hour(
            ctx.store.clone(),
            &config.name,
            n,
        )) as Arc<dyn RequestBudget>
    });
    Ok(HttpClient::new(&config.name, auth, budget, options).with_metrics(ctx.metrics.clone()))
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
        SourceKind::Servicenow => Ok(Arc::new(servicenow::ServiceNowSource::new(config, ctx)?)),
        SourceKind::Revel => Ok(Arc::new(revel::RevelSource::new(config, ctx)?)),
        SourceKind::Concur => Ok(Arc::new(concur::ConcurSource::new(config, ctx)?)),
        SourceKind::Rest => Ok(Arc::new(rest::RestSource::new(config, ctx)?)),
    }
}
