use serde_json::json;

use super::*;

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn policy_with(objects: &[Value]) -> Policy {
    let mut p = Policy::default();
    for o in bootstrap().iter().chain(objects) {
        p.put(
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default(),
            Some(o),
        );
    }
    p
}

fn role_binding(ns: &str, name: &str, role_kind: &str, role: &str, subject: Value) -> Value {
    json!({
        "kind": "RoleBinding",
        "metadata": { "namespace": ns, "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role },
        "subjects": [subject],
    })
}

#[test]
fn masters_may_do_anything_and_others_only_what_is_bound_to_them() {
    let p = policy_with(&[role_binding(
        "team",
        "jane-edits",
        "ClusterRole",
        "edit",
        json!({ "kind": "User", "name": "jane" }),
    )]);
    let admin = user("admin", &[MASTERS, AUTHENTICATED]);
    let jane = user("jane", &[AUTHENTICATED]);
    let create_pod = Attributes::resource("create", "", "pods", "team", "");
    assert!(p.allows(&admin, &Attributes::resource("delete", "", "nodes", "", "n1")));
    assert!(p.allows(&jane, &create_pod));
    assert!(
        !p.allows(&jane, &Attributes::resource("create", "", "pods", "other", "")),
        "only in team"
    );
    assert!(!p.allows(&jane, &Attributes::resource("list", "", "nodes", "", "")));
    assert!(
        !p.allows(
            &jane,
            &Attributes::resource("create", "rbac.authorization.k8s.io", "roles", "team", "")
        ),
        "edit cannot touch roles"
    );
    let mut logs = Attributes::resource("get", "", "pods", "team", "p");
    logs.subresource = "log".into();
    assert!(p.allows(&jane, &logs));
    // Discovery for everyone authenticated, nothing for the anonymous but health and version.
    let path = |p: &str| Attributes { verb: "get".into(), path: p.into(), ..Default::default() };
    assert!(p.allows(&jane, &path("/apis/apps/v1")));
    let anonymous = user(ANONYMOUS, &[UNAUTHENTICATED]);
    assert!(p.allows(&anonymous, &path("/version")));
    assert!(!p.allows(&anonymous, &path("/apis")));
    assert!(!p.allows(&anonymous, &create_pod));
}

#[test]
fn rules_match_names_subresources_groups_and_service_accounts() {
    let p = policy_with(&[
        json!({
            "kind": "Role",
            "metadata": { "namespace": "app", "name": "one-config" },
            "rules": [
                { "verbs": ["get", "update"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"] },
                { "verbs": ["get"], "apiGroups": ["apps"], "resources": ["*/scale"] },
            ],
        }),
        role_binding(
            "app",
            "bot",
            "Role",
            "one-config",
            json!({ "kind": "ServiceAccount", "name": "bot", "namespace": "app" }),
        ),
        role_binding("app", "ops", "Role", "one-config", json!({ "kind": "Group", "name": "ops" })),
    ]);
    let bot = user("system:serviceaccount:app:bot", &["system:serviceaccounts", AUTHENTICATED]);
    assert!(p.allows(&bot, &Attributes::resource("get", "", "configmaps", "app", "settings")));
    assert!(!p.allows(&bot, &Attributes::resource("get", "", "configmaps", "app", "other")));
    assert!(
        !p.allows(&bot, &Attributes::resource("list", "", "configmaps", "app", "")),
        "names do not allow lists"
    );
    let mut scale = Attributes::resource("get", "apps", "deployments", "app", "web");
    scale.subresource = "scale".into();
    assert!(p.allows(&bot, &scale));
    assert!(!p.allows(&bot, &Attributes::resource("get", "apps", "deployments", "app", "web")));
    let ops = user("sam", &["ops"]);
    assert!(p.allows(&ops, &Attributes::resource("update", "", "configmaps", "app", "settings")));
    let other_sa = user("system:serviceaccount:other:bot", &[]);
    assert!(
        !p.allows(&other_sa, &Attributes::resource("get", "", "configmaps", "app", "settings"))
    );
}

#[test]
fn a_user_grants_only_what_they_hold() {
    let p = policy_with(&[role_binding(
        "team",
        "jane-admin",
        "ClusterRole",
        "admin",
        json!({ "kind": "User", "name": "jane" }),
    )]);
    let jane = user("jane", &[AUTHENTICATED]);
    let within = vec![Rule::from_json(
        &json!({ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "secrets"] }),
    )];
    assert!(p.uncovered(&jane, "team", &within).is_empty());
    let beyond = vec![Rule::from_json(
        &json!({ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "nodes"] }),
    )];
    let missing = p.uncovered(&jane, "team", &beyond);
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing.iter().all(|r| r.resources == ["nodes"]));
    let wildcard =
        vec![Rule::from_json(&json!({ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"] }))];
    assert!(!p.uncovered(&jane, "team", &wildcard).is_empty(), "a wildcard needs a wildcard");
    assert!(p.uncovered(&user("root", &[MASTERS]), "", &wildcard).is_empty());
}

#[test]
fn denials_read_as_kubernetes_writes_them() {
    let a = Attributes::resource("list", "", "pods", "default", "");
    assert_eq!(
        a.denial("jane"),
        "pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    let mut b = Attributes::resource("get", "apps", "deployments", "", "web");
    b.subresource = "scale".into();
    assert_eq!(
        b.denial("jane"),
        "deployments.apps \"web\" is forbidden: User \"jane\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
    );
    let c = Attributes { verb: "get".into(), path: "/metrics".into(), ..Default::default() };
    assert_eq!(c.denial("jane"), "forbidden: User \"jane\" cannot get path \"/metrics\"");
}

#[test]
fn deleted_objects_leave_the_policy() {
    let binding =
        role_binding("team", "b", "ClusterRole", "view", json!({ "kind": "User", "name": "jane" }));
    let mut p = policy_with(std::slice::from_ref(&binding));
    let jane = user("jane", &[]);
    let get = Attributes::resource("get", "", "pods", "team", "p");
    assert!(p.allows(&jane, &get));
    p.put("RoleBinding", "team", "b", None);
    assert!(!p.allows(&jane, &get));
}
