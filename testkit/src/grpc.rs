//! The agent's gRPC service, in-process.
//!
//! [`GrpcAgent`] serves `busbar_agent::cluster::grpc` (the agent's proxy, chains included)
//! with the agent's TLS configuration (certificates from a [`TestPki`]) on `127.0.0.1:0`, in
//! front of a [`FakeEngine`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use busbar_agent::cluster::grpc::{self, AgentService, NodeIdentity};
use busbar_tls::Role;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::engine::FakeEngine;
use crate::pki::TestPki;
use crate::server::agent_proxy;
use crate::LIMIT;

/// How long a stopped service lets open calls finish (tests close theirs first).
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent's gRPC service on `127.0.0.1:0` with mutual TLS, for a node named `name`.
pub struct GrpcAgent {
    name: String,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// Stops it if the test ends (or panics) before `stop`.
    _guard: DropGuard,
}

impl GrpcAgent {
    /// Serves node `name` (certificate issued now, role agent) in front of `engine`, with the
    /// chains in `yaml` (`""`: none) and these node labels.
    pub async fn start(
        pki: &TestPki,
        name: &str,
        engine: &FakeEngine,
        yaml: &str,
        labels: &[(&str, &str)],
    ) -> GrpcAgent {
        GrpcAgent::start_logged(pki, name, engine, yaml, labels, None).await
    }

    /// [`GrpcAgent::start`], its hook calls logged to `log` (adapters with `debug: true`).
    pub async fn start_logged(
        pki: &TestPki,
        name: &str,
        engine: &FakeEngine,
        yaml: &str,
        labels: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> GrpcAgent {
        GrpcAgent::start_with(pki, name, engine, yaml, labels, log, true).await
    }

    /// A test double of an agent older than lanes: [`GrpcAgent::start`], its `Lane` rpc
    /// answering UNIMPLEMENTED as such an agent's does (`AgentService::without_lanes`).
    pub async fn start_without_lanes(pki: &TestPki, name: &str, engine: &FakeEngine) -> GrpcAgent {
        GrpcAgent::start_with(pki, name, engine, "", &[], None, false).await
    }

    async fn start_with(
        pki: &TestPki,
        name: &str,
        engine: &FakeEngine,
        yaml: &str,
        labels: &[(&str, &str)],
        log: Option<&std::path::Path>,
        lanes: bool,
    ) -> GrpcAgent {
        let files = pki.issue(name, Role::Agent);
        let tls = busbar_tls::server_config(&files, Role::Gateway).expect("the agent's TLS");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the agent's gRPC port");
        let addr = listener.local_addr().expect("a bound address");
        let node = NodeIdentity {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            advertise: addr.to_string(),
        };
        let mut proxy = agent_proxy(engine, yaml);
        if let Some(log) = log {
            let logged =
                (*proxy)
                    .clone()
                    .with_hook_log(Some(busbar_agent::hooks::log::HookLog::new(
                        log.to_owned(),
                        false,
                    )));
            proxy = std::sync::Arc::new(logged);
        }
        let mut service = AgentService::new(proxy, node);
        if !lanes {
            service = service.without_lanes();
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(grpc::serve(listener, tls, service, shutdown.clone(), GRACE));
        GrpcAgent {
            name: name.to_owned(),
            addr,
            _guard: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:PORT`, what a gateway dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the service and waits for it to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(LIMIT, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the agent's gRPC task failed: {e}"),
            Err(_) => panic!("the agent's gRPC service did not stop within {LIMIT:?}"),
        }
    }
}
