//! Integration tests of `km mesos-agent` against an in-process fake master.
//!
//! Custom executors are this very test binary, re-run as
//! `<exe> executor_process --exact --ignored` with `KM_TEST_EXECUTOR=1`:
//! the `executor_process` test below then acts as an executor built on the
//! `km_mesos::executor` client.

mod fake_master;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_master::{AGENT_ID, FakeMaster, ack_event};
use km_mesos::ContentType;
use km_mesos::agent::{Event, event};
use km_mesos::v1::{
    CommandInfo, ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, TaskId, TaskInfo, TaskState,
    TaskStatus, command_info, executor_info, task_status,
};
use km_mesos_agent::{Config, Running};

fn config(master: &FakeMaster, work_dir: &Path) -> Config {
    Config {
        master: master.url.clone(),
        ip: "127.0.0.1".into(),
        port: 0,
        hostname: "agent.test".into(),
        resources: km_mesos_agent::flags::parse_resources(
            "cpus:2;mem:1024;disk:1000;ports:[31000-31010]",
        )
        .unwrap(),
        attributes: km_mesos_agent::flags::parse_attributes("rack:r1").unwrap(),
        work_dir: work_dir.to_owned(),
        executor_shutdown_grace_period: Duration::from_secs(2),
        executor_registration_timeout: Duration::from_secs(60),
        // Short, so a checkpointing executor left behind by a failing test exits soon.
        recovery_timeout: Duration::from_secs(10),
        executor_reregistration_timeout: Duration::from_secs(2),
        fetcher_max_size: 1 << 30,
        fetcher_cache_size: 1 << 30,
        fetcher_cache_dir: work_dir.join("fetch"),
        update_retry: km_mesos_agent::updates::RetryPolicy::default(),
        master_backoff_max: Duration::from_millis(300),
    }
}

async fn start(master: &FakeMaster, work_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = config(master, work_dir);
    tweak(&mut cfg);
    km_mesos_agent::start(cfg).await.unwrap()
}

fn framework(id: &str, checkpoint: bool) -> FrameworkInfo {
    FrameworkInfo {
        id: Some(FrameworkId { value: id.into() }),
        user: "root".into(),
        name: "test".into(),
        checkpoint: Some(checkpoint),
        ..Default::default()
    }
}

fn command_task(id: &str, cmd: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId { value: id.into() },
        name: id.into(),
        agent_id: km_mesos::v1::AgentId { value: AGENT_ID.into() },
        command: Some(CommandInfo { value: Some(cmd.into()), ..Default::default() }),
        ..Default::default()
    }
}

