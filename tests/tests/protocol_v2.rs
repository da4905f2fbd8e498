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
