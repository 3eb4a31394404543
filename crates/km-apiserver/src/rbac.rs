//! Role-based access control: the rules of `rbac.authorization.k8s.io/v1` Roles and
//! ClusterRoles, granted to users, groups and service accounts by RoleBindings and
//! ClusterRoleBindings, and the decision whether a request is allowed. Pure: the policy is
//! built from the stored objects and asked questions; nothing here does IO.
//!
//! Members of `system:masters` may do anything (kube-apiserver's superuser group); everyone
//! else may do exactly what some rule bound to them allows. Nothing is denied explicitly:
//! rules only add.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::secure::User;

/// The group whose members are allowed everything.
pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const ANONYMOUS: &str = "system:anonymous";

/// What a request asks to do, as authorization sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// a special verb (`impersonate`, `bind`, `escalate`).
    pub verb: String,
    /// A request to a resource (else to a plain path).
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path, for requests that are not to resources.
    pub path: String,
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// kube-apiserver's sentence for a denial.
    pub fn denial(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("forbidden: User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let qualified = if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        };
        let object =
            if self.name.is_empty() { qualified } else { format!("{qualified} {:?}", self.name) };
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "{object} is forbidden: User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            self.verb, self.api_group
        )
    }
}

/// One rule of a role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut out = json!({ "verbs": self.verbs });
        if !self.non_resource_urls.is_empty() {
            out["nonResourceURLs"] = json!(self.non_resource_urls);
        } else {
            out["apiGroups"] = json!(self.api_groups);
            out["resources"] = json!(self.resources);
            if !self.resource_names.is_empty() {
                out["resourceNames"] = json!(self.resource_names);
            }
        }
        out
    }

    fn has(list: &[String], value: &str) -> bool {
        list.iter().any(|x| x == "*" || x == value)
    }

    /// Whether the rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !Rule::has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !Rule::has(&self.api_groups, &a.api_group) {
            return false;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty()
                    && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        resource_ok && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    /// Whether this rule grants everything `other` grants (for the escalation check).
    fn covers(&self, other: &Rule) -> bool {
        let all = |mine: &[String], theirs: &[String]| {
            mine.iter().any(|m| m == "*") || theirs.iter().all(|t| mine.contains(t))
        };
        if !other.non_resource_urls.is_empty() {
            return all(&self.verbs, &other.verbs)
                && other.non_resource_urls.iter().all(|u| {
                    self.non_resource_urls.iter().any(|m| {
                        m == "*" || m == u || m.strip_suffix('*').is_some_and(|p| u.starts_with(p))
                    })
                });
        }
        all(&self.verbs, &other.verbs)
            && all(&self.api_groups, &other.api_groups)
            && other.resources.iter().all(|r| {
                self.resources
                    .iter()
                    .any(|m| m == "*" || m == r || (m.starts_with("*/") && r.ends_with(&m[1..])))
            })
            && (self.resource_names.is_empty()
                || (!other.resource_names.is_empty()
                    && other.resource_names.iter().all(|n| self.resource_names.contains(n))))
    }

    /// The rule split into one rule per verb, group, resource and name (URL), so that each
    /// part can be covered by a different rule.
    fn atoms(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for verb in &self.verbs {
            if !self.non_resource_urls.is_empty() {
                for url in &self.non_resource_urls {
                    out.push(Rule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: vec![url.clone()],
                        ..Default::default()
                    });
                }
                continue;
            }
            for group in &self.api_groups {
                for resource in &self.resources {
                    let names: Vec<Vec<String>> = if self.resource_names.is_empty() {
                        vec![Vec::new()]
                    } else {
                        self.resource_names.iter().map(|n| vec![n.clone()]).collect()
                    };
                    for names in names {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: names,
                            non_resource_urls: Vec::new(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    fn matches(&self, user: &User) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                user.name == format!("system:serviceaccount:{}:{}", self.namespace, self.name)
            }
            _ => false,
        }
    }
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// `Role` (of the binding's namespace) or `ClusterRole`.
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

impl Binding {
    pub fn from_json(v: &Value) -> Binding {
        let subjects = v["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| Subject {
                        kind: s["kind"].as_str().unwrap_or_default().into(),
                        name: s["name"].as_str().unwrap_or_default().into(),
                        namespace: s["namespace"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            role_kind: v["roleRef"]["kind"].as_str().unwrap_or_default().into(),
            role_name: v["roleRef"]["name"].as_str().unwrap_or_default().into(),
            subjects,
        }
    }
}

/// Everything the stored RBAC objects say.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cluster_roles: HashMap<String, Vec<Rule>>,
    /// By (namespace, name).
    pub roles: HashMap<(String, String), Vec<Rule>>,
    pub cluster_bindings: HashMap<String, Binding>,
    /// By (namespace, name).
    pub bindings: HashMap<(String, String), Binding>,
}

fn rules_of(role: &Value) -> Vec<Rule> {
    role["rules"].as_array().map(|a| a.iter().map(Rule::from_json).collect()).unwrap_or_default()
}

impl Policy {
    /// Records a stored object of one of the four kinds (`None`: it was deleted).
    pub fn put(&mut self, kind: &str, namespace: &str, name: &str, obj: Option<&Value>) {
        let key = (namespace.to_owned(), name.to_owned());
        match (kind, obj) {
            ("ClusterRole", Some(o)) => {
                self.cluster_roles.insert(name.into(), rules_of(o));
            }
            ("ClusterRole", None) => {
                self.cluster_roles.remove(name);
            }
            ("Role", Some(o)) => {
                self.roles.insert(key, rules_of(o));
            }
            ("Role", None) => {
                self.roles.remove(&key);
            }
            ("ClusterRoleBinding", Some(o)) => {
                self.cluster_bindings.insert(name.into(), Binding::from_json(o));
            }
            ("ClusterRoleBinding", None) => {
                self.cluster_bindings.remove(name);
            }
            ("RoleBinding", Some(o)) => {
                // A service account named without a namespace is the binding's namespace's.
                let mut binding = Binding::from_json(o);
                for s in &mut binding.subjects {
                    if s.kind == "ServiceAccount" && s.namespace.is_empty() {
                        s.namespace = namespace.to_owned();
                    }
                }
                self.bindings.insert(key, binding);
            }
            ("RoleBinding", None) => {
                self.bindings.remove(&key);
            }
            _ => {}
        }
    }

    /// The rules that apply to `user` in `namespace` (empty: cluster-wide only).
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = Vec::new();
        for b in self.cluster_bindings.values() {
            if b.role_kind == "ClusterRole" && b.subjects.iter().any(|s| s.matches(user)) {
                out.extend(self.cluster_roles.get(&b.role_name).into_iter().flatten());
            }
        }
        if namespace.is_empty() {
            return out;
        }
        for ((ns, _), b) in &self.bindings {
            if ns != namespace || !b.subjects.iter().any(|s| s.matches(user)) {
                continue;
            }
            let rules = match b.role_kind.as_str() {
                "ClusterRole" => self.cluster_roles.get(&b.role_name),
                "Role" => self.roles.get(&(ns.clone(), b.role_name.clone())),
                _ => None,
            };
            out.extend(rules.into_iter().flatten());
        }
        out
    }

    pub fn allows(&self, user: &User, a: &Attributes) -> bool {
        user.groups.iter().any(|g| g == MASTERS)
            || self.rules_for(user, &a.namespace).iter().any(|r| r.allows(a))
    }

    /// The parts of `rules` that `user` does not hold in `namespace` (empty: none; a user
    /// may grant only what they hold themselves).
    pub fn uncovered(&self, user: &User, namespace: &str, rules: &[Rule]) -> Vec<Rule> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Vec::new();
        }
        let held = self.rules_for(user, namespace);
        rules
            .iter()
            .flat_map(Rule::atoms)
            .filter(|atom| !held.iter().any(|h| h.covers(atom)))
            .collect()
    }

    /// The rules of the role a binding refers to (none: it does not exist).
    pub fn role_rules(&self, namespace: &str, kind: &str, name: &str) -> Option<&Vec<Rule>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(&(namespace.to_owned(), name.to_owned())),
            _ => None,
        }
    }
}

