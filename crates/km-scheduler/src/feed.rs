//! Pods and nodes, listed and watched for as long as the process runs. A term of leadership
//! attaches to the feeds and gets everything known so far, then the changes as they come. So a
//! standby (`--ha`) that is elected starts from memory instead of listing every pod first (with
//! ten thousand pods that listing is most of a takeover), and knows which nodes are already as
//! the agents' offers describe them (rewriting a thousand nodes would slow the first launches).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use km_scheduler_core::{Input, NodeInfo, NodeSpec};
use tokio::sync::{Mutex, mpsc};

use crate::executor;
use crate::kubeapi::{self, Watched};

/// A pod as the scheduler keeps it: everything but its managed fields and its status beyond the
/// phase (ten thousand pods' container statuses and conditions add up).
pub(crate) fn slim(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    if let Some(status) = pod.status.take() {
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase,
            ..Default::default()
        });
    }
    pod
}

/// What the feed knows, and who listens.
#[derive(Default)]
struct Known {
    /// UID → pod.
    pods: HashMap<String, Arc<Pod>>,
    /// During a listing: the UIDs listed so far (the others are gone when it ends).
    listing: Option<HashSet<String>>,
    /// The current term's channel.
    subscriber: Option<mpsc::Sender<Input>>,
}

impl Known {
    /// Applies a change to the cache; the input that tells a subscriber of it.
    fn apply(&mut self, w: Watched<Pod>) -> Option<Input> {
        match w {
            Watched::ResyncStarted => {
                self.listing = Some(HashSet::new());
                Some(Input::PodResyncStarted)
            }
            Watched::Applied(p) => {
                let pod = Arc::new(slim(p));
                let uid = pod.metadata.uid.clone()?;
                if let Some(listed) = &mut self.listing {
                    listed.insert(uid.clone());
                }
                self.pods.insert(uid, pod.clone());
                Some(Input::PodApplied(pod))
            }
            Watched::Deleted(p) => {
                let pod = Arc::new(slim(p));
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.pods.remove(uid);
                }
                Some(Input::PodDeleted(pod))
            }
            Watched::ResyncDone => {
                if let Some(listed) = self.listing.take() {
                    self.pods.retain(|uid, _| listed.contains(uid));
                }
                Some(Input::PodResyncDone)
            }
        }
    }

    /// What a new subscriber is told first: a listing of what is known, complete unless a
    /// listing is under way (then its end comes through the feed).
    fn replay(&self) -> Vec<Input> {
        let mut out = Vec::with_capacity(self.pods.len() + 2);
        out.push(Input::PodResyncStarted);
        out.extend(self.pods.values().map(|p| Input::PodApplied(p.clone())));
        if self.listing.is_none() {
            out.push(Input::PodResyncDone);
        }
        out
    }
}

/// The pod feed of this process.
#[derive(Clone)]
pub(crate) struct PodFeed {
    known: Arc<Mutex<Known>>,
}

impl PodFeed {
    /// Starts listing and watching every pod through `client`.
    pub(crate) fn start(client: &kube::Client) -> PodFeed {
        let feed = PodFeed { known: Arc::new(Mutex::new(Known::default())) };
        let known = feed.known.clone();
        let api = kubeapi::all_pods(client);
        tokio::spawn(kubeapi::list_watch(api, "pods", async move |w: Watched<Pod>| {
            let mut known = known.lock().await;
            if let Some(input) = known.apply(w)
                && let Some(tx) = &known.subscriber
                && tx.send(input).await.is_err()
            {
                // The term ended; the feed goes on for the next one.
                known.subscriber = None;
            }
            true
        }));
        feed
    }

    /// A new term's channel (of `capacity`): every pod known, then every change. A previous
    /// term's channel is dropped.
    pub(crate) fn attach(&self, capacity: usize) -> mpsc::Receiver<Input> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let known = self.known.clone();
        // The replay may be longer than the channel: it is sent while the term reads, and the
        // feed waits on the lock until it is through, so no change overtakes it.
        tokio::spawn(async move {
            let mut known = known.lock().await;
            known.subscriber = None;
            for input in known.replay() {
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            known.subscriber = Some(tx);
        });
        rx
    }
}

/// The feeds of this process.
pub(crate) struct Feeds {
    pub(crate) pods: PodFeed,
    pub(crate) nodes: NodeFeed,
}

impl Feeds {
    /// Starts watching pods and nodes through `client`.
    pub(crate) fn start(client: &kube::Client) -> Feeds {
        Feeds { pods: PodFeed::start(client), nodes: NodeFeed::start(client) }
    }
}

/// What the scheduler reads from a Node: the agent and executor recorded on it.
pub(crate) fn node_info(n: &Node) -> Option<NodeInfo> {
    let name = n.metadata.name.clone()?;
    let ann = n.metadata.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).cloned().filter(|v| !v.is_empty());
    Some(NodeInfo {
        name,
        agent_id: get(km_scheduler_core::task::NODE_AGENT_ID),
        executor_id: get(km_scheduler_core::task::NODE_EXECUTOR_ID),
        executor_resources: get(km_scheduler_core::task::NODE_EXECUTOR_RESOURCES)
            .and_then(|t| executor::decode_resources(&t)),
    })
}

/// Whether `node` already says what registering `spec` would write: the agent ID, the labels,
/// the capacity, and Ready.
pub(crate) fn node_is_current(node: &Node, spec: &NodeSpec) -> bool {
    let meta = &node.metadata;
    let agent =
        meta.annotations.as_ref().and_then(|a| a.get(km_scheduler_core::task::NODE_AGENT_ID));
    let labels = meta.labels.as_ref();
    let labelled = spec
        .labels
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|have| have == v));
    let status = node.status.as_ref();
    let capacity: BTreeMap<String, String> = status
        .and_then(|s| s.capacity.as_ref())
        .map(|c| c.iter().map(|(k, q)| (k.clone(), q.0.clone())).collect())
        .unwrap_or_default();
    let wanted: BTreeMap<String, String> =
        kubeapi::quantities(&spec.capacity).into_iter().map(|(k, q)| (k, q.0)).collect();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    agent == Some(&spec.agent_id) && labelled && capacity == wanted && ready
}

