//! `GET /info` (`docker info`): the cluster as one engine, with a block per node in `SystemStatus`.
//!
//! The docker CLI prints each `SystemStatus` pair as ` <key>: <value>`, verbatim, right after
//! `Server Version` (checked with CLI 28.2 against API 1.41; moby still carries the field as
//! "only propagated by the Swarm standalone API"). So the Swarm layout below is what users see:
//!
//! ```text
//!  Server Version: busbar/0.1.0
//!  Role: primary
//!  Strategy: spread
//!  Filters: health, constraint
//!  Nodes: 2
//!   node1: 10.77.1.2:7443
//!    └ ID: BPMU:3PA3:...|10.77.1.2:7443
//!    └ Status: Healthy
//!    └ Containers: 3 (2 Running, 0 Paused, 1 Stopped)
//!    └ Reserved CPUs: 0 / 2
//!    └ Reserved Memory: 0 B / 1.953 GiB
//!    └ Labels: kernelversion=6.1.0-18-amd64, operatingsystem=Debian GNU/Linux 12 (bookworm), ostype=linux, storagedriver=overlay2, zone=a
//!    └ Error: (none)
//!    └ UpdatedAt: 2024-03-01T12:00:00Z
//!    └ ServerVersion: 20.10.24+dfsg1
//!    └ Chains: etcd rev 42 (global, label:zone=a)
//!    └ Chains error: rev 57 refused: scope global (revision 57): ...
//! ```
//!
//! The keys an engine gives that say nothing of the cluster's shape (`Driver`, `Debug`,
//! `Runtimes`, `SecurityOptions`, ...) are the nodes' merged ([`merge_engine_keys`]). The
//! `Chains` lines are the agent's adapter chains as its last probe reported them (see
//! [`chains_lines`]); an agent that does not report them gets none.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use busbar_chains::scoped::ChainStatus;
use serde_json::{json, Value};

use super::{int, node_views, reread, text, with_raw_array, GatewayFacts, NodeView};
use crate::model::{Health, NodeAnswer, NodeSnapshot, Reserved};

/// The cluster's `/info` document.
///
/// - Totals (`Containers`, `ContainersRunning`/`Paused`/`Stopped`, `Images`, `NCPU`,
///   `MemTotal`) are summed over **healthy** nodes only (`Images` counts distinct image IDs
///   when the cluster's answer could list them, see [`info_from_parts_with`]). `Plugins` is the union over healthy nodes, and their
///   `Warnings` are kept, prefixed with the node's name.
/// - `Name`, `ID`, `OperatingSystem`, `OSType`, `Architecture`, `KernelVersion` are the
///   gateway host's; `ServerVersion` is `busbar/<version>`; `Labels` empty, `DriverStatus`
///   empty (it describes one disk), and `Swarm` inactive (the CLI would otherwise print
///   swarm-mode details). Every other key an engine gives is the healthy nodes' merged, see
///   [`merge_engine_keys`].
/// - `SystemStatus` lists `Role`, `Strategy`, `Filters`, `Nodes`, then one block per node in
///   name order (see the module doc). A node is shown from its fresh `/info` answer if it gave
///   one, else from its snapshot. A node whose answer failed is **never dropped**: its block says
///   `Status: Unhealthy` and the failure is its `└ Error`; its `└ Containers` is then just the
///   last count seen, as in Swarm.
///
/// `Reserved CPUs` and `Reserved Memory` show `0 / <total>` here; the cluster's own answer
/// shows what each node's agent reports (see [`info_with_reserved`] and `InfoPart::of`).
pub fn info(nodes: &[NodeSnapshot], answers: &[NodeAnswer<Value>], facts: &GatewayFacts) -> Value {
    info_with_reserved(nodes, answers, facts, &BTreeMap::new())
}

/// [`info`], with what each node's containers have reserved (by node name; a node missing
/// from `reserved` shows `0`).
pub fn info_with_reserved(
    nodes: &[NodeSnapshot],
    answers: &[NodeAnswer<Value>],
    facts: &GatewayFacts,
    reserved: &BTreeMap<String, Reserved>,
) -> Value {
    let views = node_views(nodes, answers, |n| n.info.as_ref());
    let parts: Vec<InfoPart> = views
        .iter()
        .map(|v| InfoPart::of_view(v, reserved.get(v.name).copied().unwrap_or_default()))
        .collect();
    reread(info_from_parts(&parts, facts).as_bytes())
}

/// The `/info` keys whose values are summed over healthy nodes, in [`Counted::totals`] order.
const TOTALS: [&str; 7] = [
    "Containers",
    "ContainersRunning",
    "ContainersPaused",
    "ContainersStopped",
    "Images",
    "NCPU",
    "MemTotal",
];

