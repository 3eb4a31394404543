//! Mesos resources as the matcher sees them: fixed-point scalars, port ranges and sets,
//! each with its reservation stack and allocation role.
//!
//! Scalars are kept in thousandths ([`Scalar`]), exactly as Mesos does its arithmetic
//! (`llround(v * 1000)`), so `0.1 + 0.2` fits into `0.3` and nothing drifts after many
//! subtractions. Ranges are kept normalised (sorted, merged), which makes subtraction and
//! equality cheap and deterministic.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// A Mesos scalar in fixed point with three decimals (an integer count of thousandths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(i64);

impl Scalar {
    /// Zero.
    pub const ZERO: Scalar = Scalar(0);

    /// A scalar from a count of thousandths (`1500` is `1.5`).
    pub const fn from_milli(milli: i64) -> Scalar {
        Scalar(milli)
    }

    /// A scalar from whole units (`4` is `4.000`).
    pub const fn from_units(units: i64) -> Scalar {
        Scalar(units.saturating_mul(1000))
    }

    /// A scalar from a double, rounded to three decimals the way Mesos does (`llround(v * 1000)`).
    /// NaN becomes zero; values beyond the range saturate.
    pub fn from_f64(value: f64) -> Scalar {
        if value.is_nan() {
            return Scalar::ZERO;
        }
        // `as` saturates for out-of-range floats, which is the behaviour we want.
        Scalar((value * 1000.0).round() as i64)
    }

    /// The value in thousandths.
    pub const fn milli(self) -> i64 {
        self.0
    }

    /// The value as a double (for protobuf conversion).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// True for zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Saturating sum.
    #[must_use]
    pub const fn saturating_add(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(other.0))
    }

    /// Saturating difference.
    #[must_use]
    pub const fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Scalar {
    /// Shortest decimal form: `4`, `1.5`, `0.25`, `0.001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (units, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{units}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{units}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// The four scalar resources a pod can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScalarKind {
    /// `cpus`, in cores.
    Cpus,
    /// `mem`, in MB as Mesos counts them (mebibytes).
    Mem,
    /// `disk`, in MB (mebibytes).
    Disk,
    /// `gpus`, a count.
    Gpus,
}

impl ScalarKind {
    /// All kinds, in procurement order.
    pub const ALL: [ScalarKind; 4] =
        [ScalarKind::Cpus, ScalarKind::Mem, ScalarKind::Disk, ScalarKind::Gpus];

