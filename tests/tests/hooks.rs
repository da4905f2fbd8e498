//! Adapter chains end to end: a real engine, the agent with `--config adapters.yml`, the real
//! `docker` CLI, and fake adapters (test doubles that misbehave on purpose). Together with the
//! unit tests of `chains` and `hooks`, these port Powerstrip's own test list
//! (Powerstrip's own test list): the core and passthru tests are here, named after the
//! originals where one maps.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::adapters::{append_env, edit_response, null, Answer, FakeAdapter};
use support::{http_raw, with_tty, Process, TempDir};
use testbed::{docker, docker_ok, docker_with_stdin, unique_name, wait_until, Testbed};

fn engine() -> String {
    Testbed::shared().hosts()[0].docker_url()
}

/// An agent running the chains in `yaml`, and the file (for edits).
fn agent_with(yaml: &str) -> (Process, TempDir) {
    let dir = TempDir::new();
    let path = dir.join("adapters.yml");
    std::fs::write(&path, yaml).unwrap();
    let agent = Process::agent(&engine(), &["--config", path.to_str().unwrap()]);
    (agent, dir)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn echo_var(agent: &Process, var: &str) -> String {
    docker_ok(
        &agent.url,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("echo ${var}"),
        ],
    )
}

#[test]
fn test_adding_pre_hook_adapter_sets_an_env_var_the_container_prints() {
    testbed::e2e!();
    let adder = FakeAdapter::start(append_env("HOOKED", "yes"));
    let (agent, _dir) = agent_with(&format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [adder]\nadapters:\n  adder: {}\n",
        adder.url
    ));
    assert_eq!(echo_var(&agent, "HOOKED"), "yes");
    // The hook saw the create call, with the body as a JSON string, and nothing else.
    let calls = adder.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["PowerstripProtocolVersion"], 1);
    assert_eq!(calls[0]["Type"], "pre-hook");
    assert_eq!(calls[0]["ClientRequest"]["Method"], "POST");
    assert!(calls[0]["ClientRequest"]["Request"]
        .as_str()
        .unwrap()
        .contains("/containers/create"));
    let body: Value =
        serde_json::from_str(calls[0]["ClientRequest"]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(body["Image"], "busybox");
}

#[test]
fn test_adding_one_then_two_pre_hook_adapter_chains_in_file_order() {
    testbed::e2e!();
    let a = FakeAdapter::start(append_env("ORDER", "a"));
    let b = FakeAdapter::start(append_env("ORDER", "b"));
    let yaml = |first: &str, second: &str| {
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [{first}]\n  \"* /*/containers/cr*\":\n    pre: [{second}]\nadapters:\n  a: {}\n  b: {}\n",
            a.url, b.url
        )
    };
    let (agent, _dir) = agent_with(&yaml("a", "b"));
    assert_eq!(echo_var(&agent, "ORDER"), "ab");
    let (agent, _dir) = agent_with(&yaml("b", "a"));
    assert_eq!(echo_var(&agent, "ORDER"), "ba");
    // Within one endpoint: list order, repeats kept.
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [b, a, b]\nadapters:\n  a: {}\n  b: {}\n",
        a.url, b.url
    ));
    assert_eq!(echo_var(&agent, "ORDER"), "bab");
}

