//! The matching algorithm behind [`crate::Matcher::plan`].
//!
//! Shape of the computation:
//! 1. Offers are merged per agent into *pools* (one per allocation role × reservation stack),
//!    and the agents ordered by the strategy's rank (binpack: agents already running the
//!    current executor first, then least free; spread: most free first).
//! 2. Pods with equal constraints share a *constraint class* whose eligible agents (node name,
//!    selector, affinity, public, maintenance, executor, roles) are computed once; pods with
//!    equal constraints, resources and ports share a *shape class*. Every pod gets its class
//!    and shape before any is placed.
//! 3. Pods are taken by priority (high first), then, for binpack only, by the number of agents
//!    their class may use (fewest first), then by creation time and input order. Kubernetes
//!    priority stays the first key; among pods of one priority the most constrained go first,
//!    so a pod that can only use one rack gets it before pods that could go anywhere fill it.
//! 4. Binpack: each pod goes to the first agent that fits among the agents of its class opened
//!    in this plan (in the order they were opened), else to the first fresh one in rank order,
//!    so an agent is opened only when no opened one can take the pod. A class keeps both lists
//!    in a [`PackIndex`] with a [`FreeTree`] each, a shape a cursor into each. Spread: a class
//!    keeps its agents in a [`Levels`] index by pods placed (per topology domain, then per
//!    agent); a shape walks it lowest level first, skipping agents it already failed on.
//! 5. A shape never revisits an agent that failed it: free resources and ports only shrink
//!    during a plan, and an executor is paid at most once per agent from the allocation group
//!    that later pods must use too, so a failure is permanent. Cost is therefore about
//!    O(pods + shapes × agents), not O(pods × agents).
//! 6. A wildcard host port takes the lowest free port that no pod of the batch wants as its
//!    fixed port, falling back to the lowest free one, so a pod ordered earlier does not take
//!    the port a later one needs exactly.
//! 7. For every shape left with unplaced pods, the offered agents are checked against the final
//!    state to count the reasons (static ones once per constraint class), and the known agents
//!    are checked for a "can never fit" verdict (once per constraint class).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ExecutorUpgrade, Strategy};
use crate::constraints::{NodeAffinity, label};
use crate::demand::{HostPort, InvalidPod, PodDemand, PodKey};
use crate::explain::{Explanation, NeverFits, Reason};
use crate::offer::{KnownAgent, Offer, agent_labels, attribute_label};
use crate::plan::{
    ExecutorAction, ExecutorNote, Launch, Outcome, Plan, PodOutcome, PortAssignment, Task,
};
use crate::resources::{Ranges, Reservation, Resource, Scalar, ScalarKind, Scalars, Value};

/// A fast, non-cryptographic hasher (the rustc "Fx" mix) for the engine's lookup tables.
/// Tables are only looked up, never iterated, so hash order cannot leak into a plan.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// One input pod: a demand, or a spec that could not be converted.
pub(crate) enum Entry<'a> {
    Demand(&'a PodDemand),
    Invalid(PodKey, InvalidPod),
}

/// Resources of one agent sharing allocation role and reservation stack.
struct Pool {
    alloc: Option<String>,
    reservations: Vec<Reservation>,
    role: String,
    /// Framework roles (as bits) this pool serves: its reservation role, or for unreserved
    /// resources `*` and the allocation role. Zero if it serves none.
    role_mask: u64,
    free: Scalars,
    ports: Ranges,
    free_ports: u64,
    offered_ports: Ranges,
    offers: Vec<usize>,
    touched: bool,
}

impl Pool {
    fn resource(&self, name: &'static str, value: Value) -> Resource {
        Resource {
            name: Cow::Borrowed(name),
            value,
            reservations: self.reservations.clone(),
            allocation_role: self.alloc.clone(),
            revocable: false,
        }
    }

    fn in_mask(&self, mask: u64) -> bool {
        self.role_mask & mask != 0
    }
}

struct Agent {
    id: Arc<str>,
    hostname: String,
    labels: Vec<(String, String)>,
    offers: Vec<usize>,
    pools: Vec<Pool>,
    /// `[start, end)` ranges of `pools` with the same allocation role.
    groups: Vec<(usize, usize)>,
    passthrough: Vec<(usize, Resource)>,
    free_total: Scalars,
    exec_paid: bool,
    /// Group the executor was paid from in this plan; later pods must use it too.
    exec_group: Option<usize>,
    executor: Option<Vec<Resource>>,
    stale: Vec<String>,
    blocked_by: Option<String>,
    public: bool,
    maintenance: bool,
    domain: u32,
    placed: u32,
    tasks: Vec<Task>,
}

struct ConstraintClass {
    /// Agents passing the static predicates, in rank order.
    eligible: Vec<u32>,
    /// Spread strategies: the eligible agents by (domain level, agent level).
    spread: Option<SpreadIndex>,
    /// Binpack: the eligible agents split into opened and fresh ones.
    pack: Option<PackIndex>,
    /// Role bits of the class's roles.
    mask: u64,
    /// Static reasons over all offered agents, computed on first need (explanations).
    static_counts: Option<Vec<(Reason, usize)>>,
}

/// Items (small local ids) ordered by (level, id); a level only ever grows by one.
/// One bitset per level with a summary bitset of its non-zero words: a bump is O(1), and
/// finding the next item skips empty words 64 at a time.
struct Levels {
    words: usize,
    sets: Vec<Vec<u64>>,
    summary: Vec<Vec<u64>>,
    count: Vec<u32>,
    level: Vec<u32>,
    min: usize,
}

impl Levels {
    fn new(levels: impl IntoIterator<Item = u32>) -> Levels {
        let level: Vec<u32> = levels.into_iter().collect();
        let words = level.len().div_ceil(64).max(1);
        let top = level.iter().copied().max().map_or(1, |m| m as usize + 1);
        let mut out = Levels {
            words,
            sets: Vec::with_capacity(top),
            summary: Vec::with_capacity(top),
            count: Vec::with_capacity(top),
            level,
            min: 0,
        };
        for _ in 0..top {
            out.push_level();
        }
        for i in 0..out.level.len() {
            let l = out.level[i] as usize;
            out.set(l, i);
        }
        out.min = out.count.iter().position(|c| *c > 0).unwrap_or(0);
        out
    }

    fn push_level(&mut self) {
        self.sets.push(vec![0u64; self.words]);
        self.summary.push(vec![0u64; self.words.div_ceil(64)]);
        self.count.push(0);
    }

    fn set(&mut self, l: usize, i: usize) {
        let w = i / 64;
        self.sets[l][w] |= 1u64 << (i % 64);
        self.summary[l][w / 64] |= 1u64 << (w % 64);
        self.count[l] += 1;
    }

    fn bump(&mut self, item: u32) {
        let i = item as usize;
        let l = self.level[i] as usize;
        let w = i / 64;
        self.sets[l][w] &= !(1u64 << (i % 64));
        if self.sets[l][w] == 0 {
            self.summary[l][w / 64] &= !(1u64 << (w % 64));
        }
        self.count[l] -= 1;
        if self.sets.len() <= l + 1 {
            self.push_level();
        }
        self.set(l + 1, i);
        self.level[i] += 1;
        while self.min + 1 < self.sets.len() && self.count[self.min] == 0 {
            self.min += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (self.min..self.sets.len()).filter(|&l| self.count[l] > 0).flat_map(move |l| {
            bits(&self.summary[l]).flat_map(move |w| {
                bits(&self.sets[l][w as usize..=w as usize]).map(move |b| w * 64 + b)
            })
        })
    }
}

/// Indices of the set bits of a bitset, ascending.
fn bits(words: &[u64]) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let b = rest.trailing_zeros();
            rest &= rest - 1;
            Some((w * 64) as u32 + b)
        })
    })
}

