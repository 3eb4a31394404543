//! Server-side printing: the `meta.k8s.io/v1 Table` that `kubectl get`
//! asks for, with the columns kubectl users know (priority-1 columns are
//! the extra ones of `-o wide`).

use serde_json::{Value, json};

use crate::api::Query;
use crate::object::unix_now;
use crate::registry::Kind;

/// `HumanDuration` of Kubernetes' `duration` package.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value, now: i64) -> String {
    let created = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    match created {
        Some(c) => human_duration(now - c),
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".into() } else { text }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

fn selector_text(sel: &Value) -> String {
    let labels = sel.get("matchLabels").unwrap_or(sel);
    or_none(join(labels.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", s(v)))))
}

fn containers(template_spec: &Value) -> (String, String) {
    let cs = template_spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    (join(cs.iter().map(|c| s(&c["name"]))), join(cs.iter().map(|c| s(&c["image"]))))
}

/// Column definitions (name, type, priority) and the cells of one object.
fn columns(kind: &Kind) -> Vec<(&'static str, &'static str, u8)> {
    let mut cols = vec![("Name", "string", 0)];
    cols.extend(match kind.kind {
        "Pod" => vec![
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "integer", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Node" => vec![
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Namespace" => vec![("Status", "string", 0), ("Age", "string", 0)],
        "Service" => vec![
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Deployment" => vec![
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "DaemonSet" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" | "Secret" if kind.kind == "Secret" => {
            vec![("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)]
        }
        "ConfigMap" => vec![("Data", "integer", 0), ("Age", "string", 0)],
        "ServiceAccount" => vec![("Secrets", "integer", 0), ("Age", "string", 0)],
        "Endpoints" => vec![("Endpoints", "string", 0), ("Age", "string", 0)],
        "Lease" => vec![("Holder", "string", 0), ("Age", "string", 0)],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        "StatefulSet" => vec![
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "PodDisruptionBudget" => vec![
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _ => vec![("Age", "string", 0)],
    });
    cols
}

fn cells(kind: &Kind, o: &Value, now: i64) -> Vec<Value> {
    let spec = &o["spec"];
    let status = &o["status"];
    let n = |v: &Value| json!(v.as_i64().unwrap_or(0));
    let mut row = vec![json!(s(&o["metadata"]["name"]))];
    row.extend(match kind.kind {
        "Pod" => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses =
                status["containerStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
            let mut phase = s(&status["reason"]);
            if phase.is_empty() {
                phase = s(&status["phase"]);
            }
            for c in statuses {
                if let Some(reason) = c["state"]["waiting"]["reason"].as_str() {
                    phase = reason.to_owned();
                }
            }
            if !o["metadata"]["deletionTimestamp"].is_null() {
                phase = "Terminating".into();
            }
            vec![
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts),
                json!(age(o, now)),
                json!(or_none(s(&status["podIP"]))),
                json!(or_none(s(&spec["nodeName"]))),
                json!(or_none(s(&status["nominatedNodeName"]))),
                json!("<none>"),
            ]
        }
        "Node" => {
            let conditions = status["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready = conditions.iter().find(|c| c["type"] == "Ready");
            let mut state = match ready.map(|c| s(&c["status"])) {
                Some(x) if x == "True" => "Ready".to_owned(),
                _ => "NotReady".to_owned(),
            };
            if spec["unschedulable"] == true {
                state.push_str(",SchedulingDisabled");
            }
            let roles = join(o["metadata"]["labels"].as_object().into_iter().flatten().filter_map(
                |(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_owned),
            ));
            let address = |t: &str| {
                status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(&a["address"]))
            };
            let info = &status["nodeInfo"];
            vec![
                json!(state),
                json!(or_none(roles)),
                json!(age(o, now)),
                json!(s(&info["kubeletVersion"])),
                json!(or_none(address("InternalIP").unwrap_or_default())),
                json!(or_none(address("ExternalIP").unwrap_or_default())),
                json!(or_none(s(&info["osImage"]))),
                json!(or_none(s(&info["kernelVersion"]))),
                json!(or_none(s(&info["containerRuntimeVersion"]))),
            ]
        }
        "Namespace" => vec![json!(s(&status["phase"])), json!(age(o, now))],
        "Service" => {
            let ports = join(spec["ports"].as_array().into_iter().flatten().map(|p| {
                let node = p["nodePort"].as_i64().map(|np| format!(":{np}")).unwrap_or_default();
                format!("{}{node}/{}", s(&p["port"]), s(&p["protocol"]))
            }));
            let external = join(spec["externalIPs"].as_array().into_iter().flatten().map(s));
            let external = if external.is_empty() && spec["type"] == "LoadBalancer" {
                "<pending>".into()
            } else {
                or_none(external)
            };
            vec![
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(external),
                json!(or_none(ports)),
                json!(age(o, now)),
                json!(selector_text(&spec["selector"])),
            ]
        }
        "Deployment" => {
            let (names, images) = containers(&spec["template"]["spec"]);
            vec![
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                n(&status["updatedReplicas"]),
                n(&status["availableReplicas"]),
                json!(age(o, now)),
                json!(names),
                json!(images),
                json!(selector_text(&spec["selector"])),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (names, images) = containers(&spec["template"]["spec"]);
            vec![
                n(&spec["replicas"]),
                n(&status["replicas"]),
                n(&status["readyReplicas"]),
                json!(age(o, now)),
                json!(names),
                json!(images),
                json!(selector_text(&spec["selector"])),
            ]
        }
        "DaemonSet" => vec![
            n(&status["desiredNumberScheduled"]),
            n(&status["currentNumberScheduled"]),
            n(&status["numberReady"]),
            n(&status["updatedNumberScheduled"]),
            n(&status["numberAvailable"]),
            json!(selector_text(&spec["template"]["spec"]["nodeSelector"])),
            json!(age(o, now)),
        ],
        "Secret" => vec![
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |d| d.len())),
            json!(age(o, now)),
        ],
        "ConfigMap" => {
            let count = o["data"].as_object().map_or(0, |d| d.len())
                + o["binaryData"].as_object().map_or(0, |d| d.len());
            vec![json!(count), json!(age(o, now))]
        }
        "ServiceAccount" => {
            vec![json!(o["secrets"].as_array().map_or(0, Vec::len)), json!(age(o, now))]
        }
        "Endpoints" => {
            let eps = join(o["subsets"].as_array().into_iter().flatten().flat_map(|ss| {
                let ports: Vec<String> =
                    ss["ports"].as_array().into_iter().flatten().map(|p| s(&p["port"])).collect();
                ss["addresses"].as_array().into_iter().flatten().flat_map(move |a| {
                    let ip = s(&a["ip"]);
                    ports.clone().into_iter().map(move |p| format!("{ip}:{p}"))
                })
            }));
            vec![json!(or_none(eps)), json!(age(o, now))]
        }
        "Lease" => vec![json!(or_none(s(&spec["holderIdentity"]))), json!(age(o, now))],
        "RoleBinding" | "ClusterRoleBinding" => {
            let of = |kind: &str| {
                let names: Vec<String> = o["subjects"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter(|x| x["kind"] == kind)
                    .map(|x| match x["namespace"].as_str() {
                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{}", s(&x["name"])),
                        _ => s(&x["name"]).to_owned(),
                    })
                    .collect();
                names.join(", ")
            };
            vec![
                json!(format!("{}/{}", s(&o["roleRef"]["kind"]), s(&o["roleRef"]["name"]))),
                json!(age(o, now)),
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        "StatefulSet" => {
            let (names, images) = containers(&spec["template"]["spec"]);
            vec![
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                json!(age(o, now)),
                json!(names),
                json!(images),
            ]
        }
        "PodDisruptionBudget" => {
            let bound = |v: &Value| match v {
                Value::Null => "N/A".to_owned(),
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            vec![
                json!(bound(&spec["minAvailable"])),
                json!(bound(&spec["maxUnavailable"])),
                n(&status["disruptionsAllowed"]),
                json!(age(o, now)),
            ]
        }
        "Event" => {
            let obj = &o["involvedObject"];
            vec![
                json!(age(o, now)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!("{}/{}", s(&obj["kind"]).to_lowercase(), s(&obj["name"]))),
                json!(s(&o["message"])),
            ]
        }
        _ => vec![json!(age(o, now))],
    });
    row
}

/// A Table of the items of `list`.
pub fn list_table(kind: &Kind, list: &Value, query: &Query) -> Value {
    let now = unix_now();
    let include = query.get("includeObject").map(String::as_str).unwrap_or("Metadata");
    let definitions: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({ "name": name, "type": ty, "format": format, "description": "", "priority": priority })
        })
        .collect();
    let rows: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"] }),
            };
            json!({ "cells": cells(kind, o, now), "object": object })
        })
        .collect();
    let mut metadata = json!({ "resourceVersion": list["metadata"]["resourceVersion"] });
    if let Some(c) = list["metadata"].get("continue") {
        metadata["continue"] = c.clone();
    }
    json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows })
}

/// A watch line with its object printed as a one-row Table (BOOKMARK and
/// ERROR lines are returned as they are: `None`).
pub fn watch_line(kind: &Kind, line: &[u8], query: &Query) -> Option<bytes::Bytes> {
    let event: Value = serde_json::from_slice(line).ok()?;
    if !matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
        return None;
    }
    let object = &event["object"];
    let list = json!({ "metadata": { "resourceVersion": object["metadata"]["resourceVersion"] }, "items": [object] });
    let mut out = serde_json::to_vec(
        &json!({ "type": event["type"], "object": list_table(kind, &list, query) }),
    )
    .ok()?;
    out.push(b'\n');
    Some(bytes::Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400), "3d");
        assert_eq!(human_duration(800 * 86_400), "2y");
    }

    #[test]
    fn pod_rows() {
        let pods = crate::registry::lookup("", "v1", "pods").expect("pods");
        let list = json!({"metadata": {"resourceVersion": "7"}, "items": [{
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{"ready": true, "restartCount": 2}]}}]});
        let table = list_table(pods, &list, &Query::new());
        assert_eq!(table["columnDefinitions"].as_array().map(Vec::len), Some(9));
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], 2);
        assert_eq!(cells[6], "n1");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    }
}
