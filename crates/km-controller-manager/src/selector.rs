//! Label selectors: `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist), and
//! the plain equality maps of ReplicationControllers and Services.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A parsed selector. An empty selector selects nothing here: a controller with an empty
/// selector would claim every pod of its namespace, which the API forbids for workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A selector that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector: {0}")]
pub struct SelectorError(String);

impl Selector {
    /// From an equality map (ReplicationController, Service).
    pub fn from_map(map: &BTreeMap<String, String>) -> Selector {
        Selector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }

    /// From a `LabelSelector` (ReplicaSet, Deployment).
    pub fn from_label_selector(s: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let needs_values = |r: Requirement| {
                if values.is_empty() {
                    Err(SelectorError(format!("{} {} needs values", e.key, e.operator)))
                } else {
                    Ok(r)
                }
            };
            requirements.push(match e.operator.as_str() {
                "In" => needs_values(Requirement::In(e.key.clone(), values.clone()))?,
                "NotIn" => needs_values(Requirement::NotIn(e.key.clone(), values.clone()))?,
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => return Err(SelectorError(format!("unknown operator {other:?}"))),
            });
        }
        Ok(Selector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement (an empty selector matches nothing).
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.requirements.is_empty() {
            return false;
        }
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_operator_selects_as_kubernetes_does() {
        let s = Selector::from_label_selector(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                },
                LabelSelectorRequirement {
                    key: "x".into(),
                    operator: "Exists".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "old".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        })
        .expect("valid");
        assert!(s.matches(Some(&labels(&[("app", "web"), ("tier", "a"), ("x", "")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "c"), ("x", "")]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("x", ""),
            ("env", "prod")
        ]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "a")]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("x", ""),
            ("old", "1")
        ]))));
        assert!(!s.matches(None));
        assert!(!Selector::from_map(&BTreeMap::new()).matches(Some(&labels(&[("a", "b")]))));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(Selector::from_label_selector(&bad).is_err());
    }
}
