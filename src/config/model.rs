//! The configuration file's types: the user interface of pollbus.
//!
//! Every struct denies unknown keys and every field is documented; `schemas/config.schema.json`
//! is generated from these types (see `tests/config_schema.rs`).

use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::secret::Secret;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where pollbus keeps cursors, snapshots, the outbox and tokens.
    #[serde(default)]
    pub state: StateConfig,
    /// Where change notifications are published.
    #[serde(default)]
    pub sink: SinkConfig,
    /// How the outbox is drained to the sink.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin HTTP server: `/live`, `/ready`, `/metrics`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Several replicas on one PostgreSQL state store: leases and outbox claims.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// OpenTelemetry trace export (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How long `run` may take, after SIGINT/SIGTERM, to finish in-flight pages and flush the
    /// outbox before it exits.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "20s"))]
    pub shutdown_grace: Duration,
    /// The systems to poll.
    pub sources: Vec<SourceConfig>,
}

/// The state store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite://PATH` (default `sqlite://./data/pollbus.db`; the folder is created) or
    /// `postgres://…` for several replicas. May be a `${env:…}` / `${file:…}` reference, since a
    /// PostgreSQL URL can hold a password.
    #[serde(default = "defaults::state_url")]
    pub url: Secret,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            url: defaults::state_url(),
        }
    }
}

/// The sink: where messages go.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// One JSON line per message on standard output, exactly what Service Bus would get.
    Stdout {
        /// Prefix of every topic name; the entity name follows it.
        #[serde(default = "defaults::topic_prefix")]
        topic_prefix: String,
    },
    /// One JSON line per message appended to a file.
    Jsonl {
        /// Prefix of every topic name; the entity name follows it.
        #[serde(default = "defaults::topic_prefix")]
        topic_prefix: String,
        /// The file to append to (created with its folder if missing).
        path: String,
    },
    /// Azure Service Bus topics, over AMQP 1.0.
    Servicebus(ServiceBusConfig),
}

/// The Azure Service Bus sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBusConfig {
    /// Prefix of every topic name; the entity name follows it.
    #[serde(default = "defaults::topic_prefix")]
    pub topic_prefix: String,
    /// A SAS connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`),
    /// including emulator strings with `UseDevelopmentEmulator=true` and a port in the
    /// endpoint. Give this or `namespace`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// Fully qualified namespace (`acme.servicebus.windows.net`) for Entra ID authentication.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Entra ID credential used with `namespace`.
    #[serde(default)]
    pub credential: EntraCredential,
    /// A PEM file of CA certificates that the Entra ID credential's HTTPS requests trust in
    /// addition to the system's (the workload identity authority `AZURE_AUTHORITY_HOST`, the
    /// managed identity endpoint). Unset by default; only for a private or test authority. It
    /// never turns certificate verification off.
    #[serde(default)]
    pub identity_ca_file: Option<std::path::PathBuf>,
    /// With `namespace`: connect with plain AMQP (no TLS) to a Service Bus emulator on this
    /// machine, as `UseDevelopmentEmulator=true` does in a connection string. `namespace` is then
    /// `host:port` with a loopback host (`127.0.0.1:5672`, `localhost:5672`); any other host
    /// is refused. For testing Entra ID against a local emulator.
    #[serde(default)]
    pub use_development_emulator: bool,
    /// `amqp` (TCP 5671) or `amqp-websockets` (443, for networks that block 5671).
    #[serde(default)]
    pub transport: Transport,
    /// Set each message's SessionId to its partitionKey (ordered per entity for session
    /// subscriptions).
    #[serde(default = "defaults::yes")]
    pub session_id: bool,
    /// Also set `x-opt-partition-key` = partitionKey, for partitioned topics; batches then hold
    /// one partition key each.
    #[serde(default)]
    pub partitioned: bool,
    /// Timeout of connecting, authorizing, attaching or sending; in `pollbus dlq`, of each step
    /// (connecting, authorizing, attaching, settling, resubmitting).
    #[serde(default = "defaults::send_timeout", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "30s"))]
    pub send_timeout: Duration,
    /// Largest batch in bytes; default the link's maximum message size (256 KB Standard,
    /// 1 MB batches on Premium).
    #[serde(default)]
    pub max_batch_bytes: Option<u64>,
}

