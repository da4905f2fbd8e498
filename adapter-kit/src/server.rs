//! Serves an [`Adapter`] over HTTP/1.1, as busbar's agents (and Powerstrip) call adapters:
//! `POST` of a JSON document whose `Type` says the phase, on any path.
//!
//! An adapter of a cluster answers every agent, so it defends itself: a body larger than
//! [`Options::max_body`] is a 413, one that does not arrive within [`Options::read_timeout`]
//! a 408, a document that is not a hook call a 400 naming what is wrong. On shutdown, calls
//! in flight finish (within [`Options::grace`]) and no new one starts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use busbar_protocol::v1::{
    PostHookReply, PostHookRequest, PreHookReply, PreHookRequest, PROTOCOL_VERSION,
};
use busbar_protocol::v2;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info_span, warn, Instrument};

use crate::hook::{Adapter, Call, Context, Refusal};

/// How the server defends itself and stops.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest hook call accepted (the client's or the engine's body is inside it).
    pub max_body: usize,
    /// How long a call may take to arrive, head and body.
    pub read_timeout: Duration,
    /// Cancelled: stop accepting, let calls in flight finish.
    pub shutdown: CancellationToken,
    /// How long calls in flight may take to finish after `shutdown`.
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body: 16 << 20,
            read_timeout: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Serves `adapter` on `listener` until `options.shutdown` is cancelled.
pub async fn serve<A: Adapter>(listener: TcpListener, adapter: A, options: Options) {
    let adapter = Arc::new(adapter);
    let options = Arc::new(options);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = options.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let adapter = adapter.clone();
        let options = options.clone();
        connections.spawn(async move {
            let service = service_fn(|req| {
                let adapter = adapter.clone();
                let options = options.clone();
                async move { Ok::<_, Infallible>(handle(&*adapter, req, &options).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(options.read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = options.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(options.grace, conn).await;
                }
            }
        });
        // Reap the connections that ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// One hook call.
async fn handle<A: Adapter>(
    adapter: &A,
    req: Request<Incoming>,
    options: &Options,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            "an adapter takes POSTed hook calls",
        );
    }
    let context = Context::from_headers(req.headers());
    let span = info_span!(
        "hook",
        request_id = context.request_id.as_deref().unwrap_or(""),
        node = context.node.as_ref().map(|n| n.name.as_str()).unwrap_or(""),
        trace_id = field::Empty,
    );
    if let Some(trace) = &context.trace {
        span.record("trace_id", field::display(trace.trace_id));
    }
    span.in_scope(|| debug!(uri = %req.uri(), "hook call"));
    async move {
        let body = Limited::new(req.into_body(), options.max_body);
        let bytes = match tokio::time::timeout(options.read_timeout, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("hook call larger than {} bytes", options.max_body),
                )
            }
            Ok(Err(e)) => {
                return message(StatusCode::BAD_REQUEST, &format!("reading the call: {e}"))
            }
            Err(_) => {
                return message(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the call did not arrive within {:?}", options.read_timeout),
                )
            }
        };
        match parse(&bytes) {
            Ok(Parsed::Pre(request)) => {
                answer(adapter.pre_hook(Call { request, context }).await, |m| {
                    PreHookReply {
                        protocol_version: Some(PROTOCOL_VERSION.into()),
                        modified_client_request: m,
                    }
                })
            }
            Ok(Parsed::Post(request)) => {
                answer(adapter.post_hook(Call { request, context }).await, |m| {
                    PostHookReply {
                        protocol_version: Some(PROTOCOL_VERSION.into()),
                        modified_server_response: m,
                    }
                })
            }
            Ok(Parsed::PreV2(request)) => {
                answer(adapter.pre_hook_v2(Call { request, context }).await, |m| m)
            }
            Ok(Parsed::PostV2(request)) => {
                answer(adapter.post_hook_v2(Call { request, context }).await, |m| {
                    PostHookReply {
                        protocol_version: Some(v2::PROTOCOL_VERSION.into()),
                        modified_server_response: m,
                    }
                })
            }
            Ok(Parsed::Unwind(request)) => {
                adapter.unwind(Call { request, context }).await;
                respond(StatusCode::OK, b"{}".to_vec())
            }
            Err(why) => message(StatusCode::BAD_REQUEST, &why),
        }
    }
    .instrument(span)
    .await
}

