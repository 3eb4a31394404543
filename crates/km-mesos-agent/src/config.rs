//! Command-line flags (Mesos spelling) and the resolved agent configuration.

use std::path::PathBuf;
use std::time::Duration;

use km_mesos::duration;
use km_resources::{Attribute, Resource};

use crate::flags::{self, FlagError};
use crate::updates::RetryPolicy;

/// `km mesos-agent`: a Mesos agent that registers with `km mesos-master`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The master: `host:port` or `http://host:port`.
    #[arg(long)]
    pub master: String,
    /// IP address to listen on and to advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 5051)]
    pub port: u16,
    /// Hostname to advertise (default: the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Total resources, e.g. `cpus:4;mem:8192;disk:20000;ports:[31000-32000]`;
    /// `name(role):value` reserves; missing ones are detected.
    #[arg(long, default_value = "")]
    pub resources: String,
    /// Attributes, e.g. `rack:r1;zone:a`.
    #[arg(long, default_value = "")]
    pub attributes: String,
    /// Where sandboxes and checkpoints live.
    #[arg(long = "work_dir", alias = "work-dir")]
    pub work_dir: PathBuf,
    /// Default grace period between SHUTDOWN and killing an executor.
    #[arg(
        long = "executor_shutdown_grace_period",
        alias = "executor-shutdown-grace-period",
        default_value = "5secs"
    )]
    pub executor_shutdown_grace_period: String,
    /// How long an executor may take to SUBSCRIBE.
    #[arg(
        long = "executor_registration_timeout",
        alias = "executor-registration-timeout",
        default_value = "1mins"
    )]
    pub executor_registration_timeout: String,
    /// How long a checkpointing executor waits for a restarted agent.
    #[arg(long = "recovery_timeout", alias = "recovery-timeout", default_value = "15mins")]
    pub recovery_timeout: String,
    /// How long a restarted agent waits for its executors to re-subscribe.
    #[arg(
        long = "executor_reregistration_timeout",
        alias = "executor-reregistration-timeout",
        default_value = "2secs"
    )]
    pub executor_reregistration_timeout: String,
    /// Largest file the fetcher writes for one CommandInfo URI (`B`, `KB`, `MB`, `GB`, `TB`);
    /// a bigger download or copy fails the launch and leaves nothing behind.
    #[arg(long = "fetcher_max_size", alias = "fetcher-max-size", default_value = "8GB")]
    pub fetcher_max_size: String,
    /// Size of the fetcher cache, which holds the URIs launched with `cache: true`
    /// (`B`, `KB`, `MB`, `GB`, `TB`).
    #[arg(long = "fetcher_cache_size", alias = "fetcher-cache-size", default_value = "2GB")]
    pub fetcher_cache_size: String,
    /// Directory of the fetcher cache; default `<work_dir>/fetch`. Agents must not share one.
    #[arg(long = "fetcher_cache_dir", alias = "fetcher-cache-dir")]
    pub fetcher_cache_dir: Option<PathBuf>,
}

/// The agent's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the master (`http://host:port`).
    pub master: String,
    /// IP to bind and advertise.
    pub ip: String,
    /// Port (0 = pick one; replaced by the bound port on start).
    pub port: u16,
    /// Advertised hostname.
    pub hostname: String,
    /// Total resources (sent to the master in the post-refinement form).
    pub resources: Vec<Resource>,
    /// Attributes.
    pub attributes: Vec<Attribute>,
    /// Work directory.
    pub work_dir: PathBuf,
    /// `--executor_shutdown_grace_period`.
    pub executor_shutdown_grace_period: Duration,
    /// `--executor_registration_timeout`.
    pub executor_registration_timeout: Duration,
    /// `--recovery_timeout`.
    pub recovery_timeout: Duration,
    /// `--executor_reregistration_timeout`.
    pub executor_reregistration_timeout: Duration,
    /// `--fetcher_max_size`, in bytes.
    pub fetcher_max_size: u64,
    /// `--fetcher_cache_size`, in bytes.
    pub fetcher_cache_size: u64,
    /// `--fetcher_cache_dir`.
    pub fetcher_cache_dir: PathBuf,
    /// Status update retries (Mesos: 10 s doubling to 10 min); tests shorten it.
    pub update_retry: RetryPolicy,
    /// Cap of the jittered re-subscription backoff towards the master (15 s).
    pub master_backoff_max: Duration,
}

fn dur(flag: &'static str, value: &str) -> Result<Duration, FlagError> {
    duration::parse(value).map_err(|e| FlagError {
        flag,
        token: value.to_owned(),
        problem: e.to_string(),
    })
}

