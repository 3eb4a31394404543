//! Compiles the Mesos v1 protos (and km's master-agent protocol) under the
//! repository's `proto/` directory with prost, and records their descriptors so that the Mesos JSON mapping
//! can walk messages by reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mesos/v1/mesos.proto",
    "mesos/v1/scheduler/scheduler.proto",
    "mesos/v1/executor/executor.proto",
    "mesos/v1/master/master.proto",
    "km/v1/agent.proto",
];

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    prost_reflect_build::Builder::new()
        .descriptor_pool("crate::proto::DESCRIPTOR_POOL")
        .compile_protos_with_config(config, &files, &[root])
}
