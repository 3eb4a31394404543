//! The chaos run: a whole km cluster — etcd, two km apiservers, km mesos-master with simulated
//! agents and its registry on disk, two real km mesos-agents, two `km scheduler --ha` and two
//! `km controller-manager`s — runs two Deployments, one on the simulated agents and one of
//! native processes on the real agents. Then, in turn: kill -9 of the leading scheduler, of the
//! leading controller-manager, of the master (restarted over its registry), of an agent
//! (restarted), of an executor, of the apiserver the components use (restarted), and of etcd
//! (restarted). After each, a new pod is created, and the run waits until the cluster has
//! recovered and counts:
//!
//! - pods lost: replicas missing from a Deployment, the new pod not Running, and pods the API
//!   says are Running that no Mesos task runs;
//! - pods running twice: a pod with two live Mesos tasks, or two processes on the agents;
//! - orphans: processes of pods that no longer exist;
//! - tasks without pods: live Mesos tasks whose pod is gone or bound elsewhere.
//!
//! All must be 0; the time each step took to recover is printed. The size is `KM_CHAOS_PODS`
//! (200 by default, what CI runs); `scripts/chaos.sh` runs 1,000.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::support::apiserver::{ApiServer, http};
use crate::support::cluster::{KmCluster, tail};
use crate::support::process::{Proc, wait_until};
use crate::support::{free_port, km_bin};

/// How long one step may take to recover.
const RECOVERY: Duration = Duration::from_secs(90);

/// Resources of each real agent.
const REAL_AGENT: &str = "cpus:4;mem:8192;disk:10000;ports:[31000-31100]";

/// Controller-manager leader election, short so a takeover fits a test.
const CM_LEASE: [&str; 3] = [
    "--leader-elect-lease-duration=8s",
    "--leader-elect-renew-deadline=6s",
    "--leader-elect-retry-period=1s",
];

/// What a count found.
#[derive(Debug, Default)]
struct Census {
    lost: usize,
    twice: usize,
    orphans: usize,
    taskless: usize,
    /// Pods Running.
    running: usize,
    /// Pods being deleted.
    deleting: usize,
    /// UIDs of the pods Running (and not being deleted).
    uids: BTreeSet<String>,
    /// What is wrong, for the failure message.
    detail: Vec<String>,
}

impl Census {
    fn clean(&self) -> bool {
        self.lost + self.twice + self.orphans + self.taskless + self.deleting == 0
    }

    fn line(&self) -> String {
        format!(
            "pods Running {:>5}  lost {}  running twice {}  orphans {}  tasks without pods {}",
            self.running, self.lost, self.twice, self.orphans, self.taskless
        )
    }
}

/// A pod as the count sees it.
struct PodView {
    name: String,
    node: Option<String>,
    running: bool,
    deleting: bool,
}

struct Chaos {
    c: KmCluster,
    /// The second API server; the test's own client talks to it.
    b: ApiServer,
    schedulers: Vec<(Option<Proc>, u16)>,
    cms: Vec<(Option<Proc>, u16, String)>,
    agents: BTreeMap<String, Proc>,
    run: String,
    /// Deployment (app label) → replicas.
    apps: Vec<(String, usize)>,
    /// Bare pods created after each step; each must be Running.
    probes: Vec<String>,
    /// Components that exited by themselves (restarted, as a supervisor would).
    exits: Vec<String>,
    pods: Api<Pod>,
}

impl Chaos {
    fn logs(&self) -> String {
        let mut out = format!("--- schedulers\n{}\n", tail(&self.c.scheduler_log(), 60));
        for (p, _, name) in &self.cms {
            if let Some(p) = p {
                out.push_str(&format!("--- {name}\n{}\n", tail(&p.log(), 30)));
            }
        }
        out.push_str(&format!("--- master\n{}\n", tail(&self.c.master.proc.log(), 30)));
        out.push_str(&format!("--- executors\n{}\n", tail(&self.c.executor_logs(), 40)));
        out
    }

    fn start_cm(&mut self, i: usize) {
        let port = self.cms[i].1;
        let api = if i == 0 { self.c.api.url() } else { self.b.url() };
        let mut cmd = Command::new(km_bin());
        cmd.arg("controller-manager")
            .arg(format!("--master={api}"))
            .arg(format!("--port={port}"))
            .args(CM_LEASE)
            .env("KM_LOG", "info,km_controller_manager=debug");
        let name = format!("cm-{i}");
        let log = self.c.dir.path().join(format!("{name}.log"));
        let mut proc = Proc::spawn("km controller-manager", cmd, &log);
        let up = wait_until(Duration::from_secs(60), || {
            assert!(proc.is_running(), "km controller-manager exited; its log:\n{}", proc.log());
            http(port, "GET", "/healthz", None).is_some_and(|(c, _)| c == 200)
        });
        assert!(up, "km controller-manager not healthy; its log:\n{}", proc.log());
        self.cms[i] = (Some(proc), port, name);
    }

