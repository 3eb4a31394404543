//! Flags and the `--scheduler-config` file, checked once at start-up into [`Settings`].
//! Anything unusable is an error naming the flag (or file key) and what is wrong with it;
//! nothing is accepted and then ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use km_offer_matcher::{
    ExecutorUpgrade, PortMapping, PublicAgents, ResourceBasis, Scalar, Scalars, Strategy,
};
use km_scheduler_core::LaunchPolicy;
use url::Url;

use crate::args::Args;
use crate::ini_config::{self, Tuning};
use crate::{duration, master_spec};

/// A start-up error: which flag, and why.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A flag with an unusable value.
    #[error("--{flag}: {problem}")]
    Flag {
        /// Flag name without dashes.
        flag: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `--mesos-master`.
    #[error(transparent)]
    Master(#[from] master_spec::MasterSpecError),
    /// `--scheduler-config`.
    #[error(transparent)]
    Ini(#[from] ini_config::IniError),
}

fn flag(flag: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Flag { flag, problem: problem.into() }
}

/// Where the executor binary comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorSource {
    /// A URI the agents fetch (`http://…/km`); run as `./<basename>`.
    Fetch(String),
    /// A path present on every agent (`file:///usr/bin/km`); nothing fetched.
    AgentLocal(String),
    /// A local file this scheduler serves at `/<basename>`; fetched from there.
    Served(PathBuf),
}

/// Executor settings.
#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// The binary.
    pub source: ExecutorSource,
    /// Flags passed to `km executor` (part of the executor ID).
    pub args: Vec<String>,
    /// cpus and mem of the executor itself (static pods are added).
    pub base: Scalars,
}

/// Everything the scheduler needs, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API server URLs.
    pub api_servers: Vec<String>,
    /// Kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Masters, in order.
    pub masters: Vec<Url>,
    /// etcd endpoints for the framework ID (empty: the API).
    pub etcd_servers: Vec<String>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Base URL agents use to reach this scheduler.
    pub advertised: String,
    /// Serve the kamikaze action.
    pub kamikaze: bool,
    /// `--ha`: the leader lease of the election (None: no election).
    pub ha_lease_ttl: Option<Duration>,
    /// Static pods directory.
    pub static_pods: Option<PathBuf>,
    /// FrameworkInfo pieces.
    pub framework: FrameworkSettings,
    /// The executor.
    pub executor: ExecutorSettings,
    /// The core's configuration (the executor ID is filled in once the executor is built).
    pub core: km_scheduler_core::Config,
    /// The ini tuning values.
    pub tuning: Tuning,
    /// The pace of the executor drain.
    pub drain: crate::drain::DrainSettings,
}

/// FrameworkInfo settings.
#[derive(Clone, Debug)]
pub struct FrameworkSettings {
    /// Name.
    pub name: String,
    /// User.
    pub user: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Checkpointing.
    pub checkpoint: bool,
    /// Failover timeout (zero: the framework ID is not kept).
    pub failover_timeout: Duration,
    /// Web UI URL.
    pub webui_url: Option<String>,
    /// HTTP authentication.
    pub principal: Option<String>,
    /// Its secret.
    pub secret: Option<String>,
}

fn roles(flag_name: &'static str, text: &str) -> Result<Vec<String>, SettingsError> {
    let mut out: Vec<String> = Vec::new();
    for r in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        km_resources::validate_role(r).map_err(|e| flag(flag_name, e.to_string()))?;
        if !out.iter().any(|x| x == r) {
            out.push(r.to_owned());
        }
    }
    if out.is_empty() {
        return Err(flag(flag_name, "at least one role is needed (`*` is the default role)"));
    }
    Ok(out)
}

fn scalar(flag_name: &'static str, value: f64) -> Result<Scalar, SettingsError> {
    if !value.is_finite() || !(0.0..=1e12).contains(&value) {
        return Err(flag(flag_name, format!("{value} is not a non-negative amount")));
    }
    Ok(Scalar::from_f64(value))
}

fn dur(flag_name: &'static str, text: &str) -> Result<Duration, SettingsError> {
    duration::parse(text).map_err(|e| flag(flag_name, e.to_string()))
}

