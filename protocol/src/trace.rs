//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>, `traceparent` version `00`): one
//! trace per request across busbar's processes, the engine and adapters.
//!
//! A request's trace is the client's when it sent one valid `traceparent` header, else a new
//! one started by the first busbar process that sees it. Each process has its own span id,
//! a child of the incoming parent, and passes `traceparent` on with that span id as the
//! parent: over the gRPC hop, to the engine and to adapters. A `tracestate` is passed on
//! unchanged when it is well formed, cut to [`MAX_TRACESTATE`] bytes at a list member.
//!
//! The header comes from clients: it is read strictly and never fails a request. Anything but
//! exactly one header of the version-00 form (lower-case hex, no all-zero id, version `ff`
//! refused; a later version read by its version-00 prefix, as the specification says) is
//! ignored and a new trace started.
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              version trace-id (16 bytes)        parent-id (8 bytes) flags
//! ```

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The header names, lower-case.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The most of a `tracestate` passed on, in bytes (the specification asks vendors to pass at
/// least 512); list members are dropped from the end until it fits.
pub const MAX_TRACESTATE: usize = 512;

/// The most list members a `tracestate` may hold.
const MAX_MEMBERS: usize = 32;

/// The length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` flag: the caller may have recorded the trace.
pub const SAMPLED: u8 = 0x01;
/// The flags passed on: `sampled` and level 2's `random`; the others are zero in version 00.
const KNOWN_FLAGS: u8 = 0x03;

/// A trace id: 16 bytes, never all zero; shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A span (parent) id: 8 bytes, never all zero; shown as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A valid `traceparent` as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

impl TraceParent {
    /// Reads one `traceparent` value; `None` unless it is valid (see the module's rules).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex(&value[0..2])? as u8;
        match version {
            0xff => return None,
            0x00 if value.len() != TRACEPARENT_LEN => return None,
            // A later version: its first 55 bytes read as version 00, followed by `-` if more.
            _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = hex(&value[3..35])?;
        let parent_id = hex(&value[36..52])? as u64;
        let flags = hex(&value[53..55])? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }
}

/// Lower-case hex digits (at most 32) as a number; `None` for anything else, upper case too
/// (the specification allows lower case only).
fn hex(digits: &[u8]) -> Option<u128> {
    let mut n: u128 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(v);
    }
    Some(n)
}

/// One process's part of a request's trace: the trace, this process's span in it, the parent
/// it came from (none when this process started the trace) and the `tracestate` passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub flags: u8,
    pub state: Option<String>,
}

impl Trace {
    /// A new trace started here. busbar records every request in its logs, so the trace is
    /// marked sampled: adapters that sample on their parent's flag record their part.
    pub fn start() -> Trace {
        Trace {
            trace_id: TraceId((u128::from(next_id()) << 64) | u128::from(next_id())),
            span_id: SpanId(next_id()),
            parent_id: None,
            flags: SAMPLED,
            state: None,
        }
    }

    /// This process's span in the caller's trace.
    pub fn child_of(parent: TraceParent, state: Option<String>) -> Trace {
        Trace {
            trace_id: parent.trace_id,
            span_id: SpanId(next_id()),
            parent_id: Some(parent.parent_id),
            flags: parent.flags & KNOWN_FLAGS,
            state,
        }
    }

    /// The trace a request's headers ask for: the values of its `traceparent` headers and of
    /// its `tracestate` headers. One valid `traceparent` continues its trace (with the
    /// `tracestate`, if valid); none, several or an invalid one start a new trace (and the
    /// `tracestate` is dropped, as the specification says).
    pub fn from_headers<'a>(
        mut traceparent: impl Iterator<Item = &'a [u8]>,
        tracestate: impl Iterator<Item = &'a [u8]>,
    ) -> Trace {
        let parent = match (traceparent.next(), traceparent.next()) {
            (Some(one), None) => TraceParent::parse(one),
            _ => None,
        };
        match parent {
            Some(parent) => Trace::child_of(parent, tracestate_of(tracestate)),
            None => Trace::start(),
        }
    }

    /// The `traceparent` to send downstream: this trace, this process's span as the parent.
    /// Formatted into a fixed buffer (no allocation).
    pub fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        put_hex(&mut out[3..35], self.trace_id.0);
        out[35] = b'-';
        put_hex(&mut out[36..52], u128::from(self.span_id.0));
        out[52] = b'-';
        put_hex(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// [`Trace::traceparent`] as text.
    pub fn traceparent_str(&self) -> String {
        String::from_utf8_lossy(&self.traceparent()).into_owned()
    }
}