/// Binpack: a constraint class's eligible agents in two lists, each with a [`FreeTree`] of
/// what is free on them, so a shape skips agents too full for it in O(log n).
struct PackIndex {
    /// Eligible agents that took a pod in this plan, in the order they took their first one.
    /// Only grows at the end, so a shape's cursor into it stays valid.
    open: Vec<u32>,
    /// Free (cpus, mem) of `open`, by position; empty slots never fit.
    open_free: FreeTree,
    /// Free (cpus, mem) of the eligible agents (rank order) that are still fresh, minus the
    /// executor they would have to start; opened agents never fit here.
    fresh_free: FreeTree,
}

/// A max-tree of free (cpus, mem) over a list of agents, for first-fit searches.
struct FreeTree {
    size: usize,
    /// Node `i` covers its subtree; leaves start at `size`. (max free cpus, max free mem).
    max: Vec<(i64, i64)>,
}

impl FreeTree {
    fn new(free: impl ExactSizeIterator<Item = (i64, i64)>) -> FreeTree {
        let size = free.len().next_power_of_two().max(1);
        let mut max = vec![NEVER; 2 * size];
        for (i, f) in free.enumerate() {
            max[size + i] = f;
        }
        for i in (1..size).rev() {
            max[i] = (max[2 * i].0.max(max[2 * i + 1].0), max[2 * i].1.max(max[2 * i + 1].1));
        }
        FreeTree { size, max }
    }

    fn set(&mut self, leaf: usize, free: (i64, i64)) {
        let mut i = self.size + leaf;
        self.max[i] = free;
        while i > 1 {
            i /= 2;
            let (l, r) = (self.max[2 * i], self.max[2 * i + 1]);
            let m = (l.0.max(r.0), l.1.max(r.1));
            if self.max[i] == m {
                break; // ancestors are unchanged too
            }
            self.max[i] = m;
        }
    }

    /// The first leaf at or after `from` with at least `need` free.
    fn first_from(&self, from: usize, need: (i64, i64)) -> Option<usize> {
        let fits = |m: (i64, i64)| m.0 >= need.0 && m.1 >= need.1;
        if from >= self.size {
            return None;
        }
        let mut i = self.size + from;
        if fits(self.max[i]) {
            return Some(from); // the common case: the agent the last pod of the shape took
        }
        loop {
            // Next subtree to the right of `i`: climb while `i` is a right child.
            while i & 1 == 1 {
                i >>= 1;
            }
            if i == 0 {
                return None;
            }
            i += 1;
            if !fits(self.max[i]) {
                continue;
            }
            // Leftmost fitting leaf below `i`. Both maxima fitting does not mean one leaf fits
            // both, so a descent can dead-end; the search then goes on to the right of it.
            while i < self.size {
                let l = 2 * i;
                if fits(self.max[l]) {
                    i = l;
                } else if fits(self.max[l + 1]) {
                    i = l + 1;
                } else {
                    break;
                }
            }
            if i >= self.size {
                return Some(i - self.size);
            }
        }
    }
}

/// A constraint class's view for the spread strategies: domains ordered by the pods placed in
/// them, and inside each domain the agents ordered by the pods placed on them (ties by rank).
struct SpreadIndex {
    domains: Levels,
    /// Per local domain: its agents' levels and their global indices (in rank order).
    agents: Vec<(Levels, Vec<u32>)>,
    /// Spread over agents: the agent of each domain (then `agents` is empty).
    flat: Vec<u32>,
}

struct Shape<'a> {
    rep: &'a PodDemand,
    class: u32,
    /// Role bits of the pod's roles.
    mask: u64,
    /// Pod roles as bits, in preference order.
    order: Vec<u32>,
    fixed: Vec<u64>,
    wildcard: usize,
    /// Binpack: position in the class's opened agents and in its eligible list (fresh agents);
    /// the agents before them failed this shape.
    cursor: usize,
    fresh: usize,
    /// Spread: agents that failed this shape (bitset over agent indices) and how many are left.
    dropped: Vec<u64>,
    left: usize,
    unplaced: bool,
    explanation: Option<Arc<Explanation>>,
}

/// A static predicate that failed, without the allocation a [`Reason`] may need.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StaticMiss {
    NodeName,
    Selector(usize),
    Affinity,
    Public,
    Maintenance,
    Executor,
    Role,
}

#[derive(PartialEq, Eq, Hash)]
struct ClassKey<'a> {
    node_name: Option<&'a str>,
    selector: &'a [(String, String)],
    affinity: Option<&'a NodeAffinity>,
    roles: &'a [String],
    wants_public: bool,
}

#[derive(PartialEq, Eq, Hash)]
struct ShapeKey {
    class: u32,
    resources: Scalars,
    fixed: Vec<u64>,
    wildcard: usize,
}

/// Capacity of a known agent, for "never fits" verdicts.
struct KnownCap<'x> {
    hostname: &'x str,
    labels: Cow<'x, [(String, String)]>,
    public: bool,
    /// Per set of framework roles served: total scalars and ports. `None`: capacity unknown.
    caps: Option<Vec<(u64, Scalars, Ranges)>>,
}

struct Engine<'a> {
    cfg: &'a Config,
    fw_mask: u64,
    fw_order: Vec<u32>,
    agents: Vec<Agent>,
    domain_counts: Vec<u32>,
    /// Agents by hostname, built on the first pod with `spec.nodeName`.
    by_host: Option<FxMap<String, Vec<u32>>>,
    classes: Vec<ConstraintClass>,
    shapes: Vec<Shape<'a>>,
    /// Reused buffer of pool indices (see `place`).
    scratch: Vec<usize>,
    /// Every fixed host port some pod of the batch asks for, sorted: wildcard ports avoid them.
    reserved_ports: Vec<u64>,
    /// Binpack: per agent, its slots in the classes' pack indexes: (class, position among the
    /// class's eligible agents, position among its opened agents or `u32::MAX` while fresh).
    pack_slots: Vec<Vec<(u32, u32, u32)>>,
    /// Spread: per agent, its (class, local domain, local agent) slots.
    agent_slots: Vec<Vec<(u32, u32, u32)>>,
    /// Spread: per domain, its (class, local domain) slots.
    domain_slots: Vec<Vec<(u32, u32)>>,
}

pub(crate) fn plan(
    cfg: &Config,
    entries: &[Entry<'_>],
    offers: &[Offer],
    known: &[KnownAgent],
    now: SystemTime,
) -> Plan {
    let mut engine = Engine::new(cfg, offers, known, now);
    let mut reserved: Vec<u64> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Demand(d) => Some(d.fixed_ports()),
            Entry::Invalid(..) => None,
        })
        .flatten()
        .collect();
    reserved.sort_unstable();
    reserved.dedup();
    engine.reserved_ports = reserved;

    // Every pod's constraint class and shape first: binpack orders by the size of the class.
    let mut class_ids: FxMap<ClassKey<'_>, u32> = FxMap::default();
    let mut shape_ids: FxMap<ShapeKey, u32> = FxMap::default();
    let mut shape_of: Vec<u32> = vec![u32::MAX; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Demand(d) = e {
            shape_of[i] = engine.shape_for(d, &mut class_ids, &mut shape_ids);
        }
    }

    // Pods in order: priority (high first); binpack: then fewest eligible agents first;
    // then creation time, input order.
    let binpack = matches!(cfg.strategy, Strategy::Binpack);
    let mut keys: Vec<(Reverse<i32>, usize, SystemTime, usize)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Demand(d) => {
                let eligible = if binpack {
                    let shape = &engine.shapes[shape_of[i] as usize];
                    engine.classes[shape.class as usize].eligible.len()
                } else {
                    0
                };
                Some((Reverse(d.priority), eligible, d.created.unwrap_or(now), i))
            }
            Entry::Invalid(..) => None,
        })
        .collect();
    keys.sort_unstable();

    let mut placed_at: Vec<Option<(u32, usize)>> = vec![None; entries.len()];
    for &(_, _, _, idx) in &keys {
        let Entry::Demand(d) = entries[idx] else { continue };
        let shape = shape_of[idx];
        match engine.next_agent(shape) {
            Some((agent, group)) => {
                let task = engine.place(agent, group, shape, d, idx);
                placed_at[idx] = Some((agent, task));
            }
            None => engine.shapes[shape as usize].unplaced = true,
        }
    }

    engine.explain_unplaced(known, offers);
    engine.finish(entries, offers, &shape_of, &placed_at)
}

