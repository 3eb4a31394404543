//! `km mesos-master`: a Mesos master for one-machine clusters and tests.
//!
//! It speaks the real Mesos v1 scheduler API (`/api/v1/scheduler`) and
//! operator API (`/api/v1`), plus the legacy `/master/state`, so any v1
//! framework runs against it unchanged. Agents (`km mesos-agent`) connect
//! over km's own protocol (`/km/v1/agent`, see `proto/km/v1/agent.proto`).
//! `--simulate-agents N` adds in-process agents for scale benchmarks.
//! [`execute`] is `km mesos-execute`, a one-task framework for trying it out.
//!
//! Layout: [`config`] the flags and the settings they make, [`start`] the
//! server that runs a [`Config`] ([`run`] is both behind the subcommand);
//! [`core`] is the state machine (no IO, time as input),
//! [`allocator`] the DRF order and decline filters, [`server`] the HTTP
//! endpoints and the event loop, [`sim`] the simulated agents. Resources are
//! km's shared model (`km_resources`), read and written with
//! `km_mesos::resources`. `fuzzing` (feature `fuzzing`) drives the endpoints'
//! decoding and the loop from bytes, for `fuzz/` (see `docs/fuzzing.md`).

mod allocator;
pub mod config;
mod core;
mod execute;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod leader;
mod registry;
mod server;
mod sim;
mod ui;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use km_mesos::v1;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use crate::config::{Args, Config, ConfigError, RegistryConfig, Simulation};
pub use crate::execute::{ExecuteArgs, execute};

/// Why a master could not start, or stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create --work_dir {}: {source}", path.display())]
    WorkDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot read the registry: {0}")]
    Registry(String),
    #[error("cannot start the simulated agents: {0}")]
    Simulation(String),
    #[error("lost leadership; stopping so another master can lead: {0}")]
    LostLeadership(String),
    #[error("the master's event loop stopped: {0}")]
    Loop(String),
    #[error("the master's event loop panicked")]
    LoopPanicked,
    #[error("the HTTP server failed: {0}")]
    Http(String),
}

/// A started master.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until `stop` completes (then stops the master as on SIGTERM) or the master fails.
    pub async fn run_until(mut self, stop: impl Future) -> Result<(), Error> {
        tokio::select! {
            ended = &mut self.task => joined(ended),
            _ = stop => self.stop().await,
        }
    }

    /// Stops serving and ends the event loop; returns once the port is free.
    pub async fn stop(self) -> Result<(), Error> {
        self.stop.send_replace(true);
        joined(self.task.await)
    }
}

fn joined(ended: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    match ended {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(Error::LoopPanicked),
        Err(e) => Err(Error::Loop(e.to_string())),
    }
}

/// Starts a master: listens (port 0: any free port), then leads (at once, or once elected
/// through etcd), recovers the registry and runs the event loop in the background.
pub async fn start(config: Config) -> Result<Running, Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| Error::Listen { addr: config.listen, source })?;
    // A registry file is read before anything is served: a bad one stops the start.
    let (store, saved) = match &config.registry {
        RegistryConfig::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::WorkDir { path: dir.clone(), source })?;
            let path = dir.join(registry::FILE_NAME);
            let saved = registry::load(&path).map_err(|e| Error::Registry(format!("{e:#}")))?;
            (Some(registry::Store::File(path)), saved)
        }
        RegistryConfig::None | RegistryConfig::Etcd { .. } => (None, None),
    };
    let hostname = config.hostname.clone().unwrap_or_else(|| addr.ip().to_string());
    let me = format!("{hostname}:{}", addr.port());
    let (role_tx, role) = watch::channel(match config.registry {
        RegistryConfig::Etcd { .. } => leader::Role::Unknown,
        _ => leader::Role::Leader,
    });
    let (inputs, rx) = mpsc::unbounded_channel();
    let fence = leader::Fence::default();
    let shared = server::Shared {
        inputs: inputs.clone(),
        credentials: config.credentials.clone().map(std::sync::Arc::new),
        me: me.clone(),
        role,
        fence: fence.clone(),
        http: reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default(),
    };
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(
        axum::serve(
            listener,
            server::router(shared).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(until_stopped(stopped.clone()))
        .into_future(),
    );
    tracing::info!(%addr, "km mesos-master listening");
    let leading = Leading {
        core: core_config(&config, addr, &hostname),
        config,
        me,
        store,
        saved,
        role: role_tx,
        fence,
        inputs,
        rx,
    };
    let task = tokio::spawn(leading.lead_and_run(server, stopped));
    Ok(Running { addr, stop, task })
}

