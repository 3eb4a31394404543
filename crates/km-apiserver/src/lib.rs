//! `km apiserver`: a Kubernetes API server for the resources km needs,
//! stored in etcd, close enough to the Kubernetes API conventions that
//! kubectl and kube-rs work unchanged.
//!
//! Layers, bottom up:
//! - [`storage`]: revisioned key-value store (etcd, or memory for unit
//!   tests) with compare-and-swap writes and watch-from-revision;
//! - [`registry`]: the served kinds, named by their `k8s_openapi` types;
//! - [`object`], [`patch`], [`selector`], [`table`]: pure object semantics
//!   (metadata, defaulting, validation, patches, selectors, printing);
//! - [`api`]: the verbs as read-modify-write loops over the store, and
//!   [`watch`]: one shared etcd watch per resource fanned out to clients;
//! - [`server`]: HTTP routing, discovery and Status errors ([`error`]);
//!   [`openapi`]: the `/openapi/v2` schema kubectl validates input against.

pub mod alloc;
pub mod api;
pub mod error;
pub mod nodeproxy;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod secure;
pub mod selector;
pub mod server;
pub mod storage;
pub mod table;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ArgAction;

use crate::api::{Api, ApiConfig};
use crate::storage::EtcdStorage;

/// Flags of `km apiserver` (kube-apiserver's names, as the cold-standby HA manifests use them).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// etcd client URLs, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// Address of the plain-HTTP port.
    #[arg(long, default_value = "127.0.0.1")]
    pub insecure_bind_address: IpAddr,
    /// Plain-HTTP port (no authentication); 0 disables it.
    #[arg(long, default_value_t = 8080)]
    pub insecure_port: u16,
    /// Address of the HTTPS port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port; served only with --tls-cert-file and --tls-private-key-file.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CSV of `token,user,uid[,"group1,group2"]` for the HTTPS port.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Accepted for compatibility; pods may ask for privileged containers.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub allow_privileged: bool,
    /// CIDR from which Services get their ClusterIP.
    #[arg(long, default_value = "10.0.0.0/24")]
    pub service_cluster_ip_range: String,
    /// Port range from which NodePort Services get their node port.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// The cloud provider (`mesos`): the addresses of nodes that publish none are asked of it
    /// when proxying `pods/log` and `pods/exec`.
    #[arg(long)]
    pub cloud_provider: Option<String>,
    /// The cloud provider's configuration file (mesos-cloud.conf).
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// Address advertised to clients and cluster members.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// gRPC connections to etcd, used round-robin.
    #[arg(long, default_value_t = 4)]
    pub etcd_connections: usize,
    /// How often watchers that allow bookmarks receive one.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    pub watch_bookmark_interval: Duration,
    /// File holding the bearer token presented to nodes (km executors) when proxying
    /// `pods/log`; they refuse requests without it.
    #[arg(long)]
    pub kubelet_token_file: Option<PathBuf>,
    /// How long to wait for a node's endpoint to accept a connection.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    pub kubelet_timeout: Duration,
    /// glog verbosity, accepted for compatibility (use --log).
    #[arg(long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Accepted for compatibility; logs always go to stderr.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub logtostderr: bool,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) =
        s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = number.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is too long"))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let signals = km_process::StopSignals::install()?;
    let cloud = km_cloud_provider::from_flags(
        args.cloud_provider.as_deref(),
        args.cloud_config.as_deref(),
    )?;
    let ranges = alloc::Ranges {
        cluster_ips: alloc::IpRange::parse(&args.service_cluster_ip_range)
            .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?,
        node_ports: alloc::parse_port_range(&args.service_node_port_range)
            .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?,
    };
    let storage = connect(&args).await?;
    let token = match &args.kubelet_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--kubelet-token-file {}", path.display()))?;
            let token = text.trim().to_owned();
            anyhow::ensure!(!token.is_empty(), "--kubelet-token-file {} is empty", path.display());
            Some(token)
        }
        None => None,
    };
    let nodes = nodeproxy::NodeProxy::new(token, args.kubelet_timeout).with_cloud(cloud);
    let config = ApiConfig { bookmark_interval: args.watch_bookmark_interval, ranges, nodes };
    let api = Arc::new(Api::new(Arc::new(storage), config));
    api.bootstrap().await.context("creating the system namespaces")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signals.first().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    let mut insecure = None;
    if args.insecure_port != 0 {
        let addr = SocketAddr::new(args.insecure_bind_address, args.insecure_port);
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!("serving the Kubernetes API on http://{}", listener.local_addr()?);
        let serve = axum::serve(listener, server::router(api.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        // Served once every listener is bound, so a healthy answer means all of them listen.
        insecure = Some(async move { serve.await.context("serving HTTP") });
    }
    match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) if args.secure_port != 0 => {
            let tls = secure::server_config(cert, key)?;
            let mut router = server::router(api.clone());
            match &args.token_auth_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let tokens = secure::Tokens::parse(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    router = router.layer(axum::middleware::from_fn_with_state(
                        Arc::new(tokens),
                        secure::authenticate,
                    ));
                }
                None => tracing::warn!(
                    "no --token-auth-file: the secure port serves anonymous requests"
                ),
            }
            let addr = SocketAddr::new(args.bind_address, args.secure_port);
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let listener = secure::TlsListener::new(tcp, tls)?;
            tracing::info!("serving the Kubernetes API on https://{}", addr);
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone()));
            servers.spawn(async move { serve.await.context("serving HTTPS") });
        }
        (None, None) => {}
        _ if args.secure_port == 0 => {}
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    }
    if let Some(serve) = insecure {
        servers.spawn(serve);
    }
    if servers.is_empty() {
        anyhow::bail!("nothing to serve: both --insecure-port and the secure port are off");
    }
    while let Some(done) = servers.join_next().await {
        done.context("server task")??;
    }
    Ok(())
}

/// Connects to etcd, retrying for a while so the server may start first.
async fn connect(args: &Args) -> anyhow::Result<EtcdStorage> {
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match EtcdStorage::connect(&args.etcd_servers, args.etcd_connections).await {
            Ok(storage) => {
                use crate::storage::Storage;
                match storage.current_revision().await {
                    Ok(_) => return Ok(storage),
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(e).context("reaching etcd");
                    }
                    Err(e) => tracing::warn!("etcd not ready: {e}"),
                }
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e)
                    .with_context(|| format!("connecting to etcd at {:?}", args.etcd_servers));
            }
            Err(e) => tracing::warn!("etcd not reachable yet: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