impl<'a> Engine<'a> {
    fn new(cfg: &'a Config, offers: &[Offer], known: &[KnownAgent], now: SystemTime) -> Engine<'a> {
        let fw_order: Vec<u32> = (0..cfg.framework_roles.len().min(64) as u32).collect();
        let fw_mask = fw_order.iter().fold(0u64, |m, b| m | (1u64 << b));

        // Offers by agent, deterministic; duplicate offer IDs are ignored.
        let mut by_agent: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut seen_ids: FxMap<&str, ()> = FxMap::default();
        for (i, o) in offers.iter().enumerate() {
            if seen_ids.insert(o.id.as_str(), ()).is_none() {
                by_agent.entry(o.agent_id.as_str()).or_default().push(i);
            }
        }
        let known_by_id: FxMap<&str, &KnownAgent> =
            known.iter().map(|k| (k.agent_id.as_str(), k)).collect();

        let mut agents = Vec::with_capacity(by_agent.len());
        for (agent_id, mut idxs) in by_agent {
            idxs.sort_by(|a, b| offers[*a].id.cmp(&offers[*b].id));
            let first = &offers[idxs[0]];
            let mut pools: Vec<Pool> = Vec::new();
            let mut passthrough = Vec::new();
            let mut running: Vec<String> = Vec::new();
            let mut maintenance = false;
            for &oi in &idxs {
                let o = &offers[oi];
                running.extend(o.executor_ids.iter().cloned());
                maintenance |= o.unavailability.is_some_and(|u| u.covers(now));
                for r in &o.resources {
                    let kind = ScalarKind::from_name(&r.name);
                    let usable = !r.revocable
                        && match (&r.value, kind) {
                            (Value::Scalar(s), Some(_)) => *s >= Scalar::ZERO,
                            (Value::Ranges(_), None) => r.name == "ports",
                            _ => false,
                        };
                    if !usable {
                        passthrough.push((oi, r.clone()));
                        continue;
                    }
                    let pi = match pools.iter().position(|p| {
                        p.alloc == r.allocation_role && p.reservations == r.reservations
                    }) {
                        Some(pi) => pi,
                        None => {
                            pools.push(Pool {
                                alloc: r.allocation_role.clone(),
                                reservations: r.reservations.clone(),
                                role: r.role().to_owned(),
                                role_mask: role_mask(cfg, r),
                                free: Scalars::ZERO,
                                ports: Ranges::new(),
                                free_ports: 0,
                                offered_ports: Ranges::new(),
                                offers: Vec::new(),
                                touched: false,
                            });
                            pools.len() - 1
                        }
                    };
                    let pool = &mut pools[pi];
                    if !pool.offers.contains(&oi) {
                        pool.offers.push(oi);
                    }
                    match (&r.value, kind) {
                        (Value::Scalar(s), Some(k)) => pool.free.add(k, *s),
                        (Value::Ranges(rs), _) => {
                            pool.ports.union_with(rs);
                            pool.offered_ports.union_with(rs);
                        }
                        _ => {}
                    }
                }
            }
            pools.sort_by(|a, b| {
                (&a.alloc, &a.role, &a.reservations).cmp(&(&b.alloc, &b.role, &b.reservations))
            });
            for p in &mut pools {
                p.free_ports = p.ports.count();
            }
            let mut groups: Vec<(usize, usize)> = Vec::new();
            for i in 0..pools.len() {
                match groups.last_mut() {
                    Some(g) if pools[g.0].alloc == pools[i].alloc => g.1 = i + 1,
                    _ => groups.push((i, i + 1)),
                }
            }
            let free_total = pools
                .iter()
                .filter(|p| p.role_mask != 0)
                .fold(Scalars::ZERO, |acc, p| acc.plus(&p.free));

            let k = known_by_id.get(agent_id);
            if let Some(k) = k {
                running.extend(k.executor_ids.iter().cloned());
            }
            running.sort();
            running.dedup();
            let exec_paid = running.contains(&cfg.executor.id);
            let stale: Vec<String> =
                running.into_iter().filter(|e| *e != cfg.executor.id).collect();
            let blocked_by = match (&stale.first(), exec_paid, cfg.executor.upgrade) {
                (Some(s), false, ExecutorUpgrade::Exclusive) => Some((*s).clone()),
                _ => None,
            };
            let public_role = cfg.public_agents.role.as_deref();
            let public_by_role = public_role.is_some_and(|pr| {
                pools.iter().any(|p| p.role == pr || p.alloc.as_deref() == Some(pr))
                    || k.is_some_and(|k| k.capacity.iter().any(|r| r.role() == pr))
            });
            let labels = agent_labels(&first.hostname, &first.attributes);
            let public = public_by_role || public_by_attribute(cfg, &labels);
            agents.push(Agent {
                id: Arc::from(agent_id),
                hostname: first.hostname.clone(),
                labels,
                offers: idxs,
                pools,
                groups,
                passthrough,
                free_total,
                exec_paid,
                exec_group: None,
                executor: None,
                stale,
                blocked_by,
                public,
                maintenance,
                domain: 0,
                placed: 0,
                tasks: Vec::new(),
            });
        }

        // Rank agents for the strategy (the vector order is the rank).
        let cpus = |a: &Agent| a.free_total.get(ScalarKind::Cpus);
        let mem = |a: &Agent| a.free_total.get(ScalarKind::Mem);
        match cfg.strategy {
            Strategy::Binpack => agents.sort_by(|a, b| {
                (!a.exec_paid, cpus(a), mem(a), &a.id).cmp(&(!b.exec_paid, cpus(b), mem(b), &b.id))
            }),
            Strategy::Spread { .. } => agents.sort_by(|a, b| {
                (!a.exec_paid, Reverse(cpus(a)), Reverse(mem(a)), &a.id).cmp(&(
                    !b.exec_paid,
                    Reverse(cpus(b)),
                    Reverse(mem(b)),
                    &b.id,
                ))
            }),
        }

        // Topology domains.
        let domain_count = match &cfg.strategy {
            Strategy::Spread { by: Some(attr) } => {
                let key = attribute_label(attr);
                let mut values: BTreeMap<Option<String>, u32> = BTreeMap::new();
                for a in &agents {
                    values.entry(label(&a.labels, &key).map(str::to_owned)).or_insert(0);
                }
                for (i, v) in values.values_mut().enumerate() {
                    *v = i as u32;
                }
                for a in &mut agents {
                    a.domain = values[&label(&a.labels, &key).map(str::to_owned)];
                }
                values.len()
            }
            Strategy::Spread { by: None } | Strategy::Binpack => {
                for (i, a) in agents.iter_mut().enumerate() {
                    a.domain = i as u32;
                }
                agents.len()
            }
        };

        let spread = matches!(cfg.strategy, Strategy::Spread { .. });
        let (agent_slots, domain_slots) = if spread {
            (vec![Vec::new(); agents.len()], vec![Vec::new(); domain_count])
        } else {
            (Vec::new(), Vec::new())
        };
        let pack_slots = if spread { Vec::new() } else { vec![Vec::new(); agents.len()] };
        Engine {
            scratch: Vec::new(),
            reserved_ports: Vec::new(),
            pack_slots,
            agent_slots,
            domain_slots,
            cfg,
            fw_mask,
            fw_order,
            agents,
            domain_counts: vec![0; domain_count],
            by_host: None,
            classes: Vec::new(),
            shapes: Vec::new(),
        }
    }

    fn role_mask_of(&self, roles: &[String]) -> u64 {
        let mut mask = 0u64;
        for r in roles {
            if let Some(b) = self.cfg.framework_roles.iter().take(64).position(|x| x == r) {
                mask |= 1u64 << b;
            }
        }
        mask & self.fw_mask
    }

    fn role_bits(&self, roles: &[String]) -> (u64, Vec<u32>) {
        let mut mask = 0u64;
        let mut order = Vec::with_capacity(roles.len());
        for r in roles {
            if let Some(b) = self.cfg.framework_roles.iter().take(64).position(|x| x == r) {
                let b = b as u32;
                if mask & (1u64 << b) == 0 {
                    mask |= 1u64 << b;
                    order.push(b);
                }
            }
        }
        (mask & self.fw_mask, order)
    }

    fn shape_for(
        &mut self,
        d: &'a PodDemand,
        class_ids: &mut FxMap<ClassKey<'a>, u32>,
        shape_ids: &mut FxMap<ShapeKey, u32>,
    ) -> u32 {
        let ckey = ClassKey {
            node_name: d.node_name.as_deref(),
            selector: &d.node_selector,
            affinity: d.affinity.as_ref(),
            roles: &d.roles,
            wants_public: d.wants_public,
        };
        let class = match class_ids.get(&ckey) {
            Some(c) => *c,
            None => {
                let mask = self.role_mask_of(&d.roles);
                let candidates: Vec<u32> = match &d.node_name {
                    Some(n) => {
                        let agents = &self.agents;
                        let by_host = self.by_host.get_or_insert_with(|| {
                            let mut m: FxMap<String, Vec<u32>> = FxMap::default();
                            for (i, a) in agents.iter().enumerate() {
                                m.entry(a.hostname.clone()).or_default().push(i as u32);
                            }
                            m
                        });
                        by_host.get(n).cloned().unwrap_or_default()
                    }
                    None => (0..self.agents.len() as u32).collect(),
                };
                let eligible: Vec<u32> = candidates
                    .into_iter()
                    .filter(|&a| self.static_miss(&self.agents[a as usize], d, mask).is_none())
                    .collect();
                let id = self.classes.len() as u32;
                let (spread, pack) = match self.cfg.strategy {
                    Strategy::Binpack => {
                        let mut open = Vec::new();
                        let mut open_at = Vec::with_capacity(eligible.len());
                        for (leaf, &a) in eligible.iter().enumerate() {
                            let ag = &self.agents[a as usize];
                            let pos = if ag.placed > 0 {
                                open.push(a);
                                (open.len() - 1) as u32
                            } else {
                                u32::MAX
                            };
                            open_at.push(pos);
                            self.pack_slots[a as usize].push((id, leaf as u32, pos));
                        }
                        let exec = &self.cfg.executor.resources;
                        let fresh = eligible.iter().zip(&open_at).map(|(&a, &pos)| {
                            if pos == u32::MAX {
                                pack_key(&self.agents[a as usize], exec)
                            } else {
                                NEVER
                            }
                        });
                        let mut open_free = FreeTree::new((0..eligible.len()).map(|_| NEVER));
                        for (i, &a) in open.iter().enumerate() {
                            open_free.set(i, pack_key(&self.agents[a as usize], exec));
                        }
                        let pack = PackIndex { open, open_free, fresh_free: FreeTree::new(fresh) };
                        (None, Some(pack))
                    }
                    Strategy::Spread { .. } => (Some(self.spread_index(id, &eligible)), None),
                };
                self.classes.push(ConstraintClass {
                    eligible,
                    spread,
                    pack,
                    mask,
                    static_counts: None,
                });
                class_ids.insert(ckey, id);
                id
            }
        };
        let mut fixed: Vec<u64> = d.fixed_ports().collect();
        fixed.sort_unstable();
        let wildcard = d.wildcard_ports();
        let skey = ShapeKey { class, resources: d.resources, fixed, wildcard };
        if let Some(s) = shape_ids.get(&skey) {
            return *s;
        }
        let order = self.role_bits(&d.roles).1;
        let mask = self.classes[class as usize].mask;
        self.shapes.push(Shape {
            rep: d,
            class,
            mask,
            order,
            fixed: skey.fixed.clone(),
            wildcard,
            cursor: 0,
            fresh: 0,
            dropped: Vec::new(),
            left: usize::MAX,
            unplaced: false,
            explanation: None,
        });
        let id = (self.shapes.len() - 1) as u32;
        shape_ids.insert(skey, id);
        id
    }

    /// The first static predicate (constraints that do not change during a plan) that fails,
    /// as a cheap code (no allocation); see [`Engine::materialize`].
    fn static_miss(&self, a: &Agent, d: &PodDemand, mask: u64) -> Option<StaticMiss> {
        if let Some(n) = &d.node_name
            && a.hostname != *n
        {
            return Some(StaticMiss::NodeName);
        }
        for (i, (k, v)) in d.node_selector.iter().enumerate() {
            if label(&a.labels, k) != Some(v.as_str()) {
                return Some(StaticMiss::Selector(i));
            }
        }
        if let Some(aff) = &d.affinity
            && !aff.matches(&a.labels)
        {
            return Some(StaticMiss::Affinity);
        }
        if a.public && !d.wants_public {
            return Some(StaticMiss::Public);
        }
        if a.maintenance {
            return Some(StaticMiss::Maintenance);
        }
        if a.blocked_by.is_some() {
            return Some(StaticMiss::Executor);
        }
        if !a.pools.iter().any(|p| p.in_mask(mask)) {
            return Some(StaticMiss::Role);
        }
        None
    }

    fn materialize(a: &Agent, d: &PodDemand, miss: StaticMiss) -> Reason {
        match miss {
            StaticMiss::NodeName => Reason::NodeNameMismatch,
            StaticMiss::Selector(i) => {
                let (key, value) = d.node_selector[i].clone();
                Reason::NodeSelectorMismatch { key, value }
            }
            StaticMiss::Affinity => Reason::AffinityMismatch,
            StaticMiss::Public => Reason::PublicAgent,
            StaticMiss::Maintenance => Reason::Maintenance,
            StaticMiss::Executor => {
                Reason::ExecutorMismatch { running: a.blocked_by.clone().unwrap_or_default() }
            }
            StaticMiss::Role => Reason::RoleNotOffered,
        }
    }

    fn spread_index(&mut self, class: u32, eligible: &[u32]) -> SpreadIndex {
        if matches!(self.cfg.strategy, Strategy::Spread { by: None }) {
            // Domains are agents: one level index, no inner one.
            let mut levels = Vec::with_capacity(eligible.len());
            for (ld, &a) in eligible.iter().enumerate() {
                let ag = &self.agents[a as usize];
                levels.push(ag.placed);
                self.domain_slots[ag.domain as usize].push((class, ld as u32));
            }
            return SpreadIndex {
                domains: Levels::new(levels),
                agents: Vec::new(),
                flat: eligible.to_vec(),
            };
        }
        let mut local_of: HashMap<u32, u32> = HashMap::new();
        let mut dom_levels = Vec::new();
        let mut agents: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        for &a in eligible {
            let ag = &self.agents[a as usize];
            let ld = *local_of.entry(ag.domain).or_insert_with(|| {
                dom_levels.push(self.domain_counts[ag.domain as usize]);
                agents.push((Vec::new(), Vec::new()));
                self.domain_slots[ag.domain as usize].push((class, agents.len() as u32 - 1));
                agents.len() as u32 - 1
            });
            let (levels, ids) = &mut agents[ld as usize];
            self.agent_slots[a as usize].push((class, ld, ids.len() as u32));
            levels.push(ag.placed);
            ids.push(a);
        }
        SpreadIndex {
            domains: Levels::new(dom_levels),
            agents: agents.into_iter().map(|(levels, ids)| (Levels::new(levels), ids)).collect(),
            flat: Vec::new(),
        }
    }

    /// Whether the pod shape fits the agent now; the group to procure from, or the reason.
    fn fit(&self, a: &Agent, s: &Shape<'_>) -> Result<usize, Reason> {
        let d = &s.rep.resources;
        let exec = if a.exec_paid { None } else { Some(&self.cfg.executor.resources) };
        for k in ScalarKind::ALL {
            if a.free_total.get(k) < d.get(k) {
                return Err(Reason::InsufficientScalar { kind: k });
            }
        }
        if let Some(e) = exec {
            for k in ScalarKind::ALL {
                if a.free_total.get(k) < d.get(k).saturating_add(e.get(k)) {
                    return Err(Reason::InsufficientForExecutor { kind: k });
                }
            }
        }
        let mut first_err = None;
        for (gi, &(start, end)) in a.groups.iter().enumerate() {
            if a.exec_group.is_some_and(|g| g != gi) {
                continue;
            }
            match self.fit_group(&a.pools[start..end], s, exec) {
                Ok(()) => return Ok(gi),
                Err(r) => {
                    first_err.get_or_insert(r);
                }
            }
        }
        Err(first_err.unwrap_or(Reason::RoleNotOffered))
    }

    fn fit_group(
        &self,
        pools: &[Pool],
        s: &Shape<'_>,
        exec: Option<&Scalars>,
    ) -> Result<(), Reason> {
        let d = &s.rep.resources;
        let mut avail = Scalars::ZERO;
        let mut any = false;
        let mut free_ports = 0u64;
        for p in pools.iter().filter(|p| p.in_mask(s.mask)) {
            any = true;
            avail = avail.plus(&p.free);
            free_ports = free_ports.saturating_add(p.free_ports);
        }
        if !any {
            return Err(Reason::RoleNotOffered);
        }
        for k in ScalarKind::ALL {
            if avail.get(k) < d.get(k) {
                return Err(Reason::InsufficientScalar { kind: k });
            }
        }
        if let Some(e) = exec {
            let fw = pools
                .iter()
                .filter(|p| p.in_mask(self.fw_mask))
                .fold(Scalars::ZERO, |acc, p| acc.plus(&p.free));
            for k in ScalarKind::ALL {
                if fw.get(k) < d.get(k).saturating_add(e.get(k)) {
                    return Err(Reason::InsufficientForExecutor { kind: k });
                }
            }
        }
        for &port in &s.fixed {
            if !pools.iter().any(|p| p.in_mask(s.mask) && p.ports.contains(port)) {
                return Err(
                    if pools.iter().any(|p| p.in_mask(s.mask) && p.offered_ports.contains(port)) {
                        Reason::PortTaken { port }
                    } else {
                        Reason::PortNotOffered { port }
                    },
                );
            }
        }
        let needed = s.fixed.len() + s.wildcard;
        if s.wildcard > 0 && free_ports < needed as u64 {
            return Err(Reason::NoFreePorts { needed });
        }
        Ok(())
    }

    /// The next agent for a pod of this shape, by the strategy. Agents that fail a shape are
    /// never tried again for it (failures are permanent within a plan).
    fn next_agent(&mut self, shape: u32) -> Option<(u32, usize)> {
        let si = shape as usize;
        let class = &self.classes[self.shapes[si].class as usize];
        match &class.spread {
            None => {
                // Binpack: first fit over the agents opened in this plan (in opening order),
                // then over the fresh ones (in rank order). A new agent is opened only when no
                // opened one takes the pod.
                let pack = class.pack.as_ref()?;
                let shape = &self.shapes[si];
                let need = (
                    shape.rep.resources.get(ScalarKind::Cpus).milli(),
                    shape.rep.resources.get(ScalarKind::Mem).milli(),
                );
                let (mut cursor, mut fresh) = (shape.cursor, shape.fresh);
                let mut found = None;
                while let Some(p) = pack.open_free.first_from(cursor, need) {
                    let a = pack.open[p];
                    cursor = p;
                    if let Ok(g) = self.fit(&self.agents[a as usize], shape) {
                        found = Some((a, g));
                        break;
                    }
                    cursor += 1;
                }
                if found.is_none() {
                    cursor = pack.open.len();
                    while let Some(p) = pack.fresh_free.first_from(fresh, need) {
                        let a = class.eligible[p];
                        fresh = p;
                        if let Ok(g) = self.fit(&self.agents[a as usize], shape) {
                            found = Some((a, g));
                            break;
                        }
                        fresh += 1;
                    }
                    if found.is_none() {
                        fresh = class.eligible.len();
                    }
                }
                let shape = &mut self.shapes[si];
                (shape.cursor, shape.fresh) = (cursor, fresh);
                found
            }
            Some(index) => {
                if self.shapes[si].left == 0 {
                    return None;
                }
                let mut dropped = std::mem::take(&mut self.shapes[si].dropped);
                if dropped.is_empty() {
                    dropped = vec![0u64; self.agents.len().div_ceil(64)];
                }
                let shape = &self.shapes[si];
                let mut left = shape.left.min(class.eligible.len());
                let mut found = None;
                let mut try_agent = |a: u32| -> bool {
                    let (word, bit) = (a as usize / 64, 1u64 << (a % 64));
                    if dropped[word] & bit != 0 {
                        return false;
                    }
                    match self.fit(&self.agents[a as usize], shape) {
                        Ok(g) => {
                            found = Some((a, g));
                            true
                        }
                        Err(_) => {
                            dropped[word] |= bit;
                            left -= 1;
                            left == 0
                        }
                    }
                };
                'search: for ld in index.domains.iter() {
                    if index.agents.is_empty() {
                        if try_agent(index.flat[ld as usize]) {
                            break 'search;
                        }
                        continue;
                    }
                    let (levels, ids) = &index.agents[ld as usize];
                    for la in levels.iter() {
                        if try_agent(ids[la as usize]) {
                            break 'search;
                        }
                    }
                }
                let shape = &mut self.shapes[si];
                shape.dropped = dropped;
                shape.left = left;
                found
            }
        }
    }

