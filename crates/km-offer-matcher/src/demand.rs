//! A pod's demand: what a Kubernetes `Pod` asks of an agent, reduced to a compact
//! [`PodDemand`] under a [`Config`].
//!
//! Resources: per container the request or the limit (by [`ResourceBasis`], falling back to
//! the other, then to the configured defaults for cpu and mem); init containers by the max
//! rule (restartable "sidecar" init containers add up and run alongside); pod-level
//! `spec.resources` replaces the container sum where set; `spec.overhead` is added.
//! Kubernetes names map to Mesos names: `cpu` → `cpus`, `memory` → `mem`,
//! `ephemeral-storage` → `disk`, `nvidia.com/gpu` → `gpus`; other names are not procured.
//!
//! A spec that cannot be understood is an [`InvalidPod`] with a precise message, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, NodeSelectorRequirement, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::config::{Config, PortMapping, ResourceBasis};
use crate::constraints::{NodeAffinity, Operator, Requirement, Term};
use crate::offer::{HOSTNAME_LABEL, attribute_label};
use crate::quantity::{self, QuantityError, Unit};
use crate::resources::{Scalar, ScalarKind, Scalars};

/// Pod annotation listing the Mesos roles a pod may use, in preference order (`*,public`).
pub const ROLES_ANNOTATION: &str = "k8s.mesosphere.io/roles";
/// Pod label choosing the host-port mapping (`fixed` or `wildcard`).
pub const PORT_MAPPING_LABEL: &str = "k8s.mesosphere.io/portMapping";

/// Namespace and name of a pod (shared strings: cloning a key is cheap).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl PodKey {
    /// A key.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> PodKey {
        PodKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The host port a container port needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPort {
    /// Exactly this port.
    Fixed(u64),
    /// Any free offered port (wildcard mapping of `hostPort: 0`).
    Any,
}

/// One container port that needs a host port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRequest {
    /// Container name.
    pub container: String,
    /// `containerPort`.
    pub container_port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Port name, if any.
    pub name: Option<String>,
    /// The host port wanted.
    pub host_port: HostPort,
}

