//! Carrying out a restart against the Kubernetes API: reading the workload and its pods,
//! patching, deleting and creating, and polling until the plan says done or failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::plan::{self, Amount, Budget, Health, Replica, Rolling, Step};

/// How often a restart looks at its pods.
const POLL: Duration = Duration::from_millis(250);

/// The annotation a rolling restart of a ReplicaSet or ReplicationController keeps on it while
/// it runs: the replica count to go back to, so a restart killed half-way can be resumed (run
/// `km restart` again) without losing the user's count.
pub const RESTART_ANNOTATION: &str = "km.io/restart-replicas";

/// What `kubectl rollout restart` writes into a Deployment's pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Annotations the scheduler writes when it binds a pod; a copy of the pod must not carry them.
const BINDING_ANNOTATIONS: &[&str] = &[
    km_scheduler_core::task::TASK_ID,
    km_scheduler_core::task::SLAVE_ID,
    km_scheduler_core::task::OFFER_ID,
    km_scheduler_core::task::EXECUTOR_ID,
    km_scheduler_core::task::BINDING_HOST,
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: Kind, namespace: String, name: String },
    #[error("{what} is managed by {owner_kind} {owner}: restart {owner_kind_lower}/{owner} instead", owner_kind_lower = owner_kind.to_lowercase())]
    Managed { what: String, owner_kind: String, owner: String },
    #[error("{0} is the mirror of a static pod: restart it on its node (edit its manifest)")]
    Mirror(String),
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
    #[error("{0}: interrupted")]
    Interrupted(String),
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
}

fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// The kinds km restart knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    ReplicationController,
    Pod,
}

impl Kind {
    /// The kind as objects name it (`Deployment`, ...).
    pub fn object_kind(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Pod => "Pod",
        }
    }

    /// Its group/version.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
            Kind::ReplicationController | Kind::Pod => "v1",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
            Kind::ReplicationController => "replicationcontroller",
            Kind::Pod => "pod",
        })
    }
}

/// KIND/NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Target {
    /// `["deployment/web"]` or `["deployment", "web"]`, with kubectl's short names.
    pub fn parse(words: &[String]) -> Result<Target, Error> {
        let (kind, name) = match words {
            [one] => one.split_once('/').ok_or_else(|| {
                Error::Usage(format!("{one:?}: give KIND/NAME, e.g. deployment/{one}"))
            })?,
            [kind, name] => (kind.as_str(), name.as_str()),
            _ => return Err(Error::Usage("give KIND/NAME".into())),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps" => {
                Kind::Deployment
            }
            "replicaset" | "replicasets" | "rs" | "replicaset.apps" | "replicasets.apps" => {
                Kind::ReplicaSet
            }
            "replicationcontroller" | "replicationcontrollers" | "rc" => {
                Kind::ReplicationController
            }
            "pod" | "pods" | "po" => Kind::Pod,
            other => {
                return Err(Error::Usage(format!(
                    "cannot restart a {other:?}: km restart knows deployment, replicaset (rs), replicationcontroller (rc) and pod (po)"
                )));
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(Error::Usage(format!("{name:?} is not a name")));
        }
        Ok(Target { kind, name: name.to_owned() })
    }
}

/// How to restart.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub timeout: Duration,
    pub max_unavailable: Option<Amount>,
    pub max_surge: Option<Amount>,
}

/// Restarts `target`, reporting progress lines through `report`, until done (the summary
/// line), failed, or `stop` completes (what was changed for the restart is put back where it
/// can be).
pub async fn restart(
    client: &kube::Client,
    target: &Target,
    options: &Options,
    report: &mut (dyn FnMut(&str) + Send + Sync),
    stop: impl Future<Output = ()> + Send,
) -> Result<String, Error> {
    let mut stop = std::pin::pin!(stop);
    let started = Instant::now();
    let mut run = Run { client, target, options, report, stop: stop.as_mut(), started };
    let what = match target.kind {
        Kind::Deployment => run.deployment().await?,
        Kind::ReplicaSet | Kind::ReplicationController => run.replicated().await?,
        Kind::Pod => run.pod().await?,
    };
    Ok(format!("{target} restarted: {what} in {:.1}s", started.elapsed().as_secs_f64()))
}

