//! The cluster CA and the certificates it issues: what `busbarctl certs` runs, and what the tests
//! use to build a cluster's worth of certificates in a temporary directory.
//!
//! # Files
//! One directory holds everything (see [`CertDir`]):
//! - `ca.pem`, `ca-key.pem`: the cluster CA. The certificate goes to every machine; the key
//!   stays on the machine that issues certificates.
//! - `NAME.pem`, `NAME-key.pem`: one leaf certificate (alone, no chain: every peer already
//!   holds `ca.pem` as its only root) and its private key.
//!
//! Private keys are created with mode 0600 from the first byte (never chmod-ed afterwards, so
//! there is no moment where another user can open them), the directory 0700 if we create it.
//! Every file is written to a temporary name and renamed into place, so an interrupted run never
//! leaves half a key, and `--force` never leaves a moment with no key at all.
//!
//! # Choices
//! - ECDSA P-256 for every key: short, fast, and supported by every TLS stack we might meet.
//! - The CA may sign leaves only (path length 0), and is valid for ten years. Its CN carries a
//!   random cluster id (`busbar cluster CA 3f0c...`), as SwarmKit's certificates carry the
//!   cluster id: two clusters' CAs never share a subject, so a certificate from the wrong
//!   cluster is reported as "unknown issuer", and `openssl x509 -issuer` tells them apart.
//! - Leaves: CN = name, OU = role (see [`super::identity`]), SAN DNS = name plus each `--san`,
//!   extended key usage by role: agent and gateway get serverAuth + clientAuth (the agent is a
//!   TLS server toward the gateway; the gateway may become one when agents dial in), client gets
//!   clientAuth only, so an operator's certificate can never pose as a server.
//! - Validity starts an hour in the past, as SwarmKit's does, so a peer whose clock is a little
//!   behind does not refuse a certificate that was issued a second ago.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{Identity, Role};
use super::TlsFiles;

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How far in the past every certificate's validity starts (clock skew between machines).
const BACKDATE: Duration = Duration::hours(1);
/// The longest leaf validity `issue` accepts.
pub const MAX_DAYS: u32 = 3650;

/// Private keys: owner read/write only.
const KEY_MODE: u32 = 0o600;
/// Certificates are public.
const CERT_MODE: u32 = 0o644;
/// The directory, when we create it.
const DIR_MODE: u32 = 0o700;

/// A failure of `certs init` or `certs issue`, worded for the operator running busbarctl.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{dir} already holds a cluster CA ({path} exists); refusing to replace it, which would \
         invalidate every certificate it issued (pass --force if that is really what you want)"
    )]
    CaExists { dir: PathBuf, path: PathBuf },
    #[error("no cluster CA in {dir}: run `busbarctl certs init --dir {dir}` first")]
    NoCa { dir: PathBuf },
    #[error(
        "{path} is missing: certificates can only be issued on the machine that holds the CA key"
    )]
    NoCaKey { path: PathBuf },
    #[error("{path} is not a usable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("{path} is not a usable CA key: {reason}")]
    BadCaKey { path: PathBuf, reason: String },
    #[error("the CA key {key} does not belong to the CA certificate {cert}")]
    CaKeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path} already exists; refusing to overwrite it (pass --force to re-issue)")]
    LeafExists { path: PathBuf },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid --san {san:?}: expected a DNS name or an IP address")]
    InvalidSan { san: String },
    #[error("invalid --days {days}: must be between 1 and {MAX_DAYS}")]
    InvalidDays { days: u32 },
    #[error(
        "a certificate valid for {days} days would outlive the CA, which expires on {ca_expires}; \
         issue a shorter one"
    )]
    OutlivesCa { days: u32, ca_expires: time::Date },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What [`CertDir::init_ca`] wrote.
#[derive(Debug, Clone)]
pub struct CaWritten {
    /// `ca.pem`: copy to every node and gateway.
    pub cert: PathBuf,
    /// `ca-key.pem`: keep here.
    pub key: PathBuf,
    /// The random id in the CA's CN, which tells one cluster's CA from another's.
    pub cluster_id: String,
    /// Last moment of validity.
    pub not_after: OffsetDateTime,
    /// Whether an existing CA was replaced (`--force`).
    pub replaced: bool,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// CN, first DNS SAN and file name: for an agent, its node name.
    pub name: String,
    /// Carried in the subject OU.
    pub role: Role,
    /// Extra SANs: IP literals become IP SANs, anything else a DNS SAN.
    pub sans: Vec<String>,
    /// Validity in days.
    pub days: u32,
    /// Replace `NAME.pem`/`NAME-key.pem` if they exist.
    pub force: bool,
}

/// What [`CertDir::issue`] wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `NAME.pem`.
    pub cert: PathBuf,
    /// `NAME-key.pem`.
    pub key: PathBuf,
    /// Who the certificate says its holder is.
    pub identity: Identity,
    /// Every SAN, in certificate order (the name first).
    pub sans: Vec<String>,
    /// Last moment of validity.
    pub not_after: OffsetDateTime,
}

/// The directory of a cluster's certificates, and the one place that knows its file names.
#[derive(Debug, Clone)]
pub struct CertDir {
    /// Where the files live.
    dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `D/ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `D/ca-key.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// `D/NAME.pem`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `D/NAME-key.pem`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// The three files a node or gateway named `name` is started with.
    pub fn tls_files(&self, name: &str) -> TlsFiles {
        TlsFiles::new(self.ca_cert(), self.cert(name), self.key(name))
    }