/// Entra ID credentials for the Service Bus sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntraCredential {
    /// Kubernetes workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE).
    #[default]
    WorkloadIdentity,
    /// The managed identity of the VM or service.
    ManagedIdentity,
    /// Developer tools (Azure CLI, Azure Developer CLI), for local use.
    Developer,
}

/// How the Service Bus sink reaches the namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// AMQP over TLS on port 5671 (plain TCP for the emulator).
    #[default]
    Amqp,
    /// AMQP over WebSockets on port 443.
    AmqpWebsockets,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::Stdout {
            topic_prefix: defaults::topic_prefix(),
        }
    }
}

impl SinkConfig {
    /// The prefix topic names start with.
    pub fn topic_prefix(&self) -> &str {
        match self {
            SinkConfig::Stdout { topic_prefix } | SinkConfig::Jsonl { topic_prefix, .. } => {
                topic_prefix
            }
            SinkConfig::Servicebus(sb) => &sb.topic_prefix,
        }
    }

    /// The sink's kind as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::Jsonl { .. } => "jsonl",
            SinkConfig::Servicebus(_) => "servicebus",
        }
    }
}

/// Outbox publisher settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most messages handed to the sink at once.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: u32,
    /// Most rows the outbox may hold; polling pauses (with a warning) while it is full, so a sink
    /// outage never loses a change.
    #[serde(default = "defaults::max_rows")]
    pub max_rows: u64,
    /// First wait after a retryable sink error.
    #[serde(default = "defaults::backoff_min", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "1s"))]
    pub backoff_min: Duration,
    /// Longest wait between retries of a failing sink.
    #[serde(default = "defaults::backoff_max", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub backoff_max: Duration,
    /// Transient failures of one message sent alone, each after the sink had accepted other
    /// messages since the previous one, after which it counts as poison and moves to the
    /// dead-letter table (during a broker outage nothing is accepted, so nothing is
    /// dead-lettered). At least 2.
    #[serde(default = "defaults::outbox_max_attempts")]
    #[schemars(range(min = 2))]
    pub max_attempts: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch_size: defaults::batch_size(),
            max_rows: defaults::max_rows(),
            backoff_min: defaults::backoff_min(),
            backoff_max: defaults::backoff_max(),
            max_attempts: defaults::outbox_max_attempts(),
        }
    }
}

/// How replicas share the work. Each resource is polled by the one replica holding its lease;
/// a replica holds at most its fair share (ceil(resources / live replicas)) and takes over the
/// leases of a replica that stopped renewing them. With SQLite there is one replica, which
/// holds every lease.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a lease lasts without renewal; renewed every third of it. A dead replica's
    /// resources are taken over within `lease_ttl` plus their `interval`.
    #[serde(default = "defaults::lease_ttl", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "30s"))]
    pub lease_ttl: Duration,
    /// How long outbox rows claimed by a replica stay with it before another replica may
    /// publish them (a crashed replica's rows are published after this).
    #[serde(default = "defaults::claim_timeout", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub claim_timeout: Duration,
    /// This replica's name in leases and claims; unique per running replica. Default: the
    /// `POD_NAME` or `HOSTNAME` environment variable (or the host name) plus a random suffix.
    #[serde(default)]
    pub replica_id: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_ttl: defaults::lease_ttl(),
            claim_timeout: defaults::claim_timeout(),
            replica_id: None,
        }
    }
}

