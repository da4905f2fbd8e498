//! The results as markdown: where and how they were taken, then one table per measure.

use std::fmt::Write as _;
use std::time::Duration;

use super::measure::{LatencyResult, StreamResult, ThroughputResult};
use super::targets::Kind;

/// The added p50 latency every busbar target should stay within (on loopback).
pub const ADDED_P50_GOAL: Duration = Duration::from_micros(250);
/// The fraction of the direct stream throughput every busbar target should reach.
pub const STREAM_GOAL: f64 = 0.90;
/// The fraction of the direct `docker logs` throughput every busbar target should reach (its
/// time within 1.25× of direct's).
pub const LOGS_GOAL: f64 = 0.80;

/// Everything the report shows.
pub struct Report {
    pub date: String,
    pub machine: String,
    pub kernel: String,
    pub engine: String,
    pub busbar: String,
    pub command: String,
    pub requests: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub stream_mib: u64,
    pub stream_runs: usize,
    pub containers: usize,
    /// Every target, with why it was not measured if it was not.
    pub targets: Vec<(Kind, Option<String>)>,
    pub latency: Vec<LatencyResult>,
    /// Connections at once (each count measured in turn), timed windows per target and their
    /// length, and the results.
    pub connections: Vec<usize>,
    pub throughput_runs: usize,
    pub throughput_window: Duration,
    pub throughput: Vec<ThroughputResult>,
    pub streams: Vec<StreamResult>,
    /// `docker logs` of a container that wrote `log_lines` lines (a chunk per line from the
    /// engine), read `stream_runs` times.
    pub log_lines: usize,
    pub logs: Vec<StreamResult>,
    /// Anything unusual seen while measuring.
    pub notes: Vec<String>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_setup(&mut out);
        self.render_latency(&mut out);
        self.render_throughput(&mut out);
        let title = format!("stream ({} MiB), MiB/s", self.stream_mib);
        self.render_streams(&mut out, &title, &self.streams, STREAM_GOAL);
        let title = format!("`docker logs` ({} lines), MiB/s", self.log_lines);
        self.render_streams(&mut out, &title, &self.logs, LOGS_GOAL);
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}\n");
        }
        out
    }

    fn render_setup(&self, out: &mut String) {
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}; kernel {}", self.machine, self.kernel);
        let _ = writeln!(out, "- Engine: {}", self.engine);
        let _ = writeln!(out, "- busbar: {}", self.busbar);
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- Latency: {} requests per target and request after {} warm-up requests, one keep-alive \
             connection per target, in {} interleaved rounds; {} containers exist (created, not running)",
            self.requests, self.warmup, self.rounds, self.containers
        );
        let _ = writeln!(
            out,
            "- Throughput: {} connections sending at once (each its next request when its last answer \
             is in), {} windows of {} s per target and request, interleaved; median",
            self.connections
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", then "),
            self.throughput_runs,
            self.throughput_window.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "- Stream: `GET /containers/ID/archive?path=/big` of a {} MiB file, {} runs per target, median",
            self.stream_mib, self.stream_runs
        );
        let _ = writeln!(out, "- Targets:");
        for (kind, note) in &self.targets {
            match note {
                None => {
                    let _ = writeln!(out, "  - `{}`: {}", kind.name(), kind.path());
                }
                Some(why) => {
                    let _ = writeln!(out, "  - `{}`: **not measured** ({why})", kind.name());
                }
            }
        }
        out.push('\n');
    }

    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| request | target | p50 | p99 | mean | added p50 | p99 / direct p99 | p50 goal (≤ +{} µs) | CPU / request |",
            ADDED_P50_GOAL.as_micros()
        );
        let _ = writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
        );
        let mut notes = vec![];
        for result in &self.latency {
            let Some((_, direct, direct_size, _)) = result.rows.first() else {
                continue;
            };
            for (i, (name, s, size, cpu)) in result.rows.iter().enumerate() {
                let request = if i == 0 {
                    format!("`GET {}` ({})", result.path, bytes(*size))
                } else {
                    String::new()
                };
                let (added, ratio, goal) = if i == 0 {
                    ("—".to_string(), "—".to_string(), "—".to_string())
                } else {
                    let added = s.p50.as_nanos() as i128 - direct.p50.as_nanos() as i128;
                    let meets = added <= ADDED_P50_GOAL.as_nanos() as i128;
                    let ratio = s.p99.as_secs_f64() / direct.p99.as_secs_f64();
                    (
                        signed(added),
                        format!("{ratio:.2}×"),
                        goal_mark(name, meets).to_string(),
                    )
                };
                let _ = writeln!(
                    out,
                    "| {request} | {name} | {} | {} | {} | {added} | {ratio} | {goal} | {} |",
                    duration(s.p50),
                    duration(s.p99),
                    duration(s.mean),
                    cpu.map_or("—".to_string(), duration)
                );
                if size != direct_size {
                    notes.push(format!(
                        "`{name}` answered `GET {}` with {size} bytes, direct with {direct_size}.",
                        result.path
                    ));
                }
            }
        }
        for note in notes {
            let _ = writeln!(out, "\nNote: {note}");
        }
        out.push('\n');
    }

    fn render_throughput(&self, out: &mut String) {
        let runs: Vec<String> = (1..=self.throughput_runs)
            .map(|i| format!("run {i}"))
            .collect();
        let mut shown = None;
        for result in &self.throughput {
            if shown != Some(result.connections) {
                if shown.is_some() {
                    out.push('\n');
                }
                shown = Some(result.connections);
                let _ = writeln!(
                    out,
                    "| request, {} connections, requests/s | target | {} | median | vs direct | CPU / request |",
                    result.connections,
                    runs.join(" | ")
                );
                let _ = writeln!(
                    out,
                    "| --- | --- |{} ---: | ---: | ---: |",
                    " ---: |".repeat(self.throughput_runs)
                );
            }
            let Some(direct) = result.rows.first().map(|r| r.median()) else {
                continue;
            };
            for (i, row) in result.rows.iter().enumerate() {
                let request = if i == 0 {
                    format!("`GET {}`", result.path)
                } else {
                    String::new()
                };
                let runs: Vec<String> = row.runs.iter().map(|r| format!("{r:.0}")).collect();
                let vs = if i == 0 {
                    "—".to_string()
                } else {
                    format!("{:.0} %", row.median() / direct * 100.0)
                };
                let _ = writeln!(
                    out,
                    "| {request} | {} | {} | **{:.0}** | {vs} | {} |",
                    row.name,
                    runs.join(" | "),
                    row.median(),
                    row.cpu.map_or("—".to_string(), duration)
                );
            }
        }
        out.push('\n');
    }

    fn render_streams(&self, out: &mut String, title: &str, rows: &[StreamResult], goal: f64) {
        let runs: Vec<String> = (1..=self.stream_runs).map(|i| format!("run {i}")).collect();
        let _ = writeln!(
            out,
            "| {title} | {} | median | vs direct | goal (≥ {:.0} %) | busbar CPU s/GiB | engine CPU s/GiB |",
            runs.join(" | "),
            goal * 100.0
        );
        let _ = writeln!(
            out,
            "| --- |{} ---: | ---: | --- | ---: | ---: |",
            " ---: |".repeat(self.stream_runs)
        );
        let Some(direct) = rows.first().map(StreamResult::median) else {
            return;
        };
        for (i, s) in rows.iter().enumerate() {
            let runs: Vec<String> = s.runs.iter().map(|r| format!("{r:.0}")).collect();
            let ratio = s.median() / direct;
            let (vs, goal) = if i == 0 {
                ("—".to_string(), "—")
            } else {
                (
                    format!("{:.0} %", ratio * 100.0),
                    goal_mark(s.name, ratio >= goal),
                )
            };
            let cpu = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                out,
                "| {} | {} | **{:.0}** | {vs} | {goal} | {} | {} |",
                s.name,
                runs.join(" | "),
                s.median(),
                cpu(s.median_hop_cpu()),
                cpu(s.median_engine_cpu())
            );
        }
        out.push('\n');
    }
}

/// "met" or "**missed**"; "(floor)" or "(ref.)" for a reference, which is not busbar as
/// deployed (no goal applies).
fn goal_mark(target: &str, meets: bool) -> &'static str {
    let kind = Kind::ALL.iter().find(|k| k.name() == target);
    match kind.and_then(|k| k.reference()) {
        Some(note) => note,
        None if meets => "met",
        None => "**missed**",
    }
}

/// `87 µs`, or `1.04 ms` from a millisecond on.
fn duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// A response size: `2 B`, `31.4 KiB`.
fn bytes(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// A signed difference in nanoseconds: `+87 µs`, `−3 µs`, `+1.20 ms`.
fn signed(nanos: i128) -> String {
    let sign = if nanos < 0 { "−" } else { "+" };
    let abs = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
    format!("{sign}{}", duration(abs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(duration(Duration::from_nanos(87_400)), "87 µs");
        assert_eq!(duration(Duration::from_micros(1040)), "1.04 ms");
        assert_eq!(signed(-3_000), "−3 µs");
        assert_eq!(signed(1_200_000), "+1.20 ms");
        assert_eq!(
            (bytes(2), bytes(32 * 1024 + 410)),
            ("2 B".to_string(), "32.4 KiB".to_string())
        );
    }
}
