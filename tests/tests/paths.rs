//! No hook bypass, whatever the spelling: requests sent with randomly respelled paths (escaped
//! characters, `%2F`, version variants, dot segments, doubled slashes, absolute-form targets,
//! `;` in the query, form bodies that override the query) to a real engine through busbar,
//! with an auditing pre-hook on each endpoint. For every request the test asks the engine
//! itself whether the endpoint ran (a container created, renamed or removed, an image tagged),
//! and requires: **whenever the engine executed endpoint E, the hook for E ran** (and saw the
//! request as the engine read it). Through a standalone agent and through a gateway in front
//! of an agent across the gRPC hop.
//!
//! Bounded: `BUSBAR_PATH_FUZZ` requests per front (default 200), a seed printed so that a
//! failure can be replayed with `BUSBAR_PATH_FUZZ_SEED`.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use support::adapters::{Answer, FakeAdapter};
use support::front::{self, engine_call, engine_socket, Rng};
use testbed::{unique_name, Testbed};

/// The chains under test: one auditing pre-hook on each endpoint the fuzz exercises.
fn chains(adapter: &str) -> String {
    format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [audit]\n  \"POST /*/containers/*/rename\":\n    pre: [audit]\n  \"DELETE /*/containers/*\":\n    pre: [audit]\n  \"POST /*/images/*/tag\":\n    pre: [audit]\nadapters:\n  audit: {adapter}\n"
    )
}

