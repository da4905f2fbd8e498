//! `GET /version` (`docker version`): the gateway's version, with the API range every healthy
//! node accepts, and one component per node.

use std::borrow::Borrow;
use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::{
    node_views, reread, text, with_raw_array, GatewayFacts, NodeView, FALLBACK_API_VERSION,
    FALLBACK_MIN_API_VERSION,
};
use crate::model::{Health, NodeAnswer, NodeSnapshot};

/// The cluster's `/version` document.
///
/// - `Version` is `busbar/<version>`; `Os`, `Arch` and `KernelVersion` are the gateway host's
///   (`Arch` in Go's words, see [`go_arch`]); `Platform.Name` is `busbar`, so the CLI prints
///   `Server: busbar`.
/// - `ApiVersion` is the **lowest** `ApiVersion` among healthy nodes and `MinAPIVersion` the
///   **highest** `MinAPIVersion`: the range every healthy node accepts (see
///   [`api_version_range`]).
/// - `Components` starts with an `Engine` entry for the gateway itself (the CLI prints that name
///   as the server's own block: version, `API version: 1.41 (minimum version 1.12)`, OS/Arch),
///   then one entry per node in name order, `{"Name": "node1", "Version": <engine version>,
///   "Details": {"ApiVersion", "MinAPIVersion", "Os", "Arch", "KernelVersion", ...}}`, the
///   details being the node's own `Engine` component's. A node that is not healthy is listed
///   too, from what was last seen, with `Status` (and `Error`) in its details.
///
/// `Os` and `Arch` are the build's (the host the gateway runs on); `KernelVersion` is empty:
/// [`version_with_facts`] fills it from [`GatewayFacts`].
pub fn version(
    nodes: &[NodeSnapshot],
    answers: &[NodeAnswer<Value>],
    gateway_version: &str,
) -> Value {
    version_with_facts(nodes, answers, &GatewayFacts::new("", gateway_version))
}

/// [`version`], with the gateway host's facts (`Os`, `Arch`, `KernelVersion`).
pub fn version_with_facts(
    nodes: &[NodeSnapshot],
    answers: &[NodeAnswer<Value>],
    facts: &GatewayFacts,
) -> Value {
    let views = node_views(nodes, answers, |n| n.version.as_ref());
    let parts: Vec<VersionPart> = views.iter().map(VersionPart::of_view).collect();
    reread(version_from_parts(&parts, facts).as_bytes())
}

/// One node's part of the cluster's `/version`: its entry in `Components`, serialized, and
/// the API range it accepts if it is healthy. As [`InfoPart`](super::InfoPart), kept per node
/// until the node changes.
#[derive(Debug, Clone)]
pub struct VersionPart {
    /// The node's `Components` entry, as JSON text.
    component: String,
    /// `{"ApiVersion", "MinAPIVersion"}` of a healthy node with a known `/version`.
    range: Option<Value>,
}

impl VersionPart {
    /// The part of a node as its snapshot shows it.
    pub fn of(node: &NodeSnapshot) -> VersionPart {
        let views = node_views(std::slice::from_ref(node), &[], |n| n.version.as_ref());
        VersionPart::of_view(&views[0])
    }

    fn of_view(view: &NodeView<'_>) -> VersionPart {
        let range = view
            .healthy_doc()
            .map(|d| json!({"ApiVersion": d["ApiVersion"], "MinAPIVersion": d["MinAPIVersion"]}));
        VersionPart {
            component: node_component(view).to_string(),
            range,
        }
    }
}

/// The cluster's `/version` document (see [`version`]), as JSON text, from every node's part in
/// node name order.
pub fn version_from_parts<P: Borrow<VersionPart>>(parts: &[P], facts: &GatewayFacts) -> String {
    let (api, min_api) = range_of(parts.iter().filter_map(|p| p.borrow().range.as_ref()));
    let (api, min_api) = (
        api.unwrap_or(FALLBACK_API_VERSION),
        min_api.unwrap_or(FALLBACK_MIN_API_VERSION),
    );
    let arch = go_arch(&facts.architecture);
    let gateway = json!({
        "Name": "Engine",
        "Version": facts.server_version(),
        "Details": {
            "ApiVersion": api, "MinAPIVersion": min_api, "Os": facts.os_type, "Arch": arch,
            "KernelVersion": facts.kernel_version, "GitCommit": "", "GoVersion": "", "BuildTime": "",
            "Experimental": "false"
        }
    })
    .to_string();
    let doc = json!({
        "Platform": {"Name": "busbar"},
        "Version": facts.server_version(),
        "ApiVersion": api,
        "MinAPIVersion": min_api,
        "GitCommit": "",
        "GoVersion": "",
        "Os": facts.os_type,
        "Arch": arch,
        "KernelVersion": facts.kernel_version,
        "BuildTime": "",
    });
    let components = std::iter::once(gateway.as_str())
        .chain(parts.iter().map(|p| p.borrow().component.as_str()));
    with_raw_array(&doc, "Components", components)
}

