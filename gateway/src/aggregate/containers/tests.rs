use serde_json::json;

use super::*;
use crate::aggregate::fixtures::{err, node, ok};
use crate::aggregate::query::encode;

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
    vec![
        node("node1", "10.77.1.2:7443", &[]),
        node("node2", "[fd00::2]:7443", &[]),
    ]
}

fn answers() -> Vec<NodeAnswer<Value>> {
    vec![
        ok(
            "node2",
            json!([
                web("b1", "api", 1_700_000_300),
                done("b2", "job", 1_700_000_100)
            ]),
        ),
        ok(
            "node1",
            json!([
                web("a1", "web", 1_700_000_200),
                done("a2", "old", 1_700_000_000)
            ]),
        ),
    ]
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|c| c["Id"].as_str().expect("an Id"))
        .collect()
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
    assert_eq!(
        ids(&containers(&answers(), &cluster(), "all=1&limit=3")),
        ["b1", "a1", "b2"]
    );
    assert_eq!(
        ids(&containers(&answers(), &cluster(), "all=1&limit=1")),
        ["b1"]
    );
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
    let answers = vec![
        err("node2", "connection refused"),
        ok("node1", json!([done("a2", "old", 1)])),
    ];
    assert_eq!(ids(&containers(&answers, &cluster(), "")), ["a2"]);
    assert_eq!(
        containers(&[err("node1", "timeout")], &cluster(), ""),
        json!([])
    );
}

#[test]
fn unknown_node_keeps_its_ports_and_link_names_are_qualified() {
    let mut c = web("c1", "db", 5);
    c["Names"] = json!(["/db", "/app/db"]);
    let merged = containers(&[ok("node9", json!([c]))], &cluster(), "");
    assert_eq!(merged[0]["Names"], json!(["/node9/db", "/node9/app/db"]));
    assert_eq!(merged[0]["Ports"][0]["IP"], "0.0.0.0");
}

#[test]
fn host_of_takes_the_address_without_port_or_brackets() {
    assert_eq!(host_of("10.77.1.2:7443"), "10.77.1.2");
    assert_eq!(host_of("[fd00::2]:7443"), "fd00::2");
    assert_eq!(host_of("node1"), "node1");
    for n in cluster() {
        assert_eq!(host_of(&n.addr), n.host());
    }
}

// ---- the raw path: bytes in, bytes out ----

/// Parses `bodies` and merges them as `parts` of nodes `(name, host_down)`.
fn merge(bodies: &[(&str, bool, String)], query: &str) -> (Value, Merged) {
    let lists: Vec<ContainerList> = bodies
        .iter()
        .map(|(_, _, b)| parse_list(b.as_bytes()).expect("a list"))
        .collect();
    let hosts = [
        ("node1", "10.77.1.2"),
        ("node2", "fd00::2"),
        ("node3", "10.77.3.2"),
    ];
    let parts: Vec<NodePart> = bodies
        .iter()
        .zip(&lists)
        .map(|((node, down, _), list)| NodePart {
            node,
            host: hosts.iter().find(|(n, _)| n == node).map(|(_, h)| *h),
            list,
            host_down: *down,
        })
        .collect();
    let merged = merge_lists(&parts, query);
    let doc = serde_json::from_slice(&merged.body).expect("valid JSON");
    (doc, merged)
}

/// node1 and node2 answered; node3 is down and was last seen with `c1` running, `c2` exited.
fn with_node3_down() -> Vec<(&'static str, bool, String)> {
    let mut c1 = web("c1", "cache", 1_700_000_250);
    c1["Labels"] = json!({"tier": "back", "team": "ops"});
    let c2 = done("c2", "batch", 1_700_000_050);
    vec![
        (
            "node1",
            false,
            json!([
                web("a1", "web", 1_700_000_200),
                done("a2", "old", 1_700_000_000)
            ])
            .to_string(),
        ),
        (
            "node2",
            false,
            json!([
                web("b1", "api", 1_700_000_300),
                done("b2", "job", 1_700_000_100)
            ])
            .to_string(),
        ),
        ("node3", true, json!([c1, c2]).to_string()),
    ]
}

fn filters(f: Value) -> String {
    format!("filters={}", encode(&f.to_string()))
}