/// The core's settings for a master listening on `addr`.
fn core_config(config: &Config, addr: SocketAddr, hostname: &str) -> core::Config {
    let ip_u32 = match addr.ip() {
        IpAddr::V4(v4) => u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(_) => 0,
    };
    let info = v1::MasterInfo {
        id: uuid::Uuid::new_v4().to_string(),
        ip: ip_u32,
        port: u32::from(addr.port()),
        pid: Some(format!("master@{}:{}", addr.ip(), addr.port())),
        hostname: Some(hostname.to_owned()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        address: Some(v1::Address {
            hostname: Some(hostname.to_owned()),
            ip: Some(addr.ip().to_string()),
            port: i32::from(addr.port()),
        }),
        ..Default::default()
    };
    tracing::debug!(seed = config.allocator_seed, "allocator seed");
    core::Config {
        info,
        heartbeat_interval: Duration::from_secs(15),
        offer_timeout: config.offer_timeout,
        agent_ping_interval: config.agent_ping_timeout,
        agent_unreachable_timeout: config
            .agent_ping_timeout
            .checked_mul(config.max_agent_ping_timeouts.max(1))
            .unwrap_or(Duration::MAX),
        agent_reregister_timeout: config.agent_reregister_timeout,
        weights: config.weights.clone(),
        max_completed_tasks: 1000,
        max_completed_frameworks: 50,
        seed: config.allocator_seed,
    }
}

/// What a started master needs to lead.
struct Leading {
    config: Config,
    core: core::Config,
    me: String,
    store: Option<registry::Store>,
    saved: Option<km_mesos::agent::Registry>,
    role: watch::Sender<leader::Role>,
    fence: leader::Fence,
    inputs: mpsc::UnboundedSender<server::Input>,
    rx: mpsc::UnboundedReceiver<server::Input>,
}

impl Leading {
    /// Waits to lead (with etcd; the HTTP server redirects to the leader meanwhile), recovers
    /// the registry and runs the event loop. Returns once stopped and the server has ended,
    /// or with the reason the master cannot go on.
    async fn lead_and_run(
        self,
        mut server: JoinHandle<std::io::Result<()>>,
        stopped: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let Leading { config, core, me, mut store, mut saved, role, fence, inputs, rx } = self;
        let mut lost = None;
        if let RegistryConfig::Etcd { endpoints, prefix, lease_ttl } = &config.registry {
            let ttl = i64::try_from(lease_ttl.as_secs().max(2)).unwrap_or(i64::MAX);
            // Retries until elected: an unreachable etcd only delays leading.
            let mut won = tokio::select! {
                won = leader::lead(endpoints, prefix, &me, ttl, &role, &fence) => {
                    won.map_err(|e| Error::LostLeadership(format!("{e:#}")))?
                }
                () = until_stopped(stopped.clone()) => return served(server.await),
            };
            saved = leader::load_registry(&mut won.client, prefix)
                .await
                .map_err(|e| Error::Registry(format!("{e:#}")))?;
            let election = won.election_key();
            lost = Some(won.lost);
            store = Some(registry::Store::Etcd(won.client, prefix.clone(), election));
        }
        let mut master = core::Master::new(core, tokio::time::Instant::now(), SystemTime::now());
        if let Some(saved) = saved {
            master.recover(saved, tokio::time::Instant::now(), SystemTime::now());
        }
        let flags = flags_json(&config);
        let loop_config = server::LoopConfig {
            allocation_interval: config.allocation_interval,
            registry: store,
            flags,
            fence,
        };
        let mut loop_task = tokio::spawn(server::run_loop(master, rx, inputs.clone(), loop_config));
        if let Some(sim) = &config.simulation {
            let sim = sim::SimConfig {
                count: sim.count,
                resources: sim.resources.clone(),
                attributes: sim.attributes.clone(),
                hostname: sim.hostname.clone(),
                task_delay: sim.task_delay,
                // Kept beside a registry file; with etcd the master may move to another host,
                // where the simulated agents start afresh.
                checkpoint: match &config.registry {
                    RegistryConfig::Dir(dir) => Some(dir.join(sim::CHECKPOINT)),
                    _ => None,
                },
            };
            if let Err(e) = sim::start(sim, inputs.clone()).await {
                loop_task.abort();
                return Err(Error::Simulation(e));
            }
        }
        let lost = async {
            match lost {
                Some(lost) => lost.await,
                None => std::future::pending().await,
            }
        };
        // The loop ends only with the master: if it stops (a panic), the master stops with an
        // error rather than serve a health check over a loop that answers nothing.
        let result = tokio::select! {
            // Ending the loop ends the event streams, whose connections the server's graceful
            // shutdown waits for.
            () = until_stopped(stopped) => {
                loop_task.abort();
                let _ = (&mut loop_task).await;
                served((&mut server).await)
            }
            ended = &mut server => served(ended),
            reason = lost => Err(Error::LostLeadership(format!("{reason:#}"))),
            ended = &mut loop_task => match ended {
                Ok(Err(e)) => Err(Error::Loop(format!("{e:#}"))),
                Err(e) if e.is_panic() => Err(Error::LoopPanicked),
                _ => Err(Error::Loop("it ended".into())),
            },
        };
        loop_task.abort();
        result
    }
}

/// Completes once `stop` is sent (or its sender is gone).
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// How the HTTP server ended.
fn served(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), Error> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Http(e.to_string())),
        Err(e) => Err(Error::Http(e.to_string())),
    }
}

