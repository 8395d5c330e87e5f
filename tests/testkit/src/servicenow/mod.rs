//! A ServiceNow instance simulator for tests: the Table API (`/api/now[/v1|/v2]/table/{table}`)
//! with encoded queries, paging headers and reference fields; `/oauth_token.do` with the
//! `password`, `refresh_token` and `client_credentials` grants; basic auth; hourly rate limits;
//! `sys_audit_delete`; parent/child tables sharing sys_ids; and hooks for tests to change
//! records, move the clock, inject faults, hide records by ACL and read a request log.
//!
//! It follows `shared/reference/vendor-apis.md` (ServiceNow section), quirks included: invalid
//! query parts are silently ignored, `sysparm_limit` is applied before ACLs (pages can be short
//! while more exist), v1 answers 404 for an empty result, every value is a string.
//!
//! Choices where the reference is silent: `/api/now/table` answers as v2 (configurable); without
//! `ORDERBY` records come in sys_id order, and ties of the sort keys are broken by sys_id; empty
//! values are SQL NULLs (`state!=1` does not match an empty state); a `Link` without a count has
//! no `last`; a table exists once defined or inserted into (others answer 400 "Invalid table");
//! every token-endpoint refusal is 401 `access_denied`; the simulated clock (records) is separate
//! from the wall clock (token expiry, rate-limit windows, `X-RateLimit-Reset`).
//!
//! Hooks at a glance: [`ServiceNowSim::set_now`] / [`ServiceNowSim::advance`] (the clock),
//! `insert` / `bulk_insert` / `update` / `delete` / `purge` (records), `inject` / `inject_for`
//! (faults), `hide` (ACLs), `expire_access_tokens` / `expire_all_tokens`, `set_rate_limit`,
//! `configure`, `requests` / `table_requests` / `token_requests` (the log), `stop` / `resume`.
//!
//! ```text
//! let sn = ServiceNowSim::start().await;
//! sn.set_now(t("2024-05-01T10:00:00Z"));
//! let id = sn.insert("incident", json!({"number": "INC0010001", "state": "1"}));
//! sn.inject(Fault::Status(503), 1);
//! // … point the ServiceNow source at sn.base_url() with user "admin" / "admin" …
//! assert_eq!(sn.table_requests().len(), 2);
//! sn.stop().await;
//! ```

mod api;
mod auth;
pub mod query;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDateTime, Timelike, Utc};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use query::FieldType;
pub use store::{AuditName, Fields, StoreError, TableDef, AUDIT_DELETE_TABLE};

/// The user basic auth and the password grant accept by default (password `admin`).
pub const DEFAULT_USER: (&str, &str) = ("admin", "admin");
/// The OAuth client registered by default.
pub const DEFAULT_CLIENT: (&str, &str) = ("pollbus", "pollbus-secret");

/// Which Table API version answers a request (`/api/now/table` maps to the configured default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// 404 "No Record found" for an empty result.
    V1,
    /// 200 `{"result": []}` for an empty result.
    V2,
}

/// An hourly inbound REST rate-limit rule, counted per user over Table API requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window (`X-RateLimit-Limit`).
    pub requests_per_hour: u32,
    /// The window length (an hour on a real instance; shorter in tests).
    pub window: Duration,
    /// `X-RateLimit-Rule`: the sys_id of the rule.
    pub rule_sys_id: String,
}

impl RateLimit {
    /// A rule allowing `requests` per hour.
    pub fn per_hour(requests: u32) -> RateLimit {
        RateLimit {
            requests_per_hour: requests,
            window: Duration::from_secs(3600),
            rule_sys_id: "a5ec56a3db3fb2001fd1ecd8db961960".into(),
        }
    }

    /// The same rule with a shorter window, e.g. to test a reset.
    pub fn with_window(mut self, window: Duration) -> RateLimit {
        self.window = window;
        self
    }
}