fn executor_info(id: &str) -> ExecutorInfo {
    let exe = std::env::current_exe().unwrap();
    let mut info = ExecutorInfo {
        executor_id: ExecutorId { value: id.into() },
        command: Some(CommandInfo {
            shell: Some(false),
            value: Some(exe.display().to_string()),
            arguments: vec![
                "executor".into(),
                "executor_process".into(),
                "--exact".into(),
                "--ignored".into(),
                "--nocapture".into(),
            ],
            environment: Some(km_mesos::v1::Environment {
                variables: vec![km_mesos::v1::environment::Variable {
                    name: "KM_TEST_EXECUTOR".into(),
                    value: Some("1".into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    info.set_type(executor_info::Type::Custom);
    info
}

fn custom_task(id: &str, executor: ExecutorInfo) -> TaskInfo {
    TaskInfo {
        task_id: TaskId { value: id.into() },
        name: id.into(),
        agent_id: km_mesos::v1::AgentId { value: AGENT_ID.into() },
        executor: Some(executor),
        ..Default::default()
    }
}

fn run_task(fw: &FrameworkInfo, task: TaskInfo) -> Event {
    let mut e = Event {
        run_task: Some(event::RunTask { framework_info: fw.clone(), task }),
        ..Default::default()
    };
    e.set_type(event::Type::RunTask);
    e
}

fn kill_task(fw: &str, task: &str) -> Event {
    let mut e = Event {
        kill_task: Some(event::KillTask {
            framework_id: FrameworkId { value: fw.into() },
            task_id: TaskId { value: task.into() },
            kill_policy: None,
        }),
        ..Default::default()
    };
    e.set_type(event::Type::KillTask);
    e
}

fn shutdown_executor(fw: &str, ex: &str) -> Event {
    let mut e = Event {
        shutdown_executor: Some(event::ShutdownExecutor {
            framework_id: FrameworkId { value: fw.into() },
            executor_id: ExecutorId { value: ex.into() },
        }),
        ..Default::default()
    };
    e.set_type(event::Type::ShutdownExecutor);
    e
}

fn states(updates: &[TaskStatus], task: &str) -> Vec<TaskState> {
    updates.iter().filter(|s| s.task_id.value == task).map(|s| s.state()).collect()
}

async fn agent_state(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_slice(
        &reqwest::get(format!("http://{addr}/state")).await.unwrap().bytes().await.unwrap(),
    )
    .unwrap()
}

fn sandbox_of(state: &serde_json::Value, task: &str) -> Option<PathBuf> {
    state["frameworks"]
        .as_array()?
        .iter()
        .flat_map(|f| f["executors"].as_array().cloned().unwrap_or_default())
        .find_map(|e| {
            e["tasks"]
                .as_array()?
                .iter()
                .chain(e["queued_tasks"].as_array()?.iter())
                .any(|t| t["id"] == task)
                .then(|| PathBuf::from(e["directory"].as_str().unwrap()))
        })
}

async fn wait_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not appear", path.display());
}

// ----------------------------------------------------------------------------

#[tokio::test]
async fn registers_and_runs_a_command_task_to_finished() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    let sub = master.subscribed(1).await;
    let info = sub.subscribe.as_ref().unwrap();
    assert_eq!(info.agent_info.hostname, "agent.test");
    assert_eq!(info.agent_info.port, Some(i32::from(agent.addr.port())));
    assert_eq!(info.agent_info.resources.len(), 4);
    assert_eq!(info.capabilities.len(), 3);
    assert!(sub.agent_id.is_none());

    let fw = framework("fw1", false);
    master.send(run_task(&fw, command_task("t1", "echo hello; echo oops >&2")));
    let last = master.update_of("t1", 2).await;
    assert_eq!(
        states(&master.updates(), "t1"),
        [TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskFinished]
    );
    assert_eq!(last.uuid.as_ref().unwrap().len(), 16);
    assert_eq!(last.agent_id.as_ref().unwrap().value, AGENT_ID);
    assert_eq!(last.executor_id.as_ref().unwrap().value, "t1");
    let sandbox = dir.path().join(format!("slaves/{AGENT_ID}/frameworks/fw1/executors/t1/runs"));
    let run = std::fs::read_dir(&sandbox).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::read_to_string(run.join("stdout")).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(run.join("stderr")).unwrap(), "oops\n");
    // The agent id is kept for re-registration.
    assert_eq!(std::fs::read_to_string(dir.path().join("meta/agent_id")).unwrap(), AGENT_ID);
    let state = agent_state(agent.addr).await;
    assert_eq!(state["id"], AGENT_ID);
    assert_eq!(state["resources"]["ports"], "[31000-31010]");
    assert_eq!(state["attributes"]["rack"], "r1");
    assert_eq!(reqwest::get(format!("http://{}/health", agent.addr)).await.unwrap().status(), 200);
    agent.stop().await;
}

#[tokio::test]
async fn failing_command_fails_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    master.send(run_task(&framework("fw", false), command_task("bad", "exit 3")));
    let last = master.update_of("bad", 2).await;
    assert_eq!(last.state(), TaskState::TaskFailed);
    assert!(last.message().contains("status 3"), "{:?}", last.message);
    agent.stop().await;
}

#[tokio::test]
async fn killing_a_command_task_stops_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    master.send(run_task(&framework("fw", false), command_task("sleeper", "sleep 60")));
    assert_eq!(master.update_of("sleeper", 1).await.state(), TaskState::TaskRunning);
    let state = agent_state(agent.addr).await;
    let pid = state["frameworks"][0]["executors"][0]["pid"].as_i64().unwrap() as i32;
    assert!(km_mesos_agent::process::alive(pid));
    master.send(kill_task("fw", "sleeper"));
    let killed = master.update_of("sleeper", 2).await;
    assert_eq!(killed.state(), TaskState::TaskKilled);
    assert!(!km_mesos_agent::process::alive(pid), "the command's process is gone");
    // Unknown task: TASK_LOST from the agent.
    master.send(kill_task("fw", "nope"));
    let lost = master.update_of("nope", 0).await;
    assert_eq!(lost.state(), TaskState::TaskLost);
    assert_eq!(lost.source(), task_status::Source::Agent);
    assert_eq!(lost.reason(), task_status::Reason::ExecutorTerminated);
    agent.stop().await;
}

#[tokio::test]
async fn kill_escalates_to_sigkill_after_the_grace_period_and_reports_killing() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    let mut fw = framework("fw", false);
    fw.capabilities.push(km_mesos::v1::framework_info::Capability {
        r#type: Some(km_mesos::v1::framework_info::capability::Type::TaskKillingState as i32),
    });
    // The shell ignores SIGTERM (and so does its sleep, which inherits that): only SIGKILL
    // ends the task before the sleep does, an hour later. It says when the trap is in place.
    let mut task = command_task("stubborn", "trap '' TERM; echo trapped > trapped; sleep 3600");
    task.kill_policy = Some(km_mesos::v1::KillPolicy {
        grace_period: Some(km_mesos::v1::DurationInfo { nanoseconds: 300_000_000 }),
    });
    master.send(run_task(&fw, task));
    assert_eq!(master.update_of("stubborn", 1).await.state(), TaskState::TaskRunning);
    let sandbox = sandbox_of(&agent_state(agent.addr).await, "stubborn").expect("its sandbox");
    wait_file(&sandbox.join("trapped")).await;
    let started = std::time::Instant::now();
    master.send(kill_task("fw", "stubborn"));
    assert_eq!(master.update_of("stubborn", 2).await.state(), TaskState::TaskKilling);
    // Within the fake master's deadline, far below the hour the sleep would take.
    let killed = master.update_of("stubborn", 3).await;
    assert_eq!(killed.state(), TaskState::TaskKilled);
    assert!(killed.message().contains("SIGKILL"), "{:?}", killed.message);
    eprintln!("killed {:?} after the KILL (grace period 300 ms)", started.elapsed());
    agent.stop().await;
}

#[tokio::test]
async fn status_updates_are_retried_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(false).await;
    let agent = start(&master, dir.path(), |c| {
        c.update_retry = km_mesos_agent::updates::RetryPolicy {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(5),
        };
    })
    .await;
    master.subscribed(1).await;
    master.send(run_task(&framework("fw", false), command_task("r", "true")));
    let first = master.update_of("r", 0).await;
    assert_eq!(first.state(), TaskState::TaskStarting);
    let again = master.update_of("r", 1).await;
    assert_eq!(again.uuid, first.uuid, "the same update is re-sent");
    assert_eq!(again.state(), TaskState::TaskStarting, "later updates wait for the ACK");
    master.send(ack_event("fw", &first));
    let next = master
        .wait_for("RUNNING", |m| {
            m.updates().into_iter().find(|s| s.state() == TaskState::TaskRunning)
        })
        .await;
    master.send(ack_event("fw", &next));
    master.set_auto_ack(true);
    master
        .wait_for("FINISHED", |m| {
            m.updates().into_iter().find(|s| s.state() == TaskState::TaskFinished)
        })
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn fetcher_copies_unpacks_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("tool.sh"), "#!/bin/sh\necho tool-ran\n").unwrap();
    let tgz = src.join("data.tgz");
    {
        let enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "inner.txt", &b"data"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path().join("work").as_path(), |_| {}).await;
    master.subscribed(1).await;
    let mut task = command_task("f", "./tool.sh && cat inner.txt");
    task.command.as_mut().unwrap().uris = vec![
        command_info::Uri {
            value: format!("file://{}", src.join("tool.sh").display()),
            executable: Some(true),
            ..Default::default()
        },
        command_info::Uri { value: tgz.display().to_string(), ..Default::default() },
    ];
    master.send(run_task(&framework("fw", false), task));
    assert_eq!(master.update_of("f", 2).await.state(), TaskState::TaskFinished);
    let runs = dir.path().join(format!("work/slaves/{AGENT_ID}/frameworks/fw/executors/f/runs"));
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::read_to_string(run.join("stdout")).unwrap(), "tool-ran\ndata");

    let mut bad = command_task("g", "true");
    bad.command.as_mut().unwrap().uris = vec![command_info::Uri {
        value: "file:///does/not/exist.tgz".into(),
        ..Default::default()
    }];
    master.send(run_task(&framework("fw", false), bad));
    let failed = master.update_of("g", 0).await;
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), task_status::Reason::ContainerLaunchFailed);
    assert!(failed.message().contains("file:///does/not/exist.tgz"), "{:?}", failed.message);
    agent.stop().await;
}

