// The passthrough suite: every Docker CLI workflow gives the same result through a busbar
// front as directly against the engine. Included (inside a module) by each test binary that
// provides `setup() -> (engine_url, Front)`: the agent (proxy.rs), the gateway with an agent
// across the gRPC/mTLS hop (gateway.rs), and the gateway's embedded default (embedded.rs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::setup;
use crate::support::{http_raw, line_channel, with_tty, TempDir};
use testbed::{docker, docker_ok, docker_with_stdin, unique_name, wait_until};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a container whatever happens to the test.
struct Cleanup<'a>(&'a str, String);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = docker(self.0, &["rm", "-f", &self.1]);
    }
}

#[test]
fn version_negotiates_the_api_through_ping() {
    testbed::e2e!();
    let (engine, front) = setup();
    let fmt = "{{.Client.APIVersion}} {{.Server.Version}} {{.Server.APIVersion}}";
    let via = docker_ok(&front.url, &["version", "--format", fmt]);
    assert_eq!(via, docker_ok(&engine, &["version", "--format", fmt]));
    // The CLI (API 1.5x) negotiated down to the engine's version through HEAD/GET /_ping.
    let mut parts = via.split(' ');
    let client_api = parts.next().unwrap();
    assert_eq!(Some(client_api), parts.nth(1), "client did not negotiate to the server's API");
    let ping = String::from_utf8(http_raw(front.port, "HEAD /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap()).unwrap();
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    assert!(ping.to_ascii_lowercase().contains("api-version: 1.41"), "{ping}");
}

#[test]
fn info_is_the_engines() {
    testbed::e2e!();
    let (engine, front) = setup();
    let fmt = "{{.ID}} {{.Name}} {{.ServerVersion}} {{.Driver}} {{.DockerRootDir}}";
    assert_eq!(docker_ok(&front.url, &["info", "--format", fmt]), docker_ok(&engine, &["info", "--format", fmt]));
}

#[test]
fn run_rm_echo() {
    testbed::e2e!();
    let (engine, front) = setup();
    let via = docker(&front.url, &["run", "--rm", "busybox", "echo", "hello"]);
    let direct = docker(&engine, &["run", "--rm", "busybox", "echo", "hello"]);
    assert!(via.status.success(), "{via:?}");
    assert_eq!(stdout(&via), "hello\n");
    assert_eq!(stdout(&via), stdout(&direct));
}

#[test]
fn run_detached_ps_inspect_stop_rm() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("lifecycle");
    let _c = Cleanup(&engine, name.clone());
    let id = docker_ok(&front.url, &["run", "-d", "--name", &name, "busybox", "sleep", "300"]);
    let filter = format!("name={name}");
    let ps = |url: &str| docker_ok(url, &["ps", "--no-trunc", "--filter", &filter, "--format", "{{.ID}} {{.Names}} {{.Status}}"]);
    assert!(ps(&front.url).starts_with(&format!("{id} {name} Up")), "{}", ps(&front.url));
    assert_eq!(ps(&front.url), ps(&engine));
    assert_eq!(docker_ok(&front.url, &["inspect", &name]), docker_ok(&engine, &["inspect", &name]));
    docker_ok(&front.url, &["stop", "-t", "1", &name]);
    assert_eq!(docker_ok(&engine, &["inspect", "-f", "{{.State.Running}}", &name]), "false");
    docker_ok(&front.url, &["rm", &name]);
    assert_eq!(docker_ok(&engine, &["ps", "-a", "-q", "--filter", &filter]), "");
}

#[test]
fn logs_of_ten_thousand_lines_are_byte_identical() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("logs");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "--name", &name, "busybox", "sh", "-c", "seq 1 10000; seq 1 500 >&2"]);
    let via = docker(&front.url, &["logs", &name]);
    let direct = docker(&engine, &["logs", &name]);
    assert_eq!(via.stdout.len(), direct.stdout.len());
    assert!(via.stdout == direct.stdout && via.stderr == direct.stderr, "logs differ");
    assert_eq!(String::from_utf8_lossy(&via.stdout).lines().count(), 10_000);
    assert_eq!(String::from_utf8_lossy(&via.stderr).lines().count(), 500);
}

