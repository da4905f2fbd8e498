//! [`RawClient`]: HTTP/1.1 as bytes on a TCP connection, for what a client library would not
//! send (odd request targets, exact framing) and for hijacked streams (bytes both ways, and a
//! write shutdown for the client's EOF).
//!
//! Every read is bounded ([`crate::LIMIT`] unless [`RawClient::set_limit`] says otherwise): a
//! test fails with what it was waiting for, never hangs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::LIMIT;

/// A response head as read from the wire.
#[derive(Debug, Clone)]
pub struct RawHead {
    pub status: u16,
    pub reason: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The head's bytes, status line to the empty line included.
    pub raw: Bytes,
}

impl RawHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub head: RawHead,
    /// The body, de-chunked.
    pub body: Bytes,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {} {:?}",
                self.head.status,
                self.text()
            )
        })
    }

    /// Docker's error message (`{"message": ...}`), or the whole body when it is not one.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.text())
    }
}

/// The bytes of a request: `METHOD TARGET HTTP/1.1`, `Host`, the headers given, a
/// `Content-Length` when there is a body, and the body.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: docker\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || ["POST", "PUT", "PATCH"].contains(&method) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A `POST` with a JSON body, as the docker CLI sends it.
pub fn post_json(target: &str, body: &serde_json::Value) -> Vec<u8> {
    request(
        "POST",
        target,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Connects to `addr`, sends `bytes`, reads one whole response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut c = RawClient::connect(addr).await;
    c.send(bytes).await;
    c.read_response().await
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `addr` over TLS as `server_name` with `tls` (a Docker client's settings, e.g.
/// [`crate::TestPki::docker_client`]), sends `bytes`, reads one whole response.
pub async fn tls_exchange(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
    bytes: &[u8],
) -> RawResponse {
    let mut c = RawClient::connect_tls(addr, tls, server_name)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr}: {e}"));
    c.send(bytes).await;
    c.read_response().await
}

/// Why a TLS server refuses this client: it connects, sends a `GET /_ping` and reads; the
/// error of whichever step failed (with TLS 1.3 a refused client certificate shows on the
/// first read, as an alert). Panics if the server answered.
pub async fn tls_refusal(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> String {
    let attempt = async {
        let mut c = RawClient::connect_tls(addr, tls, server_name).await?;
        c.stream
            .write_all(&request("GET", "/_ping", &[], b""))
            .await?;
        let mut byte = [0u8; 1];
        match c.stream.read(&mut byte).await? {
            0 => Err(std::io::Error::other("closed without an answer")),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(LIMIT, attempt).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the server answered a client it should have refused"),
        Err(_) => panic!("neither an answer nor a refusal within {LIMIT:?}"),
    }
}

/// One client connection; see the [module docs](self).
pub struct RawClient {
    stream: Box<dyn Io>,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    limit: Duration,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawClient {
            stream: Box::new(stream),
            buf: BytesMut::new(),
            limit: LIMIT,
        }
    }

    /// Connects over TLS as `server_name`; the handshake's error, if it fails on our side.
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> std::io::Result<RawClient> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(std::io::Error::other)?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        Ok(RawClient {
            stream: Box::new(stream),
            buf: BytesMut::new(),
            limit: LIMIT,
        })
    }

    /// How long each read may wait (a test on paused time sets more than what it waits for).
    pub fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("write to the server: {e}"));
    }

    /// Shuts the write side down: the server reads EOF (the client's half-close).
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
    }

    /// Reads more bytes into the buffer; `false` at EOF.
    async fn fill(&mut self, what: &str) -> bool {
        match tokio::time::timeout(self.limit, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(e)) => panic!("{what}: read failed: {e}"),
            Err(_) => panic!(
                "{what}: nothing within {:?} (have {:?})",
                self.limit,
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads a response head; what follows it stays buffered.
    pub async fn read_head(&mut self) -> RawHead {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut rsp = httparse::Response::new(&mut headers);
            match rsp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = RawHead {
                        status: rsp.code.unwrap_or(0),
                        reason: rsp.reason.unwrap_or("").to_owned(),
                        headers: rsp
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        raw: Bytes::copy_from_slice(&self.buf[..n]),
                    };
                    self.buf.advance(n);
                    return head;
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => panic!(
                    "not an HTTP response head ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            if !self.fill("response head").await {
                panic!(
                    "the connection closed before a response head (got {:?})",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Reads a whole response: head, then the body by `Content-Length`, chunked, or to EOF.
    pub async fn read_response(&mut self) -> RawResponse {
        let head = self.read_head().await;
        let body = if head.status == 101
            || head.status == 204
            || head.status == 304
            || (100..200).contains(&head.status)
        {
            Bytes::new()
        } else if head
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let mut body = BytesMut::new();
            while let Some(chunk) = self.read_chunk().await {
                body.extend_from_slice(&chunk);
            }
            body.freeze()
        } else if let Some(len) = head.header("content-length") {
            let len: usize = len.trim().parse().expect("a numeric Content-Length");
            self.read_exact(len).await
        } else {
            self.read_to_end().await
        };
        RawResponse { head, body }
    }

    /// The next chunk of a chunked body; `None` after the last (empty) chunk.
    pub async fn read_chunk(&mut self) -> Option<Bytes> {
        let line = self.read_line().await;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            // Trailers (none expected), up to the empty line.
            while !self.read_line().await.is_empty() {}
            return None;
        }
        let data = self.read_exact(size).await;
        let crlf = self.read_exact(2).await;
        assert_eq!(&crlf[..], b"\r\n", "a chunk must end with CRLF");
        Some(data)
    }

    async fn read_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.advance(i + 2);
                return line;
            }
            if !self.fill("a line").await {
                panic!("the connection closed in the middle of a chunked body");
            }
        }
    }

    /// Exactly `n` bytes (panics on an early EOF).
    pub async fn read_exact(&mut self, n: usize) -> Bytes {
        while self.buf.len() < n {
            if !self.fill(&format!("{n} bytes")).await {
                panic!(
                    "the connection closed after {} of {n} bytes",
                    self.buf.len()
                );
            }
        }
        self.buf.split_to(n).freeze()
    }

    /// Whatever bytes come next (at least one; empty at EOF).
    pub async fn read_some(&mut self) -> Bytes {
        if self.buf.is_empty() {
            self.fill("more bytes").await;
        }
        self.buf.split().freeze()
    }

    /// Everything up to EOF.
    pub async fn read_to_end(&mut self) -> Bytes {
        while self.fill("the end of the stream").await {}
        self.buf.split().freeze()
    }
}
