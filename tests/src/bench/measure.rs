//! The three measurements: sequential request latency on a kept-alive connection, interleaved
//! across targets in rounds; requests per second with several connections at once; and the
//! throughput of one large response stream.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::http::{Conn, Endpoint};
use super::procstat::run_time;
use super::stats::{median, Summary};

/// How long one large stream may take in all.
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// One target's connection and its latency samples for the request being measured, and the
/// CPU its processes spent while they were taken.
pub struct Lane {
    pub name: &'static str,
    pub conn: Conn,
    pids: Vec<u32>,
    samples: Vec<Duration>,
    cpu: Duration,
}

impl Lane {
    pub fn new(name: &'static str, endpoint: Endpoint, pids: Vec<u32>) -> Lane {
        Lane {
            name,
            conn: Conn::new(endpoint),
            pids,
            samples: Vec::new(),
            cpu: Duration::ZERO,
        }
    }
}

/// One request's latency on every target.
pub struct LatencyResult {
    pub path: String,
    /// Per target, in the order of the lanes: its name, summary, body size of the last
    /// response (a sanity check that every target answered the same thing), and the CPU its
    /// processes spent per request (none for `direct`, which has none of its own).
    pub rows: Vec<(&'static str, Summary, usize, Option<Duration>)>,
}

/// Measures `GET path` on every lane: `warmup` unrecorded requests each, then `rounds` rounds
/// in which each lane in turn sends `requests / rounds` sequential requests. The order of the
/// lanes rotates from round to round, so each target goes first (and last) in turn.
pub fn latency(
    lanes: &mut [Lane],
    path: &str,
    requests: usize,
    rounds: usize,
    warmup: usize,
) -> Result<LatencyResult> {
    let mut body_sizes = vec![0; lanes.len()];
    for lane in lanes.iter_mut() {
        lane.samples.clear();
        lane.samples.reserve(requests);
        lane.cpu = Duration::ZERO;
        for _ in 0..warmup {
            timed_get(&mut lane.conn, path).with_context(|| format!("warming up {}", lane.name))?;
        }
    }
    let per_round = requests.div_ceil(rounds);
    for round in 0..rounds {
        for i in 0..lanes.len() {
            let index = (round + i) % lanes.len();
            let lane = &mut lanes[index];
            let todo = per_round.min(requests - lane.samples.len());
            let cpu_before = run_time(&lane.pids)?;
            for _ in 0..todo {
                let (took, size) = timed_get(&mut lane.conn, path)
                    .with_context(|| format!("measuring {}", lane.name))?;
                lane.samples.push(took);
                body_sizes[index] = size;
            }
            lane.cpu += run_time(&lane.pids)?.saturating_sub(cpu_before);
        }
    }
    let rows = lanes
        .iter()
        .zip(body_sizes)
        .map(|(lane, size)| {
            (
                lane.name,
                Summary::of(&lane.samples).expect("requests > 0"),
                size,
                (!lane.pids.is_empty()).then(|| lane.cpu / lane.samples.len() as u32),
            )
        })
        .collect();
    Ok(LatencyResult {
        path: path.to_string(),
        rows,
    })
}

/// One `GET`, timed from before the request is written until the last byte of the response is
/// read. Anything but a 200 is an error.
fn timed_get(conn: &mut Conn, path: &str) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let (status, body) = conn.get(path)?;
    let took = start.elapsed();
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok((took, body.len()))
}

/// One request's rate on every target.
pub struct ThroughputResult {
    pub path: String,
    /// Connections sending at once.
    pub connections: usize,
    pub rows: Vec<ThroughputRow>,
}

/// One target's timed windows.
pub struct ThroughputRow {
    pub name: &'static str,
    /// Requests per second in each window, in the order they ran.
    pub runs: Vec<f64>,
    /// CPU time of the target's processes per request, over all windows (none for `direct`).
    pub cpu: Option<Duration>,
}

impl ThroughputRow {
    pub fn median(&self) -> f64 {
        median(&self.runs).unwrap_or(0.0)
    }
}

/// Measures how many `GET path` each target answers per second when `connections` clients
/// send at once, each its next request as soon as its last answer is in (as `wrk` does):
/// `runs` windows of `window` per target, the order of the targets rotating from run to run.
/// Each window opens its connections and sends one request on each before the clock starts.
pub fn throughput(
    targets: &[Subject],
    path: &str,
    connections: usize,
    runs: usize,
    window: Duration,
) -> Result<ThroughputResult> {
    let mut rows: Vec<ThroughputRow> = targets
        .iter()
        .map(|t| ThroughputRow {
            name: t.name,
            runs: vec![],
            cpu: None,
        })
        .collect();
    let mut totals = vec![(0u64, Duration::ZERO); targets.len()];
    for run in 0..runs {
        for i in 0..targets.len() {
            let index = (run + i) % targets.len();
            let target = &targets[index];
            let mut conns: Vec<Conn> = (0..connections)
                .map(|_| Conn::new(target.endpoint.clone()))
                .collect();
            for conn in &mut conns {
                timed_get(conn, path).with_context(|| format!("connecting to {}", target.name))?;
            }
            let cpu_before = run_time(&target.pids)?;
            let start = Instant::now();
            let deadline = start + window;
            let counts = std::thread::scope(|scope| {
                let clients: Vec<_> = conns
                    .iter_mut()
                    .map(|conn| {
                        scope.spawn(move || {
                            let mut n = 0u64;
                            while Instant::now() < deadline {
                                timed_get(conn, path)?;
                                n += 1;
                            }
                            Ok::<_, anyhow::Error>(n)
                        })
                    })
                    .collect();
                clients
                    .into_iter()
                    .map(|c| c.join().expect("a client thread does not panic"))
                    .collect::<Result<Vec<u64>>>()
            })
            .with_context(|| format!("measuring {}", target.name))?;
            let took = start.elapsed();
            let requests: u64 = counts.iter().sum();
            let rate = requests as f64 / took.as_secs_f64();
            eprintln!("  run {} on {}: {rate:.0} requests/s", run + 1, target.name);
            rows[index].runs.push(rate);
            totals[index].0 += requests;
            totals[index].1 += run_time(&target.pids)?.saturating_sub(cpu_before);
        }
    }
    for ((row, target), (requests, cpu)) in rows.iter_mut().zip(targets).zip(totals) {
        if !target.pids.is_empty() && requests > 0 {
            row.cpu = Some(cpu / u32::try_from(requests)?);
        }
    }
    Ok(ThroughputResult {
        path: path.to_string(),
        connections,
        rows,
    })
}

