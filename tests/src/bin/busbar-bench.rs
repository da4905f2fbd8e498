//! `busbar-bench`: what busbar costs, measured against the engine's own socket in the same run.
//!
//! ```text
//! cargo build --release --workspace --bins && sudo target/release/busbar-bench [--requests N] [--connections C,...] [--stream-mib M] [--stream-runs R] [--targets T,...] [--out FILE]
//! ```
//!
//! It starts a one-host test bed (a private dockerd in its own network namespace, see the
//! `testbed` crate), then every target in front of that one engine:
//!
//! - `direct`: the engine's unix socket, the floor;
//! - `agent`: `busbar-agent` on loopback TCP;
//! - `gateway-embedded`: `busbar-gateway --docker ...`, with its in-process agent;
//! - `gateway+agent`: `busbar-gateway` on loopback dialing a `busbar-agent` that runs inside the
//!   host's network namespace, over gRPC with mutual TLS (certificates made by `busbarctl`);
//! - `haproxy`: a peer, not busbar: Debian's HAProxy on loopback TCP in front of the socket,
//!   configured as the popular docker-socket-proxy image configures it (`bench/haproxy.cfg`);
//! - three references for `gateway+agent`, not busbar as deployed: `relay×2`, two byte relays on the same
//!   path (`busbar-relay`); `relay×2 mTLS`, the same with busbar's mutual TLS between them; and
//!   `agent×2 HTTP/1`, two `busbar-agent`s on it, the first forwarding to the second in plain
//!   HTTP/1 (busbar's HTTP path twice, without gRPC and TLS).
//!
//! Targets whose binaries are not built, or that fail to start, are reported as not measured.
//! All of them are stopped at the end, also on error (their guards kill them on drop), and so
//! is the test bed.
//!
//! # Method, and why
//!
//! - **Ratios, not absolute numbers.** The machines this runs on are shared and noisy, and an
//!   engine's speed depends on its storage driver and version. So every target is measured in
//!   the same run against the same engine, and what is reported is the *difference* (added
//!   latency) or *ratio* (throughput) to `direct`. The project never asserts performance in
//!   tests; it ships this program and its results table (`BENCHMARKS.md`) instead.
//! - **Latency** of `GET /_ping`, `GET /v1.41/containers/json` (running containers: none) and
//!   `GET /v1.41/containers/json?all=1` (about 30 created containers): sequential requests on
//!   one kept-alive connection per target, each timed from writing the request to reading the
//!   last byte of the response, with a small blocking HTTP/1.1 client (`bench/http.rs`) whose
//!   cost is the same for every target. curl, which reuses its connection too, costs more per
//!   request than this client: compare added latencies across clients, never absolute ones.
//! - **Interleaving.** After a warm-up, the N requests per target are sent in 10 rounds of N/10,
//!   and the order of the targets rotates from round to round. A burst of noise (another job on
//!   the machine) then hits every target alike instead of ruining one target's numbers.
//! - **Percentiles** are nearest-rank: p50 and p99 are the samples at rank ⌈0.50·N⌉ and ⌈0.99·N⌉
//!   of the sorted samples, always observed values, no interpolation. The mean is reported too,
//!   since it shows what p50 hides (a slow tail).
//! - **Requests per second** of `GET /_ping` and `GET /v1.41/containers/json` with 8, then
//!   64 connections at once (`--connections`), each sending its next request as soon as its last
//!   answer is in, as `wrk` does: 3 windows of
//!   2 s per target, the order rotating; the median rate, its ratio to direct, and the CPU per
//!   request of the target's processes. The client threads share the machine with the target
//!   and the engine, as `wrk` did.
//! - **Throughput** of one large stream: a stopped container holds a file of M MiB (written once
//!   with `dd`), and `GET /v1.41/containers/ID/archive?path=/big` is read to the end on a new
//!   connection, 3 times per target by default (rotating order); the median is reported in MiB/s
//!   and against direct, with the CPU time the target's processes and the engine spent per GiB
//!   (from `/proc/PID/stat`): wall time on a small shared machine is noisy, CPU time less so,
//!   and on a machine where the engine is CPU-bound every CPU-second of the hop is taken from it.
//!
//! Goals: added p50 latency ≤ +250 µs on loopback for every busbar target; stream ≥ 90 % of
//! direct. The table marks them, but the program never fails because of them.

#[path = "../bench/host.rs"]
mod host;
#[path = "../bench/http.rs"]
mod http;
#[path = "../bench/measure.rs"]
mod measure;
// Shared with the scale and chain benchmarks, which use other parts of it.
#[allow(dead_code)]
#[path = "../bench/procstat.rs"]
mod procstat;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/stats.rs"]
mod stats;
#[path = "../bench/targets.rs"]
mod targets;

use host::{busbar_version, command_line, machine, read_trimmed, run_text};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use testbed::{Host, Testbed, TestbedSpec};

use http::{Conn, Endpoint};
use measure::{Lane, Subject};
use report::Report;
use targets::{Kind, Launcher, Target, WorkDir};

