//! ServiceNow Table API source.
//!
//! - Records: `GET {base}{api_path}/{table}` with
//!   `sysparm_query={updated}>={since}^ORDERBY{updated}^ORDERBY{id}` (a UTC literal), only the
//!   fields the resource needs (`sysparm_fields`), `sysparm_exclude_reference_link=true`,
//!   `sysparm_no_count=true`, `sysparm_limit=page_size`. Pages are keyset-paged on
//!   (updated, id) — `{updated}>T^NQ{updated}=T^{id}>ID` — never by offset, which drifts while
//!   records change. A short or even empty page alone is not the end: the instance applies
//!   `sysparm_limit` before ACLs, so a run of hidden rows longer than a page comes back as
//!   `200 {"result": []}` with `rel="next"` in `Link`. The listing then goes on past those rows
//!   with `sysparm_offset` from the same keyset position until a page shows records again (see
//!   [`Position`]); the rows hidden in one poll are reported in one WARN when it ends. The end is
//!   a page whose `Link` header has no `rel="next"` (the instance computes it before ACLs), or,
//!   without a `Link` header (the instance sends none for a single page), a short page — so an
//!   idle poll costs one request. The same rule ends the id listing and the delete audit.
//!   A record that pollbus knew and that the integration user can no longer read (an ACL
//!   changed) is absent from the id listing like a deleted one: reconciliation cannot tell the
//!   two apart, and `reconcile_max_delete_ratio` bounds how many it deletes at once.
//! - Values: reference fields (`{"link","value"}`) and `display_value=all` objects map to their
//!   `value`.
//! - Deletes: `sys_audit_delete` rows (`documentkey`) whose `tablename` is the table, one of its
//!   configured ancestors or descendants (a delete may be recorded under either), keyset-paged on
//!   (sys_created_on, sys_id); ids are listed with `sysparm_fields=sys_id`, keyset-paged on
//!   sys_id.
//! - Parent/child: `customer_contact` extends `sys_user`, `customer_account` extends
//!   `core_company` (plus configured pairs). When both are polled, a record whose
//!   `sys_class_name` belongs to the configured child is left to the child's resource.
//! - Configuration: [`DEFAULTS`] (`sys_id`, `sys_updated_on`/`sys_created_on` in
//!   `yyyy-MM-dd HH:mm:ss` UTC, 1000 per page, delete audit); table and field names are checked
//!   strictly (ServiceNow ignores invalid query parts and would return every record);
//!   `[sources.servicenow]` settings.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::vendor::{misplaced_settings, records_of, vendor_error, ImportHints, Vendor};
use super::{BuildError, DeletePage, IdPage, Page, Resource, Source, SourceContext, SourceError};
use crate::config::{
    problem, DisplayValue, Problem, ResourceConfig, ServiceNowConfig, SourceConfig, SourceKind,
    VendorDefaults, VendorRules,
};
use crate::http::{HttpClient, HttpError};

/// Default table hierarchy (child → parent).
pub const DEFAULT_HIERARCHY: &[(&str, &str)] = &[
    ("customer_contact", "sys_user"),
    ("customer_account", "core_company"),
];

/// Every record's modification count: it goes up by one with each update, so it proves a copy
/// older where `sys_updated_on` (one node's clock, second precision) cannot.
pub const REVISION_FIELD: &str = "sys_mod_count";

/// The ServiceNow date format, UTC when display values are off.
pub const DATE_FORMAT: &str = "yyyy-MM-dd HH:mm:ss";

/// The field naming a record's class (its most specific table).
pub const CLASS_FIELD: &str = "sys_class_name";

/// What pollbus assumes of a ServiceNow source.
pub const DEFAULTS: VendorDefaults = VendorDefaults {
    kind: SourceKind::Servicenow,
    name: "servicenow",
    id_field: "sys_id",
    updated_field: "sys_updated_on",
    created_field: "sys_created_on",
    date_format: Some(DATE_FORMAT),
    page_size: 1000,
    class_field: Some(CLASS_FIELD),
    revision_field: Some(REVISION_FIELD),
    delete_audit: true,
    http: true,
    token_path: "/oauth_token.do",
    bookkeeping_fields: &[
        // The last writer's user name and the write counter: rewritten by every update.
        "sys_updated_by",
        "sys_mod_count",
    ],
};

