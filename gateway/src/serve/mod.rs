//! The gateway in cluster mode: one Docker API over every node.
//!
//! Each request is classified ([`crate::route`]) and served in one of five ways:
//! - **answered** by the gateway (`_ping`, `version`, `info`), from what the health probes
//!   fetched (refreshed first for nodes changed through the gateway: see [`crate::cluster`]);
//! - **aggregated**: the same call on every healthy node at once, merged
//!   ([`crate::aggregate`]); latency is the slowest node's, not the sum;
//! - **routed** to the node that owns the object (containers, execs, images, networks,
//!   volumes), streams and hijacked sessions included;
//! - **scheduled**: `containers/create`, `build` and `networks/create` go where the scheduler
//!   ([`crate::schedule`]) says;
//! - **broadcast**: pull, import and load go to every healthy node.
//!
//! A node that fails to answer an aggregated call is never silently dropped: the merged 200
//! names it in the `X-Busbar-Failed-Nodes` header (and `info` shows it with its error).
//!
//! A gateway that does not know its nodes yet (just started: the registry has not answered,
//! or no node has been probed) never answers as if it had none: a request waits for that, up
//! to a little more than a probe timeout, then gets a 503 saying the gateway is starting and why
//! ([`Cluster::ready`]).

mod adapter_api;
mod calls;
mod containers;
mod images;
mod last_seen;
pub mod listcache;
mod ops;
mod system;

use std::sync::Arc;

use busbar_api::ApiPath;
use busbar_http::body::{watch_faults, BodyFault};
use busbar_http::error as respond;
use busbar_http::server::Handler;
use busbar_http::{Body, RequestCtx};
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::cluster::{Cluster, Node};
pub use crate::names::{EtcdNames, LocalNames, NameError, NameStore, Taken};
use crate::route::{self, Route};
use crate::schedule::Strategy;
pub use containers::{Locations, ResolveError};
pub use last_seen::LastSeen;

/// The longest a create may take on its node before the client gets a 504 (the name's
/// reservation then stays, for a later claim to check: see [`crate::names`]).
pub const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where container names are reserved: etcd with several gateways, memory with one.
pub type Names = Option<Arc<dyn NameStore>>;

/// How much longer than a probe timeout a request to a gateway that is starting waits for it.
const STARTING_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// The cluster-mode handler.
pub struct ClusterHandler {
    pub cluster: Arc<Cluster>,
    pub strategy: Strategy,
    pub names: Names,
    locations: Locations,
    /// Each node's last complete container list, for `ps -a`'s "Host Down" rows.
    last_seen: Arc<LastSeen>,
    /// The `/info` and `/version` answers last made, kept while the cluster does not change.
    made: system::Made,
    /// `docker ps` from the nodes' events ([`listcache`]); `None` with `--list-live`.
    list_cache: Option<Arc<listcache::ListCache>>,
    /// Placements being created right now: concurrent creates see each other's ports and
    /// count as containers on their nodes. The lock also serializes the choice itself.
    pending: Mutex<Vec<ops::InFlight>>,
}

impl ClusterHandler {
    pub fn new(cluster: Arc<Cluster>, strategy: Strategy, names: Names) -> ClusterHandler {
        ClusterHandler {
            cluster,
            strategy,
            names,
            locations: Locations::default(),
            last_seen: Arc::default(),
            made: system::Made::default(),
            list_cache: None,
            pending: Mutex::new(vec![]),
        }
    }

    /// Answers `docker ps` from a cache that each node's events keep current, followed until
    /// `shutdown` ([`listcache`]). Its full lists also keep the last-seen lists fresh: no need
    /// for [`Self::spawn_last_seen`] then.
    pub fn with_list_cache(
        mut self,
        settings: listcache::Settings,
        shutdown: CancellationToken,
    ) -> ClusterHandler {
        let last_seen = Some(self.last_seen.clone());
        let cache = Arc::new(listcache::ListCache::new(settings, last_seen));
        tokio::spawn(cache.clone().run(self.cluster.clone(), shutdown));
        self.list_cache = Some(cache);
        self
    }

