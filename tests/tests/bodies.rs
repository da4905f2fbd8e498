//! No hook bypass, whatever the spelling of a body's fields. The engine decodes JSON with Go's
//! lenient rules (`hostconfig` is `HostConfig`, `Bind\u017f` is `Binds`, a create's top-level
//! `Privileged` counts when `HostConfig` is absent, only the first JSON value is read), where
//! an adapter reads the JSON as written. busbar respells such a body as the engine reads it
//! before any hook sees it (`busbar_api::body`).
//!
//! Two checks against a real engine:
//! - **Faithful**: for respelled create bodies (deterministic random spellings of a body with
//!   host settings, some of them at the top level), the container the engine makes from the
//!   body as written and from busbar's respelling are the same (inspected).
//! - **No bypass**: an adapter that refuses privileged containers and bind mounts (checking
//!   `HostConfig.Privileged` and `HostConfig.Binds` as written, like any adapter would) is
//!   asked about every create that would make one, through an agent and through a gateway in
//!   front of an agent: the engine holds no such container afterwards.

mod support;

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use support::adapters::{Answer, FakeAdapter};
use support::front::{self, busbar_call, engine_call, engine_socket, Rng};
use testbed::{unique_name, Testbed};

/// A create through busbar on `port`: status and JSON answer.
fn create_through(port: u16, body: &str) -> (u16, Value) {
    busbar_call(port, "POST", "/v1.41/containers/create", Some(body))
}

fn engine_create(socket: &str, body: &str) -> (u16, Value) {
    engine_call(socket, "POST", "/v1.41/containers/create", Some(body))
}

/// What the engine made of a create: the settings an adapter would police.
fn settings(socket: &str, id: &str) -> Value {
    let (_, c) = engine_call(socket, "GET", &format!("/v1.41/containers/{id}/json"), None);
    let h = &c["HostConfig"];
    json!({
        "Image": c["Config"]["Image"], "Env": c["Config"]["Env"], "Cmd": c["Config"]["Cmd"],
        "User": c["Config"]["User"], "Labels": c["Config"]["Labels"],
        "Privileged": h["Privileged"], "Binds": h["Binds"], "Memory": h["Memory"],
        "MemorySwap": h["MemorySwap"], "CpuShares": h["CpuShares"], "CpusetCpus": h["CpusetCpus"],
        "CapAdd": h["CapAdd"], "PidMode": h["PidMode"], "ReadonlyRootfs": h["ReadonlyRootfs"],
        "Mounts": h["Mounts"],
    })
}

fn remove(socket: &str, id: &str) {
    engine_call(
        socket,
        "DELETE",
        &format!("/v1.41/containers/{id}?force=1"),
        None,
    );
}

/// `name` in random case, now and then with a long s or a Kelvin sign.
fn respell(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| match c {
            's' | 'S' if rng.chance(15) => '\u{17f}',
            'k' | 'K' if rng.chance(15) => '\u{212a}',
            _ if rng.chance(50) => c.to_ascii_uppercase(),
            _ => c.to_ascii_lowercase(),
        })
        .collect()
}

fn key(rng: &mut Rng, name: &str) -> String {
    let k = if rng.chance(60) {
        respell(rng, name)
    } else {
        name.to_owned()
    };
    serde_json::to_string(&k).unwrap()
}

