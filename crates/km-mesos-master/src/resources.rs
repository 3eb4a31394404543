//! Resource bookkeeping of the master: what an agent has, what is offered,
//! what tasks and executors use — with Mesos's arithmetic (fixed-point
//! scalars, ranges, sets) and Mesos's two wire formats for reservations.
//!
//! The fixed-point [`Scalar`] and the normalised [`Ranges`] come from the
//! offer matcher, so km has one implementation of Mesos's arithmetic.

// The pre-refinement `role` field is deprecated in Mesos but still the wire
// format of frameworks without RESERVATION_REFINEMENT.
#![allow(deprecated)]

use std::collections::BTreeSet;

use km_mesos::v1::{self, Resource, value};
use km_offer_matcher::resources::{Ranges, Scalar};

/// The value of one resource entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Scalar(Scalar),
    Ranges(Ranges),
    Set(BTreeSet<String>),
}

/// One resource entry: a name, the role it is reserved for (`*` when
/// unreserved) and a value. The original reservation stack and other fields
/// (disk, revocable, …) are kept to echo them back unchanged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Res {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) value: Val,
    template: Resource,
}

/// A bag of resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Resources(Vec<Res>);

/// Why a resource from a framework or a flag is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ResourceError {
    #[error("resource '{0}' has no value of its declared type")]
    MissingValue(String),
    #[error("resource '{name}' has an invalid scalar value {value}")]
    BadScalar { name: String, value: f64 },
    #[error("resource '{0}' has an empty name")]
    NoName(String),
}

impl Res {
    /// The role an entry is reserved for: the last reservation of a
    /// refinement stack, else the pre-refinement `role`, else `*`.
    fn role_of(r: &Resource) -> String {
        if let Some(last) = r.reservations.last() {
            return last.role.clone().unwrap_or_else(|| "*".into());
        }
        r.role.clone().unwrap_or_else(|| "*".into())
    }

    pub(crate) fn from_proto(r: &Resource) -> Result<Res, ResourceError> {
        if r.name.is_empty() {
            return Err(ResourceError::NoName(format!("{r:?}")));
        }
        let missing = || ResourceError::MissingValue(r.name.clone());
        let value = match r.r#type() {
            value::Type::Scalar => {
                let v = r.scalar.as_ref().ok_or_else(missing)?.value;
                if !v.is_finite() || v < 0.0 {
                    return Err(ResourceError::BadScalar { name: r.name.clone(), value: v });
                }
                Val::Scalar(Scalar::from_f64(v))
            }
            value::Type::Ranges => {
                let ranges = r.ranges.as_ref().ok_or_else(missing)?;
                Val::Ranges(Ranges::from_pairs(ranges.range.iter().map(|x| (x.begin, x.end))))
            }
            value::Type::Set => {
                Val::Set(r.set.as_ref().ok_or_else(missing)?.item.iter().cloned().collect())
            }
            value::Type::Text => return Err(missing()),
        };
        let mut template = r.clone();
        template.scalar = None;
        template.ranges = None;
        template.set = None;
        template.allocation_info = None;
        Ok(Res { name: r.name.clone(), role: Res::role_of(r), value, template })
    }

    /// Same name, reservation and kind of value, and same other fields.
    fn same_kind(&self, other: &Res) -> bool {
        self.name == other.name
            && self.role == other.role
            && std::mem::discriminant(&self.value) == std::mem::discriminant(&other.value)
            && self.template.disk == other.template.disk
            && self.template.revocable == other.template.revocable
            && self.template.shared == other.template.shared
    }

    fn is_empty(&self) -> bool {
        match &self.value {
            Val::Scalar(s) => s.is_zero(),
            Val::Ranges(r) => r.is_empty(),
            Val::Set(s) => s.is_empty(),
        }
    }

    /// The entry in the wire format a framework expects.
    fn to_proto(&self, format: Format<'_>) -> Resource {
        let mut r = self.template.clone();
        match &self.value {
            Val::Scalar(s) => r.scalar = Some(v1::value::Scalar { value: s.as_f64() }),
            Val::Ranges(ranges) => {
                r.ranges = Some(v1::value::Ranges {
                    range: ranges
                        .ranges()
                        .iter()
                        .map(|x| v1::value::Range { begin: x.begin, end: x.end })
                        .collect(),
                })
            }
            Val::Set(items) => {
                r.set = Some(v1::value::Set { item: items.iter().cloned().collect() })
            }
        }
        let reserved = self.role != "*";
        match format {
            Format::Endpoint => {
                // Operator endpoints show both forms.
                r.role = Some(self.role.clone());
                if reserved && r.reservations.is_empty() {
                    r.reservations = vec![reservation_for(&self.role, &r)];
                }
            }
            Format::Framework { refinement, .. } if refinement => {
                r.role = None;
                r.reservation = None;
                if reserved && r.reservations.is_empty() {
                    r.reservations = vec![reservation_for(&self.role, &r)];
                }
            }
            Format::Framework { .. } => {
                r.role = Some(self.role.clone());
                if let Some(last) = r.reservations.last().cloned()
                    && last.r#type() == v1::resource::reservation_info::Type::Dynamic
                {
                    r.reservation = Some(v1::resource::ReservationInfo {
                        principal: last.principal,
                        labels: last.labels,
                        ..Default::default()
                    });
                }
                r.reservations.clear();
            }
        }
        if let Format::Framework { allocation_role: Some(role), .. } = format {
            r.allocation_info = Some(v1::resource::AllocationInfo { role: Some(role.to_owned()) });
        }
        r
    }
}

