//! In-process fakes of the Mesos endpoints the clients talk to.
//!
//! A [`Fake`] is an axum server on `127.0.0.1:0` that accepts any path and
//! method. It records every request, recognises SUBSCRIBE calls of its
//! [`Api`] and answers them — by default — with `200`, the negotiated
//! `Content-Type`, a fresh `Mesos-Stream-Id` (scheduler API only) and a
//! streaming body the test feeds through an [`EventStream`]. Everything else
//! gets the next queued [`Answer`], or `202 Accepted` with an empty body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use km_mesos::ContentType;
use km_mesos::v1::{executor, master, scheduler};
use prost_reflect::ReflectMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

/// How long any single wait in a test may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Which Mesos API the fake serves (decides what a SUBSCRIBE looks like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/api/v1/scheduler` on a master.
    Scheduler,
    /// `/api/v1/executor` on an agent.
    Executor,
    /// `/api/v1` on a master.
    Operator,
}

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Request {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    /// The body's encoding, insisting on an exact Mesos media type.
    pub(crate) fn content_type(&self) -> ContentType {
        let raw = self.headers.get("content-type").expect("request has a Content-Type");
        ContentType::from_content_type(raw.as_bytes())
            .unwrap_or_else(|| panic!("Content-Type {raw:?} is not exactly a Mesos media type"))
    }

    /// The body decoded as `M` in its declared encoding (required fields checked).
    pub(crate) fn decode<M: ReflectMessage + Default>(&self) -> M {
        self.content_type().decode(&self.body).unwrap_or_else(|e| {
            panic!("undecodable {} body: {e}", M::default().descriptor().full_name())
        })
    }

    /// The body as raw JSON (only for JSON requests).
    pub(crate) fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type(), ContentType::Json, "not a JSON request");
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// A canned answer to one request.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Answer {
    /// A status with a plain-text reason, as Mesos sends errors.
    pub(crate) fn status(status: u16, text: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    /// `307 Temporary Redirect` to `location` (Mesos sends scheme-relative ones).
    pub(crate) fn redirect(location: &str) -> Self {
        Self {
            status: StatusCode::TEMPORARY_REDIRECT,
            headers: vec![("location".into(), location.into())],
            body: Bytes::new(),
        }
    }

    /// `200 OK` with a body of the given media type.
    pub(crate) fn ok(content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    fn into_response(self) -> Response {
        let mut resp = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            resp = resp.header(k.as_str(), v.as_str());
        }
        resp.body(Body::from(self.body)).expect("valid response")
    }
}

/// What the fake does with the next SUBSCRIBE.
#[derive(Debug, Clone)]
pub(crate) enum SubscribeAnswer {
    /// `200` and an event stream the test controls.
    Stream,
    /// Anything else.
    Plain(Answer),
    /// Accept the request and never answer (a hung or stopped process).
    Hang,
}

/// The test's end of one subscription's event stream. Dropping it (or
/// [`EventStream::close`]) ends the response body: the client sees EOF.
#[derive(Debug)]
pub(crate) struct EventStream {
    /// The `Mesos-Stream-Id` sent with the response (scheduler API only).
    pub(crate) stream_id: Option<String>,
    /// The encoding of the records.
    pub(crate) content_type: ContentType,
    api: Api,
    tx: mpsc::UnboundedSender<Bytes>,
    heartbeats: Option<JoinHandle<()>>,
}

impl EventStream {
    /// Sends one event, encoded and RecordIO-framed.
    pub(crate) fn send<M: ReflectMessage>(&self, event: &M) {
        self.send_raw(&km_mesos::recordio::encode(&self.content_type.encode(event)));
    }

    /// Sends raw bytes (they become one HTTP chunk).
    pub(crate) fn send_raw(&self, bytes: &[u8]) {
        // The client may have hung up already; that is the test's business.
        let _ = self.tx.send(Bytes::copy_from_slice(bytes));
    }

