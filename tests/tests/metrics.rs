//! Metrics and health end to end: agents in their own network namespaces on real engines, a
//! gateway in front of them, the real `docker` CLI, a fake adapter (a test double) that
//! refuses some creates; `/metrics` scraped from each process over `--metrics-listen` and read
//! with Python's `prometheus_client` OpenMetrics parser (strict: a malformed exposition fails
//! the test), never by grepping.
//!
//! Wall times on 2 vCPUs, each test alone (bed start included, about 10 s): counters ~25 s,
//! readiness ~25 s, the three-host workload in etcd ~14 s.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::adapters::{null, Answer, FakeAdapter};
use support::{make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, free_port, unique_name, wait_until, Testbed, TestbedSpec};

/// One sample of a scrape: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of `addr`'s `/metrics`, as Python's OpenMetrics parser reads them.
fn scrape(addr: &str) -> Vec<Sample> {
    let (status, text) = support::http_get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    const PARSE: &str = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        out = [[s.name, s.labels, s.value] for f in p(sys.stdin.read()) for s in f.samples]\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (tests/run.sh installs prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

/// How much `name` with `want` moved between two scrapes.
fn delta(before: &[Sample], after: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    sum(after, name, want) - sum(before, name, want)
}

/// An agent per host (`nodeN`), each with the `policy` adapter on creates and its metrics on
/// the host's address (beyond loopback: `--allow-remote-plaintext`).
struct Cluster {
    /// Kept running until the test ends.
    _agents: Vec<Process>,
    grpc: Vec<String>,
    metrics: Vec<String>,
    certs: TempDir,
    _chains: TempDir,
}

fn nodes(bed: &Testbed, adapters: &[&FakeAdapter]) -> Cluster {
    let certs = TempDir::new();
    let chains = TempDir::new();
    let names: Vec<String> = (1..=bed.hosts().len())
        .map(|i| format!("node{i}"))
        .collect();
    let sans: Vec<(String, String)> = names
        .iter()
        .zip(bed.hosts())
        .map(|(n, h)| (n.clone(), h.addr().unwrap().to_string()))
        .collect();
    let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    make_certs(&certs.0, &sans);
    let (mut agents, mut grpc, mut metrics) = (vec![], vec![], vec![]);
    for (i, host) in bed.hosts().iter().enumerate() {
        let file = chains.join(&format!("{}.yml", names[i]));
        std::fs::write(
            &file,
            format!(
                "endpoints:\n  \"POST /*/containers/create\":\n    pre: [policy]\nadapters:\n  policy: {}\n",
                adapters[i].url
            ),
        )
        .unwrap();
        let addr = format!("{}:{}", host.addr().unwrap(), free_port());
        let extra = [
            "--config",
            file.to_str().unwrap(),
            "--metrics-listen",
            &addr,
            "--allow-remote-plaintext",
        ];
        let (agent, at) = Process::agent_in(host, &names[i], &certs.0, &extra);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(&addr)
                .is_ok()),
            "no metrics listener on {addr}:\n{}",
            agent.log_tail()
        );
        agents.push(agent);
        grpc.push(at);
        metrics.push(addr);
    }
    Cluster {
        _agents: agents,
        grpc,
        metrics,
        certs,
        _chains: chains,
    }
}

