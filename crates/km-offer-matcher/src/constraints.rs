//! Label constraints of a pod against an agent's node labels: `nodeSelector` pairs and
//! required node affinity (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`).
//!
//! Agent labels are a sorted `[(key, value)]` slice (see [`crate::offer::agent_labels`]),
//! so each lookup is a binary search.

use std::fmt;

/// Looks a key up in sorted labels.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| labels[i].1.as_str())
}

/// The operator of a node-selector requirement, with its operand.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The label is present with one of the values.
    In(Vec<String>),
    /// The label is absent or has none of the values.
    NotIn(Vec<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer greater than the operand.
    Gt(i64),
    /// The label is an integer less than the operand.
    Lt(i64),
}

/// One requirement of a node-selector term.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator and operand.
    pub op: Operator,
}

impl Requirement {
    /// True if the labels satisfy the requirement.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = label(labels, &self.key);
        match &self.op {
            Operator::In(vs) => value.is_some_and(|v| vs.iter().any(|x| x == v)),
            Operator::NotIn(vs) => value.is_none_or(|v| vs.iter().all(|x| x != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Operator::Lt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

impl fmt::Display for Requirement {
    /// `rack In (r1, r2)`, `zone Exists`, `cores Gt 4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.op {
            Operator::In(vs) => write!(f, "{key} In ({})", vs.join(", ")),
            Operator::NotIn(vs) => write!(f, "{key} NotIn ({})", vs.join(", ")),
            Operator::Exists => write!(f, "{key} Exists"),
            Operator::DoesNotExist => write!(f, "{key} DoesNotExist"),
            Operator::Gt(n) => write!(f, "{key} Gt {n}"),
            Operator::Lt(n) => write!(f, "{key} Lt {n}"),
        }
    }
}

/// A node-selector term: all requirements must hold. An empty term matches nothing
/// (Kubernetes semantics).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term {
    /// The requirements (ANDed).
    pub requirements: Vec<Requirement>,
}

impl Term {
    /// True if the labels satisfy every requirement (and there is at least one).
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        !self.requirements.is_empty() && self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Required node affinity: at least one term must hold. No terms match nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAffinity {
    /// The terms (ORed).
    pub terms: Vec<Term>,
}

impl NodeAffinity {
    /// True if some term matches.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.terms.iter().any(|t| t.matches(labels))
    }

    /// Every label key mentioned.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().flat_map(|t| t.requirements.iter().map(|r| r.key.as_str()))
    }
}

impl fmt::Display for NodeAffinity {
    /// `rack In (r1) and zone Exists or cores Gt 4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("(no terms)");
        }
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            if t.requirements.is_empty() {
                f.write_str("(empty term)")?;
            }
            for (j, r) in t.requirements.iter().enumerate() {
                if j > 0 {
                    f.write_str(" and ")?;
                }
                write!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<(String, String)> {
        let mut l =
            vec![("rack".to_owned(), "r1".to_owned()), ("cores".to_owned(), "8".to_owned())];
        l.sort();
        l
    }

    fn req(key: &str, op: Operator) -> Requirement {
        Requirement { key: key.into(), op }
    }

    #[test]
    fn operators() {
        let l = labels();
        assert!(req("rack", Operator::In(vec!["r0".into(), "r1".into()])).matches(&l));
        assert!(!req("rack", Operator::In(vec!["r0".into()])).matches(&l));
        assert!(!req("zone", Operator::In(vec!["z".into()])).matches(&l));
        assert!(req("zone", Operator::NotIn(vec!["z".into()])).matches(&l));
        assert!(!req("rack", Operator::NotIn(vec!["r1".into()])).matches(&l));
        assert!(req("rack", Operator::Exists).matches(&l));
        assert!(req("zone", Operator::DoesNotExist).matches(&l));
        assert!(req("cores", Operator::Gt(4)).matches(&l));
        assert!(!req("cores", Operator::Gt(8)).matches(&l));
        assert!(req("cores", Operator::Lt(9)).matches(&l));
        assert!(!req("rack", Operator::Lt(9)).matches(&l), "non-integer label never compares");
    }

    #[test]
    fn terms_and_affinity() {
        let l = labels();
        assert!(!Term::default().matches(&l));
        assert!(!NodeAffinity::default().matches(&l));
        let a = NodeAffinity {
            terms: vec![
                Term { requirements: vec![req("zone", Operator::Exists)] },
                Term {
                    requirements: vec![
                        req("rack", Operator::Exists),
                        req("cores", Operator::Gt(2)),
                    ],
                },
            ],
        };
        assert!(a.matches(&l));
        assert_eq!(a.to_string(), "zone Exists or rack Exists and cores Gt 2");
    }
}
