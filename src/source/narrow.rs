//! Reading a page keeping only the record keys a resource uses.
//!
//! Vendors such as Revel, Concur or a generic REST API return every column of a record, often
//! a hundred, while a resource tracks a few. Building a `serde_json::Value` of every column
//! costs an allocation per key and per string; most of a page's parse time. [`parse_page`]
//! walks the body with serde once: outside the records array everything is kept (paging
//! metadata), and in each record only the top-level keys in [`RecordKeys`] become values;
//! the others are skipped unread (`IgnoredAny`: scanned, not decoded, not allocated).
//!
//! Whatever this parser refuses (a record that is not an object, JSON serde_json refuses), the
//! caller reads the page the ordinary way, which reports the problem as before.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The top-level record keys a resource reads: the roots of its id, dates, class, revision,
/// tracked fields and on-behalf-of paths, and each of those paths whole (a top-level key may
/// itself contain dots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordKeys(Option<HashSet<String>>);

impl RecordKeys {
    /// Every key: whole records (`pollbus check --probe --fields`).
    pub fn all() -> RecordKeys {
        RecordKeys(None)
    }

    /// Whether every key is kept.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// The keys of these dotted paths.
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a crate::record::FieldPath>) -> RecordKeys {
        let mut keys = HashSet::new();
        for p in paths {
            keys.insert(p.root().to_string());
            keys.insert(p.as_str().to_string());
        }
        RecordKeys(Some(keys))
    }

    /// Whether records keep `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.0.as_ref().is_none_or(|keys| keys.contains(key))
    }
}

/// The body without its records array (left empty) and the records at JSON `pointer`, each
/// with only the keys in `keep`; `None` when this parser cannot read the page.
pub fn parse_page(body: &[u8], pointer: &str, keep: &RecordKeys) -> Option<(Value, Vec<Value>)> {
    if keep.is_all() {
        return None; // the ordinary reader builds whole records
    }
    let path: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut records = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let rest = BodySeed {
        path: &path,
        keep,
        records: &mut records,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    Some((rest, records?))
}

/// The body (or a part of it) on the way to the records.
struct BodySeed<'a> {
    path: &'a [String],
    keep: &'a RecordKeys,
    records: &'a mut Option<Vec<Value>>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.path.split_first() {
            None => {
                let records = d.deserialize_seq(RecordsVisitor { keep: self.keep })?;
                *self.records = Some(records);
                Ok(Value::Array(Vec::new()))
            }
            Some((first, rest)) => d.deserialize_map(ObjectVisitor {
                first,
                rest,
                keep: self.keep,
                records: self.records,
            }),
        }
    }
}

/// An object on the path: the member named `first` leads on, the others are kept whole.
struct ObjectVisitor<'a> {
    first: &'a str,
    rest: &'a [String],
    keep: &'a RecordKeys,
    records: &'a mut Option<Vec<Value>>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object with {:?}", self.first)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.first && self.records.is_none() {
                let inner = map.next_value_seed(BodySeed {
                    path: self.rest,
                    keep: self.keep,
                    records: &mut *self.records,
                })?;
                out.insert(key, inner);
            } else {
                out.insert(key, map.next_value()?);
            }
        }
        Ok(Value::Object(out))
    }
}

/// The records array.
struct RecordsVisitor<'a> {
    keep: &'a RecordKeys,
}

impl<'de> Visitor<'de> for RecordsVisitor<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(10_000));
        while let Some(record) = seq.next_element_seed(RecordSeed { keep: self.keep })? {
            out.push(record);
        }
        Ok(out)
    }
}

/// One record: an object, of which only the kept keys are read.
struct RecordSeed<'a> {
    keep: &'a RecordKeys,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if self.keep.contains(key.as_str()) {
                out.insert(key.into_string(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
}

/// A record key, borrowed from the body when it has no escapes (no allocation for the keys
/// that are skipped).
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_string(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FieldPath;
    use serde_json::json;

    fn keys(paths: &[&str]) -> RecordKeys {
        let paths: Vec<FieldPath> = paths.iter().map(|p| FieldPath::parse(p).unwrap()).collect();
        RecordKeys::of(&paths)
    }

    #[test]
    fn records_keep_only_the_keys_in_use_and_the_rest_of_the_body_stays() {
        let body = br#"{"meta": {"next": "/x?offset=2", "total": 9},
            "objects": [
              {"id": 1, "updated": "u1", "address": {"city": "Bod\u00f8", "zip": "8000"}, "big": [1, 2, {"x": "y"}], "n\u0061me": "esc", "a.b": 5},
              {"id": 2, "updated": "u2", "other": null}
            ]}"#;
        let (rest, records) = parse_page(
            body,
            "/objects",
            &keys(&["id", "updated", "address.city", "name", "a.b"]),
        )
        .unwrap();
        assert_eq!(
            rest,
            json!({"meta": {"next": "/x?offset=2", "total": 9}, "objects": []})
        );
        assert_eq!(
            records,
            [
                json!({"id": 1, "updated": "u1", "address": {"city": "Bodø", "zip": "8000"}, "name": "esc", "a.b": 5}),
                json!({"id": 2, "updated": "u2"}),
            ]
        );
        // a top-level array
        let (_, records) = parse_page(br#"[{"id": 1, "x": 2}]"#, "", &keys(&["id"])).unwrap();
        assert_eq!(records, [json!({"id": 1})]);
        // whole records (check --probe --fields) are left to the ordinary reader
        assert!(RecordKeys::all().contains("anything"));
        assert_eq!(parse_page(br#"[{"id": 1}]"#, "", &RecordKeys::all()), None);
    }

    #[test]
    fn what_this_parser_cannot_read_is_left_to_the_ordinary_one() {
        let k = keys(&["id"]);
        assert_eq!(parse_page(b"<html>", "/objects", &k), None);
        assert_eq!(parse_page(br#"{"objects": 5}"#, "/objects", &k), None);
        assert_eq!(parse_page(br#"{"other": []}"#, "/objects", &k), None);
        assert_eq!(
            parse_page(br#"{"objects": [1, {"id": 2}]}"#, "/objects", &k),
            None
        );
        assert_eq!(
            parse_page(br#"{"objects": []} trailing"#, "/objects", &k),
            None
        );
        // a lone surrogate in a kept value: refused here, so the ordinary reader makes that
        // record alone a stand-in (`lenient_page`)
        assert_eq!(
            parse_page(br#"{"objects": [{"id": "\ud800"}]}"#, "/objects", &k),
            None
        );
        // in a skipped value it is never decoded: the record is read (the ordinary parser
        // would have lost it)
        assert_eq!(
            parse_page(
                br#"{"objects": [{"id": 1, "x": "\ud800"}]}"#,
                "/objects",
                &k
            )
            .map(|(_, r)| r),
            Some(vec![json!({"id": 1})])
        );
    }
}
