//! `busbar-simnodes`: N SIMULATED busbar agents in one process, for scale benchmarks of the
//! gateway (`busbar-scalebench`). No Docker engine is involved.
//!
//! ```text
//! busbar-simnodes --count N --ca-dir D --base-port P [--containers 30] [--watch-stdin]
//! ```
//!
//! Simulated node `i` (0 ≤ i < N) is named `sim{i}` and serves the agent's gRPC service
//! (`busbar.agent.v1.Agent`, `proto/proto/busbar/agent/v1/agent.proto`) on `127.0.0.1:(P+i)`.
//! What is real and what is simulated:
//!
//! - **Real**: the wire. Each node has its own certificate `sim{i}` (role agent), issued at
//!   startup into `D` by the cluster CA there (`busbar_tls::pki`; the CA is created if
//!   `D` has none), and serves with `busbar_tls::server_config(.., Role::Gateway)`: TLS
//!   1.3, ALPN h2, and only a client with a gateway certificate from that CA gets through the
//!   handshake, exactly as a real agent. The accept loop and the tonic server settings
//!   (HTTP/2 keepalives, message size limit) are those of `busbar_agent::cluster::grpc::serve`, which
//!   cannot be reused as is because it takes the real agent's service.
//! - **Simulated**: the engine behind each node. `Describe` answers `engine_reachable = true`
//!   with synthetic `/version` and `/info` documents (Docker 20.10.24, API 1.41, 1 CPU, 1 GiB,
//!   `--containers` containers, label `busbar.simulated=true`) and a chain status (etcd
//!   revision 1, scope `global`). `Exchange` answers, in the frame
//!   protocol of the real agent (head, data, eof), `GET /_ping`, `/info`, `/version` and
//!   `/containers/json` (with or without `all=1`) from documents serialized once at startup
//!   (see `scale/docs.rs`), `GET /events` as an engine where nothing happens (the head, then
//!   silence until the gateway leaves), and `404 page not found` to anything else. There are no adapter
//!   chains and no engine round trip: a simulated node answers as fast as a node possibly can,
//!   so what a benchmark sees is the cost of the gateway, the gRPC hop and the simulator's own
//!   CPU (which runs on the same machine).
//!
//! All N servers run in one tokio runtime. It prints `ready N 127.0.0.1:P-LAST` on stdout once
//! every port is bound, then serves until SIGINT/SIGTERM, or, with `--watch-stdin`, until its
//! stdin closes (so it never outlives the benchmark that started it).
//!
//! It needs about 2 file descriptors per node (a listener and the gateway's connection) plus a
//! few: `ulimit -n` must be at least 2·N + 64; it checks and says so before binding.

#[path = "../scale/docs.rs"]
mod docs;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use busbar_agent::cluster::grpc::read_head;
use busbar_hop::v1::agent_server::{Agent, AgentServer};
use busbar_hop::v1::exchange_frame::Frame;
use busbar_hop::v1::{DescribeRequest, Eof, ExchangeFrame, Head, Header, NodeDescription};
use busbar_tls::pki::{CertDir, IssueRequest};
use busbar_tls::{server_config, Role};
use clap::Parser;
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

/// The real agent's limit on a decoded message (`4 * exchange::MAX_CHUNK`).
const MAX_MESSAGE: usize = 4 * busbar_hop::frames::MAX_CHUNK;
/// How long a TLS handshake may take (as the real agent).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// N simulated busbar agents (no engine behind them) in one process.
#[derive(Debug, Parser)]
#[command(name = "busbar-simnodes")]
struct Cli {
    /// How many simulated nodes.
    #[arg(long)]
    count: usize,
    /// The cluster CA directory (ca.pem, ca-key.pem; created if missing). Each node's
    /// certificate sim{i}.pem / sim{i}-key.pem is issued there.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Node i listens on 127.0.0.1:(base-port + i).
    #[arg(long)]
    base_port: u16,
    /// Containers per simulated node.
    #[arg(long, default_value_t = 30)]
    containers: usize,
    /// Exit when stdin reaches end of file (for a parent that holds the pipe).
    #[arg(long)]
    watch_stdin: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbar-simnodes: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    if cli.count == 0 {
        bail!("--count must be at least 1");
    }
    let last = usize::from(cli.base_port) + cli.count - 1;
    if last > usize::from(u16::MAX) {
        bail!(
            "--base-port {} + --count {} goes past port 65535",
            cli.base_port,
            cli.count
        );
    }
    check_fd_limit(cli.count)?;

    let started = Instant::now();
    let certs = CertDir::new(&cli.ca_dir);
    if !certs.ca_cert().exists() {
        certs.init_ca(false).context("creating the cluster CA")?;
    }
    let names: Vec<String> = (0..cli.count).map(|i| format!("sim{i}")).collect();
    issue_all(&certs, &names)?;
    let issued = started.elapsed();

