//! In-process tests of busbar-volumes (no root, no engine, no etcd): the real hooks on test
//! doubles of the engines (`support::FakeCluster`) and of etcd (`MemStore`), driven as a
//! gateway and its agents drive them (a volume create on every node in turn, a container
//! create's pre-hook, the engine's create, its post-hook), and once over HTTP through the
//! kit's real hook server. What a user would check: one copy, where etcd says; the data
//! follows the container; refusals say why and move nothing; racing creates move once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use busbar_adapter::hook::{Call, Context, Node, Refusal};
use busbar_adapter::v1::{ClientRequest, PostHookRequest, PreHookRequest, ServerResponse};
use busbar_adapter::Adapter;
use busbar_volumes::engines::Engines;
use busbar_volumes::store::{MemStore, Store};
use busbar_volumes::{Settings, Volumes};
use http::Method;
use serde_json::{json, Value};
use support::FakeCluster;

type V = Volumes<MemStore, FakeCluster>;

fn settings() -> Settings {
    Settings {
        lock_ttl: Duration::from_secs(5),
        lock_wait: Duration::from_secs(5),
        ..Settings::default()
    }
}

fn context(node: &str, request_id: &str) -> Context {
    Context {
        adapter_api: Some("1".into()),
        request_id: Some(request_id.into()),
        node: Some(Node {
            name: node.into(),
            labels: Default::default(),
        }),
        client: None,
        trace: None,
    }
}

fn client(method: &str, path: &str, body: Option<&Value>) -> ClientRequest {
    ClientRequest {
        method: method.into(),
        request: path.into(),
        body: body.map(Value::to_string),
    }
}

