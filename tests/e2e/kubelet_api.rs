//! `km kubelet --api-servers` against `km apiserver` on etcd: static pods
//! appear as mirror pods bound to the node with their status kept in sync,
//! the Node registers Ready, a deleted mirror pod comes back, removing the
//! manifest deletes it (also while the kubelet is down), an unreachable API
//! server is retried while the pods run, and env from a ConfigMap and a Secret volume reach
//! the container (a missing ConfigMap is a CreateContainerConfigError until
//! it is created).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::support::apiserver::ApiServer;
use crate::support::etcd::Etcd;
use crate::support::km_bin;
use crate::support::process::{Proc, wait_until};
use crate::support::runtime;

const WAIT: Duration = Duration::from_secs(30);

struct Dirs {
    dir: tempfile::TempDir,
    cgroup: String,
}

impl Dirs {
    fn new() -> Dirs {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["manifests", "out", "mnt"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Dirs { dir, cgroup: format!("km-e2e-api-{}", std::process::id()) }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        for h in ["", "memory", "cpu", "pids"] {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(h).join(&self.cgroup));
        }
    }
}

fn start_kubelet(dirs: &Dirs, api_url: &str) -> Proc {
    start_kubelet_logging(dirs, api_url, "info")
}

fn start_kubelet_logging(dirs: &Dirs, api_url: &str, log_filter: &str) -> Proc {
    let mut cmd = Command::new(km_bin());
    cmd.arg("kubelet")
        .arg("--manifest-dir")
        .arg(dirs.path("manifests"))
        .args(["--file-check-frequency", "200ms", "--hostname-override", "node1"])
        .args(["--node-ip", "127.0.0.1", "--docker", "disabled"])
        .arg("--root-dir")
        .arg(dirs.path("root"))
        .args(["--cgroup-root", &dirs.cgroup])
        .arg(format!("--api-servers={api_url}"))
        .env("KM_LOG", log_filter);
    Proc::spawn("km kubelet", cmd, &dirs.path("kubelet.log"))
}

