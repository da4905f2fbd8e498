//! The fault table (docs/faults.md), produced by running each fault for real: three hosts
//! (network namespaces) with real engines, an agent on each registered in a real etcd, two
//! gateways that find them there with the default probe settings (every 3 s, 3 s timeout),
//! the real `docker` CLI as the client. Each fault is applied, its detection timed (until
//! `docker info` no longer shows the node healthy), what a client sees recorded, the fault
//! repaired, the recovery timed (until the node is healthy and serves a call again), and what
//! was lost counted on the engines themselves (containers gone or duplicated: 0 expected).
//!
//! Each row is printed as a Markdown table row (`cargo test --test faults -- --nocapture`) and
//! written to `target/tmp/fault-table.md`; docs/faults.md holds the table of a run. The bounds
//! asserted are behaviour (detected within twice the documented time, nothing lost), never
//! speed.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::adapters::{Answer, FakeAdapter};
use support::{binary, make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

struct Bed {
    bed: Testbed,
    certs: TempDir,
    agents: Vec<Process>,
    addrs: Vec<String>,
    gateways: Vec<Process>,
    rows: Vec<String>,
}

impl Bed {
    fn start() -> Bed {
        let bed = Testbed::start(TestbedSpec {
            hosts: 3,
            netns: true,
            etcd: true,
        })
        .unwrap();
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let mut b = Bed {
            bed,
            certs,
            agents: vec![],
            addrs: vec![],
            gateways: vec![],
            rows: vec![],
        };
        for (i, node) in NODES.iter().enumerate() {
            let (agent, addr) =
                Process::agent_in(&b.bed.hosts()[i], node, &b.certs.0, &b.agent_args_ref(i));
            b.agents.push(agent);
            b.addrs.push(addr);
        }
        for _ in 0..2 {
            let g = b.start_gateway();
            b.gateways.push(g);
        }
        b
    }

    fn agent_args(&self, i: usize) -> Vec<String> {
        let host = &self.bed.hosts()[i];
        let state = self.certs.join(&format!("state-{}", NODES[i]));
        vec![
            "--etcd".into(),
            host.etcd_url().unwrap().to_owned(),
            "--registration-ttl".into(),
            "2".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    }

    fn agent_args_ref(&self, i: usize) -> Vec<&str> {
        // Leaked: a few short strings per restart in a test process.
        self.agent_args(i)
            .into_iter()
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect()
    }

    fn restart_agent(&mut self, i: usize) {
        let args = self.agent_args_ref(i);
        self.agents[i] = Process::agent_in_at(
            &self.bed.hosts()[i],
            NODES[i],
            &self.certs.0,
            &self.addrs[i],
            &args,
        );
    }

    fn start_gateway(&self) -> Process {
        let mut args: Vec<String> = vec!["--etcd".into(), self.bed.etcd().unwrap().to_owned()];
        args.extend(tls_args(&self.certs.0, "gateway"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let g = Process::gateway(&args);
        let ok = wait_until(Duration::from_secs(30), || healthy(&g.url) == 3);
        assert!(ok, "not every node became healthy:\n{}", info(&g.url));
        g
    }

    fn url(&self) -> &str {
        &self.gateways[1].url
    }

    /// Every container id on every engine, asked of the engines themselves.
    fn containers(&self) -> Vec<String> {
        let mut all = vec![];
        for host in self.bed.hosts() {
            let out = host.docker_ok(&["ps", "-aq", "--no-trunc"]);
            all.extend(out.lines().map(str::to_owned));
        }
        all.sort();
        all
    }

    /// Containers of `before` missing now, plus ids listed twice.
    fn lost(&self, before: &[String]) -> usize {
        let now = self.containers();
        let set: BTreeSet<&String> = now.iter().collect();
        let missing = before.iter().filter(|id| !set.contains(id)).count();
        missing + (now.len() - set.len())
    }

    fn row(&mut self, fault: &str, detection: &str, saw: &str, recovery: &str, lost: usize) {
        let row = format!("| {fault} | {detection} | {saw} | {recovery} | {lost} |");
        eprintln!("{row}");
        self.rows.push(row);
    }

    /// Times until node `i` is no longer healthy in `docker info` (bounded by `within`).
    fn time_until_down(&self, i: usize, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        let node = NODES[i];
        wait_until(within, || !node_healthy(self.url(), node)).then(|| t.elapsed())
    }

    /// Times until node `i` is healthy again and `docker logs` of its container works.
    fn time_until_back(&self, i: usize, container: &str, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        let node = NODES[i];
        wait_until(within, || {
            node_healthy(self.url(), node)
                && docker(self.url(), &["logs", "--tail", "1", container])
                    .status
                    .success()
        })
        .then(|| t.elapsed())
    }
}

fn info(url: &str) -> String {
    let out = docker(url, &["info"]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn healthy(url: &str) -> usize {
    info(url).matches("Status: Healthy").count()
}

/// Whether `docker info` shows `node` with status Healthy (its `SystemStatus` block: a
/// ` node` line, then `  └ Status`).
fn node_healthy(url: &str, node: &str) -> bool {
    let out = docker(url, &["info", "--format", "{{json .SystemStatus}}"]);
    let pairs: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let Some(at) = pairs.iter().position(|(k, _)| k.trim() == node) else {
        return false;
    };
    pairs[at + 1..]
        .iter()
        .take_while(|(k, _)| k.starts_with("  └"))
        .any(|(k, v)| k.trim() == "└ Status" && v == "Healthy")
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The first line of a command's error output, for the table.
fn said(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().next().unwrap_or("").trim();
    let line = line
        .strip_prefix("Error response from daemon: ")
        .unwrap_or(line);
    if out.status.success() {
        "ok".into()
    } else {
        format!("`{}`", line.chars().take(110).collect::<String>())
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn etcd_pid(bed: &Testbed) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("etcd.*{}", bed.dir().display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the bed's etcd is running")
}

/// A chain file in etcd with one adapter on creates, applied with busbarctl.
fn apply_chain(b: &Bed, adapter: Option<&str>) {
    let dir = TempDir::new();
    let file = dir.join("chain.yml");
    let text = match adapter {
        Some(url) => format!(
            "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [check]\nadapters:\n  check:\n    url: {url}\n    timeout: 2s\n"
        ),
        None => "version: 1\nendpoints: {}\nadapters: {}\n".into(),
    };
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(binary("busbarctl"))
        .args([
            "--etcd",
            b.bed.etcd().unwrap(),
            "--json",
            "chain",
            "apply",
            "--force",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let applied: Value = serde_json::from_slice(&out.stdout).unwrap();
    let revision = applied["revision"]
        .as_i64()
        .expect("apply says its revision");
    // Every agent runs it within a second or so: wait until each reports that revision.
    let applied = wait_until(Duration::from_secs(10), || {
        let st = std::process::Command::new(binary("busbarctl"))
            .args(["--etcd", b.bed.etcd().unwrap(), "--json", "chain", "status"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&st.stdout).unwrap_or(Value::Null);
        let at: Vec<i64> = v
            .as_object()
            .map(|m| {
                m.values()
                    .map(|s| s["revision"].as_i64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        at.len() == 3 && at.iter().all(|r| *r >= revision)
    });
    assert!(applied, "the chain did not reach every agent");
}

#[test]
fn the_fault_table() {
    testbed::e2e!();
    let mut b = Bed::start();
    // One long-running container per node, placed by constraint.
    let mut boxes = vec![];
    for node in NODES {
        let name = unique_name(&format!("f-{node}"));
        docker_ok(
            b.url(),
            &[
                "run",
                "-d",
                "--name",
                &name,
                "-e",
                &format!("constraint:node=={node}"),
                "busybox",
                "sh",
                "-c",
                "while true; do echo tick; sleep 1; done",
            ],
        );
        boxes.push(name);
    }
    let before = b.containers();
    let probes = Duration::from_secs(3 + 3);

    // 1. An agent killed.
    b.agents[1].kill();
    let detected = b.time_until_down(1, probes * 2);
    let saw = format!(
        "`docker ps`: {}; `docker logs` of its container: {}",
        said(&docker(b.url(), &["ps", "-q"])),
        said(&docker(b.url(), &["logs", &boxes[1]]))
    );
    let t = Instant::now();
    b.restart_agent(1);
    let back = b
        .time_until_back(1, &boxes[1], Duration::from_secs(30))
        .map(|_| t.elapsed());
    let lost = b.lost(&before);
    b.row(
        "agent killed (SIGKILL), then restarted",
        &secs(detected),
        &saw,
        &secs(back),
        lost,
    );
    assert!(detected.is_some() && back.is_some() && lost == 0);

    // 2. An agent stopped (SIGSTOP): it holds its connections and answers nothing.
    signal(b.agents[1].pid(), "STOP");
    let detected = b.time_until_down(1, probes * 2);
    let asked = Instant::now();
    let ps = docker(b.url(), &["ps", "-q"]);
    let saw = format!(
        "`docker ps` ({:.1} s): {}; `docker logs` of its container: {}",
        asked.elapsed().as_secs_f64(),
        said(&ps),
        said(&docker(b.url(), &["logs", &boxes[1]]))
    );
    signal(b.agents[1].pid(), "CONT");
    let back = b.time_until_back(1, &boxes[1], Duration::from_secs(30));
    let lost = b.lost(&before);
    b.row(
        "agent stopped (SIGSTOP), then continued",
        &secs(detected),
        &saw,
        &secs(back),
        lost,
    );
    assert!(detected.is_some() && back.is_some() && lost == 0);

    // 3. A host partitioned from the others (its link down).
    b.bed.hosts()[2].disconnect().unwrap();
    let detected = b.time_until_down(2, probes * 2);
    let saw = format!(
        "`docker ps`: {}; `docker logs` of its container: {}",
        said(&docker(b.url(), &["ps", "-q"])),
        said(&docker(b.url(), &["logs", &boxes[2]]))
    );
    b.bed.hosts()[2].reconnect().unwrap();
    let back = b.time_until_back(2, &boxes[2], Duration::from_secs(40));
    let lost = b.lost(&before);
    b.row(
        "host partitioned, then reconnected",
        &secs(detected),
        &saw,
        &secs(back),
        lost,
    );
    assert!(detected.is_some() && back.is_some() && lost == 0);

    // 4. An engine restarted (its containers stop, as on any engine restart).
    b.bed.hosts()[0].stop_engine().unwrap();
    let detected = b.time_until_down(0, probes * 2);
    let saw = format!(
        "`docker logs` of its container: {}; `docker run` pinned to it: {}",
        said(&docker(b.url(), &["logs", &boxes[0]])),
        said(&docker(
            b.url(),
            &[
                "run",
                "--rm",
                "-e",
                "constraint:node==node1",
                "busybox",
                "true"
            ]
        ))
    );
    b.bed.hosts()[0].start_engine().unwrap();
    let back = b.time_until_back(0, &boxes[0], Duration::from_secs(40));
    let lost = b.lost(&before);
    b.row(
        "engine stopped, then started",
        &secs(detected),
        &saw,
        &secs(back),
        lost,
    );
    assert!(detected.is_some() && back.is_some() && lost == 0);

    // 5. etcd stopped: no node goes down; only what needs etcd (name reservations) waits.
    b.bed.stop_etcd().unwrap();
    let down = b.time_until_down(1, Duration::from_secs(8));
    let named = unique_name("f-named");
    let saw = format!(
        "`docker run --rm`: {}; `docker run --name`: {}",
        said(&docker(b.url(), &["run", "--rm", "busybox", "true"])),
        said(&docker(
            b.url(),
            &["run", "--rm", "--name", &named, "busybox", "true"]
        ))
    );
    b.bed.start_etcd().unwrap();
    let t = Instant::now();
    let back = wait_until(Duration::from_secs(30), || {
        docker(
            b.url(),
            &["run", "--rm", "--name", &named, "busybox", "true"],
        )
        .status
        .success()
    })
    .then(|| t.elapsed());
    let lost = b.lost(&before);
    b.row(
        "etcd stopped, then started",
        if down.is_none() {
            "no node marked down"
        } else {
            "a node marked down!"
        },
        &saw,
        &secs(back),
        lost,
    );
    assert!(down.is_none() && back.is_some() && lost == 0);

    // 6. etcd stalled for longer than the registration TTL (2 s): every lease expires.
    let etcd = etcd_pid(&b.bed);
    signal(etcd, "STOP");
    let down = b.time_until_down(1, Duration::from_secs(8));
    let saw = format!(
        "`docker ps` during the stall: {}",
        said(&docker(b.url(), &["ps", "-q"]))
    );
    signal(etcd, "CONT");
    let t = Instant::now();
    let back = wait_until(Duration::from_secs(20), || healthy(b.url()) == 3).then(|| t.elapsed());
    let lost = b.lost(&before);
    b.row(
        "etcd stalled (SIGSTOP) 8 s, past the 2 s TTL",
        if down.is_none() {
            "no node marked down"
        } else {
            "a node marked down!"
        },
        &saw,
        &secs(back),
        lost,
    );
    assert!(down.is_none() && back.is_some() && lost == 0);

    // 7. A gateway restarted: until it knows its nodes it says so; never an empty success.
    b.gateways[0].kill();
    let restarted = Instant::now();
    let mut args: Vec<String> = vec!["--etcd".into(), b.bed.etcd().unwrap().to_owned()];
    args.extend(tls_args(&b.certs.0, "gateway"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let g = Process::gateway(&args);
    let first = raw_get(g.port, "/v1.41/containers/json?all=1");
    let complete = wait_until(Duration::from_secs(20), || {
        let (status, body) = raw_get(g.port, "/v1.41/containers/json?all=1");
        status == 200
            && serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.as_array().map(|a| a.len()))
                .is_some_and(|n| n >= 3)
    });
    let back = restarted.elapsed();
    let saw = format!(
        "first list after start: {} {}",
        first.0,
        if first.0 == 200 {
            "complete"
        } else {
            "\"the gateway is starting\""
        }
    );
    b.gateways[0] = g;
    let lost = b.lost(&before);
    b.row(
        "gateway restarted",
        "n/a",
        &saw,
        &format!("{:.1} s to a complete list", back.as_secs_f64()),
        lost,
    );
    assert!(complete && lost == 0);

    // 8. Two gateways, one down: the other serves as before.
    b.gateways[0].kill();
    let saw = format!(
        "through the other gateway: `docker ps` {}, `docker run` {}",
        said(&docker(&b.gateways[1].url, &["ps", "-q"])),
        said(&docker(
            &b.gateways[1].url,
            &["run", "--rm", "busybox", "true"]
        ))
    );
    b.gateways[0] = b.start_gateway();
    let lost = b.lost(&before);
    b.row(
        "one of two gateways down",
        "n/a",
        &saw,
        "0 s (the other never stopped)",
        lost,
    );
    assert!(saw.matches(": ok").count() + saw.matches(" ok").count() >= 2 && lost == 0);

    // 9. Adapters that fail: down, slow, garbage, closing mid-reply. A 502 or 504 naming the
    //    adapter within its 2 s timeout, and the engine never asked.
    let ip = b.bed.hosts()[0].gateway_addr().unwrap();
    type Behaviour = Box<dyn Fn(&Value) -> Answer + Send + Sync>;
    let cases: Vec<(&str, Behaviour)> = vec![
        (
            "slow (past its 2 s timeout)",
            Box::new(|_| Answer {
                status: 200,
                body: "{}".into(),
                delay: Duration::from_secs(5),
            }),
        ),
        (
            "answering garbage",
            Box::new(|_| Answer {
                status: 200,
                body: "<html>oops</html>".into(),
                delay: Duration::ZERO,
            }),
        ),
    ];
    for (what, behaviour) in cases {
        let adapter = FakeAdapter::start_on(ip, behaviour);
        apply_chain(&b, Some(&adapter.url));
        let before_count = b.containers().len();
        let asked = Instant::now();
        let run = docker(b.url(), &["run", "--rm", "busybox", "true"]);
        let took = asked.elapsed();
        let created = b.containers().len() - before_count;
        b.row(
            &format!("adapter {what}"),
            &format!("{:.1} s", took.as_secs_f64()),
            &said(&run),
            "at once (the next call is served)",
            created,
        );
        assert!(!run.status.success() && created == 0);
    }
    // Down: nothing listens at its address.
    let dead = {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        format!("http://{}/adapter", l.local_addr().unwrap())
    };
    apply_chain(&b, Some(&dead));
    let asked = Instant::now();
    let run = docker(b.url(), &["run", "--rm", "busybox", "true"]);
    b.row(
        "adapter down",
        &format!("{:.1} s", asked.elapsed().as_secs_f64()),
        &said(&run),
        "at once",
        0,
    );
    assert!(!run.status.success());
    // Closing mid-reply: a listener that reads the call, writes half a head and hangs up.
    let half = std::net::TcpListener::bind((ip, 0)).unwrap();
    let half_url = format!("http://{}/adapter", half.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in half.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"Powerstrip");
        }
    });
    apply_chain(&b, Some(&half_url));
    let asked = Instant::now();
    let run = docker(b.url(), &["run", "--rm", "busybox", "true"]);
    b.row(
        "adapter closing mid-reply",
        &format!("{:.1} s", asked.elapsed().as_secs_f64()),
        &said(&run),
        "at once",
        0,
    );
    assert!(!run.status.success());
    apply_chain(&b, None);

    // 10. A create whose response is lost (the client hangs up right after sending it): the
    //     container exists once or not at all, and a retry by name settles it without a
    //     duplicate.
    let name = unique_name("f-lost");
    let body = json!({"Image": "busybox", "Cmd": ["true"]}).to_string();
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", b.gateways[1].port)).unwrap();
        write!(
            s,
            "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let retry = docker(b.url(), &["create", "--name", &name, "busybox", "true"]);
    let same_name: usize = b
        .bed
        .hosts()
        .iter()
        .map(|h| {
            h.docker_ok(&["ps", "-aq", "--filter", &format!("name=^/{name}$")])
                .lines()
                .count()
        })
        .sum();
    b.row(
        "create response lost (client hung up), then retried by name",
        "n/a",
        &format!("the retry: {}", said(&retry)),
        "at once",
        same_name.saturating_sub(1) + b.lost(&before),
    );
    assert_eq!(same_name, 1, "containers named {name}: {same_name}");

    for name in &boxes {
        let _ = docker(b.url(), &["rm", "-f", name]);
    }
    let _ = docker(b.url(), &["rm", "-f", &name]);
    let table = format!(
        "| fault | detection | what a client saw | recovery | lost or duplicated |\n|---|---|---|---|---|\n{}\n",
        b.rows.join("\n")
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-table.md");
    std::fs::write(&out, &table).unwrap();
    eprintln!("\n{table}\n(written to {})", out.display());
}

/// A raw `GET path` on 127.0.0.1:`port`: status and body (bodies here are small).
fn raw_get(port: u16, path: &str) -> (u16, String) {
    let raw = support::http_raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map(|(_, rest)| rest.rsplit_once("\r\n0\r\n").map_or(rest, |(b, _)| b))
            .unwrap_or(body)
            .to_owned()
    } else {
        body.to_owned()
    };
    (status, body)
}