#[test]
fn test_adding_post_hook_adapter_adds_a_field_docker_inspect_shows() {
    testbed::e2e!();
    let noter = FakeAdapter::start(edit_response(|code, doc| {
        if code == 200 {
            doc["BusbarNote"] = json!("seen by the post-hook");
        }
    }));
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/containers/*/json\":\n    post: [noter]\nadapters:\n  noter: {}\n",
        noter.url
    ));
    let name = unique_name("inspect");
    docker_ok(&engine(), &["create", "--name", &name, "busybox"]);
    let shown = docker_ok(
        &agent.url,
        &["inspect", "-f", "{{.BusbarNote}} {{.Name}}", &name],
    );
    docker_ok(&engine(), &["rm", &name]);
    assert_eq!(shown, format!("seen by the post-hook /{name}"));
}

#[test]
fn test_prehook_error_does_not_call_docker_and_stops_chain() {
    testbed::e2e!();
    let refuser = FakeAdapter::start(|_| Answer {
        status: 403,
        body: json!({"message": "refused by policy: no busybox today"}).to_string(),
        delay: Duration::ZERO,
    });
    let after = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [refuser, after]\nadapters:\n  refuser: {}\n  after: {}\n",
        refuser.url, after.url
    ));
    let name = unique_name("refused");
    let out = docker(&agent.url, &["run", "--name", &name, "busybox", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused by policy: no busybox today"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        docker_ok(
            &engine(),
            &["ps", "-aq", "--filter", &format!("name={name}")]
        ),
        "",
        "a container was created"
    );
    assert!(after.calls().is_empty(), "the chain went on after an error");
}

#[test]
fn test_posthook_error_stops_chain_and_reaches_the_client() {
    testbed::e2e!();
    let failing = FakeAdapter::start(|_| Answer {
        status: 500,
        body: "sadness for you, today.".into(),
        delay: Duration::ZERO,
    });
    let after = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/version\":\n    post: [failing, after]\nadapters:\n  failing: {}\n  after: {}\n",
        failing.url, after.url
    ));
    let out = docker(&agent.url, &["version", "--format", "{{.Server.Version}}"]);
    assert!(
        stderr(&out).contains("sadness for you, today."),
        "{}",
        stderr(&out)
    );
    assert!(after.calls().is_empty());
}

#[test]
fn test_docker_error_does_not_stop_posthooks() {
    testbed::e2e!();
    let explainer = FakeAdapter::start(edit_response(|code, doc| {
        if code == 404 {
            let msg = doc["message"].as_str().unwrap_or("").to_string();
            doc["message"] = json!(format!("{msg} (explained by a post-hook)"));
        }
    }));
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/containers/*/json\":\n    post: [explainer]\nadapters:\n  explainer: {}\n",
        explainer.url
    ));
    let out = docker(
        &agent.url,
        &["inspect", "--type", "container", "no-such-container-here"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("No such container: no-such-container-here (explained by a post-hook)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(explainer.calls()[0]["ServerResponse"]["Code"], 404);
}

#[test]
fn test_second_post_hook_gets_new_code_and_the_client_gets_the_last() {
    testbed::e2e!();
    // The first post-hook turns the 404 into a 200 with a document; the second sees that.
    let converter = FakeAdapter::start(|p: &Value| {
        Answer::json(json!({"ModifiedServerResponse": {
            "Code": 200, "ContentType": "application/json", "Body": json!({"Converted": p["ServerResponse"]["Code"]}).to_string()
        }}))
    });
    let second = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/containers/*/json\":\n    post: [converter, second]\nadapters:\n  converter: {}\n  second: {}\n",
        converter.url, second.url
    ));
    let rsp = http_raw(
        agent.port,
        "GET /v1.41/containers/nope/json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let rsp = String::from_utf8(rsp).unwrap();
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert!(rsp.ends_with("{\"Converted\":404}"), "{rsp}");
    assert!(
        rsp.to_ascii_lowercase().contains("content-length: 17\r\n"),
        "{rsp}"
    );
    assert_eq!(second.calls()[0]["ServerResponse"]["Code"], 200);
}

#[test]
fn test_content_length_post_hook_nine_times() {
    testbed::e2e!();
    let grower = FakeAdapter::start(edit_response(|_, doc| {
        let n = doc["Grown"].as_u64().unwrap_or(0);
        doc["Grown"] = json!(n + 1);
        doc["Padding"] = json!("x".repeat(100 * (n as usize + 1)));
    }));
    let mut yaml = String::from("endpoints:\n  \"GET /*/version\":\n    post: [");
    yaml.push_str(&["grower"; 9].join(", "));
    yaml.push_str(&format!("]\nadapters:\n  grower: {}\n", grower.url));
    let (agent, _dir) = agent_with(&yaml);
    let rsp = http_raw(
        agent.port,
        "GET /v1.41/version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let rsp = String::from_utf8(rsp).unwrap();
    let (head, body) = rsp.split_once("\r\n\r\n").unwrap();
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["Grown"], 9);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    // The CLI still reads the (grown) document.
    assert_eq!(
        docker_ok(
            &agent.url,
            &["version", "--format", "{{.Server.APIVersion}}"]
        ),
        "1.41"
    );
}

#[test]
fn test_endpoint_get_args_kept_and_query_rewrite_honoured() {
    testbed::e2e!();
    // `docker ps` asks for running containers; the hook adds all=1, so exited ones show too.
    let all = FakeAdapter::start(|p: &Value| {
        let mut req = p["ClientRequest"].clone();
        let uri = req["Request"].as_str().unwrap().to_string();
        req["Request"] = json!(if uri.contains('?') {
            format!("{uri}&all=1")
        } else {
            format!("{uri}?all=1")
        });
        Answer::json(json!({"ModifiedClientRequest": req}))
    });
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/containers/json\":\n    pre: [all]\nadapters:\n  all: {}\n",
        all.url
    ));
    let name = unique_name("exited");
    docker_ok(&engine(), &["run", "--name", &name, "busybox", "true"]);
    let filter = format!("name={name}");
    let shown = docker_ok(&agent.url, &["ps", "-q", "--filter", &filter]);
    let direct = docker_ok(&engine(), &["ps", "-q", "--filter", &filter]);
    docker_ok(&engine(), &["rm", &name]);
    assert_eq!(direct, "", "not running, so plain ps shows nothing");
    assert!(
        !shown.is_empty(),
        "the rewritten query (all=1) did not reach the engine"
    );
    // The original query reached the hook intact.
    assert!(
        all.requests("pre-hook")[0].contains("filters="),
        "{:?}",
        all.requests("pre-hook")
    );
}

