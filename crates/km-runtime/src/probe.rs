//! Liveness, readiness and startup probes with Kubernetes semantics: exec,
//! httpGet (2xx/3xx succeeds) and tcpSocket handlers; initialDelaySeconds,
//! periodSeconds, timeoutSeconds, successThreshold and failureThreshold;
//! the startup probe gates the other two.
//!
//! A prober task runs per started container and reports through the
//! worker's event channel: `Ready(bool)` on readiness changes, `Unhealthy`
//! when liveness (or startup) fails past its threshold.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::runtime::ContainerRuntime;

/// What a prober reports to the worker.
#[derive(Debug)]
pub(crate) enum ProbeEvent {
    Ready(bool),
    Unhealthy(String),
}

/// Timings of one probe, with Kubernetes defaults.
#[derive(Clone, Debug)]
struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    let s = v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default).max(min);
    Duration::from_secs(s)
}

impl Timing {
    fn of(p: &k8s::Probe) -> Timing {
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p
                .success_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1)
                .max(1),
            failure_threshold: p
                .failure_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(3)
                .max(1),
        }
    }
}

/// Where a container's probes connect and what they may exec in.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) container_id: String,
    /// Address for httpGet/tcpSocket without an explicit host.
    pub(crate) ip: String,
    /// The container's spec, to resolve named ports.
    pub(crate) spec: k8s::Container,
}

/// Runs the probes of one container until it is stopped (the task is
/// aborted by the worker when the container exits).
pub(crate) async fn run<R: ContainerRuntime>(
    rt: Arc<R>,
    target: Target,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let spec = target.spec.clone();
    if let Some(startup) = &spec.startup_probe {
        let t = Timing::of(startup);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match check(&*rt, &target, startup, t.timeout).await {
                Ok(()) => break,
                Err(why) => {
                    failures += 1;
                    if failures >= t.failure_threshold {
                        let _ = tx
                            .send(ProbeEvent::Unhealthy(format!("Startup probe failed: {why}")))
                            .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }
    let readiness = {
        let (rt, target, tx) = (rt.clone(), target.clone(), tx.clone());
        let probe = spec.readiness_probe.clone();
        async move {
            let Some(probe) = probe else {
                let _ = tx.send(ProbeEvent::Ready(true)).await;
                return;
            };
            let t = Timing::of(&probe);
            tokio::time::sleep(t.initial_delay).await;
            let (mut ok, mut bad, mut ready) = (0u32, 0u32, false);
            loop {
                match check(&*rt, &target, &probe, t.timeout).await {
                    Ok(()) => {
                        ok += 1;
                        bad = 0;
                        if !ready && ok >= t.success_threshold {
                            ready = true;
                            let _ = tx.send(ProbeEvent::Ready(true)).await;
                        }
                    }
                    Err(_) => {
                        bad += 1;
                        ok = 0;
                        if ready && bad >= t.failure_threshold {
                            ready = false;
                            let _ = tx.send(ProbeEvent::Ready(false)).await;
                        }
                    }
                }
                tokio::time::sleep(t.period).await;
            }
        }
    };
    let liveness = {
        let probe = spec.liveness_probe.clone();
        async move {
            let Some(probe) = probe else { return std::future::pending::<()>().await };
            let t = Timing::of(&probe);
            tokio::time::sleep(t.initial_delay).await;
            let mut bad = 0;
            loop {
                match check(&*rt, &target, &probe, t.timeout).await {
                    Ok(()) => bad = 0,
                    Err(why) => {
                        bad += 1;
                        if bad >= t.failure_threshold {
                            let _ = tx
                                .send(ProbeEvent::Unhealthy(format!(
                                    "Liveness probe failed: {why}"
                                )))
                                .await;
                            return std::future::pending::<()>().await;
                        }
                    }
                }
                tokio::time::sleep(t.period).await;
            }
        }
    };
    futures::join!(readiness, liveness);
}

fn port(spec: &k8s::Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => spec
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// One probe attempt: Ok when it succeeds, else why not.
async fn check<R: ContainerRuntime>(
    rt: &R,
    target: &Target,
    probe: &k8s::Probe,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match rt.exec(&target.container_id, &cmd, timeout).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("command {cmd:?} exited with {code}")),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&target.spec, &tcp.port)?;
        let host = tcp.host.clone().unwrap_or_else(|| target.ip.clone());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: timeout")),
        };
    }
    if let Some(http) = &probe.http_get {
        let port = port(&target.spec, &http.port)?;
        let host = http.host.clone().unwrap_or_else(|| target.ip.clone());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let get = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| e.to_string())?;
            let mut req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/km\r\nConnection: close\r\n"
            );
            for h in http.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let r = s.read(&mut head[n..]).await.map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            let line = String::from_utf8_lossy(&head[..n]).into_owned();
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("malformed HTTP response {line:?}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return match tokio::time::timeout(timeout, get).await {
            Ok(r) => r.map_err(|e| format!("Get http://{host}:{port}{path}: {e}")),
            Err(_) => Err(format!("Get http://{host}:{port}{path}: timeout")),
        };
    }
    Err("probe has no handler (exec, httpGet or tcpSocket)".into())
}
