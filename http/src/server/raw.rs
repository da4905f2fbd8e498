//! Attach and exec start for clients that hijack without asking for an upgrade.
//!
//! Such a client sends a plain `POST .../attach` and, once the engine answers
//! `200 OK` + `Content-Type: application/vnd.docker.raw-stream`, treats the connection as a raw
//! two-way stream. We send the engine the upgrade form instead (it answers `101`, which our
//! HTTP client can hand over), write the client the `200` the engine would have written, and
//! splice. Any other answer (an error, or a detached exec start) is written back as a normal
//! response and the connection is closed.
//!
//! Only the first request of a connection is served this way (the server looks at that one
//! before hyper takes over); Docker clients open a fresh connection for every hijack.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, Instrument};

use super::{admit, canonicalize, Handler};
use crate::body::full;
use crate::headers::ensure_upgrade_headers;
use crate::hijack::{splice, Hijacked};
use crate::io::{Prefixed, Stream};
use crate::{access, error, Body, ClientIdentity, RequestCtx};

/// The body of an attach/exec start is a small JSON document; more is refused.
const MAX_BODY: usize = 1024 * 1024;

/// Serves the hijack request whose complete head (and maybe more) is in `buf`, from a client
/// whose verified identity (if any) is `identity`.
pub async fn serve(
    mut io: Stream,
    buf: Bytes,
    handler: Arc<dyn Handler>,
    identity: Option<Arc<ClientIdentity>>,
) {
    let (mut req, rest) = match read_request(&mut io, buf).await {
        Ok(parsed) => parsed,
        Err(Refused(status, msg)) => {
            return write_response(&mut io, error::message(status, &msg)).await
        }
    };
    if let Err(e) = canonicalize(&mut req) {
        return write_response(&mut io, error::error(&e)).await;
    }
    let mut ctx = RequestCtx::new(&req);
    admit(&mut req, &mut ctx, identity);
    async {
        let mut rsp = handler.handle(req, &ctx).await;
        if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return write_response(&mut io, access::logged(rsp, &ctx)).await;
        }
        let content_type = rsp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static(
                "application/vnd.docker.raw-stream",
            ));
        let Some(upstream) = Hijacked::take(&mut rsp) else {
            return debug!("upstream switched protocols but gave no stream");
        };
        let upstream = match upstream.await {
            Ok(up) => up,
            Err(e) => return debug!(error = %e, "upstream upgrade failed"),
        };
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: ".to_vec();
        head.extend_from_slice(content_type.as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        if let Err(e) = io.write_all(&head).await {
            return debug!(error = %e, "client went away");
        }
        match splice(Prefixed::new(rest, io), upstream).await {
            Ok(n) => {
                debug!(
                    to_engine = n.to_engine,
                    to_client = n.to_client,
                    "hijacked stream closed"
                );
                access::log(&ctx, 200, n.to_client);
            }
            Err(e) => {
                debug!(error = %e, "hijacked stream broke");
                access::log(&ctx, 200, 0);
            }
        }
    }
    .instrument(ctx.span.clone())
    .await
}

/// Parses the head in `buf`, reads the body (Content-Length only), and returns the request
/// (asking the engine for an upgrade) plus any bytes the client sent after it.
async fn read_request(io: &mut Stream, mut buf: Bytes) -> Result<(Request<Body>, Bytes), Refused> {
    let (builder, head_len, body_len) = parse_head(&buf)?;
    let mut rest = buf.split_off(head_len);
    let mut body = Vec::with_capacity(body_len);
    let from_buf = rest.len().min(body_len);
    body.extend_from_slice(&rest.split_to(from_buf));
    if body.len() < body_len {
        let mut tail = vec![0; body_len - body.len()];
        io.read_exact(&mut tail)
            .await
            .map_err(|_| bad_request("request body cut short"))?;
        body.extend_from_slice(&tail);
    }
    let mut req = builder
        .body(full(body))
        .map_err(|e| bad_request(&format!("invalid request: {e}")))?;
    ensure_upgrade_headers(req.headers_mut());
    Ok((req, rest))
}

/// The request head in `buf` as a request builder, with the head's and the body's lengths.
/// Synchronous because httparse borrows the buffer.
fn parse_head(buf: &[u8]) -> Result<(http::request::Builder, usize, usize), Refused> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(bad_request("malformed request head")),
    };
    let mut builder = Request::builder()
        .method(parsed.method.unwrap_or("POST"))
        .uri(parsed.path.unwrap_or("/"));
    let mut body_len = 0usize;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad_request(
                "a hijacked call must send its body with Content-Length",
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad_request("invalid Content-Length"))?;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad_request("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| bad_request("invalid header value"))?;
        builder = builder.header(name, value);
    }
    if body_len > MAX_BODY {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "attach/exec start body over 1 MiB".into(),
        ));
    }
    Ok((builder, head_len, body_len))
}

/// A request we answer ourselves, with this status and message.
struct Refused(StatusCode, String);

fn bad_request(msg: &str) -> Refused {
    Refused(StatusCode::BAD_REQUEST, msg.to_owned())
}

/// Writes a whole (non-hijacked) response and closes the connection. Such answers to an
/// attach or exec start are small: an error document, or nothing for a detached exec.
async fn write_response<W: AsyncWrite + Unpin>(io: &mut W, rsp: Response<Body>) {
    let (parts, body) = rsp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return debug!(error = %e, "engine body failed"),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != http::header::CONTENT_LENGTH)
    {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    if io.write_all(&out).await.is_ok() {
        let _ = io.shutdown().await;
    }
}
