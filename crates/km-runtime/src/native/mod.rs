//! The native runtime (`runtimeClassName: native`): a container is a binary
//! on the host, or fetched from a URL and cached by checksum ([`fetch`]),
//! started in new pid, mount, uts and ipc namespaces, in its own cgroup with
//! the container's cpu and memory limits. Pods use the host network unless
//! annotated `native.km.io/network: isolated`
//! ([`crate::pod::ANNOTATION_NATIVE_NETWORK`]): then the sandbox holds one
//! network namespace (loopback up) that every container of the pod joins.
//! hostPath and emptyDir volumes are bind-mounted in the container's
//! private mount namespace over paths that exist on the host.
//!
//! Per pod, a sandbox directory `<root>/pods/<namespace>_<name>_<uid>/`:
//! - `pod.json`: the ownership labels (pod name, namespace, uid, task);
//! - `work/`: the default working directory of the pod's containers;
//! - `volumes/<name>/`: emptyDir volumes;
//! - `logs/<container>.log`: stdout and stderr of the container (appended
//!   across restarts);
//! - `run/<container>.pid`: pid and kernel start time of the running
//!   process, to find it again;
//! - `run/<container>.exit`: the exit status the container's init wrote.
//!
//! With [`NativeConfig::init`] (what km always sets) a container's pid 1 is
//! `km container-init` ([`init`]), which forwards signals to the program,
//! reaps orphans and exits with the program's status, so a program without a
//! SIGTERM handler still stops at once and no zombie piles up. Without it the
//! program itself is pid 1 and ignores the signals it does not handle.
//!
//! What happens to containers when the runtime process dies depends on
//! [`NativeConfig::adopt`]:
//! - without it (`km executor`) they die with the process
//!   (`PR_SET_PDEATHSIG`), so a runtime that was killed leaves sandboxes but
//!   no processes, and the next one removes them;
//! - with it (`km kubelet`) they keep running, and a runtime started later
//!   over the same root adopts those of the pods it is given again
//!   ([`ContainerRuntime::adopt`]: the pid file tells the process, checked by
//!   its start time; a pidfd tells when it exits, and the init's exit file
//!   with which status, since it is no longer this process's child).
//!
//! Either way a restarted runtime finds what no pod claims with
//! [`ContainerRuntime::list_owned`] and removes it (killing anything still in
//! the sandbox's cgroups).

mod cgroup;
mod fetch;
pub mod init;
mod spawn;

pub use fetch::{ANNOTATION_SHA256_PREFIX, ANNOTATION_URL_PREFIX};

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as k8s;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::logs;
use crate::pod::{
    ANNOTATION_NATIVE_NETWORK, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, PodKey, PodPlan,
};
use crate::runtime::{
    Adopted, ContainerRuntime, ExecOutput, ExecRequest, ExecSession, Exit, LogOptions, LogStream,
    OwnedContainer, OwnedPod, Sandbox, Started,
};

/// Where the native runtime keeps its state.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// Sandboxes live under `<root_dir>/pods`.
    pub root_dir: PathBuf,
    /// Cgroup parent, relative to the hierarchy root (`km` by default).
    pub cgroup_parent: String,
    /// A km binary to run as every container's pid 1 (`km container-init`); km itself passes
    /// `/proc/self/exe`. `None` runs the program as pid 1 itself, which then ignores the
    /// signals it has no handler for and leaves orphans unreaped.
    pub init: Option<PathBuf>,
    /// Let containers outlive this process, and adopt the running containers of a pod a
    /// runtime over the same root started earlier. Needs `init` (the status of a container
    /// that is not this process's child comes from its init's exit file).
    pub adopt: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct NativeRuntime {
    config: NativeConfig,
    cgroups: cgroup::Cgroups,
    spawner: spawn::Spawner,
    /// The opened [`NativeConfig::init`].
    init: Option<Arc<std::os::fd::OwnedFd>>,
    containers: Mutex<HashMap<String, Arc<NativeContainer>>>,
    /// Network namespaces of pods with an isolated network, by sandbox.
    netns: Mutex<HashMap<String, Arc<std::os::fd::OwnedFd>>>,
    devnull: PathBuf,
}

