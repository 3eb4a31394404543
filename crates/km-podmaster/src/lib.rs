//! `km podmaster`: cold-standby HA for master components over etcd.
//!
//! On every master node a podmaster competes for one etcd key (e.g.
//! `scheduler`). The winner copies a pod manifest from `--source-file` to
//! `--dest-file` in the kubelet's manifest directory, so that node's kubelet
//! runs the component; every other podmaster makes sure its dest file is
//! absent. It re-implements the podmaster of the original Kubernetes-on-Mesos
//! HA recipe with etcd v3 leases instead of v2 TTL keys, and fixes its flaws:
//! two contenders could both believe they had won, source edits were never
//! propagated, and a master cut off from etcd kept its dest file for a full
//! TTL, as long as its lease could last.
//!
//! # Never two masters at once
//!
//! Two rules, one per side of a handover:
//!
//! 1. **A newcomer acts only after the old lease is gone in etcd.** The key
//!    is created with a transaction that succeeds only if the key does not
//!    exist (create revision 0) and attaches it to the newcomer's lease. The
//!    old holder's key exists until etcd revokes its lease or the lease
//!    expires in etcd, so nobody can acquire before that.
//! 2. **A master fences itself on its own clock.** It notes the time it
//!    *sent* each grant or keep-alive that etcd acknowledged; etcd restarted
//!    the lease's TTL no earlier than that. It therefore knows a lower bound
//!    on when the lease can expire (send time + TTL), and removes its dest
//!    file a margin before it ([`elector::fence_margin`]: max(TTL/10, 1 s)),
//!    unless a later renewal was acknowledged.
//!
//! Together: by the time anybody else can create the key, the old master's
//! dest file is gone. This holds as long as the podmaster's and the etcd
//! leader's clocks advance at about the same rate (not: agree on the time),
//! the margin covers the delays between the deadline and the unlink, and
//! nobody deletes the key by hand (which hands it over without waiting for
//! the lease). It does not hold for a podmaster that is killed outright (the
//! dead process cannot remove its file): the kubelet restarts it as a pod, and
//! a restarted podmaster starts as a standby and removes dest at once. It is
//! also a guarantee about files: a kubelet starts and stops the pod only when
//! it next looks at its manifest directory.
//!
//! Leaving with SIGTERM or SIGINT removes dest first, then revokes the lease,
//! so a standby takes over at its next look at the key, within one `--sleep`.
//!
//! # Structure
//!
//! [`elector`] is the decision core: no IO, time is an argument. [`etcd`]
//! carries out its steps with etcd, [`manifest`] does the file work, and
//! [`driver`] is the loop that ties them together. [`config`] holds the flags
//! and validates them before the podmaster joins the election.

pub mod config;
pub mod driver;
pub mod elector;
pub mod etcd;
pub mod manifest;

pub use config::{Args, Config, ConfigError};

/// Why the podmaster could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the etcd client: {0}")]
    EtcdClient(etcd_client::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the podmaster until SIGTERM or SIGINT, then removes dest, revokes
/// the lease and returns.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::from_args(args)?;
    let signals = km_process::StopSignals::install().map_err(Error::Signals)?;
    let shutdown = async move {
        let stop = signals.first().await;
        tracing::info!("received {stop}, leaving the election");
    };
    driver::run(config, shutdown).await?;
    Ok(())
}
