//! The state file of a data directory (`local-up.json`): the address, the number of agents
//! and every port, chosen once when the cluster is created and reused by every later run, so
//! the URLs, the kubeconfig and what the master and etcd remember stay valid.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Name of the state file inside the data directory.
pub const STATE_FILE: &str = "local-up.json";

/// The format of the state file this km writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Agents a new cluster gets when `--agents` is not given.
pub const DEFAULT_AGENTS: u32 = 2;

/// The most agents one local cluster may have (their host-port ranges must stay below 65536
/// and apart from each other).
pub const MAX_AGENTS: u32 = 32;

/// First host port offered by agent 1; agent `i` offers `[31000+100(i-1), +99]`.
pub const HOST_PORT_BASE: u16 = 31000;

/// Host ports per agent.
pub const HOST_PORTS_PER_AGENT: u16 = 100;

/// Everything that must stay the same across runs over one data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The address every component listens on.
    pub address: Ipv4Addr,
    /// The ports of the components.
    pub ports: Ports,
}

/// The ports of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// etcd's client URL.
    pub etcd_client: u16,
    /// etcd's peer URL (a one-member cluster, but etcd insists on one).
    pub etcd_peer: u16,
    /// `km apiserver`'s plain-HTTP port.
    pub apiserver: u16,
    /// `km mesos-master`.
    pub mesos_master: u16,
    /// `km scheduler`'s HTTP server.
    pub scheduler: u16,
    /// `km controller-manager`'s `/healthz`.
    pub controller_manager: u16,
    /// One `km mesos-agent` each.
    pub agents: Vec<u16>,
}

impl Ports {
    /// Every port with the component it belongs to.
    pub fn named(&self) -> Vec<(String, u16)> {
        let mut out = vec![
            ("etcd (client)".to_owned(), self.etcd_client),
            ("etcd (peer)".to_owned(), self.etcd_peer),
            ("apiserver".to_owned(), self.apiserver),
            ("mesos-master".to_owned(), self.mesos_master),
            ("scheduler".to_owned(), self.scheduler),
            ("controller-manager".to_owned(), self.controller_manager),
        ];
        out.extend(self.agents.iter().enumerate().map(|(i, p)| (agent_name(i + 1), *p)));
        out
    }
}

/// The name of agent `i` (1-based): its component name, log file and Mesos hostname.
pub fn agent_name(i: usize) -> String {
    format!("mesos-agent-{i}")
}

/// The host ports agent `i` (1-based) offers, inclusive.
pub fn host_ports(i: usize) -> (u16, u16) {
    let offset = u16::try_from(i.saturating_sub(1)).unwrap_or(u16::MAX);
    let first = HOST_PORT_BASE.saturating_add(offset.saturating_mul(HOST_PORTS_PER_AGENT));
    (first, first.saturating_add(HOST_PORTS_PER_AGENT - 1))
}

/// Whether `port` lies in a host-port range of any of `agents` agents (component ports must
/// not, or a pod could be given a port a component holds).
pub fn in_host_port_ranges(port: u16, agents: u32) -> bool {
    let last = host_ports(agents as usize).1;
    (HOST_PORT_BASE..=last).contains(&port)
}

/// What the command line asked for, before it is reconciled with a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    /// `--agents`, if given.
    pub agents: Option<u32>,
    /// `--address`, if given.
    pub address: Option<Ipv4Addr>,
}

/// Checks an address given with `--address`.
pub fn check_address(address: Ipv4Addr) -> Result<(), Error> {
    let reason = if address.is_unspecified() {
        "0.0.0.0 is not an address clients can reach; give the one address to listen on and advertise (e.g. 127.0.0.1)"
    } else if address.is_multicast() || address.is_broadcast() {
        "not a unicast address"
    } else {
        return Ok(());
    };
    Err(Error::Address { address, reason: reason.to_owned() })
}

/// Checks a number of agents given with `--agents`.
pub fn check_agents(agents: u32) -> Result<(), Error> {
    if (1..=MAX_AGENTS).contains(&agents) {
        Ok(())
    } else {
        Err(Error::Flag(format!("--agents {agents}: a cluster has 1 to {MAX_AGENTS} agents")))
    }
}

