//! How a busbar process reaches etcd: the endpoints, TLS (a CA, optionally a client
//! certificate) and a user with a password. The agent, the gateway and `busbarctl` flatten the
//! same [`EtcdConnArgs`], so the three share flag names, environment variables and checks.
//!
//! Three stages, as for the gRPC hop's `--tls-*` files:
//! - [`EtcdConnArgs`]: the flags, as clap parsed them;
//! - [`EtcdConfig`]: validated, no IO ([`EtcdConnArgs::into_config`]): every combination that
//!   can never work is refused here, before anything is bound or dialled;
//! - [`EtcdConnection`]: the files read and checked ([`EtcdConfig::connection`]), ready for
//!   [`connect`]. Every failure names the flag and the file.
//!
//! # Choices
//! - **TLS follows the endpoints.** `https://` endpoints talk TLS; `HOST:PORT` talks TLS when
//!   any of `--etcd-ca/--etcd-cert/--etcd-key` is given, plaintext otherwise; `http://` is
//!   always plaintext, so TLS files with an `http://` endpoint are refused rather than
//!   silently upgraded (the operator said two contradicting things; guessing would hide a
//!   typo either way). Mixing `http://` and `https://` is refused too.
//! - **TLS needs `--etcd-ca`.** There is no fallback to the system's roots: etcd's serving
//!   certificate almost always comes from a private CA. For a public one, pass the system
//!   bundle (`/etc/ssl/certs/ca-certificates.crt`).
//! - **The password never comes from argv**, which every user on the machine can read in
//!   `ps`: it comes from `--etcd-password-file FILE` (one line; a trailing newline is dropped)
//!   or from the environment variable `BUSBAR_ETCD_PASSWORD`, not both. A user with no
//!   password, or a password with no user, is refused: both are always mistakes (a
//!   certificate-only etcd user needs neither: etcd takes the user from the client
//!   certificate's CN).
//! - With a user, the client authenticates when it connects, and fetches a new token by
//!   itself when etcd says the old one expired (`--auth-token-ttl`, 5 minutes by default).
//!
//! # Refusals
//! A wrong password or CA gives the same error on every retry; [`crate::Refusal`] recognises the
//! usual ones in an etcd client error, so that the message says what to fix ("authentication
//! failed", "certificate not trusted") before etcd's own words, and so that the agent can log
//! them as errors (an operator must act) rather than as passing trouble.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{Certificate, ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use crate::client::Client;
use busbar_tls::{self as tls, TlsError};

use crate::error::{EtcdError, CALL_TIMEOUT};

/// The environment variable that carries the etcd password (there is no flag for it).
pub const PASSWORD_ENV: &str = "BUSBAR_ETCD_PASSWORD";

/// How to reach etcd: flags and `BUSBAR_ETCD*` variables, shared by every busbar binary.
/// The flags are global, so `busbarctl` takes them before or after its subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdConnArgs {
    /// etcd endpoints, comma-separated: https://HOST:PORT (TLS), http://HOST:PORT, or
    /// HOST:PORT (TLS when --etcd-ca/--etcd-cert/--etcd-key are given).
    #[arg(long, env = "BUSBAR_ETCD", value_delimiter = ',', global = true)]
    pub etcd: Vec<String>,

    /// The CA certificate (PEM) that signed etcd's server certificate. Needed for TLS.
    #[arg(long, env = "BUSBAR_ETCD_CA", global = true)]
    pub etcd_ca: Option<PathBuf>,

    /// A client certificate (PEM) for etcd's --client-cert-auth; needs --etcd-key.
    #[arg(long, env = "BUSBAR_ETCD_CERT", global = true)]
    pub etcd_cert: Option<PathBuf>,

    /// The private key (PEM) of --etcd-cert.
    #[arg(long, env = "BUSBAR_ETCD_KEY", global = true)]
    pub etcd_key: Option<PathBuf>,

    /// The etcd user to authenticate as (etcd with `auth enable`); needs a password.
    #[arg(long, env = "BUSBAR_ETCD_USER", global = true)]
    pub etcd_user: Option<String>,

    /// A file holding the password of --etcd-user (one line). Or put the password itself in
    /// the environment variable BUSBAR_ETCD_PASSWORD; there is no flag for it, because ps
    /// shows every process's command line.
    #[arg(long, env = "BUSBAR_ETCD_PASSWORD_FILE", global = true)]
    pub etcd_password_file: Option<PathBuf>,

    /// `BUSBAR_ETCD_PASSWORD`, read when the flags are parsed (like clap's `env`), but with no
    /// command-line flag behind it.
    #[arg(skip = std::env::var(PASSWORD_ENV).ok().map(Secret))]
    pub etcd_password_env: Option<Secret>,
}

