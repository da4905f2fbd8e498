//! Moving a portable volume's data from the node that holds it to another, through the
//! engines' archive API, in an order that never loses the data:
//!
//! 1. refuse if a container on the source node uses the volume (running or not: Docker would
//!    not let its copy be removed, and it would read stale data when started again);
//! 2. on the target, remove an old copy left by an earlier failed move, then make the volume
//!    (same driver, options and labels) and a stopped helper container mounting it; a stopped
//!    helper on the source too (helpers never run: the archive API mounts their volumes);
//! 3. stream `GET /containers/{src}/archive?path=/busbar-volume` into
//!    `PUT /containers/{dst}/archive?path=/` (owners, modes, times, links kept; never whole in
//!    memory);
//! 4. only then record the new node in etcd (compare-and-swap on the record read at the
//!    start); a failure at any step before leaves the record and the source untouched, and the
//!    target's partial copy is removed;
//! 5. remove the source's copy; if that fails (its node went away), the node is listed in the
//!    record's `stale`, never served, and cleaned at the next move there or at `volume rm`.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::engines::{EngineError, Engines, Place};
use crate::error::VolumeError;
use crate::store::{Store, Versioned};

/// Where helpers mount the volume.
pub const MOUNT: &str = "/busbar-volume";
/// The label that marks helper containers (its value: the volume's name).
pub const HELPER_LABEL: &str = "busbar.volume-helper";

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub bytes: u64,
    pub from: String,
}

/// Moves volumes.
pub struct Mover<S, E> {
    pub store: Arc<S>,
    pub engines: Arc<E>,
    /// The image helpers are made from; `None`: any image the node has.
    pub helper_image: Option<String>,
}

impl<S, E> Clone for Mover<S, E> {
    fn clone(&self) -> Self {
        Mover {
            store: self.store.clone(),
            engines: self.engines.clone(),
            helper_image: self.helper_image.clone(),
        }
    }
}

fn volume_path(name: &str) -> String {
    format!(
        "/v1.41/volumes/{}",
        busbar_adapter::gateway::encode_segment(name)
    )
}

/// `filters` for the containers that use volume `name` (JSON, percent-encoded).
fn volume_filter(name: &str) -> String {
    busbar_adapter::gateway::encode_segment(&json!({ "volume": [name] }).to_string())
}

