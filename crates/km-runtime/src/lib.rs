//! The pod runtime shared by `km kubelet` and the Mesos executor.
//!
//! - [`pod`]: the pod model derived from a Kubernetes `Pod` (ownership
//!   labels, runtime class, restart policy, containers with resolved env).
//! - [`lifecycle`]: a pure state machine over container observations and
//!   `now`: restartPolicy with kubelet back-off, phase, container states.
//! - [`runtime`]: the [`ContainerRuntime`] trait, implemented by
//!   [`native::NativeRuntime`] (binaries on the host in namespaces and
//!   cgroups, via nix) and [`docker::DockerRuntime`] (the Docker engine,
//!   via bollard).
//! - [`worker`]: one async task per pod driving the lifecycle with a
//!   runtime, with probes ([`probe`]) and status ([`status`]).
//! - [`manager`]: the set of pods of a node; orphan removal at start-up.
//! - [`logs`]: tail and follow over container logs.
//! - [`config_sources`]: ConfigMap and Secret references resolved into
//!   env values and volume files, for callers with an API server.

pub mod config_sources;
pub mod docker;
pub mod error;
pub mod lifecycle;
pub mod logs;
pub mod manager;
pub mod native;
pub mod pod;
mod probe;
pub mod runtime;
pub mod status;
pub mod worker;

pub use error::{Error, Result};
pub use manager::PodManager;
pub use runtime::ContainerRuntime;
