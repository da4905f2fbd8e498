//! `busbar-relay`: a byte relay, the FLOOR target of `busbar-bench` (not part of busbar).
//!
//! ```text
//! busbar-relay --listen HOST:PORT --to tcp:HOST:PORT|unix:PATH
//! busbar-relay --listen HOST:PORT --to tls:NODE@HOST:PORT --tls-ca F --tls-cert F --tls-key F
//! busbar-relay --listen HOST:PORT --tls-listen --to ... --tls-ca F --tls-cert F --tls-key F
//! ```
//!
//! Every connection accepted on `--listen` is joined to a new connection to `--to`, and bytes
//! are copied both ways until either side closes: no HTTP parsing, no routing. Two of them
//! placed where `busbar-gateway` and `busbar-agent` sit (see the bench's `relay×2` target)
//! cost what any design with two processes on the request's path costs on this machine: the
//! system calls, the wake-ups of a process on another CPU and the copies, and nothing else. It
//! runs on the same tokio runtime as the busbar binaries, with as many workers as their default
//! (`--threads`: half the CPUs, at least one).
//!
//! With TLS (the bench's `relay×2 mTLS` target), the hop between the two is encrypted exactly
//! as busbar's gRPC hop is: the same certificates, busbar's own rustls configurations (TLS 1.3,
//! mutual, roles checked: the first relay presents the gateway's certificate and expects the
//! node `NODE`'s, as the gateway does; the second accepts only the gateway role, as an agent
//! does) and the same buffers under TLS ([`busbar_hop::io::Buffered`]). What any design that
//! encrypts the hop with two processes costs here, before a byte of HTTP or gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use busbar_hop::io::buffered;
use busbar_tls::{self as tls, Role, TlsFiles};
use clap::Parser;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The copy buffer in each direction, as large as busbar's body chunks.
const BUFFER: usize = 256 * 1024;

#[derive(Parser)]
#[command(about = "A byte relay: the floor target of busbar-bench (not part of busbar)")]
struct Cli {
    /// Where to accept connections.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to relay them: `tcp:HOST:PORT`, `unix:PATH`, or `tls:NODE@HOST:PORT` (mutual
    /// TLS to the agent-role certificate of NODE, presenting ours).
    #[arg(long)]
    to: String,
    /// Accept TLS on `--listen`, from gateway-role certificates only (as an agent does).
    #[arg(long)]
    tls_listen: bool,
    /// The cluster CA (made by `busbarctl certs init`), for TLS.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Our certificate (made by `busbarctl certs issue`), for TLS.
    #[arg(long, requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// Our certificate's private key, for TLS.
    #[arg(long, requires = "tls_ca")]
    tls_key: Option<PathBuf>,
}

#[derive(Clone)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Tls(SocketAddr, ServerName<'static>, TlsConnector),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let files = match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles::new(ca, cert, key)),
        _ => None,
    };
    let tls_files = || {
        files
            .as_ref()
            .context("TLS needs --tls-ca, --tls-cert and --tls-key")
    };
    let upstream = match cli.to.split_once(':') {
        Some(("tcp", addr)) => Upstream::Tcp(addr.parse().context("--to tcp:HOST:PORT")?),
        Some(("unix", path)) => Upstream::Unix(PathBuf::from(path)),
        Some(("tls", target)) => {
            let (node, addr) = target.split_once('@').context("--to tls:NODE@HOST:PORT")?;
            let config = tls::client_config(tls_files()?, Role::Agent)?;
            Upstream::Tls(
                addr.parse().context("--to tls:NODE@HOST:PORT")?,
                ServerName::try_from(node.to_owned())?,
                TlsConnector::from(config),
            )
        }
        _ => bail!(
            "--to must be tcp:HOST:PORT, unix:PATH or tls:NODE@HOST:PORT, not {:?}",
            cli.to
        ),
    };
    let acceptor = if cli.tls_listen {
        let config = tls::server_config(tls_files()?, Role::Gateway)?;
        Some(TlsAcceptor::from(config))
    } else {
        None
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(busbar_agent::config::default_threads())
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(cli.listen)
                .await
                .with_context(|| format!("binding {}", cli.listen))?;
            loop {
                let (client, _) = listener.accept().await?;
                let _ = client.set_nodelay(true);
                let (upstream, acceptor) = (upstream.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let result = match acceptor {
                        Some(acceptor) => match acceptor.accept(buffered(client)).await {
                            Ok(client) => to_upstream(client, upstream).await,
                            Err(e) => Err(e),
                        },
                        None => to_upstream(client, upstream).await,
                    };
                    if let Err(e) = result {
                        eprintln!("busbar-relay: {e}");
                    }
                });
            }
        })
}

/// Connects to `upstream` and relays `client` to it.
async fn to_upstream(
    client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: Upstream,
) -> std::io::Result<()> {
    match upstream {
        Upstream::Tcp(addr) => relay(client, tcp(addr).await?).await,
        Upstream::Unix(path) => relay(client, UnixStream::connect(path).await?).await,
        Upstream::Tls(addr, name, connector) => {
            let up = connector.connect(name, buffered(tcp(addr).await?)).await?;
            relay(client, up).await
        }
    }
}

async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn relay(
    mut a: impl AsyncRead + AsyncWrite + Unpin,
    mut b: impl AsyncRead + AsyncWrite + Unpin,
) -> std::io::Result<()> {
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER)
        .await
        .map(|_| ())
}
