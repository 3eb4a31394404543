//! km mesos-master under hostile input: every call type of the scheduler,
//! operator and agent APIs, each numeric field (enums included) set in turn to
//! values at and past the edge of its type. The master must answer every
//! request with a status (never a dropped connection or a 500), keep serving,
//! never exit, and come back with its registry after a kill -9.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use km_mesos::v1::master as op;
use km_mesos::v1::scheduler as sched;
use km_mesos::{ContentType, agent};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use serde_json::json;

use crate::support::mesos::{MesosMaster, Records};

const PROTOBUF: &str = "application/x-protobuf";
const WAIT: Duration = Duration::from_secs(20);

/// Values at and past the edge of each numeric kind.
fn hostile(kind: &Kind) -> Vec<Value> {
    match kind {
        Kind::Double => [1e19, -1e19, f64::MAX, f64::MIN, f64::INFINITY, f64::NAN, -0.0, 5e-324]
            .into_iter()
            .map(Value::F64)
            .collect(),
        Kind::Float => {
            [f32::MAX, f32::MIN, f32::INFINITY, f32::NAN].into_iter().map(Value::F32).collect()
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            [i32::MIN, i32::MAX, -1].into_iter().map(Value::I32).collect()
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            [i64::MIN, i64::MAX, -1].into_iter().map(Value::I64).collect()
        }
        Kind::Uint32 | Kind::Fixed32 => vec![Value::U32(u32::MAX)],
        Kind::Uint64 | Kind::Fixed64 => vec![Value::U64(u64::MAX)],
        Kind::Enum(_) => vec![Value::EnumNumber(-1), Value::EnumNumber(99_999)],
        _ => Vec::new(),
    }
}

/// Every copy of `msg` with one numeric field (at any depth, in present
/// sub-messages and the first element of repeated ones) set to one hostile value.
fn mutations(msg: &DynamicMessage) -> Vec<DynamicMessage> {
    let mut out = Vec::new();
    for field in msg.descriptor().fields() {
        let kind = field.kind();
        if let Kind::Message(_) = kind {
            if !msg.has_field(&field) {
                continue;
            }
            let value = msg.get_field(&field);
            if field.is_map() {
                continue;
            }
            if let Some(list) = value.as_list() {
                let Some(first) = list.first().and_then(|v| v.as_message()) else { continue };
                for m in mutations(first) {
                    let mut copy = msg.clone();
                    let mut items = list.to_vec();
                    items[0] = Value::Message(m);
                    copy.set_field(&field, Value::List(items));
                    out.push(copy);
                }
            } else if let Some(child) = value.as_message() {
                for m in mutations(child) {
                    let mut copy = msg.clone();
                    copy.set_field(&field, Value::Message(m));
                    out.push(copy);
                }
            }
            continue;
        }
        for v in hostile(&kind) {
            let mut copy = msg.clone();
            let v = if field.is_list() { Value::List(vec![v]) } else { v };
            copy.set_field(&field, v);
            out.push(copy);
        }
    }
    out
}

/// A message of `desc` with every field filled (to `depth` levels), so that a
/// call type's own sub-message and everything in it carry numbers to mutate.
fn populated(desc: &MessageDescriptor, depth: usize, path: &mut Vec<String>) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if depth == 0 || path.contains(&desc.full_name().to_owned()) {
        return msg;
    }
    path.push(desc.full_name().to_owned());
    for field in desc.fields() {
        if field.is_map() {
            continue;
        }
        let value = match field.kind() {
            Kind::Message(m) => Value::Message(populated(&m, depth - 1, path)),
            Kind::String => Value::String("x".into()),
            Kind::Bytes => Value::Bytes(vec![0u8; 16].into()),
            Kind::Bool => Value::Bool(true),
            Kind::Enum(e) => Value::EnumNumber(e.values().nth(1).map_or(0, |v| v.number())),
            Kind::Double => Value::F64(1.0),
            Kind::Float => Value::F32(1.0),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        };
        let value = if field.is_list() { Value::List(vec![value]) } else { value };
        msg.set_field(&field, value);
    }
    path.pop();
    msg
}

