//! The hook engine: runs a request through its adapter chain.
//!
//! ```text
//!  request ─> gate ─> pre-hooks ─> engine ─> post gate ─> post-hooks ─> response
//!              │       │  (each gets the        │           │ (each gets the previous
//!              │       │   previous Body)       │           │  Code, ContentType, Body)
//!              │       └─ HTTP error: stop, ────┼───────────┴─ HTTP error: stop, its
//!              │          engine never called   │              status and body to the client
//!              └─ tar/binary body: pre-hooks    └─ 101, raw streams, endless streams, wait,
//!                 skipped, body streamed             binary bodies: post-hooks skipped,
//!                                                    response streamed
//! ```
//!
//! Phases, in order:
//! 1. **Gate.** Pre-hooks see the body only when it is JSON (`application/json`, with or
//!    without parameters) or when there is no body at all (`Body: null`). Any other body
//!    (a build context, `load`, `import`, `cp`) streams to the engine untouched and the
//!    pre-hooks are skipped (logged at debug): a hook must never drop a body it could not see.
//!    A JSON body the engine decodes into a container's settings (create, update, exec, network
//!    and volume create, network connect) is respelled first as the engine reads it
//!    ([`busbar_api::body`]): Go's decoder takes `hostconfig` for `HostConfig`, reads a
//!    create's top-level host fields, and ignores what follows the first value; hooks and the
//!    engine get the same, canonical body (a field given twice is refused, 400).
//! 2. **Pre-hooks**, in chain order. Each gets `ClientRequest {Method, Request, Body}` with the
//!    previous hook's `Body` and `Request`. A reply's `Body` replaces the body (`null` means
//!    none). A reply's `Request` may change the query; a different path is honoured only if it
//!    matches exactly the same endpoints, ignored when it is the adapter's own URL path
//!    (powerstrip-flocker answers that), and refused otherwise.
//! 3. **Engine.** The final request goes to the engine.
//! 4. **Post gate.** Post-hooks run only on a complete, textual response: not on `101`, raw or
//!    multiplexed streams, endless streams (`/events`, `logs?follow=1`, streaming `stats`,
//!    `attach`), `containers/{id}/wait` (the CLI waits for its head before it starts the
//!    container: holding it back deadlocks `docker run`), or binary bodies (tar). Otherwise the
//!    response is buffered up to the chain set's `max_buffer`.
//! 5. **Post-hooks**, in chain order, each with the original `ClientRequest` and the previous
//!    `ServerResponse {ContentType, Body, Code}`. The client gets the last `Code`, `ContentType`
//!    and `Body`, with a correct Content-Length.
//!
//! **Protocol 2** (an adapter whose entry says `protocol: 2`, see [`busbar_protocol::v2`]):
//! its calls carry the headers and `Caller`; as a pre-hook it may answer a `Response` of its
//! own, which ends the chain (no engine call, no post-hooks). When a later pre-hook or the
//! engine fails (an answer of 400 or more, or an error of busbar's), every v2 pre-hook that
//! ran gets an `unwind` call, last first, before the client is answered. v1 adapters in the
//! same chain get exactly the v1 messages and no unwind call.
//!
//! An adapter that cannot be reached, times out or answers something that is not Powerstrip
//! JSON fails the request with a [`HookError`] naming it (502, or 504 for a timeout), unless
//! the adapter says `on_error: skip`, in which case the chain goes on without it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use tracing::{debug, info_span, warn, Instrument};

use busbar_api::path::{canonical_target, strip_query};
use busbar_api::{endpoint, ApiPath};
use busbar_chains::{Adapter, ChainSet, MatchedChain, OnError};
use busbar_http::body::{collect_limited, full, CollectError};
use busbar_http::{Body, DockerError};
use busbar_protocol::v1::{
    ClientRequest, ModifiedClientRequest, PostHookReply, PostHookRequest, PreHookReply,
    PreHookRequest, ServerResponse,
};
use busbar_protocol::v2;

use super::adapter::{
    json, v2_headers, AdapterClients, Caller, HookError, Kind, Message, Refusal, Reply,
};

/// What a chain produced before (or instead of) the engine call.
pub enum PreOutcome {
    /// Forward this request to the engine.
    Forward {
        req: Request<Body>,
        original: Box<Original>,
        /// The v2 pre-hooks that ran, in order: told if the engine fails ([`engine_failed`]).
        ran: Vec<Ran>,
    },
    /// A pre-hook refused, or a v2 pre-hook answered itself: answer with this, the engine is
    /// never called.
    Respond(Response<Body>),
}

