//! AMQP 1.0 framing on top of the `fe2o3-amqp-types` performatives and the `serde_amqp` codec.
//!
//! Only the byte layout of frames lives here: the 8-byte frame header, the performative encoded
//! with `serde_amqp`, and the transfer payload. Nothing here knows about links or Service Bus.

use bytes::{Buf, BufMut, BytesMut};
use fe2o3_amqp_types::performatives::{Performative, Transfer};
use serde::{Deserialize, Serialize};
use serde_amqp::{de::Deserializer, read::IoReader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The AMQP protocol header (`AMQP 0 1 0 0`).
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The SASL protocol header (`AMQP 3 1 0 0`).
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// Frame type of AMQP frames.
pub const FRAME_TYPE_AMQP: u8 = 0x00;
/// Frame type of SASL frames.
pub const FRAME_TYPE_SASL: u8 = 0x01;
/// The smallest max-frame-size a peer may ask for (AMQP 1.0 §2.7.1).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// Errors of the frame layer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame is larger than the negotiated limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: u32,
        /// Our limit.
        limit: u32,
    },
    /// Encoding failed.
    #[error("encode: {0}")]
    Encode(#[from] serde_amqp::Error),
    /// A well-framed performative that cannot be mapped even after normalization; `value` is
    /// its generic decoding when the bytes were valid AMQP, so the caller can still find the
    /// link or session it belongs to.
    #[error("undecodable performative{}: {reason}", code.map(|c| format!(" 0x{c:02x}")).unwrap_or_default())]
    Performative {
        /// Descriptor code, when known.
        code: Option<u64>,
        /// The generic decoding, when the bytes were valid AMQP.
        value: Option<Box<serde_amqp::Value>>,
        /// Why it could not be mapped.
        reason: String,
    },
}

/// One raw frame: its type, channel and body (everything after the header).
#[derive(Debug)]
pub struct RawFrame {
    /// Frame type byte.
    pub frame_type: u8,
    /// Channel (zero for SASL frames).
    pub channel: u16,
    /// Frame body; empty for heartbeat frames.
    pub body: BytesMut,
}

/// Reads one frame, refusing frames larger than `limit`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<RawFrame, CodecError> {
    let size = reader.read_u32().await?;
    if size > limit {
        return Err(CodecError::TooLarge { size, limit });
    }
    if size < 8 {
        return Err(CodecError::Malformed(format!("frame size {size} < 8")));
    }
    let doff = reader.read_u8().await?;
    let frame_type = reader.read_u8().await?;
    let channel = reader.read_u16().await?;
    let mut rest = vec![0u8; size as usize - 8];
    reader.read_exact(&mut rest).await?;
    let skip = (doff as usize * 4).saturating_sub(8);
    if skip > rest.len() {
        return Err(CodecError::Malformed(format!(
            "data offset {doff} beyond frame"
        )));
    }
    let body = BytesMut::from(&rest[skip..]);
    Ok(RawFrame {
        frame_type,
        channel,
        body,
    })
}

/// Decodes an AMQP frame body into its performative and the remaining payload.
///
/// A performative `fe2o3-amqp-types` refuses is decoded generically, rewritten by
/// [`normalize`](crate::normalize::normalize) (string keys to symbols, other integer widths, …)
/// and decoded again; if that fails too the error is [`CodecError::Performative`].
pub fn decode_performative(body: BytesMut) -> Result<(Performative, BytesMut), CodecError> {
    let strict = {
        let mut view = &body[..];
        let reader = IoReader::new((&mut view).reader());
        let mut de = Deserializer::new(reader);
        Performative::deserialize(&mut de).map(|p| (p, body.len() - view.len()))
    };
    let (performative, used) = match strict {
        Ok(ok) => ok,
        Err(strict_error) => decode_normalized(&body, strict_error.to_string())?,
    };
    let mut payload = body;
    let _ = payload.split_to(used);
    Ok((performative, payload))
}

