//! Semantic validation of a parsed [`Config`]: no IO, every problem reported at once with the
//! path of the offending key and its value.
//!
//! The checks every source and resource get are here; what is particular to a vendor (its
//! settings table, resource names, whether it needs `base_url`, has a delete audit…) is asked
//! of the vendor through [`VendorRegistry`] — the rules live in the vendor's own module.

use std::collections::HashSet;

use super::model::*;
use super::vendor::VendorRegistry;
use super::Problem;
use crate::formats::datefmt::{JavaDateFormat, Zone};
use crate::record::FieldPath;

/// Longest Service Bus topic name.
const MAX_TOPIC_LEN: usize = 260;

/// Collects problems with their config paths.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Checks everything that can be checked without IO.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    validate_outbox(&config.outbox, &mut p);
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        match url::Url::parse(endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => p.push(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} must be an http:// or https:// URL with a host (the OTLP/HTTP collector, e.g. http://otel-collector:4318)"),
            ),
            Err(e) => p.push(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} is not a URL: {e}"),
            ),
        }
    }
    validate_cluster(&config.cluster, &mut p);
    validate_sink(&config.sink, &mut p);
    if config.sources.is_empty() {
        p.push("sources", "at least one source is required");
    }
    let mut names = HashSet::new();
    for (i, source) in config.sources.iter().enumerate() {
        let path = format!("sources[{i}]");
        if !names.insert(source.name.as_str()) {
            p.push(
                format!("{path}.name"),
                format!("duplicate source name {:?}", source.name),
            );
        }
        validate_source(source, &path, config.sink.topic_prefix(), &mut p);
    }
    p.0
}

fn validate_cluster(cluster: &ClusterConfig, p: &mut Problems) {
    if cluster.lease_ttl < std::time::Duration::from_secs(1) {
        p.push(
            "cluster.lease_ttl",
            format!("{:?} is shorter than 1s", cluster.lease_ttl),
        );
    }
    if cluster.claim_timeout < std::time::Duration::from_secs(1) {
        p.push(
            "cluster.claim_timeout",
            format!("{:?} is shorter than 1s", cluster.claim_timeout),
        );
    }
    if let Some(id) = &cluster.replica_id {
        if id.trim().is_empty() || id.len() > 200 {
            p.push(
                "cluster.replica_id",
                format!("{id:?} must be 1 to 200 characters"),
            );
        }
    }
}

fn validate_outbox(outbox: &OutboxConfig, p: &mut Problems) {
    if !(1..=1000).contains(&outbox.batch_size) {
        p.push(
            "outbox.batch_size",
            format!("{} is outside 1..=1000", outbox.batch_size),
        );
    }
    if outbox.max_attempts < 2 {
        p.push(
            "outbox.max_attempts",
            format!(
                "{} must be at least 2 (failures of one message, each after other messages were accepted, before it counts as poison)",
                outbox.max_attempts
            ),
        );
    }
    if outbox.max_rows < u64::from(outbox.batch_size) {
        p.push(
            "outbox.max_rows",
            format!(
                "{} is smaller than outbox.batch_size {}",
                outbox.max_rows, outbox.batch_size
            ),
        );
    }
    if outbox.backoff_min.is_zero() || outbox.backoff_min > outbox.backoff_max {
        p.push(
            "outbox.backoff_min",
            format!(
                "{} must be above zero and at most outbox.backoff_max {}",
                humantime::format_duration(outbox.backoff_min),
                humantime::format_duration(outbox.backoff_max)
            ),
        );
    }
}

