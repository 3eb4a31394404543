//! Restart on configuration change, the IO: the digests of every ConfigMap and Secret (watched,
//! never kept as values), and the sync of an annotated Deployment, ReplicaSet,
//! ReplicationController or pod: record the hashes of what it watches, and when they change,
//! restart it — a Deployment by its own rollout (the record goes into its pod template), the
//! others through km restart's health-gated path. Events say what changed (source and key
//! names, never values) and how the restart went. [`confighash`] holds the decisions.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, ReplicationController, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use crate::confighash::{self, Decision, Digests, Source, SourceKind};
use crate::workloads::SyncError;
use crate::{Ctx, pods};

/// While the controller-manager restarts a ReplicaSet or ReplicationController for a change,
/// this annotation on it holds the record the restart is for; a leader that finds it without
/// a restart of its own running resumes the restart (km restart goes on from its count).
pub const RESTARTING: &str = "km.io/config-restart";

/// How long a restart for a config change may go without progress.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

const COMPONENT: &str = "km-controller-manager";

type SourceKey = (String, Source);

/// The digests of every ConfigMap and Secret, by namespace and source, and the keys that
/// changed at each source's last change.
#[derive(Default)]
pub struct ConfigStore {
    digests: RwLock<HashMap<SourceKey, Digests>>,
    last_changed: RwLock<HashMap<SourceKey, Vec<String>>>,
}

impl ConfigStore {
    /// The digests of `source` in `namespace`, cloned (None: it does not exist).
    pub fn get(&self, namespace: &str, source: &Source) -> Option<Digests> {
        let all = self.digests.read().ok()?;
        all.get(&(namespace.to_owned(), source.clone())).cloned()
    }

    fn changed_keys(&self, namespace: &str, source: &Source) -> Vec<String> {
        self.last_changed
            .read()
            .ok()
            .and_then(|m| m.get(&(namespace.to_owned(), source.clone())).cloned())
            .unwrap_or_default()
    }

    /// Puts (or with `None` removes) a source's digests; true when they changed.
    fn put(&self, key: SourceKey, digests: Option<Digests>) -> bool {
        let Ok(mut all) = self.digests.write() else { return false };
        let before = all.get(&key).cloned();
        if before == digests {
            return false;
        }
        let changed = confighash::changed_keys(
            &before.clone().unwrap_or_default(),
            &digests.clone().unwrap_or_default(),
        );
        match digests {
            Some(d) => all.insert(key.clone(), d),
            None => all.remove(&key),
        };
        drop(all);
        if let Ok(mut last) = self.last_changed.write() {
            last.insert(key, changed);
        }
        true
    }

    /// Replaces every source of `kind` by a fresh listing; the namespaces where one changed.
    fn replace_kind(&self, kind: SourceKind, fresh: HashMap<SourceKey, Digests>) -> Vec<String> {
        let old: Vec<SourceKey> = self
            .digests
            .read()
            .map(|all| all.keys().filter(|(_, s)| s.kind == kind).cloned().collect())
            .unwrap_or_default();
        let mut namespaces = Vec::new();
        for key in old {
            if !fresh.contains_key(&key) && self.put(key.clone(), None) {
                namespaces.push(key.0);
            }
        }
        for (key, d) in fresh {
            let ns = key.0.clone();
            if self.put(key, Some(d)) {
                namespaces.push(ns);
            }
        }
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }
}

/// What a watched object contributes.
trait ConfigSource:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: SourceKind;
    fn digests(&self) -> Digests;
}

impl ConfigSource for ConfigMap {
    const KIND: SourceKind = SourceKind::ConfigMap;
    fn digests(&self) -> Digests {
        let text = self.data.iter().flatten().map(|(k, v)| (k.as_str(), v.as_bytes()));
        let binary = self.binary_data.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_slice()));
        confighash::digests(text.chain(binary))
    }
}

impl ConfigSource for Secret {
    const KIND: SourceKind = SourceKind::Secret;
    fn digests(&self) -> Digests {
        let data = self.data.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_slice()));
        let text = self.string_data.iter().flatten().map(|(k, v)| (k.as_str(), v.as_bytes()));
        confighash::digests(data.chain(text))
    }
}

