//! Mesos's text syntax for agent resources and attributes, as the agent flags
//! take them.
//!
//! - Resources (`--resources`): `;`-separated `name(role):value` entries, e.g.
//!   `cpus:4;mem(prod):1024;ports:[31000-32000];disks:{a,b}`. A value is a
//!   number (scalar), `[a-b,c]` (ranges) or `{x,y}` (a set). Without a role, or
//!   with `*`, the resource is unreserved; any other role is a static
//!   reservation. Negative numbers are refused, and so is a name used with
//!   two value types.
//! - Attributes (`--attributes`): `name:value` entries, where a value that is
//!   neither a finite number nor bracketed is text (`rack:r1`, `ver:1.2.3`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::attribute::{Attribute, AttributeValue};
use crate::ranges::Ranges;
use crate::resource::{Resource, Value};
use crate::role::{RoleError, validate_role};
use crate::scalar::Scalar;

/// An entry that does not follow the syntax.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry '{entry}': {problem}")]
pub struct TextError {
    /// The `;`-separated entry that failed, trimmed.
    pub entry: String,
    /// What is wrong with it.
    pub problem: TextProblem,
}

/// What is wrong with an entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    /// No `:` between name and value.
    #[error("expected name:value")]
    MissingColon,
    /// Nothing before the `:` (or the `(`).
    #[error("empty name")]
    EmptyName,
    /// Nothing after the `:`.
    #[error("missing value")]
    MissingValue,
    /// `name(role` without `)`.
    #[error("unterminated '(' in role")]
    UnterminatedRole,
    /// The role breaks Mesos's role rules.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// `[` without `]`.
    #[error("unterminated '['")]
    UnterminatedRanges,
    /// `{` without `}`.
    #[error("unterminated '{{'")]
    UnterminatedSet,
    /// A range element that is neither `n` nor `a-b`.
    #[error("'{0}' is not a range")]
    NotARange(String),
    /// `b-a` with `b > a`.
    #[error("range '{0}' ends before it begins")]
    BackwardsRange(String),
    /// A resource value that is not a finite number, ranges or a set.
    #[error("'{0}' is not a number, [ranges] or {{set}}")]
    NotAValue(String),
    /// A negative scalar resource.
    #[error("a scalar resource cannot be negative")]
    NegativeScalar,
    /// The name appeared before with another value type.
    #[error("'{name}' was a {first} resource before and is {second} here")]
    MixedTypes {
        /// The resource name.
        name: String,
        /// Type of its first appearance.
        first: &'static str,
        /// Type of this entry.
        second: &'static str,
    },
}

fn entries(spec: &str) -> impl Iterator<Item = &str> {
    spec.split(';').map(str::trim).filter(|e| !e.is_empty())
}

/// A value as written: ranges and sets are bracketed, anything else is a
/// number or (for attributes) text.
enum Parsed {
    Number(f64),
    Ranges(Ranges),
    Set(BTreeSet<String>),
    Other(String),
}

fn parse_value(text: &str) -> Result<Parsed, TextProblem> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(TextProblem::UnterminatedRanges)?;
        let mut pairs = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (begin, end) = part.split_once('-').unwrap_or((part, part));
            let number = |s: &str| {
                s.trim().parse::<u64>().map_err(|_| TextProblem::NotARange(part.to_owned()))
            };
            let (begin, end) = (number(begin)?, number(end)?);
            if begin > end {
                return Err(TextProblem::BackwardsRange(part.to_owned()));
            }
            pairs.push((begin, end));
        }
        return Ok(Parsed::Ranges(Ranges::from_pairs(pairs)));
    }
    if let Some(inner) = text.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or(TextProblem::UnterminatedSet)?;
        let items = inner.split(',').map(str::trim).filter(|s| !s.is_empty());
        return Ok(Parsed::Set(items.map(str::to_owned).collect()));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Parsed::Number(v)),
        _ => Ok(Parsed::Other(text.to_owned())),
    }
}

