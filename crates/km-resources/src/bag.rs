//! [`Resources`]: a bag of resources with Mesos's arithmetic.
//!
//! Entries of the same kind (see [`Resource::same_identity`]) are merged as
//! they are added, so a bag holds at most one entry per kind and comparisons
//! go entry by entry: a reserved cpu never stands in for an unreserved one,
//! and a resource allocated to one role never for another's. Entries keep the
//! order in which their kind first appeared, so what goes out on the wire
//! follows what came in.

use std::collections::BTreeSet;
use std::fmt;

use crate::resource::{Resource, Value};
use crate::role::role_may_use;
use crate::scalar::Scalar;

/// A bag of resources: added, subtracted and compared as Mesos does.
#[derive(Clone, Debug, Default)]
pub struct Resources(Vec<Resource>);

impl Resources {
    /// The empty bag.
    pub const fn new() -> Resources {
        Resources(Vec::new())
    }

    /// The entries, one per kind, none empty.
    pub fn iter(&self) -> std::slice::Iter<'_, Resource> {
        self.0.iter()
    }

    /// Number of entries (kinds), not of units.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the bag holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one resource; an empty value adds nothing.
    pub fn push(&mut self, resource: Resource) {
        if resource.is_empty() {
            return;
        }
        match self.0.iter_mut().find(|mine| mine.same_identity(&resource)) {
            Some(mine) => match (&mut mine.value, resource.value) {
                (Value::Scalar(a), Value::Scalar(b)) => *a = a.saturating_add(b),
                (Value::Ranges(a), Value::Ranges(b)) => a.union_with(&b),
                (Value::Set(a), Value::Set(b)) => a.extend(b),
                // `same_identity` compares the value types.
                _ => unreachable!("entries of one identity hold one value type"),
            },
            None => self.0.push(resource),
        }
    }

    /// Adds every entry of `other`.
    pub fn add(&mut self, other: &Resources) {
        for r in &other.0 {
            self.push(r.clone());
        }
    }

    /// Removes `other`. Kinds this bag lacks are ignored, scalars stop at zero,
    /// ranges and sets lose the values they share with `other`, and entries
    /// left empty disappear.
    pub fn subtract(&mut self, other: &Resources) {
        for theirs in &other.0 {
            let Some(mine) = self.0.iter_mut().find(|m| m.same_identity(theirs)) else {
                continue;
            };
            match (&mut mine.value, &theirs.value) {
                (Value::Scalar(a), Value::Scalar(b)) => *a = a.saturating_sub(*b).max(Scalar::ZERO),
                (Value::Ranges(a), Value::Ranges(b)) => *a = a.subtract(b),
                (Value::Set(a), Value::Set(b)) => a.retain(|x| !b.contains(x)),
                _ => unreachable!("entries of one identity hold one value type"),
            }
        }
        self.0.retain(|r| !r.is_empty());
    }

    /// True when every entry of `other` is covered by the entry of the same
    /// kind here: no smaller scalar, a superset of ranges or set items.
    pub fn contains(&self, other: &Resources) -> bool {
        other.0.iter().all(|theirs| {
            self.0.iter().find(|m| m.same_identity(theirs)).is_some_and(|mine| {
                match (&mine.value, &theirs.value) {
                    (Value::Scalar(a), Value::Scalar(b)) => a >= b,
                    (Value::Ranges(a), Value::Ranges(b)) => a.contains_all(b),
                    (Value::Set(a), Value::Set(b)) => b.is_subset(a),
                    _ => false,
                }
            })
        })
    }

    /// The entries a framework in `role` may be offered: unreserved ones and
    /// those reserved for `role` or one of its ancestors (see [`role_may_use`]).
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter(|r| role_may_use(role, r.role()))
    }

    /// The entries for which `keep` is true.
    pub fn filter(&self, mut keep: impl FnMut(&Resource) -> bool) -> Resources {
        Resources(self.0.iter().filter(|r| keep(r)).cloned().collect())
    }

    /// The same resources, allocated to `role` (Mesos's `allocation_info`).
    pub fn allocated_to(&self, role: &str) -> Resources {
        self.0.iter().cloned().map(|r| r.allocated_to(role)).collect()
    }

    /// The same resources with no allocation role; entries that differed only
    /// in their allocation role merge.
    pub fn unallocated(&self) -> Resources {
        self.0.iter().cloned().map(|r| Resource { allocation_role: None, ..r }).collect()
    }

    /// The sum of a scalar resource over all reservations and allocations.
    pub fn scalar(&self, name: &str) -> Scalar {
        self.0
            .iter()
            .filter(|r| r.name == name)
            .filter_map(Resource::as_scalar)
            .fold(Scalar::ZERO, Scalar::saturating_add)
    }

    /// The names of the scalar resources present, sorted.
    pub fn scalar_names(&self) -> BTreeSet<&str> {
        self.0.iter().filter(|r| r.as_scalar().is_some()).map(|r| &*r.name).collect()
    }
}

