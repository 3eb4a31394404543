//! The matching algorithm behind [`crate::Matcher::plan`].
//!
//! Shape of the computation:
//! 1. Offers are merged per agent into *pools* (one per allocation role × reservation stack),
//!    and the agents ordered by the strategy's rank (binpack: agents already running the
//!    current executor first, then least free; spread: most free first; ties by agent ID).
//! 2. Pods with equal constraints share a *constraint class* whose eligible agents (node name,
//!    selector, affinity, public, maintenance, executor, roles) are computed once; pods with
//!    equal constraints, resources and ports share a *shape*. Every pod gets its class and
//!    shape before any is placed.
//! 3. Pods are taken by priority (high first), then, for binpack only, by the number of agents
//!    their class may use (fewest first), then by creation time and input order. Kubernetes
//!    priority stays the first key; among pods of one priority the most constrained go first,
//!    so a pod that can only use one rack gets it before pods that could go anywhere fill it.
//!    The sort is a radix sort over the bytes where the keys differ, stable, O(pods).
//! 4. Binpack: each pod goes to the first agent that fits among the agents of its class opened
//!    in this plan (in the order they were opened), else to the first fresh one in rank order,
//!    so an agent is opened only when no opened one can take the pod. A class keeps both lists
//!    in a [`PackIndex`] with a [`FreeTree`] each, a shape a cursor into each. Spread: a class
//!    keeps its agents in a [`Levels`] index by pods placed (per topology domain, then per
//!    agent); a shape walks it lowest level first, skipping agents it already failed on.
//! 5. A shape never revisits an agent that failed it: free resources and ports only shrink
//!    during a plan, and an executor is paid at most once per agent from the allocation group
//!    that later pods must use too, so a failure is permanent. Cost is therefore about
//!    O(pods + shapes × agents), not O(pods × agents). A class none of whose pods is left is
//!    no longer searched, so its indexes are no longer updated.
//! 6. A wildcard host port takes the lowest free port that no pod of the batch wants as its
//!    fixed port, falling back to the lowest free one, so a pod ordered earlier does not take
//!    the port a later one needs exactly.
//! 7. For every shape left with unplaced pods, the offered agents are checked against the final
//!    state to count the reasons (static ones once per constraint class), and the known agents
//!    are checked for a "can never fit" verdict (once per constraint class).

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ExecutorUpgrade, Strategy};
use crate::constraints::{NodeAffinity, label};
use crate::demand::{HostPort, InvalidPod, PodDemand, PodKey, PortRequest};
use crate::explain::{Explanation, NeverFits, Reason};
use crate::offer::{
    ATTRIBUTE_LABEL_PREFIX, Attribute, AttributeValue, HOSTNAME_LABEL, KnownAgent, Offer,
    attribute_label,
};
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

/// One input pod: a demand, or a spec that could not be converted (two words either way).
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    Demand(&'a PodDemand),
    Invalid(&'a (PodKey, InvalidPod)),
}

/// Resources of one agent sharing allocation role and reservation stack.
struct Pool {
    alloc: Option<String>,
    reservations: Vec<Reservation>,
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
            reservations: if self.reservations.is_empty() {
                Vec::new()
            } else {
                self.reservations.clone()
            },
            allocation_role: self.alloc.clone(),
            revocable: false,
        }
    }

    /// The role the pool's resources are usable for (as [`Resource::role`]).
    fn role(&self) -> &str {
        self.reservations.last().map_or("*", |r| r.role.as_str())
    }

    fn in_mask(&self, mask: u64) -> bool {
        self.role_mask & mask != 0
    }
}

struct Agent<'a> {
    id: Arc<str>,
    hostname: &'a str,
    attributes: &'a [Attribute],
    /// Node labels, built on first need (see [`Agent::label`]).
    labels: OnceCell<Vec<(String, String)>>,
    offers: Vec<usize>,
    pools: Vec<Pool>,
    /// `[start, end)` ranges of `pools` with the same allocation role when there are several;
    /// empty when all pools form one group (see [`Agent::group`]).
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
    /// Pods placed here in this plan (their tasks are in [`Engine::tasks`]).
    placed: u32,
}