/// The Cloud Elements hub resources the importer maps to ServiceNow tables.
const HUBS: &[(&str, &str)] = &[
    ("/hubs/helpdesk/accounts", "core_company"),
    ("/hubs/helpdesk/contacts", "sys_user"),
    ("/hubs/helpdesk/incidents", "incident"),
    ("/hubs/helpdesk/agents", "sys_user"),
];

/// The Cloud Elements elements `servicenowoauth` (OAuth 2.0) and `servicenow` (basic auth).
const IMPORT: ImportHints = ImportHints {
    elements: &["servicenowoauth", "servicenow"],
    source_system: "ServiceNow",
    hubs: HUBS,
    filter: None,
};

/// The ServiceNow vendor (`kind = "servicenow"`).
pub struct ServiceNow;

impl VendorRules for ServiceNow {
    fn defaults(&self) -> &'static VendorDefaults {
        &DEFAULTS
    }

    fn check_settings(&self, s: &SourceConfig, path: &str, p: &mut Vec<Problem>) {
        let Some(sn) = &s.servicenow else { return };
        misplaced_settings(&DEFAULTS, s, path, p);
        if sn.display_value == DisplayValue::True {
            problem(
                p,
                format!("{path}.servicenow.display_value"),
                "\"true\" turns dates into the user's display zone and format; use \"false\" or \"all\"",
            );
        }
        for (child, parent) in &sn.hierarchy {
            for (what, table) in [("child", child), ("parent", parent)] {
                if !is_servicenow_name(table) {
                    problem(
                        p,
                        format!("{path}.servicenow.hierarchy.{child}"),
                        format!("{what} table {table:?} is not a ServiceNow name ([A-Za-z0-9_.]+)"),
                    );
                }
            }
        }
    }

    fn validate_resource(
        &self,
        _source: &SourceConfig,
        r: &ResourceConfig,
        path: &str,
        p: &mut Vec<Problem>,
    ) {
        if r.name.trim().is_empty() {
            return; // reported as an empty resource name
        }
        let mut check = |key: String, name: &str| {
            if !name.is_empty() && !is_servicenow_name(name) {
                problem(p, key, format!("{name:?} is not a ServiceNow name ([A-Za-z0-9_.]+); ServiceNow would ignore it and return every record"));
            }
        };
        check(format!("{path}.name"), &r.name);
        if let Some(id) = &r.id_field {
            check(format!("{path}.id_field"), id);
        }
        for (name, vendor) in r.fields.listed() {
            check(format!("{path}.fields.{name}"), vendor);
        }
        if let Some(field) = r.on_behalf_of.as_ref().and_then(|o| o.field.as_ref()) {
            check(format!("{path}.on_behalf_of.field"), field);
        }
        for (key, field) in [
            ("updated_field", &r.dates.updated_field),
            ("created_field", &r.dates.created_field),
        ] {
            if let Some(field) = field {
                check(format!("{path}.dates.{key}"), field);
            }
        }
    }
}

impl Vendor for ServiceNow {
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(ServiceNowSource::new(config, ctx)?))
    }

    fn skip_classes(&self, config: &SourceConfig, table: &str) -> Vec<String> {
        delegated_classes(config, table)
    }

    fn import_hints(&self) -> Option<&'static ImportHints> {
        Some(&IMPORT)
    }
}

/// ServiceNow silently ignores invalid query parts and would return every record, so table and
/// field names are checked strictly.
fn is_servicenow_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A ServiceNow instance.
pub struct ServiceNowSource {
    base: Url,
    options: ServiceNowConfig,
    http: Arc<HttpClient>,
    hierarchy: HashMap<String, String>,
    /// Rows hidden (by ACLs) from whole pages so far in each resource's current listing.
    hidden: std::sync::Mutex<HashMap<String, u64>>,
}

