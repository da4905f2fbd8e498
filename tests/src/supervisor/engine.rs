//! One host's private dockerd: starting it (inside the host's namespace with `nsenter`),
//! waiting until it answers, stopping it, and importing the busybox image into it.
//!
//! Everything the engine keeps lives in the host directory D: `D/data` (data root, including
//! its containerd's state), `D/exec` (exec root), `D/docker.sock`, `D/docker.pid`,
//! `D/daemon.json` (empty, so a machine-wide /etc/docker/daemon.json is not read) and
//! `D/dockerd.log`. Its containers go in the cgroup `bbtS` (`--cgroup-parent`), so teardown
//! can kill them even if the engine died without stopping them.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::network::HostNet;
use super::sys;
use crate::cmd::{check_success, describe, wait_with_deadline};
use crate::docker::{docker_command, try_docker};

/// How long a starting engine may take to answer `/_ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed engine may take to exit (it first stops its running containers, each
/// with its own stop timeout, 10 s by default).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of dockerd.log to show when the engine fails.
const LOG_TAIL: usize = 3000;

/// Applets the image must have (the rest of busybox's applets are linked too).
const REQUIRED_APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "ls", "env", "true", "id", "top", "touch", "mkdir", "ip",
    "hostname", "wc", "head", "seq", "yes", "dd", "tar", "printf", "nc", "ping",
];

/// A host's engine; `child` is the running dockerd, if any.
pub struct Engine {
    pub dir: PathBuf,
    pub net: HostNet,
    child: Option<Child>,
}

impl Engine {
    pub fn new(dir: PathBuf, net: HostNet) -> Engine {
        Engine {
            dir,
            net,
            child: None,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The running dockerd's pid.
    pub fn pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    fn log_tail(&self) -> String {
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path().display(),
            sys::tail(&self.log_path(), LOG_TAIL)
        )
    }

    fn dockerd_command(&self) -> Command {
        let d = self.dir.display();
        let mut cmd = match self.net.netns_name() {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg("dockerd");
                c
            }
            None => Command::new("dockerd"),
        };
        cmd.args(["--data-root", &format!("{d}/data")])
            .args(["--exec-root", &format!("{d}/exec")])
            .args(["-H", &self.url()])
            .args(["--pidfile", &format!("{d}/docker.pid")])
            .args(["--config-file", &format!("{d}/daemon.json")])
            .args(["--cgroup-parent", &self.net.name()])
            .args([
                "--default-address-pool",
                &format!("base={},size=24", self.net.address_pool()),
            ]);
        if self.net.netns {
            cmd.args(["--bip", &self.net.bip()]);
        } else {
            // Several engines share the root namespace: each gets its own bridge (made by
            // HostNet::setup) and leaves the shared iptables alone.
            cmd.args(["--bridge", &self.net.name(), "--iptables=false"]);
        }
        cmd
    }

