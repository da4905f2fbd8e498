//! Command-line flags and `BUSBAR_*` environment variables, turned into a validated
//! [`Config`]. Pure: nothing here touches the network or the filesystem.

#[cfg(feature = "cluster")]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use busbar_engine::{addr::AddrError, EngineAddr, EngineOptions};
use busbar_http::listen::{
    is_loopback_addr, parse_tls_listen, ListenAddr, ListenError, UnixAccess,
};
use busbar_runtime::logging::LogFormat;
use busbar_tls::ClientTlsFiles;
use clap::Parser;
#[cfg(feature = "cluster")]
use {
    busbar_etcd::conn::{EtcdConfig, EtcdConfigError, EtcdConnArgs},
    busbar_tls::{PartialTls, TlsArgs, TlsFiles},
};

/// The default `--hook-log`.
pub const DEFAULT_HOOK_LOG: &str = "/var/lib/busbar/hook-calls.jsonl";

/// The default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/busbar";

/// Where the Docker API is served when no `--listen` is given: a unix socket, as dockerd's
/// `/var/run/docker.sock`, for root and the `--socket-group` only.
pub const DEFAULT_LISTEN: &str = "unix:///run/busbar.sock";

/// busbar-agent: serves this host's Docker Engine API and runs adapter chains on it.
#[derive(Debug, Parser)]
#[command(name = "busbar-agent", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub local: LocalArgs,

    #[cfg(feature = "cluster")]
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Flags of the agent's cluster half: gRPC for gateways, etcd.
#[cfg(feature = "cluster")]
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Serve gateways over gRPC with mutual TLS on HOST:PORT (needs --tls-ca/--tls-cert/--tls-key).
    /// With it, the agent listens locally only where --listen says.
    #[arg(long, env = "BUSBAR_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// The HOST:PORT gateways reach this agent on (default: the --grpc-listen address).
    #[arg(long, env = "BUSBAR_ADVERTISE")]
    pub advertise: Option<String>,

    /// This node's name; must be the CN of --tls-cert (the default).
    #[arg(long, env = "BUSBAR_NODE_NAME")]
    pub node_name: Option<String>,

    /// A node label, k=v. Repeatable.
    #[arg(long = "label", env = "BUSBAR_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// A test double of an agent older than lanes: answer the `Lane` rpc with UNIMPLEMENTED,
    /// so that gateways fall back to one `Exchange` call per exchange. For the tests of the
    /// hop's version negotiation; hidden.
    #[arg(long, hide = true, env = "BUSBAR_NO_LANES")]
    pub no_lanes: bool,

    #[command(flatten)]
    pub tls: TlsArgs,

    // etcd (--etcd URLS, its TLS and user): register this node there, under a lease, so
    // that gateways started with --etcd find it, and take the adapter chains from there.
    // Needs --grpc-listen.
    #[command(flatten)]
    pub etcd: EtcdConnArgs,

    /// The etcd key prefix of this cluster.
    #[arg(long, env = "BUSBAR_ETCD_PREFIX", default_value = "/busbar")]
    pub etcd_prefix: String,

    /// Seconds the node's registration outlives the agent (the etcd lease TTL).
    #[arg(long, env = "BUSBAR_REGISTRATION_TTL", default_value_t = 10)]
    pub registration_ttl: u64,

    /// Where the agent keeps state: the last-known-good adapter chains from etcd
    /// (chains-cache.json), used when etcd is unreachable at start.
    #[arg(long, env = "BUSBAR_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Flags for serving the Docker API on this machine, shared by the agent and the gateway
