//! The one node of an embedded gateway (no `--agent`: the agent runs in this process, on
//! `--docker`): its engine probed as a cluster gateway probes its agents (every
//! [`PROBE_EVERY`], each call within [`PROBE_TIMEOUT`]: `/_ping` timed, then `/version` and
//! `/info`), its chains as the in-process agent runs them (the `--config` file, and whether its
//! last change was refused), and its adapter figures from this process's own totals.
//!
//! The probes run only while the status is served (`--metrics-listen`); a status request
//! reads what the last probe found and never waits for the engine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use busbar_agent::proxy::Proxy;
use busbar_chains::scoped::ChainStatus;
use busbar_status::{Adapter, Chains, Hooks, Node};

/// How often the engine is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);
/// How long each call of a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the last probe of the engine found.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// `None` until the first probe ends.
    error: Option<Option<String>>,
    /// The engine's `Name` (its host's name), from `/info`.
    name: Option<String>,
    version: Option<String>,
    containers: Option<u64>,
    probe: Option<Duration>,
}

/// The embedded gateway's one node.
pub struct LocalNode {
    proxy: Arc<Proxy>,
    chains: watch::Receiver<ChainStatus>,
    seen: Mutex<Seen>,
}

impl LocalNode {
    /// The node of `proxy` (the in-process agent), whose chains' status is `chains`.
    pub fn new(proxy: Arc<Proxy>, chains: watch::Receiver<ChainStatus>) -> LocalNode {
        LocalNode {
            proxy,
            chains,
            seen: Mutex::default(),
        }
    }

    /// Probes the engine now and every [`PROBE_EVERY`] until `shutdown`.
    pub async fn run_probes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let seen = tokio::select! {
                _ = shutdown.cancelled() => return,
                seen = self.probe() => seen,
            };
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }

    /// One probe: `/_ping` (timed; the health), then the documents when it answered.
    async fn probe(&self) -> Seen {
        let mut seen = Seen {
            // The last documents stay while the engine does not answer.
            error: None,
            ..self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
        };
        let started = Instant::now();
        let ping = self.get("/_ping").await;
        seen.probe = Some(started.elapsed());
        if let Err(e) = ping {
            seen.error = Some(Some(e));
            return seen;
        }
        seen.error = Some(None);
        if let Ok(v) = self.get_json("/version").await {
            seen.version = v["Version"].as_str().map(str::to_owned);
        }
        if let Ok(info) = self.get_json("/info").await {
            seen.containers = info["Containers"].as_u64();
            seen.name = info["Name"].as_str().map(str::to_owned);
        }
        seen
    }

    /// The body of a `GET path` the engine answered with a success, within [`PROBE_TIMEOUT`].
    async fn get(&self, path: &str) -> Result<bytes::Bytes, String> {
        let engine = self.proxy.engine();
        let req = Request::get(path)
            .body(busbar_http::body::empty())
            .expect("a fixed path makes a valid request");
        let call = async {
            let rsp = engine.send(req).await.map_err(|e| e.to_string())?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the Docker engine at {}: {e}", engine.addr()))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "the Docker engine at {} answered {path} with {status}",
                    engine.addr()
                ));
            }
            Ok(body)
        };
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "the Docker engine at {} did not answer {path} within {PROBE_TIMEOUT:?}",
                engine.addr()
            )),
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }

    /// The node's row of the status now.
    pub fn node(&self) -> Node {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (health, last_error) = match seen.error {
            None => ("Unhealthy", Some("not probed yet".to_owned())),
            Some(None) => ("Healthy", None),
            Some(Some(e)) => ("Unhealthy", Some(e)),
        };
        let status = self.chains.borrow().clone();
        let running = self.proxy.chains();
        let endpoints = running
            .set
            .endpoints()
            .iter()
            .map(|e| Hooks {
                key: e.key.clone(),
                pre: e.pre.clone(),
                post: e.post.clone(),
            })
            .collect();
        Node {
            name: seen.name.unwrap_or_else(|| "local".to_owned()),
            addr: self.proxy.engine().addr().to_string(),
            health: health.to_owned(),
            last_error,
            labels: Default::default(),
            containers: seen.containers,
            engine_version: seen.version,
            probe_ms: seen.probe.map(|d| d.as_secs_f64() * 1000.0),
            chains: Some(Chains {
                revision: status.revision,
                source: status.source.clone(),
                scopes: status.scopes.clone(),
                refused: status.error.clone(),
                refused_revision: status.rejected_revision,
                file: status.file.clone(),
                endpoints,
            }),
            adapters: adapters(),
        }
    }
}

/// This process's adapter totals (the in-process agent's calls).
fn adapters() -> Vec<Adapter> {
    busbar_metrics::global()
        .recent
        .adapters()
        .into_iter()
        .map(|t| Adapter {
            adapter: t.adapter,
            calls: t.calls,
            errors: t.errors,
            timeouts: t.timeouts,
            refusals: t.refusals,
            seconds: t.seconds,
            recent: None,
        })
        .collect()
}
