//! Reliable status updates (as the Mesos agent's `TaskStatusUpdateManager`):
//! one ordered stream per task; only the oldest unacknowledged update is in
//! flight, re-sent after 10 s, 20 s, 40 s … (capped at 10 min) until the
//! framework acknowledges its uuid, then the next one goes at once.
//!
//! Pure and synchronous: time is an argument, and every method returns the
//! updates to send now, so the caller does the IO.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use km_mesos::v1::TaskStatus;

/// The retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry after this long (Mesos: 10 s).
    pub initial: Duration,
    /// Retries double up to this (Mesos: 10 min).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_secs(10), max: Duration::from_secs(600) }
    }
}

/// An update to forward to the master.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Whose task it is.
    pub framework_id: String,
    /// The update (with its uuid).
    pub status: TaskStatus,
}

/// What became of a new update.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// First in its stream: send it now.
    SendNow(Outgoing),
    /// Queued behind an unacknowledged one.
    Queued,
    /// Its uuid was seen before (a re-sent executor update); dropped.
    Duplicate,
}

/// Why an acknowledgement was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No pending updates for the task.
    #[error("no pending status updates for task {0}")]
    UnknownTask(String),
    /// The uuid is not the one in flight (a duplicate or stale ACK).
    #[error("acknowledgement for task {0} does not match the update in flight")]
    Mismatch(String),
}

#[derive(Debug, Clone, Default)]
struct Stream {
    pending: VecDeque<TaskStatus>,
    seen: BTreeSet<Vec<u8>>,
    next_send: Option<Instant>,
    backoff: Duration,
}

/// All streams of the agent, keyed by (framework id, task id).
#[derive(Debug, Clone, Default)]
pub struct UpdateManager {
    policy: RetryPolicy,
    streams: BTreeMap<(String, String), Stream>,
}

