//! `km kubelet`: runs the static pods of a manifest directory with the km
//! pod runtime, as the kubelet on seed 004's master nodes does.
//!
//! Every `--file-check-frequency` the directory is read again
//! ([`source::scan`]); new files start pods, removed files stop them,
//! changed files restart them (a changed file is a new pod uid), and a bad
//! file is reported once per change with its path and the error while the
//! other pods keep running. Pods with `runtimeClassName: native` run on the
//! native runtime, the others on Docker.
//!
//! At start-up the directory is read first: a Docker pod whose manifest is
//! unchanged adopts the sandbox and containers an earlier run left running
//! (native containers die with their kubelet and are started again); then
//! every other pod an earlier run left behind (found by its ownership
//! labels) is removed. Each pod's
//! current status is written to `<root-dir>/status/<namespace>_<name>.json`
//! (the pod object with `status` filled in), until mirror pods are
//! published to an API server.

pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use km_runtime::PodManager;
use km_runtime::docker::{DockerConfig, DockerRuntime};
use km_runtime::native::{NativeConfig, NativeRuntime};
use km_runtime::pod::NodeContext;

use crate::source::{Entry, Scan};

/// When to use the Docker engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerMode {
    /// Use it if it answers; Docker pods fail with a clear reason otherwise.
    Auto,
    /// Fail at start if it does not answer.
    Required,
    /// Never use it: native pods only.
    Disabled,
}

/// Flags of `km kubelet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of static pod manifests (YAML or JSON), read every
    /// --file-check-frequency.
    #[arg(long = "manifest-dir", visible_alias = "config", value_name = "DIR")]
    pub manifest_dir: PathBuf,

    /// How often to read the manifest directory again (e.g. 20s, 500ms).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub file_check_frequency: Duration,

    /// API servers to publish mirror pods and status to (accepted; publishing
    /// is not implemented yet).
    #[arg(long, value_delimiter = ',')]
    pub api_servers: Vec<String>,

    /// Where sandboxes, logs and status files live.
    #[arg(long, default_value = "/var/lib/km/kubelet")]
    pub root_dir: PathBuf,

    /// Node name; static pods are named `<name>-<node>`. Defaults to the
    /// host name.
    #[arg(long)]
    pub hostname_override: Option<String>,

    /// The node's IP address (status.hostIP). Defaults to the address of the
    /// default route, else 127.0.0.1.
    #[arg(long)]
    pub node_ip: Option<String>,

    /// Cgroup parent of native containers, under each hierarchy's root.
    #[arg(long, default_value = "km")]
    pub cgroup_root: String,

    /// Whether to use the Docker engine.
    #[arg(long, value_enum, default_value = "auto")]
    pub docker: DockerMode,

    /// Image of the per-pod sandbox container that holds the network
    /// namespace of Docker pods; must be present in the engine.
    #[arg(long, default_value = "km-test/busybox:latest")]
    pub pod_infra_container_image: String,
}

