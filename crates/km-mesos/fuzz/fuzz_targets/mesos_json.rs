//! Arbitrary bytes through the Mesos JSON mapping, as scheduler `Call` and
//! `Event` (the two messages a master and a framework parse from peers).
//!
//! Checked, for every input that decodes:
//! - nothing panics;
//! - `to_vec` → `from_slice` gives the same message back. Mesos JSON writes
//!   unset optional fields that declare a default (with that default), so
//!   the comparison is made with those defaults filled in on both sides, and
//!   with every NaN made the same NaN (JSON has one "NaN");
//! - the JSON text is a fixpoint (`to_vec` of the decoded output is the same
//!   text) and a second round trip is exact;
//! - the protobuf encoding round-trips too.

#![no_main]

use std::fmt::Debug;

use km_mesos::json;
use km_mesos::v1::scheduler::{Call, Event};
use libfuzzer_sys::fuzz_target;
use prost_reflect::{Cardinality, DynamicMessage, ReflectMessage, Value};

/// Fills unset, non-deprecated optional fields that declare a default, and
/// canonicalises NaNs, recursively.
fn normalize(msg: &mut DynamicMessage) {
    for field in msg.descriptor().fields() {
        if !msg.has_field(&field) {
            let proto = field.field_descriptor_proto();
            let deprecated = proto.options.as_ref().and_then(|o| o.deprecated).unwrap_or(false);
            if field.cardinality() == Cardinality::Optional
                && proto.default_value.is_some()
                && !deprecated
            {
                let default = msg.get_field(&field).into_owned();
                msg.set_field(&field, default);
            } else {
                continue;
            }
        }
        normalize_value(msg.get_field_mut(&field));
    }
}

fn normalize_value(value: &mut Value) {
    match value {
        Value::F64(v) if v.is_nan() => *v = f64::NAN,
        Value::F32(v) if v.is_nan() => *v = f32::NAN,
        Value::Message(m) => normalize(m),
        Value::List(items) => items.iter_mut().for_each(normalize_value),
        Value::Map(entries) => entries.values_mut().for_each(normalize_value),
        _ => {}
    }
}

/// The protobuf bytes of `msg` after [`normalize`] (typed messages use
/// BTreeMaps, so the encoding is deterministic).
fn normalized_bytes<M: ReflectMessage + Default>(msg: &M) -> Vec<u8> {
    let mut dynamic = msg.transcode_to_dynamic();
    normalize(&mut dynamic);
    dynamic.transcode_to::<M>().expect("a normalised message transcodes").encode_to_vec()
}

fn check<M: ReflectMessage + Default + PartialEq + Debug>(data: &[u8]) {
    let Ok(a) = json::from_slice::<M>(data) else { return };
    let text_a = json::to_vec(&a);
    let b = json::from_slice::<M>(&text_a).unwrap_or_else(|e| {
        panic!("own output does not decode: {e}\n{}", String::from_utf8_lossy(&text_a))
    });
    assert_eq!(
        normalized_bytes(&a),
        normalized_bytes(&b),
        "round trip changed the message\nin:  {a:?}\nout: {b:?}\njson: {}",
        String::from_utf8_lossy(&text_a)
    );
    let text_b = json::to_vec(&b);
    assert_eq!(text_a, text_b, "JSON text is not a fixpoint");
    let c = json::from_slice::<M>(&text_b).expect("fixpoint decodes");
    assert_eq!(b.encode_to_vec(), c.encode_to_vec(), "second round trip is not exact");

    let wire = a.encode_to_vec();
    let d = M::decode(wire.as_slice()).expect("own protobuf decodes");
    assert_eq!(d.encode_to_vec(), wire, "protobuf round trip");
}

fuzz_target!(|data: &[u8]| {
    check::<Call>(data);
    check::<Event>(data);
});
