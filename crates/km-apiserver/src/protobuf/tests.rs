//! The protobuf encoding against itself (every served kind round-trips) and against the
//! messages the kube-rs project generates from the same definitions (`k8s-pb`): bytes km writes
//! decode as those types, and bytes those types write decode in km to the same object.

use prost::Message as _;
use serde_json::{Value, json};

use super::*;
use crate::registry::KINDS;

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": "6f1c4d1e-0000-4000-8000-000000000001",
           "resourceVersion": "42", "generation": 3, "creationTimestamp": "2026-12-04T10:00:00Z",
           "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "x"},
           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                "uid": "u-1", "controller": true, "blockOwnerDeletion": true}],
           "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                              "time": "2026-12-04T10:00:00Z", "fieldsType": "FieldsV1",
                              "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]})
}

fn pod_spec() -> Value {
    json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 0,
           "automountServiceAccountToken": false, "nodeName": "n1",
           "nodeSelector": {"zone": "a"},
           "containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "3600"],
                           "env": [{"name": "A", "value": "1"},
                                   {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                           "ports": [{"containerPort": 80, "hostPort": 31000, "protocol": "TCP"}],
                           "resources": {"limits": {"cpu": "250m", "memory": "64Mi"},
                                         "requests": {"cpu": "100m"}},
                           "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                              "periodSeconds": 5},
                           "livenessProbe": {"tcpSocket": {"port": 80}},
                           "securityContext": {"runAsUser": 0, "privileged": false}}],
           "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}},
                       {"name": "s", "secret": {"secretName": "s", "defaultMode": 420}}]})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()})
}

