//! `km restart` (and `kubectl restart`, the same binary as a kubectl plugin) against a local
//! cluster: km apiserver, Mesos master, a real agent with km executor, km scheduler and km
//! controller-manager. A Deployment restarts while a client polls it through its Service's
//! HostIP:HostPort endpoints and no request fails; a single pod is replaced with no moment
//! without a Ready copy and gets its name back; a replacement that fails its readiness probe
//! stops the restart of a ReplicationController with the old pods serving.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ReplicationController};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::controller_manager::{controller_manager, eventually};
use crate::support::apiserver::http;
use crate::support::cluster::KmCluster;
use crate::support::{km_bin, kubectls};

// Each test's agent has host ports of its own (below the ephemeral range, apart from the
// 31000s the other tests use): tests run in parallel, and a host port taken by another
// test's pod would fail a replacement here.

/// A pod template serving its name over HTTP on the host port mapped to its container port
/// 8080, Ready once it answers, and still answering for 2 s after SIGTERM (time for the
/// endpoints to drop it), as a well-behaved server does. `extra_ready` is a shell condition
/// the readiness probe also requires.
fn serving_template(app: &str, extra_ready: &str) -> serde_json::Value {
    let dir = format!("www-km-restart-{}", std::process::id());
    let script = format!(
        "mkdir -p {dir} && echo $POD_NAME > {dir}/index.html; \
         busybox httpd -f -p $PORT -h {dir} & pid=$!; \
         trap 'sleep 2; kill $pid; exit 0' TERM; wait $pid"
    );
    let probe =
        format!("{extra_ready} busybox wget -q -O /dev/null http://127.0.0.1:$PORT/index.html");
    json!({
        "metadata": { "labels": { "app": app } },
        "spec": {
            "runtimeClassName": "native",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web", "image": "unused",
                "command": ["/bin/sh", "-c", script],
                "env": [
                    { "name": "PORT", "valueFrom": { "fieldRef": { "fieldPath": "metadata.annotations['k8s.mesosphere.io/port_TCP_8080']" } } },
                    { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": format!("{app}-config"), "key": "mode", "optional": true } } },
                ],
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": { "exec": { "command": ["/bin/sh", "-c", probe] }, "periodSeconds": 1, "timeoutSeconds": 5 },
                "resources": { "requests": { "cpu": "50m", "memory": "16Mi" } },
            }],
        },
    })
}

/// The Deployment `web` of `replicas` serving pods, behind the Service `web`.
async fn create_web(client: &kube::Client, replicas: usize) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": serving_template("web", ""),
        },
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create the deployment");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
    }))
    .expect("service");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the service");
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// UIDs of the Ready pods labelled app=`app`.
async fn ready_uids(pods: &Api<Pod>, app: &str) -> Option<BTreeSet<String>> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
    Some(list.items.iter().filter(|p| is_ready(p)).filter_map(|p| p.metadata.uid.clone()).collect())
}

/// Runs `km restart` with `args` against the cluster's API server.
fn km_restart(c: &KmCluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(km_bin())
        .arg("restart")
        .args(args)
        .arg(format!("--server={}", c.api.url()))
        .env("HOME", c.dir.path())
        .env("KM_LOG", "warn")
        .output()
        .expect("run km restart");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Polls `app`'s Service like a client that balances over its endpoints: each request reads
/// the Endpoints and asks one address (round robin), counting requests and failures.
struct Poller {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(api_port: u16, service: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let path = format!("/api/v1/namespaces/default/endpoints/{service}");
        let thread = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut turn = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let Some((200, body)) = http(api_port, "GET", &path, None) else {
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let mut addresses = Vec::new();
                    for s in v["subsets"].as_array().into_iter().flatten() {
                        let port = s["ports"][0]["port"].as_u64().unwrap_or(0);
                        let n = s["addresses"].as_array().map_or(0, Vec::len);
                        addresses.extend(std::iter::repeat_n(port, n));
                    }
                    if addresses.is_empty() {
                        failed.lock().expect("lock").push("no endpoints".into());
                        continue;
                    }
                    turn = turn.wrapping_add(1);
                    let port = u16::try_from(addresses[turn % addresses.len()]).unwrap_or(0);
                    match http(port, "GET", "/index.html", None) {
                        Some((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.lock().expect("lock").push(format!("port {port}: {other:?}"))
                        }
                    }
                }
            })
        };
        Poller { stop, ok, failed, thread: Some(thread) }
    }

    /// Stops polling: (requests answered, failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.lock().expect("lock").clone())
    }
}

