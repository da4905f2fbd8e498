//! `busbar-chainbench`: how long after `busbarctl chain apply` commits a chain document to etcd
//! the new chain is live on every one of 1,000 agents (issue #6: at most 100 ms p99 after the
//! etcd commit).
//!
//! ```text
//! cargo build --release -p busbar-tests --bin busbar-chainbench
//! target/release/busbar-chainbench [--agents 1000] [--rounds 20] [--out FILE]
//! ```
//!
//! No root and no Docker engine are needed; `etcd` must be installed (Debian's `etcd-server`).
//!
//! # What is real, what is simulated
//!
//! - **Real**: etcd (a single-member etcd started for the run, with its data in a temporary
//!   directory, on free loopback ports; or `--etcd URL`), and each agent's chain follower: the
//!   very code a `busbar-agent --etcd` runs (`busbar_agent::cluster::etcd_chains::EtcdChains::start`,
//!   then `run`), with its own node name (`sim0` ... `sim999`), its own labels, its own
//!   `--state-dir` (the last-known-good cache is written on every apply, as on a real node),
//!   its own etcd client and so **its own connection to etcd**, its own watch, its own status
//!   writes to `<prefix>/status/<node>`. A chain document is written the way `busbarctl chain
//!   apply` writes it: read the scope's mod revision, then one transaction that puts the
//!   document only if the revision is still that one.
//! - **Simulated**: the agents are TEST DOUBLES of whole agents: 1,000 followers in one process
//!   (one tokio runtime, a worker per CPU, at most `--blocking-threads` threads for their cache
//!   writes) with no engine, no gRPC server, no registration and no logging (their `tracing`
//!   events go nowhere). On a real cluster each follower runs on its own machine, with its own
//!   CPU and disk; here all of them, and etcd, share this machine's, so the time for the last
//!   of 1,000 to apply includes waiting for the CPU the 999 others (and etcd) use. The
//!   per-agent CPU and a floor (below) are reported beside the latencies so that the parts
//!   can be told apart.
//!
//! One connection per agent, because that is what etcd serves in a real cluster: 1,000 watch
//! streams on 1,000 HTTP/2 connections, 1,000 events to encode and send per change, 1,000
//! status writes arriving on 1,000 connections. Sharing a few connections would cost this
//! process less (fewer sockets, fewer HTTP/2 connection tasks) but measure a fan-out no
//! cluster has. It is feasible: about 1,000 descriptors on each side.
//!
//! # Method
//!
//! 1. etcd starts. **The floor**: N bare watchers (one etcd client and connection each, on a
//!    prefix of their own) watch `<prefix>/chains/` and only timestamp what arrives; the
//!    rounds below are run against them; they are closed. This is what etcd's fan-out to N
//!    connections, and receiving it, cost on this machine, with no busbar code at all.
//! 2. A first `global` document is written; the N followers start (at most
//!    `--start-concurrency` at a time, as a rolling restart would), each with labels
//!    `half=a` (even indices) or `half=b` (odd ones), each with its state directory under
//!    `--state-root`. Each follower's chain channel gets an observer task that timestamps
//!    every new chain it publishes.
//! 3. Two experiments, one after the other: `global` (every agent applies) and `label:half=a`
//!    (half of them apply; the other half receive the watch event and ignore it). Each has
//!    `--warmup` rounds (not reported), then `--rounds` rounds. A round writes a new document
//!    to the scope (a new adapter name, so every applying agent's merged chain changes), timed
//!    from just before the transaction (`t0`) to its reply (`t1`: the commit is acknowledged),
//!    then waits until every applying agent has published a chain with the new adapter and
//!    every applying agent's status in etcd (watched by this program) names the new revision,
//!    at most `--round-timeout` seconds. A chain published by an agent that should not apply
//!    is counted as an error. The writes and the timing run on this program's main thread,
//!    in a runtime of their own, so that a busy agent runtime does not delay the timestamps.
//! 4. Per round: the time from `t0` to the last applying agent's publish ("all applied"), each
//!    agent's time from `t0` ("per agent"), and from `t0` to the last status in etcd. `t0`, not
//!    the reply: etcd notifies its watchers when it applies the write, before it answers, and
//!    under load the reply reaches this program after many agents have applied, so measuring
//!    from `t0` (the commit's own time included) is the conservative choice; the transaction's
//!    round trip is reported beside it. CPU time (`/proc/PID/stat`) of this process (the
//!    followers) and of etcd around each round, and the machine's busy time (`/proc/stat`).
//!    Rounds are `--pause-ms` apart so that one round's status writes do not run into the
//!    next.
//!
//! Percentiles are nearest-rank (`bench/stats.rs`): with 20 rounds the p99 of "all applied"
//! is the slowest round.