/// OpenTelemetry trace export: one span per poll and per publish batch, in the trace of the
/// messages' `Diagnostic-Id`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector, e.g. `http://otel-collector:4318` (spans go to `/v1/traces` as
    /// protobuf). Unset: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: defaults::service_name(),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human) or `json` (one object per line, for containers).
    #[serde(default)]
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info,pollbus=debug`. The `RUST_LOG` environment variable
    /// wins when set.
    #[serde(default = "defaults::log_filter")]
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            filter: defaults::log_filter(),
        }
    }
}

/// The admin HTTP server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether `run` serves it.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Address and port (`0.0.0.0:9464`; port 0 picks a free one, logged at start).
    #[serde(default = "defaults::admin_listen")]
    #[schemars(with = "String")]
    pub listen: std::net::SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: defaults::admin_listen(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON objects, one per line.
    Json,
}

/// One system to poll.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name; names the source's state (cursors, snapshots). Letters, digits, `-`, `_`.
    pub name: String,
    /// The kind of system.
    pub kind: SourceKind,
    /// `sourceSystem` in every message body (e.g. `CRM`).
    pub source_system: String,
    /// Base URL of the vendor API (HTTP sources).
    #[serde(default)]
    pub base_url: Option<String>,
    /// How often each resource is polled.
    #[serde(default = "defaults::interval", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub interval: Duration,
    /// Random extra delay (0..jitter) added to each interval so resources do not poll in
    /// lockstep. Default: a tenth of `interval`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Duration>,
    /// How far before the cursor each poll starts (`updated >= cursor - overlap`), so late
    /// commits and clock skew lose nothing; records already seen are dropped by the snapshot
    /// diff.
    #[serde(default = "defaults::overlap", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub overlap: Duration,
    /// Records per page requested from the vendor (vendor default when absent).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// How pollbus authenticates to the vendor.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Most requests per hour this source may send (a vendor rate-limit rule), none when absent.
    #[serde(default)]
    pub max_requests_per_hour: Option<u32>,
    /// Settings of the `demo` source.
    #[serde(default)]
    pub demo: Option<DemoConfig>,
    /// Settings of `servicenow` sources.
    #[serde(default)]
    pub servicenow: Option<ServiceNowConfig>,
    /// Settings of `concur` sources.
    #[serde(default)]
    pub concur: Option<ConcurConfig>,
    /// Timeout of one HTTP request to the vendor.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub request_timeout: Duration,
    /// Largest vendor response body accepted, in bytes. A page in flight holds its body plus
    /// the parsed records (about 5.5 times the body, measured on ServiceNow pages), so the
    /// default 16 MiB bounds one page at about 110 MiB — within the Deployment's 256 MiB limit
    /// beside pollbus's own ~90 MB.
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: u64,
    /// Attempts per vendor request (retrying 408, 429, 5xx and connection errors with capped
    /// exponential backoff and the server's `Retry-After`) before the poll gives up until the
    /// next interval.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Longest wait a vendor may impose (`Retry-After` seconds or HTTP date,
    /// `X-RateLimit-Reset`): a longer or unreadable value is clamped to this, with a warning
    /// naming the header and its value, so no answer can silence the source for longer.
    #[serde(default = "defaults::max_retry_wait", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "15m"))]
    pub max_retry_wait: Duration,
    /// How far ahead of pollbus's clock a vendor's record dates may be: a record dated later
    /// than `now + max_clock_skew` does not move the cursor beyond that point (a far-future
    /// date would otherwise make every later change fall behind the cursor).
    #[serde(default = "defaults::max_clock_skew", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "5m"))]
    pub max_clock_skew: Duration,
    /// The resources (tables, endpoints) polled on this source.
    pub resources: Vec<ResourceConfig>,
}

impl SourceConfig {
    /// The jitter in force: configured, or a tenth of the interval.
    pub fn effective_jitter(&self) -> Duration {
        self.jitter.unwrap_or(self.interval / 10)
    }
}

// Each variant is one vendor module under src/source/, listed in its vendor registration table
// (see `VendorRegistry`); this enum is only the name the configuration uses.
/// The kinds of source pollbus knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// ServiceNow Table API.
    Servicenow,
    /// Revel Systems API.
    Revel,
    /// SAP Concur Expense v3.
    Concur,
    /// Any JSON REST API described by a URL template.
    Rest,
    /// Synthetic customers, for trying pollbus out.
    Demo,
}

/// Vendor authentication.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// A bearer token sent as `Authorization: Bearer …`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// A custom header, e.g. Revel's `API-AUTHENTICATION: key:secret`.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret,
    },
    /// OAuth 2.0 with token refresh; tokens are kept in the state store.
    Oauth2 {
        /// Token endpoint; default per vendor (ServiceNow `/oauth_token.do`).
        #[serde(default)]
        token_url: Option<String>,
        /// The grant used to obtain tokens.
        #[serde(default)]
        grant: OAuthGrant,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// User name (password grant).
        #[serde(default)]
        username: Option<String>,
        /// Password (password grant).
        #[serde(default)]
        password: Option<Secret>,
        /// Refresh token (refresh_token grant); a rotated token replaces it in the state store.
        #[serde(default)]
        refresh_token: Option<Secret>,
    },
}

impl AuthConfig {
    /// The auth kind as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Header { .. } => "header",
            AuthConfig::Oauth2 { .. } => "oauth2",
        }
    }
}

/// OAuth 2.0 grant types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// Refresh-token grant (the default: an operator authorizes once).
    #[default]
    RefreshToken,
    /// Resource-owner password grant.
    Password,
    /// Client-credentials grant.
    ClientCredentials,
}

/// Settings of ServiceNow sources.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// Table API path.
    #[serde(default = "defaults::servicenow_api_path")]
    pub api_path: String,
    /// Ask for reference fields as plain sys_ids (`sysparm_exclude_reference_link`); either way
    /// reference objects map to their `value`.
    #[serde(default = "defaults::yes")]
    pub exclude_reference_link: bool,
    /// `sysparm_display_value`: `false` (raw values, UTC dates; the default), `true` or `all`.
    /// Dates must stay raw for the cursor, so `true` is refused for the date fields' sake.
    #[serde(default)]
    pub display_value: DisplayValue,
    /// Table hierarchy, child table = parent table, added to the defaults
    /// (`customer_contact = "sys_user"`, `customer_account = "core_company"`). When a parent and
    /// a child are both configured, a record whose `sys_class_name` is the child is published
    /// once, for the child's entity only.
    #[serde(default)]
    pub hierarchy: IndexMap<String, String>,
    /// Table holding delete audit rows.
    #[serde(default = "defaults::servicenow_audit_table")]
    pub audit_table: String,
}

impl Default for ServiceNowConfig {
    fn default() -> Self {
        ServiceNowConfig {
            api_path: defaults::servicenow_api_path(),
            exclude_reference_link: true,
            display_value: DisplayValue::default(),
            hierarchy: IndexMap::new(),
            audit_table: defaults::servicenow_audit_table(),
        }
    }
}

/// `sysparm_display_value`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DisplayValue {
    /// Raw values.
    #[default]
    False,
    /// Display values (refused: dates would be in the user's zone).
    True,
    /// Both, as `{"display_value", "value"}` objects; pollbus uses `value`.
    All,
}

/// Settings of the synthetic `demo` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Seed of the synthetic data; the same seed gives the same customers and changes.
    #[serde(default = "defaults::demo_seed")]
    pub seed: u64,
    /// How many customer slots exist (live records at any time are a bit fewer).
    #[serde(default = "defaults::demo_records")]
    pub records: u32,
    /// Changes (creates, updates, deletes) per minute across all records.
    #[serde(default = "defaults::demo_changes_per_minute")]
    pub changes_per_minute: u32,
    /// Changes in one customer's life: it is created, updated `lifetime_changes - 2` times,
    /// then deleted, and its slot is reused by a new customer.
    #[serde(default = "defaults::demo_lifetime_changes")]
    pub lifetime_changes: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            seed: defaults::demo_seed(),
            records: defaults::demo_records(),
            changes_per_minute: defaults::demo_changes_per_minute(),
            lifetime_changes: defaults::demo_lifetime_changes(),
        }
    }
}

/// One vendor table / endpoint mapped to one entity.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The vendor's table or resource name (ServiceNow table, Revel resource, …).
    pub name: String,
    /// The entity name: `type` in the message body and the topic suffix
    /// (`<topic_prefix><entity>`, e.g. `api.event.customer`).
    pub entity: String,
    /// The field holding the record's id (vendor default when absent: `sys_id`, `ID`, `id`).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Tracked fields: a table of contract field name = vendor path (dotted for nested JSON,
    /// e.g. `address.city`; only these are compared and published, in this order), or `"*"`:
    /// every top-level field each record carries (contract name = vendor name, nested values as
    /// compact JSON) except the record's id, dates and revision, the vendor's bookkeeping
    /// fields that change on every write, and `exclude`.
    pub fields: TrackedFields,
    /// With `fields = "*"`: vendor fields not to track, beyond the vendor's defaults (a
    /// ServiceNow `sys_updated_by`, say, is always left out).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where `onBehalfOf` comes from.
    #[serde(default)]
    pub on_behalf_of: Option<OnBehalfOf>,
    /// Which record fields hold the created/updated dates and how to read them.
    #[serde(default)]
    pub dates: DatesConfig,
    /// How deleted records are detected.
    #[serde(default)]
    pub deletes: DeleteMode,
    /// How often `deletes = "reconcile"` lists all ids to find deleted records.
    #[serde(default = "defaults::reconcile_interval", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "1h"))]
    pub reconcile_interval: Duration,
    /// Refuse a reconciliation that would delete more than this fraction of the known records
    /// (protects against an API that suddenly lists nothing). 1.0 disables the guard.
    #[serde(default = "defaults::reconcile_max_delete_ratio")]
    pub reconcile_max_delete_ratio: f64,
    /// Anti-entropy: every this often (e.g. `24h`), re-read the whole resource at
    /// `resync_pages_per_minute`, compare every record with its snapshot and publish what
    /// differs (changes the vendor made without moving the updated date). Off when absent;
    /// `pollbus resync` requests one at any time.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub resync_interval: Option<Duration>,
    /// How fast a resync reads: pages per minute (between the resource's normal polls, which
    /// go on; the shared request budget applies to both).
    #[serde(default = "defaults::resync_pages_per_minute")]
    pub resync_pages_per_minute: u32,
    /// What the very first poll of a resource does with the records it finds.
    #[serde(default)]
    pub initial: InitialMode,
    /// A record first seen after the baseline is a CREATE when created and updated dates differ
    /// by at most this much, else an UPDATE listing all tracked fields.
    #[serde(default = "defaults::create_tolerance", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "1s"))]
    pub create_tolerance: Duration,
    /// How a `rest` source requests this resource (required for `kind = "rest"`, refused
    /// elsewhere).
    #[serde(default)]
    pub rest: Option<RestResourceConfig>,
}

/// What a resource tracks: `fields = "*"` or a table of contract name = vendor path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackedFields {
    /// `"*"`: every top-level field a record carries, except bookkeeping (see
    /// [`ResourceConfig::fields`]).
    All,
    /// Contract field name = vendor path, in configuration order.
    Listed(IndexMap<String, String>),
}

impl TrackedFields {
    /// The listed fields (none for `"*"`).
    pub fn listed(&self) -> &IndexMap<String, String> {
        static NONE: std::sync::OnceLock<IndexMap<String, String>> = std::sync::OnceLock::new();
        match self {
            TrackedFields::All => NONE.get_or_init(IndexMap::new),
            TrackedFields::Listed(map) => map,
        }
    }

    /// Whether this is `"*"`.
    pub fn is_all(&self) -> bool {
        matches!(self, TrackedFields::All)
    }
}

impl<'de> Deserialize<'de> for TrackedFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TrackedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""*" (every field) or a table of contract name = "vendor path""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrackedFields, E> {
                if v == "*" {
                    Ok(TrackedFields::All)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TrackedFields, A::Error> {
                IndexMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TrackedFields::Listed)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for TrackedFields {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TrackedFields".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Tracked fields: \"*\" (every top-level field, see `exclude`) or contract field name = vendor path.",
            "oneOf": [
                { "const": "*", "description": "Every top-level field a record carries, except its id, dates and revision, the vendor's bookkeeping fields and `exclude`." },
                { "type": "object", "additionalProperties": { "type": "string" }, "description": "Contract field name = vendor path (dotted for nested JSON), in this order." }
            ]
        })
    }
}

/// Settings of `concur` sources (SAP Concur Expense v3).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurConfig {
    /// The `user` parameter: `ALL` (every user's reports; needs an admin-authorized token) or
    /// one user's login id.
    #[serde(default = "defaults::concur_user")]
    pub user: String,
    /// Where the `geolocation` named by a token response may point; any other is refused
    /// (neither used nor stored) and the poll fails naming it, so the tokens never leave
    /// SAP Concur. An entry is a host pattern (`*.concursolutions.com` matches every subdomain;
    /// https only) or a full origin (`http://127.0.0.1:8080`, for test systems). Concur China
    /// customers add `*.concurcdc.cn`.
    #[serde(default = "defaults::concur_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
}

