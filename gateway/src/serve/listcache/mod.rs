//! `docker ps` from a cache kept by events, as Swarm classic answered it.
//!
//! # What is kept, and how
//!
//! Per node, the engine's own `containers/json` rows, as the cluster shows them (names
//! qualified, ports pinned: [`crate::aggregate::render_rows`]), in a [`table::NodeTable`]. One
//! follower per node ([`ListCache::run`]) keeps it:
//!
//! 1. it opens the node's `/events` stream (containers and networks) over the hop;
//! 2. then lists the node in full (`all=1`): events from then on are in the stream, so nothing
//!    between the two is missed. The node's cache is then *trusted*;
//! 3. each container event names a container (`Actor.ID`; a network `connect`/`disconnect`
//!    names it in `Actor.Attributes.container`): the follower fetches that container's row again
//!    from the engine (`all=1&filters={"id":[...]}`, the events that arrived meanwhile in one
//!    call), so a row is always what the engine lists, never made up from an event. Events that
//!    change no row (`exec_*`, `top`, `resize`, `attach`, archive calls) are ignored;
//! 4. every [`Settings::resync_every`] (30 s by default) it lists the node in full again, and
//!    after any gap: a stream that ends or fails, a fetch that fails, a burst of more than
//!    [`MAX_PENDING`] containers at once. Until the list is back, the node is not trusted.
//!
//! Calls through this gateway that change a container (`create`, `start`, `stop`, `kill`,
//! `restart`, `pause`, `unpause`, `update`, `rename`, `rm`) refresh its row before the client
//! gets the answer ([`ListCache::refresh`]): `docker run -d` then `docker ps` shows it.
//!
//! # Answers
//!
//! [`ListCache::answer`] answers the queries [`answer::Plan`] can match exactly, else the
//! caller asks every node live. Per node asked:
//! - trusted and healthy: its cached rows;
//! - healthy but not trusted (just started, stream down, resync failing, too many rows): its
//!   full list is asked live for this answer (and kept);
//! - down, or its live list failed: its cached rows as "Host Down" rows (where stopped
//!   containers are listed), and the node named with its reason in `X-Busbar-Failed-Nodes`,
//!   as the live path does.
//!
//! `X-Busbar-List` says where an answer came from: `cache`, `cache; live: node2` (nodes asked
//! live), or `live` (the whole live fan-out, see [`super::ClusterHandler`]).

pub mod answer;
pub mod status;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busbar_http::{Body, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn};

use super::calls;
use crate::aggregate::{self, query};
use crate::cluster::{Cluster, Node};
use crate::model::{CallError, NodeAnswer};
use answer::{Part, Plan};
use table::{Hints, Limits, NodeTable};

/// The header that says where a container list came from.
pub const LIST_HEADER: &str = "X-Busbar-List";

/// Containers named by events at once beyond which a full list is cheaper.
pub const MAX_PENDING: usize = 500;
/// How long after an event's fetch the same containers are fetched once more. dockerd 20.10
/// sends some events before the state they announce is in what it lists (`die` and `pause`
/// are logged before the container is written to the view `containers/json` reads), so a
/// fetch right after the event can still see the state before it.
const SETTLE: Duration = Duration::from_millis(200);
/// IDs asked in one targeted fetch.
const BATCH: usize = 100;
/// Longest event line read from a node (a node must not grow our memory).
const MAX_EVENT: usize = 1024 * 1024;
/// How often the cache looks for new members.
const MEMBERS_EVERY: Duration = Duration::from_millis(500);
/// What a full list asks.
const FULL_LIST: &str = "/v1.41/containers/json?all=1";

/// The cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Full list of every node this often, events or not.
    pub resync_every: Duration,
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            resync_every: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// Every node's cache.
pub struct ListCache {
    settings: Settings,
    nodes: Mutex<HashMap<String, Arc<NodeCache>>>,
    /// Told every full list (the gateway's last-seen lists, which find the node of a
    /// container on a node that is down): no second refresh loop needed.
    last_seen: Option<Arc<super::LastSeen>>,
}

