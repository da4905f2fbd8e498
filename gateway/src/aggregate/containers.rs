//! `GET /containers/json` (`docker ps`): every node's list, names qualified by node, ports
//! pinned to the node's address, newest first; and, for nodes that are down, their last-known
//! containers marked "Host Down", as Swarm showed them.
//!
//! # Host Down
//!
//! The gateway remembers each node's last complete list (see `serve::last_seen`) and hands it
//! over, as a [`NodePart`] with `host_down` set, for a node that is unhealthy or did not answer.
//! Its entries are the engine's own, qualified like the others, with `Status` replaced by
//! `"Host Down"`; `State` stays the last one seen (Swarm did the same). Like Swarm, they are listed only when stopped containers are (`all`, a positive
//! `limit`, or a `status` filter: [`HostDown::of_query`]), and only when the gateway can apply
//! every filter of the request itself, since no engine saw them: `name` and `id` (Docker's
//! match: exact, or a regular expression found anywhere in the name or ID), `label` (`key` or
//! `key=value`, all of them), `status` (against the last-seen `State`) and `node`. A request
//! with any other filter (`ancestor`, `before`, `since`, `volume`, `network`, `health`,
//! `exited`, `publish`, `expose`, `is-task`), or with the old `since`/`before` parameters, lists
//! no Host Down rows; the node is still named in the failed-nodes header.
//!
//! # Cost
//!
//! At 1,000 nodes of 30 containers the answer is about 22 MiB. The lists are never turned into
//! `serde_json::Value` trees: each node's body is parsed once into its entries' members as raw
//! JSON text borrowed from the body ([`parse_list`]), only `Created`, `Names` and `Ports` are
//! read (plus `Id`, `Labels` and `State` of Host Down rows when filters need them), and every
//! other member is copied as the engine wrote it, in its order, into one output buffer (runs
//! of consecutive members in one copy). On 2 vCPUs, 30,000 containers from two nodes take about
//! 60 ms of gateway CPU where the `Value` trees took about 1 s; most of what is left is
//! serde_json checking the text. At 1,000 nodes the fan-out (1,000 gRPC exchanges) costs more
//! than the merge.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt;

use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::query::filter_values;
use super::{answered, node_filter, query};
use crate::model::{NodeAnswer, NodeSnapshot};

/// What a Host Down entry shows as its `Status` (Swarm's text).
pub const HOST_DOWN: &str = "Host Down";

/// One node's `containers/json` answer, parsed: its entries, members kept as raw JSON text
/// borrowed from the body.
pub struct ContainerList<'a> {
    /// The engine's text, which the entries' members borrow from.
    body: &'a str,
    entries: Vec<Entry<'a>>,
}

impl ContainerList<'_> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One container of an engine's list: its members in the engine's order.
struct Entry<'a> {
    created: i64,
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Entry<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Parses an engine's `containers/json` body: a JSON array of objects, or an error saying why not.
pub fn parse_list(body: &[u8]) -> Result<ContainerList<'_>, String> {
    let fail = |e: &dyn fmt::Display| format!("engine answer is not a container list: {e}");
    // UTF-8 checked once for the whole body, not string by string (a fifth of the parse).
    let body = std::str::from_utf8(body).map_err(|e| fail(&e))?;
    let entries = serde_json::from_str::<Vec<Entry>>(body).map_err(|e| fail(&e))?;
    Ok(ContainerList { body, entries })
}

/// One node's part of the merged list.
pub struct NodePart<'a> {
    pub node: &'a str,
    /// The node's address, shown for ports published on every address (`None`: left as is).
    pub host: Option<&'a str>,
    pub list: &'a ContainerList<'a>,
    /// The node is down: `list` is its last-known list, shown as Host Down rows.
    pub host_down: bool,
}

/// The merged `containers/json` document.
pub struct Merged {
    /// The JSON array, ready to send.
    pub body: Vec<u8>,
    /// Entries in it.
    pub rows: usize,
    /// How many of them are Host Down rows.
    pub host_down_rows: usize,
}