    /// Procures the pod (and a new executor if needed) from `group` of agent `ai`.
    fn place(&mut self, ai: u32, group: usize, si: u32, d: &PodDemand, pod_index: usize) -> usize {
        let shape = &self.shapes[si as usize];
        let (order, fw_order) = (&shape.order, &self.fw_order);
        let exec_res = self.cfg.executor.resources;
        let reserved = &self.reserved_ports;
        let agent = &mut self.agents[ai as usize];
        let (start, end) = agent.groups[group];
        let pools = &mut agent.pools[start..end];
        // Pools in role-preference order (scratch buffers: no allocation per pod).
        let by_roles = |order: &[u32], pools: &[Pool], v: &mut Vec<usize>| {
            v.clear();
            for &bit in order {
                for (i, p) in pools.iter().enumerate() {
                    if p.role_mask & (1u64 << bit) != 0 && !v.contains(&i) {
                        v.push(i);
                    }
                }
            }
        };
        let mut pod_pools = std::mem::take(&mut self.scratch);
        by_roles(order, pools, &mut pod_pools);

        let mut resources = take_scalars(pools, &pod_pools, &d.resources);
        if !agent.exec_paid {
            let mut exec_pools = Vec::new();
            by_roles(fw_order, pools, &mut exec_pools);
            agent.executor = Some(take_scalars(pools, &exec_pools, &exec_res));
            agent.exec_paid = true;
            agent.exec_group = Some(group);
            agent.free_total = sub(agent.free_total, &exec_res);
        }
        agent.free_total = sub(agent.free_total, &d.resources);

        // Ports: fixed first, then wildcard from the lowest free port in role order.
        let mut taken: Vec<Ranges> =
            if d.ports.is_empty() { Vec::new() } else { vec![Ranges::new(); pools.len()] };
        for p in &d.ports {
            if let HostPort::Fixed(port) = p.host_port
                && let Some(&pi) = pod_pools.iter().find(|&&pi| pools[pi].ports.contains(port))
            {
                pools[pi].ports.remove(port);
                pools[pi].free_ports -= 1;
                pools[pi].touched = true;
                taken[pi].insert(port);
            }
        }
        let mut assigned = Vec::with_capacity(d.ports.len());
        for p in &d.ports {
            let host = match p.host_port {
                HostPort::Fixed(port) => Some(port),
                HostPort::Any => {
                    // The lowest free port no pod of the batch wants as its fixed port, else
                    // the lowest free one; pools in role order.
                    let pick = pod_pools
                        .iter()
                        .find_map(|&pi| Some((pi, lowest_unreserved(&pools[pi].ports, reserved)?)))
                        .or_else(|| {
                            pod_pools.iter().find_map(|&pi| Some((pi, pools[pi].ports.first()?)))
                        });
                    pick.map(|(pi, port)| {
                        pools[pi].ports.remove(port);
                        pools[pi].free_ports -= 1;
                        pools[pi].touched = true;
                        taken[pi].insert(port);
                        port
                    })
                }
            };
            if let Some(host_port) = host {
                assigned.push(PortAssignment {
                    container: p.container.clone(),
                    container_port: p.container_port,
                    protocol: p.protocol.clone(),
                    name: p.name.clone(),
                    host_port,
                });
            }
        }
        if !taken.is_empty() {
            for &pi in &pod_pools {
                if !taken[pi].is_empty() {
                    let ports = std::mem::take(&mut taken[pi]);
                    resources.push(pools[pi].resource("ports", Value::Ranges(ports)));
                }
            }
        }
        self.scratch = pod_pools;
        agent.placed += 1;
        let domain = agent.domain as usize;
        let key = pack_key(agent, &exec_res);
        if let Some(slots) = self.pack_slots.get_mut(ai as usize) {
            for (c, leaf, pos) in slots.iter_mut() {
                if let Some(pack) = &mut self.classes[*c as usize].pack {
                    if *pos == u32::MAX {
                        *pos = pack.open.len() as u32;
                        pack.open.push(ai);
                        pack.fresh_free.set(*leaf as usize, NEVER);
                    }
                    pack.open_free.set(*pos as usize, key);
                }
            }
        }
        self.domain_counts[domain] += 1;
        if let Some(slots) = self.agent_slots.get(ai as usize) {
            for &(c, ld, la) in slots {
                if let Some(index) = &mut self.classes[c as usize].spread {
                    index.agents[ld as usize].0.bump(la);
                }
            }
        }
        if let Some(slots) = self.domain_slots.get(domain) {
            for &(c, ld) in slots {
                if let Some(index) = &mut self.classes[c as usize].spread {
                    index.domains.bump(ld);
                }
            }
        }
        let agent = &mut self.agents[ai as usize];
        agent.tasks.push(Task { pod: d.key.clone(), pod_index, resources, ports: assigned });
        agent.tasks.len() - 1
    }

