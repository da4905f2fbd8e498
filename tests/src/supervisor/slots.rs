//! Host slots: machine-wide numbering that keeps concurrent test beds apart.
//!
//! Every host of every bed on the machine gets a slot S in 1..=254, and everything global it
//! uses is named after it: the network namespace and root-side link `bbtS`, the subnets
//! `10.77.S.0/24` (link) and `172.20.S.0/24` (docker0), the cgroup parent `bbtS`. A slot is
//! claimed by writing `/run/busbar-testbed/slots/S` (a [`SlotRecord`] naming the supervisor)
//! while holding an exclusive `flock` on `/run/busbar-testbed/lock`, after checking that no
//! link, namespace, address or route already uses it.
//!
//! A slot whose supervisor is gone (crashed, SIGKILLed) is stale: whoever needs it next
//! (or `busbar-testbed --cleanup-stale`) kills the processes that mention the dead bed's
//! directory, empties the cgroup, deletes the namespace and link and removes the directory,
//! all under the lock, so two supervisors never reclaim the same slot.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::sys;

/// Machine-wide state of all test beds (on tmpfs, so a reboot forgets it).
pub const STATE_DIR: &str = "/run/busbar-testbed";
/// Where the beds' directories are created (`/tmp/bbt-XXXXXXXX`).
pub const BED_PARENT: &str = "/tmp";
pub const BED_PREFIX: &str = "bbt-";
/// The file in a bed's directory naming its supervisor.
pub const BED_MARKER: &str = "supervisor.json";

const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Who owns a slot (or a bed directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRecord {
    pub supervisor_pid: u32,
    /// The supervisor's start time, to tell it from a later process with the same pid.
    pub supervisor_start: u64,
    pub bed_dir: PathBuf,
}

impl SlotRecord {
    /// A record naming this process as the owner of `bed_dir`.
    pub fn for_this_process(bed_dir: &Path) -> Result<SlotRecord> {
        let pid = std::process::id();
        let start = sys::start_time(pid).context("reading this process's start time from /proc")?;
        Ok(SlotRecord {
            supervisor_pid: pid,
            supervisor_start: start,
            bed_dir: bed_dir.to_path_buf(),
        })
    }

    pub fn owner_alive(&self) -> bool {
        sys::same_process_alive(self.supervisor_pid, self.supervisor_start)
    }

    fn read(path: &Path) -> Option<SlotRecord> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }
}

/// The name of slot `slot`'s namespace, root-side link and cgroup.
pub fn slot_name(slot: u8) -> String {
    format!("bbt{slot}")
}

fn slot_path(slot: u8) -> PathBuf {
    Path::new(STATE_DIR).join("slots").join(slot.to_string())
}

/// The exclusive lock over all slots; released when dropped (the file is closed).
struct StateLock(#[allow(dead_code)] File);

impl StateLock {
    fn acquire() -> Result<StateLock> {
        fs::create_dir_all(Path::new(STATE_DIR).join("slots"))
            .with_context(|| format!("creating {STATE_DIR}"))?;
        let path = Path::new(STATE_DIR).join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => return Ok(StateLock(file)),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(e) => bail!(
                    "could not lock {} within {LOCK_TIMEOUT:?}: {e:?}",
                    path.display()
                ),
            }
        }
    }
}

/// What is already in use in the root namespace: names of links and namespaces, and the text of
/// the IPv4 addresses and routes.
struct InUse {
    names: Vec<String>,
    addrs_and_routes: String,
}

