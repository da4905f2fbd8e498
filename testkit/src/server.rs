//! busbar's own HTTP front in-process: [`TestServer`] serves any [`Handler`] with
//! `busbar_http::server::serve` on `127.0.0.1:0`, and [`TestAgent`] is the agent (its proxy,
//! adapter chains from YAML text) in front of a [`FakeEngine`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use busbar_agent::chain_source::LiveChains;
use busbar_agent::proxy::Proxy;
use busbar_chains::ChainSet;
use busbar_engine::{EngineClient, EngineOptions};
use busbar_http::listen::{bind_tls, ListenAddr};
use busbar_http::server::{self, Handler};
use busbar_http::tls::ServerTls;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::engine::FakeEngine;
use crate::LIMIT;

/// How long a stopped server lets open connections finish (tests close theirs first).
const GRACE: Duration = Duration::from_secs(2);

/// `busbar_http::server::serve` on `127.0.0.1:0`, in this runtime.
pub struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// Stops it if the test ends (or panics) before `stop`.
    _guard: DropGuard,
}

impl TestServer {
    /// Binds `127.0.0.1:0` (before serving: no wait needed) and serves `handler` on it.
    pub async fn start(handler: Arc<dyn Handler>) -> TestServer {
        let listener = ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
            .bind()
            .await
            .expect("bind 127.0.0.1:0");
        TestServer::serve(listener, handler)
    }

    /// [`TestServer::start`] for clients speaking TLS with `tls`: a `--tls-listen` listener
    /// (see [`crate::TestPki::docker_tls`]).
    pub async fn start_tls(handler: Arc<dyn Handler>, tls: Arc<ServerTls>) -> TestServer {
        let listener = bind_tls(SocketAddr::from(([127, 0, 0, 1], 0)), tls)
            .await
            .expect("bind 127.0.0.1:0");
        TestServer::serve(listener, handler)
    }

    fn serve(listener: busbar_http::listen::Listener, handler: Arc<dyn Handler>) -> TestServer {
        let addr = match listener.local_addr() {
            ListenAddr::Tcp(a) => a,
            ListenAddr::Unix(_) => unreachable!("a TCP listener"),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, handler, shutdown.clone(), GRACE));
        TestServer {
            addr,
            _guard: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Stops serving and waits for the server (and its connections) to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(LIMIT, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the server task failed: {e}"),
            Err(_) => panic!("the server did not stop within {LIMIT:?}"),
        }
    }
}

/// The agent's proxy to `engine`, running the chains of `yaml` (`""`: none). Panics on an
/// invalid chain file, with its errors.
pub fn agent_proxy(engine: &FakeEngine, yaml: &str) -> Arc<Proxy> {
    let chains = if yaml.trim().is_empty() {
        LiveChains::none()
    } else {
        let set = ChainSet::from_yaml(yaml).unwrap_or_else(|e| panic!("invalid chains: {e}"));
        LiveChains::new(set, "test".into()).expect("adapter clients")
    };
    let options = EngineOptions {
        connect_timeout: Duration::from_secs(2),
        ..EngineOptions::default()
    };
    let engine = EngineClient::new(engine.addr(), options);
    Arc::new(Proxy::with_chains(engine, watch::channel(chains).1))
}

/// An agent (its proxy and the HTTP front) on `127.0.0.1:0`, in front of a fake engine.
pub struct TestAgent {
    server: TestServer,
    proxy: Arc<Proxy>,
}

impl TestAgent {
    /// Starts an agent in front of `engine` with the chains in `yaml` (`""`: none).
    pub async fn start(engine: &FakeEngine, yaml: &str) -> TestAgent {
        let proxy = agent_proxy(engine, yaml);
        let server = TestServer::start(proxy.clone()).await;
        TestAgent { server, proxy }
    }

    /// [`TestAgent::start`] on a `--tls-listen` listener with `tls`.
    pub async fn start_tls(engine: &FakeEngine, yaml: &str, tls: Arc<ServerTls>) -> TestAgent {
        let proxy = agent_proxy(engine, yaml);
        let server = TestServer::start_tls(proxy.clone(), tls).await;
        TestAgent { server, proxy }
    }

    /// [`TestAgent::start`], writing the hook call log to `log` (every adapter's calls when
    /// `all`, as `--debug-hooks`; else those of adapters with `debug: true`).
    pub async fn start_logged(
        engine: &FakeEngine,
        yaml: &str,
        log: &std::path::Path,
        all: bool,
    ) -> TestAgent {
        let proxy = agent_proxy(engine, yaml);
        let proxy = Arc::new(
            Arc::try_unwrap(proxy)
                .unwrap_or_else(|_| unreachable!("a new proxy has one owner"))
                .with_hook_log(Some(busbar_agent::hooks::log::HookLog::new(
                    log.to_owned(),
                    all,
                ))),
        );
        let server = TestServer::start(proxy.clone()).await;
        TestAgent { server, proxy }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
