//! [`Storage`] in memory with etcd's semantics (one global revision,
//! compare-and-swap writes, watch from a revision, compaction), for unit
//! tests only: one mutex guards everything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::storage::{Kv, ListResult, Result, Storage, StorageError, StoreEvent, WatchStream};

#[derive(Clone)]
pub struct MemoryStorage {
    inner: Arc<Mutex<State>>,
    events: broadcast::Sender<StoreEvent>,
}

#[derive(Default)]
struct State {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<String, (Bytes, i64)>,
    history: Vec<StoreEvent>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        let (events, _) = broadcast::channel(4096);
        MemoryStorage { inner: Arc::default(), events }
    }
}

impl MemoryStorage {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(
        &self,
        state: &mut State,
        key: &str,
        value: Option<Bytes>,
        prev: Option<Bytes>,
    ) -> i64 {
        state.revision += 1;
        let created = value.is_some() && prev.is_none();
        let event =
            StoreEvent { revision: state.revision, key: key.to_owned(), value, prev, created };
        state.history.push(event.clone());
        let _ = self.events.send(event);
        state.revision
    }
}

impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Kv>> {
        let state = self.lock();
        Ok(state.keys.get(key).map(|(value, rev)| Kv {
            key: key.to_owned(),
            value: value.clone(),
            mod_revision: *rev,
        }))
    }

    async fn create(&self, key: &str, value: Bytes, parent: Option<&str>) -> Result<i64> {
        let mut state = self.lock();
        if state.keys.contains_key(key) {
            return Err(StorageError::AlreadyExists(key.to_owned()));
        }
        if let Some(parent) = parent.filter(|p| !state.keys.contains_key(*p)) {
            return Err(StorageError::MissingParent(parent.to_owned()));
        }
        let rev = self.record(&mut state, key, Some(value.clone()), None);
        state.keys.insert(key.to_owned(), (value, rev));
        Ok(rev)
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64> {
        let mut state = self.lock();
        let Some((old, rev)) = state.keys.get(key).cloned() else {
            return Err(StorageError::NotFound(key.to_owned()));
        };
        if rev != expected {
            let current = Kv { key: key.to_owned(), value: old, mod_revision: rev };
            return Err(StorageError::Conflict { key: key.to_owned(), current: Some(current) });
        }
        let rev = self.record(&mut state, key, Some(value.clone()), Some(old));
        state.keys.insert(key.to_owned(), (value, rev));
        Ok(rev)
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv)> {
        let mut state = self.lock();
        let Some((old, rev)) = state.keys.get(key).cloned() else {
            return Err(StorageError::NotFound(key.to_owned()));
        };
        if expected.is_some_and(|e| e != rev) {
            let current = Kv { key: key.to_owned(), value: old, mod_revision: rev };
            return Err(StorageError::Conflict { key: key.to_owned(), current: Some(current) });
        }
        state.keys.remove(key);
        let del = self.record(&mut state, key, None, Some(old.clone()));
        Ok((del, Kv { key: key.to_owned(), value: old, mod_revision: rev }))
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<ListResult> {
        let state = self.lock();
        // Reads in the past are only needed for continue tokens, which the
        // unit tests take without intervening writes.
        if revision > 0 && revision < state.compacted {
            return Err(StorageError::Compacted(revision));
        }
        let from = start.unwrap_or(prefix).to_owned();
        let matching: Vec<Kv> = state
            .keys
            .range(from..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, rev))| Kv { key: k.clone(), value: v.clone(), mod_revision: *rev })
            .collect();
        let count = matching.len() as i64;
        let take = if limit > 0 { limit as usize } else { matching.len() };
        let more = matching.len() > take;
        Ok(ListResult {
            items: matching.into_iter().take(take).collect(),
            revision: state.revision,
            more,
            count,
        })
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.lock().revision)
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        let state = self.lock();
        if from > 0 && from <= state.compacted {
            return Err(StorageError::Compacted(from));
        }
        let prefix = prefix.to_owned();
        let backlog: Vec<StoreEvent> = state
            .history
            .iter()
            .filter(|e| e.revision >= from && e.key.starts_with(&prefix))
            .cloned()
            .collect();
        let last = backlog.last().map(|e| e.revision).unwrap_or(0);
        let rx = self.events.subscribe();
        drop(state);
        let live = futures::stream::unfold(rx, move |mut rx| {
            let prefix = prefix.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.revision > last && ev.key.starts_with(&prefix) => {
                            return Some((Ok(vec![ev]), rx));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((Err(StorageError::Backend("watcher lagged".into())), rx));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        let head = futures::stream::iter((!backlog.is_empty()).then_some(Ok(backlog)));
        Ok(head.chain(live).boxed())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut state = self.lock();
        state.compacted = revision;
        state.history.retain(|e| e.revision >= revision);
        Ok(())
    }
}