impl InUse {
    fn scan() -> InUse {
        let mut names = sys::link_names();
        names.extend(sys::netns_names());
        let mut addrs_and_routes =
            sys::run("ip", &["-4", "-o", "addr", "show"]).unwrap_or_default();
        addrs_and_routes +=
            &sys::run("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default();
        InUse {
            names,
            addrs_and_routes,
        }
    }

    fn conflicts(&self, slot: u8) -> bool {
        let name = slot_name(slot);
        self.names.contains(&name)
            || self.addrs_and_routes.contains(&format!("10.77.{slot}."))
            || self.addrs_and_routes.contains(&format!("172.20.{slot}."))
    }
}

/// Claims `count` free slots for `owner`, reclaiming stale ones on the way.
pub fn allocate(count: usize, owner: &SlotRecord) -> Result<Vec<u8>> {
    let _lock = StateLock::acquire()?;
    let mut in_use = InUse::scan();
    let mut claimed = Vec::new();
    for slot in 1..=254u8 {
        if claimed.len() == count {
            break;
        }
        if let Some(record) = SlotRecord::read(&slot_path(slot)) {
            if record.owner_alive() {
                continue;
            }
            reclaim(slot, &record);
            in_use = InUse::scan();
        } else if slot_path(slot).exists() {
            continue; // unreadable: leave it to a human
        }
        if in_use.conflicts(slot) {
            continue;
        }
        let json = serde_json::to_string(owner)?;
        fs::write(slot_path(slot), json)
            .with_context(|| format!("writing {}", slot_path(slot).display()))?;
        claimed.push(slot);
    }
    if claimed.len() < count {
        for &slot in &claimed {
            let _ = fs::remove_file(slot_path(slot));
        }
        bail!(
            "only {} of {count} host slots are free (see {STATE_DIR}/slots)",
            claimed.len()
        );
    }
    Ok(claimed)
}

/// Gives a slot back; call after its namespace, link and cgroup are gone.
pub fn release(slot: u8) {
    let _ = fs::remove_file(slot_path(slot));
}

/// Cleans up what a dead supervisor left in `slot` (the caller holds the lock).
fn reclaim(slot: u8, record: &SlotRecord) {
    sys::log(format!(
        "reclaiming stale slot {slot} of dead supervisor {} ({})",
        record.supervisor_pid,
        record.bed_dir.display()
    ));
    clean_bed_dir(&record.bed_dir);
    sys::destroy_cgroup(&slot_name(slot));
    sys::delete_netns_and_link(&slot_name(slot));
    release(slot);
}

/// Kills the processes that mention a dead bed's directory and removes it.
fn clean_bed_dir(dir: &Path) {
    if dir.as_os_str().is_empty() || !dir.starts_with(BED_PARENT) {
        return;
    }
    sys::kill_mentioning(&format!("{}/", dir.display()), Duration::from_secs(10));
    sys::remove_tree(dir);
}

/// Whether the bed directory `dir` belongs to a supervisor that is gone. A directory without
/// a marker counts as dead only when it is over ten minutes old.
fn bed_dir_is_stale(dir: &Path) -> bool {
    if let Some(record) = SlotRecord::read(&dir.join(BED_MARKER)) {
        return !record.owner_alive();
    }
    let age = fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    age.is_some_and(|a| a > Duration::from_secs(600))
}

fn slot_numbers() -> Vec<u8> {
    let Ok(entries) = fs::read_dir(Path::new(STATE_DIR).join("slots")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `bbtN` names of namespaces and links that no slot file accounts for.
fn orphan_names() -> Vec<String> {
    let mut names = sys::netns_names();
    names.extend(sys::link_names());
    names.sort();
    names.dedup();
    names.retain(|n| {
        n.strip_prefix("bbt")
            .and_then(|s| s.parse::<u8>().ok())
            .is_some_and(|s| !slot_path(s).exists())
    });
    names
}

/// Removes everything left by test beds whose supervisor is gone; returns a summary.
pub fn cleanup_stale() -> Result<String> {
    let _lock = StateLock::acquire()?;
    let mut done = Vec::new();
    for slot in slot_numbers() {
        match SlotRecord::read(&slot_path(slot)) {
            Some(record) if record.owner_alive() => {}
            Some(record) => {
                reclaim(slot, &record);
                done.push(format!("slot {slot}"));
            }
            None => {
                release(slot);
                done.push(format!("unreadable slot file {slot}"));
            }
        }
    }
    for name in orphan_names() {
        // A namespace that still has processes is someone's: leave it.
        let pids = sys::run("ip", &["netns", "pids", &name]).unwrap_or_default();
        if pids.trim().is_empty() {
            sys::destroy_cgroup(&name);
            sys::delete_netns_and_link(&name);
            done.push(format!("orphan {name}"));
        }
    }
    if let Ok(entries) = fs::read_dir(BED_PARENT) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let is_bed = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(BED_PREFIX));
            if is_bed && dir.is_dir() && bed_dir_is_stale(&dir) {
                clean_bed_dir(&dir);
                done.push(dir.display().to_string());
            }
        }
    }
    Ok(if done.is_empty() {
        "nothing stale".to_string()
    } else {
        format!("cleaned up: {}", done.join(", "))
    })
}
