//! The garbage collector, over ownerReferences between the kinds km's controllers manage
//! (Deployment → ReplicaSet → Pod, ReplicationController → Pod):
//! - background: a dependent all of whose owners are gone (by uid, confirmed with a live read,
//!   since the cache may lag) is deleted;
//! - foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted (foreground too), and loses the finalizer once none is left;
//! - orphan: an owner being deleted with the `orphan` finalizer has itself removed from its
//!   dependents' ownerReferences, then loses the finalizer.
//!
//! The decision ([`plan`]) is pure; [`collect`] reads the cache, confirms and acts.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use serde_json::json;

use crate::Ctx;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// The kinds the collector knows as owners and dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
    Pod,
}

impl Kind {
    fn of_owner(kind: &str, api_version: &str) -> Option<Kind> {
        match (kind, api_version) {
            ("Deployment", "apps/v1") => Some(Kind::Deployment),
            ("ReplicaSet", "apps/v1") => Some(Kind::ReplicaSet),
            ("ReplicationController", "v1") => Some(Kind::ReplicationController),
            ("Job", "batch/v1") => Some(Kind::Job),
            ("CronJob", "batch/v1") => Some(Kind::CronJob),
            _ => None,
        }
    }
}

/// An object as the collector sees it.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    pub kind: Kind,
    pub meta: &'a ObjectMeta,
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The owners of this dependent look gone: confirm, then delete it.
    DeleteOrphaned {
        kind: Kind,
        namespace: String,
        name: String,
        uid: String,
        owners: Vec<(Kind, String, String)>,
    },
    /// Delete a dependent of an owner deleted in the foreground.
    DeleteForeground { kind: Kind, namespace: String, name: String, uid: String },
    /// Remove `owner_uid` from a dependent's ownerReferences.
    Unlink { kind: Kind, namespace: String, name: String, owner_uid: String },
    /// Drop `finalizer` from an owner: its dependents are handled.
    Finalize { kind: Kind, namespace: String, name: String, finalizer: &'static str },
}

fn ident(n: &Node<'_>) -> (String, String, String) {
    (
        n.meta.namespace.clone().unwrap_or_default(),
        n.meta.name.clone().unwrap_or_default(),
        n.meta.uid.clone().unwrap_or_default(),
    )
}

