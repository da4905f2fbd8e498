//! The status document: what `/status.json` answers and `busbarctl status --json` prints.
//!
//! Stable: fields are added, never renamed or removed, within one [`FORMAT`]. Times are
//! milliseconds since the Unix epoch; durations say their unit in their name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the document's shape (`format`).
pub const FORMAT: u32 = 1;

/// The whole status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`FORMAT`].
    pub format: u32,
    /// When the gateway made this document.
    pub generated_at_ms: u64,
    pub gateway: GatewayInfo,
    /// Every node the gateway knows, by name.
    pub nodes: Vec<Node>,
    /// The gateway's last error answers (status 400 or more), newest first (at most 20).
    pub errors: Vec<ErrorAnswer>,
}

/// The gateway itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// busbar's version.
    pub version: String,
    /// Seconds between health probes of each node (`--probe-interval`).
    pub probe_interval_s: f64,
    /// Seconds a node has to answer a probe (`--probe-timeout`).
    pub probe_timeout_s: f64,
    /// Docker API requests answered since the gateway started, and how many with a 4xx and a
    /// 5xx status.
    pub requests: u64,
    pub requests_4xx: u64,
    pub requests_5xx: u64,
    /// `cluster` (nodes behind agents, probed) or `embedded` (one machine: the agent in the
    /// gateway's process, on its local engine).
    #[serde(default)]
    pub mode: String,
    /// The span of the recent window, in seconds (`--status-window`): the `recent` figures
    /// cover at least this much (or the whole life of the gateway, when shorter).
    #[serde(default)]
    pub window_s: f64,
    /// The requests answered in the recent window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RequestWindow>,
}

/// The gateway's requests in the recent window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestWindow {
    /// The seconds the figures cover.
    pub window_s: f64,
    pub requests: u64,
    pub requests_4xx: u64,
    pub requests_5xx: u64,
}

impl RequestWindow {
    /// `count` per minute over the window.
    pub fn per_minute(&self, count: u64) -> f64 {
        per_minute(count, self.window_s)
    }
}

fn per_minute(count: u64, window_s: f64) -> f64 {
    if window_s <= 0.0 {
        return 0.0;
    }
    count as f64 * 60.0 / window_s
}

/// One node as the gateway last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// host:port of its agent.
    pub addr: String,
    /// `Healthy`, `Unhealthy` or `Disconnected` (its registration in etcd is gone).
    pub health: String,
    /// Why the node is not healthy (or the last error seen on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Containers on its engine (running or not), from the engine's `/info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<u64>,
    /// The engine's version, from its `/version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// The time of the gateway's last health probe of the node, answered or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ms: Option<f64>,
    /// The adapter chains the node runs, as its agent reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<Chains>,
    /// The node's calls to each adapter since its agent started, by adapter name.
    #[serde(default)]
    pub adapters: Vec<Adapter>,
}

/// The chains a node runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chains {
    /// The etcd revision of the chains it runs (0: none from etcd).
    pub revision: i64,
    /// `etcd`, `cache` (etcd unreachable at start: its last-known-good chains), `file` or
    /// `none`.
    pub source: String,
    /// Each scope merged into its chain, with the revision of the scope's document.
    pub scopes: BTreeMap<String, i64>,
    /// Why it refused the latest chains (it keeps running `revision`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The revision it refused, with `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_revision: Option<i64>,
    /// The `--config` file, with `source` `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The chains themselves, each endpoint's adapters, where the gateway knows them (the
    /// embedded agent's; a cluster's agents do not report them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Hooks>,
}

/// One endpoint of a chain set: its key and the adapters that run on it, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// The key as written in the chains, e.g. `POST /*/containers/create`.
    pub key: String,
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// One adapter's calls on one node, since the node's agent started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    pub adapter: String,
    pub calls: u64,
    /// Calls that failed (timeouts, unreachable, invalid answers...), timeouts included.
    pub errors: u64,
    pub timeouts: u64,
    /// Calls the adapter answered with an error, which went to the client.
    pub refusals: u64,
    /// The time of all calls, in seconds.
    pub seconds: f64,
    /// The same figures in the recent window (the gateway's `window_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<AdapterWindow>,
}

/// One adapter's calls on one node in the recent window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdapterWindow {
    /// The seconds the figures cover.
    pub window_s: f64,
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub refusals: u64,
    pub seconds: f64,
}

impl AdapterWindow {
    /// The mean time of a call in the window, in milliseconds (`None` without calls).
    pub fn mean_ms(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.seconds * 1000.0 / self.calls as f64)
    }

    /// The share of the window's calls that failed, in percent (`None` without calls).
    pub fn error_percent(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.errors as f64 * 100.0 / self.calls as f64)
    }

    /// `count` per minute over the window.
    pub fn per_minute(&self, count: u64) -> f64 {
        per_minute(count, self.window_s)
    }
}

impl Adapter {
    /// The mean time of a call, in milliseconds (`None` before the first call).
    pub fn mean_ms(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.seconds * 1000.0 / self.calls as f64)
    }

    /// The share of calls that failed, in percent (`None` before the first call).
    pub fn error_percent(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.errors as f64 * 100.0 / self.calls as f64)
    }
}

