//! Storage: a revisioned key-value store with optimistic concurrency, the
//! shape of etcd v3. [`EtcdStorage`] is the real backend; [`MemoryStorage`]
//! has the same semantics for unit tests.
//!
//! Every write names the revision it expects (compare-and-swap), so writers
//! never wait on each other here: the store decides, and the losing writer
//! gets [`StorageError::Conflict`] with the current value to retry from.
//! A key's revision is its etcd `mod_revision`, which becomes the object's
//! `metadata.resourceVersion`.

mod etcd;
mod memory;

use std::future::Future;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use etcd::EtcdStorage;
pub use memory::MemoryStorage;

/// A stored value with the revision that last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Bytes,
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    /// Revision of the change (the put's mod_revision, or the delete's).
    pub revision: i64,
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Bytes>,
    /// The value before the change, when the store still has it.
    pub prev: Option<Bytes>,
    /// Whether the put created the key.
    pub created: bool,
}

/// One page of a range read.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Kv>,
    /// Revision the read was served at.
    pub revision: i64,
    /// Whether keys remain after the last one returned.
    pub more: bool,
    /// Number of keys in the whole range (from the start key).
    pub count: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key's revision is not the one the write expected. `current` is
    /// the value now stored (`None` if the key is gone).
    #[error("key {key} was modified concurrently")]
    Conflict { key: String, current: Option<Kv> },
    /// A create named a parent key (the namespace) that does not exist.
    #[error("parent key {0} does not exist")]
    MissingParent(String),
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Batches of events in revision order; ends with an error on compaction
/// or backend failure.
pub type WatchStream = BoxStream<'static, Result<Vec<StoreEvent>>>;

/// A revisioned key-value store. Implementations are cheap to share
/// (`&self` everywhere) and must not serialise independent keys.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Kv>>> + Send;

    /// A read that may be slightly stale (etcd: serializable, no quorum
    /// round), for read-modify-write loops whose compare-and-swap catches
    /// staleness anyway.
    fn get_for_update(&self, key: &str) -> impl Future<Output = Result<Option<Kv>>> + Send {
        self.get(key)
    }

    /// Creates `key`; fails with `AlreadyExists`, or with `MissingParent`
    /// when `parent` is given and absent. Returns the new revision.
    fn create(
        &self,
        key: &str,
        value: Bytes,
        parent: Option<&str>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Replaces `key` if its revision is still `expected`. Returns the new
    /// revision.
    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: i64,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Deletes `key` (if its revision is `expected`, when given). Returns the
    /// deletion revision and the deleted value.
    fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> impl Future<Output = Result<(i64, Kv)>> + Send;

    /// Keys under `prefix` from `start` (inclusive, default the prefix) at
    /// `revision` (0 = newest), at most `limit` (0 = all).
    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> impl Future<Output = Result<ListResult>> + Send;

    fn current_revision(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Changes under `prefix` with revision ≥ `from`.
    fn watch(&self, prefix: &str, from: i64) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Forgets history before `revision` (tests of 410 Gone).
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send;
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
