//! The decision of the Deployment controller: from a Deployment and the ReplicaSets it owns,
//! what to create, scale and delete next, and the status to report. Pure; each sync takes one
//! step and the next sync (on the ReplicaSets' status changes) takes the following one.
//!
//! - The *new* ReplicaSet is the one whose template is the Deployment's: it carries the
//!   template's hash as the `pod-template-hash` label (and in its name), or, failing that, has
//!   the same template but for that label — which is how `kubectl rollout undo` (copying an old
//!   ReplicaSet's template back) makes an old ReplicaSet new again.
//! - Revisions: the new ReplicaSet's `deployment.kubernetes.io/revision` is one more than any
//!   old one's; the Deployment carries the same annotation.
//! - RollingUpdate: the new ReplicaSet grows while the total stays within replicas + maxSurge;
//!   old ReplicaSets shrink (their unavailable pods first) while at least replicas −
//!   maxUnavailable pods stay available. Recreate: old ReplicaSets go to zero, and only once
//!   their pods are gone does the new one scale up.
//! - Old ReplicaSets at zero beyond `revisionHistoryLimit` are deleted, oldest first, once the
//!   rollout is complete.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// One step of a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the new ReplicaSet `name` with `template` (hash label included).
    Create { name: String, template: PodTemplateSpec, replicas: i32, revision: i64 },
    /// Set a ReplicaSet's replicas.
    Scale { name: String, replicas: i32 },
    /// Raise a ReplicaSet's revision (an old template made new again).
    Revision { name: String, revision: i64 },
    /// Delete an old ReplicaSet beyond the history limit.
    Delete { name: String, uid: String },
}

/// What to do and what to report.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: DeploymentStatus,
    /// The Deployment's revision annotation, when it should change.
    pub revision: Option<i64>,
}

/// The rollout strategy with its fence posts resolved against the replica count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    Rolling { max_surge: i32, max_unavailable: i32 },
}

/// A Deployment's strategy: RollingUpdate (maxSurge rounds up, maxUnavailable down, 25% each
/// by default; never both zero) or Recreate.
pub fn strategy(d: &Deployment) -> Result<Strategy, String> {
    let replicas = count(d.spec.replicas.unwrap_or(1));
    let st = d.spec.strategy.as_ref();
    if st.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Ok(Strategy::Recreate);
    }
    let ru = st.and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = fence(ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter), replicas, true)?;
    let mut unavailable =
        fence(ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&quarter), replicas, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok(Strategy::Rolling {
        max_surge: surge.min(COUNT_LIMIT),
        max_unavailable: unavailable.min(replicas),
    })
}

fn fence(v: &IntOrString, replicas: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) if *n >= 0 => Ok(*n),
        IntOrString::Int(n) => Err(format!("a negative rollout fence post: {n}")),
        IntOrString::String(s) => {
            let pct: i64 =
                s.strip_suffix('%').and_then(|p| p.parse().ok()).filter(|p| *p >= 0).ok_or_else(
                    || format!("invalid rollout fence post {s:?} (an integer or a percentage)"),
                )?;
            let scaled = pct.saturating_mul(i64::from(replicas));
            let v = if round_up { scaled.saturating_add(99) / 100 } else { scaled / 100 };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// The hash of a pod template: its `pod-template-hash` label value and name suffix.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    use sha2::{Digest as _, Sha256};
    // serde_json's maps are ordered by key, so the encoding is canonical.
    let canonical = serde_json::to_vec(&without_hash(template)).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    // Kubernetes' alphabet for generated names: no vowels, no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest.iter().take(10).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// A template as JSON without the hash label, and without empty label, annotation and node
/// selector maps: as Kubernetes compares templates, an empty map is no map (a template whose
/// last annotation was patched away equals the one that never had any).
fn without_hash(template: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
    }
    for (parent, key) in
        [("/metadata", "labels"), ("/metadata", "annotations"), ("/spec", "nodeSelector")]
    {
        if let Some(obj) = v.pointer_mut(parent).and_then(Value::as_object_mut)
            && obj.get(key).is_some_and(|m| m.as_object().is_some_and(serde_json::Map::is_empty))
        {
            obj.remove(key);
        }
    }
    v
}

