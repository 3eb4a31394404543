//! Allocation policy: weighted DRF ordering and decline filters.
//!
//! A client is one (framework, role). Its dominant share is the largest
//! fraction it holds of any scalar resource of the cluster. Roles are taken
//! in ascending order of their share divided by their weight, and within a
//! role, frameworks in ascending order of their share — as Mesos's
//! hierarchical allocator does. Both orders live in ordered sets, so each
//! allocation decision costs O(log n) rather than a sort.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use km_resources::{Resources, Scalar};
use tokio::time::Instant;

/// Whether resources are worth offering: Mesos's default
/// `--min_allocatable_resources`, at least 0.01 cpus or 32 MB of memory.
pub(crate) fn is_allocatable(rs: &Resources) -> bool {
    rs.scalar("cpus") >= Scalar::from_milli(10) || rs.scalar("mem") >= Scalar::from_units(32)
}

/// One (framework, role) competing for resources.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) framework_id: String,
    pub(crate) role: String,
    pub(crate) allocated: Resources,
}

/// Sorting key of a share: ordered, exact enough for ties to fall back to names.
fn key(share: f64) -> u64 {
    (share.clamp(0.0, 1e6) * 1e9) as u64
}

/// The DRF order of clients during one allocation run.
#[derive(Debug)]
pub(crate) struct Order {
    clients: Vec<Client>,
    names: Vec<String>,
    totals: Vec<f64>,
    /// Per client: allocated amount of each scalar name (by index into `names`).
    client_alloc: Vec<Vec<f64>>,
    role_alloc: BTreeMap<String, Vec<f64>>,
    weights: BTreeMap<String, f64>,
    /// (role share key, role).
    roles: BTreeSet<(u64, String)>,
    role_key: BTreeMap<String, u64>,
    /// role → (client share key, framework id, client index).
    by_role: BTreeMap<String, BTreeSet<(u64, String, usize)>>,
    client_key: Vec<u64>,
}

impl Order {
    pub(crate) fn new(
        clients: Vec<Client>,
        totals: &Resources,
        weights: &BTreeMap<String, f64>,
    ) -> Order {
        let names: Vec<String> = totals.scalar_names().into_iter().map(str::to_owned).collect();
        let total_vec: Vec<f64> = names.iter().map(|n| totals.scalar(n).as_f64()).collect();
        let client_alloc: Vec<Vec<f64>> = clients
            .iter()
            .map(|c| names.iter().map(|n| c.allocated.scalar(n).as_f64()).collect())
            .collect();
        let mut role_alloc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (c, alloc) in clients.iter().zip(&client_alloc) {
            let entry = role_alloc.entry(c.role.clone()).or_insert_with(|| vec![0.0; names.len()]);
            for (e, a) in entry.iter_mut().zip(alloc) {
                *e += a;
            }
        }
        let mut order = Order {
            clients,
            names,
            totals: total_vec,
            client_alloc,
            role_alloc,
            weights: weights.clone(),
            roles: BTreeSet::new(),
            role_key: BTreeMap::new(),
            by_role: BTreeMap::new(),
            client_key: Vec::new(),
        };
        let roles: Vec<String> = order.role_alloc.keys().cloned().collect();
        for role in roles {
            let k = order.role_share_key(&role);
            order.roles.insert((k, role.clone()));
            order.role_key.insert(role, k);
        }
        for i in 0..order.clients.len() {
            let k = key(order.share(&order.client_alloc[i]));
            order.client_key.push(k);
            let c = &order.clients[i];
            order.by_role.entry(c.role.clone()).or_default().insert((k, c.framework_id.clone(), i));
        }
        order
    }

    fn share(&self, alloc: &[f64]) -> f64 {
        alloc
            .iter()
            .zip(&self.totals)
            .filter(|(_, t)| **t > 0.0)
            .map(|(a, t)| a / t)
            .fold(0.0, f64::max)
    }

    fn role_share_key(&self, role: &str) -> u64 {
        let weight = self.weights.get(role).copied().filter(|w| *w > 0.0).unwrap_or(1.0);
        key(self.role_alloc.get(role).map(|a| self.share(a)).unwrap_or(0.0) / weight)
    }