    fn start_scheduler(&mut self, i: usize) {
        let port = self.schedulers[i].1;
        let mut proc = self.c.spawn_scheduler(port, &[]);
        let up = wait_until(Duration::from_secs(60), || {
            assert!(proc.is_running(), "km scheduler exited; its log:\n{}", proc.log());
            http(port, "GET", "/healthz", None).is_some_and(|(c, _)| c == 200)
        });
        assert!(up, "km scheduler not healthy; its log:\n{}", proc.log());
        self.schedulers[i].0 = Some(proc);
    }

    /// The index of the scheduler that leads, if one does.
    fn leading_scheduler(&self) -> Option<usize> {
        self.schedulers.iter().position(|(p, port)| {
            p.is_some()
                && http(*port, "GET", "/healthz", None).is_some_and(|(c, b)| c == 200 && b == "ok")
        })
    }

    /// The index of the controller-manager holding the Lease, if one does.
    async fn leading_cm(&self) -> Option<usize> {
        let leases: Api<Lease> = Api::namespaced(self.pods.clone().into_client(), "kube-system");
        let lease = leases.get_opt("kube-controller-manager").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        self.cms.iter().position(|(p, _, _)| {
            p.as_ref().is_some_and(|p| p.log().contains(&format!("identity={holder}")))
        })
    }

