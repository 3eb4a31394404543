//! The master's web page, with the protobuf schema it decodes the operator API's events with.
//!
//! The page subscribes to the operator API in protobuf: the snapshot of a large cluster (1,000
//! agents, 10,000 tasks) is written several times faster as protobuf than as Mesos JSON, and
//! is smaller. The page's decoder is generic; what it needs to know of the messages (every
//! message and enum reachable from `mesos.v1.master.Event`: field numbers, names, kinds) is
//! taken from km's own descriptors and written into the page when it is first served, so the
//! page and the protos cannot drift apart.

use std::sync::LazyLock;

use prost_reflect::{Cardinality, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// Where the page's HTML expects the schema.
const PLACEHOLDER: &str = "/*KM_SCHEMA*/null";

/// The page with its schema, built once.
pub(crate) static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("ui/master.html").replacen(PLACEHOLDER, &schema().to_string(), 1)
});

/// `{"m": {message: {number: [name, kind, type, repeated]}}, "e": {enum: {number: name}}}`.
/// Kinds: `d` double, `f` float, `v` (u)int32/64, `z` sint32/64, `F` fixed64, `S` sfixed64,
/// `g` fixed32, `G` sfixed32, `b` bool, `s` string, `y` bytes, `m` message, `e` enum.
pub(crate) fn schema() -> Value {
    let root = km_mesos::DESCRIPTOR_POOL
        .get_message_by_name("mesos.v1.master.Event")
        .map(|d| vec![d])
        .unwrap_or_default();
    let (mut messages, mut enums) = (Map::new(), Map::new());
    let mut todo: Vec<MessageDescriptor> = root;
    while let Some(m) = todo.pop() {
        if messages.contains_key(m.full_name()) {
            continue;
        }
        let mut fields = Map::new();
        for f in m.fields() {
            let (code, type_name) = match f.kind() {
                Kind::Double => ("d", String::new()),
                Kind::Float => ("f", String::new()),
                Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 => ("v", String::new()),
                Kind::Sint32 | Kind::Sint64 => ("z", String::new()),
                Kind::Fixed64 => ("F", String::new()),
                Kind::Sfixed64 => ("S", String::new()),
                Kind::Fixed32 => ("g", String::new()),
                Kind::Sfixed32 => ("G", String::new()),
                Kind::Bool => ("b", String::new()),
                Kind::String => ("s", String::new()),
                Kind::Bytes => ("y", String::new()),
                Kind::Message(sub) => {
                    let name = sub.full_name().to_owned();
                    todo.push(sub);
                    ("m", name)
                }
                Kind::Enum(e) => {
                    if !enums.contains_key(e.full_name()) {
                        let values: Map<String, Value> =
                            e.values().map(|v| (v.number().to_string(), json!(v.name()))).collect();
                        enums.insert(e.full_name().to_owned(), Value::Object(values));
                    }
                    ("e", e.full_name().to_owned())
                }
            };
            let repeated = u8::from(f.cardinality() == Cardinality::Repeated);
            fields.insert(f.number().to_string(), json!([f.name(), code, type_name, repeated]));
        }
        messages.insert(m.full_name().to_owned(), Value::Object(fields));
    }
    json!({ "m": messages, "e": enums })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_reaches_every_message_the_page_reads() {
        let s = schema();
        let event = &s["m"]["mesos.v1.master.Event"];
        assert_eq!(event["1"], json!(["type", "e", "mesos.v1.master.Event.Type", 0]));
        assert_eq!(event["2"], json!(["subscribed", "m", "mesos.v1.master.Event.Subscribed", 0]));
        let task = &s["m"]["mesos.v1.Task"];
        assert_eq!(task["8"], json!(["statuses", "m", "mesos.v1.TaskStatus", 1]));
        assert_eq!(s["m"]["mesos.v1.TaskStatus"]["6"], json!(["timestamp", "d", "", 0]));
        assert_eq!(s["e"]["mesos.v1.TaskState"]["1"], json!("TASK_RUNNING"));
        for name in [
            "mesos.v1.master.Response.GetState",
            "mesos.v1.master.Response.GetAgents.Agent",
            "mesos.v1.master.Response.GetFrameworks.Framework",
            "mesos.v1.AgentInfo",
            "mesos.v1.Attribute",
            "mesos.v1.Value.Scalar",
        ] {
            assert!(s["m"][name].is_object(), "{name} is in the schema");
        }
        assert!(PAGE.contains("\"mesos.v1.master.Event\""), "the page carries the schema");
        assert!(!PAGE.contains(PLACEHOLDER));
    }
}