#[tokio::test]
async fn cached_uris_are_fetched_once_and_shared_by_later_launches() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho cached-tool\n").unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path().join("work").as_path(), |_| {}).await;
    master.subscribed(1).await;
    let cached = || command_info::Uri {
        value: tool.display().to_string(),
        executable: Some(true),
        cache: Some(true),
        ..Default::default()
    };
    let mut sandboxes = Vec::new();
    for id in ["c1", "c2", "c3"] {
        if id == "c3" {
            // What is cached under a URI stays what the first launch fetched.
            std::fs::write(&tool, "#!/bin/sh\necho changed\n").unwrap();
        }
        let mut task = command_task(id, "./tool.sh");
        task.command.as_mut().unwrap().uris = vec![cached()];
        master.send(run_task(&framework("fw", false), task));
        assert_eq!(master.update_of(id, 2).await.state(), TaskState::TaskFinished);
        let runs =
            dir.path().join(format!("work/slaves/{AGENT_ID}/frameworks/fw/executors/{id}/runs"));
        let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
        assert_eq!(std::fs::read_to_string(run.join("stdout")).unwrap(), "cached-tool\n");
        sandboxes.push(run);
    }
    let inode = |run: &std::path::Path| std::fs::metadata(run.join("tool.sh")).unwrap().ino();
    assert_eq!(inode(&sandboxes[0]), inode(&sandboxes[1]), "one file, linked into each");
    assert_eq!(inode(&sandboxes[0]), inode(&sandboxes[2]));
    let body = reqwest::get(format!("http://{}/metrics/snapshot", agent.addr))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let metrics: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let size = "#!/bin/sh\necho cached-tool\n".len() as f64;
    assert_eq!(metrics["containerizer/fetcher/cache_size_used_bytes"], size);
    assert_eq!(metrics["containerizer/fetcher/cache_size_total_bytes"], (1u64 << 30) as f64);
    agent.stop().await;
}

