//! Several masters, one leader: election over etcd, km's stand-in for the
//! ZooKeeper that Mesos masters use.
//!
//! With `--etcd_servers` every master campaigns in etcd's election service
//! under `<prefix>/leader` with a lease; the winner serves, the others answer
//! API calls with a 307 to the leader (503 `No leader elected` while none is
//! known), as non-leading Mesos masters do. The registry then lives in etcd
//! (`<prefix>/registry`), so a new leader recovers the agents and frameworks
//! of the old one. A leader that loses its lease stops, as a Mesos master
//! aborts when it loses leadership: the HTTP server goes down with it, and
//! frameworks and agents find the new leader through the others' redirects.
//!
//! Two masters must never act as leader at once, so leadership is fenced
//! twice. In time: a leader's authority ends at its [`Fence`], the send time of
//! its last acknowledged lease renewal plus the TTL etcd granted, less a
//! margin; past it, the master answers 503 and stops, before etcd can have
//! let the lease expire and elected another. In etcd: every registry write is
//! a transaction that succeeds only while this master's election key still
//! exists with the revision it was created at.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use futures::StreamExt as _;
use km_mesos::agent::Registry;
use prost::Message as _;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long before its lease could expire a leader gives up: a tenth of the
/// TTL, at least a second — room for timer lateness, a busy machine and the
/// small difference between this host's clock rate and etcd's.
fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_secs(1))
}

/// Until when this master may act on its leadership. Unset (no limit) for a
/// master without etcd.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    fn set(&self, until: Instant) {
        if let Ok(mut at) = self.0.lock() {
            *at = Some(until);
        }
    }

    fn until(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|at| *at)
    }

    /// Whether the leadership may have ended by `now`.
    pub(crate) fn passed(&self, now: Instant) -> bool {
        self.until().is_some_and(|until| now >= until)
    }
}

/// What winning the election gives: the client, the election key that
/// fences registry writes, and a future that resolves if leadership is lost.
pub(crate) struct Leadership {
    pub(crate) client: Client,
    key: Vec<u8>,
    revision: i64,
    pub(crate) lost: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Error> + Send>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("revision", &self.revision)
            .finish()
    }
}

/// The election key a registry write is conditional on.
#[derive(Debug, Clone)]
pub(crate) struct ElectionKey {
    key: Vec<u8>,
    revision: i64,
}

impl Leadership {
    pub(crate) fn election_key(&self) -> ElectionKey {
        ElectionKey { key: self.key.clone(), revision: self.revision }
    }
}

/// Who leads, as this master knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nobody known yet.
    Unknown,
    /// Another master leads, at `host:port`.
    Follower(String),
    /// This master leads.
    Leader,
}

/// Connects to etcd (endpoints as `http://host:port`).
pub(crate) async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))
}

