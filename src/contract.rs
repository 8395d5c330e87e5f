//! The change-notification contract (seed 004) that subscribers and dead-letter handlers depend
//! on, and the message that carries it.
//!
//! Body (`application/json`), field names exactly as subscribers read them — `evenType` is
//! spelled that way on purpose:
//! ```json
//! {"sourceSystem":"CRM","evenType":2,"id":"42","type":"customer",
//!  "timestamp":"2024-05-01T10:00:00Z","partitionKey":"customer.42",
//!  "onBehalfOf":"IFS","changedFields":"FirstName,City"}
//! ```
//! Application properties: `Diagnostic-Id` (a W3C `traceparent`) plus one property per changed
//! field holding its new value:
//! - strings, booleans and numbers as themselves (integers as 64-bit integers, others as
//!   doubles; integers beyond the signed 64-bit range as their decimal text);
//! - `null` as a null property (AMQP null) — the field was cleared; the property is present so
//!   that the properties always match `changedFields`;
//! - objects and arrays as their compact JSON text (AMQP allows only simple types).
//!
//! A changed field whose name collides (ignoring case) with a reserved property name
//! ([`RESERVED_PROPERTIES`]) is published as `pollbus-field-<name>`; `changedFields` keeps the
//! contract name.
//!
//! **Replays** (`pollbus replay`, [`Message::build_with`]) add two marks: [`REPLAY`] (the
//! replay's id) and, when the replay is meant for one subscription, [`REPLAY_FOR`] (its name).
//! Their version is `<replay id>|<record version>`, so their MessageIds differ from the
//! original messages' (which the topic may have seen) and repeat when the same replay runs
//! again.
//!
//! **Size rule** (Service Bus Standard tier, so a message fits every tier): a property value
//! over [`MAX_PROPERTY_BYTES`] is dropped; then, while the properties exceed
//! [`MAX_PROPERTIES_BYTES`] or the whole message [`MAX_MESSAGE_BYTES`], the largest remaining
//! field property is dropped (of equal sizes, the one later in configuration order). Dropped fields stay in `changedFields` and are named, in
//! configuration order, in the property `pollbus-truncated-fields`; subscribers read the record
//! for their values. A message is never refused or silently shortened.

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Content type of every message body.
pub const CONTENT_TYPE: &str = "application/json";
/// The correlation-id property.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Property names a changed field may not take (compared ignoring case).
pub const RESERVED_PROPERTIES: &[&str] = &[
    DIAGNOSTIC_ID,
    "traceparent",
    "tracestate",
    "DeadLetterReason",
    "DeadLetterErrorDescription",
    "pollbus-truncated-fields",
    REPLAY,
    REPLAY_FOR,
    RESUBMIT_FOR,
    RESUBMITTED_FROM,
];
/// The subscription a message resubmitted from its dead-letter queue is meant for (`pollbus
/// dlq resubmit`); the other subscriptions ignore it with the rule in the README.
pub const RESUBMIT_FOR: &str = "pollbus-resubmit-for";
/// The MessageId of the dead-lettered message a resubmitted copy was made from.
pub const RESUBMITTED_FROM: &str = "pollbus-resubmitted-from";
/// The replay a message belongs to (`pollbus replay`): the replay's id.
pub const REPLAY: &str = "pollbus-replay";
/// The subscription a replay is meant for (`pollbus replay --for`); the other subscriptions of
/// the topic ignore it with the SQL rule in the README.
pub const REPLAY_FOR: &str = "pollbus-replay-for";
/// Prefix given to a changed field whose name is reserved.
pub const RENAMED_FIELD_PREFIX: &str = "pollbus-field-";
/// Names the changed fields whose properties were dropped by the size rule.
pub const TRUNCATED_FIELDS: &str = "pollbus-truncated-fields";
/// Largest single property value kept (Service Bus: 32 KB per property).
pub const MAX_PROPERTY_BYTES: usize = 32 * 1024;
/// Budget of all application properties (Service Bus: 64 KB for all headers and properties;
/// 4 KB are left to the system properties).
pub const MAX_PROPERTIES_BYTES: usize = 60 * 1024;
/// Budget of the whole encoded message (Service Bus Standard: 256 KB; 2 KB are left to the
/// AMQP framing and system properties).
pub const MAX_MESSAGE_BYTES: usize = 254 * 1024;
/// Estimated encoding overhead of one property (name and value constructors, lengths).
const PROPERTY_OVERHEAD: usize = 16;

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The entity was created (1).
    Create = 1,
    /// The entity was updated (2).
    Update = 2,
    /// The entity was deleted (3).
    Delete = 3,
}

