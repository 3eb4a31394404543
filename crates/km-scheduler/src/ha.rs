//! `--ha`: any number of schedulers of one framework, one of which leads.
//!
//! The leader holds the etcd key `/k8sm/<framework name>/leader`, attached to a lease of
//! `--ha-lease-ttl`; its value is `<executor ID>:<random id>`. Standbys watch the key and
//! campaign the moment it goes (the leader resigned, or its lease ran out after a crash), so a
//! takeover after `kill -9` takes at most the lease TTL plus one etcd round trip.
//!
//! Only a scheduler with the leader's executor ID may take over: a different ID means different
//! executor flags, and running executors (whose ExecutorInfo Mesos compares byte for byte) would
//! be shunned. A standby that sees a leader of another executor configuration refuses, with a
//! message saying why, instead of standing by for a takeover it must not make.
//!
//! The leader renews its lease every third of the TTL and steps down on its own when it has not
//! managed to for two thirds of it, before etcd could let anyone else in: two leaders never act
//! at once. A standby that takes over re-subscribes with the stored framework ID, so Mesos keeps
//! every task (the framework is within its failover timeout) and the old connection, if any, is
//! closed by the master.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::etcd::Members;
use crate::settings::Settings;
use crate::shell::{self, Ended, Plan};

/// How long to wait before trying etcd again after an error.
const RETRY: Duration = Duration::from_secs(1);

/// An election that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HaError {
    /// etcd could not be reached at start-up.
    #[error("etcd ({endpoints}): {source}")]
    Etcd {
        /// Endpoints.
        endpoints: String,
        /// Cause.
        #[source]
        source: etcd_client::Error,
    },
    /// SIGTERM or SIGINT while standing by.
    #[error("stopped while standing by")]
    Stopped,
    /// The leader runs another executor configuration.
    #[error(
        "the leading scheduler ({leader}) runs executor configuration {theirs}, this one {ours}: \
         every scheduler of an HA group needs the same executor ID (the same executor flags, \
         --advertised-address or --executor-path, and static pods), or the running executors \
         could not be reused; refusing to lead"
    )]
    ExecutorMismatch {
        /// The leader's election value.
        leader: String,
        /// Its executor ID.
        theirs: String,
        /// Ours.
        ours: String,
    },
}

/// The executor ID a leader value carries.
pub(crate) fn executor_of(value: &str) -> &str {
    value.rsplit_once(':').map_or(value, |(id, _)| id)
}

/// Whether a scheduler of `ours` may stand behind (and take over from) `leader`.
pub(crate) fn check(leader: &str, ours: &str) -> Result<(), HaError> {
    let theirs = executor_of(leader);
    if theirs == ours {
        Ok(())
    } else {
        Err(HaError::ExecutorMismatch {
            leader: leader.to_owned(),
            theirs: theirs.to_owned(),
            ours: ours.to_owned(),
        })
    }
}

/// The TTL a lease is asked for, in whole seconds (etcd's unit), at least 1.
fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// One scheduler's candidacy.
pub(crate) struct Election {
    members: Members,
    key: String,
    value: String,
    executor_id: String,
    ttl: Duration,
}

/// Held while this scheduler leads.
pub(crate) struct Leadership {
    members: Members,
    lease: i64,
    lost: watch::Receiver<Option<String>>,
    keeper: JoinHandle<()>,
}

impl Election {
    /// Connects to etcd. `ttl` is the leader lease.
    pub(crate) async fn connect(
        endpoints: &[String],
        framework: &str,
        executor_id: &str,
        ttl: Duration,
    ) -> Result<Election, HaError> {
        let members = Members::connect(endpoints, ttl.max(Duration::from_secs(2)))
            .await
            .map_err(|source| HaError::Etcd { endpoints: endpoints.join(","), source })?;
        Ok(Election {
            members,
            key: format!("/k8sm/{framework}/leader"),
            value: format!("{executor_id}:{:016x}", rand::random::<u64>()),
            executor_id: executor_id.to_owned(),
            ttl,
        })
    }

