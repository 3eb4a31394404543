//! `km local-up`: the whole cluster from one command, stopped with SIGTERM without leaving a
//! process behind, and resumed from its data directory; and its refusals of bad flags and of a
//! data directory another local-up holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::process::{Proc, wait_until};
use crate::support::{km_bin, kubectl, kubectls};

const READY: &str = "cluster ready";

/// A `km local-up` over `data`, its output in `out`.
fn local_up(data: &Path, out: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(km_bin());
    cmd.arg("local-up")
        .arg(format!("--data-dir={}", data.display()))
        .arg("--pod-infra-container-image=km-test/pause:latest")
        .args(extra);
    Proc::spawn("km local-up", cmd, out)
}

/// Waits for the ready line of the `n`th run whose output goes to the same file.
fn wait_ready(p: &mut Proc, n: usize) {
    let ready = wait_until(Duration::from_secs(120), || {
        assert!(p.is_running(), "km local-up exited; its output:\n{}", p.log());
        p.log().matches(READY).count() >= n
    });
    assert!(ready, "no ready line from km local-up; its output:\n{}", p.log());
}

/// SIGTERM, and the exit must be clean.
fn stop(p: &mut Proc) {
    p.signal("TERM");
    let status = p.wait_timeout(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "km local-up did not exit 0 after SIGTERM ({status:?}); its output:\n{}",
        p.log()
    );
}

/// The API server's URL, from the data directory's state file.
fn api_url(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("local-up.json")).expect("the state file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("state file JSON");
    let port = v["ports"]["apiserver"].as_u64().expect("the apiserver's port");
    format!("http://127.0.0.1:{port}")
}

/// Processes whose command line holds one of `needles` or whose working directory lies in
/// `dir`.
fn processes_of(dir: &Path, needles: &[&str]) -> Vec<String> {
    let me = std::process::id().to_string();
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || pid == me {
            continue;
        }
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if state.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if cmd.contains(&dir) || cwd.starts_with(&dir) || needles.iter().any(|n| cmd.contains(n)) {
            found.push(format!("{pid}: {cmd} (in {cwd})"));
        }
    }
    found
}

struct Kubectl {
    bin: PathBuf,
    server: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String) {
        kubectl(&self.bin, &self.server, args)
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = what.to_vec();
        let out = format!("-o=jsonpath={path}");
        args.push(&out);
        let (ok, text) = self.run(&args);
        if ok { text.trim().to_owned() } else { String::new() }
    }
}