impl EventType {
    /// The contract's integer.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The lowercase event name (`create`, `update`, `delete`), used as the message subject.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Update => "update",
            EventType::Delete => "delete",
        }
    }

    /// The event type for a contract integer.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(EventType::Create),
            2 => Some(EventType::Update),
            3 => Some(EventType::Delete),
            _ => None,
        }
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u64::deserialize(d)?;
        EventType::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("evenType {code} is not 1, 2 or 3")))
    }
}

/// The message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeNotification {
    /// The system that performed the change (`CRM`).
    #[serde(rename = "sourceSystem")]
    pub source_system: String,
    /// 1 create, 2 update, 3 delete.
    #[serde(rename = "evenType")]
    pub even_type: EventType,
    /// The entity's id.
    pub id: String,
    /// The entity type (`customer`).
    #[serde(rename = "type")]
    pub entity_type: String,
    /// When the entity was modified, RFC 3339 UTC.
    pub timestamp: String,
    /// `<type>.<id>`.
    #[serde(rename = "partitionKey")]
    pub partition_key: String,
    /// The system the source acted on behalf of, when known.
    #[serde(rename = "onBehalfOf")]
    pub on_behalf_of: Option<String>,
    /// Comma-joined contract names of the changed fields, in configuration order.
    #[serde(rename = "changedFields")]
    pub changed_fields: String,
}

/// An application-property value: AMQP simple types only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// AMQP null: the field was cleared.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit signed integer.
    Int(i64),
    /// Double.
    Double(f64),
    /// UTF-8 string (also nested values as JSON text).
    String(String),
}

impl PropertyValue {
    /// Maps a JSON value by the documented rule.
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::Null => PropertyValue::Null,
            Value::Bool(b) => PropertyValue::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.is_f64()) {
                (Some(i), _) => PropertyValue::Int(i),
                (None, true) => PropertyValue::Double(n.as_f64().unwrap_or_default()),
                (None, false) => PropertyValue::String(n.to_string()),
            },
            Value::String(s) => PropertyValue::String(s.clone()),
            nested => PropertyValue::String(nested.to_string()),
        }
    }

    /// Bytes this value takes in a size estimate (strings by length, others 8).
    pub fn size_hint(&self) -> usize {
        match self {
            PropertyValue::String(s) => s.len(),
            _ => 8,
        }
    }
}

/// A W3C trace context; one trace per poll, one span per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte parent span id.
    pub span_id: [u8; 8],
}

impl TraceContext {
    /// A new random trace.
    pub fn random() -> Self {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rand::fill(&mut trace_id);
        rand::fill(&mut span_id);
        TraceContext { trace_id, span_id }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The same trace with a span derived from `seed` (stable per message).
    pub fn child(&self, seed: &str) -> Self {
        let digest = Sha256::digest(seed.as_bytes());
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest[..8]);
        TraceContext {
            trace_id: self.trace_id,
            span_id,
        }
    }

    /// The `traceparent` header value: `00-<trace>-<span>-01`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace_id),
            hex::encode(self.span_id)
        )
    }
}

