//! The fixture language: a tiny line format for configs, known agents, offers and pods, and
//! the `check` helper that runs a fixture and compares the rendered plan with the block after
//! `== plan` (re-bless with `UPDATE_EXPECT=1`).
//!
//! ```text
//! # what the fixture shows (comment lines start with #)
//! config strategy=spread:rack executor=km-1 executor-cpus=0.5 executor-mem=64
//! agent a9 host=h9 cpus=64 mem=65536 ports=8000-9000 attr=rack:r9 executors=km-0
//! offer o1 agent=a1 host=h1 cpus=4 cpus(prod)=2 mem=4096 ports=31000-31010 attr=rack:r1
//! pod web-1 cpu=1 mem=128Mi port=8080 select=@rack=r1 roles=*,prod prio=10 created=5
//! == plan
//! (expected output of Plan's Display)
//! ```
//!
//! Tokens (`@name` is short for the label `k8s.mesosphere.io/attribute-name`):
//! - config: `strategy=binpack|spread|spread:ATTR`, `basis=requests|limits`, `default-cpu=`,
//!   `default-mem=`, `executor=ID`, `executor-cpus=`, `executor-mem=`,
//!   `upgrade=exclusive|side-by-side`, `framework-roles=a,b`, `default-roles=a,b`,
//!   `mapping=wildcard|fixed`, `public-role=ROLE|none`, `public-attr=NAME[:VALUE]`, `now=SECS`.
//! - offer/agent resources: `cpus=`, `mem=`, `disk=`, `gpus=`, `ports=A-B,C`, each optionally
//!   with a role `cpus(prod)=`; `alloc=ROLE` (allocation role of every resource), `attr=K:V`,
//!   `executors=ID,ID`, `maintenance`, `host=`, `agent=` (offers only).
//! - pod: `ns=`, `cpu=`, `mem=`, `disk=`, `gpu=` (requests), `limit-cpu=`, `limit-mem=`,
//!   `overhead-cpu=`, `overhead-mem=`, `container=NAME` / `init=NAME` / `sidecar=NAME` (the
//!   following tokens describe that container), `port=N` (hostPort N), `port=C:H` (container
//!   port C, hostPort H; `H` = 0 for wildcard), `node=`, `select=KEY=VALUE`,
//!   `affinity=KEY:Op[:v,v]&KEY:Op…` (one term; several `affinity=` are ORed), `roles=`,
//!   `mapping=`, `prio=`, `created=SECS`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use km_offer_matcher::{
    Attribute, Config, ExecutorUpgrade, KnownAgent, Matcher, Offer, PortMapping, Ranges, Resource,
    ResourceBasis, Scalar, ScalarKind, Strategy, Unavailability, Value,
};

const MARKER: &str = "== plan";

/// A parsed fixture.
pub(crate) struct Fixture {
    pub(crate) config: Config,
    pub(crate) now: SystemTime,
    pub(crate) known: Vec<KnownAgent>,
    pub(crate) offers: Vec<Offer>,
    pub(crate) pods: Vec<Pod>,
}