/// Where to reach etcd and how, validated (no IO): see [`EtcdConnArgs::into_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// As given: `http(s)://HOST:PORT` or `HOST:PORT`.
    pub endpoints: Vec<String>,
    /// TLS to etcd, if on.
    pub tls: Option<EtcdTls>,
    /// The user to authenticate as, if any.
    pub auth: Option<EtcdAuth>,
}

/// The files for TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA(s) trusted for etcd's server certificate (and nothing else).
    pub ca: PathBuf,
    /// The client certificate and its key, for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and where its password is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: PasswordSource,
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `--etcd-password-file`: read when the connection is made ready, at start.
    File(PathBuf),
    /// `BUSBAR_ETCD_PASSWORD`.
    Env(Secret),
}

/// A password: kept out of `Debug` output, so that no log line or panic message carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything needed to connect to etcd, the files read and checked: what
/// [`connect`] takes. Cheap to clone; `Debug` shows no secret. `Default` is
/// no endpoint at all, for building structs field by field.
#[derive(Clone, Default)]
pub struct EtcdConnection {
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
    user: Option<(String, Secret)>,
}

/// Why the etcd flags cannot work. Each message names the flag, and the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    #[error(transparent)]
    Endpoint(#[from] EtcdError),
    #[error("--etcd mixes http:// and https:// endpoints: talk to every etcd member the same way")]
    MixedSchemes,
    #[error(
        "--etcd {endpoint} is plaintext http://, but {flags} asks for TLS: use https://HOST:PORT (or drop {flags})"
    )]
    TlsWithHttp { endpoint: String, flags: String },
    #[error(
        "{reason} needs --etcd-ca: the CA certificate that signed etcd's server certificate \
         (for a public CA, the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt)"
    )]
    NoCa { reason: String },
    #[error("--etcd-cert and --etcd-key go together: the client certificate and its private key")]
    PartialIdentity,
    #[error(
        "--etcd-user {user}: no password: give --etcd-password-file FILE or set {PASSWORD_ENV}"
    )]
    NoPassword { user: String },
    #[error("an etcd password (--etcd-password-file or {PASSWORD_ENV}) needs --etcd-user")]
    NoUser,
    #[error("--etcd-user: empty")]
    EmptyUser,
    #[error("--etcd-password-file and {PASSWORD_ENV} are both set: give the password one way")]
    TwoPasswords,
    #[error("{PASSWORD_ENV} is set but empty")]
    EmptyPasswordEnv,
    #[error("--etcd-password-file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--etcd-password-file {}: empty", path.display())]
    EmptyPasswordFile { path: PathBuf },
    #[error("--etcd-ca: {0}")]
    Ca(TlsError),
    #[error("--etcd-cert/--etcd-key: {0}")]
    Identity(TlsError),
}

// === impl EtcdConnArgs ===