    /// `docker ps`: from the list cache when it can answer the query exactly, else every node live.
    async fn container_list(&self, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        if let Some(cache) = &self.list_cache {
            if let Some(rsp) = cache.answer(&self.cluster, &req, ctx).await {
                return rsp;
            }
        }
        let mut rsp = system::container_list(&self.cluster, &self.last_seen, req, ctx).await;
        rsp.headers_mut().insert(
            listcache::LIST_HEADER,
            http::HeaderValue::from_static("live"),
        );
        rsp
    }

    /// Refreshes the cached row of container `id` on `node` after a call through the gateway
    /// changed it, so that the client's next `docker ps` shows the change.
    async fn refresh_row(
        &self,
        node: &Node,
        id: &str,
        expect: listcache::Expect,
        ctx: &RequestCtx,
    ) {
        if let Some(cache) = &self.list_cache {
            cache.refresh(node, id, expect, ctx).await;
        }
    }

    /// The row of container `id` on `node` before a call changes it (`None` without a cache).
    fn row_before(&self, node: &str, id: &str) -> Option<listcache::Seen> {
        self.list_cache.as_ref().and_then(|c| c.before(node, id))
    }

    /// Keeps the nodes' last-seen container lists fresh until `shutdown` ([`LastSeen::run`]).
    pub fn spawn_last_seen(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.last_seen.clone().run(self.cluster.clone(), shutdown))
    }

    /// Serves one request; a failure that the client's own broken body caused (seen on the
    /// way to a node) is the client's 400, whatever the node answered.
    async fn serve(&self, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        let (req, fault) = watch_client_body(req);
        let rsp = self.route(req, ctx).await;
        blame_the_body(rsp, &fault)
    }

    async fn route(&self, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        // The server made the path canonical; one that still does not parse is refused here too.
        let path = match ApiPath::parse(req.uri().path()) {
            Ok(path) => path.into_owned(),
            Err(e) => return respond::error(&busbar_http::server::Refused::from(e)),
        };
        let prefix = path.version_prefix().to_owned();
        let route = route::classify(req.method(), &path, |n| self.cluster.node(n).is_some());
        // Until the gateway knows its nodes (just started), a request waits for it, a little
        // longer than a probe timeout (so that the first probes have had an outcome), rather
        // than get an answer made of no node; then a 503 says why. A ping is answered all
        // the same: the gateway itself is up.
        let bound = self.cluster.health.probe_timeout + STARTING_GRACE;
        if let Err(why) = self.cluster.ready(bound).await {
            if route != Route::Ping {
                return respond::message(StatusCode::SERVICE_UNAVAILABLE, &why);
            }
        }
        if adapter_api::is_adapter_api(&path) {
            return self.adapter_api(req, &path, ctx).await;
        }
        match route {
            Route::Ping => system::ping(&self.cluster),
            Route::Version => system::version(&self.cluster, &self.made).await,
            Route::Info => system::info(&self.cluster, self.strategy, &self.made).await,
            Route::Events => system::events(&self.cluster, req, ctx).await,
            Route::SystemDf => system::merged(&self.cluster, req, ctx, crate::aggregate::system_df).await,
            Route::Prune(_) => system::broadcast_merged(&self.cluster, req, ctx, crate::aggregate::prune).await,
            Route::ContainerList => self.container_list(req, ctx).await,
            Route::ContainerCreate => self.create(req, &prefix, ctx).await,
            Route::Container { node, reference, rest } => self.container(req, &prefix, node.as_deref(), &reference, &rest, ctx).await,
            Route::Commit => self.commit(req, ctx).await,
            Route::Exec { id, .. } => match self.locations.exec_node(&self.cluster, &id, ctx).await {
                Some(node) => self.forward(&node, req, ctx).await,
                None => respond::message(StatusCode::NOT_FOUND, &format!("No such exec instance: {id}")),
            },
            Route::ImageList => system::merged(&self.cluster, req, ctx, crate::aggregate::images).await,
            Route::ImageBroadcast => images::broadcast(&self.cluster, req, ctx).await,
            Route::Image { name, rest } => images::image(&self.cluster, req, &name, &rest, ctx).await,
            Route::Build => match self.place_build(&req, ctx).await {
                Ok(node) => {
                    // Until the build's answer ends, and the node is listed after it, lists
                    // ask the node live (see `ListCache::building`).
                    let guard = self.list_cache.as_ref().map(|c| c.building(node.name()));
                    let rsp = self.forward(&node, req, ctx).await;
                    rsp.map(|body| {
                        http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_frame(
                            body,
                            move |frame| {
                                let _held = &guard;
                                frame
                            },
                        ))
                    })
                }
                Err(rsp) => rsp,
            },
            Route::NetworkList => system::merged_with_nodes(&self.cluster, req, ctx, crate::aggregate::networks).await,
            Route::VolumeList => system::merged_with_nodes(&self.cluster, req, ctx, crate::aggregate::volumes).await,
            Route::NetworkCreate | Route::VolumeCreate => images::create_object(self, req, ctx).await,
            Route::Network { node, reference, rest } => {
                images::object(&self.cluster, req, &prefix, "networks", node.as_deref(), &reference, &rest, ctx).await
            }
            Route::Volume { node, reference } => {
                images::object(&self.cluster, req, &prefix, "volumes", node.as_deref(), &reference, "", ctx).await
            }
            Route::Swarm { init_or_join: true, .. } => respond::message(StatusCode::NOT_IMPLEMENTED, "busbar-gateway: a cluster of engines cannot join or start a swarm (swarm init and join are not supported; run them on an engine directly)"),
            // An engine outside swarm mode answers exactly these (dockerd's errNoSwarm and
            // errNoManager, 503): clients accept them, e.g. `swarm leave --force` in a teardown.
            Route::Swarm { leave: true, .. } => respond::message(StatusCode::SERVICE_UNAVAILABLE, "This node is not part of a swarm"),
            Route::Swarm { .. } => respond::message(StatusCode::SERVICE_UNAVAILABLE, "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."),
            Route::Unsupported => respond::message(StatusCode::NOT_IMPLEMENTED, "busbar-gateway: plugin APIs are not supported by a cluster of engines"),
            Route::AnyNode => match self.cluster.healthy().into_iter().next() {
                Some(node) => self.forward(&node, req, ctx).await,
                None => respond::message(StatusCode::SERVICE_UNAVAILABLE, "No healthy node available in the cluster"),
            },
        }
    }

    /// Streams `req` to `node`, recording it in the span.
    async fn forward(&self, node: &Node, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        ctx.set_node(node.name());
        match calls::forward(node, req, ctx).await {
            Ok(rsp) => rsp,
            Err(e) => {
                warn!(error = %e, "node call failed");
                respond::error(&e)
            }
        }
    }
}

/// `req` with its body watched for the client's own failures (see [`blame_the_body`]).
pub fn watch_client_body(req: Request<Body>) -> (Request<Body>, BodyFault) {
    let (parts, body) = req.into_parts();
    let (body, fault) = watch_faults(body);
    (Request::from_parts(parts, body), fault)
}

/// `rsp`, unless the client's request body had failed by the time it is answered: then the
/// client's 400 saying so. Whatever a node answered was made from a broken request (a node
/// blamed, or an engine's `200` carrying "unexpected EOF" for a cut `load`).
pub fn blame_the_body(rsp: Response<Body>, fault: &BodyFault) -> Response<Body> {
    match fault.get() {
        Some(why) => respond::message(StatusCode::BAD_REQUEST, why),
        None => rsp,
    }
}

impl Handler for ClusterHandler {
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(self.serve(req, ctx))
    }

    fn upstream(&self) -> String {
        format!("cluster of {} nodes", self.cluster.nodes().len())
    }
}
