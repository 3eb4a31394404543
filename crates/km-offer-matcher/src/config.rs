//! The matcher's policy: which pod resources are procured, defaults, the executor, roles,
//! host-port mapping, public agents and the packing strategy.
//!
//! A [`Config`] is checked once by [`Config::validate`] (through [`crate::Matcher::new`]);
//! a bad configuration is a real error ([`ConfigError`]), unlike a pod that does not fit.

use thiserror::Error;

use crate::resources::{Scalar, Scalars};

/// Which of a container's `requests` and `limits` is procured from Mesos.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceBasis {
    /// Requests (Kubernetes semantics); a missing request falls back to the limit.
    #[default]
    Requests,
    /// Limits (what the original k8sm procured); a missing limit falls back to the request.
    Limits,
}

/// How `hostPort: 0` (or an unset host port) is treated (pod label `k8s.mesosphere.io/portMapping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortMapping {
    /// Each such container port gets the lowest free offered port.
    #[default]
    Wildcard,
    /// Such container ports take no host port (vanilla Kubernetes).
    Fixed,
}

/// How pods are spread over agents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Fill agents first, on as few agents as will take the pods.
    ///
    /// Order: pods by priority (high first), then the most constrained first — the pods whose
    /// constraints (node name, selector, affinity, roles, public agents) leave the fewest
    /// offered agents —, then by creation time and input order. Placement: each pod goes to the
    /// first agent that fits among those already given a pod in this plan, in the order they
    /// got their first, else to the first other agent that fits, agents ranked by (already
    /// running the current executor, least free cpus, least free mem, agent ID).
    ///
    /// Taking constrained pods first keeps unconstrained ones from filling the agents a
    /// selector needs; it also means that when not everything fits, the constrained pods of a
    /// priority level are the ones placed.
    #[default]
    Binpack,
    /// Balance: each pod goes to the topology domain with the fewest pods placed in this plan,
    /// and inside it to the agent with the fewest. Domains are agents (`by: None`) or the
    /// values of an agent attribute such as `rack` (agents without it form one domain). Pods
    /// are taken by priority (high first), creation time, then input order.
    Spread {
        /// Attribute name to spread over; `None` spreads over agents.
        by: Option<String>,
    },
}

/// What to do with an agent that runs a km executor of another config ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorUpgrade {
    /// Do not use the agent for new pods (the original's behaviour, minus declining forever:
    /// the plan reports the agent so an upgrade controller can drain it).
    #[default]
    Exclusive,
    /// Start an executor of the current ID side by side with the old one; the new pods pay
    /// its resources. This is what a rolling executor upgrade uses.
    SideBySide,
}

/// The km executor as far as matching is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Executor ID of the current configuration (e.g. `aeeccc7fd90fa74e_k8sm-executor`).
    pub id: String,
    /// Resources a new executor needs; counted once per agent where no executor of `id` runs.
    pub resources: Scalars,
    /// Policy for agents running executors of other IDs.
    pub upgrade: ExecutorUpgrade,
}

/// Which agents are public (e.g. DC/OS public agents) and only receive pods that ask for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicAgents {
    /// An agent offering (or having capacity) for this role is public; `None` disables the rule.
    pub role: Option<String>,
    /// An agent carrying this attribute (and value, if given) is public.
    pub attribute: Option<(String, Option<String>)>,
}

impl Default for PublicAgents {
    fn default() -> PublicAgents {
        PublicAgents { role: Some("slave_public".to_owned()), attribute: None }
    }
}

/// The matcher configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Requests or limits.
    pub basis: ResourceBasis,
    /// cpus for a container that sets neither request nor limit (original: 0.25).
    pub default_container_cpus: Scalar,
    /// mem (MiB) for a container that sets neither request nor limit (original: 64).
    pub default_container_mem: Scalar,
    /// The km executor.
    pub executor: ExecutorConfig,
    /// Roles the framework is subscribed with (`*` for the default role).
    pub framework_roles: Vec<String>,
    /// Roles for pods without the `k8s.mesosphere.io/roles` annotation, in preference order.
    pub default_pod_roles: Vec<String>,
    /// Port mapping for pods without the `k8s.mesosphere.io/portMapping` label.
    pub default_port_mapping: PortMapping,
    /// The public-agent rule.
    pub public_agents: PublicAgents,
    /// Packing strategy.
    pub strategy: Strategy,
}

