//! The test bed itself: hosts with real engines and their own addresses, etcd, stopping and
//! starting engines, and, above all, that nothing is left behind however the bed ends
//! (dropped, stdin closed without the library, SIGTERM, a SIGKILLed supervisor).
//! Needs root, like every end-to-end test.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testbed::info::{BedInfo, StartReply};
use testbed::{
    docker_ok, output_with_timeout, supervisor_binary, try_docker, wait_until, Testbed, TestbedSpec,
};

const SHORT: Duration = Duration::from_secs(20);

#[track_caller]
fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))?
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        });
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "the test bed needs root (network namespaces, dockerd)"
    );
}

/// Runs a command and returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = output_with_timeout(cmd, None, SHORT).unwrap_or_else(|e| panic!("{e:#}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ping_cmd(addr: IpAddr) -> Command {
    let mut cmd = Command::new("busybox");
    cmd.args(["ping", "-c", "1", "-W", "3", &addr.to_string()]);
    cmd
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--dial-timeout", "5s"])
        .args(args);
    cmd
}

fn engine_answers(url: &str) -> bool {
    try_docker(
        url,
        &["version", "--format", "{{.Server.Version}}"],
        None,
        SHORT,
    )
    .is_ok_and(|o| o.status.success())
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

/// Processes whose command line mentions `dir` (the engines, their containerds and shims).
fn pids_mentioning(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&needle)
            })
        })
        .collect()
}

fn netns_list() -> String {
    run(Command::new("ip").args(["netns", "list"])).1
}

/// Asserts that nothing of the bed described by `info` is left: namespaces, links, processes
/// (`extra_pids` too, e.g. containers), the directory.
#[track_caller]
fn assert_gone(info: &BedInfo, extra_pids: &[u32]) {
    let mut pids: Vec<u32> = info.hosts.iter().map(|h| h.pid).collect();
    pids.extend_from_slice(extra_pids);
    pids.push(info.supervisor_pid);
    let clean = wait_until(Duration::from_secs(15), || {
        !info.dir.exists()
            && pids.iter().all(|&p| !pid_alive(p))
            && pids_mentioning(&info.dir).is_empty()
    });
    assert!(
        clean,
        "leftovers: dir exists={} live pids={:?} processes mentioning the dir={:?}",
        info.dir.exists(),
        pids.iter().filter(|&&p| pid_alive(p)).collect::<Vec<_>>(),
        pids_mentioning(&info.dir)
    );
    let namespaces = netns_list();
    for host in &info.hosts {
        // Once released, a slot may already belong to a bed of a test running in parallel.
        let slot_file = Path::new("/run/busbar-testbed/slots").join(host.slot.to_string());
        if let Ok(record) = std::fs::read_to_string(&slot_file) {
            let owner: serde_json::Value = serde_json::from_str(&record).unwrap();
            assert_ne!(
                owner["supervisor_pid"], info.supervisor_pid,
                "slot {} is still claimed",
                host.slot
            );
            continue;
        }
        let name = format!("bbt{}", host.slot);
        assert!(
            !namespaces.split_whitespace().any(|n| n == name),
            "namespace {name} is left: {namespaces}"
        );
        assert!(
            !Path::new("/sys/class/net").join(&name).exists(),
            "link {name} is left"
        );
    }
}

/// Starts a container that keeps running (so teardown has something to kill) and returns the
/// pid of its process.
fn start_sleeper(url: &str) -> u32 {
    let name = testbed::unique_name("sleeper");
    docker_ok(
        url,
        &["run", "-d", "--name", &name, "busybox", "sleep", "600"],
    );
    let pid = docker_ok(url, &["inspect", "-f", "{{.State.Pid}}", &name]);
    pid.parse()
        .unwrap_or_else(|_| panic!("container pid {pid:?}"))
}

