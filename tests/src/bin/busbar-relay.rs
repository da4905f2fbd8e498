//! `busbar-relay`: a byte relay, the FLOOR target of `busbar-bench` (not part of busbar).
//!
//! ```text
//! busbar-relay --listen HOST:PORT --to tcp:HOST:PORT|unix:PATH
//! ```
//!
//! Every connection accepted on `--listen` is joined to a new connection to `--to`, and bytes
//! are copied both ways until either side closes: no HTTP parsing, no TLS, no routing. Two of
//! them placed where `busbar-gateway` and `busbar-agent` sit (see the bench's `relay×2`
//! target) cost what any design with two processes on the request's path costs on this
//! machine: the system calls, the wake-ups of a process on another CPU and the copies, and
//! nothing else. It runs on the same tokio runtime as the busbar binaries, with as many workers
//! as their default (`--threads`: half the CPUs, at least one).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The copy buffer in each direction, as large as busbar's body chunks.
const BUFFER: usize = 256 * 1024;

#[derive(Parser)]
#[command(about = "A byte relay: the floor target of busbar-bench (not part of busbar)")]
struct Cli {
    /// Where to accept connections.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to relay them: `tcp:HOST:PORT` or `unix:PATH`.
    #[arg(long)]
    to: String,
}

#[derive(Clone)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let upstream = match cli.to.split_once(':') {
        Some(("tcp", addr)) => Upstream::Tcp(addr.parse().context("--to tcp:HOST:PORT")?),
        Some(("unix", path)) => Upstream::Unix(PathBuf::from(path)),
        _ => bail!("--to must be tcp:HOST:PORT or unix:PATH, not {:?}", cli.to),
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
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let result = match upstream {
                        Upstream::Tcp(addr) => match TcpStream::connect(addr).await {
                            Ok(up) => {
                                let _ = up.set_nodelay(true);
                                relay(client, up).await
                            }
                            Err(e) => Err(e),
                        },
                        Upstream::Unix(path) => match UnixStream::connect(path).await {
                            Ok(up) => relay(client, up).await,
                            Err(e) => Err(e),
                        },
                    };
                    if let Err(e) = result {
                        eprintln!("busbar-relay: {e}");
                    }
                });
            }
        })
}

async fn relay(
    mut a: impl AsyncRead + AsyncWrite + Unpin,
    mut b: impl AsyncRead + AsyncWrite + Unpin,
) -> std::io::Result<()> {
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER)
        .await
        .map(|_| ())
}
