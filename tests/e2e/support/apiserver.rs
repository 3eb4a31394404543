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

/// km apiserver serving HTTPS too, with the certificates `scripts/make-pki.sh` makes (an
/// authority whose client certificates it accepts (`--client-ca-file`), its own certificate for 127.0.0.1, the
/// ServiceAccount signing key, and kubeconfigs for admin, scheduler, controller-manager and
/// node).
pub struct SecureApiServer {
    pub server: ApiServer,
    /// The HTTPS port.
    pub port: u16,
    pki: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl SecureApiServer {
    /// Starts it with `extra` flags and waits until the HTTPS port listens.
    pub fn start(etcd: &Etcd, extra: &[&str]) -> SecureApiServer {
        let pki = tempfile::Builder::new().prefix("km-pki-").tempdir().expect("tempdir");
        let port = free_port();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-pki.sh");
        let made = Command::new("bash")
            .arg(script)
            .arg(pki.path())
            .arg(format!("https://127.0.0.1:{port}"))
            .arg("127.0.0.1")
            .output()
            .expect("scripts/make-pki.sh");
        assert!(made.status.success(), "make-pki.sh: {}", String::from_utf8_lossy(&made.stderr));
        let file = |name: &str| pki.path().join(name).display().to_string();
        let mut args = vec![
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--service-account-signing-key-file={}", file("sa.key")),
            format!("--client-ca-file={}", file("ca.crt")),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = ApiServer::start_with(etcd, &args);
        let listening =
            wait_until(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(listening, "the secure port does not listen; the log:\n{}", server.proc.log());
        assert!(server.proc.is_running());
        let home = tempfile::tempdir().expect("home");
        SecureApiServer { server, port, pki, home }
    }

    /// A file of the PKI directory.
    pub fn file(&self, name: &str) -> String {
        self.pki.path().join(name).display().to_string()
    }

    /// A client certificate and key `<name>.crt`/`.key` for `subject` (`/O=group/CN=user`),
    /// signed by the server's authority.
    pub fn client_certificate(&self, name: &str, subject: &str) {
        let script = format!(
            "set -e\nopenssl req -newkey rsa:2048 -nodes -subj '{subject}' -keyout {name}.key -out {name}.csr 2>/dev/null\n\
             openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile client.cnf -out {name}.crt 2>/dev/null\n"
        );
        let made = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.pki.path())
            .output()
            .expect("openssl");
        assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    }

    /// `kubectl` against the HTTPS port, with `auth` (e.g. `--token=…`, or the client
    /// certificate flags); `(succeeded, stdout and stderr)`. Stdin is empty, so a 401 ends
    /// kubectl's prompt for a user name at once.
    pub fn kubectl(
        &self,
        kubectl: &std::path::Path,
        auth: &[String],
        args: &[&str],
    ) -> (bool, String) {
        let out = Command::new(kubectl)
            .env("HOME", self.home.path())
            .arg(format!("--server=https://127.0.0.1:{}", self.port))
            .arg(format!("--certificate-authority={}", self.file("ca.crt")))
            .args(auth)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The client certificate flags of `<name>.crt`/`.key`.
    pub fn as_certificate(&self, name: &str) -> Vec<String> {
        vec![
            format!("--client-certificate={}", self.file(&format!("{name}.crt"))),
            format!("--client-key={}", self.file(&format!("{name}.key"))),
        ]
    }
}
