//! What the pre-hook does to a container create, pure: whether the create asks for the cluster
//! network (the label `busbar.net=cluster`), whether it can have it, and the rewrite.
//!
//! The rewrite touches only what the network owns: `HostConfig.NetworkMode` (`busbar`),
//! `NetworkingConfig.EndpointsConfig.busbar.IPAMConfig.IPv4Address` (the cluster address),
//! `HostConfig.Dns` (the node's DNS server first, the client's own servers after it) and two
//! labels of its own (`busbar.net.address`, `busbar.net.claim`). Binds, mounts, the other
//! labels and everything else pass as they came, so another adapter in the same chain (the
//! portable-volume adapter) composes with it in either order.

use std::net::Ipv4Addr;

use busbar_api::ApiPath;
use serde_json::{json, Map, Value};

use crate::{ADDRESS_LABEL, CLAIM_LABEL, LABEL, LABEL_VALUE, NETWORK};

/// Whether the create carries `busbar.net=cluster`.
pub fn wants_cluster(body: &Value) -> bool {
    body["Labels"][LABEL] == LABEL_VALUE
}

/// Why a labelled create cannot join the cluster network (the client's 400), if it cannot.
pub fn refusal(body: &Value) -> Option<String> {
    let mode = body["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    if !["", "default", "bridge", NETWORK].contains(&mode) {
        return Some(format!(
            "busbar-network: a container labelled {LABEL}={LABEL_VALUE} joins the network {NETWORK:?}; it cannot also use --network {mode}"
        ));
    }
    if let Some(endpoints) = body["NetworkingConfig"]["EndpointsConfig"].as_object() {
        if let Some(other) = endpoints
            .keys()
            .find(|k| !["default", "bridge", NETWORK].contains(&k.as_str()))
        {
            return Some(format!(
                "busbar-network: a container labelled {LABEL}={LABEL_VALUE} joins the network {NETWORK:?}; it cannot also join {other:?}"
            ));
        }
        let given = &endpoints
            .get(NETWORK)
            .map_or(&Value::Null, |e| &e["IPAMConfig"]["IPv4Address"]);
        if given.as_str().is_some_and(|s| !s.is_empty()) {
            return Some(format!(
                "busbar-network: the cluster gives a container labelled {LABEL}={LABEL_VALUE} its address; do not pass --ip ({given})"
            ));
        }
    }
    None
}

/// The create's body with the cluster address `ip`, the DNS server `dns` and the claim.
pub fn rewrite(body: &Value, ip: Ipv4Addr, dns: Ipv4Addr, claim: &str) -> Value {
    let mut body = body.clone();
    let obj = object(&mut body);
    let labels = object(obj.entry("Labels").or_insert_with(|| json!({})));
    labels.insert(ADDRESS_LABEL.into(), json!(ip.to_string()));
    labels.insert(CLAIM_LABEL.into(), json!(claim));
    let host = object(obj.entry("HostConfig").or_insert_with(|| json!({})));
    host.insert("NetworkMode".into(), json!(NETWORK));
    let mut servers = vec![json!(dns.to_string())];
    for s in host
        .get("Dns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if s.as_str() != Some(&dns.to_string()) {
            servers.push(s.clone());
        }
    }
    host.insert("Dns".into(), Value::Array(servers));
    let net = object(obj.entry("NetworkingConfig").or_insert_with(|| json!({})));
    let endpoints = object(net.entry("EndpointsConfig").or_insert_with(|| json!({})));
    let mine = endpoints
        .remove(NETWORK)
        .or_else(|| endpoints.remove("default"))
        .or_else(|| endpoints.remove("bridge"))
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    endpoints.clear();
    let mut mine = mine;
    let ep = object(&mut mine);
    let ipam = object(ep.entry("IPAMConfig").or_insert_with(|| json!({})));
    ipam.insert("IPv4Address".into(), json!(ip.to_string()));
    endpoints.insert(NETWORK.into(), mine);
    body
}

/// The value as an object, made one if it is not (a `null` field).
fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// The container name a create asks for (`?name=` of its request target), without `/`, as
/// the engine reads the query.
pub fn container_name(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    busbar_api::query::value(Some(query), "name")
        .map(|v| v.trim_start_matches('/').to_owned())
        .filter(|v| !v.is_empty())
}