fn manifest(name: &str, containers: serde_json::Value, volumes: serde_json::Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "runtimeClassName": "native",
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
            "volumes": volumes,
        }
    })
    .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn kubelet_publishes_mirror_pods_node_and_config() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let dirs = Dirs::new();
    let rt = runtime();
    let _in_rt = rt.enter();
    let client = server.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());

    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "settings" }, "data": { "greeting": "hello $world" }
        }))
        .expect("cm");
        cms.create(&PostParams::default(), &cm).await.expect("create configmap");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let s: Secret = serde_json::from_value(json!({
            "metadata": { "name": "creds" }, "stringData": { "password": "s3cret" }
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &s).await.expect("create secret");
    });

    let (m, out, mnt) = (dirs.path("manifests"), dirs.path("out"), dirs.path("mnt"));
    std::fs::write(
        m.join("plain.json"),
        manifest(
            "plain",
            json!([{ "name": "main", "command": ["/bin/sleep", "1000"] }]),
            json!([]),
        ),
    )
    .expect("write plain");
    let script = format!(
        "echo \"$GREETING\" > {out}/env; cat {mnt}/password > {out}/secret; exec sleep 1000",
        out = out.display(),
        mnt = mnt.display()
    );
    std::fs::write(
        m.join("cfg.json"),
        manifest(
            "cfg",
            json!([{
                "name": "main",
                "command": ["/bin/sh", "-c", script],
                "env": [
                    { "name": "GREETING", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "greeting" } } },
                    { "name": "NOPE", "valueFrom": { "configMapKeyRef": { "name": "absent", "key": "k", "optional": true } } },
                ],
                "volumeMounts": [{ "name": "creds", "mountPath": mnt.display().to_string(), "readOnly": true }],
            }]),
            json!([{ "name": "creds", "secret": { "secretName": "creds" } }]),
        ),
    )
    .expect("write cfg");
    std::fs::write(
        m.join("broken.json"),
        manifest(
            "broken",
            json!([{
                "name": "main",
                "command": ["/bin/sleep", "1000"],
                "env": [{ "name": "X", "valueFrom": { "configMapKeyRef": { "name": "missing", "key": "k" } } }],
            }]),
            json!([]),
        ),
    )
    .expect("write broken");

    // The first API server never answers: the kubelet fails over.
    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());
    let mut kubelet = start_kubelet(&dirs, &format!("{dead},{}", server.url()));
    let get = |name: &str| rt.block_on(pods.get_opt(name)).ok().flatten();

    // The mirror pod exists, bound to the node, with the mirror annotation.
    assert!(
        wait_until(WAIT, || get("plain-node1").is_some()),
        "mirror pod; log:\n{}",
        kubelet.log()
    );
    let mirror = get("plain-node1").expect("mirror pod");
    let ann = mirror.metadata.annotations.clone().unwrap_or_default();
    assert!(
        ann.get("kubernetes.io/config.mirror").is_some_and(|h| !h.is_empty()),
        "mirror annotation: {ann:?}"
    );
    assert_eq!(ann.get("kubernetes.io/config.source").map(String::as_str), Some("file"));
    assert_eq!(mirror.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("node1"));

    // Its status reaches Running with the container ready.
    let running_ready = |name: &str| {
        get(name).and_then(|p| p.status).is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.container_statuses.iter().flatten().all(|c| c.ready)
                && s.container_statuses.as_ref().is_some_and(|c| !c.is_empty())
        })
    };
    assert!(
        wait_until(WAIT, || running_ready("plain-node1")),
        "plain Running; log:\n{}",
        kubelet.log()
    );

    // The Node is registered and Ready.
    let node_ready = || {
        rt.block_on(nodes.get_opt("node1")).ok().flatten().and_then(|n| n.status).is_some_and(|s| {
            s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    assert!(wait_until(WAIT, node_ready), "node Ready; log:\n{}", kubelet.log());

    // A deleted mirror pod comes back while the static pod runs.
    let old_uid = mirror.metadata.uid.clone();
    rt.block_on(pods.delete("plain-node1", &DeleteParams::default())).expect("delete mirror");
    assert!(
        wait_until(WAIT, || get("plain-node1").is_some_and(|p| p.metadata.uid != old_uid)),
        "mirror pod recreated; log:\n{}",
        kubelet.log()
    );

    // ConfigMap env and Secret volume reach the container.
    assert!(
        wait_until(WAIT, || running_ready("cfg-node1")),
        "cfg Running; log:\n{}",
        kubelet.log()
    );
    assert!(
        wait_until(WAIT, || read(&out.join("env")) == "hello $world\n"),
        "env: {:?}",
        read(&out.join("env"))
    );
    assert!(
        wait_until(WAIT, || read(&out.join("secret")) == "s3cret"),
        "secret: {:?}",
        read(&out.join("secret"))
    );
    let status_file = dirs.path("root").join("status").join("default_cfg-node1.json");
    assert!(!read(&status_file).contains("s3cret"), "the status file keeps the references");
    let cfg = get("cfg-node1").expect("cfg mirror");
    let spec = serde_json::to_string(&cfg.spec).expect("spec");
    assert!(
        !spec.contains("s3cret") && !spec.contains("hello"),
        "the mirror keeps the references: {spec}"
    );

    // A missing ConfigMap: CreateContainerConfigError naming it.
    let config_error = || {
        get("broken-node1").and_then(|p| p.status).is_some_and(|s| {
            s.container_statuses.iter().flatten().any(|c| {
                c.state.as_ref().and_then(|st| st.waiting.as_ref()).is_some_and(|w| {
                    w.reason.as_deref() == Some("CreateContainerConfigError")
                        && w.message.as_deref().is_some_and(|m| m.contains("missing"))
                })
            })
        })
    };
    assert!(
        wait_until(WAIT, config_error),
        "broken: {:?}; log:\n{}",
        get("broken-node1").and_then(|p| p.status),
        kubelet.log()
    );

    // Once the ConfigMap exists, the pod starts.
    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(
            json!({ "metadata": { "name": "missing" }, "data": { "k": "v" } }),
        )
        .expect("cm");
        cms.create(&PostParams::default(), &cm).await.expect("create configmap");
    });
    assert!(
        wait_until(WAIT, || running_ready("broken-node1")),
        "broken starts; log:\n{}",
        kubelet.log()
    );

    // Removing the manifest deletes the mirror pod.
    std::fs::remove_file(m.join("plain.json")).expect("rm plain");
    assert!(
        wait_until(WAIT, || get("plain-node1").is_none()),
        "mirror pod deleted; log:\n{}",
        kubelet.log()
    );
    assert!(get("cfg-node1").is_some(), "the other mirror pods stay");
    kubelet.signal("TERM");
    assert!(kubelet.wait_timeout(WAIT).is_some(), "kubelet stops its pods and exits");
}