/// The requests whose latency is measured.
const LATENCY_PATHS: [&str; 3] = [
    "/_ping",
    "/v1.41/containers/json",
    "/v1.41/containers/json?all=1",
];
/// The requests whose rate with several connections at once is measured.
const THROUGHPUT_PATHS: [&str; 2] = ["/_ping", "/v1.41/containers/json"];
/// Timed windows per target and request in the throughput measure, and their length.
const THROUGHPUT_RUNS: usize = 3;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);
/// Containers created (not started) before the list is measured.
const CONTAINERS: usize = 30;
/// Rounds the latency requests are spread over.
const ROUNDS: usize = 10;
/// How long writing the stream's file in its container may take.
const FILL_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines the `docker logs` container writes: 100,000 of 93 bytes, about 9 MB, which the
/// engine sends a line (one chunk) at a time.
const LOG_LINES: usize = 100_000;

/// busbar-bench: latency and throughput of busbar's hops against the engine's own socket.
#[derive(Debug, Parser)]
#[command(name = "busbar-bench")]
struct Args {
    /// Sequential requests per target and request (after a warm-up).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    requests: u64,
    /// Size of the file streamed out of a container, in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    stream_mib: u64,
    /// Connections sending at once in the throughput measure; each count given is measured in
    /// turn (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [8u64, 64],
        value_parser = clap::value_parser!(u64).range(1..=256)
    )]
    connections: Vec<u64>,
    /// Runs of the stream per target (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    stream_runs: u64,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure only these targets (comma-separated), and `direct`, which every other is
    /// compared to. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Kind>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbar-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    ensure_root()?;
    let requests = usize::try_from(args.requests)?;
    let stream_runs = usize::try_from(args.stream_runs)?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the bench binary has no directory")?
        .to_path_buf();

    eprintln!("starting a one-host test bed ...");
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })?;
    let host = bed.host("h1");
    let engine = Endpoint::Unix(host.docker_sock().to_path_buf());
    create_containers(host, CONTAINERS)?;
    let big = create_big_container(host, args.stream_mib)?;
    let chatty = create_logs_container(host)?;

    let work = WorkDir::new()?;
    let launcher = Launcher {
        host,
        bin_dir,
        work: work.path(),
    };
    let (started, not_measured) = start_targets(&launcher, &args.targets)?;

    let warmup = (requests / 10).max(50);
    let rounds = ROUNDS.min(requests);
    let (latency, notes) = measure_latency(&started, requests, rounds, warmup)?;
    let connections = args
        .connections
        .iter()
        .map(|&c| usize::try_from(c))
        .collect::<Result<Vec<usize>, _>>()?;
    let mut throughput = vec![];
    for &at_once in &connections {
        for path in THROUGHPUT_PATHS {
            eprintln!("measuring GET {path} with {at_once} connections at once ...");
            throughput.push(measure::throughput(
                &subjects(&started),
                path,
                at_once,
                THROUGHPUT_RUNS,
                THROUGHPUT_WINDOW,
            )?);
        }
    }
    let path = format!("/v1.41/containers/{big}/archive?path=/big");
    eprintln!(
        "streaming {} MiB {stream_runs} times per target ...",
        args.stream_mib
    );
    let streams = measure_streams(&started, host, &path, stream_runs, args.stream_mib)?;
    eprintln!("reading docker logs ({LOG_LINES} lines) {stream_runs} times per target ...");
    let logs = measure::streams(
        &subjects(&started),
        host.engine_pid()?,
        &format!("/v1.41/containers/{chatty}/logs?stdout=1"),
        stream_runs,
        (LOG_LINES * 90) as u64,
    )?;

    let report = Report {
        date: run_text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default(),
        machine: machine(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        engine: engine_description(&engine)?,
        busbar: busbar_version(),
        command: command_line(),
        requests,
        rounds,
        warmup,
        stream_mib: args.stream_mib,
        stream_runs,
        containers: CONTAINERS + 1,
        targets: Kind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    not_measured
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, why)| why.clone()),
                )
            })
            .collect(),
        latency,
        connections,
        throughput_runs: THROUGHPUT_RUNS,
        throughput_window: THROUGHPUT_WINDOW,
        throughput,
        streams,
        log_lines: LOG_LINES,
        logs,
        notes,
    };
    let text = report.render();
    print!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    eprintln!("stopping targets and the test bed ...");
    drop(started);
    drop(work);
    drop(bed);
    Ok(())
}

/// The latency of each request on every target; also returns notes on anything unusual.
fn measure_latency(
    started: &[Target],
    requests: usize,
    rounds: usize,
    warmup: usize,
) -> Result<(Vec<measure::LatencyResult>, Vec<String>)> {
    let mut lanes: Vec<Lane> = started
        .iter()
        .map(|t| Lane::new(t.kind.name(), t.endpoint.clone(), t.pids()))
        .collect();
    let mut results = vec![];
    for path in LATENCY_PATHS {
        eprintln!("measuring GET {path} ({requests} requests per target) ...");
        results.push(measure::latency(
            &mut lanes, path, requests, rounds, warmup,
        )?);
    }
    let notes = lanes
        .iter()
        .filter(|lane| lane.conn.reconnects > 0)
        .map(|lane| {
            format!(
                "`{}` closed its keep-alive connection {} times; the bench reconnected.",
                lane.name, lane.conn.reconnects
            )
        })
        .collect();
    Ok((results, notes))
}

