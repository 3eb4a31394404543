//! The decisions of a restart, pure: how healthy a pod is, how many pods a restart may take
//! down or add, and the next step of a rolling restart of a ReplicaSet or ReplicationController.
//! Time is an argument (the time since the restart began); nothing here does IO.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Waiting reasons of a container that will not start by itself: a restart stops at once on
/// them rather than waiting out its timeout.
const FATAL_WAITING: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What a replacement pod's status says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The pod's Ready condition is True (its readiness probes pass).
    Ready,
    /// Not ready yet, and nothing says it will not be: why not, for the progress line.
    Pending(String),
    /// It will not become ready by itself: a container crashed, restarted or cannot start, or
    /// the pod ended.
    Failed(String),
}

impl Health {
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::Ready)
    }
}

/// Judges a pod by its status, as a user reading `kubectl describe` would.
pub fn health(pod: &Pod) -> Health {
    let Some(status) = pod.status.as_ref() else {
        return Health::Pending("no status yet".into());
    };
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        let why = [status.reason.as_deref(), status.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return Health::Failed(if why.is_empty() {
            format!("the pod ended ({phase})")
        } else {
            format!("the pod ended ({phase}): {why}")
        });
    }
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if FATAL_WAITING.contains(&reason) {
                let message = w.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                return Health::Failed(format!("container {} is {reason}{message}", c.name));
            }
        }
        if c.restart_count > 0 {
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    let reason = t.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
                    format!(" (last exit code {}{reason})", t.exit_code)
                })
                .unwrap_or_default();
            return Health::Failed(format!(
                "container {} restarted {} time{}{last}",
                c.name,
                c.restart_count,
                if c.restart_count == 1 { "" } else { "s" }
            ));
        }
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if condition("Ready").is_some_and(|c| c.status == "True") {
        return Health::Ready;
    }
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        let why = c.message.as_deref().or(c.reason.as_deref()).unwrap_or("not placed yet");
        return Health::Pending(format!("not scheduled: {why}"));
    }
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            return Health::Pending(format!(
                "container {} waiting ({})",
                c.name,
                w.reason.as_deref().unwrap_or("no reason given")
            ));
        }
    }
    match condition("Ready") {
        Some(c) => Health::Pending(format!(
            "not Ready: {}",
            c.message.as_deref().or(c.reason.as_deref()).unwrap_or("no reason given")
        )),
        None => Health::Pending(format!(
            "phase {}",
            status.phase.as_deref().unwrap_or("unknown (not started yet)")
        )),
    }
}

/// Whether a `FailedLaunch` Event of a pod not yet bound (km scheduler records one when the
/// executor could not start the pod, and tries again later) says the pod cannot start by
/// itself: the executor reported one of the reasons above, or could not start the pod at all.
pub fn launch_failure(message: &str) -> Option<String> {
    let fatal = FATAL_WAITING.iter().any(|r| message.contains(r))
        || message.contains("cannot start the pod");
    fatal.then(|| format!("its launch failed: {message}"))
}

/// A count or a percentage of the replicas, as Deployments give `maxUnavailable` and
/// `maxSurge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl std::str::FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> Result<Amount, String> {
        let bad = || format!("{s:?} is neither a count (3) nor a percentage (25%)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(format!("{s:?}: a percentage is at most 100%"));
                }
                Ok(Amount::Percent(p))
            }
            None => s.parse().map(Amount::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Amount {
    /// The amount for `replicas` pods; percentages round up or down as Kubernetes rounds
    /// maxSurge (up) and maxUnavailable (down).
    pub fn of(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                let whole = if round_up { scaled.div_ceil(100) } else { scaled / 100 };
                u32::try_from(whole).unwrap_or(u32::MAX)
            }
        }
    }
}

/// How far a rolling restart may go below and above the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_unavailable: u32,
    pub max_surge: u32,
}

impl Budget {
    /// Resolves the two amounts for `replicas`. Both zero would never progress: like a
    /// Deployment, a restart then takes one pod down at a time, unless both were given as
    /// plain zeros, which is refused.
    pub fn resolve(unavailable: Amount, surge: Amount, replicas: u32) -> Result<Budget, String> {
        if unavailable == Amount::Count(0) && surge == Amount::Count(0) {
            return Err("--max-unavailable and --max-surge cannot both be 0".into());
        }
        let max_unavailable = unavailable.of(replicas, false).min(replicas);
        let max_surge = surge.of(replicas, true);
        Ok(if max_unavailable == 0 && max_surge == 0 {
            Budget { max_unavailable: 1, max_surge: 0 }
        } else {
            Budget { max_unavailable, max_surge }
        })
    }
}

