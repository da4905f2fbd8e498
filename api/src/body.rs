//! Request bodies as the engine reads them, so that adapters check what the engine will do.
//!
//! The engine decodes JSON bodies with Go's `encoding/json`, which is lenient where adapters
//! (written in Python, Go, Rust, ...) are usually strict:
//! - a key names a field **case-insensitively**, with Unicode simple folding: `hostconfig`,
//!   `PRIVILEGED` and `Bind\u017f` (a long s) are `HostConfig`, `Privileged` and `Binds`;
//! - a field given twice is **merged** (objects) or **last one wins** (values), so
//!   `{"HostConfig":{"Binds":[..]},"hostconfig":{"Privileged":true}}` is both;
//! - a create may carry its `HostConfig` fields **at the top level** (the pre-1.18 layout the
//!   engine still reads when `HostConfig` is absent or null);
//! - only the **first JSON value** is read; what follows it is ignored.
//!
//! An adapter refusing `HostConfig.Privileged` would let each of these through. [`canonical`]
//! rewrites such a body into the one unambiguous form the engine reads the same way: every
//! known field under its own name, the top-level host fields moved into `HostConfig` as the
//! engine applies them, trailing data dropped. A field given twice in one object is refused
//! ([`BodyError::Duplicate`]): no client sends it, and its merge is not worth reproducing.
//! Keys the module does not know (a newer engine's fields, keys of maps such as `Labels`) are
//! kept as they are. A body that already is canonical is left alone, byte for byte.

use std::fmt;

use http::Method;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::path::ApiPath;

/// Why a body cannot be given to adapters as the engine reads it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (the engine refuses it too).
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// One field named twice in one object (`at` is its path, `keys` the spellings).
    #[error("the body names {at} twice ({first:?} and {second:?}); the engine would merge them: send it once")]
    Duplicate {
        at: String,
        first: String,
        second: String,
    },
}

/// The engine's reading of `body` for the endpoint, when it differs from `body` as written:
/// `Ok(None)` when it is already canonical or the endpoint's body is not one this module
/// knows. See the module's documentation.
pub fn canonical(
    method: &Method,
    path: &ApiPath<'_>,
    body: &[u8],
) -> Result<Option<Vec<u8>>, BodyError> {
    let Some(shape) = shape_of(method, path) else {
        return Ok(None);
    };
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Doc>();
    let doc = match stream.next() {
        Some(Ok(doc)) => doc,
        Some(Err(e)) => return Err(BodyError::NotJson(e.to_string())),
        None => return Ok(None),
    };
    let trailing = body[stream.byte_offset()..]
        .iter()
        .any(|b| !b.is_ascii_whitespace());
    let mut changed = trailing;
    let mut doc = walk(doc, shape, "", &mut changed)?;
    if std::ptr::eq(shape, &CREATE) {
        hoist_host_fields(&mut doc, &mut changed);
    }
    Ok(changed.then(|| {
        let mut out = Vec::with_capacity(body.len());
        doc.write(&mut out);
        out
    }))
}

/// The shape of the bodies this module knows: those whose fields decide what a container may
/// do (create, update, exec) and the objects adapters place (networks, volumes).
fn shape_of(method: &Method, path: &ApiPath<'_>) -> Option<&'static Shape> {
    if method != Method::POST {
        return None;
    }
    match path.segments().as_slice() {
        ["containers", "create"] => Some(&CREATE),
        ["containers", id, "update"] if !id.is_empty() => Some(&UPDATE),
        ["containers", id, "exec"] if !id.is_empty() => Some(&EXEC),
        ["networks", "create"] => Some(&NETWORK_CREATE),
        ["networks", id, "connect"] if !id.is_empty() => Some(&NETWORK_CONNECT),
        ["volumes", "create"] => Some(&VOLUME_CREATE),
        _ => None,
    }
}

/// A struct's fields: JSON names and shapes.
type Fields = &'static [(&'static str, Shape)];

