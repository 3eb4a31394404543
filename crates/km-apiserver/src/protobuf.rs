//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), for every served kind,
//! their lists, `Status` and watch events.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown`: the object's `apiVersion` and
//! `kind`, and the object's own message as bytes. Objects are kept as Kubernetes JSON
//! everywhere else in the server, so this module converts between that JSON and the messages
//! by reflection over Kubernetes' own definitions (`proto/k8s`, compiled by `build.rs`). The
//! types whose JSON is not their message's field-by-field form are converted as Kubernetes'
//! JSON writes them: `Time` and `MicroTime` (RFC 3339), `Duration` (Go's `1h2m3s`), `Quantity`
//! (a string), `IntOrString` (a number or a string), `RawExtension` and `FieldsV1` (embedded
//! JSON). Two things the messages do not say come from `proto/k8s/json.txt`: Go writes
//! non-pointer fields even when they are zero, and where its JSON leaves them out
//! (`omitempty`) decoding leaves them out too, so a protobuf request means what the same
//! request in JSON means; and some fields are inline in JSON (a Volume's source, a Probe's
//! handler): their message's fields sit in the enclosing object.
//!
//! A watch in protobuf is a stream of frames, each a 4-byte big-endian length and a
//! `meta.v1.WatchEvent` whose object is an encoded body as above.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use base64::Engine as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::ReflectMessage as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind as FieldKind, MapKey, MessageDescriptor,
    Value as PValue,
};
use serde_json::{Map, Value};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a watch stream in protobuf.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

const MAGIC: &[u8; 4] = b"k8s\0";
const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/k8s.bin")).as_slice())
        .map_err(|e| e.to_string())
});

/// What Kubernetes' JSON does beyond the messages, per message full name.
#[derive(Default)]
struct JsonRules {
    /// Fields Go's JSON leaves out when zero.
    omit_zero: HashSet<&'static str>,
    /// Fields whose message's fields sit in this object's JSON.
    inline: Vec<&'static str>,
    /// Strategic-merge-patch strategy and merge key, by field.
    patch: HashMap<&'static str, (&'static str, Option<&'static str>)>,
    /// Server-side apply's list type (`atomic`, `set`, `map`) and map keys, by field.
    list: HashMap<&'static str, (&'static str, Vec<&'static str>)>,
    /// The whole message is atomic for server-side apply.
    atomic: bool,
    /// Fields that are atomic for server-side apply.
    atomic_fields: HashSet<&'static str>,
}

static JSON_RULES: LazyLock<HashMap<&'static str, JsonRules>> = LazyLock::new(|| {
    let mut rules: HashMap<&'static str, JsonRules> = HashMap::new();
    for line in include_str!("../../../proto/k8s/json.txt").lines() {
        let mut words = line.split_whitespace();
        let (Some(rule), Some(message)) = (words.next(), words.next()) else { continue };
        let entry = rules.entry(message).or_default();
        match rule {
            "omit-zero" => entry.omit_zero.extend(words),
            "inline" => entry.inline.extend(words),
            "patch" => {
                if let (Some(field), Some(strategy)) = (words.next(), words.next()) {
                    entry.patch.insert(field, (strategy, words.next()));
                }
            }
            "list" => {
                if let (Some(field), Some(kind)) = (words.next(), words.next()) {
                    let keys = words.next().map(|k| k.split(',').collect()).unwrap_or_default();
                    entry.list.insert(field, (kind, keys));
                }
            }
            "atomic" => match words.next() {
                Some(field) => {
                    entry.atomic_fields.insert(field);
                }
                None => entry.atomic = true,
            },
            _ => {}
        }
    }
    rules
});

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the Kubernetes protobuf definitions are unusable: {0}")]
    Definitions(String),
    #[error("the body does not start with the protobuf magic number k8s\\0")]
    NoMagic,
    #[error("cannot decode {what}: {source}")]
    Decode { what: String, source: prost::DecodeError },
    #[error("no protobuf message for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownType { api_version: String, kind: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn pool() -> Result<&'static DescriptorPool, ProtoError> {
    POOL.as_ref().map_err(|e| ProtoError::Definitions(e.clone()))
}

fn message(name: &str) -> Result<MessageDescriptor, ProtoError> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| ProtoError::Definitions(format!("{name} is missing")))
}

