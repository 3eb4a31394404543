//! The command line of `km scheduler`. Names and defaults follow the original k8sm scheduler
//! where the flag still means something; see `Settings::from_args` for validation.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// `km scheduler` flags.
#[derive(Debug, Clone, Parser)]
#[command(about = "The Mesos framework that runs Kubernetes pods as Mesos tasks")]
pub struct Args {
    // === Kubernetes ===
    /// API server URLs, comma separated (the first reachable one is used).
    #[arg(long = "api-servers", value_delimiter = ',', env = "KM_API_SERVERS")]
    pub api_servers: Vec<String>,

    /// A kubeconfig file for the API server (instead of, or with, --api-servers).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Pods whose spec.schedulerName is this are scheduled by this scheduler.
    #[arg(long = "scheduler-name", default_value = "default-scheduler")]
    pub scheduler_name: String,

    /// Directory of pod manifests run on every executor (static pods); re-read when it changes.
    #[arg(long = "static-pods-config")]
    pub static_pods_config: Option<PathBuf>,

    /// Map `hostPort: 0` container ports to offered host ports (wildcard); false keeps them
    /// unmapped (fixed). A pod's label k8s.mesosphere.io/portMapping overrides it.
    #[arg(long = "host-port-endpoints", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub host_port_endpoints: bool,

    /// cpus given to a container that requests none.
    #[arg(long = "default-container-cpu-limit", default_value_t = 0.25)]
    pub default_container_cpu_limit: f64,

    /// Memory (MiB) given to a container that requests none.
    #[arg(long = "default-container-mem-limit", default_value_t = 64.0)]
    pub default_container_mem_limit: f64,

    /// What is procured from Mesos for a container: its requests (Kubernetes semantics) or its
    /// limits (the original k8sm).
    #[arg(long = "resource-basis", default_value = "requests", value_parser = ["requests", "limits"])]
    pub resource_basis: String,

    /// Placement: `binpack` (fill agents first), `spread` (balance over agents) or
    /// `spread:<attribute>` (balance over an agent attribute such as rack).
    #[arg(long, default_value = "binpack")]
    pub placement: String,

    /// Agents offering resources of this role are public: only pods that ask for them go there
    /// (empty disables).
    #[arg(long = "public-agent-role", default_value = "slave_public")]
    pub public_agent_role: String,

    /// Agents with this attribute (`name` or `name=value`) are public too.
    #[arg(long = "public-agent-attribute")]
    pub public_agent_attribute: Option<String>,

    /// Allow privileged containers (passed to the executors).
    #[arg(long = "allow-privileged", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_privileged: bool,

    // === HTTP ===
    /// IP of the HTTP server (health, metrics, debug, the executor binary).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,

    /// Port of the HTTP server.
    #[arg(long, default_value_t = 10251)]
    pub port: u16,

    /// host:port agents use to reach this scheduler (for the executor URI); must be the same
    /// on every scheduler of an HA group, since it is part of the executor ID.
    #[arg(long = "advertised-address")]
    pub advertised_address: Option<String>,

    /// Serve POST /debug/actions/kamikaze (asks every executor to exit once it runs no pods).
    #[arg(long = "enable-kamikaze", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_kamikaze: bool,

    /// The `--scheduler-config` ini file ([scheduler] section).
    #[arg(long = "scheduler-config")]
    pub scheduler_config: Option<PathBuf>,

    /// Implicit reconciliation period in seconds; 0 disables it.
    #[arg(long = "reconcile-interval", default_value_t = 300)]
    pub reconcile_interval: u64,

    /// Minimum gap between reconciliations not caused by a (re)subscription (raised to 15s).
    #[arg(long = "reconcile-cooldown", default_value = "15s")]
    pub reconcile_cooldown: String,

    // === Mesos ===
    /// Mesos masters: host:port, a comma list, master@host:port, http(s) URLs, or file://path.
    #[arg(long = "mesos-master", default_value = "localhost:5050", env = "KM_MESOS_MASTER")]
    pub mesos_master: String,

    /// etcd endpoints (comma separated) keeping the framework ID; without it the ID is kept in
    /// a ConfigMap in the API.
    #[arg(long = "etcd-servers", value_delimiter = ',')]
    pub etcd_servers: Vec<String>,

    /// High availability: run as one of several schedulers of this framework that elect a leader
    /// over etcd (needs --etcd-servers). Standbys take over when the leader's lease runs out or
    /// it hands over (SIGUSR1). Every scheduler of the group needs the same executor ID.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ha: bool,

    /// With --ha: the leader's etcd lease (at least 2s). A standby takes over at most this long
    /// after the leader dies. Default 5s.
    #[arg(long = "ha-lease-ttl")]
    pub ha_lease_ttl: Option<String>,

    /// FrameworkInfo.user: the user tasks run as (empty: the current user).
    #[arg(long = "mesos-user", default_value = "root")]
    pub mesos_user: String,

    /// Roles of the framework, comma separated (`*` is the default role).
    #[arg(long = "mesos-framework-roles", default_value = "*")]
    pub mesos_framework_roles: String,

