//! The legacy JSON endpoints existing Mesos tools read (the Mesos CLI, dashboards, exporters):
//! `/master/slaves`, `/master/frameworks`, `/master/tasks`, `/master/roles`, `/master/flags`,
//! `/master/state-summary`, `/master/maintenance/status` and `/metrics/snapshot`, with Mesos's
//! field names and shapes. Pure views of the master's state.

use serde_json::{Value, json};

use super::*;

/// The query of `/master/tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskQuery {
    /// At most this many tasks (Mesos's default: 100).
    pub(crate) limit: usize,
    /// Skip this many first.
    pub(crate) offset: usize,
    /// Oldest first (`asc`) instead of newest first (`des`, the default).
    pub(crate) ascending: bool,
    pub(crate) framework_id: Option<String>,
    pub(crate) task_id: Option<String>,
}

impl Default for TaskQuery {
    fn default() -> TaskQuery {
        TaskQuery { limit: 100, offset: 0, ascending: false, framework_id: None, task_id: None }
    }
}

/// The task states Mesos counts per agent and framework in `/state-summary`.
const SUMMARY_STATES: &[TaskState] = &[
    TaskState::TaskStaging,
    TaskState::TaskStarting,
    TaskState::TaskRunning,
    TaskState::TaskKilling,
    TaskState::TaskFinished,
    TaskState::TaskKilled,
    TaskState::TaskFailed,
    TaskState::TaskLost,
    TaskState::TaskError,
    TaskState::TaskUnreachable,
];

/// `TASK_RUNNING` for a state, as Mesos's JSON names it.
pub(crate) fn state_name(s: TaskState) -> &'static str {
    s.as_str_name()
}

/// A task as Mesos's legacy endpoints write it.
pub(crate) fn task_json(t: &v1::Task) -> Value {
    let resources = km_mesos::resources::resources_from_proto(&t.resources).unwrap_or_default();
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|s| json!({ "state": state_name(s.state()), "timestamp": s.timestamp.unwrap_or(0.0) }))
        .collect();
    let mut v = json!({
        "id": t.task_id.value,
        "name": t.name,
        "framework_id": t.framework_id.value,
        "executor_id": t.executor_id.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
        "slave_id": t.agent_id.value,
        "state": state_name(t.state()),
        "resources": state_object(&resources),
        "statuses": statuses,
    });
    if let Some(labels) = t.labels.as_ref().filter(|l| !l.labels.is_empty()) {
        v["labels"] = json!(
            labels
                .labels
                .iter()
                .map(|l| json!({ "key": l.key, "value": l.value.clone().unwrap_or_default() }))
                .collect::<Vec<_>>()
        );
    }
    v
}

/// When a task started: its first status's time (the end of time before any).
fn started(t: &v1::Task) -> f64 {
    t.statuses.iter().filter_map(|s| s.timestamp).fold(f64::MAX, f64::min)
}

