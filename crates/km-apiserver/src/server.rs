//! HTTP: the router, discovery documents, request parsing into
//! `(group, version, namespace, resource, name, subresource)` and the
//! dispatch of verbs to [`crate::api::Api`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use crate::api::{Api, DeleteOptions, Guard, Mutation, Query, Write, parse_query};
use crate::error::{ApiError, ApiResult};
use crate::metrics::RequestLabels;
use crate::protobuf;
use crate::rbac::Attributes;
use crate::registry::{self, KINDS, Kind};
use crate::secure::User;
use crate::storage::Storage;
use crate::table;

/// The version this server reports (the API level of its k8s-openapi types).
pub const VERSION: (&str, &str) = ("1", "37");

pub fn router<S: Storage>(api: Arc<Api<S>>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/metrics", get(metrics::<S>))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/openapi/v2", get(crate::openapi::serve))
        .route("/openapi/v3", get(crate::openapi::serve_v3_root))
        .route("/openapi/v3/{*path}", get(crate::openapi::serve_v3))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(pod_exec::<S>))
        .route("/api/{*rest}", any(resource::<S>))
        .route("/apis/{*rest}", any(resource::<S>))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(api.clone(), crate::authz::authorize::<S>))
        .with_state(api)
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn ok() -> &'static str {
    "ok"
}

async fn metrics<S: Storage>(State(api): State<Arc<Api<S>>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], api.metrics.encode())
        .into_response()
}

/// kube-apiserver's labels for a request to a resource path.
fn request_labels(
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> RequestLabels {
    // Only what the server serves becomes a label: a path made up by a client must not grow
    // the metrics without bound.
    let Some(t) = parse_path(path) else { return RequestLabels::default() };
    let served = t.resource.is_some_and(|r| {
        (t.group, t.version) == AUTHORIZATION && REVIEWS.iter().any(|(p, _)| *p == r)
            || registry::lookup(t.group, t.version, r)
                .is_some_and(|k| t.subresource.is_none_or(|sub| k.subresources.contains(&sub)))
    });
    if !served {
        return RequestLabels::default();
    }
    let watch = crate::api::flag(query, "watch");
    let verb = match (method.as_str(), t.name) {
        ("GET", None) if watch => "WATCH",
        ("GET", None) => "LIST",
        ("DELETE", None) => "DELETECOLLECTION",
        ("PATCH", _) if content_type(headers).starts_with("application/apply-patch") => "APPLY",
        (m, _) => m,
    };
    let scope = match (t.name, t.namespace) {
        (Some(_), _) => "resource",
        (None, Some(_)) => "namespace",
        (None, None) => "cluster",
    };
    RequestLabels {
        verb: verb.to_owned(),
        group: t.group.to_owned(),
        version: t.version.to_owned(),
        resource: t.resource.unwrap_or_default().to_owned(),
        subresource: t.subresource.unwrap_or_default().to_owned(),
        scope: scope.to_owned(),
    }
}

async fn not_found(uri: Uri) -> Response {
    ApiError::NotFound { group: String::new(), plural: String::new(), name: uri.path().to_owned() }
        .into_response()
}

async fn version() -> Response {
    let (major, minor) = VERSION;
    json_response(
        StatusCode::OK,
        &json!({
            "major": major,
            "minor": minor,
            "gitVersion": format!("v{major}.{minor}.0-km"),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "n/a (km is written in Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "" }],
        }),
    )
}

/// authorization.k8s.io/v1: the reviews a client asks of what it may do (`kubectl auth
/// can-i`). They are answered, never stored; every request is allowed (km apiserver has no
/// authorizer yet, as kube-apiserver's AlwaysAllow mode).
const AUTHORIZATION: (&str, &str) = ("authorization.k8s.io", "v1");
const REVIEWS: &[(&str, &str)] = &[
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
];

/// The served group-versions: the stored kinds' and authorization's.
fn all_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = registry::group_versions();
    gvs.push(AUTHORIZATION);
    gvs
}

