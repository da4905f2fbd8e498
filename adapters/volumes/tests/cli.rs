//! The `busbar-volumes` program's flags, as an operator meets them (no root, no etcd): what
//! cannot work stops it at start with exit 64 and the reason, before anything is bound.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busbar-volumes"))
        .args(args)
        .env_remove("BUSBAR_ETCD")
        .output()
        .expect("busbar-volumes runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flags_that_cannot_work_exit_64_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("busbar-volumes-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let ca = not_pem.to_str().unwrap();
    let base = [
        "--gateway",
        "https://gw1:2376",
        "--tls-ca",
        ca,
        "--tls-cert",
        ca,
        "--tls-key",
        ca,
    ];

    let (code, err) = run(&base);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--etcd is required"), "{err}");

    let mut args = base.to_vec();
    args.extend(["--etcd", "http://127.0.0.1:1"]);
    let (code, err) = run(&args);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(ca), "names the file: {err}");

    args.extend(["--lock-ttl", "0"]);
    let (code, err) = run(&args);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--lock-ttl"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
