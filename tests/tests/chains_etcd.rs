//! Adapter chains in etcd, end to end: three agents on three hosts following their scopes in
//! a real etcd, a gateway in front, `busbarctl` and the real `docker` CLI.
//!
//! The tests here run one at a time ([`serial`]): each starts three engines and times how fast
//! chains reach the nodes, which two beds starting side by side on a small machine would skew.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::adapters::{append_env, FakeAdapter};
use support::{busbarctl, expose, make_certs, tls_args, Process, TempDir};
use testbed::{docker, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Held by each test for its whole run, so that the tests of this file never overlap.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Bed {
    bed: Testbed,
    prefix: String,
    certs: TempDir,
    state: TempDir,
    agents: Vec<Process>,
    addrs: Vec<String>,
    gateway: Process,
}

fn agent_args(bed: &Testbed, i: usize, prefix: &str, state: &Path, etcd: &str) -> Vec<String> {
    let zone = if i == 0 { "zone=a" } else { "zone=b" };
    let dir = state.join(NODES[i]).display().to_string();
    let _ = bed;
    [
        "--etcd",
        etcd,
        "--etcd-prefix",
        prefix,
        "--state-dir",
        &dir,
        "--label",
        zone,
        "--registration-ttl",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Bed {
    /// Writes a chain document that names an adapter it never defines straight into etcd under
    /// `scope`, past busbarctl's validation, as an operator with etcdctl could.
    fn put_invalid_chain(&self, scope: &str) {
        let key = format!("{}/chains/{scope}", self.prefix);
        let bad =
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [missing]\nadapters: {}\n";
        let put = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", self.bed.etcd().unwrap(), "put", &key, bad])
            .output()
            .expect("etcdctl runs");
        assert!(
            put.status.success(),
            "etcdctl put: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }

    fn start() -> Bed {
        let bed = Testbed::start(TestbedSpec {
            hosts: 3,
            netns: true,
            etcd: true,
        })
        .unwrap();
        let prefix = format!("/{}", unique_name("bbchains"));
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let state = TempDir::new();
        let mut agents = vec![];
        let mut addrs = vec![];
        for (i, host) in bed.hosts().iter().enumerate() {
            let args = agent_args(&bed, i, &prefix, &state.0, host.etcd_url().unwrap());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (p, addr) = Process::agent_in(host, NODES[i], &certs.0, &args);
            agents.push(p);
            addrs.push(addr);
        }
        let mut args: Vec<String> = vec![
            "--etcd".into(),
            bed.etcd().unwrap().into(),
            "--etcd-prefix".into(),
            prefix.clone(),
        ];
        args.extend(tls_args(&certs.0, "gateway"));
        args.extend([
            "--probe-interval".into(),
            "0.5".into(),
            "--probe-timeout".into(),
            "1".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        let b = Bed {
            bed,
            prefix,
            certs,
            state,
            agents,
            addrs,
            gateway,
        };
        let ok = wait_until(Duration::from_secs(20), || {
            b.info().matches("Status: Healthy").count() == 3
        });
        assert!(
            ok,
            "the gateway does not see 3 healthy nodes:\n{}",
            b.info()
        );
        b
    }

    fn info(&self) -> String {
        let out = docker(&self.gateway.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec![
            "--etcd",
            self.bed.etcd().unwrap(),
            "--etcd-prefix",
            &self.prefix,
        ];
        all.extend_from_slice(args);
        busbarctl(&all)
    }

    /// `chain apply`, returning the new revision.
    fn apply(&self, file: &Path, scope: &str) -> i64 {
        let out = self.ctl(&[
            "--json",
            "chain",
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--scope",
            scope,
        ]);
        assert!(
            out.status.success(),
            "chain apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["revision"].as_i64().unwrap()
    }

    /// `chain status --json` by node.
    fn status(&self) -> BTreeMap<String, Value> {
        let out = self.ctl(&["--json", "chain", "status"]);
        assert!(
            out.status.success(),
            "chain status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until every node in `nodes` reports a view at `rev` or later; returns how long it took.
    fn applied_by(&self, nodes: &[&str], rev: i64, within: Duration) -> Duration {
        let t0 = Instant::now();
        let ok = wait_until(within, || {
            let s = self.status();
            nodes.iter().all(|n| {
                s.get(*n).is_some_and(|v| {
                    v["revision"].as_i64().unwrap_or(0) >= rev && v["error"].is_null()
                })
            })
        });
        assert!(
            ok,
            "not all of {nodes:?} applied revision {rev} within {within:?}: {:#?}",
            self.status()
        );
        t0.elapsed()
    }

    /// `docker run` on `node` through the gateway: the container's environment.
    fn env_on(&self, node: &str) -> String {
        let c = format!("constraint:node=={node}");
        let out = docker(
            &self.gateway.url,
            &["run", "--rm", "-e", &c, "busybox", "env"],
        );
        assert!(
            out.status.success(),
            "docker run on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many nodes `docker info` through the gateway shows `Healthy`.
    fn healthy(&self) -> usize {
        self.info().matches("Status: Healthy").count()
    }

    /// Waits until the gateway shows all three nodes `Healthy`.
    fn wait_all_healthy(&self, within: Duration, when: &str) {
        let ok = wait_until(within, || self.healthy() == 3);
        assert!(
            ok,
            "{when}: the gateway does not show 3 healthy nodes within {within:?}:\n{}",
            self.info()
        );
    }

    /// `busbarctl --json nodes`: the registered node names.
    fn registered(&self) -> Vec<String> {
        let out = self.ctl(&["--json", "nodes"]);
        if !out.status.success() {
            return vec![];
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let names = v.as_array().map(|a| {
            a.iter()
                .filter_map(|n| n["node"]["name"].as_str())
                .map(str::to_owned)
                .collect()
        });
        names.unwrap_or_default()
    }

    /// The lease of each node's registration, as etcd has it.
    fn leases(&self) -> BTreeMap<String, String> {
        support::registration_leases(self.bed.etcd().unwrap(), &self.prefix)
    }

    fn all_alive(&mut self) {
        for a in &mut self.agents {
            assert!(a.exited().is_none(), "an agent exited:\n{}", a.log_tail());
        }
    }
}

fn chain_doc(dir: &TempDir, name: &str, adapter_url: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [{name}]\nadapters:\n  {name}: {adapter_url}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn chains_in_etcd_apply_live_scoped_rolled_back_guarded_and_validated() {
    testbed::e2e!();
    let _serial = serial();
    let mut b = Bed::start();
    let via = b.bed.hosts()[0]
        .gateway_addr()
        .expect("a root address hosts reach");
    let global = FakeAdapter::start(append_env("CHAIN", "global"));
    let second = FakeAdapter::start(append_env("CHAIN", "second"));
    let zone = FakeAdapter::start(append_env("ZONE", "a"));
    let docs = TempDir::new();
    let global_yml = chain_doc(&docs, "global", &expose(&global.url, via));
    let second_yml = chain_doc(&docs, "second", &expose(&second.url, via));
    let zone_yml = chain_doc(&docs, "zonea", &expose(&zone.url, via));
    let pids: Vec<u32> = b.agents.iter().map(Process::pid).collect();

    // Nothing in etcd yet: every node runs no chain.
    assert!(!b.env_on("node1").contains("CHAIN="));

    // A global chain reaches every node without a restart.
    let r1 = b.apply(&global_yml, "global");
    let took = b.applied_by(&NODES, r1, Duration::from_secs(2));
    eprintln!("global chain applied on all nodes {took:?} after the apply returned");
    for n in NODES {
        assert!(b.env_on(n).contains("CHAIN=global"), "{n}: {}", b.env_on(n));
    }

    // label:zone=a: only node1.
    let r2 = b.apply(&zone_yml, "label:zone=a");
    b.applied_by(&["node1"], r2, Duration::from_secs(2));
    let env1 = b.env_on("node1");
    assert!(
        env1.contains("CHAIN=global") && env1.contains("ZONE=a"),
        "{env1}"
    );
    for n in ["node2", "node3"] {
        let env = b.env_on(n);
        assert!(
            env.contains("CHAIN=global") && !env.contains("ZONE="),
            "{n}: {env}"
        );
    }

    // A new global version, then rollback to the first.
    let r3 = b.apply(&second_yml, "global");
    b.applied_by(&NODES, r3, Duration::from_secs(2));
    assert!(b.env_on("node2").contains("CHAIN=second"));
    let out = b.ctl(&["chain", "history", "--scope", "global"]);
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        history.contains(&format!("revision {r3}")) && history.contains(&format!("revision {r1}")),
        "{history}"
    );
    let out = b.ctl(&[
        "--json",
        "chain",
        "rollback",
        &r1.to_string(),
        "--scope",
        "global",
    ]);
    assert!(
        out.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r4 = serde_json::from_slice::<Value>(&out.stdout).unwrap()["revision"]
        .as_i64()
        .unwrap();
    b.applied_by(&NODES, r4, Duration::from_secs(2));
    for n in NODES {
        let env = b.env_on(n);
        assert!(
            env.contains("CHAIN=global") && !env.contains("CHAIN=second"),
            "{n}: {env}"
        );
    }

    // An apply based on a stale revision is refused, and changes nothing.
    let out = b.ctl(&[
        "chain",
        "apply",
        "-f",
        second_yml.to_str().unwrap(),
        "--revision",
        &r3.to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused") && err.contains(&r4.to_string()),
        "{err}"
    );
    let out = b.ctl(&["--json", "chain", "get", "--scope", "global"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0]["revision"].as_i64(), Some(r4));

    // An invalid document written straight into etcd: refused by every agent, which keep the
    // last good chain and say why in `chain status`.
    b.put_invalid_chain("global");
    let refused = wait_until(Duration::from_secs(2), || {
        let s = b.status();
        NODES.iter().all(|n| {
            s.get(*n)
                .is_some_and(|v| v["error"].as_str().is_some_and(|e| e.contains("missing")))
        })
    });
    assert!(
        refused,
        "the agents did not report the invalid document: {:#?}",
        b.status()
    );
    let text = String::from_utf8_lossy(&b.ctl(&["chain", "status"]).stdout).into_owned();
    assert!(text.contains("node3") && text.contains("missing"), "{text}");
    for n in NODES {
        assert!(
            b.env_on(n).contains("CHAIN=global"),
            "{n} lost its last good chain"
        );
    }
    b.all_alive();
    assert_eq!(pids, b.agents.iter().map(Process::pid).collect::<Vec<_>>());

    // A restarted agent that cannot reach etcd starts on its last-known-good cache.
    b.agents[0].kill();
    let host = &b.bed.hosts()[0];
    let args = agent_args(&b.bed, 0, &b.prefix, &b.state.0, "http://127.0.0.1:1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (agent, addr) = Process::agent_in(host, "node1", &b.certs.0, &args);
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(log.contains("last-known-good"), "{log}");
    let mut gargs = vec!["--agent".to_string(), format!("node1={addr}")];
    gargs.extend(tls_args(&b.certs.0, "gateway"));
    let gargs: Vec<&str> = gargs.iter().map(String::as_str).collect();
    let direct = Process::gateway(&gargs);
    let out = docker(&direct.url, &["run", "--rm", "busybox", "env"]);
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(
        env.contains("CHAIN=global") && env.contains("ZONE=a"),
        "{env}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = &b.addrs;
}

/// Issue #6: with etcd stopped the cluster keeps serving with its chains, a restarted agent
/// uses its cache, and all catches up when etcd returns.
#[test]
fn an_etcd_outage_keeps_the_chains_a_restarted_agent_uses_its_cache_and_all_catch_up() {
    testbed::e2e!();
    let _serial = serial();
    let mut b = Bed::start();
    let via = b.bed.hosts()[0]
        .gateway_addr()
        .expect("a root address hosts reach");
    let before = FakeAdapter::start(append_env("BEFORE", "outage"));
    let after = FakeAdapter::start(append_env("AFTER", "outage"));
    let docs = TempDir::new();
    let before_yml = chain_doc(&docs, "before", &expose(&before.url, via));
    let after_yml = chain_doc(&docs, "after", &expose(&after.url, via));
    let r1 = b.apply(&before_yml, "global");
    b.applied_by(&NODES, r1, Duration::from_secs(5));
    assert_eq!(b.registered(), NODES);
    let old_leases = b.leases();
    assert_eq!(old_leases.len(), 3, "{old_leases:?}");

    // etcd goes away.
    b.bed.stop_etcd().expect("stopping etcd");
    let out = b.ctl(&["nodes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(b.bed.etcd().unwrap().trim_start_matches("http://")),
        "{err}"
    );
    // The gateway saw its watch of the registry break...
    let gateway_saw = wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&b.gateway.log)
            .unwrap_or_default()
            .contains("node watch")
    });
    assert!(
        gateway_saw,
        "the gateway did not notice etcd going away:\n{}",
        b.gateway.log_tail()
    );
    // ...and, well past the agents' registration TTL (2 s: their leases cannot be kept
    // alive), it still serves every node with the chain each runs: membership is what etcd
    // last said, not whether etcd answers.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        b.healthy(),
        3,
        "nodes were dropped while etcd is down:\n{}",
        b.info()
    );
    for n in NODES {
        let env = b.env_on(n);
        assert!(
            env.contains("BEFORE=outage"),
            "{n} lost its chain while etcd is down: {env}"
        );
    }

    // node1's agent dies and comes back (same address) while etcd is still down: it starts on
    // its last-known-good cache, and says so.
    b.agents[0].kill();
    let host = &b.bed.hosts()[0];
    let args = agent_args(&b.bed, 0, &b.prefix, &b.state.0, host.etcd_url().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.agents[0] = Process::agent_in_at(host, "node1", &b.certs.0, &b.addrs[0], &args);
    // The gRPC port opens only after the chains were read (or not), so the log is complete.
    let log = std::fs::read_to_string(&b.agents[0].log).unwrap_or_default();
    assert!(
        log.contains("etcd unreachable: using the last-known-good adapter chains from the cache"),
        "{log}"
    );
    b.wait_all_healthy(
        Duration::from_secs(20),
        "node1's agent restarted while etcd is down",
    );
    for n in NODES {
        let env = b.env_on(n);
        assert!(
            env.contains("BEFORE=outage"),
            "{n} while etcd is down, after node1 restarted: {env}"
        );
    }

    // etcd returns, and a new chain goes to every node, the restarted one included.
    b.bed.start_etcd().expect("starting etcd again");
    let back = Instant::now();
    let r2 = b.apply(&after_yml, "global");
    let took = b.applied_by(&NODES, r2, Duration::from_secs(15));
    eprintln!(
        "after etcd returned: the new chain applied on all nodes {took:?} after the apply, {:?} after etcd was back",
        back.elapsed()
    );
    // `revision` is the etcd revision of the view a node runs (at least r2; a node that listed
    // again after the outage reports the revision of that list), `scopes` each document's.
    let status = b.status();
    for n in NODES {
        let s = &status[n];
        assert!(s["revision"].as_i64().unwrap_or(0) >= r2, "{n}: {s}");
        assert_eq!(s["scopes"]["global"].as_i64(), Some(r2), "{n}: {s}");
        assert_eq!(s["source"].as_str(), Some("etcd"), "{n}: {s}");
    }
    let text = String::from_utf8_lossy(&b.ctl(&["chain", "status"]).stdout).into_owned();
    for n in NODES {
        let line = text.lines().find(|l| l.starts_with(n)).unwrap_or_default();
        assert!(line.contains(" etcd ") && line.ends_with('-'), "{text}");
    }

    // Every agent registers again, under a new lease: none could keep its lease alive through
    // the outage (etcd keeps leases across a restart and renews them, so the old ones expire
    // a TTL later, and would take with them an entry that was not put again). Then `busbarctl
    // nodes` lists all three, and the gateway serves all three with the new chain.
    let t0 = Instant::now();
    let renewed = wait_until(Duration::from_secs(20), || {
        let now = b.leases();
        now.len() == 3
            && now
                .iter()
                .all(|(n, lease)| old_leases.get(n) != Some(lease))
    });
    assert!(
        renewed,
        "registrations after the outage: {:?}, before: {old_leases:?}",
        b.leases()
    );
    eprintln!(
        "all nodes registered again {:?} after the new chain applied",
        t0.elapsed()
    );
    assert_eq!(b.registered(), NODES);
    let out = b.ctl(&["--json", "nodes"]);
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    for n in nodes
        .as_array()
        .expect("busbarctl nodes --json lists nodes")
    {
        let chains = &n["chains"];
        assert!(
            chains["revision"].as_i64().unwrap_or(0) >= r2 && chains["error"].is_null(),
            "{nodes:#}"
        );
    }
    b.wait_all_healthy(Duration::from_secs(20), "after etcd returned");
    for n in NODES {
        let env = b.env_on(n);
        assert!(
            env.contains("AFTER=outage") && !env.contains("BEFORE="),
            "{n} after etcd returned: {env}"
        );
    }
    b.all_alive();
}

/// `node`'s block in `docker info`: its `└ Key: value` lines.
fn node_block(info: &str, node: &str) -> Vec<String> {
    let head = format!("{node}: ");
    let mut lines = info
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&head))
        .skip(1);
    lines
        .by_ref()
        .take_while(|l| l.contains('└'))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The value of `└ key:` in `node`'s block, if it has that line.
fn node_line(info: &str, node: &str, key: &str) -> Option<String> {
    let prefix = format!("└ {key}: ");
    node_block(info, node)
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

/// Issue #6: `docker info` through the gateway shows each node's chains (the etcd revision it
/// runs and the scopes merged into it), and the error of a view it refused, on the nodes that
/// refused it only.
#[test]
fn docker_info_shows_each_nodes_chain_revision_and_refusals() {
    testbed::e2e!();
    let _serial = serial();
    let b = Bed::start();
    let docs = TempDir::new();
    // The adapters are never called: nothing here creates a container.
    let global_yml = chain_doc(&docs, "global", "http://127.0.0.1:9/never-called");
    let zone_yml = chain_doc(&docs, "zonea", "http://127.0.0.1:9/never-called");
    let r1 = b.apply(&global_yml, "global");
    b.applied_by(&NODES, r1, Duration::from_secs(5));
    let r2 = b.apply(&zone_yml, "label:zone=a");
    b.applied_by(&["node1"], r2, Duration::from_secs(5));
    // `etcd rev R (scopes)` -> (R, scopes). node1 runs the view at r2; node2 and node3 the one
    // at r1 or later (r2 changed none of their scopes).
    let parse = |line: &str| -> Option<(i64, String)> {
        let (rev, scopes) = line.strip_prefix("etcd rev ")?.split_once(' ')?;
        Some((rev.parse().ok()?, scopes.to_owned()))
    };
    let as_expected = |info: &str, node: &str| {
        let shown = node_line(info, node, "Chains").as_deref().and_then(parse);
        match node {
            "node1" => shown == Some((r2, "(global, label:zone=a)".to_owned())),
            _ => shown.is_some_and(|(rev, scopes)| rev >= r1 && scopes == "(global)"),
        }
    };
    let shown = wait_until(Duration::from_secs(5), || {
        let info = b.info();
        NODES.iter().all(|n| as_expected(&info, n))
    });
    let info = b.info();
    assert!(shown, "expected node1 at etcd rev {r2} (global, label:zone=a), the others at {r1}+ (global):\n{info}");
    assert!(!info.contains("Chains error"), "{info}");

    // An invalid document for label:zone=b, written straight into etcd: node2 and node3 refuse
    // it and keep their chain; node1 does not carry the label and has nothing to refuse.
    b.put_invalid_chain("label:zone=b");
    let refused = wait_until(Duration::from_secs(5), || {
        let info = b.info();
        ["node2", "node3"].iter().all(|n| {
            node_line(&info, n, "Chains error")
                .is_some_and(|e| e.contains("refused") && e.contains("missing"))
        })
    });
    let info = b.info();
    assert!(refused, "node2 and node3 do not show the refusal:\n{info}");
    for n in NODES {
        assert!(as_expected(&info, n), "{n} keeps its chain:\n{info}");
        assert_eq!(
            node_line(&info, n, "Status").as_deref(),
            Some("Healthy"),
            "{info}"
        );
    }
    for n in ["node2", "node3"] {
        let error = node_line(&info, n, "Chains error").unwrap_or_default();
        assert!(
            error.contains("label:zone=b"),
            "{n}: the error names the scope: {error}"
        );
    }
    assert_eq!(node_line(&info, "node1", "Chains error"), None, "{info}");
}