/// The client's request as the post-hooks are told it.
pub struct Original {
    pub request: ClientRequest,
    pub headers: HeaderMap,
}

/// A v2 pre-hook that ran: what it was given and what it answered, for its unwind call.
pub struct Ran {
    adapter: Arc<Adapter>,
    given: v2::ClientRequest,
    answered: ModifiedClientRequest,
}

/// Runs the gate and the pre-hooks.
pub async fn pre(
    chains: &ChainSet,
    clients: &AdapterClients,
    matched: &MatchedChain,
    req: Request<Body>,
    caller: Caller<'_>,
) -> Result<PreOutcome, HookError> {
    let method = req.method().clone();
    let uri = path_and_query(req.uri());
    let no_body = req.body().size_hint().upper() == Some(0);
    if !(no_body || is_json(req.headers().get(CONTENT_TYPE))) {
        if !matched.pre.is_empty() {
            debug!(content_type = ?req.headers().get(CONTENT_TYPE), "pre-hooks skipped: the body is not JSON");
        }
        let original = Original {
            request: ClientRequest {
                method: method.to_string(),
                request: uri,
                body: None,
            },
            headers: req.headers().clone(),
        };
        return Ok(PreOutcome::Forward {
            req,
            original: Box::new(original),
            ran: vec![],
        });
    }
    let (mut parts, body) = req.into_parts();
    let mut body_text = if no_body {
        None
    } else {
        let text = read_text(body, chains.max_buffer(), Message::Request).await?;
        Some(as_the_engine_reads(&method, parts.uri.path(), text)?)
    };
    let original = Original {
        request: ClientRequest {
            method: method.to_string(),
            request: uri.clone(),
            body: body_text.clone(),
        },
        headers: parts.headers.clone(),
    };
    let mut current_uri = uri;
    let mut ran: Vec<Ran> = vec![];
    for adapter in &matched.pre {
        let span = info_span!("hook", hook.name = %adapter.name, hook.phase = "pre");
        let given = ClientRequest {
            method: method.to_string(),
            request: current_uri.clone(),
            body: body_text.clone(),
        };
        let called = if adapter.protocol >= 2 {
            let given = v2_request(adapter, &given, &parts.headers);
            let payload = v2::PreHookRequest::new(given, caller.v2());
            clients
                .call(adapter, &payload, &caller, Kind::Pre, |b| {
                    v2::PreHookReply::from_json(b).map_err(|e| e.to_string())
                })
                .instrument(span.clone())
                .await
        } else {
            let payload = PreHookRequest::new(given.clone());
            clients
                .call(adapter, &payload, &caller, Kind::Pre, json::<PreHookReply>)
                .instrument(span.clone())
                .await
                .map(|r| match r {
                    Reply::Ok(r) => {
                        Reply::Ok(v2::PreHookReply::Continue(r.modified_client_request))
                    }
                    Reply::Refused(refusal) => Reply::Refused(refusal),
                })
        };
        let modified = match called {
            Ok(Reply::Ok(v2::PreHookReply::Continue(m))) => m,
            Ok(Reply::Ok(v2::PreHookReply::Respond(answer))) => {
                let rsp = own_response(answer);
                span.in_scope(|| {
                    debug!(
                        status = rsp.status().as_u16(),
                        "pre-hook answered the client itself; the engine is not called"
                    )
                });
                return Ok(PreOutcome::Respond(
                    failed_after(clients, &ran, adapter, rsp, &caller).await,
                ));
            }
            Ok(Reply::Refused(refusal)) => {
                span.in_scope(|| {
                    debug!(
                        status = refusal.status.as_u16(),
                        "pre-hook refused the request"
                    )
                });
                let rsp = refusal_response(adapter, refusal);
                return Ok(PreOutcome::Respond(
                    failed_after(clients, &ran, adapter, rsp, &caller).await,
                ));
            }
            Err(e) if adapter.on_error == OnError::Skip => {
                span.in_scope(|| warn!(error = %e, "pre-hook skipped (on_error: skip)"));
                continue;
            }
            Err(e) => return Err(unwind_error(clients, &ran, adapter, e, &caller).await),
        };
        // Powerstrip has no way to change the method; one that differs is refused, as a path
        // change is, rather than silently ignored (the adapter meant something else to run).
        if let Some(asked) = modified.method.clone().filter(|m| *m != method.as_str()) {
            let e = HookError::MethodRewrite {
                adapter: adapter.name.clone(),
                url: adapter.url.to_string(),
                from: method.to_string(),
                to: asked,
            };
            return Err(unwind_error(clients, &ran, adapter, e, &caller).await);
        }
        body_text = modified.body.clone();
        if let Some(rewritten) = modified.request.clone().filter(|r| *r != current_uri) {
            match check_rewrite(chains, adapter, &method, &current_uri, rewritten) {
                Ok(uri) => current_uri = uri,
                Err(e) => return Err(unwind_error(clients, &ran, adapter, e, &caller).await),
            }
        }
        if adapter.protocol >= 2 {
            ran.push(Ran {
                adapter: adapter.clone(),
                given: v2_request(adapter, &given, &parts.headers),
                answered: modified,
            });
        }
    }
    let body = body_text.map(Bytes::from).unwrap_or_default();
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !body.is_empty() && !parts.headers.contains_key(CONTENT_TYPE) {
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.uri = current_uri.parse::<Uri>().map_err(|e| HookError::Body {
        what: Message::Rewrite,
        reason: e.to_string(),
    })?;
    Ok(PreOutcome::Forward {
        req: Request::from_parts(parts, full(body)),
        original: Box::new(original),
        ran,
    })
}

/// A v1 `ClientRequest` with the headers `adapter` may see.
fn v2_request(adapter: &Adapter, r: &ClientRequest, headers: &HeaderMap) -> v2::ClientRequest {
    v2::ClientRequest {
        method: r.method.clone(),
        request: r.request.clone(),
        body: r.body.clone(),
        headers: v2_headers(adapter, headers),
    }
}

/// The response a v2 pre-hook answered with: its status (200 when it gave none), content
/// type and body, and its headers but those that describe the connection or the framing.
fn own_response(answer: v2::Response) -> Response<Body> {
    let body = answer.body.map(Bytes::from).unwrap_or_default();
    let mut rsp = Response::new(full(body.clone()));
    *rsp.status_mut() = answer
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let headers = rsp.headers_mut();
    for (name, values) in &answer.headers {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "upgrade"
                | "te"
                | "trailer"
                | "proxy-connection"
        ) || name.as_str().starts_with("x-busbar-")
        {
            continue;
        }
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    if let Some(ct) = answer
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        headers.insert(CONTENT_TYPE, ct);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    rsp
}

/// `rsp`, answered because of pre-hook `failed`: when it is an error (400 or more), the v2
/// pre-hooks that ran before are told first.
async fn failed_after(
    clients: &AdapterClients,
    ran: &[Ran],
    failed: &Adapter,
    rsp: Response<Body>,
    caller: &Caller<'_>,
) -> Response<Body> {
    if ran.is_empty() || rsp.status().as_u16() < 400 {
        return rsp;
    }
    let (parts, body) = rsp.into_parts();
    // Made here, from whole bodies: already in memory.
    let bytes = collect_limited(body, usize::MAX).await.unwrap_or_default();
    let failure = failure(
        v2::Stage::PreHook,
        Some(failed.name.clone()),
        &parts,
        &bytes,
    );
    unwind(clients, ran, failure, caller).await;
    Response::from_parts(parts, full(bytes))
}

/// `e`, once the v2 pre-hooks that ran before `failed` are told of it.
async fn unwind_error(
    clients: &AdapterClients,
    ran: &[Ran],
    failed: &Adapter,
    e: HookError,
    caller: &Caller<'_>,
) -> HookError {
    if !ran.is_empty() {
        let failure = v2::Failure {
            stage: v2::Stage::PreHook,
            adapter: Some(failed.name.clone()),
            code: e.status().as_u16(),
            content_type: Some("application/json".into()),
            body: Some(serde_json::json!({ "message": e.to_string() }).to_string()),
        };
        unwind(clients, ran, failure, caller).await;
    }
    e
}

/// The largest engine error body an unwind call carries (Docker's errors are a line of JSON);
/// a longer one is passed on whole to the client, and the unwind call gets `Body: null`.
const MAX_FAILURE_BODY: usize = 64 * 1024;

fn failure(
    stage: v2::Stage,
    adapter: Option<String>,
    parts: &http::response::Parts,
    body: &[u8],
) -> v2::Failure {
    v2::Failure {
        stage,
        adapter,
        code: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: std::str::from_utf8(body).ok().map(str::to_owned),
    }
}

/// The engine's response, once the v2 pre-hooks that ran are told when it is an error (400 or
/// more, Docker's refusals and busbar's own 503 for an engine it cannot reach). The error
/// body is read (when small and of known length) to go in the unwind calls, and passed on.
pub async fn engine_failed(
    clients: &AdapterClients,
    ran: &[Ran],
    rsp: Response<Body>,
    caller: &Caller<'_>,
) -> Response<Body> {
    if ran.is_empty() || rsp.status().as_u16() < 400 {
        return rsp;
    }
    let small = rsp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_FAILURE_BODY as u64);
    let (parts, body) = rsp.into_parts();
    let (bytes, body) = if small {
        match collect_limited(body, MAX_FAILURE_BODY).await {
            Ok(bytes) => (Some(bytes.clone()), full(bytes)),
            Err(_) => (None, full(Bytes::new())),
        }
    } else {
        (None, body)
    };
    let mut failure = failure(
        v2::Stage::Engine,
        None,
        &parts,
        bytes.as_deref().unwrap_or(b""),
    );
    if bytes.is_none() {
        failure.body = None;
    }
    unwind(clients, ran, failure, caller).await;
    Response::from_parts(parts, body)
}

