//! A tiny in-process master: the master side of `/km/v1/agent`. It accepts
//! SUBSCRIBE (answering REGISTERED), lets the test push events, records
//! every other call, and can acknowledge status updates automatically.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use km_mesos::ContentType;
use km_mesos::agent::{Call, Event, call, event};
use km_mesos::v1::{AgentId, MasterInfo, TaskStatus};
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
struct Inner {
    subscribes: Vec<Call>,
    calls: Vec<Call>,
    stream: Option<mpsc::UnboundedSender<Event>>,
    auto_ack: bool,
}

/// The fake master.
#[derive(Clone)]
pub(crate) struct FakeMaster {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    pub(crate) url: String,
}

pub(crate) const AGENT_ID: &str = "fake-master-S0";

impl FakeMaster {
    pub(crate) async fn start(auto_ack: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let master = FakeMaster {
            inner: Arc::new(Mutex::new(Inner { auto_ack, ..Inner::default() })),
            changed: Arc::new(Notify::new()),
            url,
        };
        let app = axum::Router::new()
            .route("/km/v1/agent", axum::routing::post(handle))
            .with_state(master.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        master
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub(crate) fn set_auto_ack(&self, on: bool) {
        self.lock().auto_ack = on;
    }

    /// Pushes an event to the current subscription.
    pub(crate) fn send(&self, e: Event) {
        let tx = self.lock().stream.clone().expect("agent subscribed");
        tx.send(e).expect("subscription open");
    }

    /// Closes the current subscription (as a master restart would).
    pub(crate) fn drop_stream(&self) {
        self.lock().stream = None;
    }

    pub(crate) fn subscribes(&self) -> Vec<Call> {
        self.lock().subscribes.clone()
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Status updates received so far, in order.
    pub(crate) fn updates(&self) -> Vec<TaskStatus> {
        self.calls().into_iter().filter_map(|c| c.status_update.map(|u| u.status)).collect()
    }

    /// Waits until `check` finds something in the master's records.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        check: impl Fn(&FakeMaster) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.changed.notified();
            if let Some(v) = check(self) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; calls: {:#?}", self.calls());
            }
        }
    }

    /// Waits for the n-th (0-based) update of a task.
    pub(crate) async fn update_of(&self, task: &str, n: usize) -> TaskStatus {
        self.wait_for(&format!("update #{n} of {task}"), |m| {
            m.updates().into_iter().filter(|s| s.task_id.value == task).nth(n)
        })
        .await
    }

    /// Waits for the subscription count to reach `n`.
    pub(crate) async fn subscribed(&self, n: usize) -> Call {
        self.wait_for(&format!("{n} subscriptions"), |m| {
            let s = m.subscribes();
            (s.len() >= n && m.lock().stream.is_some()).then(|| s[n - 1].clone())
        })
        .await
    }
}

pub(crate) fn ack_event(framework: &str, status: &TaskStatus) -> Event {
    let mut e = Event {
        acknowledge: Some(event::Acknowledge {
            framework_id: km_mesos::v1::FrameworkId { value: framework.into() },
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone().unwrap(),
        }),
        ..Default::default()
    };
    e.set_type(event::Type::Acknowledge);
    e
}

async fn handle(
    State(m): State<FakeMaster>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| ContentType::from_content_type(v.as_bytes()))
        .unwrap_or(ContentType::Protobuf);
    let c: Call = match ct.decode(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if c.r#type() == call::Type::Subscribe {
        let (tx, rx) = mpsc::unbounded_channel();
        let agent_id = c.agent_id.clone().map_or_else(|| AGENT_ID.to_owned(), |a| a.value);
        let mut reg = Event {
            registered: Some(event::Registered {
                agent_id: AgentId { value: agent_id },
                master_info: MasterInfo {
                    id: "fake".into(),
                    ip: 0,
                    port: 5050,
                    ..Default::default()
                },
                heartbeat_interval_seconds: Some(15.0),
            }),
            ..Default::default()
        };
        reg.set_type(event::Type::Registered);
        tx.send(reg).unwrap();
        {
            let mut inner = m.lock();
            inner.subscribes.push(c);
            inner.stream = Some(tx);
        }
        m.changed.notify_waiters();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let e = rx.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(km_mesos::recordio::encode(
                    &ContentType::Protobuf.encode(&e),
                )),
                rx,
            ))
        });
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, ContentType::Protobuf.as_str().parse().unwrap());
        return r;
    }
    let ack = {
        let mut inner = m.lock();
        inner.calls.push(c.clone());
        match (&c.status_update, inner.auto_ack, &inner.stream) {
            (Some(u), true, Some(tx)) if u.status.uuid.is_some() => {
                let _ = tx.send(ack_event(&u.framework_id.value, &u.status));
                true
            }
            _ => false,
        }
    };
    let _ = ack;
    m.changed.notify_waiters();
    StatusCode::ACCEPTED.into_response()
}
