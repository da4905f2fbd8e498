//! What the gateway's status page reads besides the series: each adapter's totals (calls,
//! failures, time) since the process started, and the last error answers the process sent.
//!
//! Both are kept beside the Prometheus series because a `Family` cannot be listed from
//! outside the registry. The adapter totals cost one short lock per hook call (a call that
//! crossed the network already); the error ring is touched only by error answers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How many error answers [`Recent::errors`] keeps.
pub const ERRORS_KEPT: usize = 20;

/// One adapter's calls since the process started (both phases).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterTotals {
    pub adapter: String,
    /// Calls made (failed ones too).
    pub calls: u64,
    /// Calls that failed (`busbar_hook_errors_total`): timeouts included.
    pub errors: u64,
    /// Of `errors`, the timeouts.
    pub timeouts: u64,
    /// Calls the adapter answered with an error that went to the client.
    pub refusals: u64,
    /// Seconds spent in all `calls`.
    pub seconds: f64,
}

/// One error answer (status 400 or more) the process sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// When the answer ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub request_id: String,
    pub status: u16,
    pub method: &'static str,
    /// The endpoint's class (`container_create`...).
    pub endpoint: &'static str,
    /// The node that served it (empty: none alone).
    pub node: String,
    /// The answer's `message`, cut to 300 characters (empty when the body was not JSON).
    pub message: String,
}

/// The adapter totals and the error ring (see the module's doc).
#[derive(Default)]
pub struct Recent {
    adapters: Mutex<BTreeMap<String, AdapterTotals>>,
    errors: Mutex<VecDeque<ErrorAnswer>>,
    /// Requests answered: all, 4xx, 5xx.
    answered: [AtomicU64; 3],
}

impl Recent {
    pub(crate) fn answered(&self, status_class: &str) {
        self.answered[0].fetch_add(1, Ordering::Relaxed);
        match status_class {
            "4xx" => self.answered[1].fetch_add(1, Ordering::Relaxed),
            "5xx" => self.answered[2].fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Requests answered since the process started: all of them, with a 4xx and a 5xx status.
    pub fn requests(&self) -> (u64, u64, u64) {
        let [all, c4, c5] = &self.answered;
        (
            all.load(Ordering::Relaxed),
            c4.load(Ordering::Relaxed),
            c5.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn hook_call(&self, adapter: &str, elapsed: Duration) {
        self.with_adapter(adapter, |t| {
            t.calls += 1;
            t.seconds += elapsed.as_secs_f64();
        });
    }

    pub(crate) fn hook_error(&self, adapter: &str, kind: &str) {
        self.with_adapter(adapter, |t| {
            t.errors += 1;
            if kind == "timeout" {
                t.timeouts += 1;
            }
        });
    }

    pub(crate) fn hook_refusal(&self, adapter: &str) {
        self.with_adapter(adapter, |t| t.refusals += 1);
    }

    fn with_adapter(&self, adapter: &str, f: impl FnOnce(&mut AdapterTotals)) {
        let mut map = self.adapters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get_mut(adapter) {
            return f(t);
        }
        let mut t = AdapterTotals {
            adapter: adapter.to_owned(),
            ..AdapterTotals::default()
        };
        f(&mut t);
        map.insert(adapter.to_owned(), t);
    }

    /// Every adapter called so far, by name.
    pub fn adapters(&self) -> Vec<AdapterTotals> {
        let map = self.adapters.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Keeps `e`, dropping the oldest beyond [`ERRORS_KEPT`].
    pub fn error_answer(&self, mut e: ErrorAnswer) {
        if e.at_ms == 0 {
            e.at_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        if let Some((cut, _)) = e.message.char_indices().nth(300) {
            e.message.truncate(cut);
        }
        let mut ring = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == ERRORS_KEPT {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// The error answers kept, newest first.
    pub fn errors(&self) -> Vec<ErrorAnswer> {
        let ring = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_adapter() {
        let r = Recent::default();
        r.hook_call("a", Duration::from_millis(10));
        r.hook_call("a", Duration::from_millis(30));
        r.hook_error("a", "timeout");
        r.hook_refusal("a");
        r.hook_call("b", Duration::from_millis(1));
        r.hook_error("b", "unreachable");
        let list = r.adapters();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].adapter, "a");
        assert_eq!(
            (
                list[0].calls,
                list[0].errors,
                list[0].timeouts,
                list[0].refusals
            ),
            (2, 1, 1, 1)
        );
        assert!((list[0].seconds - 0.04).abs() < 1e-9);
        assert_eq!((list[1].calls, list[1].errors, list[1].timeouts), (1, 1, 0));
    }

    #[test]
    fn the_ring_keeps_the_newest_first_and_no_more_than_its_size() {
        let r = Recent::default();
        for i in 0..(ERRORS_KEPT + 5) {
            r.error_answer(ErrorAnswer {
                at_ms: 1,
                request_id: format!("r{i}"),
                status: 500,
                method: "GET",
                endpoint: "other",
                node: String::new(),
                message: "é".repeat(400),
            });
        }
        let errors = r.errors();
        assert_eq!(errors.len(), ERRORS_KEPT);
        assert_eq!(errors[0].request_id, format!("r{}", ERRORS_KEPT + 4));
        assert_eq!(errors[ERRORS_KEPT - 1].request_id, "r5");
        assert_eq!(errors[0].message.chars().count(), 300);
    }
}
