//! `busbar-scalebench`: `docker ps -a` and `docker info` latency through one real
//! `busbar-gateway` in cluster mode in front of 10, 100 and 1,000 SIMULATED engines.
//!
//! ```text
//! cargo build --release -p busbar-tests -p busbar-gateway --bins
//! target/release/busbar-scalebench [--nodes 10,100,1000] [--requests 200] [--containers 30] [--out FILE]
//! ```
//!
//! No root and no Docker engine needed: the nodes are SIMULATED (`busbar-simnodes`, one process
//! hosting N gRPC servers with synthetic engine answers; see its module comment). What is real:
//! the gateway (the release binary, unchanged, started as an operator would), its cluster mode
//! (membership from `--agent`, health probes, the fan-out of `docker ps` to every healthy node,
//! `info` and `version` made from the probes' documents, the merge of the answers), the gRPC hop and the mutual TLS (one certificate per node from one cluster CA,
//! roles checked in every handshake). What is simulated: the engines behind the agents, which
//! answer `/info`, `/version` and `/containers/json` from documents made once at startup, so
//! they cost almost nothing; and every "node" is on the loopback of this one machine, sharing
//! its CPUs with the gateway.
//!
//! # Method
//!
//! For each cluster size N:
//!
//! 1. A cluster CA and a gateway certificate are made in a temporary directory
//!    (`busbar_tls::pki`, what `busbarctl certs` runs); `busbar-simnodes --count N`
//!    issues `sim0` ... `sim{N-1}` there and listens on `127.0.0.1:(P+i)`.
//! 2. `busbar-gateway --listen tcp://127.0.0.1:PORT --tls-ca .. --tls-cert gateway.pem
//!    --tls-key .. --probe-interval 5`, with the N agents in `BUSBAR_AGENTS`
//!    (`sim{i}=127.0.0.1:(P+i)`, comma-separated: the `--agent` flag's environment variable,
//!    which keeps a 1,000-node command line short).
//! 3. Wait (with a timeout) until `GET /v1.41/info` shows every node `Healthy`.
//! 4. Gateway and simulator CPU over an idle window of two probe intervals: the standing cost
//!    of health probes.
//! 5. On one kept-alive connection, a warm-up, then R sequential requests of each of
//!    `GET /v1.41/containers/json?all=1` (`docker ps -a`), `GET /v1.41/info` (`docker info`)
//!    and `GET /v1.41/version` (`docker version`: a block per node, small), in 10
//!    rounds rotating the kinds. Each request is timed from writing it to reading the last
//!    byte of the response (`bench/http.rs`'s client). Each response is then checked (outside
//!    the timing) to hold every node: N·C containers, N `Healthy` nodes, N node components.
//!    The gateway's and the simulator's CPU time (`/proc/PID/stat`) are read around every
//!    block of requests, so each request kind gets its own CPU per request.
//! 6. RSS (current and peak), open file descriptors and threads of both processes.
//! 7. Everything is stopped (guards that kill on drop, also on error), then the next size.
//!
//! Percentiles are nearest-rank (`bench/stats.rs`). A size that fails (file descriptors,
//! memory, a timeout) is reported with the reason, and the other sizes are still measured.

#[path = "../bench/host.rs"]
mod host;
// Shared with busbar-bench, which uses other parts of it.
#[allow(dead_code)]
#[path = "../bench/procstat.rs"]
mod procstat;
// Shared with busbar-bench, which uses parts this program does not (unix sockets, medians).
#[allow(dead_code)]
#[path = "../bench/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../bench/stats.rs"]
mod stats;

use host::{busbar_version, command_line, read_trimmed, run_text};
use procstat::{cpu_time, machine_busy};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use busbar_tls::pki::{CertDir, IssueRequest};
use busbar_tls::Role;
use clap::Parser;

use http::{Conn, Endpoint};
use stats::Summary;

