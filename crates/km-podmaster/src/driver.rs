//! The event loop: one task that owns the [`Elector`], talks to etcd through
//! [`Etcd`], touches the dest file, and logs each state change once.
//!
//! Each round: check the fencing deadline, do one exchange with etcd
//! (bounded by the request timeout and, for a master, by its fencing
//! deadline), feed the result to the elector, carry out its actions, then
//! sleep until the next round or the fencing deadline, whichever is first.
//! File operations are never interrupted; shutdown is checked only while
//! waiting on etcd or sleeping.

use std::future::Future;

use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::Config;
use crate::elector::{Action, Decision, Elector, Event, LossReason, Observation};
use crate::etcd::Etcd;
use crate::manifest::{self, Synced};

/// Runs the election until `shutdown` completes, then leaves it: dest is
/// removed, then the lease is revoked.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let mut etcd = Etcd::connect(&config).await.map_err(Error::EtcdClient)?;
    let mut elector = Elector::new(config.timing);
    let mut files = Files::new(&config);
    let request_timeout = config.request_timeout();
    tokio::pin!(shutdown);

    info!(
        key = %config.key,
        whoami = %config.whoami,
        etcd = %config.endpoints.join(","),
        source = %config.source.display(),
        dest = %config.dest.display(),
        sleep = ?config.timing.sleep,
        ttl = ?config.timing.ttl,
        "joining the election"
    );

    loop {
        let started = Instant::now();
        let decision = elector.tick(started);
        apply(&decision, &mut files);

        let step = elector.next_step();
        let limit = match elector.fence_at() {
            Some(fence_at) => fence_at.min(started + request_timeout),
            None => started + request_timeout,
        };
        let observations = tokio::select! {
            biased;
            () = &mut shutdown => break,
            result = timeout_at(limit, etcd.exchange(step)) => match result {
                Ok(observations) => observations,
                Err(_) => vec![Observation::EtcdError {
                    error: format!("no answer within {:?}", limit.saturating_duration_since(started)),
                    orphan: etcd.abandon(),
                }],
            },
        };
        for observation in observations {
            // The elector reports the first failure of a run (logged as a warning once); each
            // one is also noted at debug level, so that the retries can be followed.
            if let Observation::EtcdError { error, .. } = &observation {
                debug!("exchange with etcd failed: {error}");
            }
            let decision = elector.observe(Instant::now(), observation);
            apply(&decision, &mut files);
        }

        let next = elector.next_exchange_at(started);
        let wake = elector.fence_at().map_or(next, |fence_at| fence_at.min(next));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = sleep_until(wake) => {}
        }
    }

    // Leaving: an exchange cut short may have left a lease behind.
    let orphan = etcd.abandon();
    let decision = elector.shutdown();
    apply(&decision, &mut files);
    let revoke = decision.actions.iter().filter_map(|a| match a {
        Action::RevokeLease(lease) => Some(*lease),
        _ => None,
    });
    for lease in revoke.chain(orphan) {
        match timeout(request_timeout, etcd.revoke(lease)).await {
            Ok(Ok(())) => info!(lease, "revoked the lease"),
            Ok(Err(e)) => warn!(lease, "could not revoke the lease, it expires by itself: {e}"),
            Err(_) => warn!(lease, "no answer to revoking the lease, it expires by itself"),
        }
    }
    info!("left the election");
    Ok(())
}

/// Logs events and carries out file actions; revocation is the caller's.
fn apply(decision: &Decision, files: &mut Files) {
    for event in &decision.events {
        log_event(event);
    }
    for action in &decision.actions {
        match action {
            Action::SyncDest => files.sync(),
            Action::RemoveDest => files.remove(),
            Action::RevokeLease(_) => {}
        }
    }
}

fn log_event(event: &Event) {
    match event {
        Event::BecameMaster { lease, ttl } => info!(lease, ?ttl, "became master"),
        Event::LostMastership { reason: LossReason::Shutdown } => {
            info!("giving up mastership: shutting down")
        }
        Event::LostMastership { reason } => warn!("lost mastership: {reason}"),
        Event::Following { holder } => {
            info!(%holder, "standing by: the key is held by another podmaster")
        }
        Event::EtcdUnreachable { error } => warn!("etcd unreachable, retrying: {error}"),
        Event::EtcdReachable => info!("etcd reachable again"),
    }
}

/// The source and dest files, with the last file error remembered so that
/// a persisting failure is logged once.
struct Files {
    source: std::path::PathBuf,
    dest: std::path::PathBuf,
    last_error: Option<String>,
}

impl Files {
    fn new(config: &Config) -> Files {
        Files { source: config.source.clone(), dest: config.dest.clone(), last_error: None }
    }

    fn sync(&mut self) {
        match manifest::sync(&self.source, &self.dest) {
            Ok(Synced::Written) => {
                self.ok();
                info!(dest = %self.dest.display(), "copied the source manifest to dest");
            }
            Ok(Synced::Unchanged) => self.ok(),
            Err(e) => self.failed(e),
        }
    }

    fn remove(&mut self) {
        match manifest::remove(&self.dest) {
            Ok(true) => {
                self.ok();
                info!(dest = %self.dest.display(), "removed dest");
            }
            Ok(false) => self.ok(),
            Err(e) => self.failed(e),
        }
    }

    fn ok(&mut self) {
        if self.last_error.take().is_some() {
            info!("file operations work again");
        }
    }

    fn failed(&mut self, e: manifest::FileError) {
        let message = e.to_string();
        if self.last_error.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.last_error = Some(message);
        }
    }
}
