//! Harness shared by the cross-process tests.

#![allow(dead_code, unreachable_pub)]

pub mod apiserver;
pub mod cluster;
pub mod etcd;
pub mod mesos;
pub mod process;

use std::net::TcpListener;
use std::path::PathBuf;

/// Path of the km binary built for these tests.
pub fn km_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_km"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A two-thread runtime for tests that drive async clients from sync code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The kubectls to try a flow with: Debian's 1.20 (SPDY exec) when installed, and beside the
/// kubectl on PATH the oldest (1.27), the first whose exec speaks WebSocket (1.30), the default
/// and the newest (1.33).
pub fn kubectls() -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = Vec::new();
    let mut add = |k: std::path::PathBuf| {
        let same = |f: &std::path::PathBuf| {
            std::fs::canonicalize(f).ok() == std::fs::canonicalize(&k).ok()
        };
        if k.is_file() && !found.iter().any(same) {
            found.push(k);
        }
    };
    add(std::path::PathBuf::from("/opt/km-tools/kubernetes-client/usr/bin/kubectl"));
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|k| k.is_file()));
    if let Some(k) = on_path {
        // The versioned kubectls sit beside the real file of the one on PATH: the oldest, the
        // first whose exec speaks WebSocket (1.30), the default and the newest.
        let dir = std::fs::canonicalize(&k)
            .ok()
            .and_then(|r| r.parent().map(std::path::Path::to_path_buf));
        for v in ["1.27", "1.30"] {
            if let Some(dir) = &dir {
                add(dir.join(format!("kubectl.{v}")));
            }
        }
        add(k);
        if let Some(dir) = &dir {
            add(dir.join("kubectl.1.33"));
        }
    }
    found
}

/// Every kubectl on the machine: Debian's 1.20 when installed, the one on PATH and every
/// `kubectl.1.NN` beside its real file, oldest first.
pub fn all_kubectls() -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let debian = std::path::PathBuf::from("/opt/km-tools/kubernetes-client/usr/bin/kubectl");
    if debian.is_file() {
        found.push(debian);
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|k| k.is_file()));
    let Some(k) = on_path else { return found };
    let mut versioned: Vec<(u32, std::path::PathBuf)> = std::fs::canonicalize(&k)
        .ok()
        .and_then(|real| real.parent().map(std::path::Path::to_path_buf))
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, e.path()))
        })
        .collect();
    versioned.sort();
    let same = |a: &std::path::Path, b: &std::path::Path| {
        std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
    };
    // The one on PATH, unless it is one of the versioned files.
    if !versioned.iter().any(|(_, v)| same(v, &k)) {
        found.push(k);
    }
    found.extend(versioned.into_iter().map(|(_, v)| v));
    found
}

pub fn kubectl(bin: &std::path::Path, server: &str, args: &[&str]) -> (bool, String) {
    let home = tempfile::tempdir().expect("kubectl home");
    let out = std::process::Command::new(bin)
        .env("HOME", home.path())
        .arg(format!("--server={server}"))
        .args(args)
        .output()
        .expect("run kubectl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The kind of an object's controlling owner.
pub fn owner_kind(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.kind.clone())
}
