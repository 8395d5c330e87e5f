//! Fingerprints: what a snapshot keeps of a record's tracked values instead of the values.
//!
//! Detection only ever asks "which tracked fields differ from last time"; the message contract
//! never needs an old value (an UPDATE carries the new values, a DELETE none). So a snapshot
//! keeps, per tracked field, a fingerprint of the value's canonical form, plus one fingerprint of
//! the whole record.
//!
//! **Hash function.** XXH3-64 (`xxhash-rust`, the algorithm's stable, specified output; not a
//! cryptographic hash: vendor data cannot make pollbus do anything worse than miss a change it
//! crafted a collision for, and a vendor that wants to hide a change can simply not report it).
//!
//! **Canonical form.** A value is hashed as `XXH3-64(bytes, seed = kind)`:
//!
//! | value | kind (seed) | bytes |
//! |---|---:|---|
//! | null, or the path is missing | 1 | none |
//! | `true` / `false` | 2 | `true` / `false` |
//! | number | 3 | serde_json's text of the parsed number (`7`, `-3`, `2.5`, `1e+20`); `1` and `1.0` differ, as they did as JSON values |
//! | string | 4 | its UTF-8 bytes (escapes decoded) |
//! | array, object | 5 | compact JSON, object keys sorted by their UTF-8 bytes, strings escaped as serde_json writes them |
//!
//! **Per field** the snapshot keeps the low 32 bits of that value hash, under a 32-bit *tag* of
//! the contract field name (the low 32 bits of `XXH3-64(name)`). **Per record** it keeps a 64-bit
//! fingerprint: `XXH3-64` of `tag (u32 LE) ‖ value hash (u64 LE)` for every tracked field, in
//! ascending tag order.
//!
//! **Collisions.** A record whose tracked values changed looks unchanged only if its 64-bit
//! record fingerprint collides: probability 2⁻⁶⁴ per comparison. Which fields changed is read off
//! the 32-bit field fingerprints: a changed field is left out of `changedFields` with probability
//! 2⁻³² per changed field (one in 4.3 billion), and when the record fingerprint differs but no
//! field fingerprint does, every tracked field is listed (nothing is lost, the UPDATE is only
//! wider). Two configured names with the same tag are refused when the configuration is compiled
//! (about one configuration in 2.4 million with 60 fields), so tags identify fields.
//!
//! **Layouts.** The ascending tag list of a resource's fields is its *layout*; a store keeps each
//! layout once (content-addressed by [`Layout::id`]) and each snapshot as its layout id plus the
//! field fingerprints in layout order (see [`encode`]): 4 bytes per field. A field added to the
//! configuration later has no fingerprint in old snapshots and is learnt silently.

use std::sync::Arc;

use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The 64-bit hash of a value's canonical form (see the module documentation).
pub fn value_hash(value: &Value) -> u64 {
    match value {
        Value::Null => xxh3_64_with_seed(b"", 1),
        Value::Bool(true) => xxh3_64_with_seed(b"true", 2),
        Value::Bool(false) => xxh3_64_with_seed(b"false", 2),
        Value::Number(n) => {
            let mut buf = itoa_buf::Buf::default();
            xxh3_64_with_seed(buf.number(n), 3)
        }
        Value::String(s) => xxh3_64_with_seed(s.as_bytes(), 4),
        Value::Array(_) | Value::Object(_) => {
            let mut out = Vec::with_capacity(64);
            canonical_json(value, &mut out);
            xxh3_64_with_seed(&out, 5)
        }
    }
}

/// The hash of a path that is missing in the record (the same as null, as before: a missing
/// tracked value reads as null).
pub fn missing_hash() -> u64 {
    value_hash(&Value::Null)
}

mod itoa_buf {
    use std::io::Write;

    /// A stack buffer for a number's text (numbers are short; serde_json writes at most ~24
    /// bytes for an f64).
    pub struct Buf {
        bytes: [u8; 48],
    }

    impl Default for Buf {
        fn default() -> Self {
            Buf { bytes: [0; 48] }
        }
    }

