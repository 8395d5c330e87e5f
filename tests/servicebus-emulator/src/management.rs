//! Request/response nodes: `$cbs` put-token and `<entity>/$management` operations, with
//! Service Bus's request and response shapes.

use fe2o3_amqp_types::messaging::{MessageId, Properties};
use serde_amqp::{
    described::Described,
    descriptor::Descriptor,
    primitives::{Array, OrderedMap, Timestamp},
    Value,
};
use uuid::Uuid;

use crate::{
    broker::{Broker, BrokerError, EntityRef, ReceiveMode, Settlement},
    codec::{descriptor_code, value_len, CodecError},
    message::AmqpMessage,
};

/// The answer to a request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: i32,
    /// Status description.
    pub description: String,
    /// Error condition, for failures.
    pub condition: Option<String>,
    /// amqp-value body.
    pub body: Option<Value>,
}

impl Reply {
    fn ok(body: Option<Value>) -> Self {
        Reply {
            status: 200,
            description: "OK".into(),
            condition: None,
            body,
        }
    }

    fn error(e: &BrokerError) -> Self {
        Reply {
            status: e.status_code(),
            description: e.to_string(),
            condition: Some(e.condition().to_string()),
            body: None,
        }
    }

    fn bad_request(text: impl Into<String>) -> Self {
        Reply {
            status: 400,
            description: text.into(),
            condition: Some("amqp:invalid-field".into()),
            body: None,
        }
    }
}

/// Looks up a string key in an AMQP map value.
pub fn map_get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(m) => m.iter().find_map(|(k, v)| match k {
            Value::String(s) if s == key => Some(v),
            Value::Symbol(s) if s.as_str() == key => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// Reads a string-ish value.
pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::Long(n) => *n,
        Value::Int(n) => *n as i64,
        Value::Short(n) => *n as i64,
        Value::Byte(n) => *n as i64,
        Value::Ulong(n) => i64::try_from(*n).ok()?,
        Value::Uint(n) => *n as i64,
        Value::Ushort(n) => *n as i64,
        Value::Ubyte(n) => *n as i64,
        _ => return None,
    })
}

fn items(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) => a.0.iter().collect(),
        Some(Value::List(l)) => l.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

fn as_uuid(v: &Value) -> Option<Uuid> {
    match v {
        Value::Uuid(u) => Some(Uuid::from_bytes(*u.as_inner())),
        Value::String(s) => Uuid::parse_str(s).ok(),
        Value::Binary(b) if b.len() == 16 => Uuid::from_slice_le(b).ok(),
        _ => None,
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

/// The amqp-value body of a request (`Null` when absent or not an amqp-value).
pub fn body_value(msg: &AmqpMessage) -> Result<Value, CodecError> {
    let mut rest = msg.body.as_slice();
    while !rest.is_empty() {
        let len = value_len(rest)?;
        let (section, tail) = rest.split_at(len);
        rest = tail;
        if descriptor_code(section) == Some(0x77) {
            if let Value::Described(d) = serde_amqp::from_slice::<Value>(section)
                .map_err(|e| CodecError::Malformed(e.to_string()))?
            {
                return Ok(d.value);
            }
        }
    }
    Ok(Value::Null)
}

/// Builds a response message correlated with `request`.
pub fn response_message(
    request: &AmqpMessage,
    status_key: &str,
    description_key: &str,
    reply: &Reply,
) -> Result<Vec<u8>, CodecError> {
    let correlation: Option<MessageId> = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone().or_else(|| p.correlation_id.clone()));
    let mut msg = AmqpMessage {
        properties: Some(Properties {
            correlation_id: correlation,
            ..Default::default()
        }),
        ..Default::default()
    };
    msg.set_application_property(status_key, Value::Int(reply.status));
    msg.set_application_property(description_key, Value::String(reply.description.clone()));
    if let Some(c) = &reply.condition {
        msg.set_application_property("errorCondition", Value::Symbol(c.as_str().into()));
    }
    let body = Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(0x77),
        value: reply.body.clone().unwrap_or(Value::Null),
    }));
    msg.body = serde_amqp::to_vec(&body)?;
    msg.encode(None)
}

fn timestamps(ms: Vec<i64>) -> Value {
    Value::Array(Array(
        ms.into_iter()
            .map(|t| Value::Timestamp(Timestamp::from_milliseconds(t)))
            .collect(),
    ))
}

