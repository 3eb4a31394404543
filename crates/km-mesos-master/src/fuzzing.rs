//! Fuzzing entry point (not a stable API): bytes become HTTP calls to the master's
//! scheduler, agent and operator endpoints, decoded, validated and applied to the
//! [`Master`] as the server and its event loop do, with time as an input.
//!
//! [`run`] reads its input as a script. The first byte chooses the master's
//! configuration (allocator seed in bits 0-2, a 30 s offer timeout with bit 3, role
//! weights with bit 4). Each step after it starts with a tag byte: `tag & 0x7f`
//! modulo 8 picks the action, and with bit 7 set the step joins the next one in one
//! batch of the loop (no allocation, registry write or delivery in between).
//!
//! | action | bytes after the tag | what it does |
//! |---|---|---|
//! | 0 scheduler call | flags, session, pick, len (u16 LE), body | POST `/api/v1/scheduler` |
//! | 1 agent call | flags, session, pick, len, body | POST `/km/v1/agent` |
//! | 2 operator call | flags, pick, len, body | POST `/api/v1` |
//! | 3 close | which | a client closes one of the open streams |
//! | 4 tick | u16 LE | time passes (low 14 bits × 1 ms, 100 ms, 1 s or 1 min by the top 2), then the loop's tick |
//! | 5 allocate | — | an allocation run |
//! | 6 restart | — | a new master recovers the last registry written |
//! | 7 state | — | the legacy `/master/state` document (the first 3 times in an input: it changes nothing and costs more than any call) |
//!
//! Flags common to the calls: bit 0 sends the body as JSON (else protobuf), bit 1
//! accepts JSON on a stream it opens (else protobuf); the other bits are the `F_*`
//! constants. The session byte picks one of the streams opened so far (counting from the
//! first), the pick byte one of the offers, updates, tasks or IDs heard on it (counting
//! from the newest); flags choose which of them replace the IDs of the decoded call, so
//! mutated bodies keep reaching the state they name (`fix_scheduler`, `fix_agent`, and
//! `F_OP_REFS` in `Harness::operator`). [`seeds`] writes realistic scripts.
//!
//! Every event the master sends is encoded as the server encodes it, then decoded as a
//! client would: one that does not decode is a bug, as is a rejection whose status is
//! not an HTTP error, and any panic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, Method, header};
use bytes::Bytes;
use km_mesos::codec::ContentType;
use km_mesos::v1::master as op;
use km_mesos::v1::scheduler::{self as sched, call, event};
use km_mesos::{agent, recordio, v1};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::core::{Config, ConnId, Master, Rejection};
use crate::server::{self, AllocStats, Sink};

mod seeds;
pub use seeds::seeds;

const SCHEDULER: u8 = 0;
const AGENT: u8 = 1;
const OPERATOR: u8 = 2;
const CLOSE: u8 = 3;
const TICK: u8 = 4;
const ALLOCATE: u8 = 5;
const RESTART: u8 = 6;
const STATE: u8 = 7;
const ACTIONS: u8 = 8;
/// On a tag: the step is batched with the next one.
pub const BATCH: u8 = 0x80;

