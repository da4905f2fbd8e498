//! Listen addresses and bound listeners.
//!
//! Plain TCP serves the Docker API without authentication: whoever reaches it owns the host. So
//! a `tcp://` address must be a loopback address unless the operator passes
//! `--allow-remote-plaintext`, and even on loopback every local account can use it (a warning
//! at start says so). A unix socket is what dockerd serves by default: it is created with the
//! mode and group of [`UnixAccess`] (0660 and group `docker`, as dockerd's), so only root and
//! that group's members can connect. It is made in a private directory and renamed into place
//! with its mode and group already set, so there is no moment at which anyone else could
//! connect. A stale socket file left by a dead process is replaced, a live one is refused.
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use crate::io::Stream;
use crate::tls::ServerTls;

/// A `tcp://host:port` or `unix:///path` address to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid listen address {0:?}: expected tcp://IP:PORT or unix:///path")]
    Invalid(String),
    #[error(
        "refusing to serve the Docker API in plain text on {0}: anyone who reaches it controls \
         this host. Listen on a loopback address or a unix socket, or pass \
         --allow-remote-plaintext if that is really what you want"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind { addr: String, source: io::Error },
    #[error("cannot listen on unix://{0}: another process is serving on that socket")]
    InUse(PathBuf),
    #[error("--socket-group {0}: no such group (a group name or a numeric GID)")]
    NoGroup(String),
    #[error("--socket-group {name}: cannot look the group up: {reason}")]
    GroupLookup { name: String, reason: String },
    #[error("--socket-mode {0:?}: expected an octal mode such as 660 or 0660")]
    Mode(String),
}

/// What to try when binding failed for lack of permission.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (run as root, or serve elsewhere: --listen unix:///PATH)"
        }
        _ => "",
    }
}

/// Who may connect to a unix socket: its group and its mode, dockerd's `-G docker` and 0660
/// by default. Whoever can connect controls the engine, as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAccess {
    pub group: SocketGroup,
    /// Permission bits (`0o660`).
    pub mode: u32,
}

/// The group a unix socket is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketGroup {
    /// The process's own (root's, for a daemon): no change.
    Unchanged,
    /// `docker` when that group exists (as dockerd's default); otherwise the process's own,
    /// with a warning that only root can use the socket.
    DockerIfPresent,
    /// This group, which must exist (`--socket-group NAME`).
    Named(String),
    /// This numeric GID (`--socket-group 999`).
    Id(u32),
}

impl Default for UnixAccess {
    /// Mode 0660 and the process's group: what a socket made without flags gets (tests).
    fn default() -> Self {
        UnixAccess {
            group: SocketGroup::Unchanged,
            mode: 0o660,
        }
    }
}

impl UnixAccess {
    /// The daemons' default: group `docker` if it exists, mode 0660.
    pub fn docker_default() -> Self {
        UnixAccess {
            group: SocketGroup::DockerIfPresent,
            mode: 0o660,
        }
    }

