//! Revel Systems API source (`kind = "revel"`).
//!
//! - Records: `GET {base}/resources/{Resource}/?format=json&order_by={updated}&order_by={id}&limit=N&offset=K&{updated}__gte=T`
//!   (`order_by` once per field: Tastypie reads it with `getlist` and refuses `a,b` as one field)
//!   with `API-AUTHENTICATION: key:secret` (configured as `auth = { kind = "header", … }`). A
//!   resource name with a `/` (`enterprise/Establishment`) is a path under the base URL instead.
//! - Dates are naive local times in the establishment's zone: the resource's
//!   `dates.updated_timezone` (the seeds' `PST`), UTC when unset. `T` is the poll's start instant
//!   in that zone. When the zone falls back within three hours after `T`, `T` is moved one fold
//!   earlier, because records written in the repeated hour carry local times *below* `T`'s;
//!   re-reading an hour on that night is cheap, skipping it would lose changes. A `time_zone` in
//!   the response's `meta` that differs from the configured zone is logged as a warning.
//! - Paging is limit/offset, but anchored: the next page asks again from the last record's
//!   updated date (`{updated}__gte=<as Revel wrote it>`) with `offset` = the records already seen
//!   at exactly that date. A record updated while the poll pages moves behind the anchor and is
//!   read again (the snapshot diff drops it) instead of shifting the offset over an unseen one.
//! - The end of a listing: `meta.next` when the response has the key (null = last page);
//!   without it (as in real captures) `meta.limit = 0` (everything in one answer),
//!   `offset + count >= meta.total_count`, or a page shorter than the `limit` the server applied
//!   (which may be below the one asked for).
//! - Deletes: reconciliation only; ids are listed keyset-wise (`order_by={id}&{id}__gt=<last>`),
//!   so a delete during the listing cannot hide another record.
//! - Errors: any status with a JSON or text body; 429/5xx are retried by the HTTP layer.
//! - Configuration: [`DEFAULTS`] (`id`, `updated_date`/`created_date` as
//!   `yyyy-MM-dd'T'HH:mm:ss.SSSSSS`, 1000 per page); resource names are Revel resources
//!   (`TimeSheetEntry`) or paths under the base URL (`enterprise/Establishment`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::vendor::{get_records, is_plain_resource_name, ImportHints, JsonPage, Vendor};
use super::{BuildError, IdPage, Page, Resource, Source, SourceContext, SourceError};
use crate::config::{
    problem, Problem, ResourceConfig, SourceConfig, SourceKind, VendorDefaults, VendorRules,
};
use crate::formats::datefmt::{JavaDateFormat, Zone};
use crate::http::HttpClient;

/// How `{updated}__gte` values are written: Revel's own date format.
pub const FILTER_FORMAT: &str = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS";

/// What pollbus assumes of a Revel source.
pub const DEFAULTS: VendorDefaults = VendorDefaults {
    kind: SourceKind::Revel,
    name: "revel",
    id_field: "id",
    updated_field: "updated_date",
    created_field: "created_date",
    date_format: Some(FILTER_FORMAT),
    page_size: 1000,
    class_field: None,
    revision_field: None,
    delete_audit: false,
    http: true,
    token_path: "/oauth/token",
    bookkeeping_fields: &[
        // The last writer: rewritten by every update.
        "updated_by",
    ],
};

/// The Cloud Elements `revel` element.
const IMPORT: ImportHints = ImportHints {
    elements: &["revel"],
    source_system: "Revel",
    hubs: &[
        ("/hubs/employee/employees", "Employee"),
        ("/hubs/employee/timesheets", "TimeSheetEntry"),
    ],
    filter: None,
};

/// The Revel vendor (`kind = "revel"`).
pub struct Revel;

impl VendorRules for Revel {
    fn defaults(&self) -> &'static VendorDefaults {
        &DEFAULTS
    }

    fn validate_resource(
        &self,
        _source: &SourceConfig,
        r: &ResourceConfig,
        path: &str,
        p: &mut Vec<Problem>,
    ) {
        if !is_plain_resource_name(&r.name, '/') {
            problem(
                p,
                format!("{path}.name"),
                format!("{:?} is not a Revel resource name such as TimeSheetEntry or enterprise/Establishment", r.name),
            );
        }
    }
}

impl Vendor for Revel {
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(RevelSource::new(config, ctx)?))
    }

    fn import_hints(&self) -> Option<&'static ImportHints> {
        Some(&IMPORT)
    }
}

/// A Revel establishment (one subdomain).
pub struct RevelSource {
    base: Url,
    http: Arc<HttpClient>,
    filter_format: JavaDateFormat,
    warned_zone: AtomicBool,
}

/// One answer of a Revel list endpoint.
struct Listing {
    records: Vec<Value>,
    /// Whether more records follow this page.
    more: bool,
    requests: u32,
}

