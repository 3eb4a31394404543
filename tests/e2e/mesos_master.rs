//! `km mesos-master` checked against what a real Mesos master does on the v1
//! scheduler and operator APIs, over HTTP, in both encodings, with simulated
//! agents.

use std::time::Duration;

use bytes::Bytes;
use km_mesos::ContentType;
use km_mesos::v1::scheduler::{Event, event};
use km_mesos::v1::{self, master as op};
use serde_json::{Value, json};

use crate::support::mesos::{MesosMaster, Records};

const JSON: &str = "application/json";
const PROTO: &str = "application/x-protobuf";
const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn post(
    url: &str,
    ct: Option<&str>,
    accept: Option<&str>,
    stream_id: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = client().post(url).body(body);
    if let Some(ct) = ct {
        req = req.header("Content-Type", ct);
    }
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    req.send().await.expect("request")
}

fn scheduler(m: &MesosMaster) -> String {
    format!("{}/api/v1/scheduler", m.url())
}

/// A JSON SUBSCRIBE for a framework described by `info` (merged into user/name).
fn subscribe_json(info: Value) -> String {
    let mut fi = json!({"user": "u", "name": "n"});
    if let (Some(base), Some(extra)) = (fi.as_object_mut(), info.as_object()) {
        base.extend(extra.clone());
    }
    let mut c = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}});
    if let Some(id) = info.get("id") {
        c["framework_id"] = id.clone();
    }
    c.to_string()
}

pub(crate) struct Sub {
    pub(crate) stream_id: String,
    pub(crate) framework_id: String,
    pub(crate) records: Records,
}

/// Subscribes over JSON and reads SUBSCRIBED (and the first HEARTBEAT).
pub(crate) async fn subscribe(m: &MesosMaster, info: Value) -> Sub {
    let resp = post(&scheduler(m), Some(JSON), Some(JSON), None, subscribe_json(info)).await;
    assert_eq!(resp.status(), 200);
    let stream_id = resp.headers()["Mesos-Stream-Id"].to_str().unwrap().to_owned();
    let mut records = Records::new(resp);
    let first: Value =
        serde_json::from_slice(&records.next(WAIT).await.expect("SUBSCRIBED")).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let framework_id = first["subscribed"]["framework_id"]["value"].as_str().unwrap().to_owned();
    Sub { stream_id, framework_id, records }
}

/// The next event that is not a HEARTBEAT.
async fn next_event(records: &mut Records) -> Value {
    loop {
        let rec = records.next(WAIT).await.expect("an event before the stream ended");
        let v: Value = serde_json::from_slice(&rec).unwrap();
        if v["type"] != "HEARTBEAT" {
            return v;
        }
    }
}

pub(crate) async fn call_json(m: &MesosMaster, sub: &Sub, c: Value) -> reqwest::Response {
    let mut c = c;
    c["framework_id"] = json!({"value": sub.framework_id});
    post(&scheduler(m), Some(JSON), None, Some(&sub.stream_id), c.to_string()).await
}

