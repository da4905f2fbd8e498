use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::schedule::{Placement, AFFINITIES_LABEL, CONSTRAINTS_LABEL};
use crate::strategies::json_value;

/// What the docker CLI 28.2.2 sent (API 1.41) for
/// `docker create --name web -e A=1 -e constraint:zone==eu -e 'affinity:container!=db'
/// --label com.example=x -p 8080:80 -p 127.0.0.1:9000-9001:9000-9001/udp --expose 7000
/// --memory 256m --cpus 1.5 --cpu-shares 512 --link db:db --volumes-from data:ro -v /srv:/srv:ro
/// --mount type=volume,src=v1,dst=/v1 --network mynet --network-alias web1 --restart
/// on-failure:3 --health-cmd true --health-interval 5s -w /app --user 1000 --hostname h1 --dns
/// 1.1.1.1 --add-host x:10.0.0.1 --ulimit nofile=1024:2048 --cap-add NET_ADMIN --tmpfs /tmp
/// --log-opt max-size=1m busybox sh -c 'echo hi'`, captured on the wire.
const CLI_CREATE: &str = include_str!("docker-28.2-create.json");

/// `docker create --network node1/mynet --ip 10.1.0.5 busybox`, as the same CLI sent it.
const CLI_CREATE_NODE_NETWORK: &str = include_str!("docker-28.2-create-node-network.json");

fn value(text: &str) -> Value {
    serde_json::from_str(text).expect("a JSON fixture")
}

#[test]
fn a_cli_body_round_trips_unchanged() {
    for text in [CLI_CREATE, CLI_CREATE_NODE_NETWORK] {
        let body = CreateBody::from_slice(text.as_bytes()).expect("a valid body");
        assert_eq!(body.to_value(), value(text));
        let again: Value = serde_json::from_slice(&body.to_bytes()).expect("JSON");
        assert_eq!(again, value(text));
    }
    let body = CreateBody::from_slice(CLI_CREATE.as_bytes()).unwrap();
    assert_eq!(body.image.get().map(String::as_str), Some("busybox"));
    let h = body.host_config().expect("a HostConfig");
    assert_eq!(
        (h.memory.get(), h.nano_cpus.get(), h.cpu_shares.get()),
        (Some(&268_435_456), Some(&1_500_000_000), Some(&512))
    );
    assert_eq!(h.network_mode.get().map(String::as_str), Some("mynet"));
    assert_eq!(h.links.get(), Some(&vec!["db:db".to_owned()]));
    // Everything not read is kept as sent, nulls included.
    assert_eq!(body.rest["Entrypoint"], Value::Null);
    assert_eq!(h.rest["CapDrop"], Value::Null);
    assert_eq!(
        h.rest["Mounts"],
        json!([{"Type": "volume", "Source": "v1", "Target": "/v1"}])
    );
}

#[test]
fn the_swarm_rewrite_is_the_only_change_to_a_cli_body() {
    let mut body = CreateBody::from_slice(CLI_CREATE.as_bytes()).unwrap();
    let placement = Placement::from_create_body(&mut body).expect("a valid placement");
    assert_eq!(placement.constraints[0].to_string(), "zone==eu");
    assert_eq!(placement.affinities[0].to_string(), "container!=db");
    assert_eq!(placement.memory, 268_435_456);
    assert_eq!(placement.ports.len(), 3);
    let mut want = value(CLI_CREATE);
    want["Env"] = json!(["A=1"]);
    want["Labels"] = json!({
        "com.example": "x",
        CONSTRAINTS_LABEL: r#"["zone==eu"]"#,
        AFFINITIES_LABEL: r#"["container!=db"]"#,
    });
    assert_eq!(body.to_value(), want);
}

#[test]
fn a_node_network_mode_loses_its_node_and_nothing_else_changes() {
    let mut body = CreateBody::from_slice(CLI_CREATE_NODE_NETWORK.as_bytes()).unwrap();
    body.strip_network_node("node1/mynet", "mynet");
    let mut want = value(CLI_CREATE_NODE_NETWORK);
    want["HostConfig"]["NetworkMode"] = json!("mynet");
    let endpoints = want["NetworkingConfig"]["EndpointsConfig"]
        .as_object_mut()
        .unwrap();
    let settings = endpoints.remove("node1/mynet").unwrap();
    endpoints.insert("mynet".into(), settings);
    assert_eq!(body.to_value(), want);
    // Nothing to rename: nothing added either.
    let mut bare = CreateBody::from_value(json!({"HostConfig": {"NetworkMode": "n/x"}})).unwrap();
    bare.strip_network_node("n/x", "x");
    assert_eq!(bare.to_value(), json!({"HostConfig": {"NetworkMode": "x"}}));
}

#[test]
fn absent_and_null_fields_stay_as_they_were() {
    for doc in [
        json!({}),
        json!({"Env": null, "Labels": null, "HostConfig": null, "NetworkingConfig": null}),
        json!({"HostConfig": {"PortBindings": {"80/tcp": null}, "Links": null, "Memory": null}}),
        json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": null, "X": 1}]}}}),
        json!({"NetworkingConfig": {"EndpointsConfig": null, "Other": [1]}}),
    ] {
        let body = CreateBody::from_value(doc.clone()).expect("a valid body");
        assert_eq!(body.to_value(), doc);
    }
}

