//! The `busbar-testbed` supervisor: sets a bed up, prints it as one JSON line, obeys commands
//! on stdin, and tears everything down when stdin closes or a signal arrives.
//!
//! Protocol (one line each way, after the JSON line):
//!
//! | command             | effect                                                        |
//! |---------------------|---------------------------------------------------------------|
//! | `stop-engine H`     | SIGTERM host H's dockerd and wait until it is gone            |
//! | `start-engine H`    | start it again (same directories and socket), wait until ready|
//! | `kill-engine H`     | SIGKILL dockerd's process group (a crash)                     |
//! | `disconnect H`      | take H's link down (a network partition; namespaced hosts)    |
//! | `reconnect H`       | bring it back up                                              |
//! | `pid H`             | `ok PID` of H's running dockerd                               |
//! | `stop-etcd`         | SIGTERM etcd and wait until it is gone (an etcd outage)       |
//! | `start-etcd`        | start it again (same ports and data), wait until healthy      |
//!
//! Each is answered by `ok` (possibly followed by a value) or `err MESSAGE`.

mod engine;
pub mod etcd;
mod network;
pub mod slots;
pub mod sys;

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::info::{BedInfo, HostInfo, StartReply};
use crate::util::random_u64;
use engine::Engine;
use etcd::Etcd;
use network::HostNet;
use slots::SlotRecord;

/// Set once stdin closes or a termination signal arrives: startup waits give up, the command
/// loop ends, and the bed is torn down.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the supervisor has been asked to stop.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Command line of `busbar-testbed`.
#[derive(Debug, Parser)]
#[command(
    name = "busbar-testbed",
    about = "Runs private Docker engines (and etcd) for busbar's tests"
)]
pub struct Args {
    /// Number of hosts (private dockerds).
    #[arg(long, default_value_t = 1)]
    pub hosts: usize,
    /// Put each host in its own network namespace with its own address.
    #[arg(long)]
    pub netns: bool,
    /// Also start an etcd.
    #[arg(long)]
    pub etcd: bool,
    /// Remove what test beds whose supervisor is gone left behind, then exit.
    #[arg(long)]
    pub cleanup_stale: bool,
}

enum Event {
    Line(String),
    Closed,
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let args = Args::parse();
    add_sbin_to_path();
    if args.cleanup_stale {
        return match slots::cleanup_stale() {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("busbar-testbed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.hosts == 0 || args.hosts > 64 {
        eprintln!("busbar-testbed: --hosts must be between 1 and 64");
        return ExitCode::FAILURE;
    }
    let events = listen_for_stop();
    let t0 = Instant::now();
    let bed = match Bed::start(&args) {
        Ok(bed) => bed,
        Err(e) => {
            sys::log(format!("startup failed: {e:#}"));
            reply(
                &serde_json::to_string(&StartReply::Failed {
                    error: format!("{e:#}"),
                })
                .unwrap_or_default(),
            );
            return ExitCode::FAILURE;
        }
    };
    sys::verbose(format!("bed ready in {:?}", t0.elapsed()));
    serve(bed, events);
    ExitCode::SUCCESS
}

/// dockerd, ip, iptables live in sbin, which a test's PATH may lack. Called first thing, while
/// the process has a single thread.
fn add_sbin_to_path() {
    let path = std::env::var("PATH").unwrap_or_default();
    let missing: Vec<&str> = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
        .into_iter()
        .filter(|d| !path.split(':').any(|p| p == *d))
        .collect();
    if !missing.is_empty() {
        std::env::set_var("PATH", format!("{path}:{}", missing.join(":")));
    }
}

/// Reads stdin lines on a thread and handles SIGINT/SIGTERM/SIGHUP; both end in `Closed`.
fn listen_for_stop() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    let signal_tx = tx.clone();
    let handler = ctrlc::set_handler(move || {
        STOP.store(true, Ordering::SeqCst);
        let _ = signal_tx.send(Event::Closed);
    });
    if let Err(e) = handler {
        sys::log(format!("could not install the signal handler: {e}"));
    }
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Event::Line(line)).is_err() {
                return;
            }
        }
        STOP.store(true, Ordering::SeqCst);
        let _ = tx.send(Event::Closed);
    });
    rx
}

/// Writes one line to stdout, ignoring errors (the reader may be gone).
fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints the bed and answers commands until told to stop; the bed is torn down when dropped.
fn serve(mut bed: Bed, events: mpsc::Receiver<Event>) {
    reply(&serde_json::to_string(&StartReply::Ready(bed.info())).unwrap_or_default());
    while let Ok(Event::Line(line)) = events.recv() {
        let answer = match bed.handle(line.trim()) {
            Ok(value) if value.is_empty() => "ok".to_string(),
            Ok(value) => format!("ok {value}"),
            Err(e) => format!("err {}", format!("{e:#}").replace('\n', " | ")),
        };
        reply(&answer);
    }
    drop(bed);
}

/// One host as the supervisor sees it.
struct Host {
    name: String,
    engine: Engine,
    first_pid: u32,
}

/// Everything the supervisor set up; torn down on drop (including after a failed start).
struct Bed {
    dir: PathBuf,
    slots: Vec<u8>,
    netns: bool,
    hosts: Vec<Host>,
    etcd: Option<Etcd>,
}