#[path = "../bench/host.rs"]
mod host;
// Shared with busbar-bench, which uses other parts of it.
#[allow(dead_code)]
#[path = "../bench/procstat.rs"]
mod procstat;
#[allow(dead_code)]
#[path = "../bench/stats.rs"]
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use busbar_agent::chain_source::LiveChains;
use busbar_agent::cluster::etcd_chains::{EtcdChains, EtcdChainsConfig};
use busbar_chains::scoped::{ChainStatus, Scope};
use busbar_etcd::client::{Client, Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use busbar_etcd::keys::{chain_key, chains_prefix, status_prefix};
use busbar_etcd::EtcdConnection;
use clap::Parser;
use host::{busbar_version, command_line, machine, read_trimmed, run_text};
use procstat::{cpu_time, machine_busy};
use stats::percentile;
use testbed::supervisor::etcd::Etcd;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// The goal: every agent runs the new chain within this long after the etcd commit, p99.
const GOAL: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "busbar-chainbench",
    about = "time from a chain apply to the chain being live on N SIMULATED agents"
)]
struct Args {
    /// Number of simulated agents (etcd chain followers).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Timed rounds per experiment.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Untimed rounds before them.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// How long a round may take, in seconds, before its missing agents are counted.
    #[arg(long, default_value_t = 30)]
    round_timeout: u64,
    /// How many agents start at once.
    #[arg(long, default_value_t = 64)]
    start_concurrency: usize,
    /// Threads of the agents' runtime for blocking work (the followers write their caches
    /// there): a real agent has one follower, so one cache write at a time.
    #[arg(long, default_value_t = 2)]
    blocking_threads: usize,
    /// Where the agents' state directories (their chain caches) go; default: the run's
    /// temporary directory (under $TMPDIR, else /tmp).
    #[arg(long)]
    state_root: Option<PathBuf>,
    /// Use this etcd (http://HOST:PORT) instead of starting one.
    #[arg(long)]
    etcd: Option<String>,
    /// Also write the markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbar-chainbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.agents < 2 || args.rounds == 0 {
        bail!("--agents must be at least 2 and --rounds at least 1");
    }
    let work = WorkDir::new()?;
    let etcd = match &args.etcd {
        Some(_) => None,
        None => {
            eprintln!("starting etcd in {}", work.0.display());
            Some(Etcd::start(&work.0, &[]).context("starting etcd (install etcd-server)")?)
        }
    };
    let url = args
        .etcd
        .clone()
        .or_else(|| etcd.as_ref().map(Etcd::url))
        .expect("an etcd either way");
    let etcd_pid = etcd.as_ref().map(Etcd::pid);
    let prefix = format!("/{}", testbed::unique_name("chainbench"));
    // The agents run on a runtime of their own (one worker per CPU, as a real agent's); the
    // writes and the timing on this thread's, so that a round's reference instants are not
    // taken late because the agents keep the workers busy.
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(args.blocking_threads)
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    let timing_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    timing_rt.block_on(async {
        let client = etcd_client(&url).await?;
        apply(&client, &prefix, "global", &doc("init"))
            .await
            .map(|_| ())
    })?;
    // The floor first: as many bare watchers as agents, alone.
    let bare = format!("{prefix}-bare");
    let stop_watchers = CancellationToken::new();
    let sightings = agents_rt.block_on(start_watchers(args, &url, &bare, &stop_watchers))?;
    let floor = timing_rt.block_on(bare_rounds(args, &url, &bare, etcd_pid, sightings));
    stop_watchers.cancel();
    let floor = floor?;
    let shutdown = CancellationToken::new();
    let state = StateRoot::new(args.state_root.as_deref().unwrap_or(&work.0))?;
    let agents = agents_rt.block_on(start_agents(args, &url, &prefix, &state.0, &shutdown))?;
    let result = timing_rt
        .block_on(rounds(args, &url, &prefix, etcd_pid, agents, &shutdown))
        .map(|mut r| {
            r.experiments.insert(0, floor);
            let fs = run_text(Command::new("df").arg("--output=fstype").arg(&state.0))
                .and_then(|out| out.lines().last().map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            r.state = format!("{} ({fs})", state.0.parent().unwrap_or(&state.0).display());
            r
        });
    shutdown.cancel();
    agents_rt.shutdown_timeout(Duration::from_secs(10));
    let result = result?;
    let report = render(args, &result);
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    drop(etcd);
    Ok(())
}

