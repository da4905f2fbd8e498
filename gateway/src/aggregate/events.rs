//! `GET /events`: each node's events, tagged with the node they come from.

use serde_json::{json, Map, Value};

use crate::model::NodeSnapshot;

/// Tags one event from `node` the way Swarm did, so `docker events` shows where it happened
/// (`... (image=busybox, name=web, node.addr=10.77.1.2:7443, node.ip=10.77.1.2, node.name=node1)`):
/// `Actor.Attributes` gains `node.name`, `node.addr` and `node.ip`, and a top-level
/// `"node": {"Name", "Addr", "Ip"}` object is added (Swarm kept it for tools such as Interlock).
///
/// `from`, `status` and `id` (the pre-1.22 event fields) are left as they are. Swarm appended
/// ` node:<name>` to `from`; clients that still read `from` use it as the image name, and the
/// docker CLI prints `Actor.Attributes` instead, so we don't.
pub fn tag_event(event: &mut Value, node: &NodeSnapshot) {
    let Some(event) = event.as_object_mut() else {
        return;
    };
    let actor = event
        .entry("Actor")
        .or_insert_with(|| json!({ "ID": "", "Attributes": {} }));
    if !actor.is_object() {
        *actor = json!({ "ID": "", "Attributes": {} });
    }
    let attributes = &mut actor["Attributes"];
    if !attributes.is_object() {
        *attributes = Value::Object(Map::new());
    }
    if let Some(attributes) = attributes.as_object_mut() {
        attributes.insert("node.name".into(), Value::from(node.name.as_str()));
        attributes.insert("node.addr".into(), Value::from(node.addr.as_str()));
        attributes.insert("node.ip".into(), Value::from(node.host()));
    }
    event.insert(
        "node".into(),
        json!({ "Name": node.name, "Addr": node.addr, "Ip": node.host() }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::fixtures::node;

    #[test]
    fn tags_actor_attributes_and_adds_a_node_object() {
        // As dockerd 20.10 streams a container start.
        let mut event = json!({
            "status": "start", "id": "0d341d5afeff", "from": "busybox", "Type": "container", "Action": "start",
            "Actor": {"ID": "0d341d5afeff", "Attributes": {"image": "busybox", "name": "web"}},
            "scope": "local", "time": 1_795_319_365, "timeNano": 1_795_319_365_466_173_357_i64
        });
        tag_event(&mut event, &node("node1", "10.77.1.2:7443", &[]));
        assert_eq!(
            event,
            json!({
                "status": "start", "id": "0d341d5afeff", "from": "busybox", "Type": "container", "Action": "start",
                "Actor": {"ID": "0d341d5afeff", "Attributes": {
                    "image": "busybox", "name": "web",
                    "node.name": "node1", "node.addr": "10.77.1.2:7443", "node.ip": "10.77.1.2"
                }},
                "scope": "local", "time": 1_795_319_365, "timeNano": 1_795_319_365_466_173_357_i64,
                "node": {"Name": "node1", "Addr": "10.77.1.2:7443", "Ip": "10.77.1.2"}
            })
        );
    }

    #[test]
    fn creates_missing_attributes() {
        let mut event = json!({"Type": "volume", "Action": "create", "Actor": {"ID": "v1", "Attributes": null}});
        tag_event(&mut event, &node("node2", "[fd00::2]:7443", &[]));
        assert_eq!(event["Actor"]["ID"], "v1");
        assert_eq!(event["Actor"]["Attributes"]["node.ip"], "fd00::2");

        let mut old = json!({"status": "die", "id": "abc", "from": "busybox", "time": 1});
        tag_event(&mut old, &node("node2", "10.77.2.2:7443", &[]));
        assert_eq!(old["from"], "busybox");
        assert_eq!(old["Actor"]["Attributes"]["node.name"], "node2");
        assert_eq!(old["node"]["Name"], "node2");

        let mut not_an_event = json!("garbage");
        tag_event(&mut not_an_event, &node("node2", "10.77.2.2:7443", &[]));
        assert_eq!(not_an_event, json!("garbage"));
    }
}
