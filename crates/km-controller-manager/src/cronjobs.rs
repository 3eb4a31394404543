//! The CronJob controller: Jobs made on a schedule. `plan` decides, from a CronJob, the Jobs it
//! owns and the time, whether a Job is due, which finished Jobs fall out of the history, and
//! when to look again; `sync` carries it out.
//!
//! - The schedule is standard cron (five fields, or `@hourly` and the like), in `spec.timeZone`
//!   (UTC when unset). Of the times missed since the last one run, only the latest is run.
//! - `startingDeadlineSeconds`: a run that would start later than that after its time is skipped.
//! - `concurrencyPolicy`: Allow (runs may overlap), Forbid (a due run waits while one is
//!   active), Replace (the active runs are deleted for the new one).
//! - `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1) finished Jobs are kept.
//! - The Job of a run is named `<cronjob>-<scheduled time in minutes since the epoch>`, so a
//!   run is never made twice.

use std::str::FromStr as _;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::Ctx;
use crate::pods;
use crate::queue;
use crate::workloads::{SyncError, controller_ref};

/// What to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Make the run scheduled at this time.
    pub run: Option<Timestamp>,
    /// Jobs to delete (name, uid): history beyond the limits, or runs a Replace displaces.
    pub delete: Vec<(String, String)>,
    /// When the next run is due.
    pub next: Option<Timestamp>,
}

/// The name of the Job of the run scheduled at `at`.
pub fn job_name(cronjob: &str, at: Timestamp) -> String {
    format!("{cronjob}-{}", at.as_second().div_euclid(60))
}

fn job_finished(j: &Job) -> Option<(bool, Option<Timestamp>)> {
    let c = j
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    Some((c.type_ == "Complete", c.last_transition_time.as_ref().map(|t| t.0)))
}

/// Decides for `cj` with the Jobs it owns at `now`.
/// The annotation a run's Job carries: the time it was scheduled for.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The latest scheduled run known: the status says it, or the Jobs do (a run just started may
/// not be in the cached status yet; the time never goes back).
fn last_scheduled(cj: &CronJob, owned: &[&Job]) -> Option<Timestamp> {
    let from_status = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0);
    let from_jobs = owned
        .iter()
        .filter_map(|j| j.metadata.annotations.as_ref()?.get(SCHEDULED_AT)?.parse().ok())
        .max();
    from_status.max(from_jobs)
}

pub fn plan(cj: &CronJob, owned: &[&Job], now: Timestamp) -> Result<Plan, String> {
    let spec = &cj.spec;
    let zone = match spec.time_zone.as_deref() {
        None | Some("") => k8s_openapi::jiff::tz::TimeZone::UTC,
        Some(name) => k8s_openapi::jiff::tz::TimeZone::get(name)
            .map_err(|e| format!("timeZone {name:?}: {e}"))?,
    };
    let cron = croner::Cron::from_str(spec.schedule.trim())
        .map_err(|e| format!("schedule {:?}: {e}", spec.schedule))?;
    let since = last_scheduled(cj, owned)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    // The latest time due in (since, now], and the next one after now.
    let mut at = since.to_zoned(zone.clone());
    let mut due = None;
    let next = loop {
        let Ok(t) = cron.find_next_occurrence(&at, false) else { break None };
        if t.timestamp() > now {
            break Some(t.timestamp());
        }
        due = Some(t.timestamp());
        at = t;
    };
    let mut out = Plan { next, ..Plan::default() };

    let active: Vec<&&Job> = owned.iter().filter(|j| job_finished(j).is_none()).collect();
    // History: the oldest finished Jobs beyond each limit go.
    for (succeeded, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<(&&Job, Option<Timestamp>)> = owned
            .iter()
            .filter_map(|j| job_finished(j).filter(|(ok, _)| *ok == succeeded).map(|(_, t)| (j, t)))
            .collect();
        done.sort_by_key(|(j, t)| t.or(j.metadata.creation_timestamp.as_ref().map(|c| c.0)));
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        if done.len() > keep {
            for (j, _) in &done[..done.len() - keep] {
                out.delete.push(ident(j));
            }
        }
    }
    let Some(due) = due else { return Ok(out) };
    if spec.suspend == Some(true) {
        return Ok(out);
    }
    if let Some(deadline) = spec.starting_deadline_seconds
        && now.as_second() - due.as_second() > deadline
    {
        return Ok(out);
    }
    let name = cj.metadata.name.as_deref().unwrap_or_default();
    if owned.iter().any(|j| j.metadata.name.as_deref() == Some(job_name(name, due).as_str())) {
        return Ok(out);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => return Ok(out),
        "Replace" => out.delete.extend(active.iter().map(|j| ident(j))),
        _ => {}
    }
    out.run = Some(due);
    Ok(out)
}

