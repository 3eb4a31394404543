//! The decision of the ReplicaSet and ReplicationController controllers: from a workload and the
//! pods of its namespace, which pods to create, delete, adopt and release, and the status to
//! report. Pure: the caller passes the time and carries out the plan.
//!
//! A workload owns the active pods that name it as their controller and match its selector;
//! matching pods without a controller are adopted, owned pods that no longer match are
//! released. While earlier creations or deletions are not yet seen in the watch cache (the
//! *expectations* of [`Expectations`]), no pods are added or removed, so a slow watch never
//! leads to extra pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::pods;
use crate::selector::Selector;

/// Most pods created in one sync (Kubernetes' burst).
pub const BURST: usize = 500;

/// How long unmet expectations hold back a workload before they are given up on.
pub const EXPECTATIONS_TIMEOUT_SECONDS: i64 = 300;

/// What the decision needs to know of a ReplicaSet or ReplicationController.
#[derive(Clone, Debug)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub replicas: i32,
    pub min_ready_seconds: i64,
    pub selector: Selector,
    pub template_labels: BTreeMap<String, String>,
    /// Being deleted: it neither adopts nor manages pods.
    pub deleting: bool,
}

/// A pod to act on, by name and (as a precondition) uid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn of(p: &Pod) -> PodRef {
        PodRef {
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// The counts of a workload's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    pub delete: Vec<PodRef>,
    pub adopt: Vec<PodRef>,
    pub release: Vec<PodRef>,
    pub counts: Counts,
}

/// Pods a workload created or deleted and has not yet seen the watch cache reflect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Names of created pods not yet in the cache.
    pub creates: BTreeSet<String>,
    /// Uids of deleted pods still active in the cache.
    pub deletes: BTreeSet<String>,
    pub since: Option<Timestamp>,
}

impl Expectations {
    /// Forgets what the cache (`pods` of the namespace) now reflects; true when nothing is
    /// awaited any more, or the wait has outlasted [`EXPECTATIONS_TIMEOUT_SECONDS`].
    pub fn observe(&mut self, pods: &[&Pod], now: Timestamp) -> bool {
        if !self.creates.is_empty() {
            for p in pods {
                if let Some(n) = &p.metadata.name {
                    self.creates.remove(n);
                }
            }
        }
        if !self.deletes.is_empty() {
            let still: BTreeSet<&str> = pods
                .iter()
                .filter(|p| pods::is_active(p))
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            self.deletes.retain(|u| still.contains(u.as_str()));
        }
        let done = self.creates.is_empty() && self.deletes.is_empty();
        let expired = self
            .since
            .is_some_and(|s| now.as_second() - s.as_second() > EXPECTATIONS_TIMEOUT_SECONDS);
        if done || expired {
            *self = Expectations::default();
            return true;
        }
        false
    }
}

/// Decides for `w` given every pod of its namespace; `manage` is false while expectations are
/// unmet (the status is still computed).
pub fn plan(w: &Workload, namespace_pods: &[&Pod], manage: bool, now: Timestamp) -> Plan {
    let mut out = Plan::default();
    let mut owned: Vec<&Pod> = Vec::new();
    for p in namespace_pods {
        let labels = p.metadata.labels.as_ref();
        match pods::controller_of(&p.metadata) {
            Some(r) if r.uid == w.uid => {
                if w.selector.matches(labels) {
                    owned.push(p);
                } else if !w.deleting {
                    out.release.push(PodRef::of(p));
                }
            }
            Some(_) => {}
            None => {
                if !w.deleting && pods::is_active(p) && w.selector.matches(labels) {
                    out.adopt.push(PodRef::of(p));
                    owned.push(p);
                }
            }
        }
    }
    let mut active: Vec<&Pod> = owned.into_iter().filter(|p| pods::is_active(p)).collect();
    out.counts = counts(w, &active, now);
    if !manage || w.deleting {
        return out;
    }
    let want = usize::try_from(w.replicas.max(0)).unwrap_or(0);
    if active.len() < want {
        out.create = (want - active.len()).min(BURST);
    } else if active.len() > want {
        active.sort_by(|a, b| deletion_rank(a).cmp(&deletion_rank(b)));
        out.delete = active[..active.len() - want].iter().map(|p| PodRef::of(p)).collect();
    }
    out
}

fn counts(w: &Workload, active: &[&Pod], now: Timestamp) -> Counts {
    let mut c = Counts { replicas: len_i32(active.len()), ..Counts::default() };
    for p in active {
        let labels = p.metadata.labels.as_ref();
        if w.template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            c.fully_labeled += 1;
        }
        if pods::is_ready(p) {
            c.ready += 1;
        }
        if pods::is_available(p, w.min_ready_seconds, now) {
            c.available += 1;
        }
    }
    c
}

