//! CPU time from `/proc`: of one process, and of the whole machine (the scale and chain
//! benchmarks report both around what they time).

use std::time::Duration;

use anyhow::{Context, Result};

/// User plus system CPU time so far of a process (all its threads), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    /// USER_HZ: 100 on every Linux platform this runs on.
    const TICK: Duration = Duration::from_millis(10);
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0u64;
    for field in [11, 12] {
        // utime and stime: fields 14 and 15 of the whole line.
        ticks += fields
            .get(field)
            .with_context(|| format!("{path} is too short"))?
            .parse::<u64>()?;
    }
    Ok(TICK * u32::try_from(ticks)?)
}

/// Time the threads of the processes `pids` have spent running so far, to the nanosecond,
/// from `/proc/PID/task/*/schedstat` (threads that ended are not counted).
pub fn run_time(pids: &[u32]) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for pid in pids {
        let dir = format!("/proc/{pid}/task");
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = task?.path().join("schedstat");
            // A thread may end between the listing and the read.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let ns: u64 = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{} is not a schedstat line", path.display()))?;
            total += Duration::from_nanos(ns);
        }
    }
    Ok(total)
}

/// CPU time the whole machine spent busy so far (every CPU, every process, the kernel), from
/// `/proc/stat`: user, nice, system, irq, softirq and steal.
pub fn machine_busy() -> Result<Duration> {
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Ok(TICK * u32::try_from(busy)?)
}