/// What a pod needs from an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDemand {
    /// The pod.
    pub key: PodKey,
    /// `spec.priority`; higher goes first.
    pub priority: i32,
    /// Creation time; earlier goes first among equal priorities. `None` counts as `now`.
    pub created: Option<SystemTime>,
    /// Scalar resources of the pod (without the executor).
    pub resources: Scalars,
    /// Container ports needing a host port, fixed ones distinct.
    pub ports: Vec<PortRequest>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.nodeSelector`, sorted by key.
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity.
    pub affinity: Option<NodeAffinity>,
    /// Usable roles in preference order (already filtered to framework roles, never empty).
    pub roles: Vec<String>,
    /// The pod asks for public agents.
    pub wants_public: bool,
}

impl PodDemand {
    /// A demand with only resources, role `*`, priority 0.
    pub fn new(key: PodKey, resources: Scalars) -> PodDemand {
        PodDemand {
            key,
            priority: 0,
            created: None,
            resources,
            ports: Vec::new(),
            node_name: None,
            node_selector: Vec::new(),
            affinity: None,
            roles: vec!["*".to_owned()],
            wants_public: false,
        }
    }

    /// The fixed host ports, in request order.
    pub fn fixed_ports(&self) -> impl Iterator<Item = u64> + '_ {
        self.ports.iter().filter_map(|p| match p.host_port {
            HostPort::Fixed(n) => Some(n),
            HostPort::Any => None,
        })
    }

    /// How many ports are wanted with wildcard mapping.
    pub fn wildcard_ports(&self) -> usize {
        self.ports.iter().filter(|p| p.host_port == HostPort::Any).count()
    }
}

/// Why a pod spec cannot be matched at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidPod {
    /// `metadata.name` missing.
    #[error("pod has no name")]
    MissingName,
    /// A quantity that cannot be parsed.
    #[error("{place}: {resource} {field}: {error}")]
    Quantity {
        /// `container "web"`, `init container "setup"`, `pod overhead`, `pod resources`.
        place: String,
        /// Kubernetes resource name.
        resource: String,
        /// `requests`, `limits` or `overhead`.
        field: &'static str,
        /// The parse error.
        error: QuantityError,
    },
    /// The same host port twice in one pod.
    #[error("host port {port} is used twice in the pod")]
    DuplicateHostPort {
        /// The port.
        port: u64,
    },
    /// A host port outside 1–65535.
    #[error("container {container:?}: host port {port} is out of range")]
    BadHostPort {
        /// Container.
        container: String,
        /// The port.
        port: i32,
    },
    /// None of the pod's roles is a framework role.
    #[error("none of the roles {asked:?} is a framework role (framework roles: {framework:?})")]
    NoUsableRole {
        /// Roles asked for.
        asked: Vec<String>,
        /// Framework roles.
        framework: Vec<String>,
    },
    /// A node-affinity term that cannot be evaluated.
    #[error("node affinity: {0}")]
    BadAffinity(String),
}

/// Converts a pod into its demand under `config`.
pub fn pod_demand(pod: &Pod, config: &Config) -> Result<PodDemand, InvalidPod> {
    let meta = &pod.metadata;
    let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or(InvalidPod::MissingName)?;
    let key = PodKey::new(meta.namespace.clone().unwrap_or_else(|| "default".to_owned()), name);
    let created = meta.creation_timestamp.as_ref().map(|t| timestamp_to_system_time(&t.0));
    let empty_spec = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty_spec);

    // Resources.
    let mut containers = Scalars::ZERO;
    for c in &spec.containers {
        containers = containers.plus(&container_amounts(
            c,
            config,
            Place("container", Some(&c.name)),
            true,
        )?);
    }
    let mut sidecars = Scalars::ZERO;
    let mut init_max = Scalars::ZERO;
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            let r = container_amounts(c, config, Place("init container", Some(&c.name)), true)?;
            sidecars = sidecars.plus(&r);
            init_max = init_max.component_max(&sidecars);
        } else {
            let r = container_amounts(c, config, Place("init container", Some(&c.name)), false)?;
            init_max = init_max.component_max(&r.plus(&sidecars));
        }
    }
    let mut resources = containers.plus(&sidecars).component_max(&init_max);
    if let Some(pod_level) = &spec.resources {
        let picked = pick(config.basis, pod_level.requests.as_ref(), pod_level.limits.as_ref());
        for (kind, (field, q)) in picked {
            resources.set(kind, convert(kind, q, Place("pod resources", None), field)?);
        }
    }
    for (name, q) in spec.overhead.iter().flatten() {
        if let Some(kind) = kind_of(name) {
            resources.add(kind, convert(kind, q, Place("pod overhead", None), "overhead")?);
        }
    }

    // Ports.
    let mapping =
        match meta.labels.as_ref().and_then(|l| l.get(PORT_MAPPING_LABEL)).map(String::as_str) {
            Some("fixed") => PortMapping::Fixed,
            Some("wildcard") => PortMapping::Wildcard,
            _ => config.default_port_mapping,
        };
    let mut ports = Vec::new();
    let port_containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten().filter(|c| is_sidecar(c)));
    for c in port_containers {
        for p in c.ports.iter().flatten() {
            let host_port = match p.host_port {
                Some(n) if n != 0 => match u16::try_from(n) {
                    Ok(n) if n > 0 => HostPort::Fixed(u64::from(n)),
                    _ => {
                        return Err(InvalidPod::BadHostPort { container: c.name.clone(), port: n });
                    }
                },
                _ if mapping == PortMapping::Wildcard => HostPort::Any,
                _ => continue,
            };
            ports.push(PortRequest {
                container: c.name.clone(),
                container_port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                name: p.name.clone(),
                host_port,
            });
        }
    }
    let mut fixed: Vec<u64> = ports
        .iter()
        .filter_map(|p| match p.host_port {
            HostPort::Fixed(n) => Some(n),
            HostPort::Any => None,
        })
        .collect();
    fixed.sort_unstable();
    if let Some(w) = fixed.windows(2).find(|w| w[0] == w[1]) {
        return Err(InvalidPod::DuplicateHostPort { port: w[0] });
    }

    // Constraints.
    let node_selector: Vec<(String, String)> =
        spec.node_selector.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    let affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|sel| -> Result<NodeAffinity, InvalidPod> {
            let terms = sel
                .node_selector_terms
                .iter()
                .map(|t| {
                    let mut requirements = Vec::new();
                    for e in t.match_expressions.iter().flatten() {
                        requirements.push(requirement(&e.key, e)?);
                    }
                    for e in t.match_fields.iter().flatten() {
                        if e.key != "metadata.name" {
                            return Err(InvalidPod::BadAffinity(format!(
                                "unsupported field {:?}",
                                e.key
                            )));
                        }
                        requirements.push(requirement(HOSTNAME_LABEL, e)?);
                    }
                    Ok(Term { requirements })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(NodeAffinity { terms })
        })
        .transpose()?;

    // Roles.
    let asked: Vec<String> = match meta.annotations.as_ref().and_then(|a| a.get(ROLES_ANNOTATION)) {
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                if !out.iter().any(|x| x == r) {
                    out.push(r.to_owned());
                }
            }
            out
        }
        None => config.default_pod_roles.clone(),
    };
    let roles: Vec<String> =
        asked.iter().filter(|r| config.framework_roles.contains(r)).cloned().collect();
    if roles.is_empty() {
        return Err(InvalidPod::NoUsableRole { asked, framework: config.framework_roles.clone() });
    }

    let wants_public = wants_public(config, &roles, &node_selector, affinity.as_ref());
    Ok(PodDemand {
        key,
        priority: spec.priority.unwrap_or(0),
        created,
        resources,
        ports,
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        node_selector,
        affinity,
        roles,
        wants_public,
    })
}

/// True if the pod asks for public agents: its roles include the public role, or its node
/// selector or affinity mentions the public attribute.
pub(crate) fn wants_public(
    config: &Config,
    roles: &[String],
    node_selector: &[(String, String)],
    affinity: Option<&NodeAffinity>,
) -> bool {
    let by_role = config.public_agents.role.as_ref().is_some_and(|r| roles.contains(r));
    let by_attr = config.public_agents.attribute.as_ref().is_some_and(|(name, _)| {
        let key = attribute_label(name);
        node_selector.iter().any(|(k, _)| *k == key)
            || affinity.is_some_and(|a| a.keys().any(|k| k == key))
    });
    by_role || by_attr
}

fn requirement(key: &str, e: &NodeSelectorRequirement) -> Result<Requirement, InvalidPod> {
    let values = e.values.clone().unwrap_or_default();
    let bad = |why: &str| InvalidPod::BadAffinity(format!("{key} {}: {why}", e.operator));
    let int = || -> Result<i64, InvalidPod> {
        match values.as_slice() {
            [v] => v.parse::<i64>().map_err(|_| bad("value is not an integer")),
            _ => Err(bad("needs exactly one value")),
        }
    };
    let op = match e.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => return Err(bad("needs values")),
        "In" => Operator::In(values.clone()),
        "NotIn" => Operator::NotIn(values.clone()),
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt(int()?),
        "Lt" => Operator::Lt(int()?),
        _ => return Err(bad("unknown operator")),
    };
    Ok(Requirement { key: key.to_owned(), op })
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn kind_of(k8s_name: &str) -> Option<ScalarKind> {
    match k8s_name {
        "cpu" => Some(ScalarKind::Cpus),
        "memory" => Some(ScalarKind::Mem),
        "ephemeral-storage" => Some(ScalarKind::Disk),
        "nvidia.com/gpu" => Some(ScalarKind::Gpus),
        _ => None,
    }
}

fn k8s_name(kind: ScalarKind) -> &'static str {
    match kind {
        ScalarKind::Cpus => "cpu",
        ScalarKind::Mem => "memory",
        ScalarKind::Disk => "ephemeral-storage",
        ScalarKind::Gpus => "nvidia.com/gpu",
    }
}

/// Where a quantity sits, rendered only for an error message.
#[derive(Clone, Copy)]
struct Place<'a>(&'static str, Option<&'a str>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{} {name:?}", self.0),
            None => f.write_str(self.0),
        }
    }
}

fn convert(
    kind: ScalarKind,
    q: &Quantity,
    place: Place<'_>,
    field: &'static str,
) -> Result<Scalar, InvalidPod> {
    let unit = match kind {
        ScalarKind::Cpus => Unit::Cores,
        ScalarKind::Mem | ScalarKind::Disk => Unit::Mebibytes,
        ScalarKind::Gpus => Unit::Count,
    };
    quantity::parse(&q.0, unit).map_err(|error| InvalidPod::Quantity {
        place: place.to_string(),
        resource: k8s_name(kind).to_owned(),
        field,
        error,
    })
}

type QuantityMap = BTreeMap<String, Quantity>;

/// For each known kind: the quantity of the basis, else of the other side.
fn pick<'a>(
    basis: ResourceBasis,
    requests: Option<&'a QuantityMap>,
    limits: Option<&'a QuantityMap>,
) -> impl Iterator<Item = (ScalarKind, (&'static str, &'a Quantity))> {
    let (first, first_name, second, second_name) = match basis {
        ResourceBasis::Requests => (requests, "requests", limits, "limits"),
        ResourceBasis::Limits => (limits, "limits", requests, "requests"),
    };
    ScalarKind::ALL.into_iter().filter_map(move |k| {
        let n = k8s_name(k);
        first
            .and_then(|m| m.get(n))
            .map(|q| (first_name, q))
            .or_else(|| second.and_then(|m| m.get(n)).map(|q| (second_name, q)))
            .map(|x| (k, x))
    })
}

fn container_amounts(
    c: &Container,
    config: &Config,
    place: Place<'_>,
    defaults: bool,
) -> Result<Scalars, InvalidPod> {
    let (req, lim) = match &c.resources {
        Some(r) => (r.requests.as_ref(), r.limits.as_ref()),
        None => (None, None),
    };
    let mut out = Scalars::ZERO;
    if defaults {
        out.set(ScalarKind::Cpus, config.default_container_cpus);
        out.set(ScalarKind::Mem, config.default_container_mem);
    }
    for (kind, (field, q)) in pick(config.basis, req, lim) {
        out.set(kind, convert(kind, q, place, field)?);
    }
    Ok(out)
}

fn timestamp_to_system_time(ts: &k8s_openapi::jiff::Timestamp) -> SystemTime {
    let secs = ts.as_second();
    let nanos = u32::try_from(ts.subsec_nanosecond()).unwrap_or(0);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH
            + Duration::new(secs.unsigned_abs(), 0)
            + Duration::from_nanos(u64::from(nanos))
    } else {
        // Negative timestamps carry a non-positive sub-second part.
        let n = u64::try_from(-i64::from(ts.subsec_nanosecond())).unwrap_or(0);
        SystemTime::UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) - Duration::from_nanos(n)
    }
}