/// Whether `accept` (an Accept header) asks for protobuf before JSON.
pub fn preferred(accept: &str) -> bool {
    for range in accept.split(',') {
        let media = range.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case(MEDIA_TYPE) {
            return true;
        }
        if media.contains("json") || media.contains("yaml") || media == "*/*" {
            return false;
        }
    }
    false
}

/// Whether a Content-Type names the protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(MEDIA_TYPE)
}

/// The message of an `apiVersion` and `kind`: `k8s.io.api.<group>.<version>.<Kind>`, or
/// apimachinery's `meta.v1` for the kinds every group shares (`Status`, `DeleteOptions`, …).
pub fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pool = pool().ok()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let short = match group.split('.').next() {
        None | Some("") => "core",
        Some(first) => first,
    };
    pool.get_message_by_name(&format!("k8s.io.api.{short}.{version}.{kind}"))
        .or_else(|| pool.get_message_by_name(&format!("{META}.{kind}")))
}

/// Encodes an object (it names its `apiVersion` and `kind`) as a protobuf body.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtoError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let desc = message_for(api_version, kind).ok_or_else(|| ProtoError::UnknownType {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })?;
    let mut raw = Vec::with_capacity(1024);
    write_message(&desc, obj, &Path::Root, &mut raw)?;
    Ok(envelope(api_version, kind, &raw))
}

/// The magic and the `runtime.Unknown` around a message's bytes: typeMeta 1 (apiVersion 1,
/// kind 2), raw 2, contentEncoding 3, contentType 4.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::with_capacity(api_version.len() + kind.len() + 4);
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// Encodes a list (`<Kind>List` of `api_version`) item by item: `items` yields each object in
/// turn, so the whole list never exists as one value (a long list costs little more memory
/// than its answer).
pub fn encode_list<E>(
    api_version: &str,
    list_kind: &str,
    metadata: &Value,
    items: impl IntoIterator<Item = Result<Value, E>>,
) -> Result<Result<Vec<u8>, ProtoError>, E> {
    let unknown = || ProtoError::UnknownType {
        api_version: api_version.to_owned(),
        kind: list_kind.to_owned(),
    };
    let Some(desc) = message_for(api_version, list_kind) else { return Ok(Err(unknown())) };
    let (Some(meta_field), Some(items_field)) =
        (desc.get_field_by_name("metadata"), desc.get_field_by_name("items"))
    else {
        return Ok(Err(unknown()));
    };
    let (FieldKind::Message(meta_desc), FieldKind::Message(item_desc)) =
        (meta_field.kind(), items_field.kind())
    else {
        return Ok(Err(unknown()));
    };
    let mut raw = Vec::with_capacity(1024);
    let mut inner = Vec::with_capacity(1024);
    if let Err(e) = write_message(&meta_desc, metadata, &Path::Root, &mut inner) {
        return Ok(Err(e));
    }
    put_bytes(&mut raw, meta_field.number(), &inner);
    for item in items {
        let item = item?;
        inner.clear();
        if let Err(e) = write_message(&item_desc, &item, &Path::Root, &mut inner) {
            return Ok(Err(e));
        }
        put_bytes(&mut raw, items_field.number(), &inner);
    }
    Ok(Ok(envelope(api_version, list_kind, &raw)))
}

/// Decodes a protobuf body into Kubernetes JSON, `apiVersion` and `kind` included.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtoError::NoMagic)?;
    let envelope = DynamicMessage::decode(message(UNKNOWN)?, rest).map_err(|source| {
        ProtoError::Decode { what: "the runtime.Unknown envelope".into(), source }
    })?;
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(PValue::as_message);
    let text = |name: &str| {
        type_meta
            .and_then(|m| m.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)))
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let desc = message_for(&api_version, &kind).ok_or_else(|| ProtoError::UnknownType {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let raw = envelope.get_field_by_name("raw");
    let raw = raw.as_deref().and_then(PValue::as_bytes).cloned().unwrap_or_default();
    let msg = DynamicMessage::decode(desc.clone(), raw)
        .map_err(|source| ProtoError::Decode { what: desc.full_name().to_owned(), source })?;
    let mut obj = match to_json(&msg) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // apiVersion and kind first, as Kubernetes writes them.
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    out.append(&mut obj);
    Ok(Value::Object(out))
}

/// One frame of a protobuf watch stream: an event of `event_type` (`ADDED`, …) for `obj`.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, ProtoError> {
    // meta.v1.WatchEvent: type 1, object 2 (a RawExtension: raw 1).
    let mut object = Vec::new();
    put_bytes(&mut object, 1, &encode(obj)?);
    let mut bytes = Vec::with_capacity(object.len() + event_type.len() + 8);
    put_bytes(&mut bytes, 1, event_type.as_bytes());
    put_bytes(&mut bytes, 2, &object);
    let len = u32::try_from(bytes.len()).map_err(|_| ProtoError::Field {
        field: "watch event".into(),
        message: "larger than 4 GiB".into(),
    })?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend(bytes);
    Ok(frame)
}

