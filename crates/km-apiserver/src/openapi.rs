//! `/openapi/v2`. kubectl 1.20 asks for the gnostic protobuf encoding
//! (`openapi.v2.Document`) and validates `create`/`apply` input against the
//! definition whose `x-kubernetes-group-version-kind` names the object's
//! kind: unknown fields, wrong scalar types and missing required fields are
//! rejected client-side ("error validating data"). Other clients get the same
//! document as JSON.
//!
//! `/openapi/v3` lists one OpenAPI 3.0 document per group-version
//! (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, …), which kubectl 1.27
//! and later prefer for `explain`: the same schemas, under
//! `components/schemas`.
//!
//! The definitions are the JSON schemas of the served kinds (k8s-openapi's
//! `schemars` impls, named as Kubernetes names them) and of every type they
//! refer to. The document is built once, on first use, and both encodings are
//! cached.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use prost::Message;
use serde_json::{Map, Value, json};

use crate::registry::KINDS;
use crate::server::VERSION;

/// gnostic's OpenAPI v2 protobuf messages (the subset km serves).
#[allow(unreachable_pub, clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/openapi.v2.rs"));
}

pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The vendor extension kubectl looks a kind's schema up by.
pub const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

struct Encoded {
    json: Bytes,
    protobuf: Bytes,
}

static DOCUMENT: LazyLock<Encoded> = LazyLock::new(|| {
    let doc = document();
    Encoded {
        json: Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        protobuf: Bytes::from(to_protobuf(&doc).encode_to_vec()),
    }
});

pub async fn serve(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("protobuf") {
        // kube-openapi answers protobuf as octet-stream (Go cannot parse the `@`).
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            DOCUMENT.protobuf.clone(),
        )
            .into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], DOCUMENT.json.clone())
        .into_response()
}

/// The OpenAPI v3 documents by path (`api/v1`, `apis/apps/v1`), each with the hash its
/// URL carries (clients cache by URL).
static V3: LazyLock<Vec<(String, String, Bytes)>> = LazyLock::new(|| {
    let v2 = document();
    crate::registry::group_versions()
        .into_iter()
        .map(|(group, version)| {
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let doc = v3_document(&v2, group, version);
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            // FNV-1a of the body: changes when the document does.
            let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            (path, format!("{hash:016X}"), Bytes::from(body))
        })
        .collect()
});

/// An OpenAPI 3.0 document with the v2 document's definitions as `components/schemas`, and
/// for each kind of the group-version its collection and item paths, whose GET names the kind
/// (`kubectl explain` finds a resource's schema through them).
fn v3_document(v2: &Value, group: &str, version: &str) -> Value {
    let mut schemas = v2["definitions"].clone();
    rewrite_refs(&mut schemas);
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut paths = Map::new();
    for kind in KINDS.iter().filter(|k| k.group == group && k.version == version) {
        let definition = (kind.schema)(&mut generator);
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let collection = if kind.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
        } else {
            format!("{prefix}/{}", kind.plural)
        };
        let gvk = json!({ "group": group, "kind": kind.kind, "version": version });
        let get = |action: &str| {
            json!({ "get": {
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": { "200": {
                    "description": "OK",
                    "content": { "application/json": { "schema": {
                        "$ref": format!("#/components/schemas/{definition}")
                    } } },
                } },
            } })
        };
        paths.insert(collection.clone(), get("list"));
        paths.insert(format!("{collection}/{{name}}"), get("get"));
    }
    json!({
        "openapi": "3.0.0",
        "info": v2["info"],
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// `#/definitions/X` → `#/components/schemas/X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                *r = format!("#/components/schemas/{name}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub async fn serve_v3_root() -> Response {
    let paths: Map<String, Value> = V3
        .iter()
        .map(|(path, hash, _)| {
            (
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            )
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "paths": paths })).unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `/openapi/v3/<group-version path>`.
pub async fn serve_v3(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match V3.iter().find(|(p, _, _)| *p == path) {
        Some((_, _, body)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.clone())
                .into_response()
        }
        None => {
            (StatusCode::NOT_FOUND, format!("no OpenAPI v3 document for {path}")).into_response()
        }
    }
}

