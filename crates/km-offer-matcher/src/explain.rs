//! Why a pod was not placed, as data: one [`Reason`] per offered agent (the first predicate
//! that failed, in procurement order), counted, plus a [`NeverFits`] verdict when no known
//! agent could ever take the pod.
//!
//! The `Display` impls produce the text a user sees in a pod event, e.g.
//! `0/1000 offered agents fit: insufficient cpus on 812, host port 8080 taken on 188`.

use std::fmt;

use crate::resources::{Scalar, ScalarKind};

/// Why one agent did not take a pod. Variants are in procurement order: the first failing
/// predicate is the one reported.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// `spec.nodeName` names another node.
    NodeNameMismatch,
    /// A `nodeSelector` pair the agent's labels lack.
    NodeSelectorMismatch {
        /// Label key.
        key: String,
        /// Wanted value.
        value: String,
    },
    /// Required node affinity not satisfied.
    AffinityMismatch,
    /// A public agent, and the pod does not ask for public agents.
    PublicAgent,
    /// The agent is in a maintenance window.
    Maintenance,
    /// The agent runs a km executor of another config ID (and the policy is exclusive).
    ExecutorMismatch {
        /// The executor ID running there.
        running: String,
    },
    /// The agent offers nothing for any of the pod's roles.
    RoleNotOffered,
    /// Not enough of a scalar for the pod.
    InsufficientScalar {
        /// Which scalar.
        kind: ScalarKind,
    },
    /// Enough for the pod, but not for the pod plus a new executor.
    InsufficientForExecutor {
        /// Which scalar.
        kind: ScalarKind,
    },
    /// A fixed host port outside the agent's offered ranges.
    PortNotOffered {
        /// The port.
        port: u64,
    },
    /// A fixed host port offered but already given to another pod of this plan.
    PortTaken {
        /// The port.
        port: u64,
    },
    /// Not enough free offered ports for the wildcard-mapped container ports.
    NoFreePorts {
        /// Ports needed in total (fixed and wildcard).
        needed: usize,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NodeNameMismatch => f.write_str("node name mismatch"),
            Reason::NodeSelectorMismatch { key, value } => {
                write!(f, "node selector {key}={value} not matched")
            }
            Reason::AffinityMismatch => f.write_str("node affinity not matched"),
            Reason::PublicAgent => f.write_str("public agent not requested"),
            Reason::Maintenance => f.write_str("agent in maintenance"),
            Reason::ExecutorMismatch { running } => {
                write!(f, "runs executor {running} of another config")
            }
            Reason::RoleNotOffered => f.write_str("no resources for the pod's roles"),
            Reason::InsufficientScalar { kind } => write!(f, "insufficient {kind}"),
            Reason::InsufficientForExecutor { kind } => {
                write!(f, "insufficient {kind} for a new executor")
            }
            Reason::PortNotOffered { port } => write!(f, "host port {port} not offered"),
            Reason::PortTaken { port } => write!(f, "host port {port} taken"),
            Reason::NoFreePorts { needed } => write!(f, "fewer than {needed} free ports"),
        }
    }
}

/// Why a pod can never fit any known agent, whatever else runs there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeverFits {
    /// `spec.nodeName` is not a known agent's hostname.
    NoSuchNode {
        /// The node name.
        name: String,
    },
    /// No known agent has this label.
    SelectorMatchesNoAgent {
        /// Label key.
        key: String,
        /// Wanted value.
        value: String,
    },
    /// No known agent satisfies the required node affinity.
    AffinityMatchesNoAgent,
    /// Each constraint matches some agent, but no agent satisfies them all.
    ConstraintsMatchNoAgent,
    /// Every agent matching the constraints is public and the pod does not ask for public agents.
    OnlyPublicAgents,
    /// No matching agent has resources for any of the pod's roles.
    RolesNeverOffered {
        /// The pod's roles.
        roles: Vec<String>,
    },
    /// The pod asks for more of a scalar than the largest matching agent has in total.
    TooLarge {
        /// Which scalar.
        kind: ScalarKind,
        /// The pod's demand.
        demand: Scalar,
        /// The largest capacity of a matching agent (for the pod's roles).
        largest: Scalar,
    },
    /// A fixed host port no matching agent offers.
    PortNeverOffered {
        /// The port.
        port: u64,
    },
    /// More host ports than any matching agent has.
    TooManyPorts {
        /// Ports needed.
        needed: usize,
        /// The most ports a matching agent has.
        largest: u64,
    },
}

impl fmt::Display for NeverFits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("can never fit any known agent: ")?;
        match self {
            NeverFits::NoSuchNode { name } => write!(f, "no agent is named {name:?}"),
            NeverFits::SelectorMatchesNoAgent { key, value } => {
                write!(f, "no agent has label {key}={value}")
            }
            NeverFits::AffinityMatchesNoAgent => {
                f.write_str("no agent satisfies the node affinity")
            }
            NeverFits::ConstraintsMatchNoAgent => {
                f.write_str("no agent satisfies all node constraints together")
            }
            NeverFits::OnlyPublicAgents => {
                f.write_str("only public agents match and the pod does not ask for them")
            }
            NeverFits::RolesNeverOffered { roles } => {
                write!(f, "no matching agent has resources for roles {}", roles.join(","))
            }
            NeverFits::TooLarge { kind, demand, largest } => {
                write!(f, "asks {kind} {demand}, the largest matching agent has {largest}")
            }
            NeverFits::PortNeverOffered { port } => {
                write!(f, "no matching agent offers host port {port}")
            }
            NeverFits::TooManyPorts { needed, largest } => {
                write!(f, "asks {needed} host ports, the most a matching agent has is {largest}")
            }
        }
    }
}

/// The explanation for an unplaced pod (shared by every pod of the same shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Offered agents considered (offers of one agent are merged).
    pub agents: usize,
    /// Reasons with the number of agents each applied to, most frequent first.
    pub reasons: Vec<(Reason, usize)>,
    /// Set when the pod can never fit any known agent.
    pub never_fits: Option<NeverFits>,
}

impl fmt::Display for Explanation {
    /// `0/3 offered agents fit: insufficient cpus on 2, host port 8080 taken on 1; can never …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} offered agents fit", self.agents)?;
        for (i, (reason, count)) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{reason} on {count}")?;
        }
        if let Some(n) = &self.never_fits {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanation_text() {
        let e = Explanation {
            agents: 1000,
            reasons: vec![
                (Reason::InsufficientScalar { kind: ScalarKind::Cpus }, 812),
                (Reason::PortTaken { port: 8080 }, 188),
            ],
            never_fits: None,
        };
        assert_eq!(
            e.to_string(),
            "0/1000 offered agents fit: insufficient cpus on 812, host port 8080 taken on 188"
        );
        let e = Explanation {
            agents: 0,
            reasons: vec![],
            never_fits: Some(NeverFits::TooLarge {
                kind: ScalarKind::Cpus,
                demand: Scalar::from_units(64),
                largest: Scalar::from_units(16),
            }),
        };
        assert_eq!(
            e.to_string(),
            "0/0 offered agents fit; can never fit any known agent: asks cpus 64, the largest matching agent has 16"
        );
    }
}