/// The requests measured: what the user types, and what it sends. `docker version` lists every
/// node too, with smaller entries (about 270 bytes per node): next to `docker info` it shows
/// what the size of the document costs. (Before issue #5 both went to every node per request;
/// now the gateway answers them from its probes' documents.)
const REQUESTS: [(&str, &str); 3] = [
    ("docker ps -a", "/v1.41/containers/json?all=1"),
    ("docker info", "/v1.41/info"),
    ("docker version", "/v1.41/version"),
];
/// What each response must hold once per container (`docker ps -a`) or node (the others):
/// counted in every response, after it is timed, to check that every node answered.
const WITNESS: [&[u8]; 3] = [b"\"Id\":\"", b"\"Healthy\"", b"\"Name\":\"sim"];
/// Rounds the requests are spread over (rotating the kinds).
const ROUNDS: usize = 10;
/// How long the simulator may take to issue its certificates and bind its ports.
const SIM_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the gateway may take to answer at all.
const GATEWAY_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long every node may take to become Healthy once the gateway answers.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(300);
/// Swarm 1.0's published `docker info` at 1,000 nodes (reference swarm.md §6.1): p50, p99.
const SWARM_INFO_MS: (u64, u64) = (150, 360);
/// Our goal: ten times better than that.
const GOAL_FACTOR: u64 = 10;

#[derive(Debug, Parser)]
#[command(
    name = "busbar-scalebench",
    about = "docker ps -a / docker info latency through busbar-gateway in front of N SIMULATED engines"
)]
struct Args {
    /// Cluster sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    nodes: Vec<usize>,
    /// Timed requests per size and request kind.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Containers per simulated node.
    #[arg(long, default_value_t = 30)]
    containers: usize,
    /// The gateway's --probe-interval, in seconds.
    #[arg(long, default_value_t = 5.0)]
    probe_interval: f64,
    /// First port of the simulated nodes (node i on base + i); a free range is searched from here.
    #[arg(long, default_value_t = 21000)]
    base_port: u16,
    /// Where busbar-gateway and busbar-simnodes are (default: this program's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// One more flag for the gateway (repeatable), e.g. `--gateway-arg=--list-live` for the
    /// live fan-out of `docker ps` instead of the list cache.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// Seconds to wait once every node is healthy, before anything is measured (the gateway's
    /// list cache lists every node when it starts).
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbar-scalebench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.requests < ROUNDS {
        bail!("--requests must be at least {ROUNDS}");
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .to_path_buf(),
    };
    for bin in ["busbar-gateway", "busbar-simnodes"] {
        if !bin_dir.join(bin).is_file() {
            bail!(
                "{} is not built: cargo build --release -p busbar-tests -p busbar-gateway --bins",
                bin_dir.join(bin).display()
            );
        }
    }
    let work = WorkDir::new()?;
    let certs = CertDir::new(work.path().join("pki"));
    certs.init_ca(false).context("creating the cluster CA")?;
    let gateway_cert = IssueRequest {
        name: "gateway".into(),
        role: Role::Gateway,
        sans: vec![],
        days: 1,
        force: false,
    };
    certs
        .issue(&gateway_cert)
        .context("issuing the gateway's certificate")?;

    let mut results = Vec::new();
    for &n in &args.nodes {
        eprintln!("== {n} simulated nodes ==");
        let result = measure_size(args, &bin_dir, work.path(), &certs, n);
        match &result {
            Ok(r) => eprintln!("   done: {}", r.one_line()),
            Err(e) => eprintln!("   FAILED: {e:#}"),
        }
        results.push((n, result));
    }