/// The hierarchy (child → parent) of a source: defaults plus configured pairs.
pub fn hierarchy(config: &SourceConfig) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = DEFAULT_HIERARCHY
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect();
    if let Some(sn) = &config.servicenow {
        for (c, p) in &sn.hierarchy {
            map.insert(c.clone(), p.clone());
        }
    }
    map
}

fn ancestors<'a>(hierarchy: &'a HashMap<String, String>, table: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut current = table;
    while let Some(parent) = hierarchy.get(current) {
        if out.contains(&parent.as_str()) || parent == table {
            break; // a cycle in configuration; stop rather than loop
        }
        out.push(parent.as_str());
        current = parent;
    }
    out
}

/// Classes whose records a resource on `table` leaves to another configured (more specific)
/// resource of the same source.
pub fn delegated_classes(config: &SourceConfig, table: &str) -> Vec<String> {
    let hierarchy = hierarchy(config);
    let configured: Vec<&str> = config.resources.iter().map(|r| r.name.as_str()).collect();
    let mut classes: Vec<&str> = hierarchy.keys().map(String::as_str).collect();
    classes.extend(configured.iter().copied());
    let mut out: Vec<String> = Vec::new();
    for class in classes {
        // The most specific configured table the class belongs to.
        let owner = std::iter::once(class)
            .chain(ancestors(&hierarchy, class))
            .find(|t| configured.contains(t));
        if let Some(owner) = owner {
            if owner != table
                && ancestors(&hierarchy, owner).contains(&table)
                && !out.iter().any(|c| c == class)
            {
                out.push(class.to_string());
            }
        }
    }
    out.sort();
    out
}

/// Replaces reference objects (`{"link","value"}`) and display-value objects
/// (`{"display_value","value"}`) by their `value`.
fn normalize(mut record: Value) -> Value {
    if let Value::Object(map) = &mut record {
        for value in map.values_mut() {
            if let Value::Object(inner) = value {
                if let Some(v) = inner.remove("value") {
                    *value = v;
                }
            }
        }
    }
    record
}

fn sn_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