#[test]
fn pods_run_while_the_api_server_is_unreachable() {
    let dirs = Dirs::new();
    std::fs::write(
        dirs.path("manifests").join("plain.json"),
        manifest(
            "plain",
            json!([{ "name": "main", "command": ["/bin/sleep", "1000"] }]),
            json!([]),
        ),
    )
    .expect("write plain");
    let port = crate::support::free_port();
    // A failure is a warning once; its repetitions are debug lines, which count the rounds.
    let mut kubelet = start_kubelet_logging(
        &dirs,
        &format!("http://127.0.0.1:{port}"),
        "info,km_kubelet::mirror=debug",
    );
    let status_file = dirs.path("root").join("status").join("default_plain-node1.json");
    let running = || {
        serde_json::from_str::<serde_json::Value>(&read(&status_file))
            .is_ok_and(|v| v["status"]["phase"] == "Running")
    };
    assert!(wait_until(WAIT, running), "plain runs; log:\n{}", kubelet.log());
    // Several rounds of retries, each failure logged once.
    let lines = |log: &str, level: &str, what: &str| {
        log.lines().filter(|l| l.contains(level) && l.contains(what)).count()
    };
    let retried = |log: &str| {
        lines(log, "DEBUG", "registering node:") >= 3 && lines(log, "DEBUG", "mirror pods:") >= 3
    };
    assert!(
        wait_until(WAIT, || retried(&kubelet.log())),
        "several rounds of retries; log:\n{}",
        kubelet.log()
    );
    let log = kubelet.log();
    assert_eq!(lines(&log, " WARN ", "registering node:"), 1, "logged once; log:\n{log}");
    assert_eq!(lines(&log, " WARN ", "mirror pods:"), 1, "logged once; log:\n{log}");
    assert!(kubelet.is_running(), "the kubelet keeps running; log:\n{log}");
    kubelet.signal("TERM");
    assert!(kubelet.wait_timeout(WAIT).is_some(), "kubelet stops its pods and exits");
}

#[test]
fn mirror_pods_outlive_a_kubelet_restart() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let dirs = Dirs::new();
    let rt = runtime();
    let _in_rt = rt.enter();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let get = |name: &str| rt.block_on(pods.get_opt(name)).ok().flatten();
    let m = dirs.path("manifests");
    for name in ["keep", "gone"] {
        std::fs::write(
            m.join(format!("{name}.json")),
            manifest(
                name,
                json!([{ "name": "main", "command": ["/bin/sleep", "1000"] }]),
                json!([]),
            ),
        )
        .expect("write manifest");
    }
    let running =
        |name: &str| get(name).and_then(|p| p.status?.phase).is_some_and(|ph| ph == "Running");

    let mut kubelet = start_kubelet(&dirs, &server.url());
    assert!(
        wait_until(WAIT, || running("keep-node1") && running("gone-node1")),
        "both run; log:\n{}",
        kubelet.log()
    );
    let uid = get("keep-node1").and_then(|p| p.metadata.uid);
    kubelet.signal("TERM");
    assert!(kubelet.wait_timeout(WAIT).is_some(), "kubelet exits");

    // While the kubelet is down, one manifest goes away.
    std::fs::remove_file(m.join("gone.json")).expect("rm gone");
    let mut kubelet = start_kubelet(&dirs, &server.url());
    assert!(
        wait_until(WAIT, || get("gone-node1").is_none()),
        "the stale mirror pod is deleted; log:\n{}",
        kubelet.log()
    );
    assert!(wait_until(WAIT, || running("keep-node1")), "keep runs again; log:\n{}", kubelet.log());
    assert_eq!(
        get("keep-node1").and_then(|p| p.metadata.uid),
        uid,
        "the mirror pod is kept, not recreated"
    );
    kubelet.signal("TERM");
    assert!(kubelet.wait_timeout(WAIT).is_some(), "kubelet exits");
}
