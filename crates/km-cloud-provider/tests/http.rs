//! `MesosCloud` against tiny in-test HTTP servers that answer as Mesos
//! masters do (or as masters must not): redirects to the leader, masters
//! without the operator API, the cache, a master that never answers, and
//! the SUBSCRIBE event stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use km_cloud_provider::{
    AgentChange, AgentWatch, CloudConfig, CloudError, CloudProvider, Instance, MesosCloud,
    NodeAddress, NodeAddressType,
};
use km_mesos::ContentType;
use km_mesos::recordio;
use km_mesos::v1::{self, master as op};

/// Limit of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

/// One request as the fake master saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    content_type: Option<String>,
    accept: Option<String>,
    /// The operator call, when the body was one.
    call: Option<op::call::Type>,
}

type Reply = dyn Fn(&Seen) -> Response + Send + Sync;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Arc<Reply>,
}

/// A fake master on a loopback port, recording every request.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(reply: impl Fn(&Seen) -> Response + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState { seen: Arc::clone(&seen), reply: Arc::new(reply) };
        let app = Router::new().fallback(record_and_reply).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn record_and_reply(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let call = ContentType::Json.decode::<op::Call>(&body).ok().map(|c| c.r#type());
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        content_type: text(header::CONTENT_TYPE),
        accept: text(header::ACCEPT),
        call,
    };
    state.seen.lock().unwrap().push(seen.clone());
    (state.reply)(&seen)
}

fn cloud(master: &str, tweak: impl FnOnce(&mut CloudConfig)) -> MesosCloud {
    let mut config = CloudConfig::parse(&format!("[mesos-cloud]\nmesos-master = {master}\n"))
        .expect("test config parses");
    config.http_client_timeout = Duration::from_secs(5);
    config.state_cache_ttl = Duration::ZERO;
    tweak(&mut config);
    MesosCloud::new(config).unwrap()
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value }),
        ..Default::default()
    }
}

fn agent(id: &str, hostname: &str, pid: &str, active: bool) -> op::response::get_agents::Agent {
    op::response::get_agents::Agent {
        agent_info: v1::AgentInfo {
            hostname: hostname.into(),
            id: Some(v1::AgentId { value: id.into() }),
            port: Some(5051),
            ..Default::default()
        },
        active,
        version: "1.11.0".into(),
        pid: Some(pid.into()),
        total_resources: vec![scalar("cpus", 4.0), scalar("mem", 8192.0), scalar("disk", 1e5)],
        ..Default::default()
    }
}

/// The cluster the fake masters describe: S0 runs km's executor and has an
/// IP in its PID; S1 is disconnected and, as km's master writes PIDs, has
/// its hostname there (so its IP comes from DNS).
fn operator_answer(call: op::call::Type) -> Response {
    use op::call::Type as C;
    let mut r = op::Response::default();
    match call {
        C::GetAgents => {
            r.set_type(op::response::Type::GetAgents);
            r.get_agents = Some(op::response::GetAgents {
                agents: vec![
                    agent("S0", "n1.example.com", "slave(1)@10.0.0.5:5051", true),
                    agent("S1", "localhost", "slave(1)@localhost:5051", false),
                ],
                recovered_agents: vec![],
            });
        }
        C::GetExecutors => {
            r.set_type(op::response::Type::GetExecutors);
            let executor = |agent: &str, name: &str| op::response::get_executors::Executor {
                executor_info: v1::ExecutorInfo {
                    executor_id: v1::ExecutorId { value: format!("{name}@{agent}") },
                    name: Some(name.into()),
                    ..Default::default()
                },
                agent_id: v1::AgentId { value: agent.into() },
            };
            r.get_executors = Some(op::response::GetExecutors {
                executors: vec![executor("S0", "Kubelet-Executor"), executor("S1", "other")],
                ..Default::default()
            });
        }
        C::GetFlags => {
            r.set_type(op::response::Type::GetFlags);
            r.get_flags = Some(op::response::GetFlags {
                flags: vec![
                    v1::Flag { name: "port".into(), value: Some("5050".into()) },
                    v1::Flag { name: "cluster".into(), value: Some("east".into()) },
                ],
            });
        }
        other => return (StatusCode::NOT_IMPLEMENTED, format!("{other:?}")).into_response(),
    }
    ([(header::CONTENT_TYPE, "application/json")], ContentType::Json.encode(&r)).into_response()
}

