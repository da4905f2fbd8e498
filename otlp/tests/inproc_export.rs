//! busbar-otlp in process: request spans reach an OTLP receiver with busbar's own ids, and a
//! collector that is down or never answers neither blocks the ending of spans nor the
//! shutdown beyond its bound.
//!
//! Test double: the OTLP receiver, a tonic server implementing opentelemetry-proto's
//! `TraceService` (the collector's gRPC service) that keeps what it is sent. No OpenTelemetry
//! collector is packaged in Debian to run here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use busbar_http::spans::{RequestSpan, SpanSink};
use busbar_otlp::OtlpExport;
use busbar_protocol::trace::{SpanId, TraceId, SAMPLED};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The OTLP receiver (test double of a collector): keeps every request it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn receiver() -> (Receiver, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = Receiver::default();
    let service = TraceServiceServer::new(r.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (r, addr)
}

fn span(trace: u128, id: u64, parent: Option<u64>, flags: u8, status: u16) -> RequestSpan {
    let end = SystemTime::now();
    RequestSpan {
        trace_id: TraceId(trace),
        span_id: SpanId(id),
        parent_id: parent.map(SpanId),
        flags,
        method: "POST",
        route: Arc::from("/containers/create"),
        endpoint: "container_create",
        node: Some("node1".into()),
        request_id: "r1".into(),
        status,
        bytes: 88,
        outcome: "",
        start: end - Duration::from_millis(20),
        end,
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// `busbar_otlp_spans_total{outcome}` of this process.
fn spans_metric(outcome: &'static str) -> u64 {
    busbar_metrics::global()
        .otlp_spans
        .get_or_create(&busbar_metrics::OutcomeLabels { outcome })
        .get()
}

/// Shuts the export down off the runtime's workers, as the binaries do.
async fn shutdown(export: Arc<OtlpExport>, timeout: Duration) -> Duration {
    let t = Instant::now();
    tokio::task::spawn_blocking(move || export.shutdown(timeout))
        .await
        .unwrap();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_busbars_ids_and_parents() {
    let (received, addr) = receiver().await;
    let export = Arc::new(OtlpExport::start(&format!("http://{addr}"), "busbar-test").unwrap());
    const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
    export.request_ended(span(TRACE, 0x11, None, SAMPLED, 201));
    export.request_ended(span(TRACE, 0x22, Some(0x11), SAMPLED, 500));
    // A parent that was not sampled: not exported.
    export.request_ended(span(TRACE + 1, 0x33, Some(0x44), 0, 200));
    shutdown(export.clone(), Duration::from_secs(10)).await;
    assert_eq!(export.exported(), 2);
    assert_eq!(export.lost(), 0);
    // The other tests of this process export nothing.
    assert_eq!(spans_metric("exported"), 2);

    let requests = received.0.lock().unwrap().clone();
    let rs: Vec<_> = requests.iter().flat_map(|r| &r.resource_spans).collect();
    assert!(!rs.is_empty());
    for r in &rs {
        let res = r.resource.as_ref().unwrap();
        assert_eq!(
            text(attr(&res.attributes, "service.name")),
            Some("busbar-test")
        );
    }
    let spans: Vec<_> = rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let root = spans
        .iter()
        .find(|s| s.span_id == 0x11u64.to_be_bytes())
        .unwrap();
    let child = spans
        .iter()
        .find(|s| s.span_id == 0x22u64.to_be_bytes())
        .unwrap();
    assert_eq!(root.trace_id, TRACE.to_be_bytes());
    assert_eq!(child.trace_id, TRACE.to_be_bytes());
    assert!(
        root.parent_span_id.is_empty(),
        "a trace started here has no parent"
    );
    assert_eq!(child.parent_span_id, 0x11u64.to_be_bytes());
    assert_eq!(root.name, "POST /containers/create");
    assert_eq!(root.kind, 2, "SPAN_KIND_SERVER");
    assert!(root.end_time_unix_nano - root.start_time_unix_nano >= 20_000_000);
    assert_eq!(text(attr(&root.attributes, "busbar.node")), Some("node1"));
    assert_eq!(
        text(attr(&root.attributes, "busbar.endpoint")),
        Some("container_create")
    );
    assert_eq!(
        attr(&root.attributes, "http.response.status_code"),
        Some(&Value::IntValue(201))
    );
    assert_eq!(root.status.as_ref().map_or(0, |s| s.code), 0, "unset");
    assert_eq!(child.status.as_ref().unwrap().code, 2, "a 5xx is an error");
}

/// Ends `n` spans and returns how long that took at most for one.
fn end_many(export: &OtlpExport, n: u64) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 1..=n {
        let t = Instant::now();
        export.request_ended(span(u128::from(i), i, None, SAMPLED, 200));
        worst = worst.max(t.elapsed());
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_blocks_nothing() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let export = Arc::new(OtlpExport::start(&format!("http://{closed}"), "busbar-test").unwrap());
    let worst = end_many(&export, 5000);
    assert!(
        worst < Duration::from_secs(1),
        "ending a span waited {worst:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let took = shutdown(export.clone(), Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(export.exported(), 0);
    assert!(export.lost() > 0, "the queue's bound dropped spans");
    assert!(spans_metric("dropped") + spans_metric("failed") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_blocks_nothing() {
    // Accepts connections and never reads or writes on them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let export = Arc::new(OtlpExport::start(&format!("http://{addr}"), "busbar-test").unwrap());
    let worst = end_many(&export, 100);
    assert!(
        worst < Duration::from_secs(1),
        "ending a span waited {worst:?}"
    );
    let took = shutdown(export.clone(), Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(export.exported(), 0);
}
