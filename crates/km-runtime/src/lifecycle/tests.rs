//! Deterministic tests of restartPolicy, back-off and phase.

use std::time::{Duration, SystemTime};

use crate::lifecycle::*;
use crate::pod::RestartPolicy;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn pod(policy: RestartPolicy, n: usize) -> PodLifecycle {
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    PodLifecycle::new("default/p", &names, policy)
}

fn exited(code: i32, at: SystemTime) -> Observation {
    Observation::Exited {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        at,
    }
}

#[test]
fn new_pod_starts_every_container_once() {
    let mut p = pod(RestartPolicy::Always, 2);
    assert_eq!(p.phase(), Phase::Pending);
    assert_eq!(p.actions(t(0)), vec![Action::Start(0), Action::Start(1)]);
    assert!(p.actions(t(0)).is_empty(), "a start in flight is not repeated");
    p.observe(0, Observation::Started { at: t(0) });
    assert_eq!(p.phase(), Phase::Pending, "one container still being created");
    p.observe(1, Observation::Started { at: t(0) });
    assert_eq!(p.phase(), Phase::Running);
    let st = p.status(t(1));
    assert!(!st.ready, "not ready until readiness is observed");
    p.observe(0, Observation::Ready(true));
    p.observe(1, Observation::Ready(true));
    assert!(p.status(t(1)).ready);
}

#[test]
fn always_restarts_with_kubelet_backoff() {
    let mut p = pod(RestartPolicy::Always, 1);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    // First exit: restart at once.
    p.observe(0, exited(1, t(1)));
    assert_eq!(p.actions(t(1)), vec![Action::Start(0)]);
    p.observe(0, Observation::Started { at: t(1) });
    assert_eq!(p.status(t(1)).containers[0].restart_count, 1);
    // Second exit: 10 s, then 20 s, 40 s, ... capped at 300 s.
    let mut now = 1;
    for expected in [10, 20, 40, 80, 160, 300, 300] {
        now += 1;
        p.observe(0, exited(2, t(now)));
        assert!(p.actions(t(now + expected - 1)).is_empty(), "back-off {expected}s not over");
        let st = p.status(t(now + 1));
        match &st.containers[0].state {
            ContainerState::Waiting { reason, message } => {
                assert_eq!(reason, "CrashLoopBackOff");
                assert!(
                    message.contains("restarting failed container=c0 pod=default/p"),
                    "{message}"
                );
            }
            other => panic!("expected CrashLoopBackOff, got {other:?}"),
        }
        assert_eq!(st.containers[0].last_state.as_ref().map(|l| l.exit_code), Some(2));
        assert_eq!(st.phase, Phase::Running);
        assert_eq!(p.next_due(), Some(t(now + expected)));
        now += expected;
        assert_eq!(p.actions(t(now)), vec![Action::Start(0)]);
        p.observe(0, Observation::Started { at: t(now) });
    }
    assert_eq!(p.status(t(now)).containers[0].restart_count, 8);
}

#[test]
fn long_run_resets_backoff() {
    let mut p = pod(RestartPolicy::Always, 1);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    p.observe(0, exited(1, t(1)));
    p.actions(t(1));
    p.observe(0, Observation::Started { at: t(1) });
    p.observe(0, exited(1, t(2)));
    assert!(p.actions(t(2)).is_empty(), "second exit backs off");
    p.actions(t(12));
    p.observe(0, Observation::Started { at: t(12) });
    // Runs for 10 minutes, then exits: restarts at once.
    p.observe(0, exited(1, t(12 + 600)));
    assert_eq!(p.actions(t(12 + 600)), vec![Action::Start(0)]);
}