/// One node's cache: its rows, and whether they can be trusted.
#[derive(Default)]
pub struct NodeCache {
    table: Mutex<NodeTable>,
    /// `None` when trusted, else why not.
    distrust: Mutex<Option<String>>,
    /// Asks the follower for a full list now.
    resync: Notify,
    /// Builds through this gateway running on the node (see [`ListCache::building`]).
    builds: AtomicU64,
    /// How many such builds have ended, and how many had when the latest full list began.
    builds_ended: AtomicU64,
    listed_after: AtomicU64,
}

impl NodeCache {
    fn new() -> NodeCache {
        NodeCache {
            distrust: Mutex::new(Some("not listed yet".into())),
            ..NodeCache::default()
        }
    }

    fn trusted(&self) -> bool {
        self.builds.load(Ordering::Acquire) == 0
            && self.listed_after.load(Ordering::Acquire)
                >= self.builds_ended.load(Ordering::Acquire)
            && self.distrust.lock().expect("list cache lock").is_none()
    }

    fn set_distrust(&self, why: Option<String>) {
        *self.distrust.lock().expect("list cache lock") = why;
    }

    fn table(&self) -> std::sync::MutexGuard<'_, NodeTable> {
        self.table.lock().expect("list cache lock")
    }
}

/// A build running on a node (see [`ListCache::building`]).
pub struct BuildGuard(Arc<NodeCache>);

impl BuildGuard {
    fn start(cache: Arc<NodeCache>) -> BuildGuard {
        cache.builds.fetch_add(1, Ordering::AcqRel);
        BuildGuard(cache)
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        self.0.builds_ended.fetch_add(1, Ordering::AcqRel);
        self.0.builds.fetch_sub(1, Ordering::AcqRel);
        self.0.resync.notify_one();
    }
}

/// What a row shows after a call through the gateway, to stop fetching it again.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Created.
    Present,
    /// Removed.
    Absent,
    /// Started, stopped, paused, renamed...: its state, names or the moment its status counts
    /// from differ from what they were before the call.
    Changed(Option<Seen>),
    /// Whatever it shows (a change the row may not show: `kill`, `update`).
    Any,
}

/// The parts of a row a change shows in.
#[derive(Debug, Clone)]
pub struct Seen {
    state: String,
    names: Vec<String>,
    since_ms: Option<i64>,
}

impl Seen {
    fn of(row: &table::Row) -> Seen {
        Seen {
            state: row.row.state.clone(),
            names: row.row.names.clone(),
            since_ms: row.template.as_ref().map(|t| t.since_ms),
        }
    }

    fn differs(&self, before: &Seen) -> bool {
        let moved = match (self.since_ms, before.since_ms) {
            (Some(a), Some(b)) => (a - b).abs() > 1500,
            (a, b) => a.is_some() != b.is_some(),
        };
        self.state != before.state || self.names != before.names || moved
    }
}

