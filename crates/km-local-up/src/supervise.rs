//! The IO of `km local-up`: the data directory and its lock, the child processes, their
//! health, their logs, and stopping them in order.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::spec::{self, Health, Layout, Spec};
use crate::state::{self, Requested};
use crate::{Args, Error, procs};

/// How long a component has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(15);

/// How long an agent's executors have to stop their pods and exit.
const EXECUTOR_GRACE: Duration = Duration::from_secs(30);

/// Log lines shown when a component fails.
const TAIL_LINES: usize = 20;

/// How often a health check is tried.
const POLL: Duration = Duration::from_millis(100);

/// The stable text scripts wait for.
pub const READY: &str = "cluster ready";

/// A started component.
#[derive(Debug, Clone)]
struct Running {
    spec: Spec,
    pid: i32,
    log: PathBuf,
    /// How it exited, once it has.
    exit: watch::Receiver<Option<String>>,
}

/// The components started so far.
struct Cluster {
    layout: Layout,
    running: Vec<Running>,
    died_tx: mpsc::UnboundedSender<String>,
    died_rx: mpsc::UnboundedReceiver<String>,
    http: reqwest::Client,
}

/// A line for the user on stdout (progress, URLs, the ready line).
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A line for the user on stderr (what went wrong).
fn complain(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub(crate) async fn run(args: Args) -> Result<(), Error> {
    let started = Instant::now();
    // Installed first: a SIGINT or SIGTERM during start-up stops what was started.
    let mut signals = km_process::StopSignals::install().map_err(Error::Signals)?;
    let km = std::env::current_exe().map_err(Error::CurrentExe)?;
    let etcd = find_etcd(args.etcd_binary.as_deref())?;
    let requested = Requested { agents: args.agents, address: args.address };
    // Bad values are refused before anything is created.
    if let Some(address) = requested.address {
        state::check_address(address)?;
    }
    if let Some(agents) = requested.agents {
        state::check_agents(agents)?;
    }

    let dir = &args.data_dir;
    let layout = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::canonicalize(dir))
        .map_err(|source| Error::DataDir { path: dir.clone(), source })
        .map(|dir| Layout { dir })?;
    let lock = lock(&layout)?;
    let (state, resumed) = prepare(&layout, requested)?;
    let infra_image = args.pod_infra_container_image.clone();
    Start { layout, lock, state, resumed, km, etcd, infra_image }
        .go(args.timeout, started, &mut signals)
        .await
}

/// Everything known before the first process starts.
struct Start {
    layout: Layout,
    lock: Flock<File>,
    state: state::State,
    resumed: bool,
    km: PathBuf,
    etcd: PathBuf,
    /// `--pod-infra-container-image`, for the scheduler to hand to the executors.
    infra_image: Option<String>,
}

impl Start {
    async fn go(
        self,
        timeout: Duration,
        started: Instant,
        signals: &mut km_process::StopSignals,
    ) -> Result<(), Error> {
        let Start { layout, lock, state, resumed, km, etcd, infra_image } = self;
        // Orphans of the cluster (pods of an executor killed with SIGKILL, executors of a dead
        // agent) are handed to this process, which stops them on the way out.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become the subreaper of the cluster's processes: {e}");
        }
        say(format_args!(
            "km local-up: {} the cluster in {} ({} agent(s) on {}; logs in {})",
            if resumed { "resuming" } else { "creating" },
            layout.dir.display(),
            state.ports.agents.len(),
            state.address,
            layout.logs().display(),
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| Error::Flag(format!("cannot build an HTTP client: {e}")))?;
        let (died_tx, died_rx) = mpsc::unbounded_channel();
        let mut cluster = Cluster { layout, running: Vec::new(), died_tx, died_rx, http };
        let stages = spec::stages(&state, &cluster.layout, &km, &etcd, infra_image.as_deref());
        let outcome = tokio::select! {
            r = cluster.start(stages, timeout) => r,
            stop = signals.recv() => Err(Error::Interrupted(stop)),
        };
        if let Err(e) = outcome {
            if let Error::Component { name, what, .. } = &e {
                complain(format_args!("km local-up: {name} {what}; stopping the cluster"));
            }
            cluster.stop().await;
            drop(lock);
            return Err(e);
        }
        say(format_args!(
            "  kubectl: export KUBECONFIG={}; kubectl get nodes",
            cluster.layout.kubeconfig().display()
        ));
        say(format_args!(
            "km local-up: {READY} in {:.1}s; Ctrl-C or SIGTERM stops it",
            started.elapsed().as_secs_f64()
        ));

        let mut reap = tokio::time::interval(Duration::from_secs(5));
        let end = loop {
            tokio::select! {
                stop = signals.recv() => break Ok(stop),
                Some(name) = cluster.died_rx.recv() => break Err(cluster.died(&name)),
                _ = reap.tick() => cluster.reap_orphan_zombies(),
            }
        };
        match end {
            Ok(sig) => {
                say(format_args!("km local-up: {sig}: stopping the cluster"));
                cluster.stop().await;
                say(format_args!(
                    "km local-up: stopped; `km local-up --data-dir {}` resumes the cluster",
                    cluster.layout.dir.display()
                ));
                drop(lock);
                Ok(())
            }
            Err(e) => {
                // The error, with the log tail, is reported once everything has stopped.
                if let Error::Component { name, what, .. } = &e {
                    complain(format_args!("km local-up: {name} {what}; stopping the cluster"));
                }
                cluster.stop().await;
                drop(lock);
                Err(e)
            }
        }
    }
}