/// Tells each pre-hook of `ran`, last first, that the request failed. An unwind call that
/// fails is logged and changes nothing for the client.
async fn unwind(clients: &AdapterClients, ran: &[Ran], failure: v2::Failure, caller: &Caller<'_>) {
    for hook in ran.iter().rev() {
        let span = info_span!("hook", hook.name = %hook.adapter.name, hook.phase = "unwind");
        let payload = v2::UnwindRequest::new(
            hook.given.clone(),
            hook.answered.clone(),
            failure.clone(),
            caller.v2(),
        );
        match clients
            .call(&hook.adapter, &payload, caller, Kind::Unwind, |_| Ok(()))
            .instrument(span.clone())
            .await
        {
            Ok(Reply::Ok(())) => span.in_scope(|| debug!("unwound")),
            Ok(Reply::Refused(r)) => {
                span.in_scope(|| warn!(status = r.status.as_u16(), "unwind call answered an error"))
            }
            Err(e) => span.in_scope(|| warn!(error = %e, "unwind call failed")),
        }
    }
}

/// Runs the post gate and the post-hooks on the engine's response.
pub async fn post(
    chains: &ChainSet,
    clients: &AdapterClients,
    matched: &MatchedChain,
    original: Box<Original>,
    rsp: Response<Body>,
    caller: Caller<'_>,
) -> Result<Response<Body>, HookError> {
    if matched.post.is_empty() {
        return Ok(rsp);
    }
    if let Some(reason) = post_hooks_skipped(&original.request.request, &rsp) {
        debug!(reason, "post-hooks skipped");
        return Ok(rsp);
    }
    let (mut parts, body) = rsp.into_parts();
    let text = read_text(body, chains.max_buffer(), Message::Response).await?;
    let mut current = ServerResponse {
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: text,
        code: parts.status.as_u16(),
    };
    for adapter in &matched.post {
        let span = info_span!("hook", hook.name = %adapter.name, hook.phase = "post");
        let called = if adapter.protocol >= 2 {
            let payload = v2::PostHookRequest::new(
                v2_request(adapter, &original.request, &original.headers),
                v2::ServerResponse {
                    content_type: current.content_type.clone(),
                    body: current.body.clone(),
                    code: current.code,
                    headers: v2_headers(adapter, &parts.headers),
                },
                caller.v2(),
            );
            clients
                .call(
                    adapter,
                    &payload,
                    &caller,
                    Kind::Post,
                    json::<PostHookReply>,
                )
                .instrument(span.clone())
                .await
        } else {
            let payload = PostHookRequest::new(original.request.clone(), current.clone());
            clients
                .call(
                    adapter,
                    &payload,
                    &caller,
                    Kind::Post,
                    json::<PostHookReply>,
                )
                .instrument(span.clone())
                .await
        };
        let reply = match called {
            Ok(Reply::Ok(r)) => r,
            Ok(Reply::Refused(refusal)) => {
                span.in_scope(|| {
                    debug!(
                        status = refusal.status.as_u16(),
                        "post-hook answered an error"
                    )
                });
                return Ok(refusal_response(adapter, refusal));
            }
            Err(e) if adapter.on_error == OnError::Skip => {
                span.in_scope(|| warn!(error = %e, "post-hook skipped (on_error: skip)"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let m = reply.modified_server_response;
        // A key left out (or null) keeps the previous hook's value.
        current = ServerResponse {
            content_type: m.content_type.or(current.content_type),
            body: m.body.unwrap_or(current.body),
            code: m.code.unwrap_or(current.code),
        };
    }
    parts.status = StatusCode::from_u16(current.code).map_err(|_| HookError::BadReply {
        adapter: matched
            .post
            .last()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        url: String::new(),
        reason: format!("Code {} is not an HTTP status", current.code),
    })?;
    match current.content_type.as_deref().map(HeaderValue::from_str) {
        Some(Ok(ct)) => {
            parts.headers.insert(CONTENT_TYPE, ct);
        }
        _ => {
            parts.headers.remove(CONTENT_TYPE);
        }
    }
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(current.body.len()));
    Ok(Response::from_parts(parts, full(current.body)))
}

/// Why the post-hooks do not apply to this response, if they do not.
fn post_hooks_skipped(request: &str, rsp: &Response<Body>) -> Option<&'static str> {
    if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Some("hijacked connection (101)");
    }
    let ct = rsp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("application/vnd.docker.") {
        return Some("raw or multiplexed stream");
    }
    if !(essence.is_empty() || essence == "application/json" || essence.starts_with("text/")) {
        return Some("binary body");
    }
    let (path, query) = match request.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request, None),
    };
    // The request path reached us canonical; a path that does not parse streams untouched.
    match ApiPath::parse(path) {
        Ok(path) => endpoint::must_stream(&path, query),
        Err(_) => Some("a request path that is not canonical"),
    }
}

