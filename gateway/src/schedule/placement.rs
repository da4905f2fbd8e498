//! What a create (or build, or network create) asks of the node it lands on: [`Placement`],
//! read from the request, and [`Pending`], the same request once a node is chosen and the
//! engine has not answered yet.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::create::{CreateBody, Field, HostConfig, PortBinding};
use super::expr::{shown, Expr, MAX_SHOWN};
use super::ScheduleError;

/// The label that stores the constraints, as a JSON array of expressions (Swarm's storage).
pub const CONSTRAINTS_LABEL: &str = "com.docker.swarm.constraints";
/// The label that stores the affinities, as a JSON array of expressions.
pub const AFFINITIES_LABEL: &str = "com.docker.swarm.affinities";

const CONSTRAINT_PREFIX: &str = "constraint:";
const AFFINITY_PREFIX: &str = "affinity:";

/// Everything the scheduler needs to know about one create.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The container name (`?name=` of the create: not in the body, so the caller sets it).
    /// Pending creates with a name count for `affinity:container==` and `--link`.
    pub name: Option<String>,
    /// The body's `Image`, if any.
    pub image: Option<String>,
    /// `constraint:` expressions, from `Env` and the `com.docker.swarm.constraints` label.
    pub constraints: Vec<Expr>,
    /// `affinity:` expressions, from `Env` and the `com.docker.swarm.affinities` label.
    pub affinities: Vec<Expr>,
    /// The container's labels (after the Swarm labels were written): label affinities of later
    /// creates look at them while this one is pending.
    pub labels: BTreeMap<String, String>,
    /// Host ports this container will hold: `HostConfig.PortBindings` with a fixed `HostPort`, or
    /// with `NetworkMode: "host"`, every `ExposedPorts` entry.
    pub ports: Vec<PortClaim>,
    /// `HostConfig.NetworkMode == "host"`: the ports are held directly by the container.
    pub host_network: bool,
    /// `HostConfig.Memory` in bytes (0: no reservation).
    pub memory: i64,
    /// `HostConfig.NanoCpus`: CPUs × 10⁹ (0: no reservation). This, not `CpuShares`, is the CPU
    /// reservation: busbar keeps Docker's semantics and does not read `CpuShares` as "cores" the
    /// way Swarm did (swarm.md §1.8), so bodies pass to the engine unchanged.
    pub nano_cpus: i64,
    /// `HostConfig.CpuShares`, a relative weight: recorded, never used for placement.
    pub cpu_shares: i64,
    /// Containers that must be on the same node: `--volumes-from`, `--link`, `--net=container:`.
    pub dependencies: Vec<Dependency>,
    /// The named volumes the container mounts (`-v NAME:/p`, `--mount source=NAME`), read by
    /// [`super::mounts::named_volumes`].
    pub volumes: Vec<String>,
    /// For each of [`Placement::volumes`], the nodes that hold it as a node-local volume, filled
    /// in by the caller (the gateway asks every healthy node). A volume no node holds (the
    /// engine will create it) or one of `global` scope (the same on every node) has none: it
    /// ties the container to no node.
    pub volume_holders: BTreeMap<String, Vec<String>>,
    /// The user-defined network the container joins (`HostConfig.NetworkMode`) and the nodes
    /// that have it, filled in by the caller: a local network is one node's, and the container
    /// must run there.
    pub network: Option<(String, Vec<String>)>,
}

/// One host port a container will hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    pub port: u16,
    /// `HostIp` of the binding: `""`, `0.0.0.0` and `::` mean every interface.
    pub host_ip: String,
}

/// A container this one needs on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// How Swarm printed it: `--link=db:db`, `--volumes-from=data:ro`, `--net=container:vpn`.
    pub flag: String,
    /// The container reference: name, ID or ID prefix (a `node/` prefix pins it to that node).
    pub container: String,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.flag)
    }
}

