//! `km mesos-agent`: a Mesos agent for km.
//!
//! It registers with `km mesos-master` over km's own protocol
//! (`proto/km/v1/agent.proto`, [`master`]), runs command tasks with a
//! built-in command executor and custom executors as processes in their
//! sandboxes ([`agent`]), serves the v1 executor API ([`api`]), and keeps
//! status updates reliable ([`updates`]).
//!
//! Decisions live in plain synchronous types with time as an argument
//! ([`state`], [`updates`], [`flags`], [`env`]); IO lives in thin async
//! modules ([`agent`], [`api`], [`master`], [`fetch`], [`process`],
//! [`checkpoint`]).
//!
//! On SIGTERM/SIGINT the agent exits without unregistering (as a Mesos
//! agent does): executors of checkpointing frameworks keep running and
//! re-subscribe when the agent comes back (it re-registers with the same
//! id, kept in `<work_dir>/meta/agent_id`); command tasks (run inside the
//! agent) and executors of non-checkpointing frameworks are killed.

pub mod agent;
pub mod api;
pub mod checkpoint;
pub mod config;
pub mod env;
pub mod fetch;
mod files;
pub mod flags;
pub mod master;
pub mod process;
pub mod state;
pub mod updates;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use agent::Agent;
pub use config::{Args, Config};

/// A started agent.
#[derive(Debug)]
pub struct Running {
    /// The agent.
    pub agent: Arc<Agent>,
    /// Where its HTTP server listens.
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the agent as on SIGTERM: kills what cannot survive it, leaves
    /// checkpointing executors running, and stops serving. Returns once its
    /// tasks have ended, so its port is free for an agent started next.
    pub async fn stop(self) {
        self.agent.stop();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            // Cancelled (or already ended): either way the task is gone.
            let _ = t.await;
        }
        // What was checkpointed is on disk before the agent is reported stopped.
        self.agent.checkpoints.flush().await;
    }
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create --work_dir {}: {source}", path.display())]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {ip}:{port}: {source}")]
    Listen { ip: String, port: u16, source: std::io::Error },
    #[error("cannot start the checkpoint writer: {0}")]
    Checkpoints(std::io::Error),
}

/// Starts an agent: binds its port (0 = any), recovers checkpoints,
/// serves HTTP and connects to the master.
pub async fn start(mut cfg: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|source| StartError::WorkDir { path: cfg.work_dir.clone(), source })?;
    let listen = |source| StartError::Listen { ip: cfg.ip.clone(), port: cfg.port, source };
    let listener =
        tokio::net::TcpListener::bind((cfg.ip.as_str(), cfg.port)).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    cfg.port = addr.port();
    let agent_id = checkpoint::load_agent_id(&cfg.work_dir);
    let recovered = checkpoint::load_executors(&cfg.work_dir);
    let checkpoints = checkpoint::Writer::start().map_err(StartError::Checkpoints)?;
    let agent = Agent::new(cfg, agent_id, checkpoints);
    agent.recover(recovered);
    let app = api::router(Arc::clone(&agent));
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    let link = tokio::spawn(master::run(Arc::clone(&agent)));
    let retry = tokio::spawn(Arc::clone(&agent).retry_loop());
    tracing::info!(%addr, master = %agent.cfg.master, "mesos agent started");
    Ok(Running { agent, addr, tasks: vec![server, link, retry] })
}

/// `km mesos-agent`: runs until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let stop = km_process::StopSignals::install()?;
    let cfg = Config::from_args(&args)?;
    let running = start(cfg).await?;
    stop.first().await;
    running.stop().await;
    Ok(())
}