/// A pre-hook's new `Request`, read as the engine will read it (canonical), if it may stand:
/// the same path with another query, or a path matching exactly the same endpoints. The
/// adapter's own URL path (what powerstrip-flocker answers) is ignored.
fn check_rewrite(
    chains: &ChainSet,
    adapter: &Adapter,
    method: &Method,
    current: &str,
    rewritten: String,
) -> Result<String, HookError> {
    // Paths only: a query may hold a secret, and only the path change is refused.
    let refused = |to: String| HookError::PathRewrite {
        adapter: adapter.name.clone(),
        url: adapter.url.to_string(),
        from: strip_query(current).to_string(),
        to: strip_query(&to).to_string(),
    };
    let (raw_path, query) = match rewritten.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rewritten.as_str(), None),
    };
    // The new query must be one the engine reads as the hook's authors read it.
    if query.is_some_and(|q| busbar_api::query::check(q).is_err()) {
        return Err(refused(rewritten));
    }
    let canonical = match canonical_target(raw_path, query) {
        Ok(Some(target)) => target,
        Ok(None) => rewritten.clone(),
        Err(_) if raw_path == adapter.url.path() => return Ok(current.to_string()),
        Err(_) => return Err(refused(rewritten)),
    };
    if strip_query(current) == strip_query(&canonical)
        || chains.matches_same_endpoints(method, current, &canonical)
    {
        return Ok(canonical);
    }
    if raw_path == adapter.url.path() {
        debug!(
            path = raw_path,
            "ignoring Request: it is the adapter's own URL (as powerstrip-flocker answers)"
        );
        return Ok(current.to_string());
    }
    Err(refused(rewritten))
}

