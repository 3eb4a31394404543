//! One Mesos resource: a name, a value, and the fields that say who may use it
//! (reservation stack, allocation role, revocability).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use crate::ranges::Ranges;
use crate::scalar::Scalar;

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

impl Value {
    /// True when the value holds nothing: a zero scalar, no ranges, an empty set.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(s) => s.is_zero(),
            Value::Ranges(r) => r.is_empty(),
            Value::Set(s) => s.is_empty(),
        }
    }

    /// The Mesos name of the value's type: `SCALAR`, `RANGES` or `SET`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "SCALAR",
            Value::Ranges(_) => "RANGES",
            Value::Set(_) => "SET",
        }
    }

    /// True when both values are of the same type.
    pub fn same_type(&self, other: &Value) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
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

    /// True when `other` is the same kind of resource, so the two add up to one
    /// entry: same name, reservation stack, allocation role, revocability and
    /// value type. Only the amounts may differ.
    pub fn same_identity(&self, other: &Resource) -> bool {
        self.name == other.name
            && self.value.same_type(&other.value)
            && self.reservations == other.reservations
            && self.allocation_role == other.allocation_role
            && self.revocable == other.revocable
    }

    /// True when the value holds nothing.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
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
    fn resource_role_and_display() {
        let r = Resource::scalar("cpus", 1.5).reserved_for("prod").allocated_to("prod");
        assert_eq!(r.role(), "prod");
        assert_eq!(r.to_string(), "cpus(prod,alloc=prod) 1.5");
        assert_eq!(Resource::ranges("ports", [(1, 3)]).to_string(), "ports [1-3]");
        assert_eq!(Resource::scalar("mem", 64.0).role(), "*");
    }

    #[test]
    fn identity_ignores_amounts_only() {
        let cpus = Resource::scalar("cpus", 1.0);
        assert!(cpus.same_identity(&Resource::scalar("cpus", 3.0)));
        assert!(!cpus.same_identity(&Resource::scalar("mem", 1.0)));
        assert!(!cpus.same_identity(&Resource::scalar("cpus", 1.0).reserved_for("a")));
        assert!(!cpus.same_identity(&Resource::scalar("cpus", 1.0).allocated_to("a")));
        assert!(!cpus.same_identity(&Resource { revocable: true, ..cpus.clone() }));
        assert!(!cpus.same_identity(&Resource::ranges("cpus", [(1, 1)])));
        // A dynamic reservation for the same role is another resource.
        let mut dynamic = Reservation::new("a");
        dynamic.kind = ReservationKind::Dynamic;
        let mut reserved = cpus.clone();
        reserved.reservations.push(dynamic);
        assert!(!reserved.same_identity(&cpus.clone().reserved_for("a")));
    }

    #[test]
    fn empty_values() {
        assert!(Resource::scalar("cpus", 0.0).is_empty());
        assert!(Resource::ranges("ports", []).is_empty());
        assert!(Resource::with_value("s", Value::Set(BTreeSet::new())).is_empty());
        assert!(!Resource::with_value("s", Value::Set(["a".to_owned()].into())).is_empty());
        assert_eq!(Value::Set(["b".to_owned(), "a".to_owned()].into()).to_string(), "{a,b}");
        assert_eq!(Value::Scalar(Scalar::ZERO).type_name(), "SCALAR");
    }
}
