//! Mutual TLS between the gateway and the agents, with the peer's *role* checked in the handshake.
//!
//! # Trust model (SwarmKit's)
//! - One **cluster CA**, made by `busbarctl certs init`, is the *only* root either side trusts:
//!   no system roots, no defaults, nothing shipped in the binaries. Whoever holds `ca-key.pem`
//!   controls the cluster, so it stays on the machine that issues certificates.
//! - Every certificate names its holder in the subject **CN** and carries its **role** in the
//!   subject **OU** (`busbar-agent`, `busbar-gateway`, `busbar-client`; see [`identity`]).
//! - An agent serves only the gateway: [`server_config`]`(files, Role::Gateway)` refuses, during
//!   the handshake, any client certificate that does not chain to the CA *or* whose role is not
//!   `gateway`. Chain validation alone would let any node's certificate drive every other node.
//! - The gateway connects only to agents, and only to the one it meant: [`client_config`]`(files,
//!   Role::Agent)` checks the chain, the role, and that the certificate is valid for the server
//!   name passed at connect time. **Pass the node name** (not the address you dial) as that server
//!   name: agent certificates carry their node name as a DNS SAN, so a certificate for `node1`
//!   cannot answer for `node2` even when both sit behind the same address.
//! - Once connected, [`peer_identity`] turns the verified peer certificate into an [`Identity`]
//!   so the gRPC service knows who called.
//!
//! # Choices
//! - rustls with the *ring* provider passed explicitly to every builder, so nothing depends on a
//!   process-wide default provider (which panics when two crates install different ones).
//! - TLS 1.3 only: both ends are busbar, so there is no old peer to accommodate.
//! - ALPN `h2` on both sides: the connection carries gRPC.
//! - No session resumption: a resumed session would carry the identity of the certificate it
//!   began with, past a reload or a renewal. The hop's connections are few and long-lived
//!   (HTTP/2), so a full handshake each time costs nothing that matters.
//! - The files are read when a configuration is built, and our own certificate and key again
//!   on [`reload_all`] (SIGHUP): every failure names the file.
//!
//! # Layout
//! - [`identity`]: [`Role`], [`Identity`], [`peer_identity`]: reading who a certificate names.
//! - `verify`: the rustls verifiers that wrap WebPKI's and add the role check ([`RoleError`]).
//! - [`docker`]: TLS for Docker clients (`--tlsverify --tlscacert --tlscert --tlskey`), a
//!   different trust model: the operator's CA, TLS 1.2 and 1.3, the chain checked as dockerd
//!   checks it (plus the `client` role when that CA is busbar's).
//! - `pki` (cargo feature `pki`): the cluster CA and issuing certificates (`pki::CertDir`),
//!   for `busbarctl certs` and the tests; the servers only read certificates.
//! - `reload`: our certificates and keys behind a resolver that [`reload_all`] refreshes.

pub mod docker;
pub mod identity;
#[cfg(any(feature = "pki", test))]
pub mod pki;
mod reload;
mod verify;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};

use x509_parser::prelude::{FromDer, X509Certificate};

pub use docker::{docker_server_config, ClientTlsFiles};
pub use identity::{peer_identity, Identity, IdentityError, Role, UnknownRole};
use reload::Reloadable;
pub use reload::{reload_all, Reloaded};
pub use verify::RoleError;

/// The ALPN protocol both sides offer: gRPC runs on HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// This process's identity on the gateway <-> agent hop: the `--tls-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The cluster CA certificate (PEM), from `busbarctl certs init`.
    #[arg(long, env = "BUSBAR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// This process's certificate (PEM), from `busbarctl certs issue`.
    #[arg(long, env = "BUSBAR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// This process's private key (PEM).
    #[arg(long, env = "BUSBAR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// Some of `--tls-ca`, `--tls-cert`, `--tls-key` given, not all three.
#[derive(Debug, thiserror::Error)]
#[error("--tls-ca, --tls-cert and --tls-key go together ({0})")]
pub struct PartialTls(pub &'static str);

impl TlsArgs {
    /// The three files, or `None` if none was given; `why` says what needs them.
    pub fn files(self, why: &'static str) -> Result<Option<TlsFiles>, PartialTls> {
        match (self.tls_ca, self.tls_cert, self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles::new(ca, cert, key))),
            _ => Err(PartialTls(why)),
        }
    }
}

/// The three files a busbar process needs for mutual TLS (`--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s): the only roots trusted for the peer's chain.
    pub ca: PathBuf,
    /// Our certificate, leaf first, optionally followed by intermediates.
    pub cert: PathBuf,
    /// The private key of our leaf certificate (PKCS#8, SEC1 or PKCS#1 PEM).
    pub key: PathBuf,
}

/// Why a TLS configuration could not be built. Each message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path} does not exist")]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} is not valid PEM: {source}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what} {path} contains no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("private key {path} contains no PEM private key (PKCS#8, SEC1 or PKCS#1)")]
    NoKey { path: PathBuf },
    #[error("private key {path} cannot be used: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("private key {key} does not belong to certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA certificate {path} cannot be used as a trust root: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("certificate {path} is not a busbar certificate: {source}")]
    NotBusbarCert {
        path: PathBuf,
        source: IdentityError,
    },
    #[error("{what} {path} {state}: no peer will accept it (issue a new one with `busbarctl certs issue`)")]
    OutOfValidity {
        what: &'static str,
        path: PathBuf,
        /// "expired on 2026-01-01 00:00:00 UTC", "is not valid before ...".
        state: String,
    },
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

// === impl TlsFiles ===