impl PartialEq for Resources {
    /// The same entries, in any order.
    fn eq(&self, other: &Resources) -> bool {
        self.0.len() == other.0.len() && self.contains(other) && other.contains(self)
    }
}

impl Eq for Resources {}

impl FromIterator<Resource> for Resources {
    fn from_iter<I: IntoIterator<Item = Resource>>(iter: I) -> Resources {
        let mut bag = Resources::new();
        bag.extend(iter);
        bag
    }
}

impl Extend<Resource> for Resources {
    fn extend<I: IntoIterator<Item = Resource>>(&mut self, iter: I) {
        for r in iter {
            self.push(r);
        }
    }
}

impl<'a> IntoIterator for &'a Resources {
    type Item = &'a Resource;
    type IntoIter = std::slice::Iter<'a, Resource>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Resources {
    type Item = Resource;
    type IntoIter = std::vec::IntoIter<Resource>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Resources {
    /// Mesos's text syntax, with each entry's role:
    /// `cpus(*):4; mem(prod):1024; ports(*):[31000-32000]; disks(*):{a, b}`.
    /// Allocation roles, dynamic reservation details and revocability are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}({}):", r.name, r.role())?;
            match &r.value {
                Value::Scalar(s) => write!(f, "{s}")?,
                Value::Ranges(ranges) => write!(f, "{ranges}")?,
                Value::Set(items) => {
                    f.write_str("{")?;
                    for (j, item) in items.iter().enumerate() {
                        if j > 0 {
                            f.write_str(", ")?;
                        }
                        f.write_str(item)?;
                    }
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_resources;

    fn bag(spec: &str) -> Resources {
        parse_resources(spec).unwrap().into_iter().collect()
    }

    #[test]
    fn fixed_point_arithmetic_does_not_drift() {
        let mut total = bag("cpus:0.3");
        let ab = bag("cpus:0.1;cpus:0.2");
        assert_eq!(ab.len(), 1, "one kind, one entry");
        assert!(total.contains(&ab));
        total.subtract(&ab);
        assert!(total.is_empty());
    }

    #[test]
    fn adding_merges_kinds_only() {
        let b = bag("cpus:1;cpus(prod):2;cpus:0.5;ports:[1-3];ports:[4-6];s:{a};s:{b};mem:0");
        assert_eq!(b.to_string(), "cpus(*):1.5; cpus(prod):2; ports(*):[1-6]; s(*):{a, b}");
        let alloc = b.allocated_to("prod");
        let mut both = b.clone();
        both.add(&alloc);
        assert_eq!(both.len(), 8, "allocated entries are other kinds");
        assert_eq!(both.unallocated(), {
            let mut twice = b.clone();
            twice.add(&b);
            twice
        });
        assert_eq!(both.scalar("cpus"), Scalar::from_units(7));
    }

    #[test]
    fn subtract_and_contains() {
        let agent = bag("cpus:4;cpus(prod):2;ports:[31000-32000];gpu_ids:{g0,g1}");
        let mut left = agent.clone();
        left.subtract(&bag("ports:[31000-31009];gpu_ids:{g1};cpus:10"));
        assert_eq!(left.to_string(), "cpus(prod):2; ports(*):[31010-32000]; gpu_ids(*):{g0}");
        assert!(!left.contains(&bag("ports:[31005]")));
        assert!(left.contains(&bag("ports:[31010-32000]")));
        assert!(left.contains(&bag("gpu_ids:{g0}")) && !left.contains(&bag("gpu_ids:{g1}")));
        assert!(left.contains(&Resources::new()));
        // A reserved cpu cannot satisfy an unreserved ask, nor the other way round.
        assert!(!bag("cpus(prod):2").contains(&bag("cpus:1")));
        assert!(!bag("cpus:2").contains(&bag("cpus(prod):1")));
        // Unknown kinds in the subtrahend are ignored.
        let mut same = agent.clone();
        same.subtract(&bag("mem:5"));
        assert_eq!(same, agent);
    }

    #[test]
    fn allocatable_follows_the_role_tree() {
        let agent = bag("cpus:4;cpus(prod):2;cpus(prod/web):1;cpus(dev):8");
        assert_eq!(agent.scalar("cpus"), Scalar::from_units(15));
        assert_eq!(agent.allocatable_to("*").scalar("cpus"), Scalar::from_units(4));
        assert_eq!(agent.allocatable_to("dev").scalar("cpus"), Scalar::from_units(12));
        assert_eq!(agent.allocatable_to("prod").scalar("cpus"), Scalar::from_units(6));
        assert_eq!(agent.allocatable_to("prod/web").scalar("cpus"), Scalar::from_units(7));
        assert_eq!(agent.allocatable_to("production").scalar("cpus"), Scalar::from_units(4));
    }

    #[test]
    fn equality_ignores_order() {
        assert_eq!(bag("cpus:1;mem:2"), bag("mem:2;cpus:1"));
        assert_ne!(bag("cpus:1;mem:2"), bag("cpus:1"));
        assert_ne!(bag("cpus:1"), bag("cpus:1;mem:2"));
        assert_ne!(bag("cpus:1"), bag("cpus:2"));
        assert_eq!(
            bag("mem:2;cpus:1").scalar_names().into_iter().collect::<Vec<_>>(),
            ["cpus", "mem"]
        );
    }

    #[test]
    fn display_parses_back() {
        let b = bag("cpus:1.25;mem(prod/web):64;ports:[1-2,4];disks:{b,a}");
        assert_eq!(bag(&b.to_string()), b);
    }

    mod props {
        use super::*;
        use crate::ranges::Ranges;
        use proptest::prelude::*;

        fn resource() -> impl Strategy<Value = Resource> {
            let role = prop::sample::select(vec![None, Some("prod"), Some("prod/web")]);
            let alloc = prop::sample::select(vec![None, Some("prod")]);
            let value = prop_oneof![
                (0i64..5_000).prop_map(|m| Value::Scalar(Scalar::from_milli(m))),
                prop::collection::vec((0u64..60, 0u64..5), 0..4).prop_map(|v| {
                    Value::Ranges(Ranges::from_pairs(v.into_iter().map(|(b, l)| (b, b + l))))
                }),
            ];
            (prop::sample::select(vec!["cpus", "ports"]), value, role, alloc).prop_map(
                |(name, value, role, alloc)| {
                    let mut r = Resource::with_value(name, value);
                    if let Some(role) = role {
                        r = r.reserved_for(role);
                    }
                    if let Some(a) = alloc {
                        r = r.allocated_to(a);
                    }
                    r
                },
            )
        }

        fn resources() -> impl Strategy<Value = Resources> {
            prop::collection::vec(resource(), 0..8).prop_map(Resources::from_iter)
        }

        proptest! {
            #[test]
            fn add_then_subtract_gives_back(a in resources(), b in resources()) {
                let mut sum = a.clone();
                sum.add(&b);
                prop_assert!(sum.contains(&a) && sum.contains(&b));
                // Ranges of a and b may overlap, so only scalars come back exactly.
                sum.subtract(&b);
                prop_assert!(sum.contains(&a.filter(|r| r.as_scalar().is_some())));
                prop_assert!(sum.iter().all(|r| !r.is_empty()));
            }

            #[test]
            fn a_bag_contains_what_is_left_of_it(a in resources(), b in resources()) {
                let mut left = a.clone();
                left.subtract(&b);
                prop_assert!(a.contains(&left));
                let mut back = left.clone();
                back.add(&b);
                prop_assert!(back.contains(&left));
            }

            #[test]
            fn entries_are_one_per_kind(a in resources()) {
                for (i, x) in a.iter().enumerate() {
                    prop_assert!(a.iter().skip(i + 1).all(|y| !x.same_identity(y)));
                }
            }
        }
    }
}
