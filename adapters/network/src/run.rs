//! The `busbar-network` command: its flags, and the order things start in (etcd, the lease
//! and the node's index, the overlay and the Docker network, the DNS server, the event loop,
//! then the hooks).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use busbar_engine::EngineAddr;
use busbar_etcd::conn::EtcdConnArgs;
use busbar_runtime::backoff::Backoff;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::docker::Docker;
use crate::hooks::NetworkAdapter;
use crate::node::{follow_hosts, follow_names, Node};
use crate::overlay::{self, Overlay};
use crate::pool::Pool;
use crate::store::{HostEntry, Lease, Store, DEFAULT_PREFIX};

/// busbar-network: a cluster network for containers labelled busbar.net=cluster (a Powerstrip
/// adapter; run one on every node, beside its busbar-agent).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "busbar-network", version)]
pub struct Args {
    /// Where to serve the hooks; the chain names it by a loopback URL, so that each agent
    /// calls its own node's adapter.
    #[arg(long, env = "BUSBAR_NETWORK_LISTEN", default_value = "127.0.0.1:7480")]
    pub listen: SocketAddr,
    /// This node's name, as its busbar-agent's (`--node-name`, the certificate's CN).
    #[arg(long, env = "BUSBAR_NETWORK_NODE")]
    pub node: Option<String>,
    /// The node's Docker engine.
    #[arg(
        long,
        env = "BUSBAR_DOCKER",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: EngineAddr,
    #[command(flatten)]
    pub etcd: EtcdConnArgs,
    /// The network's etcd key prefix (its own, beside busbar's).
    #[arg(long, env = "BUSBAR_NETWORK_PREFIX", default_value = DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// The cluster's address pool; every node must be given the same.
    #[arg(long, env = "BUSBAR_NETWORK_POOL", default_value = "10.232.0.0/16")]
    pub pool: Pool,
    /// This node's address on the network between the nodes (the VXLAN tunnels' ends).
    /// Default: the source address of the route toward etcd.
    #[arg(long, env = "BUSBAR_NETWORK_UNDERLAY")]
    pub underlay: Option<Ipv4Addr>,
    /// The VXLAN network identifier.
    #[arg(long, env = "BUSBAR_NETWORK_VNI", default_value_t = 232)]
    pub vni: u32,
    /// The VXLAN UDP port (must be open between the nodes).
    #[arg(long, env = "BUSBAR_NETWORK_VXLAN_PORT", default_value_t = 4789)]
    pub vxlan_port: u16,
    /// Seconds the node's addresses, names and overlay membership outlive a dead adapter.
    #[arg(long, env = "BUSBAR_NETWORK_LEASE_TTL", default_value_t = 10)]
    pub lease_ttl: u64,
    /// Where the adapter keeps its lease id, so that a restart takes the lease back.
    #[arg(
        long,
        env = "BUSBAR_NETWORK_STATE_DIR",
        default_value = "/var/lib/busbar-network"
    )]
    pub state_dir: PathBuf,
    /// The cluster's DNS domain: `web` and `web.DOMAIN` both resolve.
    #[arg(long, env = "BUSBAR_NETWORK_DNS_DOMAIN", default_value = crate::dns::DEFAULT_DOMAIN)]
    pub dns_domain: String,
    /// Resolvers for names outside the cluster (IP or IP:PORT), repeatable; `none` to forward
    /// nothing (answer REFUSED). Default: the nameservers of /etc/resolv.conf.
    #[arg(long, env = "BUSBAR_NETWORK_DNS_UPSTREAM", value_delimiter = ',')]
    pub dns_upstream: Vec<String>,
    /// The command that sends a gratuitous ARP (`-U -c 1 -I eth0 IP` are appended); default
    /// `arping` when on the PATH, else `busybox arping`.
    #[arg(long, env = "BUSBAR_NETWORK_ARPING")]
    pub arping: Option<String>,
    #[arg(long, env = "BUSBAR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The upstream resolvers `--dns-upstream` names (or `/etc/resolv.conf`'s).
fn upstreams(given: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    if given.iter().any(|g| g == "none") {
        return Ok(vec![]);
    }
    if given.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        return Ok(crate::dns::resolv_conf_servers(&text));
    }
    given
        .iter()
        .map(|g| {
            g.parse::<SocketAddr>()
                .or_else(|_| {
                    g.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .with_context(|| format!("--dns-upstream {g:?}: expected IP or IP:PORT"))
        })
        .collect()
}

fn arping_command(given: Option<&str>) -> Vec<String> {
    if let Some(g) = given {
        return g.split_whitespace().map(str::to_owned).collect();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("arping").is_file()))
        .unwrap_or(false);
    if on_path {
        vec!["arping".into()]
    } else {
        vec!["busybox".into(), "arping".into()]
    }
}