/// A 10-replica Deployment behind a Service with HostIP:HostPort endpoints is restarted with
/// `km restart --max-unavailable 10%` while a client polls it: every pod is replaced and no
/// request fails.
///
/// `KM_RESTART_REPLICAS=100` makes it the measurement of docs/benchmarks.md
/// (`scripts/measure-restart.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_restarts_with_no_failed_request() {
    let replicas: usize =
        std::env::var("KM_RESTART_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut c = KmCluster::start(&[], &["--executor-suicide-timeout=1m"]);
    let agent = c.start_agent(
        "agent-r",
        &format!("cpus:{};mem:{};disk:10000;ports:[24000-24999]", 1 + replicas / 10, 64 * replicas),
    );
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}\n--- executors\n{}",
            crate::support::cluster::tail(&cm.log(), 40),
            crate::support::cluster::tail(&c.scheduler_log(), 40),
            crate::support::cluster::tail(&c.executor_logs(), 40)
        )
    };
    let client = c.client();
    create_web(&client, replicas).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let before = eventually("every pod Ready", &logs, || async {
        ready_uids(&pods, "web").await.filter(|u| u.len() == replicas)
    })
    .await;
    let poller = Poller::start(c.api.port, "web");
    let (ok, out) = km_restart(&c, &["deployment/web", "--max-unavailable=10%", "--timeout=2m"]);
    let (answered, failed) = poller.finish();
    println!(
        "km restart deployment/web:\n{out}\n{answered} requests answered, {} failed",
        failed.len()
    );
    assert!(ok, "km restart failed:\n{out}\n{}", logs());
    assert!(out.contains(&format!("deployment/web restarted: {replicas} pods replaced")), "{out}");
    assert!(failed.is_empty(), "failed requests during the restart: {failed:?}\n{}", logs());
    assert!(answered > 0, "the client got no answer at all");
    let after = ready_uids(&pods, "web").await.expect("list the pods");
    assert_eq!(after.len(), replicas, "{after:?}");
    assert!(after.is_disjoint(&before), "every pod is a new one: {before:?} {after:?}");
}

