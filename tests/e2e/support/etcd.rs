//! A single-member etcd for tests: the `etcd` binary from PATH (Debian's
//! `etcd-server`), on free loopback ports, with its data directory in a
//! temporary directory. It can be stopped, killed, frozen and started again
//! on the same ports and data; it is killed when dropped.
//!
//! ```ignore
//! let etcd = Etcd::start();
//! run_something("--etcd-servers", etcd.client_url());
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::free_port;
use super::process::{Proc, wait_until};

/// How long a fresh etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    proc: Option<Proc>,
    starts: u32,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        let mut etcd = Etcd::unstarted();
        etcd.start_again();
        etcd
    }

    /// Picks ports and a data directory without starting etcd, e.g. to
    /// start a client before its server.
    pub fn unstarted() -> Etcd {
        let dir = tempfile::Builder::new().prefix("km-etcd-").tempdir().expect("tempdir for etcd");
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        Etcd { dir, client_port, peer_port, proc: None, starts: 0 }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// `127.0.0.1:<port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts (or restarts) etcd on the same ports and data directory and
    /// waits until it is healthy.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "etcd is already running");
        ensure_etcd_on_path();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.client_url();
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=km-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=km-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        self.starts += 1;
        let log = self.dir.path().join(format!("etcd-{}.log", self.starts));
        let mut proc = Proc::spawn("etcd", cmd, &log);
        let healthy = wait_until(START_TIMEOUT, || {
            assert!(proc.is_running(), "etcd exited during start-up; its log:\n{}", proc.log());
            self.is_healthy()
        });
        assert!(healthy, "etcd not healthy within {START_TIMEOUT:?}; its log:\n{}", proc.log());
        self.proc = Some(proc);
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal("TERM");
            if proc.wait_timeout(Duration::from_secs(10)).is_none() {
                proc.kill();
            }
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// SIGSTOP: connections stay open but nothing is answered.
    pub fn freeze(&self) {
        self.running().signal("STOP");
    }

    /// SIGCONT after [`Etcd::freeze`].
    pub fn thaw(&self) {
        self.running().signal("CONT");
    }

    /// Whether `GET /health` answers `"health":"true"`.
    pub fn is_healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.contains("\"health\":\"true\"")
    }

    /// The logs of every start so far.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("etcd-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn running(&self) -> &Proc {
        self.proc.as_ref().expect("etcd is not running")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(proc) = &self.proc {
            // A frozen process ignores nothing but SIGKILL; thaw is harmless.
            let _ = Command::new("kill").arg("-CONT").arg(proc.pid().to_string()).status();
        }
        self.kill();
    }
}

fn ensure_etcd_on_path() {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("etcd").is_file()));
    assert!(
        found,
        "the `etcd` binary is not on PATH: these tests need a real etcd v3 server \
         (Debian/Ubuntu: `apt-get install etcd-server`; CI: scripts/install-deps.sh)"
    );
}
