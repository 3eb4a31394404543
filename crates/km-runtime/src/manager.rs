//! The pod manager: the set of pods a node runs, each driven by its own
//! worker task on the runtime its `runtimeClassName` selects. Callers (km
//! kubelet, later the executor) say which pods should run; the manager
//! starts, stops, reports status, serves logs, and at start-up removes
//! whatever a previous process left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1 as k8s;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::docker::DockerRuntime;
use crate::error::{Error, Result};
use crate::lifecycle::Phase;
use crate::native::NativeRuntime;
use crate::pod::{NodeContext, PodKey, PodPlan, RuntimeClass};
use crate::runtime::{ContainerRuntime, ExecRequest, ExecSession, LogOptions, LogStream};
use crate::status::PodSnapshot;
use crate::worker::run_pod;

struct PodHandle {
    plan: PodPlan,
    status: watch::Receiver<PodSnapshot>,
    stop: watch::Sender<Option<std::time::Duration>>,
    task: JoinHandle<()>,
}

/// See the module docs.
pub struct PodManager {
    native: Option<Arc<NativeRuntime>>,
    docker: Option<Arc<DockerRuntime>>,
    node: NodeContext,
    pods: Mutex<HashMap<String, PodHandle>>,
}

impl std::fmt::Debug for PodManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodManager").field("node", &self.node).finish_non_exhaustive()
    }
}

impl PodManager {
    /// A manager over the runtimes that are available (either may be
    /// absent; pods asking for a missing one fail with a clear reason).
    pub fn new(
        native: Option<Arc<NativeRuntime>>,
        docker: Option<Arc<DockerRuntime>>,
        node: NodeContext,
    ) -> Self {
        PodManager { native, docker, node, pods: Mutex::new(HashMap::new()) }
    }

