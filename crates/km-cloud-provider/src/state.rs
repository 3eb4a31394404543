//! What the master says about its agents, reduced to what the cloud
//! provider needs, from either source: the operator API's GET_AGENTS and
//! GET_EXECUTORS answers, or the legacy `/master/state` document.
//!
//! Everything here is pure (no IO), so the decoding is tested on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use km_mesos::v1;
use km_mesos::v1::master::response;
use serde::Deserialize;

use crate::KM_EXECUTOR_NAME;

/// One agent as the master knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentRecord {
    pub(crate) id: String,
    pub(crate) hostname: String,
    /// `slave(1)@ip:port`, when the master reports it.
    pub(crate) pid: Option<String>,
    pub(crate) cpus: f64,
    pub(crate) mem_mb: f64,
    /// Connected and not deactivated (draining or deactivated by an operator).
    pub(crate) active: bool,
}

/// The agents of a cluster, and which of them run km's executor.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClusterView {
    pub(crate) agents: Vec<AgentRecord>,
    /// IDs of agents that run at least one executor named [`KM_EXECUTOR_NAME`].
    pub(crate) km_executor_agents: BTreeSet<String>,
}

/// Whether an executor with this name is km's (the kubelet executor).
pub(crate) fn is_km_executor(name: Option<&str>) -> bool {
    name == Some(KM_EXECUTOR_NAME)
}

/// The IP address in a libprocess PID such as `slave(1)@10.0.0.5:5051`.
/// `None` when the PID carries a hostname instead (km's master does for an
/// agent it does not know the address of: a simulated one), or the
/// unspecified address.
pub(crate) fn pid_ip(pid: &str) -> Option<IpAddr> {
    let (_, address) = pid.rsplit_once('@')?;
    let host = match address.rsplit_once(':') {
        // `[v6]:port`, `v4:port` or `host:port`
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}

/// The total of the scalar resource `name`, over every role and
/// reservation, leaving out revocable (oversubscribed) amounts.
fn scalar_total(resources: &[v1::Resource], name: &str) -> f64 {
    resources
        .iter()
        .filter(|r| r.name == name && r.revocable.is_none())
        .filter_map(|r| r.scalar.as_ref())
        .map(|s| s.value)
        .sum()
}

/// Builds the view from GET_AGENTS and GET_EXECUTORS.
pub(crate) fn from_operator(
    agents: response::GetAgents,
    executors: response::GetExecutors,
) -> ClusterView {
    let mut view = ClusterView::default();
    for agent in agents.agents {
        let info = agent.agent_info;
        // The agent's totals; older masters leave `total_resources` empty
        // and report them in the AgentInfo only.
        let resources =
            if agent.total_resources.is_empty() { &info.resources } else { &agent.total_resources };
        view.agents.push(AgentRecord {
            id: info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
            hostname: info.hostname.clone(),
            pid: agent.pid.filter(|p| !p.is_empty()),
            cpus: scalar_total(resources, "cpus"),
            mem_mb: scalar_total(resources, "mem"),
            active: agent.active && !agent.deactivated.unwrap_or(false),
        });
    }
    // Agents the master knows from its registry but that have not come back
    // since it failed over: they exist, they are just not connected (yet).
    for info in agents.recovered_agents {
        let Some(id) = info.id.as_ref().map(|i| i.value.clone()) else { continue };
        if view.agents.iter().any(|a| a.id == id) {
            continue;
        }
        view.agents.push(AgentRecord {
            id,
            hostname: info.hostname.clone(),
            pid: None,
            cpus: scalar_total(&info.resources, "cpus"),
            mem_mb: scalar_total(&info.resources, "mem"),
            active: false,
        });
    }
    view.km_executor_agents = executors
        .executors
        .into_iter()
        .filter(|e| is_km_executor(e.executor_info.name.as_deref()))
        .map(|e| e.agent_id.value)
        .collect();
    view
}

/// The parts of the legacy `/master/state` (or `/state.json`) document that
/// are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LegacyState {
    /// Set when the master runs with `--cluster`.
    cluster: Option<String>,
    /// The master's flags; km's master reports `--cluster` only here.
    flags: BTreeMap<String, serde_json::Value>,
    slaves: Vec<LegacyAgent>,
    recovered_slaves: Vec<LegacyRecoveredAgent>,
    frameworks: Vec<LegacyFramework>,
}

