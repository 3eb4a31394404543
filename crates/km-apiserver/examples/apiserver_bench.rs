//! Throughput and latency of `km apiserver` on a real etcd, over HTTP:
//! pod creates/s, binds/s, status updates/s, and watch delivery latency
//! (one watcher and many).
//!
//! ```text
//! cargo run --release -p km-apiserver --example apiserver_bench -- [pods] [concurrency] [watchers]
//! ```
//!
//! Starts `etcd` from PATH in a temporary directory and the server
//! in-process on a loopback port.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

#[path = "support/etcd.rs"]
mod etcd;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run_concurrent<F, Fut>(n: usize, concurrency: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    futures::stream::iter(0..n).map(f).buffer_unordered(concurrency).collect::<Vec<()>>().await;
    start.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let pods = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(128);
    let watchers = args.get(2).copied().unwrap_or(100);

    let etcd = etcd::Etcd::start().expect("start etcd (is it on PATH?)");
    let url = etcd.url.clone();
    // The server as `km apiserver` starts it, on any free port.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: km_apiserver::Args,
    }
    let cli =
        <Cli as clap::Parser>::try_parse_from(["apiserver", &format!("--etcd-servers={url}")])?;
    let mut config = km_apiserver::Config::from_args(&cli.args)?;
    config.insecure = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = km_apiserver::start(config).await?;
    let base = format!(
        "http://{}",
        server.insecure_addr().ok_or_else(|| anyhow::anyhow!("no plain-HTTP port"))?
    );
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    println!("km apiserver bench: {pods} pods, concurrency {concurrency}, etcd {url}");

    // Creates.
    let pods_url = format!("{base}/api/v1/namespaces/default/pods");
    let elapsed = run_concurrent(pods, concurrency, |i| {
        let (http, pods_url) = (http.clone(), pods_url.clone());
        async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
            let resp = http.post(&pods_url).header("content-type", "application/json").body(pod.to_string()).send().await;
            assert_eq!(resp.map(|r| r.status().as_u16()).unwrap_or(0), 201);
        }
    })
    .await;
    println!(
        "creates:        {:>8.0} pods/s  ({pods} in {elapsed:.2?})",
        pods as f64 / elapsed.as_secs_f64()
    );

    // Binds, with one watcher (the scheduler's) timing each bind from its
    // request to its MODIFIED event.
    let rv = current_rv(&http, &pods_url).await?;
    let sent: Sent = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let watcher = spawn_watcher(&http, &pods_url, &rv, pods, sent.clone()).await?;
    let elapsed = run_concurrent(pods, concurrency, |i| {
        let (http, pods_url, sent) = (http.clone(), pods_url.clone(), sent.clone());
        async move {
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": format!("p-{i}")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": format!("agent-{}", i % 1000)}});
            if let Ok(mut s) = sent.lock() {
                s.insert(format!("p-{i}"), Instant::now());
            }
            let resp = http
                .post(format!("{pods_url}/p-{i}/binding"))
                .header("content-type", "application/json")
                .body(binding.to_string())
                .send()
                .await;
            assert_eq!(resp.map(|r| r.status().as_u16()).unwrap_or(0), 201);
        }
    })
    .await;
    println!(
        "binds:          {:>8.0} binds/s ({pods} in {elapsed:.2?})",
        pods as f64 / elapsed.as_secs_f64()
    );
    let mut lat = tokio::time::timeout(Duration::from_secs(60), watcher).await???;
    lat.sort();
    println!(
        "  bind -> watch event (1 watcher, under full bind load): {} events, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );

    // Status updates.
    let elapsed = run_concurrent(pods, concurrency, |i| {
        let (http, pods_url) = (http.clone(), pods_url.clone());
        async move {
            let patch = json!({"status": {"phase": "Running", "podIP": format!("10.1.{}.{}", i / 250, i % 250)}});
            let resp = http
                .patch(format!("{pods_url}/p-{i}/status"))
                .header("content-type", "application/merge-patch+json")
                .body(patch.to_string())
                .send()
                .await;
            assert_eq!(resp.map(|r| r.status().as_u16()).unwrap_or(0), 200);
        }
    })
    .await;
    println!(
        "status patches: {:>8.0} /s      ({pods} in {elapsed:.2?})",
        pods as f64 / elapsed.as_secs_f64()
    );

    // Fan-out: many watchers, writes paced at ~500/s.
    let writes = 500.min(pods);
    let rv = current_rv(&http, &pods_url).await?;
    let sent: Sent = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        tasks.push(spawn_watcher(&http, &pods_url, &rv, writes, sent.clone()).await?);
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(2));
    let mut inflight = Vec::new();
    for i in 0..writes {
        ticker.tick().await;
        let (http, pods_url, sent) = (http.clone(), pods_url.clone(), sent.clone());
        inflight.push(tokio::spawn(async move {
            if let Ok(mut s) = sent.lock() {
                s.insert(format!("p-{i}"), Instant::now());
            }
            let patch = json!({"metadata": {"labels": {"fanout": "1"}}});
            let _ = http
                .patch(format!("{pods_url}/p-{i}"))
                .header("content-type", "application/merge-patch+json")
                .body(patch.to_string())
                .send()
                .await;
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(Ok(Ok(mut l))) = tokio::time::timeout(Duration::from_secs(60), task).await {
            all.append(&mut l);
        }
    }
    all.sort();
    println!(
        "watch fan-out: {watchers} watchers x {writes} writes at 500/s = {} deliveries; write request -> event p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default()
    );

    // Sequential single-writer latency of one bind-sized write.
    let mut single = Vec::new();
    for i in 0..200 {
        let t0 = Instant::now();
        let patch = json!({"metadata": {"labels": {"round": i.to_string()}}});
        http.patch(format!("{pods_url}/p-0"))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await?;
        single.push(t0.elapsed());
    }
    single.sort();
    println!(
        "single write:   p50 {:.2?}, p99 {:.2?}",
        percentile(&single, 0.5),
        percentile(&single, 0.99)
    );

    // Full list.
    let t0 = Instant::now();
    let resp = http.get(&pods_url).send().await?;
    let code = resp.status();
    let list = resp.bytes().await?;
    println!("list {pods} pods: {:.2?} ({} bytes, HTTP {code})", t0.elapsed(), list.len());
    Ok(())
}

type Sent = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

async fn current_rv(http: &reqwest::Client, pods_url: &str) -> anyhow::Result<String> {
    let list: Value = http.get(format!("{pods_url}?limit=1")).send().await?.json_value().await?;
    Ok(list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_owned())
}

/// A watch from `rv` that records, for `expect` events, the time since the
/// write of the named pod started.
async fn spawn_watcher(
    http: &reqwest::Client,
    pods_url: &str,
    rv: &str,
    expect: usize,
    sent: Sent,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>> {
    let resp = http.get(format!("{pods_url}?watch=true&resourceVersion={rv}")).send().await?;
    Ok(tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(expect);
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while latencies.len() < expect {
            let Some(chunk) = stream.next().await else { break };
            buf.extend_from_slice(&chunk?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let now = Instant::now();
                let line: Vec<u8> = buf.drain(..=pos).collect();
                // Cheap name extraction: the events are ours, no full parse needed.
                let text = String::from_utf8_lossy(&line);
                let Some(name) = text.split("\"name\":\"").nth(1).and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                if let Some(t0) = sent.lock().ok().and_then(|s| s.get(name).copied()) {
                    latencies.push(now.saturating_duration_since(t0));
                }
            }
        }
        Ok(latencies)
    }))
}

trait JsonValue {
    async fn json_value(self) -> anyhow::Result<Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.bytes().await?)?)
    }
}
