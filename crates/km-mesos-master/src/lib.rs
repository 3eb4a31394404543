//! `km mesos-master`: a Mesos master for one-machine clusters and tests.
//!
//! It speaks the real Mesos v1 scheduler API (`/api/v1/scheduler`) and
//! operator API (`/api/v1`), plus the legacy `/master/state`, so any v1
//! framework runs against it unchanged. Agents (`km mesos-agent`) connect
//! over km's own protocol (`/km/v1/agent`, see `proto/km/v1/agent.proto`).
//! `--simulate-agents N` adds in-process agents for scale benchmarks.
//! [`execute`] is `km mesos-execute`, a one-task framework for trying it out.
//!
//! Layout: [`core`] is the state machine (no IO, time as input),
//! [`allocator`] the DRF order and decline filters, [`server`] the HTTP
//! endpoints and the event loop, [`sim`] the simulated agents. Resources are
//! km's shared model (`km_resources`), read and written with
//! `km_mesos::resources`. `fuzzing` (feature `fuzzing`) drives the endpoints'
//! decoding and the loop from bytes, for `fuzz/` (see `docs/fuzzing.md`).

mod allocator;
mod core;
mod execute;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod leader;
mod registry;
mod server;
mod sim;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use km_mesos::v1;
use tokio::sync::mpsc;

pub use crate::execute::{ExecuteArgs, execute};

/// Command-line flags of `km mesos-master` (Mesos's spelling where Mesos has the flag).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 5050)]
    pub port: u16,
    /// Hostname the master advertises (default: the IP).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Period of batch allocations (`1secs`, `500ms`, `2s`).
    #[arg(long = "allocation_interval", default_value = "1secs", value_parser = parse_period)]
    pub allocation_interval: Duration,
    /// Rescind offers not answered within this time (default: never).
    #[arg(long = "offer_timeout", value_parser = parse_period)]
    pub offer_timeout: Option<Duration>,
    /// With `--max_agent_ping_timeouts`: how long a disconnected agent may stay away before its
    /// tasks are lost (or unreachable for PARTITION_AWARE frameworks).
    #[arg(long = "agent_ping_timeout", default_value = "15secs", value_parser = parse_period)]
    pub agent_ping_timeout: Duration,
    /// See `--agent_ping_timeout`.
    #[arg(long = "max_agent_ping_timeouts", default_value_t = 5)]
    pub max_agent_ping_timeouts: u32,
    /// After a restart, how long the agents in the registry have to re-register before they
    /// are unreachable and reconciliation answers for their tasks. Mesos insists on at least
    /// 10 minutes; km takes shorter values too (for tests and small clusters).
    #[arg(long = "agent_reregister_timeout", default_value = "10mins", value_parser = parse_duration)]
    pub agent_reregister_timeout: Duration,
    /// Role weights for DRF, `role1=2,role2=0.5` (default weight 1).
    #[arg(long, value_parser = parse_weights)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// File of principal/secret pairs (JSON `{"credentials":[…]}` or `principal secret` lines);
    /// when given, HTTP basic authentication is required.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Directory for the registry: agents and frameworks survive a restart of the master.
    #[arg(long = "work_dir")]
    pub work_dir: Option<PathBuf>,
    /// etcd endpoints (comma-separated): run several masters, one leading. The
    /// others redirect to the leader; the registry is kept in etcd.
    #[arg(long = "etcd_servers")]
    pub etcd_servers: Option<String>,
    /// Key prefix in etcd for the election and the registry.
    #[arg(long = "etcd_prefix", default_value = "/km/mesos")]
    pub etcd_prefix: String,
    /// Lease of the leading master in etcd: a leader that cannot renew it
    /// stops, and another takes over after at most this long.
    #[arg(long = "etcd_lease_ttl", default_value = "10secs", value_parser = parse_duration)]
    pub etcd_lease_ttl: Duration,
    /// Cluster name shown in `/master/state`.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Number of in-process simulated agents to register at start.
    #[arg(long = "simulate-agents", default_value_t = 0)]
    pub simulate_agents: usize,
    /// Resources of each simulated agent (`--resources` syntax; `{i}`, `{i%N}` expand per agent).
    #[arg(
        long = "simulate-agent-resources",
        default_value = "cpus:4;mem:16384;disk:100000;ports:[31000-32000]"
    )]
    pub simulate_agent_resources: String,
    /// Attributes of each simulated agent (`--attributes` syntax, same placeholders).
    #[arg(long = "simulate-agent-attributes", default_value = "rack:r{i%10};zone:z{i%3}")]
    pub simulate_agent_attributes: String,
    /// Hostname of each simulated agent (same placeholders).
    #[arg(long = "simulate-agent-hostname", default_value = "sim-agent-{i}")]
    pub simulate_agent_hostname: String,
    /// Delay before a simulated task reports TASK_STARTING and TASK_RUNNING.
    #[arg(long = "simulate-task-delay", default_value = "0ms", value_parser = parse_duration)]
    pub simulate_task_delay: Duration,
}