    /// Starts sending HEARTBEAT events every `every`, until stopped.
    pub(crate) fn heartbeat_every(&mut self, every: Duration) {
        self.stop_heartbeats();
        let record = km_mesos::recordio::encode(&heartbeat(self.api, self.content_type));
        let tx = self.tx.clone();
        self.heartbeats = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if tx.send(record.clone()).is_err() {
                    return;
                }
            }
        }));
    }

    /// Stops automatic heartbeats.
    pub(crate) fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }

    /// Ends the stream (terminating chunk).
    pub(crate) fn close(self) {
        drop(self);
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

/// An encoded HEARTBEAT event of `api`.
pub(crate) fn heartbeat(api: Api, ct: ContentType) -> Vec<u8> {
    match api {
        Api::Scheduler => {
            let mut e = scheduler::Event::default();
            e.set_type(scheduler::event::Type::Heartbeat);
            ct.encode(&e)
        }
        Api::Executor => {
            let mut e = executor::Event::default();
            e.set_type(executor::event::Type::Heartbeat);
            ct.encode(&e)
        }
        Api::Operator => {
            let mut e = master::Event::default();
            e.set_type(master::event::Type::Heartbeat);
            ct.encode(&e)
        }
    }
}

/// One SUBSCRIBE the fake received, with the stream it opened (if it did).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) request: Request,
    pub(crate) stream: Option<EventStream>,
}

impl Subscription {
    /// The stream, which the test expects to exist.
    pub(crate) fn stream(&mut self) -> &mut EventStream {
        self.stream.as_mut().expect("this SUBSCRIBE was answered with a stream")
    }
}

#[derive(Debug)]
struct Shared {
    api: Api,
    subscribe_answers: Mutex<VecDeque<SubscribeAnswer>>,
    call_answers: Mutex<VecDeque<Answer>>,
    log: Mutex<Vec<Request>>,
    /// Every stream opened (weakly: dropping an [`EventStream`] still ends it),
    /// to see which the client still reads.
    open_streams: Mutex<Vec<mpsc::WeakUnboundedSender<Bytes>>>,
    /// See [`Fake::calls_need_live_stream`].
    calls_need_live_stream: Mutex<Option<Duration>>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    calls: mpsc::UnboundedSender<Request>,
}

/// A fake master or agent.
#[derive(Debug)]
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    subscriptions: mpsc::UnboundedReceiver<Subscription>,
    calls: mpsc::UnboundedReceiver<Request>,
    server: JoinHandle<()>,
}

