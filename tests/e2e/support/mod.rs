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