impl ExperimentResult {
    fn new(name: &'static str, scope: &'static str, applying: usize) -> ExperimentResult {
        ExperimentResult {
            name,
            scope,
            applying,
            all_applied: vec![],
            per_agent: vec![],
            all_status: vec![],
            txn: vec![],
            early: 0,
            missing: 0,
            unexpected: 0,
            cpu_self: vec![],
            cpu_etcd: vec![],
            others: vec![],
        }
    }
}

/// CPU time of this process, of etcd and of the whole machine over a round.
struct Meter {
    etcd_pid: Option<u32>,
    own: Option<Duration>,
    etcd: Option<Duration>,
    busy: Option<Duration>,
    wall: Instant,
    /// Set by `stop`.
    took: Duration,
}

impl Meter {
    fn start(etcd_pid: Option<u32>) -> Meter {
        let etcd = etcd_pid.and_then(|p| cpu_time(p).ok());
        let (own, busy) = (cpu_time(std::process::id()).ok(), machine_busy().ok());
        Meter {
            etcd_pid,
            own,
            etcd,
            busy,
            wall: Instant::now(),
            took: Duration::ZERO,
        }
    }

    /// The differences since `start`, in the same shape.
    fn stop(self) -> Meter {
        let now = Meter::start(self.etcd_pid);
        let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Meter {
            etcd_pid: self.etcd_pid,
            own: diff(self.own, now.own),
            etcd: diff(self.etcd, now.etcd),
            busy: diff(self.busy, now.busy),
            wall: self.wall,
            took: self.wall.elapsed(),
        }
    }

    /// Adds a stopped meter's figures to `r`.
    fn record(&self, r: &mut ExperimentResult) {
        r.cpu_self.extend(self.own);
        r.cpu_etcd.extend(self.etcd);
        if let (Some(busy), Some(own)) = (self.busy, self.own) {
            let others = busy.saturating_sub(own + self.etcd.unwrap_or_default());
            r.others
                .push(others.as_secs_f64() / self.took.as_secs_f64());
        }
    }
}

/// One experiment: which scope is written and which agents must apply it.
struct Experiment {
    name: &'static str,
    scope: &'static str,
    applies: fn(usize) -> bool,
}

const EXPERIMENTS: [Experiment; 2] = [
    Experiment {
        name: "global",
        scope: "global",
        applies: |_| true,
    },
    Experiment {
        name: "label",
        scope: "label:half=a",
        applies: |i| i % 2 == 0,
    },
];

