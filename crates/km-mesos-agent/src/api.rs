//! The agent's HTTP endpoints: the v1 executor API (`POST /api/v1/executor`,
//! alias `/slave(1)/api/v1/executor`) with a Mesos agent's status codes and
//! reasons, `GET /state` (alias `/slave(1)/state`), `GET /health`, `GET /flags`,
//! `GET /metrics/snapshot` (Mesos's `slave/*` names) and the sandbox files API (`files.rs`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use km_mesos::ContentType;
use km_mesos::agent::call as agent_call;
use km_mesos::recordio;
use km_mesos::resources::{attributes_state_object, from_proto, state_object};
use km_mesos::v1::executor::{Call, Event, call, event};
use km_mesos::v1::{ContainerId, TaskState, task_status};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::agent::{Agent, launch_event};
use crate::state::{self, ExecutorKind};

/// The router for every endpoint.
pub(crate) fn router(agent: Arc<Agent>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/executor", any(executor))
        .route("/slave(1)/api/v1/executor", any(executor))
        .route("/state", get(state_json))
        .route("/slave(1)/state", get(state_json))
        .route("/health", get(health))
        .route("/slave(1)/health", get(health))
        .route("/flags", get(flags))
        .route("/slave(1)/flags", get(flags))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/files/browse", get(crate::files::browse))
        .route("/files/read", get(crate::files::read))
        .with_state(agent)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, message.into()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Mesos's `validateExecutorCall`, as far as km needs it.
fn validate(c: &Call) -> Result<(), String> {
    match c.r#type() {
        call::Type::Unknown => return Err("Expecting 'type' to be present".into()),
        call::Type::Subscribe if c.subscribe.is_none() => {
            return Err("Expecting 'subscribe' to be present".into());
        }
        call::Type::Message if c.message.is_none() => {
            return Err("Expecting 'message' to be present".into());
        }
        call::Type::Update => {
            let Some(update) = &c.update else {
                return Err("Expecting 'update' to be present".into());
            };
            let status = &update.status;
            match &status.uuid {
                None => return Err("Expecting 'uuid' to be present".into()),
                Some(u) if u.len() != 16 => {
                    return Err(format!("Invalid 'uuid': expected 16 bytes, got {}", u.len()));
                }
                Some(_) => {}
            }
            if status.state() == TaskState::TaskStaging {
                return Err("Received TASK_STAGING from executor".into());
            }
            if status.source != Some(task_status::Source::Executor as i32) {
                return Err(format!(
                    "Received wrong source '{}' (expected SOURCE_EXECUTOR)",
                    status
                        .source
                        .and_then(|s| task_status::Source::try_from(s).ok())
                        .map_or("none", |s| s.as_str_name())
                ));
            }
            if let Some(id) = &status.executor_id
                && id.value != c.executor_id.value
            {
                return Err(format!(
                    "ExecutorID in Call: {} does not match ExecutorID in TaskStatus: {}",
                    c.executor_id.value, id.value
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

async fn executor(
    State(agent): State<Arc<Agent>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        let mut r =
            text(StatusCode::METHOD_NOT_ALLOWED, format!("Expecting 'POST', received '{method}'"));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return text(StatusCode::BAD_REQUEST, "Expecting 'Content-Type' to be present");
    };
    let Some(ct) = ContentType::from_content_type(content_type.as_bytes()) else {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, got '{}'",
                String::from_utf8_lossy(content_type.as_bytes())
            ),
        );
    };
    let c: Call = match ct.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return text(StatusCode::BAD_REQUEST, format!("Failed to parse body into Call: {e}"));
        }
    };
    if let Err(e) = validate(&c) {
        return text(StatusCode::BAD_REQUEST, format!("Failed to validate executor::Call: {e}"));
    }
    let accept = if c.r#type() == call::Type::Subscribe {
        match ContentType::negotiate(headers.get(header::ACCEPT).map(HeaderValue::as_bytes)) {
            Some(a) => Some(a),
            None => {
                return text(
                    StatusCode::NOT_ACCEPTABLE,
                    "Expecting 'Accept' to allow application/json or application/x-protobuf",
                );
            }
        }
    } else {
        None
    };
    if c.r#type() == call::Type::Heartbeat {
        return StatusCode::ACCEPTED.into_response();
    }
    let (fw, ex) = (c.framework_id.value.clone(), c.executor_id.value.clone());
    {
        let core = agent.core();
        if !core.registry.frameworks.contains_key(&fw) {
            return text(StatusCode::BAD_REQUEST, "Framework cannot be found");
        }
        if core.registry.executor(&fw, &ex).is_none() {
            return text(StatusCode::BAD_REQUEST, "Executor cannot be found");
        }
        if c.r#type() != call::Type::Subscribe
            && !core.streams.contains_key(&(fw.clone(), ex.clone()))
        {
            return text(StatusCode::FORBIDDEN, "Executor is not subscribed");
        }
    }
    match c.r#type() {
        call::Type::Subscribe => {
            subscribe(&agent, &fw, &ex, c.subscribe.unwrap_or_default(), accept.unwrap_or(ct))
        }
        call::Type::Update => {
            let Some(update) = c.update else {
                return text(StatusCode::BAD_REQUEST, "Expecting 'update' to be present");
            };
            let mut status = update.status;
            if status.executor_id.is_none() {
                status.executor_id = Some(c.executor_id.clone());
            }
            let ack = acknowledged(&status);
            agent.record_update(&fw, status);
            agent.send_to_executor(&fw, &ex, ack);
            StatusCode::ACCEPTED.into_response()
        }
        call::Type::Message => {
            let data = c.message.map(|m| m.data).unwrap_or_default();
            let mut m = km_mesos::agent::Call {
                message: Some(agent_call::Message {
                    framework_id: c.framework_id,
                    executor_id: c.executor_id,
                    data,
                }),
                ..Default::default()
            };
            m.set_type(agent_call::Type::Message);
            agent.post(m);
            StatusCode::ACCEPTED.into_response()
        }
        call::Type::Heartbeat | call::Type::Unknown => StatusCode::ACCEPTED.into_response(),
    }
}

