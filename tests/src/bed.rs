//! The test-side handle on a bed: [`Testbed`] spawns the `busbar-testbed` supervisor, reads its
//! JSON description, and keeps the supervisor's stdin open for as long as the bed should live.
//! [`Host`] sends the supervisor commands (stop or start an engine, ...) and runs things inside
//! the host.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::wait_with_deadline;
use crate::docker::{docker, docker_ok};
use crate::info::{BedInfo, HostInfo, StartReply};

/// How long a bed may take to start (engines, image imports, etcd).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the supervisor may take to tear a bed down after its stdin closes.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `start-engine` / `stop-engine` / `start-etcd` may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// What bed to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TestbedSpec {
    /// Number of hosts (each a private dockerd).
    pub hosts: usize,
    /// Give each host its own network namespace and address (10.77.S.2).
    pub netns: bool,
    /// Also start an etcd.
    pub etcd: bool,
}

impl Default for TestbedSpec {
    /// One namespaced host, no etcd.
    fn default() -> Self {
        TestbedSpec {
            hosts: 1,
            netns: true,
            etcd: false,
        }
    }
}

/// The pipe to the supervisor: commands go to its stdin, replies come from its stdout.
struct Control {
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    /// Set once a reply timed out: later replies could no longer be matched to commands.
    broken: Option<String>,
}

impl Control {
    /// Sends one command line and waits for its `ok [VALUE]` (returning VALUE) or `err MSG`.
    fn send(&mut self, command: &str, timeout: Duration) -> Result<String> {
        if let Some(why) = &self.broken {
            bail!("the test bed's control channel is unusable: {why}");
        }
        let stdin = self
            .stdin
            .as_mut()
            .context("the test bed is shutting down")?;
        writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .context("sending a command to busbar-testbed")?;
        let line = match self.replies.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                self.broken = Some(format!("`{command}` got no answer within {timeout:?}"));
                bail!("busbar-testbed did not answer `{command}` within {timeout:?}");
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("busbar-testbed exited before answering `{command}`")
            }
        };
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("ok", value) => Ok(value.to_string()),
            ("err", message) => bail!("busbar-testbed: `{command}` failed: {message}"),
            _ => bail!("busbar-testbed answered `{command}` with {line:?}"),
        }
    }
}

/// A running test bed: N private Docker engines ("hosts"), optionally each in its own network
/// namespace, and optionally an etcd. Dropping it tears everything down.
pub struct Testbed {
    info: BedInfo,
    hosts: Vec<Host>,
    child: Mutex<Child>,
    control: Arc<Mutex<Control>>,
    startup_time: Duration,
}

impl Testbed {
    /// Starts a bed and waits (at most [`START_TIMEOUT`]) until all of it is ready.
    pub fn start(spec: TestbedSpec) -> Result<Testbed> {
        let t0 = Instant::now();
        let bin = supervisor_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--hosts", &spec.hosts.to_string()]);
        if spec.netns {
            cmd.arg("--netns");
        }
        if spec.etcd {
            cmd.arg("--etcd");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let replies = read_lines(child.stdout.take().context("the supervisor's stdout")?);
        let info = match replies.recv_timeout(START_TIMEOUT) {
            Ok(line) => parse_start_reply(&line),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!(
                "busbar-testbed did not report ready within {START_TIMEOUT:?}"
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err(anyhow!("busbar-testbed exited without describing the bed"))
            }
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                drop(stdin); // lets it abort and clean up
                let status = wait_with_deadline(&mut child, TEARDOWN_TIMEOUT)
                    .ok()
                    .flatten();
                let status = status.map_or("did not exit; killed".to_string(), |s| s.to_string());
                return Err(e.context(format!(
                    "starting a test bed {spec:?} (supervisor: {status})"
                )));
            }
        };
        let control = Arc::new(Mutex::new(Control {
            stdin,
            replies,
            broken: None,
        }));
        let hosts = info
            .hosts
            .iter()
            .map(|h| Host {
                info: h.clone(),
                control: Arc::clone(&control),
            })
            .collect();
        Ok(Testbed {
            info,
            hosts,
            child: Mutex::new(child),
            control,
            startup_time: t0.elapsed(),
        })
    }