    impl Buf {
        /// serde_json's text of `n`.
        pub fn number(&mut self, n: &serde_json::Number) -> &[u8] {
            let mut cursor = std::io::Cursor::new(&mut self.bytes[..]);
            write!(cursor, "{n}").expect("a JSON number fits in 48 bytes");
            let len = cursor.position() as usize;
            &self.bytes[..len]
        }
    }
}

/// Compact JSON of `value` with object keys sorted (whatever the map's own order).
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("a string serializes");
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serializes"),
    }
}

/// The 32-bit tag of a contract field name.
pub fn name_tag(name: &str) -> u32 {
    xxh3_64(name.as_bytes()) as u32
}

/// The ascending tags of a resource's tracked fields, and its content address; with the field
/// names when known (stored beside the tags, so that a whole-record snapshot can name a field a
/// record no longer carries). Two layouts are equal when their tags are.
#[derive(Debug, Clone)]
pub struct Layout {
    id: u32,
    tags: Box<[u32]>,
    names: Option<Box<[Box<str>]>>,
}

impl PartialEq for Layout {
    fn eq(&self, other: &Layout) -> bool {
        self.id == other.id && self.tags == other.tags
    }
}

impl Eq for Layout {}

impl Layout {
    /// The layout of these tags (sorted here; duplicates are the caller's to refuse).
    pub fn new(mut tags: Vec<u32>) -> Layout {
        tags.sort_unstable();
        let mut bytes = Vec::with_capacity(tags.len() * 4);
        for t in &tags {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        Layout {
            id: xxh3_64_with_seed(&bytes, 6) as u32,
            tags: tags.into_boxed_slice(),
            names: None,
        }
    }

    /// The layout of these fields, `(tag, name)`, keeping the names (sorted here by tag;
    /// duplicate tags are the caller's to refuse).
    pub fn named(mut fields: Vec<(u32, String)>) -> Layout {
        fields.sort_unstable_by_key(|f| f.0);
        let mut layout = Layout::new(fields.iter().map(|f| f.0).collect());
        layout.names = Some(fields.into_iter().map(|f| f.1.into_boxed_str()).collect());
        layout
    }

    /// The name of the field tagged `tag`, when the layout has it and knows names.
    pub fn name_of(&self, tag: u32) -> Option<&str> {
        let i = self.tags.binary_search(&tag).ok()?;
        self.names.as_ref().map(|n| &*n[i])
    }

    /// The names as stored beside the tags: a JSON array in tag order (`None` when unknown).
    pub fn names_json(&self) -> Option<String> {
        self.names
            .as_ref()
            .map(|n| serde_json::to_string(n).expect("strings serialize"))
    }

    /// This layout with the names stored beside its tags ([`Layout::names_json`]); names that
    /// do not read as one per tag are ignored (they only name fields in messages).
    pub fn with_names_json(mut self, text: Option<&str>) -> Layout {
        self.names = text
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
            .filter(|n| n.len() == self.tags.len())
            .map(|n| n.into_iter().map(String::into_boxed_str).collect());
        self
    }

    /// The layout's content address: the low 32 bits of `XXH3-64(tags as u32 LE, seed 6)`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The tags, ascending.
    pub fn tags(&self) -> &[u32] {
        &self.tags
    }

    /// The tags as stored (u32 LE each).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.tags.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    /// A layout read back from [`Layout::to_bytes`]; `None` when the bytes are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Layout> {
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let tags: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if tags.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        Some(Layout::new(tags))
    }
}

/// A record's fingerprints: the whole record's and, in its layout's tag order, each field's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The record fingerprint (64 bits).
    pub record: u64,
    /// Which fields, in which order.
    pub layout: Arc<Layout>,
    /// The low 32 bits of each field's value hash, in layout order.
    pub fields: Vec<u32>,
}

