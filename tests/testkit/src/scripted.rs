//! A scripted source: an ordered, keyset-paged vendor API in memory with controllable commits,
//! deletes in an audit and injectable failures, plus the one-resource configuration the
//! pipeline tests pair it with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use pollbus::config::Config;
use pollbus::source::{DeletePage, IdPage, Page, Resource, Source, SourceError};

use crate::t;

/// One record of the scripted vendor.
#[derive(Debug, Clone)]
pub struct Row {
    /// The record id.
    pub id: String,
    /// When it last changed.
    pub updated: DateTime<Utc>,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// The vendor fields (an object).
    pub fields: Value,
    /// `sys_class_name`, for parent/child tables.
    pub class: Option<String>,
    /// Invisible to queries until committed (a late-arriving transaction).
    pub visible: bool,
}

/// An ordered, keyset-paged vendor API in memory: records sorted by (updated, id), deletes
/// recorded in an audit, failures injectable per call.
#[derive(Default)]
pub struct ScriptedSource {
    rows: Mutex<BTreeMap<String, Row>>,
    audit: Mutex<Vec<(String, DateTime<Utc>)>>,
    /// How many fetches were made.
    pub fetches: AtomicU32,
    /// Fail the fetch with this call number (1-based) and later ones while set.
    fail_from: Mutex<Option<u32>>,
    /// Cancel this token when the fetch with the given call number starts.
    cancel_at: Mutex<Option<(u32, CancellationToken)>>,
    /// Rows put when the fetch with the given call number starts.
    put_at: Mutex<Vec<(u32, Row)>>,
    /// `list_ids` returns nothing (a broken listing).
    pub empty_listing: Mutex<bool>,
    /// Extra raw records returned verbatim on the next fetch (malformed input).
    pub raw_extra: Mutex<Vec<Value>>,
}

impl ScriptedSource {
    /// An empty vendor.
    pub fn new() -> Arc<Self> {
        Arc::new(ScriptedSource::default())
    }

    /// Inserts or replaces a record.
    pub fn put(&self, id: &str, created: &str, updated: &str, fields: Value) {
        self.put_row(Row {
            id: id.into(),
            created: t(created),
            updated: t(updated),
            fields,
            class: None,
            visible: true,
        });
    }

    /// Inserts or replaces a record given in full.
    pub fn put_row(&self, row: Row) {
        self.rows.lock().unwrap().insert(row.id.clone(), row);
    }

    /// Updates fields of a record and its updated date.
    pub fn update(&self, id: &str, updated: &str, patch: Value) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(id).expect("known row");
        row.updated = t(updated);
        for (k, v) in patch.as_object().unwrap() {
            row.fields[k] = v.clone();
        }
    }

    /// Makes a late commit visible.
    pub fn commit(&self, id: &str) {
        self.rows.lock().unwrap().get_mut(id).unwrap().visible = true;
    }

    /// Deletes a record; `audited` writes an audit row.
    pub fn delete(&self, id: &str, at: &str, audited: bool) {
        self.rows.lock().unwrap().remove(id);
        if audited {
            self.audit.lock().unwrap().push((id.to_string(), t(at)));
        }
    }

    /// Fails the fetch with call number `call` (1-based) and every later one; `None` heals.
    pub fn fail_from(&self, call: Option<u32>) {
        *self.fail_from.lock().unwrap() = call;
    }

    /// Cancels `token` when the fetch with call number `call` starts.
    pub fn cancel_at(&self, call: u32, token: CancellationToken) {
        *self.cancel_at.lock().unwrap() = Some((call, token));
    }

    /// Puts `row` when the fetch with call number `call` (1-based) starts: a change made while
    /// a poll is under way, between its pages.
    pub fn put_at_fetch(&self, call: u32, row: Row) {
        self.put_at.lock().unwrap().push((call, row));
    }

    fn record(row: &Row) -> Value {
        let mut v = row.fields.clone();
        v["id"] = json!(row.id);
        v["updated_at"] = json!(row.updated.to_rfc3339());
        v["created_at"] = json!(row.created.to_rfc3339());
        if let Some(class) = &row.class {
            v["sys_class_name"] = json!(class);
        }
        v
    }
}

