//! Property tests: the merges fed whatever engines and agents may answer (they are not
//! trusted), and the query helpers fed whatever clients may send. No panic, and the documents
//! made are valid.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use busbar_chains::scoped::ChainStatus;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::query::{encode, filter_values, param};
use super::*;
use crate::aggregate::fixtures;
use crate::model::Reserved;
use crate::strategies::{config, json_with_keys};

/// The keys the merges read, so that generated documents put values (of any type) there.
const KEYS: &[&str] = &[
    "Id",
    "Names",
    "Ports",
    "IP",
    "PublicPort",
    "Type",
    "Created",
    "Labels",
    "State",
    "Status",
    "RepoTags",
    "RepoDigests",
    "Containers",
    "Name",
    "Scope",
    "Driver",
    "Volumes",
    "Warnings",
    "Images",
    "LayersSize",
    "BuilderSize",
    "BuildCache",
    "SpaceReclaimed",
    "ContainersDeleted",
    "Actor",
    "Attributes",
    "ID",
    "ContainersRunning",
    "ContainersPaused",
    "ContainersStopped",
    "NCPU",
    "MemTotal",
    "Plugins",
    "Volume",
    "Network",
    "Log",
    "Authorization",
    "IndexServerAddress",
    "ServerVersion",
    "KernelVersion",
    "OperatingSystem",
    "OSType",
    "Components",
    "Details",
    "Version",
    "ApiVersion",
    "MinAPIVersion",
    "Os",
    "Arch",
];

fn doc() -> BoxedStrategy<Value> {
    json_with_keys(4, KEYS)
}

/// A list answer: mostly an array of objects, sometimes anything.
fn list() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::collection::vec(json_with_keys(3, KEYS), 0..5).prop_map(Value::Array),
        1 => doc(),
    ]
    .boxed()
}

