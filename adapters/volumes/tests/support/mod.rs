//! A **test double** of the cluster's engines for the in-process tests (no engine runs
//! there): nodes with volumes (files as bytes), containers that mount them, images, and the
//! archive copy, answering the calls busbar-volumes makes as dockerd 20.10 does (statuses and
//! `{"message"}` errors). A node can be made unreachable, or to fail a copy half-way.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use busbar_volumes::engines::{EngineError, Engines, Place};
use http::Method;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default)]
pub struct Volume {
    pub driver: String,
    pub labels: Value,
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub state: String,
    pub volumes: Vec<String>,
    pub labels: Value,
}

#[derive(Debug, Default)]
pub struct Node {
    pub volumes: BTreeMap<String, Volume>,
    pub containers: BTreeMap<String, Container>,
    pub images: Vec<String>,
    pub down: bool,
    /// A copy into this node writes half the files, then fails (a disk that fills up).
    pub fail_copy_in: bool,
    /// The node goes unreachable once a copy out of it is done (a host lost mid-move).
    pub down_after_copy_out: bool,
}

#[derive(Clone, Default)]
pub struct FakeCluster {
    nodes: Arc<Mutex<BTreeMap<String, Node>>>,
    next: Arc<Mutex<u64>>,
}

impl FakeCluster {
    pub fn new(names: &[&str]) -> FakeCluster {
        let c = FakeCluster::default();
        for n in names {
            c.nodes.lock().unwrap().insert(
                n.to_string(),
                Node {
                    images: vec!["busybox:latest".into()],
                    ..Node::default()
                },
            );
        }
        c
    }

    pub fn with<T>(&self, node: &str, f: impl FnOnce(&mut Node) -> T) -> T {
        f(self.nodes.lock().unwrap().get_mut(node).expect("a node"))
    }

    /// The nodes that hold a volume `name`.
    pub fn holders(&self, name: &str) -> Vec<String> {
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.volumes.contains_key(name))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn files(&self, node: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
        self.with(node, |n| n.volumes[name].files.clone())
    }

    /// A container `name` in `state` on `node` that mounts `volume` (made if missing, as
    /// dockerd does).
    pub fn add_container(&self, node: &str, name: &str, state: &str, volume: &str) {
        let id = self.id();
        self.with(node, |n| {
            n.volumes
                .entry(volume.to_owned())
                .or_insert_with(|| Volume {
                    driver: "local".into(),
                    labels: Value::Null,
                    ..Volume::default()
                });
            n.containers.insert(
                id,
                Container {
                    name: name.into(),
                    state: state.into(),
                    volumes: vec![volume.into()],
                    labels: json!({}),
                },
            );
        })
    }

    /// Containers on `node` (helpers included).
    pub fn containers(&self, node: &str) -> Vec<Container> {
        self.with(node, |n| n.containers.values().cloned().collect())
    }

    fn id(&self) -> String {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        format!("{:064x}", *n)
    }
}

fn status(node: &str, status: u16, message: impl Into<String>) -> EngineError {
    EngineError::Status {
        node: node.into(),
        status,
        message: message.into(),
    }
}

fn volume_json(name: &str, v: &Volume) -> Value {
    json!({
        "Name": name, "Driver": v.driver, "Labels": v.labels, "Options": null, "Scope": "local",
        "Mountpoint": format!("/var/lib/docker/volumes/{name}/_data"), "CreatedAt": "2026-12-07T00:00:00Z"
    })
}

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| busbar_adapter::headers::decode(v))
}