/// A master that serves the operator API on `prefix` + `/api/v1`.
fn operator_master(prefix: &'static str) -> impl Fn(&Seen) -> Response + Send + Sync {
    move |seen: &Seen| match (seen.path.strip_prefix(prefix), seen.call) {
        (Some("/api/v1"), Some(call)) if seen.method == Method::POST => operator_answer(call),
        _ => (StatusCode::NOT_FOUND, "no such endpoint").into_response(),
    }
}

fn address(type_: NodeAddressType, address: &str) -> NodeAddress {
    NodeAddress { type_, address: address.into() }
}

/// What the fixture cluster must come out as.
fn expected_instances() -> Vec<Instance> {
    vec![
        Instance {
            agent_id: "S0".into(),
            hostname: "n1.example.com".into(),
            addresses: vec![
                address(NodeAddressType::InternalIp, "10.0.0.5"),
                address(NodeAddressType::Hostname, "n1.example.com"),
            ],
            cpus: 4.0,
            mem_mb: 8192.0,
            active: true,
            has_km_executor: true,
        },
        Instance {
            agent_id: "S1".into(),
            hostname: "localhost".into(),
            addresses: vec![
                address(NodeAddressType::InternalIp, "127.0.0.1"),
                address(NodeAddressType::Hostname, "localhost"),
            ],
            cpus: 4.0,
            mem_mb: 8192.0,
            active: false,
            has_km_executor: false,
        },
    ]
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("{what}: no result in time"))
}

#[tokio::test]
async fn operator_api_answers_become_instances() {
    let master = Fake::start(operator_master("")).await;
    let provider: Arc<dyn CloudProvider> = Arc::new(cloud(&master.url(), |_| {}));

    assert_eq!(within("instances", provider.instances()).await.unwrap(), expected_instances());
    let s1 = provider.instance("LOCALHOST").await.unwrap().expect("known agent");
    assert_eq!((s1.agent_id.as_str(), s1.active), ("S1", false));
    assert_eq!(provider.instance("n9.example.com").await.unwrap(), None);
    assert_eq!(
        provider.node_addresses("n1.example.com").await.unwrap(),
        expected_instances()[0].addresses
    );
    assert!(matches!(
        provider.node_addresses("n9.example.com").await,
        Err(CloudError::InstanceNotFound(h)) if h == "n9.example.com"
    ));
    let without: Vec<_> = provider
        .instances_without_executor()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.agent_id)
        .collect();
    assert_eq!(without, ["S1"]);
    assert_eq!(provider.cluster_name().await.unwrap(), "east");

    // Every request was an operator call in JSON, as Mesos expects them.
    let seen = master.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/api/v1"));
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
        assert_eq!(s.accept.as_deref(), Some("application/json"));
    }
    let calls: std::collections::BTreeSet<_> = seen.iter().filter_map(|s| s.call).collect();
    use op::call::Type as C;
    assert_eq!(calls, [C::GetFlags, C::GetAgents, C::GetExecutors].into_iter().collect());
}

#[tokio::test]
async fn redirects_to_the_leader_are_followed_with_the_call() {
    // The leader serves under /master/api/v1, where Mesos redirects to.
    let leader = Fake::start(operator_master("/master")).await;
    let location = format!("//{}/master/api/v1", leader.addr);
    let follower = Fake::start(move |_: &Seen| {
        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location.clone())]).into_response()
    })
    .await;

    let c = cloud(&follower.url(), |_| {});
    assert_eq!(within("instances", c.instances()).await.unwrap(), expected_instances());
    // The follower saw each call once; the leader got them, bodies and all.
    assert_eq!(follower.count(), 2);
    let at_leader = leader.seen();
    assert_eq!(at_leader.len(), 2);
    for s in &at_leader {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/master/api/v1"));
        assert!(s.call.is_some(), "the call was re-posted: {s:?}");
    }
}

