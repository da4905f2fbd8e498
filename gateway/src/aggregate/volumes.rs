//! `GET /volumes` (`docker volume ls`): node-local volumes by `node/name`, cluster-wide ones once.

use std::collections::HashSet;

use serde_json::Value;

use super::{answered, qualify, text};
use crate::model::{NodeAnswer, NodeSnapshot};

/// Merges the nodes' `{"Volumes": [...], "Warnings": [...]}` answers, as Swarm did: a volume
/// of the `local` driver is named `<node>/<name>`. So is any other volume whose `Scope` is not
/// `global`: a node-scoped plugin's `data` on two nodes is two different volumes. A `global`
/// volume (shared storage, the same on every node) appears once, by driver and name. Each
/// node's warnings are kept, prefixed with the node's name; `Warnings` is `null` if none, as
/// engines send it. `_nodes` is not needed today: it keeps the shape of the merges that name
/// things by node.
pub fn volumes(answers: &[NodeAnswer<Value>], _nodes: &[NodeSnapshot]) -> Value {
    let mut merged: Vec<Value> = Vec::new();
    let mut warnings: Vec<Value> = Vec::new();
    let mut shared: HashSet<(String, String)> = HashSet::new();
    for (node, answer) in answered(answers) {
        for volume in answer["Volumes"].as_array().into_iter().flatten() {
            merged.extend(qualify_volume(volume, node, &mut shared));
        }
        for warning in answer["Warnings"].as_array().into_iter().flatten() {
            if let Some(w) = warning.as_str() {
                warnings.push(Value::String(format!("{node}: {w}")));
            }
        }
    }
    let warnings = if warnings.is_empty() {
        Value::Null
    } else {
        Value::Array(warnings)
    };
    serde_json::json!({ "Volumes": merged, "Warnings": warnings })
}

/// True if the volume is one node's own (see [`volumes`]).
pub(super) fn is_node_local(volume: &Value) -> bool {
    text(volume, "Driver") == "local" || text(volume, "Scope") != "global"
}

/// The volume as the cluster lists it, or `None` if `shared` already has this global volume.
pub(super) fn qualify_volume(
    volume: &Value,
    node: &str,
    shared: &mut HashSet<(String, String)>,
) -> Option<Value> {
    if !is_node_local(volume) {
        let key = (
            text(volume, "Driver").to_owned(),
            text(volume, "Name").to_owned(),
        );
        return shared.insert(key).then(|| volume.clone());
    }
    let mut volume = volume.clone();
    if let Some(name) = volume["Name"].as_str() {
        volume["Name"] = Value::String(qualify(node, name));
    }
    Some(volume)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aggregate::fixtures::{err, ok};

    // As dockerd 20.10 answers `GET /v1.41/volumes`.
    fn volume(name: &str, driver: &str, scope: &str) -> Value {
        json!({
            "CreatedAt": "2026-11-22T03:49:25Z", "Driver": driver, "Labels": null,
            "Mountpoint": format!("/var/lib/docker/volumes/{name}/_data"), "Name": name,
            "Options": null, "Scope": scope
        })
    }

    #[test]
    fn local_volumes_get_node_names_and_global_ones_appear_once() {
        let answers = vec![
            ok(
                "node2",
                json!({"Volumes": [volume("v1", "local", "local"), volume("nfs", "rexray", "global")], "Warnings": null}),
            ),
            ok(
                "node1",
                json!({
                    "Volumes": [volume("v1", "local", "local"), volume("nfs", "rexray", "global"), volume("lv", "lvm", "local")],
                    "Warnings": ["volume plugin lvm is slow"]
                }),
            ),
            err("node3", "connection refused"),
        ];
        let merged = volumes(&answers, &[]);
        let names: Vec<&str> = merged["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .filter_map(|v| v["Name"].as_str())
            .collect();
        assert_eq!(names, ["node1/v1", "nfs", "node1/lv", "node2/v1"]);
        assert_eq!(merged["Volumes"][1], volume("nfs", "rexray", "global"));
        assert_eq!(
            merged["Volumes"][0]["Mountpoint"],
            "/var/lib/docker/volumes/v1/_data"
        );
        assert_eq!(
            merged["Warnings"],
            json!(["node1: volume plugin lvm is slow"])
        );
    }

    #[test]
    fn no_warnings_is_null_and_no_volumes_is_empty() {
        let merged = volumes(
            &[ok("node1", json!({"Volumes": null, "Warnings": null}))],
            &[],
        );
        assert_eq!(merged, json!({"Volumes": [], "Warnings": null}));
        assert_eq!(volumes(&[], &[]), json!({"Volumes": [], "Warnings": null}));
    }
}
