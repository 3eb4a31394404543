//! Mesos's JSON mapping of its protobuf messages.
//!
//! This is not proto3's canonical JSON. Mesos (stout's `jsonify` and
//! `protobuf::parse`) writes proto field names, enums by name, `bytes` as
//! padded standard Base64, and 64-bit integers as plain JSON numbers. It also
//! writes unset optional fields that declare a default (unless deprecated),
//! so `{"refuse_seconds":5.0}` appears for an empty `Filters`.
//!
//! Reading is lenient as Mesos is: unknown keys and `null` are ignored,
//! numbers may come as strings, doubles accept `"Infinity"`, and an unknown
//! enum name in an optional field is dropped. Missing `required` fields are
//! an error naming each of them.
//!
//! Both directions walk the message through its descriptor (prost-reflect),
//! so every message type of the Mesos protos gets the mapping for free.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use prost::Message as _;
use prost_reflect::{
    Cardinality, DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value,
};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde_json::Value as Json;

use crate::codec::DecodeError;

/// JSON that does not fit the expected message.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("failed to parse JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// A value of the wrong shape for its field.
    #[error("failed to convert JSON into {message} protobuf: {path}: {problem}")]
    Field {
        /// Full name of the message being decoded.
        message: String,
        /// Dotted path of the offending field.
        path: String,
        /// What was wrong.
        problem: String,
    },
    /// Required fields absent.
    #[error("failed to convert JSON into {message} protobuf: missing required fields: {}", .fields.join(", "))]
    MissingRequired {
        /// Full name of the message being decoded.
        message: String,
        /// Dotted paths of the missing fields.
        fields: Vec<String>,
    },
}

/// Encodes a message as Mesos JSON bytes.
pub fn to_vec<M: ReflectMessage>(msg: &M) -> Vec<u8> {
    let dynamic = msg.transcode_to_dynamic();
    // Serialising a DynamicMessage walk into a Vec cannot fail: every value is
    // representable and the writer is infallible.
    serde_json::to_vec(&MesosJson(&dynamic)).unwrap_or_default()
}

/// Encodes a message as a Mesos JSON value.
pub fn to_value<M: ReflectMessage>(msg: &M) -> Json {
    serde_json::to_value(MesosJson(&msg.transcode_to_dynamic())).unwrap_or(Json::Null)
}

/// Decodes Mesos JSON into a message, checking required fields.
pub fn from_slice<M: ReflectMessage + Default>(body: &[u8]) -> Result<M, JsonError> {
    let json: Json = serde_json::from_slice(body)?;
    from_value(&json)
}

/// Decodes a parsed Mesos JSON value into a message, checking required fields.
pub fn from_value<M: ReflectMessage + Default>(json: &Json) -> Result<M, JsonError> {
    let desc = M::default().descriptor();
    let mut dynamic = DynamicMessage::new(desc.clone());
    merge_object(&mut dynamic, json, "").map_err(|(path, problem)| JsonError::Field {
        message: desc.full_name().to_owned(),
        path: if path.is_empty() { "(root)".into() } else { path },
        problem,
    })?;
    let missing = missing_required(&dynamic);
    if !missing.is_empty() {
        return Err(JsonError::MissingRequired {
            message: desc.full_name().to_owned(),
            fields: missing,
        });
    }
    dynamic.transcode_to::<M>().map_err(|e| JsonError::Field {
        message: desc.full_name().to_owned(),
        path: "(root)".into(),
        problem: e.to_string(),
    })
}

/// Decodes protobuf bytes, refusing messages that lack `required` fields
/// (prost alone would silently default them).
pub(crate) fn decode_protobuf_checked<M: ReflectMessage + Default>(
    body: &[u8],
) -> Result<M, DecodeError> {
    // Presence must be read off the wire bytes: prost's structs hold required
    // fields without presence, and re-encoding them would always set them.
    let mut dynamic = DynamicMessage::decode(M::default().descriptor(), body)?;
    let dropped = drop_unknown_enums(&mut dynamic);
    let missing = missing_required(&dynamic);
    if !missing.is_empty() {
        return Err(DecodeError::MissingRequired(missing));
    }
    if dropped {
        return Ok(dynamic.transcode_to()?);
    }
    Ok(M::decode(body)?)
}

