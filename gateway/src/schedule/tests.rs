use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::model::{Health, NodeSnapshot};

const GIB: i64 = 1 << 30;

fn info(ncpu: i64, mem: i64) -> Value {
    json!({
        "NCPU": ncpu, "MemTotal": mem, "OperatingSystem": "Ubuntu 24.04 LTS", "KernelVersion": "6.8.0-45-generic",
        "Driver": "overlay2", "OSType": "linux", "Labels": [],
    })
}

fn node(name: &str, labels: &[(&str, &str)]) -> NodeSnapshot {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    let mut n = NodeSnapshot::new(name, &format!("{name}:4243"), labels);
    n.health = Health::Healthy;
    n.last_error = None;
    n.info = info(4, 8 * GIB).into();
    n
}

fn container(id: &str, name: &str) -> Value {
    json!({"Id": id, "Names": [format!("/{name}")], "Image": "busybox", "Labels": {}, "Ports": [], "State": "running"})
}

fn image(id: &str, tags: &[&str]) -> Value {
    json!({"Id": id, "RepoTags": tags})
}

/// A cluster as the gateway would see it just before scheduling.
struct Cluster {
    nodes: Vec<NodeSnapshot>,
    containers: Vec<Vec<Value>>,
    images: Vec<Vec<Value>>,
}

impl Cluster {
    fn new(nodes: Vec<NodeSnapshot>) -> Cluster {
        let n = nodes.len();
        Cluster {
            nodes,
            containers: vec![Vec::new(); n],
            images: vec![Vec::new(); n],
        }
    }

    /// `n1`, `n2`, … all healthy, 4 CPUs, 8 GiB.
    fn plain(n: usize) -> Cluster {
        Cluster::new((1..=n).map(|i| node(&format!("n{i}"), &[])).collect())
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("node in the test cluster")
    }

    fn add_container(&mut self, node: &str, c: Value) {
        let i = self.idx(node);
        self.containers[i].push(c);
    }

    fn add_image(&mut self, node: &str, img: Value) {
        let i = self.idx(node);
        self.images[i].push(img);
    }

    fn candidates(&self) -> Vec<Candidate<'_>> {
        (0..self.nodes.len())
            .map(|i| Candidate {
                node: &self.nodes[i],
                containers: &self.containers[i],
                images: &self.images[i],
            })
            .collect()
    }

    fn choose(
        &self,
        strategy: Strategy,
        body: Value,
        pending: &[Pending],
    ) -> Result<String, ScheduleError> {
        choose(strategy, &self.candidates(), &placement(body), pending, 7)
    }

    /// The nodes that pass the filters, sorted by name (spread ranks them all).
    fn passing(&self, body: Value) -> Result<Vec<String>, ScheduleError> {
        let mut nodes = rank(
            Strategy::Spread,
            &self.candidates(),
            &placement(body),
            &[],
            7,
        )?;
        nodes.sort();
        Ok(nodes)
    }
}

fn placement(mut body: Value) -> Placement {
    Placement::from_create(&mut body).expect("valid test body")
}