fn parse_resource(entry: &str) -> Result<Resource, TextProblem> {
    let (key, text) = entry.split_once(':').ok_or(TextProblem::MissingColon)?;
    let key = key.trim();
    let (name, role) = match key.split_once('(') {
        Some((name, rest)) => {
            (name.trim(), rest.strip_suffix(')').ok_or(TextProblem::UnterminatedRole)?.trim())
        }
        None => (key, "*"),
    };
    if name.is_empty() {
        return Err(TextProblem::EmptyName);
    }
    validate_role(role)?;
    let value = match parse_value(text)? {
        Parsed::Number(v) if v < 0.0 => return Err(TextProblem::NegativeScalar),
        Parsed::Number(v) => Value::Scalar(Scalar::from_f64(v)),
        Parsed::Ranges(r) => Value::Ranges(r),
        Parsed::Set(items) => Value::Set(items),
        Parsed::Other(text) => return Err(TextProblem::NotAValue(text)),
    };
    let resource = Resource::with_value(Cow::Owned(name.to_owned()), value);
    Ok(if role == "*" { resource } else { resource.reserved_for(role) })
}

/// Parses agent resources, one [`Resource`] per entry in the order given
/// (entries of one kind are not merged; collect them into
/// [`Resources`](crate::Resources) for that). Empty input gives no resources.
pub fn parse_resources(spec: &str) -> Result<Vec<Resource>, TextError> {
    let mut types: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut out = Vec::new();
    for entry in entries(spec) {
        let error = |problem| TextError { entry: entry.to_owned(), problem };
        let r = parse_resource(entry).map_err(error)?;
        let ty = r.value.type_name();
        let first = *types.entry(r.name.to_string()).or_insert(ty);
        if first != ty {
            return Err(error(TextProblem::MixedTypes {
                name: r.name.to_string(),
                first,
                second: ty,
            }));
        }
        out.push(r);
    }
    Ok(out)
}

fn parse_attribute(entry: &str) -> Result<Attribute, TextProblem> {
    let (name, text) = entry.split_once(':').ok_or(TextProblem::MissingColon)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(TextProblem::EmptyName);
    }
    if text.trim().is_empty() {
        return Err(TextProblem::MissingValue);
    }
    let value = match parse_value(text)? {
        Parsed::Number(v) => AttributeValue::Scalar(Scalar::from_f64(v)),
        Parsed::Ranges(r) => AttributeValue::Ranges(r),
        Parsed::Set(items) => AttributeValue::Set(items),
        Parsed::Other(text) => AttributeValue::Text(text),
    };
    Ok(Attribute { name: name.to_owned(), value })
}

