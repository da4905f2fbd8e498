//! Portable volumes end to end (issue #17, the volume half): three hosts with real engines,
//! agents following a chain in a real etcd, a gateway, `busbar-volumes` running on every host
//! (in its namespace, at the chain's loopback URL), and the real `docker` CLI.
//!
//! What a user checks: a portable volume exists once; its data follows the container from
//! node to node, checksum kept, no stale copy served; a volume in use elsewhere is refused
//! naming node and container, nothing moved; racing creates move it once; `volume ls`,
//! `inspect` and `rm` see the one copy; an unconstrained run lands where the volume is;
//! restarts of the adapters, an agent and the gateway lose no location; the source's agent
//! killed mid-move leaves the data whole where etcd says; an etcd outage refuses only the
//! creates that mount named volumes. `BUSBAR_VOLUMES_TEST_MIB` sets the size of the random data (default 4);
//! the test prints how long each move took.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::crosshost::{
    apply_chain, issue_adapter_certs, ok, start_tls_gateway, start_volumes, NODES,
};
use support::{make_certs, Process, TempDir};
use testbed::{docker, free_port, unique_name, wait_until, Testbed, TestbedSpec};

struct Bed {
    bed: Testbed,
    prefix: String,
    certs: TempDir,
    agents: Vec<Process>,
    addrs: Vec<String>,
    adapters: Vec<Process>,
    gateway: Process,
    tls_port: u16,
}

impl Bed {
    fn start() -> Bed {
        let bed = Testbed::start(TestbedSpec {
            hosts: 3,
            netns: true,
            etcd: true,
        })
        .unwrap();
        let prefix = format!("/{}", unique_name("bbvol"));
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        issue_adapter_certs(&bed, &certs.0);

        let mut agents = vec![];
        let mut addrs = vec![];
        for (i, host) in bed.hosts().iter().enumerate() {
            let args = ["--etcd", host.etcd_url().unwrap(), "--etcd-prefix", &prefix];
            let (p, addr) = Process::agent_in(host, NODES[i], &certs.0, &args);
            agents.push(p);
            addrs.push(addr);
        }
        let tls_port = free_port();
        let gateway = start_tls_gateway(&bed, &prefix, &certs.0, tls_port);
        let adapters = bed
            .hosts()
            .iter()
            .map(|h| start_volumes(h, &prefix, &certs.0, tls_port))
            .collect();
        let b = Bed {
            bed,
            prefix,
            certs,
            agents,
            addrs,
            adapters,
            gateway,
            tls_port,
        };
        let healthy = wait_until(Duration::from_secs(20), || {
            b.info().matches("Status: Healthy").count() == 3
        });
        assert!(healthy, "3 healthy nodes:\n{}", b.info());
        b.apply_chain();
        b
    }

    fn info(&self) -> String {
        let out = docker(&self.gateway.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// deploy/volumes.example.yml, as shipped, applied to the global scope; waits until every
    /// node runs it.
    fn apply_chain(&self) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/volumes.example.yml");
        apply_chain(self.bed.etcd().unwrap(), &self.prefix, &file);
    }

    /// The record of `name` in etcd (`null` when none).
    fn record(&self, name: &str) -> Value {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                self.bed.etcd().unwrap(),
                "get",
                "--print-value-only",
            ])
            .arg(format!("{}/volumes/{name}", self.prefix))
            .output()
            .expect("etcdctl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or(Value::Null)
    }

