//! [`Storage`] on etcd v3: every conditional write is one transaction that
//! compares the key's revision and, when it fails, reads the current value
//! in the same round trip.

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KvClient, Txn, TxnOp,
    TxnOpResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;

use crate::storage::{
    Kv, ListResult, Result, Storage, StorageError, StoreEvent, WatchStream, prefix_end,
};

/// etcd through a few multiplexed gRPC connections per endpoint, used
/// round-robin so that concurrent requests spread over several HTTP/2
/// connections.
///
/// Requests go to one endpoint at a time. One that cannot be connected to
/// (a member is down) sends the request to the next endpoint, which becomes
/// the current one: etcd's gRPC balancing over several endpoints keeps
/// picking a dead member and failing, so km does not rely on it.
#[derive(Clone)]
pub struct EtcdStorage {
    endpoints: std::sync::Arc<Vec<Vec<(KvClient, WatchClient)>>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Largest etcd response accepted: a full list of every pod in a big
/// cluster is one range response (tonic's default is 4 MiB).
const MAX_RESPONSE: usize = 1 << 30;

/// Whether the request never reached etcd (so sending it elsewhere is safe,
/// even for a write).
fn unreachable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            // gRPC's UNAVAILABLE with the connection's error (tonic is not named here).
            format!("{:?}", s.code()) == "Unavailable" && s.message().contains("connect")
        }
        _ => false,
    }
}

impl EtcdStorage {
    pub async fn connect(endpoints: &[String], connections: usize) -> Result<EtcdStorage> {
        let mut all = Vec::new();
        for endpoint in endpoints {
            let mut clients = Vec::new();
            for _ in 0..connections.max(1) {
                let client = Client::connect([endpoint], None).await.map_err(backend)?;
                clients.push((
                    client.kv_client().max_decoding_message_size(MAX_RESPONSE),
                    client.watch_client().max_decoding_message_size(MAX_RESPONSE),
                ));
            }
            all.push(clients);
        }
        if all.is_empty() {
            return Err(StorageError::Backend("no etcd endpoint given".into()));
        }
        Ok(EtcdStorage {
            endpoints: std::sync::Arc::new(all),
            current: Default::default(),
            next: Default::default(),
        })
    }

    fn pick(&self, endpoint: usize) -> &(KvClient, WatchClient) {
        let clients = &self.endpoints[endpoint % self.endpoints.len()];
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &clients[n % clients.len()]
    }

