//! OTLP export of busbar's request spans to an OpenTelemetry collector (`--otlp-endpoint`,
//! or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`:
//! busbar-agent's config reads them).
//!
//! Each request a process serves is one span (kind `SERVER`), ended where its access line is
//! written ([`busbar_http::spans`]). Its ids are the ones busbar already has: the trace id
//! every log line of the request carries, this process's span id (the parent id it passes on
//! in `traceparent`) and the parent it received from the client or from the gateway across
//! the hop. So in the collector a gateway's span is the parent of the agent's span for the
//! same request, and an adapter that exports its own spans hangs below the agent's. That is
//! why spans are built here as the SDK's [`SpanData`] and handed to its batch processor,
//! without the SDK's tracer: the tracer draws ids of its own.
//!
//! The spans of requests whose parent was not sampled (`traceparent` flags `00`) are not
//! exported, as the W3C recommendation says for a parent-based sampler; traces busbar starts
//! are sampled.
//!
//! # Never on the request path
//! Ending a span puts it on the SDK's bounded queue ([`QUEUE`] spans) without waiting; the
//! SDK's batch processor exports on its own thread every [`DELAY`] or every [`BATCH`] spans,
//! each export running on the tokio runtime and bounded by [`EXPORT_TIMEOUT`]. When the
//! queue is full (the collector slow or down), spans are dropped and counted; failed exports
//! are counted too (`busbar_otlp_spans_total{outcome}`), and both counts are logged at most
//! once per [`REPORT_EVERY`]. Shutdown
//! flushes what is queued, for at most the time it is given.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar_http::spans::{RequestSpan, SpanSink};
use busbar_protocol::trace::SAMPLED;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

/// The most spans waiting for export; past it, spans are dropped (and counted).
pub const QUEUE: usize = 2048;
/// The most spans in one export.
pub const BATCH: usize = 512;
/// How long a span waits at most before its batch is sent.
pub const DELAY: Duration = Duration::from_secs(2);
/// The bound of one export (connecting, sending, the collector's answer, retries).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dropped and failed spans are logged at most once per this long.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{0:?}: expected http://HOST:PORT (OTLP over gRPC, plain HTTP/2: give the address of a collector on this host or a trusted network)")]
    Endpoint(String),
    #[error("the OTLP exporter for {endpoint}: {error}")]
    Exporter { endpoint: String, error: String },
}

