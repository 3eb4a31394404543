//! A work queue of object keys, as controllers use them: a key added while queued is queued
//! once; a key being synced that is added again is synced again afterwards (never twice at
//! once); failed keys come back after a per-key exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// `namespace/name` (or `name` for cluster-scoped objects).
pub type Key = String;

pub fn key(namespace: Option<&str>, name: &str) -> Key {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}

/// Splits a key into (namespace, name).
pub fn split(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

#[derive(Default)]
struct State {
    queued: HashSet<Key>,
    order: VecDeque<Key>,
    active: HashSet<Key>,
    /// Added while active: queue again when done.
    again: HashSet<Key>,
    failures: HashMap<Key, u32>,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    depth: Gauge,
}

impl Queue {
    pub fn new(depth: Gauge) -> Queue {
        Queue { state: Arc::default(), notify: Arc::new(Notify::new()), depth }
    }

    pub fn add(&self, key: Key) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.active.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.order.push_back(key);
            self.depth.set(i64::try_from(s.order.len()).unwrap_or(i64::MAX));
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// The next key to sync; call [`Queue::done`] when finished with it.
    pub async fn next(&self) -> Key {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut s) = self.state.lock()
                && let Some(key) = s.order.pop_front()
            {
                s.queued.remove(&key);
                s.active.insert(key.clone());
                self.depth.set(i64::try_from(s.order.len()).unwrap_or(i64::MAX));
                if !s.order.is_empty() {
                    self.notify.notify_one();
                }
                return key;
            }
            notified.await;
        }
    }

    /// Ends a sync of `key`; a failed one comes back after a back-off (5 ms doubling to 5 min).
    pub fn done(&self, key: &str, failed: bool) {
        let (again, delay) = {
            let Ok(mut s) = self.state.lock() else { return };
            s.active.remove(key);
            let again = s.again.remove(key);
            let delay = if failed {
                let n = s.failures.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                Some(
                    Duration::from_millis(5u64.saturating_mul(1 << (*n).min(16)))
                        .min(Duration::from_secs(300)),
                )
            } else {
                s.failures.remove(key);
                None
            };
            (again, delay)
        };
        match delay {
            Some(d) => self.add_after(key.to_owned(), d),
            None if again => self.add(key.to_owned()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the wait for "nothing else" ends when nothing else can happen, not after a
    // guess at how long the machine needs.
    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_never_synced_twice_at_once() {
        let q = Queue::new(Gauge::default());
        q.add("a".into());
        q.add("b".into());
        q.add("a".into());
        assert_eq!(q.next().await, "a");
        q.add("a".into()); // while a is being synced
        assert_eq!(q.next().await, "b");
        q.done("b", false);
        q.done("a", false);
        assert_eq!(q.next().await, "a", "a comes back once its sync is done");
        q.done("a", false);
        let idle = tokio::time::timeout(Duration::from_millis(50), q.next()).await;
        assert!(idle.is_err(), "nothing else is queued");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_come_back_after_a_back_off() {
        let q = Queue::new(Gauge::default());
        q.add("x".into());
        assert_eq!(q.next().await, "x");
        q.done("x", true);
        assert_eq!(q.next().await, "x");
        assert_eq!(split("ns/x"), (Some("ns"), "x"));
        assert_eq!(key(None, "node"), "node");
    }
}
