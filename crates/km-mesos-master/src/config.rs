//! The master's flags ([`Args`]) and the settings they make ([`Config`]): every flag is
//! checked and every file it names is read here, before anything listens.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Seed of the allocator's shuffling of agents (default: random, logged at debug level), so
    /// that an allocation seen once can be replayed.
    #[arg(long = "allocator_seed")]
    pub allocator_seed: Option<u64>,
}

/// Mesos's durations (`5secs`, `500ms`, `1mins`) and the short forms `5s`, `2m`, `1h`, read by
/// the parser every Mesos-style flag of km uses ([`km_mesos::duration::parse`]).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    km_mesos::duration::parse(s).map_err(|e| e.to_string())
}

/// A duration that paces a timer: zero would be a busy loop (or a panic of tokio's interval).
pub(crate) fn parse_period(s: &str) -> Result<Duration, String> {
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

/// Where the registry (agents and frameworks) is kept across restarts.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryConfig {
    /// Nowhere: a restarted master starts empty.
    None,
    /// A file in this directory (`--work_dir`).
    Dir(PathBuf),
    /// etcd (`--etcd_servers`): several masters, one leading, the registry under `prefix`.
    Etcd {
        /// Endpoints, `http://host:port` or `host:port`.
        endpoints: Vec<String>,
        /// Key prefix of the election and the registry.
        prefix: String,
        /// Lease of the leader.
        lease_ttl: Duration,
    },
}

/// The simulated agents of `--simulate-agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// How many.
    pub count: usize,
    /// `--resources` syntax; `{i}` and `{i%N}` expand per agent.
    pub resources: String,
    /// `--attributes` syntax, same placeholders.
    pub attributes: String,
    /// Hostname pattern, same placeholders.
    pub hostname: String,
    /// Delay before a simulated task reports TASK_STARTING and TASK_RUNNING.
    pub task_delay: Duration,
}

/// A master's settings, checked: what [`crate::start`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where to listen (port 0: any free port, see [`crate::Running::addr`]).
    pub listen: SocketAddr,
    /// Advertised hostname (default: the IP listened on).
    pub hostname: Option<String>,
    /// Period of batch allocations.
    pub allocation_interval: Duration,
    /// Offers not answered within this time are rescinded.
    pub offer_timeout: Option<Duration>,
    /// Agents are pinged this often; a disconnected agent may stay away this long times
    /// `max_agent_ping_timeouts`.
    pub agent_ping_timeout: Duration,
    /// See `agent_ping_timeout`.
    pub max_agent_ping_timeouts: u32,
    /// How long agents of the registry have to re-register after a restart.
    pub agent_reregister_timeout: Duration,
    /// DRF weights by role (default 1).
    pub weights: BTreeMap<String, f64>,
    /// principal → secret; when set, HTTP basic authentication is required.
    pub credentials: Option<HashMap<String, String>>,
    /// Where the registry is kept.
    pub registry: RegistryConfig,
    /// Cluster name shown in `/master/state`.
    pub cluster: Option<String>,
    /// In-process simulated agents.
    pub simulation: Option<Simulation>,
    /// Seed of the allocator's shuffling of agents.
    pub allocator_seed: u64,
}

/// A flag that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read --credentials {}: {source}", path.display())]
    ReadCredentials { path: PathBuf, source: std::io::Error },
    #[error("--credentials {}: {message}", path.display())]
    Credentials { path: PathBuf, message: String },
    #[error("--etcd_servers names no endpoint")]
    NoEtcdEndpoint,
    #[error(
        "--etcd_servers and --work_dir exclude each other: with etcd the registry is kept there"
    )]
    EtcdAndWorkDir,
}

impl Config {
    /// Checks the flags and reads the files they name.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let credentials = match &args.credentials {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ReadCredentials { path: path.clone(), source }
                })?;
                let map = crate::server::parse_credentials(&text)
                    .map_err(|message| ConfigError::Credentials { path: path.clone(), message })?;
                Some(map.into_iter().collect())
            }
            None => None,
        };
        let registry = match (&args.etcd_servers, &args.work_dir) {
            (Some(_), Some(_)) => return Err(ConfigError::EtcdAndWorkDir),
            (Some(servers), None) => {
                let endpoints: Vec<String> = servers
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| if s.contains("://") { s.to_owned() } else { format!("http://{s}") })
                    .collect();
                if endpoints.is_empty() {
                    return Err(ConfigError::NoEtcdEndpoint);
                }
                RegistryConfig::Etcd {
                    endpoints,
                    prefix: args.etcd_prefix.clone(),
                    lease_ttl: args.etcd_lease_ttl,
                }
            }
            (None, Some(dir)) => RegistryConfig::Dir(dir.clone()),
            (None, None) => RegistryConfig::None,
        };
        let simulation = (args.simulate_agents > 0).then(|| Simulation {
            count: args.simulate_agents,
            resources: args.simulate_agent_resources.clone(),
            attributes: args.simulate_agent_attributes.clone(),
            hostname: args.simulate_agent_hostname.clone(),
            task_delay: args.simulate_task_delay,
        });
        Ok(Config {
            listen: SocketAddr::new(args.ip, args.port),
            hostname: args.hostname.clone(),
            allocation_interval: args.allocation_interval,
            offer_timeout: args.offer_timeout,
            agent_ping_timeout: args.agent_ping_timeout,
            max_agent_ping_timeouts: args.max_agent_ping_timeouts,
            agent_reregister_timeout: args.agent_reregister_timeout,
            weights: args.weights.clone().unwrap_or_default(),
            credentials,
            registry,
            cluster: args.cluster.clone(),
            simulation,
            allocator_seed: args.allocator_seed.unwrap_or_else(rand::random),
        })
    }
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
    fn credentials_files_in_both_formats() {
        let json =
            crate::server::parse_credentials(r#"{"credentials":[{"principal":"p","secret":"s"}]}"#)
                .unwrap();
        assert_eq!(json.get("p").map(String::as_str), Some("s"));
        let text = crate::server::parse_credentials("# comment\np1 s1\np2 s2\n").unwrap();
        assert_eq!(text.len(), 2);
        assert!(crate::server::parse_credentials("just-one-field").is_err());
    }
}