fn validate_sink(sink: &SinkConfig, p: &mut Problems) {
    let prefix = sink.topic_prefix();
    if let Some(bad) = prefix.chars().find(|c| !is_topic_char(*c)) {
        p.push(
            "sink.topic_prefix",
            format!("{prefix:?} contains {bad:?}; topic names allow letters, digits, '.', '-', '_', '/'"),
        );
    }
    if let SinkConfig::Jsonl { path, .. } = sink {
        if path.trim().is_empty() {
            p.push("sink.path", "empty path");
        }
    }
    if let SinkConfig::Servicebus(sb) = sink {
        match (&sb.connection_string, &sb.namespace) {
            (None, None) | (Some(_), Some(_)) => p.push(
                "sink",
                "set exactly one of connection_string (SAS) and namespace (Entra ID)",
            ),
            (None, Some(ns)) if ns.contains("://") || ns.contains('/') || ns.is_empty() => p.push(
                "sink.namespace",
                format!("{ns:?} is not a host name like acme.servicebus.windows.net"),
            ),
            _ => {}
        }
        if sb.namespace.is_none() && sb.identity_ca_file.is_some() {
            p.push(
                "sink.identity_ca_file",
                "only used with namespace (Entra ID); remove it or set namespace",
            );
        }
        if sb.use_development_emulator {
            match sb.namespace.as_deref().map(emulator_host) {
                Some(Ok(())) => {}
                Some(Err(why)) => p.push("sink.namespace", why),
                None => p.push(
                    "sink.use_development_emulator",
                    "only used with namespace (a connection string says UseDevelopmentEmulator=true itself)",
                ),
            }
        }
        if sb.max_batch_bytes.is_some_and(|b| b < 1024) {
            p.push("sink.max_batch_bytes", "below 1024 bytes");
        }
    }
}

/// Whether `namespace` is `host:port` on a loopback host, as `use_development_emulator`
/// requires (tokens are sent without TLS, so never off this machine).
pub(crate) fn emulator_host(namespace: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{namespace:?} must be host:port on a loopback host (127.0.0.1:5672, localhost:5672) with use_development_emulator"
        )
    };
    let (host, port) = namespace.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate_source(s: &SourceConfig, path: &str, topic_prefix: &str, p: &mut Problems) {
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.push(
            format!("{path}.name"),
            format!("{:?} must be non-empty letters, digits, '-' or '_'", s.name),
        );
    }
    if s.source_system.trim().is_empty() {
        p.push(format!("{path}.source_system"), "empty source_system");
    }
    if s.interval < std::time::Duration::from_secs(1) {
        p.push(
            format!("{path}.interval"),
            format!("{} is below 1s", humantime::format_duration(s.interval)),
        );
    }
    if let Some(size) = s.page_size {
        if !(1..=10_000).contains(&size) {
            p.push(
                format!("{path}.page_size"),
                format!("{size} is outside 1..=10000"),
            );
        }
    }
    if s.max_requests_per_hour == Some(0) {
        p.push(
            format!("{path}.max_requests_per_hour"),
            "0 allows no request",
        );
    }
    let rules = s.kind.rules();
    match (&s.base_url, rules.defaults().http) {
        (None, true) => p.push(
            format!("{path}.base_url"),
            format!("required for kind {:?}", s.kind.as_str()),
        ),
        (Some(url), _) if !(url.starts_with("https://") || url.starts_with("http://")) => p.push(
            format!("{path}.base_url"),
            format!("{url:?} is not an http(s) URL"),
        ),
        _ => {}
    }
    // Each vendor checks its own settings table wherever it is set.
    for vendor in SourceKind::all_rules() {
        vendor.check_settings(s, path, &mut p.0);
    }
    rules.validate_source(s, path, &mut p.0);
    if s.max_attempts == 0 {
        p.push(format!("{path}.max_attempts"), "0 attempts sends nothing");
    }
    if s.max_response_bytes < 1024 {
        p.push(
            format!("{path}.max_response_bytes"),
            format!("{} is below 1024", s.max_response_bytes),
        );
    }
    validate_auth(&s.auth, &format!("{path}.auth"), p);
    if s.resources.is_empty() {
        p.push(
            format!("{path}.resources"),
            "at least one resource is required",
        );
    }
    let mut names = HashSet::new();
    for (j, r) in s.resources.iter().enumerate() {
        let rpath = format!("{path}.resources[{j}]");
        if !names.insert(r.name.as_str()) {
            p.push(
                format!("{rpath}.name"),
                format!(
                    "duplicate resource name {:?} in source {:?}",
                    r.name, s.name
                ),
            );
        }
        validate_resource(s, r, &rpath, topic_prefix, p);
    }
}

