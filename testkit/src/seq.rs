//! One sequence for every recording in the test kit: a request a fake engine received, a call
//! a fake adapter received, and whatever a test records itself (a name reserved, released).
//! Comparing two numbers tells which happened first, across fakes.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The next number of the sequence (never 0, strictly increasing within the process).
pub fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::SeqCst)
}