#[tokio::test]
async fn fetcher_refuses_paths_out_of_the_sandbox_and_files_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("five");
    std::fs::write(&src, "12345").unwrap();
    let master = FakeMaster::start(true).await;
    // The limit comes from the agent's configuration (`--fetcher_max_size`).
    let agent = start(&master, dir.path().join("work").as_path(), |c| c.fetcher_max_size = 4).await;
    master.subscribed(1).await;

    let mut escape = command_task("escape", "true");
    escape.command.as_mut().unwrap().uris = vec![command_info::Uri {
        value: src.display().to_string(),
        output_file: Some("../../../../../../../../../escaped".into()),
        ..Default::default()
    }];
    master.send(run_task(&framework("fw", false), escape));
    let failed = master.update_of("escape", 0).await;
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), task_status::Reason::ContainerLaunchFailed);
    assert!(
        failed.message().contains("output file '../../../../../../../../../escaped'"),
        "{:?}",
        failed.message
    );
    assert!(!dir.path().join("escaped").exists());

    let mut big = command_task("big", "true");
    big.command.as_mut().unwrap().uris =
        vec![command_info::Uri { value: src.display().to_string(), ..Default::default() }];
    master.send(run_task(&framework("fw", false), big));
    let failed = master.update_of("big", 0).await;
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert!(failed.message().contains("limit of 4 bytes"), "{:?}", failed.message);
    let runs = dir.path().join(format!("work/slaves/{AGENT_ID}/frameworks/fw/executors/big/runs"));
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    assert!(!run.join("five").exists(), "the partial file is removed");
    agent.stop().await;
}