/// A JSON watch event line (`{"type":…,"object":…}`) as a protobuf frame.
pub fn watch_line_to_frame(line: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let event: Value = serde_json::from_slice(line)
        .map_err(|e| ProtoError::Field { field: "watch event".into(), message: e.to_string() })?;
    watch_frame(event["type"].as_str().unwrap_or_default(), &event["object"])
}

/// Where in the object a value is (`spec.containers[0].name`), built only for an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => write!(f, "{key}"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn field_error(path: &Path<'_>, message: impl Into<String>) -> ProtoError {
    ProtoError::Field { field: path.to_string(), message: message.into() }
}

/// A field's tag and a varint.
fn put_varint(buf: &mut Vec<u8>, number: u32, value: u64) {
    encode_key(number, WireType::Varint, buf);
    encode_varint(value, buf);
}

/// A field's tag and length-delimited bytes.
fn put_bytes(buf: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_key(number, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// JSON → the bytes of the message `desc` (its special forms included), written straight
/// into `buf`. Field numbers of the special forms are Kubernetes' (Time: seconds 1, nanos 2;
/// Duration: duration 1; Quantity: string 1; IntOrString: type 1, intVal 2, strVal 3;
/// RawExtension and FieldsV1: raw 1).
fn write_message(
    desc: &MessageDescriptor,
    v: &Value,
    path: &Path<'_>,
    buf: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    match desc.full_name() {
        TIME | MICRO_TIME => {
            let text = v.as_str().ok_or_else(|| field_error(path, "expected an RFC 3339 time"))?;
            let ts: k8s_openapi::jiff::Timestamp =
                text.parse().map_err(|e| field_error(path, format!("{text:?}: {e}")))?;
            put_varint(buf, 1, ts.as_second() as u64);
            put_varint(buf, 2, i64::from(ts.subsec_nanosecond()) as u64);
        }
        DURATION => {
            let text = v.as_str().ok_or_else(|| field_error(path, "expected a duration"))?;
            let nanos = parse_go_duration(text)
                .ok_or_else(|| field_error(path, format!("invalid duration {text:?}")))?;
            put_varint(buf, 1, nanos as u64);
        }
        QUANTITY => match v {
            Value::String(s) => put_bytes(buf, 1, s.as_bytes()),
            Value::Number(n) => put_bytes(buf, 1, n.to_string().as_bytes()),
            _ => return Err(field_error(path, "expected a quantity")),
        },
        INT_OR_STRING => match v {
            Value::Number(n) => {
                let n = n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| field_error(path, format!("{n} is not a 32-bit integer")))?;
                put_varint(buf, 1, 0);
                put_varint(buf, 2, i64::from(n) as u64);
            }
            Value::String(s) => {
                put_varint(buf, 1, 1);
                put_bytes(buf, 3, s.as_bytes());
            }
            _ => return Err(field_error(path, "expected an integer or a string")),
        },
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = serde_json::to_vec(v).map_err(|e| field_error(path, e.to_string()))?;
            put_bytes(buf, 1, &raw);
        }
        _ => {
            let Value::Object(obj) = v else {
                return Err(field_error(path, format!("expected an object for {}", desc.name())));
            };
            let inline = JSON_RULES.get(desc.full_name()).map(|r| r.inline.as_slice());
            let mut inlined: Vec<(FieldDescriptor, Map<String, Value>)> = Vec::new();
            for (key, value) in obj {
                if value.is_null() {
                    continue;
                }
                if let Some(field) =
                    desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key))
                {
                    write_field(&field, value, &Path::Key(path, key), buf)?;
                    continue;
                }
                // A key of an inline field's message (a Volume's `emptyDir`, a Probe's
                // `httpGet`); otherwise one with no place on the wire (apiVersion and kind
                // live in the envelope).
                for name in inline.unwrap_or_default() {
                    let Some(field) = desc.get_field_by_name(name) else { continue };
                    let FieldKind::Message(inner) = field.kind() else { continue };
                    if inner.get_field_by_name(key).is_some() || inline_deep(&inner, key) {
                        match inlined.iter_mut().find(|(f, _)| f == &field) {
                            Some((_, keys)) => {
                                keys.insert(key.clone(), value.clone());
                            }
                            None => inlined
                                .push((field, Map::from_iter([(key.clone(), value.clone())]))),
                        }
                        break;
                    }
                }
            }
            for (field, keys) in inlined {
                write_single(&field, &Value::Object(keys), path, buf)?;
            }
        }
    }
    Ok(())
}

