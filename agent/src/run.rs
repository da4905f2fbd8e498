//! Process plumbing shared by `busbar-agent` and `busbar-gateway`: load the chains, build the
//! local proxy, bind the listeners, serve until the stop signal, drain.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use busbar_chains::scoped::ChainStatus;
use busbar_engine::EngineClient;
use busbar_http::identity::ClientIdentity;
use busbar_http::listen::{bind_tls, is_loopback_addr, ListenAddr, ListenError, Listener};
use busbar_http::observe::{self, Check, Readiness};
use busbar_http::server::{self, Handler};
use busbar_http::tls::ServerTls;
use busbar_tls::TlsError;

use crate::chain_source::{self as source, LiveChains, Loaded, SourceError};
use crate::config::Config;
use crate::hooks::log::HookLog;
use crate::proxy::Proxy;

/// The chains named by the config (none if no file), validated: at start an invalid file is fatal.
/// How long shutdown waits for the last spans to reach the collector.
pub const SPANS_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// A process's export of request spans (`--otlp-endpoint`, [`crate::config::OtlpEndpoint`]):
/// started on the runtime before serving, flushed after.
#[derive(Default)]
pub struct Spans {
    #[cfg(feature = "otlp")]
    export: Option<Arc<busbar_otlp::OtlpExport>>,
}

/// Starts exporting request spans as `service` (`busbar-agent`, `busbar-gateway`) when
/// `config` names a collector. On the runtime: the exports run there.
pub fn start_spans(config: &Config, service: &'static str) -> Result<Spans, String> {
    let Some(endpoint) = &config.otlp else {
        return Ok(Spans::default());
    };
    #[cfg(feature = "otlp")]
    {
        let export = match busbar_otlp::OtlpExport::start(&endpoint.url, service) {
            Ok(export) => Arc::new(export),
            Err(e) if endpoint.from_flag => return Err(e.to_string()),
            Err(e) => {
                warn!(error = %e, "the OTEL_EXPORTER_OTLP_* endpoint is ignored: no span is exported");
                return Ok(Spans::default());
            }
        };
        busbar_http::spans::install(export.clone());
        Ok(Spans {
            export: Some(export),
        })
    }
    #[cfg(not(feature = "otlp"))]
    {
        warn!(endpoint = %endpoint.url, service, "this binary was built without OTLP export (cargo feature `otlp`): the OTEL_EXPORTER_OTLP_* endpoint is ignored");
        Ok(Spans::default())
    }
}

impl Spans {
    /// Sends the spans still queued, waiting at most [`SPANS_FLUSH`].
    pub async fn stop(self) {
        #[cfg(feature = "otlp")]
        if let Some(export) = self.export {
            let _ = tokio::task::spawn_blocking(move || export.shutdown(SPANS_FLUSH)).await;
        }
    }
}

pub fn initial_chains(config: &Config) -> Result<Loaded, SourceError> {
    match &config.chains_file {
        Some(path) => source::load_file(path),
        None => Ok(Loaded {
            live: LiveChains::none(),
            text: String::new(),
        }),
    }
}

/// The proxy to the configured engine, running `chains`; a chain file is watched until `shutdown`.
pub fn local_proxy(config: &Config, chains: Loaded, shutdown: &CancellationToken) -> Arc<Proxy> {
    local_proxy_reporting(config, chains, shutdown).0
}

/// [`local_proxy`], with the chains' status (the file, and whether its last change was refused).
pub fn local_proxy_reporting(
    config: &Config,
    chains: Loaded,
    shutdown: &CancellationToken,
) -> (Arc<Proxy>, watch::Receiver<ChainStatus>) {
    let (chains_tx, chains_rx) = watch::channel(chains.live);
    let status = match &config.chains_file {
        Some(path) => {
            info!(config = %path.display(), "adapter chains loaded; watching for changes");
            let (status_tx, status) = watch::channel(source::file_status(path));
            tokio::spawn(source::watch_file(
                path.clone(),
                chains.text,
                chains_tx,
                status_tx,
                shutdown.clone(),
            ));
            status
        }
        None => watch::channel(source::none_status()).1,
    };
    let engine = EngineClient::new(config.engine.clone(), config.engine_options.clone());
    let proxy = Proxy::with_chains(engine, chains_rx).with_hook_log(Some(hook_log(config)));
    (Arc::new(proxy), status)
}

/// The hook call log the config names.
pub fn hook_log(config: &Config) -> Arc<HookLog> {
    HookLog::new(config.hook_log.clone(), config.debug_hooks)
}

/// The proxy to the configured engine, running whatever `chains` publishes (the etcd source).
pub fn proxy_with(config: &Config, chains: watch::Receiver<Arc<LiveChains>>) -> Arc<Proxy> {
    let engine = EngineClient::new(config.engine.clone(), config.engine_options.clone());
    Arc::new(Proxy::with_chains(engine, chains).with_hook_log(Some(hook_log(config))))
}

