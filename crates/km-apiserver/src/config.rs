//! The server's flags ([`Args`]) and the settings they make ([`Config`]): every flag is
//! checked and every file it names is read here, before anything connects or listens.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ArgAction;

use crate::alloc;
use crate::api::ApiConfig;
use crate::nodeproxy::NodeProxy;
use crate::secure::{self, TlsConfigError, Tokens};

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
    /// PEM bundle of certificate authorities: a client certificate signed by one of them
    /// authenticates its request on the HTTPS port as the user of its Common Name, in the
    /// groups of its Organizations.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM PKCS#8 private key (ECDSA P-256 or RSA) that signs ServiceAccount tokens; every API
    /// server of a cluster needs the same one. Without it the server makes a key of its own at
    /// start, and its tokens end with it.
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The issuer (`iss`) of ServiceAccount tokens, also the audience they are accepted for.
    #[arg(long, default_value = "https://kubernetes.default.svc")]
    pub service_account_issuer: String,
    /// Whether pods may ask for privileged containers (`securityContext.privileged`); when
    /// false, such pods and pod templates are refused (422), as by kube-apiserver.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub allow_privileged: bool,
    /// How requests are authorized: `AlwaysAllow` (every request), `RBAC` (roles and bindings
    /// of rbac.authorization.k8s.io/v1; `system:masters` and the insecure port may do
    /// anything) or `AlwaysDeny`.
    #[arg(long, default_value = "AlwaysAllow")]
    pub authorization_mode: crate::authz::Mode,
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
    /// Address advertised to clients and cluster members: this server's address in the
    /// Endpoints of the `kubernetes` Service [default: the address the API is served on, or
    /// 127.0.0.1 when that is 0.0.0.0].
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// How long this server stays in the `kubernetes` Endpoints after its last lease renewal
    /// (kube-apiserver's flag; km's default is short, since its Endpoints follow the leases).
    #[arg(long, default_value_t = 30)]
    pub identity_lease_duration_seconds: u64,
    /// How often this server renews its lease and rewrites the `kubernetes` Endpoints.
    #[arg(long, default_value_t = 10)]
    pub identity_lease_renew_interval_seconds: u64,
    /// gRPC connections to etcd, used round-robin.
    #[arg(long, default_value_t = 4)]
    pub etcd_connections: usize,
    /// How often watchers that allow bookmarks receive one.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub watch_bookmark_interval: Duration,
    /// File holding the bearer token presented to nodes (km executors) when proxying
    /// `pods/log`; they refuse requests without it.
    #[arg(long)]
    pub kubelet_token_file: Option<PathBuf>,
    /// How long to wait for a node's endpoint to accept a connection.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub kubelet_timeout: Duration,
    /// glog verbosity, accepted for compatibility (use --log).
    #[arg(long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Accepted for compatibility; logs always go to stderr.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub logtostderr: bool,
}

/// The HTTPS port's settings.
#[derive(Debug, Clone)]
pub struct Secure {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Certificate and key.
    pub tls: Arc<tokio_rustls::rustls::ServerConfig>,
    /// Bearer tokens it authenticates.
    pub tokens: Option<Tokens>,
    /// Whether client certificates are verified (`--client-ca-file`). With neither tokens nor
    /// client certificates, requests are anonymous.
    pub client_certificates: bool,
}

/// A server's settings, checked: what [`crate::start`] runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd client URLs.
    pub etcd_servers: Vec<String>,
    /// gRPC connections to etcd, used round-robin.
    pub etcd_connections: usize,
    /// How long to keep trying to reach etcd at start-up.
    pub etcd_wait: Duration,
    /// The plain-HTTP port, if served (port 0 here: any free port).
    pub insecure: Option<SocketAddr>,
    /// The HTTPS port, if served.
    pub secure: Option<Secure>,
    /// The API's own settings.
    pub api: ApiConfig,
    /// This server's address in the `kubernetes` Endpoints, if not the one it serves on.
    pub advertise_address: Option<IpAddr>,
    /// Its lease: how long it lasts, how often it is renewed.
    pub identity_lease: (Duration, Duration),
}

/// A flag that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    ServiceAccountKey(#[from] crate::satoken::KeyError),
    #[error("--etcd-servers names no server")]
    NoEtcdServer,
    #[error("--etcd-connections must be at least 1")]
    NoEtcdConnection,
    #[error("--service-cluster-ip-range: {0}")]
    ClusterIpRange(String),
    #[error("--service-node-port-range: {0}")]
    NodePortRange(String),
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("--kubelet-token-file {} is empty", path.display())]
    EmptyKubeletToken { path: PathBuf },
    #[error("--token-auth-file {}: {message}", path.display())]
    TokenFile { path: PathBuf, message: String },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    TlsHalf,
    #[error("--cloud-provider: {0}")]
    Cloud(#[from] km_cloud_provider::CloudError),
    #[error("nothing to serve: both --insecure-port and the secure port are off")]
    NothingToServe,
    #[error(
        "--identity-lease-renew-interval-seconds must be more than 0 and less than --identity-lease-duration-seconds"
    )]
    IdentityLease,
}

