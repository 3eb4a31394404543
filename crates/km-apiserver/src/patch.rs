//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch for the built-in kinds: how each list merges (by a merge
//! key, as a set, or replaced) comes from the kind's types, as Kubernetes' Go types declare it
//! ([`PatchMeta`]); the directives `$patch`, `$retainKeys`, `$setElementOrder` and
//! `$deleteFromPrimitiveList` are honoured.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::protobuf::PatchMeta;
use crate::registry::Kind;

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Applies `patch` of media type `content_type` to `current`.
pub fn apply(
    kind: &Kind,
    content_type: &str,
    mut current: Value,
    patch: &Value,
) -> ApiResult<Value> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        JSON_PATCH => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            let name = current["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            json_patch::patch(&mut current, &ops).map_err(|e| {
                ApiError::invalid(
                    kind,
                    &name,
                    vec![crate::error::Cause {
                        reason: "FieldValueInvalid",
                        field: "patch".into(),
                        message: format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    }],
                )
            })?;
            Ok(current)
        }
        MERGE_PATCH => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(&mut current, patch);
            Ok(current)
        }
        STRATEGIC_MERGE_PATCH => {
            let Value::Object(patch) = patch else {
                return Err(ApiError::BadRequest(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            };
            let meta = PatchMeta::of_kind(kind.api_version, kind.kind);
            if !meta.is_known() {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - strategic merge patch is not supported for {}",
                    kind.kind
                )));
            }
            match &mut current {
                Value::Object(map) => merge_map(map, patch, &meta),
                other => *other = Value::Object(clean_map(patch)),
            }
            Ok(current)
        }
        APPLY_PATCH => Err(ApiError::UnsupportedMediaType(
            "server-side apply is not supported by km apiserver; use client-side `kubectl apply`"
                .into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH} (got {other:?})"
        ))),
    }
}

fn is_directive(key: &str) -> bool {
    key.starts_with('$')
}

/// A patch value with directives and deletion markers removed, for
/// insertion where nothing exists yet.
fn clean(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(clean_map(map)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| !(i.get("$patch").is_some_and(|p| p == "delete")))
                .filter(|i| {
                    !(i.is_object()
                        && i.as_object().is_some_and(|m| m.len() == 1 && m.contains_key("$patch")))
                })
                .map(clean)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn clean_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, v)| !is_directive(k) && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

fn merge_map(original: &mut Map<String, Value>, patch: &Map<String, Value>, meta: &PatchMeta) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *original = clean_map(patch);
        return;
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) =
                (original.get_mut(field), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if is_directive(key) {
            continue;
        }
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(p) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    original.remove(key);
                    continue;
                }
                match original.get_mut(key) {
                    Some(Value::Object(o)) => merge_map(o, p, &meta.field(key).child),
                    _ => {
                        original.insert(key.clone(), Value::Object(clean_map(p)));
                    }
                }
            }
            Value::Array(p) => {
                let field = meta.field(key);
                let merged = match original.get_mut(key) {
                    Some(Value::Array(o)) => merge_list(&field, o, p),
                    _ => false,
                };
                if !merged {
                    original.insert(key.clone(), clean(value));
                }
            }
            other => {
                original.insert(key.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        original.retain(|k, _| retain.iter().any(|r| r == k));
    }
    // The order the client's list had (kubectl sends it for lists it merged by key).
    for (key, order) in patch {
        let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), order)
        else {
            continue;
        };
        let merge_key = meta.field(field).merge_key;
        if let Some(Value::Array(list)) = original.get_mut(field) {
            set_element_order(list, order, merge_key);
        }
    }
}

/// Puts the elements `order` names first, in its order; the others keep theirs after them.
fn set_element_order(list: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    let id = |item: &Value| match merge_key {
        Some(k) => item.get(k).cloned(),
        None => Some(item.clone()),
    };
    let wanted: Vec<Option<Value>> =
        order.iter().map(|o| if merge_key.is_some() { id(o) } else { Some(o.clone()) }).collect();
    let rank = |item: &Value| {
        let key = id(item);
        wanted.iter().position(|w| key.is_some() && *w == key).unwrap_or(usize::MAX)
    };
    // A stable sort: the unnamed ones keep their relative order, after the named.
    list.sort_by_key(rank);
}

