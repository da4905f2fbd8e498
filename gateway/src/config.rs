//! `busbar-gateway` flags -> [`Config`] (pure: nothing here touches the network or files).

use clap::Parser;

use busbar_agent::config::{Config as LocalConfig, ConfigError, LocalArgs, TlsArgs};
use busbar_agent::tls::TlsFiles;

/// busbar-gateway: serves the Docker API and carries every call to a busbar agent over gRPC
/// with mutual TLS. With no --agent it runs an agent in-process on --docker: the
/// single-machine default.
#[derive(Debug, Parser)]
#[command(name = "busbar-gateway", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub local: LocalArgs,

    /// An agent to serve: [NODE=]HOST:PORT. NODE is the name in the agent's certificate
    /// (default: HOST), checked during the TLS handshake.
    #[arg(long = "agent", env = "BUSBAR_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Mode {
    /// An agent in this process, on the engine and chains of the local config.
    Embedded,
    /// An agent across the gRPC hop.
    Remote { node: String, addr: String, tls: TlsFiles },
}

#[derive(Debug)]
pub struct Config {
    /// Listeners, logging and, in embedded mode, the engine and chains.
    pub local: LocalConfig,
    pub mode: Mode,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error(transparent)]
    Local(#[from] ConfigError),
    #[error("--agent needs --tls-ca, --tls-cert and --tls-key: the gateway <-> agent hop is mutual TLS only")]
    NoTls,
    #[error("--agent {0:?}: expected [NODE=]HOST:PORT")]
    BadAgent(String),
    #[error("several --agent flags need cluster routing, which this gateway does not do yet: give one agent")]
    SeveralAgents,
}

impl Cli {
    pub fn into_config(self) -> Result<Config, GatewayConfigError> {
        let local = self.local.into_config(true)?;
        let tls = self.tls.files("the gateway's identity toward agents")?;
        let mode = match self.agents.as_slice() {
            [] => Mode::Embedded,
            [one] => {
                let (node, addr) = parse_agent(one)?;
                Mode::Remote { node, addr, tls: tls.ok_or(GatewayConfigError::NoTls)? }
            }
            _ => return Err(GatewayConfigError::SeveralAgents),
        };
        Ok(Config { local, mode })
    }
}

fn parse_agent(s: &str) -> Result<(String, String), GatewayConfigError> {
    let bad = || GatewayConfigError::BadAgent(s.to_owned());
    let (node, addr) = match s.split_once('=') {
        Some((node, addr)) => (node.to_owned(), addr.to_owned()),
        None => {
            let host = s.rsplit_once(':').ok_or_else(bad)?.0.trim_start_matches('[').trim_end_matches(']');
            (host.to_owned(), s.to_owned())
        }
    };
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !node.is_empty() && port.parse::<u16>().is_ok() => Ok((node, addr)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, GatewayConfigError> {
        let mut argv = vec!["busbar-gateway"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").into_config()
    }

    #[test]
    fn no_agent_means_embedded_on_loopback() {
        let c = parse(&[]).unwrap();
        assert!(matches!(c.mode, Mode::Embedded));
        assert_eq!(c.local.listen.len(), 1);
        assert_eq!(c.local.listen[0].to_string(), "tcp://127.0.0.1:2375");
    }

    #[test]
    fn an_agent_needs_tls_and_a_good_address() {
        assert!(matches!(parse(&["--agent", "10.0.0.1:7443"]), Err(GatewayConfigError::NoTls)));
        let tls = ["--tls-ca", "ca.pem", "--tls-cert", "g.pem", "--tls-key", "g-key.pem"];
        let mut args = vec!["--agent", "node1=10.0.0.1:7443"];
        args.extend(tls);
        match parse(&args).unwrap().mode {
            Mode::Remote { node, addr, .. } => assert_eq!((node.as_str(), addr.as_str()), ("node1", "10.0.0.1:7443")),
            m => panic!("{m:?}"),
        }
        let mut args = vec!["--agent", "agent1.example:7443"];
        args.extend(tls);
        assert!(matches!(parse(&args).unwrap().mode, Mode::Remote { node, .. } if node == "agent1.example"));
        for bad in ["10.0.0.1", "node1=", "=1.2.3.4:1", "h:notaport"] {
            let mut args = vec!["--agent", bad];
            args.extend(tls);
            assert!(matches!(parse(&args), Err(GatewayConfigError::BadAgent(_))), "{bad}");
        }
    }
}
