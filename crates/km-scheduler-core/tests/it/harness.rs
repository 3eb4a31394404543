//! Builders for pods and offers, and a driver that feeds a core and collects its effects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use km_offer_matcher::{Attribute, Offer, Resource};
use km_scheduler_core::{Config, Core, Effect, Input, Now, TaskState, TaskUpdate};

pub const EXEC: &str = "exec-1_k8sm-executor";

pub fn config() -> Config {
    let mut c = Config { seed: 42, ..Config::default() };
    c.matcher.executor.id = EXEC.to_owned();
    c
}

pub fn t(secs: f64) -> Now {
    Now::at(Duration::from_secs_f64(secs))
}

/// A pod asking `cpu_milli` cpus and 64 MiB, uid `uid-<name>`.
pub fn pod(name: &str, cpu_milli: u32) -> Pod {
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_owned(), Quantity(format!("{cpu_milli}m")));
    requests.insert("memory".to_owned(), Quantity("64Mi".to_owned()));
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            )),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some("busybox".to_owned()),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

pub fn with_host_port(mut p: Pod, port: i32) -> Pod {
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.ports = Some(vec![ContainerPort {
        container_port: 80,
        host_port: Some(port),
        ..Default::default()
    }]);
    p
}

pub fn with_selector(mut p: Pod, key: &str, value: &str) -> Pod {
    p.spec.as_mut().unwrap().node_selector = Some([(key.to_owned(), value.to_owned())].into());
    p
}

pub fn offer(id: &str, agent: &str, cpus: f64) -> Offer {
    let mut o = Offer::new(
        id,
        agent,
        format!("host-{agent}"),
        vec![
            Resource::scalar("cpus", cpus),
            Resource::scalar("mem", 16384.0),
            Resource::ranges("ports", [(31000, 32000)]),
        ],
    );
    o.attributes = vec![Attribute::text("rack", format!("r-{agent}"))];
    o
}

pub fn update(task: &str, agent: &str, state: TaskState) -> TaskUpdate {
    let mut u = TaskUpdate::new(task, state);
    u.agent_id = Some(agent.to_owned());
    u.uuid = Some(vec![1, 2, 3]);
    u
}

/// A core plus what it said.
pub struct Driver {
    pub core: Core,
    pub effects: Vec<Effect>,
}

impl Driver {
    pub fn new(cfg: Config) -> Driver {
        Driver { core: Core::new(cfg).expect("valid config"), effects: Vec::new() }
    }

    /// Subscribed and synced with the given pods, at time 0.
    pub fn started(pods: &[Pod]) -> Driver {
        let mut d = Driver::new(config());
        d.feed(Input::Subscribed { framework_id: "fw".into() }, t(0.0));
        d.feed(Input::PodResyncStarted, t(0.0));
        for p in pods {
            d.feed(Input::PodApplied(Arc::new(p.clone())), t(0.0));
        }
        d.feed(Input::PodResyncDone, t(0.0));
        d.pass_barrier(t(0.0));
        d.take();
        d
    }

    /// Answers the reconciliation barrier a new core sets up before its first plan.
    pub fn pass_barrier(&mut self, now: Now) {
        self.tick(now);
        let sentinel = self.effects.iter().find_map(|e| match e {
            Effect::Reconcile { tasks }
                if tasks.len() == 1 && tasks[0].0.starts_with("km-reconciliation-barrier-") =>
            {
                Some(tasks[0].0.clone())
            }
            _ => None,
        });
        let sentinel = sentinel.expect("a barrier reconciliation");
        let mut u = TaskUpdate::new(sentinel, TaskState::Unknown);
        u.reason = Some("REASON_RECONCILIATION".into());
        self.feed(Input::Update(u), now);
    }

    pub fn feed(&mut self, input: Input, now: Now) {
        self.core.handle(input, now);
        self.effects.extend(self.core.take_effects());
    }

    pub fn plan(&mut self, now: Now) {
        self.core.plan(now);
        self.effects.extend(self.core.take_effects());
    }

    pub fn tick(&mut self, now: Now) {
        self.core.tick(now);
        self.core.plan(now);
        self.effects.extend(self.core.take_effects());
    }

    pub fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}

pub fn accepts(effects: &[Effect]) -> Vec<&km_scheduler_core::Accept> {
    effects.iter().filter_map(|e| if let Effect::Accept(a) = e { Some(a) } else { None }).collect()
}

pub fn task_ids(effects: &[Effect]) -> Vec<String> {
    accepts(effects).iter().flat_map(|a| a.tasks.iter().map(|t| t.task_id.clone())).collect()
}
