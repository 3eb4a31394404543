//! Watch fan-out. One etcd watch per resource prefix (a [`Hub`]) turns
//! store events into [`WatchEvent`]s once: parsed, stamped with their
//! resourceVersion and pre-serialised as a watch line. Every HTTP watcher
//! of that resource shares them through a broadcast of `Arc`s and a ring
//! buffer of recent events for watches that start a little in the past;
//! watchers further in the past get their own etcd watch (and 410 Gone if
//! etcd has compacted that revision).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::object::with_revision;
use crate::registry::Kind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{Kv, Storage, StorageError, StoreEvent, WatchStream};

/// Events kept per resource for watches that start in the recent past.
const BUFFER: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object, shared by every watcher.
#[derive(Debug)]
pub struct WatchEvent {
    pub revision: i64,
    pub kind: EventType,
    /// The object after the change (before it, for a delete), with its
    /// resourceVersion set.
    pub object: Value,
    /// The object before the change, when known.
    pub prev: Option<Value>,
    /// `{"type":…,"object":…}\n`.
    pub line: Bytes,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

impl WatchEvent {
    pub fn new(kind: EventType, object: Value, prev: Option<Value>, revision: i64) -> WatchEvent {
        let line = line(kind.as_str(), &object);
        WatchEvent { revision, kind, object, prev, line }
    }

    fn from_store(ev: &StoreEvent) -> Option<WatchEvent> {
        let parse = |b: &Bytes| serde_json::from_slice::<Value>(b).ok();
        let prev = ev.prev.as_ref().and_then(parse);
        match &ev.value {
            Some(value) => {
                let object = with_revision(parse(value)?, ev.revision);
                let kind = if ev.created { EventType::Added } else { EventType::Modified };
                Some(WatchEvent::new(kind, object, prev, ev.revision))
            }
            None => {
                let object = with_revision(prev.clone()?, ev.revision);
                Some(WatchEvent::new(EventType::Deleted, object, prev, ev.revision))
            }
        }
    }
}

type Subscription = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

/// The shared watch of one resource prefix.
pub struct Hub {
    state: Mutex<HubState>,
}

struct HubState {
    /// Every event with a revision above `covered` is in `buffer`.
    covered: i64,
    /// The newest revision this hub knows to be complete.
    last: i64,
    buffer: VecDeque<Arc<WatchEvent>>,
    /// The newest value of every key changed since the hub started: reads
    /// for read-modify-write loops come from here (a stale entry only costs
    /// a lost compare-and-swap).
    objects: HashMap<String, Kv>,
    /// `None` once the etcd watch failed: receivers see `Closed`.
    tx: Option<broadcast::Sender<Arc<WatchEvent>>>,
}

impl Hub {
    fn new(revision: i64) -> Hub {
        let (tx, _) = broadcast::channel(BUFFER);
        Hub {
            state: Mutex::new(HubState {
                covered: revision,
                last: revision,
                buffer: VecDeque::new(),
                objects: HashMap::new(),
                tx: Some(tx),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        let mut state = self.lock();
        state.last = state.last.max(ev.revision);
        if state.buffer.len() == BUFFER
            && let Some(old) = state.buffer.pop_front()
        {
            state.covered = old.revision;
        }
        state.buffer.push_back(ev.clone());
        if let Some(tx) = &state.tx {
            let _ = tx.send(ev);
        }
    }

    fn remember(&self, ev: &StoreEvent) {
        let mut state = self.lock();
        match &ev.value {
            Some(value) => {
                let kv =
                    Kv { key: ev.key.clone(), value: value.clone(), mod_revision: ev.revision };
                state.objects.insert(ev.key.clone(), kv);
            }
            None => {
                state.objects.remove(&ev.key);
            }
        }
    }

    fn is_dead(&self) -> bool {
        self.lock().tx.is_none()
    }

    pub fn last(&self) -> i64 {
        self.lock().last
    }

    /// The buffered events after `from` and a receiver for later ones, or
    /// `None` if `from` is older than the buffer (or the hub has failed).
    fn subscribe(&self, from: i64) -> Option<Subscription> {
        let state = self.lock();
        let tx = state.tx.as_ref()?;
        if from < state.covered {
            return None;
        }
        let replay = state.buffer.iter().filter(|e| e.revision > from).cloned().collect();
        Some((replay, tx.subscribe()))
    }
}

/// The hubs of all resources, created on first watch.
pub struct Watches<S> {
    storage: Arc<S>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
}

impl<S: Storage> Watches<S> {
    pub fn new(storage: Arc<S>) -> Watches<S> {
        Watches { storage, hubs: Mutex::default() }
    }

    fn existing(&self, prefix: &str) -> Option<Arc<Hub>> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.get(prefix).filter(|h| !h.is_dead()).cloned()
    }

    async fn hub(&self, kind: &Kind) -> Result<Arc<Hub>, StorageError> {
        let prefix = kind.prefix(None);
        if let Some(hub) = self.existing(&prefix) {
            return Ok(hub);
        }
        let revision = self.storage.current_revision().await?;
        let mut stream = self.storage.watch(&prefix, revision + 1).await?;
        let hub = {
            let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hub) = hubs.get(&prefix).filter(|h| !h.is_dead()) {
                return Ok(hub.clone());
            }
            let hub = Arc::new(Hub::new(revision));
            hubs.insert(prefix.clone(), hub.clone());
            hub
        };
        let feed = hub.clone();
        tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                match batch {
                    Ok(events) => {
                        for ev in &events {
                            feed.remember(ev);
                            if let Some(ev) = WatchEvent::from_store(ev) {
                                feed.publish(ev);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("watch of {prefix} ended: {e}");
                        break;
                    }
                }
            }
            feed.lock().tx = None;
        });
        Ok(hub)
    }

