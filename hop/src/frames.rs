//! One HTTP exchange carried as a stream of [`ExchangeFrame`]s: the gateway <-> agent hop,
//! used by both ends (the agent's gRPC service and the gateway's agent client).
//!
//! Each direction is the same sequence: a `head`, the body as `data` frames, `eof`; after a
//! `101` (attach, exec start) raw bytes follow as more `data` frames and a second `eof`
//! half-closes that direction. Every channel here is bounded, so HTTP/2 flow control reaches
//! the engine: when a client reads slowly, frames stop being produced, and so does the
//! engine's stream.

use std::fmt::Display;
use std::pin::Pin;

use busbar_http::body::{empty, full, Gather, Gathering};
use busbar_http::hijack::RawStream;
use busbar_http::{Body, BoxError};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Binary, MetadataMap, MetadataValue};

use crate::v1::{exchange_frame::Frame, Eof, ExchangeFrame, Head, Header};

/// Largest `data` frame: bigger body chunks are split (gRPC's default message limit is 4 MiB).
pub const MAX_CHUNK: usize = 256 * 1024;
/// How small chunks are joined (see [`body_frames`]): up to 16 KiB, waiting up to 1 ms.
pub const GATHER: Gathering = Gathering::STREAMS;

/// Largest HTTP/2 frame each side of the hop accepts (announced in its SETTINGS): a whole
/// [`MAX_CHUNK`] message fits in one `DATA` frame instead of sixteen of the 16 KiB default.
pub const MAX_H2_FRAME: u32 = 2 * MAX_CHUNK as u32;
/// Frames in flight per direction, per exchange.
const WINDOW: usize = 8;
/// How long the end of a stream (its status) may take to follow the body's `eof`.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A frame that broke the sequence.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("expected a head frame, got {0}")]
    NoHead(&'static str),
    #[error("invalid head: {0}")]
    BadHead(String),
}

/// gRPC metadata that may carry the request head instead of a first `head` frame. Then the
/// request has no body and cannot turn into a raw stream, its frame stream is empty, and the
/// whole call goes out as one HTTP/2 `HEADERS` frame (see the proto's `Exchange`).
pub const HEAD_METADATA: &str = "busbar-head-bin";

/// `head` as the value of [`HEAD_METADATA`].
pub fn head_metadata(head: &Head) -> MetadataValue<Binary> {
    MetadataValue::from_bytes(&prost::Message::encode_to_vec(head))
}

/// The request head carried in `metadata`, if it is there.
pub fn head_from_metadata(metadata: &MetadataMap) -> Result<Option<Head>, FrameError> {
    let Some(value) = metadata.get_bin(HEAD_METADATA) else {
        return Ok(None);
    };
    let bytes = value
        .to_bytes()
        .map_err(|e| FrameError::BadHead(format!("{HEAD_METADATA}: {e}")))?;
    let head = <Head as prost::Message>::decode(bytes)
        .map_err(|e| FrameError::BadHead(format!("{HEAD_METADATA}: {e}")))?;
    Ok(Some(head))
}

pub fn head_frame(head: Head) -> ExchangeFrame {
    ExchangeFrame {
        frame: Some(Frame::Head(head)),
    }
}

fn data_frame(bytes: Bytes) -> ExchangeFrame {
    ExchangeFrame {
        frame: Some(Frame::Data(bytes)),
    }
}

pub fn eof_frame() -> ExchangeFrame {
    ExchangeFrame {
        frame: Some(Frame::Eof(Eof {})),
    }
}

fn headers_of(map: &http::HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_owned(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

fn fill_headers(target: &mut http::HeaderMap, headers: Vec<Header>) -> Result<(), FrameError> {
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| FrameError::BadHead(e.to_string()))?;
        let value =
            HeaderValue::from_bytes(&h.value).map_err(|e| FrameError::BadHead(e.to_string()))?;
        target.append(name, value);
    }
    Ok(())
}

pub fn request_head(parts: &http::request::Parts) -> Head {
    Head {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned(),
        status: 0,
        headers: headers_of(&parts.headers),
    }
}

