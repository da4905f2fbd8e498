//! Rates over a recent window, from totals the processes already keep.
//!
//! The gateway records the totals of its status ([`Totals::of`]: each node's adapter calls,
//! errors, timeouts, refusals and time, and its own requests by status class) every
//! [`Window::step`], and keeps the samples of the last [`Window::span`]. The figures of the
//! window are then the totals now minus those of the newest sample at least `span` old (or
//! the oldest there is, while the process is younger than `span`): nothing is added to the
//! request path, which only moves the totals as it did before. A total that went down (an
//! agent that restarted) counts from zero, as Prometheus's `increase` does.
//!
//! Pure: times are given in milliseconds since the Unix epoch.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::model::{AdapterWindow, RequestWindow, Status};

/// One adapter's totals on one node, as a status reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub refusals: u64,
    pub seconds: f64,
}

impl Counts {
    /// `self - base`, or `self` when a total went down (its process restarted).
    fn since(&self, base: &Counts) -> Counts {
        let restarted = self.calls < base.calls
            || self.errors < base.errors
            || self.timeouts < base.timeouts
            || self.refusals < base.refusals;
        if restarted {
            return *self;
        }
        Counts {
            calls: self.calls - base.calls,
            errors: self.errors - base.errors,
            timeouts: self.timeouts - base.timeouts,
            refusals: self.refusals - base.refusals,
            seconds: (self.seconds - base.seconds).max(0.0),
        }
    }
}

/// The totals of one status: per (node, adapter), and the gateway's requests (all, 4xx, 5xx).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub adapters: BTreeMap<(String, String), Counts>,
    pub requests: [u64; 3],
}

impl Totals {
    /// The totals `status` reports.
    pub fn of(status: &Status) -> Totals {
        let adapters = status
            .nodes
            .iter()
            .flat_map(|n| {
                n.adapters.iter().map(|a| {
                    (
                        (n.name.clone(), a.adapter.clone()),
                        Counts {
                            calls: a.calls,
                            errors: a.errors,
                            timeouts: a.timeouts,
                            refusals: a.refusals,
                            seconds: a.seconds,
                        },
                    )
                })
            })
            .collect();
        let g = &status.gateway;
        Totals {
            adapters,
            requests: [g.requests, g.requests_4xx, g.requests_5xx],
        }
    }
}

/// The samples of the last [`Window::span`] (see the module's doc).
#[derive(Debug, Clone)]
pub struct Window {
    span_ms: u64,
    samples: VecDeque<(u64, Totals)>,
}

impl Window {
    /// A window of `span` (at least one second).
    pub fn new(span: Duration) -> Window {
        let span_ms = u64::try_from(span.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        Window {
            span_ms,
            samples: VecDeque::new(),
        }
    }

    pub fn span(&self) -> Duration {
        Duration::from_millis(self.span_ms)
    }

    /// How often to [`record`](Window::record): a thirtieth of the span, from 1 s to 10 s. The
    /// window's figures cover between `span` and `span + step`.
    pub fn step(&self) -> Duration {
        Duration::from_millis((self.span_ms / 30).clamp(1000, 10_000))
    }

    /// Keeps the totals at `at_ms`, dropping samples no longer needed as a baseline.
    pub fn record(&mut self, at_ms: u64, totals: Totals) {
        if self.samples.back().is_some_and(|(last, _)| *last > at_ms) {
            // The clock went back: start again rather than subtract across it.
            self.samples.clear();
        }
        self.samples.push_back((at_ms, totals));
        // Keep the newest sample at least a span old (the baseline for `at_ms` and later),
        // and everything after it.
        let oldest_needed = at_ms.saturating_sub(self.span_ms);
        while self.samples.len() > 1 && self.samples[1].0 <= oldest_needed {
            self.samples.pop_front();
        }
    }

    /// The sample the window's figures at `now_ms` count from: the newest at least a span old,
    /// else the oldest.
    fn baseline(&self, now_ms: u64) -> Option<&(u64, Totals)> {
        let oldest_needed = now_ms.saturating_sub(self.span_ms);
        self.samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= oldest_needed)
            .or_else(|| self.samples.front())
    }

    /// Fills the window's figures of `status` (made at `status.generated_at_ms`): the
    /// gateway's `recent` requests and each adapter's `recent` calls. Without any sample yet,
    /// nothing.
    pub fn apply(&self, status: &mut Status) {
        let now_ms = status.generated_at_ms;
        let Some((base_at, base)) = self.baseline(now_ms) else {
            return;
        };
        let window_s = now_ms.saturating_sub(*base_at) as f64 / 1000.0;
        let g = &mut status.gateway;
        g.window_s = self.span_ms as f64 / 1000.0;
        let now = [g.requests, g.requests_4xx, g.requests_5xx];
        let requests = if now.iter().zip(&base.requests).any(|(n, b)| n < b) {
            now
        } else {
            [0, 1, 2].map(|i| now[i] - base.requests[i])
        };
        g.recent = Some(RequestWindow {
            window_s,
            requests: requests[0],
            requests_4xx: requests[1],
            requests_5xx: requests[2],
        });
        for node in &mut status.nodes {
            for a in &mut node.adapters {
                let now = Counts {
                    calls: a.calls,
                    errors: a.errors,
                    timeouts: a.timeouts,
                    refusals: a.refusals,
                    seconds: a.seconds,
                };
                let key = (node.name.clone(), a.adapter.clone());
                let c = match base.adapters.get(&key) {
                    Some(b) => now.since(b),
                    None => now,
                };
                a.recent = Some(AdapterWindow {
                    window_s,
                    calls: c.calls,
                    errors: c.errors,
                    timeouts: c.timeouts,
                    refusals: c.refusals,
                    seconds: c.seconds,
                });
            }
        }
    }
}

