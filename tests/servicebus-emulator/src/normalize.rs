//! Rewrites the encodings a client may choose into the one form `fe2o3-amqp-types` decodes.
//!
//! `fe2o3-amqp-types` already accepts every *encoding* of a field's declared type (uint as
//! `0x43`/`0x52`/`0x70`, list0/list8/list32, symbolic or numeric descriptors, one symbol where a
//! `multiple="true"` field allows an array). It refuses values of a neighbouring *type* that
//! clients send and Service Bus accepts:
//!
//! | client sends                                   | example                                   | rewritten to        |
//! |------------------------------------------------|-------------------------------------------|---------------------|
//! | string keys in a `fields` map                  | JS SDK's rejected `info` `DeadLetterReason` | symbol keys       |
//! | string keys in a filter set                    | `"com.microsoft:session-filter"`          | symbol keys         |
//! | string where a symbol is declared              | error condition, expiry policy            | symbol              |
//! | strings, or a list, in a `multiple` symbol field | capabilities, outcomes, locales        | array of symbols    |
//! | another integer type where uint/ushort/ubyte/ulong is declared | handle as ulong, window as int | the declared type (if it fits) |
//! | symbol where a string is declared              | address, container id                     | string              |
//! | integer 0/1 where a boolean is declared        | `settled` as ubyte                         | boolean            |
//!
//! The rewrite only runs after the strict decode failed, so well-formed frames pay nothing.

use serde_amqp::{described::Described, descriptor::Descriptor, primitives::Array, Value};

/// What a field of a described list holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Str,
    Sym,
    Syms,
    Ubyte,
    Ushort,
    Uint,
    Ulong,
    Bool,
    /// A `fields` map or filter set: symbol keys, values as sent.
    SymKeyMap,
    /// A described value whose own schema is looked up by its descriptor.
    Nested,
    /// Left as sent.
    Any,
}

use Kind::*;

const OPEN: &[Kind] = &[
    Str, Str, Uint, Ushort, Uint, Syms, Syms, Syms, Syms, SymKeyMap,
];
const BEGIN: &[Kind] = &[Ushort, Uint, Uint, Uint, Uint, Syms, Syms, SymKeyMap];
const ATTACH: &[Kind] = &[
    Str, Uint, Bool, Ubyte, Ubyte, Nested, Nested, Any, Bool, Uint, Ulong, Syms, Syms, SymKeyMap,
];
const FLOW: &[Kind] = &[
    Uint, Uint, Uint, Uint, Uint, Uint, Uint, Uint, Bool, Bool, SymKeyMap,
];
const TRANSFER: &[Kind] = &[
    Uint, Uint, Any, Uint, Bool, Bool, Ubyte, Nested, Bool, Bool, Bool,
];
const DISPOSITION: &[Kind] = &[Bool, Uint, Uint, Bool, Nested, Bool];
const DETACH: &[Kind] = &[Uint, Bool, Nested];
const END_OR_CLOSE: &[Kind] = &[Nested];
const ERROR: &[Kind] = &[Sym, Str, SymKeyMap];
const RECEIVED: &[Kind] = &[Uint, Ulong];
const REJECTED: &[Kind] = &[Nested];
const MODIFIED: &[Kind] = &[Bool, Bool, SymKeyMap];
const SOURCE: &[Kind] = &[
    Str, Uint, Sym, Uint, Bool, SymKeyMap, Sym, SymKeyMap, Nested, Syms, Syms,
];
const TARGET: &[Kind] = &[Str, Uint, Sym, Uint, Bool, SymKeyMap, Syms];
const HEADER: &[Kind] = &[Bool, Ubyte, Uint, Bool, Uint];
const PROPERTIES: &[Kind] = &[
    Any, Any, Str, Str, Str, Any, Sym, Sym, Any, Any, Str, Uint, Str,
];

/// The numeric code of a descriptor given by code or by its symbolic name (AMQP 1.0 spec names).
pub fn descriptor_number(descriptor: &Descriptor) -> Option<u64> {
    match descriptor {
        Descriptor::Code(c) => Some(*c),
        Descriptor::Name(name) => code_of_name(name.as_str()),
    }
}

/// Maps a symbolic descriptor (`amqp:open:list`, …) to its numeric code.
pub fn code_of_name(name: &str) -> Option<u64> {
    Some(match name {
        "amqp:open:list" => 0x10,
        "amqp:begin:list" => 0x11,
        "amqp:attach:list" => 0x12,
        "amqp:flow:list" => 0x13,
        "amqp:transfer:list" => 0x14,
        "amqp:disposition:list" => 0x15,
        "amqp:detach:list" => 0x16,
        "amqp:end:list" => 0x17,
        "amqp:close:list" => 0x18,
        "amqp:error:list" => 0x1d,
        "amqp:received:list" => 0x23,
        "amqp:accepted:list" => 0x24,
        "amqp:rejected:list" => 0x25,
        "amqp:released:list" => 0x26,
        "amqp:modified:list" => 0x27,
        "amqp:source:list" => 0x28,
        "amqp:target:list" => 0x29,
        "amqp:delete-on-close:list" => 0x2b,
        "amqp:delete-on-no-links:list" => 0x2c,
        "amqp:delete-on-no-messages:list" => 0x2d,
        "amqp:delete-on-no-links-or-messages:list" => 0x2e,
        "amqp:header:list" => 0x70,
        "amqp:delivery-annotations:map" => 0x71,
        "amqp:message-annotations:map" => 0x72,
        "amqp:properties:list" => 0x73,
        "amqp:application-properties:map" => 0x74,
        "amqp:data:binary" => 0x75,
        "amqp:amqp-sequence:list" => 0x76,
        "amqp:amqp-value:*" => 0x77,
        "amqp:footer:map" => 0x78,
        _ => return None,
    })
}