/// The API range every healthy node accepts, from the snapshots' last-seen `/version`:
/// (lowest `ApiVersion`, highest `MinAPIVersion`), each `None` if no healthy node said. For the
/// `Api-Version` header of `/_ping`, which must agree with `/version`.
pub fn api_version_range(nodes: &[NodeSnapshot]) -> (Option<String>, Option<String>) {
    let (api, min) = range_of(
        nodes
            .iter()
            .filter(|n| n.health == Health::Healthy)
            .map(|n| n.version.as_ref()),
    );
    (api.map(str::to_owned), min.map(str::to_owned))
}

/// Compares Docker API versions as numbers, part by part: `1.9 < 1.41 < 1.43`; a missing part
/// is 0, and a part that is not a number compares as 0.
pub fn compare_api_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.trim()
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        match a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// `uname -m` (or Rust's `ARCH`) words -> Go's `GOARCH` words, which `/version` uses.
pub fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        m if m.starts_with("armv") || m == "arm" => "arm",
        "powerpc64le" => "ppc64le",
        other => other,
    }
}

fn range_of<'a>(docs: impl Iterator<Item = &'a Value>) -> (Option<&'a str>, Option<&'a str>) {
    let mut api: Option<&str> = None;
    let mut min: Option<&str> = None;
    for doc in docs {
        let (a, m) = (text(doc, "ApiVersion"), text(doc, "MinAPIVersion"));
        if !a.is_empty()
            && api.is_none_or(|lowest| compare_api_versions(a, lowest) == Ordering::Less)
        {
            api = Some(a);
        }
        if !m.is_empty()
            && min.is_none_or(|highest| compare_api_versions(m, highest) == Ordering::Greater)
        {
            min = Some(m);
        }
    }
    (api, min)
}

