//! km controller-manager against km apiserver on etcd: Deployments roll out, restart, undo and
//! scale with kubectl; the garbage collector removes what a deleted owner leaves (or orphans it
//! when asked); a standby takes over from a killed leader; and, with km scheduler, a Mesos agent
//! and km executor, a Deployment's pods run through Mesos.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::support::apiserver::{ApiServer, http};
use crate::support::cluster::KmCluster;
use crate::support::etcd::Etcd;
use crate::support::process::{Proc, wait_until};
use crate::support::{free_port, km_bin, kubectl, kubectls};

const WAIT: Duration = Duration::from_secs(90);

/// `km controller-manager` for `api`, healthy.
pub(crate) fn controller_manager(
    api: &str,
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(km_bin());
    cmd.arg("controller-manager")
        .arg(format!("--master={api}"))
        .arg(format!("--port={port}"))
        .args(extra)
        .env("KM_LOG", "info,km_controller_manager=debug");
    let mut proc = Proc::spawn("km controller-manager", cmd, &dir.join(format!("{name}.log")));
    let up = wait_until(Duration::from_secs(30), || {
        assert!(proc.is_running(), "km controller-manager exited; its log:\n{}", proc.log());
        http(port, "GET", "/healthz", None).is_some_and(|(c, _)| c == 200)
    });
    assert!(up, "km controller-manager not healthy; its log:\n{}", proc.log());
    (proc, port)
}

/// Plays the kubelet for pods that no node runs: every pod is marked Running and Ready (and
/// gracefully deleted pods are removed), until the returned guard is dropped.
fn fake_kubelet(client: kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Pod> = Api::all(client.clone());
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for p in list.items {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    if p.metadata.deletion_timestamp.is_some() {
                        let _ = pods
                            .delete(&name, &kube::api::DeleteParams::default().grace_period(0))
                            .await;
                        continue;
                    }
                    let ready =
                        p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if !ready {
                        let status = json!({ "status": { "phase": "Running", "podIP": "10.1.0.1",
                            "conditions": [{ "type": "Ready", "status": "True",
                                "lastTransitionTime": "2026-01-01T00:00:00Z" }] } });
                        let _ = pods
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

pub(crate) async fn eventually<T, F, Fut>(what: &str, logs: &dyn Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 } },
            "template": { "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": "km-test/busybox:latest",
                    "command": ["sleep", "3600"] }] } },
        },
    }))
    .expect("deployment")
}