fn validate_auth(auth: &AuthConfig, path: &str, p: &mut Problems) {
    if let AuthConfig::Oauth2 {
        grant,
        username,
        password,
        refresh_token,
        client_id,
        ..
    } = auth
    {
        if client_id.is_empty() {
            p.push(format!("{path}.client_id"), "empty client_id");
        }
        match grant {
            OAuthGrant::Password if username.is_none() || password.is_none() => p.push(
                format!("{path}.grant"),
                "grant \"password\" needs username and password",
            ),
            OAuthGrant::RefreshToken if refresh_token.is_none() => p.push(
                format!("{path}.grant"),
                "grant \"refresh_token\" needs refresh_token",
            ),
            _ => {}
        }
    }
    if let AuthConfig::Basic { username, .. } = auth {
        if username.is_empty() {
            p.push(format!("{path}.username"), "empty username");
        }
    }
    if let AuthConfig::Header { name, .. } = auth {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            p.push(
                format!("{path}.name"),
                format!("{name:?} is not an HTTP header name"),
            );
        }
    }
}

fn validate_resource(
    s: &SourceConfig,
    r: &ResourceConfig,
    path: &str,
    topic_prefix: &str,
    p: &mut Problems,
) {
    if r.name.trim().is_empty() {
        p.push(format!("{path}.name"), "empty resource name");
    }
    validate_entity(&r.entity, &format!("{path}.entity"), topic_prefix, p);
    if let Some(id) = &r.id_field {
        check_path(id, &format!("{path}.id_field"), p);
    }
    if r.fields.listed().is_empty() && !r.fields.is_all() {
        p.push(
            format!("{path}.fields"),
            "at least one tracked field is required (or \"*\" for every field)",
        );
    }
    if !(1..=6000).contains(&r.resync_pages_per_minute) {
        p.push(
            format!("{path}.resync_pages_per_minute"),
            format!(
                "{} is outside 1..=6000 pages per minute",
                r.resync_pages_per_minute
            ),
        );
    }
    if let Some(every) = r.resync_interval {
        if every < std::time::Duration::from_secs(60) {
            p.push(
                format!("{path}.resync_interval"),
                format!(
                    "{} is shorter than a minute; a resync re-reads the whole resource",
                    humantime::format_duration(every)
                ),
            );
        }
    }
    if !r.exclude.is_empty() && !r.fields.is_all() {
        p.push(
            format!("{path}.exclude"),
            "exclude applies only to fields = \"*\"; leave the field out of the table instead",
        );
    }
    for (i, name) in r.exclude.iter().enumerate() {
        if name.trim().is_empty() {
            p.push(format!("{path}.exclude[{i}]"), "empty field name");
        }
    }
    for (name, vendor) in r.fields.listed() {
        let fpath = format!("{path}.fields.{name}");
        if name.trim().is_empty() || name.contains(',') {
            p.push(
                fpath.clone(),
                format!("{name:?} is not a contract field name (non-empty, no ',')"),
            );
        }
        check_path(vendor, &fpath, p);
    }
    // Snapshots tell fields apart by a 32-bit tag of the name (crate::fingerprint): two names
    // with one tag (about one configuration in 2.4 million at 60 fields) cannot be tracked.
    let mut tags: std::collections::HashMap<u32, &str> = std::collections::HashMap::new();
    for name in r.fields.listed().keys() {
        if let Some(other) = tags.insert(crate::fingerprint::name_tag(name), name) {
            p.push(
                format!("{path}.fields.{name}"),
                format!("{name:?} and {other:?} have the same fingerprint tag; rename one of them"),
            );
        }
    }
    if let Some(obo) = &r.on_behalf_of {
        match (&obo.field, &obo.value) {
            (Some(field), None) => check_path(field, &format!("{path}.on_behalf_of.field"), p),
            (None, Some(_)) => {}
            _ => p.push(
                format!("{path}.on_behalf_of"),
                "set exactly one of field and value",
            ),
        }
    }
    for (key, field) in [
        ("updated_field", &r.dates.updated_field),
        ("created_field", &r.dates.created_field),
    ] {
        if let Some(field) = field {
            check_path(field, &format!("{path}.dates.{key}"), p);
        }
    }
    for (key, format) in [
        ("updated_format", &r.dates.updated_format),
        ("created_format", &r.dates.created_format),
    ] {
        if let Some(Err(e)) = format.as_deref().map(JavaDateFormat::compile) {
            p.push(format!("{path}.dates.{key}"), e.to_string());
        }
    }
    for (key, zone) in [
        ("updated_timezone", &r.dates.updated_timezone),
        ("created_timezone", &r.dates.created_timezone),
    ] {
        if let Some(Err(e)) = zone.as_deref().map(Zone::parse) {
            p.push(format!("{path}.dates.{key}"), e.to_string());
        }
    }
    // Each vendor checks its own resource settings table wherever it is set.
    for vendor in SourceKind::all_rules() {
        vendor.check_resource_settings(s, r, path, &mut p.0);
    }
    let rules = s.kind.rules();
    rules.validate_resource(s, r, path, &mut p.0);
    if r.deletes.audits() && !rules.defaults().delete_audit {
        p.push(
            format!("{path}.deletes"),
            format!(
                "{:?} needs a vendor delete audit, which only servicenow has; use \"reconcile\"",
                deletes_name(r.deletes)
            ),
        );
    }
    if r.deletes.reconciles() && r.reconcile_interval < s.interval {
        p.push(
            format!("{path}.reconcile_interval"),
            format!(
                "{} is shorter than the source interval {}",
                humantime::format_duration(r.reconcile_interval),
                humantime::format_duration(s.interval)
            ),
        );
    }
    if !(0.0..=1.0).contains(&r.reconcile_max_delete_ratio) {
        p.push(
            format!("{path}.reconcile_max_delete_ratio"),
            format!("{} is outside 0..=1", r.reconcile_max_delete_ratio),
        );
    }
}