/// What a JSON value is to the engine's decoder.
pub enum Shape {
    /// A value whose inside has no field names (a string, a number, a list of strings).
    Leaf,
    /// A Go struct: its own fields and those of the structs it embeds, group by group.
    Struct(&'static [Fields]),
    /// A Go map: keys are data (kept as written), values of one shape.
    Map(&'static Shape),
    /// A Go slice of one shape.
    List(&'static Shape),
}

use Shape::{Leaf, List, Map, Struct};

const MAP: Shape = Map(&Leaf);

const HEALTH: Shape = Struct(&[&[
    ("Test", Leaf),
    ("Interval", Leaf),
    ("Timeout", Leaf),
    ("StartPeriod", Leaf),
    ("StartInterval", Leaf),
    ("Retries", Leaf),
    ("NoWait", Leaf),
]]);

/// `container.Config`.
const CONFIG: Fields = &[
    ("Hostname", Leaf),
    ("Domainname", Leaf),
    ("User", Leaf),
    ("AttachStdin", Leaf),
    ("AttachStdout", Leaf),
    ("AttachStderr", Leaf),
    ("ExposedPorts", MAP),
    ("Tty", Leaf),
    ("OpenStdin", Leaf),
    ("StdinOnce", Leaf),
    ("Env", Leaf),
    ("Cmd", Leaf),
    ("Healthcheck", HEALTH),
    ("ArgsEscaped", Leaf),
    ("Image", Leaf),
    ("Volumes", MAP),
    ("WorkingDir", Leaf),
    ("Entrypoint", Leaf),
    ("NetworkDisabled", Leaf),
    ("MacAddress", Leaf),
    ("OnBuild", Leaf),
    ("Labels", MAP),
    ("StopSignal", Leaf),
    ("StopTimeout", Leaf),
    ("Shell", Leaf),
];

const WEIGHT_DEVICE: Shape = List(&Struct(&[&[("Path", Leaf), ("Weight", Leaf)]]));
const THROTTLE_DEVICE: Shape = List(&Struct(&[&[("Path", Leaf), ("Rate", Leaf)]]));

/// `container.Resources` (embedded in `HostConfig` and `UpdateConfig`).
const RESOURCES: Fields = &[
    ("CpuShares", Leaf),
    ("Memory", Leaf),
    ("NanoCpus", Leaf),
    ("CgroupParent", Leaf),
    ("BlkioWeight", Leaf),
    ("BlkioWeightDevice", WEIGHT_DEVICE),
    ("BlkioDeviceReadBps", THROTTLE_DEVICE),
    ("BlkioDeviceWriteBps", THROTTLE_DEVICE),
    ("BlkioDeviceReadIOps", THROTTLE_DEVICE),
    ("BlkioDeviceWriteIOps", THROTTLE_DEVICE),
    ("CpuPeriod", Leaf),
    ("CpuQuota", Leaf),
    ("CpuRealtimePeriod", Leaf),
    ("CpuRealtimeRuntime", Leaf),
    ("CpusetCpus", Leaf),
    ("CpusetMems", Leaf),
    (
        "Devices",
        List(&Struct(&[&[
            ("PathOnHost", Leaf),
            ("PathInContainer", Leaf),
            ("CgroupPermissions", Leaf),
        ]])),
    ),
    ("DeviceCgroupRules", Leaf),
    (
        "DeviceRequests",
        List(&Struct(&[&[
            ("Driver", Leaf),
            ("Count", Leaf),
            ("DeviceIDs", Leaf),
            ("Capabilities", Leaf),
            ("Options", MAP),
        ]])),
    ),
    ("KernelMemory", Leaf),
    ("KernelMemoryTCP", Leaf),
    ("MemoryReservation", Leaf),
    ("MemorySwap", Leaf),
    ("MemorySwappiness", Leaf),
    ("OomKillDisable", Leaf),
    ("PidsLimit", Leaf),
    (
        "Ulimits",
        List(&Struct(&[&[
            ("Name", Leaf),
            ("Hard", Leaf),
            ("Soft", Leaf),
        ]])),
    ),
    ("CpuCount", Leaf),
    ("CpuPercent", Leaf),
    ("IOMaximumIOps", Leaf),
    ("IOMaximumBandwidth", Leaf),
];

const RESTART_POLICY: Shape = Struct(&[&[("Name", Leaf), ("MaximumRetryCount", Leaf)]]);

const MOUNT: Shape = Struct(&[&[
    ("Type", Leaf),
    ("Source", Leaf),
    ("Target", Leaf),
    ("ReadOnly", Leaf),
    ("Consistency", Leaf),
    (
        "BindOptions",
        Struct(&[&[
            ("Propagation", Leaf),
            ("NonRecursive", Leaf),
            ("CreateMountpoint", Leaf),
            ("ReadOnlyNonRecursive", Leaf),
            ("ReadOnlyForceRecursive", Leaf),
        ]]),
    ),
    (
        "VolumeOptions",
        Struct(&[&[
            ("NoCopy", Leaf),
            ("Labels", MAP),
            ("Subpath", Leaf),
            (
                "DriverConfig",
                Struct(&[&[("Name", Leaf), ("Options", MAP)]]),
            ),
        ]]),
    ),
    ("ImageOptions", Struct(&[&[("Subpath", Leaf)]])),
    (
        "TmpfsOptions",
        Struct(&[&[("SizeBytes", Leaf), ("Mode", Leaf), ("Options", Leaf)]]),
    ),
    ("ClusterOptions", Struct(&[&[]])),
]]);

/// `container.HostConfig`'s own fields (it embeds `Resources`).
const HOST: Fields = &[
    ("Binds", Leaf),
    ("ContainerIDFile", Leaf),
    ("LogConfig", Struct(&[&[("Type", Leaf), ("Config", MAP)]])),
    ("NetworkMode", Leaf),
    (
        "PortBindings",
        Map(&List(&Struct(&[&[("HostIp", Leaf), ("HostPort", Leaf)]]))),
    ),
    ("RestartPolicy", RESTART_POLICY),
    ("AutoRemove", Leaf),
    ("VolumeDriver", Leaf),
    ("VolumesFrom", Leaf),
    ("ConsoleSize", Leaf),
    ("Annotations", MAP),
    ("CapAdd", Leaf),
    ("CapDrop", Leaf),
    ("CgroupnsMode", Leaf),
    ("Dns", Leaf),
    ("DnsOptions", Leaf),
    ("DnsSearch", Leaf),
    ("ExtraHosts", Leaf),
    ("GroupAdd", Leaf),
    ("IpcMode", Leaf),
    ("Cgroup", Leaf),
    ("Links", Leaf),
    ("OomScoreAdj", Leaf),
    ("PidMode", Leaf),
    ("Privileged", Leaf),
    ("PublishAllPorts", Leaf),
    ("ReadonlyRootfs", Leaf),
    ("SecurityOpt", Leaf),
    ("StorageOpt", MAP),
    ("Tmpfs", MAP),
    ("UTSMode", Leaf),
    ("UsernsMode", Leaf),
    ("ShmSize", Leaf),
    ("Sysctls", MAP),
    ("Runtime", Leaf),
    ("Isolation", Leaf),
    ("Mounts", List(&MOUNT)),
    ("MaskedPaths", Leaf),
    ("ReadonlyPaths", Leaf),
    ("Init", Leaf),
];

const HOST_CONFIG: Shape = Struct(&[HOST, RESOURCES]);

const ENDPOINT_SETTINGS: Shape = Struct(&[&[
    (
        "IPAMConfig",
        Struct(&[&[
            ("IPv4Address", Leaf),
            ("IPv6Address", Leaf),
            ("LinkLocalIPs", Leaf),
        ]]),
    ),
    ("Links", Leaf),
    ("Aliases", Leaf),
    ("DriverOpts", MAP),
    ("GwPriority", Leaf),
    ("NetworkID", Leaf),
    ("EndpointID", Leaf),
    ("Gateway", Leaf),
    ("IPAddress", Leaf),
    ("IPPrefixLen", Leaf),
    ("IPv6Gateway", Leaf),
    ("GlobalIPv6Address", Leaf),
    ("GlobalIPv6PrefixLen", Leaf),
    ("MacAddress", Leaf),
    ("DNSNames", Leaf),
]]);

/// The wrapper the engine decodes a create into: `Config` and the deprecated top-level
/// `HostConfig` embedded, `HostConfig`, `NetworkingConfig` and `Cpuset` of its own.
const CREATE: Shape = Struct(&[
    CONFIG,
    &[
        ("HostConfig", HOST_CONFIG),
        (
            "NetworkingConfig",
            Struct(&[&[("EndpointsConfig", Map(&ENDPOINT_SETTINGS))]]),
        ),
        ("Cpuset", Leaf),
    ],
    HOST,
    RESOURCES,
]);

const UPDATE: Shape = Struct(&[RESOURCES, &[("RestartPolicy", RESTART_POLICY)]]);

const EXEC: Shape = Struct(&[&[
    ("User", Leaf),
    ("Privileged", Leaf),
    ("Tty", Leaf),
    ("ConsoleSize", Leaf),
    ("AttachStdin", Leaf),
    ("AttachStderr", Leaf),
    ("AttachStdout", Leaf),
    ("Detach", Leaf),
    ("DetachKeys", Leaf),
    ("Env", Leaf),
    ("WorkingDir", Leaf),
    ("Cmd", Leaf),
]]);

const NETWORK_CREATE: Shape = Struct(&[&[
    ("Name", Leaf),
    ("CheckDuplicate", Leaf),
    ("Driver", Leaf),
    ("Scope", Leaf),
    ("EnableIPv4", Leaf),
    ("EnableIPv6", Leaf),
    (
        "IPAM",
        Struct(&[&[
            ("Driver", Leaf),
            ("Options", MAP),
            (
                "Config",
                List(&Struct(&[&[
                    ("Subnet", Leaf),
                    ("IPRange", Leaf),
                    ("Gateway", Leaf),
                    ("AuxiliaryAddresses", MAP),
                ]])),
            ),
        ]]),
    ),
    ("Internal", Leaf),
    ("Attachable", Leaf),
    ("Ingress", Leaf),
    ("ConfigOnly", Leaf),
    ("ConfigFrom", Struct(&[&[("Network", Leaf)]])),
    ("Options", MAP),
    ("Labels", MAP),
]]);

const NETWORK_CONNECT: Shape = Struct(&[&[
    ("Container", Leaf),
    ("EndpointConfig", ENDPOINT_SETTINGS),
    ("Force", Leaf),
]]);

const VOLUME_CREATE: Shape = Struct(&[&[
    ("Name", Leaf),
    ("Driver", Leaf),
    ("DriverOpts", MAP),
    ("Labels", MAP),
    ("ClusterVolumeSpec", Leaf),
]]);

/// The top-level host fields the engine still takes into a `HostConfig` that leaves them zero.
const STILL_READ: [&str; 4] = ["Memory", "MemorySwap", "CpuShares", "CpusetCpus"];

/// A JSON value that keeps its objects' keys as written, in order, repeats included.
enum Doc {
    Object(Vec<(String, Doc)>),
    Array(Vec<Doc>),
    Scalar(Value),
}

impl Doc {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Doc::Scalar(v) => serde_json::to_writer(&mut *out, v).expect("a JSON value serialises"),
            Doc::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Doc::Object(entries) => {
                out.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("a string serialises");
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            Doc::Scalar(Value::Null) => true,
            Doc::Scalar(Value::Number(n)) => n.as_f64() == Some(0.0),
            Doc::Scalar(Value::String(s)) => s.is_empty(),
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = Doc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::from(v)))
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Scalar(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
                let mut items = vec![];
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Doc::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut entries = vec![];
                while let Some(entry) = map.next_entry::<String, Doc>()? {
                    entries.push(entry);
                }
                Ok(Doc::Object(entries))
            }
        }
        d.deserialize_any(DocVisitor)
    }
}

