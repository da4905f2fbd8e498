//! The code tonic-prost-build generates from `proto/`, committed so that building needs no
//! `protoc`: messages and gRPC clients (no servers, no transport helpers), one module per
//! protobuf package. The test `generated_code_is_current` regenerates it and fails when the
//! committed copy is stale; `BUSBAR_REGENERATE=1 cargo test -p busbar-etcd-client generated` rewrites
//! it.

/// `mvccpb`: `KeyValue` and `Event`.
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    include!("gen/mvccpb.rs");
}

/// `etcdserverpb`: the KV, Watch, Lease, Maintenance and Auth services and their messages.
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    include!("gen/etcdserverpb.rs");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The generated files, in `src/gen/`.
    const FILES: [&str; 2] = ["etcdserverpb.rs", "mvccpb.rs"];

    #[test]
    fn generated_code_is_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = tempfile::tempdir().expect("a temporary directory");
        let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored's protoc");
        let mut config = prost_build::Config::new();
        config.protoc_executable(protoc);
        tonic_prost_build::configure()
            .build_server(false)
            .build_transport(false)
            .out_dir(out.path())
            .compile_with_config(
                config,
                &[
                    root.join("proto/etcdserverpb/rpc.proto"),
                    root.join("proto/mvccpb/kv.proto"),
                ],
                &[root.join("proto")],
            )
            .expect("protoc compiles proto/");
        let mut generated: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        generated.sort();
        assert_eq!(generated, FILES, "the files protoc generates");
        let regenerate = std::env::var_os("BUSBAR_REGENERATE").is_some();
        for file in FILES {
            let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
            let committed_path = root.join("src/gen").join(file);
            if regenerate {
                std::fs::write(&committed_path, &fresh).unwrap();
            }
            let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
            assert!(
                committed == fresh,
                "src/gen/{file} is stale: run BUSBAR_REGENERATE=1 cargo test -p busbar-etcd-client generated"
            );
        }
    }
}