pub(crate) fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Which pods go first when there are too many: not yet on a node, then Pending before
/// Unknown before Running, not ready before ready, ready for less time before longer, more
/// restarts before fewer, newer before older.
fn deletion_rank(p: &Pod) -> impl Ord {
    let assigned =
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = pods::ready_since(p);
    // Later ready times and later creation go first: negate seconds so smaller sorts first.
    let ready_for = ready.map_or(0, |t| -t.as_second());
    let created = p.metadata.creation_timestamp.as_ref().map_or(0, |t| -t.0.as_second());
    (assigned, phase, ready.is_some(), ready_for, -i64::from(pods::restarts(p)), created)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload(replicas: i32) -> Workload {
        Workload {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "rs-uid".into(),
            replicas,
            min_ready_seconds: 0,
            selector: Selector::from_map(&[("app".to_owned(), "web".to_owned())].into()),
            template_labels: [("app".to_owned(), "web".to_owned())].into(),
            deleting: false,
        }
    }

    fn pod(name: &str, owner: Option<&str>, phase: &str, ready: bool, node: Option<&str>) -> Pod {
        let owners = owner.map(|uid| {
            json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true }])
        });
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "labels": { "app": "web" }, "ownerReferences": owners,
                "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": { "containers": [], "nodeName": node },
            "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-01-01T00:00:10Z" }] },
        }))
        .expect("pod")
    }

    fn now() -> Timestamp {
        "2026-01-01T00:01:00Z".parse().expect("time")
    }

    #[test]
    fn missing_replicas_are_created_up_to_the_burst() {
        let p = plan(&workload(3), &[], true, now());
        assert_eq!(p.create, 3);
        let p = plan(&workload(10_000), &[], true, now());
        assert_eq!(p.create, BURST);
    }

    #[test]
    fn surplus_pods_go_unscheduled_pending_and_unready_first() {
        let running = pod("running", Some("rs-uid"), "Running", true, Some("n1"));
        let unready = pod("unready", Some("rs-uid"), "Running", false, Some("n1"));
        let pending = pod("pending", Some("rs-uid"), "Pending", false, Some("n1"));
        let unscheduled = pod("unscheduled", Some("rs-uid"), "Pending", false, None);
        let all = [&running, &unready, &pending, &unscheduled];
        let names = |p: Plan| p.delete.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(plan(&workload(3), &all, true, now())), ["unscheduled"]);
        assert_eq!(
            names(plan(&workload(1), &all, true, now())),
            ["unscheduled", "pending", "unready"]
        );
        assert!(plan(&workload(4), &all, true, now()).delete.is_empty());
    }

    #[test]
    fn orphans_are_adopted_mismatches_released_and_others_left_alone() {
        let orphan = pod("orphan", None, "Running", true, Some("n1"));
        let mut stray = pod("stray", Some("rs-uid"), "Running", true, Some("n1"));
        stray.metadata.labels = Some([("app".to_owned(), "other".to_owned())].into());
        let foreign = pod("foreign", Some("other-uid"), "Running", true, Some("n1"));
        let finished = pod("finished", None, "Succeeded", false, Some("n1"));
        let p = plan(&workload(1), &[&orphan, &stray, &foreign, &finished], true, now());
        assert_eq!(p.adopt, [PodRef { name: "orphan".into(), uid: "uid-orphan".into() }]);
        assert_eq!(p.release, [PodRef { name: "stray".into(), uid: "uid-stray".into() }]);
        assert_eq!((p.create, p.delete.len()), (0, 0), "the orphan is the one replica");
        assert_eq!(p.counts, Counts { replicas: 1, fully_labeled: 1, ready: 1, available: 1 });
    }

    #[test]
    fn nothing_is_managed_while_expectations_are_unmet_but_status_is_counted() {
        let a = pod("a", Some("rs-uid"), "Running", true, Some("n1"));
        let p = plan(&workload(3), &[&a], false, now());
        assert_eq!(p.create, 0);
        assert_eq!(p.counts.replicas, 1);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let a = pod("a", Some("rs-uid"), "Running", true, Some("n1"));
        let mut w = workload(1);
        w.min_ready_seconds = 30;
        let early: Timestamp = "2026-01-01T00:00:20Z".parse().expect("time");
        assert_eq!(plan(&w, &[&a], true, early).counts.available, 0);
        assert_eq!(plan(&w, &[&a], true, now()).counts.available, 1);
    }

    #[test]
    fn expectations_hold_until_the_cache_shows_the_changes() {
        let mut e = Expectations {
            creates: ["web-x".to_owned()].into(),
            deletes: ["uid-a".to_owned()].into(),
            since: Some(now()),
        };
        let a = pod("a", Some("rs-uid"), "Running", true, Some("n1"));
        assert!(!e.observe(&[&a], now()), "neither seen yet");
        let x = pod("web-x", Some("rs-uid"), "Pending", false, None);
        assert!(!e.observe(&[&a, &x], now()), "the deletion is not seen yet");
        let mut gone = a.clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert!(e.observe(&[&gone, &x], now()));
        let mut stuck = Expectations {
            creates: ["never".to_owned()].into(),
            since: Some(now()),
            ..Default::default()
        };
        let later = Timestamp::from_second(now().as_second() + EXPECTATIONS_TIMEOUT_SECONDS + 1)
            .expect("time");
        assert!(stuck.observe(&[], later), "given up after the timeout");
    }

    proptest::proptest! {
        /// Whatever the pods, a managed plan lands on exactly `replicas` active pods.
        #[test]
        fn a_plan_reaches_the_wanted_count(replicas in 0i32..20, n in 0usize..30, seed in 0u64..1000) {
            let phases = ["Pending", "Running", "Unknown", "Succeeded", "Failed"];
            let pods: Vec<Pod> = (0..n).map(|i| {
                let h = seed.wrapping_mul(31).wrapping_add(i as u64);
                pod(&format!("p{i}"), Some("rs-uid"), phases[(h % 5) as usize], h % 2 == 0,
                    (h % 3 != 0).then_some("n1"))
            }).collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            let p = plan(&workload(replicas), &refs, true, now());
            let active = pods.iter().filter(|p| pods::is_active(p)).count();
            let after = active + p.create - p.delete.len();
            proptest::prop_assert_eq!(after, replicas as usize);
        }
    }
}