async fn pre(
    a: &V,
    node: &str,
    rid: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<String>, Refusal> {
    a.pre_hook(Call {
        request: PreHookRequest::new(client(method, path, body)),
        context: context(node, rid),
    })
    .await
    .map(|m| m.body)
}

#[allow(clippy::too_many_arguments)]
async fn post(
    a: &V,
    node: &str,
    rid: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    code: u16,
    answer: &Value,
) -> (u16, Value) {
    let m = a
        .post_hook(Call {
            request: PostHookRequest::new(
                client(method, path, body),
                ServerResponse {
                    content_type: Some("application/json".into()),
                    body: answer.to_string(),
                    code,
                },
            ),
            context: context(node, rid),
        })
        .await
        .expect("post-hooks do not refuse here");
    (
        m.code.unwrap_or(code),
        serde_json::from_str(m.body.as_deref().unwrap_or("null")).unwrap_or(Value::Null),
    )
}

/// `docker volume create --label busbar.portable=true NAME` through a gateway: the create
/// on every node in turn, each with its pre-hook, the engine, its post-hook.
async fn volume_create(a: &V, c: &FakeCluster, nodes: &[&str], name: &str) -> Value {
    let body = json!({"Name": name, "Driver": "local", "Labels": {"busbar.portable": "true"}});
    let mut last = Value::Null;
    for node in nodes {
        pre(a, node, "rv", "POST", "/v1.41/volumes/create", Some(&body))
            .await
            .expect("no refusal");
        let made = c
            .call(node, Method::POST, "/v1.41/volumes/create", Some(&body))
            .await
            .unwrap();
        let (code, answer) = post(
            a,
            node,
            "rv",
            "POST",
            "/v1.41/volumes/create",
            Some(&body),
            201,
            &made,
        )
        .await;
        assert_eq!(code, 201);
        last = answer;
    }
    last
}

fn create_body(volume: &str) -> Value {
    json!({
        "Image": "busybox",
        "Cmd": ["true"],
        "Labels": {"busbar.net": "cluster"},
        "HostConfig": {"Binds": [format!("{volume}:/data")]},
        "NetworkingConfig": {"EndpointsConfig": {"busbar": {"IPAMConfig": {"IPv4Address": "10.232.1.20"}}}}
    })
}

/// `docker create -v VOLUME:/data busybox` placed on `node`: pre-hook, the engine's create
/// when it passes, post-hook.
async fn container_create(
    a: &V,
    c: &FakeCluster,
    node: &str,
    rid: &str,
    name: &str,
    volume: &str,
) -> Result<(), Refusal> {
    let body = create_body(volume);
    let path = format!("/v1.41/containers/create?name={name}");
    let sent = pre(a, node, rid, "POST", &path, Some(&body)).await?;
    assert_eq!(
        sent.as_deref(),
        Some(body.to_string().as_str()),
        "the body goes on byte for byte"
    );
    let made = c.call(node, Method::POST, &path, Some(&body)).await;
    assert!(made.is_ok(), "the engine's create: {made:?}");
    let (code, answer) = match &made {
        Ok(v) => (201, v.clone()),
        Err(e) => (e.status().unwrap_or(500), json!({"message": e.to_string()})),
    };
    post(a, node, rid, "POST", &path, Some(&body), code, &answer).await;
    Ok(())
}

fn three() -> (V, FakeCluster, MemStore) {
    let cluster = FakeCluster::new(&["node1", "node2", "node3"]);
    let store = MemStore::new();
    let a = Volumes::new(store.clone(), cluster.clone(), settings());
    (a, cluster, store)
}

#[tokio::test]
async fn a_portable_volume_exists_once_and_its_data_follows_the_container() {
    let (a, c, store) = three();
    let answer = volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    assert_eq!(c.holders("data1"), ["node1"], "one copy in the cluster");
    assert_eq!(answer["Name"], "data1");
    assert_eq!(answer["Status"]["busbar.node"], "node1", "{answer}");
    let rec = store.get("data1").await.unwrap().unwrap().record;
    assert_eq!((rec.node.as_str(), rec.moves), ("node1", 0));

    c.with("node1", |n| {
        let v = n.volumes.get_mut("data1").unwrap();
        v.files.insert("f".into(), b"hello\n".to_vec());
        v.files.insert("big".into(), vec![7; 4096]);
    });
    container_create(&a, &c, "node2", "r1", "reader", "data1")
        .await
        .expect("moved, then created");
    assert_eq!(c.holders("data1"), ["node2"]);
    assert_eq!(c.files("node2", "data1")["f"], b"hello\n");
    assert_eq!(c.files("node2", "data1")["big"].len(), 4096);
    let rec = store.get("data1").await.unwrap().unwrap().record;
    assert_eq!((rec.node.as_str(), rec.moves), ("node2", 1));
    assert!(
        store.holder("data1").is_none(),
        "the post-hook released the lock"
    );
    for n in ["node1", "node2"] {
        assert!(
            c.containers(n)
                .iter()
                .all(|k| !k.name.starts_with("busbar-volume-")),
            "helpers removed on {n}"
        );
    }

    // Creating it again through the gateway changes nothing and says where it is.
    let again = volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    assert_eq!(c.holders("data1"), ["node2"]);
    assert_eq!(again["Status"]["busbar.node"], "node2");

    // An adapter restarted on the same etcd knows where it is.
    let restarted = Volumes::new(store.clone(), c.clone(), settings());
    let (code, _) = post(
        &restarted,
        "node3",
        "r",
        "GET",
        "/v1.41/volumes/data1",
        None,
        200,
        &json!({"Name": "data1"}),
    )
    .await;
    assert_eq!(code, 404, "node3 holds no copy etcd points at");
    let (code, v) = post(
        &restarted,
        "node2",
        "r",
        "GET",
        "/v1.41/volumes/data1",
        None,
        200,
        &json!({"Name": "data1", "Status": null}),
    )
    .await;
    assert_eq!(
        (code, v["Status"]["busbar.node"].as_str()),
        (200, Some("node2"))
    );
}

#[tokio::test]
async fn a_volume_in_use_elsewhere_is_refused_naming_node_and_container_and_nothing_moves() {
    let (a, c, store) = three();
    volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    c.add_container("node1", "writer", "running", "data1");
    let refused = container_create(&a, &c, "node2", "r1", "x", "data1")
        .await
        .unwrap_err();
    assert_eq!(refused.status, 409);
    for says in ["node1", "writer", "running", "data1", "busbar-volumes"] {
        assert!(refused.message.contains(says), "{}", refused.message);
    }
    assert_eq!(c.holders("data1"), ["node1"]);
    assert_eq!(
        store.get("data1").await.unwrap().unwrap().record.node,
        "node1"
    );
    assert!(store.holder("data1").is_none(), "a refusal keeps no lock");

    // A stopped container holds it too: Docker would not let its copy go.
    c.with("node1", |n| {
        n.containers
            .values_mut()
            .for_each(|k| k.state = "exited".into())
    });
    let refused = container_create(&a, &c, "node3", "r2", "x", "data1")
        .await
        .unwrap_err();
    assert!(refused.message.contains("exited"), "{}", refused.message);
}

#[tokio::test]
async fn a_move_that_fails_half_way_leaves_the_data_whole_where_it_was() {
    let (a, c, store) = three();
    volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    c.with("node1", |n| {
        let v = n.volumes.get_mut("data1").unwrap();
        for i in 0..10 {
            v.files.insert(format!("f{i}"), vec![i; 100]);
        }
    });
    let before = c.files("node1", "data1");

    c.with("node2", |n| n.fail_copy_in = true);
    let failed = container_create(&a, &c, "node2", "r1", "x", "data1")
        .await
        .unwrap_err();
    assert_eq!(failed.status, 500, "{}", failed.message);
    for says in ["from node1 to node2", "stays on node1", "no space left"] {
        assert!(failed.message.contains(says), "{}", failed.message);
    }
    assert_eq!(c.holders("data1"), ["node1"], "the partial copy is gone");
    assert_eq!(c.files("node1", "data1"), before);
    assert_eq!(
        store.get("data1").await.unwrap().unwrap().record.node,
        "node1"
    );

    // An unreachable target: the same, a 503 naming it.
    c.with("node2", |n| n.fail_copy_in = false);
    c.with("node3", |n| n.down = true);
    let failed = container_create(&a, &c, "node3", "r2", "x", "data1")
        .await
        .unwrap_err();
    assert_eq!(failed.status, 503, "{}", failed.message);
    assert!(
        failed.message.contains("node3: connection refused"),
        "{}",
        failed.message
    );
    assert_eq!(
        store.get("data1").await.unwrap().unwrap().record.node,
        "node1"
    );
    assert_eq!(c.files("node1", "data1"), before);

    // Then it works.
    container_create(&a, &c, "node2", "r3", "x", "data1")
        .await
        .unwrap();
    assert_eq!(c.files("node2", "data1"), before);
}

#[tokio::test]
async fn racing_creates_move_a_volume_at_most_once() {
    for targets in [["node2", "node3"], ["node2", "node2"]] {
        let (a, c, store) = three();
        let a = Arc::new(a);
        volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
        let runs: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (a, c, node) = (a.clone(), c.clone(), node.to_string());
                tokio::spawn(async move {
                    container_create(&a, &c, &node, &format!("r{i}"), &format!("c{i}"), "data1")
                        .await
                })
            })
            .collect();
        let mut results = vec![];
        for r in runs {
            results.push(r.await.unwrap());
        }
        let rec = store.get("data1").await.unwrap().unwrap().record;
        assert_eq!(rec.moves, 1, "{targets:?}: {results:?}");
        assert_eq!(c.holders("data1"), vec![rec.node.clone()]);
        if targets[0] == targets[1] {
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        } else {
            let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(refused.len(), 1, "{results:?}");
            assert_eq!(refused[0].status, 409);
            assert!(
                refused[0].message.contains(&rec.node),
                "{}",
                refused[0].message
            );
        }
    }
}

