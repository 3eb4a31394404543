//! The pod worker: one task per pod that drives [`PodLifecycle`] with a
//! [`ContainerRuntime`]. It creates the sandbox, starts containers when the
//! lifecycle says so, waits for their exits, runs their probes, publishes
//! a [`PodSnapshot`] after every change, and on stop terminates every
//! container in parallel (SIGTERM, SIGKILL after the grace period) and
//! removes the sandbox.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::lifecycle::{Observation, PodLifecycle};
use crate::pod::{NodeContext, PodPlan};
use crate::probe::{self, ProbeEvent};
use crate::runtime::{ContainerRuntime, Exit, Sandbox, Started};
use crate::status::{PodSnapshot, pod_status};

/// How long to wait before retrying a sandbox that could not be created.
const SANDBOX_RETRY: Duration = Duration::from_secs(2);

enum Event {
    Exited { index: usize, id: String, exit: Exit },
    Probe { index: usize, id: String, event: ProbeEvent },
}

struct Running {
    id: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs `plan` until `stop` fires (or its sender is dropped), then tears
/// it down. Status goes to `status`.
pub async fn run_pod<R: ContainerRuntime>(
    rt: Arc<R>,
    plan: PodPlan,
    node: NodeContext,
    status: watch::Sender<PodSnapshot>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let start_time = SystemTime::now();
    let pod = plan.key.full_name();
    let names = plan.container_names();
    let mut lc = PodLifecycle::new(pod.clone(), &names, plan.restart_policy);
    let publish =
        |lc: &PodLifecycle, ids: &[Option<String>], sandbox: Option<&Sandbox>, removed: bool| {
            let st = lc.status(SystemTime::now());
            let status_k8s = pod_status(
                &plan,
                &st,
                ids,
                sandbox.and_then(|s| s.pod_ip.as_deref()),
                &node.host_ip,
                start_time,
                rt.name(),
            );
            status.send_replace(PodSnapshot {
                phase: st.phase,
                ready: st.ready,
                container_ids: ids.to_vec(),
                status: status_k8s,
                removed,
            });
        };
    let mut ids: Vec<Option<String>> = vec![None; names.len()];

    // A sandbox an earlier run of km left for this pod is adopted, with its
    // running containers; otherwise one is created, retried until it exists
    // or the pod is stopped.
    let adopted = match rt.adopt(&plan).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(pod, runtime = rt.name(), "cannot look for containers to adopt: {e}");
            None
        }
    };
    let mut adopted_containers = Vec::new();
    let sandbox = if let Some(a) = adopted {
        tracing::info!(
            pod,
            runtime = rt.name(),
            "adopting the pod's running sandbox and containers"
        );
        adopted_containers = a.containers;
        a.sandbox
    } else {
        loop {
            match rt.create_sandbox(&plan).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(pod, runtime = rt.name(), "cannot create the pod sandbox: {e}");
                    let now = SystemTime::now();
                    for i in 0..names.len() {
                        lc.actions(now);
                        lc.observe(
                            i,
                            Observation::StartFailed {
                                reason: e.reason().into(),
                                message: e.to_string(),
                                at: now,
                            },
                        );
                    }
                    publish(&lc, &ids, None, false);
                    tokio::select! {
                        _ = tokio::time::sleep(SANDBOX_RETRY) => {}
                        _ = stop.wait_for(Option::is_some) => {
                            publish(&lc, &ids, None, true);
                            return;
                        }
                    }
                    lc = PodLifecycle::new(pod.clone(), &names, plan.restart_policy);
                }
            }
        }
    };

    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut running: Vec<Option<Running>> = (0..names.len()).map(|_| None).collect();
    for (i, started) in adopted_containers.into_iter().enumerate() {
        if let Some(started) = started
            && i < names.len()
        {
            lc.observe(i, Observation::Started { at: started.started_at });
            ids[i] = Some(started.id.clone());
            running[i] = Some(track(&rt, &plan, &sandbox, &tx, i, started));
        }
    }
    loop {
        let now = SystemTime::now();
        for action in lc.actions(now) {
            let crate::lifecycle::Action::Start(i) = action;
            match rt.start_container(&sandbox, &plan, i).await {
                Ok(started) => {
                    lc.observe(i, Observation::Started { at: started.started_at });
                    ids[i] = Some(started.id.clone());
                    running[i] = Some(track(&rt, &plan, &sandbox, &tx, i, started));
                }
                Err(e) => {
                    tracing::warn!(pod, container = names[i], "cannot start container: {e}");
                    lc.observe(
                        i,
                        Observation::StartFailed {
                            reason: e.reason().into(),
                            message: e.to_string(),
                            at: SystemTime::now(),
                        },
                    );
                }
            }
        }
        publish(&lc, &ids, Some(&sandbox), false);

        let wake = lc.next_due().map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
        tokio::select! {
            _ = stop.wait_for(Option::is_some) => break,
            Some(ev) = rx.recv() => match ev {
                Event::Exited { index, id, exit } => {
                    if running[index].as_ref().is_some_and(|r| r.id == id) {
                        running[index] = None;
                        tracing::info!(pod, container = names[index], code = exit.exit_code, "container exited");
                        lc.observe(index, Observation::Exited {
                            exit_code: exit.exit_code,
                            reason: exit.reason,
                            at: exit.finished_at,
                        });
                    }
                }
                Event::Probe { index, id, event } => {
                    if running[index].as_ref().is_some_and(|r| r.id == id) {
                        match event {
                            ProbeEvent::Ready(r) => lc.observe(index, Observation::Ready(r)),
                            ProbeEvent::Unhealthy(why) => {
                                tracing::info!(pod, container = names[index], "{why}; killing the container");
                                lc.observe(index, Observation::Unhealthy);
                                let (rt2, grace) = (rt.clone(), plan.grace_period);
                                tokio::spawn(async move {
                                    let _ = rt2.stop_container(&id, grace).await;
                                });
                            }
                        }
                    }
                }
            },
            _ = sleep_opt(wake) => {}
        }
    }

    // Stop: every running container in parallel (with the grace period the stop asked for,
    // else the pod's), then the sandbox.
    let grace = (*stop.borrow()).unwrap_or(plan.grace_period);
    let stops = running.iter().enumerate().filter_map(|(index, r)| {
        let rt = rt.clone();
        let id = r.as_ref()?.id.clone();
        Some(async move {
            if let Err(e) = rt.stop_container(&id, grace).await {
                tracing::warn!("stopping {id}: {e}");
            }
            // How the stop ended it, for the final status: asked of the runtime here, as the
            // tracking task may not have reported it yet.
            (index, id.clone(), rt.wait(&id).await)
        })
    });
    let stopped = futures::future::join_all(stops).await;
    drop(running);
    // One exit per container: the one its tracking task reported, else the stop's.
    let mut exits: std::collections::BTreeMap<usize, Exit> = std::collections::BTreeMap::new();
    while let Ok(ev) = rx.try_recv() {
        if let Event::Exited { index, exit, .. } = ev {
            exits.insert(index, exit);
        }
    }
    for (index, id, exit) in stopped {
        match exit {
            Ok(exit) => {
                exits.entry(index).or_insert(exit);
            }
            Err(e) => tracing::warn!(pod, "the exit of {id}: {e}"),
        }
    }
    if let Err(e) = rt.remove_sandbox(&sandbox).await {
        tracing::warn!(pod, "removing the sandbox: {e}");
    }
    for (index, exit) in exits {
        lc.observe(
            index,
            Observation::Exited {
                exit_code: exit.exit_code,
                reason: exit.reason,
                at: exit.finished_at,
            },
        );
    }
    publish(&lc, &ids, Some(&sandbox), true);
    tracing::info!(pod, "pod stopped and removed");
}