/// Pods not being deleted, by their pod-template-hash.
async fn live_pods(api: &Api<Pod>, app: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let hash = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned()
            .unwrap_or_default();
        *out.entry(hash).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_restart_undo_scale_and_are_collected_with_kubectl() {
    let etcd = Etcd::start();
    let api_server = ApiServer::start(&etcd);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cm, _) = controller_manager(&api_server.url(), dir.path(), "cm", &[]);
    let logs = || cm.log();
    let client = api_server.client();
    let kubelet = fake_kubelet(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment("web", 4)).await.expect("create");
    let first = eventually("4 pods of one template", &logs, || async {
        let live = live_pods(&pods, "web").await;
        (live.len() == 1 && live.values().sum::<usize>() == 4)
            .then(|| live.keys().next().cloned().unwrap_or_default())
    })
    .await;
    let server = api_server.url();
    let ks = kubectls();
    let newest = ks.last().expect("a kubectl").clone();
    for k in &ks {
        let (ok, out) =
            kubectl(k, &server, &["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(
            ok && out.contains("successfully rolled out"),
            "{}: {out}\n{}",
            k.display(),
            logs()
        );
    }

    // A rolling restart: never more than replicas + maxSurge pods, never fewer than
    // replicas − maxUnavailable.
    let (ok, out) = kubectl(&newest, &server, &["rollout", "restart", "deployment/web"]);
    assert!(ok, "{out}");
    let second = eventually("every pod replaced", &logs, || async {
        let live = live_pods(&pods, "web").await;
        let total: usize = live.values().sum();
        assert!(total <= 5, "{total} pods: more than the surge allows ({live:?})");
        assert!(total >= 3, "{total} pods: fewer than maxUnavailable allows ({live:?})");
        (live.len() == 1 && total == 4 && !live.contains_key(&first))
            .then(|| live.keys().next().cloned().unwrap_or_default())
    })
    .await;
    let (ok, out) =
        kubectl(&newest, &server, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&newest, &server, &["rollout", "history", "deployment/web"]);
    assert!(ok && out.contains('1') && out.contains('2'), "{out}");

    // Undo goes back to the first template (the ReplicaSet of revision 1, as revision 3).
    let (ok, out) = kubectl(&newest, &server, &["rollout", "undo", "deployment/web"]);
    assert!(ok, "{out}\n{}", logs());
    eventually("the first template back", &logs, || async {
        let live = live_pods(&pods, "web").await;
        (live.len() == 1 && live.get(&first) == Some(&4)).then_some(())
    })
    .await;
    let d = deployments.get("web").await.expect("deployment");
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned();
    assert_eq!(revision.as_deref(), Some("3"));
    assert!(!second.is_empty());

    let (ok, out) = kubectl(&newest, &server, &["scale", "deployment/web", "--replicas=2"]);
    assert!(ok, "{out}");
    eventually("2 pods", &logs, || async {
        (live_pods(&pods, "web").await.get(&first) == Some(&2)).then_some(())
    })
    .await;
    eventually("the status says 2", &logs, || async {
        let s = deployments.get_status("web").await.ok()?.status?;
        ((s.replicas, s.available_replicas, s.updated_replicas) == (Some(2), Some(2), Some(2)))
            .then_some(())
    })
    .await;

    // kubectl delete: the ReplicaSets and their pods follow (background propagation).
    let (ok, out) = kubectl(&newest, &server, &["delete", "deployment", "web"]);
    assert!(ok, "{out}");
    eventually("the ReplicaSets and pods collected", &logs, || async {
        let rs = sets.list(&ListParams::default()).await.ok()?.items;
        (rs.is_empty() && live_pods(&pods, "web").await.is_empty()).then_some(())
    })
    .await;

    // Foreground: the Deployment stays (being deleted) until its ReplicaSets and pods are gone.
    deployments.create(&PostParams::default(), &deployment("fg", 2)).await.expect("create fg");
    eventually("2 pods of fg", &logs, || async {
        (live_pods(&pods, "fg").await.values().sum::<usize>() == 2).then_some(())
    })
    .await;
    let (ok, out) = kubectl(
        &newest,
        &server,
        &["delete", "deployment", "fg", "--cascade=foreground", "--wait=false"],
    );
    assert!(ok, "{out}");
    let held = deployments.get_opt("fg").await.expect("get fg");
    if let Some(d) = held {
        // Either still held by its finalizer, or already through it: never deleted before.
        let finalizers = d.metadata.finalizers.unwrap_or_default();
        assert!(finalizers.iter().any(|f| f == "foregroundDeletion"), "{finalizers:?}");
        assert!(d.metadata.deletion_timestamp.is_some());
    }
    eventually("fg, its ReplicaSet and its pods gone", &logs, || async {
        let d = deployments.get_opt("fg").await.ok()?;
        let rs = sets.list(&ListParams::default()).await.ok()?.items;
        let left = pods.list(&ListParams::default().labels("app=fg")).await.ok()?.items;
        (d.is_none() && rs.is_empty() && left.is_empty()).then_some(())
    })
    .await;

    // Orphaning: a ReplicationController deleted with --cascade=orphan leaves its pods, freed.
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": { "name": "legacy", "namespace": "default" },
        "spec": { "replicas": 2, "selector": { "app": "legacy" },
            "template": { "metadata": { "labels": { "app": "legacy" } },
                "spec": { "containers": [{ "name": "main", "image": "km-test/busybox:latest" }] } } },
    }))
    .expect("rc");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    rcs.create(&PostParams::default(), &rc).await.expect("create rc");
    eventually("2 pods of the RC", &logs, || async {
        (live_pods(&pods, "legacy").await.values().sum::<usize>() == 2).then_some(())
    })
    .await;
    let (ok, out) = kubectl(&newest, &server, &["delete", "rc", "legacy", "--cascade=orphan"]);
    assert!(ok, "{out}");
    eventually("the RC gone, its pods freed", &logs, || async {
        let gone = rcs.get_opt("legacy").await.ok()?.is_none();
        let list = pods.list(&ListParams::default().labels("app=legacy")).await.ok()?.items;
        let freed = list.len() == 2
            && list.iter().all(|p| p.metadata.owner_references.as_ref().is_none_or(Vec::is_empty));
        (gone && freed).then_some(())
    })
    .await;

    // Deleting a namespace deletes what is in it, then the namespace.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns =
        serde_json::from_value(json!({ "metadata": { "name": "scratch" } })).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("create the namespace");
    let mut scratch = deployment("tmp", 2);
    scratch.metadata.namespace = Some("scratch".into());
    Api::<Deployment>::namespaced(client.clone(), "scratch")
        .create(&PostParams::default(), &scratch)
        .await
        .expect("create in scratch");
    let cm = serde_json::from_value(json!({ "metadata": { "name": "cm" }, "data": { "a": "b" } }))
        .expect("configmap");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "scratch")
        .create(&PostParams::default(), &cm)
        .await
        .expect("create a configmap");
    let scratch_pods: Api<Pod> = Api::namespaced(client.clone(), "scratch");
    eventually("2 pods in scratch", &logs, || async {
        (live_pods(&scratch_pods, "tmp").await.values().sum::<usize>() == 2).then_some(())
    })
    .await;
    let (ok, out) = kubectl(&newest, &server, &["delete", "namespace", "scratch", "--wait=false"]);
    assert!(ok, "{out}");
    eventually("the namespace and its contents gone", &logs, || async {
        let gone = namespaces.get_opt("scratch").await.ok()?.is_none();
        let left = scratch_pods.list(&ListParams::default()).await.ok()?.items.len()
            + Api::<Deployment>::namespaced(client.clone(), "scratch")
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
        (gone && left == 0).then_some(())
    })
    .await;
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_without_duplicate_pods() {
    let etcd = Etcd::start();
    let api_server = ApiServer::start(&etcd);
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = [
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let (mut leader, leader_port) =
        controller_manager(&api_server.url(), dir.path(), "cm-1", &fast);
    let leads = |port: u16| {
        http(port, "GET", "/metrics", None)
            .is_some_and(|(_, m)| m.lines().any(|l| l == "km_controller_manager_leader 1"))
    };
    assert!(wait_until(WAIT, || leads(leader_port)), "the first one leads\n{}", leader.log());
    let (standby, standby_port) = controller_manager(&api_server.url(), dir.path(), "cm-2", &fast);
    let (leader_log, standby_log) = (leader.log_path().to_owned(), standby.log_path().to_owned());
    let logs = || {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("--- cm-1\n{}\n--- cm-2\n{}", read(&leader_log), read(&standby_log))
    };
    assert!(!leads(standby_port), "only one leads");
    let client = api_server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment("ha", 5)).await.expect("create");
    eventually("5 pods", &logs, || async {
        (live_pods(&pods, "ha").await.values().sum::<usize>() == 5).then_some(())
    })
    .await;
    leader.kill();
    assert!(wait_until(WAIT, || leads(standby_port)), "the standby takes over\n{}", logs());
    // The new leader manages the same Deployment: a scale-up lands, and no pod is duplicated.
    // Every pod created from here on is seen on a watch from the current revision.
    let from = pods
        .list_metadata(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let mut watch = Box::pin(pods.watch(&WatchParams::default(), &from).await.expect("watch pods"));
    deployments
        .patch("ha", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "replicas": 7 } })))
        .await
        .expect("scale");
    eventually("7 pods", &logs, || async {
        (live_pods(&pods, "ha").await.values().sum::<usize>() == 7).then_some(())
    })
    .await;
    // The ReplicaSet controller reports, for the scaled generation, the 7 pods it planned from:
    // its cache has all of them, so it has nothing left to create.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    eventually("the ReplicaSet's status to count 7 pods", &logs, || async {
        let list = replica_sets.list(&ListParams::default().labels("app=ha")).await.ok()?;
        list.items
            .iter()
            .any(|rs| {
                let status = rs.status.as_ref();
                rs.spec.replicas == Some(7)
                    && status.is_some_and(|s| s.replicas == 7)
                    && status.and_then(|s| s.observed_generation) == rs.metadata.generation
            })
            .then_some(())
    })
    .await;
    // A marker pod written now comes after every pod created so far in the watch, which delivers
    // in revision order: up to it, exactly the two pods of the scale-up were created.
    let marker: Pod = serde_json::from_value(json!({
        "metadata": { "name": "ha-marker" },
        "spec": { "containers": [{ "name": "main", "image": "none" }] },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &marker).await.expect("create the marker pod");
    let mut created = BTreeSet::new();
    loop {
        let event = tokio::time::timeout(WAIT, watch.try_next())
            .await
            .expect("the marker pod on the watch in time")
            .expect("the watch")
            .expect("the watch goes on");
        let WatchEvent::Added(pod) = event else { continue };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name == "ha-marker" {
            break;
        }
        if pod.metadata.labels.as_ref().and_then(|l| l.get("app")).is_some_and(|a| a == "ha") {
            created.insert(name);
        }
    }
    assert_eq!(created.len(), 2, "pods created for the scale-up: {created:?}\n{}", logs());
    assert_eq!(live_pods(&pods, "ha").await.values().sum::<usize>(), 7, "{}", logs());
    drop(standby);
}

/// The whole path of issue "km executor": a Deployment's pods run through km scheduler, a Mesos
/// agent and km executor; `kubectl logs` shows their output; deleting the Deployment kills
/// their tasks and ends their processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_pods_run_through_mesos_and_go_with_it() {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let agent = c.start_agent("agent-d", "cpus:4;mem:4096;disk:10000;ports:[31000-31100]");
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            cm.log(),
            crate::support::cluster::tail(&c.scheduler_log(), 40)
        )
    };
    let client = c.client();
    let marker = format!("hello-from-deployment-{}", std::process::id());
    // Each replica serves its name on the host port mapped to its container port 8080 (read
    // from the pod's annotation); its document root's name is this run's own, to count its
    // processes by.
    let conf = format!("www-km-e2e-{}", std::process::id());
    let mut d = deployment("hello", 2);
    let spec = d.spec.template.spec.as_mut().expect("pod spec");
    spec.runtime_class_name = Some("native".into());
    spec.termination_grace_period_seconds = Some(1);
    let script = format!(
        "echo {marker}; mkdir -p {conf} && echo $POD_NAME > {conf}/index.html && exec busybox httpd -f -p $PORT -h {conf}"
    );
    spec.containers[0].command = Some(vec!["/bin/sh".into(), "-c".into(), script]);
    spec.containers[0].env = Some(
        serde_json::from_value(json!([
            { "name": "PORT", "valueFrom": { "fieldRef": { "fieldPath": "metadata.annotations['k8s.mesosphere.io/port_TCP_8080']" } } },
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        ]))
        .expect("env"),
    );
    spec.containers[0].ports = Some(
        serde_json::from_value(json!([{ "name": "http", "containerPort": 8080 }])).expect("ports"),
    );
    spec.containers[0].resources = Some(
        serde_json::from_value(json!({ "requests": { "cpu": "100m", "memory": "32Mi" } }))
            .expect("resources"),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &d).await.expect("create");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": { "name": "hello", "namespace": "default" },
        "spec": { "selector": { "app": "hello" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
    }))
    .expect("service");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the service");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = eventually("2 pods Running through Mesos", &logs, || async {
        let list = pods.list(&ListParams::default().labels("app=hello")).await.ok()?.items;
        let running: Vec<String> = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await;
    let server = c.api.url();
    let k = kubectls().last().cloned().expect("a kubectl");
    for name in &running {
        let (ok, out) = kubectl(&k, &server, &["logs", name]);
        assert!(ok && out.contains(&marker), "{name}: {out}");
    }
    let (ok, out) =
        kubectl(&k, &server, &["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(ok, "{out}\n{}", logs());
    // The Service's endpoints are the replicas' HostIP:HostPort, and answer on the host.
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), "default");
    let addresses = eventually("2 endpoints", &logs, || async {
        let e = endpoints.get_opt("hello").await.ok()??;
        let mut out = Vec::new();
        for s in e.subsets.unwrap_or_default() {
            let port = s.ports.as_ref()?.first()?.port;
            out.extend(s.addresses.unwrap_or_default().into_iter().map(|a| (a.ip, port)));
        }
        (out.len() == 2).then_some(out)
    })
    .await;
    let mut answered = Vec::new();
    for (host, port) in &addresses {
        assert_eq!(host, "127.0.0.1");
        let port = u16::try_from(*port).expect("a port");
        let (code, body) = http(port, "GET", "/index.html", None).unwrap_or_default();
        assert_eq!(code, 200, "{host}:{port}: {body}");
        answered.push(body.trim().to_owned());
    }
    answered.sort();
    let mut names = running.clone();
    names.sort();
    assert_eq!(answered, names, "each endpoint is one replica");
    let (ok, out) = kubectl(&k, &server, &["delete", "deployment", "hello"]);
    assert!(ok, "{out}");
    eventually("the pods gone and their processes ended", &logs, || async {
        let left = pods.list(&ListParams::default().labels("app=hello")).await.ok()?.items;
        let processes = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).replace('\0', " ").trim().ends_with(&conf)
                })
            })
            .count();
        (left.is_empty() && processes == 0).then_some(())
    })
    .await;
    // Their tasks were killed, not lost.
    let tasks = eventually("the tasks KILLED at the master", &logs, || async {
        let body = json!({ "type": "GET_TASKS" }).to_string();
        let (_, out) = http(c.master.port, "POST", "/api/v1", Some(("application/json", &body)))?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let states: Vec<String> = ["tasks", "completed_tasks"]
            .iter()
            .flat_map(|k| v["get_tasks"][*k].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["state"].as_str().map(str::to_owned))
            .collect();
        (states.len() >= 2 && states.iter().all(|s| s == "TASK_KILLED")).then_some(states)
    })
    .await;
    assert!(tasks.iter().all(|s| s == "TASK_KILLED"), "{tasks:?}");
}

