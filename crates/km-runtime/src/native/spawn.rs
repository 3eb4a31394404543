//! Starting a native container's process: `clone(2)` into new pid, mount,
//! uts and ipc namespaces (and optionally network), join the cgroups, set
//! up mounts, hostname, stdio and working directory, then `execve(2)`.
//! And starting a command inside a running container ([`spawn_inside`]).
//!
//! With an init ([`InitSpawn`]) the child execs `km container-init` (from a
//! descriptor of the km binary, so it needs no path inside the container)
//! instead of the program, and the init starts the program as its own child
//! (see [`super::init`]); the init reports a failure to execute the program
//! on the same pipe the child would have used.
//!
//! This is the only module of the crate with `unsafe` code. Everything the
//! child needs (paths, argv, envp, pointer arrays, file descriptors) is
//! prepared by the parent before `clone`, so that the child, a copy of a
//! multi-threaded process, does no allocation and calls only
//! async-signal-safe functions until `execve`.
//!
//! Clones are made by one long-lived thread ([`Spawner`]): unless the
//! runtime lets its containers outlive it ([`SpawnRequest::die_with_runtime`]),
//! the children get `PR_SET_PDEATHSIG = SIGKILL`, which fires when the
//! *thread* that created them exits, and a thread from a pool could exit at
//! any time. So such containers die with the runtime process, never before it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// A bind mount made in the child's mount namespace.
#[derive(Debug)]
pub(crate) struct BindMount {
    pub(crate) source: CString,
    pub(crate) target: CString,
    pub(crate) read_only: bool,
}

/// The init a container's program runs under.
#[derive(Debug)]
pub(crate) struct InitSpawn {
    /// The km binary, opened once: a binary replaced on disk since does not matter.
    pub(crate) exe: std::sync::Arc<OwnedFd>,
    /// Where the init writes the program's exit status.
    pub(crate) exit_file: CString,
}

/// What the child will become.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    /// Run the program under this init (`km container-init` as pid 1) rather than as pid 1.
    pub(crate) init: Option<InitSpawn>,
    /// Kill the container when the runtime process dies (`PR_SET_PDEATHSIG`).
    pub(crate) die_with_runtime: bool,
    /// Absolute path of the binary.
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) cwd: CString,
    pub(crate) hostname: CString,
    /// stdout and stderr go here.
    pub(crate) log: OwnedFd,
    /// stdin reads from here (`/dev/null`).
    pub(crate) stdin: OwnedFd,
    /// Join this network namespace (the pod's), instead of the host's.
    pub(crate) network: Option<std::sync::Arc<OwnedFd>>,
    pub(crate) mounts: Vec<BindMount>,
    /// `cgroup.procs` files the child is written into before it execs.
    pub(crate) cgroup_procs: Vec<PathBuf>,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("clone: {0}")]
    Clone(Errno),
    #[error("pipe: {0}")]
    Pipe(Errno),
    #[error("joining cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: std::io::Error },
    /// The child reported a failure before `execve` succeeded.
    #[error("{step}: {errno}")]
    Child { step: &'static str, errno: Errno },
    #[error("the spawner thread is gone")]
    Gone,
    #[error("an argument of the init contains a NUL byte")]
    Nul,
}

type Reply = tokio::sync::oneshot::Sender<Result<Pid, SpawnError>>;

/// A dedicated thread that performs every clone (see the module docs).
#[derive(Debug)]
pub(crate) struct Spawner {
    tx: std::sync::Mutex<mpsc::Sender<(SpawnRequest, Reply)>>,
}

impl Spawner {
    pub(crate) fn new() -> std::io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<(SpawnRequest, Reply)>();
        std::thread::Builder::new().name("km-native-spawner".into()).spawn(move || {
            while let Ok((req, reply)) = rx.recv() {
                let _ = reply.send(spawn(req));
            }
        })?;
        Ok(Spawner { tx: std::sync::Mutex::new(tx) })
    }

    /// Starts the process; resolves once it has exec'd (or failed to).
    pub(crate) async fn spawn(&self, req: SpawnRequest) -> Result<Pid, SpawnError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        {
            let tx = self.tx.lock().map_err(|_| SpawnError::Gone)?;
            tx.send((req, reply)).map_err(|_| SpawnError::Gone)?;
        }
        rx.await.map_err(|_| SpawnError::Gone)?
    }
}

/// The index of "execve" in [`STEPS`], also used by the init.
const STEP_EXECVE: u32 = 9;

/// Steps the child reports failures of, by index, through the error pipe.
const STEPS: &[&str] = &[
    "waiting for the parent",
    "making mounts private",
    "mounting /proc",
    "bind mount",
    "read-only remount",
    "sethostname",
    "setsid",
    "redirecting stdio",
    "chdir",
    "execve",
    "prctl",
    "joining the pod's network namespace",
];