/// The roles and bindings every km apiserver makes sure exist, as kube-apiserver's bootstrap
/// policy does: `cluster-admin` (for `system:masters`), the user-facing `admin`, `edit` and
/// `view`, discovery for everyone, and one least-privilege role per km component.
pub fn bootstrap() -> Vec<Value> {
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| json!({ "verbs": verbs, "apiGroups": groups, "resources": resources });
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let all_verbs: Vec<&str> = read.iter().chain(write.iter()).copied().collect();
    let core_workloads = [
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "serviceaccounts",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "persistentvolumeclaims",
        "events",
    ];
    let apps = [
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
        "daemonsets",
        "daemonsets/status",
    ];
    let batch = ["jobs", "jobs/status", "cronjobs", "cronjobs/status"];
    let policy = ["poddisruptionbudgets", "poddisruptionbudgets/status"];
    let view_rules = vec![
        rule(&read, &[""], &core_workloads),
        rule(&read, &[""], &["namespaces", "namespaces/status"]),
        rule(&read, &["apps"], &apps),
        rule(&read, &["batch"], &batch),
        rule(&read, &["policy"], &policy),
    ];
    let mut edit_rules = view_rules.clone();
    edit_rules.extend([
        rule(&write, &[""], &core_workloads),
        rule(&all_verbs, &[""], &["secrets"]),
        rule(&["create", "get"], &[""], &["pods/exec"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(&write, &["apps"], &apps),
        rule(&write, &["batch"], &batch),
        rule(&write, &["policy"], &policy),
        rule(&all_verbs, &["coordination.k8s.io"], &["leases"]),
    ]);
    let mut admin_rules = edit_rules.clone();
    admin_rules.push(rule(&all_verbs, &["rbac.authorization.k8s.io"], &["roles", "rolebindings"]));
    let discovery = json!({
        "verbs": ["get"],
        "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/", "/openapi", "/openapi/*"],
    });
    let reviews = rule(
        &["create"],
        &["authorization.k8s.io"],
        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    );
    let role = |name: &str, rules: Vec<Value>| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": name, "labels": { "kubernetes.io/bootstrapping": "rbac-defaults" } },
            "rules": rules,
        })
    };
    let binding = |name: &str, role: &str, kind: &str, subject: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": name, "labels": { "kubernetes.io/bootstrapping": "rbac-defaults" } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject }],
        })
    };
    let all = json!({ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"] });
    let all_urls = json!({ "verbs": ["*"], "nonResourceURLs": ["*"] });
    // km scheduler: watches pods and nodes, binds pods, writes pod status and conditions,
    // keeps a Node per Mesos agent, records events.
    let scheduler = vec![
        rule(&["get", "list", "watch", "update", "patch", "delete"], &[""], &["pods"]),
        rule(&["create"], &[""], &["pods/binding"]),
        rule(&["get", "update", "patch"], &[""], &["pods/status"]),
        rule(
            &["get", "list", "watch", "create", "update", "patch", "delete"],
            &[""],
            &["nodes", "nodes/status"],
        ),
        rule(&["get", "list", "watch"], &[""], &["namespaces", "services", "endpoints"]),
        rule(&["create", "patch", "update"], &[""], &["events"]),
    ];
    // km controller-manager: the replication, deployment, job, endpoints, namespace, node and
    // garbage-collection controllers read everything; the garbage collector and the
    // namespace controller may change or remove any object; they create only what they own.
    let controllers = vec![
        json!({ "verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"] }),
        json!({ "verbs": ["update", "patch", "delete", "deletecollection"], "apiGroups": ["*"], "resources": ["*"] }),
        rule(&["create"], &[""], &["pods", "endpoints", "events", "nodes"]),
        rule(&["create"], &["apps"], &["replicasets"]),
        rule(&["create"], &["batch"], &["jobs"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
    ];
    // km kubelet (and executor) mirror pods and report status of the pods on their node.
    let node = vec![
        rule(
            &["get", "list", "watch", "create", "delete", "patch", "update"],
            &[""],
            &["pods", "pods/status"],
        ),
        rule(
            &["get", "list", "watch", "create", "patch", "update"],
            &[""],
            &["nodes", "nodes/status"],
        ),
        rule(&["get", "list", "watch"], &[""], &["configmaps", "secrets", "services", "endpoints"]),
        rule(&["create", "patch", "update"], &[""], &["events"]),
    ];
    vec![
        role("cluster-admin", vec![all, all_urls]),
        binding("cluster-admin", "cluster-admin", "Group", MASTERS),
        role("admin", admin_rules),
        role("edit", edit_rules),
        role("view", view_rules),
        role("system:discovery", vec![discovery, reviews]),
        binding("system:discovery", "system:discovery", "Group", AUTHENTICATED),
        role(
            "system:public-info-viewer",
            vec![
                json!({ "verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"] }),
            ],
        ),
        binding("system:public-info-viewer", "system:public-info-viewer", "Group", UNAUTHENTICATED),
        role("system:km-scheduler", scheduler),
        binding("system:km-scheduler", "system:km-scheduler", "User", "system:km-scheduler"),
        role("system:km-controller-manager", controllers),
        binding(
            "system:km-controller-manager",
            "system:km-controller-manager",
            "User",
            "system:km-controller-manager",
        ),
        role("system:km-node", node),
        binding("system:km-nodes", "system:km-node", "Group", "system:nodes"),
    ]
}

#[cfg(test)]
mod tests;