    /// The last value of `key` seen by the watch of `kind`, if one runs.
    pub fn cached(&self, kind: &Kind, key: &str) -> Option<Kv> {
        let hub = self.existing(&kind.prefix(None))?;
        let state = hub.lock();
        state.objects.get(key).cloned()
    }

    /// The stream of watch lines for one HTTP watch.
    pub async fn watch(&self, req: WatchRequest) -> ApiResult<BoxStream<'static, Bytes>> {
        let hub = self.hub(req.kind).await.map_err(|e| ApiError::storage(req.kind, "", e))?;
        let source = match hub.subscribe(req.from) {
            Some((replay, rx)) => Source::Hub { replay: replay.into(), rx, hub },
            None => {
                let stream = match self
                    .storage
                    .watch(&req.kind.prefix(req.namespace.as_deref()), req.from + 1)
                    .await
                {
                    Ok(s) => s,
                    Err(StorageError::Compacted(_)) => {
                        let current = self.storage.current_revision().await.unwrap_or(req.from);
                        return Ok(gone_stream(req.from, current));
                    }
                    Err(e) => return Err(ApiError::storage(req.kind, "", e)),
                };
                Source::Direct { stream, queue: VecDeque::new() }
            }
        };
        // `timeoutSeconds` is the client's number: one too large for a deadline means none.
        let deadline = req.timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let bookmarks = req.bookmark_interval.map(|period| {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let last = req.from;
        let mut initial: VecDeque<Bytes> = req.initial.iter().map(|o| line("ADDED", o)).collect();
        if req.initial_events_end {
            initial.push_back(line(
                "BOOKMARK",
                &json!({
                    "kind": req.kind.kind,
                    "apiVersion": req.kind.api_version,
                    "metadata": {
                        "resourceVersion": req.from.to_string(),
                        "annotations": { "k8s.io/initial-events-end": "true" },
                    },
                }),
            ));
        }
        let watcher =
            Watcher { req, source, pending: initial, deadline, bookmarks, last, done: false };
        Ok(futures::stream::unfold(watcher, |mut w| async move { w.next().await.map(|b| (b, w)) })
            .boxed())
    }
}

/// A watch that can only say its start is gone: `too old resource version: <asked> (<current>)`.
fn gone_stream(from: i64, current: i64) -> BoxStream<'static, Bytes> {
    futures::stream::iter([line("ERROR", &ApiError::gone_at(from, current).status())]).boxed()
}

/// What one HTTP watcher asked for.
pub struct WatchRequest {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Send changes with revisions above this.
    pub from: i64,
    /// Objects to send as ADDED first (resourceVersion unset or "0", or sendInitialEvents).
    pub initial: Vec<Value>,
    /// After them, a bookmark annotated `k8s.io/initial-events-end` (sendInitialEvents=true).
    pub initial_events_end: bool,
    pub bookmark_interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

impl WatchRequest {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

enum Source {
    Hub {
        replay: VecDeque<Arc<WatchEvent>>,
        rx: broadcast::Receiver<Arc<WatchEvent>>,
        hub: Arc<Hub>,
    },
    Direct {
        stream: WatchStream,
        queue: VecDeque<Arc<WatchEvent>>,
    },
}

enum Next {
    Event(Arc<WatchEvent>),
    Gone,
    End,
}

impl Source {
    async fn next(&mut self) -> Next {
        match self {
            Source::Hub { replay, rx, .. } => {
                if let Some(ev) = replay.pop_front() {
                    return Next::Event(ev);
                }
                match rx.recv().await {
                    Ok(ev) => Next::Event(ev),
                    // Fell too far behind, or the shared etcd watch failed:
                    // the client re-lists, as after any expired watch.
                    Err(
                        broadcast::error::RecvError::Lagged(_)
                        | broadcast::error::RecvError::Closed,
                    ) => Next::Gone,
                }
            }
            Source::Direct { stream, queue } => loop {
                if let Some(ev) = queue.pop_front() {
                    return Next::Event(ev);
                }
                match stream.next().await {
                    Some(Ok(batch)) => {
                        queue.extend(batch.iter().filter_map(WatchEvent::from_store).map(Arc::new))
                    }
                    Some(Err(StorageError::Compacted(_))) => return Next::Gone,
                    Some(Err(e)) => {
                        tracing::warn!("direct watch ended: {e}");
                        return Next::Gone;
                    }
                    None => return Next::End,
                }
            },
        }
    }