fn spawn(mut req: SpawnRequest) -> Result<Pid, SpawnError> {
    let cgroup_procs = std::mem::take(&mut req.cgroup_procs);
    let (sync_r, sync_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;

    // With an init, the child execs `km container-init … -- <program> <args>`, handing it
    // the error pipe by number.
    let init_argv: Option<Vec<CString>> = match &req.init {
        None => None,
        Some(init) => {
            let arg = |s: &str| CString::new(s).map_err(|_| SpawnError::Nul);
            let mut v = vec![
                arg("km")?,
                arg("container-init")?,
                arg("--report-fd")?,
                arg(&err_w.as_raw_fd().to_string())?,
                arg("--exit-file")?,
                init.exit_file.clone(),
            ];
            if let Some(arg0) = req.argv.first() {
                v.push(arg("--arg0")?);
                v.push(arg0.clone());
            }
            v.push(arg("--")?);
            v.push(req.path.clone());
            v.extend(req.argv.iter().skip(1).cloned());
            Some(v)
        }
    };
    let init_fd = req.init.as_ref().map(|i| i.exe.as_raw_fd());
    let die_with_runtime = req.die_with_runtime;
    // Pointer arrays for execve, built before the clone.
    let mut argv_ptrs: Vec<*const libc::c_char> =
        init_argv.as_ref().unwrap_or(&req.argv).iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = req.envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let proc_src = c"proc";
    let proc_dst = c"/proc";
    let root = c"/";

    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let (sync_rfd, err_wfd) = (sync_r.as_raw_fd(), err_w.as_raw_fd());
    let (log_fd, stdin_fd) = (req.log.as_raw_fd(), req.stdin.as_raw_fd());
    let net_fd = req.network.as_ref().map(|fd| fd.as_raw_fd());

    let child = move || -> isize {
        // Reports step `i` failed with errno, then exits. Only raw syscalls.
        let fail = |i: usize| -> isize {
            let errno = Errno::last_raw();
            let msg: [u8; 8] = {
                let mut m = [0u8; 8];
                m[..4].copy_from_slice(&(i as u32).to_ne_bytes());
                m[4..].copy_from_slice(&errno.to_ne_bytes());
                m
            };
            // SAFETY: writing a stack buffer to a pipe fd we own; _exit never returns.
            unsafe {
                libc::write(err_wfd, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            }
        };
        // SAFETY: every call below is a plain syscall on memory prepared by
        // the parent before clone (CStrings, pointer arrays, fds), as
        // async-signal-safety after clone requires.
        unsafe {
            if die_with_runtime && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
            {
                return fail(10);
            }
            let mut byte = 0u8;
            if libc::read(sync_rfd, (&raw mut byte).cast(), 1) != 1 {
                return fail(0);
            }
            if let Some(fd) = net_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return fail(11);
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail(1);
            }
            if libc::mount(
                proc_src.as_ptr(),
                proc_dst.as_ptr(),
                proc_src.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
            {
                return fail(2);
            }
            for m in &req.mounts {
                if libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return fail(3);
                }
                if m.read_only
                    && libc::mount(
                        std::ptr::null(),
                        m.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return fail(4);
                }
            }
            let host = req.hostname.as_bytes();
            if libc::sethostname(host.as_ptr().cast(), host.len()) != 0 {
                return fail(5);
            }
            if libc::setsid() < 0 {
                return fail(6);
            }
            if libc::dup2(stdin_fd, 0) < 0 || libc::dup2(log_fd, 1) < 0 || libc::dup2(log_fd, 2) < 0
            {
                return fail(7);
            }
            if libc::chdir(req.cwd.as_ptr()) != 0 {
                return fail(8);
            }
            // Rust ignores SIGPIPE; the container gets default dispositions
            // and an empty signal mask, as after a fresh exec from a shell.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
            match init_fd {
                Some(exe) => {
                    // The init inherits the error pipe (it reports the program's execve).
                    if libc::fcntl(err_wfd, libc::F_SETFD, 0) != 0 {
                        return fail(STEP_EXECVE as usize);
                    }
                    libc::fexecve(exe, argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
                    // Still here: the pipe must close on the way out again.
                    libc::fcntl(err_wfd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                None => {
                    libc::execve(req.path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
                }
            }
            fail(STEP_EXECVE as usize)
        }
    };

    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the child runs `child` on `stack` in a copy of this address
    // space (no CLONE_VM) and only makes the syscalls listed above before
    // execve or _exit; SIGCHLD is delivered on exit so waitpid works.
    let pid = unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(SpawnError::Clone)?;
    drop(sync_r);
    drop(err_w);

    // Join the cgroups while the child waits, then let it go.
    let mut joined = Ok(());
    for procs in &cgroup_procs {
        if let Err(source) = std::fs::write(procs, pid.as_raw().to_string()) {
            joined = Err(SpawnError::Cgroup { path: procs.clone(), source });
            break;
        }
    }
    if let Err(e) = joined {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    let _ = nix::unistd::write(&sync_w, &[1u8]);
    drop(sync_w);

    // EOF on the error pipe means execve succeeded (the pipe is CLOEXEC).
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&err_r, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    if got == buf.len() {
        let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let errno = Errno::from_raw(i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(SpawnError::Child { step: STEPS.get(step).copied().unwrap_or("setup"), errno });
    }
    Ok(pid)
}

/// Takes ownership of descriptor `fd`, inherited from the process that exec'd this one (the
/// init's `--report-fd`); `None` when no such descriptor is open.
pub(crate) fn inherited_fd(fd: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    if fd < 0 {
        return None;
    }
    // SAFETY: F_GETFD only queries the descriptor. It is open, and by the init's contract it
    // was inherited for this process alone and nothing else in it owns it.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) == -1 {
            return None;
        }
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// A pidfd of process `pid` (`pidfd_open(2)`) registered with tokio: readable once the process
/// has exited, whoever its parent is. The caller checks that `pid` is still the process it
/// means. Needs a tokio runtime.
pub(crate) fn exit_watch(pid: Pid) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a plain system call with integer arguments; on success it returns a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open, as the same descriptor, until
    // the AsyncFd is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Makes the child of `command` start with no signal blocked: the init blocks the signals it
/// waits for, and a signal mask is inherited across fork and exec.
pub(crate) fn unblock_signals_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only calls sigprocmask
    // (async-signal-safe) with a set on its own stack.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
}

/// Reports to the runtime, on its error pipe, that the program's execve failed with `errno`,
/// in the format the runtime's own child uses.
pub(crate) fn report_exec_failure(pipe: &OwnedFd, errno: i32) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&STEP_EXECVE.to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = nix::unistd::write(pipe, &msg);
}

/// Creates a network namespace with loopback up and returns a descriptor
/// that keeps it alive: a pod's containers join it (see
/// [`SpawnRequest::network`]). Made on a short-lived thread, so the
/// process itself stays in the host's namespace.
pub(crate) fn new_network_namespace() -> std::io::Result<OwnedFd> {
    std::thread::Builder::new()
        .name("km-netns".into())
        .spawn(|| -> std::io::Result<OwnedFd> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let ns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
            // Any socket will do for interface ioctls.
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            // SAFETY: `ifreq` is a plain C struct, zeroed and then given the
            // interface name; both ioctls only read/write that struct.
            unsafe {
                let mut req: libc::ifreq = std::mem::zeroed();
                for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
                    *dst = *src as libc::c_char;
                }
                if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(ns)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the network namespace thread panicked"))?
}

/// What a command started inside a running container joins: the container's namespaces and
/// cgroups, and its working directory.
#[derive(Debug)]
pub(crate) struct Inside {
    /// The container's pid namespace, for the children of the spawning thread.
    pub(crate) pid: OwnedFd,
    /// Its ipc, uts, network and mount namespaces, with their `CLONE_NEW*` flags, joined in
    /// this order (the mount namespace last, as it changes how paths resolve).
    pub(crate) namespaces: Vec<(OwnedFd, libc::c_int)>,
    /// Its `cgroup.procs` files, opened for writing.
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    pub(crate) cwd: CString,
}

/// Starts `command` inside a running container. A short-lived thread enters the container's
/// pid namespace for the processes it creates (the setting is per thread, so no other spawn
/// is affected), and the forked child joins the other namespaces and the cgroups before it
/// execs. `runtime` registers the child with tokio's process driver.
pub(crate) fn spawn_inside(
    mut command: tokio::process::Command,
    inside: Inside,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<tokio::process::Child> {
    std::thread::Builder::new()
        .name("km-exec".into())
        .spawn(move || -> std::io::Result<tokio::process::Child> {
            // SAFETY: setns on a descriptor we own; CLONE_NEWPID changes only which pid
            // namespace this thread's future children are created in.
            if unsafe { libc::setns(inside.pid.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let namespaces: Vec<(libc::c_int, libc::c_int)> =
                inside.namespaces.iter().map(|(fd, flag)| (fd.as_raw_fd(), *flag)).collect();
            let procs: Vec<libc::c_int> =
                inside.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect();
            let cwd = inside.cwd.clone();
            // SAFETY: the closure runs in the forked child before exec and makes only
            // syscalls (setns, write, chdir) on descriptors and memory prepared before the
            // fork; the descriptors stay open until `spawn` has returned.
            unsafe {
                command.pre_exec(move || {
                    for (fd, flag) in &namespaces {
                        if libc::setns(*fd, *flag) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for fd in &procs {
                        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if libc::chdir(cwd.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let _entered = runtime.enter();
            let child = command.spawn();
            drop(inside);
            child
        })?
        .join()
        .map_err(|_| std::io::Error::other("the exec thread panicked"))?
}