    /// From `--socket-group` (none: the default, `docker` if it exists; `""`: unchanged) and
    /// `--socket-mode` (octal, default 660). Pure: the group is looked up at bind time.
    pub fn from_flags(group: Option<&str>, mode: Option<&str>) -> Result<Self, ListenError> {
        let group = match group {
            None => SocketGroup::DockerIfPresent,
            Some("") => SocketGroup::Unchanged,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => SocketGroup::Id(gid),
                Err(_) => SocketGroup::Named(g.to_owned()),
            },
        };
        let mode = match mode {
            None => 0o660,
            Some(m) => u32::from_str_radix(m.strip_prefix("0o").unwrap_or(m), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| ListenError::Mode(m.to_owned()))?,
        };
        Ok(UnixAccess { group, mode })
    }

    /// The GID to give the socket (and its name, for the log), or `None` to leave it.
    fn resolve(&self) -> Result<Option<(u32, String)>, ListenError> {
        let by_name = |name: &str| {
            nix::unistd::Group::from_name(name)
                .map_err(|e| ListenError::GroupLookup {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })
                .map(|g| g.map(|g| (g.gid.as_raw(), g.name)))
        };
        match &self.group {
            SocketGroup::Unchanged => Ok(None),
            SocketGroup::Id(gid) => Ok(Some((*gid, gid.to_string()))),
            SocketGroup::Named(name) => by_name(name)?
                .map(Some)
                .ok_or_else(|| ListenError::NoGroup(name.clone())),
            SocketGroup::DockerIfPresent => by_name("docker"),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(ListenAddr::Unix(PathBuf::from(path)));
            }
        } else if let Some(hostport) = s.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            let hostport = hostport.replace("localhost:", "127.0.0.1:");
            if let Ok(sa) = hostport.parse::<SocketAddr>() {
                return Ok(ListenAddr::Tcp(sa));
            }
        }
        Err(ListenError::Invalid(s.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "tcp://{sa}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

impl ListenAddr {
    /// Refuses a non-loopback TCP address unless `allow_remote` is set.
    pub fn check_exposure(&self, allow_remote: bool) -> Result<(), ListenError> {
        match self {
            ListenAddr::Tcp(sa) if !allow_remote && !is_loopback(sa.ip()) => {
                Err(ListenError::NotLoopback(*sa))
            }
            _ => Ok(()),
        }
    }

    /// Binds; a unix socket gets mode 0660 and the process's group ([`UnixAccess::default`]).
    pub async fn bind(&self) -> Result<Listener, ListenError> {
        self.bind_with(&UnixAccess::default()).await
    }

    /// Binds; a unix socket gets `access`'s group and mode before anyone can connect to it.
    pub async fn bind_with(&self, access: &UnixAccess) -> Result<Listener, ListenError> {
        let bind_err = |source| ListenError::Bind {
            addr: self.to_string(),
            source,
        };
        match self {
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(
                TcpListener::bind(sa).await.map_err(bind_err)?,
            )),
            ListenAddr::Unix(path) => {
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(ListenError::InUse(path.clone()));
                    }
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                let mut group = access.resolve()?;
                let l = match bind_unix_private(path, access.mode, group.as_ref().map(|g| g.0)) {
                    // Not root and not a member of docker: the default cannot apply, and the
                    // socket stays ours alone (the group asked for by name is an error).
                    Err(e)
                        if e.kind() == io::ErrorKind::PermissionDenied
                            && access.group == SocketGroup::DockerIfPresent
                            && group.is_some() =>
                    {
                        warn!(socket = %path.display(), error = %e, "cannot give the socket to group docker (this user is neither root nor a member): only this user can use it");
                        group = None;
                        bind_unix_private(path, access.mode, None).map_err(bind_err)?
                    }
                    bound => bound.map_err(bind_err)?,
                };
                let mode = format!("{:04o}", access.mode);
                match (&access.group, group) {
                    (_, Some((_, name))) => info!(
                        socket = %path.display(), group = %name, %mode,
                        "unix socket: root and members of group {name} can use the Docker API"
                    ),
                    (SocketGroup::DockerIfPresent, None) if nix::unistd::geteuid().is_root() => {
                        warn!(
                            socket = %path.display(), %mode,
                            "group docker not found: only root can use the socket \
                             (create the group, or pass --socket-group NAME)"
                        )
                    }
                    (_, None) => info!(socket = %path.display(), %mode, "unix socket ready"),
                }
                if access.mode & 0o002 != 0 {
                    warn!(socket = %path.display(), %mode, "the socket is world-writable: every local user can use the Docker API, as root");
                }
                Ok(Listener::Unix(l, path.clone()))
            }
        }
    }

    /// Says in the log who can use a plain TCP listener: every local account on loopback,
    /// anyone who reaches it otherwise.
    pub fn warn_exposure(&self) {
        if let ListenAddr::Tcp(sa) = self {
            if is_loopback(sa.ip()) {
                warn!(listen = %self, "plain TCP on loopback: every local user (any account, even nobody) can use the Docker API, as root. Prefer the unix socket (--listen unix:///run/busbar.sock with --socket-group)");
            } else {
                warn!(listen = %self, "plain TCP beyond loopback (--allow-remote-plaintext): anyone who reaches this address controls the host. Use --tls-listen with --tlsverify");
            }
        }
    }
}

/// Binds a unix socket at `path` with `mode` and group `gid` set before it appears there: it is
/// bound in a new directory only we can enter (0700, next to `path`, so on the same
/// filesystem), given its mode and group, then renamed into place.
fn bind_unix_private(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<UnixListener> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    let private = parent.join(format!(
        ".busbar-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = (|| {
        let l = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
        }
        std::fs::rename(&staged, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A bound listener. A unix listener removes its socket file when dropped.
pub enum Listener {
    Tcp(TcpListener),
    /// TCP whose connections speak TLS (`--tls-listen`); the handshake is the connection's
    /// business ([`ServerTls::accept`]), not the accept loop's.
    Tls(TcpListener, Arc<ServerTls>),
    Unix(UnixListener, PathBuf),
}

/// Parses a `--tls-listen` address: `[tcp://]IP[:PORT]` (or `localhost`), port 2376 when
/// none is given, as dockerd's TLS port.
pub fn parse_tls_listen(s: &str) -> Result<SocketAddr, ListenError> {
    let bare = s.strip_prefix("tcp://").unwrap_or(s).trim_end_matches('/');
    let bare = bare.replace("localhost", "127.0.0.1");
    if let Ok(sa) = bare.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let ip = bare.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DOCKER_TLS_PORT))
        .map_err(|_| ListenError::Invalid(s.to_string()))
}

/// dockerd's TLS port.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// Binds a `--tls-listen` address; connections are served with `tls`.
pub async fn bind_tls(addr: SocketAddr, tls: Arc<ServerTls>) -> Result<Listener, ListenError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            addr: format!("tcp://{addr} (TLS)"),
            source,
        })?;
    Ok(Listener::Tls(l, tls))
}

