//! `km restart KIND/NAME`, also `kubectl restart` as a kubectl plugin: a restart that keeps a
//! workload serving. Deployments roll through their own controller (the pod template gets a
//! `kubectl.kubernetes.io/restartedAt` annotation, as `kubectl rollout restart` does) and are
//! watched pod by pod; ReplicaSets and ReplicationControllers, which have no rollout, are
//! rolled here (surge, delete old pods within the unavailability allowed, scale back); a pod
//! owned by nothing is replaced by a copy that takes over while the original is recreated.
//! Every replacement must turn Ready before the restart goes on; one that fails stops it,
//! with the old pods still serving.
//!
//! `plan` holds the decisions (pure); `drive` carries them out against the API.

pub mod drive;
pub mod plan;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

pub use drive::{Error, Options, Target, restart};
pub use plan::Amount;

/// `km restart` / `kubectl restart`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Restart a Deployment, ReplicaSet, ReplicationController or pod without downtime",
    long_about = "Restart a Deployment, ReplicaSet, ReplicationController or a single pod, \
        health-gated: each replacement must turn Ready before the next old pod goes, and one \
        that fails stops the restart with the old pods still serving (exit status 1). \
        Installed as `kubectl-restart` on the PATH (`km make-symlinks`), it is also \
        `kubectl restart`."
)]
pub struct Args {
    /// What to restart: deployment/NAME, replicaset/NAME (rs), replicationcontroller/NAME (rc)
    /// or pod/NAME (po); also as two words (`pod NAME`).
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,

    /// The namespace (default: the kubeconfig context's, else "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// How long a restart may go without progress (no replacement turning Ready, no old pod
    /// going) before it stops and fails; also how long a single pod's replacement may take
    /// to turn Ready.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// How many pods (or what percentage of the replicas, rounded down) may be unavailable
    /// during the restart. For a Deployment this is written into its rolling-update strategy,
    /// which its controller follows; default: the Deployment's own, else 25%.
    #[arg(long)]
    pub max_unavailable: Option<Amount>,

    /// How many pods (or what percentage, rounded up) may exist beyond the replica count
    /// during the restart. Written into a Deployment's strategy like --max-unavailable;
    /// default: the Deployment's own, else 25%.
    #[arg(long)]
    pub max_surge: Option<Amount>,

    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// The API server's URL, overriding the kubeconfig's (or standing in for one).
    #[arg(short = 's', long)]
    pub server: Option<String>,
}

/// Runs `km restart`: progress on stdout, the reason of a failure in the error.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut signals = km_process::StopSignals::install().context("installing signal handlers")?;
    let target = Target::parse(&args.target)?;
    let (client, default_ns) = client(&args).await?;
    let options = Options {
        namespace: args.namespace.clone().unwrap_or(default_ns),
        timeout: args.timeout,
        max_unavailable: args.max_unavailable,
        max_surge: args.max_surge,
    };
    let mut out = std::io::stdout();
    let mut report = |line: &str| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let stop = async move {
        signals.recv().await;
    };
    let summary = restart(&client, &target, &options, &mut report, stop).await?;
    report(&summary);
    Ok(())
}

/// A client from the kubeconfig (with --context), or from --server alone; and the namespace
/// the context names.
async fn client(args: &Args) -> anyhow::Result<(kube::Client, String)> {
    let options =
        kube::config::KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let loaded = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            Some(
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| format!("--kubeconfig {}", path.display()))?,
            )
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(c) => Some(c),
            // With --server there need not be any kubeconfig.
            Err(_) if args.server.is_some() && args.context.is_none() => None,
            Err(e) => {
                return Err(e).context(
                    "reading the kubeconfig ($KUBECONFIG or ~/.kube/config); give --kubeconfig or --server",
                );
            }
        },
    };
    let mut config = match (loaded, &args.server) {
        (Some(mut c), Some(url)) => {
            c.cluster_url = url.parse().with_context(|| format!("--server {url:?}"))?;
            c
        }
        (Some(c), None) => c,
        (None, Some(url)) => {
            kube::Config::new(url.parse().with_context(|| format!("--server {url:?}"))?)
        }
        (None, None) => anyhow::bail!("no kubeconfig and no --server"),
    };
    config.read_timeout = Some(Duration::from_secs(30));
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok((client, namespace))
}
