//! [`FakeEngine`]: a Docker Engine API server that is a test double.
//!
//! It stands where a real `dockerd` cannot run (no root, no namespaces): it answers what the
//! test scripted and records what it received, so a test can check both sides of busbar.
//!
//! ```no_run
//! # async fn demo() {
//! use busbar_testkit::{json, FakeEngine};
//! let engine = FakeEngine::start().await; // a unix socket in a temporary directory
//! engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
//! // ... point busbar at engine.addr(), send it requests ...
//! let got = engine.requests();
//! assert_eq!(got[0].target, "/v1.41/containers/create?name=web");
//! engine.stop().await;
//! # }
//! ```
//!
//! - **Routes** are `METHOD PATH[?QUERY]` patterns (`*` matches any run of characters, `/`
//!   included; a path pattern starting with `/*/` also matches the unversioned path). The
//!   route added last wins, so a test can override a preset. Anything unmatched gets Docker's
//!   `404 {"message":"page not found"}`.
//! - **Every request is recorded** before it is answered: method, target (path and query
//!   exactly as received, no decoding), headers, the whole body, and a [`crate::seq`] number.
//! - **Replies** ([`Reply`]): a whole body, a finite chunked stream, an endless one (chunks,
//!   then held open until the engine stops: `events`, `logs -f`), a large generated body,
//!   a hijack (`101 UPGRADED` after `Upgrade: tcp`, then a [`Hijack`] script with half-close),
//!   a delay before the head, or no answer at all.
//! - [`FakeEngine::stop`] ends every connection and stream and joins every task.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_engine::EngineAddr;
use busbar_http::body::full;
use busbar_http::{Body, BoxError};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json as jv, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pattern::Pattern;
use crate::{seq, LIMIT};

/// One request as the fake engine received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its place in [`crate::seq`].
    pub seq: u64,
    pub method: Method,
    /// The request target exactly as received: path and query, nothing decoded.
    pub target: String,
    pub headers: HeaderMap,
    /// The body as received: whole, or what arrived before it broke off.
    pub body: Bytes,
    /// Whether the body arrived whole (false: the connection broke off, or the chunked
    /// encoding ended without its last chunk).
    pub whole: bool,
}

impl Recorded {
    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body of {} {} is not JSON ({e}): {:?}",
                self.method,
                self.target,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `"POST /v1.41/containers/create"`: for assertions on what arrived.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// What the engine does once a hijack is established (after its `101`).
#[derive(Debug, Clone)]
pub enum Hijack {
    /// Writes `greeting`, echoes every byte it reads, and once the client's EOF arrives (its
    /// write shutdown) writes `after_eof` and shuts its own side: output still flowing after
    /// the client's EOF shows the half-close got through.
    Echo { greeting: Bytes, after_eof: Bytes },
    /// Writes `output` and shuts its write side at once (half-close toward the client), then
    /// keeps reading until the client's EOF: input still arriving after that shows the other
    /// half-close.
    CloseFirst { output: Bytes },
}

impl Hijack {
    /// [`Hijack::Echo`] with the given texts.
    pub fn echo(greeting: &str, after_eof: &str) -> Hijack {
        Hijack::Echo {
            greeting: Bytes::copy_from_slice(greeting.as_bytes()),
            after_eof: Bytes::copy_from_slice(after_eof.as_bytes()),
        }
    }

    /// [`Hijack::CloseFirst`] with the given text.
    pub fn close_first(output: &str) -> Hijack {
        Hijack::CloseFirst {
            output: Bytes::copy_from_slice(output.as_bytes()),
        }
    }
}

/// What the engine saw of one hijacked connection.
#[derive(Debug, Clone, Default)]
pub struct HijackRecord {
    /// The request target that was hijacked.
    pub target: String,
    /// Every byte the client sent after the `101`.
    pub received: Vec<u8>,
    /// The client shut its write side (EOF reached the engine).
    pub client_eof: bool,
    /// The script ran to its end (both sides closed).
    pub done: bool,
}

#[derive(Clone)]
enum ReplyBody {
    Full(Bytes),
    Chunks { chunks: Vec<Bytes>, endless: bool },
    Large { len: u64 },
    Hijack(Hijack),
    Never,
}

/// An answer of the fake engine.
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: ReplyBody,
    delay: Duration,
}