/// Watches a started container: a task waiting for its exit, and its
/// probes, all reporting to the worker's channel.
fn track<R: ContainerRuntime>(
    rt: &Arc<R>,
    plan: &PodPlan,
    sandbox: &Sandbox,
    tx: &mpsc::Sender<Event>,
    i: usize,
    started: Started,
) -> Running {
    let mut tasks = Vec::new();
    let (rt2, tx2, id2) = (rt.clone(), tx.clone(), started.id.clone());
    tasks.push(tokio::spawn(async move {
        let exit = rt2.wait(&id2).await.unwrap_or_else(|e| Exit {
            exit_code: 255,
            reason: format!("Unknown: {e}"),
            finished_at: SystemTime::now(),
        });
        let _ = tx2.send(Event::Exited { index: i, id: id2, exit }).await;
    }));
    let spec = plan.pod.spec.as_ref().and_then(|s| s.containers.get(i)).cloned();
    if let Some(spec) = spec {
        let (ptx, mut prx) = mpsc::channel(8);
        let target = probe::Target {
            container_id: started.id.clone(),
            ip: sandbox.pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
            spec,
        };
        tasks.push(tokio::spawn(probe::run(rt.clone(), target, ptx)));
        let (tx3, id3) = (tx.clone(), started.id.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(event) = prx.recv().await {
                if tx3.send(Event::Probe { index: i, id: id3.clone(), event }).await.is_err() {
                    break;
                }
            }
        }));
    }
    Running { id: started.id, tasks }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
        None => std::future::pending().await,
    }
}