pub fn response_head(parts: &http::response::Parts) -> Head {
    Head {
        method: String::new(),
        path_and_query: String::new(),
        status: parts.status.as_u16().into(),
        headers: headers_of(&parts.headers),
    }
}

/// The first frame, which must be a head.
pub fn expect_head(frame: Option<ExchangeFrame>) -> Result<Head, FrameError> {
    match frame.and_then(|f| f.frame) {
        Some(Frame::Head(h)) => Ok(h),
        Some(Frame::Data(_)) => Err(FrameError::NoHead("data")),
        Some(Frame::Eof(_)) => Err(FrameError::NoHead("eof")),
        None => Err(FrameError::NoHead("the end of the stream")),
    }
}

pub fn to_request(head: Head, body: Body) -> Result<Request<Body>, FrameError> {
    let mut req = Request::builder()
        .method(head.method.as_str())
        .uri(head.path_and_query.as_str())
        .body(body)
        .map_err(|e| FrameError::BadHead(e.to_string()))?;
    fill_headers(req.headers_mut(), head.headers)?;
    Ok(req)
}

pub fn to_response(head: Head, body: Body) -> Result<Response<Body>, FrameError> {
    let status = u16::try_from(head.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| FrameError::BadHead(format!("status {}", head.status)))?;
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    fill_headers(rsp.headers_mut(), head.headers)?;
    Ok(rsp)
}

/// What [`route_inbound_after`] makes of the frames after a head: the body, then (after a
/// 101) the raw bytes.
pub struct Inbound {
    pub body: Body,
    pub raw: RawInbound,
}

/// The raw bytes that follow a 101, routed only when asked for: most exchanges are not
/// hijacked, and a task started for nothing costs a wake-up of another worker thread.
///
/// Dropped without being started, it still reads the stream to its end (in a task), unless
/// the stream had already ended: an HTTP/2 stream dropped early is reset, and h2 counts such
/// resets against the connection (`too_many_internal_resets` closes it after a thousand).
pub struct RawInbound(Option<Box<dyn FnOnce() -> mpsc::Receiver<Bytes> + Send>>);

impl RawInbound {
    fn new(start: impl FnOnce() -> mpsc::Receiver<Bytes> + Send + 'static) -> Self {
        RawInbound(Some(Box::new(start)))
    }

    /// Starts routing (if it has not started) and gives the channel the raw bytes arrive on.
    pub fn start(mut self) -> mpsc::Receiver<Bytes> {
        (self.0.take().expect("started once"))()
    }
}

impl Drop for RawInbound {
    fn drop(&mut self) {
        if let Some(start) = self.0.take() {
            drop(start());
        }
    }
}

