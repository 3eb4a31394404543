//! One test per rule of the core: inputs at given times, and the effects that must follow.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use km_scheduler_core::task::{self, TASK_ID};
use km_scheduler_core::{
    AcceptOutcome, Config, Core, Effect, ExecutorChoice, Input, LaunchPolicy, NodeInfo,
    PhaseChange, Source, TaskState, WriteResult,
};

use crate::harness::*;

fn has<F: Fn(&Effect) -> bool>(effects: &[Effect], f: F) -> bool {
    effects.iter().any(f)
}

/// Starts a driver with `pods`, gives one offer of `cpus` on agent a1, plans.
fn placed(pods: &[k8s_openapi::api::core::v1::Pod], cpus: f64) -> (Driver, Vec<Effect>) {
    let mut d = Driver::started(pods);
    d.feed(Input::Offers(vec![offer("o1", "a1", cpus)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    (d, e)
}

fn task_of(effects: &[Effect], pod: &str) -> String {
    accepts(effects)
        .iter()
        .flat_map(|a| a.tasks.iter())
        .find(|t| &*t.pod.name == pod)
        .map(|t| t.task_id.clone())
        .unwrap_or_else(|| panic!("no task for {pod} in {effects:#?}"))
}

#[test]
fn nothing_is_planned_before_the_first_listing_and_a_subscription() {
    let mut d = Driver::new(config());
    d.feed(Input::PodResyncStarted, t(0.0));
    d.feed(Input::PodApplied(Arc::new(pod("p1", 100))), t(0.0));
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.0));
    d.plan(t(0.0));
    assert!(accepts(&d.take()).is_empty(), "planned before the listing was complete");
    d.feed(Input::PodResyncDone, t(0.1));
    d.plan(t(0.1));
    assert!(accepts(&d.take()).is_empty(), "planned without a subscription");
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.2));
    d.feed(Input::Offers(vec![offer("o2", "a1", 4.0)]), t(0.2));
    d.plan(t(0.2));
    assert!(accepts(&d.take()).is_empty(), "planned before the reconciliation barrier");
    d.pass_barrier(t(0.3));
    d.plan(t(0.3));
    assert_eq!(task_ids(&d.take()).len(), 1);
}

#[test]
fn many_pods_pack_into_one_accept_per_agent() {
    let pods: Vec<_> = (0..30).map(|i| pod(&format!("p{i}"), 100)).collect();
    let (_, e) = placed(&pods, 4.0);
    let a = accepts(&e);
    assert_eq!(a.len(), 1, "one ACCEPT for the agent");
    assert_eq!(a[0].offer_ids, vec!["o1".to_owned()]);
    assert_eq!(a[0].tasks.len(), 30);
    assert!(matches!(a[0].executor, ExecutorChoice::New(_)), "a new executor is started");
    // Nothing waits any more: what the ACCEPT leaves is refused like a decline, and offers stop.
    assert_eq!(a[0].refuse_seconds, 5.0);
    assert!(has(&e, |x| *x == Effect::Suppress));
    // The task carries the pod with the launch recorded.
    let t0 = &a[0].tasks[0];
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_slice(&t0.data).unwrap();
    let ann = pod.metadata.annotations.unwrap();
    assert_eq!(ann.get(TASK_ID), Some(&t0.task_id));
    assert_eq!(ann.get(task::BINDING_HOST).map(String::as_str), Some("host-a1"));
    assert_eq!(ann.get(task::EXECUTOR_ID).map(String::as_str), Some(EXEC));
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("host-a1"));
    assert_eq!(task::pod_uid_of(&t0.task_id), Some(&*t0.pod.uid));
    assert_eq!(t0.name, format!("{}.default.pod", t0.pod.name));
    assert_eq!(t0.kill_grace, Duration::from_secs(30));
}

#[test]
fn a_new_agent_gets_a_node_and_its_first_offer_is_used() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let nodes: Vec<_> = e.iter().filter(|x| matches!(x, Effect::EnsureNode(_))).collect();
    assert_eq!(nodes.len(), 1);
    let Effect::EnsureNode(n) = nodes[0] else { unreachable!() };
    assert_eq!(n.name, "host-a1");
    assert!(n.labels.contains(&("k8s.mesosphere.io/attribute-rack".into(), "r-a1".into())));
    assert!(n.labels.contains(&("kubernetes.io/hostname".into(), "host-a1".into())));
    assert_eq!(task_ids(&e).len(), 1, "the first offer of a new agent is used at once");
    // The same agent again: no new Node write.
    d.feed(Input::Offers(vec![offer("o2", "a1", 2.0)]), t(1.0));
    assert!(!has(&d.take(), |x| matches!(x, Effect::EnsureNode(_))));
    // Changed attributes: written again.
    let mut o = offer("o3", "a1", 2.0);
    o.attributes = vec![km_offer_matcher::Attribute::text("rack", "moved")];
    d.feed(Input::Offers(vec![o]), t(2.0));
    assert!(has(&d.take(), |x| matches!(x, Effect::EnsureNode(_))));
}