fn source_key<K: ConfigSource>(o: &K) -> SourceKey {
    let meta = o.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        Source { kind: K::KIND, name: meta.name.clone().unwrap_or_default() },
    )
}

/// Watches ConfigMaps and Secrets into `store`, calling `changed(namespace)` when a source of a
/// namespace changes; returns once both have been listed.
pub async fn start(
    client: &kube::Client,
    store: Arc<ConfigStore>,
    changed: Arc<dyn Fn(String) + Send + Sync>,
) {
    let (a, b) = (tokio::sync::oneshot::channel(), tokio::sync::oneshot::channel());
    spawn_watch::<ConfigMap>(client, store.clone(), changed.clone(), a.0);
    spawn_watch::<Secret>(client, store, changed, b.0);
    let _ = futures::join!(a.1, b.1);
}

fn spawn_watch<K: ConfigSource>(
    client: &kube::Client,
    store: Arc<ConfigStore>,
    changed: Arc<dyn Fn(String) + Send + Sync>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut listed = Some(listed);
        let mut fresh: HashMap<SourceKey, Digests> = HashMap::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => fresh.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    fresh.insert(source_key(&o), o.digests());
                }
                Ok(watcher::Event::InitDone) => {
                    for ns in store.replace_kind(K::KIND, std::mem::take(&mut fresh)) {
                        changed(ns);
                    }
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(o)) => {
                    let key = source_key(&o);
                    let ns = key.0.clone();
                    if store.put(key, Some(o.digests())) {
                        changed(ns);
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    let key = source_key(&o);
                    let ns = key.0.clone();
                    if store.put(key, None) {
                        changed(ns);
                    }
                }
                Err(e) => tracing::warn!(kind = K::KIND.label(), "watch: {e} (retrying)"),
            }
        }
    });
}

/// The kinds that can opt in: those km restart restarts.
pub use km_restart::drive::Kind;

fn parse_kind(s: &str) -> Option<Kind> {
    [Kind::Deployment, Kind::ReplicaSet, Kind::ReplicationController, Kind::Pod]
        .into_iter()
        .find(|k| k.object_kind() == s)
}

/// The queue key of an object: `Kind|namespace/name`.
pub fn queue_key(kind: Kind, meta: &ObjectMeta) -> String {
    format!(
        "{}|{}/{}",
        kind.object_kind(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Whether an object takes part: it opts in, or a restart of ours is to be resumed on it.
pub fn concerned(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(confighash::ANNOTATION) || a.contains_key(RESTARTING))
}

/// The keys of every object of `namespace` that takes part.
pub fn keys_in(ctx_caches: &crate::cache::Caches, namespace: &str) -> Vec<String> {
    let here = |m: &ObjectMeta| m.namespace.as_deref() == Some(namespace) && concerned(m);
    let mut out = Vec::new();
    for d in ctx_caches.deployments.state_filter(|d| here(&d.metadata)) {
        out.push(queue_key(Kind::Deployment, &d.metadata));
    }
    for rs in ctx_caches.replicasets.state_filter(|r| here(&r.metadata)) {
        out.push(queue_key(Kind::ReplicaSet, &rs.metadata));
    }
    for rc in ctx_caches.controllers.state_filter(|r| here(&r.metadata)) {
        out.push(queue_key(Kind::ReplicationController, &rc.metadata));
    }
    for p in ctx_caches.pods.state_filter(|p| here(&p.metadata)) {
        out.push(queue_key(Kind::Pod, &p.metadata));
    }
    out
}

/// The restarts this process runs, by queue key.
#[derive(Default)]
pub struct Running(Mutex<HashSet<String>>);

impl Running {
    fn is_running(&self, key: &str) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(key))
    }

    fn start(&self, key: &str) -> bool {
        self.0.lock().is_ok_and(|mut s| s.insert(key.to_owned()))
    }

    fn end(&self, key: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(key);
        }
    }
}