impl Default for ConcurConfig {
    fn default() -> Self {
        ConcurConfig {
            user: defaults::concur_user(),
            allowed_hosts: defaults::concur_allowed_hosts(),
        }
    }
}

/// How a generic `rest` resource is requested and read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestResourceConfig {
    /// URL template, absolute or relative to the source's `base_url`, with Cloud Elements
    /// placeholders filled in from the poll's start instant: `${date:PATTERN}` (in the resource's
    /// `dates.updated_timezone`, UTC when unset), `${gmtDate:PATTERN}`,
    /// `${DateTimeZone:ZONE:PATTERN}`, `${epoch}`, `${epoch:s}`, `${epoch:us}`.
    pub url: String,
    /// JSON pointer (RFC 6901) to the array of records in a response body, e.g. `/data` or
    /// `/$items`; empty (the default) when the body itself is the array.
    #[serde(default)]
    pub records: String,
    /// How further pages are requested.
    #[serde(default)]
    pub paging: RestPaging,
}

/// Paging styles of generic REST APIs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RestPaging {
    /// One request returns everything.
    #[default]
    None,
    /// `offset`/`limit` query parameters; a page shorter than `page_size` is the last.
    Offset {
        /// Name of the offset parameter.
        #[serde(default = "defaults::offset_param")]
        offset_param: String,
        /// Name of the page-size parameter.
        #[serde(default = "defaults::limit_param")]
        limit_param: String,
    },
    /// Page-number parameters; a page shorter than `page_size` is the last.
    Page {
        /// Name of the page-number parameter.
        #[serde(default = "defaults::page_param")]
        page_param: String,
        /// Name of the page-size parameter.
        #[serde(default = "defaults::size_param")]
        size_param: String,
        /// Number of the first page.
        #[serde(default = "defaults::first_page")]
        first: u32,
    },
    /// The body holds the next page's URL (absolute or relative) at a JSON pointer; null,
    /// empty or missing ends the listing.
    NextUrl {
        /// JSON pointer to the next page's URL, e.g. `/$next` or `/meta/next`.
        pointer: String,
    },
    /// The `Link` response header's `rel="next"` URL; none ends the listing.
    LinkHeader,
}

