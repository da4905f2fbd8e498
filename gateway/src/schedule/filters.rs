//! Swarm's filters, in Swarm's order: health, port, containerslots, dependency, affinity,
//! constraint (swarm.md §2.3). Each is a per-node predicate; [`super::rank`] narrows the node
//! list filter by filter and reports the first one that leaves nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::Health;

use super::expr::{Expr, ValueKind};
use super::placement::{Placement, PortClaim};
use super::{Candidate, Pending};

/// A plain, all-hex value at least this long also matches container and image IDs by prefix
/// (`affinity:container==3f2a9c`), as Docker resolves references. Shorter ones would catch too
/// many names ("db", "cafe" would still be fine, "a" would not).
pub const MIN_ID_PREFIX: usize = 4;

/// The node label holding Swarm's per-node container limit.
pub const CONTAINER_SLOTS_LABEL: &str = "containerslots";

/// One candidate with what the filters and strategies derive from it.
pub(crate) struct NodeView<'a> {
    pub cand: Candidate<'a>,
    /// The pending creates already placed on this node.
    pub pending: Vec<&'a Pending>,
    /// The labels constraints look at: the engine's `Labels` (`k=v` strings in `/info`), then
    /// the agent's labels over them, then the built-ins over both.
    pub labels: BTreeMap<String, String>,
}

impl<'a> NodeView<'a> {
    pub fn new(cand: Candidate<'a>, pending: &'a [Pending]) -> NodeView<'a> {
        let info = &cand.node.info;
        let mut labels = BTreeMap::new();
        for kv in info
            .get("Labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            labels.insert(k.to_owned(), v.to_owned());
        }
        labels.extend(cand.node.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (label, field) in [
            ("storagedriver", "Driver"),
            ("kernelversion", "KernelVersion"),
            ("operatingsystem", "OperatingSystem"),
            ("ostype", "OSType"),
        ] {
            let value = info.get(field).and_then(Value::as_str).unwrap_or("");
            labels.insert(label.to_owned(), value.to_owned());
        }
        let pending = pending
            .iter()
            .filter(|p| p.node == cand.node.name)
            .collect();
        NodeView {
            cand,
            pending,
            labels,
        }
    }

    pub fn name(&self) -> &str {
        &self.cand.node.name
    }

    /// Containers on the node, stopped ones included, plus pending creates.
    pub fn container_count(&self) -> usize {
        self.cand.containers.len() + self.pending.len()
    }

    /// `containerslots=N` (a value that is not a number means no limit, as in Swarm).
    fn slots(&self) -> Option<usize> {
        self.labels.get(CONTAINER_SLOTS_LABEL)?.trim().parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    Health,
    /// busbar's: the nodes that have the user-defined network the container joins.
    Network,
    Port,
    ContainerSlots,
    Dependency,
    Affinity,
    Constraint,
    /// busbar's: the nodes holding every named volume the container mounts (after Swarm's
    /// filters, so that a constraint or affinity can override it: see [`super::rank`]).
    Volume,
}

pub(crate) const FILTERS: [Filter; 8] = [
    Filter::Health,
    Filter::Network,
    Filter::Port,
    Filter::ContainerSlots,
    Filter::Dependency,
    Filter::Affinity,
    Filter::Constraint,
    Filter::Volume,
];

impl Filter {
    /// Whether `node` passes. `soft`: whether soft expressions count (the first pass).
    pub fn accepts(self, p: &Placement, node: &NodeView, soft: bool) -> bool {
        let active = |e: &&Expr| soft || !e.soft;
        match self {
            Filter::Health => node.cand.node.health == Health::Healthy,
            Filter::Network => p
                .network
                .as_ref()
                .is_none_or(|(_, holders)| holders.iter().any(|h| h == node.name())),
            Filter::Port => p.ports.iter().all(|claim| !port_in_use(node, claim)),
            Filter::ContainerSlots => node.slots().is_none_or(|n| node.container_count() < n),
            Filter::Dependency => p
                .dependencies
                .iter()
                .all(|d| has_container(node, &d.container)),
            Filter::Affinity => p
                .affinities
                .iter()
                .filter(active)
                .all(|e| affinity_holds(e, node)),
            Filter::Constraint => p
                .constraints
                .iter()
                .filter(active)
                .all(|e| constraint_holds(e, node)),
            Filter::Volume => p
                .pinning_volumes()
                .all(|(_, holders)| holders.iter().any(|h| h == node.name())),
        }
    }

