//! Shared harness: pods from JSON, unique names, waiting on pod snapshots,
//! and drop guards that remove cgroups, processes and containers.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as k8s;
use km_runtime::PodManager;
use km_runtime::docker::{DockerConfig, DockerRuntime};
use km_runtime::native::{NativeConfig, NativeRuntime};
use km_runtime::pod::NodeContext;
use km_runtime::runtime::LogOptions;
use km_runtime::status::PodSnapshot;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A pod from JSON, with a unique uid.
pub fn pod(json: serde_json::Value) -> k8s::Pod {
    let mut pod: k8s::Pod = serde_json::from_value(json).expect("test pod JSON");
    pod.metadata.uid = Some(unique("uid"));
    pod
}

pub fn node() -> NodeContext {
    NodeContext { node_name: "test-node".into(), host_ip: "127.0.0.1".into() }
}

/// Removes a cgroup subtree (killing what is in it) in every hierarchy.
pub fn remove_cgroup_tree(parent: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(parent)];
    for c in ["memory", "cpu", "pids", "cpuacct"] {
        dirs.push(root.join(c).join(parent));
    }
    for d in dirs {
        remove_dir_tree(&d);
    }
}

fn remove_dir_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_dir_tree(&e.path());
            }
        }
    }
    for _ in 0..200 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A native runtime in a temporary root with its own cgroup parent; drop
/// removes the cgroups (killing anything left) and the directory.
pub struct NativeEnv {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    pub runtime: Arc<NativeRuntime>,
}

impl NativeEnv {
    pub fn new() -> NativeEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        // A top-level parent per test: a shared one could be removed by one
        // test while another creates a cgroup under it.
        let cgroup_parent = unique("km-test");
        let runtime = NativeRuntime::new(NativeConfig {
            root_dir: dir.path().join("root"),
            cgroup_parent: cgroup_parent.clone(),
            // No km binary here to be the containers' init: the programs are pid 1
            // themselves. tests/e2e/native_init.rs runs the runtime under km's init.
            init: None,
            adopt: false,
        })
        .expect("native runtime (tests run as root)");
        NativeEnv { dir, cgroup_parent, runtime: Arc::new(runtime) }
    }

    pub fn manager(&self) -> PodManager {
        PodManager::new(Some(self.runtime.clone()), None, node())
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for NativeEnv {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// The sandbox image of the tests (`tests/images/build.sh`), in place of Kubernetes' pause.
pub const TEST_SANDBOX_IMAGE: &str = "km-test/pause:latest";

/// Builds the test images once per process; panics with a clear message if
/// the Docker engine is absent (CI has one: the tests must not pass silently).
pub fn docker_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let info = Command::new("docker").arg("info").output();
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "the Docker tests need a running Docker engine: `docker info` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!(
                "the Docker tests need a running Docker engine: cannot run `docker info`: {e}"
            ),
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build.sh");
        let status = Command::new("bash").arg(&script).status().expect("run tests/images/build.sh");
        assert!(status.success(), "{} failed", script.display());
    });
}

/// A Docker runtime with a unique owner label; drop force-removes every
/// container carrying it.
pub struct DockerEnv {
    pub dir: tempfile::TempDir,
    pub owner: String,
    pub runtime: Arc<DockerRuntime>,
}

impl DockerEnv {
    pub async fn new() -> DockerEnv {
        docker_images();
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = unique("km-test");
        let runtime = DockerRuntime::connect(DockerConfig::new(
            dir.path().join("docker"),
            owner.clone(),
            TEST_SANDBOX_IMAGE,
        ))
        .await
        .expect("connect to the Docker engine");
        DockerEnv { dir, owner, runtime: Arc::new(runtime) }
    }

    pub fn manager(&self) -> PodManager {
        PodManager::new(None, Some(self.runtime.clone()), node())
    }

    /// Ids of the containers carrying this env's owner label.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=io.km.owner={}", self.owner)])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
        }
    }
}

/// Waits until `cond` holds for the pod's snapshot; panics with the last
/// snapshot after `timeout`.
pub async fn wait_pod(
    m: &PodManager,
    uid: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&PodSnapshot) -> bool,
) -> PodSnapshot {
    let mut rx = m.watch(uid).expect("pod is known");
    let res = tokio::time::timeout(timeout, rx.wait_for(|s| cond(s))).await;
    match res {
        Ok(Ok(s)) => s.clone(),
        _ => panic!(
            "timed out waiting for {what}; last status: {:#?}",
            m.snapshot(uid).map(|s| s.status)
        ),
    }
}

/// The container status named `name`.
pub fn cstatus<'a>(s: &'a PodSnapshot, name: &str) -> &'a k8s::ContainerStatus {
    s.status
        .container_statuses
        .as_ref()
        .and_then(|v| v.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status for container {name}: {:#?}", s.status))
}

/// Whole log of a container.
pub async fn logs(m: &PodManager, uid: &str, container: &str, opts: LogOptions) -> String {
    let mut s = m.logs(uid, container, opts).await.expect("logs");
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk.expect("log chunk"));
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A bare HTTP GET; returns the response text.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
