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
//! An adapter that cannot be reached, times out or answers something that is not Powerstrip
//! JSON fails the request with a [`HookError`] naming it (502, or 504 for a timeout), unless
//! the adapter says `on_error: skip`, in which case the chain goes on without it.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use tracing::{debug, info_span, warn, Instrument};

use busbar_api::path::{canonical_target, strip_query};
use busbar_api::{endpoint, ApiPath};
use busbar_chains::{Adapter, ChainSet, MatchedChain, OnError};
use busbar_http::body::{collect_limited, full, CollectError};
use busbar_http::Body;
use busbar_protocol::v1::{
    ClientRequest, PostHookReply, PostHookRequest, PreHookReply, PreHookRequest, ServerResponse,
};

use super::adapter::{AdapterClients, Caller, HookError, Message, Refusal, Reply};

/// What a chain produced before (or instead of) the engine call.
pub enum PreOutcome {
    /// Forward this request to the engine.
    Forward {
        req: Request<Body>,
        original: ClientRequest,
    },
    /// A pre-hook refused: answer with this, the engine is never called.
    Respond(Response<Body>),
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
        let original = ClientRequest {
            method: method.to_string(),
            request: uri,
            body: None,
        };
        return Ok(PreOutcome::Forward { req, original });
    }
    let (mut parts, body) = req.into_parts();
    let mut body_text = if no_body {
        None
    } else {
        Some(read_text(body, chains.max_buffer(), Message::Request).await?)
    };
    let original = ClientRequest {
        method: method.to_string(),
        request: uri.clone(),
        body: body_text.clone(),
    };
    let mut current_uri = uri;
    for adapter in &matched.pre {
        let span = info_span!("hook", hook.name = %adapter.name, hook.phase = "pre");
        let payload = PreHookRequest::new(ClientRequest {
            method: method.to_string(),
            request: current_uri.clone(),
            body: body_text.clone(),
        });
        let reply = match clients
            .call::<_, PreHookReply>(adapter, &payload, &caller)
            .instrument(span.clone())
            .await
        {
            Ok(Reply::Ok(r)) => r,
            Ok(Reply::Refused(refusal)) => {
                span.in_scope(|| {
                    debug!(
                        status = refusal.status.as_u16(),
                        "pre-hook refused the request"
                    )
                });
                return Ok(PreOutcome::Respond(refusal_response(refusal)));
            }
            Err(e) if adapter.on_error == OnError::Skip => {
                span.in_scope(|| warn!(error = %e, "pre-hook skipped (on_error: skip)"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let modified = reply.modified_client_request;
        // Powerstrip has no way to change the method; one that differs is refused, as a path
        // change is, rather than silently ignored (the adapter meant something else to run).
        if let Some(asked) = modified.method.filter(|m| *m != method.as_str()) {
            return Err(HookError::MethodRewrite {
                adapter: adapter.name.clone(),
                url: adapter.url.to_string(),
                from: method.to_string(),
                to: asked,
            });
        }
        body_text = modified.body;
        if let Some(rewritten) = modified.request.filter(|r| *r != current_uri) {
            current_uri = check_rewrite(chains, adapter, &method, &current_uri, rewritten)?;
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
        original,
    })
}

/// Runs the post gate and the post-hooks on the engine's response.
pub async fn post(
    chains: &ChainSet,
    clients: &AdapterClients,
    matched: &MatchedChain,
    original: ClientRequest,
    rsp: Response<Body>,
    caller: Caller<'_>,
) -> Result<Response<Body>, HookError> {
    if matched.post.is_empty() {
        return Ok(rsp);
    }
    if let Some(reason) = post_hooks_skipped(&original.request, &rsp) {
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
        let payload = PostHookRequest::new(original.clone(), current.clone());
        let reply = match clients
            .call::<_, PostHookReply>(adapter, &payload, &caller)
            .instrument(span.clone())
            .await
        {
            Ok(Reply::Ok(r)) => r,
            Ok(Reply::Refused(refusal)) => {
                span.in_scope(|| {
                    debug!(
                        status = refusal.status.as_u16(),
                        "post-hook answered an error"
                    )
                });
                return Ok(refusal_response(refusal));
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

fn refusal_response(r: Refusal) -> Response<Body> {
    let mut rsp = Response::builder()
        .status(r.status)
        .header(CONTENT_LENGTH, r.body.len());
    if let Some(ct) = r.content_type {
        rsp = rsp.header(CONTENT_TYPE, ct);
    }
    rsp.body(full(r.body))
        .expect("a status, valid headers and a body make a response")
}