/// Node lifecycle with `--cloud-provider=mesos`: when the host of an agent dies (agent and
/// executor killed), its Node turns NotReady with the reason; once the master forgets the agent
/// (marked gone), the Node goes and the Deployment's pod is replaced on the other agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_their_agents_and_pods_of_a_lost_agent_are_replaced() {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let resources = "cpus:2;mem:2048;disk:10000;ports:[31000-31100]";
    let mut agents = BTreeMap::new();
    for name in ["agent-a", "agent-b"] {
        agents.insert(name.to_owned(), c.start_agent(name, resources));
    }
    let conf = c.dir.path().join("mesos-cloud.conf");
    std::fs::write(
        &conf,
        format!(
            "[mesos-cloud]\nmesos-master = 127.0.0.1:{}\nstate-cache-ttl = 200ms\n",
            c.master.port
        ),
    )
    .expect("write mesos-cloud.conf");
    let (cm, _) = controller_manager(
        &c.api.url(),
        c.dir.path(),
        "cm",
        &[
            "--cloud-provider=mesos",
            &format!("--cloud-config={}", conf.display()),
            "--node-monitor-grace-period=2s",
        ],
    );
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            cm.log(),
            crate::support::cluster::tail(&c.scheduler_log(), 40)
        )
    };
    let client = c.client();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let ready = |n: &k8s_openapi::api::core::v1::Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
    };
    eventually("both agents' Nodes Ready", &logs, || async {
        let mut all = Vec::new();
        for name in ["agent-a", "agent-b"] {
            all.push(ready(&nodes.get_opt(name).await.ok()??)?.0 == "True");
        }
        all.iter().all(|r| *r).then_some(())
    })
    .await;
    let mut d = deployment("survivor", 1);
    let spec = d.spec.template.spec.as_mut().expect("pod spec");
    spec.runtime_class_name = Some("native".into());
    spec.termination_grace_period_seconds = Some(1);
    spec.containers[0].command = Some(vec!["/bin/sleep".into(), "3600".into()]);
    spec.containers[0].resources = Some(
        serde_json::from_value(json!({ "requests": { "cpu": "100m", "memory": "32Mi" } }))
            .expect("resources"),
    );
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running_on = || async {
        let list = pods.list(&ListParams::default().labels("app=survivor")).await.ok()?.items;
        list.iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .and_then(|p| Some((p.metadata.name.clone()?, p.spec.as_ref()?.node_name.clone()?)))
    };
    let (first, host) = eventually("the pod Running", &logs, running_on).await;
    let other = if host == "agent-a" { "agent-b" } else { "agent-a" };

    // The host dies: its agent and its executors.
    let sandboxes = c.dir.path().join(format!("agent-{host}"));
    for pid in c.executor_pids() {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if cwd.starts_with(&sandboxes) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    agents.get_mut(&host).expect("agent").kill();
    eventually("its Node NotReady", &logs, || async {
        let (status, reason) = ready(&nodes.get_opt(&host).await.ok()??)?;
        (status == "False" && reason == "AgentDisconnected").then_some(())
    })
    .await;

    // The master forgets the agent: the Node goes, the pod is replaced on the other agent.
    let node = nodes.get(&host).await.expect("node");
    let agent_id = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("k8s.mesosphere.io/agentId"))
        .cloned()
        .expect("agent id");
    let body = json!({ "type": "MARK_AGENT_GONE", "mark_agent_gone": { "agent_id": { "value": agent_id } } }).to_string();
    let (code, out) = http(c.master.port, "POST", "/api/v1", Some(("application/json", &body)))
        .unwrap_or_default();
    assert!((200..300).contains(&code), "MARK_AGENT_GONE: {code} {out}");
    eventually("the Node deleted", &logs, || async {
        nodes.get_opt(&host).await.ok()?.is_none().then_some(())
    })
    .await;
    let (second, on) = eventually("a replacement Running on the other agent", &logs, || async {
        running_on().await.filter(|(name, _)| *name != first)
    })
    .await;
    assert_eq!(on, other, "{second} runs on {on}");
}

