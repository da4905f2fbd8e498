//! Starting the gateway's modes: the cluster (membership from `--agent` and etcd, health
//! probes, the cluster handler) and the identity check every mode with agents makes.

use std::collections::BTreeMap;
use std::sync::Arc;

use busbar_etcd::conn::{connect, EtcdConnection};
use busbar_etcd::members;
use busbar_http::observe::{Check, Readiness};
use busbar_http::server::Handler;
use busbar_tls::{Role, TlsFiles};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{Cluster, Member};
use crate::config::ClusterConfig;
use crate::hop::AgentLink;
use crate::serve::{ClusterHandler, EtcdNames, LocalNames, Names};

/// `/readyz` of a gateway in cluster mode: it knows its nodes (the registry answered, or it
/// has static nodes, and each was probed once) and at least one of them is healthy.
pub struct ClusterReadiness {
    pub cluster: Arc<Cluster>,
}

impl Readiness for ClusterReadiness {
    fn checks(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let known = match self.cluster.ready(std::time::Duration::ZERO).await {
                Ok(()) => Check::ok("nodes", format!("{} known", self.cluster.nodes().len())),
                Err(why) => Check::failed("nodes", why),
            };
            let snapshots = self.cluster.snapshots();
            let healthy: Vec<_> = self.cluster.healthy();
            let health = if healthy.is_empty() {
                let why: Vec<_> = snapshots
                    .iter()
                    .map(|s| match &s.last_error {
                        Some(e) => format!("{} {}: {e}", s.name, s.health),
                        None => format!("{} {}", s.name, s.health),
                    })
                    .collect();
                let why = if why.is_empty() {
                    "no node known".to_owned()
                } else {
                    format!("no healthy node ({})", why.join("; "))
                };
                Check::failed("healthy_nodes", why)
            } else {
                Check::ok(
                    "healthy_nodes",
                    format!("{} of {} healthy", healthy.len(), snapshots.len()),
                )
            };
            vec![known, health]
        })
    }
}

/// `/readyz` of a gateway in front of one agent (`--agent`): the agent answers a probe and its
/// engine is reachable.
pub struct RemoteReadiness {
    pub agent: AgentLink,
}

impl Readiness for RemoteReadiness {
    fn checks(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let asked = busbar_hop::v1::DescribeRequest {
                wait_ms: 1000,
                max_age_ms: 60_000,
            };
            let check = match self
                .agent
                .describe(asked, std::time::Duration::from_secs(2))
                .await
            {
                Ok(d) if d.engine_reachable => Check::ok(
                    "agent",
                    format!("{} answers, its engine too", self.agent.node()),
                ),
                Ok(d) => Check::failed(
                    "agent",
                    format!(
                        "{}: engine unreachable: {}",
                        self.agent.node(),
                        d.engine_error
                    ),
                ),
                Err(e) => Check::failed("agent", e.to_string()),
            };
            vec![check]
        })
    }
}

/// How long the gateway waits for etcd at start before it starts without it.
const ETCD_AT_START: std::time::Duration = std::time::Duration::from_secs(2);

/// Cluster mode: membership (static and from etcd), health probes, the cluster handler.
pub async fn start_cluster(
    config: &ClusterConfig,
    shutdown: &CancellationToken,
) -> Result<(Arc<dyn Handler>, Arc<Cluster>), String> {
    let tls = check_identity(&config.tls)?;
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
    let etcd = match &config.etcd {
        Some(etcd) => {
            let etcd = etcd.connection().map_err(|e| e.to_string())?;
            cluster.expect_registry(&format!("the node registry (etcd at {})", etcd.shown()));
            Some(etcd)
        }
        None => None,
    };
    // Probed at once (as every node that joins later).
    cluster.set_members(&statics);
    let names: Names = match etcd {
        None => Some(Arc::new(LocalNames::default())),
        Some(etcd) => {
            // A refusal (a wrong password, an untrusted certificate) is a mistake to fix: the
            // gateway stops. An etcd that does not answer yet is waited for: the gateway serves
            // the static nodes meanwhile, and the registry's once it answers.
            let client = match tokio::time::timeout(ETCD_AT_START, connect(&etcd)).await {
                Ok(Ok(client)) => Some(client),
                Ok(Err(e)) if e.refusal().is_some() => return Err(e.to_string()),
                Ok(Err(e)) => {
                    warn!("{e}; starting without it, and following it once it answers");
                    None
                }
                Err(_) => {
                    warn!(etcd = %etcd.shown(), "etcd did not answer within {ETCD_AT_START:?}; starting without it, and following it once it answers");
                    None
                }
            };
            follow_registry(&cluster, etcd.clone(), config, statics.clone(), shutdown);
            Some(Arc::new(EtcdNames::new(
                etcd,
                client,
                config.etcd_prefix.clone(),
            )))
        }
    };
    let shown = config.etcd.as_ref().map(|e| e.shown()).unwrap_or_default();
    info!(static_nodes = statics.len(), etcd = %shown, strategy = %config.strategy, "serving a cluster");
    tokio::spawn(cluster.clone().run_probes(shutdown.clone()));
    let mut handler = ClusterHandler::new(cluster.clone(), config.strategy, names);
    if config.list_live {
        handler.spawn_last_seen(shutdown.clone());
    } else {
        let settings = crate::serve::listcache::Settings {
            resync_every: config.list_resync,
            ..Default::default()
        };
        handler = handler.with_list_cache(settings, shutdown.clone());
    }
    Ok((Arc::new(handler), cluster))
}

/// Keeps the cluster's members in step with the etcd registry (plus the static ones).
fn follow_registry(
    cluster: &Arc<Cluster>,
    etcd: EtcdConnection,
    config: &ClusterConfig,
    statics: BTreeMap<String, Member>,
    shutdown: &CancellationToken,
) {
    let mut rx = members::spawn_watch(etcd, config.etcd_prefix.clone(), shutdown.clone());
    let cluster = cluster.clone();
    tokio::spawn(async move {
        // The first change is the registry's first answer (published even when empty).
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
            cluster.registry_answered();
        }
    });
}

/// The gateway's TLS client config, after checking that our own certificate is a gateway's.
pub fn check_identity(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let me = files.identity().map_err(|e| format!("--tls-cert: {e}"))?;
    busbar_tls::warn_if_expiring(files);
    if me.role != Role::Gateway {
        return Err(format!(
            "--tls-cert is {me}: a gateway needs a certificate with the gateway role"
        ));
    }
    busbar_tls::client_config(files, Role::Agent).map_err(|e| e.to_string())
}
