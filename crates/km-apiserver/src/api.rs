//! The REST verbs on stored objects: create, get, list, watch, update,
//! patch, delete, and the `status`, `binding` and `scale` subresources.
//! Writes are read-modify-write loops over the store's compare-and-swap,
//! so concurrent writers never queue behind a lock of ours.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::alloc::Ranges;
use crate::error::{ApiError, ApiResult, Cause};
use crate::managed::{self, Writer};
use crate::metrics::Metrics;
use crate::nodeproxy::NodeProxy;
use crate::object::{self, child, name_of, unix_now, with_revision};
use crate::patch;
use crate::registry::{self, Kind};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{Storage, StorageError};
use crate::watch::{WatchRequest, Watches};

/// Server behaviour knobs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How often watchers that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Service ClusterIP and NodePort ranges.
    pub ranges: Ranges,
    /// How `pods/log` reaches the nodes.
    pub nodes: NodeProxy,
    /// Whether pod specs may ask for privileged containers.
    pub allow_privileged: bool,
    /// `--authorization-mode`.
    pub authorization: crate::authz::Mode,
    /// Signs and checks ServiceAccount tokens (none: TokenRequests are refused).
    pub service_accounts: Option<Arc<crate::satoken::Signer>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bookmark_interval: Duration::from_secs(10),
            ranges: Ranges::default(),
            nodes: NodeProxy::default(),
            allow_privileged: false,
            authorization: crate::authz::Mode::AlwaysAllow,
            service_accounts: None,
        }
    }
}

/// Shared state of all handlers.
pub struct Api<S> {
    pub storage: Arc<S>,
    pub watches: Watches<S>,
    pub config: ApiConfig,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// Who may do what.
    pub authorizer: Arc<crate::authz::Authorizer>,
}

/// `namespaces` that always exist and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Query parameters, last value wins.
pub type Query = HashMap<String, String>;

/// Who asks for a write, and how.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// The field manager the write is recorded for in `metadata.managedFields` (none: the
    /// server's own bookkeeping, not recorded).
    pub manager: Option<String>,
    /// `dryRun=All`: everything a write does but storing it.
    pub dry_run: bool,
    /// A last check of the object to store (the RBAC escalation check).
    pub guard: Option<Guard>,
}

/// A check of the object a write would store.
pub type Check = dyn Fn(&Value) -> ApiResult<()> + Send + Sync;

/// A [`Check`] carried by a [`Write`].
#[derive(Clone)]
pub struct Guard(pub Arc<Check>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Write {
    /// The manager's entry, for a write through `subresource`.
    fn writer(&self, subresource: Option<&str>) -> Option<Writer> {
        let manager = self.manager.clone()?;
        Some(Writer { manager, subresource: subresource.unwrap_or_default().to_owned() })
    }
}

/// `dryRun` of a request: absent, or `All` (the only value Kubernetes knows).
pub fn dry_run(query: &Query) -> ApiResult<bool> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Invalid dry run value: {other:?}: supported values: \"All\""
        ))),
    }
}

pub fn parse_query(raw: Option<&str>) -> Query {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (`1`, `t`, `T`, `TRUE`,
/// `true`, `True`; the false forms alike); `None` when absent or not a boolean.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the boolean query parameter `key` is set true.
pub fn flag(query: &Query, key: &str) -> bool {
    query.get(key).and_then(|v| parse_bool(v)) == Some(true)
}

/// How a list or watch chooses its starting point (`resourceVersion`, `resourceVersionMatch`,
/// `sendInitialEvents`), checked as Kubernetes checks ListOptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The current state ("", or "0": any recent state will do).
    Latest,
    /// At least as new as this revision.
    NotOlderThan(i64),
    /// Exactly this revision (lists only).
    Exact(i64),
}

/// A list's or watch's start, and for a watch whether it first sends the current state
/// (as ADDED events, then a bookmark that marks their end when asked with
/// `sendInitialEvents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    pub start: Start,
    /// Watch: send the state at the start as ADDED events first.
    pub initial_events: bool,
    /// Watch: mark the end of the initial events with a bookmark (`sendInitialEvents=true`).
    pub initial_events_end: bool,
}

fn list_options_invalid(causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        group: "meta.k8s.io".into(),
        kind: "ListOptions".into(),
        name: String::new(),
        causes,
    }
}