fn vendor_error(resource: &Resource, message: &str) -> SourceError {
    SourceError::Vendor {
        resource: resource.name.clone(),
        message: message.into(),
    }
}

#[async_trait]
impl Source for ScriptedSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let call = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, stop)) = self.cancel_at.lock().unwrap().as_ref() {
            if *at == call {
                stop.cancel();
            }
        }
        let due: Vec<Row> = {
            let mut pending = self.put_at.lock().unwrap();
            let (due, later) = pending.drain(..).partition(|(at, _)| *at == call);
            *pending = later;
            due.into_iter().map(|(_, row)| row).collect()
        };
        for row in due {
            self.put_row(row);
        }
        if self
            .fail_from
            .lock()
            .unwrap()
            .is_some_and(|from| call >= from)
        {
            return Err(vendor_error(
                resource,
                "HTTP 503 from https://vendor.test/records",
            ));
        }
        let after = token.map(|t| {
            let (ms, id) = t.split_once('|').unwrap();
            (
                DateTime::from_timestamp_nanos(ms.parse().unwrap()),
                id.to_string(),
            )
        });
        let rows = self.rows.lock().unwrap();
        let mut matching: Vec<&Row> = rows
            .values()
            .filter(|r| r.visible && r.updated >= since)
            .filter(|r| match &after {
                Some((at, id)) => (r.updated, &r.id) > (*at, id),
                None => true,
            })
            .collect();
        matching.sort_by(|a, b| (a.updated, &a.id).cmp(&(b.updated, &b.id)));
        let size = resource.page_size as usize;
        let more = matching.len() > size;
        matching.truncate(size);
        let next = match (more, matching.last()) {
            (true, Some(last)) => Some(format!(
                "{}|{}",
                last.updated.timestamp_nanos_opt().unwrap(),
                last.id
            )),
            _ => None,
        };
        let mut records: Vec<Value> = matching.into_iter().map(Self::record).collect();
        records.extend(self.raw_extra.lock().unwrap().drain(..));
        Ok(Page {
            records,
            next,
            requests: 1,
            vendor_time: None,
        })
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        if *self.empty_listing.lock().unwrap() {
            return Ok(IdPage::default());
        }
        let rows = self.rows.lock().unwrap();
        let mut ids: Vec<String> = rows
            .values()
            .filter(|r| r.visible)
            .map(|r| r.id.clone())
            .filter(|id| token.is_none_or(|t| id.as_str() > t))
            .collect();
        ids.sort();
        let size = resource.page_size as usize;
        let more = ids.len() > size;
        ids.truncate(size);
        let next = if more { ids.last().cloned() } else { None };
        Ok(IdPage { ids, next })
    }

    async fn deleted_since(
        &self,
        _resource: &Resource,
        since: DateTime<Utc>,
        _token: Option<&str>,
    ) -> Result<DeletePage, SourceError> {
        let deletes = self
            .audit
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at >= since)
            .cloned()
            .collect();
        Ok(DeletePage {
            deletes,
            next: None,
        })
    }
}

/// A configuration with one REST-kind source (never built: tests pair it with a scripted
/// source) and one resource `customers` → entity `customer`. `extra` is appended to the
/// resource table.
pub fn config(page_size: u32, extra: &str) -> Config {
    let text = format!(
        r#"
[[sources]]
name = "crm"
kind = "rest"
base_url = "https://vendor.test"
source_system = "CRM"
interval = "1m"
overlap = "60s"
page_size = {page_size}
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = {{ FirstName = "first_name", City = "address.city", Vip = "vip" }}
  on_behalf_of = {{ field = "by" }}
  rest = {{ url = "/customers" }}
  {extra}
"#
    );
    Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A customer's fields.
pub fn customer(first: &str, city: &str) -> Value {
    json!({"first_name": first, "address": {"city": city}, "vip": false, "by": "IFS"})
}