    /// The nodes whose engines have a volume `name`, asked directly (not through busbar).
    fn holders(&self, name: &str) -> Vec<&'static str> {
        self.bed
            .hosts()
            .iter()
            .zip(NODES)
            .filter(|(h, _)| {
                h.docker_ok(&["volume", "ls", "-q"])
                    .lines()
                    .any(|l| l.trim() == name)
            })
            .map(|(_, n)| n)
            .collect()
    }

    /// `docker ARGS` through the gateway.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        docker(&self.gateway.url, args)
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        ok(&out, &format!("docker {args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker run --rm -e constraint:node==NODE -v VOLUME:/data busybox sh -c SCRIPT`; its
    /// output and how long it took.
    fn run_on(&self, node: &str, volume: &str, script: &str) -> (String, Duration) {
        let t0 = Instant::now();
        let out = self.docker_ok(&[
            "run",
            "--rm",
            "-e",
            &format!("constraint:node=={node}"),
            "-v",
            &format!("{volume}:/data"),
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        (out.trim().to_owned(), t0.elapsed())
    }

    fn restart_adapters(&mut self) {
        for a in &mut self.adapters {
            a.terminate();
        }
        self.adapters = self
            .bed
            .hosts()
            .iter()
            .map(|h| start_volumes(h, &self.prefix, &self.certs.0, self.tls_port))
            .collect();
    }
}

#[test]
fn portable_volumes_follow_their_containers_across_hosts() {
    testbed::e2e!();
    let mut b = Bed::start();
    let mib: usize = std::env::var("BUSBAR_VOLUMES_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);

    // One copy in the cluster, recorded in etcd.
    b.docker_ok(&[
        "volume",
        "create",
        "--label",
        "busbar.portable=true",
        "data1",
    ]);
    let home = b.record("data1")["node"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        b.holders("data1"),
        [home.as_str()],
        "{:?}",
        b.record("data1")
    );

    // The issue's acceptance: written on node1, read on node2.
    b.run_on("node1", "data1", "echo hello > /data/f");
    assert_eq!(b.record("data1")["node"], "node1");
    let (out, _) = b.run_on("node2", "data1", "cat /data/f");
    assert_eq!(out, "hello");
    assert_eq!(b.holders("data1"), ["node2"], "the old copy is gone");
    assert_eq!(b.record("data1")["node"], "node2");

    // Unconstrained, a container that mounts it lands where it is (the gateway's scheduler):
    // no move.
    let moves = b.record("data1")["moves"].clone();
    let out = b.docker_ok(&[
        "run",
        "--name",
        "lander",
        "-v",
        "data1:/data",
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out.trim(), "hello");
    let landed = b.docker_ok(&["inspect", "-f", "{{.Node.Name}}", "lander"]);
    assert_eq!(landed.trim(), "node2");
    assert_eq!(b.record("data1")["moves"], moves);
    b.docker_ok(&["rm", "lander"]);

    // `volume ls` and `inspect` through the gateway: once, with its node.
    let ls = b.docker_ok(&["volume", "ls", "--format", "{{.Name}}"]);
    let shown: Vec<&str> = ls.lines().filter(|l| l.ends_with("data1")).collect();
    assert_eq!(shown, ["node2/data1"], "{ls}");
    let node = b.docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{index .Status \"busbar.node\"}}",
        "data1",
    ]);
    assert_eq!(node.trim(), "node2");

    // Random data over two moves (node1 -> node2 -> node3): the checksum holds, and what
    // node2 wrote is what node3 reads.
    b.docker_ok(&[
        "volume",
        "create",
        "--label",
        "busbar.portable=true",
        "node1/big",
    ]);
    assert_eq!(b.holders("big"), ["node1"]);
    let (sum1, _) = b.run_on(
        "node1",
        "big",
        &format!(
            "head -c {} /dev/urandom > /data/r && md5sum /data/r",
            mib << 20
        ),
    );
    let (sum2, to2) = b.run_on("node2", "big", "md5sum /data/r && echo second > /data/w");
    let (sum3, to3) = b.run_on("node3", "big", "md5sum /data/r && cat /data/w");
    assert_eq!(sum2, sum1);
    assert_eq!(sum3, format!("{sum1}\nsecond"));
    assert_eq!(b.holders("big"), ["node3"]);
    assert_eq!(b.record("big")["moves"], 2);
    eprintln!("volumes: {mib} MiB: docker run on node2 (the move included) took {to2:?}, on node3 {to3:?}");
    // The moves alone, as the adapters measured them.
    for a in &b.adapters {
        for line in a.log_text().lines() {
            if line.contains("volume moved for a container create") && line.contains("big") {
                let fields: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| {
                        ["from=", "to=", "bytes=", "took_ms="]
                            .iter()
                            .any(|k| w.contains(k))
                    })
                    .collect();
                eprintln!("volumes: moved big {}", fields.join(" "));
            }
        }
    }

    // In use on node2 by a running container: refused, naming both, nothing moved.
    b.docker_ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "-e",
        "constraint:node==node2",
        "-v",
        "data1:/data",
        "busybox",
        "sleep",
        "300",
    ]);
    let out = b.docker(&[
        "run",
        "--rm",
        "-e",
        "constraint:node==node3",
        "-v",
        "data1:/data",
        "busybox",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("in use by container holder (running) on node2")
            && err.contains("busbar-volumes"),
        "{err}"
    );
    assert_eq!(b.holders("data1"), ["node2"]);
    assert_eq!(b.record("data1")["node"], "node2");
    b.docker_ok(&["rm", "-f", "holder"]);

    // Two creates racing for data1 from node1 and node3: it moves once.
    let moves = b.record("data1")["moves"].as_u64().unwrap();
    let url = b.gateway.url.clone();
    let racers: Vec<_> = [("node1", "racer1"), ("node3", "racer3")]
        .into_iter()
        .map(|(node, name)| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = format!("constraint:node=={node}");
                docker(
                    &url,
                    &[
                        "create",
                        "--name",
                        name,
                        "-e",
                        &c,
                        "-v",
                        "data1:/data",
                        "busybox",
                        "true",
                    ],
                )
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "one create wins: {results:?}");
    let lost = results.iter().find(|o| !o.status.success()).unwrap();
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("in use by container racer"),
        "{lost:?}"
    );
    assert_eq!(b.record("data1")["moves"].as_u64().unwrap(), moves + 1);
    let at = b.record("data1")["node"].as_str().unwrap().to_owned();
    assert_eq!(b.holders("data1"), [at.as_str()]);
    for name in ["racer1", "racer3"] {
        let _ = b.docker(&["rm", "-f", name]);
    }

    // Restarts: the adapters, an agent and the gateway keep nothing the volume needs.
    b.restart_adapters();
    b.agents[1].terminate();
    let args = [
        "--etcd",
        b.bed.hosts()[1].etcd_url().unwrap(),
        "--etcd-prefix",
        &b.prefix,
    ];
    b.agents[1] = Process::agent_in_at(&b.bed.hosts()[1], "node2", &b.certs.0, &b.addrs[1], &args);
    b.gateway.terminate();
    b.gateway = start_tls_gateway(&b.bed, &b.prefix, &b.certs.0, b.tls_port);
    let healthy = wait_until(Duration::from_secs(20), || {
        b.info().matches("Status: Healthy").count() == 3
    });
    assert!(healthy, "after the restarts:\n{}", b.info());
    assert_eq!(b.record("data1")["node"].as_str(), Some(at.as_str()));
    let back = if at == "node2" { "node1" } else { "node2" };
    let (out, _) = b.run_on(back, "data1", "cat /data/f");
    assert_eq!(out, "hello", "moved by the restarted adapters");
    assert_eq!(b.holders("data1"), [back]);

    // An agent killed mid-move (the source's, while the archive streams): the data is
    // whole on one node afterwards, and etcd says which.
    let run = {
        let url = b.gateway.url.clone();
        std::thread::spawn(move || {
            docker(
                &url,
                &[
                    "run",
                    "--rm",
                    "-e",
                    "constraint:node==node1",
                    "-v",
                    "big:/data",
                    "busybox",
                    "md5sum",
                    "/data/r",
                ],
            )
        })
    };
    let moving = wait_until(Duration::from_secs(20), || {
        b.adapters[0]
            .log_text()
            .contains("moving volume=big from=node3 to=node1")
    });
    assert!(moving, "the move started:\n{}", b.adapters[0].log_tail());
    b.agents[2].kill();
    let out = run.join().unwrap();
    let at = b.record("big")["node"].as_str().unwrap().to_owned();
    eprintln!(
        "volumes: agent of node3 killed mid-move: the run {} ({}), etcd says {at}",
        if out.status.success() {
            "succeeded"
        } else {
            "failed"
        },
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if !out.status.success() {
        assert_eq!(at, "node3");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stays on node3"),
            "{out:?}"
        );
    }
    let host = &b.bed.hosts()[NODES.iter().position(|n| *n == at).unwrap()];
    let whole = host.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "big:/data",
        "busybox",
        "md5sum",
        "/data/r",
    ]);
    assert_eq!(
        whole.trim(),
        sum1,
        "the data is whole on {at}, where etcd says"
    );
    let args = [
        "--etcd",
        b.bed.hosts()[2].etcd_url().unwrap(),
        "--etcd-prefix",
        &b.prefix,
    ];
    b.agents[2] = Process::agent_in_at(&b.bed.hosts()[2], "node3", &b.certs.0, &b.addrs[2], &args);
    let healthy = wait_until(Duration::from_secs(20), || {
        b.info().matches("Status: Healthy").count() == 3
    });
    assert!(healthy, "node3's agent is back:\n{}", b.info());

    // etcd down: a create that mounts a named volume is refused (the adapter cannot tell a
    // portable volume from a local one), one without passes; back when etcd is.
    b.bed.stop_etcd().expect("stopping etcd");
    let out = b.docker(&["run", "--rm", "-v", "data1:/data", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("busbar-volumes: etcd"),
        "{out:?}"
    );
    b.docker_ok(&["run", "--rm", "busybox", "true"]);
    b.bed.start_etcd().expect("starting etcd");
    let t0 = Instant::now();
    let back = wait_until(Duration::from_secs(30), || {
        b.docker(&[
            "run",
            "--rm",
            "-v",
            "data1:/data",
            "busybox",
            "cat",
            "/data/f",
        ])
        .status
        .success()
    });
    assert!(
        back,
        "creates that mount data1 work again once etcd is back"
    );
    eprintln!(
        "volumes: etcd back: a create mounting data1 worked again after {:?}",
        t0.elapsed()
    );

    // `volume rm` removes it wherever it is, and its record.
    b.docker_ok(&["volume", "rm", "data1"]);
    assert!(b.holders("data1").is_empty());
    assert!(b.record("data1").is_null());
    b.docker_ok(&["volume", "rm", "big"]);
    assert!(b.holders("big").is_empty() && b.record("big").is_null());

    // So does `volume prune` (engines of API 1.41 prune every unused volume).
    b.docker_ok(&[
        "volume",
        "create",
        "--label",
        "busbar.portable=true",
        "pruned",
    ]);
    assert!(!b.record("pruned").is_null());
    b.docker_ok(&["volume", "prune", "-f"]);
    assert!(b.holders("pruned").is_empty() && b.record("pruned").is_null());
}
