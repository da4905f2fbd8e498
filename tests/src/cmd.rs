//! Running external programs with a deadline.
//!
//! Everything the test bed runs (the `docker` CLI, `ip`, `etcdctl`, ...) goes through
//! [`output_with_timeout`], so a hung program is killed and reported with its arguments and
//! whatever it printed, instead of hanging a test (or CI) forever.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the pipes of a finished program may stay open (held by a grandchild that inherited
/// them) before we stop waiting for the rest of its output.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Runs `cmd` to completion, feeding it `stdin` (or /dev/null), and returns its output,
/// whatever its exit status. If it is still running after `timeout` it is killed, and the
/// error names the command and includes what it had printed so far.
pub fn output_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let shown = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    feed_stdin(&mut child, stdin);
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let status = wait_with_deadline(&mut child, timeout)?;
    // After a timeout, wait only briefly: a grandchild may still hold the pipes open.
    let grace = if status.is_some() {
        PIPE_GRACE
    } else {
        Duration::from_millis(200)
    };
    let stdout = stdout.finish(grace);
    let stderr = stderr.finish(grace);
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => bail!(
            "{shown} timed out after {timeout:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Like [`output_with_timeout`] without stdin, but also fails unless the program exits with
/// status 0; returns its stdout as text.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let shown = describe(cmd);
    let out = output_with_timeout(cmd, None, timeout)?;
    check_success(&shown, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the program's status, stdout and stderr unless `out` is a success.
pub fn check_success(shown: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{shown} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A readable rendering of a command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = format!("`{}", cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s.push('`');
    s
}

/// Polls `child` until it exits (`Some(status)`) or `timeout` passes, in which case it is
/// killed and reaped and `None` is returned.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn feed_stdin(child: &mut Child, stdin: Option<&[u8]>) {
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        let bytes = bytes.to_vec();
        // A writer thread, so a program that does not read its input cannot block us.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
}

/// A pipe being drained by a thread; what was read so far stays readable even while the pipe
/// is still open (a killed program's grandchild may hold it).
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    /// Waits up to `grace` for end-of-file, then returns what was read.
    fn finish(self, grace: Duration) -> Vec<u8> {
        let _ = self.done.recv_timeout(grace);
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.clone()
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> Drain {
    let (tx, done) = mpsc::channel();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&buf);
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        }
        let _ = tx.send(());
    });
    Drain { buf, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_stdin() {
        let out = output_with_timeout(
            &mut Command::new("cat"),
            Some(b"abc"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn kills_on_timeout_and_reports_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        let t0 = Instant::now();
        let err = output_with_timeout(&mut cmd, None, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("sleep 30"), "{err}");
        assert!(err.contains("started"), "{err}");
    }

    #[test]
    fn run_ok_reports_failures() {
        let err = run_ok(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("oops") && err.contains('3'), "{err}");
    }
}