/// What is measured: a target's endpoint, and the processes whose CPU time it costs.
pub struct Subject {
    pub name: &'static str,
    pub endpoint: Endpoint,
    /// The target's own processes (none for `direct`).
    pub pids: Vec<u32>,
}

/// One target's stream runs.
pub struct StreamResult {
    pub name: &'static str,
    /// MiB/s of each run, in the order they ran.
    pub runs: Vec<f64>,
    /// CPU seconds per GiB streamed, of the target's processes (`None` for `direct`).
    pub hop_cpu: Vec<Option<f64>>,
    /// CPU seconds per GiB streamed, of the engine (dockerd).
    pub engine_cpu: Vec<f64>,
}

impl StreamResult {
    pub fn median(&self) -> f64 {
        median(&self.runs).unwrap_or(0.0)
    }

    pub fn median_hop_cpu(&self) -> Option<f64> {
        let values: Vec<f64> = self.hop_cpu.iter().flatten().copied().collect();
        median(&values)
    }

    pub fn median_engine_cpu(&self) -> Option<f64> {
        median(&self.engine_cpu)
    }
}

/// Reads `GET path` to the end `runs` times on every target (target order rotating per run,
/// a new connection each time), checking that at least `min_bytes` arrived, and accounting
/// the CPU time of the target's processes and of the engine (`engine_pid`) during each run.
pub fn streams(
    targets: &[Subject],
    engine_pid: u32,
    path: &str,
    runs: usize,
    min_bytes: u64,
) -> Result<Vec<StreamResult>> {
    let mut results: Vec<StreamResult> = targets
        .iter()
        .map(|t| StreamResult {
            name: t.name,
            runs: vec![],
            hop_cpu: vec![],
            engine_cpu: vec![],
        })
        .collect();
    for run in 0..runs {
        for i in 0..targets.len() {
            let index = (run + i) % targets.len();
            let target = &targets[index];
            let (hop0, engine0) = (cpu_time(&target.pids)?, cpu_time(&[engine_pid])?);
            let (bytes, took) = stream_once(&target.endpoint, path, min_bytes)
                .with_context(|| format!("streaming from {}", target.name))?;
            let (hop, engine) = (
                cpu_time(&target.pids)? - hop0,
                cpu_time(&[engine_pid])? - engine0,
            );
            let gib = bytes as f64 / f64::from(1u32 << 30);
            let mib_s = bytes as f64 / f64::from(1u32 << 20) / took.as_secs_f64();
            eprintln!(
                "  stream run {} on {}: {mib_s:.0} MiB/s",
                run + 1,
                target.name
            );
            let result = &mut results[index];
            result.runs.push(mib_s);
            result
                .hop_cpu
                .push((!target.pids.is_empty()).then(|| hop.as_secs_f64() / gib));
            result.engine_cpu.push(engine.as_secs_f64() / gib);
        }
    }
    Ok(results)
}

/// User plus system CPU time so far of processes (all their threads) and of their children that
/// have exited (dockerd runs `tar` in a re-exec'd child), from `/proc/PID/stat`.
fn cpu_time(pids: &[u32]) -> Result<Duration> {
    /// The unit of those fields: USER_HZ, 100 on every Linux platform this runs on.
    const TICK: Duration = Duration::from_millis(10);
    let mut ticks = 0u64;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) may contain spaces: count fields after its closing ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for field in [11, 12, 13, 14] {
            // utime, stime, cutime and cstime: fields 14 to 17 of the whole line.
            let value = fields
                .get(field)
                .with_context(|| format!("{path} is too short"))?;
            ticks += value
                .parse::<u64>()
                .with_context(|| format!("field {} of {path}", field + 3))?;
        }
    }
    Ok(TICK * u32::try_from(ticks)?)
}

/// One stream on a fresh connection, timed from the request to the last byte; returns the
/// bytes read and the time taken.
fn stream_once(endpoint: &Endpoint, path: &str, min_bytes: u64) -> Result<(u64, Duration)> {
    let mut conn = Conn::new(endpoint.clone());
    let start = Instant::now();
    let mut unchecked = 0usize;
    let (status, bytes) = conn.get_with(path, |piece| {
        // The clock is read about every 64 MiB: cheap next to the copy.
        unchecked += piece.len();
        if unchecked >= 64 << 20 {
            unchecked = 0;
            if start.elapsed() > STREAM_TIMEOUT {
                bail!("the stream took more than {STREAM_TIMEOUT:?}");
            }
        }
        Ok(())
    })?;
    let took = start.elapsed();
    if status != 200 {
        bail!("GET {path} answered {status}");
    }
    if bytes < min_bytes {
        bail!("the stream ended after {bytes} bytes, expected at least {min_bytes}");
    }
    Ok((bytes, took))
}
