//! The offer-matcher core of km: given Mesos offers and pending pods, decide which pods go
//! where, with which resources and which host ports — and say why for every pod left out.
//!
//! Architecture invariants:
//! - **Pure.** No IO, no clock (`now` is an argument), no async runtime, no threads. The same
//!   input gives the same [`Plan`], byte for byte.
//! - **Own model.** [`Offer`] and [`KnownAgent`] are plain structs over km's shared resource
//!   model (`km_resources`, re-exported as [`resources`]); the scheduler converts Mesos
//!   protobufs into them. Pods come in as `k8s_openapi` [`Pod`]s and are reduced
//!   to a [`PodDemand`] by [`Matcher::demand`].
//! - **Explanations are data.** A pod that does not fit is an [`Outcome::Unplaced`] with
//!   counted [`Reason`]s and an optional [`NeverFits`] verdict; an unusable pod spec is an
//!   [`Outcome::Invalid`]. `Err` is reserved for a bad [`Config`].
//! - **Packing.** Many pods per agent; the offers of one agent are merged and the plan lists
//!   the offer IDs each launch consumes. The default [`Strategy::Binpack`] takes the pods by
//!   priority, then the most constrained first, and opens an agent only when none it already
//!   opened takes the pod; [`Strategy::Spread`] balances pods over agents or an attribute.
//! - **Borrowed input.** [`Matcher::plan_refs`] plans demands the caller keeps elsewhere (one
//!   per pending pod, say) without cloning them; [`Matcher::plan`] takes a slice of demands and
//!   [`Matcher::plan_pods`] converts `Pod`s first.
//!
//! ```ignore
//! let matcher = Matcher::new(Config::default())?;
//! let plan = matcher.plan_pods(&pods, &offers, &known_agents, now);
//! for launch in &plan.launches { /* ACCEPT launch.offer_ids with one LAUNCH per task */ }
//! for o in &plan.outcomes { if let Outcome::Unplaced(why) = &o.outcome { /* event: {why} */ } }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod constraints;
pub mod demand;
mod engine;
pub mod explain;
pub mod offer;
pub mod plan;
pub mod quantity;
pub mod resources;

use std::time::SystemTime;

pub use k8s_openapi::api::core::v1::Pod;

pub use crate::config::{
    Config, ConfigError, ExecutorConfig, ExecutorUpgrade, PortMapping, PublicAgents, ResourceBasis,
    Strategy,
};
pub use crate::constraints::{NodeAffinity, Operator, Requirement, Term};
pub use crate::demand::{
    HostPort, InvalidPod, PORT_MAPPING_LABEL, PodDemand, PodKey, PortRequest, ROLES_ANNOTATION,
};
pub use crate::explain::{Explanation, NeverFits, Reason};
pub use crate::offer::{Attribute, AttributeValue, KnownAgent, Offer, Unavailability};
pub use crate::plan::{
    ExecutorAction, ExecutorNote, Launch, Outcome, Plan, PodOutcome, PortAssignment, Task,
};
pub use crate::resources::{
    Range, Ranges, Reservation, ReservationKind, Resource, Scalar, ScalarKind, Scalars, Value,
};

use crate::engine::Entry;

/// The matcher: a validated [`Config`] and the batch entry points.
#[derive(Clone, Debug)]
pub struct Matcher {
    config: Config,
}

impl Matcher {
    /// Validates the configuration.
    pub fn new(config: Config) -> Result<Matcher, ConfigError> {
        config.validate()?;
        Ok(Matcher { config })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reduces a pod to its demand under this configuration.
    pub fn demand(&self, pod: &Pod) -> Result<PodDemand, InvalidPod> {
        demand::pod_demand(pod, &self.config)
    }

    /// Plans a batch of demands onto the offers. `known` lists what is known about agents
    /// beyond these offers (capacity, running executors); it may be empty. `now` is used for
    /// maintenance windows and stands in for a missing creation time.
    pub fn plan(
        &self,
        pods: &[PodDemand],
        offers: &[Offer],
        known: &[KnownAgent],
        now: SystemTime,
    ) -> Plan {
        let entries: Vec<Entry<'_>> = pods.iter().map(Entry::Demand).collect();
        engine::plan(&self.config, &entries, offers, known, now)
    }

    /// Like [`Matcher::plan`], for demands the caller keeps elsewhere (for instance one per
    /// pending pod in its own records): nothing is cloned. Outcomes and `pod_index` refer to
    /// positions in `pods`; the plan is the one [`Matcher::plan`] makes of the same demands.
    pub fn plan_refs(
        &self,
        pods: &[&PodDemand],
        offers: &[Offer],
        known: &[KnownAgent],
        now: SystemTime,
    ) -> Plan {
        let entries: Vec<Entry<'_>> = pods.iter().map(|d| Entry::Demand(d)).collect();
        engine::plan(&self.config, &entries, offers, known, now)
    }

    /// Like [`Matcher::plan`], converting the pods first; pods that cannot be converted get
    /// [`Outcome::Invalid`].
    pub fn plan_pods(
        &self,
        pods: &[Pod],
        offers: &[Offer],
        known: &[KnownAgent],
        now: SystemTime,
    ) -> Plan {
        // Pods that cannot be converted, by position in `invalid`.
        let mut invalid: Vec<(PodKey, InvalidPod)> = Vec::new();
        let converted: Vec<Result<PodDemand, usize>> = pods
            .iter()
            .map(|p| {
                self.demand(p).map_err(|e| {
                    let key = PodKey::new(
                        p.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                        p.metadata.name.clone().unwrap_or_default(),
                    );
                    invalid.push((key, e));
                    invalid.len() - 1
                })
            })
            .collect();
        let entries: Vec<Entry<'_>> = converted
            .iter()
            .map(|c| match c {
                Ok(d) => Entry::Demand(d),
                Err(i) => Entry::Invalid(&invalid[*i]),
            })
            .collect();
        engine::plan(&self.config, &entries, offers, known, now)
    }
}