/// One message exactly as a sink sends it; serialized, it is the stdout/jsonl line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Topic name: `<topic_prefix><entity>`.
    pub topic: String,
    /// Deterministic id: the same change detected twice has the same id.
    pub message_id: String,
    /// Session id = the body's partitionKey (ordered per entity for session subscribers),
    /// shortened by [`session_id`] when longer than [`MAX_ID_CHARS`].
    pub session_id: String,
    /// Always `application/json`.
    pub content_type: String,
    /// `Diagnostic-Id` and one property per changed field.
    pub application_properties: IndexMap<String, PropertyValue>,
    /// The contract body.
    pub body: ChangeNotification,
}

/// Everything about a detected change that the message is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Create, update or delete.
    pub kind: EventType,
    /// The entity id.
    pub id: String,
    /// When it changed.
    pub timestamp: DateTime<Utc>,
    /// Changed fields with their new values, in configuration order.
    pub changed: Vec<(String, Value)>,
    /// `onBehalfOf`, when known.
    pub on_behalf_of: Option<String>,
    /// Identifies this version of the record (timestamp and values); part of the message id.
    pub version: String,
}

/// What a message needs besides the change: where it comes from and goes to.
#[derive(Debug, Clone)]
pub struct MessageContext<'a> {
    /// The configured source name (part of the message id).
    pub source: &'a str,
    /// `sourceSystem`.
    pub source_system: &'a str,
    /// The entity name (`type`).
    pub entity: &'a str,
    /// The topic prefix.
    pub topic_prefix: &'a str,
}

/// Formats a timestamp the contract's way: RFC 3339, UTC, `Z`, fraction only when non-zero.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The deterministic message id: 32 hex digits of SHA-256 over source, entity, id, event type
/// and record version.
pub fn message_id(source: &str, entity: &str, id: &str, kind: EventType, version: &str) -> String {
    let mut h = Sha256::new();
    for part in [source, entity, id, kind.name(), version] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Longest MessageId, SessionId and partition key Service Bus accepts, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Characters of a long partition key kept at the front of its shortened SessionId.
const SESSION_ID_PREFIX_CHARS: usize = 64;

/// The SessionId (and AMQP partition key) for a partition key: the key itself when it has at
/// most [`MAX_ID_CHARS`] characters; otherwise its first 64 characters, `~`, and 32 hex
/// digits of SHA-256 over the whole key (97 characters at most). Stable: the same key always
/// gives the same session, so per-record order holds; different long keys with a common
/// prefix still get different sessions. The body's `partitionKey` always keeps the full key.
/// Idempotent: a shortened id is returned unchanged.
pub fn session_id(partition_key: &str) -> String {
    if partition_key.chars().count() <= MAX_ID_CHARS {
        return partition_key.to_string();
    }
    let prefix: String = partition_key
        .chars()
        .take(SESSION_ID_PREFIX_CHARS)
        .collect();
    let digest = Sha256::digest(partition_key.as_bytes());
    format!("{prefix}~{}", hex::encode(&digest[..16]))
}

/// The property name a changed field is published under.
pub fn property_name(field: &str) -> String {
    if RESERVED_PROPERTIES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(field))
    {
        format!("{RENAMED_FIELD_PREFIX}{field}")
    } else {
        field.to_string()
    }
}

fn property_size(name: &str, value: &PropertyValue) -> usize {
    name.len() + value.size_hint() + PROPERTY_OVERHEAD
}