/// One node's part of the cluster's `/info`: its `SystemStatus` lines, already serialized, and
/// what it adds to the totals. It depends on that node alone, so a gateway in front of a
/// thousand nodes keeps each node's part until the node changes, and makes the cluster's
/// document from the parts ([`info_from_parts`]) without looking at a thousand engine
/// documents again.
#[derive(Debug, Clone)]
pub struct InfoPart {
    /// The node's `SystemStatus` pairs, as JSON array elements separated by commas.
    status: String,
    /// What the node counts for; `None` unless it is healthy with a known `/info`.
    counted: Option<Counted>,
}

/// What a healthy node adds to the cluster's `/info`.
#[derive(Debug, Clone)]
struct Counted {
    /// Its values of [`TOTALS`] (negative ones as 0).
    totals: [i64; 7],
    /// Its `Warnings`, each prefixed with its name.
    warnings: Vec<String>,
    /// Its `Plugins` object.
    plugins: Value,
    /// `plugins` as JSON text: nodes mostly run the same engine, and a thousand equal objects
    /// are found equal faster by their text's hash than compared field by field.
    plugins_text: String,
    /// Its `IndexServerAddress` ("" if none).
    index_server: String,
    /// Every other key of its `/info` (see [`merge_engine_keys`]).
    engine_keys: serde_json::Map<String, Value>,
}

/// The `/info` keys the gateway answers itself; every other key an engine gives is merged
/// over the healthy nodes by [`merge_engine_keys`].
const GATEWAY_KEYS: [&str; 21] = [
    "ID",
    "Name",
    "ServerVersion",
    "Containers",
    "ContainersRunning",
    "ContainersPaused",
    "ContainersStopped",
    "Images",
    "NCPU",
    "MemTotal",
    "DriverStatus",
    "Plugins",
    "OperatingSystem",
    "OSType",
    "Architecture",
    "KernelVersion",
    "Labels",
    "Swarm",
    "Warnings",
    "IndexServerAddress",
    "SystemStatus",
];

/// The engine keys of the cluster's `/info`, from the healthy nodes' (in node name order), so
/// that a client finds every key an engine gives (`Debug`, `Driver`, `RegistryConfig`,
/// `Runtimes`, `SecurityOptions`, `LoggingDriver`, ...), merged by the value's JSON type:
///
/// - a boolean is true when it is true on every node: a capability (`MemoryLimit`,
///   `CpuCfsQuota`, `IPv4Forwarding`, `ExperimentalBuild`, `LiveRestoreEnabled`, ...) holds
///   wherever a container lands;
/// - a number is the sum (`NFd`, `NGoroutines`, `NEventsListener`);
/// - a string is the nodes' common value, or the first node's when they differ (`Driver`,
///   `LoggingDriver`, `CgroupDriver`, `DockerRootDir`, `SystemTime` as of its last probe, ...);
/// - a list holds the entries every node has, in the first node's order (`SecurityOptions`);
/// - an object is the first node's (`RegistryConfig`, `ContainerdCommit`, ...), except
///   `Runtimes`: the runtimes every node has.
///
/// A key some nodes lack is merged over the nodes that have it.
fn merge_engine_keys<'a>(
    nodes: impl Iterator<Item = &'a serde_json::Map<String, Value>>,
) -> serde_json::Map<String, Value> {
    let mut merged = serde_json::Map::new();
    for keys in nodes {
        for (key, value) in keys {
            let Some(so_far) = merged.get_mut(key) else {
                merged.insert(key.clone(), value.clone());
                continue;
            };
            match (so_far, value) {
                (Value::Bool(a), Value::Bool(b)) => *a = *a && *b,
                (Value::Number(a), Value::Number(b)) => {
                    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                        *a = x.saturating_add(y).into();
                    }
                }
                (Value::Array(a), Value::Array(b)) => a.retain(|v| b.contains(v)),
                (Value::Object(a), Value::Object(b)) if key == "Runtimes" => {
                    a.retain(|k, _| b.contains_key(k));
                }
                // Strings, objects, mixed types: the first node's.
                _ => {}
            }
        }
    }
    merged
}

impl InfoPart {
    /// The part of a node as its snapshot shows it (health, error and last-seen `/info`).
    pub fn of(node: &NodeSnapshot, reserved: Reserved) -> InfoPart {
        let views = node_views(std::slice::from_ref(node), &[], |n| n.info.as_ref());
        InfoPart::of_view(&views[0], reserved)
    }