/// How the simulator starts. `SimConfig::default()` is a plain instance: user admin/admin with
/// basic auth, OAuth client `pollbus`/`pollbus-secret`, tokens of 1799 s, no rate limit, the
/// default tables, `/api/now/table` answering as v2, display values in UTC.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// (user_name, password) pairs for basic auth and the password grant.
    pub users: Vec<(String, String)>,
    /// (client_id, client_secret) pairs of registered OAuth applications.
    pub oauth_clients: Vec<(String, String)>,
    /// Whether the Table API accepts basic auth.
    pub basic_auth: bool,
    /// The user the `client_credentials` grant acts as; `None` (the default, as on an instance
    /// without `glide.oauth.inbound.client.credential.grant_type.enabled`) refuses the grant.
    pub client_credentials_user: Option<String>,
    /// Access token lifetime (`expires_in`).
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// The rate-limit rule, if any.
    pub rate_limit: Option<RateLimit>,
    /// Tables known at start (others are created by inserting into them).
    pub tables: Vec<TableDef>,
    /// `glide.ui.audit_deleted_tables`: `sys_*` tables whose deletes are audited.
    pub audited_sys_tables: Vec<String>,
    /// Which table name an audit row carries for a child record.
    pub audit_name: AuditName,
    /// How `/api/now/table/…` (no version) answers.
    pub default_version: ApiVersion,
    /// `glide.invalid_query.returns_no_rows`: an invalid query part makes the result empty.
    pub invalid_query_returns_no_rows: bool,
    /// The session user's time zone for display values and `gs.dateGenerate` literals.
    pub user_time_zone: FixedOffset,
    /// The user written into sys_created_by/sys_updated_by by the test hooks.
    pub acting_user: String,
}

impl SimConfig {
    /// Adds (or replaces) a table definition, e.g.
    /// `SimConfig::default().with_table(TableDef::new("u_vip").extends("customer_contact"))`.
    pub fn with_table(mut self, def: TableDef) -> SimConfig {
        self.tables.retain(|t| t.name != def.name);
        self.tables.push(def);
        self
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            users: vec![(DEFAULT_USER.0.into(), DEFAULT_USER.1.into())],
            oauth_clients: vec![(DEFAULT_CLIENT.0.into(), DEFAULT_CLIENT.1.into())],
            basic_auth: true,
            client_credentials_user: None,
            access_token_ttl: Duration::from_secs(1799),
            refresh_token_ttl: Duration::from_secs(100 * 24 * 3600),
            rate_limit: None,
            tables: store::default_tables(),
            audited_sys_tables: vec!["sys_user".into()],
            audit_name: AuditName::RecordClass,
            default_version: ApiVersion::V2,
            invalid_query_returns_no_rows: false,
            user_time_zone: FixedOffset::east_opt(0).expect("UTC offset"),
            acting_user: "admin".into(),
        }
    }
}

/// A failure to inject into the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a ServiceNow error body (500, 503, …).
    Status(u16),
    /// Answer 429 "Rate limit exceeded" with `Retry-After: <seconds>`.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after: u64,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer normally but cut the JSON body in half (a complete HTTP response).
    TruncatedJson,
    /// Answer normally but with a body that is not JSON (`…,"x":undefined}`).
    MalformedJson,
    /// Send half the body, then drop the connection.
    Disconnect,
    /// 200 with the HTML page of a hibernating developer instance.
    Hibernating,
    /// Answer normally, but the first record's first string value ends in a lone surrogate
    /// escape (`\ud800`, as a broken integration can store) and the second record gains a
    /// field nested 200 arrays deep: the page as a whole is not valid for strict parsers.
    BadRecords,
}

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// The Table API.
    Table,
    /// `/oauth_token.do`.
    Token,
}

/// How a request authenticated (or tried to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// `Basic …`.
    Basic,
    /// `Bearer …` (an OAuth access token).
    Bearer,
    /// Any other scheme.
    Other,
}

