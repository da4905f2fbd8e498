//! Listen addresses and bound listeners.
//!
//! Plain TCP serves the Docker API without authentication: whoever reaches it owns the host. So
//! a `tcp://` address must be a loopback address unless the operator passes
//! `--allow-remote-plaintext`. A unix socket is created with mode 0660 (as dockerd does); a
//! stale socket file left by a dead process is replaced, a live one is refused.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::net::{TcpListener, UnixListener};

use crate::io::Stream;

/// A `tcp://host:port` or `unix:///path` address to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid listen address {0:?}: expected tcp://IP:PORT or unix:///path")]
    Invalid(String),
    #[error(
        "refusing to serve the Docker API in plain text on {0}: anyone who reaches it controls \
         this host. Listen on a loopback address or a unix socket, or pass \
         --allow-remote-plaintext if that is really what you want"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot listen on unix://{0}: another process is serving on that socket")]
    InUse(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(ListenAddr::Unix(PathBuf::from(path)));
            }
        } else if let Some(hostport) = s.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            let hostport = hostport.replace("localhost:", "127.0.0.1:");
            if let Ok(sa) = hostport.parse::<SocketAddr>() {
                return Ok(ListenAddr::Tcp(sa));
            }
        }
        Err(ListenError::Invalid(s.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "tcp://{sa}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

impl ListenAddr {
    /// Refuses a non-loopback TCP address unless `allow_remote` is set.
    pub fn check_exposure(&self, allow_remote: bool) -> Result<(), ListenError> {
        match self {
            ListenAddr::Tcp(sa) if !allow_remote && !is_loopback(sa.ip()) => {
                Err(ListenError::NotLoopback(*sa))
            }
            _ => Ok(()),
        }
    }

    pub async fn bind(&self) -> Result<Listener, ListenError> {
        let bind_err = |source| ListenError::Bind {
            addr: self.to_string(),
            source,
        };
        match self {
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(
                TcpListener::bind(sa).await.map_err(bind_err)?,
            )),
            ListenAddr::Unix(path) => {
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(ListenError::InUse(path.clone()));
                    }
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                let l = UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .map_err(bind_err)?;
                Ok(Listener::Unix(l, path.clone()))
            }
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A bound listener. A unix listener removes its socket file when dropped.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The address actually bound (the real port when bound to port 0).
    pub fn local_addr(&self) -> ListenAddr {
        match self {
            Listener::Tcp(l) => {
                ListenAddr::Tcp(l.local_addr().expect("a bound TCP listener has an address"))
            }
            Listener::Unix(_, p) => ListenAddr::Unix(p.clone()),
        }
    }

    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), format!("unix://{}", path.display())))
            }
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.local_addr().fmt(f)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_asked() {
        for ok in [
            "tcp://127.0.0.1:2375",
            "tcp://[::1]:2375",
            "tcp://localhost:2375",
            "unix:///run/x.sock",
        ] {
            let a: ListenAddr = ok.parse().unwrap();
            a.check_exposure(false).unwrap();
        }
        for remote in [
            "tcp://0.0.0.0:2375",
            "tcp://10.1.2.3:2375",
            "tcp://[::]:2375",
        ] {
            let a: ListenAddr = remote.parse().unwrap();
            let err = a.check_exposure(false).unwrap_err().to_string();
            assert!(err.contains("--allow-remote-plaintext"), "{err}");
            a.check_exposure(true).unwrap();
        }
    }

    #[test]
    fn bad_addresses_are_named() {
        for bad in [
            "2375",
            "tcp://nohost",
            "unix://relative",
            "http://127.0.0.1:1",
        ] {
            let err = bad.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