#[test]
fn a_path_rewrite_to_another_endpoint_is_refused_but_the_adapters_own_url_is_ignored() {
    testbed::e2e!();
    let evil = FakeAdapter::start(|p: &Value| {
        let mut req = p["ClientRequest"].clone();
        req["Request"] = json!("/v1.41/containers/prune");
        Answer::json(json!({"ModifiedClientRequest": req}))
    });
    // powerstrip-flocker answers its own URL path as Request.
    let flocker_like = FakeAdapter::start(|p: &Value| {
        let mut req = p["ClientRequest"].clone();
        req["Request"] = json!("/adapter");
        Answer::json(json!({"ModifiedClientRequest": req}))
    });
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/info\":\n    pre: [evil]\n  \"GET /*/version\":\n    pre: [flocker]\nadapters:\n  evil: {}\n  flocker: {}\n",
        evil.url, flocker_like.url
    ));
    let out = docker(&agent.url, &["info", "--format", "{{.ID}}"]);
    assert!(
        stderr(&out).contains("adapter \"evil\"")
            && stderr(&out).contains("only the query may change"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        docker_ok(
            &agent.url,
            &["version", "--format", "{{.Server.APIVersion}}"]
        ),
        "1.41"
    );
}

#[test]
fn test_run_null_adapter_everything_still_works() {
    testbed::e2e!();
    // Powerstrip's passthru tests: null pre- and post-hooks on every call.
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"* *\":\n    pre: [nul, nul]\n    post: [nul, nul]\nadapters:\n  nul: {}\n",
        nul.url
    ));
    assert_eq!(
        docker_ok(&agent.url, &["run", "--rm", "busybox", "echo", "hello"]),
        "hello"
    );
    let out = docker_with_stdin(
        &agent.url,
        &["run", "--rm", "-i", "busybox", "cat"],
        b"hello stdin\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello stdin\n");
    let screen = with_tty(
        &format!(
            "docker -H {} run --rm -it busybox sh -c 'read x; echo tty-$x'",
            agent.url
        ),
        b"ok\n",
    );
    assert!(screen.contains("tty-ok"), "{screen:?}");

    let name = unique_name("nullhooks");
    let script = "echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second; sleep 300";
    docker_ok(
        &agent.url,
        &["run", "-d", "--name", &name, "busybox", "sh", "-c", script],
    );
    let screen = with_tty(
        &format!(
            "docker -H {} exec -it {name} sh -c 'read x; echo exec-$x'",
            agent.url
        ),
        b"ok\n",
    );
    assert!(screen.contains("exec-ok"), "{screen:?}");
    // logs -f streams through post-hooks on "* *" (they are skipped for endless streams).
    let mut follow = testbed::docker_command(&agent.url, &["logs", "-f", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    docker_ok(&engine(), &["exec", &name, "touch", "/tmp/go"]);
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    let _ = follow.kill();
    let _ = follow.wait();
    // events stream too.
    let mut events = testbed::docker_command(
        &agent.url,
        &[
            "events",
            "--filter",
            &format!("container={name}"),
            "--format",
            "{{.Action}}",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    docker_ok(&engine(), &["kill", &name]);
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "kill");
    let _ = events.kill();
    let _ = events.wait();
    docker_ok(&engine(), &["rm", "-f", &name]);
    // The hooks did run (twice per phase) on an ordinary call.
    assert!(
        nul.requests("pre-hook")
            .iter()
            .filter(|r| r.contains("/containers/create"))
            .count()
            >= 2
    );
    assert!(
        nul.requests("post-hook")
            .iter()
            .filter(|r| r.contains("/containers/create"))
            .count()
            >= 2
    );
}

#[test]
fn tar_bodies_stream_to_the_engine_with_pre_hooks_skipped() {
    testbed::e2e!();
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"* *\":\n    pre: [nul]\nadapters:\n  nul: {}\n",
        nul.url
    ));
    let name = unique_name("tar");
    docker_ok(
        &engine(),
        &[
            "run",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "echo marker > /marker",
        ],
    );
    let dir = TempDir::new();
    let tar = dir.join("c.tar");
    docker_ok(&engine(), &["export", "-o", tar.to_str().unwrap(), &name]);
    docker_ok(&engine(), &["rm", &name]);
    let tag = format!("{}:imported", unique_name("img"));
    let out = docker_with_stdin(
        &agent.url,
        &["import", "-", &tag],
        &std::fs::read(&tar).unwrap(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        docker_ok(&engine(), &["run", "--rm", &tag, "cat", "/marker"]),
        "marker"
    );
    docker_ok(&engine(), &["rmi", &tag]);
    assert!(
        !nul.requests("pre-hook")
            .iter()
            .any(|r| r.contains("/images/create")),
        "a pre-hook saw a tar body"
    );
}

#[test]
fn unreachable_slow_and_garbage_adapters_fail_within_their_timeout_naming_them() {
    testbed::e2e!();
    let slow = FakeAdapter::start(|p: &Value| Answer {
        delay: Duration::from_secs(30),
        ..null(p)
    });
    let garbage = FakeAdapter::start(|_| Answer {
        status: 200,
        body: "this is not json".into(),
        delay: Duration::ZERO,
    });
    let yaml = |adapter: &str| {
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [{adapter}]\nadapters:\n  gone: http://127.0.0.1:1/hook\n  slow:\n    url: {}\n    timeout: 2s\n  garbage: {}\n",
            slow.url, garbage.url
        )
    };
    for (adapter, expect) in [
        ("gone", "cannot connect"),
        ("slow", "no reply within 2s"),
        ("garbage", "invalid reply"),
    ] {
        let (agent, _dir) = agent_with(&yaml(adapter));
        let started = Instant::now();
        let out = docker(&agent.url, &["run", "--rm", "busybox", "true"]);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{adapter}: took {:?}",
            started.elapsed()
        );
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("adapter \"{adapter}\"")) && err.contains(expect),
            "{adapter}: {err}"
        );
    }
}