impl<S: Store, E: Engines> Mover<S, E> {
    /// Moves `current`'s data to node `to` (see the module docs). The caller holds the
    /// volume's lock.
    pub async fn move_to(&self, current: Versioned, to: &str) -> Result<Moved, VolumeError> {
        let name = current.record.name.clone();
        let from = current.record.node.clone();
        let failed = |source: EngineError| VolumeError::MoveFailed {
            name: name.clone(),
            from: from.clone(),
            to: to.to_owned(),
            source,
        };

        // 1. In use where it is?
        if let Some((container, state)) = self.user(&from, &name).await.map_err(failed)? {
            return Err(VolumeError::InUse {
                name,
                node: from.clone(),
                container,
                state,
                to: to.to_owned(),
            });
        }
        let source = self
            .engines
            .call(&from, Method::GET, &volume_path(&name), None)
            .await
            .map_err(failed)?;

        // 2..3: the copy, undone on any failure.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let helper_name = |node: &str| format!("busbar-volume-{name}-{node}-{}", &token[..8]);
        let mut made: Vec<(String, String)> = vec![];
        let copied = async {
            self.remove_leftover_helpers(&from, &name).await;
            self.remove_leftover_helpers(to, &name).await;
            self.remove_old_copy(to, &name).await?;
            let spec = json!({
                "Name": name,
                "Driver": source["Driver"].as_str().unwrap_or("local"),
                "DriverOpts": source["Options"],
                "Labels": source["Labels"],
            });
            self.engines
                .call(to, Method::POST, "/v1.41/volumes/create", Some(&spec))
                .await?;
            let src = self.helper(&from, &name, &helper_name(&from)).await?;
            made.push((from.clone(), src.clone()));
            let dst = self.helper(to, &name, &helper_name(to)).await?;
            made.push((to.to_owned(), dst.clone()));
            info!(volume = %name, %from, %to, "moving");
            let bytes = self
                .engines
                .copy(
                    Place {
                        node: &from,
                        container: &src,
                        path: MOUNT,
                    },
                    Place {
                        node: to,
                        container: &dst,
                        path: "/",
                    },
                )
                .await?;
            Ok::<u64, HelperOrEngine>(bytes)
        }
        .await;
        for (node, id) in made.drain(..) {
            self.remove_container(&node, &id).await;
        }
        let bytes = match copied {
            Ok(bytes) => bytes,
            Err(e) => {
                self.drop_copy(to, &name).await;
                return Err(match e {
                    HelperOrEngine::Engine(e) => failed(e),
                    HelperOrEngine::NoImage(node) => VolumeError::NoHelperImage { node },
                });
            }
        };

        // 4. Record the new place: only now is the target's copy the volume.
        let mut record = current.record.clone();
        record.node = to.to_owned();
        record.moved_at = busbar_runtime::unix_now();
        record.moves += 1;
        record.stale.retain(|n| n != to && n != &from);
        let committed = match self.store.update(&record, current.revision).await {
            Ok(ok) => ok,
            Err(e) => {
                self.drop_copy(to, &name).await;
                return Err(e.into());
            }
        };
        if !committed {
            self.drop_copy(to, &name).await;
            return Err(VolumeError::Changed {
                name,
                from,
                to: to.to_owned(),
            });
        }
        info!(volume = %name, %from, %to, bytes, "moved");

        // 5. The old copy goes.
        if let Err(e) = self
            .engines
            .call(&from, Method::DELETE, &volume_path(&name), None)
            .await
        {
            warn!(volume = %name, node = %from, error = %e, "the old copy stays (never served); it is removed at the next move there or at volume rm");
            self.mark_stale(&name, &from).await;
        }
        Ok(Moved { bytes, from })
    }