/// Takes the data directory's lock, or says who holds it.
fn lock(layout: &Layout) -> Result<Flock<File>, Error> {
    let path = layout.lock();
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::DataDir { path: path.clone(), source })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // For the message of a second local-up; the lock itself is what counts.
            let _ = lock.set_len(0);
            let _ = (&*lock).write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(lock)
        }
        Err((_, Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            let holder =
                if pid.parse::<u32>().is_ok() { format!(" (pid {pid})") } else { String::new() };
            Err(Error::Locked { dir: layout.dir.clone(), holder })
        }
        Err((_, e)) => Err(Error::DataDir { path, source: e.into() }),
    }
}

/// The state (recorded or new, saved), the files the components read, the log directory.
fn prepare(layout: &Layout, requested: Requested) -> Result<(state::State, bool), Error> {
    let path = layout.state();
    let recorded = state::load(&path)?;
    let resumed = recorded.is_some();
    let st = state::resolve(requested, recorded, &path, state::pick_free_ports)?;
    state::check_ports_free(&st, &path)?;
    if !resumed {
        state::save(&path, &st)?;
    }
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
    };
    std::fs::create_dir_all(layout.logs())
        .map_err(|source| Error::DataDir { path: layout.logs(), source })?;
    write(layout.cloud_config(), spec::cloud_config(&st))?;
    write(layout.kubeconfig(), spec::kubeconfig(&st))?;
    let token = layout.proxy_token();
    if !token.exists() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let secret: [u8; 24] = rand::random();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token)
            .and_then(|mut f| writeln!(f, "{hex}"))
            .map_err(|source| Error::Write { path: token, source })?;
    }
    Ok((st, resumed))
}

