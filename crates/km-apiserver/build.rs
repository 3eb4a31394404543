//! Compiles `proto/openapiv2.proto` (the gnostic OpenAPI v2 messages served
//! at `/openapi/v2`) with prost.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/openapiv2.proto");
    prost_build::compile_protos(&["proto/openapiv2.proto"], &["proto"])
}