    /// The Mesos resource name.
    pub const fn name(self) -> &'static str {
        match self {
            ScalarKind::Cpus => "cpus",
            ScalarKind::Mem => "mem",
            ScalarKind::Disk => "disk",
            ScalarKind::Gpus => "gpus",
        }
    }

    /// The kind for a Mesos resource name.
    pub fn from_name(name: &str) -> Option<ScalarKind> {
        match name {
            "cpus" => Some(ScalarKind::Cpus),
            "mem" => Some(ScalarKind::Mem),
            "disk" => Some(ScalarKind::Disk),
            "gpus" => Some(ScalarKind::Gpus),
            _ => None,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ScalarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A vector of the four scalar resources (cpus, mem, disk, gpus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scalars([Scalar; 4]);

impl Scalars {
    /// All zero.
    pub const ZERO: Scalars = Scalars([Scalar::ZERO; 4]);

    /// cpus and mem, the rest zero.
    pub const fn cpus_mem(cpus: Scalar, mem: Scalar) -> Scalars {
        Scalars([cpus, mem, Scalar::ZERO, Scalar::ZERO])
    }

    /// The value of one kind.
    pub const fn get(&self, kind: ScalarKind) -> Scalar {
        self.0[kind.index()]
    }

    /// Sets one kind.
    pub fn set(&mut self, kind: ScalarKind, value: Scalar) {
        self.0[kind.index()] = value;
    }

    /// Builder form of [`Scalars::set`].
    #[must_use]
    pub fn with(mut self, kind: ScalarKind, value: Scalar) -> Scalars {
        self.set(kind, value);
        self
    }

    /// Adds to one kind.
    pub fn add(&mut self, kind: ScalarKind, value: Scalar) {
        let i = kind.index();
        self.0[i] = self.0[i].saturating_add(value);
    }

    /// Component-wise sum.
    #[must_use]
    pub fn plus(&self, other: &Scalars) -> Scalars {
        let mut out = *self;
        for k in ScalarKind::ALL {
            out.add(k, other.get(k));
        }
        out
    }

    /// Component-wise maximum.
    #[must_use]
    pub fn component_max(&self, other: &Scalars) -> Scalars {
        let mut out = *self;
        for k in ScalarKind::ALL {
            out.set(k, self.get(k).max(other.get(k)));
        }
        out
    }

    /// True when every component is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|s| s.is_zero())
    }

    /// Non-zero components in kind order.
    pub fn iter_nonzero(&self) -> impl Iterator<Item = (ScalarKind, Scalar)> + '_ {
        ScalarKind::ALL.into_iter().map(|k| (k, self.get(k))).filter(|(_, v)| !v.is_zero())
    }
}

impl fmt::Display for Scalars {
    /// `cpus 1, mem 128` (zero components omitted; `none` if all are zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.iter_nonzero() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k} {v}")?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// An inclusive range of values, as Mesos `Value.Range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// First value.
    pub begin: u64,
    /// Last value (inclusive).
    pub end: u64,
}

/// A normalised set of ranges: sorted, non-overlapping, adjacent ranges merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ranges(Vec<Range>);

impl Ranges {
    /// The empty set.
    pub const fn new() -> Ranges {
        Ranges(Vec::new())
    }

    /// Normalises `(begin, end)` pairs (inclusive). Pairs with `begin > end` are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
        let mut v: Vec<Range> = pairs
            .into_iter()
            .filter(|(b, e)| b <= e)
            .map(|(begin, end)| Range { begin, end })
            .collect();
        v.sort_unstable();
        let mut out: Vec<Range> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if r.begin <= last.end.saturating_add(1) => {
                    last.end = last.end.max(r.end)
                }
                _ => out.push(r),
            }
        }
        Ranges(out)
    }

    /// A set holding one value.
    pub fn single(value: u64) -> Ranges {
        Ranges(vec![Range { begin: value, end: value }])
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[Range] {
        &self.0
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of values in the set (saturating).
    pub fn count(&self) -> u64 {
        self.0.iter().fold(0u64, |acc, r| acc.saturating_add(r.end - r.begin).saturating_add(1))
    }

    /// True if `value` is in the set.
    pub fn contains(&self, value: u64) -> bool {
        let i = self.0.partition_point(|r| r.end < value);
        self.0.get(i).is_some_and(|r| r.begin <= value)
    }

    /// The smallest value, if any.
    pub fn first(&self) -> Option<u64> {
        self.0.first().map(|r| r.begin)
    }

    /// Removes one value; returns whether it was present.
    pub fn remove(&mut self, value: u64) -> bool {
        let i = self.0.partition_point(|r| r.end < value);
        let Some(r) = self.0.get(i).copied() else { return false };
        if r.begin > value {
            return false;
        }
        match (r.begin == value, r.end == value) {
            (true, true) => {
                self.0.remove(i);
            }
            (true, false) => self.0[i].begin = value + 1,
            (false, true) => self.0[i].end = value - 1,
            (false, false) => {
                self.0[i].end = value - 1;
                self.0.insert(i + 1, Range { begin: value + 1, end: r.end });
            }
        }
        true
    }

    /// Adds one value.
    pub fn insert(&mut self, value: u64) {
        self.union_with(&Ranges::single(value));
    }

    /// Set union.
    pub fn union_with(&mut self, other: &Ranges) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let pairs: Vec<(u64, u64)> =
            self.0.iter().chain(other.0.iter()).map(|r| (r.begin, r.end)).collect();
        *self = Ranges::from_pairs(pairs);
    }

    /// Set difference `self - other`.
    #[must_use]
    pub fn subtract(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::with_capacity(self.0.len());
        let mut j = 0;
        for r in &self.0 {
            let mut begin = r.begin;
            let end = r.end;
            while j < other.0.len() && other.0[j].end < begin {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < other.0.len() && other.0[k].begin <= end {
                let o = other.0[k];
                if o.begin > begin {
                    out.push(Range { begin, end: o.begin - 1 });
                }
                if o.end >= end {
                    done = true;
                    break;
                }
                begin = o.end + 1;
                k += 1;
            }
            if !done {
                out.push(Range { begin, end });
            }
        }
        Ranges(out)
    }

    /// True if every value of `other` is in `self`.
    pub fn contains_all(&self, other: &Ranges) -> bool {
        other.subtract(self).is_empty()
    }

    /// True if the two sets share a value.
    pub fn intersects(&self, other: &Ranges) -> bool {
        other.subtract(self) != *other
    }
}

impl fmt::Display for Ranges {
    /// `[31000-31005, 31010]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.begin == r.end {
                write!(f, "{}", r.begin)?;
            } else {
                write!(f, "{}-{}", r.begin, r.end)?;
            }
        }
        f.write_str("]")
    }
}

