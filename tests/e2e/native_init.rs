//! The native runtime with the km binary as every container's pid 1 (`km container-init`):
//! a program without a SIGTERM handler stops at once with the signal's status, orphans are
//! reaped, exit statuses and start errors come through unchanged. These need root (pid
//! namespaces, cgroups), as the kubelet tests do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;
use km_runtime::PodManager;
use km_runtime::lifecycle::Phase;
use km_runtime::native::{NativeConfig, NativeRuntime};
use km_runtime::pod::NodeContext;
use km_runtime::runtime::ContainerRuntime as _;
use km_runtime::status::PodSnapshot;
use serde_json::json;

use crate::support::km_bin;

/// A native runtime whose containers run under `km container-init`, in a temporary root and
/// a cgroup parent of its own (removed, with anything left in it, on drop).
struct Env {
    dir: tempfile::TempDir,
    cgroup: String,
    runtime: Arc<NativeRuntime>,
    manager: PodManager,
}

fn runtime(root: &Path, cgroup: &str, adopt: bool) -> Arc<NativeRuntime> {
    Arc::new(
        NativeRuntime::new(NativeConfig {
            root_dir: root.to_owned(),
            cgroup_parent: cgroup.to_owned(),
            init: Some(km_bin()),
            adopt,
        })
        .expect("native runtime (the e2e tests run as root)"),
    )
}

fn manager(runtime: &Arc<NativeRuntime>) -> PodManager {
    let node = NodeContext { node_name: "node1".into(), host_ip: "127.0.0.1".into() };
    PodManager::new(Some(runtime.clone()), None, node)
}

fn native_pod(name: &str, grace_secs: u64, command: &[&str]) -> k8s::Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "test", "uid": format!("uid-{name}-{}", std::process::id())},
        "spec": {"runtimeClassName": "native", "restartPolicy": "Never",
                 "terminationGracePeriodSeconds": grace_secs,
                 "containers": [{"name": "c", "command": command}]}
    }))
    .expect("pod JSON")
}

impl Env {
    fn new(name: &str) -> Env {
        Env::with(name, false)
    }

    fn with(name: &str, adopt: bool) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let cgroup = format!("km-e2e-init-{name}-{}", std::process::id());
        let runtime = runtime(&dir.path().join("root"), &cgroup, adopt);
        let manager = manager(&runtime);
        Env { dir, cgroup, runtime, manager }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn run(&self, name: &str, grace_secs: u64, command: &[&str]) -> String {
        self.manager.run(&native_pod(name, grace_secs, command)).expect("run").uid
    }

    async fn wait(
        &self,
        uid: &str,
        what: &str,
        cond: impl Fn(&PodSnapshot) -> bool,
    ) -> PodSnapshot {
        let mut rx = self.manager.watch(uid).expect("pod is known");
        match tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| cond(s))).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!("timed out waiting for {what}: {:#?}", self.manager.snapshot(uid)),
        }
    }

    /// The host pid of the pod's container (its init).
    fn pid(&self, snapshot: &PodSnapshot) -> i32 {
        let id = snapshot.container_ids[0].as_deref().expect("container id");
        self.runtime.pid(id).expect("pid")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let root = Path::new("/sys/fs/cgroup");
        for h in ["", "memory", "cpu", "pids", "cpuacct"] {
            remove_cgroup(&root.join(h).join(&self.cgroup));
        }
    }
}

fn remove_cgroup(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup(&e.path());
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().map(str::trim).filter(|p| !p.is_empty()) {
        let _ = std::process::Command::new("kill").args(["-9", pid]).status();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The terminated state of the pod's only container.
fn terminated(s: &PodSnapshot) -> Option<k8s::ContainerStateTerminated> {
    s.status.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone()
}

/// (pid, state) of every process whose parent is `parent`, from `/proc`.
fn children(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // Fields after the command name, which may hold spaces: state, ppid, …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            out.push((pid, state));
        }
    }
    out
}

fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_without_a_sigterm_handler_stops_at_once_with_the_signals_status() {
    let env = Env::new("term");
    // `sleep` has no SIGTERM handler; as pid 1 it would ignore SIGTERM and be killed only
    // when the 10 minutes of grace are over.
    let uid = env.run("sleeper", 600, &["/bin/sleep", "1000"]);
    let s = env.wait(&uid, "Running", |s| s.phase == Phase::Running).await;
    let pid = env.pid(&s);
    assert_eq!(cmdline(pid)[1], "container-init", "pid 1 is km's init: {:?}", cmdline(pid));
    let program = children(pid);
    assert_eq!(program.len(), 1, "the init runs the program as its child: {program:?}");
    assert_eq!(cmdline(program[0].0), ["/bin/sleep", "1000"], "with the argv it was given");

    let mut rx = env.manager.watch(&uid).expect("watch");
    // A deadline far below the grace period: the stop must not wait for it.
    tokio::time::timeout(Duration::from_secs(60), env.manager.stop(&uid))
        .await
        .expect("the pod stops well within its 10 minutes of grace")
        .expect("stop");
    let last = rx.borrow_and_update().clone();
    let t = terminated(&last).expect("terminated");
    assert_eq!(t.exit_code, 128 + 15, "SIGTERM ended the program: {t:?}");
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the container is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped() {
    let env = Env::new("reap");
    // Each subshell leaves a `sleep` orphaned: it is reparented to the container's pid 1,
    // exits shortly after and stays a zombie unless pid 1 reaps it. The marker is written
    // once the orphans exist; `exec` makes the program a `sleep`, which reaps nothing.
    let uid = env.run(
        "orphans",
        2,
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3; do (sleep 0.2 &); done; echo orphans-made > /dev/stderr; exec sleep 1000",
        ],
    );
    let s = env.wait(&uid, "Running", |s| s.phase == Phase::Running).await;
    let pid = env.pid(&s);
    let log = env.runtime.sandbox_path(&format!("test_orphans_{uid}")).join("logs/c.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("orphans-made")) {
        assert!(tokio::time::Instant::now() < deadline, "the pod never made its orphans");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until they are reaped the orphans show as children of pid 1 (running, then zombies);
    // in the end only the program is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kids = children(pid);
        if kids.len() == 1 && kids[0].1 != 'Z' {
            assert_eq!(cmdline(kids[0].0), ["sleep", "1000"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphans left unreaped under pid 1 ({pid}): {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.manager.stop(&uid).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_and_start_errors_come_through_the_init() {
    let env = Env::new("codes");
    let uid = env.run("three", 2, &["/bin/sh", "-c", "exit 1"]);
    let s = env.wait(&uid, "Failed", |s| s.phase == Phase::Failed).await;
    assert_eq!(terminated(&s).expect("terminated").exit_code, 1);
    // The exit file the init left in the sandbox is no container (its "1" is no pid 1).
    let owned = env.runtime.list_owned().await.expect("list");
    let pod = owned.iter().find(|p| p.key.uid == uid).expect("the sandbox is listed");
    assert!(pod.containers.is_empty(), "nothing runs: {owned:?}");
    env.manager.stop(&uid).await.expect("stop");

    let uid = env.run("killed", 2, &["/bin/sh", "-c", "kill -KILL $$"]);
    let s = env.wait(&uid, "Failed", |s| s.phase == Phase::Failed).await;
    assert_eq!(terminated(&s).expect("terminated").exit_code, 128 + 9);
    env.manager.stop(&uid).await.expect("stop");

    // A file that exists but cannot be executed: the init reports the failed execve to the
    // runtime, so the container is waiting with a start error, as without an init.
    let dir = tempfile::tempdir().expect("temp dir");
    let not_executable: PathBuf = dir.path().join("data");
    std::fs::write(&not_executable, "not a program").expect("write");
    let uid = env.run("noexec", 2, &[not_executable.to_str().expect("utf-8")]);
    let s = env
        .wait(&uid, "StartError", |s| {
            s.status.container_statuses.iter().flatten().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|st| st.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("StartError")
            })
        })
        .await;
    let waiting = s.status.container_statuses.as_ref().and_then(|c| c[0].state.clone());
    let message = waiting.and_then(|w| w.waiting).and_then(|w| w.message).unwrap_or_default();
    assert!(message.contains("execve") && message.contains("EACCES"), "{message}");
    env.manager.stop(&uid).await.expect("stop");
}

/// Runs `pod` on a runtime of its own in a tokio runtime of its own, as a first km process,
/// and drops both once it runs, without stopping anything, as kill -9 would: returns the
/// pod's container pid.
fn run_in_a_first_runtime(root: PathBuf, cgroup: String, pod: k8s::Pod) -> i32 {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        rt.block_on(async move {
            let first = runtime(&root, &cgroup, true);
            let m = manager(&first);
            let uid = m.run(&pod).expect("run").uid;
            let mut rx = m.watch(&uid).expect("watch");
            let s = tokio::time::timeout(
                Duration::from_secs(30),
                rx.wait_for(|s| s.phase == Phase::Running),
            )
            .await
            .expect("Running in time")
            .expect("snapshot")
            .clone();
            let pid = first.pid(s.container_ids[0].as_deref().expect("id")).expect("pid");
            // Dropping the manager would stop its pods; a killed km never gets to.
            std::mem::forget(m);
            pid
        })
    })
    .join()
    .expect("first runtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_adopts_running_containers_and_sees_them_end() {
    let env = Env::with("adopt", true);
    let go = env.dir.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; exit 7", go.display());
    let exits = native_pod("exits", 2, &["/bin/sh", "-c", &script]);
    let stopped = native_pod("stopped", 600, &["/bin/sleep", "1000"]);
    let pid_exits = run_in_a_first_runtime(env.root(), env.cgroup.clone(), exits.clone());
    let pid_stopped = run_in_a_first_runtime(env.root(), env.cgroup.clone(), stopped.clone());
    // The first km is gone; its containers are not.
    assert!(Path::new(&format!("/proc/{pid_exits}")).exists());
    assert!(Path::new(&format!("/proc/{pid_stopped}")).exists());

    // The second km is given the same pods and carries on with their processes.
    let uid = env.manager.run(&exits).expect("run").uid;
    let s = env.wait(&uid, "adopted and Running", |s| s.phase == Phase::Running).await;
    assert_eq!(env.pid(&s), pid_exits, "the running process is adopted, not started again");
    std::fs::write(&go, "").expect("go");
    let s = env.wait(&uid, "Failed", |s| s.phase == Phase::Failed).await;
    let t = terminated(&s).expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")), "its init's exit file");
    env.manager.stop(&uid).await.expect("stop");

    let uid = env.manager.run(&stopped).expect("run").uid;
    let s = env.wait(&uid, "adopted and Running", |s| s.phase == Phase::Running).await;
    assert_eq!(env.pid(&s), pid_stopped);
    let restarts = s.status.container_statuses.as_ref().map(|c| c[0].restart_count);
    assert_eq!(restarts, Some(0));
    let mut rx = env.manager.watch(&uid).expect("watch");
    tokio::time::timeout(Duration::from_secs(60), env.manager.stop(&uid))
        .await
        .expect("the adopted pod stops well within its grace period")
        .expect("stop");
    let t = terminated(&rx.borrow_and_update()).expect("terminated");
    assert_eq!(t.exit_code, 128 + 15);
    let cmdline = std::fs::read(format!("/proc/{pid_stopped}/cmdline")).unwrap_or_default();
    assert!(cmdline.is_empty(), "the adopted container is gone");
}