fn node_component(view: &NodeView<'_>) -> Value {
    let doc = view.doc.unwrap_or(&Value::Null);
    let engine = doc["Components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["Name"] == "Engine")
        .and_then(|c| c["Details"].as_object());
    let mut details: Map<String, Value> = engine.cloned().unwrap_or_else(|| {
        [
            "ApiVersion",
            "MinAPIVersion",
            "Os",
            "Arch",
            "KernelVersion",
            "GitCommit",
            "GoVersion",
        ]
        .iter()
        .filter(|k| !doc[**k].is_null())
        .map(|k| ((*k).to_owned(), doc[*k].clone()))
        .collect()
    });
    if view.health != Health::Healthy {
        details.insert("Status".into(), Value::from(view.health.to_string()));
    }
    if let Some(error) = view.error.as_deref() {
        details.insert("Error".into(), Value::from(error));
    }
    let version = match text(doc, "Version") {
        "" => "(unknown)",
        v => v,
    };
    json!({ "Name": view.name, "Version": version, "Details": details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::fixtures::{err, node, ok};

    // Trimmed from dockerd 20.10's `GET /v1.41/version`.
    fn engine_version(version: &str, api: &str, min: &str) -> Value {
        json!({
            "Platform": {"Name": ""},
            "Components": [
                {"Name": "Engine", "Version": version, "Details": {
                    "ApiVersion": api, "Arch": "amd64", "BuildTime": "2024-05-07T21:09:36.000000000+00:00",
                    "Experimental": "false", "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
                    "KernelVersion": "6.1.0-18-amd64", "MinAPIVersion": min, "Os": "linux"}},
                {"Name": "containerd", "Version": "1.6.20~ds1", "Details": {"GitCommit": "1.6.20~ds1-1+deb12u3"}}
            ],
            "Version": version, "ApiVersion": api, "MinAPIVersion": min, "GitCommit": "5d6db84",
            "GoVersion": "go1.19.8", "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0-18-amd64",
            "BuildTime": "2024-05-07T21:09:36.000000000+00:00"
        })
    }

    fn facts() -> GatewayFacts {
        let mut facts = GatewayFacts::new("gw", "0.1.0");
        facts.os_type = "linux".into();
        facts.architecture = "x86_64".into();
        facts.kernel_version = "6.1.0-18-amd64".into();
        facts
    }

    #[test]
    fn advertises_the_range_every_healthy_node_accepts() {
        let nodes = vec![
            node("node1", "10.77.1.2:7443", &[]),
            node("node2", "10.77.2.2:7443", &[]),
        ];
        let answers = vec![
            ok("node2", engine_version("24.0.7", "1.43", "1.12")),
            ok("node1", engine_version("20.10.24+dfsg1", "1.41", "1.12")),
            err("node3", "timeout"),
        ];
        let doc = version_with_facts(&nodes, &answers, &facts());
        assert_eq!(doc["Version"], "busbar/0.1.0");
        assert_eq!(doc["ApiVersion"], "1.41");
        assert_eq!(doc["MinAPIVersion"], "1.12");
        assert_eq!(doc["Os"], "linux");
        assert_eq!(doc["Arch"], "amd64");
        assert_eq!(doc["KernelVersion"], "6.1.0-18-amd64");

        let components = doc["Components"].as_array().expect("Components");
        let names: Vec<&str> = components
            .iter()
            .filter_map(|c| c["Name"].as_str())
            .collect();
        assert_eq!(names, ["Engine", "node1", "node2", "node3"]);
        assert_eq!(components[0]["Version"], "busbar/0.1.0");
        assert_eq!(components[0]["Details"]["ApiVersion"], "1.41");
        assert_eq!(components[1]["Version"], "20.10.24+dfsg1");
        assert_eq!(components[1]["Details"]["GitCommit"], "5d6db84");
        assert_eq!(components[2]["Details"]["ApiVersion"], "1.43");
        assert!(components[2]["Details"].get("Status").is_none());
        assert_eq!(components[3]["Version"], "(unknown)");
        assert_eq!(
            components[3]["Details"],
            json!({"Status": "Unhealthy", "Error": "timeout"})
        );
    }

    #[test]
    fn min_api_is_the_highest_and_unhealthy_nodes_do_not_count() {
        let mut node3 = node("node3", "10.77.3.2:7443", &[]);
        node3.version = engine_version("19.03.0", "1.40", "1.12").into();
        let answers = vec![
            ok("node1", engine_version("25.0.0", "1.44", "1.24")),
            ok("node2", engine_version("26.1.0", "1.45", "1.12")),
            err("node3", "connection refused"),
        ];
        let doc = version_with_facts(&[node3], &answers, &facts());
        assert_eq!(doc["ApiVersion"], "1.44");
        assert_eq!(doc["MinAPIVersion"], "1.24");
        let node3 = &doc["Components"][3];
        assert_eq!(node3["Version"], "19.03.0");
        assert_eq!(node3["Details"]["ApiVersion"], "1.40");
        assert_eq!(node3["Details"]["Status"], "Unhealthy");
    }

    #[test]
    fn falls_back_when_no_node_is_healthy() {
        let doc = version(&[], &[err("node1", "timeout")], "0.1.0");
        assert_eq!(doc["Version"], "busbar/0.1.0");
        assert_eq!(doc["Os"], std::env::consts::OS);
        assert_eq!(doc["ApiVersion"], FALLBACK_API_VERSION);
        assert_eq!(doc["MinAPIVersion"], FALLBACK_MIN_API_VERSION);
    }

    #[test]
    fn old_engines_without_components_still_give_details() {
        let mut old = engine_version("1.13.1", "1.26", "1.12");
        old.as_object_mut().expect("an object").remove("Components");
        let doc = version_with_facts(&[], &[ok("node1", old)], &facts());
        assert_eq!(doc["Components"][1]["Details"]["ApiVersion"], "1.26");
        assert_eq!(doc["Components"][1]["Details"]["GoVersion"], "go1.19.8");
    }

    #[test]
    fn api_version_range_from_snapshots() {
        let mut a = node("a", "10.0.0.1:7443", &[]);
        a.version = engine_version("24.0.7", "1.43", "1.12").into();
        let mut b = node("b", "10.0.0.2:7443", &[]);
        b.version = engine_version("20.10.24", "1.41", "1.12").into();
        let mut c = node("c", "10.0.0.3:7443", &[]);
        c.health = Health::Disconnected;
        c.version = engine_version("18.09", "1.39", "1.12").into();
        assert_eq!(
            api_version_range(&[a, b, c]),
            (Some("1.41".to_owned()), Some("1.12".to_owned()))
        );
        assert_eq!(api_version_range(&[]), (None, None));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_api_versions("1.41", "1.43"), Ordering::Less);
        assert_eq!(compare_api_versions("1.9", "1.41"), Ordering::Less);
        assert_eq!(compare_api_versions("1.41", "1.41.0"), Ordering::Equal);
        assert_eq!(compare_api_versions("2.0", "1.99"), Ordering::Greater);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("armv7l"), "arm");
        assert_eq!(go_arch("s390x"), "s390x");
    }
}