struct Run<'a, S> {
    client: &'a kube::Client,
    target: &'a Target,
    options: &'a Options,
    report: &'a mut (dyn FnMut(&str) + Send + Sync),
    stop: std::pin::Pin<&'a mut S>,
    started: Instant,
}

impl<S: Future<Output = ()>> Run<'_, S> {
    fn say(&mut self, line: &str) {
        (self.report)(&format!("{}: {line}", self.target));
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn not_found(&self) -> Error {
        Error::NotFound {
            kind: self.target.kind,
            namespace: self.options.namespace.clone(),
            name: self.target.name.clone(),
        }
    }

    fn failed(&self, reason: String) -> Error {
        Error::Failed { what: format!("restart of {}", self.target), reason }
    }

    /// Waits one poll interval; false when asked to stop.
    async fn pause(&mut self) -> bool {
        tokio::select! {
            () = tokio::time::sleep(POLL) => true,
            () = self.stop.as_mut() => false,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.options.namespace)
    }

    /// The namespace's pods whose controller is `uid`.
    async fn owned_pods(&self, uid: &str, selector: &str) -> Result<Vec<Pod>, Error> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(api(format!("listing the pods of {}", self.target)))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| controller(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect())
    }

    /// The health of each pod; a pod not yet bound is also judged by the `FailedLaunch`
    /// Events the scheduler recorded for it (read once for all of them).
    async fn judge(&self, pods: &[&Pod]) -> Result<Vec<Health>, Error> {
        let mut out: Vec<Health> = pods.iter().map(|p| plan::health(p)).collect();
        let unbound: HashSet<&str> = pods
            .iter()
            .zip(&out)
            .filter(|(p, h)| {
                matches!(h, Health::Pending(_))
                    && p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_none_or(str::is_empty)
            })
            .filter_map(|(p, _)| p.metadata.uid.as_deref())
            .collect();
        if unbound.is_empty() {
            return Ok(out);
        }
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.options.namespace);
        let failed = events
            .list(&ListParams::default().fields("reason=FailedLaunch,involvedObject.kind=Pod"))
            .await
            .map_err(api(format!("reading the events of {}", self.target)))?;
        let mut why: HashMap<&str, String> = HashMap::new();
        for e in &failed.items {
            let Some(uid) = e.involved_object.uid.as_deref() else { continue };
            if let (Some(u), Some(w)) =
                (unbound.get(uid), e.message.as_deref().and_then(plan::launch_failure))
            {
                why.insert(u, w);
            }
        }
        for (p, h) in pods.iter().zip(out.iter_mut()) {
            if let Some(w) = p.metadata.uid.as_deref().and_then(|u| why.remove(u)) {
                *h = Health::Failed(w);
            }
        }
        Ok(out)
    }

    // ---- Deployments -------------------------------------------------------------------

    async fn deployment(&mut self) -> Result<String, Error> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.options.namespace);
        let name = self.target.name.clone();
        let d = deployments
            .get_opt(&name)
            .await
            .map_err(api(format!("reading {}", self.target)))?
            .ok_or_else(|| self.not_found())?;
        let spec = d.spec.clone();
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let flags = self.options.max_unavailable.is_some() || self.options.max_surge.is_some();
        if recreate && flags {
            return Err(Error::Usage(format!(
                "{} uses the Recreate strategy: --max-unavailable and --max-surge apply to RollingUpdate only",
                self.target
            )));
        }
        let replicas = u32::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let selector = label_selector(spec.selector.match_labels.as_ref());
        let old: HashSet<String> = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api(format!("listing the pods of {}", self.target)))?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        let previous = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_AT))
            .cloned();
        let now = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second);
        let now = now.map_or_else(|_| String::new(), |t| t.to_string());
        let mut patch = json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: now } } } } });
        let mut strategy = Vec::new();
        if let Some(u) = self.options.max_unavailable {
            patch["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = amount_json(u);
            strategy.push(format!("maxUnavailable {u}"));
        }
        if let Some(s) = self.options.max_surge {
            patch["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = amount_json(s);
            strategy.push(format!("maxSurge {s}"));
        }
        if !strategy.is_empty() {
            patch["spec"]["strategy"]["type"] = json!("RollingUpdate");
        }
        let patched = deployments
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api(format!("patching {}", self.target)))?;
        let generation = patched.metadata.generation.unwrap_or(0);
        let how = if recreate {
            "strategy Recreate: every pod stops before the new ones start".to_owned()
        } else if strategy.is_empty() {
            "by the Deployment's rolling-update strategy".to_owned()
        } else {
            format!("strategy set to {}", strategy.join(", "))
        };
        self.say(&format!("restarting {replicas} pods ({how})"));
        let mut last_line = String::new();
        let mut last_key = None;
        let mut since = self.now();
        loop {
            let d = deployments
                .get_opt(&name)
                .await
                .map_err(api(format!("reading {}", self.target)))?
                .ok_or_else(|| self.not_found())?;
            let status = d.status.clone().unwrap_or_default();
            let pods = self
                .pods()
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(api(format!("listing the pods of {}", self.target)))?
                .items;
            let live: Vec<&Pod> =
                pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let healths = self.judge(&live).await?;
            let mut failure = None;
            let mut pending = Vec::new();
            let (mut old_left, mut replaced) = (0u32, 0u32);
            for (p, health) in live.into_iter().zip(healths) {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                if old.contains(uid) {
                    old_left += 1;
                    continue;
                }
                match health {
                    Health::Ready => replaced += 1,
                    Health::Pending(why) => pending.push(format!("{}: {why}", pod_name(p))),
                    Health::Failed(why) => {
                        failure.get_or_insert(format!(
                            "replacement pod {} failed: {why}",
                            pod_name(p)
                        ));
                    }
                }
            }
            let stalled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.status.as_deref() == Some("False")
                })
                .map(|c| c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()));
            let available = u32::try_from(status.available_replicas.unwrap_or(0)).unwrap_or(0);
            let line = format!(
                "{}/{replicas} replaced, {old_left} old left, {available} available",
                replaced.min(replicas)
            );
            if line != last_line {
                self.say(&line);
                last_line = line;
            }
            let key = (replaced, old_left, available);
            if last_key != Some(key) {
                last_key = Some(key);
                since = self.now();
            }
            let reason = failure.or(stalled).or_else(|| {
                (self.now().saturating_sub(since) > self.options.timeout).then(|| {
                    let detail = if pending.is_empty() {
                        "no replacement pod appeared".to_owned()
                    } else {
                        pending.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                    };
                    format!(
                        "no progress for {}: {detail}",
                        humantime::format_duration(self.options.timeout)
                    )
                })
            });
            if let Some(reason) = reason {
                // Back to the template the old pods run: the controller scales their
                // ReplicaSet up again and the failing one down.
                let undo = json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: previous } } } } });
                deployments
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&undo))
                    .await
                    .map_err(api(format!("rolling back {}", self.target)))?;
                self.say("rolled back to the pods it ran before");
                return Err(self.failed(reason));
            }
            let observed = status.observed_generation.unwrap_or(0) >= generation;
            let all = |n: Option<i32>| u32::try_from(n.unwrap_or(0)).unwrap_or(0) == replicas;
            if observed
                && old_left == 0
                && all(status.updated_replicas)
                && all(status.replicas)
                && all(status.available_replicas)
            {
                return Ok(format!("{replicas} pods replaced"));
            }
            if !self.pause().await {
                self.say(
                    "stopped waiting; the Deployment's controller carries on with the rollout",
                );
                return Err(Error::Interrupted(self.target.to_string()));
            }
        }
    }

    // ---- ReplicaSets and ReplicationControllers ----------------------------------------

    async fn replicated(&mut self) -> Result<String, Error> {
        let name = self.target.name.clone();
        let w = Replicated::new(self.client, &self.options.namespace, self.target.kind);
        let (meta, replicas, selector) = w
            .get(&name)
            .await
            .map_err(api(format!("reading {}", self.target)))?
            .ok_or_else(|| self.not_found())?;
        if let Some(owner) = controller(&meta) {
            return Err(Error::Managed {
                what: self.target.to_string(),
                owner_kind: owner.kind.clone(),
                owner: owner.name.clone(),
            });
        }
        let uid = meta.uid.clone().unwrap_or_default();
        // A restart killed half-way left its count here: go on from it.
        let kept = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .and_then(|v| v.parse::<u32>().ok());
        let n = kept.unwrap_or(replicas);
        if let Some(k) = kept {
            self.say(&format!("resuming an unfinished restart ({k} replicas)"));
        }
        let budget = Budget::resolve(
            self.options.max_unavailable.unwrap_or(Amount::Percent(25)),
            self.options.max_surge.unwrap_or(Amount::Percent(25)),
            n,
        )
        .map_err(Error::Usage)?;
        let old: HashSet<String> = self
            .owned_pods(&uid, &selector)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid)
            .collect();
        self.say(&format!(
            "restarting {} pods ({n} replicas; up to {} unavailable, {} extra)",
            old.len(),
            budget.max_unavailable,
            budget.max_surge
        ));
        let mut rolling = Rolling::new(n, budget, self.options.timeout);
        let mut current = replicas;
        let mut last_line = String::new();
        loop {
            let pods = self.owned_pods(&uid, &selector).await?;
            let healths = self.judge(&pods.iter().collect::<Vec<_>>()).await?;
            let view: Vec<Replica> = pods
                .iter()
                .zip(healths)
                .map(|(p, health)| Replica {
                    name: pod_name(p).to_owned(),
                    old: p.metadata.uid.as_ref().is_some_and(|u| old.contains(u)),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    health,
                })
                .collect();
            match rolling.step(self.now(), current, &view) {
                Step::Scale(to) => {
                    let keep = (to != n).then(|| n.to_string());
                    w.scale(&name, to, keep)
                        .await
                        .map_err(api(format!("scaling {}", self.target)))?;
                    current = to;
                    continue;
                }
                Step::Delete(names) => {
                    for pod in &names {
                        match self.pods().delete(pod, &DeleteParams::default()).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(e)) if e.code == 404 => {}
                            Err(e) => return Err(api(format!("deleting pod {pod}"))(e)),
                        }
                    }
                    self.say(&format!("deleting {}", names.join(", ")));
                    continue;
                }
                Step::Wait(progress) => {
                    let line = progress.to_string();
                    if line != last_line {
                        self.say(&line);
                        last_line = line;
                    }
                }
                Step::Done(progress) => return Ok(format!("{} pods replaced", progress.replaced)),
                Step::Fail(reason) => {
                    // Back to the user's count: the controller removes the pods that are not
                    // Ready first, so the old pods still serving stay.
                    w.scale(&name, n, None)
                        .await
                        .map_err(api(format!("scaling {} back", self.target)))?;
                    self.say(&format!("stopped; back to {n} replicas"));
                    return Err(self.failed(reason));
                }
            }
            if !self.pause().await {
                w.scale(&name, n, None)
                    .await
                    .map_err(api(format!("scaling {} back", self.target)))?;
                self.say(&format!("stopped; back to {n} replicas"));
                return Err(Error::Interrupted(self.target.to_string()));
            }
            // The controller may have changed the count meanwhile (someone scaled it).
            if let Some((_, now_replicas, _)) =
                w.get(&name).await.map_err(api(format!("reading {}", self.target)))?
            {
                current = now_replicas;
            }
        }
    }

    // ---- Single pods -------------------------------------------------------------------

    async fn pod(&mut self) -> Result<String, Error> {
        let name = self.target.name.clone();
        let pods = self.pods();
        let original = pods
            .get_opt(&name)
            .await
            .map_err(api(format!("reading {}", self.target)))?
            .ok_or_else(|| self.not_found())?;
        if let Some(owner) = controller(&original.metadata) {
            return Err(Error::Managed {
                what: self.target.to_string(),
                owner_kind: owner.kind.clone(),
                owner: owner.name.clone(),
            });
        }
        if original
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
        {
            return Err(Error::Mirror(self.target.to_string()));
        }
        let stand_in_name = stand_in_name(&name);
        // 1. A stand-in with the same spec, Ready before anything happens to the original.
        let stand_in = copy_of(&original, &stand_in_name);
        pods.create(&PostParams::default(), &stand_in)
            .await
            .map_err(api(format!("creating the stand-in pod {stand_in_name}")))?;
        self.say(&format!("started stand-in pod {stand_in_name}"));
        if let Err(e) = self.until_ready(&stand_in_name).await {
            let _ = pods.delete(&stand_in_name, &DeleteParams::default()).await;
            self.say(&format!("deleted stand-in pod {stand_in_name}; {name} keeps running"));
            return Err(e);
        }
        self.say(&format!("stand-in pod {stand_in_name} is Ready"));
        // 2. The original goes, gracefully.
        let uid = original.metadata.uid.clone().unwrap_or_default();
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(api(format!("deleting {}", self.target))(e)),
        }
        self.say(&format!("deleting {name}"));
        loop {
            let gone =
                match pods.get_opt(&name).await.map_err(api(format!("reading {}", self.target)))? {
                    None => true,
                    Some(p) => p.metadata.uid.as_deref() != Some(uid.as_str()),
                };
            if gone {
                break;
            }
            if !self.pause().await {
                return Err(Error::Interrupted(format!(
                    "{}: stand-in pod {stand_in_name} serves in its place",
                    self.target
                )));
            }
        }
        // 3. The pod comes back under its own name; the stand-in serves meanwhile.
        let back = copy_of(&original, &name);
        pods.create(&PostParams::default(), &back)
            .await
            .map_err(api(format!("creating {} again", self.target)))?;
        self.say(&format!("started {name} again"));
        if let Err(e) = self.until_ready(&name).await {
            self.say(&format!("stand-in pod {stand_in_name} serves in its place"));
            return Err(e);
        }
        // 4. The stand-in goes.
        match pods.delete(&stand_in_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(api(format!("deleting stand-in pod {stand_in_name}"))(e)),
        }
        self.say(&format!("deleting stand-in pod {stand_in_name}"));
        Ok("replaced without a gap".to_owned())
    }

    /// Waits until pod `name` is Ready; fails when it fails, or when the timeout passes.
    async fn until_ready(&mut self, name: &str) -> Result<(), Error> {
        let pods = self.pods();
        let deadline = self.now() + self.options.timeout;
        let mut last_line = String::new();
        loop {
            let health =
                match pods.get_opt(name).await.map_err(api(format!("reading pod {name}")))? {
                    Some(p) => self.judge(&[&p]).await?.pop().unwrap_or_else(|| plan::health(&p)),
                    None => Health::Failed("it was deleted".into()),
                };
            match health {
                Health::Ready => return Ok(()),
                Health::Failed(why) => {
                    return Err(self.failed(format!("pod {name} failed: {why}")));
                }
                Health::Pending(why) => {
                    if self.now() > deadline {
                        return Err(self.failed(format!(
                            "pod {name} not Ready within {}: {why}",
                            humantime::format_duration(self.options.timeout)
                        )));
                    }
                    let line = format!("pod {name}: {why}");
                    if line != last_line {
                        self.say(&line);
                        last_line = line;
                    }
                }
            }
            if !self.pause().await {
                return Err(Error::Interrupted(self.target.to_string()));
            }
        }
    }
}