fn env(exprs: &[&str]) -> Value {
    json!({"Image": "busybox", "Env": exprs})
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn count(placed: &[String], node: &str) -> usize {
    placed.iter().filter(|n| *n == node).count()
}

// ---------------------------------------------------------------------------------------------
// Strategies

#[test]
fn spread_places_9_on_3_nodes_3_each_via_pending() {
    let cluster = Cluster::plain(3);
    let mut pending = Vec::new();
    let mut placed = Vec::new();
    for _ in 0..9 {
        let p = placement(json!({"Image": "busybox"}));
        let node = choose(Strategy::Spread, &cluster.candidates(), &p, &pending, 1).unwrap();
        pending.push(p.pending_on(&node));
        placed.push(node);
    }
    assert_eq!(
        [
            count(&placed, "n1"),
            count(&placed, "n2"),
            count(&placed, "n3")
        ],
        [3, 3, 3]
    );
    // The first three go to three different nodes (ties are broken by the seed's order).
    let mut first: Vec<&String> = placed[..3].iter().collect();
    first.sort();
    first.dedup();
    assert_eq!(first.len(), 3, "{placed:?}");
}

#[test]
fn spread_places_9_on_3_nodes_3_each_via_containers() {
    let mut cluster = Cluster::plain(3);
    let mut placed = Vec::new();
    for i in 0..9 {
        let node = cluster
            .choose(Strategy::Spread, json!({"Image": "busybox"}), &[])
            .unwrap();
        cluster.add_container(&node, container(&format!("{i:064x}"), &format!("c{i}")));
        placed.push(node);
    }
    assert_eq!(
        [
            count(&placed, "n1"),
            count(&placed, "n2"),
            count(&placed, "n3")
        ],
        [3, 3, 3]
    );
}

#[test]
fn spread_breaks_ties_by_the_seed_not_by_name() {
    // An idle cluster whose containers come and go one at a time: every create sees three
    // empty nodes. By name, all of them went to n1.
    let cluster = Cluster::plain(3);
    let p = placement(json!({"Image": "busybox"}));
    let placed: Vec<String> = (0..30)
        .map(|seed| choose(Strategy::Spread, &cluster.candidates(), &p, &[], seed).unwrap())
        .collect();
    for node in ["n1", "n2", "n3"] {
        assert!(count(&placed, node) >= 3, "{node}: {placed:?}");
    }
}

#[test]
fn spread_counts_stopped_containers() {
    let mut cluster = Cluster::plain(3);
    let mut stopped = container("aa", "old");
    stopped["State"] = json!("exited");
    cluster.add_container("n1", stopped);
    cluster.add_container("n2", container("bb", "web"));
    assert_eq!(
        cluster.choose(Strategy::Spread, json!({}), &[]).unwrap(),
        "n3"
    );
}

#[test]
fn binpack_fills_one_node_first() {
    let cluster = Cluster::plain(3);
    let mut pending = Vec::new();
    for _ in 0..5 {
        let p = placement(json!({"Image": "busybox"}));
        let node = choose(Strategy::Binpack, &cluster.candidates(), &p, &pending, 1).unwrap();
        assert_eq!(node, "n1");
        pending.push(p.pending_on(&node));
    }
}

#[test]
fn binpack_prefers_the_fullest_node() {
    let mut cluster = Cluster::plain(3);
    cluster.add_container("n2", container("aa", "a"));
    cluster.add_container("n2", container("bb", "b"));
    cluster.add_container("n3", container("cc", "c"));
    assert_eq!(
        cluster.choose(Strategy::Binpack, json!({}), &[]).unwrap(),
        "n2"
    );
}

#[test]
fn binpack_moves_on_when_memory_is_full_then_runs_out() {
    let mut cluster = Cluster::plain(3);
    for n in &mut cluster.nodes {
        n.info = info(2, 2 * GIB).into();
    }
    let body = json!({"Image": "busybox", "HostConfig": {"Memory": GIB}});
    let mut pending = Vec::new();
    let mut placed = Vec::new();
    for _ in 0..6 {
        let p = placement(body.clone());
        let node = choose(Strategy::Binpack, &cluster.candidates(), &p, &pending, 1).unwrap();
        pending.push(p.pending_on(&node));
        placed.push(node);
    }
    assert_eq!(placed, names(&["n1", "n1", "n2", "n2", "n3", "n3"]));
    let err = choose(
        Strategy::Binpack,
        &cluster.candidates(),
        &placement(body),
        &pending,
        1,
    )
    .unwrap_err();
    assert_eq!(err, ScheduleError::NoResources);
    assert_eq!(
        err.to_string(),
        "no resources available to schedule container"
    );
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn spread_weighs_memory_reservations() {
    let mut cluster = Cluster::plain(2);
    cluster.nodes[0].info = info(4, 4 * GIB).into();
    cluster.nodes[1].info = info(4, 16 * GIB).into();
    // Both nodes hold one pending 2 GiB container: n1 is half full, n2 an eighth.
    let p = placement(json!({"HostConfig": {"Memory": 2 * GIB}}));
    let pending = vec![p.pending_on("n1"), p.pending_on("n2")];
    assert_eq!(
        choose(Strategy::Spread, &cluster.candidates(), &p, &pending, 1).unwrap(),
        "n2"
    );
    assert_eq!(
        choose(Strategy::Binpack, &cluster.candidates(), &p, &pending, 1).unwrap(),
        "n1"
    );
}

#[test]
fn reservations_in_enriched_container_entries_count() {
    let mut cluster = Cluster::plain(2);
    let mut big = container("aa", "big");
    big["HostConfig"] = json!({"NetworkMode": "bridge", "Memory": 7 * GIB});
    cluster.add_container("n1", big);
    let body = json!({"HostConfig": {"Memory": 2 * GIB}});
    assert_eq!(cluster.passing(body).unwrap(), names(&["n2"]));
}

/// What a node's agent reports its containers reserve counts, once, beside pending creates.
#[test]
fn reservations_reported_by_the_agent_count() {
    let mut cluster = Cluster::plain(2);
    cluster.nodes[0].reserved = crate::model::Reserved {
        cpus: 3.5,
        memory: 7 * GIB as u64,
    };
    let memory = json!({"HostConfig": {"Memory": 2 * GIB}});
    assert_eq!(cluster.passing(memory.clone()).unwrap(), names(&["n2"]));
    let cpus = json!({"HostConfig": {"NanoCpus": 1_000_000_000}});
    assert_eq!(cluster.passing(cpus).unwrap(), names(&["n2"]));
    // The same container also in an enriched list entry is not counted twice.
    let mut big = container("aa", "big");
    big["HostConfig"] = json!({"Memory": 7 * GIB});
    cluster.add_container("n1", big);
    let small = json!({"HostConfig": {"Memory": GIB}});
    assert_eq!(cluster.passing(small).unwrap(), names(&["n1", "n2"]));
}

#[test]
fn resources_table() {
    // One node: 2 CPUs, 4 GiB (4.2 GiB and 2.1 CPUs with the 5% overcommit).
    let mut cluster = Cluster::plain(1);
    cluster.nodes[0].info = info(2, 4 * GIB).into();
    let cpus = |c: f64| (c * 1e9) as i64;
    let cases: &[(&str, Value, &[Pending], bool)] = &[
        ("no reservation", json!({}), &[], true),
        (
            "memory fits",
            json!({"HostConfig": {"Memory": 4 * GIB}}),
            &[],
            true,
        ),
        (
            "memory too big",
            json!({"HostConfig": {"Memory": 1000 * GIB}}),
            &[],
            false,
        ),
        (
            "cpus fit",
            json!({"HostConfig": {"NanoCpus": cpus(2.0)}}),
            &[],
            true,
        ),
        (
            "cpus too many",
            json!({"HostConfig": {"NanoCpus": cpus(3.0)}}),
            &[],
            false,
        ),
        (
            "cpus taken by pending",
            json!({"HostConfig": {"NanoCpus": cpus(1.0)}}),
            &[Pending {
                node: "n1".into(),
                host_ports: vec![],
                memory: 0,
                nano_cpus: cpus(1.5),
                name: None,
                labels: BTreeMap::new(),
            }],
            false,
        ),
        (
            "cpu shares are a weight, not cores",
            json!({"HostConfig": {"CpuShares": 4096}}),
            &[],
            true,
        ),
        (
            "pending on another node does not count",
            json!({"HostConfig": {"Memory": 4 * GIB}}),
            &[Pending {
                node: "n9".into(),
                memory: 4 * GIB,
                ..Pending::default()
            }],
            true,
        ),
    ];
    for (what, body, pending, fits) in cases {
        let got = choose(
            Strategy::Spread,
            &cluster.candidates(),
            &placement(body.clone()),
            pending,
            1,
        );
        assert_eq!(got.is_ok(), *fits, "{what}: {got:?}");
        if !fits {
            assert_eq!(got.unwrap_err(), ScheduleError::NoResources, "{what}");
        }
    }
}

#[test]
fn random_is_reproducible_and_reaches_every_node() {
    let cluster = Cluster::plain(3);
    let body = json!({"Image": "busybox"});
    let p = placement(body);
    let pick = |seed| choose(Strategy::Random, &cluster.candidates(), &p, &[], seed).unwrap();
    for seed in 0..20 {
        assert_eq!(pick(seed), pick(seed));
    }
    let picked: std::collections::BTreeSet<String> = (0..64).map(pick).collect();
    assert_eq!(picked.len(), 3, "{picked:?}");
    // Random still honours the filters.
    let p = placement(env(&["constraint:node==n2"]));
    for seed in 0..20 {
        assert_eq!(
            choose(Strategy::Random, &cluster.candidates(), &p, &[], seed).unwrap(),
            "n2"
        );
    }
}

#[test]
fn strategy_from_str() {
    assert_eq!("spread".parse::<Strategy>(), Ok(Strategy::Spread));
    assert_eq!("binpack".parse::<Strategy>(), Ok(Strategy::Binpack));
    assert_eq!("random".parse::<Strategy>(), Ok(Strategy::Random));
    assert_eq!(Strategy::default(), Strategy::Spread);
    assert_eq!(Strategy::Binpack.to_string(), "binpack");
    let err = "Spread".parse::<Strategy>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown scheduling strategy \"Spread\": expected spread, binpack or random"
    );
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn rank_lists_every_fitting_node_best_first() {
    let mut cluster = Cluster::plain(3);
    cluster.add_container("n1", container("aa", "a"));
    cluster.add_container("n1", container("bb", "b"));
    cluster.add_container("n2", container("cc", "c"));
    let p = placement(json!({}));
    assert_eq!(
        rank(Strategy::Spread, &cluster.candidates(), &p, &[], 1).unwrap(),
        names(&["n3", "n2", "n1"])
    );
    assert_eq!(
        rank(Strategy::Binpack, &cluster.candidates(), &p, &[], 1).unwrap(),
        names(&["n1", "n2", "n3"])
    );
}

// ---------------------------------------------------------------------------------------------
// Health and the empty cluster

#[test]
fn unhealthy_nodes_are_excluded() {
    let mut cluster = Cluster::plain(3);
    cluster.nodes[0].health = Health::Unhealthy;
    cluster.nodes[1].health = Health::Disconnected;
    assert_eq!(cluster.passing(json!({})).unwrap(), names(&["n3"]));
    assert_eq!(
        cluster.choose(Strategy::Binpack, json!({}), &[]).unwrap(),
        "n3"
    );

    cluster.nodes[2].health = Health::Unhealthy;
    let err = cluster
        .choose(Strategy::Spread, json!({}), &[])
        .unwrap_err();
    assert_eq!(err.to_string(), "No healthy node available in the cluster");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Even with a constraint only a healthy node could fail, the health error comes first.
    let err = cluster
        .choose(Strategy::Spread, env(&["constraint:node==n9"]), &[])
        .unwrap_err();
    assert_eq!(err, ScheduleError::NoHealthyNode);
}

#[test]
fn no_nodes_at_all() {
    let err = choose(Strategy::Spread, &[], &placement(json!({})), &[], 0).unwrap_err();
    assert_eq!(err.to_string(), "No nodes available in the cluster");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

// ---------------------------------------------------------------------------------------------
// Constraints

fn labelled_cluster() -> Cluster {
    let mut n1 = node("n1", &[("zone", "a"), ("storage", "ssd")]);
    let mut n2 = node("n2", &[("zone", "b")]);
    let mut n3 = node("n3", &[("zone", "a"), ("ostype", "windows")]);
    Arc::make_mut(&mut n1.info)["Labels"] = json!(["zone=z", "rack=r1"]);
    Arc::make_mut(&mut n2.info)["Labels"] = json!(["disk=hdd"]);
    Arc::make_mut(&mut n2.info)["ID"] = json!("ABCD:EFGH:IJKL");
    Arc::make_mut(&mut n3.info)["OperatingSystem"] = json!("Alpine Linux v3.20");
    Arc::make_mut(&mut n3.info)["KernelVersion"] = json!("5.15.0");
    Arc::make_mut(&mut n3.info)["Driver"] = json!("btrfs");
    Cluster::new(vec![n1, n2, n3])
}

#[test]
fn constraints_table() {
    let cluster = labelled_cluster();
    let cases: &[(&[&str], &[&str])] = &[
        (&["constraint:node==n1"], &["n1"]),
        (&["constraint:node!=n1"], &["n2", "n3"]),
        (&["constraint:node==n*"], &["n1", "n2", "n3"]),
        (&["constraint:node==?2"], &["n2"]),
        (&["constraint:node==/n[12]/"], &["n1", "n2"]),
        (&["constraint:node==/(?i)^N1$/"], &["n1"]),
        (&["constraint:node!=/^n[12]$/"], &["n3"]),
        (&["constraint:node==ABCD:EFGH:IJKL"], &["n2"]),
        // Agent labels.
        (&["constraint:zone==a"], &["n1", "n3"]),
        (&["constraint:zone!=a"], &["n2"]),
        (&["constraint:storage==ssd"], &["n1"]),
        // A missing label is "": `!=` keeps unlabelled nodes, as in Swarm.
        (&["constraint:storage!=ssd"], &["n2", "n3"]),
        // Engine labels from /info, under the agent's.
        (&["constraint:disk==hdd"], &["n2"]),
        (&["constraint:rack==r1"], &["n1"]),
        // Built-ins from /info, which labels cannot override.
        (&["constraint:storagedriver==overlay2"], &["n1", "n2"]),
        (&["constraint:storagedriver==btrfs"], &["n3"]),
        (&["constraint:operatingsystem==Alpine*"], &["n3"]),
        (&["constraint:operatingsystem==/ubuntu/"], &[]),
        (&["constraint:operatingsystem==/(?i)ubuntu/"], &["n1", "n2"]),
        (&["constraint:kernelversion==6.*"], &["n1", "n2"]),
        (&["constraint:ostype==linux"], &["n1", "n2", "n3"]),
        // Several constraints all hold.
        (&["constraint:zone==a", "constraint:node!=n1"], &["n3"]),
        // The label route works like the Env route.
        (&[], &["n1", "n2", "n3"]),
    ];
    for (exprs, want) in cases {
        let got = cluster.passing(env(exprs));
        match got {
            Ok(got) => assert_eq!(got, names(want), "{exprs:?}"),
            Err(e) => assert!(want.is_empty(), "{exprs:?}: {e}"),
        }
    }
    // Set directly as a label.
    let body = json!({"Labels": {CONSTRAINTS_LABEL: r#"["zone==b"]"#}});
    assert_eq!(cluster.passing(body).unwrap(), names(&["n2"]));
    // Agent labels over engine labels.
    assert!(cluster.passing(env(&["constraint:zone==z"])).is_err());
    // Built-ins over labels.
    assert!(cluster
        .passing(env(&["constraint:ostype==windows"]))
        .is_err());
}

#[test]
fn impossible_constraint_error_text() {
    let cluster = Cluster::plain(3);
    let err = cluster
        .choose(Strategy::Spread, env(&["constraint:node==node9"]), &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[node==node9]"
    );
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Every filter up to the failing one is listed, one line each.
    let body = json!({
        "Image": "busybox",
        "Env": ["constraint:node==node9", "constraint:zone!=b", "affinity:image==~busybox"],
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
    });
    let err = cluster.choose(Strategy::Spread, body, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[port 8080/tcp (Bridge mode)]\n\
         [image==busybox (soft=true)]\n[node==node9 zone!=b]"
    );
}

#[test]
fn soft_constraints_fall_back() {
    let cluster = labelled_cluster();
    let cases: &[(&[&str], &str)] = &[
        // Satisfiable soft constraint: honoured.
        (&["constraint:node==~n3"], "n3"),
        // Unsatisfiable soft constraint: dropped, spread decides.
        (&["constraint:node==~n9"], "n1"),
        // Hard constraint kept, soft one dropped.
        (&["constraint:zone==b", "constraint:node==~n3"], "n2"),
        (&["constraint:zone==a", "constraint:node==~n9"], "n1"),
        // Soft affinity dropped as well.
        (
            &["affinity:container==~nothere", "constraint:node==n2"],
            "n2",
        ),
    ];
    for (exprs, want) in cases {
        assert_eq!(
            cluster.choose(Strategy::Spread, env(exprs), &[]).unwrap(),
            *want,
            "{exprs:?}"
        );
    }
    // A hard failure is still reported (from the second pass).
    let err = cluster
        .choose(
            Strategy::Spread,
            env(&["constraint:node==~n1", "constraint:zone==c"]),
            &[],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[node==n1 zone==c]"
    );
}

// ---------------------------------------------------------------------------------------------
// Affinities

#[test]
fn container_affinity_table() {
    let mut cluster = Cluster::plain(3);
    let db_id = "3f2a9c0e11d24b6a8f0e7c2d9b1a4e5f3f2a9c0e11d24b6a8f0e7c2d9b1a4e5f";
    let mut db = container(db_id, "db");
    // A link alias on n1 is not a container name.
    let mut web = container("ee", "web");
    web["Names"] = json!(["/web"]);
    db["Names"] = json!(["/db"]);
    cluster.add_container("n2", db);
    let mut app = container("ff", "app");
    app["Names"] = json!(["/app", "/app/db"]);
    cluster.add_container("n1", app);
    cluster.add_container("n1", web);
    let pending = [Pending {
        node: "n3".into(),
        name: Some("cache".into()),
        ..Pending::default()
    }];

    let cases: &[(&str, &[&str])] = &[
        ("affinity:container==db", &["n2"]),
        ("affinity:container!=db", &["n1", "n3"]),
        ("affinity:container==d*", &["n2"]),
        ("affinity:container==/^(db|web)$/", &["n1", "n2"]),
        (
            "affinity:container==3f2a9c0e11d24b6a8f0e7c2d9b1a4e5f3f2a9c0e11d24b6a8f0e7c2d9b1a4e5f",
            &["n2"],
        ),
        ("affinity:container==3f2a9c", &["n2"]),
        ("affinity:container==3f2a9c0e11d2", &["n2"]),
        ("affinity:container==cache", &["n3"]),
        ("affinity:container!=cache", &["n1", "n2"]),
        ("affinity:container==app", &["n1"]),
    ];
    for (expr, want) in cases {
        let mut nodes = rank(
            Strategy::Spread,
            &cluster.candidates(),
            &placement(env(&[expr])),
            &pending,
            1,
        )
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
        nodes.sort();
        assert_eq!(nodes, names(want), "{expr}");
    }
    let err = rank(
        Strategy::Spread,
        &cluster.candidates(),
        &placement(env(&["affinity:container==nothere"])),
        &pending,
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[container==nothere (soft=false)]"
    );
    // A link alias ("/app/db") is not a container called db on n1.
    let err = rank(
        Strategy::Spread,
        &cluster.candidates(),
        &placement(env(&["affinity:container==/app.db/"])),
        &pending,
        1,
    );
    assert!(err.is_err(), "{err:?}");
}

#[test]
fn image_affinity_table() {
    let mut cluster = Cluster::plain(3);
    let nginx_id = "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    cluster.add_image(
        "n1",
        image(
            "sha256:1111",
            &["redis:7", "registry.local:5000/tools/redis:7"],
        ),
    );
    cluster.add_image("n2", image(nginx_id, &["nginx:latest"]));
    let cases: &[(&str, &[&str])] = &[
        ("affinity:image==redis", &["n1"]),
        ("affinity:image==redis:7", &["n1"]),
        ("affinity:image==registry.local:5000/tools/redis", &["n1"]),
        ("affinity:image==nginx", &["n2"]),
        ("affinity:image==nginx:latest", &["n2"]),
        ("affinity:image==docker.io/library/nginx", &["n2"]),
        ("affinity:image==abcdef01", &["n2"]),
        ("affinity:image==sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789", &["n2"]),
        ("affinity:image==ngi*", &["n2"]),
        ("affinity:image!=redis", &["n2", "n3"]),
    ];
    for (expr, want) in cases {
        assert_eq!(
            cluster
                .passing(env(&[expr]))
                .unwrap_or_else(|e| panic!("{expr}: {e}")),
            names(want),
            "{expr}"
        );
    }
    assert!(cluster.passing(env(&["affinity:image==redis:6"])).is_err());
}

#[test]
fn label_affinity_table() {
    let mut cluster = Cluster::plain(3);
    let mut web = container("aa", "web");
    web["Labels"] = json!({"app": "web", "tier": "front"});
    cluster.add_container("n1", web);
    cluster.add_container("n2", container("bb", "plain"));
    let cases: &[(&str, &[&str])] = &[
        ("affinity:app==web", &["n1"]),
        ("affinity:app!=web", &["n2", "n3"]),
        ("affinity:tier==fr*", &["n1"]),
        // Swarm quirk kept: a container without the label counts as "", and `*` matches "",
        // but a node with no container at all has nothing to match.
        ("affinity:app==*", &["n1", "n2"]),
    ];
    for (expr, want) in cases {
        assert_eq!(
            cluster
                .passing(env(&[expr]))
                .unwrap_or_else(|e| panic!("{expr}: {e}")),
            names(want),
            "{expr}"
        );
    }
}

/// Swarm's "label affinity in parallel": three runs labelled test.label=true, each refusing a
/// node that already has one, on two nodes: two land, the third fails, because pending creates
/// count.
#[test]
fn label_anti_affinity_sees_pending_creates() {
    let cluster = Cluster::plain(2);
    let body = json!({"Image": "busybox", "Labels": {"test.label": "true"}, "Env": ["affinity:test.label!=true"]});
    let mut pending = Vec::new();
    for want in ["n1", "n2"] {
        let p = placement(body.clone());
        let node = choose(Strategy::Spread, &cluster.candidates(), &p, &pending, 1).unwrap();
        assert_eq!(node, want);
        pending.push(p.pending_on(&node));
    }
    let err = choose(
        Strategy::Spread,
        &cluster.candidates(),
        &placement(body),
        &pending,
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[test.label!=true (soft=false)]"
    );
}

// ---------------------------------------------------------------------------------------------
// Ports

fn publish(host_port: &str) -> Value {
    json!({"Image": "nginx", "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": host_port}]}}})
}

fn with_port(id: &str, ip: &str, public: u16, proto: &str) -> Value {
    let mut c = container(id, id);
    c["Ports"] = json!([{"IP": ip, "PrivatePort": 80, "PublicPort": public, "Type": proto}]);
    c
}

#[test]
fn port_conflicts_table() {
    let cases: &[(&str, Value, Value, bool)] = &[
        (
            "same port",
            with_port("a", "0.0.0.0", 8080, "tcp"),
            publish("8080"),
            true,
        ),
        (
            "same port, IPv6 entry",
            with_port("a", "::", 8080, "tcp"),
            publish("8080"),
            true,
        ),
        (
            "other port",
            with_port("a", "0.0.0.0", 8081, "tcp"),
            publish("8080"),
            false,
        ),
        (
            "other protocol",
            with_port("a", "0.0.0.0", 8080, "udp"),
            publish("8080"),
            false,
        ),
        (
            "random host port",
            with_port("a", "0.0.0.0", 8080, "tcp"),
            publish(""),
            false,
        ),
        (
            "other specific address",
            with_port("a", "10.0.0.1", 8080, "tcp"),
            json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "10.0.0.2", "HostPort": "8080"}]}}}),
            false,
        ),
        (
            "same specific address",
            with_port("a", "10.0.0.1", 8080, "tcp"),
            json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "10.0.0.1", "HostPort": "8080"}]}}}),
            true,
        ),
        (
            "all interfaces against a specific address",
            with_port("a", "10.0.0.1", 8080, "tcp"),
            publish("8080"),
            true,
        ),
        (
            "udp against udp",
            with_port("a", "0.0.0.0", 53, "udp"),
            json!({"HostConfig": {"PortBindings": {"53/udp": [{"HostPort": "53"}]}}}),
            true,
        ),
        (
            "stopped container with fixed binding (enriched entry)",
            {
                let mut c = container("a", "a");
                c["State"] = json!("exited");
                c["HostConfig"] =
                    json!({"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}});
                c
            },
            publish("8080"),
            true,
        ),
    ];
    for (what, existing, body, conflict) in cases {
        let mut cluster = Cluster::plain(2);
        cluster.add_container("n1", existing.clone());
        let got = cluster.passing(body.clone()).unwrap();
        let want = if *conflict {
            names(&["n2"])
        } else {
            names(&["n1", "n2"])
        };
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn port_taken_everywhere_error_text() {
    let mut cluster = Cluster::plain(2);
    cluster.add_container("n1", with_port("a", "0.0.0.0", 80, "tcp"));
    cluster.add_container("n2", with_port("b", "0.0.0.0", 80, "tcp"));
    let err = cluster
        .choose(Strategy::Spread, publish("80"), &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[port 80/tcp (Bridge mode)]"
    );
}

/// `-p 8080:80` N+1 times on N nodes: compose scale, Swarm PR #2502.
#[test]
fn pending_ports_are_never_double_booked() {
    let cluster = Cluster::plain(3);
    let mut pending = Vec::new();
    let mut placed = Vec::new();
    for strategy in [Strategy::Binpack, Strategy::Binpack, Strategy::Spread] {
        let p = placement(publish("8080"));
        let node = choose(strategy, &cluster.candidates(), &p, &pending, 1).unwrap();
        pending.push(p.pending_on(&node));
        placed.push(node);
    }
    placed.sort();
    assert_eq!(placed, names(&["n1", "n2", "n3"]));
    let err = choose(
        Strategy::Spread,
        &cluster.candidates(),
        &placement(publish("8080")),
        &pending,
        1,
    )
    .unwrap_err();
    assert!(matches!(err, ScheduleError::Unsatisfiable { .. }), "{err}");
    // Another port still fits anywhere.
    assert!(choose(
        Strategy::Spread,
        &cluster.candidates(),
        &placement(publish("8081")),
        &pending,
        1
    )
    .is_ok());
}

#[test]
fn host_mode_ports() {
    let cluster = Cluster::plain(2);
    let body = json!({"Image": "nginx", "ExposedPorts": {"80/tcp": {}}, "HostConfig": {"NetworkMode": "host"}});
    let p = placement(body.clone());
    assert!(p.host_network);
    assert_eq!(
        p.ports,
        vec![PortClaim {
            proto: "tcp".into(),
            port: 80,
            host_ip: String::new()
        }]
    );
    let pending = vec![p.pending_on("n1")];
    assert_eq!(
        choose(Strategy::Binpack, &cluster.candidates(), &p, &pending, 1).unwrap(),
        "n2"
    );
    let pending = vec![p.pending_on("n1"), p.pending_on("n2")];
    let err = choose(Strategy::Spread, &cluster.candidates(), &p, &pending, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[port 80/tcp (Host mode)]"
    );
    // A bridge-mode publish of the same port blocks a host-mode container too.
    let mut cluster = Cluster::plain(1);
    cluster.add_container("n1", with_port("a", "0.0.0.0", 80, "tcp"));
    assert!(cluster.choose(Strategy::Spread, body, &[]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Dependencies and container slots

#[test]
fn dependencies_pin_to_the_node_holding_them() {
    let mut cluster = Cluster::plain(3);
    cluster.add_container("n2", container("0123456789ab", "db"));
    cluster.add_container("n2", container("cdef", "data"));
    cluster.add_container("n3", container("9999", "vpn"));
    // IDs are hex: a short name must not match one by prefix.
    cluster.add_container("n1", container("db01234567", "other"));
    let cases: &[(Value, Result<&[&str], &str>)] = &[
        (json!({"HostConfig": {"Links": ["db:database"]}}), Ok(&["n2"])),
        (json!({"HostConfig": {"Links": ["/db:/web/database"]}}), Ok(&["n2"])),
        (json!({"HostConfig": {"VolumesFrom": ["data:ro"], "Links": ["db:db"]}}), Ok(&["n2"])),
        (json!({"HostConfig": {"VolumesFrom": ["0123"]}}), Ok(&["n2"])),
        (json!({"HostConfig": {"NetworkMode": "container:vpn"}}), Ok(&["n3"])),
        (json!({"HostConfig": {"Links": ["n2/db:db"]}}), Ok(&["n2"])),
        (
            json!({"HostConfig": {"Links": ["db:db"], "NetworkMode": "container:vpn"}}),
            Err("Unable to find a node that satisfies the following conditions \n[--link=db:db --net=container:vpn]"),
        ),
    ];
    for (body, want) in cases {
        match (cluster.passing(body.clone()), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, names(want), "{body}"),
            (Err(got), Err(want)) => assert_eq!(got.to_string(), *want, "{body}"),
            (got, _) => panic!("{body}: {got:?}"),
        }
    }
    // A pending container counts by name.
    let pending = [Pending {
        node: "n1".into(),
        name: Some("queue".into()),
        ..Pending::default()
    }];
    let p = placement(json!({"HostConfig": {"Links": ["queue:q"]}}));
    assert_eq!(
        choose(Strategy::Spread, &cluster.candidates(), &p, &pending, 1).unwrap(),
        "n1"
    );
}

/// A create mounting `volumes` (`-v NAME:/p`), with the holders the gateway found.
fn with_volumes(mut body: Value, holders: &[(&str, &[&str])]) -> Placement {
    let mut p = placement(body.take());
    p.volume_holders = holders
        .iter()
        .map(|(v, nodes)| (v.to_string(), names(nodes)))
        .collect();
    p
}

#[test]
fn named_volumes_pin_to_their_node_unless_placed_elsewhere_on_purpose() {
    let cluster = Cluster::plain(3);
    let rank_of = |p: &Placement| rank(Strategy::Spread, &cluster.candidates(), p, &[], 1);
    let binds = |binds: &[&str]| json!({"Image": "busybox", "HostConfig": {"Binds": binds}});
    // On the one node holding it, whatever the strategy would say.
    let p = with_volumes(binds(&["data:/d"]), &[("data", &["n3"])]);
    assert_eq!(p.volumes, ["data"]);
    assert_eq!(rank_of(&p).unwrap(), ["n3"]);
    // `--mount`, and a volume on two nodes: either.
    let mount =
        json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]}});
    let mut got = rank_of(&with_volumes(mount, &[("data", &["n1", "n2"])])).unwrap();
    got.sort();
    assert_eq!(got, ["n1", "n2"]);
    // A volume no node has yet (or a global one) ties it to no node.
    assert_eq!(
        rank_of(&with_volumes(binds(&["new:/d"]), &[("new", &[])]))
            .unwrap()
            .len(),
        3
    );
    // Two volumes on two nodes: nowhere, and the error says why.
    let p = with_volumes(binds(&["a:/a", "b:/b"]), &[("a", &["n1"]), ("b", &["n2"])]);
    assert_eq!(
        rank_of(&p).unwrap_err().to_string(),
        "Unable to find a node that satisfies the following conditions \n[volume a (on n1) volume b (on n2)]"
    );
    // A constraint that keeps the holder: the holder. One that excludes it: where it says.
    let constrained = |c: &str| {
        let mut body = binds(&["data:/d"]);
        body["Env"] = json!([format!("constraint:{c}")]);
        with_volumes(body, &[("data", &["n1"])])
    };
    assert_eq!(rank_of(&constrained("node!=n3")).unwrap(), ["n1"]);
    assert_eq!(rank_of(&constrained("node==n2")).unwrap(), ["n2"]);
    // A soft one does not override the volume.
    assert_eq!(rank_of(&constrained("node==~n2")).unwrap(), ["n1"]);
    // A port taken on the holder: the error names both.
    let mut cluster = Cluster::plain(2);
    cluster.add_container("n1", with_port("aa", "", 80, "tcp"));
    let mut body = publish("80");
    body["HostConfig"]["Binds"] = json!(["data:/d"]);
    let p = with_volumes(body, &[("data", &["n1"])]);
    assert_eq!(
        rank(Strategy::Spread, &cluster.candidates(), &p, &[], 1).unwrap_err().to_string(),
        "Unable to find a node that satisfies the following conditions \n[port 80/tcp (Bridge mode)]\n[volume data (on n1)]"
    );
}