/// Runs `km kubelet` until SIGTERM or SIGINT; then stops every pod.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let node_name = match &args.hostname_override {
        Some(n) => n.clone(),
        None => host_name().unwrap_or_else(|| "localhost".into()),
    };
    let host_ip = args.node_ip.clone().unwrap_or_else(default_ip);
    if !args.api_servers.is_empty() {
        tracing::warn!(api_servers = ?args.api_servers, "publishing mirror pods to API servers is not implemented yet; ignoring --api-servers");
    }
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    let status_dir = args.root_dir.join("status");
    std::fs::create_dir_all(&status_dir)
        .with_context(|| format!("creating {}", status_dir.display()))?;

    let native = match NativeRuntime::new(NativeConfig {
        root_dir: args.root_dir.join("native"),
        cgroup_parent: args.cgroup_root.clone(),
    }) {
        Ok(rt) => Some(Arc::new(rt)),
        Err(e) => {
            tracing::warn!("the native runtime is not available: {e}");
            None
        }
    };
    let docker = match args.docker {
        DockerMode::Disabled => None,
        mode => {
            let mut cfg =
                DockerConfig::new(args.root_dir.join("docker"), owner_label(&args.root_dir));
            cfg.sandbox_image = args.pod_infra_container_image.clone();
            match DockerRuntime::connect(cfg).await {
                Ok(rt) => Some(Arc::new(rt)),
                Err(e) if mode == DockerMode::Required => {
                    return Err(e).context("--docker=required");
                }
                Err(e) => {
                    tracing::warn!("the Docker runtime is not available: {e}");
                    None
                }
            }
        }
    };
    let manager =
        PodManager::new(native, docker, NodeContext { node_name: node_name.clone(), host_ip });
    tracing::info!(dir = %args.manifest_dir.display(), node = node_name, every = ?args.file_check_frequency, "km kubelet running");

    // Pods whose manifest is still here adopt what an earlier run left
    // running (Docker); everything else that run left is removed.
    let mut sync = Sync {
        scan: Scan::new(),
        running: BTreeMap::new(),
        written: BTreeMap::new(),
        status_dir,
        dir_error: None,
    };
    sync.read(&manager, &args.manifest_dir, &node_name).await;
    let removed = manager.remove_orphans().await.context("removing pods left by an earlier run")?;
    if removed > 0 {
        tracing::info!(removed, "removed pods left by an earlier run");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(args.file_check_frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => sync.read(&manager, &args.manifest_dir, &node_name).await,
            _ = status_tick.tick() => sync.write_status(&manager),
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("stopping every pod");
    manager.stop_all().await;
    sync.write_status(&manager);
    Ok(())
}

/// The kubelet's state between reads of the directory.
struct Sync {
    scan: Scan,
    /// Path → pod uid of the pods started from it.
    running: BTreeMap<PathBuf, (String, String)>,
    /// Status file → what was last written there.
    written: BTreeMap<PathBuf, String>,
    status_dir: PathBuf,
    /// The last error reading the directory, reported once until it changes.
    dir_error: Option<String>,
}

impl Sync {
    async fn read(&mut self, manager: &PodManager, dir: &Path, node: &str) {
        let scan = match source::scan(dir, node) {
            Ok(s) => {
                self.dir_error = None;
                s
            }
            Err(e) => {
                // A missing directory is the same as an empty one, as in kubelet.
                let msg = e.to_string();
                if self.dir_error.as_ref() != Some(&msg) {
                    tracing::warn!("{msg}");
                    self.dir_error = Some(msg);
                }
                Scan::new()
            }
        };
        let diff = source::diff(&self.scan, &scan);
        for path in &diff.report {
            if let Some(Entry::Bad { error, .. }) = scan.get(path) {
                tracing::error!(path = %path.display(), "bad pod manifest {}: {error}", path.display());
            }
        }
        let stops = diff.stop.iter().filter_map(|p| self.running.remove(p).map(|r| (p.clone(), r)));
        let stops: Vec<_> = stops.collect();
        let futs = stops.iter().map(|(path, (uid, full))| async move {
            tracing::info!(pod = full, path = %path.display(), "stopping pod (manifest changed or removed)");
            if let Err(e) = manager.stop(uid).await {
                tracing::warn!(pod = full, "stopping: {e}");
            }
        });
        futures::future::join_all(futs).await;
        for (_, (_, full)) in &stops {
            let file = self.status_file(full);
            let _ = std::fs::remove_file(&file);
            self.written.remove(&file);
        }
        for path in &diff.start {
            let Some(Entry::Pod { pod, .. }) = scan.get(path) else { continue };
            let full = format!(
                "{}_{}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            if self.running.values().any(|(_, f)| f == &full) {
                tracing::error!(path = %path.display(), "bad pod manifest {}: pod {full} is already defined by another file", path.display());
                continue;
            }
            match manager.run(pod) {
                Ok(key) => {
                    tracing::info!(pod = key.full_name(), uid = key.uid, path = %path.display(), "starting pod");
                    self.running.insert(path.clone(), (key.uid, full));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "cannot run the pod of {}: {e}", path.display())
                }
            }
        }
        self.scan = scan;
        self.write_status(manager);
    }

    fn status_file(&self, full: &str) -> PathBuf {
        self.status_dir.join(format!("{full}.json"))
    }

    fn write_status(&mut self, manager: &PodManager) {
        for (uid, full) in self.running.values() {
            let Some(pod) = manager.pod_with_status(uid) else { continue };
            let Ok(body) = serde_json::to_string_pretty(&pod) else { continue };
            let file = self.status_file(full);
            if self.written.get(&file) == Some(&body) {
                continue;
            }
            let tmp = file.with_extension("json.tmp");
            if std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &file)).is_ok() {
                self.written.insert(file, body);
            }
        }
    }
}

/// The `io.km.owner` label value for this kubelet: its root directory.
fn owner_label(root: &Path) -> String {
    format!("kubelet:{}", root.display())
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The source address of the default route (no packet is sent).
fn default_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: crate::Args,
    }

    #[test]
    fn seed_004_flags_and_the_config_alias() {
        let cli = Cli::try_parse_from(["kubelet", "--config", "/etc/kubernetes/manifests"])
            .expect("parse");
        assert_eq!(cli.args.manifest_dir, std::path::PathBuf::from("/etc/kubernetes/manifests"));
        assert_eq!(cli.args.file_check_frequency, std::time::Duration::from_secs(20));
        let cli = Cli::try_parse_from([
            "kubelet",
            "--manifest-dir",
            "/m",
            "--file-check-frequency",
            "500ms",
            "--api-servers",
            "http://a:8080,http://b:8080",
        ])
        .expect("parse");
        assert_eq!(cli.args.file_check_frequency, std::time::Duration::from_millis(500));
        assert_eq!(cli.args.api_servers, ["http://a:8080", "http://b:8080"]);
        assert!(Cli::try_parse_from(["kubelet"]).is_err(), "--manifest-dir is required");
    }
}
