//! The targets: what serves the Docker API in each configuration, how it is started, and the
//! guards that stop it (on drop, so also on error).

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use testbed::{free_port, Host};

use super::http::{Conn, Endpoint};

/// How long a busbar process may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `busbarctl` may take to make a certificate.
const CERTS_TIMEOUT: Duration = Duration::from_secs(30);
/// Debian's HAProxy, and its configuration for the `haproxy` peer.
const HAPROXY: &str = "/usr/sbin/haproxy";
const HAPROXY_CFG: &str = include_str!("haproxy.cfg");
/// The node name of the bench's one agent behind the gateway.
const NODE: &str = "h1";

/// The configurations compared, in the order they are reported (the value names are what
/// `busbar-bench --targets` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The engine's own unix socket: the floor every other target is compared to.
    Direct,
    /// `busbar-agent` on loopback TCP in front of the socket.
    Agent,
    /// `busbar-gateway` with its in-process agent (`--docker`).
    GatewayEmbedded,
    /// `busbar-gateway` on loopback, dialing a `busbar-agent` in the host's network namespace
    /// over gRPC with mutual TLS.
    #[value(name = "gateway+agent")]
    GatewayAgent,
    /// `gateway+agent` with the exchanges on lanes (`--hop-lanes on`): long-lived gRPC
    /// streams each carrying one exchange after another.
    #[value(name = "gateway+agent-lanes")]
    GatewayAgentLanes,
    /// `gateway+agent` with one gRPC call per exchange (`--hop-lanes off`): the hop before
    /// lanes, for comparison in the same run.
    #[value(name = "gateway+agent-calls")]
    GatewayAgentCalls,
    /// The floor of `gateway+agent`: two byte relays (`busbar-relay`, not busbar) on the same
    /// path, the first on loopback, the second in the host's network namespace.
    Relays,
    /// The same two relays with the hop between them encrypted as busbar's is (mutual TLS
    /// with busbar's rustls configurations and certificates): what any design that encrypts
    /// the hop with two processes costs, before HTTP or gRPC.
    #[value(name = "relays-mtls")]
    TlsRelays,
    /// A second reference for `gateway+agent`: two `busbar-agent`s on the same path, the first
    /// forwarding to the second in plain HTTP/1 (no gRPC, no TLS: not a deployment anyone
    /// should run across hosts). What busbar's HTTP path costs twice, without the hop's
    /// protocol.
    #[value(name = "agents-http1")]
    AgentChain,
    /// A peer, not busbar: Debian's HAProxy on loopback TCP in front of the socket, configured
    /// as the docker-socket-proxy image configures it (`haproxy.cfg` beside this file). What
    /// the one-hop design users already run costs, against `agent`.
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Direct,
        Kind::Agent,
        Kind::GatewayEmbedded,
        Kind::GatewayAgent,
        Kind::GatewayAgentLanes,
        Kind::GatewayAgentCalls,
        Kind::Relays,
        Kind::TlsRelays,
        Kind::AgentChain,
        Kind::Haproxy,
    ];

    /// What the report says in place of a goal for a reference that is not a busbar
    /// deployment (no goal applies to it).
    pub fn reference(self) -> Option<&'static str> {
        match self {
            Kind::Relays | Kind::TlsRelays => Some("(floor)"),
            Kind::AgentChain => Some("(ref.)"),
            Kind::Haproxy => Some("(peer)"),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Agent => "agent",
            Kind::GatewayEmbedded => "gateway-embedded",
            Kind::GatewayAgent => "gateway+agent",
            Kind::GatewayAgentLanes => "gateway+agent lanes",
            Kind::GatewayAgentCalls => "gateway+agent calls",
            Kind::Relays => "relay×2 (floor)",
            Kind::TlsRelays => "relay×2 mTLS (floor)",
            Kind::AgentChain => "agent×2 HTTP/1 (ref.)",
            Kind::Haproxy => "haproxy (peer)",
        }
    }

    /// The path a request takes, for the report.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Direct => "client → engine unix socket",
            Kind::Agent => "client → TCP 127.0.0.1 → busbar-agent → unix socket",
            Kind::GatewayEmbedded => {
                "client → TCP 127.0.0.1 → busbar-gateway (in-process agent) → unix socket"
            }
            Kind::GatewayAgent => {
                "client → TCP 127.0.0.1 → busbar-gateway → gRPC/mTLS over the host's veth → \
                 busbar-agent (host netns) → unix socket"
            }
            Kind::GatewayAgentLanes => {
                "as gateway+agent, the exchanges on lanes (`--hop-lanes on`): long-lived gRPC \
                 streams, one exchange after another"
            }
            Kind::GatewayAgentCalls => {
                "as gateway+agent, one gRPC call per exchange (`--hop-lanes off`): the hop \
                 before lanes"
            }
            Kind::Relays => {
                "client → TCP 127.0.0.1 → busbar-relay → TCP over the host's veth → \
                 busbar-relay (host netns) → unix socket: byte copies only, no HTTP, no TLS"
            }
            Kind::TlsRelays => {
                "client → TCP 127.0.0.1 → busbar-relay → mutual TLS over the host's veth → \
                 busbar-relay (host netns) → unix socket: byte copies and busbar's TLS, no HTTP"
            }
            Kind::AgentChain => {
                "client → TCP 127.0.0.1 → busbar-agent → plain HTTP/1 over the host's veth → \
                 busbar-agent (host netns) → unix socket: busbar's HTTP path twice, no gRPC, no TLS"
            }
            Kind::Haproxy => {
                "client → TCP 127.0.0.1 → HAProxy (docker-socket-proxy's configuration) → unix socket"
            }
        }
    }
}

