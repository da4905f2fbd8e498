//! The cluster as faithful as one engine (issue #16), with the real `docker` CLI: what a user
//! of one engine does, done through a gateway in front of three nodes (real engines in network
//! namespaces, real agents over mutual TLS), checked as that user would check it. The
//! docker-py side of the same issue is in `tests/py/scenarios.py` (run by `dockerpy.rs`).

mod support;

use std::time::Duration;

use support::{make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Three agents (node1..3, one per host) and a gateway serving them (as in `cluster.rs`).
struct Cluster {
    gateway: Process,
    _agents: Vec<Process>,
    _certs: TempDir,
    /// Each node's engine, for checking behind the gateway's back.
    engines: Vec<String>,
}

impl Cluster {
    fn start(bed: &Testbed) -> Cluster {
        let certs = TempDir::new();
        let hosts = bed.hosts();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(hosts)
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let mut agents = vec![];
        let mut args: Vec<String> = vec![];
        for (host, node) in hosts.iter().zip(NODES) {
            let (agent, addr) = Process::agent_in(host, node, &certs.0, &[]);
            agents.push(agent);
            args.extend(["--agent".into(), format!("{node}={addr}")]);
        }
        args.extend(tls_args(&certs.0, "gateway"));
        args.extend(["--probe-interval", "0.5", "--probe-timeout", "1"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        let info = || {
            let out = docker(&gateway.url, &["info"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        let healthy = wait_until(Duration::from_secs(20), || {
            info().matches("Status: Healthy").count() == 3
        });
        assert!(healthy, "not every node became healthy:\n{}", info());
        Cluster {
            gateway,
            _agents: agents,
            _certs: certs,
            engines: hosts.iter().map(|h| h.docker_url()).collect(),
        }
    }

    fn gw(&self) -> &str {
        &self.gateway.url
    }

    /// The node a container runs on, from the gateway's inspect.
    fn node_of(&self, container: &str) -> String {
        docker_ok(self.gw(), &["inspect", "-f", "{{.Node.Name}}", container])
    }

    /// The nodes whose engine has `docker <kind> inspect name` (asked behind the gateway).
    fn holders(&self, kind: &str, name: &str) -> Vec<&'static str> {
        NODES
            .iter()
            .zip(&self.engines)
            .filter(|(_, e)| docker(e, &[kind, "inspect", name]).status.success())
            .map(|(n, _)| *n)
            .collect()
    }
}

fn three_hosts() -> Testbed {
    Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    })
    .unwrap()
}

/// A named volume is one volume, as on one engine: created on one node, inspected as created,
/// and every container that mounts it (`-v`, `--mount`) runs there and sees its data, unless
/// the user places the container elsewhere on purpose.
#[test]
fn a_named_volume_is_one_volume_and_its_containers_run_where_it_is() {
    testbed::e2e!();
    let bed = three_hosts();
    let c = Cluster::start(&bed);
    let g = c.gw();
    let vol = unique_name("vol");
    assert_eq!(docker_ok(g, &["volume", "create", &vol]), vol);
    let holders = c.holders("volume", &vol);
    assert_eq!(holders.len(), 1, "one volume, on one node: {holders:?}");
    let home = holders[0];
    let home_engine = &c.engines[NODES.iter().position(|n| *n == home).unwrap()];
    // Inspect through the gateway is the volume that was created, as its node has it.
    let fmt = "{{.Name}} {{.Mountpoint}} {{.Driver}}";
    assert_eq!(
        docker_ok(g, &["volume", "inspect", "-f", fmt, &vol]),
        docker_ok(home_engine, &["volume", "inspect", "-f", fmt, &vol]),
    );
    // Creating it again answers it, and makes no second one.
    assert_eq!(docker_ok(g, &["volume", "create", &vol]), vol);
    assert_eq!(c.holders("volume", &vol), [home]);

    // A writer, then readers: spread alone would put them on three nodes.
    let bind = format!("{vol}:/data");
    docker_ok(
        g,
        &[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "echo kept > /data/f",
        ],
    );
    for i in 0..3 {
        let name = format!("{vol}-r{i}");
        let out = docker_ok(
            g,
            &[
                "run", "--name", &name, "-v", &bind, "busybox", "cat", "/data/f",
            ],
        );
        assert_eq!(out, "kept", "reader {i}");
        assert_eq!(c.node_of(&name), home, "reader {i}");
        docker_ok(g, &["rm", &name]);
    }
    let mount = format!("type=volume,source={vol},target=/m");
    assert_eq!(
        docker_ok(
            g,
            &["run", "--rm", "--mount", &mount, "busybox", "cat", "/m/f"]
        ),
        "kept"
    );

    // A constraint that excludes its node wins: the container runs where it says (with the
    // volume as that node has it: a new, empty one, unless an adapter brings the data).
    let elsewhere = NODES.iter().find(|n| **n != home).unwrap();
    let placed = format!("{vol}-elsewhere");
    let constraint = format!("constraint:node=={elsewhere}");
    docker_ok(
        g,
        &[
            "run",
            "-d",
            "--name",
            &placed,
            "-e",
            &constraint,
            "-v",
            &bind,
            "busybox",
            "true",
        ],
    );
    assert_eq!(c.node_of(&placed), *elsewhere);
    // One that keeps its node leaves it there.
    let kept = format!("{vol}-kept");
    let constraint = format!("constraint:node!={elsewhere}");
    docker_ok(
        g,
        &[
            "run",
            "-d",
            "--name",
            &kept,
            "-e",
            &constraint,
            "-v",
            &bind,
            "busybox",
            "true",
        ],
    );
    assert_eq!(c.node_of(&kept), home);
    docker_ok(g, &["rm", "-f", &placed, &kept]);

    // A volume on two nodes (made there one by one) and one on a third: no node has both,
    // and the error says which volume is where.
    let a = unique_name("vola");
    let b = unique_name("volb");
    docker_ok(g, &["volume", "create", &format!("node1/{a}")]);
    docker_ok(g, &["volume", "create", &format!("node2/{b}")]);
    let out = docker(
        g,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{a}:/a"),
            "-v",
            &format!("{b}:/b"),
            "busybox",
            "true",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("[volume {a} (on node1) volume {b} (on node2)]")),
        "{err}"
    );
    docker_ok(g, &["volume", "rm", &a, &b, &vol]);
    assert_eq!(
        docker_ok(
            g,
            &["volume", "ls", "-q", "--filter", &format!("name={vol}")]
        ),
        ""
    );
}

/// `docker` CLI calls whose answers through the cluster are one engine's: the user sees what
/// one engine would show (its words where it has them), each checked against host 1's engine
/// directly where the engine has an answer of its own.
#[test]
fn the_docker_cli_sees_one_engine() {
    testbed::e2e!();
    let bed = three_hosts();
    let c = Cluster::start(&bed);
    let g = c.gw();
    let direct = &c.engines[0];

    // `docker swarm leave --force` (a teardown's): the engine's own 503 and words.
    let stderr = |host: &str, args: &[&str]| {
        let out = docker(host, args);
        assert!(!out.status.success(), "{args:?} succeeded through {host}");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    for args in [
        &["swarm", "leave", "--force"][..],
        &["node", "ls"],
        &["service", "ls"],
    ] {
        assert_eq!(stderr(g, args), stderr(direct, args), "{args:?}");
    }

    // `docker build -t app . && docker run app`: wherever the build ran, the run finds it.
    let dir = TempDir::new();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\n",
    )
    .unwrap();
    for i in 0..3 {
        let app = format!("{}:v{i}", unique_name("app"));
        let mut build =
            testbed::docker_command(g, &["build", "-q", "-t", &app, dir.0.to_str().unwrap()]);
        build.env("DOCKER_BUILDKIT", "0");
        let out = testbed::output_with_timeout(&mut build, None, Duration::from_secs(120)).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            docker_ok(g, &["run", "--rm", &app, "cat", "/built"]),
            "built"
        );
        // The build left no container behind, on any node.
        for engine in &c.engines {
            assert_eq!(docker_ok(engine, &["ps", "-aq"]), "", "{engine}");
        }
        // Placed away from the image: a 404 that says where it is.
        let holder = c.holders("image", &app)[0];
        let out = docker(
            g,
            &[
                "create",
                "--pull",
                "never",
                "-e",
                &format!("constraint:node!={holder}"),
                &app,
                "true",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("{holder} has it")), "{err}");
        docker_ok(g, &["rmi", &app]);
    }

    // `docker commit` of a container on any node, then `docker rm --link`.
    let names: Vec<String> = (0..3)
        .map(|i| format!("{}-{i}", unique_name("cmt")))
        .collect();
    for n in &names {
        docker_ok(
            g,
            &[
                "run",
                "--name",
                n,
                "busybox",
                "sh",
                "-c",
                &format!("echo {n} > /mark"),
            ],
        );
        let image = format!("{n}-img");
        docker_ok(g, &["commit", n, &image]);
        assert_eq!(docker_ok(g, &["run", "--rm", &image, "cat", "/mark"]), *n);
        docker_ok(g, &["rm", n]);
        docker_ok(g, &["rmi", &image]);
    }
    let db = unique_name("db");
    let web = unique_name("web");
    docker_ok(g, &["run", "-d", "--name", &db, "busybox", "sleep", "60"]);
    docker_ok(
        g,
        &[
            "run",
            "-d",
            "--name",
            &web,
            "--link",
            &format!("{db}:database"),
            "busybox",
            "sleep",
            "60",
        ],
    );
    docker_ok(g, &["rm", "--link", &format!("{web}/database")]);
    assert_eq!(
        docker_ok(g, &["inspect", "-f", "{{.HostConfig.Links}}", &web]),
        "[]"
    );
    docker_ok(g, &["rm", "-f", &web, &db]);

    // A network pinned by Swarm's constraint label, and a port its node has taken: the error
    // names the network that ties the container there.
    let net = unique_name("net");
    docker_ok(
        g,
        &[
            "network",
            "create",
            "--label",
            r#"com.docker.swarm.constraints=["node==node2"]"#,
            &net,
        ],
    );
    assert_eq!(c.holders("network", &net), ["node2"]);
    let first = format!("{net}-a");
    docker_ok(
        g,
        &[
            "run", "-d", "--name", &first, "--net", &net, "-p", "8089:80", "busybox", "sleep", "60",
        ],
    );
    assert_eq!(c.node_of(&first), "node2");
    let out = docker(
        g,
        &[
            "run", "-d", "--net", &net, "-p", "8089:80", "busybox", "sleep", "60",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "[network {net} (on node2)]\n[port 8089/tcp (Bridge mode)]"
        )),
        "{err}"
    );
    docker_ok(g, &["rm", "-f", &first]);
    docker_ok(g, &["network", "rm", &net]);

    // `docker info`: `Images` counted as `docker images -a` lists them, by ID (docker-py's
    // scenario checks that every key an engine gives is there: the CLI fills in what lacks).
    let images = docker_ok(g, &["images", "-aq", "--no-trunc"]);
    let distinct: std::collections::BTreeSet<&str> = images.lines().collect();
    assert_eq!(
        docker_ok(g, &["info", "--format", "{{.Images}}"]),
        distinct.len().to_string()
    );
}

