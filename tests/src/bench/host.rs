//! What a benchmark report says about its run: the source commit, the command line, and small
//! readers of `/proc` and commands. Shared by `busbar-bench`, `busbar-scalebench` and
//! `busbar-chainbench`.

use std::process::Command;
use std::time::Duration;

/// The source's commit (`git describe --always --dirty`), if this was built from a checkout.
pub fn busbar_version() -> String {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut cmd = Command::new("git");
    cmd.args(["-C", repo, "describe", "--always", "--dirty"]);
    let commit = run_text(&mut cmd).unwrap_or_else(|| "unknown commit".to_string());
    format!(
        "{} {commit}, release build: {}",
        env!("CARGO_PKG_VERSION"),
        !cfg!(debug_assertions)
    )
}

/// The command line this was run with, quoted for a shell where needed.
pub fn command_line() -> String {
    let quote = |a: String| {
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::env::args().map(quote).collect::<Vec<_>>().join(" ")
}

/// A command's trimmed output, if it succeeded within 10 s.
pub fn run_text(cmd: &mut Command) -> Option<String> {
    testbed::cmd::run_ok(cmd, Duration::from_secs(10))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A file's trimmed text, or `?`.
pub fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `2 CPUs (nproc; AMD EPYC), 23 GiB RAM`, from `/proc`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("{cpus} CPUs (nproc; {model}), {} GiB RAM", mem_kib >> 20)
}