    let nodes: Vec<(Arc<SimNode>, Arc<rustls::ServerConfig>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let port = cli.base_port + u16::try_from(i).expect("checked against 65535 above");
            let tls = server_config(&certs.tls_files(name), Role::Gateway)
                .with_context(|| format!("TLS configuration of {name}"))?;
            Ok((Arc::new(SimNode::new(i, name, port, cli.containers)), tls))
        })
        .collect::<Result<_>>()?;

    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut listeners = Vec::with_capacity(nodes.len());
        for (node, _) in &nodes {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, node.port));
            let listener = TcpListener::bind(addr).await.with_context(|| format!("{}: binding {addr}", node.name))?;
            listeners.push(listener);
        }
        let shutdown = CancellationToken::new();
        for ((node, tls), listener) in nodes.into_iter().zip(listeners) {
            tokio::spawn(serve(listener, tls, node, shutdown.clone()));
        }
        eprintln!(
            "busbar-simnodes: {} SIMULATED nodes ({} containers each) on 127.0.0.1:{}-{last}; certificates issued in {:.1}s, ready in {:.1}s",
            cli.count,
            cli.containers,
            cli.base_port,
            issued.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        println!("ready {} 127.0.0.1:{}-{last}", cli.count, cli.base_port);
        wait_for_end(cli.watch_stdin).await;
        shutdown.cancel();
        Ok(())
    })
}

/// Issues `names` (role agent) with the CA in `certs`, replacing older ones, on every CPU.
fn issue_all(certs: &CertDir, names: &[String]) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<()> {
                    for name in part {
                        let req = IssueRequest {
                            name: name.clone(),
                            role: Role::Agent,
                            sans: vec![],
                            days: 1,
                            force: true,
                        };
                        certs
                            .issue(&req)
                            .with_context(|| format!("issuing the certificate of {name}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("an issuing thread panicked"))
    })
}

/// Fails, saying what to do, when the soft limit on open files is below what N nodes need.
fn check_fd_limit(count: usize) -> Result<()> {
    let need = 2 * count as u64 + 64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    match soft {
        Some(soft) if soft < need => bail!(
            "{count} nodes need about {need} file descriptors and `ulimit -n` is {soft}: \
             run me as `sh -c 'ulimit -n {need} && exec busbar-simnodes ...'`"
        ),
        _ => Ok(()),
    }
}

/// Until SIGINT or SIGTERM, or (with `watch_stdin`) until stdin closes.
async fn wait_for_end(watch_stdin: bool) {
    let stdin_closed = async {
        if !watch_stdin {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
}

/// The accept loop and server of `busbar_agent::cluster::grpc::serve`, around a simulated service.
async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: Arc<SimNode>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(16);
    let accept_shutdown = shutdown.clone();
    let name = node.name.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = accept_shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("busbar-simnodes: {name}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, name) = (acceptor.clone(), tx.clone(), name.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => {
                        eprintln!("busbar-simnodes: {name}: TLS handshake from {peer} refused: {e}")
                    }
                    Err(_) => {
                        eprintln!("busbar-simnodes: {name}: TLS handshake from {peer} timed out")
                    }
                }
            });
        }
    });
    let name = node.name.clone();
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(AgentServer::new(SimAgent { node }).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown.cancelled())
        .await;
    if let Err(e) = result {
        eprintln!("busbar-simnodes: {name}: gRPC server ended: {e}");
    }
}

/// One simulated node: its identity and the bodies it answers with.
struct SimNode {
    name: String,
    port: u16,
    docs: docs::NodeDocs,
}

impl SimNode {
    fn new(index: usize, name: &str, port: u16, containers: usize) -> SimNode {
        SimNode {
            name: name.to_owned(),
            port,
            docs: docs::node_docs(index, name, containers),
        }
    }

    /// The simulated engine's answer to `method path_and_query`: status, content type, body.
    fn answer(&self, method: &str, path_and_query: &str) -> (u16, &'static str, &[u8]) {
        const JSON: &str = "application/json";
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let path = strip_version(path);
        let get = method == "GET" || method == "HEAD";
        match path {
            "/_ping" if get => (200, "text/plain; charset=utf-8", b"OK"),
            "/info" if get => (200, JSON, &self.docs.info),
            "/version" if get => (200, JSON, &self.docs.version),
            "/containers/json" if get => {
                let all = query
                    .split('&')
                    .any(|kv| matches!(kv, "all=1" | "all=true" | "all=True"));
                (
                    200,
                    JSON,
                    if all {
                        &self.docs.containers_all
                    } else {
                        &self.docs.containers_running
                    },
                )
            }
            _ => (404, JSON, b"{\"message\":\"page not found\"}\n"),
        }
    }
}