/// A started target. Its processes are killed when it is dropped.
pub struct Target {
    pub kind: Kind,
    pub endpoint: Endpoint,
    processes: Vec<Process>,
}

impl Target {
    /// The target's processes (for `gateway+agent`, the gateway and the agent).
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }
}

/// A directory for certificates and logs, removed (with its contents) when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(testbed::unique_name("busbar-bench"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped. Its stderr goes to a log file,
/// whose tail is included in errors.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with a clean busbar environment (no `RUST_LOG`, no `BUSBAR_*`), so that
    /// every target runs with its defaults, as an operator would start it.
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Process> {
        let log = dir.join(format!("{name}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BUSBAR_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Fails, with the end of its log, if the process has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts targets against one host of the test bed.
pub struct Launcher<'a> {
    pub host: &'a Host,
    /// Where the busbar binaries are (the bench's own directory, `target/<profile>`).
    pub bin_dir: PathBuf,
    pub work: &'a Path,
}

impl Launcher<'_> {
    /// Why `kind` cannot be measured with what is built, if it cannot.
    pub fn missing(&self, kind: Kind) -> Option<String> {
        let needs: &[&str] = match kind {
            Kind::Direct => &[],
            Kind::Agent => &["busbar-agent"],
            Kind::GatewayEmbedded => &["busbar-gateway"],
            Kind::GatewayAgent | Kind::GatewayAgentLanes | Kind::GatewayAgentCalls => {
                &["busbar-gateway", "busbar-agent", "busbarctl"]
            }
            Kind::Relays => &["busbar-relay"],
            Kind::TlsRelays => &["busbar-relay", "busbarctl"],
            Kind::AgentChain => &["busbar-agent"],
            Kind::Haproxy => {
                return (!Path::new(HAPROXY).is_file())
                    .then(|| format!("{HAPROXY} not installed (Debian's `haproxy`)"));
            }
        };
        let missing: Vec<&str> = needs
            .iter()
            .copied()
            .filter(|b| !self.bin_dir.join(b).is_file())
            .collect();
        (!missing.is_empty()).then(|| format!("not built: {}", missing.join(", ")))
    }

    /// Starts `kind` and waits until it serves `/_ping` and a request the engine must answer.
    pub fn start(&self, kind: Kind) -> Result<Target> {
        let (endpoint, mut processes) = match kind {
            Kind::Direct => (
                Endpoint::Unix(self.host.docker_sock().to_path_buf()),
                vec![],
            ),
            Kind::Agent => self.agent()?,
            Kind::GatewayEmbedded => self.gateway_embedded()?,
            Kind::GatewayAgent => self.gateway_agent(None)?,
            Kind::GatewayAgentLanes => self.gateway_agent(Some(true))?,
            Kind::GatewayAgentCalls => self.gateway_agent(Some(false))?,
            Kind::Relays => self.relays(false)?,
            Kind::TlsRelays => self.relays(true)?,
            Kind::AgentChain => self.agent_chain()?,
            Kind::Haproxy => self.haproxy()?,
        };
        for path in ["/_ping", "/v1.41/version"] {
            wait_ready(&endpoint, &mut processes, path)
                .with_context(|| format!("starting target {}", kind.name()))?;
        }
        Ok(Target {
            kind,
            endpoint,
            processes,
        })
    }

    /// The address of the test bed's host in its network namespace.
    fn host_addr(&self) -> Result<IpAddr> {
        self.host
            .addr()
            .context("the host has no network namespace address")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn engine_url(&self) -> String {
        self.host.docker_url()
    }

    /// `busbar-agent --docker SOCKET --listen tcp://127.0.0.1:PORT`, in the root namespace.
    fn agent(&self) -> Result<(Endpoint, Vec<Process>)> {
        let port = free_port();
        let mut cmd = Command::new(self.bin("busbar-agent"));
        cmd.args([
            "--docker",
            &self.engine_url(),
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
        ]);
        let process = Process::spawn("agent", cmd, self.work)?;
        Ok((loopback(port), vec![process]))
    }

    /// `busbar-gateway --docker SOCKET --listen tcp://127.0.0.1:PORT`: the in-process agent.
    fn gateway_embedded(&self) -> Result<(Endpoint, Vec<Process>)> {
        let port = free_port();
        let mut cmd = Command::new(self.bin("busbar-gateway"));
        cmd.args([
            "--docker",
            &self.engine_url(),
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
        ]);
        let process = Process::spawn("gateway-embedded", cmd, self.work)?;
        Ok((loopback(port), vec![process]))
    }

    /// An agent inside the host's network namespace, serving gRPC with mutual TLS on the host's
    /// address, and a gateway on 127.0.0.1 in the root namespace dialing it: the request crosses
    /// a real (veth) link, as it would between two machines.
    /// `lanes`: the gateway's `--hop-lanes` (`on`, `off`), or its default (no flag).
    fn gateway_agent(&self, lanes: Option<bool>) -> Result<(Endpoint, Vec<Process>)> {
        let suffix = match lanes {
            None => "",
            Some(true) => "-lanes",
            Some(false) => "-calls",
        };
        let host_addr = self.host_addr()?;
        let pki = self.pki(host_addr)?;

        let grpc = SocketAddr::new(host_addr, free_port());
        let mut cmd = self.host.command_in(self.bin("busbar-agent"));
        cmd.args([
            "--docker",
            &self.engine_url(),
            "--grpc-listen",
            &grpc.to_string(),
            "--node-name",
            NODE,
        ]);
        tls_identity(&mut cmd, &pki, NODE);
        let mut agent = Process::spawn(&format!("netns-agent{suffix}"), cmd, self.work)?;
        wait_listening(grpc, &mut agent).context("waiting for the agent's gRPC port")?;

        let port = free_port();
        let mut cmd = Command::new(self.bin("busbar-gateway"));
        cmd.args([
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
            "--agent",
            &format!("{NODE}={grpc}"),
        ]);
        tls_identity(&mut cmd, &pki, "gateway");
        if let Some(on) = lanes {
            cmd.args(["--hop-lanes", if on { "on" } else { "off" }]);
        }
        let gateway = Process::spawn(&format!("gateway{suffix}"), cmd, self.work)?;
        Ok((loopback(port), vec![gateway, agent]))
    }

    /// `haproxy -db -f haproxy.cfg` on loopback in front of the socket, with the image's
    /// settings (see `haproxy.cfg`), in the foreground.
    fn haproxy(&self) -> Result<(Endpoint, Vec<Process>)> {
        let port = free_port();
        let cfg = self.work.join("haproxy.cfg");
        std::fs::write(&cfg, HAPROXY_CFG).with_context(|| format!("writing {}", cfg.display()))?;
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .env("SOCKET_PATH", self.host.docker_sock())
            .env("BIND_CONFIG", format!("127.0.0.1:{port}"));
        let process = Process::spawn("haproxy", cmd, self.work)?;
        Ok((loopback(port), vec![process]))
    }

    /// Two `busbar-relay`s where `gateway_agent` puts the gateway and the agent; with `tls`,
    /// the hop between them is mutual TLS with the gateway's and the agent's certificates.
    fn relays(&self, tls: bool) -> Result<(Endpoint, Vec<Process>)> {
        let host_addr = self.host_addr()?;
        let inner = SocketAddr::new(host_addr, free_port());
        let mut second = self.host.command_in(self.bin("busbar-relay"));
        second.args([
            "--listen",
            &inner.to_string(),
            "--to",
            &format!("unix:{}", self.host.docker_sock().display()),
        ]);
        let port = free_port();
        let mut first = Command::new(self.bin("busbar-relay"));
        first.args(["--listen", &format!("127.0.0.1:{port}")]);
        if !tls {
            first.args(["--to", &format!("tcp:{inner}")]);
            return self.pair(("netns-relay", second, inner), ("relay", first, port));
        }
        let pki = self.pki(host_addr)?;
        second.arg("--tls-listen");
        tls_identity(&mut second, &pki, NODE);
        first.args(["--to", &format!("tls:{NODE}@{inner}")]);
        tls_identity(&mut first, &pki, "gateway");
        self.pair(
            ("netns-tls-relay", second, inner),
            ("tls-relay", first, port),
        )
    }

    /// Two agents where `gateway_agent` puts the gateway and the agent, the first forwarding
    /// to the second in plain HTTP/1 (`--allow-remote-plaintext`: it listens on the host's
    /// address).
    fn agent_chain(&self) -> Result<(Endpoint, Vec<Process>)> {
        let inner = SocketAddr::new(self.host_addr()?, free_port());
        let mut second = self.host.command_in(self.bin("busbar-agent"));
        second.args([
            "--docker",
            &self.engine_url(),
            "--listen",
            &format!("tcp://{inner}"),
            "--allow-remote-plaintext",
        ]);
        let port = free_port();
        let mut first = Command::new(self.bin("busbar-agent"));
        first.args([
            "--docker",
            &format!("tcp://{inner}"),
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
        ]);
        self.pair(
            ("netns-agent-http", second, inner),
            ("agent-http", first, port),
        )
    }

    /// Starts the second process of a two-process path (in the host's namespace, listening
    /// on its address), waits until it listens, then the first (on loopback `port`).
    fn pair(
        &self,
        (second_name, second, inner): (&str, Command, SocketAddr),
        (first_name, first, port): (&str, Command, u16),
    ) -> Result<(Endpoint, Vec<Process>)> {
        let mut second = Process::spawn(second_name, second, self.work)?;
        wait_listening(inner, &mut second).with_context(|| format!("waiting for {second_name}"))?;
        let first = Process::spawn(first_name, first, self.work)?;
        Ok((loopback(port), vec![first, second]))
    }

    /// The directory of the bench's cluster CA, the agent's certificate (valid for the host's
    /// address) and the gateway's, made with `busbarctl` as an operator would, on first use.
    fn pki(&self, host_addr: IpAddr) -> Result<PathBuf> {
        let dir = self.work.join("pki");
        if dir.join("gateway.pem").is_file() {
            return Ok(dir);
        }
        let dir_s = dir.display().to_string();
        let addr_s = host_addr.to_string();
        let runs: [&[&str]; 3] = [
            &["certs", "init", "--dir", &dir_s],
            &[
                "certs", "issue", "--dir", &dir_s, "--name", NODE, "--role", "agent", "--san",
                &addr_s,
            ],
            &[
                "certs", "issue", "--dir", &dir_s, "--name", "gateway", "--role", "gateway",
            ],
        ];
        for args in runs {
            let mut cmd = Command::new(self.bin("busbarctl"));
            cmd.args(args);
            testbed::cmd::run_ok(&mut cmd, CERTS_TIMEOUT)?;
        }
        Ok(dir)
    }
}

/// `--tls-ca`, `--tls-cert` and `--tls-key` for `name`'s certificate in `pki`.
fn tls_identity(cmd: &mut Command, pki: &Path, name: &str) {
    let pem = |file: String| pki.join(file).display().to_string();
    cmd.args(["--tls-ca", &pem("ca.pem".into())]);
    cmd.args(["--tls-cert", &pem(format!("{name}.pem"))]);
    cmd.args(["--tls-key", &pem(format!("{name}-key.pem"))]);
}

fn loopback(port: u16) -> Endpoint {
    Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Waits until `GET path` on `endpoint` answers 200, failing early if a process exits.
fn wait_ready(endpoint: &Endpoint, processes: &mut [Process], path: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = anyhow!("not tried");
    while Instant::now() < deadline {
        for p in processes.iter_mut() {
            p.check_running()?;
        }
        match Conn::new(endpoint.clone()).get(path) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => {
                last = anyhow!(
                    "GET {path}: {status} {}",
                    String::from_utf8_lossy(&body).trim()
                )
            }
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = processes
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail()))
        .collect();
    Err(last.context(format!(
        "{endpoint} not ready within {START_TIMEOUT:?}\n{}",
        logs.join("\n")
    )))
}

/// Waits until `addr` accepts TCP connections, failing early if `process` exits.
fn wait_listening(addr: SocketAddr, process: &mut Process) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        process.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "nothing listens on {addr} after {START_TIMEOUT:?}; {}'s log:\n{}",
        process.name,
        process.log_tail()
    )
}
