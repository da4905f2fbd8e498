//! `docker ps` through the cluster gateway from its event-fed cache: three real engines (one per
//! network namespace), an agent on each, a gateway with the cache (the default) and one with
//! `--list-live`, driven by the real `docker` CLI, checked against the engines' own lists.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{http_raw, make_certs, tls_args, Process, TempDir};
use testbed::{docker_ok, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

struct Bed {
    cached: Process,
    live: Process,
    agents: Vec<Process>,
    addrs: Vec<String>,
    certs: TempDir,
    engines: Vec<String>,
}

fn gateway(addrs: &[String], certs: &TempDir, extra: &[&str]) -> Process {
    let mut args: Vec<String> = vec![];
    for (node, addr) in NODES.iter().zip(addrs) {
        args.extend(["--agent".into(), format!("{node}={addr}")]);
    }
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend(["--probe-interval", "0.5", "--probe-timeout", "1"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::gateway(&args)
}

impl Bed {
    fn start(bed: &Testbed) -> Bed {
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let mut agents = vec![];
        let mut addrs = vec![];
        for (i, host) in bed.hosts().iter().enumerate() {
            let (agent, addr) = Process::agent_in(host, NODES[i], &certs.0, &[]);
            agents.push(agent);
            addrs.push(addr);
        }
        let cached = gateway(&addrs, &certs, &[]);
        let live = gateway(&addrs, &certs, &["--list-live"]);
        let engines = bed.hosts().iter().map(|h| h.docker_url()).collect();
        let b = Bed {
            cached,
            live,
            agents,
            addrs,
            certs,
            engines,
        };
        for g in [&b.cached, &b.live] {
            let healthy = wait_until(Duration::from_secs(20), || {
                docker_ok(&g.url, &["info"]).matches("Healthy").count() == 3
            });
            assert!(healthy, "not every node became healthy");
        }
        b
    }

    fn restart_agent(&mut self, bed: &Testbed, i: usize) {
        let host = &bed.hosts()[i];
        let mut cmd = host.command_in(support::binary("busbar-agent"));
        cmd.args([
            "--docker",
            &host.docker_url(),
            "--grpc-listen",
            &self.addrs[i],
        ])
        .args(tls_args(&self.certs.0, NODES[i]));
        self.agents[i] = Process::start_cmd(cmd);
    }
}

/// `GET target` on a gateway: status, headers (lower-case names), body.
fn get(port: u16, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let raw = http_raw(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `docker ps` lines with the fields that identify a row and its state.
const FORMAT: &str = "{{.ID}}|{{.Names}}|{{.Image}}|{{.Command}}|{{.CreatedAt}}|{{.State}}|{{.Status}}|{{.Mounts}}|{{.Networks}}";

fn ps(url: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["ps", "--no-trunc", "--format", FORMAT];
    all.extend_from_slice(args);
    let mut lines: Vec<String> = docker_ok(url, &all).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The union of the engines' own `docker ps -a`, names qualified by node as the gateway shows them.
fn union(b: &Bed) -> Vec<String> {
    let mut lines = vec![];
    for (node, engine) in NODES.iter().zip(&b.engines) {
        for line in ps(engine, &["-a"]) {
            let mut f: Vec<String> = line.split('|').map(str::to_owned).collect();
            f[1] = f[1]
                .split(',')
                .map(|n| format!("{node}/{n}"))
                .collect::<Vec<_>>()
                .join(",");
            lines.push(f.join("|"));
        }
    }
    lines.sort();
    lines
}

/// Two `docker ps` lines alike, but for a `Status` duration in seconds one apart: the engines
/// and the gateway are asked one after the other, a few hundred milliseconds apart.
fn same_row(a: &str, b: &str) -> bool {
    let (fa, fb): (Vec<&str>, Vec<&str>) = (a.split('|').collect(), b.split('|').collect());
    if fa.len() != fb.len()
        || fa
            .iter()
            .zip(&fb)
            .enumerate()
            .any(|(i, (x, y))| i != 6 && x != y)
    {
        return false;
    }
    let seconds = |s: &str| -> Option<(String, i64)> {
        let s = s
            .replace("Less than a second", "0 seconds")
            .replace("1 second", "1 seconds");
        let words: Vec<&str> = s.split(' ').collect();
        let i = words
            .iter()
            .position(|w| *w == "seconds" || *w == "secondss")?;
        let n: i64 = words.get(i.checked_sub(1)?)?.parse().ok()?;
        let mut rest = words.clone();
        rest.remove(i - 1);
        Some((rest.join(" ").replace("secondss", "seconds"), n))
    };
    fa[6] == fb[6]
        || matches!((seconds(fa[6]), seconds(fb[6])), (Some((x, n)), Some((y, m))) if x == y && (n - m).abs() <= 1)
}

/// Waits (up to `within`) until the cached gateway's `docker ps -a` equals the union of the
/// engines' lists (a `Status` may cross a second between the calls: asked again).
fn assert_equals_union(b: &Bed, within: Duration, what: &str) {
    let (mut have, mut want) = (vec![], vec![]);
    let same = wait_until(within, || {
        want = union(b);
        have = ps(&b.cached.url, &["-a"]);
        have.len() == want.len() && have.iter().zip(&want).all(|(h, w)| same_row(h, w))
    });
    assert!(
        same,
        "{what}: docker ps -a through the gateway\n{have:#?}\nthe engines\n{want:#?}"
    );
    let ids: BTreeSet<&str> = have.iter().map(|l| l.split('|').next().unwrap()).collect();
    assert_eq!(ids.len(), have.len(), "{what}: a row twice: {have:#?}");
}

/// The time until `docker ps -a` through the cached gateway satisfies `test`, or panics after 10 s.
fn until_ps(b: &Bed, test: impl Fn(&[String]) -> bool, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let rows = ps(&b.cached.url, &["-a"]);
        if test(&rows) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has(rows: &[String], name: &str) -> bool {
    rows.iter().any(|l| l.split('|').nth(1) == Some(name))
}

/// The cache's answers are the live fan-out's, byte for byte, for the queries it answers.
fn assert_same_as_live(b: &Bed, queries: &[&str]) {
    for q in queries {
        let target = format!("/v1.41/containers/json{q}");
        let (mut cached, mut live) = ((0, vec![], vec![]), (0, vec![], vec![]));
        let same = wait_until(Duration::from_secs(5), || {
            cached = get(b.cached.port, &target);
            live = get(b.live.port, &target);
            let parse = |body: &[u8]| serde_json::from_slice::<Value>(body).ok();
            cached.0 == 200 && live.0 == 200 && parse(&cached.2) == parse(&live.2)
        });
        assert!(
            same,
            "{q}: the cache answered {} {}\nlive answered {} {}",
            cached.0,
            String::from_utf8_lossy(&cached.2),
            live.0,
            String::from_utf8_lossy(&live.2)
        );
        assert_eq!(header(&cached.1, "x-busbar-list"), Some("cache"), "{q}");
        assert_eq!(header(&live.1, "x-busbar-list"), Some("live"), "{q}");
    }
}

#[test]
fn docker_ps_from_the_cache_is_the_engines_lists_kept_current_by_events() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let mut b = Bed::start(&bed);
    // Some containers on every node, in every state, before and after the gateway started.
    for (i, engine) in b.engines.iter().enumerate() {
        docker_ok(
            engine,
            &[
                "run",
                "-d",
                "--name",
                &format!("up{i}"),
                "--label",
                "k=v",
                "-p",
                "80",
                "busybox",
                "sleep",
                "600",
            ],
        );
        docker_ok(
            engine,
            &["run", "--name", &format!("done{i}"), "busybox", "true"],
        );
        docker_ok(
            engine,
            &["create", "--name", &format!("new{i}"), "busybox", "true"],
        );
    }
    docker_ok(
        &b.engines[0],
        &["run", "-d", "--name", "paused0", "busybox", "sleep", "600"],
    );
    docker_ok(&b.engines[0], &["pause", "paused0"]);
    assert_equals_union(&b, Duration::from_secs(10), "at start");
    let (_, headers, _) = get(b.cached.port, "/v1.41/containers/json?all=1");
    assert_eq!(header(&headers, "x-busbar-list"), Some("cache"));

    // Read your writes: a run through the gateway, then ps at once.
    let url = b.cached.url.clone();
    docker_ok(
        &url,
        &[
            "run",
            "-d",
            "--name",
            "rw",
            "-e",
            "constraint:node==node1",
            "busybox",
            "sleep",
            "600",
        ],
    );
    let rows = ps(&url, &[]);
    assert!(
        rows.iter()
            .any(|l| l.contains("|node1/rw|") && l.contains("|running|")),
        "{rows:#?}"
    );
    docker_ok(&url, &["stop", "-t", "0", "rw"]);
    let rows = ps(&url, &["-a"]);
    assert!(
        rows.iter()
            .any(|l| l.contains("|node1/rw|") && l.contains("|exited|")),
        "{rows:#?}"
    );
    docker_ok(&url, &["rename", "rw", "rw2"]);
    assert!(has(&ps(&url, &["-a"]), "node1/rw2"));
    docker_ok(&url, &["rm", "rw2"]);
    assert!(!has(&ps(&url, &["-a"]), "node1/rw2"));

    // Behind the gateway's back: created on an engine, then removed there.
    docker_ok(
        &b.engines[1],
        &["run", "-d", "--name", "behind", "busybox", "sleep", "600"],
    );
    let appeared = until_ps(
        &b,
        |rows| has(rows, "node2/behind"),
        "created behind its back",
    );
    docker_ok(&b.engines[1], &["rm", "-f", "behind"]);
    let gone = until_ps(
        &b,
        |rows| !has(rows, "node2/behind"),
        "removed behind its back",
    );
    eprintln!("behind the gateway's back: shown after {appeared:?}, gone after {gone:?}");
    assert!(
        appeared < Duration::from_secs(1),
        "shown after {appeared:?}"
    );
    assert!(gone < Duration::from_secs(1), "gone after {gone:?}");
    assert_equals_union(&b, Duration::from_secs(5), "after changes");

    // The cache answers as the live fan-out does.
    let enc = |s: &str| {
        s.bytes()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    (c as char).to_string()
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect::<String>()
    };
    let filters = |f: &str| format!("?all=1&filters={}", enc(f));
    assert_same_as_live(
        &b,
        &[
            "",
            "?all=1",
            "?limit=3",
            "?all=1&limit=2",
            &filters(r#"{"status":{"exited":true}}"#),
            &filters(r#"{"status":["created","paused"]}"#),
            &filters(r#"{"name":["^/up"]}"#),
            &filters(r#"{"name":{"done1":true}}"#),
            &filters(r#"{"label":["k=v"]}"#),
            &filters(r#"{"node":["node3"]}"#),
        ],
    );
    // What the cache cannot match exactly is asked live.
    let (status, headers, _) = get(b.cached.port, "/v1.41/containers/json?all=1&size=1");
    assert_eq!(
        (status, header(&headers, "x-busbar-list")),
        (200, Some("live"))
    );
    let anc = format!(
        "/v1.41/containers/json{}",
        filters(r#"{"ancestor":["busybox"]}"#)
    );
    assert_eq!(
        header(&get(b.cached.port, &anc).1, "x-busbar-list"),
        Some("live")
    );

    // The events stream cut: node3's agent killed; changes on its engine meanwhile.
    b.agents[2].kill();
    let down = wait_until(Duration::from_secs(10), || {
        let (_, headers, body) = get(b.cached.port, "/v1.41/containers/json?all=1");
        header(&headers, "x-busbar-failed-nodes").is_some_and(|h| h.starts_with("node3"))
            && String::from_utf8_lossy(&body).contains("Host Down")
    });
    assert!(down, "node3 not named failed with Host Down rows");
    docker_ok(
        &b.engines[2],
        &["run", "-d", "--name", "during", "busybox", "sleep", "600"],
    );
    docker_ok(&b.engines[2], &["rm", "-f", "up2"]);
    docker_ok(&b.engines[2], &["start", "new2"]);
    b.restart_agent(&bed, 2);
    assert_equals_union(&b, Duration::from_secs(20), "after node3's agent came back");
    let followed = wait_until(Duration::from_secs(10), || {
        let (_, headers, _) = get(b.cached.port, "/v1.41/containers/json?all=1");
        header(&headers, "x-busbar-list") == Some("cache")
            && header(&headers, "x-busbar-failed-nodes").is_none()
    });
    assert!(followed, "node3 not followed again");
    docker_ok(&b.engines[2], &["rm", "-f", "during"]);
    until_ps(
        &b,
        |rows| !has(rows, "node3/during"),
        "removed after the resync",
    );
    assert_equals_union(&b, Duration::from_secs(5), "after more changes on node3");

    // --list-live still answers docker ps.
    let (mut live, mut want) = (vec![], vec![]);
    let same = wait_until(Duration::from_secs(5), || {
        want = union(&b);
        live = ps(&b.live.url, &["-a"]);
        live.len() == want.len() && live.iter().zip(&want).all(|(h, w)| same_row(h, w))
    });
    assert!(same, "--list-live\n{live:#?}\nthe engines\n{want:#?}");
}

/// `GET target` on a fresh connection (unix socket path, or TCP port), read to the end: the time.
fn timed(unix: Option<&str>, port: u16, target: &str) -> Duration {
    use std::io::{Read, Write};
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    let mut out = Vec::with_capacity(64 * 1024);
    match unix {
        Some(path) => {
            let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s.read_to_end(&mut out).unwrap();
        }
        None => {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s.read_to_end(&mut out).unwrap();
        }
    }
    let elapsed = start.elapsed();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    elapsed
}

/// Not a check: the figures BENCHMARKS.md quotes ("Lists: cache against live"), printed when
/// `BUSBAR_LIST_MEASURE=1` (run it with `--release` for figures worth quoting). The same 31
/// containers on node1 (nodes 2 and 3 empty), `GET /v1.41/containers/json?all=1` asked of
/// node1's engine directly, of the gateway with the cache and of the one with `--list-live`,
/// interleaved, one new connection per request for all three.
#[test]
fn list_latency_cache_live_and_one_engine() {
    testbed::e2e!();
    if std::env::var("BUSBAR_LIST_MEASURE").is_err() {
        return eprintln!("BUSBAR_LIST_MEASURE not set: nothing measured");
    }
    let bed = Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let b = Bed::start(&bed);
    let engine = b.engines[0].clone();
    for i in 0..31 {
        docker_ok(
            &engine,
            &["create", "--name", &format!("m{i}"), "busybox", "true"],
        );
    }
    assert_equals_union(&b, Duration::from_secs(10), "before measuring");
    let socket = engine.strip_prefix("unix://").unwrap().to_owned();
    let target = "/v1.41/containers/json?all=1";
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let rounds = 10;
    let per_round: usize = std::env::var("BUSBAR_LIST_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
        / rounds;
    for round in 0..rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            for _ in 0..per_round {
                let t = match which {
                    0 => timed(Some(&socket), 0, target),
                    1 => timed(None, b.cached.port, target),
                    _ => timed(None, b.live.port, target),
                };
                samples[which].push(t);
            }
        }
    }
    for (name, s) in [
        "engine (node1, direct)",
        "gateway, cache",
        "gateway, --list-live",
    ]
    .iter()
    .zip(samples.iter_mut())
    {
        s.sort();
        let at = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        eprintln!(
            "{name}: n={} p50={:?} p99={:?}",
            s.len(),
            at(0.50),
            at(0.99)
        );
    }
}