    pub fn node(&self) -> &NodeContext {
        &self.node
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, PodHandle>>> {
        self.pods.lock().map_err(|_| Error::Other("pod table poisoned".into()))
    }

    /// Removes every pod the runtimes own that this manager does not run
    /// (all of them, right after start-up). Returns how many were removed.
    pub async fn remove_orphans(&self) -> Result<usize> {
        let running: Vec<String> = self.lock()?.keys().cloned().collect();
        let mut removed = 0;
        if let Some(rt) = &self.native {
            for pod in rt.list_owned().await? {
                if !running.contains(&pod.key.uid) {
                    tracing::info!(
                        sandbox = pod.sandbox_id,
                        "removing a native pod left by an earlier run"
                    );
                    rt.remove_owned(&pod).await?;
                    removed += 1;
                }
            }
        }
        if let Some(rt) = &self.docker {
            for pod in rt.list_owned().await? {
                if !running.contains(&pod.key.uid) {
                    tracing::info!(
                        sandbox = pod.sandbox_id,
                        "removing a Docker pod left by an earlier run"
                    );
                    rt.remove_owned(&pod).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Starts running `pod` (its uid must be set and new to this manager).
    pub fn run(&self, pod: &k8s::Pod) -> Result<PodKey> {
        let plan = PodPlan::from_pod(pod, &self.node)?;
        let key = plan.key.clone();
        let mut pods = self.lock()?;
        if pods.contains_key(&key.uid) {
            return Err(Error::InvalidPod {
                pod: key.full_name(),
                reason: format!("uid {} already runs", key.uid),
            });
        }
        let initial = PodSnapshot {
            phase: Phase::Pending,
            ready: false,
            container_ids: vec![None; plan.containers.len()],
            status: k8s::PodStatus { phase: Some("Pending".into()), ..Default::default() },
            removed: false,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = match plan.runtime {
            RuntimeClass::Native => {
                let rt = self.native.clone().ok_or_else(|| Error::InvalidPod {
                    pod: key.full_name(),
                    reason: "the native runtime is not available on this node".into(),
                })?;
                tokio::spawn(run_pod(rt, plan.clone(), self.node.clone(), status_tx, stop_rx))
            }
            RuntimeClass::Docker => {
                let rt = self.docker.clone().ok_or_else(|| Error::InvalidPod {
                    pod: key.full_name(),
                    reason: "the Docker runtime is not available on this node".into(),
                })?;
                tokio::spawn(run_pod(rt, plan.clone(), self.node.clone(), status_tx, stop_rx))
            }
        };
        pods.insert(key.uid.clone(), PodHandle { plan, status: status_rx, stop: stop_tx, task });
        Ok(key)
    }

    /// Stops the pod (grace period, all containers in parallel), removes
    /// its sandbox, and forgets it.
    pub async fn stop(&self, uid: &str) -> Result<()> {
        self.stop_with_grace(uid, None).await
    }

    /// Like [`PodManager::stop`], with another grace period than the pod's (a Mesos kill
    /// policy, a deletion's grace period).
    pub async fn stop_with_grace(
        &self,
        uid: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<()> {
        let handle = self.lock()?.remove(uid);
        let Some(h) = handle else { return Ok(()) };
        let _ = h.stop.send(Some(grace.unwrap_or(h.plan.grace_period)));
        h.task
            .await
            .map_err(|e| Error::Other(format!("pod worker of {}: {e}", h.plan.key.full_name())))
    }

    /// Stops every pod, in parallel.
    pub async fn stop_all(&self) {
        let uids: Vec<String> =
            self.lock().map(|p| p.keys().cloned().collect()).unwrap_or_default();
        let stops = uids.iter().map(|uid| self.stop(uid));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!("stopping a pod: {e}");
            }
        }
    }

    /// Uids of the pods being run.
    pub fn uids(&self) -> Vec<String> {
        self.lock().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }

    /// The uid of the pod `namespace/name` being run, if one is.
    pub fn find(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = self.lock().ok()?;
        pods.iter()
            .find(|(_, h)| h.plan.key.namespace == namespace && h.plan.key.name == name)
            .map(|(uid, _)| uid.clone())
    }

    /// The latest snapshot of a pod.
    pub fn snapshot(&self, uid: &str) -> Option<PodSnapshot> {
        self.lock().ok()?.get(uid).map(|h| h.status.borrow().clone())
    }

    /// A receiver of the pod's snapshots.
    pub fn watch(&self, uid: &str) -> Option<watch::Receiver<PodSnapshot>> {
        self.lock().ok()?.get(uid).map(|h| h.status.clone())
    }

    /// The pod object with its current status filled in.
    pub fn pod_with_status(&self, uid: &str) -> Option<k8s::Pod> {
        let pods = self.lock().ok()?;
        let h = pods.get(uid)?;
        let mut pod = h.plan.pod.clone();
        pod.status = Some(h.status.borrow().status.clone());
        Some(pod)
    }

    /// The runtime and container id of `container` of pod `uid`, once it has started.
    fn container_id(&self, uid: &str, container: &str) -> Result<(RuntimeClass, String)> {
        let pods = self.lock()?;
        let h = pods.get(uid).ok_or_else(|| Error::NotFound(format!("pod {uid}")))?;
        let idx = h.plan.containers.iter().position(|c| c.name == container).ok_or_else(|| {
            Error::NotFound(format!("container {container} in pod {}", h.plan.key.full_name()))
        })?;
        let id = h.status.borrow().container_ids.get(idx).cloned().flatten().ok_or_else(|| {
            Error::NotFound(format!(
                "container {container} of {} has not started",
                h.plan.key.full_name()
            ))
        })?;
        Ok((h.plan.runtime, id))
    }

    /// Whether `container` of pod `uid` has started (and so can be exec'd into).
    pub fn check_container(&self, uid: &str, container: &str) -> Result<()> {
        self.container_id(uid, container).map(|_| ())
    }

    fn native(&self) -> Result<&Arc<NativeRuntime>> {
        self.native
            .as_ref()
            .ok_or_else(|| Error::Other("the native runtime is not available".into()))
    }

    fn docker(&self) -> Result<&Arc<DockerRuntime>> {
        self.docker
            .as_ref()
            .ok_or_else(|| Error::Other("the Docker runtime is not available".into()))
    }

    /// Logs of a container of a running pod.
    pub async fn logs(&self, uid: &str, container: &str, opts: LogOptions) -> Result<LogStream> {
        match self.container_id(uid, container)? {
            (RuntimeClass::Native, id) => self.native()?.logs(&id, opts).await,
            (RuntimeClass::Docker, id) => self.docker()?.logs(&id, opts).await,
        }
    }

    /// Runs a command in a container of a running pod (`kubectl exec`).
    pub async fn exec(&self, uid: &str, container: &str, req: &ExecRequest) -> Result<ExecSession> {
        match self.container_id(uid, container)? {
            (RuntimeClass::Native, id) => self.native()?.exec_session(&id, req).await,
            (RuntimeClass::Docker, id) => self.docker()?.exec_session(&id, req).await,
        }
    }
}