impl ServiceNowSource {
    /// Builds the source from its configuration.
    pub fn new(config: &SourceConfig, ctx: &SourceContext) -> Result<Self, BuildError> {
        let (base, http) = super::vendor_client(config, ctx)?;
        Ok(ServiceNowSource {
            base,
            options: config.servicenow.clone().unwrap_or_default(),
            http: Arc::new(http),
            hierarchy: hierarchy(config),
            hidden: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn table_url(&self, table: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!(
            "{}/{}/{}",
            url.path().trim_end_matches('/'),
            self.options.api_path.trim_matches('/'),
            table
        );
        url.set_path(&path);
        url
    }

    fn display_value(&self) -> &'static str {
        match self.options.display_value {
            DisplayValue::False => "false",
            DisplayValue::True => "true",
            DisplayValue::All => "all",
        }
    }

    /// The fields a resource needs: id, dates, tracked fields, on-behalf-of, class; `None`
    /// (every column) when it tracks every field.
    fn fields(resource: &Resource) -> Option<String> {
        if resource.detector.tracks_all() {
            return None;
        }
        let mut fields: Vec<&str> = vec![resource.reader.id.root(), resource.reader.updated.root()];
        if let Some(created) = &resource.reader.created {
            fields.push(created.root());
        }
        for (_, path) in resource.detector.fields() {
            // ServiceNow dot-walks reference fields itself (`caller_id.name`).
            fields.push(path.as_str());
        }
        if let Some(path) = resource.detector.on_behalf_of_path() {
            fields.push(path.as_str());
        }
        fields.push(CLASS_FIELD);
        fields.push(REVISION_FIELD);
        let mut unique: Vec<&str> = Vec::new();
        for f in fields {
            if !unique.contains(&f) {
                unique.push(f);
            }
        }
        Some(unique.join(","))
    }

    /// The position after a page of `listing` (`records`, `ids`, `deletes`) of `resource`
    /// that started at `pos`, or `None` when the listing ended; counts the rows the instance
    /// hid from full pages and reports them in one WARN when the listing ends. A listing that
    /// keeps offering `rel="next"` on empty pages past [`MAX_EMPTY_PAGES`] fails (its cursor
    /// stays; a cut listing must not look complete, least of all to reconcile).
    fn step(
        &self,
        resource: &Resource,
        listing: &'static str,
        pos: &Position,
        answer: &Answer,
        last: Option<String>,
    ) -> Result<Option<Position>, SourceError> {
        let limit = u64::from(resource.page_size);
        let seen = answer.records.len() as u64;
        let next = pos.next(last, answer.more, limit);
        let key = format!("{}:{listing}", resource.key());
        let mut hidden = self.hidden.lock().unwrap_or_else(|e| e.into_inner());
        if pos.key.is_none() && pos.skip == 0 {
            hidden.remove(&key); // a new listing
        }
        if answer.more && seen < limit {
            *hidden.entry(key.clone()).or_default() += limit - seen;
        }
        if seen == 0
            && next
                .as_ref()
                .is_some_and(|n| n.skip >= MAX_EMPTY_PAGES * limit)
        {
            hidden.remove(&key);
            return Err(SourceError::Vendor {
                resource: resource.key(),
                message: format!(
                    "the instance answered {MAX_EMPTY_PAGES} empty pages in a row, each still offering rel=\"next\" in its Link header (rows hidden by ACLs?); the {listing} listing stops here and the cursor stays — grant the integration user read access to the hidden rows, or check the instance"
                ),
            });
        }
        if next.is_none() {
            if let Some(n) = hidden.remove(&key).filter(|n| *n > 0) {
                tracing::warn!(
                    resource = %resource.key(),
                    listing,
                    hidden_rows = n,
                    "the instance hid rows of this listing from the integration user (ACLs applied after sysparm_limit); pollbus paged past them, but records it cannot read are not published"
                );
            }
        }
        Ok(next)
    }

    async fn query(
        &self,
        resource: &Resource,
        table: &str,
        params: &[(&str, String)],
    ) -> Result<Answer, SourceError> {
        let mut url = self.table_url(table);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.append_pair("sysparm_no_count", "true");
        }
        let response = match self.http.get(&url).await {
            Ok(r) => r,
            // v1 answers 404 "No Record found" to a valid query without matches.
            Err(HttpError::Status {
                status: 404,
                message: Some(m),
                ..
            }) if m.starts_with("No Record found") => {
                return Ok(Answer {
                    records: Vec::new(),
                    requests: 1,
                    more: false,
                });
            }
            Err(e) => return Err(vendor_error(resource, e)),
        };
        let page = records_of(
            response,
            resource,
            &url,
            "/result",
            "expected a JSON object with a \"result\" array",
        )?;
        let (response, records) = (page.response, page.records);
        let records: Vec<Value> = records.into_iter().map(normalize).collect();
        let limit: usize = params
            .iter()
            .find(|(k, _)| *k == "sysparm_limit")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(usize::MAX);
        let more = more_pages(&response.headers, &records, limit);
        Ok(Answer {
            records,
            requests: response.attempts,
            more,
        })
    }
}

/// One Table API answer.
struct Answer {
    records: Vec<Value>,
    requests: u32,
    /// Whether another page may hold records.
    more: bool,
}

/// Whether records may follow this page: per the `Link` header's `rel="next"` when there is
/// one (even after an empty page: ACLs hide rows after the limit); otherwise only after a full
/// page.
fn more_pages(headers: &reqwest::header::HeaderMap, records: &[Value], limit: usize) -> bool {
    match headers.get("link").and_then(|v| v.to_str().ok()) {
        Some(link) => link.contains("rel=\"next\""),
        None => !records.is_empty() && records.len() >= limit,
    }
}

/// Consecutive empty pages with `rel="next"` after which a listing stops with a WARN (an
/// instance whose `Link` never ends would otherwise be paged forever): 10,000 pages hide at
/// least 10,000 × `page_size` rows.
const MAX_EMPTY_PAGES: u64 = 10_000;

/// Where the next request of a keyset-paged listing starts: after `key` (none: from the
/// listing's start), skipping `skip` rows of the instance's answer — rows its ACLs hid from
/// whole pages, which the keyset cannot pass because no record of theirs was seen. As a page
/// token: `<key>#<skip>` (`key` is `<updated>|<id>`, or the id alone for id listings; `skip`
/// is always written, so the last `#` splits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Position {
    key: Option<String>,
    skip: u64,
}