/// What one experiment gave.
struct ExperimentResult {
    name: &'static str,
    scope: &'static str,
    applying: usize,
    /// Per round: commit acknowledged -> last applying agent published.
    all_applied: Vec<Duration>,
    /// Per agent and round: commit acknowledged -> that agent published.
    per_agent: Vec<Duration>,
    /// Per round: commit acknowledged -> the last applying agent's status in etcd.
    all_status: Vec<Duration>,
    /// Per round: the transaction's round trip.
    txn: Vec<Duration>,
    /// Publishes seen before the transaction's reply arrived.
    early: usize,
    /// Agents that had not applied when a round timed out (summed over rounds).
    missing: usize,
    /// Publishes by agents outside the scope.
    unexpected: usize,
    /// CPU time per round of this process (the followers) and of etcd.
    cpu_self: Vec<Duration>,
    cpu_etcd: Vec<Duration>,
    /// Per round: CPUs used by every other process on the machine (the noise).
    others: Vec<f64>,
}

struct RunResult {
    url: String,
    started_etcd: bool,
    agents: usize,
    /// From the first follower's start to the last one's.
    start_time: Duration,
    /// Agents that started from etcd (the others fell back: etcd too slow at start).
    started_from_etcd: usize,
    experiments: Vec<ExperimentResult>,
    self_rss_kib: u64,
    self_fds: usize,
    etcd_rss_kib: Option<u64>,
    etcd_fds: Option<usize>,
    etcd_version: String,
    /// Where the agents' state directories were, and the file system's type.
    state: String,
}

/// A chain an agent published, and when its observer saw it.
struct Seen {
    agent: usize,
    live: Arc<LiveChains>,
    at: Instant,
}

/// A status an agent wrote to etcd, and when this program's watch delivered it.
struct StatusSeen {
    agent: usize,
    revision: i64,
    at: Instant,
}

/// The agents as started: their chain publishes, and how the start went.
struct Agents {
    seen: mpsc::Receiver<Seen>,
    start_time: Duration,
    started_from_etcd: usize,
}

/// Starts the followers, each with an observer of its chain channel, on the current runtime;
/// returns once every one has started. They run until `shutdown`.
async fn start_agents(
    args: &Args,
    url: &str,
    prefix: &str,
    work: &Path,
    shutdown: &CancellationToken,
) -> Result<Agents> {
    let n = args.agents;
    let (seen_tx, seen) = mpsc::channel::<Seen>(4 * n);
    let gate = Arc::new(Semaphore::new(args.start_concurrency.max(1)));
    let mut starts = tokio::task::JoinSet::new();
    let t_start = Instant::now();
    eprintln!(
        "starting {n} simulated agents ({} at a time)",
        args.start_concurrency
    );
    for i in 0..n {
        let cfg = EtcdChainsConfig {
            etcd: EtcdConnection::plaintext(vec![url.to_owned()]),
            prefix: prefix.to_owned(),
            node: format!("sim{i}"),
            labels: [(
                "half".to_owned(),
                if i % 2 == 0 { "a" } else { "b" }.to_owned(),
            )]
            .into(),
            state_dir: work.join(format!("sim{i}")),
        };
        let (gate, shutdown, seen_tx) = (gate.clone(), shutdown.clone(), seen_tx.clone());
        starts.spawn(async move {
            let permit = gate
                .acquire_owned()
                .await
                .expect("the gate is never closed");
            let (initial, follower) = EtcdChains::start(cfg).await;
            drop(permit);
            let from_etcd = initial.origin.starts_with("etcd");
            let (tx, rx) = watch::channel(initial);
            tokio::spawn(follower.run(tx, shutdown));
            tokio::spawn(observe(i, rx, seen_tx));
            from_etcd
        });
    }
    let mut started_from_etcd = 0;
    while let Some(r) = starts.join_next().await {
        started_from_etcd += usize::from(r.context("an agent's start panicked")?);
    }
    let start_time = t_start.elapsed();
    eprintln!("{n} agents started in {start_time:.1?} ({started_from_etcd} from etcd)");
    Ok(Agents {
        seen,
        start_time,
        started_from_etcd,
    })
}

/// A watch response one of the bare watchers got: watcher, header revision, when.
type Sighting = (usize, i64, Instant);