    /// Runs `op` on the current endpoint, and on the next ones while they
    /// cannot be reached.
    async fn with<T, F, Fut>(&self, op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(KvClient, WatchClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let endpoint = (first + attempt) % n;
            let (kv, watch) = self.pick(endpoint).clone();
            match op(kv, watch).await {
                Err(e) if unreachable(&e) && attempt + 1 < n => {
                    let _ = self.current.compare_exchange(
                        endpoint,
                        (endpoint + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

fn backend(err: etcd_client::Error) -> StorageError {
    let text = err.to_string();
    if text.contains("compacted") {
        // The revision is not in the message in a stable form; 0 means "unknown".
        return StorageError::Compacted(0);
    }
    StorageError::Backend(text)
}

fn to_kv(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        mod_revision: kv.mod_revision(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// The first key-value of the first `Get` among a failed transaction's
/// responses.
fn first_get(responses: Vec<TxnOpResponse>) -> Option<Kv> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(to_kv),
        _ => None,
    })
}

impl Storage for EtcdStorage {
    async fn get(&self, key: &str) -> Result<Option<Kv>> {
        let resp =
            self.with(|mut c, _| async move { c.get(key, None).await }).await.map_err(backend)?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Kv>> {
        let options = GetOptions::new().with_serializable();
        let resp = self
            .with(|mut c, _| {
                let options = options.clone();
                async move { c.get(key, Some(options)).await }
            })
            .await
            .map_err(backend)?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn create(&self, key: &str, value: Bytes, parent: Option<&str>) -> Result<i64> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        if let Some(parent) = parent {
            compares.push(Compare::create_revision(parent, CompareOp::Greater, 0));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .with(|mut c, _| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(backend)?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        match first_get(resp.op_responses()) {
            Some(_) => Err(StorageError::AlreadyExists(key.to_owned())),
            None => Err(StorageError::MissingParent(parent.unwrap_or_default().to_owned())),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .with(|mut c, _| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(backend)?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        match first_get(resp.op_responses()) {
            Some(current) => {
                Err(StorageError::Conflict { key: key.to_owned(), current: Some(current) })
            }
            None => Err(StorageError::NotFound(key.to_owned())),
        }
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv)> {
        let compares = match expected {
            Some(rev) => vec![Compare::mod_revision(key, CompareOp::Equal, rev)],
            None => vec![Compare::create_revision(key, CompareOp::Greater, 0)],
        };
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .with(|mut c, _| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(backend)?;
        let revision = header_revision(resp.header());
        if resp.succeeded() {
            let prev = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(to_kv),
                _ => None,
            });
            return match prev {
                Some(kv) => Ok((revision, kv)),
                None => Err(StorageError::NotFound(key.to_owned())),
            };
        }
        match first_get(resp.op_responses()) {
            Some(current) => {
                Err(StorageError::Conflict { key: key.to_owned(), current: Some(current) })
            }
            None => Err(StorageError::NotFound(key.to_owned())),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<ListResult> {
        let from = start.unwrap_or(prefix);
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_revision(revision)
            .with_limit(limit);
        let resp = self
            .with(|mut c, _| {
                let options = options.clone();
                async move { c.get(from, Some(options)).await }
            })
            .await
            .map_err(|e| match backend(e) {
                StorageError::Compacted(_) => StorageError::Compacted(revision),
                other => other,
            })?;
        Ok(ListResult {
            items: resp.kvs().iter().map(to_kv).collect(),
            revision: header_revision(resp.header()),
            more: resp.more(),
            count: resp.count(),
        })
    }

    async fn current_revision(&self) -> Result<i64> {
        // A read of one absent key is the cheapest way to learn the revision.
        let resp = self
            .with(|mut c, _| async move { c.get("/registry/!revision", None).await })
            .await
            .map_err(backend)?;
        Ok(header_revision(resp.header()))
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        let options = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(from)
            .with_prev_key()
            .with_progress_notify();
        let stream = self
            .with(|_, mut w| {
                let options = options.clone();
                async move { w.watch(prefix, Some(options)).await }
            })
            .await
            .map_err(backend)?;
        let events = futures::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                let resp = match stream.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        return Some((Err(StorageError::Backend("etcd watch ended".into())), None));
                    }
                    Err(e) => return Some((Err(backend(e)), None)),
                };
                if resp.compact_revision() > 0 {
                    return Some((Err(StorageError::Compacted(resp.compact_revision())), None));
                }
                if resp.canceled() {
                    let reason = format!("etcd watch canceled: {}", resp.cancel_reason());
                    return Some((Err(StorageError::Backend(reason)), None));
                }
                if resp.events().is_empty() {
                    continue;
                }
                let batch = resp
                    .events()
                    .iter()
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        let delete = ev.event_type() == EventType::Delete;
                        Some(StoreEvent {
                            revision: kv.mod_revision(),
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: (!delete).then(|| Bytes::copy_from_slice(kv.value())),
                            prev: ev.prev_kv().map(|p| Bytes::copy_from_slice(p.value())),
                            created: !delete && kv.create_revision() == kv.mod_revision(),
                        })
                    })
                    .collect();
                return Some((Ok(batch), Some(stream)));
            }
        });
        Ok(events.boxed())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.with(|mut c, _| async move { c.compact(revision, None).await })
            .await
            .map_err(backend)?;
        Ok(())
    }
}
