//! A client stack no one here wrote: docker-py 7.x (Python, urllib3) runs the scenarios of
//! `tests/py/scenarios.py` once straight against host 1's engine and once through a gateway in
//! front of a 3-node cluster, and both runs must give the same results (peers.md §4.3: the
//! podman-compat model). Needs `python3` with the `docker` package (`tests/run.sh` installs
//! `docker==7.1.0` when it is missing).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, output_with_timeout, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/scenarios.py");
/// One whole run of the scenarios (about 15 s on an idle machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors the gateway words differently from the engine. Class and status are the engine's
/// (those are compared like everything else); only the message differs. Each entry is a JSON
/// pointer into the results and the gateway's exact message (`{node}` is any node name); the
/// engine's own message (Debian's dockerd 20.10) is in the comment. A gateway message that
/// matches its entry is compared as if it were the engine's; one that is the engine's own
/// passes too (the wording was fixed: drop the entry).
const KNOWN_WORDING: &[(&str, &str)] = &[
    // GET /networks/{name}, no node has it. Engine: "network no-such-network-xyz not found".
    ("/errors_seen_by_users/network_missing/explanation", "No such network: no-such-network-xyz"),
    // GET /networks/{id} after its removal. Engine: "network <id> not found".
    ("/networks/get_removed/explanation", "No such network: <id>"),
    // GET /volumes/{name}, no node has it. Engine: "get no-such-volume-xyz: no such volume".
    ("/errors_seen_by_users/volume_missing/explanation", "No such volume: no-such-volume-xyz"),
    // GET /volumes/{name} after its removal. Engine: "get pyscn-<sfx>-vol: no such volume".
    ("/volumes/get_removed/explanation", "No such volume: pyscn-<sfx>-vol"),
    // GET /images/{name}/json, no node has it. Engine:
    // "no such image: no-such-image-xyz:nope: No such image: no-such-image-xyz:nope".
    ("/images_list_and_get/missing/explanation", "No such image: no-such-image-xyz:nope"),
    // The same after `images.remove` of a tag. Engine:
    // "no such image: busybox:pytest-tag-<sfx>: No such image: busybox:pytest-tag-<sfx>".
    ("/image_tag_and_remove/get_removed/explanation", "No such image: busybox:pytest-tag-<sfx>"),
    // POST /containers/create?name=taken: the gateway names the node holding the name (on
    // purpose; the quoted ID, which clients parse out of this message, stays where it was).
    (
        "/list_with_filters/duplicate_name/explanation",
        "Conflict. The container name \"/pyscn-<sfx>-lst0\" is already in use by container \"<id>\" on node {node}. \
         You have to remove (or rename) that container to be able to reuse that name.",
    ),
];

/// Three agents (node1..3, one per host) and a gateway serving them as one cluster (as in
/// `cluster.rs`).
struct Cluster {
    gateway: Process,
    _agents: Vec<Process>,
    _certs: TempDir,
}

