//! Adapter chains in etcd, end to end: three agents on three hosts following their scopes in
//! a real etcd, a gateway in front, `busbarctl` and the real `docker` CLI.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::adapters::{append_env, FakeAdapter};
use support::{busbarctl, expose, make_certs, tls_args, Process, TempDir};
use testbed::{docker, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

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
    ["--etcd", etcd, "--etcd-prefix", prefix, "--state-dir", &dir, "--label", zone, "--registration-ttl", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Bed {
    fn start() -> Bed {
        let bed = Testbed::start(TestbedSpec { hosts: 3, netns: true, etcd: true }).unwrap();
        let prefix = format!("/{}", unique_name("bbchains"));
        let certs = TempDir::new();
        let sans: Vec<(String, String)> =
            NODES.iter().zip(bed.hosts()).map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string())).collect();
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
        let mut args: Vec<String> =
            vec!["--etcd".into(), bed.etcd().unwrap().into(), "--etcd-prefix".into(), prefix.clone()];
        args.extend(tls_args(&certs.0, "gateway"));
        args.extend(["--probe-interval".into(), "0.5".into(), "--probe-timeout".into(), "1".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        let b = Bed { bed, prefix, certs, state, agents, addrs, gateway };
        let ok = wait_until(Duration::from_secs(20), || b.info().matches("Status: Healthy").count() == 3);
        assert!(ok, "the gateway does not see 3 healthy nodes:\n{}", b.info());
        b
    }

    fn info(&self) -> String {
        let out = docker(&self.gateway.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--etcd", self.bed.etcd().unwrap(), "--etcd-prefix", &self.prefix];
        all.extend_from_slice(args);
        busbarctl(&all)
    }

    /// `chain apply`, returning the new revision.
    fn apply(&self, file: &Path, scope: &str) -> i64 {
        let out = self.ctl(&["--json", "chain", "apply", "-f", file.to_str().unwrap(), "--scope", scope]);
        assert!(out.status.success(), "chain apply: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["revision"].as_i64().unwrap()
    }

    /// `chain status --json` by node.
    fn status(&self) -> BTreeMap<String, Value> {
        let out = self.ctl(&["--json", "chain", "status"]);
        assert!(out.status.success(), "chain status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until every node in `nodes` reports a view at `rev` or later; returns how long it took.
    fn applied_by(&self, nodes: &[&str], rev: i64, within: Duration) -> Duration {
        let t0 = Instant::now();
        let ok = wait_until(within, || {
            let s = self.status();
            nodes
                .iter()
                .all(|n| s.get(*n).is_some_and(|v| v["revision"].as_i64().unwrap_or(0) >= rev && v["error"].is_null()))
        });
        assert!(ok, "not all of {nodes:?} applied revision {rev} within {within:?}: {:#?}", self.status());
        t0.elapsed()
    }

    /// `docker run` on `node` through the gateway: the container's environment.
    fn env_on(&self, node: &str) -> String {
        let c = format!("constraint:node=={node}");
        let out = docker(&self.gateway.url, &["run", "--rm", "-e", &c, "busybox", "env"]);
        assert!(out.status.success(), "docker run on {node}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
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
    let mut b = Bed::start();
    let via = b.bed.hosts()[0].gateway_addr().expect("a root address hosts reach");
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
    assert!(env1.contains("CHAIN=global") && env1.contains("ZONE=a"), "{env1}");
    for n in ["node2", "node3"] {
        let env = b.env_on(n);
        assert!(env.contains("CHAIN=global") && !env.contains("ZONE="), "{n}: {env}");
    }

    // A new global version, then rollback to the first.
    let r3 = b.apply(&second_yml, "global");
    b.applied_by(&NODES, r3, Duration::from_secs(2));
    assert!(b.env_on("node2").contains("CHAIN=second"));
    let out = b.ctl(&["chain", "history", "--scope", "global"]);
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(history.contains(&format!("revision {r3}")) && history.contains(&format!("revision {r1}")), "{history}");
    let out = b.ctl(&["--json", "chain", "rollback", &r1.to_string(), "--scope", "global"]);
    assert!(out.status.success(), "rollback: {}", String::from_utf8_lossy(&out.stderr));
    let r4 = serde_json::from_slice::<Value>(&out.stdout).unwrap()["revision"].as_i64().unwrap();
    b.applied_by(&NODES, r4, Duration::from_secs(2));
    for n in NODES {
        let env = b.env_on(n);
        assert!(env.contains("CHAIN=global") && !env.contains("CHAIN=second"), "{n}: {env}");
    }

    // An apply based on a stale revision is refused, and changes nothing.
    let out = b.ctl(&["chain", "apply", "-f", second_yml.to_str().unwrap(), "--revision", &r3.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refused") && err.contains(&r4.to_string()), "{err}");
    let out = b.ctl(&["--json", "chain", "get", "--scope", "global"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0]["revision"].as_i64(), Some(r4));

    // An invalid document written straight into etcd: refused by every agent, which keep the
    // last good chain and say why in `chain status`.
    let key = format!("{}/chains/global", b.prefix);
    let bad = "endpoints:\n  \"POST /*/containers/create\":\n    pre: [missing]\nadapters: {}\n";
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", b.bed.etcd().unwrap(), "put", &key, bad])
        .output()
        .expect("etcdctl runs");
    assert!(put.status.success(), "etcdctl put: {}", String::from_utf8_lossy(&put.stderr));
    let refused = wait_until(Duration::from_secs(2), || {
        let s = b.status();
        NODES.iter().all(|n| s.get(*n).is_some_and(|v| v["error"].as_str().is_some_and(|e| e.contains("missing"))))
    });
    assert!(refused, "the agents did not report the invalid document: {:#?}", b.status());
    let text = String::from_utf8_lossy(&b.ctl(&["chain", "status"]).stdout).into_owned();
    assert!(text.contains("node3") && text.contains("missing"), "{text}");
    for n in NODES {
        assert!(b.env_on(n).contains("CHAIN=global"), "{n} lost its last good chain");
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
    assert!(env.contains("CHAIN=global") && env.contains("ZONE=a"), "{env}\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = &b.addrs;
}
