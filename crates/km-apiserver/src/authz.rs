//! Authorization of every request: `--authorization-mode` (AlwaysAllow, AlwaysDeny, RBAC),
//! the RBAC policy kept in memory from the stored roles and bindings, impersonation
//! (`Impersonate-User`, `Impersonate-Group`), and the checks that stop a user from granting
//! permissions they do not hold themselves.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::api::{Api, Query, parse_query};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{
    self, ANONYMOUS, AUTHENTICATED, Attributes, MASTERS, Policy, Rule, UNAUTHENTICATED,
};
use crate::registry::{self, Kind};
use crate::secure::User;
use crate::storage::Storage;

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything is allowed (the local cluster's default).
    #[default]
    AlwaysAllow,
    /// Nothing is allowed (but to `system:masters`).
    AlwaysDeny,
    /// Roles and bindings decide.
    Rbac,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            "AlwaysDeny" => Ok(Mode::AlwaysDeny),
            "RBAC" => Ok(Mode::Rbac),
            other => Err(format!(
                "unknown authorization mode {other:?}: km apiserver knows AlwaysAllow, AlwaysDeny and RBAC"
            )),
        }
    }
}

/// The user of requests on the insecure port: a superuser, as kube-apiserver's insecure port
/// was.
pub fn unsecured() -> User {
    User {
        name: "system:unsecured".into(),
        uid: String::new(),
        groups: vec![MASTERS.into(), AUTHENTICATED.into()],
    }
}

pub fn anonymous() -> User {
    User { name: ANONYMOUS.into(), uid: String::new(), groups: vec![UNAUTHENTICATED.into()] }
}

/// The authorizer: a mode and, for RBAC, the policy.
#[derive(Debug, Default)]
pub struct Authorizer {
    mode: Mode,
    policy: RwLock<Policy>,
}