#[derive(Debug)]
struct NativeContainer {
    sandbox: String,
    name: String,
    pid: Pid,
    exit: watch::Receiver<Option<Exit>>,
    log: PathBuf,
}

/// The cgroup version the host uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The cgroup segment owned by the runtime rooted at `root`: `r` and 12 hex
/// digits of the SHA-256 of its absolute path.
fn owner_segment(root: &std::path::Path) -> String {
    use sha2::{Digest as _, Sha256};
    let absolute = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("r{hex}")
}

impl NativeRuntime {
    pub fn new(config: NativeConfig) -> Result<NativeRuntime> {
        let pods = config.root_dir.join("pods");
        std::fs::create_dir_all(&pods).map_err(|e| Error::io(&pods, e))?;
        // Each runtime's cgroups sit under a segment of its own (derived from
        // its root directory): runtimes sharing a cgroup parent — two
        // kubelets, or a kubelet and an executor on one host — then never
        // take each other's live pods for leftovers of a crash.
        let parent = format!(
            "{}/{}",
            config.cgroup_parent.trim_end_matches('/'),
            owner_segment(&config.root_dir)
        );
        if config.adopt && config.init.is_none() {
            return Err(Error::Other(
                "adopting native containers needs an init (their exit status comes from it)".into(),
            ));
        }
        let cgroups = cgroup::Cgroups::detect(&parent)?;
        let spawner = spawn::Spawner::new()
            .map_err(|e| Error::Other(format!("starting the spawner thread: {e}")))?;
        // Opened now: the containers started later run this very binary, even if the file is
        // replaced meanwhile.
        let init = match &config.init {
            Some(path) => Some(Arc::new(
                std::fs::File::open(path)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(|e| Error::io(path, e))?,
            )),
            None => None,
        };
        Ok(NativeRuntime {
            config,
            cgroups,
            spawner,
            init,
            containers: Mutex::new(HashMap::new()),
            netns: Mutex::new(HashMap::new()),
            devnull: PathBuf::from("/dev/null"),
        })
    }

    pub fn config(&self) -> &NativeConfig {
        &self.config
    }

    pub fn cgroup_version(&self) -> CgroupVersion {
        match self.cgroups.version() {
            cgroup::Version::V1 => CgroupVersion::V1,
            cgroup::Version::V2 => CgroupVersion::V2,
        }
    }

    /// The memory limit the container's cgroup carries (for tests).
    pub fn memory_limit(&self, id: &str) -> Option<u64> {
        let c = self.container(id).ok()?;
        self.cgroups.memory_limit(&c.sandbox, &c.name)
    }

    /// The host pid of a running container (for tests and diagnostics).
    pub fn pid(&self, id: &str) -> Option<i32> {
        self.container(id).ok().map(|c| c.pid.as_raw())
    }

    /// Removes the runtime's cgroup parent; it must hold no sandboxes.
    pub fn remove_cgroup_parent(&self) -> Result<()> {
        self.cgroups.remove_parent()
    }

    fn netns(&self, sandbox: &str) -> Option<Arc<std::os::fd::OwnedFd>> {
        self.netns.lock().ok()?.get(sandbox).cloned()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.root_dir.join("pods").join(id)
    }

