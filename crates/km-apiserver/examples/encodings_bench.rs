//! JSON next to Kubernetes protobuf through `km apiserver` on a real etcd: pod creates/s and
//! binds/s with the bodies (and answers) in each encoding, the time and size of one list of
//! every pod in each, and — when the server runs as its own process — its memory holding them.
//!
//! ```text
//! cargo run --release -p km-apiserver --example encodings_bench -- \
//!     [--pods 10000] [--concurrency 128] [--lists 5] [--km target/release/km]
//! ```
//!
//! Starts `etcd` from PATH in a temporary directory. Without `--km` the server runs in this
//! process on a loopback port; with `--km` that binary's `km apiserver` is started as a child
//! process, and its VmRSS and VmHWM are read from /proc after start, after the writes, after
//! the first list in each encoding and after all of that encoding's lists (JSON's, then
//! protobuf's).
//!
//! The writes alternate between the encodings in four blocks (JSON, protobuf, JSON, protobuf),
//! each a quarter of the pods, so that neither encoding always meets the smaller store.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/etcd.rs"]
mod etcd;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use km_apiserver::protobuf;
use serde_json::{Value, json};

const JSON: &str = "application/json";

#[derive(clap::Parser)]
struct Opts {
    /// Pods to create, bind and list (split evenly between the encodings).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Lists of every pod to time in each encoding.
    #[arg(long, default_value_t = 5)]
    lists: usize,
    /// A `km` binary to run the server as a separate process (needed for its memory figures).
    #[arg(long)]
    km: Option<PathBuf>,
}

/// A child process killed when dropped, with whatever must outlive it.
struct Killed(Child, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server: in this process, or `km apiserver` as a child process.
enum Server {
    InProcess(#[allow(dead_code)] km_apiserver::Running),
    Child(Killed),
}

impl Server {
    fn pid(&self) -> Option<u32> {
        match self {
            Server::InProcess(_) => None,
            Server::Child(k) => Some(k.0.id()),
        }
    }
}

async fn start_server(km: Option<&PathBuf>, etcd_url: &str) -> anyhow::Result<(Server, String)> {
    let Some(km) = km else {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: km_apiserver::Args,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "apiserver",
            &format!("--etcd-servers={etcd_url}"),
        ])?;
        let mut config = km_apiserver::Config::from_args(&cli.args)?;
        config.insecure = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = km_apiserver::start(config).await?;
        let addr = server.insecure_addr().context("no plain-HTTP port")?;
        return Ok((Server::InProcess(server), format!("http://{addr}")));
    };
    let port = free_port()?;
    let child = Command::new(km)
        .arg("apiserver")
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg("--insecure-bind-address=127.0.0.1")
        .arg(format!("--insecure-port={port}"))
        .arg("--service-cluster-ip-range=10.10.10.0/24")
        .env("KM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {} apiserver", km.display()))?;
    let mut child = Killed(child, None);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("km apiserver exited: {status}");
        }
        let healthy = http.get(format!("{base}/healthz")).send().await;
        if healthy.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("km apiserver not healthy within 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((Server::Child(child), base))
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        Ok(kib.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn print_memory(pid: Option<u32>, when: &str) -> anyhow::Result<()> {
    if let Some(pid) = pid {
        let (rss, hwm) = memory(pid)?;
        println!(
            "apiserver memory {when}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Json => "JSON",
            Encoding::Protobuf => "protobuf",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Protobuf => protobuf::MEDIA_TYPE,
        }
    }

    /// The body of `obj` in this encoding, encoded per request as a client would.
    fn body(self, obj: &Value) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Encoding::Json => obj.to_string().into_bytes(),
            Encoding::Protobuf => protobuf::encode(obj)?,
        })
    }
}

fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

fn binding(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": format!("p-{i}")},
        "target": {"apiVersion": "v1", "kind": "Node", "name": format!("agent-{}", i % 1000)}})
}