#[tokio::test]
async fn relative_and_absolute_redirects_of_other_kinds() {
    // 302 to a path on the same server, then 303 to an absolute URL on it.
    let master = Fake::start(|seen: &Seen| {
        let redirect = |status, to: String| (status, [(header::LOCATION, to)]).into_response();
        match seen.path.as_str() {
            "/api/v1" => redirect(StatusCode::FOUND, "/hop/api/v1".into()),
            "/hop/api/v1" => redirect(StatusCode::SEE_OTHER, "/leader/api/v1".into()),
            _ => operator_master("/leader")(seen),
        }
    })
    .await;
    let c = cloud(&master.url(), |_| {});
    assert_eq!(within("instances", c.instances()).await.unwrap(), expected_instances());
    let leader_posts = master
        .seen()
        .iter()
        .filter(|s| s.path == "/leader/api/v1" && s.method == Method::POST && s.call.is_some())
        .count();
    assert_eq!(leader_posts, 2);
}

#[tokio::test]
async fn endless_redirects_are_an_error() {
    let master = Fake::start(|_: &Seen| {
        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/api/v1")]).into_response()
    })
    .await;
    let e = within("instances", cloud(&master.url(), |_| {}).instances()).await.unwrap_err();
    assert!(matches!(e, CloudError::Redirect { .. }), "{e}");
    let e = within("redirect without location", async {
        let m = Fake::start(|_: &Seen| StatusCode::TEMPORARY_REDIRECT.into_response()).await;
        cloud(&m.url(), |_| {}).instances().await
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("Location"), "{e}");
}

/// A legacy state document in the shape of km's and Mesos's `/master/state`.
const LEGACY_STATE: &str = r#"{
  "version": "0.28.2",
  "cluster": "legacy-cluster",
  "slaves": [
    {"id": "L0", "pid": "slave(1)@10.1.0.1:5051", "hostname": "old1", "active": true,
     "resources": {"cpus": 2.0, "mem": 3000.0, "disk": 1.0, "ports": "[31000-32000]"}},
    {"id": "L1", "pid": "slave(1)@10.1.0.2:5051", "hostname": "old2", "active": false,
     "resources": {"cpus": 1, "mem": 1000}}
  ],
  "frameworks": [
    {"id": "F", "name": "Kubernetes", "executors": [
      {"executor_id": "x_k8sm-executor", "name": "Kubelet-Executor", "slave_id": "L1"}
    ]}
  ]
}"#;

fn legacy_summary(instances: &[Instance]) -> Vec<(&str, &str, f64, f64, bool, bool)> {
    instances
        .iter()
        .map(|i| {
            let ip = i
                .addresses
                .iter()
                .find(|a| a.type_ == NodeAddressType::InternalIp)
                .map_or("", |a| a.address.as_str());
            (i.hostname.as_str(), ip, i.cpus, i.mem_mb, i.active, i.has_km_executor)
        })
        .collect()
}

#[tokio::test]
async fn masters_without_the_operator_api_are_read_through_master_state() {
    let master = Fake::start(|seen: &Seen| match seen.path.as_str() {
        "/master/state" if seen.method == Method::GET => {
            ([(header::CONTENT_TYPE, "application/json")], LEGACY_STATE).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "404 Not Found").into_response(),
    })
    .await;
    let c = cloud(&master.url(), |_| {});
    let instances = within("instances", c.instances()).await.unwrap();
    assert_eq!(
        legacy_summary(&instances),
        [
            ("old1", "10.1.0.1", 2.0, 3000.0, true, false),
            ("old2", "10.1.0.2", 1.0, 1000.0, false, true)
        ]
    );
    assert_eq!(c.cluster_name().await.unwrap(), "legacy-cluster");
    let paths: Vec<_> = master.seen().iter().map(|s| s.path.clone()).collect();
    assert!(paths.contains(&"/api/v1".to_owned()) && paths.contains(&"/master/state".to_owned()));
}