impl Engines for FakeCluster {
    async fn call(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EngineError> {
        // Let racing tasks interleave, as real calls do.
        tokio::task::yield_now().await;
        let id = self.id();
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes
            .get_mut(node)
            .ok_or_else(|| status(node, 404, "No such node"))?;
        if n.down {
            return Err(EngineError::Unreachable {
                node: node.into(),
                reason: "connection refused".into(),
            });
        }
        let bare = path.split('?').next().unwrap_or("");
        let segs: Vec<&str> = bare.split('/').filter(|s| !s.is_empty()).collect();
        let segs: Vec<String> = segs[1..]
            .iter()
            .map(|s| busbar_adapter::headers::decode(s))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (method, segs.as_slice()) {
            (Method::GET, ["volumes", name]) => n
                .volumes
                .get(*name)
                .map(|v| volume_json(name, v))
                .ok_or_else(|| status(node, 404, format!("get {name}: no such volume"))),
            (Method::DELETE, ["volumes", name]) => {
                if !n.volumes.contains_key(*name) {
                    return Err(status(node, 404, format!("get {name}: no such volume")));
                }
                if let Some(c) = n
                    .containers
                    .values()
                    .find(|c| c.volumes.iter().any(|v| v == name))
                {
                    return Err(status(
                        node,
                        409,
                        format!("remove {name}: volume is in use - [{}]", c.name),
                    ));
                }
                n.volumes.remove(*name);
                Ok(Value::Null)
            }
            (Method::POST, ["volumes", "create"]) => {
                let body = body.cloned().unwrap_or(Value::Null);
                let name = body["Name"].as_str().unwrap_or("").to_owned();
                let v = n.volumes.entry(name.clone()).or_insert_with(|| Volume {
                    driver: body["Driver"].as_str().unwrap_or("local").into(),
                    labels: body["Labels"].clone(),
                    files: BTreeMap::new(),
                });
                Ok(volume_json(&name, v))
            }
            (Method::GET, ["containers", "json"]) => {
                let filters: Value = query(path, "filters")
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or(Value::Null);
                let list: Vec<Value> = n
                    .containers
                    .iter()
                    .filter(|(_, c)| {
                        filters["volume"].as_array().is_none_or(|vs| {
                            vs.iter().any(|v| c.volumes.iter().any(|cv| v == cv.as_str()))
                        })
                    })
                    .filter(|(_, c)| {
                        filters["label"].as_array().is_none_or(|ls| {
                            ls.iter().filter_map(Value::as_str).all(|l| {
                                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                                c.labels[k].as_str() == Some(v)
                            })
                        })
                    })
                    .map(|(id, c)| {
                        json!({
                            "Id": id, "Names": [format!("/{}", c.name)], "State": c.state,
                            "Labels": c.labels,
                            "Mounts": c.volumes.iter().map(|v| json!({"Type": "volume", "Name": v})).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                Ok(Value::Array(list))
            }
            (Method::POST, ["containers", "create"]) => {
                let body = body.cloned().unwrap_or(Value::Null);
                let volumes: Vec<String> = body["HostConfig"]["Binds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.as_str()?.split(':').next().map(str::to_owned))
                    .collect();
                for v in &volumes {
                    n.volumes.entry(v.clone()).or_insert_with(|| Volume {
                        driver: "local".into(),
                        labels: Value::Null,
                        ..Volume::default()
                    });
                }
                let image = body["Image"].as_str().unwrap_or("");
                let image = if image.contains(':') {
                    image.to_owned()
                } else {
                    format!("{image}:latest")
                };
                if !n.images.contains(&image) {
                    return Err(status(node, 404, "No such image"));
                }
                n.containers.insert(
                    id.clone(),
                    Container {
                        name: query(path, "name").unwrap_or_else(|| id.clone()),
                        state: "created".into(),
                        volumes,
                        labels: body["Labels"].clone(),
                    },
                );
                Ok(json!({"Id": id, "Warnings": []}))
            }
            (Method::DELETE, ["containers", id]) => n
                .containers
                .remove(*id)
                .map(|_| Value::Null)
                .ok_or_else(|| status(node, 404, format!("No such container: {id}"))),
            (Method::GET, ["images", "json"]) => Ok(Value::Array(
                n.images
                    .iter()
                    .map(|i| json!({"Id": format!("sha256:{i}"), "RepoTags": [i]}))
                    .collect(),
            )),
            (m, s) => Err(status(node, 404, format!("the fake has no {m} {s:?}"))),
        }
    }

    async fn copy(&self, from: Place<'_>, to: Place<'_>) -> Result<u64, EngineError> {
        tokio::task::yield_now().await;
        let mut nodes = self.nodes.lock().unwrap();
        let volume_of = |n: &Node, node: &str, id: &str| -> Result<String, EngineError> {
            if n.down {
                return Err(EngineError::Unreachable {
                    node: node.into(),
                    reason: "connection refused".into(),
                });
            }
            n.containers
                .get(id)
                .and_then(|c| c.volumes.first().cloned())
                .ok_or_else(|| status(node, 404, format!("No such container: {id}")))
        };
        let src = nodes
            .get_mut(from.node)
            .ok_or_else(|| status(from.node, 404, "No such node"))?;
        let src_volume = volume_of(src, from.node, from.container)?;
        let files = src.volumes[&src_volume].files.clone();
        if src.down_after_copy_out {
            src.down = true;
        }
        let dst = nodes
            .get_mut(to.node)
            .ok_or_else(|| status(to.node, 404, "No such node"))?;
        let dst_volume = volume_of(dst, to.node, to.container)?;
        let half = files.len() / 2;
        let fail = dst.fail_copy_in;
        let target = dst
            .volumes
            .get_mut(&dst_volume)
            .expect("the helper's volume");
        let mut bytes = 0;
        for (i, (k, v)) in files.into_iter().enumerate() {
            if fail && i >= half {
                return Err(status(
                    to.node,
                    500,
                    "write /busbar-volume/f: no space left on device",
                ));
            }
            bytes += v.len() as u64;
            target.files.insert(k, v);
        }
        Ok(bytes)
    }
}