    let report = render(args, &results);
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// What one cluster size gave.
struct SizeResult {
    nodes: usize,
    /// From starting the simulator to its "ready" line (certificates issued, ports bound).
    sim_ready: Duration,
    /// From starting the gateway to every node `Healthy` in its `/info`.
    all_healthy: Duration,
    rows: Vec<Row>,
    gateway: ProcSnapshot,
    sim: ProcSnapshot,
    /// CPU of each process over the idle window, as a fraction of one CPU.
    idle_cpu: (f64, f64),
    idle_window: Duration,
    warmup: usize,
    /// CPUs used by every other process on the machine during the timed requests (on average):
    /// the noise the numbers were taken in.
    others_cpu: f64,
}

impl SizeResult {
    fn one_line(&self) -> String {
        self.rows
            .iter()
            .map(|r| {
                format!(
                    "{}: p50 {} p99 {} ({})",
                    r.name,
                    ms(r.summary.p50),
                    ms(r.summary.p99),
                    size(r.bytes)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One request kind at one size.
struct Row {
    name: &'static str,
    path: &'static str,
    summary: Summary,
    /// Body size of the last response.
    bytes: usize,
    gateway_cpu: Duration,
    sim_cpu: Duration,
    /// Responses that did not hold every node (should be 0), and the lowest count seen.
    incomplete: usize,
    lowest: usize,
    expected: usize,
}

fn measure_size(
    args: &Args,
    bin_dir: &Path,
    work: &Path,
    certs: &CertDir,
    n: usize,
) -> Result<SizeResult> {
    let base = free_range(args.base_port, n)?;

    // The simulator.
    let started = Instant::now();
    let sim_bin = bin_dir.join("busbar-simnodes");
    let mut cmd = with_nofile(&sim_bin, 2 * n as u64 + 128)?;
    cmd.args(["--count", &n.to_string(), "--ca-dir"])
        .arg(certs.path());
    cmd.args([
        "--base-port",
        &base.to_string(),
        "--containers",
        &args.containers.to_string(),
        "--watch-stdin",
    ]);
    let mut sim = Process::spawn(&format!("simnodes-{n}"), cmd, work, true)?;
    sim.wait_ready_line(SIM_READY_TIMEOUT)?;
    let sim_ready = started.elapsed();
    eprintln!("   simulator ready in {:.1}s", sim_ready.as_secs_f64());

    // The gateway.
    let port = free_port()?;
    let endpoint = Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let agents: Vec<String> = (0..n)
        .map(|i| format!("sim{i}=127.0.0.1:{}", usize::from(base) + i))
        .collect();
    let files = certs.tls_files("gateway");
    let mut cmd = with_nofile(&bin_dir.join("busbar-gateway"), n as u64 + 1024)?;
    cmd.args(["--listen", &format!("tcp://127.0.0.1:{port}")]);
    cmd.arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key);
    cmd.args(["--probe-interval", &args.probe_interval.to_string()]);
    cmd.args(&args.gateway_args);
    cmd.env("BUSBAR_AGENTS", agents.join(","));
    let started = Instant::now();
    let mut gateway = Process::spawn(&format!("gateway-{n}"), cmd, work, false)?;
    let mut conn = Conn::new(endpoint.clone());
    wait_all_healthy(&mut conn, n, &mut [&mut gateway, &mut sim])?;
    let all_healthy = started.elapsed();
    eprintln!(
        "   all {n} nodes Healthy {:.1}s after the gateway started",
        all_healthy.as_secs_f64()
    );

    thread::sleep(Duration::from_secs_f64(args.settle));

    // Idle: only the probes run (and, with the list cache, one idle events stream per node).
    let idle_window = Duration::from_secs_f64(2.0 * args.probe_interval);
    let (g0, s0) = (cpu_time(gateway.pid())?, cpu_time(sim.pid())?);
    thread::sleep(idle_window);
    let (g1, s1) = (cpu_time(gateway.pid())?, cpu_time(sim.pid())?);
    let idle_cpu = (
        (g1 - g0).as_secs_f64() / idle_window.as_secs_f64(),
        (s1 - s0).as_secs_f64() / idle_window.as_secs_f64(),
    );

    // Warm-up, then the timed rounds.
    let warmup = (args.requests / 10).max(5);
    for (_, path) in REQUESTS {
        for _ in 0..warmup {
            timed_get(&mut conn, path).context("warming up")?;
        }
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let mut cpu = [(Duration::ZERO, Duration::ZERO); 3];
    let mut bytes = [0usize; 3];
    let mut incomplete = [0usize; 3];
    let mut lowest = [usize::MAX; 3];
    let expected = [n * args.containers, n, n];
    let per_round = args.requests.div_ceil(ROUNDS);
    let (busy0, ours0, timed0) = (
        machine_busy()?,
        cpu_time(gateway.pid())? + cpu_time(sim.pid())? + cpu_time(std::process::id())?,
        Instant::now(),
    );
    for round in 0..ROUNDS {
        for k in 0..REQUESTS.len() {
            let kind = (round + k) % REQUESTS.len();
            let (_, path) = REQUESTS[kind];
            let todo = per_round.min(args.requests - samples[kind].len());
            let (g0, s0) = (cpu_time(gateway.pid())?, cpu_time(sim.pid())?);
            for _ in 0..todo {
                let (took, body) =
                    timed_get(&mut conn, path).with_context(|| format!("measuring {path}"))?;
                samples[kind].push(took);
                bytes[kind] = body.len();
                let seen = count(&body, WITNESS[kind]);
                lowest[kind] = lowest[kind].min(seen);
                if seen != expected[kind] {
                    incomplete[kind] += 1;
                }
            }
            let (g1, s1) = (cpu_time(gateway.pid())?, cpu_time(sim.pid())?);
            cpu[kind].0 += g1 - g0;
            cpu[kind].1 += s1 - s0;
        }
    }
    let ours =
        cpu_time(gateway.pid())? + cpu_time(sim.pid())? + cpu_time(std::process::id())? - ours0;
    let others_cpu = (machine_busy()?.saturating_sub(busy0).saturating_sub(ours)).as_secs_f64()
        / timed0.elapsed().as_secs_f64();
    gateway.check_running()?;
    sim.check_running()?;
    let rows = REQUESTS
        .iter()
        .enumerate()
        .map(|(kind, &(name, path))| {
            let count = u32::try_from(samples[kind].len()).unwrap_or(u32::MAX);
            Row {
                name,
                path,
                summary: Summary::of(&samples[kind]).expect("requests > 0"),
                bytes: bytes[kind],
                gateway_cpu: cpu[kind].0 / count,
                sim_cpu: cpu[kind].1 / count,
                incomplete: incomplete[kind],
                lowest: lowest[kind],
                expected: expected[kind],
            }
        })
        .collect();
    let result = SizeResult {
        nodes: n,
        sim_ready,
        all_healthy,
        rows,
        gateway: ProcSnapshot::of(gateway.pid())?,
        sim: ProcSnapshot::of(sim.pid())?,
        idle_cpu,
        idle_window,
        warmup,
        others_cpu,
    };
    drop(gateway);
    drop(sim);
    Ok(result)
}

/// One GET, timed from writing the request to reading the last byte; anything but 200 fails.
fn timed_get(conn: &mut Conn, path: &str) -> Result<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let (status, body) = conn.get(path)?;
    let took = start.elapsed();
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)]).trim()
        );
    }
    Ok((took, body))
}