fn decode_normalized(
    body: &[u8],
    strict_error: String,
) -> Result<(Performative, usize), CodecError> {
    let unmappable =
        |code, value: Option<serde_amqp::Value>, reason: String| CodecError::Performative {
            code,
            value: value.map(Box::new),
            reason,
        };
    let len = value_len(body).map_err(|e| unmappable(None, None, e.to_string()))?;
    let generic: serde_amqp::Value = serde_amqp::from_slice(&body[..len])
        .map_err(|e| unmappable(descriptor_code(body), None, e.to_string()))?;
    let code = match &generic {
        serde_amqp::Value::Described(d) => crate::normalize::descriptor_number(&d.descriptor),
        _ => None,
    };
    let normalized = crate::normalize::normalize(generic.clone());
    let bytes = serde_amqp::to_vec(&normalized)
        .map_err(|e| unmappable(code, Some(generic.clone()), e.to_string()))?;
    match serde_amqp::from_slice::<Performative>(&bytes) {
        Ok(p) => {
            tracing::debug!(code = ?code, error = %strict_error, "performative accepted after normalizing its encoding");
            Ok((p, len))
        }
        Err(e) => Err(unmappable(code, Some(generic), e.to_string())),
    }
}

/// Decodes a SASL frame body as `T`.
pub fn decode_sasl<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CodecError> {
    serde_amqp::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encodes a frame with the given type, channel and already-encoded body parts.
pub fn encode_frame(frame_type: u8, channel: u16, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.put_u32(len as u32);
    out.put_u8(2);
    out.put_u8(frame_type);
    out.put_u16(channel);
    for p in parts {
        out.put_slice(p);
    }
    out.to_vec()
}

/// Encodes an AMQP performative frame (no payload).
pub fn encode_performative<T: Serialize>(channel: u16, value: &T) -> Result<Vec<u8>, CodecError> {
    let body = serde_amqp::to_vec(value)?;
    Ok(encode_frame(FRAME_TYPE_AMQP, channel, &[&body]))
}

/// Encodes a SASL frame.
pub fn encode_sasl<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = serde_amqp::to_vec(value)?;
    Ok(encode_frame(FRAME_TYPE_SASL, 0, &[&body]))
}

/// Encodes a delivery as one or more transfer frames that each fit in `max_frame_size`.
///
/// The first frame carries the full `first` performative; continuation frames repeat only the
/// handle (delivery id and tag may be omitted on continuations, AMQP 1.0 §2.7.5).
pub fn encode_transfer(
    channel: u16,
    first: &Transfer,
    payload: &[u8],
    max_frame_size: u32,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let head = serde_amqp::to_vec(first)?;
    let max = max_frame_size.max(MIN_MAX_FRAME_SIZE) as usize;
    if 8 + head.len() + payload.len() <= max {
        return Ok(vec![encode_frame(
            FRAME_TYPE_AMQP,
            channel,
            &[&head, payload],
        )]);
    }
    let mut frames = Vec::new();
    let mut offset = 0usize;
    let mut index = 0usize;
    while offset < payload.len() || index == 0 {
        let mut perf = if index == 0 {
            first.clone()
        } else {
            Transfer {
                handle: first.handle.clone(),
                delivery_id: None,
                delivery_tag: None,
                message_format: None,
                settled: first.settled,
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: first.batchable,
            }
        };
        // Encode once with more=true to know the header size; `more` only flips a boolean.
        perf.more = true;
        let encoded = serde_amqp::to_vec(&perf)?;
        let room = max.saturating_sub(8 + encoded.len()).max(1);
        let end = (offset + room).min(payload.len());
        let last = end >= payload.len();
        let encoded = if last {
            perf.more = false;
            serde_amqp::to_vec(&perf)?
        } else {
            encoded
        };
        frames.push(encode_frame(
            FRAME_TYPE_AMQP,
            channel,
            &[&encoded, &payload[offset..end]],
        ));
        offset = end;
        index += 1;
        if last {
            break;
        }
    }
    Ok(frames)
}