impl Fake {
    /// Starts a fake serving `api` on an ephemeral port.
    pub(crate) async fn start(api: Api) -> Self {
        let (sub_tx, subscriptions) = mpsc::unbounded_channel();
        let (call_tx, calls) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            api,
            subscribe_answers: Mutex::default(),
            call_answers: Mutex::default(),
            log: Mutex::default(),
            open_streams: Mutex::default(),
            calls_need_live_stream: Mutex::default(),
            subscriptions: sub_tx,
            calls: call_tx,
        });
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, subscriptions, calls, server }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).expect("valid URL")
    }

    /// `127.0.0.1:<port>`, as `MESOS_AGENT_ENDPOINT` has it.
    pub(crate) fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queues the answer to the next SUBSCRIBE (default: a stream).
    pub(crate) fn answer_next_subscribe(&self, answer: SubscribeAnswer) {
        self.shared.subscribe_answers.lock().expect("lock").push_back(answer);
    }

    /// Queues the answer to the next other request (default: 202).
    pub(crate) fn answer_next_call(&self, answer: Answer) {
        self.shared.call_answers.lock().expect("lock").push_back(answer);
    }

    /// Behave like a Mesos master, which answers calls of a framework whose
    /// subscription connection has closed with `403 Framework is not
    /// subscribed`: after `processing` (which gives a closing
    /// connection time to be noticed), a call is refused unless some event
    /// stream is still being read by the client.
    pub(crate) fn calls_need_live_stream(&self, processing: Duration) {
        *self.shared.calls_need_live_stream.lock().expect("lock") = Some(processing);
    }

    /// The next SUBSCRIBE.
    pub(crate) async fn next_subscription(&mut self) -> Subscription {
        within("a SUBSCRIBE request", self.subscriptions.recv()).await.expect("fake is running")
    }

    /// The next request that is not a SUBSCRIBE.
    pub(crate) async fn next_call(&mut self) -> Request {
        within("a call", self.calls.recv()).await.expect("fake is running")
    }

    /// A call received so far and not yet taken, if any.
    pub(crate) fn try_next_call(&mut self) -> Option<Request> {
        self.calls.try_recv().ok()
    }

    /// Every request received so far.
    pub(crate) fn log(&self) -> Vec<Request> {
        self.shared.log.lock().expect("lock").clone()
    }

    /// How many SUBSCRIBEs were received so far.
    pub(crate) fn subscribe_count(&self) -> usize {
        self.log().iter().filter(|r| is_subscribe(self.shared.api, r)).count()
    }

    /// Stops listening: new connections are refused. (Open connections and
    /// streams live on until their [`EventStream`] is dropped.)
    pub(crate) fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn is_subscribe(api: Api, req: &Request) -> bool {
    let Some(ct) =
        req.headers.get("content-type").and_then(|v| ContentType::from_content_type(v.as_bytes()))
    else {
        return false;
    };
    match api {
        Api::Scheduler => ct
            .decode::<scheduler::Call>(&req.body)
            .is_ok_and(|c| c.r#type() == scheduler::call::Type::Subscribe),
        Api::Executor => ct
            .decode::<executor::Call>(&req.body)
            .is_ok_and(|c| c.r#type() == executor::call::Type::Subscribe),
        Api::Operator => ct
            .decode::<master::Call>(&req.body)
            .is_ok_and(|c| c.r#type() == master::call::Type::Subscribe),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request { method, path: uri.path().to_owned(), headers, body };
    shared.log.lock().expect("lock").push(request.clone());
    if !is_subscribe(shared.api, &request) {
        let answer = shared.call_answers.lock().expect("lock").pop_front();
        let _ = shared.calls.send(request);
        let processing = *shared.calls_need_live_stream.lock().expect("lock");
        if let Some(processing) = processing {
            tokio::time::sleep(processing).await;
            let live = shared
                .open_streams
                .lock()
                .expect("lock")
                .iter()
                .any(|tx| tx.upgrade().is_some_and(|tx| !tx.is_closed()));
            if !live {
                return Answer::status(403, "Framework is not subscribed").into_response();
            }
        }
        return match answer {
            Some(a) => a.into_response(),
            None => Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .expect("valid response"),
        };
    }
    let answer = shared
        .subscribe_answers
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(SubscribeAnswer::Stream);
    match answer {
        SubscribeAnswer::Plain(a) => {
            let _ = shared.subscriptions.send(Subscription { request, stream: None });
            a.into_response()
        }
        SubscribeAnswer::Hang => {
            let _ = shared.subscriptions.send(Subscription { request, stream: None });
            std::future::pending().await
        }
        SubscribeAnswer::Stream => {
            let Some(ct) =
                ContentType::negotiate(request.headers.get("accept").map(|v| v.as_bytes()))
            else {
                let _ = shared.subscriptions.send(Subscription { request, stream: None });
                return Answer::status(406, "Not acceptable").into_response();
            };
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            shared.open_streams.lock().expect("lock").push(tx.downgrade());
            let stream_id =
                (shared.api == Api::Scheduler).then(|| uuid::Uuid::new_v4().to_string());
            let body = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (Ok::<Bytes, Infallible>(chunk), rx))
            });
            let mut resp =
                Response::builder().status(StatusCode::OK).header("content-type", ct.as_str());
            if let Some(id) = &stream_id {
                resp = resp.header("mesos-stream-id", id.as_str());
            }
            let stream =
                EventStream { stream_id, content_type: ct, api: shared.api, tx, heartbeats: None };
            let _ = shared.subscriptions.send(Subscription { request, stream: Some(stream) });
            resp.body(Body::from_stream(body)).expect("valid response")
        }
    }
}