/// One pod of the workload being restarted, as the rolling step sees it.
#[derive(Debug, Clone)]
pub struct Replica {
    pub name: String,
    /// It existed when the restart began: it is to be replaced.
    pub old: bool,
    /// It is being deleted.
    pub terminating: bool,
    pub health: Health,
}

/// Where a rolling restart stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Replacements Ready.
    pub replaced: u32,
    /// Old pods not yet deleted.
    pub old_left: u32,
    /// Pods Ready and not terminating, old and new.
    pub available: u32,
    /// The workload's own replica count.
    pub replicas: u32,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} replaced, {} old left, {} available",
            self.replaced.min(self.replicas),
            self.replicas,
            self.old_left,
            self.available
        )
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Set the workload's replica count.
    Scale(u32),
    /// Delete these old pods (gracefully); their controller replaces them.
    Delete(Vec<String>),
    /// Nothing to do until the pods change.
    Wait(Progress),
    /// Every pod is a Ready replacement and the count is back where it was.
    Done(Progress),
    /// Stop: a replacement failed, or none made progress within the timeout.
    Fail(String),
}

/// A rolling restart of a ReplicaSet or ReplicationController of `replicas` pods, which
/// DC/OS users know: the count goes up by the surge, old pods go only while the Ready pods
/// stay at or above `replicas - max_unavailable`, and every replacement must turn Ready
/// before the restart goes on. A replacement that fails stops it; so does no progress within
/// `timeout`.
#[derive(Debug, Clone)]
pub struct Rolling {
    pub replicas: u32,
    pub budget: Budget,
    pub timeout: Duration,
    last: Option<(u32, u32)>,
    since: Duration,
}

impl Rolling {
    pub fn new(replicas: u32, budget: Budget, timeout: Duration) -> Rolling {
        Rolling { replicas, budget, timeout, last: None, since: Duration::ZERO }
    }

    /// The next step, given the workload's current replica count and its pods at `now`
    /// (time since the restart began).
    pub fn step(&mut self, now: Duration, current: u32, pods: &[Replica]) -> Step {
        let n = self.replicas;
        let live = || pods.iter().filter(|p| !p.terminating);
        if let Some((p, why)) = live().find_map(|p| match &p.health {
            Health::Failed(why) if !p.old => Some((p, why)),
            _ => None,
        }) {
            return Step::Fail(format!("replacement pod {} failed: {why}", p.name));
        }
        let old_left = u32_len(live().filter(|p| p.old).count());
        let replaced = u32_len(live().filter(|p| !p.old && p.health.is_ready()).count());
        let available = u32_len(live().filter(|p| p.health.is_ready()).count());
        let progress = Progress { replaced, old_left, available, replicas: n };
        if old_left == 0 && replaced >= n {
            if current != n {
                return Step::Scale(n);
            }
            // Done once the controller has taken the surge away again.
            if u32_len(live().count()) <= n {
                return Step::Done(progress);
            }
            return Step::Wait(progress);
        }
        let surged = n.saturating_add(self.budget.max_surge);
        if old_left > 0 && current != surged {
            return Step::Scale(surged);
        }
        // Old pods that are not Ready serve nobody: they go at once. Ready ones go while the
        // available count stays at or above the floor.
        let floor = n.saturating_sub(self.budget.max_unavailable);
        let mut room = available.saturating_sub(floor);
        let mut delete = Vec::new();
        for p in live().filter(|p| p.old) {
            if !p.health.is_ready() {
                delete.push(p.name.clone());
            } else if room > 0 {
                room -= 1;
                delete.push(p.name.clone());
            }
        }
        if !delete.is_empty() {
            self.mark(now, (replaced, old_left.saturating_sub(u32_len(delete.len()))));
            return Step::Delete(delete);
        }
        self.mark(now, (replaced, old_left));
        if now.saturating_sub(self.since) > self.timeout {
            let waiting: Vec<String> = live()
                .filter(|p| !p.old)
                .filter_map(|p| match &p.health {
                    Health::Pending(why) => Some(format!("{}: {why}", p.name)),
                    _ => None,
                })
                .take(3)
                .collect();
            let detail = if waiting.is_empty() {
                "no replacement pod appeared".to_owned()
            } else {
                waiting.join("; ")
            };
            return Step::Fail(format!(
                "no progress for {} ({progress}): {detail}",
                humantime::format_duration(self.timeout)
            ));
        }
        Step::Wait(progress)
    }

