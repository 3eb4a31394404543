//! Pod garbage collection: finished pods beyond `--terminated-pod-gc-threshold` (oldest first),
//! and pods bound to nodes that do not exist — after the node has been missing for a
//! quarantine period and a live read confirms it, since a pod may be bound a moment before its
//! Node is registered.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::Ctx;

/// How long a pod's node must be missing before the pod is removed.
pub const QUARANTINE_SECONDS: i64 = 40;

/// Pods to delete (namespace, name, uid): finished ones beyond `threshold`, and those whose
/// node has been missing since before `now - QUARANTINE_SECONDS` (by `missing_since`, updated
/// here: pods whose node is back are forgotten).
pub fn plan(
    pods: &[&Pod],
    nodes: &HashSet<String>,
    threshold: usize,
    missing_since: &mut HashMap<String, Timestamp>,
    now: Timestamp,
) -> Vec<(String, String, String)> {
    let id = |p: &Pod| {
        (
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
            p.metadata.uid.clone().unwrap_or_default(),
        )
    };
    let mut out = Vec::new();
    if threshold > 0 {
        let mut finished: Vec<&&Pod> = pods
            .iter()
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        if finished.len() > threshold {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            out.extend(finished[..finished.len() - threshold].iter().map(|p| id(p)));
        }
    }
    let mut seen = HashSet::new();
    for p in pods {
        let Some(node) =
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
        else {
            continue;
        };
        if nodes.contains(node) {
            continue;
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        seen.insert(uid.clone());
        let since = *missing_since.entry(uid).or_insert(now);
        if now.as_second() - since.as_second() >= QUARANTINE_SECONDS
            && !out.iter().any(|o| o.2 == id(p).2)
        {
            out.push(id(p));
        }
    }
    missing_since.retain(|uid, _| seen.contains(uid));
    out
}

/// One pass.
pub async fn collect(
    ctx: &Ctx,
    missing_since: &mut HashMap<String, Timestamp>,
) -> Result<usize, kube::Error> {
    let pods = ctx.caches.pods.state();
    let refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let nodes: HashSet<String> =
        ctx.caches.nodes.state().iter().filter_map(|n| n.metadata.name.clone()).collect();
    let victims =
        plan(&refs, &nodes, ctx.terminated_pod_gc_threshold, missing_since, Timestamp::now());
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let mut done = 0;
    for (ns, name, uid) in victims {
        let pod = refs.iter().find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
        let node =
            pod.and_then(|p| p.spec.as_ref()).and_then(|s| s.node_name.clone()).unwrap_or_default();
        let finished = pod
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        if !finished && !node.is_empty() && node_api.get_opt(&node).await?.is_some() {
            continue;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(ctx.client.clone(), &ns).delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "garbage-collected");
                done += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, phase: &str, node: &str, created: i64) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("u-{name}"),
                "creationTimestamp": Timestamp::from_second(1_700_000_000 + created).expect("t").to_string() },
            "spec": { "containers": [], "nodeName": node },
            "status": { "phase": phase },
        }))
        .expect("pod")
    }

    #[test]
    fn the_oldest_finished_pods_beyond_the_threshold_go() {
        let pods = [
            pod("a", "Succeeded", "n", 1),
            pod("b", "Failed", "n", 2),
            pod("c", "Succeeded", "n", 3),
            pod("d", "Running", "n", 0),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let nodes: HashSet<String> = ["n".to_owned()].into();
        let out = plan(&refs, &nodes, 1, &mut HashMap::new(), Timestamp::now());
        let names: Vec<&str> = out.iter().map(|o| o.1.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn pods_on_missing_nodes_go_after_the_quarantine() {
        let pods = [pod("lost", "Running", "gone", 0), pod("fine", "Running", "n", 0)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let nodes: HashSet<String> = ["n".to_owned()].into();
        let mut since = HashMap::new();
        let t0 = Timestamp::from_second(1_800_000_000).expect("t");
        assert!(plan(&refs, &nodes, 0, &mut since, t0).is_empty());
        let later = Timestamp::from_second(t0.as_second() + QUARANTINE_SECONDS).expect("t");
        let out = plan(&refs, &nodes, 0, &mut since, later);
        assert_eq!(out.iter().map(|o| o.1.as_str()).collect::<Vec<_>>(), ["lost"]);
        // The node came back: the pod is forgiven.
        let back: HashSet<String> = ["n".to_owned(), "gone".to_owned()].into();
        assert!(plan(&refs, &back, 0, &mut since, later).is_empty());
        assert!(since.is_empty());
    }
}