/// Merges `patch` into `original` in place; `false` means "replace instead" (a list without a
/// merge strategy, or `$patch: replace`).
fn merge_list(
    field: &crate::protobuf::FieldPatch,
    original: &mut Vec<Value>,
    patch: &[Value],
) -> bool {
    if patch.iter().any(|p| {
        p.as_object()
            .is_some_and(|m| m.len() == 1 && m.get("$patch") == Some(&Value::from("replace")))
    }) {
        return false;
    }
    if !field.strategy.is_some_and(|s| s.split(',').any(|s| s == "merge")) {
        return false;
    }
    let Some(key) = field.merge_key else {
        // A list of primitives merged as a set (finalizers).
        for p in patch {
            if !original.contains(p) {
                original.push(p.clone());
            }
        }
        return true;
    };
    for p in patch {
        let Some(pm) = p.as_object() else { continue };
        let id = pm.get(key);
        let position = id.and_then(|id| original.iter().position(|o| o.get(key) == Some(id)));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                original.remove(i);
            }
            continue;
        }
        match position.and_then(|i| original.get_mut(i)) {
            Some(Value::Object(o)) => merge_map(o, pm, &field.child),
            _ => original.push(Value::Object(clean_map(pm))),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static Kind {
        crate::registry::lookup("", "v1", "pods").expect("pods")
    }

    fn smp(current: Value, patch: Value) -> Value {
        apply(pods(), STRATEGIC_MERGE_PATCH, current, &patch).expect("patch applies")
    }

    #[test]
    fn containers_merge_by_name() {
        let current = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}, {"name": "X", "$patch": "delete"}]},
            {"name": "c", "image": "c:1"}]}});
        let out = smp(current, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}]},
            {"name": "b", "image": "b:1"},
            {"name": "c", "image": "c:1"}])
        );
    }

    fn kind(group: &str, plural: &str) -> &'static Kind {
        crate::registry::lookup(group, "v1", plural).expect("served")
    }

    #[test]
    fn lists_merge_on_the_keys_the_types_declare() {
        // Container ports on containerPort, Service ports on port.
        let out = smp(
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "web"}, {"containerPort": 443}])
        );
        let svc = apply(
            kind("", "services"),
            STRATEGIC_MERGE_PATCH,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 81}]}}),
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        )
        .unwrap();
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 81}]));
        // Owner references on uid; finalizers as a set.
        let out = smp(
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}], "finalizers": ["x"]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}], "finalizers": ["y", "x"]}}),
        );
        assert_eq!(out["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        // A Node's taints have no merge key in Kubernetes' types (a guess by field name
        // would have merged them on `key`); an Endpoints' subsets neither.
        let node = apply(
            kind("", "nodes"),
            STRATEGIC_MERGE_PATCH,
            json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}}),
            &json!({"spec": {"taints": [{"key": "a", "effect": "NoExecute"}]}}),
        )
        .unwrap();
        assert_eq!(node["spec"]["taints"], json!([{"key": "a", "effect": "NoExecute"}]));
        let eps = apply(
            kind("", "endpoints"),
            STRATEGIC_MERGE_PATCH,
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}, {"addresses": [{"ip": "10.0.0.2"}]}]}),
            &json!({"subsets": [{"addresses": [{"ip": "10.0.0.3"}]}]}),
        )
        .unwrap();
        assert_eq!(eps["subsets"], json!([{"addresses": [{"ip": "10.0.0.3"}]}]));
        // A Pod's container args are a plain list.
        let out = smp(
            json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}),
            json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn set_element_order_orders_the_merged_list() {
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "side"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                            "containers": [{"name": "c", "image": "c:1"}]}}),
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["c", "b", "a", "side"], "named first in order, the rest after");
    }

    #[test]
    fn retain_keys_and_volume_sources() {
        let deployments = crate::registry::lookup("apps", "v1", "deployments").unwrap();
        let out = apply(
            deployments,
            STRATEGIC_MERGE_PATCH,
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // Volumes merge on name; their source is an inline field of the Volume.
        let out = smp(
            json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}}),
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "secret": {"secretName": "s"}}, {"name": "w", "emptyDir": {}}])
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let current =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "a"}]}});
        let out = apply(
            pods(),
            MERGE_PATCH,
            current.clone(),
            &json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
        )
        .expect("merge");
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let ops = json!([{"op": "add", "path": "/spec/containers/-", "value": {"name": "b"}}, {"op": "replace", "path": "/metadata/labels/a", "value": "9"}]);
        let out = apply(pods(), JSON_PATCH, current.clone(), &ops).expect("json patch");
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        let failing = json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]);
        assert_eq!(
            apply(pods(), JSON_PATCH, current.clone(), &failing)
                .expect_err("test op")
                .code()
                .as_u16(),
            422
        );
        assert_eq!(
            apply(pods(), "text/plain", current, &json!({})).expect_err("media").code().as_u16(),
            415
        );
    }
}