/// Whether `key` names `field` for Go's decoder: equal under Unicode simple case folding
/// (`field` is ASCII; of non-ASCII characters only `ſ` folds to `s` and `K`, the Kelvin sign,
/// to `k`).
fn names(key: &str, field: &str) -> bool {
    let mut k = key.chars();
    for f in field.bytes() {
        let Some(c) = k.next() else { return false };
        let folded = match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        };
        if folded != f.to_ascii_lowercase() as char {
            return false;
        }
    }
    k.next().is_none()
}

/// The field `key` names among `fields`: an exact match first, as Go prefers it.
fn field_of(key: &str, groups: &'static [Fields]) -> Option<&'static (&'static str, Shape)> {
    let fields = || groups.iter().flat_map(|g| g.iter());
    fields()
        .find(|(name, _)| *name == key)
        .or_else(|| fields().find(|(name, _)| names(key, name)))
}

fn walk(doc: Doc, shape: &'static Shape, at: &str, changed: &mut bool) -> Result<Doc, BodyError> {
    Ok(match (doc, shape) {
        (Doc::Object(entries), Struct(fields)) => {
            let mut out: Vec<(String, Doc)> = Vec::with_capacity(entries.len());
            let mut spelled: Vec<(&str, String)> = vec![];
            for (key, value) in entries {
                let Some((name, inner)) = field_of(&key, fields) else {
                    out.push((key, value));
                    continue;
                };
                let path = if at.is_empty() {
                    (*name).to_owned()
                } else {
                    format!("{at}.{name}")
                };
                if let Some((_, first)) = spelled.iter().find(|(n, _)| n == name) {
                    return Err(BodyError::Duplicate {
                        at: path,
                        first: first.clone(),
                        second: key,
                    });
                }
                if key != *name {
                    *changed = true;
                }
                let value = walk(value, inner, &path, changed)?;
                spelled.push((name, key));
                out.push(((*name).to_owned(), value));
            }
            Doc::Object(out)
        }
        (Doc::Object(entries), Map(inner)) => Doc::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let path = format!("{at}[{k:?}]");
                    walk(v, inner, &path, changed).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Doc::Array(items), List(inner)) => Doc::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| walk(v, inner, &format!("{at}[{i}]"), changed))
                .collect::<Result<_, _>>()?,
        ),
        (doc, _) => doc,
    })
}