#[test]
fn on_error_skip_goes_on_without_the_adapter() {
    testbed::e2e!();
    let adder = FakeAdapter::start(append_env("AFTER", "ran"));
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [gone, adder]\nadapters:\n  gone:\n    url: http://127.0.0.1:1/hook\n    on_error: skip\n  adder: {}\n",
        adder.url
    ));
    assert_eq!(echo_var(&agent, "AFTER"), "ran");
}

#[test]
fn a_config_edit_takes_effect_without_restart_and_an_invalid_one_changes_nothing() {
    testbed::e2e!();
    let adder = FakeAdapter::start(append_env("LIVE", "v1"));
    let (agent, dir) = agent_with("version: 1\nendpoints: {}\nadapters: {}\n");
    assert_eq!(echo_var(&agent, "LIVE"), "");
    let path = dir.join("adapters.yml");
    std::fs::write(&path, format!("endpoints:\n  \"POST /*/containers/create\":\n    pre: [adder]\nadapters:\n  adder: {}\n", adder.url)).unwrap();
    let applied = wait_until(Duration::from_secs(5), || echo_var(&agent, "LIVE") == "v1");
    assert!(applied, "the edit was not picked up");
    assert_eq!(echo_var(&agent, "LIVE"), "v1");
    std::fs::write(
        &path,
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: undefined_adapter\n",
    )
    .unwrap();
    let logged = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&agent.log)
            .unwrap_or_default()
            .contains("invalid adapter config")
    });
    assert!(
        logged,
        "the invalid edit was not reported:\n{}",
        agent.log_tail()
    );
    assert_eq!(
        echo_var(&agent, "LIVE"),
        "v1",
        "an invalid edit changed the running chains"
    );
}

