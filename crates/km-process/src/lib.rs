//! Process plumbing every km subcommand shares: the one way a km process
//! learns it has to stop.
//!
//! [`StopSignals::install`] starts listening for SIGTERM and SIGINT at once,
//! and keeps listening for the life of the value: a signal that arrives while
//! a loop is busy elsewhere is held for the next [`StopSignals::recv`], never
//! lost (as it is when a loop creates a fresh `ctrl_c()` future on every
//! turn). Install it first thing, so a signal during start-up counts too.

use std::fmt;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: what service managers, kubelets and `kill` send.
    Term,
    /// SIGINT: Ctrl-C at a terminal.
    Int,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        })
    }
}

/// SIGTERM and SIGINT, listened for from installation on.
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Starts listening. Fails only if the signal handlers cannot be set up.
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT (one that came since the last
    /// call is returned at once), and logs it.
    pub async fn recv(&mut self) -> Stop {
        let stop = tokio::select! {
            _ = self.term.recv() => Stop::Term,
            _ = self.int.recv() => Stop::Int,
        };
        tracing::info!(signal = %stop, "asked to stop");
        stop
    }

    /// The first SIGTERM or SIGINT, as a future of its own (for a `select!`
    /// that is not in a loop, or a server's graceful shutdown).
    pub async fn first(mut self) -> Stop {
        self.recv().await
    }

    /// Hands the first SIGTERM or SIGINT to any number of waiters (an HTTP
    /// server's graceful shutdown and the loop beside it, say).
    pub fn share(self) -> Stopped {
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let stop = self.first().await;
            let _ = tx.send(Some(stop));
        });
        Stopped(rx)
    }
}

/// The first stop signal, for every clone to wait on.
#[derive(Debug, Clone)]
pub struct Stopped(tokio::sync::watch::Receiver<Option<Stop>>);

impl Stopped {
    /// Completes once a stop signal came (at once if it already has).
    pub async fn wait(mut self) -> Stop {
        let came =
            self.0.wait_for(Option::is_some).await.ok().map(|stop| stop.unwrap_or(Stop::Term));
        match came {
            Some(stop) => stop,
            // The waiting task is gone only with the runtime: nothing more will come.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal as Sig, raise};

    // Each test runs in a process of its own (nextest), so raising a signal
    // at itself reaches only the test.
    #[tokio::test]
    async fn a_signal_that_came_while_nobody_waited_is_kept() {
        let mut stop = StopSignals::install().expect("handlers");
        raise(Sig::SIGINT).expect("raise SIGINT");
        raise(Sig::SIGTERM).expect("raise SIGTERM");
        // Nobody was waiting when they came; both are still there, in some order.
        let mut got = vec![stop.recv().await, stop.recv().await];
        got.sort_by_key(|s| s.to_string());
        assert_eq!(got, [Stop::Int, Stop::Term]);
    }
}