/// Whether an address is loopback (IPv4-mapped loopback too).
pub fn is_loopback_addr(sa: &SocketAddr) -> bool {
    is_loopback(sa.ip())
}

impl Listener {
    /// The address actually bound (the real port when bound to port 0).
    pub fn local_addr(&self) -> ListenAddr {
        match self {
            Listener::Tcp(l) | Listener::Tls(l, _) => {
                ListenAddr::Tcp(l.local_addr().expect("a bound TCP listener has an address"))
            }
            Listener::Unix(_, p) => ListenAddr::Unix(p.clone()),
        }
    }

    /// The TLS its connections speak, if any.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        match self {
            Listener::Tls(_, tls) => Some(tls),
            _ => None,
        }
    }

    /// The next connection, not yet through any TLS handshake (see [`Listener::tls`]).
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) | Listener::Tls(l, _) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), format!("unix://{}", path.display())))
            }
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.local_addr().fmt(f)?;
        match self {
            Listener::Tls(_, tls) => write!(f, " (TLS, {})", tls.describe()),
            _ => Ok(()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_asked() {
        for ok in [
            "tcp://127.0.0.1:2375",
            "tcp://[::1]:2375",
            "tcp://localhost:2375",
            "unix:///run/x.sock",
        ] {
            let a: ListenAddr = ok.parse().unwrap();
            a.check_exposure(false).unwrap();
        }
        for remote in [
            "tcp://0.0.0.0:2375",
            "tcp://10.1.2.3:2375",
            "tcp://[::]:2375",
        ] {
            let a: ListenAddr = remote.parse().unwrap();
            let err = a.check_exposure(false).unwrap_err().to_string();
            assert!(err.contains("--allow-remote-plaintext"), "{err}");
            a.check_exposure(true).unwrap();
        }
    }

    #[test]
    fn socket_flags() {
        assert_eq!(
            UnixAccess::from_flags(None, None).unwrap(),
            UnixAccess::docker_default()
        );
        let a = UnixAccess::from_flags(Some("ops"), Some("0600")).unwrap();
        assert_eq!((a.group, a.mode), (SocketGroup::Named("ops".into()), 0o600));
        let a = UnixAccess::from_flags(Some("999"), Some("660")).unwrap();
        assert_eq!((a.group, a.mode), (SocketGroup::Id(999), 0o660));
        assert_eq!(
            UnixAccess::from_flags(Some(""), None).unwrap().group,
            SocketGroup::Unchanged
        );
        for bad in ["rw", "0888", "1777", "9"] {
            let err = UnixAccess::from_flags(None, Some(bad)).unwrap_err();
            assert!(err.to_string().contains("--socket-mode"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_socket_has_its_mode_from_the_first_moment_and_a_missing_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let addr = ListenAddr::Unix(path.clone());
        let access = UnixAccess::from_flags(Some(""), Some("600")).unwrap();
        let l = addr.bind_with(&access).await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the private directory is gone"
        );
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(l);
        assert!(!path.exists(), "the socket is removed with its listener");

        let access = UnixAccess::from_flags(Some("no-such-group-bbt"), None).unwrap();
        let err = match addr.bind_with(&access).await {
            Ok(_) => panic!("bound with a group that does not exist"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no such group"), "{err}");
    }

    #[test]
    fn tls_addresses_default_to_dockers_tls_port() {
        for (given, want) in [
            ("0.0.0.0", "0.0.0.0:2376"),
            ("tcp://10.0.0.5", "10.0.0.5:2376"),
            ("tcp://0.0.0.0:2377", "0.0.0.0:2377"),
            ("localhost:1234", "127.0.0.1:1234"),
            ("[::]", "[::]:2376"),
            ("[::1]:9", "[::1]:9"),
        ] {
            assert_eq!(
                parse_tls_listen(given).unwrap().to_string(),
                want,
                "{given}"
            );
        }
        for bad in ["", "unix:///x", "tcp://host.example", "1.2.3.4:x"] {
            assert!(parse_tls_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_addresses_are_named() {
        for bad in [
            "2375",
            "tcp://nohost",
            "unix://relative",
            "http://127.0.0.1:1",
        ] {
            let err = bad.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