    /// Starts dockerd (in its own process group) without waiting for it.
    pub fn spawn(&mut self) -> Result<()> {
        if self.pid().is_some() {
            bail!("the engine is already running");
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        sys::write_file(&self.dir.join("daemon.json"), "{}\n")?;
        self.forget_dead_containerd();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut cmd = self.dockerd_command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        sys::verbose(format!("starting {}", describe(&cmd)));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", describe(&cmd)))?;
        self.child = Some(child);
        Ok(())
    }

    /// After a crash (`kill`), containerd dies with dockerd (it has a parent-death signal) but
    /// may linger as a zombie until init reaps it; dockerd would take its pid file for a live
    /// containerd and wait for it in vain, so remove a pid file naming a dead process.
    fn forget_dead_containerd(&self) {
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if pid.is_some_and(|pid| !sys::pid_alive(pid)) {
            let _ = fs::remove_file(&pidfile);
        }
    }

    /// Waits until the engine answers on its socket.
    pub fn wait_ready(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if super::stopping() {
                bail!("interrupted while waiting for the engine at {}", self.url());
            }
            let child = self.child.as_mut().context("the engine is not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "dockerd for {} exited during startup ({status})\n{}",
                    self.url(),
                    self.log_tail()
                );
            }
            if ping(&self.sock()) {
                sys::verbose(format!(
                    "engine {} ready after {:?}",
                    self.url(),
                    t0.elapsed()
                ));
                return Ok(());
            }
            if t0.elapsed() > READY_TIMEOUT {
                bail!(
                    "dockerd for {} did not answer within {READY_TIMEOUT:?}\n{}",
                    self.url(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the engine and waits until it answers.
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready()
    }

    /// Stops the engine: SIGTERM and a bounded wait, then SIGKILL for its process group. Its
    /// socket no longer answers afterwards.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        sys::signal("TERM", &child.id().to_string());
        let exited = wait_with_deadline_no_kill(&mut child, STOP_TIMEOUT)?;
        if !exited {
            sys::log(format!(
                "dockerd {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                child.id()
            ));
            kill_group(&mut child)?;
        }
        self.wait_silent()
    }

    /// Crashes the engine: SIGKILL for dockerd's process group, no cleanup. Its containerd
    /// dies with it; shims and containers live on, as after a real crash.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("the engine is not running")
        };
        kill_group(&mut child)?;
        self.wait_silent()
    }

    fn wait_silent(&self) -> Result<()> {
        if !sys::wait_for(Duration::from_secs(10), || !ping(&self.sock())) {
            bail!("{} still answers after its dockerd exited", self.url());
        }
        Ok(())
    }

    /// Imports the busybox image (`busybox:latest`) from `tar`.
    pub fn import_busybox(&self, tar: &Path) -> Result<()> {
        let tar = tar.to_string_lossy();
        let args = ["import", "-c", r#"CMD ["/bin/sh"]"#, &tar, "busybox:latest"];
        let out = try_docker(&self.url(), &args, None, Duration::from_secs(120))?;
        check_success(&describe(&docker_command(&self.url(), &args)), &out)
            .with_context(|| format!("importing busybox into {}", self.url()))
    }
}

/// SIGKILLs the process group led by `child` and reaps it.
fn kill_group(child: &mut Child) -> Result<()> {
    sys::signal("KILL", &format!("-{}", child.id()));
    if wait_with_deadline(child, Duration::from_secs(10))?.is_none() {
        bail!("process {} survived SIGKILL", child.id());
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit, without killing it; returns whether it exited.
fn wait_with_deadline_no_kill(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an engine answers `GET /_ping` on `sock`.
pub fn ping(sock: &Path) -> bool {
    let attempt = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    attempt().is_ok_and(|r| r.starts_with("HTTP/1.") && r.contains(" 200 ") && r.ends_with("OK"))
}

/// Builds the busybox image's root filesystem from the machine's static busybox (`/bin/busybox`
/// or `$BUSBAR_BUSYBOX`) as a tar archive in `bed_dir`, and returns the archive's path.
pub fn build_busybox_tar(bed_dir: &Path) -> Result<PathBuf> {
    let busybox = std::env::var("BUSBAR_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".to_string());
    let rootfs = bed_dir.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    fs::copy(&busybox, bin.join("busybox"))
        .with_context(|| format!("copying {busybox} (install busybox-static)"))?;
    let applets = sys::run(&busybox, &["--list"])?;
    let applets: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .collect();
    if let Some(missing) = REQUIRED_APPLETS.iter().find(|a| !applets.contains(a)) {
        bail!("{busybox} has no `{missing}` applet");
    }
    for applet in applets {
        symlink("busybox", bin.join(applet)).with_context(|| format!("linking applet {applet}"))?;
    }
    sys::write_file(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    sys::write_file(&rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    for dir in ["tmp", "root"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let tar = bed_dir.join("busybox.tar");
    let (rootfs_s, tar_s) = (rootfs.to_string_lossy(), tar.to_string_lossy());
    sys::run("tar", &["-C", &rootfs_s, "-cf", &tar_s, "."]).context("packing the busybox image")?;
    Ok(tar)
}
