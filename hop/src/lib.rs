//! The gateway <-> agent hop: gRPC over mutual TLS, one Docker API exchange per call.
//!
//! # Layout
//! - `proto/busbar/agent/v1/agent.proto`: the service, documented there; [`v1`] its code.
//! - [`frames`]: one HTTP exchange as a stream of frames, used by both ends (the agent's
//!   gRPC service and the gateway's client).
//! - [`io`]: what goes under TLS on each side of the hop.
//! - [`lane`]: a body read from a lane (successive exchanges on one call), at both ends.
//! - `src/gen/busbar.agent.v1.rs`: the code generated from it, committed so that building
//!   busbar needs no `protoc`. The test `generated_code_is_current` regenerates it (with the
//!   `protoc` of the `protoc-bin-vendored` crate, so no system `protoc` either) and fails if the
//!   committed copy is stale; `BUSBAR_REGENERATE=1 cargo test -p busbar-hop` rewrites it.

pub mod frames;
pub mod io;
pub mod lane;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!("gen/busbar.agent.v1.rs");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// prost's settings with the `protoc` that the `protoc-bin-vendored` crate ships, so that
    /// this test needs no system `protoc`.
    fn vendored_protoc() -> tonic_prost_build::Config {
        let protoc = protoc_bin_vendored::protoc_bin_path().expect("a vendored protoc binary");
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(protoc);
        config
    }

    #[test]
    fn generated_code_is_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::env::temp_dir().join(format!("busbar-hop-gen-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        tonic_prost_build::configure()
            .build_transport(false)
            // Body chunks as `Bytes`: no copy when a frame is made, and decoding slices the
            // received buffer instead of copying out of it.
            .bytes(".busbar.agent.v1.ExchangeFrame.data")
            .out_dir(&out)
            .compile_with_config(
                vendored_protoc(),
                &[root.join("proto/busbar/agent/v1/agent.proto")],
                &[root.join("proto")],
            )
            .expect("protoc compiles agent.proto");
        let fresh = std::fs::read_to_string(out.join("busbar.agent.v1.rs")).unwrap();
        let committed_path = root.join("src/gen/busbar.agent.v1.rs");
        let _ = std::fs::remove_dir_all(&out);
        if std::env::var_os("BUSBAR_REGENERATE").is_some() {
            std::fs::write(&committed_path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            committed == fresh,
            "src/gen is stale: run BUSBAR_REGENERATE=1 cargo test -p busbar-hop"
        );
    }
}