/// A create that was scheduled onto `node` and has not finished yet. The gateway keeps these
/// (under the lock it schedules with) from the decision until the engine answers and its
/// container lists are refreshed, so concurrent creates count each other like existing
/// containers: ports, reservations, container counts, names and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    pub node: String,
    /// `(proto, port)` held on the node; taken as bound on every interface.
    pub host_ports: Vec<(String, u16)>,
    pub memory: i64,
    pub nano_cpus: i64,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Placement {
    /// Reads a `POST /containers/create` body and applies Swarm's rewrite to it: `constraint:…`
    /// and `affinity:…` entries leave `Env` and are appended to the JSON-array labels
    /// `com.docker.swarm.constraints` / `com.docker.swarm.affinities` (created if missing; the
    /// client may also have set them directly). Nothing else in the body changes, and a body
    /// without such entries is left alone.
    ///
    /// [`Placement::from_create_body`] on the body's typed view ([`CreateBody`]), which is
    /// written back only if the rewrite changed it. Errors ([`ScheduleError::status`] 400): a
    /// field of the wrong type ([`CreateError`]), an invalid expression, a Swarm label that is
    /// not a JSON array of strings, a malformed port.
    pub fn from_create(body: &mut Value) -> Result<Placement, ScheduleError> {
        let mut view = CreateBody::from_value(body.clone())?;
        let before = view.env.clone();
        let placement = Placement::from_create_body(&mut view)?;
        if view.env != before {
            *body = view.to_value();
        }
        Ok(placement)
    }

    /// [`Placement::from_create`] on a create body already read.
    pub fn from_create_body(body: &mut CreateBody) -> Result<Placement, ScheduleError> {
        let (constraints_env, affinities_env) = take_env_exprs(body);
        if !constraints_env.is_empty() || !affinities_env.is_empty() {
            let labels = body.labels.get_or_default();
            append_label(labels, CONSTRAINTS_LABEL, constraints_env)?;
            append_label(labels, AFFINITIES_LABEL, affinities_env)?;
        }
        let labels = body.labels.get().cloned().unwrap_or_default();
        let mut placement = Placement::default();
        for text in label_list(
            labels.get(CONSTRAINTS_LABEL).map(String::as_str),
            CONSTRAINTS_LABEL,
        )? {
            placement.constraints.push(parse(Kind::Constraint, &text)?);
        }
        for text in label_list(
            labels.get(AFFINITIES_LABEL).map(String::as_str),
            AFFINITIES_LABEL,
        )? {
            placement.affinities.push(parse(Kind::Affinity, &text)?);
        }
        placement.labels = labels;
        placement.image = body.image.get().cloned();

        let host_config = body.host_config();
        let int = |f: fn(&HostConfig) -> &Field<i64>| {
            host_config.and_then(|h| f(h).get()).copied().unwrap_or(0)
        };
        placement.memory = int(|h| &h.memory);
        placement.nano_cpus = int(|h| &h.nano_cpus);
        placement.cpu_shares = int(|h| &h.cpu_shares);
        let network_mode = host_config
            .and_then(|h| h.network_mode.get())
            .map_or("", String::as_str);
        placement.host_network = network_mode == "host";
        placement.ports = if placement.host_network {
            exposed_ports(body.exposed_ports.get())?
        } else {
            port_bindings(host_config.and_then(|h| h.port_bindings.get()))?
        };

        let list = |f: fn(&HostConfig) -> &Field<Vec<String>>| {
            host_config.and_then(|h| f(h).get()).into_iter().flatten()
        };
        for v in list(|h| &h.volumes_from) {
            let container = v.split(':').next().unwrap_or(v);
            placement.dependencies.push(Dependency {
                flag: format!("--volumes-from={v}"),
                container: container.into(),
            });
        }
        for l in list(|h| &h.links) {
            let container = l.split(':').next().unwrap_or(l).trim_start_matches('/');
            placement.dependencies.push(Dependency {
                flag: format!("--link={l}"),
                container: container.into(),
            });
        }
        if let Some(c) = network_mode.strip_prefix("container:") {
            placement.dependencies.push(Dependency {
                flag: format!("--net={network_mode}"),
                container: c.into(),
            });
        }
        placement.volumes = super::mounts::named_volumes(body)?;
        Ok(placement)
    }

    /// Reads the expressions of a `POST /build`'s `buildargs` (the decoded JSON object of the
    /// query parameter), removing them: `--build-arg constraint:node==n1` arrives as
    /// `{"constraint:node": "=n1"}` (the CLI splits at the first `=`), and is put back together.
    pub fn from_build_args(build_args: &mut Value) -> Result<Placement, ScheduleError> {
        let mut placement = Placement::default();
        let Some(args) = build_args.as_object_mut() else {
            return Ok(placement);
        };
        let keys: Vec<String> = args
            .keys()
            .filter(|k| k.starts_with(CONSTRAINT_PREFIX) || k.starts_with(AFFINITY_PREFIX))
            .cloned()
            .collect();
        for key in keys {
            let value = args.remove(&key).expect("the key was just listed");
            let text = match value.as_str() {
                Some(v) => format!("{key}={v}"),
                None => key.clone(),
            };
            if let Some(e) = text.strip_prefix(CONSTRAINT_PREFIX) {
                placement.constraints.push(parse(Kind::Constraint, e)?);
            } else if let Some(e) = text.strip_prefix(AFFINITY_PREFIX) {
                placement.affinities.push(parse(Kind::Affinity, e)?);
            }
        }
        Ok(placement)
    }

    /// Reads the Swarm labels of a `Labels` object (for a create body's labels, or a
    /// `POST /networks/create`), without changing anything. `Null` gives an empty placement.
    pub fn from_labels(labels: &Value) -> Result<Placement, ScheduleError> {
        let mut placement = Placement::default();
        for text in label_exprs(labels, CONSTRAINTS_LABEL)? {
            placement.constraints.push(parse(Kind::Constraint, &text)?);
        }
        for text in label_exprs(labels, AFFINITIES_LABEL)? {
            placement.affinities.push(parse(Kind::Affinity, &text)?);
        }
        Ok(placement)
    }

    /// The reservation to record once `node` is chosen.
    pub fn pending_on(&self, node: &str) -> Pending {
        Pending {
            node: node.to_owned(),
            host_ports: self
                .ports
                .iter()
                .map(|p| (p.proto.clone(), p.port))
                .collect(),
            memory: self.memory,
            nano_cpus: self.nano_cpus,
            name: self.name.clone(),
            labels: self.labels.clone(),
        }
    }

    /// Whether the client said where the container goes: any hard `constraint:` or `affinity:`.
    /// Then the volume filter yields when it would leave no node: the container goes where
    /// the client said, with its volumes as that node has them (or as an adapter brings them).
    pub fn has_hard_expressions(&self) -> bool {
        self.constraints
            .iter()
            .chain(&self.affinities)
            .any(|e| !e.soft)
    }

    /// The volumes that tie the container to nodes, with their holders.
    pub fn pinning_volumes(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.volume_holders.iter().filter(|(_, h)| !h.is_empty())
    }

    /// Whether any expression is soft (a second, hard-only pass makes sense).
    pub fn has_soft(&self) -> bool {
        self.constraints
            .iter()
            .chain(&self.affinities)
            .any(|e| e.soft)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Constraint,
    Affinity,
}

fn parse(kind: Kind, text: &str) -> Result<Expr, ScheduleError> {
    Expr::parse(text).map_err(|e| ScheduleError::InvalidExpression {
        kind: match kind {
            Kind::Constraint => "constraint",
            Kind::Affinity => "affinity",
        },
        expr: shown(text, MAX_SHOWN),
        reason: e.0,
    })
}

/// Removes `constraint:`/`affinity:` entries from `Env`, keeping the order of everything else
/// (they are validated once they are in the labels).
fn take_env_exprs(body: &mut CreateBody) -> (Vec<String>, Vec<String>) {
    let (mut constraints, mut affinities) = (Vec::new(), Vec::new());
    let Some(env) = body.env.get_mut() else {
        return (constraints, affinities);
    };
    env.retain(|entry| {
        if let Some(e) = entry.strip_prefix(CONSTRAINT_PREFIX) {
            constraints.push(e.to_owned());
        } else if let Some(e) = entry.strip_prefix(AFFINITY_PREFIX) {
            affinities.push(e.to_owned());
        } else {
            return true;
        }
        false
    });
    (constraints, affinities)
}

/// Appends `exprs` to the JSON array stored in label `name` (after the client's own entries).
fn append_label(
    labels: &mut BTreeMap<String, String>,
    name: &str,
    exprs: Vec<String>,
) -> Result<(), ScheduleError> {
    if exprs.is_empty() {
        return Ok(());
    }
    let mut all = label_list(labels.get(name).map(String::as_str), name)?;
    all.extend(exprs);
    let text = serde_json::to_string(&all).expect("a list of strings always serializes");
    labels.insert(name.to_owned(), text);
    Ok(())
}

fn label_exprs(labels: &Value, name: &str) -> Result<Vec<String>, ScheduleError> {
    match labels {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => match map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => label_list(Some(s), name),
            Some(_) => Err(ScheduleError::InvalidLabel {
                label: name.to_owned(),
                reason: "a label value must be a string".into(),
            }),
        },
        _ => Err(ScheduleError::InvalidBody("Labels is not an object".into())),
    }
}

