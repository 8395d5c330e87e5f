//! Test infrastructure shared by the integration tests: schema checks, an in-memory sink with
//! failure injection, and a scripted source that behaves like an ordered, keyset-paged vendor
//! API with controllable commits.
#![allow(dead_code)]

pub mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use pollbus::clock::{Clock, ManualClock};
use pollbus::config::Config;
use pollbus::contract::Message;
use pollbus::poll::Poller;
use pollbus::sink::{Sink, SinkError};
use pollbus::source::{DeletePage, IdPage, Page, Resource, Source, SourceError};
use pollbus::store::sqlite::SqliteStore;
use pollbus::store::Store;

/// Parses a UTC timestamp literal.
pub fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp literal")
}

/// How the [`MemorySink`] behaves on the next publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkMode {
    /// Accepts everything.
    Accept,
    /// Fails transiently without delivering.
    FailTransient,
    /// Delivers, then reports a transient failure (the acknowledgement was lost).
    DeliverThenFail,
}

/// A sink that keeps what it receives, validating every message against the schemas.
#[derive(Default)]
pub struct MemorySink {
    received: Mutex<Vec<Message>>,
    mode: Mutex<Option<SinkMode>>,
    reject_topic: Mutex<Option<String>>,
    reject_message: Mutex<Option<String>>,
    pub publishes: AtomicUsize,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::new(MemorySink::default())
    }
    pub fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = Some(mode);
    }
    /// Rejects every message for `topic` for good (like a missing topic).
    pub fn reject_topic(&self, topic: &str) {
        *self.reject_topic.lock().unwrap() = Some(topic.to_string());
    }
    /// Rejects the message with this entity id for good, without saying which in a batch.
    pub fn reject_entity_id(&self, id: &str) {
        *self.reject_message.lock().unwrap() = Some(id.to_string());
    }
    pub fn clear_rejections(&self) {
        *self.reject_topic.lock().unwrap() = None;
        *self.reject_message.lock().unwrap() = None;
    }
    pub fn messages(&self) -> Vec<Message> {
        self.received.lock().unwrap().clone()
    }
    /// Received messages as (evenType, id, changedFields).
    pub fn summary(&self) -> Vec<(u8, String, String)> {
        self.messages()
            .iter()
            .map(|m| {
                (
                    m.body.even_type.code(),
                    m.body.id.clone(),
                    m.body.changed_fields.clone(),
                )
            })
            .collect()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        for m in messages {
            assert_eq!(m.topic, topic, "publisher groups by topic");
            schema::assert_valid_message(&serde_json::to_value(m).unwrap());
        }
        if self.reject_topic.lock().unwrap().as_deref() == Some(topic) {
            return Err(SinkError::Rejected {
                index: Some(0),
                reason: format!("topic {topic} not found"),
            });
        }
        if let Some(id) = self.reject_message.lock().unwrap().as_deref() {
            if messages.iter().any(|m| m.body.id == id) {
                return Err(SinkError::Rejected {
                    index: None,
                    reason: format!("message for {id} is too large"),
                });
            }
        }
        let mode = self
            .mode
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(SinkMode::Accept);
        match mode {
            SinkMode::Accept => {
                self.received.lock().unwrap().extend_from_slice(messages);
                Ok(())
            }
            SinkMode::FailTransient => Err(SinkError::Transient {
                reason: "connection refused".into(),
            }),
            SinkMode::DeliverThenFail => {
                self.received.lock().unwrap().extend_from_slice(messages);
                Err(SinkError::Transient {
                    reason: "acknowledgement lost".into(),
                })
            }
        }
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// One record of the scripted vendor.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub updated: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub fields: Value,
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
    pub fetches: AtomicU32,
    /// Fail the fetch with this call number (1-based) and later ones while set.
    fail_from: Mutex<Option<u32>>,
    /// Cancel this token when the fetch with the given call number starts.
    cancel_at: Mutex<Option<(u32, CancellationToken)>>,
    /// `list_ids` returns nothing (a broken listing).
    pub empty_listing: Mutex<bool>,
    /// Extra raw records returned verbatim on the next fetch (malformed input).
    pub raw_extra: Mutex<Vec<Value>>,
}

impl ScriptedSource {
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

    pub fn fail_from(&self, call: Option<u32>) {
        *self.fail_from.lock().unwrap() = call;
    }

    pub fn cancel_at(&self, call: u32, token: CancellationToken) {
        *self.cancel_at.lock().unwrap() = Some((call, token));
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

/// Everything a pipeline test needs, on a SQLite file in a temp dir.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub source: Arc<ScriptedSource>,
    pub sink: Arc<MemorySink>,
    pub clock: Arc<ManualClock>,
}

impl Rig {
    pub async fn new(config: Config) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Self::open_store(&dir).await;
        Rig {
            dir,
            config,
            store,
            source: ScriptedSource::new(),
            sink: MemorySink::new(),
            clock: Arc::new(ManualClock::new(t("2024-06-01T12:00:00Z"))),
        }
    }

    async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        Arc::new(SqliteStore::open(&url).await.unwrap())
    }

    /// Simulates a process restart: a new store connection on the same file.
    pub async fn restart(&mut self) {
        self.store = Self::open_store(&self.dir).await;
    }

    pub fn poller(&self, resource: &str) -> Poller {
        let source_config = &self.config.sources[0];
        let r = source_config
            .resources
            .iter()
            .find(|r| r.name == resource)
            .expect("configured resource");
        Poller {
            source: self.source.clone(),
            resource: Arc::new(Resource::build(source_config, r)),
            store: self.store.clone(),
            clock: self.clock.clone() as Arc<dyn Clock>,
            topic_prefix: self.config.sink.topic_prefix().to_string(),
            wake: Arc::new(Notify::new()),
            max_outbox_rows: self.config.outbox.max_rows,
        }
    }

    pub fn publisher(&self) -> pollbus::outbox::Publisher {
        let mut outbox = self.config.outbox.clone();
        outbox.backoff_min = std::time::Duration::from_millis(5);
        outbox.backoff_max = std::time::Duration::from_millis(20);
        pollbus::outbox::Publisher::new(self.store.clone(), self.sink.clone(), outbox)
    }

    /// Polls `customers` once and drains the outbox.
    pub async fn cycle(&self) -> pollbus::poll::PollReport {
        let report = self
            .poller("customers")
            .poll(
                &pollbus::contract::TraceContext::random(),
                &CancellationToken::new(),
            )
            .await
            .expect("poll succeeds");
        self.publisher().drain().await.expect("drain succeeds");
        report
    }
}

/// A customer's fields.
pub fn customer(first: &str, city: &str) -> Value {
    json!({"first_name": first, "address": {"city": city}, "vip": false, "by": "IFS"})
}