/// Sends one write per index in `range` at most `concurrency` at a time, each asking for its
/// answer in the same encoding; every answer must be `want`. The time all of them took.
async fn writes(
    http: &reqwest::Client,
    range: std::ops::Range<usize>,
    concurrency: usize,
    enc: Encoding,
    want: u16,
    request: impl Fn(usize) -> (String, Value),
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(range)
        .map(|i| {
            let (url, obj) = request(i);
            let http = http.clone();
            async move {
                let resp = http
                    .post(&url)
                    .header("content-type", enc.media_type())
                    .header("accept", enc.media_type())
                    .body(enc.body(&obj)?)
                    .send()
                    .await?;
                let code = resp.status().as_u16();
                let body = resp.bytes().await?;
                if code != want {
                    bail!(
                        "POST {url} ({}): HTTP {code}: {}",
                        enc.name(),
                        String::from_utf8_lossy(&body)
                    );
                }
                if enc == Encoding::Protobuf && !body.starts_with(b"k8s\0") {
                    bail!("POST {url}: asked for protobuf, got {}", String::from_utf8_lossy(&body));
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(elapsed)
}

/// Time to the last byte of one list, its size, and the time to decode it into JSON values.
async fn list(
    http: &reqwest::Client,
    url: &str,
    enc: Encoding,
    pods: usize,
) -> anyhow::Result<(Duration, usize, Duration)> {
    let t0 = Instant::now();
    let resp = http.get(url).header("accept", enc.media_type()).send().await?;
    let code = resp.status().as_u16();
    let body = resp.bytes().await?;
    let took = t0.elapsed();
    if code != 200 {
        bail!("GET {url} ({}): HTTP {code}", enc.name());
    }
    let t1 = Instant::now();
    let value = match enc {
        Encoding::Json => serde_json::from_slice::<Value>(&body)?,
        Encoding::Protobuf => protobuf::decode(&body)?,
    };
    let decode = t1.elapsed();
    let items = value["items"].as_array().map_or(0, Vec::len);
    if items != pods {
        bail!("the {} list has {items} items, not {pods}", enc.name());
    }
    Ok((took, body.len(), decode))
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = <Opts as clap::Parser>::parse();
    let (pods, concurrency) = (opts.pods, opts.concurrency.max(1));
    let etcd = etcd::Etcd::start().context("start etcd (is it on PATH?)")?;
    let etcd_url = etcd.url.clone();
    let (server, base) = start_server(opts.km.as_ref(), &etcd_url).await?;
    let pid = server.pid();
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    println!(
        "km apiserver encodings bench: {pods} pods, concurrency {concurrency}, server {} ({base}), etcd {etcd_url}",
        match &server {
            Server::InProcess(_) => "in this process".to_owned(),
            Server::Child(_) => format!("pid {}", pid.unwrap_or_default()),
        }
    );
    print_memory(pid, "after start")?;

    let pods_url = format!("{base}/api/v1/namespaces/default/pods");
    let quarter = pods / 4;
    let blocks = [
        (Encoding::Json, 0..quarter),
        (Encoding::Protobuf, quarter..2 * quarter),
        (Encoding::Json, 2 * quarter..3 * quarter),
        (Encoding::Protobuf, 3 * quarter..pods),
    ];
    let rate = |enc: Encoding, took: &[(Encoding, Duration, usize)]| {
        let (n, t) = took
            .iter()
            .filter(|(e, _, _)| *e == enc)
            .fold((0, Duration::ZERO), |(n, t), (_, d, k)| (n + k, t + *d));
        (n, t, n as f64 / t.as_secs_f64())
    };

    let mut took = Vec::new();
    for (enc, range) in blocks.clone() {
        let n = range.len();
        let d = writes(&http, range, concurrency, enc, 201, |i| (pods_url.clone(), pod(i))).await?;
        took.push((enc, d, n));
    }
    for enc in [Encoding::Json, Encoding::Protobuf] {
        let (n, t, r) = rate(enc, &took);
        println!("creates {:<8} {r:>8.0} pods/s  ({n} in {t:.2?})", enc.name());
    }

    let mut took = Vec::new();
    for (enc, range) in blocks {
        let n = range.len();
        let d = writes(&http, range, concurrency, enc, 201, |i| {
            (format!("{pods_url}/p-{i}/binding"), binding(i))
        })
        .await?;
        took.push((enc, d, n));
    }
    for enc in [Encoding::Json, Encoding::Protobuf] {
        let (n, t, r) = rate(enc, &took);
        println!("binds   {:<8} {r:>8.0} binds/s ({n} in {t:.2?})", enc.name());
    }
    print_memory(pid, &format!("holding {pods} pods"))?;

    // All the lists of one encoding, then all of the other, so that the memory read after
    // each block (VmHWM above all) belongs to one encoding.
    for enc in [Encoding::Json, Encoding::Protobuf] {
        let (mut times, mut decodes, mut bytes) = (Vec::new(), Vec::new(), 0);
        for n in 0..opts.lists.max(1) {
            let (t, b, decode) = list(&http, &pods_url, enc, pods).await?;
            times.push(t);
            decodes.push(decode);
            bytes = b;
            if n == 0 {
                print_memory(pid, &format!("after one {} list", enc.name()))?;
            }
        }
        let min = times.iter().min().copied().unwrap_or_default();
        println!(
            "list {pods} pods {:<8} median {:.1?}, min {min:.1?} over {} lists; {bytes} bytes ({:.2} MiB); client decode median {:.1?}",
            enc.name(),
            median(times.clone()),
            times.len(),
            bytes as f64 / (1024.0 * 1024.0),
            median(decodes),
        );
        print_memory(pid, &format!("after the {} lists", enc.name()))?;
    }
    Ok(())
}
