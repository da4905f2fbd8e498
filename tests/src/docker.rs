//! Running the real `docker` CLI against an engine (or a busbar proxy) with a deadline.
//!
//! The helpers panic (they are for tests) when the CLI cannot be started or does not finish
//! within [`DOCKER_TIMEOUT`]; the panic message names the arguments and includes the output.
//! [`docker`] returns the output whatever the exit status, so tests can assert on failures;
//! [`docker_ok`] also requires success and returns stdout.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;

use crate::cmd::{check_success, describe, output_with_timeout};

/// How long one `docker` CLI invocation may take before it is killed.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// The `docker` CLI program: `$BUSBAR_DOCKER_CLI` if set, else `docker` from `PATH`.
pub fn docker_program() -> String {
    std::env::var("BUSBAR_DOCKER_CLI").unwrap_or_else(|_| "docker".to_string())
}

/// A `docker -H HOST_URL ARGS...` command, with the CLI's hints and any ambient context
/// (`DOCKER_HOST`, `DOCKER_CONTEXT`) out of the way.
pub fn docker_command(host_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(docker_program());
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env("DOCKER_CLI_HINTS", "false")
        .arg("-H")
        .arg(host_url)
        .args(args);
    cmd
}

/// Runs `docker -H host_url args...` with an explicit timeout; `Err` only when the CLI could
/// not be started or timed out (a non-zero exit is returned as `Ok`).
pub fn try_docker(
    host_url: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    output_with_timeout(&mut docker_command(host_url, args), stdin, timeout)
}

/// Runs `docker -H host_url args...` and returns its output, whatever its exit status.
/// Panics if the CLI cannot be started or takes longer than [`DOCKER_TIMEOUT`].
#[track_caller]
pub fn docker(host_url: &str, args: &[&str]) -> Output {
    try_docker(host_url, args, None, DOCKER_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`docker`] with `stdin` fed to the CLI (e.g. `docker import -`, `docker exec -i`).
#[track_caller]
pub fn docker_with_stdin(host_url: &str, args: &[&str], stdin: &[u8]) -> Output {
    try_docker(host_url, args, Some(stdin), DOCKER_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `docker -H host_url args...`, panics unless it succeeds, and returns its stdout with
/// surrounding whitespace trimmed.
#[track_caller]
pub fn docker_ok(host_url: &str, args: &[&str]) -> String {
    let out = docker(host_url, args);
    if let Err(e) = check_success(&describe(&docker_command(host_url, args)), &out) {
        panic!("{e:#}");
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