/// Body sent as JSON (else protobuf).
pub const F_JSON: u8 = 0x01;
/// A stream opened by the call is read as JSON (else protobuf).
pub const F_ACCEPT_JSON: u8 = 0x02;
/// Scheduler calls, bits 2-3: which `Mesos-Stream-Id` header is sent.
pub const STREAM_NONE: u8 = 0x04;
/// A stream ID that no subscription was given (refused on SUBSCRIBE, as any header is).
pub const STREAM_WRONG: u8 = 0x08;
/// Scheduler calls: the session's framework ID replaces the call's (and the FrameworkInfo's
/// of SUBSCRIBE, a failover, and of UPDATE_FRAMEWORK).
pub const F_FRAMEWORK: u8 = 0x10;
/// Scheduler calls: offers, tasks, agents and UUIDs the session heard of replace the
/// call's (ACCEPT, DECLINE, ACKNOWLEDGE, KILL, RECONCILE, SHUTDOWN, MESSAGE).
pub const F_REFS: u8 = 0x20;
/// Scheduler SUBSCRIBE: the HTTP layer authenticated the principal `fuzz`.
pub const F_PRINCIPAL: u8 = 0x40;
/// Agent SUBSCRIBE: the stream goes to a simulated agent instead of an HTTP body.
pub const F_SIMULATED: u8 = 0x04;
/// Agent calls: the session's agent ID replaces the call's (on SUBSCRIBE: a re-registration).
pub const F_AGENT: u8 = 0x08;
/// Agent calls: a task the session was asked to run names the framework, task and
/// executor of STATUS_UPDATE, EXECUTOR_EXITED and MESSAGE.
pub const F_TASK: u8 = 0x10;
/// Agent STATUS_UPDATE: a fresh 16-byte UUID (a reliable update).
pub const F_UUID: u8 = 0x20;
/// Agent SUBSCRIBE: reports the frameworks, executors and tasks the session runs.
pub const F_REPORT: u8 = 0x40;
/// Operator calls: a known agent or framework ID replaces MARK_AGENT_GONE's or TEARDOWN's.
pub const F_OP_REFS: u8 = 0x04;

/// At most this many offers, updates and tasks are remembered per session.
const REMEMBERED: usize = 32;

/// Runs one input (see the module documentation). Panics on a bug.
pub fn run(data: &[u8]) {
    let mut input = Reader { data };
    let Some(header) = input.next() else { return };
    let mut h = Harness::new(header);
    while let Some(tag) = input.next() {
        match (tag & !BATCH) % ACTIONS {
            SCHEDULER => {
                let (flags, session, pick) = (input.byte(), input.byte(), input.byte());
                let body = input.body();
                h.scheduler(flags, session, pick, body);
            }
            AGENT => {
                let (flags, session, pick) = (input.byte(), input.byte(), input.byte());
                let body = input.body();
                h.agent(flags, session, pick, body);
            }
            OPERATOR => {
                let (flags, pick) = (input.byte(), input.byte());
                let body = input.body();
                h.operator(flags, pick, body);
            }
            CLOSE => {
                let which = input.byte();
                h.close(which);
            }
            TICK => {
                let d = input.u16();
                h.tick(d);
            }
            ALLOCATE => h.master.allocate(h.now),
            RESTART => h.restart(),
            _ => h.state(),
        }
        if tag & BATCH == 0 {
            h.end_of_iteration();
        }
    }
    h.end_of_iteration();
}

/// The input, read front to back; missing bytes read as zero.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A length-prefixed body (shorter when the input ends first).
    fn body(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16()).min(self.data.len());
        let (body, rest) = self.data.split_at(len);
        self.data = rest;
        body
    }
}

fn config(header: u8) -> Config {
    Config {
        info: v1::MasterInfo {
            id: "fuzz".into(),
            ip: 0,
            port: 5050,
            hostname: Some("fuzz".into()),
            ..Default::default()
        },
        heartbeat_interval: Duration::from_secs(15),
        offer_timeout: (header & 0x08 != 0).then_some(Duration::from_secs(30)),
        agent_ping_interval: Duration::from_secs(15),
        agent_unreachable_timeout: Duration::from_secs(75),
        agent_reregister_timeout: Duration::from_secs(600),
        weights: if header & 0x10 != 0 {
            BTreeMap::from([("a".to_owned(), 2.0), ("b".to_owned(), 0.5)])
        } else {
            BTreeMap::new()
        },
        max_completed_tasks: 16,
        max_completed_frameworks: 4,
        seed: u64::from(header & 0x07),
    }
}

/// One end of a stream the master writes to, as its client holds it.
#[derive(Debug)]
enum Rx {
    Http { rx: mpsc::UnboundedReceiver<Bytes>, ct: ContentType, records: recordio::Decoder },
    Simulated(mpsc::UnboundedReceiver<(usize, agent::Event)>),
}

#[derive(Debug)]
struct Stream {
    conn: ConnId,
    /// `None` once the stream ended (either side closed it, or the master restarted).
    rx: Option<Rx>,
}

impl Stream {
    fn open(&self) -> bool {
        self.rx.is_some()
    }