/// Reads and checks the start of a list (`watch` false) or a watch.
pub fn list_options(kind: &Kind, query: &Query, watch: bool) -> ApiResult<ListOptions> {
    let rv = query.get("resourceVersion").map(String::as_str).unwrap_or_default();
    let matching = query.get("resourceVersionMatch").map(String::as_str).unwrap_or_default();
    let send = query.get("sendInitialEvents").map(|v| parse_bool(v) == Some(true));
    let paging = query.get("continue").is_some_and(|c| !c.is_empty());
    let mut causes = Vec::new();
    if send.is_some() && !watch {
        causes
            .push(Cause::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    if !matching.is_empty() {
        if watch && send.is_none() {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if !matches!(matching, "Exact" | "NotOlderThan") {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "resourceVersionMatch".into(),
                message: format!(
                    "Unsupported value: {matching:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            });
        }
        if rv.is_empty() && !(watch && send.is_some()) {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if matching == "Exact" && rv == "0" {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        if paging {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if send == Some(true) {
        if matching != "NotOlderThan" {
            causes.push(Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !flag(query, "allowWatchBookmarks") {
            causes.push(Cause::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks requires setting sendInitialEvents to true",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(list_options_invalid(causes));
    }
    let start = match (rv, matching) {
        ("" | "0", _) => Start::Latest,
        (rv, "Exact") => Start::Exact(parse_rv(kind, rv)?),
        (rv, _) => Start::NotOlderThan(parse_rv(kind, rv)?),
    };
    // Without sendInitialEvents, a watch from "" or "0" starts with the current state, one
    // from a revision does not; with it, the client says.
    let initial_events = match send {
        Some(send) => send,
        None => watch && start == Start::Latest,
    };
    Ok(ListOptions { start, initial_events, initial_events_end: send == Some(true) })
}

fn parse_rv(kind: &Kind, rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        ApiError::invalid(
            kind,
            "",
            vec![Cause::invalid(
                "resourceVersion",
                &json!(rv),
                "must be a decimal integer, 0 or more",
            )],
        )
    })
}

fn decode(bytes: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("stored object does not decode: {e}")))
}

fn encode(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty())
}

/// Continue tokens: the revision of the first page and the next key.
fn encode_continue(revision: i64, next_key: &str) -> String {
    let raw = json!({ "rv": revision, "start": next_key }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(prefix: &str, token: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = value["rv"].as_i64().ok_or_else(bad)?;
    let start = value["start"].as_str().ok_or_else(bad)?;
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((rv, start.to_owned()))
}

/// What a DELETE asked for.
#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
    /// `dryRun=All` (query or body): checked, not done.
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(query: &Query, body: &Value) -> DeleteOptions {
        let grace = body["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        DeleteOptions {
            grace_period: grace,
            uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
            resource_version: body["preconditions"]["resourceVersion"].as_str().map(str::to_owned),
            propagation: body["propagationPolicy"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| query.get("propagationPolicy").cloned())
                .or_else(|| {
                    // The older form of `propagationPolicy: Orphan`.
                    let orphan = body["orphanDependents"].as_bool().or_else(|| {
                        query.get("orphanDependents").map(|v| parse_bool(v) == Some(true))
                    });
                    orphan.map(|o| if o { "Orphan" } else { "Background" }.to_owned())
                }),
            dry_run: query.get("dryRun").is_some_and(|v| v == "All")
                || body["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All")),
        }
    }

    /// The finalizer that makes the garbage collector handle the dependents first
    /// (`foregroundDeletion`, `orphan`); an unknown policy is a 400.
    pub fn finalizer(&self) -> ApiResult<Option<&'static str>> {
        match self.propagation.as_deref() {
            None | Some("Background") => Ok(None),
            Some("Foreground") => Ok(Some("foregroundDeletion")),
            Some("Orphan") => Ok(Some("orphan")),
            Some(other) => Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
            ))),
        }
    }
}

/// A list answer: its metadata and each item as stored (JSON text) with its revision.
pub struct StoredList {
    pub kind: &'static Kind,
    pub metadata: Value,
    pub items: Vec<(Bytes, i64)>,
}

impl StoredList {
    /// The list as a value.
    pub fn into_value(self) -> ApiResult<Value> {
        let items = self
            .items
            .iter()
            .map(|(bytes, rev)| decode(bytes).map(|o| with_revision(o, *rev)))
            .collect::<ApiResult<Vec<Value>>>()?;
        Ok(json!({
            "kind": self.kind.list_kind,
            "apiVersion": self.kind.api_version,
            "metadata": self.metadata,
            "items": items,
        }))
    }

    /// The list in Kubernetes' protobuf encoding, item by item (each stored text parsed and
    /// encoded in turn).
    pub fn to_protobuf(&self) -> ApiResult<Vec<u8>> {
        let items =
            self.items.iter().map(|(bytes, rev)| decode(bytes).map(|o| with_revision(o, *rev)));
        crate::protobuf::encode_list(
            self.kind.api_version,
            self.kind.list_kind,
            &self.metadata,
            items,
        )?
        .map_err(|e| ApiError::Internal(format!("encoding the list in protobuf: {e}")))
    }

    /// The list as JSON text, each item's stored text with its resourceVersion put in (no
    /// value of the whole list is built: a list of many objects costs little more memory than
    /// its answer).
    pub fn to_json(&self) -> ApiResult<Vec<u8>> {
        let size: usize = self.items.iter().map(|(b, _)| b.len() + 32).sum();
        let mut out = Vec::with_capacity(size + 256);
        let head = json!({ "kind": self.kind.list_kind, "apiVersion": self.kind.api_version, "metadata": self.metadata });
        let head = serde_json::to_vec(&head).map_err(|e| ApiError::Internal(e.to_string()))?;
        // `{"apiVersion":…,"kind":…,"metadata":{…}` then `,"items":[…]}`.
        out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
        out.extend_from_slice(b",\"items\":[");
        for (i, (bytes, rev)) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match object::with_revision_bytes(bytes, *rev) {
                Some(item) => out.extend_from_slice(&item),
                None => {
                    let obj = with_revision(decode(bytes)?, *rev);
                    let text =
                        serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(e.to_string()))?;
                    out.extend_from_slice(&text);
                }
            }
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

/// How an update's new object is derived from the current one.
pub enum Mutation<'a> {
    /// PUT: the request body.
    Replace(Value),
    /// PATCH with this content type.
    Patch { content_type: &'a str, patch: Value },
    /// Server-side apply of this configuration (`force`: take conflicting fields over).
    Apply { config: Value, force: bool },
    /// Any change computed from the current object (binding, scale, delete).
    With(Box<dyn FnMut(Value) -> ApiResult<Value> + Send + 'a>),
}

impl<S: Storage> Api<S> {
    pub fn new(storage: Arc<S>, config: ApiConfig) -> Api<S> {
        Api::with_metrics(storage, config, Arc::new(Metrics::new()))
    }

    /// [`Api::new`] that counts into `metrics` (which may also time the store).
    pub fn with_metrics(storage: Arc<S>, config: ApiConfig, metrics: Arc<Metrics>) -> Api<S> {
        let authorizer = Arc::new(crate::authz::Authorizer::new(config.authorization));
        Api { watches: Watches::new(storage.clone()), storage, config, metrics, authorizer }
    }

    /// Creates the namespaces that always exist and the bootstrap RBAC roles and bindings
    /// (those that are absent: an operator's changes to them stay).
    pub async fn bootstrap(&self) -> ApiResult<()> {
        let kind = ns_kind();
        for name in SYSTEM_NAMESPACES {
            let obj =
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
            match self.create(kind, None, obj).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for (kind, obj) in crate::authz::bootstrap_objects() {
            match self.create(kind, None, obj).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A create by the server itself (not recorded in managedFields).
    pub async fn create(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        obj: Value,
    ) -> ApiResult<Value> {
        self.create_as(kind, namespace, obj, &Write::default()).await
    }

    pub async fn create_as(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        obj: Value,
        write: &Write,
    ) -> ApiResult<Value> {
        let writer = write.writer(None);
        let guard = write.guard.as_ref();
        let created =
            self.create_object(kind, namespace, obj, writer.as_ref(), write.dry_run, guard).await?;
        if kind.is("Namespace") && !write.dry_run {
            self.create_default_service_account(name_of(&created)).await;
        }
        Ok(created)
    }

    /// Creates `obj`, recorded for `writer` (none: its `managedFields`, if any, are kept as
    /// they are, which is how an apply that creates hands over its managers).
    async fn create_object(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        mut obj: Value,
        writer: Option<&Writer>,
        dry_run: bool,
        guard: Option<&Guard>,
    ) -> ApiResult<Value> {
        object::check_type(kind, &obj)?;
        let requested = obj["metadata"].get("managedFields").cloned();
        let now = unix_now();
        object::prepare_create(kind, &mut obj, namespace, now)?;
        object::apply_defaults(kind, &mut obj);
        object::drop_nulls(&mut obj);
        managed::track_update(kind, writer, None, &mut obj, requested.as_ref(), now)?;
        object::validate(kind, &obj)?;
        if !self.config.allow_privileged {
            object::forbid_privileged(kind, &obj)?;
        }
        if let Some(Guard(check)) = guard {
            check(&obj)?;
        }
        let name = name_of(&obj).to_owned();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        let key = kind.key(ns.as_deref(), &name);
        let parent = ns.as_deref().map(|ns| ns_kind().key(None, ns));
        // Nothing new in a namespace being deleted (as far as the watch cache tells).
        if let (Some(ns), Some(parent)) = (ns.as_deref(), parent.as_deref())
            && let Some(kv) = self.watches.cached(ns_kind(), parent)
            && decode(&kv.value).is_ok_and(|n| !n["metadata"]["deletionTimestamp"].is_null())
        {
            return Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                kind.plural
            )));
        }
        if dry_run {
            return Ok(obj);
        }
        let claimed = if kind.is("Service") {
            self.config.ranges.allocate(&*self.storage, kind, &mut obj, None).await?
        } else {
            Default::default()
        };
        match self.storage.create(&key, encode(&obj), parent.as_deref()).await {
            Ok(rev) => Ok(with_revision(obj, rev)),
            Err(e) => {
                self.config.ranges.release(&*self.storage, &claimed).await;
                Err(ApiError::storage(kind, &name, e))
            }
        }
    }

    async fn create_default_service_account(&self, namespace: &str) {
        let Some(sa) = registry::by_kind("ServiceAccount") else { return };
        let obj = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "default" } });
        if let Err(e) = self.create_object(sa, Some(namespace), obj, None, false, None).await
            && !matches!(e, ApiError::AlreadyExists { .. })
        {
            tracing::warn!("default service account in {namespace}: {e}");
        }
    }

    pub async fn get(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let kv = self
            .storage
            .get(&kind.key(namespace, name))
            .await
            .map_err(|e| ApiError::storage(kind, name, e))?
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        Ok(with_revision(decode(&kv.value)?, kv.mod_revision))
    }

    /// A pod and the node it is bound to (when that node exists).
    async fn pod_and_node(&self, namespace: &str, name: &str) -> ApiResult<(Value, Option<Value>)> {
        let pod = self.get(pod_kind(), Some(namespace), name).await?;
        let node = match pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            Some(node) => match self.get(node_kind(), None, node).await {
                Ok(n) => Some(n),
                Err(ApiError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        Ok((pod, node))
    }

    /// `pods/log`: the container's log, streamed from the pod's node.
    pub async fn pod_log(
        &self,
        namespace: &str,
        name: &str,
        query: &Query,
    ) -> ApiResult<reqwest::Response> {
        let (pod, node) = self.pod_and_node(namespace, name).await?;
        self.config.nodes.pod_log(&pod, node.as_ref(), query).await
    }

    /// `pods/exec`: the upgraded connection, handed through to the pod's node.
    pub async fn pod_exec(
        &self,
        namespace: &str,
        name: &str,
        query: &Query,
        request: axum::extract::Request,
    ) -> ApiResult<axum::response::Response> {
        let (pod, node) = self.pod_and_node(namespace, name).await?;
        self.config.nodes.pod_exec(&pod, node.as_ref(), query, request).await
    }

    /// A list as a value (tables, protobuf, the server's own reads).
    pub async fn list(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        query: &Query,
    ) -> ApiResult<Value> {
        self.list_stored(kind, namespace, query).await?.into_value()
    }

    /// A list with its items as stored: answered as JSON text without building values.
    pub async fn list_stored(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        query: &Query,
    ) -> ApiResult<StoredList> {
        let labels = LabelSelector::parse(
            query.get("labelSelector").map(String::as_str).unwrap_or_default(),
        )?;
        let fields = FieldSelector::parse(
            kind,
            query.get("fieldSelector").map(String::as_str).unwrap_or_default(),
        )?;
        let limit = query.get("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(0).max(0);
        let prefix = kind.prefix(namespace);
        let options = list_options(kind, query, false)?;
        let (revision, start) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, start) = decode_continue(&prefix, token)?;
                (rv, Some(start))
            }
            None => match options.start {
                Start::Exact(rv) => (rv, None),
                Start::NotOlderThan(rv) => {
                    let current = self
                        .storage
                        .current_revision()
                        .await
                        .map_err(|e| ApiError::storage(kind, "", e))?;
                    if rv > current {
                        return Err(ApiError::Timeout(format!(
                            "Too large resource version: {rv}, current: {current}"
                        )));
                    }
                    (0, None)
                }
                Start::Latest => (0, None),
            },
        };
        let page = match self.storage.list(&prefix, start.as_deref(), revision, limit).await {
            Ok(page) => page,
            Err(StorageError::Compacted(_)) if start.is_some() => return Err(ApiError::Gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            )),
            Err(StorageError::Compacted(_)) => {
                let current = self.storage.current_revision().await.unwrap_or(revision);
                return Err(ApiError::gone_at(revision, current));
            }
            Err(e) => return Err(ApiError::storage(kind, "", e)),
        };
        let revision = if revision > 0 { revision } else { page.revision };
        let filtering = !labels.is_empty() || !fields.is_empty();
        let mut metadata = json!({ "resourceVersion": revision.to_string() });
        if page.more
            && let Some(last) = page.items.last()
        {
            metadata["continue"] = json!(encode_continue(revision, &format!("{}\0", last.key)));
            if !filtering {
                metadata["remainingItemCount"] = json!(page.count - page.items.len() as i64);
            }
        }
        let mut items = Vec::with_capacity(page.items.len());
        for kv in page.items {
            if filtering {
                let obj = with_revision(decode(&kv.value)?, kv.mod_revision);
                if !(labels.matches(&obj) && fields.matches(&obj)) {
                    continue;
                }
            }
            items.push((kv.value, kv.mod_revision));
        }
        Ok(StoredList { kind, metadata, items })
    }

    pub async fn watch(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        query: &Query,
    ) -> ApiResult<futures::stream::BoxStream<'static, Bytes>> {
        let labels = LabelSelector::parse(
            query.get("labelSelector").map(String::as_str).unwrap_or_default(),
        )?;
        let fields = FieldSelector::parse(
            kind,
            query.get("fieldSelector").map(String::as_str).unwrap_or_default(),
        )?;
        let options = list_options(kind, query, true)?;
        let (from, initial) = if options.initial_events {
            // The current state as ADDED events first (not older than the revision asked).
            let list = self.list(kind, namespace, &strip_list_options(query)).await?;
            let from = list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            if let Start::NotOlderThan(rv) = options.start
                && rv > from
            {
                return Err(ApiError::Timeout(format!(
                    "Too large resource version: {rv}, current: {from}"
                )));
            }
            let items = list["items"].as_array().cloned().unwrap_or_default();
            (from, items)
        } else {
            match options.start {
                Start::NotOlderThan(rv) | Start::Exact(rv) => (rv, Vec::new()),
                Start::Latest => {
                    let current = self
                        .storage
                        .current_revision()
                        .await
                        .map_err(|e| ApiError::storage(kind, "", e))?;
                    (current, Vec::new())
                }
            }
        };
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let bookmark_interval =
            flag(query, "allowWatchBookmarks").then_some(self.config.bookmark_interval);
        let req = WatchRequest {
            kind,
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
            from,
            initial,
            initial_events_end: options.initial_events_end,
            bookmark_interval,
            timeout,
        };
        self.watches.watch(req).await
    }

    /// An update by the server itself (not recorded in managedFields).
    pub async fn update(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mutation: Mutation<'_>,
    ) -> ApiResult<Value> {
        self.update_as(kind, namespace, name, subresource, mutation, &Write::default()).await
    }

    /// Server-side apply: the object as applied, and whether the apply created it.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        config: Value,
        force: bool,
        write: &Write,
    ) -> ApiResult<(Value, bool)> {
        let Some(writer) = write.writer(subresource) else {
            return Err(ApiError::BadRequest(
                "PATCH with an apply patch requires a fieldManager".into(),
            ));
        };
        if !config.is_object() {
            return Err(ApiError::BadRequest("an apply patch must be an object".into()));
        }
        for (field, want) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
            match config.get(field).and_then(Value::as_str) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(ApiError::BadRequest(format!(
                        "{field} of the apply patch ({v}) is not {want}, the {field} of {}",
                        kind.plural
                    )));
                }
                None => {
                    return Err(ApiError::BadRequest(format!(
                        "an apply patch must name its {field} ({want})"
                    )));
                }
            }
        }
        let mutation = Mutation::Apply { config: config.clone(), force };
        match self.update_as(kind, namespace, name, subresource, mutation, write).await {
            Ok(obj) => Ok((obj, false)),
            Err(ApiError::NotFound { .. }) if subresource.is_none() => {
                if config["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return Err(ApiError::BadRequest(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        config["metadata"]["name"].as_str().unwrap_or_default()
                    )));
                }
                let mut obj = managed::apply(kind, &writer, None, &config, force, unix_now())?;
                child(&mut obj, "metadata")["name"] = json!(name);
                let guard = write.guard.as_ref();
                let created =
                    self.create_object(kind, namespace, obj, None, write.dry_run, guard).await?;
                Ok((created, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Read-modify-write of one object until the store accepts it, recorded for `write`'s
    /// manager.
    pub async fn update_as(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mut mutation: Mutation<'_>,
        write: &Write,
    ) -> ApiResult<Value> {
        let writer = match subresource {
            // A binding is the scheduler's, a finalize the namespace controller's: both are
            // the server's bookkeeping, not recorded.
            Some("binding" | "finalize") => None,
            _ => write.writer(subresource),
        };
        let key = kind.key(namespace, name);
        // The first read comes from the watch cache when one runs; after a
        // lost compare-and-swap the store hands back the winner's value.
        // Either way no extra read. A cached value may be stale: anything
        // decided from it other than a successful write (an error, a no-op)
        // is decided again from an authoritative read.
        let mut known: Option<crate::storage::Kv> = self.watches.cached(kind, &key);
        let mut cached = known.is_some();
        loop {
            let kv = match known.take() {
                Some(kv) => kv,
                None => {
                    cached = false;
                    self.storage
                        .get_for_update(&key)
                        .await
                        .map_err(|e| ApiError::storage(kind, name, e))?
                        .ok_or_else(|| ApiError::not_found(kind, name))?
                }
            };
            let (stored, current, mut new) = match plan_update(
                kind,
                name,
                subresource,
                &mut mutation,
                &kv,
                self.config.allow_privileged,
                writer.as_ref(),
            ) {
                Ok(planned) => planned,
                Err(_) if cached => continue,
                Err(e) => return Err(e),
            };
            if let Some(Guard(check)) = &write.guard
                && let Err(e) = check(&new)
            {
                if cached {
                    continue;
                }
                return Err(e);
            }
            let claimed = if kind.is("Service") && subresource.is_none() {
                self.config.ranges.allocate(&*self.storage, kind, &mut new, Some(&stored)).await?
            } else {
                Default::default()
            };
            // The last finalizer of an object being deleted is gone: delete it.
            let finalizers_done = |o: &Value| finalizers_done(kind, o);
            if !new["metadata"]["deletionTimestamp"].is_null()
                && finalizers_done(&new)
                && !finalizers_done(&stored)
            {
                return match self.storage.delete(&key, Some(kv.mod_revision)).await {
                    Ok((rev, _)) => Ok(with_revision(new, rev)),
                    // Someone wrote first: plan again from the new value (a
                    // stale resourceVersion in the request then fails there).
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => Err(ApiError::storage(kind, name, e)),
                };
            }
            let bytes = encode(&new);
            if bytes == kv.value {
                if cached {
                    continue;
                }
                return Ok(current);
            }
            if write.dry_run {
                self.config.ranges.release(&*self.storage, &claimed).await;
                return Ok(with_revision(new, kv.mod_revision));
            }
            let result = self.storage.update(&key, bytes, kv.mod_revision).await;
            if result.is_err() {
                self.config.ranges.release(&*self.storage, &claimed).await;
            } else if kind.is("Service") {
                self.config
                    .ranges
                    .release(&*self.storage, &Ranges::held(&stored, Some(&new)))
                    .await;
            }
            match result {
                Ok(rev) => return Ok(with_revision(new, rev)),
                // Someone wrote first: plan again from the winner's value. A
                // request that named a resourceVersion then fails as stale in
                // `plan_update`; one that did not lands on top.
                Err(StorageError::Conflict { current, .. }) => {
                    known = current;
                    cached = false;
                    continue;
                }
                Err(StorageError::NotFound(_)) if cached => continue,
                Err(e) => return Err(ApiError::storage(kind, name, e)),
            }
        }
    }

    /// `pods/<name>/binding`: sets spec.nodeName once.
    pub async fn bind(&self, namespace: &str, name: &str, binding: &Value) -> ApiResult<Value> {
        let kind = pod_kind();
        let node =
            binding["target"]["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::invalid(kind, name, vec![Cause::required("target.name", "")])
            })?;
        let node = node.to_owned();
        let expected_uid = binding["metadata"]["uid"].as_str().map(str::to_owned);
        // As kube-apiserver does, the binding's annotations are copied onto the pod.
        let annotations =
            binding["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        let pod_name = name.to_owned();
        let mutation = Mutation::With(Box::new(move |mut pod: Value| {
            if let Some(uid) = &expected_uid
                && pod["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(ApiError::conflict(
                    kind,
                    &pod_name,
                    "Precondition failed: UID mismatch",
                ));
            }
            let current = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    kind,
                    &pod_name,
                    format!("pod {pod_name} is already assigned to node \"{current}\""),
                ));
            }
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::conflict(
                    kind,
                    &pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            child(&mut pod, "spec")["nodeName"] = json!(node);
            if !annotations.is_empty() {
                let meta = child(&mut pod, "metadata");
                if !meta["annotations"].is_object() {
                    meta["annotations"] = json!({});
                }
                if let Some(target) = meta["annotations"].as_object_mut() {
                    for (k, v) in &annotations {
                        if v.is_string() {
                            target.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            let status = child(&mut pod, "status");
            let conditions =
                status.as_object_mut().map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(conditions)) = conditions {
                conditions.retain(|c| c["type"] != "PodScheduled");
                conditions.push(json!({
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": null,
                    "lastTransitionTime": object::rfc3339(unix_now()),
                }));
            }
            Ok(pod)
        }));
        self.update(kind, Some(namespace), name, Some("binding"), mutation).await?;
        Ok(
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 }),
        )
    }

    /// DELETE of one object: graceful for pods on a node, deferred while
    /// finalizers remain, immediate otherwise.
    pub async fn delete(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Value> {
        if kind.is("Namespace") && SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let key = kind.key(namespace, name);
        loop {
            let kv = self
                .storage
                .get(&key)
                .await
                .map_err(|e| ApiError::storage(kind, name, e))?
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            let mut obj = decode(&kv.value)?;
            if let Some(uid) = &options.uid
                && obj["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        obj["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &options.resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            if options.dry_run {
                return Ok(with_revision(obj, kv.mod_revision));
            }
            let now = unix_now();
            // Foreground and orphan deletion: the garbage collector deals with the dependents
            // first, then removes the finalizer, which completes the deletion.
            if let Some(f) = options.finalizer()? {
                let meta = child(&mut obj, "metadata");
                let list = child(meta, "finalizers");
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(items) = list.as_array_mut()
                    && !items.iter().any(|x| x == f)
                {
                    items.push(json!(f));
                }
            }
            let has_finalizers = !finalizers_done(kind, &obj);
            let graceful = if kind.is("Pod") { pod_grace(&obj, options) } else { 0 };
            if has_finalizers || graceful > 0 {
                // The grace period is the client's number: one that puts the deletion beyond
                // the year 9999 is refused rather than overflowing.
                let Some(deletion) = now.checked_add(graceful).and_then(object::rfc3339_checked)
                else {
                    return Err(ApiError::BadRequest(format!(
                        "gracePeriodSeconds {graceful} is out of range"
                    )));
                };
                if kind.is("Namespace") {
                    // Its contents go first (km controller-manager's namespace controller),
                    // then the `kubernetes` finalizer is removed through `finalize`.
                    child(&mut obj, "status")["phase"] = json!("Terminating");
                }
                let meta = child(&mut obj, "metadata");
                let existing = meta["deletionGracePeriodSeconds"].as_i64();
                if !meta["deletionTimestamp"].is_null() && existing.is_some_and(|g| g <= graceful) {
                    return Ok(with_revision(obj, kv.mod_revision));
                }
                meta["deletionTimestamp"] = json!(deletion);
                meta["deletionGracePeriodSeconds"] = json!(graceful);
                match self.storage.update(&key, encode(&obj), kv.mod_revision).await {
                    Ok(rev) => return Ok(with_revision(obj, rev)),
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::storage(kind, name, e)),
                }
            }
            match self.storage.delete(&key, Some(kv.mod_revision)).await {
                Ok((rev, _)) => {
                    if kind.is("Service") {
                        self.config.ranges.release(&*self.storage, &Ranges::held(&obj, None)).await;
                    }
                    return Ok(with_revision(obj, rev));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::storage(kind, name, e)),
            }
        }
    }

    /// `<kind>/<name>/scale` as an autoscaling/v1 Scale.
    pub async fn get_scale(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        Ok(scale_of(&self.get(kind, namespace, name).await?))
    }

    pub async fn update_scale(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        content_type: Option<&str>,
        body: Value,
        write: &Write,
    ) -> ApiResult<Value> {
        let mutation = Mutation::With(Box::new(move |mut obj: Value| {
            let mut scale = scale_of(&obj);
            match content_type {
                Some(ct) => scale = patch::apply(scale_kind(), ct, scale, &body)?,
                None => scale = body.clone(),
            }
            let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    scale_kind(),
                    name_of(&obj).to_owned().as_str(),
                    vec![Cause::invalid(
                        "spec.replicas",
                        &json!(replicas),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            child(&mut obj, "spec")["replicas"] = json!(replicas);
            if let Some(rv) = rv_of(&scale) {
                obj["metadata"]["resourceVersion"] = json!(rv);
            } else if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(obj)
        }));
        let obj = self.update_as(kind, namespace, name, Some("scale"), mutation, write).await?;
        Ok(scale_of(&obj))
    }
}

/// One step of an update: the stored object, it with its resourceVersion,
/// and the object to write. A request naming a resourceVersion other than
/// the stored one is refused as stale.
fn plan_update(
    kind: &'static Kind,
    name: &str,
    subresource: Option<&str>,
    mutation: &mut Mutation<'_>,
    kv: &crate::storage::Kv,
    allow_privileged: bool,
    writer: Option<&Writer>,
) -> ApiResult<(Value, Value, Value)> {
    let stored = decode(&kv.value)?;
    let current = with_revision(stored.clone(), kv.mod_revision);
    let now = unix_now();
    let (desired, recorded) = match mutation {
        Mutation::Replace(body) => {
            object::check_type(kind, body)?;
            (body.clone(), writer)
        }
        Mutation::Patch { content_type, patch } => {
            (patch::apply(kind, content_type, current.clone(), patch)?, writer)
        }
        Mutation::With(f) => (f(current.clone())?, writer),
        // The apply has recorded its managers already.
        Mutation::Apply { config, force } => {
            let Some(applier) = writer else {
                return Err(ApiError::BadRequest("an apply needs a field manager".into()));
            };
            (managed::apply(kind, applier, Some(&stored), config, *force, now)?, None)
        }
    };
    // Managers a request sets itself replace the stored ones (an update through a
    // subresource cannot set them).
    let requested = match subresource {
        None => desired["metadata"].get("managedFields").cloned(),
        Some(_) => None,
    };
    if let Some(body_name) = desired["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let precondition = rv_of(&desired).map(|rv| parse_rv(kind, rv)).transpose()?;
    if precondition.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::stale(kind, name));
    }
    let mut new = match subresource {
        Some("binding") => {
            let mut out = desired;
            if let Some(m) = child(&mut out, "metadata").as_object_mut() {
                m.remove("resourceVersion");
            }
            out
        }
        _ => object::prepare_update(kind, &stored, desired, subresource),
    };
    if subresource.is_none() {
        object::apply_defaults(kind, &mut new);
    }
    object::drop_nulls(&mut new);
    // A binding changes only spec.nodeName and a condition of an object
    // that was valid: skip the full (costly) validation.
    if subresource != Some("binding") {
        object::validate(kind, &new)?;
        if subresource.is_none() && !allow_privileged {
            object::forbid_privileged(kind, &new)?;
        }
        object::validate_update(kind, &stored, &new)?;
    }
    match subresource {
        Some("binding" | "finalize") => {
            if let Some(m) = stored["metadata"].get("managedFields") {
                child(&mut new, "metadata")["managedFields"] = m.clone();
            }
        }
        _ => {
            managed::track_update(kind, recorded, Some(&stored), &mut new, requested.as_ref(), now)?
        }
    }
    Ok((stored, current, new))
}

/// A watch's query as the list of its initial state: no paging, no start (the current state).
fn strip_list_options(query: &Query) -> Query {
    let mut q = query.clone();
    for key in ["limit", "continue", "resourceVersion", "resourceVersionMatch", "sendInitialEvents"]
    {
        q.remove(key);
    }
    q
}

/// Grace period of a pod delete; 0 deletes at once.
fn pod_grace(pod: &Value, options: &DeleteOptions) -> i64 {
    let bound = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !bound || finished {
        return 0;
    }
    options
        .grace_period
        .unwrap_or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30))
        .max(0)
}

fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = match &obj["spec"]["selector"] {
        Value::Object(s) if s.contains_key("matchLabels") || s.contains_key("matchExpressions") => {
            s.get("matchLabels").and_then(Value::as_object).map(join_labels).unwrap_or_default()
        }
        Value::Object(s) => join_labels(s),
        _ => String::new(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": { "replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0) },
        "status": { "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector },
    })
}

fn join_labels(map: &serde_json::Map<String, Value>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether nothing holds the deletion of `o` back: no `metadata.finalizers`, and for a
/// namespace no `spec.finalizers` either.
fn finalizers_done(kind: &Kind, o: &Value) -> bool {
    let empty = |v: &Value| v.as_array().is_none_or(|f| f.is_empty());
    empty(&o["metadata"]["finalizers"])
        && (!kind.is("Namespace") || empty(&o["spec"]["finalizers"]))
}

fn ns_kind() -> &'static Kind {
    registry::lookup("", "v1", "namespaces").unwrap_or(&registry::KINDS[0])
}

fn node_kind() -> &'static Kind {
    registry::lookup("", "v1", "nodes").unwrap_or(&registry::KINDS[0])
}

fn pod_kind() -> &'static Kind {
    registry::lookup("", "v1", "pods").unwrap_or(&registry::KINDS[0])
}

/// Scale is served only as a subresource; this describes it for errors.
fn scale_kind() -> &'static Kind {
    static SCALE: Kind = Kind {
        group: "autoscaling",
        version: "v1",
        api_version: "autoscaling/v1",
        kind: "Scale",
        list_kind: "ScaleList",
        plural: "scale",
        singular: "scale",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        categories: &[],
        decode: |_| Ok(()),
        schema: registry::schema::<k8s_openapi::api::autoscaling::v1::Scale>,
    };
    &SCALE
}

#[cfg(test)]
mod tests;