/// The floor under any follower: as many bare etcd watchers as agents, each with its own
/// connection, watching `<prefix>/chains/` and only timestamping what arrives.
async fn start_watchers(
    args: &Args,
    url: &str,
    prefix: &str,
    stop: &CancellationToken,
) -> Result<mpsc::Receiver<Sighting>> {
    let n = args.agents;
    let (tx, rx) = mpsc::channel::<Sighting>(4 * n);
    let dir = chains_prefix(prefix);
    let gate = Arc::new(Semaphore::new(args.start_concurrency.max(1)));
    let mut opened = tokio::task::JoinSet::new();
    eprintln!("opening {n} bare watchers");
    for i in 0..n {
        let (tx, stop, url, dir, gate) = (
            tx.clone(),
            stop.clone(),
            url.to_owned(),
            dir.clone(),
            gate.clone(),
        );
        opened.spawn(async move {
            let permit = gate
                .acquire_owned()
                .await
                .expect("the gate is never closed");
            let client = etcd_client(&url).await?;
            let (_, mut stream) = client
                .watch(dir.as_str(), Some(WatchOptions::new().with_prefix()))
                .await?;
            drop(permit);
            tokio::spawn(async move {
                let _client = client;
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = stop.cancelled() => return,
                    };
                    let Ok(Some(msg)) = msg else { return };
                    if msg.events().is_empty() {
                        continue;
                    }
                    let at = Instant::now();
                    let rev = msg.header().map_or(0, |h| h.revision());
                    if tx.send((i, rev, at)).await.is_err() {
                        return;
                    }
                }
            });
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = opened.join_next().await {
        r.context("a watcher's start panicked")??;
    }
    Ok(rx)
}

/// The rounds of the floor: the same documents, to the bare watchers.
async fn bare_rounds(
    args: &Args,
    url: &str,
    prefix: &str,
    etcd_pid: Option<u32>,
    mut seen: mpsc::Receiver<Sighting>,
) -> Result<ExperimentResult> {
    let n = args.agents;
    let client = etcd_client(url).await?;
    let mut r = ExperimentResult::new("etcd fan-out alone", "(bare watchers)", n);
    for round in 0..args.warmup + args.rounds {
        let timed = round >= args.warmup;
        let meter = Meter::start(etcd_pid);
        let (rev, t0, t1) = apply(&client, prefix, "global", &doc(&format!("bare{round}"))).await?;
        let deadline = t1 + Duration::from_secs(args.round_timeout);
        let mut got: Vec<Option<Instant>> = vec![None; n];
        let mut count = 0;
        while count < n {
            tokio::select! {
                Some((i, at_rev, at)) = seen.recv() => {
                    if at_rev >= rev && got[i].is_none() {
                        got[i] = Some(at);
                        count += 1;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        let meter = meter.stop();
        let last = got
            .iter()
            .flatten()
            .max()
            .map(|at| at.saturating_duration_since(t0));
        eprintln!(
            "bare round {round}: revision {rev}, txn {:.1?}, {count}/{n} received, last after {:.1?}",
            t1 - t0,
            last.unwrap_or_default()
        );
        if timed {
            r.txn.push(t1 - t0);
            r.all_applied
                .push(last.unwrap_or(Duration::from_secs(args.round_timeout)));
            for at in got.iter().flatten() {
                r.early += usize::from(*at < t1);
                r.per_agent.push(at.saturating_duration_since(t0));
            }
            r.missing += n - count;
            meter.record(&mut r);
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok(r)
}

/// The rounds, written and timed from this program's own thread and runtime (see `run`).
async fn rounds(
    args: &Args,
    url: &str,
    prefix: &str,
    etcd_pid: Option<u32>,
    agents: Agents,
    shutdown: &CancellationToken,
) -> Result<RunResult> {
    let n = args.agents;
    let prefix = prefix.to_owned();
    let client = etcd_client(url).await?;
    let Agents {
        seen: mut seen_rx,
        start_time,
        started_from_etcd,
    } = agents;
    let (status_tx, mut status_rx) = mpsc::channel::<StatusSeen>(4 * n);
    tokio::spawn(watch_statuses(
        client.clone(),
        prefix.clone(),
        status_tx,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await; // the status watch is open

    let mut experiments = vec![];
    for e in &EXPERIMENTS {
        let applying = (0..n).filter(|&i| (e.applies)(i)).count();
        let mut r = ExperimentResult::new(e.name, e.scope, applying);
        for round in 0..args.warmup + args.rounds {
            let timed = round >= args.warmup;
            let name = if timed {
                format!("{}_r{}", e.name, round - args.warmup + 1)
            } else {
                format!("{}_w{round}", e.name)
            };
            let meter = Meter::start(etcd_pid);
            let (rev, t0, t1) = apply(&client, &prefix, e.scope, &doc(&name)).await?;
            let deadline = t1 + Duration::from_secs(args.round_timeout);
            let mut applied: Vec<Option<Instant>> = vec![None; n];
            let mut status: Vec<Option<Instant>> = vec![None; n];
            let (mut n_applied, mut n_status, mut unexpected) = (0, 0, 0);
            while n_applied < applying || n_status < applying {
                tokio::select! {
                    Some(s) = seen_rx.recv() => {
                        if s.live.set.adapter(&name).is_none() {
                            continue;
                        }
                        if !(e.applies)(s.agent) {
                            unexpected += 1;
                        } else if applied[s.agent].is_none() {
                            applied[s.agent] = Some(s.at);
                            n_applied += 1;
                        }
                    }
                    Some(s) = status_rx.recv() => {
                        if s.revision >= rev && (e.applies)(s.agent) && status[s.agent].is_none() {
                            status[s.agent] = Some(s.at);
                            n_status += 1;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => break,
                }
            }
            let meter = meter.stop();
            let last = |v: &[Option<Instant>]| {
                v.iter()
                    .flatten()
                    .max()
                    .map(|at| at.saturating_duration_since(t0))
            };
            eprintln!(
                "{} round {name}: revision {rev}, txn {:.1?}, {n_applied}/{applying} applied, last after {:.1?}, statuses {n_status}/{applying}, last after {:.1?}",
                e.name,
                t1 - t0,
                last(&applied).unwrap_or_default(),
                last(&status).unwrap_or_default()
            );
            if timed {
                r.txn.push(t1 - t0);
                r.all_applied
                    .push(last(&applied).unwrap_or(Duration::from_secs(args.round_timeout)));
                r.all_status
                    .push(last(&status).unwrap_or(Duration::from_secs(args.round_timeout)));
                for at in applied.iter().flatten() {
                    r.early += usize::from(*at < t1);
                    r.per_agent.push(at.saturating_duration_since(t0));
                }
                r.missing += applying - n_applied;
                r.unexpected += unexpected;
                meter.record(&mut r);
            }
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
        experiments.push(r);
    }
    let snapshot = |pid: u32| {
        (
            proc_field(pid, "VmRSS:"),
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .ok(),
        )
    };
    let (self_rss, self_fds) = snapshot(std::process::id());
    let (etcd_rss, etcd_fds) = etcd_pid.map(snapshot).unwrap_or((None, None));
    let etcd_version = run_text(Command::new("etcd").arg("--version"))
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    Ok(RunResult {
        url: url.to_owned(),
        started_etcd: etcd_pid.is_some(),
        agents: n,
        start_time,
        started_from_etcd,
        experiments,
        self_rss_kib: self_rss.unwrap_or(0),
        self_fds: self_fds.unwrap_or(0),
        etcd_rss_kib: etcd_rss,
        etcd_fds,
        etcd_version,
        state: String::new(),
    })
}

/// The chain document of round `name`: one pre-hook on container creation, by an adapter
/// named after the round, so every applying agent's merged chain changes.
fn doc(name: &str) -> String {
    format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [{name}]\nadapters:\n  {name}: http://chainbench.invalid/{name}\n"
    )
}

async fn etcd_client(url: &str) -> Result<Client> {
    Client::connect([url], None)
        .await
        .with_context(|| format!("connecting to etcd at {url}"))
}

/// Writes `text` to `scope` as `busbarctl chain apply` does: reads the scope's mod revision,
/// then one transaction that puts the document only if it is still that one. Returns the
/// revision written, and the instants just before the transaction and at its reply.
async fn apply(
    client: &Client,
    prefix: &str,
    scope: &str,
    text: &str,
) -> Result<(i64, Instant, Instant)> {
    let scope: Scope = scope.parse()?;
    let key = chain_key(prefix, &scope);
    let c = client.clone();
    let current = c
        .get(key.as_str(), None)
        .await?
        .kvs()
        .first()
        .map_or(0, |kv| kv.mod_revision());
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            current,
        )])
        .and_then([TxnOp::put(key.as_str(), text, None)]);
    let t0 = Instant::now();
    let rsp = c.txn(txn).await?;
    let t1 = Instant::now();
    if !rsp.succeeded() {
        bail!("the chain document at {key} changed under this benchmark");
    }
    Ok((rsp.header().map_or(0, |h| h.revision()), t0, t1))
}

/// Timestamps every chain agent `i` publishes.
async fn observe(i: usize, mut rx: watch::Receiver<Arc<LiveChains>>, seen: mpsc::Sender<Seen>) {
    while rx.changed().await.is_ok() {
        let at = Instant::now();
        let live = rx.borrow_and_update().clone();
        if seen.send(Seen { agent: i, live, at }).await.is_err() {
            return;
        }
    }
}

/// Timestamps every agent status written to `<prefix>/status/` from now on.
async fn watch_statuses(
    client: Client,
    prefix: String,
    seen: mpsc::Sender<StatusSeen>,
    shutdown: CancellationToken,
) {
    let dir = status_prefix(&prefix);
    let c = client;
    let mut stream = match c
        .watch(dir.as_str(), Some(WatchOptions::new().with_prefix()))
        .await
    {
        Ok((_, stream)) => stream,
        Err(e) => {
            eprintln!("cannot watch {dir}: {e}; statuses are not measured");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = shutdown.cancelled() => return,
        };
        let Ok(Some(msg)) = msg else { return };
        let at = Instant::now();
        for ev in msg.events() {
            let Some(kv) = ev.kv().filter(|_| ev.event_type() == EventType::Put) else {
                continue;
            };
            let Ok(s) = serde_json::from_slice::<ChainStatus>(kv.value()) else {
                continue;
            };
            let Some(agent) = s.node.strip_prefix("sim").and_then(|i| i.parse().ok()) else {
                continue;
            };
            if seen
                .send(StatusSeen {
                    agent,
                    revision: s.revision,
                    at,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// A `kB` field of `/proc/PID/status`.
fn proc_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The agents' state directories, in a directory of their own, removed at the end.
struct StateRoot(PathBuf);

impl StateRoot {
    fn new(parent: &Path) -> Result<StateRoot> {
        let dir = parent.join(testbed::unique_name("chainbench-state"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(StateRoot(dir))
    }
}

impl Drop for StateRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary directory (etcd's data, the agents' state dirs), removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(testbed::unique_name("busbar-chainbench"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn summary(samples: &[Duration], ps: &[f64]) -> Vec<String> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    ps.iter()
        .map(|&p| {
            if sorted.is_empty() {
                "—".into()
            } else {
                ms(percentile(&sorted, p))
            }
        })
        .collect()
}

fn mean_of(samples: &[Duration]) -> Option<Duration> {
    let n = u32::try_from(samples.len()).ok().filter(|&n| n > 0)?;
    Some(samples.iter().sum::<Duration>() / n)
}

fn mean(samples: &[Duration]) -> String {
    mean_of(samples).map_or("—".into(), ms)
}

/// The range of the other processes' CPU use over the rounds: `0.02–0.31 CPUs`.
fn others(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    if v.is_empty() {
        "—".into()
    } else {
        format!("{lo:.2}–{hi:.2} CPUs")
    }
}

fn render(args: &Args, r: &RunResult) -> String {
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
    let _ = writeln!(
        out,
        "- etcd: {}, {} ({}), on the same machine",
        r.etcd_version,
        if r.started_etcd {
            "single member started for the run, data in /tmp"
        } else {
            "given with --etcd"
        },
        r.url
    );
    let _ = writeln!(out, "- busbar: {}", busbar_version());
    let _ = writeln!(out, "- Command: `{}`", command_line());
    let _ = writeln!(
        out,
        "- {} SIMULATED agents (etcd chain followers in one process, one etcd connection each), started in {:.1} s \
         ({} from etcd); {} timed rounds per experiment after {} warm-up rounds, {} ms apart",
        r.agents,
        r.start_time.as_secs_f64(),
        r.started_from_etcd,
        args.rounds,
        args.warmup,
        args.pause_ms
    );
    let _ = writeln!(
        out,
        "- Agents' state directories (chain caches) under {}; this process: {} MiB RSS, {} file descriptors; etcd: {} MiB \
         RSS, {} file descriptors",
        r.state,
        r.self_rss_kib >> 10,
        r.self_fds,
        r.etcd_rss_kib.map_or("?".into(), |k| (k >> 10).to_string()),
        r.etcd_fds.map_or("?".into(), |f| f.to_string())
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "| experiment | receivers | all applied p50 | p99 | max | per receiver p50 | p90 | p99 | max | all statuses in etcd p50 | p99 | txn p50 | CPU / round: this process | etcd | other processes |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for e in &r.experiments {
        let all = summary(&e.all_applied, &[0.5, 0.99, 1.0]);
        let per = summary(&e.per_agent, &[0.5, 0.9, 0.99, 1.0]);
        let st = summary(&e.all_status, &[0.5, 0.99]);
        let txn = summary(&e.txn, &[0.5]);
        let _ = writeln!(
            out,
            "| {} `{}` | {} | **{}** | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name,
            e.scope,
            e.applying,
            all[0],
            all[1],
            all[2],
            per[0],
            per[1],
            per[2],
            per[3],
            st[0],
            st[1],
            txn[0],
            mean(&e.cpu_self),
            mean(&e.cpu_etcd),
            others(&e.others)
        );
    }
    out.push('\n');
    for e in &r.experiments {
        let p99 = summary(&e.all_applied, &[0.99]).remove(0);
        let anomalies = format!(
            "{} arrivals before the transaction's reply reached this program, {} receivers missing at a round's timeout, \
             {} publishes by agents outside the scope",
            e.early, e.missing, e.unexpected
        );
        if e.all_status.is_empty() {
            let _ = writeln!(
                out,
                "- {}: all {} bare watchers got the event within {p99} of the commit at p99; {anomalies}.",
                e.name, e.applying
            );
            continue;
        }
        let met = {
            let mut s = e.all_applied.clone();
            s.sort_unstable();
            !s.is_empty() && percentile(&s, 0.99) <= GOAL && e.missing == 0
        };
        let per_agent_cpu = mean_of(&e.cpu_self).map_or("?".into(), |d| {
            format!("{:.0} µs", d.as_secs_f64() * 1e6 / e.applying.max(1) as f64)
        });
        let _ = writeln!(
            out,
            "- {} `{}`: all {} applied within {p99} of the commit at p99: goal (≤ {} ms) **{}**; this process's CPU per \
             applying agent and round {per_agent_cpu}; {anomalies}.",
            e.name,
            e.scope,
            e.applying,
            GOAL.as_millis(),
            if met { "met" } else { "missed" },
        );
    }
    let _ = writeln!(
        out,
        "\n\"all applied\": from just before the transaction (so the commit's own time included) to the last receiver (the last applying agent publishing the new \
         chain, or the last bare watcher receiving the event), per round. \"per receiver\": each one's time from the same instant, \
         all rounds together. \"all statuses in etcd\": to the last applying agent's `<prefix>/status/<node>` naming the \
         new revision, as this program's watch saw it. CPU: user + system time (10 ms ticks) per round, of this process \
         (the {} followers, or watchers, and their observers) and of etcd; \"other processes\": the machine's busy time \
         (`/proc/stat`) during each round minus those two, per second of the round (lowest–highest round): the noise of a \
         shared machine.",
        r.agents
    );
    out
}