    /// This candidate's election value.
    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// Waits until this scheduler leads. Fails only when the leader runs another executor
    /// configuration; etcd errors are retried.
    pub(crate) async fn campaign(&mut self) -> Result<Leadership, HaError> {
        let mut announced: Option<String> = None;
        loop {
            match self.try_acquire().await {
                Ok(Ok(lease)) => return Ok(self.lead(lease)),
                Ok(Err((holder, revision))) => {
                    check(&holder, &self.executor_id)?;
                    if announced.as_deref() != Some(holder.as_str()) {
                        tracing::info!(leader = %holder, key = %self.key, "standing by");
                        announced = Some(holder.clone());
                    }
                    if let Err(e) = self.until_vacant(revision).await? {
                        tracing::warn!(key = %self.key, "watching the leader: {e}; again in {RETRY:?}");
                        tokio::time::sleep(RETRY).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, "campaigning: {e}; again in {RETRY:?}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One attempt: the lease when the key was free, else its holder and the revision read.
    async fn try_acquire(&mut self) -> Result<Result<i64, (String, i64)>, etcd_client::Error> {
        let mut client = self.members.client();
        let result = self.try_acquire_with(&mut client).await;
        if let Err(e) = &result {
            self.members.failed(e);
        }
        result
    }

    async fn try_acquire_with(
        &self,
        client: &mut etcd_client::Client,
    ) -> Result<Result<i64, (String, i64)>, etcd_client::Error> {
        let grant = client.lease_grant(ttl_secs(self.ttl), None).await?;
        let lease = grant.id();
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.value.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let outcome = match client.txn(txn).await {
            Ok(o) => o,
            Err(e) => {
                let _ = client.lease_revoke(lease).await;
                return Err(e);
            }
        };
        if outcome.succeeded() {
            return Ok(Ok(lease));
        }
        let _ = client.lease_revoke(lease).await;
        let revision = outcome.header().map_or(0, etcd_client::ResponseHeader::revision);
        let holder = outcome
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(get) => {
                    get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                }
                _ => None,
            })
            .unwrap_or_default();
        Ok(Err((holder, revision)))
    }

    /// Watches the key from after `revision` until it is deleted. Every new holder is checked.
    async fn until_vacant(
        &mut self,
        revision: i64,
    ) -> Result<Result<(), etcd_client::Error>, HaError> {
        let options = WatchOptions::new().with_start_revision(revision.saturating_add(1));
        let mut stream = match self.members.client().watch(self.key.as_str(), Some(options)).await {
            Ok(w) => w,
            Err(e) => {
                self.members.failed(&e);
                return Ok(Err(e));
            }
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(Ok(())),
                Err(e) => {
                    self.members.failed(&e);
                    return Ok(Err(e));
                }
            };
            if message.canceled() {
                return Ok(Ok(()));
            }
            for event in message.events() {
                match event.event_type() {
                    EventType::Delete => return Ok(Ok(())),
                    EventType::Put => {
                        if let Some(kv) = event.kv() {
                            let holder = String::from_utf8_lossy(kv.value()).into_owned();
                            check(&holder, &self.executor_id)?;
                            tracing::info!(leader = %holder, "a new leader; standing by");
                        }
                    }
                }
            }
        }
    }

    /// After handing over: waits until another scheduler holds the key, at most `max`.
    pub(crate) async fn until_taken(&mut self, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            let mut client = self.members.client();
            match client.get(self.key.as_str(), None).await {
                Ok(r) => {
                    if r.kvs().first().is_some_and(|kv| kv.value() != self.value.as_bytes()) {
                        return;
                    }
                    let revision = r.header().map_or(0, etcd_client::ResponseHeader::revision);
                    let options =
                        WatchOptions::new().with_start_revision(revision.saturating_add(1));
                    if let Ok(mut stream) = client.watch(self.key.as_str(), Some(options)).await {
                        let taken = async {
                            while let Ok(Some(m)) = stream.message().await {
                                if m.events().iter().any(|e| {
                                    e.event_type() == EventType::Put
                                        && e.kv()
                                            .is_some_and(|kv| kv.value() != self.value.as_bytes())
                                }) {
                                    return;
                                }
                            }
                        };
                        if tokio::time::timeout_at(deadline, taken).await.is_ok() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.members.failed(&e);
                    tokio::time::sleep(RETRY.min(max)).await;
                }
            }
        }
    }

    fn lead(&self, lease: i64) -> Leadership {
        let (tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep(
            self.members.clone(),
            lease,
            self.key.clone(),
            self.value.clone(),
            self.ttl,
            tx,
        ));
        Leadership { members: self.members.clone(), lease, lost, keeper }
    }
}

impl Leadership {
    /// Resolves with the reason once leadership is lost.
    pub(crate) async fn lost(&mut self) -> String {
        loop {
            if let Some(reason) = self.lost.borrow_and_update().clone() {
                return reason;
            }
            if self.lost.changed().await.is_err() {
                return "the lease keeper stopped".to_owned();
            }
        }
    }

    /// Gives the leadership up at once (the key goes with the lease).
    pub(crate) async fn resign(self) {
        self.keeper.abort();
        if let Err(e) =
            self.members.run(|mut c| async move { c.lease_revoke(self.lease).await }).await
        {
            tracing::warn!("resigning: revoking the leader lease: {e}; it runs out by itself");
        }
    }
}

/// Renews the lease every third of `ttl`; reports a loss when the key stops being ours or no
/// renewal has succeeded for two thirds of `ttl`.
async fn keep(
    members: Members,
    lease: i64,
    key: String,
    value: String,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    let period = ttl / 3;
    let limit = ttl * 2 / 3;
    let mut renewed = Instant::now();
    let mut keeper = None;
    let mut watch = members.client().watch(key.as_str(), None).await.ok();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        let changed = async {
            match watch.as_mut() {
                Some(stream) => stream.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                let sent = Instant::now();
                if keeper.is_none() {
                    keeper = members
                        .run(|mut c| async move { c.lease_keep_alive(lease).await })
                        .await
                        .ok();
                }
                if let Some((k, stream)) = keeper.as_mut() {
                    let answer = async {
                        k.keep_alive().await?;
                        stream.message().await
                    };
                    match tokio::time::timeout(period, answer).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => renewed = sent,
                        Ok(Ok(Some(_))) => break "the leader lease expired in etcd".to_owned(),
                        Ok(Err(e)) => {
                            members.failed(&e);
                            keeper = None;
                        }
                        Ok(Ok(None)) | Err(_) => keeper = None,
                    }
                }
                if watch.is_none() {
                    watch = members.client().watch(key.as_str(), None).await.ok();
                }
            }
            message = changed => match message {
                Ok(Some(m)) => {
                    let gone = m.events().iter().find_map(|e| match e.event_type() {
                        EventType::Delete => Some("the leader key was deleted".to_owned()),
                        EventType::Put => e
                            .kv()
                            .filter(|kv| kv.value() != value.as_bytes())
                            .map(|kv| format!("the leader key now names {}", String::from_utf8_lossy(kv.value()))),
                    });
                    if let Some(reason) = gone {
                        break reason;
                    }
                }
                Ok(None) | Err(_) => watch = None,
            },
        }
        if renewed.elapsed() >= limit {
            break format!("the leader lease was not renewed for {limit:?}");
        }
    };
    let _ = lost.send(Some(reason));
}