/// The container a `POST /containers/{id}/start` (or any `/containers/{id}/...`) names, as
/// the engine routes the path.
pub fn container_in_path(target: &str) -> Option<String> {
    let path = ApiPath::parse(busbar_api::path::strip_query(target)).ok()?;
    match path.segments().as_slice() {
        ["containers", id, ..] if !id.is_empty() => Some((*id).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 7);
    const DNS: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);

    /// What `docker run --label busbar.net=cluster -v data1:/data --dns 9.9.9.9 busybox` sends.
    fn cli_create() -> Value {
        json!({
            "Image": "busybox",
            "Labels": {"busbar.net": "cluster", "app": "web"},
            "HostConfig": {
                "Binds": ["data1:/data"],
                "Mounts": [{"Type": "volume", "Source": "v2", "Target": "/v2"}],
                "NetworkMode": "default",
                "Dns": ["9.9.9.9"],
            },
            "NetworkingConfig": {"EndpointsConfig": {}},
        })
    }

    #[test]
    fn the_rewrite_touches_only_the_networks_fields() {
        let before = cli_create();
        assert!(wants_cluster(&before));
        assert_eq!(refusal(&before), None);
        let after = rewrite(&before, IP, DNS, "c1");
        assert_eq!(after["HostConfig"]["NetworkMode"], "busbar");
        assert_eq!(
            after["NetworkingConfig"]["EndpointsConfig"]["busbar"]["IPAMConfig"]["IPv4Address"],
            "10.232.1.7"
        );
        assert_eq!(after["HostConfig"]["Dns"], json!(["10.232.0.2", "9.9.9.9"]));
        assert_eq!(after["Labels"]["busbar.net.address"], "10.232.1.7");
        assert_eq!(after["Labels"]["busbar.net.claim"], "c1");
        // What it does not own is as it came.
        assert_eq!(after["HostConfig"]["Binds"], before["HostConfig"]["Binds"]);
        assert_eq!(
            after["HostConfig"]["Mounts"],
            before["HostConfig"]["Mounts"]
        );
        assert_eq!(after["Labels"]["app"], "web");
        assert_eq!(after["Image"], "busybox");
        // Twice is once (a chain that runs it again, a retried create).
        let again = rewrite(&after, IP, DNS, "c1");
        assert_eq!(again["HostConfig"]["Dns"], json!(["10.232.0.2", "9.9.9.9"]));
    }

    #[test]
    fn a_minimal_body_and_an_aliased_endpoint_are_rewritten() {
        let after = rewrite(&json!({"Labels": {"busbar.net": "cluster"}}), IP, DNS, "c");
        assert_eq!(after["HostConfig"]["Dns"], json!(["10.232.0.2"]));
        let aliased = json!({
            "Labels": {"busbar.net": "cluster"},
            "HostConfig": {"NetworkMode": "busbar", "Dns": null},
            "NetworkingConfig": {"EndpointsConfig": {"busbar": {"Aliases": ["www"]}}},
        });
        assert_eq!(refusal(&aliased), None);
        let after = rewrite(&aliased, IP, DNS, "c");
        let ep = &after["NetworkingConfig"]["EndpointsConfig"]["busbar"];
        assert_eq!(ep["Aliases"], json!(["www"]));
        assert_eq!(ep["IPAMConfig"]["IPv4Address"], "10.232.1.7");
    }

    #[test]
    fn unlabelled_and_conflicting_creates() {
        assert!(!wants_cluster(&json!({"Image": "busybox"})));
        assert!(!wants_cluster(&json!({"Labels": {"busbar.net": "other"}})));
        assert!(!wants_cluster(&json!(null)));
        let host =
            json!({"Labels": {"busbar.net": "cluster"}, "HostConfig": {"NetworkMode": "host"}});
        assert!(refusal(&host).unwrap().contains("--network host"));
        let other = json!({"Labels": {"busbar.net": "cluster"},
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {}}}});
        assert!(refusal(&other).unwrap().contains("mynet"));
        let ip = json!({"Labels": {"busbar.net": "cluster"}, "HostConfig": {"NetworkMode": "busbar"},
            "NetworkingConfig": {"EndpointsConfig": {"busbar": {"IPAMConfig": {"IPv4Address": "10.232.9.9"}}}}});
        assert!(refusal(&ip).unwrap().contains("--ip"));
    }

    #[test]
    fn names_from_the_request_target() {
        assert_eq!(
            container_name("/v1.41/containers/create?name=web"),
            Some("web".into())
        );
        assert_eq!(
            container_name("/containers/create?platform=&name=%2Fa.b_c-1"),
            Some("a.b_c-1".into())
        );
        assert_eq!(container_name("/v1.41/containers/create"), None);
        assert_eq!(container_name("/v1.41/containers/create?name="), None);
        // A malformed escape: the engine refuses such a query (and busbar before any hook).
        assert_eq!(container_name("/x?name=%zz%"), None);
        assert_eq!(
            container_in_path("/v1.41/containers/abc123/start?x=1"),
            Some("abc123".into())
        );
        assert_eq!(
            container_in_path("/containers/we%62/start"),
            Some("web".into())
        );
        assert_eq!(container_in_path("/v1.41/info"), None);
    }
}