fn ident(j: &Job) -> (String, String) {
    (j.metadata.name.clone().unwrap_or_default(), j.metadata.uid.clone().unwrap_or_default())
}

/// Syncs CronJob `key`.
pub async fn sync(ctx: &Ctx, key: &str) -> Result<Option<Duration>, SyncError> {
    let (ns, name) = queue::split(key);
    let ns = ns.unwrap_or("default");
    let Some(cj) = ctx.caches.cronjobs.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let owned_jobs = ctx.caches.jobs.state_filter(|j| {
        j.metadata.namespace.as_deref() == Some(ns)
            && pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid)
    });
    let owned: Vec<&Job> = owned_jobs.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let plan = match plan(&cj, &owned, now) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(cronjob = %key, "cannot schedule: {e}");
            return Ok(None);
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for (job, job_uid) in &plan.delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(job_uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match jobs.delete(job, &dp).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(source) => {
                return Err(SyncError::Api { what: format!("deleting job {ns}/{job}"), source });
            }
        }
    }
    let mut last_schedule = last_scheduled(&cj, &owned).map(Time);
    if let Some(at) = plan.run {
        let template = cj.spec.job_template.clone();
        let mut meta = template.metadata.unwrap_or_default();
        let job_name = job_name(name, at);
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(SCHEDULED_AT.into(), at.to_string());
        let job = Job {
            metadata: ObjectMeta {
                name: Some(job_name.clone()),
                namespace: Some(ns.to_owned()),
                labels: meta.labels,
                annotations: meta.annotations,
                owner_references: Some(vec![controller_ref(cj.as_ref())]),
                ..Default::default()
            },
            spec: Some(template.spec.unwrap_or_else(JobSpec::default)),
            status: None,
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => tracing::info!(cronjob = %key, job = %job_name, "run started"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(SyncError::Api {
                    what: format!("creating job {ns}/{job_name}"),
                    source,
                });
            }
        }
        last_schedule = last_schedule.max(Some(Time(at)));
    }
    // Status: the active runs and the last schedule.
    let active: Vec<ObjectReference> = owned
        .iter()
        .filter(|j| job_finished(j).is_none())
        .filter(|j| !plan.delete.iter().any(|(n, _)| j.metadata.name.as_ref() == Some(n)))
        .map(|j| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: j.metadata.name.clone(),
            namespace: j.metadata.namespace.clone(),
            uid: j.metadata.uid.clone(),
            ..Default::default()
        })
        .collect();
    let last_successful = owned
        .iter()
        .filter_map(|j| job_finished(j).filter(|(ok, _)| *ok).and_then(|(_, t)| t))
        .max()
        .map(Time);
    let old = cj.status.clone().unwrap_or_default();
    let new_active = (!active.is_empty()).then_some(active);
    tracing::debug!(
        cronjob = %key,
        owned = owned.len(),
        active = new_active.as_ref().map_or(0, Vec::len),
        run = ?plan.run,
        next = ?plan.next,
        "cronjob"
    );
    if old.active != new_active
        || old.last_schedule_time != last_schedule
        || (last_successful.is_some() && old.last_successful_time != last_successful)
    {
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
        // Times are only ever set (a null would erase what a stale cache did not show).
        let mut status = json!({ "active": new_active });
        if let Some(t) = &last_schedule {
            status["lastScheduleTime"] = json!(t);
        }
        if let Some(t) = last_successful.or(old.last_successful_time) {
            status["lastSuccessfulTime"] = json!(t);
        }
        let patch = json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(
            |source| SyncError::Api { what: format!("status of cronjob {key}"), source },
        )?;
    }
    // Look again when the next run is due (and at least every minute, for the history).
    let wait = plan.next.map(|t| t.as_second() - now.as_second()).map_or(60, |s| s.clamp(1, 60));
    Ok(Some(Duration::from_secs(u64::try_from(wait).unwrap_or(60))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn cronjob(schedule: &str, policy: &str, last: Option<&str>) -> CronJob {
        serde_json::from_value(json!({
            "metadata": { "name": "cj", "namespace": "ns", "uid": "cj-uid", "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": { "schedule": schedule, "concurrencyPolicy": policy,
                "jobTemplate": { "spec": { "template": { "spec": { "containers": [] } } } } },
            "status": { "lastScheduleTime": last },
        }))
        .expect("cronjob")
    }

    fn job(name: &str, finished: Option<&str>, at_: &str) -> Job {
        let conditions =
            finished.map(|t| json!([{ "type": t, "status": "True", "lastTransitionTime": at_ }]));
        serde_json::from_value(json!({
            "metadata": { "name": name, "uid": format!("u-{name}"), "creationTimestamp": at_ },
            "status": { "conditions": conditions },
        }))
        .expect("job")
    }

    #[test]
    fn the_latest_missed_run_is_made_once_and_the_next_is_known() {
        let cj = cronjob("*/5 * * * *", "Allow", Some("2026-01-01T00:00:00Z"));
        let p = plan(&cj, &[], at("2026-01-01T00:12:00Z")).expect("plan");
        assert_eq!(p.run, Some(at("2026-01-01T00:10:00Z")));
        assert_eq!(p.next, Some(at("2026-01-01T00:15:00Z")));
        let made = job(&job_name("cj", at("2026-01-01T00:10:00Z")), None, "2026-01-01T00:10:00Z");
        assert_eq!(
            plan(&cj, &[&made], at("2026-01-01T00:12:00Z")).expect("plan").run,
            None,
            "never twice"
        );
        let nothing = plan(&cj, &[], at("2026-01-01T00:04:00Z")).expect("plan");
        assert_eq!(nothing.run, None);
        assert!(
            plan(&cronjob("not a schedule", "Allow", None), &[], at("2026-01-01T00:04:00Z"))
                .is_err()
        );
        let hourly = plan(&cronjob("@hourly", "Allow", None), &[], at("2026-01-01T01:00:30Z"))
            .expect("macro");
        assert_eq!(hourly.run, Some(at("2026-01-01T01:00:00Z")));
    }

    #[test]
    fn a_run_the_cached_status_does_not_show_yet_counts_as_scheduled() {
        // The status (from a cache) still names an old run; the Job of the latest exists.
        let cj = cronjob("*/5 * * * *", "Allow", Some("2026-01-01T00:00:00Z"));
        let mut made =
            job(&job_name("cj", at("2026-01-01T00:10:00Z")), None, "2026-01-01T00:10:00Z");
        made.metadata.annotations =
            Some([(SCHEDULED_AT.to_owned(), "2026-01-01T00:10:00Z".to_owned())].into());
        assert_eq!(last_scheduled(&cj, &[&made]), Some(at("2026-01-01T00:10:00Z")));
        let p = plan(&cj, &[&made], at("2026-01-01T00:14:00Z")).expect("plan");
        assert_eq!((p.run, p.next), (None, Some(at("2026-01-01T00:15:00Z"))));
        // A status ahead of the Jobs (their history was cleaned up) is kept.
        let ahead = cronjob("*/5 * * * *", "Allow", Some("2026-01-01T00:20:00Z"));
        assert_eq!(last_scheduled(&ahead, &[&made]), Some(at("2026-01-01T00:20:00Z")));
    }

    #[test]
    fn concurrency_policies_and_history_limits() {
        let now = at("2026-01-01T00:12:00Z");
        let running = job("cj-old", None, "2026-01-01T00:05:00Z");
        let forbid = cronjob("*/5 * * * *", "Forbid", Some("2026-01-01T00:05:00Z"));
        assert_eq!(plan(&forbid, &[&running], now).expect("plan").run, None);
        let replace = cronjob("*/5 * * * *", "Replace", Some("2026-01-01T00:05:00Z"));
        let p = plan(&replace, &[&running], now).expect("plan");
        assert_eq!(
            (p.run.is_some(), p.delete.clone()),
            (true, vec![("cj-old".to_owned(), "u-cj-old".to_owned())])
        );
        let done: Vec<Job> = (0..5)
            .map(|i| job(&format!("ok{i}"), Some("Complete"), &format!("2026-01-01T00:0{i}:00Z")))
            .collect();
        let failed: Vec<Job> = (0..2)
            .map(|i| job(&format!("bad{i}"), Some("Failed"), &format!("2026-01-01T00:0{i}:30Z")))
            .collect();
        let all: Vec<&Job> = done.iter().chain(failed.iter()).collect();
        let p = plan(&cronjob("*/5 * * * *", "Allow", Some("2026-01-01T00:10:00Z")), &all, now)
            .expect("plan");
        let names: Vec<&str> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ok0", "ok1", "bad0"]);
    }
}