/// The expressions in the value of label `name`: a JSON array of strings (empty: none).
fn label_list(value: Option<&str>, name: &str) -> Result<Vec<String>, ScheduleError> {
    match value {
        None | Some("") => Ok(Vec::new()),
        Some(s) => {
            serde_json::from_str::<Vec<String>>(s).map_err(|e| ScheduleError::InvalidLabel {
                label: name.to_owned(),
                reason: format!("not a JSON array of strings: {e}"),
            })
        }
    }
}

/// `HostConfig.PortBindings`: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`. An empty or
/// `0` `HostPort` is a random port and a range (`8000-8010`) lets the engine pick one: neither
/// is a claim.
fn port_bindings(
    bindings: Option<&BTreeMap<String, Field<Vec<PortBinding>>>>,
) -> Result<Vec<PortClaim>, ScheduleError> {
    let mut claims = Vec::new();
    for (key, list) in bindings.into_iter().flatten() {
        let (_, proto) = split_port_key(key)?;
        for binding in list.get().into_iter().flatten() {
            let host_port = binding.host_port.get().map_or("", |p| p.trim());
            if host_port.is_empty() || host_port.contains('-') {
                continue;
            }
            let port: u16 = host_port.parse().map_err(|_| ScheduleError::InvalidPort {
                port: shown(&format!("{host_port}:{key}"), MAX_SHOWN),
                reason: "HostPort is not a port number".into(),
            })?;
            if port == 0 {
                continue;
            }
            claims.push(PortClaim {
                proto: proto.clone(),
                port,
                host_ip: binding.host_ip.get().cloned().unwrap_or_default(),
            });
        }
    }
    Ok(claims)
}