/// Every declared patch strategy: (message full name, field, strategy, merge key).
pub fn patch_rules() -> Vec<(&'static str, &'static str, &'static str, Option<&'static str>)> {
    let mut out: Vec<_> = JSON_RULES
        .iter()
        .flat_map(|(message, rules)| {
            rules.patch.iter().map(|(field, (strategy, key))| (*message, *field, *strategy, *key))
        })
        .collect();
    out.sort();
    out
}

/// What a strategic merge patch needs to know of a message: its fields' types and their
/// patch strategies, as Kubernetes' Go types declare them.
#[derive(Debug, Clone, Default)]
pub struct PatchMeta(Option<MessageDescriptor>);

/// One field of a [`PatchMeta`].
#[derive(Debug, Clone, Default)]
pub struct FieldPatch {
    /// The field's message (a list's element, a map's value), if it is one.
    pub child: PatchMeta,
    /// `merge`, `retainKeys`, `merge,retainKeys`, `replace`, or none (replace).
    pub strategy: Option<&'static str>,
    /// The key list elements merge on.
    pub merge_key: Option<&'static str>,
}

impl PatchMeta {
    /// The meta of a served kind (none for a kind without a message).
    pub fn of_kind(api_version: &str, kind: &str) -> PatchMeta {
        PatchMeta(message_for(api_version, kind))
    }

    /// Whether anything is known (a kind without a message has no patch strategies).
    pub fn is_known(&self) -> bool {
        self.0.is_some()
    }

    /// The field `key` of the JSON object (inline fields included).
    pub fn field(&self, key: &str) -> FieldPatch {
        let Some(desc) = &self.0 else { return FieldPatch::default() };
        let Some((owner, field)) = find_field(desc, key) else { return FieldPatch::default() };
        let rule =
            JSON_RULES.get(owner.full_name()).and_then(|r| r.patch.get(field.name()).copied());
        let child = match field.kind() {
            FieldKind::Message(m) if field.is_map() => match m.map_entry_value_field().kind() {
                FieldKind::Message(v) => Some(v),
                _ => None,
            },
            FieldKind::Message(m) => Some(m),
            _ => None,
        };
        FieldPatch {
            child: PatchMeta(child),
            strategy: rule.map(|(s, _)| s),
            merge_key: rule.and_then(|(_, k)| k),
        }
    }
}

/// How server-side apply sees a value: which parts of it a field manager can own apart.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Nothing is known (a field the types do not declare): objects are granular, lists atomic.
    Untyped,
    /// Owned whole: a scalar, or an atomic list, map or struct.
    Leaf,
    /// An object whose fields are the message's (inline fields included).
    Struct(MessageDescriptor),
    /// An object with free keys (labels, resource lists); each value has the shape given.
    Map(Box<Shape>),
    /// A list whose items are owned one by one, and the shape of an item.
    List(ListType, Box<Shape>),
}

/// How a non-atomic list's items are told apart.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// By their value (a list of scalars used as a set).
    Set,
    /// By the values of these fields (an associative list).
    Map(Vec<&'static str>),
}

impl Shape {
    /// The shape of a served kind's objects.
    pub fn of_kind(api_version: &str, kind: &str) -> Shape {
        match message_for(api_version, kind) {
            Some(m) => Shape::of_message(m),
            None => Shape::Untyped,
        }
    }