    pub(crate) fn client(&self, idx: usize) -> &Client {
        &self.clients[idx]
    }

    /// The first client in DRF order for which `eligible` yields resources.
    pub(crate) fn first_eligible(
        &self,
        mut eligible: impl FnMut(&Client) -> Option<Resources>,
    ) -> Option<(usize, Resources)> {
        for (_, role) in &self.roles {
            for (_, _, idx) in self.by_role.get(role).into_iter().flatten() {
                if let Some(r) = eligible(&self.clients[*idx]) {
                    return Some((*idx, r));
                }
            }
        }
        None
    }

    /// Records that client `idx` was offered `resources`, moving it (and its role) in the order.
    pub(crate) fn charge(&mut self, idx: usize, resources: &Resources, _totals: &Resources) {
        let amounts: Vec<f64> = self.names.iter().map(|n| resources.scalar(n).as_f64()).collect();
        let role = self.clients[idx].role.clone();
        let fw = self.clients[idx].framework_id.clone();
        for (a, x) in self.client_alloc[idx].iter_mut().zip(&amounts) {
            *a += x;
        }
        if let Some(r) = self.role_alloc.get_mut(&role) {
            for (a, x) in r.iter_mut().zip(&amounts) {
                *a += x;
            }
        }
        let old = self.client_key[idx];
        let new = key(self.share(&self.client_alloc[idx]));
        self.client_key[idx] = new;
        if let Some(set) = self.by_role.get_mut(&role) {
            set.remove(&(old, fw.clone(), idx));
            set.insert((new, fw, idx));
        }
        let old_role = self.role_key.get(&role).copied().unwrap_or(0);
        let new_role = self.role_share_key(&role);
        self.roles.remove(&(old_role, role.clone()));
        self.roles.insert((new_role, role.clone()));
        self.role_key.insert(role, new_role);
    }
}

/// Which (role, agent) a decline filter covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FilterKey {
    pub(crate) role: String,
    pub(crate) agent_id: String,
}

/// A framework's decline filters. Like Mesos, every DECLINE (or ACCEPT with
/// leftovers) adds a filter of its own: a later, narrower or shorter one never
/// weakens an earlier one, and an offer is held back while any live filter
/// covers it.
#[derive(Debug, Default)]
pub(crate) struct Filters(HashMap<FilterKey, Vec<(Resources, Instant)>>);

impl Filters {
    /// Refuses `resources` on (role, agent) until `until`. Filters that have
    /// expired by `now`, or that the new one covers in both resources and
    /// time, are dropped, so the list stays as short as the distinct refusals.
    pub(crate) fn add(
        &mut self,
        key: FilterKey,
        resources: Resources,
        now: Instant,
        until: Instant,
    ) {
        let list = self.0.entry(key).or_default();
        list.retain(|(refused, end)| *end > now && !(resources.contains(refused) && *end <= until));
        let covered =
            list.iter().any(|(refused, end)| refused.contains(&resources) && *end >= until);
        if !covered {
            list.push((resources, until));
        }
    }

