//! The pod lifecycle as a pure state machine: it is fed what the runtime
//! observed about each container, and the current time, and answers which
//! containers to start now, when to look again, and the pod's status as
//! Kubernetes reports it (phase, conditions, container states).
//!
//! No IO and no clock: `now` is always an argument, so restartPolicy and the
//! crash-loop back-off are tested deterministically.
//!
//! Back-off follows the kubelet: the first restart is immediate, then 10 s,
//! doubling to at most 5 min; a container that ran for 10 min before exiting
//! starts again from no back-off.

use std::time::{Duration, SystemTime};

use crate::pod::RestartPolicy;

/// Back-off after the second failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Back-off never grows beyond this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting restarts without back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What the runtime saw happen to one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The container's process is running since `at`.
    Started { at: SystemTime },
    /// The container exited.
    Exited { exit_code: i32, reason: String, at: SystemTime },
    /// The container could not be created or started; `reason` is a
    /// Kubernetes reason such as `ErrImageNeverPull` or `CreateContainerError`.
    StartFailed { reason: String, message: String, at: SystemTime },
    /// Readiness as decided by the probes (containers without a readiness
    /// probe are ready as soon as they run and have passed any startup probe).
    Ready(bool),
    /// The liveness probe failed past its threshold: the worker killed the
    /// container, which is then restarted according to the restart policy.
    Unhealthy,
}

/// Something the worker must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create and start the container with this index in the pod spec.
    Start(usize),
}

/// Pod phase, as in `PodStatus.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed: nothing will run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A terminated container run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
}

/// A container's state, as in `ContainerState`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Waiting { reason: String, message: String },
    Running { started_at: SystemTime },
    Terminated(Terminated),
}

/// One entry of `containerStatuses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    pub last_state: Option<Terminated>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
}

/// The pod status computed by [`PodLifecycle::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleStatus {
    pub phase: Phase,
    pub ready: bool,
    pub containers_ready: bool,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Clone, Debug)]
enum Track {
    /// Never started, or a start is due at `at` (after a failure to start).
    Waiting {
        reason: String,
        message: String,
        retry_at: Option<SystemTime>,
    },
    /// A start was requested and its outcome is not known yet.
    Starting,
    Running {
        started_at: SystemTime,
    },
    /// Exited; restarts at `restart_at` if the policy says so.
    Exited {
        term: Terminated,
        restart_at: Option<SystemTime>,
    },
}

#[derive(Clone, Debug)]
struct Container {
    name: String,
    track: Track,
    restart_count: u32,
    /// Delay applied to the next restart.
    backoff: Duration,
    last: Option<Terminated>,
    ready: bool,
    /// Set once the container has been created at least once.
    ever_started: bool,
    /// The liveness probe asked for a restart of the running instance.
    unhealthy: bool,
}

/// The lifecycle of one pod. See the module docs.
#[derive(Clone, Debug)]
pub struct PodLifecycle {
    pod: String,
    policy: RestartPolicy,
    containers: Vec<Container>,
}

