//! Cross-process tests of the `km` binary: each test starts real processes
//! (km subcommands, etcd, …) on free loopback ports with temporary
//! directories, and stops them when it ends.

mod apiserver;
mod chaos;
mod cli;
mod cold_standby;
mod controller_manager;
mod executor;
mod hostile;
mod kubelet;
mod kubelet_api;
mod local_up;
mod mesos_agent;
mod mesos_master;
mod native_init;
mod podmaster;
mod python_client;
mod restart;
mod scheduler;
mod support;
mod web_ui;