#[test]
fn two_hosts_in_namespaces_with_etcd() {
    testbed::e2e!();
    require_root();
    let bed = Testbed::start(TestbedSpec {
        hosts: 2,
        netns: true,
        etcd: true,
    })
    .unwrap();
    eprintln!("2 hosts + etcd started in {:?}", bed.startup_time());
    let (h1, h2) = (bed.host("h1"), bed.host("h2"));

    for host in bed.hosts() {
        assert_eq!(
            host.docker_ok(&["run", "--rm", "busybox", "echo", "hello"]),
            "hello",
            "on {}",
            host.name()
        );
        assert!(host.docker_sock().to_string_lossy().len() < 100);
        assert_eq!(
            host.docker_url(),
            format!("unix://{}", host.docker_sock().display())
        );
    }

    // Distinct addresses, each reachable from the root namespace, and from the other host.
    let (a1, a2) = (
        h1.addr().expect("h1 has an address"),
        h2.addr().expect("h2 has an address"),
    );
    assert_ne!(a1, a2);
    assert_ne!(h1.netns(), h2.netns());
    for addr in [a1, a2] {
        let (ok, out) = run(&mut ping_cmd(addr));
        assert!(ok, "ping {addr} from the root namespace: {out}");
    }
    let (ok, out) =
        run(h1
            .command_in("busybox")
            .args(["ping", "-c", "1", "-W", "3", &a2.to_string()]));
    assert!(ok, "ping h2 ({a2}) from inside h1: {out}");
    let (ok, out) = run(h1
        .command_in("ip")
        .args(["-o", "-4", "addr", "show", "dev", "eth0"]));
    assert!(
        ok && out.contains(&a1.to_string()),
        "h1's eth0 inside its namespace: {out}"
    );
    let ping = h1.docker(&[
        "run",
        "--rm",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &a2.to_string(),
    ]);
    assert!(
        ping.status.success(),
        "a container on h1 pings h2: {ping:?}"
    );

    // etcd answers from the root namespace and from inside a host.
    let etcd = bed.etcd().expect("the bed has an etcd");
    let (ok, out) = run(&mut etcdctl(etcd, &["put", "/bbt/key", "value"]));
    assert!(ok, "etcdctl put: {out}");
    let from_h1 = h1.etcd_url().expect("h1 knows etcd's address");
    let mut get = h1.command_in("etcdctl");
    get.env("ETCDCTL_API", "3").args([
        "--endpoints",
        from_h1,
        "--dial-timeout",
        "5s",
        "get",
        "/bbt/key",
        "--print-value-only",
    ]);
    let (ok, out) = run(&mut get);
    assert!(
        ok && out.trim() == "value",
        "etcdctl get from inside h1 via {from_h1}: {out}"
    );

    // An etcd outage: stopped, etcd refuses every client; started again, it is back at the
    // same URLs with the same data.
    bed.stop_etcd().unwrap();
    let (ok, out) = run(&mut etcdctl(etcd, &["get", "/bbt/key"]));
    assert!(!ok, "etcd still answers after stop_etcd: {out}");
    bed.start_etcd().unwrap();
    let (ok, out) = run(&mut get);
    assert!(
        ok && out.trim() == "value",
        "etcdctl get from inside h1 via {from_h1} after start_etcd: {out}"
    );

    // Stopping an engine silences exactly that engine; starting it brings it back, data kept.
    let old_pid = h2.engine_pid().unwrap();
    h2.stop_engine().unwrap();
    assert!(
        !engine_answers(&h2.docker_url()),
        "h2 still answers after stop_engine"
    );
    assert!(h2.engine_pid().is_err(), "a stopped engine has no pid");
    assert!(
        engine_answers(&h1.docker_url()),
        "h1 was affected by stopping h2"
    );
    h2.start_engine().unwrap();
    assert!(
        engine_answers(&h2.docker_url()),
        "h2 does not answer after start_engine"
    );
    assert_ne!(h2.engine_pid().unwrap(), old_pid);
    assert_eq!(
        h2.docker_ok(&["run", "--rm", "busybox", "echo", "again"]),
        "again"
    );

    let info = bed.info().clone();
    let engine_pids = vec![
        h1.engine_pid().unwrap(),
        h2.engine_pid().unwrap(),
        start_sleeper(&h1.docker_url()),
    ];
    drop(bed);
    assert_gone(&info, &engine_pids);
}

#[test]
fn crash_restart_and_partition_a_host() {
    testbed::e2e!();
    require_root();
    let bed = Testbed::start(TestbedSpec::default()).unwrap();
    let host = &bed.hosts()[0];
    let addr = host.addr().unwrap();

    // A crash: the engine is gone, its containers live on until it comes back.
    let name = testbed::unique_name("survivor");
    host.docker_ok(&[
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--name",
        &name,
        "busybox",
        "sleep",
        "600",
    ]);
    let container_pid: u32 = host
        .docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name])
        .parse()
        .unwrap();
    host.kill_engine().unwrap();
    assert!(!engine_answers(&host.docker_url()));
    assert!(
        pid_alive(container_pid),
        "the container died with the engine"
    );
    let t0 = Instant::now();
    host.start_engine().unwrap();
    eprintln!("engine restarted after a crash in {:?}", t0.elapsed());
    assert_eq!(
        host.docker_ok(&["inspect", "-f", "{{.State.Running}}", &name]),
        "false"
    );
    assert_eq!(
        host.docker_ok(&["run", "--rm", "busybox", "echo", "back"]),
        "back"
    );

    // A partition: the host's address stops answering, then answers again.
    host.disconnect().unwrap();
    let (ok, _) = run(&mut ping_cmd(addr));
    assert!(!ok, "{addr} answers while disconnected");
    host.reconnect().unwrap();
    let (ok, out) = run(&mut ping_cmd(addr));
    assert!(ok, "{addr} does not answer after reconnect: {out}");
}