/// Polls the gateway's `/info` until it shows `n` nodes, all `Healthy`.
fn wait_all_healthy(conn: &mut Conn, n: usize, processes: &mut [&mut Process]) -> Result<()> {
    let started = Instant::now();
    let mut answered = false;
    let mut last = String::from("no answer yet");
    loop {
        for p in processes.iter_mut() {
            p.check_running()?;
        }
        let limit = if answered {
            GATEWAY_UP_TIMEOUT + HEALTHY_TIMEOUT
        } else {
            GATEWAY_UP_TIMEOUT
        };
        if started.elapsed() > limit {
            let logs: Vec<String> = processes
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail()))
                .collect();
            bail!(
                "the gateway did not show {n} Healthy nodes within {limit:?} (last: {last})\n{}",
                logs.join("\n")
            );
        }
        match conn.get("/v1.41/info") {
            Ok((200, body)) => {
                answered = true;
                let healthy = count(&body, b"\"Healthy\"");
                if healthy == n {
                    return Ok(());
                }
                last = format!("{healthy} of {n} Healthy");
            }
            Ok((status, body)) => {
                last = format!(
                    "{status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
                )
            }
            Err(e) => last = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let first = needle[0];
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..haystack.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => break,
            Some(off) => {
                i += off;
                if &haystack[i..i + needle.len()] == needle {
                    n += 1;
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
        }
    }
    n
}

/// A command that runs `bin` with at least `need` open files allowed: as is if the soft limit
/// already allows it, else through `sh -c 'ulimit -n NEED && exec ...'` (the workspace forbids
/// unsafe code, so no setrlimit here), which works up to the hard limit.
fn with_nofile(bin: &Path, need: u64) -> Result<Command> {
    let (soft, hard) = nofile_limits();
    if soft >= need {
        return Ok(Command::new(bin));
    }
    if hard < need {
        bail!(
            "{} needs about {need} open files, and the hard limit (ulimit -Hn) is {hard}: raise it \
             (e.g. `LimitNOFILE=` or /etc/security/limits.conf) or measure fewer nodes",
            bin.display()
        );
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit -n {need} && exec \"$0\" \"$@\"")])
        .arg(bin);
    Ok(cmd)
}