/// Syncs one object: see the module docs.
pub async fn sync(ctx: &Arc<Ctx>, key: &str) -> Result<Option<Duration>, SyncError> {
    let Some((kind, rest)) = key.split_once('|') else { return Ok(None) };
    let Some(kind) = parse_kind(kind) else { return Ok(None) };
    let Some((ns, name)) = rest.split_once('/') else { return Ok(None) };
    let Some(store) = ctx.config.as_ref() else { return Ok(None) };
    if ctx.restarts.is_running(key) {
        // Looked at again once the restart is over.
        return Ok(Some(Duration::from_secs(2)));
    }
    let caches = &ctx.caches;
    let at = ObjectRef::new(name).within(ns);
    let (meta, spec): (ObjectMeta, Option<PodSpec>) = match kind {
        Kind::Deployment => {
            match caches.deployments.get(&ObjectRef::<Deployment>::new(name).within(ns)) {
                Some(d) => (d.metadata.clone(), d.spec.template.spec.clone()),
                None => return Ok(None),
            }
        }
        Kind::ReplicaSet => match caches
            .replicasets
            .get(&ObjectRef::<ReplicaSet>::new(name).within(ns))
        {
            Some(r) => (r.metadata.clone(), r.spec.template.as_ref().and_then(|t| t.spec.clone())),
            None => return Ok(None),
        },
        Kind::ReplicationController => {
            match caches.controllers.get(&ObjectRef::<ReplicationController>::new(name).within(ns))
            {
                Some(r) => (
                    r.metadata.clone(),
                    r.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.clone()),
                ),
                None => return Ok(None),
            }
        }
        Kind::Pod => match caches.pods.get(&at) {
            Some(p) => (p.metadata.clone(), p.spec.clone()),
            None => return Ok(None),
        },
    };
    if meta.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let annotations = meta.annotations.clone().unwrap_or_default();
    // Pods and ReplicaSets that a controller owns are restarted through their owner.
    if kind != Kind::Deployment && pods::controller_of(&meta).is_some() {
        return Ok(None);
    }
    if annotations.contains_key("kubernetes.io/config.mirror") {
        return Ok(None);
    }
    if let Some(record) = annotations.get(RESTARTING) {
        // A restart that a previous leader (or this process before a failure) began.
        let sources = record
            .split(',')
            .filter_map(|s| s.split_once('='))
            .map(|(s, _)| s.to_owned())
            .collect();
        spawn_restart(ctx, key, kind, ns, name, &meta, sources, "resumed");
        return Ok(None);
    }
    let watch = match confighash::parse_watch(
        annotations.get(confighash::ANNOTATION).map(String::as_str),
    ) {
        Ok(Some(w)) => w,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(%key, "{e}");
            return Ok(None);
        }
    };
    let used = spec.as_ref().map(confighash::references).unwrap_or_default();
    let watched = confighash::watched(&watch, &used);
    let current: Vec<(Source, Option<Digests>)> =
        watched.iter().map(|s| (s.clone(), store.get(ns, s))).collect();
    let current = confighash::record(&watched, |s| {
        current.iter().find(|(c, _)| c == s).and_then(|(_, d)| d.as_ref())
    });
    match confighash::decide(annotations.get(confighash::HASH).map(String::as_str), current) {
        Decision::Nothing => Ok(None),
        Decision::Record(record) => {
            let patch = json!({ "metadata": { "annotations": { confighash::HASH: record } } });
            patch_object(ctx, kind, ns, name, &patch).await?;
            tracing::debug!(%key, "recorded the config hashes");
            Ok(None)
        }
        Decision::Restart { record, sources } => {
            let what = describe(store, ns, &sources);
            let mut patch = json!({ "metadata": { "annotations": { confighash::HASH: &record } } });
            match kind {
                Kind::Deployment => {
                    patch["spec"]["template"]["metadata"]["annotations"][confighash::HASH] =
                        json!(&record);
                }
                Kind::ReplicaSet | Kind::ReplicationController => {
                    patch["spec"]["template"]["metadata"]["annotations"][confighash::HASH] =
                        json!(&record);
                    patch["metadata"]["annotations"][RESTARTING] = json!(&record);
                }
                Kind::Pod => {}
            }
            patch_object(ctx, kind, ns, name, &patch).await?;
            let how = if kind == Kind::Deployment {
                "rolling out new pods"
            } else {
                "restarting, health-gated"
            };
            tracing::info!(%key, "{what}; {how}");
            event(ctx, kind, &meta, "Normal", "ConfigChanged", &format!("{what}; {how}")).await;
            if kind != Kind::Deployment {
                let sources = sources.into_iter().collect();
                spawn_restart(ctx, key, kind, ns, name, &meta, sources, "started");
            }
            Ok(None)
        }
    }
}

