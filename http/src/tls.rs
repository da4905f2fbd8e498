//! TLS listeners for Docker clients (`--tls-listen`): the handshake, who the client is, and
//! the server configuration.
//!
//! The configuration itself (certificates, which clients are accepted) is built elsewhere
//! (`busbar_tls::docker_server_config`); this crate only needs rustls. Its certificate can be
//! replaced while serving (`busbar_tls::reload_all`, on SIGHUP): new handshakes present the
//! new one, open connections keep theirs, and nothing is rebound.
//!
//! The handshake runs in the connection's own task, never in the accept loop, and within
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up no one else.

use std::io;
use std::sync::Arc;
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

/// A TLS listener's server configuration, and how its clients are named.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    identify: Identify,
    /// What the listener accepts, for the startup line ("client certificates from ca.pem").
    describe: String,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>, identify: Identify, describe: String) -> Arc<Self> {
        Arc::new(ServerTls {
            config,
            identify,
            describe,
        })
    }

    /// The configuration handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.clone()
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