/// Returns the encoded length of the AMQP value starting at `bytes[0]`.
pub fn value_len(bytes: &[u8]) -> Result<usize, CodecError> {
    value_len_at_depth(bytes, 0)
}

fn value_len_at_depth(bytes: &[u8], depth: usize) -> Result<usize, CodecError> {
    if depth > 16 {
        return Err(CodecError::Malformed(
            "descriptors nested too deeply".into(),
        ));
    }
    let bad = || CodecError::Malformed("truncated AMQP value".into());
    let code = *bytes.first().ok_or_else(bad)?;
    let need = |n: usize| -> Result<usize, CodecError> {
        if n <= bytes.len() {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    let len = match code {
        0x00 => {
            let d = value_len_at_depth(&bytes[1..], depth + 1)?;
            let v = value_len_at_depth(bytes.get(1 + d..).ok_or_else(bad)?, depth + 1)?;
            return need(1 + d + v);
        }
        0x40..=0x45 => 1,
        0x50..=0x56 => 2,
        0x60..=0x6f => 3,
        0x70..=0x7f => 5,
        0x80..=0x8f => 9,
        0x90..=0x9f => 17,
        0xa0..=0xaf | 0xc0..=0xcf | 0xe0..=0xef => {
            let n = *bytes.get(1).ok_or_else(bad)? as usize;
            2 + n
        }
        0xb0..=0xbf | 0xd0..=0xdf | 0xf0..=0xff => {
            let b = bytes.get(1..5).ok_or_else(bad)?;
            5 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        }
        other => {
            return Err(CodecError::Malformed(format!(
                "unknown format code 0x{other:02x}"
            )))
        }
    };
    need(len)
}

/// Reads the numeric descriptor of a described value (`0x00 0x53 code`, `0x00 0x80 u64`, or a
/// symbolic descriptor such as `amqp:properties:list`).
pub fn descriptor_code(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [0x00, 0x53, code, ..] => Some(*code as u64),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[..8]);
            Some(u64::from_be_bytes(b))
        }
        [0x00, 0x44, ..] => Some(0),
        [0x00, 0xa3, n, rest @ ..] => std::str::from_utf8(rest.get(..*n as usize)?)
            .ok()
            .and_then(crate::normalize::code_of_name),
        [0x00, 0xb3, a, b, c, d, rest @ ..] => {
            let n = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            std::str::from_utf8(rest.get(..n)?)
                .ok()
                .and_then(crate::normalize::code_of_name)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_lengths_and_malformed_input() {
        assert_eq!(value_len(&[0x40]).unwrap(), 1);
        assert_eq!(value_len(&[0xa1, 3, b'a', b'b', b'c', 0xff]).unwrap(), 5);
        assert_eq!(value_len(&[0x00, 0x53, 0x75, 0xa0, 1, 9]).unwrap(), 6);
        assert!(value_len(&[0xa1, 3, b'a']).is_err(), "truncated");
        assert!(value_len(&[]).is_err());
        assert!(
            value_len(&[0x00; 100]).is_err(),
            "nested descriptors refused, no stack overflow"
        );
        assert!(value_len(&[0x3f]).is_err(), "unknown format code");
    }

    #[test]
    fn transfers_split_to_fit_the_frame_size() {
        let t = Transfer {
            handle: fe2o3_amqp_types::definitions::Handle(0),
            delivery_id: Some(0),
            delivery_tag: Some(serde_bytes::ByteBuf::from(vec![1; 16])),
            message_format: Some(0),
            settled: Some(false),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let payload = vec![7u8; 3000];
        let frames = encode_transfer(1, &t, &payload, 1024).unwrap();
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|f| f.len() <= 1024));
        let mut total = 0;
        for (i, f) in frames.iter().enumerate() {
            let (perf, rest) = decode_performative(BytesMut::from(&f[8..])).unwrap();
            let Performative::Transfer(tr) = perf else {
                panic!("transfer expected")
            };
            assert_eq!(tr.more, i + 1 < frames.len());
            total += rest.len();
        }
        assert_eq!(total, payload.len());
    }
}