    fn explain_unplaced(&mut self, known: &[KnownAgent], offers: &[Offer]) {
        if !self.shapes.iter().any(|s| s.unplaced) {
            return;
        }
        let caps = known_caps(self.cfg, &self.agents, known, offers);
        let mut usable_by_class: HashMap<usize, Usable> = HashMap::new();
        for si in 0..self.shapes.len() {
            if !self.shapes[si].unplaced {
                continue;
            }
            let ci = self.shapes[si].class as usize;
            if self.classes[ci].static_counts.is_none() {
                let rep = self.shapes[si].rep;
                let mask = self.shapes[si].mask;
                let mut codes: Vec<(StaticMiss, usize)> = Vec::new();
                let mut executors: BTreeMap<Reason, usize> = BTreeMap::new();
                for a in &self.agents {
                    match self.static_miss(a, rep, mask) {
                        None => {}
                        Some(StaticMiss::Executor) => {
                            *executors
                                .entry(Self::materialize(a, rep, StaticMiss::Executor))
                                .or_insert(0) += 1;
                        }
                        Some(code) => match codes.iter_mut().find(|(c, _)| *c == code) {
                            Some((_, n)) => *n += 1,
                            None => codes.push((code, 1)),
                        },
                    }
                }
                let mut counts: Vec<(Reason, usize)> = executors.into_iter().collect();
                if let Some(a) = self.agents.first() {
                    counts
                        .extend(codes.into_iter().map(|(c, n)| (Self::materialize(a, rep, c), n)));
                }
                self.classes[ci].static_counts = Some(counts);
            }
            let shape = &self.shapes[si];
            let class = &self.classes[ci];
            let mut counts: BTreeMap<Reason, usize> =
                class.static_counts.iter().flatten().cloned().collect();
            for &a in &class.eligible {
                let reason = self.fit(&self.agents[a as usize], shape).err();
                debug_assert!(reason.is_some(), "{} unplaced but fits agent {a}", shape.rep.key);
                if let Some(r) = reason {
                    *counts.entry(r).or_insert(0) += 1;
                }
            }
            let mut reasons: Vec<(Reason, usize)> = counts.into_iter().collect();
            reasons.sort_by(|(ra, ca), (rb, cb)| cb.cmp(ca).then_with(|| ra.cmp(rb)));
            let usable = usable_by_class
                .entry(ci)
                .or_insert_with(|| class_usable(shape.rep, shape.mask, &caps));
            let never_fits = never_fits(shape, usable);
            let e = Explanation { agents: self.agents.len(), reasons, never_fits };
            self.shapes[si].explanation = Some(Arc::new(e));
        }
    }