/// Where `onBehalfOf` comes from: exactly one of `field` and `value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnBehalfOf {
    /// A record field (dotted path), e.g. `sys_updated_by`.
    #[serde(default)]
    pub field: Option<String>,
    /// A fixed value, e.g. `IFS`.
    #[serde(default)]
    pub value: Option<String>,
}

/// Record date fields (the Cloud Elements `datesConfiguration`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatesConfig {
    /// Field holding the last-updated date (vendor default when absent).
    #[serde(default)]
    pub updated_field: Option<String>,
    /// Java date pattern of the updated date (e.g. `yyyy-MM-dd HH:mm:ss`); RFC 3339 when absent.
    #[serde(default)]
    pub updated_format: Option<String>,
    /// Zone of updated dates without an offset (`UTC`, `PST`, `Europe/Oslo`, `-8:00`).
    #[serde(default)]
    pub updated_timezone: Option<String>,
    /// Field holding the creation date (vendor default when absent).
    #[serde(default)]
    pub created_field: Option<String>,
    /// Java date pattern of the created date; RFC 3339 when absent.
    #[serde(default)]
    pub created_format: Option<String>,
    /// Zone of created dates without an offset.
    #[serde(default)]
    pub created_timezone: Option<String>,
}

/// How deleted records are detected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Deletes are not detected.
    #[default]
    Off,
    /// List all ids every `reconcile_interval`; known ids that are gone are deleted.
    Reconcile,
    /// Read the vendor's delete audit (ServiceNow `sys_audit_delete`).
    Audit,
    /// Both: the audit for speed, reconciliation as the backstop. A delete is emitted once.
    Both,
}

