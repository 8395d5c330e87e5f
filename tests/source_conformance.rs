//! One source test suite, run against every vendor simulator (ServiceNow, Revel, Concur and the
//! generic REST source on the contacts API), so every source honours the same guarantees:
//! equal timestamps at a page edge, an empty last page, a failed page that keeps the cursor,
//! a restart in the middle of a resource, and the contract of every message.
//!
//! Each vendor is one [`VendorUnderTest`] impl plus one line in the `conformance!` invocation at
//! the bottom; each case is one generic `async fn` plus its name in that invocation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use pollbus::contract::{ChangeNotification, EventType, Message, PropertyValue};
use pollbus_testkit::concur::{self as concur_sim, ConcurSim};
use pollbus_testkit::rest::{RestSim, TOKEN};
use pollbus_testkit::revel::{self as revel_sim, RevelSim, API_AUTHENTICATION};
use pollbus_testkit::servicenow::{self as servicenow_sim, ServiceNowSim};
use pollbus_testkit::{t, Harness};

/// Every vendor's resource maps to this entity, with one field `Name`.
const ENTITY: &str = "widget";
/// `onBehalfOf` of every message.
const ON_BEHALF_OF: &str = "Conformance";
/// The poll loop's clock at the start of every case (records are older).
const NOW: &str = "2024-06-01T12:00:00Z";

/// A vendor simulator as the suite drives it. Records are numbered `n`; the vendor decides
/// what their ids look like.
#[async_trait]
trait VendorUnderTest: Sized + Send + Sync {
    /// `source_system` in the configuration and every body.
    const SOURCE_SYSTEM: &'static str;
    /// The configured resource.
    const RESOURCE: &'static str;

    /// Starts the simulator, empty.
    async fn start() -> Self;
    /// The source `kind`.
    const KIND: &'static str;
    /// The vendor's keys of the source table (`base_url`, `auth`).
    fn source_keys(&self) -> String;
    /// The vendor's keys of the resource table (`deletes`, dates, vendor paging), besides
    /// those [`toml`] writes for every vendor.
    fn resource_keys(&self) -> String;
    /// The id of record `n` as messages carry it.
    fn id(&self, n: u32) -> String;
    /// Creates record `n` named `name`, or renames it, as changed at `at`.
    fn put(&self, n: u32, name: &str, at: DateTime<Utc>);
    /// Deletes record `n` at `at`.
    fn delete(&self, n: u32, at: DateTime<Utc>);
    /// Answers the next page request normally and fails every later one until [`Self::heal`].
    fn fail_after_first_page(&self);
    /// Answers normally again.
    fn heal(&self);
    /// Answers the next records request `429` with `Retry-After: 18446744073709551615`
    /// (u64::MAX seconds, which once overflowed pollbus's clock arithmetic).
    fn rate_limit_absurdly(&self);
    /// The timestamp of a delete done at `deleted` and noticed by a poll at `polled`: by
    /// default the poll's (deletes found by reconciliation).
    fn delete_stamp(&self, _deleted: DateTime<Utc>, polled: DateTime<Utc>) -> DateTime<Utc> {
        polled
    }
    /// Reconciliations that must miss a record before it counts as deleted: 2 where the id
    /// listing pages by offset (a record deleted mid-listing can hide another), else 1.
    const RECONCILES_TO_DELETE: u32 = 1;
}

/// The pollbus TOML for `vendor`: one source, resource `V::RESOURCE` → entity [`ENTITY`] with
/// field `Name`, `on_behalf_of` [`ON_BEHALF_OF`], `max_attempts = 2`, and the resource's first
/// poll as `initial` says (`emit` or `baseline`).
fn toml_with<V: VendorUnderTest>(vendor: &V, page_size: u32, initial: &str) -> String {
    format!(
        r#"
[[sources]]
name = "vut"
kind = "{}"
source_system = "{}"
overlap = "60s"
page_size = {page_size}
max_attempts = 2
max_retry_wait = "1s"
{}
  [[sources.resources]]
  name = "{}"
  entity = "{ENTITY}"
  on_behalf_of = {{ value = "{ON_BEHALF_OF}" }}
  initial = "{initial}"
{}
"#,
        V::KIND,
        V::SOURCE_SYSTEM,
        vendor.source_keys(),
        V::RESOURCE,
        vendor.resource_keys()
    )
}