/// Whether `path_and_query` is `GET /events` (any version, any query).
fn is_events(path_and_query: &str) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    strip_version(path) == "/events"
}

/// `/v1.41/info` -> `/info`; a path without a version is returned as is.
fn strip_version(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/v") else {
        return path;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        &rest[end..]
    } else {
        path
    }
}

fn frame(frame: Frame) -> Result<ExchangeFrame, Status> {
    Ok(ExchangeFrame { frame: Some(frame) })
}

fn header(name: &str, value: impl Into<Vec<u8>>) -> Header {
    Header {
        name: name.to_owned(),
        value: value.into(),
    }
}

/// The gRPC service of one simulated node.
struct SimAgent {
    node: Arc<SimNode>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<ExchangeFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for SimAgent {
    type ExchangeStream = FrameStream;
    type LaneStream = FrameStream;

    /// No lanes: a simulated node answers as an agent older than lanes, and gateways use one
    /// `Exchange` call per exchange with it.
    async fn lane(
        &self,
        _: tonic::Request<Streaming<ExchangeFrame>>,
    ) -> Result<tonic::Response<FrameStream>, Status> {
        Err(Status::unimplemented("a simulated node has no lanes"))
    }

    async fn exchange(
        &self,
        request: tonic::Request<Streaming<ExchangeFrame>>,
    ) -> Result<tonic::Response<FrameStream>, Status> {
        // The head comes as the real agent reads it: as metadata, or as the first frame.
        let (metadata, _, mut frames) = request.into_parts();
        let (head, _) = read_head(&metadata, &mut frames).await?;
        // The rest of the request (its end, or a body) is read and dropped, as the real agent
        // routes it to the engine.
        tokio::spawn(async move { while let Ok(Some(_)) = frames.message().await {} });
        if head.method == "GET" && is_events(&head.path_and_query) {
            // An engine where nothing happens: the stream's head, then nothing, until the
            // gateway leaves (the gateway's list cache follows every node's events).
            let head = frame(Frame::Head(Head {
                method: String::new(),
                path_and_query: String::new(),
                status: 200,
                headers: vec![
                    header("api-version", docs::API_VERSION),
                    header("content-type", "application/json"),
                    header("server", format!("Docker/{} (linux)", docs::ENGINE_VERSION)),
                ],
            }));
            let stream = tokio_stream::StreamExt::chain(
                tokio_stream::iter(vec![head]),
                futures_util::stream::pending(),
            );
            return Ok(tonic::Response::new(Box::pin(stream)));
        }
        let (status, content_type, body) = self.node.answer(&head.method, &head.path_and_query);
        let headers = vec![
            header("api-version", docs::API_VERSION),
            header("content-type", content_type),
            header("docker-experimental", "false"),
            header("ostype", "linux"),
            header("server", format!("Docker/{} (linux)", docs::ENGINE_VERSION)),
            header("content-length", body.len().to_string()),
        ];
        let mut out = vec![frame(Frame::Head(Head {
            method: String::new(),
            path_and_query: String::new(),
            status: status.into(),
            headers,
        }))];
        if head.method != "HEAD" {
            // In chunks, as the real agent sends a body: one frame must fit the message limit.
            out.extend(
                body.chunks(busbar_hop::frames::MAX_CHUNK)
                    .map(|part| frame(Frame::Data(part.to_vec().into()))),
            );
        }
        out.push(frame(Frame::Eof(Eof {})));
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn describe(
        &self,
        _: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<NodeDescription>, Status> {
        Ok(tonic::Response::new(NodeDescription {
            name: self.node.name.clone(),
            labels: [("simulated".to_owned(), "true".to_owned())]
                .into_iter()
                .collect(),
            advertise: format!("127.0.0.1:{}", self.node.port),
            agent_version: format!("{}-simulated", env!("CARGO_PKG_VERSION")),
            engine_reachable: true,
            engine_error: String::new(),
            engine_version_json: self.node.docs.version.clone(),
            engine_info_json: self.node.docs.info.clone(),
            chain_status_json: self.node.docs.chain_status.clone(),
            ..NodeDescription::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let node = SimNode::new(0, "sim0", 1, 30);
        assert_eq!(strip_version("/v1.41/info"), "/info");
        assert_eq!(strip_version("/info"), "/info");
        assert_eq!(strip_version("/volumes"), "/volumes");
        assert_eq!(node.answer("GET", "/v1.41/_ping").2, b"OK");
        assert_eq!(
            node.answer("GET", "/v1.41/containers/json?all=1").2,
            &node.docs.containers_all[..]
        );
        assert_eq!(
            node.answer("GET", "/containers/json").2,
            &node.docs.containers_running[..]
        );
        assert_eq!(node.answer("GET", "/v1.41/images/json").0, 404);
        assert_eq!(node.answer("POST", "/v1.41/info").0, 404);
    }
}
