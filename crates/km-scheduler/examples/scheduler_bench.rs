//! Scheduler benchmarks S1, S2, S3, P and D through Mesos (docs/benchmarks.md): a whole control
//! plane on this machine — etcd, `km apiserver`, `km mesos-master` with simulated agents or a real
//! `km mesos-agent` running `km executor` — and `km scheduler`, all real processes from a release
//! build of `km`.
//!
//! ```text
//! cargo build --release -p km && \
//!   cargo run --release -p km-scheduler --example scheduler_bench -- [s1|s2|s3|p|d|all] \
//!     [--pods N] [--agents N] [--no-baseline] [--native N] [--docker N] [--replicas N]
//! ```
//!
//! `p` needs the Docker images `km-test/busybox:latest` and `km-test/pause:latest`
//! (`tests/images/build.sh`) unless `--docker 0`.
//!
//! The pods are in the API before the scheduler starts; the clock starts when the scheduler is
//! spawned. Printed per run: time until every pod is bound and Running, pods bound per second,
//! offers used per pod, p50/p99 of scheduler start → bound and → Running, and the scheduler's
//! peak RSS. Each scenario also runs with the original's policy (one pod per offer, 5 s refuse)
//! as a baseline, side by side.
//!
//! `s4` runs two `km scheduler --ha` (lease `--ha-lease-ttl`, default 2 s) over `--pods` Running
//! pods on simulated agents, kills the leader with kill -9 and creates one pod at once: printed
//! are the time until the standby leads and until the new pod is Running, and how many of the
//! running pods were killed or launched again (both must be 0).
//!
//! `d` adds `km controller-manager`: a Deployment of `--replicas` (1,000) pods on simulated agents,
//! timed from its creation until every pod exists, is bound and is available, then a rolling
//! restart (25% surge and unavailability) until every pod is replaced; the controller-manager's
//! peak RSS and CPU time.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn km() -> PathBuf {
    let path = std::env::var_os("KM_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        root.join("target/release/km")
    });
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// Log filter of the processes under test (`KM_BENCH_LOG`, default warn).
fn log_filter() -> String {
    std::env::var("KM_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned())
}

fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
    if !cmd.get_envs().any(|(k, _)| k == "KM_LOG") {
        cmd.env("KM_LOG", log_filter());
    }
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc(child)
}

