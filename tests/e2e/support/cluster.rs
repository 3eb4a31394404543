//! A whole km control plane for tests: etcd, `km apiserver`, `km mesos-master` with simulated
//! agents, and `km scheduler`, each a real process on free loopback ports.

use std::process::Command;
use std::time::Duration;

use super::apiserver::{ApiServer, http};
use super::etcd::Etcd;
use super::mesos::MesosMaster;
use super::process::{Proc, wait_until};
use super::{free_port, km_bin};

/// Scheduler tuning that keeps tests short (the defaults wait 15 s before reconciling).
pub const FAST_TUNING: &str = "[scheduler]\n\
    offer-ttl = 2s\n\
    initial-implicit-reconciliation-delay = 1s\n\
    initial-pod-backoff = 200ms\n\
    max-pod-backoff = 2s\n\
    listener-delay = 100ms\n\
    framework-id-refresh-interval = 1s\n";

pub struct KmCluster {
    pub etcd: Etcd,
    pub api: ApiServer,
    pub master: MesosMaster,
    pub scheduler: Option<Proc>,
    pub scheduler_port: u16,
    scheduler_args: Vec<String>,
    starts: u32,
    /// Other processes the test keeps running (agents).
    extra: Vec<Proc>,
    /// The port of each agent by name: a restarted agent listens where its executors expect it.
    agent_ports: std::collections::HashMap<String, u16>,
    pub dir: tempfile::TempDir,
}

impl KmCluster {
    /// etcd, the API server, a master with `agents` simulated agents (`master_extra` flags),
    /// and a scheduler (`scheduler_extra` flags, fast tuning).
    pub fn start(master_extra: &[&str], scheduler_extra: &[&str]) -> KmCluster {
        let dir = tempfile::Builder::new().prefix("km-cluster-").tempdir().expect("tempdir");
        // The token the API server presents to executors for `kubectl logs`.
        let token = dir.path().join("proxy-token");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::fs::write(&token, format!("km-e2e-{}-{nanos}\n", std::process::id()))
            .expect("write the proxy token");
        let etcd = Etcd::start();
        let api =
            ApiServer::start_with(&etcd, &[&format!("--kubelet-token-file={}", token.display())]);
        let mut margs = vec!["--allocation_interval=100ms"];
        margs.extend_from_slice(master_extra);
        let master = MesosMaster::start(&margs);
        let tuning = dir.path().join("scheduler.ini");
        std::fs::write(&tuning, FAST_TUNING).expect("write the scheduler config");
        let scheduler_port = free_port();
        let mut scheduler_args = vec![
            format!("--api-servers={}", api.url()),
            format!("--mesos-master=127.0.0.1:{}", master.port),
            format!("--etcd-servers={}", etcd.client_url()),
            "--address=127.0.0.1".to_owned(),
            format!("--port={scheduler_port}"),
            format!("--scheduler-config={}", tuning.display()),
        ];
        // Simulated agents never run the executor; real agents get this km.
        if !scheduler_extra.iter().any(|a| a.starts_with("--executor-path")) {
            scheduler_args.push(format!("--executor-path=file://{}", km_bin().display()));
        }
        scheduler_args.push(format!("--executor-proxy-token-file={}", token.display()));
        // Docker pods' sandbox: the local image of tests/images/build.sh (no registry here).
        scheduler_args.push("--kubelet-pod-infra-container-image=km-test/pause:latest".to_owned());
        scheduler_args.extend(scheduler_extra.iter().map(|s| (*s).to_owned()));
        let mut cluster = KmCluster {
            etcd,
            api,
            master,
            scheduler: None,
            scheduler_port,
            scheduler_args,
            starts: 0,
            extra: Vec::new(),
            agent_ports: std::collections::HashMap::new(),
            dir,
        };
        cluster.start_scheduler();
        cluster
    }

    /// Starts the scheduler and waits for its `/healthz`.
    pub fn start_scheduler(&mut self) {
        assert!(self.scheduler.is_none(), "the scheduler runs already");
        self.starts += 1;
        let mut cmd = Command::new(km_bin());
        cmd.arg("scheduler").args(&self.scheduler_args).env("KM_LOG", "info,km_scheduler=debug");
        let log = self.dir.path().join(format!("scheduler-{}.log", self.starts));
        let mut proc = Proc::spawn("km scheduler", cmd, &log);
        let port = self.scheduler_port;
        let up = wait_until(Duration::from_secs(60), || {
            assert!(proc.is_running(), "km scheduler exited; its log:\n{}", proc.log());
            http(port, "GET", "/healthz", None).is_some_and(|(c, _)| c == 200)
        });
        assert!(up, "km scheduler not healthy; its log:\n{}", proc.log());
        self.scheduler = Some(proc);
    }