/// A pre-hook that lets everything through unchanged, recording what it saw (the recording
/// is the FakeAdapter's).
fn pass(call: &Value) -> Answer {
    Answer::json(json!({
        "PowerstripProtocolVersion": 1,
        "ModifiedClientRequest": call["ClientRequest"],
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Rename,
    Delete,
    Tag,
}

impl Op {
    /// The canonical path (no version) and the method of the endpoint.
    fn path(self, container: &str) -> (String, &'static str) {
        match self {
            Op::Create => ("/containers/create".into(), "POST"),
            Op::Rename => (format!("/containers/{container}/rename"), "POST"),
            Op::Delete => (format!("/containers/{container}"), "DELETE"),
            Op::Tag => ("/images/busybox/tag".into(), "POST"),
        }
    }
}

/// One respelled request: method, target, content type and body.
struct Spelled {
    method: String,
    target: String,
    content_type: &'static str,
    body: String,
}

/// Respells `path` (canonical, unversioned) and `query` in one of the ways a client could.
fn spell(rng: &mut Rng, method: &str, path: &str, query: &str) -> (String, String) {
    let version = *rng.pick(&[
        "/v1.41", "/v1.41", "/v1.24", "", "/v1.41.0", "/v01.41", "/%761.41", "/V1.41", "/v1%2E41",
        "/v1",
    ]);
    let mut out = String::from(version);
    for seg in path.trim_start_matches('/').split('/') {
        let sep = if rng.chance(6) {
            *rng.pick(&["%2F", "%2f", "//", "/./", "/zz/../"])
        } else {
            "/"
        };
        out.push_str(sep);
        for c in seg.chars() {
            if rng.chance(20) {
                let hex = format!("%{:02X}", c as u32);
                out.push_str(&if rng.chance(50) {
                    hex.to_lowercase()
                } else {
                    hex
                });
            } else {
                out.push(c);
            }
        }
    }
    if rng.chance(5) {
        out.push('/');
    }
    if rng.chance(4) {
        out = format!("http://busbar{out}");
    }
    let method = if rng.chance(4) {
        method.to_lowercase()
    } else {
        method.to_owned()
    };
    let query = if rng.chance(5) {
        query.replacen('&', ";", 1)
    } else if rng.chance(3) {
        format!("{query}&x=%zz")
    } else {
        query.to_owned()
    };
    (method, format!("{out}?{query}"))
}

/// `GET path` on the engine's unix socket (HTTP/1.0, so the answer is not chunked).
/// Sends raw bytes to busbar and returns the status line's code (0 if none).
fn send(port: u16, s: &Spelled) -> u16 {
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: busbar\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        s.method,
        s.target,
        s.content_type,
        s.body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(s.body.as_bytes());
    let mut out = vec![];
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What the fuzz saw, for the summary line.
#[derive(Default, Debug)]
struct Tally {
    executed: usize,
    refused: usize,
    not_executed: usize,
}

/// Runs the fuzz against busbar on `port` in front of the engine at `socket`, with `audit`
/// as the hook's adapter.
fn fuzz(front: &str, port: u16, socket: &str, audit: &FakeAdapter) {
    let n: usize = std::env::var("BUSBAR_PATH_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("BUSBAR_PATH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| testbed::util::random_u64() | 1);
    eprintln!("path fuzz through {front}: {n} requests, seed {seed}");
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let run = unique_name("pfz");
    // The container renamed over and over (addressed by its ID, which never changes).
    let (status, made) = engine_call(
        socket,
        "POST",
        &format!("/v1.41/containers/create?name={run}-r"),
        Some(r#"{"Image":"busybox","Labels":{"pathfuzz":"1"}}"#),
    );
    assert_eq!(status, 201, "{made}");
    let renamed = made["Id"].as_str().unwrap().to_owned();
    for i in 0..n {
        let op = *rng.pick(&[Op::Create, Op::Rename, Op::Delete, Op::Tag]);
        let id = format!("{run}-{i}");
        let victim = match op {
            Op::Delete => {
                let (status, made) = engine_call(
                    socket,
                    "POST",
                    &format!("/v1.41/containers/create?name={id}-d"),
                    Some(r#"{"Image":"busybox","Labels":{"pathfuzz":"1"}}"#),
                );
                assert_eq!(status, 201, "{made}");
                made["Id"].as_str().unwrap().to_owned()
            }
            _ => renamed.clone(),
        };
        let (path, method) = op.path(&victim);
        let query = match op {
            Op::Create => format!("name={id}-c&fuzzid={id}"),
            Op::Rename => format!("name={id}-n&fuzzid={id}"),
            Op::Delete => format!("force=1&fuzzid={id}"),
            Op::Tag => format!("repo=pathfuzz&tag={id}&fuzzid={id}"),
        };
        let (method, target) = spell(&mut rng, method, &path, &query);
        let form = matches!(op, Op::Rename | Op::Tag) && rng.chance(10);
        let spelled = Spelled {
            method,
            target,
            content_type: if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            },
            body: match (op, form) {
                (Op::Create, _) => {
                    json!({"Image": "busybox", "Labels": {"pathfuzz": "1"}}).to_string()
                }
                (Op::Rename, true) => format!("name={id}-f"),
                (Op::Tag, true) => format!("tag={id}-f"),
                _ => String::new(),
            },
        };
        let status = send(port, &spelled);
        // Did the engine execute the endpoint? Asked of the engine itself.
        let executed = match op {
            Op::Create => {
                engine_call(
                    socket,
                    "GET",
                    &format!("/v1.41/containers/{id}-c/json"),
                    None,
                )
                .0 == 200
            }
            Op::Rename => {
                engine_call(
                    socket,
                    "GET",
                    &format!("/v1.41/containers/{id}-n/json"),
                    None,
                )
                .0 == 200
                    || engine_call(
                        socket,
                        "GET",
                        &format!("/v1.41/containers/{id}-f/json"),
                        None,
                    )
                    .0 == 200
            }
            Op::Delete => {
                engine_call(
                    socket,
                    "GET",
                    &format!("/v1.41/containers/{victim}/json"),
                    None,
                )
                .0 == 404
            }
            Op::Tag => {
                engine_call(
                    socket,
                    "GET",
                    &format!("/v1.41/images/pathfuzz:{id}/json"),
                    None,
                )
                .0 == 200
                    || engine_call(
                        socket,
                        "GET",
                        &format!("/v1.41/images/pathfuzz:{id}-f/json"),
                        None,
                    )
                    .0 == 200
            }
        };
        // Did the hook for that endpoint run, and see the path as the engine read it?
        let hooked: Vec<String> = audit
            .requests("pre-hook")
            .into_iter()
            .filter(|r| r.contains(&format!("fuzzid={id}")))
            .collect();
        let context = format!(
            "{front}, seed {seed}, request {i}: {} {} ({}) -> {status}; engine executed {op:?}: {executed}; hook saw {hooked:?}",
            spelled.method, spelled.target, spelled.content_type
        );
        if executed {
            assert!(!hooked.is_empty(), "HOOK BYPASSED: {context}");
            let seen = hooked[0].split('?').next().unwrap_or("");
            let unversioned = seen
                .strip_prefix("/v1.41")
                .or_else(|| seen.strip_prefix("/v1.24"))
                .unwrap_or(seen);
            assert_eq!(unversioned, path, "the hook saw another path: {context}");
            tally.executed += 1;
        } else if status == 400 {
            tally.refused += 1;
        } else {
            tally.not_executed += 1;
        }
        // A rename that ran moved the name: nothing to undo (the next one renames by ID).
        if op == Op::Create && executed {
            engine_call(
                socket,
                "DELETE",
                &format!("/v1.41/containers/{id}-c?force=1"),
                None,
            );
        }
        if op == Op::Tag && executed {
            for tag in [id.clone(), format!("{id}-f")] {
                engine_call(
                    socket,
                    "DELETE",
                    &format!("/v1.41/images/pathfuzz:{tag}"),
                    None,
                );
            }
        }
        if op == Op::Delete && !executed {
            engine_call(
                socket,
                "DELETE",
                &format!("/v1.41/containers/{victim}?force=1"),
                None,
            );
        }
    }
    engine_call(
        socket,
        "DELETE",
        &format!("/v1.41/containers/{renamed}?force=1"),
        None,
    );
    eprintln!("path fuzz through {front}: {tally:?}");
    assert!(
        tally.executed > n / 4,
        "too few requests ran to say anything: {tally:?}"
    );
}

#[test]
fn no_spelling_of_a_path_runs_an_endpoint_without_its_hook_on_an_agent() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let audit = FakeAdapter::start(pass);
    let (agent, _config) = front::agent(host, &chains(&audit.url));
    fuzz("an agent", agent.port, &engine_socket(host), &audit);
}

#[test]
fn no_spelling_of_a_path_runs_an_endpoint_without_its_hook_through_the_gateway() {
    testbed::e2e!();
    let bed = Testbed::shared();
    let host = &bed.hosts()[0];
    // The agent lives in the host's namespace: it reaches the adapter at the root side.
    let audit = FakeAdapter::start_on(host.gateway_addr().unwrap(), pass);
    let (gateway, _agent, _config) = front::gateway(bed, host, &chains(&audit.url));
    fuzz(
        "a gateway and an agent",
        gateway.port,
        &engine_socket(host),
        &audit,
    );
}