    /// Everything the master sent since the last call, decoded as a client decodes
    /// it, and whether the stream has ended.
    fn receive<E: prost_reflect::ReflectMessage + Default>(
        &mut self,
        simulated: impl Fn(agent::Event) -> Option<E>,
    ) -> (Vec<E>, bool) {
        let mut events = Vec::new();
        let Some(rx) = self.rx.as_mut() else { return (events, false) };
        let ended = loop {
            match rx {
                Rx::Http { rx, ct, records } => match rx.try_recv() {
                    Ok(chunk) => {
                        records.push(&chunk);
                        loop {
                            match records.next_record() {
                                Ok(Some(record)) => events.push(decode_event(*ct, &record)),
                                Ok(None) => break,
                                Err(e) => panic!("the master wrote a broken RecordIO stream: {e}"),
                            }
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                },
                Rx::Simulated(rx) => match rx.try_recv() {
                    Ok((_, e)) => events.extend(simulated(e)),
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                },
            }
        };
        if ended {
            self.rx = None;
        }
        (events, ended)
    }
}

fn decode_event<E: prost_reflect::ReflectMessage + Default>(ct: ContentType, record: &[u8]) -> E {
    match ct.decode_event(record) {
        Ok(e) => e,
        Err(e) => panic!("the master sent an event its own codec cannot decode ({ct}): {e}"),
    }
}

#[derive(Debug)]
struct Offered {
    id: String,
    agent_id: String,
}

#[derive(Debug)]
struct Update {
    task_id: String,
    agent_id: Option<String>,
    uuid: Option<Vec<u8>>,
}

#[derive(Debug)]
struct FrameworkSession {
    stream: Stream,
    stream_id: String,
    /// From SUBSCRIBED.
    framework_id: Option<String>,
    offers: Vec<Offered>,
    updates: Vec<Update>,
}

#[derive(Debug)]
struct Launched {
    framework: v1::FrameworkInfo,
    task: v1::TaskInfo,
    executor: Option<v1::ExecutorInfo>,
}

#[derive(Debug)]
struct AgentSession {
    stream: Stream,
    agent_id: String,
    /// RUN_TASK and RUN_TASK_GROUP, one entry per task.
    tasks: Vec<Launched>,
}

fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= REMEMBERED {
        list.remove(0);
    }
    list.push(item);
}

fn remember_id(list: &mut Vec<String>, id: &str) {
    if !list.iter().any(|known| known == id) {
        remember(list, id.to_owned());
    }
}

/// What a pick byte chooses in a list, counting from the newest entry.
fn pick<T>(list: &[T], pick: u8) -> Option<&T> {
    let i = index(list.len(), pick)?;
    list.get(list.len() - 1 - i)
}

fn content_type(json: bool) -> ContentType {
    if json { ContentType::Json } else { ContentType::Protobuf }
}

/// A refusal must be an HTTP error status (the server answers 500 for anything else).
fn check_rejection(r: &Rejection) {
    assert!(
        (400..=599).contains(&r.status),
        "a call was refused with status {}: {}",
        r.status,
        r.message
    );
}

/// The master, its streams as the event loop holds them, and the clients' side.
struct Harness {
    config: Config,
    now: Instant,
    wall: SystemTime,
    master: Master,
    sinks: HashMap<ConnId, Sink>,
    next_conn: ConnId,
    stats: AllocStats,
    frameworks: Vec<FrameworkSession>,
    agents: Vec<AgentSession>,
    operators: Vec<Stream>,
    /// Every framework and agent ID heard of.
    framework_ids: Vec<String>,
    agent_ids: Vec<String>,
    /// The last registry written (survives a restart).
    persisted: Option<Vec<u8>>,
    next_stream_id: u64,
    next_uuid: u64,
    /// `/master/state` documents still to build in this input.
    states_left: u8,
}

impl Harness {
    fn new(header: u8) -> Harness {
        let config = config(header);
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Harness {
            master: Master::new(config.clone(), now, wall),
            config,
            now,
            wall,
            sinks: HashMap::new(),
            next_conn: 1,
            stats: AllocStats::default(),
            frameworks: Vec::new(),
            agents: Vec::new(),
            operators: Vec::new(),
            framework_ids: Vec::new(),
            agent_ids: Vec::new(),
            persisted: None,
            next_stream_id: 0,
            next_uuid: 0,
            states_left: 3,
        }
    }

