//! Draining executors of an older configuration, the decisions.
//!
//! A scheduler started with a new executor configuration (a new executor ID) launches new pods
//! on new executors beside the old ones, so no agent waits for its old executor to go. The pods
//! still on old executors are then moved, workload by workload, through the health-gated
//! restart of `km restart` (a Deployment by its rollout, a ReplicaSet or ReplicationController
//! by a surge-and-delete roll, a single pod by a stand-in): every replacement lands on a current
//! executor. [`Drain`] decides which restarts to start and when (at most `concurrency` at a
//! time, `pause` after each), when to retry one that failed (after a back-off), which old
//! executors to ask to exit once empty (the `kamikaze` message: the executor exits when its
//! last pod is gone), and when a node starts and finishes draining. Time is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What owns a pod on an old executor, resolved to the workload a restart acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Nothing: the pod is restarted alone (through a stand-in).
    Bare,
    /// A Deployment, ReplicaSet or ReplicationController (a ReplicaSet of a Deployment is
    /// given as the Deployment).
    Workload(TargetKind, String),
    /// Something km restart does not restart (a Job, a DaemonSet, …): its pods stay on their
    /// executor until they end.
    Other(String),
}

/// The kind of a restart's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// v1 ReplicationController.
    ReplicationController,
    /// v1 Pod.
    Pod,
}

/// A restart: what to restart, where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: TargetKind,
    /// Name.
    pub name: String,
}

/// A pod bound to an executor whose ID is not the current one.
#[derive(Debug, Clone)]
pub struct OldPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its node (the agent's host name).
    pub node: String,
    /// The agent.
    pub agent_id: String,
    /// The old executor.
    pub executor_id: String,
    /// What it belongs to.
    pub owner: Owner,
}

impl OldPod {
    /// The restart that moves this pod, if any.
    pub fn target(&self) -> Option<Target> {
        let (kind, name) = match &self.owner {
            Owner::Bare => (TargetKind::Pod, self.name.clone()),
            Owner::Workload(k, n) => (*k, n.clone()),
            Owner::Other(_) => return None,
        };
        Some(Target { namespace: self.namespace.clone(), kind, name })
    }
}

/// What one look at the pods calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Restarts to start now.
    pub start: Vec<Target>,
    /// Old executors to ask to exit once their pods are gone: (agent, executor).
    pub kamikaze: Vec<(String, String)>,
    /// Nodes that begin draining: (node, pods on old executors there).
    pub nodes_started: Vec<(String, usize)>,
    /// Nodes with no pod on an old executor any more.
    pub nodes_done: Vec<String>,
    /// Pods on old executors, by node.
    pub by_node: BTreeMap<String, usize>,
    /// Pods that no restart moves (their owner's kind), which stay until they end.
    pub staying: Vec<String>,
}

/// The drain's state across passes.
#[derive(Debug)]
pub struct Drain {
    concurrency: usize,
    pause: Duration,
    in_flight: BTreeSet<Target>,
    last_end: Option<Duration>,
    failures: BTreeMap<Target, (u32, Duration)>,
    draining: BTreeSet<String>,
    asked: BTreeSet<(String, String)>,
}

/// The first wait before a failed restart is tried again; it doubles with each failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait before a failed restart is tried again.
pub const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

impl Drain {
    /// At most `concurrency` restarts at a time, and `pause` between one ending and the next
    /// starting.
    pub fn new(concurrency: usize, pause: Duration) -> Drain {
        Drain {
            concurrency,
            pause,
            in_flight: BTreeSet::new(),
            last_end: None,
            failures: BTreeMap::new(),
            draining: BTreeSet::new(),
            asked: BTreeSet::new(),
        }
    }

    /// Restarts under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Looks at the pods on old executors at `now`.
    pub fn pass(&mut self, pods: &[OldPod], now: Duration) -> Pass {
        let mut pass = Pass::default();
        for p in pods {
            *pass.by_node.entry(p.node.clone()).or_default() += 1;
            let exec = (p.agent_id.clone(), p.executor_id.clone());
            if !p.agent_id.is_empty() && self.asked.insert(exec.clone()) {
                pass.kamikaze.push(exec);
            }
            if let Owner::Other(kind) = &p.owner {
                pass.staying.push(format!("{}/{} (owned by a {kind})", p.namespace, p.name));
            }
        }
        for (node, n) in &pass.by_node {
            if self.draining.insert(node.clone()) {
                pass.nodes_started.push((node.clone(), *n));
            }
        }
        let done: Vec<String> =
            self.draining.iter().filter(|n| !pass.by_node.contains_key(*n)).cloned().collect();
        for n in done {
            self.draining.remove(&n);
            pass.nodes_done.push(n);
        }
        let targets: BTreeSet<Target> = pods.iter().filter_map(OldPod::target).collect();
        let rested = self.last_end.is_none_or(|t| now >= t + self.pause);
        if !rested {
            return pass;
        }
        for t in targets {
            if self.in_flight.len() >= self.concurrency {
                break;
            }
            if self.in_flight.contains(&t) {
                continue;
            }
            if self.failures.get(&t).is_some_and(|(_, at)| now < *at) {
                continue;
            }
            self.in_flight.insert(t.clone());
            pass.start.push(t);
            if !self.pause.is_zero() {
                // With a pause, one at a time: the next waits for this one's end.
                break;
            }
        }
        pass
    }

