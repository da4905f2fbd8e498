//! The bed's single-member etcd, on free ports.
//!
//! It listens on 127.0.0.1 for the root namespace and on every host's gateway address
//! (10.77.S.1), so processes inside a host's namespace (an agent, say) reach it too.
//!
//! It can be stopped and started again ([`Etcd::stop`], [`Etcd::restart`]): the same ports,
//! addresses and data directory, so clients reconnect to the same URL and find every key, and
//! every lease, it had (etcd renews the leases it finds when it starts again).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::sys;
use crate::cmd::{describe, wait_with_deadline};
use crate::util::free_port;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries with fresh ports, in case another process took a port we picked.
const ATTEMPTS: usize = 3;

pub struct Etcd {
    child: Child,
    pub port: u16,
    peer_port: u16,
    dir: PathBuf,
    extra_addrs: Vec<IpAddr>,
}

impl Etcd {
    /// Starts etcd with its data in `bed_dir/etcd`, also listening on `extra_addrs`, and waits
    /// until it is healthy.
    pub fn start(bed_dir: &Path, extra_addrs: &[IpAddr]) -> Result<Etcd> {
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            let dir = bed_dir.join(format!("etcd{attempt}"));
            match Etcd::try_start(&dir, extra_addrs) {
                Ok(etcd) => return Ok(etcd),
                Err(e) if super::stopping() => return Err(e),
                Err(e) => {
                    sys::log(format!("etcd attempt {attempt} failed: {e:#}"));
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn try_start(dir: &Path, extra_addrs: &[IpAddr]) -> Result<Etcd> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (port, peer_port) = (free_port(), free_port());
        let child = spawn(dir, port, peer_port, extra_addrs)?;
        let mut etcd = Etcd {
            child,
            port,
            peer_port,
            dir: dir.to_path_buf(),
            extra_addrs: extra_addrs.to_vec(),
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// Whether the etcd process is running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// Starts the stopped etcd again on the same ports with the same data, and waits until it
    /// is healthy. A no-op when it runs.
    pub fn restart(&mut self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        self.child = spawn(&self.dir, self.port, self.peer_port, &self.extra_addrs)?;
        self.wait_healthy()
    }

    /// The log of the running (or last) etcd.
    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let log_path = &self.log_path();
        let t0 = Instant::now();
        loop {
            if super::stopping() {
                bail!("interrupted while waiting for etcd");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "etcd exited during startup ({status})\n{}",
                    sys::tail(log_path, 3000)
                );
            }
            if healthy(self.port) {
                return Ok(());
            }
            if t0.elapsed() > READY_TIMEOUT {
                self.stop();
                bail!(
                    "etcd was not healthy within {READY_TIMEOUT:?}\n{}",
                    sys::tail(log_path, 3000)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The running etcd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// etcd's client URL from the root namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, a bounded wait, then SIGKILL. A no-op when it is not running.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        sys::signal("TERM", &self.child.id().to_string());
        if !sys::wait_for(Duration::from_secs(10), || {
            self.child.try_wait().is_ok_and(|s| s.is_some())
        }) {
            let _ = wait_with_deadline(&mut self.child, Duration::ZERO);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts etcd with its data in `dir/data` and its log (appended) in `dir/etcd.log`.
fn spawn(dir: &Path, port: u16, peer_port: u16, extra_addrs: &[IpAddr]) -> Result<Child> {
    let mut listen = vec![format!("http://127.0.0.1:{port}")];
    listen.extend(extra_addrs.iter().map(|a| format!("http://{a}:{port}")));
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log_path = dir.join("etcd.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "bbt"])
        .args(["--data-dir", &dir.join("data").to_string_lossy()])
        .args(["--listen-client-urls", &listen.join(",")])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("bbt={peer}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    cmd.spawn()
        .with_context(|| format!("starting {} (install etcd-server)", describe(&cmd)))
}

/// Whether etcd on 127.0.0.1:`port` reports itself healthy on `/health`.
fn healthy(port: u16) -> bool {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    attempt().is_ok_and(|r| r.contains(r#""health":"true""#))
}
