//! The status page on the gateway's metrics listener (`--metrics-listen`, so under its
//! protection: loopback, or the API's client TLS): `GET /status` (the page, a full static
//! render that refreshes itself), `/status/fragment` (its content, fetched by its script) and
//! `/status.json` (the document, [`busbar_status::Status`], that `busbarctl status` reads).
//!
//! Made at each request from what the gateway holds in memory. In cluster mode: each node's
//! snapshot (its last probe answer), its figures (the probe's time, the adapter totals its
//! agent reported in that answer) and the process's last error answers; nothing is asked of
//! the agents here. Remote (one `--agent`): the same, for a cluster of that one node, probed
//! on a connection of its own. Embedded: the one local node ([`embedded`]). In every mode,
//! the figures of the recent window (`--status-window`) come from samples of the same
//! totals, taken every few seconds ([`busbar_status::window`]): nothing is added to the
//! request path.
//!
//! # Layout
//! - [`embedded`]: the embedded gateway's node, its engine probed.

pub mod embedded;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use busbar_http::observe::Pages;
use busbar_status::window::{Totals, Window};
use busbar_status::{Adapter, Chains, ErrorAnswer, GatewayInfo, Node, Status, FORMAT};

use crate::cluster::{Cluster, Figures};
use crate::model::NodeSnapshot;
use embedded::LocalNode;

/// Where the nodes of the status come from.
enum Source {
    Cluster(Arc<Cluster>),
    Embedded(Arc<LocalNode>),
}

/// The status page of a gateway in cluster, remote or embedded mode.
pub struct StatusPages {
    source: Source,
    /// `cluster`, `remote` or `embedded` (`gateway.mode`).
    mode: &'static str,
    window: Mutex<Window>,
}

impl StatusPages {
    /// The status of `cluster`, with a recent window of `window`.
    pub fn cluster(cluster: Arc<Cluster>, window: Duration) -> Arc<StatusPages> {
        Arc::new(StatusPages {
            source: Source::Cluster(cluster),
            mode: "cluster",
            window: Mutex::new(Window::new(window)),
        })
    }

    /// The status of a gateway in front of one agent (`--agent`): `cluster` holds that one
    /// node, probed as a cluster's are.
    pub fn remote(cluster: Arc<Cluster>, window: Duration) -> Arc<StatusPages> {
        Arc::new(StatusPages {
            source: Source::Cluster(cluster),
            mode: "remote",
            window: Mutex::new(Window::new(window)),
        })
    }

    /// The status of an embedded gateway's one node, with a recent window of `window`.
    pub fn embedded(node: LocalNode, window: Duration) -> Arc<StatusPages> {
        Arc::new(StatusPages {
            source: Source::Embedded(Arc::new(node)),
            mode: "embedded",
            window: Mutex::new(Window::new(window)),
        })
    }