/// The state to run with: the recorded one when the data directory has a cluster (flags that
/// contradict it are refused), else a new one whose ports `pick` chooses.
pub fn resolve(
    requested: Requested,
    recorded: Option<State>,
    state_path: &Path,
    pick: impl FnOnce(Ipv4Addr, usize, u32) -> Result<Vec<u16>, Error>,
) -> Result<State, Error> {
    if let Some(address) = requested.address {
        check_address(address)?;
    }
    if let Some(agents) = requested.agents
        && !(1..=MAX_AGENTS).contains(&agents)
    {
        return Err(Error::Flag(format!(
            "--agents {agents}: a cluster has 1 to {MAX_AGENTS} agents"
        )));
    }
    if let Some(state) = recorded {
        let have = state.ports.agents.len();
        if let Some(agents) = requested.agents
            && agents as usize != have
        {
            return Err(Error::Flag(format!(
                "--agents {agents} contradicts the cluster in this data directory, which has {have} \
                 agent(s) (recorded in {}); omit --agents to resume it, or pass another --data-dir \
                 for a new cluster",
                state_path.display()
            )));
        }
        if let Some(address) = requested.address
            && address != state.address
        {
            return Err(Error::Flag(format!(
                "--address {address} contradicts the cluster in this data directory, which listens \
                 on {} (recorded in {}); omit --address to resume it, or pass another --data-dir",
                state.address,
                state_path.display()
            )));
        }
        return Ok(state);
    }
    let agents = requested.agents.unwrap_or(DEFAULT_AGENTS);
    let address = requested.address.unwrap_or(Ipv4Addr::LOCALHOST);
    let count = 6 + agents as usize;
    let ports = pick(address, count, agents)?;
    if ports.len() != count {
        return Err(Error::Ports {
            address,
            reason: format!("{} ports found, {count} needed", ports.len()),
        });
    }
    Ok(State {
        version: STATE_VERSION,
        address,
        ports: Ports {
            etcd_client: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
            mesos_master: ports[3],
            scheduler: ports[4],
            controller_manager: ports[5],
            agents: ports[6..].to_vec(),
        },
    })
}

/// `count` distinct ports that are free on `address` now, none in the agents' host-port
/// ranges. All listeners are held until the last is bound, so no port comes twice.
pub fn pick_free_ports(address: Ipv4Addr, count: usize, agents: u32) -> Result<Vec<u16>, Error> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    // The kernel hands out ephemeral ports; a few may fall in the host-port ranges, which are
    // held (so not handed out again) and skipped.
    while ports.len() < count && held.len() < count + 1000 {
        let listener = TcpListener::bind((address, 0))
            .map_err(|e| Error::Ports { address, reason: e.to_string() })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Ports { address, reason: e.to_string() })?
            .port();
        if !in_host_port_ranges(port, agents) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// Refuses to start when a recorded port is taken (by a stray component of an earlier run, or