/// A rich object of every served kind.
fn sample(kind: &str, api_version: &str) -> Value {
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": meta("x")});
    let body = match kind {
        "Namespace" => json!({"spec": {"finalizers": ["kubernetes"]},
                              "status": {"phase": "Active"}}),
        "Pod" => json!({"spec": pod_spec(),
                        "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "127.0.0.1",
                                   "startTime": "2026-12-04T10:00:01Z",
                                   "conditions": [{"type": "Ready", "status": "True",
                                                   "lastTransitionTime": "2026-12-04T10:00:02Z"}],
                                   "containerStatuses": [{"name": "c", "ready": true,
                                       "restartCount": 0, "image": "busybox:1", "imageID": "",
                                       "state": {"running": {"startedAt": "2026-12-04T10:00:01Z"}}}]}}),
        "Node" => json!({"spec": {"providerID": "mesos://a1", "unschedulable": true},
                         "status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                                    "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}],
                                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}),
        "Service" => json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.10",
                                     "selector": {"app": "web"},
                                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                                "nodePort": 30080, "protocol": "TCP"},
                                               {"name": "named", "port": 81, "targetPort": "http"}]},
                            "status": {"loadBalancer": {}}}),
        "Endpoints" => json!({"subsets": [{"addresses": [{"ip": "10.0.0.5", "nodeName": "n1",
                                  "targetRef": {"kind": "Pod", "name": "p", "namespace": "default"}}],
                              "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}),
        "Event" => json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                          "reason": "Scheduled", "message": "placed", "type": "Normal", "count": 2,
                          "firstTimestamp": "2026-12-04T10:00:00Z",
                          "eventTime": "2026-12-04T10:00:00.123456Z",
                          "source": {"component": "km-scheduler"}}),
        "ConfigMap" => json!({"data": {"a": "b", "empty": ""},
                              "binaryData": {"bin": "AAEC"}, "immutable": false}),
        "Secret" => json!({"type": "Opaque", "data": {"password": "c2VjcmV0", "none": ""},
                           "stringData": {"plain": "text"}}),
        "ServiceAccount" => json!({"secrets": [{"name": "token"}],
                                   "automountServiceAccountToken": true}),
        "ReplicationController" => json!({"spec": {"replicas": 0, "selector": {"app": "web"},
                                                   "template": template()},
                                          "status": {"replicas": 0, "observedGeneration": 3}}),
        "ReplicaSet" | "DaemonSet" | "Deployment" => {
            let mut spec = json!({"selector": {"matchLabels": {"app": "web"},
                                               "matchExpressions": [{"key": "tier",
                                                   "operator": "In", "values": ["front"]}]},
                                  "template": template()});
            if kind != "DaemonSet" {
                spec["replicas"] = json!(0);
            }
            if kind == "Deployment" {
                spec["strategy"] = json!({"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}});
                spec["revisionHistoryLimit"] = json!(0);
            }
            let status = if kind == "DaemonSet" {
                json!({"observedGeneration": 3, "numberReady": 2, "desiredNumberScheduled": 2,
                       "currentNumberScheduled": 2, "numberMisscheduled": 0})
            } else {
                json!({"observedGeneration": 3, "replicas": 2})
            };
            json!({"spec": spec, "status": status})
        }
        "Job" => json!({"spec": {"backoffLimit": 0, "completions": 1, "parallelism": 1,
                                 "template": {"spec": {"restartPolicy": "Never",
                                     "containers": [{"name": "c", "image": "busybox:1"}]}}},
                        "status": {"succeeded": 1,
                                   "completionTime": "2026-12-04T10:01:00Z"}}),
        "CronJob" => json!({"spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
                                     "successfulJobsHistoryLimit": 0, "suspend": false,
                                     "jobTemplate": {"spec": {"template": {"spec": {
                                         "restartPolicy": "OnFailure",
                                         "containers": [{"name": "c", "image": "busybox:1"}]}}}}},
                            "status": {"lastScheduleTime": "2026-12-04T10:00:00Z"}}),
        "Lease" => json!({"spec": {"holderIdentity": "km-1", "leaseDurationSeconds": 15,
                                   "renewTime": "2026-12-04T10:00:00.500000Z",
                                   "acquireTime": "2026-12-04T09:59:00.000000Z",
                                   "leaseTransitions": 0}}),
        "StatefulSet" => json!({"spec": {"replicas": 0, "serviceName": "web",
                                         "selector": {"matchLabels": {"app": "web"}},
                                         "podManagementPolicy": "Parallel",
                                         "updateStrategy": {"type": "RollingUpdate",
                                                            "rollingUpdate": {"partition": 0, "maxUnavailable": "50%"}},
                                         "template": template(),
                                         "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                             "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}}]},
                                "status": {"replicas": 0, "availableReplicas": 0, "currentRevision": "web-1"}}),
        "PodDisruptionBudget" => json!({"spec": {"minAvailable": "50%",
                                                  "selector": {"matchLabels": {"app": "web"}},
                                                  "unhealthyPodEvictionPolicy": "AlwaysAllow"},
                                         "status": {"currentHealthy": 2, "desiredHealthy": 1,
                                                    "disruptionsAllowed": 1, "expectedPods": 3,
                                                    "observedGeneration": 3}}),
        "ClusterRole" | "Role" => json!({"rules": [
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"], "resourceNames": ["a"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]}),
        "ClusterRoleBinding" | "RoleBinding" => json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"},
                         {"kind": "ServiceAccount", "name": "bot", "namespace": "x"}]}),
        other => panic!("no sample for {other}: add one"),
    };
    let (Value::Object(o), Value::Object(b)) = (&mut obj, body) else { unreachable!() };
    o.extend(b);
    obj
}

/// Every served kind, plus the lists and `Status` the server also writes.
fn samples() -> Vec<Value> {
    let mut out: Vec<Value> = KINDS.iter().map(|k| sample(k.kind, k.api_version)).collect();
    let items: Vec<Value> = out.iter().filter(|o| o["kind"] == "Pod").cloned().collect();
    out.push(json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "42", "continue": "abc"},
                    "items": items.iter().map(|p| {
                        let mut p = p.clone();
                        let m = p.as_object_mut().unwrap();
                        m.remove("apiVersion");
                        m.remove("kind");
                        p
                    }).collect::<Vec<_>>()}));
    out.push(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "message": "pods \"p\" not found", "reason": "NotFound",
                    "details": {"name": "p", "kind": "pods"}, "code": 404}));
    out
}

/// Where two JSON values first differ, for a readable failure.
fn diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                if let Some(d) = diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                ) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| diff(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}

fn same(back: &Value, obj: &Value) {
    if let Some(d) = diff(back, obj, "") {
        panic!("{}: {d}", obj["kind"]);
    }
}