#[tokio::test]
async fn custom_executor_gets_its_env_launch_and_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    for (fw_id, checkpoint) in [("fw-cp", true), ("fw-nocp", false)] {
        let fw = framework(fw_id, checkpoint);
        master.send(run_task(&fw, custom_task(&format!("{fw_id}-task"), executor_info("ex"))));
    }
    for (fw_id, checkpoint) in [("fw-cp", true), ("fw-nocp", false)] {
        let task = format!("{fw_id}-task");
        let running = master.update_of(&task, 0).await;
        assert_eq!(running.state(), TaskState::TaskRunning);
        assert_eq!(running.source(), task_status::Source::Executor);
        assert_eq!(running.uuid.as_ref().unwrap().len(), 16);
        assert_eq!(running.executor_id.as_ref().unwrap().value, "ex");
        let sandbox = sandbox_of(&agent_state(agent.addr).await, &task).unwrap();
        // The executor records the agent's ACKNOWLEDGED and its environment.
        assert_eq!(wait_file(&sandbox.join(format!("acked-{task}"))).await, "ok");
        let env = wait_file(&sandbox.join("env.txt")).await;
        let var = |name: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(str::to_owned)
        };
        assert_eq!(var("MESOS_FRAMEWORK_ID").as_deref(), Some(fw_id));
        assert_eq!(var("MESOS_EXECUTOR_ID").as_deref(), Some("ex"));
        assert_eq!(var("MESOS_DIRECTORY"), Some(sandbox.display().to_string()));
        assert_eq!(var("MESOS_SANDBOX"), Some(sandbox.display().to_string()));
        assert_eq!(var("MESOS_AGENT_ENDPOINT"), Some(format!("127.0.0.1:{}", agent.addr.port())));
        assert_eq!(var("MESOS_SLAVE_ID").as_deref(), Some(AGENT_ID));
        assert_eq!(var("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD").as_deref(), Some("2secs"));
        assert_eq!(var("MESOS_HTTP_COMMAND_EXECUTOR").as_deref(), Some("0"));
        if checkpoint {
            assert_eq!(var("MESOS_CHECKPOINT").as_deref(), Some("1"));
            assert_eq!(var("MESOS_RECOVERY_TIMEOUT").as_deref(), Some("10secs"));
            assert_eq!(var("MESOS_SUBSCRIPTION_BACKOFF_MAX").as_deref(), Some("2secs"));
        } else {
            assert_eq!(var("MESOS_CHECKPOINT").as_deref(), Some("0"));
            assert_eq!(var("MESOS_RECOVERY_TIMEOUT"), None);
            assert_eq!(var("MESOS_SUBSCRIPTION_BACKOFF_MAX"), None);
        }
        assert!(sandbox.starts_with(
            dir.path().join(format!("slaves/{AGENT_ID}/frameworks/{fw_id}/executors/ex/runs"))
        ));
    }
    // A second task for the running executor is delivered at once; KILL is forwarded.
    let fw = framework("fw-nocp", false);
    master.send(run_task(&fw, custom_task("second", executor_info("ex"))));
    assert_eq!(master.update_of("second", 0).await.state(), TaskState::TaskRunning);
    master.send(kill_task("fw-nocp", "second"));
    assert_eq!(master.update_of("second", 1).await.state(), TaskState::TaskKilled);
    // SHUTDOWN: the executor exits; the master hears EXECUTOR_EXITED.
    master.send(shutdown_executor("fw-nocp", "ex"));
    let exited = master
        .wait_for("EXECUTOR_EXITED", |m| m.calls().into_iter().find_map(|c| c.executor_exited))
        .await;
    assert_eq!(exited.framework_id.value, "fw-nocp");
    assert_eq!(exited.executor_id.value, "ex");
    // Its task that was still running is failed by the agent.
    let left = master.update_of("fw-nocp-task", 1).await;
    assert_eq!(left.state(), TaskState::TaskFailed);
    assert_eq!(left.source(), task_status::Source::Agent);
    assert_eq!(left.reason(), task_status::Reason::ExecutorTerminated);
    // The checkpointing one would outlive the agent: shut it down too.
    master.send(shutdown_executor("fw-cp", "ex"));
    master
        .wait_for("EXECUTOR_EXITED of fw-cp", |m| {
            m.calls()
                .into_iter()
                .filter_map(|c| c.executor_exited)
                .find(|e| e.framework_id.value == "fw-cp")
        })
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn executor_api_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    // An executor that never subscribes, so its task stays queued.
    let mut lazy = executor_info("lazy");
    lazy.command = Some(CommandInfo { value: Some("sleep 30".into()), ..Default::default() });
    master.send(run_task(&framework("fw", false), custom_task("q1", lazy.clone())));
    master.send(run_task(&framework("fw", false), custom_task("q2", lazy)));
    let url = format!("http://{}/api/v1/executor", agent.addr);
    let client = reqwest::Client::new();
    let post = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut r = client.post(&url).body(body);
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        r.send()
    };
    let update = |fw: &str, ex: &str, f: &dyn Fn(&mut TaskStatus)| {
        let mut status = TaskStatus {
            task_id: TaskId { value: "q1".into() },
            uuid: Some(vec![7; 16]),
            ..Default::default()
        };
        status.set_state(TaskState::TaskRunning);
        status.set_source(task_status::Source::Executor);
        f(&mut status);
        let mut c = km_mesos::v1::executor::Call {
            executor_id: ExecutorId { value: ex.into() },
            framework_id: FrameworkId { value: fw.into() },
            update: Some(km_mesos::v1::executor::call::Update { status }),
            ..Default::default()
        };
        c.set_type(km_mesos::v1::executor::call::Type::Update);
        ContentType::Protobuf.encode(&c)
    };
    let pb = Some("application/x-protobuf");
    // Wait until the agent knows the executor.
    for _ in 0..100 {
        if sandbox_of(&agent_state(agent.addr).await, "q1").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(code(post(pb, update("fw", "lazy", &|_| {})).await.unwrap()), 403, "not subscribed");
    assert_eq!(
        code(
            post(pb, update("fw", "lazy", &|s| s.set_source(task_status::Source::Agent)))
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        code(
            post(pb, update("fw", "lazy", &|s| s.set_state(TaskState::TaskStaging))).await.unwrap()
        ),
        400
    );
    assert_eq!(code(post(pb, update("fw", "lazy", &|s| s.uuid = None)).await.unwrap()), 400);
    assert_eq!(
        code(post(pb, update("fw", "lazy", &|s| s.uuid = Some(vec![1; 15]))).await.unwrap()),
        400
    );
    let unknown = post(pb, update("nofw", "lazy", &|_| {})).await.unwrap();
    assert_eq!(unknown.status().as_u16(), 400);
    assert_eq!(unknown.text().await.unwrap(), "Framework cannot be found");
    let unknown = post(pb, update("fw", "noex", &|_| {})).await.unwrap();
    assert_eq!(unknown.text().await.unwrap(), "Executor cannot be found");
    assert_eq!(code(post(None, update("fw", "lazy", &|_| {})).await.unwrap()), 400);
    assert_eq!(
        code(post(Some("application/json; charset=utf-8"), b"{}".to_vec()).await.unwrap()),
        415
    );
    assert_eq!(code(post(Some("application/json"), b"{".to_vec()).await.unwrap()), 400);
    assert_eq!(code(client.get(&url).send().await.unwrap()), 405);
    let heartbeat =
        br#"{"type":"HEARTBEAT","executor_id":{"value":"x"},"framework_id":{"value":"y"}}"#;
    assert_eq!(code(post(Some("application/json"), heartbeat.to_vec()).await.unwrap()), 202);
    let subscribe = br#"{"type":"SUBSCRIBE","executor_id":{"value":"lazy"},"framework_id":{"value":"fw"},"subscribe":{}}"#;
    let r = client
        .post(format!("http://{}/slave(1)/api/v1/executor", agent.addr))
        .header("Content-Type", "application/json")
        .header("Accept", "text/html")
        .body(subscribe.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 406);
    // KILL of a queued task: killed during launch.
    master.send(kill_task("fw", "q2"));
    let killed = master.update_of("q2", 0).await;
    assert_eq!(killed.state(), TaskState::TaskKilled);
    assert_eq!(killed.reason(), task_status::Reason::TaskKilledDuringLaunch);
    // SUBSCRIBE by hand (JSON): SUBSCRIBED first, then the queued LAUNCH of q1 only.
    let r = client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(subscribe.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("Mesos-Stream-Id").is_none());
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut stream = r.bytes_stream();
    let mut decoder = km_mesos::recordio::Decoder::default();
    let mut events: Vec<km_mesos::v1::executor::Event> = Vec::new();
    while events.len() < 2 {
        use futures::StreamExt as _;
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        decoder.push(&chunk);
        while let Some(rec) = decoder.next_record().unwrap() {
            events.push(ContentType::Json.decode(&rec).unwrap());
        }
    }
    use km_mesos::v1::executor::event::Type as T;
    assert_eq!(events[0].r#type(), T::Subscribed);
    let s = events[0].subscribed.as_ref().unwrap();
    assert_eq!(s.agent_info.id.as_ref().unwrap().value, AGENT_ID);
    assert_eq!(s.agent_info.hostname, "agent.test");
    assert!(s.container_id.is_some());
    assert_eq!(events[1].r#type(), T::Launch);
    assert_eq!(events[1].launch.as_ref().unwrap().task.task_id.value, "q1");
    // Now subscribed: a valid UPDATE is accepted and acknowledged on the stream.
    assert_eq!(code(post(pb, update("fw", "lazy", &|_| {})).await.unwrap()), 202);
    loop {
        use futures::StreamExt as _;
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        decoder.push(&chunk);
        if let Some(rec) = decoder.next_record().unwrap() {
            let e: km_mesos::v1::executor::Event = ContentType::Json.decode(&rec).unwrap();
            assert_eq!(e.r#type(), T::Acknowledged);
            assert_eq!(e.acknowledged.unwrap().uuid, vec![7; 16]);
            break;
        }
    }
    assert_eq!(master.update_of("q1", 0).await.uuid, Some(vec![7; 16]));
    master.send(shutdown_executor("fw", "lazy"));
    agent.stop().await;
}

#[tokio::test]
async fn re_subscribes_with_its_id_when_the_master_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    master.drop_stream();
    let again = master.subscribed(2).await;
    assert_eq!(again.agent_id.as_ref().unwrap().value, AGENT_ID);
    assert_eq!(again.subscribe.as_ref().unwrap().agent_info.id.as_ref().unwrap().value, AGENT_ID);
    agent.stop().await;
    // A restarted agent re-registers with the id it kept.
    let agent = start(&master, dir.path(), |_| {}).await;
    let third = master.subscribed(3).await;
    assert_eq!(third.agent_id.as_ref().unwrap().value, AGENT_ID);
    agent.stop().await;
}

#[tokio::test]
async fn checkpointing_executor_survives_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    let fw = framework("fw", true);
    master.send(run_task(&fw, custom_task("long", executor_info("ex"))));
    assert_eq!(master.update_of("long", 0).await.state(), TaskState::TaskRunning);
    let state = agent_state(agent.addr).await;
    let pid = state["frameworks"][0]["executors"][0]["pid"].as_i64().unwrap() as i32;
    let port = agent.addr.port();
    agent.stop().await;
    // Same port, so the executor finds the agent again. That it re-subscribes below, with the
    // same pid, shows that it outlived the agent.
    let agent = start(&master, dir.path(), |c| c.port = port).await;
    let restarted = tokio::time::Instant::now();
    master.subscribed(2).await;
    let sub = master.subscribed(2).await;
    assert_eq!(sub.subscribe.unwrap().executors.len(), 1, "re-registration reports the executor");
    let mut re_subscribed = false;
    for _ in 0..100 {
        if agent.agent.subscribed_executors() == 1 {
            re_subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(re_subscribed, "the executor re-subscribed to the restarted agent");
    let state = agent_state(agent.addr).await;
    assert_eq!(
        state["frameworks"][0]["executors"][0]["pid"].as_i64(),
        Some(i64::from(pid)),
        "checkpointing executors outlive the agent: the same process re-subscribed"
    );
    // A negative check: the restarted agent kills the recovered executors that have not
    // re-subscribed when its --executor_reregistration_timeout runs out, and must spare this
    // one. Nothing marks "the agent looked and spared it", so this watches the process until
    // the timeout has passed for the agent (it started counting before `start` returned) and
    // its watch (every 200 ms) has had a few more turns.
    let spared = restarted + config(&master, dir.path()).executor_reregistration_timeout;
    let watched_until = spared + Duration::from_secs(1);
    while tokio::time::Instant::now() < watched_until {
        assert!(km_mesos_agent::process::alive(pid), "a re-subscribed executor is not killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(km_mesos_agent::process::alive(pid), "a re-subscribed executor is not killed");
    master.send(shutdown_executor("fw", "ex"));
    master
        .wait_for("EXECUTOR_EXITED", |m| m.calls().into_iter().find_map(|c| c.executor_exited))
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn task_groups_messages_and_framework_removal() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |_| {}).await;
    master.subscribed(1).await;
    let fw = framework("fw", false);
    let executor = executor_info("grp");
    let group = km_mesos::v1::TaskGroupInfo {
        tasks: vec![custom_task("g1", executor.clone()), custom_task("g2", executor.clone())],
    };
    let mut e = Event {
        run_task_group: Some(event::RunTaskGroup {
            framework_info: fw.clone(),
            executor,
            task_group: group,
        }),
        ..Default::default()
    };
    e.set_type(event::Type::RunTaskGroup);
    master.send(e);
    assert_eq!(master.update_of("g1", 0).await.state(), TaskState::TaskRunning);
    assert_eq!(master.update_of("g2", 0).await.state(), TaskState::TaskRunning);
    // Framework -> executor -> framework.
    let mut m = Event {
        message: Some(event::Message {
            framework_id: FrameworkId { value: "fw".into() },
            executor_id: ExecutorId { value: "grp".into() },
            data: b"ping".to_vec(),
        }),
        ..Default::default()
    };
    m.set_type(event::Type::Message);
    master.send(m);
    let back = master.wait_for("MESSAGE", |m| m.calls().into_iter().find_map(|c| c.message)).await;
    assert_eq!(back.data, b"echo:ping");
    assert_eq!(back.executor_id.value, "grp");
    // SHUTDOWN_FRAMEWORK: the executor goes away.
    let mut s = Event {
        shutdown_framework: Some(event::ShutdownFramework {
            framework_id: FrameworkId { value: "fw".into() },
        }),
        ..Default::default()
    };
    s.set_type(event::Type::ShutdownFramework);
    master.send(s);
    master
        .wait_for("EXECUTOR_EXITED", |m| m.calls().into_iter().find_map(|c| c.executor_exited))
        .await;
    for _ in 0..100 {
        if agent_state(agent.addr).await["frameworks"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent_state(agent.addr).await["frameworks"], serde_json::json!([]));
    agent.stop().await;
}

#[tokio::test]
async fn update_framework_resends_pending_updates_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(false).await;
    // Retries an hour apart: an update sent again within the fake master's deadline (20 s) can
    // only have been sent for the UPDATE_FRAMEWORK.
    let agent = start(&master, dir.path(), |c| {
        c.update_retry = km_mesos_agent::updates::RetryPolicy {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        };
    })
    .await;
    master.subscribed(1).await;
    let fw = framework("fw", false);
    master.send(run_task(&fw, command_task("u", "true")));
    let first = master.update_of("u", 0).await;
    let mut e = Event {
        update_framework: Some(event::UpdateFramework { framework_info: fw.clone() }),
        ..Default::default()
    };
    e.set_type(event::Type::UpdateFramework);
    master.send(e);
    let again = master.update_of("u", 1).await;
    assert_eq!(again.uuid, first.uuid);
    agent.stop().await;
}

#[tokio::test]
async fn executor_that_never_subscribes_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let master = FakeMaster::start(true).await;
    let agent = start(&master, dir.path(), |c| {
        c.executor_registration_timeout = Duration::from_millis(500)
    })
    .await;
    master.subscribed(1).await;
    let mut lazy = executor_info("lazy");
    lazy.command = Some(CommandInfo { value: Some("sleep 30".into()), ..Default::default() });
    master.send(run_task(&framework("fw", false), custom_task("late", lazy)));
    let failed = master.update_of("late", 0).await;
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), task_status::Reason::ExecutorRegistrationTimeout);
    master
        .wait_for("EXECUTOR_EXITED", |m| m.calls().into_iter().find_map(|c| c.executor_exited))
        .await;
    agent.stop().await;
}

// ----------------------------------------------------------------------------
// The executor process (this binary re-run by the agent).

#[tokio::test]
#[ignore = "run by the agent as a custom executor"]
async fn executor_process() {
    use km_mesos::executor::{Event as DriverEvent, Executor, ExecutorEnv};
    use km_mesos::v1::executor::event::Type as T;
    if std::env::var("KM_TEST_EXECUTOR").as_deref() != Ok("1") {
        return;
    }
    let env = ExecutorEnv::from_env().unwrap();
    let sandbox = env.directory.clone();
    let mut dump: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MESOS_") || k.starts_with("LIBPROCESS"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    dump.sort();
    std::fs::write(sandbox.join("env.txt"), dump.join("\n") + "\n").unwrap();
    let (exec, mut events) = Executor::start(env, ContentType::Protobuf).unwrap();
    let status = |task: &TaskId, state: TaskState| {
        let mut s = TaskStatus { task_id: task.clone(), ..Default::default() };
        s.set_state(state);
        s
    };
    while let Some(ev) = events.recv().await {
        let DriverEvent::Mesos(ev) = ev else { continue };
        match ev.r#type() {
            T::Launch => {
                let task = ev.launch.unwrap().task.task_id;
                let _ = exec.update(status(&task, TaskState::TaskRunning)).await;
            }
            T::LaunchGroup => {
                for task in ev.launch_group.unwrap().task_group.tasks {
                    let _ = exec.update(status(&task.task_id, TaskState::TaskRunning)).await;
                }
            }
            T::Message => {
                let mut data = b"echo:".to_vec();
                data.extend(ev.message.unwrap().data);
                let _ = exec.message(data).await;
            }
            T::Acknowledged => {
                let ack = ev.acknowledged.unwrap();
                std::fs::write(sandbox.join(format!("acked-{}", ack.task_id.value)), "ok").unwrap();
            }
            T::Kill => {
                let task = ev.kill.unwrap().task_id;
                let _ = exec.update(status(&task, TaskState::TaskKilled)).await;
            }
            T::Shutdown => std::process::exit(0),
            _ => {}
        }
    }
}