    fn finish(
        self,
        entries: &[Entry<'_>],
        offers: &[Offer],
        shape_of: &[u32],
        placed_at: &[Option<(u32, usize)>],
    ) -> Plan {
        let mut consumed = vec![false; offers.len()];
        let mut launch_of: Vec<Option<usize>> = vec![None; self.agents.len()];
        let mut order: Vec<usize> = (0..self.agents.len()).collect();
        order.sort_by(|a, b| self.agents[*a].id.cmp(&self.agents[*b].id));
        let mut launches = Vec::new();
        let mut notes = Vec::new();
        let mut agents = self.agents;
        for &ai in &order {
            let a = &mut agents[ai];
            if !a.stale.is_empty() {
                let action = if a.exec_paid && a.executor.is_none() {
                    ExecutorAction::CurrentAlsoRunning
                } else if a.blocked_by.is_some() {
                    ExecutorAction::Excluded
                } else {
                    ExecutorAction::SideBySide
                };
                notes.push(ExecutorNote {
                    agent_id: a.id.to_string(),
                    hostname: a.hostname.clone(),
                    stale: a.stale.clone(),
                    action,
                });
            }
            if a.tasks.is_empty() {
                continue;
            }
            // Consumed offers: closure over pools touched and the offers feeding them.
            for p in a.pools.iter_mut() {
                if p.touched || p.offers.iter().any(|o| consumed[*o]) {
                    p.touched = true;
                }
            }
            loop {
                let mut changed = false;
                for p in a.pools.iter().filter(|p| p.touched) {
                    for &o in &p.offers {
                        if !consumed[o] {
                            consumed[o] = true;
                            changed = true;
                        }
                    }
                }
                for p in a.pools.iter_mut().filter(|p| !p.touched) {
                    if p.offers.iter().any(|o| consumed[*o]) {
                        p.touched = true;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            let mut remaining = Vec::new();
            for p in a.pools.iter().filter(|p| p.touched) {
                for (k, v) in p.free.iter_nonzero() {
                    remaining.push(p.resource(k.name(), Value::Scalar(v)));
                }
                if !p.ports.is_empty() {
                    remaining.push(p.resource("ports", Value::Ranges(p.ports.clone())));
                }
            }
            remaining
                .extend(a.passthrough.iter().filter(|(o, _)| consumed[*o]).map(|(_, r)| r.clone()));
            let mut offer_ids: Vec<String> =
                a.offers.iter().filter(|o| consumed[**o]).map(|o| offers[*o].id.clone()).collect();
            offer_ids.sort();
            launch_of[ai] = Some(launches.len());
            launches.push(Launch {
                agent_id: a.id.to_string(),
                hostname: a.hostname.clone(),
                offer_ids,
                executor: a.executor.take(),
                tasks: std::mem::take(&mut a.tasks),
                remaining,
            });
        }
        // Offer IDs never consumed (a duplicated ID counts as consumed if any copy is).
        let consumed_ids: HashSet<&str> =
            offers.iter().zip(&consumed).filter(|(_, c)| **c).map(|(o, _)| o.id.as_str()).collect();
        let mut unused: Vec<String> = offers
            .iter()
            .filter(|o| !consumed_ids.contains(o.id.as_str()))
            .map(|o| o.id.clone())
            .collect();
        unused.sort();
        unused.dedup();

        let outcomes = entries
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Entry::Invalid(key, err) => {
                    PodOutcome { pod: key.clone(), outcome: Outcome::Invalid(err.clone()) }
                }
                Entry::Demand(d) => {
                    let outcome = match placed_at[i] {
                        Some((ai, task)) => Outcome::Placed {
                            agent_id: agents[ai as usize].id.clone(),
                            launch: launch_of[ai as usize].unwrap_or(usize::MAX),
                            task,
                        },
                        None => {
                            let e = self.shapes[shape_of[i] as usize]
                                .explanation
                                .clone()
                                .unwrap_or_else(|| {
                                    Arc::new(Explanation {
                                        agents: agents.len(),
                                        reasons: Vec::new(),
                                        never_fits: None,
                                    })
                                });
                            Outcome::Unplaced(e)
                        }
                    };
                    PodOutcome { pod: d.key.clone(), outcome }
                }
            })
            .collect();
        Plan { launches, unused_offers: unused, executor_notes: notes, outcomes }
    }
}

/// The framework roles (as bits) a resource serves: its reservation role if reserved; else
/// `*` and, for MULTI_ROLE offers, the role it is allocated to.
fn role_mask(cfg: &Config, r: &Resource) -> u64 {
    let bit = |role: &str| {
        cfg.framework_roles.iter().take(64).position(|x| x == role).map_or(0, |p| 1u64 << p)
    };
    if r.reservations.is_empty() {
        bit("*") | r.allocation_role.as_deref().map_or(0, bit)
    } else {
        bit(r.role())
    }
}

/// A [`FreeTree`] value no demand fits.
const NEVER: (i64, i64) = (i64::MIN, i64::MIN);

/// An agent's free (cpus, mem) in thousandths, less the executor if it still has to start
/// one: an upper bound of what any pod can get there.
fn pack_key(a: &Agent, exec: &Scalars) -> (i64, i64) {
    let (cpus, mem) = (a.free_total.get(ScalarKind::Cpus), a.free_total.get(ScalarKind::Mem));
    if a.exec_paid {
        (cpus.milli(), mem.milli())
    } else {
        (
            cpus.saturating_sub(exec.get(ScalarKind::Cpus)).milli(),
            mem.saturating_sub(exec.get(ScalarKind::Mem)).milli(),
        )
    }
}

fn public_by_attribute(cfg: &Config, labels: &[(String, String)]) -> bool {
    cfg.public_agents.attribute.as_ref().is_some_and(|(name, value)| {
        let v = label(labels, &attribute_label(name));
        match value {
            Some(want) => v == Some(want.as_str()),
            None => v.is_some(),
        }
    })
}

fn sub(a: Scalars, b: &Scalars) -> Scalars {
    let mut out = a;
    for k in ScalarKind::ALL {
        out.set(k, a.get(k).saturating_sub(b.get(k)));
    }
    out
}

/// The lowest port of `ports` not in `reserved` (sorted).
fn lowest_unreserved(ports: &Ranges, reserved: &[u64]) -> Option<u64> {
    for r in ports.ranges() {
        let mut i = reserved.partition_point(|&x| x < r.begin);
        let mut v = r.begin;
        loop {
            if reserved.get(i) != Some(&v) {
                return Some(v);
            }
            if v >= r.end {
                break;
            }
            v += 1;
            i += 1;
        }
    }
    None
}

/// Takes `want` from the pools in `order`, splitting across roles; the caller checked it fits.
fn take_scalars(pools: &mut [Pool], order: &[usize], want: &Scalars) -> Vec<Resource> {
    let mut out = Vec::new();
    for k in ScalarKind::ALL {
        let mut need = want.get(k);
        for &pi in order {
            if need <= Scalar::ZERO {
                break;
            }
            let have = pools[pi].free.get(k);
            let take = have.min(need);
            if take <= Scalar::ZERO {
                continue;
            }
            pools[pi].free.set(k, have.saturating_sub(take));
            pools[pi].touched = true;
            need = need.saturating_sub(take);
            out.push(pools[pi].resource(k.name(), Value::Scalar(take)));
        }
    }
    out
}

/// The known agents matching a pod's node constraints and public rule (same for a whole
/// constraint class), or the verdict when there are none.
fn matching_caps(d: &PodDemand, caps: &[KnownCap<'_>]) -> Result<Vec<usize>, NeverFits> {
    let labels_ok = |k: &KnownCap<'_>| {
        d.node_name.as_ref().is_none_or(|n| *n == k.hostname)
            && d.node_selector.iter().all(|(key, v)| label(&k.labels, key) == Some(v.as_str()))
            && d.affinity.as_ref().is_none_or(|a| a.matches(&k.labels))
    };
    let matching: Vec<usize> = (0..caps.len()).filter(|&i| labels_ok(&caps[i])).collect();
    if matching.is_empty() {
        if let Some(n) = &d.node_name
            && !caps.iter().any(|k| k.hostname == *n)
        {
            return Err(NeverFits::NoSuchNode { name: n.clone() });
        }
        for (key, v) in &d.node_selector {
            if !caps.iter().any(|k| label(&k.labels, key) == Some(v.as_str())) {
                return Err(NeverFits::SelectorMatchesNoAgent {
                    key: key.clone(),
                    value: v.clone(),
                });
            }
        }
        if let Some(a) = &d.affinity
            && !caps.iter().any(|k| a.matches(&k.labels))
        {
            return Err(NeverFits::AffinityMatchesNoAgent);
        }
        return Err(NeverFits::ConstraintsMatchNoAgent);
    }
    let matching: Vec<usize> =
        matching.into_iter().filter(|&i| !caps[i].public || d.wants_public).collect();
    if matching.is_empty() {
        return Err(NeverFits::OnlyPublicAgents);
    }
    Ok(matching)
}

/// What the known agents matching a constraint class can offer the class's roles: per agent,
/// the scalars and ports; `Err(Some(verdict))` when the class can never fit, `Err(None)` when
/// some matching agent's capacity is unknown (no verdict possible).
type Usable = Result<Vec<(Scalars, Ranges)>, Option<NeverFits>>;

fn class_usable(d: &PodDemand, mask: u64, caps: &[KnownCap<'_>]) -> Usable {
    if caps.is_empty() {
        return Err(None);
    }
    let matching = matching_caps(d, caps).map_err(Some)?;
    let mut usable: Vec<(Scalars, Ranges)> = Vec::with_capacity(matching.len());
    let mut any_role = false;
    for &i in &matching {
        let caps = caps[i].caps.as_ref().ok_or(None)?;
        let mut s = Scalars::ZERO;
        let mut r = Ranges::new();
        for (m, sc, rs) in caps {
            if mask & m != 0 {
                any_role = true;
                s = s.plus(sc);
                r.union_with(rs);
            }
        }
        usable.push((s, r));
    }
    if !any_role {
        return Err(Some(NeverFits::RolesNeverOffered { roles: d.roles.clone() }));
    }
    Ok(usable)
}

fn never_fits(shape: &Shape<'_>, usable: &Usable) -> Option<NeverFits> {
    let d = shape.rep;
    let usable = match usable {
        Err(verdict) => return verdict.clone(),
        Ok(u) => u,
    };
    for kind in ScalarKind::ALL {
        let demand = d.resources.get(kind);
        let largest = usable.iter().map(|(s, _)| s.get(kind)).max().unwrap_or(Scalar::ZERO);
        if largest < demand {
            return Some(NeverFits::TooLarge { kind, demand, largest });
        }
    }
    for &port in &shape.fixed {
        if !usable.iter().any(|(_, r)| r.contains(port)) {
            return Some(NeverFits::PortNeverOffered { port });
        }
    }
    let needed = shape.fixed.len() + shape.wildcard;
    let largest = usable.iter().map(|(_, r)| r.count()).max().unwrap_or(0);
    if needed as u64 > largest {
        return Some(NeverFits::TooManyPorts { needed, largest });
    }
    None
}

fn known_caps<'x>(
    cfg: &Config,
    agents: &'x [Agent],
    known: &'x [KnownAgent],
    offers: &'x [Offer],
) -> Vec<KnownCap<'x>> {
    let summarize =
        |resources: &mut dyn Iterator<Item = &Resource>| -> Vec<(u64, Scalars, Ranges)> {
            let mut by_mask: BTreeMap<u64, (Scalars, Ranges)> = BTreeMap::new();
            for r in resources {
                let mask = role_mask(cfg, r);
                if mask == 0 || r.revocable {
                    continue;
                }
                let e = by_mask.entry(mask).or_default();
                match (&r.value, ScalarKind::from_name(&r.name)) {
                    (Value::Scalar(s), Some(k)) => e.0.add(k, *s),
                    (Value::Ranges(rs), None) if r.name == "ports" => e.1.union_with(rs),
                    _ => {}
                }
            }
            by_mask.into_iter().map(|(m, (s, r))| (m, s, r)).collect()
        };
    let mut out = Vec::new();
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let index: HashMap<&str, &Agent> = agents.iter().map(|a| (&*a.id, a)).collect();
    let offered = |a: &Agent| -> Vec<(u64, Scalars, Ranges)> {
        summarize(&mut a.offers.iter().flat_map(|&i| offers[i].resources.iter()))
    };
    for k in known {
        if seen.insert(k.agent_id.as_str(), ()).is_some() {
            continue;
        }
        let agent = index.get(k.agent_id.as_str()).copied();
        let caps = if !k.capacity.is_empty() {
            Some(summarize(&mut k.capacity.iter()))
        } else {
            agent.map(offered)
        };
        let labels = agent_labels(&k.hostname, &k.attributes);
        let public = agent.map_or_else(
            || {
                cfg.public_agents
                    .role
                    .as_deref()
                    .is_some_and(|pr| k.capacity.iter().any(|r| r.role() == pr))
                    || public_by_attribute(cfg, &labels)
            },
            |a| a.public,
        );
        out.push(KnownCap { hostname: &k.hostname, labels: Cow::Owned(labels), public, caps });
    }
    for a in agents {
        if seen.insert(&a.id, ()).is_some() {
            continue;
        }
        out.push(KnownCap {
            hostname: &a.hostname,
            labels: Cow::Borrowed(&a.labels),
            public: a.public,
            caps: Some(offered(a)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_level_then_id() {
        let mut l = Levels::new([0, 1, 0, 2, 0]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![0, 2, 4, 1, 3]);
        l.bump(0);
        l.bump(2);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![4, 0, 1, 2, 3]);
        l.bump(4);
        l.bump(3);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![0, 1, 2, 4, 3]);
        let mut big = Levels::new(vec![0; 200]);
        for i in 0..130 {
            big.bump(i);
        }
        let order: Vec<u32> = big.iter().collect();
        assert_eq!(order.len(), 200);
        assert_eq!(order[..70], (130..200).collect::<Vec<_>>()[..]);
        assert_eq!(order[70..], (0..130).collect::<Vec<_>>()[..]);
    }

    /// A deterministic stream of numbers for the table tests below.
    fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed.max(1);
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(x)
        })
    }

