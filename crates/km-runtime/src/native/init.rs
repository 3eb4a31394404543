//! `km container-init`: the process the native runtime runs as pid 1 of each container, in
//! the spirit of Docker's `--init` (tini).
//!
//! The first process of a pid namespace is special: the kernel delivers it no signal it has
//! no handler for (SIGKILL aside), and every orphan of the namespace becomes its child. A
//! program that was never written to be pid 1 (`sleep`, most servers) therefore ignores
//! SIGTERM, so stopping it would always cost the whole grace period, and never reaps the
//! orphans its children leave, which stay zombies. This init fixes both:
//!
//! - it blocks the signals it forwards and waits for them with `sigwait` (a blocked signal is
//!   queued even for a namespace's init), then sends each one to the program;
//! - on SIGCHLD it reaps every child that has exited, the program and adopted orphans alike
//!   (it is also a child subreaper, so orphans come to it when it is not pid 1);
//! - when the program exits, the init exits with its status, or 128 + the signal's number
//!   when a signal ended it, after writing that status to `--exit-file` if one was given.
//!
//! The native runtime hands it `--report-fd`, its pipe for start-up failures: when the
//! program cannot be executed the init writes the failure there as the runtime's own child
//! would (so the pod sees a start error, not a crash) and exits 127.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::spawn;

/// Flags of `km container-init` (a hidden subcommand: the native runtime runs it).
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// An inherited pipe on which a failure to execute the program is reported to the
    /// native runtime; closed once the program runs.
    #[arg(long = "report-fd", value_name = "FD")]
    pub report_fd: Option<i32>,
    /// Where to write the program's exit status (a decimal number and a newline) before
    /// exiting.
    #[arg(long = "exit-file", value_name = "PATH")]
    pub exit_file: Option<PathBuf>,
    /// The program's argv[0], when it differs from the program's path.
    #[arg(long = "arg0", value_name = "NAME")]
    pub arg0: Option<OsString>,
    /// The program to run and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Signals the kernel raises for a fault of the process itself: never blocked (a blocked
/// fault kills anyway) and never forwarded.
const SYNCHRONOUS: &[Signal] = &[
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// The signals the init waits for: every standard signal it may catch or block.
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        if !SYNCHRONOUS.contains(&sig) && sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            set.add(sig);
        }
    }
    set
}

/// Runs the init and returns the exit status it ends with (the program's, or 128 + signal;
/// 127 when the program could not be started). Its few messages are logged (warnings only, to
/// stderr, which in a container is the container's log).
pub fn run(args: InitArgs) -> i32 {
    let report = args.report_fd.and_then(spawn::inherited_fd);
    let code = supervise(&args, report);
    if let Some(path) = &args.exit_file
        && let Err(e) = write_exit_file(path, code)
    {
        tracing::warn!("km container-init: cannot write {}: {e}", path.display());
    }
    code
}

fn supervise(args: &InitArgs, report: Option<OwnedFd>) -> i32 {
    let Some((program, rest)) = args.command.split_first() else {
        tracing::error!("km container-init: no program to run");
        return 127;
    };
    let waited = waited_signals();
    // Blocked before the program exists, so no signal meant for it is lost; the program
    // itself starts with an empty mask.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None) {
        tracing::error!("km container-init: cannot block signals: {e}");
        return 127;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("km container-init: cannot become a subreaper: {e}");
    }
    if let Some(fd) = &report {
        // The program must not keep the runtime's pipe open.
        let _ =
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
    let mut command = std::process::Command::new(program);
    command.args(rest);
    spawn::unblock_signals_in_child(&mut command);
    if let Some(arg0) = &args.arg0 {
        command.arg0(arg0);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::ENOEXEC);
            match &report {
                Some(fd) => spawn::report_exec_failure(fd, errno),
                None => {
                    tracing::error!(
                        "km container-init: cannot run {}: {e}",
                        program.to_string_lossy()
                    )
                }
            }
            return 127;
        }
    };
    drop(report);
    let Ok(raw) = i32::try_from(child.id()) else {
        tracing::error!("km container-init: the program's pid {} is out of range", child.id());
        return 127;
    };
    let main = Pid::from_raw(raw);
    loop {
        let signal = match waited.wait() {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("km container-init: waiting for signals: {e}");
                continue;
            }
        };
        if signal == Signal::SIGCHLD {
            if let Some(code) = reap(main) {
                return code;
            }
        } else {
            // The program may have exited already; its status comes with the SIGCHLD.
            let _ = kill(main, signal);
        }
    }
}

/// Reaps every child that has exited; the program's exit status once it is among them.
fn reap(main: Pid) -> Option<i32> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => status = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => {
                status = Some(128 + signal as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return status,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("km container-init: waitpid: {e}");
                return status;
            }
        }
    }
}

/// Writes `code` to `path` through a temporary file, flushed to disk before the rename, so a
/// reader sees the whole number or nothing, after a crash of the machine too.
fn write_exit_file(path: &Path, code: i32) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{code}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads an exit file written by the init: `None` when there is none (the init was killed
/// before it could write one) or it holds no number.
pub(crate) fn read_exit_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
