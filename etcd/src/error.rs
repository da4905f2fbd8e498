//! Errors talking to etcd, and the timeout every unary call runs under. Each error names
//! the endpoints or the key at fault, and keeps its kind: an unreachable etcd, a call that
//! timed out, a refusal an operator must fix ([`Refusal`]), an entry that does not parse.

use std::time::Duration;

/// The longest any single unary etcd call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors talking to etcd. Each names the endpoints or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("--etcd: no endpoint given")]
    NoEndpoints,
    #[error("--etcd {endpoint:?}: {reason}")]
    BadEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error(
        "--etcd-prefix {prefix:?}: must start with '/', not end with '/', and contain no '//'"
    )]
    BadPrefix { prefix: String },
    #[error("etcd at {endpoints}: {}", explain(source, Some(*tls)))]
    Connect {
        endpoints: String,
        /// Whether the connection was TLS: the same symptom means different things.
        tls: bool,
        #[source]
        source: crate::client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {after:?}")]
    Unreachable { endpoints: String, after: Duration },
    #[error("etcd: {op} {key}: {}", explain(source, None))]
    Call {
        op: &'static str,
        key: String,
        #[source]
        source: crate::client::Error,
    },
    #[error("etcd: {op} {key}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    #[error("etcd: {key}: not a valid entry: {reason}")]
    BadEntry { key: String, reason: String },
}

impl EtcdError {
    /// Which of the usual refusals (a wrong password, an untrusted certificate, ...) this
    /// is, if one: a problem an operator must fix, which retrying will not.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            EtcdError::Connect { tls, source, .. } => Refusal::of(source, Some(*tls)),
            EtcdError::Call { source, .. } => Refusal::of(source, None),
            _ => None,
        }
    }
}

/// An etcd client error in one line: for a gRPC status, its code, message and root cause
/// ("unavailable: tcp connect error: Connection refused (os error 111)") rather than the
/// client's debug dump of the whole chain.
pub fn describe(e: &crate::client::Error) -> String {
    let crate::client::Error::Status(status) = e else {
        return e.to_string();
    };
    let mut text = format!("{:?}", status.code()).to_lowercase();
    if !status.message().is_empty() {
        text = format!("{text}: {}", status.message());
    }
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut root = None;
    while let Some(c) = cause {
        root = Some(c);
        cause = c.source();
    }
    match root.map(|r| r.to_string()) {
        Some(r) if !text.contains(&r) => format!("{text}: {r}"),
        _ => text,
    }
}

/// Runs one etcd call with [`CALL_TIMEOUT`]; errors name the operation and the key.
pub async fn call<T>(
    op: &'static str,
    key: &str,
    fut: impl std::future::Future<Output = Result<T, crate::client::Error>>,
) -> Result<T, EtcdError> {
    call_within(CALL_TIMEOUT, op, key, fut).await
}

pub(crate) async fn call_within<T>(
    after: Duration,
    op: &'static str,
    key: &str,
    fut: impl std::future::Future<Output = Result<T, crate::client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Call {
            op,
            key: key.to_owned(),
            source,
        }),
        Err(_) => Err(EtcdError::Timeout {
            op,
            key: key.to_owned(),
            after,
        }),
    }
}

/// One of the usual reasons etcd refuses a busbar process: a misconfiguration, which
/// retrying does not cure. Its `Display` says what to fix, in one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("authentication failed: wrong --etcd-user or password")]
    AuthFailed,
    #[error(
        "--etcd-user is given, but authentication is off in this etcd: drop --etcd-user, or run `etcdctl auth enable`"
    )]
    AuthNotEnabled,
    #[error(
        "etcd requires authentication: give --etcd-user and a password, or a client certificate whose CN is an etcd user"
    )]
    AuthRequired,
    #[error(
        "permission denied: the etcd user (--etcd-user, or else the CN of --etcd-cert) has no role granting this key"
    )]
    PermissionDenied,
    #[error("TLS: certificate not trusted: etcd's server certificate is not signed by --etcd-ca")]
    ServerCertUntrusted,
    #[error("TLS: etcd's server certificate is not valid for the host in --etcd")]
    ServerCertWrongName,
    #[error("TLS: etcd's server certificate has expired, or is not valid yet")]
    ServerCertExpired,
    #[error(
        "TLS: etcd closed the connection after the handshake, most likely refusing the client certificate: \
         with --client-cert-auth it wants --etcd-cert/--etcd-key from a CA in its --trusted-ca-file"
    )]
    ClientCertRefused,
    #[error(
        "TLS handshake failed: the endpoint does not speak TLS; for a plaintext etcd, use http://"
    )]
    NotTls,
    #[error("the connection broke at once: if etcd serves TLS there, use https:// and --etcd-ca")]
    TlsOnly,
}

impl Refusal {
    /// The refusal `e` shows, if it is one; `tls` says whether the connection was TLS (unknown
    /// for a call on a client already made: `None`).
    pub fn of(e: &crate::client::Error, tls: Option<bool>) -> Option<Refusal> {
        let crate::client::Error::Status(status) = e else {
            return None;
        };
        let message = status.message();
        // The TLS and transport causes are in the source chain, not always in the message.
        let text = describe(e);
        let refusal = if message.contains("authentication failed") {
            Refusal::AuthFailed
        } else if message.contains("authentication is not enabled") {
            Refusal::AuthNotEnabled
        } else if message.contains("user name is empty") || message.contains("user name not found")
        {
            Refusal::AuthRequired
        } else if message.contains("permission denied") {
            Refusal::PermissionDenied
        } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
            Refusal::ServerCertUntrusted
        } else if text.contains("not valid for name") {
            Refusal::ServerCertWrongName
        } else if text.contains("invalid peer certificate")
            && (text.contains("xpired") || text.contains("NotValidYet"))
        {
            Refusal::ServerCertExpired
        } else if text.contains("tls handshake eof") || text.contains("corrupt message") {
            Refusal::NotTls
        } else if tls == Some(true)
            && status.code() == tonic::Code::Cancelled
            && text.contains("connection closed")
        {
            Refusal::ClientCertRefused
        } else if tls == Some(false)
            && (text.contains("broken pipe") || text.contains("connection reset"))
        {
            Refusal::TlsOnly
        } else {
            return None;
        };
        Some(refusal)
    }
}

/// An etcd client error in one line, led by what to fix when it is a [`Refusal`]:
/// "authentication failed: wrong --etcd-user or password (invalidargument: etcdserver: ...)".
pub fn explain(e: &crate::client::Error, tls: Option<bool>) -> String {
    match Refusal::of(e, tls) {
        Some(refusal) => format!("{refusal} ({})", describe(e)),
        None => describe(e),
    }
}