/// A bare pod restarted through kubectl's plugin mechanism (`kubectl restart`, found as
/// `kubectl-restart` on the PATH, the cluster from $KUBECONFIG): at every moment some copy of
/// it is Ready, and in the end it runs again under its own name. Then a ReplicationController
/// whose replacements fail their readiness probe: the restart stops with the reason, exits
/// non-zero, and the old pods keep serving; once fixed, the same restart replaces them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_pod_restarts_without_a_gap_and_a_failing_replacement_stops_a_restart() {
    let mut c = KmCluster::start(&[], &["--executor-suicide-timeout=1m"]);
    let agent = c.start_agent("agent-s", "cpus:4;mem:4096;disk:10000;ports:[25000-25199]");
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            crate::support::cluster::tail(&cm.log(), 40),
            crate::support::cluster::tail(&c.scheduler_log(), 40),
        )
    };
    let client = c.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // --- A single pod, through `kubectl restart`.
    let mut pod: Pod = serde_json::from_value(serving_template("solo", "")).expect("pod");
    pod.metadata.name = Some("solo".into());
    pods.create(&PostParams::default(), &pod).await.expect("create the pod");
    let first = eventually("pod solo Ready", &logs, || async {
        let p = pods.get_opt("solo").await.ok()??;
        is_ready(&p).then(|| p.metadata.uid.clone()).flatten()
    })
    .await;
    let bin = c.dir.path().join("bin");
    let (ok, out) = run(Command::new(km_bin()).arg("make-symlinks").arg(&bin));
    assert!(ok, "{out}");
    let kubeconfig = c.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(&c.api.url())).expect("write a kubeconfig");
    // Watch the pod's readiness from the side while it restarts.
    let watching = Arc::new(AtomicBool::new(true));
    let gaps = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (pods, watching, gaps) = (pods.clone(), watching.clone(), gaps.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if ready_uids(&pods, "solo").await.is_some_and(|r| r.is_empty()) {
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let kubectl = kubectls().last().cloned().expect("a kubectl");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        move || {
            run(Command::new(&kubectl)
                .args(["restart", "pod/solo", "--timeout=90s"])
                .env("PATH", path)
                .env("KUBECONFIG", kubeconfig)
                .env("KM_LOG", "warn"))
        }
    })
    .await
    .expect("kubectl restart");
    watching.store(false, Ordering::Relaxed);
    watcher.await.expect("the watcher");
    println!("kubectl restart pod/solo:\n{}", out.1);
    assert!(out.0, "kubectl restart failed:\n{}\n{}", out.1, logs());
    assert!(out.1.contains("pod/solo restarted: replaced without a gap"), "{}", out.1);
    assert_eq!(gaps.load(Ordering::Relaxed), 0, "moments without a Ready copy of the pod");
    let again = pods.get("solo").await.expect("pod solo is back");
    assert!(is_ready(&again), "{again:?}");
    assert_ne!(again.metadata.uid, Some(first), "a new pod under the old name");
    eventually("the stand-in gone", &logs, || async {
        let names: Vec<String> = pods
            .list(&ListParams::default().labels("app=solo"))
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        (names == ["solo"]).then_some(())
    })
    .await;

    // --- A ReplicationController whose replacements fail their readiness probe.
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = |mode: &str| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": { "name": "rc-config", "namespace": "default" },
            "data": { "mode": mode },
        }))
        .expect("configmap")
    };
    configs.create(&PostParams::default(), &config("ok")).await.expect("create the configmap");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": { "name": "rc", "namespace": "default" },
        "spec": { "replicas": 3, "selector": { "app": "rc" },
            "template": serving_template("rc", "test \"$MODE\" = ok &&") },
    }))
    .expect("rc");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    rcs.create(&PostParams::default(), &rc).await.expect("create the rc");
    let old = eventually("3 pods of rc Ready", &logs, || async {
        ready_uids(&pods, "rc").await.filter(|u| u.len() == 3)
    })
    .await;
    // New pods read the new mode and never pass their probe.
    configs
        .patch(
            "rc-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "mode": "broken" } })),
        )
        .await
        .expect("break the config");
    let (ok, out) =
        km_restart(&c, &["rc", "rc", "--max-unavailable=0", "--max-surge=1", "--timeout=30s"]);
    println!("km restart rc/rc (failing):\n{out}");
    assert!(!ok, "the restart must fail:\n{out}");
    assert!(out.contains("no progress for 30s") && out.contains("not Ready"), "{out}");
    let still = ready_uids(&pods, "rc").await.expect("list");
    assert_eq!(still, old, "the old pods keep serving");
    let rc_now = rcs.get("rc").await.expect("the rc");
    assert_eq!(rc_now.spec.as_ref().and_then(|s| s.replicas), Some(3), "back to 3 replicas");
    eventually("only the 3 old pods left", &logs, || async {
        let list = pods.list(&ListParams::default().labels("app=rc")).await.ok()?.items;
        (list.len() == 3).then_some(())
    })
    .await;
    // Fixed: the same restart goes through.
    configs
        .patch(
            "rc-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "mode": "ok" } })),
        )
        .await
        .expect("fix the config");
    let (ok, out) = km_restart(&c, &["rc/rc", "--max-unavailable=1", "--timeout=60s"]);
    println!("km restart rc/rc:\n{out}");
    assert!(ok, "{out}\n{}", logs());
    let new = eventually("3 new pods of rc Ready", &logs, || async {
        ready_uids(&pods, "rc").await.filter(|u| u.len() == 3)
    })
    .await;
    assert!(new.is_disjoint(&old), "{old:?} {new:?}");

    // --- A Deployment whose new pods cannot start: the restart stops at the first one, puts
    // the template back, and the old pods keep serving.
    let mut template = serving_template("dep", "");
    template["spec"]["containers"][0]["env"].as_array_mut().expect("env").push(json!(
        { "name": "REQUIRED", "valueFrom": { "configMapKeyRef": { "name": "rc-config", "key": "required" } } }
    ));
    configs
        .patch(
            "rc-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "required": "yes" } })),
        )
        .await
        .expect("add the key");
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "dep", "namespace": "default" },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "dep" } }, "template": template },
    }))
    .expect("deployment");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &dep).await.expect("create the deployment");
    let dep_old = eventually("2 pods of dep Ready", &logs, || async {
        ready_uids(&pods, "dep").await.filter(|u| u.len() == 2)
    })
    .await;
    configs
        .patch(
            "rc-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "required": null } })),
        )
        .await
        .expect("remove the key");
    let (ok, out) = km_restart(&c, &["deployment/dep", "--timeout=60s"]);
    println!("km restart deployment/dep (failing):\n{out}");
    assert!(!ok, "the restart must fail:\n{out}");
    assert!(out.contains("CreateContainerConfigError") && out.contains("rolled back"), "{out}");
    let restarted_at = deployments
        .get("dep")
        .await
        .expect("dep")
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned());
    assert_eq!(restarted_at, None, "the template is put back");
    eventually("dep back to its 2 old pods", &logs, || async {
        let list = pods.list(&ListParams::default().labels("app=dep")).await.ok()?.items;
        let live: BTreeSet<String> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        (live == dep_old && ready_uids(&pods, "dep").await? == dep_old).then_some(())
    })
    .await;

    // What cannot be restarted says so.
    let (ok, out) = km_restart(&c, &["pod", "nonexistent"]);
    assert!(!ok && out.contains("pod default/nonexistent not found"), "{out}");
    let some_rc_pod = pods
        .list(&ListParams::default().labels("app=rc"))
        .await
        .expect("list")
        .items
        .into_iter()
        .find_map(|p| p.metadata.name)
        .expect("a pod of rc");
    let (ok, out) = km_restart(&c, &[&format!("pod/{some_rc_pod}")]);
    assert!(
        !ok && out.contains(
            "is managed by ReplicationController rc: restart replicationcontroller/rc instead"
        ),
        "{out}"
    );
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn kubeconfig_for(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n\
         contexts:\n- name: local\n  context:\n    cluster: local\n    user: me\n    namespace: default\n\
         current-context: local\nusers:\n- name: me\n  user: {{}}\n"
    )
}