/// Drops enum numbers the descriptor does not name, as Mesos's proto2 parser keeps
/// them aside as unknown fields: an optional field reads as unset (a required one
/// then as missing), a repeated field or a map loses the value. prost would keep the
/// number, and the JSON written from it later (a number where Mesos and
/// [`from_slice`] expect an enum name) would not read back. Returns whether anything
/// was dropped.
fn drop_unknown_enums(msg: &mut DynamicMessage) -> bool {
    let mut dropped = false;
    for field in msg.descriptor().fields() {
        if !msg.has_field(&field) {
            continue;
        }
        let value_kind = match field.kind() {
            Kind::Message(entry) if field.is_map() => entry.map_entry_value_field().kind(),
            kind => kind,
        };
        let known = |v: &Value| match (v, &value_kind) {
            (&Value::EnumNumber(n), Kind::Enum(e)) => e.get_value(n).is_some(),
            _ => true,
        };
        let clear = match msg.get_field_mut(&field) {
            v @ Value::EnumNumber(_) => !known(v),
            Value::Message(m) => {
                dropped |= drop_unknown_enums(m);
                false
            }
            Value::List(items) => {
                let before = items.len();
                items.retain(|v| known(v));
                dropped |= items.len() != before;
                for item in items.iter_mut() {
                    if let Value::Message(m) = item {
                        dropped |= drop_unknown_enums(m);
                    }
                }
                false
            }
            Value::Map(entries) => {
                let before = entries.len();
                entries.retain(|_, v| known(v));
                dropped |= entries.len() != before;
                for item in entries.values_mut() {
                    if let Value::Message(m) = item {
                        dropped |= drop_unknown_enums(m);
                    }
                }
                false
            }
            _ => false,
        };
        if clear {
            msg.clear_field(&field);
            dropped = true;
        }
    }
    dropped
}

/// Encodes protobuf as Mesos peers expect it. prost leaves out a map value
/// equal to its default, which drops `required` fields inside it (e.g.
/// `limits {cpus: 0.0}`); messages whose type can hold such a map are
/// encoded through a dynamic copy with those fields set explicitly.
pub(crate) fn encode_protobuf<M: ReflectMessage>(msg: &M) -> Vec<u8> {
    let desc = msg.descriptor();
    let bytes = msg.encode_to_vec();
    // The dynamic copy costs a hundred times the encoding: it is made only when prost did
    // leave out a map value (a snapshot of ten thousand tasks without limits needs none).
    if !has_required_map_values(&desc) || !map_value_left_out(&bytes, &desc) {
        return bytes;
    }
    let mut dynamic = msg.transcode_to_dynamic();
    fill_required(&mut dynamic);
    dynamic.encode_to_vec()
}

/// Whether encoded `buf` (a `desc`) holds, at any depth, an entry of a map whose values are
/// messages with required fields that has no value: prost writes none for a default value.
/// Reads the wire format without decoding it; anything it cannot follow counts as "yes".
fn map_value_left_out(mut buf: &[u8], desc: &prost_reflect::MessageDescriptor) -> bool {
    use prost::encoding::decode_varint;
    while !buf.is_empty() {
        let Ok(key) = decode_varint(&mut buf) else { return true };
        let skip = match key & 7 {
            0 => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => return true,
            },
            1 => 8,
            5 => 4,
            2 => {
                let Some(len) = decode_varint(&mut buf).ok().and_then(|l| usize::try_from(l).ok())
                else {
                    return true;
                };
                if buf.len() < len {
                    return true;
                }
                let (body, rest) = buf.split_at(len);
                buf = rest;
                let number = u32::try_from(key >> 3).unwrap_or(0);
                if let Some(field) = desc.get_field(number)
                    && let Kind::Message(sub) = field.kind()
                {
                    let left_out = if field.is_map() {
                        map_entry_left_out(body, &sub)
                    } else {
                        has_required_map_values(&sub) && map_value_left_out(body, &sub)
                    };
                    if left_out {
                        return true;
                    }
                }
                0
            }
            _ => return true,
        };
        if buf.len() < skip {
            return true;
        }
        buf = &buf[skip..];
    }
    false
}

