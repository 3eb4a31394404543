//! The scheduler client against a fake master (the Mesos v1 scheduler API:
//! the RecordIO event stream, SUBSCRIBE and calls, from the client's side).

use std::time::Duration;

use base64::Engine as _;
use km_mesos::ContentType;
use km_mesos::scheduler::{Config, Credentials, Error, Event, Events, Scheduler};
use km_mesos::v1::scheduler::{Call, call, event};
use km_mesos::v1::{self, FrameworkId};
use reqwest::StatusCode;
use serde_json::json;

use crate::fake::{
    Answer, Api, EventStream, Fake, Request, SubscribeAnswer, Subscription, heartbeat, within,
};
use crate::hex;

/// Heartbeat interval used where a test wants the stream to die quickly.
const SHORT_HEARTBEAT: f64 = 0.2;
/// Heartbeat interval used where a test wants the stream to stay up; the
/// fake then heartbeats every [`HEARTBEAT_TICK`].
const STEADY_HEARTBEAT: f64 = 1.0;
const HEARTBEAT_TICK: Duration = Duration::from_millis(100);

fn framework_info() -> v1::FrameworkInfo {
    v1::FrameworkInfo { user: "u".into(), name: "n".into(), ..Default::default() }
}

fn config(master: &Fake, ct: ContentType) -> Config {
    Config {
        content_type: ct,
        missed_heartbeats: 2,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        ..Config::new(master.url(), framework_info())
    }
}

fn fid(value: &str) -> FrameworkId {
    FrameworkId { value: value.into() }
}

