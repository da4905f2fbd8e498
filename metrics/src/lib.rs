//! The metrics every busbar process keeps, in one place: the registry, every series with its
//! name, type, help and labels, and the process metrics read from `/proc` at scrape time.
//!
//! Recording is always on and costs an atomic add or two (a label set's lookup in a
//! read-locked map, then the add); the series are served only where `--metrics-listen` says
//! (see `busbar_http::observe`). One registry per process ([`global`]): the agent embedded in a
//! gateway records into the gateway's.
//!
//! Every label value is drawn from a bounded set: endpoint classes
//! (`busbar_api::endpoint::class`, given here as `&'static str`), methods folded to
//! the standard ones ([`method`]), status classes ([`status_class`]), node and adapter names
//! (as many as the cluster and its chains have). Never a path, a container id or a name a
//! client wrote.
//!
//! # Layout
//! - [`process`]: `process_*` series from `/proc/self`, read when scraped.
//! - [`recent`]: adapter totals and the last error answers, for the gateway's status page.

pub mod process;
pub mod recent;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request: its endpoint class, method, status class (`2xx`...) and the node that served it
/// (empty when none did alone: an agent's own engine, a gateway's aggregated call).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub method: &'static str,
    pub status: &'static str,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// A hook: its adapter (the chain's name for it) and phase (`pre`, `post`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub adapter: String,
    pub phase: &'static str,
}

/// A hook that failed: its adapter, phase and kind (`timeout`, `unreachable`, `status`,
/// `invalid`, `refused`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookErrorLabels {
    pub adapter: String,
    pub phase: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `to_client` or `to_engine`.
    pub direction: &'static str,
}

/// A scheduling decision: the strategy and its outcome (`placed`, `no_node`,
/// `unsatisfiable`, `no_resources`, `invalid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub strategy: &'static str,
    pub outcome: &'static str,
}

/// An etcd watch: `nodes` (a gateway's node registry), `chains` (an agent's adapter chains),
/// `registration` (an agent's own registration key).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: &'static str,
}

/// Why an etcd watch ended and was started again: `ended` (etcd closed it), `cancelled`,
/// `compacted` (its revision was compacted away), `broken` (the stream failed), `unreachable`
/// (listing or watching failed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchEndLabels {
    pub watch: &'static str,
    pub reason: &'static str,
}

/// The outcome of a claim of a container name: `claimed`, `conflict` (reserved by a create in
/// flight or held by a container), `invalid` (not a name Docker accepts), `unavailable` (the
/// name store or a node could not say).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series busbar keeps. The README's "Metrics" table documents each.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histograms<EndpointLabels>,
    pub response_bytes: Family<EndpointLabels, Counter>,
    pub open_responses: Gauge,
    pub hijacked_open: Gauge,
    pub hijacked_bytes: Family<DirectionLabels, Counter>,
    pub engine_duration: Histograms<EndpointLabels>,
    pub hook_duration: Histograms<HookLabels>,
    pub hook_errors: Family<HookErrorLabels, Counter>,
    pub hook_refusals: Family<HookLabels, Counter>,
    pub node_up: Family<NodeLabels, Gauge>,
    pub node_probe_duration: Histograms<NodeLabels>,
    pub node_chain_revision: Family<NodeLabels, Gauge>,
    pub node_chain_refused: Family<NodeLabels, Gauge>,
    pub schedule_decisions: Family<ScheduleLabels, Counter>,
    pub etcd_watch_lag: Histograms<WatchLabels>,
    pub etcd_watch_revision: Family<WatchLabels, Gauge>,
    pub etcd_watch_restarts: Family<WatchEndLabels, Counter>,
    pub name_claims: Family<OutcomeLabels, Counter>,
    /// Request spans for the OTLP exporter, by outcome: `exported`, `dropped` (queue full),
    /// `failed` (in an export that failed or timed out).
    pub otlp_spans: Family<OutcomeLabels, Counter>,
    /// Adapter totals and the last error answers (the status page's).
    pub recent: recent::Recent,
}