#[test]
fn unused_offers_are_declined_and_offers_suppressed_when_nothing_waits() {
    let mut d = Driver::started(&[]);
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0), offer("o2", "a2", 4.0)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    assert!(has(&e, |x| matches!(x, Effect::Decline { offer_ids, refuse_seconds }
        if offer_ids.len() == 2 && *refuse_seconds == 5.0)));
    assert!(has(&e, |x| *x == Effect::Suppress));
    // A pod arrives: offers are revived, once.
    d.feed(Input::PodApplied(Arc::new(pod("p1", 100))), t(1.0));
    d.feed(Input::PodApplied(Arc::new(pod("p2", 100))), t(1.0));
    let e = d.take();
    assert_eq!(e.iter().filter(|x| **x == Effect::Revive).count(), 1, "{e:#?}");
}

#[test]
fn refuse_seconds_comes_from_the_configuration() {
    let mut cfg = config();
    cfg.refuse_seconds = 42.0;
    let mut d = Driver::new(cfg);
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.0));
    d.feed(Input::PodResyncStarted, t(0.0));
    d.feed(Input::PodResyncDone, t(0.0));
    d.pass_barrier(t(0.0));
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.1));
    d.plan(t(0.1));
    assert!(has(
        &d.take(),
        |x| matches!(x, Effect::Decline { refuse_seconds, .. } if *refuse_seconds == 42.0)
    ));
    let bad = Config { refuse_seconds: f64::NAN, ..config() };
    assert!(Core::new(bad).is_err());
    let bad = Config { refuse_seconds: -1.0, ..config() };
    assert!(Core::new(bad).is_err());
}

