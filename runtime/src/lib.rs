//! Process plumbing shared by busbar's binaries: the tokio runtime they serve on, their exit
//! codes, log setup, the stop signal, and the one retry backoff every reconnecting loop uses.
//!
//! # Layout
//! - [`logging`]: `tracing` to stderr, filtered by `--log-level-file`, `RUST_LOG` or `--log-level`
//!   (the file read again on SIGHUP), as text or JSON.
//! - [`signal`]: waiting for SIGINT or SIGTERM; acting on SIGHUP.
//! - [`manual`]: a binary's man pages and shell completions, from its clap definition.
//! - [`backoff`]: exponential backoff (with or without jitter) for retries and redials.

pub mod backoff;
pub mod logging;
pub mod manual;
pub mod signal;

pub use backoff::Backoff;

/// sysexits' EX_USAGE: bad flags or configuration.
pub const EX_USAGE: u8 = 64;

/// The tokio runtime a binary serves on, with `threads` workers.
pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
