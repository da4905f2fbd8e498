//! `busbar-gateway`: flags -> config -> bind -> serve until SIGINT/SIGTERM -> drain.
//!
//! Embedded (no `--agent`): an agent in this process on `--docker`, with `--config` chains.
//! Remote: every call goes to the agent across the gRPC/mTLS hop. Cluster: see
//! `busbar_gateway::run::start_cluster`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use busbar_agent::run;
use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::config::{Cli, Mode};
use busbar_gateway::hop::AgentLink;
use busbar_gateway::remote::Remote;
use busbar_gateway::run::{check_identity, start_cluster, ClusterReadiness, RemoteReadiness};
use busbar_gateway::status::embedded::LocalNode;
use busbar_gateway::status::StatusPages;
use busbar_http::observe::{Pages, Readiness};
use busbar_http::server::Handler;
use busbar_runtime::EX_USAGE;

/// The status of a gateway in front of one agent: that node, probed as a cluster's nodes are
/// (on a connection of its own), for the status page only.
fn remote_status(
    node: &str,
    addr: &str,
    files: &busbar_tls::TlsFiles,
    config: &busbar_gateway::config::Config,
    shutdown: &CancellationToken,
) -> Result<Arc<StatusPages>, String> {
    let tls = check_identity(files)?;
    let one = Cluster::new(tls, HealthOptions::default());
    let member = Member {
        addr: addr.to_owned(),
        labels: Default::default(),
    };
    one.set_members(&[(node.to_owned(), member)].into());
    tokio::spawn(one.clone().run_probes(shutdown.clone()));
    Ok(StatusPages::remote(one, config.status_window))
}

fn main() -> ExitCode {
    if let Some(code) = busbar_runtime::manual::generate_if_asked::<Cli>() {
        return code;
    }
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    busbar_gateway::hop::set_lanes_default(config.hop_lanes);
    if let Err(e) = busbar_runtime::logging::init_reloadable(
        &config.local.log_level,
        config.local.log_level_file.as_deref(),
        config.local.log_format,
    ) {
        eprintln!("busbar-gateway: --log-level-file: {e}");
        return ExitCode::from(EX_USAGE);
    }
    let chains = match (&config.mode, run::initial_chains(&config.local)) {
        (Mode::Embedded, Ok(c)) => Some(c),
        (Mode::Embedded, Err(e)) => {
            eprintln!("busbar-gateway: invalid adapter config:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
        (_, _) if config.local.chains_file.is_some() => {
            eprintln!("busbar-gateway: --config applies to the embedded agent; with --agent or --etcd, give the chains to the agents");
            return ExitCode::from(EX_USAGE);
        }
        (_, _) => None,
    };
    let tls = match run::client_tls(&config.local) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("busbar-gateway: --tls-listen: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = busbar_runtime::runtime(config.local.threads);
    runtime.block_on(async move {
        let listeners = match run::bind_all(&config.local, tls.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let spans = match run::start_spans(&config.local, "busbar-gateway") {
            Ok(s) => s,
            Err(e) => {
                error!("--otlp-endpoint: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        let shutdown = CancellationToken::new();
        let mut pages: Option<Arc<StatusPages>> = None;
        let (handler, readiness): (Arc<dyn Handler>, Arc<dyn Readiness>) =
            match (&config.mode, chains) {
                (Mode::Embedded, Some(chains)) => {
                    info!(engine = %config.local.engine, "embedded agent (no --agent given)");
                    let (proxy, chain_status) =
                        run::local_proxy_reporting(&config.local, chains, &shutdown);
                    tokio::spawn(run::check_engine(proxy.engine().clone()));
                    pages = Some(StatusPages::embedded(
                        LocalNode::new(proxy.clone(), chain_status),
                        config.status_window,
                    ));
                    let readiness = Arc::new(run::AgentReadiness {
                        engine: proxy.engine().clone(),
                    });
                    (proxy, readiness)
                }
                (
                    Mode::Remote {
                        node,
                        addr,
                        tls: files,
                    },
                    _,
                ) => {
                    let link = match check_identity(files)
                        .and_then(|cfg| AgentLink::new(node, addr, cfg).map_err(|e| e.to_string()))
                    {
                        Ok(link) => link,
                        Err(e) => {
                            error!("{e}");
                            return ExitCode::from(EX_USAGE);
                        }
                    };
                    info!(node = %node, addr = %addr, "serving agent over gRPC with mutual TLS");
                    if config.local.metrics_listen.is_some() {
                        match remote_status(node, addr, files, &config, &shutdown) {
                            Ok(status) => pages = Some(status),
                            Err(e) => {
                                error!("{e}");
                                return ExitCode::from(EX_USAGE);
                            }
                        }
                    }
                    let readiness = Arc::new(RemoteReadiness {
                        agent: link.clone(),
                    });
                    (Arc::new(Remote { agent: link }), readiness)
                }
                (Mode::Cluster(cluster), _) => match start_cluster(cluster, &shutdown).await {
                    Ok((handler, cluster)) => {
                        pages = Some(StatusPages::cluster(cluster.clone(), config.status_window));
                        (handler, Arc::new(ClusterReadiness { cluster }))
                    }
                    Err(e) => {
                        error!("{e}");
                        return ExitCode::from(EX_USAGE);
                    }
                },
                (Mode::Embedded, None) => unreachable!("embedded mode always has chains"),
            };
        let mut servers = tokio::task::JoinSet::new();
        // The status is served on the metrics listener: its samples and probes run only then.
        if let (Some(pages), Some(_)) = (&pages, &config.local.metrics_listen) {
            pages.spawn(&shutdown);
        }
        if let Err(e) = run::serve_metrics_with(
            &config.local,
            tls.as_ref(),
            readiness,
            pages.map(|p| p as Arc<dyn Pages>),
            &shutdown,
            &mut servers,
        )
        .await
        {
            error!("--metrics-listen: {e}");
            return ExitCode::FAILURE;
        }
        run::serve_until_signal(listeners, handler, &config.local, shutdown, servers).await;
        spans.stop().await;
        ExitCode::SUCCESS
    })
}
