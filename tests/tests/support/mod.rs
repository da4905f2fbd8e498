//! busbar's own processes for end-to-end tests: an agent (later a gateway) started from the
//! binaries cargo built, on a free loopback port, stopped when the guard drops.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod adapters;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::{free_port, unique_name, wait_until};

/// A busbar binary built next to the test executable (`target/debug/NAME`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// A running busbar process, killed when dropped. Its log (stderr) goes to a file whose tail
/// is printed when a test fails while the process is alive.
pub struct Process {
    child: Child,
    /// `tcp://127.0.0.1:PORT`: what `docker -H` takes.
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Process {
    /// Starts `busbar-agent --docker ENGINE --listen tcp://127.0.0.1:FREE ARGS...` and waits
    /// until it answers `/_ping`.
    pub fn agent(engine_url: &str, args: &[&str]) -> Process {
        let port = free_port();
        let mut all = vec!["--docker".to_string(), engine_url.to_string()];
        all.extend(["--listen".to_string(), format!("tcp://127.0.0.1:{port}")]);
        all.extend(args.iter().map(|s| s.to_string()));
        Process::spawn("busbar-agent", &all, port)
    }

    fn spawn(bin: &str, args: &[String], port: u16) -> Process {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(bin)));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary(bin))
            .args(args)
            .env("RUST_LOG", std::env::var("BUSBAR_TEST_LOG").unwrap_or_else(|_| "debug".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut p = Process { child, url: format!("tcp://127.0.0.1:{port}"), port, log };
        let up = wait_until(Duration::from_secs(15), || {
            p.exited().is_none() && http_raw(port, "GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_ok()
        });
        assert!(up, "{bin} did not come up on port {port}; its log:\n{}", p.log_tail());
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last 60 lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Open file descriptors of the process (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of pid {} ({}) ---\n{}", self.pid(), self.url, self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Sends raw bytes to 127.0.0.1:port and returns everything read until the server closes
/// (or 10 s pass). For requests that must be exact, or malformed on purpose.
pub fn http_raw(port: u16, request: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = vec![];
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Runs a command line under `script` so that it gets a pseudo-terminal (for `-t`/`-it`),
/// feeding `input` to it; returns what the terminal showed.
pub fn with_tty(cmdline: &str, input: &[u8]) -> String {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", cmdline, "/dev/null"]).env_remove("DOCKER_HOST").env("DOCKER_CLI_HINTS", "false");
    let out = testbed::cmd::output_with_timeout(&mut cmd, Some(input), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory under the system temp dir, removed (with its contents) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let d = std::env::temp_dir().join(unique_name("bbtest"));
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        TempDir(d)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
