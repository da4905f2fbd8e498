//! What a benchmark report says about its run: the source commit, the command line, and small
//! readers of `/proc` and commands. Shared by `busbar-bench` and `busbar-scalebench`.

use std::process::Command;
use std::time::Duration;

/// The source's commit (`git describe --always --dirty`), if this was built from a checkout.
pub fn busbar_version() -> String {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut cmd = Command::new("git");
    cmd.args(["-C", repo, "describe", "--always", "--dirty"]);
    let commit = run_text(&mut cmd).unwrap_or_else(|| "unknown commit".to_string());
    format!(
        "{} {commit}, release build: {}",
        env!("CARGO_PKG_VERSION"),
        !cfg!(debug_assertions)
    )
}

/// The command line this was run with, quoted for a shell where needed.
pub fn command_line() -> String {
    let quote = |a: String| {
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::env::args().map(quote).collect::<Vec<_>>().join(" ")
}

/// A command's trimmed output, if it succeeded within 10 s.
pub fn run_text(cmd: &mut Command) -> Option<String> {
    testbed::cmd::run_ok(cmd, Duration::from_secs(10))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A file's trimmed text, or `?`.
pub fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}