fn reservation_for(role: &str, r: &Resource) -> v1::resource::ReservationInfo {
    let mut info = v1::resource::ReservationInfo {
        role: Some(role.to_owned()),
        principal: r.reservation.as_ref().and_then(|x| x.principal.clone()),
        labels: r.reservation.as_ref().and_then(|x| x.labels.clone()),
        ..Default::default()
    };
    info.set_type(if r.reservation.is_some() {
        v1::resource::reservation_info::Type::Dynamic
    } else {
        v1::resource::reservation_info::Type::Static
    });
    info
}

/// The wire format of resources sent out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format<'a> {
    /// To a framework: pre- or post-refinement, with `allocation_info` for MULTI_ROLE.
    Framework { refinement: bool, allocation_role: Option<&'a str> },
    /// Operator endpoints: `role` and `reservations` both.
    Endpoint,
}

impl Resources {
    pub(crate) fn from_proto<'a>(
        rs: impl IntoIterator<Item = &'a Resource>,
    ) -> Result<Resources, ResourceError> {
        let mut out = Resources::default();
        for r in rs {
            out.add_one(Res::from_proto(r)?);
        }
        Ok(out)
    }

    pub(crate) fn to_proto(&self, format: Format<'_>) -> Vec<Resource> {
        self.0.iter().map(|r| r.to_proto(format)).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(Res::is_empty)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Res> {
        self.0.iter()
    }

    fn add_one(&mut self, r: Res) {
        if r.is_empty() {
            return;
        }
        if let Some(mine) = self.0.iter_mut().find(|m| m.same_kind(&r)) {
            match (&mut mine.value, r.value) {
                (Val::Scalar(a), Val::Scalar(b)) => *a = a.saturating_add(b),
                (Val::Ranges(a), Val::Ranges(b)) => a.union_with(&b),
                (Val::Set(a), Val::Set(b)) => a.extend(b),
                _ => {}
            }
        } else {
            self.0.push(r);
        }
    }

    pub(crate) fn add(&mut self, other: &Resources) {
        for r in &other.0 {
            self.add_one(r.clone());
        }
    }

    /// Whether every entry of `other` is covered by this bag.
    pub(crate) fn contains(&self, other: &Resources) -> bool {
        other.0.iter().filter(|r| !r.is_empty()).all(|r| {
            self.0.iter().any(|mine| {
                mine.same_kind(r)
                    && match (&mine.value, &r.value) {
                        (Val::Scalar(a), Val::Scalar(b)) => a >= b,
                        (Val::Ranges(a), Val::Ranges(b)) => a.contains_all(b),
                        (Val::Set(a), Val::Set(b)) => b.is_subset(a),
                        _ => false,
                    }
            })
        })
    }

    /// Removes `other` (entries not present are ignored; scalars stop at zero).
    pub(crate) fn subtract(&mut self, other: &Resources) {
        for r in &other.0 {
            if let Some(mine) = self.0.iter_mut().find(|m| m.same_kind(r)) {
                match (&mut mine.value, &r.value) {
                    (Val::Scalar(a), Val::Scalar(b)) => *a = a.saturating_sub(*b).max(Scalar::ZERO),
                    (Val::Ranges(a), Val::Ranges(b)) => *a = a.subtract(b),
                    (Val::Set(a), Val::Set(b)) => a.retain(|x| !b.contains(x)),
                    _ => {}
                }
            }
        }
        self.0.retain(|r| !r.is_empty());
    }

    /// The entries a framework in `role` may be offered: unreserved ones and
    /// those reserved for `role` or one of its ancestors.
    pub(crate) fn allocatable_to(&self, role: &str) -> Resources {
        Resources(self.0.iter().filter(|r| role_may_use(role, &r.role)).cloned().collect())
    }

    /// Sum of a scalar resource over all reservations.
    pub(crate) fn scalar(&self, name: &str) -> Scalar {
        self.0.iter().filter(|r| r.name == name).fold(Scalar::ZERO, |acc, r| match r.value {
            Val::Scalar(s) => acc.saturating_add(s),
            _ => acc,
        })
    }

    /// Mesos's default `--min_allocatable_resources`: at least 0.01 cpus or 32 MB of memory.
    pub(crate) fn is_allocatable(&self) -> bool {
        self.scalar("cpus") >= Scalar::from_milli(10)
            || self.scalar("mem") >= Scalar::from_units(32)
    }

    /// The names of scalar resources present.
    pub(crate) fn scalar_names(&self) -> BTreeSet<&str> {
        self.0
            .iter()
            .filter(|r| matches!(r.value, Val::Scalar(_)))
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// Whether `role` may use resources reserved for `reserved` (`*` = unreserved).
pub(crate) fn role_may_use(role: &str, reserved: &str) -> bool {
    reserved == "*"
        || reserved == role
        || role.strip_prefix(reserved).is_some_and(|rest| rest.starts_with('/'))
}

/// Text for a resources bag, as Mesos prints it: `cpus(*):4; ports(*):[31000-32000]`.
pub(crate) fn describe(rs: &Resources) -> String {
    rs.iter()
        .map(|r| {
            let v = match &r.value {
                Val::Scalar(s) => s.to_string(),
                Val::Ranges(ranges) => ranges.to_string(),
                Val::Set(items) => {
                    format!("{{{}}}", items.iter().cloned().collect::<Vec<_>>().join(", "))
                }
            };
            format!("{}({}):{}", r.name, r.role, v)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(name: &str, v: f64, role: Option<&str>) -> Resource {
        let mut r = Resource {
            name: name.into(),
            scalar: Some(v1::value::Scalar { value: v }),
            role: role.map(Into::into),
            ..Default::default()
        };
        r.set_type(value::Type::Scalar);
        r
    }

    fn ports(b: u64, e: u64) -> Resource {
        let mut r = Resource {
            name: "ports".into(),
            ranges: Some(v1::value::Ranges { range: vec![v1::value::Range { begin: b, end: e }] }),
            ..Default::default()
        };
        r.set_type(value::Type::Ranges);
        r
    }

    #[test]
    fn fixed_point_arithmetic_does_not_drift() {
        let mut total = Resources::from_proto(&[scalar("cpus", 0.3, None)]).unwrap();
        let a = Resources::from_proto(&[scalar("cpus", 0.1, None)]).unwrap();
        let b = Resources::from_proto(&[scalar("cpus", 0.2, None)]).unwrap();
        let mut ab = a.clone();
        ab.add(&b);
        assert!(total.contains(&ab));
        total.subtract(&ab);
        assert!(total.is_empty());
    }

    #[test]
    fn ranges_and_reservations() {
        let agent = Resources::from_proto(&[
            scalar("cpus", 4.0, None),
            scalar("cpus", 2.0, Some("prod")),
            ports(31000, 32000),
        ])
        .unwrap();
        assert_eq!(agent.scalar("cpus"), Scalar::from_units(6));
        assert_eq!(agent.allocatable_to("dev").scalar("cpus"), Scalar::from_units(4));
        assert_eq!(agent.allocatable_to("prod").scalar("cpus"), Scalar::from_units(6));
        assert_eq!(agent.allocatable_to("prod/web").scalar("cpus"), Scalar::from_units(6));
        let mut left = agent.clone();
        left.subtract(&Resources::from_proto(&[ports(31000, 31009)]).unwrap());
        assert!(!left.contains(&Resources::from_proto(&[ports(31005, 31005)]).unwrap()));
        assert!(left.contains(&Resources::from_proto(&[ports(31010, 32000)]).unwrap()));
        // A reserved cpu cannot satisfy an unreserved ask and vice versa.
        let reserved_only = Resources::from_proto(&[scalar("cpus", 2.0, Some("prod"))]).unwrap();
        assert!(
            !reserved_only.contains(&Resources::from_proto(&[scalar("cpus", 1.0, None)]).unwrap())
        );
    }

    #[test]
    fn framework_formats_follow_refinement_and_multi_role() {
        let rs =
            Resources::from_proto(&[scalar("cpus", 1.0, None), scalar("mem", 64.0, Some("prod"))])
                .unwrap();
        let old = rs.to_proto(Format::Framework { refinement: false, allocation_role: None });
        assert_eq!(old[0].role.as_deref(), Some("*"));
        assert_eq!(old[1].role.as_deref(), Some("prod"));
        assert!(old.iter().all(|r| r.reservations.is_empty() && r.allocation_info.is_none()));
        let new =
            rs.to_proto(Format::Framework { refinement: true, allocation_role: Some("prod") });
        assert_eq!(new[0].role, None);
        assert!(new[0].reservations.is_empty());
        assert_eq!(new[1].reservations[0].role.as_deref(), Some("prod"));
        assert!(new.iter().all(|r| r.allocation_info.as_ref().and_then(|a| a.role.as_deref()) == Some("prod")));
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(Resources::from_proto(&[scalar("cpus", -1.0, None)]).is_err());
        assert!(Resources::from_proto(&[scalar("cpus", f64::NAN, None)]).is_err());
        let mut r = scalar("cpus", 1.0, None);
        r.scalar = None;
        assert_eq!(Resources::from_proto(&[r]), Err(ResourceError::MissingValue("cpus".into())));
    }
}