    /// A revision up to which this watcher has been handed every event: the
    /// hub's newest, but only once nothing is left to read (a bookmark past
    /// events still queued would make the client skip them when it resumes).
    /// 0 when unknown.
    fn known_revision(&self) -> i64 {
        match self {
            Source::Hub { hub, replay, rx } => {
                // Read first: the hub sends an event before it lets go of
                // the revision, so an empty queue now holds nothing older.
                let last = hub.last();
                if replay.is_empty() && rx.is_empty() { last } else { 0 }
            }
            Source::Direct { .. } => 0,
        }
    }
}

struct Watcher {
    req: WatchRequest,
    source: Source,
    pending: VecDeque<Bytes>,
    deadline: Option<tokio::time::Instant>,
    bookmarks: Option<tokio::time::Interval>,
    last: i64,
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let deadline = async {
                match self.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            let bookmark = async {
                match self.bookmarks.as_mut() {
                    Some(i) => i.tick().await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                next = self.source.next() => match next {
                    Next::Event(ev) => self.handle(&ev),
                    Next::Gone => {
                        let current = self.source.known_revision();
                        self.pending.push_back(line("ERROR", &ApiError::gone_at(self.last, current).status()));
                        self.done = true;
                    }
                    Next::End => self.done = true,
                },
                _ = bookmark => {
                    let revision = self.last.max(self.source.known_revision());
                    self.last = revision;
                    let object = json!({
                        "kind": self.req.kind.kind,
                        "apiVersion": self.req.kind.api_version,
                        "metadata": { "resourceVersion": revision.to_string() },
                    });
                    self.pending.push_back(line("BOOKMARK", &object));
                }
                _ = deadline => self.done = true,
            }
        }
    }

    /// Filters one event for this watcher; an object that starts or stops
    /// matching the selectors is ADDED or DELETED for it.
    fn handle(&mut self, ev: &WatchEvent) {
        if ev.revision <= self.last {
            return;
        }
        self.last = ev.revision;
        let now = self.req.matches(&ev.object);
        let out = match ev.kind {
            EventType::Added | EventType::Deleted => now.then_some(ev.kind),
            EventType::Modified => {
                let before = ev.prev.as_ref().map(|p| self.req.matches(p)).unwrap_or(now);
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        };
        match out {
            Some(kind) if kind == ev.kind => self.pending.push_back(ev.line.clone()),
            Some(kind) => self.pending.push_back(line(kind.as_str(), &ev.object)),
            None => {}
        }
    }
}
