//! `km controller-manager`: the controllers that make workloads out of pods on km.
//!
//! - **Workloads**: ReplicaSet and ReplicationController ([`replicas`], with expectations so a
//!   slow watch never creates extra pods), Deployment ([`deployment`]: RollingUpdate with
//!   maxSurge/maxUnavailable, Recreate, revisions and history).
//! - **Jobs** ([`jobs`]): pods run to completion (completions, parallelism, backoffLimit,
//!   activeDeadlineSeconds).
//! - **CronJobs** ([`cronjobs`]): Jobs on a cron schedule, with concurrency policies and history.
//! - **Garbage collector** ([`gc`]): ownerReferences, with background, foreground and orphan
//!   propagation.
//! - **Endpoints** ([`endpoints`], [`services`]): pod IP : container port, or with
//!   `--host-port-endpoints` the HostIP:HostPort endpoints of k8sm, for pods reached through the
//!   host ports km scheduler maps.
//! - **Namespaces** ([`namespaces`]): a namespace being deleted is emptied of every namespaced
//!   kind the API server serves, then finalized.
//! - **Pod GC** ([`podgc`]): finished pods beyond a threshold, pods bound to vanished nodes.
//! - **Restart on config change** ([`confighash`], [`configrestart`]): workloads and pods
//!   annotated `km.io/restart-on-config-change` are restarted (health-gated, through km
//!   restart's path; Deployments by their rollout) when a ConfigMap or Secret they use changes.
//! - **Node lifecycle** ([`nodes`], with `--cloud-provider=mesos`): the Nodes of Mesos agents
//!   follow the agents the master reports (through the `km-cloud-provider` crate).
//!
//! Each controller is a reconciler: a work queue of object keys ([`queue`]) fed by one watch
//! cache ([`cache`]), and a sync that reads the cache, asks a pure decision function (desired
//! vs observed → actions, tested on its own) and carries the actions out. With
//! `--leader-elect` (the default) the controllers run only while this process holds the
//! coordination.k8s.io Lease ([`leader`]); a leader that loses it exits, so a standby takes
//! over within the lease duration.

pub mod cache;
pub mod confighash;
pub mod configrestart;
pub mod cronjobs;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod jobs;
pub mod leader;
pub mod namespaces;
pub mod nodes;
pub mod podgc;
pub mod pods;
pub mod queue;
pub mod replicas;
pub mod selector;
pub mod services;
pub mod workloads;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::ArgAction;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};

use crate::cache::{Caches, Change};
use crate::queue::{Queue, key};
use crate::replicas::Expectations;

/// Flags of `km controller-manager` (kube-controller-manager's names).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The API server's URL (overrides the server of --kubeconfig).
    #[arg(long)]
    pub master: Option<String>,
    /// A kubeconfig file for the API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Port of /healthz and /metrics (0: not served).
    #[arg(long, default_value_t = 10252)]
    pub port: u16,
    /// The cloud provider (km knows `mesos`: Nodes follow the Mesos agents; empty: none).
    #[arg(long = "cloud-provider", default_value = "")]
    pub cloud_provider: String,
    /// The cloud provider's configuration file (mesos-cloud.conf).
    #[arg(long = "cloud-config")]
    pub cloud_config: Option<PathBuf>,
    /// Endpoints are HostIP:HostPort of Ready pods (k8sm); false: pod IP : container port. The
    /// default is km scheduler's (which maps host ports when this is true).
    #[arg(long = "host-port-endpoints", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub host_port_endpoints: bool,
    /// Run the controllers only while holding the leader Lease.
    #[arg(long = "leader-elect", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long a Lease holds without renewal before a standby may take it.
    #[arg(long = "leader-elect-lease-duration", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up (and exits).
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// How often candidates try, and the leader renews.
    #[arg(long = "leader-elect-retry-period", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
    /// Namespace of the leader Lease.
    #[arg(long = "leader-elect-resource-namespace", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long = "leader-elect-resource-name", default_value = "kube-controller-manager")]
    pub lease_name: String,
    /// How long a Mesos agent may be unknown to the master before its Node is deleted and its
    /// pods marked Failed (with --cloud-provider=mesos).
    #[arg(long = "node-monitor-grace-period", default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_grace: Duration,
    /// Finished pods kept before the oldest are deleted (0: never).
    #[arg(long = "terminated-pod-gc-threshold", default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// Concurrent syncs per controller.
    #[arg(long = "concurrent-syncs", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub concurrent_syncs: u16,
    /// How often every object is looked at again, events or not.
    #[arg(long = "min-resync-period", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,
}