/// Executes one `$management` operation against `entity`.
pub fn handle(broker: &Broker, entity: &EntityRef, request: &AmqpMessage, body: &Value) -> Reply {
    let op = request
        .application_property("operation")
        .and_then(as_str)
        .unwrap_or("");
    tracing::debug!(entity = %entity.key, dlq = entity.dead_letter, operation = op, "management request");
    let result = match op {
        "com.microsoft:renew-lock" => {
            let tokens: Vec<Uuid> = items(map_get(body, "lock-tokens"))
                .into_iter()
                .filter_map(as_uuid)
                .collect();
            broker
                .renew_locks(&entity.key, &tokens)
                .map(|exp| Reply::ok(Some(map(vec![("expirations", timestamps(exp))]))))
        }
        "com.microsoft:peek-message" => {
            let from = map_get(body, "from-sequence-number")
                .and_then(as_i64)
                .unwrap_or(1);
            let count = map_get(body, "message-count")
                .and_then(as_i64)
                .unwrap_or(1)
                .clamp(1, 1000) as usize;
            let session = map_get(body, "session-id").and_then(as_str);
            broker.peek(entity, from, count, session).map(|msgs| {
                if msgs.is_empty() {
                    Reply {
                        status: 204,
                        description: "No Content".into(),
                        condition: None,
                        body: None,
                    }
                } else {
                    let list = msgs
                        .into_iter()
                        .map(|(_, bytes)| map(vec![("message", Value::Binary(bytes.into()))]))
                        .collect();
                    Reply::ok(Some(map(vec![("messages", Value::List(list))])))
                }
            })
        }
        "com.microsoft:schedule-message" => {
            let mut msgs = Vec::new();
            for m in items(map_get(body, "messages")) {
                match map_get(m, "message") {
                    Some(Value::Binary(b)) => match AmqpMessage::decode(b) {
                        Ok(msg) => msgs.push(msg),
                        Err(e) => return Reply::bad_request(format!("bad message: {e}")),
                    },
                    _ => return Reply::bad_request("messages[].message must be binary"),
                }
            }
            broker.schedule(&entity.key, msgs).map(|seqs| {
                let arr = Value::Array(Array(seqs.into_iter().map(Value::Long).collect()));
                Reply::ok(Some(map(vec![("sequence-numbers", arr)])))
            })
        }
        "com.microsoft:cancel-scheduled-message" => {
            let seqs: Vec<i64> = items(map_get(body, "sequence-numbers"))
                .into_iter()
                .filter_map(as_i64)
                .collect();
            broker
                .cancel_scheduled(&entity.key, &seqs)
                .map(|_| Reply::ok(None))
        }
        "com.microsoft:receive-by-sequence-number" => {
            let seqs: Vec<i64> = items(map_get(body, "sequence-numbers"))
                .into_iter()
                .filter_map(as_i64)
                .collect();
            let mode = match map_get(body, "receiver-settle-mode").and_then(as_i64) {
                Some(0) => ReceiveMode::ReceiveAndDelete,
                _ => ReceiveMode::PeekLock,
            };
            broker.receive_deferred(&entity.key, &seqs, mode).map(|ds| {
                let list = ds
                    .into_iter()
                    .map(|d| {
                        let mut entries = vec![("message", Value::Binary(d.payload.into()))];
                        if let Some(t) = d.lock_token {
                            entries.insert(
                                0,
                                (
                                    "lock-token",
                                    Value::Uuid(serde_amqp::primitives::Uuid::from(*t.as_bytes())),
                                ),
                            );
                        }
                        map(entries)
                    })
                    .collect();
                Reply::ok(Some(map(vec![("messages", Value::List(list))])))
            })
        }
        "com.microsoft:update-disposition" => {
            let status = map_get(body, "disposition-status")
                .and_then(as_str)
                .unwrap_or("");
            let tokens: Vec<Uuid> = items(map_get(body, "lock-tokens"))
                .into_iter()
                .filter_map(as_uuid)
                .collect();
            let props = match map_get(body, "properties-to-modify") {
                Some(Value::Map(m)) => Some(m.clone()),
                _ => None,
            };
            let settlement = match status {
                "completed" => Settlement::Complete,
                "abandoned" => Settlement::Abandon(props),
                "defered" | "deferred" => Settlement::Defer(props),
                "suspended" => Settlement::DeadLetter {
                    reason: map_get(body, "deadletter-reason")
                        .and_then(as_str)
                        .map(str::to_string),
                    description: map_get(body, "deadletter-description")
                        .and_then(as_str)
                        .map(str::to_string),
                    properties: props,
                },
                other => {
                    return Reply::bad_request(format!("unknown disposition-status {other:?}"))
                }
            };
            tokens
                .iter()
                .try_for_each(|t| broker.settle(&entity.key, *t, settlement.clone()))
                .map(|_| Reply::ok(None))
        }
        "com.microsoft:renew-session-lock" => {
            let sid = map_get(body, "session-id").and_then(as_str).unwrap_or("");
            broker.renew_session_lock(&entity.key, sid).map(|until| {
                Reply::ok(Some(map(vec![(
                    "expiration",
                    Value::Timestamp(Timestamp::from_milliseconds(until)),
                )])))
            })
        }
        "com.microsoft:get-session-state" => {
            let sid = map_get(body, "session-id").and_then(as_str).unwrap_or("");
            broker.session_state(&entity.key, sid).map(|state| {
                let v = state
                    .map(|b| Value::Binary(b.into()))
                    .unwrap_or(Value::Null);
                Reply::ok(Some(map(vec![("session-state", v)])))
            })
        }
        "com.microsoft:set-session-state" => {
            let sid = map_get(body, "session-id").and_then(as_str).unwrap_or("");
            let state = match map_get(body, "session-state") {
                Some(Value::Binary(b)) => Some(b.to_vec()),
                Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
                _ => None,
            };
            broker
                .set_session_state(&entity.key, sid, state)
                .map(|_| Reply::ok(None))
        }
        "com.microsoft:get-message-sessions" => {
            let skip = map_get(body, "skip").and_then(as_i64).unwrap_or(0).max(0) as usize;
            let top = map_get(body, "top")
                .and_then(as_i64)
                .unwrap_or(100)
                .clamp(0, 1000) as usize;
            broker.message_sessions(&entity.key).map(|ids| {
                let page: Vec<Value> = ids
                    .into_iter()
                    .skip(skip)
                    .take(top)
                    .map(Value::String)
                    .collect();
                if page.is_empty() {
                    Reply {
                        status: 204,
                        description: "No Content".into(),
                        condition: None,
                        body: None,
                    }
                } else {
                    Reply::ok(Some(map(vec![
                        ("skip", Value::Int(skip as i32)),
                        ("sessions-ids", Value::Array(Array(page))),
                    ])))
                }
            })
        }
        other => {
            return Reply {
                status: 501,
                description: format!("operation {other:?} is not supported by the emulator"),
                condition: Some("amqp:not-implemented".into()),
                body: None,
            }
        }
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

#[cfg(test)]
mod tests {
    //! Request bodies in the encodings clients choose.
    use super::*;

    #[test]
    fn amqp_value_body_with_numeric_or_symbolic_descriptor() {
        for descriptor in [
            Descriptor::Code(0x77),
            Descriptor::Name("amqp:amqp-value:*".into()),
        ] {
            let body = serde_amqp::to_vec(&Value::Described(Box::new(Described {
                descriptor,
                value: Value::String("token".into()),
            })))
            .unwrap();
            let msg = AmqpMessage {
                body,
                ..Default::default()
            };
            assert_eq!(body_value(&msg).unwrap(), Value::String("token".into()));
        }
    }

    #[test]
    fn map_keys_strings_or_symbols_and_numbers_of_any_width() {
        let mut m = OrderedMap::new();
        m.insert(Value::Symbol("from-sequence-number".into()), Value::Uint(5));
        m.insert(Value::String("message-count".into()), Value::Ubyte(2));
        m.insert(
            Value::String("lock-tokens".into()),
            Value::List(vec![Value::String(
                "11111111-2222-3333-4444-555555555555".into(),
            )]),
        );
        let body = Value::Map(m);
        assert_eq!(
            map_get(&body, "from-sequence-number").and_then(as_i64),
            Some(5)
        );
        assert_eq!(map_get(&body, "message-count").and_then(as_i64), Some(2));
        let tokens: Vec<Uuid> = items(map_get(&body, "lock-tokens"))
            .into_iter()
            .filter_map(as_uuid)
            .collect();
        assert_eq!(tokens.len(), 1);
        // A single value where an array is expected, and a uuid in either binary byte order.
        let one = Value::Uuid(serde_amqp::primitives::Uuid::from([7; 16]));
        assert_eq!(items(Some(&one)).len(), 1);
        assert!(as_uuid(&Value::Binary(vec![7; 16].into())).is_some());
        assert_eq!(
            as_str(&Value::Symbol("completed".into())),
            Some("completed")
        );
    }
}
