//! `MesosCloud` against a real `km mesos-master` and a real `km mesos-agent`,
//! both run in-process through their libraries, plus one simulated agent
//! of the master on which a framework launches km's executor.

use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use km_cloud_provider::{
    AgentChange, AgentWatch, CloudConfig, CloudProvider, Instance, MesosCloud, NodeAddressType,
};
use km_mesos::v1;
use km_mesos::v1::scheduler::event;

/// Limit of every wait in this test.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
struct MasterCli {
    #[command(flatten)]
    args: km_mesos_master::Args,
}

/// Starts `km mesos-master` (any free port) with one simulated agent.
async fn start_master() -> (String, km_mesos_master::Running) {
    let cli = MasterCli::try_parse_from([
        "km-mesos-master",
        "--ip=127.0.0.1",
        "--port=0",
        "--cluster=km-test",
        "--allocation_interval=100ms",
        "--simulate-agents=1",
        "--simulate-agent-resources=cpus:3;mem:3072;disk:1000;ports:[31000-31100]",
    ])
    .unwrap();
    let config = km_mesos_master::Config::from_args(&cli.args).unwrap();
    let master = km_mesos_master::start(config).await.expect("km mesos-master starts");
    (format!("http://{}", master.addr()), master)
}

fn agent_config(master: &str, work_dir: &std::path::Path) -> km_mesos_agent::Config {
    km_mesos_agent::Config {
        master: master.to_owned(),
        ip: "127.0.0.1".into(),
        port: 0,
        hostname: "localhost".into(),
        resources: km_mesos_agent::flags::parse_resources(
            "cpus:2;mem:1024;disk:1000;ports:[32000-32010]",
        )
        .unwrap(),
        attributes: vec![],
        work_dir: work_dir.to_owned(),
        executor_shutdown_grace_period: Duration::from_secs(1),
        executor_registration_timeout: Duration::from_secs(60),
        recovery_timeout: Duration::from_secs(10),
        executor_reregistration_timeout: Duration::from_secs(2),
        fetcher_max_size: 1 << 30,
        fetcher_cache_size: 1 << 30,
        fetcher_cache_dir: work_dir.join("fetch"),
        update_retry: km_mesos_agent::updates::RetryPolicy::default(),
        master_backoff_max: Duration::from_millis(500),
    }
}

async fn next_change(watch: &mut AgentWatch) -> AgentChange {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("an agent change in time")
        .expect("the watch goes on")
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value }),
        ..Default::default()
    }
}