/// How many faults stand for "until healed" (more than any poll's attempts).
const UNTIL_HEALED: usize = 50;

/// The records a simulator holds, with their creation times, for vendors whose simulator has
/// separate create and update hooks.
#[derive(Default)]
struct Known(Mutex<BTreeMap<u32, DateTime<Utc>>>);

impl Known {
    /// When record `n` was created, if it exists; otherwise remembers it as created `at`.
    fn created(&self, n: u32, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut known = self.0.lock().unwrap();
        let before = known.get(&n).copied();
        known.entry(n).or_insert(at);
        before
    }

    fn forget(&self, n: u32) {
        self.0.lock().unwrap().remove(&n);
    }
}

struct ServiceNow {
    sim: ServiceNowSim,
}

/// ServiceNow keeps `sys_updated_on` as `yyyy-MM-dd HH:mm:ss` UTC.
fn glide(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[async_trait]
impl VendorUnderTest for ServiceNow {
    const SOURCE_SYSTEM: &'static str = "ServiceNow";
    const RESOURCE: &'static str = "u_widget";
    const KIND: &'static str = "servicenow";

    async fn start() -> Self {
        let sim = ServiceNowSim::start().await;
        sim.set_now(t("2024-05-01T09:00:00Z"));
        ServiceNow { sim }
    }

    fn source_keys(&self) -> String {
        let (user, password) = servicenow_sim::DEFAULT_USER;
        format!(
            r#"base_url = "{}"
auth = {{ kind = "basic", username = "{user}", password = "{password}" }}"#,
            self.sim.base_url()
        )
    }

    fn resource_keys(&self) -> String {
        r#"  fields = { Name = "name" }
  deletes = "audit""#
            .into()
    }

    fn id(&self, n: u32) -> String {
        format!("{n:032x}")
    }

    fn put(&self, n: u32, name: &str, at: DateTime<Utc>) {
        let id = self.id(n);
        self.sim.set_now(at);
        if self.sim.record(Self::RESOURCE, &id).is_some() {
            self.sim.update(
                Self::RESOURCE,
                &id,
                json!({"name": name, "sys_updated_on": glide(at)}),
            );
        } else {
            self.sim.insert(
                Self::RESOURCE,
                json!({"sys_id": id, "name": name, "sys_created_on": glide(at), "sys_updated_on": glide(at)}),
            );
        }
    }

    fn delete(&self, n: u32, at: DateTime<Utc>) {
        self.sim.set_now(at);
        assert!(self.sim.delete(Self::RESOURCE, &self.id(n)));
    }

    fn fail_after_first_page(&self) {
        self.sim
            .inject_after(1, servicenow_sim::Fault::Status(503), UNTIL_HEALED);
    }

    fn heal(&self) {
        self.sim.clear_faults();
    }

    fn rate_limit_absurdly(&self) {
        self.sim.inject(
            servicenow_sim::Fault::RateLimited {
                retry_after: u64::MAX,
            },
            1,
        );
    }

    fn delete_stamp(&self, deleted: DateTime<Utc>, _polled: DateTime<Utc>) -> DateTime<Utc> {
        deleted
    }
}

struct Revel {
    sim: RevelSim,
    known: Known,
}

#[async_trait]
impl VendorUnderTest for Revel {
    const SOURCE_SYSTEM: &'static str = "Revel";
    const RESOURCE: &'static str = "Widget";
    const KIND: &'static str = "revel";

    async fn start() -> Self {
        Revel {
            sim: RevelSim::start(chrono_tz::America::Los_Angeles).await,
            known: Known::default(),
        }
    }

    fn source_keys(&self) -> String {
        format!(
            r#"base_url = "{}"
auth = {{ kind = "header", name = "API-AUTHENTICATION", value = "{API_AUTHENTICATION}" }}"#,
            self.sim.base_url()
        )
    }

    fn resource_keys(&self) -> String {
        r#"  fields = { Name = "name" }
  deletes = "reconcile"
  dates = { updated_timezone = "PST", created_timezone = "PST" }"#
            .into()
    }

    fn id(&self, n: u32) -> String {
        n.to_string()
    }

    fn put(&self, n: u32, name: &str, at: DateTime<Utc>) {
        let fields = json!({"name": name});
        match self.known.created(n, at) {
            Some(_) => self.sim.update(Self::RESOURCE, i64::from(n), at, fields),
            None => self.sim.insert(Self::RESOURCE, i64::from(n), at, fields),
        }
    }

    fn delete(&self, n: u32, _at: DateTime<Utc>) {
        self.known.forget(n);
        self.sim.delete(Self::RESOURCE, i64::from(n));
    }

    fn fail_after_first_page(&self) {
        self.sim
            .inject_after(1, revel_sim::Fault::Status(503), UNTIL_HEALED);
    }

    fn heal(&self) {
        self.sim.clear_faults();
    }

    fn rate_limit_absurdly(&self) {
        self.sim.inject(
            revel_sim::Fault::RateLimited {
                retry_after: u64::MAX,
            },
            1,
        );
    }
}

struct Concur {
    sim: ConcurSim,
    known: Known,
}

#[async_trait]
impl VendorUnderTest for Concur {
    const RECONCILES_TO_DELETE: u32 = 2;
    const SOURCE_SYSTEM: &'static str = "Concur";
    const RESOURCE: &'static str = "reports";
    const KIND: &'static str = "concur";

    async fn start() -> Self {
        Concur {
            sim: ConcurSim::start("refresh-0").await,
            known: Known::default(),
        }
    }

    fn source_keys(&self) -> String {
        let (client_id, client_secret) = concur_sim::CLIENT;
        format!(
            r#"base_url = "{}"
concur = {{ allowed_hosts = ["{}"] }}
auth = {{ kind = "oauth2", client_id = "{client_id}", client_secret = "{client_secret}", refresh_token = "refresh-0" }}"#,
            self.sim.login_url(),
            self.sim.geo_url()
        )
    }

    fn resource_keys(&self) -> String {
        r#"  fields = { Name = "Name" }
  deletes = "reconcile""#
            .into()
    }

    fn id(&self, n: u32) -> String {
        format!("{n:020X}")
    }

    fn put(&self, n: u32, name: &str, at: DateTime<Utc>) {
        match self.known.created(n, at) {
            Some(_) => self.sim.update(&self.id(n), at, json!({"Name": name})),
            None => self
                .sim
                .insert(&self.id(n), at, concur_sim::report(name, 10.0)),
        }
    }

    fn delete(&self, n: u32, _at: DateTime<Utc>) {
        self.known.forget(n);
        self.sim.delete(&self.id(n));
    }

    fn fail_after_first_page(&self) {
        self.sim
            .inject_next_page(concur_sim::Fault::Status(503), UNTIL_HEALED);
    }

    fn heal(&self) {
        self.sim.clear_faults();
    }

    fn rate_limit_absurdly(&self) {
        self.sim.inject(
            concur_sim::Fault::RateLimited {
                retry_after: u64::MAX,
            },
            1,
        );
    }
}

struct Rest {
    sim: RestSim,
    known: Known,
}

#[async_trait]
impl VendorUnderTest for Rest {
    const RECONCILES_TO_DELETE: u32 = 2;
    const SOURCE_SYSTEM: &'static str = "SageOne";
    const RESOURCE: &'static str = "contacts";
    const KIND: &'static str = "rest";

    async fn start() -> Self {
        Rest {
            sim: RestSim::start().await,
            known: Known::default(),
        }
    }

    fn source_keys(&self) -> String {
        format!(
            r#"base_url = "{}"
auth = {{ kind = "bearer", token = "{TOKEN}" }}"#,
            self.sim.base_url()
        )
    }

    fn resource_keys(&self) -> String {
        r#"  id_field = "id"
  fields = { Name = "name" }
  deletes = "reconcile"
  dates = { updated_field = "updated_at", updated_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", updated_timezone = "GMT", created_field = "created_at", created_format = "yyyy-MM-dd'T'HH:mm:ss'Z'", created_timezone = "GMT" }
  rest = { url = "/contacts?updated_or_created_since=${date:yyyy-MM-dd'T'HH:mm:ss'Z'}", records = "/$items", paging = { kind = "page", page_param = "page", size_param = "items_per_page" } }"#.into()
    }

    fn id(&self, n: u32) -> String {
        format!("c{n:03}")
    }

    fn put(&self, n: u32, name: &str, at: DateTime<Utc>) {
        let created = self.known.created(n, at).unwrap_or(at);
        self.sim.put_at(&self.id(n), name, created, at);
    }

    fn delete(&self, n: u32, _at: DateTime<Utc>) {
        self.known.forget(n);
        self.sim.delete(&self.id(n));
    }

    fn fail_after_first_page(&self) {
        self.sim.inject_after(1, 503, UNTIL_HEALED);
    }

    fn heal(&self) {
        self.sim.clear_faults();
    }

    fn rate_limit_absurdly(&self) {
        self.sim.rate_limit_once(&u64::MAX.to_string());
    }
}

// ----- helpers -----

/// A vendor and a harness polling it.
struct Case<V> {
    vendor: V,
    h: Harness,
}

impl<V: VendorUnderTest> Case<V> {
    async fn new(page_size: u32) -> Case<V> {
        Self::with_initial(page_size, "emit").await
    }

    /// A case whose resource starts with `initial` (`emit` or `baseline`).
    async fn with_initial(page_size: u32, initial: &str) -> Case<V> {
        let vendor = V::start().await;
        let h = Harness::vendor(&toml_with(&vendor, page_size, initial), t(NOW)).await;
        Case { vendor, h }
    }

    /// `second` seconds after 2024-05-01T10:00:00Z.
    fn at(second: i64) -> DateTime<Utc> {
        t("2024-05-01T10:00:00Z") + Duration::seconds(second)
    }

    async fn poll(&self) {
        self.h.poll(V::RESOURCE).await;
    }

    /// Messages received so far as (event, id, Name), in order.
    fn received(&self) -> Vec<(EventType, String, Option<String>)> {
        self.h
            .sink
            .messages()
            .iter()
            .map(|m| (m.body.even_type, m.body.id.clone(), name_of(m)))
            .collect()
    }

    /// Panics unless every record `n` in `expected` got exactly the one message given (event
    /// and Name) and nothing else arrived.
    fn assert_received(&self, expected: &[(EventType, u32, &str)]) {
        let mut want: Vec<(EventType, String, Option<String>)> = expected
            .iter()
            .map(|(e, n, name)| (*e, self.vendor.id(*n), Some(name.to_string())))
            .collect();
        let mut got = self.received();
        want.sort_by(|a, b| a.1.cmp(&b.1));
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            want,
            "{}: every change once, nothing else",
            V::SOURCE_SYSTEM
        );
        self.h.sink.assert_unique();
    }

    fn clear(&self) {
        self.h.sink.clear();
    }
}

fn name_of(m: &Message) -> Option<String> {
    match m.application_properties.get("Name") {
        Some(PropertyValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

use EventType::{Create, Delete, Update};

// ----- cases -----

/// Records sharing one timestamp across a page boundary are all read once, and the overlap
/// that reads them again publishes nothing.
async fn equal_timestamps_at_a_page_edge<V: VendorUnderTest>() {
    let c = Case::<V>::new(2).await;
    c.vendor.put(1, "one", Case::<V>::at(0));
    for n in 2..=5 {
        c.vendor.put(n, &format!("n{n}"), Case::<V>::at(10));
    }
    c.vendor.put(6, "six", Case::<V>::at(20));
    c.poll().await;
    c.assert_received(&[
        (Create, 1, "one"),
        (Create, 2, "n2"),
        (Create, 3, "n3"),
        (Create, 4, "n4"),
        (Create, 5, "n5"),
        (Create, 6, "six"),
    ]);
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
    c.vendor.put(3, "three", Case::<V>::at(30));
    c.vendor.put(7, "seven", Case::<V>::at(30));
    c.poll().await;
    c.assert_received(&[(Update, 3, "three"), (Create, 7, "seven")]);
}

/// A result that fills its last page exactly (the next page is empty) ends the poll cleanly.
async fn empty_last_page<V: VendorUnderTest>() {
    let c = Case::<V>::new(2).await;
    for n in 1..=4 {
        c.vendor
            .put(n, &format!("n{n}"), Case::<V>::at(i64::from(n)));
    }
    c.poll().await;
    c.assert_received(&[
        (Create, 1, "n1"),
        (Create, 2, "n2"),
        (Create, 3, "n3"),
        (Create, 4, "n4"),
    ]);
    assert_eq!(c.h.cursor(V::RESOURCE).await, Some(Case::<V>::at(4)));
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
}

/// A page that fails fails the poll without moving the cursor past anything undelivered; the
/// next poll delivers every change exactly once.
async fn a_failed_page_keeps_the_cursor<V: VendorUnderTest>() {
    let c = Case::<V>::new(2).await;
    c.vendor.put(1, "n1", Case::<V>::at(0));
    c.poll().await;
    let before = c.h.cursor(V::RESOURCE).await;
    assert_eq!(before, Some(Case::<V>::at(0)));
    for n in 2..=6 {
        c.vendor
            .put(n, &format!("n{n}"), Case::<V>::at(i64::from(n) * 10));
    }
    c.vendor.fail_after_first_page();
    let failed = c.h.try_poll(V::RESOURCE).await;
    assert!(failed.is_err(), "{}: {failed:?}", V::SOURCE_SYSTEM);
    let after = c.h.cursor(V::RESOURCE).await;
    let delivered: BTreeMap<String, usize> =
        c.received()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (_, id, _)| {
                *m.entry(id).or_default() += 1;
                m
            });
    for n in 2..=6 {
        if !delivered.contains_key(&c.vendor.id(n)) {
            assert!(
                after <= Some(Case::<V>::at(i64::from(n) * 10)),
                "{}: cursor {after:?} passed undelivered record {n}",
                V::SOURCE_SYSTEM
            );
        }
    }
    assert!(
        after >= before,
        "{}: the cursor went back",
        V::SOURCE_SYSTEM
    );
    c.vendor.heal();
    c.poll().await;
    c.assert_received(&[
        (Create, 1, "n1"),
        (Create, 2, "n2"),
        (Create, 3, "n3"),
        (Create, 4, "n4"),
        (Create, 5, "n5"),
        (Create, 6, "n6"),
    ]);
    assert_eq!(c.h.cursor(V::RESOURCE).await, Some(Case::<V>::at(60)));
}

/// A process that stops in the middle of a resource (after its first page) and starts again
/// on the same state file loses and doubles nothing.
async fn restart_mid_resource<V: VendorUnderTest>() {
    let mut c = Case::<V>::new(2).await;
    for n in 1..=7 {
        c.vendor
            .put(n, &format!("n{n}"), Case::<V>::at(i64::from(n)));
    }
    c.vendor.fail_after_first_page();
    assert!(c.h.try_poll(V::RESOURCE).await.is_err());
    c.h.restart().await;
    c.vendor.heal();
    c.vendor.put(2, "two", Case::<V>::at(100));
    c.poll().await;
    let got = c.received();
    let twos: Vec<_> = got.iter().filter(|m| m.1 == c.vendor.id(2)).collect();
    // Record 2 may have been published before the stop (then updated) or only after.
    match twos.as_slice() {
        [(Create, _, Some(name))] => assert_eq!(name, "two"),
        [(Create, _, _), (Update, _, Some(name))] => assert_eq!(name, "two"),
        other => panic!("{}: record 2 arrived as {other:?}", V::SOURCE_SYSTEM),
    }
    let mut others: Vec<(EventType, String)> = got
        .iter()
        .filter(|m| m.1 != c.vendor.id(2))
        .map(|m| (m.0, m.1.clone()))
        .collect();
    others.sort_by(|a, b| a.1.cmp(&b.1));
    let mut want: Vec<(EventType, String)> = [1, 3, 4, 5, 6, 7]
        .iter()
        .map(|n| (Create, c.vendor.id(*n)))
        .collect();
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(others, want, "{}", V::SOURCE_SYSTEM);
    c.h.sink.assert_unique();
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
}

/// Every message is schema-valid (the sink checks) and carries exactly the body the contract
/// says: source system, event, id, type, partition key, on-behalf-of, changed fields, and the
/// vendor's change time.
async fn every_message_follows_the_contract<V: VendorUnderTest>() {
    let c = Case::<V>::new(10).await;
    c.vendor.put(1, "Åse", Case::<V>::at(1));
    c.vendor.put(2, "Bodø", Case::<V>::at(2));
    c.vendor.put(3, "Cæcilie", Case::<V>::at(3));
    c.poll().await;
    c.vendor.put(1, "Åse Marie", Case::<V>::at(40));
    c.poll().await;
    let deleted = Case::<V>::at(50);
    c.vendor.delete(2, deleted);
    for _ in 0..V::RECONCILES_TO_DELETE {
        c.h.advance(Duration::hours(2));
        c.poll().await;
    }
    let polled = t(NOW) + Duration::hours(2 * i64::from(V::RECONCILES_TO_DELETE));

    let expect = |kind: EventType, n: u32, fields: &str, at: DateTime<Utc>| {
        let id = c.vendor.id(n);
        (
            ChangeNotification {
                source_system: V::SOURCE_SYSTEM.into(),
                even_type: kind,
                id: id.clone(),
                entity_type: ENTITY.into(),
                timestamp: String::new(),
                partition_key: format!("{ENTITY}.{id}"),
                on_behalf_of: Some(ON_BEHALF_OF.into()),
                changed_fields: fields.into(),
            },
            at,
        )
    };
    let want = [
        expect(Create, 1, "Name", Case::<V>::at(1)),
        expect(Create, 2, "Name", Case::<V>::at(2)),
        expect(Create, 3, "Name", Case::<V>::at(3)),
        expect(Update, 1, "Name", Case::<V>::at(40)),
        expect(Delete, 2, "", c.vendor.delete_stamp(deleted, polled)),
    ];
    let got = c.h.sink.messages();
    assert_eq!(
        got.len(),
        want.len(),
        "{}: {:?}",
        V::SOURCE_SYSTEM,
        c.received()
    );
    for (m, (mut body, at)) in got.iter().zip(want) {
        assert_eq!(m.topic, format!("api.event.{ENTITY}"));
        let stamp: DateTime<Utc> = m
            .body
            .timestamp
            .parse()
            .unwrap_or_else(|e| panic!("timestamp {:?}: {e}", m.body.timestamp));
        assert_eq!(stamp, at, "{}: timestamp of {:?}", V::SOURCE_SYSTEM, m.body);
        body.timestamp = m.body.timestamp.clone();
        assert_eq!(m.body, body, "{}", V::SOURCE_SYSTEM);
    }
    let names: Vec<Option<String>> = got.iter().map(name_of).collect();
    assert_eq!(
        names,
        [
            Some("Åse".to_string()),
            Some("Bodø".to_string()),
            Some("Cæcilie".to_string()),
            Some("Åse Marie".to_string()),
            None
        ],
        "{}: the Name property carries the new value",
        V::SOURCE_SYSTEM
    );
    c.h.sink.assert_unique();
}

/// A change whose updated date is earlier than (or equal to) the one already seen — another
/// vendor node's clock, a clock step — is still published, with the vendor's date; the overlap
/// re-reading it publishes nothing more. (ServiceNow's `sys_mod_count` goes up with the change,
/// so it does not prove the copy older.)
async fn a_change_dated_earlier_is_still_published<V: VendorUnderTest>() {
    let c = Case::<V>::new(10).await;
    c.vendor.put(1, "one", Case::<V>::at(100));
    c.vendor.put(2, "two", Case::<V>::at(100));
    c.poll().await;
    c.clear();
    c.vendor.put(1, "one, skewed", Case::<V>::at(70));
    c.vendor.put(2, "two, same second", Case::<V>::at(100));
    c.poll().await;
    c.assert_received(&[(Update, 1, "one, skewed"), (Update, 2, "two, same second")]);
    let stamps: BTreeMap<String, DateTime<Utc>> =
        c.h.sink
            .messages()
            .iter()
            .map(|m| (m.body.id.clone(), m.body.timestamp.parse().unwrap()))
            .collect();
    assert_eq!(
        stamps.get(&c.vendor.id(1)),
        Some(&Case::<V>::at(70)),
        "{}: the vendor's date",
        V::SOURCE_SYSTEM
    );
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
}

/// A record changed after a `baseline` first poll started — here between its first page and
/// the rest, the first attempt failing there — is published as a first-seen UPDATE, not
/// swallowed into the baseline; the records read before stay silent.
async fn a_record_changed_mid_baseline_is_published<V: VendorUnderTest>() {
    let c = Case::<V>::with_initial(2, "baseline").await;
    for n in 1..=5 {
        c.vendor
            .put(n, &format!("n{n}"), Case::<V>::at(i64::from(n)));
    }
    c.vendor.fail_after_first_page();
    assert!(
        c.h.try_poll(V::RESOURCE).await.is_err(),
        "{}: the first page only",
        V::SOURCE_SYSTEM
    );
    c.vendor.heal();
    // The vendor's clock, 30 s after the poll loop's.
    c.vendor.put(5, "five", t(NOW) + Duration::seconds(30));
    c.poll().await;
    c.assert_received(&[(Update, 5, "five")]);
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
}

/// Revel's fall-back night (America/Los_Angeles, 2024-11-03): a record updated at 01:50 PDT and
/// again at 01:20 PST — later, but an earlier local reading — gets its second change
/// published, stamped with the PST instant, and once only.
#[tokio::test]
async fn revel_fall_back_night_publishes_the_second_change() {
    let c = Case::<Revel>::new(10).await;
    let pdt_0150 = t("2024-11-03T08:50:00Z");
    let pst_0120 = t("2024-11-03T09:20:00Z");
    c.vendor.put(1, "first", pdt_0150);
    c.poll().await;
    c.assert_received(&[(Create, 1, "first")]);
    c.clear();
    c.vendor.put(1, "second", pst_0120);
    c.poll().await;
    c.assert_received(&[(Update, 1, "second")]);
    let stamp: DateTime<Utc> = c.h.sink.messages()[0].body.timestamp.parse().unwrap();
    assert_eq!(stamp, pst_0120, "01:20 read as the instant after 01:50 PDT");
    c.clear();
    c.poll().await;
    c.assert_received(&[]);
}

/// ServiceNow proves a copy older with `sys_mod_count`: a lagging node serving the previous
/// copy (lower count, date not newer) publishes nothing, while a later change stamped with an
/// earlier date by a skewed node (higher count) is published.
#[tokio::test]
async fn servicenow_mod_count_tells_a_stale_copy_from_a_skewed_change() {
    let c = Case::<ServiceNow>::new(10).await;
    let table = ServiceNow::RESOURCE;
    let id = c.vendor.id(1);
    c.vendor.put(1, "first", Case::<ServiceNow>::at(0)); // sys_mod_count 0
    c.vendor.put(1, "second", Case::<ServiceNow>::at(100)); // 1
    c.poll().await;
    c.assert_received(&[(Update, 1, "second")]);
    c.clear();
    // the previous copy, as a lagging node serves it, dated within the overlap
    for date in [Case::<ServiceNow>::at(70), Case::<ServiceNow>::at(100)] {
        c.vendor.sim.update(
            table,
            &id,
            json!({"name": "first", "sys_updated_on": glide(date), "sys_mod_count": "0"}),
        );
        c.poll().await;
        c.assert_received(&[]);
    }
    // the current copy again, then a change whose node clock is 50 s behind
    c.vendor.sim.update(
        table,
        &id,
        json!({"name": "second", "sys_updated_on": glide(Case::<ServiceNow>::at(100)), "sys_mod_count": "1"}),
    );
    c.poll().await;
    c.assert_received(&[]);
    c.vendor.sim.update(
        table,
        &id,
        json!({"name": "third", "sys_updated_on": glide(Case::<ServiceNow>::at(50)), "sys_mod_count": "2"}),
    );
    c.poll().await;
    c.assert_received(&[(Update, 1, "third")]);
}

/// Runs every case against every vendor: one module per vendor, one test per case.
macro_rules! conformance {
    (vendors: [$($vendor:ident => $ty:ty),* $(,)?], cases: $cases:tt) => {
        $( conformance!(@vendor $vendor, $ty, $cases); )*
    };
    (@vendor $vendor:ident, $ty:ty, [$($case:ident),* $(,)?]) => {
        mod $vendor {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case::<$ty>().await;
                }
            )*
        }
    };
}

/// Injected: the vendor answers `429` with `Retry-After: 18446744073709551615` (u64::MAX
/// seconds). pollbus cuts the wait to `max_retry_wait` (1 s here), logs it, and the same poll
/// goes on and publishes the change: no panic, no silenced source.
async fn an_absurd_retry_after_is_cut_and_polling_goes_on<V: VendorUnderTest>() {
    let c = Case::<V>::new(10).await;
    c.vendor.put(1, "Åse", Case::<V>::at(1));
    c.poll().await;
    c.vendor.put(1, "Åse Marie", Case::<V>::at(40));
    c.vendor.rate_limit_absurdly();
    let started = std::time::Instant::now();
    c.poll().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{}: the wait was cut to max_retry_wait",
        V::SOURCE_SYSTEM
    );
    let names: Vec<Option<String>> = c.received().into_iter().map(|(_, _, n)| n).collect();
    assert!(
        names.contains(&Some("Åse Marie".into())),
        "{}: {names:?}",
        V::SOURCE_SYSTEM
    );
}

conformance! {
    vendors: [
        servicenow => ServiceNow,
        revel => Revel,
        concur => Concur,
        rest => Rest,
    ],
    cases: [
        equal_timestamps_at_a_page_edge,
        empty_last_page,
        a_failed_page_keeps_the_cursor,
        restart_mid_resource,
        every_message_follows_the_contract,
        a_change_dated_earlier_is_still_published,
        a_record_changed_mid_baseline_is_published,
        an_absurd_retry_after_is_cut_and_polling_goes_on,
    ]
}
