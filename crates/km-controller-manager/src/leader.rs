//! Leader election over a coordination.k8s.io Lease, as kube-controller-manager does it: the
//! holder renews `spec.renewTime` every retry period; a candidate takes the Lease over once it
//! has gone unrenewed for the lease duration. Every write is conditional on the Lease's
//! resourceVersion, so two candidates never both win. A leader that cannot renew within the
//! renew deadline stops (the process exits), before another candidate can take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// How the election runs.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What a candidate does with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write ourselves in as holder (a new Lease, an expired one, or our own renewal);
    /// `transitions` is the new `leaseTransitions`.
    Take { transitions: i32, acquired: Option<Timestamp> },
    /// Someone else holds it; try again later.
    Wait { holder: String },
}

/// The decision, from the Lease as read (`None`: there is none) at `now`.
pub fn step(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else { return Step::Take { transitions: 0, acquired: Some(now) } };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == me {
        return Step::Take { transitions, acquired: spec.acquire_time.as_ref().map(|t| t.0) };
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let expired = holder.is_empty()
        || renewed.is_none_or(|r| r.as_millisecond() + duration * 1000 <= now.as_millisecond());
    if expired {
        Step::Take { transitions: transitions.saturating_add(1), acquired: Some(now) }
    } else {
        Step::Wait { holder }
    }
}

/// Why leadership could not be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("lease {0}: {1}")]
    Api(String, kube::Error),
    #[error("lost the lease {lease}: not renewed within {deadline:?}")]
    Lost { lease: String, deadline: Duration },
}

impl Election {
    fn what(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// One attempt: Ok(true) when we hold the Lease afterwards.
    async fn try_once(&self, api: &Api<Lease>) -> Result<bool, ElectionError> {
        let now = Timestamp::now();
        let current =
            api.get_opt(&self.name).await.map_err(|e| ElectionError::Api(self.what(), e))?;
        let (transitions, acquired) =
            match step(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now) {
                Step::Wait { holder } => {
                    tracing::debug!(lease = %self.what(), %holder, "the lease is held by another");
                    return Ok(false);
                }
                Step::Take { transitions, acquired } => (transitions, acquired),
            };
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: acquired.map(MicroTime),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                // The read resourceVersion stays in the object: a concurrent write makes this 409.
                lease.spec = Some(spec);
                api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(ElectionError::Api(self.what(), e)),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self, api: &Api<Lease>) {
        let mut logged = false;
        loop {
            match self.try_once(api).await {
                Ok(true) => {
                    tracing::info!(lease = %self.what(), identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) if !logged => {
                    tracing::info!(lease = %self.what(), "waiting to become the leader");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("{e}"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the Lease until a renewal cannot be made within the renew deadline (returns the
    /// error then). Dropping the future stops renewing.
    pub async fn keep(&self, api: &Api<Lease>) -> ElectionError {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match tokio::time::timeout(self.renew_deadline, self.try_once(api)).await {
                Ok(Ok(true)) => last = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    return ElectionError::Lost {
                        lease: self.what(),
                        deadline: self.renew_deadline,
                    };
                }
                Ok(Err(e)) => tracing::warn!("renewing: {e}"),
                Err(_) => tracing::warn!(lease = %self.what(), "renewing timed out"),
            }
            if last.elapsed() >= self.renew_deadline {
                return ElectionError::Lost { lease: self.what(), deadline: self.renew_deadline };
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown), so a standby takes over at once.
    pub async fn release(&self, api: &Api<Lease>) {
        if let Ok(Some(mut lease)) = api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            if let Err(e) = api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(lease = %self.what(), "releasing: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn lease(holder: &str, renewed: i64, duration: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(MicroTime(at(0))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_absent_expired_or_released_and_renewed_by_its_holder() {
        assert_eq!(step(None, "me", at(0)), Step::Take { transitions: 0, acquired: Some(at(0)) });
        let held = lease("other", 10, 15, 3);
        assert_eq!(step(Some(&held), "me", at(24)), Step::Wait { holder: "other".into() });
        assert_eq!(
            step(Some(&held), "me", at(25)),
            Step::Take { transitions: 4, acquired: Some(at(25)) }
        );
        let mine = lease("me", 10, 15, 3);
        assert_eq!(
            step(Some(&mine), "me", at(11)),
            Step::Take { transitions: 3, acquired: Some(at(0)) }
        );
        let released = LeaseSpec { holder_identity: None, ..lease("x", 10, 1, 5) };
        assert_eq!(
            step(Some(&released), "me", at(10)),
            Step::Take { transitions: 6, acquired: Some(at(10)) }
        );
    }
}