    /// Creates the cluster CA (`busbarctl certs init`). Refuses to replace an existing one
    /// unless `force`.
    pub fn init_ca(&self, force: bool) -> Result<CaWritten, PkiError> {
        let (cert_path, key_path) = (self.ca_cert(), self.ca_key());
        let mut replaced = false;
        for path in [&cert_path, &key_path] {
            if exists(path)? {
                if !force {
                    return Err(PkiError::CaExists {
                        dir: self.dir.clone(),
                        path: path.clone(),
                    });
                }
                replaced = true;
            }
        }
        self.create_dir()?;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cluster_id = uuid::Uuid::new_v4().simple().to_string();
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "busbar");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("busbar cluster CA {cluster_id}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;

        // Key first: a ca.pem without its key is useless, a key without ca.pem is just refused.
        write_file(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_file(&cert_path, cert.pem().as_bytes(), CERT_MODE)?;
        Ok(CaWritten {
            cert: cert_path,
            key: key_path,
            cluster_id,
            not_after: params.not_after,
            replaced,
        })
    }

    /// Issues a leaf certificate signed by the CA in this directory (`busbarctl certs issue`).
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, PkiError> {
        validate_name(&req.name)?;
        if req.days == 0 || req.days > MAX_DAYS {
            return Err(PkiError::InvalidDays { days: req.days });
        }
        let mut sans = vec![SanType::DnsName(
            req.name
                .as_str()
                .try_into()
                .map_err(|_| invalid_name(&req.name, "not a DNS name"))?,
        )];
        let mut san_texts = vec![req.name.clone()];
        for san in &req.sans {
            let parsed = match ServerName::try_from(san.as_str()) {
                Ok(ServerName::IpAddress(ip)) => SanType::IpAddress(std::net::IpAddr::from(ip)),
                Ok(ServerName::DnsName(_)) => SanType::DnsName(
                    san.as_str()
                        .try_into()
                        .map_err(|_| PkiError::InvalidSan { san: san.clone() })?,
                ),
                _ => return Err(PkiError::InvalidSan { san: san.clone() }),
            };
            if !sans.contains(&parsed) {
                sans.push(parsed);
                san_texts.push(san.clone());
            }
        }

        let (cert_path, key_path) = (self.cert(&req.name), self.key(&req.name));
        if !req.force {
            for path in [&cert_path, &key_path] {
                if exists(path)? {
                    return Err(PkiError::LeafExists { path: path.clone() });
                }
            }
        }

        let ca = self.load_ca()?;
        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::days(i64::from(req.days));
        if not_after > ca.not_after {
            return Err(PkiError::OutlivesCa {
                days: req.days,
                ca_expires: ca.not_after.date(),
            });
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "busbar");
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            req.role.organizational_unit(),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, req.name.as_str());
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match req.role {
            Role::Agent | Role::Gateway => {
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            }
            Role::Client | Role::Adapter => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &ca.issuer)?;

        self.create_dir()?;
        write_file(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_file(&cert_path, cert.pem().as_bytes(), CERT_MODE)?;
        Ok(Issued {
            cert: cert_path,
            key: key_path,
            identity: Identity {
                name: req.name.clone(),
                role: req.role,
            },
            sans: san_texts,
            not_after,
        })
    }

    fn create_dir(&self) -> Result<(), PkiError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)
            .map_err(|source| PkiError::CreateDir {
                path: self.dir.clone(),
                source,
            })
    }

    /// Reads the CA back and checks it can sign: it is a CA, still valid, and the key is its own.
    fn load_ca(&self) -> Result<LoadedCa, PkiError> {
        let (cert_path, key_path) = (self.ca_cert(), self.ca_key());
        if !exists(&cert_path)? {
            return Err(PkiError::NoCa {
                dir: self.dir.clone(),
            });
        }
        if !exists(&key_path)? {
            return Err(PkiError::NoCaKey { path: key_path });
        }
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let bad_ca = |reason: &str| PkiError::BadCa {
            path: cert_path.clone(),
            reason: reason.to_owned(),
        };

        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad_ca(&format!("no PEM certificate: {e}")))?;
        let (_, x509) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| bad_ca(&e.to_string()))?;
        if !x509.is_ca() {
            return Err(bad_ca("it is not a CA certificate"));
        }
        // rcgen reads the subject back to name the issuer, and insists on one attribute per
        // RDN (it panics on an empty one): check here so a hand-edited file gets an error.
        if x509.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(bad_ca(
                "its subject is not one attribute per RDN, as busbarctl writes it",
            ));
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(bad_ca(&format!("it expired on {}", not_after.date())));
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCaKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::CaKeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| bad_ca(&e.to_string()))?;
        Ok(LoadedCa { issuer, not_after })
    }
}

/// The CA, ready to sign.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

fn invalid_name(name: &str, reason: &'static str) -> PkiError {
    PkiError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// A name becomes a CN, a DNS SAN (the name the gateway dials) and two file names.
fn validate_name(name: &str) -> Result<(), PkiError> {
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => {}
        Ok(_) => {
            return Err(invalid_name(
                name,
                "an IP address cannot be a name; pass it with --san",
            ))
        }
        Err(_) => {
            return Err(invalid_name(
                name,
                "not a DNS name (letters, digits, '-', '.')",
            ))
        }
    }
    if name.ends_with('.') {
        return Err(invalid_name(name, "must not end with a dot"));
    }
    // These would collide with the CA's files, or with another name's key file.
    if name.eq_ignore_ascii_case("ca") || name.eq_ignore_ascii_case("ca-key") {
        return Err(invalid_name(name, "reserved for the CA's files"));
    }
    if name.ends_with("-key") {
        return Err(invalid_name(
            name,
            "must not end in -key (that is how key files are named)",
        ));
    }
    Ok(())
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    // symlink_metadata: a dangling symlink still "exists" and must not be written through.
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PkiError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to a temporary file created with `mode`, then renames it over `path`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