#[tokio::test]
async fn subscribe_json_streams_subscribed_then_an_exact_heartbeat() {
    let m = MesosMaster::start(&[]);
    let resp = post(&scheduler(&m), Some(JSON), Some(JSON), None, subscribe_json(json!({}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["Content-Type"], JSON);
    assert_eq!(resp.headers()["Transfer-Encoding"], "chunked");
    let stream_id = resp.headers()["Mesos-Stream-Id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&stream_id).is_ok() && stream_id.len() == 36, "{stream_id}");
    let mut records = Records::new(resp);
    let first: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED");
    assert!(!first["subscribed"]["framework_id"]["value"].as_str().unwrap().is_empty());
    assert_eq!(first["subscribed"]["heartbeat_interval_seconds"], json!(15.0));
    assert_eq!(records.next(WAIT).await.unwrap(), Bytes::from_static(br#"{"type":"HEARTBEAT"}"#));
}

#[tokio::test]
async fn subscribe_protobuf_matches_the_bytes() {
    let m = MesosMaster::start(&[]);
    let body = vec![0x10, 0x01, 0x1a, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'u', 0x12, 0x01, b'n'];
    let resp = post(&scheduler(&m), Some(PROTO), Some(PROTO), None, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["Content-Type"], PROTO);
    let mut records = Records::new(resp);
    let first = records.next(WAIT).await.unwrap();
    assert_eq!(&first[..3], &[0x08, 0x01, 0x12]);
    let ev: Event = ContentType::Protobuf.decode(&first).unwrap();
    assert_eq!(ev.r#type(), event::Type::Subscribed);
    assert_eq!(records.next(WAIT).await.unwrap(), Bytes::from_static(&[0x08, 0x08]));
}

#[tokio::test]
async fn stream_id_rules() {
    let m = MesosMaster::start(&[]);
    let sub = subscribe(&m, json!({})).await;
    let resp = post(
        &scheduler(&m),
        Some(JSON),
        Some(JSON),
        Some(&sub.stream_id),
        subscribe_json(json!({})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let decline = json!({"type": "DECLINE", "framework_id": {"value": sub.framework_id}, "decline": {"offer_ids": [{"value": "x"}]}});
    let none = post(&scheduler(&m), Some(JSON), None, None, decline.to_string()).await;
    assert_eq!(none.status(), 400);
    let other = uuid::Uuid::new_v4().to_string();
    let wrong = post(&scheduler(&m), Some(JSON), None, Some(&other), decline.to_string()).await;
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().await.unwrap().contains("didn't match"));
    let right =
        post(&scheduler(&m), Some(JSON), None, Some(&sub.stream_id), decline.to_string()).await;
    assert_eq!(right.status(), 202);
    assert!(right.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_framework_is_400_and_disconnected_framework_is_403() {
    let m = MesosMaster::start(&[]);
    let revive = |id: &str| json!({"type": "REVIVE", "framework_id": {"value": id}}).to_string();
    let resp = post(&scheduler(&m), Some(JSON), None, Some("x"), revive("never-seen")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "Framework cannot be found");
    let sub = subscribe(&m, json!({"failover_timeout": 3600.0})).await;
    let id = sub.framework_id.clone();
    drop(sub);
    assert_eq!(status_once_disconnected(&m, &id).await, 403);
}

/// The status of calls for framework `id` once the master has seen its connection close (they
/// are refused with 403 then; the last status seen if that never happens).
async fn status_once_disconnected(m: &MesosMaster, id: &str) -> u16 {
    let revive = json!({"type": "REVIVE", "framework_id": {"value": id}}).to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = post(&scheduler(m), Some(JSON), None, Some("any"), revive.clone())
            .await
            .status()
            .as_u16();
        if status == 403 || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn media_type_errors() {
    let m = MesosMaster::start(&[]);
    let url = scheduler(&m);
    let body = subscribe_json(json!({}));
    assert_eq!(post(&url, None, Some(JSON), None, body.clone()).await.status(), 400);
    assert_eq!(post(&url, Some("text/plain"), Some(JSON), None, body.clone()).await.status(), 415);
    assert_eq!(
        post(&url, Some("application/json; charset=utf-8"), Some(JSON), None, body.clone())
            .await
            .status(),
        415
    );
    let get = client().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["Allow"], "POST");
    assert_eq!(post(&url, Some(JSON), Some("text/html"), None, body).await.status(), 406);
    let no_user =
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "n"}}}).to_string();
    let resp = post(&url, Some(JSON), Some(JSON), None, no_user).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("framework_info.user"));
    let garbage = post(&url, Some(PROTO), Some(PROTO), None, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(garbage.status(), 400);
}

#[tokio::test]
async fn id_consistency_and_role_refusal() {
    let m = MesosMaster::start(&[]);
    let c = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n", "id": {"value": "f"}}}});
    assert_eq!(
        post(&scheduler(&m), Some(JSON), Some(JSON), None, c.to_string()).await.status(),
        400
    );
    let resp =
        post(&scheduler(&m), Some(JSON), Some(JSON), None, subscribe_json(json!({"roles": ["a"]})))
            .await;
    assert_eq!(resp.status(), 200);
    let mut records = Records::new(resp);
    let only: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(only["type"], "ERROR");
    assert!(only["error"]["message"].as_str().unwrap().contains("MULTI_ROLE"), "{only}");
    assert!(records.next(WAIT).await.is_none(), "the stream ends after ERROR");
}

#[tokio::test]
async fn failover_replaces_the_old_subscription() {
    let m = MesosMaster::start(&[]);
    let mut a = subscribe(&m, json!({"failover_timeout": 60.0})).await;
    let b = subscribe(&m, json!({"failover_timeout": 60.0, "id": {"value": a.framework_id}})).await;
    assert_eq!(b.framework_id, a.framework_id);
    assert_ne!(b.stream_id, a.stream_id);
    let err = next_event(&mut a.records).await;
    assert_eq!(err["type"], "ERROR");
    assert_eq!(err["error"]["message"], "Framework failed over");
    assert!(a.records.ends_within(WAIT).await);
    let stale = call_json(&m, &a, json!({"type": "REVIVE"})).await;
    assert_eq!(stale.status(), 400);
    assert_eq!(call_json(&m, &b, json!({"type": "REVIVE"})).await.status(), 202);
}

fn offer_resources(offer: &Value) -> &Vec<Value> {
    offer["resources"].as_array().expect("resources")
}

#[tokio::test]
async fn offers_have_the_mesos_shape_with_and_without_multi_role() {
    let m = MesosMaster::start(&["--simulate-agents=1", "--allocation_interval=200ms"]);
    let mut multi =
        subscribe(&m, json!({"roles": ["r"], "capabilities": [{"type": "MULTI_ROLE"}]})).await;
    let offers = next_event(&mut multi.records).await;
    assert_eq!(offers["type"], "OFFERS", "{offers}");
    let offer = &offers["offers"]["offers"][0];
    assert_eq!(offer["allocation_info"]["role"], "r");
    assert_eq!(offer["url"]["path"], "/slave(1)");
    assert!(offer["agent_id"]["value"].as_str().is_some());
    assert_eq!(offer["hostname"], "sim-agent-0");
    let ports = offer_resources(offer).iter().find(|r| r["name"] == "ports").expect("ports");
    assert_eq!(ports["type"], "RANGES");
    assert_eq!(ports["ranges"], json!({"range": [{"begin": 31000, "end": 32000}]}));
    for r in offer_resources(offer) {
        assert_eq!(r["role"], "*", "{r}");
        assert_eq!(r["allocation_info"], json!({"role": "r"}), "{r}");
    }
    // The agent is fully offered; a second, non-MULTI_ROLE framework sees it
    // once the first declines with no refusal.
    let ids = json!([offer["id"]]);
    let declined = call_json(&m, &multi, json!({"type": "DECLINE", "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 60.0}}})).await;
    assert_eq!(declined.status(), 202);
    let mut plain = subscribe(&m, json!({})).await;
    let offers = next_event(&mut plain.records).await;
    assert_eq!(offers["type"], "OFFERS");
    let offer = &offers["offers"]["offers"][0];
    assert!(offer.get("allocation_info").is_none(), "{offer}");
    assert!(offer_resources(offer).iter().all(|r| r.get("allocation_info").is_none()));
}

#[tokio::test]
async fn decline_filters_hold_until_revive() {
    let m = MesosMaster::start(&["--simulate-agents=1", "--allocation_interval=100ms"]);
    let mut sub = subscribe(&m, json!({})).await;
    let offers = next_event(&mut sub.records).await;
    let id = offers["offers"]["offers"][0]["id"].clone();
    let resp =
        call_json(&m, &sub, json!({"type": "DECLINE", "decline": {"offer_ids": [id]}})).await;
    assert_eq!(resp.status(), 202);
    // The default 5 s refusal: many allocation runs pass without an offer.
    let quiet = tokio::time::timeout(Duration::from_secs(2), next_event(&mut sub.records)).await;
    assert!(quiet.is_err(), "re-offered despite the decline filter: {quiet:?}");
    assert_eq!(call_json(&m, &sub, json!({"type": "REVIVE"})).await.status(), 202);
    let offers = next_event(&mut sub.records).await;
    assert_eq!(offers["type"], "OFFERS");
    // refuse_seconds 0: offered again at the next run.
    let id = offers["offers"]["offers"][0]["id"].clone();
    let zero = json!({"type": "DECLINE", "decline": {"offer_ids": [id], "filters": {"refuse_seconds": 0.0}}});
    assert_eq!(call_json(&m, &sub, zero).await.status(), 202);
    assert_eq!(next_event(&mut sub.records).await["type"], "OFFERS");
}

pub(crate) async fn next_event_of(records: &mut Records, ty: &str) -> Value {
    loop {
        let e = next_event(records).await;
        if e["type"] == ty {
            return e;
        }
    }
}

pub(crate) fn command_task(id: &str, agent: &Value, cpus: f64) -> Value {
    json!({
        "name": id, "task_id": {"value": id}, "agent_id": agent,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
        "command": {"value": "sleep 1000"}
    })
}

#[tokio::test]
async fn invalid_offers_and_over_asks_are_reported_as_updates() {
    let m = MesosMaster::start(&["--simulate-agents=1", "--allocation_interval=100ms"]);
    let mut sub = subscribe(&m, json!({})).await;
    let offers = next_event(&mut sub.records).await;
    let offer = &offers["offers"]["offers"][0];
    let agent = offer["agent_id"].clone();
    let bogus = json!({"type": "ACCEPT", "accept": {"offer_ids": [{"value": "made-up"}],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [command_task("t0", &agent, 1.0)]}}]}});
    assert_eq!(call_json(&m, &sub, bogus).await.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    let status = &update["update"]["status"];
    assert_eq!(status["state"], "TASK_LOST");
    assert_eq!(status["reason"], "REASON_INVALID_OFFERS");
    assert_eq!(status["source"], "SOURCE_MASTER");
    assert!(status.get("uuid").is_none());
    let over = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [command_task("t1", &agent, 99.0)]}}]}});
    assert_eq!(call_json(&m, &sub, over).await.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    let status = &update["update"]["status"];
    assert_eq!(status["task_id"]["value"], "t1");
    assert_eq!(status["state"], "TASK_ERROR");
    assert_eq!(status["reason"], "REASON_TASK_INVALID");
    assert!(status.get("uuid").is_none());
    // The unused offer is refused for the default 5 s: no offer for a while.
    let quiet =
        tokio::time::timeout(Duration::from_secs(2), next_event_of(&mut sub.records, "OFFERS"))
            .await;
    assert!(quiet.is_err());
}

#[tokio::test]
async fn tasks_run_on_simulated_agents_with_reliable_updates_kill_and_reconcile() {
    let m = MesosMaster::start(&["--simulate-agents=2", "--allocation_interval=100ms"]);
    let mut sub = subscribe(&m, json!({"capabilities": [{"type": "PARTITION_AWARE"}]})).await;
    let offers = next_event_of(&mut sub.records, "OFFERS").await;
    let offer = &offers["offers"]["offers"][0];
    let agent = offer["agent_id"].clone();
    // Many tasks in one ACCEPT on one offer: packing is the framework's business.
    let tasks: Vec<Value> =
        (0..10).map(|i| command_task(&format!("task-{i}"), &agent, 0.1)).collect();
    let accept = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}]}});
    assert_eq!(call_json(&m, &sub, accept).await.status(), 202);
    let mut running = std::collections::BTreeSet::new();
    while running.len() < 10 {
        let update = next_event_of(&mut sub.records, "UPDATE").await;
        let status = &update["update"]["status"];
        let uuid = status["uuid"].as_str().expect("agent updates carry a uuid");
        assert_eq!(uuid.len(), 24);
        assert_eq!(status["agent_id"], agent);
        let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": agent, "task_id": status["task_id"], "uuid": uuid}});
        assert_eq!(call_json(&m, &sub, ack).await.status(), 202);
        if status["state"] == "TASK_RUNNING" {
            running.insert(status["task_id"]["value"].as_str().unwrap().to_owned());
        }
    }
    // Implicit reconciliation: one answer per running task.
    assert_eq!(
        call_json(&m, &sub, json!({"type": "RECONCILE", "reconcile": {}})).await.status(),
        202
    );
    for _ in 0..10 {
        let update = next_event_of(&mut sub.records, "UPDATE").await;
        assert_eq!(update["update"]["status"]["reason"], "REASON_RECONCILIATION");
        assert_eq!(update["update"]["status"]["state"], "TASK_RUNNING");
    }
    // Explicit reconciliation of an unknown task (PARTITION_AWARE: TASK_UNKNOWN).
    let explicit =
        json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "nope"}}]}});
    assert_eq!(call_json(&m, &sub, explicit).await.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    assert_eq!(update["update"]["status"]["state"], "TASK_UNKNOWN");
    assert_eq!(update["update"]["status"]["source"], "SOURCE_MASTER");
    // KILL one.
    let kill = json!({"type": "KILL", "kill": {"task_id": {"value": "task-3"}, "agent_id": agent}});
    assert_eq!(call_json(&m, &sub, kill).await.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    assert_eq!(update["update"]["status"]["task_id"]["value"], "task-3");
    assert_eq!(update["update"]["status"]["state"], "TASK_KILLED");
    // The operator API sees the tasks.
    let tasks = operator(&m, ContentType::Json, op::call::Type::GetTasks).await;
    assert_eq!(tasks.get_tasks.unwrap().tasks.len(), 10);
    legacy_endpoints_show(&m, &sub.framework_id).await;
}

async fn get_json(m: &MesosMaster, path: &str) -> (u16, Value) {
    let resp = client().get(format!("{}{path}", m.url())).send().await.expect("GET");
    let code = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The legacy JSON endpoints of existing Mesos tools, at `/master/<name>` and `/<name>`, for the
/// 10 tasks (one killed) of the test above on 2 simulated agents.
async fn legacy_endpoints_show(m: &MesosMaster, framework_id: &str) {
    for prefix in ["/master", ""] {
        let (code, slaves) = get_json(m, &format!("{prefix}/slaves")).await;
        assert_eq!(code, 200);
        let slaves = slaves["slaves"].as_array().expect("slaves");
        assert_eq!(slaves.len(), 2);
        assert!(slaves[0]["pid"].as_str().is_some_and(|p| p.starts_with("slave(1)@")));
        let (_, tasks) = get_json(m, &format!("{prefix}/tasks?limit=3")).await;
        assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(3));
    }
    let (_, all) = get_json(m, "/master/tasks").await;
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(10));
    let (_, killed) = get_json(m, "/tasks?task_id=task-3").await;
    assert_eq!(killed["tasks"][0]["state"], "TASK_KILLED");
    assert_eq!(killed["tasks"][0]["framework_id"], framework_id);
    let (_, none) = get_json(m, "/master/tasks?framework_id=nobody").await;
    assert_eq!(none["tasks"], json!([]));
    let (code, _) = get_json(m, "/master/tasks?order=sideways").await;
    assert_eq!(code, 400);
    // What the Mesos CLI's `mesos task list` asks: -1 is no limit, as with Mesos.
    let (code, every) = get_json(m, "/tasks?order=asc&limit=-1").await;
    assert_eq!(code, 200);
    assert_eq!(every["tasks"].as_array().map(Vec::len), Some(10));
    let (code, _) = get_json(m, "/tasks?limit=lots").await;
    assert_eq!(code, 400);
    let (_, fws) = get_json(m, &format!("/master/frameworks/?framework_id={framework_id}")).await;
    assert_eq!(fws["frameworks"].as_array().map(Vec::len), Some(1));
    assert_eq!(fws["frameworks"][0]["id"], framework_id);
    let (_, summary) = get_json(m, "/master/state-summary").await;
    assert_eq!(summary["frameworks"][0]["TASK_RUNNING"], 9);
    assert_eq!(summary["frameworks"][0]["TASK_KILLED"], 1);
    let (_, roles) = get_json(m, "/master/roles").await;
    assert!(roles["roles"].as_array().is_some_and(|r| r.iter().any(|r| r["name"] == "*")));
    let (_, flags) = get_json(m, "/master/flags").await;
    assert_eq!(flags["flags"]["allocation_interval"], "100ms");
    let (_, maintenance) = get_json(m, "/master/maintenance/status").await;
    assert_eq!(maintenance, json!({ "draining_machines": [], "down_machines": [] }));
    let (_, metrics) = get_json(m, "/metrics/snapshot").await;
    assert_eq!(metrics["master/tasks_running"], 9.0);
    assert_eq!(metrics["master/slaves_active"], 2.0);
    assert!(metrics["master/cpus_total"].as_f64().is_some_and(|c| c > 0.0));
}

