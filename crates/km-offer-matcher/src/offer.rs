//! Offers and agents: the matcher's own plain model of what Mesos offers.
//!
//! The scheduler converts `mesos.v1.Offer` protobufs into [`Offer`] (resources and attributes
//! with `km_mesos::resources`); this crate knows nothing of protobuf. [`KnownAgent`] carries what the scheduler knows about an agent
//! beyond the current offers (its total capacity, its running executors); it is used for the
//! "can never fit any known agent" verdicts and for executor compatibility.

use std::time::{Duration, SystemTime};

pub use km_resources::{Attribute, AttributeValue};

use crate::resources::Resource;

/// Node label carrying the agent's hostname.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Prefix of the node labels derived from Mesos agent attributes.
pub const ATTRIBUTE_LABEL_PREFIX: &str = "k8s.mesosphere.io/attribute-";

/// The node label key of a Mesos attribute (`rack` → `k8s.mesosphere.io/attribute-rack`).
pub fn attribute_label(name: &str) -> String {
    format!("{ATTRIBUTE_LABEL_PREFIX}{name}")
}

/// A Mesos offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// `OfferID`.
    pub id: String,
    /// `AgentID`.
    pub agent_id: String,
    /// Agent hostname (the node name in Kubernetes).
    pub hostname: String,
    /// Offered resources.
    pub resources: Vec<Resource>,
    /// Agent attributes.
    pub attributes: Vec<Attribute>,
    /// IDs of this framework's executors already running on the agent.
    pub executor_ids: Vec<String>,
    /// Maintenance window announced for the agent, if any.
    pub unavailability: Option<Unavailability>,
}

impl Offer {
    /// An offer with no attributes, executors or maintenance.
    pub fn new(
        id: impl Into<String>,
        agent_id: impl Into<String>,
        hostname: impl Into<String>,
        resources: Vec<Resource>,
    ) -> Offer {
        Offer {
            id: id.into(),
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            resources,
            attributes: Vec::new(),
            executor_ids: Vec::new(),
            unavailability: None,
        }
    }
}

/// A maintenance window (`Offer.unavailability`). Pods are not placed on an agent whose
/// window contains `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailability {
    /// Start of the window.
    pub start: SystemTime,
    /// Length; `None` means until further notice.
    pub duration: Option<Duration>,
}

impl Unavailability {
    /// True if `now` lies in the window.
    pub fn covers(&self, now: SystemTime) -> bool {
        if now < self.start {
            return false;
        }
        match self.duration {
            None => true,
            Some(d) => self.start.checked_add(d).is_none_or(|end| now < end),
        }
    }
}

/// What the scheduler knows about an agent besides its current offers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownAgent {
    /// `AgentID`.
    pub agent_id: String,
    /// Hostname.
    pub hostname: String,
    /// Attributes.
    pub attributes: Vec<Attribute>,
    /// Total resources of the agent (`AgentInfo.resources`); empty if unknown, then the
    /// offered resources stand in for the capacity.
    pub capacity: Vec<Resource>,
    /// IDs of this framework's executors running there (merged with `Offer.executor_ids`).
    pub executor_ids: Vec<String>,
}

/// The node labels of an agent: the hostname label plus one label per attribute, sorted by key.
/// (The engine runs this for every offered agent, hence the care with allocations.)
pub fn agent_labels(hostname: &str, attributes: &[Attribute]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(attributes.len() + 1);
    labels.push((HOSTNAME_LABEL.to_owned(), hostname.to_owned()));
    for a in attributes {
        let mut key = String::with_capacity(ATTRIBUTE_LABEL_PREFIX.len() + a.name.len());
        key.push_str(ATTRIBUTE_LABEL_PREFIX);
        key.push_str(&a.name);
        let value = match &a.value {
            AttributeValue::Text(t) => t.clone(),
            other => other.to_string(),
        };
        labels.push((key, value));
    }
    labels.sort_unstable();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Ranges, Scalar};

    #[test]
    fn labels_from_attributes() {
        let attrs = vec![
            Attribute::text("rack", "r1"),
            Attribute {
                name: "cores".into(),
                value: AttributeValue::Scalar(Scalar::from_milli(8000)),
            },
            Attribute {
                name: "p".into(),
                value: AttributeValue::Ranges(Ranges::from_pairs([(1, 2), (5, 5)])),
            },
        ];
        let l = agent_labels("h1", &attrs);
        assert_eq!(
            l,
            vec![
                ("k8s.mesosphere.io/attribute-cores".into(), "8".into()),
                ("k8s.mesosphere.io/attribute-p".into(), "[1-2,5]".into()),
                ("k8s.mesosphere.io/attribute-rack".into(), "r1".into()),
                ("kubernetes.io/hostname".into(), "h1".into()),
            ]
        );
    }

    #[test]
    fn maintenance_window() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let u = Unavailability { start: t0, duration: Some(Duration::from_secs(10)) };
        assert!(!u.covers(t0 - Duration::from_secs(1)));
        assert!(u.covers(t0));
        assert!(!u.covers(t0 + Duration::from_secs(10)));
        assert!(
            Unavailability { start: t0, duration: None }
                .covers(t0 + Duration::from_secs(1_000_000))
        );
    }
}