/// Runs `km scheduler --ha`: stands by, leads when elected, and stands by again after handing
/// over (SIGUSR1) or losing the lease, until SIGTERM or SIGINT.
pub(crate) async fn run(settings: Settings, ttl: Duration) -> anyhow::Result<()> {
    let executor_id = Plan::new(&settings)?.executor_id().to_owned();
    let mut election =
        Election::connect(&settings.etcd_servers, &settings.framework.name, &executor_id, ttl)
            .await?;
    tracing::info!(candidate = %election.value(), lease = ?ttl, "campaigning for the leadership (--ha)");
    // A hot standby: pods and nodes are listed and watched while standing by, so a term starts
    // from memory.
    let kube = crate::kubeapi::Kube::connect(&settings).await?;
    let feeds = crate::feed::Feeds::start(&kube.watch);
    let mut stop = km_process::StopSignals::install()?;
    loop {
        let standby = tokio::spawn(crate::http::serve_standby(
            settings.listen,
            settings.tuning.http_bind_interval,
        ));
        let won = tokio::select! {
            won = election.campaign() => won,
            _ = stop.recv() => Err(HaError::Stopped),
        };
        standby.abort();
        let _ = standby.await;
        let mut leadership = match won {
            Ok(l) => l,
            Err(HaError::Stopped) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(candidate = %election.value(), "elected: leading");
        let plan = match Plan::new(&settings) {
            Ok(p) if p.executor_id() == executor_id => p,
            Ok(p) => {
                leadership.resign().await;
                anyhow::bail!(
                    "the executor configuration changed while standing by (executor ID {} is now {}; the static pods?): restart this scheduler",
                    executor_id,
                    p.executor_id()
                );
            }
            Err(e) => {
                leadership.resign().await;
                return Err(e);
            }
        };
        match shell::run(settings.clone(), plan, &kube, &feeds, Some(&mut leadership)).await {
            Err(e) => {
                leadership.resign().await;
                return Err(e);
            }
            Ok(Ended::Stopped) => {
                leadership.resign().await;
                return Ok(());
            }
            Ok(Ended::HandOver) => {
                leadership.resign().await;
                election.until_taken(ttl).await;
            }
            Ok(Ended::Lost(_)) => drop(leadership),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_values_carry_the_executor_id() {
        assert_eq!(executor_of("e_0a1b:1234abcd"), "e_0a1b");
        assert_eq!(executor_of("weird:id:with:colons:u"), "weird:id:with:colons");
        assert_eq!(executor_of("noseparator"), "noseparator");
    }

    #[test]
    fn only_the_same_executor_configuration_may_take_over() {
        assert!(check("km_abc:u1", "km_abc").is_ok());
        let err = check("km_abc:u1", "km_def").expect_err("a different executor ID");
        let text = err.to_string();
        assert!(text.contains("km_abc") && text.contains("km_def"), "{text}");
        assert!(text.contains("refusing to lead"), "{text}");
    }

    #[test]
    fn lease_ttls_are_whole_seconds_of_at_least_one() {
        assert_eq!(ttl_secs(Duration::from_millis(300)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(5)), 5);
        assert_eq!(ttl_secs(Duration::MAX), i64::MAX);
    }
}