/// Parses agent attributes, in the order given. Scalars keep three decimals,
/// as everywhere in this crate.
pub fn parse_attributes(spec: &str) -> Result<Vec<Attribute>, TextError> {
    entries(spec)
        .map(|entry| {
            parse_attribute(entry).map_err(|problem| TextError { entry: entry.to_owned(), problem })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Reservation, ReservationKind};

    #[test]
    fn resources_in_mesos_syntax() {
        let rs = parse_resources(
            "cpus:4;mem(prod):1024.5; ports:[31000-32000, 33000];disks:{b,a} ;gpus(*):1;",
        )
        .unwrap();
        assert_eq!(rs.len(), 5);
        assert_eq!(rs[0], Resource::scalar("cpus", 4.0));
        assert_eq!(rs[1], Resource::scalar("mem", 1024.5).reserved_for("prod"));
        assert_eq!(rs[1].reservations, [Reservation::new("prod")]);
        assert_eq!(rs[1].reservations[0].kind, ReservationKind::Static);
        assert_eq!(rs[2], Resource::ranges("ports", [(31000, 32000), (33000, 33000)]));
        assert_eq!(
            rs[3].value,
            Value::Set(["a".to_owned(), "b".to_owned()].into()),
            "sets are sorted"
        );
        assert!(rs[4].reservations.is_empty(), "'*' is no reservation");
        assert!(parse_resources("").unwrap().is_empty());
        assert!(parse_resources(" ; ;").unwrap().is_empty());
    }

    #[test]
    fn resource_errors_name_the_entry_and_the_problem() {
        let e = |spec: &str| parse_resources(spec).unwrap_err();
        assert_eq!(
            e("cpus:4; mem:lots"),
            TextError { entry: "mem:lots".into(), problem: TextProblem::NotAValue("lots".into()) }
        );
        assert_eq!(
            e("mem:lots").to_string(),
            "invalid entry 'mem:lots': 'lots' is not a number, [ranges] or {set}"
        );
        assert_eq!(e("cpus").problem, TextProblem::MissingColon);
        assert_eq!(e(":1").problem, TextProblem::EmptyName);
        assert_eq!(e("(prod):1").problem, TextProblem::EmptyName);
        assert_eq!(e("cpus(:1").problem, TextProblem::UnterminatedRole);
        assert_eq!(e("cpus(web:1").problem, TextProblem::UnterminatedRole);
        assert_eq!(e("ports:[1-2").problem, TextProblem::UnterminatedRanges);
        assert_eq!(e("s:{a").problem, TextProblem::UnterminatedSet);
        assert_eq!(e("ports:[1-x]").problem, TextProblem::NotARange("1-x".into()));
        assert_eq!(e("ports:[5-1]").problem, TextProblem::BackwardsRange("5-1".into()));
        assert_eq!(e("cpus:-1").problem, TextProblem::NegativeScalar);
        assert_eq!(e("cpus:inf").problem, TextProblem::NotAValue("inf".into()));
        assert_eq!(e("cpus:NaN").problem, TextProblem::NotAValue("NaN".into()));
        assert!(matches!(
            e("cpus(-x):1").problem,
            TextProblem::Role(RoleError::LeadingDash { .. })
        ));
        assert!(matches!(e("cpus(a//b):1").problem, TextProblem::Role(RoleError::DoubleSlash(_))));
        assert_eq!(
            e("cpus(a/./b):1").to_string(),
            "invalid entry 'cpus(a/./b):1': role 'a/./b' has '.' as a component"
        );
    }

    #[test]
    fn one_name_one_type() {
        let e = parse_resources("ports:[1-2];cpus:1;ports(web):3").unwrap_err();
        assert_eq!(e.entry, "ports(web):3");
        assert_eq!(
            e.to_string(),
            "invalid entry 'ports(web):3': 'ports' was a RANGES resource before and is SCALAR here"
        );
        // The same type twice is fine (and stays two entries).
        assert_eq!(parse_resources("cpus:1;cpus(web):2").unwrap().len(), 2);
    }

    #[test]
    fn attributes_pick_their_type() {
        let a = parse_attributes(
            "rack:r1;zone:a;level:3;neg:-2.5;ids:[1-5];tags:{y,x};ver:1.2.3;big:inf",
        )
        .unwrap();
        assert_eq!(a[0], Attribute::text("rack", "r1"));
        assert_eq!(a[2].value, AttributeValue::Scalar(Scalar::from_units(3)));
        assert_eq!(a[3].value, AttributeValue::Scalar(Scalar::from_milli(-2500)));
        assert_eq!(a[4].value, AttributeValue::Ranges(Ranges::from_pairs([(1, 5)])));
        assert_eq!(a[5].value, AttributeValue::Set(["x".to_owned(), "y".to_owned()].into()));
        assert_eq!(a[6], Attribute::text("ver", "1.2.3"));
        assert_eq!(a[7], Attribute::text("big", "inf"), "non-finite numbers are text");
    }

    #[test]
    fn attribute_errors() {
        let e = |spec: &str| parse_attributes(spec).unwrap_err();
        assert_eq!(e("rack:r1;zone").entry, "zone");
        assert_eq!(e("zone").problem, TextProblem::MissingColon);
        assert_eq!(e("rack:").problem, TextProblem::MissingValue);
        assert_eq!(e(" :x").problem, TextProblem::EmptyName);
        assert_eq!(e("ids:[1-").problem, TextProblem::UnterminatedRanges);
    }
}