#[test]
fn offers_are_held_while_pods_wait_and_declined_at_their_ttl() {
    // A pod too big for the offer keeps waiting; the offer is held, then declined at 5 s.
    let (mut d, e) = placed(&[pod("big", 8000)], 4.0);
    assert!(accepts(&e).is_empty());
    assert!(!has(&e, |x| matches!(x, Effect::Decline { .. })), "held while a pod waits");
    let msg = e.iter().find_map(|x| match x {
        Effect::Unschedulable { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.starts_with("0/1 offered agents fit: insufficient cpus on 1")),
        "{msg:?}"
    );
    // A small pod arriving meanwhile is placed on the held offer at once.
    d.feed(Input::PodApplied(Arc::new(pod("small", 100))), t(2.0));
    d.plan(t(2.0));
    let e = d.take();
    assert_eq!(task_ids(&e).len(), 1);
    assert_eq!(accepts(&e)[0].refuse_seconds, 0.0, "pods still wait: the remainder comes back");
    d.feed(Input::Offers(vec![offer("o2", "a2", 4.0)]), t(3.0));
    d.tick(t(7.9));
    assert!(!has(&d.take(), |x| matches!(x, Effect::Decline { .. })));
    d.tick(t(8.0));
    assert!(has(
        &d.take(),
        |x| matches!(x, Effect::Decline { offer_ids, .. } if offer_ids == &["o2".to_owned()])
    ));
}

#[test]
fn a_pod_that_can_never_fit_says_why_at_once() {
    let mut d = Driver::started(&[with_host_port(pod("p", 100), 8080)]);
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    let msg = e
        .iter()
        .find_map(|x| match x {
            Effect::Unschedulable { message, .. } => Some(message.clone()),
            _ => None,
        })
        .expect("reported");
    assert!(msg.contains("host port 8080"), "{msg}");
    assert!(msg.contains("can never fit any known agent"), "{msg}");
}

#[test]
fn back_off_grows_and_a_new_offer_breaks_it_even_for_node_selector_pods() {
    let p = with_selector(pod("sel", 100), "k8s.mesosphere.io/attribute-rack", "r-a2");
    let (mut d, e) = placed(&[p], 4.0);
    assert!(accepts(&e).is_empty());
    // Within the back-off and without new offers, nothing is tried again.
    d.feed(Input::Rescinded("o1".into()), t(0.2));
    d.tick(t(0.3));
    assert!(d.take().is_empty());
    // The agent the selector wants offers: placed at once, back-off or not.
    d.feed(Input::Offers(vec![offer("o2", "a2", 4.0)]), t(0.4));
    d.plan(t(0.4));
    let e = d.take();
    assert_eq!(task_ids(&e).len(), 1, "{e:#?}");
    assert_eq!(accepts(&e)[0].agent_id, "a2");
}

#[test]
fn repeated_reasons_are_reported_with_back_off_not_on_every_attempt() {
    let (mut d, e) = placed(&[pod("big", 8000)], 4.0);
    assert_eq!(e.iter().filter(|x| matches!(x, Effect::Unschedulable { .. })).count(), 1);
    // New offers every 100 ms, each one tried, the same reason not repeated.
    for i in 0..20 {
        let now = 0.2 + f64::from(i) * 0.1;
        d.feed(Input::Offers(vec![offer(&format!("x{i}"), &format!("b{i}"), 1.0)]), t(now));
        d.plan(t(now));
    }
    let e = d.take();
    let reports = e.iter().filter(|x| matches!(x, Effect::Unschedulable { .. })).count();
    assert!(reports <= 3, "{reports} reports in 2 s");
}

#[test]
fn binding_waits_for_the_task_to_start_and_running_is_written_once() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    assert!(!has(&e, |x| matches!(x, Effect::Bind { .. })), "no binding before the task starts");
    d.feed(
        Input::AcceptDone {
            agent_id: "a1".into(),
            task_ids: vec![id.clone()],
            outcome: AcceptOutcome::Accepted,
        },
        t(0.2),
    );
    d.feed(Input::Update(update(&id, "a1", TaskState::Starting)), t(0.3));
    let e = d.take();
    let bind = e.iter().find_map(|x| match x {
        Effect::Bind { node, annotations, task_id, .. } => {
            Some((node.clone(), annotations.clone(), task_id.clone()))
        }
        _ => None,
    });
    let (node, annotations, bound_task) = bind.expect("bound on TASK_STARTING");
    assert_eq!(node, "host-a1");
    assert_eq!(bound_task, id);
    assert!(annotations.contains(&(TASK_ID.to_owned(), id.clone())));
    assert!(has(&e, |x| matches!(x, Effect::Acknowledge { task_id, .. } if *task_id == id)));
    // RUNNING before the binding is done: the phase waits for the binding.
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.4));
    let e = d.take();
    assert!(!has(&e, |x| matches!(x, Effect::SetPhase { .. })));
    assert!(!has(&e, |x| matches!(x, Effect::Bind { .. })), "bound once");
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.5));
    let e = d.take();
    assert!(has(&e, |x| matches!(x, Effect::SetPhase { change: PhaseChange::Running, .. })));
    assert!(has(&e, |x| matches!(x, Effect::Event { reason: "Scheduled", .. })));
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.6));
    assert!(!has(&d.take(), |x| matches!(x, Effect::SetPhase { .. })), "written once");
}

#[test]
fn an_executor_that_reports_pod_status_is_not_overwritten() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    let mut u = update(&id, "a1", TaskState::Running);
    u.executor_reports_status = true;
    u.source = Some(Source::Executor);
    d.feed(Input::Update(u), t(0.3));
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.4));
    let mut fin = update(&id, "a1", TaskState::Finished);
    fin.executor_reports_status = true;
    fin.source = Some(Source::Executor);
    d.feed(Input::Update(fin), t(0.5));
    assert!(!has(&d.take(), |x| matches!(x, Effect::SetPhase { .. })));
}

#[test]
fn a_launch_that_fails_before_binding_requeues_the_pod_with_back_off() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    let mut u = update(&id, "a1", TaskState::Failed);
    u.source = Some(Source::Agent);
    u.reason = Some("REASON_EXECUTOR_TERMINATED".into());
    u.message = Some("exec format error".into());
    d.feed(Input::Update(u), t(1.0));
    let e = d.take();
    let msg = e.iter().find_map(|x| match x {
        Effect::Event { reason: "FailedLaunch", message, .. } => Some(message.clone()),
        _ => None,
    });
    let msg = msg.expect("a FailedLaunch event");
    assert!(
        msg.contains("TASK_FAILED on host-a1 (REASON_EXECUTOR_TERMINATED): exec format error"),
        "{msg}"
    );
    assert!(!has(&e, |x| matches!(x, Effect::SetPhase { .. } | Effect::Bind { .. })));
    // Placed again once the back-off (≤ 1 s) has passed and an offer is there.
    d.feed(Input::Offers(vec![offer("o2", "a1", 4.0)]), t(1.1));
    d.plan(t(1.1));
    let second = task_ids(&d.take());
    assert_eq!(second.len(), 1, "breakout on the new offer");
    assert_ne!(second[0], id, "a new task ID");
}

