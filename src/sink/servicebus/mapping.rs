//! Messages on the wire: a pollbus [`Message`] as an AMQP message, exactly as `contract.rs`
//! describes it (MessageId, SessionId = partitionKey, Subject = event name, ContentType,
//! application properties, JSON body in a data section).

use azure_core_amqp::message::AmqpMessageProperties;
use azure_core_amqp::{AmqpMessage, AmqpSimpleValue, AmqpSymbol};

use crate::contract::{Message, PropertyValue};

fn simple(value: &PropertyValue) -> AmqpSimpleValue {
    match value {
        PropertyValue::Null => AmqpSimpleValue::Null,
        PropertyValue::Bool(b) => AmqpSimpleValue::Boolean(*b),
        PropertyValue::Int(i) => AmqpSimpleValue::Long(*i),
        PropertyValue::Double(d) => AmqpSimpleValue::Double(*d),
        PropertyValue::String(s) => AmqpSimpleValue::String(s.clone()),
    }
}

/// Puts the partition key on a message for partitioned topics (`x-opt-partition-key`).
pub(super) fn add_partition_key(amqp: &mut AmqpMessage, key: &str) {
    amqp.add_message_annotation(AmqpSymbol::from("x-opt-partition-key"), key.to_string());
}

/// Maps a pollbus message to an AMQP message (the contract on the wire).
pub fn to_amqp(message: &Message, session_id: bool, partitioned: bool) -> AmqpMessage {
    let mut builder = AmqpMessage::builder()
        .with_body(message.body_bytes())
        .with_properties(AmqpMessageProperties {
            message_id: Some(message.message_id.clone().into()),
            content_type: Some(AmqpSymbol::from(message.content_type.as_str())),
            subject: Some(message.body.even_type.name().to_string()),
            // Rows written before ids were length-checked may hold a long key: shorten it the
            // same way (idempotent for current rows).
            group_id: session_id.then(|| crate::contract::session_id(&message.session_id)),
            ..Default::default()
        });
    for (name, value) in &message.application_properties {
        builder = builder.add_application_property(name.clone(), simple(value));
    }
    let mut amqp = builder.build();
    if partitioned {
        add_partition_key(&mut amqp, &crate::contract::session_id(&message.session_id));
    }
    amqp
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::contract::{Change, EventType, MessageContext, TraceContext};
    use serde_json::json;

    /// An update of record `id` with a string, a number and a null property.
    pub(in crate::sink::servicebus) fn message(id: &str) -> Message {
        let change = Change {
            kind: EventType::Update,
            id: id.into(),
            timestamp: "2024-01-01T00:00:00Z".parse().unwrap(),
            changed: vec![
                ("City".into(), json!("Bodø")),
                ("Age".into(), json!(3)),
                ("Gone".into(), json!(null)),
            ],
            on_behalf_of: None,
            version: "1".into(),
        };
        let ctx = MessageContext {
            source: "s",
            source_system: "CRM",
            entity: "customer",
            topic_prefix: "api.event.",
        };
        Message::build(&change, &ctx, &TraceContext::random())
    }

    #[test]
    fn amqp_mapping_carries_the_contract() {
        let m = message("42");
        let a = to_amqp(&m, true, true);
        let p = a.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(m.message_id.clone().into()));
        assert_eq!(p.group_id.as_deref(), Some("customer.42"));
        assert_eq!(p.subject.as_deref(), Some("update"));
        assert_eq!(p.content_type, Some(AmqpSymbol::from("application/json")));
        let props = &a.application_properties.as_ref().unwrap().0;
        assert_eq!(
            props.get("City"),
            Some(&AmqpSimpleValue::String("Bodø".into()))
        );
        assert_eq!(props.get("Age"), Some(&AmqpSimpleValue::Long(3)));
        assert_eq!(props.get("Gone"), Some(&AmqpSimpleValue::Null));
        assert!(props.get("Diagnostic-Id").is_some());
        let no_session = to_amqp(&m, false, false);
        assert_eq!(no_session.properties.unwrap().group_id, None);
    }
}
