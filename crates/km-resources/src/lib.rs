//! km's model of Mesos resources, shared by every part of km that counts them:
//! the offer matcher, `km mesos-master`, `km mesos-agent` and the scheduler.
//!
//! What is here, and nothing else:
//! - values: [`Scalar`] (thousandths, as Mesos rounds), [`Ranges`] (kept
//!   normalised) and string sets, with [`Scalars`] for the four kinds a pod asks for;
//! - [`Resource`]: a value with the fields that decide who may use it
//!   (reservation stack, allocation role, revocability), and [`Resources`], a
//!   bag of them with Mesos's addition, subtraction and containment;
//! - roles: [`validate_role`] with Mesos's naming rules and [`role_may_use`]
//!   for the role hierarchy;
//! - agent [`Attribute`]s;
//! - the text syntax of the agent's `--resources` and `--attributes` flags
//!   ([`parse_resources`], [`parse_attributes`]).
//!
//! The crate knows nothing of protobuf, JSON or IO; its only dependency is
//! `thiserror`. Conversions from and to the Mesos wire types live in one place,
//! `km_mesos::resources`.
#![deny(missing_docs)]

mod attribute;
mod bag;
mod ranges;
mod resource;
mod role;
mod scalar;
mod text;

pub use crate::attribute::{Attribute, AttributeValue};
pub use crate::bag::Resources;
pub use crate::ranges::{Range, Ranges};
pub use crate::resource::{Reservation, ReservationKind, Resource, Value};
pub use crate::role::{RoleError, is_strict_subrole, role_may_use, validate_role};
pub use crate::scalar::{Scalar, ScalarKind, Scalars};
pub use crate::text::{TextError, TextProblem, parse_attributes, parse_resources};
