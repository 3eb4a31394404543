//! The operator client against a fake master (the Mesos v1 operator API:
//! calls on `/api/v1`, its SUBSCRIBE stream, and the legacy `/master/state`).

use std::time::Duration;

use km_mesos::ContentType;
use km_mesos::operator::Operator;
use km_mesos::v1::master::{Call, Response, call, event, response};
use km_mesos::v1::{self, master};
use serde_json::json;

use crate::fake::{Answer, Api, Fake, within};

fn operator(fake: &Fake, ct: ContentType) -> Operator {
    Operator::new(fake.url(), ct, Duration::from_secs(5)).unwrap()
}

/// A GET_AGENTS answer, as a real master writes it.
fn get_agents_json() -> serde_json::Value {
    json!({
        "type": "GET_AGENTS",
        "get_agents": {
            "agents": [{
                "agent_info": {
                    "hostname": "h1",
                    "id": {"value": "a1"},
                    "port": 5051,
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 15360.0}, "role": "*"},
                        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}, "role": "*"}
                    ],
                    "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": "r1"}}]
                },
                "active": true,
                "version": "1.12.0",
                "pid": "slave(1)@127.0.0.1:5051",
                "registered_time": {"nanoseconds": 1700000000000000000_i64},
                "capabilities": [{"type": "MULTI_ROLE"}, {"type": "HIERARCHICAL_ROLE"}, {"type": "RESERVATION_REFINEMENT"}],
                "some_future_field": {"ignored": true}
            }]
        }
    })
}

fn get_agents_response() -> Response {
    km_mesos::json::from_value(&get_agents_json())
        .expect("a real master's GET_AGENTS answer decodes")
}

fn check_agents(agents: &response::GetAgents) {
    assert_eq!(agents.agents.len(), 1);
    let a = &agents.agents[0];
    assert!(a.active);
    assert_eq!(a.version, "1.12.0");
    assert_eq!(a.agent_info.hostname, "h1");
    assert_eq!(a.agent_info.id.as_ref().unwrap().value, "a1");
    assert_eq!(a.agent_info.port, Some(5051));
    let res = &a.agent_info.resources;
    assert_eq!(res.len(), 3);
    assert_eq!(res[0].name, "cpus");
    assert_eq!(res[0].scalar.as_ref().unwrap().value, 4.0);
    #[allow(deprecated)] // Resource.role: what GET_AGENTS writes for unreserved resources.
    let role = res[0].role.as_deref();
    assert_eq!(role, Some("*"));
    let ports = res[2].ranges.as_ref().unwrap();
    assert_eq!((ports.range[0].begin, ports.range[0].end), (31000, 32000));
    assert_eq!(a.registered_time.as_ref().unwrap().nanoseconds, 1_700_000_000_000_000_000);
    assert_eq!(a.capabilities.len(), 3);
}

fn answer(ct: ContentType, msg: &Response) -> Answer {
    Answer::ok(ct.as_str(), ct.encode(msg))
}