impl Fingerprint {
    /// The fingerprint of values given as `(tag, value hash)` in ascending tag order under
    /// `layout` (whose tags they must be).
    pub fn from_hashes(layout: Arc<Layout>, hashes: &[(u32, u64)]) -> Fingerprint {
        debug_assert_eq!(
            hashes.iter().map(|h| h.0).collect::<Vec<_>>(),
            layout.tags()
        );
        let mut bytes = Vec::with_capacity(hashes.len() * 12);
        for (tag, hash) in hashes {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&hash.to_le_bytes());
        }
        Fingerprint {
            record: xxh3_64(&bytes),
            layout,
            fields: hashes.iter().map(|(_, h)| *h as u32).collect(),
        }
    }

    /// The fingerprint of `values` (contract name → value), as stored by pollbus before
    /// fingerprints: the conversion of old snapshots.
    pub fn of_values<'a>(values: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Fingerprint {
        let mut fields: Vec<(u32, &str, u64)> = values
            .into_iter()
            .map(|(name, v)| (name_tag(name), name, value_hash(v)))
            .collect();
        fields.sort_unstable_by_key(|h| h.0);
        let layout = Arc::new(Layout::named(
            fields.iter().map(|f| (f.0, f.1.to_string())).collect(),
        ));
        let hashes: Vec<(u32, u64)> = fields.iter().map(|f| (f.0, f.2)).collect();
        Fingerprint::from_hashes(layout, &hashes)
    }

    /// The field fingerprint under `tag`, if this record has one.
    pub fn field(&self, tag: u32) -> Option<u32> {
        self.layout
            .tags()
            .binary_search(&tag)
            .ok()
            .map(|i| self.fields[i])
    }
}

/// The first byte of a stored fingerprint: its format.
const FORMAT: u8 = 1;

/// Why stored fingerprint bytes cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not this format, or cut short.
    #[error("stored fingerprint is not format {FORMAT} or is cut short ({0} bytes)")]
    Malformed(usize),
    /// The layout it names is not known to the store.
    #[error("stored fingerprint names layout {0:08x}, which the store does not hold")]
    UnknownLayout(u32),
    /// Its field count does not match its layout.
    #[error("stored fingerprint has {found} fields, its layout {layout:08x} has {expected}")]
    FieldCount {
        /// The layout id.
        layout: u32,
        /// Fields the layout names.
        expected: usize,
        /// Fields found.
        found: usize,
    },
}

