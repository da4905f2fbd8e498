//! How each etcd watch fares, as metrics: how far behind etcd it runs, the revision it has
//! delivered up to, and why it ended when it did.
//!
//! Lag: every [`PROGRESS_EVERY`], [`Progress::ask`] asks etcd for a progress notification on
//! the watch's stream. etcd answers only once the watch has sent every change up to the
//! store's current revision, so the time to its answer is how far behind the watch runs (one
//! round trip included): `busbar_etcd_watch_lag_seconds`. A watch that stays behind is not
//! answered; it is asked again, and the wait counts from the first unanswered question.
//!
//! Ends: a watch that ends is listed and watched again by its owner; [`Ended`] says why, and
//! [`restarted`] counts it in `busbar_etcd_watch_restarts_total`.

use std::fmt;
use std::time::Duration;

use busbar_metrics::{global, WatchEndLabels, WatchLabels};
use tokio::time::{timeout, Instant};

use crate::client::{WatchResponse, Watcher};

/// How often a watch asks etcd how far behind it runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One watch's progress questions, and its revision.
pub struct Progress {
    labels: WatchLabels,
    /// When the oldest unanswered question was asked.
    asked: Option<Instant>,
    next: Instant,
}

impl Progress {
    /// `watch` names the watch in the metrics: `nodes`, `chains`, `registration`.
    pub fn new(watch: &'static str) -> Progress {
        Progress {
            labels: WatchLabels { watch },
            asked: None,
            next: Instant::now() + PROGRESS_EVERY,
        }
    }

    /// When to [`ask`](Self::ask) next.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Asks etcd for a progress notification on `watcher`'s stream. A question that cannot be
    /// sent is dropped: the stream is then ending, and its reader will say why.
    pub async fn ask(&mut self, watcher: &Watcher) {
        self.next = Instant::now() + PROGRESS_EVERY;
        if let Ok(Ok(())) = timeout(PROGRESS_EVERY, watcher.request_progress()).await {
            self.asked.get_or_insert_with(Instant::now);
        }
    }

    /// Takes note of an answer read from the watch's stream.
    pub fn saw(&mut self, rsp: &WatchResponse) {
        let m = global();
        if let Some(h) = rsp.header() {
            m.etcd_watch_revision
                .get_or_create(&self.labels)
                .set(h.revision());
        }
        let progress = rsp.events().is_empty()
            && !rsp.created()
            && !rsp.canceled()
            && rsp.compact_revision() == 0;
        if progress {
            if let Some(asked) = self.asked.take() {
                m.etcd_watch_lag
                    .get_or_create(&self.labels)
                    .observe(asked.elapsed().as_secs_f64());
            }
        }
    }
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// etcd closed the stream.
    Closed,
    /// etcd cancelled the watch, with its reason.
    Cancelled(String),
    /// The revision to watch from was compacted away.
    Compacted(i64),
    /// The stream failed (the connection broke...).
    Broken(String),
}

impl Ended {
    /// The end an answer announces, if it does.
    pub fn of(rsp: &WatchResponse) -> Option<Ended> {
        if rsp.compact_revision() > 0 {
            Some(Ended::Compacted(rsp.compact_revision()))
        } else if rsp.canceled() {
            Some(Ended::Cancelled(rsp.cancel_reason().to_owned()))
        } else {
            None
        }
    }

    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Ended::Closed => "ended",
            Ended::Cancelled(_) => "cancelled",
            Ended::Compacted(_) => "compacted",
            Ended::Broken(_) => "broken",
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed => f.write_str("etcd ended the watch stream"),
            Ended::Cancelled(why) => write!(f, "etcd cancelled the watch: {why}"),
            Ended::Compacted(rev) => write!(f, "revision {rev} was compacted away"),
            Ended::Broken(why) => write!(f, "watch stream: {why}"),
        }
    }
}

/// Counts a watch started again: it ended (`reason`: [`Ended::reason`]) or could not be
/// listed or started (`unreachable`).
pub fn restarted(watch: &'static str, reason: &'static str) {
    global()
        .etcd_watch_restarts
        .get_or_create(&WatchEndLabels { watch, reason })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_read_as_they_did_and_carry_bounded_reasons() {
        assert_eq!(Ended::Closed.to_string(), "etcd ended the watch stream");
        assert_eq!(
            Ended::Compacted(7).to_string(),
            "revision 7 was compacted away"
        );
        let all = [
            Ended::Closed,
            Ended::Cancelled("x".into()),
            Ended::Compacted(1),
            Ended::Broken("y".into()),
        ];
        let reasons: Vec<_> = all.iter().map(Ended::reason).collect();
        assert_eq!(reasons, ["ended", "cancelled", "compacted", "broken"]);
    }

    #[test]
    fn restarts_are_counted_by_watch_and_reason() {
        restarted("nodes", "broken");
        restarted("nodes", "broken");
        let text = global().render();
        assert!(
            text.contains(r#"busbar_etcd_watch_restarts_total{watch="nodes",reason="broken"} 2"#),
            "{text}"
        );
    }
}