async fn operator(m: &MesosMaster, ct: ContentType, ty: op::call::Type) -> op::Response {
    let mut c = op::Call::default();
    c.set_type(ty);
    let resp = post(
        &format!("{}/api/v1", m.url()),
        Some(ct.as_str()),
        Some(ct.as_str()),
        None,
        ct.encode(&c),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["Content-Type"], ct.as_str());
    ct.decode(&resp.bytes().await.unwrap()).expect("operator response decodes")
}

#[tokio::test]
async fn teardown_ends_the_stream_and_the_id() {
    let m = MesosMaster::start(&[]);
    let mut sub = subscribe(&m, json!({"failover_timeout": 60.0})).await;
    assert_eq!(call_json(&m, &sub, json!({"type": "TEARDOWN"})).await.status(), 202);
    assert!(sub.records.ends_within(WAIT).await);
    let again = post(
        &scheduler(&m),
        Some(JSON),
        Some(JSON),
        None,
        subscribe_json(json!({"id": {"value": sub.framework_id}})),
    )
    .await;
    assert_eq!(again.status(), 200);
    let mut records = Records::new(again);
    let only: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(only["type"], "ERROR");
    assert_eq!(only["error"]["message"], "Framework has been removed");
}

#[tokio::test]
async fn operator_views_in_both_encodings_and_legacy_state() {
    let m = MesosMaster::start(&["--simulate-agents=3"]);
    for ct in [ContentType::Json, ContentType::Protobuf] {
        let agents = operator(&m, ct, op::call::Type::GetAgents).await.get_agents.unwrap();
        assert_eq!(agents.agents.len(), 3);
        let a = &agents.agents[0];
        assert!(a.active);
        assert_eq!(a.agent_info.port, Some(5051));
        assert!(a.agent_info.resources.iter().any(|r| r.name == "ports"));
        let health = operator(&m, ct, op::call::Type::GetHealth).await;
        assert!(health.get_health.unwrap().healthy);
    }
    // SUBSCRIBE: snapshot, heartbeat, then changes.
    let body = json!({"type": "SUBSCRIBE"}).to_string();
    let resp = post(&format!("{}/api/v1", m.url()), Some(JSON), Some(JSON), None, body).await;
    assert_eq!(resp.status(), 200);
    let mut records = Records::new(resp);
    let first: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED");
    assert_eq!(first["subscribed"]["heartbeat_interval_seconds"], json!(15.0));
    assert_eq!(
        first["subscribed"]["get_state"]["get_agents"]["agents"].as_array().unwrap().len(),
        3
    );
    let hb: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(hb["type"], "HEARTBEAT");
    let _sub = subscribe(&m, json!({})).await;
    let added: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(added["type"], "FRAMEWORK_ADDED");
    // The legacy state document.
    let state = client()
        .get(format!("{}/master/state", m.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let state: Value = serde_json::from_slice(&state).unwrap();
    let slaves = state["slaves"].as_array().unwrap();
    assert_eq!(slaves.len(), 3);
    assert_eq!(slaves[0]["active"], true);
    assert_eq!(slaves[0]["resources"]["ports"], "[31000-32000]");
    assert_eq!(slaves[0]["resources"]["cpus"], json!(4.0));
    assert!(slaves[0]["attributes"]["rack"].is_string());
    let redirect = client().get(format!("{}/master/redirect", m.url())).send().await.unwrap();
    assert_eq!(redirect.status(), 307);
    assert_eq!(redirect.headers()["Location"], format!("//127.0.0.1:{}", m.port));
}

#[tokio::test]
async fn km_mesos_scheduler_client_runs_against_the_master() {
    use km_mesos::scheduler::{Config, Event as ClientEvent, Scheduler};
    let m = MesosMaster::start(&["--simulate-agents=1", "--allocation_interval=100ms"]);
    for ct in [ContentType::Protobuf, ContentType::Json] {
        let info = v1::FrameworkInfo {
            user: "u".into(),
            name: "client".into(),
            failover_timeout: Some(60.0),
            ..Default::default()
        };
        let mut config = Config::new(m.url().parse().unwrap(), info);
        config.content_type = ct;
        let (sched, mut events) = Scheduler::start(config).unwrap();
        let framework_id = match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            ClientEvent::Subscribed { framework_id, .. } => framework_id,
            other => panic!("unexpected {other:?}"),
        };
        assert!(!framework_id.value.is_empty());
        let offer = loop {
            if let ClientEvent::Mesos(e) =
                tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap()
                && e.r#type() == event::Type::Offers
            {
                break e.offers.unwrap().offers.remove(0);
            }
        };
        sched
            .decline(vec![offer.id.clone()], Some(v1::Filters { refuse_seconds: Some(0.0) }))
            .await
            .unwrap();
        sched.teardown().await.unwrap();
        // The master ends the subscription and the driver stops for good.
        while let Some(e) = tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
            assert!(!matches!(e, ClientEvent::Subscribed { .. }), "re-subscribed after TEARDOWN");
        }
    }
}