/// (whose embedded mode is an agent in-process).
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// The Docker engine to forward to: unix:///path or tcp://host:port.
    #[arg(
        long,
        env = "BUSBAR_DOCKER",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: String,

    /// Where to serve the Docker API: unix:///path or tcp://IP:PORT. Repeatable.
    /// Default: unix:///run/busbar.sock (root and --socket-group only). Plain TCP gives the
    /// engine to every local user; it must be a loopback address unless
    /// --allow-remote-plaintext is given.
    #[arg(long = "listen", env = "BUSBAR_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,

    /// The group of the unix sockets (a name or a GID): its members can use the Docker API.
    /// Default: docker, if that group exists (else root only, as the log says); "" keeps
    /// the process's group.
    #[arg(long, env = "BUSBAR_SOCKET_GROUP", value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// The mode of the unix sockets, in octal. Default: 660.
    #[arg(long, env = "BUSBAR_SOCKET_MODE", value_name = "MODE")]
    pub socket_mode: Option<String>,

    /// Serve the Docker API over TLS on [tcp://]IP[:PORT] (port 2376 when none is given), as
    /// dockerd's -H tcp://0.0.0.0:2376 --tlsverify. Repeatable. Needs --tlscert and --tlskey,
    /// and --tlsverify with --tlscacert unless the address is loopback.
    #[arg(
        long = "tls-listen",
        env = "BUSBAR_TLS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub tls_listen: Vec<String>,

    /// Accept on --tls-listen only clients whose certificate is signed by --tlscacert (docker
    /// --tlsverify). With a busbar cluster CA, the certificate must also have the client role.
    #[arg(long, env = "BUSBAR_TLSVERIFY")]
    pub tlsverify: bool,

    /// The CA that signs the certificates of Docker clients (with --tlsverify): the only one
    /// trusted, no system roots.
    #[arg(long, env = "BUSBAR_TLSCACERT", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,

    /// The certificate --tls-listen shows Docker clients (PEM, leaf first), valid for the
    /// name or address they dial.
    #[arg(long, env = "BUSBAR_TLSCERT", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,

    /// The private key of --tlscert (PEM).
    #[arg(long, env = "BUSBAR_TLSKEY", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,

    /// Serve Prometheus metrics, /healthz and /readyz on IP:PORT (off by default). Loopback
    /// is plain HTTP; any other address speaks --tls-listen's TLS (with --tlsverify, only
    /// clients with a certificate), or needs --allow-remote-plaintext.
    #[arg(long, env = "BUSBAR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Export each request's span over OTLP/gRPC to the OpenTelemetry collector at URL
    /// (http://HOST:PORT, usually port 4317). Default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    /// else $OTEL_EXPORTER_OTLP_ENDPOINT; neither: no export. Needs a build with the `otlp`
    /// cargo feature.
    #[arg(long, env = "BUSBAR_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Adapter chains: a Powerstrip `adapters.yml` (plus busbar's optional extensions). The
    /// file is watched: a valid edit applies to new requests within a second.
    #[arg(long, env = "BUSBAR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Write every call to every adapter to the hook call log (as `debug: true` on each).
    #[arg(long, env = "BUSBAR_DEBUG_HOOKS")]
    pub debug_hooks: bool,

    /// The hook call log: one JSON line per call to an adapter with `debug: true` (or to every
    /// adapter with --debug-hooks). Made mode 0600 on the first call logged.
    #[arg(long, env = "BUSBAR_HOOK_LOG", value_name = "FILE", default_value = DEFAULT_HOOK_LOG)]
    pub hook_log: PathBuf,

    /// Allow plain-TCP listen addresses that are not loopback. Whoever can reach such an
    /// address controls the Docker host: use only on a network you trust completely.
    #[arg(long, env = "BUSBAR_ALLOW_REMOTE_PLAINTEXT")]
    pub allow_remote_plaintext: bool,

    /// Seconds to wait for a connection to the engine before failing the request.
    #[arg(long, env = "BUSBAR_ENGINE_CONNECT_TIMEOUT", default_value_t = 5.0)]
    pub engine_connect_timeout: f64,

    /// Seconds open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "BUSBAR_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins when set.
    #[arg(long, env = "BUSBAR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// A file holding the log filter (e.g. `debug`), read at start and again on SIGHUP; wins
    /// over --log-level and RUST_LOG.
    #[arg(long, env = "BUSBAR_LOG_LEVEL_FILE")]
    pub log_level_file: Option<PathBuf>,

    /// Log lines as `text` (colours only on a terminal, never with NO_COLOR) or `json` (one
    /// object per line, for journald and log shippers).
    #[arg(long, env = "BUSBAR_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Threads serving requests. Default: half the machine's CPUs, at least one (busbar shares
    /// the machine with the engine it waits on; see BENCHMARKS.md).
    #[arg(long, env = "BUSBAR_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// What the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub engine: EngineAddr,
    pub engine_options: EngineOptions,
    pub listen: Vec<ListenAddr>,
    /// The group and mode of unix sockets.
    pub unix_access: UnixAccess,
    /// Where to serve the Docker API over TLS (`--tls-listen`).
    pub tls_listen: Vec<SocketAddr>,
    /// The files of the TLS listeners (set when there are any).
    pub client_tls: Option<ClientTlsFiles>,
    /// Where to serve metrics, `/healthz` and `/readyz` (`--metrics-listen`), and whether over
    /// the TLS of `--tls-listen` (an address beyond loopback, when there is that TLS).
    pub metrics_listen: Option<MetricsListen>,
    /// The adapter chain file, if any.
    pub chains_file: Option<PathBuf>,
    /// The hook call log's file.
    pub hook_log: PathBuf,
    /// Log the calls to every adapter (`--debug-hooks`).
    pub debug_hooks: bool,
    /// The gRPC service for gateways, if enabled.
    #[cfg(feature = "cluster")]
    pub grpc: Option<GrpcConfig>,
    pub shutdown_grace: Duration,
    pub log_level: String,
    /// The file the log filter is read from, at start and on SIGHUP (`--log-level-file`).
    pub log_level_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Worker threads of the runtime.
    pub threads: usize,
    /// Where to export request spans over OTLP, if anywhere.
    pub otlp: Option<OtlpEndpoint>,
}