#[test]
fn nodes_holding_the_image_are_preferred_never_required() {
    let mut cluster = Cluster::plain(3);
    cluster.add_image("n2", image("sha256:abcdef0123", &["app:latest", "app:v2"]));
    cluster.add_image("n3", image("sha256:9999", &["registry:5000/team/app:1"]));
    for (reference, want) in [
        ("app", vec!["n2"]),
        ("app:v2", vec!["n2"]),
        ("docker.io/library/app:latest", vec!["n2"]),
        ("sha256:abcdef", vec!["n2"]),
        ("abcdef01", vec!["n2"]),
        ("registry:5000/team/app:1", vec!["n3"]),
        // Nobody has it: every node (the client pulls it).
        ("app:v3", vec!["n1", "n2", "n3"]),
        ("registry:5000/team/app", vec!["n1", "n2", "n3"]),
    ] {
        assert_eq!(
            cluster.passing(json!({"Image": reference})).unwrap(),
            names(&want),
            "{reference}"
        );
    }
    // Never a reason to fail: a constraint away from it still places the container.
    assert_eq!(
        cluster
            .passing(env_image("app", &["constraint:node==n1"]))
            .unwrap(),
        names(&["n1"])
    );
}

fn env_image(image: &str, exprs: &[&str]) -> Value {
    json!({"Image": image, "Env": exprs})
}