#[tokio::test]
async fn credentials_require_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(&creds, "fw-principal s3cret\n").unwrap();
    let m = MesosMaster::start(&[&format!("--credentials={}", creds.display())]);
    let body = subscribe_json(json!({"principal": "fw-principal"}));
    let anonymous = post(&scheduler(&m), Some(JSON), Some(JSON), None, body.clone()).await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("WWW-Authenticate"));
    let wrong = client()
        .post(scheduler(&m))
        .basic_auth("fw-principal", Some("nope"))
        .header("Content-Type", JSON)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .post(scheduler(&m))
        .basic_auth("fw-principal", Some("s3cret"))
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let mut records = Records::new(right);
    let first: Value = serde_json::from_slice(&records.next(WAIT).await.unwrap()).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED");
}

/// This machine's address on its default route, if it has one (not loopback).
fn host_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.254:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// With credentials configured, the web page and the read-only operator calls it makes need no
/// login over loopback; from another address the page, its views of the agents and the
/// operator API all want the credentials. Writing operator calls want them everywhere.
#[tokio::test]
async fn the_page_needs_no_login_on_loopback_and_the_apis_credentials_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(&creds, "ops s3cret\n").unwrap();
    let port = crate::support::free_port();
    let mut cmd = std::process::Command::new(crate::support::km_bin());
    cmd.args(["mesos-master", "--ip=0.0.0.0", &format!("--port={port}")])
        .arg(format!("--credentials={}", creds.display()))
        .arg("--simulate-agents=1");
    let master = crate::support::process::Proc::spawn(
        "km mesos-master",
        cmd,
        &dir.path().join("master.log"),
    );
    let local = format!("http://127.0.0.1:{port}");
    let up = crate::support::process::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the master did not listen: {}", master.log());
    let http = client();
    let call = |base: String, body: Value, auth: bool| {
        let http = http.clone();
        async move {
            let mut req = http
                .post(format!("{base}/api/v1"))
                .header("Content-Type", JSON)
                .header("Accept", JSON)
                .body(body.to_string());
            if auth {
                req = req.basic_auth("ops", Some("s3cret"));
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let get = |url: String, auth: bool| {
        let http = http.clone();
        async move {
            let mut req = http.get(url);
            if auth {
                req = req.basic_auth("ops", Some("s3cret"));
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let agents = || json!({ "type": "GET_AGENTS" });
    let teardown =
        || json!({ "type": "TEARDOWN", "teardown": { "framework_id": { "value": "x" } } });
    // Loopback: the page and what it reads, no login; a write still needs the credentials.
    assert_eq!(get(format!("{local}/"), false).await, 200);
    assert_eq!(call(local.clone(), agents(), false).await, 200);
    assert_eq!(call(local.clone(), teardown(), false).await, 401);
    let wrong = http
        .post(format!("{local}/api/v1"))
        .basic_auth("ops", Some("nope"))
        .header("Content-Type", JSON)
        .body(agents().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "wrong credentials are refused, even on loopback");

    let Some(ip) = host_ip() else {
        println!("no address besides loopback here: only the loopback half was checked");
        return;
    };
    let remote = format!("http://{}", std::net::SocketAddr::new(ip, port));
    let page = http.get(format!("{remote}/")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.headers().contains_key("WWW-Authenticate"), "the browser asks for a login");
    assert_eq!(get(format!("{remote}/agents/any/state"), false).await, 401);
    assert_eq!(call(remote.clone(), agents(), false).await, 401);
    assert_eq!(get(format!("{remote}/"), true).await, 200);
    assert_eq!(call(remote.clone(), agents(), true).await, 200);
    assert_eq!(get(format!("{remote}/agents/no-such-agent/state"), true).await, 404);
    // A simulated agent has no address of its own: the master fetches nothing for it (it
    // never fetches from a name an agent merely claims).
    let body = http
        .post(format!("{local}/api/v1"))
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(agents().to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let agents: Value = serde_json::from_str(&body).unwrap();
    let sim = agents["get_agents"]["agents"][0]["agent_info"]["id"]["value"].as_str().unwrap();
    assert_eq!(get(format!("{local}/agents/{sim}/state"), false).await, 404);
}

#[tokio::test]
async fn mark_agent_gone_ends_its_tasks_for_good() {
    let m = MesosMaster::start(&["--simulate-agents=1", "--allocation_interval=100ms"]);
    let mut sub = subscribe(&m, json!({"capabilities": [{"type": "PARTITION_AWARE"}]})).await;
    let offers = next_event_of(&mut sub.records, "OFFERS").await;
    let offer = &offers["offers"]["offers"][0];
    let agent = offer["agent_id"].clone();
    let accept = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [command_task("t", &agent, 0.1)]}}]}});
    assert_eq!(call_json(&m, &sub, accept).await.status(), 202);
    loop {
        let status = next_event_of(&mut sub.records, "UPDATE").await["update"]["status"].clone();
        let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": agent, "task_id": status["task_id"], "uuid": status["uuid"]}});
        assert_eq!(call_json(&m, &sub, ack).await.status(), 202);
        if status["state"] == "TASK_RUNNING" {
            break;
        }
    }
    let gone =
        json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": agent}}).to_string();
    let resp = post(&format!("{}/api/v1", m.url()), Some(JSON), None, None, gone.clone()).await;
    assert_eq!(resp.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    assert_eq!(update["update"]["status"]["state"], "TASK_GONE_BY_OPERATOR");
    assert_eq!(update["update"]["status"]["reason"], "REASON_AGENT_REMOVED_BY_OPERATOR");
    assert_eq!(next_event_of(&mut sub.records, "FAILURE").await["failure"]["agent_id"], agent);
    let agents = operator(&m, ContentType::Json, op::call::Type::GetAgents).await;
    assert!(agents.get_agents.unwrap().agents.is_empty());
    // Asking about a task on the gone agent gets the same answer.
    let explicit = json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "other"}, "agent_id": agent}]}});
    assert_eq!(call_json(&m, &sub, explicit).await.status(), 202);
    let update = next_event_of(&mut sub.records, "UPDATE").await;
    assert_eq!(update["update"]["status"]["state"], "TASK_GONE_BY_OPERATOR");
    // Marking an unknown agent is refused.
    let unknown =
        json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "nope"}}})
            .to_string();
    assert_eq!(
        post(&format!("{}/api/v1", m.url()), Some(JSON), None, None, unknown).await.status(),
        400
    );
}