impl Cluster {
    fn start(bed: &Testbed) -> Cluster {
        let certs = TempDir::new();
        let hosts = bed.hosts();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(hosts)
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let mut agents = vec![];
        let mut args: Vec<String> = vec![];
        for (host, node) in hosts.iter().zip(NODES) {
            let (agent, addr) = Process::agent_in(host, node, &certs.0, &[]);
            agents.push(agent);
            args.extend(["--agent".into(), format!("{node}={addr}")]);
        }
        args.extend(tls_args(&certs.0, "gateway"));
        args.extend([
            "--probe-interval".into(),
            "0.5".into(),
            "--probe-timeout".into(),
            "1".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        let info = || {
            let out = docker(&gateway.url, &["info"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        let healthy = wait_until(Duration::from_secs(20), || {
            info().matches("Status: Healthy").count() == 3
        });
        assert!(healthy, "not every node became healthy:\n{}", info());
        Cluster {
            gateway,
            _agents: agents,
            _certs: certs,
        }
    }
}

/// `python3 -c 'import docker'`, with a clear message when docker-py is missing.
fn require_docker_py() {
    let out = output_with_timeout(
        Command::new("python3").args(["-c", "import docker; print(docker.__version__)"]),
        None,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("python3 is needed for the docker-py scenarios: {e:#}"));
    assert!(
        out.status.success(),
        "docker-py is missing: `python3 -m pip install 'docker==7.1.0'` (tests/run.sh does it)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs every scenario against `base_url` and returns the parsed results.
fn run_scenarios(base_url: &str) -> Value {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing");
    let mut cmd = Command::new("python3");
    cmd.args([SCRIPT, "--base-url", base_url])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    let out = output_with_timeout(&mut cmd, None, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenarios against {base_url} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("scenarios against {base_url}:\n{stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("scenarios against {base_url}: not JSON ({e}):\n{stdout}"))
}

/// Whether `got` is `template` with `{node}` standing for one of the node names.
fn matches_wording(got: &str, template: &str) -> bool {
    NODES
        .iter()
        .any(|node| got == template.replace("{node}", node))
}

/// Replaces each known gateway wording in `gateway` by the engine's message from `direct`,
/// and lists what was replaced (for the log).
fn accept_known_wording(direct: &Value, gateway: &mut Value) -> Vec<String> {
    let mut replaced = vec![];
    for (pointer, template) in KNOWN_WORDING {
        let engine = direct.pointer(pointer).cloned();
        let Some(got) = gateway.pointer_mut(pointer) else {
            continue;
        };
        if got.as_str().is_some_and(|g| matches_wording(g, template)) {
            replaced.push(format!("{pointer}: engine {engine:?}, gateway {got}"));
            *got = engine.unwrap_or(Value::Null);
        }
    }
    replaced
}

/// One line per differing leaf: `pointer: engine X, gateway Y`.
fn differences(pointer: &str, direct: &Value, gateway: &Value, out: &mut Vec<String>) {
    match (direct, gateway) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                differences(&format!("{pointer}/{k}"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{pointer}: engine {a}, gateway {b}")),
        _ => {}
    }
}

#[test]
fn docker_py_sees_the_cluster_gateway_as_it_sees_one_engine() {
    testbed::e2e!();
    require_docker_py();
    let bed = Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let cluster = Cluster::start(&bed);
    let gw = &cluster.gateway.url;

    let mut direct = run_scenarios(&bed.hosts()[0].docker_url());
    let mut gateway = run_scenarios(gw);

    // Where the containers ran: nothing against an engine, several nodes through the gateway.
    let direct_meta = direct
        .as_object_mut()
        .unwrap()
        .remove("_meta")
        .expect("_meta in the direct run");
    let gateway_meta = gateway
        .as_object_mut()
        .unwrap()
        .remove("_meta")
        .expect("_meta in the gateway run");
    let direct_nodes = direct_meta["nodes"].as_array().unwrap();
    assert!(
        direct_nodes.iter().all(Value::is_null),
        "an engine has no Node object: {direct_meta}"
    );
    let gateway_nodes = gateway_meta["nodes"].as_array().unwrap();
    assert_eq!(gateway_nodes.len(), direct_nodes.len(), "{gateway_meta}");
    let used: BTreeSet<&str> = gateway_nodes
        .iter()
        .map(|n| {
            n.as_str().unwrap_or_else(|| {
                panic!("a container without a Node through the gateway: {gateway_meta}")
            })
        })
        .collect();
    assert!(used.iter().all(|n| NODES.contains(n)), "{gateway_meta}");
    assert!(
        used.len() >= 2,
        "the gateway run stayed on {used:?}: {gateway_meta}"
    );
    let placed: Vec<&str> = gateway_nodes.iter().filter_map(Value::as_str).collect();
    eprintln!("gateway run placed containers on {placed:?}");

    let replaced = accept_known_wording(&direct, &mut gateway);
    for r in &replaced {
        eprintln!("known gateway wording accepted: {r}");
    }
    if direct != gateway {
        let mut diff = vec![];
        differences("", &direct, &gateway, &mut diff);
        panic!(
            "docker-py saw different results through the gateway:\n{}\n--- direct ---\n{}\n--- gateway ---\n{}",
            diff.join("\n"),
            serde_json::to_string_pretty(&direct).unwrap(),
            serde_json::to_string_pretty(&gateway).unwrap()
        );
    }
    // Every scenario ran and none raised unexpectedly (equal results could hide the same
    // failure on both sides).
    let unexpected: Vec<_> = direct
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.get("unexpected").is_some())
        .map(|(k, v)| format!("{k}: {}", v["unexpected"]))
        .collect();
    assert!(
        unexpected.is_empty(),
        "scenarios failed on both sides:\n{}",
        unexpected.join("\n")
    );
    assert!(direct.as_object().unwrap().len() >= 15, "{direct}");

    // Everything the scenarios made was removed, on every node.
    assert_eq!(
        docker_ok(gw, &["ps", "-a", "-q", "--filter", "name=pyscn-"]),
        ""
    );
    assert_eq!(
        docker_ok(gw, &["volume", "ls", "-q", "--filter", "name=pyscn-"]),
        ""
    );
    assert_eq!(
        docker_ok(gw, &["network", "ls", "-q", "--filter", "name=pyscn-"]),
        ""
    );
}
