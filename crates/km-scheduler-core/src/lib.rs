//! The decision core of `km scheduler`: which pods to launch on which offers, when to decline,
//! revive and suppress, how task states turn into pod states, what to kill, and when to
//! reconcile.
//!
//! Architecture invariants:
//! - **Pure.** No IO, no clock, no async runtime, no threads: [`Core`] is driven by
//!   [`Input`]s and a [`Now`], and answers with [`Effect`]s. The same inputs at the same times
//!   give the same effects (back-off jitter comes from a seeded generator). The async shell in
//!   `km-scheduler` performs the effects and feeds their results back as inputs.
//! - **Placement is the matcher's.** Pods are reduced to demands and planned by
//!   `km-offer-matcher`; the core decides when to plan and what to do with the plan.
//! - **No pod is launched twice.** A pod has at most one live task; it is queued again only
//!   once that task has ended without the pod being bound.
//!
//! ```ignore
//! let mut core = Core::new(Config::default())?;
//! core.handle(Input::Subscribed { framework_id }, now);
//! core.handle(Input::PodResyncStarted, now);
//! core.handle(Input::PodApplied(pod), now);
//! core.handle(Input::PodResyncDone, now);
//! core.handle(Input::Offers(offers), now);
//! core.plan(now);
//! for effect in core.take_effects() { /* ACCEPT, bind, … */ }
//! ```
#![deny(missing_docs)]

pub mod backoff;
pub mod config;
mod core;
pub mod drain;
pub mod executor_id;
pub mod model;
pub mod task;

pub use crate::config::{Config, LaunchPolicy};
pub use crate::core::{Core, CoreError, Gauges, RUNTIME_CLASSES, SENTINEL_PREFIX, Stats, UiView};
pub use crate::model::{
    Accept, AcceptOutcome, Effect, EventType, ExecutorChoice, Input, LaunchTask, NodeInfo,
    NodeSpec, Now, PhaseChange, PodRef, Source, TaskState, TaskUpdate, WriteResult,
};
