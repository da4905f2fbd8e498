//! TLS for Docker clients: the server side of `docker --tlsverify`, as dockerd's
//! `--tlsverify --tlscacert --tlscert --tlskey`.
//!
//! This is not the cluster's mutual TLS ([`crate::server_config`]): here the peers are Docker
//! clients (the CLI, docker-py, compose, ...), and the certificates are the operator's, made
//! by `busbarctl certs` or by any other CA (openssl, rcgen, a company PKI). So:
//!
//! - **TLS 1.2 and 1.3**, rustls' safe defaults, and no ALPN (Docker's API is HTTP/1.1; a
//!   client that offers `h2` falls back to it).
//! - Our certificate and key can be anything that parses and matches (RSA or ECDSA); it is
//!   what clients check against their `--tlscacert` and the host they dial.
//! - **With `--tlsverify`** ([`ClientTlsFiles::ca`] set) a client must present a certificate
//!   that chains to that CA, and only to it (no system roots), as dockerd's
//!   `RequireAndVerifyClientCert` with exclusive root pools: that is all Docker checks, and
//!   all that is checked for any other CA. **When the CA is a busbar cluster CA** (made by
//!   `busbarctl certs init`: subject `O=busbar, CN=busbar cluster CA ...`), the certificate
//!   must also carry the `client` role: the agents' and the gateways' certificates chain to
//!   the same CA, and a node's key must not drive the whole cluster through the gateway.
//!   Refusals happen in the handshake and are logged at `warn` with the reason.
//! - **Without it**, no client certificate is asked for: the connection is encrypted, but
//!   anyone who reaches the port drives the engine (the caller decides whether to allow that;
//!   dockerd warns).
//!
//! Who the client is, for adapters and logs, is its certificate's subject CN
//! ([`common_name`]), as Docker's authorization plugins receive it (`User`, with
//! `UserAuthNMethod: "TLS"`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tracing::warn;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{peer_identity, Role};
use crate::verify::RoleError;
use crate::{check_validity, now, provider, read_certs, Reloadable, TlsError};

/// The files of a TLS listener for Docker clients: `--tlscacert` (with `--tlsverify`),
/// `--tlscert`, `--tlskey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// With `--tlsverify`: the CA every client certificate must chain to. `None`: clients are
    /// not asked for a certificate.
    pub ca: Option<PathBuf>,
    /// Our certificate (leaf first, then any intermediates), shown to clients.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The server configuration of a TLS listener for Docker clients (see the module docs).
pub fn docker_server_config(files: &ClientTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let own = Reloadable::load(
        files.cert.clone(),
        files.key.clone(),
        false,
        provider.clone(),
    )?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let cas = read_certs("CA certificate", ca_path)?;
            check_validity("CA certificate", ca_path, &cas[0], now())?;
            let busbar_ca = cas.iter().any(is_busbar_ca);
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots.add(ca).map_err(|source| TlsError::BadCa {
                    path: ca_path.clone(),
                    source,
                })?;
            }
            let inner =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(Arc::new(DockerClientVerifier {
                inner,
                require_client_role: busbar_ca,
            }))
        }
    };
    let config = builder.with_cert_resolver(own);
    Ok(Arc::new(config))
}

/// Whether a CA certificate is a busbar cluster CA (`busbarctl certs init`'s subject).
pub fn is_busbar_ca(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let subject = x509.subject();
    let org = subject
        .iter_organization()
        .any(|o| o.as_str() == Ok("busbar"));
    let cn = subject.iter_common_name().any(|cn| {
        cn.as_str()
            .is_ok_and(|cn| cn.starts_with("busbar cluster CA "))
    });
    org && cn
}

/// The subject CN of a certificate, as Docker gives it to authorization plugins (`User`):
/// the first CN, `""` when there is none or it is not text. Reads, never verifies: call it
/// on a certificate the handshake verified.
/// The busbar role a certificate carries in its subject OU, if it carries one.
pub fn busbar_role(cert: &CertificateDer<'_>) -> Option<Role> {
    peer_identity(cert).ok().map(|id| id.role)
}

pub fn common_name(cert: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(cert.as_ref())
        .ok()
        .and_then(|(_, x509)| {
            x509.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

/// WebPKI's client verification (chain to `--tlscacert`, validity, clientAuth usage), plus
/// the `client` role when that CA is busbar's.
#[derive(Debug)]
struct DockerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    require_client_role: bool,
}

impl ClientCertVerifier for DockerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let who = || match common_name(end_entity) {
            cn if cn.is_empty() => "a certificate without a CN".to_owned(),
            cn => format!("CN={cn}"),
        };
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| warn!(peer = %who(), "refusing Docker client: {e}"))?;
        if self.require_client_role {
            let refused = match peer_identity(end_entity) {
                Ok(id) if matches!(id.role, Role::Client | Role::Adapter) => None,
                Ok(id) => Some(RoleError::WrongClientRole {
                    name: id.name,
                    got: id.role,
                    want: Role::Client,
                }),
                Err(e) => Some(RoleError::NoIdentity(e)),
            };
            if let Some(e) = refused {
                warn!(peer = %who(), "refusing Docker client: {e} (the CA is busbar's: Docker clients need a certificate with the client role)");
                return Err(e.into());
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