#[test]
fn an_accept_that_fails_requeues_its_pods() {
    let (mut d, e) = placed(&[pod("p1", 100), pod("p2", 100)], 4.0);
    let ids = task_ids(&e);
    d.feed(
        Input::AcceptDone {
            agent_id: "a1".into(),
            task_ids: ids.clone(),
            outcome: AcceptOutcome::Refused("400 Bad Request: invalid offers".into()),
        },
        t(0.2),
    );
    let e = d.take();
    assert_eq!(
        e.iter().filter(|x| matches!(x, Effect::Event { reason: "FailedLaunch", .. })).count(),
        2
    );
    d.feed(Input::Offers(vec![offer("o2", "a1", 4.0)]), t(2.5));
    d.plan(t(2.5));
    assert_eq!(task_ids(&d.take()).len(), 2);
}

#[test]
fn a_bound_pod_whose_task_is_lost_fails_with_a_reason() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.3));
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.4));
    d.take();
    let mut u = update(&id, "a1", TaskState::Lost);
    u.source = Some(Source::Master);
    u.reason = Some("REASON_AGENT_REMOVED".into());
    u.uuid = None;
    d.feed(Input::Update(u), t(1.0));
    let e = d.take();
    assert!(
        has(
            &e,
            |x| matches!(x, Effect::SetPhase { change: PhaseChange::Failed { reason, message }, .. }
            if reason == "TaskLost" && message.contains("REASON_AGENT_REMOVED"))
        ),
        "{e:#?}"
    );
    assert!(!has(&e, |x| matches!(x, Effect::Acknowledge { .. })), "master updates carry no uuid");
    // Not queued again: no launch on the next offer.
    d.feed(Input::Offers(vec![offer("o2", "a2", 4.0)]), t(2.0));
    d.plan(t(2.0));
    assert!(accepts(&d.take()).is_empty());
}

#[test]
fn every_abnormal_end_of_a_bound_task_fails_the_pod() {
    for state in [
        TaskState::Gone,
        TaskState::Unreachable,
        TaskState::Dropped,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ] {
        let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
        let id = task_of(&e, "p1");
        d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.3));
        d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.4));
        d.take();
        d.feed(Input::Update(update(&id, "a1", state)), t(1.0));
        let e = d.take();
        assert!(
            has(&e, |x| matches!(x, Effect::SetPhase { change: PhaseChange::Failed { .. }, .. })),
            "{state}: {e:#?}"
        );
    }
}

#[test]
fn a_finished_task_succeeds_its_pod() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.3));
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.4));
    d.feed(Input::Update(update(&id, "a1", TaskState::Finished)), t(1.0));
    assert!(has(&d.take(), |x| matches!(
        x,
        Effect::SetPhase { change: PhaseChange::Succeeded, .. }
    )));
}

#[test]
fn a_task_ending_while_its_binding_is_in_flight_is_settled_after_the_binding() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Starting)), t(0.3));
    d.feed(Input::Update(update(&id, "a1", TaskState::Lost)), t(0.4));
    assert!(!has(&d.take(), |x| matches!(x, Effect::SetPhase { .. })));
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.5));
    assert!(has(&d.take(), |x| matches!(
        x,
        Effect::SetPhase { change: PhaseChange::Failed { .. }, .. }
    )));
}