/// Connects and campaigns until this master leads, retrying while etcd is
/// unreachable (nobody is known to lead meanwhile). Logs the first failure
/// and the recovery, not every attempt. Returns the client and a future
/// that resolves if leadership is lost later.
pub(crate) async fn lead(
    endpoints: &[String],
    prefix: &str,
    me: &str,
    ttl_secs: i64,
    role: &watch::Sender<Role>,
    fence: &Fence,
) -> anyhow::Result<Leadership> {
    let mut failing = false;
    loop {
        let attempt = async {
            let client = connect(endpoints).await?;
            campaign(client, prefix, me.to_owned(), ttl_secs, role.clone(), fence.clone()).await
        };
        match attempt.await {
            Ok(done) => return Ok(done),
            Err(e) => {
                if !failing {
                    tracing::warn!("{e:#}; retrying (no leader meanwhile)");
                    failing = true;
                }
                role.send_replace(Role::Unknown);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Campaigns until this master leads. Meanwhile `role` follows the current
/// leader, and `fence` follows the lease's renewals (from the grant on).
pub(crate) async fn campaign(
    mut client: Client,
    prefix: &str,
    me: String,
    ttl_secs: i64,
    role: watch::Sender<Role>,
    fence: Fence,
) -> anyhow::Result<Leadership> {
    let election = format!("{prefix}/leader");
    let asked = Instant::now();
    let granted =
        client.lease_grant(ttl_secs, None).await.context("cannot obtain an etcd lease")?;
    let lease = granted.id();
    let margin = |ttl: i64| {
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        ttl.saturating_sub(fence_margin(ttl))
    };
    fence.set(asked + margin(granted.ttl()));
    let (mut keeper, mut acks) =
        client.lease_keep_alive(lease).await.context("cannot keep the etcd lease alive")?;
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let interval = Duration::from_secs((ttl_secs as u64 / 3).max(1));
    let keeper_fence = fence.clone();
    tokio::spawn(async move {
        let fence = keeper_fence;
        let reason = loop {
            let sent = Instant::now();
            let deadline = fence.until().unwrap_or(sent);
            let renewal = async {
                keeper.keep_alive().await?;
                acks.message().await
            };
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(Some(ack))) if ack.ttl() > 0 => fence.set(sent + margin(ack.ttl())),
                Ok(Ok(Some(_))) => break anyhow!("the etcd lease expired"),
                Ok(Ok(None)) => break anyhow!("the etcd lease keep-alive stream ended"),
                Ok(Err(e)) => break anyhow!("etcd lease keep-alive failed: {e}"),
                Err(_) => {
                    break anyhow!(
                        "etcd did not acknowledge a lease renewal in time; stepping down before \
                         the lease can expire"
                    );
                }
            }
            // The next renewal leaves at least half the window for its answer.
            let window =
                fence.until().map_or(Duration::ZERO, |until| until.saturating_duration_since(sent));
            tokio::time::sleep_until(sent + interval.min(window / 2)).await;
        };
        let _ = lost_tx.send(reason);
    });
    // Follow the leader while campaigning.
    let mut observer = client.clone();
    let watched = election.clone();
    let follower_role = role.clone();
    let me_too = me.clone();
    let observing = tokio::spawn(async move {
        let Ok(mut stream) = observer.observe(watched.as_bytes()).await else { return };
        while let Some(Ok(resp)) = stream.next().await {
            let Some(value) = resp.kv().and_then(|kv| kv.value_str().ok()).map(str::to_owned)
            else {
                continue;
            };
            if value != me_too {
                tracing::info!(leader = %value, "following the leading master");
                follower_role.send_replace(Role::Follower(value));
            }
        }
    });
    let won = client
        .campaign(election.as_bytes(), me.as_bytes(), lease)
        .await
        .context("etcd election failed")?;
    observing.abort();
    let leader =
        won.leader().ok_or_else(|| anyhow!("etcd's election answer names no leader key"))?;
    let (key, revision) = (leader.key().to_vec(), leader.rev());
    role.send_replace(Role::Leader);
    tracing::info!(%me, "elected leading master");
    let lost = async move { lost_rx.await.unwrap_or_else(|_| anyhow!("the lease keeper stopped")) };
    Ok(Leadership { client, key, revision, lost: Box::pin(lost) })
}

/// Reads the registry kept in etcd.
pub(crate) async fn load_registry(
    client: &mut Client,
    prefix: &str,
) -> anyhow::Result<Option<Registry>> {
    let key = format!("{prefix}/registry");
    let resp = client
        .get(key.as_bytes(), None)
        .await
        .with_context(|| format!("cannot read {key} from etcd"))?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => Registry::decode(kv.value())
            .map(Some)
            .with_context(|| format!("the registry at {key} in etcd is corrupt")),
    }
}

/// Writes the registry to etcd, if this master still holds `election`: the
/// write is a transaction on the election key's creation revision, so a
/// master that lost the election (its key expired or was deleted) cannot
/// overwrite what the next leader keeps.
pub(crate) async fn store_registry(
    client: &mut Client,
    prefix: &str,
    election: &ElectionKey,
    registry: &Registry,
) -> anyhow::Result<()> {
    let key = format!("{prefix}/registry");
    let txn = Txn::new()
        .when([Compare::create_revision(election.key.clone(), CompareOp::Equal, election.revision)])
        .and_then([TxnOp::put(key.as_bytes(), registry.encode_to_vec(), None)]);
    let resp = client.txn(txn).await.with_context(|| format!("cannot write {key} to etcd"))?;
    if !resp.succeeded() {
        return Err(anyhow!(
            "not writing {key}: this master no longer holds the election key {}",
            String::from_utf8_lossy(&election.key)
        ));
    }
    Ok(())
}