    /// Progress restarts the timeout.
    fn mark(&mut self, now: Duration, key: (u32, u32)) {
        if self.last != Some(key) {
            self.last = Some(key);
            self.since = now;
        }
    }
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "p" }, "status": status }))
            .expect("pod")
    }

    #[test]
    fn health_reads_the_status_as_a_user_would() {
        let ready = pod(json!({ "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }],
            "containerStatuses": [{ "name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                "state": { "running": {} } }] }));
        assert_eq!(health(&ready), Health::Ready);
        let crashed = pod(json!({ "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False" }],
            "containerStatuses": [{ "name": "c", "ready": false, "restartCount": 2, "image": "i", "imageID": "",
                "lastState": { "terminated": { "exitCode": 3, "reason": "Error" } },
                "state": { "running": {} } }] }));
        assert_eq!(
            health(&crashed),
            Health::Failed("container c restarted 2 times (last exit code 3, Error)".into())
        );
        let config = pod(json!({ "phase": "Pending",
            "containerStatuses": [{ "name": "c", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": { "waiting": { "reason": "CreateContainerConfigError", "message": "configmap \"x\" not found" } } }] }));
        assert_eq!(
            health(&config),
            Health::Failed(
                "container c is CreateContainerConfigError: configmap \"x\" not found".into()
            )
        );
        let unready = pod(json!({ "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False", "reason": "ContainersNotReady",
                "message": "containers with unready status: [c]" }],
            "containerStatuses": [{ "name": "c", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": { "running": {} } }] }));
        assert_eq!(
            health(&unready),
            Health::Pending("not Ready: containers with unready status: [c]".into())
        );
        let unscheduled = pod(json!({ "phase": "Pending",
            "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 agents fit: cpus" }] }));
        assert_eq!(
            health(&unscheduled),
            Health::Pending("not scheduled: 0/3 agents fit: cpus".into())
        );
        assert!(matches!(health(&pod(json!({ "phase": "Failed" }))), Health::Failed(_)));
        assert!(matches!(health(&pod(json!(null))), Health::Pending(_)));
    }

    #[test]
    fn launch_failures_that_will_not_pass_by_themselves() {
        let config = "TASK_FAILED on agent-1: CreateContainerConfigError: configmap \"c\" has no key \"k\"; retrying in 2s";
        assert!(launch_failure(config).is_some_and(|w| w.contains("CreateContainerConfigError")));
        assert!(
            launch_failure("TASK_LOST on agent-1: the agent is gone; retrying in 1s").is_none()
        );
    }

    #[test]
    fn amounts_parse_and_round_as_deployments_do() {
        assert_eq!("3".parse::<Amount>(), Ok(Amount::Count(3)));
        assert_eq!("25%".parse::<Amount>(), Ok(Amount::Percent(25)));
        assert!("101%".parse::<Amount>().is_err());
        assert!("-1".parse::<Amount>().is_err());
        assert!("x%".parse::<Amount>().is_err());
        assert_eq!(Amount::Percent(25).of(10, false), 2);
        assert_eq!(Amount::Percent(25).of(10, true), 3);
        let b = Budget::resolve(Amount::Percent(25), Amount::Percent(25), 1).expect("budget");
        assert_eq!(b, Budget { max_unavailable: 0, max_surge: 1 });
        let b = Budget::resolve(Amount::Percent(10), Amount::Count(0), 5).expect("budget");
        assert_eq!(
            b,
            Budget { max_unavailable: 1, max_surge: 0 },
            "both round to 0: one at a time"
        );
        assert!(Budget::resolve(Amount::Count(0), Amount::Count(0), 5).is_err());
        let b = Budget::resolve(Amount::Count(20), Amount::Count(0), 5).expect("budget");
        assert_eq!(b.max_unavailable, 5, "never more than the replicas");
    }

    fn replica(name: &str, old: bool, ready: bool) -> Replica {
        Replica {
            name: name.into(),
            old,
            terminating: false,
            health: if ready { Health::Ready } else { Health::Pending("starting".into()) },
        }
    }

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn a_rolling_restart_surges_deletes_within_the_floor_and_scales_back() {
        let budget = Budget { max_unavailable: 1, max_surge: 1 };
        let mut r = Rolling::new(3, budget, T);
        let s = Duration::from_secs;
        let mut pods: Vec<Replica> =
            ["a", "b", "c"].iter().map(|n| replica(n, true, true)).collect();
        assert_eq!(r.step(s(0), 3, &pods), Step::Scale(4));
        // One may go at once (floor 2 of 3 available).
        assert_eq!(r.step(s(1), 4, &pods), Step::Delete(vec!["a".into()]));
        pods[0].terminating = true;
        pods.push(replica("n1", false, false));
        pods.push(replica("n2", false, false));
        assert!(
            matches!(r.step(s(2), 4, &pods), Step::Wait(p) if p.available == 2 && p.old_left == 2)
        );
        pods.remove(0);
        pods[2].health = Health::Ready;
        assert_eq!(r.step(s(3), 4, &pods), Step::Delete(vec!["b".into()]));
        pods[0].terminating = true;
        pods[3].health = Health::Ready;
        pods.push(replica("n3", false, false));
        // Available: c, n1, n2 = 3; floor 2: c may go too.
        assert_eq!(r.step(s(4), 4, &pods), Step::Delete(vec!["c".into()]));
        pods.retain(|p| !p.old);
        pods.push(replica("n4", false, false));
        assert!(matches!(r.step(s(5), 4, &pods), Step::Wait(_)));
        pods[2].health = Health::Ready;
        assert_eq!(r.step(s(6), 4, &pods), Step::Scale(3), "all old gone and 3 Ready: back to 3");
        assert!(matches!(r.step(s(6), 3, &pods), Step::Wait(_)), "until the surge pod goes");
        pods.pop();
        assert!(
            matches!(r.step(s(7), 3, &pods), Step::Done(p) if p.replaced == 3 && p.old_left == 0)
        );
    }

    #[test]
    fn without_unavailability_old_pods_wait_for_ready_replacements() {
        let mut r = Rolling::new(2, Budget { max_unavailable: 0, max_surge: 1 }, T);
        let s = Duration::from_secs;
        let mut pods = vec![replica("a", true, true), replica("b", true, true)];
        assert_eq!(r.step(s(0), 2, &pods), Step::Scale(3));
        pods.push(replica("n1", false, false));
        assert!(matches!(r.step(s(1), 3, &pods), Step::Wait(_)), "never below 2 available");
        pods[2].health = Health::Ready;
        assert_eq!(r.step(s(2), 3, &pods), Step::Delete(vec!["a".into()]));
    }

    #[test]
    fn unready_old_pods_go_at_once_and_failures_stop_the_restart() {
        let mut r = Rolling::new(2, Budget { max_unavailable: 0, max_surge: 1 }, T);
        let pods = vec![replica("a", true, false), replica("b", true, true)];
        assert_eq!(r.step(Duration::ZERO, 3, &pods), Step::Delete(vec!["a".into()]));
        let mut failing = pods.clone();
        failing.push(Replica {
            name: "n1".into(),
            old: false,
            terminating: false,
            health: Health::Failed("container c restarted 1 time".into()),
        });
        assert_eq!(
            r.step(Duration::ZERO, 3, &failing),
            Step::Fail("replacement pod n1 failed: container c restarted 1 time".into())
        );
        // An old pod that fails is what the restart is for: it is simply replaced.
        let mut old_failed = vec![replica("b", true, true)];
        old_failed.push(Replica {
            name: "a".into(),
            old: true,
            terminating: false,
            health: Health::Failed("x".into()),
        });
        assert_eq!(r.step(Duration::ZERO, 3, &old_failed), Step::Delete(vec!["a".into()]));
    }

    #[test]
    fn no_progress_within_the_timeout_fails_with_the_reasons() {
        let mut r = Rolling::new(1, Budget { max_unavailable: 0, max_surge: 1 }, T);
        let s = Duration::from_secs;
        let mut pods = vec![replica("a", true, true)];
        pods.push(Replica {
            name: "n1".into(),
            old: false,
            terminating: false,
            health: Health::Pending("not Ready: containers with unready status: [c]".into()),
        });
        assert!(matches!(r.step(s(0), 2, &pods), Step::Wait(_)));
        assert!(matches!(r.step(s(60), 2, &pods), Step::Wait(_)), "the timeout is not over");
        match r.step(s(61), 2, &pods) {
            Step::Fail(why) => assert!(
                why.contains("no progress for 1m") && why.contains("n1: not Ready"),
                "{why}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
