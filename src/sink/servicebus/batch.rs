//! Batches in the Service Bus envelope: message format [`BATCH_FORMAT`], one data section per
//! encoded message, the first message's id/session/partition key on the envelope; cut at the
//! link's maximum message size and, on partitioned topics, at every partition-key change.

use std::ops::Range;

use azure_core_amqp::message::{AmqpMessageBody, AmqpMessageProperties};
use azure_core_amqp::{AmqpMessage, AmqpSendOptions};

use super::mapping::add_partition_key;
use crate::contract::Message;

/// Message format of a Service Bus batch.
pub const BATCH_FORMAT: u32 = 0x8001_3700;
/// Envelope overhead of a batch (bytes).
const ENVELOPE_OVERHEAD: u64 = 512;
/// Envelope and section overhead per message in a batch (bytes).
const BATCH_ITEM_OVERHEAD: u64 = 16;

/// Splits encoded messages into batches within `max` bytes and, when `partitioned`, one
/// partition key each. Returns index ranges.
pub(super) fn cut(
    messages: &[Message],
    encoded: &[Vec<u8>],
    max: u64,
    partitioned: bool,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = ENVELOPE_OVERHEAD;
    for (i, bytes) in encoded.iter().enumerate() {
        let item = bytes.len() as u64 + BATCH_ITEM_OVERHEAD;
        let key_change =
            partitioned && i > start && messages[i].session_id != messages[start].session_id;
        if i > start && (size + item > max || key_change) {
            out.push(start..i);
            start = i;
            size = ENVELOPE_OVERHEAD;
        }
        size += item;
    }
    if start < encoded.len() {
        out.push(start..encoded.len());
    }
    out
}

/// The envelope of a batch: `sections` (encoded messages) with `first`'s id, session and
/// partition key.
pub(super) fn envelope(
    first: &Message,
    sections: Vec<Vec<u8>>,
    session_id: bool,
    partitioned: bool,
) -> AmqpMessage {
    let mut envelope = AmqpMessage::builder()
        .with_body(AmqpMessageBody::Binary(sections))
        .with_properties(AmqpMessageProperties {
            message_id: Some(first.message_id.clone().into()),
            group_id: session_id.then(|| crate::contract::session_id(&first.session_id)),
            ..Default::default()
        })
        .build();
    if partitioned {
        add_partition_key(
            &mut envelope,
            &crate::contract::session_id(&first.session_id),
        );
    }
    envelope
}

/// Send options that mark a message as a batch envelope.
pub(super) fn batch_options() -> AmqpSendOptions {
    AmqpSendOptions {
        message_format: Some(BATCH_FORMAT),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::servicebus::mapping::tests::message;

    #[test]
    fn batches_respect_size_and_partition_keys() {
        let msgs: Vec<Message> = ["1", "1", "2", "3"].iter().map(|i| message(i)).collect();
        let encoded: Vec<Vec<u8>> = msgs.iter().map(|_| vec![0u8; 1000]).collect();
        assert_eq!(cut(&msgs, &encoded, 100_000, false), vec![0..4]);
        assert_eq!(cut(&msgs, &encoded, 2_600, false), vec![0..2, 2..4]);
        assert_eq!(cut(&msgs, &encoded, 100_000, true), vec![0..2, 2..3, 3..4]);
    }

    #[test]
    fn envelopes_carry_the_first_message_and_its_partition_key() {
        let msgs: Vec<Message> = ["7", "8"].iter().map(|i| message(i)).collect();
        let e = envelope(&msgs[0], vec![vec![1], vec![2]], true, true);
        let p = e.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(msgs[0].message_id.clone().into()));
        assert_eq!(p.group_id.as_deref(), Some("customer.7"));
        assert!(matches!(&e.body, AmqpMessageBody::Binary(s) if s.len() == 2));
        assert!(e.message_annotations.is_some());
        let plain = envelope(&msgs[0], vec![vec![1]], false, false);
        assert_eq!(plain.properties.unwrap().group_id, None);
        assert!(plain.message_annotations.is_none());
        assert_eq!(batch_options().message_format, Some(BATCH_FORMAT));
    }
}