impl Settings {
    /// Checks the flags (and reads `--scheduler-config`).
    pub fn from_args(args: &Args) -> Result<Settings, SettingsError> {
        let api_servers: Vec<String> = args
            .api_servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &api_servers {
            let u = Url::parse(s)
                .map_err(|e| flag("api-servers", format!("{s:?} is not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(flag(
                    "api-servers",
                    format!("{s:?}: the scheme must be http or https"),
                ));
            }
        }
        if api_servers.is_empty() && args.kubeconfig.is_none() {
            return Err(flag("api-servers", "required (or give --kubeconfig)"));
        }
        if let Some(k) = &args.kubeconfig
            && !k.is_file()
        {
            return Err(flag("kubeconfig", format!("{} is not a readable file", k.display())));
        }
        let masters = master_spec::parse(&args.mesos_master)?;
        let tuning = match &args.scheduler_config {
            Some(path) => ini_config::load(path)?,
            None => Tuning::default(),
        };

        let framework_roles = roles("mesos-framework-roles", &args.mesos_framework_roles)?;
        let default_pod_roles = roles("mesos-default-pod-roles", &args.mesos_default_pod_roles)?;
        if let Some(r) = default_pod_roles.iter().find(|r| !framework_roles.contains(r)) {
            return Err(flag(
                "mesos-default-pod-roles",
                format!("{r:?} is not one of the framework roles {framework_roles:?}"),
            ));
        }

        let failover_timeout = dur("failover-timeout", &args.failover_timeout)?;
        if failover_timeout > Duration::from_secs(9_000_000_000) {
            return Err(flag("failover-timeout", "at most 9000000000s (about 285 years)"));
        }
        let secret =
            match (&args.mesos_authentication_principal, &args.mesos_authentication_secret_file) {
                (Some(_), Some(path)) => {
                    let s = std::fs::read_to_string(path).map_err(|e| {
                        flag(
                            "mesos-authentication-secret-file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    let s = s.trim().to_owned();
                    if s.is_empty() {
                        return Err(flag(
                            "mesos-authentication-secret-file",
                            format!("{} is empty", path.display()),
                        ));
                    }
                    Some(s)
                }
                (None, Some(_)) => {
                    return Err(flag(
                        "mesos-authentication-secret-file",
                        "needs --mesos-authentication-principal",
                    ));
                }
                (Some(_), None) => {
                    return Err(flag(
                        "mesos-authentication-principal",
                        "needs --mesos-authentication-secret-file",
                    ));
                }
                (None, None) => None,
            };
        let user = if args.mesos_user.is_empty() {
            std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".to_owned())
        } else {
            args.mesos_user.clone()
        };
        if args.framework_name.trim().is_empty() {
            return Err(flag("framework-name", "must not be empty"));
        }

        let listen = SocketAddr::new(args.address, args.port);
        let advertised = match &args.advertised_address {
            Some(a) => {
                let u = Url::parse(&format!("http://{a}")).map_err(|e| {
                    flag("advertised-address", format!("{a:?} is not host:port: {e}"))
                })?;
                if u.port().is_none() || u.host_str().is_none() || u.path() != "/" {
                    return Err(flag("advertised-address", format!("{a:?} is not host:port")));
                }
                format!("http://{a}")
            }
            None => format!("http://{listen}"),
        };

        let source = match args.executor_path.as_deref() {
            None => {
                let exe = std::env::current_exe().map_err(|e| {
                    flag("executor-path", format!("cannot find this binary to serve: {e}"))
                })?;
                ExecutorSource::Served(exe)
            }
            Some(p) if p.starts_with("file://") => {
                let path = &p["file://".len()..];
                if !path.starts_with('/') {
                    return Err(flag(
                        "executor-path",
                        format!("{p:?}: file:// needs an absolute path"),
                    ));
                }
                ExecutorSource::AgentLocal(path.to_owned())
            }
            Some(p) if p.contains("://") => {
                let u = Url::parse(p).map_err(|e| flag("executor-path", format!("{p:?}: {e}")))?;
                if u.path_segments().and_then(|mut s| s.next_back()).is_none_or(str::is_empty) {
                    return Err(flag("executor-path", format!("{p:?} names no file")));
                }
                ExecutorSource::Fetch(p.to_owned())
            }
            Some(p) => {
                let path = PathBuf::from(p);
                if !path.is_file() {
                    return Err(flag("executor-path", format!("{p} is not a file")));
                }
                ExecutorSource::Served(path)
            }
        };
        let executor_api_servers = if args.executor_api_servers.is_empty() {
            api_servers.clone()
        } else {
            args.executor_api_servers.clone()
        };
        let suicide = dur("executor-suicide-timeout", &args.executor_suicide_timeout)?;
        let grace = dur("mesos-launch-grace-period", &args.mesos_launch_grace_period)?;
        let mut exec_args = vec![
            format!("--suicide-timeout={}", executor_duration(suicide)),
            format!("--launch-grace-period={}", executor_duration(grace)),
            format!("--log={}", args.executor_log),
            format!("--allow-privileged={}", args.allow_privileged),
        ];
        if let Some(kubeconfig) = &args.executor_kubeconfig {
            exec_args.push(format!("--kubeconfig={kubeconfig}"));
        }
        if !executor_api_servers.is_empty() {
            exec_args.push(format!("--api-servers={}", executor_api_servers.join(",")));
        }
        if let Some(path) = &args.executor_proxy_token_file {
            if !path.starts_with('/') {
                return Err(flag(
                    "executor-proxy-token-file",
                    format!("{path:?} must be an absolute path on the agents' hosts"),
                ));
            }
            exec_args.push(format!("--proxy-token-file={path}"));
        }
        if args.executor_bindall {
            exec_args.push("--address=0.0.0.0".to_owned());
        }
        if let Some(image) = &args.kubelet_pod_infra_container_image {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                return Err(flag(
                    "kubelet-pod-infra-container-image",
                    format!("{image:?} is not an image reference"),
                ));
            }
            exec_args.push(format!("--pod-infra-container-image={image}"));
        }
        let base = Scalars::cpus_mem(
            scalar("mesos-executor-cpus", args.mesos_executor_cpus)?,
            scalar("mesos-executor-mem", args.mesos_executor_mem)?,
        );

        let strategy = match args.placement.as_str() {
            "binpack" => Strategy::Binpack,
            "spread" => Strategy::Spread { by: None },
            other => match other.strip_prefix("spread:") {
                Some(attr) if !attr.is_empty() => Strategy::Spread { by: Some(attr.to_owned()) },
                _ => {
                    return Err(flag(
                        "placement",
                        format!("{other:?}: use binpack, spread or spread:<attribute>"),
                    ));
                }
            },
        };
        let public_agents = PublicAgents {
            role: (!args.public_agent_role.is_empty()).then(|| args.public_agent_role.clone()),
            attribute: match &args.public_agent_attribute {
                None => None,
                Some(a) if a.is_empty() => {
                    return Err(flag("public-agent-attribute", "must not be empty"));
                }
                Some(a) => Some(match a.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (a.clone(), None),
                }),
            },
        };
        let matcher = km_offer_matcher::Config {
            basis: if args.resource_basis == "limits" {
                ResourceBasis::Limits
            } else {
                ResourceBasis::Requests
            },
            default_container_cpus: scalar(
                "default-container-cpu-limit",
                args.default_container_cpu_limit,
            )?,
            default_container_mem: scalar(
                "default-container-mem-limit",
                args.default_container_mem_limit,
            )?,
            executor: km_offer_matcher::ExecutorConfig {
                id: "pending".to_owned(),
                resources: base,
                upgrade: if args.executor_upgrade == "exclusive" {
                    ExecutorUpgrade::Exclusive
                } else {
                    ExecutorUpgrade::SideBySide
                },
            },
            framework_roles: framework_roles.clone(),
            default_pod_roles,
            default_port_mapping: if args.host_port_endpoints {
                PortMapping::Wildcard
            } else {
                PortMapping::Fixed
            },
            public_agents,
            strategy,
        };
        matcher.validate().map_err(|e| flag("mesos-framework-roles", e.to_string()))?;

        let cooldown =
            dur("reconcile-cooldown", &args.reconcile_cooldown)?.max(Duration::from_secs(15));
        if args.scheduler_name.trim().is_empty() {
            return Err(flag("scheduler-name", "must not be empty"));
        }
        let core = km_scheduler_core::Config {
            scheduler_name: args.scheduler_name.clone(),
            offer_ttl: tuning.offer_ttl,
            offer_linger: tuning.offer_linger_ttl,
            listener_delay: tuning.listener_delay,
            refuse_seconds: tuning.refuse_seconds,
            initial_backoff: tuning.initial_pod_backoff,
            max_backoff: tuning.max_pod_backoff,
            reconcile_interval: Duration::from_secs(args.reconcile_interval),
            reconcile_cooldown: cooldown,
            initial_implicit_delay: tuning.initial_implicit_reconciliation_delay,
            explicit_max_backoff: tuning.explicit_reconciliation_max_backoff,
            explicit_abort: tuning.explicit_reconciliation_abort_timeout,
            launch_policy: if args.launch_policy == "one-pod-per-offer" {
                LaunchPolicy::OnePodPerOffer
            } else {
                LaunchPolicy::Pack
            },
            matcher,
            seed: rand::random(),
            ..km_scheduler_core::Config::default()
        };

        if let Some(dir) = &args.static_pods_config
            && !dir.is_dir()
        {
            return Err(flag(
                "static-pods-config",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if args.etcd_servers.iter().any(|s| s.trim().is_empty()) {
            return Err(flag("etcd-servers", "an endpoint is empty"));
        }
        let ha_lease_ttl = match (args.ha, &args.ha_lease_ttl) {
            (false, Some(_)) => {
                return Err(flag(
                    "ha-lease-ttl",
                    "is the lease of --ha; give --ha too, or drop it",
                ));
            }
            (false, None) => None,
            (true, _) if args.etcd_servers.is_empty() => {
                return Err(flag(
                    "ha",
                    "the schedulers elect their leader over etcd: give --etcd-servers",
                ));
            }
            (true, ttl) => {
                let ttl = dur("ha-lease-ttl", ttl.as_deref().unwrap_or("5s"))?;
                if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(3600) {
                    return Err(flag(
                        "ha-lease-ttl",
                        format!(
                            "{} is out of range: between 2s (etcd's shortest lease) and 1h",
                            crate::duration::format(ttl)
                        ),
                    ));
                }
                Some(ttl)
            }
        };

        Ok(Settings {
            api_servers,
            kubeconfig: args.kubeconfig.clone(),
            masters,
            etcd_servers: args.etcd_servers.clone(),
            listen,
            advertised,
            kamikaze: args.enable_kamikaze,
            ha_lease_ttl,
            static_pods: args.static_pods_config.clone(),
            framework: FrameworkSettings {
                name: args.framework_name.clone(),
                user,
                roles: framework_roles,
                checkpoint: args.checkpoint,
                failover_timeout,
                webui_url: args.framework_weburi.clone(),
                principal: args.mesos_authentication_principal.clone(),
                secret,
            },
            executor: ExecutorSettings { source, args: exec_args, base },
            core,
            tuning,
            drain: crate::drain::DrainSettings {
                concurrency: if args.executor_upgrade == "exclusive" {
                    0
                } else {
                    args.executor_drain_concurrency
                },
                pause: dur("executor-drain-pause", &args.executor_drain_pause)?,
            },
        })
    }
}

/// A duration as an executor flag: whole seconds as `20m` or `1h30m`, anything finer in whole
/// milliseconds (`1500ms`), forms that Go's and the executor's duration parsers both read.
fn executor_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { duration::format(d) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn executor_durations_read_back_with_humantime() {
        for (d, text) in [
            (Duration::from_secs(1200), "20m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_millis(250), "250ms"),
        ] {
            assert_eq!(executor_duration(d), text);
            assert_eq!(humantime::parse_duration(text).ok(), Some(d), "{text}");
        }
    }

    fn settings(extra: &[&str]) -> Result<Settings, SettingsError> {
        let mut argv = vec!["scheduler", "--api-servers=http://127.0.0.1:8080"];
        argv.extend_from_slice(extra);
        Settings::from_args(&Args::try_parse_from(argv).expect("parses"))
    }

    fn err(extra: &[&str]) -> String {
        settings(extra).expect_err("refused").to_string()
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:10251".parse().unwrap());
        assert_eq!(s.masters[0].as_str(), "http://localhost:5050/");
        assert!(s.framework.checkpoint);
        assert_eq!(s.framework.name, "Kubernetes");
        assert_eq!(s.framework.user, "root");
        assert_eq!(s.framework.roles, vec!["*"]);
        assert_eq!(s.framework.failover_timeout, Duration::from_secs(4_611_686_018));
        assert_eq!(s.core.matcher.default_port_mapping, PortMapping::Wildcard);
        assert_eq!(s.core.matcher.default_container_cpus, Scalar::from_milli(250));
        assert_eq!(s.core.matcher.default_container_mem, Scalar::from_units(64));
        assert_eq!(
            s.executor.base,
            Scalars::cpus_mem(Scalar::from_milli(250), Scalar::from_units(128))
        );
        assert_eq!(s.core.reconcile_interval, Duration::from_secs(300));
        assert_eq!(s.core.refuse_seconds, 5.0);
        assert!(matches!(s.executor.source, ExecutorSource::Served(_)));
        assert!(s.executor.args.contains(&"--suicide-timeout=20m".to_owned()));
        assert!(s.executor.args.contains(&"--api-servers=http://127.0.0.1:8080".to_owned()));
    }

    #[test]
    fn flags_change_what_they_say() {
        let s = settings(&[
            "--host-port-endpoints=false",
            "--checkpoint=false",
            "--mesos-framework-roles=*,prod",
            "--mesos-default-pod-roles=prod,*",
            "--failover-timeout=1h",
            "--reconcile-cooldown=1s",
            "--placement=spread:rack",
            "--executor-path=http://repo/km",
            "--executor-bindall",
            "--advertised-address=10.0.0.1:10251",
            "--launch-policy=one-pod-per-offer",
            "--kubelet-pod-infra-container-image=local/pause:1",
        ])
        .unwrap();
        assert_eq!(s.core.matcher.default_port_mapping, PortMapping::Fixed);
        assert!(!s.framework.checkpoint);
        assert_eq!(s.framework.roles, vec!["*", "prod"]);
        assert_eq!(s.core.matcher.default_pod_roles, vec!["prod", "*"]);
        assert_eq!(s.framework.failover_timeout, Duration::from_secs(3600));
        assert_eq!(s.core.reconcile_cooldown, Duration::from_secs(15), "raised to the floor");
        assert_eq!(s.core.matcher.strategy, Strategy::Spread { by: Some("rack".into()) });
        assert_eq!(s.executor.source, ExecutorSource::Fetch("http://repo/km".into()));
        assert!(s.executor.args.contains(&"--address=0.0.0.0".to_owned()));
        assert!(s.executor.args.contains(&"--pod-infra-container-image=local/pause:1".to_owned()));
        assert!(
            !settings(&[]).unwrap().executor.args.iter().any(|a| a.contains("infra")),
            "without the flag the executor keeps its own default"
        );
        assert_eq!(s.advertised, "http://10.0.0.1:10251");
        assert_eq!(s.core.launch_policy, LaunchPolicy::OnePodPerOffer);
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(err(&["--mesos-master=zk://z:2181/mesos"]).contains("ZooKeeper"));
        assert!(err(&["--mesos-framework-roles=a b"]).starts_with("--mesos-framework-roles"));
        assert!(
            err(&["--mesos-default-pod-roles=prod"]).contains("not one of the framework roles")
        );
        assert!(err(&["--failover-timeout=forever"]).starts_with("--failover-timeout"));
        assert!(err(&["--placement=random"]).starts_with("--placement"));
        assert!(
            err(&["--kubelet-pod-infra-container-image= "])
                .starts_with("--kubelet-pod-infra-container-image")
        );
        assert!(err(&["--executor-path=/no/such/km"]).starts_with("--executor-path"));
        assert!(err(&["--executor-path=file://relative"]).contains("absolute"));
        assert!(err(&["--advertised-address=nohost"]).starts_with("--advertised-address"));
        assert!(err(&["--mesos-executor-cpus=-1"]).starts_with("--mesos-executor-cpus"));
        assert!(err(&["--mesos-authentication-principal=p"]).contains("secret-file"));
        assert!(err(&["--static-pods-config=/no/such/dir"]).starts_with("--static-pods-config"));
        assert!(err(&["--api-servers=ftp://x"]).starts_with("--api-servers"));
        assert!(err(&["--ha"]).contains("give --etcd-servers"));
        assert!(err(&["--ha-lease-ttl=3s"]).contains("give --ha too"));
        let etcd = "--etcd-servers=http://127.0.0.1:2379";
        assert!(err(&["--ha", etcd, "--ha-lease-ttl=1s"]).contains("out of range"));
        assert!(err(&["--ha", etcd, "--ha-lease-ttl=soon"]).starts_with("--ha-lease-ttl"));
        let ha = settings(&["--ha", etcd]).expect("--ha with etcd");
        assert_eq!(ha.ha_lease_ttl, Some(Duration::from_secs(5)));
        assert_eq!(settings(&[]).expect("defaults").ha_lease_ttl, None);
        let none = Settings::from_args(&Args::try_parse_from(["scheduler"]).unwrap()).unwrap_err();
        assert!(none.to_string().contains("--api-servers: required"));
    }

    #[test]
    fn the_ini_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.ini");
        std::fs::write(&f, "[scheduler]\noffer-ttl = 9s\nrefuse-seconds = 30\n").unwrap();
        let s = settings(&["--scheduler-config", f.to_str().unwrap()]).unwrap();
        assert_eq!(s.core.offer_ttl, Duration::from_secs(9));
        assert_eq!(s.core.refuse_seconds, 30.0);
        std::fs::write(&f, "[scheduler]\nbogus = 1\n").unwrap();
        assert!(
            err(&["--scheduler-config", f.to_str().unwrap()]).contains("unknown key \"bogus\"")
        );
    }
}