    /// Creates a bare pod on a simulated agent; it must run.
    async fn probe(&mut self, step: &str) {
        let name = format!("probe-{step}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "chaos": "probe" } },
            "spec": {
                "nodeSelector": { "k8s.mesosphere.io/attribute-kind": "sim" },
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "c", "image": "unused", "command": ["sleep", "3600"],
                    "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } }
                }]
            }
        }))
        .expect("probe pod");
        // Retried: the API may be away for a while (etcd restarting).
        let deadline = Instant::now() + RECOVERY;
        loop {
            match self.pods.create(&PostParams::default(), &pod).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot create {name}: {e}\n{}",
                        self.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        self.probes.push(name);
    }

    /// Counts what is wrong now (`None` when the master cannot be asked).
    async fn census(&self) -> Option<Census> {
        let mut census = Census::default();
        let list = self.pods.list(&ListParams::default()).await.ok()?.items;
        let mut pods: BTreeMap<String, PodView> = BTreeMap::new();
        let mut by_app: BTreeMap<String, usize> = BTreeMap::new();
        for p in &list {
            let (Some(uid), Some(name)) = (p.metadata.uid.clone(), p.metadata.name.clone()) else {
                continue;
            };
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let deleting = p.metadata.deletion_timestamp.is_some();
            census.running += usize::from(running);
            census.deleting += usize::from(deleting);
            if running && !deleting {
                census.uids.insert(uid.clone());
                if let Some(app) = p.metadata.labels.as_ref().and_then(|l| l.get("app")) {
                    *by_app.entry(app.clone()).or_default() += 1;
                }
            }
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            pods.insert(uid, PodView { name, node, running, deleting });
        }
        for (app, replicas) in &self.apps {
            let have = by_app.get(app).copied().unwrap_or(0);
            if have < *replicas {
                census.lost += replicas - have;
                census.detail.push(format!("{app}: {have} of {replicas} Running"));
            }
        }
        for probe in &self.probes {
            if !pods.values().any(|p| &p.name == probe && p.running) {
                census.lost += 1;
                census.detail.push(format!("{probe} not Running"));
            }
        }
        // Mesos's view: live tasks by pod, on which agent.
        let agents = operator(self.c.master.port, "GET_AGENTS")?;
        let hostnames: BTreeMap<String, String> = agents["get_agents"]["agents"]
            .as_array()?
            .iter()
            .filter_map(|a| {
                let info = &a["agent_info"];
                Some((info["id"]["value"].as_str()?.to_owned(), info["hostname"].as_str()?.into()))
            })
            .collect();
        let tasks = operator(self.c.master.port, "GET_TASKS")?;
        let mut tasks_of: BTreeMap<String, usize> = BTreeMap::new();
        for t in tasks["get_tasks"]["tasks"].as_array().into_iter().flatten() {
            let state = t["state"].as_str().unwrap_or_default();
            if !matches!(state, "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING")
            {
                continue;
            }
            let uid = t["labels"]["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["key"] == "io.kubernetes.pod.uid")
                .and_then(|l| l["value"].as_str())
                .unwrap_or_default()
                .to_owned();
            let host = t["agent_id"]["value"].as_str().and_then(|a| hostnames.get(a));
            match pods.get(&uid) {
                Some(p) if p.node.as_ref() == host || p.deleting => {}
                Some(p) => {
                    census.taskless += 1;
                    census
                        .detail
                        .push(format!("task of {} on {host:?}, pod on {:?}", p.name, p.node));
                }
                None => {
                    census.taskless += 1;
                    census.detail.push(format!("task {} without a pod", t["task_id"]["value"]));
                }
            }
            *tasks_of.entry(uid).or_default() += 1;
        }
        for (uid, n) in &tasks_of {
            if *n > 1 {
                census.twice += 1;
                let name = pods.get(uid).map_or(uid.as_str(), |p| p.name.as_str());
                census.detail.push(format!("{name}: {n} live tasks"));
            }
        }
        for (uid, p) in &pods {
            if p.running && !p.deleting && !tasks_of.contains_key(uid) {
                census.lost += 1;
                census.detail.push(format!("{} Running in the API, no live task", p.name));
            }
        }
        // The agents' view: the processes of the real pods.
        let mut processes: BTreeMap<String, usize> = BTreeMap::new();
        for (pid, uid) in pod_processes(&self.run) {
            *processes.entry(uid.clone()).or_default() += 1;
            if pods.get(&uid).is_none_or(|p| p.deleting) {
                census.orphans += 1;
                census.detail.push(format!("process {pid} of gone pod {uid}"));
            }
        }
        for p in &list {
            let app = p.metadata.labels.as_ref().and_then(|l| l.get("app"));
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if app.is_some_and(|a| a == "real")
                && census.uids.contains(&uid)
                && !processes.contains_key(&uid)
            {
                census.lost += 1;
                census.detail.push(format!("{uid} Running in the API, no process"));
            }
        }
        for (uid, n) in processes {
            if n > 1 {
                census.twice += 1;
                census.detail.push(format!("pod {uid}: {n} processes"));
            }
        }
        Some(census)
    }

    /// Waits until a count finds nothing wrong (and `ready` holds); returns how long it took
    /// from `since` and the count. At the deadline, returns the last count.
    /// Restarts, as a supervisor would, what exited by itself (a leader that could not renew
    /// its lease in time exits by design), and notes it.
    fn revive(&mut self) {
        for i in 0..self.cms.len() {
            let (proc, _, name) = &mut self.cms[i];
            if let Some(p) = proc.as_mut()
                && !p.is_running()
            {
                self.exits.push(format!("{name} exited by itself:\n{}", tail(&p.log(), 8)));
                self.cms[i].0 = None;
                self.start_cm(i);
            }
        }
        for i in 0..self.schedulers.len() {
            if let Some(p) = self.schedulers[i].0.as_mut()
                && !p.is_running()
            {
                self.exits.push(format!("scheduler {i} exited by itself:\n{}", tail(&p.log(), 8)));
                self.schedulers[i].0 = None;
                self.start_scheduler(i);
            }
        }
    }

    async fn recover(
        &mut self,
        since: Instant,
        ready: &mut (dyn FnMut(&Chaos) -> bool + Send),
    ) -> (Duration, Census) {
        let deadline = since + RECOVERY;
        let mut last = Census::default();
        loop {
            self.revive();
            if ready(self)
                && let Some(c) = self.census().await
            {
                if c.clean() {
                    return (since.elapsed(), c);
                }
                last = c;
            }
            if Instant::now() > deadline {
                return (since.elapsed(), last);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// An operator API call to the master, as JSON.
fn operator(port: u16, call: &str) -> Option<Value> {
    let body = json!({ "type": call }).to_string();
    let (code, out) = http(port, "POST", "/api/v1", Some(("application/json", &body)))?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&out).ok()
}

/// (pid, pod UID) of every process the real pods of run `run` started.
fn pod_processes(run: &str) -> Vec<(u32, String)> {
    let marker = format!("KM_CHAOS_RUN={run}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&marker.as_bytes()) {
            continue;
        }
        // A native container's init (`km container-init`) carries the pod's environment
        // too; its program is the pod's process.
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"container-init".as_slice()) {
            continue;
        }
        // Zombies have no environment; a process being torn down is not counted.
        let uid = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"KM_CHAOS_UID="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(uid) = uid {
            out.push((pid, uid));
        }
    }
    out
}

fn deployment(app: &str, replicas: usize, real: Option<&str>) -> Deployment {
    let kind = if real.is_some() { "real" } else { "sim" };
    let mut spec = json!({
        "nodeSelector": { "k8s.mesosphere.io/attribute-kind": kind },
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "c", "image": "unused", "command": ["sleep", "100000"],
            "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } }
        }]
    });
    if let Some(run) = real {
        spec["runtimeClassName"] = json!("native");
        spec["containers"][0]["env"] = json!([
            { "name": "KM_CHAOS_RUN", "value": run },
            { "name": "KM_CHAOS_UID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.uid" } } }
        ]);
    }
    serde_json::from_value(json!({
        "metadata": { "name": app },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": app } },
            "strategy": { "type": "RollingUpdate" },
            "template": { "metadata": { "labels": { "app": app } }, "spec": spec }
        }
    }))
    .expect("deployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_loses_nothing_runs_nothing_twice_and_leaves_no_orphans() {
    let total: usize =
        std::env::var("KM_CHAOS_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(200).max(20);
    let real = (total / 25).clamp(4, 40);
    let sim = total - real;
    // 4 cpus each hold 37 pods of 0.1 cpu beside an executor; room is left for replacements.
    let sim_agents = sim.div_ceil(25).max(2);
    let run = format!("{}-{}", std::process::id(), free_port());
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("km-chaos-master-").tempdir().expect("tempdir");
    let master_flags = [
        format!("--work_dir={}", work.path().display()),
        format!("--simulate-agents={sim_agents}"),
        "--simulate-agent-attributes=kind:sim;rack:r{i%10}".to_owned(),
    ];
    let master_flags: Vec<&str> = master_flags.iter().map(String::as_str).collect();
    let mut c = KmCluster::start(&master_flags, &["--ha", "--ha-lease-ttl=2s"]);
    let first = c.scheduler.take().expect("the first scheduler");
    let first_port = c.scheduler_port;
    let token = c.dir.path().join("proxy-token");
    let b = ApiServer::start_with(&c.etcd, &[&format!("--kubelet-token-file={}", token.display())]);
    let mut agents = BTreeMap::new();
    for name in ["real-a", "real-b"] {
        agents.insert(name.to_owned(), c.start_agent_with(name, REAL_AGENT, "kind:real;rack:r1"));
    }
    let pods: Api<Pod> = Api::namespaced(b.client(), "default");
    let mut x = Chaos {
        c,
        b,
        schedulers: vec![(Some(first), first_port), (None, free_port())],
        cms: vec![(None, free_port(), String::new()), (None, free_port(), String::new())],
        agents,
        run: run.clone(),
        apps: vec![("sim".into(), sim), ("real".into(), real)],
        probes: Vec::new(),
        exits: Vec::new(),
        pods,
    };
    x.start_scheduler(1);
    x.start_cm(0);
    x.start_cm(1);
    println!(
        "chaos run: {total} pods ({sim} on {sim_agents} simulated agents, {real} native on 2 real \
         agents); cluster up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deployments: Api<Deployment> = Api::namespaced(x.b.client(), "default");
    let applied = Instant::now();
    for d in [deployment("sim", sim, None), deployment("real", real, Some(&run))] {
        deployments.create(&PostParams::default(), &d).await.expect("create a deployment");
    }
    let (took, census) = x.recover(applied, &mut |_| true).await;
    assert!(
        census.clean(),
        "the pods never all ran: {}\n{:?}\n{}",
        census.line(),
        census.detail,
        x.logs()
    );
    println!("{:<36} {:>6.1} s  {}", "all pods Running", took.as_secs_f64(), census.line());

    let mut failures = Vec::new();
    // Each step: how long recovery took, the count, and how many of the pods Running before
    // it were replaced (only the deleted ones and those of the killed executor may be).
    let mut before = census.uids;
    let mut report = |what: &str,
                      took: Duration,
                      census: &Census,
                      may_replace: usize,
                      exits: Vec<String>,
                      logs: &dyn Fn() -> String| {
        let replaced = before.difference(&census.uids).count();
        for exit in &exits {
            println!("  ({exit})");
            // Exiting on a lost lease is by design; a panic is not.
            if exit.contains("panicked") {
                failures.push(format!("{what}: {exit}"));
            }
        }
        println!(
            "{what:<36} {:>6.1} s  {}  replaced {replaced}",
            took.as_secs_f64(),
            census.line()
        );
        if !census.clean() || replaced > may_replace {
            // Said at once: a run that then outlasts the test's time limit still tells why.
            println!("  what is wrong: {:?}\n{}", census.detail, logs());
            failures.push(format!(
                "{what}: {}, replaced {replaced} (at most {may_replace})\n{:?}\n{}",
                census.line(),
                census.detail,
                logs()
            ));
        }
        before = census.uids.clone();
        replaced
    };

    // 1. The leading scheduler.
    let leader = x.leading_scheduler().expect("a scheduler leads");
    let killed = Instant::now();
    if let Some(mut p) = x.schedulers[leader].0.take() {
        p.kill();
    }
    x.probe("scheduler").await;
    let (took, census) = x
        .recover(killed, &mut |x: &Chaos| x.leading_scheduler().is_some_and(|l| l != leader))
        .await;
    let _ = report(
        "kill -9 leading scheduler",
        took,
        &census,
        0,
        std::mem::take(&mut x.exits),
        &|| x.logs(),
    );
    x.start_scheduler(leader);

    // 2. The leading controller-manager; a pod of each Deployment is deleted at once, which
    // only a new leader replaces.
    let leader = loop {
        if let Some(l) = x.leading_cm().await {
            break l;
        }
        assert!(killed.elapsed() < RECOVERY, "no controller-manager leads\n{}", x.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let killed = Instant::now();
    if let Some(mut p) = x.cms[leader].0.take() {
        p.kill();
    }
    for app in ["sim", "real"] {
        let list = x.pods.list(&ListParams::default().labels(&format!("app={app}"))).await;
        if let Some(name) = list.ok().and_then(|l| l.items.into_iter().next()?.metadata.name) {
            x.pods.delete(&name, &DeleteParams::default()).await.expect("delete a pod");
        }
    }
    x.probe("controller-manager").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let _ = report(
        "kill -9 leading controller-manager",
        took,
        &census,
        2,
        std::mem::take(&mut x.exits),
        &|| x.logs(),
    );
    x.start_cm(leader);

    // 3. The Mesos master, restarted over its registry (and its simulated agents' checkpoint).
    let killed = Instant::now();
    x.c.master.restart();
    x.probe("master").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let _ = report(
        "kill -9 mesos-master, restarted",
        took,
        &census,
        0,
        std::mem::take(&mut x.exits),
        &|| x.logs(),
    );

    // 4. One real agent, restarted: its executor and pods go on.
    let killed = Instant::now();
    if let Some(mut p) = x.agents.remove("real-a") {
        p.kill();
    }
    let agent = x.c.start_agent_with("real-a", REAL_AGENT, "kind:real;rack:r1");
    x.agents.insert("real-a".into(), agent);
    x.probe("agent").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let _ = report(
        "kill -9 mesos-agent, restarted",
        took,
        &census,
        0,
        std::mem::take(&mut x.exits),
        &|| x.logs(),
    );

    // 5. One executor: its pods are replaced, its processes removed.
    let executor = x.c.executor_pids().into_iter().next().expect("an executor runs");
    let its_pods = pod_processes(&run).len();
    let killed = Instant::now();
    let _ = Command::new("kill").args(["-9", &executor.to_string()]).status();
    x.probe("executor").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let replaced =
        report("kill -9 executor", took, &census, its_pods, std::mem::take(&mut x.exits), &|| {
            x.logs()
        });
    assert!(replaced > 0, "the killed executor's pods were not replaced\n{}", x.logs());

    // 6. The API server the components use, restarted.
    let killed = Instant::now();
    x.c.api.restart();
    x.probe("apiserver").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let _ = report(
        "kill -9 apiserver, restarted",
        took,
        &census,
        0,
        std::mem::take(&mut x.exits),
        &|| x.logs(),
    );

    // 7. etcd, restarted.
    let killed = Instant::now();
    x.c.etcd.kill();
    x.c.etcd.start_again();
    x.probe("etcd").await;
    let (took, census) = x.recover(killed, &mut |_| true).await;
    let _ =
        report("kill -9 etcd, restarted", took, &census, 0, std::mem::take(&mut x.exits), &|| {
            x.logs()
        });

    let seen: BTreeSet<&str> = x.probes.iter().map(String::as_str).collect();
    assert_eq!(seen.len(), 7, "one probe pod per step: {seen:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