/// The source address of this node's route toward `host:port` (an etcd endpoint).
async fn route_source(endpoint: &str) -> anyhow::Result<Ipv4Addr> {
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let target = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .find_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            _ => None,
        })
        .with_context(|| format!("{hostport} has no IPv4 address"))?;
    let out = overlay::run("ip", &["-o", "route", "get", &target.to_string()]).await?;
    let f: Vec<&str> = out.split_whitespace().collect();
    f.iter()
        .position(|w| *w == "src")
        .and_then(|i| f.get(i + 1))
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!("no source address in `ip route get {target}`: {out}; give --underlay")
        })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs the adapter until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node_name = args.node.clone().unwrap_or_else(hostname);
    let etcd = args
        .etcd
        .clone()
        .into_config()?
        .context("--etcd is required: the cluster's addresses live in etcd")?;
    let conn = etcd.connection()?;
    let upstreams = upstreams(&args.dns_upstream)?;
    let arping = arping_command(args.arping.as_deref());
    busbar_etcd::keys::check_prefix(&args.etcd_prefix)?;

    let mut backoff = Backoff::retry();
    let client = loop {
        match busbar_etcd::conn::connect(&conn).await {
            Ok(c) => break c,
            Err(e) if e.refusal().is_some() => return Err(e.into()),
            Err(e) => {
                warn!(error = %e, "etcd does not answer; retrying");
                if !backoff.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    let store = Store::new(client, &args.etcd_prefix, args.pool, &node_name);
    store.check_pool().await?;
    let state_file = args.state_dir.join(format!("lease-{node_name}"));
    let ttl = Duration::from_secs(args.lease_ttl);
    let lease = Lease::start(&store, ttl, Some(state_file), shutdown.clone()).await?;
    let index = store.node_index().await?;
    let gateway = args.pool.gateway(index);
    info!(node = %node_name, index, %gateway, pool = %args.pool, "node index");

    let underlay = match args.underlay {
        Some(ip) => ip,
        None => route_source(&conn.endpoints()[0]).await?,
    };
    let (dev, mtu) = overlay::interface_of(underlay).await?;
    let ov = Overlay {
        vni: args.vni,
        port: args.vxlan_port,
        underlay,
        mtu,
    };
    ov.ensure_links(&dev, gateway).await?;
    let docker = Docker::new(args.docker.clone());
    ensure_network(&docker, args.pool, gateway, ov.inner_mtu(), &shutdown).await?;
    ov.ensure_links(&dev, gateway).await?;
    info!(vxlan = overlay::VXLAN, bridge = overlay::BRIDGE, %underlay, dev, "overlay up");

    let mut node = Node::new(
        store.clone(),
        Some(docker),
        gateway,
        Some(ov.clone()),
        arping,
    );
    node.host = Some(HostEntry { underlay, index });
    node.announce_host().await;
    let node = Arc::new(node);

    tokio::spawn(follow_hosts(store.clone(), ov, shutdown.clone()));
    tokio::spawn(follow_names(
        store.clone(),
        node.names.clone(),
        shutdown.clone(),
    ));
    let dns = bind_dns(gateway, &shutdown).await?;
    tokio::spawn(crate::dns::serve(
        dns,
        node.names.clone(),
        args.dns_domain.clone(),
        upstreams,
        shutdown.clone(),
    ));
    tokio::spawn(node.clone().run_events(lease.renewed, shutdown.clone()));

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    info!(listen = %args.listen, "serving hooks");
    let options = busbar_adapter::server::Options {
        shutdown: shutdown.clone(),
        ..Default::default()
    };
    busbar_adapter::server::serve(listener, NetworkAdapter::new(node), options).await;
    Ok(())
}

/// Creates the node's `busbar` network, or checks the one there; waits for the engine.
async fn ensure_network(
    docker: &Docker,
    pool: Pool,
    gateway: Ipv4Addr,
    mtu: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::retry();
    loop {
        match docker.network(crate::NETWORK).await {
            Ok(Some(doc)) => {
                overlay::network_matches(&doc, pool, gateway)?;
                return Ok(());
            }
            Ok(None) => {
                docker
                    .create_network(&overlay::network_doc(pool, gateway, mtu))
                    .await?;
                info!(%gateway, "created the Docker network busbar");
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, "the Docker engine does not answer; retrying");
                if !backoff.wait(shutdown).await {
                    bail!("stopped while waiting for the Docker engine");
                }
            }
        }
    }
}

/// The DNS socket on the gateway address (which the engine puts on the bridge).
async fn bind_dns(gateway: Ipv4Addr, shutdown: &CancellationToken) -> anyhow::Result<UdpSocket> {
    let mut backoff = Backoff::retry();
    let mut tries = 0;
    loop {
        match UdpSocket::bind((gateway, 53)).await {
            Ok(s) => {
                info!(addr = %format!("{gateway}:53"), "serving DNS");
                return Ok(s);
            }
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, "the gateway address is not up yet");
                if !backoff.wait(shutdown).await {
                    bail!("stopped");
                }
            }
            Err(e) => return Err(e).with_context(|| format!("serving DNS on {gateway}:53")),
        }
    }
}