/// The flags `/master/state` and `/flags` show.
fn flags_json(config: &Config) -> serde_json::Value {
    let (work_dir, etcd_servers) = match &config.registry {
        RegistryConfig::Dir(dir) => (Some(dir.display().to_string()), None),
        RegistryConfig::Etcd { endpoints, .. } => (None, Some(endpoints.join(","))),
        RegistryConfig::None => (None, None),
    };
    serde_json::json!({
        "ip": config.listen.ip().to_string(),
        "port": config.listen.port().to_string(),
        "allocation_interval": km_mesos::duration::format(config.allocation_interval),
        "cluster": config.cluster,
        "work_dir": work_dir,
        "etcd_servers": etcd_servers,
        "authenticate_frameworks": config.credentials.is_some().to_string(),
    })
}

/// `km mesos-master`: runs until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let signals = km_process::StopSignals::install()?;
    let config = Config::from_args(&args)?;
    let running = start(config).await?;
    running.run_until(signals.first()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_allocation_replays_from_its_seed() {
        let run = |seed| crate::bench::Cluster::with_seed(12, 2, seed).offered();
        let first = run(7);
        assert_eq!(first.iter().map(Vec::len).sum::<usize>(), 12, "{first:?}");
        assert_eq!(run(7), first, "the same seed, the same allocation");
        let distinct: std::collections::BTreeSet<_> = (0..8).map(run).collect();
        assert!(distinct.len() > 1, "the seed decides the order agents are visited in");
    }
}

/// Entry points for benchmarks (not a stable API).
#[doc(hidden)]
pub mod bench {
    use std::time::{Duration, SystemTime};

    use km_mesos::agent;
    use km_mesos::v1;
    use tokio::time::Instant;

    use crate::core::{Config, Master};

    /// A master with `agents` registered agents (4 cpus, 16 GiB, ports) and
    /// `frameworks` subscribed frameworks, ready for [`Cluster::allocate`].
    pub struct Cluster {
        master: Master,
    }

    impl Cluster {
        pub fn new(agents: usize, frameworks: usize) -> Cluster {
            Cluster::with_seed(agents, frameworks, 0)
        }

        /// [`Cluster::new`] with the allocator's seed.
        pub fn with_seed(agents: usize, frameworks: usize, seed: u64) -> Cluster {
            let now = Instant::now();
            let config = Config {
                info: v1::MasterInfo {
                    id: "bench".into(),
                    ip: 0,
                    port: 5050,
                    ..Default::default()
                },
                heartbeat_interval: Duration::from_secs(15),
                offer_timeout: None,
                agent_ping_interval: Duration::from_secs(15),
                agent_unreachable_timeout: Duration::from_secs(75),
                agent_reregister_timeout: Duration::from_secs(600),
                weights: Default::default(),
                max_completed_tasks: 1000,
                max_completed_frameworks: 50,
                seed,
            };
            let mut master = Master::new(config, now, SystemTime::now());
            let resources = km_mesos::flags::parse_resources(
                "cpus:4;mem:16384;disk:100000;ports:[31000-32000]",
            )
            .expect("static resources parse");
            let mut conn = 0;
            for i in 0..agents {
                conn += 1;
                let info = v1::AgentInfo {
                    hostname: format!("a{i}"),
                    resources: resources.clone(),
                    ..Default::default()
                };
                let subscribe = agent::call::Subscribe { agent_info: info, ..Default::default() };
                master
                    .subscribe_agent(conn, subscribe, now, SystemTime::now())
                    .expect("agent registers");
            }
            for i in 0..frameworks {
                conn += 1;
                let info = v1::FrameworkInfo {
                    user: "u".into(),
                    name: format!("f{i}"),
                    ..Default::default()
                };
                let subscribe = km_mesos::v1::scheduler::call::Subscribe {
                    framework_info: info,
                    ..Default::default()
                };
                master.subscribe_framework(
                    conn,
                    format!("s{i}"),
                    subscribe,
                    None,
                    now,
                    SystemTime::now(),
                );
            }
            master.take_outbox();
            Cluster { master }
        }

        /// One allocation run; returns the number of offers it made. All
        /// offers are then declined without a filter so the next run starts
        /// from the same state.
        pub fn allocate(&mut self) -> usize {
            self.master.allocate(Instant::now());
            let made = self.master.outstanding_offers();
            self.master.decline_all_offers(Instant::now());
            self.master.take_outbox();
            made
        }

        /// One allocation run: the agents offered, per OFFERS event in the order sent. The
        /// offers are then declined as in [`Cluster::allocate`].
        pub fn offered(&mut self) -> Vec<Vec<String>> {
            self.master.allocate(Instant::now());
            let offered = self
                .master
                .take_outbox()
                .into_iter()
                .filter_map(|out| match out {
                    crate::core::Out::Scheduler(_, e) => e.offers,
                    _ => None,
                })
                .map(|o| o.offers.into_iter().map(|o| o.hostname).collect())
                .collect();
            self.master.decline_all_offers(Instant::now());
            self.master.take_outbox();
            offered
        }
    }
}