/// A Deployment of 50 on simulated Mesos agents through km scheduler: all 50 Running, then a
/// `kubectl rollout restart` that never leaves more than maxUnavailable (25%: 12) missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_replicas_run_on_simulated_agents_and_restart_within_max_unavailable() {
    let c = KmCluster::start(
        &["--simulate-agents=5", "--simulate-agent-resources=cpus:8;mem:16384;ports:[31000-32000]"],
        &[],
    );
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            cm.log(),
            crate::support::cluster::tail(&c.scheduler_log(), 40)
        )
    };
    let client = c.client();
    let mut d = deployment("fifty", 50);
    d.spec.strategy =
        Some(serde_json::from_value(json!({ "type": "RollingUpdate" })).expect("strategy"));
    d.spec.template.spec.as_mut().expect("pod spec").containers[0].resources = Some(
        serde_json::from_value(json!({ "requests": { "cpu": "100m", "memory": "64Mi" } }))
            .expect("resources"),
    );
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ready_by_hash = || async {
        let list = pods
            .list(&ListParams::default().labels("app=fifty"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for p in list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                let hash = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("pod-template-hash"))
                    .cloned()
                    .unwrap_or_default();
                *out.entry(hash).or_default() += 1;
            }
        }
        out
    };
    let first = eventually("50 pods Running and Ready", &logs, || async {
        let r = ready_by_hash().await;
        (r.len() == 1 && r.values().sum::<usize>() == 50)
            .then(|| r.keys().next().cloned().unwrap_or_default())
    })
    .await;
    let k = kubectls().last().cloned().expect("a kubectl");
    let (ok, out) = kubectl(&k, &c.api.url(), &["rollout", "restart", "deployment/fifty"]);
    assert!(ok, "{out}");
    eventually("every pod replaced", &logs, || async {
        let r = ready_by_hash().await;
        let ready: usize = r.values().sum();
        assert!(ready >= 50 - 12, "only {ready} pods Ready during the restart ({r:?})\n{}", logs());
        (ready == 50 && r.len() == 1 && !r.contains_key(&first)).then_some(())
    })
    .await;
}

