//! The result of one matching batch: launches per agent (with the offer IDs they consume,
//! the per-pod resources and host ports, a new executor where one is needed, and what is left),
//! offers left unused, executor-compatibility notes, and one outcome per input pod.
//!
//! `Display` for [`Plan`] renders the whole plan as the readable text used by the fixture tests.

use std::fmt;
use std::sync::Arc;

use crate::demand::{InvalidPod, PodKey};
use crate::explain::Explanation;
use crate::resources::Resource;

/// A batch decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One launch per agent receiving pods, sorted by agent ID.
    pub launches: Vec<Launch>,
    /// Offers not consumed by any launch (to decline or keep), sorted.
    pub unused_offers: Vec<String>,
    /// Agents running km executors of another config ID, sorted by agent ID.
    pub executor_notes: Vec<ExecutorNote>,
    /// One outcome per input pod, in input order.
    pub outcomes: Vec<PodOutcome>,
}

/// What to launch on one agent (one ACCEPT with several offer IDs).
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Agent ID.
    pub agent_id: String,
    /// Hostname.
    pub hostname: String,
    /// Offers consumed, sorted.
    pub offer_ids: Vec<String>,
    /// Resources of a new executor of the current config ID, if one must be started here.
    pub executor: Option<Vec<Resource>>,
    /// Pods to launch, in placement order.
    pub tasks: Vec<Task>,
    /// Resources of the consumed offers that no task or executor uses.
    pub remaining: Vec<Resource>,
}

/// One pod to launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The pod.
    pub pod: PodKey,
    /// Its index in the input.
    pub pod_index: usize,
    /// Resources for the task (cpus/mem/… per role, ports as single-port ranges per role).
    pub resources: Vec<Resource>,
    /// Host ports given to container ports, in the pod's port order.
    pub ports: Vec<PortAssignment>,
}

/// A host port given to a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAssignment {
    /// Container name.
    pub container: String,
    /// `containerPort`.
    pub container_port: i32,
    /// Protocol.
    pub protocol: String,
    /// Port name.
    pub name: Option<String>,
    /// The host port.
    pub host_port: u64,
}

/// What the plan did about an agent running km executors of another config ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorNote {
    /// Agent ID.
    pub agent_id: String,
    /// Hostname.
    pub hostname: String,
    /// The other executor IDs running there, sorted.
    pub stale: Vec<String>,
    /// The decision.
    pub action: ExecutorAction,
}

/// See [`ExecutorNote`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorAction {
    /// The agent was not used for new pods (exclusive policy).
    Excluded,
    /// New pods may go to a new executor of the current ID beside the old one.
    SideBySide,
    /// An executor of the current ID also runs there; new pods use it.
    CurrentAlsoRunning,
}

/// The outcome for one input pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodOutcome {
    /// The pod.
    pub pod: PodKey,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Placed: `plan.launches[launch].tasks[task]`.
    Placed {
        /// Agent ID (shared with every pod placed on the agent).
        agent_id: Arc<str>,
        /// Index into [`Plan::launches`].
        launch: usize,
        /// Index into [`Launch::tasks`].
        task: usize,
    },
    /// Not placed; why.
    Unplaced(Arc<Explanation>),
    /// The pod spec cannot be matched.
    Invalid(InvalidPod),
}

impl Plan {
    /// The task of a placed pod.
    pub fn task(&self, outcome: &Outcome) -> Option<&Task> {
        match outcome {
            Outcome::Placed { launch, task, .. } => self.launches.get(*launch)?.tasks.get(*task),
            _ => None,
        }
    }

    /// Number of pods placed.
    pub fn placed(&self) -> usize {
        self.launches.iter().map(|l| l.tasks.len()).sum()
    }
}

fn resources(f: &mut fmt::Formatter<'_>, rs: &[Resource]) -> fmt::Result {
    if rs.is_empty() {
        return f.write_str("nothing");
    }
    for (i, r) in rs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{r}")?;
    }
    Ok(())
}

impl fmt::Display for Plan {
    /// ```text
    /// launch a1 (h1) offers o1
    ///   new executor: cpus 0.25, mem 128
    ///   default/web-1: cpus 1, mem 128, ports [31000]  (web:80->31000)
    ///   remaining: cpus 2.75, mem 3840, ports [31001-31010]
    /// unused offers: o2
    /// executor a3 (h3): runs old-id; excluded
    /// default/big: unplaced: 0/2 offered agents fit: insufficient cpus on 2
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.launches {
            writeln!(f, "launch {} ({}) offers {}", l.agent_id, l.hostname, l.offer_ids.join(","))?;
            match &l.executor {
                Some(e) if e.is_empty() => writeln!(f, "  new executor (no resources)")?,
                Some(e) => {
                    f.write_str("  new executor: ")?;
                    resources(f, e)?;
                    writeln!(f)?;
                }
                None => {}
            }
            for t in &l.tasks {
                write!(f, "  {}: ", t.pod)?;
                resources(f, &t.resources)?;
                if !t.ports.is_empty() {
                    f.write_str("  (")?;
                    for (i, p) in t.ports.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" ")?;
                        }
                        write!(f, "{}:{}->{}", p.container, p.container_port, p.host_port)?;
                    }
                    f.write_str(")")?;
                }
                writeln!(f)?;
            }
            f.write_str("  remaining: ")?;
            resources(f, &l.remaining)?;
            writeln!(f)?;
        }
        if !self.unused_offers.is_empty() {
            writeln!(f, "unused offers: {}", self.unused_offers.join(","))?;
        }
        for n in &self.executor_notes {
            let action = match n.action {
                ExecutorAction::Excluded => "excluded",
                ExecutorAction::SideBySide => "new executor side by side",
                ExecutorAction::CurrentAlsoRunning => "current executor also runs",
            };
            writeln!(
                f,
                "executor {} ({}): runs {}; {action}",
                n.agent_id,
                n.hostname,
                n.stale.join(",")
            )?;
        }
        for o in &self.outcomes {
            match &o.outcome {
                Outcome::Placed { .. } => {}
                Outcome::Unplaced(e) => writeln!(f, "{}: unplaced: {e}", o.pod)?,
                Outcome::Invalid(e) => writeln!(f, "{}: invalid: {e}", o.pod)?,
            }
        }
        Ok(())
    }
}