impl Authorizer {
    pub fn new(mode: Mode) -> Authorizer {
        Authorizer { mode, policy: RwLock::default() }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn policy(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn allows(&self, user: &User, a: &Attributes) -> bool {
        match self.mode {
            Mode::AlwaysAllow => true,
            Mode::AlwaysDeny => user.groups.iter().any(|g| g == MASTERS),
            Mode::Rbac => self.policy().allows(user, a),
        }
    }

    /// The rules that apply to `user` in `namespace` (SelfSubjectRulesReview).
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<Rule> {
        match self.mode {
            Mode::AlwaysAllow => vec![
                Rule::from_json(
                    &serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                ),
                Rule::from_json(&serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]})),
            ],
            Mode::AlwaysDeny => Vec::new(),
            Mode::Rbac => self.policy().rules_for(user, namespace).into_iter().cloned().collect(),
        }
    }

    /// Refuses a Role, ClusterRole or binding that would grant `user` more than they hold,
    /// unless they may `escalate` (roles) or `bind` (the role a binding names).
    pub fn check_grant(&self, user: &User, kind: &Kind, obj: &Value) -> ApiResult<()> {
        if self.mode != Mode::Rbac {
            return Ok(());
        }
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let rbac_group = "rbac.authorization.k8s.io";
        let policy = self.policy();
        let rules: Vec<Rule> = match kind.kind {
            "Role" | "ClusterRole" => {
                let escalate =
                    Attributes::resource("escalate", rbac_group, kind.plural, namespace, name);
                if policy.allows(user, &escalate) {
                    return Ok(());
                }
                obj["rules"]
                    .as_array()
                    .map(|a| a.iter().map(Rule::from_json).collect())
                    .unwrap_or_default()
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
                let role_name = obj["roleRef"]["name"].as_str().unwrap_or_default();
                let (plural, role_ns) =
                    if role_kind == "Role" { ("roles", namespace) } else { ("clusterroles", "") };
                let bind = Attributes::resource("bind", rbac_group, plural, role_ns, role_name);
                if policy.allows(user, &bind) {
                    return Ok(());
                }
                match policy.role_rules(namespace, role_kind, role_name) {
                    Some(rules) => rules.clone(),
                    None => {
                        return Err(ApiError::Forbidden(format!(
                            "{}.{rbac_group} {name:?} is forbidden: user {:?} may not bind {role_kind} {role_name:?}: it does not exist and the user may not bind it",
                            kind.plural, user.name
                        )));
                    }
                }
            }
            _ => return Ok(()),
        };
        let missing = policy.uncovered(user, namespace, &rules);
        if missing.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = missing.iter().map(|r| r.to_json().to_string()).collect();
        Err(ApiError::Forbidden(format!(
            "{}.{rbac_group} {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            kind.plural,
            user.name,
            user.groups,
            listed.join("\n")
        )))
    }

    /// Loads the stored roles and bindings and keeps them current from etcd's watch.
    pub async fn start_feed<S: Storage>(
        self: &Arc<Self>,
        storage: Arc<S>,
    ) -> Result<(), crate::storage::StorageError> {
        if self.mode != Mode::Rbac {
            return Ok(());
        }
        for kind in rbac_kinds() {
            let revision = self.load(&*storage, kind).await?;
            let (me, storage) = (Arc::clone(self), Arc::clone(&storage));
            tokio::spawn(async move { me.follow(storage, kind, revision).await });
        }
        Ok(())
    }

    async fn load<S: Storage>(
        &self,
        storage: &S,
        kind: &'static Kind,
    ) -> Result<i64, crate::storage::StorageError> {
        let listed = storage.list(&kind.prefix(None), None, 0, 0).await?;
        let mut policy = self.policy.write().unwrap_or_else(|p| p.into_inner());
        // Forget what a relist no longer holds.
        let mut fresh = std::mem::take(&mut *policy);
        clear_kind(&mut fresh, kind.kind);
        for kv in &listed.items {
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                put(&mut fresh, kind, &kv.key, Some(&obj));
            }
        }
        *policy = fresh;
        Ok(listed.revision)
    }

    async fn follow<S: Storage>(
        self: Arc<Self>,
        storage: Arc<S>,
        kind: &'static Kind,
        mut revision: i64,
    ) {
        let mut delay = Duration::from_millis(100);
        loop {
            match storage.watch(&kind.prefix(None), revision + 1).await {
                Ok(mut stream) => {
                    while let Some(batch) = stream.next().await {
                        let Ok(events) = batch else { break };
                        let mut policy = self.policy.write().unwrap_or_else(|p| p.into_inner());
                        for ev in events {
                            let obj = ev
                                .value
                                .as_ref()
                                .and_then(|v| serde_json::from_slice::<Value>(v).ok());
                            put(&mut policy, kind, &ev.key, obj.as_ref());
                            revision = revision.max(ev.revision);
                        }
                        delay = Duration::from_millis(100);
                    }
                }
                Err(e) => tracing::warn!("watching {} for the RBAC policy: {e}", kind.plural),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            match self.load(&*storage, kind).await {
                Ok(r) => revision = r,
                Err(e) => tracing::warn!("listing {} for the RBAC policy: {e}", kind.plural),
            }
        }
    }
}

/// The four RBAC kinds the policy is made of (all of them are served).
fn rbac_kinds() -> impl Iterator<Item = &'static Kind> {
    ["clusterroles", "clusterrolebindings", "roles", "rolebindings"]
        .into_iter()
        .filter_map(|plural| registry::lookup("rbac.authorization.k8s.io", "v1", plural))
}

fn clear_kind(policy: &mut Policy, kind: &str) {
    match kind {
        "ClusterRole" => policy.cluster_roles.clear(),
        "Role" => policy.roles.clear(),
        "ClusterRoleBinding" => policy.cluster_bindings.clear(),
        "RoleBinding" => policy.bindings.clear(),
        _ => {}
    }
}

