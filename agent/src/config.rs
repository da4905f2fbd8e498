//! Command-line flags and `BUSBAR_*` environment variables, turned into a validated
//! [`Config`]. Pure: nothing here touches the network or the filesystem.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::docker::client::EngineOptions;
use crate::docker::EngineAddr;
use crate::front::ListenAddr;

/// busbar-agent: serves this host's Docker Engine API and runs adapter chains on it.
#[derive(Debug, Parser)]
#[command(name = "busbar-agent", version, about)]
pub struct Cli {
    /// The Docker engine to forward to: unix:///path or tcp://host:port.
    #[arg(long, env = "BUSBAR_DOCKER", default_value = "unix:///var/run/docker.sock")]
    pub docker: String,

    /// Where to serve the Docker API: tcp://IP:PORT or unix:///path. Repeatable.
    /// Plain TCP must be a loopback address unless --allow-remote-plaintext is given.
    #[arg(long = "listen", env = "BUSBAR_LISTEN", value_delimiter = ',', default_value = "tcp://127.0.0.1:2375")]
    pub listen: Vec<String>,

    /// Adapter chains: a Powerstrip `adapters.yml` (plus busbar's optional extensions). The
    /// file is watched: a valid edit applies to new requests within a second.
    #[arg(long, env = "BUSBAR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Allow plain-TCP listen addresses that are not loopback. Whoever can reach such an
    /// address controls the Docker host: use only on a network you trust completely.
    #[arg(long, env = "BUSBAR_ALLOW_REMOTE_PLAINTEXT")]
    pub allow_remote_plaintext: bool,

    /// Seconds to wait for a connection to the engine before failing the request.
    #[arg(long, env = "BUSBAR_ENGINE_CONNECT_TIMEOUT", default_value_t = 5.0)]
    pub engine_connect_timeout: f64,

    /// Seconds open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "BUSBAR_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins when set.
    #[arg(long, env = "BUSBAR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// What the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub engine: EngineAddr,
    pub engine_options: EngineOptions,
    pub listen: Vec<ListenAddr>,
    /// The adapter chain file, if any.
    pub chains_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--docker: {0}")]
    Engine(#[from] crate::docker::addr::AddrError),
    #[error("--listen: {0}")]
    Listen(#[from] crate::front::listen::ListenError),
    #[error("--{flag}: must be a positive number of seconds, got {value}")]
    Seconds { flag: &'static str, value: f64 },
}

impl Cli {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let engine = self.docker.parse()?;
        let mut listen = vec![];
        for s in &self.listen {
            let addr: ListenAddr = s.parse()?;
            addr.check_exposure(self.allow_remote_plaintext)?;
            listen.push(addr);
        }
        Ok(Config {
            engine,
            engine_options: EngineOptions {
                connect_timeout: seconds("engine-connect-timeout", self.engine_connect_timeout)?,
                ..EngineOptions::default()
            },
            listen,
            chains_file: self.config,
            shutdown_grace: seconds("shutdown-grace", self.shutdown_grace)?,
            log_level: self.log_level,
        })
    }
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::Seconds { flag, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["busbar-agent"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").into_config()
    }

    #[test]
    fn defaults_are_the_local_socket_and_loopback() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.engine.to_string(), "unix:///var/run/docker.sock");
        assert_eq!(c.listen, vec!["tcp://127.0.0.1:2375".parse().unwrap()]);
    }

    #[test]
    fn remote_plaintext_needs_the_flag() {
        let err = parse(&["--listen", "tcp://0.0.0.0:2375"]).unwrap_err().to_string();
        assert!(err.contains("--allow-remote-plaintext"), "{err}");
        parse(&["--listen", "tcp://0.0.0.0:2375", "--allow-remote-plaintext"]).unwrap();
    }

    #[test]
    fn several_listeners() {
        let c = parse(&["--listen", "tcp://127.0.0.1:1", "--listen", "unix:///tmp/b.sock"]).unwrap();
        assert_eq!(c.listen.len(), 2);
    }
}