/// A ReplicaSet or ReplicationController, the two kinds rolled here.
enum Replicated {
    Rs(Api<ReplicaSet>),
    Rc(Api<ReplicationController>),
}

impl Replicated {
    fn new(client: &kube::Client, namespace: &str, kind: Kind) -> Replicated {
        if kind == Kind::ReplicaSet {
            Replicated::Rs(Api::namespaced(client.clone(), namespace))
        } else {
            Replicated::Rc(Api::namespaced(client.clone(), namespace))
        }
    }

    /// Metadata, replicas and a label selector narrowing the pods to list.
    async fn get(&self, name: &str) -> Result<Option<(ObjectMeta, u32, String)>, kube::Error> {
        let count = |r: Option<i32>| u32::try_from(r.unwrap_or(1).max(0)).unwrap_or(0);
        Ok(match self {
            Replicated::Rs(api) => api.get_opt(name).await?.map(|rs| {
                let spec = rs.spec;
                (
                    rs.metadata,
                    count(spec.replicas),
                    label_selector(spec.selector.match_labels.as_ref()),
                )
            }),
            Replicated::Rc(api) => api.get_opt(name).await?.map(|rc| {
                let spec = rc.spec.unwrap_or_default();
                (rc.metadata, count(spec.replicas), label_selector(spec.selector.as_ref()))
            }),
        })
    }