/// Debian's docker-compose 1.29 (`tests/run.sh` installs it) runs a 3-service project through
/// the cluster as through one engine: a user network, a named volume two services share,
/// `depends_on`, `--scale`, `logs -f`, `exec` with a terminal, and `down -v` leaves nothing
/// on any node.
#[test]
fn docker_compose_runs_a_project_and_leaves_nothing() {
    testbed::e2e!();
    let bed = three_hosts();
    let c = Cluster::start(&bed);
    let dir = TempDir::new();
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"version: "3.7"
services:
  db:
    image: busybox
    command: sh -c "echo stored > /data/db && sleep 300"
    volumes: [data:/data]
    networks: [back]
  app:
    image: busybox
    command: sleep 300
    depends_on: [db]
    volumes: [data:/data]
    networks: [back]
  web:
    image: busybox
    command: sh -c "echo web up; sleep 300"
    depends_on: [app]
    networks: [back]
networks:
  back: {}
volumes:
  data: {}
"#,
    )
    .unwrap();
    let project = unique_name("proj").replace('-', "");
    let compose = |args: &[&str]| {
        let mut cmd = std::process::Command::new("docker-compose");
        cmd.current_dir(&dir.0)
            .env("DOCKER_HOST", c.gw())
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .args(["-p", &project])
            .args(args);
        cmd
    };
    let run = |args: &[&str]| {
        let out = testbed::output_with_timeout(&mut compose(args), None, Duration::from_secs(180))
            .unwrap();
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["up", "-d", "--scale", "web=3"]);
    let ps = run(&["ps"]);
    assert_eq!(ps.matches(" Up ").count(), 5, "{ps}");
    // `exec` with a terminal (`script` gives it one): the volume db wrote is app's.
    let exec = format!(
        "DOCKER_HOST={} docker-compose -p {project} exec app cat /data/db",
        c.gw()
    );
    let mut script = std::process::Command::new("script");
    script
        .current_dir(&dir.0)
        .args(["-qec", &exec, "/dev/null"]);
    let out = testbed::output_with_timeout(&mut script, None, Duration::from_secs(60)).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stored"),
        "exec -it: {out:?}"
    );
    // `logs -f` follows all three web containers (it never ends by itself).
    let mut follow = compose(&["logs", "-f", "--no-color", "web"]);
    follow.stdout(std::process::Stdio::piped());
    let mut child = follow.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < 3 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("web up") => seen += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(seen, 3, "logs -f showed {seen} of the 3 web containers");
    assert!(
        child.try_wait().unwrap().is_none(),
        "logs -f ended by itself"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    run(&["down", "-v"]);
    let label = format!("label=com.docker.compose.project={project}");
    for engine in &c.engines {
        for kind in ["container", "network", "volume"] {
            let mut args = vec![kind, "ls", "-q", "--filter", &label];
            if kind == "container" {
                args.insert(2, "-a");
            }
            assert_eq!(docker_ok(engine, &args), "", "{kind} left on {engine}");
        }
    }
}