/// A JSON answer: `json(201, r#"{"Id":"c1"}"#)`.
pub fn json(status: u16, body: &str) -> Reply {
    Reply::new(
        status,
        ReplyBody::Full(Bytes::copy_from_slice(body.as_bytes())),
    )
    .header("content-type", "application/json")
}

/// A plain text answer.
pub fn text(status: u16, body: &str) -> Reply {
    Reply::new(
        status,
        ReplyBody::Full(Bytes::copy_from_slice(body.as_bytes())),
    )
    .header("content-type", "text/plain; charset=utf-8")
}

/// The byte at offset `i` of a [`Reply::large`] body (so a test can check every byte).
pub fn large_byte(i: u64) -> u8 {
    (i % 251) as u8
}

impl Reply {
    fn new(status: u16, body: ReplyBody) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: vec![],
            body,
            delay: Duration::ZERO,
        }
    }

    /// Docker's error shape: `{"message": message}`.
    pub fn error(status: u16, message: &str) -> Reply {
        json(status, &jv!({ "message": message }).to_string())
    }

    /// A body sent as it is, with a content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, ReplyBody::Full(body.into())).header("content-type", content_type)
    }

    /// A finite chunked stream: each chunk goes out as it is, then the body ends.
    pub fn stream<I, B>(status: u16, content_type: &str, chunks: I) -> Reply
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Reply::new(
            status,
            ReplyBody::Chunks {
                chunks: chunks.into_iter().map(Into::into).collect(),
                endless: false,
            },
        )
        .header("content-type", content_type)
    }

    /// An endless chunked stream (`events`, `logs -f`): the chunks, then nothing more, the
    /// body held open until the client goes away or the engine stops.
    pub fn endless<I, B>(status: u16, content_type: &str, chunks: I) -> Reply
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Reply::new(
            status,
            ReplyBody::Chunks {
                chunks: chunks.into_iter().map(Into::into).collect(),
                endless: true,
            },
        )
        .header("content-type", content_type)
    }

    /// A generated body of `len` bytes ([`large_byte`]), streamed in 64 KiB chunks with a
    /// `Content-Length`.
    pub fn large(status: u16, content_type: &str, len: u64) -> Reply {
        Reply::new(status, ReplyBody::Large { len })
            .header("content-type", content_type)
            .header("content-length", &len.to_string())
    }

    /// A hijack: `101 UPGRADED` (to a request with `Upgrade: tcp`, else a 400), then `script`.
    pub fn hijack(script: Hijack) -> Reply {
        Reply::new(101, ReplyBody::Hijack(script))
    }

    /// No answer, ever (until the engine stops): for timeouts.
    pub fn never() -> Reply {
        Reply::new(503, ReplyBody::Never)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    /// Waits `delay` before sending the response head.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Route {
    pattern: Pattern,
    handler: Handler,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<Vec<Route>>,
    /// Delays added to the answers of requests matching a pattern ([`FakeEngine::slow`]).
    delays: Mutex<Vec<(Pattern, Duration)>>,
    requests: Mutex<Vec<Recorded>>,
    hijacks: Mutex<Vec<Arc<Mutex<HijackRecord>>>>,
    /// Moves on with every request and every hijack change: what waiters watch.
    changes: Option<watch::Sender<u64>>,
}