/// Checks an endpoint: `http://` and a host, nothing the gRPC channel would refuse later.
pub fn check_endpoint(endpoint: &str) -> Result<(), OtlpError> {
    let bad = || OtlpError::Endpoint(endpoint.to_owned());
    let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || endpoint.parse::<http::Uri>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// A running export: the [`SpanSink`] to install with [`busbar_http::spans::install`].
pub struct OtlpExport {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    counts: Arc<Counts>,
    endpoint: String,
}

/// What happened to spans, for the rate-limited report.
#[derive(Default)]
struct Counts {
    /// Spans ended and not yet taken by the exporter.
    queued: AtomicUsize,
    /// Spans dropped because the queue was full.
    dropped: AtomicU64,
    /// Spans in exports that failed or timed out.
    failed: AtomicU64,
    /// Spans the collector took.
    exported: AtomicU64,
    /// When the counts were last logged, and the dropped and failed counts then.
    reported: Mutex<Option<(Instant, u64, u64)>>,
}

impl OtlpExport {
    /// Starts exporting to `endpoint` as `service` (`service.name`, unless
    /// `OTEL_SERVICE_NAME` says otherwise; `OTEL_RESOURCE_ATTRIBUTES` is added). Must be called
    /// on a tokio runtime, which runs the exports.
    pub fn start(endpoint: &str, service: &'static str) -> Result<OtlpExport, OtlpError> {
        check_endpoint(endpoint)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtlpError::Exporter {
                endpoint: endpoint.to_owned(),
                error: e.to_string(),
            })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
            resource = resource.with_service_name(service);
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let counts = Arc::new(Counts::default());
        let bounded = Bounded {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
            counts: counts.clone(),
            endpoint: endpoint.to_owned(),
        };
        // The SDK's own queue is larger than ours, so that spans are dropped (and counted)
        // here, never silently there.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(2 * QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(bounded)
            .with_batch_config(config)
            .build();
        tracing::info!(endpoint, service, "exporting request spans over OTLP");
        Ok(OtlpExport {
            processor,
            scope: InstrumentationScope::builder("busbar")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            counts,
            endpoint: endpoint.to_owned(),
        })
    }

    /// Sends what is queued and stops, waiting at most `timeout`. Blocks the calling thread
    /// (call it from `spawn_blocking` on a runtime: the runtime runs the last export).
    pub fn shutdown(&self, timeout: Duration) {
        let result = self.processor.shutdown_with_timeout(timeout);
        let c = &self.counts;
        let (exported, dropped, failed) = (
            c.exported.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        match result {
            Ok(()) => {
                tracing::info!(endpoint = %self.endpoint, exported, dropped, failed, "OTLP export stopped")
            }
            Err(e) => {
                tracing::warn!(endpoint = %self.endpoint, exported, dropped, failed, error = %e, "OTLP export stopped before its last spans were sent")
            }
        }
    }

    /// Spans the collector took so far.
    pub fn exported(&self) -> u64 {
        self.counts.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped so far (queue full) or lost in failed exports.
    pub fn lost(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed) + self.counts.failed.load(Ordering::Relaxed)
    }
}

impl SpanSink for OtlpExport {
    fn request_ended(&self, span: RequestSpan) {
        if span.flags & SAMPLED == 0 {
            return;
        }
        // Taken before the span is queued (and given back by the exporter as it takes a
        // batch): a full queue drops here, counted, without waiting.
        if self.counts.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.counts.queued.fetch_sub(1, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            outcome("dropped", 1);
            return;
        }
        self.processor.on_end(span_data(span, &self.scope));
    }
}

/// Counts `n` spans in `busbar_otlp_spans_total{outcome}`.
fn outcome(outcome: &'static str, n: u64) {
    busbar_metrics::global()
        .otlp_spans
        .get_or_create(&busbar_metrics::OutcomeLabels { outcome })
        .inc_by(n);
}

/// The SDK's form of one request's span.
fn span_data(span: RequestSpan, scope: &InstrumentationScope) -> SpanData {
    let mut attributes = Vec::with_capacity(9);
    attributes.push(KeyValue::new("http.request.method", span.method));
    attributes.push(KeyValue::new("http.route", span.route.to_string()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(span.status),
    ));
    attributes.push(KeyValue::new(
        "http.response.body.size",
        i64::try_from(span.bytes).unwrap_or(i64::MAX),
    ));
    attributes.push(KeyValue::new("busbar.endpoint", span.endpoint));
    attributes.push(KeyValue::new("busbar.request_id", span.request_id));
    if let Some(node) = span.node {
        attributes.push(KeyValue::new("busbar.node", node));
    }
    if !span.outcome.is_empty() {
        attributes.push(KeyValue::new("busbar.outcome", span.outcome));
    }
    // A server span is an error when it answered 5xx (OpenTelemetry's HTTP conventions).
    let status = if span.status >= 500 {
        attributes.push(KeyValue::new("error.type", span.status.to_string()));
        Status::error(format!("answered {}", span.status))
    } else {
        Status::Unset
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(span.trace_id.0),
            SpanId::from(span.span_id.0),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span
            .parent_id
            .map_or(SpanId::INVALID, |p| SpanId::from(p.0)),
        parent_span_is_remote: span.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("{} {}", span.method, span.route)),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The OTLP exporter, each export run on the tokio runtime (where tonic's channel lives) and
/// bounded in time, its outcome counted and reported.
struct Bounded {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    counts: Arc<Counts>,
    endpoint: String,
}

impl std::fmt::Debug for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl SpanExporter for Bounded {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.counts.queued.fetch_sub(n, Ordering::Relaxed);
        let inner = self.inner.clone();
        let export = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, inner.export(batch)).await });
        let result = match export.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OTelSdkError::Timeout(EXPORT_TIMEOUT)),
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        };
        match &result {
            Ok(()) => {
                self.counts.exported.fetch_add(n as u64, Ordering::Relaxed);
                outcome("exported", n as u64);
            }
            Err(_) => {
                self.counts.failed.fetch_add(n as u64, Ordering::Relaxed);
                outcome("failed", n as u64);
            }
        }
        self.report(result.as_ref().err());
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

impl Bounded {
    /// Logs spans dropped or failed since the last report, at most once per [`REPORT_EVERY`]
    /// (the first time at once).
    fn report(&self, error: Option<&OTelSdkError>) {
        let c = &self.counts;
        let (dropped, failed) = (
            c.dropped.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        let Ok(mut last) = c.reported.lock() else {
            return;
        };
        let (since, dropped_before, failed_before) = match *last {
            Some((at, d, f)) => {
                if at.elapsed() < REPORT_EVERY {
                    return;
                }
                (at.elapsed(), d, f)
            }
            None => (Duration::ZERO, 0, 0),
        };
        if dropped == dropped_before && failed == failed_before {
            return;
        }
        *last = Some((Instant::now(), dropped, failed));
        let error = error.map(ToString::to_string).unwrap_or_default();
        tracing::warn!(
            endpoint = %self.endpoint,
            dropped = dropped - dropped_before,
            failed = failed - failed_before,
            seconds = since.as_secs(),
            error,
            "OTLP export: spans lost (the collector is slow, down or refusing them)"
        );
    }
}