    /// A new stream, registered with the loop as `run_loop`'s `handle` does.
    fn open(&mut self, json: bool, simulated: bool) -> Stream {
        let conn = self.next_conn;
        self.next_conn += 1;
        let (sink, rx) = if simulated {
            let (tx, rx) = mpsc::unbounded_channel();
            (Sink::Simulated { agent: self.agents.len(), tx }, Rx::Simulated(rx))
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            let ct = content_type(json);
            (
                Sink::Http { tx, content_type: ct },
                Rx::Http { rx, ct, records: recordio::Decoder::default() },
            )
        };
        self.sinks.insert(conn, sink);
        Stream { conn, rx: Some(rx) }
    }

    /// The body of a POST, decoded and checked by the server's own `decode_call`.
    fn decode<M: prost_reflect::ReflectMessage + Default>(
        json: bool,
        body: &[u8],
        what: &str,
    ) -> Option<M> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(json).as_str()));
        match server::decode_call::<M>(&Method::POST, &headers, body, what) {
            Ok((m, _)) => Some(m),
            Err(r) => {
                assert!(r.status().is_client_error(), "a bad body was answered {}", r.status());
                None
            }
        }
    }

    /// The stream ends, as the loop hears of it (`Input::Closed`).
    fn closed(&mut self, conn: ConnId) {
        self.sinks.remove(&conn);
        self.master.conn_closed(conn, self.now, self.wall);
    }

    // === the scheduler API (`scheduler` in server.rs, then `handle`) ===

    fn scheduler(&mut self, flags: u8, session: u8, refs: u8, body: &[u8]) {
        let Some(mut c) = Self::decode::<sched::Call>(flags & F_JSON != 0, body, "Call") else {
            return;
        };
        let session = index(self.frameworks.len(), session);
        if let Some(i) = session {
            self.fix_scheduler(&mut c, flags, i, refs);
        }
        if c.r#type() == call::Type::Unknown && c.r#type.is_some() {
            return; // 501
        }
        if server::validate_scheduler_call(&c).is_err() {
            return; // 400
        }
        let stream_mode = flags & (STREAM_NONE | STREAM_WRONG);
        if c.r#type() == call::Type::Subscribe {
            if stream_mode == STREAM_WRONG {
                return; // 400: a SUBSCRIBE must not carry 'Mesos-Stream-Id'
            }
            let Some(subscribe) = c.subscribe else { return };
            let principal = (flags & F_PRINCIPAL != 0).then_some("fuzz");
            let stream = self.open(flags & F_ACCEPT_JSON != 0, false);
            let stream_id = format!("stream-{}", self.next_stream_id);
            self.next_stream_id += 1;
            self.master.subscribe_framework(
                stream.conn,
                stream_id.clone(),
                subscribe,
                principal,
                self.now,
                self.wall,
            );
            self.frameworks.push(FrameworkSession {
                stream,
                stream_id,
                framework_id: None,
                offers: Vec::new(),
                updates: Vec::new(),
            });
            return;
        }
        let stream_id = match stream_mode {
            STREAM_NONE => None,
            STREAM_WRONG => Some("no-such-stream".to_owned()),
            _ => session.map(|i| self.frameworks[i].stream_id.clone()),
        };
        let fw = c.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
        let (now, wall) = (self.now, self.wall);
        let result = self
            .master
            .authorize_call(&fw, stream_id.as_deref())
            .and_then(|()| self.master.scheduler_call(c, now, wall));
        if let Err(r) = result {
            check_rejection(&r);
        }
    }

    fn fix_scheduler(&self, c: &mut sched::Call, flags: u8, session: usize, refs: u8) {
        let s = &self.frameworks[session];
        if flags & F_FRAMEWORK != 0
            && let Some(id) = &s.framework_id
        {
            c.framework_id = Some(v1::FrameworkId { value: id.clone() });
            if let Some(subscribe) = c.subscribe.as_mut() {
                subscribe.framework_info.id = c.framework_id.clone();
            }
            if let Some(update) = c.update_framework.as_mut() {
                update.framework_info.id = c.framework_id.clone();
            }
        }
        if flags & F_REFS == 0 {
            return;
        }
        if let Some(o) = pick(&s.offers, refs) {
            let offer_ids = vec![v1::OfferId { value: o.id.clone() }];
            let agent_id = v1::AgentId { value: o.agent_id.clone() };
            if let Some(a) = c.accept.as_mut() {
                a.offer_ids = offer_ids.clone();
                for operation in &mut a.operations {
                    if let Some(l) = operation.launch.as_mut() {
                        for t in &mut l.task_infos {
                            t.agent_id = agent_id.clone();
                        }
                    }
                    if let Some(g) = operation.launch_group.as_mut() {
                        for t in &mut g.task_group.tasks {
                            t.agent_id = agent_id.clone();
                        }
                    }
                }
            }
            if let Some(d) = c.decline.as_mut() {
                d.offer_ids = offer_ids;
            }
        }
        if let Some(u) = pick(&s.updates, refs) {
            let task_id = v1::TaskId { value: u.task_id.clone() };
            let agent_id = u.agent_id.clone().map(|value| v1::AgentId { value });
            if let Some(a) = c.acknowledge.as_mut() {
                a.task_id = task_id.clone();
                if let Some(id) = &agent_id {
                    a.agent_id = id.clone();
                }
                if let Some(uuid) = &u.uuid {
                    a.uuid = uuid.clone();
                }
            }
            if let Some(k) = c.kill.as_mut() {
                k.task_id = task_id.clone();
                k.agent_id = agent_id.clone();
            }
            if let Some(r) = c.reconcile.as_mut()
                && let Some(t) = r.tasks.first_mut()
            {
                t.task_id = task_id;
                t.agent_id = agent_id;
            }
        }
        if let Some(agent_id) = pick(&self.agent_ids, refs) {
            let agent_id = v1::AgentId { value: agent_id.clone() };
            if let Some(shutdown) = c.shutdown.as_mut() {
                shutdown.agent_id = agent_id.clone();
            }
            if let Some(m) = c.message.as_mut() {
                m.agent_id = agent_id;
            }
        }
    }

    // === the agent API (`agent_api` in server.rs, then `handle`) ===

    fn agent(&mut self, flags: u8, session: u8, refs: u8, body: &[u8]) {
        let json = flags & F_JSON != 0;
        let Some(mut c) = Self::decode::<agent::Call>(json, body, "km.v1.agent.Call") else {
            return;
        };
        if let Some(i) = index(self.agents.len(), session) {
            self.fix_agent(&mut c, flags, i, refs);
        }
        if flags & F_UUID != 0
            && let Some(u) = c.status_update.as_mut()
        {
            self.next_uuid += 1;
            let mut uuid = [0u8; 16];
            uuid[..8].copy_from_slice(&self.next_uuid.to_le_bytes());
            u.status.uuid = Some(uuid.to_vec());
        }
        if c.r#type.is_none() {
            return; // 400
        }
        if c.r#type() == agent::call::Type::Subscribe {
            let Some(subscribe) = c.subscribe else { return };
            let stream = self.open(flags & F_ACCEPT_JSON != 0, flags & F_SIMULATED != 0);
            match self.master.subscribe_agent(stream.conn, subscribe, self.now, self.wall) {
                Ok(agent_id) => {
                    remember_id(&mut self.agent_ids, &agent_id);
                    // A re-registering agent still runs what it ran.
                    let tasks = self
                        .agents
                        .iter_mut()
                        .filter(|s| s.agent_id == agent_id)
                        .map(|s| std::mem::take(&mut s.tasks))
                        .next_back()
                        .unwrap_or_default();
                    self.agents.push(AgentSession { stream, agent_id, tasks });
                }
                Err(r) => {
                    // Refused: no stream was ever answered, so no close follows.
                    self.sinks.remove(&stream.conn);
                    check_rejection(&r);
                }
            }
            return;
        }
        if c.agent_id.is_none() {
            return; // 400
        }
        if let Err(r) = self.master.agent_call(c, self.now, self.wall) {
            check_rejection(&r);
        }
    }

    fn fix_agent(&self, c: &mut agent::Call, flags: u8, session: usize, refs: u8) {
        let s = &self.agents[session];
        if flags & F_AGENT != 0 {
            let id = v1::AgentId { value: s.agent_id.clone() };
            c.agent_id = Some(id.clone());
            if let Some(subscribe) = c.subscribe.as_mut() {
                subscribe.agent_info.id = Some(id);
            }
        }
        if flags & F_REPORT != 0
            && let Some(subscribe) = c.subscribe.as_mut()
        {
            for l in &s.tasks {
                if !subscribe.frameworks.iter().any(|f| f.id == l.framework.id) {
                    subscribe.frameworks.push(l.framework.clone());
                }
                if let Some(e) = &l.executor
                    && !subscribe
                        .executors
                        .iter()
                        .any(|x| x.executor_id == e.executor_id && x.framework_id == e.framework_id)
                {
                    subscribe.executors.push(e.clone());
                }
                let mut task = v1::Task {
                    name: l.task.name.clone(),
                    task_id: l.task.task_id.clone(),
                    framework_id: l.framework.id.clone().unwrap_or_default(),
                    executor_id: l.executor.as_ref().map(|e| e.executor_id.clone()),
                    agent_id: v1::AgentId { value: s.agent_id.clone() },
                    resources: l.task.resources.clone(),
                    ..Default::default()
                };
                task.set_state(v1::TaskState::TaskRunning);
                subscribe.tasks.push(task);
            }
        }
        if flags & F_TASK != 0
            && let Some(l) = pick(&s.tasks, refs)
        {
            let framework_id = l.framework.id.clone().unwrap_or_default();
            let executor_id = l.executor.as_ref().map(|e| e.executor_id.clone());
            if let Some(u) = c.status_update.as_mut() {
                u.framework_id = framework_id.clone();
                u.status.task_id = l.task.task_id.clone();
                if executor_id.is_some() {
                    u.status.executor_id = executor_id.clone();
                }
            }
            if let Some(x) = c.executor_exited.as_mut() {
                x.framework_id = framework_id.clone();
                if let Some(e) = &executor_id {
                    x.executor_id = e.clone();
                }
            }
            if let Some(m) = c.message.as_mut() {
                m.framework_id = framework_id;
                if let Some(e) = executor_id {
                    m.executor_id = e;
                }
            }
        }
    }

    // === the operator API (`operator` in server.rs, then `handle`) ===

    fn operator(&mut self, flags: u8, refs: u8, body: &[u8]) {
        let json = flags & F_JSON != 0;
        let Some(mut c) = Self::decode::<op::Call>(json, body, "v1::master::Call") else { return };
        if flags & F_OP_REFS != 0 {
            if let (Some(m), Some(id)) = (c.mark_agent_gone.as_mut(), pick(&self.agent_ids, refs)) {
                m.agent_id = v1::AgentId { value: id.clone() };
            }
            if let (Some(t), Some(id)) = (c.teardown.as_mut(), pick(&self.framework_ids, refs)) {
                t.framework_id = v1::FrameworkId { value: id.clone() };
            }
        }
        if c.r#type.is_none() {
            return; // 400
        }
        let accept_json = flags & F_ACCEPT_JSON != 0;
        if c.r#type() == op::call::Type::Subscribe {
            let stream = self.open(accept_json, false);
            self.master.subscribe_operator(stream.conn);
            self.operators.push(stream);
            return;
        }
        match server::operator_call(&mut self.master, c, self.now, self.wall) {
            Ok(Some(response)) => {
                let ct = content_type(accept_json);
                let _: op::Response = decode_event(ct, &ct.encode(&response));
            }
            Ok(None) => {}
            Err(r) => check_rejection(&r),
        }
    }

    // === the rest of the loop ===

    /// A client goes away from one of the open streams.
    fn close(&mut self, which: u8) {
        let conn = {
            let mut open: Vec<&mut Stream> = self
                .frameworks
                .iter_mut()
                .map(|s| &mut s.stream)
                .chain(self.agents.iter_mut().map(|s| &mut s.stream))
                .chain(self.operators.iter_mut())
                .filter(|s| s.open())
                .collect();
            let Some(i) = index(open.len(), which) else { return };
            open[i].rx = None;
            open[i].conn
        };
        self.closed(conn);
    }

    /// Time passes, then the loop's ticker fires.
    fn tick(&mut self, d: u16) {
        let unit = match d >> 14 {
            0 => Duration::from_millis(1),
            1 => Duration::from_millis(100),
            2 => Duration::from_secs(1),
            _ => Duration::from_secs(60),
        };
        let d = unit * u32::from(d & 0x3fff);
        self.now += d;
        self.wall += d;
        self.master.tick(self.now, self.wall);
    }

    /// The process stops and a new one starts from the last registry written
    /// (`run` in lib.rs): every stream ends with the old process.
    fn restart(&mut self) {
        let saved = self.persisted.as_deref().map(|bytes| match agent::Registry::decode(bytes) {
            Ok(registry) => registry,
            Err(e) => panic!("the registry written does not read back: {e}"),
        });
        for s in self.frameworks.iter_mut().map(|s| &mut s.stream) {
            s.rx = None;
        }
        for s in self.agents.iter_mut().map(|s| &mut s.stream) {
            s.rx = None;
        }
        for s in &mut self.operators {
            s.rx = None;
        }
        self.sinks.clear();
        self.next_conn = 1;
        self.stats = AllocStats::default();
        self.master = Master::new(self.config.clone(), self.now, self.wall);
        if let Some(saved) = saved {
            self.master.recover(saved, self.now, self.wall);
        }
    }

    /// `/master/state`.
    fn state(&mut self) {
        let Some(left) = self.states_left.checked_sub(1) else { return };
        self.states_left = left;
        let doc = self.master.legacy_state(&serde_json::json!({"cluster": "fuzz"}));
        if let Err(e) = serde_json::to_vec(&doc) {
            panic!("/master/state does not serialize: {e}");
        }
    }

    /// The end of one pass of `run_loop`: an allocation if one was asked for, the
    /// registry written, the effects delivered; then the clients read their streams,
    /// and a stream the master ended comes back as closed, as the HTTP layer reports it.
    fn end_of_iteration(&mut self) {
        loop {
            if self.master.allocation_wanted() {
                self.master.allocate(self.now);
            }
            if let Some(registry) = self.master.take_registry() {
                self.persisted = Some(registry.encode_to_vec());
            }
            server::deliver(&mut self.master, &mut self.sinks, &mut self.stats);
            let ended = self.receive();
            if ended.is_empty() {
                return;
            }
            for conn in ended {
                self.closed(conn);
            }
        }
    }

    /// Reads every open stream; returns the streams that ended.
    fn receive(&mut self) -> Vec<ConnId> {
        let mut ended = Vec::new();
        for s in &mut self.frameworks {
            let (events, done) = s.stream.receive::<sched::Event>(|_| None);
            for e in events {
                heard_by_framework(s, &mut self.framework_ids, e);
            }
            if done {
                ended.push(s.stream.conn);
            }
        }
        for s in &mut self.agents {
            let (events, done) = s.stream.receive::<agent::Event>(Some);
            for e in events {
                heard_by_agent(s, e);
            }
            if done {
                ended.push(s.stream.conn);
            }
        }
        for s in &mut self.operators {
            let (_, done) = s.receive::<op::Event>(|_| None);
            if done {
                ended.push(s.conn);
            }
        }
        ended
    }
}

