//! Service Bus messages as the broker stores them: the AMQP sections the broker reads or
//! rewrites are decoded, the body and footer are kept byte for byte.

use fe2o3_amqp_types::messaging::{Header, MessageId, Properties};
use serde_amqp::{described::Described, descriptor::Descriptor, primitives::OrderedMap, Value};

use crate::codec::{descriptor_code, value_len, CodecError};

/// Message format of a Service Bus batch: the body holds one encoded message per data section.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

const HEADER: u64 = 0x70;
const DELIVERY_ANNOTATIONS: u64 = 0x71;
const MESSAGE_ANNOTATIONS: u64 = 0x72;
const PROPERTIES: u64 = 0x73;
const APPLICATION_PROPERTIES: u64 = 0x74;
const DATA: u64 = 0x75;

/// A decoded message.
#[derive(Debug, Clone, Default)]
pub struct AmqpMessage {
    /// The header section, if the sender sent one.
    pub header: Option<Header>,
    /// Message annotations (keys are usually symbols).
    pub annotations: OrderedMap<Value, Value>,
    /// The properties section.
    pub properties: Option<Properties>,
    /// Application properties (string keys, simple values), kept as generic values.
    pub application_properties: Option<OrderedMap<Value, Value>>,
    /// Body sections and footer, byte for byte as received.
    pub body: Vec<u8>,
}

fn malformed(e: impl std::fmt::Display) -> CodecError {
    CodecError::Malformed(e.to_string())
}

fn described_map(bytes: &[u8]) -> Result<OrderedMap<Value, Value>, CodecError> {
    match serde_amqp::from_slice::<Value>(bytes).map_err(malformed)? {
        Value::Described(d) => match d.value {
            Value::Map(m) => Ok(m),
            Value::Null => Ok(OrderedMap::new()),
            other => Err(malformed(format!("expected a map section, got {other:?}"))),
        },
        other => Err(malformed(format!(
            "expected a described section, got {other:?}"
        ))),
    }
}

fn encode_described_map(code: u64, map: &OrderedMap<Value, Value>) -> Result<Vec<u8>, CodecError> {
    let value = Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(code),
        value: Value::Map(map.clone()),
    }));
    Ok(serde_amqp::to_vec(&value)?)
}

