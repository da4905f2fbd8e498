//! One W3C trace per request across the cluster, end to end: a real etcd, an agent in its own
//! network namespace on a real engine (registered in etcd), a gateway that finds it there,
//! the real `docker` CLI, and a real adapter process on container create: the kit's Python
//! example (`adapter-kit/examples/hello.py`), which prints the `traceparent` it received.
//! `grep TRACE_ID` over the three logs must show the path of one `docker run`'s create.
//!
//! Wall time on 2 vCPUs (bed start included, about 10 s): ~20 s.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{binary, http_raw, make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, free_port, unique_name, wait_until, Testbed, TestbedSpec};

/// The trace id and parent id of the `traceparent` that `line` of hello's log shows.
fn received(line: &str) -> (String, String) {
    let tp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("traceparent="))
        .unwrap_or_else(|| panic!("no traceparent in {line:?}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert!(parts[1].len() == 32 && parts[2].len() == 16, "{tp}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// The lines of `log` that carry `trace_id=TRACE`.
fn lines_of<'a>(log: &'a str, trace: &str) -> Vec<&'a str> {
    let key = format!("trace_id={trace}");
    log.lines().filter(|l| l.contains(&key)).collect()
}

#[test]
fn one_docker_run_is_one_trace_in_the_gateway_the_agent_and_the_adapter() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: true,
    })
    .unwrap();
    let host = &bed.hosts()[0];

    // The adapter: hello.py on the host side of the namespace's link, where the agent reaches it.
    let port = free_port();
    let hello =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapter-kit/examples/hello.py");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec python3 -u \"$0\" \"$@\" 1>&2"])
        .arg(&hello)
        .args(["--host", &host.gateway_addr().unwrap().to_string()])
        .args(["--port", &port.to_string(), "--delay", "0"]);
    let adapter = Process::start_cmd(cmd);
    assert!(
        wait_until(Duration::from_secs(10), || adapter
            .log_text()
            .contains("listening on")),
        "hello.py did not start:\n{}",
        adapter.log_tail()
    );

    // node1, registered in etcd, running hello before every create (its chain from etcd).
    let prefix = format!("/{}", unique_name("trace"));
    let certs = TempDir::new();
    make_certs(&certs.0, &[("node1", &host.addr().unwrap().to_string())]);
    let chains = certs.join("adapters.yml");
    std::fs::write(
        &chains,
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [hello]\nadapters:\n  hello: http://{}:{port}/hello\n",
            host.gateway_addr().unwrap()
        ),
    )
    .unwrap();
    let state = certs.join("state-node1");
    let (agent, _) = Process::agent_in(
        host,
        "node1",
        &certs.0,
        &[
            "--etcd",
            host.etcd_url().unwrap(),
            "--etcd-prefix",
            &prefix,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let ctl = |args: &[&str]| {
        let out = Command::new(binary("busbarctl"))
            .args([
                "--etcd",
                bed.etcd().unwrap(),
                "--etcd-prefix",
                &prefix,
                "--json",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "busbarctl {args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let rev = ctl(&["chain", "apply", "-f", chains.to_str().unwrap()])["revision"]
        .as_i64()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = ctl(&["chain", "status"]);
            s["node1"]["revision"].as_i64().unwrap_or(0) >= rev && s["node1"]["error"].is_null()
        }),
        "node1 does not run the chain:\n{}",
        agent.log_tail()
    );
    let mut args: Vec<String> = vec![
        "--etcd".into(),
        bed.etcd().unwrap().to_owned(),
        "--etcd-prefix".into(),
        prefix.clone(),
    ];
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend(["--probe-interval", "0.5", "--probe-timeout", "1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let out = docker(&gateway.url, &["info"]);
            String::from_utf8_lossy(&out.stdout).contains("Status: Healthy")
        }),
        "the gateway does not see node1 healthy:\n{}",
        gateway.log_tail()
    );

    // 1. The docker CLI sends no traceparent: the gateway starts the trace.
    let out = docker_ok(&gateway.url, &["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(out.trim(), "hi");
    let hooked: Vec<String> = adapter
        .log_text()
        .lines()
        .filter(|l| l.contains("pre-hook POST") && l.contains("/containers/create"))
        .map(str::to_owned)
        .collect();
    assert_eq!(hooked.len(), 1, "one create, one hook call:\n{hooked:?}");
    let (trace, parent) = received(&hooked[0]);
    assert!(
        hooked[0].contains(&format!("trace_id={trace}")),
        "{}",
        hooked[0]
    );
    assert_ne!(parent, "0".repeat(16));
    let (gw_log, agent_log) = (gateway.log_text(), agent.log_text());
    let gw = lines_of(&gw_log, &trace);
    let ag = lines_of(&agent_log, &trace);
    assert!(
        gw.iter().any(|l| l.contains("busbar::access")
            && l.contains("path=/containers/create")
            && l.contains("status=201")),
        "the gateway's access line of the create carries the adapter's trace id {trace}:\n{}",
        gateway.log_tail()
    );
    assert!(
        ag.iter().any(|l| l.contains("busbar::access")
            && l.contains("path=/containers/create")
            && l.contains("status=201")),
        "the agent's access line of the create carries the trace id {trace}:\n{}",
        agent.log_tail()
    );
    // Every line the agent wrote inside the create's span carries it, and the create's
    // trace is its own: the start, the wait... of the same `docker run` have other traces.
    let create_id = ag
        .iter()
        .find_map(|l| l.split(['{', ' ']).find_map(|w| w.strip_prefix("req.id=")))
        .expect("the agent's lines name the request id");
    for l in agent_log
        .lines()
        .filter(|l| l.contains(&format!("req.id={create_id} ")))
    {
        assert!(l.contains(&format!("trace_id={trace}")), "{l}");
    }
    let starts: Vec<&str> = gw_log
        .lines()
        .filter(|l| l.contains("path=/containers/{id}/start") && l.contains("busbar::access"))
        .collect();
    assert!(!starts.is_empty(), "{gw_log}");
    assert!(starts.iter().all(|l| !l.contains(&trace)), "{starts:?}");

    // 2. A client's own traceparent (raw HTTP, as curl would send it) is honoured.
    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let name = unique_name("traced");
    let body = r#"{"Image":"busybox","Cmd":["true"]}"#;
    let raw = http_raw(
        gateway.port,
        &format!(
            "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: busbar\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             traceparent: 00-{CLIENT_TRACE}-00f067aa0ba902b7-01\r\n\
             tracestate: rojo=00f067aa0ba902b7\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 201"), "{raw}");
    let line = adapter
        .log_text()
        .lines()
        .find(|l| l.contains(&format!("trace_id={CLIENT_TRACE}")))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "hello got no call of the client's trace:\n{}",
                adapter.log_tail()
            )
        });
    let (got, parent) = received(&line);
    assert_eq!(got, CLIENT_TRACE);
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the agent's span, not the client's"
    );
    assert!(!lines_of(&gateway.log_text(), CLIENT_TRACE).is_empty());
    assert!(!lines_of(&agent.log_text(), CLIENT_TRACE).is_empty());

    // 3. An invalid one is ignored: the call is served, in a new trace.
    let raw = http_raw(
        gateway.port,
        "GET /v1.41/containers/json HTTP/1.1\r\nHost: busbar\r\n\
         traceparent: 00-zz-00f067aa0ba902b7-01\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));

    docker_ok(&gateway.url, &["rm", "-f", &name]);
}