impl Bed {
    fn start(args: &Args) -> Result<Bed> {
        let dir = create_bed_dir()?;
        let owner = SlotRecord::for_this_process(&dir)?;
        let mut bed = Bed {
            dir,
            slots: Vec::new(),
            netns: args.netns,
            hosts: Vec::new(),
            etcd: None,
        };
        sys::write_file(
            &bed.dir.join(slots::BED_MARKER),
            &serde_json::to_string(&owner)?,
        )?;
        bed.slots = slots::allocate(args.hosts, &owner)?;
        for (i, &slot) in bed.slots.clone().iter().enumerate() {
            let net = HostNet {
                slot,
                netns: args.netns,
            };
            net.setup()?;
            let name = format!("h{}", i + 1);
            bed.hosts.push(Host {
                engine: Engine::new(bed.dir.join(&name), net),
                name,
                first_pid: 0,
            });
        }
        if args.netns {
            network::enable_forwarding()?;
        }
        let tar = engine::build_busybox_tar(&bed.dir)?;
        for host in &mut bed.hosts {
            host.engine.spawn()?;
            host.first_pid = host.engine.pid().unwrap_or(0);
        }
        let etcd_thread = args.etcd.then(|| {
            let dir = bed.dir.clone();
            let gateways: Vec<_> = bed
                .hosts
                .iter()
                .filter_map(|h| h.engine.net.gateway())
                .collect();
            thread::spawn(move || Etcd::start(&dir, &gateways))
        });
        let engines = bed.prepare_engines(&tar);
        // Join etcd's starter even if an engine failed, so nothing outlives the teardown.
        if let Some(handle) = etcd_thread {
            let etcd = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the etcd starter panicked"))?;
            bed.etcd = Some(etcd.context("starting etcd")?);
        }
        engines?;
        Ok(bed)
    }

    /// Waits for every engine and imports busybox into it, all hosts in parallel.
    fn prepare_engines(&mut self, tar: &Path) -> Result<()> {
        thread::scope(|scope| {
            let jobs: Vec<_> = self
                .hosts
                .iter_mut()
                .map(|host| {
                    scope.spawn(move || -> Result<()> {
                        host.engine.wait_ready()?;
                        host.engine.import_busybox(tar)
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .map_err(|_| anyhow::anyhow!("an engine starter panicked"))?
            })
        })
    }

    fn info(&self) -> BedInfo {
        let etcd_port = self.etcd.as_ref().map(|e| e.port);
        BedInfo {
            dir: self.dir.clone(),
            supervisor_pid: std::process::id(),
            etcd: self.etcd.as_ref().map(Etcd::url),
            hosts: self.hosts.iter().map(|h| host_info(h, etcd_port)).collect(),
        }
    }

    fn host(&mut self, name: &str) -> Result<&mut Host> {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .with_context(|| format!("no host named {name:?}"))
    }

    /// Runs one protocol command; returns the value to send after `ok`.
    fn handle(&mut self, line: &str) -> Result<String> {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        match verb {
            "stop-engine" => self.host(arg)?.engine.stop().map(|_| String::new()),
            "start-engine" => self.host(arg)?.engine.start().map(|_| String::new()),
            "kill-engine" => self.host(arg)?.engine.kill().map(|_| String::new()),
            "disconnect" | "reconnect" => {
                let net = self.host(arg)?.engine.net;
                if !net.netns {
                    bail!("host {arg} has no network namespace to disconnect");
                }
                net.set_link(verb == "reconnect").map(|_| String::new())
            }
            "stop-etcd" | "start-etcd" => {
                let etcd = self.etcd.as_mut().context("the bed has no etcd")?;
                if verb == "stop-etcd" {
                    etcd.stop();
                    Ok(String::new())
                } else {
                    etcd.restart().map(|_| String::new())
                }
            }
            "pid" => self
                .host(arg)?
                .engine
                .pid()
                .map(|p| p.to_string())
                .context("the engine is not running"),
            _ => bail!("unknown command {line:?}"),
        }
    }

    fn teardown(&mut self) {
        let t0 = Instant::now();
        // Containers first: an engine stopping its containers itself gives each its stop
        // timeout (10 s by default, and busybox as pid 1 ignores SIGTERM).
        for &slot in &self.slots {
            sys::kill_cgroup(&slots::slot_name(slot));
        }
        thread::scope(|scope| {
            for host in &mut self.hosts {
                scope.spawn(|| {
                    if let Err(e) = host.engine.stop() {
                        sys::log(format!("stopping {}: {e:#}", host.name));
                    }
                });
            }
        });
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop();
        }
        // containerd, shims, anything else started for this bed.
        sys::kill_mentioning(
            &format!("{}/", self.dir.display()),
            std::time::Duration::from_secs(10),
        );
        for &slot in &self.slots {
            sys::destroy_cgroup(&slots::slot_name(slot));
        }
        sys::unmount_under(&self.dir);
        for &slot in &self.slots {
            HostNet {
                slot,
                netns: self.netns,
            }
            .teardown();
            slots::release(slot);
        }
        sys::remove_tree(&self.dir);
        sys::verbose(format!("teardown took {:?}", t0.elapsed()));
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn host_info(host: &Host, etcd_port: Option<u16>) -> HostInfo {
    let net = host.engine.net;
    let etcd_host = net
        .gateway()
        .map(|g| g.to_string())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    HostInfo {
        name: host.name.clone(),
        slot: net.slot,
        dir: host.engine.dir.clone(),
        netns: net.netns_name(),
        addr: net.addr(),
        gateway_addr: net.gateway(),
        docker_sock: host.engine.sock(),
        pid: host.first_pid,
        bip: net.bip(),
        address_pool: net.address_pool(),
        etcd: etcd_port.map(|p| format!("http://{etcd_host}:{p}")),
    }
}

/// Creates a fresh `/tmp/bbt-XXXXXXXX`.
fn create_bed_dir() -> Result<PathBuf> {
    for _ in 0..100 {
        let dir = Path::new(slots::BED_PARENT).join(format!(
            "{}{:08x}",
            slots::BED_PREFIX,
            random_u64() as u32
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not create a unique directory under {}",
        slots::BED_PARENT
    )
}