/// Routes the frames after a head, of which `early` body data (and, if `ended`, the body's end)
/// were already taken with [`take_ready`]: `data` until the first `eof` becomes the body, the
/// `data` after it the raw stream. An error from the stream fails the body (the client sees a
/// broken stream, never a silently short one).
///
/// When the body is complete (`ended`, the common case) it becomes a plain body of known
/// length and no task is started until the raw stream is asked for. Otherwise, when no raw
/// stream can follow (`raw_may_follow` false: not an attach, exec start or upgrade), the body
/// reads the frames itself ([`FramesBody`]); else one task feeds the body, then the raw stream.
pub fn route_inbound_after<S, E>(
    early: Vec<Bytes>,
    ended: bool,
    raw_may_follow: bool,
    mut frames: S,
) -> Inbound
where
    S: Stream<Item = Result<ExchangeFrame, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
{
    if !ended && !raw_may_follow {
        return Inbound {
            body: BodyExt::boxed(FramesBody {
                early: early.into(),
                frames: std::sync::Mutex::new(Some(frames)),
            }),
            raw: RawInbound::new(|| mpsc::channel(1).1),
        };
    }
    if ended {
        use futures_util::FutureExt;
        let body: Bytes = early.concat().into();
        let mut frames: Pin<Box<dyn Stream<Item = Result<ExchangeFrame, E>> + Send>> =
            match frames.next().now_or_never() {
                // The other side has finished too (no raw stream can follow): nothing to route.
                Some(None) => {
                    return Inbound {
                        body: full(body),
                        raw: RawInbound::new(|| mpsc::channel(1).1),
                    }
                }
                Some(Some(first)) => Box::pin(futures_util::stream::iter([first]).chain(frames)),
                None => Box::pin(frames),
            };
        let raw = RawInbound::new(move || {
            let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(WINDOW);
            tokio::spawn(async move {
                let mut raw_tx = Some(raw_tx);
                while let Some(Ok(frame)) = frames.next().await {
                    // Not a match guard, as clippy suggests: the send moves the data.
                    #[allow(clippy::collapsible_match)]
                    match (frame.frame, &raw_tx) {
                        (Some(Frame::Data(d)), Some(tx)) => {
                            if tx.send(d).await.is_err() {
                                return; // nobody reads: dropping the stream cancels it
                            }
                        }
                        // A half-close: read on to the stream's end (its status).
                        (Some(Frame::Eof(_)), _) => raw_tx = None,
                        _ => {}
                    }
                }
            });
            raw_rx
        });
        return Inbound {
            body: full(body),
            raw,
        };
    }
    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(WINDOW);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, BoxError>>(WINDOW + early.len());
    for chunk in early {
        body_tx
            .try_send(Ok(chunk))
            .expect("the channel has room for the early chunks");
    }
    tokio::spawn(async move {
        let mut body_tx = Some(body_tx);
        let mut raw_tx = Some(raw_tx);
        while let Some(item) = frames.next().await {
            match (item.map(|f| f.frame), &body_tx) {
                (Ok(Some(Frame::Data(d))), Some(tx)) => {
                    if tx.send(Ok(d)).await.is_err() {
                        body_tx = None; // nobody reads the body any more; keep routing raw bytes
                    }
                }
                (Ok(Some(Frame::Data(d))), None) => {
                    let Some(tx) = &raw_tx else { continue };
                    if tx.send(d).await.is_err() {
                        return; // nobody reads: dropping the stream cancels it
                    }
                }
                (Ok(Some(Frame::Eof(_))), Some(_)) => body_tx = None,
                // A raw half-close: read on to the stream's end (its status), as dropping a
                // stream early resets it, and h2 closes a connection after a thousand resets.
                (Ok(Some(Frame::Eof(_))), None) => raw_tx = None,
                (Ok(_), _) => {}
                (Err(e), Some(tx)) => {
                    let _ = tx.send(Err(format!("the stream broke: {e}").into())).await;
                    return;
                }
                (Err(_), None) => return,
            }
        }
        if let Some(tx) = body_tx {
            let _ = tx
                .send(Err("the stream ended before the body was complete".into()))
                .await;
        }
    });
    let body = BodyExt::boxed(StreamBody::new(
        ReceiverStream::new(body_rx).map(|r| r.map(http_body::Frame::data)),
    ));
    Inbound {
        body,
        raw: RawInbound::new(move || raw_rx),
    }
}

/// A body read straight from the frames that carry it, in the task that reads the body: the
/// `data` up to the first `eof`. After the `eof` the stream is read to its end (its status),
/// in a task if that has not arrived yet (for up to [`STATUS_TIMEOUT`]), as a stream dropped
/// early is reset and h2 closes a connection after a thousand resets. An error, or an end
/// before the `eof`, fails the body.
struct FramesBody<S> {
    /// Data taken before the body was made ([`take_ready`]).
    early: std::collections::VecDeque<Bytes>,
    /// In a mutex only to make the body `Sync`; it is never locked (`get_mut`).
    frames: std::sync::Mutex<Option<S>>,
}