/// The large stream from every target, with the CPU time it cost.
fn measure_streams(
    started: &[Target],
    host: &Host,
    path: &str,
    runs: usize,
    mib: u64,
) -> Result<Vec<measure::StreamResult>> {
    measure::streams(
        &subjects(started),
        host.engine_pid()?,
        path,
        runs,
        mib << 20,
    )
}

/// What the stream and throughput measures need of each started target.
fn subjects(started: &[Target]) -> Vec<Subject> {
    started
        .iter()
        .map(|t| Subject {
            name: t.kind.name(),
            endpoint: t.endpoint.clone(),
            pids: t.pids(),
        })
        .collect()
}

/// A target that was not measured, and why.
type NotMeasured = (Kind, String);

/// Starts every target that is built. `direct` must work; the others are reported as not
/// measured, with the reason, when they are missing or fail to start.
/// Starts `selected` (all when empty) and `direct`.
fn start_targets(
    launcher: &Launcher,
    selected: &[Kind],
) -> Result<(Vec<Target>, Vec<NotMeasured>)> {
    let mut started = vec![];
    let mut not_measured = vec![];
    for kind in Kind::ALL {
        if !(selected.is_empty() || kind == Kind::Direct || selected.contains(&kind)) {
            not_measured.push((kind, "not selected by --targets".to_owned()));
            continue;
        }
        if let Some(why) = launcher.missing(kind) {
            eprintln!("skipping {}: {why}", kind.name());
            not_measured.push((kind, why));
            continue;
        }
        eprintln!("starting {} ...", kind.name());
        match launcher.start(kind) {
            Ok(target) => started.push(target),
            Err(e) if kind == Kind::Direct => return Err(e),
            Err(e) => {
                eprintln!("could not start {}: {e:#}", kind.name());
                not_measured.push((
                    kind,
                    format!("failed to start: {}", first_line(&format!("{e:#}"))),
                ));
            }
        }
    }
    Ok((started, not_measured))
}

fn ensure_root() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        bail!("run as root: the test bed starts a dockerd in a network namespace");
    }
    Ok(())
}

/// `docker create busybox` `n` times: the list that `containers/json?all=1` returns.
fn create_containers(host: &Host, n: usize) -> Result<()> {
    eprintln!("creating {n} containers ...");
    for _ in 0..n {
        docker(
            host,
            &["create", "busybox", "true"],
            testbed::DOCKER_TIMEOUT,
        )?;
    }
    Ok(())
}

/// A stopped container whose `/big` holds `mib` MiB of zeros; returns its id.
fn create_big_container(host: &Host, mib: u64) -> Result<String> {
    eprintln!("writing a {mib} MiB file in a container ...");
    let count = format!("count={mib}");
    let id = docker(
        host,
        &[
            "create",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/big",
            "bs=1M",
            &count,
        ],
        testbed::DOCKER_TIMEOUT,
    )?;
    docker(host, &["start", "--attach", &id], FILL_TIMEOUT)?;
    Ok(id)
}

/// A container that wrote [`LOG_LINES`] lines to its standard output, and exited.
fn create_logs_container(host: &Host) -> Result<String> {
    eprintln!("writing {LOG_LINES} log lines in a container ...");
    let script = format!(
        "i=0; while [ $i -lt {LOG_LINES} ]; do echo \"line $i {}\"; i=$((i+1)); done",
        "a".repeat(80)
    );
    let id = docker(
        host,
        &["create", "busybox", "sh", "-c", &script],
        testbed::DOCKER_TIMEOUT,
    )?;
    docker(host, &["start", "--attach", &id], FILL_TIMEOUT)?;
    Ok(id)
}

/// `docker -H HOST args...` with a deadline; fails unless it succeeds; returns trimmed stdout.
fn docker(host: &Host, args: &[&str], timeout: Duration) -> Result<String> {
    let out = testbed::cmd::run_ok(
        &mut testbed::docker_command(&host.docker_url(), args),
        timeout,
    )?;
    Ok(out.trim().to_string())
}

/// `Docker Engine 20.10.24 (API 1.41), storage driver overlay2, ...`, from the engine itself.
fn engine_description(engine: &Endpoint) -> Result<String> {
    let mut conn = Conn::new(engine.clone());
    let json = |conn: &mut Conn, path: &str| -> Result<serde_json::Value> {
        let (status, body) = conn.get(path)?;
        if status != 200 {
            bail!("the engine answered GET {path} with {status}");
        }
        serde_json::from_slice(&body).with_context(|| format!("parsing the engine's {path}"))
    };
    let version = json(&mut conn, "/v1.41/version")?;
    let info = json(&mut conn, "/v1.41/info")?;
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("?").to_string();
    Ok(format!(
        "Docker Engine {} (API {}), storage driver {}, private test bed host in its own network namespace",
        field(&version, "Version"),
        field(&version, "ApiVersion"),
        field(&info, "Driver")
    ))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