impl Master {
    pub(super) fn legacy_agent(&self, a: &Agent) -> Value {
        let attributes: Vec<_> =
            a.info.attributes.iter().filter_map(|x| attribute_from_proto(x).ok()).collect();
        json!({
            "id": a.id(),
            "pid": a.pid(),
            "hostname": a.info.hostname,
            "port": a.info.port.unwrap_or(5051),
            "registered_time": a.registered_time,
            "reregistered_time": a.reregistered_time,
            "resources": state_object(&a.total),
            "used_resources": state_object(&a.used),
            "offered_resources": state_object(&a.offered),
            "unreserved_resources": state_object(&a.total.allocatable_to("*")),
            "attributes": attributes_state_object(&attributes),
            "active": a.conn.is_some(),
            "deactivated": false,
            "version": a.version,
            "capabilities": a.capabilities.iter().map(|c| c.r#type().as_str_name().to_owned()).collect::<Vec<_>>(),
        })
    }

    /// `/master/slaves`.
    pub(crate) fn legacy_slaves(&self) -> Value {
        json!({
            "slaves": self.agents.values().map(|a| self.legacy_agent(a)).collect::<Vec<_>>(),
            "recovered_slaves": self.recovered.values().map(|a| json!({
                "id": a.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                "hostname": a.hostname,
                "port": a.port.unwrap_or(5051),
            })).collect::<Vec<_>>(),
        })
    }

    fn framework_resources(&self, id: &str) -> (Resources, Resources) {
        let mut used = Resources::default();
        for t in self.tasks.iter().filter(|((fw, _), _)| fw == id).map(|(_, t)| t) {
            used.add(&t.resources);
        }
        for a in self.agents.values() {
            for e in a.executors.iter().filter(|((fw, _), _)| fw == id).map(|(_, e)| e) {
                used.add(&e.resources);
            }
        }
        let mut offered = Resources::default();
        for o in self.offers.values().filter(|o| o.framework_id == id) {
            offered.add(&o.resources);
        }
        (used, offered)
    }

    pub(super) fn legacy_framework(&self, id: &str, f: &Framework) -> Value {
        let (used, offered) = self.framework_resources(id);
        let executors: Vec<Value> = self
            .agents
            .values()
            .flat_map(|a| {
                a.executors.iter().filter(|((fw, _), _)| fw == id).map(move |((_, ex), e)| {
                    json!({
                        "executor_id": ex,
                        "name": e.info.name.clone().unwrap_or_default(),
                        "framework_id": id,
                        "slave_id": a.id(),
                        "resources": state_object(&e.resources),
                    })
                })
            })
            .collect();
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .filter(|((fw, _), _)| fw == id)
            .map(|(_, t)| task_json(&t.task))
            .collect();
        let unreachable: Vec<Value> = self
            .unreachable_tasks
            .iter()
            .filter(|((fw, _), _)| fw == id)
            .map(|(_, t)| task_json(t))
            .collect();
        let completed: Vec<Value> = self
            .completed_tasks
            .iter()
            .filter(|t| t.framework_id.value == id)
            .map(task_json)
            .collect();
        json!({
            "id": id,
            "name": f.info.name,
            "user": f.info.user,
            "pid": format!("scheduler@{}", f.info.hostname.clone().unwrap_or_default()),
            "hostname": f.info.hostname.clone().unwrap_or_default(),
            "webui_url": f.info.webui_url.clone().unwrap_or_default(),
            "principal": f.info.principal.clone(),
            "active": f.connected(),
            "connected": f.connected(),
            "recovered": false,
            "failover_timeout": f.info.failover_timeout.unwrap_or(0.0),
            "checkpoint": f.info.checkpoint.unwrap_or(false),
            "role": f.roles.first().cloned().unwrap_or_else(|| "*".to_owned()),
            "roles": f.roles,
            "capabilities": f.info.capabilities.iter().map(|c| c.r#type().as_str_name().to_owned()).collect::<Vec<_>>(),
            "registered_time": f.registered_time,
            "reregistered_time": f.reregistered_time,
            "unregistered_time": f.unregistered_time.unwrap_or(0.0),
            "resources": state_object(&used),
            "used_resources": state_object(&used),
            "offered_resources": state_object(&offered),
            "executors": executors,
            "tasks": tasks,
            "unreachable_tasks": unreachable,
            "completed_tasks": completed,
            "offers": f.offers.iter().collect::<Vec<_>>(),
        })
    }

    /// `/master/frameworks`, every framework or the one `framework_id` names.
    pub(crate) fn legacy_frameworks(&self, framework_id: Option<&str>) -> Value {
        let wanted = |id: &str| framework_id.is_none_or(|f| f == id);
        json!({
            "frameworks": self.frameworks.iter()
                .filter(|(id, _)| wanted(id))
                .map(|(id, f)| self.legacy_framework(id, f))
                .collect::<Vec<_>>(),
            "completed_frameworks": self.completed_frameworks.iter()
                .filter(|f| f.id.as_ref().is_some_and(|i| wanted(&i.value)))
                .map(|f| json!({
                    "id": f.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                    "name": f.name,
                    "user": f.user,
                    "active": false,
                    "connected": false,
                    "tasks": [],
                    "completed_tasks": self.completed_tasks.iter()
                        .filter(|t| f.id.as_ref().is_some_and(|i| i.value == t.framework_id.value))
                        .map(task_json)
                        .collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
            "unregistered_frameworks": [],
        })
    }

    /// `/master/tasks`: active, unreachable and completed tasks, by start time, filtered and
    /// paged as Mesos does.
    pub(crate) fn legacy_tasks(&self, q: &TaskQuery) -> Value {
        let mut all: Vec<&v1::Task> = self
            .tasks
            .values()
            .map(|t| &t.task)
            .chain(self.unreachable_tasks.values())
            .chain(self.completed_tasks.iter())
            .filter(|t| q.framework_id.as_ref().is_none_or(|f| *f == t.framework_id.value))
            .filter(|t| q.task_id.as_ref().is_none_or(|id| *id == t.task_id.value))
            .collect();
        all.sort_by(|a, b| {
            started(a).total_cmp(&started(b)).then_with(|| a.task_id.value.cmp(&b.task_id.value))
        });
        if !q.ascending {
            all.reverse();
        }
        let page: Vec<Value> =
            all.into_iter().skip(q.offset).take(q.limit).map(task_json).collect();
        json!({ "tasks": page })
    }

    /// `/master/roles`: every role with a weight, a framework or resources.
    pub(crate) fn legacy_roles(&self) -> Value {
        let mut roles: BTreeMap<String, (Vec<String>, Resources, Resources)> = BTreeMap::new();
        for role in self.config.weights.keys() {
            roles.entry(role.clone()).or_default();
        }
        for (id, f) in &self.frameworks {
            for role in &f.roles {
                roles.entry(role.clone()).or_default().0.push(id.clone());
            }
        }
        for t in self.tasks.values() {
            roles.entry(t.role.clone()).or_default().1.add(&t.resources);
        }
        for a in self.agents.values() {
            for e in a.executors.values() {
                roles.entry(e.role.clone()).or_default().1.add(&e.resources);
            }
        }
        for o in self.offers.values() {
            roles.entry(o.role.clone()).or_default().2.add(&o.resources);
        }
        let list: Vec<Value> = roles
            .into_iter()
            .map(|(name, (frameworks, allocated, offered))| {
                json!({
                    "name": name,
                    "weight": self.config.weights.get(&name).copied().unwrap_or(1.0),
                    "frameworks": frameworks,
                    "resources": state_object(&allocated),
                    "allocated": state_object(&allocated),
                    "offered": state_object(&offered),
                    "reserved": state_object(&Resources::default()),
                })
            })
            .collect();
        json!({ "roles": list })
    }

    fn task_counts(tasks: &[&v1::Task]) -> serde_json::Map<String, Value> {
        SUMMARY_STATES
            .iter()
            .map(|s| {
                let n = tasks.iter().filter(|t| t.state() == *s).count();
                (state_name(*s).to_owned(), json!(n))
            })
            .collect()
    }

    fn every_task(&self) -> Vec<&v1::Task> {
        self.tasks
            .values()
            .map(|t| &t.task)
            .chain(self.unreachable_tasks.values())
            .chain(self.completed_tasks.iter())
            .collect()
    }

    /// `/master/state-summary`: agents and frameworks with their task counts.
    pub(crate) fn legacy_state_summary(&self) -> Value {
        let info = &self.config.info;
        let tasks = self.every_task();
        let slaves: Vec<Value> = self
            .agents
            .values()
            .map(|a| {
                let id = a.id();
                let mine: Vec<&v1::Task> =
                    tasks.iter().copied().filter(|t| t.agent_id.value == id).collect();
                let mut v = self.legacy_agent(a);
                let mut frameworks: Vec<&str> =
                    mine.iter().map(|t| t.framework_id.value.as_str()).collect();
                frameworks.sort_unstable();
                frameworks.dedup();
                if let Some(o) = v.as_object_mut() {
                    o.extend(Self::task_counts(&mine));
                    o.insert("framework_ids".into(), json!(frameworks));
                }
                v
            })
            .collect();
        let frameworks: Vec<Value> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let (used, offered) = self.framework_resources(id);
                let mine: Vec<&v1::Task> =
                    tasks.iter().copied().filter(|t| t.framework_id.value == *id).collect();
                let mut agents: Vec<&str> = mine.iter().map(|t| t.agent_id.value.as_str()).collect();
                agents.sort_unstable();
                agents.dedup();
                let mut v = json!({
                    "id": id,
                    "name": f.info.name,
                    "pid": format!("scheduler@{}", f.info.hostname.clone().unwrap_or_default()),
                    "hostname": f.info.hostname.clone().unwrap_or_default(),
                    "webui_url": f.info.webui_url.clone().unwrap_or_default(),
                    "active": f.connected(),
                    "connected": f.connected(),
                    "recovered": false,
                    "capabilities": f.info.capabilities.iter().map(|c| c.r#type().as_str_name().to_owned()).collect::<Vec<_>>(),
                    "used_resources": state_object(&used),
                    "offered_resources": state_object(&offered),
                    "slave_ids": agents,
                });
                if let Some(o) = v.as_object_mut() {
                    o.extend(Self::task_counts(&mine));
                }
                v
            })
            .collect();
        json!({
            "hostname": info.hostname,
            "cluster": "",
            "slaves": slaves,
            "frameworks": frameworks,
        })
    }

    /// `/metrics/snapshot`'s master numbers, under Mesos's names.
    pub(crate) fn legacy_metrics(&self, now_epoch: f64) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_owned(), json!(v));
        };
        let active_tasks: Vec<&v1::Task> = self.tasks.values().map(|t| &t.task).collect();
        let count = |s: TaskState| active_tasks.iter().filter(|t| t.state() == s).count() as f64;
        put("master/tasks_staging", count(TaskState::TaskStaging));
        put("master/tasks_starting", count(TaskState::TaskStarting));
        put("master/tasks_running", count(TaskState::TaskRunning));
        put("master/tasks_killing", count(TaskState::TaskKilling));
        put("master/tasks_unreachable", self.unreachable_tasks.len() as f64);
        let done =
            |s: TaskState| self.completed_tasks.iter().filter(|t| t.state() == s).count() as f64;
        put("master/tasks_finished", done(TaskState::TaskFinished));
        put("master/tasks_failed", done(TaskState::TaskFailed));
        put("master/tasks_killed", done(TaskState::TaskKilled));
        put("master/tasks_lost", done(TaskState::TaskLost));
        put("master/tasks_error", done(TaskState::TaskError));
        put("master/tasks_dropped", done(TaskState::TaskDropped));
        put("master/tasks_gone", done(TaskState::TaskGone));
        let connected = self.agents.values().filter(|a| a.conn.is_some()).count() as f64;
        put("master/slaves_active", self.agents.len() as f64);
        put("master/slaves_inactive", 0.0);
        put("master/slaves_connected", connected);
        put("master/slaves_disconnected", self.agents.len() as f64 - connected);
        put("master/slaves_unreachable", self.unreachable.len() as f64);
        let fw_connected = self.frameworks.values().filter(|f| f.connected()).count() as f64;
        put("master/frameworks_active", fw_connected);
        put("master/frameworks_inactive", self.frameworks.len() as f64 - fw_connected);
        put("master/frameworks_connected", fw_connected);
        put("master/frameworks_disconnected", self.frameworks.len() as f64 - fw_connected);
        put("master/outstanding_offers", self.offers.len() as f64);
        put("master/uptime_secs", (now_epoch - self.start_time).max(0.0));
        put("master/elected", 1.0);
        let mut total = Resources::default();
        let mut used = Resources::default();
        for a in self.agents.values() {
            total.add(&a.total);
            used.add(&a.used);
        }
        let (t, u) = (state_object(&total), state_object(&used));
        for name in ["cpus", "mem", "disk", "gpus"] {
            let tv = t[name].as_f64().unwrap_or(0.0);
            let uv = u[name].as_f64().unwrap_or(0.0);
            put(&format!("master/{name}_total"), tv);
            put(&format!("master/{name}_used"), uv);
            put(&format!("master/{name}_percent"), if tv > 0.0 { uv / tv } else { 0.0 });
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::super::scenarios::{Sim, launch, single_role, task};
    use super::*;

    /// An agent, a framework in role `web` and two running tasks.
    fn running() -> (Sim, String, String) {
        let mut sim = Sim::new();
        let agent = sim.add_agent("h1", "cpus:4;mem:1024;ports:[31000-31009]");
        let fw = sim.subscribe(single_role("web"));
        let offers = sim.allocate();
        let (_, offer) = offers.first().expect("an offer");
        let tasks = vec![task("t1", offer, "cpus:1;mem:128"), task("t2", offer, "cpus:1;mem:128")];
        sim.accept(&fw, &[offer], vec![launch(tasks)]).expect("accepted");
        sim.status(&agent, &fw, "t1", TaskState::TaskRunning);
        sim.status(&agent, &fw, "t2", TaskState::TaskRunning);
        (sim, agent, fw)
    }

    #[test]
    fn slaves_frameworks_and_tasks_have_mesos_shapes() {
        let (sim, agent, fw) = running();
        let slaves = sim.m.legacy_slaves();
        let a = &slaves["slaves"][0];
        assert_eq!(a["id"], agent);
        assert_eq!(a["hostname"], "h1");
        assert_eq!(a["pid"], "slave(1)@h1:5051");
        assert_eq!(a["resources"]["cpus"], 4.0);
        assert_eq!(a["resources"]["ports"], "[31000-31009]");
        assert_eq!(a["used_resources"]["cpus"], 2.0);
        assert_eq!(a["active"], true);
        assert!(slaves["recovered_slaves"].as_array().is_some_and(Vec::is_empty));

        let fws = sim.m.legacy_frameworks(None);
        let f = &fws["frameworks"][0];
        assert_eq!(f["id"], fw);
        assert_eq!(f["active"], true);
        assert_eq!(f["roles"], json!(["web"]));
        assert_eq!(f["used_resources"]["cpus"], 2.0);
        let ids: Vec<&str> =
            f["tasks"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert!(
            sim.m.legacy_frameworks(Some("other"))["frameworks"]
                .as_array()
                .is_some_and(Vec::is_empty)
        );

        let all = sim.m.legacy_tasks(&TaskQuery::default());
        assert_eq!(all["tasks"].as_array().map(Vec::len), Some(2));
        let t = &all["tasks"][0];
        for key in [
            "id",
            "name",
            "framework_id",
            "executor_id",
            "slave_id",
            "state",
            "resources",
            "statuses",
        ] {
            assert!(t.get(key).is_some(), "task field {key} in {t}");
        }
        let one =
            sim.m.legacy_tasks(&TaskQuery { task_id: Some("t1".into()), ..TaskQuery::default() });
        assert_eq!(one["tasks"][0]["state"], "TASK_RUNNING");
        assert_eq!(one["tasks"][0]["slave_id"], agent);
        assert_eq!(one["tasks"][0]["resources"]["cpus"], 1.0);
        let page = sim.m.legacy_tasks(&TaskQuery { limit: 1, offset: 1, ..TaskQuery::default() });
        assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1));
        let asc = sim.m.legacy_tasks(&TaskQuery { ascending: true, ..TaskQuery::default() });
        let des = sim.m.legacy_tasks(&TaskQuery::default());
        assert_eq!(asc["tasks"][0]["id"], des["tasks"][1]["id"], "order reverses");
        let none = sim
            .m
            .legacy_tasks(&TaskQuery { framework_id: Some("x".into()), ..TaskQuery::default() });
        assert!(none["tasks"].as_array().is_some_and(Vec::is_empty));
    }

    #[test]
    fn roles_summary_and_metrics_count_what_runs() {
        let (sim, agent, fw) = running();
        let roles = sim.m.legacy_roles();
        let web = roles["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "web")
            .cloned()
            .expect("role web");
        assert_eq!(web["frameworks"], json!([fw]));
        assert_eq!(web["allocated"]["cpus"], 2.0);
        assert_eq!(web["weight"], 1.0);

        let summary = sim.m.legacy_state_summary();
        assert_eq!(summary["slaves"][0]["TASK_RUNNING"], 2);
        assert_eq!(summary["slaves"][0]["framework_ids"], json!([fw]));
        assert_eq!(summary["frameworks"][0]["TASK_RUNNING"], 2);
        assert_eq!(summary["frameworks"][0]["slave_ids"], json!([agent]));

        let m = sim.m.legacy_metrics(sim.m.start_time + 10.0);
        assert_eq!(m["master/tasks_running"], 2.0);
        assert_eq!(m["master/slaves_active"], 1.0);
        assert_eq!(m["master/frameworks_active"], 1.0);
        assert_eq!(m["master/cpus_total"], 4.0);
        assert_eq!(m["master/cpus_used"], 2.0);
        assert_eq!(m["master/cpus_percent"], 0.5);
        assert_eq!(m["master/mem_total"], 1024.0);
        assert_eq!(m["master/uptime_secs"], 10.0);
    }
}