impl EtcdConnArgs {
    /// The validated settings; `None` without `--etcd` (then the other etcd flags are unused).
    pub fn into_config(self) -> Result<Option<EtcdConfig>, EtcdConfigError> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        check_endpoints(&self.etcd)?;
        let http = self.etcd.iter().find(|e| e.starts_with("http://"));
        let https = self.etcd.iter().find(|e| e.starts_with("https://"));
        if let (Some(_), Some(_)) = (http, https) {
            return Err(EtcdConfigError::MixedSchemes);
        }
        let identity = match (self.etcd_cert, self.etcd_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(EtcdConfigError::PartialIdentity),
        };
        let tls_flags: Vec<&str> = [
            ("--etcd-ca", self.etcd_ca.is_some()),
            ("--etcd-cert", identity.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        let tls = if https.is_some() || !tls_flags.is_empty() {
            if let Some(endpoint) = http {
                return Err(EtcdConfigError::TlsWithHttp {
                    endpoint: endpoint.clone(),
                    flags: tls_flags.join(", "),
                });
            }
            let reason = match https {
                Some(e) => format!("--etcd {e}"),
                None => format!("TLS to etcd ({})", tls_flags.join(", ")),
            };
            let ca = self.etcd_ca.ok_or(EtcdConfigError::NoCa { reason })?;
            Some(EtcdTls { ca, identity })
        } else {
            None
        };
        let password = match (self.etcd_password_file, self.etcd_password_env) {
            (Some(_), Some(_)) => return Err(EtcdConfigError::TwoPasswords),
            (Some(file), None) => Some(PasswordSource::File(file)),
            (None, Some(secret)) if secret.0.is_empty() => {
                return Err(EtcdConfigError::EmptyPasswordEnv)
            }
            (None, Some(secret)) => Some(PasswordSource::Env(secret)),
            (None, None) => None,
        };
        let auth = match (self.etcd_user, password) {
            (Some(user), _) if user.is_empty() => return Err(EtcdConfigError::EmptyUser),
            (Some(user), Some(password)) => Some(EtcdAuth { user, password }),
            (Some(user), None) => return Err(EtcdConfigError::NoPassword { user }),
            (None, Some(_)) => return Err(EtcdConfigError::NoUser),
            (None, None) => None,
        };
        Ok(Some(EtcdConfig {
            endpoints: self.etcd,
            tls,
            auth,
        }))
    }
}

// === impl EtcdConfig ===

impl EtcdConfig {
    /// Plaintext `http://` endpoints, no user: the settings before TLS and authentication.
    pub fn plaintext(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            tls: None,
            auth: None,
        }
    }

    /// Reads and checks the files: the CA, the client certificate and key (which must
    /// match), the password file. Done once, at start, so that a wrong file stops the process
    /// with its name instead of failing every connection attempt later.
    pub fn connection(&self) -> Result<EtcdConnection, EtcdConfigError> {
        let tls = self.tls.as_ref().map(EtcdTls::load).transpose()?;
        let user = match &self.auth {
            Some(auth) => Some((auth.user.clone(), auth.password.load()?)),
            None => None,
        };
        Ok(EtcdConnection {
            endpoints: self.endpoints.clone(),
            tls,
            user,
        })
    }

    /// The endpoints as one string, for log lines and messages.
    pub fn shown(&self) -> String {
        self.endpoints.join(",")
    }
}

// === impl EtcdTls ===

impl EtcdTls {
    fn load(&self) -> Result<TlsOptions, EtcdConfigError> {
        // Parsed here only to check them (tonic parses the PEM again when it connects).
        let mut roots = RootCertStore::empty();
        for ca in tls::read_certs("CA certificate", &self.ca).map_err(EtcdConfigError::Ca)? {
            roots.add(ca).map_err(|source| {
                EtcdConfigError::Ca(TlsError::BadCa {
                    path: self.ca.clone(),
                    source,
                })
            })?;
        }
        let ca = tls::read("CA certificate", &self.ca).map_err(EtcdConfigError::Ca)?;
        let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.identity {
            let (cert_pem, key_pem) =
                load_identity(cert, key).map_err(EtcdConfigError::Identity)?;
            options = options.identity(Identity::from_pem(cert_pem, key_pem));
        }
        Ok(options)
    }
}

/// The client certificate's and key's PEM, checked: a certificate, a private key, and the one
/// belonging to the other.
fn load_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let chain = tls::read_certs("client certificate", cert)?;
    let key_pem = tls::read("private key", key)?;
    let parsed = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            })
        }
        Err(source) => {
            return Err(TlsError::BadPem {
                what: "private key",
                path: key.to_owned(),
                source,
            })
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain, parsed, &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(source) => {
            return Err(TlsError::BadKey {
                path: key.to_owned(),
                source,
            })
        }
    }
    Ok((tls::read("client certificate", cert)?, key_pem))
}

// === impl PasswordSource ===

impl PasswordSource {
    fn load(&self) -> Result<Secret, EtcdConfigError> {
        match self {
            PasswordSource::Env(secret) => Ok(secret.clone()),
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    EtcdConfigError::PasswordFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                // `echo secret > file` leaves a newline that is not part of the password.
                let password = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if password.is_empty() {
                    return Err(EtcdConfigError::EmptyPasswordFile { path: path.clone() });
                }
                Ok(Secret(password.to_owned()))
            }
        }
    }
}