impl Shared {
    fn changed(&self) {
        if let Some(tx) = &self.changes {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn reply_for(&self, req: &Recorded) -> Reply {
        let handler = self
            .routes
            .lock()
            .expect("routes lock")
            .iter()
            .rev()
            .find(|r| r.pattern.matches(&req.method, &req.target))
            .map(|r| r.handler.clone());
        let mut reply = match handler {
            Some(h) => h(req),
            None => Reply::error(404, "page not found"),
        };
        for (pattern, delay) in self.delays.lock().expect("delays lock").iter() {
            if pattern.matches(&req.method, &req.target) {
                reply.delay = reply.delay.max(*delay);
            }
        }
        reply
    }
}

enum Listening {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A fake Docker engine; see the [module docs](self).
pub struct FakeEngine {
    addr: EngineAddr,
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    docker: Option<Arc<DockerState>>,
    /// Holds the socket's directory while the engine runs.
    _dir: Option<tempfile::TempDir>,
}

impl FakeEngine {
    /// Starts an engine on a unix socket in a new temporary directory, with no routes.
    pub async fn start() -> FakeEngine {
        let dir = tempfile::Builder::new()
            .prefix("busbar-fake-engine")
            .tempdir()
            .expect("a temporary directory");
        let path: PathBuf = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake engine's socket");
        FakeEngine::serve(Listening::Unix(listener), EngineAddr::Unix(path), Some(dir))
    }

    /// Starts an engine on `127.0.0.1:0`, with no routes.
    pub async fn start_tcp() -> FakeEngine {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake engine's port");
        let addr = listener.local_addr().expect("a bound address");
        FakeEngine::serve(
            Listening::Tcp(listener),
            EngineAddr::Tcp(addr.to_string()),
            None,
        )
    }

    fn serve(listener: Listening, addr: EngineAddr, dir: Option<tempfile::TempDir>) -> FakeEngine {
        let (tx, changes) = watch::channel(0);
        let shared = Arc::new(Shared {
            changes: Some(tx),
            ..Shared::default()
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (s, stop, t) = (shared.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = accept(&listener) => match accepted {
                        Some(Conn::Unix(io)) => { t.spawn(connection(io, s.clone(), stop.clone(), t.clone())); }
                        Some(Conn::Tcp(io)) => { t.spawn(connection(io, s.clone(), stop.clone(), t.clone())); }
                        None => return,
                    },
                }
            }
        });
        FakeEngine {
            addr,
            shared,
            changes,
            shutdown,
            tracker,
            docker: None,
            _dir: dir,
        }
    }

    /// Where busbar reaches it.
    pub fn addr(&self) -> EngineAddr {
        self.addr.clone()
    }

    /// Answers requests matching `pattern` (`"POST /*/containers/create"`) with `reply`.
    pub fn route(&self, pattern: &str, reply: Reply) {
        self.route_fn(pattern, move |_| reply.clone());
    }

    /// Answers requests matching `pattern` with what `handler` makes of each.
    pub fn route_fn(
        &self,
        pattern: &str,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) {
        self.shared.routes.lock().expect("routes lock").push(Route {
            pattern: Pattern::parse(pattern),
            handler: Arc::new(handler),
        });
    }

    /// Delays by `delay` the answer to every request matching `pattern`, whatever route
    /// answers it (to make a preset's answers slow).
    pub fn slow(&self, pattern: &str, delay: Duration) {
        self.shared
            .delays
            .lock()
            .expect("delays lock")
            .push((Pattern::parse(pattern), delay));
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// The requests received so far whose `METHOD PATH[?QUERY]` matches `pattern`.
    pub fn requests_to(&self, pattern: &str) -> Vec<Recorded> {
        let p = Pattern::parse(pattern);
        self.requests()
            .into_iter()
            .filter(|r| p.matches(&r.method, &r.target))
            .collect()
    }

    /// What the engine saw of each hijacked connection so far.
    pub fn hijacks(&self) -> Vec<HijackRecord> {
        self.shared
            .hijacks
            .lock()
            .expect("hijacks lock")
            .iter()
            .map(|h| h.lock().expect("hijack lock").clone())
            .collect()
    }

    /// Waits (up to [`LIMIT`]) until `ready` says yes about the requests and hijacks so far.
    pub async fn wait_until(
        &self,
        what: &str,
        ready: impl Fn(&[Recorded], &[HijackRecord]) -> bool,
    ) {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if ready(&self.requests(), &self.hijacks()) {
                return;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!(
                    "fake engine: {what}: not within {LIMIT:?}; received {:?}, hijacks {:?}",
                    self.requests()
                        .iter()
                        .map(Recorded::line)
                        .collect::<Vec<_>>(),
                    self.hijacks()
                ),
            }
        }
    }

    /// Stops accepting, ends every connection, stream and hijack, and joins every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(LIMIT, self.tracker.wait())
            .await
            .is_err()
        {
            panic!("the fake engine's tasks did not end within {LIMIT:?} of its stop");
        }
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        // A test that panicked before `stop` still ends the engine's tasks.
        self.shutdown.cancel();
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listening) -> Option<Conn> {
    match listener {
        Listening::Unix(l) => l.accept().await.ok().map(|(s, _)| Conn::Unix(s)),
        Listening::Tcp(l) => l.accept().await.ok().map(|(s, _)| Conn::Tcp(s)),
    }
}

async fn connection<IO>(io: IO, shared: Arc<Shared>, stop: CancellationToken, tracker: TaskTracker)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = {
        let stop = stop.clone();
        service_fn(move |req| handle(req, shared.clone(), stop.clone(), tracker.clone()))
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = stop.cancelled() => {}
    }
}

/// What arrived of `body`, and whether it arrived whole.
async fn read_body(mut body: Incoming) -> (Bytes, bool) {
    let mut read = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return (read.freeze(), true),
            Some(Ok(frame)) => read.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Some(Err(_)) => return (read.freeze(), false),
        }
    }
}

async fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> Result<Response<Body>, Infallible> {
    let upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let (body, whole) = read_body(body).await;
    let recorded = Recorded {
        seq: seq::next(),
        method: parts.method,
        target: parts.uri.to_string(),
        headers: parts.headers,
        body,
        whole,
    };
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(recorded.clone());
    shared.changed();
    let reply = shared.reply_for(&recorded);
    if !reply.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(reply.delay) => {}
            _ = stop.cancelled() => {}
        }
    }
    let mut rsp = Response::new(busbar_http::body::empty());
    *rsp.status_mut() = reply.status;
    for (name, value) in reply.headers {
        rsp.headers_mut().append(name, value);
    }
    *rsp.body_mut() = match reply.body {
        ReplyBody::Full(bytes) => full(bytes),
        ReplyBody::Chunks { chunks, endless } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
            tracker.spawn(async move {
                for chunk in chunks {
                    tokio::select! {
                        sent = tx.send(Ok(Frame::data(chunk))) => if sent.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
                if endless {
                    tokio::select! {
                        _ = tx.closed() => {}
                        _ = stop.cancelled() => {}
                    }
                }
            });
            StreamBody::new(ReceiverStream::new(rx)).boxed()
        }
        ReplyBody::Large { len } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
            tracker.spawn(async move {
                let mut at = 0u64;
                while at < len {
                    let n = (len - at).min(64 * 1024);
                    let chunk: Bytes = (at..at + n).map(large_byte).collect::<Vec<u8>>().into();
                    at += n;
                    tokio::select! {
                        sent = tx.send(Ok(Frame::data(chunk))) => if sent.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
            });
            StreamBody::new(ReceiverStream::new(rx)).boxed()
        }
        ReplyBody::Never => {
            stop.cancelled().await;
            busbar_http::body::empty()
        }
        ReplyBody::Hijack(script) => {
            if !busbar_http::headers::wants_upgrade(&recorded.headers) {
                return Ok(busbar_http::error::message(
                    StatusCode::BAD_REQUEST,
                    "fake engine: this hijack needs Connection: Upgrade and Upgrade: tcp",
                ));
            }
            let record = Arc::new(Mutex::new(HijackRecord {
                target: recorded.target.clone(),
                ..HijackRecord::default()
            }));
            shared
                .hijacks
                .lock()
                .expect("hijacks lock")
                .push(record.clone());
            shared.changed();
            let headers = rsp.headers_mut();
            headers.insert("connection", HeaderValue::from_static("Upgrade"));
            headers.insert("upgrade", HeaderValue::from_static("tcp"));
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.docker.raw-stream"),
            );
            rsp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"UPGRADED"));
            let shared = shared.clone();
            tracker.spawn(async move {
                let io = match upgrade.await {
                    Ok(io) => TokioIo::new(io),
                    Err(_) => return,
                };
                tokio::select! {
                    _ = run_hijack(io, script, &record, &shared) => {}
                    _ = stop.cancelled() => {}
                }
            });
            busbar_http::body::empty()
        }
    };
    Ok(rsp)
}

