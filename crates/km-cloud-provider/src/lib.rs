//! The Mesos cloud provider of km's controller-manager.
//!
//! In a Kubernetes-on-Mesos cluster the "cloud" is the Mesos cluster: its
//! agents are the machines (instances) that Kubernetes nodes run on. The
//! controller-manager asks the provider whether the machine behind a node
//! still exists, what its addresses are, and which agents do not run km's
//! kubelet executor yet.
//!
//! # Design
//!
//! - [`CloudProvider`] is the interface the controller-manager holds, as an
//!   `Arc<dyn CloudProvider>`. Its methods return boxed futures so that the
//!   trait stays object safe without macros; [`MesosCloud`] also has the same
//!   operations as plain `async fn`s.
//! - [`MesosCloud`] reads the master's **operator API** (`POST /api/v1`,
//!   JSON): GET_AGENTS for the agents (hostname, PID, resources, whether
//!   connected and not deactivated; agents recovered from the registry but
//!   not yet back count as known and inactive) and GET_EXECUTORS for where
//!   an executor named `Kubelet-Executor` runs (GET_FRAMEWORKS does not list
//!   executors). The cluster name comes from GET_FLAGS (`--cluster`).
//!   Requests and answers use km-mesos's Mesos JSON codec.
//! - A master without the operator API (404, 405 or 501, or an answer that
//!   is not the API's) is read through the legacy state document instead:
//!   `GET /master/state`, then `GET /state.json` on masters older still.
//! - Any master of a cluster may be configured: redirects (307 as Mesos
//!   sends them, also 301/302/303/308) are followed by this crate, re-sending
//!   the same method and body, with `Location` absolute, relative or
//!   scheme-relative (`//leader:5050/master/api/v1`). reqwest's own redirect
//!   policy is off because it turns a redirected POST into a GET.
//! - Every request is bounded by `http-client-timeout`. Answers are cached
//!   for `state-cache-ttl`; concurrent callers share one fetch. An agent's
//!   InternalIP comes from its PID (`slave(1)@10.0.0.5:5051`) when that holds
//!   an IP, else from resolving its hostname (km's own master writes
//!   hostnames into PIDs); the resolved list is cached with the answer.
//! - [`MesosCloud::watch`] follows the operator API's SUBSCRIBE stream
//!   (RecordIO) for agents added and removed, invalidating the cache on each
//!   change and re-subscribing with a jittered exponential backoff, so that
//!   the controller-manager can react at once instead of at its next poll.
//! - [`CloudConfig`] is `mesos-cloud.conf` (ini, section `[mesos-cloud]`),
//!   and [`from_flags`] turns `--cloud-provider`/`--cloud-config` into a
//!   provider, refusing combinations that would silently do nothing.
//!
//! Finding the leader through ZooKeeper (`zk://…`), which the original
//! provider did, is not supported: a master URL is required.

mod config;
mod error;
mod mesos;
mod state;
mod watch;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use crate::config::{CloudConfig, DEFAULT_MASTER, SECTION};
pub use crate::error::{CloudError, ConfigProblem};
pub use crate::mesos::MesosCloud;
pub use crate::watch::{AgentChange, AgentWatch};

/// The name of this provider on `--cloud-provider`.
pub const PROVIDER_NAME: &str = "mesos";

/// The cluster name when the master has no `--cluster`.
pub const DEFAULT_CLUSTER_NAME: &str = "mesos";

/// The name km's scheduler gives its executor (the kubelet executor), as
/// in the original; an agent running one hosts a Kubernetes node. The same
/// string as `km_scheduler_core::executor_id::EXECUTOR_NAME`, repeated here
/// so that this crate does not pull in the scheduler's dependencies.
pub const KM_EXECUTOR_NAME: &str = "Kubelet-Executor";

/// The kind of a node address, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeAddressType {
    /// `InternalIP`: the agent's IP inside the cluster.
    InternalIp,
    /// `Hostname`: the agent's hostname.
    Hostname,
}

impl NodeAddressType {
    /// The Kubernetes spelling: `InternalIP` or `Hostname`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAddressType::InternalIp => "InternalIP",
            NodeAddressType::Hostname => "Hostname",
        }
    }
}

impl fmt::Display for NodeAddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    /// What kind of address it is.
    pub type_: NodeAddressType,
    /// The address.
    pub address: String,
}

