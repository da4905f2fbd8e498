//! How to reach etcd: [`ConnectOptions`] (timeouts, HTTP/2 keepalives, TLS, a user) and the
//! endpoints, parsed and turned into one lazy tonic channel each.
//!
//! An endpoint is `http://HOST:PORT` (plaintext), `https://HOST:PORT` (TLS) or `HOST:PORT`
//! (TLS when TLS options are given, plaintext otherwise). TLS options with an `http://`
//! endpoint, or an `https://` endpoint without them, are refused: the two say different
//! things, and guessing would hide the mistake.

use std::fmt;
use std::time::Duration;

pub use tonic::transport::{Certificate, Identity};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::Error;

/// Options for [`crate::Client::connect`]. `Debug` shows no password.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) user: Option<(String, String)>,
    pub(crate) auto_token_refresh: bool,
    pub(crate) tls: Option<TlsOptions>,
    connect_timeout: Option<Duration>,
    keep_alive: Option<(Duration, Duration)>,
    keep_alive_while_idle: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new()
    }
}

impl ConnectOptions {
    /// No user, no TLS, no connect timeout, no HTTP/2 keepalives.
    pub fn new() -> Self {
        ConnectOptions {
            user: None,
            auto_token_refresh: true,
            tls: None,
            connect_timeout: None,
            keep_alive: None,
            keep_alive_while_idle: false,
        }
    }

    /// Authenticate as `name` (etcd with `auth enable`). The client authenticates when it
    /// connects, so a wrong password fails [`crate::Client::connect`].
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Whether to authenticate again, and retry the call once, when etcd says the token is
    /// no longer valid (it expires after etcd's `--auth-token-ttl` unused). On by default.
    pub fn with_auto_token_refresh(mut self, on: bool) -> Self {
        self.auto_token_refresh = on;
        self
    }

    /// How long establishing a connection (TCP, then TLS) may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// HTTP/2 pings every `interval`, the connection closed when one is not answered within
    /// `timeout`: this is what ends a watch or keep-alive stream whose etcd went away without
    /// a word. etcd refuses pings more often than its `--grpc-keepalive-min-time` (5 s).
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Whether to ping also while no call or stream is open (with [`Self::with_keep_alive`]).
    pub fn with_keep_alive_while_idle(mut self, on: bool) -> Self {
        self.keep_alive_while_idle = on;
        self
    }

    /// TLS to etcd: for `https://` endpoints, and `HOST:PORT` ones.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("auto_token_refresh", &self.auto_token_refresh)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("keep_alive_while_idle", &self.keep_alive_while_idle)
            .finish()
    }
}

/// TLS to etcd, with rustls: the CA certificates that etcd's server certificate must chain
/// to (there is no fallback to the system's roots), and optionally a client certificate for
/// etcd's `--client-cert-auth`. `Debug` shows no key.
#[derive(Clone, Default)]
pub struct TlsOptions {
    cas: Vec<Certificate>,
    identity: Option<Identity>,
    domain: Option<String>,
}

impl TlsOptions {
    /// No CA yet: add one with [`Self::ca_certificate`].
    pub fn new() -> Self {
        TlsOptions::default()
    }

    /// Trust this CA (PEM, may hold several certificates) for etcd's server certificate.
    pub fn ca_certificate(mut self, ca: Certificate) -> Self {
        self.cas.push(ca);
        self
    }

