//! The ReplicaSet, ReplicationController and Deployment controllers: each sync reads the cache,
//! asks the pure decision ([`crate::replicas`], [`crate::deployment`]) and carries it out.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::Ctx;
use crate::cache::Caches;
use crate::deployment::{self, Action};
use crate::pods;
use crate::queue;
use crate::replicas::{self, Counts, Workload};
use crate::selector::Selector;

/// Pod deletions one sync has in flight at once.
const DELETE_CONCURRENCY: usize = 64;

/// Why a sync failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Api { what, source }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// A controller reference to `owner`.
pub fn controller_ref<K: kube::Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What the replica controller needs of ReplicaSets and ReplicationControllers.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn store(c: &Caches) -> &Store<Self>;
    fn workload(&self) -> Result<Workload, String>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The status counts and observed generation last written.
    fn reported(&self) -> (Counts, Option<i64>);
}

/// A status as counts (ReplicaSets and ReplicationControllers name them alike).
fn reported(
    replicas: i32,
    [fully, ready, available]: [Option<i32>; 3],
    observed: Option<i64>,
) -> (Counts, Option<i64>) {
    let counts = Counts {
        replicas,
        fully_labeled: fully.unwrap_or(0),
        ready: ready.unwrap_or(0),
        available: available.unwrap_or(0),
    };
    (counts, observed)
}