/// `ExposedPorts` of a host-network container: `{"80/tcp": {}}`, ranges expanded.
fn exposed_ports(exposed: Option<&Map<String, Value>>) -> Result<Vec<PortClaim>, ScheduleError> {
    let mut claims = Vec::new();
    for key in exposed.into_iter().flat_map(Map::keys) {
        let (ports, proto) = split_port_key(key)?;
        let bad = || ScheduleError::InvalidPort {
            port: shown(key, MAX_SHOWN),
            reason: "not a port or port range".into(),
        };
        let (lo, hi) = match ports.split_once('-') {
            Some((lo, hi)) => (
                lo.parse::<u16>().map_err(|_| bad())?,
                hi.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = ports.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo == 0 || hi < lo {
            return Err(bad());
        }
        claims.extend((lo..=hi).map(|port| PortClaim {
            proto: proto.clone(),
            port,
            host_ip: String::new(),
        }));
    }
    Ok(claims)
}

/// `"80/tcp"` -> `("80", "tcp")`; no protocol means tcp.
fn split_port_key(key: &str) -> Result<(&str, String), ScheduleError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ScheduleError::InvalidPort {
            port: shown(key, MAX_SHOWN),
            reason: format!("unknown protocol {:?}", shown(&proto, MAX_SHOWN)),
        });
    }
    Ok((port, proto))
}
