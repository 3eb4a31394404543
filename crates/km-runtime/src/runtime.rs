//! The container-runtime trait both runtimes implement: sandboxes (one per
//! pod, owning what the pod's containers share), containers within them,
//! waiting for exits, stopping with a grace period, logs, and listing what
//! the runtime owns so that a restarted runtime can adopt or remove it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::Stream;

use crate::error::Result;
use crate::pod::{PodKey, PodPlan};

/// What a runtime created for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Runtime-specific id (a directory name, a Docker container id).
    pub id: String,
    pub key: PodKey,
    /// The pod's IP address, when it has its own.
    pub pod_ip: Option<String>,
}

/// How a container run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, or 128 + signal number.
    pub exit_code: i32,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: String,
    pub finished_at: SystemTime,
}

impl Exit {
    /// The Kubernetes reason for an exit code.
    pub fn reason_for(exit_code: i32) -> &'static str {
        if exit_code == 0 { "Completed" } else { "Error" }
    }
}

/// A started container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    pub started_at: SystemTime,
}

/// What [`ContainerRuntime::adopt`] found: the sandbox, and per container
/// of the plan (in spec order) its running instance, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopted {
    pub sandbox: Sandbox,
    pub containers: Vec<Option<Started>>,
}

/// A pod found by [`ContainerRuntime::list_owned`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedPod {
    pub sandbox_id: String,
    pub key: PodKey,
    pub labels: BTreeMap<String, String>,
    /// Ids of its containers (running or not).
    pub containers: Vec<OwnedContainer>,
}

/// A container found by [`ContainerRuntime::list_owned`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedContainer {
    pub id: String,
    pub name: String,
    pub running: bool,
}

/// Which part of a log to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last `tail` lines.
    pub tail: Option<usize>,
    /// Keep the stream open and send what is written later.
    pub follow: bool,
}

/// Chunks of a container's log, in order.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;

/// A command to run in a running container on a user's behalf (`kubectl exec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Whether the caller sends input; without it the command's stdin is empty.
    pub stdin: bool,
    /// Whether the command gets a terminal (its stderr then goes to stdout).
    pub tty: bool,
}

/// A piece of an exec'd command's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

/// A command started by [`ContainerRuntime::exec_session`]. Its output stream ends when the
/// command has closed its output; `exit` then gives the exit status (128 + signal number when
/// a signal ended it). Dropping the session kills a command that still runs.
pub struct ExecSession {
    /// The command's stdin, when [`ExecRequest::stdin`] asked for it; dropping it closes stdin.
    pub stdin: Option<Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    pub output: Pin<Box<dyn Stream<Item = Result<ExecOutput>> + Send>>,
    pub exit: Pin<Box<dyn Future<Output = Result<i32>> + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession").field("stdin", &self.stdin.is_some()).finish_non_exhaustive()
    }
}

/// A container runtime. Every container and sandbox it creates carries the
/// pod's ownership labels (`io.km.pod.*`), so nothing it starts can be left
/// running without a pod noticing.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Short name for logs (`native`, `docker`).
    fn name(&self) -> &'static str;

    /// Finds the sandbox and running containers an earlier run of km left
    /// for this pod (same uid), to carry on with them instead of starting
    /// anew. `None` when there is no running sandbox to adopt.
    fn adopt(&self, plan: &PodPlan) -> impl Future<Output = Result<Option<Adopted>>> + Send;

    /// Creates the pod's sandbox (directory, cgroup, network namespace).
    fn create_sandbox(&self, plan: &PodPlan) -> impl Future<Output = Result<Sandbox>> + Send;

    /// Creates and starts container `index` of `plan` in `sandbox`.
    fn start_container(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        index: usize,
    ) -> impl Future<Output = Result<Started>> + Send;

    /// Resolves when the container exits.
    fn wait(&self, id: &str) -> impl Future<Output = Result<Exit>> + Send;

    /// SIGTERM, then SIGKILL once `grace` has passed; returns when the
    /// container has stopped.
    fn stop_container(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Runs `cmd` in the container's namespaces; returns its exit code.
    fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<i32>> + Send;

    /// Starts `req.command` in the container's namespaces, cgroup and environment, with its
    /// input and output connected to the caller.
    fn exec_session(
        &self,
        id: &str,
        req: &ExecRequest,
    ) -> impl Future<Output = Result<ExecSession>> + Send;

    /// The container's log.
    fn logs(&self, id: &str, opts: LogOptions) -> impl Future<Output = Result<LogStream>> + Send;

    /// Removes the sandbox and every container left in it, killing any that
    /// still run.
    fn remove_sandbox(&self, sandbox: &Sandbox) -> impl Future<Output = Result<()>> + Send;

    /// Every pod this runtime owns on this host, including ones created by a
    /// previous run of the process.
    fn list_owned(&self) -> impl Future<Output = Result<Vec<OwnedPod>>> + Send;

    /// Removes an owned pod found by [`Self::list_owned`].
    fn remove_owned(&self, pod: &OwnedPod) -> impl Future<Output = Result<()>> + Send;
}