/// The query parameters of a write, as Kubernetes documents them on each operation.
const WRITE_PARAMETERS: [(&str, &str, &str); 3] = [
    ("dryRun", "string", "All: check and answer everything, store nothing."),
    ("fieldManager", "string", "the name the change is recorded for in managedFields"),
    ("force", "boolean", "an apply takes over fields other managers own"),
];

/// Item paths with their PATCH operation (naming the kind and the write parameters):
/// kubectl before 1.22 looks a kind's dryRun support up there.
fn v2_paths() -> Map<String, Value> {
    let mut paths = Map::new();
    for kind in KINDS {
        let prefix = if kind.group.is_empty() {
            format!("/api/{}", kind.version)
        } else {
            format!("/apis/{}/{}", kind.group, kind.version)
        };
        let item = if kind.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", kind.plural)
        } else {
            format!("{prefix}/{}/{{name}}", kind.plural)
        };
        let parameters: Vec<Value> = WRITE_PARAMETERS
            .iter()
            .map(|(name, ty, about)| {
                json!({ "name": name, "in": "query", "type": ty, "description": about })
            })
            .collect();
        paths.insert(
            item,
            json!({ "patch": {
                "consumes": [
                    crate::patch::JSON_PATCH,
                    crate::patch::MERGE_PATCH,
                    crate::patch::STRATEGIC_MERGE_PATCH,
                    crate::patch::APPLY_PATCH,
                ],
                "parameters": parameters,
                GVK_EXTENSION: { "group": kind.group, "kind": kind.kind, "version": kind.version },
            } }),
        );
    }
    paths
}

/// The swagger 2.0 document (JSON): the item paths' PATCH operations, the definitions of
/// every served kind and of the types they refer to.
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut gvks: Vec<(String, Value)> = Vec::new();
    for kind in KINDS {
        let name = (kind.schema)(&mut generator);
        gvks.push((
            name,
            json!({ "group": kind.group, "kind": kind.kind, "version": kind.version }),
        ));
    }
    let mut definitions = generator.take_definitions(false);
    for schema in definitions.values_mut() {
        normalize(schema);
    }
    // The strategic-merge-patch directives of Kubernetes' Go types (their patchStrategy and
    // patchMergeKey tags), which Kubernetes serves and the k8s-openapi schemas lack. Once
    // kubectl has a schema for a kind, `apply` computes its patch from these: without them
    // every list is replaced wholesale and re-applying an unchanged Service says "configured".
    for (message, property, strategy, key) in crate::protobuf::patch_rules() {
        let Some(definition) = message.strip_prefix("k8s.io.").map(|m| format!("io.k8s.{m}"))
        else {
            continue;
        };
        if let Some(Value::Object(field)) = definitions
            .get_mut(&definition)
            .and_then(|d| d.pointer_mut(&format!("/properties/{property}")))
        {
            field.insert("x-kubernetes-patch-strategy".into(), strategy.into());
            if let Some(key) = key {
                field.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
    }
    for (name, gvk) in gvks {
        if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
            match schema.get_mut(GVK_EXTENSION) {
                Some(Value::Array(list)) => list.push(gvk),
                _ => {
                    schema.insert(GVK_EXTENSION.into(), Value::Array(vec![gvk]));
                }
            }
        }
    }
    let (major, minor) = VERSION;
    json!({
        "swagger": "2.0",
        "info": { "title": "km apiserver", "version": format!("v{major}.{minor}.0-km") },
        "paths": v2_paths(),
        "definitions": definitions,
    })
}

