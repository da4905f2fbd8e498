//! Wire definitions for the gateway <-> agent hop (gRPC over mutual TLS).
//!
//! # Layout
//! - `proto/busbar/agent/v1/agent.proto`: the service, documented there.
//! - `src/gen/busbar.agent.v1.rs`: the code generated from it, committed so that building
//!   busbar needs no `protoc`. The test `generated_code_is_current` regenerates it (that test
//!   needs `protoc`, which the test command installs) and fails if the committed copy is stale;
//!   `BUSBAR_REGENERATE=1 cargo test -p busbar-proto` rewrites it.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!("gen/busbar.agent.v1.rs");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn generated_code_is_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::env::temp_dir().join(format!("busbar-proto-gen-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        tonic_prost_build::configure()
            .build_transport(false)
            // Body chunks as `Bytes`: no copy when a frame is made, and decoding slices the
            // received buffer instead of copying out of it.
            .bytes(".busbar.agent.v1.ExchangeFrame.data")
            .out_dir(&out)
            .compile_protos(
                &[root.join("proto/busbar/agent/v1/agent.proto")],
                &[root.join("proto")],
            )
            .expect("protoc compiles agent.proto (is protobuf-compiler installed?)");
        let fresh = std::fs::read_to_string(out.join("busbar.agent.v1.rs")).unwrap();
        let committed_path = root.join("src/gen/busbar.agent.v1.rs");
        let _ = std::fs::remove_dir_all(&out);
        if std::env::var_os("BUSBAR_REGENERATE").is_some() {
            std::fs::write(&committed_path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            committed == fresh,
            "src/gen is stale: run BUSBAR_REGENERATE=1 cargo test -p busbar-proto"
        );
    }
}