/// Restart on config change, built into km controller-manager: of four workloads using a
/// ConfigMap and a Secret, the ones annotated `km.io/restart-on-config-change` roll when what
/// they watch changes content — a Deployment by its rollout, a ReplicationController and a
/// single pod through the health-gated restart — each once per change; an unchanged apply
/// restarts nothing, the unannotated Deployment is left alone, and the Secret's values appear
/// in no log and no Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_restart_exactly_the_annotated_workloads() {
    let mut c = KmCluster::start(&[], &["--executor-suicide-timeout=1m"]);
    let agent = c.start_agent("agent-c", "cpus:4;mem:4096;disk:10000;ports:[25200-25399]");
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            crate::support::cluster::tail(&cm.log(), 60),
            crate::support::cluster::tail(&c.scheduler_log(), 30),
        )
    };
    let client = c.client();
    let server = c.api.url();
    let kubectl = kubectls().last().cloned().expect("a kubectl");
    let secret_old = format!("old-secret-value-{}", std::process::id());
    let secret_new = format!("new-secret-value-{}", std::process::id());
    let apply = |yaml: String| {
        let path = c.dir.path().join("apply.yaml");
        std::fs::write(&path, yaml).expect("write the manifest");
        let (ok, out) =
            crate::support::kubectl(&kubectl, &server, &["apply", "-f", &path.to_string_lossy()]);
        assert!(ok, "kubectl apply: {out}");
        out
    };
    let config_yaml = |mode: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: default\ndata:\n  mode: {mode}\n"
        )
    };
    let secret_yaml = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secret\n  namespace: default\nstringData:\n  password: {value}\n"
        )
    };
    apply(config_yaml("one"));
    apply(secret_yaml(&secret_old));
    // Every workload reads both; the annotation decides what restarts it.
    let template = |app: &str| {
        let mut t = serving_template(app, "");
        let env = t["spec"]["containers"][0]["env"].as_array_mut().expect("env");
        env.push(json!({ "name": "MODE_NOW", "valueFrom": { "configMapKeyRef": { "name": "app-config", "key": "mode" } } }));
        env.push(json!({ "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "app-secret", "key": "password" } } }));
        t
    };
    let deployment = |name: &str, annotation: Option<&str>| -> Deployment {
        let annotations = annotation.map(|a| json!({ "km.io/restart-on-config-change": a }));
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default", "annotations": annotations },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "app": name } }, "template": template(name) },
        }))
        .expect("deployment")
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("watching", Some("true")))
        .await
        .expect("create");
    deployments.create(&PostParams::default(), &deployment("plain", None)).await.expect("create");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": { "name": "rc-watching", "namespace": "default",
            "annotations": { "km.io/restart-on-config-change": "configmap/app-config" } },
        "spec": { "replicas": 2, "selector": { "app": "rc-watching" }, "template": template("rc-watching") },
    }))
    .expect("rc");
    Api::<ReplicationController>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &rc)
        .await
        .expect("create the rc");
    let mut pod: Pod = serde_json::from_value(template("single")).expect("pod");
    pod.metadata.name = Some("single".into());
    pod.metadata.annotations = Some(
        [("km.io/restart-on-config-change".to_owned(), "secret/app-secret".to_owned())].into(),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.expect("create the pod");
    let apps = ["watching", "plain", "rc-watching", "single"];
    let mut before = std::collections::BTreeMap::new();
    for app in apps {
        let want = if app == "single" { 1 } else { 2 };
        let uids = eventually(&format!("{app} Ready"), &logs, || async {
            ready_uids(&pods, app).await.filter(|u| u.len() == want)
        })
        .await;
        before.insert(app, uids);
    }
    // First sight records the hashes and restarts nothing.
    let recorded = |name: &'static str| {
        let deployments = deployments.clone();
        let pods = pods.clone();
        let client = client.clone();
        async move {
            let annotations = match name {
                "watching" => deployments.get(name).await.ok()?.metadata.annotations,
                "rc-watching" => {
                    Api::<ReplicationController>::namespaced(client, "default")
                        .get(name)
                        .await
                        .ok()?
                        .metadata
                        .annotations
                }
                _ => pods.get(name).await.ok()?.metadata.annotations,
            };
            annotations?.get("km.io/config-hash").cloned()
        }
    };
    for name in ["watching", "rc-watching", "single"] {
        let r = eventually(&format!("{name}'s hashes recorded"), &logs, || recorded(name)).await;
        println!("{name}: km.io/config-hash={r}");
        assert!(!r.contains(&secret_old), "{r}");
    }
    // An unchanged apply, then a real change of the ConfigMap.
    let out = apply(config_yaml("one"));
    assert!(out.contains("unchanged"), "{out}");
    apply(config_yaml("two"));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let restarted_events = |name: &'static str| {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            Some(
                list.into_iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some(name))
                    .filter(|e| e.reason.as_deref() == Some("Restarted"))
                    .count(),
            )
        }
    };
    eventually("rc-watching restarted once", &logs, || async {
        (restarted_events("rc-watching").await? == 1).then_some(())
    })
    .await;
    let replicasets = |app: &'static str| {
        let client = client.clone();
        async move {
            let list = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(client, "default")
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            Some(list.items.len())
        }
    };
    eventually("watching rolled to a second ReplicaSet, its new pods Ready", &logs, || async {
        let ready = ready_uids(&pods, "watching").await?;
        (replicasets("watching").await? == 2
            && ready.len() == 2
            && ready.is_disjoint(&before["watching"]))
        .then_some(())
    })
    .await;
    let rc_now = eventually("rc-watching's new pods Ready", &logs, || async {
        ready_uids(&pods, "rc-watching").await.filter(|u| u.len() == 2)
    })
    .await;
    assert!(rc_now.is_disjoint(&before["rc-watching"]), "the rc's pods were replaced");
    // Not watching the ConfigMap: left alone.
    assert_eq!(ready_uids(&pods, "plain").await, Some(before["plain"].clone()), "plain untouched");
    assert_eq!(
        ready_uids(&pods, "single").await,
        Some(before["single"].clone()),
        "single untouched"
    );
    assert_eq!(replicasets("plain").await, Some(1));
    // The Secret changes: the pod restarts (through a stand-in, keeping its name) and the
    // Deployment watching everything rolls again; the rc watches only the ConfigMap.
    apply(secret_yaml(&secret_new));
    eventually("single restarted once", &logs, || async {
        (restarted_events("single").await? == 1).then_some(())
    })
    .await;
    let single = pods.get("single").await.expect("single is back under its name");
    assert!(is_ready(&single), "{single:?}");
    assert!(!before["single"].contains(single.metadata.uid.as_deref().unwrap_or_default()));
    eventually("watching rolled again", &logs, || async {
        (replicasets("watching").await? == 3).then_some(())
    })
    .await;
    assert_eq!(restarted_events("rc-watching").await, Some(1), "the rc does not watch the Secret");
    assert_eq!(ready_uids(&pods, "rc-watching").await, Some(rc_now), "the rc's pods stay");
    // What the Events and the logs say: sources and keys, never a value.
    let all_events = events.list(&ListParams::default()).await.expect("events").items;
    let changed: Vec<String> = all_events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ConfigChanged"))
        .filter_map(|e| e.message.clone())
        .collect();
    println!("ConfigChanged events: {changed:#?}");
    assert!(
        changed.iter().any(|m| m.contains("configmap/app-config changed (keys: mode)")),
        "{changed:?}"
    );
    assert!(
        changed.iter().any(|m| m.contains("secret/app-secret changed (keys: password)")),
        "{changed:?}"
    );
    let mut everything: Vec<String> =
        all_events.iter().map(|e| format!("{:?} {:?}", e.reason, e.message)).collect();
    everything.push(cm.log());
    everything.push(c.scheduler_log());
    everything.push(c.executor_logs());
    for text in &everything {
        for value in [&secret_old, &secret_new] {
            assert!(!text.contains(value.as_str()), "a secret value in a log or Event:\n{text}");
        }
    }
}