/// Answers a SelfSubjectAccessReview (may the requesting user do this?) or a
/// SelfSubjectRulesReview (what may they do in a namespace?) from the authorizer.
fn review<S: Storage>(
    api: &Api<S>,
    user: &User,
    resource: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let Some((_, kind)) = REVIEWS.iter().find(|(plural, _)| *plural == resource) else {
        return Err(ApiError::NotFound {
            group: AUTHORIZATION.0.into(),
            plural: resource.into(),
            name: String::new(),
        });
    };
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let mut obj = decode_body(headers, body)?;
    if !obj.is_object() {
        return Err(ApiError::BadRequest(format!("a {kind} must be an object")));
    }
    obj["apiVersion"] = json!(format!("{}/{}", AUTHORIZATION.0, AUTHORIZATION.1));
    obj["kind"] = json!(kind);
    obj["status"] = if *kind == "SelfSubjectAccessReview" {
        let spec = &obj["spec"];
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let a = match spec.get("nonResourceAttributes") {
            Some(n) if !n.is_null() => {
                Attributes { verb: text(n, "verb"), path: text(n, "path"), ..Default::default() }
            }
            _ => {
                let r = &spec["resourceAttributes"];
                let mut a = Attributes::resource(
                    &text(r, "verb"),
                    &text(r, "group"),
                    &text(r, "resource"),
                    &text(r, "namespace"),
                    &text(r, "name"),
                );
                a.subresource = text(r, "subresource");
                a
            }
        };
        let allowed = api.authorizer.allows(user, &a);
        let mode = api.authorizer.mode();
        let reason = match (mode, allowed) {
            (crate::authz::Mode::AlwaysAllow, _) => {
                "km apiserver runs with --authorization-mode=AlwaysAllow".to_owned()
            }
            (_, true) => format!("allowed by the {mode:?} authorizer for user {:?}", user.name),
            (_, false) => String::new(),
        };
        json!({ "allowed": allowed, "reason": reason })
    } else {
        let namespace = obj["spec"]["namespace"].as_str().unwrap_or_default().to_owned();
        let rules = api.authorizer.rules_for(user, &namespace);
        let (urls, resources): (Vec<_>, Vec<_>) =
            rules.iter().partition(|r| !r.non_resource_urls.is_empty());
        let resource_rules: Vec<Value> = resources
            .iter()
            .map(|r| {
                json!({
                    "verbs": r.verbs,
                    "apiGroups": r.api_groups,
                    "resources": r.resources,
                    "resourceNames": r.resource_names,
                })
            })
            .collect();
        let url_rules: Vec<Value> = urls
            .iter()
            .map(|r| json!({ "verbs": r.verbs, "nonResourceURLs": r.non_resource_urls }))
            .collect();
        json!({ "resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false })
    };
    Ok(json_response(StatusCode::CREATED, &obj))
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = all_group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

async fn api_groups() -> Response {
    let mut groups: Vec<&str> =
        all_group_versions().into_iter().map(|(g, _)| g).filter(|g| !g.is_empty()).collect();
    groups.dedup();
    let groups: Vec<Value> = groups.into_iter().map(group_doc).collect();
    json_response(
        StatusCode::OK,
        &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }),
    )
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    if (group, version) == AUTHORIZATION {
        for (plural, kind) in REVIEWS {
            resources.push(json!({
                "name": plural, "singularName": "", "namespaced": false, "kind": kind,
                "verbs": ["create"],
            }));
        }
    }
    for kind in KINDS.iter().filter(|k| k.group == group && k.version == version) {
        resources.push(json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": kind.short_names,
            "categories": kind.categories,
        }));
        for sub in kind.subresources {
            let (sub_kind, verbs, group_version): (&str, Value, Option<(&str, &str)>) = match *sub {
                "binding" => ("Binding", json!(["create"]), None),
                "log" => ("Pod", json!(["get"]), None),
                "exec" => ("PodExecOptions", json!(["create", "get"]), None),
                "finalize" => ("Namespace", json!(["update"]), None),
                "token" => {
                    ("TokenRequest", json!(["create"]), Some(("authentication.k8s.io", "v1")))
                }
                "scale" => {
                    ("Scale", json!(["get", "patch", "update"]), Some(("autoscaling", "v1")))
                }
                _ => (kind.kind, json!(["get", "patch", "update"]), None),
            };
            let mut entry = json!({
                "name": format!("{}/{sub}", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": sub_kind,
                "verbs": verbs,
            });
            if let Some((g, v)) = group_version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let group_version =
        if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

/// A parsed resource path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub namespace: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
}

pub(crate) fn parse_path(path: &str) -> Option<Target<'_>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let mut t =
        Target { group, version, namespace: None, resource: None, name: None, subresource: None };
    match rest {
        [] => {}
        ["namespaces", ns, plural, more @ ..]
            if registry::lookup(group, version, plural).is_some() =>
        {
            t.namespace = Some(ns);
            t.resource = Some(plural);
            t.name = more.first().copied();
            t.subresource = more.get(1).copied();
            if more.len() > 2 {
                return None;
            }
        }
        [plural, more @ ..] => {
            t.resource = Some(plural);
            t.name = more.first().copied();
            t.subresource = more.get(1).copied();
            if more.len() > 2 {
                return None;
            }
        }
    }
    Some(t)
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    if protobuf::is_protobuf(content_type) {
        return protobuf::decode(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        });
    }
    if content_type.contains("protobuf") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    if content_type.contains("yaml") {
        return serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body of the request could not be decoded as YAML: {e}"
            ))
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("the body of the request could not be decoded as JSON: {e}"))
    })
}