/// The OpenTelemetry collector to export spans to, and who named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    pub url: String,
    /// `--otlp-endpoint` (or `BUSBAR_OTLP_ENDPOINT`) named it; else an `OTEL_*` variable.
    pub from_flag: bool,
}

/// The standard variables that name a collector when `--otlp-endpoint` does not, in the
/// order the OpenTelemetry specification reads them.
pub const OTLP_ENDPOINT_ENV: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// `endpoint`, checked when the flag named it: an `http://` URL with a host, in a build that
/// can export. One named by an `OTEL_*` variable (set for other programs too, maybe) never
/// stops busbar: when it is not usable, the log says so at start and nothing is exported.
pub fn check_otlp(endpoint: Option<OtlpEndpoint>) -> Result<Option<OtlpEndpoint>, ConfigError> {
    let Some(e) = endpoint else { return Ok(None) };
    if !e.from_flag {
        return Ok(Some(e));
    }
    if !cfg!(feature = "otlp") {
        return Err(ConfigError::OtlpNotBuilt);
    }
    let authority = e
        .url
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default());
    if authority.is_none_or(|a| a.is_empty() || a.contains(char::is_whitespace))
        || e.url.parse::<http::Uri>().is_err()
    {
        return Err(ConfigError::OtlpEndpoint { url: e.url });
    }
    Ok(Some(e))
}

/// The collector: `flag` when given and not empty, else the first of [`OTLP_ENDPOINT_ENV`]
/// that `env` has (not empty).
pub fn otlp_endpoint(
    flag: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<OtlpEndpoint> {
    let nonempty = |v: &String| !v.trim().is_empty();
    match flag.filter(nonempty) {
        Some(url) => Some(OtlpEndpoint {
            url,
            from_flag: true,
        }),
        None => OTLP_ENDPOINT_ENV
            .iter()
            .find_map(|name| env(name).filter(nonempty))
            .map(|url| OtlpEndpoint {
                url,
                from_flag: false,
            }),
    }
}

/// The metrics listener's address, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen {
    pub addr: SocketAddr,
    /// Speak `--tls-listen`'s TLS: the address is not loopback and that TLS is configured.
    pub tls: bool,
}