/// The value of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// A scalar (cpus, mem, disk, gpus, …).
    Scalar(Scalar),
    /// Ranges (ports).
    Ranges(Ranges),
    /// A set of strings.
    Set(BTreeSet<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(s) => write!(f, "{s}"),
            Value::Ranges(r) => write!(f, "{r}"),
            Value::Set(s) => {
                f.write_str("{")?;
                for (i, item) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(item)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Whether a reservation is static (agent flag) or dynamic (RESERVE operation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReservationKind {
    /// Static reservation.
    #[default]
    Static,
    /// Dynamic reservation.
    Dynamic,
}

/// One entry of a resource's reservation stack (`Resource.reservations`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reservation {
    /// Role the resource is reserved for.
    pub role: String,
    /// Static or dynamic.
    pub kind: ReservationKind,
    /// Principal of a dynamic reservation.
    pub principal: Option<String>,
    /// Labels of a dynamic reservation, sorted.
    pub labels: Vec<(String, String)>,
}

impl Reservation {
    /// A static reservation for `role`.
    pub fn new(role: impl Into<String>) -> Reservation {
        Reservation {
            role: role.into(),
            kind: ReservationKind::Static,
            principal: None,
            labels: Vec::new(),
        }
    }
}

/// A Mesos resource with the identity fields the matcher must keep when it hands resources back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// Resource name (`cpus`, `mem`, `disk`, `gpus`, `ports`, …); static names cost no allocation.
    pub name: Cow<'static, str>,
    /// Its value.
    pub value: Value,
    /// Reservation stack, outermost first; empty for unreserved resources.
    pub reservations: Vec<Reservation>,
    /// `allocation_info.role` (set for MULTI_ROLE frameworks).
    pub allocation_role: Option<String>,
    /// Revocable resources are never procured for pods; they stay in the remainder.
    pub revocable: bool,
}

impl Resource {
    /// An unreserved scalar resource (`value` rounded to three decimals).
    pub fn scalar(name: impl Into<Cow<'static, str>>, value: f64) -> Resource {
        Resource::with_value(name, Value::Scalar(Scalar::from_f64(value)))
    }

    /// An unreserved ranges resource from inclusive `(begin, end)` pairs.
    pub fn ranges(
        name: impl Into<Cow<'static, str>>,
        pairs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Resource {
        Resource::with_value(name, Value::Ranges(Ranges::from_pairs(pairs)))
    }

    /// An unreserved resource with any value.
    pub fn with_value(name: impl Into<Cow<'static, str>>, value: Value) -> Resource {
        Resource {
            name: name.into(),
            value,
            reservations: Vec::new(),
            allocation_role: None,
            revocable: false,
        }
    }

    /// Adds a static reservation for `role` on top of the stack.
    #[must_use]
    pub fn reserved_for(mut self, role: impl Into<String>) -> Resource {
        self.reservations.push(Reservation::new(role));
        self
    }

    /// Sets the allocation role.
    #[must_use]
    pub fn allocated_to(mut self, role: impl Into<String>) -> Resource {
        self.allocation_role = Some(role.into());
        self
    }

    /// The role the resource is usable for: the innermost reservation's role, or `*` if unreserved.
    pub fn role(&self) -> &str {
        self.reservations.last().map_or("*", |r| r.role.as_str())
    }

    /// The scalar value, if this is a scalar resource.
    pub fn as_scalar(&self) -> Option<Scalar> {
        match self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The ranges, if this is a ranges resource.
    pub fn as_ranges(&self) -> Option<&Ranges> {
        match &self.value {
            Value::Ranges(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Resource {
    /// `cpus 1.5`, `cpus(prod) 2`, `mem(prod,alloc=prod) 64`, `ports [31000-31002]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        let role = self.role();
        let mut tags: Vec<String> = Vec::new();
        if role != "*" {
            tags.push(role.to_owned());
        }
        if let Some(a) = &self.allocation_role {
            tags.push(format!("alloc={a}"));
        }
        if self.revocable {
            tags.push("revocable".to_owned());
        }
        if !tags.is_empty() {
            write!(f, "({})", tags.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_sums_like_mesos() {
        let s = Scalar::from_f64(0.1).saturating_add(Scalar::from_f64(0.2));
        assert_eq!(s, Scalar::from_f64(0.3));
        assert!(s <= Scalar::from_f64(0.3));
        assert_eq!(Scalar::from_f64(0.0004), Scalar::ZERO);
        assert_eq!(Scalar::from_f64(0.0005), Scalar::from_milli(1));
        assert_eq!(Scalar::from_f64(f64::NAN), Scalar::ZERO);
        let mut left = Scalar::from_units(1);
        for _ in 0..10 {
            left = left.saturating_sub(Scalar::from_f64(0.1));
        }
        assert_eq!(left, Scalar::ZERO);
    }

    #[test]
    fn scalar_display_is_shortest() {
        assert_eq!(Scalar::from_units(4).to_string(), "4");
        assert_eq!(Scalar::from_milli(1500).to_string(), "1.5");
        assert_eq!(Scalar::from_milli(250).to_string(), "0.25");
        assert_eq!(Scalar::from_milli(1).to_string(), "0.001");
        assert_eq!(Scalar::from_milli(-1250).to_string(), "-1.25");
    }

    #[test]
    fn ranges_normalise() {
        let r = Ranges::from_pairs([(10, 12), (5, 6), (13, 15), (7, 7), (20, 19)]);
        assert_eq!(r.to_string(), "[5-7, 10-15]");
        assert_eq!(r.count(), 9);
        assert_eq!(Ranges::from_pairs([(1, 3), (2, 8), (9, 9)]).to_string(), "[1-9]");
        let r = Ranges::from_pairs([(1, 2), (4, 5)]);
        assert_eq!(r.to_string(), "[1-2, 4-5]");
        assert!(r.contains(4) && !r.contains(3) && !r.contains(6));
    }

    #[test]
    fn ranges_subtract() {
        let a = Ranges::from_pairs([(31000, 31010), (31020, 31030)]);
        let b = Ranges::from_pairs([(31000, 31000), (31005, 31021), (31030, 31040)]);
        assert_eq!(a.subtract(&b).to_string(), "[31001-31004, 31022-31029]");
        assert_eq!(a.subtract(&Ranges::new()), a);
        assert!(a.subtract(&a).is_empty());
        assert!(a.contains_all(&Ranges::single(31025)));
        assert!(a.intersects(&b));
        assert!(!a.intersects(&Ranges::single(31015)));
    }

    #[test]
    fn ranges_remove_and_insert() {
        let mut r = Ranges::from_pairs([(1, 5)]);
        assert!(r.remove(3));
        assert_eq!(r.to_string(), "[1-2, 4-5]");
        assert!(!r.remove(3));
        assert!(r.remove(1) && r.remove(5));
        assert_eq!(r.to_string(), "[2, 4]");
        r.insert(3);
        assert_eq!(r.to_string(), "[2-4]");
        let mut full = Ranges::from_pairs([(0, u64::MAX)]);
        assert!(full.remove(u64::MAX));
        assert!(full.remove(0));
        assert_eq!(full.first(), Some(1));
    }

    #[test]
    fn resource_role_and_display() {
        let r = Resource::scalar("cpus", 1.5).reserved_for("prod").allocated_to("prod");
        assert_eq!(r.role(), "prod");
        assert_eq!(r.to_string(), "cpus(prod,alloc=prod) 1.5");
        assert_eq!(Resource::ranges("ports", [(1, 3)]).to_string(), "ports [1-3]");
        assert_eq!(Resource::scalar("mem", 64.0).role(), "*");
    }
}