    /// One bed per test binary, started on first use and shared by its tests: one namespaced
    /// host, no etcd. Panics if it cannot be started. It is never dropped: the supervisor
    /// tears it down when the test process exits and its stdin closes.
    pub fn shared() -> &'static Testbed {
        Testbed::shared_with(TestbedSpec::default())
    }

    /// Like [`Testbed::shared`], one bed per distinct `spec`.
    pub fn shared_with(spec: TestbedSpec) -> &'static Testbed {
        static BEDS: OnceLock<Mutex<HashMap<TestbedSpec, &'static Testbed>>> = OnceLock::new();
        let beds = BEDS.get_or_init(Default::default);
        let mut beds = beds.lock().unwrap_or_else(|e| e.into_inner());
        beds.entry(spec).or_insert_with(|| {
            let bed = Testbed::start(spec)
                .unwrap_or_else(|e| panic!("could not start the shared test bed: {e:#}"));
            Box::leak(Box::new(bed))
        })
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name` (`h1`, `h2`, ...). Panics if there is none.
    #[track_caller]
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .unwrap_or_else(|| panic!("the test bed has no host {name:?}"))
    }

    /// etcd's client URL from the root namespace (`http://127.0.0.1:PORT`), if the bed has one.
    /// From inside a host use [`Host::etcd_url`].
    pub fn etcd(&self) -> Option<&str> {
        self.info.etcd.as_deref()
    }

    /// Stops the bed's etcd (SIGTERM, then SIGKILL if it lingers): an etcd outage. Its
    /// clients see connections refused until [`Testbed::start_etcd`].
    pub fn stop_etcd(&self) -> Result<()> {
        self.send("stop-etcd").map(|_| ())
    }

    /// Starts the stopped etcd again on the same ports (so the same URLs) with the same data
    /// directory, and waits until it is healthy. Keys survive; leases too (etcd renews every
    /// lease it finds at start, so one whose holder is gone expires a TTL later).
    pub fn start_etcd(&self) -> Result<()> {
        self.send("start-etcd").map(|_| ())
    }

    fn send(&self, command: &str) -> Result<String> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.send(command, COMMAND_TIMEOUT)
    }

    /// The bed's private directory (removed on teardown).
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.info.supervisor_pid
    }

    /// The supervisor's description of the bed.
    pub fn info(&self) -> &BedInfo {
        &self.info
    }

    /// How long [`Testbed::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }
}

impl Drop for Testbed {
    /// Closes the supervisor's stdin (it tears the bed down) and waits, at most
    /// [`TEARDOWN_TIMEOUT`], for it to exit.
    fn drop(&mut self) {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        drop(control.stdin.take());
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match wait_with_deadline(&mut child, TEARDOWN_TIMEOUT) {
            Ok(Some(_)) => {}
            Ok(None) => eprintln!(
                "busbar-testbed {} did not finish its teardown in {TEARDOWN_TIMEOUT:?}; killed it",
                self.info.supervisor_pid
            ),
            Err(e) => eprintln!("waiting for busbar-testbed: {e:#}"),
        }
    }
}

/// One host of a bed: a private dockerd, possibly in its own network namespace.
pub struct Host {
    info: HostInfo,
    control: Arc<Mutex<Control>>,
}

impl Host {
    /// `h1`, `h2`, ...
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn docker_sock(&self) -> &Path {
        &self.info.docker_sock
    }

    /// `unix:///tmp/bbt-.../hN/docker.sock`, for `docker -H`.
    pub fn docker_url(&self) -> String {
        format!("unix://{}", self.info.docker_sock.display())
    }

    /// The host's own address (inside its namespace), if it has a namespace.
    pub fn addr(&self) -> Option<IpAddr> {
        self.info.addr
    }

