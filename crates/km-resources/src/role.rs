//! Role names and the role hierarchy.
//!
//! A role is `*` (the default role; resources "reserved" for `*` are
//! unreserved) or a path of components separated by `/`, where `eng/web` is a
//! child of `eng`.

/// Why a role name is not a valid Mesos role.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The empty string.
    #[error("role name is empty")]
    Empty,
    /// Starts with `/`.
    #[error("role '{0}' starts with '/'")]
    LeadingSlash(String),
    /// Ends with `/`.
    #[error("role '{0}' ends with '/'")]
    TrailingSlash(String),
    /// Holds `//`, an empty component.
    #[error("role '{0}' has an empty component ('//')")]
    DoubleSlash(String),
    /// A component is `.`, `..` or `*`.
    #[error("role '{role}' has '{component}' as a component")]
    ReservedComponent {
        /// The role.
        role: String,
        /// The component: `.`, `..` or `*`.
        component: String,
    },
    /// A component starts with `-`.
    #[error("role '{role}' has a component starting with '-' ('{component}')")]
    LeadingDash {
        /// The role.
        role: String,
        /// The offending component.
        component: String,
    },
    /// Holds whitespace or DEL.
    #[error("role {role:?} contains {}", char_name(*.character))]
    InvalidCharacter {
        /// The role.
        role: String,
        /// The first character Mesos refuses.
        character: char,
    },
}

/// The characters Mesos refuses anywhere in a role.
const INVALID: [char; 7] = ['\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{7f}'];

fn char_name(c: char) -> &'static str {
    match c {
        '\t' => "a tab",
        '\n' => "a line feed",
        '\u{b}' => "a vertical tab",
        '\u{c}' => "a form feed",
        '\r' => "a carriage return",
        ' ' => "a space",
        _ => "a DEL character",
    }
}

/// Checks a role name against Mesos's rules (`mesos::roles::validate` in
/// Mesos 1.x), so that a role a real Mesos master takes is taken here, and the
/// other way round. `*` is valid; any other role
///
/// - is not empty and has no leading, trailing or doubled `/`;
/// - has no component `.`, `..` or `*`, and none starting with `-`;
/// - holds no tab, line feed, vertical tab, form feed, carriage return, space
///   or DEL (0x7f). Mesos checks exactly these bytes: other control
///   characters and non-ASCII whitespace are allowed.
pub fn validate_role(role: &str) -> Result<(), RoleError> {
    if role == "*" {
        return Ok(());
    }
    if role.is_empty() {
        return Err(RoleError::Empty);
    }
    if role.starts_with('/') {
        return Err(RoleError::LeadingSlash(role.to_owned()));
    }
    if role.ends_with('/') {
        return Err(RoleError::TrailingSlash(role.to_owned()));
    }
    if role.contains("//") {
        return Err(RoleError::DoubleSlash(role.to_owned()));
    }
    for component in role.split('/') {
        if matches!(component, "." | ".." | "*") {
            return Err(RoleError::ReservedComponent {
                role: role.to_owned(),
                component: component.to_owned(),
            });
        }
        if component.starts_with('-') {
            return Err(RoleError::LeadingDash {
                role: role.to_owned(),
                component: component.to_owned(),
            });
        }
        if let Some(character) = component.chars().find(|c| INVALID.contains(c)) {
            return Err(RoleError::InvalidCharacter { role: role.to_owned(), character });
        }
    }
    Ok(())
}

/// True when `role` lies strictly below `ancestor` in the hierarchy
/// (`eng/web` below `eng`; `engine` is not below `eng`, nor is `eng` below itself).
pub fn is_strict_subrole(role: &str, ancestor: &str) -> bool {
    role.strip_prefix(ancestor).is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a framework in `role` may use resources reserved for `reserved`:
/// unreserved ones (`*`), those reserved for the role itself, and those
/// reserved for one of its ancestors.
pub fn role_may_use(role: &str, reserved: &str) -> bool {
    reserved == "*" || reserved == role || is_strict_subrole(role, reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (role, valid in Mesos). The second half lists the names on which the
    /// two copies this function replaces (`km_mesos::flags::valid_role` and the
    /// master's `valid_role`) disagreed with Mesos or with each other.
    const CASES: &[(&str, bool)] = &[
        ("*", true),
        ("prod", true),
        ("eng/web", true),
        ("a.b", true),
        ("..a", true),
        ("a-", true),
        ("**", true),
        ("ünïcödé", true),
        ("", false),
        ("/", false),
        ("/prod", false),
        ("prod/", false),
        ("a//b", false),
        (".", false),
        ("..", false),
        ("a/./b", false),
        ("a/..", false),
        ("*/a", false),
        ("a/*", false),
        ("-a", false),
        ("a/-b", false),
        ("a b", false),
        ("a\tb", false),
        ("a\nb", false),
        ("a\u{b}b", false),
        ("a\u{c}b", false),
        ("a\rb", false),
        // DEL is the one control character Mesos refuses; both old copies took it.
        ("a\u{7f}b", false),
        // Backspace passes in Mesos (whose source comment calls 0x7f "backspace");
        // the master's copy refused 0x08, the flags copy took it.
        ("a\u{8}b", true),
        // Mesos looks at ASCII bytes only; both old copies refused Unicode whitespace.
        ("a\u{a0}b", true),
        ("a\u{2003}b", true),
        // Other control characters pass in Mesos as well.
        ("a\u{0}b", true),
    ];

    #[test]
    fn mesos_role_rules() {
        for &(role, valid) in CASES {
            assert_eq!(validate_role(role).is_ok(), valid, "{role:?}: {:?}", validate_role(role));
        }
    }

    #[test]
    fn errors_name_the_role_and_the_problem() {
        let msg = |r: &str| validate_role(r).unwrap_err().to_string();
        assert_eq!(msg(""), "role name is empty");
        assert_eq!(msg("/a"), "role '/a' starts with '/'");
        assert_eq!(msg("a/"), "role 'a/' ends with '/'");
        assert_eq!(msg("a//b"), "role 'a//b' has an empty component ('//')");
        assert_eq!(msg("a/../b"), "role 'a/../b' has '..' as a component");
        assert_eq!(msg("a/-b"), "role 'a/-b' has a component starting with '-' ('-b')");
        assert_eq!(msg("a b"), "role \"a b\" contains a space");
        assert_eq!(msg("a\tb"), "role \"a\\tb\" contains a tab");
        assert_eq!(msg("x\u{7f}"), "role \"x\\u{7f}\" contains a DEL character");
        assert_eq!(
            validate_role("a/*"),
            Err(RoleError::ReservedComponent { role: "a/*".into(), component: "*".into() })
        );
    }

    #[test]
    fn hierarchy() {
        assert!(is_strict_subrole("eng/web", "eng"));
        assert!(is_strict_subrole("eng/web/a", "eng"));
        assert!(!is_strict_subrole("eng", "eng"));
        assert!(!is_strict_subrole("engine", "eng"));
        assert!(!is_strict_subrole("eng", "eng/web"));

        assert!(role_may_use("prod", "*"));
        assert!(role_may_use("*", "*"));
        assert!(role_may_use("prod", "prod"));
        assert!(role_may_use("prod/web", "prod"));
        assert!(role_may_use("prod/web/a", "prod/web"));
        assert!(!role_may_use("prod", "prod/web"), "a parent may not use a child's reservation");
        assert!(!role_may_use("production", "prod"));
        assert!(!role_may_use("dev", "prod"));
        assert!(!role_may_use("*", "prod"));
    }
}