async fn run_hijack<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    script: Hijack,
    record: &Mutex<HijackRecord>,
    shared: &Shared,
) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let note = |f: &dyn Fn(&mut HijackRecord)| {
        f(&mut record.lock().expect("hijack lock"));
        shared.changed();
    };
    let mut buf = vec![0u8; 16 * 1024];
    match script {
        Hijack::Echo {
            greeting,
            after_eof,
        } => {
            if wr.write_all(&greeting).await.is_err() {
                return;
            }
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        note(&|r| r.received.extend_from_slice(&buf[..n]));
                        if wr.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            note(&|r| r.client_eof = true);
            let _ = wr.write_all(&after_eof).await;
            let _ = wr.shutdown().await;
        }
        Hijack::CloseFirst { output } => {
            let _ = wr.write_all(&output).await;
            let _ = wr.shutdown().await;
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => note(&|r| r.received.extend_from_slice(&buf[..n])),
                    Err(_) => return,
                }
            }
            note(&|r| r.client_eof = true);
        }
    }
    note(&|r| r.done = true);
}

// === A small stateful engine, for the gateway ===

/// A container of [`FakeEngine::start_docker`]'s engine.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    /// The create body it was made from.
    pub config: Value,
}

/// The state behind [`FakeEngine::start_docker`].
#[derive(Default)]
struct DockerState {
    node: String,
    containers: Mutex<Vec<FakeContainer>>,
    next: AtomicU64,
}

impl DockerState {
    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let tag: u32 = self.node.bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        format!("{tag:08x}{n:056x}")
    }

    fn add(&self, name: &str, image: &str, config: Value) -> Result<FakeContainer, Reply> {
        let mut all = self.containers.lock().expect("containers lock");
        if all.iter().any(|c| c.name == name) {
            return Err(Reply::error(
                409,
                &format!("Conflict. The container name \"/{name}\" is already in use by container \"x\". You have to remove (or rename) that container to be able to reuse that name."),
            ));
        }
        let c = FakeContainer {
            id: self.new_id(),
            name: name.to_owned(),
            image: image.to_owned(),
            config,
        };
        all.push(c.clone());
        Ok(c)
    }

    fn list_entry(c: &FakeContainer) -> Value {
        jv!({
            "Id": c.id,
            "Names": [format!("/{}", c.name)],
            "Image": c.image,
            "ImageID": "sha256:fake",
            "Command": "sh",
            "Created": 1_700_000_000,
            "Ports": [],
            "Labels": c.config["Labels"].as_object().cloned().unwrap_or_default(),
            "State": "created",
            "Status": "Created",
        })
    }
}