#[test]
fn deleting_a_pod_kills_its_task_with_the_grace_period_and_then_removes_it() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.3));
    d.feed(Input::BindDone { task_id: id.clone(), result: WriteResult::Ok }, t(0.4));
    d.take();
    let mut p = pod("p1", 100);
    p.spec.as_mut().unwrap().node_name = Some("host-a1".into());
    p.metadata.annotations = Some([(TASK_ID.to_owned(), id.clone())].into());
    p.metadata.deletion_timestamp =
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_100).unwrap()));
    p.metadata.deletion_grace_period_seconds = Some(7);
    d.feed(Input::PodApplied(Arc::new(p.clone())), t(1.0));
    let e = d.take();
    assert!(
        has(&e, |x| matches!(x, Effect::Kill { task_id, grace, agent_id }
            if *task_id == id && *grace == Duration::from_secs(7) && agent_id.as_deref() == Some("a1"))),
        "{e:#?}"
    );
    // Not killed twice for the same deletion…
    d.feed(Input::PodApplied(Arc::new(p)), t(2.0));
    assert!(!has(&d.take(), |x| matches!(x, Effect::Kill { .. })));
    // …unless the task is still there well after the grace period.
    d.tick(t(1.0 + 7.0 + 15.0));
    assert!(has(&d.take(), |x| matches!(x, Effect::Kill { .. })));
    d.feed(Input::Update(update(&id, "a1", TaskState::Killed)), t(25.0));
    let e = d.take();
    assert!(has(&e, |x| matches!(x, Effect::DeletePod { pod } if &*pod.uid == "uid-p1")), "{e:#?}");
    assert!(!has(&e, |x| matches!(x, Effect::SetPhase { .. })));
}

#[test]
fn a_task_whose_pod_is_gone_is_killed() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::PodDeleted(Arc::new(pod("p1", 100))), t(0.2));
    assert!(has(&d.take(), |x| matches!(x, Effect::Kill { task_id, .. } if *task_id == id)));
    // A task nobody knows, for a pod that does not exist: killed.
    d.feed(Input::Update(update("pod.uid-ghost.0000abcd", "a9", TaskState::Running)), t(1.0));
    let e = d.take();
    assert!(has(&e, |x| matches!(x, Effect::Kill { task_id, agent_id, .. }
        if task_id == "pod.uid-ghost.0000abcd" && agent_id.as_deref() == Some("a9"))));
}

#[test]
fn a_pod_missing_from_a_relist_is_treated_as_deleted() {
    let (mut d, e) = placed(&[pod("p1", 100), pod("p2", 100)], 4.0);
    let id1 = task_of(&e, "p1");
    d.feed(Input::PodResyncStarted, t(1.0));
    d.feed(Input::PodApplied(Arc::new(pod("p2", 100))), t(1.0));
    d.feed(Input::PodResyncDone, t(1.0));
    let e = d.take();
    let killed: Vec<_> = e
        .iter()
        .filter_map(|x| match x {
            Effect::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(killed, vec![id1]);
}

#[test]
fn a_restart_recovers_running_pods_and_kills_or_launches_nothing() {
    // The pods as an earlier scheduler left them: bound, with the task recorded.
    let mut pods = Vec::new();
    for i in 0..3 {
        let mut p = pod(&format!("r{i}"), 100);
        p.spec.as_mut().unwrap().node_name = Some("host-a1".into());
        p.metadata.annotations = Some(
            [
                (TASK_ID.to_owned(), format!("pod.uid-r{i}.0000000{i}")),
                (task::SLAVE_ID.to_owned(), "a1".to_owned()),
            ]
            .into(),
        );
        pods.push(p);
    }
    let mut d = Driver::new(config());
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.0));
    // Implicit reconciliation before the listing: updates are only acknowledged.
    let mut early = update("pod.uid-r0.00000000", "a1", TaskState::Running);
    early.reason = Some("REASON_RECONCILIATION".into());
    d.feed(Input::Update(early), t(0.0));
    assert!(!has(&d.take(), |x| matches!(x, Effect::Kill { .. })));
    d.feed(Input::PodResyncStarted, t(0.1));
    for p in &pods {
        d.feed(Input::PodApplied(Arc::new(p.clone())), t(0.1));
    }
    d.feed(Input::PodResyncDone, t(0.1));
    d.pass_barrier(t(0.2));
    let e = d.take();
    let reconciled = e.iter().find_map(|x| match x {
        Effect::Reconcile { tasks } if tasks.len() > 1 => Some(tasks.clone()),
        _ => None,
    });
    let mut reconciled = reconciled.expect("explicit reconciliation of the recovered tasks");
    reconciled.sort();
    assert_eq!(reconciled.len(), 3);
    assert_eq!(reconciled[0], ("pod.uid-r0.00000000".to_owned(), Some("a1".to_owned())));
    for i in 0..3 {
        let mut u = update(&format!("pod.uid-r{i}.0000000{i}"), "a1", TaskState::Running);
        u.reason = Some("REASON_RECONCILIATION".into());
        u.uuid = None;
        d.feed(Input::Update(u), t(0.3));
    }
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.4));
    d.plan(t(0.4));
    let e = d.take();
    assert!(
        !has(&e, |x| matches!(
            x,
            Effect::Kill { .. } | Effect::Accept(_) | Effect::Bind { .. } | Effect::SetPhase { .. }
        )),
        "{e:#?}"
    );
    // No retry of the explicit reconciliation: every task answered.
    d.tick(t(5.0));
    assert!(!has(&d.take(), |x| matches!(x, Effect::Reconcile { tasks } if !tasks.is_empty())));
}

