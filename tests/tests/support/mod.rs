//! busbar's own processes for end-to-end tests: an agent (later a gateway) started from the
//! binaries cargo built, on a free loopback port, stopped when the guard drops.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod adapters;
pub mod crosshost;
pub mod front;

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use testbed::{free_port, unique_name, wait_until};

/// A busbar binary built next to the test executable (`target/debug/NAME`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A running busbar process, killed when dropped. Its log (stderr) goes to a file whose tail
/// is printed when a test fails while the process is alive.
pub struct Process {
    child: Child,
    /// `tcp://127.0.0.1:PORT`: what `docker -H` takes.
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Process {
    /// Starts `busbar-agent --docker ENGINE --listen tcp://127.0.0.1:FREE ARGS...` and waits
    /// until it answers `/_ping`.
    pub fn agent(engine_url: &str, args: &[&str]) -> Process {
        let port = free_port();
        let mut all = vec!["--docker".to_string(), engine_url.to_string()];
        all.extend(["--listen".to_string(), format!("tcp://127.0.0.1:{port}")]);
        all.extend(args.iter().map(|s| s.to_string()));
        Process::spawn("busbar-agent", &all, port)
    }

    /// Starts `busbar-gateway --listen tcp://127.0.0.1:FREE ARGS...`, waiting for `/_ping`
    /// through it.
    pub fn gateway(args: &[&str]) -> Process {
        let port = free_port();
        let mut all = vec!["--listen".to_string(), format!("tcp://127.0.0.1:{port}")];
        all.extend(args.iter().map(|s| s.to_string()));
        Process::spawn("busbar-gateway", &all, port)
    }

    /// Starts an agent inside `host`'s network namespace serving gRPC on `host.addr():PORT`
    /// with the certificates of node `name` from `certs`, and waits until the port accepts.
    pub fn agent_in(
        host: &testbed::Host,
        name: &str,
        certs: &Path,
        extra: &[&str],
    ) -> (Process, String) {
        let addr = format!(
            "{}:{}",
            host.addr().expect("the host has an address"),
            free_port()
        );
        let p = Process::agent_in_at(host, name, certs, &addr, extra);
        (p, addr)
    }

    /// Like [`Process::agent_in`], on a given gRPC address (`IP:PORT` in the host): to start
    /// an agent again where its registration (and the gateway) expect it.
    pub fn agent_in_at(
        host: &testbed::Host,
        name: &str,
        certs: &Path,
        addr: &str,
        extra: &[&str],
    ) -> Process {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("busbar-agent")));
        let mut cmd = host.command_in(binary("busbar-agent"));
        cmd.args(["--docker", &host.docker_url(), "--grpc-listen", addr])
            .args(tls_args(certs, name))
            .args(extra);
        let p = Process::start(cmd, 0, log);
        let up = wait_until(Duration::from_secs(15), || TcpStream::connect(addr).is_ok());
        assert!(
            up,
            "agent {name} did not listen on {addr}; its log:\n{}",
            p.log_tail()
        );
        p
    }

    fn spawn(bin: &str, args: &[String], port: u16) -> Process {
        Process::spawn_with(bin, args, port, &[])
    }

    /// Starts `busbar-agent --docker ENGINE --listen tcp://127.0.0.1:FREE ARGS...` with these
    /// environment variables (e.g. `RUST_LOG`), and waits until it answers `/_ping`.
    pub fn agent_env(engine_url: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let port = free_port();
        let mut all = vec!["--docker".to_string(), engine_url.to_string()];
        all.extend(["--listen".to_string(), format!("tcp://127.0.0.1:{port}")]);
        all.extend(args.iter().map(|s| s.to_string()));
        Process::spawn_with("busbar-agent", &all, port, env)
    }

    fn spawn_with(bin: &str, args: &[String], port: u16, env: &[(&str, &str)]) -> Process {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(bin)));
        let mut cmd = Command::new(binary(bin));
        cmd.args(args).envs(env.iter().copied());
        let mut p = Process::start(cmd, port, log);
        let up = wait_until(Duration::from_secs(15), || {
            p.exited().is_none()
                && http_raw(
                    port,
                    "GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
                .is_ok()
        });
        assert!(
            up,
            "{bin} did not come up on port {port}; its log:\n{}",
            p.log_tail()
        );
        p
    }

    /// Starts a prepared command (with its log captured); waits for nothing.
    pub fn start_cmd(cmd: Command) -> Process {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("busbar")));
        Process::start(cmd, 0, log)
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start(mut cmd: Command, port: u16, log: PathBuf) -> Process {
        let log_file = std::fs::File::create(&log).expect("log file");
        // A RUST_LOG the caller set on the command wins (a test of what a log holds).
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env(
                "RUST_LOG",
                std::env::var("BUSBAR_TEST_LOG")
                    .unwrap_or_else(|_| "info,busbar_agent=debug,busbar_gateway=debug".into()),
            );
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Process {
            child,
            url: format!("tcp://127.0.0.1:{port}"),
            port,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the process to stop (SIGTERM) and waits up to 10 s for it to exit, so that it
    /// cleans up (a unix socket is removed); killed if it does not.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        if !wait_until(Duration::from_secs(10), || self.exited().is_some()) {
            self.kill();
        }
    }

    /// The last 60 lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Open file descriptors of the process (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of pid {} ({}) ---\n{}",
                self.pid(),
                self.url,
                self.log_tail()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `--tls-ca/--tls-cert/--tls-key` for `name`'s certificate in `certs`.