impl Agent<'_> {
    /// Allocation groups: `[start, end)` ranges of `pools` with the same allocation role.
    fn group_count(&self) -> usize {
        if self.groups.is_empty() { usize::from(!self.pools.is_empty()) } else { self.groups.len() }
    }

    fn group(&self, gi: usize) -> (usize, usize) {
        self.groups.get(gi).copied().unwrap_or((0, self.pools.len()))
    }

    /// The node labels (hostname and attributes, see [`labels_of`]).
    fn labels(&self) -> &[(String, String)] {
        self.labels.get_or_init(|| crate::offer::agent_labels(self.hostname, self.attributes))
    }

    /// The value of one node label, as `label(self.labels(), key)` gives it, without building
    /// the labels for the keys selectors use: the hostname and text attributes.
    fn label(&self, key: &str) -> Option<Cow<'_, str>> {
        if let Some(labels) = self.labels.get() {
            return label(labels, key).map(Cow::Borrowed);
        }
        if key == HOSTNAME_LABEL {
            return Some(Cow::Borrowed(self.hostname));
        }
        let name = key.strip_prefix(ATTRIBUTE_LABEL_PREFIX)?;
        let mut values = self.attributes.iter().filter(|a| a.name == name);
        match (values.next(), values.next()) {
            (Some(Attribute { value: AttributeValue::Text(t), .. }), None) => {
                Some(Cow::Borrowed(t.as_str()))
            }
            (None, _) => None,
            // A repeated name or another kind of value: as the labels have it.
            _ => label(self.labels(), key).map(Cow::Borrowed),
        }
    }
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
    /// Pods of the class not yet taken: a class with none left is no longer searched, so its
    /// indexes are no longer kept up to date.
    pending: u32,
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
///
/// Leaves are exact; an inner node holds an upper bound of its subtree's maxima (per resource).
/// A raise is propagated at once, a drop is not: the bound stays valid, and a search that finds
/// a node whose children both fall short tightens that node then. Dropping is what a placement
/// does, many times per agent, while searches mostly stop at their starting leaf.
struct FreeTree {
    size: usize,
    /// Node `i` covers its subtree; leaves start at `size`. (max free cpus, max free mem).
    max: Vec<Cell<(i64, i64)>>,
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
        FreeTree { size, max: max.into_iter().map(Cell::new).collect() }
    }

    fn set(&mut self, leaf: usize, free: (i64, i64)) {
        let mut i = self.size + leaf;
        self.max[i].set(free);
        while i > 1 {
            i /= 2;
            let m = self.max[i].get();
            if m.0 >= free.0 && m.1 >= free.1 {
                break; // still an upper bound, and so are the ancestors
            }
            self.max[i].set((m.0.max(free.0), m.1.max(free.1)));
        }
    }

    /// The first leaf at or after `from` with at least `need` free.
    fn first_from(&self, from: usize, need: (i64, i64)) -> Option<usize> {
        let fits = |m: (i64, i64)| m.0 >= need.0 && m.1 >= need.1;
        if from >= self.size {
            return None;
        }
        let mut i = self.size + from;
        if fits(self.max[i].get()) {
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
            if !fits(self.max[i].get()) {
                continue;
            }
            // Leftmost fitting leaf below `i`. A node's bound fitting does not mean a leaf
            // fits (bounds are loose, and per resource), so a descent can dead-end: the node is
            // tightened and the search goes on to the right of it.
            while i < self.size {
                let (l, r) = (self.max[2 * i].get(), self.max[2 * i + 1].get());
                if fits(l) {
                    i *= 2;
                } else if fits(r) {
                    i = 2 * i + 1;
                } else {
                    self.max[i].set((l.0.max(r.0), l.1.max(r.1)));
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

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ClassKey<'a> {
    node_name: Option<&'a str>,
    selector: &'a [(String, String)],
    affinity: Option<&'a NodeAffinity>,
    roles: &'a [String],
    wants_public: bool,
}

/// What decides a pod's shape, borrowed from the pod: one hash lookup per pod finds its shape.
/// Pods asking the same host ports in another order or for other containers get their own
/// entry here but share the shape (see [`ShapeKey`]).
#[derive(PartialEq, Eq, Hash)]
struct PodShapeKey<'a> {
    class: ClassKey<'a>,
    resources: Scalars,
    ports: &'a [PortRequest],
}

#[derive(PartialEq, Eq, Hash)]
struct ShapeKey {
    class: u32,
    resources: Scalars,
    fixed: Vec<u64>,
    wildcard: usize,
}

/// The lookup tables from pods to shapes and classes.
#[derive(Default)]
struct ShapeIds<'a> {
    /// Shapes of pods without constraints and host ports, with the roles `plain_roles`.
    plain: FxMap<Scalars, u32>,
    plain_roles: Option<&'a [String]>,
    pods: FxMap<PodShapeKey<'a>, u32>,
    classes: FxMap<ClassKey<'a>, u32>,
    shapes: FxMap<ShapeKey, u32>,
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
    agents: Vec<Agent<'a>>,
    /// Agent indices in agent ID order (the plan lists launches in that order).
    by_id: Vec<u32>,
    /// Some offer ID appears more than once in the input.
    duplicate_ids: bool,
    /// The tasks of this plan and their agents, in placement order.
    tasks: Vec<(u32, Task)>,
    domain_counts: Vec<u32>,
    /// Agents by hostname, built on the first pod with `spec.nodeName`.
    by_host: Option<FxMap<&'a str, Vec<u32>>>,
    /// Agents by the value of a label, per label key some `nodeSelector` names first.
    by_label: FxMap<String, FxMap<String, Vec<u32>>>,
    classes: Vec<ConstraintClass>,
    shapes: Vec<Shape<'a>>,
    /// Reused buffers of pool indices and of (pool, port) pairs (see `place`).
    scratch: Vec<usize>,
    port_scratch: Vec<(usize, u64)>,
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

    // One pass over the pods (each read once here while hot): its constraint class and shape,
    // the fixed host ports wanted, and its sort key but for the class size (binpack orders by
    // the size of the class, known once every pod has its class).
    let mut ids = ShapeIds::default();
    let mut shape_of: Vec<u32> = vec![u32::MAX; entries.len()];
    let mut reserved: Vec<u64> = Vec::new();
    let mut keys: Vec<PodOrder> = Vec::with_capacity(entries.len());
    let mut last_time = (now, time_key(now)); // pods of a batch often share a creation time
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Demand(d) = e {
            let shape = engine.shape_for(d, &mut ids);
            shape_of[i] = shape;
            engine.classes[engine.shapes[shape as usize].class as usize].pending += 1;
            reserved.extend(d.fixed_ports());
            // Priority descending as an unsigned number, then creation time.
            let priority = !(d.priority.cast_unsigned() ^ 0x8000_0000);
            let created = d.created.unwrap_or(now);
            if created != last_time.0 {
                last_time = (created, time_key(created));
            }
            let (secs, nanos) = last_time.1;
            keys.push(PodOrder { first: u64::from(priority) << 32, secs, nanos, index: i });
        }
    }
    reserved.sort_unstable();
    reserved.dedup();
    engine.reserved_ports = reserved;

    // Pods in order: priority (high first); binpack: then fewest eligible agents first (by the
    // class's rank among the distinct class sizes, a small number); then creation time, input
    // order.
    if matches!(cfg.strategy, Strategy::Binpack) {
        let mut sizes: Vec<usize> = engine.classes.iter().map(|c| c.eligible.len()).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let rank: Vec<u64> = engine
            .classes
            .iter()
            .map(|c| sizes.partition_point(|&n| n < c.eligible.len()) as u64)
            .collect();
        for k in &mut keys {
            k.first |= rank[engine.shapes[shape_of[k.index] as usize].class as usize];
        }
    }
    sort_pods(&mut keys);
    engine.tasks.reserve_exact(keys.len());

    // Per pod: its agent, its task there, and the copy of its key for its outcome (taken
    // here, where the key is in cache anyway).
    let mut placed_at: Vec<Option<(u32, usize, PodKey)>> = vec![None; entries.len()];
    for &PodOrder { index: idx, .. } in &keys {
        let Entry::Demand(d) = entries[idx] else { continue };
        let shape = shape_of[idx];
        engine.classes[engine.shapes[shape as usize].class as usize].pending -= 1;
        match engine.next_agent(shape) {
            Some((agent, group)) => {
                let task = engine.place(agent, group, shape, d, idx);
                placed_at[idx] = Some((agent, task, d.key.clone()));
            }
            None => engine.shapes[shape as usize].unplaced = true,
        }
    }

    engine.explain_unplaced(known, offers);
    engine.finish(entries, offers, &shape_of, placed_at)
}

