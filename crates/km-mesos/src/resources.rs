//! The one bridge between Mesos's wire types (`v1::Resource`, `v1::Attribute`)
//! and km's resource model (`km_resources`).
//!
//! Reading ([`from_proto`]) accepts both ways Mesos writes a reservation: the
//! pre-refinement `role` (plus `reservation` for a dynamic one) and the
//! post-refinement `reservations` stack; both become one stack, so a resource
//! compares equal whichever way a peer wrote it. Reading also validates what
//! the model relies on, as Mesos's own resource validation does: a name, a
//! value of the declared type, scalars finite and not negative, ranges that do
//! not run backwards, valid roles, refinements that are dynamic and go down
//! the role tree. Fields km does not model (disk info, shared, resource
//! providers) are refused rather than dropped.
//!
//! Writing ([`to_proto`]) picks the reservation fields by [`Format`]; the
//! allocation role and revocability come from the resource itself.
//!
//! The module also renders the flat JSON of Mesos's legacy `/state`
//! endpoints ([`state_object`], [`attributes_state_object`]), which the master
//! and the agent share.

// `Resource.role` and `Resource.reservation` are deprecated in Mesos but
// remain the wire format of frameworks without RESERVATION_REFINEMENT.
#![allow(deprecated)]

use std::collections::BTreeMap;

use km_resources::{
    Attribute, AttributeValue, Ranges, Reservation, ReservationKind, Resource, Resources,
    RoleError, Scalar, Value, is_strict_subrole, validate_role,
};
use serde_json::json;

use crate::v1::{self, resource::reservation_info, value};

/// Which fields carry a resource's reservations on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For frameworks without RESERVATION_REFINEMENT: `role` (`*` when
    /// unreserved) and, for a dynamic reservation, `reservation`; no
    /// `reservations`. Mesos never offers refined reservations to such
    /// frameworks; if one is written anyway, its innermost reservation is.
    PreRefinement,
    /// For frameworks with RESERVATION_REFINEMENT, and between km's master and
    /// agents: the `reservations` stack only.
    PostRefinement,
    /// For operator endpoints: the `reservations` stack and, unless the
    /// reservation is refined, the pre-refinement fields as well.
    Endpoint,
}

impl Format {
    /// The format a framework gets, by its RESERVATION_REFINEMENT capability.
    pub const fn for_framework(refinement: bool) -> Format {
        if refinement { Format::PostRefinement } else { Format::PreRefinement }
    }
}

/// A `v1::Resource` the model cannot take. Every message names the resource.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// The name is empty.
    #[error("a resource of type {type_name} has an empty name")]
    EmptyName {
        /// Its declared value type (the wire number if unknown).
        type_name: String,
    },
    /// The type is not one of Mesos's value types.
    #[error("resource '{name}' has an unknown value type {number}")]
    UnknownType {
        /// The resource.
        name: String,
        /// The type's wire number.
        number: i32,
    },
    /// TEXT is a value type of attributes only.
    #[error("resource '{name}' has a TEXT value; resources are SCALAR, RANGES or SET")]
    TextValue {
        /// The resource.
        name: String,
    },
    /// The field of the declared type is missing.
    #[error("resource '{name}' is of type {type_name} but has no {type_name} value")]
    MissingValue {
        /// The resource.
        name: String,
        /// The declared type.
        type_name: &'static str,
    },
    /// A scalar that is NaN, infinite or negative.
    #[error("resource '{name}' has the scalar value {value}; it must be finite and not negative")]
    BadScalar {
        /// The resource.
        name: String,
        /// The value.
        value: f64,
    },
    /// A range whose end is below its beginning.
    #[error("resource '{name}' has the range {begin}-{end}, which ends before it begins")]
    BackwardsRange {
        /// The resource.
        name: String,
        /// Beginning of the range.
        begin: u64,
        /// End of the range.
        end: u64,
    },
    /// A field outside the model.
    #[error("resource '{name}' has '{field}', which km does not support")]
    Unsupported {
        /// The resource.
        name: String,
        /// The field: `disk`, `shared` or `provider_id`.
        field: &'static str,
    },
    /// A role (reserved or allocated) that breaks Mesos's role rules.
    #[error("resource '{name}': {source}")]
    InvalidRole {
        /// The resource.
        name: String,
        /// What is wrong with the role.
        source: RoleError,
    },
    /// An entry of `reservations` without a role.
    #[error("resource '{name}': reservation {index} has no role")]
    ReservationWithoutRole {
        /// The resource.
        name: String,
        /// Position in `reservations`.
        index: usize,
    },
    /// An entry of `reservations` without a type (STATIC or DYNAMIC).
    #[error("resource '{name}': reservation {index} has no type (STATIC or DYNAMIC)")]
    ReservationWithoutType {
        /// The resource.
        name: String,
        /// Position in `reservations`.
        index: usize,
    },
    /// A reservation for `*`, which is no role to reserve for.
    #[error("resource '{name}' is reserved for role '*'")]
    StarReservation {
        /// The resource.
        name: String,
    },
    /// A refinement (any reservation after the first) that is STATIC.
    #[error(
        "resource '{name}': the refined reservation for '{role}' is STATIC; refinements are DYNAMIC"
    )]
    StaticRefinement {
        /// The resource.
        name: String,
        /// Role of the refinement.
        role: String,
    },
    /// A refinement whose role is not below the previous reservation's.
    #[error("resource '{name}': role '{role}' does not refine the reservation for '{parent}'")]
    NotARefinement {
        /// The resource.
        name: String,
        /// Role of the refinement.
        role: String,
        /// Role of the reservation it should refine.
        parent: String,
    },
    /// The pre-refinement `role` contradicts `reservations`.
    #[error("resource '{name}': 'role' is '{role}' but 'reservations' reserve it for '{reserved}'")]
    RoleMismatch {
        /// The resource.
        name: String,
        /// The `role` field.
        role: String,
        /// The innermost role of `reservations`.
        reserved: String,
    },
}