/// The zone a resource's dates are written in.
pub fn resource_zone(resource: &Resource) -> Zone {
    resource
        .config
        .dates
        .updated_timezone
        .as_deref()
        .and_then(|z| Zone::parse(z).ok())
        .unwrap_or_default()
}

/// The instant a `{updated}__gte` filter starts at for a poll starting at `since`: one fold
/// earlier when the zone falls back within three hours (see the module documentation).
pub fn filter_start(since: DateTime<Utc>, zone: &Zone) -> DateTime<Utc> {
    let now = zone.offset_at(since).local_minus_utc();
    let later = since
        .checked_add_signed(chrono::Duration::hours(3))
        .map(|t| zone.offset_at(t).local_minus_utc())
        .unwrap_or(now);
    if later < now {
        since - chrono::Duration::seconds(i64::from(now - later))
    } else {
        since
    }
}

/// A page asked from an anchor must not start before it; if it does, the API ignored the
/// `{updated}__gte` filter and paging would go round in circles.
fn ignored_filter_guard(
    resource: &Resource,
    anchor: &str,
    records: &[Value],
) -> Result<(), SourceError> {
    let parse = |text: &str| resource.reader.updated_format.parse(text).ok().flatten();
    let first = records
        .first()
        .and_then(|r| resource.reader.updated.get(r))
        .and_then(Value::as_str);
    match (first.and_then(parse), parse(anchor)) {
        (Some(first_at), Some(anchor_at)) if first_at < anchor_at => Err(SourceError::Vendor {
            resource: resource.key(),
            message: format!(
                "the API ignored {}__gte={anchor} (a record updated {} came back); stopping rather than paging in circles",
                resource.reader.updated.as_str(),
                first.unwrap_or_default()
            ),
        }),
        _ => Ok(()),
    }
}

/// Continuation token: `<records seen at the anchor>|<anchor as Revel wrote it>`; an empty
/// anchor pages from the poll's own filter.
fn parse_token(token: Option<&str>) -> (u64, Option<&str>) {
    match token.and_then(|t| t.split_once('|')) {
        Some((n, anchor)) => (
            n.parse().unwrap_or(0),
            Some(anchor).filter(|a| !a.is_empty()),
        ),
        None => (0, None),
    }
}

use crate::record::id_text;

impl RevelSource {
    /// Builds the source from its configuration.
    pub fn new(config: &SourceConfig, ctx: &SourceContext) -> Result<Self, BuildError> {
        let (base, http) = super::vendor_client(config, ctx)?;
        Ok(RevelSource {
            base,
            http: Arc::new(http),
            filter_format: JavaDateFormat::compile(FILTER_FORMAT).expect("constant pattern"),
            warned_zone: AtomicBool::new(false),
        })
    }

    fn resource_url(&self, name: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        let path = if name.contains('/') {
            format!("{prefix}/{name}/")
        } else {
            format!("{prefix}/resources/{name}/")
        };
        url.set_path(&path);
        url
    }

    async fn list(
        &self,
        resource: &Resource,
        params: &[(String, String)],
        offset: u64,
    ) -> Result<Listing, SourceError> {
        let mut url = self.resource_url(&resource.name);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("format", "json");
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.append_pair("limit", &resource.page_size.to_string());
            q.append_pair("offset", &offset.to_string());
        }
        let JsonPage {
            response,
            body,
            records,
        } = get_records(
            &self.http,
            resource,
            &url,
            "/objects",
            "expected a JSON object with an \"objects\" array",
        )
        .await?;
        let meta = body.get("meta");
        self.check_zone(resource, meta);
        let count = records.len() as u64;
        let number = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_u64);
        let more = match meta.and_then(|m| m.as_object()).and_then(|m| m.get("next")) {
            Some(Value::String(next)) => !next.is_empty() && count > 0,
            Some(_) => false,
            // The server may cap `limit` below what was asked: its own `limit`, `offset` and
            // `total_count` decide when they are there.
            None => {
                count > 0
                    && match (number("limit"), number("total_count"), number("offset")) {
                        (Some(0), _, _) => false,
                        (_, Some(total), Some(at)) => at + count < total,
                        (Some(limit), _, _) => count >= limit.min(u64::from(resource.page_size)),
                        (None, _, _) => count >= u64::from(resource.page_size),
                    }
            }
        };
        Ok(Listing {
            records,
            more,
            requests: response.attempts,
        })
    }

    fn check_zone(&self, resource: &Resource, meta: Option<&Value>) {
        let Some(name) = meta
            .and_then(|m| m.get("time_zone"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let configured = resource_zone(resource);
        if Zone::parse(name).is_ok_and(|z| z != configured)
            && !self.warned_zone.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                resource = %resource.key(),
                establishment_zone = name,
                configured_zone = %configured,
                "the establishment's time zone differs from dates.updated_timezone; dates and filters use the configured zone"
            );
        }
    }
}