// GET_AGENTS in either encoding: a POST to `/api/v1` whose Content-Type and
// Accept are the chosen encoding.
async fn get_agents_decodes_the_documented_shape(ct: ContentType) {
    let mut master = Fake::start(Api::Operator).await;
    match ct {
        // The exact text a master writes, not our own encoding of it.
        ContentType::Json => {
            master.answer_next_call(Answer::ok("application/json", get_agents_json().to_string()))
        }
        ContentType::Protobuf => master.answer_next_call(answer(ct, &get_agents_response())),
    }
    let agents = operator(&master, ct).get_agents().await.unwrap();
    check_agents(&agents);
    let req = master.next_call().await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1");
    assert_eq!(req.header("content-type"), Some(ct.as_str()));
    assert_eq!(req.header("accept"), Some(ct.as_str()));
    assert_eq!(req.decode::<Call>().r#type(), call::Type::GetAgents);
    match ct {
        ContentType::Json => assert_eq!(req.json(), json!({"type": "GET_AGENTS"})),
        ContentType::Protobuf => assert_eq!(&req.body[..], [0x08, 0x0a]),
    }
}
both!(get_agents_decodes_the_documented_shape);

// Refused operator calls surface the HTTP status and Mesos's reason (the body).
async fn operator_errors_surface_status(ct: ContentType) {
    let master = Fake::start(Api::Operator).await;
    master.answer_next_call(Answer::status(503, "No leader elected"));
    match operator(&master, ct).get_agents().await {
        Err(e) => {
            assert_eq!(e.status().map(|s| s.as_u16()), Some(503));
            assert!(e.to_string().contains("No leader elected"), "{e}");
        }
        Ok(a) => panic!("expected 503, got {a:?}"),
    }
}
both!(operator_errors_surface_status);

// Non-leading masters redirect operator calls too (scheme-relative Location).
async fn get_agents_follows_redirect(ct: ContentType) {
    let mut follower = Fake::start(Api::Operator).await;
    let mut leader = Fake::start(Api::Operator).await;
    follower.answer_next_call(Answer::redirect(&format!(
        "//127.0.0.1:{}/master/api/v1",
        leader.addr.port()
    )));
    leader.answer_next_call(answer(ct, &get_agents_response()));
    check_agents(&operator(&follower, ct).get_agents().await.unwrap());
    assert_eq!(follower.next_call().await.path, "/api/v1");
    let req = leader.next_call().await;
    assert_eq!(req.path, "/master/api/v1");
    assert_eq!(req.decode::<Call>().r#type(), call::Type::GetAgents);
}
both!(get_agents_follows_redirect);

fn operator_subscribed() -> master::Event {
    let state = response::GetState {
        get_agents: Some(get_agents_response().get_agents.unwrap()),
        ..Default::default()
    };
    let mut e = master::Event {
        subscribed: Some(event::Subscribed {
            get_state: Some(state),
            heartbeat_interval_seconds: Some(15.0),
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Subscribed);
    e
}

fn agent_added(hostname: &str) -> master::Event {
    let mut agent = get_agents_response().get_agents.unwrap().agents.remove(0);
    agent.agent_info.hostname = hostname.into();
    agent.agent_info.id = Some(v1::AgentId { value: "a2".into() });
    let mut e =
        master::Event { agent_added: Some(event::AgentAdded { agent }), ..Default::default() };
    e.set_type(event::Type::AgentAdded);
    e
}

// Operator SUBSCRIBE: SUBSCRIBED (a state snapshot), HEARTBEAT, then changes.
async fn subscribe_streams_snapshot_heartbeat_and_changes(ct: ContentType) {
    let mut master = Fake::start(Api::Operator).await;
    let op = operator(&master, ct);
    let (events, mut sub) = tokio::join!(op.subscribe(), master.next_subscription());
    let mut events = events.unwrap();
    let req = &sub.request;
    assert_eq!(req.path, "/api/v1");
    assert_eq!(req.header("accept"), Some(ct.as_str()));
    assert_eq!(req.header("mesos-stream-id"), None);
    assert_eq!(req.decode::<Call>().r#type(), call::Type::Subscribe);
    let stream = sub.stream();
    assert!(stream.stream_id.is_none());
    stream.send(&operator_subscribed());
    stream.send_raw(&km_mesos::recordio::encode(&crate::fake::heartbeat(Api::Operator, ct)));
    stream.send(&agent_added("h2"));

    let e = within("SUBSCRIBED", events.next()).await.unwrap().unwrap();
    assert_eq!(e.r#type(), event::Type::Subscribed);
    let s = e.subscribed.unwrap();
    assert_eq!(s.heartbeat_interval_seconds, Some(15.0));
    check_agents(s.get_state.unwrap().get_agents.as_ref().unwrap());
    let e = within("HEARTBEAT", events.next()).await.unwrap().unwrap();
    assert_eq!(e.r#type(), event::Type::Heartbeat);
    let e = within("AGENT_ADDED", events.next()).await.unwrap().unwrap();
    assert_eq!(e.r#type(), event::Type::AgentAdded);
    let agent = e.agent_added.unwrap().agent;
    assert_eq!(agent.agent_info.hostname, "h2");
    assert!(agent.active);

    sub.stream.take().unwrap().close();
    assert!(within("end of stream", events.next()).await.unwrap().is_none());
}
both!(subscribe_streams_snapshot_heartbeat_and_changes);

/// A trimmed `/master/state` (the legacy JSON state endpoint) as a real
/// master writes it.
fn master_state() -> serde_json::Value {
    json!({
        "version": "1.12.0",
        "git_sha": "c1b42f79d157aa900be5cbb0c1023f1479962aa7",
        "build_date": "2024-08-23 00:00:00",
        "start_time": 1700000000.123,
        "elected_time": 1700000001.5,
        "id": "5b0c4a1e-0000-4000-8000-000000000001",
        "pid": "master@127.0.0.1:5050",
        "hostname": "m1",
        "capabilities": ["AGENT_UPDATE", "AGENT_DRAINING", "QUOTA_V2"],
        "activated_slaves": 1,
        "deactivated_slaves": 0,
        "unreachable_slaves": 0,
        "leader": "master@127.0.0.1:5050",
        "leader_info": {"id": "5b0c", "ip": 16777343, "port": 5050, "hostname": "m1"},
        "flags": {"allocation_interval": "1secs"},
        "slaves": [{
            "id": "5b0c-S0",
            "pid": "slave(1)@127.0.0.1:5051",
            "hostname": "h1",
            "port": 5051,
            "registered_time": 1700000002.25,
            "resources": {"cpus": 4.0, "disk": 10240.0, "gpus": 0.0, "mem": 15360.0, "ports": "[31000-32000]"},
            "used_resources": {"cpus": 0.0, "disk": 0.0, "gpus": 0.0, "mem": 0.0},
            "offered_resources": {"cpus": 0.0, "disk": 0.0, "gpus": 0.0, "mem": 0.0},
            "reserved_resources": {},
            "unreserved_resources": {"cpus": 4.0, "disk": 10240.0, "gpus": 0.0, "mem": 15360.0, "ports": "[31000-32000]"},
            "attributes": {"rack": "r1", "zone_id": 3.0, "slots": "[1-5, 7-9]", "tags": "{a, b}"},
            "active": true,
            "deactivated": false,
            "version": "1.12.0",
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"]
        }],
        "recovered_slaves": [],
        "frameworks": [{
            "id": "5b0c-0000",
            "name": "km",
            "active": true,
            "executors": [{"executor_id": "E1", "name": "km-executor", "slave_id": "5b0c-S0", "resources": {"cpus": 0.1}}]
        }],
        "completed_frameworks": [],
        "orphan_tasks": [],
        "unregistered_frameworks": []
    })
}

// The legacy `/master/state` JSON, reached through a redirect.
#[tokio::test]
async fn legacy_state_parses_slaves_and_follows_redirect() {
    let mut follower = Fake::start(Api::Operator).await;
    let mut leader = Fake::start(Api::Operator).await;
    follower.answer_next_call(Answer::redirect(&format!(
        "//127.0.0.1:{}/master/state",
        leader.addr.port()
    )));
    leader.answer_next_call(Answer::ok("application/json", master_state().to_string()));
    let state = operator(&follower, ContentType::Json).legacy_state().await.unwrap();

    let req = follower.next_call().await;
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/master/state"));
    let req = leader.next_call().await;
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/master/state"));

    assert_eq!(state.leader, "master@127.0.0.1:5050");
    assert_eq!(state.version, "1.12.0");
    assert_eq!(state.slaves.len(), 1);
    let s = &state.slaves[0];
    assert_eq!(
        (s.id.as_str(), s.hostname.as_str(), s.port, s.active),
        ("5b0c-S0", "h1", 5051, true)
    );
    assert_eq!(s.pid, "slave(1)@127.0.0.1:5051");
    assert_eq!(s.resources["ports"], "[31000-32000]");
    assert_eq!(s.resources["cpus"].as_f64(), Some(4.0));
    for k in ["cpus", "gpus", "mem", "disk"] {
        assert!(s.resources[k].is_number(), "{k} is numeric");
    }
    assert_eq!(s.attributes["rack"], "r1");
    assert_eq!(s.attributes["zone_id"].as_f64(), Some(3.0));
    assert_eq!(s.attributes["slots"], "[1-5, 7-9]");
    assert_eq!(s.attributes["tags"], "{a, b}");
    assert_eq!(state.frameworks.len(), 1);
    assert_eq!(state.frameworks[0].executors[0].slave_id, "5b0c-S0");
}

// A master without an elected leader answers 503 to /master/state too.
#[tokio::test]
async fn legacy_state_reports_errors() {
    let master = Fake::start(Api::Operator).await;
    master.answer_next_call(Answer::status(503, "No leader elected"));
    let err = operator(&master, ContentType::Json).legacy_state().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
}