/// This process's (soft, hard) limit on open files, from `/proc/self/limits`.
fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let parse = |v: Option<&str>| match v {
        Some("unlimited") => u64::MAX,
        Some(v) => v.parse().unwrap_or(1024),
        None => 1024,
    };
    match limits.lines().find(|l| l.starts_with("Max open files")) {
        Some(line) => {
            let mut f = line.split_whitespace().skip(3);
            (parse(f.next()), parse(f.next()))
        }
        None => (1024, 1024),
    }
}

/// The first `base + k·(n + 100)` such that ports base .. base+n-1 can all be bound now.
fn free_range(from: u16, n: usize) -> Result<u16> {
    let mut base = usize::from(from);
    while base + n <= 32768 {
        let all_free = (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok());
        if all_free {
            return Ok(base as u16);
        }
        base += n + 100;
    }
    bail!("no range of {n} free ports between {from} and 32768 (below the ephemeral range)")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Memory, descriptors and threads of a process at one moment.
#[derive(Debug, Clone, Copy)]
struct ProcSnapshot {
    rss_kib: u64,
    peak_rss_kib: u64,
    fds: usize,
    threads: u64,
}

impl ProcSnapshot {
    fn of(pid: u32) -> Result<ProcSnapshot> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        Ok(ProcSnapshot {
            rss_kib: field("VmRSS:"),
            peak_rss_kib: field("VmHWM:"),
            fds,
            threads: field("Threads:"),
        })
    }
}

/// A temporary directory for certificates and logs, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(testbed::unique_name("busbar-scalebench"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped when dropped; its stderr goes to a log file.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Held so that the child (`--watch-stdin`) exits if we die.
    _stdin: Option<ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
}