/// A snapshot's fingerprint and revision as a store keeps them:
/// `format (1) ‖ flags (1: bit 0 = revision follows) ‖ layout id (u32 LE) ‖ record (u64 LE) ‖
/// [revision (u64 LE)] ‖ field fingerprints (u32 LE each, layout order)` — 14 bytes plus 4 per
/// field (plus 8 with a revision). The layout's tags are stored once elsewhere.
pub fn encode(fingerprint: &Fingerprint, revision: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + fingerprint.fields.len() * 4);
    out.push(FORMAT);
    out.push(u8::from(revision.is_some()));
    out.extend_from_slice(&fingerprint.layout.id().to_le_bytes());
    out.extend_from_slice(&fingerprint.record.to_le_bytes());
    if let Some(r) = revision {
        out.extend_from_slice(&r.to_le_bytes());
    }
    for f in &fingerprint.fields {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

/// The layout id stored bytes name (to look the layout up before [`decode`]).
pub fn stored_layout(bytes: &[u8]) -> Result<u32, DecodeError> {
    if bytes.len() < 14 || bytes[0] != FORMAT {
        return Err(DecodeError::Malformed(bytes.len()));
    }
    Ok(u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")))
}

/// Reads [`encode`]'s bytes back, with `layout` the layout they name.
pub fn decode(
    bytes: &[u8],
    layout: Arc<Layout>,
) -> Result<(Fingerprint, Option<u64>), DecodeError> {
    let id = stored_layout(bytes)?;
    debug_assert_eq!(id, layout.id());
    let record = u64::from_le_bytes(bytes[6..14].try_into().expect("8 bytes"));
    let (revision, rest) = if bytes[1] & 1 == 1 {
        if bytes.len() < 22 {
            return Err(DecodeError::Malformed(bytes.len()));
        }
        (
            Some(u64::from_le_bytes(
                bytes[14..22].try_into().expect("8 bytes"),
            )),
            &bytes[22..],
        )
    } else {
        (None, &bytes[14..])
    };
    if !rest.len().is_multiple_of(4) || rest.len() / 4 != layout.tags().len() {
        return Err(DecodeError::FieldCount {
            layout: id,
            expected: layout.tags().len(),
            found: rest.len() / 4,
        });
    }
    let fields = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok((
        Fingerprint {
            record,
            layout,
            fields,
        },
        revision,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fingerprint_of(values: &Value) -> Fingerprint {
        Fingerprint::of_values(
            values
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v)),
        )
    }

    /// The canonical forms, pinned: changing any of these bytes changes every stored
    /// fingerprint and makes every record look changed once. Do not. The expected values were
    /// computed apart from this code, from the definition in the module documentation, with
    /// the Python `xxhash` package (3.x, `xxh3_64_intdigest`).
    #[test]
    fn the_fingerprint_of_a_known_record_is_pinned() {
        let record = json!({
            "Name": "Strøm \"q\"",
            "Count": 12345678901234567890u64,
            "Ratio": 2.5,
            "Gone": null,
            "Active": true,
            "Ref": {"value": "abc", "link": "https://x/y"},
        });
        let fp = fingerprint_of(&record);
        assert_eq!(name_tag("Name"), 0x6ed3_662f);
        assert_eq!(value_hash(&json!("Strøm \"q\"")), 0x6e2c_49eb_a618_7ca6);
        assert_eq!(fp.record, 0xeec0_3115_d684_e2bd);
        assert_eq!(fp.layout.id(), 0xd34a_a1a3);
        assert_eq!(
            hex::encode(encode(&fp, Some(3))),
            "0101a3a14ad3bde284d61531c0ee0300000000000000\
             a67c18a6d077d9eb03676f82e4a0badc75dd06b8fcf7d6c4"
        );
    }

    #[test]
    fn canonical_forms_follow_json_value_equality() {
        // key order inside objects does not matter; number spelling does as JSON values do
        assert_eq!(
            value_hash(&json!({"a": 1, "b": [1, "x"]})),
            value_hash(&serde_json::from_str(r#"{"b":[1,"x"],"a":1}"#).unwrap())
        );
        assert_ne!(value_hash(&json!(1)), value_hash(&json!(1.0)));
        assert_eq!(
            value_hash(&serde_json::from_str("2.50").unwrap()),
            value_hash(&json!(2.5))
        );
        // kinds are apart: "1" is not 1, "null" is not null, "true" is not true
        assert_ne!(value_hash(&json!("1")), value_hash(&json!(1)));
        assert_ne!(value_hash(&json!("null")), value_hash(&Value::Null));
        assert_ne!(value_hash(&json!("true")), value_hash(&json!(true)));
        assert_ne!(value_hash(&json!("")), value_hash(&Value::Null));
        assert_ne!(value_hash(&json!([])), value_hash(&json!({})));
        assert_eq!(missing_hash(), value_hash(&Value::Null));
    }

    #[test]
    fn stored_bytes_round_trip_and_bad_bytes_are_named() {
        let values = json!({"A": "x", "B": 2});
        let fp = fingerprint_of(&values);
        for revision in [None, Some(u64::MAX)] {
            let bytes = encode(&fp, revision);
            assert_eq!(bytes.len(), 14 + 8 * usize::from(revision.is_some()) + 8);
            assert_eq!(stored_layout(&bytes).unwrap(), fp.layout.id());
            let back = decode(&bytes, fp.layout.clone()).unwrap();
            assert_eq!(back, (fp.clone(), revision));
        }
        assert_eq!(
            decode(b"{\"A\":1}", fp.layout.clone()).unwrap_err(),
            DecodeError::Malformed(7)
        );
        let mut short = encode(&fp, None);
        short.truncate(18);
        assert!(matches!(
            decode(&short, fp.layout.clone()).unwrap_err(),
            DecodeError::FieldCount {
                expected: 2,
                found: 1,
                ..
            }
        ));
        let layout = Layout::from_bytes(&fp.layout.to_bytes()).unwrap();
        assert_eq!(&layout, fp.layout.as_ref());
        assert_eq!(Layout::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn a_field_is_found_by_its_tag() {
        let values = json!({"A": "x", "B": 2});
        let fp = fingerprint_of(&values);
        assert_eq!(
            fp.field(name_tag("A")),
            Some(value_hash(&json!("x")) as u32)
        );
        assert_eq!(fp.field(name_tag("C")), None);
    }
}