/// Merges the nodes' lists for the client's `query` (its own, `node` filter included).
///
/// Each container is the engine's own entry with two changes, as Swarm made them: every name
/// becomes `/<node>/<name>` (the CLI then shows `node1/web`), and a port published on
/// `0.0.0.0` or `::` shows the node's address; a Host Down row also gets its `Status` (see the
/// module docs). Nothing is added. The whole list is sorted by `Created`, newest first (ties
/// keep node-name order, then the engine's order), and `limit` (`-n`, `-l`) is applied after
/// merging: each node already returned its own newest N, a superset of the cluster's newest N.
/// A `node` filter drops other nodes' parts (the gateway should not have asked them).
pub fn merge_lists(parts: &[NodePart], query: &str) -> Merged {
    let wanted = node_filter(query);
    let host_down = HostDown::of_query(query);
    let mut order: Vec<usize> = (0..parts.len())
        .filter(|&i| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == parts[i].node))
        })
        .filter(|&i| !parts[i].host_down || host_down.is_some())
        .collect();
    order.sort_by(|&a, &b| parts[a].node.cmp(parts[b].node));
    let mut rows: Vec<(i64, &NodePart, &Entry)> = Vec::new();
    for part in order.iter().map(|&i| &parts[i]) {
        for entry in &part.list.entries {
            if part.host_down && !host_down.as_ref().is_some_and(|f| f.admits(entry)) {
                continue;
            }
            rows.push((entry.created, part, entry));
        }
    }
    // Stable: equal times keep node order, then the engine's own order.
    rows.sort_by_key(|r| Reverse(r.0));
    if let Some(n) = query::limit(query) {
        rows.truncate(n);
    }
    // What the entries take as the engines wrote them, plus room for the node names.
    let size: usize = rows
        .iter()
        .map(|(_, _, e)| {
            e.members
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 32
        })
        .sum();
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (i, (_, part, entry)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_entry(&mut body, entry, part, None);
    }
    body.push(b']');
    let host_down_rows = rows.iter().filter(|(_, p, _)| p.host_down).count();
    Merged {
        body,
        rows: rows.len(),
        host_down_rows,
    }
}

/// Merges parsed answers (`Value`s) the way [`merge_lists`] merges raw ones, ports pinned to
/// the addresses in `nodes`. Answers that are not container lists are left out.
pub fn containers(answers: &[NodeAnswer<Value>], nodes: &[NodeSnapshot], query: &str) -> Value {
    let bodies: Vec<(&str, Vec<u8>)> = answered(answers)
        .into_iter()
        .map(|(node, list)| (node, serde_json::to_vec(list).expect("a Value serializes")))
        .collect();
    let lists: Vec<(&str, ContainerList)> = bodies
        .iter()
        .filter_map(|(node, body)| parse_list(body).ok().map(|l| (*node, l)))
        .collect();
    let parts: Vec<NodePart> = lists
        .iter()
        .map(|(node, list)| NodePart {
            node,
            host: nodes
                .iter()
                .find(|n| n.name == *node)
                .map(NodeSnapshot::host),
            list,
            host_down: false,
        })
        .collect();
    super::reread(&merge_lists(&parts, query).body)
}

/// The host part of an agent address `host:port` (`[v6]:port` too): where its node's published
/// ports are reached (what [`NodeSnapshot::host`] says, for callers that hold only the address).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Writes one entry as the cluster shows it: the members it keeps are copied from the engine's
/// text in runs (consecutive members are contiguous there, commas and all), the others written
/// anew.
/// With `status` given, the `Status` member's value is written as the engine wrote it (or as
/// Host Down) and its byte range in `out` recorded there.
fn write_entry(
    out: &mut Vec<u8>,
    entry: &Entry,
    part: &NodePart,
    mut status: Option<&mut Option<(usize, usize)>>,
) {
    let text = part.list.body;
    let offset = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize;
    let mut run: Option<(usize, usize)> = None;
    let mut first = true;
    let separate = |out: &mut Vec<u8>, first: &mut bool| {
        if !std::mem::take(first) {
            out.push(b',');
        }
    };
    out.push(b'{');
    for (key, value) in &entry.members {
        let edited = match key.as_ref() {
            "Names" => true,
            "Ports" => part.host.is_some() && value.get() != "[]",
            "Status" => part.host_down || status.is_some(),
            _ => false,
        };
        if let (Cow::Borrowed(k), false) = (key, edited) {
            // A borrowed key is a slice of the text: its opening quote is the byte before it.
            let (start, end) = (offset(k) - 1, offset(value.get()) + value.get().len());
            run = Some((run.map_or(start, |(s, _)| s), end));
            continue;
        }
        if let Some((start, end)) = run.take() {
            separate(out, &mut first);
            out.extend_from_slice(&text.as_bytes()[start..end]);
        }
        separate(out, &mut first);
        write_str(out, key);
        out.push(b':');
        match key.as_ref() {
            "Names" => write_names(out, value, part.node),
            "Ports" if edited => {
                write_ports(out, value, part.host.expect("edited ports have a host"))
            }
            "Status" if edited => {
                let start = out.len();
                if part.host_down {
                    write_str(out, HOST_DOWN);
                } else {
                    out.extend_from_slice(value.get().as_bytes());
                }
                if let Some(range) = status.as_deref_mut() {
                    *range = Some((start, out.len()));
                }
            }
            _ => out.extend_from_slice(value.get().as_bytes()),
        }
    }
    if let Some((start, end)) = run {
        separate(out, &mut first);
        out.extend_from_slice(&text.as_bytes()[start..end]);
    }
    out.push(b'}');
}

