//! The `km` binary: parse the command line, start logging and the runtime,
//! and hand over to the crate that implements the chosen subcommand.
//!
//! Like hyperkube, `km` dispatches on its first argument (`km podmaster …`)
//! or on the name it was invoked under (a symlink `km-podmaster` or
//! `podmaster` pointing at `km`), see [`dispatch::normalize_args`].

mod dispatch;
mod rt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes on Apache Mesos.
#[derive(Debug, Parser)]
#[command(name = "km", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `km_mesos=debug`).
    #[arg(long, global = true, env = "KM_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Elect one holder of an etcd key and copy a pod manifest into its
    /// kubelet's manifest directory (cold-standby HA for master components).
    Podmaster(km_podmaster::Args),
    /// A Mesos master speaking the v1 scheduler and operator APIs, with an
    /// optional simulator of agents.
    #[command(name = "mesos-master")]
    MesosMaster(km_mesos_master::Args),
    /// Run one shell command as a Mesos task and wait for it to end.
    #[command(name = "mesos-execute")]
    MesosExecute(km_mesos_master::ExecuteArgs),
    /// A Mesos agent that registers with `km mesos-master` and runs
    /// command tasks and executors.
    #[command(name = "mesos-agent")]
    MesosAgent(km_mesos_agent::Args),
    /// The Kubernetes API server for km's resources, stored in etcd.
    Apiserver(km_apiserver::Args),
    /// Run the static pods of a manifest directory (Docker and native runtimes).
    Kubelet(km_kubelet::Args),
    /// The Mesos framework that runs Kubernetes pods as Mesos tasks.
    Scheduler(km_scheduler::Args),
    /// The Mesos executor that runs the pods of km scheduler's tasks (started by a Mesos agent).
    Executor(km_executor::Args),
    /// Workload controllers (Deployments, ReplicaSets, ReplicationControllers), the garbage
    /// collector and endpoints.
    #[command(name = "controller-manager")]
    ControllerManager(km_controller_manager::Args),
    /// A whole km cluster on this machine (etcd, API server, Mesos master and agents,
    /// scheduler, controller-manager) in the foreground; re-running it resumes the cluster.
    #[command(name = "local-up")]
    LocalUp(km_local_up::Args),
    /// Restart a Deployment, ReplicaSet, ReplicationController or pod without downtime,
    /// each replacement health-checked (also `kubectl restart`, as a kubectl plugin).
    Restart(km_restart::Args),
    /// Create the links through which km runs a subcommand by name (`km-scheduler`, ...) and
    /// the kubectl plugin `kubectl-restart`, in DIR.
    #[command(name = "make-symlinks")]
    MakeSymlinks(dispatch::SymlinkArgs),
    /// pid 1 of a native container: runs the program, forwards signals to it, reaps orphans
    /// and exits with its status (the native runtime runs it; hidden from help).
    #[command(name = "container-init", hide = true)]
    ContainerInit(km_runtime::native::init::InitArgs),
}

impl Command {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Podmaster(args) => rt::block_on(km_podmaster::run(args)),
            Command::MesosMaster(args) => rt::block_on(km_mesos_master::run(args)),
            Command::MesosExecute(args) => rt::block_on(km_mesos_master::execute(args)),
            Command::MesosAgent(args) => rt::block_on(km_mesos_agent::run(args)),
            Command::Apiserver(args) => rt::block_on(km_apiserver::run(args)),
            Command::Kubelet(args) => rt::block_on(km_kubelet::run(args)),
            Command::Scheduler(args) => rt::block_on(km_scheduler::run(args)),
            Command::Executor(args) => rt::block_on(km_executor::run(args)),
            Command::ControllerManager(args) => rt::block_on(km_controller_manager::run(args)),
            Command::LocalUp(args) => rt::block_on(async { Ok(km_local_up::run(args).await?) }),
            Command::Restart(args) => rt::block_on(km_restart::run(args)),
            Command::MakeSymlinks(args) => dispatch::make_symlinks(&args),
            Command::ContainerInit(args) => {
                // main runs it before logging starts; this arm only completes the match.
                std::process::exit(i32::from(init_status(km_runtime::native::init::run(args))))
            }
        }
    }
}

/// An exit status as the byte a process exits with.
fn init_status(code: i32) -> u8 {
    u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)
}

fn main() -> ExitCode {
    let args = dispatch::normalize_args(std::env::args_os().collect());
    let Cli { log, command } = Cli::parse_from(args);
    let command = match command {
        Command::ContainerInit(args) => {
            // A container's pid 1: no async runtime, and only warnings logged, since its
            // stderr is the container's log (whose KM_LOG, if any, is the program's).
            rt::init_logging("warn");
            return ExitCode::from(init_status(km_runtime::native::init::run(args)));
        }
        other => other,
    };
    rt::init_logging(&log);
    // The command-line tools report their errors as kubectl does, not as a log line.
    let tool = matches!(command, Command::Restart(_) | Command::MakeSymlinks(_));
    match command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if tool => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