#[cfg(test)]
mod alternative_encodings {
    //! Every encoding a client may choose for a performative decodes; what cannot be mapped
    //! is reported with its descriptor and generic value, never a panic.
    use super::*;
    use fe2o3_amqp_types::{
        definitions::{ErrorCondition, Role},
        messaging::{DeliveryState, TargetArchetype},
    };
    use serde_amqp::{described::Described, descriptor::Descriptor, primitives::OrderedMap, Value};

    fn described(code: u64, fields: Vec<Value>) -> Value {
        Value::Described(Box::new(Described {
            descriptor: Descriptor::Code(code),
            value: Value::List(fields),
        }))
    }

    fn named(name: &str, fields: Vec<Value>) -> Value {
        Value::Described(Box::new(Described {
            descriptor: Descriptor::Name(name.into()),
            value: Value::List(fields),
        }))
    }

    fn decode_value(v: &Value) -> Result<Performative, CodecError> {
        decode_bytes(&serde_amqp::to_vec(v).unwrap())
    }

    fn decode_bytes(b: &[u8]) -> Result<Performative, CodecError> {
        decode_performative(BytesMut::from(b)).map(|(p, _)| p)
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        let mut m = OrderedMap::new();
        for (k, v) in entries {
            m.insert(k, v);
        }
        Value::Map(m)
    }

    fn string(s: &str) -> Value {
        Value::String(s.into())
    }

    fn symbol(s: &str) -> Value {
        Value::Symbol(s.into())
    }

    /// A receiver's disposition of delivery 7 with a rejected outcome carrying `error`.
    fn rejected_disposition(error: Value) -> Value {
        described(
            0x15,
            vec![
                Value::Bool(true),
                Value::Uint(7),
                Value::Null,
                Value::Bool(true),
                described(0x25, vec![error]),
            ],
        )
    }