    fn container(&self, id: &str) -> Result<Arc<NativeContainer>> {
        self.containers
            .lock()
            .map_err(|_| Error::Other("container table poisoned".into()))?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn prepare(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        index: usize,
        fetched: Option<PathBuf>,
    ) -> Result<spawn::SpawnRequest> {
        let c = plan
            .containers
            .get(index)
            .ok_or_else(|| Error::NotFound(format!("container #{index}")))?;
        let dir = self.sandbox_dir(&sandbox.id);
        let exec_err = |binary: &str, message: String| Error::Exec {
            container: c.name.clone(),
            binary: binary.to_owned(),
            message,
        };
        let mut argv: Vec<String> = c.command.clone();
        argv.extend(c.args.iter().cloned());
        let binary = argv.first().cloned().unwrap_or_default();
        let path = match fetched {
            Some(p) => p,
            None => resolve_binary(&binary, &c.env).ok_or_else(|| {
                exec_err(
                    &binary,
                    "no such executable on this host (give an absolute path or one on PATH)".into(),
                )
            })?,
        };
        let cstr = |s: &str| {
            CString::new(s).map_err(|_| Error::Config {
                container: c.name.clone(),
                message: format!("{s:?} contains a NUL byte"),
            })
        };
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        let hostname = pod_hostname(plan);
        env.insert("HOSTNAME".into(), hostname.clone());
        env.insert("HOME".into(), "/root".into());
        let mut envp = Vec::new();
        for (k, v) in &env {
            if !c.env.iter().any(|(ck, _)| ck == k) {
                envp.push(cstr(&format!("{k}={v}"))?);
            }
        }
        for (k, v) in &c.env {
            envp.push(cstr(&format!("{k}={v}"))?);
        }
        let cwd = match &c.working_dir {
            Some(w) => PathBuf::from(w),
            None => dir.join("work"),
        };
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let source = self
                .volume_source(sandbox, plan, &m.volume)
                .map_err(|message| Error::Config { container: c.name.clone(), message })?;
            let source = match &m.sub_path {
                Some(sub) => source.join(sub),
                None => source,
            };
            let target = Path::new(&m.container_path);
            if !target.exists() {
                return Err(Error::Config {
                    container: c.name.clone(),
                    message: format!(
                        "volume {:?}: mount path {} does not exist on the host (the native runtime bind-mounts over host paths)",
                        m.volume, m.container_path
                    ),
                });
            }
            mounts.push(spawn::BindMount {
                source: cstr(&source.to_string_lossy())?,
                target: cstr(&m.container_path)?,
                read_only: m.read_only,
            });
        }
        let log_path = dir.join("logs").join(format!("{}.log", c.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let stdin = std::fs::File::open(&self.devnull).map_err(|e| Error::io(&self.devnull, e))?;
        let cgroup_procs = self.cgroups.create(&sandbox.id, &c.name, c.limits)?;
        let isolated = isolated_network(plan);
        if isolated && self.netns(&sandbox.id).is_none() {
            return Err(Error::Other(format!(
                "the network namespace of sandbox {} is gone",
                sandbox.id
            )));
        }
        let exit_file = dir.join("run").join(format!("{}.exit", c.name));
        let init = match &self.init {
            Some(exe) => Some(spawn::InitSpawn {
                exe: exe.clone(),
                exit_file: cstr(&exit_file.to_string_lossy())?,
            }),
            None => None,
        };
        Ok(spawn::SpawnRequest {
            init,
            die_with_runtime: !self.config.adopt,
            path: cstr(&path.to_string_lossy())?,
            argv: argv.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
            envp,
            cwd: cstr(&cwd.to_string_lossy())?,
            hostname: cstr(&hostname)?,
            log: log.into(),
            stdin: stdin.into(),
            network: if isolated { self.netns(&sandbox.id) } else { None },
            mounts,
            cgroup_procs,
        })
    }

    fn volume_source(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        name: &str,
    ) -> std::result::Result<PathBuf, String> {
        let v: &k8s::Volume = plan
            .volumes
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("volume {name:?} is not defined"))?;
        if let Some(h) = &v.host_path {
            return Ok(PathBuf::from(&h.path));
        }
        if v.empty_dir.is_some() {
            return Ok(self.sandbox_dir(&sandbox.id).join("volumes").join(name));
        }
        Err(format!(
            "volume {name:?}: the native runtime supports emptyDir and hostPath volumes only"
        ))
    }
}

/// The pod key in a sandbox id `<namespace>_<name>_<uid>` (Kubernetes
/// names and namespaces have no `_`).
fn key_from_sandbox_id(id: &str) -> PodKey {
    let mut parts = id.splitn(3, '_');
    let namespace = parts.next().unwrap_or_default().to_owned();
    let name = parts.next().unwrap_or_default().to_owned();
    let uid = parts.next().unwrap_or_default().to_owned();
    PodKey { namespace, name, uid }
}

/// Whether the pod asked for its own network namespace (loopback only),
/// shared by its containers.
/// The hostname a pod's containers see: the node's with `hostNetwork` (as in Kubernetes, so a
/// program that names itself by host name — `km podmaster --whoami` — names the node), else
/// the pod's.
fn pod_hostname(plan: &PodPlan) -> String {
    if plan.host_network
        && let Ok(name) = nix::unistd::gethostname()
        && let Some(name) = name.to_str()
    {
        return name.to_owned();
    }
    plan.hostname.clone()
}

fn isolated_network(plan: &PodPlan) -> bool {
    !plan.host_network
        && plan.annotations.get(ANNOTATION_NATIVE_NETWORK).map(String::as_str) == Some("isolated")
}

/// Finds `binary` as the kernel would after a shell's PATH search: an
/// absolute or relative path as is, else each PATH entry (the container's
/// PATH if it sets one).
fn resolve_binary(binary: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if binary.is_empty() {
        return None;
    }
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return p.is_file().then_some(p);
    }
    let path =
        env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
    path.split(':').map(|d| Path::new(d).join(binary)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); tells a pid apart from a later reuse.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How a container that ended with `code` exited (OOMKilled when its cgroup says so).
fn exit_of(cgroups: &cgroup::Cgroups, sandbox: &str, name: &str, code: i32) -> Exit {
    let reason = if code != 0 && cgroups.oom_killed(sandbox, name) {
        "OOMKilled".to_owned()
    } else {
        Exit::reason_for(code).to_owned()
    };
    Exit { exit_code: code, reason, finished_at: SystemTime::now() }
}

/// The pid and kernel start time a pid file holds.
fn read_pid_file(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

fn exit_from(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SandboxFile {
    labels: BTreeMap<String, String>,
}

impl ContainerRuntime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    async fn adopt(&self, plan: &PodPlan) -> Result<Option<Adopted>> {
        if !self.config.adopt {
            // The containers died with the runtime that started them.
            return Ok(None);
        }
        let id = format!("{}_{}_{}", plan.key.namespace, plan.key.name, plan.key.uid);
        let dir = self.sandbox_dir(&id);
        if !dir.join("pod.json").is_file() {
            return Ok(None);
        }
        // The processes the pid files name, if they are still those processes.
        let found: Vec<Option<(i32, u64, PathBuf)>> = plan
            .containers
            .iter()
            .map(|c| {
                let pid_file = dir.join("run").join(format!("{}.pid", c.name));
                read_pid_file(&pid_file)
                    .filter(|(pid, start)| process_start_time(*pid) == Some(*start))
                    .map(|(pid, start)| (pid, start, pid_file))
            })
            .collect();
        let Some((first, _, _)) = found.iter().flatten().next() else { return Ok(None) };
        if isolated_network(plan) && self.netns(&id).is_none() {
            // The pod's network namespace lives on in its running containers.
            let path = PathBuf::from(format!("/proc/{first}/ns/net"));
            let ns = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            if let Ok(mut map) = self.netns.lock() {
                map.insert(id.clone(), Arc::new(ns.into()));
            }
        }
        let mut containers = Vec::with_capacity(found.len());
        for (c, entry) in plan.containers.iter().zip(found) {
            let Some((pid, start, pid_file)) = entry else {
                containers.push(None);
                continue;
            };
            match self.track_adopted(&id, &c.name, Pid::from_raw(pid), start, pid_file) {
                Ok(started) => containers.push(Some(started)),
                Err(e) => {
                    // Not tracked, so not left running beside the instance started instead
                    // (if it still is that process).
                    tracing::warn!(
                        sandbox = id,
                        container = c.name,
                        "cannot adopt process {pid}: {e}"
                    );
                    if process_start_time(pid) == Some(start) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    containers.push(None);
                }
            }
        }
        Ok(Some(Adopted {
            sandbox: Sandbox { id, key: plan.key.clone(), pod_ip: None },
            containers,
        }))
    }

    async fn create_sandbox(&self, plan: &PodPlan) -> Result<Sandbox> {
        let id = format!("{}_{}_{}", plan.key.namespace, plan.key.name, plan.key.uid);
        let dir = self.sandbox_dir(&id);
        for sub in ["work", "logs", "run", "volumes"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        for v in &plan.volumes {
            if v.empty_dir.is_some() {
                let d = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
        }
        if isolated_network(plan) && self.netns(&id).is_none() {
            let ns = spawn::new_network_namespace()
                .map_err(|e| Error::Other(format!("creating the pod's network namespace: {e}")))?;
            if let Ok(mut map) = self.netns.lock() {
                map.insert(id.clone(), Arc::new(ns));
            }
        }
        let file = dir.join("pod.json");
        let body = serde_json::to_vec_pretty(&SandboxFile { labels: plan.owner_labels() })
            .map_err(|e| Error::Other(format!("encoding {}: {e}", file.display())))?;
        std::fs::write(&file, body).map_err(|e| Error::io(&file, e))?;
        Ok(Sandbox { id, key: plan.key.clone(), pod_ip: None })
    }

    async fn start_container(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        index: usize,
    ) -> Result<Started> {
        let c = plan
            .containers
            .get(index)
            .ok_or_else(|| Error::NotFound(format!("container #{index}")))?;
        let fetched = match plan.annotations.get(&format!("{ANNOTATION_URL_PREFIX}{}", c.name)) {
            Some(url) => {
                let sha = plan.annotations.get(&format!("{ANNOTATION_SHA256_PREFIX}{}", c.name));
                let cache = self.config.root_dir.join("cache");
                Some(fetch::fetch(&cache, url, sha.map(String::as_str)).await?)
            }
            None => None,
        };
        let req = self.prepare(sandbox, plan, index, fetched)?;
        // The status of an earlier run of this container is not this run's.
        let exit_file = self.sandbox_dir(&sandbox.id).join("run").join(format!("{}.exit", c.name));
        match std::fs::remove_file(&exit_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(exit_file, e));
            }
            _ => {}
        }
        let binary = plan.containers[index].command.first().cloned().unwrap_or_default();
        let pid = self.spawner.spawn(req).await.map_err(|e| Error::Exec {
            container: c.name.clone(),
            binary: binary.clone(),
            message: e.to_string(),
        })?;
        let started_at = SystemTime::now();
        let dir = self.sandbox_dir(&sandbox.id);
        let pid_file = dir.join("run").join(format!("{}.pid", c.name));
        let start_time = process_start_time(pid.as_raw()).unwrap_or(0);
        let _ = std::fs::write(&pid_file, format!("{} {start_time}\n", pid.as_raw()));

        let (tx, rx) = watch::channel(None);
        let cgroups = self.cgroups.clone();
        let (sb, name) = (sandbox.id.clone(), c.name.clone());
        std::thread::Builder::new()
            .name(format!("km-wait-{}", pid.as_raw()))
            .stack_size(64 * 1024)
            .spawn(move || {
                let code = loop {
                    match waitpid(pid, None) {
                        Ok(status) => {
                            if let Some(code) = exit_from(status) {
                                break code;
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break 255,
                    }
                };
                let _ = std::fs::remove_file(&pid_file);
                let _ = tx.send(Some(exit_of(&cgroups, &sb, &name, code)));
            })
            .map_err(|e| Error::Other(format!("starting a wait thread: {e}")))?;

        let id = format!("{}/{}/{}", sandbox.id, c.name, pid.as_raw());
        let c_name = c.name.clone();
        let container = Arc::new(NativeContainer {
            sandbox: sandbox.id.clone(),
            name: c.name.clone(),
            pid,
            exit: rx,
            log: dir.join("logs").join(format!("{}.log", c.name)),
        });
        let mut table =
            self.containers.lock().map_err(|_| Error::Other("container table poisoned".into()))?;
        // Earlier runs of the same container that have exited are forgotten.
        table.retain(|_, c| {
            !(c.sandbox == sandbox.id && c.name == c_name && c.exit.borrow().is_some())
        });
        table.insert(id.clone(), container);
        Ok(Started { id, started_at })
    }

    async fn wait(&self, id: &str) -> Result<Exit> {
        let mut rx = self.container(id)?.exit.clone();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Other(format!("{id}: wait thread gone")))?;
        exit.clone().ok_or_else(|| Error::Other(format!("{id}: no exit status")))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let c = self.container(id)?;
        let mut rx = c.exit.clone();
        if rx.borrow().is_some() {
            return Ok(());
        }
        let _ = kill(c.pid, Signal::SIGTERM);
        let exited = tokio::time::timeout(grace, rx.wait_for(Option::is_some)).await.is_ok();
        if !exited {
            let _ = kill(c.pid, Signal::SIGKILL);
            let _ =
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some)).await;
        }
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32> {
        use futures::StreamExt as _;
        // Exec probes run as `kubectl exec` does: inside the container, output discarded.
        let run = async {
            let req = ExecRequest { command: cmd.to_vec(), stdin: false, tty: false };
            let mut session = self.exec_session(id, &req).await?;
            while session.output.next().await.is_some() {}
            session.exit.await
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Error::Other(format!("exec {cmd:?}: timed out after {timeout:?}")))?
    }

    async fn exec_session(&self, id: &str, req: &ExecRequest) -> Result<ExecSession> {
        use futures::StreamExt as _;
        let c = self.container(id)?;
        if req.tty {
            return Err(Error::Other(format!(
                "container {:?} is a native container: a terminal (-t) is not supported, run the command without one",
                c.name
            )));
        }
        if c.exit.borrow().is_some() {
            return Err(Error::Other(format!("container {:?} is not running", c.name)));
        }
        let (bin, args) =
            req.command.split_first().ok_or_else(|| Error::Other("exec needs a command".into()))?;
        let proc_dir = PathBuf::from(format!("/proc/{}", c.pid));
        let open = |name: &str| -> Result<std::os::fd::OwnedFd> {
            let path = proc_dir.join("ns").join(name);
            std::fs::File::open(&path).map(Into::into).map_err(|e| Error::io(path, e))
        };
        let environ_path = proc_dir.join("environ");
        let environ = std::fs::read(&environ_path).map_err(|e| Error::io(environ_path, e))?;
        let cwd_path = proc_dir.join("cwd");
        let cwd = std::fs::read_link(&cwd_path).map_err(|e| Error::io(cwd_path, e))?;
        let mut cgroup_procs = Vec::new();
        for path in self.cgroups.procs(&c.sandbox, &c.name) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            cgroup_procs.push(file.into());
        }
        let inside = spawn::Inside {
            pid: open("pid")?,
            namespaces: vec![
                (open("ipc")?, libc::CLONE_NEWIPC),
                (open("uts")?, libc::CLONE_NEWUTS),
                (open("net")?, libc::CLONE_NEWNET),
                (open("mnt")?, libc::CLONE_NEWNS),
            ],
            cgroup_procs,
            cwd: CString::new(cwd.into_os_string().into_encoded_bytes())
                .map_err(|_| Error::Other("the container's working directory has a NUL".into()))?,
        };
        let mut command = tokio::process::Command::new(bin);
        command
            .args(args)
            .env_clear()
            .stdin(if req.stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for pair in environ.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            let text = String::from_utf8_lossy(pair);
            if let Some((k, v)) = text.split_once('=') {
                command.env(k, v);
            }
        }
        let handle = tokio::runtime::Handle::current();
        let mut child =
            tokio::task::spawn_blocking(move || spawn::spawn_inside(command, inside, handle))
                .await
                .map_err(|e| Error::Other(format!("exec thread: {e}")))?
                .map_err(|e| Error::Exec {
                    container: c.name.clone(),
                    binary: bin.clone(),
                    message: e.to_string(),
                })?;
        let stdin =
            child.stdin.take().map(|s| Box::pin(s) as Pin<Box<dyn tokio::io::AsyncWrite + Send>>);
        let stdout = child.stdout.take().map(|s| {
            tokio_util::io::ReaderStream::new(s)
                .map(|r| {
                    r.map(ExecOutput::Stdout).map_err(|e| Error::Other(format!("stdout: {e}")))
                })
                .boxed()
        });
        let stderr = child.stderr.take().map(|s| {
            tokio_util::io::ReaderStream::new(s)
                .map(|r| {
                    r.map(ExecOutput::Stderr).map_err(|e| Error::Other(format!("stderr: {e}")))
                })
                .boxed()
        });
        let output = futures::stream::select(
            futures::stream::iter(stdout).flatten(),
            futures::stream::iter(stderr).flatten(),
        );
        let name = bin.clone();
        let exit = async move {
            use std::os::unix::process::ExitStatusExt as _;
            let status =
                child.wait().await.map_err(|e| Error::Other(format!("waiting for {name}: {e}")))?;
            Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        };
        Ok(ExecSession { stdin, output: Box::pin(output), exit: Box::pin(exit) })
    }

    async fn logs(&self, id: &str, opts: LogOptions) -> Result<LogStream> {
        let c = self.container(id)?;
        let done = c.exit.clone();
        logs::file_stream(c.log.clone(), opts, done).await
    }

    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        let ids: Vec<(String, Arc<NativeContainer>)> = self
            .containers
            .lock()
            .map_err(|_| Error::Other("container table poisoned".into()))?
            .iter()
            .filter(|(_, c)| c.sandbox == sandbox.id)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (_, c) in &ids {
            if c.exit.borrow().is_none() {
                let _ = kill(c.pid, Signal::SIGKILL);
            }
        }
        let cg = self.cgroups.clone();
        let sid = sandbox.id.clone();
        tokio::task::spawn_blocking(move || cg.remove_sandbox(&sid))
            .await
            .map_err(|e| Error::Other(format!("removing cgroups: {e}")))??;
        for (_, c) in &ids {
            let mut rx = c.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some)).await;
        }
        if let Ok(mut table) = self.containers.lock() {
            for (id, _) in &ids {
                table.remove(id);
            }
        }
        if let Ok(mut map) = self.netns.lock() {
            map.remove(&sandbox.id);
        }
        let dir = self.sandbox_dir(&sandbox.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    async fn list_owned(&self) -> Result<Vec<OwnedPod>> {
        let pods = self.config.root_dir.join("pods");
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let entries = std::fs::read_dir(&pods).map_err(|e| Error::io(&pods, e))?;
        for entry in entries.flatten() {
            let Ok(sandbox_id) = entry.file_name().into_string() else { continue };
            let labels = std::fs::read(entry.path().join("pod.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<SandboxFile>(&b).ok())
                .map(|f| f.labels)
                .unwrap_or_default();
            // The directory name carries the key, so a sandbox whose
            // `pod.json` is not written yet (being created) is still known.
            let from_name = key_from_sandbox_id(&sandbox_id);
            let key = PodKey {
                namespace: labels
                    .get(LABEL_POD_NAMESPACE)
                    .cloned()
                    .unwrap_or_else(|| from_name.namespace.clone()),
                name: labels.get(LABEL_POD_NAME).cloned().unwrap_or_else(|| from_name.name.clone()),
                uid: labels.get(LABEL_POD_UID).cloned().unwrap_or_else(|| from_name.uid.clone()),
            };
            let mut containers = Vec::new();
            for pidf in std::fs::read_dir(entry.path().join("run")).into_iter().flatten().flatten()
            {
                // Only pid files name containers (`run/` also holds the inits' exit files).
                if pidf.path().extension().is_none_or(|e| e != "pid") {
                    continue;
                }
                let name = pidf
                    .path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(pidf.path()).unwrap_or_default();
                let mut it = text.split_whitespace();
                let pid: i32 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let start: u64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let running = pid > 0 && process_start_time(pid) == Some(start);
                containers.push(OwnedContainer {
                    id: format!("{sandbox_id}/{name}/{pid}"),
                    name,
                    running,
                });
            }
            seen.insert(sandbox_id.clone());
            out.push(OwnedPod { sandbox_id, key, labels, containers });
        }
        // Cgroups whose directory is gone (a crash between the two removals).
        for sandbox_id in self.cgroups.sandboxes() {
            if !seen.contains(&sandbox_id) {
                out.push(OwnedPod {
                    key: key_from_sandbox_id(&sandbox_id),
                    sandbox_id,
                    labels: BTreeMap::new(),
                    containers: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    async fn remove_owned(&self, pod: &OwnedPod) -> Result<()> {
        for c in &pod.containers {
            if !c.running {
                continue;
            }
            // The id is `<sandbox>/<name>/<pid>`; kill only that same process.
            if let Some(pid) = c.id.rsplit('/').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        self.remove_sandbox(&Sandbox {
            id: pod.sandbox_id.clone(),
            key: pod.key.clone(),
            pod_ip: None,
        })
        .await
    }
}

impl NativeRuntime {
    /// Follows a running container a runtime started earlier: its exit is seen through a
    /// pidfd, its status read from the exit file its init writes.
    fn track_adopted(
        &self,
        sandbox: &str,
        name: &str,
        pid: Pid,
        start_time: u64,
        pid_file: PathBuf,
    ) -> Result<Started> {
        let exited =
            spawn::exit_watch(pid).map_err(|e| Error::Other(format!("watching its pidfd: {e}")))?;
        // The pid could have been reused between the check and the open.
        if process_start_time(pid.as_raw()) != Some(start_time) {
            return Err(Error::Other("the process has exited".into()));
        }
        let started_at = std::fs::metadata(&pid_file)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let dir = self.sandbox_dir(sandbox);
        let exit_file = dir.join("run").join(format!("{name}.exit"));
        let (tx, rx) = watch::channel(None);
        let cgroups = self.cgroups.clone();
        let (sb, c_name) = (sandbox.to_owned(), name.to_owned());
        tokio::spawn(async move {
            if let Err(e) = exited.readable().await {
                tracing::warn!(
                    sandbox = sb,
                    container = c_name,
                    "waiting for an adopted container: {e}"
                );
                return;
            }
            // No exit file: the init itself was killed (SIGKILL), taking the program with it.
            let code = init::read_exit_file(&exit_file).unwrap_or(128 + Signal::SIGKILL as i32);
            let _ = std::fs::remove_file(&pid_file);
            let _ = tx.send(Some(exit_of(&cgroups, &sb, &c_name, code)));
        });
        let id = format!("{sandbox}/{name}/{}", pid.as_raw());
        let container = Arc::new(NativeContainer {
            sandbox: sandbox.to_owned(),
            name: name.to_owned(),
            pid,
            exit: rx,
            log: dir.join("logs").join(format!("{name}.log")),
        });
        self.containers
            .lock()
            .map_err(|_| Error::Other("container table poisoned".into()))?
            .insert(id.clone(), container);
        tracing::info!(
            sandbox,
            container = name,
            pid = pid.as_raw(),
            "adopted a running container"
        );
        Ok(Started { id, started_at })
    }

    /// The sandbox directory of a pod, for tests and log lookups.
    pub fn sandbox_path(&self, sandbox_id: &str) -> PathBuf {
        self.sandbox_dir(sandbox_id)
    }
}

#[cfg(test)]
mod tests {
    use super::key_from_sandbox_id;

    #[test]
    fn sandbox_ids_carry_the_pod_key() {
        let k = key_from_sandbox_id("kube-system_etcd-node1_1f0c-aa_b");
        assert_eq!(
            (k.namespace.as_str(), k.name.as_str(), k.uid.as_str()),
            ("kube-system", "etcd-node1", "1f0c-aa_b")
        );
    }
}
