//! Compiles `proto/openapiv2.proto` (the gnostic OpenAPI v2 messages served at `/openapi/v2`)
//! with prost, and Kubernetes' own messages (`proto/k8s` at the repository's root) into a
//! descriptor set for the protobuf encoding (`src/protobuf.rs`).

use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/openapiv2.proto");
    prost_build::compile_protos(&["proto/openapiv2.proto"], &["proto"])?;

    let root = Path::new("../../proto/k8s");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(root, &mut files)?;
    files.sort();
    let out = PathBuf::from(
        std::env::var_os("OUT_DIR").ok_or_else(|| std::io::Error::other("OUT_DIR is not set"))?,
    );
    let status = std::process::Command::new(prost_build::protoc_from_env())
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.join("k8s.bin").display()))
        .arg(format!("-I{}", root.display()))
        .args(&files)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "protoc failed on {}: {status}",
            root.display()
        )));
    }
    Ok(())
}

/// Every `.proto` under `dir`.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    Ok(())
}
