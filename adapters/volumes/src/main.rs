//! `busbar-volumes`: the portable-volume adapter as a program. Flags are read and checked
//! (exit 64 when wrong) before anything is bound; then it serves hook calls until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use busbar_adapter::gateway::Gateway;
use busbar_adapter::server::{serve, Options};
use busbar_etcd::conn::EtcdConnArgs;
use busbar_runtime::logging::LogFormat;
use busbar_volumes::engines::GatewayEngines;
use busbar_volumes::store::EtcdStore;
use busbar_volumes::{Settings, Volumes};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Makes volumes labelled busbar.portable=true portable across a busbar cluster: one copy,
/// its node in etcd, moved to the node a container that mounts it is created on.
#[derive(Debug, Parser)]
#[command(name = "busbar-volumes", version)]
struct Args {
    /// Where agents call the adapter (the chain's URL points here). Hook calls are not
    /// authenticated: listen where only the agents reach it (loopback, one adapter per node).
    #[arg(long, env = "BUSBAR_VOLUMES_LISTEN", default_value = "127.0.0.1:7481")]
    listen: SocketAddr,

    /// A gateway's --tls-listen (https://HOST:PORT), for its adapter API.
    #[arg(long, env = "BUSBAR_VOLUMES_GATEWAY")]
    gateway: String,

    /// The cluster CA (PEM), which the gateway's certificate must chain to.
    #[arg(long, env = "BUSBAR_VOLUMES_TLS_CA")]
    tls_ca: PathBuf,

    /// This adapter's certificate, with the adapter role (busbarctl certs issue --role adapter).
    #[arg(long, env = "BUSBAR_VOLUMES_TLS_CERT")]
    tls_cert: PathBuf,

    /// The key of --tls-cert.
    #[arg(long, env = "BUSBAR_VOLUMES_TLS_KEY")]
    tls_key: PathBuf,

    #[command(flatten)]
    etcd: EtcdConnArgs,

    /// The etcd key prefix: records under PREFIX/volumes/, locks under PREFIX/volume-locks/.
    #[arg(long, env = "BUSBAR_ETCD_PREFIX", default_value = "/busbar")]
    etcd_prefix: String,

    /// The image helper containers are made from (they never run); default: any image the
    /// node has.
    #[arg(long, env = "BUSBAR_VOLUMES_HELPER_IMAGE")]
    helper_image: Option<String>,

    /// Seconds a volume's lock outlives an adapter that died holding it.
    #[arg(long, env = "BUSBAR_VOLUMES_LOCK_TTL", default_value_t = 10)]
    lock_ttl: u64,

    /// Seconds a container create waits for another's lock on a volume before it is refused.
    #[arg(long, env = "BUSBAR_VOLUMES_LOCK_WAIT", default_value_t = 15)]
    lock_wait: u64,

    /// Seconds a move may take (the gateway answers a create it waited 20 s for with a 504;
    /// the move still ends, recorded or undone).
    #[arg(long, env = "BUSBAR_VOLUMES_MOVE_TIMEOUT", default_value_t = 600)]
    move_timeout: u64,

    /// Log filter; RUST_LOG wins when set.
    #[arg(long, env = "BUSBAR_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Log lines as `text` (colours only on a terminal, never with NO_COLOR) or `json` (one
    /// object per line), as the agent's.
    #[arg(long, env = "BUSBAR_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    busbar_runtime::logging::init(&args.log_level, args.log_format);
    let usage = |what: String| {
        eprintln!("busbar-volumes: {what}");
        ExitCode::from(64)
    };
    let etcd = match args.etcd.clone().into_config() {
        Ok(Some(c)) => c,
        Ok(None) => return usage("--etcd is required: the volumes' locations live there".into()),
        Err(e) => return usage(e.to_string()),
    };
    let etcd = match etcd.connection() {
        Ok(c) => c,
        Err(e) => return usage(e.to_string()),
    };
    if args.lock_ttl == 0 || args.lock_wait == 0 || args.move_timeout == 0 {
        return usage("--lock-ttl, --lock-wait and --move-timeout must be positive".into());
    }
    let gateway = match Gateway::new(&args.gateway, &args.tls_ca, &args.tls_cert, &args.tls_key) {
        Ok(g) => g,
        Err(e) => return usage(e.to_string()),
    };
    let settings = Settings {
        lock_ttl: Duration::from_secs(args.lock_ttl),
        lock_wait: Duration::from_secs(args.lock_wait),
        move_timeout: Duration::from_secs(args.move_timeout),
        helper_image: args.helper_image.clone(),
    };
    let runtime = busbar_runtime::runtime(1);
    runtime.block_on(async move {
        let client = match busbar_etcd::conn::connect_lazy(&etcd).await {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "etcd");
                return ExitCode::from(1);
            }
        };
        let store = EtcdStore::new(client, &args.etcd_prefix);
        let engines = GatewayEngines::new(
            gateway,
            Duration::from_secs(30),
            settings.move_timeout,
        );
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                error!(listen = %args.listen, error = %e, "cannot listen");
                return ExitCode::from(1);
            }
        };
        info!(listen = %args.listen, gateway = %args.gateway, etcd = %etcd.shown(), prefix = %args.etcd_prefix, "busbar-volumes serving hook calls");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            busbar_runtime::signal::shutdown_requested().await;
            info!("stopping: calls in flight finish");
            stop.cancel();
        });
        let options = Options {
            // A create's body is a few KiB; a volume list's answer can be larger.
            max_body: 64 << 20,
            shutdown,
            ..Options::default()
        };
        serve(listener, Volumes::new(store, engines, settings), options).await;
        ExitCode::SUCCESS
    })
}
