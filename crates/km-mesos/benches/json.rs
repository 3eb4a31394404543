//! Mesos JSON encoding of a large operator answer: GET_STATE with 10,000 running tasks on
//! 1,000 agents, the snapshot km mesos-master's web page starts from: written as Mesos JSON
//! and as protobuf (prost's encoding, checked for left-out map values), and the JSON read back.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use km_mesos::ContentType;
use km_mesos::v1::{self, master as op};

fn scalar(name: &str, value: f64) -> v1::Resource {
    #[allow(deprecated)]
    let mut r = v1::Resource {
        name: name.into(),
        scalar: Some(v1::value::Scalar { value }),
        ..Default::default()
    };
    r.set_type(v1::value::Type::Scalar);
    r
}

fn task(i: usize) -> v1::Task {
    let id = v1::TaskId { value: format!("pod-{i:05}.{i:016x}") };
    let agent =
        v1::AgentId { value: format!("c0ffee00-0000-4000-8000-000000000000-S{}", i % 1000) };
    let fw = v1::FrameworkId { value: "c0ffee00-0000-4000-8000-000000000000-0000".into() };
    let mut status = v1::TaskStatus {
        task_id: id.clone(),
        agent_id: Some(agent.clone()),
        timestamp: Some(1.7e9 + i as f64),
        uuid: Some(vec![7; 16]),
        message: Some("Executor running the pod".into()),
        ..Default::default()
    };
    status.set_state(v1::TaskState::TaskRunning);
    status.set_source(v1::task_status::Source::Executor);
    let mut t = v1::Task {
        name: format!("default/pod-{i:05}"),
        task_id: id,
        framework_id: fw,
        agent_id: agent,
        resources: vec![scalar("cpus", 0.1), scalar("mem", 64.0)],
        statuses: vec![status],
        status_update_uuid: Some(vec![7; 16]),
        ..Default::default()
    };
    t.set_state(v1::TaskState::TaskRunning);
    t.set_status_update_state(v1::TaskState::TaskRunning);
    t
}

fn state(tasks: usize) -> op::Response {
    let mut r = op::Response {
        get_state: Some(op::response::GetState {
            get_tasks: Some(op::response::GetTasks {
                tasks: (0..tasks).map(task).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    r.set_type(op::response::Type::GetState);
    r
}

fn json(c: &mut Criterion) {
    let answer = state(10_000);
    let bytes = ContentType::Json.encode(&answer);
    let protobuf = ContentType::Protobuf.encode(&answer);
    #[allow(clippy::print_stdout)] // a bench reports what it measured
    {
        println!(
            "GET_STATE with 10,000 tasks: {} bytes of JSON, {} of protobuf",
            bytes.len(),
            protobuf.len()
        );
    }
    let mut group = c.benchmark_group("mesos_json");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode_get_state_10k_tasks", |b| {
        b.iter(|| ContentType::Json.encode(&answer));
    });
    group.bench_function("encode_get_state_10k_tasks_protobuf", |b| {
        b.iter(|| ContentType::Protobuf.encode(&answer));
    });
    group.bench_function("decode_get_state_10k_tasks", |b| {
        b.iter(|| ContentType::Json.decode::<op::Response>(&bytes).map(|r| r.r#type));
    });
    group.finish();
}

criterion_group!(benches, json);
criterion_main!(benches);