#[test]
fn container_slots() {
    let mut cluster = Cluster::new(vec![
        node("n1", &[("containerslots", "1")]),
        node("n2", &[("containerslots", "2")]),
        node("n3", &[]),
    ]);
    cluster.nodes[2].health = Health::Unhealthy;
    cluster.add_container("n1", container("aa", "a"));
    assert_eq!(
        cluster.choose(Strategy::Binpack, json!({}), &[]).unwrap(),
        "n2"
    );
    cluster.add_container("n2", container("bb", "b"));
    let pending = [Pending {
        node: "n2".into(),
        ..Pending::default()
    }];
    let err = cluster
        .choose(Strategy::Spread, json!({}), &pending)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[available container slots]"
    );
    // Not a number: no limit.
    cluster.nodes[1]
        .labels
        .insert("containerslots".into(), "many".into());
    assert_eq!(
        cluster
            .choose(Strategy::Spread, json!({}), &pending)
            .unwrap(),
        "n2"
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the create body

#[test]
fn env_expressions_move_to_labels_and_nothing_else_changes() {
    let mut body = json!({
        "Image": "busybox",
        "Cmd": ["sh", "-c", "echo constraint:node==x"],
        "Env": ["A=1", "constraint:node==n1", "affinity:container==db", "B=constraint:x", "constraint:zone!=~b"],
        "Labels": {"x": "y"},
        "HostConfig": {"Memory": 0, "PortBindings": {}},
    });
    let mut want = body.clone();
    want["Env"] = json!(["A=1", "B=constraint:x"]);
    want["Labels"] = json!({
        "x": "y",
        CONSTRAINTS_LABEL: r#"["node==n1","zone!=~b"]"#,
        AFFINITIES_LABEL: r#"["container==db"]"#,
    });
    let p = Placement::from_create(&mut body).unwrap();
    assert_eq!(body, want);
    assert_eq!(
        p.constraints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        ["node==n1", "zone!=b"]
    );
    assert!(p.constraints[1].soft && !p.constraints[0].soft);
    assert_eq!(p.affinities.len(), 1);
    assert_eq!(
        p.labels.get(CONSTRAINTS_LABEL).map(String::as_str),
        Some(r#"["node==n1","zone!=~b"]"#)
    );
    assert!(p.has_soft());
}

#[test]
fn env_expressions_merge_with_labels_set_by_the_client() {
    let mut body =
        json!({"Env": ["constraint:node==n1"], "Labels": {CONSTRAINTS_LABEL: r#"["zone==a"]"#}});
    let p = Placement::from_create(&mut body).unwrap();
    assert_eq!(
        body["Labels"][CONSTRAINTS_LABEL],
        json!(r#"["zone==a","node==n1"]"#)
    );
    assert_eq!(body["Env"], json!([]));
    assert_eq!(p.constraints.len(), 2);
    // Labels: null (as the CLI may send) becomes an object.
    let mut body = json!({"Env": ["affinity:image==redis"], "Labels": null});
    Placement::from_create(&mut body).unwrap();
    assert_eq!(
        body["Labels"],
        json!({AFFINITIES_LABEL: r#"["image==redis"]"#})
    );
}

#[test]
fn bodies_without_expressions_are_untouched() {
    for body in [
        json!({"Image": "busybox"}),
        json!({"Image": "busybox", "Env": null, "Labels": null}),
        json!({"Image": "busybox", "Env": ["A=1"], "Labels": {CONSTRAINTS_LABEL: r#"["node==n1"]"#}}),
        json!({}),
    ] {
        let mut after = body.clone();
        Placement::from_create(&mut after).unwrap();
        assert_eq!(after, body);
    }
}

#[test]
fn placement_reads_resources_ports_and_image() {
    let p = placement(json!({
        "Image": "nginx:1.27",
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {
            "Memory": 512 * 1024 * 1024, "NanoCpus": 1_500_000_000i64, "CpuShares": 512,
            "PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}],
                "53/UDP": [{"HostIp": "", "HostPort": "53"}],
                "443/tcp": [{"HostIp": "", "HostPort": ""}],
                "81/tcp": [{"HostPort": "8000-8010"}],
                "82/tcp": null,
            },
        },
    }));
    assert_eq!(p.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(
        (p.memory, p.nano_cpus, p.cpu_shares),
        (512 * 1024 * 1024, 1_500_000_000, 512)
    );
    assert!(!p.host_network);
    let mut ports: Vec<(String, u16, String)> = p
        .ports
        .iter()
        .map(|c| (c.proto.clone(), c.port, c.host_ip.clone()))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        vec![
            ("tcp".into(), 8080, "".into()),
            ("tcp".into(), 9090, "127.0.0.1".into()),
            ("udp".into(), 53, "".into())
        ]
    );
    let mut pending = p.pending_on("n1");
    pending.host_ports.sort();
    assert_eq!(
        pending.host_ports,
        vec![
            ("tcp".into(), 8080),
            ("tcp".into(), 9090),
            ("udp".into(), 53)
        ]
    );
    assert_eq!(
        (pending.node.as_str(), pending.memory, pending.nano_cpus),
        ("n1", p.memory, p.nano_cpus)
    );
}

#[test]
fn build_args_and_network_labels() {
    let mut args = json!({"constraint:node": "=n2", "affinity:image": "=~redis", "FOO": "bar"});
    let p = Placement::from_build_args(&mut args).unwrap();
    assert_eq!(args, json!({"FOO": "bar"}));
    assert_eq!(p.constraints[0].to_string(), "node==n2");
    assert!(p.affinities[0].soft);
    let cluster = Cluster::plain(3);
    assert_eq!(
        choose(Strategy::Spread, &cluster.candidates(), &p, &[], 1).unwrap(),
        "n2"
    );
    let err = choose(
        Strategy::Spread,
        &cluster.candidates(),
        &Placement::from_build_args(&mut json!({"constraint:node": "=node-9"})).unwrap(),
        &[],
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unable to find a node that satisfies the following conditions \n[node==node-9]"
    );
    assert!(Placement::from_build_args(&mut json!({"constraint:node": null})).is_err());

    let p = Placement::from_labels(&json!({CONSTRAINTS_LABEL: r#"["node==n3"]"#, "other": "x"}))
        .unwrap();
    assert_eq!(
        choose(Strategy::Spread, &cluster.candidates(), &p, &[], 1).unwrap(),
        "n3"
    );
    assert!(Placement::from_labels(&Value::Null)
        .unwrap()
        .constraints
        .is_empty());
}

#[test]
fn invalid_input_is_rejected_with_400() {
    let cases: &[(Value, &str)] = &[
        (
            env(&["constraint:node=n1"]),
            r#"invalid constraint "node=n1": one of the operators ==, != is expected"#,
        ),
        (
            env(&["constraint:node"]),
            r#"invalid constraint "node": one of the operators ==, != is expected"#,
        ),
        (
            env(&["constraint:1node==x"]),
            r#"invalid constraint "1node==x": key "1node" is invalid: it must start with a letter or '_' and contain only letters, digits, '-', '_' and '.'"#,
        ),
        (
            env(&["affinity:my key==x"]),
            r#"invalid affinity "my key==x": key "my key" is invalid: it must start with a letter or '_' and contain only letters, digits, '-', '_' and '.'"#,
        ),
        (
            env(&["constraint:a!=b==c"]),
            r#"invalid constraint "a!=b==c": key "a!=b" is invalid"#,
        ),
        (
            env(&["constraint:node=="]),
            r#"invalid constraint "node==": the value is empty"#,
        ),
        (
            env(&["constraint:node==~"]),
            r#"invalid constraint "node==~": the value is empty"#,
        ),
        (
            env(&["constraint:node==/[/"]),
            r#"invalid constraint "node==/[/": invalid regular expression /[/"#,
        ),
        (
            env(&["constraint:==x"]),
            r#"invalid constraint "==x": key "" is invalid"#,
        ),
        (
            json!({"Labels": {CONSTRAINTS_LABEL: "node==n1"}}),
            "invalid label com.docker.swarm.constraints: not a JSON array of strings",
        ),
        (
            json!({"Labels": {AFFINITIES_LABEL: r#"["bad"]"#}}),
            r#"invalid affinity "bad": one of the operators"#,
        ),
        (
            json!({"Env": "A=1"}),
            r#"invalid create request: Env: invalid type: string "A=1", expected a sequence"#,
        ),
        (
            json!({"Env": ["constraint:node==x"], "Labels": ["x"]}),
            "invalid create request: Labels: invalid type: sequence, expected a map",
        ),
        (
            json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "http"}]}}}),
            r#"invalid port "http:80/tcp""#,
        ),
        (
            json!({"HostConfig": {"PortBindings": {"80/icmp": [{"HostPort": "80"}]}}}),
            r#"invalid port "80/icmp""#,
        ),
        (
            json!({"ExposedPorts": {"x/tcp": {}}, "HostConfig": {"NetworkMode": "host"}}),
            r#"invalid port "x/tcp""#,
        ),
        (
            json!([]),
            "invalid create request: invalid type: sequence, expected a create body (a JSON object)",
        ),
        (
            json!({"HostConfig": {"NetworkMode": "node1/net"}, "NetworkingConfig": 5}),
            "invalid create request: NetworkingConfig: invalid type: integer `5`",
        ),
    ];
    for (body, want) in cases {
        let err = Placement::from_create(&mut body.clone()).expect_err(&body.to_string());
        assert!(err.to_string().starts_with(want), "{body}: {err}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
    }
}

#[test]
fn expressions_parse_and_match() {
    let e = Expr::parse("zone!=~us-*").unwrap();
    assert_eq!(
        (e.key.as_str(), e.op, e.value.as_str(), e.soft, e.kind),
        ("zone", Op::NotEq, "us-*", true, ValueKind::Glob)
    );
    assert_eq!(e.to_string(), "zone!=us-*");
    assert!(!e.matches(["us-east"]) && e.matches(["eu-west"]) && e.matches([]));
    // Glob characters other than * and ? are literal.
    let e = Expr::parse("v==1.2").unwrap();
    assert!(e.matches(["1.2"]) && !e.matches(["1x2"]));
    let e = Expr::parse("v==a?c").unwrap();
    assert!(e.matches(["abc"]) && !e.matches(["abbc"]));
    // Regexes are unanchored, as in Swarm.
    let e = Expr::parse("v==/b/").unwrap();
    assert_eq!(e.kind, ValueKind::Regex);
    assert!(e.matches(["abc"]));
    // A value of "/" alone is a plain string.
    assert_eq!(Expr::parse("v==/").unwrap().kind, ValueKind::Plain);
    // Keys: the grammar of swarm.md §2.3.
    for key in ["_", "a", "com.example.zone", "x-y_z.1"] {
        assert!(Expr::parse(&format!("{key}==v")).is_ok(), "{key}");
    }
    for key in ["1a", "-a", ".a", "a/b", "a:b", "é"] {
        assert!(Expr::parse(&format!("{key}==v")).is_err(), "{key}");
    }
}

#[test]
fn long_values_are_matched_or_refused_never_a_panic() {
    // 100,000 `?` once made a regex over the size limit, and its `expect` panicked.
    let err = Expr::parse(&format!("node=={}", "?".repeat(100_000))).unwrap_err();
    assert!(err.0.contains("too long"), "{err}");
    // A run of `*` is one `.*`, however long.
    let e = Expr::parse(&format!("node==a{}b", "*".repeat(100_000))).unwrap();
    assert!(e.matches(["a-b"]) && !e.matches(["a-c"]));
    for c in ["a", ".", "[", "(", "\\", "\u{e9}"] {
        let text = format!("node=={}", c.repeat(5_000));
        if let Ok(e) = Expr::parse(&text) {
            assert!(e.matches([&text["node==".len()..]]), "{c}");
        }
    }
    let err = Expr::parse(&format!("node==/{}/", "(a{1000}){1000}")).unwrap_err();
    assert!(err.0.starts_with("invalid regular expression"), "{err}");
    // Errors quote a long expression, and the regex's own message, cut short.
    let long = format!("constraint:node==/{}/", "(".repeat(5_000));
    let err = Placement::from_create(&mut env(&[&long])).unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(
        err.to_string()
            .starts_with("invalid constraint \"node==/((("),
        "{err}"
    );
    assert!(err.to_string().len() < 1000, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Properties

mod properties {
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as _;

    use super::*;
    use crate::strategies::{config, json_with_keys};

    /// A glob as the module docs define it, matched plainly: `*` any run, `?` one character,
    /// everything else itself.
    fn glob(pattern: &[char], s: &[char]) -> bool {
        let mut reach = vec![false; s.len() + 1];
        reach[0] = true;
        for &p in pattern {
            let mut next = vec![false; s.len() + 1];
            for j in 0..=s.len() {
                if !reach[j] {
                    continue;
                }
                match p {
                    '*' => next[j..].iter_mut().for_each(|r| *r = true),
                    '?' if j < s.len() => next[j + 1] = true,
                    c if j < s.len() && s[j] == c => next[j + 1] = true,
                    _ => {}
                }
            }
            reach = next;
        }
        reach[s.len()]
    }

    fn text(set: &'static [char], max: usize) -> impl proptest::strategy::Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(set), 0..max)
            .prop_map(|c| c.into_iter().collect())
    }

    const VALUE_CHARS: &[char] = &[
        '*', '?', 'a', 'b', '.', '[', ']', '(', ')', '\\', '^', '$', '|', '+', '{', '}', '~', '/',
        '\u{e9}', '-',
    ];

    fn expression() -> impl proptest::strategy::Strategy<Value = String> {
        // Long runs of one character (100,000 `?` is a test of its own: too slow to repeat).
        let run = (prop::sample::select(VALUE_CHARS), 1usize..400)
            .prop_map(|(c, n)| c.to_string().repeat(n));
        prop_oneof![
            4 => (
                "[a-z_][a-z.-]{0,6}|node|container|image|",
                prop::sample::select(vec!["==", "!=", "=", "=="]),
                prop::option::of(Just("~")),
                prop_oneof![3 => text(VALUE_CHARS, 12), 1 => run, 1 => "/[a-z.*?\\[\\](){}|^$\\\\]{0,10}/"],
            )
                .prop_map(|(k, op, soft, v)| format!("{k}{op}{}{v}", soft.unwrap_or(""))),
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(config(500))]

        /// Any expression parses or is refused with a reason; a glob matches as a plain glob
        /// matcher says, and an expression prints as it was written (without `~`).
        #[test]
        fn expressions_parse_and_match_as_globs(
            text in expression(),
            samples in prop::collection::vec(text(&['a', 'b', '.', '[', '(', '\u{e9}', '*', '?'], 8), 4),
        ) {
            let Ok(e) = Expr::parse(&text) else { return Ok(()) };
            prop_assert_eq!(e.to_string(), text.replacen("=~", "=", 1));
            if e.kind != ValueKind::Regex {
                let pattern: Vec<char> = e.value.chars().collect();
                for s in samples.iter().chain([&e.value]) {
                    let chars: Vec<char> = s.chars().collect();
                    prop_assert_eq!(e.value_matches(s), glob(&pattern, &chars), "{:?} {:?}", e.value, s);
                }
            }
        }
    }

    const NODE_KEYS: &[&str] = &[
        "Id",
        "Names",
        "Ports",
        "PublicPort",
        "IP",
        "Type",
        "Labels",
        "HostConfig",
        "PortBindings",
        "HostPort",
        "HostIp",
        "Memory",
        "NanoCpus",
        "RepoTags",
        "RepoDigests",
        "NCPU",
        "MemTotal",
        "ID",
        "Driver",
        "KernelVersion",
        "OperatingSystem",
        "OSType",
        "zone",
        "containerslots",
    ];

    fn candidate_node(
    ) -> impl proptest::strategy::Strategy<Value = (NodeSnapshot, Vec<Value>, Vec<Value>)> {
        (
            "n[1-4]",
            prop::sample::select(vec![Health::Healthy, Health::Healthy, Health::Unhealthy]),
            json_with_keys(3, NODE_KEYS),
            prop::collection::vec(json_with_keys(3, NODE_KEYS), 0..4),
            prop::collection::vec(json_with_keys(2, NODE_KEYS), 0..3),
            prop::collection::btree_map(
                prop::sample::select(vec!["zone", "containerslots", "ssd"]),
                "[0-9a-z]{0,3}",
                0..3,
            ),
            (any::<f64>(), any::<u64>()),
        )
            .prop_map(
                |(name, health, info, containers, images, labels, (cpus, memory))| {
                    let labels = labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                    let mut n = NodeSnapshot::new(&name, &format!("{name}:1"), labels);
                    n.health = health;
                    n.info = Arc::new(info);
                    n.reserved = crate::model::Reserved { cpus, memory };
                    (n, containers, images)
                },
            )
    }

    proptest! {
        #![proptest_config(config(150))]

        /// Whatever the nodes' lists and documents hold, and whatever the expressions: a ranking
        /// of some of the candidates, or an error with its status.
        #[test]
        fn scheduling_never_panics(
            nodes in prop::collection::vec(candidate_node(), 0..4),
            exprs in prop::collection::vec(expression(), 0..4),
            strategy in prop::sample::select(vec![Strategy::Spread, Strategy::Binpack, Strategy::Random]),
            memory in prop_oneof![Just(0i64), any::<i64>()],
            seed in any::<u64>(),
        ) {
            let env: Vec<String> = exprs
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{}:{e}", if i % 2 == 0 { "constraint" } else { "affinity" }))
                .collect();
            let mut body = json!({
                "Env": env,
                "HostConfig": {"Memory": memory, "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}},
            });
            let Ok(mut placement) = Placement::from_create(&mut body) else { return Ok(()) };
            placement.name = Some("web".into());
            let pending = vec![placement.pending_on("n1")];
            let candidates: Vec<Candidate> = nodes
                .iter()
                .map(|(node, containers, images)| Candidate { node, containers, images })
                .collect();
            match rank(strategy, &candidates, &placement, &pending, seed) {
                Ok(ranked) => {
                    prop_assert!(!ranked.is_empty());
                    prop_assert!(ranked.iter().all(|r| nodes.iter().any(|(n, _, _)| &n.name == r)));
                }
                Err(e) => {
                    let _ = (e.status(), e.to_string());
                }
            }
        }
    }
}