/// Asks the engine for its version once, at start, and says in the log whether it answers:
/// the agent serves either way (an engine that comes up later is used at once), but someone
/// starting busbar on a machine without a running engine should read why every call fails.
pub async fn check_engine(engine: EngineClient) {
    let req = http::Request::get("/version")
        .body(busbar_http::body::empty())
        .expect("a fixed path makes a valid request");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let rsp = engine.send(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok::<_, String>((status, doc))
    })
    .await;
    match answer {
        Ok(Ok((status, doc))) if status.is_success() => info!(
            engine = %engine.addr(),
            version = doc["Version"].as_str().unwrap_or("?"),
            api = doc["ApiVersion"].as_str().unwrap_or("?"),
            "Docker engine reachable"
        ),
        Ok(Ok((status, _))) => {
            warn!(engine = %engine.addr(), %status, "the Docker engine answered its version with an error")
        }
        Ok(Err(e)) => warn!(
            engine = %engine.addr(),
            "no Docker engine answers: {e}. Calls fail with 503 until one does (start dockerd, or point --docker at it)"
        ),
        Err(_) => {
            warn!(engine = %engine.addr(), "the Docker engine did not answer its version within 5s")
        }
    }
}

/// The TLS of the `--tls-listen` listeners, its files read and checked (none without
/// `--tls-listen`). A file that is missing, not PEM, out of its validity or whose key does not
/// match is an error naming it.
pub fn client_tls(config: &Config) -> Result<Option<Arc<ServerTls>>, TlsError> {
    let Some(files) = &config.client_tls else {
        return Ok(None);
    };
    let server = busbar_tls::docker_server_config(files)?;
    let describe = match &files.ca {
        Some(ca) => {
            let busbar_ca = busbar_tls::read_certs("CA certificate", ca)?
                .iter()
                .any(busbar_tls::docker::is_busbar_ca);
            format!(
                "--tlsverify: client certificates signed by {}{}",
                ca.display(),
                if busbar_ca {
                    " with the client role (a busbar CA)"
                } else {
                    ""
                }
            )
        }
        None => "no client certificate asked for: anyone who connects can use it".to_owned(),
    };
    Ok(Some(ServerTls::new(server, identify, describe)))
}

/// A Docker client as its verified certificate names it: the subject CN, and the busbar role
/// when the certificate carries one (see [`busbar_http::identity`]).
pub fn identify(cert: &rustls::pki_types::CertificateDer<'_>) -> ClientIdentity {
    ClientIdentity::tls(busbar_tls::docker::common_name(cert))
        .with_role(busbar_tls::docker::busbar_role(cert).map(|r| r.as_str().to_owned()))
}

/// Binds every listen address (all or nothing): unix sockets with the configured group and
/// mode, `--tls-listen` addresses with `tls`. Says in the log who can use each listener that
/// authenticates no one.
pub async fn bind_all(
    config: &Config,
    tls: Option<&Arc<ServerTls>>,
) -> Result<Vec<Listener>, ListenError> {
    let mut listeners = vec![];
    for addr in &config.listen {
        listeners.push(addr.bind_with(&config.unix_access).await?);
        addr.warn_exposure();
    }
    for addr in &config.tls_listen {
        let tls = tls.expect("TLS is built before --tls-listen is bound");
        listeners.push(bind_tls(*addr, tls.clone()).await?);
        if config.client_tls.as_ref().is_some_and(|f| f.ca.is_none()) {
            let who = if is_loopback_addr(addr) {
                "every local user"
            } else {
                "anyone who reaches it (--allow-remote-plaintext)"
            };
            warn!(listen = %format!("tcp://{addr}"), "TLS without --tlsverify: encrypted, but {who} can use the Docker API, as root. Add --tlsverify --tlscacert");
        }
    }
    Ok(listeners)
}

/// Serves `handler` on every listener (adding them to `servers`), [reloads](reload) on SIGHUP,
/// waits for SIGINT/SIGTERM, then stops accepting and waits for every server in `servers` to
/// drain.
pub async fn serve_until_signal(
    listeners: Vec<Listener>,
    handler: Arc<dyn Handler>,
    config: &Config,
    shutdown: CancellationToken,
    mut servers: JoinSet<()>,
) {
    let reloading = config.clone();
    busbar_runtime::signal::on_hangup(move || reload(&reloading));
    for l in listeners {
        servers.spawn(server::serve(
            l,
            handler.clone(),
            shutdown.clone(),
            config.shutdown_grace,
        ));
    }
    busbar_runtime::signal::shutdown_requested().await;
    info!("shutting down");
    shutdown.cancel();
    while servers.join_next().await.is_some() {}
}

