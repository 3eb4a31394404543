//! The etcd edge: carries out one [`Step`] of the election with etcd v3
//! leases and transactions and reports what happened as [`Observation`]s.
//!
//! * Campaign: read the key; if absent, grant a lease and run the
//!   transaction "if the key was never created (create revision 0), put
//!   whoami under the lease, else read it". Only etcd decides who wins, and
//!   it can only decide for us after the previous holder's lease (and with
//!   it the key) is gone.
//! * Renew: one keep-alive on a long-lived keep-alive stream, then read the
//!   key to confirm it is still attached to our lease.
//!
//! Send times of grants and keep-alives are taken *before* the request
//! leaves, so they are never later than the moment etcd restarted the lease's
//! TTL.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::time::Instant;

use crate::config::Config;
use crate::elector::{LeaseId, Observation, Step};

/// A connection to etcd for one key.
pub struct Etcd {
    client: Client,
    key: String,
    whoami: String,
    ttl_secs: i64,
    /// The lease we hold the key with and the TTL etcd granted it.
    held: Option<(LeaseId, Duration)>,
    keeper: Option<(LeaseId, LeaseKeeper, LeaseKeepAliveStream)>,
    /// A lease granted in an exchange that has not finished.
    granting: Option<LeaseId>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("key", &self.key)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// A failed exchange: the message, and a lease granted on the way whose
/// fate is unknown.
struct Failure {
    error: String,
    orphan: Option<LeaseId>,
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Self {
        Failure { error: e.to_string(), orphan: None }
    }
}

impl Etcd {
    /// Builds a client. No connection is made yet: etcd being down is not
    /// an error here, only a malformed endpoint or TLS setting is.
    pub async fn connect(config: &Config) -> Result<Etcd, etcd_client::Error> {
        let mut options = ConnectOptions::new().with_connect_timeout(config.request_timeout());
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.clone());
        }
        let client = Client::connect(&config.endpoints, Some(options)).await?;
        let ttl_secs = i64::try_from(config.timing.ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(Etcd {
            client,
            key: config.key.clone(),
            whoami: config.whoami.clone(),
            ttl_secs,
            held: None,
            keeper: None,
            granting: None,
        })
    }

    /// Carries out `step`; never fails, failures are observations too.
    pub async fn exchange(&mut self, step: Step) -> Vec<Observation> {
        let mut observations = Vec::new();
        let result = match step {
            Step::Campaign { revoke_first } => {
                self.held = None;
                self.keeper = None;
                match revoke_first {
                    Some(lease) => match self.revoke(lease).await {
                        Ok(()) => {
                            observations.push(Observation::Revoked { lease });
                            self.campaign().await
                        }
                        Err(e) => Err(Failure::from(e)),
                    },
                    None => self.campaign().await,
                }
            }
            Step::Renew { lease } => self.renew(lease).await,
        };
        observations.push(
            result.unwrap_or_else(|f| Observation::EtcdError { error: f.error, orphan: f.orphan }),
        );
        observations
    }

    /// The driver gave up waiting for an exchange: forget the keep-alive
    /// stream (a late answer on it would be mistaken for the next one) and
    /// return a lease granted in that exchange, if any.
    pub fn abandon(&mut self) -> Option<LeaseId> {
        self.keeper = None;
        self.granting.take()
    }

    /// Revokes `lease`; a lease etcd no longer knows counts as revoked.
    pub async fn revoke(&mut self, lease: LeaseId) -> Result<(), etcd_client::Error> {
        match self.client.lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn campaign(&mut self) -> Result<Observation, Failure> {
        let current = self.client.get(self.key.as_str(), None).await?;
        if let Some(kv) = current.kvs().first() {
            return Ok(Observation::NotAcquired {
                holder: Some(String::from_utf8_lossy(kv.value()).into_owned()),
            });
        }

        let sent_at = Instant::now();
        let grant = self.client.lease_grant(self.ttl_secs, None).await?;
        if !grant.error().is_empty() || grant.ttl() <= 0 {
            return Err(Failure {
                error: format!("lease grant refused: {}", grant.error()),
                orphan: None,
            });
        }
        let lease = grant.id();
        let ttl = Duration::from_secs(grant.ttl().unsigned_abs());
        self.granting = Some(lease);

        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.whoami.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let outcome = self.client.txn(txn).await;
        self.granting = None;
        let outcome = outcome.map_err(|e| Failure { error: e.to_string(), orphan: Some(lease) })?;

        if outcome.succeeded() {
            self.held = Some((lease, ttl));
            return Ok(Observation::Acquired { lease, ttl, sent_at });
        }
        // Somebody was faster. The unused lease would expire by itself; revoke
        // it now to keep etcd tidy, and do not care if that fails.
        let _ = self.client.lease_revoke(lease).await;
        let holder = outcome.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => {
                get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            }
            _ => None,
        });
        Ok(Observation::NotAcquired { holder })
    }

    async fn renew(&mut self, lease: LeaseId) -> Result<Observation, Failure> {
        let granted_ttl = match self.held {
            Some((held, ttl)) if held == lease => ttl,
            _ => Duration::from_secs(self.ttl_secs.unsigned_abs()),
        };
        let sent_at = Instant::now();
        let ttl = match self.keep_alive(lease).await {
            Ok(Some(ttl)) => ttl.unwrap_or(granted_ttl),
            Ok(None) => {
                return Ok(
                    self.lost(lease, "etcd no longer knows our lease (it expired or was revoked)")
                );
            }
            Err(e) => {
                self.keeper = None;
                return Err(e);
            }
        };

        let current = self.client.get(self.key.as_str(), None).await?;
        match current.kvs().first() {
            Some(kv) if kv.lease() == lease => Ok(Observation::Renewed { lease, ttl, sent_at }),
            Some(kv) => {
                let holder = String::from_utf8_lossy(kv.value()).into_owned();
                Ok(self
                    .lost(lease, &format!("the key is now held by {holder:?} under another lease")))
            }
            None => Ok(self.lost(lease, "the key was deleted from etcd")),
        }
    }

    /// One keep-alive: `Ok(None)` if etcd does not know the lease, else the
    /// TTL it now runs for (`None` when the stream was just opened, which
    /// renews the lease but does not report the TTL).
    async fn keep_alive(&mut self, lease: LeaseId) -> Result<Option<Option<Duration>>, Failure> {
        if let Some((id, keeper, stream)) = &mut self.keeper
            && *id == lease
        {
            keeper.keep_alive().await?;
            return match stream.message().await? {
                Some(resp) if resp.ttl() > 0 => {
                    Ok(Some(Some(Duration::from_secs(resp.ttl().unsigned_abs()))))
                }
                Some(_) => Ok(None),
                None => Err(Failure {
                    error: "the lease keep-alive stream was closed".to_owned(),
                    orphan: None,
                }),
            };
        }
        self.keeper = None;
        match self.client.lease_keep_alive(lease).await {
            Ok((keeper, stream)) => {
                self.keeper = Some((lease, keeper, stream));
                Ok(Some(None))
            }
            Err(e) if is_lease_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn lost(&mut self, lease: LeaseId, reason: &str) -> Observation {
        self.held = None;
        self.keeper = None;
        Observation::Lost { lease, reason: reason.to_owned() }
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}
