//! The Mesos v1 HTTP APIs as km speaks them.
//!
//! - [`v1`]: the protobuf messages (prost types generated from `proto/`), with
//!   the scheduler, executor and operator (`master`) packages nested inside.
//! - [`codec`] and [`json`]: both encodings Mesos uses on the wire, content
//!   negotiation as Mesos does it, and checks for `required` fields.
//! - [`recordio`]: the framing of event streams.
//! - [`resources`]: the only conversions between Mesos resources and
//!   attributes on the wire and km's model of them (`km_resources`).
//! - [`flags`]: the agent flags' text syntax, producing wire types.
//! - [`scheduler`], [`executor`], [`operator`]: HTTP clients for frameworks,
//!   executors and operators, built on the above.
//!
//! - [`agent`]: km's own master ↔ agent protocol (`proto/km/v1/agent.proto`).
//!
//! Servers (km's local master and agent) reuse the same types and codecs.

pub mod codec;
pub mod duration;
pub mod executor;
pub mod flags;
mod http_util;
pub mod json;
pub mod operator;
mod proto;
pub mod recordio;
pub mod resources;
pub mod scheduler;

pub use codec::{ContentType, DecodeError};
pub use proto::DESCRIPTOR_POOL;
pub use proto::km::v1::agent;
pub use proto::mesos::v1;