/// For one encoded map entry (`entry` is the map's entry type): whether its message value is
/// missing where one is needed, or holds such a map itself.
fn map_entry_left_out(entry: &[u8], desc: &prost_reflect::MessageDescriptor) -> bool {
    let value_field = desc.map_entry_value_field();
    let Kind::Message(value_type) = value_field.kind() else { return false };
    let required = value_type.fields().any(|f| f.cardinality() == Cardinality::Required);
    let mut buf = entry;
    let mut value = None;
    while !buf.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut buf) else { return true };
        let Some(len) = (match key & 7 {
            0 => prost::encoding::decode_varint(&mut buf).ok().map(|_| 0),
            2 => {
                prost::encoding::decode_varint(&mut buf).ok().and_then(|l| usize::try_from(l).ok())
            }
            _ => None,
        }) else {
            return true;
        };
        if buf.len() < len {
            return true;
        }
        if key >> 3 == u64::from(value_field.number()) {
            value = Some(&buf[..len]);
        }
        buf = &buf[len..];
    }
    match value {
        None => required,
        Some(v) => has_required_map_values(&value_type) && map_value_left_out(v, &value_type),
    }
}

/// Whether a message type can contain (at any depth) a map whose values are
/// messages with required fields. Cached per type.
fn has_required_map_values(desc: &prost_reflect::MessageDescriptor) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    static CACHE: LazyLock<RwLock<HashMap<String, bool>>> = LazyLock::new(Default::default);
    if let Some(known) = CACHE.read().ok().and_then(|c| c.get(desc.full_name()).copied()) {
        return known;
    }
    fn walk(desc: &prost_reflect::MessageDescriptor, seen: &mut Vec<String>) -> bool {
        if seen.iter().any(|s| s == desc.full_name()) {
            return false;
        }
        seen.push(desc.full_name().to_owned());
        desc.fields().any(|f| match f.kind() {
            Kind::Message(m) if f.is_map() => {
                let value = m.map_entry_value_field();
                match value.kind() {
                    Kind::Message(v) => {
                        v.fields().any(|x| x.cardinality() == Cardinality::Required)
                            || walk(&v, seen)
                    }
                    _ => false,
                }
            }
            Kind::Message(m) => walk(&m, seen),
            _ => false,
        })
    }
    let answer = walk(desc, &mut Vec::new());
    if let Ok(mut c) = CACHE.write() {
        c.insert(desc.full_name().to_owned(), answer);
    }
    answer
}

/// Sets every missing required scalar field (at any depth) to its default.
fn fill_required(msg: &mut DynamicMessage) {
    let desc = msg.descriptor();
    for field in desc.fields() {
        if field.cardinality() == Cardinality::Required
            && !msg.has_field(&field)
            && !matches!(field.kind(), Kind::Message(_))
        {
            msg.set_field(&field, field.default_value());
            continue;
        }
        if !msg.has_field(&field) || !matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        match msg.get_field_mut(&field) {
            Value::Message(m) => fill_required(m),
            Value::List(items) => items.iter_mut().for_each(|i| {
                if let Value::Message(m) = i {
                    fill_required(m)
                }
            }),
            Value::Map(entries) => entries.values_mut().for_each(|i| {
                if let Value::Message(m) = i {
                    fill_required(m)
                }
            }),
            _ => {}
        }
    }
}

/// Dotted paths of every `required` field missing in `msg` or in any message nested in it.
pub fn missing_required(msg: &DynamicMessage) -> Vec<String> {
    let mut out = Vec::new();
    collect_missing(msg, "", &mut out);
    out
}