    fn rejected_info(p: Performative) -> (String, Vec<(String, Value)>) {
        let Performative::Disposition(d) = p else {
            panic!("disposition expected, got {p:?}")
        };
        let Some(DeliveryState::Rejected(r)) = d.state else {
            panic!("rejected expected")
        };
        let e = r.error.expect("error");
        let condition = match e.condition {
            ErrorCondition::Custom(s) => s.as_str().to_string(),
            other => format!("{other:?}"),
        };
        let info = e
            .info
            .map(|i| {
                i.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        (condition, info)
    }

    #[test]
    fn rejected_error_info_with_string_keys() {
        // Microsoft's JavaScript SDK (rhea) on deadLetterMessage.
        let error = described(
            0x1d,
            vec![
                symbol("com.microsoft:dead-letter"),
                string("why"),
                map(vec![
                    (string("DeadLetterReason"), string("js-reason")),
                    (
                        string("DeadLetterErrorDescription"),
                        string("js description"),
                    ),
                ]),
            ],
        );
        let (condition, info) = rejected_info(decode_value(&rejected_disposition(error)).unwrap());
        assert_eq!(condition, "com.microsoft:dead-letter");
        assert_eq!(
            info,
            vec![
                ("DeadLetterReason".to_string(), string("js-reason")),
                (
                    "DeadLetterErrorDescription".to_string(),
                    string("js description")
                ),
            ]
        );
    }

    #[test]
    fn rejected_error_info_with_symbol_keys_and_symbol_values() {
        let error = described(
            0x1d,
            vec![
                symbol("com.microsoft:dead-letter"),
                Value::Null,
                map(vec![(symbol("DeadLetterReason"), symbol("sym-reason"))]),
            ],
        );
        let (_, info) = rejected_info(decode_value(&rejected_disposition(error)).unwrap());
        assert_eq!(
            info,
            vec![("DeadLetterReason".to_string(), symbol("sym-reason"))]
        );
    }

    #[test]
    fn error_condition_as_string() {
        let error = described(0x1d, vec![string("amqp:internal-error")]);
        let (condition, info) = rejected_info(decode_value(&rejected_disposition(error)).unwrap());
        assert_eq!(condition, "AmqpError(InternalError)");
        assert!(info.is_empty());
    }

    #[test]
    fn symbolic_descriptors() {
        let v = named(
            "amqp:disposition:list",
            vec![
                Value::Bool(true),
                Value::Uint(1),
                Value::Uint(3),
                Value::Bool(true),
                named("amqp:accepted:list", vec![]),
            ],
        );
        let Performative::Disposition(d) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!((d.first, d.last), (1, Some(3)));
        assert!(matches!(d.state, Some(DeliveryState::Accepted(_))));
        // Symbolic descriptors nested inside a value that also needs normalizing.
        let error = named("amqp:error:list", vec![string("amqp:decode-error")]);
        let v = named(
            "amqp:detach:list",
            vec![Value::Ulong(2), Value::Bool(true), error],
        );
        let Performative::Detach(d) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(d.handle.0, 2);
        assert_eq!(
            d.error.unwrap().condition,
            ErrorCondition::AmqpError(fe2o3_amqp_types::definitions::AmqpError::DecodeError)
        );
    }

    #[test]
    fn descriptor_as_ulong_and_smallulong() {
        // detach handle 0 closed, descriptor 0x16 as a full ulong (0x80) and as smallulong (0x53)
        for head in [
            &[0x00u8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x16][..],
            &[0x00, 0x53, 0x16][..],
        ] {
            let mut b = head.to_vec();
            b.extend_from_slice(&[0xc0, 0x03, 0x02, 0x43, 0x41]);
            let Performative::Detach(d) = decode_bytes(&b).unwrap() else {
                panic!()
            };
            assert!(d.closed);
        }
    }

    #[test]
    fn uint_encodings_uint0_smalluint_uint() {
        // flow: next-incoming-id, incoming-window, next-outgoing-id, outgoing-window
        let b = [
            0x00, 0x53, 0x13, 0xc0, 0x0c, 0x04, 0x43, 0x52, 0x05, 0x70, 0, 0, 1, 0, 0x70, 0xff,
            0xff, 0xff, 0xff,
        ];
        let Performative::Flow(f) = decode_bytes(&b).unwrap() else {
            panic!()
        };
        assert_eq!(f.next_incoming_id, Some(0));
        assert_eq!(f.incoming_window, 5);
        assert_eq!(f.next_outgoing_id, 256);
        assert_eq!(f.outgoing_window, u32::MAX);
    }

    #[test]
    fn list_encodings_list0_list8_list32() {
        let list0 = [0x00, 0x53, 0x17, 0x45];
        assert!(matches!(
            decode_bytes(&list0).unwrap(),
            Performative::End(_)
        ));
        let list8 = [0x00, 0x53, 0x17, 0xc0, 0x01, 0x00];
        assert!(matches!(
            decode_bytes(&list8).unwrap(),
            Performative::End(_)
        ));
        let list32 = [
            0x00, 0x53, 0x16, 0xd0, 0, 0, 0, 6, 0, 0, 0, 2, 0x52, 9, 0x42,
        ];
        let Performative::Detach(d) = decode_bytes(&list32).unwrap() else {
            panic!()
        };
        assert_eq!((d.handle.0, d.closed), (9, false));
    }

    #[test]
    fn boolean_encodings_true_false_and_boolean_byte() {
        for (code, expect) in [
            (&[0x41u8][..], true),
            (&[0x42][..], false),
            (&[0x56, 0x01][..], true),
            (&[0x56, 0x00][..], false),
        ] {
            let mut b = vec![0x00, 0x53, 0x16, 0xc0, 2 + code.len() as u8, 0x02, 0x43];
            b.extend_from_slice(code);
            let Performative::Detach(d) = decode_bytes(&b).unwrap() else {
                panic!()
            };
            assert_eq!(d.closed, expect, "{code:02x?}");
        }
        // A boolean sent as ubyte 0/1.
        let v = described(0x16, vec![Value::Uint(0), Value::Ubyte(1)]);
        let Performative::Detach(d) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert!(d.closed);
    }

    #[test]
    fn other_integer_widths_where_uint_ushort_ubyte_ulong_are_declared() {
        // attach: handle as ulong, settle modes as uint/int, max-message-size as uint
        let v = described(
            0x12,
            vec![
                string("link"),
                Value::Ulong(3),
                Value::Bool(false),
                Value::Uint(1),
                Value::Int(0),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Long(0),
                Value::Uint(1024),
            ],
        );
        let Performative::Attach(a) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(a.handle.0, 3);
        assert_eq!(a.role, Role::Sender);
        assert_eq!(a.max_message_size, Some(1024));
        assert_eq!(a.initial_delivery_count, Some(0));
        // begin: remote-channel as uint, windows as ulong and int
        let v = described(
            0x11,
            vec![
                Value::Uint(0),
                Value::Ubyte(1),
                Value::Ulong(5000),
                Value::Int(7),
            ],
        );
        let Performative::Begin(b) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                b.remote_channel,
                b.next_outgoing_id,
                b.incoming_window,
                b.outgoing_window
            ),
            (Some(0), 1, 5000, 7)
        );
        // flow: handle and credit as ushort/ulong; transfer: delivery-id as int
        let v = described(
            0x13,
            vec![
                Value::Uint(0),
                Value::Uint(1),
                Value::Uint(0),
                Value::Uint(1),
                Value::Ushort(2),
                Value::Ulong(0),
                Value::Long(50),
            ],
        );
        let Performative::Flow(f) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!((f.handle.map(|h| h.0), f.link_credit), (Some(2), Some(50)));
        let v = described(0x14, vec![Value::Uint(0), Value::Int(1)]);
        let Performative::Transfer(t) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(t.delivery_id, Some(1));
        // open: max-frame-size as ulong, idle-time-out as int
        let v = described(
            0x10,
            vec![
                string("c"),
                Value::Null,
                Value::Ulong(4096),
                Value::Uint(10),
                Value::Int(1000),
            ],
        );
        let Performative::Open(o) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(o.max_frame_size.0, 4096);
        assert_eq!(o.channel_max.0, 10);
        assert_eq!(o.idle_time_out, Some(1000));
    }