#[tokio::test]
async fn the_oldest_masters_are_read_through_state_json() {
    // An operator endpoint that answers 200 with an HTML page is no
    // operator API either; /master/state does not exist; /state.json does.
    let master = Fake::start(|seen: &Seen| match seen.path.as_str() {
        "/api/v1" => ([(header::CONTENT_TYPE, "text/html")], "<html>hello</html>").into_response(),
        "/state.json" => LEGACY_STATE.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    })
    .await;
    let c = cloud(&master.url(), |_| {});
    let instances = within("instances", c.instances()).await.unwrap();
    assert_eq!(legacy_summary(&instances).len(), 2);
    let paths: Vec<_> = master.seen().iter().map(|s| s.path.clone()).collect();
    assert!(paths.contains(&"/master/state".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/state.json".to_owned()), "{paths:?}");
}

#[tokio::test]
async fn a_master_answering_nothing_useful_reports_both_failures() {
    let master = Fake::start(|_: &Seen| StatusCode::NOT_FOUND.into_response()).await;
    let e = within("instances", cloud(&master.url(), |_| {}).instances()).await.unwrap_err();
    assert!(matches!(e, CloudError::NoUsableApi { .. }), "{e}");
    // A server error is not mistaken for an old master.
    let broken = Fake::start(|_: &Seen| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let e = within("instances", cloud(&broken.url(), |_| {}).instances()).await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    assert!(broken.seen().iter().all(|s| s.path == "/api/v1"));
}

#[tokio::test]
async fn answers_are_cached_for_the_ttl() {
    let master = Fake::start(operator_master("")).await;
    let c = cloud(&master.url(), |c| c.state_cache_ttl = Duration::from_secs(3600));
    let first = within("instances", c.instances()).await.unwrap();
    assert_eq!(master.count(), 2, "GET_AGENTS and GET_EXECUTORS");
    // Within the TTL nothing asks the master again, whatever the question.
    assert_eq!(c.instances().await.unwrap(), first);
    assert!(c.instance("n1.example.com").await.unwrap().is_some());
    assert_eq!(c.node_addresses("localhost").await.unwrap().len(), 2);
    assert_eq!(c.instances_without_executor().await.unwrap().len(), 1);
    assert_eq!(master.count(), 2);
    // The cluster name is cached the same way.
    assert_eq!(c.cluster_name().await.unwrap(), "east");
    assert_eq!(c.cluster_name().await.unwrap(), "east");
    assert_eq!(master.count(), 3);
    // Invalidation forces a new fetch.
    c.invalidate();
    c.instances().await.unwrap();
    assert_eq!(master.count(), 5);

    // With a TTL of zero every call asks.
    let uncached = cloud(&master.url(), |_| {});
    uncached.instances().await.unwrap();
    uncached.instances().await.unwrap();
    assert_eq!(master.count(), 9);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let master = Fake::start(operator_master("")).await;
    let c = cloud(&master.url(), |c| c.state_cache_ttl = Duration::from_secs(3600));
    let all = futures::future::join_all((0..8).map(|_| c.instances())).await;
    assert!(all.iter().all(|r| r.as_ref().is_ok_and(|v| v.len() == 2)));
    assert_eq!(master.count(), 2);
}

#[tokio::test]
async fn a_master_that_never_answers_times_out() {
    // Accepts connections and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let c = cloud(&format!("http://{addr}"), |c| {
        c.http_client_timeout = Duration::from_millis(300);
    });
    let e = within("instances", c.instances()).await.unwrap_err();
    assert!(
        matches!(e, CloudError::Timeout { after, .. } if after == Duration::from_millis(300)),
        "{e}"
    );
    let e = within("cluster name", c.cluster_name()).await.unwrap_err();
    assert!(matches!(e, CloudError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn an_unreachable_master_is_an_error() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = within("instances", cloud(&format!("http://{addr}"), |_| {}).instances())
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Http { .. }), "{e}");
}

async fn next_change(watch: &mut AgentWatch) -> AgentChange {
    within("agent change", watch.next()).await.expect("the watch goes on")
}

fn event_record(event: &op::Event) -> Bytes {
    recordio::encode(&ContentType::Json.encode(event))
}

fn subscribed() -> op::Event {
    let mut e = op::Event {
        subscribed: Some(op::event::Subscribed {
            get_state: Some(op::response::GetState::default()),
            heartbeat_interval_seconds: Some(15.0),
        }),
        ..Default::default()
    };
    e.set_type(op::event::Type::Subscribed);
    e
}

#[tokio::test]
async fn watch_reports_agent_changes_and_resubscribes() {
    let subscriptions = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&subscriptions);
    let master = Fake::start(move |seen: &Seen| {
        if seen.call != Some(op::call::Type::Subscribe) {
            return operator_master("")(seen);
        }
        let n = {
            let mut n = counter.lock().unwrap();
            *n += 1;
            *n
        };
        let mut records = vec![event_record(&subscribed())];
        if n == 1 {
            let mut added = op::Event {
                agent_added: Some(op::event::AgentAdded {
                    agent: agent("S7", "n7.example.com", "slave(1)@10.0.0.7:5051", true),
                }),
                ..Default::default()
            };
            added.set_type(op::event::Type::AgentAdded);
            let mut heartbeat = op::Event::default();
            heartbeat.set_type(op::event::Type::Heartbeat);
            let mut removed = op::Event {
                agent_removed: Some(op::event::AgentRemoved {
                    agent_id: v1::AgentId { value: "S0".into() },
                }),
                ..Default::default()
            };
            removed.set_type(op::event::Type::AgentRemoved);
            records.extend([
                event_record(&added),
                event_record(&heartbeat),
                event_record(&removed),
            ]);
        }
        let chunks = futures::stream::iter(records).map(Ok::<_, std::convert::Infallible>);
        // The first stream ends (the master went away); the second stays open.
        let body = if n == 1 {
            Body::from_stream(chunks)
        } else {
            Body::from_stream(chunks.chain(futures::stream::pending()))
        };
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    })
    .await;

    let c = cloud(&master.url(), |c| c.state_cache_ttl = Duration::from_secs(3600));
    c.instances().await.unwrap();
    let before = master.count();
    let mut watch = c.watch();
    assert_eq!(next_change(&mut watch).await, AgentChange::Resynced);
    assert_eq!(
        next_change(&mut watch).await,
        AgentChange::Added { agent_id: "S7".into(), hostname: "n7.example.com".into() }
    );
    assert_eq!(next_change(&mut watch).await, AgentChange::Removed { agent_id: "S0".into() });
    // The stream ended; the watch subscribes again and says so.
    assert_eq!(next_change(&mut watch).await, AgentChange::Resynced);
    assert_eq!(*subscriptions.lock().unwrap(), 2);

    // The changes invalidated the cache despite its long TTL.
    c.instances().await.unwrap();
    let fetches = master
        .seen()
        .iter()
        .skip(before)
        .filter(|s| s.call == Some(op::call::Type::GetAgents))
        .count();
    assert_eq!(fetches, 1);
    drop(watch);
}

#[tokio::test]
async fn watch_ends_on_a_master_without_the_event_stream() {
    let master = Fake::start(|_: &Seen| StatusCode::NOT_FOUND.into_response()).await;
    let mut watch = cloud(&master.url(), |_| {}).watch();
    assert_eq!(within("end of the watch", watch.next()).await, None);
    assert_eq!(master.count(), 1, "no retries against a master that cannot stream");
}

#[tokio::test]
async fn watch_retries_a_failing_master() {
    // Two refusals (a master without a leader yet), then a stream.
    let subscribes = std::sync::atomic::AtomicUsize::new(0);
    let master = Fake::start(move |seen: &Seen| {
        let attempts = subscribes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if seen.call != Some(op::call::Type::Subscribe) || attempts < 2 {
            return (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response();
        }
        let records =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(event_record(&subscribed()))])
                .chain(futures::stream::pending());
        ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(records)).into_response()
    })
    .await;
    let mut watch = cloud(&master.url(), |_| {}).watch();
    assert_eq!(next_change(&mut watch).await, AgentChange::Resynced);
    assert_eq!(master.count(), 3);
}
