//! Pods through the whole path: km scheduler → km mesos-master → a real km mesos-agent →
//! km executor → the pod runtimes, with km apiserver on etcd. A pod created with the API runs,
//! its executor keeps its status in the API, it finishes or fails with its task, and a deleted
//! pod's task is killed and its process gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::support::cluster::{KmCluster, tail};
use crate::support::{km_bin, kubectl, kubectls};

const WAIT: Duration = Duration::from_secs(90);
const AGENT: &str = "cpus:4;mem:4096;disk:10000;ports:[31000-31100]";

fn native_pod(name: &str, command: &[&str], restart: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "runtimeClassName": "native",
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "main", "image": "unused", "command": command,
                "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } } }],
        },
    }))
    .expect("a pod")
}

fn cluster() -> KmCluster {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let agent = c.start_agent("agent-x", AGENT);
    c.keep(agent);
    c
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

async fn master_tasks(c: &KmCluster) -> BTreeMap<String, String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1", c.master.url()))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "GET_TASKS"}).to_string())
        .send()
        .await
        .expect("GET_TASKS");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    let mut out = BTreeMap::new();
    for list in ["tasks", "completed_tasks"] {
        for t in v["get_tasks"][list].as_array().into_iter().flatten() {
            out.insert(
                t["task_id"]["value"].as_str().unwrap_or_default().to_owned(),
                t["state"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    out
}

fn task_of(p: &Pod) -> String {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("k8s.mesosphere.io/taskId"))
        .cloned()
        .unwrap_or_default()
}

/// Whether a process with this exact command line runs on the host.
fn process_runs(needle: &str) -> bool {
    processes_running(needle) > 0
}

#[tokio::test]
async fn a_native_pod_runs_on_a_real_agent_and_is_killed_when_deleted() {
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    // A sleep no other test runs, to find its process.
    let marker = format!("{}", 86_400 + std::process::id() % 1000);
    api.create(&PostParams::default(), &native_pod("sleeper", &["/bin/sleep", &marker], "Always"))
        .await
        .expect("create");
    let pod = c
        .eventually("the pod Running, with container statuses from the executor", WAIT, || async {
            let p = api.get("sleeper").await.ok()?;
            let by_executor = p.status.as_ref()?.container_statuses.as_ref().is_some_and(|cs| {
                cs.iter().any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            });
            (phase(&p) == "Running"
                && by_executor
                && p.spec.as_ref()?.node_name.as_deref() == Some("agent-x"))
            .then_some(p)
        })
        .await;
    assert!(
        process_runs(&format!("/bin/sleep {marker}")),
        "the container's process runs on the host"
    );
    let task = task_of(&pod);
    assert_eq!(master_tasks(&c).await.get(&task).map(String::as_str), Some("TASK_RUNNING"));
    api.delete("sleeper", &DeleteParams::default()).await.expect("delete");
    c.eventually("the pod object gone", WAIT, || async {
        api.get_opt("sleeper").await.ok()?.is_none().then_some(())
    })
    .await;
    c.eventually("the task KILLED", WAIT, || async {
        (master_tasks(&c).await.get(&task).map(String::as_str) == Some("TASK_KILLED")).then_some(())
    })
    .await;
    c.eventually("the process gone", WAIT, || async {
        (!process_runs(&format!("/bin/sleep {marker}"))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pods_that_complete_finish_or_fail_their_task_with_the_exit_code() {
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &native_pod("ok", &["/bin/sh", "-c", "exit 0"], "Never"))
        .await
        .expect("create ok");
    api.create(&PostParams::default(), &native_pod("bad", &["/bin/sh", "-c", "exit 3"], "Never"))
        .await
        .expect("create bad");
    let ok = c
        .eventually("ok Succeeded", WAIT, || async {
            let p = api.get("ok").await.ok()?;
            (phase(&p) == "Succeeded").then_some(p)
        })
        .await;
    let bad = c
        .eventually("bad Failed", WAIT, || async {
            let p = api.get("bad").await.ok()?;
            (phase(&p) == "Failed").then_some(p)
        })
        .await;
    let exit = bad
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs[0].state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
    assert_eq!(exit, Some(3));
    let (ok_task, bad_task) = (task_of(&ok), task_of(&bad));
    c.eventually("FINISHED and FAILED tasks", WAIT, || async {
        let tasks = master_tasks(&c).await;
        (tasks.get(&ok_task).map(String::as_str) == Some("TASK_FINISHED")
            && tasks.get(&bad_task).map(String::as_str) == Some("TASK_FAILED"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_cannot_start_is_reported_with_the_reason() {
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &native_pod("missing", &["/no/such/binary"], "Always"))
        .await
        .expect("create");
    let message = c
        .eventually("the reason on the pod", WAIT, || async {
            let p = api.get("missing").await.ok()?;
            let cs = p.status.as_ref()?.container_statuses.as_ref()?;
            let waiting = cs.first()?.state.as_ref()?.waiting.as_ref()?;
            let m = format!(
                "{} {}",
                waiting.reason.clone().unwrap_or_default(),
                waiting.message.clone().unwrap_or_default()
            );
            m.contains("/no/such/binary").then_some(m)
        })
        .await;
    assert!(!message.trim().is_empty());
}

fn build_images() {
    let status = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build.sh"))
        .status()
        .expect("run tests/images/build.sh (needs a Docker engine)");
    assert!(
        status.success(),
        "tests/images/build.sh failed: the Docker tests need a running engine"
    );
}

fn docker_pod(name: &str, image: &str, command: &[&str], restart: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } } }],
        },
    }))
    .expect("a pod")
}

/// IDs of the Docker containers of a pod (by km's ownership label).
fn containers_of(uid: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=io.km.pod.uid={uid}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_docker_pod_runs_finishes_and_a_missing_image_is_reported() {
    build_images();
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    api.create(
        &PostParams::default(),
        &docker_pod("once", "km-test/busybox:latest", &["sh", "-c", "echo hello; exit 0"], "Never"),
    )
    .await
    .expect("create");
    api.create(
        &PostParams::default(),
        &docker_pod("noimage", "km-test/absent:1", &["true"], "Never"),
    )
    .await
    .expect("create");
    let once = c
        .eventually("the Docker pod Succeeded", WAIT, || async {
            let p = api.get("once").await.ok()?;
            (phase(&p) == "Succeeded").then_some(p)
        })
        .await;
    let task = task_of(&once);
    c.eventually("its task FINISHED", WAIT, || async {
        (master_tasks(&c).await.get(&task).map(String::as_str) == Some("TASK_FINISHED"))
            .then_some(())
    })
    .await;
    let uid = once.metadata.uid.clone().unwrap_or_default();
    c.eventually("its containers removed", WAIT, || async {
        containers_of(&uid).is_empty().then_some(())
    })
    .await;
    let reason = c
        .eventually("the missing image reported", WAIT, || async {
            let p = api.get("noimage").await.ok()?;
            let w = p.status?.container_statuses?.first()?.state.clone()?.waiting?;
            Some(format!("{} {}", w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
        })
        .await;
    assert!(reason.contains("km-test/absent:1"), "{reason}");
}

#[tokio::test]
async fn an_executor_killed_with_kill_9_leaves_nothing_the_next_one_does_not_remove() {
    build_images();
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    api.create(
        &PostParams::default(),
        &docker_pod("orphan", "km-test/busybox:latest", &["sleep", "3600"], "Always"),
    )
    .await
    .expect("create");
    let pod = c
        .eventually("the pod Running", WAIT, || async {
            let p = api.get("orphan").await.ok()?;
            (phase(&p) == "Running").then_some(p)
        })
        .await;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    assert!(!containers_of(&uid).is_empty());
    // kill -9 of the executor: its Docker containers outlive it.
    let pids = c.executor_pids();
    assert!(!pids.is_empty(), "the executor runs");
    for pid in pids {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // The pod fails (its task is lost with the executor) and the scheduler's next executor, started
    // for a new pod, removes what the dead one left.
    c.eventually("the pod failed", WAIT, || async {
        (phase(&api.get("orphan").await.ok()?) == "Failed").then_some(())
    })
    .await;
    api.create(&PostParams::default(), &native_pod("next", &["/bin/sleep", "3601"], "Always"))
        .await
        .expect("create next");
    c.eventually("the next pod Running", WAIT, || async {
        (phase(&api.get("next").await.ok()?) == "Running").then_some(())
    })
    .await;
    c.eventually("the dead executor's containers removed", WAIT, || async {
        containers_of(&uid).is_empty().then_some(())
    })
    .await;
}

/// The kubectl binaries on this machine: 1.20 (Debian's, unpacked by scripts/install-deps.sh),
/// the one on PATH, and the versioned ones beside it.
#[tokio::test]
async fn kubectl_logs_reach_the_container_through_the_api_server_and_the_executor() {
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    let script = "echo one; echo two; echo three; while true; do sleep 0.2; echo tick; done";
    api.create(&PostParams::default(), &native_pod("talker", &["/bin/sh", "-c", script], "Always"))
        .await
        .expect("create");
    c.eventually("the pod Running", WAIT, || async {
        let p = api.get("talker").await.ok()?;
        (phase(&p) == "Running").then_some(())
    })
    .await;
    let server = c.api.url();
    let kubectls = kubectls();
    assert!(!kubectls.is_empty(), "no kubectl on this machine");
    for k in &kubectls {
        let (ok, out) = kubectl(k, &server, &["logs", "talker", "--tail=-1"]);
        assert!(ok && out.starts_with("one\ntwo\nthree\n"), "{}: {out}", k.display());
        let (ok, out) = kubectl(k, &server, &["logs", "talker", "-c", "main", "--tail=1"]);
        assert!(ok && out.lines().count() == 1, "{}: {out}", k.display());
        let (ok, out) = kubectl(k, &server, &["logs", "talker", "-c", "nope"]);
        assert!(!ok && out.contains("container nope is not valid for pod talker"), "{out}");
        let (ok, out) = kubectl(k, &server, &["logs", "talker", "--previous"]);
        assert!(!ok && out.contains("previous"), "{}: {out}", k.display());
    }
    // -f follows what the container writes later, until the client leaves.
    let mut follow = std::process::Command::new(&kubectls[0])
        .env("HOME", c.dir.path())
        .arg(format!("--server={server}"))
        .args(["logs", "-f", "talker", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().take(5).collect::<Result<Vec<_>, _>>()
    });
    let lines = tokio::time::timeout(WAIT, lines).await.expect("follow streams").expect("join");
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(lines.expect("lines"), vec!["tick"; 5]);

    // The executor's endpoint answers only the API server's token.
    let node: k8s_openapi::api::core::v1::Node =
        Api::all(c.client()).get("agent-x").await.expect("node");
    let port = node
        .status
        .clone()
        .and_then(|s| s.daemon_endpoints)
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("the executor publishes its endpoint");
    let url = format!("http://127.0.0.1:{port}/containerLogs/default/talker/main");
    let anonymous = reqwest::get(&url).await.expect("reach the executor");
    assert_eq!(anonymous.status(), 401);
    let wrong = reqwest::Client::new().get(&url).bearer_auth("guess").send().await.expect("reach");
    assert_eq!(wrong.status(), 401);
    let exec = format!("http://127.0.0.1:{port}/exec/default/talker/main?command=true&stdout=1");
    let anonymous = reqwest::Client::new().post(&exec).send().await.expect("reach the executor");
    assert_eq!(anonymous.status(), 401);

    // The executor publishes its ID (the pod's executor) and resources on its Node, and puts
    // them back when someone removes them.
    let pod = api.get("talker").await.expect("pod");
    let executor_of_pod = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("k8s.mesosphere.io/executorId"))
        .cloned()
        .expect("the pod names its executor");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client());
    let published = |n: &k8s_openapi::api::core::v1::Node| {
        let a = n.metadata.annotations.clone().unwrap_or_default();
        (
            a.get("k8s.mesosphere.io/executorId").cloned(),
            a.get("k8s.mesosphere.io/executorResources").cloned(),
        )
    };
    let (id, resources) = published(&node);
    assert_eq!(id.as_deref(), Some(executor_of_pod.as_str()));
    let resources = km_mesos::resources::decode_node_annotation(&resources.unwrap_or_default())
        .expect("the resources decode");
    assert!(resources.iter().any(|r| r.name == "cpus"), "{resources:?}");
    let clear = json!({ "metadata": { "annotations": {
        "k8s.mesosphere.io/executorId": null, "k8s.mesosphere.io/executorResources": null } } });
    nodes
        .patch("agent-x", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&clear))
        .await
        .expect("clear the annotations");
    c.eventually("the executor publishes its ID again", WAIT, || async {
        let n = nodes.get("agent-x").await.ok()?;
        (published(&n).0.as_deref() == Some(executor_of_pod.as_str())).then_some(())
    })
    .await;
}

/// `kubectl exec` with `input` on its stdin: (exit code, stdout, stderr).
fn kubectl_exec(
    bin: &std::path::Path,
    server: &str,
    args: &[&str],
    input: &str,
) -> (i32, String, String) {
    use std::io::Write as _;
    let home = tempfile::tempdir().expect("kubectl home");
    let mut child = std::process::Command::new(bin)
        .env("HOME", home.path())
        .arg(format!("--server={server}"))
        .arg("exec")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl exec");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("kubectl exec output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl exec` of every kubectl on the machine (WebSocket for the newer ones, SPDY for the
/// older), through km apiserver to the executor: output, exit codes, stdin, and the container's
/// namespaces and environment — for a native and a Docker pod.
#[tokio::test]
async fn kubectl_exec_runs_commands_in_the_pods_containers_for_every_kubectl() {
    build_images();
    let c = cluster();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    let mut native = native_pod("shell", &["/bin/sh", "-c", "echo started; sleep 3600"], "Always");
    native.spec.as_mut().expect("spec").containers[0].env = Some(vec![
        serde_json::from_value(json!({ "name": "GREETING", "value": "hello from the pod" }))
            .expect("env"),
    ]);
    api.create(&PostParams::default(), &native).await.expect("create native");
    api.create(
        &PostParams::default(),
        &docker_pod("boxed", "km-test/busybox:latest", &["sleep", "3600"], "Always"),
    )
    .await
    .expect("create docker");
    for name in ["shell", "boxed"] {
        c.eventually(&format!("{name} Running"), WAIT, || async {
            (phase(&api.get(name).await.ok()?) == "Running").then_some(())
        })
        .await;
    }
    let server = c.api.url();
    for k in &kubectls() {
        let who = k.display().to_string();
        for pod in ["shell", "boxed"] {
            let (code, out, err) = kubectl_exec(
                k,
                &server,
                &[pod, "--", "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
                "",
            );
            assert_eq!((code, out.as_str()), (3, "to-stdout\n"), "{who} {pod}: {err}");
            assert!(err.contains("to-stderr"), "{who} {pod}: {err}");
            let (code, out, err) =
                kubectl_exec(k, &server, &["-i", pod, "--", "cat"], "piped\ninput\n");
            assert_eq!((code, out.as_str()), (0, "piped\ninput\n"), "{who} {pod}: {err}");
        }
        // The native container's own namespaces and environment: its init is pid 1, its
        // hostname is the pod's name.
        let (code, out, err) = kubectl_exec(
            k,
            &server,
            &["shell", "--", "sh", "-c", "echo $GREETING; hostname; tr '\\0' ' ' </proc/1/cmdline"],
            "",
        );
        assert_eq!(code, 0, "{who}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["hello from the pod", "shell"], "{who}: {out}");
        assert!(lines.get(2).is_some_and(|l| l.contains("sleep 3600")), "{who}: {out}");
        let (code, _, err) = kubectl_exec(k, &server, &["shell", "--", "/no/such/binary"], "");
        assert_ne!(code, 0, "{who}");
        assert!(err.contains("/no/such/binary"), "{who}: {err}");
        let (code, _, err) = kubectl_exec(k, &server, &["shell", "-c", "nope", "--", "true"], "");
        assert_ne!(code, 0, "{who}");
        assert!(err.contains("container nope is not valid for pod shell"), "{who}: {err}");
    }
}

/// How many processes run exactly `needle` (a command line), by /proc.
fn processes_running(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == needle)
                .unwrap_or(false)
        })
        .count()
}

/// Chaos on one agent: 100 running pods, kill -9 of their executor, then of the agent. The pods of
/// the killed executor fail (so that controllers would replace them) and the next executor removes
/// every process they left; a pod of the next executor outlives the agent's kill -9 and restart,
/// still running exactly once, under the same task.
#[tokio::test]
async fn kill_9_of_the_executor_then_of_the_agent_leaves_no_orphan_and_runs_nothing_twice() {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let mut agent = c.start_agent("agent-x", AGENT);
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    // One sleep duration per test run, to count this test's processes only.
    let marker = format!("/bin/sleep {}", 90_000 + std::process::id() % 1000);
    let argv: Vec<&str> = marker.split(' ').collect();
    let many = 100;
    let mut pod = native_pod("x", &argv, "Always");
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.resources =
            serde_json::from_value(json!({ "requests": { "cpu": "10m", "memory": "8Mi" } }))
                .expect("resources");
    }
    for i in 0..many {
        let mut p = pod.clone();
        p.metadata.name = Some(format!("chaos-{i}"));
        api.create(&PostParams::default(), &p).await.expect("create");
    }
    let running = || async {
        let list = api.list(&Default::default()).await.ok()?;
        Some(list.items.iter().filter(|p| phase(p) == "Running").count())
    };
    c.eventually("100 pods Running", WAIT, || async { (running().await? == many).then_some(()) })
        .await;
    assert_eq!(processes_running(&marker), many, "one process per pod");

    // kill -9 of the executor: its pods' processes outlive it, its tasks are lost.
    let pids = c.executor_pids();
    assert_eq!(pids.len(), 1, "one executor runs the 100 pods");
    let _ = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status();
    // Every pod's task is lost with the executor. A bound pod fails (a controller would replace
    // it); a pod whose first update had not reached the scheduler yet was never bound, and is
    // launched again. Either way: Failed, or Running under a new task.
    let before: BTreeMap<String, String> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), task_of(p)))
        .collect();
    let deadline = Instant::now() + WAIT;
    let relaunched = loop {
        let list = api.list(&Default::default()).await.expect("list");
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        let mut relaunched = 0;
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let settled = match phase(p) {
                "Failed" => true,
                "Running" => {
                    let new_task = task_of(p) != before.get(&name).cloned().unwrap_or_default();
                    relaunched += usize::from(new_task);
                    new_task
                }
                _ => false,
            };
            *phases
                .entry(format!("{}{}", phase(p), if settled { "" } else { " (old task)" }))
                .or_default() += 1;
        }
        if phases.get("Failed").copied().unwrap_or(0) + relaunched == many {
            break relaunched;
        }
        assert!(
            Instant::now() < deadline,
            "pods of the dead executor not settled: {phases:?}\nscheduler log:\n{}",
            tail(&c.scheduler_log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The next executor, started for a new pod, removes every process the dead one left.
    let survivor = format!("/bin/sleep {}", 91_000 + std::process::id() % 1000);
    let survivor_argv: Vec<&str> = survivor.split(' ').collect();
    api.create(&PostParams::default(), &native_pod("survivor", &survivor_argv, "Always"))
        .await
        .expect("create survivor");
    let task = c
        .eventually("the new pod Running", WAIT, || async {
            let p = api.get("survivor").await.ok()?;
            (phase(&p) == "Running").then(|| task_of(&p))
        })
        .await;
    c.eventually("no orphan process left: one process per relaunched pod", WAIT, || async {
        (processes_running(&marker) == relaunched).then_some(())
    })
    .await;

    // kill -9 of the agent, then the agent again on the same work directory: the checkpointed
    // executor is recovered with its pod, which keeps running once, under the same task.
    agent.kill();
    let agent = c.start_agent("agent-x", AGENT);
    c.keep(agent);
    c.eventually("the survivor's task RUNNING after the agent's restart", WAIT, || async {
        (master_tasks(&c).await.get(&task).map(String::as_str) == Some("TASK_RUNNING"))
            .then_some(())
    })
    .await;
    let p = api.get("survivor").await.expect("survivor");
    assert_eq!(phase(&p), "Running");
    assert_eq!(task_of(&p), task, "the same task, not a relaunch");
    assert_eq!(processes_running(&survivor), 1, "the survivor runs exactly once");
    assert_eq!(processes_running(&marker), relaunched, "the relaunched pods run exactly once");
}

/// Updates the agent has not acknowledged are sent again when the executor re-subscribes: a pod
/// that completes while its agent is down (kill -9) is reported TASK_FINISHED at the master once
/// the agent is back.
#[tokio::test]
async fn an_update_made_while_the_agent_is_down_is_delivered_when_it_comes_back() {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let mut agent = c.start_agent("agent-x", AGENT);
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    let flag = c.dir.path().join("finish-now");
    let script = format!("while [ ! -e {} ]; do sleep 0.1; done; echo finished", flag.display());
    api.create(&PostParams::default(), &native_pod("late", &["/bin/sh", "-c", &script], "Never"))
        .await
        .expect("create");
    let task = c
        .eventually("the pod Running", WAIT, || async {
            let p = api.get("late").await.ok()?;
            (phase(&p) == "Running").then(|| task_of(&p))
        })
        .await;
    c.eventually("its task RUNNING at the master", WAIT, || async {
        (master_tasks(&c).await.get(&task).map(String::as_str) == Some("TASK_RUNNING"))
            .then_some(())
    })
    .await;
    agent.kill();
    std::fs::write(&flag, "").expect("the flag");
    let cmdline = format!("/bin/sh -c {script}");
    c.eventually("the pod's process ended while the agent is down", WAIT, || async {
        (processes_running(&cmdline) == 0).then_some(())
    })
    .await;
    assert_eq!(
        master_tasks(&c).await.get(&task).map(String::as_str),
        Some("TASK_RUNNING"),
        "nothing reached the master while the agent was down"
    );
    let agent = c.start_agent("agent-x", AGENT);
    c.keep(agent);
    c.eventually(
        "TASK_FINISHED at the master, sent again after the re-subscription",
        WAIT,
        || async {
            (master_tasks(&c).await.get(&task).map(String::as_str) == Some("TASK_FINISHED"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(phase(&api.get("late").await.expect("pod")), "Succeeded");
}