fn schema(code: u64) -> Option<&'static [Kind]> {
    Some(match code {
        0x10 => OPEN,
        0x11 => BEGIN,
        0x12 => ATTACH,
        0x13 => FLOW,
        0x14 => TRANSFER,
        0x15 => DISPOSITION,
        0x16 => DETACH,
        0x17 | 0x18 => END_OR_CLOSE,
        0x1d => ERROR,
        0x23 => RECEIVED,
        0x24 | 0x26 => &[],
        0x25 => REJECTED,
        0x27 => MODIFIED,
        0x28 => SOURCE,
        0x29 => TARGET,
        0x70 => HEADER,
        0x73 => PROPERTIES,
        _ => return None,
    })
}

/// Rewrites a described value (a performative, outcome, terminus, error, header or properties
/// section) into the canonical form; values it has no schema for are returned unchanged.
pub fn normalize(value: Value) -> Value {
    let Value::Described(described) = value else {
        return value;
    };
    let Described { descriptor, value } = *described;
    let fields = descriptor_number(&descriptor).and_then(schema);
    let value = match (fields, value) {
        (Some(kinds), Value::List(items)) => Value::List(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match kinds.get(i) {
                    Some(kind) => field(*kind, v),
                    None => v,
                })
                .collect(),
        ),
        (_, other) => other,
    };
    Value::Described(Box::new(Described { descriptor, value }))
}

fn field(kind: Kind, v: Value) -> Value {
    if matches!(v, Value::Null) {
        return v;
    }
    match kind {
        Str => match v {
            Value::Symbol(s) => Value::String(s.as_str().to_string()),
            other => other,
        },
        Sym => to_symbol(v),
        Syms => match v {
            Value::List(items) => Value::Array(Array(items.into_iter().map(to_symbol).collect())),
            Value::Array(Array(items)) => {
                Value::Array(Array(items.into_iter().map(to_symbol).collect()))
            }
            other => to_symbol(other),
        },
        Ubyte => integer(v, |n| u8::try_from(n).ok().map(Value::Ubyte)),
        Ushort => integer(v, |n| u16::try_from(n).ok().map(Value::Ushort)),
        Uint => integer(v, |n| u32::try_from(n).ok().map(Value::Uint)),
        Ulong => integer(v, |n| u64::try_from(n).ok().map(Value::Ulong)),
        Bool => match v {
            Value::Ubyte(n @ (0 | 1)) => Value::Bool(n == 1),
            Value::Byte(n @ (0 | 1)) => Value::Bool(n == 1),
            other => other,
        },
        SymKeyMap => match v {
            Value::Map(map) => {
                let mut out = serde_amqp::primitives::OrderedMap::new();
                for (k, v) in map.into_iter() {
                    out.insert(to_symbol(k), v);
                }
                Value::Map(out)
            }
            other => other,
        },
        Nested => normalize(v),
        Any => v,
    }
}

fn to_symbol(v: Value) -> Value {
    match v {
        Value::String(s) => Value::Symbol(s.into()),
        other => other,
    }
}

/// Converts any integer value that fits into the declared unsigned type; others stay as sent.
fn integer(v: Value, into: impl Fn(i128) -> Option<Value>) -> Value {
    let n: i128 = match &v {
        Value::Ubyte(n) => *n as i128,
        Value::Ushort(n) => *n as i128,
        Value::Uint(n) => *n as i128,
        Value::Ulong(n) => *n as i128,
        Value::Byte(n) => *n as i128,
        Value::Short(n) => *n as i128,
        Value::Int(n) => *n as i128,
        Value::Long(n) => *n as i128,
        _ => return v,
    };
    into(n).unwrap_or(v)
}

/// Reads field `index` of a described list as an unsigned integer of any width.
pub fn list_uint(value: &Value, index: usize) -> Option<u32> {
    let Value::Described(d) = value else {
        return None;
    };
    let Value::List(items) = &d.value else {
        return None;
    };
    match field(Uint, items.get(index)?.clone()) {
        Value::Uint(n) => Some(n),
        _ => None,
    }
}

/// Reads field `index` of a described list as a string or symbol.
pub fn list_str(value: &Value, index: usize) -> Option<String> {
    let Value::Described(d) = value else {
        return None;
    };
    let Value::List(items) = &d.value else {
        return None;
    };
    match items.get(index)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Reads field `index` of a described list as a boolean.
pub fn list_bool(value: &Value, index: usize) -> Option<bool> {
    let Value::Described(d) = value else {
        return None;
    };
    let Value::List(items) = &d.value else {
        return None;
    };
    match field(Bool, items.get(index)?.clone()) {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}