/// Waits until `m` names `leader_port` as the leader on `/master/redirect`.
async fn wait_leader(m: &MesosMaster, leader_port: u16) {
    let want = format!("//127.0.0.1:{leader_port}");
    for _ in 0..200 {
        let resp = client().get(format!("{}/master/redirect", m.url())).send().await.unwrap();
        if resp.status() == 307 && resp.headers()["Location"] == want.as_str() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("master on {} never saw the leader on {leader_port}; log:\n{}", m.port, m.proc.log());
}

#[tokio::test]
async fn standby_masters_redirect_and_take_over_with_the_registry() {
    use km_mesos::scheduler::{Config, Event as ClientEvent, Scheduler};
    let etcd = crate::support::etcd::Etcd::start();
    let flags = [
        format!("--etcd_servers={}", etcd.client_url()),
        "--etcd_lease_ttl=2secs".to_owned(),
        "--allocation_interval=100ms".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = MesosMaster::start(&flags);
    wait_leader(&a, a.port).await;
    let b = MesosMaster::start(&flags);
    wait_leader(&b, a.port).await;

    // A standby answers API calls with a redirect to the leader's /master path.
    let resp = post(&scheduler(&b), Some(JSON), Some(JSON), None, subscribe_json(json!({}))).await;
    assert_eq!(resp.status(), 307);
    assert_eq!(
        resp.headers()["Location"],
        format!("//127.0.0.1:{}/master/api/v1/scheduler", a.port)
    );

    // A framework pointed at the standby ends up subscribed at the leader.
    let info = v1::FrameworkInfo {
        user: "u".into(),
        name: "ha".into(),
        failover_timeout: Some(300.0),
        ..Default::default()
    };
    let mut config = Config::new(b.url().parse().unwrap(), info);
    config.min_backoff = Duration::from_millis(100);
    config.max_backoff = Duration::from_millis(500);
    let (_sched, mut events) = Scheduler::start(config).unwrap();
    let (first_id, first_master) =
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            ClientEvent::Subscribed { framework_id, master, .. } => (framework_id, master),
            other => panic!("unexpected {other:?}"),
        };
    assert_eq!(first_master.port(), Some(a.port));

    // The leader dies; the standby takes over with the registry from etcd, and
    // the framework fails over to it with the same ID.
    a.proc.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (second_id, second_master) = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no failover; standby log:\n{}",
            b.proc.log()
        );
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await.unwrap().unwrap() {
            ClientEvent::Subscribed { framework_id, master, .. } => break (framework_id, master),
            ClientEvent::Disconnected { .. } | ClientEvent::Mesos(_) => {}
        }
    };
    assert_eq!(second_id, first_id);
    assert_eq!(second_master.port(), Some(b.port));
    let frameworks = operator(&b, ContentType::Json, op::call::Type::GetFrameworks).await;
    assert!(
        frameworks
            .get_frameworks
            .unwrap()
            .frameworks
            .iter()
            .any(|f| f.framework_info.id.as_ref() == Some(&first_id))
    );
}