impl AmqpMessage {
    /// Decodes an encoded message (a sequence of sections).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut msg = AmqpMessage::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = value_len(rest)?;
            let (section, tail) = rest.split_at(len);
            rest = tail;
            match descriptor_code(section) {
                Some(HEADER) => {
                    msg.header = Some(serde_amqp::from_slice(section).map_err(malformed)?);
                }
                Some(DELIVERY_ANNOTATIONS) => {}
                Some(MESSAGE_ANNOTATIONS) => msg.annotations = described_map(section)?,
                Some(PROPERTIES) => {
                    msg.properties = Some(serde_amqp::from_slice(section).map_err(malformed)?);
                }
                Some(APPLICATION_PROPERTIES) => {
                    msg.application_properties = Some(described_map(section)?);
                }
                Some(0x75..=0x78) => msg.body.extend_from_slice(section),
                other => {
                    return Err(malformed(format!("unexpected message section {other:?}")));
                }
            }
        }
        Ok(msg)
    }

    /// Splits a batch envelope (format `0x80013700`) into its messages.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<AmqpMessage>, CodecError> {
        let envelope = AmqpMessage::decode(bytes)?;
        let mut out = Vec::new();
        let mut rest = envelope.body.as_slice();
        while !rest.is_empty() {
            let len = value_len(rest)?;
            let (section, tail) = rest.split_at(len);
            rest = tail;
            if descriptor_code(section) != Some(DATA) {
                continue;
            }
            if let Value::Described(d) =
                serde_amqp::from_slice::<Value>(section).map_err(malformed)?
            {
                if let Value::Binary(inner) = d.value {
                    out.push(AmqpMessage::decode(&inner)?);
                }
            }
        }
        Ok(out)
    }

    /// Encodes the message; `delivery_annotations` (if any) are written as their own section.
    pub fn encode(
        &self,
        delivery_annotations: Option<&OrderedMap<Value, Value>>,
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        if let Some(h) = &self.header {
            // Every field is written (fe2o3 trims defaults), so SDKs read delivery-count 0, not null.
            let list = Value::List(vec![
                Value::Bool(h.durable),
                Value::Ubyte(h.priority.0),
                h.ttl.map(Value::Uint).unwrap_or(Value::Null),
                Value::Bool(h.first_acquirer),
                Value::Uint(h.delivery_count),
            ]);
            out.extend(serde_amqp::to_vec(&Value::Described(Box::new(
                Described {
                    descriptor: Descriptor::Code(HEADER),
                    value: list,
                },
            )))?);
        }
        if let Some(da) = delivery_annotations {
            out.extend(encode_described_map(DELIVERY_ANNOTATIONS, da)?);
        }
        if !self.annotations.is_empty() {
            out.extend(encode_described_map(
                MESSAGE_ANNOTATIONS,
                &self.annotations,
            )?);
        }
        if let Some(p) = &self.properties {
            out.extend(serde_amqp::to_vec(p)?);
        }
        if let Some(ap) = &self.application_properties {
            out.extend(encode_described_map(APPLICATION_PROPERTIES, ap)?);
        }
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// The message id as a string (the duplicate-detection key), whatever its AMQP type.
    pub fn message_id(&self) -> Option<String> {
        self.properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_string)
    }

    /// The session id (`group-id`).
    pub fn session_id(&self) -> Option<&str> {
        self.properties.as_ref().and_then(|p| p.group_id.as_deref())
    }

    /// Reads a message annotation by its symbol key.
    pub fn annotation(&self, key: &str) -> Option<&Value> {
        self.annotations.iter().find_map(|(k, v)| match k {
            Value::Symbol(s) if s.as_str() == key => Some(v),
            Value::String(s) if s == key => Some(v),
            _ => None,
        })
    }

    /// Sets a message annotation (symbol key), replacing an existing one.
    pub fn set_annotation(&mut self, key: &str, value: Value) {
        let k = Value::Symbol(key.into());
        self.annotations.as_inner_mut().retain(|existing, _| {
            existing != &k && !matches!(existing, Value::String(s) if s == key)
        });
        self.annotations.insert(k, value);
    }

    /// Reads an application property by name.
    pub fn application_property(&self, key: &str) -> Option<&Value> {
        self.application_properties.as_ref().and_then(|m| {
            m.iter().find_map(|(k, v)| match k {
                Value::String(s) if s == key => Some(v),
                Value::Symbol(s) if s.as_str() == key => Some(v),
                _ => None,
            })
        })
    }

    /// Sets an application property (string key), replacing an existing one.
    pub fn set_application_property(&mut self, key: &str, value: Value) {
        let map = self
            .application_properties
            .get_or_insert_with(OrderedMap::new);
        let k = Value::String(key.to_string());
        map.insert(k, value);
    }

    /// A message whose body is one `data` section holding `bytes`.
    pub fn with_data(bytes: &[u8]) -> Self {
        let section = Value::Described(Box::new(Described {
            descriptor: Descriptor::Code(DATA),
            value: Value::Binary(bytes.to_vec().into()),
        }));
        AmqpMessage {
            body: serde_amqp::to_vec(&section).unwrap_or_default(),
            ..Default::default()
        }
    }

    /// The concatenated `data` sections of the body (empty for amqp-value/sequence bodies).
    pub fn body_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = self.body.as_slice();
        while let Ok(len) = value_len(rest) {
            let (section, tail) = rest.split_at(len);
            rest = tail;
            if descriptor_code(section) == Some(DATA) {
                if let Ok(Value::Described(d)) = serde_amqp::from_slice::<Value>(section) {
                    if let Value::Binary(b) = d.value {
                        out.extend_from_slice(&b);
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        out
    }

    /// A system property or annotation Service Bus sets on delivery, e.g.
    /// `x-opt-sequence-number`; `None` when absent.
    pub fn sequence_number(&self) -> Option<i64> {
        match self.annotation("x-opt-sequence-number") {
            Some(Value::Long(n)) => Some(*n),
            _ => None,
        }
    }

    /// Time to live from the header, in milliseconds.
    pub fn ttl_ms(&self) -> Option<u64> {
        self.header.as_ref().and_then(|h| h.ttl).map(u64::from)
    }
}

/// Renders a message id of any AMQP type as Service Bus does (uuid and numbers as text).
pub fn message_id_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}