/// The gateway-facing side of an agent.
#[cfg(feature = "cluster")]
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    pub advertise: String,
    /// Checked against the certificate's CN at start.
    pub node_name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tls: TlsFiles,
    /// Where to register, and to take the chains from (none: not registered, chains from
    /// `--config`).
    pub etcd: Option<EtcdConfig>,
    pub etcd_prefix: String,
    pub registration_ttl: Duration,
    /// With `etcd`: where the last-known-good adapter chains are cached.
    pub state_dir: PathBuf,
    /// `--no-lanes`: answer `Lane` as an agent older than lanes (a test double).
    pub no_lanes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[cfg(feature = "cluster")]
    #[error("--grpc-listen needs --tls-ca, --tls-cert and --tls-key: the gateway hop is mutual TLS only")]
    GrpcWithoutTls,
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    PartialTls(#[from] PartialTls),
    #[error("--label {0:?}: expected key=value")]
    Label(String),
    #[error("--etcd needs --grpc-listen: a node registers the address gateways reach it on")]
    EtcdWithoutGrpc,
    #[error("--config and --etcd: an agent in etcd takes its adapter chains from etcd (busbarctl chain apply); drop --config")]
    ConfigAndEtcd,
    #[error("{0}")]
    Prefix(String),
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
    #[error("--registration-ttl: must be at least 1 second")]
    Ttl,
    #[error("--docker: {0}")]
    Engine(#[from] AddrError),
    #[error("--listen: {0}")]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Socket(ListenError),
    #[error("--{flag}: must be a positive number of seconds, got {value}")]
    Seconds { flag: &'static str, value: f64 },
    #[error("--tls-listen: {0}")]
    TlsListen(ListenError),
    #[error("--otlp-endpoint {url:?}: expected http://HOST:PORT, an OpenTelemetry collector's OTLP/gRPC address (plain HTTP/2)")]
    OtlpEndpoint { url: String },
    #[error("--otlp-endpoint: this binary was built without OTLP export (cargo feature `otlp`)")]
    OtlpNotBuilt,
    #[error("--metrics-listen {0:?}: expected IP:PORT (for example 127.0.0.1:9323)")]
    MetricsListen(String),
    #[error(
        "refusing to serve metrics on tcp://{0} in plain HTTP: it is not loopback. Give \
         --tls-listen with --tlsverify (the metrics listener then speaks its TLS), or pass \
         --allow-remote-plaintext"
    )]
    RemoteMetrics(SocketAddr),
    #[error("--tls-listen needs --tlscert and --tlskey: the certificate Docker clients check, and its key")]
    TlsWithoutCert,
    #[error("--tlsverify needs --tlscacert: the CA whose client certificates are accepted")]
    VerifyWithoutCa,
    #[error(
        "--tlscacert without --tlsverify: no client certificate would be checked, and anyone \
         who connects would drive the engine; add --tlsverify"
    )]
    CaWithoutVerify,
    #[error(
        "{0} applies to --tls-listen, which is not given (for example --tls-listen 0.0.0.0:2376)"
    )]
    TlsFlagWithoutListen(&'static str),
    #[error(
        "refusing to serve the Docker API on tcp://{0} over TLS without --tlsverify: the \
         connection is encrypted but authenticates no one, so anyone who reaches it controls \
         this host (dockerd warns the same). Add --tlsverify --tlscacert CA.pem, or pass \
         --allow-remote-plaintext if that is really what you want"
    )]
    UnverifiedRemote(SocketAddr),
}

impl Cli {
    #[cfg(not(feature = "cluster"))]
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.local.into_config(true)
    }

    #[cfg(feature = "cluster")]
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let c = self.cluster;
        let local_by_default = c.grpc_listen.is_none();
        let mut config = self.local.into_config(local_by_default)?;
        let tls = c.tls.files("the agent's gRPC service")?;
        config.grpc = grpc_config(c.grpc_listen, c.advertise, c.node_name, &c.labels, tls)?;
        if let Some(grpc) = &mut config.grpc {
            grpc.no_lanes = c.no_lanes;
        }
        let etcd = c.etcd.into_config()?;
        match &mut config.grpc {
            Some(grpc) => {
                if c.registration_ttl == 0 {
                    return Err(ConfigError::Ttl);
                }
                if etcd.is_some() {
                    if config.chains_file.is_some() {
                        return Err(ConfigError::ConfigAndEtcd);
                    }
                    busbar_etcd::keys::check_prefix(&c.etcd_prefix)
                        .map_err(|e| ConfigError::Prefix(e.to_string()))?;
                }
                grpc.etcd = etcd;
                grpc.etcd_prefix = c.etcd_prefix;
                grpc.registration_ttl = Duration::from_secs(c.registration_ttl);
                grpc.state_dir = c.state_dir;
            }
            None if etcd.is_some() => return Err(ConfigError::EtcdWithoutGrpc),
            None => {}
        }
        Ok(config)
    }
}