    /// Starts another scheduler with the cluster's flags on `port` (plus `extra`), without
    /// waiting for it: a standby of `--ha`, or one that should refuse to start.
    pub fn spawn_scheduler(&mut self, port: u16, extra: &[&str]) -> Proc {
        self.starts += 1;
        let mut cmd = Command::new(km_bin());
        cmd.arg("scheduler")
            .args(self.scheduler_args.iter().filter(|a| !a.starts_with("--port=")))
            .arg(format!("--port={port}"))
            .args(extra)
            .env("KM_LOG", "info,km_scheduler=debug");
        let log = self.dir.path().join(format!("scheduler-{}.log", self.starts));
        Proc::spawn("km scheduler", cmd, &log)
    }

    /// Starts a real `km mesos-agent` (its pods run with km executor) and waits until the master
    /// lists it.
    pub fn start_agent(&mut self, name: &str, resources: &str) -> Proc {
        self.start_agent_with(name, resources, "rack:r1")
    }

    /// [`Self::start_agent`] with the agent's `--attributes`.
    pub fn start_agent_with(&mut self, name: &str, resources: &str, attributes: &str) -> Proc {
        let port = *self.agent_ports.entry(name.to_owned()).or_insert_with(free_port);
        let work = self.dir.path().join(format!("agent-{name}"));
        let mut cmd = Command::new(km_bin());
        cmd.arg("mesos-agent")
            .arg(format!("--master=127.0.0.1:{}", self.master.port))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--hostname={name}"))
            .arg(format!("--work_dir={}", work.display()))
            .arg(format!("--resources={resources}"))
            .arg(format!("--attributes={attributes}"))
            .env("KM_LOG", "info");
        let mut proc =
            Proc::spawn("km mesos-agent", cmd, &self.dir.path().join(format!("agent-{name}.log")));
        let up = wait_until(Duration::from_secs(60), || {
            assert!(proc.is_running(), "km mesos-agent exited; its log:\n{}", proc.log());
            http(port, "GET", "/state", None)
                .is_some_and(|(c, body)| c == 200 && body.contains("\"registered\":true"))
        });
        assert!(up, "km mesos-agent did not register; its log:\n{}", proc.log());
        proc
    }

    /// The logs of every executor the agents started (their sandboxes' stderr).
    pub fn executor_logs(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.dir.path().to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().is_some_and(|n| n == "stderr") {
                    out.push_str(&format!(
                        "--- {}\n{}\n",
                        p.display(),
                        std::fs::read_to_string(&p).unwrap_or_default()
                    ));
                }
            }
        }
        out
    }

    /// Keeps a process running as long as the cluster.
    pub fn keep(&mut self, p: Proc) {
        self.extra.push(p);
    }

    /// kill -9 of the scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut p) = self.scheduler.take() {
            p.kill();
        }
    }

    /// Replaces the scheduler flag starting with `prefix` (e.g. `--executor-log=`) by `arg`
    /// for the next start, or adds `arg`.
    pub fn set_scheduler_arg(&mut self, prefix: &str, arg: &str) {
        self.scheduler_args.retain(|a| !a.starts_with(prefix));
        self.scheduler_args.push(arg.to_owned());
    }

    /// The scheduler's log (all starts).
    pub fn scheduler_log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("scheduler-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// GET on the scheduler's HTTP port: (status, body).
    pub fn scheduler_get(&self, path: &str) -> (u16, String) {
        http(self.scheduler_port, "GET", path, None).unwrap_or((0, String::new()))
    }

    /// POST on the scheduler's HTTP port.
    pub fn scheduler_post(&self, path: &str) -> (u16, String) {
        http(self.scheduler_port, "POST", path, Some(("application/json", "")))
            .unwrap_or((0, String::new()))
    }

    /// A metric's value from `/metrics` (the first sample whose line starts with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.scheduler_get("/metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn client(&self) -> kube::Client {
        self.api.client()
    }

    /// PIDs of the executors the cluster's agents started (their sandboxes are in its directory).
    pub fn executor_pids(&self) -> Vec<u32> {
        let dir = self.dir.path().display().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let cwd = std::fs::read_link(e.path().join("cwd"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if cmd.contains(" executor ") && cwd.starts_with(&dir) {
                out.push(pid);
            }
        }
        out
    }
}

impl KmCluster {
    /// Polls `f` until it returns `Some`; after `wait`, panics with `what` and the tails of the
    /// scheduler's and the executors' logs.
    pub async fn eventually<T, F, Fut>(&self, what: &str, wait: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}\nscheduler log (tail):\n{}\nexecutor logs (tail):\n{}",
                tail(&self.scheduler_log(), 80),
                tail(&self.executor_logs(), 120)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for KmCluster {
    /// The agents are killed with the cluster, and their executors would wait for them for
    /// their recovery timeout: tell them to stop their pods and go now.
    fn drop(&mut self) {
        for pid in self.executor_pids() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
}
