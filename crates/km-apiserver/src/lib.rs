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
//!
//! [`config`] turns the flags into a checked [`Config`]; [`start`] runs one
//! ([`run`] is both, behind the subcommand).

pub mod alloc;
pub mod api;
pub mod apiservers;
pub mod authz;
pub mod config;
pub mod error;
pub mod managed;
pub mod metrics;
pub mod nodeproxy;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod satoken;
pub mod secure;
pub mod selector;
pub mod server;
pub mod storage;
pub mod table;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use backon::Retryable as _;
use tokio::task::JoinSet;

use crate::api::Api;
use crate::storage::{EtcdStorage, Storage as _, StorageError};

pub use crate::config::{Args, Config, ConfigError, Secure};

/// Why a server could not start, or stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach etcd at {}: {source}", servers.join(","))]
    Etcd { servers: Vec<String>, source: StorageError },
    #[error("cannot create the system namespaces: {0}")]
    Bootstrap(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("serving {scheme} failed: {source}")]
    Serve { scheme: &'static str, source: std::io::Error },
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    insecure: Option<SocketAddr>,
    secure: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    servers: JoinSet<Result<(), Error>>,
}

impl Running {
    /// Where the plain-HTTP port listens, if served.
    pub fn insecure_addr(&self) -> Option<SocketAddr> {
        self.insecure
    }

    /// Where the HTTPS port listens, if served.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.secure
    }

    /// Runs until `stop` completes (then stops as on SIGTERM) or a port stops serving.
    pub async fn run_until(mut self, stop: impl Future) -> Result<(), Error> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                ended = self.servers.join_next() => match ended {
                    Some(ended) => ended??,
                    None => return Ok(()),
                },
                _ = &mut stop => return self.stop().await,
            }
        }
    }

    /// Stops accepting, lets requests in flight finish (watches end) and returns once the
    /// ports are free.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.stop.send_replace(true);
        while let Some(ended) = self.servers.join_next().await {
            ended??;
        }
        Ok(())
    }
}

/// Starts a server: connects to etcd (retrying for `config.etcd_wait`, so etcd may start
/// after it), creates the system namespaces, binds its ports and serves them.
pub async fn start(config: Config) -> Result<Running, Error> {
    let metrics = Arc::new(metrics::Metrics::new());
    let storage = metrics::Timed::new(connect(&config).await?, Arc::clone(&metrics));
    let api = Arc::new(Api::with_metrics(Arc::new(storage), config.api.clone(), metrics));
    api.bootstrap().await.map_err(|e| Error::Bootstrap(e.to_string()))?;
    api.authorizer
        .start_feed(Arc::clone(&api.storage))
        .await
        .map_err(|e| Error::Bootstrap(format!("loading the RBAC policy: {e}")))?;
    serve(api, &config).await
}

/// Serves `api` on the ports of `config`.
async fn serve<S: storage::Storage + 'static>(
    api: Arc<Api<S>>,
    config: &Config,
) -> Result<Running, Error> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            // A dropped sender also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    // Every port is bound before any is served: once one answers, all of them listen.
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
    };
    let insecure = match config.insecure {
        Some(addr) => Some((bind(addr).await?, addr)),
        None => None,
    };
    let secure = match &config.secure {
        Some(s) => Some((bind(s.addr).await?, s)),
        None => None,
    };
    let mut servers = JoinSet::new();
    let mut running = Running { insecure: None, secure: None, stop, servers: JoinSet::new() };
    if let Some((tcp, s)) = secure {
        let listen = |source| Error::Listen { addr: s.addr, source };
        let addr = tcp.local_addr().map_err(listen)?;
        let listener = secure::TlsListener::new(tcp, s.tls.clone()).map_err(listen)?;
        if s.tokens.is_none() && !s.client_certificates {
            tracing::warn!(
                "neither --token-auth-file nor --client-ca-file: the secure port's requests are anonymous"
            );
        }
        let authn = Arc::new(secure::Authn {
            tokens: s.tokens.clone(),
            client_certificates: s.client_certificates,
            service_accounts: config.api.service_accounts.clone(),
        });
        let router = server::router(api.clone())
            .layer(axum::middleware::from_fn_with_state(authn, secure::authenticate))
            .into_make_service_with_connect_info::<secure::Peer>();
        tracing::info!("serving the Kubernetes API on https://{addr}");
        let serve = axum::serve(listener, router).with_graceful_shutdown(until_stopped());
        servers.spawn(async move {
            serve.await.map_err(|source| Error::Serve { scheme: "HTTPS", source })
        });
        running.secure = Some(addr);
    }
    if let Some((tcp, wanted)) = insecure {
        let addr = tcp.local_addr().map_err(|source| Error::Listen { addr: wanted, source })?;
        tracing::info!("serving the Kubernetes API on http://{addr}");
        // The insecure port's requests act as a superuser (local use only).
        let router = server::router(Arc::clone(&api))
            .layer(axum::middleware::from_fn(authz::unsecured_port));
        let serve = axum::serve(tcp, router).with_graceful_shutdown(until_stopped());
        servers.spawn(async move {
            serve.await.map_err(|source| Error::Serve { scheme: "HTTP", source })
        });
        running.insecure = Some(addr);
    }
    // This server in the `kubernetes` Endpoints while it serves; it leaves them on stop.
    let served = running.secure.map(|a| (a, "https")).or(running.insecure.map(|a| (a, "http")));
    if let Some((addr, scheme)) = served {
        let address = match config.advertise_address {
            Some(ip) => ip,
            None if !addr.ip().is_unspecified() => addr.ip(),
            None => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let (lease_duration, renew_interval) = config.identity_lease;
        let me = apiservers::Identity {
            address,
            port: addr.port(),
            scheme,
            lease_duration,
            renew_interval,
        };
        let api = Arc::clone(&api);
        servers.spawn(async move {
            apiservers::run(api, me, until_stopped()).await;
            Ok(())
        });
    }
    running.servers = servers;
    Ok(running)
}

/// `km apiserver`: runs until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let signals = km_process::StopSignals::install()?;
    let config = Config::from_args(&args)?;
    let running = start(config).await?;
    running.run_until(signals.first()).await?;
    Ok(())
}

/// Connects to etcd, retrying for a while so the server may start first.
async fn connect(config: &Config) -> Result<EtcdStorage, Error> {
    let attempt = || async {
        let storage = EtcdStorage::connect(&config.etcd_servers, config.etcd_connections).await?;
        storage.current_revision().await?;
        Ok::<_, StorageError>(storage)
    };
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_total_delay(Some(config.etcd_wait))
        .without_max_times();
    attempt
        .retry(backoff)
        .notify(|e, _| tracing::warn!("etcd not reachable yet: {e}"))
        .await
        .map_err(|source| Error::Etcd { servers: config.etcd_servers.clone(), source })
}
