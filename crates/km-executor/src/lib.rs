//! `km executor`: what a Mesos agent runs for km's tasks. Each task carries a pod (its v1 JSON
//! in `TaskInfo.data`); the executor runs it with the pod runtimes of `km-runtime` (Docker, or
//! host binaries with `runtimeClassName: native`), reports the task's state to the agent, and
//! keeps the pod's status current in the API server.
//!
//! - **Task states.** TASK_STARTING once the pod is being started, TASK_RUNNING when its
//!   containers run (again whenever readiness or a problem changes, with `healthy` = Ready),
//!   TASK_FINISHED / TASK_FAILED when it completes, TASK_KILLED after a KILL and the grace
//!   period of the kill policy. Every update says what is going on in words, and carries the
//!   pod's status as JSON in `data` — which tells the scheduler that this executor writes the
//!   pod's status itself. Updates are kept and re-sent until the agent acknowledges them, across
//!   re-subscriptions (the `km-mesos` executor client).
//! - **Nothing left behind.** Each executor runs its pods in a scope of its own (a cgroup
//!   parent, a directory, a Docker owner label) and registers it in a host-wide directory under a
//!   lock it holds while it lives ([`registry`]); a starting executor removes every pod of the
//!   scopes whose owner died (kill -9 included). SHUTDOWN, a lost agent, SIGTERM, `kamikaze` and
//!   the suicide timeout all stop every pod with its grace period before the executor exits.
//! - **Static pods** from `ExecutorInfo.data` run beside the tasks and are published as mirror
//!   pods, with the Node's heartbeat, as `km kubelet` does.

mod exec;
mod http;
pub mod registry;
pub mod report;
mod run;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use km_kubelet::DockerMode;

/// Flags of `km executor` (the scheduler passes them; see its `--executor-*` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// API servers for pod status, ConfigMaps, Secrets, mirror pods and the Node (tried in
    /// turn when one fails). Without them the pods run but the API hears nothing from here.
    #[arg(long = "api-servers", value_delimiter = ',')]
    pub api_servers: Vec<String>,

    /// Credentials (and certificate authority) for the API servers: a kubeconfig on the agent
    /// whose current context's user this executor acts as.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Exit after this long without pods (0: never).
    #[arg(long = "suicide-timeout", default_value = "20m", value_parser = humantime::parse_duration)]
    pub suicide_timeout: Duration,

    /// Fail a pod whose containers do not all run this long after its launch (0: never).
    #[arg(long = "launch-grace-period", default_value = "5m", value_parser = humantime::parse_duration)]
    pub launch_grace_period: Duration,

    /// Allow privileged containers.
    #[arg(long = "allow-privileged", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_privileged: bool,

    /// IP of the executor's HTTP endpoint (`/healthz`, `/metrics`, container logs); default: the
    /// agent's IP.
    #[arg(long)]
    pub address: Option<IpAddr>,

    /// Port of the HTTP endpoint (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// File holding the bearer token the API server presents when it proxies `pods/log` here
    /// (a path on the agent's host; the token itself never travels in the task). Without it the
    /// executor serves no logs.
    #[arg(long = "proxy-token-file")]
    pub proxy_token_file: Option<PathBuf>,

    /// Host-wide directory where executors register the scope of their pods.
    #[arg(long = "state-dir", default_value = "/run/km/executors")]
    pub state_dir: PathBuf,

    /// Whether to use the Docker engine.
    #[arg(long, value_enum, default_value = "auto")]
    pub docker: DockerMode,

    /// Image of the per-pod sandbox container of Docker pods, run with its own command (which
    /// must keep running, as Kubernetes' pause does); pulled when the engine lacks it. km
    /// scheduler sets it from its `--kubelet-pod-infra-container-image`.
    #[arg(long = "pod-infra-container-image", default_value = km_runtime::docker::DEFAULT_SANDBOX_IMAGE)]
    pub pod_infra_container_image: String,
}

/// Runs the executor until the agent shuts it down, the agent is gone for good, or it is told
/// to go (SIGTERM, kamikaze, suicide timeout).
pub async fn run(args: Args) -> anyhow::Result<()> {
    run::run(args).await
}