#[test]
fn hosts_in_the_root_namespace() {
    testbed::e2e!();
    require_root();
    let bed = Testbed::start(TestbedSpec {
        hosts: 2,
        netns: false,
        etcd: false,
    })
    .unwrap();
    eprintln!("2 root-namespace hosts started in {:?}", bed.startup_time());
    for host in bed.hosts() {
        assert_eq!(host.addr(), None);
        assert_eq!(host.netns(), None);
        assert_eq!(
            host.docker_ok(&["run", "--rm", "busybox", "echo", "hello"]),
            "hello"
        );
        // User networks come from the host's own pool, so the two engines never collide.
        let net = testbed::unique_name("net");
        host.docker_ok(&["network", "create", &net]);
        let subnet = host.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            &net,
        ]);
        assert!(
            subnet.starts_with("100."),
            "{net} got {subnet}, outside the host's pool {}",
            host.info().address_pool
        );
        let out = host.docker(&[
            "run",
            "--rm",
            "--network",
            &net,
            "busybox",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ]);
        assert!(
            out.status.success(),
            "a container on a user network: {out:?}"
        );
    }
    let info = bed.info().clone();
    let sleeper = start_sleeper(&bed.hosts()[0].docker_url());
    drop(bed);
    assert_gone(&info, &[sleeper]);
}

#[test]
fn the_shared_bed_is_started_once() {
    testbed::e2e!();
    require_root();
    let a = Testbed::shared();
    let b = Testbed::shared();
    assert!(std::ptr::eq(a, b));
    eprintln!("the shared bed (1 host) started in {:?}", a.startup_time());
    assert_eq!(a.hosts().len(), 1);
    assert!(a.etcd().is_none());
    assert_eq!(
        a.hosts()[0].docker_ok(&["run", "--rm", "busybox", "sh", "-c", "seq 3 | wc -l"]),
        "3"
    );
}

/// A supervisor spawned without the library: its stdin, its description, its stdout lines.
struct RawSupervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    info: BedInfo,
}

impl RawSupervisor {
    fn start(args: &[&str]) -> RawSupervisor {
        let mut child = Command::new(supervisor_binary().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(testbed::START_TIMEOUT)
            .expect("the supervisor's first line");
        let info = match serde_json::from_str(&line) {
            Ok(StartReply::Ready(info)) => info,
            other => panic!("the supervisor printed {line:?}: {other:?}"),
        };
        RawSupervisor { child, stdin, info }
    }

    /// Waits (bounded) for the supervisor to exit.
    fn wait_exit(&mut self) {
        let t0 = Instant::now();
        let exited = wait_until(testbed::TEARDOWN_TIMEOUT, || {
            self.child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            panic!(
                "the supervisor did not exit within {:?}",
                testbed::TEARDOWN_TIMEOUT
            );
        }
        eprintln!("teardown took {:?}", t0.elapsed());
    }
}

#[test]
fn closing_stdin_tears_everything_down() {
    testbed::e2e!();
    require_root();
    let mut sup = RawSupervisor::start(&["--hosts", "1", "--netns"]);
    let url = format!("unix://{}", sup.info.hosts[0].docker_sock.display());
    let sleeper = start_sleeper(&url);
    assert!(pid_alive(sleeper));
    drop(sup.stdin.take());
    sup.wait_exit();
    assert_gone(&sup.info, &[sleeper]);
}

#[test]
fn sigterm_tears_everything_down() {
    testbed::e2e!();
    require_root();
    let mut sup = RawSupervisor::start(&["--hosts", "1"]);
    let (ok, out) = run(Command::new("kill").args(["-TERM", &sup.child.id().to_string()]));
    assert!(ok, "{out}");
    sup.wait_exit();
    assert_gone(&sup.info, &[]);
}

#[test]
fn cleanup_stale_removes_what_a_killed_supervisor_left() {
    testbed::e2e!();
    require_root();
    let mut sup = RawSupervisor::start(&["--hosts", "1", "--netns"]);
    let url = format!("unix://{}", sup.info.hosts[0].docker_sock.display());
    let sleeper = start_sleeper(&url);
    sup.child.kill().unwrap(); // SIGKILL: no teardown at all
    sup.child.wait().unwrap();
    // (Unless a bed starting in parallel already reclaimed the dead supervisor's slot.)
    let slot_file = Path::new("/run/busbar-testbed/slots").join(sup.info.hosts[0].slot.to_string());
    let reclaimed = std::fs::read_to_string(slot_file).map_or(true, |r| {
        !r.contains(&format!("\"supervisor_pid\":{},", sup.child.id()))
    });
    assert!(
        reclaimed || (sup.info.dir.exists() && pid_alive(sup.info.hosts[0].pid)),
        "the engine outlives a killed supervisor"
    );
    let (ok, out) = run(Command::new(supervisor_binary().unwrap()).arg("--cleanup-stale"));
    assert!(ok, "--cleanup-stale failed: {out}");
    assert_gone(&sup.info, &[sleeper]);
}