fn answers(item: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<NodeAnswer<Value>>> {
    prop::collection::vec(
        (
            prop_oneof!["node[1-4]", any::<String>()],
            prop_oneof![
                3 => item.prop_map(Ok),
                1 => any::<String>().prop_map(|e| Err(crate::model::CallError::Bad(e)))
            ],
        )
            .prop_map(|(node, result)| NodeAnswer { node, result }),
        0..4,
    )
}

fn health() -> impl Strategy<Value = Health> {
    prop::sample::select(vec![
        Health::Healthy,
        Health::Unhealthy,
        Health::Disconnected,
    ])
}

fn chain_status() -> impl Strategy<Value = Option<Arc<ChainStatus>>> {
    prop::option::of(
        (
            any::<i64>(),
            prop::collection::btree_map("[a-z:=]{0,6}", any::<i64>(), 0..3),
            prop::option::of(any::<String>()),
            prop::option::of(any::<i64>()),
            prop_oneof!["etcd|cache|file|none|", any::<String>()],
            prop::option::of(any::<String>()),
        )
            .prop_map(|(revision, scopes, error, rejected, source, file)| {
                let status = json!({
                    "node": "n", "revision": revision, "scopes": scopes, "error": error,
                    "rejected_revision": rejected, "source": source, "file": file,
                });
                serde_json::from_value::<ChainStatus>(status)
                    .ok()
                    .map(Arc::new)
            }),
    )
    .prop_map(Option::flatten)
}

/// A node as its snapshot shows it, with documents any agent may have reported.
fn snapshot() -> impl Strategy<Value = NodeSnapshot> {
    (
        (
            prop_oneof!["node[1-4]", any::<String>()],
            prop_oneof![
                "10\\.0\\.0\\.[0-9]:7443",
                "\\[fd00::[0-9]\\]:7443",
                any::<String>()
            ],
            prop::collection::btree_map("[a-z]{0,4}", any::<String>(), 0..3),
            health(),
            prop::option::of(any::<String>()),
            prop::option::of(any::<u64>()),
        ),
        (doc(), doc(), chain_status(), any::<f64>(), any::<u64>()),
    )
        .prop_map(
            |((name, addr, labels, health, error, at), (info, version, chains, cpus, memory))| {
                let mut n = NodeSnapshot::new(&name, &addr, labels);
                n.health = health;
                n.last_error = error;
                n.updated_at =
                    at.and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
                n.info = Arc::new(info);
                n.version = Arc::new(version);
                n.chains = chains;
                n.reserved = Reserved { cpus, memory };
                n
            },
        )
}

/// A query a client may send to a list endpoint: filters of either shape, limits, flags.
fn list_query() -> impl Strategy<Value = String> {
    let values = prop_oneof![
        prop::collection::vec(
            prop_oneof!["node[1-3]", "[a-z=.*(\\[]{0,6}", any::<String>()],
            0..3
        )
        .prop_map(|v| json!(v)),
        prop::collection::btree_map("[a-z=]{0,4}", any::<bool>(), 0..3).prop_map(|m| json!(m)),
    ];
    let filters = prop_oneof![
        json_with_keys(2, &["node", "name", "id", "label", "status", "ancestor"]),
        prop::collection::btree_map(
            prop::sample::select(vec!["node", "name", "id", "label", "status", "since"]),
            values,
            0..4,
        )
        .prop_map(|m| json!(m)),
    ]
    .prop_map(|f| format!("filters={}", encode(&f.to_string())));
    let param = prop_oneof![
        filters.boxed(),
        "limit=-?[0-9]{0,20}".boxed(),
        "(all|size)=(1|0|true|no|)".boxed(),
        "(since|before)=[a-z]{0,3}".boxed(),
        any::<String>().boxed(),
        "[a-z%=&+]{0,10}".boxed(),
    ];
    (any::<bool>(), prop::collection::vec(param, 0..4))
        .prop_map(|(lead, params)| format!("{}{}", if lead { "?" } else { "" }, params.join("&")))
}

/// A container list as an engine may write it: JSON text with members of any type where the
/// merge looks, numbers serde_json cannot hold (`1e400`), escapes in keys.
fn list_body() -> impl Strategy<Value = Vec<u8>> {
    let raw_member = prop_oneof![
        json_with_keys(2, KEYS).prop_map(|v| v.to_string()),
        Just("1e400".to_owned()),
        Just("[1e400, \"/x\"]".to_owned()),
        Just("[{\"IP\": \"0.0.0.0\", \"PublicPort\": 1e400}]".to_owned()),
        Just("-1e400".to_owned()),
        Just("[\"/a\\u0041\", \"/b\\\"c\"]".to_owned()),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(|k| format!("\"{k}\"")),
        1 => Just("\"N\\u0061mes\"".to_owned()),
        1 => any::<String>().prop_map(|k| Value::from(k).to_string()),
    ];
    let entry = prop::collection::vec((key, raw_member), 0..6).prop_map(|members| {
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!("{{{}}}", members.join(", "))
    });
    prop_oneof![
        4 => prop::collection::vec(entry, 0..5).prop_map(|e| format!("[{}]", e.join(","))),
        1 => doc().prop_map(|v| v.to_string()),
        1 => any::<String>(),
    ]
    .prop_map(String::into_bytes)
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn container_lists_merge_into_valid_json(
        bodies in prop::collection::vec(
            (list_body(), any::<bool>(), prop::option::of("[a-z0-9.:\\[\\]]{0,8}")),
            0..4,
        ),
        query in list_query(),
    ) {
        let lists: Vec<(usize, ContainerList)> = bodies
            .iter()
            .enumerate()
            .filter_map(|(i, (body, _, _))| parse_list(body).ok().map(|l| (i, l)))
            .collect();
        let names = ["node1", "node2", "node3", "node4"];
        let parts: Vec<NodePart> = lists
            .iter()
            .map(|(i, list)| NodePart {
                node: names[*i],
                host: bodies[*i].2.as_deref(),
                list,
                host_down: bodies[*i].1,
            })
            .collect();
        let merged = merge_lists(&parts, &query);
        let text = std::str::from_utf8(&merged.body).expect("UTF-8");
        prop_assert!(serde_json::from_str::<&RawValue>(text).is_ok(), "{}", text);
        let total: usize = lists.iter().map(|(_, l)| l.len()).sum();
        prop_assert!(merged.rows <= total && merged.host_down_rows <= merged.rows);
        if let Some(n) = limit(&query) {
            prop_assert!(merged.rows <= n);
        }
        let _ = HostDown::of_query(&query);
        let _ = filter_keys(&query);
    }

    #[test]
    fn value_merges_never_panic(
        lists in answers(list()),
        docs in answers(doc()),
        nodes in prop::collection::vec(snapshot(), 0..3),
        query in list_query(),
    ) {
        let _ = containers(&lists, &nodes, &query);
        let _ = images(&lists);
        let _ = networks(&lists, &nodes);
        let _ = volumes(&docs, &nodes);
        let _ = system_df(&docs);
        let _ = prune(&docs);
        let raw: Vec<NodeAnswer<Vec<u8>>> = lists
            .iter()
            .map(|a| NodeAnswer {
                node: a.node.clone(),
                result: a.result.as_ref().map(|v| v.to_string().into_bytes()).map_err(Clone::clone),
            })
            .collect();
        let _ = parse_answers(&raw);
        if let Some(value) = failed_nodes_header(&docs) {
            prop_assert!(http::HeaderValue::from_str(&value).is_ok(), "{}", value);
        }
        for mut entry in lists.iter().filter_map(|a| a.result.clone().ok()) {
            qualify_container(&mut entry, "node1", Some("10.0.0.1"));
            pin_ports(&mut entry, "::1");
            qualify_names(&mut entry, "n");
        }
    }

    #[test]
    fn cluster_documents_are_valid_whatever_the_nodes_said(
        nodes in prop::collection::vec(snapshot(), 0..3),
        infos in answers(doc()),
        versions in answers(doc()),
        reserved in prop::collection::btree_map("node[1-4]", (any::<f64>(), any::<u64>()), 0..3),
    ) {
        let facts = GatewayFacts::new("gw", "0.1.0");
        let reserved: BTreeMap<String, Reserved> = reserved
            .into_iter()
            .map(|(k, (cpus, memory))| (k, Reserved { cpus, memory }))
            .collect();
        let doc = info_with_reserved(&nodes, &infos, &facts, &reserved);
        prop_assert!(doc["SystemStatus"].is_array());
        let _ = info(&nodes, &infos, &facts);
        let doc = version_with_facts(&nodes, &versions, &facts);
        prop_assert!(doc["Components"].is_array());
        let _ = version(&nodes, &versions, "0.1.0");
        let info_parts: Vec<InfoPart> = nodes.iter().map(|n| InfoPart::of(n, n.reserved)).collect();
        let text = info_from_parts(&info_parts, &facts);
        prop_assert!(serde_json::from_str::<&RawValue>(&text).is_ok());
        let version_parts: Vec<VersionPart> = nodes.iter().map(VersionPart::of).collect();
        let text = version_from_parts(&version_parts, &facts);
        prop_assert!(serde_json::from_str::<&RawValue>(&text).is_ok());
        let _ = api_version_range(&nodes);
        for n in &nodes {
            let _ = node_labels(n);
            let _ = n.host();
        }
    }

    #[test]
    fn events_are_tagged_whatever_they_are(event in doc(), node in snapshot()) {
        let mut tagged = event.clone();
        tag_event(&mut tagged, &node);
        if event.is_object() {
            prop_assert_eq!(&tagged["node"]["Name"], &json!(node.name));
            prop_assert_eq!(&tagged["Actor"]["Attributes"]["node.name"], &json!(node.name));
        } else {
            prop_assert_eq!(tagged, event);
        }
    }

    #[test]
    fn query_helpers_never_panic(
        query in list_query(),
        text in any::<String>(),
        raw in "[%+a-z0-9]{0,12}",
    ) {
        prop_assert_eq!(param(&format!("k={}", encode(&text)), "k"), Some(text.clone()));
        let _ = param(&raw, "k");
        let stripped = strip_node_filter(&query);
        prop_assert_eq!(node_filter(&stripped), None);
        let _ = node_filter(&query);
        let _ = limit(&query);
        let _ = param(&query, "filters");
        let _ = docker_bool(&text);
        let _ = host_of(&text);
        if let Ok(v) = serde_json::from_str::<Value>(&param(&format!("k={raw}"), "k").unwrap_or_default()) {
            let _ = filter_values(&v);
        }
    }

    #[test]
    fn numbers_and_versions_never_panic(
        a in "[0-9. a-z]{0,12}",
        b in "[0-9. a-z]{0,12}",
        bytes in any::<u64>(),
        secs in any::<i64>(),
    ) {
        prop_assert_eq!(compare_api_versions(&a, &b), compare_api_versions(&b, &a).reverse());
        let _ = bytes_size(bytes);
        let time = if secs >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
        };
        if let Some(t) = time {
            let _ = rfc3339(t);
        }
        let _ = go_arch(&a);
    }
}