enum Parsed {
    Pre(PreHookRequest),
    Post(PostHookRequest),
    PreV2(v2::PreHookRequest),
    PostV2(v2::PostHookRequest),
    Unwind(v2::UnwindRequest),
}

/// A hook call's document, or why it is not one. `PowerstripProtocolVersion` says which
/// protocol (1 when absent).
fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    use v2::HookType;
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the call is not JSON: {e}"))?;
    let kind: HookType = serde_json::from_value(doc.get("Type").cloned().unwrap_or(Value::Null))
        .map_err(|_| "Type must be \"pre-hook\", \"post-hook\" or \"unwind\"".to_owned())?;
    let version = doc
        .get("PowerstripProtocolVersion")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let invalid = |e: serde_json::Error| format!("not a valid {kind:?} call: {e}");
    Ok(match (kind, version >= 2) {
        (HookType::Pre, false) => Parsed::Pre(serde_json::from_value(doc).map_err(invalid)?),
        (HookType::Post, false) => Parsed::Post(serde_json::from_value(doc).map_err(invalid)?),
        (HookType::Pre, true) => Parsed::PreV2(serde_json::from_value(doc).map_err(invalid)?),
        (HookType::Post, true) => Parsed::PostV2(serde_json::from_value(doc).map_err(invalid)?),
        (HookType::Unwind, _) => Parsed::Unwind(serde_json::from_value(doc).map_err(invalid)?),
    })
}

fn answer<M, R: Serialize>(
    result: Result<M, Refusal>,
    reply: impl FnOnce(M) -> R,
) -> Response<Full<Bytes>> {
    match result {
        Ok(m) => {
            let body = serde_json::to_vec(&reply(m)).expect("replies always serialize");
            respond(StatusCode::OK, body)
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            debug!(status = status.as_u16(), message = %refusal.message, "refused");
            message(status, &refusal.message)
        }
    }
}

/// `{"message": ...}` with `status`, as Docker words its errors.
fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    respond(status, json!({ "message": text }).to_string().into_bytes())
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_that_are_not_hook_calls_say_why() {
        let err = |b: &[u8]| parse(b).err().unwrap();
        assert!(err(b"<html>").contains("not JSON"));
        assert!(err(br#"{"Type":"mid-hook"}"#).contains("pre-hook"));
        assert!(err(br#"{"Type":"pre-hook"}"#).contains("ClientRequest"));
        assert!(matches!(
            parse(br#"{"Type":"pre-hook","ClientRequest":{"Method":"GET","Request":"/_ping","Body":null}}"#),
            Ok(Parsed::Pre(_))
        ));
    }

    #[test]
    fn the_protocol_version_picks_the_call_type() {
        let pre2 = br#"{"PowerstripProtocolVersion":2,"Type":"pre-hook","ClientRequest":{"Method":"GET","Request":"/_ping","Body":null,"Headers":{}},"Caller":{"RequestId":"r","Node":null,"Client":null}}"#;
        assert!(matches!(parse(pre2), Ok(Parsed::PreV2(_))));
        let unwind = br#"{"PowerstripProtocolVersion":2,"Type":"unwind","ClientRequest":{"Method":"POST","Request":"/containers/create","Body":"{}"},"ModifiedClientRequest":{"Body":"{}"},"Failure":{"Stage":"engine","Adapter":null,"Code":409,"ContentType":null,"Body":null}}"#;
        assert!(matches!(parse(unwind), Ok(Parsed::Unwind(_))));
        let err = parse(br#"{"PowerstripProtocolVersion":2,"Type":"unwind"}"#)
            .err()
            .unwrap();
        assert!(err.contains("ClientRequest"), "{err}");
    }
}