/// Rewrites JSON-schema forms into what OpenAPI v2 (and kube-openapi's
/// parser in kubectl) expects: an untyped `x-kubernetes-int-or-string`
/// schema is `type: string, format: int-or-string`, as Kubernetes serves it.
fn normalize(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && !map.contains_key("type")
            {
                map.insert("type".into(), "string".into());
                map.insert("format".into(), "int-or-string".into());
            }
            for (key, value) in map.iter_mut() {
                // Keep enum/default/example values as they are.
                if !key.starts_with("x-") && !matches!(key.as_str(), "enum" | "default" | "example")
                {
                    normalize(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The gnostic protobuf form of [`document`].
pub fn to_protobuf(doc: &Value) -> pb::Document {
    let str_of =
        |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let info = doc.get("info").cloned().unwrap_or_default();
    pb::Document {
        swagger: str_of(doc, "swagger"),
        info: Some(pb::Info {
            title: str_of(&info, "title"),
            version: str_of(&info, "version"),
            description: str_of(&info, "description"),
        }),
        paths: Some(pb::Paths {
            vendor_extension: Vec::new(),
            path: doc["paths"]
                .as_object()
                .map(|paths| paths.iter().map(|(name, item)| path_item(name, item)).collect())
                .unwrap_or_default(),
        }),
        definitions: Some(pb::Definitions {
            additional_properties: named_schemas(doc.get("definitions")),
        }),
    }
}

fn path_item(name: &str, item: &Value) -> pb::NamedPathItem {
    let patch = &item["patch"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let parameters = patch["parameters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let text = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            let query = pb::QueryParameterSubSchema {
                required: false,
                r#in: text("in"),
                description: text("description"),
                name: text("name"),
                r#type: text("type"),
            };
            pb::ParametersItem {
                oneof: Some(pb::parameters_item::Oneof::Parameter(pb::Parameter {
                    oneof: Some(pb::parameter::Oneof::NonBodyParameter(pb::NonBodyParameter {
                        oneof: Some(pb::non_body_parameter::Oneof::QueryParameterSubSchema(query)),
                    })),
                })),
            }
        })
        .collect();
    let vendor_extension = patch
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, v)| pb::NamedAny {
                    name: k.clone(),
                    value: Some(pb::Any { yaml: serde_yaml_ng::to_string(v).unwrap_or_default() }),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::NamedPathItem {
        name: name.to_owned(),
        value: Some(pb::PathItem {
            patch: Some(pb::Operation {
                consumes: strings(&patch["consumes"]),
                parameters,
                vendor_extension,
            }),
        }),
    }
}

fn named_schemas(map: Option<&Value>) -> Vec<pb::NamedSchema> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, schema)| pb::NamedSchema {
                    name: name.clone(),
                    value: Some(schema_to_protobuf(schema)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn schema_to_protobuf(schema: &Value) -> pb::Schema {
    let empty = Map::new();
    let map = schema.as_object().unwrap_or(&empty);
    let string = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    pb::Schema {
        r#ref: string("$ref"),
        format: string("format"),
        title: string("title"),
        description: string("description"),
        required: map.get("required").map(strings).unwrap_or_default(),
        additional_properties: map.get("additionalProperties").and_then(|v| match v {
            Value::Bool(b) => Some(Box::new(pb::AdditionalPropertiesItem {
                oneof: Some(pb::additional_properties_item::Oneof::Boolean(*b)),
            })),
            Value::Object(_) => Some(Box::new(pb::AdditionalPropertiesItem {
                oneof: Some(pb::additional_properties_item::Oneof::Schema(Box::new(
                    schema_to_protobuf(v),
                ))),
            })),
            _ => None,
        }),
        r#type: map.get("type").map(|v| pb::TypeItem { value: strings(v) }),
        items: map.get("items").map(|v| pb::ItemsItem {
            schema: match v {
                Value::Array(a) => a.iter().map(schema_to_protobuf).collect(),
                other => vec![schema_to_protobuf(other)],
            },
        }),
        properties: map
            .get("properties")
            .map(|p| pb::Properties { additional_properties: named_schemas(Some(p)) }),
        vendor_extension: map
            .iter()
            .filter(|(k, _)| k.starts_with("x-"))
            .map(|(k, v)| pb::NamedAny {
                name: k.clone(),
                value: Some(pb::Any { yaml: serde_yaml_ng::to_string(v).unwrap_or_default() }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_has_a_document_per_group_version_with_paths_that_name_their_kinds() {
        let paths: Vec<&str> = V3.iter().map(|(p, _, _)| p.as_str()).collect();
        for want in ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/policy/v1"] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let (_, hash, body) = V3.iter().find(|(p, _, _)| p == "apis/apps/v1").unwrap();
        assert_eq!(hash.len(), 16);
        let text = std::str::from_utf8(body).unwrap();
        assert!(!text.contains("#/definitions/"), "every $ref points into components/schemas");
        let doc: Value = serde_json::from_slice(body).unwrap();
        let get = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["get"];
        assert_eq!(get["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let schema = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        assert!(doc["components"]["schemas"][schema]["properties"]["spec"].is_object(), "{schema}");
        let core: Value = serde_json::from_slice(&V3[0].2).unwrap();
        assert!(core["paths"]["/api/v1/nodes/{name}"]["get"].is_object(), "cluster-scoped path");
    }

    #[test]
    fn every_served_kind_has_a_definition_with_its_gvk() {
        let doc = document();
        let definitions = doc["definitions"].as_object().expect("definitions");
        for kind in KINDS {
            let found = definitions.values().any(|d| {
                d[GVK_EXTENSION].as_array().is_some_and(|l| {
                    l.iter().any(|g| {
                        g["group"] == kind.group
                            && g["version"] == kind.version
                            && g["kind"] == kind.kind
                    })
                })
            });
            assert!(found, "no definition for {}/{}", kind.api_version, kind.kind);
        }
        let spec = &definitions["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
        // The patch strategies of the Go types, where the served kinds reach them.
        let containers = &definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let volumes = &definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let strategy = &spec["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let taints = &definitions["io.k8s.api.core.v1.NodeSpec"]["properties"]["taints"];
        assert!(taints.get("x-kubernetes-patch-strategy").is_none(), "taints are replaced");
        assert_eq!(
            spec["properties"]["template"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
        );
        // Every reference resolves inside the document.
        let text = serde_json::to_string(&doc).expect("json");
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or_default();
            let name = target.strip_prefix("#/definitions/").expect("local ref");
            assert!(definitions.contains_key(name), "dangling $ref {target}");
        }
        let ios = &definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(
            (ios["type"].as_str(), ios["format"].as_str()),
            (Some("string"), Some("int-or-string"))
        );
    }

    #[test]
    fn protobuf_decodes_back() {
        let doc = document();
        let bytes = to_protobuf(&doc).encode_to_vec();
        let decoded = pb::Document::decode(bytes.as_slice()).expect("decode");
        assert_eq!(decoded.swagger, "2.0");
        let defs = decoded.definitions.expect("definitions").additional_properties;
        assert_eq!(defs.len(), doc["definitions"].as_object().map_or(0, Map::len));
        let deployment = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
            .and_then(|d| d.value.as_ref())
            .expect("Deployment");
        let gvk = deployment
            .vendor_extension
            .iter()
            .find(|e| e.name == GVK_EXTENSION)
            .and_then(|e| e.value.as_ref())
            .expect("gvk extension");
        let parsed: Value = serde_yaml_ng::from_str(&gvk.yaml).expect("yaml");
        assert_eq!(parsed, json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }]));
        let spec = deployment
            .properties
            .as_ref()
            .and_then(|p| p.additional_properties.iter().find(|p| p.name == "spec"))
            .and_then(|p| p.value.as_ref())
            .expect("spec");
        assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
    }
}