#[tokio::test]
async fn a_master_without_a_leader_answers_503() {
    // etcd that never answers: the master cannot campaign, so nobody leads.
    let dead = crate::support::free_port();
    let m = MesosMaster::start(&[&format!("--etcd_servers=http://127.0.0.1:{dead}")]);
    let resp = post(&scheduler(&m), Some(JSON), Some(JSON), None, subscribe_json(json!({}))).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "No leader elected");
}

/// A failover timeout at the edge of what a double holds, then a dropped connection: the
/// master keeps serving (and after a restart over its registry, too), the framework waits for
/// ever. This once panicked the event loop, and again on every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_failover_timeout_is_waited_out_for_ever_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let work = format!("--work_dir={}", dir.path().display());
    let mut m = MesosMaster::start(&[&work]);
    let sub = subscribe(&m, json!({"failover_timeout": 1e19})).await;
    let id = sub.framework_id.clone();
    drop(sub);
    // Once the master has seen the connection go, calls for the framework are refused (403):
    // the loop is alive.
    let status = status_once_disconnected(&m, &id).await;
    assert_eq!(status, 403, "master log:\n{}", m.proc.log());
    // It still takes new frameworks, and the old one may come back.
    drop(subscribe(&m, json!({"failover_timeout": 0.0})).await);
    m.restart();
    let back = subscribe(&m, json!({"failover_timeout": 1e19, "id": {"value": id}})).await;
    assert_eq!(back.framework_id, id);
    assert!(m.proc.is_running(), "master log:\n{}", m.proc.log());
    // Beyond what a duration can hold is refused with a reason (an ERROR event, as Mesos
    // answers an invalid FrameworkInfo).
    let resp = post(
        &scheduler(&m),
        Some(JSON),
        Some(JSON),
        None,
        subscribe_json(json!({"failover_timeout": 1e300})),
    )
    .await;
    let mut records = Records::new(resp);
    let error: Value = serde_json::from_slice(&records.next(WAIT).await.expect("ERROR")).unwrap();
    assert_eq!(error["type"], "ERROR", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap_or("").contains("failover_timeout"),
        "{error}"
    );
}

