//! Both cross-host adapters in one chain, end to end (issue #17, composition): three hosts
//! with real engines, etcd, three agents following the global chain in etcd, a gateway, and
//! on every host `busbar-network` and `busbar-volumes` beside the agent, both declared once in
//! `deploy/both-chain.yml` by loopback URLs (volumes first as shipped); driven by the real
//! `docker` CLI through the gateway. One cluster, the chain applied in one order and then in
//! the other:
//!
//! - a labelled (`busbar.net=cluster`) container on node1 that mounts a portable volume
//!   writes a file, and has a cluster address;
//! - a labelled container on node2 that mounts the same volume (`--mount`) reads the file (the
//!   data moved: only node2's engine has the volume now), shows its cluster address on
//!   `busbar`, its mount, the node's DNS server and the user's own label in `docker inspect`
//!   (neither adapter dropped the other's fields, nor the user's), reaches a labelled
//!   container on node1 by address and by name, and is reached by name from there (which
//!   serves the moved file across hosts);
//! - a create on node3 that mounts the volume while node2 uses it is refused naming node2 and
//!   the container, whichever adapter runs first;
//! - a labelled run on node3 afterwards gets the volume (moved again) and reaches node1 by
//!   name;
//! - then deploy/cross-host.md's walkthrough ("Both in one chain"), its commands as written,
//!   each showing what its comment says.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::crosshost::{
    apply_chain, issue_adapter_certs, ok, start_network, start_tls_gateway, start_volumes,
    volumes_on, wait_network, NODES,
};
use support::{make_certs, Process, TempDir};
use testbed::{docker, free_port, unique_name, wait_until, Testbed, TestbedSpec};

struct Cluster {
    bed: Testbed,
    prefix: String,
    state: TempDir,
    _agents: Vec<Process>,
    networks: Vec<Process>,
    volumes: Vec<Process>,
    gateway: Process,
}

impl Cluster {
    fn start() -> Cluster {
        let bed = Testbed::start(TestbedSpec {
            hosts: 3,
            netns: true,
            etcd: true,
        })
        .unwrap();
        let prefix = format!("/{}", unique_name("bbboth"));
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        issue_adapter_certs(&bed, &certs.0);
        let state = TempDir::new();
        let net_prefix = format!("{prefix}-net");
        let mut networks: Vec<Process> = bed
            .hosts()
            .iter()
            .zip(NODES)
            .map(|(h, n)| start_network(h, n, &net_prefix, &state.join(&format!("net-{n}"))))
            .collect();
        let agents = bed
            .hosts()
            .iter()
            .zip(NODES)
            .map(|(h, n)| {
                let args = ["--etcd", h.etcd_url().unwrap(), "--etcd-prefix", &prefix];
                Process::agent_in(h, n, &certs.0, &args).0
            })
            .collect();
        let tls_port = free_port();
        let gateway = start_tls_gateway(&bed, &prefix, &certs.0, tls_port);
        let volumes = bed
            .hosts()
            .iter()
            .map(|h| start_volumes(h, &prefix, &certs.0, tls_port))
            .collect();
        for (p, n) in networks.iter_mut().zip(NODES) {
            wait_network(p, n);
        }
        let c = Cluster {
            bed,
            prefix,
            state,
            _agents: agents,
            networks,
            volumes,
            gateway,
        };
        let healthy = wait_until(Duration::from_secs(30), || {
            c.info().matches("Status: Healthy").count() == 3
        });
        assert!(healthy, "3 healthy nodes:\n{}", c.info());
        c
    }

