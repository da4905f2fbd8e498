//! The bed's single-member etcd, on free ports.
//!
//! It listens on 127.0.0.1 for the root namespace and on every host's gateway address
//! (10.77.S.1), so processes inside a host's namespace (an agent, say) reach it too.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
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
        let mut listen = vec![format!("http://127.0.0.1:{port}")];
        listen.extend(extra_addrs.iter().map(|a| format!("http://{a}:{port}")));
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.join("etcd.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
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
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} (install etcd-server)", describe(&cmd)))?;
        let mut etcd = Etcd { child, port };
        etcd.wait_healthy(&log_path)?;
        Ok(etcd)
    }

    fn wait_healthy(&mut self, log_path: &Path) -> Result<()> {
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

    /// etcd's client URL from the root namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
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
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            self.stop();
        }
    }
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