/// One entry of a node's list as the cluster shows it (names qualified, ports pinned), cut
/// around its `Status` value so that a cache can write that value anew at each answer; with
/// what a cache needs to sort and filter it. Made by [`render_rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedRow {
    pub id: String,
    pub created: i64,
    /// `State` (`running`, `exited`, ...).
    pub state: String,
    /// `Status` as the engine wrote it (`Up 5 minutes`), if it was a string.
    pub status: Option<String>,
    /// `Names` as the engine wrote them (`/web`, `/app/db` for a link).
    pub names: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The entry's JSON text up to its `Status` value (the whole entry if it has none).
    pub head: Vec<u8>,
    /// The entry's JSON text after its `Status` value.
    pub tail: Vec<u8>,
}

/// Every entry of `list` (from `node`, whose address is `host`) as [`RenderedRow`]s, in the
/// engine's order.
pub fn render_rows(list: &ContainerList, node: &str, host: Option<&str>) -> Vec<RenderedRow> {
    let part = NodePart {
        node,
        host,
        list,
        host_down: false,
    };
    let string = |entry: &Entry, key: &str| {
        entry
            .get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    list.entries
        .iter()
        .map(|entry| {
            let mut out = Vec::with_capacity(
                entry
                    .members
                    .iter()
                    .map(|(k, v)| k.len() + v.get().len() + 4)
                    .sum::<usize>()
                    + 32,
            );
            let mut range = None;
            write_entry(&mut out, entry, &part, Some(&mut range));
            let status = string(entry, "Status");
            let (head, tail) = match (range, &status) {
                (Some((start, end)), Some(_)) => (out[..start].to_vec(), out[end..].to_vec()),
                _ => (out, Vec::new()),
            };
            RenderedRow {
                id: string(entry, "Id").unwrap_or_default(),
                created: entry.created,
                state: string(entry, "State").unwrap_or_default(),
                status,
                names: entry
                    .get("Names")
                    .and_then(|v| serde_json::from_str(v.get()).ok())
                    .unwrap_or_default(),
                labels: entry
                    .get("Labels")
                    .and_then(|v| serde_json::from_str(v.get()).ok())
                    .unwrap_or_default(),
                head,
                tail,
            }
        })
        .collect()
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
}

/// `["/web"]` -> `["/node1/web"]`.
fn write_names(out: &mut Vec<u8>, raw: &RawValue, node: &str) {
    // Names without escapes borrow from the text and are copied as they are.
    if let Ok(names) = serde_json::from_str::<Vec<&str>>(raw.get()) {
        out.push(b'[');
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"/");
            write_inner_str(out, node);
            out.push(b'/');
            out.extend_from_slice(name.trim_start_matches('/').as_bytes());
            out.push(b'"');
        }
        out.push(b']');
        return;
    }
    match serde_json::from_str::<Vec<String>>(raw.get()) {
        Ok(names) => {
            out.push(b'[');
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, &format!("/{node}/{}", name.trim_start_matches('/')));
            }
            out.push(b']');
        }
        // Not a list of strings: qualify what can be. Valid JSON may still not fit a `Value`
        // (`1e400`): then it goes out as the engine wrote it.
        Err(_) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(mut names) => {
                qualify_names(&mut names, node);
                serde_json::to_writer(out, &names).expect("writing to a Vec cannot fail");
            }
            Err(_) => out.extend_from_slice(raw.get().as_bytes()),
        },
    }
}

/// `text` as the inside of a JSON string (escaped, without the quotes).
fn write_inner_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(text.as_bytes());
    } else {
        let quoted = serde_json::to_string(text).expect("a str serializes");
        out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
    }
}

/// `Ports` pinned to `host`; as the engine wrote it if it does not fit a `Value` (`1e400`).
fn write_ports(out: &mut Vec<u8>, raw: &RawValue, host: &str) {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(mut ports) => {
            pin_ports(&mut ports, host);
            serde_json::to_writer(out, &ports).expect("writing to a Vec cannot fail");
        }
        Err(_) => out.extend_from_slice(raw.get().as_bytes()),
    }
}

/// Which Host Down rows a request admits: its filters, as the gateway evaluates them.
#[derive(Debug, Default)]
pub struct HostDown {
    names: Vec<Term>,
    ids: Vec<Term>,
    /// `key` or `key=value`; every one must hold.
    labels: Vec<(String, Option<String>)>,
    statuses: Vec<String>,
}