// ---- what the generators do not find by chance ----

#[test]
fn counts_past_i64_saturate() {
    // Summing engines' counts overflowed (a panic in debug builds, a wrap in release).
    let image = |containers: i64| json!({"Id": "sha256:1", "Containers": containers, "Created": 1});
    let merged = images(&[
        fixtures::ok("node1", json!([image(i64::MAX)])),
        fixtures::ok("node2", json!([image(5)])),
    ]);
    assert_eq!(merged[0]["Containers"], i64::MAX);

    let info_doc = json!({"Containers": i64::MAX, "NCPU": i64::MAX, "MemTotal": i64::MAX});
    let nodes = [
        fixtures::node("node1", "10.0.0.1:1", &[]),
        fixtures::node("node2", "10.0.0.2:1", &[]),
    ];
    let answers = [
        fixtures::ok("node1", info_doc.clone()),
        fixtures::ok("node2", info_doc),
    ];
    let doc = info(&nodes, &answers, &GatewayFacts::new("gw", "0"));
    assert_eq!(doc["Containers"], i64::MAX);
    assert_eq!(doc["NCPU"], i64::MAX);
}

#[test]
fn documents_as_deep_as_serde_json_reads_still_make_cluster_documents() {
    // A node's `/version` field goes three levels deeper in the cluster's `/version`, past
    // serde_json's limit of 128 when the node's was near it: re-reading the cluster document
    // failed, and its `expect` panicked.
    let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    let node_version: Value = serde_json::from_str(&format!(r#"{{"ApiVersion": {deep}}}"#))
        .expect("within serde_json's limit");
    let nodes = [fixtures::node("node1", "10.0.0.1:1", &[])];
    let doc = version(&nodes, &[fixtures::ok("node1", node_version)], "0");
    assert!(doc["Components"][1]["Details"]["ApiVersion"].is_array());
}
