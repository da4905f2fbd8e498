//! The body of every request and response inside busbar, and the ways to make and read one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt};
use tokio::time::{sleep, Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response inside busbar.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body received by hyper, as a [`Body`].
pub fn incoming(body: hyper::body::Incoming) -> Body {
    fn boxed(e: hyper::Error) -> BoxError {
        Box::new(e)
    }
    body.map_err(boxed).boxed()
}

/// The longest a client's request body may go without a byte before the request fails (a body
/// that stops arriving would otherwise hold the client's connection and an engine's forever).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure of the client's request body: malformed framing (a bad chunk size), a connection
/// cut mid-body, or a body that stopped arriving. The client's fault, a 400, whoever notices it
/// (the engine client sending the body on, the hop, a hook reading it): see [`client_fault`].
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyError(String);

/// The client's request body received by hyper: its errors become [`ClientBodyError`]s, and a
/// body with no byte for `idle` fails (see [`BODY_IDLE_TIMEOUT`]).
pub fn client_body(body: hyper::body::Incoming, idle: Duration) -> Body {
    IdleTimeout {
        inner: body,
        idle,
        deadline: Box::pin(sleep(idle)),
    }
    .boxed()
}

/// The [`ClientBodyError`] in `e`'s source chain, if the failure was the client's body.
pub fn client_fault<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

struct IdleTimeout {
    inner: hyper::body::Incoming,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e.to_string())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let idle = self.idle;
                    Poll::Ready(Some(Err(Box::new(ClientBodyError(format!(
                        "no byte of it arrived for {idle:?}"
                    ))))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a client's request body failed (see [`ClientBodyError`]): for a handler that passes
/// the body on and must then tell whose fault an upstream's failure was. Filled by the body
/// [`watch_faults`] returns.
#[derive(Clone, Default)]
pub struct BodyFault(std::sync::Arc<std::sync::OnceLock<String>>);

impl BodyFault {
    /// What the client's body failed with, if it did.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// `body`, recording in the returned [`BodyFault`] a [`ClientBodyError`] it yields.
pub fn watch_faults(body: Body) -> (Body, BodyFault) {
    let fault = BodyFault::default();
    let seen = fault.clone();
    let body = body
        .map_err(move |e| {
            if let Some(f) = client_fault(e.as_ref()) {
                let _ = seen.0.set(f.to_string());
            }
            e
        })
        .boxed();
    (body, fault)
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Broken(BoxError),
}

/// Reads a whole body, refusing more than `limit` bytes.
///
/// A plain frame loop rather than `http_body_util::Limited`: with a boxed error type the latter
/// trips a rustc limitation (a higher-ranked `Send` bound) in spawned connection futures.
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Broken)?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(CollectError::TooLarge { limit });
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// How [`Gather`] joins a body's small chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathering {
    /// While less than this is at hand, wait for more...
    pub up_to: usize,
    /// ...at most this long after the first chunk: imperceptible on an interactive stream
    /// (`logs -f`, `events`), and enough to join a fast stream's lines.
    pub wait: Duration,
}

impl Gathering {
    /// For streams of small writes (the engine writes `docker logs` a line at a time):
    /// 16 KiB, 1 ms.
    pub const STREAMS: Gathering = Gathering {
        up_to: 16 * 1024,
        wait: Duration::from_millis(1),
    };
}

/// A body read in chunks, small ones joined: each frame of a body costs its reader a wake-up
/// and often a system call (a write to a client, a gRPC message), and an engine writes some
/// streams a line at a time (10 MB of `docker logs` are 100,000 frames). A chunk is what
/// the body's connection had read, passed on as it is when it is large (its bytes are not
/// copied); smaller ones are joined with those already at hand and, while less than
/// [`Gathering::up_to`] is, with those arriving within [`Gathering::wait`] of the first.
/// Larger chunks are split at `max`.
pub struct Gather {
    body: Body,
    gathering: Gathering,
    max: usize,
    /// Read and not yet passed on.
    rest: Bytes,
    ended: bool,
    /// An error met while joining, returned once what was read before it has gone out.
    failed: Option<BoxError>,
}

impl Gather {
    pub fn new(body: Body, gathering: Gathering, max: usize) -> Gather {
        Gather {
            body,
            gathering,
            max,
            rest: Bytes::new(),
            ended: false,
            failed: None,
        }
    }

    /// The next chunk, at most `max` bytes; `None` at the body's end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        use futures_util::FutureExt;
        if self.rest.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        while self.rest.is_empty() && !self.ended {
            match self.body.frame().await {
                None => self.ended = true,
                Some(frame) => self.rest = frame?.into_data().unwrap_or_default(),
            }
        }
        let mut joined: Option<bytes::BytesMut> = None;
        let mut deadline = None;
        while !self.ended && self.failed.is_none() {
            let have = joined.as_ref().map_or(self.rest.len(), |j| j.len());
            if have >= self.max {
                break;
            }
            let next = match self.body.frame().now_or_never() {
                Some(next) => next,
                None if have < self.gathering.up_to => {
                    let until =
                        *deadline.get_or_insert_with(|| Instant::now() + self.gathering.wait);
                    match tokio::time::timeout_at(until, self.body.frame()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
                None => break,
            };
            match next {
                None => self.ended = true,
                Some(Err(e)) => self.failed = Some(e),
                Some(Ok(frame)) => {
                    let data = frame.into_data().unwrap_or_default();
                    joined
                        .get_or_insert_with(|| bytes::BytesMut::from(&self.rest[..]))
                        .extend_from_slice(&data);
                }
            }
        }
        if let Some(joined) = joined {
            self.rest = joined.freeze();
        }
        if self.rest.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.rest.split_to(self.rest.len().min(self.max))))
    }
}

/// `body` as a body of [`Gather`]ed chunks of at most `max` bytes; it ends with its first error.
pub fn gathered(body: Body, gathering: Gathering, max: usize) -> Body {
    let chunks = futures_util::stream::unfold(
        Some(Gather::new(body, gathering, max)),
        |state| async move {
            let mut gather = state?;
            match gather.next().await {
                Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(gather))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        },
    );
    http_body_util::StreamBody::new(chunks).boxed()
}
