//! The kinds this server serves. Group, version, kind and plural come from
//! the `k8s_openapi` types (their `Resource` impls), so they cannot drift
//! from what clients compiled against the same types expect.

use k8s_openapi::api::{apps, batch, coordination, core, policy, rbac};
use k8s_openapi::{ClusterResourceScope, ListableResource, NamespaceResourceScope, Resource};
use serde_json::Value;

/// One served resource.
#[derive(Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources below `<plural>/<name>/`.
    pub subresources: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether the typed decode of a JSON object succeeds (schema check).
    pub decode: fn(&Value) -> Result<(), String>,
    /// Registers the kind's JSON schema (and those it refers to) with the
    /// generator; returns its definition name (`io.k8s.api.apps.v1.Deployment`).
    pub schema: fn(&mut schemars::SchemaGenerator) -> String,
}

impl Kind {
    /// `/registry/<plural>/` (+ `<namespace>/` when given).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.plural),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn has_scale(&self) -> bool {
        self.subresources.contains(&"scale")
    }

    pub fn group_version(&self) -> &'static str {
        self.api_version
    }

    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<(), String> {
    T::deserialize(value).map(drop).map_err(|e| e.to_string())
}

pub(crate) fn schema<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

macro_rules! kind {
    ($ty:ty, $singular:literal, [$($short:literal),*], [$($sub:literal),*], [$($cat:literal),*]) => {
        Kind {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            api_version: <$ty as Resource>::API_VERSION,
            kind: <$ty as Resource>::KIND,
            list_kind: <$ty as ListableResource>::LIST_KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            namespaced: <<$ty as Resource>::Scope as Scope>::NAMESPACED,
            short_names: &[$($short),*],
            subresources: &[$($sub),*],
            categories: &[$($cat),*],
            decode: decode::<$ty>,
            schema: schema::<$ty>,
        }
    };
}

/// Every served kind, grouped by API group in discovery order.
pub static KINDS: &[Kind] = &[
    kind!(core::v1::Namespace, "namespace", ["ns"], ["status", "finalize"], []),
    kind!(core::v1::Pod, "pod", ["po"], ["status", "binding", "log", "exec"], ["all"]),
    kind!(core::v1::Node, "node", ["no"], ["status"], []),
    kind!(core::v1::Service, "service", ["svc"], ["status"], ["all"]),
    kind!(core::v1::Endpoints, "endpoints", ["ep"], [], []),
    kind!(core::v1::Event, "event", ["ev"], [], []),
    kind!(core::v1::ConfigMap, "configmap", ["cm"], [], []),
    kind!(core::v1::Secret, "secret", [], [], []),
    kind!(core::v1::ServiceAccount, "serviceaccount", ["sa"], ["token"], []),
    kind!(
        core::v1::ReplicationController,
        "replicationcontroller",
        ["rc"],
        ["status", "scale"],
        ["all"]
    ),
    kind!(apps::v1::ReplicaSet, "replicaset", ["rs"], ["status", "scale"], ["all"]),
    kind!(apps::v1::Deployment, "deployment", ["deploy"], ["status", "scale"], ["all"]),
    kind!(apps::v1::DaemonSet, "daemonset", ["ds"], ["status"], ["all"]),
    kind!(apps::v1::StatefulSet, "statefulset", ["sts"], ["status", "scale"], ["all"]),
    kind!(batch::v1::Job, "job", [], ["status"], ["all"]),
    kind!(batch::v1::CronJob, "cronjob", ["cj"], ["status"], ["all"]),
    kind!(coordination::v1::Lease, "lease", [], [], []),
    kind!(policy::v1::PodDisruptionBudget, "poddisruptionbudget", ["pdb"], ["status"], []),
    kind!(rbac::v1::ClusterRole, "clusterrole", [], [], []),
    kind!(rbac::v1::ClusterRoleBinding, "clusterrolebinding", [], [], []),
    kind!(rbac::v1::Role, "role", [], [], []),
    kind!(rbac::v1::RoleBinding, "rolebinding", [], [], []),
];

/// The kind served at `<group>/<version>` under `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.version == version && k.plural == plural)
}

pub fn by_kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// `(group, version)` pairs in discovery order, the core group first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_openapi_types() {
        let pods = lookup("", "v1", "pods").expect("pods");
        assert_eq!((pods.kind, pods.list_kind, pods.namespaced), ("Pod", "PodList", true));
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.api_version, "apps/v1");
        assert!(!lookup("", "v1", "nodes").expect("nodes").namespaced);
        assert_eq!(lookup("coordination.k8s.io", "v1", "leases").map(|k| k.kind), Some("Lease"));
        assert_eq!(pods.key(Some("default"), "p"), "/registry/pods/default/p");
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