#[test]
fn a_field_of_the_wrong_type_is_a_400_naming_it() {
    for (doc, want) in [
        (
            json!({"NetworkingConfig": 5}),
            "invalid create request: NetworkingConfig: invalid type: integer `5`, expected a NetworkingConfig object",
        ),
        (
            json!({"NetworkingConfig": {"EndpointsConfig": []}}),
            "invalid create request: NetworkingConfig.EndpointsConfig: invalid type: sequence, expected a map",
        ),
        (
            json!({"HostConfig": {"Memory": "1g"}}),
            "invalid create request: HostConfig.Memory: invalid type: string \"1g\", expected i64",
        ),
        (
            json!({"HostConfig": {"NanoCpus": 1.5}}),
            "invalid create request: HostConfig.NanoCpus: invalid type: floating point `1.5`, expected i64",
        ),
        (
            json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 8080}]}}}),
            "invalid create request: HostConfig.PortBindings.80/tcp[0].HostPort: invalid type: integer `8080`, expected a string",
        ),
        (
            json!({"HostConfig": {"PortBindings": {"80/tcp": [5]}}}),
            "invalid create request: HostConfig.PortBindings.80/tcp[0]: invalid type: integer `5`, expected a port binding object",
        ),
        (
            json!({"HostConfig": [1]}),
            "invalid create request: HostConfig: invalid type: sequence, expected a HostConfig object",
        ),
        (
            json!({"Env": "A=1"}),
            "invalid create request: Env: invalid type: string \"A=1\", expected a sequence",
        ),
        (
            json!({"Env": ["A=1", 2]}),
            "invalid create request: Env[1]: invalid type: integer `2`, expected a string",
        ),
        (
            json!({"Labels": {"a": true}}),
            "invalid create request: Labels.a: invalid type: boolean `true`, expected a string",
        ),
        (
            json!({"Image": {}}),
            "invalid create request: Image: invalid type: map, expected a string",
        ),
        (
            json!({"ExposedPorts": "80/tcp"}),
            "invalid create request: ExposedPorts: invalid type: string \"80/tcp\", expected a map",
        ),
        (
            json!([]),
            "invalid create request: invalid type: sequence, expected a create body (a JSON object)",
        ),
    ] {
        let err = CreateBody::from_value(doc.clone()).expect_err(&doc.to_string());
        assert_eq!(err.to_string(), want);
        let err = CreateBody::from_slice(doc.to_string().as_bytes()).expect_err("bytes too");
        assert!(err.to_string().starts_with(want), "{err}");
    }
    for (text, want) in [
        ("{", "invalid create request: EOF while parsing an object"),
        ("{} x", "invalid create request: trailing characters"),
        ("", "invalid create request: EOF while parsing a value"),
    ] {
        let err = CreateBody::from_slice(text.as_bytes()).expect_err(text);
        assert!(err.to_string().starts_with(want), "{err}");
    }
}

// ---- properties ----

/// A value that is sometimes of the right type for a known field, often not.
fn mostly(right: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![6 => right, 1 => json_value(2)].boxed()
}

fn strings() -> BoxedStrategy<Value> {
    prop::collection::vec(mostly(expression().prop_map(Value::from).boxed()), 0..4)
        .prop_map(Value::Array)
        .boxed()
}

/// Env entries and label values that are (or look like) Swarm's expressions.
fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[A-Z]=[a-z]{0,3}",
        4 => "(constraint|affinity):(node|zone|container|image)(==|!=)~?[a-z0-9*?]{1,6}",
        1 => "(constraint|affinity):[a-z.]{0,6}(==|!=)~?[a-z*?/\\[(]{0,6}",
        1 => any::<String>(),
    ]
}

fn port_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,5}(/(tcp|udp|sctp|icmp))?",
        "[0-9]{1,5}-[0-9]{1,5}/tcp",
        any::<String>()
    ]
}