/// Records the object at `key` (`None`: deleted).
fn put(policy: &mut Policy, kind: &Kind, key: &str, obj: Option<&Value>) {
    let rest = key.strip_prefix(&kind.prefix(None)).unwrap_or_default();
    let (namespace, name) =
        if kind.namespaced { rest.split_once('/').unwrap_or(("", rest)) } else { ("", rest) };
    policy.put(kind.kind, namespace, name, obj);
}

/// What a request asks for: resource requests by their path, verb by method and query;
/// everything else is a path with verb `get` (or the method's verb).
pub fn attributes(method: &Method, path: &str, query: &Query) -> Attributes {
    let verb_of = |has_name: bool| match *method {
        Method::GET | Method::HEAD if !has_name => {
            if crate::api::flag(query, "watch") {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    };
    if let Some(t) = crate::server::parse_path(path)
        && let Some(resource) = t.resource
    {
        let mut a = Attributes::resource(
            verb_of(t.name.is_some()),
            t.group,
            resource,
            t.namespace.unwrap_or_default(),
            t.name.unwrap_or_default(),
        );
        if resource == "namespaces"
            && let Some(name) = t.name
        {
            a.namespace = name.to_owned();
        }
        if let Some(sub) = t.subresource {
            a.subresource = sub.to_owned();
            // Running a command in a pod is a create whatever the method (websocket GETs).
            if sub == "exec" || sub == "attach" || sub == "portforward" {
                a.verb = "create".into();
            }
        }
        return a;
    }
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    Attributes { verb: verb.into(), path: path.into(), ..Default::default() }
}

/// The user a request acts as, after impersonation (checked with `impersonate`).
fn impersonate(authz: &Authorizer, user: User, headers: &HeaderMap) -> ApiResult<User> {
    let as_user = headers.get("impersonate-user").and_then(|v| v.to_str().ok());
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let Some(as_user) = as_user else {
        if groups.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::BadRequest(
            "requested Impersonate-Group without Impersonate-User".into(),
        ));
    };
    let check = |a: Attributes| -> ApiResult<()> {
        if authz.allows(&user, &a) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(a.denial(&user.name)))
        }
    };
    match as_user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
        Some((ns, name)) => {
            check(Attributes::resource("impersonate", "", "serviceaccounts", ns, name))?
        }
        None => check(Attributes::resource("impersonate", "", "users", "", as_user))?,
    }
    for g in &groups {
        check(Attributes::resource("impersonate", "", "groups", "", g))?;
    }
    let mut all = groups;
    if as_user.starts_with("system:serviceaccount:")
        && let Some((ns, _)) = as_user["system:serviceaccount:".len()..].split_once(':')
    {
        all.push("system:serviceaccounts".into());
        all.push(format!("system:serviceaccounts:{ns}"));
    }
    if as_user != ANONYMOUS && !all.iter().any(|g| g == AUTHENTICATED) {
        all.push(AUTHENTICATED.into());
    }
    Ok(User { name: as_user.to_owned(), uid: String::new(), groups: all })
}