#[test]
fn logs_follow_delivers_a_new_line_within_a_second() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("follow");
    let _c = Cleanup(&engine, name.clone());
    let script = "echo start; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo go-line; sleep 300";
    docker_ok(&engine, &["run", "-d", "--name", &name, "busybox", "sh", "-c", script]);
    let mut follow = testbed::docker_command(&front.url, &["logs", "-f", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = line_channel(follow.stdout.take().unwrap());
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("the first log line");
    assert_eq!(first.0, "start");
    docker_ok(&engine, &["exec", &name, "touch", "/tmp/go"]);
    let written = Instant::now();
    let next = rx.recv_timeout(Duration::from_secs(10)).expect("the follow-up line");
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(next.0, "go-line");
    let lag = next.1.saturating_duration_since(written);
    assert!(lag < Duration::from_secs(1), "line arrived {lag:?} after it was written");
}

#[test]
fn events_stream_create_start_die() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("events");
    let _c = Cleanup(&engine, name.clone());
    let filter = format!("container={name}");
    let mut events = testbed::docker_command(&front.url, &["events", "--filter", &filter, "--format", "{{.Action}}"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_channel(events.stdout.take().unwrap());
    // `events` has no "ready" signal: start the container once the stream is surely open.
    std::thread::sleep(Duration::from_millis(500));
    docker_ok(&engine, &["run", "--name", &name, "busybox", "true"]);
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !["create", "start", "die"].iter().all(|a| seen.iter().any(|s: &String| s == a)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((action, _)) => seen.push(action),
            Err(_) => break,
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(
        seen.iter().filter(|a| ["create", "start", "die"].contains(&a.as_str())).cloned().collect::<Vec<_>>(),
        ["create", "start", "die"]
    );
}

#[test]
fn stdin_reaches_the_container_and_half_close_ends_it() {
    testbed::e2e!();
    let (_engine, front) = setup();
    let out = docker_with_stdin(&front.url, &["run", "--rm", "-i", "busybox", "cat"], b"hello\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "hello\n");
}

#[test]
fn run_with_a_tty() {
    testbed::e2e!();
    let (engine, front) = setup();
    let via = docker(&front.url, &["run", "--rm", "-t", "busybox", "echo", "tty"]);
    let direct = docker(&engine, &["run", "--rm", "-t", "busybox", "echo", "tty"]);
    assert_eq!(stdout(&via), "tty\r\n");
    assert_eq!(stdout(&via), stdout(&direct));
    let screen = with_tty(&format!("docker -H {} run --rm -it busybox sh -c 'read x; echo got-$x'", front.url), b"abc\n");
    assert!(screen.contains("got-abc"), "{screen:?}");
}

#[test]
fn exec_with_and_without_stdin_and_with_a_tty() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("exec");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "-d", "--name", &name, "busybox", "sleep", "300"]);
    assert_eq!(docker_ok(&front.url, &["exec", &name, "echo", "plain"]), "plain");
    let out = docker_with_stdin(&front.url, &["exec", "-i", &name, "wc", "-c"], b"12345");
    assert_eq!(stdout(&out).trim(), "5");
    let code = docker(&front.url, &["exec", &name, "sh", "-c", "exit 42"]).status.code();
    assert_eq!(code, Some(42));
    let screen = with_tty(&format!("docker -H {} exec -it {name} sh -c 'read x; echo it-$x'", front.url), b"xyz\n");
    assert!(screen.contains("it-xyz"), "{screen:?}");
}

#[test]
fn attach_to_a_running_container() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("attach");
    let _c = Cleanup(&engine, name.clone());
    let script = "while read l; do echo got:$l; done";
    docker_ok(&engine, &["run", "-di", "--name", &name, "busybox", "sh", "-c", script]);
    // The container keeps stdin open (StdinOnce is false), so the engine ends an attach as soon
    // as the client's stdin ends: keep it open until the answer is back, as a person would.
    let mut attach = testbed::docker_command(&front.url, &["attach", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = attach.stdin.take().unwrap();
    let rx = line_channel(attach.stdout.take().unwrap());
    for word in ["one", "two"] {
        writeln!(stdin, "{word}").unwrap();
        let got = rx.recv_timeout(Duration::from_secs(20)).map(|(line, _)| line);
        assert_eq!(got.as_deref(), Ok(format!("got:{word}").as_str()));
    }
    drop(stdin);
    let _ = attach.kill();
    let _ = attach.wait();
}

#[test]
fn hijack_without_upgrade_gets_a_raw_stream() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("raw");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "-di", "--name", &name, "busybox", "cat"]);
    let mut s = TcpStream::connect(("127.0.0.1", front.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /v1.41/containers/{name}/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").unwrap();
    s.write_all(b"raw bytes\n").unwrap();
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n";
    // One stdout frame: stream 1, length 10, then the bytes cat echoed.
    let frame = b"\x01\x00\x00\x00\x00\x00\x00\x0araw bytes\n";
    let mut got = vec![0; head.len() + frame.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got[..head.len()]), String::from_utf8_lossy(head));
    assert_eq!(&got[head.len()..], frame);
    // Closing our side ends the session: the engine closes, and so does the agent.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = vec![];
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn cp_both_ways() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("cp");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "-d", "--name", &name, "busybox", "sleep", "300"]);
    let dir = TempDir::new();
    let src = dir.join("in.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    docker_ok(&front.url, &["cp", src.to_str().unwrap(), &format!("{name}:/tmp/in.bin")]);
    assert_eq!(docker_ok(&engine, &["exec", &name, "wc", "-c", "/tmp/in.bin"]), "200000 /tmp/in.bin");
    let back = dir.join("back.bin");
    docker_ok(&front.url, &["cp", &format!("{name}:/tmp/in.bin"), back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "the file came back different");
}

#[test]
fn export_import_and_load() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("export");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "--name", &name, "busybox", "sh", "-c", "echo marker > /marker"]);
    let dir = TempDir::new();
    let (via, direct) = (dir.join("via.tar"), dir.join("direct.tar"));
    docker_ok(&front.url, &["export", "-o", via.to_str().unwrap(), &name]);
    docker_ok(&engine, &["export", "-o", direct.to_str().unwrap(), &name]);
    let via_bytes = std::fs::read(&via).unwrap();
    assert!(via_bytes.len() > 500_000, "export is too small: {}", via_bytes.len());
    assert!(via_bytes == std::fs::read(&direct).unwrap(), "exports differ");

    let tag = format!("{}:imported", unique_name("img"));
    let out = docker_with_stdin(&front.url, &["import", "-", &tag], &via_bytes);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(docker_ok(&engine, &["run", "--rm", &tag, "cat", "/marker"]), "marker");

    let saved = dir.join("saved.tar");
    docker_ok(&engine, &["save", "-o", saved.to_str().unwrap(), &tag]);
    docker_ok(&engine, &["rmi", &tag]);
    let loaded = docker_ok(&front.url, &["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    assert_eq!(docker_ok(&engine, &["run", "--rm", &tag, "cat", "/marker"]), "marker");
    docker_ok(&engine, &["rmi", &tag]);
}

#[test]
fn wait_kill_stats_top_pause_rename() {
    testbed::e2e!();
    let (engine, front) = setup();
    let name = unique_name("ctl");
    let _c = Cleanup(&engine, name.clone());
    docker_ok(&engine, &["run", "-d", "--name", &name, "busybox", "sleep", "300"]);
    assert!(docker_ok(&front.url, &["top", &name]).contains("sleep 300"));
    let stats = docker_ok(&front.url, &["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", &name]);
    assert_eq!(stats, format!("{name} 1"));
    docker_ok(&front.url, &["pause", &name]);
    assert_eq!(docker_ok(&engine, &["inspect", "-f", "{{.State.Paused}}", &name]), "true");
    docker_ok(&front.url, &["unpause", &name]);
    assert_eq!(docker_ok(&engine, &["inspect", "-f", "{{.State.Paused}}", &name]), "false");
    let renamed = format!("{name}-renamed");
    let _c2 = Cleanup(&engine, renamed.clone());
    docker_ok(&front.url, &["rename", &name, &renamed]);
    assert_eq!(docker_ok(&engine, &["inspect", "-f", "{{.Name}}", &renamed]), format!("/{renamed}"));
    docker_ok(&front.url, &["kill", &renamed]);
    assert_eq!(docker_ok(&front.url, &["wait", &renamed]), "137");

    let exited = unique_name("exit7");
    let _c3 = Cleanup(&engine, exited.clone());
    docker_ok(&engine, &["run", "-d", "--name", &exited, "busybox", "sh", "-c", "sleep 1; exit 7"]);
    assert_eq!(docker_ok(&front.url, &["wait", &exited]), "7");
}

#[test]
fn networks_and_volumes() {
    testbed::e2e!();
    let (engine, front) = setup();
    let net = unique_name("net");
    let vol = unique_name("vol");
    docker_ok(&front.url, &["network", "create", &net]);
    let ls = |url: &str, kind: &str, name: &str| docker_ok(url, &[kind, "ls", "-q", "--filter", &format!("name={name}")]);
    assert!(!ls(&engine, "network", &net).is_empty());
    assert_eq!(ls(&front.url, "network", &net), ls(&engine, "network", &net));
    docker_ok(&front.url, &["network", "rm", &net]);
    assert!(ls(&engine, "network", &net).is_empty());

    docker_ok(&front.url, &["volume", "create", &vol]);
    assert_eq!(ls(&front.url, "volume", &vol), vol);
    assert_eq!(ls(&engine, "volume", &vol), vol);
    docker_ok(&front.url, &["volume", "rm", &vol]);
    assert!(ls(&engine, "volume", &vol).is_empty());
}

#[test]
fn many_requests_leak_no_connection_or_descriptor() {
    testbed::e2e!();
    let (_engine, front) = setup();
    let request = "GET /v1.41/containers/json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    http_raw(front.port, request).unwrap(); // warm the engine connection pool
    let before = front.open_fds();
    // More than h2's 1,024 resets per connection: through the gRPC hop, an exchange that
    // reset its stream would make the connection fail before the end.
    for i in 0..1500 {
        let rsp = http_raw(front.port, request).unwrap();
        assert!(rsp.starts_with(b"HTTP/1.1 200"), "request {i}: {:?}", String::from_utf8_lossy(&rsp));
    }
    // Closed client connections are reaped as soon as their tasks see EOF.
    let settled = wait_until(Duration::from_secs(5), || front.open_fds() <= before + 2);
    assert!(settled, "fds grew from {before} to {}", front.open_fds());
}

#[test]
fn malformed_http_gets_a_400_and_the_agent_keeps_serving() {
    testbed::e2e!();
    let (_engine, front) = setup();
    let rsp = http_raw(front.port, "THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert!(rsp.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&rsp));
    assert_eq!(docker_ok(&front.url, &["version", "--format", "{{.Server.APIVersion}}"]), "1.41");
}

