//! Engine addresses as Docker writes them: `unix:///var/run/docker.sock` or `tcp://host:port`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a Docker engine (or any Docker-API server) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`, plain TCP (the engine's TLS mode is not supported).
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid engine address {input:?}: {reason} (expected unix:///path or tcp://host:port)")]
pub struct AddrError {
    input: String,
    reason: &'static str,
}

impl FromStr for EngineAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddrError {
            input: s.to_string(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(err("a unix socket path must be absolute"));
            }
            return Ok(EngineAddr::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = s.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    return Ok(EngineAddr::Tcp(hostport.to_string()))
                }
                _ => return Err(err("a tcp address needs a host and a port")),
            }
        }
        Err(err("unknown scheme"))
    }
}

impl fmt::Display for EngineAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            EngineAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_prints_them_back() {
        for s in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://[::1]:2375",
        ] {
            assert_eq!(s.parse::<EngineAddr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        for s in [
            "/var/run/docker.sock",
            "unix://rel/path",
            "tcp://host",
            "tcp://:2375",
            "http://x:1",
        ] {
            assert!(s.parse::<EngineAddr>().is_err(), "{s} should be refused");
        }
    }
}