// === impl EtcdConnection ===

impl EtcdConnection {
    /// Plaintext, no user: for tests and tools that talk to a local etcd.
    pub fn plaintext(endpoints: Vec<String>) -> EtcdConnection {
        EtcdConnection {
            endpoints,
            tls: None,
            user: None,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoints as one string, for log lines and messages.
    pub fn shown(&self) -> String {
        self.endpoints.join(",")
    }

    /// The user authenticated as, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|(u, _)| u.as_str())
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `options` with this connection's TLS and credentials added.
    pub fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((user, password)) = &self.user {
            // Long-lived clients (the registration, the watches) outlive etcd's token TTL.
            options = options
                .with_user(user.clone(), password.0.clone())
                .with_auto_token_refresh(true);
        }
        options
    }
}

impl fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConnection")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("user", &self.user())
            .finish()
    }
}

/// How long connecting to etcd may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on the etcd connection: a peer that stops answering breaks the watch and
/// keep-alive streams within about `interval + timeout`, instead of leaving them silent.
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3));

/// Checks `--etcd` endpoints: `https://host:port`, `http://host:port` or `host:port` (which
/// scheme goes with which TLS flags is this module's business). Pure: for config
/// validation.
pub fn check_endpoints(endpoints: &[String]) -> Result<(), EtcdError> {
    if endpoints.is_empty() {
        return Err(EtcdError::NoEndpoints);
    }
    const EXPECTED: &str = "expected https://HOST:PORT, http://HOST:PORT or HOST:PORT";
    for e in endpoints {
        let bad = |reason| {
            Err(EtcdError::BadEndpoint {
                endpoint: e.clone(),
                reason,
            })
        };
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"))
            .unwrap_or(e);
        if rest.contains("://") {
            return bad(EXPECTED);
        }
        let hostport = rest.trim_end_matches('/');
        match hostport.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() => {}
            _ => return bad(EXPECTED),
        }
    }
    Ok(())
}

fn options(etcd: &EtcdConnection) -> ConnectOptions {
    etcd.apply(
        ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(H2_KEEPALIVE.0, H2_KEEPALIVE.1)
            .with_keep_alive_while_idle(true),
    )
}

/// A client for `etcd` that connects on first use and reconnects after failures: for a
/// process that must start whether or not etcd is up (calls fail, with [`call`]'s timeout,
/// until it is). Fails only on malformed endpoints; except that with a user, the client
/// authenticates at once (etcd-client does), so it fails like [`connect`] when etcd is down.
pub async fn connect_lazy(etcd: &EtcdConnection) -> Result<Client, EtcdError> {
    check_endpoints(etcd.endpoints())?;
    Client::connect(etcd.endpoints(), Some(options(etcd)))
        .await
        .map_err(|source| EtcdError::Connect {
            endpoints: etcd.shown(),
            tls: etcd.is_tls(),
            source,
        })
}

