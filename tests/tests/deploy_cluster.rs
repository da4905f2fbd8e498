//! `deploy/cluster.md` followed on the test bed, step by step, as a new user would: three
//! bare hosts (network namespaces with their own dockerd), the page's certificate blocks run
//! as written (`openssl` for etcd, `busbarctl` for the cluster), etcd on host 1 with TLS and
//! client certificates from the page's `/etc/default/etcd`, an agent on every host
//! registering in etcd, a gateway on hosts 1 and 2 serving Docker clients over TLS
//! (`--tlsverify`), and HAProxy on host 3 run with the shipped `deploy/haproxy.cfg`. Only the
//! addresses and the directories (`/secure/...`, `/etc/...`) are replaced: the hosts share one
//! file system. It ends with
//! `docker run --rm busybox echo hello` through HAProxy while one gateway is stopped, and
//! again once it is back and the other one is stopped. Real etcd, engines, HAProxy and the
//! real `docker` CLI; nothing stands in for anything. Timings are printed, never asserted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{binary, Process, TempDir};
use testbed::{docker_command, output_with_timeout, wait_until, Host, Testbed, TestbedSpec};

/// The ports the page uses.
const ETCD_PORT: u16 = 2379;
const AGENT_PORT: u16 = 7443;
const DOCKER_TLS_PORT: u16 = 2376;

/// The fenced block of `page` whose first line starts with `first`, without its fences.
#[track_caller]
fn page_block(page: &str, first: &str) -> String {
    page.split("```")
        .map(|b| b.strip_prefix("sh\n").unwrap_or(b))
        .find(|b| b.starts_with(first))
        .unwrap_or_else(|| panic!("deploy/cluster.md has no block starting with {first}"))
        .trim()
        .to_owned()
}

/// Runs a shell script (as the page's blocks are run), failing with its output.
#[track_caller]
fn sh(script: &str) {
    let out = output_with_timeout(
        Command::new("bash").args(["-euo", "pipefail", "-c", script]),
        None,
        Duration::from_secs(60),
    )
    .expect("bash runs");
    ok(&out, script);
}

#[track_caller]
fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A docker CLI with alice's certificate, as the page's last step sets it up.
fn docker_via(addr: &str, certs: &Path, args: &[&str]) -> Output {
    let mut cmd = docker_command(&format!("tcp://{addr}"), args);
    cmd.env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs);
    output_with_timeout(&mut cmd, None, Duration::from_secs(60)).expect("docker runs")
}