impl LocalArgs {
    /// The validated config; with no `--listen`, [`DEFAULT_LISTEN`] if `listen_by_default`.
    pub fn into_config(self, listen_by_default: bool) -> Result<Config, ConfigError> {
        let engine = self.docker.parse()?;
        let (tls_listen, client_tls) = self.client_tls()?;
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(s) => Some(self.metrics_listen(s, client_tls.is_some())?),
        };
        let mut wanted = self.listen;
        if wanted.is_empty() && tls_listen.is_empty() && listen_by_default {
            wanted.push(DEFAULT_LISTEN.into());
        }
        let mut listen = vec![];
        for s in &wanted {
            let addr: ListenAddr = s.parse()?;
            addr.check_exposure(self.allow_remote_plaintext)?;
            listen.push(addr);
        }
        Ok(Config {
            metrics_listen,
            engine,
            engine_options: EngineOptions {
                connect_timeout: seconds("engine-connect-timeout", self.engine_connect_timeout)?,
                ..EngineOptions::default()
            },
            listen,
            unix_access: UnixAccess::from_flags(
                self.socket_group.as_deref(),
                self.socket_mode.as_deref(),
            )
            .map_err(ConfigError::Socket)?,
            tls_listen,
            client_tls,
            chains_file: self.config,
            hook_log: self.hook_log,
            debug_hooks: self.debug_hooks,
            #[cfg(feature = "cluster")]
            grpc: None,
            shutdown_grace: seconds("shutdown-grace", self.shutdown_grace)?,
            log_level: self.log_level,
            log_level_file: self.log_level_file,
            log_format: self.log_format,
            threads: self.threads.map_or_else(default_threads, usize::from),
            otlp: check_otlp(otlp_endpoint(self.otlp_endpoint, |name| {
                std::env::var(name).ok()
            }))?,
        })
    }
}

impl LocalArgs {
    /// `--metrics-listen`, checked: loopback is plain HTTP; beyond it, the TLS of
    /// `--tls-listen` when there is one (its rules already checked), or plain HTTP with
    /// `--allow-remote-plaintext` only.
    fn metrics_listen(&self, s: &str, have_tls: bool) -> Result<MetricsListen, ConfigError> {
        let bare = s.strip_prefix("tcp://").unwrap_or(s).trim_end_matches('/');
        let bare = bare.replace("localhost", "127.0.0.1");
        let addr: SocketAddr = bare
            .parse()
            .map_err(|_| ConfigError::MetricsListen(s.to_owned()))?;
        if is_loopback_addr(&addr) {
            return Ok(MetricsListen { addr, tls: false });
        }
        if have_tls {
            return Ok(MetricsListen { addr, tls: true });
        }
        if self.allow_remote_plaintext {
            return Ok(MetricsListen { addr, tls: false });
        }
        Err(ConfigError::RemoteMetrics(addr))
    }

    /// `--tls-listen` and its files, checked: what Docker clients need is there, and a
    /// listener that would authenticate no one is refused beyond loopback (as plain TCP is).
    fn client_tls(&self) -> Result<(Vec<SocketAddr>, Option<ClientTlsFiles>), ConfigError> {
        let addrs = self
            .tls_listen
            .iter()
            .map(|a| parse_tls_listen(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::TlsListen)?;
        if addrs.is_empty() {
            let given = [
                (self.tlsverify, "--tlsverify"),
                (self.tlscacert.is_some(), "--tlscacert"),
                (self.tlscert.is_some(), "--tlscert"),
                (self.tlskey.is_some(), "--tlskey"),
            ];
            return match given.into_iter().find(|(given, _)| *given) {
                Some((_, flag)) => Err(ConfigError::TlsFlagWithoutListen(flag)),
                None => Ok((addrs, None)),
            };
        }
        let (Some(cert), Some(key)) = (&self.tlscert, &self.tlskey) else {
            return Err(ConfigError::TlsWithoutCert);
        };
        let ca = match (self.tlsverify, &self.tlscacert) {
            (true, Some(ca)) => Some(ca.clone()),
            (true, None) => return Err(ConfigError::VerifyWithoutCa),
            (false, Some(_)) => return Err(ConfigError::CaWithoutVerify),
            (false, None) => None,
        };
        if ca.is_none() && !self.allow_remote_plaintext {
            if let Some(remote) = addrs.iter().find(|a| !is_loopback_addr(a)) {
                return Err(ConfigError::UnverifiedRemote(*remote));
            }
        }
        let files = ClientTlsFiles {
            ca,
            cert: cert.clone(),
            key: key.clone(),
        };
        Ok((addrs, Some(files)))
    }
}

/// Half the CPUs, at least one. On a 2-CPU machine, one tokio worker costs 15-30 % less CPU
/// per request than two, whose threads wake each other for most requests (measured with a
/// gateway and an agent; BENCHMARKS.md), and the engine needs the other CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

#[cfg(feature = "cluster")]
fn grpc_config(
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    node_name: Option<String>,
    labels: &[String],
    tls: Option<TlsFiles>,
) -> Result<Option<GrpcConfig>, ConfigError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let Some(tls) = tls else {
        return Err(ConfigError::GrpcWithoutTls);
    };
    let labels = labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| ConfigError::Label(l.clone()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(GrpcConfig {
        listen,
        advertise: advertise.unwrap_or_else(|| listen.to_string()),
        node_name,
        labels,
        tls,
        etcd: None,
        etcd_prefix: String::new(),
        registration_ttl: Duration::from_secs(10),
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        no_lanes: false,
    }))
}

