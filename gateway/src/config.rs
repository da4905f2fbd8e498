//! `busbar-gateway` flags -> [`Config`] (pure: nothing here touches the network or files).

use clap::Parser;

use busbar_agent::config::{seconds, Config as LocalConfig, ConfigError, LocalArgs};
use busbar_etcd::conn::{EtcdConfig, EtcdConfigError, EtcdConnArgs};
use busbar_tls::{PartialTls, TlsArgs, TlsFiles};

use crate::cluster::HealthOptions;
use crate::schedule::Strategy;

/// busbar-gateway: serves the Docker API and carries every call to a busbar agent over gRPC
/// with mutual TLS. With no --agent it runs an agent in-process on --docker: the
/// single-machine default.
#[derive(Debug, Parser)]
#[command(name = "busbar-gateway", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub local: LocalArgs,

    /// An agent to serve: [NODE=]HOST:PORT. NODE is the name in the agent's certificate
    /// (default: HOST), checked during the TLS handshake. Repeatable: one agent is served as
    /// is (a remote engine); several are served as one cluster.
    #[arg(long = "agent", env = "BUSBAR_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,

    // etcd (--etcd URLS, its TLS and user): serve every agent registered there, as one
    // cluster.
    #[command(flatten)]
    pub etcd: EtcdConnArgs,

    /// The etcd key prefix of this cluster.
    #[arg(long, env = "BUSBAR_ETCD_PREFIX", default_value = "/busbar")]
    pub etcd_prefix: String,

    /// Where new containers go: spread (default), binpack or random.
    #[arg(long, env = "BUSBAR_STRATEGY", default_value = "spread")]
    pub strategy: String,

    /// Seconds between health probes of each node.
    #[arg(long, env = "BUSBAR_PROBE_INTERVAL", default_value_t = 3.0)]
    pub probe_interval: f64,

    /// Seconds a node has to answer a probe before it is marked unhealthy.
    #[arg(long, env = "BUSBAR_PROBE_TIMEOUT", default_value_t = 3.0)]
    pub probe_timeout: f64,

    /// Answer `docker ps` (`GET /containers/json`) by asking every node, as before the
    /// list cache: by default it is answered from a cache each node's events keep current.
    #[arg(long, env = "BUSBAR_LIST_LIVE")]
    pub list_live: bool,

    /// Seconds between full lists of each node's containers by the list cache (events keep
    /// it current in between).
    #[arg(long, env = "BUSBAR_LIST_RESYNC", default_value_t = 30.0)]
    pub list_resync: f64,

    /// Seconds of the recent window of the status page and `busbarctl status`: the calls,
    /// errors and refusals of each adapter, and the requests by status class, in the last
    /// SECS (beside the totals since start).
    #[arg(
        long,
        env = "BUSBAR_STATUS_WINDOW",
        default_value_t = 300.0,
        value_name = "SECS"
    )]
    pub status_window: f64,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Carry exchanges to agents on lanes, long-lived gRPC streams that each carry one exchange
    /// after another (on or off). An agent without lanes (older) gets one call per exchange.
    #[arg(
        long,
        env = "BUSBAR_HOP_LANES",
        default_value = "on",
        value_name = "on|off",
        value_parser = clap::builder::BoolishValueParser::new(),
        hide_possible_values = true,
        action = clap::ArgAction::Set
    )]
    pub hop_lanes: bool,
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Mode {
    /// An agent in this process, on the engine and chains of the local config.
    Embedded,
    /// One agent across the gRPC hop, served as is.
    Remote {
        node: String,
        addr: String,
        tls: TlsFiles,
    },
    /// Many agents (from `--agent` flags or the etcd registry), served as one cluster.
    Cluster(Box<ClusterConfig>),
}

/// Cluster mode settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Static members: node -> address.
    pub agents: Vec<(String, String)>,
    /// The registry to follow, if any.
    pub etcd: Option<EtcdConfig>,
    pub etcd_prefix: String,
    pub strategy: Strategy,
    pub health: HealthOptions,
    pub tls: TlsFiles,
    /// `--list-live`: no list cache.
    pub list_live: bool,
    /// `--list-resync`.
    pub list_resync: std::time::Duration,
}