async fn wait_http(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not come up ({url})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Keeps the plane's directory when `KM_BENCH_KEEP` is set.
impl Drop for Plane {
    fn drop(&mut self) {
        if std::env::var_os("KM_BENCH_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = dir.keep();
        }
    }
}

struct Plane {
    etcd: Proc,
    api: Proc,
    master: Proc,
    api_url: String,
    master_port: u16,
    etcd_url: String,
    dir: tempfile::TempDir,
}

async fn plane(agents: usize, agent_resources: &str) -> Plane {
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("KM_BENCH_KEEP").is_some() {
        eprintln!("  (logs in {})", dir.path().display());
    }
    let (ec, ep) = (free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{ec}");
    let peer = format!("http://127.0.0.1:{ep}");
    let etcd = spawn(
        "etcd",
        Command::new("etcd")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .args(["--log-level=error", "--logger=zap"]),
        dir.path().join("etcd.log"),
    );
    wait_http(&format!("{etcd_url}/health"), "etcd").await;
    let ap = free_port();
    let api = spawn(
        "km apiserver",
        Command::new(km())
            .arg("apiserver")
            .arg("--insecure-bind-address=127.0.0.1")
            .arg(format!("--insecure-port={ap}"))
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--service-cluster-ip-range=10.10.0.0/16"),
        dir.path().join("apiserver.log"),
    );
    let api_url = format!("http://127.0.0.1:{ap}");
    wait_http(&format!("{api_url}/healthz"), "km apiserver").await;
    let mp = free_port();
    let master = spawn(
        "km mesos-master",
        Command::new(km())
            .arg("mesos-master")
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={mp}"))
            .arg(format!("--simulate-agents={agents}"))
            .arg(format!("--simulate-agent-resources={agent_resources}"))
            .arg("--simulate-agent-attributes=rack:r{i%10};zone:z{i%3}")
            .arg("--allocation_interval=1secs"),
        dir.path().join("master.log"),
    );
    wait_http(&format!("http://127.0.0.1:{mp}/health"), "km mesos-master").await;
    Plane { etcd, api, master, api_url, master_port: mp, etcd_url, dir }
}

/// Creates the pods concurrently; returns how long it took.
async fn create_pods(client: &kube::Client, pods: Vec<Value>) -> Duration {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let t0 = Instant::now();
    futures::stream::iter(pods)
        .map(|p| {
            let api = api.clone();
            async move {
                let pod: Pod = serde_json::from_value(p).expect("pod");
                api.create(&PostParams::default(), &pod).await.expect("create pod");
            }
        })
        .buffer_unordered(128)
        .collect::<Vec<()>>()
        .await;
    t0.elapsed()
}

fn pod(name: &str, cpu: &str, extra_spec: Value, annotations: Value) -> Value {
    let mut spec = json!({
        "containers": [{ "name": "c", "image": "busybox",
            "resources": { "requests": { "cpu": cpu, "memory": "128Mi" } } }],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "annotations": annotations }, "spec": spec })
}

#[derive(Default)]
struct Seen {
    bound: HashMap<String, Duration>,
    running: HashMap<String, Duration>,
    unschedulable: HashMap<String, Duration>,
}

struct Report {
    pods: usize,
    all_bound: Option<Duration>,
    all_running: Option<Duration>,
    bound_p50: Duration,
    bound_p99: Duration,
    running_p50: Duration,
    running_p99: Duration,
    offers_used: f64,
    rss_mib: f64,
    /// CPU seconds used during the run: scheduler, API server, master, etcd.
    cpu: [f64; 4],
    seen: Arc<Mutex<Seen>>,
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn metric(port: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok();
    let Some(r) = text else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Records when a pod is first seen bound, Running, or unschedulable.
fn note(seen: &Mutex<Seen>, pod: &Pod, at: Duration) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut s = seen.lock().expect("lock");
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
        s.bound.entry(name.clone()).or_insert(at);
    }
    let status = pod.status.as_ref();
    if status.and_then(|st| st.phase.as_deref()) == Some("Running") {
        s.running.entry(name.clone()).or_insert(at);
    }
    let unschedulable = status
        .and_then(|st| st.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"));
    if unschedulable {
        s.unschedulable.entry(name).or_insert(at);
    }
}

/// Starts a scheduler over pods already in the API and measures until all are bound and
/// Running (or `limit` passes).
async fn measure(
    p: &Plane,
    total: usize,
    expect_unschedulable: usize,
    extra: &[&str],
    limit: Duration,
) -> Report {
    let client =
        kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url"))).expect("client");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rv = current_version(&api).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = free_port();
    let cpu0 = [cpu_secs(p.api.0.id()), cpu_secs(p.master.0.id()), cpu_secs(p.etcd.0.id())];
    let t0 = Instant::now();
    // Simulated agents never start the executor.
    let sched = scheduler(
        p,
        port,
        "file:///usr/local/bin/km",
        extra,
        &format!("scheduler-{}.log", extra.join("_").replace(['/', '='], "-")),
    );
    let watcher = {
        let seen = seen.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let mut rv = rv;
            loop {
                let wp = WatchParams::default().timeout(290);
                let Ok(stream) = api.watch(&wp, &rv).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = std::pin::pin!(stream);
                loop {
                    match stream.try_next().await {
                        Ok(Some(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                            if let Some(v) = pod.metadata.resource_version.clone() {
                                rv = v;
                            }
                            note(&seen, &pod, t0.elapsed());
                        }
                        Ok(Some(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                        Ok(Some(WatchEvent::Error(e))) => {
                            // Fell behind the server's window: list, and go on from there
                            // (pods first seen in the listing get the listing's time).
                            eprintln!("  (watch: {}; listing again)", e.message);
                            if let Ok(list) = api.list(&ListParams::default()).await {
                                let at = t0.elapsed();
                                for pod in &list.items {
                                    note(&seen, pod, at);
                                }
                                rv = list.metadata.resource_version.unwrap_or_default();
                            }
                            break;
                        }
                        Ok(Some(WatchEvent::Deleted(_))) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        })
    };
    let want = total - expect_unschedulable;
    loop {
        let done = {
            let s = seen.lock().expect("lock");
            s.bound.len() >= want
                && s.running.len() >= want
                && s.unschedulable.len() >= expect_unschedulable
        };
        if done || t0.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offers_used = metric(port, "km_scheduler_offers_used_total").await;
    let rss_mib = peak_rss_mib(sched.0.id());
    let cpu = [
        cpu_secs(sched.0.id()),
        cpu_secs(p.api.0.id()) - cpu0[0],
        cpu_secs(p.master.0.id()) - cpu0[1],
        cpu_secs(p.etcd.0.id()) - cpu0[2],
    ];
    drop(sched);
    watcher.abort();
    let s = seen.lock().expect("lock");
    let bound: Vec<Duration> = s.bound.values().copied().collect();
    let running: Vec<Duration> = s.running.values().copied().collect();
    Report {
        pods: want,
        all_bound: (bound.len() >= want).then(|| bound.iter().copied().max().unwrap_or_default()),
        all_running: (running.len() >= want)
            .then(|| running.iter().copied().max().unwrap_or_default()),
        bound_p50: pct(bound.clone(), 0.5),
        bound_p99: pct(bound, 0.99),
        running_p50: pct(running.clone(), 0.5),
        running_p99: pct(running, 0.99),
        offers_used,
        rss_mib,
        cpu,
        seen: seen.clone(),
    }
}

fn print(label: &str, r: &Report) {
    let secs = |d: Option<Duration>| {
        d.map_or("not all".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    let rate = r.all_bound.map_or(0.0, |d| r.pods as f64 / d.as_secs_f64());
    println!(
        "{label:<28} pods {:>6}  all bound {:>9}  all Running {:>9}  {:>7.0} pods/s  offers/pod {:.3}  start→bound p50 {:.2}s p99 {:.2}s  start→Running p50 {:.2}s p99 {:.2}s  peak RSS {:.0} MiB",
        r.pods,
        secs(r.all_bound),
        secs(r.all_running),
        rate,
        r.offers_used / r.pods.max(1) as f64,
        r.bound_p50.as_secs_f64(),
        r.bound_p99.as_secs_f64(),
        r.running_p50.as_secs_f64(),
        r.running_p99.as_secs_f64(),
        r.rss_mib,
    );
    println!(
        "{:<28} CPU seconds: scheduler {:.1}, apiserver {:.1}, master {:.1}, etcd {:.1}",
        "", r.cpu[0], r.cpu[1], r.cpu[2], r.cpu[3]
    );
}

const AGENT: &str = "cpus:4;mem:16384;disk:100000;ports:[31000-32000]";

async fn s1(pods: usize, agents: usize, baseline: bool) {
    println!("S1 burst bind: {pods} pods × 0.1 cpu / 128 MiB on {agents} simulated agents × 4 cpu");
    for (label, extra) in [
        ("S1 km (pack)", &[][..]),
        ("S1 original policy", &["--launch-policy=one-pod-per-offer"][..]),
    ] {
        if !baseline && !extra.is_empty() {
            continue;
        }
        let p = plane(agents, AGENT).await;
        let client = kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url")))
            .expect("client");
        let specs =
            (0..pods).map(|i| pod(&format!("s1-{i}"), "100m", json!({}), json!({}))).collect();
        let created = create_pods(&client, specs).await;
        eprintln!("  ({pods} pods created in {:.1} s)", created.as_secs_f64());
        let r = measure(&p, pods, 0, extra, Duration::from_secs(600)).await;
        print(label, &r);
        drop(p);
    }
}

/// Pods Running and bound: name → task ID.
async fn running_tasks(api: &Api<Pod>) -> HashMap<String, String> {
    let Ok(list) = api.list(&ListParams::default()).await else { return HashMap::new() };
    list.items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| {
            let task = p.metadata.annotations.as_ref()?.get("k8s.mesosphere.io/taskId")?.clone();
            Some((p.metadata.name?, task))
        })
        .collect()
}

async fn s4(pods: usize, agents: usize, ttl: usize) {
    println!(
        "S4 failover: {pods} Running pods on {agents} simulated agents, two `km scheduler --ha` (lease {ttl} s); kill -9 of the leader"
    );
    let p = plane(agents, AGENT).await;
    let client =
        kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url"))).expect("client");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ttl_flag = format!("--ha-lease-ttl={ttl}s");
    let ha = |port: u16, log: &str| {
        let mut cmd = Command::new(km());
        cmd.arg("scheduler")
            .arg(format!("--api-servers={}", p.api_url))
            .arg(format!("--mesos-master=127.0.0.1:{}", p.master_port))
            .arg(format!("--etcd-servers={}", p.etcd_url))
            .arg(format!("--port={port}"))
            .arg(format!("--executor-path=file://{}", km().display()))
            .args(["--ha", ttl_flag.as_str()])
            .env(
                "KM_LOG",
                std::env::var("KM_BENCH_LOG").unwrap_or_else(|_| "warn,km_scheduler=info".into()),
            );
        spawn("km scheduler --ha", &mut cmd, p.dir.path().join(log))
    };
    let log_of = |name: &str| std::fs::read_to_string(p.dir.path().join(name)).unwrap_or_default();
    // The pods are in the API first (as in S1); the leader places them all.
    let specs = (0..pods).map(|i| pod(&format!("s4-{i}"), "100m", json!({}), json!({}))).collect();
    let created = create_pods(&client, specs).await;
    let (port_a, port_b) = (free_port(), free_port());
    let leader = ha(port_a, "scheduler-a.log");
    wait_http(&format!("http://127.0.0.1:{port_a}/healthz"), "scheduler a").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_of("scheduler-a.log").contains("elected: leading") {
        assert!(Instant::now() < deadline, "scheduler a never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _standby = ha(port_b, "scheduler-b.log");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(900);
    let before = loop {
        let r = running_tasks(&api).await;
        if r.len() == pods {
            break r;
        }
        assert!(Instant::now() < deadline, "only {} of {pods} pods ran", r.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "  ({pods} pods created in {:.1} s, all Running {:.1} s later)",
        created.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(log_of("scheduler-b.log").contains("standing by"), "b is not standing by");

    // kill -9 of the leader, and a new pod at once.
    let killed_at = Instant::now();
    drop(leader);
    let new_pod: Pod =
        serde_json::from_value(pod("s4-after", "100m", json!({}), json!({}))).expect("pod");
    api.create(&PostParams::default(), &new_pod).await.expect("create the new pod");
    let (mut led, mut bound, mut launched) = (None, None, None);
    let deadline = killed_at + Duration::from_secs(120);
    while led.is_none() || launched.is_none() {
        if led.is_none() && log_of("scheduler-b.log").contains("elected: leading") {
            led = Some(killed_at.elapsed());
        }
        let now = api.get("s4-after").await.ok();
        // km binds a pod when it launches its task.
        if bound.is_none()
            && now.as_ref().and_then(|p| p.spec.as_ref()?.node_name.as_ref()).is_some()
        {
            bound = Some(killed_at.elapsed());
        }
        if launched.is_none() && now.and_then(|p| p.status?.phase).as_deref() == Some("Running") {
            launched = Some(killed_at.elapsed());
        }
        assert!(Instant::now() < deadline, "the standby did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if std::env::var_os("KM_BENCH_SHOW_LOGS").is_some() {
        // The new leader's takeover, line by line (its log from the election on).
        let log = log_of("scheduler-b.log");
        let from = log.find("elected: leading").unwrap_or(0);
        eprintln!("--- scheduler b from its election\n{}", &log[from..]);
    }
    let after = running_tasks(&api).await;
    let relaunched = before.iter().filter(|(n, t)| after.get(*n).is_some_and(|a| a != *t)).count();
    let lost = before.keys().filter(|n| !after.contains_key(*n)).count();
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "{:<28} standby leads {:>6.2} s after the kill | new pod launched {:>6.2} s, Running {:>6.2} s after | running pods killed or lost {lost}, launched again {relaunched}",
        "S4 km (--ha)",
        secs(led),
        secs(bound),
        secs(launched),
    );
}

async fn s3(pods: usize, agents: usize, baseline: bool) {
    println!(
        "S3 constrained: {pods} pods on {agents} agents (10 racks, 3 zones, roles * + prod, hostPort 8080, nodeSelector)"
    );
    let resources =
        "cpus:2;cpus(prod):2;mem:8192;mem(prod):8192;disk:100000;ports:[8080-8080,31000-32000]";
    let impossible = 10;
    for (label, extra) in [
        ("S3 km (pack)", &["--mesos-framework-roles=*,prod"][..]),
        (
            "S3 original policy",
            &["--mesos-framework-roles=*,prod", "--launch-policy=one-pod-per-offer"][..],
        ),
    ] {
        if !baseline && extra.len() > 1 {
            continue;
        }
        let p = plane(agents, resources).await;
        let client = kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url")))
            .expect("client");
        let mut specs = Vec::new();
        for i in 0..pods {
            let (spec, ann) = match i % 10 {
                0..=3 => (json!({}), json!({})),
                4 | 5 => (
                    json!({"nodeSelector": {"k8s.mesosphere.io/attribute-rack": format!("r{}", i % 10)}}),
                    json!({}),
                ),
                6 => (
                    json!({"nodeSelector": {"k8s.mesosphere.io/attribute-zone": format!("z{}", i % 3)}}),
                    json!({}),
                ),
                7 => (
                    json!({"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}),
                    json!({}),
                ),
                _ => (json!({}), json!({"k8s.mesosphere.io/roles": "prod"})),
            };
            specs.push(pod(&format!("s3-{i}"), "100m", spec, ann));
        }
        for i in 0..impossible {
            specs.push(pod(
                &format!("s3-impossible-{i}"),
                "100m",
                json!({"nodeSelector": {"k8s.mesosphere.io/attribute-rack": "r99"}}),
                json!({}),
            ));
        }
        let total = specs.len();
        let created = create_pods(&client, specs).await;
        eprintln!("  ({total} pods created in {:.1} s)", created.as_secs_f64());
        let r = measure(&p, total, impossible, extra, Duration::from_secs(600)).await;
        print(label, &r);
        let violations = check_s3(&client, &p).await;
        let reasons = r
            .seen
            .lock()
            .expect("lock")
            .unschedulable
            .iter()
            .filter(|(n, _)| n.starts_with("s3-impossible"))
            .map(|(_, d)| *d)
            .max();
        println!(
            "{:<28} constraint violations {violations}; {impossible} impossible pods reported by {}",
            "",
            reasons.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        );
        drop(p);
    }
}

/// Counts placements breaking a constraint: a node selector not matched by the node's labels,
/// host port 8080 twice on a node, a prod pod on unreserved resources.
async fn check_s3(client: &kube::Client, p: &Plane) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes: BTreeMap<String, BTreeMap<String, String>> = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .map(|n| {
            (n.metadata.name.clone().unwrap_or_default(), n.metadata.labels.unwrap_or_default())
        })
        .collect();
    let mut violations = 0;
    let mut port_hosts: HashSet<String> = HashSet::new();
    let mut prod_tasks: HashSet<String> = HashSet::new();
    for p in pods.list(&ListParams::default()).await.expect("pods").items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let labels = nodes.get(&node).cloned().unwrap_or_default();
        for (k, v) in p.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default() {
            if labels.get(&k) != Some(&v) {
                violations += 1;
            }
        }
        let fixed = p.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.ports.iter().flatten().any(|pt| pt.host_port == Some(8080)))
        });
        if fixed && !port_hosts.insert(node.clone()) {
            violations += 1;
        }
        let ann = p.metadata.annotations.unwrap_or_default();
        if ann.get("k8s.mesosphere.io/roles").map(String::as_str) == Some("prod")
            && let Some(t) = ann.get("k8s.mesosphere.io/taskId")
        {
            prod_tasks.insert(t.clone());
        }
    }
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/v1", p.master_port))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "GET_TASKS"}).to_string())
        .send()
        .await
        .expect("GET_TASKS");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    for t in v["get_tasks"]["tasks"].as_array().into_iter().flatten() {
        let id = t["task_id"]["value"].as_str().unwrap_or_default();
        if !prod_tasks.contains(id) {
            continue;
        }
        for r in t["resources"].as_array().into_iter().flatten() {
            let role = r["role"].as_str().or_else(|| {
                r["reservations"].as_array().and_then(|x| x.last()).and_then(|x| x["role"].as_str())
            });
            if matches!(r["name"].as_str(), Some("cpus" | "mem")) && role != Some("prod") {
                violations += 1;
            }
        }
    }
    violations
}

/// S2: one real agent (8 cpus) running km executor, the scheduler warm; 100 native pods of
/// 0.05 cpu created at once; the clock runs from the first create to every pod Running (as the
/// executor reports it in the API).
async fn s2(baseline: bool) {
    let pods = 100;
    println!(
        "S2 offer-starved: {pods} native pods × 0.05 cpu on one real agent × 8 cpu (km mesos-agent + km executor)"
    );
    for (label, extra) in [
        ("S2 km (pack)", &[][..]),
        ("S2 original policy", &["--launch-policy=one-pod-per-offer"][..]),
    ] {
        if !baseline && !extra.is_empty() {
            continue;
        }
        let p = plane(0, AGENT).await;
        let (_agent, sched, port) = real_agent_stack(&p, "s2-agent", extra).await;
        // Warm: one pod through the whole path, so the executor runs before the clock starts.
        let client = kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url")))
            .expect("client");
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let native = |name: String| {
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": "default" },
                "spec": { "runtimeClassName": "native", "terminationGracePeriodSeconds": 1,
                    "containers": [{ "name": "c", "image": "unused", "command": ["/bin/sleep", "3600"],
                        "resources": { "requests": { "cpu": "50m", "memory": "16Mi" } } }] } })
        };
        create_pods(&client, vec![native("s2-warm".into())]).await;
        wait_running(&api, "s2-warm", &p).await;
        let rv = current_version(&api).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let t0 = Instant::now();
        let watcher = {
            let (seen, api) = (seen.clone(), api.clone());
            tokio::spawn(async move {
                let Ok(stream) = api.watch(&WatchParams::default().timeout(290), &rv).await else {
                    return;
                };
                let mut stream = std::pin::pin!(stream);
                while let Ok(Some(ev)) = stream.try_next().await {
                    if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = ev {
                        note(&seen, &pod, t0.elapsed());
                    }
                }
            })
        };
        create_pods(&client, (0..pods).map(|i| native(format!("s2-{i}"))).collect()).await;
        let limit = Instant::now() + Duration::from_secs(120);
        while seen
            .lock()
            .expect("lock")
            .running
            .keys()
            .filter(|k| k.starts_with("s2-") && *k != "s2-warm")
            .count()
            < pods
            && Instant::now() < limit
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        watcher.abort();
        let (running, bound): (Vec<Duration>, Vec<Duration>) = {
            let s = seen.lock().expect("lock");
            (
                s.running.iter().filter(|(k, _)| *k != "s2-warm").map(|(_, d)| *d).collect(),
                s.bound.iter().filter(|(k, _)| *k != "s2-warm").map(|(_, d)| *d).collect(),
            )
        };
        let offers = metric(port, "km_scheduler_offers_used_total").await;
        println!(
            "{label:<28} pods {:>4}  all Running {}  create→bound p50 {:.2}s p99 {:.2}s  create→Running p50 {:.2}s p99 {:.2}s  offers/pod {:.3}  scheduler RSS {:.0} MiB",
            running.len(),
            if running.len() >= pods {
                format!("{:.2} s", running.iter().max().copied().unwrap_or_default().as_secs_f64())
            } else {
                "not all".into()
            },
            pct(bound.clone(), 0.5).as_secs_f64(),
            pct(bound, 0.99).as_secs_f64(),
            pct(running.clone(), 0.5).as_secs_f64(),
            pct(running, 0.99).as_secs_f64(),
            offers / (pods + 1) as f64,
            peak_rss_mib(sched.0.id()),
        );
        drop(sched);
        stop_executors(&p.api_url);
    }
}

/// A real km mesos-agent (8 cpus) on the plane's master and a scheduler whose executors it
/// runs; returns them and the scheduler's HTTP port.
async fn real_agent_stack(p: &Plane, hostname: &str, extra: &[&str]) -> (Proc, Proc, u16) {
    let agent_port = free_port();
    let agent = spawn(
        "km mesos-agent",
        Command::new(km())
            .arg("mesos-agent")
            .arg(format!("--master=127.0.0.1:{}", p.master_port))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={agent_port}"))
            .arg(format!("--hostname={hostname}"))
            .arg(format!("--work_dir={}", p.dir.path().join("agent").display()))
            .arg("--resources=cpus:8;mem:16384;disk:100000;ports:[31000-32000]"),
        p.dir.path().join("agent.log"),
    );
    wait_http(&format!("http://127.0.0.1:{agent_port}/state"), "km mesos-agent").await;
    let port = free_port();
    let sched = scheduler(p, port, &format!("file://{}", km().display()), extra, "scheduler.log");
    wait_http(&format!("http://127.0.0.1:{port}/healthz"), "km scheduler").await;
    (agent, sched, port)
}

/// The pods' current resourceVersion, to watch from.
async fn current_version(api: &Api<Pod>) -> String {
    let list = api.list(&ListParams::default().limit(1)).await.expect("list");
    list.metadata.resource_version.unwrap_or_default()
}

/// Spawns `km scheduler` on the plane with its HTTP endpoint on `port`.
fn scheduler(p: &Plane, port: u16, executor: &str, extra: &[&str], log: &str) -> Proc {
    spawn(
        "km scheduler",
        Command::new(km())
            .arg("scheduler")
            .arg(format!("--api-servers={}", p.api_url))
            .arg(format!("--mesos-master=127.0.0.1:{}", p.master_port))
            .arg(format!("--etcd-servers={}", p.etcd_url))
            .arg(format!("--port={port}"))
            .arg(format!("--executor-path={executor}"))
            .args(extra),
        p.dir.path().join(log),
    )
}

/// Waits until the pod is Running (two minutes at most).
async fn wait_running(api: &Api<Pod>, name: &str, p: &Plane) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running =
            api.get(name).await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running");
        if running {
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not run; see {}", p.dir.path().display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PIDs of the km executors that report to `api_url`.
fn executors_of(api_url: &str) -> Vec<u32> {
    let needle = format!("--api-servers={api_url}");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_executor =
            args.get(1).is_some_and(|a| *a == b"executor") && args.contains(&needle.as_bytes());
        if is_executor {
            pids.push(pid);
        }
    }
    pids
}

/// Asks the plane's executors to stop their pods and exit (the agent was killed, and they
/// would otherwise wait for it for their recovery timeout).
fn stop_executors(api_url: &str) {
    for pid in executors_of(api_url) {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    }
}

/// P through Mesos: pods created one after another (each once the previous one runs) on one
/// real agent, timed from create to Running as the executor reports it; then the executor's RSS.
async fn p_mesos(native_pods: usize, docker_pods: usize) {
    println!(
        "P through Mesos: pods created one after another, km scheduler → km mesos-agent → km executor"
    );
    let p = plane(0, AGENT).await;
    let (_agent, _sched, _port) = real_agent_stack(
        &p,
        "p-agent",
        &["--kubelet-pod-infra-container-image=km-test/pause:latest"],
    )
    .await;
    let client =
        kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url"))).expect("client");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: String, docker: bool| {
        let (runtime, image) = if docker {
            (Value::Null, "km-test/busybox:latest")
        } else {
            (json!("native"), "unused")
        };
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": "default" },
            "spec": { "runtimeClassName": runtime, "terminationGracePeriodSeconds": 1,
                "containers": [{ "name": "c", "image": image, "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "3600"],
                    "resources": { "requests": { "cpu": "20m", "memory": "16Mi" } } }] } })
    };
    create_pods(&client, vec![pod("p-warm".into(), false)]).await;
    wait_running(&api, "p-warm", &p).await;
    for (runtime, n, docker) in [("native", native_pods, false), ("docker", docker_pods, true)] {
        if n == 0 {
            continue;
        }
        let mut took = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("p-{runtime}-{i}");
            let t0 = Instant::now();
            create_pods(&client, vec![pod(name.clone(), docker)]).await;
            wait_running(&api, &name, &p).await;
            took.push(t0.elapsed());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "P {runtime:<7} pods {n:>4}  create→Running p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
            ms(pct(took.clone(), 0.5)),
            ms(pct(took.clone(), 0.9)),
            ms(pct(took.clone(), 0.99)),
            ms(took.iter().max().copied().unwrap_or_default()),
        );
    }
    let execs = executors_of(&p.api_url);
    let rss: Vec<String> = execs
        .iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            format!("{:.0} MiB (peak {:.0} MiB)", kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
        })
        .collect();
    println!(
        "  executor RSS with {} pods running: {}",
        native_pods + docker_pods + 1,
        rss.join(", ")
    );
    stop_executors(&p.api_url);
}

async fn d_deployment(replicas: usize, agents: usize) {
    use k8s_openapi::api::apps::v1::Deployment;
    println!(
        "D deployment: {replicas} replicas × 0.1 cpu / 128 MiB on {agents} simulated agents; then a rolling restart (maxSurge 25%, maxUnavailable 25%)"
    );
    let p = plane(agents, AGENT).await;
    let sp = free_port();
    let _sched = scheduler(&p, sp, "file:///usr/local/bin/km", &[], "scheduler.log");
    wait_http(&format!("http://127.0.0.1:{sp}/healthz"), "km scheduler").await;
    let cp = free_port();
    let cm = spawn(
        "km controller-manager",
        Command::new(km())
            .arg("controller-manager")
            .arg(format!("--master={}", p.api_url))
            .arg(format!("--port={cp}"))
            .arg("--address=127.0.0.1"),
        p.dir.path().join("controller-manager.log"),
    );
    wait_http(&format!("http://127.0.0.1:{cp}/healthz"), "km controller-manager").await;
    let client =
        kube::Client::try_from(kube::Config::new(p.api_url.parse().expect("url"))).expect("client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "d", "namespace": "default" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "d" } },
            "template": { "metadata": { "labels": { "app": "d" } },
                "spec": { "containers": [{ "name": "c", "image": "unused",
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } } }] } },
        },
    }))
    .expect("deployment");
    let t0 = Instant::now();
    deployments.create(&PostParams::default(), &d).await.expect("create the deployment");
    let (mut created, mut bound) = (None, None);
    let available = loop {
        let list = pods.list(&ListParams::default().labels("app=d")).await.expect("list").items;
        let live: Vec<&Pod> =
            list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        if created.is_none() && live.len() >= replicas {
            created = Some(t0.elapsed());
        }
        let on_node = live
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        if bound.is_none() && on_node >= replicas {
            bound = Some(t0.elapsed());
        }
        let status = deployments.get_status("d").await.ok().and_then(|d| d.status);
        if status.and_then(|s| s.available_replicas)
            == Some(i32::try_from(replicas).unwrap_or(i32::MAX))
        {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the deployment did not become available; see {}",
            p.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "  D create   {replicas} pods created {:.2} s, all bound {:.2} s, all available {:.2} s",
        secs(created),
        secs(bound),
        available.as_secs_f64()
    );
    let generation = deployments.get("d").await.expect("d").metadata.generation.unwrap_or(0) + 1;
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { "kubectl.kubernetes.io/restartedAt": "bench" } } } } });
    let t1 = Instant::now();
    deployments
        .patch("d", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("restart");
    let (mut fewest, mut most) = (usize::MAX, 0usize);
    let restarted = loop {
        let list = pods.list(&ListParams::default().labels("app=d")).await.expect("list").items;
        let live = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count();
        let ready = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        fewest = fewest.min(ready);
        most = most.max(live);
        let s = deployments.get_status("d").await.ok().and_then(|d| d.status).unwrap_or_default();
        let n = Some(i32::try_from(replicas).unwrap_or(i32::MAX));
        if s.observed_generation >= Some(generation)
            && s.updated_replicas == n
            && s.available_replicas == n
            && s.replicas == n
        {
            break t1.elapsed();
        }
        assert!(
            t1.elapsed() < Duration::from_secs(900),
            "the restart did not finish; see {}",
            p.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "  D restart  every pod replaced in {:.2} s; fewest Ready pods seen {fewest}, most pods seen {most}",
        restarted.as_secs_f64()
    );
    println!(
        "  controller-manager: peak RSS {:.1} MiB, CPU {:.1} s",
        peak_rss_mib(cm.0.id()),
        cpu_secs(cm.0.id())
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let which = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .cloned()
        .unwrap_or_else(|| "all".into());
    let pods: usize = flag("--pods").unwrap_or(10_000);
    let agents: usize = flag("--agents").unwrap_or(1_000);
    let baseline = !args.iter().any(|a| a == "--no-baseline");
    assert!(
        km().is_file(),
        "{} is missing: cargo build --release -p km (or set KM_BIN)",
        km().display()
    );
    if which == "s1" || which == "all" {
        s1(pods, agents, baseline).await;
    }
    if which == "s2" || which == "all" {
        s2(baseline).await;
    }
    if which == "s3" || which == "all" {
        s3(pods.min(5_000), agents, baseline).await;
    }
    if which == "p" || which == "all" {
        p_mesos(flag("--native").unwrap_or(200), flag("--docker").unwrap_or(50)).await;
    }
    if which == "s4" || which == "all" {
        s4(pods, agents, flag("--ha-lease-ttl").unwrap_or(2)).await;
    }
    if which == "d" || which == "all" {
        d_deployment(flag("--replicas").unwrap_or(1_000), agents.min(100)).await;
    }
}