/// A gateway in front of `cluster`'s agents, with its metrics on loopback.
fn gateway(cluster: &Cluster, metrics: &str) -> Process {
    let mut args: Vec<String> = vec![];
    for (i, addr) in cluster.grpc.iter().enumerate() {
        args.extend(["--agent".into(), format!("node{}={addr}", i + 1)]);
    }
    args.extend(tls_args(&cluster.certs.0, "gateway"));
    args.extend(
        [
            "--probe-interval",
            "1",
            "--probe-timeout",
            "2",
            "--metrics-listen",
            metrics,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::gateway(&args)
}

/// A pre-hook that refuses creates labelled `metrics-refuse` (counting its refusals in
/// `refused`) and passes every other call through.
fn policy(refused: Arc<AtomicUsize>) -> impl Fn(&Value) -> Answer + Send + Sync {
    move |payload| {
        let body = payload["ClientRequest"]["Body"].as_str().unwrap_or("");
        if body.contains("metrics-refuse") {
            refused.fetch_add(1, Ordering::SeqCst);
            return Answer {
                status: 403,
                body: json!({"message": "refused by policy"}).to_string(),
                delay: Duration::ZERO,
            };
        }
        null(payload)
    }
}

#[test]
fn counters_move_by_exactly_what_the_docker_cli_did() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 2,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let adapters: Vec<FakeAdapter> = bed
        .hosts()
        .iter()
        .map(|h| FakeAdapter::start_on(h.gateway_addr().unwrap(), policy(refused.clone())))
        .collect();
    let cluster = nodes(&bed, &adapters.iter().collect::<Vec<_>>());
    let gw_metrics = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&cluster, &gw_metrics);
    let both_up = wait_until(Duration::from_secs(20), || {
        let s = scrape(&gw_metrics);
        sum(&s, "busbar_node_up", &[]) == 2.0
    });
    assert!(
        both_up,
        "the gateway never saw both nodes up:\n{}",
        gw.log_tail()
    );

    let before_gw = scrape(&gw_metrics);
    let before: Vec<_> = cluster.metrics.iter().map(|a| scrape(a)).collect();
    let calls_before: usize = adapters.iter().map(|a| a.calls().len()).sum();

    let name = unique_name("metrics");
    let id = docker_ok(
        &gw.url,
        &["run", "-d", "--name", &name, "busybox", "sleep", "60"],
    );
    let ps = docker_ok(&gw.url, &["ps", "--no-trunc", "-q"]);
    assert!(ps.contains(&id), "docker ps does not show {id}: {ps}");
    let out = docker(
        &gw.url,
        &[
            "run",
            "-d",
            "--label",
            "metrics-refuse=1",
            "busybox",
            "true",
        ],
    );
    assert!(
        !out.status.success(),
        "the policy adapter let a labelled create through"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused by policy"));

    let after_gw = scrape(&gw_metrics);
    let after: Vec<_> = cluster.metrics.iter().map(|a| scrape(a)).collect();
    let calls = adapters.iter().map(|a| a.calls().len()).sum::<usize>() - calls_before;
    let refusals = refused.load(Ordering::SeqCst);

    // The gateway: one create that worked, one refused, one start, one list.
    let req = "busbar_requests_total";
    let d = |want: &[(&str, &str)]| delta(&before_gw, &after_gw, req, want);
    assert_eq!(
        d(&[("endpoint", "container_create"), ("status", "2xx")]),
        1.0
    );
    assert_eq!(
        d(&[("endpoint", "container_create"), ("status", "4xx")]),
        1.0
    );
    assert_eq!(
        d(&[("endpoint", "container_start"), ("status", "2xx")]),
        1.0
    );
    assert_eq!(d(&[("endpoint", "container_list"), ("method", "GET")]), 1.0);
    // The create that worked is labelled with the node it went to, which counted it too.
    let created_on: Vec<&Sample> = after_gw
        .iter()
        .filter(|s| {
            s.name == req
                && s.labels["endpoint"] == "container_create"
                && s.labels["status"] == "2xx"
        })
        .collect();
    assert_eq!(created_on.len(), 1, "{created_on:?}");
    let node = created_on[0].labels["node"].clone();
    let i: usize = node
        .strip_prefix("node")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("create counted on node {node:?}"));
    let on_node = &[
        ("endpoint", "container_create"),
        ("status", "2xx"),
        ("node", node.as_str()),
    ];
    assert_eq!(delta(&before[i - 1], &after[i - 1], req, on_node), 1.0);

    // The agents, together: the same creates; the hook called once per create that reached
    // an agent, each call timed; the adapter's refusals counted as it gave them; the engine
    // timed only for the create the adapter let through.
    let agents = |name: &str, want: &[(&str, &str)]| -> f64 {
        (0..before.len())
            .map(|i| delta(&before[i], &after[i], name, want))
            .sum()
    };
    assert_eq!(
        agents(req, &[("endpoint", "container_create"), ("status", "2xx")]),
        1.0
    );
    assert_eq!(
        agents(req, &[("endpoint", "container_start"), ("status", "2xx")]),
        1.0
    );
    assert!(calls >= 2, "the adapter was called {calls} times");
    let pre = &[("adapter", "policy"), ("phase", "pre")];
    assert_eq!(
        agents("busbar_hook_duration_seconds_count", pre),
        calls as f64
    );
    assert_eq!(agents("busbar_hook_refusals_total", pre), refusals as f64);
    assert_eq!(
        agents("busbar_hook_errors_total", &[("adapter", "policy")]),
        0.0
    );
    assert_eq!(
        agents(
            "busbar_engine_duration_seconds_count",
            &[("endpoint", "container_create")]
        ),
        1.0
    );

    // Both creates were placed by the scheduler (the adapter refused the second on its node).
    assert_eq!(
        delta(
            &before_gw,
            &after_gw,
            "busbar_schedule_decisions_total",
            &[("outcome", "placed")]
        ),
        2.0
    );

    // Gauges and the process.
    assert_eq!(sum(&after_gw, "busbar_node_up", &[("node", "node1")]), 1.0);
    assert_eq!(sum(&after_gw, "busbar_node_up", &[("node", "node2")]), 1.0);
    assert!(
        sum(
            &after_gw,
            "busbar_node_probe_duration_seconds_count",
            &[("node", "node1")]
        ) > 0.0
    );
    for s in [&after_gw, &after[0], &after[1]] {
        assert!(sum(s, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(sum(s, "process_open_fds", &[]) > 0.0);
        assert!(sum(s, "process_cpu_seconds_total", &[]) > 0.0);
    }

    // Bounded: no label names the container, by id or name; endpoints are classes.
    let short = &id[..12];
    for s in after_gw.iter().chain(after.iter().flatten()) {
        for (k, v) in &s.labels {
            assert!(
                !v.contains(short) && !v.contains(&name),
                "{} has {k}={v:?}, naming the container",
                s.name
            );
            if k == "endpoint" {
                assert!(
                    v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{} has endpoint={v:?}",
                    s.name
                );
            }
        }
    }
    // A hijacked session: `docker exec` through the gateway, spliced on the gateway and on
    // the agent; counted once it closes.
    let before_exec = scrape(&gw_metrics);
    let said = docker_ok(&gw.url, &["exec", &id, "echo", "metrics-exec"]);
    assert_eq!(said, "metrics-exec");
    let mut now = vec![];
    let closed = wait_until(Duration::from_secs(10), || {
        now = scrape(&gw_metrics);
        sum(&now, "busbar_hijacked_sessions_open", &[]) == 0.0
            && delta(&before_exec, &now, "busbar_hijacked_bytes_total", &[]) > 0.0
    });
    assert!(closed, "the exec session was not counted closed: {now:?}");
    let d = |want: &[(&str, &str)]| delta(&before_exec, &now, req, want);
    assert_eq!(d(&[("endpoint", "exec_create"), ("status", "2xx")]), 1.0);
    assert_eq!(d(&[("endpoint", "exec_start")]), 1.0);
    assert!(
        delta(
            &before_exec,
            &now,
            "busbar_hijacked_bytes_total",
            &[("direction", "to_client")]
        ) >= "metrics-exec\n".len() as f64
    );

    let (status, body) = support::http_get(&gw_metrics, "/healthz");
    assert_eq!((status, body.trim()), (200, r#"{"status":"ok"}"#));
    docker_ok(&gw.url, &["rm", "-f", &id]);
}

#[test]
fn readyz_follows_the_engine() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let adapter = FakeAdapter::start_on(bed.hosts()[0].gateway_addr().unwrap(), null);
    let cluster = nodes(&bed, &[&adapter]);
    let agent = cluster.metrics[0].clone();
    let gw_metrics = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&cluster, &gw_metrics);
    let ready = |addr: &str| support::http_get(addr, "/readyz");
    assert!(
        wait_until(Duration::from_secs(20), || ready(&agent).0 == 200
            && ready(&gw_metrics).0 == 200),
        "not ready: agent {:?}, gateway {:?}\n{}",
        ready(&agent),
        ready(&gw_metrics),
        gw.log_tail()
    );

    bed.hosts()[0].stop_engine().unwrap();
    // The agent asks its engine at each /readyz; the gateway knows within a probe interval.
    let mut last = (0, String::new());
    let not_ready = wait_until(Duration::from_secs(15), || {
        last = ready(&agent);
        last.0 == 503
    });
    assert!(not_ready, "the agent stayed ready: {last:?}");
    let doc: Value = serde_json::from_str(&last.1).unwrap();
    assert_eq!(doc["ready"], false);
    assert!(
        doc["reason"].as_str().unwrap().contains("engine:")
            && doc["reason"].as_str().unwrap().contains("Docker engine"),
        "{doc}"
    );
    let gw_not_ready = wait_until(Duration::from_secs(15), || {
        last = ready(&gw_metrics);
        last.0 == 503
    });
    assert!(gw_not_ready, "the gateway stayed ready: {last:?}");
    let doc: Value = serde_json::from_str(&last.1).unwrap();
    assert!(
        doc["reason"]
            .as_str()
            .unwrap()
            .contains("engine unreachable"),
        "{doc}"
    );

    bed.hosts()[0].start_engine().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || ready(&agent).0 == 200
            && ready(&gw_metrics).0 == 200),
        "not ready again: agent {:?}, gateway {:?}",
        ready(&agent),
        ready(&gw_metrics)
    );
    assert_eq!(support::http_get(&agent, "/healthz").0, 200);
}