fn deletes_name(mode: DeleteMode) -> &'static str {
    match mode {
        DeleteMode::Off => "off",
        DeleteMode::Reconcile => "reconcile",
        DeleteMode::Audit => "audit",
        DeleteMode::Both => "both",
    }
}

fn check_path(text: &str, path: &str, p: &mut Problems) {
    if let Err(e) = FieldPath::parse(text) {
        p.push(path, e.to_string());
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

/// Service Bus entity names: letters, digits, `.`, `-`, `_`, `/`; start and end with a letter or
/// digit; at most 260 characters. The entity must not contain `/` (it is one topic).
fn validate_entity(entity: &str, path: &str, prefix: &str, p: &mut Problems) {
    let topic = format!("{prefix}{entity}");
    let problem = if entity.is_empty() {
        Some("empty entity".to_string())
    } else if let Some(bad) = entity.chars().find(|c| !is_topic_char(*c) || *c == '/') {
        Some(format!(
            "{entity:?} contains {bad:?}; topic {topic:?} would be invalid (letters, digits, '.', '-', '_')"
        ))
    } else if !topic.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !topic.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some(format!(
            "topic {topic:?} must start and end with a letter or digit"
        ))
    } else if topic.len() > MAX_TOPIC_LEN {
        Some(format!(
            "topic {topic:?} is longer than {MAX_TOPIC_LEN} characters"
        ))
    } else {
        None
    };
    if let Some(message) = problem {
        p.push(path, message);
    }
}