/// Why a fetch did not change the cache.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Overflow(#[from] table::Overflow),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ListCache {
    pub fn new(settings: Settings, last_seen: Option<Arc<super::LastSeen>>) -> ListCache {
        ListCache {
            settings,
            nodes: Mutex::default(),
            last_seen,
        }
    }

    fn node_cache(&self, name: &str) -> Arc<NodeCache> {
        self.nodes
            .lock()
            .expect("list cache lock")
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(NodeCache::new()))
            .clone()
    }

    /// Follows every member of `cluster` until `shutdown`: one follower per node, started as
    /// members appear, ended (its cache dropped) when they leave.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>, shutdown: CancellationToken) {
        let mut followed = std::collections::HashSet::new();
        loop {
            for node in cluster.nodes() {
                if followed.insert(node.name().to_owned()) {
                    let this = self.clone();
                    let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
                    let name = node.name().to_owned();
                    tokio::spawn(async move {
                        this.follow(&cluster, &name, &shutdown).await;
                    });
                }
            }
            followed.retain(|name| cluster.node(name).is_some());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(MEMBERS_EVERY) => {}
            }
        }
    }

    /// Keeps one node's cache while it is a member.
    async fn follow(&self, cluster: &Cluster, name: &str, shutdown: &CancellationToken) {
        let cache = self.node_cache(name);
        let mut backoff = MEMBERS_EVERY;
        loop {
            let Some(node) = cluster.node(name) else {
                self.nodes.lock().expect("list cache lock").remove(name);
                return debug!(node = name, "list cache: the node left the cluster");
            };
            if node.is_healthy() {
                let started = Instant::now();
                let why = self.session(&node, &cache, shutdown).await;
                cache.set_distrust(Some(why.clone()));
                if shutdown.is_cancelled() {
                    return;
                }
                warn!(node = name, why, "list cache: the node's events stream ended; listing it live until it is followed again");
                backoff = if started.elapsed() > Duration::from_secs(10) {
                    MEMBERS_EVERY
                } else {
                    (backoff * 2).min(Duration::from_secs(5))
                };
            } else {
                cache.set_distrust(Some(format!(
                    "unhealthy: {}",
                    node.snapshot().last_error.unwrap_or_default()
                )));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// One events stream of `node`: opened, then a full list, then events applied until the
    /// stream ends or a fetch fails. Returns why it ended.
    async fn session(
        &self,
        node: &Node,
        cache: &NodeCache,
        shutdown: &CancellationToken,
    ) -> String {
        let ctx = RequestCtx::with_id(
            "list-cache".into(),
            info_span!("list_cache", node = %node.name()),
        );
        let target = format!(
            "/v1.41/events?filters={}",
            query::encode(r#"{"type":["container","network"]}"#)
        );
        let opened = tokio::time::timeout(
            calls::CALL_TIMEOUT,
            calls::forward(node, calls::request(Method::GET, &target, None), &ctx),
        )
        .await;
        let rsp = match opened {
            Err(_) => return format!("events: no answer within {:?}", calls::CALL_TIMEOUT),
            Ok(Err(e)) => return format!("events: {e}"),
            Ok(Ok(rsp)) if !rsp.status().is_success() => {
                return format!("events: refused with {}", rsp.status())
            }
            Ok(Ok(rsp)) => rsp,
        };
        let mut body = rsp.into_body();
        if let Err(e) = self.resync(node, cache, &ctx).await {
            return format!("list: {e}");
        }
        cache.set_distrust(None);
        debug!(node = %node.name(), rows = cache.table().len(), "list cache: following");
        let mut pending: HashMap<String, Hints> = HashMap::new();
        // Fetched once already, to fetch again at `settle_at` (see [`SETTLE`]).
        let mut settle: HashMap<String, Hints> = HashMap::new();
        let mut settle_at: Option<Instant> = None;
        let mut settle_first: Option<Instant> = None;
        let mut line: Vec<u8> = Vec::new();
        let mut next_check = Instant::now() + self.settings.resync_every;
        loop {
            let (mut full, mut second) = (false, false);
            let settling = async {
                match settle_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return "shutting down".into(),
                _ = tokio::time::sleep_until(next_check) => full = true,
                _ = cache.resync.notified() => full = true,
                _ = settling => {
                    settle_at = None;
                    settle_first = None;
                    second = true;
                    pending.extend(std::mem::take(&mut settle));
                }
                frame = body.frame() => {
                    let mut frame = frame;
                    loop {
                        match frame {
                            None => return "events: the stream ended".into(),
                            Some(Err(e)) => return format!("events: {e}"),
                            Some(Ok(f)) => {
                                if let Ok(data) = f.into_data() {
                                    if let Err(why) = take_lines(&data, &mut line, &mut pending) {
                                        return why;
                                    }
                                }
                            }
                        }
                        // Whatever else has arrived goes into the same fetch.
                        match futures_util::FutureExt::now_or_never(body.frame()) {
                            Some(f) => frame = f,
                            None => break,
                        }
                    }
                }
            }
            if pending.len() > MAX_PENDING {
                pending.clear();
                full = true;
            }
            let result = if full {
                next_check = Instant::now() + self.settings.resync_every;
                pending.clear();
                settle.clear();
                settle_at = None;
                settle_first = None;
                self.resync(node, cache, &ctx).await
            } else if !pending.is_empty() {
                let asked = std::mem::take(&mut pending);
                if !second {
                    // Fetched once more a little later, unless this was that second fetch.
                    settle.extend(asked.iter().map(|(k, v)| (k.clone(), *v)));
                    // SETTLE after the latest event, but no later than a second after the
                    // first one waiting (a busy node still gets its second fetches).
                    let now = Instant::now();
                    let first = *settle_first.get_or_insert(now);
                    settle_at = Some((now + SETTLE).min(first + Duration::from_secs(1)));
                }
                self.fetch_some(node, cache, asked, &ctx).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                return format!("list: {e}");
            }
        }
    }

    /// Lists `node` in full into its table.
    async fn resync(
        &self,
        node: &Node,
        cache: &NodeCache,
        ctx: &RequestCtx,
    ) -> Result<(), FetchError> {
        let ended = cache.builds_ended.load(Ordering::Acquire);
        let stamp = cache.table().begin();
        let body = fetch(node, FULL_LIST, ctx).await?;
        let rows = render(node, &body)?;
        cache
            .table()
            .apply_full(stamp, rows, now_ms(), self.settings.limits)?;
        if let Some(last_seen) = &self.last_seen {
            last_seen.remember(node.name(), body);
        }
        cache.listed_after.fetch_max(ended, Ordering::AcqRel);
        Ok(())
    }

    /// Fetches the rows of `asked` (full IDs) again into `node`'s table.
    async fn fetch_some(
        &self,
        node: &Node,
        cache: &NodeCache,
        asked: HashMap<String, Hints>,
        ctx: &RequestCtx,
    ) -> Result<(), FetchError> {
        let ids: Vec<(String, Hints)> = asked.into_iter().collect();
        for batch in ids.chunks(BATCH) {
            let stamp = cache.table().begin();
            let filter =
                serde_json::json!({ "id": batch.iter().map(|(id, _)| id).collect::<Vec<_>>() });
            let path = format!(
                "/v1.41/containers/json?all=1&filters={}",
                query::encode(&filter.to_string())
            );
            let body = fetch(node, &path, ctx).await?;
            let rows = render(node, &body)?;
            let asked: HashMap<String, Hints> = batch.iter().cloned().collect();
            cache
                .table()
                .apply_some(stamp, &asked, rows, now_ms(), self.settings.limits)?;
        }
        Ok(())
    }

    /// Marks a build through this gateway on `node` until the guard is dropped (with the
    /// build's answer). A build makes and removes its step containers behind the API, which the
    /// cache would learn of an event later: a client that lists right after its build (or
    /// after leaving it, which makes the engine remove the step's container) could see a
    /// container appear after it was gone. While a build runs, and until the node has been
    /// listed in full after it ended, lists ask the node live.
    pub fn building(&self, node: &str) -> BuildGuard {
        BuildGuard::start(self.node_cache(node))
    }

    /// What a row looks like before a change, to see the change in a fetch (see [`Expect`]).
    pub fn before(&self, node: &str, id: &str) -> Option<Seen> {
        let cache = self.node_cache(node);
        let table = cache.table();
        table.get(id).map(Seen::of)
    }

    /// Refreshes container `id`'s row on `node` (after a call through the gateway changed
    /// it), before the client is answered. dockerd may answer the call a moment before what it
    /// lists shows the change (see [`SETTLE`]): the row is fetched again, every 20 ms for up to
    /// [`SETTLE`], until it shows what `expect` says. If a fetch fails, the node is not trusted
    /// until its follower has listed it again.
    pub async fn refresh(&self, node: &Node, id: &str, expect: Expect, ctx: &RequestCtx) {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        let cache = self.node_cache(node.name());
        let deadline = Instant::now() + SETTLE;
        loop {
            let asked = HashMap::from([(id.to_owned(), Hints::default())]);
            if let Err(e) = self.fetch_some(node, &cache, asked, ctx).await {
                cache.set_distrust(Some(format!("refreshing {id} failed: {e}")));
                cache.resync.notify_one();
                return;
            }
            let now = cache.table().get(id).map(Seen::of);
            let done = match &expect {
                Expect::Present => now.is_some(),
                Expect::Absent => now.is_none(),
                Expect::Changed(Some(before)) => now.is_none_or(|n| n.differs(before)),
                Expect::Changed(None) | Expect::Any => true,
            };
            if done || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The answer to `GET /containers/json` from the cache, or `None` if the query is not one
    /// the cache answers exactly (the caller then asks every node live).
    pub async fn answer(
        &self,
        cluster: &Cluster,
        req: &Request<Body>,
        ctx: &RequestCtx,
    ) -> Option<Response<Body>> {
        let plan = Plan::of_query(req.uri().query().unwrap_or(""))?;
        let nodes: Vec<Arc<Node>> = cluster
            .nodes()
            .into_iter()
            .filter(|n| plan.asks(n.name()))
            .collect();
        let caches: Vec<Arc<NodeCache>> = nodes.iter().map(|n| self.node_cache(n.name())).collect();
        // Nodes not trusted but up are listed live for this answer (and their tables set).
        let live = nodes.iter().zip(&caches).map(|(node, cache)| async move {
            if !node.is_healthy() {
                return Some(Err(CallError::Down(format!(
                    "unhealthy: {}",
                    node.snapshot().last_error.unwrap_or_default()
                ))));
            }
            if cache.trusted() {
                return None;
            }
            let stamp = cache.table().begin();
            let result = match fetch(node, FULL_LIST, ctx).await {
                Ok(body) => match render(node, &body) {
                    Ok(rows) => cache
                        .table()
                        .apply_full(stamp, rows, now_ms(), self.settings.limits)
                        .map_err(|e| CallError::Bad(e.to_string())),
                    Err(e) => Err(match e {
                        FetchError::Call(c) => c,
                        e => CallError::Bad(e.to_string()),
                    }),
                },
                Err(e) => Err(e),
            };
            Some(result)
        });
        let outcomes: Vec<Option<Result<(), CallError>>> =
            futures_util::future::join_all(live).await;
        let mut missing: Vec<NodeAnswer<()>> = vec![];
        let mut asked_live: Vec<&str> = vec![];
        for (node, outcome) in nodes.iter().zip(&outcomes) {
            match outcome {
                Some(Err(e)) => missing.push(NodeAnswer {
                    node: node.name().to_owned(),
                    result: Err(e.clone()),
                }),
                Some(Ok(())) => asked_live.push(node.name()),
                None => {}
            }
        }
        let guards: Vec<_> = caches.iter().map(|c| c.table()).collect();
        let parts: Vec<Part> = nodes
            .iter()
            .zip(&guards)
            .zip(&outcomes)
            .map(|((node, table), outcome)| Part {
                node: node.name(),
                rows: table.rows().collect(),
                host_down: matches!(outcome, Some(Err(_))),
            })
            .collect();
        let (body, rows) = answer::write(&plan, &parts, now_ms());
        drop(parts);
        drop(guards);
        if !nodes.is_empty() && missing.len() == nodes.len() && rows == 0 {
            let why = aggregate::failed_nodes_header(&missing).unwrap_or_default();
            let mut rsp = busbar_http::error::message(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no node could list its containers: {why}"),
            );
            set_failed(&mut rsp, &missing);
            return Some(rsp);
        }
        let source = source_of(&asked_live);
        let mut rsp = Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(LIST_HEADER, source)
            .body(busbar_http::body::full(body))
            .expect("a status and valid headers make a response");
        set_failed(&mut rsp, &missing);
        Some(rsp)
    }
}

/// `cache`, or `cache; live: node1, node2` (ten names at most, then how many more).
fn source_of(asked_live: &[&str]) -> String {
    if asked_live.is_empty() {
        return "cache".into();
    }
    let mut names: Vec<&str> = asked_live.to_vec();
    names.sort_unstable();
    let shown: Vec<&str> = names.iter().take(10).copied().collect();
    let mut text = format!("cache; live: {}", shown.join(", "));
    if names.len() > 10 {
        text.push_str(&format!(" and {} more", names.len() - 10));
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn set_failed(rsp: &mut Response<Body>, missing: &[NodeAnswer<()>]) {
    if let Some(failed) = aggregate::failed_nodes_header(missing) {
        if let Ok(v) = http::HeaderValue::from_str(&failed) {
            rsp.headers_mut().insert(aggregate::FAILED_NODES_HEADER, v);
        }
    }
}

/// `GET path` on `node`: the body of a 2xx answer.
async fn fetch(node: &Node, path: &str, ctx: &RequestCtx) -> Result<Bytes, CallError> {
    match calls::call(node, calls::request(Method::GET, path, None), ctx).await? {
        (status, body) if status.is_success() => Ok(body),
        (status, body) => Err(calls::engine_error(status, &body)),
    }
}

/// A node's list body as rows.
fn render(node: &Node, body: &[u8]) -> Result<Vec<aggregate::RenderedRow>, FetchError> {
    let list = aggregate::parse_list(body).map_err(CallError::Bad)?;
    Ok(aggregate::render_rows(
        &list,
        node.name(),
        Some(aggregate::host_of(node.link.addr())),
    ))
}

/// Adds the containers that the complete lines of `data` name to `pending` (`line` holds an
/// incomplete last line). A line too long ends the stream.
fn take_lines(
    data: &[u8],
    line: &mut Vec<u8>,
    pending: &mut HashMap<String, Hints>,
) -> Result<(), String> {
    for &b in data {
        if b != b'\n' {
            if line.len() >= MAX_EVENT {
                return Err(format!("events: a line over {MAX_EVENT} bytes"));
            }
            line.push(b);
            continue;
        }
        if let Ok(event) = serde_json::from_slice::<Value>(line) {
            note_event(&event, pending);
        }
        line.clear();
    }
    Ok(())
}

/// Container events that change no `containers/json` row.
const IGNORED: [&str; 11] = [
    "exec_create",
    "exec_start",
    "exec_detach",
    "exec_die",
    "top",
    "resize",
    "attach",
    "detach",
    "archive-path",
    "extract-to-dir",
    "export",
];

/// Notes the container `event` names, if its row may have changed, with the event's time for
/// a start or a die.
pub fn note_event(event: &Value, pending: &mut HashMap<String, Hints>) {
    let kind = event["Type"].as_str().unwrap_or_default();
    let action = event["Action"]
        .as_str()
        .or_else(|| event["status"].as_str())
        .unwrap_or_default();
    let id = match kind {
        "container" if !IGNORED.iter().any(|a| action.starts_with(a)) => {
            event["Actor"]["ID"].as_str()
        }
        "network" if matches!(action, "connect" | "disconnect") => {
            event["Actor"]["Attributes"]["container"].as_str()
        }
        _ => None,
    };
    let Some(id) = id.filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return;
    };
    let ms = event["timeNano"].as_i64().map(|n| n / 1_000_000);
    let hints = pending.entry(id.to_owned()).or_default();
    match action {
        "start" | "restart" => hints.started_ms = ms.or(hints.started_ms),
        "die" => hints.finished_ms = ms.or(hints.finished_ms),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
