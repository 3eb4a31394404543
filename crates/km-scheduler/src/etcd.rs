//! etcd clients that move on from a member that cannot be reached.
//!
//! etcd's gRPC client balances over all endpoints but keeps handing requests to a member that is
//! down, failing a share of them for as long as it stays down. The scheduler instead talks to one
//! member at a time, one client per endpoint, and moves to the next when a request could not be
//! delivered; callers retry as they would after any etcd error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// One client per endpoint and the one in use; cheap to clone (clones share the choice).
#[derive(Clone)]
pub(crate) struct Members {
    clients: Arc<Vec<Client>>,
    current: Arc<AtomicUsize>,
}

/// Whether a request never reached etcd: the member is down or unreachable.
pub(crate) fn unreachable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) => true,
        // gRPC UNAVAILABLE with the connection's error (tonic is not named here).
        etcd_client::Error::GRpcStatus(s) => {
            format!("{:?}", s.code()) == "Unavailable" && s.message().contains("connect")
        }
        _ => false,
    }
}

impl Members {
    /// Clients for `endpoints` (connections are made when first used).
    pub(crate) async fn connect(
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<Members, etcd_client::Error> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(timeout);
            clients.push(Client::connect([endpoint], Some(options)).await?);
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoint given".into()));
        }
        Ok(Members { clients: Arc::new(clients), current: Arc::new(AtomicUsize::new(0)) })
    }

    /// The client of the member in use.
    pub(crate) fn client(&self) -> Client {
        self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].clone()
    }

    /// Notes a failed request: when the member could not be reached, the next one is used.
    pub(crate) fn failed(&self, err: &etcd_client::Error) {
        if unreachable(err) && self.clients.len() > 1 {
            let at = self.current.load(Ordering::Relaxed);
            let next = (at + 1) % self.clients.len();
            if self.current.compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    "etcd member {} cannot be reached ({err}); using member {next}",
                    at % self.clients.len()
                );
            }
        }
    }

    /// Runs `op` on the member in use, and on the next ones while they cannot be reached (the
    /// request never left, so sending it elsewhere is safe).
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        loop {
            let result = op(self.client()).await;
            match &result {
                Err(e) if unreachable(e) && attempt < self.clients.len() => {
                    self.failed(e);
                    attempt += 1;
                }
                Err(e) => {
                    self.failed(e);
                    return result;
                }
                Ok(_) => return result,
            }
        }
    }
}
