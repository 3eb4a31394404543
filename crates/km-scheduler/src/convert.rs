//! Mesos protobufs to the core's plain model and back.

use std::time::{Duration, SystemTime};

use km_mesos::resources::{self as mesos_resources, Format};
use km_mesos::v1::{self, task_status};
use km_offer_matcher::{Offer, Unavailability};
use km_scheduler_core::{LaunchTask, Source, TaskState, TaskUpdate};

/// An offer in the matcher's model. Resources and attributes the model cannot take (for
/// example disks with persistence) are left out, with a warning.
pub(crate) fn offer(o: &v1::Offer) -> Offer {
    let mut resources = Vec::with_capacity(o.resources.len());
    for r in &o.resources {
        match mesos_resources::from_proto(r) {
            Ok(r) => resources.push(r),
            Err(e) => tracing::warn!(offer = %o.id.value, "offered resource left out: {e}"),
        }
    }
    let mut attributes = Vec::with_capacity(o.attributes.len());
    for a in &o.attributes {
        match mesos_resources::attribute_from_proto(a) {
            Ok(a) => attributes.push(a),
            Err(e) => tracing::warn!(offer = %o.id.value, "agent attribute left out: {e}"),
        }
    }
    let unavailability = o.unavailability.as_ref().map(|u| Unavailability {
        start: time_of(u.start.nanoseconds),
        duration: u
            .duration
            .as_ref()
            .map(|d| Duration::from_nanos(d.nanoseconds.max(0).unsigned_abs())),
    });
    Offer {
        id: o.id.value.clone(),
        agent_id: o.agent_id.value.clone(),
        hostname: o.hostname.clone(),
        resources,
        attributes,
        executor_ids: o.executor_ids.iter().map(|e| e.value.clone()).collect(),
        unavailability,
    }
}

fn time_of(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_nanos(nanos.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// A status update in the core's model.
pub(crate) fn update(s: &v1::TaskStatus) -> TaskUpdate {
    use v1::TaskState as S;
    let state = match s.state() {
        S::TaskStaging => TaskState::Staging,
        S::TaskStarting => TaskState::Starting,
        S::TaskRunning => TaskState::Running,
        S::TaskKilling => TaskState::Killing,
        S::TaskFinished => TaskState::Finished,
        S::TaskFailed => TaskState::Failed,
        S::TaskKilled => TaskState::Killed,
        S::TaskError => TaskState::Error,
        S::TaskLost => TaskState::Lost,
        S::TaskDropped => TaskState::Dropped,
        S::TaskUnreachable => TaskState::Unreachable,
        S::TaskGone => TaskState::Gone,
        S::TaskGoneByOperator => TaskState::GoneByOperator,
        S::TaskUnknown => TaskState::Unknown,
    };
    let source = s.source.map(|_| match s.source() {
        task_status::Source::Master => Source::Master,
        task_status::Source::Agent => Source::Agent,
        task_status::Source::Executor => Source::Executor,
    });
    TaskUpdate {
        task_id: s.task_id.value.clone(),
        agent_id: s.agent_id.as_ref().map(|a| a.value.clone()),
        state,
        reason: s.reason.map(|_| s.reason().as_str_name().to_owned()),
        message: s.message.clone().filter(|m| !m.is_empty()),
        source,
        uuid: s.uuid.clone().filter(|u| !u.is_empty()),
        executor_reports_status: s.data.as_ref().is_some_and(|d| !d.is_empty()),
    }
}

/// The TaskInfo of a launch.
pub(crate) fn task_info(
    t: LaunchTask,
    agent_id: &str,
    executor: &v1::ExecutorInfo,
) -> v1::TaskInfo {
    v1::TaskInfo {
        resources: mesos_resources::resources_to_proto(&t.resources, Format::PreRefinement),
        name: t.name,
        task_id: v1::TaskId { value: t.task_id },
        agent_id: v1::AgentId { value: agent_id.to_owned() },
        executor: Some(executor.clone()),
        data: Some(t.data),
        labels: Some(v1::Labels {
            labels: t
                .labels
                .into_iter()
                .map(|(key, v)| v1::Label { key, value: Some(v) })
                .collect(),
        }),
        kill_policy: Some(v1::KillPolicy { grace_period: Some(duration_info(t.kill_grace)) }),
        ..Default::default()
    }
}

/// A protobuf duration.
pub(crate) fn duration_info(d: Duration) -> v1::DurationInfo {
    v1::DurationInfo { nanoseconds: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX) }
}

#[cfg(test)]
mod tests {
    use km_offer_matcher::Resource;

    use super::*;

    fn scalar(name: &str, v: f64) -> v1::Resource {
        let mut r = v1::Resource {
            name: name.into(),
            scalar: Some(v1::value::Scalar { value: v }),
            ..Default::default()
        };
        r.set_type(v1::value::Type::Scalar);
        r
    }

    #[test]
    fn offers_keep_what_the_model_can_take() {
        let mut attr = v1::Attribute {
            name: "rack".into(),
            text: Some(v1::value::Text { value: "r1".into() }),
            ..Default::default()
        };
        attr.set_type(v1::value::Type::Text);
        let o = v1::Offer {
            id: v1::OfferId { value: "o1".into() },
            framework_id: v1::FrameworkId { value: "f".into() },
            agent_id: v1::AgentId { value: "a1".into() },
            hostname: "h1".into(),
            resources: vec![scalar("cpus", 2.0), scalar("mem", f64::NAN)],
            attributes: vec![attr],
            executor_ids: vec![v1::ExecutorId { value: "e".into() }],
            ..Default::default()
        };
        let c = offer(&o);
        assert_eq!(c.resources, vec![Resource::scalar("cpus", 2.0)], "the NaN memory is left out");
        assert_eq!(c.attributes, vec![km_offer_matcher::Attribute::text("rack", "r1")]);
        assert_eq!(c.executor_ids, vec!["e".to_owned()]);
    }

    #[test]
    fn updates_keep_reason_source_and_uuid() {
        let mut s = v1::TaskStatus {
            task_id: v1::TaskId { value: "t".into() },
            agent_id: Some(v1::AgentId { value: "a".into() }),
            uuid: Some(vec![1]),
            message: Some("gone".into()),
            ..Default::default()
        };
        s.set_state(v1::TaskState::TaskLost);
        s.set_reason(task_status::Reason::AgentRemoved);
        s.set_source(task_status::Source::Master);
        let u = update(&s);
        assert_eq!(u.state, TaskState::Lost);
        assert_eq!(u.reason.as_deref(), Some("REASON_AGENT_REMOVED"));
        assert_eq!(u.source, Some(Source::Master));
        assert_eq!(u.uuid, Some(vec![1]));
        assert!(!u.executor_reports_status);
        s.reason = None;
        s.data = Some(b"{}".to_vec());
        let u = update(&s);
        assert_eq!(u.reason, None);
        assert!(u.executor_reports_status);
    }
}
