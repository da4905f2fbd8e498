//! The cross-host adapters as the end-to-end tests run them (`network.rs`, `volumes.rs`,
//! `composed.rs`): `busbar-network` and `busbar-volumes` in each host's namespace at the
//! loopback URLs the chains name, the gateway serving the adapter API over TLS, the
//! certificates they need, and a chain applied through `busbarctl` until every node runs it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use testbed::{wait_until, Host, Testbed};

use super::{binary, busbarctl, tls_args, Process};

/// The node names, host by host.
pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
/// Where `busbar-volumes` listens in every host's namespace (the chain's URL is the same for all).
pub const VOLUMES_ADDR: &str = "127.0.0.1:7481";
/// The lease TTL the tests give `busbar-network`: short, so that a dead adapter's addresses go
/// quickly.
pub const NETWORK_LEASE_TTL: &str = "3";

/// Fails with `what`, stdout and stderr unless `out` succeeded.
#[track_caller]
pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues, in `certs` (made by `make_certs`), the gateway's certificate for adapters (they
/// dial it at the root end of their host's link: `gwtls`) and `busbar-volumes`' own, with the
/// adapter role (`volumes`).
pub fn issue_adapter_certs(bed: &Testbed, certs: &Path) {
    let d = certs.to_str().unwrap();
    let mut issue: Vec<String> = [
        "certs", "issue", "--dir", d, "--name", "gwtls", "--role", "gateway",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for h in bed.hosts() {
        issue.extend(["--san".into(), h.gateway_addr().unwrap().to_string()]);
    }
    let issue: Vec<&str> = issue.iter().map(String::as_str).collect();
    ok(&busbarctl(&issue), "certs issue gwtls");
    ok(
        &busbarctl(&[
            "certs", "issue", "--dir", d, "--name", "volumes", "--role", "adapter",
        ]),
        "certs issue volumes",
    );
}

/// The gateway on `prefix`, serving the adapter API on `0.0.0.0:tls_port` (certificates from
/// [`issue_adapter_certs`]).
pub fn start_tls_gateway(bed: &Testbed, prefix: &str, certs: &Path, tls_port: u16) -> Process {
    let f = |n: &str| certs.join(n).display().to_string();
    let mut args: Vec<String> = vec![
        "--etcd".into(),
        bed.etcd().unwrap().into(),
        "--etcd-prefix".into(),
        prefix.into(),
        "--tls-listen".into(),
        format!("0.0.0.0:{tls_port}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        f("ca.pem"),
        "--tlscert".into(),
        f("gwtls.pem"),
        "--tlskey".into(),
        f("gwtls-key.pem"),
        "--probe-interval".into(),
        "0.5".into(),
        "--probe-timeout".into(),
        "1".into(),
    ];
    args.extend(tls_args(certs, "gateway"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::gateway(&args)
}

/// `busbar-volumes` in `host`'s namespace on [`VOLUMES_ADDR`], its records under `prefix`,
/// waiting until it serves.
pub fn start_volumes(host: &Host, prefix: &str, certs: &Path, tls_port: u16) -> Process {
    let f = |n: &str| certs.join(n).display().to_string();
    let mut cmd = host.command_in(binary("busbar-volumes"));
    cmd.args(["--listen", VOLUMES_ADDR])
        .args([
            "--gateway",
            &format!("https://{}:{tls_port}", host.gateway_addr().unwrap()),
        ])
        .args(["--tls-ca", &f("ca.pem"), "--tls-cert", &f("volumes.pem")])
        .args(["--tls-key", &f("volumes-key.pem")])
        .args(["--etcd", host.etcd_url().unwrap(), "--etcd-prefix", prefix])
        .env("RUST_LOG", "info,busbar_volumes=debug")
        .env("NO_COLOR", "1");
    let p = Process::start_cmd(cmd);
    let up = wait_until(Duration::from_secs(15), || {
        p.log_text().contains("busbar-volumes serving hook calls")
    });
    assert!(up, "busbar-volumes did not start:\n{}", p.log_tail());
    p
}

/// `busbar-network` for `node` in `host`'s namespace (on its default 127.0.0.1:7480), its
/// keys under `net_prefix`, its state in `state_dir`; not waited for (see [`wait_network`]).
pub fn start_network(host: &Host, node: &str, net_prefix: &str, state_dir: &Path) -> Process {
    let mut cmd = host.command_in(binary("busbar-network"));
    cmd.args(["--node", node, "--docker", &host.docker_url()])
        .args([
            "--etcd",
            host.etcd_url().unwrap(),
            "--etcd-prefix",
            net_prefix,
        ])
        .args(["--underlay", &host.addr().unwrap().to_string()])
        .args(["--lease-ttl", NETWORK_LEASE_TTL, "--dns-upstream", "none"])
        .args(["--state-dir", &state_dir.display().to_string()])
        .env("RUST_LOG", "info,busbar_network=debug");
    Process::start_cmd(cmd)
}

/// Waits until `busbar-network` (of `node`) serves its hooks.
pub fn wait_network(p: &mut Process, node: &str) {
    let ok = wait_until(Duration::from_secs(30), || {
        p.exited().is_none() && p.log_text().contains("serving hooks")
    });
    assert!(
        ok,
        "busbar-network on {node} did not start:\n{}",
        p.log_tail()
    );
}

/// `busbarctl chain apply -f file` on the global scope under `prefix`; waits until every node
/// runs that revision without error.
pub fn apply_chain(etcd: &str, prefix: &str, file: &Path) {
    let ctl = |args: &[&str]| {
        let mut all = vec!["--etcd", etcd, "--etcd-prefix", prefix, "--json"];
        all.extend_from_slice(args);
        busbarctl(&all)
    };
    let out = ctl(&["chain", "apply", "-f", file.to_str().unwrap()]);
    ok(&out, "chain apply");
    let rev = serde_json::from_slice::<Value>(&out.stdout).unwrap()["revision"]
        .as_i64()
        .unwrap();
    let applied = wait_until(Duration::from_secs(20), || {
        let out = ctl(&["chain", "status"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        NODES
            .iter()
            .all(|n| s[n]["revision"].as_i64().unwrap_or(0) >= rev && s[n]["error"].is_null())
    });
    assert!(applied, "the chain {} reached every node", file.display());
}

/// What a node's engine says directly (not through busbar): the names of its volumes.
pub fn volumes_on(host: &Host) -> Vec<String> {
    host.docker_ok(&["volume", "ls", "-q"])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}
