//! Small helpers that most tests want: free ports, unique names, and waiting for a condition
//! with a deadline.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
/// Another process may grab it in between, so use it right away.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// 64 random-enough bits (std's per-process random hash keys mixed with the time, the pid and
/// a counter). Not for cryptography; for unique names.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A name that is unique across test runs and parallel tests, usable as a Docker container,
/// network or volume name: `PREFIX-XXXXXXXXXX` (lowercase hex).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:010x}", random_u64() & 0xff_ffff_ffff)
}

/// Polls `cond` (every 50 ms, then less often, at most every 500 ms) until it returns true or
/// `timeout` passes. Returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 3 / 2).min(Duration::from_millis(500));
    }
}

/// Like [`wait_until`], but panics with `what` (a description of the awaited condition) when
/// the condition is still false after `timeout`.
#[track_caller]
pub fn eventually(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !wait_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// The environment variable that makes a missing end-to-end environment a failure, not a skip.
/// `tests/run.sh` (and so CI) sets it to `require`.
pub const E2E_ENV: &str = "BUSBAR_E2E";

/// Whether the end-to-end tests can run here: root (they start Docker engines in network
/// namespaces) and `dockerd` on the PATH. When they cannot, a plain `cargo test` skips them
/// with a message on stderr, once per test binary; with `BUSBAR_E2E=require` it panics
/// instead, so that the test command never passes without having run them.
pub fn e2e_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let available = AVAILABLE.get_or_init(|| {
        // SAFETY-free check: `id -u` rather than libc, the crate forbids unsafe code.
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if uid != "0" {
            return Err("they need root (Docker engines in network namespaces)".into());
        }
        let dockerd = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("dockerd").exists()))
            .unwrap_or(false);
        if !dockerd {
            return Err("dockerd is not installed (tests/run.sh installs it)".into());
        }
        Ok(())
    });
    match available {
        Ok(()) => true,
        Err(why) if std::env::var(E2E_ENV).as_deref() == Ok("require") => {
            panic!("end-to-end tests cannot run: {why}; {E2E_ENV}=require")
        }
        Err(why) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "skipping the end-to-end tests of this binary: {why}. \
                     Run `bash tests/run.sh` as root for the whole suite."
                )
            });
            false
        }
    }
}

/// Returns from the calling test when the end-to-end environment is missing (see
/// [`e2e_available`]): the first line of every test that needs engines, root or etcd.
#[macro_export]
macro_rules! e2e {
    () => {
        if !$crate::util::e2e_available() {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("c");
        let b = unique_name("c");
        assert_ne!(a, b);
        assert!(a.starts_with("c-") && a.len() == 12, "{a}");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        let t0 = Instant::now();
        assert!(!wait_until(Duration::from_millis(200), || false));
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }
}