#[derive(Debug)]
pub struct Config {
    /// Listeners, logging and, in embedded mode, the engine and chains.
    pub local: LocalConfig,
    pub mode: Mode,
    /// `--hop-lanes`: exchanges to agents on lanes.
    pub hop_lanes: bool,
    /// `--status-window`: the span of the status's recent figures.
    pub status_window: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error(transparent)]
    Local(#[from] ConfigError),
    #[error("--agent and --etcd need --tls-ca, --tls-cert and --tls-key: the gateway <-> agent hop is mutual TLS only")]
    NoTls,
    #[error("--agent {0:?}: expected [NODE=]HOST:PORT")]
    BadAgent(String),
    #[error("--strategy: {0}")]
    Strategy(String),
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
    #[error(transparent)]
    PartialTls(#[from] PartialTls),
    #[error("--status-window {0}: expected at least 1 second")]
    StatusWindow(f64),
}

impl Cli {
    pub fn into_config(self) -> Result<Config, GatewayConfigError> {
        let local = self.local.into_config(true)?;
        let hop_lanes = self.hop_lanes;
        let status_window = seconds("status-window", self.status_window)?;
        if status_window < std::time::Duration::from_secs(1) {
            return Err(GatewayConfigError::StatusWindow(self.status_window));
        }
        let tls = self.tls.files("the gateway's identity toward agents")?;
        let etcd = self.etcd.into_config()?;
        let mode = match (self.agents.as_slice(), etcd.is_none()) {
            ([], true) => Mode::Embedded,
            ([one], true) => {
                let (node, addr) = parse_agent(one)?;
                Mode::Remote {
                    node,
                    addr,
                    tls: tls.ok_or(GatewayConfigError::NoTls)?,
                }
            }
            (agents, _) => Mode::Cluster(Box::new(ClusterConfig {
                agents: agents
                    .iter()
                    .map(|a| parse_agent(a))
                    .collect::<Result<_, _>>()?,
                etcd,
                etcd_prefix: self.etcd_prefix,
                strategy: self
                    .strategy
                    .parse()
                    .map_err(|e: crate::schedule::ScheduleError| {
                        GatewayConfigError::Strategy(e.to_string())
                    })?,
                health: HealthOptions {
                    probe_interval: seconds("probe-interval", self.probe_interval)?,
                    probe_timeout: seconds("probe-timeout", self.probe_timeout)?,
                },
                tls: tls.ok_or(GatewayConfigError::NoTls)?,
                list_live: self.list_live,
                list_resync: seconds("list-resync", self.list_resync)?,
            })),
        };
        Ok(Config {
            local,
            mode,
            hop_lanes,
            status_window,
        })
    }
}

fn parse_agent(s: &str) -> Result<(String, String), GatewayConfigError> {
    let bad = || GatewayConfigError::BadAgent(s.to_owned());
    let (node, addr) = match s.split_once('=') {
        Some((node, addr)) => (node.to_owned(), addr.to_owned()),
        None => {
            let host = s
                .rsplit_once(':')
                .ok_or_else(bad)?
                .0
                .trim_start_matches('[')
                .trim_end_matches(']');
            (host.to_owned(), s.to_owned())
        }
    };
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !node.is_empty() && port.parse::<u16>().is_ok() =>
        {
            Ok((node, addr))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, GatewayConfigError> {
        let mut argv = vec!["busbar-gateway"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_config()
    }

    #[test]
    fn no_agent_means_embedded_on_the_unix_socket() {
        let c = parse(&[]).unwrap();
        assert!(matches!(c.mode, Mode::Embedded));
        assert_eq!(c.local.listen.len(), 1);
        assert_eq!(c.local.listen[0].to_string(), "unix:///run/busbar.sock");
        assert_eq!(c.status_window, std::time::Duration::from_secs(300));
    }

    #[test]
    fn the_status_window_is_a_second_or_more() {
        let c = parse(&["--status-window", "20"]).unwrap();
        assert_eq!(c.status_window, std::time::Duration::from_secs(20));
        for bad in ["0.5", "0", "-3", "NaN"] {
            let flag = format!("--status-window={bad}");
            assert!(parse(&[&flag]).is_err(), "{bad}");
        }
    }

    #[test]
    fn etcd_settings_are_the_agents_and_checked_the_same_way() {
        let tls = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "g.pem",
            "--tls-key",
            "g-key.pem",
        ];
        let mut args = vec![
            "--etcd",
            "https://10.0.0.2:2379",
            "--etcd-ca",
            "etcd-ca.pem",
        ];
        args.extend(tls);
        match parse(&args).unwrap().mode {
            Mode::Cluster(c) => assert_eq!(
                c.etcd.and_then(|e| e.tls).map(|t| t.ca),
                Some("etcd-ca.pem".into())
            ),
            m => panic!("{m:?}"),
        }
        let mut args = vec!["--etcd", "http://10.0.0.2:2379", "--etcd-ca", "etcd-ca.pem"];
        args.extend(tls);
        let err = parse(&args).unwrap_err().to_string();
        assert!(
            err.contains("plaintext http://") && err.contains("--etcd-ca"),
            "{err}"
        );
    }

    #[test]
    fn an_agent_needs_tls_and_a_good_address() {
        assert!(matches!(
            parse(&["--agent", "10.0.0.1:7443"]),
            Err(GatewayConfigError::NoTls)
        ));
        let tls = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "g.pem",
            "--tls-key",
            "g-key.pem",
        ];
        let mut args = vec!["--agent", "node1=10.0.0.1:7443"];
        args.extend(tls);
        match parse(&args).unwrap().mode {
            Mode::Remote { node, addr, .. } => {
                assert_eq!((node.as_str(), addr.as_str()), ("node1", "10.0.0.1:7443"))
            }
            m => panic!("{m:?}"),
        }
        let mut args = vec!["--agent", "agent1.example:7443"];
        args.extend(tls);
        assert!(
            matches!(parse(&args).unwrap().mode, Mode::Remote { node, .. } if node == "agent1.example")
        );
        for bad in ["10.0.0.1", "node1=", "=1.2.3.4:1", "h:notaport"] {
            let mut args = vec!["--agent", bad];
            args.extend(tls);
            assert!(
                matches!(parse(&args), Err(GatewayConfigError::BadAgent(_))),
                "{bad}"
            );
        }
    }
}
