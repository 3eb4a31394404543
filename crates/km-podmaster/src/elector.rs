//! The decision core: who is master, when to fence, what to do with the
//! dest file. No IO and no clock: the driver reports what etcd said
//! ([`Observation`]) together with the time, and carries out the returned
//! [`Action`]s; the [`Event`]s are the state changes worth one log line.
//!
//! Rules (see the crate docs for why they exclude two masters):
//!
//! * A podmaster becomes master only through [`Observation::Acquired`],
//!   i.e. etcd's create-if-absent transaction put our value under our lease.
//! * A master's authority ends at [`Elector::fence_at`]: the send time of the
//!   last acknowledged grant or keep-alive, plus the lease TTL etcd granted,
//!   minus [`fence_margin`]. At that instant (or as soon as etcd says the
//!   lease or key is gone) it stops being master and removes its dest file.
//! * A master re-syncs dest after every exchange with etcd that leaves it
//!   master (so source edits propagate); anyone who is not master removes
//!   dest after every exchange, successful or not.

use std::time::Duration;

use tokio::time::Instant;

/// An etcd lease ID.
pub type LeaseId = i64;

/// The smallest safety margin between fencing and the earliest possible
/// expiry of our lease in etcd.
pub const MIN_FENCE_MARGIN: Duration = Duration::from_secs(1);

/// How long before its lease could expire in etcd a master gives up:
/// `max(ttl / 10, 1 s)`.
///
/// The margin has to absorb what lies between "the deadline passed" and "the
/// dest file is gone": timer lateness and scheduling delays on a busy node,
/// the unlink itself, and the difference in clock rate between this process
/// and the etcd leader (monotonic clocks do not jump; NTP slews them by at
/// most 0.05 %). One second dwarfs the first three on any healthy machine;
/// the tenth of the TTL covers long TTLs, where rate differences and stalls
/// (a paused VM) scale with the interval.
pub fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(MIN_FENCE_MARGIN)
}

/// The loop period of `--sleep` and the requested lease TTL of `--ttl-secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a standby looks at the key (`--sleep`).
    pub sleep: Duration,
    /// The lease TTL requested from etcd (`--ttl-secs`).
    pub ttl: Duration,
}

impl Timing {
    /// How often a master renews its lease: every `--sleep`, but at least three
    /// times within a fencing window (`ttl - margin`), so that one or two lost
    /// keep-alives never cost mastership.
    pub fn renew_interval(&self, granted_ttl: Duration) -> Duration {
        let window = granted_ttl.saturating_sub(fence_margin(granted_ttl));
        self.sleep.min(window / 3).max(Duration::from_millis(10))
    }
}

/// What the driver learnt from etcd in one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The create-if-absent transaction stored our value under `lease`, which
    /// etcd granted with `ttl`; the grant request was sent at `sent_at`.
    Acquired { lease: LeaseId, ttl: Duration, sent_at: Instant },
    /// The key exists and is not ours (or vanished between the attempt and
    /// the read, then `holder` is `None`).
    NotAcquired { holder: Option<String> },
    /// etcd acknowledged a keep-alive for our lease that was sent at
    /// `sent_at`, with the `ttl` it now runs for, and the key is still ours.
    Renewed { lease: LeaseId, ttl: Duration, sent_at: Instant },
    /// etcd answered, and our lease or our hold of the key is gone.
    Lost { lease: LeaseId, reason: String },
    /// A lease we asked to revoke is gone from etcd (revoked or expired).
    Revoked { lease: LeaseId },
    /// An exchange with etcd failed or timed out. `orphan` is a lease granted
    /// in this exchange whose fate is unknown; it will be revoked later.
    EtcdError { error: String, orphan: Option<LeaseId> },
}

/// What the driver should do next with etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Try to become master: revoke `revoke_first` if set (a lease of ours
    /// that may still hold the key), then read the key and, if absent, grant a
    /// lease and create the key under it.
    Campaign { revoke_first: Option<LeaseId> },
    /// Keep our lease alive and check that the key is still ours.
    Renew { lease: LeaseId },
}

/// Side effects on the dest file and in etcd, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make dest a copy of source (write only when missing or different).
    SyncDest,
    /// Remove dest if present.
    RemoveDest,
    /// Revoke the lease (best effort; on shutdown only).
    RevokeLease(LeaseId),
}

/// Why a master stopped being one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No keep-alive was acknowledged in time; `since` is the time since the
    /// send time of the last acknowledged one.
    Fenced { since: Duration },
    /// etcd said so.
    Etcd(String),
    /// The process is shutting down.
    Shutdown,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::Fenced { since } => {
                write!(
                    f,
                    "no lease renewal acknowledged for {since:?}; fencing before the lease can expire"
                )
            }
            LossReason::Etcd(reason) => f.write_str(reason),
            LossReason::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// A state change, reported once when it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We hold the key now.
    BecameMaster { lease: LeaseId, ttl: Duration },
    /// We no longer hold the key.
    LostMastership { reason: LossReason },
    /// Somebody else holds the key (reported when the holder changes).
    Following { holder: String },
    /// The first etcd failure after a success (or at start-up).
    EtcdUnreachable { error: String },
    /// The first etcd success after a failure.
    EtcdReachable,
}

/// What to do after one input: side effects first, then what to log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Standby,
    Master { lease: LeaseId, ttl: Duration, renewed_at: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Reachable,
    Unreachable,
}

/// The election state of one podmaster.
#[derive(Debug, Clone)]
pub struct Elector {
    timing: Timing,
    role: Role,
    health: Health,
    holder: Option<String>,
    /// A lease of ours that may still be alive in etcd although we are not
    /// master; revoked before the next campaign so nobody waits for it to expire.
    stale_lease: Option<LeaseId>,
}

