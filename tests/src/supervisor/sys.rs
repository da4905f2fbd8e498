//! Operating-system chores for the supervisor, done with std, /proc and the usual command-line
//! tools (`ip`, `kill`, `umount`) so the crate needs no `unsafe`: running a tool with a
//! deadline, signalling processes, finding processes by command line, cgroups and mounts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd::run_ok;

/// Deadline for one quick system tool invocation (`ip`, `kill`, `umount`, ...).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a diagnostic line to stderr, ignoring errors (stderr may be a closed pipe).
pub fn log(msg: impl std::fmt::Display) {
    let _ = writeln!(
        std::io::stderr(),
        "busbar-testbed[{}]: {msg}",
        std::process::id()
    );
}

/// Writes a progress line to stderr when `BUSBAR_TESTBED_VERBOSE` is set.
pub fn verbose(msg: impl std::fmt::Display) {
    if std::env::var_os("BUSBAR_TESTBED_VERBOSE").is_some() {
        log(msg);
    }
}

/// Runs `program args...`, requiring success; returns stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_ok(Command::new(program).args(args), TOOL_TIMEOUT)
}

/// Runs `program args...` for its effect only, ignoring failure (cleanup of things that may
/// already be gone).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = run(program, args);
}

/// Sends `signal` (`TERM`, `KILL`, ...) to `target` (a pid, or `-PGID` for a process group).
pub fn signal(signal: &str, target: &str) {
    run_quiet("kill", &["-s", signal, "--", target]);
}

/// Sends `signal` to each of `pids` with one `kill` invocation.
pub fn signal_all(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut args = vec!["-s", signal, "--"];
    args.extend(pids.iter().map(String::as_str));
    run_quiet("kill", &args);
}

/// The fields of /proc/PID/stat after the command name: index 0 is the state, 2 the process
/// group, 19 the start time.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

/// The start time of `pid` (clock ticks since boot): with the pid, identifies a process even
/// after pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` is still alive.
pub fn same_process_alive(pid: u32, started: u64) -> bool {
    pid_alive(pid) && start_time(pid) == Some(started)
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes (other than this one) whose command line contains `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs every process whose command line contains `needle` (repeatedly, as killing a
/// parent can briefly leave children behind) and waits up to `timeout` for them to be gone.
pub fn kill_mentioning(needle: &str, timeout: Duration) {
    let gone = wait_for(timeout, || {
        let pids = pids_mentioning(needle);
        signal_all("KILL", &pids);
        pids.is_empty()
    });
    if !gone {
        log(format!(
            "processes mentioning {needle} survived SIGKILL: {:?}",
            pids_mentioning(needle)
        ));
    }
}

/// The cgroup directories named `name` directly under the cgroup root, for cgroup v2
/// (`/sys/fs/cgroup/NAME`) and v1 (`/sys/fs/cgroup/CONTROLLER/NAME`).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name)];
    if let Ok(entries) = fs::read_dir(root) {
        dirs.extend(entries.filter_map(|e| Some(e.ok()?.path().join(name))));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Directories under `dir` (itself included), deepest first.
fn subdirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subdirs_deepest_first(&entry.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

fn cgroup_pids(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_dirs(name)
        .iter()
        .flat_map(|d| subdirs_deepest_first(d))
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|&pid| pid_alive(pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills every process in the cgroup `name` (an engine's `--cgroup-parent`, which holds its
/// containers), in every hierarchy, and waits (bounded) until they are gone.
pub fn kill_cgroup(name: &str) {
    let emptied = wait_for(Duration::from_secs(10), || {
        let pids = cgroup_pids(name);
        signal_all("KILL", &pids);
        pids.is_empty()
    });
    if !emptied {
        log(format!(
            "processes in cgroup {name} survived SIGKILL: {:?}",
            cgroup_pids(name)
        ));
    }
}

/// [`kill_cgroup`], then removes the cgroup's directories.
pub fn destroy_cgroup(name: &str) {
    kill_cgroup(name);
    for dir in cgroup_dirs(name) {
        for sub in subdirs_deepest_first(&dir) {
            let _ = fs::remove_dir(&sub);
        }
    }
}

/// Undoes the octal escapes (`\040` for a space, ...) of /proc/self/mountinfo.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// Lazily unmounts everything mounted at or below `dir` (best effort).
pub fn unmount_under(dir: &Path) {
    for _round in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            run_quiet("umount", &["-l", &m.to_string_lossy()]);
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        log(format!("could not unmount {left:?}"));
    }
}

/// Removes `dir` and everything in it after unmounting what is mounted there (best effort).
pub fn remove_tree(dir: &Path) {
    unmount_under(dir);
    if let Err(e) = fs::remove_dir_all(dir) {
        if dir.exists() {
            log(format!("could not remove {}: {e}", dir.display()));
        }
    }
}

/// The last `max` bytes of a log file, for error messages.
pub fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Names of the network namespaces (`ip netns list`).
pub fn netns_names() -> Vec<String> {
    let out = run("ip", &["netns", "list"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Names of the network interfaces in the root namespace.
pub fn link_names() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Deletes the network namespace `name` and the root-namespace link `name` (best effort).
pub fn delete_netns_and_link(name: &str) {
    if netns_names().iter().any(|n| n == name) {
        run_quiet("ip", &["netns", "del", name]);
    }
    // The root end of a veth goes away with its peer, but only once every process in the
    // namespace is gone; a bridge (root-namespace hosts) must be deleted explicitly.
    let gone = wait_for(Duration::from_secs(5), || {
        if link_names().iter().any(|n| n == name) {
            run_quiet("ip", &["link", "del", name]);
            false
        } else {
            true
        }
    });
    if !gone {
        log(format!("could not delete link {name}"));
    }
}

/// Creates `path`'s parent directories and writes `contents` to it.
pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn knows_itself() {
        let me = std::process::id();
        assert!(pid_alive(me));
        assert!(same_process_alive(me, start_time(me).unwrap()));
        assert!(!same_process_alive(me, start_time(me).unwrap() + 1));
    }
}