    /// The client certificate and key to present (`Identity::from_pem(cert, key)`).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The name etcd's certificate must be valid for, when it is not the endpoint's host.
    pub fn domain_name(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn to_tonic(&self, handshake_timeout: Option<Duration>) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificates(self.cas.iter().cloned());
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        if let Some(timeout) = handshake_timeout {
            config = config.timeout(timeout);
        }
        config
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("cas", &self.cas.len())
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

const EXPECTED: &str = "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT";

/// The URI for `endpoint` (`http://HOST:PORT` or `https://HOST:PORT`), checked: see the
/// module's doc.
pub(crate) fn endpoint_uri(endpoint: &str, tls: bool) -> Result<String, Error> {
    let bad = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let (https, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        if !tls {
            return Err(bad(
                "https:// needs TLS options (ConnectOptions::with_tls) with the CA that signed etcd's certificate",
            ));
        }
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls {
            return Err(bad(
                "plaintext http://, but TLS options are given: use https://HOST:PORT (or drop the TLS options)",
            ));
        }
        (false, rest)
    } else {
        (tls, endpoint)
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(bad(EXPECTED));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty()
        || host.contains(['/', '@', '?', '#', ' '])
        || (host.contains(':') && !bracketed)
        || !matches!(port.parse::<u16>(), Ok(p) if p != 0)
    {
        return Err(bad(EXPECTED));
    }
    let scheme = if https { "https" } else { "http" };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// A channel to one endpoint, which connects on first use and reconnects after a failure.
/// Needs a Tokio runtime (it spawns the channel's worker).
pub(crate) fn lazy_channel(uri: &str, options: &ConnectOptions) -> Result<Channel, Error> {
    let mut endpoint =
        Endpoint::from_shared(uri.to_owned()).map_err(|e| Error::InvalidEndpoint {
            endpoint: uri.to_owned(),
            reason: e.to_string(),
        })?;
    if uri.starts_with("https://") {
        if let Some(tls) = &options.tls {
            endpoint = endpoint
                .tls_config(tls.to_tonic(options.connect_timeout))
                .map_err(Error::Transport)?;
        }
    }
    if let Some(timeout) = options.connect_timeout {
        endpoint = endpoint.connect_timeout(timeout);
    }
    if let Some((interval, timeout)) = options.keep_alive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(options.keep_alive_while_idle);
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_scheme_and_the_tls_options() {
        let ok = |e, tls| endpoint_uri(e, tls).unwrap();
        assert_eq!(ok("http://127.0.0.1:2379", false), "http://127.0.0.1:2379");
        assert_eq!(ok("https://etcd:2379/", true), "https://etcd:2379");
        assert_eq!(ok("etcd:2379", false), "http://etcd:2379");
        assert_eq!(ok("etcd:2379", true), "https://etcd:2379");
        assert_eq!(ok("[::1]:2379", false), "http://[::1]:2379");
        let err = |e, tls| endpoint_uri(e, tls).unwrap_err().to_string();
        let e = err("http://etcd:2379", true);
        assert!(e.contains("plaintext http://, but TLS options"), "{e}");
        let e = err("https://etcd:2379", false);
        assert!(e.contains("https:// needs TLS options"), "{e}");
        for bad in [
            "",
            "etcd",
            "ftp://etcd:2379",
            "http://etcd",
            "http://:2379",
            "etcd:0",
            "etcd:70000",
            "http://etcd:2379/v3",
            "user@etcd:2379",
            "::1:2379",
        ] {
            let e = err(bad, false);
            assert!(e.contains("expected http://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let options = ConnectOptions::new()
            .with_user("root", "hunter2")
            .with_tls(TlsOptions::new().identity(Identity::from_pem("CERT", "SECRET-KEY")));
        let shown = format!("{options:?}");
        assert!(shown.contains("root"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("SECRET-KEY"),
            "{shown}"
        );
    }

    #[test]
    fn builders_set_what_they_say() {
        let o = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_auto_token_refresh(false);
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            o.keep_alive,
            Some((Duration::from_secs(10), Duration::from_secs(3)))
        );
        assert!(o.keep_alive_while_idle && !o.auto_token_refresh);
        assert!(ConnectOptions::default().auto_token_refresh);
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem("CA1"))
            .ca_certificate(Certificate::from_pem("CA2"))
            .domain_name("etcd.internal");
        assert_eq!(tls.cas.len(), 2);
        assert_eq!(tls.domain.as_deref(), Some("etcd.internal"));
    }
}
