//! What to run: the command line of every component and how to tell it is healthy, derived
//! from the state and the data directory only (no IO), so a resumed cluster gets exactly the
//! command lines it had.

use std::path::{Path, PathBuf};

use crate::state::{State, agent_name, host_ports};

/// How a component shows it is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A GET of this URL answers 200.
    Get(String),
    /// An agent: `/health` answers 200 and `/state` says it is registered with the master.
    Agent {
        /// The agent's base URL.
        base: String,
    },
}

/// When a component is stopped, relative to the others (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopRank {
    /// `km controller-manager`.
    ControllerManager,
    /// `km scheduler`.
    Scheduler,
    /// `km mesos-agent`s, with their executors first.
    Agent,
    /// `km mesos-master`.
    Master,
    /// `km apiserver`.
    Apiserver,
    /// etcd.
    Etcd,
}

/// One process of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Name in progress lines, errors and the log file (`logs/<name>.log`).
    pub name: String,
    /// The program (etcd, or this km).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The URL shown to the user.
    pub url: String,
    /// How to tell it is up.
    pub health: Health,
    /// Stop order.
    pub stop: StopRank,
    /// Whether it is an agent (its executors are stopped before it).
    pub is_agent: bool,
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory (absolute).
    pub dir: PathBuf,
}

impl Layout {
    /// The etcd data directory.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    /// The master's `--work_dir` (its registry).
    pub fn master(&self) -> PathBuf {
        self.dir.join("mesos-master")
    }
    /// Agent `i`'s `--work_dir` (sandboxes and checkpoints).
    pub fn agent(&self, i: usize) -> PathBuf {
        self.dir.join(agent_name(i))
    }
    /// Component logs.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// The log of a component.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// The token the API server presents to executors (for `kubectl logs` and `exec`).
    pub fn proxy_token(&self) -> PathBuf {
        self.dir.join("proxy-token")
    }
    /// `mesos-cloud.conf` of the controller-manager and the API server.
    pub fn cloud_config(&self) -> PathBuf {
        self.dir.join("mesos-cloud.conf")
    }
    /// The kubeconfig for kubectl.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.dir.join(crate::state::STATE_FILE)
    }
}