#[test]
fn an_invalid_config_at_start_exits_with_every_problem() {
    testbed::e2e!();
    let dir = TempDir::new();
    let path = dir.join("adapters.yml");
    std::fs::write(&path, "version: 3\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [missing]\nadapters:\n  bad: not-a-url\n").unwrap();
    let out = std::process::Command::new(support::binary("busbar-agent"))
        .args([
            "--docker",
            &engine(),
            "--listen",
            "tcp://127.0.0.1:1",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    for expected in [
        "line 1",
        "version",
        "line 4",
        "\"missing\"",
        "line 6",
        "not-a-url",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn unversioned_paths_match_versioned_patterns() {
    testbed::e2e!();
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"GET /*/containers/json\":\n    pre: [nul]\nadapters:\n  nul: {}\n",
        nul.url
    ));
    for path in ["/containers/json", "/v1.41/containers/json"] {
        let rsp = http_raw(
            agent.port,
            &format!("GET {path}?all=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert!(
            rsp.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&rsp)
        );
    }
    assert_eq!(
        nul.requests("pre-hook"),
        ["/containers/json?all=1", "/v1.41/containers/json?all=1"]
    );
}

#[test]
fn a_response_over_max_buffer_is_a_clear_error() {
    testbed::e2e!();
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "max_buffer: 64\nendpoints:\n  \"GET /*/info\":\n    post: [nul]\nadapters:\n  nul: {}\n",
        nul.url
    ));
    let rsp = http_raw(
        agent.port,
        "GET /v1.41/info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let rsp = String::from_utf8_lossy(&rsp);
    assert!(rsp.starts_with("HTTP/1.1 502"), "{rsp}");
    assert!(
        rsp.contains("over the 64-byte limit") && rsp.contains("max_buffer"),
        "{rsp}"
    );
}

#[test]
fn adapter_calls_reuse_pooled_connections() {
    testbed::e2e!();
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!("endpoints:\n  \"GET /*/version\":\n    pre: [nul]\n    post: [nul]\nadapters:\n  nul: {}\n", nul.url));
    for _ in 0..10 {
        docker_ok(
            &agent.url,
            &["version", "--format", "{{.Server.APIVersion}}"],
        );
    }
    assert_eq!(nul.calls().len(), 20);
    assert!(
        nul.connections() <= 2,
        "{} connections for 20 sequential hook calls",
        nul.connections()
    );
}