fn dynamic<M: ReflectMessage>(m: &M) -> DynamicMessage {
    m.transcode_to_dynamic()
}

fn from_json<M: ReflectMessage + Default>(v: serde_json::Value) -> M {
    ContentType::Json.decode(v.to_string().as_bytes()).expect("the base call is valid JSON")
}

/// One call of every type of `call_desc` (whose `type` field is an enum), with
/// the sub-message named like the type filled in, as `fix` adjusts it.
fn every_type(
    call_desc: &MessageDescriptor,
    fix: impl Fn(&mut DynamicMessage),
) -> Vec<DynamicMessage> {
    let type_field = call_desc.get_field_by_name("type").expect("a type field");
    let Kind::Enum(types) = type_field.kind() else { panic!("type is an enum") };
    let mut out = Vec::new();
    for t in types.values().filter(|v| v.number() != 0) {
        let mut c = DynamicMessage::new(call_desc.clone());
        c.set_field(&type_field, Value::EnumNumber(t.number()));
        if let Some(f) = call_desc.get_field_by_name(&t.name().to_lowercase())
            && let Kind::Message(m) = f.kind()
        {
            c.set_field(&f, Value::Message(populated(&m, 5, &mut Vec::new())));
        }
        fix(&mut c);
        out.push(c);
    }
    out
}

#[derive(Default)]
struct Tally {
    sent: usize,
    by_status: BTreeMap<u16, usize>,
}

impl Tally {
    fn count(&mut self, what: &str, status: u16, body: &str) {
        self.sent += 1;
        *self.by_status.entry(status).or_default() += 1;
        assert!(
            status < 500 || status == 501,
            "{what} answered {status}: {body}; a hostile value must get a 4xx"
        );
    }
}

