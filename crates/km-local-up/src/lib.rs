//! `km local-up`: a whole km cluster on one machine, in the foreground.
//!
//! It starts, as child processes: etcd, `km apiserver`, `km mesos-master`, N `km mesos-agent`s,
//! `km scheduler` and `km controller-manager`, each on a port recorded in the data directory's
//! state file ([`state`]), with command lines derived from that state alone ([`spec`]), and
//! waits for each to be healthy ([`supervise`]). It then runs until SIGINT or SIGTERM and stops
//! everything in reverse order (the agents' executors, which stop their pods, before their
//! agents), or stops everything and fails when a component dies.
//!
//! Running it again over the same data directory resumes the cluster: same ports, same etcd
//! data, the master's registry and the agents' work directories. A lock on the data directory
//! keeps a second `km local-up` off it.

pub mod procs;
pub mod spec;
pub mod state;
pub mod supervise;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// `km local-up` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The cluster's directory: state file (ports), etcd data, Mesos work dirs, logs, kubeconfig.
    /// Created when missing; a directory that holds a cluster is resumed.
    #[arg(long, default_value = "km-local")]
    pub data_dir: PathBuf,
    /// Number of `km mesos-agent`s, 1 to 32 [default for a new cluster: 2; a resumed cluster
    /// keeps its own].
    #[arg(long)]
    pub agents: Option<u32>,
    /// The IPv4 address every component listens on and advertises [default for a new cluster:
    /// 127.0.0.1; a resumed cluster keeps its own].
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// How long each component may take to become healthy (`60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The etcd binary [default: `etcd` on PATH, else /usr/bin/etcd].
    #[arg(long)]
    pub etcd_binary: Option<PathBuf>,
    /// Sandbox (pod infra) image of Docker pods, handed to the executors through the
    /// scheduler's `--kubelet-pod-infra-container-image` [default: the executor's, Kubernetes'
    /// pause, pulled when missing]. Give a local image on a machine without a registry.
    #[arg(long)]
    pub pod_infra_container_image: Option<String>,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 60s, 2m)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// Why `km local-up` did not start or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value, or a contradiction between flags and the data directory.
    #[error("{0}")]
    Flag(String),
    /// `--address` cannot be used.
    #[error("--address {address}: {reason}")]
    Address {
        /// The address.
        address: Ipv4Addr,
        /// Why not.
        reason: String,
    },
    /// The data directory cannot be created or read.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another `km local-up` holds the data directory.
    #[error(
        "another km local-up{holder} is running on the data directory {dir} (it holds \
         {dir}/lock); stop it first, or pass another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// The state file cannot be read or makes no sense.
    #[error(
        "the state file {path} cannot be used: {reason}; move the data directory away to start \
         a new cluster"
    )]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No free ports.
    #[error("cannot find free ports on {address}: {reason}")]
    Ports {
        /// The address.
        address: Ipv4Addr,
        /// Why.
        reason: String,
    },
    /// A recorded port is taken.
    #[error(
        "port {address}:{port} of {component} (recorded in {state}) is not free ({reason}); is \
         a component of an earlier run still up? Stop it, or pass another --data-dir"
    )]
    PortInUse {
        /// The component.
        component: String,
        /// The address.
        address: Ipv4Addr,
        /// The port.
        port: u16,
        /// The state file.
        state: PathBuf,
        /// The bind error.
        reason: String,
    },
    /// etcd cannot be found.
    #[error("{0}")]
    Etcd(String),
    /// This process's own binary cannot be found (the components run it).
    #[error("cannot find the km binary to run the components with: {0}")]
    CurrentExe(std::io::Error),
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Signal handlers cannot be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(std::io::Error),
    /// A component cannot be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// The component.
        name: String,
        /// Its program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A component failed to come up, or died.
    #[error("{name} {what}; everything started was stopped. Last lines of {log}:\n{tail}")]
    Component {
        /// The component.
        name: String,
        /// What happened.
        what: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// SIGINT or SIGTERM came before the cluster was ready.
    #[error("{0} during start-up; everything started was stopped")]
    Interrupted(km_process::Stop),
}

/// `km local-up`: brings the cluster up, runs until SIGINT or SIGTERM, and takes it down.
pub async fn run(args: Args) -> Result<(), Error> {
    supervise::run(args).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        Cli::try_parse_from(std::iter::once("local-up").chain(args.iter().copied()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.data_dir, PathBuf::from("km-local"));
        assert_eq!(a.agents, None);
        assert_eq!(a.address, None);
        assert_eq!(a.timeout, Duration::from_secs(60));
        assert_eq!(a.etcd_binary, None);
    }

    #[test]
    fn flags_are_read() {
        let a = parse(&[
            "--data-dir=/tmp/x",
            "--agents=3",
            "--address=127.0.0.2",
            "--timeout=2m",
            "--etcd-binary=/opt/etcd",
        ])
        .unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(a.agents, Some(3));
        assert_eq!(a.address, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert_eq!(a.etcd_binary, Some(PathBuf::from("/opt/etcd")));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--timeout=0s"]).unwrap_err().contains("more than zero"));
        assert!(parse(&["--timeout=soon"]).unwrap_err().contains("--timeout"));
        assert!(parse(&["--address=localhost"]).unwrap_err().contains("--address"));
        assert!(parse(&["--address=::1"]).unwrap_err().contains("--address"));
        assert!(parse(&["--agents=-1"]).unwrap_err().contains("--agents"));
        assert!(parse(&["--nodes=3"]).unwrap_err().contains("--nodes"));
    }
}