impl PodLifecycle {
    /// `pod` names the pod in messages (`namespace/name`); `containers` are
    /// the container names in spec order.
    pub fn new(pod: impl Into<String>, containers: &[String], policy: RestartPolicy) -> Self {
        let containers = containers
            .iter()
            .map(|name| Container {
                name: name.clone(),
                track: Track::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                    retry_at: None,
                },
                restart_count: 0,
                backoff: Duration::ZERO,
                last: None,
                ready: false,
                ever_started: false,
                unhealthy: false,
            })
            .collect();
        PodLifecycle { pod: pod.into(), policy, containers }
    }

    /// Records an observation about container `index`.
    pub fn observe(&mut self, index: usize, obs: Observation) {
        let policy = self.policy;
        let pod = self.pod.clone();
        let Some(c) = self.containers.get_mut(index) else { return };
        match obs {
            Observation::Started { at } => {
                if c.ever_started {
                    c.restart_count += 1;
                }
                c.ever_started = true;
                c.unhealthy = false;
                c.ready = false;
                c.track = Track::Running { started_at: at };
            }
            Observation::Exited { exit_code, reason, at } => {
                let started_at = match &c.track {
                    Track::Running { started_at } => Some(*started_at),
                    _ => None,
                };
                let term = Terminated { exit_code, reason, started_at, finished_at: at };
                c.ready = false;
                // A container killed by its liveness probe exits non-zero and
                // is then subject to the restart policy, as in Kubernetes.
                let restart = match policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => exit_code != 0,
                    RestartPolicy::Never => false,
                };
                c.unhealthy = false;
                let restart_at = restart.then(|| {
                    let ran = started_at.and_then(|s| at.duration_since(s).ok());
                    if ran.is_some_and(|r| r >= BACKOFF_RESET) {
                        c.backoff = Duration::ZERO;
                    }
                    let due = at + c.backoff;
                    c.backoff = next_backoff(c.backoff);
                    due
                });
                c.track = Track::Exited { term, restart_at };
            }
            Observation::StartFailed { reason, message, at } => {
                let retry_at = at + c.backoff;
                c.backoff = next_backoff(c.backoff);
                let message = if message.is_empty() {
                    format!("container={} pod={pod}", c.name)
                } else {
                    message
                };
                c.ready = false;
                c.track = Track::Waiting { reason, message, retry_at: Some(retry_at) };
            }
            Observation::Ready(ready) => {
                c.ready = ready && matches!(c.track, Track::Running { .. });
            }
            Observation::Unhealthy => {
                c.unhealthy = true;
                c.ready = false;
            }
        }
    }

    /// The containers to start at `now`. Each one is reported once: the
    /// caller must answer with `Started` or `StartFailed`.
    pub fn actions(&mut self, now: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        for (i, c) in self.containers.iter_mut().enumerate() {
            let due = match &mut c.track {
                Track::Waiting { retry_at: None, .. } => true,
                Track::Waiting { retry_at: Some(at), .. } => *at <= now,
                Track::Exited { term, restart_at: Some(at) } => {
                    if *at <= now {
                        c.last = Some(term.clone());
                        true
                    } else {
                        false
                    }
                }
                Track::Starting
                | Track::Running { .. }
                | Track::Exited { restart_at: None, .. } => false,
            };
            if due {
                c.track = Track::Starting;
                out.push(Action::Start(i));
            }
        }
        out
    }

    /// The earliest time after `now` at which [`Self::actions`] may have
    /// something to do.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.containers
            .iter()
            .filter_map(|c| match &c.track {
                Track::Waiting { retry_at, .. } => *retry_at,
                Track::Exited { restart_at, .. } => *restart_at,
                _ => None,
            })
            .min()
    }

    /// Whether container `index` is running.
    pub fn is_running(&self, index: usize) -> bool {
        self.containers.get(index).is_some_and(|c| matches!(c.track, Track::Running { .. }))
    }

    /// The pod's status at `now`.
    pub fn status(&self, now: SystemTime) -> LifecycleStatus {
        let containers: Vec<ContainerStatus> =
            self.containers.iter().map(|c| self.container_status(c, now)).collect();
        let phase = self.phase();
        let containers_ready =
            !containers.is_empty() && containers.iter().all(|c| c.ready) && !phase.is_terminal();
        LifecycleStatus { phase, ready: containers_ready, containers_ready, containers }
    }

    fn container_status(&self, c: &Container, now: SystemTime) -> ContainerStatus {
        let (state, last_state) = match &c.track {
            Track::Waiting { reason, message, .. } => (
                ContainerState::Waiting { reason: reason.clone(), message: message.clone() },
                c.last.clone(),
            ),
            Track::Starting => (
                ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
                c.last.clone(),
            ),
            Track::Running { started_at } => {
                (ContainerState::Running { started_at: *started_at }, c.last.clone())
            }
            Track::Exited { term, restart_at: Some(at) } if *at > now => {
                let delay = at.duration_since(term.finished_at).unwrap_or_default();
                (
                    ContainerState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {} restarting failed container={} pod={}",
                            fmt_duration(delay),
                            c.name,
                            self.pod
                        ),
                    },
                    Some(term.clone()),
                )
            }
            Track::Exited { term, .. } => {
                (ContainerState::Terminated(term.clone()), c.last.clone())
            }
        };
        ContainerStatus {
            name: c.name.clone(),
            started: matches!(state, ContainerState::Running { .. }),
            state,
            last_state,
            restart_count: c.restart_count,
            ready: c.ready,
        }
    }

    /// The phase, as kubelet's `getPhase` computes it (no init containers).
    pub fn phase(&self) -> Phase {
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.containers {
            match &c.track {
                Track::Running { .. } => running += 1,
                Track::Exited { term, .. } => {
                    stopped += 1;
                    if term.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                Track::Waiting { .. } | Track::Starting => {
                    if c.ever_started {
                        stopped += 1;
                    } else {
                        waiting += 1;
                    }
                }
            }
        }
        if waiting > 0 {
            Phase::Pending
        } else if running > 0 {
            Phase::Running
        } else if stopped > 0 {
            // All containers have stopped; are any going to restart?
            let restarting = self.containers.iter().any(|c| match &c.track {
                Track::Exited { restart_at, .. } => restart_at.is_some(),
                _ => true,
            });
            if restarting || self.policy == RestartPolicy::Always {
                Phase::Running
            } else if stopped == succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            }
        } else {
            Phase::Pending
        }
    }
}

fn next_backoff(current: Duration) -> Duration {
    if current.is_zero() { INITIAL_BACKOFF } else { (current * 2).min(MAX_BACKOFF) }
}

/// Go's `time.Duration` format for whole seconds (`10s`, `1m20s`, `5m0s`),
/// as kubelet's messages show it.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{}s", s / 60, s % 60) } else { format!("{s}s") }
}

#[cfg(test)]
mod tests;