impl UpdateManager {
    /// An empty manager.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, streams: BTreeMap::new() }
    }

    /// Records an update (it must carry a uuid to be deduplicated).
    pub fn update(&mut self, framework_id: &str, status: TaskStatus, now: Instant) -> Accepted {
        let key = (framework_id.to_owned(), status.task_id.value.clone());
        let stream = self.streams.entry(key).or_default();
        if let Some(uuid) = &status.uuid
            && !stream.seen.insert(uuid.clone())
        {
            return Accepted::Duplicate;
        }
        stream.pending.push_back(status.clone());
        if stream.pending.len() == 1 {
            stream.backoff = self.policy.initial;
            stream.next_send = Some(now + stream.backoff);
            Accepted::SendNow(Outgoing { framework_id: framework_id.to_owned(), status })
        } else {
            Accepted::Queued
        }
    }

    /// The framework acknowledged `uuid` for a task: drop the head and
    /// return the next update to send, if any.
    pub fn acknowledge(
        &mut self,
        framework_id: &str,
        task_id: &str,
        uuid: &[u8],
        now: Instant,
    ) -> Result<Option<Outgoing>, AckError> {
        let key = (framework_id.to_owned(), task_id.to_owned());
        let stream =
            self.streams.get_mut(&key).ok_or_else(|| AckError::UnknownTask(task_id.to_owned()))?;
        if stream.pending.front().and_then(|s| s.uuid.as_deref()) != Some(uuid) {
            return Err(AckError::Mismatch(task_id.to_owned()));
        }
        let acked = stream.pending.pop_front();
        match stream.pending.front() {
            Some(next) => {
                stream.backoff = self.policy.initial;
                stream.next_send = Some(now + stream.backoff);
                Ok(Some(Outgoing { framework_id: framework_id.to_owned(), status: next.clone() }))
            }
            None => {
                stream.next_send = None;
                if acked.is_some_and(|s| crate::state::is_terminal(s.state)) {
                    self.streams.remove(&key);
                }
                Ok(None)
            }
        }
    }

    /// Heads whose retry time has come; their next retry is scheduled with
    /// a doubled backoff.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let max = self.policy.max;
        let mut out = Vec::new();
        for ((fw, _), stream) in &mut self.streams {
            if let (Some(at), Some(head)) = (stream.next_send, stream.pending.front())
                && at <= now
            {
                stream.backoff = (stream.backoff * 2).min(max);
                stream.next_send = Some(now + stream.backoff);
                out.push(Outgoing { framework_id: fw.clone(), status: head.clone() });
            }
        }
        out
    }

    /// Heads of every pending stream of `framework_id` (all frameworks when
    /// `None`), to send now: the framework (or the master) is back.
    pub fn resend(&mut self, framework_id: Option<&str>, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for ((fw, _), stream) in &mut self.streams {
            if framework_id.is_some_and(|f| f != fw) {
                continue;
            }
            if let Some(head) = stream.pending.front() {
                stream.next_send = Some(now + stream.backoff);
                out.push(Outgoing { framework_id: fw.clone(), status: head.clone() });
            }
        }
        out
    }

    /// When `due` next has something to send.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.values().filter(|s| !s.pending.is_empty()).filter_map(|s| s.next_send).min()
    }

    /// Unacknowledged updates of a task, oldest first.
    pub fn pending(&self, framework_id: &str, task_id: &str) -> Vec<TaskStatus> {
        self.streams
            .get(&(framework_id.to_owned(), task_id.to_owned()))
            .map(|s| s.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// All unacknowledged updates, by framework, oldest first per task (for checkpoints).
    pub fn all_pending(&self) -> Vec<(String, TaskStatus)> {
        self.streams
            .iter()
            .flat_map(|((fw, _), s)| s.pending.iter().map(move |st| (fw.clone(), st.clone())))
            .collect()
    }

    /// Forgets every stream of a framework.
    pub fn remove_framework(&mut self, framework_id: &str) {
        self.streams.retain(|(fw, _), _| fw != framework_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::v1::{TaskId, TaskState};

    fn status(task: &str, state: TaskState, uuid: u8) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: TaskId { value: task.into() },
            uuid: Some(vec![uuid; 16]),
            ..TaskStatus::default()
        };
        s.set_state(state);
        s
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn only_the_head_is_in_flight_and_acks_release_the_next() {
        let t0 = Instant::now();
        let mut m = UpdateManager::new(RetryPolicy::default());
        let first = m.update("fw", status("t", TaskState::TaskRunning, 1), t0);
        assert!(matches!(first, Accepted::SendNow(ref o) if o.status.uuid == Some(vec![1; 16])));
        assert_eq!(m.update("fw", status("t", TaskState::TaskFinished, 2), t0), Accepted::Queued);
        assert_eq!(
            m.update("fw", status("t", TaskState::TaskFinished, 2), t0),
            Accepted::Duplicate
        );
        // A wrong uuid does not release anything.
        assert_eq!(m.acknowledge("fw", "t", &[2; 16], t0), Err(AckError::Mismatch("t".into())));
        let next = m.acknowledge("fw", "t", &[1; 16], t0 + secs(1)).unwrap().unwrap();
        assert_eq!(next.status.uuid, Some(vec![2; 16]));
        assert_eq!(m.next_deadline(), Some(t0 + secs(11)));
        assert_eq!(m.acknowledge("fw", "t", &[2; 16], t0 + secs(2)), Ok(None));
        // Terminal update acknowledged: the stream is gone.
        assert_eq!(m.acknowledge("fw", "t", &[2; 16], t0), Err(AckError::UnknownTask("t".into())));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut m = UpdateManager::new(RetryPolicy::default());
        m.update("fw", status("t", TaskState::TaskRunning, 1), t0);
        assert!(m.due(t0 + secs(9)).is_empty());
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..9 {
            let next = m.next_deadline().unwrap();
            gaps.push((next - at).as_secs());
            at = next;
            let sent = m.due(at);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].status.uuid, Some(vec![1; 16]), "the same update is re-sent");
        }
        assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn resend_for_a_framework_sends_its_heads_now() {
        let t0 = Instant::now();
        let mut m = UpdateManager::new(RetryPolicy { initial: secs(1), max: secs(4) });
        m.update("a", status("t1", TaskState::TaskRunning, 1), t0);
        m.update("a", status("t1", TaskState::TaskFinished, 2), t0);
        m.update("a", status("t2", TaskState::TaskRunning, 3), t0);
        m.update("b", status("t3", TaskState::TaskRunning, 4), t0);
        let sent = m.resend(Some("a"), t0);
        let uuids: Vec<_> = sent.iter().map(|o| o.status.uuid.clone().unwrap()[0]).collect();
        assert_eq!(uuids, [1, 3]);
        assert_eq!(m.resend(None, t0).len(), 3);
        assert_eq!(m.pending("a", "t1").len(), 2);
        assert_eq!(m.all_pending().len(), 4);
        m.remove_framework("a");
        assert_eq!(m.all_pending().len(), 1);
    }

    #[test]
    fn non_terminal_ack_keeps_the_stream_for_later_updates() {
        let t0 = Instant::now();
        let mut m = UpdateManager::new(RetryPolicy::default());
        m.update("fw", status("t", TaskState::TaskRunning, 1), t0);
        assert_eq!(m.acknowledge("fw", "t", &[1; 16], t0), Ok(None));
        assert_eq!(m.update("fw", status("t", TaskState::TaskRunning, 1), t0), Accepted::Duplicate);
        assert!(matches!(
            m.update("fw", status("t", TaskState::TaskFailed, 5), t0),
            Accepted::SendNow(_)
        ));
    }
}
