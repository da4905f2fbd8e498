//! Certificate verifiers that add a role check to rustls' WebPKI ones.
//!
//! Chain validation alone answers "did our CA sign this?", and every node, gateway and operator
//! certificate passes that. The question an agent must ask is "is this *the gateway*?": a leaked
//! or misused agent certificate must not be able to drive another node's Docker engine. So each
//! verifier first delegates to WebPKI (chain to the cluster CA, validity dates, key usage and,
//! for servers, the name we dialled) and then reads the role from the end-entity certificate.
//!
//! The check runs *inside the handshake*, not after it: a refused peer never gets an
//! application byte through, and no later layer can forget to call it. The reason is logged at
//! `warn` here, because an alert on the wire only says "handshake failure" and the operator
//! needs to read, in the agent's log, which certificate was refused and why.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use tracing::warn;

use super::identity::{peer_identity, IdentityError, Role};

/// Why a certificate that chains to the cluster CA was still refused.
///
/// It travels inside `rustls::Error::Other`, so the `accept`/`connect` error reads
/// "other error: peer certificate CN=x has role agent; only gateway may connect", and callers
/// can downcast to it.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("peer certificate CN={name} has role {got}; only {want} may connect")]
    WrongClientRole { name: String, got: Role, want: Role },
    #[error("server certificate CN={name} has role {got}; expected {want}")]
    WrongServerRole { name: String, got: Role, want: Role },
    #[error("peer certificate carries no busbar identity: {0}")]
    NoIdentity(#[from] IdentityError),
}

impl From<RoleError> for rustls::Error {
    fn from(e: RoleError) -> Self {
        rustls::Error::Other(OtherError(Arc::new(e)))
    }
}

/// Best effort, for log lines about certificates that are being refused anyway.
fn describe(cert: &CertificateDer<'_>) -> String {
    match peer_identity(cert) {
        Ok(id) => id.to_string(),
        Err(_) => "<no busbar identity>".to_owned(),
    }
}

// === impl RoleCheckingClientVerifier ===

/// Server side: WebPKI client-certificate validation, then "the peer's role is `accept`".
#[derive(Debug)]
pub(crate) struct RoleCheckingClientVerifier {
    /// Chain to the cluster CA (the only root), validity, clientAuth key usage.
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    /// The one role allowed to connect to this server.
    pub(crate) accept: Role,
}

impl ClientCertVerifier for RoleCheckingClientVerifier {
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
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                warn!(peer = %describe(end_entity), "refusing TLS client: {e}");
            })?;
        let id = peer_identity(end_entity)
            .map_err(RoleError::from)
            .inspect_err(|e| {
                warn!("refusing TLS client: {e}");
            })?;
        if id.role != self.accept {
            let e = RoleError::WrongClientRole {
                name: id.name,
                got: id.role,
                want: self.accept,
            };
            warn!("refusing TLS client: {e}");
            return Err(e.into());
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

// === impl RoleCheckingServerVerifier ===

/// Client side: WebPKI server-certificate validation (including "the certificate is valid for
/// the name we dialled"), then "the server's role is `expect`".
#[derive(Debug)]
pub(crate) struct RoleCheckingServerVerifier {
    /// Chain to the cluster CA (the only root), validity, serverAuth key usage, server name.
    pub(crate) inner: Arc<WebPkiServerVerifier>,
    /// The role the server we dial must have.
    pub(crate) expect: Role,
}

impl ServerCertVerifier for RoleCheckingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                warn!(server = %server_name.to_str(), peer = %describe(end_entity), "refusing TLS server: {e}");
            })?;
        let id = peer_identity(end_entity)
            .map_err(RoleError::from)
            .inspect_err(|e| {
                warn!(server = %server_name.to_str(), "refusing TLS server: {e}");
            })?;
        if id.role != self.expect {
            let e = RoleError::WrongServerRole {
                name: id.name,
                got: id.role,
                want: self.expect,
            };
            warn!(server = %server_name.to_str(), "refusing TLS server: {e}");
            return Err(e.into());
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
