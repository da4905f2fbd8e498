//! The hooks: what busbar-volumes does on each call of its chain entries.
//!
//! | call | phase | does |
//! | --- | --- | --- |
//! | `POST /volumes/create` | pre | refuses a portable volume without a name (each node would make up its own) |
//! | `POST /volumes/create` | post | the first node to create a portable volume records it in etcd; on every other node the new copy is removed again and the answer is the holder's volume |
//! | `POST /containers/create` | pre | for each portable volume the container mounts: takes its lock, and if it lives on another node moves it here (or refuses: in use there, busy, failed), then lets the create go on **unchanged** |
//! | `POST /containers/create` | post | releases the locks its pre-hook took |
//! | `GET /volumes` | post | hides the copies etcd does not point at; adds `Status["busbar.node"]` |
//! | `GET /volumes/{name}` | post | a copy etcd does not point at is a 404; the volume gets `Status["busbar.node"]` |
//! | `DELETE /volumes/{name}` | pre | refuses while a create holds the volume's lock; removes helper containers a failed move left there |
//! | `DELETE /volumes/{name}` | post | removed where it lives: the record goes, with the stale copies |
//! | `POST /volumes/prune` | post | the records of pruned portable volumes go |
//!
//! The pre-hook never rewrites a create's body: what other adapters of the chain set
//! (`NetworkingConfig`, `Labels`, ...) reaches the engine as they left it.

use std::sync::Arc;
use std::time::Duration;

use busbar_adapter::hook::{Call as HookCall, PostAnswer, PreAnswer};
use busbar_adapter::v1::{PostHookRequest, PreHookRequest};
use busbar_adapter::Adapter;
use http::Method;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::engines::Engines;
use crate::error::VolumeError;
use crate::mover::Mover;
use crate::request::{is_portable, named_volumes, Call};
use crate::store::{Held, Holder, Record, Store};

/// How the adapter waits and locks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A lock's lifetime without renewal: how long a create's lock outlives an adapter that
    /// died holding it.
    pub lock_ttl: Duration,
    /// How long a create waits for another's lock on a volume before it is refused.
    pub lock_wait: Duration,
    /// The longest a move may take.
    pub move_timeout: Duration,
    /// The image helper containers are made from (`None`: any image the node has).
    pub helper_image: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(15),
            move_timeout: Duration::from_secs(600),
            helper_image: None,
        }
    }
}

/// The adapter.
pub struct Volumes<S, E> {
    store: Arc<S>,
    engines: Arc<E>,
    settings: Settings,
}

impl<S: Store, E: Engines> Volumes<S, E> {
    pub fn new(store: S, engines: E, settings: Settings) -> Volumes<S, E> {
        Volumes {
            store: Arc::new(store),
            engines: Arc::new(engines),
            settings,
        }
    }

    fn mover(&self) -> Mover<S, E> {
        Mover {
            store: self.store.clone(),
            engines: self.engines.clone(),
            helper_image: self.settings.helper_image.clone(),
        }
    }