/// `--etcd-binary`, else `etcd` on PATH, else /usr/bin/etcd.
fn find_etcd(flag: Option<&Path>) -> Result<PathBuf, Error> {
    fn executable(p: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if let Some(p) = flag {
        if !executable(p) {
            return Err(Error::Etcd(format!(
                "--etcd-binary {}: not an executable file",
                p.display()
            )));
        }
        return std::path::absolute(p)
            .map_err(|e| Error::Etcd(format!("--etcd-binary {}: {e}", p.display())));
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join("etcd")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(std::iter::once(PathBuf::from("/usr/bin/etcd")))
        .find(|p| p.is_absolute() && executable(p))
        .ok_or_else(|| {
            Error::Etcd(
                "etcd is neither on PATH nor at /usr/bin/etcd: install Debian's etcd-server \
                 (scripts/install-deps.sh does), or pass --etcd-binary"
                    .into(),
            )
        })
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = text.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&text[from..]);
    let lines: Vec<&str> = text.lines().collect();
    let shown = lines[lines.len().saturating_sub(n)..].join("\n");
    if shown.is_empty() { "(the log is empty)".to_owned() } else { shown }
}

impl Cluster {
    /// Starts the stages in turn, each once the one before is healthy.
    async fn start(&mut self, stages: Vec<Vec<Spec>>, timeout: Duration) -> Result<(), Error> {
        for stage in stages {
            let first = self.running.len();
            for spec in stage {
                self.spawn(spec)?;
            }
            let waits = self.running[first..].iter().cloned().map(|r| {
                let http = self.http.clone();
                async move {
                    let took = wait_healthy(&http, &r, timeout).await?;
                    say(format_args!(
                        "  {:<20} {:<26} healthy after {:.1}s",
                        r.spec.name,
                        r.spec.url,
                        took.as_secs_f64()
                    ));
                    Ok::<(), Error>(())
                }
            });
            futures::future::try_join_all(waits).await?;
        }
        Ok(())
    }

    /// Starts one component with its output appended to its log.
    fn spawn(&mut self, spec: Spec) -> Result<(), Error> {
        let log = self.layout.log(&spec.name);
        let write_err = |source| Error::Write { path: log.clone(), source };
        let mut out = File::options().create(true).append(true).open(&log).map_err(write_err)?;
        writeln!(
            out,
            "==== km local-up starts {} at {}: {} {}",
            spec.name,
            humantime::format_rfc3339_seconds(SystemTime::now()),
            spec.program.display(),
            spec.args.join(" ")
        )
        .map_err(write_err)?;
        let err = out.try_clone().map_err(write_err)?;
        let mut child = tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches km local-up only, which
            // then stops the components in order.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: spec.name.clone(),
                program: spec.program.clone(),
                source,
            })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let (tx, exit) = watch::channel(None);
        let died = self.died_tx.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot be waited for: {e}"),
            };
            let _ = tx.send(Some(how));
            let _ = died.send(name);
        });
        tracing::debug!(name = %spec.name, pid, "started");
        self.running.push(Running { spec, pid, log, exit });
        Ok(())
    }

    /// The error for a component that exited while the cluster ran.
    fn died(&self, name: &str) -> Error {
        let r = self.running.iter().find(|r| r.spec.name == name);
        let how = r.and_then(|r| r.exit.borrow().clone()).unwrap_or_default();
        let log = r.map(|r| r.log.clone()).unwrap_or_default();
        Error::Component {
            name: name.to_owned(),
            what: format!("exited unexpectedly ({how})"),
            tail: tail(&log, TAIL_LINES),
            log,
        }
    }

    /// Stops every component: controller-manager, scheduler, each agent after its executors,
    /// master, API server, etcd; then whatever was orphaned on the way.
    async fn stop(&mut self) {
        let mut order = self.running.clone();
        order.sort_by_key(|r| r.spec.stop);
        for r in &order {
            if r.exit.borrow().is_some() {
                continue;
            }
            if r.spec.is_agent {
                stop_executors(&r.spec.name, r.pid).await;
            }
            let t0 = Instant::now();
            let how = terminate(r).await;
            say(format_args!(
                "  stopped {:<20} after {:.1}s ({how})",
                r.spec.name,
                t0.elapsed().as_secs_f64()
            ));
        }
        self.stop_orphans().await;
    }

    /// Processes handed to this subreaper that it did not start: SIGTERM, then SIGKILL.
    async fn stop_orphans(&self) {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let ours: Vec<i32> = self.running.iter().map(|r| r.pid).collect();
        let orphans: Vec<i32> = procs::children(me)
            .into_iter()
            .filter(|(pid, s)| !ours.contains(pid) && s.state != 'Z')
            .map(|(pid, _)| pid)
            .collect();
        for pid in &orphans {
            complain(format_args!(
                "km local-up: stopping a leftover process {pid}: {}",
                procs::cmdline(*pid)
            ));
            procs::signal(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        while orphans.iter().any(|p| procs::alive(*p)) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        for pid in orphans.iter().filter(|p| procs::alive(**p)) {
            procs::signal(*pid, Signal::SIGKILL);
        }
        self.reap_orphan_zombies();
    }

    /// Reaps exited orphans (the children km local-up started are reaped by tokio).
    fn reap_orphan_zombies(&self) {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        for (pid, s) in procs::children(me) {
            if s.state == 'Z' && !self.running.iter().any(|r| r.pid == pid) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Polls a component's health until it answers, it exits, or `timeout` passes.
async fn wait_healthy(
    http: &reqwest::Client,
    r: &Running,
    timeout: Duration,
) -> Result<Duration, Error> {
    let t0 = Instant::now();
    let mut exit = r.exit.clone();
    let fail = |what: String| Error::Component {
        name: r.spec.name.clone(),
        what,
        log: r.log.clone(),
        tail: tail(&r.log, TAIL_LINES),
    };
    loop {
        if let Some(how) = exit.borrow().clone() {
            return Err(fail(format!("exited during start-up ({how})")));
        }
        let last = match check(http, &r.spec.health).await {
            Ok(()) => return Ok(t0.elapsed()),
            Err(why) => why,
        };
        if t0.elapsed() >= timeout {
            return Err(fail(format!(
                "was not healthy within {} (last check: {last})",
                humantime::format_duration(timeout)
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = exit.changed() => {}
        }
    }
}

/// One health check.
async fn check(http: &reqwest::Client, health: &Health) -> Result<(), String> {
    async fn get(http: &reqwest::Client, url: &str) -> Result<String, String> {
        let resp = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status} {}", body.trim()));
        }
        Ok(body)
    }
    match health {
        Health::Get(url) => get(http, url).await.map(drop),
        Health::Agent { base } => {
            get(http, &format!("{base}/health")).await?;
            let state = get(http, &format!("{base}/state")).await?;
            let v: serde_json::Value =
                serde_json::from_str(&state).map_err(|e| format!("GET {base}/state: {e}"))?;
            if v.get("registered") == Some(&serde_json::Value::Bool(true)) {
                Ok(())
            } else {
                Err("not registered with the master yet".into())
            }
        }
    }
}

/// SIGTERM to the executors an agent started (each stops its pods and exits), and waits for
/// them; SIGKILL for those still there after [`EXECUTOR_GRACE`].
async fn stop_executors(agent: &str, agent_pid: i32) {
    let executors: Vec<i32> = procs::children(agent_pid)
        .into_iter()
        .filter(|(_, s)| s.state != 'Z')
        .map(|(pid, _)| pid)
        .collect();
    if executors.is_empty() {
        return;
    }
    let t0 = Instant::now();
    for pid in &executors {
        procs::signal(*pid, Signal::SIGTERM);
    }
    while executors.iter().any(|p| procs::alive(*p)) && t0.elapsed() < EXECUTOR_GRACE {
        tokio::time::sleep(POLL).await;
    }
    let stuck: Vec<i32> = executors.iter().copied().filter(|p| procs::alive(*p)).collect();
    for pid in &stuck {
        complain(format_args!(
            "km local-up: executor {pid} of {agent} did not stop within {}s; killing it",
            EXECUTOR_GRACE.as_secs()
        ));
        procs::signal(*pid, Signal::SIGKILL);
    }
    say(format_args!(
        "  stopped {:<20} after {:.1}s ({} executor(s), with their pods)",
        format!("{agent}'s executors"),
        t0.elapsed().as_secs_f64(),
        executors.len()
    ));
}

/// SIGTERM, the grace period, then SIGKILL; says how the process ended.
async fn terminate(r: &Running) -> String {
    let mut exit = r.exit.clone();
    procs::signal(r.pid, Signal::SIGTERM);
    let ended = |exit: &mut watch::Receiver<Option<String>>| {
        let mut exit = exit.clone();
        async move { exit.wait_for(Option::is_some).await.map(|v| v.clone().unwrap_or_default()) }
    };
    if let Ok(Ok(how)) = tokio::time::timeout(GRACE, ended(&mut exit)).await {
        return how;
    }
    complain(format_args!(
        "km local-up: {} did not stop within {}s of SIGTERM; killing it",
        r.spec.name,
        GRACE.as_secs()
    ));
    procs::signal(r.pid, Signal::SIGKILL);
    match tokio::time::timeout(GRACE, ended(&mut exit)).await {
        Ok(Ok(how)) => how,
        _ => "still there after SIGKILL".to_owned(),
    }
}