/// The body as the engine will decode it (see [`busbar_api::body`]): what every hook sees and
/// the engine gets, so that no spelling of a field (`hostconfig`, `PRIVILEGED`, top-level host
/// fields, a field given twice) says one thing to an adapter and another to the engine.
fn as_the_engine_reads(method: &Method, path: &str, text: String) -> Result<String, HookError> {
    let Ok(path) = ApiPath::parse(path) else {
        return Ok(text);
    };
    match busbar_api::body::canonical(method, &path, text.as_bytes()) {
        Ok(None) => Ok(text),
        Ok(Some(canonical)) => {
            debug!("request body respelled as the engine reads it");
            Ok(String::from_utf8(canonical).expect("serde_json writes UTF-8"))
        }
        Err(e) => Err(HookError::Body {
            what: Message::Request,
            reason: e.to_string(),
        }),
    }
}

/// Reads a whole body as UTF-8 text, within `limit` bytes.
async fn read_text(body: Body, limit: u64, what: Message) -> Result<String, HookError> {
    if let Some(len) = body.size_hint().exact().filter(|n| *n > limit) {
        return Err(HookError::TooLarge {
            what,
            limit,
            size: Some(len),
        });
    }
    let bytes = match collect_limited(body, limit as usize).await {
        Ok(b) => b.to_vec(),
        Err(CollectError::TooLarge { .. }) => {
            return Err(HookError::TooLarge {
                what,
                limit,
                size: None,
            })
        }
        Err(CollectError::Broken(e)) => {
            return Err(HookError::Body {
                what,
                reason: e.to_string(),
            })
        }
    };
    String::from_utf8(bytes).map_err(|_| HookError::Body {
        what,
        reason: "not UTF-8 text".into(),
    })
}

