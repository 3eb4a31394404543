//! The flat JSON forms of the legacy `/master/state` endpoint: resources and
//! attributes as objects (`{"cpus": 4.0, "ports": "[31000-32000]"}`).

use serde_json::{Map, Value, json};

use km_mesos::v1;

use crate::resources::{Resources, Val};

/// Resources as `/master/state` shows them: `cpus`, `gpus`, `mem`, `disk`
/// always (0 when absent), other scalars as numbers, ranges and sets as text.
pub(crate) fn resources_object(rs: &Resources) -> Value {
    let mut out = Map::new();
    for name in ["cpus", "gpus", "mem", "disk"] {
        out.insert(name.into(), json!(rs.scalar(name).as_f64()));
    }
    for r in rs.iter() {
        match &r.value {
            Val::Scalar(_) => {
                out.insert(r.name.clone(), json!(rs.scalar(&r.name).as_f64()));
            }
            Val::Ranges(ranges) => {
                let text = ranges
                    .ranges()
                    .iter()
                    .map(|x| format!("{}-{}", x.begin, x.end))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.insert(r.name.clone(), json!(format!("[{text}]")));
            }
            Val::Set(items) => {
                out.insert(
                    r.name.clone(),
                    json!(format!("{{{}}}", items.iter().cloned().collect::<Vec<_>>().join(", "))),
                );
            }
        }
    }
    Value::Object(out)
}

/// Attributes as a flat object: scalars as numbers, text as strings, ranges
/// and sets as text.
pub(crate) fn attributes_object(attrs: &[v1::Attribute]) -> Value {
    let mut out = Map::new();
    for a in attrs {
        let v = match a.r#type() {
            v1::value::Type::Scalar => json!(a.scalar.as_ref().map(|s| s.value).unwrap_or(0.0)),
            v1::value::Type::Text => {
                json!(a.text.as_ref().map(|t| t.value.clone()).unwrap_or_default())
            }
            v1::value::Type::Ranges => {
                let text = a
                    .ranges
                    .as_ref()
                    .map(|r| {
                        r.range
                            .iter()
                            .map(|x| format!("{}-{}", x.begin, x.end))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                json!(format!("[{text}]"))
            }
            v1::value::Type::Set => {
                json!(format!(
                    "{{{}}}",
                    a.set.as_ref().map(|s| s.item.join(", ")).unwrap_or_default()
                ))
            }
        };
        out.insert(a.name.clone(), v);
    }
    Value::Object(out)
}
