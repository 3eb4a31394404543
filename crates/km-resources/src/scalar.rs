//! Scalars in thousandths, and the four scalar kinds a pod asks for.
//!
//! Mesos does not add doubles: it rounds every scalar to three decimals
//! (`llround(v * 1000)`) and counts in integers. [`Scalar`] is that integer, so
//! `0.1 + 0.2` fits into `0.3` and a long series of subtractions ends at
//! exactly zero.

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
    fn out_of_range_doubles_saturate() {
        assert_eq!(Scalar::from_f64(f64::INFINITY).milli(), i64::MAX);
        assert_eq!(Scalar::from_f64(-1e300).milli(), i64::MIN);
        assert_eq!(Scalar::from_units(i64::MAX), Scalar::from_milli(i64::MAX));
    }

    #[test]
    fn three_decimals_survive_the_trip_through_a_double() {
        for milli in [0, 1, 10, 100, 999, 1_000, 1_234_567, 31_999_999] {
            let s = Scalar::from_milli(milli);
            assert_eq!(Scalar::from_f64(s.as_f64()), s, "{milli}");
        }
    }

    #[test]
    fn scalars_by_kind() {
        let a = Scalars::cpus_mem(Scalar::from_units(1), Scalar::from_units(128));
        let b = Scalars::ZERO
            .with(ScalarKind::Gpus, Scalar::from_units(2))
            .with(ScalarKind::Mem, Scalar::from_units(64));
        assert_eq!(a.plus(&b).to_string(), "cpus 1, mem 192, gpus 2");
        assert_eq!(a.component_max(&b).to_string(), "cpus 1, mem 128, gpus 2");
        assert_eq!(Scalars::ZERO.to_string(), "none");
        assert!(Scalars::ZERO.is_zero() && !a.is_zero());
        for kind in ScalarKind::ALL {
            assert_eq!(ScalarKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ScalarKind::from_name("ports"), None);
    }
}
