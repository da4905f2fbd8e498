//! TLS listeners for Docker clients (`--tls-listen`): the handshake, who the client is, and
//! the server configuration, held so that it can be swapped while serving.
//!
//! The configuration itself (certificates, which clients are accepted) is built elsewhere
//! (`busbar_tls::docker_server_config`); this crate only needs rustls. Each handshake takes
//! the configuration current at that moment ([`ServerTls::current`]), so reloading
//! certificates (a later SIGHUP handler, say) is building a new configuration and calling
//! [`ServerTls::replace`]: new connections use it, open ones keep the one they started with,
//! and nothing is rebound.
//!
//! The handshake runs in the connection's own task, never in the accept loop, and within
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up no one else.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::net::TcpStream;

use crate::identity::ClientIdentity;
use crate::io::Stream;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Names the client from its verified certificate (its subject CN, and its busbar role).
pub type Identify = fn(&CertificateDer<'_>) -> ClientIdentity;

/// A TLS listener's server configuration, swappable, and how its clients are named.
pub struct ServerTls {
    config: RwLock<Arc<ServerConfig>>,
    identify: Identify,
    /// What the listener accepts, for the startup line ("client certificates from ca.pem").
    describe: String,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>, identify: Identify, describe: String) -> Arc<Self> {
        Arc::new(ServerTls {
            config: RwLock::new(config),
            identify,
            describe,
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `config` the one new handshakes use; open connections keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    /// What the listener accepts, for the log.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The server side of the handshake on `tcp`, within [`HANDSHAKE_TIMEOUT`]: the encrypted
    /// stream, and the client's identity when it presented a certificate the configuration
    /// verified (with `--tlsverify`, always).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<(Stream, Option<ClientIdentity>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                )
            })??;
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| (self.identify)(leaf));
        Ok((Stream::Tls(Box::new(tls)), identity))
    }
}