/// Applies the size rule; returns the contract names of the dropped fields in config order.
/// `Diagnostic-Id` and the `marks` are never dropped.
fn fit(
    properties: &mut IndexMap<String, PropertyValue>,
    change: &Change,
    marks: &[(&str, String)],
) -> Vec<String> {
    let kept = |name: &str| name == DIAGNOSTIC_ID || marks.iter().any(|(m, _)| *m == name);
    let body_estimate = 512
        + change.id.len() * 2
        + change
            .changed
            .iter()
            .map(|(n, _)| n.len() + 1)
            .sum::<usize>();
    let mut dropped: Vec<String> = Vec::new();
    properties.retain(|name, value| {
        let keep = kept(name) || value.size_hint() <= MAX_PROPERTY_BYTES;
        if !keep {
            dropped.push(name.clone());
        }
        keep
    });
    // Room for the truncation property itself.
    let reserve = TRUNCATED_FIELDS.len()
        + PROPERTY_OVERHEAD
        + change
            .changed
            .iter()
            .map(|(n, _)| n.len() + 1)
            .sum::<usize>();
    loop {
        let props: usize = properties.iter().map(|(n, v)| property_size(n, v)).sum();
        let over = !dropped.is_empty() || props > MAX_PROPERTIES_BYTES;
        let budget_props = if over { props + reserve } else { props };
        if budget_props <= MAX_PROPERTIES_BYTES && budget_props + body_estimate <= MAX_MESSAGE_BYTES
        {
            break;
        }
        let largest = properties
            .iter()
            .filter(|(n, _)| !kept(n))
            .max_by_key(|(_, v)| v.size_hint())
            .map(|(n, _)| n.clone());
        match largest {
            Some(name) => {
                properties.shift_remove(&name);
                dropped.push(name);
            }
            None => break,
        }
    }
    // Report contract names, in configuration order.
    change
        .changed
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| dropped.contains(&property_name(name)))
        .collect()
}

impl Message {
    /// Builds the message for a change.
    pub fn build(change: &Change, ctx: &MessageContext<'_>, trace: &TraceContext) -> Message {
        Self::build_with(change, ctx, trace, &[])
    }

    /// Builds the message for a change with `marks`: properties pollbus adds besides the
    /// fields (a replay's [`REPLAY`] and [`REPLAY_FOR`]), placed after `Diagnostic-Id` and
    /// never dropped by the size rule. Their names are reserved, so no field takes them.
    pub fn build_with(
        change: &Change,
        ctx: &MessageContext<'_>,
        trace: &TraceContext,
        marks: &[(&str, String)],
    ) -> Message {
        let partition_key = format!("{}.{}", ctx.entity, change.id);
        let message_id = message_id(
            ctx.source,
            ctx.entity,
            &change.id,
            change.kind,
            &change.version,
        );
        let mut application_properties =
            IndexMap::with_capacity(change.changed.len() + 1 + marks.len());
        application_properties.insert(
            DIAGNOSTIC_ID.to_string(),
            PropertyValue::String(trace.child(&message_id).traceparent()),
        );
        for (name, value) in marks {
            application_properties.insert(name.to_string(), PropertyValue::String(value.clone()));
        }
        for (name, value) in &change.changed {
            application_properties.insert(property_name(name), PropertyValue::from_json(value));
        }
        let truncated = fit(&mut application_properties, change, marks);
        if !truncated.is_empty() {
            application_properties.insert(
                TRUNCATED_FIELDS.to_string(),
                PropertyValue::String(truncated.join(",")),
            );
        }
        let changed_fields = change
            .changed
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Message {
            topic: format!("{}{}", ctx.topic_prefix, ctx.entity),
            message_id,
            session_id: session_id(&partition_key),
            content_type: CONTENT_TYPE.to_string(),
            application_properties,
            body: ChangeNotification {
                source_system: ctx.source_system.to_string(),
                even_type: change.kind,
                id: change.id.clone(),
                entity_type: ctx.entity.to_string(),
                timestamp: format_timestamp(change.timestamp),
                partition_key,
                on_behalf_of: change.on_behalf_of.clone(),
                changed_fields,
            },
        }
    }