fn manifest(marker: &str, deploy_marker: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: solo
  namespace: default
spec:
  runtimeClassName: native
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: unused
      command: ["/bin/sh", "-c", "while true; do sleep 1; done # {marker}"]
      resources: {{requests: {{cpu: 100m, memory: 16Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kept
  namespace: default
spec:
  replicas: 1
  selector: {{matchLabels: {{app: kept}}}}
  template:
    metadata: {{labels: {{app: kept}}}}
    spec:
      runtimeClassName: native
      terminationGracePeriodSeconds: 1
      containers:
        - name: c
          image: unused
          command: ["/bin/sh", "-c", "while true; do sleep 1; done # {deploy_marker}"]
          resources: {{requests: {{cpu: 100m, memory: 16Mi}}}}
"#
    )
}

/// The processes running a pod's command (the shell carrying its marker), zombies aside, and
/// not counting the container's init (`km container-init`, whose command line ends with it).
fn copies(marker: &str) -> usize {
    processes_of(Path::new("/nonexistent"), &[marker])
        .iter()
        .filter(|p| !p.contains(" container-init "))
        .count()
}

#[test]
fn local_up_runs_stops_without_leftovers_and_resumes() {
    let Some(bin) = kubectls().into_iter().next() else {
        panic!("no kubectl found (scripts/install-deps.sh installs one)");
    };
    let tmp = tempfile::Builder::new().prefix("km-local-up-").tempdir().expect("tempdir");
    let data = tmp.path().join("cluster");
    let out = tmp.path().join("local-up.out");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker = format!("km-local-up-solo-{}-{nanos}", std::process::id());
    let deploy_marker = format!("km-local-up-kept-{}-{nanos}", std::process::id());

    // First run: a new cluster.
    let mut lu = local_up(&data, &out, &["--agents", "2"]);
    wait_ready(&mut lu, 1);
    assert!(lu.log().contains("creating the cluster"), "{}", lu.log());
    let k = Kubectl { bin, server: api_url(&data) };
    let file = tmp.path().join("example.yaml");
    std::fs::write(&file, manifest(&marker, &deploy_marker)).expect("write the manifest");
    let (ok, text) = k.run(&["apply", "-f", &file.display().to_string()]);
    assert!(ok, "kubectl apply: {text}");
    let running = wait_until(Duration::from_secs(120), || {
        k.jsonpath(&["get", "pod", "solo"], "{.status.phase}") == "Running"
            && k.jsonpath(&["get", "pods", "-l", "app=kept"], "{.items[*].status.phase}")
                == "Running"
    });
    assert!(running, "the pods are not Running: {}", k.run(&["get", "pods", "-o", "wide"]).1);
    let solo_uid = k.jsonpath(&["get", "pod", "solo"], "{.metadata.uid}");
    assert!(wait_until(Duration::from_secs(30), || copies(&marker) == 1));
    assert!(wait_until(Duration::from_secs(30), || copies(&deploy_marker) == 1));
    let (nodes_ok, nodes) = k.run(&["get", "nodes", "-o=name"]);
    assert!(
        nodes_ok && nodes.contains("mesos-agent-1") && nodes.contains("mesos-agent-2"),
        "{nodes}"
    );

    // SIGTERM: exit 0, nothing left (components, etcd, executors, pod processes).
    stop(&mut lu);
    let left = processes_of(&data, &[&marker, &deploy_marker]);
    assert!(left.is_empty(), "left after km local-up stopped:\n{}", left.join("\n"));

    // Second run over the same directory: the same cluster.
    let mut lu = local_up(&data, &out, &[]);
    wait_ready(&mut lu, 2);
    assert!(lu.log().contains("resuming the cluster"), "{}", lu.log());
    assert_eq!(api_url(&data), k.server, "the API server moved");
    // The bare pod is still the same object; its task did not survive the stop, and km does
    // not launch a bound pod again: it ends Failed, and nothing runs it.
    assert_eq!(k.jsonpath(&["get", "pod", "solo"], "{.metadata.uid}"), solo_uid);
    let failed = wait_until(Duration::from_secs(120), || {
        k.jsonpath(&["get", "pod", "solo"], "{.status.phase}") == "Failed"
    });
    assert!(failed, "solo: {}", k.run(&["get", "pod", "solo", "-o", "yaml"]).1);
    assert_eq!(copies(&marker), 0, "the bare pod runs again");
    // The Deployment's pod is replaced and runs once.
    let back = wait_until(Duration::from_secs(120), || {
        k.jsonpath(
            &["get", "pods", "-l", "app=kept"],
            "{.items[?(@.status.phase==\"Running\")].metadata.name}",
        )
        .split_whitespace()
        .count()
            == 1
            && copies(&deploy_marker) == 1
    });
    assert!(back, "the Deployment's pod is not back: {}", k.run(&["get", "pods", "-o", "wide"]).1);
    let (_, tasks) = k.run(&["get", "deployment", "kept", "-o=jsonpath={.status.readyReplicas}"]);
    assert_eq!(tasks.trim(), "1");

    stop(&mut lu);
    let left = processes_of(&data, &[&marker, &deploy_marker]);
    assert!(left.is_empty(), "left after the second stop:\n{}", left.join("\n"));
}

/// Runs `km local-up` to its end; (exit success, output).
fn run_to_end(args: &[&str]) -> (bool, String) {
    let out = Command::new(km_bin()).arg("local-up").args(args).output().expect("run km");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn local_up_refuses_bad_flags_before_creating_anything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("never");
    let d = format!("--data-dir={}", data.display());
    let cases: &[(&[&str], &str)] = &[
        (&["--agents=0"], "--agents 0: a cluster has 1 to 32 agents"),
        (&["--agents=40"], "--agents 40: a cluster has 1 to 32 agents"),
        (&["--address=0.0.0.0"], "0.0.0.0 is not an address clients can reach"),
        (&["--timeout=0s"], "must be more than zero"),
        (
            &["--etcd-binary=/nonexistent/etcd"],
            "--etcd-binary /nonexistent/etcd: not an executable file",
        ),
        (&["--workers=2"], "--workers"),
    ];
    for (args, expected) in cases {
        let mut all = vec![d.as_str()];
        all.extend_from_slice(args);
        let (ok, text) = run_to_end(&all);
        assert!(!ok, "km local-up {args:?} succeeded:\n{text}");
        assert!(text.contains(expected), "km local-up {args:?}: expected {expected:?} in:\n{text}");
    }
    assert!(!data.exists(), "a refused start created the data directory");
}

#[test]
fn local_up_refuses_a_held_data_dir_and_contradicting_flags() {
    let tmp = tempfile::Builder::new().prefix("km-local-up-").tempdir().expect("tempdir");
    let data = tmp.path().join("cluster");
    let d = format!("--data-dir={}", data.display());
    let mut lu = local_up(&data, &tmp.path().join("local-up.out"), &["--agents", "1"]);
    wait_ready(&mut lu, 1);

    let (ok, text) = run_to_end(&[&d]);
    assert!(!ok, "a second km local-up on the same directory started:\n{text}");
    assert!(
        text.contains(&format!(
            "another km local-up (pid {}) is running on the data directory",
            lu.pid()
        )),
        "{text}"
    );
    assert!(lu.is_running(), "the first km local-up stopped:\n{}", lu.log());
    stop(&mut lu);

    let (ok, text) = run_to_end(&[&d, "--agents=3"]);
    assert!(!ok, "--agents 3 over a 1-agent cluster started:\n{text}");
    assert!(text.contains("--agents 3 contradicts the cluster in this data directory"), "{text}");
    assert!(processes_of(&data, &[]).is_empty(), "a refused start left processes");
}