fn collect_missing(msg: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for field in msg.descriptor().fields() {
        let path = join(prefix, field.name());
        if field.cardinality() == Cardinality::Required && !msg.has_field(&field) {
            out.push(path);
            continue;
        }
        if !msg.has_field(&field) || !matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        match &*msg.get_field(&field) {
            Value::Message(m) => collect_missing(m, &path, out),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        collect_missing(m, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let Value::Message(m) = item {
                        collect_missing(m, &format!("{path}[{}]", key_string(key)), out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

// === writing ===

struct MesosJson<'a>(&'a DynamicMessage);

fn is_deprecated(field: &FieldDescriptor) -> bool {
    field.field_descriptor_proto().options.as_ref().and_then(|o| o.deprecated).unwrap_or(false)
}

/// Whether an unset field is still written: optional with a declared
/// default (not deprecated), or required. Required fields can be missing
/// only where prost dropped a default value (a map entry's `Scalar{0.0}`);
/// writing them keeps the output valid for Mesos and for our own reader.
fn writes_default(field: &FieldDescriptor) -> bool {
    match field.cardinality() {
        Cardinality::Required => !matches!(field.kind(), Kind::Message(_)),
        Cardinality::Optional => {
            field.field_descriptor_proto().default_value.is_some() && !is_deprecated(field)
        }
        Cardinality::Repeated => false,
    }
}

impl serde::Serialize for MesosJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = self.0;
        let mut map = s.serialize_map(None)?;
        for field in msg.descriptor().fields() {
            let present = msg.has_field(&field);
            if !present && !writes_default(&field) {
                continue;
            }
            let value = msg.get_field(&field);
            match &*value {
                Value::List(items) if items.is_empty() => continue,
                Value::Map(entries) if entries.is_empty() => continue,
                _ => {}
            }
            map.serialize_entry(field.name(), &FieldJson { kind: field.kind(), value: &value })?;
        }
        map.end()
    }
}

struct FieldJson<'a> {
    kind: Kind,
    value: &'a Value,
}

impl serde::Serialize for FieldJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::I32(v) => s.serialize_i32(*v),
            Value::I64(v) => s.serialize_i64(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::F32(v) => serialize_float(f64::from(*v), s),
            Value::F64(v) => serialize_float(*v, s),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_str(&STANDARD.encode(v)),
            Value::EnumNumber(n) => match &self.kind {
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(v) => s.serialize_str(v.name()),
                    None => s.serialize_i32(*n),
                },
                _ => s.serialize_i32(*n),
            },
            Value::Message(m) => MesosJson(m).serialize(s),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&FieldJson { kind: self.kind.clone(), value: item })?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let Kind::Message(entry) = &self.kind else {
                    return Err(S::Error::custom("map field without an entry message"));
                };
                let value_kind = entry.map_entry_value_field().kind();
                // Sorted keys: deterministic output.
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (key, value) in sorted {
                    map.serialize_entry(
                        &key_string(key),
                        &FieldJson { kind: value_kind.clone(), value },
                    )?;
                }
                map.end()
            }
        }
    }
}

/// Finite doubles as JSON numbers (`15.0`), the others as Mesos reads them back.
fn serialize_float<S: serde::Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

fn key_string(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(v) => v.clone(),
    }
}

// === reading ===

/// `(path, problem)` of the first field that does not fit.
type FieldProblem = (String, String);

fn merge_object(msg: &mut DynamicMessage, json: &Json, path: &str) -> Result<(), FieldProblem> {
    let Json::Object(object) = json else {
        return Err((path.to_owned(), format!("expected a JSON object, found {}", kind_of(json))));
    };
    let desc = msg.descriptor();
    for (key, value) in object {
        let Some(field) = desc.get_field_by_name(key) else { continue };
        if value.is_null() {
            continue;
        }
        let field_path = join(path, key);
        if let Some(v) = parse_field(&field, value, &field_path)? {
            msg.set_field(&field, v);
        }
    }
    Ok(())
}