    /// Pre-hook of a container create: every portable volume it mounts is here, and locked
    /// until the create's post-hook.
    async fn before_container_create(
        &self,
        call: &HookCall<PreHookRequest>,
    ) -> Result<(), VolumeError> {
        let (Some(node), Some(body)) = (call.node(), call.body_json()) else {
            return Ok(());
        };
        let request_id = call
            .context
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut held: Vec<Held> = vec![];
        for name in named_volumes(&body) {
            let placed = async {
                if self.store.get(&name).await?.is_none() {
                    return Ok(None); // not portable
                }
                let lock = self.acquire(&name, node, &request_id).await?;
                match self.place(&name, node, &lock).await {
                    Ok(()) => Ok(Some(lock)),
                    Err(e) => {
                        self.release(&lock).await;
                        Err(e)
                    }
                }
            }
            .await;
            match placed {
                Ok(Some(lock)) => held.push(lock),
                Ok(None) => {}
                Err(e) => {
                    for lock in &held {
                        self.release(lock).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Takes `name`'s lock for the create `request_id` on `node`, waiting for another
    /// holder at most `lock_wait`.
    async fn acquire(&self, name: &str, node: &str, request_id: &str) -> Result<Held, VolumeError> {
        let holder = Holder {
            token: uuid::Uuid::new_v4().simple().to_string(),
            node: node.to_owned(),
            request_id: request_id.to_owned(),
            since: busbar_runtime::unix_now(),
        };
        let deadline = tokio::time::Instant::now() + self.settings.lock_wait;
        loop {
            match self
                .store
                .lock(name, &holder, self.settings.lock_ttl)
                .await?
            {
                Ok(held) => return Ok(held),
                Err(other) if tokio::time::Instant::now() >= deadline => {
                    return Err(VolumeError::Busy {
                        name: name.to_owned(),
                        node: other.node,
                        request_id: other.request_id,
                        waited: self.settings.lock_wait,
                    })
                }
                Err(other) => {
                    debug!(volume = %name, holder = %other.node, "waiting for the volume's lock");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn release(&self, lock: &Held) {
        let token = lock.token.clone();
        if let Err(e) = self
            .store
            .unlock(&lock.name, move |h| h.token == token)
            .await
        {
            warn!(volume = %lock.name, error = %e, "releasing the lock failed; it expires with its lease");
        }
    }

    /// Under `lock`: moves `name` to `node` unless it is there. The move runs in a task of its
    /// own, renewing the lock, so that it ends (recorded, or undone) even if the hook call is
    /// dropped.
    async fn place(&self, name: &str, node: &str, lock: &Held) -> Result<(), VolumeError> {
        let Some(current) = self.store.get(name).await? else {
            return Ok(()); // removed meanwhile: the create makes a plain local volume
        };
        if current.record.node == node {
            return Ok(());
        }
        let from = current.record.node.clone();
        let (mover, store, lock_c, to) = (
            self.mover(),
            self.store.clone(),
            lock.clone(),
            node.to_owned(),
        );
        let (ttl, limit) = (self.settings.lock_ttl, self.settings.move_timeout);
        let task = tokio::spawn(async move {
            let renewing = async {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = store.renew(&lock_c).await {
                        warn!(volume = %lock_c.name, error = %e, "renewing the lock failed");
                    }
                }
            };
            let started = tokio::time::Instant::now();
            tokio::select! {
                moved = tokio::time::timeout(limit, mover.move_to(current, &to)) => {
                    (moved, started.elapsed())
                }
                _ = renewing => unreachable!("renewing never ends"),
            }
        });
        let timed_out = |_| VolumeError::TimedOut {
            name: name.to_owned(),
            from: from.clone(),
            to: node.to_owned(),
            after: limit,
        };
        match task.await {
            Ok((result, took)) => {
                let moved = result.map_err(timed_out)??;
                info!(volume = %name, from = %moved.from, to = %node, bytes = moved.bytes, took_ms = took.as_millis() as u64, "volume moved for a container create");
                Ok(())
            }
            Err(e) => Err(VolumeError::MoveFailed {
                name: name.to_owned(),
                from: from.clone(),
                to: node.to_owned(),
                source: crate::engines::EngineError::Unreachable {
                    node: "busbar-volumes".into(),
                    reason: format!("the move's task failed: {e}"),
                },
            }),
        }
    }

    /// Post-hook of a container create: its locks go.
    async fn after_container_create(&self, call: &HookCall<PostHookRequest>) {
        let (Some(node), Some(request_id), Some(body)) = (
            call.node(),
            call.context.request_id.as_deref(),
            call.request_json(),
        ) else {
            return;
        };
        for name in named_volumes(&body) {
            let ours = |h: &Holder| h.request_id == request_id && h.node == node;
            if let Err(e) = self.store.unlock(&name, ours).await {
                warn!(volume = %name, error = %e, "releasing the lock failed; it expires with its lease");
            }
        }
    }

    /// Post-hook of a volume create (see the module docs); the answer's body.
    async fn after_volume_create(
        &self,
        call: &HookCall<PostHookRequest>,
    ) -> Result<Option<Value>, VolumeError> {
        let response = &call.request.server_response;
        let (Some(node), Some(request)) = (call.node(), call.request_json()) else {
            return Ok(None);
        };
        if !(200..300).contains(&response.code) || !is_portable(&request) {
            return Ok(None);
        }
        let Some(volume) = call.body_json() else {
            return Ok(None);
        };
        let Some(name) = volume["Name"].as_str() else {
            return Ok(None);
        };
        let strings = |v: &Value| -> std::collections::BTreeMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        };
        let record = Record {
            name: name.to_owned(),
            node: node.to_owned(),
            driver: volume["Driver"].as_str().unwrap_or("local").to_owned(),
            options: strings(&volume["Options"]),
            labels: strings(&volume["Labels"]),
            created_at: busbar_runtime::unix_now(),
            moved_at: 0,
            moves: 0,
            stale: vec![],
        };
        let Some(existing) = self.store.create(&record).await? else {
            info!(volume = %name, %node, "portable volume created");
            return Ok(Some(with_node(volume, node)));
        };
        let home = existing.record.node.clone();
        if home == node {
            return Ok(Some(with_node(volume, node)));
        }
        // Another node holds it: does it still?
        let path = format!(
            "/v1.41/volumes/{}",
            busbar_adapter::gateway::encode_segment(name)
        );
        match self.engines.call(&home, Method::GET, &path, None).await {
            Err(e) if e.is_not_found() => {
                // The record outlived its data (removed behind busbar's back): this copy is it now.
                let mut record = record;
                record.created_at = existing.record.created_at;
                if self.store.update(&record, existing.revision).await? {
                    warn!(volume = %name, old = %home, %node, "the recorded node had no such volume; recorded here");
                    return Ok(Some(with_node(volume, node)));
                }
                Ok(None)
            }
            found => {
                // One copy in the cluster: this node's new one goes again.
                if let Err(e) = self.engines.call(node, Method::DELETE, &path, None).await {
                    warn!(volume = %name, %node, error = %e, "an extra copy stays (never served)");
                }
                Ok(found.ok().map(|v| with_node(v, &home)))
            }
        }
    }

    /// Post-hook of `GET /volumes`: only the copies etcd points at, each with its node.
    async fn after_volume_list(&self, call: &HookCall<PostHookRequest>) -> Option<Value> {
        let node = call.node()?;
        if call.request.server_response.code != 200 {
            return None;
        }
        let mut list = call.body_json()?;
        let records = match self.store.list().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "volume list: etcd did not answer; the list goes as the engine made it");
                return None;
            }
        };
        let home = |name: &str| {
            records
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.node.as_str())
        };
        let volumes = list["Volumes"].as_array_mut()?;
        volumes.retain(|v| match v["Name"].as_str().and_then(home) {
            Some(h) => h == node,
            None => true,
        });
        for v in volumes.iter_mut() {
            if v["Name"].as_str().and_then(home).is_some() {
                *v = with_node(v.take(), node);
            }
        }
        Some(list)
    }

    /// Post-hook of `GET /volumes/{name}`: the copy etcd points at, with its node; another is
    /// a 404.
    async fn after_volume_inspect(
        &self,
        call: &HookCall<PostHookRequest>,
        name: &str,
    ) -> Option<(u16, Value)> {
        let node = call.node()?;
        if call.request.server_response.code != 200 {
            return None;
        }
        let record = self.store.get(name).await.ok()??.record;
        if record.node != node {
            return Some((
                404,
                json!({"message": format!("get {name}: no such volume (busbar-volumes: {name} lives on {})", record.node)}),
            ));
        }
        Some((200, with_node(call.body_json()?, node)))
    }

    /// Pre-hook of `DELETE /volumes/{name}`: not while a create holds it; helpers a failed
    /// move left on `node` go first.
    async fn before_volume_remove(
        &self,
        name: &str,
        node: Option<&str>,
    ) -> Result<(), VolumeError> {
        if self.store.get(name).await?.is_none() {
            return Ok(());
        }
        if let Some(node) = node {
            self.mover().remove_leftover_helpers(node, name).await;
        }
        let holder = Holder {
            token: uuid::Uuid::new_v4().simple().to_string(),
            node: String::from("volume rm"),
            request_id: String::new(),
            since: busbar_runtime::unix_now(),
        };
        match self
            .store
            .lock(name, &holder, Duration::from_secs(1))
            .await?
        {
            Ok(held) => {
                self.release(&held).await;
                Ok(())
            }
            Err(other) => Err(VolumeError::Busy {
                name: name.to_owned(),
                node: other.node,
                request_id: other.request_id,
                waited: Duration::ZERO,
            }),
        }
    }

    /// Post-hook of `DELETE /volumes/{name}`: removed where it lives, so its record goes.
    async fn after_volume_remove(&self, call: &HookCall<PostHookRequest>, name: &str) {
        let Some(node) = call.node() else { return };
        if !(200..300).contains(&call.request.server_response.code) {
            return;
        }
        self.forget(name, node).await;
    }

    /// Post-hook of `POST /volumes/prune`.
    async fn after_volume_prune(&self, call: &HookCall<PostHookRequest>) {
        let (Some(node), Some(body)) = (call.node(), call.body_json()) else {
            return;
        };
        for name in body["VolumesDeleted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            self.forget(name, node).await;
        }
    }

    /// `name` was removed from `node`: if it lived there, its record and stale copies go.
    async fn forget(&self, name: &str, node: &str) {
        let Ok(Some(current)) = self.store.get(name).await else {
            return;
        };
        if current.record.node != node {
            return;
        }
        match self.store.delete(name, current.revision).await {
            Ok(true) => {
                info!(volume = %name, %node, "portable volume removed");
                self.mover().remove_stale(name, &current.record.stale).await;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(volume = %name, error = %e, "the volume's record stays in etcd: remove it with etcdctl")
            }
        }
    }
}

/// The volume with `Status["busbar.node"]` (Docker's place for what a driver says of a volume).
fn with_node(mut volume: Value, node: &str) -> Value {
    if !volume["Status"].is_object() {
        volume["Status"] = json!({});
    }
    volume["Status"]["busbar.node"] = json!(node);
    volume
}

impl<S: Store, E: Engines> Adapter for Volumes<S, E> {
    async fn pre_hook(&self, call: HookCall<PreHookRequest>) -> PreAnswer {
        let r = &call.request.client_request;
        let result = match Call::of(&r.method, &r.request) {
            Call::ContainerCreate => self.before_container_create(&call).await,
            Call::VolumeCreate => match call.body_json() {
                Some(body)
                    if is_portable(&body) && body["Name"].as_str().unwrap_or("").is_empty() =>
                {
                    Err(VolumeError::Unnamed)
                }
                _ => Ok(()),
            },
            Call::VolumeRemove(name) => self.before_volume_remove(&name, call.node()).await,
            _ => Ok(()),
        };
        match result {
            Ok(()) => Ok(call.unchanged()),
            Err(e) => {
                info!(error = %e, "refused");
                Err(e.refusal())
            }
        }
    }

    async fn post_hook(&self, call: HookCall<PostHookRequest>) -> PostAnswer {
        let r = &call.request.client_request;
        let mut answer = call.unchanged();
        let mut replace = |code: u16, body: Value| {
            answer.code = Some(code);
            answer.body = Some(body.to_string());
            answer.content_type = Some("application/json".into());
        };
        match Call::of(&r.method, &r.request) {
            Call::ContainerCreate => self.after_container_create(&call).await,
            Call::VolumeCreate => match self.after_volume_create(&call).await {
                Ok(Some(body)) => replace(call.request.server_response.code, body),
                Ok(None) => {}
                Err(e) => return Err(e.refusal()),
            },
            Call::VolumeList => {
                if let Some(body) = self.after_volume_list(&call).await {
                    replace(200, body);
                }
            }
            Call::VolumeInspect(name) => {
                if let Some((code, body)) = self.after_volume_inspect(&call, &name).await {
                    replace(code, body);
                }
            }
            Call::VolumeRemove(name) => self.after_volume_remove(&call, &name).await,
            Call::VolumePrune => self.after_volume_prune(&call).await,
            Call::Other => {}
        }
        Ok(answer)
    }
}