/// The index a byte picks among `len` things.
fn index(len: usize, pick: u8) -> Option<usize> {
    (len > 0).then(|| usize::from(pick) % len)
}

fn heard_by_framework(s: &mut FrameworkSession, framework_ids: &mut Vec<String>, e: sched::Event) {
    match e.r#type() {
        event::Type::Subscribed => {
            if let Some(subscribed) = e.subscribed {
                remember_id(framework_ids, &subscribed.framework_id.value);
                s.framework_id = Some(subscribed.framework_id.value);
            }
        }
        event::Type::Offers => {
            for o in e.offers.into_iter().flat_map(|o| o.offers) {
                remember(&mut s.offers, Offered { id: o.id.value, agent_id: o.agent_id.value });
            }
        }
        event::Type::Rescind => {
            if let Some(r) = e.rescind {
                s.offers.retain(|o| o.id != r.offer_id.value);
            }
        }
        event::Type::Update => {
            if let Some(u) = e.update {
                let update = Update {
                    task_id: u.status.task_id.value,
                    agent_id: u.status.agent_id.map(|a| a.value),
                    uuid: u.status.uuid,
                };
                remember(&mut s.updates, update);
            }
        }
        _ => {}
    }
}

fn heard_by_agent(s: &mut AgentSession, e: agent::Event) {
    use agent::event::Type;
    match e.r#type() {
        Type::Registered => {
            if let Some(r) = e.registered {
                assert_eq!(r.agent_id.value, s.agent_id, "REGISTERED names another agent");
            }
        }
        Type::RunTask => {
            if let Some(run) = e.run_task {
                let executor = run.task.executor.clone();
                let launched = Launched { framework: run.framework_info, task: run.task, executor };
                remember(&mut s.tasks, launched);
            }
        }
        Type::RunTaskGroup => {
            if let Some(run) = e.run_task_group {
                for task in run.task_group.tasks {
                    let launched = Launched {
                        framework: run.framework_info.clone(),
                        task,
                        executor: Some(run.executor.clone()),
                    };
                    remember(&mut s.tasks, launched);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    /// The seeds, then mutations of them from a fixed seed: the entry point keeps
    /// compiling and running, and the cheap part of the fuzzing runs in every test run.
    #[test]
    fn seeds_and_their_mutations_run_without_a_panic() {
        let seeds = seeds();
        assert!(seeds.len() >= 10);
        for (name, input) in &seeds {
            assert!(input.len() > 20, "{name}");
            run(input);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for _ in 0..2000 {
            let mut input = seeds[rng.random_range(0..seeds.len())].1.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..4) {
                    0 => input[at] = rng.random(),
                    1 => input[at] ^= 1 << rng.random_range(0..8),
                    2 => input.insert(at, rng.random()),
                    _ => {
                        let other = &seeds[rng.random_range(0..seeds.len())].1;
                        let from = rng.random_range(0..other.len());
                        input.truncate(at);
                        input.extend_from_slice(&other[from..]);
                    }
                }
            }
            run(&input);
        }
        for len in 0..64 {
            let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            run(&input);
        }
    }

    /// Every crash the fuzzer found, minimized (`fuzz/regressions/master_calls`).
    #[test]
    fn the_regression_inputs_run_without_a_panic() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/master_calls");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            ran += 1;
        }
        assert!(ran > 0, "no inputs in {}", dir.display());
    }

    /// The seeds reach what they are written for: offers, launches, status updates
    /// and a restart that recovers agents and frameworks.
    #[test]
    fn the_lifecycle_seed_launches_and_retires_a_task() {
        let (_, input) = seeds().into_iter().find(|(n, _)| *n == "lifecycle_json").unwrap();
        let mut h = Harness::new(input[0]);
        let mut r = Reader { data: &input[1..] };
        let mut launched = false;
        while let Some(tag) = r.next() {
            match tag % ACTIONS {
                SCHEDULER => {
                    let (f, s, p) = (r.byte(), r.byte(), r.byte());
                    let body = r.body();
                    h.scheduler(f, s, p, body);
                }
                AGENT => {
                    let (f, s, p) = (r.byte(), r.byte(), r.byte());
                    let body = r.body();
                    h.agent(f, s, p, body);
                }
                other => panic!("unexpected action {other}"),
            }
            h.end_of_iteration();
            launched |= h.agents.iter().any(|a| !a.tasks.is_empty());
        }
        assert!(launched, "the ACCEPT launched t1");
        let fw = &h.frameworks[0];
        assert_eq!(fw.framework_id.as_deref(), Some("fuzz-0000"));
        let states: Vec<_> = fw.updates.iter().map(|u| u.task_id.as_str()).collect();
        assert!(states.len() >= 4, "{states:?}");
        assert!(h.master.get_tasks().tasks.is_empty(), "t1 was retired by its last ACK");
        assert_eq!(h.master.get_tasks().completed_tasks.len(), 1);
    }
}