    /// Roles for pods without the k8s.mesosphere.io/roles annotation, in preference order; a
    /// subset of the framework roles.
    #[arg(long = "mesos-default-pod-roles", default_value = "*")]
    pub mesos_default_pod_roles: String,

    /// Principal for HTTP authentication with the master (FrameworkInfo.principal).
    #[arg(long = "mesos-authentication-principal")]
    pub mesos_authentication_principal: Option<String>,

    /// File holding the secret of the principal.
    #[arg(long = "mesos-authentication-secret-file")]
    pub mesos_authentication_secret_file: Option<PathBuf>,

    /// FrameworkInfo.checkpoint: agents keep tasks across agent restarts.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub checkpoint: bool,

    /// FrameworkInfo.failover_timeout; 0 disables keeping the framework ID.
    #[arg(long = "failover-timeout", default_value = "4611686018s")]
    pub failover_timeout: String,

    /// FrameworkInfo.name (also part of the keys the framework ID is stored under).
    #[arg(long = "framework-name", default_value = "Kubernetes")]
    pub framework_name: String,

    /// FrameworkInfo.webui_url.
    #[arg(long = "framework-weburi")]
    pub framework_weburi: Option<String>,

    /// cpus of an executor (static pods are added).
    #[arg(long = "mesos-executor-cpus", default_value_t = 0.25)]
    pub mesos_executor_cpus: f64,

    /// Memory (MiB) of an executor (static pods are added).
    #[arg(long = "mesos-executor-mem", default_value_t = 128.0)]
    pub mesos_executor_mem: f64,

    /// The km binary the agents run as executor: a URI they fetch (http, https, hdfs, …),
    /// file:///path already on every agent, or a local file this scheduler serves over HTTP.
    /// Default: this binary, served. Agents keep a fetched binary in their fetcher cache,
    /// keyed by the URI: publish a new build under a new URI (a served file's URL carries a
    /// digest of its content, so it changes by itself).
    #[arg(long = "executor-path", visible_alias = "km-path")]
    pub executor_path: Option<String>,

    /// API servers the executors use (default: --api-servers).
    #[arg(
        long = "executor-api-servers",
        visible_alias = "kubelet-api-servers",
        value_delimiter = ','
    )]
    pub executor_api_servers: Vec<String>,

    /// A kubeconfig on every agent that executors use for credentials with the API servers
    /// (passed to them as --kubeconfig).
    #[arg(long = "executor-kubeconfig")]
    pub executor_kubeconfig: Option<String>,

    /// An executor with no pods exits after this long (0 never).
    #[arg(long = "executor-suicide-timeout", default_value = "20m")]
    pub executor_suicide_timeout: String,

    /// A pod not running this long after its launch is failed by the executor (0 never).
    #[arg(long = "mesos-launch-grace-period", default_value = "5m")]
    pub mesos_launch_grace_period: String,

    /// Executors serve their HTTP endpoint on 0.0.0.0 instead of the agent's address.
    #[arg(long = "executor-bindall", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub executor_bindall: bool,

    /// Path, on every agent's host, of the file holding the bearer token the API server presents
    /// to executors when it proxies `kubectl logs` (passed on as the executor's
    /// `--proxy-token-file`; the token itself never travels in a task). Without it executors
    /// serve no logs.
    #[arg(long = "executor-proxy-token-file")]
    pub executor_proxy_token_file: Option<String>,

    /// Image of the sandbox (pod infra) container of the executors' Docker pods, passed on as
    /// their `--pod-infra-container-image` [default: the executor's, Kubernetes' pause]. Give a
    /// local image where the agents cannot pull.
    #[arg(long = "kubelet-pod-infra-container-image")]
    pub kubelet_pod_infra_container_image: Option<String>,

    /// Log filter of the executors (tracing env-filter syntax).
    #[arg(long = "executor-log", default_value = "info")]
    pub executor_log: String,

    /// On agents running an executor of another configuration: `side-by-side` starts a current
    /// executor next to it (rolling upgrade), `exclusive` leaves the agent to the old one.
    #[arg(long = "executor-upgrade", default_value = "side-by-side", value_parser = ["side-by-side", "exclusive"])]
    pub executor_upgrade: String,

    /// With `side-by-side`, how many workloads at a time have their pods moved off executors of
    /// an older configuration (each by a health-gated rolling restart; the old executor exits
    /// once empty). 0 leaves the pods on the old executors until they end.
    #[arg(long = "executor-drain-concurrency", default_value_t = 1)]
    pub executor_drain_concurrency: usize,

    /// How long the drain waits after one restart ends before starting the next.
    #[arg(long = "executor-drain-pause", default_value = "0s")]
    pub executor_drain_pause: String,

    /// `pack` many pods per offer, or `one-pod-per-offer`: the original's policy, kept as a
    /// baseline for benchmarks.
    #[arg(long = "launch-policy", default_value = "pack", value_parser = ["pack", "one-pod-per-offer"])]
    pub launch_policy: String,
}
