//! A minimal, blocking HTTP/1.1 client for the benchmark: GET only, one persistent connection,
//! over a unix socket or TCP.
//!
//! It is deliberately tiny so that its own cost (a few µs per request) is the same for every
//! target and small next to what is measured: no pool, no async runtime, one `write` per
//! request, and a response parser that reads the head line by line and the body by
//! `Content-Length`, `chunked` or end of stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long one read or write may block before the request fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read buffer: large, so that a big body is read in few system calls.
const BUFFER: usize = 256 * 1024;

/// Where a target serves the Docker API.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

impl Endpoint {
    fn connect(&self, timeout: Duration) -> Result<Stream> {
        let stream = match self {
            Endpoint::Unix(path) => {
                let s =
                    UnixStream::connect(path).with_context(|| format!("connecting to {self}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Stream::Unix(s)
            }
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)
                    .with_context(|| format!("connecting to {self}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Stream::Tcp(s)
            }
        };
        Ok(stream)
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response's status line and the headers that matter here.
#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

/// One persistent (keep-alive) connection to an endpoint. It reconnects only if the server
/// closes it, and counts how often that happened.
pub struct Conn {
    endpoint: Endpoint,
    reader: Option<BufReader<Stream>>,
    /// Connections opened after the first one.
    pub reconnects: u32,
    opened: u32,
}

impl Conn {
    pub fn new(endpoint: Endpoint) -> Conn {
        Conn {
            endpoint,
            reader: None,
            reconnects: 0,
            opened: 0,
        }
    }

    /// `GET path`; returns the status and the whole body.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        let mut body = Vec::new();
        let (status, _) = self.get_with(path, |bytes| {
            body.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok((status, body))
    }

    /// `GET path`, handing the body to `sink` piece by piece as it arrives (an error from it
    /// aborts the request); returns the status and the number of body bytes.
    pub fn get_with(
        &mut self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(u16, u64)> {
        let head = self
            .send(path)
            .with_context(|| format!("GET {path} from {}", self.endpoint))?;
        let reader = self.reader.as_mut().expect("send leaves a connection");
        let n = match read_body(reader, head.framing, &mut sink) {
            Ok(n) => n,
            Err(e) => {
                self.reader = None;
                return Err(e.context(format!(
                    "reading the body of GET {path} from {}",
                    self.endpoint
                )));
            }
        };
        if head.close || head.framing == Framing::UntilClose {
            self.reader = None;
        }
        Ok((head.status, n))
    }

    /// Writes the request and reads the response head. A connection that was already used and
    /// fails before any response byte (the server closed it while idle) is replaced once.
    fn send(&mut self, path: &str) -> Result<Head> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: busbar-bench\r\n\r\n");
        let reused = self.reader.is_some();
        match self.try_send(&request) {
            Ok(head) => Ok(head),
            Err(_) if reused => {
                self.reader = None;
                self.try_send(&request)
            }
            Err(e) => Err(e),
        }
    }

    fn try_send(&mut self, request: &str) -> Result<Head> {
        if self.reader.is_none() {
            let stream = self.endpoint.connect(Duration::from_secs(5))?;
            self.reader = Some(BufReader::with_capacity(BUFFER, stream));
            if self.opened > 0 {
                self.reconnects += 1;
            }
            self.opened += 1;
        }
        let reader = self.reader.as_mut().expect("connected above");
        let result = reader
            .get_mut()
            .write_all(request.as_bytes())
            .context("sending the request");
        let result = result.and_then(|_| read_head(reader));
        if result.is_err() {
            self.reader = None;
        }
        result
    }
}

/// Reads the status line and headers, skipping interim (1xx) responses.
fn read_head(reader: &mut impl BufRead) -> Result<Head> {
    loop {
        let mut line = Vec::new();
        let mut total = 0;
        read_line(reader, &mut line, &mut total)?;
        let status = parse_status(&line)?;
        let mut framing = if matches!(status, 204 | 304) {
            Framing::Empty
        } else {
            Framing::UntilClose
        };
        let mut close = false;
        loop {
            read_line(reader, &mut line, &mut total)?;
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let Some((name, value)) = text.split_once(':') else {
                bail!("malformed header line {text:?}")
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" if framing != Framing::Empty && framing != Framing::Chunked => {
                    framing = Framing::Length(
                        value
                            .parse()
                            .with_context(|| format!("Content-Length {value:?}"))?,
                    );
                }
                "transfer-encoding" if value.to_ascii_lowercase().contains("chunked") => {
                    framing = Framing::Chunked
                }
                "connection" if value.eq_ignore_ascii_case("close") => close = true,
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        return Ok(Head {
            status,
            framing,
            close,
        });
    }
}

fn parse_status(line: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse()
            .with_context(|| format!("status line {text:?}")),
        _ => bail!("not an HTTP/1.x status line: {text:?}"),
    }
}

/// Reads one CRLF-terminated line into `line` (without the line end), failing at end of
/// stream or when the head grows past [`MAX_HEAD`].
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, total: &mut usize) -> Result<()> {
    line.clear();
    let n = reader
        .read_until(b'\n', line)
        .context("reading the response")?;
    if n == 0 {
        bail!("the server closed the connection before a complete response head");
    }
    *total += n;
    if *total > MAX_HEAD {
        bail!("response head larger than {MAX_HEAD} bytes");
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(())
}

fn read_body(
    reader: &mut impl BufRead,
    framing: Framing,
    sink: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    match framing {
        Framing::Empty => Ok(0),
        Framing::Length(n) => copy_exact(reader, n, sink),
        Framing::UntilClose => copy_to_end(reader, sink),
        Framing::Chunked => read_chunked(reader, sink),
    }
}

fn read_chunked(
    reader: &mut impl BufRead,
    sink: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut line = Vec::new();
    let mut body = 0;
    loop {
        let mut total = 0;
        read_line(reader, &mut line, &mut total)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or("").trim();
        let size =
            u64::from_str_radix(size, 16).with_context(|| format!("chunk size line {text:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                read_line(reader, &mut line, &mut total)?;
                if line.is_empty() {
                    return Ok(body);
                }
            }
        }
        body += copy_exact(reader, size, sink)?;
        read_line(reader, &mut line, &mut total)?;
        if !line.is_empty() {
            bail!("chunk not followed by CRLF");
        }
    }
}

fn copy_exact(
    reader: &mut impl BufRead,
    n: u64,
    sink: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut left = n;
    while left > 0 {
        let buf = reader.fill_buf().context("reading the body")?;
        if buf.is_empty() {
            bail!("the body ended {left} bytes early");
        }
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink(&buf[..take])?;
        reader.consume(take);
        left -= take as u64;
    }
    Ok(n)
}

fn copy_to_end(
    reader: &mut impl BufRead,
    sink: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut n = 0;
    loop {
        let buf = reader.fill_buf().context("reading the body")?;
        if buf.is_empty() {
            return Ok(n);
        }
        let len = buf.len();
        sink(buf)?;
        reader.consume(len);
        n += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (Head, Vec<u8>) {
        let mut reader = BufReader::new(raw.as_bytes());
        let head = read_head(&mut reader).unwrap();
        let mut body = Vec::new();
        read_body(&mut reader, head.framing, &mut |b: &[u8]| {
            body.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        (head, body)
    }

    #[test]
    fn content_length() {
        let (head, body) = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOKextra");
        assert_eq!(
            (head.status, head.close, body.as_slice()),
            (200, false, &b"OK"[..])
        );
    }

    #[test]
    fn chunked_with_interim_response() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
        let (head, body) = parse(raw);
        assert_eq!(
            (head.status, head.close, body.as_slice()),
            (200, true, &b"abcde"[..])
        );
    }

    #[test]
    fn until_close_and_no_body() {
        assert_eq!(parse("HTTP/1.0 200 OK\r\n\r\nrest").1, b"rest");
        assert_eq!(
            parse("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").1,
            b""
        );
    }
}