#[test]
fn every_served_kind_round_trips() {
    for obj in samples() {
        let bytes = encode(&obj).unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]));
        assert!(bytes.starts_with(b"k8s\0"));
        let back = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]));
        same(&back, &obj);
    }
}

/// Decodes `raw` as the generated type `T`, re-encodes it with the generated code, wraps it in
/// an envelope written with the generated `runtime.Unknown`, and decodes that in km.
fn through<T: prost::Message + Default>(obj: &Value) -> Value {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let bytes = encode(obj).expect("km encodes");
    let envelope = Unknown::decode(&bytes[4..]).expect("the envelope decodes as runtime.Unknown");
    let tm = envelope.type_meta.clone().expect("typeMeta");
    assert_eq!(tm.api_version.as_deref(), obj["apiVersion"].as_str());
    assert_eq!(tm.kind.as_deref(), obj["kind"].as_str());
    let typed = T::decode(envelope.raw()).expect("km's bytes decode as the generated type");
    let again = Unknown {
        type_meta: Some(TypeMeta { api_version: tm.api_version, kind: tm.kind }),
        raw: Some(typed.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(again.encode_to_vec());
    decode(&body).expect("the generated types' bytes decode in km")
}

#[test]
fn bytes_agree_with_the_generated_types_for_every_served_kind() {
    use k8s_pb::api::{apps, batch, coordination, core};
    for obj in samples() {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let back = match kind.as_str() {
            "Namespace" => through::<core::v1::Namespace>(&obj),
            "Pod" => through::<core::v1::Pod>(&obj),
            "Node" => through::<core::v1::Node>(&obj),
            "Service" => through::<core::v1::Service>(&obj),
            "Endpoints" => through::<core::v1::Endpoints>(&obj),
            "Event" => through::<core::v1::Event>(&obj),
            "ConfigMap" => through::<core::v1::ConfigMap>(&obj),
            "Secret" => through::<core::v1::Secret>(&obj),
            "ServiceAccount" => through::<core::v1::ServiceAccount>(&obj),
            "ReplicationController" => through::<core::v1::ReplicationController>(&obj),
            "ReplicaSet" => through::<apps::v1::ReplicaSet>(&obj),
            "Deployment" => through::<apps::v1::Deployment>(&obj),
            "DaemonSet" => through::<apps::v1::DaemonSet>(&obj),
            "Job" => through::<batch::v1::Job>(&obj),
            "CronJob" => through::<batch::v1::CronJob>(&obj),
            "Lease" => through::<coordination::v1::Lease>(&obj),
            "StatefulSet" => through::<apps::v1::StatefulSet>(&obj),
            "PodDisruptionBudget" => through::<k8s_pb::api::policy::v1::PodDisruptionBudget>(&obj),
            "PodList" => through::<core::v1::PodList>(&obj),
            "ClusterRole" => through::<k8s_pb::api::rbac::v1::ClusterRole>(&obj),
            "ClusterRoleBinding" => through::<k8s_pb::api::rbac::v1::ClusterRoleBinding>(&obj),
            "Role" => through::<k8s_pb::api::rbac::v1::Role>(&obj),
            "RoleBinding" => through::<k8s_pb::api::rbac::v1::RoleBinding>(&obj),
            "Status" => through::<k8s_pb::apimachinery::pkg::apis::meta::v1::Status>(&obj),
            other => panic!("no generated type named for {other}: add it"),
        };
        same(&back, &obj);
    }
}

/// What Go writes: every non-pointer field, zero or not. Zeros of pointer fields stay (they
/// are not "unset"); zeros Go's JSON leaves out are left out.
#[test]
fn go_style_zeros_mean_what_they_mean_in_json() {
    use k8s_pb::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let go = Deployment {
        metadata: Some(ObjectMeta {
            name: Some("web".into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(Time { seconds: Some(0), nanos: Some(0) }),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(0),
            min_ready_seconds: Some(0),
            paused: Some(false),
            revision_history_limit: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(
        k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
            }),
            raw: Some(go.encode_to_vec()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let obj = decode(&body).expect("decodes");
    assert_eq!(obj["metadata"], json!({"name": "web"}), "Go's JSON omits these zeros");
    assert_eq!(obj["spec"], json!({"replicas": 0, "revisionHistoryLimit": 0}));
}

#[test]
fn bad_bodies_are_named_errors() {
    assert!(matches!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtoError::NoMagic)));
    assert!(matches!(decode(b"k8s\0\xff\xff"), Err(ProtoError::Decode { .. })));
    let unknown = encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"}));
    assert!(matches!(unknown, Err(ProtoError::UnknownType { .. })), "{unknown:?}");
    let wrong = encode(&json!({"apiVersion": "v1", "kind": "Pod",
                               "spec": {"containers": [{"name": 7}]}}));
    match wrong {
        Err(e) => {
            assert!(e.to_string().starts_with("spec.containers[0].name: expected a string"), "{e}")
        }
        Ok(_) => panic!("a number is not a container name"),
    }
    let big = encode(&json!({"apiVersion": "v1", "kind": "Pod",
                             "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1e12}]}]}}));
    assert!(big.is_err(), "a port past 32 bits is refused, not truncated");
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
    let pod = sample("Pod", "v1");
    let line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": pod})).unwrap();
    let frame = watch_line_to_frame(&line).expect("frame");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let event = WatchEvent::decode(&frame[4..]).expect("a meta.v1.WatchEvent");
    assert_eq!(event.r#type.as_deref(), Some("MODIFIED"));
    let raw = event.object.and_then(|o| o.raw).expect("object.raw");
    assert_eq!(decode(&raw).expect("an encoded object"), pod);
}

#[test]
fn accept_headers_choose_protobuf_only_when_it_comes_first() {
    assert!(preferred("application/vnd.kubernetes.protobuf, */*"));
    assert!(preferred("application/vnd.kubernetes.protobuf;stream=watch"));
    assert!(!preferred("application/json, application/vnd.kubernetes.protobuf"));
    assert!(!preferred("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
    assert!(!preferred("*/*"));
    assert!(!preferred(""));
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(!is_protobuf("application/json"));
}

#[test]
fn go_durations_read_and_write() {
    for (text, nanos) in [
        ("0s", 0),
        ("1h0m0s", 3_600_000_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5s", 1_500_000_000),
        ("300ms", 300_000_000),
        ("-2s", -2_000_000_000),
    ] {
        assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
        assert_eq!(format_go_duration(nanos), text);
    }
    assert_eq!(parse_go_duration("90m"), Some(5_400_000_000_000));
    assert_eq!(parse_go_duration("soon"), None);
    assert_eq!(parse_go_duration("1y"), None);
}

/// A body whose managedFields hold a body whose managedFields hold a body … decodes without
/// recursing: FieldsV1 is JSON, never a nested protobuf body.
#[test]
fn nested_bodies_cannot_recurse_the_stack_away() {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let wrap = |inner: Vec<u8>| {
        let pod = k8s_pb::api::core::v1::Pod {
            metadata: Some(ObjectMeta {
                name: Some("p".into()),
                managed_fields: vec![ManagedFieldsEntry {
                    fields_v1: Some(FieldsV1 { raw: Some(inner) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(
            Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                }),
                raw: Some(pod.encode_to_vec()),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        body
    };
    let mut body = b"{}".to_vec();
    for _ in 0..20_000 {
        body = wrap(body);
    }
    let obj = decode(&body).expect("decodes");
    assert_eq!(obj["metadata"]["managedFields"][0]["fieldsV1"], Value::Null, "not JSON: dropped");
}

#[test]
fn lists_encoded_item_by_item_decode_as_the_lists_encoded_whole() {
    let list = samples().into_iter().find(|o| o["kind"] == "PodList").expect("a PodList sample");
    let items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty());
    let whole = encode(&list).expect("whole");
    let streamed = encode_list::<()>("v1", "PodList", &list["metadata"], items.into_iter().map(Ok))
        .expect("items")
        .expect("encoded");
    // The same message (fields in number order here, in the value's key order there).
    assert_eq!(streamed.len(), whole.len());
    assert_eq!(decode(&streamed).expect("decodes"), decode(&whole).expect("decodes"));
    assert!(
        encode_list::<()>("v1", "NoSuchList", &json!({}), std::iter::empty()).expect("ok").is_err()
    );
}
