//! `GET /containers/json` (`docker ps`): every node's list, names qualified by node, ports
//! pinned to the node's address, newest first.

use serde_json::Value;

use super::{answered, int, node_filter, query::limit};
use crate::model::{NodeAnswer, NodeSnapshot};

/// Merges the nodes' `containers/json` arrays.
///
/// Each container is the engine's own entry with two changes, as Swarm made them: every name
/// becomes `/<node>/<name>` (the CLI then shows `node1/web`), and a port published on
/// `0.0.0.0` or `::` shows the node's address ([`NodeSnapshot::host`]); nothing is added.
/// The whole list is sorted by `Created`, newest first (ties keep node order, then the engine's
/// order), and `limit` (`-n`, `-l`) is applied after merging: each node already returned its
/// own newest N, a superset of the cluster's newest N. A `node` filter drops other nodes'
/// answers (the gateway should not have asked them, see [`node_filter`]).
pub fn containers(answers: &[NodeAnswer<Value>], nodes: &[NodeSnapshot], query: &str) -> Value {
    let wanted = node_filter(query);
    let mut merged: Vec<(i64, Value)> = Vec::new();
    for (node, list) in answered(answers) {
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|n| n == node)) {
            continue;
        }
        let host = nodes.iter().find(|n| n.name == node).map(NodeSnapshot::host);
        for container in list.as_array().into_iter().flatten() {
            let mut container = container.clone();
            qualify_container(&mut container, node, host);
            merged.push((int(&container, "Created"), container));
        }
    }
    // Stable: equal times keep node order, then the engine's own order.
    merged.sort_by_key(|c| std::cmp::Reverse(c.0));
    if let Some(n) = limit(query) {
        merged.truncate(n);
    }
    Value::Array(merged.into_iter().map(|(_, c)| c).collect())
}

/// One `containers/json` (or `system/df`) entry as the cluster shows it: [`qualify_names`] on
/// `Names`, and [`pin_ports`] on `Ports` if the node's address is known.
pub fn qualify_container(container: &mut Value, node: &str, host: Option<&str>) {
    if let Some(names) = container.get_mut("Names") {
        qualify_names(names, node);
    }
    if let (Some(host), Some(ports)) = (host, container.get_mut("Ports")) {
        pin_ports(ports, host);
    }
}

/// `["/web", "/app/db"]` -> `["/node1/web", "/node1/app/db"]` (link names included, as Swarm did).
pub fn qualify_names(names: &mut Value, node: &str) {
    for name in names.as_array_mut().into_iter().flatten() {
        if let Some(n) = name.as_str() {
            *name = Value::String(format!("/{node}/{}", n.trim_start_matches('/')));
        }
    }
}