/// A create body with the known fields present, absent, null or of a wrong type, at each
/// level, and unknown fields around them.
fn create_body() -> impl Strategy<Value = Value> {
    let labels = prop::collection::btree_map(
        prop_oneof![
            Just(CONSTRAINTS_LABEL.to_owned()),
            Just(AFFINITIES_LABEL.to_owned()),
            "[a-z.]{1,6}".prop_map(String::from),
        ],
        mostly(
            prop_oneof![
                expression().prop_map(Value::from),
                prop::collection::vec(expression(), 0..3)
                    .prop_map(|l| Value::from(serde_json::to_string(&l).unwrap())),
            ]
            .boxed(),
        ),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let binding = prop::collection::btree_map(
        prop::sample::select(vec!["HostIp", "HostPort", "Other"]),
        mostly(
            prop_oneof!["", "[0-9]{1,6}", "0", "80-90", "0.0.0.0", "::"]
                .prop_map(Value::from)
                .boxed(),
        ),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let bindings = prop::collection::btree_map(
        port_key(),
        mostly(
            prop::collection::vec(mostly(binding.boxed()), 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let exposed = prop::collection::btree_map(port_key(), json_value(1), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let network_mode = prop_oneof![
        "(default|bridge|host|none|container:[a-z]{1,3}|node1/[a-z]{1,3}|[a-z/]{1,5})",
        any::<String>(),
    ]
    .prop_map(Value::from);
    let int = prop_oneof![any::<i64>(), -1i64..10_000_000_000].prop_map(Value::from);
    let host_config = (
        prop::option::of(mostly(network_mode.boxed())),
        prop::option::of(mostly(bindings.boxed())),
        prop::option::of(mostly(int.clone().boxed())),
        prop::option::of(mostly(int.clone().boxed())),
        prop::option::of(mostly(int.boxed())),
        prop::option::of(strings()),
        prop::option::of(strings()),
        prop::option::of(json_value(2)),
    )
        .prop_map(|(mode, bindings, mem, cpus, shares, links, from, other)| {
            let mut h = Map::new();
            for (k, v) in [
                ("NetworkMode", mode),
                ("PortBindings", bindings),
                ("Memory", mem),
                ("NanoCpus", cpus),
                ("CpuShares", shares),
                ("Links", links),
                ("VolumesFrom", from),
                ("Binds", other),
            ] {
                if let Some(v) = v {
                    h.insert(k.into(), v);
                }
            }
            Value::Object(h)
        });
    let networking = prop::collection::btree_map(
        prop::sample::select(vec!["EndpointsConfig", "Other"]),
        mostly(
            prop::collection::btree_map("(node1/)?[a-z]{1,3}", json_value(1), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed(),
        ),
        0..2,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    (
        prop::option::of(mostly("[a-z:]{1,8}".prop_map(Value::from).boxed())),
        prop::option::of(strings()),
        prop::option::of(mostly(labels.boxed())),
        prop::option::of(mostly(exposed.boxed())),
        prop::option::of(mostly(host_config.boxed())),
        prop::option::of(mostly(networking.boxed())),
        prop::option::of(json_value(3)),
    )
        .prop_map(|(image, env, labels, exposed, host, net, other)| {
            let mut doc = Map::new();
            for (k, v) in [
                ("Image", image),
                ("Env", env),
                ("Labels", labels),
                ("ExposedPorts", exposed),
                ("HostConfig", host),
                ("NetworkingConfig", net),
                ("Cmd", other),
            ] {
                if let Some(v) = v {
                    doc.insert(k.into(), v);
                }
            }
            Value::Object(doc)
        })
}

proptest! {
    #![proptest_config(crate::strategies::config(400))]

    /// Whatever a client sends: a 400 naming a field, or a view that writes back exactly what
    /// was sent; the placement read from it never panics, and changes nothing but the Swarm
    /// rewrite.
    #[test]
    fn create_bodies_read_back_as_sent(doc in create_body()) {
        let Ok(mut body) = CreateBody::from_value(doc.clone()) else { return Ok(()) };
        prop_assert_eq!(body.to_value(), doc.clone());
        // Read from the text: as the same text read as a JSON value (serde_json reads some
        // floats a unit in the last place off the value they were written from, either way).
        let bytes = doc.to_string();
        let reread = CreateBody::from_value(serde_json::from_str(&bytes).unwrap());
        prop_assert_eq!(CreateBody::from_slice(bytes.as_bytes()), reread);
        let had_exprs = body.env.get().into_iter().flatten().any(|e| {
            e.starts_with("constraint:") || e.starts_with("affinity:")
        });
        let result = Placement::from_create_body(&mut body);
        if !had_exprs {
            prop_assert_eq!(body.to_value(), doc.clone());
        }
        if let Err(e) = result {
            prop_assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        }
        let mut as_value = doc.clone();
        let _ = Placement::from_create(&mut as_value);
        body.strip_network_node("node1/a", "a");
    }

    #[test]
    fn any_json_is_a_body_or_a_400(doc in json_value(4)) {
        match CreateBody::from_value(doc.clone()) {
            Ok(body) => prop_assert_eq!(body.to_value(), doc.clone()),
            Err(e) => prop_assert!(e.to_string().starts_with("invalid create request: ")),
        }
        let mut doc = doc;
        if let Err(e) = Placement::from_create(&mut doc) {
            prop_assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn build_args_never_panic(
        args in prop::collection::btree_map(
            prop_oneof!["(constraint|affinity):[a-z]{0,4}", "[a-z]{1,4}", any::<String>()],
            mostly(prop_oneof!["=?~?[a-z*?]{0,4}", any::<String>()].prop_map(Value::from).boxed()),
            0..4,
        ),
    ) {
        let mut args = Value::Object(args.into_iter().collect());
        match Placement::from_build_args(&mut args) {
            // Every expression was taken out of the build args.
            Ok(_) => {
                let left = args.as_object().unwrap();
                let taken = left
                    .keys()
                    .all(|k| !k.starts_with("constraint:") && !k.starts_with("affinity:"));
                prop_assert!(taken, "{:?}", left);
            }
            Err(e) => prop_assert_eq!(e.status(), http::StatusCode::BAD_REQUEST),
        }
    }
}