    /// The root namespace's address on the host's link: how the host reaches the root
    /// namespace (processes started there by the test, etcd).
    pub fn gateway_addr(&self) -> Option<IpAddr> {
        self.info.gateway_addr
    }

    /// The host's network namespace (`bbtS`), if it has one.
    pub fn netns(&self) -> Option<&str> {
        self.info.netns.as_deref()
    }

    /// etcd's client URL as reachable from inside this host, if the bed has an etcd.
    pub fn etcd_url(&self) -> Option<&str> {
        self.info.etcd.as_deref()
    }

    /// The host's directory (engine data, socket, dockerd.log).
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// The supervisor's description of the host.
    pub fn info(&self) -> &HostInfo {
        &self.info
    }

    /// Stops the engine (SIGTERM, then SIGKILL if it lingers); its socket stops answering.
    /// Like any dockerd, it first stops its running containers, each with its stop timeout
    /// (10 s by default, and a busybox `sh` or `sleep` as pid 1 ignores SIGTERM): run
    /// containers with `--stop-timeout 1` (or `--init`) to keep this quick.
    pub fn stop_engine(&self) -> Result<()> {
        self.send("stop-engine").map(|_| ())
    }

    /// Starts the stopped engine again, same data and socket, and waits until it answers.
    pub fn start_engine(&self) -> Result<()> {
        self.send("start-engine").map(|_| ())
    }

    /// Crashes the engine: SIGKILL for dockerd (its containerd dies with it); shims and
    /// containers keep running, as after a real crash. [`Host::start_engine`] recovers it,
    /// and (no live-restore) stops those containers while starting, with their stop timeout.
    pub fn kill_engine(&self) -> Result<()> {
        self.send("kill-engine").map(|_| ())
    }

    /// Takes the host's link down: it can no longer reach, or be reached from, anything
    /// outside its namespace. Only for namespaced hosts.
    pub fn disconnect(&self) -> Result<()> {
        self.send("disconnect").map(|_| ())
    }

    /// Undoes [`Host::disconnect`].
    pub fn reconnect(&self) -> Result<()> {
        self.send("reconnect").map(|_| ())
    }

    /// The running dockerd's pid (`Err` when it is stopped).
    pub fn engine_pid(&self) -> Result<u32> {
        let pid = self.send("pid")?;
        pid.parse()
            .with_context(|| format!("busbar-testbed sent pid {pid:?}"))
    }

    fn send(&self, verb: &str) -> Result<String> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.send(&format!("{verb} {}", self.info.name), COMMAND_TIMEOUT)
    }

    /// A command that runs `program` inside the host's network namespace (via
    /// `nsenter --net=...`), or plainly if the host has none. Add arguments as usual.
    pub fn command_in(&self, program: impl AsRef<OsStr>) -> Command {
        match self.netns() {
            Some(ns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/var/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// [`crate::docker`] against this host's engine.
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> Output {
        docker(&self.docker_url(), args)
    }

    /// [`crate::docker_ok`] against this host's engine.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        docker_ok(&self.docker_url(), args)
    }
}

/// The `busbar-testbed` binary: `$BUSBAR_TESTBED_BIN`, or next to the running test executable
/// (`target/debug/deps/TEST-HASH` -> `target/debug/busbar-testbed`).
pub fn supervisor_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BUSBAR_TESTBED_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("busbar-testbed"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "the busbar-testbed binary is not built (looked for {candidates:?}); run `cargo build --workspace --bins` \
             (or set BUSBAR_TESTBED_BIN)"
        )
    })
}

/// Reads `pipe` line by line on a thread; the channel closes at end-of-file.
fn read_lines(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn parse_start_reply(line: &str) -> Result<BedInfo> {
    match serde_json::from_str::<StartReply>(line) {
        Ok(StartReply::Ready(info)) => Ok(info),
        Ok(StartReply::Failed { error }) => {
            Err(anyhow!("busbar-testbed could not start the bed: {error}"))
        }
        Err(e) => Err(anyhow!(
            "busbar-testbed printed {line:?} instead of the bed's description: {e}"
        )),
    }
}