    fn of_view(view: &NodeView<'_>, reserved: Reserved) -> InfoPart {
        let lines: Vec<String> = node_block(view, reserved)
            .iter()
            .map(Value::to_string)
            .collect();
        let counted = view.healthy_doc().map(|d| Counted {
            totals: TOTALS.map(|key| int(d, key).max(0)),
            warnings: d["Warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|w| format!("{}: {w}", view.name))
                .collect(),
            plugins: d["Plugins"].clone(),
            plugins_text: d["Plugins"].to_string(),
            index_server: text(d, "IndexServerAddress").to_owned(),
            engine_keys: d
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !GATEWAY_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        InfoPart {
            status: lines.join(","),
            counted,
        }
    }
}

/// The cluster's `/info` document (see [`info`]), as JSON text, from every node's part in node
/// name order.
pub fn info_from_parts<P: Borrow<InfoPart>>(parts: &[P], facts: &GatewayFacts) -> String {
    info_from_parts_with(parts, facts, None)
}

/// [`info_from_parts`], with `Images` given: the number of distinct image IDs over the
/// healthy nodes, as `/images/json` groups them (an image on three nodes is one image), when
/// the caller could list them; else the nodes' counts are summed.
pub fn info_from_parts_with<P: Borrow<InfoPart>>(
    parts: &[P],
    facts: &GatewayFacts,
    distinct_images: Option<i64>,
) -> String {
    let counted: Vec<&Counted> = parts
        .iter()
        .filter_map(|p| p.borrow().counted.as_ref())
        .collect();
    // Saturating: the numbers are the engines', and an overflow must not panic.
    let total = |i: usize| -> i64 {
        counted
            .iter()
            .fold(0, |sum, c| sum.saturating_add(c.totals[i]))
    };
    let warnings: Vec<&str> = counted
        .iter()
        .flat_map(|c| c.warnings.iter().map(String::as_str))
        .collect();
    let index_server = counted
        .iter()
        .map(|c| c.index_server.as_str())
        .find(|s| !s.is_empty());
    let mut seen = HashSet::new();
    let distinct_plugins: Vec<&Value> = counted
        .iter()
        .filter(|c| seen.insert(c.plugins_text.as_str()))
        .map(|c| &c.plugins)
        .collect();

    let mut doc = json!({
        "ID": facts.name,
        "Name": facts.name,
        "ServerVersion": facts.server_version(),
        "Containers": total(0),
        "ContainersRunning": total(1),
        "ContainersPaused": total(2),
        "ContainersStopped": total(3),
        "Images": distinct_images.unwrap_or_else(|| total(4)),
        "NCPU": total(5),
        "MemTotal": total(6),
        "DriverStatus": [],
        "Plugins": plugins(distinct_plugins.into_iter()),
        "OperatingSystem": facts.operating_system,
        "OSType": facts.os_type,
        "Architecture": facts.architecture,
        "KernelVersion": facts.kernel_version,
        "Labels": [],
        "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
            "Error": "", "RemoteManagers": null
        },
        "Warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
    });
    if let Some(address) = index_server {
        doc["IndexServerAddress"] = json!(address);
    }
    let engine_keys = merge_engine_keys(counted.iter().map(|c| &c.engine_keys));
    if let Some(doc) = doc.as_object_mut() {
        for (key, value) in engine_keys {
            doc.entry(key).or_insert(value);
        }
        // An engine always has these; a cluster with no healthy node says so with empty ones.
        for (key, empty) in [("Driver", json!("")), ("Debug", json!(false))] {
            doc.entry(key).or_insert(empty);
        }
    }
    let head = [
        json!(["Role", "primary"]),
        json!(["Strategy", facts.strategy]),
        json!(["Filters", facts.filters]),
        json!(["Nodes", parts.len().to_string()]),
    ];
    let head: Vec<String> = head.iter().map(Value::to_string).collect();
    let status = head
        .iter()
        .map(String::as_str)
        .chain(parts.iter().map(|p| p.borrow().status.as_str()));
    with_raw_array(&doc, "SystemStatus", status)
}

/// One node's lines in `SystemStatus`.
fn node_block(view: &NodeView<'_>, reserved: Reserved) -> Vec<Value> {
    let doc = view.doc.unwrap_or(&Value::Null);
    let addr = view.snapshot.map_or("(unknown)", |s| s.addr.as_str());
    let id = match text(doc, "ID") {
        "" => "(unknown)".to_owned(),
        // Swarm's engine ID: cloned VMs share the engine ID, so the address is part of it.
        id => format!("{id}|{addr}"),
    };
    let containers = match view.doc {
        None => "(unknown)".to_owned(),
        Some(d) if view.health == Health::Healthy => format!(
            "{} ({} Running, {} Paused, {} Stopped)",
            int(d, "Containers"),
            int(d, "ContainersRunning"),
            int(d, "ContainersPaused"),
            int(d, "ContainersStopped")
        ),
        Some(d) => int(d, "Containers").to_string(),
    };
    let no_labels = BTreeMap::new();
    let labels = labels_of(doc, view.snapshot.map_or(&no_labels, |s| &s.labels));
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let error = view
        .error
        .as_deref()
        .map_or_else(|| "(none)".to_owned(), |e| e.replace(['\r', '\n'], " "));
    let updated = view
        .snapshot
        .and_then(|s| s.updated_at)
        .map_or_else(|| "(never)".to_owned(), rfc3339);
    let version = match text(doc, "ServerVersion") {
        "" => "(unknown)",
        v => v,
    };
    vec![
        json!([format!(" {}", view.name), addr]),
        json!(["  └ ID", id]),
        json!(["  └ Status", view.health.to_string()]),
        json!(["  └ Containers", containers]),
        json!([
            "  └ Reserved CPUs",
            format!("{} / {}", reserved.cpus, int(doc, "NCPU"))
        ]),
        json!([
            "  └ Reserved Memory",
            format!(
                "{} / {}",
                bytes_size(reserved.memory),
                bytes_size(u64::try_from(int(doc, "MemTotal")).unwrap_or(0))
            )
        ]),
        json!(["  └ Labels", labels.join(", ")]),
        json!(["  └ Error", error]),
        json!(["  └ UpdatedAt", updated]),
        json!(["  └ ServerVersion", version]),
    ]
    .into_iter()
    .chain(
        view.snapshot
            .and_then(|s| s.chains.as_deref())
            .map(chains_lines)
            .into_iter()
            .flatten(),
    )
    .collect()
}

/// The longest `Chains error` shown; `busbarctl chain status` has the whole text.
const MAX_CHAINS_ERROR: usize = 400;

/// A node's `Chains` line, and a `Chains error` line when its latest change was refused:
///
/// - `etcd rev 42 (global, label:zone=a)`: the etcd revision of the view it runs, and the
///   scopes merged into it (in merge order); `etcd rev 0 (nothing applied yet)` before any;
/// - `cache of etcd rev 42 (global)`: started without etcd, it runs its last-known-good chain;
/// - `file /etc/busbar/adapters.yml`, or `none`;
/// - `Chains error: rev 57 refused: <why>` (etcd), `<why>` (a file reload), on one line, cut
///   at 400 characters.
fn chains_lines(status: &ChainStatus) -> Vec<Value> {
    let scopes = || match status.scopes.keys().map(String::as_str).collect::<Vec<_>>() {
        // BTreeMap order is the merge order: global < label:... < node:...
        names if names.is_empty() => "no scopes".to_owned(),
        names => names.join(", "),
    };
    let shown = match status.source.as_str() {
        "etcd" if status.revision == 0 => "etcd rev 0 (nothing applied yet)".to_owned(),
        "etcd" => format!("etcd rev {} ({})", status.revision, scopes()),
        "cache" => format!("cache of etcd rev {} ({})", status.revision, scopes()),
        "file" => format!("file {}", status.file.as_deref().unwrap_or("(unknown)")),
        "" => "(unknown)".to_owned(),
        other => other.to_owned(),
    };
    let mut lines = vec![json!(["  └ Chains", shown])];
    if let Some(error) = &status.error {
        let one_line = error
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut shown = match status.rejected_revision {
            Some(rev) => format!("rev {rev} refused: {one_line}"),
            None => one_line,
        };
        if shown.chars().count() > MAX_CHAINS_ERROR {
            shown = shown.chars().take(MAX_CHAINS_ERROR).collect::<String>() + "...";
        }
        lines.push(json!(["  └ Chains error", shown]));
    }
    lines
}

/// A node's labels as Swarm showed them, the same the scheduler's constraints match: the
/// engine's own labels (`dockerd --label`), then the agent's (`--label`), then, overriding both
/// as in Swarm, `kernelversion`, `operatingsystem`, `ostype` and `storagedriver` from the
/// engine's `/info` (left out when the engine has not said).
pub fn labels_of(
    engine_info: &Value,
    agent_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for label in engine_info["Labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    labels.extend(agent_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (label, key) in [
        ("kernelversion", "KernelVersion"),
        ("operatingsystem", "OperatingSystem"),
        ("ostype", "OSType"),
        ("storagedriver", "Driver"),
    ] {
        let value = text(engine_info, key);
        if !value.is_empty() {
            labels.insert(label.to_owned(), value.to_owned());
        }
    }
    labels
}

/// [`labels_of`] the node's last-seen `/info` and its agent labels.
pub fn node_labels(node: &NodeSnapshot) -> BTreeMap<String, String> {
    labels_of(&node.info, &node.labels)
}

/// The union of the nodes' `Plugins` objects, in first-seen order.
fn plugins<'a>(objects: impl Iterator<Item = &'a Value>) -> Value {
    let kinds = ["Volume", "Network", "Authorization", "Log"];
    let mut union: BTreeMap<&str, Vec<Value>> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for object in objects {
        for kind in kinds {
            let list = union.entry(kind).or_default();
            for plugin in object[kind].as_array().into_iter().flatten() {
                if !list.contains(plugin) {
                    list.push(plugin.clone());
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (kind, list) in union {
        let empty_is_null = kind == "Authorization";
        out.insert(
            kind.to_owned(),
            if empty_is_null && list.is_empty() {
                Value::Null
            } else {
                Value::Array(list)
            },
        );
    }
    Value::Object(out)
}

/// Bytes in binary units with four significant digits, as Swarm printed them (go-units'
/// `BytesSize` of its day): `0 B`, `20 MiB`, `1.953 GiB`.
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    // Display only: the precision lost above 2^53 bytes is far below the 4 digits shown.
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{} {}", four_significant(size), UNITS[unit])
}

/// Go's `%.4g` for 0 <= x < 10000: four significant digits, trailing zeros dropped.
fn four_significant(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    let magnitude = x.log10().floor() as i32;
    let decimals = usize::try_from(3 - magnitude).unwrap_or(0);
    let mut s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    s
}

/// `time` as RFC 3339 in UTC, to the second: `2024-03-01T12:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            -i64::try_from(d.as_secs()).unwrap_or(i64::MAX) - i64::from(d.subsec_nanos() > 0)
        }
    };
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aggregate::fixtures::{err, node, ok};

    // Trimmed from dockerd 20.10's `GET /v1.41/info`.
    fn engine_info(id: &str, containers: [i64; 3], ncpu: i64, mem: i64) -> Value {
        let [running, paused, stopped] = containers;
        json!({
            "ID": id, "Containers": running + paused + stopped, "ContainersRunning": running,
            "ContainersPaused": paused, "ContainersStopped": stopped, "Images": 4, "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null", "overlay"], "Authorization": null,
                        "Log": ["json-file", "local"]},
            "NCPU": ncpu, "MemTotal": mem, "KernelVersion": "6.1.0-18-amd64",
            "OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "OSType": "linux", "Architecture": "x86_64",
            "IndexServerAddress": "https://index.docker.io/v1/", "Name": "bbh1", "Labels": ["zone=a", "ssd"],
            "ServerVersion": "20.10.24+dfsg1", "Swarm": {"LocalNodeState": "inactive"}, "Warnings": null
        })
    }

    fn facts() -> GatewayFacts {
        GatewayFacts {
            name: "gw".into(),
            version: "0.1.0".into(),
            operating_system: "Debian GNU/Linux 12 (bookworm)".into(),
            os_type: "linux".into(),
            architecture: "x86_64".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            strategy: "spread".into(),
            filters: "health, constraint".into(),
        }
    }

    fn pairs(doc: &Value) -> Vec<(String, String)> {
        doc["SystemStatus"]
            .as_array()
            .expect("SystemStatus")
            .iter()
            .map(|p| {
                (
                    p[0].as_str().expect("key").to_owned(),
                    p[1].as_str().expect("value").to_owned(),
                )
            })
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn two_healthy_nodes_in_swarm_layout() {
        let nodes = vec![
            node("node2", "10.77.2.2:7443", &[]),
            node("node1", "10.77.1.2:7443", &[("zone", "b")]),
        ];
        let answers = vec![
            ok(
                "node1",
                engine_info("AAAA:BBBB", [2, 0, 1], 2, 2_097_152_000),
            ),
            ok(
                "node2",
                engine_info("CCCC:DDDD", [1, 1, 0], 4, 4_194_304_000),
            ),
        ];
        let reserved = BTreeMap::from([(
            "node1".to_owned(),
            Reserved {
                cpus: 1.5,
                memory: 20 * 1024 * 1024,
            },
        )]);
        let doc = info_with_reserved(&nodes, &answers, &facts(), &reserved);

        assert_eq!(doc["Containers"], 5);
        assert_eq!(doc["ContainersRunning"], 3);
        assert_eq!(doc["ContainersPaused"], 1);
        assert_eq!(doc["ContainersStopped"], 1);
        assert_eq!(doc["Images"], 8);
        assert_eq!(doc["NCPU"], 6);
        assert_eq!(doc["MemTotal"], 6_291_456_000_i64);
        assert_eq!(doc["Name"], "gw");
        assert_eq!(doc["ServerVersion"], "busbar/0.1.0");
        assert_eq!(doc["Driver"], "overlay2");
        assert_eq!(doc["Labels"], json!([]));
        assert_eq!(doc["OSType"], "linux");
        assert_eq!(doc["Swarm"]["LocalNodeState"], "inactive");
        assert_eq!(
            doc["Plugins"]["Network"],
            json!(["bridge", "host", "null", "overlay"])
        );
        assert_eq!(doc["Plugins"]["Authorization"], Value::Null);
        assert_eq!(doc["IndexServerAddress"], "https://index.docker.io/v1/");

        let labels = "kernelversion=6.1.0-18-amd64, operatingsystem=Debian GNU/Linux 12 (bookworm), ostype=linux, \
                      ssd=, storagedriver=overlay2";
        assert_eq!(
            pairs(&doc),
            vec![
                pair("Role", "primary"),
                pair("Strategy", "spread"),
                pair("Filters", "health, constraint"),
                pair("Nodes", "2"),
                pair(" node1", "10.77.1.2:7443"),
                pair("  └ ID", "AAAA:BBBB|10.77.1.2:7443"),
                pair("  └ Status", "Healthy"),
                pair("  └ Containers", "3 (2 Running, 0 Paused, 1 Stopped)"),
                pair("  └ Reserved CPUs", "1.5 / 2"),
                pair("  └ Reserved Memory", "20 MiB / 1.953 GiB"),
                pair("  └ Labels", &format!("{labels}, zone=b")),
                pair("  └ Error", "(none)"),
                pair("  └ UpdatedAt", "2024-03-01T12:00:00Z"),
                pair("  └ ServerVersion", "20.10.24+dfsg1"),
                pair(" node2", "10.77.2.2:7443"),
                pair("  └ ID", "CCCC:DDDD|10.77.2.2:7443"),
                pair("  └ Status", "Healthy"),
                pair("  └ Containers", "2 (1 Running, 1 Paused, 0 Stopped)"),
                pair("  └ Reserved CPUs", "0 / 4"),
                pair("  └ Reserved Memory", "0 B / 3.906 GiB"),
                pair("  └ Labels", &format!("{labels}, zone=a")),
                pair("  └ Error", "(none)"),
                pair("  └ UpdatedAt", "2024-03-01T12:00:00Z"),
                pair("  └ ServerVersion", "20.10.24+dfsg1"),
            ]
        );
    }

    #[test]
    fn every_engine_key_is_there_merged_by_type() {
        let nodes = vec![node("node1", "a:1", &[]), node("node2", "b:1", &[])];
        let mut one = engine_info("A", [1, 0, 0], 2, 1);
        let mut two = engine_info("B", [1, 0, 0], 2, 1);
        let extra =
            |doc: &mut Value, debug: bool, nfd: i64, cgroup: &str, sec: Value, rt: Value| {
                doc["Debug"] = json!(debug);
                doc["MemoryLimit"] = json!(true);
                doc["NFd"] = json!(nfd);
                doc["CgroupDriver"] = json!(cgroup);
                doc["LoggingDriver"] = json!("json-file");
                doc["SecurityOptions"] = sec;
                doc["Runtimes"] = rt;
                doc["RegistryConfig"] = json!({"IndexConfigs": {}, "Mirrors": [cgroup]});
            };
        extra(
            &mut one,
            true,
            10,
            "systemd",
            json!(["name=seccomp", "name=apparmor"]),
            json!({"runc": {"path": "runc"}, "crun": {"path": "crun"}}),
        );
        extra(
            &mut two,
            false,
            5,
            "cgroupfs",
            json!(["name=seccomp"]),
            json!({"runc": {"path": "runc"}}),
        );
        two["OnlyHere"] = json!("x");
        let doc = info(&nodes, &[ok("node1", one), ok("node2", two)], &facts());
        assert_eq!(doc["Debug"], false);
        assert_eq!(doc["MemoryLimit"], true);
        assert_eq!(doc["NFd"], 15);
        assert_eq!(doc["CgroupDriver"], "systemd");
        assert_eq!(doc["LoggingDriver"], "json-file");
        assert_eq!(doc["SecurityOptions"], json!(["name=seccomp"]));
        assert_eq!(doc["Runtimes"], json!({"runc": {"path": "runc"}}));
        assert_eq!(doc["RegistryConfig"]["Mirrors"], json!(["systemd"]));
        assert_eq!(doc["OnlyHere"], "x");
        // The gateway's own keys stay the gateway's.
        assert_eq!(doc["Name"], "gw");
        assert_eq!(doc["DriverStatus"], json!([]));
        // No healthy node: the keys every engine has are there all the same.
        let doc = info(
            &nodes,
            &[err("node1", "down"), err("node2", "down")],
            &facts(),
        );
        assert_eq!(
            (doc["Driver"].clone(), doc["Debug"].clone()),
            (json!(""), json!(false))
        );
    }

    #[test]
    fn a_failed_node_stays_listed_as_unhealthy_and_out_of_the_totals() {
        let mut node2 = node("node2", "10.77.2.2:7443", &[]);
        node2.info = engine_info("CCCC:DDDD", [1, 1, 0], 4, 4_194_304_000).into();
        let nodes = vec![
            node("node1", "10.77.1.2:7443", &[]),
            node2,
            NodeSnapshot::new("node3", "10.77.3.2:7443", BTreeMap::new()),
        ];
        let mut node1_info = engine_info("AAAA:BBBB", [2, 0, 1], 2, 2_097_152_000);
        node1_info["Warnings"] = json!(["WARNING: No swap limit support"]);
        let answers = vec![ok("node1", node1_info), err("node2", "connection refused")];
        let doc = info(&nodes, &answers, &facts());

        assert_eq!(doc["Containers"], 3);
        assert_eq!(doc["NCPU"], 2);
        assert_eq!(
            doc["Warnings"],
            json!(["node1: WARNING: No swap limit support"])
        );
        let pairs = pairs(&doc);
        assert!(pairs.contains(&pair("Nodes", "3")));
        let node2_block: Vec<&(String, String)> = pairs
            .iter()
            .skip_while(|(k, _)| k != " node2")
            .take(10)
            .collect();
        assert_eq!(node2_block[0], &pair(" node2", "10.77.2.2:7443"));
        assert_eq!(node2_block[2], &pair("  └ Status", "Unhealthy"));
        assert_eq!(node2_block[3], &pair("  └ Containers", "2"));
        assert_eq!(node2_block[4], &pair("  └ Reserved CPUs", "0 / 4"));
        assert_eq!(node2_block[7], &pair("  └ Error", "connection refused"));
        assert_eq!(node2_block[9], &pair("  └ ServerVersion", "20.10.24+dfsg1"));

        // Never contacted: the snapshot's own health and error.
        let node3_block: Vec<&(String, String)> = pairs
            .iter()
            .skip_while(|(k, _)| k != " node3")
            .take(10)
            .collect();
        assert_eq!(node3_block[1], &pair("  └ ID", "(unknown)"));
        assert_eq!(node3_block[2], &pair("  └ Status", "Unhealthy"));
        assert_eq!(node3_block[3], &pair("  └ Containers", "(unknown)"));
        assert_eq!(node3_block[5], &pair("  └ Reserved Memory", "0 B / 0 B"));
        assert_eq!(node3_block[6], &pair("  └ Labels", ""));
        assert_eq!(node3_block[7], &pair("  └ Error", "not contacted yet"));
        assert_eq!(node3_block[8], &pair("  └ UpdatedAt", "(never)"));
        assert_eq!(node3_block[9], &pair("  └ ServerVersion", "(unknown)"));
    }

    #[test]
    fn nodes_not_asked_use_their_snapshot() {
        let mut node1 = node("node1", "10.77.1.2:7443", &[]);
        node1.info = engine_info("AAAA", [1, 0, 0], 2, 1024).into();
        let mut node2 = node("node2", "10.77.2.2:7443", &[]);
        node2.health = Health::Disconnected;
        node2.last_error = Some("lease expired\nre-registering".into());
        node2.info = engine_info("CCCC", [5, 0, 0], 8, 1024).into();
        let doc = info(&[node1, node2], &[], &facts());
        assert_eq!(doc["Containers"], 1);
        let pairs = pairs(&doc);
        assert!(pairs.contains(&pair("  └ Status", "Disconnected")));
        assert!(pairs.contains(&pair("  └ Error", "lease expired re-registering")));
    }

    fn chain_status(source: &str, revision: i64, scopes: &[&str]) -> ChainStatus {
        ChainStatus {
            node: "node1".into(),
            revision,
            scopes: scopes.iter().map(|s| ((*s).to_owned(), revision)).collect(),
            source: source.into(),
            ..ChainStatus::default()
        }
    }

    #[test]
    fn each_node_block_ends_with_its_chains_and_their_error() {
        let mut node1 = node("node1", "10.77.1.2:7443", &[]);
        node1.chains =
            Some(chain_status("etcd", 42, &["node:node1", "global", "label:zone=a"]).into());
        let mut node2 = node("node2", "10.77.2.2:7443", &[]);
        let mut refused = chain_status("etcd", 42, &["global"]);
        refused.error = Some("scope global (revision 57): invalid adapter config:\n  line 3: adapter \"missing\" is not defined\n".into());
        refused.rejected_revision = Some(57);
        node2.chains = Some(refused.into());
        let node3 = node("node3", "10.77.3.2:7443", &[]); // an agent that does not report chains
        let answers = vec![
            ok("node1", engine_info("A", [0, 0, 0], 1, 1024)),
            ok("node2", engine_info("B", [0, 0, 0], 1, 1024)),
            ok("node3", engine_info("C", [0, 0, 0], 1, 1024)),
        ];
        let pairs = pairs(&info(&[node1, node2, node3], &answers, &facts()));
        let block = |name: &str| -> Vec<(String, String)> {
            let mut from_name = pairs.iter().skip_while(|(k, _)| k != name);
            let head = from_name.next().cloned();
            head.into_iter()
                .chain(from_name.take_while(|(k, _)| k.starts_with("  └")).cloned())
                .collect()
        };
        let node1 = block(" node1");
        assert_eq!(node1.len(), 11);
        assert_eq!(node1[9], pair("  └ ServerVersion", "20.10.24+dfsg1"));
        assert_eq!(
            node1[10],
            pair(
                "  └ Chains",
                "etcd rev 42 (global, label:zone=a, node:node1)"
            )
        );
        let node2 = block(" node2");
        assert_eq!(node2[10], pair("  └ Chains", "etcd rev 42 (global)"));
        assert_eq!(
            node2[11],
            pair("  └ Chains error", "rev 57 refused: scope global (revision 57): invalid adapter config: line 3: adapter \"missing\" is not defined")
        );
        assert_eq!(
            node2[7],
            pair("  └ Error", "(none)"),
            "a refused chain does not make the node unhealthy"
        );
        assert_eq!(
            block(" node3").len(),
            10,
            "its name and nine lines, no Chains"
        );
    }

    #[test]
    fn chains_lines_for_every_source() {
        let shown = |status: &ChainStatus| {
            chains_lines(status)
                .iter()
                .map(|p| p[1].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(&chain_status("etcd", 0, &[])),
            ["etcd rev 0 (nothing applied yet)"]
        );
        assert_eq!(
            shown(&chain_status("etcd", 7, &[])),
            ["etcd rev 7 (no scopes)"]
        );
        assert_eq!(
            shown(&chain_status("cache", 42, &["global"])),
            ["cache of etcd rev 42 (global)"]
        );
        assert_eq!(shown(&chain_status("none", 0, &[])), ["none"]);
        let mut file = chain_status("file", 0, &[]);
        file.file = Some("/etc/busbar/adapters.yml".into());
        assert_eq!(shown(&file), ["file /etc/busbar/adapters.yml"]);
        file.error = Some(format!("{}\n", "x".repeat(500)));
        let lines = shown(&file);
        assert_eq!(
            lines[1].len(),
            MAX_CHAINS_ERROR + 3,
            "cut, and no `rev ... refused` for a file"
        );
        assert!(lines[1].starts_with("xxx") && lines[1].ends_with("x..."));
    }

    #[test]
    fn no_nodes_at_all() {
        let doc = info(&[], &[], &facts());
        assert_eq!(pairs(&doc)[3], pair("Nodes", "0"));
        assert_eq!(doc["Containers"], 0);
        assert_eq!(doc["Warnings"], Value::Null);
        assert!(doc.get("IndexServerAddress").is_none());
    }

    #[test]
    fn bytes_size_matches_swarm() {
        assert_eq!(bytes_size(0), "0 B");
        assert_eq!(bytes_size(1023), "1023 B");
        assert_eq!(bytes_size(1024), "1 KiB");
        assert_eq!(bytes_size(20 * 1024 * 1024), "20 MiB");
        assert_eq!(bytes_size(2_097_152_000), "1.953 GiB");
        assert_eq!(bytes_size(25_276_502_016), "23.54 GiB");
        assert_eq!(bytes_size(1024 * 1024 - 1), "1024 KiB");
        assert_eq!(bytes_size(u64::MAX), "16 EiB");
    }

    #[test]
    fn rfc3339_in_utc() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(1_709_294_400)), "2024-03-01T12:00:00Z");
        assert_eq!(rfc3339(at(951_782_400 + 86_399)), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(at(1_795_319_364) + Duration::from_millis(999)),
            "2026-11-22T03:49:24Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn labels_override_in_order() {
        let agent = BTreeMap::from([
            ("ostype".to_owned(), "custom".to_owned()),
            ("zone".to_owned(), "z".to_owned()),
        ]);
        let labels = labels_of(&engine_info("X", [0, 0, 0], 1, 1), &agent);
        assert_eq!(
            labels["ostype"], "linux",
            "the engine's facts win, as in Swarm and the scheduler"
        );
        assert_eq!(labels["zone"], "z", "the agent's labels beat the engine's");
        assert_eq!(labels["ssd"], "");
        assert_eq!(labels["storagedriver"], "overlay2");
        assert!(labels_of(&Value::Null, &BTreeMap::new()).is_empty());
    }
}
