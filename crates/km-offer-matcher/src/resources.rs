//! Mesos resources as the matcher sees them: fixed-point scalars, port ranges and sets,
//! each with its reservation stack and allocation role.
//!
//! The model is km's shared one (`km_resources`), re-exported here so that the matcher's
//! paths stay as they were; see that crate for the arithmetic and its rules.

pub use km_resources::{
    Range, Ranges, Reservation, ReservationKind, Resource, Scalar, ScalarKind, Scalars, Value,
};