/// A `name`/`id` filter value: matches exactly, or as a regular expression found anywhere.
#[derive(Debug)]
struct Term {
    text: String,
    regex: Option<Regex>,
}

impl Term {
    fn new(text: String) -> Term {
        let regex = Regex::new(&text).ok();
        Term { text, regex }
    }

    fn matches(&self, s: &str) -> bool {
        self.text == s || self.regex.as_ref().is_some_and(|r| r.is_match(s))
    }
}

/// The filters the gateway can apply to a remembered entry.
const EVALUATED: [&str; 5] = ["name", "id", "label", "status", "node"];

impl HostDown {
    /// `None` if the request lists no Host Down rows: it asks for running containers only, or
    /// has a filter (or `since`/`before` parameter) the gateway cannot apply.
    pub fn of_query(query: &str) -> Option<HostDown> {
        if query::param(query, "since").is_some() || query::param(query, "before").is_some() {
            return None;
        }
        let mut host_down = HostDown::default();
        for (key, values) in filters_of(query)? {
            match key.as_str() {
                "name" => host_down.names = values.into_iter().map(Term::new).collect(),
                "id" => host_down.ids = values.into_iter().map(Term::new).collect(),
                "label" => {
                    host_down.labels = values
                        .into_iter()
                        .map(|l| match l.split_once('=') {
                            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                            None => (l, None),
                        })
                        .collect()
                }
                "status" => host_down.statuses = values,
                k if EVALUATED.contains(&k) => {}
                _ => return None,
            }
        }
        let stopped_too = query::param(query, "all").is_some_and(|a| docker_bool(&a))
            || query::limit(query).is_some()
            || !host_down.statuses.is_empty();
        stopped_too.then_some(host_down)
    }

    fn admits(&self, entry: &Entry) -> bool {
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                .unwrap_or_default()
        };
        if !self.statuses.is_empty() && !self.statuses.contains(&text("State")) {
            return false;
        }
        if !self.ids.is_empty() {
            let id = text("Id");
            if !self.ids.iter().any(|t| t.matches(&id)) {
                return false;
            }
        }
        if !self.names.is_empty() {
            let names: Vec<String> = entry
                .get("Names")
                .and_then(|v| serde_json::from_str(v.get()).ok())
                .unwrap_or_default();
            // The engine matches `/name`; `name` too, for a term anchored at its start.
            let hit = names.iter().any(|n| {
                self.names
                    .iter()
                    .any(|t| t.matches(n) || t.matches(n.trim_start_matches('/')))
            });
            if !hit {
                return false;
            }
        }
        if !self.labels.is_empty() {
            let labels: Map<String, Value> = entry
                .get("Labels")
                .and_then(|v| serde_json::from_str(v.get()).ok())
                .unwrap_or_default();
            let holds = |(k, want): &(String, Option<String>)| match (labels.get(k), want) {
                (Some(_), None) => true,
                (Some(Value::String(have)), Some(want)) => have == want,
                _ => false,
            };
            if !self.labels.iter().all(holds) {
                return false;
            }
        }
        true
    }
}

/// The keys of `query`'s `filters` that have values (no `filters`: none), or `None` if
/// `filters` is not a JSON object.
pub fn filter_keys(query: &str) -> Option<Vec<String>> {
    Some(filters_of(query)?.into_iter().map(|(k, _)| k).collect())
}

/// `query`'s filters with values, each key with its values; `None` if `filters` is not an object.
fn filters_of(query: &str) -> Option<Vec<(String, Vec<String>)>> {
    let filters: Map<String, Value> = match query::param(query, "filters") {
        None => Map::new(),
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(f)) => f,
            Ok(Value::Null) => Map::new(),
            _ => return None,
        },
    };
    Some(
        filters
            .iter()
            .map(|(k, v)| (k.clone(), filter_values(v)))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
    )
}

/// A boolean query parameter's value as Docker reads it (`httputils.BoolValue`).
pub fn docker_bool(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
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
    let Some(list) = ports.as_array_mut() else {
        return;
    };
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

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = Entry<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a container object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Entry<'de>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                let mut created = 0;
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if key == "Created" {
                        created = int_of(value.get());
                    }
                    members.push((key, value));
                }
                Ok(Entry { created, members })
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

/// A JSON number's integer value, 0 if it is not a number (as [`super::int`]).
fn int_of(raw: &str) -> i64 {
    raw.parse::<i64>()
        .unwrap_or_else(|_| raw.parse::<f64>().map_or(0, |f| f as i64))
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