impl TlsFiles {
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Who our own certificate says we are (for the startup log line).
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let chain = read_certs("certificate", &self.cert)?;
        check_validity("certificate", &self.cert, &chain[0], now())?;
        if let Some(ca) = read_certs("CA certificate", &self.ca)?.first() {
            check_validity("CA certificate", &self.ca, ca, now())?;
        }
        // read_certs never returns an empty chain; the leaf comes first.
        peer_identity(&chain[0]).map_err(|source| TlsError::NotBusbarCert {
            path: self.cert.clone(),
            source,
        })
    }

    /// The cluster CA, as the only trust root.
    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in read_certs("CA certificate", &self.ca)? {
            roots.add(ca).map_err(|source| TlsError::BadCa {
                path: self.ca.clone(),
                source,
            })?;
        }
        Ok(Arc::new(roots))
    }

    /// Our chain (leaf first) and key, checked to match, from files read again on
    /// [`reload_all`]. Our own certificate must be a busbar one too: this catches
    /// `--tls-cert ca.pem` and other mix-ups here, instead of as a refusal on the far side.
    fn own(&self, provider: &Arc<CryptoProvider>) -> Result<Arc<Reloadable>, TlsError> {
        Reloadable::load(self.cert.clone(), self.key.clone(), true, provider.clone())
    }
}

/// The private key in `key_path`, checked to belong to `chain`'s leaf (read from `cert_path`).
fn load_key(
    key_path: &Path,
    cert_path: &Path,
    chain: &[CertificateDer<'static>],
    provider: &CryptoProvider,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = match PrivateKeyDer::from_pem_slice(&read("private key", key_path)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key_path.to_owned(),
            })
        }
        Err(source) => {
            return Err(TlsError::BadPem {
                what: "private key",
                path: key_path.to_owned(),
                source,
            })
        }
    };
    match CertifiedKey::from_der(chain.to_vec(), key.clone_key(), provider) {
        Ok(_) => Ok(key),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(source) => Err(TlsError::BadKey {
            path: key_path.to_owned(),
            source,
        }),
    }
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long `files`' certificate (or its CA, whichever ends first) stays valid, from `now`
/// (seconds since the Unix epoch); for a warning before it runs out.
pub fn remaining_validity(files: &TlsFiles) -> Result<std::time::Duration, TlsError> {
    let mut ends = i64::MAX;
    for (what, path) in [("certificate", &files.cert), ("CA certificate", &files.ca)] {
        if let Some(cert) = read_certs(what, path)?.first() {
            if let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) {
                ends = ends.min(x509.validity().not_after.timestamp());
            }
        }
    }
    Ok(std::time::Duration::from_secs(
        u64::try_from(ends.saturating_sub(now())).unwrap_or(0),
    ))
}

/// Logs a warning when `files`' certificate or CA runs out within 30 days: after that, every
/// peer refuses it.
pub fn warn_if_expiring(files: &TlsFiles) {
    const SOON: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
    if let Ok(left) = remaining_validity(files) {
        if left < SOON {
            tracing::warn!(
                cert = %files.cert.display(),
                ca = %files.ca.display(),
                days_left = left.as_secs() / 86_400,
                "the TLS certificate (or its CA) expires soon: issue a new one with `busbarctl certs issue`"
            );
        }
    }
}

/// Refuses a certificate outside its validity period at `now`: every peer would refuse it
/// during the handshake, and the operator would only see connections reset.
fn check_validity(
    what: &'static str,
    path: &Path,
    cert: &CertificateDer<'_>,
    now: i64,
) -> Result<(), TlsError> {
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return Ok(()); // not X.509: the identity check says so
    };
    let validity = x509.validity();
    let shown = |t: x509_parser::time::ASN1Time| t.to_rfc2822().unwrap_or_else(|_| t.to_string());
    let state = if now > validity.not_after.timestamp() {
        format!("expired on {}", shown(validity.not_after))
    } else if now < validity.not_before.timestamp() {
        format!("is not valid before {}", shown(validity.not_before))
    } else {
        return Ok(());
    };
    Err(TlsError::OutOfValidity {
        what,
        path: path.to_owned(),
        state,
    })
}

/// A file's bytes; a missing file is its own error, so the message can say so plainly.
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            what,
            path: path.to_owned(),
        },
        _ => TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

/// Every certificate in a PEM file, in order; at least one.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The crypto provider every configuration here is built with (see the module docs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration of a TLS server that accepts only clients with certificates from the
/// cluster CA whose role is `accept_role` (an agent passes [`Role::Gateway`]).
///
/// Refusals happen in the handshake, are logged at `warn` with the reason, and surface from
/// `accept` as an error whose text says why ("peer certificate CN=x has role agent; only
/// gateway may connect").
pub fn server_config(files: &TlsFiles, accept_role: Role) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let own = files.own(&provider)?;
    let webpki =
        WebPkiClientVerifier::builder_with_provider(files.roots()?, provider.clone()).build()?;
    let verifier = Arc::new(verify::RoleCheckingClientVerifier {
        inner: webpki,
        accept: accept_role,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No resumption (see the module docs): every connection shows its certificate.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration of a TLS client that presents our certificate and accepts only servers
/// with certificates from the cluster CA, valid for the server name given at connect time, whose
/// role is `expect_role` (the gateway passes [`Role::Agent`] and connects with the node name).
pub fn client_config(files: &TlsFiles, expect_role: Role) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let own = files.own(&provider)?;
    let webpki =
        WebPkiServerVerifier::builder_with_provider(files.roots()?, provider.clone()).build()?;
    let verifier = Arc::new(verify::RoleCheckingServerVerifier {
        inner: webpki,
        expect: expect_role,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        // "dangerous" is the only door to a custom verifier; ours runs WebPKI first, unchanged.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(own);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}