/// Ports published on every address (`0.0.0.0`, `::`) show the node's address instead, which
/// is where a client can reach them. Engines list such a port once per address family; pinned
/// to one address they would be twins, so exact duplicates are dropped.
pub fn pin_ports(ports: &mut Value, host: &str) {
    let Some(list) = ports.as_array_mut() else { return };
    for port in list.iter_mut() {
        if let Some(ip) = port.get_mut("IP") {
            if matches!(ip.as_str(), Some("0.0.0.0" | "::")) {
                *ip = Value::String(host.to_owned());
            }
        }
    }
    let mut seen: Vec<Value> = Vec::with_capacity(list.len());
    list.retain(|port| {
        if seen.contains(port) {
            false
        } else {
            seen.push(port.clone());
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aggregate::fixtures::{err, node, ok};

    // Trimmed from dockerd 20.10's `GET /v1.41/containers/json?all=1`.
    fn web(id: &str, name: &str, created: i64) -> Value {
        json!({
            "Id": id, "Names": [format!("/{name}")], "Image": "busybox",
            "ImageID": "sha256:638ac8057ea704c4c6abd0ac9cd5d4176aef62e9e717aec9980f9db812e03ca6",
            "Command": "sleep 1000", "Created": created,
            "Ports": [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"},
                {"IP": "127.0.0.1", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}
            ],
            "Labels": {}, "State": "running", "Status": "Up 2 seconds",
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.39.0.2", "IPPrefixLen": 16}}},
            "Mounts": []
        })
    }

    fn done(id: &str, name: &str, created: i64) -> Value {
        json!({
            "Id": id, "Names": [format!("/{name}")], "Image": "busybox", "Command": "true",
            "Created": created, "Ports": [], "Labels": {}, "State": "exited",
            "Status": "Exited (0) 2 seconds ago", "HostConfig": {"NetworkMode": "default"}, "Mounts": []
        })
    }

    fn cluster() -> Vec<NodeSnapshot> {
        vec![node("node1", "10.77.1.2:7443", &[]), node("node2", "[fd00::2]:7443", &[])]
    }

    fn answers() -> Vec<NodeAnswer<Value>> {
        vec![
            ok("node2", json!([web("b1", "api", 1_700_000_300), done("b2", "job", 1_700_000_100)])),
            ok("node1", json!([web("a1", "web", 1_700_000_200), done("a2", "old", 1_700_000_000)])),
        ]
    }

    fn ids(list: &Value) -> Vec<&str> {
        list.as_array().expect("an array").iter().map(|c| c["Id"].as_str().expect("an Id")).collect()
    }

    #[test]
    fn merges_newest_first_with_node_names() {
        let merged = containers(&answers(), &cluster(), "all=1");
        assert_eq!(ids(&merged), ["b1", "a1", "b2", "a2"]);
        assert_eq!(merged[0]["Names"], json!(["/node2/api"]));
        assert_eq!(merged[1]["Names"], json!(["/node1/web"]));
        assert_eq!(merged[3]["Names"], json!(["/node1/old"]));
    }

    #[test]
    fn pins_wildcard_ports_to_the_node_address() {
        let merged = containers(&answers(), &cluster(), "");
        assert_eq!(
            merged[1]["Ports"],
            json!([
                {"IP": "10.77.1.2", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"},
                {"IP": "127.0.0.1", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}
            ])
        );
        assert_eq!(merged[0]["Ports"][0]["IP"], "fd00::2");
    }

    #[test]
    fn adds_nothing_else() {
        let merged = containers(&answers(), &cluster(), "");
        let mut expected = web("a1", "web", 1_700_000_200);
        expected["Names"] = json!(["/node1/web"]);
        expected["Ports"].as_array_mut().expect("ports").remove(1);
        expected["Ports"][0]["IP"] = json!("10.77.1.2");
        assert_eq!(merged[1], expected);
    }

    #[test]
    fn limit_applies_after_merging() {
        assert_eq!(ids(&containers(&answers(), &cluster(), "all=1&limit=3")), ["b1", "a1", "b2"]);
        assert_eq!(ids(&containers(&answers(), &cluster(), "all=1&limit=1")), ["b1"]);
    }

    #[test]
    fn node_filter_keeps_only_the_named_nodes() {
        let q = "all=1&filters=%7B%22node%22%3A%7B%22node1%22%3Atrue%7D%7D";
        assert_eq!(ids(&containers(&answers(), &cluster(), q)), ["a1", "a2"]);
        let q = "filters=%7B%22node%22%3A%5B%22node1%22%2C%22node2%22%5D%7D&limit=1";
        assert_eq!(ids(&containers(&answers(), &cluster(), q)), ["b1"]);
    }

    #[test]
    fn failed_nodes_are_left_out() {
        let answers = vec![err("node2", "connection refused"), ok("node1", json!([done("a2", "old", 1)]))];
        assert_eq!(ids(&containers(&answers, &cluster(), "")), ["a2"]);
        assert_eq!(containers(&[err("node1", "timeout")], &cluster(), ""), json!([]));
    }

    #[test]
    fn unknown_node_keeps_its_ports_and_link_names_are_qualified() {
        let mut c = web("c1", "db", 5);
        c["Names"] = json!(["/db", "/app/db"]);
        let merged = containers(&[ok("node9", json!([c]))], &cluster(), "");
        assert_eq!(merged[0]["Names"], json!(["/node9/db", "/node9/app/db"]));
        assert_eq!(merged[0]["Ports"][0]["IP"], "0.0.0.0");
    }
}