/// Middleware: the request's user (set by the port's authentication; anonymous if none),
/// after impersonation, must be allowed what the request asks; else a 403 naming user, verb
/// and resource. The effective user is left in the request's extensions.
pub async fn authorize<S: Storage>(
    State(api): State<Arc<Api<S>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = request.extensions().get::<User>().cloned().unwrap_or_else(anonymous);
    // A ServiceAccount token is good while its account is: the same one (uid), not a new
    // account of the same name.
    if let Some(rest) = user.name.strip_prefix("system:serviceaccount:")
        && !user.uid.is_empty()
        && let Some((ns, name)) = rest.split_once(':')
    {
        let live = match registry::by_kind("ServiceAccount") {
            Some(kind) => api.get(kind, Some(ns), name).await.ok(),
            None => None,
        };
        if live.as_ref().and_then(|sa| sa["metadata"]["uid"].as_str()) != Some(user.uid.as_str()) {
            return ApiError::Unauthorized("Unauthorized".into()).into_response();
        }
    }
    let user = match impersonate(&api.authorizer, user, request.headers()) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // AlwaysAllow decides nothing: no request attributes to work out.
    if api.authorizer.mode() == Mode::AlwaysAllow {
        request.extensions_mut().insert(user);
        return next.run(request).await;
    }
    let query = parse_query(request.uri().query());
    let a = attributes(request.method(), request.uri().path(), &query);
    if !api.authorizer.allows(&user, &a) {
        tracing::debug!(user = %user.name, verb = %a.verb, resource = %a.resource, path = %a.path, "forbidden");
        return ApiError::Denied {
            group: a.api_group.clone(),
            plural: a.resource.clone(),
            name: a.name.clone(),
            message: a.denial(&user.name),
        }
        .into_response();
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// Middleware of the insecure port: its requests act as [`unsecured`].
pub async fn unsecured_port(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(unsecured());
    next.run(request).await
}

/// The bootstrap roles and bindings (see [`rbac::bootstrap`]), as (kind, object).
pub fn bootstrap_objects() -> Vec<(&'static Kind, Value)> {
    rbac::bootstrap()
        .into_iter()
        .filter_map(|o| {
            let kind = registry::by_kind(o["kind"].as_str().unwrap_or_default())?;
            Some((kind, o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_attributes_follow_kubernetes_verbs() {
        let q = Query::new();
        let a = attributes(&Method::GET, "/api/v1/namespaces/team/pods", &q);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "pods", "team")
        );
        let mut w = Query::new();
        w.insert("watch".into(), "true".into());
        assert_eq!(attributes(&Method::GET, "/apis/apps/v1/deployments", &w).verb, "watch");
        let a = attributes(&Method::DELETE, "/api/v1/namespaces/team/pods", &q);
        assert_eq!(a.verb, "deletecollection");
        let a = attributes(&Method::PATCH, "/apis/apps/v1/namespaces/t/deployments/web/scale", &q);
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.subresource.as_str(), a.name.as_str()),
            ("patch", "apps", "scale", "web")
        );
        let a = attributes(&Method::GET, "/api/v1/namespaces/t/pods/p/exec", &q);
        assert_eq!(a.verb, "create");
        let a = attributes(&Method::GET, "/api/v1/namespaces/team", &q);
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("namespaces", "team", "team")
        );
        let a = attributes(&Method::GET, "/apis/apps/v1", &q);
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/apis/apps/v1"));
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let authz = Authorizer::new(Mode::Rbac);
        {
            let mut p = authz.policy.write().unwrap_or_else(|p| p.into_inner());
            for o in rbac::bootstrap() {
                p.put(
                    o["kind"].as_str().unwrap_or_default(),
                    "",
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                    Some(&o),
                );
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("impersonate-user", http::HeaderValue::from_static("jane"));
        headers.append("impersonate-group", http::HeaderValue::from_static("devs"));
        let admin = impersonate(&authz, unsecured(), &headers).expect("a master may impersonate");
        assert_eq!(admin.name, "jane");
        assert_eq!(admin.groups, ["devs", AUTHENTICATED]);
        let jane =
            User { name: "jane".into(), uid: String::new(), groups: vec![AUTHENTICATED.into()] };
        let err = impersonate(&authz, jane, &headers).expect_err("jane may not");
        assert_eq!(err.code().as_u16(), 403);
        assert!(err.to_string().contains("cannot impersonate resource \"users\""), "{err}");
        let mut sa = HeaderMap::new();
        sa.insert(
            "impersonate-user",
            http::HeaderValue::from_static("system:serviceaccount:ns:bot"),
        );
        let bot = impersonate(&authz, unsecured(), &sa).expect("sa");
        assert!(bot.groups.contains(&"system:serviceaccounts:ns".to_owned()));
        assert_eq!("RBAC".parse::<Mode>(), Ok(Mode::Rbac));
        assert!("Node,RBAC".parse::<Mode>().is_err());
    }
}