pub fn tls_args(certs: &Path, name: &str) -> Vec<String> {
    let f = |file: String| certs.join(file).display().to_string();
    vec![
        "--tls-ca".into(),
        f("ca.pem".into()),
        "--tls-cert".into(),
        f(format!("{name}.pem")),
        "--tls-key".into(),
        f(format!("{name}-key.pem")),
    ]
}

/// A cluster CA in `dir` with certificates for `agents` (role agent, with their addresses as
/// SANs) and `gateway` / `client` names, made by the real `busbarctl`.
pub fn make_certs(dir: &Path, agents: &[(&str, &str)]) {
    let run = |args: &[&str]| {
        let out = Command::new(binary("busbarctl"))
            .args(args)
            .output()
            .expect("busbarctl runs");
        assert!(
            out.status.success(),
            "busbarctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = dir.to_str().unwrap();
    run(&["certs", "init", "--dir", d]);
    for (name, san) in agents {
        run(&[
            "certs", "issue", "--dir", d, "--name", name, "--role", "agent", "--san", san,
        ]);
    }
    run(&[
        "certs", "issue", "--dir", d, "--name", "gateway", "--role", "gateway",
    ]);
    run(&[
        "certs", "issue", "--dir", d, "--name", "ops", "--role", "client",
    ]);
}

/// What the passthrough suite talks to: one busbar process that clients use (an agent or a
/// gateway), and whatever else it needs running behind it.
pub struct Front {
    /// `tcp://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    main: Process,
    behind: Vec<Process>,
    /// The agent's gRPC address, when there is one behind the front.
    agent_addr: Option<String>,
}

impl Front {
    /// A standalone agent on `engine`.
    pub fn agent(engine: &str) -> Front {
        Front::of(Process::agent(engine, &[]), vec![])
    }

    /// The gateway's embedded default on `engine`.
    pub fn embedded(engine: &str) -> Front {
        Front::of(Process::gateway(&["--docker", engine]), vec![])
    }

    /// A gateway in the root namespace and an agent inside `host`'s namespace, across the
    /// gRPC/mTLS hop, with the certificates in `certs` (node name `node`).
    pub fn remote(host: &testbed::Host, node: &str, certs: &Path) -> Front {
        let (agent, addr) = Process::agent_in(host, node, certs, &[]);
        let mut args = vec!["--agent".to_string(), format!("{node}={addr}")];
        args.extend(tls_args(certs, "gateway"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Front {
            agent_addr: Some(addr),
            ..Front::of(Process::gateway(&args), vec![agent])
        }
    }

    fn of(main: Process, behind: Vec<Process>) -> Front {
        Front {
            url: main.url.clone(),
            port: main.port,
            main,
            behind,
            agent_addr: None,
        }
    }

    pub fn agent_addr(&self) -> &str {
        self.agent_addr
            .as_deref()
            .expect("a front with an agent behind it")
    }

    /// Open file descriptors of the process clients talk to.
    pub fn open_fds(&self) -> usize {
        self.main.open_fds()
    }

    pub fn main(&self) -> &Process {
        &self.main
    }

    pub fn behind(&mut self) -> &mut Vec<Process> {
        &mut self.behind
    }
}

/// The lines a child process prints, as they come, each with the moment it was read; the
/// reading thread ends with the output or when the receiver is dropped.
pub fn line_channel(
    out: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<(String, std::time::Instant)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((line, std::time::Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends raw bytes to 127.0.0.1:port and returns everything read until the server closes
/// (or 10 s pass). For requests that must be exact, or malformed on purpose.
pub fn http_raw(port: u16, request: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = vec![];
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// One plain `GET path` on `addr` (`IP:PORT`, e.g. a metrics listener): the status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: busbar\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Runs a command line under `script` so that it gets a pseudo-terminal (for `-t`/`-it`),
/// feeding `input` to it; returns what the terminal showed.
pub fn with_tty(cmdline: &str, input: &[u8]) -> String {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", cmdline, "/dev/null"])
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CLI_HINTS", "false");
    let out = testbed::cmd::output_with_timeout(&mut cmd, Some(input), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory under the system temp dir, removed (with its contents) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let d = std::env::temp_dir().join(unique_name("bbtest"));
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        TempDir(d)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes a server listening on 127.0.0.1 (a fake adapter's `http://127.0.0.1:PORT/path`)
/// reachable from the bed's hosts: forwards `0.0.0.0:FREE` to it, and returns the URL with
/// `addr` (a root-namespace address hosts route to, e.g. `Host::gateway_addr`) in its place.
/// The forwarder lives as long as the test process.
pub fn expose(url: &str, addr: std::net::IpAddr) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (target, path) = rest
        .split_once('/')
        .map(|(h, p)| (h.to_owned(), format!("/{p}")))
        .unwrap_or((rest.to_owned(), "/".into()));
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("binding a forwarder");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(inbound) = conn else { continue };
            let Ok(outbound) = TcpStream::connect(&target) else {
                continue;
            };
            let (mut a, mut b) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            let (mut c, mut d) = (inbound, outbound);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    format!("http://{addr}:{port}{path}")
}

/// The lease of each node's registration under `prefix` (`/busbar` by default), as etcd has
/// it (`etcdctl get -w fields`).
pub fn registration_leases(etcd: &str, prefix: &str) -> std::collections::BTreeMap<String, String> {
    let nodes = format!("{prefix}/nodes/");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            etcd,
            "get",
            "--prefix",
            &nodes,
            "-w",
            "fields",
        ])
        .output()
        .expect("etcdctl runs");
    let mut leases = std::collections::BTreeMap::new();
    let mut node = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(key) = line.strip_prefix("\"Key\" : ") {
            node = key
                .trim_matches('"')
                .strip_prefix(&nodes)
                .map(str::to_owned);
        } else if let Some(lease) = line.strip_prefix("\"Lease\" : ") {
            if let Some(n) = node.take() {
                leases.insert(n, lease.to_owned());
            }
        }
    }
    leases
}

/// Runs the real `busbarctl` with `args`.
pub fn busbarctl(args: &[&str]) -> std::process::Output {
    Command::new(binary("busbarctl"))
        .args(args)
        .output()
        .expect("busbarctl runs")
}

/// A container on `engine` that prints `tick` every 0.2 s, and a `docker logs -f` of it
/// through `front` whose first line was read: for tests of what befalls an open stream.
pub struct Ticking {
    pub name: String,
    pub follow: Child,
    pub lines: Lines<BufReader<ChildStdout>>,
}

pub fn ticking_logs(engine: &str, front: &str, prefix: &str) -> Ticking {
    let name = unique_name(prefix);
    testbed::docker_ok(
        engine,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.2; done",
        ],
    );
    let mut follow = testbed::docker_command(front, &["logs", "-f", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker logs -f starts");
    let mut lines = BufReader::new(follow.stdout.take().expect("piped stdout")).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "tick");
    Ticking {
        name,
        follow,
        lines,
    }
}
