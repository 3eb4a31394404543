//! The executor client against a fake agent (the Mesos v1 executor API).

use std::path::PathBuf;
use std::time::Duration;

use km_mesos::ContentType;
use km_mesos::executor::{Event, Events, Executor, ExecutorEnv};
use km_mesos::v1::executor::{Call, call, event};
use km_mesos::v1::{self, ExecutorId, FrameworkId, TaskId};

use crate::fake::{Api, Fake, Request, Subscription, within};
use crate::hex;

fn env(agent: &Fake, checkpoint: bool) -> ExecutorEnv {
    ExecutorEnv {
        agent_endpoint: agent.endpoint(),
        framework_id: FrameworkId { value: "F-0000".into() },
        executor_id: ExecutorId { value: "E1".into() },
        directory: PathBuf::from("/tmp/sandbox"),
        sandbox: PathBuf::from("/tmp/sandbox"),
        checkpoint,
        recovery_timeout: Duration::from_secs(1),
        subscription_backoff_max: Duration::from_millis(100),
        shutdown_grace_period: Duration::from_secs(5),
        agent_id: Some("A1".into()),
    }
}

fn task(id: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: TaskId { value: id.into() },
        agent_id: v1::AgentId { value: "A1".into() },
        ..Default::default()
    }
}

fn subscribed() -> v1::executor::Event {
    let mut e = v1::executor::Event {
        subscribed: Some(event::Subscribed {
            executor_info: v1::ExecutorInfo {
                executor_id: ExecutorId { value: "E1".into() },
                ..Default::default()
            },
            framework_info: v1::FrameworkInfo {
                user: "u".into(),
                name: "n".into(),
                ..Default::default()
            },
            agent_info: v1::AgentInfo {
                hostname: "h1".into(),
                id: Some(v1::AgentId { value: "A1".into() }),
                port: Some(5051),
                ..Default::default()
            },
            container_id: Some(v1::ContainerId { value: "C1".into(), parent: None }),
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Subscribed);
    e
}

fn launch(id: &str) -> v1::executor::Event {
    let mut e = v1::executor::Event {
        launch: Some(event::Launch { task: task(id) }),
        ..Default::default()
    };
    e.set_type(event::Type::Launch);
    e
}

fn acknowledged(task_id: &str, uuid: uuid::Uuid) -> v1::executor::Event {
    let mut e = v1::executor::Event {
        acknowledged: Some(event::Acknowledged {
            task_id: TaskId { value: task_id.into() },
            uuid: uuid.as_bytes().to_vec(),
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Acknowledged);
    e
}

fn running(id: &str) -> v1::TaskStatus {
    let mut s = v1::TaskStatus { task_id: TaskId { value: id.into() }, ..Default::default() };
    s.set_state(v1::TaskState::TaskRunning);
    s
}

async fn next_event(events: &mut Events) -> Event {
    within("an executor event", events.recv()).await.expect("driver still running")
}

async fn expect_mesos(events: &mut Events, ty: event::Type) -> v1::executor::Event {
    match next_event(events).await {
        Event::Mesos(e) if e.r#type() == ty => e,
        other => panic!("expected {ty:?}, got {other:?}"),
    }
}

async fn expect_end(events: &mut Events) {
    within("the driver to end", async {
        while let Some(e) = events.recv().await {
            assert!(matches!(e, Event::Disconnected { .. }), "unexpected {e:?}");
        }
    })
    .await;
}

/// Waits for SUBSCRIBE, sends SUBSCRIBED and checks it is delivered.
async fn subscribe(agent: &mut Fake, events: &mut Events) -> Subscription {
    let mut sub = agent.next_subscription().await;
    sub.stream().send(&subscribed());
    let e = expect_mesos(events, event::Type::Subscribed).await;
    assert_eq!(e.subscribed.unwrap().agent_info.hostname, "h1");
    sub
}

fn assert_ids(c: &Call) {
    assert_eq!(c.executor_id.value, "E1");
    assert_eq!(c.framework_id.value, "F-0000");
}

// SUBSCRIBE (no stream id, nothing to recover the first time), then
// SUBSCRIBED and LAUNCH.
async fn subscribe_and_launch(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let (exec, mut events) = Executor::start(env(&agent, false), ct).unwrap();
    let mut sub = agent.next_subscription().await;
    let req = &sub.request;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1/executor");
    assert_eq!(req.header("content-type"), Some(ct.as_str()));
    assert_eq!(req.header("accept"), Some(ct.as_str()));
    assert_eq!(req.header("mesos-stream-id"), None, "the executor API has no stream id");
    let c = req.decode::<Call>();
    assert_eq!(c.r#type(), call::Type::Subscribe);
    assert_ids(&c);
    assert_eq!(
        c.subscribe,
        Some(call::Subscribe::default()),
        "nothing to recover on the first SUBSCRIBE"
    );
    if ct == ContentType::Json {
        let body = req.json();
        assert_eq!(body["type"], "SUBSCRIBE");
        assert_eq!(body["executor_id"]["value"], "E1");
        assert_eq!(body["framework_id"]["value"], "F-0000");
    }
    assert!(sub.stream().stream_id.is_none());

    sub.stream().send(&subscribed());
    sub.stream().send_raw(&km_mesos::recordio::encode(&crate::fake::heartbeat(Api::Executor, ct)));
    sub.stream().send(&launch("t1"));
    let e = expect_mesos(&mut events, event::Type::Subscribed).await;
    let s = e.subscribed.unwrap();
    assert_eq!(s.agent_info.id.unwrap().value, "A1");
    assert_eq!(s.container_id.unwrap().value, "C1");
    within("connected()", exec.connected()).await;
    let e = expect_mesos(&mut events, event::Type::Launch).await;
    assert_eq!(e.launch.unwrap().task.task_id.value, "t1", "the heartbeat in between was consumed");
}
both!(subscribe_and_launch);

fn assert_update(req: &Request, ct: ContentType, task: &str, uuid: uuid::Uuid) {
    assert_eq!(req.path, "/api/v1/executor");
    assert_eq!(req.header("content-type"), Some(ct.as_str()));
    let c = req.decode::<Call>();
    assert_eq!(c.r#type(), call::Type::Update);
    assert_ids(&c);
    let status = c.update.unwrap().status;
    assert_eq!(status.task_id.value, task);
    assert_eq!(status.state(), v1::TaskState::TaskRunning);
    assert_eq!(status.uuid.as_deref(), Some(uuid.as_bytes().as_slice()), "16 raw uuid bytes");
    assert_eq!(status.source(), v1::task_status::Source::Executor);
    assert_eq!(status.executor_id, Some(ExecutorId { value: "E1".into() }));
    assert!(
        status.timestamp.is_some_and(|t| t > 1.0e9),
        "a timestamp in epoch seconds: {:?}",
        status.timestamp
    );
    if ct == ContentType::Json {
        let body = req.json();
        let json_status = &body["update"]["status"];
        assert_eq!(json_status["source"], "SOURCE_EXECUTOR");
        assert_eq!(json_status["state"], "TASK_RUNNING");
        assert_eq!(json_status["uuid"].as_str().map(str::len), Some(24));
    }
}

// Updates are kept until ACKNOWLEDGED; tasks until one of their updates is;
// with checkpointing both are re-sent in the re-SUBSCRIBE
// (`unacknowledged_updates`, `unacknowledged_tasks`).
async fn updates_are_reliable_across_reconnects(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let (exec, mut events) = Executor::start(env(&agent, true), ct).unwrap();
    let mut sub = subscribe(&mut agent, &mut events).await;
    sub.stream().send(&launch("t1"));
    sub.stream().send(&launch("t2"));
    expect_mesos(&mut events, event::Type::Launch).await;
    expect_mesos(&mut events, event::Type::Launch).await;

    let u1 = exec.update(running("t1")).await.unwrap();
    assert_update(&agent.next_call().await, ct, "t1", u1);
    assert_eq!(exec.unacknowledged_updates().len(), 1);
    sub.stream().send(&acknowledged("t1", u1));
    let ack = expect_mesos(&mut events, event::Type::Acknowledged).await;
    assert_eq!(ack.acknowledged.unwrap().uuid, u1.as_bytes().to_vec());
    assert!(exec.unacknowledged_updates().is_empty(), "ACKNOWLEDGED removes the update");

    let u2 = exec.update(running("t2")).await.unwrap();
    assert_ne!(u1, u2, "a fresh uuid per update");
    assert_update(&agent.next_call().await, ct, "t2", u2);
    let pending = exec.unacknowledged_updates();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].uuid.as_deref(), Some(u2.as_bytes().as_slice()));

    // The agent restarts: the stream ends; the executor re-subscribes.
    sub.stream.take().unwrap().close();
    assert!(matches!(next_event(&mut events).await, Event::Disconnected { .. }));
    let mut sub = agent.next_subscription().await;
    assert_eq!(sub.request.header("mesos-stream-id"), None);
    let c = sub.request.decode::<Call>();
    assert_eq!(c.r#type(), call::Type::Subscribe);
    assert_ids(&c);
    let resub = c.subscribe.unwrap();
    assert_eq!(resub.unacknowledged_updates.len(), 1, "the un-acked update is re-sent");
    let status = &resub.unacknowledged_updates[0].status;
    assert_eq!(status.uuid.as_deref(), Some(u2.as_bytes().as_slice()));
    assert_eq!(status.task_id.value, "t2");
    assert_eq!(status.source(), v1::task_status::Source::Executor);
    let tasks: Vec<_> =
        resub.unacknowledged_tasks.iter().map(|t| t.task_id.value.as_str()).collect();
    assert_eq!(tasks, ["t2"], "t1 had an acknowledged update, t2 not yet");
    if ct == ContentType::Json {
        let body = sub.request.json();
        assert_eq!(body["subscribe"]["unacknowledged_tasks"][0]["task_id"]["value"], "t2");
        assert_eq!(
            body["subscribe"]["unacknowledged_updates"][0]["status"]["task_id"]["value"],
            "t2"
        );
    }

    sub.stream().send(&subscribed());
    expect_mesos(&mut events, event::Type::Subscribed).await;
    sub.stream().send(&acknowledged("t2", u2));
    expect_mesos(&mut events, event::Type::Acknowledged).await;
    assert!(exec.unacknowledged_updates().is_empty());
}
both!(updates_are_reliable_across_reconnects);

// Without checkpointing there is no agent recovery: Disconnected, then the end.
async fn without_checkpoint_a_lost_agent_ends_the_driver(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let (_exec, mut events) = Executor::start(env(&agent, false), ct).unwrap();
    let mut sub = subscribe(&mut agent, &mut events).await;
    sub.stream.take().unwrap().close();
    match next_event(&mut events).await {
        Event::Disconnected { reason } => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(within("the end", events.recv()).await.is_none());
    assert_eq!(agent.subscribe_count(), 1, "no retry without checkpointing");
}
both!(without_checkpoint_a_lost_agent_ends_the_driver);

// With checkpointing, the executor retries until MESOS_RECOVERY_TIMEOUT, then
// gives up, as the Mesos executor API specifies.
async fn recovery_timeout_ends_the_driver(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let (_exec, mut events) = Executor::start(env(&agent, true), ct).unwrap();
    let mut sub = subscribe(&mut agent, &mut events).await;
    // The agent dies for good.
    agent.stop();
    sub.stream.take().unwrap().close();
    match next_event(&mut events).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    expect_end(&mut events).await;
}
both!(recovery_timeout_ends_the_driver);

// The recovery timeout bounds the outage however the agent misbehaves,
// here by accepting the re-SUBSCRIBE and never answering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_timeout_bounds_a_hung_resubscribe() {
    let mut agent = Fake::start(Api::Executor).await;
    let (_exec, mut events) = Executor::start(env(&agent, true), ContentType::Protobuf).unwrap();
    let mut sub = subscribe(&mut agent, &mut events).await;
    agent.answer_next_subscribe(crate::fake::SubscribeAnswer::Hang);
    sub.stream.take().unwrap().close();
    assert!(matches!(next_event(&mut events).await, Event::Disconnected { .. }));
    assert!(agent.next_subscription().await.stream.is_none());
    // recovery_timeout is 1 s; the deadline is 10 s.
    expect_end(&mut events).await;
}

// With checkpointing the executor keeps retrying while the agent answers 503
// (a recovering agent's answer).
async fn checkpointing_retries_until_the_agent_is_back(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let mut e = env(&agent, true);
    e.recovery_timeout = Duration::from_secs(30);
    let (_exec, mut events) = Executor::start(e, ct).unwrap();
    let mut sub = subscribe(&mut agent, &mut events).await;
    for _ in 0..2 {
        agent.answer_next_subscribe(crate::fake::SubscribeAnswer::Plain(
            crate::fake::Answer::status(503, "Agent has not finished recovery"),
        ));
    }
    sub.stream.take().unwrap().close();
    for _ in 0..2 {
        assert!(agent.next_subscription().await.stream.is_none());
    }
    let mut sub = agent.next_subscription().await;
    sub.stream().send(&subscribed());
    loop {
        match next_event(&mut events).await {
            Event::Disconnected { .. } => {}
            Event::Mesos(e) => {
                assert_eq!(e.r#type(), event::Type::Subscribed);
                break;
            }
        }
    }
}
both!(checkpointing_retries_until_the_agent_is_back);

// MESSAGE data is executor Call field 6 (`message`) → its field 2 (`data`).
async fn message_uses_field_two(ct: ContentType) {
    let mut agent = Fake::start(Api::Executor).await;
    let (exec, mut events) = Executor::start(env(&agent, false), ct).unwrap();
    let _sub = subscribe(&mut agent, &mut events).await;
    exec.message(b"x".to_vec()).await.unwrap();
    let req = agent.next_call().await;
    let c = req.decode::<Call>();
    assert_eq!(c.r#type(), call::Type::Message);
    assert_ids(&c);
    assert_eq!(c.message.unwrap().data, b"x");
    match ct {
        ContentType::Protobuf => {
            assert!(hex(&req.body).contains("32 03 12 01 78"), "body {}", hex(&req.body))
        }
        ContentType::Json => assert_eq!(req.json()["message"], serde_json::json!({"data": "eA=="})),
    }
}
both!(message_uses_field_two);

// An UPDATE refused by the agent is an error, yet kept for re-subscription.
#[tokio::test]
async fn refused_update_stays_pending() {
    let mut agent = Fake::start(Api::Executor).await;
    let (exec, mut events) = Executor::start(env(&agent, true), ContentType::Protobuf).unwrap();
    let _sub = subscribe(&mut agent, &mut events).await;
    agent.answer_next_call(crate::fake::Answer::status(403, "Executor is not subscribed"));
    match exec.update(running("t1")).await {
        Err(km_mesos::scheduler::Error::Status { status, body, .. }) => {
            assert_eq!(status.as_u16(), 403);
            assert_eq!(body, "Executor is not subscribed");
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(exec.unacknowledged_updates().len(), 1);
}