impl<'a> Engine<'a> {
    fn new(
        cfg: &'a Config,
        offers: &'a [Offer],
        known: &[KnownAgent],
        now: SystemTime,
    ) -> Engine<'a> {
        let fw_order: Vec<u32> = (0..cfg.framework_roles.len().min(64) as u32).collect();
        let fw_mask = fw_order.iter().fold(0u64, |m, b| m | (1u64 << b));

        // Offers by agent, deterministic; duplicate offer IDs are ignored.
        let mut by_agent: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut seen_ids: FxMap<&str, ()> = FxMap::default();
        seen_ids.reserve(offers.len());
        let mut duplicate_ids = false;
        for (i, o) in offers.iter().enumerate() {
            if seen_ids.insert(o.id.as_str(), ()).is_none() {
                by_agent.entry(o.agent_id.as_str()).or_default().push(i);
            } else {
                duplicate_ids = true;
            }
        }
        let known_by_id: FxMap<&str, &KnownAgent> =
            known.iter().map(|k| (k.agent_id.as_str(), k)).collect();

        let mut agents = Vec::with_capacity(by_agent.len());
        for (agent_id, mut idxs) in by_agent {
            idxs.sort_by(|a, b| offers[*a].id.cmp(&offers[*b].id));
            let first = &offers[idxs[0]];
            let mut pools: Vec<Pool> = Vec::with_capacity(1);
            let mut passthrough = Vec::new();
            let mut running: Vec<&str> = Vec::new();
            let mut maintenance = false;
            for &oi in &idxs {
                let o = &offers[oi];
                running.extend(o.executor_ids.iter().map(String::as_str));
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
                (&a.alloc, a.role(), &a.reservations).cmp(&(&b.alloc, b.role(), &b.reservations))
            });
            for p in &mut pools {
                p.free_ports = p.ports.count();
            }
            let mut groups: Vec<(usize, usize)> = Vec::new();
            if pools.iter().any(|p| p.alloc != pools[0].alloc) {
                for i in 0..pools.len() {
                    match groups.last_mut() {
                        Some(g) if pools[g.0].alloc == pools[i].alloc => g.1 = i + 1,
                        _ => groups.push((i, i + 1)),
                    }
                }
            }
            let free_total = pools
                .iter()
                .filter(|p| p.role_mask != 0)
                .fold(Scalars::ZERO, |acc, p| acc.plus(&p.free));