    #[test]
    fn free_tree_matches_a_scan_under_drops_and_raises() {
        for seed in 1..40u64 {
            let mut n = numbers(seed);
            let len = (n.next().unwrap_or(0) % 70) as usize + 1;
            let mut exact: Vec<(i64, i64)> = (0..len)
                .map(|_| ((n.next().unwrap_or(0) % 9) as i64, (n.next().unwrap_or(0) % 9) as i64))
                .collect();
            let mut tree = FreeTree::new(exact.iter().copied());
            for _ in 0..300 {
                let leaf = (n.next().unwrap_or(0) % len as u64) as usize;
                let r = n.next().unwrap_or(0);
                exact[leaf] = if r.is_multiple_of(5) {
                    ((r % 9) as i64, (r / 9 % 9) as i64) // a raise or a drop
                } else {
                    (exact[leaf].0 - (r % 2) as i64, exact[leaf].1 - (r / 2 % 2) as i64)
                };
                tree.set(leaf, exact[leaf]);
                let from = (n.next().unwrap_or(0) % (len as u64 + 1)) as usize;
                let need = ((n.next().unwrap_or(0) % 9) as i64, (n.next().unwrap_or(0) % 9) as i64);
                let want = (from..len).find(|&i| exact[i].0 >= need.0 && exact[i].1 >= need.1);
                assert_eq!(tree.first_from(from, need), want, "seed {seed}");
            }
        }
    }

