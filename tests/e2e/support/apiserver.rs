//! `km apiserver` on a free loopback port, backed by a test etcd, plus
//! small helpers for talking to it and to etcd's HTTP gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::etcd::Etcd;
use super::process::{Proc, wait_until};
use super::{free_port, km_bin};

pub struct ApiServer {
    pub port: u16,
    pub proc: Proc,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts `km apiserver` against `etcd` and waits for `/healthz`.
    pub fn start(etcd: &Etcd) -> ApiServer {
        ApiServer::start_with(etcd, &[])
    }

    pub fn start_with(etcd: &Etcd, extra: &[&str]) -> ApiServer {
        let dir = tempfile::Builder::new().prefix("km-apiserver-").tempdir().expect("tempdir");
        let port = free_port();
        let mut args = vec![
            "--insecure-bind-address=127.0.0.1".to_owned(),
            format!("--insecure-port={port}"),
            format!("--etcd-servers={}", etcd.client_url()),
            "--allow-privileged=true".to_owned(),
            "--service-cluster-ip-range=10.10.10.0/24".to_owned(),
            "--watch-bookmark-interval=1s".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let proc = Self::spawn(&args, dir.path());
        let mut api = ApiServer { port, proc, args, dir };
        api.wait_healthy();
        api
    }

    fn spawn(args: &[String], dir: &std::path::Path) -> Proc {
        let mut cmd = Command::new(km_bin());
        cmd.arg("apiserver").args(args).env("KM_LOG", "info");
        Proc::spawn("km apiserver", cmd, &dir.join("apiserver.log"))
    }

    fn wait_healthy(&mut self) {
        let (port, proc) = (self.port, &mut self.proc);
        let up = wait_until(Duration::from_secs(30), || {
            assert!(proc.is_running(), "km apiserver exited; its log:\n{}", proc.log());
            http(port, "GET", "/healthz", None).is_some_and(|(code, _)| code == 200)
        });
        assert!(up, "km apiserver not healthy in 30s; its log:\n{}", proc.log());
    }

    /// kill -9, then start again on the same port with the same flags, healthy.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = Self::spawn(&self.args, self.dir.path());
        self.wait_healthy();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("server url"));
        kube::Client::try_from(config).expect("kube client")
    }
}

/// One HTTP/1.0 request to `127.0.0.1:port`; `(status, body)`.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let (content_type, payload) = body.unwrap_or(("application/json", ""));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Compacts etcd's history up to `revision` through its HTTP gateway.
pub fn compact_etcd(etcd: &Etcd, revision: i64) {
    let port: u16 =
        etcd.client_addr().rsplit(':').next().and_then(|p| p.parse().ok()).expect("etcd port");
    let body = format!("{{\"revision\": \"{revision}\", \"physical\": true}}");
    let (code, text) = http(port, "POST", "/v3/kv/compaction", Some(("application/json", &body)))
        .expect("etcd answers");
    assert_eq!(code, 200, "etcd compaction failed: {text}");
}
