//! The agent's side of a lane (the `Lane` rpc): successive exchanges on one call.
//!
//! The call's response stream drives the lane: polled by the gRPC server for its next frame,
//! it reads the next request head, serves the request through the proxy as `Exchange` does,
//! and yields the response's frames, all in the call's own task (no hand-off to another
//! task). The request body is read from the lane by the request itself ([`LaneBody`], the
//! lane [`Lent`] to it), which hands the lane back at its `eof`; a body the proxy left unread
//! is read to its `eof` before the next head. A lane ends cleanly when the gateway ends its side or after [`LANE_IDLE`]
//! without a head; an error ends it with a status, failing only the exchange in flight.

use std::time::Duration;

use busbar_hop::frames as exchange;
use busbar_hop::lane::{Held, LaneBody};
use busbar_hop::v1::{exchange_frame::Frame, ExchangeFrame};
use busbar_http::body::full;
use busbar_http::hijack::Hijacked;
use busbar_http::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tonic::{Status, Streaming};

use super::grpc::{FrameStream, Served, HEAD_TIMEOUT};

/// How long a lane may wait for its next head before the agent ends it (longer than a
/// gateway keeps an idle lane, so that a gateway never takes a lane the agent is ending).
pub const LANE_IDLE: Duration = Duration::from_secs(60);

/// The lane's request stream, handed back by a body at its `eof` (true) or when dropped
/// before it (false: the rest of the body is to be skipped).
type Returned = oneshot::Receiver<(Streaming<ExchangeFrame>, bool)>;

/// A lane being served.
struct LaneState {
    served: Served,
    /// The request stream, when no body holds it.
    inbound: Option<Streaming<ExchangeFrame>>,
    /// Where the body that holds it will hand it back.
    returned: Option<Returned>,
    /// The frames of the response being sent.
    current: Option<FrameStream>,
}

/// The response stream of a `Lane` call whose request stream is `inbound`.
pub fn serve_lane(served: Served, inbound: Streaming<ExchangeFrame>) -> FrameStream {
    let state = LaneState {
        served,
        inbound: Some(inbound),
        returned: None,
        current: None,
    };
    Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut state = state?;
            match state.next().await {
                None => None,
                Some(Ok(frame)) => Some((Ok(frame), Some(state))),
                // The lane ends with its first error.
                Some(Err(status)) => Some((Err(status), None)),
            }
        },
    ))
}

impl LaneState {
    async fn next(&mut self) -> Option<Result<ExchangeFrame, Status>> {
        loop {
            if let Some(current) = &mut self.current {
                match current.next().await {
                    Some(frame) => return Some(frame),
                    None => self.current = None,
                }
            }
            let mut inbound = match self.inbound.take() {
                Some(inbound) => inbound,
                None => match self.returned.take() {
                    Some(returned) => match take_back(returned).await {
                        Ok(inbound) => inbound,
                        Err(status) => return Some(Err(status)),
                    },
                    None => return None,
                },
            };
            let first = match tokio::time::timeout(LANE_IDLE, inbound.message()).await {
                // Idle, ended by the gateway, or cancelled (nobody left to tell): the end.
                Err(_) | Ok(Ok(None)) | Ok(Err(_)) => return None,
                Ok(Ok(Some(frame))) => frame,
            };
            let head = match exchange::expect_head(Some(first)) {
                Ok(head) => head,
                Err(e) => return Some(Err(Status::invalid_argument(e.to_string()))),
            };
            let (early, ended) = exchange::take_ready(&mut inbound);
            let body: Body = if ended {
                self.inbound = Some(inbound);
                full(Bytes::from(early.concat()))
            } else {
                let (tx, rx) = oneshot::channel();
                self.returned = Some(rx);
                let lent = Lent {
                    inbound: Some(inbound),
                    back: Some(tx),
                };
                BodyExt::boxed(LaneBody::new(early, lent, "request"))
            };
            let (req, refused, may_hijack) = match self.served.prepare(head, body) {
                Ok(prepared) => prepared,
                Err(status) => return Some(Err(status)),
            };
            if may_hijack {
                return Some(Err(Status::invalid_argument(
                    "a request that may be hijacked (attach, exec start, an upgrade) goes by Exchange, not on a lane",
                )));
            }
            let (ctx, mut rsp) = self.served.handle(req, refused).await;
            if Hijacked::take(&mut rsp).is_some() {
                return Some(Err(Status::internal(
                    "the engine switched protocols on a lane",
                )));
            }
            self.current = Some(super::grpc::response_frames(ctx, rsp));
        }
    }
}

/// The request stream back from the body that held it, read past whatever the body left
/// unread, up to its `eof`.
async fn take_back(returned: Returned) -> Result<Streaming<ExchangeFrame>, Status> {
    let lost = || Status::internal("the lane's request body was lost");
    let (mut inbound, finished) = tokio::time::timeout(HEAD_TIMEOUT, returned)
        .await
        .map_err(|_| lost())?
        .map_err(|_| lost())?;
    if finished {
        return Ok(inbound);
    }
    let skip = async {
        loop {
            match inbound.message().await {
                Ok(Some(ExchangeFrame {
                    frame: Some(Frame::Eof(_)),
                })) => return Ok(()),
                Ok(Some(ExchangeFrame {
                    frame: Some(Frame::Head(_)),
                })) => return Err(Status::invalid_argument("a head before the body's eof")),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err(lost()),
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, skip)
        .await
        .map_err(|_| lost())??;
    Ok(inbound)
}

/// The lane lent to a request's body ([`busbar_hop::lane::LaneBody`]): handed back at the
/// body's `eof` (true), or when the body is dropped before it (false: the rest of the body is
/// to be skipped); lost with the body if it broke.
struct Lent {
    inbound: Option<Streaming<ExchangeFrame>>,
    back: Option<oneshot::Sender<(Streaming<ExchangeFrame>, bool)>>,
}

impl Lent {
    fn hand_back(&mut self, finished: bool) {
        if let (Some(inbound), Some(back)) = (self.inbound.take(), self.back.take()) {
            let _ = back.send((inbound, finished));
        }
    }
}

impl Held for Lent {
    fn frames(&mut self) -> &mut Streaming<ExchangeFrame> {
        self.inbound.as_mut().expect("held until handed back")
    }

    fn at_eof(mut self) {
        self.hand_back(true);
    }

    fn broken(mut self) {
        self.inbound = None;
        self.back = None;
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.hand_back(false);
    }
}
