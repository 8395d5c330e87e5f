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
pub fn decode_performative(mut body: BytesMut) -> Result<(Performative, BytesMut), CodecError> {
    let performative = {
        let reader = IoReader::new((&mut body).reader());
        let mut de = Deserializer::new(reader);
        Performative::deserialize(&mut de).map_err(|e| CodecError::Malformed(e.to_string()))?
    };
    Ok((performative, body))
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

/// Reads the numeric descriptor of a described value (`0x00 0x53 code` or `0x00 0x80 u64`).
pub fn descriptor_code(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [0x00, 0x53, code, ..] => Some(*code as u64),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[..8]);
            Some(u64::from_be_bytes(b))
        }
        [0x00, 0x44, ..] => Some(0),
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
