//! `km scheduler` against km apiserver on etcd and km mesos-master with simulated agents:
//! pods created through the API run as Mesos tasks, are bound with their task recorded, fail
//! when their agent is gone, are killed when deleted, survive a kill -9 of the scheduler
//! without being killed or launched twice, and say why when they cannot be placed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::support::cluster::KmCluster;
use crate::support::mesos::MesosMaster;

const WAIT: Duration = Duration::from_secs(90);

fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{ "name": "main", "image": "busybox", "command": ["sleep", "3600"],
            "resources": { "requests": { "cpu": cpu, "memory": "32Mi" } } }],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": "e2e" } },
        "spec": spec,
    }))
    .expect("a pod")
}

async fn create(api: &Api<Pod>, p: Pod) {
    api.create(&PostParams::default(), &p).await.expect("create pod");
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

/// Pods with the label app=e2e that are bound and Running.
async fn running(api: &Api<Pod>) -> Vec<Pod> {
    let list = api.list(&ListParams::default().labels("app=e2e")).await.expect("list pods");
    list.items
        .into_iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() && phase(p) == "Running"
        })
        .collect()
}

/// The master's tasks of the framework: task ID → state.
async fn master_tasks(m: &MesosMaster) -> BTreeMap<String, String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1", m.url()))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "GET_TASKS"}).to_string())
        .send()
        .await
        .expect("GET_TASKS");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("GET_TASKS body"))
        .expect("GET_TASKS json");
    let mut out = BTreeMap::new();
    for list in ["tasks", "completed_tasks", "unreachable_tasks", "orphan_tasks"] {
        for t in v["get_tasks"][list].as_array().into_iter().flatten() {
            let id = t["task_id"]["value"].as_str().unwrap_or_default().to_owned();
            out.insert(id, t["state"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

async fn frameworks(m: &MesosMaster) -> Vec<String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1", m.url()))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "GET_FRAMEWORKS"}).to_string())
        .send()
        .await
        .expect("GET_FRAMEWORKS");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("GET_FRAMEWORKS body"))
        .expect("GET_FRAMEWORKS json");
    v["get_frameworks"]["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["framework_info"]["id"]["value"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn pods_run_through_mesos_bound_with_their_task() {
    let cluster = KmCluster::start(&["--simulate-agents=3"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    for i in 0..20 {
        create(&api, pod(&format!("web-{i}"), "100m", json!({}))).await;
    }
    let pods = cluster
        .eventually("20 pods Running", WAIT, || async {
            let r = running(&api).await;
            (r.len() == 20).then_some(r)
        })
        .await;
    let tasks = master_tasks(&cluster.master).await;
    for p in &pods {
        let task = annotation(p, "k8s.mesosphere.io/taskId").expect("task annotation");
        assert_eq!(tasks.get(task).map(String::as_str), Some("TASK_RUNNING"), "{task}");
        assert!(annotation(p, "k8s.mesosphere.io/slaveId").is_some());
        assert_eq!(
            annotation(p, "k8s.mesosphere.io/bindingHost"),
            p.spec.as_ref().unwrap().node_name.as_deref()
        );
        assert!(
            annotation(p, "k8s.mesosphere.io/executorId")
                .is_some_and(|e| e.ends_with("_k8sm-executor"))
        );
        let scheduled = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True");
        assert!(scheduled, "PodScheduled=True on {:?}: {:?}", p.metadata.name, p.status);
    }
    let hosts: std::collections::BTreeSet<_> =
        pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    // Every agent that offered is a Node with its attributes as labels.
    let nodes: Api<Node> = Api::all(cluster.client());
    let node = nodes.get(hosts.iter().next().unwrap()).await.expect("the node");
    let labels = node.metadata.labels.unwrap_or_default();
    assert!(labels.keys().any(|k| k.starts_with("k8s.mesosphere.io/attribute-")), "{labels:?}");
    assert!(
        node.metadata.annotations.unwrap_or_default().contains_key("k8s.mesosphere.io/agentId")
    );
    cluster
        .eventually("20 bindings counted in /metrics", WAIT, || async {
            (cluster.metric("km_scheduler_pods_bound_total") == Some(20.0)).then_some(())
        })
        .await;
}

#[tokio::test]
async fn deleting_a_pod_kills_its_task_and_completes_the_deletion() {
    let cluster = KmCluster::start(&["--simulate-agents=1"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    create(&api, pod("doomed", "100m", json!({}))).await;
    let p = cluster
        .eventually("the pod Running", WAIT, || async { running(&api).await.into_iter().next() })
        .await;
    let task = annotation(&p, "k8s.mesosphere.io/taskId").unwrap().to_owned();
    api.delete("doomed", &DeleteParams::default()).await.expect("delete");
    cluster
        .eventually("the pod object gone", WAIT, || async {
            api.get_opt("doomed").await.expect("get").is_none().then_some(())
        })
        .await;
    let state = master_tasks(&cluster.master).await.get(&task).cloned();
    assert_eq!(state.as_deref(), Some("TASK_KILLED"));
}

#[tokio::test]
async fn a_pod_whose_agent_is_gone_fails_with_the_reason() {
    let cluster = KmCluster::start(&["--simulate-agents=1"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    create(&api, pod("victim", "100m", json!({}))).await;
    let p = cluster
        .eventually("the pod Running", WAIT, || async { running(&api).await.into_iter().next() })
        .await;
    let agent = annotation(&p, "k8s.mesosphere.io/slaveId").unwrap().to_owned();
    let gone =
        json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": agent}}});
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1", cluster.master.url()))
        .header("Content-Type", "application/json")
        .body(gone.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let failed = cluster
        .eventually("the pod Failed", WAIT, || async {
            let p = api.get("victim").await.ok()?;
            (phase(&p) == "Failed").then_some(p)
        })
        .await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("AgentGoneByOperator"));
    assert!(status.message.unwrap_or_default().contains("TASK_GONE_BY_OPERATOR"));
}

#[tokio::test]
async fn a_scheduler_killed_and_restarted_kills_and_launches_nothing_twice() {
    let mut cluster = KmCluster::start(&["--simulate-agents=2"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    for i in 0..30 {
        create(&api, pod(&format!("keep-{i}"), "100m", json!({}))).await;
    }
    let before = cluster
        .eventually("30 pods Running", WAIT, || async {
            let r = running(&api).await;
            (r.len() == 30).then_some(r)
        })
        .await;
    let framework = frameworks(&cluster.master).await;
    assert_eq!(framework.len(), 1);
    cluster.kill_scheduler();
    // Pods created while no scheduler runs.
    for i in 0..5 {
        create(&api, pod(&format!("late-{i}"), "100m", json!({}))).await;
    }
    cluster.start_scheduler();
    let after = cluster
        .eventually("35 pods Running", WAIT, || async {
            let r = running(&api).await;
            (r.len() == 35).then_some(r)
        })
        .await;
    let task_of = |p: &Pod| annotation(p, "k8s.mesosphere.io/taskId").unwrap().to_owned();
    for p in &before {
        let now = after.iter().find(|a| a.metadata.name == p.metadata.name).expect("still there");
        assert_eq!(task_of(p), task_of(now), "{:?} relaunched", p.metadata.name);
    }
    let tasks = master_tasks(&cluster.master).await;
    let live: Vec<_> = tasks.iter().filter(|(_, s)| *s == "TASK_RUNNING").collect();
    assert_eq!(live.len(), 35, "exactly one task per pod: {tasks:?}");
    assert!(!tasks.values().any(|s| s == "TASK_KILLED"), "nothing killed: {tasks:?}");
    assert_eq!(frameworks(&cluster.master).await, framework, "re-subscribed as the same framework");
}

#[tokio::test]
async fn pods_that_cannot_fit_say_why_and_kubectl_describe_shows_it() {
    let cluster = KmCluster::start(&["--simulate-agents=2"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let port80 = json!({"containers": [{"name": "main", "image": "busybox",
        "ports": [{"containerPort": 80, "hostPort": 80}],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]});
    create(&api, pod("port80", "100m", port80)).await;
    create(&api, pod("huge", "64", json!({}))).await;
    create(&api, pod("kata", "100m", json!({"runtimeClassName": "kata"}))).await;
    create(&api, pod("fine", "100m", json!({}))).await;
    let reason_of = |name: &'static str| {
        let api = api.clone();
        async move {
            let p = api.get(name).await.ok()?;
            let c = p
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
            assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
            c.message
        }
    };
    let m80 = cluster.eventually("port80 reported", WAIT, || reason_of("port80")).await;
    assert!(m80.contains("host port 80") && m80.contains("can never fit"), "{m80}");
    let huge = cluster.eventually("huge reported", WAIT, || reason_of("huge")).await;
    assert!(huge.contains("asks cpus 64, the largest matching agent has 4"), "{huge}");
    let kata = cluster.eventually("kata reported", WAIT, || reason_of("kata")).await;
    assert!(kata.contains("unknown runtime class \"kata\""), "{kata}");
    cluster
        .eventually("the valid pod Running", WAIT, || async {
            running(&api).await.into_iter().find(|p| p.metadata.name.as_deref() == Some("fine"))
        })
        .await;
    // What a user sees.
    let describe = cluster
        .eventually("kubectl describe shows the event", WAIT, || async {
            let out = Command::new("kubectl")
                .args(["--server", &cluster.api.url(), "describe", "pod", "port80"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("FailedScheduling").then_some(text)
        })
        .await;
    assert!(describe.contains("host port 80"), "{describe}");
}

#[tokio::test]
async fn declined_offers_stay_away_until_a_pod_revives_them() {
    let cluster = KmCluster::start(&["--simulate-agents=1"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    // Nothing to run: the offer is declined and offers suppressed.
    cluster
        .eventually("the first decline", WAIT, || async {
            (cluster.metric("km_scheduler_offers_declined_total")? >= 1.0).then_some(())
        })
        .await;
    let received = cluster.metric("km_scheduler_offers_received_total").unwrap();
    // A pod: REVIVE brings the offer back at once (the 5 s filter would otherwise hold it).
    create(&api, pod("revived", "100m", json!({}))).await;
    cluster
        .eventually("the pod Running", WAIT, || async { running(&api).await.into_iter().next() })
        .await;
    let after = cluster.metric("km_scheduler_offers_received_total").unwrap();
    assert!(after - received <= 2.0, "offers kept coming while refused: {received} → {after}");
}

#[tokio::test]
async fn debug_endpoints_and_metrics() {
    let cluster = KmCluster::start(&["--simulate-agents=1"], &[]);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    create(&api, pod("toolarge", "16", json!({}))).await;
    let queue = cluster
        .eventually("the pod in the queue view", WAIT, || async {
            let (code, body) = cluster.scheduler_get("/debug/scheduler/podqueue");
            (code == 200 && body.contains("default/toolarge") && body.contains("insufficient cpus"))
                .then_some(body)
        })
        .await;
    assert!(queue.contains("failures"), "{queue}");
    let (code, store) = cluster.scheduler_get("/debug/scheduler/podstore");
    assert_eq!(code, 200);
    assert!(store.contains("default/toolarge\t") && store.contains("waiting"), "{store}");
    assert_eq!(cluster.scheduler_get("/debug/registry/tasks").0, 200);
    assert_eq!(cluster.scheduler_post("/debug/actions/requestExplicit").0, 204);
    assert_eq!(cluster.scheduler_post("/debug/actions/requestImplicit").0, 204);
    let (code, body) = cluster.scheduler_post("/debug/actions/kamikaze");
    assert_eq!(code, 404, "{body}");
    // /metrics lags the loop by a fraction of a second.
    let metrics = cluster
        .eventually("the queue in /metrics", WAIT, || async {
            let (code, text) = cluster.scheduler_get("/metrics");
            (code == 200 && text.contains("km_scheduler_queue_pods 1")).then_some(text)
        })
        .await;
    for name in [
        "km_scheduler_queue_pods 1",
        "km_scheduler_offers_received_total",
        "km_scheduler_launch_latency_seconds_bucket",
        "km_scheduler_pods_scheduled_per_second",
        "km_scheduler_subscribed 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert_eq!(cluster.scheduler_get("/healthz"), (200, "ok".to_owned()));
}

#[test]
fn bad_flags_and_unreachable_masters_are_clear() {
    let out = Command::new(crate::support::km_bin())
        .args(["scheduler", "--api-servers=http://127.0.0.1:1", "--mesos-master=zk://z:2181/mesos"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ZooKeeper"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("s.ini");
    std::fs::write(&ini, "[scheduler]\noffer-ttl = soon\n").unwrap();
    let out = Command::new(crate::support::km_bin())
        .args(["scheduler", "--api-servers=http://127.0.0.1:1"])
        .arg(format!("--scheduler-config={}", ini.display()))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("offer-ttl"), "{err}");
}

/// `--ha`: a standby takes over when the leader hands over (SIGUSR1) and when it is killed
/// with kill -9, re-subscribing as the same framework and killing nothing; a scheduler of
/// another executor configuration refuses to stand by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_standby_takes_over_on_sigusr1_and_after_kill_9_and_kills_nothing() {
    use crate::support::free_port;
    use crate::support::process::wait_until;

    let ha = ["--ha", "--ha-lease-ttl=2s"];
    let mut cluster = KmCluster::start(&["--simulate-agents=2"], &ha);
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let leads = |log: &str| log.matches("elected: leading").count();
    let first_log = cluster.scheduler.as_ref().expect("first scheduler").log_path().to_owned();
    let first_log = move || std::fs::read_to_string(&first_log).unwrap_or_default();
    cluster
        .eventually("the first scheduler to lead", WAIT, || async {
            (leads(&first_log()) == 1).then_some(())
        })
        .await;
    for i in 0..10 {
        create(&api, pod(&format!("ha-{i}"), "100m", json!({}))).await;
    }
    cluster
        .eventually("10 pods Running", WAIT, || async {
            (running(&api).await.len() == 10).then_some(())
        })
        .await;
    let framework = frameworks(&cluster.master).await;
    assert_eq!(framework.len(), 1);

    // A standby: healthy, but it leaves the work to the leader.
    let standby_port = free_port();
    let mut standby = cluster.spawn_scheduler(standby_port, &[]);
    let standing = wait_until(WAIT, || {
        assert!(standby.is_running(), "the standby exited:\n{}", standby.log());
        standby.log().contains("standing by")
    });
    assert!(standing, "the standby never stood by:\n{}", standby.log());
    let (code, body) = crate::support::apiserver::http(standby_port, "GET", "/healthz", None)
        .expect("the standby's /healthz");
    assert_eq!((code, body.trim()), (200, "ok (standby)"));
    let (code, _) =
        crate::support::apiserver::http(standby_port, "GET", "/debug/registry/tasks", None)
            .expect("the standby's debug view");
    assert_eq!(code, 503, "a standby has no registry to show");

    // Another executor configuration cannot stand behind this leader.
    let mut odd = cluster.spawn_scheduler(free_port(), &["--executor-log=debug"]);
    let status = odd.wait_timeout(WAIT).expect("a mismatched scheduler exits");
    assert!(!status.success());
    assert!(odd.log().contains("refusing to lead"), "{}", odd.log());

    // SIGUSR1: the leader hands over; the standby leads and launches new pods.
    cluster.scheduler.as_ref().expect("leader").signal("USR1");
    let took_over = wait_until(WAIT, || leads(&standby.log()) == 1);
    assert!(took_over, "the standby did not take over:\n{}", standby.log());
    let stood_by = wait_until(WAIT, || first_log().matches("standing by").count() >= 1);
    assert!(stood_by, "the old leader did not stand by:\n{}", first_log());
    for i in 10..15 {
        create(&api, pod(&format!("ha-{i}"), "100m", json!({}))).await;
    }
    cluster
        .eventually("15 pods Running after the handover", WAIT, || async {
            (running(&api).await.len() == 15).then_some(())
        })
        .await;

    // kill -9 of the new leader: the first scheduler takes over again once the lease runs out.
    standby.kill();
    let back = wait_until(WAIT, || leads(&first_log()) == 2);
    assert!(back, "the first scheduler did not take over after kill -9:\n{}", first_log());
    for i in 15..20 {
        create(&api, pod(&format!("ha-{i}"), "100m", json!({}))).await;
    }
    let after = cluster
        .eventually("20 pods Running after kill -9 of the leader", WAIT, || async {
            let r = running(&api).await;
            (r.len() == 20).then_some(r)
        })
        .await;
    let tasks = master_tasks(&cluster.master).await;
    let live: Vec<_> = tasks.iter().filter(|(_, s)| *s == "TASK_RUNNING").collect();
    assert_eq!(live.len(), 20, "exactly one task per pod: {tasks:?}");
    assert!(!tasks.values().any(|s| s == "TASK_KILLED"), "nothing killed: {tasks:?}");
    assert_eq!(after.len(), 20);
    assert_eq!(frameworks(&cluster.master).await, framework, "one framework all along");
}