impl Default for Config {
    /// The original's defaults: requests, 0.25 cpu / 64 MiB, a 0.25 cpu / 128 MiB executor,
    /// roles `*`, wildcard ports, public role `slave_public`, binpack.
    fn default() -> Config {
        Config {
            basis: ResourceBasis::Requests,
            default_container_cpus: Scalar::from_milli(250),
            default_container_mem: Scalar::from_units(64),
            executor: ExecutorConfig {
                id: "km-executor".to_owned(),
                resources: Scalars::cpus_mem(Scalar::from_milli(250), Scalar::from_units(128)),
                upgrade: ExecutorUpgrade::Exclusive,
            },
            framework_roles: vec!["*".to_owned()],
            default_pod_roles: vec!["*".to_owned()],
            default_port_mapping: PortMapping::Wildcard,
            public_agents: PublicAgents::default(),
            strategy: Strategy::Binpack,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// No framework role.
    #[error("no framework roles configured")]
    NoFrameworkRoles,
    /// An empty or duplicated role name.
    #[error("invalid role list {0:?}: empty or duplicate role")]
    BadRole(Vec<String>),
    /// A role that breaks Mesos's role name rules.
    #[error("invalid role: {0}")]
    InvalidRole(#[from] km_resources::RoleError),
    /// A default pod role the framework does not have.
    #[error("default pod role {role:?} is not a framework role (framework roles: {framework:?})")]
    DefaultRoleNotFramework {
        /// The role.
        role: String,
        /// The framework roles.
        framework: Vec<String>,
    },
    /// No default pod role.
    #[error("no default pod roles configured")]
    NoDefaultPodRoles,
    /// Empty executor ID.
    #[error("executor id must not be empty")]
    EmptyExecutorId,
    /// Negative resources.
    #[error("{0} must not be negative")]
    Negative(&'static str),
    /// Empty spread attribute.
    #[error("spread attribute must not be empty")]
    EmptySpreadAttribute,
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.framework_roles.is_empty() {
            return Err(ConfigError::NoFrameworkRoles);
        }
        for list in [&self.framework_roles, &self.default_pod_roles] {
            let mut seen: Vec<&String> = list.iter().collect();
            seen.sort();
            seen.dedup();
            if seen.len() != list.len() || list.iter().any(|r| r.trim().is_empty() || r.trim() != r)
            {
                return Err(ConfigError::BadRole(list.clone()));
            }
            for role in list {
                km_resources::validate_role(role)?;
            }
        }
        if self.default_pod_roles.is_empty() {
            return Err(ConfigError::NoDefaultPodRoles);
        }
        if let Some(role) =
            self.default_pod_roles.iter().find(|r| !self.framework_roles.contains(r))
        {
            return Err(ConfigError::DefaultRoleNotFramework {
                role: role.clone(),
                framework: self.framework_roles.clone(),
            });
        }
        if self.executor.id.is_empty() {
            return Err(ConfigError::EmptyExecutorId);
        }
        if self.executor.resources.iter_nonzero().any(|(_, v)| v < Scalar::ZERO) {
            return Err(ConfigError::Negative("executor resources"));
        }
        if self.default_container_cpus < Scalar::ZERO || self.default_container_mem < Scalar::ZERO {
            return Err(ConfigError::Negative("default container resources"));
        }
        if let Strategy::Spread { by: Some(a) } = &self.strategy
            && a.is_empty()
        {
            return Err(ConfigError::EmptySpreadAttribute);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_roles() {
        let c = Config { framework_roles: vec![], ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::NoFrameworkRoles));
        let c = Config { framework_roles: vec!["*".into(), "*".into()], ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::BadRole(_))));
        let c = Config { default_pod_roles: vec!["prod".into()], ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::DefaultRoleNotFramework { .. })));
        let c = Config { default_pod_roles: vec![], ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::NoDefaultPodRoles));
        let c =
            Config { framework_roles: vec!["*".into(), "eng/../x".into()], ..Config::default() };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid role: role 'eng/../x' has '..' as a component"
        );
        let c = Config { default_pod_roles: vec!["-x".into()], ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::InvalidRole(_))));
    }

    #[test]
    fn rejects_other_errors() {
        let mut c = Config::default();
        c.executor.id.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyExecutorId));
        let mut c = Config::default();
        c.executor.resources.set(crate::ScalarKind::Cpus, Scalar::from_milli(-1));
        assert!(matches!(c.validate(), Err(ConfigError::Negative(_))));
        let c =
            Config { strategy: Strategy::Spread { by: Some(String::new()) }, ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::EmptySpreadAttribute));
    }
}