impl<S, E> http_body::Body for FramesBody<S>
where
    S: Stream<Item = Result<ExchangeFrame, E>> + Send + Unpin + 'static,
    E: Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use futures_util::FutureExt;
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(data) = this.early.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        let slot = this.frames.get_mut().expect("never locked");
        let Some(frames) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let failure: BoxError = match std::task::ready!(frames.poll_next_unpin(cx)) {
                Some(Ok(frame)) => match frame.frame {
                    Some(Frame::Data(d)) => {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(d))))
                    }
                    Some(Frame::Eof(_)) => {
                        let mut rest = slot.take().expect("present");
                        if !matches!(rest.next().now_or_never(), Some(None)) {
                            tokio::spawn(tokio::time::timeout(STATUS_TIMEOUT, async move {
                                while rest.next().await.is_some() {}
                            }));
                        }
                        return Poll::Ready(None);
                    }
                    _ => continue,
                },
                Some(Err(e)) => format!("the stream broke: {e}").into(),
                None => "the stream ended before the body was complete".into(),
            };
            *slot = None;
            return Poll::Ready(Some(Err(failure)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.early.is_empty() && self.frames.lock().map_or(true, |f| f.is_none())
    }
}

/// `body` as `data` frames, then an `eof` (nothing after the body's error, which ends it).
///
/// A chunk is what the engine's connection had read (the engine writes 32 KiB at a time, the
/// engine client reads what has arrived), sent as it is when it is large, so its bytes are not
/// copied; smaller chunks are joined up to [`MAX_CHUNK`], as one gRPC message each costs a
/// wake-up, a TLS record and a system call on both sides (see [`Gather`] and [`GATHER`]).
/// (The engine writes `docker logs` a line at a time: 10 MB of 90-byte lines were 100,000
/// messages.) Larger ones are split at [`MAX_CHUNK`].
/// Polled by whoever sends the frames: a reader that stops polling stops the engine's stream.
pub fn body_frames(body: Body) -> impl Stream<Item = Result<ExchangeFrame, BoxError>> + Send {
    let chunks = Gather::new(body, GATHER, MAX_CHUNK);
    futures_util::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        match chunks.next().await {
            Ok(Some(chunk)) => Some((Ok(data_frame(chunk)), Some(chunks))),
            Ok(None) => Some((Ok(eof_frame()), None)),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Sends `body` as [`body_frames`] on `out`, each wrapped by `wrap` for the channel's item
/// type. Returns the body's error, if it failed; a closed channel just stops.
pub async fn send_body<T>(
    body: Body,
    out: &mpsc::Sender<T>,
    wrap: fn(ExchangeFrame) -> T,
) -> Result<(), BoxError> {
    let mut frames = std::pin::pin!(body_frames(body));
    while let Some(frame) = frames.next().await {
        if out.send(wrap(frame?)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The whole of `body` if it is already at hand (polled without waiting, up to
/// [`MAX_CHUNK`]); `None` if more is to come (then what was read is put back in front).
pub fn ready_body(body: &mut Body) -> Option<Bytes> {
    use futures_util::FutureExt;
    let mut data = bytes::BytesMut::new();
    let mut failed = None;
    loop {
        match body.frame().now_or_never() {
            Some(None) => return Some(data.freeze()),
            Some(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    data.extend_from_slice(&d);
                }
                if data.len() > MAX_CHUNK {
                    break;
                }
            }
            Some(Some(Err(e))) => {
                failed = Some(e);
                break;
            }
            None => break,
        }
    }
    // Not complete: what was read goes back in front of the rest (an error included).
    let rest = std::mem::replace(body, empty());
    let mut prefix = vec![Ok::<_, BoxError>(http_body::Frame::data(data.freeze()))];
    if let Some(e) = failed {
        prefix.push(Err(e));
    }
    *body = BodyExt::boxed(StreamBody::new(
        futures_util::stream::iter(prefix).chain(http_body_util::BodyStream::new(rest)),
    ));
    None
}

/// A whole exchange direction as frames: head, the body (if any), end.
pub fn whole_frames(head: ExchangeFrame, body: Bytes) -> Vec<ExchangeFrame> {
    let mut frames = vec![head];
    if !body.is_empty() {
        frames.push(data_frame(body));
    }
    frames.push(eof_frame());
    frames
}

/// Takes the frames that follow a head and are already at hand, without waiting: when they
/// hold the whole body (a small answer, the common case), it becomes a plain body of known
/// length, which the client then gets in one write. Returns the data seen and whether the
/// body ended.
pub fn take_ready<S, E>(frames: &mut S) -> (Vec<Bytes>, bool)
where
    S: Stream<Item = Result<ExchangeFrame, E>> + Unpin,
{
    use futures_util::FutureExt;
    let mut data = vec![];
    while let Some(Some(Ok(frame))) = frames.next().now_or_never() {
        match frame.frame {
            Some(Frame::Data(d)) => data.push(d),
            Some(Frame::Eof(_)) => return (data, true),
            _ => {}
        }
    }
    (data, false)
}

/// A byte stream over frames: what it reads is `raw_in`, what is written to it goes out as
/// `data` frames, and shutting it down sends `eof` (a half-close).
pub fn raw_stream<T: Send + 'static>(
    raw_in: RawInbound,
    out: mpsc::Sender<T>,
    wrap: fn(ExchangeFrame) -> T,
) -> Box<dyn RawStream> {
    let mut raw_in = raw_in.start();
    let (ours, theirs) = tokio::io::duplex(MAX_CHUNK);
    let (mut read_half, mut write_half) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(bytes) = raw_in.recv().await {
            if write_half.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(wrap(data_frame(Bytes::copy_from_slice(&buf[..n]))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out.send(wrap(eof_frame())).await;
    });
    Box::new(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<Result<Bytes, &'static str>>) -> Body {
        let frames = chunks
            .into_iter()
            .map(|c| c.map(http_body::Frame::data).map_err(BoxError::from));
        BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn frames_of(body: Body) -> Vec<Result<ExchangeFrame, String>> {
        body_frames(body)
            .map(|f| f.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    fn data(frame: &Result<ExchangeFrame, String>) -> &Bytes {
        match frame {
            Ok(ExchangeFrame {
                frame: Some(Frame::Data(d)),
            }) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn is_eof(frame: &Result<ExchangeFrame, String>) -> bool {
        matches!(
            frame,
            Ok(ExchangeFrame {
                frame: Some(Frame::Eof(_))
            })
        )
    }

    #[tokio::test]
    async fn a_large_chunk_goes_out_uncopied_and_split_at_the_limit() {
        let big = Bytes::from(vec![7u8; MAX_CHUNK + 1000]);
        let frames = frames_of(body_of(vec![Ok(big.clone())])).await;
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(data(&frames[0]).len(), MAX_CHUNK);
        assert_eq!(data(&frames[1]).len(), 1000);
        assert_eq!(
            data(&frames[0]).as_ptr(),
            big.as_ptr(),
            "the engine's chunk is sent, not a copy of it"
        );
        assert!(is_eof(&frames[2]));
    }

    #[tokio::test]
    async fn small_chunks_at_hand_are_joined_into_one_message() {
        let chunks = (0..5u8).map(|i| Ok(Bytes::from(vec![i; 10_000]))).collect();
        let frames = frames_of(body_of(chunks)).await;
        assert_eq!(frames.len(), 2, "one data frame and the eof: {frames:?}");
        let joined = data(&frames[0]);
        assert_eq!(joined.len(), 50_000);
        assert_eq!((joined[0], joined[49_999]), (0, 4), "in order");
        assert!(is_eof(&frames[1]));
    }

    #[tokio::test]
    async fn a_body_error_ends_the_frames_after_what_came_before_it() {
        let frames = frames_of(body_of(vec![Ok(Bytes::from_static(b"part")), Err("boom")])).await;
        assert_eq!(
            frames.len(),
            2,
            "the data, then the error, no eof: {frames:?}"
        );
        assert_eq!(&data(&frames[0])[..], b"part");
        assert_eq!(frames[1].as_ref().unwrap_err(), "boom");
    }

    fn frames_body(frames: Vec<Result<ExchangeFrame, &'static str>>, early: Vec<Bytes>) -> Body {
        let stream = futures_util::stream::iter(frames);
        route_inbound_after(early, false, false, stream).body
    }

    #[tokio::test]
    async fn a_streamed_body_is_the_data_up_to_the_eof() {
        let frames = vec![
            Ok(data_frame(Bytes::from_static(b"b"))),
            Ok(data_frame(Bytes::from_static(b"c"))),
            Ok(eof_frame()),
        ];
        let body = frames_body(frames, vec![Bytes::from_static(b"a")]);
        let all = body.collect().await.expect("a complete body").to_bytes();
        assert_eq!(&all[..], b"abc");
    }

    #[tokio::test]
    async fn a_streamed_body_fails_when_its_stream_breaks_or_stops_short() {
        let broken = frames_body(
            vec![Ok(data_frame(Bytes::from_static(b"a"))), Err("reset")],
            vec![],
        );
        let e = broken.collect().await.expect_err("a broken stream");
        assert_eq!(e.to_string(), "the stream broke: reset");
        let short = frames_body(vec![Ok(data_frame(Bytes::from_static(b"a")))], vec![]);
        let e = short.collect().await.expect_err("a short stream");
        assert_eq!(
            e.to_string(),
            "the stream ended before the body was complete"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    use super::*;

    /// `cases` by default, `PROPTEST_CASES` when set; no regression files written.
    fn config(cases: u32) -> Config {
        let default = Config::default();
        Config {
            cases: if std::env::var_os("PROPTEST_CASES").is_some() {
                default.cases
            } else {
                cases
            },
            failure_persistence: None,
            ..default
        }
    }

    fn header() -> impl Strategy<Value = Header> {
        let name = prop_oneof![
            "[a-z-]{1,12}",
            "[A-Za-z0-9!#$%&'*+.^_`|~-]{0,8}",
            any::<String>(),
        ];
        let value = prop_oneof!["[ -~]{0,16}".prop_map(String::into_bytes), any::<Vec<u8>>(),];
        (name, value).prop_map(|(name, value)| Header { name, value })
    }

    /// A head as a peer may send one: methods, targets and statuses of any shape.
    fn head() -> impl Strategy<Value = Head> {
        let method = prop_oneof![
            prop::sample::select(vec![
                "GET", "POST", "DELETE", "HEAD", "PUT", "", "get", "M\u{e9}"
            ])
            .prop_map(str::to_owned),
            "[A-Z]{1,10}",
            any::<String>(),
        ];
        let target = prop_oneof![
            "/v1\\.41/[a-z/]{0,12}(\\?[a-z=&%]{0,8})?",
            "[ -~]{0,20}",
            any::<String>(),
            Just("*".to_owned()),
            Just("http://x/y".to_owned()),
        ];
        let status = prop_oneof![0u32..1100, any::<u32>()];
        (
            method,
            target,
            status,
            prop::collection::vec(header(), 0..5),
        )
            .prop_map(|(method, path_and_query, status, headers)| Head {
                method,
                path_and_query,
                status,
                headers,
            })
    }

    fn frame() -> impl Strategy<Value = Option<ExchangeFrame>> {
        prop_oneof![
            Just(None),
            Just(Some(ExchangeFrame { frame: None })),
            head().prop_map(|h| Some(head_frame(h))),
            any::<Vec<u8>>().prop_map(|d| Some(data_frame(Bytes::from(d)))),
            Just(Some(eof_frame())),
        ]
    }

    proptest! {
        #![proptest_config(config(600))]

        #[test]
        fn any_head_makes_a_request_and_a_response_or_an_error(h in head()) {
            if let Ok(req) = to_request(h.clone(), empty()) {
                prop_assert_eq!(req.method().as_str(), h.method.as_str());
                prop_assert_eq!(req.headers().len(), h.headers.len());
                // Carried again, the head reads the same (names as HTTP writes them).
                let (parts, _) = req.into_parts();
                let again = request_head(&parts);
                let names = |h: &Head| -> Vec<(String, Vec<u8>)> {
                    h.headers.iter().map(|x| (x.name.to_ascii_lowercase(), x.value.clone())).collect()
                };
                let (mut a, mut b) = (names(&again), names(&h));
                a.sort();
                b.sort();
                prop_assert_eq!(a, b);
                // The target too, when it is in origin form (the only form carried; an
                // absolute one is refused by the agent's canonicalize).
                if h.path_and_query.starts_with('/') {
                    let uri = to_request(again, empty()).map(|r| r.uri().clone()).ok();
                    prop_assert_eq!(uri, Some(parts.uri));
                }
            }
            match to_response(h.clone(), empty()) {
                Ok(rsp) => {
                    prop_assert_eq!(u32::from(rsp.status().as_u16()), h.status);
                    let again = response_head(&rsp.into_parts().0);
                    prop_assert_eq!(again.status, h.status);
                }
                Err(_) => prop_assert!(
                    !(100..1000).contains(&h.status)
                        || h.headers.iter().any(|x| HeaderName::from_bytes(x.name.as_bytes()).is_err()
                            || HeaderValue::from_bytes(&x.value).is_err())
                ),
            }
        }

        #[test]
        fn heads_in_metadata_read_back_and_garbage_is_an_error(
            h in head(),
            garbage in any::<Vec<u8>>(),
        ) {
            let mut metadata = MetadataMap::new();
            metadata.insert_bin(HEAD_METADATA, head_metadata(&h));
            prop_assert_eq!(head_from_metadata(&metadata).ok().flatten(), Some(h));
            let mut metadata = MetadataMap::new();
            metadata.insert_bin(HEAD_METADATA, MetadataValue::from_bytes(&garbage));
            let _ = head_from_metadata(&metadata);
            prop_assert!(matches!(head_from_metadata(&MetadataMap::new()), Ok(None)));
        }

        #[test]
        fn only_a_head_frame_is_a_head(f in frame()) {
            let is_head = matches!(&f, Some(ExchangeFrame { frame: Some(Frame::Head(_)) }));
            prop_assert_eq!(expect_head(f).is_ok(), is_head);
        }
    }

    proptest! {
        #![proptest_config(config(200))]

        /// Frames after a head, in any order a peer may send them: the body is the data up to
        /// the first `eof`, or an error when the stream breaks or ends before it.
        #[test]
        fn a_body_is_the_data_up_to_the_first_eof(
            frames in prop::collection::vec(
                prop_oneof![
                    3 => any::<Vec<u8>>().prop_map(|d| Ok(data_frame(Bytes::from(d)))),
                    1 => Just(Ok(eof_frame())),
                    1 => head().prop_map(|h| Ok(head_frame(h))),
                    1 => Just(Ok(ExchangeFrame { frame: None })),
                    1 => Just(Err("reset")),
                ],
                0..8,
            ),
            raw_may_follow in any::<bool>(),
        ) {
            // A gRPC stream ends at its first error.
            let mut frames = frames;
            if let Some(i) = frames.iter().position(Result::is_err) {
                frames.truncate(i + 1);
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut want = Vec::new();
            let mut complete = false;
            for f in &frames {
                match f {
                    Ok(ExchangeFrame { frame: Some(Frame::Data(d)) }) => want.extend_from_slice(d),
                    Ok(ExchangeFrame { frame: Some(Frame::Eof(_)) }) => {
                        complete = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let got = rt.block_on(async {
                let mut stream = futures_util::stream::iter(frames.clone());
                let (early, ended) = take_ready(&mut stream);
                let inbound = route_inbound_after(early, ended, raw_may_follow, stream);
                let body = inbound.body.collect().await.map(|b| b.to_bytes().to_vec());
                drop(inbound.raw);
                body.map_err(|e| e.to_string())
            });
            match got {
                Ok(body) => {
                    prop_assert!(complete, "a body without its eof: {:?}", frames);
                    prop_assert_eq!(body, want);
                }
                Err(_) => prop_assert!(!complete, "{:?}", frames),
            }
        }
    }
}