/// One request as the simulator saw and answered it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query parameters in order (for `/oauth_token.do`: the form fields, secrets as `***`).
    pub params: Vec<(String, String)>,
    /// The kind of `Authorization` header sent.
    pub auth: AuthKind,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// Response body bytes sent.
    pub response_bytes: usize,
    /// Wall-clock time the request arrived.
    pub at: DateTime<Utc>,
    /// Time taken to answer.
    pub elapsed: Duration,
    /// Parts of `sysparm_query` that were silently ignored.
    pub ignored_query: Vec<String>,
    /// The injected fault, if one was applied.
    pub fault: Option<Fault>,
    /// Index entries the query visited (0 for other requests).
    pub examined: usize,
}

impl LoggedRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this was a Table API request.
    pub fn is_table(&self) -> bool {
        self.table().is_some()
    }

    /// The table of a Table API request.
    pub fn table(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("/api/now/")?;
        let rest = rest
            .strip_prefix("v1/")
            .or_else(|| rest.strip_prefix("v2/"))
            .unwrap_or(rest);
        rest.strip_prefix("table/")?.split('/').next()
    }
}

/// A predicate hiding records from Table API answers (applied after the limit, like ACLs).
pub type Acl = Arc<dyn Fn(&Fields) -> bool + Send + Sync>;

/// State shared by the server and the handle.
struct Shared {
    config: Mutex<SimConfig>,
    store: RwLock<store::Store>,
    frozen_now: Mutex<Option<NaiveDateTime>>,
    tokens: Mutex<auth::Tokens>,
    rate: Mutex<auth::RateState>,
    /// (target, fault or `None` to answer normally, how many more requests).
    faults: Mutex<VecDeque<(FaultTarget, Option<Fault>, usize)>>,
    acl: RwLock<Option<Acl>>,
    log: Mutex<Vec<LoggedRequest>>,
    base_url: String,
}

impl Shared {
    fn config(&self) -> SimConfig {
        lock(&self.config).clone()
    }

    /// The simulated "now", whole seconds.
    fn now(&self) -> NaiveDateTime {
        match *lock(&self.frozen_now) {
            Some(now) => now,
            None => whole_second(Utc::now().naive_utc()),
        }
    }

    fn stamp(&self) -> store::Stamp {
        store::Stamp {
            now: self.now().format(query::DATE_FORMAT).to_string(),
            user: lock(&self.config).acting_user.clone(),
        }
    }

    /// Takes one use of the first fault queued for `target`.
    fn take_fault(&self, target: FaultTarget) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let pos = faults.iter().position(|(t, _, n)| *t == target && *n > 0)?;
        let entry = &mut faults[pos];
        entry.2 -= 1;
        let fault = entry.1.clone();
        if entry.2 == 0 {
            faults.remove(pos);
        }
        fault
    }

    fn record(&self, entry: LoggedRequest) {
        lock(&self.log).push(entry);
    }
}