/// The `name` filter of a `containers/json` query (`filters={"name":["^/web$"]}`): the names
/// asked for, without anchors and slash.
fn name_filter(query: Option<&str>) -> Option<Vec<String>> {
    let raw = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("filters="))?;
    let decoded = percent_decode(raw);
    let filters: Value = serde_json::from_str(&decoded).ok()?;
    let names = match &filters["name"] {
        Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>(),
        Value::Object(o) => o.keys().map(String::as_str).collect(),
        _ => return None,
    };
    Some(
        names
            .into_iter()
            .map(|n| {
                n.trim_start_matches('^')
                    .trim_end_matches('$')
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect(),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name Go gives a JSON value's type in an unmarshal error.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value of `key` in a raw query, decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

impl FakeEngine {
    /// An engine that behaves like a small Docker engine named `node`, for the gateway: `_ping`,
    /// `version` (20.10.24, API 1.41), `info` (its name, 2 CPUs, 4 GiB, the container count),
    /// `containers/create` (with `?name=`, a 409 for a taken name), `containers/json` (with the
    /// `name` filter), `containers/{id}/json` and `images/json` (empty). Containers are only
    /// ever created: nothing runs.
    pub async fn start_docker(node: &str) -> FakeEngine {
        let mut engine = FakeEngine::start().await;
        let state = Arc::new(DockerState {
            node: node.to_owned(),
            ..DockerState::default()
        });
        engine.route("GET /_ping", text(200, "OK"));
        engine.route("HEAD /_ping", text(200, ""));
        engine.route(
            "GET /*/version",
            json(
                200,
                &jv!({
                    "Version": "20.10.24",
                    "ApiVersion": "1.41",
                    "MinAPIVersion": "1.12",
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": "6.1.0-fake",
                    "GoVersion": "go1.19.9",
                    "GitCommit": "fake",
                })
                .to_string(),
            ),
        );
        let s = state.clone();
        engine.route_fn("GET /*/info", move |_| {
            let n = s.containers.lock().expect("containers lock").len();
            json(
                200,
                &jv!({
                    "ID": format!("FAKE:{}", s.node),
                    "Name": s.node,
                    "NCPU": 2,
                    "MemTotal": 4u64 << 30,
                    "Containers": n,
                    "ContainersRunning": 0,
                    "ContainersPaused": 0,
                    "ContainersStopped": n,
                    "Images": 0,
                    "ServerVersion": "20.10.24",
                    "OperatingSystem": "Debian GNU/Linux 12 (fake engine)",
                    "OSType": "linux",
                    "Architecture": "x86_64",
                    "KernelVersion": "6.1.0-fake",
                    "Driver": "overlay2",
                    "Labels": [],
                })
                .to_string(),
            )
        });
        engine.route("GET /*/images/json", json(200, "[]"));
        let s = state.clone();
        engine.route_fn("GET /*/containers/json", move |req| {
            let wanted = name_filter(req.query());
            let list: Vec<Value> = s
                .containers
                .lock()
                .expect("containers lock")
                .iter()
                .filter(|c| wanted.as_ref().is_none_or(|w| w.contains(&c.name)))
                .map(DockerState::list_entry)
                .collect();
            json(200, &Value::Array(list).to_string())
        });
        let s = state.clone();
        engine.route_fn("GET /*/containers/*/json", move |req| {
            let segments: Vec<&str> = req.path().split('/').collect();
            let reference = segments[segments.len() - 2];
            let all = s.containers.lock().expect("containers lock");
            match all
                .iter()
                .find(|c| c.id.starts_with(reference) || c.name == reference)
            {
                Some(c) => json(
                    200,
                    &jv!({
                        "Id": c.id,
                        "Name": format!("/{}", c.name),
                        "Image": "sha256:fake",
                        "Config": c.config.clone(),
                        "HostConfig": {"Memory": 0, "NanoCpus": 0},
                        "State": {"Status": "created", "Running": false},
                    })
                    .to_string(),
                ),
                None => Reply::error(404, &format!("No such container: {reference}")),
            }
        });
        let s = state.clone();
        engine.route_fn("POST /*/containers/create", move |req| {
            let config: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return Reply::error(400, &format!("invalid JSON: {e}")),
            };
            // dockerd decodes these into structs: another JSON type is a 400.
            for field in ["HostConfig", "NetworkingConfig"] {
                if !(config[field].is_object() || config[field].is_null()) {
                    return Reply::error(
                        400,
                        &format!(
                            "json: cannot unmarshal {} into Go struct field ContainerCreateConfig.{field}",
                            json_type(&config[field])
                        ),
                    );
                }
            }
            let name = query_param(req.query(), "name")
                .unwrap_or_else(|| format!("fake_{}", s.next.load(Ordering::SeqCst)));
            let image = config["Image"].as_str().unwrap_or("").to_owned();
            match s.add(&name, &image, config) {
                Ok(c) => json(201, &jv!({"Id": c.id, "Warnings": []}).to_string()),
                Err(reply) => reply,
            }
        });
        engine.docker = Some(state);
        engine
    }

    /// Adds a container to a [`FakeEngine::start_docker`] engine, as if created behind
    /// busbar's back.
    pub fn add_container(&self, name: &str, image: &str) -> FakeContainer {
        let state = self.docker.as_ref().expect("an engine from start_docker");
        match state.add(name, image, jv!({ "Image": image })) {
            Ok(c) => c,
            Err(_) => panic!("the fake engine already has a container named {name}"),
        }
    }

    /// The containers of a [`FakeEngine::start_docker`] engine.
    pub fn containers(&self) -> Vec<FakeContainer> {
        let state = self.docker.as_ref().expect("an engine from start_docker");
        state.containers.lock().expect("containers lock").clone()
    }

    /// The containers by name.
    pub fn container_names(&self) -> BTreeMap<String, FakeContainer> {
        self.containers()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect()
    }
}