/// What to do, from every object of the known kinds.
pub fn plan(objects: &[Node<'_>]) -> Vec<Step> {
    let by_uid: HashMap<&str, &Node<'_>> =
        objects.iter().filter_map(|n| n.meta.uid.as_deref().map(|u| (u, n))).collect();
    let mut dependents: HashMap<&str, Vec<&Node<'_>>> = HashMap::new();
    let mut steps = Vec::new();
    for n in objects {
        let refs = n.meta.owner_references.as_deref().unwrap_or_default();
        for r in refs {
            dependents.entry(r.uid.as_str()).or_default().push(n);
        }
        // Owners of kinds not watched here are assumed to exist.
        let known: Vec<(Kind, String, String)> = refs
            .iter()
            .filter_map(|r| {
                Kind::of_owner(&r.kind, &r.api_version).map(|k| (k, r.name.clone(), r.uid.clone()))
            })
            .collect();
        if !refs.is_empty()
            && known.len() == refs.len()
            && known.iter().all(|(_, _, uid)| !by_uid.contains_key(uid.as_str()))
            && n.meta.deletion_timestamp.is_none()
        {
            let (namespace, name, uid) = ident(n);
            steps.push(Step::DeleteOrphaned { kind: n.kind, namespace, name, uid, owners: known });
        }
    }
    for owner in objects.iter().filter(|n| n.meta.deletion_timestamp.is_some()) {
        let finalizers = owner.meta.finalizers.as_deref().unwrap_or_default();
        let uid = owner.meta.uid.as_deref().unwrap_or_default();
        let deps = dependents.get(uid).cloned().unwrap_or_default();
        let (namespace, name, _) = ident(owner);
        if finalizers.iter().any(|f| f == ORPHAN) {
            for d in &deps {
                let (ns, n, _) = ident(d);
                steps.push(Step::Unlink {
                    kind: d.kind,
                    namespace: ns,
                    name: n,
                    owner_uid: uid.to_owned(),
                });
            }
            if deps.is_empty() {
                steps.push(Step::Finalize {
                    kind: owner.kind,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    finalizer: ORPHAN,
                });
            }
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            for d in deps.iter().filter(|d| d.meta.deletion_timestamp.is_none()) {
                let (ns, n, u) = ident(d);
                steps.push(Step::DeleteForeground { kind: d.kind, namespace: ns, name: n, uid: u });
            }
            if deps.is_empty() {
                steps.push(Step::Finalize {
                    kind: owner.kind,
                    namespace,
                    name,
                    finalizer: FOREGROUND,
                });
            }
        }
    }
    steps
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The API of `kind` in `namespace`, untyped: the collector reads and writes only metadata.
fn api(ctx: &Ctx, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    let resource = match kind {
        Kind::Deployment => ApiResource::erase::<Deployment>(&()),
        Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
        Kind::ReplicationController => ApiResource::erase::<ReplicationController>(&()),
        Kind::Job => ApiResource::erase::<Job>(&()),
        Kind::CronJob => ApiResource::erase::<CronJob>(&()),
        Kind::Pod => ApiResource::erase::<Pod>(&()),
    };
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

/// Whether the owner (kind, name, uid) in `namespace` is gone, by a live read.
async fn gone(
    ctx: &Ctx,
    namespace: &str,
    kind: Kind,
    name: &str,
    uid: &str,
) -> Result<bool, kube::Error> {
    let meta = api(ctx, kind, namespace).get_opt(name).await?.map(|o| o.metadata);
    Ok(meta.is_none_or(|m| m.uid.as_deref() != Some(uid)))
}

async fn delete(
    ctx: &Ctx,
    kind: Kind,
    namespace: &str,
    name: &str,
    uid: &str,
    policy: PropagationPolicy,
) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
        propagation_policy: Some(policy),
        ..Default::default()
    };
    match api(ctx, kind, namespace).delete(name, &dp).await {
        Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
        other => other.map(|_| ()),
    }
}

async fn patch_meta(
    ctx: &Ctx,
    kind: Kind,
    namespace: &str,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let result = api(ctx, kind, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ());
    match result {
        Err(e) if is_code(&e, 404) => Ok(()),
        other => other,
    }
}

/// The object of `kind` named `namespace/name` among `objects`.
fn find<'a>(
    objects: &'a [Node<'a>],
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Option<&'a Node<'a>> {
    objects.iter().find(|o| {
        o.kind == kind
            && o.meta.namespace.as_deref() == Some(namespace)
            && o.meta.name.as_deref() == Some(name)
    })
}