    fn of_message(m: MessageDescriptor) -> Shape {
        let name = m.full_name();
        let scalar_like = [TIME, MICRO_TIME, DURATION, FIELDS_V1, QUANTITY, INT_OR_STRING];
        if scalar_like.contains(&name) || name == RAW_EXTENSION {
            return Shape::Leaf;
        }
        if JSON_RULES.get(name).is_some_and(|r| r.atomic) {
            return Shape::Leaf;
        }
        Shape::Struct(m)
    }

    /// The shape of field `key` of an object of this shape.
    pub fn field(&self, key: &str) -> Shape {
        match self {
            Shape::Untyped => Shape::Untyped,
            Shape::Leaf => Shape::Leaf,
            Shape::Map(value) => (**value).clone(),
            Shape::List(..) => Shape::Untyped,
            Shape::Struct(desc) => {
                let Some((owner, field)) = find_field(desc, key) else { return Shape::Untyped };
                let rules = JSON_RULES.get(owner.full_name());
                if rules.is_some_and(|r| r.atomic_fields.contains(field.name())) {
                    return Shape::Leaf;
                }
                let element = |kind: FieldKind| match kind {
                    FieldKind::Message(m) => Shape::of_message(m),
                    _ => Shape::Leaf,
                };
                if field.is_map() {
                    let FieldKind::Message(entry) = field.kind() else { return Shape::Untyped };
                    return Shape::Map(Box::new(element(entry.map_entry_value_field().kind())));
                }
                if !field.is_list() {
                    return element(field.kind());
                }
                let item = element(field.kind());
                let declared = rules.and_then(|r| r.list.get(field.name()));
                let patch = rules.and_then(|r| r.patch.get(field.name()));
                let list_type = match (declared, patch) {
                    (Some(("map", keys)), _) if !keys.is_empty() => ListType::Map(keys.clone()),
                    (Some(("set", _)), _) => ListType::Set,
                    (Some(_), _) => return Shape::Leaf,
                    (None, Some((strategy, Some(key)))) if strategy.contains("merge") => {
                        ListType::Map(vec![*key])
                    }
                    (None, Some((strategy, None))) if strategy.contains("merge") => ListType::Set,
                    _ => return Shape::Leaf,
                };
                Shape::List(list_type, Box::new(item))
            }
        }
    }

    /// The shape of an item of a list of this shape.
    pub fn item(&self) -> Shape {
        match self {
            Shape::List(_, item) => (**item).clone(),
            _ => Shape::Untyped,
        }
    }
}

/// The message that holds JSON key `key` of `desc` (itself, or an inline field's), and the
/// field.
fn find_field(desc: &MessageDescriptor, key: &str) -> Option<(MessageDescriptor, FieldDescriptor)> {
    if let Some(f) = desc.get_field_by_name(key) {
        return Some((desc.clone(), f));
    }
    let rules = JSON_RULES.get(desc.full_name())?;
    rules.inline.iter().find_map(|name| match desc.get_field_by_name(name)?.kind() {
        FieldKind::Message(inner) => find_field(&inner, key),
        _ => None,
    })
}

/// Whether `key` belongs to an inline field of `desc` (inline fields nest).
fn inline_deep(desc: &MessageDescriptor, key: &str) -> bool {
    JSON_RULES.get(desc.full_name()).is_some_and(|r| {
        r.inline.iter().any(|name| match desc.get_field_by_name(name).map(|f| f.kind()) {
            Some(FieldKind::Message(inner)) => {
                inner.get_field_by_name(key).is_some() || inline_deep(&inner, key)
            }
            _ => false,
        })
    })
}

fn write_field(
    field: &FieldDescriptor,
    v: &Value,
    path: &Path<'_>,
    buf: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    if field.is_map() {
        let Value::Object(obj) = v else { return Err(field_error(path, "expected an object")) };
        let FieldKind::Message(entry) = field.kind() else {
            return Err(field_error(path, "a map without an entry message"));
        };
        let value_field = entry.map_entry_value_field();
        let mut pair = Vec::new();
        for (k, item) in obj {
            if item.is_null() {
                continue;
            }
            pair.clear();
            put_bytes(&mut pair, 1, k.as_bytes());
            write_single(&value_field, item, &Path::Key(path, k), &mut pair)?;
            put_bytes(buf, field.number(), &pair);
        }
        return Ok(());
    }
    if field.is_list() {
        let Value::Array(items) = v else { return Err(field_error(path, "expected an array")) };
        for (i, item) in items.iter().enumerate() {
            write_single(field, item, &Path::Index(path, i), buf)?;
        }
        return Ok(());
    }
    write_single(field, v, path, buf)
}