#[tokio::test]
async fn lists_show_the_one_copy_with_its_node_and_rm_forgets_it() {
    let (a, c, store) = three();
    volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    // A stale copy on node3 (made behind busbar's back) and a plain local volume.
    c.with("node3", |n| {
        n.volumes.insert("data1".into(), Default::default());
    });
    let list = |names: &[&str]| json!({"Volumes": names.iter().map(|n| json!({"Name": n, "Driver": "local", "Labels": null})).collect::<Vec<_>>(), "Warnings": null});
    let (_, l1) = post(
        &a,
        "node1",
        "r",
        "GET",
        "/v1.41/volumes",
        None,
        200,
        &list(&["data1", "plain"]),
    )
    .await;
    let (_, l3) = post(
        &a,
        "node3",
        "r",
        "GET",
        "/v1.41/volumes",
        None,
        200,
        &list(&["data1", "plain"]),
    )
    .await;
    let names = |l: &Value| -> Vec<String> {
        l["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&l1), ["data1", "plain"]);
    assert_eq!(l1["Volumes"][0]["Status"]["busbar.node"], "node1");
    assert_eq!(names(&l3), ["plain"], "the stale copy is not shown");

    // A create holds the lock: no rm meanwhile.
    let held = store
        .lock(
            "data1",
            &busbar_volumes::store::Holder {
                token: "t".into(),
                node: "node2".into(),
                request_id: "rx".into(),
                since: 0,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .unwrap();
    let busy = pre(&a, "node1", "r", "DELETE", "/v1.41/volumes/data1", None)
        .await
        .unwrap_err();
    assert_eq!(busy.status, 409, "{}", busy.message);
    assert!(busy.message.contains("node2"), "{}", busy.message);
    store
        .unlock("data1", |h| h.token == held.token)
        .await
        .unwrap();

    pre(&a, "node1", "r", "DELETE", "/v1.41/volumes/data1", None)
        .await
        .unwrap();
    c.call("node1", Method::DELETE, "/v1.41/volumes/data1", None)
        .await
        .unwrap();
    post(
        &a,
        "node1",
        "r",
        "DELETE",
        "/v1.41/volumes/data1",
        None,
        204,
        &Value::Null,
    )
    .await;
    assert!(
        store.get("data1").await.unwrap().is_none(),
        "the record goes with the volume"
    );
}

#[tokio::test]
async fn an_unnamed_portable_volume_is_refused_and_other_calls_pass_untouched() {
    let (a, _c, _store) = three();
    let refused = pre(
        &a,
        "node1",
        "r",
        "POST",
        "/v1.41/volumes/create",
        Some(&json!({"Labels": {"busbar.portable": "true"}})),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        refused.message.contains("needs a name"),
        "{}",
        refused.message
    );
    // Not portable: nothing to do, whatever it mounts.
    let body = create_body("plain");
    let sent = pre(
        &a,
        "node1",
        "r",
        "POST",
        "/v1.41/containers/create",
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(sent, Some(body.to_string()));
    let sent = pre(&a, "node1", "r", "POST", "/v1.41/containers/x/start", None)
        .await
        .unwrap();
    assert_eq!(sent, None);
}

/// Over HTTP, as an agent calls it: the kit's hook server in front of the adapter.
#[tokio::test]
async fn over_http_a_refusal_is_a_docker_error_with_its_status() {
    use busbar_testkit::raw::{self, request};
    let (a, c, _store) = three();
    volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    c.add_container("node1", "writer", "running", "data1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = busbar_adapter::server::Options::default();
    let stop = options.shutdown.clone();
    let server = tokio::spawn(busbar_adapter::server::serve(listener, a, options));
    let call = PreHookRequest::new(client(
        "POST",
        "/v1.41/containers/create",
        Some(&create_body("data1")),
    ));
    let rsp = raw::exchange(
        addr,
        &request(
            "POST",
            "/volumes-adapter",
            &[
                ("Content-Type", "application/json"),
                ("X-Busbar-Adapter-Api", "1"),
                ("X-Busbar-Node", "node2"),
                ("X-Request-Id", "r9"),
            ],
            &call.to_json(),
        ),
    )
    .await;
    assert_eq!(rsp.status(), 409, "{}", rsp.text());
    let message = rsp.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(
        message.contains("in use by container writer (running) on node1"),
        "{message}"
    );
    assert_eq!(c.holders("data1"), ["node1"]);
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn an_old_copy_that_cannot_go_is_never_served_and_goes_at_rm() {
    let (a, c, store) = three();
    volume_create(&a, &c, &["node1", "node2", "node3"], "data1").await;
    c.with("node1", |n| {
        let v = n.volumes.get_mut("data1").unwrap();
        v.files.insert("f".into(), b"v1".to_vec());
        n.down_after_copy_out = true;
    });
    // node1 is lost once the data is out: the move is recorded, its copy stays behind.
    container_create(&a, &c, "node2", "r1", "x", "data1")
        .await
        .expect("moved");
    let rec = store.get("data1").await.unwrap().unwrap().record;
    assert_eq!(
        (rec.node.as_str(), rec.stale.as_slice()),
        ("node2", &["node1".to_owned()][..])
    );
    assert_eq!(c.holders("data1"), ["node1", "node2"]);

    // node1 is back: its copy is hidden from lists and inspect.
    c.with("node1", |n| {
        n.down = false;
        n.down_after_copy_out = false;
    });
    let (code, _) = post(
        &a,
        "node1",
        "r",
        "GET",
        "/v1.41/volumes/data1",
        None,
        200,
        &json!({"Name": "data1"}),
    )
    .await;
    assert_eq!(code, 404);
    let listed = json!({"Volumes": [{"Name": "data1", "Driver": "local"}], "Warnings": null});
    let (_, l1) = post(
        &a,
        "node1",
        "r",
        "GET",
        "/v1.41/volumes",
        None,
        200,
        &listed,
    )
    .await;
    assert_eq!(l1["Volumes"], json!([]));

    // rm where it lives (its container gone first) removes the old copy too.
    c.with("node2", |n| n.containers.clear());
    c.call("node2", Method::DELETE, "/v1.41/volumes/data1", None)
        .await
        .unwrap();
    post(
        &a,
        "node2",
        "r",
        "DELETE",
        "/v1.41/volumes/data1",
        None,
        204,
        &Value::Null,
    )
    .await;
    assert!(store.get("data1").await.unwrap().is_none());
    assert!(c.holders("data1").is_empty(), "{:?}", c.holders("data1"));
}