/// One error answer of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub at_ms: u64,
    /// The request's id (`X-Request-Id`, in the gateway's and the agent's log lines).
    pub request_id: String,
    pub status: u16,
    pub method: String,
    /// The endpoint's class (`container_create`, ...: the metrics' `endpoint`).
    pub endpoint: String,
    /// The node that served the request (empty when none did alone).
    pub node: String,
    /// The answer's `message`.
    pub message: String,
}

impl Status {
    /// How many nodes are healthy.
    pub fn healthy(&self) -> usize {
        self.nodes.iter().filter(|n| n.health == "Healthy").count()
    }

    /// Every scope any node runs, with the revision of its document on each node that runs
    /// it: scope -> node -> revision.
    pub fn scopes(&self) -> BTreeMap<&str, BTreeMap<&str, i64>> {
        let mut out: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
        for node in &self.nodes {
            for (scope, rev) in node.chains.iter().flat_map(|c| c.scopes.iter()) {
                out.entry(scope.as_str())
                    .or_default()
                    .insert(node.name.as_str(), *rev);
            }
        }
        out
    }
}

/// Milliseconds since the Unix epoch as `HH:MM:SS` (UTC).
pub fn clock(at_ms: u64) -> String {
    let s = at_ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// Three nodes: two healthy (one refused the latest chains), one unhealthy, an adapter
    /// with errors and two error answers.
    pub fn status() -> Status {
        let node = |name: &str, health: &str| Node {
            name: name.into(),
            addr: format!("10.0.0.{}:2377", name.len()),
            health: health.into(),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            containers: Some(3),
            engine_version: Some("26.1.5".into()),
            probe_ms: Some(1.5),
            chains: Some(Chains {
                revision: 12,
                source: "etcd".into(),
                scopes: [("global".to_owned(), 12)].into(),
                refused: None,
                refused_revision: None,
                file: None,
                endpoints: vec![],
            }),
            adapters: vec![Adapter {
                adapter: "netpol".into(),
                calls: 10,
                errors: 1,
                timeouts: 1,
                refusals: 2,
                seconds: 0.05,
                recent: Some(AdapterWindow {
                    window_s: 300.0,
                    calls: 4,
                    errors: 1,
                    timeouts: 0,
                    refusals: 2,
                    seconds: 0.008,
                }),
            }],
            last_error: None,
        };
        let mut n2 = node("node2", "Healthy");
        let chains = n2.chains.as_mut().unwrap();
        chains.refused = Some("adapter \"x\": no url".into());
        chains.refused_revision = Some(13);
        let mut n3 = node("node3", "Unhealthy");
        n3.last_error = Some("agent unreachable: connection refused <&>".into());
        n3.containers = None;
        Status {
            format: FORMAT,
            generated_at_ms: 1_700_000_000_000,
            gateway: GatewayInfo {
                version: "0.1.0".into(),
                probe_interval_s: 3.0,
                probe_timeout_s: 3.0,
                requests: 40,
                requests_4xx: 2,
                requests_5xx: 1,
                mode: "cluster".into(),
                window_s: 300.0,
                recent: Some(RequestWindow {
                    window_s: 300.0,
                    requests: 12,
                    requests_4xx: 1,
                    requests_5xx: 1,
                }),
            },
            nodes: vec![node("node1", "Healthy"), n2, n3],
            errors: vec![ErrorAnswer {
                at_ms: 1_700_000_000_000,
                request_id: "req-1".into(),
                status: 502,
                method: "POST".into(),
                endpoint: "container_create".into(),
                node: "node3".into(),
                message: "node node3: <script>alert(1)</script>".into(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_round_trips_and_keeps_its_field_names() {
        let s = fixtures::status();
        let text = serde_json::to_string(&s).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format"], 1);
        assert_eq!(v["nodes"][2]["health"], "Unhealthy");
        assert_eq!(v["nodes"][1]["chains"]["refused_revision"], 13);
        assert_eq!(v["nodes"][0]["adapters"][0]["timeouts"], 1);
        assert_eq!(v["errors"][0]["request_id"], "req-1");
        assert_eq!(v["gateway"]["probe_interval_s"], 3.0);
        assert_eq!(v["gateway"]["recent"]["requests_4xx"], 1);
        assert_eq!(v["nodes"][0]["adapters"][0]["recent"]["errors"], 1);
        // A document of a gateway before the window (and the embedded mode) still reads.
        let old = r#"{"format":1,"generated_at_ms":1,"gateway":{"version":"0.1.0","probe_interval_s":3.0,"probe_timeout_s":3.0,"requests":1,"requests_4xx":0,"requests_5xx":0},"nodes":[{"name":"n","addr":"a","health":"Healthy","labels":{},"adapters":[{"adapter":"x","calls":1,"errors":0,"timeouts":0,"refusals":0,"seconds":0.1}]}],"errors":[]}"#;
        let old: Status = serde_json::from_str(old).unwrap();
        assert_eq!(old.gateway.recent, None);
        assert_eq!(old.nodes[0].adapters[0].recent, None);
    }

    #[test]
    fn scopes_list_the_revision_each_node_runs() {
        let s = fixtures::status();
        let scopes = s.scopes();
        assert_eq!(scopes["global"].len(), 3);
        assert_eq!(scopes["global"]["node2"], 12);
        assert_eq!(s.healthy(), 2);
        assert_eq!(clock(1_700_000_000_000), "22:13:20");
    }
}
