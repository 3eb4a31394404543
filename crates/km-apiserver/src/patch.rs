//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch for the built-in kinds (lists merged by
//! their merge keys; `$patch`, `$retainKeys`, `$setElementOrder` and
//! `$deleteFromPrimitiveList` directives).

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
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
            json_patch::patch(&mut current, &ops).map_err(|e| {
                ApiError::invalid(
                    kind,
                    "",
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
            match &mut current {
                Value::Object(map) => merge_map(map, patch),
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

/// The merge key of a list field, judged by its name (and, for `ports`,
/// by its elements: container ports merge on containerPort, service ports
/// on port).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Primitive lists merged as sets rather than replaced.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
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

fn merge_map(original: &mut Map<String, Value>, patch: &Map<String, Value>) {
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
                    Some(Value::Object(o)) => merge_map(o, p),
                    _ => {
                        original.insert(key.clone(), Value::Object(clean_map(p)));
                    }
                }
            }
            Value::Array(p) => {
                let merged = match original.get_mut(key) {
                    Some(Value::Array(o)) => merge_list(key, o, p),
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
}

/// Merges `patch` into `original` in place; `false` means "replace instead".
fn merge_list(field: &str, original: &mut Vec<Value>, patch: &[Value]) -> bool {
    if patch.iter().any(|p| {
        p.as_object()
            .is_some_and(|m| m.len() == 1 && m.get("$patch") == Some(&Value::from("replace")))
    }) {
        return false;
    }
    if is_set_list(field) {
        for p in patch {
            if !original.contains(p) {
                original.push(p.clone());
            }
        }
        return true;
    }
    let Some(key) = merge_key(field, patch.first().or(original.first())) else {
        return false;
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
            Some(Value::Object(o)) => merge_map(o, pm),
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

    #[test]
    fn ports_key_on_container_port_and_service_port() {
        let out = smp(
            json!({"c": {"ports": [{"containerPort": 80, "name": "http"}]}, "s": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"c": {"ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}, "s": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        );
        assert_eq!(
            out["c"]["ports"],
            json!([{"containerPort": 80, "name": "web"}, {"containerPort": 443}])
        );
        assert_eq!(out["s"]["ports"], json!([{"port": 80, "targetPort": 9090}]));
    }

    #[test]
    fn directives() {
        let out = smp(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                   "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "args": ["1", "2"], "volumes": [{"name": "v"}]}}),
            json!({"metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"]},
                   "$setElementOrder/volumes": [{"name": "v"}],
                   "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}, "args": ["3"], "volumes": [{"$patch": "replace"}, {"name": "w"}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["args"], json!(["3"]));
        assert_eq!(out["spec"]["volumes"], json!([{"name": "w"}]));
        let out = smp(
            json!({"spec": {"a": {"x": 1}, "b": [1, 2]}}),
            json!({"spec": {"a": {"$patch": "delete"}, "$deleteFromPrimitiveList/b": [1]}}),
        );
        assert_eq!(out, json!({"spec": {"b": [2]}}));
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