    /// Whether a live filter covers `offerable`: Mesos filters an offer only
    /// when everything offerable is a subset of what was refused, so more free
    /// resources on the agent break through the filter.
    pub(crate) fn refuses(&self, key: &FilterKey, offerable: &Resources, now: Instant) -> bool {
        self.0.get(key).is_some_and(|list| {
            list.iter().any(|(refused, until)| now < *until && refused.contains(offerable))
        })
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn clear_role(&mut self, role: &str) {
        self.0.retain(|k, _| k.role != role);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_resources::Resource;
    use std::time::Duration;

    fn res(cpus: f64, mem: f64) -> Resources {
        [Resource::scalar("cpus", cpus), Resource::scalar("mem", mem)].into_iter().collect()
    }

    #[test]
    fn min_allocatable_is_cpus_or_mem() {
        assert!(is_allocatable(&res(0.01, 0.0)));
        assert!(is_allocatable(&res(0.0, 32.0)));
        assert!(!is_allocatable(&res(0.009, 31.999)));
        let reserved: Resources =
            [Resource::scalar("cpus", 0.005).reserved_for("a"), Resource::scalar("cpus", 0.005)]
                .into_iter()
                .collect();
        assert!(is_allocatable(&reserved), "summed over reservations");
    }

    fn client(fw: &str, role: &str, alloc: Resources) -> Client {
        Client { framework_id: fw.into(), role: role.into(), allocated: alloc }
    }

    #[test]
    fn least_dominant_share_goes_first_and_moves_back_when_charged() {
        let totals = res(10.0, 1000.0);
        let clients = vec![
            client("a", "r", res(5.0, 0.0)),
            client("b", "r", res(0.0, 100.0)),
            client("c", "r", Resources::default()),
        ];
        let mut order = Order::new(clients, &totals, &BTreeMap::new());
        let (first, _) = order.first_eligible(|_| Some(Resources::default())).unwrap();
        assert_eq!(order.client(first).framework_id, "c");
        order.charge(first, &res(2.0, 0.0), &totals); // c: 20 %, b: 10 %
        let (next, _) = order.first_eligible(|_| Some(Resources::default())).unwrap();
        assert_eq!(order.client(next).framework_id, "b");
        // Ineligible clients are skipped.
        let (skip, _) =
            order.first_eligible(|c| (c.framework_id != "b").then(Resources::default)).unwrap();
        assert_eq!(order.client(skip).framework_id, "c");
    }

    #[test]
    fn role_weights_scale_shares() {
        let totals = res(10.0, 1000.0);
        let clients =
            vec![client("a", "heavy", res(4.0, 0.0)), client("b", "light", res(2.0, 0.0))];
        let weights = BTreeMap::from([("heavy".to_owned(), 4.0)]);
        let order = Order::new(clients, &totals, &weights);
        let (first, _) = order.first_eligible(|_| Some(Resources::default())).unwrap();
        assert_eq!(order.client(first).role, "heavy", "0.4/4 < 0.2/1");
    }

    #[test]
    fn filters_follow_the_subset_rule_and_expire() {
        let now = Instant::now();
        let key = FilterKey { role: "*".into(), agent_id: "a1".into() };
        let mut f = Filters::default();
        f.add(key.clone(), res(4.0, 1000.0), now, now + Duration::from_secs(5));
        assert!(f.refuses(&key, &res(4.0, 1000.0), now));
        assert!(f.refuses(&key, &res(1.0, 10.0), now));
        assert!(!f.refuses(&key, &res(5.0, 1000.0), now), "more than refused breaks through");
        assert!(!f.refuses(&key, &res(1.0, 10.0), now + Duration::from_secs(5)), "expired");
        f.clear_role("*");
        assert!(!f.refuses(&key, &res(1.0, 10.0), now));
    }

    #[test]
    fn a_second_decline_never_weakens_the_first() {
        let now = Instant::now();
        let key = FilterKey { role: "*".into(), agent_id: "a1".into() };
        let mut f = Filters::default();
        f.add(key.clone(), res(4.0, 1000.0), now, now + Duration::from_secs(60));
        // A later decline of a smaller offer, for a shorter time.
        f.add(key.clone(), res(1.0, 10.0), now, now + Duration::from_secs(5));
        let later = now + Duration::from_secs(10);
        assert!(f.refuses(&key, &res(4.0, 1000.0), later), "the first filter still holds");
        // A decline that covers an earlier one in resources and time replaces it.
        f.add(key.clone(), res(8.0, 2000.0), now, now + Duration::from_secs(120));
        assert_eq!(f.0[&key].len(), 1, "the covered filters are gone: {:?}", f.0[&key]);
        assert!(f.refuses(&key, &res(8.0, 2000.0), later));
        // A narrower and shorter one beside a covering filter adds nothing.
        f.add(key.clone(), res(1.0, 10.0), now, now + Duration::from_secs(1));
        assert_eq!(f.0[&key].len(), 1);
        assert!(!f.refuses(&key, &res(8.0, 2000.0), now + Duration::from_secs(120)), "expired");
    }
}