/// A `v1::Attribute` the model cannot take.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AttributeError {
    /// The name is empty.
    #[error("an attribute has an empty name")]
    EmptyName,
    /// The type is not one of Mesos's value types.
    #[error("attribute '{name}' has an unknown value type {number}")]
    UnknownType {
        /// The attribute.
        name: String,
        /// The type's wire number.
        number: i32,
    },
    /// The field of the declared type is missing.
    #[error("attribute '{name}' is of type {type_name} but has no {type_name} value")]
    MissingValue {
        /// The attribute.
        name: String,
        /// The declared type.
        type_name: &'static str,
    },
    /// A NaN or infinite scalar.
    #[error("attribute '{name}' has the scalar value {value}; it must be finite")]
    BadScalar {
        /// The attribute.
        name: String,
        /// The value.
        value: f64,
    },
    /// A range whose end is below its beginning.
    #[error("attribute '{name}' has the range {begin}-{end}, which ends before it begins")]
    BackwardsRange {
        /// The attribute.
        name: String,
        /// Beginning of the range.
        begin: u64,
        /// End of the range.
        end: u64,
    },
}

fn type_name(ty: value::Type) -> &'static str {
    match ty {
        value::Type::Scalar => "SCALAR",
        value::Type::Ranges => "RANGES",
        value::Type::Set => "SET",
        value::Type::Text => "TEXT",
    }
}

/// The first range of `ranges` that ends before it begins, if any.
fn backwards(ranges: &value::Ranges) -> Option<(u64, u64)> {
    ranges.range.iter().find(|r| r.begin > r.end).map(|r| (r.begin, r.end))
}

fn ranges_from_proto(ranges: &value::Ranges) -> Ranges {
    Ranges::from_pairs(ranges.range.iter().map(|r| (r.begin, r.end)))
}

fn ranges_to_proto(ranges: &Ranges) -> value::Ranges {
    value::Ranges {
        range: ranges
            .ranges()
            .iter()
            .map(|r| value::Range { begin: r.begin, end: r.end })
            .collect(),
    }
}

