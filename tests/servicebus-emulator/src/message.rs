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

/// Decodes a header or properties section, normalizing client-chosen alternative encodings
/// (a string content-type, another integer width for ttl, …) when the strict decode fails.
fn decode_section<T: serde::de::DeserializeOwned>(section: &[u8]) -> Result<T, CodecError> {
    match serde_amqp::from_slice(section) {
        Ok(v) => Ok(v),
        Err(strict) => {
            let generic: Value = serde_amqp::from_slice(section).map_err(malformed)?;
            let bytes = serde_amqp::to_vec(&crate::normalize::normalize(generic))?;
            serde_amqp::from_slice(&bytes).map_err(|e| malformed(format!("{strict}; {e}")))
        }
    }
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
                    msg.header = Some(decode_section(section)?);
                }
                Some(DELIVERY_ANNOTATIONS) => {}
                Some(MESSAGE_ANNOTATIONS) => msg.annotations = described_map(section)?,
                Some(PROPERTIES) => {
                    msg.properties = Some(decode_section(section)?);
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

    /// An application property that holds a string (or symbol), as text.
    pub fn application_property_str(&self, key: &str) -> Option<&str> {
        match self.application_property(key)? {
            Value::String(s) => Some(s),
            Value::Symbol(s) => Some(s.as_str()),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    //! Alternative encodings of message sections a client may choose.
    use super::*;

    fn section(descriptor: Descriptor, value: Value) -> Vec<u8> {
        serde_amqp::to_vec(&Value::Described(Box::new(Described { descriptor, value }))).unwrap()
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        let mut m = OrderedMap::new();
        for (k, v) in entries {
            m.insert(k, v);
        }
        Value::Map(m)
    }

    #[test]
    fn symbolic_section_descriptors() {
        let mut bytes = section(
            Descriptor::Name("amqp:header:list".into()),
            Value::List(vec![Value::Bool(true)]),
        );
        bytes.extend(section(
            Descriptor::Name("amqp:message-annotations:map".into()),
            map(vec![(Value::Symbol("x-opt-a".into()), Value::Int(1))]),
        ));
        bytes.extend(section(
            Descriptor::Name("amqp:properties:list".into()),
            Value::List(vec![Value::String("id-1".into())]),
        ));
        bytes.extend(section(
            Descriptor::Name("amqp:application-properties:map".into()),
            map(vec![(Value::String("k".into()), Value::Long(5))]),
        ));
        bytes.extend(section(
            Descriptor::Name("amqp:data:binary".into()),
            Value::Binary(b"body".to_vec().into()),
        ));
        let m = AmqpMessage::decode(&bytes).unwrap();
        assert!(m.header.as_ref().unwrap().durable);
        assert_eq!(m.annotation("x-opt-a"), Some(&Value::Int(1)));
        assert_eq!(m.message_id().as_deref(), Some("id-1"));
        assert_eq!(m.application_property("k"), Some(&Value::Long(5)));
        assert_eq!(m.body_data(), b"body");
    }

    #[test]
    fn descriptor_codes_as_ulong() {
        let bytes = section(Descriptor::Code(0x75), Value::Binary(b"x".to_vec().into()));
        assert_eq!(&bytes[..3], &[0x00, 0x53, 0x75]);
        let mut long = vec![0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x75];
        long.extend_from_slice(&bytes[3..]);
        assert_eq!(AmqpMessage::decode(&long).unwrap().body_data(), b"x");
    }

    #[test]
    fn properties_and_header_with_neighbouring_types() {
        // content-type and content-encoding as strings, group-sequence as ulong, to as symbol;
        // header priority as uint, ttl as ulong, delivery-count as int.
        let mut bytes = section(
            Descriptor::Code(0x70),
            Value::List(vec![
                Value::Bool(false),
                Value::Uint(4),
                Value::Ulong(60_000),
                Value::Bool(false),
                Value::Int(2),
            ]),
        );
        bytes.extend(section(
            Descriptor::Code(0x73),
            Value::List(vec![
                Value::Ulong(42),
                Value::Null,
                Value::Symbol("orders".into()),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::String("application/json".into()),
                Value::String("utf-8".into()),
                Value::Null,
                Value::Null,
                Value::String("session-1".into()),
                Value::Ulong(3),
            ]),
        ));
        let m = AmqpMessage::decode(&bytes).unwrap();
        let h = m.header.clone().unwrap();
        assert_eq!(
            (h.priority.0, h.ttl, h.delivery_count),
            (4, Some(60_000), 2)
        );
        let p = m.properties.clone().unwrap();
        assert_eq!(m.message_id().as_deref(), Some("42"));
        assert_eq!(p.to.as_deref(), Some("orders"));
        assert_eq!(
            p.content_type.as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(p.group_sequence, Some(3));
        assert_eq!(m.session_id(), Some("session-1"));
    }

    #[test]
    fn message_ids_of_every_type() {
        for (id, text) in [
            (Value::String("s".into()), "s"),
            (Value::Ulong(7), "7"),
            (
                Value::Uuid(serde_amqp::primitives::Uuid::from([0x11; 16])),
                "11111111-1111-1111-1111-111111111111",
            ),
            (Value::Binary(vec![0xab, 0x01].into()), "ab01"),
        ] {
            let bytes = section(Descriptor::Code(0x73), Value::List(vec![id]));
            assert_eq!(
                AmqpMessage::decode(&bytes).unwrap().message_id().as_deref(),
                Some(text)
            );
        }
    }

    #[test]
    fn keys_and_bodies_of_every_kind() {
        // Application properties and annotations keyed by string or symbol; empty (null) maps;
        // amqp-value and amqp-sequence bodies and a footer kept byte for byte.
        let mut bytes = section(
            Descriptor::Code(0x72),
            map(vec![(Value::String("x-opt-s".into()), Value::Bool(true))]),
        );
        bytes.extend(section(
            Descriptor::Code(0x74),
            map(vec![(Value::Symbol("sym".into()), Value::Int(1))]),
        ));
        bytes.extend(section(Descriptor::Code(0x71), Value::Null));
        let mut body = section(Descriptor::Code(0x77), Value::String("v".into()));
        body.extend(section(
            Descriptor::Code(0x76),
            Value::List(vec![Value::Int(1)]),
        ));
        body.extend(section(Descriptor::Code(0x78), map(vec![])));
        bytes.extend(&body);
        let m = AmqpMessage::decode(&bytes).unwrap();
        assert_eq!(m.annotation("x-opt-s"), Some(&Value::Bool(true)));
        assert_eq!(m.application_property("sym"), Some(&Value::Int(1)));
        assert_eq!(m.body, body);
        assert!(m.body_data().is_empty());
        let empty = section(Descriptor::Code(0x74), Value::Null);
        assert!(AmqpMessage::decode(&empty)
            .unwrap()
            .application_properties
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_sections_and_garbage_are_errors_not_panics() {
        assert!(AmqpMessage::decode(&section(Descriptor::Code(0x99), Value::Null)).is_err());
        assert!(AmqpMessage::decode(&[0x00, 0x53, 0x73, 0xc0, 0x05]).is_err());
        assert!(AmqpMessage::decode(&[0xa1, 0x01, b'x']).is_err());
    }
}
