//! `km kubelet` over a manifest directory: pods start for new files, restart
//! for changed ones, stop for removed ones; a malformed file is reported
//! with its path while the others run; SIGTERM stops every pod; after
//! `kill -9` the pods keep running, the next kubelet adopts those whose
//! manifest is still there (Docker and native) and removes the others.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::km_bin;
use crate::support::process::{Proc, wait_until};

/// A kubelet's directories, cgroup parent and Docker owner label, removed
/// (with anything still running in them) on drop.
struct Env {
    dir: tempfile::TempDir,
    cgroup: String,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["manifests", "out"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Env { dir, cgroup: format!("km-e2e-{name}-{}", std::process::id()) }
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn owner(&self) -> String {
        format!("kubelet:{}", self.root().display())
    }

    fn start(&self, docker: &str, log: &str) -> Proc {
        let mut cmd = Command::new(km_bin());
        cmd.arg("kubelet")
            .arg("--manifest-dir")
            .arg(self.manifests())
            .args([
                "--file-check-frequency",
                "200ms",
                "--hostname-override",
                "node1",
                "--node-ip",
                "127.0.0.1",
            ])
            .arg("--root-dir")
            .arg(self.root())
            .args(["--cgroup-root", &self.cgroup, "--docker", docker])
            // The local stand-in for Kubernetes' pause image (there is no registry).
            .args(["--pod-infra-container-image", "km-test/pause:latest"]);
        Proc::spawn("km kubelet", cmd, &self.dir.path().join(log))
    }

    /// The status file of pod `name` (static pods are named `<name>-node1`).
    fn status(&self, name: &str) -> Option<serde_json::Value> {
        let file = self.root().join("status").join(format!("default_{name}-node1.json"));
        serde_json::from_slice(&std::fs::read(file).ok()?).ok()
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.status(name)?["status"]["phase"].as_str().map(str::to_owned)
    }

    fn docker_containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=io.km.owner={}", self.owner())])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.docker_containers();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
        }
        let root = Path::new("/sys/fs/cgroup");
        for h in ["", "memory", "cpu", "pids"] {
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
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.lines() {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A native static pod that writes `$VERSION` to `out/<name>` and sleeps.
fn native_manifest(name: &str, version: &str, out: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: native
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: ["/bin/sh", "-c", "echo $VERSION > {out}/{name}; exec sleep 1000"]
    env:
    - name: VERSION
      value: "{version}"
"#,
        out = out.display()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The host pid of a native container, from the container id in the
/// status (`native://<sandbox>/<container>/<pid>`).
fn native_pid(status: &serde_json::Value) -> Option<i32> {
    status["status"]["containerStatuses"][0]["containerID"]
        .as_str()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn kubelet_follows_the_manifest_directory() {
    let env = Env::new("follow");
    let (m, out) = (env.manifests(), env.out());
    std::fs::write(m.join("a.yaml"), native_manifest("a", "v1", &out)).expect("write a");
    std::fs::write(
        m.join("c.json"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"},
            "spec": {"runtimeClassName": "native", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "command": ["/bin/sleep", "1000"]}]}
        })
        .to_string(),
    )
    .expect("write c");
    std::fs::write(m.join("bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: [oops\n")
        .expect("write bad");

    let mut kubelet = env.start("disabled", "kubelet.log");
    assert!(
        wait_until(WAIT, || read(&out.join("a")) == "v1\n"),
        "pod a runs; log:\n{}",
        kubelet.log()
    );
    assert!(
        wait_until(WAIT, || env.phase("a").as_deref() == Some("Running")),
        "a is Running; log:\n{}",
        kubelet.log()
    );
    assert!(
        wait_until(WAIT, || env.phase("c").as_deref() == Some("Running")),
        "c is Running; log:\n{}",
        kubelet.log()
    );
    assert!(
        wait_until(WAIT, || kubelet.log().contains("bad.yaml")
            && kubelet.log().contains("invalid YAML")),
        "the bad manifest is reported with its path; log:\n{}",
        kubelet.log()
    );
    let status_a = env.status("a").expect("status of a");
    assert_eq!(status_a["metadata"]["annotations"]["kubernetes.io/config.source"], "file");
    let ready = status_a["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned();
    assert_eq!(ready.map(|c| c["status"].clone()), Some(serde_json::json!("True")));
    let uid_a = status_a["metadata"]["uid"].clone();
    let pid_a = native_pid(&status_a).expect("pid of a");
    let pid_c = native_pid(&env.status("c").expect("status of c")).expect("pid of c");
    assert!(alive(pid_a) && alive(pid_c));

    // Changed file: the pod is replaced (new uid, new process, new env).
    std::fs::write(m.join("a.yaml"), native_manifest("a", "v2", &out)).expect("rewrite a");
    assert!(
        wait_until(WAIT, || read(&out.join("a")) == "v2\n"),
        "a restarted with v2; log:\n{}",
        kubelet.log()
    );
    assert!(wait_until(WAIT, || env.status("a").is_some_and(|s| s["metadata"]["uid"] != uid_a)));
    assert!(wait_until(WAIT, || !alive(pid_a)), "the old process of a is gone");

    // Removed file: the pod stops and its sandbox goes.
    std::fs::remove_file(m.join("c.json")).expect("remove c");
    assert!(wait_until(WAIT, || !alive(pid_c)), "c's process stops; log:\n{}", kubelet.log());
    assert!(wait_until(WAIT, || env.status("c").is_none()), "c's status goes");

    // The malformed file, fixed, starts its pod.
    std::fs::write(m.join("bad.yaml"), native_manifest("b", "fixed", &out)).expect("fix bad");
    assert!(
        wait_until(WAIT, || read(&out.join("b")) == "fixed\n"),
        "b runs once fixed; log:\n{}",
        kubelet.log()
    );

    // SIGTERM: every pod stops, every sandbox goes, exit 0.
    let mut pid_b = None;
    assert!(wait_until(WAIT, || {
        pid_b = env.status("b").and_then(|s| native_pid(&s));
        pid_b.is_some()
    }));
    kubelet.signal("TERM");
    let status = kubelet.wait_timeout(WAIT).expect("kubelet exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}; log:\n{}", kubelet.log());
    assert!(pid_b.is_some_and(|p| !alive(p)));
    let pods =
        std::fs::read_dir(env.root().join("native").join("pods")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pods, 0, "no sandbox is left");
}

/// A Docker static pod running `sleep`.
fn docker_manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: km-test/busybox:latest\n    imagePullPolicy: Never\n    command: [\"sleep\", \"1000\"]\n"
    )
}

/// Ids of the Docker containers of pod `name` (static pod `<name>-node1`).
fn pod_containers(env: &Env, name: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=io.km.owner={}", env.owner())])
        .args(["--filter", &format!("label=io.km.pod.name={name}-node1")])
        .output()
        .expect("docker ps");
    let mut ids: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

#[test]
fn kubelet_kill_9_leaves_no_orphans() {
    let env = Env::new("kill9");
    let status = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build.sh"))
        .status()
        .expect("run tests/images/build.sh (needs a Docker engine)");
    assert!(
        status.success(),
        "tests/images/build.sh failed: the Docker tests need a running engine"
    );
    let (m, out) = (env.manifests(), env.out());
    std::fs::write(m.join("n.yaml"), native_manifest("n", "v1", &out)).expect("write n");
    std::fs::write(m.join("o.yaml"), native_manifest("o", "v1", &out)).expect("write o");
    std::fs::write(m.join("d.yaml"), docker_manifest("d")).expect("write d");
    std::fs::write(m.join("e.yaml"), docker_manifest("e")).expect("write e");

    let mut first = env.start("required", "kubelet1.log");
    let running = |name: &str| env.phase(name).as_deref() == Some("Running");
    assert!(
        wait_until(WAIT, || running("n") && running("o") && running("d") && running("e")),
        "all pods run; log:\n{}",
        first.log()
    );
    let pid_n = native_pid(&env.status("n").expect("status n")).expect("pid n");
    let pid_o = native_pid(&env.status("o").expect("status o")).expect("pid o");
    let old_d = pod_containers(&env, "d");
    let old_e = pod_containers(&env, "e");
    assert_eq!(old_d.len(), 2, "sandbox + container of d: {old_d:?}");
    assert_eq!(old_e.len(), 2, "sandbox + container of e: {old_e:?}");

    first.signal("KILL");
    first.wait_timeout(WAIT).expect("kubelet dies");
    // Native and Docker containers outlive the kubelet, each found again by
    // the pod it belongs to.
    assert!(alive(pid_n) && alive(pid_o), "native containers outlive their kubelet");
    assert_eq!(pod_containers(&env, "d"), old_d);

    // While the kubelet is down, the manifests of e and o go away.
    std::fs::remove_file(m.join("e.yaml")).expect("remove e");
    std::fs::remove_file(m.join("o.yaml")).expect("remove o");
    let mut second = env.start("required", "kubelet2.log");
    // n's and d's running containers are adopted, not recreated; e's and
    // o's are removed as orphans.
    assert!(
        wait_until(WAIT, || pod_containers(&env, "e").is_empty() && !alive(pid_o)),
        "e and o are removed; log:\n{}",
        second.log()
    );
    assert!(
        wait_until(WAIT, || second.log().contains("adopted a running container")
            && running("n")
            && running("d")),
        "n and d run; log:\n{}",
        second.log()
    );
    assert!(alive(pid_n), "n's process still runs");
    let n = env.status("n").expect("status n");
    assert_eq!(native_pid(&n), Some(pid_n), "n is adopted; log:\n{}", second.log());
    assert_eq!(n["status"]["containerStatuses"][0]["restartCount"], serde_json::json!(0));
    assert_eq!(pod_containers(&env, "d"), old_d, "d is adopted; log:\n{}", second.log());
    let restarts =
        env.status("d").expect("status d")["status"]["containerStatuses"][0]["restartCount"]
            .clone();
    assert_eq!(restarts, serde_json::json!(0));
    assert!(second.log().contains("left by an earlier run"), "log:\n{}", second.log());
    assert!(second.log().contains("adopting"), "log:\n{}", second.log());

    second.signal("TERM");
    let status = second.wait_timeout(WAIT).expect("kubelet exits on SIGTERM");
    assert!(status.success(), "log:\n{}", second.log());
    assert!(env.docker_containers().is_empty(), "SIGTERM removes every Docker container");
    assert!(!alive(pid_n), "SIGTERM stops the adopted native pod");
}