#[test]
fn on_failure_restarts_only_failures() {
    let mut p = pod(RestartPolicy::OnFailure, 2);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    p.observe(1, Observation::Started { at: t(0) });
    p.observe(0, exited(0, t(1)));
    p.observe(1, exited(3, t(1)));
    assert_eq!(p.actions(t(1)), vec![Action::Start(1)]);
    assert_eq!(p.phase(), Phase::Running);
    p.observe(1, Observation::Started { at: t(1) });
    p.observe(1, exited(0, t(2)));
    assert!(p.actions(t(100)).is_empty());
    assert_eq!(p.phase(), Phase::Succeeded);
    let st = p.status(t(100));
    assert!(!st.ready);
    assert!(
        matches!(&st.containers[0].state, ContainerState::Terminated(t) if t.reason == "Completed")
    );
}

#[test]
fn never_gives_failed_or_succeeded() {
    let mut p = pod(RestartPolicy::Never, 2);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    p.observe(1, Observation::Started { at: t(0) });
    p.observe(0, exited(0, t(1)));
    assert_eq!(p.phase(), Phase::Running, "one container still runs");
    p.observe(1, exited(137, t(2)));
    assert!(p.actions(t(100)).is_empty());
    assert_eq!(p.phase(), Phase::Failed);

    let mut ok = pod(RestartPolicy::Never, 1);
    ok.actions(t(0));
    ok.observe(0, Observation::Started { at: t(0) });
    ok.observe(0, exited(0, t(1)));
    assert_eq!(ok.phase(), Phase::Succeeded);
}

#[test]
fn start_failure_waits_with_reason_and_retries() {
    let mut p = pod(RestartPolicy::Always, 1);
    p.actions(t(0));
    p.observe(
        0,
        Observation::StartFailed {
            reason: "ErrImageNeverPull".into(),
            message: "image \"x\" is not present".into(),
            at: t(0),
        },
    );
    let st = p.status(t(0));
    assert_eq!(st.phase, Phase::Pending);
    assert!(matches!(&st.containers[0].state,
        ContainerState::Waiting { reason, .. } if reason == "ErrImageNeverPull"));
    // First retry at once, later ones back off.
    assert_eq!(p.actions(t(0)), vec![Action::Start(0)]);
    p.observe(
        0,
        Observation::StartFailed {
            reason: "ErrImageNeverPull".into(),
            message: String::new(),
            at: t(0),
        },
    );
    assert!(p.actions(t(9)).is_empty());
    assert_eq!(p.actions(t(10)), vec![Action::Start(0)]);
}

#[test]
fn liveness_failure_is_subject_to_restart_policy() {
    let mut p = pod(RestartPolicy::Always, 1);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    p.observe(0, Observation::Ready(true));
    p.observe(0, Observation::Unhealthy);
    assert!(!p.status(t(1)).ready);
    p.observe(0, exited(137, t(1)));
    assert_eq!(p.actions(t(1)), vec![Action::Start(0)]);

    let mut never = pod(RestartPolicy::Never, 1);
    never.actions(t(0));
    never.observe(0, Observation::Started { at: t(0) });
    never.observe(0, Observation::Unhealthy);
    never.observe(0, exited(137, t(1)));
    assert!(never.actions(t(100)).is_empty());
    assert_eq!(never.phase(), Phase::Failed);
}

#[test]
fn readiness_only_counts_while_running() {
    let mut p = pod(RestartPolicy::Always, 1);
    p.observe(0, Observation::Ready(true));
    assert!(!p.status(t(0)).containers[0].ready);
    p.actions(t(0));
    p.observe(0, Observation::Started { at: t(0) });
    p.observe(0, Observation::Ready(true));
    assert!(p.status(t(0)).ready);
    p.observe(0, exited(1, t(1)));
    assert!(!p.status(t(1)).ready);
}

#[test]
fn adopted_containers_are_running_without_a_start() {
    let mut p = pod(RestartPolicy::Always, 2);
    // Container 0 was found running (adopted); container 1 must be started.
    p.observe(0, Observation::Started { at: t(0) });
    assert_eq!(p.actions(t(1)), vec![Action::Start(1)]);
    p.observe(1, Observation::Started { at: t(1) });
    let st = p.status(t(1));
    assert_eq!(st.phase, Phase::Running);
    assert_eq!(st.containers[0].restart_count, 0);
}
