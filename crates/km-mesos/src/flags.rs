//! Mesos's command-line syntax for agent resources and attributes, producing
//! wire types.
//!
//! The syntax and its parser live in `km_resources` ([`km_resources::parse_resources`],
//! [`km_resources::parse_attributes`]); these wrappers convert the result with
//! [`crate::resources`], for callers that want `v1` messages:
//!
//! - `--resources "cpus:4;mem(prod):1024;ports:[31000-32000];disks:{a,b}"`;
//!   a role other than `*` becomes a static reservation, written in the
//!   post-refinement form (`reservations`).
//! - `--attributes "rack:r1;zone:a;level:3;ids:[1-5]"`.

use crate::resources::{Format, attribute_to_proto, resources_to_proto};
use crate::v1::{Attribute, Resource};

/// A flag value that does not follow Mesos's syntax; names the bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry '{entry}': {problem}")]
pub struct FlagError {
    /// The `;`-separated entry that failed.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

impl From<km_resources::TextError> for FlagError {
    fn from(e: km_resources::TextError) -> FlagError {
        FlagError { entry: e.entry, problem: e.problem.to_string() }
    }
}

/// Mesos's role name rules; see [`km_resources::validate_role`], which also
/// says what is wrong.
pub fn valid_role(role: &str) -> bool {
    km_resources::validate_role(role).is_ok()
}

/// Parses `--resources` into post-refinement `v1::Resource`s, one per entry.
pub fn parse_resources(spec: &str) -> Result<Vec<Resource>, FlagError> {
    let parsed = km_resources::parse_resources(spec)?;
    Ok(resources_to_proto(&parsed, Format::PostRefinement))
}

/// Parses `--attributes` into `v1::Attribute`s.
pub fn parse_attributes(spec: &str) -> Result<Vec<Attribute>, FlagError> {
    Ok(km_resources::parse_attributes(spec)?.iter().map(attribute_to_proto).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::value;

    #[test]
    fn resources_in_mesos_syntax() {
        let rs = parse_resources("cpus:4;mem(prod):1024.5; ports:[31000-32000, 33000];disks:{a,b}")
            .unwrap();
        assert_eq!(rs.len(), 4);
        assert_eq!(rs[0].scalar.as_ref().unwrap().value, 4.0);
        assert!(rs[0].reservations.is_empty());
        #[allow(deprecated)]
        let role = &rs[1].role;
        assert_eq!(*role, None, "post-refinement form only");
        assert_eq!(rs[1].reservations[0].role.as_deref(), Some("prod"));
        let ranges = &rs[2].ranges.as_ref().unwrap().range;
        assert_eq!((ranges[1].begin, ranges[1].end), (33000, 33000));
        assert_eq!(rs[3].set.as_ref().unwrap().item, ["a", "b"]);
    }

    #[test]
    fn errors_name_the_entry() {
        let e = parse_resources("cpus:4;mem:lots").unwrap_err();
        assert_eq!(e.entry, "mem:lots");
        assert_eq!(
            e.to_string(),
            "invalid entry 'mem:lots': 'lots' is not a number, [ranges] or {set}"
        );
        assert!(parse_resources("cpus").unwrap_err().to_string().contains("expected name:value"));
        assert!(parse_resources("ports:[5-1]").unwrap_err().to_string().contains("ends before"));
        assert!(parse_attributes("rack").is_err());
    }

    #[test]
    fn attributes_pick_their_type() {
        let a = parse_attributes("rack:r1;level:3;ids:[1-5];tags:{x,y}").unwrap();
        assert_eq!(a[0].r#type(), value::Type::Text);
        assert_eq!(a[1].r#type(), value::Type::Scalar);
        assert_eq!(a[2].r#type(), value::Type::Ranges);
        assert_eq!(a[3].r#type(), value::Type::Set);
    }

    #[test]
    fn valid_role_delegates() {
        assert!(valid_role("*") && valid_role("eng/web"));
        assert!(!valid_role("a b") && !valid_role("a\u{7f}"));
    }
}