/// A positive number of seconds given to `--flag`.
pub fn seconds(flag: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::Seconds { flag, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["busbar-agent"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_config()
    }

    #[test]
    fn the_otlp_endpoint_is_the_flag_else_the_standard_variables_and_must_be_http() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let url = |e: Option<OtlpEndpoint>| e.map(|e| (e.url, e.from_flag));
        assert_eq!(url(otlp_endpoint(None, env(&[]))), None);
        let both: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(
            url(otlp_endpoint(None, env(both))),
            Some(("http://traces:4317".into(), false))
        );
        assert_eq!(
            url(otlp_endpoint(
                None,
                env(&[
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " "),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
                ])
            )),
            Some(("http://all:4317".into(), false))
        );
        assert_eq!(
            url(otlp_endpoint(Some("http://flag:4317".into()), env(both))),
            Some(("http://flag:4317".into(), true))
        );
        let check = |url: &str, from_flag| {
            check_otlp(Some(OtlpEndpoint {
                url: url.into(),
                from_flag,
            }))
        };
        for bad in [
            "https://c:4317",
            "c:4317",
            "http://",
            "http:///v1",
            "http://a b:1",
        ] {
            if cfg!(feature = "otlp") {
                assert!(
                    matches!(check(bad, true), Err(ConfigError::OtlpEndpoint { .. })),
                    "{bad}"
                );
            }
            // From the environment: never an error (the log says it is ignored).
            assert!(check(bad, false).unwrap().is_some(), "{bad}");
        }
        if cfg!(feature = "otlp") {
            assert!(check("http://127.0.0.1:4317", true).unwrap().is_some());
            assert!(parse(&["--otlp-endpoint", "https://c:4317"]).is_err());
        } else {
            assert!(matches!(
                check("http://127.0.0.1:4317", true),
                Err(ConfigError::OtlpNotBuilt)
            ));
        }
        assert!(check("http://collector.example:4317", false).is_ok());
    }

    #[test]
    fn metrics_listen_is_off_loopback_plain_and_remote_only_with_tls_or_the_flag() {
        assert_eq!(parse(&[]).unwrap().metrics_listen, None);
        let m = |args: &[&str]| parse(args).map(|c| c.metrics_listen.unwrap());
        let local = m(&["--metrics-listen", "127.0.0.1:9323"]).unwrap();
        assert_eq!(
            (local.addr.to_string(), local.tls),
            ("127.0.0.1:9323".into(), false)
        );
        assert!(
            !m(&["--metrics-listen", "tcp://localhost:9323"])
                .unwrap()
                .tls
        );
        let err = m(&["--metrics-listen", "10.0.0.5:9323"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to serve metrics on tcp://10.0.0.5:9323"),
            "{err}"
        );
        let plain = m(&[
            "--metrics-listen",
            "10.0.0.5:9323",
            "--allow-remote-plaintext",
        ]);
        assert!(!plain.unwrap().tls);
        let tls = m(&[
            "--metrics-listen",
            "0.0.0.0:9323",
            "--tls-listen",
            "0.0.0.0:2376",
            "--tlsverify",
            "--tlscacert",
            "ca.pem",
            "--tlscert",
            "cert.pem",
            "--tlskey",
            "key.pem",
        ]);
        assert!(tls.unwrap().tls);
        let err = m(&["--metrics-listen", "9323"]).unwrap_err().to_string();
        assert!(err.contains("expected IP:PORT"), "{err}");
    }

    #[test]
    fn defaults_are_the_local_engine_and_a_unix_socket_for_the_docker_group() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.engine.to_string(), "unix:///var/run/docker.sock");
        assert_eq!(c.listen, vec!["unix:///run/busbar.sock".parse().unwrap()]);
        assert_eq!(c.unix_access, UnixAccess::docker_default());
        let c = parse(&["--socket-group", "ops", "--socket-mode", "0600"]).unwrap();
        assert_eq!(
            c.unix_access,
            UnixAccess::from_flags(Some("ops"), Some("600")).unwrap()
        );
        let err = parse(&["--socket-mode", "u+rw"]).unwrap_err().to_string();
        assert!(err.contains("--socket-mode"), "{err}");
    }

    #[test]
    fn remote_plaintext_needs_the_flag() {
        let err = parse(&["--listen", "tcp://0.0.0.0:2375"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow-remote-plaintext"), "{err}");
        parse(&["--listen", "tcp://0.0.0.0:2375", "--allow-remote-plaintext"]).unwrap();
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn config_and_etcd_together_are_refused() {
        let certs = [
            "--tls-ca",
            "c",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--grpc-listen",
            "127.0.0.1:7443",
        ];
        let mut args = certs.to_vec();
        args.extend(["--etcd", "127.0.0.1:2379", "--config", "a.yml"]);
        let err = parse(&args).unwrap_err().to_string();
        assert!(err.contains("--config and --etcd"), "{err}");
        let mut args = certs.to_vec();
        args.extend(["--etcd", "127.0.0.1:2379", "--state-dir", "/tmp/s"]);
        let c = parse(&args).unwrap();
        assert_eq!(c.grpc.unwrap().state_dir, PathBuf::from("/tmp/s"));
    }

    #[test]
    fn tls_for_docker_clients_takes_dockers_flags() {
        let files = ["--tlscert", "c.pem", "--tlskey", "k.pem"];
        let mut args = vec![
            "--tls-listen",
            "0.0.0.0",
            "--tlsverify",
            "--tlscacert",
            "ca.pem",
        ];
        args.extend(files);
        let c = parse(&args).unwrap();
        assert_eq!(c.tls_listen, vec!["0.0.0.0:2376".parse().unwrap()]);
        assert_eq!(
            c.client_tls,
            Some(ClientTlsFiles {
                ca: Some("ca.pem".into()),
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(c.listen.is_empty(), "--tls-listen alone: no unix socket");

        let refused = |args: &[&str], want: &str| {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        };
        // Without --tlsverify: refused beyond loopback, like plain TCP; allowed on loopback.
        let mut args = vec!["--tls-listen", "10.0.0.5:2376"];
        args.extend(files);
        refused(&args, "without --tlsverify");
        args.push("--allow-remote-plaintext");
        parse(&args).unwrap();
        let mut args = vec!["--tls-listen", "127.0.0.1"];
        args.extend(files);
        assert_eq!(parse(&args).unwrap().client_tls.unwrap().ca, None);

        let mut args = vec!["--tls-listen", "0.0.0.0", "--tlsverify"];
        args.extend(files);
        refused(&args, "--tlsverify needs --tlscacert");
        let mut args = vec!["--tls-listen", "127.0.0.1", "--tlscacert", "ca.pem"];
        args.extend(files);
        refused(&args, "add --tlsverify");
        refused(
            &[
                "--tls-listen",
                "0.0.0.0",
                "--tlsverify",
                "--tlscacert",
                "ca.pem",
            ],
            "--tlscert and --tlskey",
        );
        refused(&["--tlsverify"], "--tlsverify applies to --tls-listen");
        refused(&["--tls-listen", "host.example"], "--tls-listen: invalid");
    }

    #[test]
    fn several_listeners() {
        let c = parse(&[
            "--listen",
            "tcp://127.0.0.1:1",
            "--listen",
            "unix:///tmp/b.sock",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
    }
}
