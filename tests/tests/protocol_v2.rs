//! Protocol version 2 and the hook call log end to end: a real engine, the agent with a
//! version-2 `adapters.yml`, the real `docker` CLI, and fake adapters (test doubles that
//! record what they are told, in one shared order). What a user checks: `docker create`
//! answered by an adapter creates nothing on the engine; a `docker run` the engine refuses
//! unwinds the pre-hooks that ran, last first; the call log shows the create without its
//! secrets.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::adapters::{null, Answer, FakeAdapter};
use support::{Process, TempDir};
use testbed::{docker, docker_ok, unique_name, Testbed};

fn engine() -> String {
    Testbed::shared().hosts()[0].docker_url()
}

/// An agent running the chains in `yaml` with `extra` flags.
fn agent_with(yaml: &str, dir: &TempDir, extra: &[&str]) -> Process {
    let path = dir.join("adapters.yml");
    std::fs::write(&path, yaml).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Process::agent(&engine(), &args)
}

/// What every adapter was called for, in one order: `(adapter, Type)`.
type Order = Arc<Mutex<Vec<(String, String)>>>;

/// A v2 adapter that passes pre-hooks on, answers unwind calls, and notes each call in `order`.
fn v2_pass(name: &'static str, order: &Order) -> impl Fn(&Value) -> Answer + Send + Sync {
    let order = order.clone();
    move |call| {
        let kind = call["Type"].as_str().unwrap_or("").to_owned();
        order.lock().unwrap().push((name.to_owned(), kind.clone()));
        if kind == "pre-hook" {
            let mut request = call["ClientRequest"].clone();
            request.as_object_mut().unwrap().remove("Headers");
            Answer::json(json!({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}))
        } else {
            Answer::json(json!({}))
        }
    }
}

#[test]
fn a_v2_pre_hook_answers_docker_create_itself_and_the_engine_creates_nothing() {
    testbed::e2e!();
    let dry = FakeAdapter::start(|call: &Value| {
        let asked = call["ClientRequest"]["Request"].as_str().unwrap_or("");
        if asked.contains("name=dry-") {
            Answer::json(json!({
                "PowerstripProtocolVersion": 2,
                "Response": {
                    "Code": 201,
                    "ContentType": "application/json",
                    "Body": json!({"Id": "0123456789ab-dry-run", "Warnings": []}).to_string(),
                }
            }))
        } else {
            let mut request = call["ClientRequest"].clone();
            request.as_object_mut().unwrap().remove("Headers");
            Answer::json(json!({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}))
        }
    });
    let dir = TempDir::new();
    let agent = agent_with(
        &format!(
            "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [dry]\n\
             adapters:\n  dry:\n    url: {}\n    protocol: 2\n",
            dry.url
        ),
        &dir,
        &[],
    );
    let name = unique_name("dry");
    let printed = docker_ok(&agent.url, &["create", "--name", &name, "busybox", "true"]);
    assert_eq!(
        printed, "0123456789ab-dry-run",
        "the CLI prints the adapter's Id"
    );
    let on_engine = docker_ok(
        &engine(),
        &["ps", "-a", "-q", "--filter", &format!("name={name}")],
    );
    assert_eq!(on_engine, "", "the engine created nothing");
    let calls = dry.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["PowerstripProtocolVersion"], 2);
    assert!(calls[0]["ClientRequest"]["Headers"]["user-agent"][0]
        .as_str()
        .unwrap()
        .starts_with("Docker-Client/"));
    assert!(calls[0]["Caller"]["RequestId"].as_str().is_some());

    // Any other name goes through to the engine.
    let real = unique_name("real");
    docker_ok(&agent.url, &["create", "--name", &real, "busybox", "true"]);
    docker_ok(&engine(), &["rm", &real]);
}

#[test]
fn a_run_the_engine_refuses_unwinds_both_v2_pre_hooks_last_first_and_v1_sees_only_v1() {
    testbed::e2e!();
    let order: Order = Arc::default();
    let first = FakeAdapter::start(v2_pass("first", &order));
    let legacy = FakeAdapter::start(null);
    let second = FakeAdapter::start(v2_pass("second", &order));
    let dir = TempDir::new();
    let log = dir.join("hook-calls.jsonl");
    let agent = agent_with(
        &format!(
            "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [first, legacy, second]\n\
             adapters:\n  first:\n    url: {}\n    protocol: 2\n    debug: true\n  legacy: {}\n  second:\n    url: {}\n    protocol: 2\n",
            first.url, legacy.url, second.url
        ),
        &dir,
        &["--hook-log", log.to_str().unwrap()],
    );
    // The name is taken on the engine: the create is refused with a 409.
    let name = unique_name("taken");
    docker_ok(&engine(), &["create", "--name", &name, "busybox", "true"]);
    let out = docker(
        &agent.url,
        &[
            "run",
            "--name",
            &name,
            "-e",
            "TOKEN=hunter2",
            "busybox",
            "true",
        ],
    );
    docker_ok(&engine(), &["rm", &name]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is already in use"), "{stderr}");

    let order = order.lock().unwrap().clone();
    let seen: Vec<(&str, &str)> = order
        .iter()
        .map(|(a, k)| (a.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("first", "pre-hook"),
            ("second", "pre-hook"),
            ("second", "unwind"),
            ("first", "unwind"),
        ]
    );
    let unwind = &second.calls()[1];
    assert_eq!(unwind["Failure"]["Stage"], "engine");
    assert_eq!(unwind["Failure"]["Code"], 409);
    assert!(unwind["Failure"]["Body"]
        .as_str()
        .unwrap()
        .contains("already in use"));
    // The v1 adapter: one call, exactly the v1 keys.
    let l = legacy.calls();
    assert_eq!(l.len(), 1);
    let keys: Vec<&String> = l[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ClientRequest", "PowerstripProtocolVersion", "Type"]);
    let request_keys: Vec<&String> = l[0]["ClientRequest"].as_object().unwrap().keys().collect();
    assert_eq!(request_keys, ["Body", "Method", "Request"]);
    assert_eq!(l[0]["PowerstripProtocolVersion"], 1);

    // The call log of `first` (debug: true): its pre-hook and its unwind, Env values hidden.
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        testbed::wait_until(Duration::from_secs(10), || read().lines().count() >= 2),
        "two lines in the hook call log: {}",
        read()
    );
    let text = read();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["pre-hook", "unwind"]);
    assert!(lines.iter().all(|l| l["adapter"] == "first"));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("TOKEN=<redacted>"), "{text}");
    assert_eq!(lines[0]["status"], 200);
}