#[test]
fn host_down_rows_are_listed_with_all_marked_as_swarm_did() {
    let (doc, merged) = merge(&with_node3_down(), "all=1");
    assert_eq!(ids(&doc), ["b1", "c1", "a1", "b2", "c2", "a2"]);
    assert_eq!((merged.rows, merged.host_down_rows), (6, 2));
    let c1 = &doc[1];
    assert_eq!(c1["Status"], HOST_DOWN);
    assert_eq!(c1["State"], "running", "the last-seen state stays");
    assert_eq!(c1["Names"], json!(["/node3/cache"]));
    assert_eq!(c1["Ports"][0]["IP"], "10.77.3.2");
    assert_eq!(doc[4]["Status"], HOST_DOWN);
    assert_eq!(doc[4]["State"], "exited");
    // Live rows keep their own status.
    assert_eq!(doc[0]["Status"], "Up 2 seconds");
}

#[test]
fn host_down_rows_are_not_in_the_running_list() {
    let (doc, merged) = merge(&with_node3_down(), "");
    assert_eq!(
        ids(&doc),
        ["b1", "c1", "a1", "b2", "c2", "a2"]
            .iter()
            .filter(|i| !i.starts_with('c'))
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(merged.host_down_rows, 0);
    for q in ["all=0", "all=false", "limit=0", "limit=-1"] {
        assert_eq!(merge(&with_node3_down(), q).1.host_down_rows, 0, "{q}");
    }
}

#[test]
fn a_limit_or_a_status_filter_lists_them_too_as_the_engine_lists_stopped_containers() {
    let (doc, _) = merge(&with_node3_down(), "limit=2");
    assert_eq!(ids(&doc), ["b1", "c1"]);
    let (doc, _) = merge(
        &with_node3_down(),
        &filters(json!({"status": {"exited": true}})),
    );
    // The live nodes' answers were filtered by their engines (here: not), the remembered by us.
    assert!(
        ids(&doc).contains(&"c2") && !ids(&doc).contains(&"c1"),
        "{doc}"
    );
    let (doc, _) = merge(
        &with_node3_down(),
        &filters(json!({"status": ["running", "paused"]})),
    );
    assert!(
        ids(&doc).contains(&"c1") && !ids(&doc).contains(&"c2"),
        "{doc}"
    );
}

#[test]
fn host_down_rows_honour_name_id_and_label_filters() {
    let only = |f: Value| {
        let (doc, _) = merge(&with_node3_down(), &format!("all=1&{}", filters(f)));
        ids(&doc)
            .into_iter()
            .filter(|i| i.starts_with('c'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(only(json!({"name": {"cache": true}})), ["c1"]);
    assert_eq!(
        only(json!({"name": ["^/bat"]})),
        ["c2"],
        "a regexp against /name"
    );
    assert_eq!(only(json!({"name": ["^bat"]})), ["c2"], "or against name");
    assert_eq!(
        only(json!({"name": ["nothing", "cach"]})),
        ["c1"],
        "any of several names"
    );
    assert_eq!(
        only(json!({"name": ["(unclosed"]})),
        Vec::<String>::new(),
        "a bad regexp matches only exactly"
    );
    assert_eq!(only(json!({"id": ["c2"]})), ["c2"]);
    assert_eq!(only(json!({"label": ["tier"]})), ["c1"]);
    assert_eq!(only(json!({"label": ["tier=back", "team=ops"]})), ["c1"]);
    assert_eq!(
        only(json!({"label": ["tier=back", "team=dev"]})),
        Vec::<String>::new(),
        "every label must hold"
    );
    assert_eq!(only(json!({"node": ["node3"], "name": ["batch"]})), ["c2"]);
    assert_eq!(only(json!({"node": ["node1"]})), Vec::<String>::new());
    assert_eq!(
        only(json!({"name": []})),
        ["c1", "c2"],
        "an empty filter filters nothing"
    );
}

#[test]
fn no_host_down_rows_for_filters_only_engines_can_apply() {
    for f in [
        json!({"ancestor": ["busybox"]}),
        json!({"volume": ["/data"]}),
        json!({"health": ["healthy"]}),
        json!({"exited": ["0"]}),
    ] {
        let (_, merged) = merge(&with_node3_down(), &format!("all=1&{}", filters(f.clone())));
        assert_eq!((merged.rows, merged.host_down_rows), (4, 0), "{f}");
    }
    for q in [
        "all=1&since=a1",
        "all=1&before=b1",
        "all=1&filters=not-json",
    ] {
        assert_eq!(merge(&with_node3_down(), q).1.host_down_rows, 0, "{q}");
    }
}

#[test]
fn members_other_than_names_and_ports_are_copied_as_the_engine_wrote_them() {
    // Member order, number spelling and unicode escapes are the engine's.
    let body = r#"[{"Id":"x1","Names":["/a"],"Created":17e8,"Size":1.50,"Command":"echo \u00e9","Ports":[],"Status":"Up"}]"#;
    let (_, merged) = merge(&[("node1", false, body.to_owned())], "");
    assert_eq!(
        String::from_utf8(merged.body).unwrap(),
        r#"[{"Id":"x1","Names":["/node1/a"],"Created":17e8,"Size":1.50,"Command":"echo \u00e9","Ports":[],"Status":"Up"}]"#
    );
    // A key with escapes is rewritten, still valid and the same key.
    let body = r#"[{"I\u0064":"x1","Names":null,"Created":"soon"}]"#;
    let (doc, merged) = merge(&[("node1", true, body.to_owned())], "all=1");
    assert_eq!(doc, json!([{"Id": "x1", "Names": null, "Created": "soon"}]));
    assert_eq!(merged.host_down_rows, 1);
}

#[test]
fn only_arrays_of_objects_are_container_lists() {
    assert!(parse_list(b"[]").is_ok_and(|l| l.is_empty()));
    assert_eq!(
        parse_list(br#"[{"Id":"a"},{"Id":"b"}]"#).map(|l| l.len()),
        Ok(2)
    );
    for bad in [&b"{}"[..], b"[1]", b"[{\"Id\":}]", b"<html>", b"[{}"] {
        let e = parse_list(bad).err().expect("an error");
        assert!(
            e.starts_with("engine answer is not a container list"),
            "{e}"
        );
    }
}

#[test]
fn of_query_reads_both_filter_shapes_and_docker_booleans() {
    assert!(HostDown::of_query("all=1").is_some());
    assert!(HostDown::of_query("all=true&size=1").is_some());
    assert!(HostDown::of_query("all=no").is_none());
    assert!(HostDown::of_query("").is_none());
    let q = "filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D";
    assert_eq!(
        HostDown::of_query(q).map(|h| h.statuses),
        Some(vec!["exited".to_owned()])
    );
}

#[test]
fn pretty_printed_lists_and_escaped_names_come_out_as_valid_equivalent_json() {
    let body = "[\n  {\n    \"Id\" : \"x1\",\n    \"Names\": [\"/caf\\u00e9\", \"/plain\"] ,\n    \"Created\": 3,\n    \"Ports\": [{\"IP\": \"0.0.0.0\", \"PublicPort\": 80}],\n    \"State\": \"running\",\n    \"Status\": \"Up\"\n  }\n]";
    let (doc, merged) = merge(&[("node1", true, body.to_owned())], "all=1");
    assert_eq!(
        doc,
        json!([{"Id": "x1", "Names": ["/node1/café", "/node1/plain"], "Created": 3,
                "Ports": [{"IP": "10.77.1.2", "PublicPort": 80}], "State": "running", "Status": HOST_DOWN}])
    );
    // The members kept are the engine's text, spacing and all.
    let text = String::from_utf8(merged.body).unwrap();
    assert!(
        text.starts_with(
            r#"[{"Id" : "x1","Names":["/node1/café","/node1/plain"],"Created": 3,"Ports":"#
        ),
        "{text}"
    );
}

#[test]
fn node_names_are_escaped_in_qualified_names() {
    let mut out = vec![];
    write_inner_str(&mut out, "plain-node_1.a");
    write_inner_str(&mut out, "q\"b\\s");
    assert_eq!(String::from_utf8(out).unwrap(), r#"plain-node_1.aq\"b\\s"#);
}

#[test]
fn not_utf8_is_not_a_list() {
    assert!(parse_list(b"[{\"Id\":\"\xff\"}]").is_err());
}

#[test]
fn entries_serde_json_cannot_hold_are_copied_as_the_engine_wrote_them() {
    // `1e400` is valid JSON that a `Value` cannot hold: re-reading `Names` or `Ports` to edit
    // them failed, and the `expect("a RawValue is JSON")` panicked.
    let body = br#"[{"Id": "a", "Names": [1e400, "/x"], "Ports": [{"IP": "0.0.0.0", "PublicPort": 1e400}], "Created": 1e400}]"#;
    let list = parse_list(body).expect("a list");
    let part = NodePart {
        node: "node1",
        host: Some("10.0.0.1"),
        list: &list,
        host_down: false,
    };
    let merged = merge_lists(&[part], "");
    let text = String::from_utf8(merged.body).expect("UTF-8");
    assert_eq!(
        text,
        r#"[{"Id": "a","Names":[1e400, "/x"],"Ports":[{"IP": "0.0.0.0", "PublicPort": 1e400}],"Created": 1e400}]"#
    );
}