impl Args {
    /// The cloud provider the flags name, if any.
    fn cloud(&self) -> anyhow::Result<Option<Arc<dyn km_cloud_provider::CloudProvider>>> {
        let provider = Some(self.cloud_provider.as_str()).filter(|p| !p.is_empty());
        Ok(km_cloud_provider::from_flags(provider, self.cloud_config.as_deref())?)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.master.is_none() && self.kubeconfig.is_none() {
            anyhow::bail!("give the API server with --master URL or --kubeconfig FILE");
        }
        // Both flags are checked (and the file read) before anything starts.
        self.cloud()?;
        if self.resync_period.is_zero() {
            anyhow::bail!("--min-resync-period must be longer than 0s");
        }
        if self.leader_elect && self.renew_deadline >= self.lease_duration {
            anyhow::bail!(
                "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
            );
        }
        if self.leader_elect && self.retry_period >= self.renew_deadline {
            anyhow::bail!(
                "--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline"
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// The controller-manager's metrics.
pub struct Metrics {
    registry: Registry,
    depth: Family<ControllerLabel, Gauge>,
    syncs: Family<ControllerLabel, Histogram>,
    errors: Family<ControllerLabel, Counter>,
    created: Counter,
    leader: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let depth = Family::<ControllerLabel, Gauge>::default();
        let syncs = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        let errors = Family::<ControllerLabel, Counter>::default();
        let created = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "km_controller_manager_workqueue_depth",
            "Keys waiting in each controller's queue",
            depth.clone(),
        );
        registry.register(
            "km_controller_manager_sync_duration_seconds",
            "Time of one sync, per controller",
            syncs.clone(),
        );
        registry.register(
            "km_controller_manager_sync_errors",
            "Failed syncs, per controller",
            errors.clone(),
        );
        registry.register(
            "km_controller_manager_pods_created",
            "Pods created by the workload controllers",
            created.clone(),
        );
        registry.register(
            "km_controller_manager_leader",
            "1 while this process leads",
            leader.clone(),
        );
        Metrics { registry, depth, syncs, errors, created, leader }
    }

    fn pods_created(&self, n: usize) {
        self.created.inc_by(u64::try_from(n).unwrap_or(0));
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What every sync reads and writes through.
pub struct Ctx {
    pub client: kube::Client,
    pub caches: Caches,
    pub endpoint_mode: endpoints::Mode,
    pub terminated_pod_gc_threshold: usize,
    metrics: Arc<Metrics>,
    expectations: Mutex<HashMap<String, Expectations>>,
    /// ConfigMap and Secret digests, for restarts on config change.
    pub config: Option<Arc<configrestart::ConfigStore>>,
    /// Restarts for config changes that this process runs.
    pub restarts: configrestart::Running,
}

impl Ctx {
    fn observe_expectations(&self, key: &str, pods: &[&Pod], now: Timestamp) -> bool {
        let Ok(mut all) = self.expectations.lock() else { return true };
        match all.get_mut(key) {
            None => true,
            Some(e) => {
                let met = e.observe(pods, now);
                if met {
                    all.remove(key);
                }
                met
            }
        }
    }

    fn expect(&self, key: &str, now: Timestamp, f: impl FnOnce(Expectations) -> Expectations) {
        if let Ok(mut all) = self.expectations.lock() {
            let current = all.remove(key).unwrap_or_default();
            let mut next = f(current);
            next.since.get_or_insert(now);
            all.insert(key.to_owned(), next);
        }
    }

    fn forget_expectations(&self, key: &str) {
        if let Ok(mut all) = self.expectations.lock() {
            all.remove(key);
        }
    }
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => {
            let url = args.master.as_deref().unwrap_or_default();
            kube::Config::new(url.parse().with_context(|| format!("--master {url:?}"))?)
        }
    };
    if let (Some(url), Some(_)) = (&args.master, &args.kubeconfig) {
        config.cluster_url = url.parse().with_context(|| format!("--master {url:?}"))?;
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    // The API server records the controllers' writes under this name (managedFields).
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!(
            "km-controller-manager/",
            env!("CARGO_PKG_VERSION")
        )),
    ));
    kube::Client::try_from(config).context("building the API client")
}

async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    m.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the HTTP endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

/// The queues of the controllers.
#[derive(Clone)]
struct Queues {
    replicasets: Queue,
    controllers: Queue,
    deployments: Queue,
    endpoints: Queue,
    namespaces: Queue,
    jobs: Queue,
    cronjobs: Queue,
    config: Queue,
    gc: Arc<Notify>,
}

/// Queues the keys whose controllers a change concerns.
fn route(change: &Change, caches: &Caches, q: &Queues) {
    use crate::selector::Selector;
    let owner_gone_or_going =
        |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, deleted: bool| {
            deleted || meta.deletion_timestamp.is_some()
        };
    {
        use crate::configrestart::{Kind as ConfigKind, concerned, queue_key};
        let opted = match change {
            Change::Pod(p, false) => Some((ConfigKind::Pod, &p.metadata)),
            Change::ReplicaSet(r, false) => Some((ConfigKind::ReplicaSet, &r.metadata)),
            Change::Controller(r, false) => Some((ConfigKind::ReplicationController, &r.metadata)),
            Change::Deployment(d, false) => Some((ConfigKind::Deployment, &d.metadata)),
            _ => None,
        };
        if let Some((kind, meta)) = opted.filter(|(_, m)| concerned(m)) {
            q.config.add(queue_key(kind, meta));
        }
    }
    match change {
        Change::Pod(p, _) => {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            let labels = p.metadata.labels.as_ref();
            match pods::controller_of(&p.metadata) {
                Some(r) if r.kind == "ReplicaSet" => q.replicasets.add(key(Some(ns), &r.name)),
                Some(r) if r.kind == "ReplicationController" => {
                    q.controllers.add(key(Some(ns), &r.name))
                }
                Some(_) => {}
                None => {
                    for rs in caches
                        .replicasets
                        .state_filter(|rs| rs.metadata.namespace.as_deref() == Some(ns))
                    {
                        if Selector::from_label_selector(&rs.spec.selector)
                            .is_ok_and(|s| s.matches(labels))
                        {
                            q.replicasets.add(key(
                                Some(ns),
                                rs.metadata.name.as_deref().unwrap_or_default(),
                            ));
                        }
                    }
                    for rc in caches
                        .controllers
                        .state_filter(|rc| rc.metadata.namespace.as_deref() == Some(ns))
                    {
                        if rc
                            .spec
                            .as_ref()
                            .and_then(|s| s.selector.as_ref())
                            .is_some_and(|m| Selector::from_map(m).matches(labels))
                        {
                            q.controllers.add(key(
                                Some(ns),
                                rc.metadata.name.as_deref().unwrap_or_default(),
                            ));
                        }
                    }
                }
            }
            for svc in caches.services.state_filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            {
                if svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|m| Selector::from_map(m).matches(labels))
                {
                    q.endpoints
                        .add(key(Some(ns), svc.metadata.name.as_deref().unwrap_or_default()));
                }
            }
        }
        Change::ReplicaSet(rs, deleted) => {
            let ns = rs.metadata.namespace.as_deref();
            q.replicasets.add(key(ns, rs.metadata.name.as_deref().unwrap_or_default()));
            if let Some(r) = pods::controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                q.deployments.add(key(ns, &r.name));
            }
            if owner_gone_or_going(&rs.metadata, *deleted) {
                q.gc.notify_one();
            }
        }
        Change::Controller(rc, deleted) => {
            q.controllers.add(key(
                rc.metadata.namespace.as_deref(),
                rc.metadata.name.as_deref().unwrap_or_default(),
            ));
            if owner_gone_or_going(&rc.metadata, *deleted) {
                q.gc.notify_one();
            }
        }
        Change::Deployment(d, deleted) => {
            q.deployments.add(key(
                d.metadata.namespace.as_deref(),
                d.metadata.name.as_deref().unwrap_or_default(),
            ));
            if owner_gone_or_going(&d.metadata, *deleted) {
                q.gc.notify_one();
            }
        }
        Change::Service(s, _) => {
            q.endpoints.add(key(
                s.metadata.namespace.as_deref(),
                s.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
        Change::Endpoints(e, _) => {
            q.endpoints.add(key(
                e.metadata.namespace.as_deref(),
                e.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
        Change::Node(..) => {}
        Change::Config(ns) => {
            for k in configrestart::keys_in(caches, ns) {
                q.config.add(k);
            }
        }
        Change::CronJob(cj, _) => {
            q.cronjobs.add(key(
                cj.metadata.namespace.as_deref(),
                cj.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
        Change::Job(j, deleted) => {
            q.jobs.add(key(
                j.metadata.namespace.as_deref(),
                j.metadata.name.as_deref().unwrap_or_default(),
            ));
            if let Some(r) = pods::controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                q.cronjobs.add(key(j.metadata.namespace.as_deref(), &r.name));
            }
            if owner_gone_or_going(&j.metadata, *deleted) {
                q.gc.notify_one();
            }
        }
        Change::Namespace(n, _) => {
            if n.metadata.deletion_timestamp.is_some() {
                q.namespaces.add(key(None, n.metadata.name.as_deref().unwrap_or_default()));
            }
        }
    }
}

/// Every key of every controller, for the periodic resync.
fn resync(caches: &Caches, q: &Queues) {
    let k = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        key(m.namespace.as_deref(), m.name.as_deref().unwrap_or_default())
    };
    caches.replicasets.state().iter().for_each(|o| q.replicasets.add(k(&o.metadata)));
    caches.controllers.state().iter().for_each(|o| q.controllers.add(k(&o.metadata)));
    caches.deployments.state().iter().for_each(|o| q.deployments.add(k(&o.metadata)));
    caches.services.state().iter().for_each(|o| q.endpoints.add(k(&o.metadata)));
    caches.jobs.state().iter().for_each(|o| q.jobs.add(k(&o.metadata)));
    caches.cronjobs.state().iter().for_each(|o| q.cronjobs.add(k(&o.metadata)));
    caches
        .namespaces
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
        .for_each(|o| q.namespaces.add(k(&o.metadata)));
    // Endpoints left by deleted Services.
    caches.endpoints.state().iter().for_each(|o| q.endpoints.add(k(&o.metadata)));
    q.gc.notify_one();
}

/// Runs `workers` loops syncing the keys of `queue` with `sync`.
fn spawn_workers<F, Fut>(name: &'static str, queue: Queue, workers: u16, ctx: Arc<Ctx>, sync: F)
where
    F: Fn(Arc<Ctx>, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Option<Duration>, workloads::SyncError>> + Send,
{
    for _ in 0..workers {
        let (queue, ctx, sync) = (queue.clone(), ctx.clone(), sync.clone());
        tokio::spawn(async move {
            let label = ControllerLabel { controller: name.into() };
            loop {
                let key = queue.next().await;
                let started = tokio::time::Instant::now();
                // A sync that hangs (an API request that never gets an answer) must not hold its
                // key forever: it is abandoned and retried.
                let result =
                    tokio::time::timeout(SYNC_TIMEOUT, sync(ctx.clone(), key.clone())).await;
                ctx.metrics.syncs.get_or_create(&label).observe(started.elapsed().as_secs_f64());
                match result {
                    Err(_) => {
                        ctx.metrics.errors.get_or_create(&label).inc();
                        tracing::warn!(controller = name, %key, "sync abandoned after {SYNC_TIMEOUT:?}; retrying");
                        queue.done(&key, true);
                    }
                    Ok(Ok(again)) => {
                        queue.done(&key, false);
                        if let Some(after) = again {
                            queue.add_after(key, after);
                        }
                    }
                    Ok(Err(e)) => {
                        ctx.metrics.errors.get_or_create(&label).inc();
                        tracing::warn!(controller = name, %key, "{e}");
                        queue.done(&key, true);
                    }
                }
            }
        });
    }
}

/// Longest a sync may take before it is abandoned and retried.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the controller-manager until SIGTERM or SIGINT (or until leadership is lost).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let signals = km_process::StopSignals::install()?;
    args.check()?;
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new());
    if args.port != 0 {
        let bound = serve_http(SocketAddr::new(args.address, args.port), metrics.clone()).await?;
        tracing::info!(%bound, "serving /healthz and /metrics");
    }
    let stop = signals.first();
    tokio::pin!(stop);

    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), &args.lease_namespace);
    let election = leader::Election {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: format!("{}_{}", nix_hostname(), uuid_like()),
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    if args.leader_elect {
        tokio::select! {
            () = election.acquire(&leases) => {}
            _ = &mut stop => return Ok(()),
        }
    }
    metrics.leader.set(1);

    let depth = |name: &str| {
        metrics.depth.get_or_create(&ControllerLabel { controller: name.into() }).clone()
    };
    let queues = Queues {
        replicasets: Queue::new(depth("replicaset")),
        controllers: Queue::new(depth("replicationcontroller")),
        deployments: Queue::new(depth("deployment")),
        endpoints: Queue::new(depth("endpoints")),
        namespaces: Queue::new(depth("namespace")),
        jobs: Queue::new(depth("job")),
        cronjobs: Queue::new(depth("cronjob")),
        config: Queue::new(depth("config-change-restart")),
        gc: Arc::new(Notify::new()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    let config_tx = tx.clone();
    let caches = Caches::start(
        &client,
        Arc::new(move |c| {
            let _ = tx.send(c);
        }),
    )
    .await;
    let config = Arc::new(configrestart::ConfigStore::default());
    configrestart::start(
        &client,
        config.clone(),
        Arc::new(move |ns| {
            let _ = config_tx.send(Change::Config(ns));
        }),
    )
    .await;
    tracing::info!("the watch cache is filled; starting the controllers");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        caches: caches.clone(),
        endpoint_mode: if args.host_port_endpoints {
            endpoints::Mode::HostPort
        } else {
            endpoints::Mode::PodIp
        },
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        metrics: metrics.clone(),
        expectations: Mutex::new(HashMap::new()),
        config: Some(config),
        restarts: configrestart::Running::default(),
    });
    {
        let (caches, queues) = (caches.clone(), queues.clone());
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                route(&change, &caches, &queues);
            }
        });
    }
    let n = args.concurrent_syncs;
    spawn_workers("replicaset", queues.replicasets.clone(), n, ctx.clone(), |c, k| async move {
        workloads::sync_replicated::<ReplicaSet>(&c, &k).await
    });
    spawn_workers(
        "replicationcontroller",
        queues.controllers.clone(),
        n,
        ctx.clone(),
        |c, k| async move { workloads::sync_replicated::<ReplicationController>(&c, &k).await },
    );
    spawn_workers("deployment", queues.deployments.clone(), n, ctx.clone(), |c, k| async move {
        workloads::sync_deployment(&c, &k).await
    });
    spawn_workers("endpoints", queues.endpoints.clone(), n, ctx.clone(), |c, k| async move {
        services::sync(&c, &k).await.map(|()| None)
    });
    spawn_workers("job", queues.jobs.clone(), n, ctx.clone(), |c, k| async move {
        jobs::sync(&c, &k).await
    });
    spawn_workers("cronjob", queues.cronjobs.clone(), n, ctx.clone(), |c, k| async move {
        cronjobs::sync(&c, &k).await
    });
    spawn_workers("namespace", queues.namespaces.clone(), 2, ctx.clone(), |c, k| async move {
        namespaces::sync(&c, &k).await
    });
    spawn_workers(
        "config-change-restart",
        queues.config.clone(),
        n,
        ctx.clone(),
        |c, k| async move { configrestart::sync(&c, &k).await },
    );
    {
        let (ctx, notify) = (ctx.clone(), queues.gc.clone());
        tokio::spawn(async move {
            loop {
                match gc::collect(&ctx).await {
                    Ok(n) if n > 0 => tracing::debug!(steps = n, "garbage collector"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("garbage collector: {e}"),
                }
                // A burst of owner changes makes one pass.
                let _ = tokio::time::timeout(Duration::from_secs(10), notify.notified()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut missing = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(20));
            loop {
                tick.tick().await;
                if let Err(e) = podgc::collect(&ctx, &mut missing).await {
                    tracing::warn!("pod GC: {e}");
                }
            }
        });
    }
    if let Some(cloud) = args.cloud()? {
        let (ctx, grace) = (ctx.clone(), args.node_grace);
        tokio::spawn(async move {
            let mut missing = HashMap::new();
            let mut changes = cloud.watch();
            let mut tick =
                tokio::time::interval(Duration::from_secs(nodes::HEARTBEAT_SECONDS.unsigned_abs()));
            loop {
                // The agents' changes (when the master streams them) or the heartbeat period.
                match changes.as_mut() {
                    Some(w) => {
                        tokio::select! {
                            _ = tick.tick() => {}
                            change = w.next_change() => if change.is_none() { changes = None },
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                if let Err(e) = nodes::sync(&ctx, &cloud, &mut missing, grace).await {
                    tracing::warn!("node lifecycle: {e}");
                }
            }
        });
    }
    {
        let (caches, queues, period) = (caches.clone(), queues.clone(), args.resync_period);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                resync(&caches, &queues);
            }
        });
    }

    if args.leader_elect {
        tokio::select! {
            lost = election.keep(&leases) => {
                metrics.leader.set(0);
                return Err(anyhow::anyhow!(lost)).context("stopping: another controller-manager may lead now");
            }
            _ = &mut stop => {
                election.release(&leases).await;
            }
        }
    } else {
        let _ = stop.await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "km".into())
}

fn uuid_like() -> String {
    use rand::Rng as _;
    format!("{:016x}", rand::rng().random::<u64>())
}
