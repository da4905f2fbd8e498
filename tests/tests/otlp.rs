//! OTLP span export end to end (`--otlp-endpoint`, busbar built with the `otlp` feature, as
//! tests/run.sh builds it): the real `docker` CLI through a gateway and an agent in its own
//! network namespace on a real engine, both exporting to one collector.
//!
//! Test double: the OTLP receiver, a tonic server implementing opentelemetry-proto's
//! `TraceService` (the collector's gRPC service) in this process, keeping what it is sent. No
//! OpenTelemetry collector is packaged in Debian to run here. Another double stands for a
//! collector that never answers: a listener that accepts connections and says nothing.
//!
//! Wall time on 2 vCPUs (bed start included, about 10 s): ~30 s.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use support::{make_certs, tls_args, Process, TempDir};
use testbed::{docker_ok, wait_until, Testbed, TestbedSpec};

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

/// One span as received: its service, ids (hex), name and route.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    route: String,
    node: String,
}

impl Receiver {
    /// Serves on `ip` (a free port) on a runtime of its own; returns its `http://` URL.
    fn start(ip: IpAddr, runtime: &tokio::runtime::Runtime) -> (Receiver, String) {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver::default();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (r, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Got> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut out = vec![];
        for req in self.0.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| text(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    out.push(Got {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_id: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        route: text(&s.attributes, "http.route").unwrap_or_default(),
                        node: text(&s.attributes, "busbar.node").unwrap_or_default(),
                    });
                }
            }
        }
        out
    }
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// The trace id of the access line of the create in `log`.
fn create_trace(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| {
            l.contains("busbar::access")
                && l.contains("path=/containers/create")
                && l.contains("status=201")
        })
        .find_map(|l| {
            l.split(['{', ' ', '}', ':'])
                .find_map(|w| w.strip_prefix("trace_id="))
                .map(str::to_owned)
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_docker_run_is_one_trace_of_gateway_and_agent_spans_in_the_collector() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let rt = runtime();
    // On the host side of the namespace's link: the agent inside reaches it, the gateway too.
    let (collector, url) = Receiver::start(host.gateway_addr().unwrap(), &rt);

    let certs = TempDir::new();
    make_certs(&certs.0, &[("node1", &host.addr().unwrap().to_string())]);
    let (agent, addr) = Process::agent_in(host, "node1", &certs.0, &["--otlp-endpoint", &url]);
    let mut args = vec![
        "--agent".to_string(),
        format!("node1={addr}"),
        "--otlp-endpoint".into(),
        url.clone(),
    ];
    args.extend(tls_args(&certs.0, "gateway"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);

    let out = docker_ok(&gateway.url, &["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(out.trim(), "hi");

    // The trace id both processes logged for the create.
    let trace = create_trace(&gateway.log_text())
        .unwrap_or_else(|| panic!("no access line of the create:\n{}", gateway.log_tail()));
    assert_eq!(
        create_trace(&agent.log_text()).as_deref(),
        Some(trace.as_str()),
        "the agent logged the gateway's trace:\n{}",
        agent.log_tail()
    );

    // Both spans of the create reach the collector (batches leave every 2 s).
    let pair = || {
        let spans = collector.spans();
        let of = |service: &str| {
            spans
                .iter()
                .find(|s| {
                    s.service == service && s.trace_id == trace && s.route == "/containers/create"
                })
                .cloned()
        };
        of("busbar-gateway").zip(of("busbar-agent"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || pair().is_some()),
        "the collector did not get the create's spans of trace {trace} from both:\n{:#?}\ngateway:\n{}\nagent:\n{}",
        collector.spans(),
        gateway.log_tail(),
        agent.log_tail()
    );
    let (gw, ag) = pair().unwrap();
    assert_eq!(gw.name, "POST /containers/create");
    assert_eq!(
        gw.parent_id, "",
        "the docker CLI sent no traceparent: the gateway's span is the root"
    );
    assert_eq!(
        ag.parent_id, gw.span_id,
        "the agent's span is the gateway's child"
    );
    assert_eq!(gw.node, "node1");
    assert_eq!(ag.node, "node1");
    // Every request of the run was exported by both, each in a trace of its own.
    let spans = collector.spans();
    for route in ["/containers/{id}/start", "/containers/{id}/wait"] {
        let gws: Vec<&Got> = spans
            .iter()
            .filter(|s| s.service == "busbar-gateway" && s.route == route)
            .collect();
        assert!(!gws.is_empty(), "no gateway span of {route}: {spans:#?}");
        for g in gws {
            assert_ne!(g.trace_id, trace);
        }
    }
}

#[test]
fn a_collector_down_or_silent_fails_no_docker_command() {
    testbed::e2e!();
    let bed = Testbed::start(TestbedSpec {
        hosts: 1,
        netns: false,
        etcd: false,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let rt = runtime();
    // Down: a port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Silent: accepts, then never reads nor answers.
    let silent = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let silent_addr = silent.local_addr().unwrap();
    rt.spawn(async move {
        let mut held = vec![];
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });

    for (what, collector) in [("down", closed), ("silent", silent_addr)] {
        let endpoint = format!("http://{collector}");
        // The embedded gateway (an agent in its process) and a standalone agent.
        let mut fronts = [
            Process::gateway(&["--docker", &host.docker_url(), "--otlp-endpoint", &endpoint]),
            Process::agent(&host.docker_url(), &["--otlp-endpoint", &endpoint]),
        ];
        for front in &mut fronts {
            let t = Instant::now();
            for _ in 0..3 {
                let out = docker_ok(&front.url, &["run", "--rm", "busybox", "echo", "hi"]);
                assert_eq!(out.trim(), "hi");
            }
            // Generous: the bound says "not hung on the collector", it measures nothing.
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "3 runs took {:?} with the collector {what}:\n{}",
                t.elapsed(),
                front.log_tail()
            );
            if what == "down" {
                assert!(
                    wait_until(Duration::from_secs(30), || front
                        .log_text()
                        .contains("OTLP export: spans lost")),
                    "the log does not say that spans are lost:\n{}",
                    front.log_tail()
                );
            }
            // Stopping flushes for a bounded time: the process exits on its own.
            let t = Instant::now();
            front.terminate();
            let status = front.exited();
            assert!(
                status.is_some_and(|s| s.success()),
                "{status:?} after {:?} with the collector {what}:\n{}",
                t.elapsed(),
                front.log_tail()
            );
        }
    }
}