impl Config {
    /// Resolves flags, detecting what the machine has for missing resources.
    pub fn from_args(args: &Args) -> Result<Self, FlagError> {
        let mut resources = flags::parse_resources(&args.resources)?;
        flags::fill_defaults(&mut resources, flags::detect_machine(&args.work_dir));
        let reregistration =
            dur("executor_reregistration_timeout", &args.executor_reregistration_timeout)?;
        if reregistration > Duration::from_secs(15) {
            return Err(FlagError {
                flag: "executor_reregistration_timeout",
                token: args.executor_reregistration_timeout.clone(),
                problem: "must be at most 15secs".into(),
            });
        }
        args.ip.parse::<std::net::IpAddr>().map_err(|e| FlagError {
            flag: "ip",
            token: args.ip.clone(),
            problem: e.to_string(),
        })?;
        Ok(Self {
            master: flags::parse_master(&args.master)?,
            ip: args.ip.clone(),
            port: args.port,
            hostname: args.hostname.clone().unwrap_or_else(flags::machine_hostname),
            resources,
            attributes: flags::parse_attributes(&args.attributes)?,
            work_dir: args.work_dir.clone(),
            executor_shutdown_grace_period: dur(
                "executor_shutdown_grace_period",
                &args.executor_shutdown_grace_period,
            )?,
            executor_registration_timeout: dur(
                "executor_registration_timeout",
                &args.executor_registration_timeout,
            )?,
            recovery_timeout: dur("recovery_timeout", &args.recovery_timeout)?,
            executor_reregistration_timeout: reregistration,
            fetcher_max_size: flags::parse_bytes("fetcher_max_size", &args.fetcher_max_size)?,
            fetcher_cache_size: flags::parse_bytes("fetcher_cache_size", &args.fetcher_cache_size)?,
            fetcher_cache_dir: args
                .fetcher_cache_dir
                .clone()
                .unwrap_or_else(|| args.work_dir.join("fetch")),
            update_retry: RetryPolicy::default(),
            master_backoff_max: Duration::from_secs(15),
        })
    }
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

    fn parse(extra: &[&str]) -> Result<Config, FlagError> {
        let mut argv = vec!["km", "--master", "127.0.0.1:5050", "--work_dir", "/tmp"];
        argv.extend_from_slice(extra);
        Config::from_args(&Cli::try_parse_from(argv).unwrap().args)
    }

    #[test]
    fn defaults_are_mesos_defaults() {
        let c = parse(&["--hostname", "h1"]).unwrap();
        assert_eq!(c.master, "http://127.0.0.1:5050");
        assert_eq!((c.ip.as_str(), c.port, c.hostname.as_str()), ("127.0.0.1", 5051, "h1"));
        assert_eq!(c.executor_shutdown_grace_period, Duration::from_secs(5));
        assert_eq!(c.executor_registration_timeout, Duration::from_secs(60));
        assert_eq!(c.recovery_timeout, Duration::from_secs(900));
        assert_eq!(c.executor_reregistration_timeout, Duration::from_secs(2));
        assert_eq!(c.fetcher_max_size, 8 << 30);
        assert_eq!(c.fetcher_cache_size, 2 << 30);
        assert_eq!(c.fetcher_cache_dir, PathBuf::from("/tmp/fetch"));
        let names: Vec<_> = c.resources.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["cpus", "mem", "disk", "ports"]);
    }

    #[test]
    fn durations_take_mesos_and_short_units() {
        for value in ["5s", "5secs"] {
            let c = parse(&[
                "--executor_shutdown_grace_period",
                value,
                "--executor_registration_timeout",
                value,
                "--recovery_timeout",
                value,
                "--executor_reregistration_timeout",
                value,
            ])
            .unwrap();
            assert_eq!(c.executor_shutdown_grace_period, Duration::from_secs(5), "{value}");
            assert_eq!(c.executor_registration_timeout, Duration::from_secs(5), "{value}");
            assert_eq!(c.recovery_timeout, Duration::from_secs(5), "{value}");
            assert_eq!(c.executor_reregistration_timeout, Duration::from_secs(5), "{value}");
        }
        let c =
            parse(&["--recovery_timeout=1.5m", "--executor_registration_timeout=2mins"]).unwrap();
        assert_eq!(c.recovery_timeout, Duration::from_secs(90));
        assert_eq!(c.executor_registration_timeout, Duration::from_secs(120));
        let e = parse(&["--recovery_timeout=-5s"]).unwrap_err();
        assert_eq!(e.flag, "recovery_timeout");
        assert!(e.to_string().contains("negative"), "{e}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = parse(&["--executor_shutdown_grace_period", "5"]).unwrap_err();
        assert_eq!((e.flag, e.token.as_str()), ("executor_shutdown_grace_period", "5"));
        let e = parse(&["--executor_reregistration_timeout", "1mins"]).unwrap_err();
        assert!(e.to_string().contains("at most 15secs"), "{e}");
        assert_eq!(parse(&["--ip", "localhost"]).unwrap_err().flag, "ip");
        assert_eq!(parse(&["--attributes", "rack"]).unwrap_err().flag, "attributes");
        assert_eq!(parse(&["--resources", "cpus:x"]).unwrap_err().flag, "resources");
        assert_eq!(parse(&["--fetcher_max_size", "lots"]).unwrap_err().flag, "fetcher_max_size");
        assert_eq!(parse(&["--fetcher_max_size", "64MB"]).unwrap().fetcher_max_size, 64 << 20);
        assert_eq!(parse(&["--fetcher_cache_size", "x"]).unwrap_err().flag, "fetcher_cache_size");
        let c = parse(&["--fetcher_cache_size", "1MB", "--fetcher_cache_dir", "/c"]).unwrap();
        assert_eq!((c.fetcher_cache_size, c.fetcher_cache_dir), (1 << 20, PathBuf::from("/c")));
    }
}
