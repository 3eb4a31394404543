//! Property tests over random clusters and pods: never over-commit, never hand out a port
//! twice, placed + remaining = offered, all-or-nothing per pod, every constraint honoured,
//! the executor paid once per agent, explanations cover every agent, input order of offers
//! does not change the plan, and borrowed demands plan as owned ones do. Then binpack against
//! spread on workloads shaped like scenario M (see the section below).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use km_offer_matcher::constraints::label;
use km_offer_matcher::offer::agent_labels;
use km_offer_matcher::{
    Attribute, Config, ExecutorUpgrade, HostPort, KnownAgent, Matcher, NodeAffinity, Offer,
    Operator, Outcome, PodDemand, PodKey, PortRequest, Ranges, Requirement, Reservation, Resource,
    Scalar, ScalarKind, Scalars, Strategy as Packing, Term, Unavailability, Value,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const ROLES: [&str; 3] = ["*", "prod", "slave_public"];

#[derive(Debug, Clone)]
struct Case {
    config: Config,
    offers: Vec<Offer>,
    pods: Vec<PodDemand>,
}

fn resource(name: &'static str, value: Value, role: &str, alloc: &Option<String>) -> Resource {
    let mut r = Resource::with_value(name, value);
    if role != "*" {
        r.reservations.push(Reservation::new(role));
    }
    r.allocation_role = alloc.clone();
    r
}

prop_compose! {
    fn offer_strategy(agent: usize, n: usize)(
        cpus in prop::collection::vec((0usize..3, 0i64..4000), 1..3),
        mem in prop::collection::vec((0usize..2, 0i64..4000), 1..3),
        ports in prop::collection::vec((0usize..2, 0u64..3), 0..3),
        alloc in prop::option::weighted(0.2, prop::sample::select(vec!["prod".to_owned(), "dev".to_owned(), "slave_public".to_owned()])),
        rack in 0u8..3,
        executors in prop::sample::select(vec![vec![], vec!["km-1".to_owned()], vec!["km-0".to_owned()], vec!["km-0".to_owned(), "km-1".to_owned()]]),
        maintenance in prop::bool::weighted(0.1),
        host_suffix in prop::bool::weighted(0.1),
    ) -> Offer {
        let mut resources = Vec::new();
        for (r, v) in cpus {
            resources.push(resource("cpus", Value::Scalar(Scalar::from_milli(v)), ROLES[r], &alloc));
        }
        for (r, v) in mem {
            resources.push(resource("mem", Value::Scalar(Scalar::from_milli(v * 100)), ROLES[r], &alloc));
        }
        // Disjoint windows per offer and range: Mesos never offers a port twice.
        for (i, (r, len)) in ports.into_iter().enumerate() {
            let b = 30 + (n as u64 * 3 + i as u64) * 3;
            resources.push(resource("ports", Value::Ranges(Ranges::from_pairs([(b, b + len)])), ROLES[r], &alloc));
        }
        resources.push(Resource::with_value("network", Value::Set(BTreeSet::from(["a".to_owned()]))));
        let mut o = Offer::new(format!("o{agent}-{n}"), format!("a{agent}"), format!("h{agent}"), resources);
        if host_suffix && n > 0 {
            // Different hostname in a second offer of the same agent: the first one wins.
            o.hostname = format!("h{agent}-other");
        }
        o.attributes = vec![Attribute::text("rack", format!("r{rack}"))];
        o.executor_ids = executors;
        if maintenance {
            o.unavailability = Some(Unavailability { start: SystemTime::UNIX_EPOCH, duration: None });
        }
        o
    }
}

fn offers_strategy(max_agents: usize) -> impl Strategy<Value = Vec<Offer>> {
    prop::collection::vec(1usize..3, 0..max_agents).prop_flat_map(|per_agent| {
        let strategies: Vec<_> = per_agent
            .iter()
            .enumerate()
            .flat_map(|(a, &n)| (0..n).map(move |i| offer_strategy(a, i)))
            .collect();
        strategies
    })
}

prop_compose! {
    fn pod_strategy()(
        id in 0u32..1000,
        prio in 0i32..3,
        created in 0u64..5,
        cpus in 0i64..2500,
        mem in 0i64..2000,
        fixed in prop::collection::btree_set(30u64..40, 0..3),
        wildcard in 0usize..3,
        node in prop::option::weighted(0.1, 0usize..5),
        rack in prop::option::weighted(0.2, 0u8..4),
        affinity in prop::option::weighted(0.2, (0u8..3, any::<bool>())),
        roles in prop::sample::select(vec![vec!["*"], vec!["prod"], vec!["*", "prod"], vec!["prod", "*"], vec!["slave_public"], vec!["dev"]]),
    ) -> PodDemand {
        let mut d = PodDemand::new(PodKey::new("ns", format!("p{id}")), Scalars::cpus_mem(Scalar::from_milli(cpus), Scalar::from_milli(mem * 100)));
        d.priority = prio;
        d.created = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(created));
        for p in fixed {
            d.ports.push(PortRequest { container: "c".into(), container_port: 80, protocol: "TCP".into(), name: None, host_port: HostPort::Fixed(p) });
        }
        for _ in 0..wildcard {
            d.ports.push(PortRequest { container: "c".into(), container_port: 81, protocol: "TCP".into(), name: None, host_port: HostPort::Any });
        }
        d.node_name = node.map(|n| format!("h{n}"));
        if let Some(r) = rack {
            d.node_selector = vec![("k8s.mesosphere.io/attribute-rack".into(), format!("r{r}"))];
        }
        if let Some((r, not)) = affinity {
            let values = vec![format!("r{r}")];
            let op = if not { Operator::NotIn(values) } else { Operator::In(values) };
            d.affinity = Some(NodeAffinity { terms: vec![Term { requirements: vec![Requirement { key: "k8s.mesosphere.io/attribute-rack".into(), op }] }] });
        }
        d.roles = roles.into_iter().map(str::to_owned).collect();
        d.wants_public = d.roles.iter().any(|r| r == "slave_public");
        d
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    sized_case(5, 25)
}

fn sized_case(max_agents: usize, max_pods: usize) -> impl Strategy<Value = Case> {
    (
        offers_strategy(max_agents),
        prop::collection::vec(pod_strategy(), 0..max_pods),
        prop::sample::select(vec![
            Packing::Binpack,
            Packing::Spread { by: None },
            Packing::Spread { by: Some("rack".to_owned()) },
        ]),
        (0i64..1000, 0i64..500),
        any::<bool>(),
    )
        .prop_map(|(offers, pods, strategy, (ecpu, emem), side_by_side)| {
            let mut config = Config {
                framework_roles: vec![
                    "*".into(),
                    "prod".into(),
                    "slave_public".into(),
                    "dev".into(),
                ],
                strategy,
                ..Config::default()
            };
            config.executor.id = "km-1".into();
            config.executor.resources =
                Scalars::cpus_mem(Scalar::from_milli(ecpu), Scalar::from_milli(emem * 100));
            config.executor.upgrade =
                if side_by_side { ExecutorUpgrade::SideBySide } else { ExecutorUpgrade::Exclusive };
            Case { config, offers, pods }
        })
}

type Identity = (String, Vec<Reservation>, Option<String>);

#[derive(Default, PartialEq, Debug)]
struct Ledger {
    scalars: BTreeMap<Identity, i64>,
    ranges: BTreeMap<Identity, Ranges>,
    other: Vec<Resource>,
}

impl Ledger {
    fn add(&mut self, r: &Resource) -> Result<(), String> {
        let id = (r.name.to_string(), r.reservations.clone(), r.allocation_role.clone());
        match &r.value {
            Value::Scalar(s) if ScalarKind::from_name(&r.name).is_some() => {
                *self.scalars.entry(id).or_insert(0) += s.milli();
            }
            Value::Ranges(rs) if r.name == "ports" => {
                let e = self.ranges.entry(id).or_default();
                if e.intersects(rs) {
                    return Err(format!("port range {rs} handed out twice"));
                }
                e.union_with(rs);
            }
            _ => self.other.push(r.clone()),
        }
        Ok(())
    }

    fn normalized(mut self) -> Ledger {
        self.scalars.retain(|_, v| *v != 0);
        self.ranges.retain(|_, v| !v.is_empty());
        self.other.sort_by_key(|r| format!("{r:?}"));
        self
    }
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
    let matcher =
        Matcher::new(case.config.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let plan = matcher.plan(&case.pods, &case.offers, &[], now);
    let cfg = &case.config;

    // Determinism: offer input order does not matter.
    let mut reversed = case.offers.clone();
    reversed.reverse();
    prop_assert_eq!(&plan, &matcher.plan(&case.pods, &reversed, &[], now));

    // Borrowed demands give the same plan.
    let refs: Vec<&PodDemand> = case.pods.iter().collect();
    prop_assert_eq!(&plan, &matcher.plan_refs(&refs, &case.offers, &[], now));

    // Every offer is either consumed by exactly one launch or unused.
    let mut all_ids: Vec<&str> = case.offers.iter().map(|o| o.id.as_str()).collect();
    all_ids.sort();
    let mut seen: Vec<&str> = plan.unused_offers.iter().map(String::as_str).collect();
    for l in &plan.launches {
        seen.extend(l.offer_ids.iter().map(String::as_str));
    }
    seen.sort();
    prop_assert_eq!(&all_ids, &seen);

    prop_assert_eq!(plan.outcomes.len(), case.pods.len());
    let mut placed_pods = BTreeSet::new();
    for l in &plan.launches {
        let offers: Vec<&Offer> =
            case.offers.iter().filter(|o| l.offer_ids.contains(&o.id)).collect();
        prop_assert!(offers.iter().all(|o| o.agent_id == l.agent_id));
        let first =
            case.offers.iter().filter(|o| o.agent_id == l.agent_id).min_by_key(|o| &o.id).unwrap();
        let labels = agent_labels(&first.hostname, &first.attributes);
        let running: BTreeSet<&str> = case
            .offers
            .iter()
            .filter(|o| o.agent_id == l.agent_id)
            .flat_map(|o| o.executor_ids.iter().map(String::as_str))
            .collect();

        // placed + remaining = offered, exactly; no port twice.
        let mut offered = Ledger::default();
        for o in &offers {
            for r in &o.resources {
                offered.add(r).map_err(TestCaseError::fail)?;
            }
        }
        let mut used = Ledger::default();
        for r in l
            .tasks
            .iter()
            .flat_map(|t| t.resources.iter())
            .chain(l.executor.iter().flatten())
            .chain(&l.remaining)
        {
            used.add(r).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(offered.normalized(), used.normalized(), "agent {}", l.agent_id);
        for r in l
            .tasks
            .iter()
            .flat_map(|t| t.resources.iter())
            .chain(l.executor.iter().flatten())
            .chain(&l.remaining)
        {
            if let Some(s) = r.as_scalar() {
                prop_assert!(s >= Scalar::ZERO);
            }
        }

        // Executor: paid once, exactly when the current ID is not running.
        prop_assert_eq!(l.executor.is_some(), !running.contains("km-1"));
        if let Some(e) = &l.executor {
            let mut sum = Scalars::ZERO;
            for r in e {
                sum.add(ScalarKind::from_name(&r.name).unwrap(), r.as_scalar().unwrap());
                prop_assert!(cfg.framework_roles.iter().any(|x| x == r.role()));
            }
            prop_assert_eq!(sum, cfg.executor.resources);
        }
        prop_assert!(
            !offers.iter().any(|o| o.unavailability.is_some()),
            "agent in maintenance used"
        );
        if running.iter().any(|e| *e != "km-1") && !running.contains("km-1") {
            prop_assert_eq!(cfg.executor.upgrade, ExecutorUpgrade::SideBySide);
        }

        let mut agent_ports = BTreeSet::new();
        for t in &l.tasks {
            prop_assert!(placed_pods.insert(t.pod_index), "pod placed twice");
            let d = &case.pods[t.pod_index];
            // All or nothing: exactly the demand, one allocation role.
            let mut sum = Scalars::ZERO;
            let mut allocs = BTreeSet::new();
            let mut ports = BTreeSet::new();
            for r in &t.resources {
                allocs.insert(r.allocation_role.clone());
                let serves = |x: &String| {
                    if r.reservations.is_empty() {
                        x == "*" || Some(x) == r.allocation_role.as_ref()
                    } else {
                        x == r.role()
                    }
                };
                prop_assert!(d.roles.iter().any(serves), "{} not allowed for {}", r, d.key);
                match &r.value {
                    Value::Scalar(s) => sum.add(ScalarKind::from_name(&r.name).unwrap(), *s),
                    Value::Ranges(rs) => {
                        for x in rs.ranges() {
                            for p in x.begin..=x.end {
                                ports.insert(p);
                            }
                        }
                    }
                    Value::Set(_) => prop_assert!(false, "set resource in a task"),
                }
            }
            prop_assert_eq!(sum, d.resources);
            prop_assert!(allocs.len() <= 1);
            if let Some(e) = &l.executor {
                prop_assert!(e.iter().all(|r| allocs.iter().all(|a| *a == r.allocation_role)));
            }
            let assigned: BTreeSet<u64> = t.ports.iter().map(|p| p.host_port).collect();
            prop_assert_eq!(&assigned, &ports);
            prop_assert_eq!(t.ports.len(), d.ports.len());
            for p in d.fixed_ports() {
                prop_assert!(ports.contains(&p));
            }
            for p in &ports {
                prop_assert!(agent_ports.insert(*p), "port {} twice on {}", p, l.agent_id);
            }
            // Constraints.
            if let Some(n) = &d.node_name {
                prop_assert_eq!(n, &l.hostname);
            }
            for (k, v) in &d.node_selector {
                prop_assert_eq!(label(&labels, k), Some(v.as_str()));
            }
            if let Some(a) = &d.affinity {
                prop_assert!(a.matches(&labels));
            }
            let public = case.offers.iter().filter(|o| o.agent_id == l.agent_id).any(|o| {
                o.resources.iter().any(|r| {
                    r.role() == "slave_public"
                        || r.allocation_role.as_deref() == Some("slave_public")
                })
            });
            prop_assert!(!public || d.wants_public, "private pod {} on public agent", d.key);
        }
    }
    for (i, o) in plan.outcomes.iter().enumerate() {
        match &o.outcome {
            Outcome::Placed { .. } => {
                prop_assert!(placed_pods.contains(&i));
                prop_assert_eq!(&plan.task(&o.outcome).unwrap().pod, &case.pods[i].key);
            }
            Outcome::Unplaced(e) => {
                prop_assert!(!placed_pods.contains(&i));
                let agents: BTreeSet<&str> =
                    case.offers.iter().map(|o| o.agent_id.as_str()).collect();
                prop_assert_eq!(e.agents, agents.len());
                prop_assert_eq!(e.reasons.iter().map(|(_, n)| n).sum::<usize>(), agents.len());
            }
            Outcome::Invalid(_) => prop_assert!(false, "demands are never invalid"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plan_invariants(case in case_strategy()) {
        check_case(&case)?;
    }
}

proptest! {
    // Fewer, larger cases: more than 64 agents (multi-word bitsets), many pods per agent.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn plan_invariants_large(case in sized_case(90, 300)) {
        check_case(&case)?;
    }
}

#[test]
fn known_agents_do_not_change_placement() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..64 {
        let case = case_strategy().new_tree(&mut runner).unwrap().current();
        let m = Matcher::new(case.config.clone()).unwrap();
        let now = SystemTime::UNIX_EPOCH;
        let plain = m.plan(&case.pods, &case.offers, &[], now);
        let known = vec![KnownAgent {
            agent_id: "zz".into(),
            hostname: "hz".into(),
            ..KnownAgent::default()
        }];
        let with_known = m.plan(&case.pods, &case.offers, &known, now);
        assert_eq!(plain.launches, with_known.launches);
    }
}

// ---------------------------------------------------------------------------------------------
// Binpack against spread.
//
// Binpack takes the pods by priority, then the most constrained first (fewest eligible agents),
// then by creation time, and gives each the first agent that fits among those it already opened
// in this plan, else the first fresh one in rank order. No single-pass rule places at least as
// many pods as spread on every input, so the comparison is stated under precise conditions:
//
// - Placement. Under overload the counts are not comparable: spread can place ten small
//   unconstrained pods where binpack, honouring the constrained pods first, places the two
//   large pods that need one rack each (fixture `binpack_overload`); and first fit can lose to
//   spread's balancing on near-perfect fits (two agents of 10 cpus, pods of 4, 4, 6 and 6 cpus:
//   first fit strands a 6, balancing does not). What does hold is a counting bound on binpack alone (`headroom` below): a pod
//   is placed whenever the pods ordered before it cannot block all of its eligible agents.
//   When that holds for every pod, binpack places everything, so at least as many as spread.
//   The bound depends on the order: under the former input-order first fit, unconstrained pods
//   filled the agents a rack-selector pod needed even though the bound held for it.
// - Agents. Whenever both place every pod, binpack uses no more agents than either spread,
//   for workloads where every pod takes at most a quarter of an agent's cpus and mem (M's
//   ratio). With larger pods first fit can need an agent more than balancing: six 4-cpu agents
//   in five racks, three of them still to start a 0.1-cpu executor, and pods of 0.1, 2, 3, 3,
//   3, 2 and 2 cpus in that order take six agents under binpack and five under spread over
//   racks, which happens to pair the 2-cpu pods on an agent that needs no executor. No
//   counterexample with small pods is known (several hundred thousand generated cases were
//   checked while writing this), but this half is an observed property of the family, not a
//   proof.

/// One pod of a generated workload.
#[derive(Clone, Debug)]
struct PodGen {
    cpu_milli: i64,
    mem_mib: i64,
    /// 0..5: fixed host port (31000 or 31080), 5..15: one wildcard port, else none.
    port: u8,
    /// 0..10: rack selector, 10..20: zone selector, else none.
    selector: u8,
    value: u8,
    priority: i32,
    created: u64,
}

/// A cluster shaped like scenario M: identical agents with `rack` and `zone` attributes, some
/// already running the executor, and small pods with selectors and host ports.
#[derive(Clone, Debug)]
struct Workload {
    cpus: i64,
    mem_mib: i64,
    ports: u64,
    racks: u8,
    zones: u8,
    /// Zones group racks (`zone = rack % zones`) instead of crossing them (`agent % zones`).
    nested: bool,
    running: Vec<bool>,
    executor: (i64, i64),
    pods: Vec<PodGen>,
}

impl Workload {
    fn rack_zone(&self, agent: usize) -> (u8, u8) {
        let rack = (agent % usize::from(self.racks)) as u8;
        let zone =
            if self.nested { rack % self.zones } else { (agent % usize::from(self.zones)) as u8 };
        (rack, zone)
    }

    fn offers(&self) -> Vec<Offer> {
        (0..self.running.len())
            .map(|i| {
                let mut o = Offer::new(
                    format!("o{i:03}"),
                    format!("a{i:03}"),
                    format!("h{i:03}"),
                    vec![
                        Resource::with_value("cpus", Value::Scalar(Scalar::from_milli(self.cpus))),
                        Resource::with_value(
                            "mem",
                            Value::Scalar(Scalar::from_units(self.mem_mib)),
                        ),
                        Resource::with_value(
                            "ports",
                            Value::Ranges(Ranges::from_pairs([(31000, 31000 + self.ports - 1)])),
                        ),
                    ],
                );
                let (rack, zone) = self.rack_zone(i);
                o.attributes = vec![
                    Attribute::text("rack", format!("r{rack}")),
                    Attribute::text("zone", format!("z{zone}")),
                ];
                if self.running[i] {
                    o.executor_ids = vec!["km-1".to_owned()];
                }
                o
            })
            .collect()
    }

    fn demands(&self) -> Vec<PodDemand> {
        self.pods
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut d = PodDemand::new(
                    PodKey::new("ns", format!("p{i:03}")),
                    Scalars::cpus_mem(
                        Scalar::from_milli(g.cpu_milli),
                        Scalar::from_units(g.mem_mib),
                    ),
                );
                d.priority = g.priority;
                d.created = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(g.created));
                let port = |host_port| PortRequest {
                    container: "c".into(),
                    container_port: 80,
                    protocol: "TCP".into(),
                    name: None,
                    host_port,
                };
                if g.port < 5 {
                    d.ports.push(port(HostPort::Fixed(if g.port < 2 { 31000 } else { 31080 })));
                } else if g.port < 15 {
                    d.ports.push(port(HostPort::Any));
                }
                if g.selector < 10 {
                    let rack = g.value % self.racks;
                    d.node_selector = vec![(ATTR_RACK.into(), format!("r{rack}"))];
                } else if g.selector < 20 {
                    let zone = g.value % self.zones;
                    d.node_selector = vec![(ATTR_ZONE.into(), format!("z{zone}"))];
                }
                d
            })
            .collect()
    }

    fn matcher(&self, strategy: Packing) -> Matcher {
        let mut config = Config { strategy, ..Config::default() };
        config.executor.id = "km-1".into();
        config.executor.resources = Scalars::cpus_mem(
            Scalar::from_milli(self.executor.0),
            Scalar::from_units(self.executor.1),
        );
        Matcher::new(config).expect("valid config")
    }

    /// The agents a pod may use, as a bitset.
    fn eligible(&self, g: &PodGen) -> u64 {
        let mut set = 0u64;
        for a in 0..self.running.len() {
            let (rack, zone) = self.rack_zone(a);
            let ok = if g.selector < 10 {
                rack == g.value % self.racks
            } else if g.selector < 20 {
                zone == g.value % self.zones
            } else {
                true
            };
            if ok {
                set |= 1 << a;
            }
        }
        set
    }

    /// Which pods the counting bound guarantees a place, in input order.
    ///
    /// Take the pods in binpack's order and a pod `p` with eligible agents `S`. Only pods before
    /// `p` whose eligible agents meet `S` can be on `S` when `p` comes; let `L` be their total
    /// demand per resource. An agent of `S` refuses `p` only if
    /// - its pods use more than `capacity - demand(p) - executor` of cpus or of mem: fewer than
    ///   `L / (capacity - demand(p) - executor)` agents of `S` can be that full;
    /// - one of `p`'s fixed ports is taken: by an earlier pod with that fixed port (count them),
    ///   or by a wildcard port, which takes a port some pod of the batch wants as fixed only when
    ///   no other port is free, i.e. with at least `ports - reserved` ports in use;
    /// - fewer free ports than `p` needs, i.e. more than `ports - needed` in use.
    ///
    /// Agents with at least `K` ports in use number at most `W / K`, `W` the ports of the earlier
    /// pods. If these counts add up to less than `|S|`, some agent of `S` takes `p`, whatever
    /// happened to the earlier pods (binpack's search never skips an agent that fits).
    fn headroom(&self) -> Vec<bool> {
        let sets: Vec<u64> = self.pods.iter().map(|g| self.eligible(g)).collect();
        let mut order: Vec<usize> = (0..self.pods.len()).collect();
        order.sort_by_key(|&i| {
            let g = &self.pods[i];
            (std::cmp::Reverse(g.priority), sets[i].count_ones(), g.created, i)
        });
        let fixed = |g: &PodGen| (g.port < 5).then_some(if g.port < 2 { 31000u64 } else { 31080 });
        let ports_of = |g: &PodGen| u64::from(g.port < 15);
        let reserved: BTreeSet<u64> = self.pods.iter().filter_map(fixed).collect();
        let mut out = vec![false; self.pods.len()];
        for (k, &i) in order.iter().enumerate() {
            let g = &self.pods[i];
            let before: Vec<&PodGen> = order[..k]
                .iter()
                .filter(|&&j| sets[j] & sets[i] != 0)
                .map(|&j| &self.pods[j])
                .collect();
            // Per resource: (capacity, demand, executor, load before) in milli units.
            let resources = [
                (
                    self.cpus,
                    g.cpu_milli,
                    self.executor.0,
                    before.iter().map(|q| q.cpu_milli).sum::<i64>(),
                ),
                (
                    self.mem_mib * 1000,
                    g.mem_mib * 1000,
                    self.executor.1 * 1000,
                    before.iter().map(|q| q.mem_mib * 1000).sum::<i64>(),
                ),
            ];
            let mut blocked: i64 = 0;
            let mut possible = true;
            for (capacity, demand, executor, load) in resources {
                let slack = capacity - demand - executor;
                if slack <= 0 {
                    possible = false;
                } else if load > 0 {
                    blocked += (load - 1) / slack;
                }
            }
            let needed = ports_of(g);
            if needed > 0 {
                let mut k = self.ports - needed + 1;
                if let Some(port) = fixed(g) {
                    blocked += before.iter().filter(|q| fixed(q) == Some(port)).count() as i64;
                    k = k.min(self.ports - reserved.len() as u64);
                }
                let w: u64 = before.iter().map(|q| ports_of(q)).sum();
                match w.checked_div(k) {
                    Some(full) => blocked += full as i64,
                    None => possible = false,
                }
            }
            out[i] = possible && blocked < i64::from(sets[i].count_ones());
        }
        out
    }
}

const ATTR_RACK: &str = "k8s.mesosphere.io/attribute-rack";
const ATTR_ZONE: &str = "k8s.mesosphere.io/attribute-zone";

fn pod_gen() -> impl Strategy<Value = PodGen> {
    (
        prop::sample::select(vec![100i64, 100, 100, 100, 250, 250, 250, 500, 500, 1000]),
        0u32..4,
        0u8..100,
        0u8..100,
        any::<u8>(),
        prop::sample::select(vec![0i32, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        0u64..10,
    )
        .prop_map(|(cpu_milli, mem, port, selector, value, priority, created)| PodGen {
            cpu_milli,
            mem_mib: 128 << mem,
            port,
            selector,
            value,
            priority,
            created,
        })
}

fn workload(max_agents: usize, max_pods: usize) -> impl Strategy<Value = Workload> {
    (
        (
            prop::sample::select(vec![4000i64, 8000]),
            prop::sample::select(vec![4096i64, 16384]),
            prop::sample::select(vec![100u64, 1000]),
        ),
        (1u8..=6, 1u8..=3, any::<bool>()),
        prop::collection::vec(any::<bool>(), 2..=max_agents),
        (prop::sample::select(vec![0i64, 100, 250]), prop::sample::select(vec![0i64, 64, 128])),
        prop::collection::vec(pod_gen(), 0..max_pods),
    )
        .prop_map(
            |((cpus, mem_mib, ports), (racks, zones, nested), running, executor, pods)| Workload {
                cpus,
                mem_mib,
                ports,
                racks,
                zones,
                nested,
                running,
                executor,
                pods,
            },
        )
}

fn agents_used(plan: &km_offer_matcher::Plan) -> usize {
    plan.launches.len()
}

fn compare(w: &Workload) -> Result<(), TestCaseError> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    let (offers, pods) = (w.offers(), w.demands());
    let binpack = w.matcher(Packing::Binpack).plan(&pods, &offers, &[], now);
    let guaranteed = w.headroom();
    for (i, o) in binpack.outcomes.iter().enumerate() {
        if guaranteed[i] {
            prop_assert!(
                matches!(o.outcome, Outcome::Placed { .. }),
                "{} has headroom but was not placed: {:?}\n{}",
                pods[i].key,
                o.outcome,
                binpack
            );
        }
    }
    let all = pods.len();
    for strategy in [Packing::Spread { by: None }, Packing::Spread { by: Some("rack".to_owned()) }]
    {
        let spread = w.matcher(strategy.clone()).plan(&pods, &offers, &[], now);
        if guaranteed.iter().all(|g| *g) {
            prop_assert!(binpack.placed() >= spread.placed());
        }
        if binpack.placed() == all && spread.placed() == all {
            prop_assert!(
                agents_used(&binpack) <= agents_used(&spread),
                "binpack used {} agents, {strategy:?} {}\n{binpack}\n{spread}",
                agents_used(&binpack),
                agents_used(&spread)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn binpack_places_and_packs_at_least_as_well_as_spread(w in workload(40, 300)) {
        compare(&w)?;
    }
}

proptest! {
    // Few agents and pods: where single pods and ports decide.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn binpack_against_spread_small(w in workload(6, 40)) {
        compare(&w)?;
    }
}

/// Scenario M scaled down to 1,000 pods on 100 agents (the benchmark's small case): 10 racks
/// crossed with 3 zones, every second agent running the executor, 20 % of the pods with a rack
/// or zone selector. The former binpack left about 2 % of the pods unplaced here, their rack
/// filled by unconstrained pods.
#[test]
fn binpack_places_an_m_shaped_workload_on_fewer_agents() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let pods =
        prop::collection::vec(pod_gen(), 1000).new_tree(&mut runner).expect("pods").current();
    let w = Workload {
        cpus: 4000,
        mem_mib: 16384,
        ports: 1001,
        racks: 10,
        zones: 3,
        nested: false,
        running: (0..100).map(|i| i % 2 == 0).collect(),
        executor: (250, 128),
        pods,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    let (offers, demands) = (w.offers(), w.demands());
    let binpack = w.matcher(Packing::Binpack).plan(&demands, &offers, &[], now);
    assert_eq!(binpack.placed(), 1000, "{binpack}");
    for strategy in [Packing::Spread { by: None }, Packing::Spread { by: Some("rack".to_owned()) }]
    {
        let spread = w.matcher(strategy.clone()).plan(&demands, &offers, &[], now);
        assert!(binpack.placed() >= spread.placed(), "{strategy:?}");
        assert!(
            agents_used(&binpack) < agents_used(&spread),
            "binpack {} agents, {strategy:?} {}",
            agents_used(&binpack),
            agents_used(&spread)
        );
    }
}