/// A duration in seconds, short: `5m`, `90s`, `1h`, `2m30s`.
pub fn short(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=119 if !s.is_multiple_of(60) || s == 0 => format!("{s}s"),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{}m{}s", s / 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fixtures, Adapter};

    /// The fixture's status with node1's adapter at `calls`/`errors`/`refusals` and the
    /// gateway at `requests` (4xx, 5xx), made at `at_s` seconds.
    fn status(at_s: u64, calls: u64, errors: u64, refusals: u64, requests: [u64; 3]) -> Status {
        let mut s = fixtures::status();
        s.generated_at_ms = at_s * 1000;
        s.nodes[0].adapters = vec![Adapter {
            adapter: "netpol".into(),
            calls,
            errors,
            timeouts: 0,
            refusals,
            seconds: calls as f64 * 0.01,
            recent: None,
        }];
        [
            s.gateway.requests,
            s.gateway.requests_4xx,
            s.gateway.requests_5xx,
        ] = requests;
        s.gateway.recent = None;
        for a in s.nodes.iter_mut().flat_map(|n| n.adapters.iter_mut()) {
            a.recent = None;
        }
        s
    }

    fn recent(s: &Status) -> (u64, u64, u64) {
        let r = s.nodes[0].adapters[0].recent.as_ref().unwrap();
        (r.calls, r.errors, r.refusals)
    }

    #[test]
    fn the_window_counts_what_happened_in_its_span_only() {
        let mut w = Window::new(Duration::from_secs(60));
        assert_eq!(w.step(), Duration::from_secs(2));
        // 100 calls before the window, then 5 (2 errors, 1 refusal) inside it.
        let record = |w: &mut Window, from: u64, to: u64| {
            for t in (from..=to).step_by(2) {
                let calls = if t <= 30 { 100 } else { 105 };
                let (errors, refusals) = if t <= 30 { (10, 4) } else { (12, 5) };
                w.record(
                    t * 1000,
                    Totals::of(&status(t, calls, errors, refusals, [0; 3])),
                );
            }
        };
        record(&mut w, 0, 80);
        let mut now = status(80, 105, 12, 5, [50, 4, 1]);
        w.apply(&mut now);
        assert_eq!(recent(&now), (5, 2, 1));
        let r = now.nodes[0].adapters[0].recent.as_ref().unwrap();
        assert!((r.mean_ms().unwrap() - 10.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.window_s, 60.0);
        assert_eq!(now.gateway.window_s, 60.0);
        // Past the span of the burst (at 31 s), nothing: the totals stay.
        record(&mut w, 82, 100);
        let mut later = status(100, 105, 12, 5, [50, 4, 1]);
        w.apply(&mut later);
        assert_eq!(recent(&later), (0, 0, 0));
        assert_eq!(later.nodes[0].adapters[0].calls, 105);
        assert_eq!(
            later.nodes[0].adapters[0]
                .recent
                .as_ref()
                .unwrap()
                .error_percent(),
            None
        );
    }

    #[test]
    fn a_process_younger_than_the_span_counts_from_its_first_sample() {
        let mut w = Window::new(Duration::from_secs(300));
        assert_eq!(w.step(), Duration::from_secs(10));
        w.record(1_000, Totals::of(&status(1, 0, 0, 0, [2, 0, 0])));
        let mut now = status(21, 7, 3, 2, [12, 2, 3]);
        w.apply(&mut now);
        assert_eq!(recent(&now), (7, 3, 2));
        let g = now.gateway.recent.unwrap();
        assert_eq!((g.requests, g.requests_4xx, g.requests_5xx), (10, 2, 3));
        assert_eq!(g.window_s, 20.0);
        assert!((g.per_minute(g.requests_5xx) - 9.0).abs() < 1e-9);
    }

    #[test]
    fn a_total_that_went_down_counts_from_zero_and_new_adapters_count_whole() {
        let mut w = Window::new(Duration::from_secs(10));
        let mut before = status(0, 50, 5, 5, [100, 10, 10]);
        before.nodes[1].adapters.clear();
        w.record(0, Totals::of(&before));
        // The node's agent restarted: its totals start again from 3.
        let mut now = status(5, 3, 1, 0, [120, 10, 12]);
        w.apply(&mut now);
        assert_eq!(recent(&now), (3, 1, 0));
        let n2 = now.nodes[1].adapters[0].recent.as_ref().unwrap();
        assert_eq!(
            n2.calls, 10,
            "node2's adapter was not in the sample: all of it"
        );
        let g = now.gateway.recent.unwrap();
        assert_eq!((g.requests, g.requests_4xx, g.requests_5xx), (20, 0, 2));
    }

    #[test]
    fn samples_older_than_a_baseline_are_dropped_and_without_any_nothing_is_filled() {
        let mut w = Window::new(Duration::from_secs(30));
        let mut s = status(0, 0, 0, 0, [0; 3]);
        w.apply(&mut s);
        assert!(s.gateway.recent.is_none());
        assert!(s.nodes[0].adapters[0].recent.is_none());
        for t in 0..1000 {
            w.record(t * 1000, Totals::default());
        }
        assert!(w.samples.len() <= 32, "{}", w.samples.len());
        // A clock that goes back starts the window again.
        w.record(5_000, Totals::default());
        assert_eq!(w.samples.len(), 1);
    }

    #[test]
    fn spans_read_short() {
        assert_eq!(short(300.0), "5m");
        assert_eq!(short(20.0), "20s");
        assert_eq!(short(60.0), "1m");
        assert_eq!(short(90.0), "90s");
        assert_eq!(short(150.0), "2m30s");
        assert_eq!(short(3600.0), "1h");
        assert_eq!(short(0.2), "0s");
    }
}