/// What SIGHUP does, each part logged (what it reloaded, or why it refused):
/// - every TLS certificate and key in use (the Docker clients' `--tlscert`, the hop's
///   `--tls-cert`) is read again: new handshakes present the new one, open connections go on;
///   a file that fails its checks is refused and the one in use stays;
/// - the `--log-level-file`, when given, is read again and its filter used from now on;
/// - the `--config` chains file is read again and validated now (it is also watched): an
///   invalid one is refused and the chains in use stay. Chains from etcd follow etcd.
///
/// Open connections are not touched.
pub fn reload(config: &Config) {
    busbar_runtime::logging::reload();
    match &config.chains_file {
        Some(_) => {
            source::reread_files();
        }
        None if chains_from_etcd(config) => {
            info!("SIGHUP: adapter chains come from etcd and are applied as they change there")
        }
        None => {}
    }
    let reloaded = busbar_tls::reload_all();
    if reloaded.is_empty() {
        info!("SIGHUP: no TLS certificate in use");
    }
    for r in reloaded {
        let cert = r.cert.display();
        match r.outcome {
            Ok(true) => {
                info!(%cert, "SIGHUP: TLS certificate reloaded; new connections present it")
            }
            Ok(false) => info!(%cert, "SIGHUP: TLS certificate unchanged"),
            Err(e) => {
                warn!(%cert, error = %e, "SIGHUP: TLS certificate refused; keeping the one in use")
            }
        }
    }
}

/// Whether this agent takes its chains from etcd (a cluster agent with `--etcd`).
fn chains_from_etcd(config: &Config) -> bool {
    #[cfg(feature = "cluster")]
    return config.grpc.as_ref().is_some_and(|g| g.etcd.is_some());
    #[cfg(not(feature = "cluster"))]
    {
        let _ = config;
        false
    }
}

/// `/readyz` of an agent: its engine answers `/_ping`. Its chains need no check: it serves
/// only once they are loaded (an invalid `--config` is fatal at start; etcd's chains, or the
/// cached last-known-good ones, are awaited before it starts).
pub struct AgentReadiness {
    pub engine: EngineClient,
}

impl Readiness for AgentReadiness {
    fn checks(&self) -> futures_util::future::BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            vec![
                engine_check(&self.engine).await,
                Check::ok("chains", "loaded"),
            ]
        })
    }
}

/// Whether `engine` answers `/_ping` within 2 seconds, and if not, why.
pub async fn engine_check(engine: &EngineClient) -> Check {
    let req = http::Request::get("/_ping")
        .body(busbar_http::body::empty())
        .expect("a fixed path makes a valid request");
    let addr = engine.addr();
    match tokio::time::timeout(std::time::Duration::from_secs(2), engine.send(req)).await {
        Ok(Ok(rsp)) if rsp.status().is_success() => {
            Check::ok("engine", format!("the Docker engine at {addr} answers"))
        }
        Ok(Ok(rsp)) => Check::failed(
            "engine",
            format!(
                "the Docker engine at {addr} answered /_ping with {}",
                rsp.status()
            ),
        ),
        Ok(Err(e)) => Check::failed("engine", e.to_string()),
        Err(_) => Check::failed(
            "engine",
            format!("the Docker engine at {addr} did not answer /_ping within 2s"),
        ),
    }
}

/// Binds `--metrics-listen`, if given, and serves metrics, `/healthz` and `/readyz` on it
/// (added to `servers`) until `shutdown`.
pub async fn serve_metrics(
    config: &Config,
    tls: Option<&Arc<ServerTls>>,
    readiness: Arc<dyn Readiness>,
    shutdown: &CancellationToken,
    servers: &mut JoinSet<()>,
) -> Result<(), ListenError> {
    serve_metrics_with(config, tls, readiness, None, shutdown, servers).await
}

/// [`serve_metrics`], with more pages on the listener (the gateway's status page).
pub async fn serve_metrics_with(
    config: &Config,
    tls: Option<&Arc<ServerTls>>,
    readiness: Arc<dyn Readiness>,
    pages: Option<Arc<dyn observe::Pages>>,
    shutdown: &CancellationToken,
    servers: &mut JoinSet<()>,
) -> Result<(), ListenError> {
    let Some(m) = config.metrics_listen else {
        return Ok(());
    };
    let listener = match (m.tls, tls) {
        (true, Some(tls)) => bind_tls(m.addr, tls.clone()).await?,
        _ => ListenAddr::Tcp(m.addr).bind().await?,
    };
    servers.spawn(observe::serve_with(
        listener,
        readiness,
        pages,
        shutdown.clone(),
    ));
    Ok(())
}