#[derive(Debug, Clone, Deserialize)]
struct LegacyAgent {
    #[serde(default)]
    id: String,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    hostname: String,
    /// Scalars as numbers, ranges and sets as strings.
    #[serde(default)]
    resources: BTreeMap<String, serde_json::Value>,
    /// Very old masters do not say; an agent they list is registered.
    #[serde(default = "listed_means_active")]
    active: bool,
    #[serde(default)]
    deactivated: bool,
}

fn listed_means_active() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct LegacyRecoveredAgent {
    id: String,
    hostname: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct LegacyFramework {
    executors: Vec<LegacyExecutor>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct LegacyExecutor {
    name: Option<String>,
    slave_id: String,
}

impl LegacyState {
    /// Parses the document.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The cluster name, from `cluster` or else from the `cluster` flag.
    pub(crate) fn cluster(&self) -> Option<String> {
        let from_flags = || self.flags.get("cluster").and_then(|v| v.as_str()).map(str::to_owned);
        self.cluster.clone().or_else(from_flags).filter(|c| !c.is_empty())
    }

    /// The agents and where km's executor runs.
    pub(crate) fn view(&self) -> ClusterView {
        let number = |r: &BTreeMap<String, serde_json::Value>, name: &str| {
            r.get(name).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
        };
        let mut agents: Vec<AgentRecord> = self
            .slaves
            .iter()
            .map(|s| AgentRecord {
                id: s.id.clone(),
                hostname: s.hostname.clone(),
                pid: Some(s.pid.clone()).filter(|p| !p.is_empty()),
                cpus: number(&s.resources, "cpus"),
                mem_mb: number(&s.resources, "mem"),
                active: s.active && !s.deactivated,
            })
            .collect();
        for r in &self.recovered_slaves {
            if r.id.is_empty() || agents.iter().any(|a| a.id == r.id) {
                continue;
            }
            agents.push(AgentRecord {
                id: r.id.clone(),
                hostname: r.hostname.clone(),
                pid: None,
                cpus: 0.0,
                mem_mb: 0.0,
                active: false,
            });
        }
        let km_executor_agents = self
            .frameworks
            .iter()
            .flat_map(|f| &f.executors)
            .filter(|e| is_km_executor(e.name.as_deref()))
            .map(|e| e.slave_id.clone())
            .collect();
        ClusterView { agents, km_executor_agents }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/master/state` document as a Mesos 1.x master writes it (trimmed of
    /// fields nobody reads, but with their shapes kept where they matter).
    const MESOS_STATE: &str = r#"{
      "version": "1.11.0",
      "git_sha": "b3eb3ff7ebf0fd5b5a8c7a5e2a0b74a3b8e4c3b7",
      "build_date": "2020-11-19 09:25:10",
      "start_time": 1700000000.123,
      "elected_time": 1700000001.456,
      "id": "7f1c7b3e-2f7a-4c27-9d8f-0d6e3c0b9a11",
      "pid": "master@10.0.0.2:5050",
      "hostname": "m1.example.com",
      "activated_slaves": 2,
      "deactivated_slaves": 1,
      "unreachable_slaves": 0,
      "cluster": "prod-east",
      "leader": "master@10.0.0.2:5050",
      "leader_info": {"id": "7f1c", "pid": "master@10.0.0.2:5050", "port": 5050, "hostname": "m1.example.com"},
      "flags": {"cluster": "ignored-when-top-level-is-set", "port": "5050", "quorum": "2"},
      "slaves": [
        {
          "id": "7f1c-S0",
          "pid": "slave(1)@10.0.0.5:5051",
          "hostname": "n1.example.com",
          "port": 5051,
          "registered_time": 1700000010.5,
          "resources": {"disk": 35164.0, "mem": 15023.0, "gpus": 0.0, "cpus": 8.0, "ports": "[31000-32000]"},
          "used_resources": {"disk": 0.0, "mem": 256.0, "gpus": 0.0, "cpus": 0.5},
          "offered_resources": {"disk": 0.0, "mem": 0.0, "gpus": 0.0, "cpus": 0.0},
          "reserved_resources": {},
          "unreserved_resources": {"disk": 35164.0, "mem": 15023.0, "gpus": 0.0, "cpus": 8.0, "ports": "[31000-32000]"},
          "attributes": {"rack": "r1"},
          "active": true,
          "deactivated": false,
          "version": "1.11.0",
          "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE"]
        },
        {
          "id": "7f1c-S1",
          "pid": "slave(1)@10.0.0.6:5051",
          "hostname": "n2.example.com",
          "port": 5051,
          "resources": {"mem": 7821, "cpus": 4, "ports": "[31000-32000]"},
          "attributes": {},
          "active": false,
          "deactivated": false,
          "version": "1.11.0"
        },
        {
          "id": "7f1c-S2",
          "pid": "slave(1)@10.0.0.7:5051",
          "hostname": "n3.example.com",
          "resources": {"mem": 1024.0, "cpus": 1.0},
          "active": true,
          "deactivated": true
        }
      ],
      "recovered_slaves": [{"id": "7f1c-S9", "hostname": "n9.example.com", "port": 5051}],
      "frameworks": [
        {
          "id": "fw-1",
          "name": "Kubernetes",
          "active": true,
          "executors": [
            {"executor_id": "a1b2c3d4e5f6a7b8_k8sm-executor", "name": "Kubelet-Executor", "framework_id": "fw-1", "slave_id": "7f1c-S0", "source": "kubernetes", "command": {"value": "./km minion", "shell": true}}
          ],
          "tasks": [{"id": "pod.1", "slave_id": "7f1c-S0", "state": "TASK_RUNNING"}],
          "completed_tasks": []
        },
        {
          "id": "fw-2",
          "name": "marathon",
          "active": true,
          "executors": [
            {"executor_id": "e-1", "name": "Command Executor (Task: x)", "slave_id": "7f1c-S1"},
            {"executor_id": "e-2", "slave_id": "7f1c-S2"}
          ]
        }
      ],
      "completed_frameworks": [],
      "orphan_tasks": [],
      "unregistered_frameworks": []
    }"#;

    #[test]
    fn legacy_state_of_a_mesos_master() {
        let state = LegacyState::from_json(MESOS_STATE.as_bytes()).unwrap();
        assert_eq!(state.cluster().as_deref(), Some("prod-east"));
        let view = state.view();
        assert_eq!(
            view.agents[0],
            AgentRecord {
                id: "7f1c-S0".into(),
                hostname: "n1.example.com".into(),
                pid: Some("slave(1)@10.0.0.5:5051".into()),
                cpus: 8.0,
                mem_mb: 15023.0,
                active: true,
            }
        );
        // Integers are as good as floats; a disconnected agent is inactive.
        assert_eq!((view.agents[1].cpus, view.agents[1].mem_mb), (4.0, 7821.0));
        assert!(!view.agents[1].active);
        // Connected but deactivated (draining) is not active either.
        assert!(!view.agents[2].active);
        // Recovered agents are known, not active.
        assert_eq!(view.agents[3].id, "7f1c-S9");
        assert_eq!(view.agents[3].hostname, "n9.example.com");
        assert!(!view.agents[3].active);
        assert_eq!(view.agents.len(), 4);
        assert_eq!(view.km_executor_agents, BTreeSet::from(["7f1c-S0".to_owned()]));
    }

    #[test]
    fn legacy_state_of_km_master_and_of_very_old_masters() {
        // km's master writes `--cluster` among the flags only, and a null
        // when it is not set.
        let km = r#"{"flags": {"cluster": "kmc"}, "slaves": [], "frameworks": []}"#;
        assert_eq!(
            LegacyState::from_json(km.as_bytes()).unwrap().cluster().as_deref(),
            Some("kmc")
        );
        let unset = r#"{"flags": {"cluster": null}, "slaves": []}"#;
        assert_eq!(LegacyState::from_json(unset.as_bytes()).unwrap().cluster(), None);
        // An agent without `active` is taken as registered and active.
        let old = r#"{"slaves": [{"id": "S0", "hostname": "h", "pid": "slave(1)@1.2.3.4:5051",
                      "resources": {"cpus": 2, "mem": 512}}]}"#;
        let view = LegacyState::from_json(old.as_bytes()).unwrap().view();
        assert!(view.agents[0].active);
        assert!(view.km_executor_agents.is_empty());
        assert!(LegacyState::from_json(b"<html>Not Found</html>").is_err());
    }

    #[test]
    fn km_executor_is_recognised_by_its_exact_name() {
        assert!(is_km_executor(Some("Kubelet-Executor")));
        assert!(!is_km_executor(Some("kubelet-executor")));
        assert!(!is_km_executor(Some("Kubelet-Executor ")));
        assert!(!is_km_executor(Some("Command Executor")));
        assert!(!is_km_executor(None));
    }

    #[test]
    fn ip_from_libprocess_pids() {
        let ip = |p: &str| pid_ip(p).map(|ip| ip.to_string());
        assert_eq!(ip("slave(1)@10.0.0.5:5051").as_deref(), Some("10.0.0.5"));
        assert_eq!(ip("slave(1)@[fd00::5]:5051").as_deref(), Some("fd00::5"));
        assert_eq!(ip("slave(1)@10.0.0.5").as_deref(), Some("10.0.0.5"));
        // km's master puts the hostname there: no IP to be had from it.
        assert_eq!(ip("slave(1)@node-1.example.com:5051"), None);
        assert_eq!(ip("slave(1)@0.0.0.0:5051"), None);
        assert_eq!(ip("garbage"), None);
        assert_eq!(ip(""), None);
    }

    fn resource(name: &str, value: f64) -> v1::Resource {
        v1::Resource {
            name: name.into(),
            r#type: v1::value::Type::Scalar as i32,
            scalar: Some(v1::value::Scalar { value }),
            ..Default::default()
        }
    }

    fn agent(id: &str, host: &str, active: bool) -> response::get_agents::Agent {
        response::get_agents::Agent {
            agent_info: v1::AgentInfo {
                hostname: host.into(),
                id: Some(v1::AgentId { value: id.into() }),
                resources: vec![resource("cpus", 1.0)],
                ..Default::default()
            },
            active,
            version: "1.11.0".into(),
            pid: Some("slave(1)@10.0.0.1:5051".into()),
            total_resources: vec![
                resource("cpus", 2.0),
                // A reserved part of the same resource counts too.
                v1::Resource {
                    reservations: vec![v1::resource::ReservationInfo {
                        role: Some("k8s".into()),
                        ..Default::default()
                    }],
                    ..resource("cpus", 1.5)
                },
                resource("mem", 2048.0),
                v1::Resource { revocable: Some(Default::default()), ..resource("cpus", 100.0) },
            ],
            ..Default::default()
        }
    }

    fn executor(agent: &str, name: Option<&str>) -> response::get_executors::Executor {
        response::get_executors::Executor {
            executor_info: v1::ExecutorInfo {
                executor_id: v1::ExecutorId { value: format!("e-{agent}") },
                name: name.map(str::to_owned),
                ..Default::default()
            },
            agent_id: v1::AgentId { value: agent.into() },
        }
    }

    #[test]
    fn operator_answers() {
        let mut drained = agent("S2", "h2", true);
        drained.deactivated = Some(true);
        let agents = response::GetAgents {
            agents: vec![agent("S0", "h0", true), agent("S1", "h1", false), drained],
            recovered_agents: vec![v1::AgentInfo {
                hostname: "h3".into(),
                id: Some(v1::AgentId { value: "S3".into() }),
                resources: vec![resource("cpus", 3.0)],
                ..Default::default()
            }],
        };
        let executors = response::GetExecutors {
            executors: vec![
                executor("S0", Some("Kubelet-Executor")),
                executor("S1", Some("other")),
                executor("S2", None),
            ],
            ..Default::default()
        };
        let view = from_operator(agents, executors);
        let summary: Vec<_> =
            view.agents.iter().map(|a| (a.id.as_str(), a.hostname.as_str(), a.active)).collect();
        assert_eq!(
            summary,
            [("S0", "h0", true), ("S1", "h1", false), ("S2", "h2", false), ("S3", "h3", false)]
        );
        assert_eq!((view.agents[0].cpus, view.agents[0].mem_mb), (3.5, 2048.0));
        assert_eq!(view.agents[0].pid.as_deref(), Some("slave(1)@10.0.0.1:5051"));
        assert_eq!((view.agents[3].cpus, view.agents[3].pid.as_deref()), (3.0, None));
        assert_eq!(view.km_executor_agents, BTreeSet::from(["S0".to_owned()]));
    }
}