fn parse_field(
    field: &FieldDescriptor,
    json: &Json,
    path: &str,
) -> Result<Option<Value>, FieldProblem> {
    let kind = field.kind();
    if field.is_map() {
        let Json::Object(object) = json else {
            return Err((
                path.to_owned(),
                format!("expected a JSON object for a map, found {}", kind_of(json)),
            ));
        };
        let Kind::Message(entry) = &kind else {
            return Err((path.to_owned(), "map without entry type".into()));
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_field = entry.map_entry_value_field();
        let mut out = std::collections::HashMap::new();
        for (k, v) in object {
            let entry_path = format!("{path}[{k}]");
            let key = parse_map_key(&key_kind, k)
                .ok_or_else(|| (entry_path.clone(), "invalid map key".to_owned()))?;
            if let Some(value) = parse_single(&value_field, &value_field.kind(), v, &entry_path)? {
                out.insert(key, value);
            }
        }
        return Ok(Some(Value::Map(out)));
    }
    if field.is_list() {
        let Json::Array(items) = json else {
            return Err((
                path.to_owned(),
                format!("expected a JSON array, found {}", kind_of(json)),
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(v) = parse_single(field, &kind, item, &format!("{path}[{i}]"))? {
                out.push(v);
            }
        }
        return Ok(Some(Value::List(out)));
    }
    parse_single(field, &kind, json, path)
}

fn parse_single(
    field: &FieldDescriptor,
    kind: &Kind,
    json: &Json,
    path: &str,
) -> Result<Option<Value>, FieldProblem> {
    let bad = |what: &str| (path.to_owned(), format!("expected {what}, found {}", kind_of(json)));
    let value = match kind {
        Kind::Message(desc) => {
            let mut nested = DynamicMessage::new(desc.clone());
            merge_object(&mut nested, json, path)?;
            Value::Message(nested)
        }
        Kind::Enum(e) => {
            let Json::String(name) = json else { return Err(bad("an enum name")) };
            match e.get_value_by_name(name) {
                Some(v) => Value::EnumNumber(v.number()),
                // Mesos drops unknown names of optional fields; a required
                // one then shows up as missing.
                None if field.cardinality() != Cardinality::Required || field.is_list() => {
                    return Ok(None);
                }
                None => {
                    return Err((
                        path.to_owned(),
                        format!("unknown value '{name}' of enum {}", e.full_name()),
                    ));
                }
            }
        }
        Kind::Bool => match json {
            Json::Bool(b) => Value::Bool(*b),
            Json::String(s) if s == "true" => Value::Bool(true),
            Json::String(s) if s == "false" => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
        Kind::String => match json {
            Json::String(s) => Value::String(s.clone()),
            _ => return Err(bad("a string")),
        },
        Kind::Bytes => {
            let Json::String(s) = json else { return Err(bad("a base64 string")) };
            let decoded = STANDARD
                .decode(s)
                .or_else(|_| STANDARD_NO_PAD.decode(s))
                .map_err(|e| (path.to_owned(), format!("invalid base64: {e}")))?;
            Value::Bytes(decoded.into())
        }
        Kind::Double | Kind::Float => {
            let v = float_of(json).ok_or_else(|| bad("a number"))?;
            if matches!(kind, Kind::Float) { Value::F32(v as f32) } else { Value::F64(v) }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(int_of::<i32>(json).ok_or_else(|| bad("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(int_of::<i64>(json).ok_or_else(|| bad("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(int_of::<u32>(json).ok_or_else(|| bad("an unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(int_of::<u64>(json).ok_or_else(|| bad("an unsigned 64-bit integer"))?)
        }
    };
    Ok(Some(value))
}

fn parse_map_key(kind: &Kind, key: &str) -> Option<MapKey> {
    Some(match kind {
        Kind::String => MapKey::String(key.to_owned()),
        Kind::Bool => MapKey::Bool(key.parse().ok()?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(key.parse().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(key.parse().ok()?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(key.parse().ok()?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(key.parse().ok()?),
        _ => return None,
    })
}

fn float_of(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            s => s.trim().parse().ok(),
        },
        _ => None,
    }
}

fn int_of<T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr>(json: &Json) -> Option<T> {
    match json {
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                T::try_from(u).ok()
            } else if let Some(i) = n.as_i64() {
                T::try_from(i).ok()
            } else {
                // An integral double such as 5.0.
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15)
                    .then(|| T::try_from(f as i64).ok())
                    .flatten()
            }
        }
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn kind_of(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::scheduler::{Call, Event, call, event};
    use crate::v1::{self, Filters, FrameworkInfo, TaskStatus};
    use serde_json::json;

    #[test]
    fn only_a_left_out_map_value_takes_the_slow_path() {
        use crate::v1::{Task, TaskInfo, value::Scalar};
        let task = |limit: f64| Task {
            name: "t".into(),
            limits: [("cpus".to_owned(), Scalar { value: limit })].into(),
            ..Default::default()
        };
        let desc = Task::default().descriptor();
        assert!(!map_value_left_out(&task(1.5).encode_to_vec(), &desc));
        assert!(map_value_left_out(&task(0.0).encode_to_vec(), &desc), "prost drops Scalar{{0.0}}");
        assert!(!map_value_left_out(&Task::default().encode_to_vec(), &desc));
        // The fast path is prost's own encoding; the slow one puts the value back.
        assert_eq!(encode_protobuf(&task(1.5)), task(1.5).encode_to_vec());
        let fixed = encode_protobuf(&task(0.0));
        assert_ne!(fixed, task(0.0).encode_to_vec());
        assert!(decode_protobuf_checked::<Task>(&fixed).is_ok());
        // Another type holding such a map.
        let info = TaskInfo { limits: task(0.0).limits, ..Default::default() };
        assert!(map_value_left_out(&info.encode_to_vec(), &info.descriptor()));
        assert!(map_value_left_out(&[0xff], &desc), "what cannot be read counts as left out");
    }

    fn framework(user: &str, name: &str) -> FrameworkInfo {
        FrameworkInfo { user: user.into(), name: name.into(), ..Default::default() }
    }

    #[test]
    fn heartbeat_is_byte_exact() {
        let mut e = Event::default();
        e.set_type(event::Type::Heartbeat);
        assert_eq!(to_vec(&e), br#"{"type":"HEARTBEAT"}"#);
    }

    #[test]
    fn declared_defaults_are_written_but_deprecated_ones_are_not() {
        assert_eq!(to_value(&Filters::default()), json!({"refuse_seconds": 5.0}));
        let v = to_value(&framework("u", "n"));
        assert_eq!(v["failover_timeout"], json!(0.0));
        assert_eq!(v["checkpoint"], json!(false));
        assert!(
            v.get("role").is_none(),
            "deprecated role with default '*' must not be written: {v}"
        );
        assert!(v.get("capabilities").is_none(), "empty repeated fields are omitted: {v}");
    }

    #[test]
    fn enums_by_name_bytes_as_padded_base64_and_64_bit_numbers() {
        let mut status = TaskStatus {
            task_id: v1::TaskId { value: "t".into() },
            uuid: Some(vec![0xfb; 16]),
            unreachable_time: Some(v1::TimeInfo { nanoseconds: 1_700_000_000_123_456_789 }),
            ..Default::default()
        };
        status.set_state(v1::TaskState::TaskRunning);
        status.set_reason(v1::task_status::Reason::Reconciliation);
        let v = to_value(&status);
        assert_eq!(v["state"], json!("TASK_RUNNING"));
        assert_eq!(v["reason"], json!("REASON_RECONCILIATION"));
        assert_eq!(v["uuid"], json!("+/v7+/v7+/v7+/v7+/v7+w=="));
        assert_eq!(v["uuid"].as_str().map(str::len), Some(24));
        assert_eq!(v["unreachable_time"]["nanoseconds"], json!(1_700_000_000_123_456_789_i64));
    }

    #[test]
    fn subscribe_call_round_trips_with_the_docs_shape() {
        let body =
            br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"k8sm",
            "roles":["k8s"],"capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"}],
            "failover_timeout":604800.0,"checkpoint":true}}}"#;
        let call: Call = from_slice(body).unwrap();
        assert_eq!(call.r#type(), call::Type::Subscribe);
        let info = &call.subscribe.as_ref().unwrap().framework_info;
        assert_eq!(info.roles, ["k8s"]);
        assert_eq!(info.capabilities.len(), 2);
        assert_eq!(info.failover_timeout, Some(604_800.0));
        let again: Call = from_slice(&to_vec(&call)).unwrap();
        assert_eq!(again, call);
    }

    #[test]
    fn reading_is_lenient_like_mesos() {
        let call: Call = from_slice(
            br#"{"type":"DECLINE","unknown_key":[1,2],"framework_id":{"value":"f"},
                "decline":{"offer_ids":[{"value":"o1"}],"filters":{"refuse_seconds":"Infinity"}},
                "kill":null}"#,
        )
        .unwrap();
        let decline = call.decline.unwrap();
        assert_eq!(decline.offer_ids[0].value, "o1");
        assert_eq!(decline.filters.unwrap().refuse_seconds, Some(f64::INFINITY));
        assert!(call.kill.is_none());
        // Numbers as strings, enums unknown in optional fields dropped.
        let status: TaskStatus =
            from_slice(br#"{"task_id":{"value":"t"},"state":"TASK_FAILED","timestamp":"12.5","source":"SOURCE_NOWHERE"}"#)
                .unwrap();
        assert_eq!(status.timestamp, Some(12.5));
        assert_eq!(status.source, None);
    }

    #[test]
    fn missing_required_fields_are_named() {
        let err = from_slice::<Call>(
            br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"n"}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to convert JSON into mesos.v1.scheduler.Call protobuf: missing required fields: subscribe.framework_info.user"
        );
        // An unknown name in a required enum reads as missing, as in Mesos.
        let err = from_slice::<TaskStatus>(br#"{"task_id":{"value":"t"},"state":"TASK_SLEEPING"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("TASK_SLEEPING"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let err =
            from_slice::<Call>(br#"{"type":"DECLINE","decline":{"offer_ids":{"value":"o"}}}"#)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to convert JSON into mesos.v1.scheduler.Call protobuf: decline.offer_ids: expected a JSON array, found an object"
        );
        assert!(matches!(from_slice::<Call>(b"{not json"), Err(JsonError::Syntax(_))));
        assert!(
            from_slice::<Call>(b"[]").unwrap_err().to_string().contains("expected a JSON object")
        );
    }

    #[test]
    fn protobuf_decoding_checks_required_fields_too() {
        // Call{type: SUBSCRIBE, subscribe{framework_info{name:"n"}}}: no user.
        let body = [0x10, 0x01, 0x1a, 0x05, 0x0a, 0x03, 0x12, 0x01, b'n'];
        match decode_protobuf_checked::<Call>(&body) {
            Err(DecodeError::MissingRequired(fields)) => {
                assert_eq!(fields, ["subscribe.framework_info.user"])
            }
            other => panic!("expected missing required fields, got {other:?}"),
        }
        // The same call with user "u" and name "n" is complete.
        let ok = [0x10, 0x01, 0x1a, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'u', 0x12, 0x01, b'n'];
        assert!(decode_protobuf_checked::<Call>(&ok).is_ok());
    }

    #[test]
    fn protobuf_decoding_drops_enum_numbers_mesos_does_not_know() {
        // As a proto2 parser: an unknown number leaves an optional enum unset...
        let mut c = Call { r#type: Some(99), ..Default::default() };
        let mut info = framework("u", "n");
        info.capabilities = vec![v1::framework_info::Capability { r#type: Some(42) }];
        c.subscribe = Some(call::Subscribe { framework_info: info, ..Default::default() });
        let decoded = decode_protobuf_checked::<Call>(&c.encode_to_vec()).unwrap();
        assert_eq!(decoded.r#type, None);
        let capabilities = &decoded.subscribe.as_ref().unwrap().framework_info.capabilities;
        assert_eq!(capabilities, &[v1::framework_info::Capability { r#type: None }]);
        // ...so what the JSON writer makes of the message reads back.
        assert!(from_slice::<Call>(&to_vec(&decoded)).is_ok());
        // ...and a required one missing.
        let status = TaskStatus { state: 77, ..Default::default() };
        let e = Event {
            update: Some(event::Update { status }),
            r#type: Some(event::Type::Update as i32),
            ..Default::default()
        };
        match decode_protobuf_checked::<Event>(&e.encode_to_vec()) {
            Err(DecodeError::MissingRequired(fields)) => {
                assert_eq!(fields, ["update.status.state"])
            }
            other => panic!("expected a missing required state, got {other:?}"),
        }
    }

    #[test]
    fn maps_are_objects() {
        let mut info = framework("u", "n");
        info.offer_filters.insert("r".into(), v1::OfferFilters::default());
        let v = to_value(&info);
        assert_eq!(v["offer_filters"], json!({"r": {}}));
        let back: FrameworkInfo = from_value(&v).unwrap();
        assert_eq!(back.offer_filters.len(), 1);
    }
}