    /// A restart ended (`ok`: every pod replaced) at `now`.
    pub fn finished(&mut self, target: &Target, ok: bool, now: Duration) {
        self.in_flight.remove(target);
        self.last_end = Some(now);
        if ok {
            self.failures.remove(target);
        } else {
            let n = self.failures.get(target).map_or(0, |(n, _)| *n);
            let wait = RETRY_FIRST.saturating_mul(1 << n.min(16)).min(RETRY_MAX);
            self.failures.insert(target.clone(), (n + 1, now + wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, exec: &str, owner: Owner) -> OldPod {
        OldPod {
            namespace: "ns".into(),
            name: name.into(),
            node: node.into(),
            agent_id: format!("agent-{node}"),
            executor_id: exec.into(),
            owner,
        }
    }

    fn deploy(name: &str) -> Owner {
        Owner::Workload(TargetKind::Deployment, name.into())
    }

    fn target(kind: TargetKind, name: &str) -> Target {
        Target { namespace: "ns".into(), kind, name: name.into() }
    }

    #[test]
    fn workloads_restart_one_at_a_time_and_nodes_start_and_finish() {
        let s = Duration::from_secs;
        let mut d = Drain::new(1, Duration::ZERO);
        let pods = vec![
            pod("web-1", "n1", "old", deploy("web")),
            pod("web-2", "n2", "old", deploy("web")),
            pod("solo", "n1", "old", Owner::Bare),
            pod("job-1", "n2", "older", Owner::Other("Job".into())),
        ];
        let p = d.pass(&pods, s(0));
        assert_eq!(p.start, [target(TargetKind::Deployment, "web")]);
        assert_eq!(p.nodes_started, [("n1".to_owned(), 2), ("n2".to_owned(), 2)]);
        assert_eq!(
            p.kamikaze,
            [
                ("agent-n1".to_owned(), "old".to_owned()),
                ("agent-n2".to_owned(), "old".to_owned()),
                ("agent-n2".to_owned(), "older".to_owned())
            ]
        );
        assert_eq!(p.staying, ["ns/job-1 (owned by a Job)"]);
        // Nothing new while the restart runs; asked executors are not asked again.
        let p = d.pass(&pods, s(1));
        assert!(p.start.is_empty() && p.kamikaze.is_empty() && p.nodes_started.is_empty());
        d.finished(&target(TargetKind::Deployment, "web"), true, s(5));
        let left = vec![pods[2].clone(), pods[3].clone()];
        let p = d.pass(&left, s(6));
        assert_eq!(p.start, [target(TargetKind::Pod, "solo")]);
        d.finished(&target(TargetKind::Pod, "solo"), true, s(8));
        let p = d.pass(&left[1..], s(9));
        assert_eq!(p.nodes_done, ["n1"], "n1 drained; n2 keeps its Job's pod");
        assert!(p.start.is_empty(), "a Job's pod is left to finish");
        let p = d.pass(&[], s(10));
        assert_eq!(p.nodes_done, ["n2"]);
    }

    #[test]
    fn concurrency_pause_and_retry_after_a_failure() {
        let s = Duration::from_secs;
        let pods = vec![
            pod("a-1", "n1", "old", deploy("a")),
            pod("b-1", "n1", "old", deploy("b")),
            pod("c-1", "n1", "old", deploy("c")),
        ];
        let mut d = Drain::new(2, Duration::ZERO);
        assert_eq!(d.pass(&pods, s(0)).start.len(), 2);
        let mut d = Drain::new(2, s(30));
        assert_eq!(d.pass(&pods, s(0)).start, [target(TargetKind::Deployment, "a")]);
        d.finished(&target(TargetKind::Deployment, "a"), false, s(10));
        assert!(d.pass(&pods, s(20)).start.is_empty(), "the pause after an end");
        assert_eq!(d.pass(&pods, s(40)).start, [target(TargetKind::Deployment, "b")]);
        d.finished(&target(TargetKind::Deployment, "b"), true, s(41));
        // b moved; a failed at 10 s: not again before 70 s.
        let pods = vec![pods[0].clone(), pods[2].clone()];
        assert_eq!(d.pass(&pods, s(71)).start, [target(TargetKind::Deployment, "a")]);
        d.finished(&target(TargetKind::Deployment, "a"), false, s(72));
        let p = d.pass(&pods, s(140));
        assert_eq!(p.start, [target(TargetKind::Deployment, "c")], "a waits 2 min now");
        d.finished(&target(TargetKind::Deployment, "c"), true, s(141));
        let pods = vec![pods[0].clone()];
        assert!(d.pass(&pods, s(191)).start.is_empty());
        assert_eq!(d.pass(&pods, s(192)).start, [target(TargetKind::Deployment, "a")]);
        assert_eq!(d.in_flight(), 1);
    }
}
