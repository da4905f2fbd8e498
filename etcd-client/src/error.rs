//! [`Error`]: what a call can fail with, the kinds kept apart so that callers can tell a
//! mistake in their own arguments from a connection that could not be made and from etcd's
//! answer.

use std::error::Error as StdError;
use std::fmt;

/// Why a call failed. Each message is one line.
///
/// For [`Error::Status`] and [`Error::Transport`], [`std::error::Error::source`] leads to the
/// causes (the TCP or TLS error of a connection that could not be made: rustls'
/// `invalid peer certificate: UnknownIssuer`, `Connection refused`, ...), which the message
/// also ends with.
#[derive(Debug)]
pub enum Error {
    /// An argument that can never work (no endpoint at all, ...).
    InvalidArgs(String),
    /// An endpoint that is not `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`, or
    /// that contradicts the TLS options.
    InvalidEndpoint { endpoint: String, reason: String },
    /// The connection to an endpoint could not be set up before dialling, e.g. a CA
    /// certificate or client identity that rustls refuses.
    Transport(tonic::transport::Error),
    /// A gRPC status: etcd's answer (`etcdserver: ...`), or the channel's when etcd could not
    /// be reached (`unavailable`, with the cause as the source).
    Status(tonic::Status),
    /// A key or value that is not UTF-8 ([`crate::KeyValue::key_str`], ...).
    Utf8(std::str::Utf8Error),
    /// The watch or lease keep-alive stream has ended: nothing more can be sent on it.
    StreamClosed(&'static str),
    /// The lease to keep alive does not exist (it expired or was revoked).
    LeaseNotFound(i64),
    /// etcd returned an authentication token that cannot be sent back as gRPC metadata.
    InvalidToken,
}

impl Error {
    /// The gRPC status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgs(what) => write!(f, "invalid argument: {what}"),
            Error::InvalidEndpoint { endpoint, reason } => {
                write!(f, "etcd endpoint {endpoint:?}: {reason}")
            }
            Error::Transport(e) => {
                // tonic's own text is only "transport error": the cause says what.
                f.write_str("cannot set up the connection to etcd")?;
                with_root_cause(f, "", Some(e))
            }
            Error::Status(s) => {
                write!(f, "{}", code_text(s.code()))?;
                if !s.message().is_empty() {
                    write!(f, ": {}", s.message())?;
                }
                with_root_cause(f, s.message(), s.source())
            }
            Error::Utf8(e) => write!(f, "not UTF-8: {e}"),
            Error::StreamClosed(stream) => write!(f, "the etcd {stream} stream has ended"),
            Error::LeaseNotFound(id) => {
                write!(f, "lease {id:x} not found (it expired or was revoked)")
            }
            Error::InvalidToken => {
                f.write_str("etcd returned an authentication token that is not valid metadata")
            }
        }
    }
}

/// Appends ": <root cause>" unless `shown` already says it.
fn with_root_cause(
    f: &mut fmt::Formatter<'_>,
    shown: &str,
    mut cause: Option<&(dyn StdError + 'static)>,
) -> fmt::Result {
    let mut root = None;
    while let Some(c) = cause {
        root = Some(c);
        cause = c.source();
    }
    match root.map(|r| r.to_string()) {
        Some(r) if !shown.contains(&r) => write!(f, ": {r}"),
        _ => Ok(()),
    }
}

impl StdError for Error {
    /// For a status, the status's own source (what made the channel fail), not the status:
    /// its `Display` repeats its source's debug dump.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            Error::Status(s) => s.source(),
            Error::Utf8(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Status(s)
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::Utf8(e)
    }
}

/// A gRPC code as words ("invalid argument", "unavailable", ...).
fn code_text(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid argument",
        DeadlineExceeded => "deadline exceeded",
        NotFound => "not found",
        AlreadyExists => "already exists",
        PermissionDenied => "permission denied",
        ResourceExhausted => "resource exhausted",
        FailedPrecondition => "failed precondition",
        Aborted => "aborted",
        OutOfRange => "out of range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data loss",
        Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_status_is_one_line_with_its_root_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(Arc::new(io));
        let e = Error::Status(status);
        assert_eq!(
            e.to_string(),
            "unavailable: tcp connect error: Connection refused"
        );
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("Connection refused")
        );
        let e = Error::Status(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert_eq!(
            e.to_string(),
            "invalid argument: etcdserver: authentication failed, invalid user ID or password"
        );
        assert!(e.status().is_some());
    }

    #[test]
    fn other_kinds_read_as_one_line() {
        let e = Error::InvalidEndpoint {
            endpoint: "ftp://x:1".into(),
            reason: "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT".into(),
        };
        assert_eq!(
            e.to_string(),
            "etcd endpoint \"ftp://x:1\": expected http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        );
        assert_eq!(
            Error::LeaseNotFound(255).to_string(),
            "lease ff not found (it expired or was revoked)"
        );
        assert_eq!(
            Error::StreamClosed("watch").to_string(),
            "the etcd watch stream has ended"
        );
    }
}
