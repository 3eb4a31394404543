//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and
//! field selectors (`=`, `==`, `!=` on a fixed set of fields per kind).

use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn bad(selector: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("unable to parse requirement: {why} in selector {selector:?}"))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    pub fn parse(input: &str) -> ApiResult<LabelSelector> {
        let mut reqs = Vec::new();
        for part in split_top(input) {
            reqs.push(Self::parse_one(input, part)?);
        }
        Ok(LabelSelector(reqs))
    }

    fn parse_one(all: &str, part: &str) -> ApiResult<Requirement> {
        let check_key = |k: &str| -> ApiResult<String> {
            let k = k.trim();
            if valid_key(k) {
                Ok(k.to_owned())
            } else {
                Err(bad(all, &format!("invalid label key {k:?}")))
            }
        };
        let check_value = |v: &str| -> ApiResult<String> {
            let v = v.trim();
            if valid_value(v) {
                Ok(v.to_owned())
            } else {
                Err(bad(all, &format!("invalid label value {v:?}")))
            }
        };
        if let Some(key) = part.strip_prefix('!') {
            return Ok(Requirement::NotExists(check_key(key)?));
        }
        if let Some((k, v)) = part.split_once("!=") {
            return Ok(Requirement::NotEquals(check_key(k)?, check_value(v)?));
        }
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(Requirement::Equals(check_key(k)?, check_value(v)?));
        }
        // `key in (a,b)`, `key notin (a,b)`.
        if let Some(open) = part.find('(') {
            let head = part[..open].trim();
            let Some(body) = part[open + 1..].strip_suffix(')') else {
                return Err(bad(all, "expected ')'"));
            };
            let values = body
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(check_value)
                .collect::<ApiResult<Vec<_>>>()?;
            let mut words = head.split_whitespace();
            let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(all, "expected 'key in (values)'"));
            };
            return match op {
                "in" => Ok(Requirement::In(check_key(key)?, values)),
                "notin" => Ok(Requirement::NotIn(check_key(key)?, values)),
                other => Err(bad(all, &format!("unknown operator {other:?}"))),
            };
        }
        Ok(Requirement::Exists(check_key(part)?))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object (its `metadata.labels`) matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The JSON pointer behind a selectable field of `kind`, if it is one.
fn field_path(kind: &Kind, field: &str) -> Option<&'static str> {
    let common = match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        _ => None,
    };
    common.or(match (kind.kind, field) {
        ("Pod", "spec.nodeName") => Some("/spec/nodeName"),
        ("Pod", "spec.schedulerName") => Some("/spec/schedulerName"),
        ("Pod", "spec.restartPolicy") => Some("/spec/restartPolicy"),
        ("Pod", "spec.serviceAccountName") => Some("/spec/serviceAccountName"),
        ("Pod", "status.phase") => Some("/status/phase"),
        ("Pod", "status.podIP") => Some("/status/podIP"),
        ("Pod", "status.nominatedNodeName") => Some("/status/nominatedNodeName"),
        ("Node", "spec.unschedulable") => Some("/spec/unschedulable"),
        ("Namespace", "status.phase") => Some("/status/phase"),
        ("Secret", "type") => Some("/type"),
        ("Event", "involvedObject.kind") => Some("/involvedObject/kind"),
        ("Event", "involvedObject.namespace") => Some("/involvedObject/namespace"),
        ("Event", "involvedObject.name") => Some("/involvedObject/name"),
        ("Event", "involvedObject.uid") => Some("/involvedObject/uid"),
        ("Event", "involvedObject.apiVersion") => Some("/involvedObject/apiVersion"),
        ("Event", "involvedObject.resourceVersion") => Some("/involvedObject/resourceVersion"),
        ("Event", "involvedObject.fieldPath") => Some("/involvedObject/fieldPath"),
        ("Event", "reason") => Some("/reason"),
        ("Event", "source") => Some("/source/component"),
        ("Event", "type") => Some("/type"),
        ("ReplicationController", "status.replicas") => Some("/status/replicas"),
        _ => None,
    })
}

impl FieldSelector {
    pub fn parse(kind: &Kind, input: &str) -> ApiResult<FieldSelector> {
        let mut terms = Vec::new();
        for part in split_top(input) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let Some(path) = field_path(kind, field) else {
                return Err(ApiError::BadRequest(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                )));
            };
            terms.push((path.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let got = match object.pointer(path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[track_caller]
    fn check(selector: &str, labels: Value, expect: bool) {
        let sel = LabelSelector::parse(selector).expect("selector parses");
        assert_eq!(sel.matches(&pod(labels)), expect, "{selector}");
    }

    #[test]
    fn label_operators() {
        check("", json!({}), true);
        check("app=web", json!({"app": "web"}), true);
        check("app==web", json!({"app": "db"}), false);
        check("app!=web", json!({}), true);
        check("app!=web", json!({"app": "web"}), false);
        check("tier in (fe, be)", json!({"tier": "be"}), true);
        check("tier in (fe,be)", json!({}), false);
        check("tier notin (fe,be)", json!({}), true);
        check("tier notin (fe,be)", json!({"tier": "fe"}), false);
        check("app", json!({"app": ""}), true);
        check("!app", json!({"app": "x"}), false);
        check("app=web,tier in (fe,be),!canary", json!({"app": "web", "tier": "fe"}), true);
        check("example.com/role=x", json!({"example.com/role": "x"}), true);
    }

    #[test]
    fn bad_label_selectors_are_400() {
        for bad in ["a in (x", "a=b c", "a foo (x)", "a=@"] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(err.code(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pods = crate::registry::lookup("", "v1", "pods").expect("pods");
        let obj = pod(json!({}));
        let sel = |s: &str| FieldSelector::parse(pods, s).expect(s);
        assert!(sel("spec.nodeName=n1,status.phase=Running").matches(&obj));
        assert!(sel("spec.nodeName!=").matches(&obj));
        assert!(!sel("spec.nodeName=").matches(&obj));
        assert!(sel("metadata.namespace==ns,metadata.name=p").matches(&obj));
        assert!(sel("spec.schedulerName=").matches(&obj));
        assert!(FieldSelector::parse(pods, "spec.bogus=1").is_err());
        let events = crate::registry::by_kind("Event").expect("events");
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}});
        assert!(
            FieldSelector::parse(events, "involvedObject.kind=Pod,involvedObject.name=p")
                .expect("ev")
                .matches(&ev)
        );
    }
}
