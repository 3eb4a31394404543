//! Cold-standby HA as the original k8sm recipe runs it, with the manifests of `manifests/`:
//! three "master hosts" — network namespaces on a private bridge, each with its own address and
//! host name — each run an etcd member (one cluster of three), `km kubelet` with a manifest
//! directory holding `podmaster.yaml` and `apiserver.yaml`, and a manifest source directory
//! holding `scheduler.yaml` and `controller-manager.yaml`, which the podmasters (keys
//! `scheduler` and `controller`) copy into the manifest directory of one host each. Mesos (a
//! master and one agent) runs on the machine itself; a small TCP balancer stands in for the
//! recipe's load balancer in front of the API servers and schedulers.
//!
//! Killing every process of the host whose scheduler leads moves the scheduler and the
//! controller-manager to another host; a Deployment scaled afterwards runs, and the pod that
//! ran before is neither killed nor launched again. The times are printed (never asserted).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::process::Proc;
use crate::support::{free_port, km_bin};

const WAIT: Duration = Duration::from_secs(120);
const HOSTS: usize = 3;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(sh(args), "{args:?} failed");
}

/// The bridge, the namespaces and the firewall rule, removed on drop (with every process left
/// in the namespaces).
struct Net {
    id: String,
    subnet: String,
}

impl Net {
    fn bridge(&self) -> String {
        format!("kmha{}br", self.id)
    }
    fn ns(&self, i: usize) -> String {
        format!("kmha{}-{i}", self.id)
    }
    fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    fn create() -> Net {
        let id = format!("{:04}", std::process::id() % 10_000);
        let subnet = format!("10.213.{}", 1 + std::process::id() % 250);
        let net = Net { id, subnet };
        let br = net.bridge();
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&["ip", "addr", "add", &format!("{}/24", net.gateway()), "dev", &br]);
        must(&["ip", "link", "set", &br, "up"]);
        // Docker's FORWARD policy would drop bridged traffic between the hosts.
        let _ = sh(&["iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        for i in 1..=HOSTS {
            let ns = net.ns(i);
            let veth = format!("kmha{}v{i}", net.id);
            must(&["ip", "netns", "add", &ns]);
            must(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            must(&["ip", "link", "set", &veth, "master", &br, "up"]);
            let inns = |args: &[&str]| {
                let mut a = vec!["ip", "netns", "exec", &ns];
                a.extend_from_slice(args);
                must(&a);
            };
            inns(&["ip", "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"]);
            inns(&["ip", "link", "set", "eth0", "up"]);
            inns(&["ip", "link", "set", "lo", "up"]);
            inns(&["ip", "route", "add", "default", "via", &net.gateway()]);
        }
        net
    }

    /// Kills every process of host `i` at once, as a power cut would.
    fn kill_host(&self, i: usize) {
        for _ in 0..20 {
            let out = Command::new("ip").args(["netns", "pids", &self.ns(i)]).output();
            let pids =
                out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                return;
            }
            let mut args = vec!["kill", "-9"];
            args.extend(pids);
            let _ = sh(&args);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=HOSTS {
            self.kill_host(i);
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
            // The pair goes at once even while a socket lingering in the namespace keeps it.
            let _ = sh(&["ip", "link", "del", &format!("kmha{}v{i}", self.id)]);
        }
        let br = self.bridge();
        let _ = sh(&["iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        let _ = sh(&["ip", "link", "del", &br]);
    }
}

/// Stops everything in an order that leaves nothing behind: the master hosts first (so no
/// scheduler launches anything more), then the executors on the agent (SIGTERM: they stop
/// their pods), then the agent and the Mesos master, then the network.
struct Teardown {
    agent_dir: PathBuf,
    agent: Option<Proc>,
    master: Option<Proc>,
    net: Net,
}

impl Teardown {
    fn executors(&self) -> Vec<String> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path().join("cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&self.agent_dir))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Stops the executors; whether they all exited on SIGTERM.
    fn stop_executors(&self) -> bool {
        for i in 1..=HOSTS {
            self.net.kill_host(i);
        }
        for pid in self.executors() {
            let _ = sh(&["kill", "-TERM", &pid]);
        }
        crate::support::process::wait_until(Duration::from_secs(30), || self.executors().is_empty())
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if !self.stop_executors() {
            for pid in self.executors() {
                let _ = sh(&["kill", "-KILL", &pid]);
            }
        }
        drop(self.agent.take());
        drop(self.master.take());
    }
}

/// A TCP balancer: each connection goes to the first backend that accepts it.
async fn balancer(listen: SocketAddr, backends: Vec<SocketAddr>) {
    let Ok(listener) = tokio::net::TcpListener::bind(listen).await else { return };
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        let backends = backends.clone();
        tokio::spawn(async move {
            for b in backends {
                let connect = tokio::net::TcpStream::connect(b);
                if let Ok(Ok(mut out)) =
                    tokio::time::timeout(Duration::from_millis(500), connect).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    return;
                }
            }
        });
    }
}

/// `manifests/<name>` with the recipe's variables filled in.
fn render(name: &str, vars: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests").join(name);
    let mut text = std::fs::read_to_string(&path).expect("read a manifest");
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    let left = text.lines().find(|l| {
        let l = l.trim_start();
        !l.starts_with('#') && !l.starts_with(';') && l.contains("${")
    });
    assert!(left.is_none(), "{name}: a variable is left: {left:?}");
    text
}

async fn running_on(pods: &Api<Pod>, prefix: &str) -> Vec<String> {
    let Ok(list) = pods.list(&ListParams::default()).await else { return Vec::new() };
    list.items
        .iter()
        .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_master_host_moves_scheduler_and_controller_manager() {
    let dir = tempfile::Builder::new().prefix("km-cold-").tempdir().expect("tempdir");
    let mut teardown = Teardown {
        agent_dir: dir.path().join("agent"),
        agent: None,
        master: None,
        net: Net::create(),
    };
    let net = &teardown.net;
    let gw = net.gateway();
    let (api_lb, sched_lb) = (free_port(), free_port());
    let backends = |port: u16| -> Vec<SocketAddr> {
        (1..=HOSTS).filter_map(|i| format!("{}:{port}", net.ip(i)).parse().ok()).collect()
    };
    tokio::spawn(balancer(format!("{gw}:{api_lb}").parse().expect("addr"), backends(6443)));
    // The cluster's certificates: the components reach the API servers over HTTPS as their
    // own users (RBAC), as the manifests say.
    let pki = dir.path().join("pki");
    let mut make_pki = Command::new("bash");
    make_pki
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-pki.sh"))
        .arg(&pki)
        .arg(format!("https://{gw}:{api_lb}"))
        .arg(&gw)
        .args((1..=HOSTS).map(|i| net.ip(i)));
    let made = make_pki.output().expect("scripts/make-pki.sh");
    assert!(made.status.success(), "make-pki.sh: {}", String::from_utf8_lossy(&made.stderr));
    tokio::spawn(balancer(format!("{gw}:{sched_lb}").parse().expect("addr"), backends(10251)));

    // Mesos on the machine itself.
    let master_port = free_port();
    let mut master = Command::new(km_bin());
    master
        .args(["mesos-master", &format!("--ip={gw}"), &format!("--port={master_port}")])
        .arg(format!("--work_dir={}", dir.path().join("mesos-master").display()))
        .arg("--allocation_interval=100ms");
    teardown.master =
        Some(Proc::spawn("km mesos-master", master, &dir.path().join("mesos-master.log")));
    let mut agent = Command::new(km_bin());
    agent
        .args(["mesos-agent", &format!("--master={gw}:{master_port}"), "--ip=127.0.0.1"])
        .arg(format!("--port={}", free_port()))
        .arg("--hostname=agent-1")
        .arg(format!("--work_dir={}", dir.path().join("agent").display()))
        .arg("--resources=cpus:4;mem:4096;disk:4096;ports:[31000-31099]");
    teardown.agent = Some(Proc::spawn("km mesos-agent", agent, &dir.path().join("agent.log")));

    // The three master hosts.
    let etcd_servers =
        (1..=HOSTS).map(|i| format!("http://{}:2379", net.ip(i))).collect::<Vec<_>>().join(",");
    let cluster = (1..=HOSTS)
        .map(|i| format!("m{i}=http://{}:2380", net.ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    // The mount points of the recipe's paths (each host binds its own directories there).
    for d in ["/etc/kubernetes", "/srv/km/manifests"] {
        std::fs::create_dir_all(d).expect("mount point");
    }
    let mut hosts: Vec<PathBuf> = Vec::new();
    for i in 1..=HOSTS {
        let root = dir.path().join(format!("host-{i}"));
        let (manifests, source) = (root.join("etc/manifests"), root.join("source"));
        for d in [&manifests, &source, &root.join("log")] {
            std::fs::create_dir_all(d).expect("host dirs");
        }
        let cloud = root.join("etc/mesos-cloud.conf");
        let vars = [
            ("KM_IMAGE", "km:dev".to_owned()),
            ("KM_PATH", km_bin().display().to_string()),
            ("KM_RUNTIME_CLASS", "native".to_owned()),
            ("ETCD_SERVERS", etcd_servers.clone()),
            ("APISERVER_ADDR", format!("{gw}:{api_lb}")),
            ("ADVERTISED_ADDRESS", format!("{gw}:{sched_lb}")),
            ("MESOS_MASTER", format!("{gw}:{master_port}")),
            ("HOST_IP", net.ip(i)),
            ("MANIFEST_SOURCE_DIR", "/srv/km/manifests".to_owned()),
            ("KUBELET_MANIFEST_DIR", "/etc/kubernetes/manifests".to_owned()),
            ("CLOUD_CONFIG", "/etc/kubernetes/mesos-cloud.conf".to_owned()),
            ("PKI_DIR", pki.display().to_string()),
            ("NODE_KUBECONFIG", pki.join("node.kubeconfig").display().to_string()),
        ];
        std::fs::write(&cloud, render("mesos-cloud.conf", &vars)).expect("cloud config");
        for f in ["scheduler.yaml", "controller-manager.yaml"] {
            std::fs::write(source.join(f), render(f, &vars)).expect("source manifest");
        }
        for f in ["podmaster.yaml", "apiserver.yaml"] {
            std::fs::write(manifests.join(f), render(f, &vars)).expect("manifest");
        }
        // Each host sees its own /etc/kubernetes and /srv/km/manifests (the recipe's paths) in a
        // mount namespace of its own.
        let script = format!(
            "hostname master-{i}\n\
             mount --bind {root}/etc /etc/kubernetes && mount --bind {root}/source /srv/km/manifests || exit 1\n\
             {etcd} --name m{i} --data-dir {root}/etcd \
               --listen-client-urls http://{ip}:2379,http://127.0.0.1:2379 --advertise-client-urls http://{ip}:2379 \
               --listen-peer-urls http://{ip}:2380 --initial-advertise-peer-urls http://{ip}:2380 \
               --initial-cluster {cluster} --initial-cluster-state new >{root}/log/etcd.log 2>&1 &\n\
             while [ ! -e {root}/go ]; do sleep 0.2; done\n\
             exec {km} kubelet --manifest-dir=/etc/kubernetes/manifests --file-check-frequency=1s \
               --root-dir={root}/kubelet --hostname-override=master-{i} --node-ip={ip} \
               --api-servers=http://127.0.0.1:8080 --docker=disabled --cgroup-root=kmha{id}-{i}\n",
            etcd = "etcd",
            root = root.display(),
            ip = net.ip(i),
            km = km_bin().display(),
            id = net.id,
        );
        // nsenter, not `ip netns exec`: that one mounts a fresh /sys, without the cgroup
        // hierarchies the native runtime needs.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", net.ns(i)))
            .args(["unshare", "--uts", "--mount", "sh", "-c", &script])
            .env("KM_LOG", "info");
        // The host's processes are killed with the namespace (Net's drop), not through Proc.
        std::mem::forget(Proc::spawn(
            &format!("master host {i}"),
            cmd,
            &root.join("log/kubelet.log"),
        ));
        hosts.push(root);
    }
    let logs = || {
        let mut out = String::new();
        // The container logs of the scheduler and controller-manager pods.
        let mut stack: Vec<PathBuf> = hosts.iter().map(|h| h.join("kubelet")).collect();
        stack.push(dir.path().join("agent"));
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let name = p.display().to_string();
                if p.is_dir() {
                    stack.push(p);
                } else if ((name.contains("scheduler-master")
                    || name.contains("controller-manager-master"))
                    && name.ends_with(".log"))
                    || (name.contains("k8sm-executor") && name.ends_with("/stderr"))
                {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    out.push_str(&format!("--- {name}\n"));
                    out.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
                }
            }
        }
        for f in ["mesos-master.log", "agent.log"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            out.push_str(&format!("--- {f}\n"));
            out.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
        }
        for (i, h) in hosts.iter().enumerate() {
            for f in ["kubelet.log", "etcd.log"] {
                let text = std::fs::read_to_string(h.join("log").join(f)).unwrap_or_default();
                // Connection retries while the local API server starts say nothing new.
                let tail: Vec<&str> =
                    text.lines().rev().filter(|l| !l.contains("kube_client")).take(15).collect();
                out.push_str(&format!("--- host {} {f}\n", i + 1));
                out.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
            }
        }
        out
    };

    // The test acts as the cluster's administrator (system:masters).
    let admin =
        kube::config::Kubeconfig::read_from(pki.join("admin.kubeconfig")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(admin, &Default::default())
        .await
        .expect("admin kubeconfig");
    let client = kube::Client::try_from(config).expect("client");
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let started = Instant::now();
    let deadline = started + WAIT;
    // The first host's kubelet starts first, so its podmasters take both keys; the others
    // stand by (their etcd members run from the start: the cluster needs two for a quorum).
    std::fs::write(hosts[0].join("go"), "").expect("go");
    let leader = loop {
        let s = running_on(&system, "km-scheduler-").await;
        let c = running_on(&system, "km-controller-manager-").await;
        if s.len() == 1 && c.len() == 1 {
            assert_eq!(s[0].trim_start_matches("km-scheduler-"), "master-1");
            assert_eq!(c[0].trim_start_matches("km-controller-manager-"), "master-1");
            for h in &hosts[1..] {
                std::fs::write(h.join("go"), "").expect("go");
            }
            break s[0].trim_start_matches("km-scheduler-").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduler and controller-manager came up:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("cold standby: scheduler leads on {leader} after {:?}", started.elapsed());

    // A Deployment through Mesos.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "cold", "namespace": "default" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "cold" } },
            "template": { "metadata": { "labels": { "app": "cold" } },
                "spec": { "runtimeClassName": "native",
                    "containers": [{ "name": "sleep", "image": "none", "command": ["/bin/sleep", "3600"] }] } } },
    }))
    .expect("deployment");
    loop {
        match deployments.create(&PostParams::default(), &d).await {
            // A retry of a create whose answer was lost finds it made.
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) => assert!(Instant::now() < deadline, "cannot create the Deployment: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let first = loop {
        let r = running_on(&pods, "cold-").await;
        if r.len() == 1 {
            break r[0].clone();
        }
        assert!(Instant::now() < deadline, "the Deployment's pod never ran:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Its status came from the executor over HTTPS as a node (RBAC allowed the write): its
    // managedFields name the executor's client for the status subresource.
    loop {
        let pod = pods.get(&first).await.expect("the pod");
        let by_executor = pod.metadata.managed_fields.iter().flatten().any(|e| {
            e.manager.as_deref() == Some("km-kubelet") && e.subresource.as_deref() == Some("status")
        });
        if by_executor {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no status write from the executor: {:?}\n{}",
            pod.metadata.managed_fields,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let task = |p: &Pod| {
        p.metadata.annotations.as_ref().and_then(|a| a.get("k8s.mesosphere.io/taskId")).cloned()
    };
    let first_task = task(&pods.get(&first).await.expect("the pod"));
    assert!(first_task.is_some(), "the pod runs as a Mesos task");

    // Power cut on the leader's host.
    let host: usize = leader.trim_start_matches("master-").parse().expect("host number");
    let cut = Instant::now();
    net.kill_host(host);
    let deadline = cut + WAIT;
    let (mut sched_at, mut cm_at) = (None, None);
    while sched_at.is_none() || cm_at.is_none() {
        let other = |names: Vec<String>| names.iter().any(|n| !n.ends_with(&format!("-{leader}")));
        if sched_at.is_none() && other(running_on(&system, "km-scheduler-").await) {
            sched_at = Some(cut.elapsed());
        }
        if cm_at.is_none() && other(running_on(&system, "km-controller-manager-").await) {
            cm_at = Some(cut.elapsed());
        }
        assert!(Instant::now() < deadline, "no other host took over:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "cold standby: after the kill, scheduler Running elsewhere in {sched_at:?}, controller-manager in {cm_at:?}"
    );

    // Both work: the Deployment scaled to 2 runs, and the first pod was left alone.
    let scale = json!({ "spec": { "replicas": 2 } });
    // A pooled connection to the dead host's API server fails once.
    while deployments.patch("cold", &PatchParams::default(), &Patch::Merge(&scale)).await.is_err() {
        assert!(Instant::now() < deadline, "cannot scale the Deployment");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    loop {
        if running_on(&pods, "cold-").await.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the scaled Deployment never ran 2 pods:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("cold standby: the second replica Running {:?} after the kill", cut.elapsed());
    let mut still = pods.get(&first).await;
    while still.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        still = pods.get(&first).await;
    }
    let still = still.expect("the first pod is still there");
    assert_eq!(task(&still), first_task, "the first pod was not launched again");

    // Nothing is left behind: the executors stop their pods and exit on SIGTERM.
    assert!(
        teardown.stop_executors(),
        "the executors did not stop on SIGTERM: {:?}",
        teardown.executors()
    );
}