/// another program), naming the port and its component.
pub fn check_ports_free(state: &State, state_path: &Path) -> Result<(), Error> {
    for (component, port) in state.ports.named() {
        if let Err(e) = TcpListener::bind((state.address, port)) {
            return Err(Error::PortInUse {
                component,
                address: state.address,
                port,
                state: state_path.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads the state file; `None` when there is none (a new data directory).
pub fn load(path: &Path) -> Result<Option<State>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::State { path: path.to_owned(), reason: e.to_string() }),
    };
    parse(&text).map(Some).map_err(|reason| Error::State { path: path.to_owned(), reason })
}

/// Parses and checks the text of a state file.
pub fn parse(text: &str) -> Result<State, String> {
    let state: State = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if state.version != STATE_VERSION {
        return Err(format!(
            "it has format version {}, this km reads version {STATE_VERSION}",
            state.version
        ));
    }
    let n = state.ports.agents.len();
    if n == 0 || n > MAX_AGENTS as usize {
        return Err(format!("it lists {n} agents; a cluster has 1 to {MAX_AGENTS}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (component, port) in state.ports.named() {
        if port == 0 {
            return Err(format!("the port of {component} is 0"));
        }
        if !seen.insert(port) {
            return Err(format!("port {port} is listed twice"));
        }
    }
    Ok(state)
}

/// Writes the state file atomically (a temporary file renamed over it).
pub fn save(path: &Path, state: &State) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| Error::State { path: path.to_owned(), reason: e.to_string() })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            version: STATE_VERSION,
            address: Ipv4Addr::LOCALHOST,
            ports: Ports {
                etcd_client: 40001,
                etcd_peer: 40002,
                apiserver: 40003,
                mesos_master: 40004,
                scheduler: 40005,
                controller_manager: 40006,
                agents: vec![40007, 40008],
            },
        }
    }

    fn seq(_: Ipv4Addr, n: usize, _: u32) -> Result<Vec<u16>, Error> {
        Ok((0..n).map(|i| 50000 + i as u16).collect())
    }

    fn path() -> &'static Path {
        Path::new("/d/local-up.json")
    }

    #[test]
    fn state_file_round_trips() {
        let s = sample();
        let text = serde_json::to_string_pretty(&s).unwrap();
        assert_eq!(parse(&text).unwrap(), s);
    }

    #[test]
    fn state_file_is_saved_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(STATE_FILE);
        assert_eq!(load(&p).unwrap(), None);
        save(&p, &sample()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sample()));
    }

    #[test]
    fn bad_state_files_are_refused_with_the_reason() {
        assert!(parse("{").is_err());
        let mut s = sample();
        s.version = 9;
        let e = parse(&serde_json::to_string(&s).unwrap()).unwrap_err();
        assert!(e.contains("format version 9"), "{e}");
        let mut s = sample();
        s.ports.scheduler = s.ports.apiserver;
        let e = parse(&serde_json::to_string(&s).unwrap()).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let mut s = sample();
        s.ports.agents.clear();
        assert!(parse(&serde_json::to_string(&s).unwrap()).unwrap_err().contains("0 agents"));
        let text = serde_json::to_string(&sample()).unwrap().replacen('{', "{\"extra\":1,", 1);
        assert!(parse(&text).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn a_new_cluster_gets_defaults_and_picked_ports() {
        let r = Requested { agents: None, address: None };
        let s = resolve(r, None, path(), seq).unwrap();
        assert_eq!(s.address, Ipv4Addr::LOCALHOST);
        assert_eq!(s.ports.agents, vec![50006, 50007]);
        assert_eq!(s.ports.etcd_client, 50000);
        assert_eq!(s.ports.controller_manager, 50005);
        let r = Requested { agents: Some(3), address: Some(Ipv4Addr::new(127, 0, 0, 2)) };
        let s = resolve(r, None, path(), seq).unwrap();
        assert_eq!(s.ports.agents.len(), 3);
        assert_eq!(s.address, Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn a_recorded_cluster_is_resumed_as_it_was() {
        let none = Requested { agents: None, address: None };
        let pick_never = |_: Ipv4Addr, _: usize, _: u32| -> Result<Vec<u16>, Error> {
            panic!("a resumed cluster picks no ports")
        };
        assert_eq!(resolve(none, Some(sample()), path(), pick_never).unwrap(), sample());
        let same = Requested { agents: Some(2), address: Some(Ipv4Addr::LOCALHOST) };
        assert_eq!(resolve(same, Some(sample()), path(), pick_never).unwrap(), sample());
    }

    #[test]
    fn flags_that_contradict_the_recorded_cluster_are_refused() {
        let r = Requested { agents: Some(3), address: None };
        let e = resolve(r, Some(sample()), path(), seq).unwrap_err().to_string();
        assert!(e.contains("--agents 3") && e.contains("has 2 agent(s)"), "{e}");
        let r = Requested { agents: None, address: Some(Ipv4Addr::new(127, 0, 0, 9)) };
        let e = resolve(r, Some(sample()), path(), seq).unwrap_err().to_string();
        assert!(e.contains("--address 127.0.0.9") && e.contains("listens on 127.0.0.1"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let r = Requested { agents: Some(0), address: None };
        let e = resolve(r, None, path(), seq).unwrap_err().to_string();
        assert!(e.contains("--agents 0") && e.contains("1 to 32"), "{e}");
        let r = Requested { agents: Some(33), address: None };
        assert!(resolve(r, None, path(), seq).is_err());
        let r = Requested { agents: None, address: Some(Ipv4Addr::UNSPECIFIED) };
        let e = resolve(r, None, path(), seq).unwrap_err().to_string();
        assert!(e.contains("0.0.0.0"), "{e}");
    }

    #[test]
    fn host_port_ranges_are_disjoint_and_avoided() {
        assert_eq!(host_ports(1), (31000, 31099));
        assert_eq!(host_ports(2), (31100, 31199));
        assert_eq!(host_ports(32), (34100, 34199));
        assert!(in_host_port_ranges(31150, 2));
        assert!(!in_host_port_ranges(31200, 2));
        assert!(!in_host_port_ranges(30999, 2));
        let ports = pick_free_ports(Ipv4Addr::LOCALHOST, 40, 32).unwrap();
        assert_eq!(ports.len(), 40);
        assert!(ports.iter().all(|p| !in_host_port_ranges(*p, 32)));
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 40);
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut s = sample();
        s.ports = Ports {
            agents: vec![pick_free_ports(Ipv4Addr::LOCALHOST, 1, 0).unwrap()[0]],
            ..s.ports
        };
        let free = pick_free_ports(Ipv4Addr::LOCALHOST, 5, 1).unwrap();
        s.ports.etcd_client = free[0];
        s.ports.etcd_peer = free[1];
        s.ports.apiserver = l.local_addr().unwrap().port();
        s.ports.mesos_master = free[2];
        s.ports.scheduler = free[3];
        s.ports.controller_manager = free[4];
        let e = check_ports_free(&s, path()).unwrap_err().to_string();
        assert!(e.contains("apiserver") && e.contains(&s.ports.apiserver.to_string()), "{e}");
    }
}