/// Seconds, from half a millisecond to half a minute (12 buckets, each 2.5 times the last).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 12))
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("busbar");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(seconds),
            response_bytes: Family::default(),
            open_responses: Gauge::default(),
            hijacked_open: Gauge::default(),
            hijacked_bytes: Family::default(),
            engine_duration: Family::new_with_constructor(seconds),
            hook_duration: Family::new_with_constructor(seconds),
            hook_errors: Family::default(),
            hook_refusals: Family::default(),
            node_up: Family::default(),
            node_probe_duration: Family::new_with_constructor(seconds),
            node_chain_revision: Family::default(),
            node_chain_refused: Family::default(),
            schedule_decisions: Family::default(),
            etcd_watch_lag: Family::new_with_constructor(seconds),
            etcd_watch_revision: Family::default(),
            etcd_watch_restarts: Family::default(),
            name_claims: Family::default(),
            otlp_spans: Family::default(),
            registry: Registry::default(),
            recent: recent::Recent::default(),
        };
        r.register(
            "requests",
            "Docker API requests answered, by endpoint class, method, status class and node",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's head to the end of its answer, by endpoint class",
            m.request_duration.clone(),
        );
        r.register(
            "response_bytes",
            "Bytes of answer bodies sent to clients (streams included), by endpoint class",
            m.response_bytes.clone(),
        );
        r.register(
            "open_responses",
            "Answers being sent: streams (logs -f, events, pulls) and answers not yet ended",
            m.open_responses.clone(),
        );
        r.register(
            "hijacked_sessions_open",
            "Hijacked connections (attach, exec start) being spliced",
            m.hijacked_open.clone(),
        );
        r.register(
            "hijacked_bytes",
            "Bytes spliced over hijacked connections, by direction",
            m.hijacked_bytes.clone(),
        );
        r.register(
            "engine_duration_seconds",
            "Time from sending a request to the engine to its response head, by endpoint class",
            m.engine_duration.clone(),
        );
        r.register(
            "hook_duration_seconds",
            "Time of each call to an adapter, by adapter and phase",
            m.hook_duration.clone(),
        );
        r.register(
            "hook_errors",
            "Calls to adapters that failed, by adapter, phase and kind",
            m.hook_errors.clone(),
        );
        r.register(
            "hook_refusals",
            "Requests an adapter refused (answered with its own error), by adapter and phase",
            m.hook_refusals.clone(),
        );
        r.register(
            "node_up",
            "1 when the gateway counts the node healthy, 0 otherwise",
            m.node_up.clone(),
        );
        r.register(
            "node_probe_duration_seconds",
            "Time of the gateway's health probes of each node",
            m.node_probe_duration.clone(),
        );
        r.register(
            "node_chain_revision",
            "The etcd revision of the adapter chains each node runs",
            m.node_chain_revision.clone(),
        );
        r.register(
            "node_chain_refused",
            "1 when the node refused the latest chains (and runs an older revision), else 0",
            m.node_chain_refused.clone(),
        );
        r.register(
            "schedule_decisions",
            "Creates the gateway placed or could not place, by strategy and outcome",
            m.schedule_decisions.clone(),
        );
        r.register(
            "etcd_watch_lag_seconds",
            "Time etcd took to confirm that a watch had delivered every change up to its current revision, by watch",
            m.etcd_watch_lag.clone(),
        );
        r.register(
            "etcd_watch_revision",
            "The etcd revision each watch has delivered up to",
            m.etcd_watch_revision.clone(),
        );
        r.register(
            "etcd_watch_restarts",
            "etcd watches that ended and were listed and watched again, by watch and reason",
            m.etcd_watch_restarts.clone(),
        );
        r.register(
            "name_claims",
            "Claims of a container name by a create or a rename, by outcome",
            m.name_claims.clone(),
        );
        r.register(
            "otlp_spans",
            "Request spans for the OTLP exporter (--otlp-endpoint), by outcome",
            m.otlp_spans.clone(),
        );
        root.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Counts one answered request (called where the access line is written).
    pub fn request_done(&self, labels: RequestLabels, elapsed: Duration, bytes: u64) {
        let endpoint = EndpointLabels {
            endpoint: labels.endpoint,
        };
        self.recent.answered(labels.status);
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&endpoint)
            .observe(elapsed.as_secs_f64());
        if bytes > 0 {
            self.response_bytes.get_or_create(&endpoint).inc_by(bytes);
        }
    }

    /// Times one call to an adapter.
    pub fn hook_call(&self, adapter: &str, phase: &'static str, elapsed: Duration) {
        let labels = HookLabels {
            adapter: adapter.to_owned(),
            phase,
        };
        self.hook_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.recent.hook_call(adapter, elapsed);
    }

    /// Counts one call an adapter answered with an error that went to the client.
    pub fn hook_refusal(&self, adapter: &str, phase: &'static str) {
        let labels = HookLabels {
            adapter: adapter.to_owned(),
            phase,
        };
        self.hook_refusals.get_or_create(&labels).inc();
        self.recent.hook_refusal(adapter);
    }

    /// Counts one failed call to an adapter.
    pub fn hook_error(&self, adapter: &str, phase: &'static str, kind: &'static str) {
        let labels = HookErrorLabels {
            adapter: adapter.to_owned(),
            phase,
            kind,
        };
        self.hook_errors.get_or_create(&labels).inc();
        self.recent.hook_error(adapter, kind);
    }

    /// The text of every series, as Prometheus scrapes it ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A method as a label: the standard ones as they are, anything else `other` (a client may
/// send any token as a method).
pub fn method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// A status as its class: `1xx` to `5xx`, anything else `other`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("BREW"), "other");
        assert_eq!(method("get"), "other");
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(999), "other");
    }

    #[test]
    fn a_request_moves_its_series_by_one() {
        let m = Metrics::new();
        let labels = RequestLabels {
            endpoint: "container_create",
            method: "POST",
            status: "2xx",
            node: "node1".into(),
        };
        m.request_done(labels.clone(), Duration::from_millis(3), 88);
        m.request_done(labels, Duration::from_millis(3), 0);
        let text = m.render();
        assert!(
            text.contains(
                "busbar_requests_total{endpoint=\"container_create\",method=\"POST\",status=\"2xx\",node=\"node1\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("busbar_response_bytes_total{endpoint=\"container_create\"} 88"));
        assert!(
            text.contains("busbar_request_duration_seconds_count{endpoint=\"container_create\"} 2")
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
