//! `km kubelet`: runs the static pods of a manifest directory with the km
//! pod runtime, as the kubelet on the master nodes of the cold-standby HA recipe does.
//!
//! Every `--file-check-frequency` the directory is read again
//! ([`source::scan`]); new files start pods, removed files stop them,
//! changed files restart them (a changed file is a new pod uid), and a bad
//! file is reported once per change with its path and the error while the
//! other pods keep running. Pods with `runtimeClassName: native` run on the
//! native runtime, the others on Docker.
//!
//! At start-up the directory is read first: a pod whose manifest is
//! unchanged adopts the sandbox and containers an earlier run left running,
//! Docker and native alike (native containers outlive a kubelet that dies
//! without stopping its pods, e.g. on kill -9, and are followed again
//! through their pid files, a pidfd and their init's exit file); then every
//! other pod an earlier run left behind (found by its ownership labels) is
//! removed. SIGTERM or SIGINT stops every pod before the kubelet exits. Each pod's
//! current status is written to `<root-dir>/status/<namespace>_<name>.json`
//! (the pod object with `status` filled in); with `--api-servers` each
//! static pod is also published as a mirror pod with its status, and the
//! node registers a Node object ([`mirror`]).

pub mod config;
pub mod mirror;
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

/// The pod runtimes under `root_dir`: the native one (cgroups under `cgroup_parent`) when this
/// host allows it, and Docker as `docker` says, its containers labelled with `docker_owner`.
/// With `adopt_native`, native containers outlive this process and are adopted by the next
/// one (`km kubelet`); without it they die with it (`km executor`, whose pods must not
/// outlive it). Shared by `km kubelet` and `km executor`.
pub async fn open_runtimes(
    root_dir: &std::path::Path,
    cgroup_parent: &str,
    docker_owner: String,
    sandbox_image: &str,
    docker: DockerMode,
    adopt_native: bool,
) -> anyhow::Result<(Option<Arc<NativeRuntime>>, Option<Arc<DockerRuntime>>)> {
    let native = match NativeRuntime::new(NativeConfig {
        root_dir: root_dir.join("native"),
        cgroup_parent: cgroup_parent.to_owned(),
        // This km binary is every native container's pid 1 (`km container-init`).
        init: Some(PathBuf::from("/proc/self/exe")),
        adopt: adopt_native,
    }) {
        Ok(rt) => Some(Arc::new(rt)),
        Err(e) => {
            tracing::warn!("the native runtime is not available: {e}");
            None
        }
    };
    let docker = match docker {
        DockerMode::Disabled => None,
        mode => {
            let cfg = DockerConfig::new(root_dir.join("docker"), docker_owner, sandbox_image);
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
    Ok((native, docker))
}

/// Flags of `km kubelet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of static pod manifests (YAML or JSON), read every
    /// --file-check-frequency.
    #[arg(long = "manifest-dir", visible_alias = "config", value_name = "DIR")]
    pub manifest_dir: PathBuf,

    /// How often to read the manifest directory again (e.g. 20s, 500ms).
    #[arg(long, default_value = "20s", value_parser = parse_period)]
    pub file_check_frequency: Duration,

    /// API servers to publish mirror pods, their status and the Node to
    /// (tried in turn when one fails).
    #[arg(long, value_delimiter = ',')]
    pub api_servers: Vec<String>,

    /// Credentials (and certificate authority) for the API servers: a kubeconfig whose current
    /// context's user this kubelet acts as (a node is `system:node:<name>` in `system:nodes`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

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

    /// Image of the per-pod sandbox container that holds the network and IPC
    /// namespaces of Docker pods, run with its own command (which must keep
    /// running, as Kubernetes' pause does); pulled when the engine lacks it.
    #[arg(long, default_value = km_runtime::docker::DEFAULT_SANDBOX_IMAGE)]
    pub pod_infra_container_image: String,
}

/// A re-read period: a duration (`20s`, `500ms`) more than zero, as a zero
/// period would be a busy loop.
fn parse_period(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))? {
        d if d.is_zero() => Err(format!("invalid duration '{s}': must be more than zero")),
        d => Ok(d),
    }
}