/// ServiceNow keeps whole seconds.
fn whole_second(at: NaiveDateTime) -> NaiveDateTime {
    at.with_nanosecond(0).unwrap_or(at)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator. Dropping it stops the server.
pub struct ServiceNowSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl ServiceNowSim {
    /// Starts a default instance on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> ServiceNowSim {
        ServiceNowSim::start_with(SimConfig::default()).await
    }

    /// Starts an instance with this configuration on 127.0.0.1 and an ephemeral port.
    pub async fn start_with(config: SimConfig) -> ServiceNowSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut store = store::Store::new(config.tables.clone());
        store.audited_sys_tables = config.audited_sys_tables.iter().cloned().collect();
        store.audit_name = config.audit_name;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            store: RwLock::new(store),
            frozen_now: Mutex::new(None),
            tokens: Mutex::new(auth::Tokens::default()),
            rate: Mutex::new(auth::RateState::new()),
            faults: Mutex::new(VecDeque::new()),
            acl: RwLock::new(None),
            log: Mutex::new(Vec::new()),
            base_url: format!("http://{addr}"),
        });
        let sim = ServiceNowSim {
            shared,
            addr,
            server: Mutex::new(None),
        };
        sim.serve(listener);
        sim
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = api::router(self.shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        *lock(&self.server) = Some((tx, task));
    }

    /// `http://127.0.0.1:<port>`: the instance URL to configure as `base_url`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{base_url}/api/now/table/{table}`.
    pub fn table_url(&self, table: &str) -> String {
        format!("{}/api/now/table/{table}", self.shared.base_url)
    }

    /// Stops listening and closes connections (waits up to 2 s for requests in flight). The
    /// records and tokens are kept; [`ServiceNowSim::resume`] serves them again on the same port.
    pub async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some((tx, mut task)) = server {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Listens again on the same address after [`ServiceNowSim::stop`].
    pub async fn resume(&self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    // ----- clock -----

    /// The simulated now used for sys_created_on / sys_updated_on / audit rows.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now().and_utc()
    }

    /// Freezes the clock at `at` (truncated to the second); many records can share one second.
    pub fn set_now(&self, at: DateTime<Utc>) {
        *lock(&self.shared.frozen_now) = Some(whole_second(at.naive_utc()));
    }

    /// Moves the (frozen) clock forward.
    pub fn advance(&self, by: Duration) {
        let now = self.shared.now();
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        self.set_now((now + by).and_utc());
    }

    /// Follows the system clock again (the default).
    pub fn use_system_clock(&self) {
        *lock(&self.shared.frozen_now) = None;
    }

    // ----- tables and records -----

    /// Defines (or redefines) a table, e.g. `TableDef::new("u_x").extends("sys_user")`.
    pub fn define_table(&self, def: TableDef) {
        write(&self.shared.store).define(def);
    }

    /// Inserts a record and returns its sys_id. `record` is a JSON object; values become
    /// strings (`{"value": …}` objects their value, null ""). Explicit `sys_id`,
    /// `sys_created_on`, `sys_updated_on` (`yyyy-MM-dd HH:mm:ss` UTC) win over the generated
    /// ones. Panics on a bad record (a test bug); see [`ServiceNowSim::try_insert`].
    pub fn insert(&self, table: &str, record: Value) -> String {
        self.try_insert(table, fields_of(&record))
            .unwrap_or_else(|e| panic!("insert into {table}: {e}"))
    }

    /// Inserts a record given as fields.
    pub fn try_insert(&self, table: &str, fields: Fields) -> Result<String, StoreError> {
        let stamp = self.shared.stamp();
        write(&self.shared.store).insert(table, fields, &stamp)
    }

    /// Inserts many records under one lock (1,000,000 in a few seconds in release builds) and
    /// returns their sys_ids in order.
    pub fn bulk_insert(
        &self,
        table: &str,
        records: impl IntoIterator<Item = Fields>,
    ) -> Result<Vec<String>, StoreError> {
        let stamp = self.shared.stamp();
        write(&self.shared.store).insert_many(table, records, &stamp)
    }

    /// Changes fields of a record of `table` (or a child table). If a value changes, the record
    /// gets sys_updated_on = now (unless the patch sets it), sys_mod_count + 1. Returns whether
    /// anything changed. Panics if the record does not exist.
    pub fn update(&self, table: &str, sys_id: &str, patch: Value) -> bool {
        let stamp = self.shared.stamp();
        write(&self.shared.store)
            .update(table, sys_id, fields_of(&patch), &stamp)
            .unwrap_or_else(|e| panic!("update {table}/{sys_id}: {e}"))
    }

    /// Deletes a record of `table` (or a child), writing a `sys_audit_delete` row as the
    /// instance would (not for `no_audit_delete` tables). Returns false if it did not exist.
    pub fn delete(&self, table: &str, sys_id: &str) -> bool {
        self.remove(table, sys_id, true)
    }

    /// Deletes a record leaving no audit row (like Table Cleaner).
    pub fn purge(&self, table: &str, sys_id: &str) -> bool {
        self.remove(table, sys_id, false)
    }

    fn remove(&self, table: &str, sys_id: &str, audit: bool) -> bool {
        let stamp = self.shared.stamp();
        write(&self.shared.store)
            .delete(table, sys_id, &stamp, audit)
            .is_ok()
    }

    /// A record's stored fields (if it is in `table` or a child of it).
    pub fn record(&self, table: &str, sys_id: &str) -> Option<Fields> {
        read(&self.shared.store)
            .get_in(table, sys_id)
            .map(|r| r.fields())
    }

    /// How many records `table` holds, its children's included.
    pub fn count(&self, table: &str) -> usize {
        read(&self.shared.store).count(table)
    }

    // ----- faults, ACLs, auth, rate limits -----

    /// Makes the next `times` Table API requests fail with `fault` (faults queue in order).
    pub fn inject(&self, fault: Fault, times: usize) {
        self.inject_for(FaultTarget::Table, fault, times);
    }

    /// Makes the next `times` requests to `target` fail with `fault`.
    pub fn inject_for(&self, target: FaultTarget, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.shared.faults).push_back((target, Some(fault), times));
        }
    }

    /// Answers the next `skip` Table API requests normally, then fails `times` with `fault`
    /// (e.g. a failure on the second page of a poll).
    pub fn inject_after(&self, skip: usize, fault: Fault, times: usize) {
        let mut faults = lock(&self.shared.faults);
        if skip > 0 {
            faults.push_back((FaultTarget::Table, None, skip));
        }
        if times > 0 {
            faults.push_back((FaultTarget::Table, Some(fault), times));
        }
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Hides records for which `hidden` returns true, after the limit is applied (so pages come
    /// back short), like ACLs. The predicate sees the stored fields (`sys_class_name` included).
    pub fn hide(&self, hidden: impl Fn(&Fields) -> bool + Send + Sync + 'static) {
        *write(&self.shared.acl) = Some(Arc::new(hidden));
    }

    /// Removes the ACL predicate.
    pub fn clear_acl(&self) {
        *write(&self.shared.acl) = None;
    }

    /// Expires every access token now (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.tokens).expire_access();
    }

    /// Expires every access and refresh token now.
    pub fn expire_all_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    /// Replaces the rate-limit rule (None removes it) and starts a fresh window.
    pub fn set_rate_limit(&self, rule: Option<RateLimit>) {
        lock(&self.shared.config).rate_limit = rule;
        self.reset_rate_limit();
    }

    /// Starts a fresh rate-limit window (all counts zero).
    pub fn reset_rate_limit(&self) {
        *lock(&self.shared.rate) = auth::RateState::new();
    }

    /// Changes the configuration in place (users, clients, token lifetimes, versions, …).
    pub fn configure(&self, change: impl FnOnce(&mut SimConfig)) {
        let mut config = lock(&self.shared.config);
        change(&mut config);
        let mut store = write(&self.shared.store);
        store.audited_sys_tables = config.audited_sys_tables.iter().cloned().collect();
        store.audit_name = config.audit_name;
    }

    // ----- request log -----

    /// Every request so far, in arrival order of their answers.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Table API requests so far.
    pub fn table_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_table())
            .collect()
    }

    /// `/oauth_token.do` requests so far.
    pub fn token_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/oauth_token.do")
            .collect()
    }

    /// Number of requests so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Forgets the logged requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Waits until at least `n` requests were answered; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.request_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for ServiceNowSim {
    fn drop(&mut self) {
        if let Some((tx, _task)) = lock(&self.server).take() {
            let _ = tx.send(());
        }
    }
}

/// Converts a JSON object to fields: strings as they are, numbers and booleans as text, null as
/// "", `{"value": …}` (reference or display-value shapes) as the value.
pub fn fields_of(record: &Value) -> Fields {
    let Some(object) = record.as_object() else {
        panic!("a record must be a JSON object, got {record}");
    };
    object
        .iter()
        .map(|(k, v)| (k.clone(), text_of(v)))
        .collect()
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) => o.get("value").map(text_of).unwrap_or_default(),
        other => other.to_string(),
    }
}