#[test]
fn a_task_launched_by_a_dead_incarnation_is_adopted_not_launched_again() {
    let mut d = Driver::started(&[pod("p1", 100)]);
    // The agent is known (from a Node written earlier) and the master reports a running task
    // for the waiting pod.
    d.feed(
        Input::NodeKnown(NodeInfo {
            name: "host-a1".into(),
            agent_id: Some("a1".into()),
            executor_id: None,
            executor_resources: None,
        }),
        t(0.0),
    );
    let mut u = update("pod.uid-p1.deadbeef", "a1", TaskState::Running);
    u.reason = Some("REASON_RECONCILIATION".into());
    u.uuid = None;
    d.feed(Input::Update(u), t(0.1));
    let e = d.take();
    assert!(
        has(&e, |x| matches!(x, Effect::Bind { task_id, node, .. }
        if task_id == "pod.uid-p1.deadbeef" && node == "host-a1")),
        "{e:#?}"
    );
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.2));
    d.plan(t(0.2));
    assert!(accepts(&d.take()).is_empty(), "launched twice");
}

#[test]
fn reconciliation_explicit_with_retries_then_implicit_periodically() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.2));
    // Re-subscription: explicit reconciliation of the known task, retried until it answers.
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(10.0));
    d.tick(t(10.0));
    let explicit = |e: &[Effect]| {
        e.iter().filter(|x| matches!(x, Effect::Reconcile { tasks } if !tasks.is_empty())).count()
    };
    assert_eq!(explicit(&d.take()), 1);
    d.tick(t(10.5));
    assert_eq!(explicit(&d.take()), 0);
    d.tick(t(11.0));
    assert_eq!(explicit(&d.take()), 1, "retried after 1 s");
    d.tick(t(12.9));
    assert_eq!(explicit(&d.take()), 0);
    d.tick(t(13.0));
    assert_eq!(explicit(&d.take()), 1, "then after 2 s");
    let mut u = update(&id, "a1", TaskState::Running);
    u.reason = Some("REASON_RECONCILIATION".into());
    d.feed(Input::Update(u), t(13.5));
    d.tick(t(20.0));
    assert_eq!(explicit(&d.take()), 0, "answered: no more retries");
    // Implicit: 15 s after the subscription, then every 300 s.
    let implicit = |e: &[Effect]| {
        e.iter().filter(|x| matches!(x, Effect::Reconcile { tasks } if tasks.is_empty())).count()
    };
    d.tick(t(24.9));
    assert_eq!(implicit(&d.take()), 0);
    d.tick(t(25.0));
    assert_eq!(implicit(&d.take()), 1);
    d.tick(t(324.0));
    assert_eq!(implicit(&d.take()), 0);
    d.tick(t(325.0));
    assert_eq!(implicit(&d.take()), 1);
    // An operator request waits for the cooldown.
    d.feed(Input::RequestImplicit, t(330.0));
    d.tick(t(330.0));
    assert_eq!(implicit(&d.take()), 0);
    d.tick(t(340.0));
    assert_eq!(implicit(&d.take()), 1);
}

