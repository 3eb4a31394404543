//! The Docker runtime against the real engine: exit codes, env, labels,
//! image pull policy, hostPort, shared network namespace, volumes, probes,
//! logs, grace-period stop and removal of what an earlier runtime left.

use std::time::{Duration, Instant};

use km_runtime::lifecycle::Phase;
use km_runtime::runtime::{ContainerRuntime, LogOptions};
use serde_json::json;

use crate::support::*;

const IMAGE: &str = "km-test/busybox:latest";

fn docker_pod(name: &str, restart: &str, containers: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 2, "containers": containers}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runs_with_env_labels_exit_code_and_logs() {
    let env = DockerEnv::new().await;
    let m = env.manager();
    let p = pod(docker_pod(
        "hello",
        "Never",
        json!([{
            "name": "main", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c"], "args": ["echo hello $POD_NS $GREETING; exit 3"],
            "env": [{"name": "GREETING", "value": "hi"},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
        }]),
    ));
    let uid = m.run(&p).expect("run").uid;
    let s =
        wait_pod(&m, &uid, Duration::from_secs(30), "Failed", |s| s.phase == Phase::Failed).await;
    let term = cstatus(&s, "main")
        .state
        .as_ref()
        .and_then(|st| st.terminated.clone())
        .expect("terminated");
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    let out = logs(&m, &uid, "main", LogOptions::default()).await;
    assert_eq!(out, "hello test hi\n");
    // Every container (the sandbox and the app) carries the pod's labels.
    let ids = env.containers();
    assert_eq!(ids.len(), 2, "sandbox + app: {ids:?}");
    for id in &ids {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{index .Config.Labels \"io.km.pod.uid\"}} {{index .Config.Labels \"io.km.pod.name\"}} {{index .Config.Labels \"io.km.pod.namespace\"}}", id])
            .output()
            .expect("docker inspect");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{uid} hello test"));
    }
    m.stop(&uid).await.expect("stop");
    assert!(env.containers().is_empty(), "stop removes every container of the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_missing_image_with_never_pull_is_err_image_never_pull() {
    let env = DockerEnv::new().await;
    let m = env.manager();
    let p = pod(docker_pod(
        "nopull",
        "Always",
        json!([{"name": "c", "image": "km-test/absent:1", "imagePullPolicy": "Never"}]),
    ));
    let uid = m.run(&p).expect("run").uid;
    let s = wait_pod(&m, &uid, Duration::from_secs(30), "ErrImageNeverPull", |s| {
        s.status.container_statuses.iter().flatten().any(|c| {
            c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("ErrImageNeverPull")
        })
    })
    .await;
    let w = cstatus(&s, "c").state.as_ref().and_then(|st| st.waiting.clone()).expect("waiting");
    assert_eq!(
        w.message.as_deref(),
        Some("image \"km-test/absent:1\" is not present and imagePullPolicy is Never")
    );
    assert_eq!(s.phase, Phase::Pending);
    // IfNotPresent tries a pull, which cannot succeed here: ErrImagePull.
    let p = pod(docker_pod(
        "pullfail",
        "Always",
        json!([{"name": "c", "image": "127.0.0.1:1/km-test/absent:1", "imagePullPolicy": "IfNotPresent"}]),
    ));
    let uid2 = m.run(&p).expect("run").uid;
    wait_pod(&m, &uid2, Duration::from_secs(30), "ErrImagePull", |s| {
        s.status.container_statuses.iter().flatten().any(|c| {
            c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("ErrImagePull")
        })
    })
    .await;
    m.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_host_port_shared_netns_volumes_and_readiness() {
    let env = DockerEnv::new().await;
    let m = env.manager();
    let host_port = free_port();
    let host_dir = env.dir.path().join("host");
    std::fs::create_dir_all(&host_dir).expect("host dir");
    let p = pod(json!({
        "metadata": {"name": "web", "namespace": "test"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "shared", "emptyDir": {}},
                        {"name": "out", "hostPath": {"path": host_dir.to_string_lossy()}}],
            "containers": [
                {
                    "name": "web", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "sleep 1; exec httpd -f -p 8080 -h /www"],
                    "ports": [{"containerPort": 8080, "hostPort": host_port}],
                    "resources": {"limits": {"memory": "32Mi", "cpu": "200m"}},
                    "volumeMounts": [{"name": "shared", "mountPath": "/www"}],
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}
                },
                {
                    "name": "writer", "image": IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo from-writer > /www/index.html; sleep 2; wget -q -O /out/fetched http://127.0.0.1:8080/index.html; sleep 1000"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/www"}, {"name": "out", "mountPath": "/out"}]
                }
            ]
        }
    }));
    let uid = m.run(&p).expect("run").uid;
    let s = wait_pod(&m, &uid, Duration::from_secs(30), "web ready", |s| {
        s.status.container_statuses.iter().flatten().any(|c| c.name == "web" && c.ready)
    })
    .await;
    assert!(
        s.status.pod_ip.as_deref().is_some_and(|ip| ip != "127.0.0.1"),
        "a Docker pod has its own IP"
    );
    // hostPort is published on the host.
    let page =
        http_get(&format!("127.0.0.1:{host_port}"), "/index.html").await.expect("GET via hostPort");
    assert!(page.contains("from-writer"), "{page}");
    // The second container reached the first over localhost (one network
    // namespace) and wrote to the hostPath volume.
    let fetched = host_dir.join("fetched");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fetched.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&fetched).unwrap_or_default(), "from-writer\n");
    let memory = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            s.container_ids[0].as_deref().expect("id"),
        ])
        .output()
        .expect("inspect");
    assert_eq!(String::from_utf8_lossy(&memory.stdout).trim(), format!("{} 200000000", 32 << 20));
    // Stop: `sleep` as pid 1 ignores SIGTERM, so the writer is killed after the 1 s grace.
    let started = Instant::now();
    m.stop(&uid).await.expect("stop");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(env.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_restart_policy_and_exec_liveness() {
    let env = DockerEnv::new().await;
    let m = env.manager();
    let p = pod(docker_pod(
        "crash",
        "OnFailure",
        json!([{
            "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
        }]),
    ));
    let uid = m.run(&p).expect("run").uid;
    // The liveness probe fails, the container is stopped (exit 0 on TERM),
    // and OnFailure does not restart a success: the pod Succeeds.
    let s =
        wait_pod(&m, &uid, Duration::from_secs(30), "Succeeded", |s| s.phase == Phase::Succeeded)
            .await;
    assert_eq!(cstatus(&s, "c").restart_count, 0);
    m.stop(&uid).await.expect("stop");

    let p = pod(docker_pod(
        "crash2",
        "OnFailure",
        json!([{"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c", "exit 1"]}]),
    ));
    let uid = m.run(&p).expect("run").uid;
    let s = wait_pod(&m, &uid, Duration::from_secs(30), "a restart", |s| {
        s.status.container_statuses.iter().flatten().any(|c| c.restart_count >= 1)
    })
    .await;
    assert_eq!(s.phase, Phase::Running);
    m.stop(&uid).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_new_runtime_removes_what_an_old_one_left() {
    let env = DockerEnv::new().await;
    let m = env.manager();
    let p = pod(docker_pod(
        "left",
        "Always",
        json!([{"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "1000"]}]),
    ));
    let uid = m.run(&p).expect("run").uid;
    wait_pod(&m, &uid, Duration::from_secs(30), "Running", |s| s.phase == Phase::Running).await;
    assert_eq!(env.containers().len(), 2);
    // A new manager over the same owner (as after kill -9 of km) removes
    // every container of pods it does not run.
    let second = env.manager();
    let owned = env.runtime.list_owned().await.expect("list");
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].key.uid, uid);
    assert_eq!(owned[0].containers.len(), 2);
    assert_eq!(second.remove_orphans().await.expect("remove"), 1);
    assert!(env.containers().is_empty());
    m.stop(&uid).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_restarted_manager_adopts_running_pods() {
    let env = DockerEnv::new().await;
    let p = pod(docker_pod(
        "adopt",
        "Always",
        json!([{"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "1000"]}]),
    ));
    // The first km runs in its own tokio runtime, dropped without stopping
    // anything: its tasks vanish as they would after kill -9.
    let (pod1, dir, owner) = (p.clone(), env.dir.path().join("docker"), env.owner.clone());
    let (uid, id) = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let docker = km_runtime::docker::DockerRuntime::connect(
                km_runtime::docker::DockerConfig::new(dir, owner, TEST_SANDBOX_IMAGE),
            )
            .await
            .expect("docker");
            let first =
                km_runtime::PodManager::new(None, Some(std::sync::Arc::new(docker)), node());
            let uid = first.run(&pod1).expect("run").uid;
            let s = wait_pod(&first, &uid, Duration::from_secs(30), "Running", |s| {
                s.phase == Phase::Running
            })
            .await;
            (uid, s.container_ids[0].clone().expect("id"))
        })
    })
    .join()
    .expect("first km");
    let before = env.containers();
    assert_eq!(before.len(), 2);
    let second = env.manager();
    let uid2 = second.run(&p).expect("run again").uid;
    assert_eq!(uid2, uid);
    let s =
        wait_pod(&second, &uid, Duration::from_secs(30), "Running", |s| s.phase == Phase::Running)
            .await;
    assert_eq!(
        s.container_ids[0].as_deref(),
        Some(id.as_str()),
        "the running container is adopted"
    );
    assert_eq!(cstatus(&s, "c").restart_count, 0);
    assert_eq!(second.remove_orphans().await.expect("orphans"), 0, "an adopted pod is no orphan");
    let mut after = env.containers();
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before, "nothing was recreated");
    second.stop(&uid).await.expect("stop");
    assert!(env.containers().is_empty());
}
