//! A body read from a lane (the `Lane` rpc: successive exchanges on one call), used by both
//! ends: the agent reads a request's body from its lane, the gateway a response's. The body is
//! the `data` frames up to the `eof`; there the lane is free for its next exchange and goes
//! back to whoever holds lanes ([`Held::at_eof`]). An error, or the lane's end before the
//! `eof`, fails the body and drops the lane; so does dropping the body before its `eof` (what
//! that means is the holder's: the gateway's call is cancelled, the agent skips the rest).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use busbar_http::BoxError;
use bytes::Bytes;
use futures_util::StreamExt;
use tonic::Streaming;

use crate::v1::{exchange_frame::Frame, ExchangeFrame};

/// A lane as one end holds it while a body is read from it.
pub trait Held: Send + Sized + Unpin + 'static {
    /// The lane's incoming frames.
    fn frames(&mut self) -> &mut Streaming<ExchangeFrame>;
    /// The body's `eof` was read: the lane is free for its next exchange.
    fn at_eof(self);
    /// The body failed (its error, or the lane's end before the `eof`): the lane is lost.
    fn broken(self) {}
}

/// A body read from a lane (see the module's comment). `what` names the body in its errors
/// (`request`, `response`).
pub struct LaneBody<L> {
    early: VecDeque<Bytes>,
    /// In a mutex only to make the body `Sync`; it is never locked (`get_mut`).
    lane: Mutex<Option<L>>,
    what: &'static str,
}

impl<L: Held> LaneBody<L> {
    /// The body of `lane`, whose first `early` frames were already read.
    pub fn new(early: Vec<Bytes>, lane: L, what: &'static str) -> LaneBody<L> {
        LaneBody {
            early: early.into(),
            lane: Mutex::new(Some(lane)),
            what,
        }
    }
}

impl<L: Held> http_body::Body for LaneBody<L> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.early.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        let slot = this.lane.get_mut().expect("never locked");
        let Some(lane) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let failure: BoxError = match std::task::ready!(lane.frames().poll_next_unpin(cx)) {
                Some(Ok(frame)) => match frame.frame {
                    Some(Frame::Data(d)) => {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(d))))
                    }
                    Some(Frame::Eof(_)) => {
                        slot.take().expect("present").at_eof();
                        return Poll::Ready(None);
                    }
                    Some(Frame::Head(_)) => {
                        format!("a head in the middle of a {} body", this.what).into()
                    }
                    None => continue,
                },
                Some(Err(e)) => format!("the stream broke: {e}").into(),
                None => "the stream ended before the body was complete".into(),
            };
            slot.take().expect("present").broken();
            return Poll::Ready(Some(Err(failure)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.early.is_empty() && self.lane.lock().map_or(true, |l| l.is_none())
    }
}
