//! Mesos's command-line syntax for agent resources and attributes.
//!
//! - `--resources "cpus:4;mem(prod):1024;ports:[31000-32000];disks:{a,b}"`:
//!   `name(role):value` entries separated by `;`, a value being a number
//!   (SCALAR), `[a-b,c-d]` (RANGES) or `{x,y}` (SET); the role defaults to
//!   `*` (unreserved), any other role is a static reservation.
//! - `--attributes "rack:r1;zone:a;level:3;ids:[1-5]"`: a number is a
//!   SCALAR, `[..]` RANGES, `{..}` SET, anything else TEXT.

use crate::v1::{self, Attribute, Resource, value};

/// A flag value that does not follow Mesos's syntax; names the bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry '{entry}': {problem}")]
pub struct FlagError {
    /// The `;`-separated entry that failed.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(entry: &str, problem: impl Into<String>) -> FlagError {
    FlagError { entry: entry.to_owned(), problem: problem.into() }
}

enum Parsed {
    Scalar(f64),
    Ranges(Vec<(u64, u64)>),
    Set(Vec<String>),
    Text(String),
}

fn parse_value(entry: &str, text: &str, allow_text: bool) -> Result<Parsed, FlagError> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| err(entry, "unterminated '['"))?;
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let b: u64 =
                b.trim().parse().map_err(|_| err(entry, format!("'{part}' is not a range")))?;
            let e: u64 =
                e.trim().parse().map_err(|_| err(entry, format!("'{part}' is not a range")))?;
            if b > e {
                return Err(err(entry, format!("range '{part}' ends before it begins")));
            }
            ranges.push((b, e));
        }
        return Ok(Parsed::Ranges(ranges));
    }
    if let Some(inner) = text.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or_else(|| err(entry, "unterminated '{'"))?;
        return Ok(Parsed::Set(
            inner.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        ));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Parsed::Scalar(v)),
        _ if allow_text && !text.is_empty() => Ok(Parsed::Text(text.to_owned())),
        _ => Err(err(entry, format!("'{text}' is not a number, [ranges] or {{set}}"))),
    }
}

/// Mesos's role name rules: `*`, or `/`-separated components that are not
/// empty, `.`, `..` or `*`, do not start with `-` and hold no whitespace.
pub fn valid_role(role: &str) -> bool {
    role == "*"
        || (!role.is_empty()
            && !role.starts_with('/')
            && !role.ends_with('/')
            && role.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c != "*"
                    && !c.starts_with('-')
                    && !c.chars().any(char::is_whitespace)
            }))
}

fn entries(spec: &str) -> impl Iterator<Item = &str> {
    spec.split(';').map(str::trim).filter(|e| !e.is_empty())
}

/// Parses `--resources`.
pub fn parse_resources(spec: &str) -> Result<Vec<Resource>, FlagError> {
    let mut out = Vec::new();
    for entry in entries(spec) {
        let (key, val) = entry.split_once(':').ok_or_else(|| err(entry, "expected name:value"))?;
        let key = key.trim();
        let (name, role) = match key.split_once('(') {
            Some((name, rest)) => {
                let role =
                    rest.strip_suffix(')').ok_or_else(|| err(entry, "unterminated '(' in role"))?;
                (name.trim(), role.trim())
            }
            None => (key, "*"),
        };
        if name.is_empty() {
            return Err(err(entry, "empty resource name"));
        }
        if !valid_role(role) {
            return Err(err(entry, format!("invalid role '{role}'")));
        }
        let mut r = Resource { name: name.to_owned(), ..Default::default() };
        match parse_value(entry, val, false)? {
            Parsed::Scalar(v) if v < 0.0 => {
                return Err(err(entry, "a scalar resource cannot be negative"));
            }
            Parsed::Scalar(v) => {
                r.set_type(value::Type::Scalar);
                r.scalar = Some(value::Scalar { value: v });
            }
            Parsed::Ranges(rs) => {
                r.set_type(value::Type::Ranges);
                r.ranges = Some(value::Ranges {
                    range: rs.into_iter().map(|(begin, end)| value::Range { begin, end }).collect(),
                });
            }
            Parsed::Set(items) => {
                r.set_type(value::Type::Set);
                r.set = Some(value::Set { item: items });
            }
            Parsed::Text(_) => return Err(err(entry, "text values are not resources")),
        }
        if role != "*" {
            let mut reservation =
                v1::resource::ReservationInfo { role: Some(role.to_owned()), ..Default::default() };
            reservation.set_type(v1::resource::reservation_info::Type::Static);
            r.reservations.push(reservation);
        }
        out.push(r);
    }
    Ok(out)
}

/// Parses `--attributes`.
pub fn parse_attributes(spec: &str) -> Result<Vec<Attribute>, FlagError> {
    let mut out = Vec::new();
    for entry in entries(spec) {
        let (name, val) = entry.split_once(':').ok_or_else(|| err(entry, "expected name:value"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err(entry, "empty attribute name"));
        }
        if val.trim().is_empty() {
            return Err(err(entry, "missing attribute value"));
        }
        let mut a = Attribute { name: name.to_owned(), ..Default::default() };
        match parse_value(entry, val, true)? {
            Parsed::Scalar(v) => {
                a.set_type(value::Type::Scalar);
                a.scalar = Some(value::Scalar { value: v });
            }
            Parsed::Ranges(rs) => {
                a.set_type(value::Type::Ranges);
                a.ranges = Some(value::Ranges {
                    range: rs.into_iter().map(|(begin, end)| value::Range { begin, end }).collect(),
                });
            }
            Parsed::Set(items) => {
                a.set_type(value::Type::Set);
                a.set = Some(value::Set { item: items });
            }
            Parsed::Text(t) => {
                a.set_type(value::Type::Text);
                a.text = Some(value::Text { value: t });
            }
        }
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_in_mesos_syntax() {
        let rs = parse_resources("cpus:4;mem(prod):1024.5; ports:[31000-32000, 33000];disks:{a,b}")
            .unwrap();
        assert_eq!(rs.len(), 4);
        assert_eq!(rs[0].scalar.as_ref().unwrap().value, 4.0);
        assert!(rs[0].reservations.is_empty());
        assert_eq!(rs[1].reservations[0].role.as_deref(), Some("prod"));
        let ranges = &rs[2].ranges.as_ref().unwrap().range;
        assert_eq!((ranges[1].begin, ranges[1].end), (33000, 33000));
        assert_eq!(rs[3].set.as_ref().unwrap().item, ["a", "b"]);
    }

    #[test]
    fn resource_errors_name_the_entry() {
        assert_eq!(parse_resources("cpus:4;mem:lots").unwrap_err().entry, "mem:lots");
        assert!(parse_resources("cpus").unwrap_err().to_string().contains("expected name:value"));
        assert!(parse_resources("ports:[5-1]").unwrap_err().to_string().contains("ends before"));
        assert!(parse_resources("cpus(:1").is_err());
        assert!(parse_resources("cpus:-1").is_err());
    }

    #[test]
    fn attributes_pick_their_type() {
        let a = parse_attributes("rack:r1;level:3;ids:[1-5];tags:{x,y}").unwrap();
        assert_eq!(a[0].r#type(), value::Type::Text);
        assert_eq!(a[1].r#type(), value::Type::Scalar);
        assert_eq!(a[2].r#type(), value::Type::Ranges);
        assert_eq!(a[3].r#type(), value::Type::Set);
    }
}