/// A Job through Mesos: 3 completions, 2 at a time, each pod a TASK_FINISHED task; a Job whose
/// pods fail stops at its backoff limit; deleting a Job collects its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_through_mesos_and_fail_at_their_backoff_limit() {
    let km = km_bin();
    let mut c = KmCluster::start(
        &[],
        &[&format!("--executor-path=file://{}", km.display()), "--executor-suicide-timeout=1m"],
    );
    let agent = c.start_agent("agent-j", "cpus:4;mem:4096;disk:10000;ports:[31000-31100]");
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            cm.log(),
            crate::support::cluster::tail(&c.scheduler_log(), 40)
        )
    };
    let client = c.client();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let job = |name: &str, script: &str, completions: i32, backoff: i32| {
        serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "completions": completions, "parallelism": 2, "backoffLimit": backoff,
                "template": { "spec": { "runtimeClassName": "native", "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{ "name": "main", "image": "unused", "command": ["/bin/sh", "-c", script],
                        "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } } }] } } },
        }))
        .expect("job")
    };
    jobs.create(&PostParams::default(), &job("work", "echo working; sleep 0.3", 3, 6))
        .await
        .expect("create");
    jobs.create(&PostParams::default(), &job("broken", "exit 3", 5, 1)).await.expect("create");
    let condition = |j: &k8s_openapi::api::batch::v1::Job| {
        j.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| {
            cs.iter().find(|c| c.status == "True").map(|c| (c.type_.clone(), c.reason.clone()))
        })
    };
    let done = eventually("the Job Complete", &logs, || async {
        let j = jobs.get("work").await.ok()?;
        (condition(&j).map(|c| c.0).as_deref() == Some("Complete")).then_some(j)
    })
    .await;
    assert_eq!(done.status.as_ref().and_then(|s| s.succeeded), Some(3));
    let failed = eventually("the broken Job Failed", &logs, || async {
        let j = jobs.get("broken").await.ok()?;
        condition(&j).filter(|c| c.0 == "Failed").map(|c| (c, j))
    })
    .await;
    assert_eq!(failed.0.1.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.1.status.as_ref().and_then(|s| s.failed), Some(2), "the limit of 1 retry");
    // Each completed pod was a finished Mesos task.
    let body = json!({ "type": "GET_TASKS" }).to_string();
    let (_, out) = http(c.master.port, "POST", "/api/v1", Some(("application/json", &body)))
        .expect("GET_TASKS");
    let finished = out.matches("TASK_FINISHED").count();
    assert!(finished >= 3, "{out}");
    let k = kubectls().last().cloned().expect("a kubectl");
    let (ok, out) = kubectl(&k, &c.api.url(), &["get", "jobs"]);
    assert!(ok && out.contains("work") && out.contains("broken"), "{out}");
    let (ok, out) = kubectl(&k, &c.api.url(), &["delete", "job", "work"]);
    assert!(ok, "{out}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("the Job's pods collected", &logs, || async {
        let left = pods.list(&ListParams::default().labels("job-name=work")).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
}