    /// The body as the bytes sent on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).expect("body serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: EventType) -> Change {
        Change {
            kind,
            id: "EC3F119AF3B76F6FC2992BFE576DF220".into(),
            timestamp: "2020-10-11T11:25:20Z".parse().unwrap(),
            changed: vec![
                ("FirstName".into(), json!("Bjørn")),
                ("City".into(), json!(null)),
                ("Age".into(), json!(41)),
                ("Score".into(), json!(2.5)),
                ("Vip".into(), json!(true)),
                ("Tags".into(), json!(["a", {"b": 1}])),
                ("Big".into(), json!(18446744073709551615u64)),
                ("diagnostic-id".into(), json!("x")),
            ],
            on_behalf_of: Some("IFS".into()),
            version: "v1".into(),
        }
    }

    fn ctx() -> MessageContext<'static> {
        MessageContext {
            source: "crm",
            source_system: "CRM",
            entity: "customer",
            topic_prefix: "api.event.",
        }
    }

    #[test]
    fn body_has_the_contract_names_and_types() {
        let m = Message::build(&change(EventType::Update), &ctx(), &TraceContext::random());
        let body: Value = serde_json::from_slice(&m.body_bytes()).unwrap();
        assert_eq!(
            body,
            json!({
                "sourceSystem": "CRM", "evenType": 2, "id": "EC3F119AF3B76F6FC2992BFE576DF220",
                "type": "customer", "timestamp": "2020-10-11T11:25:20Z",
                "partitionKey": "customer.EC3F119AF3B76F6FC2992BFE576DF220", "onBehalfOf": "IFS",
                "changedFields": "FirstName,City,Age,Score,Vip,Tags,Big,diagnostic-id"
            })
        );
        assert_eq!(m.topic, "api.event.customer");
        assert_eq!(m.session_id, "customer.EC3F119AF3B76F6FC2992BFE576DF220");
        assert_eq!(m.content_type, "application/json");
    }

    #[test]
    fn long_partition_keys_get_a_stable_short_session_id() {
        let mut long = change(EventType::Update);
        long.id = "é".repeat(300);
        let m = Message::build(&long, &ctx(), &TraceContext::random());
        let key = format!("customer.{}", "é".repeat(300));
        assert_eq!(
            m.body.partition_key, key,
            "the body keeps the contract's key"
        );
        assert!(m.session_id.chars().count() <= MAX_ID_CHARS);
        assert!(m.session_id.starts_with("customer.éé"));
        assert_eq!(m.session_id, session_id(&key), "same key, same session");
        assert_eq!(session_id(&m.session_id), m.session_id, "idempotent");
        let mut other = long.clone();
        other.id = format!("{}x", "é".repeat(299));
        let o = Message::build(&other, &ctx(), &TraceContext::random());
        assert_ne!(
            o.session_id, m.session_id,
            "a common prefix is not a common session"
        );
        assert!(m.message_id.chars().count() <= MAX_ID_CHARS);
        let exact = "k".repeat(MAX_ID_CHARS);
        assert_eq!(
            session_id(&exact),
            exact,
            "keys up to the limit are unchanged"
        );
    }

    #[test]
    fn properties_follow_the_documented_rule() {
        let m = Message::build(&change(EventType::Update), &ctx(), &TraceContext::random());
        let props = serde_json::to_value(&m.application_properties).unwrap();
        assert_eq!(props["FirstName"], json!("Bjørn"));
        assert_eq!(props["City"], json!(null));
        assert_eq!(props["Age"], json!(41));
        assert_eq!(props["Score"], json!(2.5));
        assert_eq!(props["Vip"], json!(true));
        assert_eq!(props["Tags"], json!("[\"a\",{\"b\":1}]"));
        assert_eq!(props["Big"], json!("18446744073709551615"));
        assert_eq!(props["pollbus-field-diagnostic-id"], json!("x"));
        let diag = props["Diagnostic-Id"].as_str().unwrap();
        let parts: Vec<&str> = diag.split('-').collect();
        assert_eq!(
            (
                parts.len(),
                parts[0],
                parts[1].len(),
                parts[2].len(),
                parts[3]
            ),
            (4, "00", 32, 16, "01")
        );
    }

    #[test]
    fn message_id_is_deterministic_and_distinguishes_versions() {
        let trace_a = TraceContext::random();
        let trace_b = TraceContext::random();
        let a = Message::build(&change(EventType::Update), &ctx(), &trace_a);
        let b = Message::build(&change(EventType::Update), &ctx(), &trace_b);
        assert_eq!(a.message_id, b.message_id);
        let mut other = change(EventType::Update);
        other.version = "v2".into();
        assert_ne!(
            Message::build(&other, &ctx(), &trace_a).message_id,
            a.message_id
        );
        assert_ne!(
            Message::build(&change(EventType::Delete), &ctx(), &trace_a).message_id,
            a.message_id
        );
        assert_eq!(a.message_id.len(), 32);
    }

    #[test]
    fn oversize_properties_are_dropped_largest_first_and_named() {
        let mut c = change(EventType::Update);
        c.changed = vec![
            ("Huge".into(), json!("x".repeat(40 * 1024))),
            ("A".into(), json!("a".repeat(20 * 1024))),
            ("B".into(), json!("b".repeat(25 * 1024))),
            ("C".into(), json!("c".repeat(20 * 1024))),
            ("Small".into(), json!("kept")),
        ];
        let m = Message::build(&c, &ctx(), &TraceContext::random());
        let props = &m.application_properties;
        assert_eq!(
            props[TRUNCATED_FIELDS],
            PropertyValue::String("Huge,B".into())
        );
        assert!(props.contains_key("A") && props.contains_key("C") && props.contains_key("Small"));
        assert!(!props.contains_key("Huge") && !props.contains_key("B"));
        assert_eq!(
            m.body.changed_fields, "Huge,A,B,C,Small",
            "changedFields keeps every field"
        );
        let total: usize = props.iter().map(|(n, v)| property_size(n, v)).sum();
        assert!(total <= MAX_PROPERTIES_BYTES, "{total}");
        let small = Message::build(&change(EventType::Update), &ctx(), &TraceContext::random());
        assert!(!small.application_properties.contains_key(TRUNCATED_FIELDS));
    }

    #[test]
    fn the_resubmit_marks_are_reserved_too() {
        for name in [RESUBMIT_FOR, "POLLBUS-RESUBMITTED-FROM", "Diagnostic-Id"] {
            assert_eq!(property_name(name), format!("pollbus-field-{name}"));
        }
        assert_eq!(property_name("pollbus-resubmit"), "pollbus-resubmit");
    }

    #[test]
    fn marks_follow_the_diagnostic_id_survive_the_size_rule_and_no_field_takes_them() {
        let mut c = change(EventType::Update);
        c.changed = vec![
            ("pollbus-replay".into(), json!("a field")),
            ("Huge".into(), json!("x".repeat(40 * 1024))),
            ("A".into(), json!("a".repeat(31 * 1024))),
            ("B".into(), json!("b".repeat(30 * 1024))),
        ];
        let marks = [
            (REPLAY, "0123456789abcdef".to_string()),
            (REPLAY_FOR, "crm-sync".to_string()),
        ];
        let m = Message::build_with(&c, &ctx(), &TraceContext::random(), &marks);
        let names: Vec<&str> = m
            .application_properties
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            &names[..3],
            [DIAGNOSTIC_ID, REPLAY, REPLAY_FOR],
            "{names:?}"
        );
        let props = &m.application_properties;
        assert_eq!(
            props[REPLAY],
            PropertyValue::String("0123456789abcdef".into())
        );
        assert_eq!(props[REPLAY_FOR], PropertyValue::String("crm-sync".into()));
        assert_eq!(
            props["pollbus-field-pollbus-replay"],
            PropertyValue::String("a field".into())
        );
        assert_eq!(
            props[TRUNCATED_FIELDS],
            PropertyValue::String("Huge,A".into()),
            "fields are dropped, the marks stay"
        );
        // the same change without marks: the same MessageId (marks do not make the id)
        let plain = Message::build(&c, &ctx(), &TraceContext::random());
        assert_eq!(plain.message_id, m.message_id);
        assert!(!plain.application_properties.contains_key(REPLAY));
    }

    #[test]
    fn line_round_trips() {
        let m = Message::build(&change(EventType::Create), &ctx(), &TraceContext::random());
        let line = serde_json::to_string(&m).unwrap();
        let back: Message = serde_json::from_str(&line).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<EventType>("4").is_err());
    }
}
