//! `GET /images/json` (`docker images`): one entry per image ID across the cluster.

use std::collections::HashMap;

use serde_json::Value;

use super::{answered, int};
use crate::model::NodeAnswer;

/// Merges the nodes' `images/json` arrays, as Swarm did: entries with the same `Id` become one,
/// whose `RepoTags` and `RepoDigests` are the union (first-seen order, no duplicates) and whose
/// `Containers` is the sum (`-1`, "not counted", only if no node counted). Other fields are the
/// first node's (by name): an image ID is its content, so size and creation time agree. Sorted
/// by `Created`, newest first.
pub fn images(answers: &[NodeAnswer<Value>]) -> Value {
    let mut merged: Vec<Value> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (_, list) in answered(answers) {
        for image in list.as_array().into_iter().flatten() {
            let id = image["Id"].as_str().unwrap_or_default();
            match by_id.get(id) {
                Some(&at) if !id.is_empty() => merge_into(&mut merged[at], image),
                _ => {
                    by_id.insert(id.to_owned(), merged.len());
                    merged.push(image.clone());
                }
            }
        }
    }
    merged.sort_by_key(|image| std::cmp::Reverse(int(image, "Created")));
    Value::Array(merged)
}

fn merge_into(into: &mut Value, other: &Value) {
    for key in ["RepoTags", "RepoDigests"] {
        let extra: Vec<&Value> = other[key].as_array().into_iter().flatten().collect();
        if extra.is_empty() {
            continue;
        }
        if !into[key].is_array() {
            into[key] = Value::Array(Vec::new());
        }
        if let Some(list) = into[key].as_array_mut() {
            for value in extra {
                if !list.contains(value) {
                    list.push(value.clone());
                }
            }
        }
    }
    let (a, b) = (int(into, "Containers"), int(other, "Containers"));
    if b >= 0 && into.get("Containers").is_some() {
        into["Containers"] = Value::from(if a >= 0 { a.saturating_add(b) } else { b });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aggregate::fixtures::{err, ok};

    const BUSYBOX: &str = "sha256:638ac8057ea704c4c6abd0ac9cd5d4176aef62e9e717aec9980f9db812e03ca6";
    const ALPINE: &str = "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd";

    // As dockerd 20.10 answers `GET /v1.41/images/json`.
    fn image(id: &str, tags: Value, digests: Value, containers: i64, created: i64) -> Value {
        json!({
            "Containers": containers, "Created": created, "Id": id, "Labels": null, "ParentId": "",
            "RepoDigests": digests, "RepoTags": tags, "SharedSize": -1, "Size": 1_982_321,
            "VirtualSize": 1_982_321
        })
    }

    #[test]
    fn groups_by_id_and_merges_tags_and_counts() {
        let answers = vec![
            ok(
                "node2",
                json!([image(
                    BUSYBOX,
                    json!(["busybox:latest", "mine:1"]),
                    json!(["busybox@sha256:aa"]),
                    2,
                    100
                )]),
            ),
            ok(
                "node1",
                json!([
                    image(BUSYBOX, json!(["busybox:latest"]), Value::Null, 1, 100),
                    image(ALPINE, json!(["alpine:3.19"]), json!([]), -1, 200)
                ]),
            ),
        ];
        let merged = images(&answers);
        assert_eq!(merged.as_array().map(Vec::len), Some(2));
        assert_eq!(merged[0]["Id"], ALPINE, "newest first");
        assert_eq!(merged[1]["Id"], BUSYBOX);
        assert_eq!(merged[1]["RepoTags"], json!(["busybox:latest", "mine:1"]));
        assert_eq!(merged[1]["RepoDigests"], json!(["busybox@sha256:aa"]));
        assert_eq!(merged[1]["Containers"], 3);
        assert_eq!(merged[1]["Size"], 1_982_321);
    }

    #[test]
    fn uncounted_containers_stay_uncounted_only_if_no_node_counted() {
        let a = image(BUSYBOX, json!(["busybox:latest"]), json!([]), -1, 1);
        let b = image(BUSYBOX, json!(["busybox:latest"]), json!([]), 4, 1);
        let merged = images(&[
            ok("node1", json!([a.clone()])),
            ok("node2", json!([a.clone()])),
        ]);
        assert_eq!(merged[0]["Containers"], -1);
        let merged = images(&[ok("node1", json!([a])), ok("node2", json!([b]))]);
        assert_eq!(merged[0]["Containers"], 4);
    }

    #[test]
    fn dangling_images_keep_their_empty_tags() {
        let dangling = image(ALPINE, Value::Null, Value::Null, 0, 1);
        let merged = images(&[
            ok("node1", json!([dangling.clone()])),
            ok("node2", json!([dangling.clone()])),
        ]);
        assert_eq!(merged, json!([dangling]));
    }

    #[test]
    fn failed_nodes_are_left_out() {
        let merged = images(&[
            err("node1", "timeout"),
            ok("node2", json!([image(ALPINE, json!([]), json!([]), 0, 1)])),
        ]);
        assert_eq!(merged.as_array().map(Vec::len), Some(1));
    }
}
