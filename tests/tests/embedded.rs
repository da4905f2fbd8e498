//! The single-machine default: `busbar-gateway` with no `--agent` runs an agent in-process on
//! the local engine. The passthrough suite runs through it, and its `--config` chains apply.

mod support;

use support::adapters::{append_env, FakeAdapter};
use support::{Front, Process, TempDir};
use testbed::{docker_ok, Testbed};

fn setup() -> (String, Front) {
    let engine = Testbed::shared().hosts()[0].docker_url();
    let gateway = Front::embedded(&engine);
    (engine, gateway)
}

mod passthrough {
    include!("cases/passthrough.rs");
}

#[test]
fn embedded_gateway_runs_the_config_chains() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let adder = FakeAdapter::start(append_env("VIA", "embedded"));
    let dir = TempDir::new();
    let path = dir.join("adapters.yml");
    std::fs::write(&path, format!("endpoints:\n  \"POST /*/containers/create\":\n    pre: [adder]\nadapters:\n  adder: {}\n", adder.url)).unwrap();
    let gateway = Process::gateway(&["--docker", &engine, "--config", path.to_str().unwrap()]);
    assert_eq!(
        docker_ok(
            &gateway.url,
            &["run", "--rm", "busybox", "sh", "-c", "echo $VIA"]
        ),
        "embedded"
    );
}
