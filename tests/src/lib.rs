//! busbar's real-engine test bed.
//!
//! Integration tests need real Docker engines ("hosts"), each ideally with its own network
//! address, and sometimes an etcd. This crate provides them, and the helpers tests use with
//! them:
//!
//! ```no_run
//! use testbed::{Testbed, TestbedSpec};
//!
//! let bed = Testbed::start(TestbedSpec { hosts: 2, netns: true, etcd: true }).unwrap();
//! let h1 = bed.host("h1");
//! assert_eq!(h1.docker_ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi");
//! h1.stop_engine().unwrap();
//! h1.start_engine().unwrap();
//! drop(bed); // everything is gone after this
//! ```
//!
//! # Design: a supervisor process
//!
//! The bed is not run by the test process itself but by a separate supervisor, the
//! `busbar-testbed` binary of this crate. [`Testbed::start`] spawns it with piped stdin and
//! stdout; it sets the bed up and prints one line of JSON ([`info::BedInfo`]) describing it,
//! then serves commands on stdin (see `supervisor`). The test process only holds the write end
//! of the supervisor's stdin. When that closes, the supervisor tears everything down: dockerds
//! and their containerds, shims and containers, etcd, network namespaces and links, mounts,
//! the bed's directory. The pipe closes however the test process ends: by dropping the
//! [`Testbed`], by a panic, by `abort`, by SIGKILL, or at the end of a test binary whose
//! [`Testbed::shared`] bed (a static) is never dropped. A guard inside the test process could
//! not do that. The supervisor also tears down on SIGINT, SIGTERM and SIGHUP.
//!
//! What a supervisor that is itself SIGKILLed leaves behind is found through the slot files
//! under `/run/busbar-testbed` and reclaimed by the next bed that needs the slot, or by
//! `busbar-testbed --cleanup-stale`.
//!
//! # Hosts
//!
//! Host `hN` in slot S (slots keep concurrent beds apart machine-wide) has the directory
//! `/tmp/bbt-XXXXXXXX/hN` with the engine's data root, exec root, `docker.sock` and
//! `dockerd.log`. With `netns`, it lives in the network namespace `bbtS` at `10.77.S.2`,
//! joined to the root namespace (`10.77.S.1`) by a veth pair; the root namespace routes between
//! hosts and to their containers (`172.20.S.0/24`, the engine's `--bip`). Without `netns`,
//! engines share the root namespace, each with its own bridge `bbtS` and `--iptables=false`, so
//! that they do not fight over `docker0` and the iptables chains. Every engine has the image
//! `busybox:latest`, made from the machine's static busybox (no registry is needed).
//!
//! Everything here needs root (namespaces, dockerd); the unit tests of this crate do not.
//!
//! # Debugging
//!
//! - `BUSBAR_TESTBED_VERBOSE=1` makes the supervisor log its steps (dockerd command lines,
//!   readiness, teardown time) to stderr; warnings and errors are always logged there.
//! - An engine that fails to start is reported with the tail of its `dockerd.log`.
//! - `BUSBAR_TESTBED_BIN` overrides where the supervisor binary is looked for.
//! - The shared bed is torn down just *after* its test binary exits (about a second), so
//!   a `ip netns list` right after `cargo test` may still show it.
//! - `busbar-testbed --cleanup-stale` removes whatever beds whose supervisor was SIGKILLed
//!   left behind (it never touches a bed whose supervisor is alive).

pub mod cmd;
pub mod docker;
pub mod info;
pub mod supervisor;
pub mod util;

mod bed;

pub use bed::{
    supervisor_binary, Host, Testbed, TestbedSpec, COMMAND_TIMEOUT, START_TIMEOUT, TEARDOWN_TIMEOUT,
};
pub use cmd::output_with_timeout;
pub use docker::{
    docker, docker_command, docker_ok, docker_with_stdin, try_docker, DOCKER_TIMEOUT,
};
pub use util::{eventually, free_port, unique_name, wait_until};