/// The rolling executor upgrade: a scheduler restarted with a new executor configuration
/// starts new executors beside the old one on the same agent (no agent waits for offers),
/// moves the pods of the old one through the health-gated restart — a Deployment polled by a
/// client without a failed request, and a single pod — asks the old executor to exit once
/// empty (it does, and no one had to send `kamikaze` by hand), and records the drain on the
/// Node and in `/metrics`.
///
/// `KM_UPGRADE_REPLICAS=100` makes it the measurement of docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_upgrade_moves_every_pod_with_no_failed_request() {
    let replicas: usize =
        std::env::var("KM_UPGRADE_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut c = KmCluster::start(&[], &["--executor-suicide-timeout=1m", "--executor-log=info"]);
    let agent = c.start_agent(
        "agent-u",
        &format!(
            "cpus:{};mem:{};disk:10000;ports:[26000-26999]",
            2 + replicas / 10,
            512 + 64 * replicas
        ),
    );
    c.keep(agent);
    let (cm, _) = controller_manager(&c.api.url(), c.dir.path(), "cm", &[]);
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            crate::support::cluster::tail(&cm.log(), 30),
            crate::support::cluster::tail(&c.scheduler_log(), 60),
        )
    };
    let client = c.client();
    create_web(&client, replicas).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut solo: Pod = serde_json::from_value(serving_template("solo", "")).expect("pod");
    solo.metadata.name = Some("solo".into());
    pods.create(&PostParams::default(), &solo).await.expect("create the pod");
    let executor_of = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("k8s.mesosphere.io/executorId"))
            .cloned()
            .unwrap_or_default()
    };
    // Every pod Ready, on one executor.
    let old_exec = eventually("every pod Ready", &logs, || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let ready: Vec<&Pod> = list.iter().filter(|p| is_ready(p)).collect();
        let execs: BTreeSet<String> = ready.iter().map(|p| executor_of(p)).collect();
        (ready.len() == replicas + 1 && execs.len() == 1)
            .then(|| execs.into_iter().next())
            .flatten()
    })
    .await;
    assert_eq!(c.executor_pids().len(), 1, "one executor");
    let poller = Poller::start(c.api.port, "web");
    // The new configuration: the executors' log filter is part of it.
    c.kill_scheduler();
    c.set_scheduler_arg("--executor-log=", "--executor-log=info,km_executor=debug");
    let upgrade = Instant::now();
    c.start_scheduler();
    let logs = || {
        format!(
            "--- controller-manager\n{}\n--- scheduler\n{}",
            crate::support::cluster::tail(&cm.log(), 30),
            crate::support::cluster::tail(&c.scheduler_log(), 60),
        )
    };
    // Both executors run side by side on the one agent while the pods move: the agent keeps
    // getting pods while its old executor is still there.
    let side_by_side = AtomicBool::new(false);
    let new_exec = eventually("every pod moved to a new executor and Ready", &logs, || async {
        if c.executor_pids().len() == 2 {
            side_by_side.store(true, Ordering::Relaxed);
        }
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let live: Vec<&Pod> =
            list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let execs: BTreeSet<String> = live.iter().map(|p| executor_of(p)).collect();
        let ready = live.iter().filter(|p| is_ready(p)).count();
        let solo_back = live.iter().any(|p| p.metadata.name.as_deref() == Some("solo"));
        (live.len() == replicas + 1
            && solo_back
            && ready == live.len()
            && execs.len() == 1
            && !execs.contains(&old_exec))
        .then(|| execs.into_iter().next())
        .flatten()
    })
    .await;
    let moved = upgrade.elapsed();
    let (answered, failed) = poller.finish();
    println!(
        "executor upgrade of {} pods: {:.1}s from the scheduler's restart; {answered} requests answered, {} failed",
        replicas + 1,
        moved.as_secs_f64(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests during the upgrade: {failed:?}\n{}", logs());
    assert_ne!(new_exec, old_exec);
    assert!(side_by_side.load(Ordering::Relaxed), "the new executor ran beside the old one");
    assert!(pods.get("solo").await.is_ok_and(|p| is_ready(&p)), "solo keeps its name");
    // The old executor exits once empty; the new one stays.
    eventually("the old executor gone", &logs, || async {
        (c.executor_pids().len() == 1).then_some(())
    })
    .await;
    // The Node records the drain, and /metrics shows it done.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let reasons = eventually("the Node's drain events", &logs, || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let on_node: Vec<(String, String)> = list
            .into_iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("Node"))
            .filter_map(|e| Some((e.reason?, e.message.unwrap_or_default())))
            .filter(|(r, _)| r.starts_with("ExecutorDrain"))
            .collect();
        (on_node.len() == 2).then_some(on_node)
    })
    .await;
    println!("node events: {reasons:#?}");
    assert_eq!(reasons[0].0, "ExecutorDrainStarted");
    assert!(
        reasons[0].1.contains(&format!("{} pods on executor {old_exec}", replicas + 1)),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "ExecutorDrained");
    assert_eq!(c.metric("km_scheduler_executor_drain_nodes"), Some(0.0));
    assert_eq!(c.metric("km_scheduler_executor_drain_restarts_running"), Some(0.0));
    let (_, text) = c.scheduler_get("/metrics");
    assert!(text.contains("km_scheduler_executor_drain_restarts_total{result=\"ok\"} 2"), "{text}");
}