impl Elector {
    /// A standby that has not talked to etcd yet.
    pub fn new(timing: Timing) -> Elector {
        Elector {
            timing,
            role: Role::Standby,
            health: Health::Unknown,
            holder: None,
            stale_lease: None,
        }
    }

    /// Whether we are master (as of the last input).
    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master { .. })
    }

    /// The lease we hold the key with, if master.
    pub fn lease(&self) -> Option<LeaseId> {
        match self.role {
            Role::Master { lease, .. } => Some(lease),
            Role::Standby => None,
        }
    }

    /// The instant a master must have removed its dest file by, unless a
    /// renewal is acknowledged before.
    pub fn fence_at(&self) -> Option<Instant> {
        match self.role {
            Role::Master { ttl, renewed_at, .. } => {
                Some(renewed_at + ttl.saturating_sub(fence_margin(ttl)))
            }
            Role::Standby => None,
        }
    }

    /// The next exchange with etcd.
    pub fn next_step(&self) -> Step {
        match self.role {
            Role::Master { lease, .. } => Step::Renew { lease },
            Role::Standby => Step::Campaign { revoke_first: self.stale_lease },
        }
    }

    /// When to start the next exchange, given that the last one started at
    /// `started`: one renew interval later for a master, one `--sleep` later
    /// for a standby.
    pub fn next_exchange_at(&self, started: Instant) -> Instant {
        match self.role {
            Role::Master { ttl, .. } => started + self.timing.renew_interval(ttl),
            Role::Standby => started + self.timing.sleep,
        }
    }

    /// Checks the fencing deadline. The driver calls this whenever it wakes
    /// up, and in any case at [`Elector::fence_at`].
    pub fn tick(&mut self, now: Instant) -> Decision {
        let mut d = Decision::default();
        if self.fence_if_due(now, &mut d) {
            d.actions.push(Action::RemoveDest);
        }
        d
    }

    /// Takes in the result of one exchange with etcd that ended at `now`.
    pub fn observe(&mut self, now: Instant, observation: Observation) -> Decision {
        let mut d = Decision::default();
        if let Observation::EtcdError { error, .. } = &observation {
            if self.health != Health::Unreachable {
                d.events.push(Event::EtcdUnreachable { error: error.clone() });
            }
            self.health = Health::Unreachable;
        } else {
            if self.health == Health::Unreachable {
                d.events.push(Event::EtcdReachable);
            }
            self.health = Health::Reachable;
        }

        match (self.role, observation) {
            (Role::Standby, Observation::Acquired { lease, ttl, sent_at }) => {
                self.role = Role::Master { lease, ttl, renewed_at: sent_at };
                self.holder = None;
                d.events.push(Event::BecameMaster { lease, ttl });
                // A lease acknowledged so late that it is already inside its
                // fencing margin is given up at once below.
            }
            (
                Role::Master { lease: ours, renewed_at, .. },
                Observation::Renewed { lease, ttl, sent_at },
            ) if lease == ours => {
                // Keep the latest send time: responses may be reordered.
                self.role = Role::Master { lease, ttl, renewed_at: renewed_at.max(sent_at) };
            }
            (Role::Master { lease: ours, .. }, Observation::Lost { lease, reason })
                if lease == ours =>
            {
                self.step_down(ours, LossReason::Etcd(reason), &mut d);
            }
            (Role::Standby, Observation::NotAcquired { holder: Some(holder) })
                if self.holder.as_deref() != Some(holder.as_str()) =>
            {
                d.events.push(Event::Following { holder: holder.clone() });
                self.holder = Some(holder);
            }
            (_, Observation::Revoked { lease }) if self.stale_lease == Some(lease) => {
                self.stale_lease = None;
            }
            (_, Observation::EtcdError { orphan: Some(lease), .. })
                if self.lease() != Some(lease) =>
            {
                // Granted, but whether it holds the key is unknown: revoke it
                // before campaigning again rather than wait for it to expire.
                self.stale_lease = Some(lease);
            }
            // A master keeps its belief through errors until its fencing
            // deadline; everything else is stale or needs no change.
            _ => {}
        }

        self.fence_if_due(now, &mut d);
        d.actions.push(if self.is_master() { Action::SyncDest } else { Action::RemoveDest });
        d
    }

    /// Leaves the election: remove dest first, then revoke the lease, so a
    /// standby can take over at its next look at the key.
    pub fn shutdown(&mut self) -> Decision {
        let mut d = Decision::default();
        match self.role {
            Role::Master { lease, .. } => {
                self.step_down(lease, LossReason::Shutdown, &mut d);
                self.stale_lease = None;
                d.actions.push(Action::RemoveDest);
                d.actions.push(Action::RevokeLease(lease));
            }
            Role::Standby => {
                d.actions.push(Action::RemoveDest);
                if let Some(lease) = self.stale_lease.take() {
                    d.actions.push(Action::RevokeLease(lease));
                }
            }
        }
        d
    }

    /// Steps down if the fencing deadline has passed; true if it did.
    fn fence_if_due(&mut self, now: Instant, d: &mut Decision) -> bool {
        match (self.role, self.fence_at()) {
            (Role::Master { lease, renewed_at, .. }, Some(fence_at)) if now >= fence_at => {
                self.step_down(lease, LossReason::Fenced { since: now - renewed_at }, d);
                true
            }
            _ => false,
        }
    }

    fn step_down(&mut self, lease: LeaseId, reason: LossReason, d: &mut Decision) {
        self.role = Role::Standby;
        self.stale_lease = Some(lease);
        d.events.push(Event::LostMastership { reason });
    }
}

#[cfg(test)]
mod tests;