fn workload_of(
    meta: &ObjectMeta,
    replicas: Option<i32>,
    min_ready: Option<i32>,
    selector: Selector,
    template: Option<&PodTemplateSpec>,
) -> Workload {
    Workload {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        replicas: replicas.unwrap_or(1),
        min_ready_seconds: i64::from(min_ready.unwrap_or(0)),
        selector,
        template_labels: template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

impl Replicated for ReplicaSet {
    fn store(c: &Caches) -> &Store<Self> {
        &c.replicasets
    }
    fn workload(&self) -> Result<Workload, String> {
        let selector =
            Selector::from_label_selector(&self.spec.selector).map_err(|e| e.to_string())?;
        Ok(workload_of(
            &self.metadata,
            self.spec.replicas,
            self.spec.min_ready_seconds,
            selector,
            self.spec.template.as_ref(),
        ))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }
    fn reported(&self) -> (Counts, Option<i64>) {
        self.status.as_ref().map_or((Counts::default(), None), |s| {
            reported(
                s.replicas,
                [s.fully_labeled_replicas, s.ready_replicas, s.available_replicas],
                s.observed_generation,
            )
        })
    }
}

impl Replicated for ReplicationController {
    fn store(c: &Caches) -> &Store<Self> {
        &c.controllers
    }
    fn workload(&self) -> Result<Workload, String> {
        let spec = self.spec.as_ref().ok_or("no spec")?;
        let template = spec.template.as_ref();
        // An RC without a selector selects its template's labels.
        let map = spec
            .selector
            .clone()
            .or_else(|| template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()))
            .unwrap_or_default();
        Ok(workload_of(
            &self.metadata,
            spec.replicas,
            spec.min_ready_seconds,
            Selector::from_map(&map),
            template,
        ))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn reported(&self) -> (Counts, Option<i64>) {
        self.status.as_ref().map_or((Counts::default(), None), |s| {
            reported(
                s.replicas,
                [s.fully_labeled_replicas, s.ready_replicas, s.available_replicas],
                s.observed_generation,
            )
        })
    }
}

/// A pod made from a workload's template.
pub(crate) fn pod_from(template: &PodTemplateSpec, owner: OwnerReference, namespace: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Syncs the ReplicaSet or ReplicationController `key`; returns when to look again.
pub async fn sync_replicated<K: Replicated>(
    ctx: &Ctx,
    key: &str,
) -> Result<Option<Duration>, SyncError> {
    let (ns, name) = queue::split(key);
    let ns = ns.unwrap_or("default");
    let Some(obj) = K::store(&ctx.caches).get(&ObjectRef::new(name).within(ns)) else {
        ctx.forget_expectations(key);
        return Ok(None);
    };
    let w = match obj.workload() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%key, "cannot manage: {e}");
            return Ok(None);
        }
    };
    let all = ctx.caches.pods_in(ns);
    let refs: Vec<&Pod> = all.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let manage = ctx.observe_expectations(key, &refs, now);
    let plan = replicas::plan(&w, &refs, manage, now);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref(obj.as_ref());
    if plan.create > 0 || !plan.delete.is_empty() || !manage {
        tracing::debug!(
            workload = %key,
            replicas = w.replicas,
            active = plan.counts.replicas,
            create = plan.create,
            delete = plan.delete.len(),
            waiting_for_the_cache = !manage,
            "replicas"
        );
    }

    for (pod_ref, adopt) in
        plan.adopt.iter().map(|p| (p, true)).chain(plan.release.iter().map(|p| (p, false)))
    {
        let Some(p) = all.iter().find(|p| p.metadata.uid.as_deref() == Some(pod_ref.uid.as_str()))
        else {
            continue;
        };
        let mut refs: Vec<OwnerReference> = p
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != w.uid)
            .collect();
        if adopt {
            refs.push(owner.clone());
        }
        let patch = json!({ "metadata": { "ownerReferences": refs } });
        match pods_api.patch(&pod_ref.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
            Err(e) => {
                return Err(api_err(format!(
                    "{} pod {}",
                    if adopt { "adopting" } else { "releasing" },
                    pod_ref.name
                ))(e));
            }
        }
    }

    let mut failure = None;
    if plan.create > 0
        && let Some(template) = obj.template()
    {
        ctx.expect(key, now, |e| e);
        // Slow start: 1, 2, 4, … pods at a time, stopping at the first failure.
        let (mut left, mut batch) = (plan.create, 1usize);
        while left > 0 && failure.is_none() {
            let n = batch.min(left);
            let creations = (0..n).map(|_| {
                let pod = pod_from(template, owner.clone(), ns);
                let api = pods_api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            });
            for result in futures::future::join_all(creations).await {
                match result {
                    Ok(created) => {
                        if let Some(n) = created.metadata.name {
                            ctx.expect(key, now, |mut e| {
                                e.creates.insert(n);
                                e
                            });
                        }
                    }
                    Err(e) => failure = Some(e),
                }
            }
            left -= n;
            batch = batch.saturating_mul(2);
        }
        ctx.metrics.pods_created(plan.create - left);
    }
    // Deletions go out together (each conditional on the pod's uid), as creations do.
    for victim in &plan.delete {
        ctx.expect(key, now, |mut e| {
            e.deletes.insert(victim.uid.clone());
            e
        });
    }
    let deletions: Vec<_> = plan
        .delete
        .iter()
        .map(|victim| {
            let api = pods_api.clone();
            let name = victim.name.clone();
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(victim.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            async move { api.delete(&name, &dp).await.map(|_| ()) }
        })
        .collect();
    let results: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(deletions),
        DELETE_CONCURRENCY,
    ))
    .await;
    for result in results {
        match result {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }

    let (reported, observed) = obj.reported();
    let generation = obj.meta().generation;
    if reported != plan.counts || observed != generation {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
        let status = json!({ "status": {
            "replicas": plan.counts.replicas,
            "fullyLabeledReplicas": plan.counts.fully_labeled,
            "readyReplicas": plan.counts.ready,
            "availableReplicas": plan.counts.available,
            "observedGeneration": generation,
        } });
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(api_err(format!("status of {key}"))(e)),
        }
    }
    if let Some(e) = failure {
        return Err(api_err(format!("managing the pods of {key}"))(e));
    }
    // Pods ready but not yet available for minReadySeconds: look again when they will be.
    Ok((plan.counts.ready > plan.counts.available && w.min_ready_seconds > 0)
        .then(|| Duration::from_secs(u64::try_from(w.min_ready_seconds).unwrap_or(1))))
}