/// Runs `km kubelet` until SIGTERM or SIGINT; then stops every pod.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut stop = km_process::StopSignals::install()?;
    let node_name = match &args.hostname_override {
        Some(n) => n.clone(),
        None => host_name().unwrap_or_else(|| "localhost".into()),
    };
    let host_ip = args.node_ip.clone().unwrap_or_else(default_ip);
    let api_clients = mirror::clients(&args.api_servers, args.kubeconfig.as_deref()).await?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    let status_dir = args.root_dir.join("status");
    std::fs::create_dir_all(&status_dir)
        .with_context(|| format!("creating {}", status_dir.display()))?;

    let (native, docker) = open_runtimes(
        &args.root_dir,
        &args.cgroup_root,
        owner_label(&args.root_dir),
        &args.pod_infra_container_image,
        args.docker,
        true,
    )
    .await?;
    let manager =
        PodManager::new(native, docker, NodeContext { node_name: node_name.clone(), host_ip });
    tracing::info!(dir = %args.manifest_dir.display(), node = node_name, every = ?args.file_check_frequency, "km kubelet running");

    // Pods whose manifest is still here adopt what an earlier run left
    // running (Docker and native); everything else that run left is removed.
    let mut sync = Sync {
        scan: Scan::new(),
        running: BTreeMap::new(),
        written: BTreeMap::new(),
        status_dir,
        dir_error: None,
        mirrors: None,
        api: api_clients.clone(),
        originals: BTreeMap::new(),
        failed: BTreeMap::new(),
        volumes_dir: args.root_dir.join("volumes"),
        host_ip: manager.node().host_ip.clone(),
    };
    sync.read(&manager, &args.manifest_dir, &node_name).await;
    let removed = manager.remove_orphans().await.context("removing pods left by an earlier run")?;
    if removed > 0 {
        tracing::info!(removed, "removed pods left by an earlier run");
    }
    sync.remove_stale_volumes();
    let (mirror_tx, mirror_rx) = tokio::sync::watch::channel(Vec::new());
    let mirror_task = if api_clients.is_empty() {
        None
    } else {
        sync.mirrors = Some(mirror_tx);
        // The pods already started, so no mirror pod is taken for stale.
        sync.write_status(&manager);
        tracing::info!(api_servers = ?args.api_servers, "publishing mirror pods and the node");
        let node = mirror::NodeSpec {
            name: node_name.clone(),
            host_ip: manager.node().host_ip.clone(),
            create: true,
            ..Default::default()
        };
        Some(tokio::spawn(mirror::run(api_clients, node, mirror_rx)))
    };

    let mut tick = tokio::time::interval(args.file_check_frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => sync.read(&manager, &args.manifest_dir, &node_name).await,
            _ = status_tick.tick() => sync.write_status(&manager),
            _ = stop.recv() => break,
        }
    }
    tracing::info!("stopping every pod");
    manager.stop_all().await;
    sync.write_status(&manager);
    if let Some(t) = mirror_task {
        t.abort();
    }
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
    /// Where the static pods with their status go for mirroring.
    mirrors: Option<tokio::sync::watch::Sender<Vec<k8s_openapi::api::core::v1::Pod>>>,
    /// The API servers ConfigMaps and Secrets are read from (in turn).
    api: Vec<kube::Client>,
    /// Pod uid → the pod as its manifest says (what is mirrored; the runtime
    /// gets it with ConfigMap and Secret references resolved).
    originals: BTreeMap<String, k8s_openapi::api::core::v1::Pod>,
    /// Path → (full name, pod with status) of pods whose ConfigMaps or
    /// Secrets could not be resolved: not run, shown as
    /// CreateContainerConfigError.
    failed: BTreeMap<PathBuf, (String, k8s_openapi::api::core::v1::Pod)>,
    /// `<root-dir>/volumes`: files of configMap and secret volumes, per pod uid.
    volumes_dir: PathBuf,
    host_ip: String,
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
        for p in &diff.stop {
            if let Some((full, _)) = self.failed.remove(p) {
                let file = self.status_file(&full);
                let _ = std::fs::remove_file(&file);
                self.written.remove(&file);
            }
        }
        let futs = stops.iter().map(|(path, (uid, full))| async move {
            tracing::info!(pod = full, path = %path.display(), "stopping pod (manifest changed or removed)");
            if let Err(e) = manager.stop(uid).await {
                tracing::warn!(pod = full, "stopping: {e}");
            }
        });
        futures::future::join_all(futs).await;
        for (_, (uid, full)) in &stops {
            self.originals.remove(uid);
            let _ = std::fs::remove_dir_all(self.volumes_dir.join(uid));
            let file = self.status_file(full);
            let _ = std::fs::remove_file(&file);
            self.written.remove(&file);
        }
        for path in &diff.start {
            let Some(Entry::Pod { pod, .. }) = scan.get(path) else { continue };
            self.start(manager, path, pod).await;
        }
        // Pods whose ConfigMaps or Secrets were missing: try again, as
        // kubelet does, until they start or their manifest changes.
        let retry: Vec<PathBuf> =
            self.failed.keys().filter(|p| !diff.start.contains(p)).cloned().collect();
        for path in &retry {
            let Some(Entry::Pod { pod, .. }) = scan.get(path) else { continue };
            self.start(manager, path, pod).await;
        }
        self.scan = scan;
        self.write_status(manager);
    }

    /// Removes configMap and secret volume files of pods not running (left
    /// by an earlier run).
    fn remove_stale_volumes(&self) {
        for e in std::fs::read_dir(&self.volumes_dir).into_iter().flatten().flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !self.originals.contains_key(&uid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Starts the pod of `path`; a pod whose ConfigMaps or Secrets cannot be
    /// resolved is kept in `failed` (its error logged once per change).
    async fn start(
        &mut self,
        manager: &PodManager,
        path: &Path,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) {
        let full = format!(
            "{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        if self.running.values().any(|(_, f)| f == &full)
            || self.failed.iter().any(|(p, (f, _))| f == &full && p != path)
        {
            tracing::error!(path = %path.display(), "bad pod manifest {}: pod {full} is already defined by another file", path.display());
            return;
        }
        let to_run = match self.resolve_config(pod).await {
            Ok(p) => p,
            Err(e) => {
                let mut shown = pod.clone();
                shown.status = Some(config::config_error_status(pod, &e, &self.host_ip));
                let before = self.failed.get(path).and_then(|(_, p)| p.status.as_ref());
                if before != shown.status.as_ref() {
                    tracing::error!(pod = full, path = %path.display(), "cannot start pod: CreateContainerConfigError: {e}");
                }
                self.failed.insert(path.to_owned(), (full, shown));
                return;
            }
        };
        if self.failed.remove(path).is_some() {
            tracing::info!(pod = full, "the ConfigMaps and Secrets of the pod are there now");
        }
        match manager.run(&to_run) {
            Ok(key) => {
                tracing::info!(pod = key.full_name(), uid = key.uid, path = %path.display(), "starting pod");
                self.originals.insert(key.uid.clone(), pod.clone());
                self.running.insert(path.to_owned(), (key.uid, full));
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot run the pod of {}: {e}", path.display())
            }
        }
    }

    /// With an API server: the pod with its ConfigMap and Secret references
    /// resolved and volume files written. Without one, the pod as is (the
    /// runtime refuses such references, naming --api-servers).
    async fn resolve_config(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Result<k8s_openapi::api::core::v1::Pod, config::ConfigError> {
        let refs = config::referenced(pod);
        if self.api.is_empty() || refs.is_empty() {
            return Ok(pod.clone());
        }
        let first = || {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut fetched = None;
        let mut last_err = None;
        for client in &self.api {
            match config::fetch(client, ns, &refs).await {
                Ok(f) => {
                    fetched = Some(f);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let fetched = match (fetched, last_err) {
            (Some(f), _) => f,
            (None, e) => {
                let message = e.map(|e| e.to_string()).unwrap_or_default();
                return Err(config::ConfigError { container: first(), message });
            }
        };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        // Secret files: readable by the kubelet's user only.
        let _ = std::fs::create_dir_all(&self.volumes_dir).and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&self.volumes_dir, std::fs::Permissions::from_mode(0o700))
        });
        let resolved = config::resolve(pod, &fetched, &self.volumes_dir.join(uid))?;
        config::write_files(&resolved).map_err(|e| config::ConfigError {
            container: first(),
            message: format!("writing volume files under {}: {e}", self.volumes_dir.display()),
        })?;
        Ok(resolved.pod)
    }

    fn status_file(&self, full: &str) -> PathBuf {
        self.status_dir.join(format!("{full}.json"))
    }

    fn write_status(&mut self, manager: &PodManager) {
        let mut mirrored = Vec::new();
        for (uid, full) in self.running.values() {
            let Some(with_status) = manager.pod_with_status(uid) else { continue };
            // The pod as its manifest says (ConfigMap and Secret values stay
            // out of status files and mirror pods), with the runtime's status.
            let mut pod = self.originals.get(uid).cloned().unwrap_or_else(|| with_status.clone());
            pod.status = with_status.status;
            if self.mirrors.is_some() {
                mirrored.push(pod.clone());
            }
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
        for (full, pod) in self.failed.values() {
            if self.mirrors.is_some() {
                mirrored.push(pod.clone());
            }
            let Ok(body) = serde_json::to_string_pretty(pod) else { continue };
            let file = self.status_file(full);
            if self.written.get(&file) != Some(&body) && std::fs::write(&file, &body).is_ok() {
                self.written.insert(file, body);
            }
        }
        if let Some(tx) = &self.mirrors {
            tx.send_if_modified(|old| {
                let same =
                    old.len() == mirrored.len() && old.iter().zip(&mirrored).all(|(a, b)| a == b);
                if !same {
                    *old = mirrored;
                }
                !same
            });
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

    #[test]
    fn the_pod_infra_image_is_kubernetes_pause_unless_given() {
        let cli = Cli::try_parse_from(["kubelet", "--manifest-dir", "/m"]).expect("parse");
        assert_eq!(cli.args.pod_infra_container_image, "registry.k8s.io/pause:3.10");
        let cli = Cli::try_parse_from([
            "kubelet",
            "--manifest-dir",
            "/m",
            "--pod-infra-container-image",
            "km-test/pause:latest",
        ])
        .expect("parse");
        assert_eq!(cli.args.pod_infra_container_image, "km-test/pause:latest");
    }

    #[test]
    fn a_zero_file_check_frequency_is_refused() {
        let e = Cli::try_parse_from([
            "kubelet",
            "--manifest-dir",
            "/m",
            "--file-check-frequency",
            "0s",
        ])
        .expect_err("zero is refused");
        assert!(e.to_string().contains("must be more than zero"), "{e}");
        let cli = Cli::try_parse_from([
            "kubelet",
            "--manifest-dir",
            "/m",
            "--file-check-frequency",
            "500ms",
        ])
        .expect("parse");
        assert_eq!(cli.args.file_check_frequency, std::time::Duration::from_millis(500));
    }
}
