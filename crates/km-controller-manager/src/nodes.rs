//! Node lifecycle from the Mesos cloud provider (`--cloud-provider=mesos`): the Nodes of Mesos
//! agents follow the agents.
//! - an active agent has a Node (created if missing, with its addresses and capacity);
//! - an agent that runs no km executor keeps a fresh `Ready` condition (the executor heartbeats
//!   the Nodes it runs on; k8sm's StatusUpdater did this for idle agents), so idle agents stay
//!   schedulable;
//! - an agent the master knows but reports disconnected makes its Node NotReady, with the reason;
//! - an agent the master no longer knows, for longer than a grace period, has its Node deleted
//!   and the pods bound to it marked Failed, so their controllers replace them.
//!
//! Only Nodes of Mesos agents (annotated with `k8s.mesosphere.io/agentId`) are touched: a km
//! kubelet's Node on a master host is none of this controller's business.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use km_cloud_provider::{CloudProvider, Instance};
use km_scheduler_core::task::NODE_AGENT_ID;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Ctx;

/// How often an idle agent's Ready condition is refreshed (the kubelet's status period).
pub const HEARTBEAT_SECONDS: i64 = 10;

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Create {
        instance: Instance,
    },
    Ready {
        node: String,
    },
    NotReady {
        node: String,
        reason: &'static str,
        message: String,
    },
    /// Delete the Node and fail the pods bound to it.
    Remove {
        node: String,
    },
}

fn ready_condition(n: &Node) -> Option<(&str, Option<Timestamp>)> {
    let c = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.as_str(), c.last_heartbeat_time.as_ref().map(|t| t.0)))
}

/// Decides from the agents the master reports and the Nodes in the cache. `missing_since`
/// remembers since when a Node's agent has been unknown (kept up to date here).
pub fn plan(
    instances: &[Instance],
    nodes: &[&Node],
    missing_since: &mut HashMap<String, Timestamp>,
    gone_grace_seconds: i64,
    now: Timestamp,
) -> Vec<Step> {
    let by_host: HashMap<String, &Instance> =
        instances.iter().map(|i| (i.hostname.to_ascii_lowercase(), i)).collect();
    let mut steps = Vec::new();
    let mut agent_nodes: BTreeMap<String, &Node> = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let is_agent =
            n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(NODE_AGENT_ID));
        agent_nodes.insert(name.to_ascii_lowercase(), n);
        if !is_agent {
            continue;
        }
        match by_host.get(&name.to_ascii_lowercase()) {
            Some(i) => {
                missing_since.remove(&name);
                let ready = ready_condition(n);
                if !i.active {
                    if ready.is_none_or(|(s, _)| s != "False") {
                        steps.push(Step::NotReady {
                            node: name,
                            reason: "AgentDisconnected",
                            message: "the Mesos master reports the agent disconnected".into(),
                        });
                    }
                } else if !i.has_km_executor {
                    let stale = ready.is_none_or(|(s, beat)| {
                        s != "True"
                            || beat.is_none_or(|b| {
                                now.as_second() - b.as_second() >= 2 * HEARTBEAT_SECONDS
                            })
                    });
                    if stale {
                        steps.push(Step::Ready { node: name });
                    }
                }
            }
            None => {
                let since = *missing_since.entry(name.clone()).or_insert(now);
                if now.as_second() - since.as_second() >= gone_grace_seconds {
                    steps.push(Step::Remove { node: name });
                } else if ready_condition(n).is_none_or(|(s, _)| s != "False") {
                    steps.push(Step::NotReady {
                        node: name,
                        reason: "AgentGone",
                        message: "the Mesos master no longer knows the agent".into(),
                    });
                }
            }
        }
    }
    for i in instances.iter().filter(|i| i.active) {
        if !agent_nodes.contains_key(&i.hostname.to_ascii_lowercase()) {
            steps.push(Step::Create { instance: i.clone() });
        }
    }
    let known: Vec<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
    missing_since.retain(|name, _| known.contains(name));
    steps
}

fn condition(status: &str, reason: &str, message: &str) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    json!({ "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": now })
}