/// One value of a field (an element, for a list or a map), with its tag.
fn write_single(
    field: &FieldDescriptor,
    v: &Value,
    path: &Path<'_>,
    buf: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let bad = |what: &str| field_error(path, format!("expected {what}, got {v}"));
    let number = field.number();
    match field.kind() {
        FieldKind::Message(desc) => {
            let mut inner = Vec::new();
            write_message(&desc, v, path, &mut inner)?;
            put_bytes(buf, number, &inner);
        }
        FieldKind::String => match v {
            Value::String(s) => put_bytes(buf, number, s.as_bytes()),
            _ => return Err(bad("a string")),
        },
        FieldKind::Bool => {
            put_varint(buf, number, u64::from(v.as_bool().ok_or_else(|| bad("a boolean"))?))
        }
        FieldKind::Int32 | FieldKind::Enum(_) => {
            let n = integer(v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit integer"))?;
            put_varint(buf, number, i64::from(n) as u64);
        }
        FieldKind::Int64 => {
            put_varint(buf, number, integer(v).ok_or_else(|| bad("an integer"))? as u64)
        }
        FieldKind::Uint32 => {
            let n = integer(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("an unsigned integer"))?;
            put_varint(buf, number, u64::from(n));
        }
        FieldKind::Uint64 => {
            let n = integer(v)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad("an unsigned integer"))?;
            put_varint(buf, number, n);
        }
        FieldKind::Sint32 => {
            let n = integer(v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit integer"))?;
            put_varint(buf, number, u64::from(((n << 1) ^ (n >> 31)) as u32));
        }
        FieldKind::Sint64 => {
            let n = integer(v).ok_or_else(|| bad("an integer"))?;
            put_varint(buf, number, ((n << 1) ^ (n >> 63)) as u64);
        }
        FieldKind::Fixed32 | FieldKind::Sfixed32 => {
            let n = integer(v).ok_or_else(|| bad("an integer"))?;
            let n = u32::try_from(n)
                .or_else(|_| i32::try_from(n).map(|n| n as u32))
                .map_err(|_| bad("a 32-bit integer"))?;
            encode_key(number, WireType::ThirtyTwoBit, buf);
            buf.extend_from_slice(&n.to_le_bytes());
        }
        FieldKind::Fixed64 | FieldKind::Sfixed64 => {
            let n = integer(v).ok_or_else(|| bad("an integer"))?;
            encode_key(number, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&n.to_le_bytes());
        }
        FieldKind::Double => {
            let n = v.as_f64().ok_or_else(|| bad("a number"))?;
            encode_key(number, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&n.to_le_bytes());
        }
        FieldKind::Float => {
            let n = v.as_f64().ok_or_else(|| bad("a number"))? as f32;
            encode_key(number, WireType::ThirtyTwoBit, buf);
            buf.extend_from_slice(&n.to_le_bytes());
        }
        FieldKind::Bytes => {
            let text = v.as_str().ok_or_else(|| bad("base64 data"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| field_error(path, format!("invalid base64: {e}")))?;
            put_bytes(buf, number, &bytes);
        }
    }
    Ok(())
}

/// An integer given as a JSON number (or a whole float, or a numeric string).
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// How many protobuf bodies may sit inside one another (RawExtensions).
const MAX_NESTED: u8 = 4;

thread_local! {
    static NESTED: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Runs `f` one nesting level deeper; `None` past [`MAX_NESTED`].
fn nested<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    let depth = NESTED.with(std::cell::Cell::get);
    if depth >= MAX_NESTED {
        return None;
    }
    NESTED.with(|n| n.set(depth + 1));
    let out = f();
    NESTED.with(|n| n.set(depth));
    out
}

/// A message → Kubernetes JSON.
fn to_json(msg: &DynamicMessage) -> Value {
    let desc = msg.descriptor();
    let get = |name: &str| msg.get_field_by_name(name).map(|v| v.into_owned());
    match desc.full_name() {
        TIME | MICRO_TIME => {
            let seconds = get("seconds").and_then(|v| v.as_i64()).unwrap_or_default();
            let nanos = get("nanos").and_then(|v| v.as_i32()).unwrap_or_default();
            if seconds == 0 && nanos == 0 {
                // Go's zero time, which its JSON writes as null.
                return Value::Null;
            }
            let Ok(ts) = k8s_openapi::jiff::Timestamp::new(seconds, nanos) else {
                return Value::Null;
            };
            let format = if desc.full_name() == MICRO_TIME {
                "%Y-%m-%dT%H:%M:%S%.6fZ"
            } else {
                "%Y-%m-%dT%H:%M:%SZ"
            };
            Value::String(ts.strftime(format).to_string())
        }
        DURATION => {
            let nanos = get("duration").and_then(|v| v.as_i64()).unwrap_or_default();
            Value::String(format_go_duration(nanos))
        }
        QUANTITY => Value::String(
            get("string").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        ),
        INT_OR_STRING => {
            if get("type").and_then(|v| v.as_i64()) == Some(1) {
                Value::String(
                    get("strVal").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                )
            } else {
                Value::from(get("intVal").and_then(|v| v.as_i32()).unwrap_or_default())
            }
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let name = if desc.full_name() == FIELDS_V1 { "Raw" } else { "raw" };
            let raw = get(name).and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
            if raw.is_empty() {
                return Value::Null;
            }
            // An embedded object may itself be a protobuf body (RawExtension only; FieldsV1 is
            // always JSON), nested at most a few levels: a body must not recurse the stack away.
            if desc.full_name() == RAW_EXTENSION
                && raw.starts_with(MAGIC)
                && let Some(obj) = nested(|| decode(&raw).ok())
            {
                return obj;
            }
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        }
        name => {
            let rules = JSON_RULES.get(name);
            let omit = rules.map(|r| &r.omit_zero);
            let mut out = Map::new();
            for (field, value) in msg.fields() {
                let json = field_json(value);
                if rules.is_some_and(|r| r.inline.contains(&field.name())) {
                    if let Value::Object(inner) = json {
                        out.extend(inner);
                    }
                    continue;
                }
                let zero = match &json {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::String(s) => {
                        s.is_empty() && omit.is_some_and(|o| o.contains(field.name()))
                    }
                    Value::Bool(b) => !b && omit.is_some_and(|o| o.contains(field.name())),
                    Value::Number(n) => {
                        n.as_f64() == Some(0.0) && omit.is_some_and(|o| o.contains(field.name()))
                    }
                    Value::Object(m) => m.is_empty() && field.is_map(),
                };
                if !zero {
                    out.insert(field.name().to_owned(), json);
                }
            }
            Value::Object(out)
        }
    }
}

fn field_json(value: &PValue) -> Value {
    match value {
        PValue::List(items) => Value::Array(items.iter().map(scalar_json).collect()),
        PValue::Map(map) => {
            let mut entries: Vec<(String, Value)> = map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                    };
                    (key, scalar_json(v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        other => scalar_json(other),
    }
}

fn scalar_json(value: &PValue) -> Value {
    match value {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(n) => Value::from(*n),
        PValue::I64(n) => Value::from(*n),
        PValue::U32(n) => Value::from(*n),
        PValue::U64(n) => Value::from(*n),
        PValue::F32(n) => Value::from(f64::from(*n)),
        PValue::F64(n) => Value::from(*n),
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::EnumNumber(n) => Value::from(*n),
        PValue::Message(m) => to_json(m),
        PValue::List(items) => Value::Array(items.iter().map(scalar_json).collect()),
        PValue::Map(_) => Value::Null,
    }
}

/// Go's `time.ParseDuration` syntax (`1h2m3.5s`, `300ms`, `-1.5h`) in nanoseconds.
fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
        any = true;
    }
    if !any || total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if negative { -n } else { n })
}

/// Nanoseconds as Go's `Duration.String` writes them (`1h0m0s`, `1.5s`, `300ms`).
fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (value, unit) = if n < 1_000 {
            (n as f64, "ns")
        } else if n < 1_000_000 {
            (n as f64 / 1e3, "µs")
        } else {
            (n as f64 / 1e6, "ms")
        };
        return format!("{sign}{}{unit}", trim_float(value));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let seconds = (n % 60_000_000_000) as f64 / 1e9;
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_float(seconds)));
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests;