    /// Samples the totals for the window (and, embedded, probes the engine) until `shutdown`.
    /// Run only where the status is served.
    pub fn spawn(self: &Arc<Self>, shutdown: &CancellationToken) {
        if let Source::Embedded(node) = &self.source {
            tokio::spawn(node.clone().run_probes(shutdown.clone()));
        }
        let pages = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let step = pages.window().step();
            let mut tick = tokio::time::interval(step);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = pages.totals();
                pages.window().record(now.generated_at_ms, Totals::of(&now));
            }
        });
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status now, with the figures of the recent window.
    pub fn status(&self) -> Status {
        let mut s = self.totals();
        self.window().apply(&mut s);
        s
    }

    /// The status now, totals only.
    fn totals(&self) -> Status {
        let (nodes, probe_interval, probe_timeout) = match &self.source {
            Source::Cluster(cluster) => {
                let nodes = cluster
                    .snapshots()
                    .iter()
                    .map(|s| {
                        let figures = cluster
                            .node(&s.name)
                            .map(|n| n.figures())
                            .unwrap_or_default();
                        node_status(s, &figures)
                    })
                    .collect();
                (
                    nodes,
                    cluster.health.probe_interval,
                    cluster.health.probe_timeout,
                )
            }
            Source::Embedded(node) => (
                vec![node.node()],
                embedded::PROBE_EVERY,
                embedded::PROBE_TIMEOUT,
            ),
        };
        let m = busbar_metrics::global();
        let (requests, requests_4xx, requests_5xx) = m.recent.requests();
        Status {
            format: FORMAT,
            generated_at_ms: now_ms(),
            gateway: GatewayInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                probe_interval_s: probe_interval.as_secs_f64(),
                probe_timeout_s: probe_timeout.as_secs_f64(),
                requests,
                requests_4xx,
                requests_5xx,
                mode: self.mode.to_owned(),
                window_s: self.window().span().as_secs_f64(),
                recent: None,
            },
            nodes,
            errors: m
                .recent
                .errors()
                .into_iter()
                .map(|e| ErrorAnswer {
                    at_ms: e.at_ms,
                    request_id: e.request_id,
                    status: e.status,
                    method: e.method.to_owned(),
                    endpoint: e.endpoint.to_owned(),
                    node: e.node,
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// One node's row of the status, from its snapshot and figures.
pub fn node_status(s: &NodeSnapshot, figures: &Figures) -> Node {
    let adapters: Vec<Adapter> = if figures.adapter_stats_json.is_empty() {
        vec![]
    } else {
        serde_json::from_slice(&figures.adapter_stats_json).unwrap_or_default()
    };
    Node {
        name: s.name.clone(),
        addr: s.addr.clone(),
        health: s.health.to_string(),
        last_error: s.last_error.clone(),
        labels: s.labels.clone(),
        containers: s.info.get("Containers").and_then(|c| c.as_u64()),
        engine_version: s
            .version
            .get("Version")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        probe_ms: figures.probe.map(|d| d.as_secs_f64() * 1000.0),
        chains: s.chains.as_ref().map(|c| Chains {
            revision: c.revision,
            source: c.source.clone(),
            scopes: c.scopes.clone(),
            refused: c.error.clone(),
            refused_revision: c.rejected_revision,
            file: c.file.clone(),
            endpoints: vec![],
        }),
        adapters,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Pages for StatusPages {
    fn get(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        let (content_type, body) = match path {
            "/status" | "/status/" => (
                "text/html; charset=utf-8",
                busbar_status::html::page(&self.status()),
            ),
            "/status/fragment" => (
                "text/html; charset=utf-8",
                busbar_status::html::fragment(&self.status()),
            ),
            "/status.json" => (
                "application/json",
                serde_json::to_string(&self.status()).expect("the status serializes") + "\n",
            ),
            _ => return None,
        };
        Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, content_type)
                .header(header::CACHE_CONTROL, "no-store")
                .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                // Its own inline style and script, and fetches of its own origin: nothing else.
                .header(
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
                )
                .body(Full::new(Bytes::from(body)))
                .expect("fixed headers make a valid response"),
        )
    }

    fn paths(&self) -> &'static str {
        "/status, /status.json"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use busbar_chains::scoped::ChainStatus;

    use super::*;
    use crate::model::Health;

    #[test]
    fn a_node_row_has_its_documents_chains_and_adapter_figures() {
        let mut s = NodeSnapshot::new("node1", "10.0.0.1:2377", BTreeMap::new());
        s.health = Health::Healthy;
        s.last_error = None;
        s.info = Arc::new(serde_json::json!({"Containers": 4}));
        s.version = Arc::new(serde_json::json!({"Version": "26.1.5"}));
        s.chains = Some(Arc::new(ChainStatus {
            node: "node1".into(),
            revision: 9,
            scopes: [("global".to_owned(), 9)].into(),
            error: Some("bad chain".into()),
            rejected_revision: Some(10),
            source: "etcd".into(),
            ..ChainStatus::default()
        }));
        let figures = Figures {
            probe: Some(Duration::from_micros(1500)),
            adapter_stats_json:
                br#"[{"adapter":"a","calls":4,"errors":1,"timeouts":1,"refusals":0,"seconds":0.2}]"#
                    .to_vec(),
        };
        let n = node_status(&s, &figures);
        assert_eq!(n.health, "Healthy");
        assert_eq!(n.containers, Some(4));
        assert_eq!(n.engine_version.as_deref(), Some("26.1.5"));
        assert_eq!(n.probe_ms, Some(1.5));
        let c = n.chains.unwrap();
        assert_eq!((c.revision, c.refused_revision), (9, Some(10)));
        assert_eq!(c.refused.as_deref(), Some("bad chain"));
        assert_eq!(n.adapters.len(), 1);
        assert_eq!(n.adapters[0].mean_ms(), Some(50.0));
    }

    #[test]
    fn a_node_never_probed_has_no_figures() {
        let s = NodeSnapshot::new("node2", "10.0.0.2:2377", BTreeMap::new());
        let n = node_status(&s, &Figures::default());
        assert_eq!(n.health, "Unhealthy");
        assert_eq!(n.last_error.as_deref(), Some("not contacted yet"));
        assert_eq!((n.containers, n.probe_ms, n.chains), (None, None, None));
        assert!(n.adapters.is_empty());
    }
}