/// Whether the client asks for protobuf before JSON.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(protobuf::preferred)
}

/// A JSON answer re-encoded in protobuf, for a client that prefers it. What has no protobuf
/// message (discovery, tables, a body that is not an object) stays JSON, which such clients
/// read as well.
async fn negotiated(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::Internal(format!("cannot read the answer: {e}")).into_response();
        }
    };
    let encoded =
        serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| protobuf::encode(&v).ok());
    match encoded {
        Some(proto) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(protobuf::MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(proto))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// `pods/exec`: an upgrade request, so it gets the whole request rather than a read body.
async fn pod_exec<S: Storage>(
    State(api): State<Arc<Api<S>>>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    if request.method() != Method::GET && request.method() != Method::POST {
        return method_not_allowed(request.method()).into_response();
    }
    let query = parse_query(request.uri().query());
    match api.pod_exec(&namespace, &name, &query, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn resource<S: Storage>(
    State(api): State<Arc<Api<S>>>,
    user: Option<Extension<User>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let query = parse_query(uri.query());
    let labels = request_labels(&method, uri.path(), &query, &headers);
    let user = user.map(|Extension(u)| u).unwrap_or_else(crate::authz::anonymous);
    let response = match handle(&api, &method, &uri, &headers, &body, &user).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    api.metrics.request(&labels, response.status().as_u16(), started);
    // A watch answers in protobuf itself; any other answer is converted whole.
    if labels.verb == "WATCH" {
        if !response.status().is_success() {
            return response;
        }
        // Counted as open until its stream is dropped (the client went, or it ended).
        let open = api.metrics.longrunning(labels);
        let (parts, body) = response.into_parts();
        let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _open = &open;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    if wants_protobuf(&headers) { negotiated(response).await } else { response }
}

async fn handle<S: Storage>(
    api: &Api<S>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    user: &User,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound {
        group: String::new(),
        plural: String::new(),
        name: uri.path().to_owned(),
    };
    let target = parse_path(uri.path()).ok_or_else(not_found)?;
    let query = parse_query(uri.query());
    let Some(resource) = target.resource else {
        if method != Method::GET {
            return Err(ApiError::MethodNotAllowed(format!("{method} is not supported here")));
        }
        if all_group_versions().contains(&(target.group, target.version)) {
            return Ok(json_response(StatusCode::OK, &resource_list(target.group, target.version)));
        }
        return Err(not_found());
    };
    if (target.group, target.version) == AUTHORIZATION && target.name.is_none() {
        return review(api, user, resource, method, headers, body);
    }
    let kind = registry::lookup(target.group, target.version, resource).ok_or_else(not_found)?;
    let guard = grant_guard(api, kind, user);
    let guard = guard.as_ref();
    if target.namespace.is_some() && !kind.namespaced {
        return Err(not_found());
    }
    let ns = if kind.namespaced { target.namespace } else { None };
    match (target.name, target.subresource) {
        (None, _) => collection(api, kind, ns, method, &query, headers, body, guard).await,
        (Some(name), None) => item(api, kind, ns, name, method, &query, headers, body, guard).await,
        (Some(name), Some(sub)) if kind.subresources.contains(&sub) => {
            subresource(api, kind, ns, name, sub, method, &query, headers, body, guard).await
        }
        (Some(_), Some(_)) => Err(not_found()),
    }
}

/// A TokenRequest for service account `name`: a signed token for it, for the audiences and
/// lifetime asked (at least 10 minutes, at most 48 hours, an hour by default).
async fn token_request<S: Storage>(
    api: &Api<S>,
    ns: &str,
    name: &str,
    mut request: Value,
) -> ApiResult<Value> {
    let Some(signer) = &api.config.service_accounts else {
        return Err(ApiError::Internal("this server signs no service account tokens".into()));
    };
    if !request.is_object() {
        return Err(ApiError::BadRequest("a TokenRequest must be an object".into()));
    }
    let kind = registry::by_kind("ServiceAccount")
        .ok_or_else(|| ApiError::Internal("ServiceAccount is not served".into()))?;
    let account = api.get(kind, Some(ns), name).await?;
    let spec = &request["spec"];
    let seconds = match &spec["expirationSeconds"] {
        Value::Null => crate::satoken::DEFAULT_EXPIRATION,
        v => match v.as_i64() {
            Some(s) if s >= crate::satoken::MIN_EXPIRATION => s.min(crate::satoken::MAX_EXPIRATION),
            other => {
                let why = if other.is_some() {
                    "may not specify a duration less than 10 minutes"
                } else {
                    "must be a whole number of seconds"
                };
                return Err(ApiError::invalid(
                    TOKEN_REQUEST_KIND,
                    name,
                    vec![crate::error::Cause::invalid("spec.expirationSeconds", v, why)],
                ));
            }
        },
    };
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let claims = crate::satoken::Claims {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: account["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
    };
    let now = crate::object::unix_now();
    let token = signer
        .issue(&claims, &audiences, now, seconds)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"]["name"] = json!(name);
    request["metadata"]["namespace"] = json!(ns);
    request["metadata"]["creationTimestamp"] = json!(crate::object::rfc3339(now));
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": crate::object::rfc3339(now.saturating_add(seconds)),
    });
    Ok(request)
}

/// What a TokenRequest's 422s name.
static TOKEN_REQUEST_KIND: &Kind = &Kind {
    group: "authentication.k8s.io",
    version: "v1",
    api_version: "authentication.k8s.io/v1",
    kind: "TokenRequest",
    list_kind: "TokenRequestList",
    plural: "tokenrequests",
    singular: "tokenrequest",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    categories: &[],
    decode: |_| Ok(()),
    schema: |_| String::new(),
};

/// The escalation check of writes to RBAC objects by `user` (RBAC mode only).
fn grant_guard<S: Storage>(api: &Api<S>, kind: &'static Kind, user: &User) -> Option<Guard> {
    let rbac = matches!(kind.kind, "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding");
    if !rbac || api.authorizer.mode() != crate::authz::Mode::Rbac {
        return None;
    }
    let (authz, user) = (Arc::clone(&api.authorizer), user.clone());
    Some(Guard(Arc::new(move |obj: &Value| authz.check_grant(&user, kind, obj))))
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "the server does not allow this method on the requested resource ({method})"
    ))
}

#[allow(clippy::too_many_arguments)]
async fn collection<S: Storage>(
    api: &Api<S>,
    kind: &'static Kind,
    ns: Option<&str>,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    guard: Option<&Guard>,
) -> ApiResult<Response> {
    match *method {
        Method::GET if crate::api::flag(query, "watch") => {
            let mut stream = api.watch(kind, ns, query).await?;
            if wants_table(headers) {
                let query = query.clone();
                stream = futures::StreamExt::boxed(futures::StreamExt::map(stream, move |line| {
                    table::watch_line(kind, &line, &query).unwrap_or(line)
                }));
            } else if wants_protobuf(headers) {
                // One length-prefixed WatchEvent per event line.
                let frames = futures::StreamExt::filter_map(stream, |line| async move {
                    match protobuf::watch_line_to_frame(&line) {
                        Ok(frame) => Some(Bytes::from(frame)),
                        Err(e) => {
                            tracing::warn!("a watch event has no protobuf form: {e}");
                            None
                        }
                    }
                });
                let body = Body::from_stream(futures::StreamExt::map(
                    frames,
                    Ok::<_, std::convert::Infallible>,
                ));
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, protobuf::WATCH_MEDIA_TYPE)],
                    body,
                )
                    .into_response());
            }
            let body = Body::from_stream(futures::StreamExt::map(
                stream,
                Ok::<_, std::convert::Infallible>,
            ));
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Method::GET => {
            let list = api.list_stored(kind, ns, query).await?;
            if wants_table(headers) {
                let list = list.into_value()?;
                return Ok(json_response(StatusCode::OK, &table::list_table(kind, &list, query)));
            }
            // Written from the stored texts, item by item.
            if wants_protobuf(headers) {
                let body = list.to_protobuf()?;
                return Ok((StatusCode::OK, [(header::CONTENT_TYPE, protobuf::MEDIA_TYPE)], body)
                    .into_response());
            }
            let body = list.to_json()?;
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Method::POST => {
            if ns.is_none() && kind.namespaced {
                return Err(method_not_allowed(method));
            }
            let write = write_of(query, headers, guard)?;
            let obj = api.create_as(kind, ns, decode_body(headers, body)?, &write).await?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        Method::DELETE => {
            let list = api.list(kind, ns, query).await?;
            let options =
                DeleteOptions::parse(query, &decode_body(headers, body).unwrap_or(Value::Null));
            let mut deleted = Vec::new();
            for obj in list["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                let obj_ns = obj["metadata"]["namespace"].as_str();
                match api.delete(kind, obj_ns, name, &options).await {
                    Ok(o) => deleted.push(o),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let out = json!({ "kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": list["metadata"], "items": deleted });
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => Err(method_not_allowed(method)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn item<S: Storage>(
    api: &Api<S>,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    guard: Option<&Guard>,
) -> ApiResult<Response> {
    match *method {
        Method::GET => {
            let obj = api.get(kind, ns, name).await?;
            if wants_table(headers) {
                let list = json!({ "metadata": { "resourceVersion": obj["metadata"]["resourceVersion"] }, "items": [obj] });
                return Ok(json_response(StatusCode::OK, &table::list_table(kind, &list, query)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        Method::PUT => {
            let write = write_of(query, headers, guard)?;
            let replace = Mutation::Replace(decode_body(headers, body)?);
            let obj = api.update_as(kind, ns, name, None, replace, &write).await?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        Method::PATCH => {
            let (obj, code) = patch(api, kind, ns, name, None, query, headers, body, guard).await?;
            Ok(json_response(code, &obj))
        }
        Method::DELETE => {
            let options_body =
                if body.is_empty() { Value::Null } else { decode_body(headers, body)? };
            let options = DeleteOptions::parse(query, &options_body);
            let obj = api.delete(kind, ns, name, &options).await?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        _ => Err(method_not_allowed(method)),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The field manager and dry-run mode a write request asks for.
fn write_of(query: &Query, headers: &HeaderMap, guard: Option<&Guard>) -> ApiResult<Write> {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let manager =
        crate::managed::manager_name(query.get("fieldManager").map(String::as_str), agent)
            .map_err(ApiError::BadRequest)?;
    Ok(Write {
        manager: Some(manager),
        dry_run: crate::api::dry_run(query)?,
        guard: guard.cloned(),
    })
}

/// A PATCH: the patched object and its status code (201 when an apply created it).
#[allow(clippy::too_many_arguments)]
async fn patch<S: Storage>(
    api: &Api<S>,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    subresource: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    guard: Option<&Guard>,
) -> ApiResult<(Value, StatusCode)> {
    let ct = content_type(headers).to_owned();
    if ct.is_empty() {
        return Err(ApiError::UnsupportedMediaType("a PATCH needs a Content-Type".into()));
    }
    let write = write_of(query, headers, guard)?;
    let force = match query.get("force") {
        None => None,
        Some(v) => match crate::api::parse_bool(v) {
            Some(b) => Some(b),
            None => return Err(ApiError::BadRequest(format!("force: invalid value {v:?}"))),
        },
    };
    if ct.starts_with(crate::patch::APPLY_PATCH) {
        let config: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid apply patch: {e}")))?;
        if write.manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::BadRequest(
                "fieldManager: Required value: is required for apply patch".into(),
            ));
        }
        let force = force.unwrap_or(false);
        let (obj, created) = api.apply(kind, ns, name, subresource, config, force, &write).await?;
        let code = if created { StatusCode::CREATED } else { StatusCode::OK };
        return Ok((obj, code));
    }
    if force.is_some() {
        return Err(ApiError::BadRequest(
            "force: Invalid value: may not be specified for non-apply patch".into(),
        ));
    }
    let patch: Value = if ct.contains("yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid YAML patch: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch body: {e}")))?
    };
    let mutation = Mutation::Patch { content_type: &ct, patch };
    Ok((api.update_as(kind, ns, name, subresource, mutation, &write).await?, StatusCode::OK))
}

#[allow(clippy::too_many_arguments)]
async fn subresource<S: Storage>(
    api: &Api<S>,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    guard: Option<&Guard>,
) -> ApiResult<Response> {
    match (sub, method.clone()) {
        ("log", Method::GET) => {
            let upstream = api.pod_log(ns.unwrap_or("default"), name, query).await?;
            let body = Body::from_stream(upstream.bytes_stream());
            Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
        }
        ("binding", Method::POST) => {
            let ns = ns.unwrap_or("default");
            let status = api.bind(ns, name, &decode_body(headers, body)?).await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        ("finalize", Method::PUT) if kind.is("Namespace") => {
            let write = write_of(query, headers, guard)?;
            let replace = Mutation::Replace(decode_body(headers, body)?);
            let obj = api.update_as(kind, None, name, Some("finalize"), replace, &write).await?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        ("token", Method::POST) if kind.is("ServiceAccount") => {
            let ns = ns.unwrap_or("default");
            let request = decode_body(headers, body)?;
            Ok(json_response(StatusCode::CREATED, &token_request(api, ns, name, request).await?))
        }
        ("status", Method::GET) => {
            Ok(json_response(StatusCode::OK, &api.get(kind, ns, name).await?))
        }
        ("status", Method::PUT) => {
            let write = write_of(query, headers, guard)?;
            let replace = Mutation::Replace(decode_body(headers, body)?);
            let obj = api.update_as(kind, ns, name, Some("status"), replace, &write).await?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        ("status", Method::PATCH) => {
            let (obj, code) =
                patch(api, kind, ns, name, Some("status"), query, headers, body, guard).await?;
            Ok(json_response(code, &obj))
        }
        ("scale", Method::GET) => {
            Ok(json_response(StatusCode::OK, &api.get_scale(kind, ns, name).await?))
        }
        ("scale", Method::PUT) => {
            let write = write_of(query, headers, guard)?;
            let body = decode_body(headers, body)?;
            let scale = api.update_scale(kind, ns, name, None, body, &write).await?;
            Ok(json_response(StatusCode::OK, &scale))
        }
        ("scale", Method::PATCH) => {
            let ct = content_type(headers).to_owned();
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch body: {e}")))?;
            let write = write_of(query, headers, guard)?;
            let scale = api.update_scale(kind, ns, name, Some(&ct), patch, &write).await?;
            Ok(json_response(StatusCode::OK, &scale))
        }
        _ => Err(method_not_allowed(method)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/default/pods/p/status").expect("path");
        assert_eq!(
            (t.namespace, t.resource, t.name, t.subresource),
            (Some("default"), Some("pods"), Some("p"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/default").expect("path");
        assert_eq!((t.namespace, t.resource, t.name), (None, Some("namespaces"), Some("default")));
        let t = parse_path("/api/v1/namespaces/x/status").expect("path");
        assert_eq!(
            (t.resource, t.name, t.subresource),
            (Some("namespaces"), Some("x"), Some("status"))
        );
        let t = parse_path("/apis/apps/v1/deployments").expect("path");
        assert_eq!((t.group, t.namespace, t.resource), ("apps", None, Some("deployments")));
        let t = parse_path("/apis/apps/v1").expect("path");
        assert_eq!(t.resource, None);
        assert!(parse_path("/api/v1/pods/a/b/c").is_none());
    }

    #[test]
    fn discovery_lists_subresources() {
        let core = resource_list("", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for want in [
            "pods",
            "pods/status",
            "pods/binding",
            "nodes/status",
            "replicationcontrollers/scale",
            "namespaces",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let apps = resource_list("apps", "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let authz = resource_list("authorization.k8s.io", "v1");
        assert_eq!(authz["resources"][0]["name"], "selfsubjectaccessreviews");
        assert_eq!(authz["resources"][0]["verbs"], json!(["create"]));
    }

    #[test]
    fn metric_labels_name_only_what_is_served() {
        let h = HeaderMap::new();
        let q = Query::new();
        let l =
            request_labels(&Method::GET, "/apis/apps/v1/namespaces/x/deployments/d/scale", &q, &h);
        assert_eq!(
            (l.verb.as_str(), l.resource.as_str(), l.subresource.as_str()),
            ("GET", "deployments", "scale")
        );
        let l = request_labels(&Method::GET, "/api/v1/pods", &q, &h);
        assert_eq!((l.verb.as_str(), l.scope.as_str()), ("LIST", "cluster"));
        for made_up in ["/apis/x/y/zs", "/api/v1/pods/p/nothing", "/api/v1/random-123"] {
            assert_eq!(
                request_labels(&Method::GET, made_up, &q, &h),
                RequestLabels::default(),
                "{made_up}"
            );
        }
    }

    #[tokio::test]
    async fn access_reviews_answer_from_the_authorizer() {
        use crate::api::ApiConfig;
        use crate::storage::MemoryStorage;
        let config = ApiConfig { authorization: crate::authz::Mode::Rbac, ..Default::default() };
        let api = Api::new(Arc::new(MemoryStorage::default()), config);
        api.bootstrap().await.expect("bootstrap");
        api.authorizer.start_feed(Arc::clone(&api.storage)).await.expect("policy");
        let headers = HeaderMap::new();
        let ask = |verb: &str, resource: &str| {
            Bytes::from(
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                       "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": "default"}}})
                .to_string(),
            )
        };
        let allowed = |answer: Response| async move {
            assert_eq!(answer.status(), StatusCode::CREATED);
            let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.expect("body");
            serde_json::from_slice::<Value>(&body).expect("json")["status"]["allowed"].clone()
        };
        let jane = User {
            name: "jane".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        };
        let r = review(
            &api,
            &jane,
            "selfsubjectaccessreviews",
            &Method::POST,
            &headers,
            &ask("create", "pods"),
        );
        assert_eq!(allowed(r.expect("review")).await, json!(false));
        let admin = crate::authz::unsecured();
        let r = review(
            &api,
            &admin,
            "selfsubjectaccessreviews",
            &Method::POST,
            &headers,
            &ask("create", "pods"),
        );
        assert_eq!(allowed(r.expect("review")).await, json!(true));
        let rules = Bytes::from_static(
            br#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"default"}}"#,
        );
        let r = review(&api, &jane, "selfsubjectrulesreviews", &Method::POST, &headers, &rules)
            .expect("rules");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        let urls = v["status"]["nonResourceRules"].to_string();
        assert!(
            urls.contains("/healthz") && urls.contains("/apis/*"),
            "discovery for the authenticated: {urls}"
        );
        assert!(
            review(&api, &jane, "selfsubjectaccessreviews", &Method::GET, &headers, &rules)
                .is_err()
        );
        assert!(review(&api, &jane, "tokenreviews", &Method::POST, &headers, &rules).is_err());
    }
}