/// A create body with host settings, respelled: keys in random case, host fields in
/// `HostConfig` or (sometimes) at the top level, now and then a second JSON value after it.
fn spelled_create(rng: &mut Rng, label: &str, privileged: bool) -> String {
    let host: Vec<(&str, String)> = vec![
        ("Privileged", privileged.to_string()),
        ("Memory", "67108864".into()),
        ("MemorySwap", "134217728".into()),
        ("CpuShares", "512".into()),
        ("CapAdd", r#"["NET_ADMIN"]"#.into()),
        ("ReadonlyRootfs", "true".into()),
        ("Binds", r#"["/tmp:/hosttmp:ro"]"#.into()),
    ];
    let host: Vec<(&str, String)> = host.into_iter().filter(|_| rng.chance(70)).collect();
    let mut top = vec![
        format!("{}:\"busybox\"", key(rng, "Image")),
        format!("{}:[\"true\"]", key(rng, "Cmd")),
        format!("{}:[\"A=1\"]", key(rng, "Env")),
        format!("{}:{{\"busbar-bodies\":\"{label}\"}}", key(rng, "Labels")),
    ];
    let fields: Vec<String> = host
        .iter()
        .map(|(k, v)| format!("{}:{v}", key(rng, k)))
        .collect();
    match rng.next() % 4 {
        0 => top.extend(fields),
        1 => {
            top.extend(fields);
            top.push(format!("{}:null", key(rng, "HostConfig")));
        }
        _ => top.push(format!(
            "{}:{{{}}}",
            key(rng, "HostConfig"),
            fields.join(",")
        )),
    }
    let mut body = format!("{{{}}}", top.join(","));
    if rng.chance(15) {
        body.push_str(&format!(
            " {{{}:{{{}:true}}}}",
            key(rng, "HostConfig"),
            key(rng, "Privileged")
        ));
    }
    body
}

/// The container the engine makes of a body as written is the one it makes of busbar's
/// respelling of it.
#[test]
fn a_respelled_body_makes_the_container_the_body_as_written_makes() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let socket = engine_socket(host);
    let mut rng = Rng::from_env("BUSBAR_BODY_FUZZ_SEED");
    let label = unique_name("bodies");
    let path = busbar_api::ApiPath::parse("/v1.41/containers/create").unwrap();
    let (mut compared, mut respelled) = (0, 0);
    for _ in 0..30 {
        let privileged = rng.chance(50);
        let body = spelled_create(&mut rng, &label, privileged);
        let canonical = match busbar_api::body::canonical(&Method::POST, &path, body.as_bytes()) {
            Ok(Some(c)) => {
                respelled += 1;
                String::from_utf8(c).unwrap()
            }
            Ok(None) => body.clone(),
            Err(e) => panic!("{body}: {e}"),
        };
        let (s1, a) = engine_create(&socket, &body);
        let (s2, b) = engine_create(&socket, &canonical);
        assert_eq!(s1, s2, "{body}\n{a}\n{canonical}\n{b}");
        if s1 != 201 {
            // Refused both ways (a swap limit without a memory limit): for the same reason.
            assert_eq!(a["message"], b["message"], "{body}\n{canonical}");
            continue;
        }
        let (a, b) = (a["Id"].as_str().unwrap(), b["Id"].as_str().unwrap());
        let (seen_a, seen_b) = (settings(&socket, a), settings(&socket, b));
        remove(&socket, a);
        remove(&socket, b);
        assert_eq!(seen_a, seen_b, "as written: {body}\nrespelled: {canonical}");
        compared += 1;
    }
    eprintln!("{compared} containers compared, {respelled} of 30 bodies respelled");
    assert!(
        respelled > 10 && compared > 10,
        "the generator made too few cases"
    );
}

/// The chains: one policing pre-hook on creates.
fn chains(adapter: &str) -> String {
    format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [police]\nadapters:\n  police: {adapter}\n"
    )
}

/// A policy as adapters write it: no privileged container, no bind mount, checked on the
/// JSON as written (Python's `json.loads(body)["HostConfig"]["Privileged"]`).
fn police(call: &Value) -> Answer {
    let body: Value = call["ClientRequest"]["Body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let host = &body["HostConfig"];
    let binds = host["Binds"].as_array().is_some_and(|b| !b.is_empty());
    if host["Privileged"] == json!(true) || binds {
        return Answer {
            status: 403,
            body:
                json!({"message": "police: privileged containers and bind mounts are not allowed"})
                    .to_string(),
            delay: Duration::ZERO,
        };
    }
    Answer::json(json!({
        "PowerstripProtocolVersion": 1,
        "ModifiedClientRequest": call["ClientRequest"],
    }))
}

/// Bodies that ask for a privileged container or a bind mount in a spelling an adapter
/// reading the JSON as written would miss, and one harmless respelled body.
fn attacks() -> Vec<&'static str> {
    vec![
        r#"{"Image":"busybox","Cmd":["true"],"hostconfig":{"privileged":true}}"#,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"PRIVILEGED":true}}"#,
        r#"{"Image":"busybox","Cmd":["true"],"Privileged":true}"#,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":null,"privileged":true}"#,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Bind\u017f":["/:/host"]}}"#,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Privileged":false,"privileged":true}}"#,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Binds":["/:/host"]},"hostconfig":{}}"#,
        r#"{"Image":"busybox","Cmd":["true"]} {"HostConfig":{"Privileged":true}}"#,
    ]
}