impl DeleteMode {
    /// Whether id reconciliation runs.
    pub fn reconciles(self) -> bool {
        matches!(self, DeleteMode::Reconcile | DeleteMode::Both)
    }

    /// Whether the vendor's delete audit is read.
    pub fn audits(self) -> bool {
        matches!(self, DeleteMode::Audit | DeleteMode::Both)
    }
}

/// What the first poll of a resource does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitialMode {
    /// Record snapshots silently; only later changes are published.
    #[default]
    Baseline,
    /// Publish every existing record (CREATE or UPDATE by the created/updated rule).
    Emit,
}

/// Default values, one function per key so serde and the schema agree.
pub(crate) mod defaults {
    use super::*;

    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(20)
    }
    pub fn lease_ttl() -> Duration {
        Duration::from_secs(30)
    }
    pub fn claim_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn state_url() -> Secret {
        Secret::literal("sqlite://./data/pollbus.db")
    }
    pub fn topic_prefix() -> String {
        "api.event.".to_string()
    }
    pub fn batch_size() -> u32 {
        100
    }
    pub fn max_rows() -> u64 {
        100_000
    }
    pub fn outbox_max_attempts() -> u32 {
        10
    }
    pub fn backoff_min() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn log_filter() -> String {
        "info".to_string()
    }
    pub fn service_name() -> String {
        "pollbus".to_string()
    }
    pub fn interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn overlap() -> Duration {
        Duration::from_secs(60)
    }
    pub fn reconcile_interval() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn resync_pages_per_minute() -> u32 {
        6
    }
    pub fn reconcile_max_delete_ratio() -> f64 {
        0.5
    }
    pub fn create_tolerance() -> Duration {
        Duration::from_secs(1)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_response_bytes() -> u64 {
        16 * 1024 * 1024
    }
    pub fn max_attempts() -> u32 {
        6
    }
    pub fn admin_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([0, 0, 0, 0], 9464))
    }
    pub fn send_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn servicenow_api_path() -> String {
        "/api/now/table".to_string()
    }
    pub fn servicenow_audit_table() -> String {
        "sys_audit_delete".to_string()
    }
    pub fn concur_user() -> String {
        "ALL".to_string()
    }
    pub fn concur_allowed_hosts() -> Vec<String> {
        vec!["*.concursolutions.com".to_string()]
    }
    pub fn max_retry_wait() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_clock_skew() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn offset_param() -> String {
        "offset".to_string()
    }
    pub fn limit_param() -> String {
        "limit".to_string()
    }
    pub fn page_param() -> String {
        "page".to_string()
    }
    pub fn size_param() -> String {
        "per_page".to_string()
    }
    pub fn first_page() -> u32 {
        1
    }
    pub fn demo_seed() -> u64 {
        42
    }
    pub fn demo_records() -> u32 {
        20
    }
    pub fn demo_changes_per_minute() -> u32 {
        30
    }
    pub fn demo_lifetime_changes() -> u32 {
        8
    }
}

#[cfg(test)]
mod tests {
    /// The pod is SIGKILLed `terminationGracePeriodSeconds` after SIGTERM; pollbus finishes
    /// within `shutdown_grace` (its final outbox flush included), so the default grace must
    /// fit inside the Deployment's period with room for the process to exit.
    #[test]
    fn the_default_shutdown_grace_fits_the_deployments_termination_grace_period() {
        let deployment = include_str!("../../deploy/kubernetes/base/deployment.yaml");
        let period: u64 = deployment
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("deployment.yaml sets terminationGracePeriodSeconds");
        let grace = super::defaults::shutdown_grace().as_secs();
        assert!(
            grace + 5 <= period,
            "shutdown_grace {grace}s + 5s to exit must fit terminationGracePeriodSeconds {period}s"
        );
        let configured = include_str!("../../deploy/kubernetes/base/pollbus.toml");
        assert!(
            configured.contains(&format!("shutdown_grace = \"{grace}s\"")),
            "the shipped pollbus.toml states the default grace"
        );
    }
}
