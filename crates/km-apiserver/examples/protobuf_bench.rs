//! What Kubernetes' protobuf encoding costs km apiserver, next to JSON: encoding and decoding
//! a typical Pod (as stored, with status) and a list of 500 of them, per operation.
//!
//! ```sh
//! cargo run --release -p km-apiserver --example protobuf_bench -- [rounds]
//! ```

#![allow(clippy::print_stdout)]

use std::time::Instant;

use km_apiserver::protobuf;
use serde_json::{Value, json};

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i}"), "namespace": "default",
                     "uid": "6f1c4d1e-0000-4000-8000-000000000001", "resourceVersion": "4242",
                     "creationTimestamp": "2026-12-04T10:00:00Z",
                     "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "web-5d8f7c9b4", "uid": "u-1",
                                          "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                                 "ports": [{"containerPort": 80, "hostPort": 31000, "protocol": "TCP"}],
                                 "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                                 "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                                 "terminationMessagePath": "/dev/termination-log",
                                 "terminationMessagePolicy": "File",
                                 "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                 "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "nodeName": "mesos-agent-1", "securityContext": {}},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "127.0.0.1",
                   "startTime": "2026-12-04T10:00:01Z", "qosClass": "Burstable",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-12-04T10:00:02Z"}],
                   "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                                          "image": "nginx:1.25", "imageID": "", "started": true,
                                          "state": {"running": {"startedAt": "2026-12-04T10:00:01Z"}}}]}
    })
}

fn per_op(rounds: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let one = pod(0);
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                      "items": (0..500).map(pod).collect::<Vec<_>>()});
    for (what, obj, n) in [("pod", &one, rounds), ("list of 500 pods", &list, rounds / 500 + 1)] {
        let proto = protobuf::encode(obj)?;
        let text = serde_json::to_vec(obj)?;
        let enc_pb = per_op(n, || drop(protobuf::encode(obj)));
        let dec_pb = per_op(n, || drop(protobuf::decode(&proto)));
        let enc_js = per_op(n, || drop(serde_json::to_vec(obj)));
        let dec_js = per_op(n, || drop(serde_json::from_slice::<Value>(&text)));
        println!(
            "{what}: protobuf {} bytes, encode {enc_pb:.1} µs, decode {dec_pb:.1} µs | JSON {} bytes, encode {enc_js:.1} µs, decode {dec_js:.1} µs",
            proto.len(),
            text.len()
        );
    }
    Ok(())
}
