//! The status page and `busbarctl status` end to end: three agents in their own network
//! namespaces on real engines, each with a pre-hook on creates (a fake adapter: a test
//! double), a gateway in cluster mode in front of them with its metrics listener (where the
//! status is served) on loopback, the real `docker` and `busbarctl` CLIs, and the page loaded
//! in a real headless Chromium (Debian's `chromium`), driven over the DevTools protocol by
//! `support/status_page.py` (Debian's python3-websocket: no crate to build for it).
//!
//! Each cluster test kills one agent and checks the node turns unhealthy within the detection
//! time: the probe interval (0.5 s) plus the probe timeout (1 s), plus the page's refresh
//! (2 s), with room for a loaded machine. The page is also loaded as a phone (390x844) would,
//! and nothing may stick out sideways.
//!
//! The embedded gateway (no `--agent`: the single-machine default) serves the same status for
//! its one node; there a scripted burst of refused and failing hook calls must move the recent
//! window by exactly its counts, on the page and in `busbarctl status`, and the window must
//! forget them once it has passed.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::adapters::{null, FakeAdapter};
use support::{busbarctl, make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, free_port, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// How long a killed agent's node may take to show unhealthy: a probe interval and a probe
/// timeout, a refresh of the page, and room for a loaded machine.
const DETECTION: Duration = Duration::from_secs(12);

/// Three agents (each with the `policy` pre-hook on creates, its chains from a file) and a
/// gateway in cluster mode with its metrics listener on loopback.
struct Cluster {
    gateway: Process,
    agents: Vec<Process>,
    metrics: String,
    _adapters: Vec<FakeAdapter>,
    _certs: TempDir,
    _chains: TempDir,
}

fn cluster(bed: &Testbed) -> Cluster {
    let certs = TempDir::new();
    let chains = TempDir::new();
    let sans: Vec<(String, String)> = NODES
        .iter()
        .zip(bed.hosts())
        .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
        .collect();
    let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    make_certs(&certs.0, &sans);
    let (mut agents, mut adapters, mut args) = (vec![], vec![], Vec::<String>::new());
    for (i, host) in bed.hosts().iter().enumerate() {
        let adapter = FakeAdapter::start_on(host.gateway_addr().unwrap(), null);
        let file = chains.join(&format!("{}.yml", NODES[i]));
        std::fs::write(
            &file,
            format!(
                "endpoints:\n  \"POST /*/containers/create\":\n    pre: [policy]\nadapters:\n  policy: {}\n",
                adapter.url
            ),
        )
        .unwrap();
        let zone = format!("zone={}", if i == 0 { "a" } else { "b" });
        let (agent, at) = Process::agent_in(
            host,
            NODES[i],
            &certs.0,
            &["--config", file.to_str().unwrap(), "--label", &zone],
        );
        args.extend(["--agent".into(), format!("{}={at}", NODES[i])]);
        agents.push(agent);
        adapters.push(adapter);
    }
    let metrics = format!("127.0.0.1:{}", free_port());
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend(
        [
            "--probe-interval",
            "0.5",
            "--probe-timeout",
            "1",
            "--metrics-listen",
            &metrics,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    Cluster {
        gateway,
        agents,
        metrics,
        _adapters: adapters,
        _certs: certs,
        _chains: chains,
    }
}

impl Cluster {
    fn url(&self) -> String {
        format!("http://{}", self.metrics)
    }

    /// `busbarctl status --json` against the gateway: the document, or why not.
    fn status(&self) -> Result<Value, String> {
        let out = busbarctl(&["status", "--url", &self.url(), "--json", "--timeout", "3"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits until `busbarctl status --json` shows `healthy` healthy nodes of 3.
    fn wait_healthy(&self, healthy: usize, within: Duration) -> Value {
        let mut last = Err("not asked".to_owned());
        let ok = wait_until(within, || {
            last = self.status();
            last.as_ref().is_ok_and(|s| healthy_count(s) == healthy)
        });
        assert!(
            ok,
            "busbarctl status never showed {healthy} healthy nodes: {last:?}\n{}",
            self.gateway.log_tail()
        );
        last.unwrap()
    }
}

fn healthy_count(s: &Value) -> usize {
    s["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["health"] == "Healthy").count())
}

fn node<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name} in {s}"))
}

fn three_hosts() -> TestbedSpec {
    TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    }
}

#[test]
fn busbarctl_status_shows_the_cluster_then_the_node_whose_agent_died() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let mut c = cluster(&bed);
    let s = c.wait_healthy(3, Duration::from_secs(20));

    // One create through the hook, and one error answer, for the adapters and errors parts.
    let name = unique_name("status");
    let id = docker_ok(
        &c.gateway.url,
        &["run", "-d", "--name", &name, "busybox", "sleep", "60"],
    );
    let on = docker_ok(&c.gateway.url, &["inspect", "-f", "{{.Node.Name}}", &id]);
    let missing = docker(&c.gateway.url, &["inspect", "status-no-such-container"]);
    assert!(!missing.status.success());
    for n in NODES {
        let n = node(&s, n);
        assert_eq!(n["health"], "Healthy", "{n}");
        assert!(
            n["engine_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{n}"
        );
        assert!(n["containers"].is_u64(), "{n}");
        assert!(n["probe_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{n}");
        assert_eq!(n["chains"]["source"], "file", "{n}");
    }
    assert_eq!(node(&s, "node1")["labels"]["zone"], "a");
    // The adapter's figures come from the agents, through the gateway's probes.
    let mut s = Value::Null;
    let counted = wait_until(Duration::from_secs(10), || {
        s = c.status().unwrap_or_default();
        node(&s, &on)["adapters"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["adapter"] == "policy"))
            .is_some_and(|a| a["calls"].as_u64() >= Some(1) && a["errors"] == 0)
    });
    assert!(counted, "no adapter call counted on {on}: {s}");
    let errors = s["errors"].as_array().unwrap();
    let e = errors
        .iter()
        .find(|e| e["status"] == 404 && e["endpoint"] == "container_inspect")
        .unwrap_or_else(|| panic!("the 404 is not among the last errors: {s}"));
    assert!(
        e["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("status-no-such-container"),
        "{e}"
    );

    // The screen: one line per node, with its health.
    let out = busbarctl(&["status", "--url", &c.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("3 of 3 nodes healthy"), "{screen}");
    for n in NODES {
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with(n) && l.contains("Healthy")),
            "{screen}"
        );
    }
    assert!(screen.contains("policy"), "{screen}");

    // Without JavaScript: the page as served holds every node.
    let (status, page) = support::http_get(&c.metrics, "/status");
    assert_eq!(status, 200);
    for n in NODES {
        assert!(
            page.contains(&format!("<tr data-node=\"{n}\" data-health=\"Healthy\">")),
            "{page}"
        );
    }

    // node3's agent dies: the status shows it unhealthy within the detection time.
    c.agents[2].kill();
    let killed = Instant::now();
    let s = c.wait_healthy(2, DETECTION);
    let took = killed.elapsed();
    let dead = node(&s, "node3");
    assert_eq!(dead["health"], "Unhealthy", "{dead}");
    assert!(
        dead["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{dead}"
    );
    eprintln!("busbarctl status showed node3 unhealthy {took:?} after its agent was killed");
    let out = busbarctl(&["status", "--url", &c.url()]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("2 of 3 nodes healthy"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("node3") && l.contains("Unhealthy")),
        "{screen}"
    );

    // --watch redraws until interrupted, and exits cleanly on Ctrl-C (SIGINT).
    let mut watch = Command::new(support::binary("busbarctl"))
        .args(["status", "--url", &c.url(), "--watch", "0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = watch.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    wait_until(Duration::from_secs(5), || {
        exited = watch.try_wait().unwrap();
        exited.is_some()
    });
    let Some(code) = exited else {
        let _ = watch.kill();
        panic!("busbarctl status --watch did not stop on SIGINT");
    };
    let out = watch.wait_with_output().unwrap();
    assert!(
        code.success(),
        "{code:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(
        drawn.matches("2 of 3 nodes healthy").count() >= 2,
        "{drawn}"
    );

    // A gateway that is not there: a clear error, in time.
    let started = Instant::now();
    let port = free_port();
    let out = busbarctl(&[
        "status",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--timeout",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the gateway at http://127.0.0.1:{port}/status.json"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The container may be on the dead node: the bed's engines go with the bed anyway.
    let _ = docker(&c.gateway.url, &["rm", "-f", &id]);
}

/// A headless Chromium with its DevTools port, and the driver script attached to one page.
struct Browser {
    chromium: Child,
    driver: Child,
    to: ChildStdin,
    from: mpsc::Receiver<String>,
    _profile: TempDir,
}

impl Browser {
    /// Chromium, or `None` when it is not installed (then the test is skipped, or fails under
    /// `BUSBAR_E2E=require`).
    fn chromium() -> Option<PathBuf> {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    fn open(chromium: &Path, url: &str, shots: &Path) -> Browser {
        let profile = TempDir::new();
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                // Root in a container: Chromium's sandbox needs user namespaces it may not get.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1100,900",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes the port it chose to DevToolsActivePort in its profile.
        let port_file = profile.join("DevToolsActivePort");
        let mut port = String::new();
        let up = wait_until(Duration::from_secs(30), || {
            port = std::fs::read_to_string(&port_file)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            !port.is_empty()
        });
        if !up {
            let _ = child.kill();
            panic!("chromium did not open its DevTools port within 30 s");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/status_page.py");
        // Debian's python3 (its python3-websocket), whatever python3 comes first in PATH.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut driver = Command::new(python)
            .arg(&script)
            .args([port.as_str(), url, shots.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the DevTools driver");
        let to = driver.stdin.take().unwrap();
        let from = lines(driver.stdout.take().unwrap());
        let mut b = Browser {
            chromium: child,
            driver,
            to,
            from,
            _profile: profile,
        };
        let loaded = b.answer(Duration::from_secs(40));
        assert_eq!(loaded["ok"], true, "{loaded}");
        b
    }

    /// The driver's next answer, within `within`.
    fn answer(&mut self, within: Duration) -> Value {
        let line = self
            .from
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("the DevTools driver did not answer within {within:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn ask(&mut self, command: &str, within: Duration) -> Value {
        writeln!(self.to, "{command}").unwrap();
        self.to.flush().unwrap();
        self.answer(within + Duration::from_secs(25))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = self.chromium.kill();
        let _ = self.chromium.wait();
    }
}

fn lines(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Chromium, or `None` (the test is then skipped) when it is not installed; under
/// `BUSBAR_E2E=require` a missing Chromium fails the test.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = Browser::chromium();
    if found.is_none() {
        let why = "chromium is not installed (tests/run.sh installs Debian's chromium)";
        if std::env::var("BUSBAR_E2E").as_deref() == Ok("require") {
            panic!("{why}; BUSBAR_E2E=require");
        }
        eprintln!("skipping: {why}");
    }
    found
}

/// Where the screenshots go (kept as test artifacts).
fn shots_dir() -> PathBuf {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// The phone's screen, in CSS pixels (an iPhone 12 to 15).
const PHONE: (u32, u32) = (390, 844);

/// Loads the page again as a phone would (390x844, mobile) and requires it to be readable
/// there: the viewport meta applied, the document no wider than the screen, nothing sticking
/// out past its edge but inside a scrolling container, each table in its own horizontal
/// scroller within the screen, text no smaller than 12 px. Keeps a screenshot named `shot`.
fn assert_readable_on_a_phone(b: &mut Browser, shot: &str) {
    let (w, h) = PHONE;
    let m = b.ask(&format!("phone {w} {h}"), Duration::from_secs(20));
    assert_eq!(m["ok"], true, "{m}");
    let width = f64::from(w);
    assert_eq!(
        m["innerWidth"].as_f64(),
        Some(width),
        "the page is not laid out for the phone's width: {m}"
    );
    assert!(
        m["scrollWidth"].as_f64().unwrap() <= width,
        "the page scrolls sideways on a phone: {m}"
    );
    assert_eq!(
        m["overflowing"].as_array().map(Vec::len),
        Some(0),
        "elements stick out past the screen's edge: {m}"
    );
    let scrollers = m["scrollers"].as_array().unwrap();
    assert!(scrollers.len() >= 4, "{m}");
    for s in scrollers {
        assert!(s["right"].as_f64().unwrap() <= width + 0.5, "{s}");
        assert!(
            matches!(s["overflowX"].as_str(), Some("auto" | "scroll")),
            "a table that does not scroll in its own container: {s}"
        );
    }
    assert!(m["fontSize"].as_f64().unwrap() >= 12.0, "{m}");
    let shot = b.ask(&format!("shot {shot}"), Duration::ZERO);
    let path = shot["path"].as_str().unwrap();
    assert!(
        std::fs::metadata(path).unwrap().len() > 1000,
        "an empty screenshot"
    );
    eprintln!("screenshot at a phone's size (artifact): {path}");
}

#[test]
fn the_page_in_chromium_shows_a_node_go_unhealthy_without_a_reload() {
    testbed::e2e!();
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let bed = Testbed::start(three_hosts()).unwrap();
    let mut c = cluster(&bed);
    c.wait_healthy(3, Duration::from_secs(20));
    let shots = shots_dir();
    let mut b = Browser::open(&chromium, &format!("{}/status", c.url()), &shots);

    let seen = b.ask("wait 3 0 10", Duration::from_secs(10));
    assert_eq!(
        seen["ok"], true,
        "the page does not show 3 healthy nodes: {seen}"
    );
    let shot = b.ask("shot three-healthy", Duration::ZERO);
    eprintln!("screenshot: {}", shot["path"].as_str().unwrap());

    c.agents[2].kill();
    let killed = Instant::now();
    let secs = DETECTION.as_secs();
    let seen = b.ask(&format!("wait 2 1 {secs}"), DETECTION);
    let took = killed.elapsed();
    let shot = b.ask("shot one-unhealthy", Duration::ZERO);
    let path = shot["path"].as_str().unwrap().to_owned();
    eprintln!("screenshot (artifact): {path}");
    assert_eq!(
        seen["ok"], true,
        "the page did not show node3 unhealthy within {DETECTION:?}: {seen}"
    );
    let nodes = seen["nodes"].as_array().unwrap();
    assert!(
        nodes.iter().any(|n| n[0] == "node3" && n[1] == "Unhealthy"),
        "{seen}"
    );
    // Updated in place: the page loaded once, and the mark set on it after loading is there.
    assert_eq!(seen["navigations"], 1, "{seen}");
    assert_eq!(seen["marker"], true, "the page was reloaded: {seen}");
    assert!(seen["live"].as_str().unwrap().starts_with("live"), "{seen}");
    assert!(
        std::fs::metadata(&path).unwrap().len() > 1000,
        "an empty screenshot"
    );
    eprintln!("the page showed node3 unhealthy {took:?} after its agent was killed");

    // The same page on a phone: three nodes, their chains, scopes, adapters and errors.
    assert_readable_on_a_phone(&mut b, "phone-cluster");
}

/// `busbarctl status` with the cert files of `certs` named in `tls` (`--tlscacert` etc.), with
/// `DOCKER_CERT_PATH` pointing at an empty directory (no default certificate).
fn status_over(url: &str, tls: &[(&str, PathBuf)]) -> std::process::Output {
    let empty = TempDir::new();
    let mut cmd = Command::new(support::binary("busbarctl"));
    cmd.args(["status", "--url", url, "--json", "--timeout", "3"])
        .env("DOCKER_CERT_PATH", &empty.0);
    for (flag, path) in tls {
        cmd.arg(flag).arg(path);
    }
    cmd.output().expect("busbarctl runs")
}

#[test]
fn beyond_loopback_the_status_needs_the_tls_client_certificate_the_gateway_verifies() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let certs = TempDir::new();
    let addr = host.addr().unwrap().to_string();
    make_certs(&certs.0, &[("node1", &addr), ("node2", &addr)]);
    // The gateway's listeners beyond loopback: the host's side of the bed's link.
    let ip = host.gateway_addr().unwrap().to_string();
    let dir = certs.0.display().to_string();
    for (name, role, san) in [
        ("front", "gateway", Some(ip.as_str())),
        ("alice", "client", None),
    ] {
        let mut args = vec![
            "certs", "issue", "--dir", &dir, "--name", name, "--role", role,
        ];
        if let Some(san) = san {
            args.extend(["--san", san]);
        }
        assert!(busbarctl(&args).status.success(), "issue {name}");
    }
    // Two agents on the host's engine: a cluster of two nodes.
    let agents: Vec<(Process, String)> = ["node1", "node2"]
        .iter()
        .map(|n| Process::agent_in(host, n, &certs.0, &[]))
        .collect();
    let metrics = format!("{ip}:{}", free_port());
    let f = |name: &str| certs.join(name);
    let mut args: Vec<String> = vec![];
    for (i, (_, at)) in agents.iter().enumerate() {
        args.extend(["--agent".into(), format!("node{}={at}", i + 1)]);
    }
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend([
        "--tls-listen".into(),
        format!("{ip}:{}", free_port()),
        "--tlsverify".into(),
        "--tlscacert".into(),
        f("ca.pem").display().to_string(),
        "--tlscert".into(),
        f("front.pem").display().to_string(),
        "--tlskey".into(),
        f("front-key.pem").display().to_string(),
        "--metrics-listen".into(),
        metrics.clone(),
        "--probe-interval".into(),
        "0.5".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    let url = format!("https://{metrics}");

    let alice = [
        ("--tlscacert", f("ca.pem")),
        ("--tlscert", f("alice.pem")),
        ("--tlskey", f("alice-key.pem")),
    ];
    let mut last = None;
    let both = wait_until(Duration::from_secs(20), || {
        let out = status_over(&url, &alice);
        let ok = out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|s| healthy_count(&s) == 2);
        last = Some(out);
        ok
    });
    let out = last.unwrap();
    assert!(
        both,
        "busbarctl status over TLS: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gateway.log_tail()
    );

    // Without a client certificate the gateway refuses the handshake: a clear error.
    let out = status_over(&url, &alice[..1]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the gateway at {url}/status.json")),
        "{err}"
    );
    // Plain HTTP to a TLS listener: an error, not a hang.
    let started = Instant::now();
    let out = status_over(&format!("http://{metrics}"), &[]);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    // A CA file that is not there: a usage error naming it.
    let out = status_over(&url, &[("--tlscacert", f("nope.pem"))]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pem"));
}

/// Ctrl-C ends `--watch` at once even while a fetch hangs: here on a listener that accepts and
/// never answers (a test double for a stuck gateway), with a 30 s `--timeout`.
#[test]
fn ctrl_c_stops_a_watch_in_the_middle_of_a_fetch() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let mut watch = Command::new(support::binary("busbarctl"))
        .args(["status", "--url", &url, "--watch", "1", "--timeout", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _conn = held.join().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = watch.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let asked = Instant::now();
    let mut exited = None;
    wait_until(Duration::from_secs(10), || {
        exited = watch.try_wait().unwrap();
        exited.is_some()
    });
    let Some(code) = exited else {
        let _ = watch.kill();
        panic!("busbarctl status --watch did not stop on SIGINT during a fetch");
    };
    assert!(code.success(), "{code:?}");
    println!("stopped {:?} after SIGINT", asked.elapsed());
}

/// The recent window of the embedded test, in seconds (`--status-window`): short, so that the
/// test sees it forget.
const WINDOW_S: u64 = 15;

/// An embedded gateway (no `--agent`) on one engine, with a pre-hook on creates from its
/// `--config` file and its metrics listener on loopback. The adapter (a fake: a test double)
/// refuses creates of names starting `refuse-` (a 403 the client gets), answers those of names
/// starting `break-` with something that is not the protocol's (a failed call: a 502), and
/// passes the rest.
struct Embedded {
    gateway: Process,
    metrics: String,
    config: PathBuf,
    _adapter: FakeAdapter,
    _dir: TempDir,
}

fn policy(payload: &Value) -> support::adapters::Answer {
    let uri = payload["ClientRequest"]["Request"].as_str().unwrap_or("");
    if uri.contains("name=refuse-") {
        support::adapters::Answer {
            status: 403,
            body: "refused by policy: no refuse-* names".into(),
            delay: Duration::ZERO,
        }
    } else if uri.contains("name=break-") {
        support::adapters::Answer {
            status: 200,
            body: "this is not the protocol".into(),
            delay: Duration::ZERO,
        }
    } else {
        null(payload)
    }
}

fn embedded(engine: &str) -> Embedded {
    let adapter = FakeAdapter::start(policy);
    let dir = TempDir::new();
    let config = dir.join("adapters.yml");
    std::fs::write(
        &config,
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [policy]\nadapters:\n  policy: {}\n",
            adapter.url
        ),
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let window = WINDOW_S.to_string();
    let gateway = Process::gateway(&[
        "--docker",
        engine,
        "--config",
        config.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
        "--status-window",
        &window,
    ]);
    Embedded {
        gateway,
        metrics,
        config,
        _adapter: adapter,
        _dir: dir,
    }
}

impl Embedded {
    fn url(&self) -> String {
        format!("http://{}", self.metrics)
    }

    fn status(&self) -> Result<Value, String> {
        let out = busbarctl(&["status", "--url", &self.url(), "--json", "--timeout", "3"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits until `busbarctl status --json` satisfies `ok`, and returns that document.
    fn wait(&self, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Err("not asked".to_owned());
        let seen = wait_until(within, || {
            last = self.status();
            last.as_ref().is_ok_and(&ok)
        });
        assert!(
            seen,
            "busbarctl status never showed {what} within {within:?}: {last:?}\n{}",
            self.gateway.log_tail()
        );
        last.unwrap()
    }
}

/// An adapter's calls, errors and refusals.
type Figures = (u64, u64, u64);

/// The `policy` adapter's figures in a status: since start, and in the recent window.
fn policy_figures(s: &Value) -> Option<(Figures, Figures)> {
    let a = s["nodes"][0]["adapters"]
        .as_array()?
        .iter()
        .find(|a| a["adapter"] == "policy")?;
    let three = |v: &Value| {
        Some((
            v["calls"].as_u64()?,
            v["errors"].as_u64()?,
            v["refusals"].as_u64()?,
        ))
    };
    Some((three(a)?, three(&a["recent"])?))
}

#[test]
fn an_embedded_gateway_shows_its_node_and_a_burst_of_failing_hooks_in_the_recent_window() {
    testbed::e2e!();
    let chromium = chromium_or_skip();
    if chromium.is_none() {
        return;
    }
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let engine = bed.hosts()[0].docker_url();
    let e = embedded(&engine);
    let gw = e.gateway.url.clone();

    // The one local node, healthy, with its engine, its chains from the file, and no call yet.
    let s = e.wait("the local node healthy", Duration::from_secs(20), |s| {
        s["nodes"][0]["health"] == "Healthy" && s["nodes"][0]["containers"].is_u64()
    });
    assert_eq!(s["gateway"]["mode"], "embedded", "{s}");
    assert_eq!(s["gateway"]["window_s"], WINDOW_S as f64, "{s}");
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{s}");
    let n = &nodes[0];
    let info: Value = serde_json::from_str(&docker_ok(&gw, &["info", "--format", "{{json .}}"]))
        .expect("docker info as JSON");
    assert_eq!(n["name"], info["Name"], "the engine's name: {n}");
    assert_eq!(
        n["engine_version"].as_str(),
        info["ServerVersion"].as_str(),
        "{n}"
    );
    assert!(n["probe_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{n}");
    let chains = &n["chains"];
    assert_eq!(chains["source"], "file", "{n}");
    assert_eq!(chains["file"].as_str(), e.config.to_str(), "{n}");
    assert_eq!(
        chains["endpoints"][0]["key"], "POST /*/containers/create",
        "{n}"
    );
    assert_eq!(
        chains["endpoints"][0]["pre"],
        serde_json::json!(["policy"]),
        "{n}"
    );
    assert!(chains.get("refused").is_none(), "{n}");
    let before = n["containers"].as_u64().unwrap();

    // A container started through it: counted on the node, and its create's hook call too.
    let name = unique_name("status-embedded");
    let id = docker_ok(
        &gw,
        &["run", "-d", "--name", &name, "busybox", "sleep", "120"],
    );
    let s = e.wait(
        "the new container and its hook call",
        Duration::from_secs(15),
        |s| {
            s["nodes"][0]["containers"].as_u64() == Some(before + 1)
                && policy_figures(s).is_some_and(|(total, _)| total == (1, 0, 0))
        },
    );
    assert_eq!(
        policy_figures(&s).unwrap().1,
        (1, 0, 0),
        "the call is in the window: {s}"
    );

    // The page, in Chromium: the node healthy, the container counted, the chain listed.
    let shots = shots_dir();
    let mut b = Browser::open(&chromium.unwrap(), &format!("{}/status", e.url()), &shots);
    let seen = b.ask("wait 1 0 10", Duration::from_secs(10));
    assert_eq!(
        seen["ok"], true,
        "the page does not show the node healthy: {seen}"
    );
    let (status, page) = support::http_get(&e.metrics, "/status");
    assert_eq!(status, 200);
    let node_name = n["name"].as_str().unwrap();
    let row = format!("<tr data-node=\"{node_name}\" data-health=\"Healthy\"><td>{node_name}</td><td class=\"health Healthy\">Healthy</td><td class=\"num\">{}</td>", before + 1);
    assert!(page.contains(&row), "{row} not in {page}");
    assert!(page.contains("embedded (one machine)"), "{page}");
    assert!(
        page.contains("<td><code>POST /*/containers/create</code></td><td>policy</td>"),
        "{page}"
    );
    let shot = b.ask("shot embedded", Duration::ZERO);
    eprintln!("screenshot (artifact): {}", shot["path"].as_str().unwrap());

    // The window forgets the run once it has passed; the totals keep it.
    let started = Instant::now();
    let s = e.wait(
        "the window empty",
        Duration::from_secs(WINDOW_S + 15),
        |s| policy_figures(s).is_some_and(|(_, recent)| recent == (0, 0, 0)),
    );
    eprintln!("the window forgot the run after {:?}", started.elapsed());
    assert_eq!(policy_figures(&s).unwrap().0, (1, 0, 0), "{s}");

    // The burst: 3 creates the adapter refuses (403), 2 it answers with garbage (502).
    for i in 0..3 {
        let out = docker(
            &gw,
            &["create", "--name", &format!("refuse-{i}-{name}"), "busybox"],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused by policy"), "{err}");
    }
    for i in 0..2 {
        let out = docker(
            &gw,
            &["create", "--name", &format!("break-{i}-{name}"), "busybox"],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("policy"), "the error names the adapter: {err}");
    }
    let burst = Instant::now();
    // At once, exactly the burst in the window: 5 calls, 2 failed, 3 refused; the gateway's
    // requests in the window: the 3 refusals (4xx) and the 2 failures (5xx).
    let s = e.status().unwrap();
    let (total, recent) = policy_figures(&s).unwrap();
    assert_eq!(recent, (5, 2, 3), "{s}");
    assert_eq!(total, (6, 2, 3), "{s}");
    let r = &s["gateway"]["recent"];
    assert_eq!(
        (r["requests_4xx"].as_u64(), r["requests_5xx"].as_u64()),
        (Some(3), Some(2)),
        "{s}"
    );
    // The screen says so too.
    let out = busbarctl(&["status", "--url", &e.url()]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("embedded · 1 of 1 nodes healthy"),
        "{screen}"
    );
    assert!(screen.contains(&format!("last {WINDOW_S}s: ")), "{screen}");
    assert!(screen.contains("(3 4xx, 2 5xx)"), "{screen}");
    let line = screen
        .lines()
        .find(|l| l.starts_with("policy"))
        .unwrap_or_else(|| panic!("no adapter line: {screen}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    // ADAPTER NODE CALLS/15s ERRORS/15s (share) REFUSALS/15s MEAN/15s CALLS ERRORS (share) ...
    assert_eq!(&cells[2..5], ["5", "2", "(40.0%)"], "{line}");
    assert_eq!(cells[5], "3", "{line}");
    assert_eq!(&cells[7..10], ["6", "2", "(33.3%)"], "{line}");

    // The page shows it without a reload, within its refresh.
    let mut last = Value::Null;
    let shown = wait_until(Duration::from_secs(10), || {
        last = b.ask("row policy", Duration::ZERO);
        last["rows"][0].as_array().is_some_and(|cells| {
            cells.len() == 11
                && cells[2] == "5"
                && cells[3] == "2 (40.0%)"
                && cells[4] == "3"
                && cells[6] == "6"
        })
    });
    assert!(shown, "the page does not show the burst: {last}");
    assert!(
        last["recent"]
            .as_str()
            .is_some_and(|t| t.contains("(3 4xx, 2 5xx)")),
        "{last}"
    );
    let seen = b.ask("wait 1 0 1", Duration::from_secs(1));
    assert_eq!(seen["marker"], true, "the page was reloaded: {seen}");
    let shot = b.ask("shot embedded-burst", Duration::ZERO);
    eprintln!("screenshot (artifact): {}", shot["path"].as_str().unwrap());
    eprintln!("the page showed the burst {:?} after it", burst.elapsed());

    // On a phone.
    assert_readable_on_a_phone(&mut b, "phone-embedded");

    // Once the window has passed, the burst is gone from it and stays in the totals.
    let s = e.wait(
        "the window empty after the burst",
        Duration::from_secs(WINDOW_S + 15),
        |s| policy_figures(s).is_some_and(|(_, recent)| recent == (0, 0, 0)),
    );
    assert_eq!(policy_figures(&s).unwrap().0, (6, 2, 3), "{s}");
    assert_eq!(s["gateway"]["recent"]["requests_4xx"], 0, "{s}");
    eprintln!("the window forgot the burst {:?} after it", burst.elapsed());
    let _ = docker(&gw, &["rm", "-f", &id]);
}

/// A gateway in front of one agent (one `--agent`: a remote engine) serves the same status:
/// that node, probed as a cluster's are (every 3 s, 3 s to answer).
#[test]
fn a_gateway_in_front_of_one_agent_shows_that_node_and_when_its_agent_dies() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let certs = TempDir::new();
    let addr = host.addr().unwrap().to_string();
    make_certs(&certs.0, &[("node1", &addr)]);
    let (mut agent, at) = Process::agent_in(host, "node1", &certs.0, &[]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--agent".to_owned(), format!("node1={at}")];
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend(["--metrics-listen".to_owned(), metrics.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    let url = format!("http://{metrics}");
    let status = || -> Result<Value, String> {
        let out = busbarctl(&["status", "--url", &url, "--json", "--timeout", "3"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    };

    let id = docker_ok(&gateway.url, &["run", "-d", "busybox", "sleep", "60"]);
    let running = docker_ok(&gateway.url, &["info", "--format", "{{.Containers}}"]);
    let mut last = Err("not asked".to_owned());
    let seen = wait_until(Duration::from_secs(20), || {
        last = status();
        last.as_ref().is_ok_and(|s| {
            healthy_count(s) == 1
                && s["nodes"][0]["containers"].as_u64().map(|c| c.to_string())
                    == Some(running.clone())
        })
    });
    assert!(
        seen,
        "busbarctl status never showed node1 healthy with {running} containers: {last:?}\n{}",
        gateway.log_tail()
    );
    let s = last.clone().unwrap();
    assert_eq!(s["gateway"]["mode"], "remote", "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s}");
    let n = node(&s, "node1");
    assert!(
        n["engine_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{n}"
    );
    assert_eq!(n["chains"]["source"], "none", "{n}");
    let (code, page) = support::http_get(&metrics, "/status");
    assert_eq!(code, 200);
    assert!(
        page.contains("<tr data-node=\"node1\" data-health=\"Healthy\">"),
        "{page}"
    );

    agent.kill();
    let killed = Instant::now();
    let seen = wait_until(Duration::from_secs(15), || {
        last = status();
        last.as_ref()
            .is_ok_and(|s| s["nodes"][0]["health"] == "Unhealthy")
    });
    assert!(seen, "node1 never showed unhealthy: {last:?}");
    eprintln!(
        "busbarctl status showed node1 unhealthy {:?} after its agent was killed",
        killed.elapsed()
    );
    let _ = id;
}
