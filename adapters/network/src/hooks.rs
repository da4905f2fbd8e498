//! The adapter: what each hook call does.
//!
//! | chain entry | does |
//! | --- | --- |
//! | pre `POST /*/containers/create` | a labelled create: claims an address in etcd (the name's previous one when free) and rewrites the create to join `busbar` with it ([`crate::create`]) |
//! | post `POST /*/containers/create` | the engine refused the create: gives the address back |
//! | post `POST /*/containers/*/start` | a labelled container started: its name goes into DNS and it announces its address on the overlay |
//!
//! Stops, deaths and removals are seen on the engine's event stream ([`crate::node`]),
//! whoever caused them (`docker rm`, `--rm`, a crash), so the chain needs no hook on them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar_adapter::hook::{Call, PostAnswer, PreAnswer, Refusal};
use busbar_adapter::v1::{PostHookRequest, PreHookRequest};
use busbar_adapter::Adapter;
use tracing::{info, warn};

use crate::create::{container_in_path, container_name, refusal, rewrite, wants_cluster};
use crate::node::Node;
use crate::store::StoreError;

/// How long an allocation may take before the create is refused.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claim waits for the create's post-hook before it is forgotten here (the
/// reconciliation frees it if no container carries it).
const PENDING_TTL: Duration = Duration::from_secs(120);

/// Claims by request id: the address, the claim id, when.
type Pending = HashMap<String, (Ipv4Addr, String, Instant)>;

/// The adapter served to the agents.
#[derive(Clone)]
pub struct NetworkAdapter {
    node: Arc<Node>,
    /// Claims made by pre-hooks, by request id, until the create's post-hook.
    pending: Arc<Mutex<Pending>>,
}

impl NetworkAdapter {
    pub fn new(node: Arc<Node>) -> NetworkAdapter {
        NetworkAdapter {
            node,
            pending: Arc::default(),
        }
    }

    /// Refuses a call from another node's agent: each agent must call its own node's adapter.
    fn check_caller<R>(&self, call: &Call<R>) -> Result<(), Refusal> {
        match call.node() {
            Some(caller) if caller != self.node.name() => Err(Refusal::failed(format!(
                "busbar-network on node {} was called by node {caller}'s agent: the chain must \
                 name the adapter by a loopback URL (http://127.0.0.1:7480/) so that each agent \
                 calls the adapter of its own node",
                self.node.name()
            ))),
            _ => Ok(()),
        }
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or("")
}

fn is_create(method: &str, target: &str) -> bool {
    method == "POST" && path_of(target).ends_with("/containers/create")
}

fn is_start(method: &str, target: &str) -> bool {
    method == "POST"
        && path_of(target).ends_with("/start")
        && path_of(target).contains("/containers/")
}

impl Adapter for NetworkAdapter {
    async fn pre_hook(&self, call: Call<PreHookRequest>) -> PreAnswer {
        let req = &call.request.client_request;
        if !is_create(&req.method, &req.request) {
            return Ok(call.unchanged());
        }
        let Some(body) = call.body_json() else {
            return Ok(call.unchanged());
        };
        if !wants_cluster(&body) {
            return Ok(call.unchanged());
        }
        self.check_caller(&call)?;
        if let Some(message) = refusal(&body) {
            return Err(Refusal::new(400, message));
        }
        let node = self.node.name();
        let name = container_name(&req.request);
        let claim = uuid::Uuid::new_v4().simple().to_string();
        let claimed = tokio::time::timeout(
            CLAIM_TIMEOUT,
            self.node.store.claim(name.as_deref(), &claim),
        )
        .await;
        let ip = match claimed {
            Ok(Ok(ip)) => ip,
            Ok(Err(e @ StoreError::Full { .. })) => {
                return Err(Refusal::conflict(format!("busbar-network on {node}: {e}")))
            }
            Ok(Err(e)) => {
                return Err(Refusal::new(
                    503,
                    format!("busbar-network on {node}: cannot allocate an address: {e}"),
                ))
            }
            Err(_) => {
                return Err(Refusal::new(
                    503,
                    format!(
                        "busbar-network on {node}: no address allocated within {CLAIM_TIMEOUT:?} (is etcd reachable?)"
                    ),
                ))
            }
        };
        info!(container = name.as_deref().unwrap_or(""), %ip, "address claimed");
        if let Some(id) = &call.context.request_id {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|_, (_, _, at)| at.elapsed() < PENDING_TTL);
            pending.insert(id.clone(), (ip, claim.clone(), Instant::now()));
        }
        Ok(call.with_body(&rewrite(&body, ip, self.node.gateway(), &claim)))
    }

    async fn post_hook(&self, call: Call<PostHookRequest>) -> PostAnswer {
        let req = &call.request.client_request;
        let code = call.request.server_response.code;
        if is_create(&req.method, &req.request) {
            let claimed = call.context.request_id.as_ref().and_then(|id| {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.remove(id)
            });
            if let Some((ip, claim, _)) = claimed {
                if !(200..300).contains(&code) {
                    match self.node.store.release(ip, &claim).await {
                        Ok(_) => {
                            info!(%ip, code, "the engine refused the create; address released")
                        }
                        Err(e) => {
                            warn!(%ip, error = %e, "releasing the address of a refused create failed; the reconciliation will")
                        }
                    }
                }
            }
        } else if is_start(&req.method, &req.request) && (200..300).contains(&code) {
            if let Some(id) = container_in_path(&req.request) {
                self.node.started(&id).await;
            }
        }
        Ok(call.unchanged())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_calls_are_creates_and_starts() {
        assert!(is_create("POST", "/v1.41/containers/create?name=web"));
        assert!(is_create("POST", "/containers/create"));
        assert!(!is_create("GET", "/v1.41/containers/create"));
        assert!(!is_create("POST", "/v1.41/containers/web/start"));
        assert!(!is_create("POST", "/v1.41/volumes/create"));
        assert!(is_start("POST", "/v1.41/containers/abc/start"));
        assert!(is_start("POST", "/containers/abc/start?detachKeys=x"));
        assert!(!is_start("POST", "/v1.41/containers/abc/stop"));
        assert!(!is_start("POST", "/v1.41/plugins/x/start"));
        assert!(!is_start("GET", "/v1.41/containers/abc/start"));
    }
}
