//! The agent's cluster half: serving gateways over the gRPC hop with mutual TLS, registering
//! the node in etcd (`busbar_etcd::registry`), and adapter chains taken from etcd.
//!
//! # Layout
//! - [`start`]: what `busbar-agent` runs with `--grpc-listen` (and `--etcd`).
//! - [`grpc`]: the agent's gRPC service for gateways.
//! - [`lane`]: the agent's side of a lane (successive exchanges on one `Lane` call).
//! - [`engine_state`]: the engine's health (pinged) and documents (fetched in the background),
//!   which `Describe` answers from.
//! - [`etcd_chains`]: the chains from etcd, merged for this node, followed live, cached.

pub mod engine_state;
pub mod etcd_chains;
pub mod grpc;
pub mod lane;

use std::sync::Arc;

use busbar_chains::scoped::ChainStatus;
use busbar_etcd::registry::{run_registration, NodeEntry};
use busbar_tls::Role;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::chain_source::Loaded;
use crate::config::{Config, GrpcConfig};
use crate::proxy::Proxy;
use crate::run;
use etcd_chains::{EtcdChains, EtcdChainsConfig};
use grpc::{AgentService, NodeIdentity};

/// The agent's proxy, with its chains from etcd (with `--etcd`: read now or from the cache,
/// then followed) or from `chains` (the `--config` file, watched); with `--grpc-listen`, the
/// gRPC service (and the etcd registration) added to `servers`. Errors are configuration
/// errors (exit 64).
pub async fn start(
    config: &Config,
    chains: Loaded,
    shutdown: &CancellationToken,
    servers: &mut JoinSet<()>,
) -> Result<Arc<Proxy>, String> {
    let (proxy, chain_status) = match etcd_chains(config)? {
        Some(cfg) => {
            let (initial, source) = EtcdChains::start(cfg).await;
            let status = source.status();
            let (tx, rx) = watch::channel(initial);
            tokio::spawn(source.run(tx, shutdown.clone()));
            (run::proxy_with(config, rx), status)
        }
        None => run::local_proxy_reporting(config, chains, shutdown),
    };
    if let Some(grpc) = &config.grpc {
        let server = start_grpc(
            grpc,
            config.shutdown_grace,
            proxy.clone(),
            chain_status,
            shutdown.clone(),
        )
        .await?;
        servers.spawn(server);
    }
    Ok(proxy)
}

/// Where this agent's chains come from in etcd, when it runs with `--etcd`.
fn etcd_chains(config: &Config) -> Result<Option<EtcdChainsConfig>, String> {
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
    busbar_tls::warn_if_expiring(&grpc.tls);
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
    grace: std::time::Duration,
    proxy: Arc<Proxy>,
    chain_status: watch::Receiver<ChainStatus>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let name = node_name(grpc)?;
    let server_tls =
        busbar_tls::server_config(&grpc.tls, Role::Gateway).map_err(|e| e.to_string())?;
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
            let entry = NodeEntry::new(&node.name, &node.advertise, node.labels.clone());
            let prefix = grpc.etcd_prefix.clone();
            Some(run_registration(
                etcd,
                prefix,
                entry,
                grpc.registration_ttl,
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let mut service = AgentService::new(proxy, node).with_chain_status(chain_status);
    if grpc.no_lanes {
        service = service.without_lanes();
    }
    let server = grpc::serve(listener, server_tls, service, shutdown, grace);
    Ok(async move {
        match registration {
            Some(registration) => {
                tokio::join!(server, registration);
            }
            None => server.await,
        }
    })
}