/// `km --version` and the master's /version name the same version.
#[tokio::test]
async fn the_binary_and_the_master_report_one_version() {
    let out = std::process::Command::new(crate::support::km_bin())
        .arg("--version")
        .output()
        .expect("km --version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let m = MesosMaster::start(&[]);
    let body = client().get(format!("{}/version", m.url())).send().await.unwrap();
    let v: Value = serde_json::from_slice(&body.bytes().await.unwrap()).unwrap();
    let version = v["version"].as_str().unwrap_or_default().to_owned();
    assert!(!version.is_empty() && text.contains(&version), "km --version: {text}; /version: {v}");
}

/// When the registry cannot be written, the master announces nothing it would hold: no
/// SUBSCRIBED goes out, and the process stops with the reason, so a restarted master starts
/// from the last registry written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_be_written_stops_the_master_before_it_announces() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = MesosMaster::start(&[&format!("--work_dir={}", dir.path().display())]);
    // The registry is written to a temporary file first: a directory in its place makes every
    // write fail, even for root.
    let blocker = dir.path().join("registry.pb.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let req = client()
        .post(scheduler(&m))
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(subscribe_json(json!({"failover_timeout": 60.0})))
        .send();
    let body =
        match tokio::time::timeout(WAIT, req).await.expect("an answer or a closed connection") {
            Ok(resp) => match tokio::time::timeout(WAIT, resp.bytes()).await {
                Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Err(_)) => String::new(),
                Err(_) => panic!("the stream stayed open; master log:\n{}", m.proc.log()),
            },
            Err(_) => String::new(),
        };
    assert!(!body.contains("SUBSCRIBED"), "announced without a registry: {body}");
    let status = m.proc.wait_timeout(WAIT);
    assert!(status.is_some_and(|s| !s.success()), "the master did not stop: {status:?}");
    assert!(m.proc.log().contains("cannot write the registry"), "{}", m.proc.log());
    // Writable again: a restart serves, and the framework was never registered.
    std::fs::remove_dir(&blocker).unwrap();
    m.restart();
    drop(subscribe(&m, json!({"failover_timeout": 60.0})).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_that_no_longer_holds_the_election_key_writes_nothing_and_stops() {
    use prost::Message as _;
    let etcd = crate::support::etcd::Etcd::start();
    let flags = [
        format!("--etcd_servers={}", etcd.client_url()),
        "--etcd_lease_ttl=30secs".to_owned(),
        "--etcd_prefix=/fenced".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = MesosMaster::start(&flags);
    wait_leader(&a, a.port).await;

    // Another party takes the election away in etcd (as a new leader would once
    // the key is gone); the master's lease is still alive, so it does not know.
    let mut etcd_client =
        etcd_client::Client::connect([etcd.client_url()], None).await.expect("etcd client");
    let deleted = etcd_client
        .delete("/fenced/leader", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete the election key");
    assert_eq!(deleted.deleted(), 1, "one election key");

    // A change the master must persist before announcing it.
    let resp =
        post(&scheduler(&a), Some(JSON), Some(JSON), None, subscribe_json(json!({"name": "late"})))
            .await;
    let body = tokio::time::timeout(WAIT, resp.bytes())
        .await
        .expect("the stream ends: the master stops instead of announcing")
        .unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&body).contains("SUBSCRIBED"),
        "a deposed master announced a subscription: {}",
        String::from_utf8_lossy(&body)
    );
    let status = a.proc.wait_timeout(WAIT).expect("the master stops");
    assert!(!status.success());
    assert!(a.proc.log().contains("no longer holds the election key"), "{}", a.proc.log());
    let registry = etcd_client.get("/fenced/registry", None).await.expect("get the registry");
    if let Some(kv) = registry.kvs().first() {
        let registry = km_mesos::agent::Registry::decode(kv.value()).expect("a registry");
        assert!(
            registry.frameworks.iter().all(|f| f.name != "late"),
            "the deposed master wrote the registry"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_frozen_past_its_lease_serves_nothing_when_it_wakes() {
    let etcd = crate::support::etcd::Etcd::start();
    let flags = [
        format!("--etcd_servers={}", etcd.client_url()),
        "--etcd_lease_ttl=2secs".to_owned(),
        "--etcd_prefix=/frozen".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = MesosMaster::start(&flags);
    wait_leader(&a, a.port).await;
    let mut etcd_client =
        etcd_client::Client::connect([etcd.client_url()], None).await.expect("etcd client");

    // Frozen (a stalled VM, a long GC pause) until etcd lets its lease expire.
    a.proc.signal("STOP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let keys = etcd_client
            .get("/frozen/leader", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("get the election key");
        if keys.kvs().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the frozen master's lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A request waits in the socket's queue; then the master wakes up.
    let request = tokio::spawn({
        let url = scheduler(&a);
        async move {
            let resp = client()
                .post(url)
                .header("Content-Type", JSON)
                .header("Accept", JSON)
                .body(subscribe_json(json!({"name": "woken"})))
                .send()
                .await;
            resp.map(|r| r.status().as_u16())
        }
    });
    a.proc.signal("CONT");
    match tokio::time::timeout(WAIT, request).await.expect("an answer or a closed socket") {
        Ok(Ok(status)) => assert_eq!(status, 503, "a master past its fence must not serve"),
        Ok(Err(_closed)) => {} // it stopped before reading the request: also nothing served
        Err(e) => panic!("request task failed: {e}"),
    }
    let status = a.proc.wait_timeout(WAIT).expect("the woken master stops");
    assert!(!status.success());
}

/// The number of offers in the next OFFERS event of `records`.
async fn next_offer_count(records: &mut Records) -> usize {
    let e = next_event_of(records, "OFFERS").await;
    e["offers"]["offers"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn offer_timeout_weights_suppress_and_refused_calls_through_http() {
    let m = MesosMaster::start(&[
        "--simulate-agents=8",
        "--simulate-agent-resources=cpus:1;mem:256",
        "--allocation_interval=100ms",
        "--offer_timeout=1secs",
        "--weights=heavy=3,light=1",
    ]);
    let mut heavy = subscribe(&m, json!({"role": "heavy"})).await;
    assert_eq!(next_offer_count(&mut heavy.records).await, 8, "alone, heavy is offered all");
    let mut light = subscribe(&m, json!({"role": "light"})).await;
    // --offer_timeout takes heavy's offers back; one allocation then splits the
    // agents by weighted DRF, 3:1.
    let mut rescinded = 0;
    while rescinded < 8 {
        let e = next_event(&mut heavy.records).await;
        if e["type"] == "RESCIND" {
            rescinded += 1;
        }
    }
    assert_eq!(next_offer_count(&mut light.records).await, 2);
    assert_eq!(next_offer_count(&mut heavy.records).await, 6);

    // Suppressed, light is left out: once the offers time out again, heavy gets all.
    assert_eq!(call_json(&m, &light, json!({"type": "SUPPRESS"})).await.status(), 202);
    loop {
        if next_offer_count(&mut heavy.records).await == 8 {
            break;
        }
    }

    // Calls the master cannot carry out are refused, not taken with a 202.
    let request = json!({"type": "REQUEST", "request": {"requests": []}});
    assert_eq!(call_json(&m, &heavy, request).await.status(), 501);
    let offer = next_event_of(&mut heavy.records, "OFFERS").await["offers"]["offers"][0].clone();
    let reserve = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "RESERVE", "reserve": {"resources": []}}]}});
    let resp = call_json(&m, &heavy, reserve).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap_or_default().contains("RESERVE"));
    let update = json!({"type": "UPDATE_FRAMEWORK", "update_framework": {"framework_info": {
        "user": "u", "name": "renamed", "role": "heavy",
        "id": {"value": heavy.framework_id}}}});
    assert_eq!(call_json(&m, &heavy, update).await.status(), 200, "UPDATE_FRAMEWORK is applied");
    let frameworks = operator(&m, ContentType::Json, op::call::Type::GetFrameworks).await;
    assert!(
        frameworks
            .get_frameworks
            .expect("frameworks")
            .frameworks
            .iter()
            .any(|f| f.framework_info.name == "renamed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_master_with_event_streams_open() {
    let mut m = MesosMaster::start(&[]);
    let mut sub = subscribe(&m, json!({})).await;
    // An operator stream too: both are responses that never end on their own.
    let op = post(
        &format!("{}/api/v1", m.url()),
        Some(JSON),
        Some(JSON),
        None,
        json!({"type": "SUBSCRIBE"}).to_string(),
    )
    .await;
    assert_eq!(op.status(), 200);
    m.proc.signal("TERM");
    let status = tokio::task::block_in_place(|| m.proc.wait_timeout(WAIT))
        .unwrap_or_else(|| panic!("the master did not exit on SIGTERM:\n{}", m.proc.log()));
    assert!(status.success(), "exit status {status}:\n{}", m.proc.log());
    // Its streams end with it.
    while sub.records.next(WAIT).await.is_some() {}
    drop(op);
}