/// Sends every attack through `port`; the engine must hold no privileged or bind-mounted
/// container of the run (the one attack it accepts, a second JSON value after the body,
/// makes a plain container, as the engine reads only the first), and the harmless respelled create must pass with the adapter
/// seeing its fields under their own names.
fn no_bypass(front: &str, port: u16, socket: &str, police: &FakeAdapter) {
    let label = unique_name("bodies-attack");
    for body in attacks() {
        let body = body.replace(
            r#""Cmd":["true"]"#,
            &format!(r#""Cmd":["true"],"Labels":{{"busbar-bodies":"{label}"}}"#),
        );
        let (status, answer) = create_through(port, &body);
        eprintln!("{front}: {status} {answer} <- {body}");
    }
    // Refused (403 by the adapter, 400 for a field given twice), or made as the engine read
    // it, which the adapter saw: nothing privileged, nothing bind-mounted.
    let filter = format!("%7B%22label%22%3A%5B%22busbar-bodies%3D{label}%22%5D%7D");
    let (_, made) = engine_call(
        socket,
        "GET",
        &format!("/v1.41/containers/json?all=1&filters={filter}"),
        None,
    );
    let made: Vec<&str> = made
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["Id"].as_str().unwrap())
        .collect();
    assert!(
        made.len() <= 1,
        "{front}: {} of the attacks made a container",
        made.len()
    );
    for id in made {
        let seen = settings(socket, id);
        remove(socket, id);
        assert_eq!(
            (&seen["Privileged"], &seen["Binds"]),
            (&json!(false), &Value::Null),
            "{front}: {seen}"
        );
    }

    let calls = police.calls().len();
    let harmless = format!(
        r#"{{"image":"busybox","cmd":["true"],"labels":{{"busbar-bodies":"{label}"}},"hostconfig":{{"memory":67108864}}}}"#
    );
    let (status, answer) = create_through(port, &harmless);
    assert_eq!(status, 201, "{front}: {answer}");
    let seen = police.calls()[calls..]
        .iter()
        .filter_map(|c| c["ClientRequest"]["Body"].as_str().map(str::to_owned))
        .next_back()
        .expect("the adapter was called");
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        seen["HostConfig"]["Memory"],
        json!(67108864),
        "{front}: {seen}"
    );
    assert_eq!(seen["Image"], json!("busybox"), "{front}: {seen}");
    let id = answer["Id"].as_str().unwrap();
    assert_eq!(settings(socket, id)["Memory"], json!(67108864));
    remove(socket, id);
}

#[test]
fn no_spelling_of_a_field_gets_past_an_adapter_on_an_agent() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let police = FakeAdapter::start(police);
    let (agent, _config) = front::agent(host, &chains(&police.url));
    no_bypass("an agent", agent.port, &engine_socket(host), &police);
}

#[test]
fn no_spelling_of_a_field_gets_past_an_adapter_through_the_gateway() {
    testbed::e2e!();
    let bed = Testbed::shared();
    let host = &bed.hosts()[0];
    let police = FakeAdapter::start_on(host.gateway_addr().unwrap(), police);
    let (gateway, _agent, _config) = front::gateway(bed, host, &chains(&police.url));
    no_bypass(
        "a gateway and an agent",
        gateway.port,
        &engine_socket(host),
        &police,
    );
}