    /// The conditions this filter stands for, as listed in the "Unable to find a node" error.
    /// Formats follow Swarm: constraints as `key==value`, affinities with `(soft=…)`.
    pub fn conditions(self, p: &Placement, nodes: &[NodeView]) -> Vec<String> {
        match self {
            Filter::Health => Vec::new(),
            Filter::Network => p
                .network
                .iter()
                .map(|(name, holders)| format!("network {name} (on {})", holders.join(", ")))
                .collect(),
            Filter::Port => {
                let mode = if p.host_network { "Host" } else { "Bridge" };
                p.ports
                    .iter()
                    .map(|c| format!("port {}/{} ({mode} mode)", c.port, c.proto))
                    .collect()
            }
            Filter::ContainerSlots if nodes.iter().any(|n| n.slots().is_some()) => {
                vec!["available container slots".into()]
            }
            Filter::ContainerSlots => Vec::new(),
            Filter::Dependency if p.dependencies.is_empty() => Vec::new(),
            Filter::Dependency => {
                vec![p
                    .dependencies
                    .iter()
                    .map(|d| d.flag.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")]
            }
            Filter::Affinity => p
                .affinities
                .iter()
                .map(|e| format!("{e} (soft={})", e.soft))
                .collect(),
            Filter::Constraint => p.constraints.iter().map(|e| e.to_string()).collect(),
            Filter::Volume => p
                .pinning_volumes()
                .map(|(name, holders)| format!("volume {name} (on {})", holders.join(", ")))
                .collect(),
        }
    }
}

fn str_field<'v>(v: &'v Value, name: &str) -> &'v str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

fn unspecified(ip: &str) -> bool {
    matches!(ip, "" | "0.0.0.0" | "::")
}

fn same_address(a: &str, b: &str) -> bool {
    a == b || unspecified(a) || unspecified(b)
}

/// Whether `claim` collides with a port on the node: one published by a container in the list
/// (`Ports[].PublicPort`, which the engine fills for *running* containers only), one in a
/// container's `HostConfig.PortBindings` if the caller enriched the list entry with it (that is
/// how stopped containers' fixed ports would count, as in Swarm), or one held by a pending
/// create. Host-network containers do not show their ports in the list, so a host-mode
/// container already on the node is only seen while it is pending.
fn port_in_use(node: &NodeView, claim: &PortClaim) -> bool {
    let published = node.cand.containers.iter().any(|c| {
        let listed = c
            .get("Ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| {
                p.get("PublicPort").and_then(Value::as_u64) == Some(u64::from(claim.port))
                    && str_field(p, "Type").eq_ignore_ascii_case(&claim.proto)
                    && same_address(str_field(p, "IP"), &claim.host_ip)
            });
        listed || bound_in_host_config(c, claim)
    });
    published
        || node.pending.iter().any(|p| {
            p.host_ports
                .iter()
                .any(|(proto, port)| *port == claim.port && *proto == claim.proto)
        })
}

fn bound_in_host_config(container: &Value, claim: &PortClaim) -> bool {
    let Some(bindings) = container
        .pointer("/HostConfig/PortBindings")
        .and_then(Value::as_object)
    else {
        return false;
    };
    bindings.iter().any(|(key, list)| {
        let proto = key.split_once('/').map_or("tcp", |(_, p)| p);
        proto.eq_ignore_ascii_case(&claim.proto)
            && list.as_array().into_iter().flatten().any(|b| {
                str_field(b, "HostPort").trim().parse::<u16>().ok() == Some(claim.port)
                    && same_address(str_field(b, "HostIp"), &claim.host_ip)
            })
    })
}

/// Container names as the engine lists them, without the leading `/`; link aliases
/// (`/web/db`) are not names of their own and are skipped.
fn container_names(c: &Value) -> impl Iterator<Item = &str> {
    c.get("Names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| !n.contains('/'))
}

fn id_prefix_applies(e: &Expr) -> bool {
    e.kind == ValueKind::Plain && looks_like_id_prefix(&e.value)
}

fn looks_like_id_prefix(s: &str) -> bool {
    s.len() >= MIN_ID_PREFIX && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn bare_id(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// `--link`, `--volumes-from`, `--net=container:` target: a name, full ID or ID prefix (hex, at
/// least [`MIN_ID_PREFIX`] long: `db` must not match an ID starting with `db`) of a container
/// on the node, or a create pending on it by name. `node/name` only matches on `node`.
fn has_container(node: &NodeView, reference: &str) -> bool {
    let reference = match reference.split_once('/') {
        Some((on, rest)) if on == node.name() => rest,
        Some(_) => return false,
        None => reference,
    };
    if reference.is_empty() {
        return false;
    }
    let listed = node.cand.containers.iter().any(|c| {
        let id = str_field(c, "Id");
        container_names(c).any(|n| n == reference)
            || id == reference
            || (looks_like_id_prefix(reference) && id.starts_with(reference))
    });
    listed
        || node
            .pending
            .iter()
            .any(|p| p.name.as_deref() == Some(reference))
}

/// Swarm's affinity filter: `container==` against the names and IDs of containers on the node,
/// `image==` against its images (ID, tags, repositories), any other key against that label of
/// each container on the node (a container without it counts as `""`, as in Swarm).
fn affinity_holds(e: &Expr, node: &NodeView) -> bool {
    let containers = node.cand.containers;
    match e.key.as_str() {
        "container" => {
            let prefix = id_prefix_applies(e);
            let listed = containers.iter().any(|c| {
                let id = str_field(c, "Id");
                e.value_matches(id)
                    || container_names(c).any(|n| e.value_matches(n))
                    || (prefix && !id.is_empty() && id.starts_with(&e.value))
            });
            let pending = node
                .pending
                .iter()
                .filter_map(|p| p.name.as_deref())
                .any(|n| e.value_matches(n));
            e.apply_op(listed || pending)
        }
        "image" => {
            let prefix = id_prefix_applies(e);
            let wanted = normalize_image(&e.value);
            let any = node.cand.images.iter().any(|img| {
                let id = str_field(img, "Id");
                let refs = ["RepoTags", "RepoDigests"]
                    .into_iter()
                    .flat_map(|f| img.get(f).and_then(Value::as_array).into_iter().flatten())
                    .filter_map(Value::as_str);
                e.value_matches(id)
                    || e.value_matches(bare_id(id))
                    || (prefix && !id.is_empty() && bare_id(id).starts_with(&e.value))
                    || refs
                        .flat_map(|r| [r, repository(r)])
                        .any(|r| e.value_matches(r) || (e.kind == ValueKind::Plain && r == wanted))
            });
            e.apply_op(any)
        }
        key => {
            let listed = containers.iter().map(|c| {
                c.get("Labels")
                    .and_then(|l| l.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            });
            let pending = node
                .pending
                .iter()
                .map(|p| p.labels.get(key).map_or("", String::as_str));
            e.matches(listed.chain(pending))
        }
    }
}

/// Whether `images` (a node's `GET /images/json`) hold `reference` as a create names it: a
/// tag (`app`, meaning `app:latest`; `docker.io/library/app:1`), a digest (`app@sha256:...`),
/// or an ID or ID prefix (`sha256:3f2a...`, `3f2a9c`).
pub fn holds_image(images: &[Value], reference: &str) -> bool {
    let reference = normalize_image(reference.trim());
    if reference.is_empty() {
        return false;
    }
    let bare = bare_id(reference);
    let id_like = looks_like_id_prefix(bare);
    let tagged = if reference.contains('@') || repository(reference) != reference {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    };
    images.iter().any(|img| {
        let id = bare_id(str_field(img, "Id"));
        let refs = ["RepoTags", "RepoDigests"]
            .into_iter()
            .flat_map(|f| img.get(f).and_then(Value::as_array).into_iter().flatten())
            .filter_map(Value::as_str);
        (id_like && !id.is_empty() && id.starts_with(bare))
            || refs.map(normalize_image).any(|r| r == tagged)
    })
}

/// `redis:7` -> `redis`, `host:5000/app:1` -> `host:5000/app`, `app@sha256:…` -> `app`.
fn repository(reference: &str) -> &str {
    if let Some((repo, _)) = reference.split_once('@') {
        return repo;
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => reference,
    }
}

/// The short form the engine lists: `docker.io/library/redis` -> `redis`.
fn normalize_image(value: &str) -> &str {
    [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .into_iter()
    .find_map(|p| value.strip_prefix(p))
    .unwrap_or(value)
}

/// Swarm's constraint filter: `node==` against the node's name and engine ID, any other key
/// against the node's label (a missing label is `""`, as in Swarm: `zone!=a` keeps unlabelled
/// nodes).
fn constraint_holds(e: &Expr, node: &NodeView) -> bool {
    if e.key == "node" {
        let id = str_field(&node.cand.node.info, "ID");
        let names = [node.name(), id].into_iter().filter(|s| !s.is_empty());
        return e.matches(names);
    }
    e.matches([node.labels.get(&e.key).map_or("", String::as_str)])
}