/// The nodes, and the current term's channel.
#[derive(Default)]
struct Nodes {
    nodes: HashMap<String, Node>,
    subscriber: Option<mpsc::UnboundedSender<Input>>,
}

/// The node feed of this process.
#[derive(Clone)]
pub(crate) struct NodeFeed {
    known: Arc<std::sync::Mutex<Nodes>>,
}

impl NodeFeed {
    /// Starts listing and watching every node through `client`.
    pub(crate) fn start(client: &kube::Client) -> NodeFeed {
        let feed = NodeFeed { known: Arc::default() };
        let known = feed.known.clone();
        let api = kubeapi::all_nodes(client);
        tokio::spawn(kubeapi::list_watch(api, "nodes", async move |w: Watched<Node>| {
            let mut k = known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match w {
                Watched::Applied(n) => {
                    if let (Some(name), Some(info)) = (n.metadata.name.clone(), node_info(&n)) {
                        if k.subscriber
                            .as_ref()
                            .is_some_and(|tx| tx.send(Input::NodeKnown(info)).is_err())
                        {
                            k.subscriber = None;
                        }
                        k.nodes.insert(name, n);
                    }
                }
                Watched::Deleted(n) => {
                    if let Some(name) = &n.metadata.name {
                        k.nodes.remove(name);
                    }
                }
                Watched::ResyncStarted | Watched::ResyncDone => {}
            }
            true
        }));
        feed
    }

    /// A new term's channel: every node known is sent to it now, and every change later.
    pub(crate) fn attach(&self, tx: mpsc::UnboundedSender<Input>) {
        let mut k = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for info in k.nodes.values().filter_map(node_info) {
            let _ = tx.send(Input::NodeKnown(info));
        }
        k.subscriber = Some(tx);
    }

    /// Whether the node of `spec` is already registered as it says.
    pub(crate) fn is_current(&self, spec: &NodeSpec) -> bool {
        let k = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        k.nodes.get(&spec.name).is_some_and(|n| node_is_current(n, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": uid, "uid": uid, "managedFields": [{ "manager": "x" }] },
            "status": { "phase": "Running", "podIP": "10.0.0.1" }
        }))
        .unwrap()
    }

    fn names(inputs: &[Input]) -> Vec<String> {
        inputs
            .iter()
            .map(|i| match i {
                Input::PodResyncStarted => "start".to_owned(),
                Input::PodResyncDone => "done".to_owned(),
                Input::PodApplied(p) => format!("+{}", p.metadata.uid.as_deref().unwrap_or("")),
                Input::PodDeleted(p) => format!("-{}", p.metadata.uid.as_deref().unwrap_or("")),
                _ => "other".to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_relisting_drops_what_it_did_not_list_and_a_replay_is_a_complete_listing() {
        let mut k = Known::default();
        k.apply(Watched::ResyncStarted);
        k.apply(Watched::Applied(pod("a")));
        k.apply(Watched::Applied(pod("b")));
        // Mid-listing, a replay leaves the end to the feed.
        let mut mid = names(&k.replay());
        mid[1..].sort();
        assert_eq!(mid, ["start", "+a", "+b"]);
        k.apply(Watched::ResyncDone);
        k.apply(Watched::Deleted(pod("a")));
        k.apply(Watched::Applied(pod("c")));
        let mut replay = names(&k.replay());
        replay[1..3].sort();
        assert_eq!(replay, ["start", "+b", "+c", "done"]);
        // A relisting that no longer finds b forgets it.
        k.apply(Watched::ResyncStarted);
        k.apply(Watched::Applied(pod("c")));
        k.apply(Watched::ResyncDone);
        assert_eq!(names(&k.replay()), ["start", "+c", "done"]);
        // What is kept is slim.
        let c = &k.pods["c"];
        assert!(c.metadata.managed_fields.is_none());
        let status = c.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.is_none());
    }

    #[test]
    fn a_node_is_current_only_with_the_agent_labels_capacity_and_ready_it_would_be_given() {
        let spec = NodeSpec {
            name: "a1".into(),
            agent_id: "S1".into(),
            labels: vec![("k8s.mesosphere.io/attribute-rack".into(), "r1".into())],
            capacity: vec![
                km_offer_matcher::Resource::scalar("cpus", 4.0),
                km_offer_matcher::Resource::scalar("mem", 1024.0),
            ],
        };
        let node = |agent: &str, rack: &str, cpu: &str, ready: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "a1",
                    "labels": { "k8s.mesosphere.io/attribute-rack": rack, "other": "kept" },
                    "annotations": { "k8s.mesosphere.io/agentId": agent }
                },
                "status": {
                    "capacity": { "cpu": cpu, "memory": "1024Mi" },
                    "conditions": [{ "type": "Ready", "status": ready }]
                }
            }))
            .unwrap()
        };
        assert!(node_is_current(&node("S1", "r1", "4", "True"), &spec));
        assert!(!node_is_current(&node("S2", "r1", "4", "True"), &spec), "another agent");
        assert!(!node_is_current(&node("S1", "r2", "4", "True"), &spec), "a label changed");
        assert!(!node_is_current(&node("S1", "r1", "2", "True"), &spec), "capacity changed");
        assert!(!node_is_current(&node("S1", "r1", "4", "False"), &spec), "not Ready");
    }
}
