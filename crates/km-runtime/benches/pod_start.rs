//! Scenario P of the benchmarks: pod start latency, create → Running, for
//! the native runtime and for Docker.
//!
//! `cargo bench -p km-runtime --bench pod_start [-- NATIVE_PODS DOCKER_PODS]`
//! (defaults 200 and 50; 0 skips a runtime). Each pod is created with
//! `PodManager::run` and timed until its snapshot says Running; pods are
//! created one after the other and keep running until the end, so the last
//! ones start on a node already running the others. Needs root (native) and
//! a Docker engine with `km-test/busybox:latest` and `km-test/pause:latest`
//! (`tests/images/build.sh`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as k8s;
use km_runtime::PodManager;
use km_runtime::docker::{DockerConfig, DockerRuntime};
use km_runtime::lifecycle::Phase;
use km_runtime::native::{NativeConfig, NativeRuntime};
use km_runtime::pod::NodeContext;

fn pod(i: usize, native: bool) -> k8s::Pod {
    let container = if native {
        serde_json::json!({"name": "c", "command": ["/bin/sleep", "1000"],
                           "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}})
    } else {
        serde_json::json!({"name": "c", "image": "km-test/busybox:latest", "imagePullPolicy": "Never",
                           "command": ["sleep", "1000"],
                           "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}})
    };
    let mut spec =
        serde_json::json!({"terminationGracePeriodSeconds": 0, "containers": [container]});
    if native {
        spec["runtimeClassName"] = "native".into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bench-{i}"), "namespace": "bench", "uid": format!("bench-{}-{i}", std::process::id())},
        "spec": spec
    }))
    .expect("bench pod")
}

async fn measure(m: &PodManager, n: usize, native: bool) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = pod(i, native);
        let started = Instant::now();
        let uid = m.run(&p).expect("run pod").uid;
        let mut rx = m.watch(&uid).expect("watch");
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|s| s.phase == Phase::Running),
        )
        .await;
        match res {
            Ok(Ok(_)) => out.push(started.elapsed()),
            _ => panic!("pod {i} did not run: {:#?}", m.snapshot(&uid).map(|s| s.status)),
        }
    }
    out
}

fn report(name: &str, mut d: Vec<Duration>) {
    if d.is_empty() {
        return;
    }
    d.sort();
    let pct = |p: f64| {
        let idx = ((p / 100.0) * d.len() as f64).ceil() as usize;
        d[idx.clamp(1, d.len()) - 1]
    };
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    let ms = |x: Duration| format!("{:.1} ms", x.as_secs_f64() * 1000.0);
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        d.len(),
        ms(d[0]),
        ms(pct(50.0)),
        ms(pct(90.0)),
        ms(pct(99.0)),
        ms(d[d.len() - 1]),
        ms(mean)
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let native_n = args.first().copied().unwrap_or(200);
    let docker_n = args.get(1).copied().unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = NodeContext { node_name: "bench".into(), host_ip: "127.0.0.1".into() };
        println!("| runtime | pods | min | p50 | p90 | p99 | max | mean |");
        println!("|---|---|---|---|---|---|---|---|");
        if native_n > 0 {
            let parent = format!("km-bench-{}", std::process::id());
            let native = Arc::new(
                NativeRuntime::new(NativeConfig {
                    root_dir: dir.path().join("native"),
                    cgroup_parent: parent,
                    init: None,
                    adopt: false,
                })
                .expect("native runtime (run as root)"),
            );
            let m = PodManager::new(Some(native.clone()), None, node.clone());
            let d = measure(&m, native_n, true).await;
            m.stop_all().await;
            let _ = native.remove_cgroup_parent();
            report("native", d);
        }
        if docker_n > 0 {
            let owner = format!("km-bench-{}", std::process::id());
            let docker = Arc::new(
                DockerRuntime::connect(DockerConfig::new(
                    dir.path().join("docker"),
                    owner,
                    "km-test/pause:latest",
                ))
                .await
                .expect("docker"),
            );
            let m = PodManager::new(None, Some(docker.clone()), node);
            let d = measure(&m, docker_n, false).await;
            m.stop_all().await;
            report("docker", d);
        }
    });
}