    #[test]
    fn wildcard_ports_skip_reserved_ones() {
        let ports = Ranges::from_pairs([(10, 12), (20, 21)]);
        assert_eq!(lowest_unreserved(&ports, &[]), Some(10));
        assert_eq!(lowest_unreserved(&ports, &[10, 11]), Some(12));
        assert_eq!(lowest_unreserved(&ports, &[5, 10, 11, 12, 15]), Some(20));
        assert_eq!(lowest_unreserved(&ports, &[10, 11, 12, 20, 21]), None);
        assert_eq!(
            lowest_unreserved(&Ranges::from_pairs([(u64::MAX, u64::MAX)]), &[u64::MAX]),
            None
        );
    }

    #[test]
    fn free_tree_finds_first_fit() {
        let mut t = FreeTree::new([(1, 9), (5, 1), (5, 5), (2, 2), (7, 7)].into_iter());
        assert_eq!(t.first_from(0, (4, 4)), Some(2));
        assert_eq!(t.first_from(3, (4, 4)), Some(4));
        assert_eq!(t.first_from(5, (0, 0)), None);
        t.set(2, (0, 0));
        assert_eq!(t.first_from(0, (4, 4)), Some(4));
        assert_eq!(t.first_from(0, (8, 0)), None);
        assert_eq!(FreeTree::new(std::iter::empty()).first_from(0, (0, 0)), None);
    }
}