/// `docker run --rm busybox echo hello` through `addr`, timed.
#[track_caller]
fn hello(addr: &str, certs: &Path, when: &str) -> Duration {
    let t = Instant::now();
    let out = docker_via(addr, certs, &["run", "--rm", "busybox", "echo", "hello"]);
    let took = t.elapsed();
    ok(&out, &format!("docker run through HAProxy {when}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello",
        "{when}"
    );
    eprintln!("timing: docker run --rm busybox echo hello {when}: {took:?}");
    took
}

fn addr(host: &Host) -> String {
    host.addr()
        .expect("namespaced hosts have an address")
        .to_string()
}

/// The etcd flags every busbar process gets (page, step 4).
fn etcd_flags(etcd_url: &str, etcd_pki: &Path) -> Vec<String> {
    let f = |n: &str| etcd_pki.join(n).display().to_string();
    vec![
        "--etcd".into(),
        etcd_url.into(),
        "--etcd-ca".into(),
        f("ca.pem"),
        "--etcd-cert".into(),
        f("client.pem"),
        "--etcd-key".into(),
        f("client-key.pem"),
    ]
}

/// A gateway on `host` (page, step 5): etcd for the nodes, the hop's mutual TLS, and Docker
/// clients over TLS on the host's address.
fn start_gateway(host: &Host, name: &str, pki: &Path, etcd: &[String], state: &Path) -> Process {
    let f = |n: String| pki.join(n).display().to_string();
    let listen = format!("{}:{DOCKER_TLS_PORT}", addr(host));
    let mut cmd = host.command_in(binary("busbar-gateway"));
    cmd.args(etcd)
        .args(["--tls-ca", &f("ca.pem".into())])
        .args(["--tls-cert", &f(format!("{name}.pem"))])
        .args(["--tls-key", &f(format!("{name}-key.pem"))])
        .args(["--tls-listen", &listen, "--tlsverify"])
        .args(["--tlscacert", &f("ca.pem".into())])
        .args(["--tlscert", &f(format!("{name}.pem"))])
        .args(["--tlskey", &f(format!("{name}-key.pem"))])
        .env("BUSBAR_STATE_DIR", state);
    let p = Process::start_cmd(cmd);
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    assert!(
        up,
        "gateway {name} did not listen on {listen}:\n{}",
        p.log_tail()
    );
    p
}

#[test]
fn the_cluster_page_from_bare_hosts_to_two_gateways_behind_haproxy() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let hosts = bed.hosts();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    eprintln!(
        "timing: three bare hosts (engines, busybox imported): {:?}",
        t0.elapsed()
    );
    let dir = TempDir::new();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let page = std::fs::read_to_string(deploy.join("cluster.md")).expect("deploy/cluster.md");
    let t = Instant::now();

    // Step 2, the page's own blocks run as written, with the bed's addresses and private
    // directories for /secure/...: etcd's CA, its server certificate and busbar's client
    // certificate (openssl); the cluster CA and every busbar certificate (busbarctl).
    let etcd_pki = dir.join("etcd-pki");
    let pki = dir.join("pki");
    let on_bed = |block: String| {
        block
            .replace("/secure/etcd-pki", &etcd_pki.display().to_string())
            .replace("/secure/busbar-pki", &pki.display().to_string())
            .replace("10.0.0.1", &addr(h1))
            .replace("10.0.0.2", &addr(h2))
            .replace("10.0.0.3", &addr(h3))
    };
    sh(&on_bed(page_block(&page, "mkdir -p /secure/etcd-pki")));
    let busbarctl_dir = binary("busbarctl").parent().unwrap().display().to_string();
    sh(&format!(
        "PATH={busbarctl_dir}:$PATH\n{}",
        on_bed(page_block(&page, "P=/secure/busbar-pki"))
    ));
    let p = pki.to_str().unwrap();
    let alice = dir.join("alice-docker");
    sh(&format!(
        "install -d -m 0700 {a} && cp {p}/ca.pem {a}/ca.pem && cp {p}/alice.pem {a}/cert.pem && cp {p}/alice-key.pem {a}/key.pem",
        a = alice.display()
    ));
    eprintln!(
        "timing: certificates (etcd's with openssl, the cluster's with busbarctl): {:?}",
        t.elapsed()
    );

    // Step 3: etcd on host 1, TLS and client certificates.
    let t = Instant::now();
    let etcd_url = format!("https://{}:{ETCD_PORT}", addr(h1));
    let e = |n: &str| etcd_pki.join(n).display().to_string();
    // As Debian's etcd.service runs it: its name and data directory from the unit, the rest
    // from the page's /etc/default/etcd, read from the page (addresses and paths replaced).
    let mut etcd_cmd = h1.command_in("etcd");
    etcd_cmd
        .env("ETCD_NAME", "host1")
        .env("ETCD_DATA_DIR", dir.join("etcd-data"));
    let defaults = page_block(&page, "ETCD_LISTEN_CLIENT_URLS");
    let mut settings = 0;
    for line in defaults.lines() {
        let (key, value) = line.split_once('=').expect("KEY=VALUE lines");
        let value = value
            .replace("10.0.0.1", &addr(h1))
            .replace("/etc/etcd/pki/", &format!("{}/", etcd_pki.display()));
        etcd_cmd.env(key, value);
        settings += 1;
    }
    assert_eq!(
        settings, 6,
        "the page's /etc/default/etcd changed:\n{defaults}"
    );
    let etcd = Process::start_cmd(etcd_cmd);
    let healthy = wait_until(Duration::from_secs(30), || {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd_url, "--cacert", &e("ca.pem")])
            .args(["--cert", &e("client.pem"), "--key", &e("client-key.pem")])
            .args(["endpoint", "health"]);
        output_with_timeout(&mut c, None, Duration::from_secs(10)).is_ok_and(|o| o.status.success())
    });
    assert!(healthy, "etcd did not become healthy:\n{}", etcd.log_tail());
    eprintln!("timing: etcd up: {:?}", t.elapsed());
    let etcd_flags = etcd_flags(&etcd_url, &etcd_pki);

    // Step 4: an agent on every host, registering in etcd.
    let t = Instant::now();
    let mut agents = vec![];
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("node{}", i + 1);
        let grpc = format!("{}:{AGENT_PORT}", addr(h));
        let f = |n: String| pki.join(n).display().to_string();
        let mut cmd = h.command_in(binary("busbar-agent"));
        cmd.args(["--docker", &h.docker_url(), "--grpc-listen", &grpc])
            .args(["--tls-ca", &f("ca.pem".into())])
            .args(["--tls-cert", &f(format!("{name}.pem"))])
            .args(["--tls-key", &f(format!("{name}-key.pem"))])
            .args(&etcd_flags)
            // One file system for the three "hosts": each agent its own state directory.
            .env("BUSBAR_STATE_DIR", dir.join(&name));
        let agent = Process::start_cmd(cmd);
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(&grpc).is_ok()
        });
        assert!(
            up,
            "agent {name} did not listen on {grpc}:\n{}",
            agent.log_tail()
        );
        agents.push(agent);
    }
    let mut nodes = Command::new(binary("busbarctl"));
    nodes.args(&etcd_flags).arg("nodes");
    let registered = wait_until(Duration::from_secs(20), || {
        output_with_timeout(&mut nodes, None, Duration::from_secs(10)).is_ok_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            o.status.success() && ["node1", "node2", "node3"].iter().all(|n| s.contains(n))
        })
    });
    assert!(registered, "the agents did not all register in etcd");
    eprintln!("timing: three agents up and registered: {:?}", t.elapsed());

    // Step 5: two gateways, each checked directly.
    let t = Instant::now();
    let mut gw1 = start_gateway(h1, "gw1", &pki, &etcd_flags, &dir.join("gw1"));
    let gw2 = start_gateway(h2, "gw2", &pki, &etcd_flags, &dir.join("gw2"));
    for h in [h1, h2] {
        let direct = format!("{}:{DOCKER_TLS_PORT}", addr(h));
        let three = wait_until(Duration::from_secs(20), || {
            let info = docker_via(&direct, &alice, &["info"]);
            info.status.success() && String::from_utf8_lossy(&info.stdout).contains("Nodes: 3")
        });
        assert!(three, "the gateway at {direct} does not serve three nodes");
    }
    eprintln!(
        "timing: two gateways serving three nodes: {:?}",
        t.elapsed()
    );

    // Step 6: HAProxy on host 3, with the shipped configuration.
    let t = Instant::now();
    let shipped =
        std::fs::read_to_string(deploy.join("haproxy.cfg")).expect("deploy/haproxy.cfg is shipped");
    let hap = dir.join("haproxy");
    std::fs::create_dir_all(&hap).unwrap();
    sh(&format!(
        "cd {p} && cat haproxy.pem haproxy-key.pem > {h}/busbar-client.pem && chmod 600 {h}/busbar-client.pem && cp ca.pem {h}/busbar-ca.pem",
        h = hap.display()
    ));
    let cfg = shipped
        .replace("10.0.0.3:", &format!("{}:", addr(h3)))
        .replace("10.0.0.1:", &format!("{}:", addr(h1)))
        .replace("10.0.0.2:", &format!("{}:", addr(h2)))
        .replace("/etc/haproxy/", &format!("{}/", hap.display()));
    assert_ne!(cfg, shipped);
    let cfg_file: PathBuf = hap.join("haproxy.cfg");
    std::fs::write(&cfg_file, &cfg).unwrap();
    let mut check = Command::new("haproxy");
    check.arg("-c").arg("-f").arg(&cfg_file);
    let out = output_with_timeout(&mut check, None, Duration::from_secs(20)).expect("haproxy runs");
    ok(&out, "haproxy -c");
    let mut run = h3.command_in("haproxy");
    run.arg("-db").arg("-f").arg(&cfg_file);
    let haproxy = Process::start_cmd(run);
    let lb = format!("{}:{DOCKER_TLS_PORT}", addr(h3));
    let up = wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(&lb).is_ok()
    });
    assert!(
        up,
        "HAProxy did not listen on {lb}:\n{}",
        haproxy.log_tail()
    );
    eprintln!("timing: HAProxy up: {:?}", t.elapsed());
    eprintln!(
        "timing: from bare hosts to the cluster behind HAProxy: {:?}",
        t0.elapsed()
    );

    // Step 7: through HAProxy, with both gateways, with one stopped, and once it is back.
    hello(&lb, &alice, "with both gateways");
    let t = Instant::now();
    gw1.terminate();
    hello(&lb, &alice, "right after gw1 stopped");
    let down = wait_until(Duration::from_secs(15), || {
        haproxy.log_text().contains("gw1 is DOWN")
    });
    assert!(
        down,
        "HAProxy's checks did not mark gw1 down:\n{}",
        haproxy.log_tail()
    );
    eprintln!(
        "timing: HAProxy marked gw1 down {:?} after it stopped",
        t.elapsed()
    );
    for i in 0..3 {
        hello(&lb, &alice, &format!("with gw1 stopped (#{})", i + 1));
    }

    let t = Instant::now();
    gw1 = start_gateway(h1, "gw1", &pki, &etcd_flags, &dir.join("gw1"));
    let back = wait_until(Duration::from_secs(15), || {
        haproxy.log_text().contains("gw1 is UP")
    });
    assert!(
        back,
        "HAProxy's checks did not mark gw1 up again:\n{}",
        haproxy.log_tail()
    );
    eprintln!(
        "timing: HAProxy marked gw1 up {:?} after it restarted",
        t.elapsed()
    );
    // gw1 alone now: gw2 stopped, so every connection goes to the gateway that came back.
    let mut gw2 = gw2;
    gw2.terminate();
    let down = wait_until(Duration::from_secs(15), || {
        haproxy.log_text().contains("gw2 is DOWN")
    });
    assert!(
        down,
        "HAProxy did not mark gw2 down:\n{}",
        haproxy.log_tail()
    );
    hello(&lb, &alice, "with gw1 back and gw2 stopped");
    let log = haproxy.log_text();
    assert!(
        log.contains("gw1 is UP, reason: Layer7 check passed"),
        "the health check is not the page's (TLS with the check's certificate, then /_ping):\n{log}"
    );
    drop((gw1, agents, etcd, haproxy));
}