/// A CronJob makes its Job at the next minute (named after the scheduled minute, owned by the
/// CronJob, listed as active), and deleting the CronJob collects the Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_makes_its_job_on_schedule_and_takes_it_along_when_deleted() {
    let etcd = Etcd::start();
    let api_server = ApiServer::start(&etcd);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cm, _) = controller_manager(&api_server.url(), dir.path(), "cm", &[]);
    let logs = || cm.log();
    let client = api_server.client();
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::namespaced(client.clone(), "default");
    let cj = serde_json::from_value(json!({
        "metadata": { "name": "tick", "namespace": "default" },
        "spec": { "schedule": "* * * * *", "concurrencyPolicy": "Forbid",
            "jobTemplate": { "spec": { "template": { "spec": {
                "containers": [{ "name": "main", "image": "km-test/busybox:latest", "command": ["true"] }] } } } } },
    }))
    .expect("cronjob");
    cronjobs.create(&PostParams::default(), &cj).await.expect("create");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let job = eventually("the first run's Job (within a minute)", &logs, || async {
        jobs.list(&ListParams::default()).await.ok()?.items.into_iter().next()
    })
    .await;
    let name = job.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("tick-"), "{name}");
    let owner = crate::support::owner_kind(&job.metadata);
    assert_eq!(owner.as_deref(), Some("CronJob"));
    // The last answer is shown when this times out.
    let seen = std::sync::Mutex::new(String::new());
    let logs_and_seen = || {
        format!(
            "last CronJob read: {}\n{}",
            seen.lock().map(|s| s.clone()).unwrap_or_default(),
            cm.log()
        )
    };
    eventually("the CronJob lists it as active", &logs_and_seen, || async {
        let url =
            format!("{}/apis/batch/v1/namespaces/default/cronjobs/tick/status", api_server.url());
        let text = match async { reqwest::get(&url).await?.text().await }.await {
            Ok(t) => t,
            Err(e) => {
                *seen.lock().ok()? = format!("error: {e}");
                return None;
            }
        };
        *seen.lock().ok()? = text.clone();
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let active = v["status"]["active"]
            .as_array()?
            .iter()
            .any(|r| r["name"].as_str() == Some(name.as_str()));
        let typed = serde_json::from_value::<k8s_openapi::api::batch::v1::CronJob>(v.clone());
        assert!(typed.is_ok(), "the CronJob does not parse: {typed:?}\n{text}");
        (active && v["status"]["lastScheduleTime"].is_string()).then_some(())
    })
    .await;
    cronjobs.delete("tick", &kube::api::DeleteParams::background()).await.expect("delete");
    eventually("its Job collected", &logs, || async {
        jobs.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}