#[test]
fn test_run_post_hook_on_attach_is_skipped_even_when_the_adapter_is_unresolvable() {
    testbed::e2e!();
    // Powerstrip's passthru test: post-hooks never apply to hijacked responses, so a broken
    // adapter there cannot break `docker run`.
    let (agent, _dir) = agent_with(
        "endpoints:\n  \"POST /*/containers/*/attach\":\n    post: [broken]\nadapters:\n  broken: http://adapter.invalid/hook\n",
    );
    assert_eq!(
        docker_ok(&agent.url, &["run", "--rm", "busybox", "echo", "hello"]),
        "hello"
    );
    let screen = with_tty(
        &format!(
            "docker -H {} run --rm -it busybox sh -c 'read x; echo tty-$x'",
            agent.url
        ),
        b"ok\n",
    );
    assert!(screen.contains("tty-ok"), "{screen:?}");
}

#[test]
fn test_run_docker_build_and_load_through_null_hooks() {
    testbed::e2e!();
    let nul = FakeAdapter::start(null);
    let (agent, _dir) = agent_with(&format!(
        "endpoints:\n  \"* *\":\n    pre: [nul]\n    post: [nul]\nadapters:\n  nul: {}\n",
        nul.url
    ));
    let dir = TempDir::new();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\n",
    )
    .unwrap();
    let tag = format!("{}:built", unique_name("img"));
    let mut build = testbed::docker_command(
        &agent.url,
        &["build", "-q", "-t", &tag, dir.0.to_str().unwrap()],
    );
    build.env("DOCKER_BUILDKIT", "0");
    let out = testbed::output_with_timeout(&mut build, None, Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        docker_ok(&engine(), &["run", "--rm", &tag, "cat", "/built"]),
        "built"
    );
    // The build's progress (a finite stream) went through the post-hook; its tar body did not
    // go to the pre-hook.
    assert!(nul
        .requests("post-hook")
        .iter()
        .any(|r| r.contains("/build")));
    assert!(!nul
        .requests("pre-hook")
        .iter()
        .any(|r| r.contains("/build")));
    // load: a tar body streamed to the engine, its progress through the post-hook.
    let saved = dir.join("saved.tar");
    docker_ok(&engine(), &["save", "-o", saved.to_str().unwrap(), &tag]);
    docker_ok(&engine(), &["rmi", &tag]);
    let loaded = docker_ok(&agent.url, &["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    assert!(nul
        .requests("post-hook")
        .iter()
        .any(|r| r.contains("/images/load")));
    docker_ok(&engine(), &["rmi", &tag]);
}

#[test]
fn https_adapters_are_verified_against_their_ca_file() {
    testbed::e2e!();
    use busbar_tls::pki::{CertDir, IssueRequest};
    use busbar_tls::Role;
    let dir = TempDir::new();
    let pki = CertDir::new(dir.join("pki"));
    pki.init_ca(false).unwrap();
    let req = IssueRequest {
        name: "adapter".into(),
        role: Role::Agent,
        sans: vec!["127.0.0.1".into()],
        days: 30,
        force: false,
    };
    pki.issue(&req).unwrap();
    let adder = FakeAdapter::start_tls(
        append_env("TLS", "verified"),
        &pki.cert("adapter"),
        &pki.key("adapter"),
    );
    assert!(adder.url.starts_with("https://127.0.0.1:"));
    let ca = pki.ca_cert();
    // With the adapter's CA: the hook runs.
    let (agent, _d) = agent_with(&format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [adder]\nadapters:\n  adder:\n    url: {}\n    ca_file: {}\n",
        adder.url,
        ca.display()
    ));
    assert_eq!(echo_var(&agent, "TLS"), "verified");
    // With the system roots only: the certificate is refused, and the error names the adapter.
    let (agent, _d) = agent_with(&format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [adder]\nadapters:\n  adder: {}\n",
        adder.url
    ));
    let out = docker(&agent.url, &["run", "--rm", "busybox", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("adapter \"adder\"") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}