/// Patches the Ready condition, keeping the other conditions.
async fn set_ready(
    api: &Api<Node>,
    node: &Node,
    cond: serde_json::Value,
) -> Result<(), kube::Error> {
    let mut conditions: Vec<serde_json::Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "Ready")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let mut cond = cond;
    // The transition time stays when the status does not change.
    if let Some(old) = ready_condition(node)
        && Some(old.0) == cond["status"].as_str()
        && let Some(t) = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref())
    {
        cond["lastTransitionTime"] = json!(t.0.to_string());
    }
    conditions.push(cond);
    let patch = json!({ "status": { "conditions": conditions } });
    api.patch_status(
        node.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// One pass against the provider; Nodes of agents unknown for `gone_grace` go.
pub async fn sync(
    ctx: &Ctx,
    cloud: &Arc<dyn CloudProvider>,
    missing_since: &mut HashMap<String, Timestamp>,
    gone_grace: std::time::Duration,
) -> Result<usize, String> {
    let instances =
        cloud.instances().await.map_err(|e| format!("listing the Mesos agents: {e}"))?;
    let nodes = ctx.caches.nodes.state();
    let refs: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
    let grace = i64::try_from(gone_grace.as_secs()).unwrap_or(i64::MAX);
    let steps = plan(&instances, &refs, missing_since, grace, Timestamp::now());
    let api: Api<Node> = Api::all(ctx.client.clone());
    let find =
        |name: &str| nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name)).cloned();
    let mut done = 0;
    for step in steps {
        let result = match &step {
            Step::Create { instance } => {
                let addresses: Vec<serde_json::Value> = instance
                    .addresses
                    .iter()
                    .map(|a| json!({ "type": a.type_.as_str(), "address": a.address }))
                    .collect();
                let node: Node = serde_json::from_value(json!({
                    "metadata": { "name": instance.hostname, "annotations": { NODE_AGENT_ID: instance.agent_id } },
                    "spec": { "externalID": instance.hostname },
                }))
                .map_err(|e| e.to_string())?;
                match api.create(&PostParams::default(), &node).await {
                    Ok(created) => {
                        let capacity = json!({ "cpu": format!("{}", instance.cpus), "memory": format!("{}Mi", instance.mem_mb.floor()) });
                        let patch = json!({ "status": { "addresses": addresses, "capacity": capacity, "allocatable": capacity } });
                        let _ = api
                            .patch_status(
                                &instance.hostname,
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await;
                        set_ready(
                            &api,
                            &created,
                            condition("True", "SlaveReady", "mesos reports ready status"),
                        )
                        .await
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Step::Ready { node } => match find(node) {
                Some(n) => {
                    set_ready(
                        &api,
                        &n,
                        condition("True", "SlaveReady", "mesos reports ready status"),
                    )
                    .await
                }
                None => Ok(()),
            },
            Step::NotReady { node, reason, message } => match find(node) {
                Some(n) => {
                    tracing::info!(%node, reason, "node not ready");
                    set_ready(&api, &n, condition("False", reason, message)).await
                }
                None => Ok(()),
            },
            Step::Remove { node } => {
                tracing::info!(%node, "the Mesos agent is gone: deleting its node and failing its pods");
                fail_pods(ctx, node).await?;
                match api.delete(node, &DeleteParams::default()).await {
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        };
        match result {
            Ok(()) => done += 1,
            Err(e) => tracing::warn!(?step, "node lifecycle: {e}"),
        }
    }
    Ok(done)
}

/// Marks the unfinished pods bound to `node` Failed (reason NodeLost).
async fn fail_pods(ctx: &Ctx, node: &str) -> Result<(), String> {
    let pods: Vec<Arc<Pod>> = ctx.caches.pods.state_filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            && !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
    });
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({ "status": { "phase": "Failed", "reason": "NodeLost",
            "message": format!("node {node}: its Mesos agent is gone") } });
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("failing pod {ns}/{name}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use km_cloud_provider::{NodeAddress, NodeAddressType};

    use super::*;

    fn instance(host: &str, active: bool, executor: bool) -> Instance {
        Instance {
            agent_id: format!("id-{host}"),
            hostname: host.into(),
            addresses: vec![NodeAddress { type_: NodeAddressType::Hostname, address: host.into() }],
            cpus: 4.0,
            mem_mb: 4096.0,
            active,
            has_km_executor: executor,
        }
    }

    fn node(name: &str, agent: bool, ready: Option<(&str, i64)>) -> Node {
        let annotations = if agent { json!({ NODE_AGENT_ID: "x" }) } else { json!({}) };
        let conditions = ready.map(|(s, beat)| {
            json!([{ "type": "Ready", "status": s,
                "lastHeartbeatTime": Timestamp::from_second(1_800_000_000 + beat).expect("t").to_string() }])
        });
        serde_json::from_value(json!({ "metadata": { "name": name, "annotations": annotations },
            "status": { "conditions": conditions } }))
        .expect("node")
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("t")
    }

    #[test]
    fn nodes_follow_their_agents() {
        let instances =
            [instance("a", true, false), instance("b", false, true), instance("new", true, false)];
        let (a, b, gone, kubelet) = (
            node("a", true, Some(("True", 0))),
            node("b", true, Some(("True", 0))),
            node("gone", true, Some(("True", 0))),
            node("master-1", false, None),
        );
        let nodes = [&a, &b, &gone, &kubelet];
        let mut missing = HashMap::new();
        let steps = plan(&instances, &nodes, &mut missing, 30, at(5));
        assert!(steps.contains(&Step::NotReady {
            node: "b".into(),
            reason: "AgentDisconnected",
            message: "the Mesos master reports the agent disconnected".into()
        }));
        assert!(steps.iter().any(
            |s| matches!(s, Step::NotReady { node, reason: "AgentGone", .. } if node == "gone")
        ));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::Create { instance } if instance.hostname == "new"))
        );
        assert!(!steps.iter().any(|s| matches!(s, Step::Ready { .. })), "a's heartbeat is fresh");
        assert!(
            !steps.iter().any(|s| format!("{s:?}").contains("master-1")),
            "a kubelet's node is left alone"
        );
        // Later: a's idle heartbeat is refreshed; the gone agent's node is removed.
        let steps = plan(&instances, &nodes, &mut missing, 30, at(35));
        assert!(steps.contains(&Step::Ready { node: "a".into() }));
        assert!(steps.contains(&Step::Remove { node: "gone".into() }));
    }
}