fn labels_from_proto(labels: Option<&v1::Labels>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels
        .into_iter()
        .flat_map(|l| &l.labels)
        .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// Labels back on the wire; an empty value is written as an absent one (the
/// model does not tell the two apart, and key-only labels are the common case).
fn labels_to_proto(labels: &[(String, String)]) -> Option<v1::Labels> {
    (!labels.is_empty()).then(|| v1::Labels {
        labels: labels
            .iter()
            .map(|(key, value)| v1::Label {
                key: key.clone(),
                value: (!value.is_empty()).then(|| value.clone()),
            })
            .collect(),
    })
}

/// Reads one resource (see the [module docs](self) for what is refused).
pub fn from_proto(r: &v1::Resource) -> Result<Resource, ResourceError> {
    let ty = value::Type::try_from(r.r#type).ok();
    if r.name.is_empty() {
        let type_name = ty.map_or_else(|| r.r#type.to_string(), |t| type_name(t).to_owned());
        return Err(ResourceError::EmptyName { type_name });
    }
    let Some(ty) = ty else {
        return Err(ResourceError::UnknownType { name: r.name.clone(), number: r.r#type });
    };
    let name = || r.name.clone();
    let missing = || ResourceError::MissingValue { name: name(), type_name: type_name(ty) };
    let value = match ty {
        value::Type::Scalar => {
            let v = r.scalar.as_ref().ok_or_else(missing)?.value;
            if !v.is_finite() || v < 0.0 {
                return Err(ResourceError::BadScalar { name: name(), value: v });
            }
            Value::Scalar(Scalar::from_f64(v))
        }
        value::Type::Ranges => {
            let ranges = r.ranges.as_ref().ok_or_else(missing)?;
            if let Some((begin, end)) = backwards(ranges) {
                return Err(ResourceError::BackwardsRange { name: name(), begin, end });
            }
            Value::Ranges(ranges_from_proto(ranges))
        }
        value::Type::Set => {
            Value::Set(r.set.as_ref().ok_or_else(missing)?.item.iter().cloned().collect())
        }
        value::Type::Text => return Err(ResourceError::TextValue { name: name() }),
    };
    for (field, present) in [
        ("disk", r.disk.is_some()),
        ("shared", r.shared.is_some()),
        ("provider_id", r.provider_id.is_some()),
    ] {
        if present {
            return Err(ResourceError::Unsupported { name: name(), field });
        }
    }
    let reservations = if r.reservations.is_empty() {
        pre_refinement_stack(r)?
    } else {
        post_refinement_stack(r)?
    };
    let allocation_role = r.allocation_info.as_ref().and_then(|a| a.role.clone());
    if let Some(role) = &allocation_role {
        validate_role(role)
            .map_err(|source| ResourceError::InvalidRole { name: name(), source })?;
    }
    Ok(Resource {
        name: r.name.clone().into(),
        value,
        reservations,
        allocation_role,
        revocable: r.revocable.is_some(),
    })
}

/// `role` (default `*`) and `reservation`: at most one reservation, static
/// unless `reservation` is set.
fn pre_refinement_stack(r: &v1::Resource) -> Result<Vec<Reservation>, ResourceError> {
    let role = r.role.as_deref().unwrap_or("*");
    validate_role(role)
        .map_err(|source| ResourceError::InvalidRole { name: r.name.clone(), source })?;
    Ok(match (role, &r.reservation) {
        ("*", None) => Vec::new(),
        ("*", Some(_)) => return Err(ResourceError::StarReservation { name: r.name.clone() }),
        (role, None) => vec![Reservation::new(role)],
        (role, Some(info)) => vec![Reservation {
            role: role.to_owned(),
            kind: ReservationKind::Dynamic,
            principal: info.principal.clone(),
            labels: labels_from_proto(info.labels.as_ref()),
        }],
    })
}

/// The `reservations` stack, outermost first; `role`, when also set (the
/// endpoint format), must agree with it.
fn post_refinement_stack(r: &v1::Resource) -> Result<Vec<Reservation>, ResourceError> {
    let name = || r.name.clone();
    let mut stack: Vec<Reservation> = Vec::with_capacity(r.reservations.len());
    for (index, info) in r.reservations.iter().enumerate() {
        let role = info
            .role
            .as_deref()
            .ok_or_else(|| ResourceError::ReservationWithoutRole { name: name(), index })?;
        let kind = match info.r#type.map(reservation_info::Type::try_from) {
            Some(Ok(reservation_info::Type::Static)) => ReservationKind::Static,
            Some(Ok(reservation_info::Type::Dynamic)) => ReservationKind::Dynamic,
            _ => return Err(ResourceError::ReservationWithoutType { name: name(), index }),
        };
        validate_role(role)
            .map_err(|source| ResourceError::InvalidRole { name: name(), source })?;
        if role == "*" {
            return Err(ResourceError::StarReservation { name: name() });
        }
        if let Some(parent) = stack.last() {
            if kind == ReservationKind::Static {
                return Err(ResourceError::StaticRefinement {
                    name: name(),
                    role: role.to_owned(),
                });
            }
            if !is_strict_subrole(role, &parent.role) {
                return Err(ResourceError::NotARefinement {
                    name: name(),
                    role: role.to_owned(),
                    parent: parent.role.clone(),
                });
            }
        }
        stack.push(Reservation {
            role: role.to_owned(),
            kind,
            principal: info.principal.clone(),
            labels: labels_from_proto(info.labels.as_ref()),
        });
    }
    if let (Some(role), Some(innermost)) = (&r.role, stack.last())
        && (stack.len() > 1 || *role != innermost.role)
    {
        return Err(ResourceError::RoleMismatch {
            name: name(),
            role: role.clone(),
            reserved: innermost.role.clone(),
        });
    }
    Ok(stack)
}

fn reservation_to_proto(r: &Reservation) -> v1::resource::ReservationInfo {
    let mut info = v1::resource::ReservationInfo {
        principal: r.principal.clone(),
        labels: labels_to_proto(&r.labels),
        role: Some(r.role.clone()),
        r#type: None,
    };
    info.set_type(match r.kind {
        ReservationKind::Static => reservation_info::Type::Static,
        ReservationKind::Dynamic => reservation_info::Type::Dynamic,
    });
    info
}

/// The pre-refinement fields of the innermost reservation: `role`, and
/// `reservation` when it is dynamic.
fn set_pre_refinement_fields(out: &mut v1::Resource, innermost: Option<&Reservation>) {
    out.role = Some(innermost.map_or("*", |r| r.role.as_str()).to_owned());
    out.reservation = innermost.filter(|r| r.kind == ReservationKind::Dynamic).map(|r| {
        v1::resource::ReservationInfo {
            principal: r.principal.clone(),
            labels: labels_to_proto(&r.labels),
            ..Default::default()
        }
    });
}

/// Writes one resource in `format`. `allocation_info` is set when the
/// resource has an allocation role, `revocable` when it is revocable.
pub fn to_proto(r: &Resource, format: Format) -> v1::Resource {
    let mut out = v1::Resource { name: r.name.to_string(), ..Default::default() };
    match &r.value {
        Value::Scalar(s) => {
            out.set_type(value::Type::Scalar);
            out.scalar = Some(value::Scalar { value: s.as_f64() });
        }
        Value::Ranges(ranges) => {
            out.set_type(value::Type::Ranges);
            out.ranges = Some(ranges_to_proto(ranges));
        }
        Value::Set(items) => {
            out.set_type(value::Type::Set);
            out.set = Some(value::Set { item: items.iter().cloned().collect() });
        }
    }
    match format {
        Format::PreRefinement => set_pre_refinement_fields(&mut out, r.reservations.last()),
        Format::PostRefinement => {
            out.reservations = r.reservations.iter().map(reservation_to_proto).collect();
        }
        Format::Endpoint => {
            if r.reservations.len() <= 1 {
                set_pre_refinement_fields(&mut out, r.reservations.first());
            }
            out.reservations = r.reservations.iter().map(reservation_to_proto).collect();
        }
    }
    out.allocation_info = r
        .allocation_role
        .as_ref()
        .map(|role| v1::resource::AllocationInfo { role: Some(role.clone()) });
    out.revocable = r.revocable.then_some(v1::resource::RevocableInfo {});
    out
}

/// Reads resources into a bag (entries of one kind merge).
pub fn resources_from_proto<'a>(
    rs: impl IntoIterator<Item = &'a v1::Resource>,
) -> Result<Resources, ResourceError> {
    rs.into_iter().map(from_proto).collect()
}

/// Writes resources (a bag, a slice, …) in `format`, in their order.
pub fn resources_to_proto<'a>(
    rs: impl IntoIterator<Item = &'a Resource>,
    format: Format,
) -> Vec<v1::Resource> {
    rs.into_iter().map(|r| to_proto(r, format)).collect()
}

/// Reads one attribute.
pub fn attribute_from_proto(a: &v1::Attribute) -> Result<Attribute, AttributeError> {
    if a.name.is_empty() {
        return Err(AttributeError::EmptyName);
    }
    let name = || a.name.clone();
    let ty = value::Type::try_from(a.r#type)
        .map_err(|_| AttributeError::UnknownType { name: name(), number: a.r#type })?;
    let missing = || AttributeError::MissingValue { name: name(), type_name: type_name(ty) };
    let value = match ty {
        value::Type::Scalar => {
            let v = a.scalar.as_ref().ok_or_else(missing)?.value;
            if !v.is_finite() {
                return Err(AttributeError::BadScalar { name: name(), value: v });
            }
            AttributeValue::Scalar(Scalar::from_f64(v))
        }
        value::Type::Ranges => {
            let ranges = a.ranges.as_ref().ok_or_else(missing)?;
            if let Some((begin, end)) = backwards(ranges) {
                return Err(AttributeError::BackwardsRange { name: name(), begin, end });
            }
            AttributeValue::Ranges(ranges_from_proto(ranges))
        }
        value::Type::Set => {
            AttributeValue::Set(a.set.as_ref().ok_or_else(missing)?.item.iter().cloned().collect())
        }
        value::Type::Text => {
            AttributeValue::Text(a.text.as_ref().ok_or_else(missing)?.value.clone())
        }
    };
    Ok(Attribute { name: name(), value })
}

/// Writes one attribute.
pub fn attribute_to_proto(a: &Attribute) -> v1::Attribute {
    let mut out = v1::Attribute { name: a.name.clone(), ..Default::default() };
    match &a.value {
        AttributeValue::Text(t) => {
            out.set_type(value::Type::Text);
            out.text = Some(value::Text { value: t.clone() });
        }
        AttributeValue::Scalar(s) => {
            out.set_type(value::Type::Scalar);
            out.scalar = Some(value::Scalar { value: s.as_f64() });
        }
        AttributeValue::Ranges(r) => {
            out.set_type(value::Type::Ranges);
            out.ranges = Some(ranges_to_proto(r));
        }
        AttributeValue::Set(items) => {
            out.set_type(value::Type::Set);
            out.set = Some(value::Set { item: items.iter().cloned().collect() });
        }
    }
    out
}

/// Ranges as Mesos prints them: `[31000-32000, 33000-33000]`.
fn ranges_text(ranges: &Ranges) -> String {
    let parts: Vec<String> =
        ranges.ranges().iter().map(|r| format!("{}-{}", r.begin, r.end)).collect();
    format!("[{}]", parts.join(", "))
}

/// A set as Mesos prints it: `{a, b}`.
fn set_text<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let items: Vec<&str> = items.into_iter().map(String::as_str).collect();
    format!("{{{}}}", items.join(", "))
}

/// Resources as the legacy `/state` endpoints show them: one member per name,
/// summed (or joined) over reservations and allocations; `cpus`, `gpus`,
/// `mem` and `disk` always (0 when absent); scalars as numbers, ranges and sets
/// as Mesos prints them. Revocable resources are left out, as Mesos does.
pub fn state_object(rs: &Resources) -> serde_json::Value {
    let mut by_name: BTreeMap<&str, Value> = BTreeMap::new();
    for r in rs.iter().filter(|r| !r.revocable) {
        match (by_name.get_mut(&*r.name), &r.value) {
            (None, v) => {
                by_name.insert(&r.name, v.clone());
            }
            (Some(Value::Scalar(a)), Value::Scalar(b)) => *a = a.saturating_add(*b),
            (Some(Value::Ranges(a)), Value::Ranges(b)) => a.union_with(b),
            (Some(Value::Set(a)), Value::Set(b)) => a.extend(b.iter().cloned()),
            // One name with two value types: the first one shown wins.
            (Some(_), _) => {}
        }
    }
    let mut out = serde_json::Map::new();
    for name in ["cpus", "gpus", "mem", "disk"] {
        out.insert(name.to_owned(), json!(0.0));
    }
    for (name, v) in by_name {
        let v = match v {
            Value::Scalar(s) => json!(s.as_f64()),
            Value::Ranges(r) => json!(ranges_text(&r)),
            Value::Set(items) => json!(set_text(&items)),
        };
        out.insert(name.to_owned(), v);
    }
    serde_json::Value::Object(out)
}

/// Attributes as the legacy `/state` endpoints show them: scalars as numbers,
/// text as strings, ranges and sets as Mesos prints them.
pub fn attributes_state_object<'a>(
    attributes: impl IntoIterator<Item = &'a Attribute>,
) -> serde_json::Value {
    let out: serde_json::Map<String, serde_json::Value> = attributes
        .into_iter()
        .map(|a| {
            let v = match &a.value {
                AttributeValue::Text(t) => json!(t),
                AttributeValue::Scalar(s) => json!(s.as_f64()),
                AttributeValue::Ranges(r) => json!(ranges_text(r)),
                AttributeValue::Set(items) => json!(set_text(items)),
            };
            (a.name.clone(), v)
        })
        .collect();
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests;

/// The k8sm codec of an executor's resources on its Node (annotation
/// `k8s.mesosphere.io/executorResources`): each protobuf `mesos.Resource`,
/// standard-base64 encoded, joined with commas.
pub fn encode_node_annotation(resources: &[crate::v1::Resource]) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    resources.iter().map(|r| b64.encode(r.encode_to_vec())).collect::<Vec<_>>().join(",")
}

/// Decodes [`encode_node_annotation`]; `None` if any part is not a resource.
pub fn decode_node_annotation(text: &str) -> Option<Vec<crate::v1::Resource>> {
    use base64::Engine as _;
    use prost::Message as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| crate::v1::Resource::decode(b64.decode(p.trim()).ok()?.as_slice()).ok())
        .collect()
}