/// Mesos's durations (`5secs`, `500ms`, `1mins`) and the short forms `5s`, `2m`, `1h`, read by
/// the parser every Mesos-style flag of km uses ([`km_mesos::duration::parse`]).
fn parse_duration(s: &str) -> Result<Duration, String> {
    km_mesos::duration::parse(s).map_err(|e| e.to_string())
}

/// A duration that paces a timer: zero would be a busy loop (or a panic of tokio's interval).
fn parse_period(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("invalid duration '{s}': must be more than zero")),
        d => Ok(d),
    }
}

fn parse_weights(s: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, w) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid weight '{part}': expected role=weight"))?;
        let w: f64 =
            w.trim().parse().map_err(|_| format!("invalid weight '{part}': not a number"))?;
        if !(w.is_finite() && w > 0.0) {
            return Err(format!("invalid weight '{part}': must be positive"));
        }
        out.insert(role.trim().to_owned(), w);
    }
    Ok(out)
}

/// Runs the master until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let stop =
        km_process::StopSignals::install().context("cannot listen for SIGTERM and SIGINT")?.share();
    let credentials = match &args.credentials {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --credentials {}", path.display()))?;
            let map = server::parse_credentials(&text)
                .map_err(|e| anyhow::anyhow!("--credentials {}: {e}", path.display()))?;
            Some(Arc::new(map.into_iter().collect::<HashMap<_, _>>()))
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.ip, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.ip, args.port))?;
    let addr = listener.local_addr()?;
    let hostname = args.hostname.clone().unwrap_or_else(|| addr.ip().to_string());
    let ip_u32 = match addr.ip() {
        IpAddr::V4(v4) => u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(_) => 0,
    };
    let info = v1::MasterInfo {
        id: uuid::Uuid::new_v4().to_string(),
        ip: ip_u32,
        port: u32::from(addr.port()),
        pid: Some(format!("master@{}:{}", addr.ip(), addr.port())),
        hostname: Some(hostname.clone()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        address: Some(v1::Address {
            hostname: Some(hostname.clone()),
            ip: Some(addr.ip().to_string()),
            port: i32::from(addr.port()),
        }),
        ..Default::default()
    };
    let config = core::Config {
        info,
        heartbeat_interval: Duration::from_secs(15),
        offer_timeout: args.offer_timeout,
        agent_ping_interval: args.agent_ping_timeout,
        agent_unreachable_timeout: args
            .agent_ping_timeout
            .checked_mul(args.max_agent_ping_timeouts.max(1))
            .unwrap_or(Duration::MAX),
        agent_reregister_timeout: args.agent_reregister_timeout,
        weights: args.weights.clone().unwrap_or_default(),
        max_completed_tasks: 1000,
        max_completed_frameworks: 50,
        seed: rand::random(),
    };
    tracing::debug!(seed = config.seed, "allocator seed");
    let flags = serde_json::json!({
        "ip": args.ip.to_string(),
        "port": args.port.to_string(),
        "allocation_interval": km_mesos::duration::format(args.allocation_interval),
        "cluster": args.cluster,
        "work_dir": args.work_dir.as_ref().map(|d| d.display().to_string()),
        "etcd_servers": args.etcd_servers,
        "authenticate_frameworks": credentials.is_some().to_string(),
    });
    let me = format!("{hostname}:{}", addr.port());
    let (role_tx, role) = tokio::sync::watch::channel(if args.etcd_servers.is_some() {
        leader::Role::Unknown
    } else {
        leader::Role::Leader
    });
    let (inputs, rx) = mpsc::unbounded_channel();
    let fence = leader::Fence::default();
    let shared = server::Shared {
        inputs: inputs.clone(),
        credentials,
        me: me.clone(),
        role,
        fence: fence.clone(),
    };
    tracing::info!(%addr, "km mesos-master listening");
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, server::router(shared))
            .with_graceful_shutdown(async move {
                server_stop.wait().await;
            })
            .await
    });

    // With etcd, wait to lead; the HTTP server redirects to the leader meanwhile.
    let mut master = core::Master::new(config, tokio::time::Instant::now(), SystemTime::now());
    let (store, saved, lost): (Option<registry::Store>, _, _) = match &args.etcd_servers {
        Some(servers) => {
            let ttl = args.etcd_lease_ttl.as_secs().max(2) as i64;
            let mut won = tokio::select! {
                won = leader::lead(servers, &args.etcd_prefix, &me, ttl, &role_tx, &fence) => won?,
                _ = stop.clone().wait() => return Ok(()),
            };
            let saved = leader::load_registry(&mut won.client, &args.etcd_prefix).await?;
            let election = won.election_key();
            (
                Some(registry::Store::Etcd(won.client, args.etcd_prefix.clone(), election)),
                saved,
                Some(won.lost),
            )
        }
        None => match &args.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --work_dir {}", dir.display()))?;
                let path = dir.join(registry::FILE_NAME);
                let saved = registry::load(&path)?;
                (Some(registry::Store::File(path)), saved, None)
            }
            None => (None, None, None),
        },
    };
    if let Some(saved) = saved {
        master.recover(saved, tokio::time::Instant::now(), SystemTime::now());
    }
    let loop_config = server::LoopConfig {
        allocation_interval: args.allocation_interval,
        registry: store,
        flags,
        fence,
    };
    let mut loop_task = tokio::spawn(server::run_loop(master, rx, inputs.clone(), loop_config));
    if args.simulate_agents > 0 {
        let sim = sim::SimConfig {
            count: args.simulate_agents,
            resources: args.simulate_agent_resources.clone(),
            attributes: args.simulate_agent_attributes.clone(),
            hostname: args.simulate_agent_hostname.clone(),
            task_delay: args.simulate_task_delay,
            // Kept beside a registry file; with etcd the master may move to another host,
            // where the simulated agents start afresh.
            checkpoint: match (&args.etcd_servers, &args.work_dir) {
                (None, Some(dir)) => Some(dir.join(sim::CHECKPOINT)),
                _ => None,
            },
        };
        sim::start(sim, inputs.clone()).await.map_err(|e| anyhow::anyhow!(e))?;
    }
    let lost = async {
        match lost {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    };
    // The loop ends only with the process: if it stops (a panic), the process stops with an
    // error rather than serve a health check over a master that answers nothing.
    let result = tokio::select! {
        served = server => served.context("HTTP server task failed")?.context("HTTP server failed"),
        reason = lost => Err(reason.context("lost leadership; stopping so another master can lead")),
        ended = &mut loop_task => match ended {
            Ok(Err(e)) => Err(e.context("the master's event loop stopped")),
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("the master's event loop panicked; stopping")),
            _ => Err(anyhow::anyhow!("the master's event loop stopped; stopping")),
        },
    };
    loop_task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_mesos_and_short_forms() {
        assert_eq!(parse_duration("1secs"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("15secs"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("invalid duration 'soon'"));
        assert!(parse_duration("-2s").unwrap_err().contains("negative"));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn timer_periods_must_be_more_than_zero() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        for flag in ["--allocation_interval", "--offer_timeout", "--agent_ping_timeout"] {
            let e = Cli::try_parse_from(["master".to_owned(), format!("{flag}=0secs")])
                .expect_err("zero is refused");
            assert!(e.to_string().contains("must be more than zero"), "{flag}: {e}");
        }
    }

    #[test]
    fn every_duration_flag_takes_both_forms() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        for value in ["5s", "5secs"] {
            let argv = [
                "master".to_owned(),
                format!("--allocation_interval={value}"),
                format!("--offer_timeout={value}"),
                format!("--agent_ping_timeout={value}"),
                format!("--etcd_lease_ttl={value}"),
                format!("--simulate-task-delay={value}"),
            ];
            let a = Cli::try_parse_from(argv).unwrap().args;
            let five = Duration::from_secs(5);
            assert_eq!(
                (a.allocation_interval, a.offer_timeout, a.agent_ping_timeout),
                (five, Some(five), five)
            );
            assert_eq!((a.etcd_lease_ttl, a.simulate_task_delay), (five, five));
        }
    }

    #[test]
    fn weights_parse_and_reject_nonsense() {
        assert_eq!(
            parse_weights("a=2, b=0.5").unwrap(),
            BTreeMap::from([("a".into(), 2.0), ("b".into(), 0.5)])
        );
        assert!(parse_weights("a").is_err());
        assert!(parse_weights("a=-1").is_err());
    }

    #[test]
    fn an_allocation_replays_from_its_seed() {
        let run = |seed| bench::Cluster::with_seed(12, 2, seed).offered();
        let first = run(7);
        assert_eq!(first.iter().map(Vec::len).sum::<usize>(), 12, "{first:?}");
        assert_eq!(run(7), first, "the same seed, the same allocation");
        let distinct: std::collections::BTreeSet<_> = (0..8).map(run).collect();
        assert!(distinct.len() > 1, "the seed decides the order agents are visited in");
    }

    #[test]
    fn credentials_files_in_both_formats() {
        let json = server::parse_credentials(r#"{"credentials":[{"principal":"p","secret":"s"}]}"#)
            .unwrap();
        assert_eq!(json.get("p").map(String::as_str), Some("s"));
        let text = server::parse_credentials("# comment\np1 s1\np2 s2\n").unwrap();
        assert_eq!(text.len(), 2);
        assert!(server::parse_credentials("just-one-field").is_err());
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