/// A client for `etcd`, checked by asking etcd for its status (after authenticating, with a
/// user): an unreachable etcd, a refused password or an untrusted certificate is an error
/// naming the endpoints and the cause (within [`CONNECT_TIMEOUT`] + [`CALL_TIMEOUT`]), not a
/// hang. The client reconnects by itself after a later failure; calls on it still need
/// timeouts.
pub async fn connect(etcd: &EtcdConnection) -> Result<Client, EtcdError> {
    check_endpoints(etcd.endpoints())?;
    let shown = etcd.shown();
    let options = options(etcd);
    let after = CONNECT_TIMEOUT + CALL_TIMEOUT;
    let probe = async {
        let client = Client::connect(etcd.endpoints(), Some(options)).await?;
        client.status().await?;
        Ok::<_, crate::client::Error>(client)
    };
    match tokio::time::timeout(after, probe).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(EtcdError::Connect {
            endpoints: shown,
            tls: etcd.is_tls(),
            source,
        }),
        Err(_) => Err(EtcdError::Unreachable {
            endpoints: shown,
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{explain, Refusal};

    #[test]
    fn endpoints() {
        for good in [
            "http://127.0.0.1:2379",
            "10.0.0.1:2379",
            "http://etcd.example:2379/",
            "[::1]:2379",
            "https://h:2379",
        ] {
            check_endpoints(&[good.to_owned()]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(check_endpoints(&[]), Err(EtcdError::NoEndpoints)));
        for bad in [
            "unix:///x",
            "h",
            "http://h:port",
            ":2379",
            "http://h/x:1",
            "https://h",
        ] {
            let err = check_endpoints(&[bad.to_owned()]).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    fn args(endpoints: &[&str]) -> EtcdConnArgs {
        EtcdConnArgs {
            etcd: endpoints.iter().map(|e| e.to_string()).collect(),
            ..EtcdConnArgs::default()
        }
    }

    fn err(a: EtcdConnArgs) -> String {
        a.into_config().expect_err("refused").to_string()
    }

    #[test]
    fn no_endpoints_means_no_etcd() {
        assert_eq!(args(&[]).into_config().unwrap(), None);
        let c = args(&["http://127.0.0.1:2379", "10.0.0.2:2379"])
            .into_config()
            .unwrap()
            .unwrap();
        assert_eq!((c.tls, c.auth), (None, None));
    }

    #[test]
    fn tls_follows_the_endpoints() {
        let ca = || Some(PathBuf::from("ca.pem"));
        let c = EtcdConnArgs {
            etcd_ca: ca(),
            ..args(&["https://etcd:2379"])
        }
        .into_config()
        .unwrap()
        .unwrap();
        assert_eq!(
            c.tls,
            Some(EtcdTls {
                ca: "ca.pem".into(),
                identity: None
            })
        );
        // HOST:PORT with TLS files: TLS.
        let c = EtcdConnArgs {
            etcd_ca: ca(),
            ..args(&["etcd:2379"])
        }
        .into_config()
        .unwrap()
        .unwrap();
        assert!(c.tls.is_some());
        // https:// without a CA.
        let e = err(args(&["https://etcd:2379"]));
        assert!(
            e.contains("--etcd https://etcd:2379 needs --etcd-ca"),
            "{e}"
        );
        // TLS files with http://: refused, not upgraded.
        let e = err(EtcdConnArgs {
            etcd_ca: ca(),
            ..args(&["http://etcd:2379"])
        });
        assert!(
            e.contains("plaintext http://") && e.contains("--etcd-ca"),
            "{e}"
        );
        let e = err(EtcdConnArgs {
            etcd_ca: ca(),
            ..args(&["http://a:2379", "https://b:2379"])
        });
        assert!(e.contains("mixes"), "{e}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let a = EtcdConnArgs {
            etcd_ca: Some("ca".into()),
            etcd_cert: Some("c".into()),
            ..args(&["https://e:1"])
        };
        assert!(err(a).contains("--etcd-cert and --etcd-key go together"));
        let a = EtcdConnArgs {
            etcd_key: Some("k".into()),
            ..args(&["https://e:1"])
        };
        assert!(err(a).contains("go together"));
        // Only a certificate and key: TLS, but the CA is still needed.
        let a = EtcdConnArgs {
            etcd_cert: Some("c".into()),
            etcd_key: Some("k".into()),
            ..args(&["e:1"])
        };
        let e = err(a);
        assert!(
            e.contains("TLS to etcd (--etcd-cert) needs --etcd-ca"),
            "{e}"
        );
    }

    #[test]
    fn user_and_password_go_together() {
        let user = || Some("root".to_owned());
        let e = err(EtcdConnArgs {
            etcd_user: user(),
            ..args(&["e:1"])
        });
        assert!(
            e.contains("--etcd-user root: no password") && e.contains(PASSWORD_ENV),
            "{e}"
        );
        let env = || Some(Secret("pw".into()));
        let e = err(EtcdConnArgs {
            etcd_password_env: env(),
            ..args(&["e:1"])
        });
        assert!(e.contains("needs --etcd-user"), "{e}");
        let e = err(EtcdConnArgs {
            etcd_user: user(),
            etcd_password_env: env(),
            etcd_password_file: Some("f".into()),
            ..args(&["e:1"])
        });
        assert!(e.contains("both set"), "{e}");
        let e = err(EtcdConnArgs {
            etcd_user: user(),
            etcd_password_env: Some(Secret(String::new())),
            ..args(&["e:1"])
        });
        assert!(e.contains("empty"), "{e}");
        let c = EtcdConnArgs {
            etcd_user: user(),
            etcd_password_env: env(),
            ..args(&["e:1"])
        }
        .into_config()
        .unwrap();
        assert_eq!(
            c.unwrap().auth,
            Some(EtcdAuth {
                user: "root".into(),
                password: PasswordSource::Env(Secret("pw".into()))
            })
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let a = EtcdConnArgs {
            etcd_user: Some("root".into()),
            etcd_password_env: Some(Secret("hunter2".into())),
            ..args(&["e:1"])
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        let conn = a.into_config().unwrap().unwrap().connection().unwrap();
        assert!(!format!("{conn:?}").contains("hunter2"), "{conn:?}");
        assert_eq!(conn.user(), Some("root"));
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let status = |s: tonic::Status| crate::client::Error::Status(s);
        let auth = status(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert_eq!(Refusal::of(&auth, Some(true)), Some(Refusal::AuthFailed));
        let text = explain(&auth, Some(true));
        assert!(
            text.starts_with(
                "authentication failed: wrong --etcd-user or password (invalidargument: etcdserver"
            ),
            "{text}"
        );
        let denied = status(tonic::Status::permission_denied(
            "etcdserver: permission denied",
        ));
        assert_eq!(Refusal::of(&denied, None), Some(Refusal::PermissionDenied));
        let untrusted = status(tonic::Status::unavailable(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(explain(&untrusted, Some(true)).contains("certificate not trusted"));
        // "connection closed" means a refused client certificate only on a TLS connection.
        let closed = status(tonic::Status::cancelled(
            "operation was canceled: connection closed",
        ));
        assert_eq!(
            Refusal::of(&closed, Some(true)),
            Some(Refusal::ClientCertRefused)
        );
        assert_eq!(Refusal::of(&closed, Some(false)), None);
        let refused = status(tonic::Status::unavailable("tcp connect error"));
        assert_eq!(Refusal::of(&refused, Some(true)), None);
        assert_eq!(
            explain(&refused, Some(true)),
            "unavailable: tcp connect error"
        );
    }

    #[test]
    fn files_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("busbar-etcd-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let missing = dir.join("missing.pem");
        let tls = |ca: &Path| EtcdConfig {
            tls: Some(EtcdTls {
                ca: ca.to_owned(),
                identity: None,
            }),
            ..EtcdConfig::plaintext(vec!["https://e:1".into()])
        };
        let e = tls(&missing).connection().unwrap_err().to_string();
        assert!(
            e.starts_with("--etcd-ca: ") && e.contains("missing.pem does not exist"),
            "{e}"
        );
        let e = tls(&not_pem).connection().unwrap_err().to_string();
        assert!(e.contains("not.pem contains no PEM certificate"), "{e}");

        // A real CA, and a certificate whose key is someone else's.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let other_key = dir.join("other-key.pem");
        std::fs::write(
            &other_key,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let cert = dir.join("client.pem");
        std::fs::write(&cert, ca_cert.pem()).unwrap();
        let mut c = tls(&ca);
        c.connection().expect("a CA alone is fine");
        c.tls.as_mut().unwrap().identity = Some((cert.clone(), other_key.clone()));
        let e = c.connection().unwrap_err().to_string();
        assert!(
            e.contains("does not belong to certificate") && e.contains("other-key.pem"),
            "{e}"
        );
        let key = dir.join("ca-key.pem");
        std::fs::write(&key, ca_key.serialize_pem()).unwrap();
        c.tls.as_mut().unwrap().identity = Some((cert, key));
        let conn = c.connection().unwrap();
        assert!(conn.is_tls());

        // Password files: the trailing newline is not part of the password; empty is refused.
        let pw = dir.join("pw");
        let auth = |path: &Path| EtcdConfig {
            auth: Some(EtcdAuth {
                user: "u".into(),
                password: PasswordSource::File(path.to_owned()),
            }),
            ..EtcdConfig::plaintext(vec!["e:1".into()])
        };
        std::fs::write(&pw, "s3cret\n").unwrap();
        assert_eq!(
            auth(&pw).auth.unwrap().password.load().unwrap(),
            Secret("s3cret".into())
        );
        std::fs::write(&pw, "\n").unwrap();
        assert!(auth(&pw)
            .connection()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let e = auth(&missing).connection().unwrap_err().to_string();
        assert!(
            e.contains("--etcd-password-file") && e.contains("missing.pem"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