    /// Sets the replica count, and keeps (or removes) the count to go back to.
    async fn scale(
        &self,
        name: &str,
        replicas: u32,
        keep: Option<String>,
    ) -> Result<(), kube::Error> {
        let patch = json!({
            "metadata": { "annotations": { RESTART_ANNOTATION: keep } },
            "spec": { "replicas": replicas },
        });
        let params = PatchParams::default();
        match self {
            Replicated::Rs(api) => api.patch(name, &params, &Patch::Merge(&patch)).await.map(drop),
            Replicated::Rc(api) => api.patch(name, &params, &Patch::Merge(&patch)).await.map(drop),
        }
    }
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

fn label_selector(labels: Option<&BTreeMap<String, String>>) -> String {
    labels.into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn amount_json(a: Amount) -> serde_json::Value {
    match a {
        Amount::Count(n) => json!(n),
        Amount::Percent(_) => json!(a.to_string()),
    }
}

/// The stand-in of a single pod: its name, `-restart-` and a suffix from the clock, kept
/// within the 253 characters of a pod name.
fn stand_in_name(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let suffix = format!("-restart-{:05x}", nanos & 0xfffff);
    let keep = name.len().min(253 - suffix.len());
    let mut base = name[..name.floor_char_boundary(keep)].to_owned();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    base + &suffix
}

/// A new pod with `original`'s labels, annotations (less the scheduler's binding ones) and
/// spec (less its node), named `name`.
pub fn copy_of(original: &Pod, name: &str) -> Pod {
    let annotations = original.metadata.annotations.clone().map(|mut a| {
        a.retain(|k, _| {
            !BINDING_ANNOTATIONS.contains(&k.as_str()) && !k.starts_with("k8s.mesosphere.io/port")
        });
        a
    });
    let mut spec = original.spec.clone();
    if let Some(s) = spec.as_mut() {
        s.node_name = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: original.metadata.namespace.clone(),
            labels: original.metadata.labels.clone(),
            annotations,
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn targets_parse_with_kubectls_names() {
        let t = Target::parse(&words("deploy/web")).expect("target");
        assert_eq!(t, Target { kind: Kind::Deployment, name: "web".into() });
        assert_eq!(Target::parse(&words("rs web")).expect("target").kind, Kind::ReplicaSet);
        assert_eq!(
            Target::parse(&words("replicationcontrollers/x")).expect("target").kind,
            Kind::ReplicationController
        );
        assert_eq!(Target::parse(&words("po/x")).expect("target").to_string(), "pod/x");
        let e = Target::parse(&words("web")).expect_err("no kind").to_string();
        assert!(e.contains("KIND/NAME"), "{e}");
        let e = Target::parse(&words("job/x")).expect_err("unknown kind").to_string();
        assert!(e.contains("\"job\"") && e.contains("deployment"), "{e}");
        assert!(Target::parse(&words("pod/")).is_err());
    }

    #[test]
    fn a_copy_drops_what_binding_and_the_server_added() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": { "app": "a" },
                "annotations": { "keep": "1", "k8s.mesosphere.io/taskId": "t",
                    "k8s.mesosphere.io/port_TCP_80": "31000", "k8s.mesosphere.io/roles": "*" } },
            "spec": { "nodeName": "n1", "containers": [{ "name": "c", "image": "i" }] },
            "status": { "phase": "Running" },
        }))
        .expect("pod");
        let c = copy_of(&pod, "q");
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "q", "namespace": "ns", "labels": { "app": "a" },
                    "annotations": { "keep": "1", "k8s.mesosphere.io/roles": "*" } },
                "spec": { "containers": [{ "name": "c", "image": "i" }] },
            })
        );
    }

    #[test]
    fn stand_in_names_stay_valid() {
        let n = stand_in_name("web");
        assert!(n.starts_with("web-restart-") && n.len() == "web-restart-".len() + 5, "{n}");
        let long = "a".repeat(253);
        let n = stand_in_name(&long);
        assert_eq!(n.len(), 253);
        let n = stand_in_name(&format!("{}-bc", "a".repeat(238)));
        assert!(!n.contains("--"), "{n}");
    }
}