            let k = known_by_id.get(agent_id);
            if let Some(k) = k {
                running.extend(k.executor_ids.iter().map(String::as_str));
            }
            running.sort();
            running.dedup();
            let exec_paid = running.contains(&cfg.executor.id.as_str());
            let stale: Vec<String> =
                running.into_iter().filter(|e| *e != cfg.executor.id).map(str::to_owned).collect();
            let blocked_by = match (&stale.first(), exec_paid, cfg.executor.upgrade) {
                (Some(s), false, ExecutorUpgrade::Exclusive) => Some((*s).clone()),
                _ => None,
            };
            let public_role = cfg.public_agents.role.as_deref();
            let public_by_role = public_role.is_some_and(|pr| {
                pools.iter().any(|p| p.role() == pr || p.alloc.as_deref() == Some(pr))
                    || k.is_some_and(|k| k.capacity.iter().any(|r| r.role() == pr))
            });
            let labels = OnceCell::new();
            let public = public_by_role
                || cfg.public_agents.attribute.is_some()
                    && public_by_attribute(
                        cfg,
                        labels.get_or_init(|| {
                            crate::offer::agent_labels(&first.hostname, &first.attributes)
                        }),
                    );
            agents.push(Agent {
                id: Arc::from(agent_id),
                hostname: &first.hostname,
                attributes: &first.attributes,
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
            });
        }

        // Rank agents for the strategy (the vector order is the rank). They are in ID order
        // here, and the sort is stable: ties go by agent ID.
        let cpus = |a: &Agent<'_>| a.free_total.get(ScalarKind::Cpus);
        let mem = |a: &Agent<'_>| a.free_total.get(ScalarKind::Mem);
        let mut rank: Vec<u32> = (0..agents.len() as u32).collect();
        match cfg.strategy {
            Strategy::Binpack => rank.sort_by_key(|&i| {
                let a = &agents[i as usize];
                (!a.exec_paid, cpus(a), mem(a))
            }),
            Strategy::Spread { .. } => rank.sort_by_key(|&i| {
                let a = &agents[i as usize];
                (!a.exec_paid, Reverse(cpus(a)), Reverse(mem(a)))
            }),
        }
        let mut by_id = vec![0u32; agents.len()];
        for (r, &i) in rank.iter().enumerate() {
            by_id[i as usize] = r as u32;
        }
        let mut unranked: Vec<Option<Agent<'_>>> = agents.into_iter().map(Some).collect();
        let mut agents: Vec<Agent<'_>> =
            rank.iter().filter_map(|&i| unranked[i as usize].take()).collect();

        // Topology domains.
        let domain_count = match &cfg.strategy {
            Strategy::Spread { by: Some(attr) } => {
                let key = attribute_label(attr);
                let mut values: BTreeMap<Option<String>, u32> = BTreeMap::new();
                for a in &agents {
                    values.entry(a.label(&key).map(Cow::into_owned)).or_insert(0);
                }
                for (i, v) in values.values_mut().enumerate() {
                    *v = i as u32;
                }
                for a in &mut agents {
                    a.domain = values[&a.label(&key).map(Cow::into_owned)];
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
            by_id,
            duplicate_ids,
            tasks: Vec::new(),
            scratch: Vec::new(),
            port_scratch: Vec::new(),
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
            by_label: FxMap::default(),
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

    fn shape_for(&mut self, d: &'a PodDemand, ids: &mut ShapeIds<'a>) -> u32 {
        // Most pods of a batch have no constraints or ports and the same roles: their shape is
        // a function of their resources alone.
        let plain = d.node_name.is_none()
            && d.node_selector.is_empty()
            && d.affinity.is_none()
            && !d.wants_public
            && d.ports.is_empty()
            && ids.plain_roles.is_none_or(|r| r == d.roles.as_slice());
        if plain && let Some(&s) = ids.plain.get(&d.resources) {
            return s;
        }
        let ckey = ClassKey {
            node_name: d.node_name.as_deref(),
            selector: &d.node_selector,
            affinity: d.affinity.as_ref(),
            roles: &d.roles,
            wants_public: d.wants_public,
        };
        let pkey = PodShapeKey { class: ckey, resources: d.resources, ports: &d.ports };
        let shape = match ids.pods.get(&pkey) {
            Some(&s) => s,
            None => {
                let s = self.new_shape(d, ckey, ids);
                ids.pods.insert(pkey, s);
                s
            }
        };
        if plain {
            ids.plain_roles = Some(&d.roles);
            ids.plain.insert(d.resources, shape);
        }
        shape
    }

    /// The shape of a pod not seen before (which may still share a known shape).
    fn new_shape(&mut self, d: &'a PodDemand, ckey: ClassKey<'a>, ids: &mut ShapeIds<'a>) -> u32 {
        let (class_ids, shape_ids) = (&mut ids.classes, &mut ids.shapes);
        let class = match class_ids.get(&ckey) {
            Some(c) => *c,
            None => {
                let mask = self.role_mask_of(&d.roles);
                // Agents that can pass at all: by hostname or by the first selector label,
                // else all (rank order either way); the static predicates decide.
                let agents = &self.agents;
                let candidates: Vec<u32> = match (&d.node_name, d.node_selector.first()) {
                    (Some(n), _) => {
                        let by_host = self.by_host.get_or_insert_with(|| {
                            let mut m: FxMap<&'a str, Vec<u32>> = FxMap::default();
                            for (i, a) in agents.iter().enumerate() {
                                m.entry(a.hostname).or_default().push(i as u32);
                            }
                            m
                        });
                        by_host.get(n.as_str()).cloned().unwrap_or_default()
                    }
                    (None, Some((key, value))) => {
                        let by_value = self.by_label.entry(key.clone()).or_insert_with(|| {
                            let mut m: FxMap<String, Vec<u32>> = FxMap::default();
                            for (i, a) in agents.iter().enumerate() {
                                if let Some(v) = a.label(key) {
                                    match m.get_mut(v.as_ref()) {
                                        Some(list) => list.push(i as u32),
                                        None => {
                                            m.insert(v.into_owned(), vec![i as u32]);
                                        }
                                    }
                                }
                            }
                            m
                        });
                        by_value.get(value).cloned().unwrap_or_default()
                    }
                    (None, None) => (0..self.agents.len() as u32).collect(),
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
                    pending: 0,
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
    fn static_miss(&self, a: &Agent<'_>, d: &PodDemand, mask: u64) -> Option<StaticMiss> {
        if let Some(n) = &d.node_name
            && a.hostname != n.as_str()
        {
            return Some(StaticMiss::NodeName);
        }
        for (i, (k, v)) in d.node_selector.iter().enumerate() {
            if a.label(k).as_deref() != Some(v.as_str()) {
                return Some(StaticMiss::Selector(i));
            }
        }
        if let Some(aff) = &d.affinity
            && !aff.matches(a.labels())
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

    fn materialize(a: &Agent<'_>, d: &PodDemand, miss: StaticMiss) -> Reason {
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
    fn fit(&self, a: &Agent<'_>, s: &Shape<'_>) -> Result<usize, Reason> {
        let d = &s.rep.resources;
        // The common case, one pool and no host ports: enough free is enough. Anything else,
        // and every refusal (whose reason matters), takes the full checks below.
        if let [p] = a.pools.as_slice()
            && s.fixed.is_empty()
            && s.wildcard == 0
            && p.in_mask(s.mask)
        {
            let need = if a.exec_paid {
                Some(*d)
            } else if p.in_mask(self.fw_mask) {
                Some(d.plus(&self.cfg.executor.resources))
            } else {
                None
            };
            if need.is_some_and(|n| ScalarKind::ALL.into_iter().all(|k| p.free.get(k) >= n.get(k)))
            {
                return Ok(0);
            }
        }
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
        for gi in 0..a.group_count() {
            let (start, end) = a.group(gi);
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
        let (start, end) = agent.group(group);
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

        let mut resources =
            take_scalars(pools, &pod_pools, &d.resources, usize::from(!d.ports.is_empty()));
        if !agent.exec_paid {
            let mut exec_pools = Vec::new();
            by_roles(fw_order, pools, &mut exec_pools);
            agent.executor = Some(take_scalars(pools, &exec_pools, &exec_res, 0));
            agent.exec_paid = true;
            agent.exec_group = Some(group);
            agent.free_total = sub(agent.free_total, &exec_res);
        }
        agent.free_total = sub(agent.free_total, &d.resources);

        // Ports: fixed first, then wildcard from the lowest free port in role order.
        // (pool, port) taken for the pod (scratch buffer: no allocation per pod).
        let mut taken = std::mem::take(&mut self.port_scratch);
        taken.clear();
        for p in &d.ports {
            if let HostPort::Fixed(port) = p.host_port
                && let Some(&pi) = pod_pools.iter().find(|&&pi| pools[pi].ports.contains(port))
            {
                pools[pi].ports.remove(port);
                pools[pi].free_ports -= 1;
                pools[pi].touched = true;
                taken.push((pi, port));
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
                        taken.push((pi, port));
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
        if let [(pi, port)] = taken[..] {
            resources.push(pools[pi].resource("ports", Value::Ranges(Ranges::single(port))));
        } else if !taken.is_empty() {
            for &pi in &pod_pools {
                let ports = taken.iter().filter(|(tp, _)| *tp == pi).map(|&(_, port)| (port, port));
                let ports = Ranges::from_pairs(ports);
                if !ports.is_empty() {
                    resources.push(pools[pi].resource("ports", Value::Ranges(ports)));
                }
            }
        }
        self.scratch = pod_pools;
        self.port_scratch = taken;
        agent.placed += 1;
        let domain = agent.domain as usize;
        let key = pack_key(agent, &exec_res);
        if let Some(slots) = self.pack_slots.get_mut(ai as usize) {
            for (c, leaf, pos) in slots.iter_mut() {
                let class = &mut self.classes[*c as usize];
                if class.pending == 0 {
                    continue;
                }
                if let Some(pack) = &mut class.pack {
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
                let class = &mut self.classes[c as usize];
                if let Some(index) = class.spread.as_mut().filter(|_| class.pending > 0) {
                    index.agents[ld as usize].0.bump(la);
                }
            }
        }
        if let Some(slots) = self.domain_slots.get(domain) {
            for &(c, ld) in slots {
                let class = &mut self.classes[c as usize];
                if let Some(index) = class.spread.as_mut().filter(|_| class.pending > 0) {
                    index.domains.bump(ld);
                }
            }
        }
        let task = Task { pod: d.key.clone(), pod_index, resources, ports: assigned };
        self.tasks.push((ai, task));
        self.agents[ai as usize].placed as usize - 1
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
        placed_at: Vec<Option<(u32, usize, PodKey)>>,
    ) -> Plan {
        let mut consumed = vec![false; offers.len()];
        let mut launch_of: Vec<Option<usize>> = vec![None; self.agents.len()];
        let mut launches = Vec::new();
        let mut notes = Vec::new();
        let mut agents = self.agents;
        for &ai in &self.by_id {
            let ai = ai as usize;
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
                    hostname: a.hostname.to_owned(),
                    stale: a.stale.clone(),
                    action,
                });
            }
            if a.placed == 0 {
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
            let mut remaining = Vec::with_capacity(4 * a.pools.len());
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
                hostname: a.hostname.to_owned(),
                offer_ids,
                executor: a.executor.take(),
                tasks: Vec::with_capacity(a.placed as usize),
                remaining,
            });
        }
        for (ai, task) in self.tasks {
            if let Some(l) = launch_of[ai as usize] {
                launches[l].tasks.push(task);
            }
        }
        // Offer IDs never consumed (a duplicated ID counts as consumed if any copy is).
        let mut unused: Vec<String> = if self.duplicate_ids {
            let consumed_ids: FxMap<&str, ()> = offers
                .iter()
                .zip(&consumed)
                .filter(|(_, c)| **c)
                .map(|(o, _)| (o.id.as_str(), ()))
                .collect();
            offers
                .iter()
                .filter(|o| !consumed_ids.contains_key(o.id.as_str()))
                .map(|o| o.id.clone())
                .collect()
        } else {
            offers.iter().zip(&consumed).filter(|(_, c)| !**c).map(|(o, _)| o.id.clone()).collect()
        };
        unused.sort();
        unused.dedup();

        let outcomes = entries
            .iter()
            .zip(placed_at)
            .enumerate()
            .map(|(i, (e, placed))| match (e, placed) {
                (Entry::Invalid((key, err)), _) => {
                    PodOutcome { pod: key.clone(), outcome: Outcome::Invalid(err.clone()) }
                }
                (Entry::Demand(_), Some((ai, task, pod))) => {
                    let outcome = Outcome::Placed {
                        agent_id: agents[ai as usize].id.clone(),
                        launch: launch_of[ai as usize].unwrap_or(usize::MAX),
                        task,
                    };
                    PodOutcome { pod, outcome }
                }
                (Entry::Demand(d), None) => {
                    let why = self.shapes[shape_of[i] as usize].explanation.clone();
                    let why = why.unwrap_or_else(|| {
                        Arc::new(Explanation {
                            agents: agents.len(),
                            reasons: Vec::new(),
                            never_fits: None,
                        })
                    });
                    PodOutcome { pod: d.key.clone(), outcome: Outcome::Unplaced(why) }
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

/// A pod's place in the order: `(first, secs, nanos)` ascending, then input `index`.
#[derive(Clone, Copy)]
struct PodOrder {
    first: u64,
    secs: u64,
    nanos: u32,
    index: usize,
}

/// Sorts by `(first, secs, nanos)`, equal keys in input order: a least-significant-byte-first
/// radix sort (stable) over the byte positions where the keys differ, usually few (few
/// priorities, classes and creation times). O(n) for a batch of any size.
fn sort_pods(items: &mut [PodOrder]) {
    #[inline(always)]
    fn words(it: &PodOrder) -> [u64; 3] {
        [u64::from(it.nanos), it.secs, it.first]
    }
    // Bits set in some key and clear in another.
    let (mut any, mut all) = ([0u64; 3], [u64::MAX; 3]);
    for it in items.iter() {
        for (k, w) in words(it).into_iter().enumerate() {
            any[k] |= w;
            all[k] &= w;
        }
    }
    let mut buf: Vec<PodOrder> = Vec::new();
    for k in 0..3 {
        for shift in (0..64).step_by(8) {
            if ((any[k] ^ all[k]) >> shift) & 0xff == 0 {
                continue;
            }
            let byte = |it: &PodOrder| ((words(it)[k] >> shift) & 0xff) as usize;
            let mut next = [0usize; 256];
            for it in items.iter() {
                next[byte(it)] += 1;
            }
            let mut sum = 0;
            for n in next.iter_mut() {
                (*n, sum) = (sum, sum + *n);
            }
            buf.clear();
            buf.extend_from_slice(items);
            for it in &buf {
                let b = byte(it);
                items[next[b]] = *it;
                next[b] += 1;
            }
        }
    }
}

/// A time as (seconds, nanoseconds) since the Unix epoch, the seconds shifted to unsigned so
/// that the pair orders as the time does.
fn time_key(t: SystemTime) -> (u64, u32) {
    const SHIFT: u64 = 1 << 63;
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (SHIFT.saturating_add(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            // Before the epoch: -d = -(s + n) = -(s + 1) + (1e9 - n) for n > 0.
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (SHIFT.saturating_sub(d.as_secs()), 0),
                n => (SHIFT.saturating_sub(d.as_secs()).saturating_sub(1), 1_000_000_000 - n),
            }
        }
    }
}

/// A [`FreeTree`] value no demand fits.
const NEVER: (i64, i64) = (i64::MIN, i64::MIN);

/// An agent's free (cpus, mem) in thousandths, less the executor if it still has to start
/// one: an upper bound of what any pod can get there.
fn pack_key(a: &Agent<'_>, exec: &Scalars) -> (i64, i64) {
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
/// `extra`: room to leave in the returned vector for resources the caller adds.
fn take_scalars(
    pools: &mut [Pool],
    order: &[usize],
    want: &Scalars,
    extra: usize,
) -> Vec<Resource> {
    let mut out = Vec::with_capacity(want.iter_nonzero().count() + extra);
    if let [pi] = *order {
        // One pool, the common case: one resource per kind wanted.
        let pool = &mut pools[pi];
        for (k, need) in want.iter_nonzero() {
            let have = pool.free.get(k);
            let take = have.min(need);
            if take > Scalar::ZERO {
                pool.free.set(k, have.saturating_sub(take));
                pool.touched = true;
                out.push(pool.resource(k.name(), Value::Scalar(take)));
            }
        }
        return out;
    }
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
    agents: &'x [Agent<'x>],
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
    let index: HashMap<&str, &Agent<'_>> = agents.iter().map(|a| (&*a.id, a)).collect();
    let offered = |a: &Agent<'_>| -> Vec<(u64, Scalars, Ranges)> {
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
        let labels = crate::offer::agent_labels(&k.hostname, &k.attributes);
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
            hostname: a.hostname,
            labels: Cow::Borrowed(a.labels()),
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
    fn pods_sort_by_key_then_input_order() {
        for seed in 1..30u64 {
            let mut n = numbers(seed);
            let len = (n.next().unwrap_or(0) % 300) as usize;
            let mut items: Vec<PodOrder> = (0..len)
                .map(|index| {
                    let r = n.next().unwrap_or(0);
                    PodOrder {
                        first: if seed.is_multiple_of(2) { r % 3 } else { r >> (r % 64) },
                        secs: (1 << 63) + (r >> 8) % 4 * 1_000_000,
                        nanos: (r >> 20) as u32 % 3,
                        index,
                    }
                })
                .collect();
            let mut want: Vec<(u64, u64, u32, usize)> =
                items.iter().map(|p| (p.first, p.secs, p.nanos, p.index)).collect();
            want.sort();
            sort_pods(&mut items);
            let got: Vec<(u64, u64, u32, usize)> =
                items.iter().map(|p| (p.first, p.secs, p.nanos, p.index)).collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn time_keys_order_as_times() {
        use std::time::Duration;
        let epoch = SystemTime::UNIX_EPOCH;
        let times = [
            epoch - Duration::new(5, 1),
            epoch - Duration::new(5, 0),
            epoch - Duration::new(4, 999_999_999),
            epoch - Duration::new(0, 1),
            epoch,
            epoch + Duration::new(0, 1),
            epoch + Duration::new(1_700_000_000, 0),
            epoch + Duration::new(1_700_000_000, 5),
        ];
        for w in times.windows(2) {
            assert!(time_key(w[0]) < time_key(w[1]), "{:?} {:?}", w[0], w[1]);
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