/// Writes `n`'s low `out.len()` hex digits into `out`, lower case.
fn put_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The `tracestate` to pass on from the values of the headers received (several are one list,
/// joined by `,`): `None` when there is none, or when a member is malformed (the whole header
/// is dropped then: it is the client's, and a vendor's state that cannot be read is no use);
/// members dropped from the end until it fits in [`MAX_TRACESTATE`] bytes.
pub fn tracestate_of<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for value in values {
        let text = std::str::from_utf8(value).ok()?;
        for member in text.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            if !valid_member(member) || members.len() == MAX_MEMBERS {
                return None;
            }
            members.push(member);
        }
    }
    let mut out = String::new();
    for member in members {
        let extra = member.len() + usize::from(!out.is_empty());
        if out.len() + extra > MAX_TRACESTATE {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
    (!out.is_empty()).then_some(out)
}

/// `key=value` as the specification writes a list member: a key of lower-case letters,
/// digits and `_-*/` (at most 256, with one `@` for a tenant), a value of printable ASCII but
/// `,` and `=` (at most 256), not ending in a space.
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key.bytes().filter(|&b| b == b'@').count() <= 1
        && key.as_bytes()[0].is_ascii_lowercase() | key.as_bytes()[0].is_ascii_digit()
        && key.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        });
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
    key_ok && value_ok
}

/// A new id: never zero, distinct within a process (a bijective mix of a counter) and unlikely
/// to repeat across processes (its start drawn from the randomness `std` seeds hash maps
/// with), without a system call on each request.
fn next_id() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(std::process::id())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // splitmix64's finaliser over seed + n·γ: a bijection of n for a given seed.
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 {
        1
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Option<TraceParent> {
        TraceParent::parse(s.as_bytes())
    }

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        // A later version: its version-00 prefix, more after a `-`.
        assert!(parse(&format!("cc{}", &GOOD[2..])).is_some());
        assert!(parse(&format!("cc{}-what-comes-next", &GOOD[2..])).is_some());
    }

    #[test]
    fn an_invalid_traceparent_is_refused() {
        for bad in [
            "",
            "00",
            &GOOD[..54],
            &format!("{GOOD}-"),          // version 00 is 55 bytes
            &format!("ff{}", &GOOD[2..]), // version ff
            &GOOD.to_uppercase(),         // upper-case hex
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", // flags
            "00-4bf92f3577b34da6a3ce929d0e0e473 -00f067aa0ba902b7-01", // space
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version
            &format!("cc{}x", &GOOD[2..]), // later version, no `-`
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\0", // trailing byte
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_child_keeps_the_trace_and_has_its_own_span() {
        let parent = parse(GOOD).unwrap();
        let t = Trace::from_headers([GOOD.as_bytes()].into_iter(), std::iter::empty());
        assert_eq!(t.trace_id, parent.trace_id);
        assert_eq!(t.parent_id, Some(parent.parent_id));
        assert_ne!(t.span_id, parent.parent_id);
        let out = t.traceparent_str();
        assert_eq!(
            out,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id)
        );
        assert_eq!(parse(&out).unwrap().parent_id, t.span_id);
        // Unknown flags are not passed on; `random` is.
        let p = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert_eq!(Trace::child_of(p, None).flags, 0x03);
    }

    #[test]
    fn none_several_or_an_invalid_one_start_a_new_trace() {
        let state = [b"a=1".as_slice()];
        for headers in [vec![], vec![GOOD, GOOD], vec!["00-bad"]] {
            let t =
                Trace::from_headers(headers.iter().map(|h| h.as_bytes()), state.iter().copied());
            assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.parent_id, None);
            assert_eq!(t.flags, SAMPLED);
            assert_eq!(
                t.state, None,
                "a tracestate without a valid traceparent is dropped"
            );
            assert!(parse(&t.traceparent_str()).is_some());
        }
        let a = Trace::start();
        let b = Trace::start();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }

    #[test]
    fn tracestate_is_passed_on_when_well_formed_and_cut_to_size() {
        let of = |v: &[&str]| tracestate_of(v.iter().map(|s| s.as_bytes()));
        assert_eq!(of(&[]), None);
        assert_eq!(
            of(&["rojo=00f067aa0ba902b7"]).as_deref(),
            Some("rojo=00f067aa0ba902b7")
        );
        assert_eq!(
            of(&["rojo=1, congo=t61rcWkgMzE", "t@vendor=x"]).as_deref(),
            Some("rojo=1,congo=t61rcWkgMzE,t@vendor=x")
        );
        for bad in [
            "Rojo=1",
            "rojo",
            "rojo=",
            "a=b=c",
            "a=1\r\nx: y",
            "a=\u{e9}",
            "@a=1",
        ] {
            assert_eq!(of(&[bad]), None, "{bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(of(&[&many.join(",")]), None, "more than 32 members");
        let long: Vec<String> = (0..10)
            .map(|i| format!("k{i}={}", "v".repeat(100)))
            .collect();
        let cut = of(&[&long.join(",")]).unwrap();
        assert!(cut.len() <= MAX_TRACESTATE);
        assert!(cut.starts_with("k0=") && cut.ends_with(&"v".repeat(100)));
        assert_eq!(cut.split(',').count(), 4);
    }
}
