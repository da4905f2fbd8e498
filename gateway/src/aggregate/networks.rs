//! `GET /networks` (`docker network ls`): node-local networks by `node/name`, cluster-wide ones once.

use std::collections::HashSet;

use serde_json::Value;

use super::{answered, qualify, text};
use crate::model::{NodeAnswer, NodeSnapshot};

/// True for the scopes of networks that exist once for the whole cluster (`swarm`, `global`);
/// anything else (`local`, or no scope at all) is one node's own network.
pub fn is_cluster_scope(scope: &str) -> bool {
    matches!(scope, "swarm" | "global")
}

/// Merges the nodes' `networks` arrays, as Swarm did: a node-local network's `Name` becomes
/// `<node>/<name>` (so `docker network ls` shows `node1/bridge`, `node2/bridge`), and a
/// cluster-wide network (see [`is_cluster_scope`]) appears once, by `Id`, as the first node (by
/// name) described it. Order: nodes by name, each in its engine's order (the CLI sorts anyway).
/// `_nodes` is not needed today: it keeps the shape of the merges that name things by node.
pub fn networks(answers: &[NodeAnswer<Value>], _nodes: &[NodeSnapshot]) -> Value {
    let mut merged: Vec<Value> = Vec::new();
    let mut cluster_ids: HashSet<String> = HashSet::new();
    for (node, list) in answered(answers) {
        for network in list.as_array().into_iter().flatten() {
            if is_cluster_scope(text(network, "Scope")) {
                if cluster_ids.insert(text(network, "Id").to_owned()) {
                    merged.push(network.clone());
                }
                continue;
            }
            let mut network = network.clone();
            if let Some(name) = network["Name"].as_str() {
                network["Name"] = Value::String(qualify(node, name));
            }
            merged.push(network);
        }
    }
    Value::Array(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aggregate::fixtures::{err, ok};

    // Trimmed from dockerd 20.10's `GET /v1.41/networks`.
    fn network(name: &str, id: &str, scope: &str, driver: &str) -> Value {
        json!({
            "Name": name, "Id": id, "Created": "2026-11-22T03:49:21.308176015Z", "Scope": scope,
            "Driver": driver, "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": "172.39.0.0/16", "Gateway": "172.39.0.1"}]},
            "Internal": false, "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""},
            "ConfigOnly": false, "Containers": {}, "Options": {}, "Labels": {}
        })
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .expect("an array")
            .iter()
            .map(|n| n["Name"].as_str().expect("a Name"))
            .collect()
    }

    #[test]
    fn local_networks_get_node_names_and_cluster_ones_appear_once() {
        let answers = vec![
            ok(
                "node2",
                json!([
                    network("bridge", "b2", "local", "bridge"),
                    network("ov", "o1", "swarm", "overlay")
                ]),
            ),
            ok(
                "node1",
                json!([
                    network("bridge", "b1", "local", "bridge"),
                    network("ov", "o1", "swarm", "overlay"),
                    network("host", "h1", "local", "host")
                ]),
            ),
            err("node3", "timeout"),
        ];
        let merged = networks(&answers, &[]);
        assert_eq!(
            names(&merged),
            ["node1/bridge", "ov", "node1/host", "node2/bridge"]
        );
        assert_eq!(merged[0]["Id"], "b1");
        assert_eq!(merged[1], network("ov", "o1", "swarm", "overlay"));
    }

    #[test]
    fn global_scope_is_cluster_wide_and_no_scope_is_local() {
        let mut unscoped = network("x", "x1", "", "bridge");
        unscoped.as_object_mut().expect("an object").remove("Scope");
        let answers = vec![
            ok(
                "node1",
                json!([network("g", "g1", "global", "weave"), unscoped.clone()]),
            ),
            ok(
                "node2",
                json!([network("g", "g1", "global", "weave"), unscoped]),
            ),
        ];
        assert_eq!(names(&networks(&answers, &[])), ["g", "node1/x", "node2/x"]);
    }
}