/// One pass of the collector over the cache.
pub async fn collect(ctx: &Ctx) -> Result<usize, kube::Error> {
    let c = &ctx.caches;
    let cronjobs = c.cronjobs.state();
    let (deployments, replicasets, controllers, pods, jobs) = (
        c.deployments.state(),
        c.replicasets.state(),
        c.controllers.state(),
        c.pods.state(),
        c.jobs.state(),
    );
    let mut objects: Vec<Node<'_>> = Vec::new();
    objects.extend(deployments.iter().map(|o| Node { kind: Kind::Deployment, meta: &o.metadata }));
    objects.extend(replicasets.iter().map(|o| Node { kind: Kind::ReplicaSet, meta: &o.metadata }));
    objects.extend(
        controllers.iter().map(|o| Node { kind: Kind::ReplicationController, meta: &o.metadata }),
    );
    objects.extend(jobs.iter().map(|o| Node { kind: Kind::Job, meta: &o.metadata }));
    objects.extend(cronjobs.iter().map(|o| Node { kind: Kind::CronJob, meta: &o.metadata }));
    objects.extend(pods.iter().map(|o| Node { kind: Kind::Pod, meta: &o.metadata }));
    let steps = plan(&objects);
    let mut done = 0;
    for step in steps {
        match step {
            Step::DeleteOrphaned { kind, namespace, name, uid, owners } => {
                let mut all_gone = true;
                for (k, n, u) in &owners {
                    if !gone(ctx, &namespace, *k, n, u).await? {
                        all_gone = false;
                        break;
                    }
                }
                if all_gone {
                    tracing::info!(?kind, %namespace, %name, "deleting: its owners are gone");
                    delete(ctx, kind, &namespace, &name, &uid, PropagationPolicy::Background)
                        .await?;
                    done += 1;
                }
            }
            Step::DeleteForeground { kind, namespace, name, uid } => {
                delete(ctx, kind, &namespace, &name, &uid, PropagationPolicy::Foreground).await?;
                done += 1;
            }
            Step::Unlink { kind, namespace, name, owner_uid } => {
                if let Some(o) = find(&objects, kind, &namespace, &name) {
                    let refs: Vec<_> = o
                        .meta
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| r.uid != owner_uid)
                        .collect();
                    patch_meta(
                        ctx,
                        kind,
                        &namespace,
                        &name,
                        json!({ "metadata": { "ownerReferences": refs } }),
                    )
                    .await?;
                    done += 1;
                }
            }
            Step::Finalize { kind, namespace, name, finalizer } => {
                if let Some(o) = find(&objects, kind, &namespace, &name) {
                    let rest: Vec<String> = o
                        .meta
                        .finalizers
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| f != finalizer)
                        .collect();
                    patch_meta(
                        ctx,
                        kind,
                        &namespace,
                        &name,
                        json!({ "metadata": { "finalizers": rest } }),
                    )
                    .await?;
                    done += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn meta(
        name: &str,
        owner: Option<(&str, &str)>,
        finalizers: &[&str],
        deleting: bool,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            owner_references: owner.map(|(kind, owner)| {
                vec![OwnerReference {
                    api_version: if kind == "ReplicationController" {
                        "v1".into()
                    } else {
                        "apps/v1".into()
                    },
                    kind: kind.into(),
                    name: owner.into(),
                    uid: format!("uid-{owner}"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| (*f).to_owned()).collect()),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    #[test]
    fn dependents_of_vanished_owners_are_collected_and_others_kept() {
        let rs = meta("web-1", Some(("Deployment", "web")), &[], false);
        let pod = meta("web-1-a", Some(("ReplicaSet", "web-1")), &[], false);
        let foreign = ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "example.com/v1".into(),
                kind: "Widget".into(),
                name: "j".into(),
                uid: "uid-j".into(),
                ..Default::default()
            }]),
            ..meta("job-pod", None, &[], false)
        };
        let objects = [
            Node { kind: Kind::ReplicaSet, meta: &rs },
            Node { kind: Kind::Pod, meta: &pod },
            Node { kind: Kind::Pod, meta: &foreign },
        ];
        // The Deployment is gone: its ReplicaSet goes; the pod's owner is still there.
        let steps = plan(&objects);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(matches!(&steps[0], Step::DeleteOrphaned { name, .. } if name == "web-1"));
    }

    #[test]
    fn foreground_deletion_waits_for_the_dependents_and_orphaning_unlinks_them() {
        let d = meta("web", None, &[FOREGROUND], true);
        let rs = meta("web-1", Some(("Deployment", "web")), &[], false);
        let steps = plan(&[
            Node { kind: Kind::Deployment, meta: &d },
            Node { kind: Kind::ReplicaSet, meta: &rs },
        ]);
        assert_eq!(
            steps,
            [Step::DeleteForeground {
                kind: Kind::ReplicaSet,
                namespace: "ns".into(),
                name: "web-1".into(),
                uid: "uid-web-1".into()
            }]
        );
        let steps = plan(&[Node { kind: Kind::Deployment, meta: &d }]);
        assert_eq!(
            steps,
            [Step::Finalize {
                kind: Kind::Deployment,
                namespace: "ns".into(),
                name: "web".into(),
                finalizer: FOREGROUND
            }]
        );
        let rc = meta("rc", None, &[ORPHAN], true);
        let pod = meta("rc-a", Some(("ReplicationController", "rc")), &[], false);
        let steps = plan(&[
            Node { kind: Kind::ReplicationController, meta: &rc },
            Node { kind: Kind::Pod, meta: &pod },
        ]);
        assert_eq!(
            steps,
            [Step::Unlink {
                kind: Kind::Pod,
                namespace: "ns".into(),
                name: "rc-a".into(),
                owner_uid: "uid-rc".into()
            }]
        );
    }
}