/// A pre-hook that answers creates labelled `metrics-slow` after `delay` (past its timeout in
/// the chain) and passes every other call through at once.
fn slow(delay: Duration) -> impl Fn(&Value) -> Answer + Send + Sync {
    move |payload| {
        let body = payload["ClientRequest"]["Body"].as_str().unwrap_or("");
        let mut answer = null(payload);
        if body.contains("metrics-slow") {
            answer.delay = delay;
        }
        answer
    }
}

/// The acceptance workload on three hosts in etcd: N pings, M creates that work, a create
/// under a name in use, one the policy adapter refuses and one the slow adapter holds past its
/// timeout. The scraped series move by exactly what that implies, on the gateway and on each
/// agent; the etcd watches report their lag and no restart.
#[test]
fn a_scripted_workload_on_three_hosts_counts_exactly() {
    testbed::e2e!();
    use support::crosshost::{apply_chain, NODES};
    const PINGS: usize = 7;
    const CREATES: usize = 4;
    let bed = Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: true,
    })
    .unwrap();
    let prefix = format!("/{}", unique_name("bbmetrics"));
    let certs = TempDir::new();
    let sans: Vec<(String, String)> = NODES
        .iter()
        .zip(bed.hosts())
        .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
        .collect();
    let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    make_certs(&certs.0, &sans);
    // Every host reaches the root namespace's addresses by its default route.
    let at = bed.hosts()[0].gateway_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let policy = FakeAdapter::start_on(at, policy(refused.clone()));
    let slow = FakeAdapter::start_on(at, slow(Duration::from_secs(4)));
    let (mut agents, mut metrics) = (vec![], vec![]);
    for (host, node) in bed.hosts().iter().zip(NODES) {
        let addr = format!("{}:{}", host.addr().unwrap(), free_port());
        let args = [
            "--etcd",
            host.etcd_url().unwrap(),
            "--etcd-prefix",
            &prefix,
            "--metrics-listen",
            &addr,
            "--allow-remote-plaintext",
        ];
        agents.push(Process::agent_in(host, node, &certs.0, &args).0);
        metrics.push(addr);
    }
    let chain = certs.join("chain.yml");
    std::fs::write(
        &chain,
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [policy, slow]\nadapters:\n  policy: {}\n  slow:\n    url: {}\n    timeout: 1s\n",
            policy.url, slow.url
        ),
    )
    .unwrap();
    apply_chain(bed.etcd().unwrap(), &prefix, &chain);
    let gw_metrics = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = ["--etcd", bed.etcd().unwrap(), "--etcd-prefix", &prefix]
        .map(String::from)
        .to_vec();
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend(["--probe-interval", "1", "--metrics-listen", &gw_metrics].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Process::gateway(&args);
    let all_up = wait_until(Duration::from_secs(30), || {
        sum(&scrape(&gw_metrics), "busbar_node_up", &[]) == 3.0
    });
    assert!(
        all_up,
        "the gateway never saw 3 nodes up:\n{}",
        gw.log_tail()
    );

    let before_gw = scrape(&gw_metrics);
    let before: Vec<_> = metrics.iter().map(|a| scrape(a)).collect();
    let port: u16 = gw.url.rsplit(':').next().unwrap().parse().unwrap();
    for _ in 0..PINGS {
        let raw = support::http_raw(
            port,
            "GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    }
    let names: Vec<String> = (0..CREATES).map(|_| unique_name("metrics")).collect();
    for name in &names {
        docker_ok(&gw.url, &["create", "--name", name, "busybox", "true"]);
    }
    let attempt = |args: &[&str], says: &str| {
        let out = docker(&gw.url, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    };
    attempt(
        &["create", "--name", &names[0], "busybox", "true"],
        "is already in use",
    );
    let refused_name = unique_name("metrics");
    attempt(
        &[
            "create",
            "--name",
            &refused_name,
            "--label",
            "metrics-refuse=1",
            "busybox",
            "true",
        ],
        "refused by policy",
    );
    let slow_name = unique_name("metrics");
    attempt(
        &[
            "create",
            "--name",
            &slow_name,
            "--label",
            "metrics-slow=1",
            "busybox",
            "true",
        ],
        "slow",
    );
    let after_gw = scrape(&gw_metrics);
    let after: Vec<_> = metrics.iter().map(|a| scrape(a)).collect();

    let req = "busbar_requests_total";
    let gw_d = |name: &str, want: &[(&str, &str)]| delta(&before_gw, &after_gw, name, want);
    let agents_d = |name: &str, want: &[(&str, &str)]| -> f64 {
        (0..3)
            .map(|i| delta(&before[i], &after[i], name, want))
            .sum()
    };
    let create = ("endpoint", "container_create");
    // The gateway: every ping (ours, and the one each `docker` command starts with), every
    // create by its answer's class.
    assert_eq!(
        gw_d(req, &[("endpoint", "ping")]),
        (PINGS + CREATES + 3) as f64
    );
    assert_eq!(gw_d(req, &[create, ("status", "2xx")]), CREATES as f64);
    assert_eq!(
        gw_d(req, &[create, ("status", "4xx")]),
        2.0,
        "conflict and refusal"
    );
    assert_eq!(
        gw_d(req, &[create, ("status", "5xx")]),
        1.0,
        "the slow adapter"
    );
    assert_eq!(
        gw_d("busbar_name_claims_total", &[("outcome", "claimed")]),
        (CREATES + 2) as f64
    );
    assert_eq!(
        gw_d("busbar_name_claims_total", &[("outcome", "conflict")]),
        1.0
    );
    assert_eq!(
        gw_d("busbar_schedule_decisions_total", &[("outcome", "placed")]),
        (CREATES + 3) as f64,
        "a create is placed before its name is claimed"
    );
    // Each node counted what the gateway sent it.
    for (i, node) in NODES.iter().enumerate() {
        let sent = gw_d(req, &[create, ("node", node)]);
        let served = delta(&before[i], &after[i], req, &[create, ("node", node)]);
        assert_eq!(sent, served, "creates on {node}");
    }
    // The agents: the conflict never reached one; the other creates ran the chain.
    let reached = (CREATES + 2) as f64;
    assert_eq!(agents_d(req, &[create]), reached);
    assert_eq!(agents_d(req, &[create, ("status", "5xx")]), 1.0);
    let pre = |adapter| [("adapter", adapter), ("phase", "pre")];
    assert_eq!(
        agents_d("busbar_hook_duration_seconds_count", &pre("policy")),
        reached
    );
    assert_eq!(agents_d("busbar_hook_refusals_total", &pre("policy")), 1.0);
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert_eq!(
        agents_d("busbar_hook_duration_seconds_count", &pre("slow")),
        reached - 1.0,
        "every create the policy let through"
    );
    assert_eq!(
        agents_d(
            "busbar_hook_errors_total",
            &[("adapter", "slow"), ("kind", "timeout")]
        ),
        1.0
    );
    assert_eq!(agents_d("busbar_hook_errors_total", &[]), 1.0);
    assert_eq!(
        agents_d("busbar_engine_duration_seconds_count", &[create]),
        CREATES as f64
    );

    // The etcd watches: each has reported how far behind it runs (asked every 5 s), none
    // restarted, and each has delivered up to a revision.
    let mut now = (vec![], vec![]);
    let lags = wait_until(Duration::from_secs(20), || {
        now.0 = scrape(&gw_metrics);
        now.1 = metrics.iter().map(|a| scrape(a)).collect::<Vec<_>>();
        let lag = "busbar_etcd_watch_lag_seconds_count";
        sum(&now.0, lag, &[("watch", "nodes")]) > 0.0
            && now.1.iter().all(|s| {
                sum(s, lag, &[("watch", "chains")]) > 0.0
                    && sum(s, lag, &[("watch", "registration")]) > 0.0
            })
    });
    assert!(lags, "a watch reported no lag: {now:?}");
    for s in std::iter::once(&now.0).chain(&now.1) {
        assert_eq!(sum(s, "busbar_etcd_watch_restarts_total", &[]), 0.0);
        assert!(sum(s, "busbar_etcd_watch_revision", &[]) > 0.0);
    }
    for name in &names {
        docker_ok(&gw.url, &["rm", "-f", name]);
    }
    drop(agents);
}