fn acknowledged(status: &km_mesos::v1::TaskStatus) -> Event {
    let mut e = Event {
        acknowledged: Some(event::Acknowledged {
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone().unwrap_or_default(),
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Acknowledged);
    e
}

fn subscribe(
    agent: &Arc<Agent>,
    fw: &str,
    ex: &str,
    sub: call::Subscribe,
    ct: ContentType,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let unacked_tasks: HashSet<String> =
        sub.unacknowledged_tasks.iter().map(|t| t.task_id.value.clone()).collect();
    let prepared = {
        let mut core = agent.core();
        let agent_id = core.agent_id.clone();
        // Tasks handed over before (this is a re-subscription) that the
        // executor does not know and that never got an update: lost.
        let lost: Vec<_> = core
            .registry
            .executor(fw, ex)
            .map(|e| {
                e.tasks
                    .values()
                    .filter(|t| t.delivered && t.state == TaskState::TaskStaging)
                    .filter(|t| !unacked_tasks.contains(&t.info.task_id.value))
                    .map(|t| t.info.task_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        match core.registry.subscribe(fw, ex) {
            Err(message) => Err(message),
            Ok(launches) => {
                let Some(framework) = core.registry.frameworks.get(fw) else {
                    return text(StatusCode::BAD_REQUEST, "Framework cannot be found");
                };
                let Some(e) = framework.executors.get(ex) else {
                    return text(StatusCode::BAD_REQUEST, "Executor cannot be found");
                };
                let mut subscribed = Event {
                    subscribed: Some(event::Subscribed {
                        executor_info: e.info.clone(),
                        framework_info: framework.info.clone(),
                        agent_info: agent.agent_info(agent_id.as_deref()),
                        container_id: Some(ContainerId {
                            value: e.container_id.clone(),
                            parent: None,
                        }),
                    }),
                    ..Default::default()
                };
                subscribed.set_type(event::Type::Subscribed);
                let terminating = e.phase == state::Phase::Terminating;
                let partition_aware = state::has_capability(
                    &framework.info,
                    km_mesos::v1::framework_info::capability::Type::PartitionAware,
                );
                core.streams.insert((fw.to_owned(), ex.to_owned()), tx.clone());
                agent.checkpoint_executor_locked(&core, fw, ex);
                Ok((subscribed, launches, terminating, lost, partition_aware))
            }
        }
    };
    let (subscribed, launches, terminating, lost, partition_aware) = match prepared {
        Ok(p) => p,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    tracing::info!(framework = %fw, executor = %ex, "executor subscribed");
    let _ = tx.send(subscribed);
    for launch in launches {
        let _ = tx.send(launch_event(launch));
    }
    for update in sub.unacknowledged_updates {
        let ack = acknowledged(&update.status);
        agent.record_update(fw, update.status);
        let _ = tx.send(ack);
    }
    for task in lost {
        let mut status = km_mesos::v1::TaskStatus {
            task_id: task,
            executor_id: Some(km_mesos::v1::ExecutorId { value: ex.to_owned() }),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            message: Some(
                "Task launched before the agent restarted was not received by the executor".into(),
            ),
            ..Default::default()
        };
        status.set_state(if partition_aware {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        });
        status.set_source(task_status::Source::Agent);
        status.set_reason(task_status::Reason::AgentRestarted);
        agent.record_update(fw, status);
    }
    if terminating {
        let mut e = Event::default();
        e.set_type(event::Type::Shutdown);
        let _ = tx.send(e);
    }
    drop(tx);
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        let e = rx.recv().await?;
        Some((Ok::<_, Infallible>(recordio::encode(&ct.encode(&e))), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct.as_str()));
    r
}

/// A task's resources in `/state`: what the master accepted, so every entry
/// converts; one that would not is left out rather than shown wrong.
fn task_resources_json(resources: &[km_mesos::v1::Resource]) -> Value {
    state_object(&resources.iter().filter_map(|r| from_proto(r).ok()).collect())
}

/// `GET /flags`: the agent's flags, as Mesos shows them (every value a string).
async fn flags(State(agent): State<Arc<Agent>>) -> Response {
    let cfg = &agent.cfg;
    let d = km_mesos::duration::format;
    // The `--resources` syntax: `name(role):value`.
    let resources: Vec<String> =
        cfg.resources.iter().map(|r| r.to_string().replacen(' ', ":", 1)).collect();
    axum::Json(json!({ "flags": {
        "master": cfg.master,
        "ip": cfg.ip,
        "port": cfg.port.to_string(),
        "hostname": cfg.hostname,
        "work_dir": cfg.work_dir.display().to_string(),
        "resources": resources.join(";"),
        "attributes": cfg.attributes.iter().map(|a| format!("{}:{}", a.name, a.value)).collect::<Vec<_>>().join(";"),
        "executor_shutdown_grace_period": d(cfg.executor_shutdown_grace_period),
        "executor_registration_timeout": d(cfg.executor_registration_timeout),
        "executor_reregistration_timeout": d(cfg.executor_reregistration_timeout),
        "recovery_timeout": d(cfg.recovery_timeout),
        "fetcher_max_size": cfg.fetcher_max_size.to_string(),
        "fetcher_cache_size": cfg.fetcher_cache_size.to_string(),
        "fetcher_cache_dir": cfg.fetcher_cache_dir.display().to_string(),
    }}))
    .into_response()
}

/// `GET /metrics/snapshot`: the agent's numbers under Mesos's `slave/*` names.
async fn metrics_snapshot(State(agent): State<Arc<Agent>>) -> Response {
    let core = agent.core();
    let mut by_state: std::collections::BTreeMap<TaskState, f64> = Default::default();
    let mut used = km_resources::Resources::default();
    let (mut executors, mut frameworks) = (0.0, 0.0);
    for f in core.registry.frameworks.values() {
        frameworks += 1.0;
        for e in f.executors.values() {
            executors += 1.0;
            for r in e.info.resources.iter().filter_map(|r| from_proto(r).ok()) {
                used.push(r);
            }
            for t in e.tasks.values() {
                *by_state.entry(t.state).or_default() += 1.0;
                for r in t.info.resources.iter().filter_map(|r| from_proto(r).ok()) {
                    used.push(r);
                }
            }
        }
    }
    let registered = core.registered;
    drop(core);
    let total: km_resources::Resources = agent.cfg.resources.iter().cloned().collect();
    let (t, u) = (state_object(&total), state_object(&used));
    let mut m = serde_json::Map::new();
    let mut put = |k: String, v: f64| {
        m.insert(k, json!(v));
    };
    put("slave/registered".into(), if registered { 1.0 } else { 0.0 });
    put("slave/uptime_secs".into(), (crate::agent::now_epoch() - agent.started).max(0.0));
    put("slave/executors_running".into(), executors);
    put("slave/frameworks_active".into(), frameworks);
    for (state, name) in [
        (TaskState::TaskStaging, "staging"),
        (TaskState::TaskStarting, "starting"),
        (TaskState::TaskRunning, "running"),
        (TaskState::TaskKilling, "killing"),
        (TaskState::TaskFinished, "finished"),
        (TaskState::TaskFailed, "failed"),
        (TaskState::TaskKilled, "killed"),
        (TaskState::TaskLost, "lost"),
    ] {
        put(format!("slave/tasks_{name}"), by_state.get(&state).copied().unwrap_or(0.0));
    }
    for name in ["cpus", "mem", "disk", "gpus"] {
        let (tv, uv) = (t[name].as_f64().unwrap_or(0.0), u[name].as_f64().unwrap_or(0.0));
        put(format!("slave/{name}_total"), tv);
        put(format!("slave/{name}_used"), uv);
        put(format!("slave/{name}_percent"), if tv > 0.0 { uv / tv } else { 0.0 });
    }
    let cache = agent.fetch_cache.size();
    put("containerizer/fetcher/cache_size_total_bytes".into(), cache.total as f64);
    put("containerizer/fetcher/cache_size_used_bytes".into(), cache.used as f64);
    axum::Json(serde_json::Value::Object(m)).into_response()
}

async fn state_json(State(agent): State<Arc<Agent>>) -> Response {
    let cfg = &agent.cfg;
    let core = agent.core();
    let attributes = attributes_state_object(&cfg.attributes);
    let agent_id = core.agent_id.clone().unwrap_or_default();
    let frameworks: Vec<Value> = core
        .registry
        .frameworks
        .iter()
        .map(|(fw_id, f)| {
            let executors: Vec<Value> = f
                .executors
                .values()
                .map(|e| {
                    let task = |t: &state::TaskEntry| {
                        json!({
                            "id": t.info.task_id.value,
                            "name": t.info.name,
                            "framework_id": fw_id,
                            "executor_id": if e.kind == ExecutorKind::Custom { e.info.executor_id.value.as_str() } else { "" },
                            "slave_id": agent_id,
                            "state": t.state.as_str_name(),
                            "resources": task_resources_json(&t.info.resources),
                        })
                    };
                    json!({
                        "id": e.info.executor_id.value,
                        "name": e.info.name.clone().unwrap_or_default(),
                        "type": if e.kind == ExecutorKind::Command { "COMMAND" } else { "CUSTOM" },
                        "container": e.container_id,
                        "directory": e.directory.display().to_string(),
                        "pid": e.pid,
                        "tasks": e.tasks.values().filter(|t| t.delivered).map(task).collect::<Vec<_>>(),
                        "queued_tasks": e.tasks.values().filter(|t| !t.delivered).map(task).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "id": fw_id,
                "name": f.info.name,
                "user": f.info.user,
                "checkpoint": f.info.checkpoint.unwrap_or(false),
                "executors": executors,
            })
        })
        .collect();
    let body = json!({
        "id": agent_id,
        "hostname": cfg.hostname,
        "port": cfg.port,
        "pid": format!("slave(1)@{}:{}", cfg.ip, cfg.port),
        "version": env!("CARGO_PKG_VERSION"),
        "master_url": cfg.master,
        "registered": core.registered,
        "resources": state_object(&cfg.resources.iter().cloned().collect()),
        "attributes": attributes,
        "frameworks": frameworks,
    });
    drop(core);
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::v1::{ExecutorId, FrameworkId, TaskId, TaskStatus};

    fn update(f: impl FnOnce(&mut TaskStatus)) -> Call {
        let mut status = TaskStatus {
            task_id: TaskId { value: "t".into() },
            uuid: Some(vec![0; 16]),
            ..Default::default()
        };
        status.set_state(TaskState::TaskRunning);
        status.set_source(task_status::Source::Executor);
        f(&mut status);
        let mut c = Call {
            executor_id: ExecutorId { value: "e".into() },
            framework_id: FrameworkId { value: "f".into() },
            update: Some(call::Update { status }),
            ..Default::default()
        };
        c.set_type(call::Type::Update);
        c
    }

    #[test]
    fn update_validation_follows_mesos() {
        assert!(validate(&update(|_| {})).is_ok());
        assert!(validate(&update(|s| s.uuid = None)).unwrap_err().contains("uuid"));
        assert!(
            validate(&update(|s| s.uuid = Some(vec![0; 15]))).unwrap_err().contains("16 bytes")
        );
        assert!(
            validate(&update(|s| s.set_state(TaskState::TaskStaging)))
                .unwrap_err()
                .contains("TASK_STAGING")
        );
        assert!(
            validate(&update(|s| s.set_source(task_status::Source::Agent)))
                .unwrap_err()
                .contains("source")
        );
        assert!(
            validate(&update(|s| s.executor_id = Some(ExecutorId { value: "x".into() }))).is_err()
        );
        let mut c = update(|_| {});
        c.r#type = None;
        assert!(validate(&c).unwrap_err().contains("'type'"));
    }

    #[test]
    fn state_resources_are_flat() {
        let rs = km_mesos::flags::parse_resources("cpus:2;cpus(web):1;mem:10;ports:[1-2]").unwrap();
        let v = task_resources_json(&rs);
        assert_eq!(v["cpus"], json!(3.0));
        assert_eq!(v["mem"], json!(10.0));
        assert_eq!(v["gpus"], json!(0.0));
        assert_eq!(v["ports"], json!("[1-2]"));
        let mut bad = rs.clone();
        bad[2].scalar = None;
        assert_eq!(
            task_resources_json(&bad)["mem"],
            json!(0.0),
            "an entry that does not convert is left out"
        );
    }
}