/// "configmap/app changed (keys: mode), secret/db changed (keys: password)".
fn describe(store: &ConfigStore, ns: &str, sources: &[String]) -> String {
    sources
        .iter()
        .map(|s| {
            let source = s.split_once('/').map(|(k, n)| match k {
                "secret" => Source::secret(n),
                _ => Source::configmap(n),
            });
            let keys = source.map(|src| store.changed_keys(ns, &src)).unwrap_or_default();
            if keys.is_empty() {
                format!("{s} changed")
            } else {
                format!("{s} changed (keys: {})", keys.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn spawn_restart(
    ctx: &Arc<Ctx>,
    key: &str,
    kind: Kind,
    ns: &str,
    name: &str,
    meta: &ObjectMeta,
    sources: BTreeSet<String>,
    how: &'static str,
) {
    if !ctx.restarts.start(key) {
        return;
    }
    let (ctx, key, ns, name, meta) =
        (ctx.clone(), key.to_owned(), ns.to_owned(), name.to_owned(), meta.clone());
    tokio::spawn(async move {
        let target = km_restart::Target { kind, name: name.clone() };
        let options = km_restart::Options {
            namespace: ns.clone(),
            timeout: RESTART_TIMEOUT,
            max_unavailable: None,
            max_surge: None,
        };
        tracing::info!(%key, "restart for a config change {how}");
        let mut report = |line: &str| tracing::info!("{line}");
        let result = km_restart::restart(
            &ctx.client,
            &target,
            &options,
            &mut report,
            std::future::pending(),
        )
        .await;
        let changed = sources.into_iter().collect::<Vec<_>>().join(", ");
        match &result {
            Ok(summary) => {
                event(
                    &ctx,
                    kind,
                    &meta,
                    "Normal",
                    "Restarted",
                    &format!("after a change of {changed}: {summary}"),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(%key, "restart for a config change: {e}");
                event(
                    &ctx,
                    kind,
                    &meta,
                    "Warning",
                    "RestartFailed",
                    &format!("after a change of {changed}: {e}"),
                )
                .await;
            }
        }
        if kind != Kind::Pod {
            let done = json!({ "metadata": { "annotations": { RESTARTING: null } } });
            if let Err(e) = patch_object(&ctx, kind, &ns, &name, &done).await {
                tracing::warn!(%key, "{e}");
            }
        }
        ctx.restarts.end(&key);
    });
}

async fn patch_object(
    ctx: &Ctx,
    kind: Kind,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), SyncError> {
    let params = PatchParams::default();
    let patch = Patch::Merge(patch);
    let client = ctx.client.clone();
    let result = match kind {
        Kind::Deployment => {
            Api::<Deployment>::namespaced(client, ns).patch(name, &params, &patch).await.map(drop)
        }
        Kind::ReplicaSet => {
            Api::<ReplicaSet>::namespaced(client, ns).patch(name, &params, &patch).await.map(drop)
        }
        Kind::ReplicationController => Api::<ReplicationController>::namespaced(client, ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        Kind::Pod => {
            Api::<Pod>::namespaced(client, ns).patch(name, &params, &patch).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(SyncError::Api {
            what: format!("patching {} {ns}/{name}", kind.object_kind()),
            source,
        }),
    }
}

/// Records an Event about the object (failures are logged: an event is not worth a retry).
async fn event(ctx: &Ctx, kind: Kind, meta: &ObjectMeta, type_: &str, reason: &str, message: &str) {
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let now = Timestamp::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": format!("{name}.{:x}{:08x}", now.as_second(), rand::random::<u32>()), "namespace": &ns },
        "involvedObject": { "apiVersion": kind.api_version(), "kind": kind.object_kind(), "name": &name,
            "namespace": &ns, "uid": meta.uid.clone().unwrap_or_default() },
        "reason": reason, "message": message, "type": type_,
        "source": { "component": COMPONENT }, "reportingComponent": COMPONENT,
        "firstTimestamp": now.to_string(), "lastTimestamp": now.to_string(), "count": 1,
    });
    let Ok(event) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(event) else {
        return;
    };
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!("recording event {reason} for {} {ns}/{name}: {e}", kind.object_kind());
    }
}
