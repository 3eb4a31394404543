//! Writes the seed corpus of the `master_calls` fuzz target:
//! `cargo run -p km-mesos-master --features fuzzing --example fuzz_seeds -- <directory>`
//! (by default `crates/km-mesos-master/fuzz/corpus/master_calls`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/master_calls")
    });
    std::fs::create_dir_all(&dir)?;
    for (name, input) in km_mesos_master::fuzzing::seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), input)?;
    }
    Ok(())
}
