//! The cluster network end to end (issue 17, its network half): three hosts with real engines,
//! etcd, three agents following the chain in etcd, a gateway, and `busbar-network` running on
//! every host beside its agent (declared once in the global chain by a loopback URL), driven by
//! the real `docker` CLI through the gateway:
//!
//! - labelled containers on node1 and node3 reach each other by address and by name (busybox
//!   `ping`, `wget`, `nslookup`), and `docker inspect` shows the cluster address on `busbar`;
//! - a burst of containers over the three nodes gets distinct addresses;
//! - a container removed and re-created with its name on another node keeps its address and is
//!   reachable there; removed containers free their addresses; unlabelled ones are untouched;
//! - an adapter restart, a gateway restart and an agent restart lose no address and no name;
//!   a dead adapter's addresses go after its lease TTL.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::crosshost::{start_network, wait_network, NETWORK_LEASE_TTL as LEASE_TTL, NODES};
use support::{busbarctl, make_certs, tls_args, Process, TempDir};
use testbed::{docker, unique_name, wait_until, Testbed, TestbedSpec};

struct Cluster {
    bed: Testbed,
    prefix: String,
    net_prefix: String,
    certs: TempDir,
    state: TempDir,
    agents: Vec<Process>,
    agent_addrs: Vec<String>,
    adapters: Vec<Option<Process>>,
    gateway: Option<Process>,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let bed = Testbed::start(TestbedSpec {
            hosts: 3,
            netns: true,
            etcd: true,
        })
        .unwrap();
        let prefix = format!("/{}", unique_name("bbnet"));
        let net_prefix = format!("{prefix}-net");
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let state = TempDir::new();
        let t0 = Instant::now();
        let mut c = Cluster {
            bed,
            prefix,
            net_prefix,
            certs,
            state,
            agents: vec![],
            agent_addrs: vec![],
            adapters: vec![None, None, None],
            gateway: None,
            url: String::new(),
        };
        for i in 0..3 {
            c.start_adapter(i);
        }
        for (i, node) in NODES.iter().enumerate() {
            let host = &c.bed.hosts()[i];
            let args = c.agent_args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (p, addr) = Process::agent_in(host, node, &c.certs.0, &args);
            c.agents.push(p);
            c.agent_addrs.push(addr);
        }
        let chain = c.state.join("network.yml");
        std::fs::write(
            &chain,
            "version: 1\n\
             endpoints:\n\
             \x20 \"POST /*/containers/create\":\n\
             \x20   pre: [network]\n\
             \x20   post: [network]\n\
             \x20 \"POST /*/containers/*/start\":\n\
             \x20   post: [network]\n\
             adapters:\n\
             \x20 network: http://127.0.0.1:7480/\n",
        )
        .unwrap();
        let out = busbarctl(&[
            "--etcd",
            c.bed.etcd().unwrap(),
            "--etcd-prefix",
            &c.prefix,
            "chain",
            "apply",
            "-f",
            chain.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "chain apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.start_gateway();
        let ok = wait_until(Duration::from_secs(30), || {
            let info = c.info();
            info.matches("Status: Healthy").count() == 3
                && info.matches("Chains: etcd rev").count() == 3
        });
        assert!(ok, "the cluster did not come up:\n{}", c.info());
        for i in 0..3 {
            c.wait_adapter(i);
        }
        eprintln!("FIGURE: cluster + overlay up in {:?}", t0.elapsed());
        c
    }

    fn agent_args(&self, i: usize) -> Vec<String> {
        let host = &self.bed.hosts()[i];
        let dir = self.state.join(NODES[i]).display().to_string();
        let etcd = host.etcd_url().unwrap();
        [
            "--etcd",
            etcd,
            "--etcd-prefix",
            &self.prefix,
            "--state-dir",
            &dir,
        ]
        .iter()
        .chain(&["--registration-ttl", "2"])
        .map(|s| s.to_string())
        .collect()
    }

    /// Kills node `i`'s agent and starts it again where the cluster knows it.
    fn restart_agent(&mut self, i: usize) {
        self.agents[i].kill();
        let args = self.agent_args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let host = &self.bed.hosts()[i];
        self.agents[i] =
            Process::agent_in_at(host, NODES[i], &self.certs.0, &self.agent_addrs[i], &args);
    }

    /// Starts (or starts again) the gateway.
    fn start_gateway(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.kill();
        }
        let mut args: Vec<String> = vec![
            "--etcd".into(),
            self.bed.etcd().unwrap().into(),
            "--etcd-prefix".into(),
            self.prefix.clone(),
            "--probe-interval".into(),
            "0.5".into(),
            "--probe-timeout".into(),
            "1".into(),
        ];
        args.extend(tls_args(&self.certs.0, "gateway"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        self.url = gateway.url.clone();
        self.gateway = Some(gateway);
    }

    /// Starts busbar-network in host `i`'s namespace, as its node's adapter.
    fn start_adapter(&mut self, i: usize) {
        let state = self.state.join(&format!("net-{}", NODES[i]));
        let p = start_network(&self.bed.hosts()[i], NODES[i], &self.net_prefix, &state);
        self.adapters[i] = Some(p);
    }

    /// Waits until adapter `i` serves its hooks.
    fn wait_adapter(&mut self, i: usize) {
        wait_network(self.adapters[i].as_mut().unwrap(), NODES[i]);
    }

    fn info(&self) -> String {
        let out = docker(&self.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    #[track_caller]
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = docker(&self.url, args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.adapter_logs()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn adapter_logs(&self) -> String {
        self.adapters
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Some(format!(
                    "--- busbar-network {} ---\n{}",
                    NODES[i],
                    p.as_ref()?.log_tail()
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `docker run -d` of a labelled (or not) busybox on `node`.
    fn run_on(&self, node: &str, name: &str, labelled: bool, cmd: &[&str]) -> String {
        let c = format!("constraint:node=={node}");
        let mut args = vec!["run", "-d", "--stop-timeout", "1", "--name", name, "-e", &c];
        if labelled {
            args.extend(["--label", "busbar.net=cluster"]);
        }
        args.push("busybox");
        args.extend(cmd);
        self.docker_ok(&args)
    }

    /// The container's cluster address, as `docker inspect` shows it on `busbar`.
    fn address(&self, name: &str) -> String {
        let doc: Value = serde_json::from_str(&self.docker_ok(&["inspect", name])).unwrap();
        let ip = doc[0]["NetworkSettings"]["Networks"]["busbar"]["IPAddress"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            doc[0]["Config"]["Labels"]["busbar.net.address"].as_str(),
            Some(ip.as_str()),
            "the label and the engine agree"
        );
        ip
    }

    /// `docker exec` through the gateway; success and output.
    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        let out = docker(&self.url, &args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Who holds `ip` in etcd (`null` when free).
    fn holder(&self, ip: &str) -> Option<Value> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                self.bed.etcd().unwrap(),
                "get",
                "--print-value-only",
            ])
            .arg(format!("{}/addrs/{ip}", self.net_prefix))
            .output()
            .expect("etcdctl runs");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        serde_json::from_str(&text).ok()
    }

    /// Polls `wget http://TARGET:8080/` from `from` until it shows `expect`; how long that
    /// took. On failure: what DNS and the overlay say.
    #[track_caller]
    fn fetch_within(&self, from: &str, target: &str, expect: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        let url = format!("http://{target}:8080/");
        let ok = wait_until(within, || {
            let (ok, out) = self.exec(from, &["timeout", "5", "wget", "-q", "-O", "-", &url]);
            ok && out.contains(expect)
        });
        if ok {
            return t0.elapsed();
        }
        let t = Instant::now();
        let ns = self.exec(from, &["nslookup", target]);
        let t_ns = t.elapsed();
        let t = Instant::now();
        let get = self.exec(from, &["timeout", "8", "wget", "-O", "-", &url]);
        let t_get = t.elapsed();
        let neigh = self.exec(from, &["ip", "neigh"]);
        panic!(
            "{from} cannot fetch {url} within {within:?}: nslookup ({t_ns:?}): {ns:?}\nwget ({t_get:?}): {get:?}\nip neigh: {neigh:?}\n{}\n{}",
            self.diagnose(),
            self.adapter_logs()
        );
    }

    /// The overlay as each host sees it, for a failure's message.
    fn diagnose(&self) -> String {
        let mut out = String::new();
        for (i, host) in self.bed.hosts().iter().enumerate() {
            for cmd in [
                "ip -d link show busbar-vx0",
                "bridge fdb show dev busbar-vx0",
                "ip addr show busbar0",
                "bridge link",
                "iptables -S FORWARD",
                "sysctl net.bridge.bridge-nf-call-iptables",
            ] {
                let args: Vec<&str> = cmd.split(' ').collect();
                let o = host.command_in(args[0]).args(&args[1..]).output();
                let text = o
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout).into_owned()
                            + &String::from_utf8_lossy(&o.stderr)
                    })
                    .unwrap_or_default();
                out.push_str(&format!("--- {} $ {cmd}\n{text}", NODES[i]));
            }
        }
        out
    }

    fn kill_adapter(&mut self, i: usize) {
        if let Some(mut p) = self.adapters[i].take() {
            p.kill();
        }
    }
}

/// Polls `f` until it is true, at most `within`; how long it took (panics with `what`).
#[track_caller]
fn within(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(wait_until(within, &mut f), "{what}: not within {within:?}");
    t0.elapsed()
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

#[test]
fn cluster_network_end_to_end() {
    testbed::e2e!();
    let t_all = Instant::now();
    let mut c = Cluster::start();

    // Two labelled containers, node1 and node3; a3 serves HTTP on 8080.
    c.run_on("node1", "net-a1", true, &["sleep", "600"]);
    c.run_on(
        "node3",
        "net-a3",
        true,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-a3 > /www/index.html && httpd -f -p 8080 -h /www",
        ],
    );
    let (ip1, ip3) = (c.address("net-a1"), c.address("net-a3"));
    assert!(is_ip(&ip1) && is_ip(&ip3) && ip1 != ip3, "{ip1} {ip3}");
    assert!(
        ip1.starts_with("10.232.") && ip3.starts_with("10.232."),
        "{ip1} {ip3}"
    );

    // By address, both ways.
    let t0 = Instant::now();
    let fetched = wait_until(Duration::from_secs(15), || {
        let url = format!("http://{ip3}:8080/");
        let (ok, out) = c.exec("net-a1", &["timeout", "5", "wget", "-q", "-O", "-", &url]);
        ok && out.contains("hello-from-a3")
    });
    if !fetched {
        let (_, ping) = c.exec("net-a1", &["ping", "-c", "1", "-W", "2", &ip3]);
        let (_, ip) = c.exec("net-a1", &["ip", "addr"]);
        let url = format!("http://{ip3}:8080/");
        let (_, ps) = c.exec("net-a1", &["wget", "-O", "-", &url]);
        let (_, local) = c.exec("net-a3", &["wget", "-O", "-", "http://127.0.0.1:8080/"]);
        let ps = format!("{ps}\nlocal: {local}");
        panic!(
            "net-a1 cannot fetch from net-a3 at {ip3}: ping: {ping}\nip addr: {ip}\nps on a3: {ps}\n{}",
            c.diagnose()
        );
    }
    let first = t0.elapsed();
    eprintln!(
        "FIGURE: first cross-host fetch by address after {:?} ({first:?} polling)",
        t0.elapsed()
    );
    let (ok, out) = c.exec("net-a3", &["ping", "-c", "1", "-W", "2", &ip1]);
    assert!(ok, "net-a3 pings net-a1 at {ip1}: {out}");

    // By name: DNS answers the other node's container, and HTTP by name works.
    let (ok, out) = c.exec("net-a1", &["nslookup", "net-a3"]);
    assert!(
        ok && out.contains(&ip3),
        "nslookup net-a3 from node1: {out}"
    );
    let (ok, out) = c.exec("net-a3", &["nslookup", "net-a1.busbar.local"]);
    assert!(
        ok && out.contains(&ip1),
        "nslookup net-a1.busbar.local from node3: {out}"
    );
    let (ok, out) = c.exec(
        "net-a1",
        &[
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            "http://net-a3:8080/",
        ],
    );
    assert!(ok && out.contains("hello-from-a3"), "wget by name: {out}");
    let (ok, out) = c.exec("net-a3", &["ping", "-c", "1", "-W", "2", "net-a1"]);
    assert!(ok, "ping by name: {out}");

    // Unlabelled: untouched (the default bridge, no cluster address, no cluster DNS).
    c.run_on("node2", "net-plain", false, &["sleep", "600"]);
    let doc: Value = serde_json::from_str(&c.docker_ok(&["inspect", "net-plain"])).unwrap();
    let nets = doc[0]["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(
        nets.contains_key("bridge") && !nets.contains_key("busbar"),
        "{nets:?}"
    );
    assert!(doc[0]["Config"]["Labels"]
        .get("busbar.net.address")
        .is_none());
    assert_eq!(
        doc[0]["HostConfig"]["Dns"],
        serde_json::json!([]),
        "untouched Dns"
    );

    // Docker's own allocation on `busbar` is confined to the gateway: an unlabelled container
    // cannot take a cluster address behind the pool's back.
    let out = docker(
        &c.url,
        &[
            "run",
            "--rm",
            "-e",
            "constraint:node==node2",
            "--network",
            "busbar",
            "busybox",
            "true",
        ],
    );
    assert!(
        !out.status.success(),
        "an unlabelled container got an address on busbar: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "NOTE: unlabelled --network busbar: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );

    // 28 more at once over the three nodes (30 in all): distinct addresses.
    let t0 = Instant::now();
    let burst: Vec<String> = (0..28).map(|i| format!("net-b{i}")).collect();
    std::thread::scope(|s| {
        for (i, name) in burst.iter().enumerate() {
            let c = &c;
            s.spawn(move || c.run_on(NODES[i % 3], name, true, &["sleep", "600"]));
        }
    });
    eprintln!(
        "FIGURE: {} labelled containers created concurrently over 3 nodes in {:?}",
        burst.len(),
        t0.elapsed()
    );
    let mut all: HashSet<String> = [ip1.clone(), ip3.clone()].into();
    for name in &burst {
        let ip = c.address(name);
        assert!(is_ip(&ip), "{name}: {ip}");
        assert!(all.insert(ip.clone()), "{ip} given twice");
    }
    assert_eq!(all.len(), burst.len() + 2);

    // Removed on node3, re-created with its name on node2: same address, reachable there.
    c.docker_ok(&["rm", "-f", "net-a3"]);
    let t0 = Instant::now();
    c.run_on(
        "node2",
        "net-a3",
        true,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-again > /www/index.html && httpd -f -p 8080 -h /www",
        ],
    );
    assert_eq!(
        c.address("net-a3"),
        ip3,
        "the name keeps its address on another node"
    );
    let moved = c.fetch_within("net-a1", "net-a3", "hello-again", Duration::from_secs(15));
    eprintln!(
        "FIGURE: moved container reachable by name {:?} after its create ({moved:?} polling)",
        t0.elapsed()
    );
    let holder = c.holder(&ip3).expect("held");
    assert_eq!(holder["node"], "node2");

    // Removal frees.
    let ip_b0 = c.address("net-b0");
    c.docker_ok(&["rm", "-f", "net-b0"]);
    within(
        Duration::from_secs(5),
        "the removed container's address is freed",
        || c.holder(&ip_b0).is_none(),
    );

    // An adapter restart loses nothing: addresses held, names answered.
    c.kill_adapter(0);
    c.start_adapter(0);
    c.wait_adapter(0);
    std::thread::sleep(Duration::from_secs(4)); // past the lease TTL of the killed run
    assert!(
        c.holder(&ip1).is_some_and(|h| h["node"] == "node1"),
        "net-a1 keeps its address"
    );
    let (ok, out) = c.exec("net-a3", &["nslookup", "net-a1"]);
    assert!(
        ok && out.contains(&ip1),
        "net-a1 still resolves after its adapter's restart: {out}"
    );
    c.fetch_within("net-a1", "net-a3", "hello-again", Duration::from_secs(10));

    // A gateway restart and an agent restart lose nothing either: the state is in etcd.
    c.start_gateway();
    c.restart_agent(0);
    within(
        Duration::from_secs(20),
        "the cluster is back after the restarts",
        || c.info().matches("Status: Healthy").count() == 3,
    );
    assert_eq!(
        c.address("net-a1"),
        ip1,
        "after the gateway's and node1's agent's restarts"
    );
    assert_eq!(c.address("net-a3"), ip3);
    c.run_on("node1", "net-a1b", true, &["sleep", "600"]);
    let ip_new = c.address("net-a1b");
    assert!(
        !all.contains(&ip_new),
        "a new container gets a free address: {ip_new}"
    );
    c.fetch_within("net-a1b", "net-a3", "hello-again", Duration::from_secs(10));

    // A dead adapter: its node's addresses go after the lease TTL.
    let ip_b1 = c.address("net-b1"); // on node2
    c.kill_adapter(1);
    let t0 = Instant::now();
    within(
        Duration::from_secs(15),
        "a dead adapter's address is freed",
        || c.holder(&ip_b1).is_none(),
    );
    eprintln!("FIGURE: a dead adapter's addresses freed {:?} after it was killed (lease TTL {LEASE_TTL} s)", t0.elapsed());

    eprintln!("FIGURE: network e2e took {:?}", t_all.elapsed());
}