async fn send_all(
    client: &reqwest::Client,
    url: &str,
    stream_id: Option<&str>,
    calls: Vec<DynamicMessage>,
    what: &str,
    tally: &mut Tally,
) {
    let stream_id = stream_id.map(str::to_owned);
    let mut answers = futures::stream::iter(calls.into_iter().map(|c| {
        let req = client
            .post(url)
            .header("Content-Type", PROTOBUF)
            .header("Accept", PROTOBUF)
            .body(c.encode_to_vec());
        let req = match &stream_id {
            Some(id) => req.header("Mesos-Stream-Id", id.as_str()),
            None => req,
        };
        async move {
            let resp = req.send().await.expect("every request gets an answer");
            let status = resp.status().as_u16();
            // A stream (a SUBSCRIBE that was taken) is dropped at once: the
            // master must take the disconnection of whatever it accepted.
            let body = if status == 200
                && resp.headers().get("Content-Type").is_some_and(|v| v == PROTOBUF)
            {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            (status, body)
        }
    }))
    .buffer_unordered(8);
    while let Some((status, body)) = answers.next().await {
        tally.count(what, status, &body);
    }
}

async fn get_state_ok(client: &reqwest::Client, m: &MesosMaster) -> op::response::GetState {
    let mut c = op::Call::default();
    c.set_type(op::call::Type::GetState);
    let resp = client
        .post(format!("{}/api/v1", m.url()))
        .header("Content-Type", PROTOBUF)
        .header("Accept", PROTOBUF)
        .body(c.encode_to_vec())
        .send()
        .await
        .expect("GET_STATE is answered");
    assert_eq!(resp.status(), 200, "GET_STATE after hostile input");
    let body = resp.bytes().await.expect("body");
    let r: op::Response = ContentType::Protobuf.decode(&body).expect("a Response");
    r.get_state.expect("GET_STATE answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_values_in_every_numeric_field_of_every_call_never_crash_the_master() {
    let work = tempfile::tempdir().expect("tempdir");
    let work_dir = format!("--work_dir={}", work.path().display());
    let mut m =
        MesosMaster::start(&["--simulate-agents=2", "--allocation_interval=100ms", &work_dir]);
    let client = reqwest::Client::builder().pool_max_idle_per_host(8).build().expect("client");
    let scheduler_url = format!("{}/api/v1/scheduler", m.url());
    let mut tally = Tally::default();

    // A framework with a live stream and an offer, so calls get past the
    // stream checks and reach the master's state.
    let subscribe = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "u", "name": "hostile", "failover_timeout": 3600.0,
        "capabilities": [{"type": "MULTI_ROLE"}, {"type": "PARTITION_AWARE"}], "roles": ["r"]}}});
    let resp = client
        .post(&scheduler_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(subscribe.to_string())
        .send()
        .await
        .expect("SUBSCRIBE");
    assert_eq!(resp.status(), 200);
    let stream_id = resp.headers()["Mesos-Stream-Id"].to_str().expect("ascii").to_owned();
    let mut records = Records::new(resp);
    let mut framework_id = String::new();
    let mut offer = serde_json::Value::Null;
    while offer.is_null() {
        let rec = records.next(WAIT).await.expect("events");
        let e: serde_json::Value = serde_json::from_slice(&rec).expect("JSON event");
        match e["type"].as_str() {
            Some("SUBSCRIBED") => {
                framework_id =
                    e["subscribed"]["framework_id"]["value"].as_str().unwrap_or("").into();
            }
            Some("OFFERS") => offer = e["offers"]["offers"][0].clone(),
            _ => {}
        }
    }
    let fw = json!({"value": framework_id});
    let agent_id = offer["agent_id"].clone();
    let offer_id = offer["id"].clone();

    // Realistic bases: a mutation of these reaches deep into the master.
    let task = json!({"name": "t", "task_id": {"value": "t1"}, "agent_id": agent_id,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1},
                       "allocation_info": {"role": "r"}},
                      {"name": "ports", "type": "RANGES", "allocation_info": {"role": "r"},
                       "ranges": {"range": [{"begin": 31000, "end": 31000}]}}],
        "command": {"value": "true"},
        "kill_policy": {"grace_period": {"nanoseconds": 1000}},
        "health_check": {"type": "COMMAND", "command": {"value": "true"}, "delay_seconds": 1.0,
                         "interval_seconds": 1.0, "timeout_seconds": 1.0,
                         "consecutive_failures": 3, "grace_period_seconds": 1.0},
        "max_completion_time": {"nanoseconds": 1000}});
    let mut bases: Vec<sched::Call> = [
        json!({"type": "ACCEPT", "accept": {"offer_ids": [offer_id],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            "filters": {"refuse_seconds": 5.0}}}),
        json!({"type": "DECLINE", "decline": {"offer_ids": [offer_id],
            "filters": {"refuse_seconds": 5.0}}}),
        json!({"type": "KILL", "kill": {"task_id": {"value": "t1"}, "agent_id": agent_id,
            "kill_policy": {"grace_period": {"nanoseconds": 1000}}}}),
        json!({"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": agent_id,
            "task_id": {"value": "t1"}, "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}}),
        json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "t1"},
            "agent_id": agent_id}]}}),
        json!({"type": "UPDATE_FRAMEWORK", "update_framework": {"framework_info": {
            "user": "u", "name": "hostile", "id": fw, "failover_timeout": 3600.0,
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "PARTITION_AWARE"}],
            "roles": ["r"]}}}),
    ]
    .into_iter()
    .map(|mut c| {
        c["framework_id"] = fw.clone();
        from_json(c)
    })
    .collect();
    // SUBSCRIBE of new frameworks: each taken one is dropped at once.
    bases.push(from_json(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "u", "name": "other", "failover_timeout": 10.0, "roles": ["r"],
        "capabilities": [{"type": "MULTI_ROLE"}]}}})));

    let mut scheduler_calls: Vec<DynamicMessage> =
        bases.iter().flat_map(|b| mutations(&dynamic(b))).collect();
    let desc = dynamic(&sched::Call::default()).descriptor();
    let fw_field = desc.get_field_by_name("framework_id").expect("framework_id");
    let fw_value = dynamic(&km_mesos::v1::FrameworkId { value: framework_id.clone() });
    for c in every_type(&desc, |c| {
        c.set_field(&fw_field, Value::Message(fw_value.clone()));
    }) {
        scheduler_calls.extend(mutations(&c));
    }
    let n = scheduler_calls.len();
    send_all(
        &client,
        &scheduler_url,
        Some(&stream_id),
        scheduler_calls,
        "scheduler call",
        &mut tally,
    )
    .await;
    println!("scheduler calls: {n} mutated calls sent");

    // The agent API: registrations and status updates with hostile numbers.
    let agent_url = format!("{}/km/v1/agent", m.url());
    let agent_bases: Vec<agent::Call> = [
        json!({"type": "SUBSCRIBE", "subscribe": {"agent_info": {"hostname": "h", "port": 5051,
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
                          {"name": "ports", "type": "RANGES",
                           "ranges": {"range": [{"begin": 31000, "end": 32000}]}}],
            "attributes": [{"name": "rack", "type": "SCALAR", "scalar": {"value": 1.0}}]}}}),
        json!({"type": "STATUS_UPDATE", "agent_id": agent_id, "status_update": {
            "framework_id": fw, "status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING",
            "agent_id": agent_id, "timestamp": 1.0, "uuid": "AAAAAAAAAAAAAAAAAAAAAA==",
            "healthy": true, "unreachable_time": {"nanoseconds": 1}}}}),
        json!({"type": "EXECUTOR_EXITED", "agent_id": agent_id, "executor_exited": {
            "framework_id": fw, "executor_id": {"value": "e"}, "status": 0}}),
    ]
    .into_iter()
    .map(from_json)
    .collect();
    let mut agent_calls: Vec<DynamicMessage> =
        agent_bases.iter().flat_map(|b| mutations(&dynamic(b))).collect();
    for c in every_type(&dynamic(&agent::Call::default()).descriptor(), |_| {}) {
        agent_calls.extend(mutations(&c));
    }
    let n = agent_calls.len();
    send_all(&client, &agent_url, None, agent_calls, "agent call", &mut tally).await;
    println!("agent calls: {n} mutated calls sent");

    // The operator API: every call type, filled in and mutated.
    let operator_url = format!("{}/api/v1", m.url());
    let mut operator_calls = Vec::new();
    for c in every_type(&dynamic(&op::Call::default()).descriptor(), |_| {}) {
        if c.get_field_by_name("type").and_then(|v| v.as_enum_number())
            == Some(op::call::Type::Teardown as i32)
        {
            continue; // would end the framework the scheduler calls above use
        }
        operator_calls.extend(mutations(&c));
        operator_calls.push(c);
    }
    let n = operator_calls.len();
    send_all(&client, &operator_url, None, operator_calls, "operator call", &mut tally).await;
    println!("operator calls: {n} mutated calls sent");

    println!("answers by status: {:?} ({} requests)", tally.by_status, tally.sent);
    assert!(m.proc.is_running(), "the master is still running; log:\n{}", m.proc.log());
    let state = get_state_ok(&client, &m).await;
    let frameworks = state.get_frameworks.map(|f| f.frameworks.len()).unwrap_or(0);
    assert!(frameworks >= 1, "the framework is still known");
    // The heartbeat and offers keep coming on the first framework's stream.
    let rec = records.next(WAIT).await.expect("the stream is alive");
    assert!(!rec.is_empty());

    // A restart from the registry written under all that input.
    m.restart();
    let state = get_state_ok(&client, &m).await;
    let recovered = state.get_agents.map(|a| a.recovered_agents.len()).unwrap_or(0);
    println!("after restart: {recovered} agents recovered from the registry");
    // The restarted master runs its timers over what it recovered; it must
    // still be serving after a new framework subscribes and gets an offer.
    let resp = client
        .post(&scheduler_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "u", "name": "after"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("SUBSCRIBE after restart");
    assert_eq!(resp.status(), 200);
    let mut records = Records::new(resp);
    loop {
        let rec = records.next(WAIT).await.expect("events after restart");
        let e: serde_json::Value = serde_json::from_slice(&rec).expect("JSON event");
        if e["type"] == "OFFERS" {
            break;
        }
    }
    assert!(m.proc.is_running(), "the restarted master is running; log:\n{}", m.proc.log());
    get_state_ok(&client, &m).await;
}