#[test]
fn invalid_pods_are_reported_and_do_not_stop_the_others() {
    let mut dup = with_host_port(pod("dup", 100), 31005);
    dup.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap().push(
        k8s_openapi::api::core::v1::ContainerPort {
            container_port: 81,
            host_port: Some(31005),
            ..Default::default()
        },
    );
    let mut rc = pod("rc", 100);
    rc.spec.as_mut().unwrap().runtime_class_name = Some("kata".into());
    let mut q = pod("q", 100);
    q.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()),
        );
    let mut d = Driver::started(&[]);
    for p in [dup, rc, q, pod("ok", 100)] {
        d.feed(Input::PodApplied(Arc::new(p)), t(0.0));
    }
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    let msgs: Vec<(String, String)> = e
        .iter()
        .filter_map(|x| match x {
            Effect::Unschedulable { pod, message } => Some((pod.name.to_string(), message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    let find = |n: &str| msgs.iter().find(|(p, _)| p == n).map(|(_, m)| m.clone()).unwrap();
    assert!(find("dup").contains("host port 31005 is used twice"), "{}", find("dup"));
    assert!(find("rc").contains("unknown runtime class \"kata\""), "{}", find("rc"));
    assert!(find("q").starts_with("invalid pod spec: "), "{}", find("q"));
    assert_eq!(task_ids(&e).len(), 1, "the valid pod is placed");
}

#[test]
fn pods_of_other_schedulers_and_pods_bound_by_others_are_ignored() {
    let mut other = pod("other", 100);
    other.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into());
    let mut bound = pod("bound", 100);
    bound.spec.as_mut().unwrap().node_name = Some("somewhere".into());
    let mut mirror = pod("mirror", 100);
    mirror.metadata.annotations = Some([(task::MIRROR_POD.to_owned(), "x".to_owned())].into());
    let (d, e) = placed(&[other, bound, mirror], 4.0);
    assert!(accepts(&e).is_empty());
    assert_eq!(d.core.gauges().pods, 0);
    // A custom scheduler name is honoured.
    let mut cfg = config();
    cfg.scheduler_name = "my-scheduler".into();
    let mut d = Driver::new(cfg);
    let mut p = pod("mine", 100);
    p.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into());
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.0));
    d.feed(Input::PodResyncStarted, t(0.0));
    d.feed(Input::PodApplied(Arc::new(p)), t(0.0));
    d.feed(Input::PodApplied(Arc::new(pod("default", 100))), t(0.0));
    d.feed(Input::PodResyncDone, t(0.0));
    d.pass_barrier(t(0.0));
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    let names: Vec<String> =
        accepts(&e).iter().flat_map(|a| a.tasks.iter().map(|t| t.pod.name.to_string())).collect();
    assert_eq!(names, vec!["mine".to_owned()]);
}

#[test]
fn a_refused_binding_kills_the_task() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Starting)), t(0.3));
    d.feed(
        Input::BindDone {
            task_id: id.clone(),
            result: WriteResult::Rejected("already assigned".into()),
        },
        t(0.4),
    );
    assert!(has(&d.take(), |x| matches!(x, Effect::Kill { task_id, .. } if *task_id == id)));
}

#[test]
fn kamikaze_asks_every_known_executor() {
    let (mut d, _) = placed(&[pod("p1", 100)], 4.0);
    d.feed(Input::Kamikaze, t(1.0));
    let e = d.take();
    assert!(has(&e, |x| matches!(x, Effect::Message { agent_id, executor_id, data }
        if agent_id == "a1" && executor_id == EXEC && data == b"kamikaze")));
}

#[test]
fn the_baseline_policy_launches_one_pod_per_agent_and_round() {
    let mut cfg = config();
    cfg.launch_policy = LaunchPolicy::OnePodPerOffer;
    let mut d = Driver::new(cfg);
    d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.0));
    d.feed(Input::PodResyncStarted, t(0.0));
    for i in 0..10 {
        d.feed(Input::PodApplied(Arc::new(pod(&format!("p{i}"), 100))), t(0.0));
    }
    d.feed(Input::PodResyncDone, t(0.0));
    d.pass_barrier(t(0.0));
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0), offer("o2", "a2", 4.0)]), t(0.1));
    d.plan(t(0.1));
    let e = d.take();
    assert_eq!(accepts(&e).len(), 2);
    assert!(accepts(&e).iter().all(|a| a.tasks.len() == 1 && a.refuse_seconds == 5.0));
    assert_eq!(d.core.gauges().queued, 8);
}

#[test]
fn executor_resources_are_remembered_per_agent() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let ExecutorChoice::New(res) = accepts(&e)[0].executor.clone() else { panic!("new executor") };
    // The next offer of the agent lists the running executor: same resources, not a new one.
    d.feed(Input::PodApplied(Arc::new(pod("p2", 100))), t(1.0));
    let mut o = offer("o2", "a1", 3.0);
    o.executor_ids = vec![EXEC.to_owned()];
    d.feed(Input::Offers(vec![o]), t(1.0));
    d.plan(t(1.0));
    let e = d.take();
    assert_eq!(accepts(&e)[0].executor, ExecutorChoice::Running(Some(res)));
}

