//! What a pod's state means for its Mesos task: which `TaskState` to report, with which reason
//! and message, and when to report again. Pure: snapshots in, reports out.

use k8s_openapi::api::core::v1 as k8s;
use km_runtime::lifecycle::Phase;

/// A task status the executor sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The state.
    pub state: State,
    /// Mesos reason (`REASON_…`), if one applies.
    pub reason: Option<&'static str>,
    /// What a person reads.
    pub message: String,
    /// The pod's readiness (`TaskStatus.healthy`) once it runs.
    pub ready: Option<bool>,
}

/// The states the executor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// TASK_STARTING.
    Starting,
    /// TASK_RUNNING.
    Running,
    /// TASK_FINISHED.
    Finished,
    /// TASK_FAILED.
    Failed,
    /// TASK_KILLED.
    Killed,
}

impl State {
    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Finished | State::Failed | State::Killed)
    }
}

/// The report a pod's current state calls for.
pub fn for_pod(phase: Phase, ready: bool, status: &k8s::PodStatus) -> Report {
    let problems = problems(status);
    match phase {
        Phase::Pending => Report {
            state: State::Starting,
            reason: None,
            message: if problems.is_empty() {
                "starting the pod's containers".into()
            } else {
                problems.join("; ")
            },
            ready: None,
        },
        Phase::Running => Report {
            state: State::Running,
            reason: None,
            message: if problems.is_empty() {
                if ready { "running, ready".into() } else { "running, not ready".into() }
            } else {
                problems.join("; ")
            },
            ready: Some(ready),
        },
        Phase::Succeeded => Report {
            state: State::Finished,
            reason: None,
            message: "every container completed successfully".into(),
            ready: None,
        },
        Phase::Failed => Report {
            state: State::Failed,
            reason: Some("REASON_COMMAND_EXECUTOR_FAILED"),
            message: {
                let ended = terminations(status);
                if ended.is_empty() {
                    "the pod failed".into()
                } else {
                    format!("the pod failed: {}", ended.join("; "))
                }
            },
            ready: None,
        },
    }
}

/// Whether `next` must be sent, after `last` was.
pub fn worth_sending(last: Option<&Report>, next: &Report) -> bool {
    match last {
        None => true,
        Some(l) if l.state.is_terminal() => false,
        Some(l) => {
            next.state > l.state
                || (next.state == l.state && (next.message != l.message || next.ready != l.ready))
        }
    }
}

/// The statuses of the init containers, then of the containers.
fn all_statuses(status: &k8s::PodStatus) -> impl Iterator<Item = &k8s::ContainerStatus> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
}

/// Containers that are waiting for a reason other than a normal start, or restart after a
/// failure: `container "web": CrashLoopBackOff (last exit code 1)`.
fn problems(status: &k8s::PodStatus) -> Vec<String> {
    let mut out = Vec::new();
    for c in all_statuses(status) {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let reason = waiting.reason.as_deref().unwrap_or("Waiting");
        if matches!(reason, "ContainerCreating" | "PodInitializing") {
            continue;
        }
        let mut text = format!("container {:?}: {reason}", c.name);
        if let Some(m) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
            text.push_str(&format!(": {m}"));
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            text.push_str(&format!(" (last exit code {}", t.exit_code));
            if let Some(r) = t.reason.as_deref() {
                text.push_str(&format!(", {r}"));
            }
            text.push(')');
        }
        out.push(text);
    }
    out
}

/// How the containers of a failed pod ended: `container "job": exit code 3 (Error)`.
fn terminations(status: &k8s::PodStatus) -> Vec<String> {
    let mut out = Vec::new();
    for c in all_statuses(status) {
        let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else { continue };
        if t.exit_code == 0 {
            continue;
        }
        let mut text = format!("container {:?}: exit code {}", c.name, t.exit_code);
        if let Some(r) = t.reason.as_deref() {
            text.push_str(&format!(" ({r})"));
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            text.push_str(&format!(": {m}"));
        }
        out.push(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(
        name: &str,
        state: k8s::ContainerState,
        last: Option<k8s::ContainerState>,
    ) -> k8s::ContainerStatus {
        k8s::ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> k8s::ContainerState {
        k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        }
    }

    fn terminated(code: i32, reason: &str) -> k8s::ContainerState {
        k8s::ContainerState {
            terminated: Some(k8s::ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_map_to_task_states() {
        let s = k8s::PodStatus::default();
        assert_eq!(for_pod(Phase::Pending, false, &s).state, State::Starting);
        let r = for_pod(Phase::Running, true, &s);
        assert_eq!(
            (r.state, r.ready, r.message.as_str()),
            (State::Running, Some(true), "running, ready")
        );
        assert_eq!(for_pod(Phase::Succeeded, false, &s).state, State::Finished);
        assert_eq!(for_pod(Phase::Failed, false, &s).state, State::Failed);
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let s = k8s::PodStatus {
            container_statuses: Some(vec![container(
                "web",
                waiting("ErrImageNeverPull", "image \"x:1\" is not present"),
                None,
            )]),
            ..Default::default()
        };
        assert_eq!(
            for_pod(Phase::Pending, false, &s).message,
            "container \"web\": ErrImageNeverPull: image \"x:1\" is not present"
        );
        let s = k8s::PodStatus {
            container_statuses: Some(vec![container(
                "web",
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(terminated(1, "Error")),
            )]),
            ..Default::default()
        };
        let r = for_pod(Phase::Running, false, &s);
        assert_eq!(
            r.message,
            "container \"web\": CrashLoopBackOff: back-off 10s (last exit code 1, Error)"
        );
        let s = k8s::PodStatus {
            container_statuses: Some(vec![
                container("job", terminated(3, "Error"), None),
                container("ok", terminated(0, "Completed"), None),
            ]),
            ..Default::default()
        };
        let r = for_pod(Phase::Failed, false, &s);
        assert_eq!(r.message, "the pod failed: container \"job\": exit code 3 (Error)");
        assert_eq!(r.reason, Some("REASON_COMMAND_EXECUTOR_FAILED"));
    }

    #[test]
    fn reports_go_forward_and_on_change_only() {
        let s = k8s::PodStatus::default();
        let starting = for_pod(Phase::Pending, false, &s);
        let running = for_pod(Phase::Running, false, &s);
        let ready = for_pod(Phase::Running, true, &s);
        let done = for_pod(Phase::Succeeded, true, &s);
        assert!(worth_sending(None, &starting));
        assert!(!worth_sending(Some(&starting), &starting));
        assert!(worth_sending(Some(&starting), &running));
        assert!(worth_sending(Some(&running), &ready), "readiness changes are reported");
        assert!(!worth_sending(Some(&running), &starting), "never backwards");
        assert!(worth_sending(Some(&ready), &done));
        assert!(!worth_sending(Some(&done), &running), "nothing after the end");
    }
}