/// The template of a Deployment's new ReplicaSet: the Deployment's, labelled with its hash.
pub fn new_template(d: &Deployment) -> (PodTemplateSpec, String) {
    let mut t = d.spec.template.clone();
    let hash = template_hash(&t);
    t.metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.clone());
    (t, hash)
}

pub fn revision_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Replica counts are taken within [0, 2^24] (the objects come from the API, and counts are
/// summed), so the rollout arithmetic cannot overflow.
const COUNT_LIMIT: i32 = 1 << 24;

fn count(n: i32) -> i32 {
    n.clamp(0, COUNT_LIMIT)
}

fn sum(counts: impl Iterator<Item = i32>) -> i32 {
    counts.fold(0, i32::saturating_add)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    count(rs.spec.replicas.unwrap_or(0))
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            count(s.replicas),
            count(s.ready_replicas.unwrap_or(0)),
            count(s.available_replicas.unwrap_or(0)),
        )
    })
}

fn name_of(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

/// Decides the next step for `d` given the ReplicaSets it controls.
pub fn decide(d: &Deployment, owned: &[&ReplicaSet], now: Timestamp) -> Result<Decision, String> {
    let spec = &d.spec;
    let replicas = count(spec.replicas.unwrap_or(1));
    let strategy = strategy(d)?;
    let dname = d.metadata.name.clone().unwrap_or_default();
    let (template, hash) = new_template(d);
    let wanted = without_hash(&template);
    let is_new = |rs: &ReplicaSet| {
        let labelled = rs
            .spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(HASH_LABEL));
        labelled == Some(&hash)
            || rs.spec.template.as_ref().is_some_and(|t| without_hash(t) == wanted)
    };
    let new = owned.iter().copied().find(|rs| is_new(rs));
    let mut olds: Vec<&ReplicaSet> = owned
        .iter()
        .copied()
        .filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .collect();
    olds.sort_by_key(|rs| (rs.metadata.creation_timestamp.as_ref().map(|t| t.0), name_of(rs)));
    let max_old = olds.iter().map(|rs| revision_of(&rs.metadata)).max().unwrap_or(0);

    let mut actions = Vec::new();
    // Replica counts as they will be once this step's scaling is done.
    let mut specs: BTreeMap<String, i32> =
        owned.iter().map(|rs| (name_of(rs), spec_replicas(rs))).collect();
    let scale =
        |actions: &mut Vec<Action>, specs: &mut BTreeMap<String, i32>, name: &str, to: i32| {
            if specs.get(name) != Some(&to) {
                specs.insert(name.to_owned(), to);
                actions.push(Action::Scale { name: name.to_owned(), replicas: to });
            }
        };
    let mut revision = new.map(|n| revision_of(&n.metadata));
    let mut created = None;
    let paused = spec.paused == Some(true);
    if !paused {
        if let Some(n) = new
            && revision_of(&n.metadata) <= max_old
        {
            actions
                .push(Action::Revision { name: name_of(n), revision: max_old.saturating_add(1) });
            revision = Some(max_old.saturating_add(1));
        }
        match strategy {
            Strategy::Rolling { max_surge, max_unavailable } => {
                let total = sum(specs.values().copied());
                let max_total = replicas.saturating_add(max_surge);
                match new {
                    None => {
                        let grow = (max_total - total).clamp(0, replicas);
                        let name = format!("{dname}-{hash}");
                        actions.push(Action::Create {
                            name: name.clone(),
                            template: template.clone(),
                            replicas: grow,
                            revision: max_old.saturating_add(1),
                        });
                        specs.insert(name.clone(), grow);
                        revision = Some(max_old.saturating_add(1));
                        created = Some(name);
                    }
                    Some(n) => {
                        let name = name_of(n);
                        let current = specs.get(&name).copied().unwrap_or(0);
                        if current > replicas {
                            scale(&mut actions, &mut specs, &name, replicas);
                        } else if current < replicas && total < max_total {
                            let grow = (max_total - total).min(replicas - current);
                            scale(&mut actions, &mut specs, &name, current + grow);
                        }
                    }
                }
                // Old ReplicaSets shrink while enough pods stay available.
                let all = sum(specs.values().copied());
                let min_available = replicas - max_unavailable;
                let new_unavailable = new.map_or(0, |n| {
                    let spec = specs.get(&name_of(n)).copied().unwrap_or(0);
                    (spec - status_of(n).2).max(0)
                });
                let mut budget = all - min_available - new_unavailable;
                if budget > 0 {
                    // First the old pods that are not available anyway.
                    for rs in &olds {
                        let name = name_of(rs);
                        let spec = specs.get(&name).copied().unwrap_or(0);
                        let unhealthy = (spec - status_of(rs).2).max(0);
                        let down = unhealthy.min(budget);
                        if down > 0 {
                            scale(&mut actions, &mut specs, &name, spec - down);
                            budget -= down;
                        }
                    }
                    // Then available ones, down to the minimum.
                    let available = sum(owned.iter().map(|rs| status_of(rs).2));
                    let mut excess = (available - min_available).min(budget);
                    for rs in &olds {
                        if excess <= 0 {
                            break;
                        }
                        let name = name_of(rs);
                        let spec = specs.get(&name).copied().unwrap_or(0);
                        let down = spec.min(excess);
                        if down > 0 {
                            scale(&mut actions, &mut specs, &name, spec - down);
                            excess -= down;
                        }
                    }
                }
            }
            Strategy::Recreate => {
                for rs in &olds {
                    scale(&mut actions, &mut specs, &name_of(rs), 0);
                }
                let old_pods = sum(olds.iter().map(|rs| status_of(rs).0));
                if actions.iter().all(|a| matches!(a, Action::Revision { .. })) && old_pods == 0 {
                    match new {
                        None => {
                            let name = format!("{dname}-{hash}");
                            actions.push(Action::Create {
                                name: name.clone(),
                                template: template.clone(),
                                replicas,
                                revision: max_old.saturating_add(1),
                            });
                            revision = Some(max_old.saturating_add(1));
                            created = Some(name);
                        }
                        Some(n) => scale(&mut actions, &mut specs, &name_of(n), replicas),
                    }
                }
            }
        }
    }

    let status =
        status(d, new, owned, replicas, strategy, created.as_deref(), !actions.is_empty(), now);
    let complete = status.updated_replicas == Some(replicas)
        && status.replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
        && new.is_some();
    if complete && !paused {
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let cleanable: Vec<&&ReplicaSet> = olds
            .iter()
            .filter(|rs| {
                rs.metadata.deletion_timestamp.is_none()
                    && specs.get(&name_of(rs)).copied().unwrap_or(0) == 0
                    && status_of(rs).0 == 0
            })
            .collect();
        if cleanable.len() > limit {
            for rs in &cleanable[..cleanable.len() - limit] {
                actions.push(Action::Delete {
                    name: name_of(rs),
                    uid: rs.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
    }
    let current = revision_of(&d.metadata);
    Ok(Decision { actions, status, revision: revision.filter(|r| *r != current && *r > 0) })
}

#[allow(clippy::too_many_arguments)]
fn status(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    owned: &[&ReplicaSet],
    replicas: i32,
    strategy: Strategy,
    created: Option<&str>,
    progressed: bool,
    now: Timestamp,
) -> DeploymentStatus {
    let (mut total, mut ready, mut available) = (0, 0, 0);
    for rs in owned {
        let (t, r, a) = status_of(rs);
        total = i32::saturating_add(total, t);
        ready = i32::saturating_add(ready, r);
        available = i32::saturating_add(available, a);
    }
    let updated = new.map_or(0, |n| status_of(n).0);
    let max_unavailable = match strategy {
        Strategy::Rolling { max_unavailable, .. } => max_unavailable,
        Strategy::Recreate => 0,
    };
    let old = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut conditions = Vec::new();
    let (avail_status, avail_reason, avail_message) = if available >= replicas - max_unavailable {
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    } else {
        ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    };
    conditions.push(condition(
        &old,
        "Available",
        avail_status,
        avail_reason,
        avail_message.into(),
        false,
        now,
    ));
    let new_name = new.map(name_of).or(created.map(str::to_owned)).unwrap_or_default();
    let complete =
        updated == replicas && total == replicas && available == replicas && new.is_some();
    let paused = d.spec.paused == Some(true);
    let (reason, message) = if paused {
        ("DeploymentPaused", "Deployment is paused".to_owned())
    } else if complete {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if created.is_some() {
        ("NewReplicaSetCreated", format!("Created new replica set \"{new_name}\""))
    } else {
        ("ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."))
    };
    let mut progressing = condition(&old, "Progressing", "True", reason, message, progressed, now);
    // No progress for longer than the deadline: the rollout is reported stuck.
    if let Some(deadline) = d.spec.progress_deadline_seconds
        && !complete
        && !paused
        && !progressed
        && let Some(last) = progressing.last_update_time.as_ref()
        && now.as_second() - last.0.as_second() > i64::from(deadline)
    {
        progressing = condition(
            &old,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            false,
            now,
        );
    }
    conditions.push(progressing);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(conditions),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        terminating_replicas: None,
    }
}

/// A condition, keeping the previous one's times when nothing about it changed.
fn condition(
    old: &[DeploymentCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    touched: bool,
    now: Timestamp,
) -> DeploymentCondition {
    let prev = old.iter().find(|c| c.type_.as_deref() == Some(type_));
    let same = prev.is_some_and(|p| {
        p.status.as_deref() == Some(status)
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(message.as_str())
    });
    let transition = match prev {
        Some(p) if p.status.as_deref() == Some(status) => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    let update = if same && !touched {
        prev.and_then(|p| p.last_update_time.clone())
    } else {
        Some(Time(now))
    };
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition.or(Some(Time(now))),
        last_update_time: update.or(Some(Time(now))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: i32, strategy: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns", "uid": "d-uid", "generation": 2 },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": strategy,
                "template": { "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "c", "image": "v2" }] } },
            },
        }))
        .expect("deployment")
    }

    fn rs(
        name: &str,
        template_image: &str,
        hash: Option<&str>,
        spec: i32,
        status: (i32, i32),
        revision: i64,
        age: i64,
    ) -> ReplicaSet {
        let mut labels = json!({ "app": "web" });
        if let Some(h) = hash {
            labels[HASH_LABEL] = json!(h);
        }
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "annotations": { REVISION: revision.to_string() },
                "creationTimestamp": Timestamp::from_second(1_700_000_000 + age).expect("t").to_string() },
            "spec": { "replicas": spec, "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": labels },
                    "spec": { "containers": [{ "name": "c", "image": template_image }] } } },
            "status": { "replicas": status.0, "readyReplicas": status.1, "availableReplicas": status.1 },
        }))
        .expect("replicaset")
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("t")
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": surge, "maxUnavailable": unavailable } })
    }

    #[test]
    fn fence_posts_round_as_kubernetes_does() {
        let s = |surge: Value, un: Value, n| {
            strategy(&deployment(n, rolling(surge, un))).expect("valid")
        };
        assert_eq!(
            s(json!("25%"), json!("25%"), 10),
            Strategy::Rolling { max_surge: 3, max_unavailable: 2 }
        );
        assert_eq!(
            s(json!(0), json!(0), 10),
            Strategy::Rolling { max_surge: 0, max_unavailable: 1 }
        );
        assert_eq!(
            s(json!(1), json!(20), 3),
            Strategy::Rolling { max_surge: 1, max_unavailable: 3 }
        );
        assert!(strategy(&deployment(3, rolling(json!("x%"), json!(1)))).is_err());
        assert_eq!(strategy(&deployment(3, json!({ "type": "Recreate" }))), Ok(Strategy::Recreate));
    }

    #[test]
    fn a_first_rollout_creates_the_new_replicaset_within_the_surge() {
        let d = deployment(4, rolling(json!(1), json!(0)));
        let out = decide(&d, &[], now()).expect("decide");
        let (_, hash) = new_template(&d);
        match &out.actions[..] {
            [Action::Create { name, replicas, revision, template }] => {
                assert_eq!(name, &format!("web-{hash}"));
                assert_eq!((*replicas, *revision), (4, 1));
                assert_eq!(
                    template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.as_ref())
                        .and_then(|l| l.get(HASH_LABEL)),
                    Some(&hash)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out.revision, Some(1));
    }

    /// Drives a rollout step by step, the ReplicaSets' pods becoming available at once, and
    /// checks the fence posts at every step: never more than replicas + surge pods, never fewer
    /// than replicas − unavailable available.
    #[test]
    fn a_rolling_update_keeps_within_its_fence_posts_to_the_end() {
        for (replicas, surge, unavailable) in [(10, 3, 2), (5, 0, 1), (3, 1, 0), (1, 1, 1)] {
            let d = deployment(replicas, rolling(json!(surge), json!(unavailable)));
            let (_, hash) = new_template(&d);
            let mut sets =
                vec![rs("web-old", "v1", Some("old"), replicas, (replicas, replicas), 1, 0)];
            for step in 0..50 {
                let refs: Vec<&ReplicaSet> = sets.iter().collect();
                let out = decide(&d, &refs, now()).expect("decide");
                if out.actions.is_empty() {
                    break;
                }
                assert!(step < 49, "the rollout does not converge");
                for a in out.actions {
                    match a {
                        Action::Create { name, replicas: n, revision, .. } => {
                            assert_eq!(revision, 2);
                            sets.push(rs(&name, "v2", Some(&hash), n, (0, 0), revision, 10));
                        }
                        Action::Scale { name, replicas: n } => {
                            let s = sets.iter_mut().find(|s| name_of(s) == name).expect("known");
                            s.spec.replicas = Some(n);
                        }
                        Action::Delete { name, .. } => sets.retain(|s| name_of(s) != name),
                        Action::Revision { .. } => {}
                    }
                }
                let total: i32 = sets.iter().map(spec_replicas).sum();
                assert!(total <= replicas + surge, "{total} pods over the surge");
                // Scale-downs take effect at once; new pods become available only now.
                let available: i32 =
                    sets.iter().map(|s| spec_replicas(s).min(status_of(s).2)).sum();
                assert!(
                    available >= replicas - unavailable.max(if surge == 0 { 1 } else { 0 }),
                    "{available} available"
                );
                for s in &mut sets {
                    let n = spec_replicas(s);
                    s.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                        replicas: n,
                        ready_replicas: Some(n),
                        available_replicas: Some(n),
                        ..Default::default()
                    });
                }
            }
            let new = sets.iter().find(|s| name_of(s).ends_with(&hash)).expect("new");
            assert_eq!(spec_replicas(new), replicas);
            assert!(
                sets.iter().filter(|s| !name_of(s).ends_with(&hash)).all(|s| spec_replicas(s) == 0)
            );
            let refs: Vec<&ReplicaSet> = sets.iter().collect();
            let done = decide(&d, &refs, now()).expect("decide");
            let progressing = done
                .status
                .conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Progressing")))
                .expect("cond");
            assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
        }
    }

    #[test]
    fn out_of_range_counts_and_fence_posts_do_not_overflow() {
        let d = deployment(i32::MAX, rolling(json!("9223372036854775807%"), json!(i32::MAX)));
        let mut broken =
            rs("web-old", "v1", Some("old"), i32::MAX, (i32::MAX, i32::MAX), i64::MAX, 0);
        let other = rs("web-older", "v0", Some("older"), i32::MAX, (0, 0), 1, 0);
        let out = decide(&d, &[&broken, &other], now()).expect("decide");
        assert!(out.status.replicas.is_some_and(|r| r >= 0));
        broken.status.as_mut().expect("status").replicas = i32::MIN;
        assert!(decide(&d, &[&broken, &other], now()).is_ok());
    }

    #[test]
    fn recreate_empties_the_old_replicasets_before_the_new_one_starts() {
        let d = deployment(3, json!({ "type": "Recreate" }));
        let old = rs("web-old", "v1", Some("old"), 3, (3, 3), 1, 0);
        let out = decide(&d, &[&old], now()).expect("decide");
        assert_eq!(out.actions, [Action::Scale { name: "web-old".into(), replicas: 0 }]);
        let draining = rs("web-old", "v1", Some("old"), 0, (2, 0), 1, 0);
        assert!(
            decide(&d, &[&draining], now()).expect("decide").actions.is_empty(),
            "waits for the old pods"
        );
        let gone = rs("web-old", "v1", Some("old"), 0, (0, 0), 1, 0);
        let out = decide(&d, &[&gone], now()).expect("decide");
        assert!(
            matches!(&out.actions[..], [Action::Create { replicas: 3, revision: 2, .. }]),
            "{:?}",
            out.actions
        );
    }

    #[test]
    fn an_old_template_made_current_again_gets_the_next_revision() {
        // `kubectl rollout undo`: the Deployment's template is v1 again, whose ReplicaSet exists
        // (revision 1) beside v2's (revision 2).
        let mut d = deployment(2, rolling(json!(1), json!(0)));
        d.spec.template.spec.as_mut().expect("pod").containers[0].image = Some("v1".into());
        let (_, hash) = new_template(&d);
        let v1 = rs(&format!("web-{hash}"), "v1", Some(&hash), 0, (0, 0), 1, 0);
        let v2 = rs("web-v2", "v2", Some("v2hash"), 2, (2, 2), 2, 10);
        let out = decide(&d, &[&v1, &v2], now()).expect("decide");
        assert!(
            out.actions.contains(&Action::Revision { name: format!("web-{hash}"), revision: 3 })
        );
        assert!(out.actions.contains(&Action::Scale { name: format!("web-{hash}"), replicas: 1 }));
        assert_eq!(out.revision, Some(3));
        // An emptied annotations map is no map: the template is that of v1 still.
        let mut emptied = d.clone();
        emptied.spec.template.metadata.get_or_insert_default().annotations =
            Some(Default::default());
        assert_eq!(new_template(&emptied).1, new_template(&d).1);
        // A template equal but for the hash label (written by a different hasher) is new too.
        let foreign = rs("web-foreign", "v1", Some("other"), 2, (2, 2), 4, 0);
        let out = decide(&d, &[&foreign, &v2], now()).expect("decide");
        assert!(
            !out.actions.iter().any(|a| matches!(a, Action::Create { .. })),
            "{:?}",
            out.actions
        );
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_once_complete() {
        let mut d = deployment(1, rolling(json!(1), json!(0)));
        d.spec.revision_history_limit = Some(1);
        let (_, hash) = new_template(&d);
        let new = rs(&format!("web-{hash}"), "v2", Some(&hash), 1, (1, 1), 3, 30);
        let a = rs("web-a", "v0", Some("a"), 0, (0, 0), 1, 0);
        let b = rs("web-b", "v1", Some("b"), 0, (0, 0), 2, 10);
        let out = decide(&d, &[&new, &a, &b], now()).expect("decide");
        assert_eq!(out.actions, [Action::Delete { name: "web-a".into(), uid: "uid-web-a".into() }]);
    }

    #[test]
    fn a_stalled_rollout_passes_its_progress_deadline() {
        let mut d = deployment(2, rolling(json!(1), json!(0)));
        d.spec.progress_deadline_seconds = Some(60);
        let (_, hash) = new_template(&d);
        // The new pods never become available: nothing more can be done.
        let new = rs(&format!("web-{hash}"), "v2", Some(&hash), 1, (1, 0), 2, 30);
        let old = rs("web-old", "v1", Some("old"), 2, (2, 2), 1, 0);
        let first = decide(&d, &[&new, &old], now()).expect("decide");
        assert!(first.actions.is_empty(), "{:?}", first.actions);
        d.status = Some(first.status);
        let later = Timestamp::from_second(now().as_second() + 61).expect("t");
        let stuck = decide(&d, &[&new, &old], later).expect("decide");
        let p = stuck
            .status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Progressing")))
            .expect("cond");
        assert_eq!(
            (p.status.as_deref(), p.reason.as_deref()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
    }
}