fn is_json(ct: Option<&HeaderValue>) -> bool {
    ct.and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into())
}

/// An adapter's refusal as the client gets it: its status always; its body unchanged when it
/// is a Docker error (a JSON object with a `message` string), which the CLI prints; anything
/// else (empty, HTML, plain text) wrapped as one, naming the adapter (see [`readable`]).
fn refusal_response(adapter: &Adapter, r: Refusal) -> Response<Body> {
    let (content_type, body) = match readable(&adapter.name, r.status, &r.body) {
        None => (r.content_type, r.body),
        Some(wrapped) => (
            Some(http::HeaderValue::from_static("application/json")),
            wrapped,
        ),
    };
    let mut rsp = Response::builder()
        .status(r.status)
        .header(CONTENT_LENGTH, body.len());
    if let Some(ct) = content_type {
        rsp = rsp.header(CONTENT_TYPE, ct);
    }
    rsp.body(full(body))
        .expect("a status, valid headers and a body make a response")
}

/// `None` when `body` is already a Docker error; else `{"message": "adapter NAME refused: 403
/// Forbidden (FIRST LINE)"}`, the first line of text in the body (an HTML page's tags
/// dropped), at most 200 characters.
fn readable(adapter: &str, status: http::StatusCode, body: &[u8]) -> Option<Bytes> {
    let is_docker_error = serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("message").is_some_and(serde_json::Value::is_string));
    if is_docker_error {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let text = if text.trim_start().starts_with('<') {
        strip_tags(&text)
    } else {
        text.into_owned()
    };
    let first: String = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let mut message = format!("adapter {adapter} refused: {status}");
    if !first.is_empty() {
        message.push_str(&format!(" ({first})"));
    }
    Some(Bytes::from(
        serde_json::json!({ "message": message }).to_string(),
    ))
}

/// The text of an HTML page, tags (and `<head>`, `<script>` and `<style>` contents) dropped,
/// one line per block.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    while let Some(open) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&rest[..open]);
        }
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = rest[open + 1..open + close].to_ascii_lowercase();
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("");
        match skip_until {
            Some(end) if tag.starts_with('/') && name == end => skip_until = None,
            Some(_) => {}
            None if !tag.starts_with('/') && matches!(name, "head" | "script" | "style") => {
                skip_until = Some(match name {
                    "head" => "head",
                    "script" => "script",
                    _ => "style",
                })
            }
            None => out.push('\n'),
        }
        rest = &rest[open + close + 1..];
    }
    if skip_until.is_none() {
        out.push_str(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::readable;
    use http::StatusCode;

    fn message(body: &[u8], status: StatusCode) -> Option<String> {
        readable("authz", status, body).map(|b| {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            v["message"].as_str().unwrap().to_owned()
        })
    }

    #[test]
    fn a_docker_error_passes_unchanged() {
        assert_eq!(
            message(br#"{"message":"no privileged"}"#, StatusCode::FORBIDDEN),
            None
        );
    }

    #[test]
    fn anything_else_becomes_one_readable_line() {
        assert_eq!(
            message(b"", StatusCode::FORBIDDEN).unwrap(),
            "adapter authz refused: 403 Forbidden"
        );
        assert_eq!(
            message(b"nope\nmore", StatusCode::FORBIDDEN).unwrap(),
            "adapter authz refused: 403 Forbidden (nope)"
        );
        assert_eq!(
            message(br#"{"error":"x"}"#, StatusCode::BAD_REQUEST).unwrap(),
            r#"adapter authz refused: 400 Bad Request ({"error":"x"})"#
        );
        let werkzeug = b"<!doctype html>\n<html lang=en>\n<head><title>500 Internal Server Error</title></head>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error.</p>\n";
        assert_eq!(
            message(werkzeug, StatusCode::INTERNAL_SERVER_ERROR).unwrap(),
            "adapter authz refused: 500 Internal Server Error (Internal Server Error)"
        );
        let long = "x".repeat(1000);
        assert!(
            message(long.as_bytes(), StatusCode::FORBIDDEN)
                .unwrap()
                .len()
                < 260
        );
    }
}
