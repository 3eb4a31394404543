//! The Job controller: pods run to completion. `plan` decides from a Job and the pods it owns
//! how many pods to start or stop and the status to report; `sync` carries it out.
//!
//! - `completions` set: done once that many pods succeeded, with at most `parallelism` running
//!   (never more than the completions still missing); unset (a work queue): done once one pod
//!   succeeded and none runs.
//! - Failed pods count against `backoffLimit`; beyond it the Job fails (`BackoffLimitExceeded`).
//! - `activeDeadlineSeconds` after its start the Job fails (`DeadlineExceeded`).
//! - A finished or suspended Job keeps no pod running.
//!
//! Each completed pod is a TASK_FINISHED Mesos task (the executor reports it), which the
//! original k8sm never reported.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::Ctx;
use crate::pods;
use crate::queue;
use crate::replicas::{PodRef, len_i32};
use crate::workloads::{SyncError, controller_ref};

/// What to do with a Job's pods, and its status.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<PodRef>,
    pub status: JobStatus,
}

fn finished(status: Option<&JobStatus>) -> Option<&JobCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Decides for `job` given the pods it owns, at `now`; `manage` is false while earlier
/// creations and deletions are not yet in the cache.
pub fn plan(job: &Job, owned: &[&Pod], manage: bool, now: Timestamp) -> Plan {
    let spec = job.spec.as_ref();
    let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1).max(0);
    let completions = spec.and_then(|s| s.completions);
    let backoff_limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6).max(0);
    let suspended = spec.and_then(|s| s.suspend) == Some(true);
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| pods::is_active(p)).collect();
    let succeeded = len_i32(owned.iter().filter(|p| phase(p) == "Succeeded").count());
    let failed = len_i32(owned.iter().filter(|p| phase(p) == "Failed").count());
    let old = job.status.clone().unwrap_or_default();
    let start = old.start_time.clone().or_else(|| (!suspended).then_some(Time(now)));
    let mut status = JobStatus {
        active: Some(len_i32(active.len())),
        succeeded: Some(succeeded),
        failed: Some(failed),
        ready: Some(len_i32(active.iter().filter(|p| pods::is_ready(p)).count())),
        start_time: start.clone(),
        completion_time: old.completion_time.clone(),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let mut out = Plan { create: 0, delete: Vec::new(), status: status.clone() };
    let stop_all = |active: &[&Pod]| active.iter().map(|p| pod_ref(p)).collect::<Vec<_>>();

    // Already finished: nothing runs any more.
    if finished(Some(&old)).is_some() {
        out.delete = stop_all(&active);
        return out;
    }
    let ended = if failed > backoff_limit {
        Some(condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            now,
        ))
    } else if let (Some(deadline), Some(start)) =
        (spec.and_then(|s| s.active_deadline_seconds), start.as_ref())
        && !suspended
        && now.as_second().saturating_sub(start.0.as_second()) >= deadline
    {
        Some(condition(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            now,
        ))
    } else {
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        complete.then(|| condition("Complete", "Completed", "Job completed", now))
    };
    if let Some(c) = ended {
        if c.type_ == "Complete" {
            status.completion_time = Some(Time(now));
        }
        status.conditions.get_or_insert_with(Vec::new).push(c);
        out.status = status;
        out.delete = stop_all(&active);
        return out;
    }
    out.status = status;
    if !manage {
        return out;
    }
    let want = if suspended {
        0
    } else {
        match completions {
            Some(c) => parallelism.min(c.saturating_sub(succeeded).max(0)),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
    };
    let want = usize::try_from(want).unwrap_or(0);
    if active.len() < want {
        out.create = want - active.len();
    } else if active.len() > want {
        // The newest go first.
        active.sort_by_key(|p| {
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        out.delete = active[..active.len() - want].iter().map(|p| pod_ref(p)).collect();
    }
    out
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Syncs Job `key`.
pub async fn sync(ctx: &Ctx, key: &str) -> Result<Option<Duration>, SyncError> {
    let (ns, name) = queue::split(key);
    let ns = ns.unwrap_or("default");
    let Some(job) = ctx.caches.jobs.get(&ObjectRef::new(name).within(ns)) else {
        ctx.forget_expectations(key);
        return Ok(None);
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let all = ctx.caches.pods_in(ns);
    let refs: Vec<&Pod> = all.iter().map(AsRef::as_ref).collect();
    let owned: Vec<&Pod> = refs
        .iter()
        .copied()
        .filter(|p| pods::controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let now = Timestamp::now();
    let manage = ctx.observe_expectations(key, &refs, now);
    let plan = plan(&job, &owned, manage, now);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut failure = None;
    if plan.create > 0
        && let Some(template) = job.spec.as_ref().map(|s| &s.template)
    {
        let owner = controller_ref(job.as_ref());
        for _ in 0..plan.create {
            let pod = crate::workloads::pod_from(template, owner.clone(), ns);
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    if let Some(n) = created.metadata.name {
                        ctx.expect(key, now, |mut e| {
                            e.creates.insert(n);
                            e
                        });
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    for victim in &plan.delete {
        ctx.expect(key, now, |mut e| {
            e.deletes.insert(victim.uid.clone());
            e
        });
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(victim.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&victim.name, &dp).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let old = job.status.clone().unwrap_or_default();
    let changed =
        (old.active, old.succeeded, old.failed, old.ready, &old.conditions, &old.start_time)
            != (
                plan.status.active,
                plan.status.succeeded,
                plan.status.failed,
                plan.status.ready,
                &plan.status.conditions,
                &plan.status.start_time,
            );
    if changed {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        let patch = json!({ "status": plan.status });
        jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| SyncError::Api { what: format!("status of job {key}"), source })?;
    }
    if let Some(source) = failure {
        return Err(SyncError::Api { what: format!("managing the pods of job {key}"), source });
    }
    // A deadline is checked again when it comes.
    let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    Ok(match (deadline, plan.status.start_time.as_ref(), finished(Some(&plan.status))) {
        (Some(d), Some(start), None) => {
            let left = start.0.as_second().saturating_add(d).saturating_sub(now.as_second());
            Some(Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1)))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(completions: Option<i32>, parallelism: i32, backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": { "name": "j", "namespace": "ns", "uid": "job-uid" },
            "spec": { "completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                "template": { "spec": { "containers": [], "restartPolicy": "Never" } } },
        }))
        .expect("job")
    }

    fn pod(name: &str, phase: &str, created: i64) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "uid": format!("u-{name}"),
                "creationTimestamp": Timestamp::from_second(1_700_000_000 + created).expect("t").to_string() },
            "status": { "phase": phase },
        }))
        .expect("pod")
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("t")
    }

    #[test]
    fn completions_run_at_most_parallelism_at_a_time_until_done() {
        let j = job(Some(5), 2, 6);
        assert_eq!(plan(&j, &[], true, now()).create, 2);
        let (a, b, c) =
            (pod("a", "Succeeded", 0), pod("b", "Succeeded", 1), pod("c", "Running", 2));
        let p = plan(&j, &[&a, &b, &c], true, now());
        assert_eq!((p.create, p.status.succeeded, p.status.active), (1, Some(2), Some(1)));
        let (d, e) = (pod("d", "Succeeded", 3), pod("e", "Running", 4));
        let p = plan(&j, &[&a, &b, &c, &d, &e], true, now());
        assert_eq!(p.create, 0, "two more to go, two running");
        let done: Vec<Pod> = (0..5).map(|i| pod(&format!("s{i}"), "Succeeded", i)).collect();
        let refs: Vec<&Pod> = done.iter().collect();
        let p = plan(&j, &refs, true, now());
        let c = finished(Some(&p.status)).expect("finished");
        assert_eq!((c.type_.as_str(), p.status.completion_time.is_some()), ("Complete", true));
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job_and_stop_its_pods() {
        let j = job(Some(1), 1, 1);
        let (f1, f2, r) = (pod("f1", "Failed", 0), pod("f2", "Failed", 1), pod("r", "Running", 2));
        let p = plan(&j, &[&f1, &r], true, now());
        assert!(finished(Some(&p.status)).is_none(), "one failure is within the limit");
        let p = plan(&j, &[&f1, &f2, &r], true, now());
        let c = finished(Some(&p.status)).expect("failed");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("Failed", Some("BackoffLimitExceeded"))
        );
        assert_eq!(p.delete, [PodRef { name: "r".into(), uid: "u-r".into() }]);
    }

    #[test]
    fn the_active_deadline_fails_the_job() {
        let mut j = job(Some(1), 1, 6);
        j.spec.as_mut().expect("spec").active_deadline_seconds = Some(10);
        j.status = Some(JobStatus { start_time: Some(Time(now())), ..Default::default() });
        let r = pod("r", "Running", 0);
        assert!(finished(Some(&plan(&j, &[&r], true, now()).status)).is_none());
        let later = Timestamp::from_second(now().as_second() + 10).expect("t");
        let p = plan(&j, &[&r], true, later);
        assert_eq!(
            finished(Some(&p.status)).and_then(|c| c.reason.clone()).as_deref(),
            Some("DeadlineExceeded")
        );
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn a_work_queue_is_done_when_one_succeeded_and_none_runs() {
        let j = job(None, 3, 6);
        assert_eq!(plan(&j, &[], true, now()).create, 3);
        let (s, r) = (pod("s", "Succeeded", 0), pod("r", "Running", 1));
        let p = plan(&j, &[&s, &r], true, now());
        assert_eq!(p.create, 0, "no new pods once one succeeded");
        assert!(finished(Some(&p.status)).is_none());
        assert!(finished(Some(&plan(&j, &[&s], true, now()).status)).is_some());
    }
}