    /// A container of `node` that uses volume `name` (not a helper), with its state.
    async fn user(&self, node: &str, name: &str) -> Result<Option<(String, String)>, EngineError> {
        let list = self
            .engines
            .call(
                node,
                Method::GET,
                &format!(
                    "/v1.41/containers/json?all=1&filters={}",
                    volume_filter(name)
                ),
                None,
            )
            .await?;
        let user = list.as_array().into_iter().flatten().find(|c| {
            c["Labels"][HELPER_LABEL].is_null()
                && c["Mounts"]
                    .as_array()
                    .is_none_or(|ms| ms.iter().any(|m| m["Name"] == name))
        });
        Ok(user.map(|c| {
            let shown = c["Names"][0]
                .as_str()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| c["Id"].as_str().unwrap_or("?").chars().take(12).collect());
            (shown, c["State"].as_str().unwrap_or("unknown").to_owned())
        }))
    }

    /// A stopped container on `node` that mounts `volume` at [`MOUNT`]; its id.
    async fn helper(&self, node: &str, volume: &str, name: &str) -> Result<String, HelperOrEngine> {
        let image = self.helper_image(node).await?;
        let spec = json!({
            "Image": image,
            "Entrypoint": ["/busbar-volume-helper"],
            "Cmd": [],
            "Labels": { HELPER_LABEL: volume },
            "NetworkDisabled": true,
            "HostConfig": {
                "Binds": [format!("{volume}:{MOUNT}")],
                "NetworkMode": "none",
            },
        });
        let made = self
            .engines
            .call(
                node,
                Method::POST,
                &format!("/v1.41/containers/create?name={name}"),
                Some(&spec),
            )
            .await?;
        Ok(made["Id"].as_str().unwrap_or(name).to_owned())
    }

    /// `--helper-image`, or the first image `node` has (helpers never run: any will do).
    async fn helper_image(&self, node: &str) -> Result<String, HelperOrEngine> {
        if let Some(image) = &self.helper_image {
            return Ok(image.clone());
        }
        let images = self
            .engines
            .call(node, Method::GET, "/v1.41/images/json", None)
            .await?;
        let images = images.as_array().cloned().unwrap_or_default();
        let tagged = images.iter().find_map(|i| {
            i["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|t| *t != "<none>:<none>")
                .map(str::to_owned)
        });
        tagged
            .or_else(|| {
                images
                    .first()
                    .and_then(|i| i["Id"].as_str())
                    .map(str::to_owned)
            })
            .ok_or_else(|| HelperOrEngine::NoImage(node.to_owned()))
    }

    /// Removes a copy of `name` on `node` that etcd does not point at (a failed move's, or one
    /// made behind busbar's back); an error if it cannot go (a container uses it).
    async fn remove_old_copy(&self, node: &str, name: &str) -> Result<(), EngineError> {
        match self
            .engines
            .call(node, Method::DELETE, &volume_path(name), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(EngineError::Status {
                node,
                status,
                message,
            }) => Err(EngineError::Status {
                message: format!("an old copy of {name} there cannot be removed: {message}"),
                node,
                status,
            }),
            Err(e) => Err(e),
        }
    }

    /// Helpers a failed move left behind (its adapter killed, or the node unreachable when
    /// they were to go): they would keep `volume rm` from removing the volume.
    pub async fn remove_leftover_helpers(&self, node: &str, name: &str) {
        let filter = busbar_adapter::gateway::encode_segment(
            &json!({ "label": [format!("{HELPER_LABEL}={name}")] }).to_string(),
        );
        let path = format!("/v1.41/containers/json?all=1&filters={filter}");
        if let Ok(list) = self.engines.call(node, Method::GET, &path, None).await {
            for c in list.as_array().into_iter().flatten() {
                if let Some(id) = c["Id"].as_str() {
                    self.remove_container(node, id).await;
                }
            }
        }
    }

    async fn remove_container(&self, node: &str, id: &str) {
        let path = format!(
            "/v1.41/containers/{}?force=1",
            busbar_adapter::gateway::encode_segment(id)
        );
        if let Err(e) = self.engines.call(node, Method::DELETE, &path, None).await {
            warn!(%node, container = %id, error = %e, "a helper container stays");
        }
    }

    /// Removes the target's copy of a move that did not happen (best effort: etcd never
    /// points at it, so it is never served).
    async fn drop_copy(&self, node: &str, name: &str) {
        if let Err(e) = self
            .engines
            .call(node, Method::DELETE, &volume_path(name), None)
            .await
        {
            if !e.is_not_found() {
                warn!(volume = %name, %node, error = %e, "a partial copy stays (never served)");
            }
        }
    }

    /// Adds `node` to the record's `stale` list.
    async fn mark_stale(&self, name: &str, node: &str) {
        for _ in 0..3 {
            match self.store.get(name).await {
                Ok(Some(mut v)) => {
                    if v.record.stale.iter().any(|n| n == node) {
                        return;
                    }
                    v.record.stale.push(node.to_owned());
                    if let Ok(true) = self.store.update(&v.record, v.revision).await {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Removes the stale copies a record lists (at `volume rm`).
    pub async fn remove_stale(&self, name: &str, nodes: &[String]) {
        for node in nodes {
            self.remove_leftover_helpers(node, name).await;
            self.drop_copy(node, name).await;
        }
    }
}

/// Why a helper or a step of the copy failed.
enum HelperOrEngine {
    Engine(EngineError),
    NoImage(String),
}

impl From<EngineError> for HelperOrEngine {
    fn from(e: EngineError) -> Self {
        HelperOrEngine::Engine(e)
    }
}
