//! Sets of unsigned integers as Mesos writes them: inclusive ranges.
//!
//! [`Ranges`] is always normalised (sorted, disjoint, touching ranges merged),
//! so equality is structural and subtraction is one merge pass.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