/// A Mesos agent seen as a cloud instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The agent's ID.
    pub agent_id: String,
    /// The agent's hostname (the Kubernetes node name).
    pub hostname: String,
    /// InternalIP (when known) then Hostname.
    pub addresses: Vec<NodeAddress>,
    /// Total CPUs of the agent.
    pub cpus: f64,
    /// Total memory of the agent, in MB.
    pub mem_mb: f64,
    /// Connected to the master and not deactivated.
    pub active: bool,
    /// Some framework runs an executor named [`KM_EXECUTOR_NAME`] on it.
    pub has_km_executor: bool,
}

/// What the controller-manager asks of a cloud.
///
/// Object safe: hold it as `Arc<dyn CloudProvider>`.
pub trait CloudProvider: Send + Sync + fmt::Debug {
    /// The provider's name (`mesos`).
    fn provider_name(&self) -> &'static str;

    /// The name of the cluster.
    fn cluster_name(&self) -> BoxFuture<'_, Result<String, CloudError>>;

    /// Every instance the cloud knows, running or not.
    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>, CloudError>>;

    /// The instance with this hostname; `None` when the cloud does not know
    /// it (a known but stopped instance is returned with `active: false`).
    fn instance<'a>(
        &'a self,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Instance>, CloudError>>;

    /// The addresses of the instance with this hostname;
    /// [`CloudError::InstanceNotFound`] when there is none.
    fn node_addresses<'a>(
        &'a self,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NodeAddress>, CloudError>>;

    /// Instances on which km's executor does not run.
    fn instances_without_executor(&self) -> BoxFuture<'_, Result<Vec<Instance>, CloudError>>;

    /// Changes of the instances as they happen, if the cloud can tell;
    /// `None` means: poll. Must be called inside a Tokio runtime.
    fn watch(&self) -> Option<AgentWatch> {
        None
    }
}

/// The provider selected by `--cloud-provider` and `--cloud-config`:
/// none without a provider name; `mesos` configured from the file (or with
/// defaults when no file is given). An unknown name is an error, and so is
/// a config file without a provider (it would be ignored).
pub fn from_flags(
    provider: Option<&str>,
    config: Option<&Path>,
) -> Result<Option<Arc<dyn CloudProvider>>, CloudError> {
    match provider.map(str::trim).filter(|p| !p.is_empty()) {
        None => match config {
            Some(path) => Err(CloudError::ConfigWithoutProvider(path.to_owned())),
            None => Ok(None),
        },
        Some(PROVIDER_NAME) => {
            let config = match config {
                Some(path) => CloudConfig::load(path)?,
                None => CloudConfig::default(),
            };
            tracing::info!(master = %config.mesos_master, "using the Mesos cloud provider");
            Ok(Some(Arc::new(MesosCloud::new(config)?)))
        }
        Some(other) => Err(CloudError::UnknownProvider(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_from_flags() {
        assert!(from_flags(None, None).unwrap().is_none());
        assert!(from_flags(Some(""), None).unwrap().is_none());

        let mesos = from_flags(Some("mesos"), None).unwrap().unwrap();
        assert_eq!(mesos.provider_name(), "mesos");

        let e = from_flags(Some("aws"), None).unwrap_err();
        assert_eq!(e.to_string(), "unknown cloud provider \"aws\" (km knows: mesos)");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesos-cloud.conf");
        std::fs::write(&path, "[mesos-cloud]\nhttp-client-timeout = 3s\n").unwrap();
        let e = from_flags(None, Some(&path)).unwrap_err();
        assert!(matches!(e, CloudError::ConfigWithoutProvider(_)), "{e}");
        assert!(e.to_string().contains("--cloud-provider"), "{e}");

        // The file is read: a bad one is refused, a good one is used.
        assert!(from_flags(Some("mesos"), Some(&path)).unwrap().is_some());
        std::fs::write(&path, "[mesos-cloud]\nmaster = m1\n").unwrap();
        assert!(matches!(
            from_flags(Some("mesos"), Some(&path)),
            Err(CloudError::Config { problem: ConfigProblem::UnknownKey(_), .. })
        ));
        assert!(matches!(
            from_flags(Some("mesos"), Some(&dir.path().join("missing.conf"))),
            Err(CloudError::ConfigRead { .. })
        ));
    }

    #[test]
    fn address_types_use_kubernetes_spelling() {
        assert_eq!(NodeAddressType::InternalIp.to_string(), "InternalIP");
        assert_eq!(NodeAddressType::Hostname.as_str(), "Hostname");
    }
}