#[async_trait]
impl Source for RevelSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let updated = resource.reader.updated.as_str();
        let id = resource.reader.id.as_str();
        let (seen, anchor) = parse_token(token);
        let gte = match anchor {
            Some(anchor) => anchor.to_string(),
            None => self.filter_format.format(
                filter_start(since, &resource_zone(resource)),
                &resource_zone(resource),
            ),
        };
        let params = [
            // Tastypie reads `order_by` with `getlist`: one field per parameter.
            ("order_by".to_string(), updated.to_string()),
            ("order_by".to_string(), id.to_string()),
            (format!("{updated}__gte"), gte.clone()),
        ];
        let listing = self.list(resource, &params, seen).await?;
        if let Some(anchor) = anchor {
            ignored_filter_guard(resource, anchor, &listing.records)?;
        }
        let next = if listing.more {
            let raw = |r: &Value| {
                resource
                    .reader
                    .updated
                    .get(r)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            match listing.records.last().and_then(raw) {
                Some(last) => {
                    let at_last = listing
                        .records
                        .iter()
                        .rev()
                        .take_while(|r| raw(r).as_deref() == Some(last.as_str()))
                        .count() as u64;
                    let carried = if last == gte { seen } else { 0 };
                    Some(format!("{}|{last}", carried + at_last))
                }
                // No readable date to anchor on: plain offsets from the poll's filter.
                None if anchor.is_none() => {
                    Some(format!("{}|", seen + listing.records.len() as u64))
                }
                None => {
                    return Err(SourceError::Vendor {
                        resource: resource.key(),
                        message: format!(
                            "the last record of a page has no {updated:?} to continue paging from"
                        ),
                    })
                }
            }
        } else {
            None
        };
        Ok(Page {
            records: listing.records,
            next,
            requests: listing.requests,
            vendor_time: None,
        })
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        let id = resource.reader.id.as_str();
        let mut params = vec![("order_by".to_string(), id.to_string())];
        if let Some(last) = token {
            params.push((format!("{id}__gt"), last.to_string()));
        }
        let listing = self.list(resource, &params, 0).await?;
        let ids: Vec<String> = listing
            .records
            .iter()
            .filter_map(|r| resource.reader.id.get(r).and_then(id_text))
            .collect();
        if let (Some(last), Some(first)) = (token, ids.first()) {
            let after = match (first.parse::<i64>(), last.parse::<i64>()) {
                (Ok(a), Ok(b)) => a > b,
                _ => first.as_str() > last,
            };
            if !after {
                return Err(SourceError::Vendor {
                    resource: resource.key(),
                    message: format!(
                        "the API ignored {id}__gt={last} (id {first} came back); ids cannot be listed safely, so deletes are not reconciled"
                    ),
                });
            }
        }
        let next = if listing.more {
            ids.last().cloned()
        } else {
            None
        };
        Ok(IdPage { ids, next })
    }

    async fn probe(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        let params = [(
            "order_by".to_string(),
            format!("-{}", resource.reader.updated.as_str()),
        )];
        let listing = self.list(resource, &params, 0).await?;
        Ok(listing.records.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_filter_starts_one_fold_early_before_a_fall_back() {
        let pst = Zone::parse("PST").unwrap();
        let format = JavaDateFormat::compile(FILTER_FORMAT).unwrap();
        // 2024-11-03 01:50 PDT (08:50Z); at 09:00Z clocks go back to 01:00 PST.
        let since = utc("2024-11-03T08:50:00Z");
        assert_eq!(
            format.format(filter_start(since, &pst), &pst),
            "2024-11-03T00:50:00.000000"
        );
        // In the repeated hour (01:10 PST) the local time is already the lowest ahead.
        let since = utc("2024-11-03T09:10:00Z");
        assert_eq!(filter_start(since, &pst), since);
        // An ordinary day and a spring-forward night are left alone.
        for s in ["2024-07-01T12:00:00Z", "2024-03-10T09:30:00Z"] {
            assert_eq!(filter_start(utc(s), &pst), utc(s));
        }
        assert_eq!(filter_start(utc(s_utc()), &Zone::Utc), utc(s_utc()));
    }

    fn s_utc() -> &'static str {
        "2024-11-03T08:50:00Z"
    }

    #[test]
    fn tokens_round_trip_and_tolerate_garbage() {
        assert_eq!(
            parse_token(Some("3|2018-08-20T17:39:00.149863")),
            (3, Some("2018-08-20T17:39:00.149863"))
        );
        assert_eq!(parse_token(Some("40|")), (40, None));
        assert_eq!(parse_token(Some("nonsense")), (0, None));
        assert_eq!(parse_token(None), (0, None));
    }
}