impl Position {
    fn parse(token: Option<&str>) -> Position {
        let Some(token) = token else {
            return Position::default();
        };
        let (key, skip) = match token.rsplit_once('#') {
            Some((key, skip)) => (key, skip.parse().unwrap_or(0)),
            None => (token, 0),
        };
        Position {
            key: (!key.is_empty()).then(|| key.to_string()),
            skip,
        }
    }

    fn token(&self) -> String {
        format!("{}#{}", self.key.as_deref().unwrap_or_default(), self.skip)
    }

    /// The keyset `(updated, id)` of a record listing.
    fn keyset(&self) -> Option<(&str, &str)> {
        self.key.as_deref()?.split_once('|')
    }

    /// Where the listing goes on after a page (`None`: it ended). `last` is the key of the
    /// page's last record; a page without records moves past the `limit` rows the instance
    /// counted but hid.
    fn next(&self, last: Option<String>, more: bool, limit: u64) -> Option<Position> {
        if !more {
            return None;
        }
        Some(match last {
            Some(key) => Position {
                key: Some(key),
                skip: 0,
            },
            None => Position {
                key: self.key.clone(),
                skip: self.skip + limit,
            },
        })
    }
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

#[async_trait]
impl Source for ServiceNowSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let updated = resource.reader.updated.as_str();
        let id = resource.reader.id.as_str();
        let pos = Position::parse(token);
        let filter = match pos.keyset() {
            None => format!("{updated}>={}", sn_date(since)),
            Some((t, last)) => format!("{updated}>{t}^NQ{updated}={t}^{id}>{last}"),
        };
        let mut params = vec![
            (
                "sysparm_query",
                format!("{filter}^ORDERBY{updated}^ORDERBY{id}"),
            ),
            (
                "sysparm_exclude_reference_link",
                self.options.exclude_reference_link.to_string(),
            ),
            ("sysparm_display_value", self.display_value().to_string()),
            ("sysparm_limit", resource.page_size.to_string()),
        ];
        if let Some(fields) = Self::fields(resource) {
            params.push(("sysparm_fields", fields));
        }
        if pos.skip > 0 {
            params.push(("sysparm_offset", pos.skip.to_string()));
        }
        let answer = self.query(resource, &resource.name, &params).await?;
        let last = answer.records.last().and_then(|last| {
            let t = text(resource.reader.updated.get(last))?;
            let i = text(resource.reader.id.get(last))?;
            Some(format!("{t}|{i}"))
        });
        let next = self.step(resource, "records", &pos, &answer, last)?;
        Ok(Page {
            records: answer.records,
            next: next.map(|n| n.token()),
            requests: answer.requests,
            vendor_time: None,
        })
    }

    async fn probe(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        let mut params = vec![
            (
                "sysparm_exclude_reference_link",
                self.options.exclude_reference_link.to_string(),
            ),
            ("sysparm_limit", "1".to_string()),
        ];
        if let Some(fields) = Self::fields(resource) {
            params.push(("sysparm_fields", fields));
        }
        let answer = self.query(resource, &resource.name, &params).await?;
        Ok(answer.records.into_iter().next())
    }

    async fn sample(&self, resource: &Resource) -> Result<Option<Value>, SourceError> {
        // No sysparm_fields: every column of the table.
        let params = [
            (
                "sysparm_exclude_reference_link",
                self.options.exclude_reference_link.to_string(),
            ),
            ("sysparm_limit", "1".to_string()),
        ];
        let answer = self.query(resource, &resource.name, &params).await?;
        Ok(answer.records.into_iter().next())
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        let id = resource.reader.id.as_str();
        let pos = Position::parse(token);
        let filter = match &pos.key {
            None => String::new(),
            Some(last) => format!("{id}>{last}^"),
        };
        let mut params = vec![
            ("sysparm_query", format!("{filter}ORDERBY{id}")),
            ("sysparm_fields", id.to_string()),
            ("sysparm_limit", resource.page_size.to_string()),
        ];
        if pos.skip > 0 {
            params.push(("sysparm_offset", pos.skip.to_string()));
        }
        let answer = self.query(resource, &resource.name, &params).await?;
        let ids: Vec<String> = answer
            .records
            .iter()
            .filter_map(|r| text(resource.reader.id.get(r)).map(str::to_string))
            .collect();
        let next = self.step(resource, "ids", &pos, &answer, ids.last().cloned())?;
        Ok(IdPage {
            ids,
            next: next.map(|n| n.token()),
        })
    }

    async fn deleted_since(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<DeletePage, SourceError> {
        let mut tables: Vec<&str> = vec![resource.name.as_str()];
        tables.extend(ancestors(&self.hierarchy, &resource.name));
        for (child, _) in self.hierarchy.iter() {
            if ancestors(&self.hierarchy, child).contains(&resource.name.as_str()) {
                tables.push(child);
            }
        }
        let tables = tables.join(",");
        let pos = Position::parse(token);
        let filter = match pos.keyset() {
            None => format!("tablenameIN{tables}^sys_created_on>={}", sn_date(since)),
            Some((t, last)) => format!(
                "tablenameIN{tables}^sys_created_on>{t}^NQtablenameIN{tables}^sys_created_on={t}^sys_id>{last}"
            ),
        };
        let mut params = vec![
            (
                "sysparm_query",
                format!("{filter}^ORDERBYsys_created_on^ORDERBYsys_id"),
            ),
            (
                "sysparm_fields",
                "sys_id,documentkey,tablename,sys_created_on".to_string(),
            ),
            ("sysparm_limit", resource.page_size.to_string()),
        ];
        if pos.skip > 0 {
            params.push(("sysparm_offset", pos.skip.to_string()));
        }
        let answer = self
            .query(resource, &self.options.audit_table, &params)
            .await?;
        let last = answer.records.last().and_then(|last| {
            Some(format!(
                "{}|{}",
                text(last.get("sys_created_on"))?,
                text(last.get("sys_id"))?
            ))
        });
        // The same end-of-results rule as the records listing: a short page without a
        // `rel="next"` ends it, so an idle poll costs one audit request.
        let next = self.step(resource, "deletes", &pos, &answer, last)?;
        let records = answer.records;
        let mut deletes = Vec::with_capacity(records.len());
        for r in &records {
            let (Some(key), Some(at)) = (text(r.get("documentkey")), text(r.get("sys_created_on")))
            else {
                tracing::warn!(resource = %resource.key(), row = %r, "audit row without documentkey or sys_created_on skipped");
                continue;
            };
            match chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S") {
                Ok(naive) => deletes.push((key.to_string(), naive.and_utc())),
                Err(e) => {
                    tracing::warn!(resource = %resource.key(), value = at, error = %e, "audit row with an unreadable date skipped")
                }
            }
        }
        Ok(DeletePage {
            deletes,
            next: next.map(|n| n.token()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_its_token_and_moves_past_hidden_pages() {
        let start = Position::parse(None);
        assert_eq!(start, Position::default());
        // A page with records: the keyset moves to its last record.
        let after = start
            .next(Some("2024-05-01 10:00:00|a1".into()), true, 3)
            .unwrap();
        assert_eq!(after.token(), "2024-05-01 10:00:00|a1#0");
        assert_eq!(Position::parse(Some(&after.token())), after);
        assert_eq!(after.keyset(), Some(("2024-05-01 10:00:00", "a1")));
        // Empty pages that are not the end skip the rows the instance hid.
        let past = after
            .next(None, true, 3)
            .unwrap()
            .next(None, true, 3)
            .unwrap();
        assert_eq!(past.token(), "2024-05-01 10:00:00|a1#6");
        assert_eq!(Position::parse(Some(&past.token())), past);
        // Records again: back to the keyset alone.
        assert_eq!(past.next(Some("x|b".into()), true, 3).unwrap().skip, 0);
        // The end.
        assert_eq!(past.next(None, false, 3), None);
        // Ids may hold '#': the last one splits.
        let odd = Position {
            key: Some("INC#7".into()),
            skip: 3,
        };
        assert_eq!(Position::parse(Some(&odd.token())), odd);
        let first_empty = start.next(None, true, 3).unwrap();
        assert_eq!(first_empty.token(), "#3");
        assert_eq!(Position::parse(Some("#3")), first_empty);
    }

    #[test]
    fn an_empty_page_ends_only_without_a_next_link() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert!(!more_pages(&headers, &[], 2));
        assert!(!more_pages(&headers, &[Value::Null], 2), "short, no Link");
        assert!(
            more_pages(&headers, &[Value::Null, Value::Null], 2),
            "full, no Link"
        );
        headers.insert(
            "link",
            "<https://x/api?sysparm_offset=2>;rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert!(
            more_pages(&headers, &[], 2),
            "empty, but rel=next: ACLs hid the page"
        );
        headers.insert(
            "link",
            "<https://x/api?sysparm_offset=0>;rel=\"first\""
                .parse()
                .unwrap(),
        );
        assert!(!more_pages(&headers, &[Value::Null, Value::Null], 2));
    }
    use serde_json::json;

    fn config(tables: &[&str], extra: &str) -> SourceConfig {
        let resources: String = tables
            .iter()
            .map(|t| format!("[[sources.resources]]\nname = \"{t}\"\nentity = \"{t}\"\nfields = {{ A = \"a\" }}\n"))
            .collect();
        let text = format!(
            "[[sources]]\nname = \"sn\"\nkind = \"servicenow\"\nbase_url = \"https://x.service-now.com\"\nsource_system = \"SN\"\n{extra}\n{resources}"
        );
        crate::config::Config::parse(&text, "t")
            .unwrap()
            .sources
            .remove(0)
    }

    #[test]
    fn parent_leaves_configured_children_to_them() {
        let c = config(&["sys_user", "customer_contact", "core_company"], "");
        assert_eq!(delegated_classes(&c, "sys_user"), ["customer_contact"]);
        assert!(delegated_classes(&c, "customer_contact").is_empty());
        assert!(
            delegated_classes(&c, "core_company").is_empty(),
            "customer_account is not configured"
        );
    }

    #[test]
    fn configured_hierarchy_extends_the_defaults_transitively() {
        let c = config(
            &["sys_user", "vip_contact"],
            "[sources.servicenow]\nhierarchy = { vip_contact = \"customer_contact\" }",
        );
        // vip_contact → customer_contact → sys_user: the parent leaves vip_contact records.
        assert_eq!(delegated_classes(&c, "sys_user"), ["vip_contact"]);
        // customer_contact itself is not configured: its records stay with sys_user.
    }

    #[test]
    fn references_and_display_values_map_to_value() {
        let r = normalize(json!({
            "caller_id": {"link": "https://x/api/now/table/sys_user/abc", "value": "abc"},
            "state": {"display_value": "New", "value": "1"},
            "short_description": "plain",
            "empty_ref": ""
        }));
        assert_eq!(
            r,
            json!({"caller_id": "abc", "state": "1", "short_description": "plain", "empty_ref": ""})
        );
    }
}