#[test]
fn busbarctl_adapter_log_reads_and_follows_a_nodes_call_log_through_the_gateway() {
    use std::io::BufRead;
    use support::{binary, busbarctl, expose, make_certs, tls_args};
    use testbed::free_port;
    testbed::e2e!();
    // A cluster gateway (two nodes): a gateway with one --agent is that node's transparent
    // remote engine, with no adapter API.
    let bed = Testbed::shared_with(testbed::TestbedSpec {
        hosts: 2,
        netns: true,
        etcd: false,
    });
    let hosts = &bed.hosts()[..2];
    let certs = TempDir::new();
    let addrs: Vec<String> = hosts
        .iter()
        .map(|h| h.addr().unwrap().to_string())
        .collect();
    make_certs(&certs.0, &[("node1", &addrs[0]), ("node2", &addrs[1])]);
    let d = certs.0.display().to_string();
    for (name, role, san) in [
        ("front", "gateway", Some("127.0.0.1")),
        ("author", "adapter", None),
    ] {
        let mut args = vec![
            "certs", "issue", "--dir", &d, "--name", name, "--role", role,
        ];
        if let Some(san) = san {
            args.extend(["--san", san]);
        }
        assert!(busbarctl(&args).status.success(), "issue {name}");
    }
    let order: Order = Arc::default();
    let adapter = FakeAdapter::start(v2_pass("ipam", &order));
    let dir = TempDir::new();
    let mut agents = vec![];
    let mut args = vec![];
    for (i, host) in hosts.iter().enumerate() {
        let node = format!("node{}", i + 1);
        let log = dir.join(&format!("{node}-hook-calls.jsonl"));
        let url = expose(&adapter.url, host.gateway_addr().unwrap());
        let chains = dir.join(&format!("{node}-adapters.yml"));
        std::fs::write(
            &chains,
            format!(
                "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [ipam]\n\
                 adapters:\n  ipam:\n    url: {url}\n    protocol: 2\n    debug: true\n"
            ),
        )
        .unwrap();
        let (agent, agent_addr) = Process::agent_in(
            host,
            &node,
            &certs.0,
            &[
                "--config",
                chains.to_str().unwrap(),
                "--hook-log",
                log.to_str().unwrap(),
            ],
        );
        agents.push(agent);
        args.extend(["--agent".to_string(), format!("{node}={agent_addr}")]);
    }
    let port = free_port();
    let f = |name: &str| certs.join(name).display().to_string();
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend([
        "--tls-listen".into(),
        format!("127.0.0.1:{port}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        f("ca.pem"),
        "--tlscert".into(),
        f("front.pem"),
        "--tlskey".into(),
        f("front-key.pem"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    let gw = format!("https://127.0.0.1:{port}");
    let ctl_args = |extra: &[&str]| {
        let mut a = vec![
            "adapter".to_string(),
            "log".into(),
            "node1".into(),
            "ipam".into(),
            "--gateway".into(),
            gw.clone(),
            "--tlscacert".into(),
            f("ca.pem"),
            "--tlscert".into(),
            f("author.pem"),
            "--tlskey".into(),
            f("author-key.pem"),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Follow first, then create: the line arrives on the follower.
    let mut follower = std::process::Command::new(binary("busbarctl"))
        .args(ctl_args(&["-f"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let name = unique_name("logged");
    docker_ok(
        &gateway.url,
        &[
            "create",
            "--name",
            &name,
            // On the node whose log is followed (the scheduler may pick either).
            "-e",
            "constraint:node==node1",
            "-e",
            "TOKEN=hunter2",
            "busybox",
            "true",
        ],
    );
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let followed = rx.recv_timeout(Duration::from_secs(20));
    let _ = follower.kill();
    let _ = follower.wait();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err);
    let followed = followed.expect("busbarctl adapter log -f printed the create's call");
    let line: Value = serde_json::from_str(&followed)
        .unwrap_or_else(|e| panic!("{e}: {followed:?}; busbarctl said: {err}"));
    assert_eq!(line["adapter"], "ipam");
    assert_eq!(line["node"], "node1");
    assert_eq!(line["type"], "pre-hook");
    assert!(followed.contains("TOKEN=<redacted>"), "{followed}");
    assert!(!followed.contains("hunter2"), "{followed}");

    // Without -f: the log as it is, and busbarctl ends.
    let out = busbarctl(&ctl_args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    docker_ok(&gateway.url, &["rm", &name]);
}
