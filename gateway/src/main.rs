//! `busbar-gateway`: flags -> config -> bind -> serve until SIGINT/SIGTERM -> drain.
//!
//! Embedded (no `--agent`): an agent in this process on `--docker`, with `--config` chains.
//! Remote: every call goes to the agent across the gRPC/mTLS hop.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use busbar_agent::front::Handler;
use busbar_agent::run::{self, EX_USAGE};
use busbar_agent::tls::{self, Role};
use busbar_gateway::agents::AgentLink;
use busbar_gateway::config::{Cli, Mode};
use busbar_gateway::remote::Remote;

/// Cluster mode: membership, health probes, and the cluster handler.
mod cluster {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use busbar_agent::etcd_conn::EtcdConnection;
    use busbar_agent::front::Handler;
    use busbar_gateway::cluster::{Cluster, Member};
    use busbar_gateway::config::ClusterConfig;
    use busbar_gateway::registry;
    use busbar_gateway::serve::{ClusterHandler, EtcdNames, LocalNames, Names};
    use tokio_util::sync::CancellationToken;
    use tracing::info;

    pub async fn start(
        config: &ClusterConfig,
        shutdown: &CancellationToken,
    ) -> Result<Arc<dyn Handler>, String> {
        let tls = super::check_identity(&config.tls)?;
        let cluster = Cluster::new(tls, config.health.clone());
        let statics: BTreeMap<String, Member> = config
            .agents
            .iter()
            .map(|(node, addr)| {
                (
                    node.clone(),
                    Member {
                        addr: addr.clone(),
                        labels: BTreeMap::new(),
                    },
                )
            })
            .collect();
        cluster.set_members(&statics);
        let names: Names = match &config.etcd {
            None => Some(Arc::new(LocalNames::default())),
            Some(etcd) => {
                let etcd = etcd.connection().map_err(|e| e.to_string())?;
                let client = registry::connect(&etcd).await.map_err(|e| e.to_string())?;
                follow_registry(&cluster, etcd, config, statics.clone(), shutdown);
                Some(Arc::new(EtcdNames {
                    client,
                    prefix: config.etcd_prefix.clone(),
                }))
            }
        };
        let shown = config.etcd.as_ref().map(|e| e.shown()).unwrap_or_default();
        info!(static_nodes = statics.len(), etcd = %shown, strategy = %config.strategy, "serving a cluster");
        tokio::spawn(cluster.clone().run_probes(shutdown.clone()));
        let handler = ClusterHandler::new(cluster, config.strategy, names);
        handler.spawn_last_seen(shutdown.clone());
        Ok(Arc::new(handler))
    }

    /// Keeps the cluster's members in step with the etcd registry (plus the static ones).
    fn follow_registry(
        cluster: &Arc<Cluster>,
        etcd: EtcdConnection,
        config: &ClusterConfig,
        statics: BTreeMap<String, Member>,
        shutdown: &CancellationToken,
    ) {
        let mut rx = registry::spawn_watch(etcd, config.etcd_prefix.clone(), shutdown.clone());
        let cluster = cluster.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let mut members = statics.clone();
                for (name, entry) in rx.borrow_and_update().iter() {
                    members.insert(
                        name.clone(),
                        Member {
                            addr: entry.advertise.clone(),
                            labels: entry.labels.clone(),
                        },
                    );
                }
                cluster.set_members(&members);
            }
        });
    }
}

fn main() -> ExitCode {
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    busbar_agent::logging::init(&config.local.log_level);
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
    let runtime = run::runtime(&config.local);
    runtime.block_on(async move {
        let listeners = match run::bind_all(&config.local).await {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let handler: Arc<dyn Handler> = match (&config.mode, chains) {
            (Mode::Embedded, Some(chains)) => {
                info!(engine = %config.local.engine, "embedded agent (no --agent given)");
                run::local_proxy(&config.local, chains, &shutdown)
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
                Arc::new(Remote { agent: link })
            }
            (Mode::Cluster(cluster), _) => match cluster::start(cluster, &shutdown).await {
                Ok(handler) => handler,
                Err(e) => {
                    error!("{e}");
                    return ExitCode::from(EX_USAGE);
                }
            },
            (Mode::Embedded, None) => unreachable!("embedded mode always has chains"),
        };
        run::serve_until_signal(
            listeners,
            handler,
            &config.local,
            shutdown,
            tokio::task::JoinSet::new(),
        )
        .await;
        ExitCode::SUCCESS
    })
}

/// The gateway's TLS client config, after checking that our own certificate is a gateway's.
fn check_identity(files: &tls::TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let me = files.identity().map_err(|e| format!("--tls-cert: {e}"))?;
    if me.role != Role::Gateway {
        return Err(format!(
            "--tls-cert is {me}: a gateway needs a certificate with the gateway role"
        ));
    }
    tls::client_config(files, Role::Agent).map_err(|e| e.to_string())
}
