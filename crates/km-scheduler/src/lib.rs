//! `km scheduler`: the Mesos framework that runs Kubernetes pods as Mesos tasks.
//!
//! This crate is the IO shell around `km-scheduler-core`, which takes every decision: it watches
//! pods and nodes in the Kubernetes API, subscribes to the Mesos master (v1 HTTP scheduler API),
//! and carries out what the core decides — ACCEPTs with LAUNCH operations, declines, kills,
//! acknowledgements, reconciliation, bindings, pod phases, conditions and events, Node objects.
//!
//! - [`args`] and [`settings`]: flags and the `--scheduler-config` file, checked at start-up.
//! - `shell`: the loop; `convert`: Mesos protobufs ↔ the core's model; `kubeapi`: the API
//!   side; `executor`: the `ExecutorInfo` and executor ID; `static_pods`; `fwid`: where the
//!   framework ID is kept; `ha`: the leader election of `--ha`; `metrics` and `http`: `/metrics`, `/healthz` and `/debug`.

pub mod args;
mod convert;
pub mod drain;
pub mod duration;
mod etcd;
mod executor;
mod feed;
mod fwid;
mod ha;
mod http;
pub mod ini_config;
mod kubeapi;
pub mod master_spec;
mod metrics;
pub mod settings;
mod shell;
mod static_pods;
mod workers;

pub use crate::args::Args;

/// Runs `km scheduler` until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = settings::Settings::from_args(&args)?;
    match settings.ha_lease_ttl {
        None => {
            let plan = shell::Plan::new(&settings)?;
            let kube = kubeapi::Kube::connect(&settings).await?;
            let feeds = feed::Feeds::start(&kube.watch);
            shell::run(settings, plan, &kube, &feeds, None).await.map(drop)
        }
        Some(ttl) => ha::run(settings, ttl).await,
    }
}