impl Config {
    /// Checks the flags and reads the files they name.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let etcd_servers: Vec<String> = args
            .etcd_servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if etcd_servers.is_empty() {
            return Err(ConfigError::NoEtcdServer);
        }
        if args.etcd_connections == 0 {
            return Err(ConfigError::NoEtcdConnection);
        }
        let cloud = km_cloud_provider::from_flags(
            args.cloud_provider.as_deref(),
            args.cloud_config.as_deref(),
        )?;
        let ranges = alloc::Ranges {
            cluster_ips: alloc::IpRange::parse(&args.service_cluster_ip_range)
                .map_err(ConfigError::ClusterIpRange)?,
            node_ports: alloc::parse_port_range(&args.service_node_port_range)
                .map_err(ConfigError::NodePortRange)?,
        };
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                flag,
                path: path.clone(),
                source,
            })
        };
        let kubelet_token = match &args.kubelet_token_file {
            Some(path) => {
                let token = read("--kubelet-token-file", path)?.trim().to_owned();
                if token.is_empty() {
                    return Err(ConfigError::EmptyKubeletToken { path: path.clone() });
                }
                Some(token)
            }
            None => None,
        };
        let issuer = &args.service_account_issuer;
        let service_accounts = match &args.service_account_signing_key_file {
            Some(path) => crate::satoken::Signer::from_file(path, issuer)?,
            None => crate::satoken::Signer::ephemeral(issuer)?,
        };
        let secure = match (&args.tls_cert_file, &args.tls_private_key_file) {
            _ if args.secure_port == 0 => None,
            (Some(cert), Some(key)) => {
                let tls = secure::server_config(cert, key, args.client_ca_file.as_deref())?;
                let tokens = match &args.token_auth_file {
                    Some(path) => Some(Tokens::parse(&read("--token-auth-file", path)?).map_err(
                        |message| ConfigError::TokenFile { path: path.clone(), message },
                    )?),
                    None => None,
                };
                Some(Secure {
                    addr: SocketAddr::new(args.bind_address, args.secure_port),
                    tls,
                    tokens,
                    client_certificates: args.client_ca_file.is_some(),
                })
            }
            (None, None) => None,
            _ => return Err(ConfigError::TlsHalf),
        };
        let insecure = (args.insecure_port != 0)
            .then(|| SocketAddr::new(args.insecure_bind_address, args.insecure_port));
        if insecure.is_none() && secure.is_none() {
            return Err(ConfigError::NothingToServe);
        }
        let nodes = NodeProxy::new(kubelet_token, args.kubelet_timeout).with_cloud(cloud);
        let (duration, renew) =
            (args.identity_lease_duration_seconds, args.identity_lease_renew_interval_seconds);
        if renew == 0 || renew >= duration || duration > 86_400 {
            return Err(ConfigError::IdentityLease);
        }
        Ok(Config {
            advertise_address: args.advertise_address,
            identity_lease: (Duration::from_secs(duration), Duration::from_secs(renew)),
            etcd_servers,
            etcd_connections: args.etcd_connections,
            etcd_wait: Duration::from_secs(60),
            insecure,
            secure,
            api: ApiConfig {
                bookmark_interval: args.watch_bookmark_interval,
                ranges,
                nodes,
                allow_privileged: args.allow_privileged,
                authorization: args.authorization_mode,
                service_accounts: Some(Arc::new(service_accounts)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let argv = ["apiserver", "--etcd-servers=http://127.0.0.1:2379"].iter().chain(flags);
        Config::from_args(&Cli::try_parse_from(argv).expect("flags parse").args)
    }

    #[test]
    fn defaults_serve_plain_http_only() {
        let c = config(&[]).expect("defaults work");
        assert_eq!(c.insecure, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(c.secure.is_none(), "no certificate, no HTTPS");
        assert!(!c.api.allow_privileged);
        assert_eq!(c.api.bookmark_interval, Duration::from_secs(10));
    }

    #[test]
    fn flags_that_cannot_work_are_refused_before_anything_starts() {
        let err = |flags: &[&str]| config(flags).expect_err("refused").to_string();
        assert_eq!(err(&["--insecure-port=0"]), ConfigError::NothingToServe.to_string());
        assert_eq!(err(&["--tls-cert-file=/c.pem"]), ConfigError::TlsHalf.to_string());
        assert!(
            err(&["--service-cluster-ip-range=10.0.0.0"]).starts_with("--service-cluster-ip-range")
        );
        assert!(err(&["--service-node-port-range=9-1"]).starts_with("--service-node-port-range"));
        assert!(
            err(&["--kubelet-token-file=/nonexistent/token"])
                .starts_with("cannot read --kubelet-token-file /nonexistent/token")
        );
        assert_eq!(err(&["--etcd-connections=0"]), ConfigError::NoEtcdConnection.to_string());
        assert_eq!(
            err(&["--identity-lease-renew-interval-seconds=30"]),
            ConfigError::IdentityLease.to_string()
        );
        let empty = Cli::try_parse_from(["apiserver", "--etcd-servers= "]).unwrap();
        assert!(matches!(Config::from_args(&empty.args), Err(ConfigError::NoEtcdServer)));
    }

    #[test]
    fn durations_take_the_usual_forms() {
        let c = config(&["--watch-bookmark-interval=1m30s", "--kubelet-timeout=500ms"]).unwrap();
        assert_eq!(c.api.bookmark_interval, Duration::from_secs(90));
        assert!(
            Cli::try_parse_from(["apiserver", "--etcd-servers=x", "--kubelet-timeout=soon"])
                .is_err()
        );
    }
}