    fn info(&self) -> String {
        let out = docker(&self.gateway.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The chain with both adapters: `deploy/both-chain.yml` as shipped (volumes first) or
    /// with the two swapped in every list, applied to the global scope.
    fn apply(&self, volumes_first: bool) {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/both-chain.yml");
        let text = std::fs::read_to_string(&shipped).unwrap();
        assert!(text.contains("[volumes, network]"), "{text}");
        let file = if volumes_first {
            shipped
        } else {
            let f = self.state.join("network-first.yml");
            std::fs::write(&f, text.replace("[volumes, network]", "[network, volumes]")).unwrap();
            f
        };
        apply_chain(self.bed.etcd().unwrap(), &self.prefix, &file);
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        docker(&self.gateway.url, args)
    }

    #[track_caller]
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        ok(&out, &format!("docker {args:?}\n{}", self.adapter_logs()));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn adapter_logs(&self) -> String {
        let mut s = String::new();
        for (i, n) in NODES.iter().enumerate() {
            s += &format!(
                "--- busbar-network {n} ---\n{}\n",
                self.networks[i].log_tail()
            );
            s += &format!(
                "--- busbar-volumes {n} ---\n{}\n",
                self.volumes[i].log_tail()
            );
        }
        s
    }

    /// `docker run -d` of a labelled busybox named `name` on `node`, with `extra` options.
    fn run_on(&self, node: &str, name: &str, extra: &[&str], cmd: &[&str]) {
        let c = format!("constraint:node=={node}");
        let mut args = vec!["run", "-d", "--stop-timeout", "1", "--name", name, "-e", &c];
        args.extend(["--label", "busbar.net=cluster"]);
        args.extend(extra);
        args.push("busybox");
        args.extend(cmd);
        self.docker_ok(&args);
    }

    fn inspect(&self, name: &str) -> Value {
        let doc: Value = serde_json::from_str(&self.docker_ok(&["inspect", name])).unwrap();
        doc[0].clone()
    }

    /// `docker exec NAME CMD` through the gateway: success and output.
    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        let out = self.docker(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Polls `wget URL` from `from` until it shows `expect` (within 20 s); how long it took.
    #[track_caller]
    fn fetch(&self, from: &str, url: &str, expect: &str) -> Duration {
        let t0 = Instant::now();
        let mut last = (false, String::new());
        let got = wait_until(Duration::from_secs(20), || {
            last = self.exec(from, &["timeout", "5", "wget", "-q", "-O", "-", url]);
            last.0 && last.1.contains(expect)
        });
        assert!(
            got,
            "{from} fetches {url}: {last:?}\n{}",
            self.adapter_logs()
        );
        t0.elapsed()
    }

    /// The nodes whose own engines (asked directly) have the volume `name`.
    fn holders(&self, name: &str) -> Vec<&'static str> {
        self.bed
            .hosts()
            .iter()
            .zip(NODES)
            .filter(|(h, _)| volumes_on(h).iter().any(|v| v == name))
            .map(|(_, n)| n)
            .collect()
    }
}

/// The volume scenario and the network scenario together, with the chain `order`.
fn scenario(c: &Cluster, tag: &str, order: &str) {
    let vol = format!("both-{tag}");
    let (peer, reader) = (format!("peer-{tag}"), format!("reader-{tag}"));
    let hello = format!("hello-{tag}");
    c.docker_ok(&["volume", "create", "--label", "busbar.portable=true", &vol]);

    // node1: a labelled container mounting the volume writes the file; it has its address.
    let out = c.docker_ok(&[
        "run",
        "--rm",
        "--label",
        "busbar.net=cluster",
        "-e",
        "constraint:node==node1",
        "-v",
        &format!("{vol}:/data"),
        "busybox",
        "sh",
        "-c",
        &format!("echo {hello} > /data/f && ip -4 addr"),
    ]);
    assert!(
        out.contains("inet 10.232."),
        "{order}: the writer's address: {out}"
    );
    assert_eq!(c.holders(&vol), ["node1"], "{order}");

    // node1: a labelled container serving a page on 8080.
    c.run_on(
        "node1",
        &peer,
        &[],
        &[
            "sh",
            "-c",
            &format!("mkdir -p /www && echo {peer} > /www/index.html && httpd -f -p 8080 -h /www"),
        ],
    );
    // node2: labelled, the same volume by --mount, serving it on 8080.
    let t0 = Instant::now();
    c.run_on(
        "node2",
        &reader,
        &[
            "--mount",
            &format!("source={vol},target=/data"),
            "--label",
            "team=blue",
        ],
        &["httpd", "-f", "-p", "8080", "-h", "/data"],
    );
    let t_move = t0.elapsed();
    assert_eq!(c.holders(&vol), ["node2"], "{order}: the data moved");
    let (done, f) = c.exec(&reader, &["cat", "/data/f"]);
    assert!(done && f.trim() == hello, "{order}: {reader} reads {f:?}");

    // What docker inspect shows: each adapter's fields, both kept.
    let doc = c.inspect(&reader);
    let ip = doc["NetworkSettings"]["Networks"]["busbar"]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(ip.starts_with("10.232."), "{order}: {doc}");
    assert_eq!(doc["Config"]["Labels"]["busbar.net.address"], ip.as_str());
    assert_eq!(doc["HostConfig"]["NetworkMode"], "busbar", "{order}");
    assert_eq!(
        doc["Config"]["Labels"]["team"], "blue",
        "{order}: the user's label"
    );
    let dns = doc["HostConfig"]["Dns"][0].as_str().unwrap_or("");
    assert!(
        dns.starts_with("10.232.0."),
        "{order}: the node's DNS: {doc}"
    );
    let mount = &doc["Mounts"][0];
    assert!(
        mount["Type"] == "volume"
            && mount["Name"] == vol.as_str()
            && mount["Destination"] == "/data",
        "{order}: the mount: {doc}"
    );
    let peer_ip = c.inspect(&peer)["NetworkSettings"]["Networks"]["busbar"]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        peer_ip.starts_with("10.232.") && peer_ip != ip,
        "{order}: {peer_ip} {ip}"
    );

    // Across hosts, by address and by name, both ways; node1 reads the moved file over HTTP.
    let t_addr = c.fetch(&reader, &format!("http://{peer_ip}:8080/"), &peer);
    c.fetch(&reader, &format!("http://{peer}:8080/"), &peer);
    c.fetch(&peer, &format!("http://{reader}:8080/f"), &hello);

    // The volume adapter's refusal reaches the client in either order; nothing moves.
    let out = c.docker(&[
        "run",
        "--rm",
        "--label",
        "busbar.net=cluster",
        "-e",
        "constraint:node==node3",
        "-v",
        &format!("{vol}:/data"),
        "busybox",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node2") && err.contains(&reader),
        "{order}: {out:?}"
    );
    assert_eq!(c.holders(&vol), ["node2"], "{order}: nothing moved");

    // node3, once node2 lets go: the data moves again, and node1 is reachable by name.
    c.docker_ok(&["rm", "-f", &reader]);
    let out = c.docker_ok(&[
        "run",
        "--rm",
        "--label",
        "busbar.net=cluster",
        "-e",
        "constraint:node==node3",
        "-v",
        &format!("{vol}:/data"),
        "busybox",
        "sh",
        "-c",
        &format!(
            "cat /data/f; for i in 1 2 3 4 5 6 7 8 9 10; do timeout 5 wget -q -O - http://{peer}:8080/ 2>/tmp/err && exit; sleep 1; done; cat /tmp/err /etc/resolv.conf; nslookup {peer}; ip addr; ip route"
        ),
    ]);
    assert_eq!(out, format!("{hello}\n{peer}"), "{order}: node3's run");
    assert_eq!(c.holders(&vol), ["node3"], "{order}");

    c.docker_ok(&["rm", "-f", &peer]);
    c.docker_ok(&["volume", "rm", &vol]);
    assert!(c.holders(&vol).is_empty(), "{order}: volume rm");
    eprintln!(
        "FIGURE: {order}: node1 -> node2 create with the move {t_move:?}; first cross-host fetch by address {t_addr:?}"
    );
}

/// The commands of deploy/cross-host.md's "Both in one chain" walkthrough, as written (`sh -c`,
/// `DOCKER_HOST` at the gateway). A command with a comment prints what the comment says (each
/// of its comma-separated parts; an explanation in parentheses aside), or fails saying what
/// follows `fails:`; one commented `e.g.` only succeeds. Others must succeed. A `docker exec`
/// is tried again for up to 10 s, as a user would.
fn walkthrough(c: &Cluster) {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cross-host.md");
    let doc = std::fs::read_to_string(doc).unwrap();
    let section = &doc[doc.find("## Both in one chain").expect("the section")..];
    let block = &section[section
        .find("**What the user sees**")
        .expect("the walkthrough")..];
    let block = &block[..block.find("tests/tests/composed.rs").unwrap_or(block.len())];
    let mut cmds: Vec<(String, String)> = vec![];
    let mut cur = String::new();
    for line in block.lines() {
        let Some(l) = line.strip_prefix("    ") else {
            continue;
        };
        if let Some(comment) = l.trim_start().strip_prefix("# ") {
            cmds.last_mut().expect("a command before").1 = comment.to_owned();
            continue;
        }
        cur.push_str(l.trim_start());
        if cur.ends_with('\\') {
            cur.pop();
            continue;
        }
        let (cmd, comment) = match cur.split_once("   # ") {
            Some((cmd, comment)) => (cmd.trim().to_owned(), comment.trim().to_owned()),
            None => (cur.trim().to_owned(), String::new()),
        };
        cmds.push((cmd, comment));
        cur.clear();
    }
    assert!(cmds.len() >= 10, "the walkthrough's commands: {cmds:?}");
    for (cmd, comment) in &cmds {
        let run = || {
            let out = Command::new("timeout")
                .args(["120", "sh", "-c", cmd])
                .env("DOCKER_HOST", &c.gateway.url)
                .env("DOCKER_CLI_HINTS", "false")
                .env_remove("DOCKER_CONTEXT")
                .output()
                .expect("sh runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let mut last = (false, String::new());
        let shown = if let Some(err) = comment.strip_prefix("fails: ") {
            last = run();
            !last.0 && last.1.contains(err)
        } else if comment.starts_with("e.g. ") {
            last = run();
            last.0
        } else {
            let expect = comment.split(" (").next().unwrap_or("");
            let check = |(ok, text): &(bool, String)| {
                *ok && expect
                    .split(", ")
                    .filter(|p| !p.is_empty())
                    .all(|p| text.contains(p))
            };
            let tries = if cmd.starts_with("docker exec") {
                10
            } else {
                1
            };
            (0..tries).any(|i| {
                if i > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                last = run();
                check(&last)
            })
        };
        assert!(
            shown,
            "deploy/cross-host.md: `{cmd}` should show {comment:?}: {last:?}\n{}",
            c.adapter_logs()
        );
    }
    eprintln!("walkthrough: {} commands as written", cmds.len());
}

#[test]
fn both_adapters_in_one_chain_in_either_order() {
    testbed::e2e!();
    let t0 = Instant::now();
    let c = Cluster::start();
    eprintln!(
        "FIGURE: cluster with both adapters up in {:?}",
        t0.elapsed()
    );
    for (volumes_first, tag, order) in [
        (false, "nv", "[network, volumes]"),
        (true, "vn", "[volumes, network]"),
    ] {
        let t = Instant::now();
        c.apply(volumes_first);
        scenario(&c, tag, order);
        eprintln!("FIGURE: {order}: scenario in {:?}", t.elapsed());
    }
    // The chain is the shipped one now: the walkthrough as a user types it.
    let t = Instant::now();
    walkthrough(&c);
    eprintln!(
        "FIGURE: deploy/cross-host.md walkthrough in {:?}",
        t.elapsed()
    );
    eprintln!("FIGURE: whole test {:?}", t0.elapsed());
}