/// Moves a create's top-level host fields where the engine applies them: into `HostConfig`
/// when it is absent or null (all of them), else only the four it still reads from there,
/// and `Cpuset` as `CpusetCpus`, each where `HostConfig` leaves it zero. The rest the engine
/// ignores, and so they are dropped.
fn hoist_host_fields(doc: &mut Doc, changed: &mut bool) {
    let Doc::Object(entries) = doc else { return };
    let is_host = |k: &str| HOST.iter().chain(RESOURCES).any(|(name, _)| *name == k);
    if !entries.iter().any(|(k, _)| is_host(k) || k == "Cpuset") {
        return;
    }
    *changed = true;
    let (top, rest): (Vec<_>, Vec<_>) = std::mem::take(entries)
        .into_iter()
        .partition(|(k, _)| is_host(k) || k == "Cpuset");
    *entries = rest;
    let inner = entries.iter_mut().find(|(k, _)| k == "HostConfig");
    let (cpuset, top): (Vec<_>, Vec<_>) = top.into_iter().partition(|(k, _)| k == "Cpuset");
    let host = match inner {
        Some((_, host @ Doc::Object(_))) => {
            let Doc::Object(host_entries) = host else {
                unreachable!()
            };
            for (k, v) in top {
                if !STILL_READ.contains(&k.as_str()) || v.is_zero() {
                    continue;
                }
                match host_entries.iter_mut().find(|(hk, _)| *hk == k) {
                    Some((_, hv)) if hv.is_zero() => *hv = v,
                    Some(_) => {}
                    None => host_entries.push((k, v)),
                }
            }
            host
        }
        Some((_, other)) if matches!(other, Doc::Scalar(Value::Null)) && !top.is_empty() => {
            *other = Doc::Object(top);
            other
        }
        Some(_) => return,
        None if top.is_empty() => return,
        None => {
            entries.push(("HostConfig".to_owned(), Doc::Object(top)));
            &mut entries.last_mut().expect("just pushed").1
        }
    };
    if let (Some((_, v)), Doc::Object(host_entries)) = (cpuset.into_iter().last(), host) {
        if !v.is_zero() {
            match host_entries.iter_mut().find(|(k, _)| k == "CpusetCpus") {
                Some((_, hv)) if hv.is_zero() => *hv = v,
                Some(_) => {}
                None => host_entries.push(("CpusetCpus".to_owned(), v)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