    #[test]
    fn values_that_do_not_fit_the_declared_type_are_refused() {
        for v in [
            described(0x16, vec![Value::Long(-1)]),
            described(0x16, vec![Value::Ulong(u64::MAX)]),
            described(0x16, vec![string("handle")]),
        ] {
            match decode_value(&v) {
                Err(CodecError::Performative { code, value, .. }) => {
                    assert_eq!(code, Some(0x16));
                    assert_eq!(value.as_deref(), Some(&v), "the generic value is kept");
                }
                other => panic!("{v:?} must be refused, got {other:?}"),
            }
        }
        // Not even AMQP: no descriptor, no value.
        assert!(matches!(
            decode_bytes(&[0x00, 0x53]),
            Err(CodecError::Performative { value: None, .. })
        ));
        assert!(matches!(
            decode_bytes(&[0x00, 0x53, 0x99, 0x45]),
            Err(CodecError::Performative {
                code: Some(0x99),
                ..
            })
        ));
    }

    #[test]
    fn multiple_fields_as_one_symbol_an_array_a_list_or_strings() {
        let caps = [
            symbol("com.microsoft:session-filter"),
            Value::Array(serde_amqp::primitives::Array(vec![
                symbol("a"),
                symbol("b"),
            ])),
            Value::List(vec![string("a"), symbol("b")]),
            string("a"),
        ];
        for cap in caps {
            let v = described(
                0x10,
                vec![
                    string("c"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    cap.clone(),
                    cap.clone(),
                    cap.clone(),
                    cap.clone(),
                ],
            );
            let Performative::Open(o) = decode_value(&v).unwrap_or_else(|e| panic!("{cap:?}: {e}"))
            else {
                panic!()
            };
            let n = o.offered_capabilities.map(|a| a.0.len()).unwrap_or(0);
            assert!(n >= 1, "{cap:?}");
            assert_eq!(o.outgoing_locales.map(|a| a.0.len()), Some(n));
        }
    }

    /// An attach whose source and properties use string keys, a plain filter value, a symbol
    /// address and a string expiry policy (all seen from AMQP clients in the wild).
    #[test]
    fn attach_with_string_keyed_fields_filter_and_terminus_alternatives() {
        for filter_value in [
            string("session-1"),
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Name("com.microsoft:session-filter".into()),
                value: string("session-1"),
            })),
        ] {
            let source = described(
                0x28,
                vec![
                    symbol("orders"),
                    Value::Ubyte(0),
                    string("link-detach"),
                    Value::Ulong(0),
                    Value::Bool(false),
                    map(vec![(string("x"), Value::Int(1))]),
                    string("move"),
                    map(vec![(
                        string("com.microsoft:session-filter"),
                        filter_value.clone(),
                    )]),
                    named("amqp:rejected:list", vec![]),
                    string("amqp:accepted:list"),
                    Value::List(vec![string("a")]),
                ],
            );
            let target = named("amqp:target:list", vec![string("client-1")]);
            let v = described(
                0x12,
                vec![
                    string("recv"),
                    Value::Uint(0),
                    Value::Bool(true),
                    Value::Ubyte(1),
                    Value::Ubyte(1),
                    source,
                    target,
                    Value::Null,
                    Value::Bool(false),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    map(vec![
                        (string("com.microsoft:timeout"), Value::Uint(5000)),
                        (symbol("com.microsoft:entity-type"), string("queue")),
                    ]),
                ],
            );
            let Performative::Attach(a) = decode_value(&v).unwrap() else {
                panic!()
            };
            let s = a.source.expect("source");
            assert_eq!(s.address.as_deref(), Some("orders"));
            let filter = s.filter.expect("filter");
            let (k, _) = filter.iter().next().unwrap();
            assert_eq!(k.as_str(), "com.microsoft:session-filter");
            let Some(TargetArchetype::Target(t)) = a.target.as_deref() else {
                panic!("target")
            };
            assert_eq!(t.address.as_deref(), Some("client-1"));
            let props = a.properties.expect("properties");
            let keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["com.microsoft:timeout", "com.microsoft:entity-type"]);
        }
    }

    #[test]
    fn modified_outcome_annotations_with_string_keys() {
        let v = described(
            0x15,
            vec![
                Value::Bool(true),
                Value::Uint(0),
                Value::Null,
                Value::Bool(true),
                described(
                    0x27,
                    vec![
                        Value::Bool(true),
                        Value::Ubyte(0),
                        map(vec![(string("x-opt-reason"), string("retry"))]),
                    ],
                ),
            ],
        );
        let Performative::Disposition(d) = decode_value(&v).unwrap() else {
            panic!()
        };
        let Some(DeliveryState::Modified(m)) = d.state else {
            panic!()
        };
        assert_eq!(m.delivery_failed, Some(true));
        assert_eq!(m.undeliverable_here, Some(false));
        let ann = m.message_annotations.expect("annotations");
        assert_eq!(ann.iter().next().unwrap().0.as_str(), "x-opt-reason");
    }

    #[test]
    fn transfer_payload_follows_a_normalized_performative() {
        let head = serde_amqp::to_vec(&described(
            0x14,
            vec![
                Value::Ulong(0),
                Value::Long(4),
                Value::Binary(vec![1; 16].into()),
            ],
        ))
        .unwrap();
        let mut body = head.clone();
        body.extend_from_slice(b"\x00\x53\x75\xa0\x02hi");
        let (p, payload) = decode_performative(BytesMut::from(&body[..])).unwrap();
        assert!(matches!(p, Performative::Transfer(t) if t.delivery_id == Some(4)));
        assert_eq!(&payload[..], b"\x00\x53\x75\xa0\x02hi");
    }
}
