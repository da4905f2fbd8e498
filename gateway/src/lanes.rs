//! Lanes: long-lived `Lane` calls to one agent, each carrying successive exchanges (see the
//! `Lane` rpc in `agent.proto`), so that an ordinary call costs DATA frames only.
//!
//! A [`Pool`] per agent keeps the idle lanes. An exchange takes one (the most recently used,
//! so that under falling load the others age out), or opens one while fewer than
//! [`MAX_LANES`] exist; past that bound it goes by a call of its own (`Exchange`), as do
//! attach and exec start. A lane goes back to the pool only when its exchange ended cleanly
//! both ways (the request's `eof` sent, the response's `eof` read); a lane whose exchange was
//! cut (a client gone mid-body, an error) is dropped, which cancels its call, so a lane is
//! never reused half-read. Idle lanes older than [`IDLE`] are closed when the pool is next
//! used, and the agent ends a lane idle for longer on its own.
//!
//! Negotiation: an agent older than lanes answers `Lane` with UNIMPLEMENTED; the pool then
//! remembers that this agent has none, and every exchange to it goes by `Exchange`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar_hop::lane::Held;
use busbar_hop::v1::ExchangeFrame;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tonic::Streaming;

/// The most lanes open to one agent at once (busy and idle); more exchanges at once than
/// this take a call each. Below h2's default limit of concurrent streams per connection, with
/// room for those calls and the endless streams (`logs -f`, `events`) that hold a lane.
pub const MAX_LANES: usize = 128;
/// How long a lane may sit idle in the pool before it is closed. Shorter than the agent's own
/// idle limit, so that a lane taken from the pool has not been ended by the agent meanwhile.
pub const IDLE: Duration = Duration::from_secs(20);
/// Frames in flight on a lane's request side.
pub const WINDOW: usize = 8;

/// Whether an agent serves lanes, as learned from it.
const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// The lanes to one agent.
pub struct Pool {
    enabled: bool,
    support: AtomicU8,
    /// Idle lanes, the most recently used last.
    idle: Mutex<VecDeque<(Lane, Instant)>>,
    /// Lanes in existence, busy and idle.
    open: AtomicUsize,
    max: usize,
    idle_limit: Duration,
}

/// One lane: our side of its request stream and its response stream.
pub struct Lane {
    /// Our side of the request stream; `None` while an exchange's request is being sent (see
    /// [`RequestSide`]), always there on a lane in the pool.
    pub out: Option<mpsc::Sender<ExchangeFrame>>,
    pub inbound: Streaming<ExchangeFrame>,
    /// Whether it carried an exchange before this one (a failure before the response head on
    /// a reused lane may be the agent's restart, which the exchange did not cause).
    pub reused: bool,
    _open: Opened,
}

/// A slot counted in [`Pool::open`], given back when the lane is dropped.
pub struct Opened(Arc<Pool>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool of up to `max` lanes idle at most `idle_limit`; `enabled` false: never any.
    pub fn new(enabled: bool, max: usize, idle_limit: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            enabled,
            support: AtomicU8::new(UNKNOWN),
            idle: Mutex::new(VecDeque::new()),
            open: AtomicUsize::new(0),
            max,
            idle_limit,
        })
    }

    /// Whether exchanges may try lanes: enabled, and the agent not known to lack them.
    pub fn usable(&self) -> bool {
        self.enabled && self.support.load(Ordering::Relaxed) != UNSUPPORTED
    }

    /// Whether the agent was found to lack lanes (an older agent).
    pub fn unsupported(&self) -> bool {
        self.support.load(Ordering::Relaxed) == UNSUPPORTED
    }

    /// Remembers whether the agent serves lanes; returns true the first time it is found not to.
    pub fn learned(&self, supported: bool) -> bool {
        let new = if supported { SUPPORTED } else { UNSUPPORTED };
        self.support.swap(new, Ordering::Relaxed) != new && !supported
    }

    /// Lanes open now (busy and idle), and idle now.
    pub fn counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().expect("lane pool lock").len();
        (self.open.load(Ordering::Relaxed), idle)
    }

    /// An idle lane, the most recently used, if one is alive: lanes idle too long, or whose
    /// call has ended or sent anything while idle, are dropped on the way.
    pub fn take(&self) -> Option<Lane> {
        let now = Instant::now();
        loop {
            let (mut lane, since) = self.idle.lock().expect("lane pool lock").pop_back()?;
            if now.duration_since(since) >= self.idle_limit
                || lane.out.as_ref().is_none_or(|out| out.is_closed())
            {
                continue;
            }
            // Nothing may arrive on an idle lane: anything (its end, an error) means it is gone.
            if lane.inbound.message().now_or_never().is_some() {
                continue;
            }
            lane.reused = true;
            return Some(lane);
        }
    }

    /// A slot for a new lane, unless [`MAX_LANES`] are open.
    pub fn reserve(self: &Arc<Self>) -> Option<Opened> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Opened(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// A lane whose exchange ended cleanly both ways, back in the pool; lanes idle too long
    /// are closed on the way.
    pub fn put(&self, lane: Lane) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("lane pool lock");
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_limit)
        {
            idle.pop_front();
        }
        idle.push_back((lane, now));
    }
}

impl Lane {
    pub fn new(
        out: mpsc::Sender<ExchangeFrame>,
        inbound: Streaming<ExchangeFrame>,
        open: Opened,
    ) -> Lane {
        Lane {
            out: Some(out),
            inbound,
            reused: false,
            _open: open,
        }
    }
}

/// The request side of a lane's exchange: sent whole (its `eof` included), or being sent by
/// a task that holds the lane's sender until then. If the request's body fails (a client
/// gone mid-upload), that task drops the sender, which ends the request stream without an
/// `eof`: the agent fails the exchange, and the engine's request with it, rather than wait
/// for the rest of the body for ever.
pub enum RequestSide {
    Sent(mpsc::Sender<ExchangeFrame>),
    Sending(oneshot::Receiver<mpsc::Sender<ExchangeFrame>>),
}

impl RequestSide {
    /// The lane's sender, if the request was sent whole.
    fn finished(self) -> Option<mpsc::Sender<ExchangeFrame>> {
        match self {
            RequestSide::Sent(out) => Some(out),
            RequestSide::Sending(mut sending) => sending.try_recv().ok(),
        }
    }
}

/// Gives `lane` back to `pool` if its request was sent whole; drops it (cancelling its call)
/// otherwise.
pub fn release(pool: &Pool, mut lane: Lane, side: RequestSide) {
    if let Some(out) = side.finished() {
        lane.out = Some(out);
        pool.put(lane);
    }
}

/// A lane whose response body is being read ([`busbar_hop::lane::LaneBody`]): at the body's
/// `eof` it goes back to the pool if its request was sent whole; dropped before, it is dropped
/// (its call cancelled).
pub struct Reading {
    lane: Lane,
    pool: Arc<Pool>,
    side: RequestSide,
}

impl Reading {
    pub fn new(lane: Lane, pool: Arc<Pool>, side: RequestSide) -> Reading {
        Reading { lane, pool, side }
    }
}

impl Held for Reading {
    fn frames(&mut self) -> &mut Streaming<ExchangeFrame> {
        &mut self.lane.inbound
    }

    fn at_eof(self) {
        release(&self.pool, self.lane, self.side);
    }
}