fn subscribed(framework_id: &str, heartbeat: f64) -> v1::scheduler::Event {
    let mut e = v1::scheduler::Event {
        subscribed: Some(event::Subscribed {
            framework_id: fid(framework_id),
            heartbeat_interval_seconds: Some(heartbeat),
            master_info: None,
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Subscribed);
    e
}

fn error_event(message: &str) -> v1::scheduler::Event {
    let mut e = v1::scheduler::Event {
        error: Some(event::Error { message: message.into() }),
        ..Default::default()
    };
    e.set_type(event::Type::Error);
    e
}

fn rescind(offer: &str) -> v1::scheduler::Event {
    let mut e = v1::scheduler::Event {
        rescind: Some(event::Rescind { offer_id: v1::OfferId { value: offer.into() } }),
        ..Default::default()
    };
    e.set_type(event::Type::Rescind);
    e
}

async fn next_event(events: &mut Events) -> Event {
    within("a scheduler event", events.recv()).await.expect("driver still running")
}

async fn expect_subscribed(events: &mut Events) -> (FrameworkId, Duration) {
    match next_event(events).await {
        Event::Subscribed { framework_id, heartbeat_interval, .. } => {
            (framework_id, heartbeat_interval)
        }
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

async fn expect_disconnected(events: &mut Events) -> String {
    match next_event(events).await {
        Event::Disconnected { reason, .. } => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

async fn expect_end(events: &mut Events) {
    let end = within("the driver to stop", async {
        loop {
            match events.recv().await {
                None => return None,
                Some(Event::Disconnected { reason, .. }) => return Some(reason),
                Some(_) => {}
            }
        }
    })
    .await;
    if let Some(reason) = end {
        panic!("driver re-subscribes instead of stopping (disconnected: {reason})");
    }
}

/// Waits for the SUBSCRIBE, answers SUBSCRIBED for `framework_id` and keeps
/// the stream alive with heartbeats.
async fn subscribe(master: &mut Fake, events: &mut Events, framework_id: &str) -> Subscription {
    let mut sub = master.next_subscription().await;
    let stream = sub.stream();
    stream.send(&subscribed(framework_id, STEADY_HEARTBEAT));
    stream.heartbeat_every(HEARTBEAT_TICK);
    let (got, _) = expect_subscribed(events).await;
    assert_eq!(got, fid(framework_id));
    sub
}

/// The call and its raw JSON (when JSON) of a request to the scheduler endpoint.
fn call_of(req: &Request) -> Call {
    req.decode::<Call>()
}

fn assert_call_headers(req: &Request, ct: ContentType, stream: &EventStream) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some(ct.as_str()), "exact Content-Type, no parameters");
    let id = stream.stream_id.as_deref().expect("scheduler streams have an id");
    assert_eq!(req.header("mesos-stream-id"), Some(id), "call carries the current stream id");
}

// SUBSCRIBE, request side: path, headers (no Mesos-Stream-Id), exact body.
async fn subscribe_request_is_exact(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (_sched, _events) = Scheduler::start(config(&master, ct)).unwrap();
    let sub = master.next_subscription().await;
    let req = &sub.request;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1/scheduler");
    assert_eq!(req.header("content-type"), Some(ct.as_str()));
    assert_eq!(req.header("accept"), Some(ct.as_str()));
    assert_eq!(req.header("mesos-stream-id"), None, "SUBSCRIBE must not carry a stream id");
    assert_eq!(req.header("authorization"), None);
    match ct {
        ContentType::Protobuf => {
            assert_eq!(hex(&req.body), "10 01 1a 08 0a 06 0a 01 75 12 01 6e");
        }
        ContentType::Json => {
            let body = req.json();
            assert_eq!(body["type"], "SUBSCRIBE");
            assert_eq!(body["subscribe"]["framework_info"]["user"], "u");
            assert_eq!(body["subscribe"]["framework_info"]["name"], "n");
            assert!(
                body.get("framework_id").is_none(),
                "first SUBSCRIBE has no framework_id: {body}"
            );
            assert!(body["subscribe"]["framework_info"].get("id").is_none(), "{body}");
        }
    }
    let c = call_of(req);
    assert_eq!(c.r#type(), call::Type::Subscribe);
    assert_eq!(c.framework_id, None);
}
both!(subscribe_request_is_exact);

// SUBSCRIBE, response side: exact SUBSCRIBED and HEARTBEAT RecordIO records,
// split across chunks.
async fn decodes_exact_subscribed_and_heartbeat_records(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (_sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = master.next_subscription().await;
    let stream = sub.stream();
    assert_eq!(stream.content_type, ct);
    let (subscribed, heartbeat): (Vec<u8>, &[u8]) = match ct {
        ContentType::Protobuf => (
            b"18\n\x08\x01\x12\x0e\x0a\x03\x0a\x01\x46\x11\x00\x00\x00\x00\x00\x00\x2e\x40"
                .to_vec(),
            b"2\n\x08\x08",
        ),
        ContentType::Json => {
            let text = br#"{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"F"},"heartbeat_interval_seconds":15.0}}"#;
            let mut rec = format!("{}\n", text.len()).into_bytes();
            rec.extend_from_slice(text);
            (rec, b"20\n{\"type\":\"HEARTBEAT\"}")
        }
    };
    // A record split inside its header and its data.
    stream.send_raw(&subscribed[..1]);
    stream.send_raw(&subscribed[1..7]);
    stream.send_raw(&subscribed[7..]);
    // Heartbeats, one of them spread over three chunks, one glued to the next record.
    stream.send_raw(heartbeat);
    stream.send_raw(&heartbeat[..1]);
    stream.send_raw(&heartbeat[1..3]);
    stream.send_raw(&heartbeat[3..]);
    let mut glued = heartbeat.to_vec();
    glued.extend_from_slice(&km_mesos::recordio::encode(&ct.encode(&rescind("O1"))));
    stream.send_raw(&glued);

    let (framework_id, interval) = expect_subscribed(&mut events).await;
    assert_eq!(framework_id, fid("F"));
    assert_eq!(interval, Duration::from_secs(15));
    match next_event(&mut events).await {
        Event::Mesos(e) => {
            assert_eq!(
                e.r#type(),
                event::Type::Rescind,
                "heartbeats are consumed, the stream stays in sync"
            );
            assert_eq!(e.rescind.unwrap().offer_id.value, "O1");
        }
        other => panic!("expected RESCIND, got {other:?}"),
    }
}
both!(decodes_exact_subscribed_and_heartbeat_records);

// A heartbeat interval no clock can hold, from a buggy or hostile master, is bounded (a day),
// not a panic of the driver.
async fn an_absurd_heartbeat_interval_is_bounded(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (_sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = master.next_subscription().await;
    sub.stream().send(&subscribed("F", 1e300));
    let (framework_id, interval) = expect_subscribed(&mut events).await;
    assert_eq!(framework_id, fid("F"));
    assert_eq!(interval, Duration::from_secs(86_400));
    sub.stream().send(&rescind("O1"));
    match next_event(&mut events).await {
        Event::Mesos(e) => assert_eq!(e.r#type(), event::Type::Rescind),
        other => panic!("expected RESCIND, got {other:?}"),
    }
}
both!(an_absurd_heartbeat_interval_is_bounded);

// Calls need the subscription and carry its identity (Mesos-Stream-Id and
// framework_id).
async fn calls_carry_stream_id_and_framework_id(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    // Nothing is live before SUBSCRIBED.
    assert!(matches!(sched.revive(vec![]).await, Err(Error::NotSubscribed)));
    assert!(matches!(sched.decline(vec![], None).await, Err(Error::NotSubscribed)));
    assert_eq!(sched.framework_id(), None);
    let sub = subscribe(&mut master, &mut events, "F-0000").await;
    let stream = sub.stream.as_ref().unwrap();
    assert_eq!(sched.framework_id(), Some(fid("F-0000")));
    assert_eq!(within("subscribed()", sched.subscribed()).await, fid("F-0000"));
    assert!(master.try_next_call().is_none(), "the refused calls were never sent");

    let agent = v1::AgentId { value: "A1".into() };
    sched.revive(vec![]).await.unwrap();
    sched.suppress(vec!["r".into()]).await.unwrap();
    sched.kill(v1::TaskId { value: "t1".into() }, Some(agent.clone()), None).await.unwrap();
    sched.shutdown(v1::ExecutorId { value: "e1".into() }, agent.clone()).await.unwrap();
    sched
        .message(agent.clone(), v1::ExecutorId { value: "e1".into() }, b"hi".to_vec())
        .await
        .unwrap();
    sched.accept(vec![v1::OfferId { value: "O1".into() }], vec![], None).await.unwrap();
    let expected = [
        call::Type::Revive,
        call::Type::Suppress,
        call::Type::Kill,
        call::Type::Shutdown,
        call::Type::Message,
        call::Type::Accept,
    ];
    for ty in expected {
        let req = master.next_call().await;
        assert_eq!(req.path, "/api/v1/scheduler");
        assert_call_headers(&req, ct, stream);
        let c = call_of(&req);
        assert_eq!(c.r#type(), ty);
        assert_eq!(c.framework_id, Some(fid("F-0000")), "{ty:?} carries framework_id");
        if ct == ContentType::Json {
            assert_eq!(req.json()["framework_id"], json!({"value": "F-0000"}));
        }
    }
}
both!(calls_carry_stream_id_and_framework_id);

// Unknown (400) vs disconnected (403) framework, with Mesos's reasons.
async fn call_errors_surface_status_and_reason(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let _sub = subscribe(&mut master, &mut events, "F").await;
    for (status, reason) in
        [(400, "Framework cannot be found"), (403, "Framework is not subscribed")]
    {
        master.answer_next_call(Answer::status(status, reason));
        match sched.revive(vec![]).await {
            Err(Error::Status { status: got, body, url }) => {
                assert_eq!(got, StatusCode::from_u16(status).unwrap());
                assert_eq!(body, reason);
                assert!(url.to_string().ends_with("/api/v1/scheduler"), "{url}");
            }
            other => panic!("expected a {status} Status error, got {other:?}"),
        }
        let err = sched.suppress(vec![]).await;
        assert!(err.is_ok(), "the next call is answered 202 again: {err:?}");
    }
}
both!(call_errors_surface_status_and_reason);

// SUBSCRIBE to a non-leader is redirected with a scheme-relative Location.
async fn subscribe_follows_redirect_to_leader(ct: ContentType) {
    let mut follower = Fake::start(Api::Scheduler).await;
    let mut leader = Fake::start(Api::Scheduler).await;
    let location = format!("//127.0.0.1:{}/master/api/v1/scheduler", leader.addr.port());
    follower.answer_next_subscribe(SubscribeAnswer::Plain(Answer::redirect(&location)));
    let (sched, mut events) = Scheduler::start(config(&follower, ct)).unwrap();

    let first = follower.next_subscription().await;
    assert!(first.stream.is_none());
    let mut sub = leader.next_subscription().await;
    assert_eq!(sub.request.path, "/master/api/v1/scheduler");
    assert_eq!(sub.request.body, first.request.body, "the same body is re-posted to the leader");
    assert_eq!(sub.request.header("content-type"), Some(ct.as_str()));
    assert_eq!(sub.request.header("accept"), Some(ct.as_str()));
    sub.stream().send(&subscribed("F", STEADY_HEARTBEAT));
    sub.stream().heartbeat_every(HEARTBEAT_TICK);
    match next_event(&mut events).await {
        Event::Subscribed { master, framework_id, .. } => {
            assert_eq!(framework_id, fid("F"));
            assert_eq!(master.port(), Some(leader.addr.port()));
        }
        other => panic!("expected Subscribed, got {other:?}"),
    }

    sched.revive(vec![]).await.unwrap();
    let req = leader.next_call().await;
    assert_eq!(req.path, "/master/api/v1/scheduler");
    assert_call_headers(&req, ct, sub.stream.as_ref().unwrap());
    assert_eq!(call_of(&req).r#type(), call::Type::Revive);
    assert!(follower.try_next_call().is_none(), "calls go to the leader, not the follower");
}
both!(subscribe_follows_redirect_to_leader);

// An ERROR event is fatal for the subscription; the driver stops.
async fn error_event_is_delivered_and_stops_the_driver(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let sub = subscribe(&mut master, &mut events, "F").await;
    sub.stream.as_ref().unwrap().send(&error_event("Framework failed over"));
    match next_event(&mut events).await {
        Event::Mesos(e) => {
            assert_eq!(e.r#type(), event::Type::Error);
            assert_eq!(e.error.unwrap().message, "Framework failed over");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    expect_end(&mut events).await;
    assert_eq!(master.subscribe_count(), 1, "no re-subscription after ERROR");
    assert!(matches!(sched.revive(vec![]).await, Err(Error::NotSubscribed)));
}
both!(error_event_is_delivered_and_stops_the_driver);

/// The second SUBSCRIBE of a framework: both id fields set, no stream id.
fn assert_resubscribe(req: &Request, ct: ContentType, framework_id: &str) {
    assert_eq!(req.header("mesos-stream-id"), None);
    let c = call_of(req);
    assert_eq!(c.r#type(), call::Type::Subscribe);
    assert_eq!(c.framework_id, Some(fid(framework_id)), "Call.framework_id on re-SUBSCRIBE");
    assert_eq!(
        c.subscribe.unwrap().framework_info.id,
        Some(fid(framework_id)),
        "framework_info.id on re-SUBSCRIBE"
    );
    if ct == ContentType::Json {
        let body = req.json();
        assert_eq!(body["framework_id"]["value"], framework_id);
        assert_eq!(body["subscribe"]["framework_info"]["id"]["value"], framework_id);
    }
}

/// After a lost subscription: re-subscribe, and later calls use the new stream id.
async fn resubscribe_and_check_new_stream(
    master: &mut Fake,
    sched: &Scheduler,
    events: &mut Events,
    ct: ContentType,
    old_stream_id: &str,
) -> Subscription {
    let mut sub = master.next_subscription().await;
    assert_resubscribe(&sub.request, ct, "F");
    let stream = sub.stream();
    let new_id = stream.stream_id.clone().unwrap();
    assert_ne!(new_id, old_stream_id);
    stream.send(&subscribed("F", STEADY_HEARTBEAT));
    stream.heartbeat_every(HEARTBEAT_TICK);
    assert_eq!(expect_subscribed(events).await.0, fid("F"));
    sched.revive(vec![]).await.unwrap();
    let req = master.next_call().await;
    assert_eq!(req.header("mesos-stream-id"), Some(new_id.as_str()), "calls use the new stream id");
    assert_eq!(call_of(&req).framework_id, Some(fid("F")));
    sub
}

// No event for `missed_heartbeats` heartbeat intervals = dead stream.
async fn resubscribes_after_heartbeat_loss(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = master.next_subscription().await;
    let stream = sub.stream();
    stream.send(&subscribed("F", SHORT_HEARTBEAT));
    // One heartbeat, then silence (the stream stays open).
    stream.send_raw(&km_mesos::recordio::encode(&heartbeat(Api::Scheduler, ct)));
    let (_, interval) = expect_subscribed(&mut events).await;
    assert_eq!(interval, Duration::from_millis(200));
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("heartbeat"), "reason names the heartbeats: {reason}");
    assert_eq!(sched.framework_id(), None, "no calls while disconnected");
    let old = sub.stream().stream_id.clone().unwrap();
    let _sub = resubscribe_and_check_new_stream(&mut master, &sched, &mut events, ct, &old).await;
    drop(sub);
}
both!(resubscribes_after_heartbeat_loss);

// End of stream = the master closed the subscription.
async fn resubscribes_after_eof(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    let old = sub.stream().stream_id.clone().unwrap();
    sub.stream.take().unwrap().close();
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("closed"), "{reason}");
    resubscribe_and_check_new_stream(&mut master, &sched, &mut events, ct, &old).await;
}
both!(resubscribes_after_eof);

// A non-200 SUBSCRIBE answer is a failed attempt, retried with backoff.
async fn retries_non_200_subscribe(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    master.answer_next_subscribe(SubscribeAnswer::Plain(Answer::status(503, "No leader elected")));
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    // First subscription: refused once, then accepted.
    let refused = master.next_subscription().await;
    assert!(refused.stream.is_none());
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("503") && reason.contains("No leader elected"), "{reason}");
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    assert_eq!(call_of(&sub.request).framework_id, None, "still a new framework");
    // Re-subscription after EOF: refused once, then accepted with the framework id.
    let old = sub.stream().stream_id.clone().unwrap();
    master.answer_next_subscribe(SubscribeAnswer::Plain(Answer::status(503, "No leader elected")));
    sub.stream.take().unwrap().close();
    expect_disconnected(&mut events).await;
    let refused = master.next_subscription().await;
    assert_resubscribe(&refused.request, ct, "F");
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("No leader elected"), "{reason}");
    resubscribe_and_check_new_stream(&mut master, &sched, &mut events, ct, &old).await;
}
both!(retries_non_200_subscribe);

fn status_update(uuid: Option<[u8; 16]>) -> v1::TaskStatus {
    let mut s = v1::TaskStatus {
        task_id: v1::TaskId { value: "t1".into() },
        agent_id: Some(v1::AgentId { value: "A1".into() }),
        uuid: uuid.map(|u| u.to_vec()),
        ..Default::default()
    };
    s.set_state(v1::TaskState::TaskRunning);
    s
}

// ACKNOWLEDGE with the raw 16 uuid bytes; never acknowledge an update without
// uuid (one the master generated).
async fn acknowledge_sends_the_exact_uuid(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let _sub = subscribe(&mut master, &mut events, "F").await;
    let uuid: [u8; 16] = *b"\x00\xff\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xfe";
    sched.acknowledge(&status_update(Some(uuid))).await.unwrap();
    let req = master.next_call().await;
    let c = call_of(&req);
    assert_eq!(c.r#type(), call::Type::Acknowledge);
    let ack = c.acknowledge.unwrap();
    assert_eq!(ack.uuid, uuid.to_vec());
    assert_eq!(ack.task_id.value, "t1");
    assert_eq!(ack.agent_id.value, "A1");
    if ct == ContentType::Json {
        let text = req.json()["acknowledge"]["uuid"].as_str().expect("uuid is a string").to_owned();
        assert_eq!(text.len(), 24);
        assert_eq!(text, base64::engine::general_purpose::STANDARD.encode(uuid));
    } else {
        // Field 3 of Acknowledge: tag 0x1a, length 16, the bytes.
        let mut needle = vec![0x1a, 16];
        needle.extend_from_slice(&uuid);
        assert!(req.body.windows(needle.len()).any(|w| w == needle), "body {}", hex(&req.body));
    }

    // A master-generated update (no uuid): nothing goes on the wire.
    sched.acknowledge(&status_update(None)).await.unwrap();
    sched.revive(vec![]).await.unwrap();
    assert_eq!(call_of(&master.next_call().await).r#type(), call::Type::Revive, "no ACK was sent");
}
both!(acknowledge_sends_the_exact_uuid);

// Implicit reconciliation is an empty Reconcile message.
async fn reconcile_implicit_and_explicit(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let _sub = subscribe(&mut master, &mut events, "F").await;

    sched.reconcile(vec![]).await.unwrap();
    let req = master.next_call().await;
    let c = call_of(&req);
    assert_eq!(c.r#type(), call::Type::Reconcile);
    assert_eq!(
        c.reconcile,
        Some(call::Reconcile { tasks: vec![] }),
        "implicit = present but empty"
    );
    match ct {
        ContentType::Json => assert_eq!(req.json()["reconcile"], json!({})),
        // Field 9, length 0.
        ContentType::Protobuf => {
            assert!(req.body.windows(2).any(|w| w == [0x4a, 0x00]), "body {}", hex(&req.body))
        }
    }

    let a1 = v1::AgentId { value: "A1".into() };
    sched
        .reconcile(vec![
            (v1::TaskId { value: "t1".into() }, Some(a1.clone())),
            (v1::TaskId { value: "nope".into() }, None),
        ])
        .await
        .unwrap();
    let req = master.next_call().await;
    let tasks = call_of(&req).reconcile.unwrap().tasks;
    assert_eq!(tasks.len(), 2);
    assert_eq!((tasks[0].task_id.value.as_str(), tasks[0].agent_id.as_ref()), ("t1", Some(&a1)));
    assert_eq!((tasks[1].task_id.value.as_str(), tasks[1].agent_id.as_ref()), ("nope", None));
    if ct == ContentType::Json {
        assert_eq!(
            req.json()["reconcile"],
            json!({"tasks": [{"task_id": {"value": "t1"}, "agent_id": {"value": "A1"}}, {"task_id": {"value": "nope"}}]})
        );
    }
}
both!(reconcile_implicit_and_explicit);

// DECLINE filters, and REVIVE's `roles` (not `role`).
async fn decline_filters_and_revive_roles(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let _sub = subscribe(&mut master, &mut events, "F").await;
    let offers = || vec![v1::OfferId { value: "O1".into() }, v1::OfferId { value: "O2".into() }];

    sched.decline(offers(), None).await.unwrap();
    let req = master.next_call().await;
    let decline = call_of(&req).decline.unwrap();
    assert_eq!(decline.offer_ids, offers());
    assert_eq!(decline.filters, None, "no filters: the master's default 5 s applies");
    if ct == ContentType::Json {
        let body = req.json();
        assert_eq!(body["type"], "DECLINE");
        assert_eq!(body["decline"], json!({"offer_ids": [{"value": "O1"}, {"value": "O2"}]}));
    }

    sched.decline(offers(), Some(v1::Filters { refuse_seconds: Some(0.0) })).await.unwrap();
    let req = master.next_call().await;
    assert_eq!(
        call_of(&req).decline.unwrap().filters,
        Some(v1::Filters { refuse_seconds: Some(0.0) })
    );
    if ct == ContentType::Json {
        assert_eq!(req.json()["decline"]["filters"]["refuse_seconds"].as_f64(), Some(0.0));
    }

    sched.revive(vec!["a".into(), "b".into()]).await.unwrap();
    let req = master.next_call().await;
    let c = call_of(&req);
    assert_eq!(c.r#type(), call::Type::Revive);
    assert_eq!(c.revive.unwrap().roles, vec!["a".to_owned(), "b".to_owned()]);
    match ct {
        ContentType::Json => assert_eq!(req.json()["revive"], json!({"roles": ["a", "b"]})),
        // Call field 15 (revive) holding field 1 twice.
        ContentType::Protobuf => {
            assert!(hex(&req.body).contains("7a 06 0a 01 61 0a 01 62"), "body {}", hex(&req.body));
        }
    }
}
both!(decline_filters_and_revive_roles);

// HTTP basic authentication on every request (SUBSCRIBE, re-SUBSCRIBE, calls).
async fn basic_auth_on_every_request(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let mut cfg = config(&master, ct);
    cfg.credentials = Some(Credentials { principal: "principal".into(), secret: "secret".into() });
    let (sched, mut events) = Scheduler::start(cfg).unwrap();
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    sched.revive(vec![]).await.unwrap();
    sched.acknowledge(&status_update(Some([7; 16]))).await.unwrap();
    sub.stream.take().unwrap().close();
    expect_disconnected(&mut events).await;
    let _again = subscribe(&mut master, &mut events, "F").await;
    sched.suppress(vec![]).await.unwrap();
    master.next_call().await;
    master.next_call().await;
    master.next_call().await;
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("principal:secret"));
    let log = master.log();
    assert_eq!(log.len(), 5);
    for req in &log {
        assert_eq!(
            req.header("authorization"),
            Some(expected.as_str()),
            "{} {}",
            req.method,
            req.path
        );
    }
}
both!(basic_auth_on_every_request);

// TEARDOWN ends the framework; the driver does not come back.
async fn teardown_stops_the_driver(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    sched.teardown().await.unwrap();
    let req = master.next_call().await;
    assert_call_headers(&req, ct, sub.stream.as_ref().unwrap());
    let c = call_of(&req);
    assert_eq!(c.r#type(), call::Type::Teardown);
    assert_eq!(c.framework_id, Some(fid("F")));
    if ct == ContentType::Json {
        assert_eq!(req.json(), json!({"framework_id": {"value": "F"}, "type": "TEARDOWN"}));
    }
    // The master ends the stream (terminating chunk).
    sub.stream.take().unwrap().close();
    expect_end(&mut events).await;
    assert_eq!(master.subscribe_count(), 1, "no re-subscription after TEARDOWN");
}
both!(teardown_stops_the_driver);

// TEARDOWN must reach the master while the framework is still
// connected. A master answers calls of a framework whose subscription
// connection has closed with 403 (and keeps it, with its tasks, until the
// failover timeout), so the driver must not drop the subscription before
// the TEARDOWN has been answered; the master ends the stream itself.
async fn teardown_is_sent_on_a_live_subscription(ct: ContentType) {
    let mut master = Fake::start(Api::Scheduler).await;
    master.calls_need_live_stream(Duration::from_millis(500));
    let (sched, mut events) = Scheduler::start(config(&master, ct)).unwrap();
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    let answer = sched.teardown().await;
    assert!(answer.is_ok(), "TEARDOWN must be answered 202 while subscribed, got {answer:?}");
    assert_eq!(call_of(&master.next_call().await).r#type(), call::Type::Teardown);
    sub.stream.take().unwrap().close();
    expect_end(&mut events).await;
    assert_eq!(master.subscribe_count(), 1);
}
both!(teardown_is_sent_on_a_live_subscription);

// Dropping the Events receiver stops the driver (no more SUBSCRIBEs): it stops for good, and
// had not subscribed again by then.
#[tokio::test]
async fn dropping_events_stops_resubscribing() {
    let mut master = Fake::start(Api::Scheduler).await;
    let (sched, mut events) = Scheduler::start(config(&master, ContentType::Protobuf)).unwrap();
    let mut sub = subscribe(&mut master, &mut events, "F").await;
    drop(events);
    sub.stream.take().unwrap().close();
    within("the driver to stop", sched.stopped()).await;
    assert!(sched.framework_id().is_none(), "no session once the driver stopped");
    assert_eq!(master.subscribe_count(), 1);
}

// After a redirect the driver remembers the leader. When that leader dies for
// good, it must go back to the configured master (which now leads, or knows
// who does) instead of retrying the dead one forever.
#[tokio::test]
async fn falls_back_to_the_configured_master_when_the_leader_is_gone() {
    let mut configured = Fake::start(Api::Scheduler).await;
    let mut leader = Fake::start(Api::Scheduler).await;
    let location = format!("//127.0.0.1:{}/master/api/v1/scheduler", leader.addr.port());
    configured.answer_next_subscribe(SubscribeAnswer::Plain(Answer::redirect(&location)));
    let (_sched, mut events) =
        Scheduler::start(config(&configured, ContentType::Protobuf)).unwrap();
    assert!(configured.next_subscription().await.stream.is_none());
    let mut sub = subscribe(&mut leader, &mut events, "F").await;
    // The leader goes away: its stream ends and its port refuses connections.
    leader.stop();
    sub.stream.take().unwrap().close();
    drop(leader);
    expect_disconnected(&mut events).await;
    // The configured master has taken over and must see the re-SUBSCRIBE.
    let mut sub = configured.next_subscription().await;
    assert_resubscribe(&sub.request, ContentType::Protobuf, "F");
    sub.stream().send(&subscribed("F", STEADY_HEARTBEAT));
    loop {
        match next_event(&mut events).await {
            Event::Subscribed { framework_id, master, .. } => {
                assert_eq!(framework_id, fid("F"));
                assert_eq!(master.port(), Some(configured.addr.port()));
                break;
            }
            Event::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