fn arg(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// The agents' `--resources`: a small fixed share of the machine each, and a disjoint range of
/// host ports.
pub fn agent_resources(i: usize) -> String {
    let (first, last) = host_ports(i);
    format!("cpus:2;mem:2048;disk:4096;ports:[{first}-{last}]")
}

/// The agents' `--attributes`: a rack each, two zones in turn.
pub fn agent_attributes(i: usize) -> String {
    let zone = if i % 2 == 1 { "a" } else { "b" };
    format!("rack:r{i};zone:{zone}")
}

/// The base URL of the API server.
pub fn api_url(state: &State) -> String {
    format!("http://{}:{}", state.address, state.ports.apiserver)
}

/// The components in the order they are started, grouped in stages: every component of a
/// stage starts together once the previous stage is healthy.
pub fn stages(
    state: &State,
    layout: &Layout,
    km: &Path,
    etcd: &Path,
    infra_image: Option<&str>,
) -> Vec<Vec<Spec>> {
    let a = state.address;
    let p = &state.ports;
    let etcd_url = format!("http://{a}:{}", p.etcd_client);
    let peer_url = format!("http://{a}:{}", p.etcd_peer);
    let api = api_url(state);
    let master = format!("{a}:{}", p.mesos_master);
    let master_url = format!("http://{master}");
    let km = km.to_owned();
    let token = layout.proxy_token().display().to_string();
    let cloud = layout.cloud_config().display().to_string();

    let etcd = Spec {
        name: "etcd".into(),
        program: etcd.to_owned(),
        args: vec![
            arg("name", "km-local"),
            arg("data-dir", layout.etcd().display()),
            arg("listen-client-urls", &etcd_url),
            arg("advertise-client-urls", &etcd_url),
            arg("listen-peer-urls", &peer_url),
            arg("initial-advertise-peer-urls", &peer_url),
            arg("initial-cluster", format!("km-local={peer_url}")),
        ],
        url: etcd_url.clone(),
        health: Health::Get(format!("{etcd_url}/health")),
        stop: StopRank::Etcd,
        is_agent: false,
    };
    let apiserver = Spec {
        name: "apiserver".into(),
        program: km.clone(),
        args: vec![
            "apiserver".into(),
            arg("etcd-servers", &etcd_url),
            arg("insecure-bind-address", a),
            arg("insecure-port", p.apiserver),
            arg("kubelet-token-file", &token),
            arg("cloud-provider", "mesos"),
            arg("cloud-config", &cloud),
        ],
        url: api.clone(),
        health: Health::Get(format!("{api}/healthz")),
        stop: StopRank::Apiserver,
        is_agent: false,
    };
    let mesos_master = Spec {
        name: "mesos-master".into(),
        program: km.clone(),
        args: vec![
            "mesos-master".into(),
            arg("ip", a),
            arg("port", p.mesos_master),
            arg("work_dir", layout.master().display()),
            arg("cluster", "km-local"),
        ],
        url: master_url.clone(),
        health: Health::Get(format!("{master_url}/health")),
        stop: StopRank::Master,
        is_agent: false,
    };
    let mut last = Vec::new();
    for (idx, port) in p.agents.iter().enumerate() {
        let i = idx + 1;
        let name = agent_name(i);
        let base = format!("http://{a}:{port}");
        last.push(Spec {
            name: name.clone(),
            program: km.clone(),
            args: vec![
                "mesos-agent".into(),
                arg("master", &master),
                arg("ip", a),
                arg("port", port),
                arg("hostname", &name),
                arg("work_dir", layout.agent(i).display()),
                arg("resources", agent_resources(i)),
                arg("attributes", agent_attributes(i)),
            ],
            url: base.clone(),
            health: Health::Agent { base },
            stop: StopRank::Agent,
            is_agent: true,
        });
    }
    let scheduler_url = format!("http://{a}:{}", p.scheduler);
    let mut scheduler_args = vec![
        "scheduler".into(),
        arg("api-servers", &api),
        arg("mesos-master", &master),
        arg("etcd-servers", &etcd_url),
        arg("address", a),
        arg("port", p.scheduler),
        arg("executor-path", format!("file://{}", km.display())),
        arg("executor-proxy-token-file", &token),
    ];
    if let Some(image) = infra_image {
        scheduler_args.push(arg("kubelet-pod-infra-container-image", image));
    }
    last.push(Spec {
        name: "scheduler".into(),
        program: km.clone(),
        args: scheduler_args,
        url: scheduler_url.clone(),
        health: Health::Get(format!("{scheduler_url}/healthz")),
        stop: StopRank::Scheduler,
        is_agent: false,
    });
    let cm_url = format!("http://{a}:{}", p.controller_manager);
    last.push(Spec {
        name: "controller-manager".into(),
        program: km,
        args: vec![
            "controller-manager".into(),
            arg("master", &api),
            arg("address", a),
            arg("port", p.controller_manager),
            arg("cloud-provider", "mesos"),
            arg("cloud-config", &cloud),
            arg("host-port-endpoints", true),
        ],
        url: cm_url.clone(),
        health: Health::Get(format!("{cm_url}/healthz")),
        stop: StopRank::ControllerManager,
        is_agent: false,
    });
    vec![vec![etcd], vec![apiserver, mesos_master], last]
}

/// `mesos-cloud.conf` for this cluster's master.
pub fn cloud_config(state: &State) -> String {
    format!(
        "# Written by km local-up: the Mesos master of this cluster.\n[mesos-cloud]\nmesos-master = {}:{}\n",
        state.address, state.ports.mesos_master
    )
}

/// A kubeconfig whose one context reaches this cluster's API server.
pub fn kubeconfig(state: &State) -> String {
    format!(
        "# Written by km local-up.\napiVersion: v1\nkind: Config\nclusters:\n- name: km-local\n  cluster:\n    server: {}\ncontexts:\n- name: km-local\n  context:\n    cluster: km-local\n    user: km-local\ncurrent-context: km-local\nusers:\n- name: km-local\n  user: {{}}\n",
        api_url(state)
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::{Ports, STATE_VERSION};

    fn state(agents: usize) -> State {
        State {
            version: STATE_VERSION,
            address: Ipv4Addr::LOCALHOST,
            ports: Ports {
                etcd_client: 1001,
                etcd_peer: 1002,
                apiserver: 1003,
                mesos_master: 1004,
                scheduler: 1005,
                controller_manager: 1006,
                agents: (0..agents).map(|i| 2000 + i as u16).collect(),
            },
        }
    }

    fn all(agents: usize) -> Vec<Spec> {
        let layout = Layout { dir: PathBuf::from("/data") };
        stages(&state(agents), &layout, Path::new("/bin/km"), Path::new("/usr/bin/etcd"), None)
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn every_component_is_there_once_in_start_order() {
        let names: Vec<String> = all(3).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "etcd",
                "apiserver",
                "mesos-master",
                "mesos-agent-1",
                "mesos-agent-2",
                "mesos-agent-3",
                "scheduler",
                "controller-manager"
            ]
        );
    }

    #[test]
    fn agents_get_their_own_dirs_ports_and_attributes() {
        let specs = all(2);
        let a2 = specs.iter().find(|s| s.name == "mesos-agent-2").unwrap();
        assert!(a2.args.contains(&"--work_dir=/data/mesos-agent-2".to_owned()));
        assert!(a2.args.contains(&"--port=2001".to_owned()));
        assert!(a2.args.contains(&"--hostname=mesos-agent-2".to_owned()));
        assert!(
            a2.args
                .contains(&"--resources=cpus:2;mem:2048;disk:4096;ports:[31100-31199]".to_owned())
        );
        assert!(a2.args.contains(&"--attributes=rack:r2;zone:b".to_owned()));
        assert_eq!(a2.health, Health::Agent { base: "http://127.0.0.1:2001".into() });
    }

    #[test]
    fn components_are_wired_to_each_other() {
        let specs = all(1);
        let get = |n: &str| specs.iter().find(|s| s.name == n).unwrap().args.clone();
        let sched = get("scheduler");
        assert!(sched.contains(&"--executor-path=file:///bin/km".to_owned()));
        assert!(sched.contains(&"--etcd-servers=http://127.0.0.1:1001".to_owned()));
        assert!(sched.contains(&"--executor-proxy-token-file=/data/proxy-token".to_owned()));
        assert!(get("apiserver").contains(&"--kubelet-token-file=/data/proxy-token".to_owned()));
        let cm = get("controller-manager");
        assert!(cm.contains(&"--cloud-config=/data/mesos-cloud.conf".to_owned()));
        assert!(cm.contains(&"--host-port-endpoints=true".to_owned()));
        assert!(get("mesos-master").contains(&"--work_dir=/data/mesos-master".to_owned()));
        assert!(get("etcd").contains(&"--data-dir=/data/etcd".to_owned()));
        assert!(!sched.iter().any(|a| a.contains("infra")), "the executor's default image");
    }

    #[test]
    fn the_infra_image_goes_to_the_executors_through_the_scheduler() {
        let layout = Layout { dir: PathBuf::from("/data") };
        let specs = stages(&state(1), &layout, Path::new("/km"), Path::new("/etcd"), Some("p:1"));
        let sched = specs.iter().flatten().find(|s| s.name == "scheduler").unwrap();
        assert!(sched.args.contains(&"--kubelet-pod-infra-container-image=p:1".to_owned()));
    }

    #[test]
    fn stop_order_is_the_reverse_of_dependencies() {
        let mut specs = all(2);
        specs.sort_by_key(|s| s.stop);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "controller-manager",
                "scheduler",
                "mesos-agent-1",
                "mesos-agent-2",
                "mesos-master",
                "apiserver",
                "etcd"
            ]
        );
    }

    #[test]
    fn config_files_name_this_cluster() {
        assert!(cloud_config(&state(1)).contains("mesos-master = 127.0.0.1:1004"));
        assert!(kubeconfig(&state(1)).contains("server: http://127.0.0.1:1003"));
    }
}