/// Subscribes a framework and launches one task with km's executor on the
/// simulated agent; returns once the task runs. The framework lives (and
/// its executor with it) as long as both returned halves do.
async fn launch_km_executor(
    master: &str,
) -> (km_mesos::scheduler::Scheduler, km_mesos::scheduler::Events) {
    use km_mesos::scheduler::{Config, Event, Scheduler};
    let info = v1::FrameworkInfo {
        user: "root".into(),
        name: "km-cloud-provider-test".into(),
        ..Default::default()
    };
    let (sched, mut events) = Scheduler::start(Config::new(master.parse().unwrap(), info)).unwrap();
    let task_id = v1::TaskId { value: "kubelet-task".into() };
    let mut launched = false;
    loop {
        let Event::Mesos(e) = next_event(&mut events).await else { continue };
        match e.r#type() {
            event::Type::Offers => {
                for offer in e.offers.map(|o| o.offers).unwrap_or_default() {
                    if launched || !offer.hostname.starts_with("sim-agent-") {
                        sched.decline(vec![offer.id], None).await.unwrap();
                        continue;
                    }
                    let task = v1::TaskInfo {
                        name: "kubelet".into(),
                        task_id: task_id.clone(),
                        agent_id: offer.agent_id.clone(),
                        resources: vec![scalar("cpus", 0.25), scalar("mem", 64.0)],
                        executor: Some(v1::ExecutorInfo {
                            executor_id: v1::ExecutorId { value: "abc_k8sm-executor".into() },
                            name: Some(km_cloud_provider::KM_EXECUTOR_NAME.into()),
                            command: Some(v1::CommandInfo {
                                value: Some("./km executor".into()),
                                ..Default::default()
                            }),
                            resources: vec![scalar("cpus", 0.25), scalar("mem", 64.0)],
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let mut op = v1::offer::Operation {
                        launch: Some(v1::offer::operation::Launch { task_infos: vec![task] }),
                        ..Default::default()
                    };
                    op.set_type(v1::offer::operation::Type::Launch);
                    sched.accept(vec![offer.id], vec![op], None).await.unwrap();
                    launched = true;
                }
            }
            event::Type::Update => {
                let Some(status) = e.update.map(|u| u.status) else { continue };
                if status.uuid.is_some() {
                    sched.acknowledge(&status).await.unwrap();
                }
                if status.task_id == task_id && status.state() == v1::TaskState::TaskRunning {
                    break;
                }
                assert!(
                    !matches!(
                        status.state(),
                        v1::TaskState::TaskError
                            | v1::TaskState::TaskFailed
                            | v1::TaskState::TaskLost
                    ),
                    "the task did not start: {status:?}"
                );
            }
            _ => {}
        }
    }
    (sched, events)
}

async fn next_event(events: &mut km_mesos::scheduler::Events) -> km_mesos::scheduler::Event {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("a scheduler event in time")
        .expect("the scheduler goes on")
}

fn by_host<'a>(instances: &'a [Instance], hostname: &str) -> &'a Instance {
    instances
        .iter()
        .find(|i| i.hostname == hostname)
        .unwrap_or_else(|| panic!("no instance {hostname} in {instances:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_a_km_master_are_instances() {
    let (master, running) = start_master().await;
    let mut config = CloudConfig::parse(&format!("[mesos-cloud]\nmesos-master = {master}\n"))
        .expect("config parses");
    config.state_cache_ttl = Duration::ZERO;
    let cloud = MesosCloud::new(config).unwrap();
    let provider: &dyn CloudProvider = &cloud;

    // The operator stream tells when the real agent has registered.
    let mut watch = cloud.watch();
    assert_eq!(next_change(&mut watch).await, AgentChange::Resynced);
    let work_dir = tempfile::tempdir().unwrap();
    let agent = km_mesos_agent::start(agent_config(&master, work_dir.path())).await.unwrap();
    let agent_id = loop {
        if let AgentChange::Added { agent_id, hostname } = next_change(&mut watch).await
            && hostname == "localhost"
        {
            break agent_id;
        }
    };

    let instances = provider.instances().await.unwrap();
    let real = by_host(&instances, "localhost");
    assert_eq!(real.agent_id, agent_id);
    assert_eq!((real.cpus, real.mem_mb, real.active), (2.0, 1024.0, true));
    // km's master writes the hostname into the PID; the IP comes from DNS.
    let ip = real.addresses.iter().find(|a| a.type_ == NodeAddressType::InternalIp);
    assert!(ip.is_some_and(|a| a.address == "127.0.0.1"), "{:?}", real.addresses);
    assert_eq!(real.addresses.last().map(|a| a.address.as_str()), Some("localhost"));
    let simulated = by_host(&instances, "sim-agent-0");
    assert_eq!((simulated.cpus, simulated.mem_mb, simulated.active), (3.0, 3072.0, true));
    assert!(!real.has_km_executor && !simulated.has_km_executor);
    assert_eq!(provider.cluster_name().await.unwrap(), "km-test");
    assert_eq!(provider.instance("nobody.example.com").await.unwrap(), None);
    assert_eq!(
        provider.node_addresses("localhost").await.unwrap(),
        real.addresses,
        "node_addresses agrees with the listing"
    );

    // A framework runs km's executor on the simulated agent.
    let framework = launch_km_executor(&master).await;
    let instances = provider.instances().await.unwrap();
    assert!(by_host(&instances, "sim-agent-0").has_km_executor);
    assert!(!by_host(&instances, "localhost").has_km_executor);
    let without: Vec<_> = provider
        .instances_without_executor()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.hostname)
        .collect();
    assert_eq!(without, ["localhost"]);

    // The agent goes away: the master still knows it, as inactive.
    agent.stop().await;
    let inactive = async {
        loop {
            let i = provider.instance("localhost").await.unwrap().expect("still known");
            if !i.active {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let gone = tokio::time::timeout(DEADLINE, inactive).await.expect("agent inactive in time");
    assert_eq!(gone.agent_id, agent_id);
    assert!(provider.instance("sim-agent-0").await.unwrap().is_some_and(|i| i.active));
    // Stopped as on SIGTERM, with the framework's event stream and the operator stream of
    // `watch` still open.
    tokio::time::timeout(DEADLINE, running.stop())
        .await
        .expect("the master stops in time")
        .expect("the master stops cleanly");
    drop(framework);
}