impl Process {
    /// Spawns `cmd` without any inherited `BUSBAR_*` or `RUST_LOG` besides what `cmd` sets.
    fn spawn(name: &str, mut cmd: Command, dir: &Path, piped: bool) -> Result<Process> {
        let log = dir.join(format!("{name}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        for (key, _) in std::env::vars_os() {
            let key_s = key.to_string_lossy();
            if key_s.starts_with("BUSBAR_") && !cmd.get_envs().any(|(k, _)| k == key) {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("RUST_LOG").stderr(log_file);
        if piped {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
            _stdin: stdin,
            stdout,
        })
    }

    /// Waits for the simulator's `ready` line on stdout.
    fn wait_ready_line(&mut self, timeout: Duration) -> Result<()> {
        let stdout = self.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(timeout) {
            Ok(line) if line.starts_with("ready") => Ok(()),
            Ok(_) => {
                thread::sleep(Duration::from_millis(100));
                bail!(
                    "{} exited before it was ready; its log ends with:\n{}",
                    self.name,
                    self.log_tail()
                )
            }
            Err(_) => bail!(
                "{} not ready within {timeout:?}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            )),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- the report ---

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn render(args: &Args, results: &[(usize, Result<SizeResult>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- Date: {}",
        run_text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "- Machine: {}; kernel {}",
        machine(),
        read_trimmed("/proc/sys/kernel/osrelease")
    );
    let _ = writeln!(out, "- busbar: {}", busbar_version());
    let _ = writeln!(out, "- Command: `{}`", command_line());
    let warmup = results
        .iter()
        .find_map(|(_, r)| r.as_ref().ok().map(|r| r.warmup))
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "- Per size: {} timed requests of each kind after {warmup} warm-up requests of each, sequential on one \
         keep-alive connection, in {ROUNDS} rounds rotating the kinds; {} containers per SIMULATED node; \
         gateway `--probe-interval {}` (`--probe-timeout` default 3 s)",
        args.requests, args.containers, args.probe_interval
    );
    out.push('\n');

    let goal = (SWARM_INFO_MS.0 / GOAL_FACTOR, SWARM_INFO_MS.1 / GOAL_FACTOR);
    let _ = writeln!(
        out,
        "| nodes (SIMULATED) | containers | request | response | p50 | p99 | mean | gateway CPU / request | simulator CPU / request |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (n, result) in results {
        match result {
            Ok(r) => {
                for row in &r.rows {
                    let complete = if row.incomplete == 0 {
                        String::new()
                    } else {
                        format!(
                            " (**{} of {} responses incomplete**, lowest {} of {})",
                            row.incomplete, args.requests, row.lowest, row.expected
                        )
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | `{}` (`GET {}`) | {}{complete} | {} | {} | {} | {} | {} |",
                        thousands(r.nodes),
                        thousands(r.nodes * args.containers),
                        row.name,
                        row.path,
                        size(row.bytes),
                        ms(row.summary.p50),
                        ms(row.summary.p99),
                        ms(row.summary.mean),
                        ms(row.gateway_cpu),
                        ms(row.sim_cpu),
                    );
                }
            }
            Err(_) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | — | **failed** (see below) | — | — | — | — | — |",
                    thousands(*n),
                    thousands(n * args.containers)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "| 1,000 (Swarm 1.0, 2015: real t2.micro nodes, m4.xlarge manager) | 30,000 | `docker info` (CLI, 1,000 runs) | — | {} ms | {} ms | — | — | — |",
        SWARM_INFO_MS.0, SWARM_INFO_MS.1
    );
    out.push('\n');

    if let Some((_, Ok(r))) = results.iter().find(|(n, r)| *n == 1000 && r.is_ok()) {
        if let Some(info) = r.rows.iter().find(|row| row.name == "docker info") {
            let verdict = |ours: Duration, limit: u64| {
                if ours <= Duration::from_millis(limit) {
                    "met"
                } else {
                    "**missed**"
                }
            };
            let _ = writeln!(
                out,
                "Goal at 1,000 nodes, `docker info` {GOAL_FACTOR}× better than Swarm (p50 ≤ {} ms, p99 ≤ {} ms): \
                 p50 {} ({}), p99 {} ({}).\n",
                goal.0,
                goal.1,
                ms(info.summary.p50),
                verdict(info.summary.p50, goal.0),
                ms(info.summary.p99),
                verdict(info.summary.p99, goal.1)
            );
        }
    }

    let _ = writeln!(
        out,
        "| nodes | simulator ready | all Healthy after | gateway RSS (peak) | gateway fds | gateway threads | \
         gateway idle CPU (probes) | simulator RSS (peak) | simulator idle CPU | other processes' CPU while timed |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (_, result) in results {
        if let Ok(r) = result {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.1} s | {} ({}) | {} | {} | {:.1} % | {} ({}) | {:.1} % | {:.2} CPUs |",
                thousands(r.nodes),
                r.sim_ready.as_secs_f64(),
                r.all_healthy.as_secs_f64(),
                mib(r.gateway.rss_kib),
                mib(r.gateway.peak_rss_kib),
                r.gateway.fds,
                r.gateway.threads,
                100.0 * r.idle_cpu.0,
                mib(r.sim.rss_kib),
                mib(r.sim.peak_rss_kib),
                100.0 * r.idle_cpu.1,
                r.others_cpu,
            );
        }
    }
    let window = results
        .iter()
        .find_map(|(_, r)| r.as_ref().ok().map(|r| r.idle_window))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n\"Idle CPU\" is the share of one CPU each process used over {:.0} s with no client request (health probes \
         only); \"CPU / request\" is user + system time (`/proc/PID/stat`, 10 ms ticks) over the timed requests, divided \
         by their number. \"Other processes' CPU\" is the machine's busy time (`/proc/stat`) during the timed \
         requests minus that of the gateway, the simulator and this program, per second: the noise of a shared machine.",
        window.as_secs_f64()
    );
    for (n, result) in results {
        if let Err(e) = result {
            let _ = writeln!(out, "\n{} nodes failed: {e:#}", thousands(*n));
        }
    }
    out
}

/// `2 CPUs (nproc; AMD EPYC), 23 GiB RAM, ulimit -n 20000`.
fn machine() -> String {
    let (soft, _) = nofile_limits();
    format!("{}, ulimit -n {soft}", host::machine())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting() {
        assert_eq!(count(b"\"Id\":\"a\",\"Id\":\"b\"", b"\"Id\":\""), 2);
        assert_eq!(
            count(b"[\"Healthy\",\"Unhealthy\",\"Healthy\"]", b"\"Healthy\""),
            2
        );
        assert_eq!(count(b"", b"x"), 0);
        assert_eq!(thousands(30000), "30,000");
        assert_eq!(thousands(100), "100");
    }
}
