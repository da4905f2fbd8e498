//! `GET /system/df` and the `POST */prune` endpoints: every node's numbers added up.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::answered;
use super::containers::qualify_container;
use super::volumes::qualify_volume;
use crate::model::NodeAnswer;

/// Merges the nodes' `system/df` answers (`docker system df`): sizes (`LayersSize`,
/// `BuilderSize`) are summed and the `Images`, `Containers`, `Volumes` and `BuildCache` lists
/// concatenated, since each node's copy takes its own disk: an image on two nodes counts twice,
/// which is what the cluster uses. Containers are named `/<node>/<name>` and node-local volumes
/// `<node>/<name>`, as in the list endpoints; a cluster-wide volume is listed once.
pub fn system_df(answers: &[NodeAnswer<Value>]) -> Value {
    let mut shared_volumes: HashSet<(String, String)> = HashSet::new();
    let parts: Vec<Value> = answered(answers)
        .into_iter()
        .map(|(node, df)| {
            let mut df = df.clone();
            for container in df
                .get_mut("Containers")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                qualify_container(container, node, None);
            }
            if let Some(volumes) = df.get_mut("Volumes").and_then(Value::as_array_mut) {
                *volumes = volumes
                    .iter()
                    .filter_map(|v| qualify_volume(v, node, &mut shared_volumes))
                    .collect();
            }
            df
        })
        .collect();
    add_up(parts.iter())
}

/// Merges the nodes' answers to a `*/prune` call (`containers`, `images`, `networks`,
/// `volumes`, `build`): the lists (`ContainersDeleted`, `ImagesDeleted`, `NetworksDeleted`,
/// `VolumesDeleted`, `CachesDeleted`) are concatenated and `SpaceReclaimed` is summed. Entries
/// are the engines' own (IDs, or names for networks and volumes), not qualified by node.
pub fn prune(answers: &[NodeAnswer<Value>]) -> Value {
    add_up(answered(answers).into_iter().map(|(_, v)| v))
}

/// Field by field: numbers summed, lists concatenated (`null` + list = list), anything else as
/// the first answer had it.
fn add_up<'a>(parts: impl Iterator<Item = &'a Value>) -> Value {
    let mut total: Map<String, Value> = Map::new();
    for part in parts {
        for (key, value) in part.as_object().into_iter().flatten() {
            match total.get_mut(key) {
                None => {
                    total.insert(key.clone(), value.clone());
                }
                Some(sum) => add_into(sum, value),
            }
        }
    }
    Value::Object(total)
}