fn expand(key: &str) -> String {
    match key.strip_prefix('@') {
        Some(attr) => format!("k8s.mesosphere.io/attribute-{attr}"),
        None => key.to_owned(),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn num(v: &str, line: usize) -> f64 {
    v.parse().unwrap_or_else(|_| panic!("line {line}: {v:?} is not a number"))
}

fn parse_config(tokens: &[&str], line: usize, config: &mut Config, now: &mut SystemTime) {
    for t in tokens {
        let (k, v) =
            t.split_once('=').unwrap_or_else(|| panic!("line {line}: {t:?} needs key=value"));
        match k {
            "strategy" => {
                config.strategy = match v {
                    "binpack" => Strategy::Binpack,
                    "spread" => Strategy::Spread { by: None },
                    _ => match v.strip_prefix("spread:") {
                        Some(a) => Strategy::Spread { by: Some(a.to_owned()) },
                        None => panic!("line {line}: strategy {v:?}"),
                    },
                }
            }
            "basis" => {
                config.basis =
                    if v == "limits" { ResourceBasis::Limits } else { ResourceBasis::Requests };
            }
            "default-cpu" => config.default_container_cpus = Scalar::from_f64(num(v, line)),
            "default-mem" => config.default_container_mem = Scalar::from_f64(num(v, line)),
            "executor" => config.executor.id = v.to_owned(),
            "executor-cpus" => {
                config.executor.resources.set(ScalarKind::Cpus, Scalar::from_f64(num(v, line)))
            }
            "executor-mem" => {
                config.executor.resources.set(ScalarKind::Mem, Scalar::from_f64(num(v, line)))
            }
            "upgrade" => {
                config.executor.upgrade = if v == "side-by-side" {
                    ExecutorUpgrade::SideBySide
                } else {
                    ExecutorUpgrade::Exclusive
                };
            }
            "framework-roles" => config.framework_roles = list(v),
            "default-roles" => config.default_pod_roles = list(v),
            "mapping" => {
                config.default_port_mapping =
                    if v == "fixed" { PortMapping::Fixed } else { PortMapping::Wildcard };
            }
            "public-role" => config.public_agents.role = (v != "none").then(|| v.to_owned()),
            "public-attr" => {
                config.public_agents.attribute = Some(match v.split_once(':') {
                    Some((n, val)) => (n.to_owned(), Some(val.to_owned())),
                    None => (v.to_owned(), None),
                });
            }
            "now" => *now = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(num(v, line)),
            _ => panic!("line {line}: unknown config key {k:?}"),
        }
    }
}

/// Resources, attributes, executors and flags shared by `offer` and `agent` lines.
#[derive(Default)]
struct AgentTokens {
    agent: Option<String>,
    host: Option<String>,
    resources: Vec<Resource>,
    attributes: Vec<Attribute>,
    executors: Vec<String>,
    maintenance: bool,
}

fn parse_agent_tokens(tokens: &[&str], line: usize) -> AgentTokens {
    let mut out = AgentTokens::default();
    let mut alloc: Option<String> = None;
    for t in tokens {
        if *t == "maintenance" {
            out.maintenance = true;
            continue;
        }
        let (k, v) =
            t.split_once('=').unwrap_or_else(|| panic!("line {line}: {t:?} needs key=value"));
        let (name, role) = match k.split_once('(') {
            Some((n, r)) => (n, Some(r.trim_end_matches(')'))),
            None => (k, None),
        };
        let resource = match name {
            "agent" => {
                out.agent = Some(v.to_owned());
                None
            }
            "host" => {
                out.host = Some(v.to_owned());
                None
            }
            "alloc" => {
                alloc = Some(v.to_owned());
                None
            }
            "attr" => {
                let (an, av) = v
                    .split_once(':')
                    .unwrap_or_else(|| panic!("line {line}: attr needs name:value"));
                out.attributes.push(Attribute::text(an, av));
                None
            }
            "executors" => {
                out.executors = list(v);
                None
            }
            "cpus" | "mem" | "disk" | "gpus" => {
                Some(Resource::scalar(name.to_owned(), num(v, line)))
            }
            "ports" => {
                let pairs = v.split(',').map(|r| match r.split_once('-') {
                    Some((a, b)) => (num(a, line) as u64, num(b, line) as u64),
                    None => (num(r, line) as u64, num(r, line) as u64),
                });
                Some(Resource::with_value("ports", Value::Ranges(Ranges::from_pairs(pairs))))
            }
            _ => panic!("line {line}: unknown offer key {k:?}"),
        };
        if let Some(mut r) = resource {
            if let Some(role) = role.filter(|r| *r != "*") {
                r = r.reserved_for(role);
            }
            out.resources.push(r);
        }
    }
    if let Some(a) = alloc {
        for r in &mut out.resources {
            r.allocation_role = Some(a.clone());
        }
    }
    out
}

fn q(v: &str) -> Quantity {
    Quantity(v.to_owned())
}

fn set(map: &mut Option<BTreeMap<String, Quantity>>, key: &str, v: &str) {
    map.get_or_insert_with(BTreeMap::new).insert(key.to_owned(), q(v));
}

fn container(name: &str) -> Container {
    Container { name: name.to_owned(), ..Container::default() }
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Main(usize),
    Init(usize),
}

fn cur(spec: &mut PodSpec, slot: Slot) -> &mut Container {
    match slot {
        Slot::Main(i) => &mut spec.containers[i],
        Slot::Init(i) => &mut spec.init_containers.get_or_insert_with(Vec::new)[i],
    }
}

fn res(spec: &mut PodSpec, slot: Slot) -> &mut ResourceRequirements {
    cur(spec, slot).resources.get_or_insert_with(ResourceRequirements::default)
}

fn parse_pod(name: &str, tokens: &[&str], line: usize) -> Pod {
    let mut meta = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some("default".to_owned()),
        ..Default::default()
    };
    let mut spec = PodSpec { containers: vec![container("main")], ..Default::default() };
    let mut slot = Slot::Main(0);
    let mut terms: Vec<NodeSelectorTerm> = Vec::new();
    for t in tokens {
        let (k, v) =
            t.split_once('=').unwrap_or_else(|| panic!("line {line}: {t:?} needs key=value"));
        match k {
            "ns" => meta.namespace = Some(v.to_owned()),
            "cpu" => set(&mut res(&mut spec, slot).requests, "cpu", v),
            "mem" => set(&mut res(&mut spec, slot).requests, "memory", v),
            "disk" => set(&mut res(&mut spec, slot).requests, "ephemeral-storage", v),
            "gpu" => set(&mut res(&mut spec, slot).requests, "nvidia.com/gpu", v),
            "limit-cpu" => set(&mut res(&mut spec, slot).limits, "cpu", v),
            "limit-mem" => set(&mut res(&mut spec, slot).limits, "memory", v),
            "overhead-cpu" => set(&mut spec.overhead, "cpu", v),
            "overhead-mem" => set(&mut spec.overhead, "memory", v),
            "container" => {
                spec.containers.push(container(v));
                slot = Slot::Main(spec.containers.len() - 1);
            }
            "init" | "sidecar" => {
                let mut c = container(v);
                if k == "sidecar" {
                    c.restart_policy = Some("Always".to_owned());
                }
                let inits = spec.init_containers.get_or_insert_with(Vec::new);
                inits.push(c);
                slot = Slot::Init(inits.len() - 1);
            }
            "port" => {
                let (cp, hp) = match v.split_once(':') {
                    Some((c, h)) => (num(c, line) as i32, num(h, line) as i32),
                    None => (num(v, line) as i32, num(v, line) as i32),
                };
                cur(&mut spec, slot).ports.get_or_insert_with(Vec::new).push(ContainerPort {
                    container_port: cp,
                    host_port: Some(hp),
                    ..Default::default()
                });
            }
            "node" => spec.node_name = Some(v.to_owned()),
            "select" => {
                let (sk, sv) = v
                    .split_once('=')
                    .unwrap_or_else(|| panic!("line {line}: select needs key=value"));
                spec.node_selector
                    .get_or_insert_with(BTreeMap::new)
                    .insert(expand(sk), sv.to_owned());
            }
            "affinity" => {
                let exprs = v
                    .split('&')
                    .filter(|e| !e.is_empty())
                    .map(|e| {
                        let mut parts = e.splitn(3, ':');
                        let key = expand(parts.next().unwrap_or_default());
                        let operator = parts
                            .next()
                            .unwrap_or_else(|| panic!("line {line}: {e:?} needs KEY:Op"))
                            .to_owned();
                        let values = parts.next().map(list);
                        NodeSelectorRequirement { key, operator, values }
                    })
                    .collect();
                terms.push(NodeSelectorTerm { match_expressions: Some(exprs), match_fields: None });
            }
            "roles" => {
                meta.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert("k8s.mesosphere.io/roles".to_owned(), v.to_owned());
            }
            "mapping" => {
                meta.labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("k8s.mesosphere.io/portMapping".to_owned(), v.to_owned());
            }
            "prio" => spec.priority = Some(num(v, line) as i32),
            "created" => {
                let ts = k8s_openapi::jiff::Timestamp::from_second(num(v, line) as i64)
                    .unwrap_or_else(|e| panic!("line {line}: {e}"));
                meta.creation_timestamp = Some(Time(ts));
            }
            _ => panic!("line {line}: unknown pod key {k:?}"),
        }
    }
    // Containers without any resource field keep `resources: None`.
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if c.resources.as_ref().is_some_and(|r| r.requests.is_none() && r.limits.is_none()) {
            c.resources = None;
        }
    }
    if !terms.is_empty() {
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Pod { metadata: meta, spec: Some(spec), status: None }
}

/// Parses the input part of a fixture (everything before `== plan`).
pub(crate) fn parse(input: &str) -> Fixture {
    let mut config = Config::default();
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (mut known, mut offers, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for (i, raw) in input.lines().enumerate() {
        let line = i + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        match tokens.as_slice() {
            ["config", rest @ ..] => parse_config(rest, line, &mut config, &mut now),
            ["offer", id, rest @ ..] => {
                let t = parse_agent_tokens(rest, line);
                let agent = t.agent.unwrap_or_else(|| panic!("line {line}: offer needs agent="));
                let host = t.host.unwrap_or_else(|| agent.replacen('a', "h", 1));
                offers.push(Offer {
                    id: (*id).to_owned(),
                    agent_id: agent,
                    hostname: host,
                    resources: t.resources,
                    attributes: t.attributes,
                    executor_ids: t.executors,
                    unavailability: t.maintenance.then_some(Unavailability {
                        start: SystemTime::UNIX_EPOCH,
                        duration: None,
                    }),
                });
            }
            ["agent", id, rest @ ..] => {
                let t = parse_agent_tokens(rest, line);
                known.push(KnownAgent {
                    agent_id: (*id).to_owned(),
                    hostname: t.host.unwrap_or_else(|| id.replacen('a', "h", 1)),
                    attributes: t.attributes,
                    capacity: t.resources,
                    executor_ids: t.executors,
                });
            }
            ["pod", name, rest @ ..] => pods.push(parse_pod(name, rest, line)),
            _ => panic!("line {line}: cannot parse {text:?}"),
        }
    }
    Fixture { config, now, known, offers, pods }
}

/// Runs a fixture and renders its plan.
pub(crate) fn run(input: &str) -> String {
    let f = parse(input);
    let matcher = Matcher::new(f.config).unwrap_or_else(|e| panic!("bad fixture config: {e}"));
    matcher.plan_pods(&f.pods, &f.offers, &f.known, f.now).to_string()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// Runs `tests/fixtures/<name>.txt` and compares with its `== plan` block; with
/// `UPDATE_EXPECT=1` rewrites the block instead.
#[track_caller]
pub(crate) fn check(name: &str) {
    let path = dir().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (input, expected) = match text.find(&format!("\n{MARKER}\n")) {
        Some(i) => (&text[..=i], &text[i + MARKER.len() + 2..]),
        None => (text.as_str(), ""),
    };
    let actual = run(input);
    if actual == expected {
        return;
    }
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let mut out = input.to_owned();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(MARKER);
        out.push('\n');
        out.push_str(&actual);
        std::fs::write(&path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    panic!(
        "fixture {name} differs (re-bless with UPDATE_EXPECT=1)\n--- expected\n{expected}--- actual\n{actual}---"
    );
}

/// Every fixture file on disk.
pub(crate) fn all_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name().to_str().and_then(|n| n.strip_suffix(".txt")).map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