/// The ReplicaSets a Deployment controls.
fn owned_replicasets(ctx: &Ctx, d: &Deployment) -> Vec<Arc<ReplicaSet>> {
    let uid = d.metadata.uid.as_deref();
    let ns = d.metadata.namespace.as_deref();
    ctx.caches.replicasets.state_filter(|rs| {
        rs.metadata.namespace.as_deref() == ns
            && pods::controller_of(&rs.metadata).map(|r| Some(r.uid.as_str())) == Some(uid)
    })
}

/// Syncs the Deployment `key`.
pub async fn sync_deployment(ctx: &Ctx, key: &str) -> Result<Option<Duration>, SyncError> {
    let (ns, name) = queue::split(key);
    let ns = ns.unwrap_or("default");
    let Some(d) = ctx.caches.deployments.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let owned = owned_replicasets(ctx, &d);
    let refs: Vec<&ReplicaSet> = owned.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let decision = match deployment::decide(&d, &refs, now) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%key, "cannot roll out: {e}");
            return Ok(None);
        }
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let replicas = d.spec.replicas.unwrap_or(1);
    let surge = match deployment::strategy(&d) {
        Ok(deployment::Strategy::Rolling { max_surge, .. }) => max_surge,
        _ => 0,
    };
    let sizes = json!({
        deployment::DESIRED_REPLICAS: replicas.to_string(),
        deployment::MAX_REPLICAS: replicas.saturating_add(surge).to_string(),
    });
    for action in &decision.actions {
        tracing::debug!(deployment = %key, ?action, "rollout step");
        let result = match action {
            Action::Create { name, template, replicas: n, revision } => {
                let mut annotations: BTreeMap<String, String> = BTreeMap::new();
                annotations.insert(deployment::REVISION.into(), revision.to_string());
                annotations.insert(deployment::DESIRED_REPLICAS.into(), replicas.to_string());
                annotations.insert(
                    deployment::MAX_REPLICAS.into(),
                    replicas.saturating_add(surge).to_string(),
                );
                if let Some(cause) =
                    d.metadata.annotations.as_ref().and_then(|a| a.get(deployment::CHANGE_CAUSE))
                {
                    annotations.insert(deployment::CHANGE_CAUSE.into(), cause.clone());
                }
                let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
                let mut selector: LabelSelector = d.spec.selector.clone();
                if let Some(hash) = labels.as_ref().and_then(|l| l.get(deployment::HASH_LABEL)) {
                    selector
                        .match_labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(deployment::HASH_LABEL.into(), hash.clone());
                }
                let rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.to_owned()),
                        labels,
                        annotations: Some(annotations),
                        owner_references: Some(vec![controller_ref(d.as_ref())]),
                        ..Default::default()
                    },
                    spec: ReplicaSetSpec {
                        replicas: Some(*n),
                        min_ready_seconds: d.spec.min_ready_seconds,
                        selector,
                        template: Some(template.clone()),
                    },
                    status: None,
                };
                match rs_api.create(&PostParams::default(), &rs).await {
                    Err(e) if is_code(&e, 409) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            Action::Scale { name, replicas: n } => {
                let patch =
                    json!({ "metadata": { "annotations": sizes }, "spec": { "replicas": n } });
                rs_api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
            Action::Revision { name, revision } => {
                let patch = json!({ "metadata": { "annotations": { deployment::REVISION: revision.to_string() } } });
                rs_api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
            Action::Delete { name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match rs_api.delete(name, &dp).await {
                    Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        };
        result.map_err(api_err(format!("rolling out {key}: {action:?}")))?;
    }
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(revision) = decision.revision {
        let patch = json!({ "metadata": { "annotations": { deployment::REVISION: revision.to_string() } } });
        d_api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("revision of {key}")))?;
    }
    if d.status.as_ref() != Some(&decision.status) {
        let patch = json!({ "status": decision.status });
        d_api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("status of {key}")))?;
    }
    let complete = decision.status.updated_replicas == Some(replicas)
        && decision.status.available_replicas == Some(replicas)
        && decision.status.replicas == Some(replicas);
    // An unfinished rollout is looked at again for its progress deadline.
    Ok((!complete && d.spec.progress_deadline_seconds.is_some()).then_some(Duration::from_secs(5)))
}