#[test]
fn an_offer_id_seen_before_is_never_used_again() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    assert_eq!(task_ids(&e).len(), 1);
    // The same offer ID again (a confused or replayed master): ignored.
    d.feed(Input::PodApplied(Arc::new(pod("p2", 100))), t(1.0));
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(1.0));
    d.plan(t(1.0));
    assert!(accepts(&d.take()).is_empty());
    // Long after the linger time it is a new offer.
    d.feed(Input::Offers(vec![offer("o1", "a1", 4.0)]), t(200.0));
    d.tick(t(200.0));
    assert_eq!(task_ids(&d.take()).len(), 1);
}

#[test]
fn pods_in_back_off_meet_new_offers_at_most_once_per_listener_delay() {
    let (mut d, _) = placed(&[pod("big", 3000)], 1.0);
    // First breakout at 0.2 with a too small offer.
    d.feed(Input::Offers(vec![offer("o2", "a2", 1.0)]), t(0.2));
    d.plan(t(0.2));
    d.take();
    // A fitting offer 0.3 s later waits for the listener delay (1 s)…
    d.feed(Input::Offers(vec![offer("o3", "a3", 4.0)]), t(0.5));
    d.plan(t(0.5));
    assert!(accepts(&d.take()).is_empty());
    assert!(d.core.next_wakeup(t(0.5)).is_some_and(|w| w <= Duration::from_secs_f64(1.2)));
    // …and is used once it has passed.
    d.tick(t(1.2));
    assert_eq!(task_ids(&d.take()).len(), 1);
}

#[test]
fn an_explicit_reconciliation_without_answers_is_abandoned() {
    let (mut d, e) = placed(&[pod("p1", 100)], 4.0);
    let id = task_of(&e, "p1");
    d.feed(Input::Update(update(&id, "a1", TaskState::Running)), t(0.2));
    d.feed(Input::RequestExplicit, t(1.0));
    d.tick(t(16.0));
    let explicit = |e: &[Effect]| {
        e.iter().filter(|x| matches!(x, Effect::Reconcile { tasks } if !tasks.is_empty())).count()
    };
    assert_eq!(explicit(&d.take()), 1);
    let mut sent = 0;
    for s in 17..60 {
        d.tick(t(f64::from(s)));
        sent += explicit(&d.take());
    }
    assert!(sent <= 5, "{sent} retries after the abort timeout");
    d.tick(t(120.0));
    assert_eq!(explicit(&d.take()), 0, "abandoned after 30 s");
}

#[test]
fn pods_that_arrive_while_no_offer_is_held_take_the_next_offer_without_back_off() {
    // The agent's one offer goes to the first pod; the rest arrive in a stream while the
    // master holds the remainder back until its next allocation.
    let (mut d, first) = placed(&[pod("p0", 50)], 8.0);
    assert_eq!(task_ids(&first).len(), 1);
    for i in 1..100 {
        let at = 0.1 + f64::from(i) * 0.007;
        d.feed(Input::PodApplied(Arc::new(pod(&format!("p{i}"), 50))), t(at));
        d.plan(t(at));
    }
    let e = d.take();
    assert!(accepts(&e).is_empty());
    assert!(
        !has(&e, |x| matches!(x, Effect::Unschedulable { .. })),
        "waiting for an offer is not a failure to report"
    );
    // The next offer, well within the listener delay and the initial back-off, takes them all.
    d.feed(Input::Offers(vec![offer("o2", "a1", 7.9)]), t(0.9));
    d.plan(t(0.9));
    assert_eq!(task_ids(&d.take()).len(), 99);
}

#[test]
fn a_pod_that_does_not_fit_the_offers_held_still_backs_off() {
    let (mut d, _) = placed(&[pod("p0", 100)], 1.0);
    d.feed(Input::Offers(vec![offer("o2", "a2", 0.5)]), t(0.2));
    d.feed(Input::PodApplied(Arc::new(pod("big", 900))), t(0.2));
    d.plan(t(0.2));
    let e = d.take();
    assert!(accepts(&e).is_empty());
    assert!(has(&e, |x| matches!(x, Effect::Unschedulable { .. })), "the reason is reported");
    // A bigger offer at once breaks the back-off (first breakout)…
    d.feed(Input::Offers(vec![offer("o3", "a3", 0.6)]), t(0.3));
    d.plan(t(0.3));
    d.take();
    // …but a third one within the listener delay waits for it.
    d.feed(Input::Offers(vec![offer("o4", "a4", 4.0)]), t(0.5));
    d.plan(t(0.5));
    assert!(accepts(&d.take()).is_empty());
}
