//! `busbarctl adapter test` against busbar's own cross-host adapters, as a user would run it
//! (issue #18): `busbar-network` and `busbar-volumes` started from their binaries in a host's
//! namespace, on the loopback addresses the shipped chains name (127.0.0.1:7480 and :7481),
//! beside that host's real engine, a real etcd, the node's agent and a gateway serving the
//! adapter API; then the real `busbarctl` in the same namespace, once per endpoint and phase
//! that `deploy/both-chain.yml` gives each adapter. Every run must exit 0 with 0 problems.
//! The test prints each run's figures (calls, problems, notes).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::crosshost::{issue_adapter_certs, start_network, start_tls_gateway, start_volumes};
use support::{binary, make_certs, Process, TempDir};
use testbed::{unique_name, wait_until, Testbed, TestbedSpec};

/// `(adapter, URL, timeout, protocol, endpoint, phase)` for every hook of the shipped chain that runs
/// both adapters, `deploy/both-chain.yml`, read with busbar's own chain parser.
type Hook = (String, String, String, String, String, &'static str);

fn shipped_hooks() -> Vec<Hook> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/both-chain.yml");
    let text = std::fs::read_to_string(&file).expect("deploy/both-chain.yml");
    let chain = busbar_chains::ChainSet::from_yaml(&text).expect("the shipped chain is valid");
    let mut hooks = vec![];
    for endpoint in chain.endpoints() {
        for (phase, names) in [("pre", &endpoint.pre), ("post", &endpoint.post)] {
            for name in names {
                let adapter = &chain.adapters()[name];
                hooks.push((
                    name.clone(),
                    adapter.url.to_string(),
                    format!("{}ms", adapter.timeout.as_millis()),
                    adapter.protocol.to_string(),
                    endpoint.key.clone(),
                    phase,
                ));
            }
        }
    }
    hooks
}

#[test]
fn busbars_own_adapters_pass_adapter_test_on_every_endpoint_and_phase() {
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: true,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let prefix = format!("/{}", unique_name("bbconf"));
    let certs = TempDir::new();
    make_certs(&certs.0, &[("node1", &host.addr().unwrap().to_string())]);
    issue_adapter_certs(&bed, &certs.0);
    let (_agent, _) = Process::agent_in(
        host,
        "node1",
        &certs.0,
        &["--etcd", host.etcd_url().unwrap(), "--etcd-prefix", &prefix],
    );
    let tls_port = testbed::free_port();
    let _gateway = start_tls_gateway(&bed, &prefix, &certs.0, tls_port);
    let _volumes = start_volumes(host, &prefix, &certs.0, tls_port);
    let state = TempDir::new();
    let mut network = start_network(host, "node1", &format!("{prefix}-net"), &state.0);
    let up = wait_until(Duration::from_secs(60), || {
        network.exited().is_none() && network.log_text().contains("serving hooks")
    });
    assert!(up, "busbar-network did not start:\n{}", network.log_tail());

    let hooks = shipped_hooks();
    // network: create pre and post, start post; volumes: 9 endpoint-phases of volumes and creates.
    assert_eq!(hooks.len(), 12, "{hooks:?}");
    let mut failures = vec![];
    for (name, url, timeout, protocol, endpoint, phase) in &hooks {
        {
            let out = host
                .command_in(binary("busbarctl"))
                .args([
                    "--json",
                    "adapter",
                    "test",
                    url,
                    "--endpoint",
                    endpoint.as_str(),
                ])
                .args([
                    "--phase",
                    phase,
                    "--timeout",
                    timeout,
                    "--protocol",
                    protocol,
                ])
                .output()
                .expect("busbarctl runs");
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let calls = report["calls"].as_array().map_or(0, Vec::len);
            let notes: usize = report["calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["notes"].as_array().map_or(0, Vec::len))
                .sum();
            println!(
                "{name} {phase}-hook {endpoint:?}: exit {:?}, {calls} calls, {} problems, {notes} notes",
                out.status.code(),
                report["problems"]
            );
            if !out.status.success() || report["problems"] != 0 || calls < 6 {
                failures.push(format!(
                    "{name} {phase} {endpoint}: exit {:?}\n{}{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- busbar-network ---\n{}",
        failures.join("\n"),
        network.log_tail()
    );
}
