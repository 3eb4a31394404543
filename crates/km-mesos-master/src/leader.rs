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

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use etcd_client::Client;
use futures::StreamExt as _;
use km_mesos::agent::Registry;
use prost::Message as _;
use tokio::sync::watch;

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

/// Connects to etcd (`http://host:port` or `host:port`, comma-separated).
pub(crate) async fn connect(servers: &str) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| if s.contains("://") { s.to_owned() } else { format!("http://{s}") })
        .collect();
    if endpoints.is_empty() {
        return Err(anyhow!("--etcd_servers is empty"));
    }
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Client::connect(&endpoints, Some(options))
        .await
        .with_context(|| format!("cannot connect to etcd at {servers}"))
}

/// Connects and campaigns until this master leads, retrying while etcd is
/// unreachable (nobody is known to lead meanwhile). Logs the first failure
/// and the recovery, not every attempt. Returns the client and a future
/// that resolves if leadership is lost later.
pub(crate) async fn lead(
    servers: &str,
    prefix: &str,
    me: &str,
    ttl_secs: i64,
    role: &watch::Sender<Role>,
) -> anyhow::Result<(Client, impl std::future::Future<Output = anyhow::Error>)> {
    let mut failing = false;
    loop {
        let attempt = async {
            let client = connect(servers).await?;
            let lost =
                campaign(client.clone(), prefix, me.to_owned(), ttl_secs, role.clone()).await?;
            anyhow::Ok((client, lost))
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
/// leader. Returns a future that resolves (with the reason) if leadership is
/// lost later.
pub(crate) async fn campaign(
    mut client: Client,
    prefix: &str,
    me: String,
    ttl_secs: i64,
    role: watch::Sender<Role>,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Error>> {
    let election = format!("{prefix}/leader");
    let lease =
        client.lease_grant(ttl_secs, None).await.context("cannot obtain an etcd lease")?.id();
    let (mut keeper, mut acks) =
        client.lease_keep_alive(lease).await.context("cannot keep the etcd lease alive")?;
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let interval = Duration::from_secs((ttl_secs as u64 / 3).max(1));
    tokio::spawn(async move {
        let reason = loop {
            if let Err(e) = keeper.keep_alive().await {
                break anyhow!("etcd lease keep-alive failed: {e}");
            }
            match tokio::time::timeout(interval * 2, acks.message()).await {
                Ok(Ok(Some(ack))) if ack.ttl() > 0 => {}
                Ok(Ok(Some(_))) => break anyhow!("the etcd lease expired"),
                Ok(Ok(None)) => break anyhow!("the etcd lease keep-alive stream ended"),
                Ok(Err(e)) => break anyhow!("etcd lease keep-alive failed: {e}"),
                Err(_) => break anyhow!("etcd did not renew the lease in time"),
            }
            tokio::time::sleep(interval).await;
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
    client
        .campaign(election.as_bytes(), me.as_bytes(), lease)
        .await
        .context("etcd election failed")?;
    observing.abort();
    role.send_replace(Role::Leader);
    tracing::info!(%me, "elected leading master");
    Ok(async move { lost_rx.await.unwrap_or_else(|_| anyhow!("the lease keeper stopped")) })
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

/// Writes the registry to etcd.
pub(crate) async fn store_registry(
    client: &mut Client,
    prefix: &str,
    registry: &Registry,
) -> anyhow::Result<()> {
    let key = format!("{prefix}/registry");
    client
        .put(key.as_bytes(), registry.encode_to_vec(), None)
        .await
        .with_context(|| format!("cannot write {key} to etcd"))?;
    Ok(())
}
