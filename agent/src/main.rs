//! `busbar-agent`: flags -> config -> bind -> serve until SIGINT/SIGTERM -> drain.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use busbar_agent::chains::etcd::{EtcdChains, EtcdChainsConfig};
use busbar_agent::chains::scoped::ChainStatus;
use busbar_agent::config::{Cli, GrpcConfig};
use busbar_agent::grpc::{AgentService, NodeIdentity};
use busbar_agent::proxy::Proxy;
use busbar_agent::registry;
use busbar_agent::run::{self, EX_USAGE};
use busbar_agent::tls::{self, Role};

fn main() -> ExitCode {
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-agent: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    busbar_agent::logging::init(&config.log_level);
    let chains = match run::initial_chains(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-agent: invalid adapter config:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = run::runtime(&config);
    runtime.block_on(async move {
        let listeners = match run::bind_all(&config).await {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let (proxy, chain_status) = match etcd_chains(&config) {
            // Chains from etcd: read now (or the cache), then followed in the background.
            Ok(Some(cfg)) => {
                let (initial, source) = EtcdChains::start(cfg).await;
                let status = source.status();
                let (tx, rx) = tokio::sync::watch::channel(initial);
                tokio::spawn(source.run(tx, shutdown.clone()));
                (run::proxy_with(&config, rx), status)
            }
            Ok(None) => run::local_proxy_reporting(&config, chains, &shutdown),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        if let Some(grpc) = &config.grpc {
            match start_grpc(grpc, proxy.clone(), chain_status, shutdown.clone()).await {
                Ok(server) => {
                    servers.spawn(server);
                }
                Err(e) => {
                    error!("{e}");
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
        run::serve_until_signal(listeners, proxy, &config, shutdown, servers).await;
        ExitCode::SUCCESS
    })
}

/// Where this agent's chains come from in etcd, when it runs with `--etcd`.
fn etcd_chains(config: &busbar_agent::config::Config) -> Result<Option<EtcdChainsConfig>, String> {
    let Some(grpc) = config.grpc.as_ref() else {
        return Ok(None);
    };
    let Some(etcd) = &grpc.etcd else {
        return Ok(None);
    };
    Ok(Some(EtcdChainsConfig {
        etcd: etcd.connection().map_err(|e| e.to_string())?,
        prefix: grpc.etcd_prefix.clone(),
        node: node_name(grpc)?,
        labels: grpc.labels.clone(),
        state_dir: grpc.state_dir.clone(),
    }))
}

/// The node name: `--node-name`, checked against the agent certificate's CN (the default).
fn node_name(grpc: &GrpcConfig) -> Result<String, String> {
    let identity = grpc
        .tls
        .identity()
        .map_err(|e| format!("--tls-cert: {e}"))?;
    if identity.role != Role::Agent {
        return Err(format!(
            "--tls-cert is a {} certificate ({identity}); an agent needs the agent role",
            identity.role
        ));
    }
    let name = grpc
        .node_name
        .clone()
        .unwrap_or_else(|| identity.name.clone());
    if name != identity.name {
        return Err(format!(
            "--node-name {name:?} is not the name in --tls-cert ({identity}): gateways check that they reach the node they mean"
        ));
    }
    Ok(name)
}

/// Checks the agent's identity, binds the gRPC port and returns the server to run.
async fn start_grpc(
    grpc: &GrpcConfig,
    proxy: Arc<Proxy>,
    chain_status: tokio::sync::watch::Receiver<ChainStatus>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let name = node_name(grpc)?;
    let server_tls = tls::server_config(&grpc.tls, Role::Gateway).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(grpc.listen)
        .await
        .map_err(|e| format!("cannot listen on {} for gRPC: {e}", grpc.listen))?;
    let node = NodeIdentity {
        name,
        labels: grpc.labels.clone(),
        advertise: grpc.advertise.clone(),
    };
    info!(node = %node.name, advertise = %node.advertise, "agent identity checked");
    // Registered while serving; on shutdown the lease is revoked before the agent exits.
    let registration = match &grpc.etcd {
        Some(etcd) => {
            let etcd = etcd.connection().map_err(|e| e.to_string())?;
            let entry = registry::NodeEntry::new(&node.name, &node.advertise, node.labels.clone());
            let prefix = grpc.etcd_prefix.clone();
            Some(registry::run_registration(
                etcd,
                prefix,
                entry,
                grpc.registration_ttl,
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let service = AgentService::new(proxy, node).with_chain_status(chain_status);
    let server = busbar_agent::grpc::serve(listener, server_tls, service, shutdown);
    Ok(async move {
        match registration {
            Some(registration) => {
                tokio::join!(server, registration);
            }
            None => server.await,
        }
    })
}