fn add_into(sum: &mut Value, value: &Value) {
    match (&mut *sum, value) {
        (Value::Number(a), Value::Number(b)) => {
            *sum = if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                Value::from(a.saturating_add(b))
            } else if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                Value::from(a.saturating_add(b))
            } else {
                Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            };
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (Value::Null, b) => *sum = b.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aggregate::fixtures::{err, ok};

    // Trimmed from dockerd 20.10's `GET /v1.41/system/df`.
    fn df(container: &str, volume: &str, layers: u64) -> Value {
        json!({
            "LayersSize": layers,
            "Images": [{"Containers": 1, "Created": 1_795_319_364, "Id": "sha256:638ac805", "Labels": null,
                        "ParentId": "", "RepoDigests": null, "RepoTags": ["busybox:latest"], "SharedSize": 0,
                        "Size": 1_982_321, "VirtualSize": 1_982_321}],
            "Containers": [{"Id": format!("{container}-id"), "Names": [format!("/{container}")], "Image": "busybox",
                            "Command": "true", "Created": 1_795_319_365, "Ports": [], "SizeRootFs": 1_982_321,
                            "Labels": {}, "State": "exited", "Status": "Exited (0) 2 seconds ago", "Mounts": []}],
            "Volumes": [{"CreatedAt": "2026-11-22T03:49:25Z", "Driver": "local", "Labels": null,
                         "Mountpoint": "/var/lib/docker/volumes/v1/_data", "Name": volume, "Options": null,
                         "Scope": "local", "UsageData": {"RefCount": 0, "Size": 0}}],
            "BuildCache": null,
            "BuilderSize": 0
        })
    }

    #[test]
    fn system_df_adds_sizes_and_concatenates_lists() {
        let mut node2 = df("job", "v1", 500);
        node2["BuildCache"] =
            json!([{"ID": "k1", "Type": "regular", "Size": 10, "InUse": false, "Shared": false}]);
        node2["BuilderSize"] = json!(10);
        node2["Volumes"].as_array_mut().expect("Volumes").push(json!({
            "Driver": "rexray", "Name": "nfs", "Scope": "global", "UsageData": {"RefCount": 0, "Size": -1}
        }));
        let mut node3 = df("x", "y", 1);
        node3["Volumes"] = json!([{"Driver": "rexray", "Name": "nfs", "Scope": "global"}]);
        let merged = system_df(&[
            ok("node2", node2),
            ok("node1", df("web", "v1", 1_982_321)),
            ok("node3", node3),
            err("node4", "timeout"),
        ]);
        assert_eq!(merged["LayersSize"], 1_982_321 + 500 + 1);
        assert_eq!(merged["BuilderSize"], 10);
        assert_eq!(merged["Images"].as_array().map(Vec::len), Some(3));
        let containers: Vec<&Value> = merged["Containers"]
            .as_array()
            .expect("Containers")
            .iter()
            .map(|c| &c["Names"][0])
            .collect();
        assert_eq!(
            containers,
            [
                &json!("/node1/web"),
                &json!("/node2/job"),
                &json!("/node3/x")
            ]
        );
        let volumes: Vec<&Value> = merged["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .map(|v| &v["Name"])
            .collect();
        assert_eq!(
            volumes,
            [&json!("node1/v1"), &json!("node2/v1"), &json!("nfs")]
        );
        assert_eq!(
            merged["BuildCache"],
            json!([{"ID": "k1", "Type": "regular", "Size": 10, "InUse": false, "Shared": false}])
        );
    }

    #[test]
    fn prune_concatenates_deleted_lists_and_sums_space() {
        // dockerd 20.10's answers to `POST /v1.41/containers/prune` and `images/prune`.
        let merged = prune(&[
            ok(
                "node1",
                json!({"ContainersDeleted": ["3fccef30d38a"], "SpaceReclaimed": 0}),
            ),
            ok(
                "node2",
                json!({"ContainersDeleted": ["9abc", "def0"], "SpaceReclaimed": 1_982_321}),
            ),
            ok(
                "node3",
                json!({"ContainersDeleted": null, "SpaceReclaimed": 12}),
            ),
            err("node4", "connection refused"),
        ]);
        assert_eq!(
            merged,
            json!({"ContainersDeleted": ["3fccef30d38a", "9abc", "def0"], "SpaceReclaimed": 1_982_333})
        );

        let merged = prune(&[
            ok("node1", json!({"ImagesDeleted": null, "SpaceReclaimed": 0})),
            ok(
                "node2",
                json!({"ImagesDeleted": [{"Untagged": "busybox:latest"}, {"Deleted": "sha256:638a"}], "SpaceReclaimed": 1_982_321}),
            ),
        ]);
        assert_eq!(
            merged,
            json!({"ImagesDeleted": [{"Untagged": "busybox:latest"}, {"Deleted": "sha256:638a"}], "SpaceReclaimed": 1_982_321})
        );
        let merged = prune(&[
            ok("node1", json!({"NetworksDeleted": ["n1"]})),
            ok("node2", json!({"NetworksDeleted": ["n1"]})),
        ]);
        assert_eq!(merged, json!({"NetworksDeleted": ["n1", "n1"]}));
        assert_eq!(
            prune(&[ok(
                "node1",
                json!({"CachesDeleted": null, "SpaceReclaimed": 0})
            )]),
            json!({"CachesDeleted": null, "SpaceReclaimed": 0})
        );
        assert_eq!(prune(&[err("node1", "timeout")]), json!({}));
    }
}
