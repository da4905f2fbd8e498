//! Container calls that need more than a route: finding the owner, inspect with the node
//! added, exec bookkeeping, rename and remove with cluster-wide names, and create.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use busbar_http::body::{collect_limited, full};
use busbar_http::error as respond;
use busbar_http::{Body, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tracing::{debug, warn};

use super::calls;
use super::containers::{is_inspect, json, retarget, with_node, ResolveError};
use super::listcache::Expect;
use super::ClusterHandler;
use super::CREATE_TIMEOUT;
use crate::aggregate::query;
use crate::cluster::Node;
use crate::model::CallError;
use crate::names::{NameError, STALE_AFTER};
use crate::schedule::create::CreateBody;
use crate::schedule::{self, Candidate, Pending, Placement};

/// Largest create body accepted (a create config is a few KiB).
const MAX_CREATE: usize = 4 * 1024 * 1024;

/// The label docker-compose puts on every object of a project.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";

impl ClusterHandler {
    /// Why `reference`, which no healthy node has, cannot be reached: the node that is down
    /// and last listed it (see [`super::LastSeen`]), else Docker's "No such container".
    fn on_a_down_node(&self, reference: &str) -> ResolveError {
        let down: Vec<Arc<Node>> = self
            .cluster
            .nodes()
            .into_iter()
            .filter(|n| !n.is_healthy())
            .collect();
        let names: Vec<&str> = down.iter().map(|n| n.name()).collect();
        match self
            .last_seen
            .holder_of(reference, &names)
            .and_then(|name| down.iter().find(|n| n.name() == name))
        {
            Some(node) => ResolveError::Unhealthy {
                reference: reference.to_owned(),
                node: node.name().to_owned(),
                error: node.snapshot().last_error.unwrap_or_default(),
            },
            None => ResolveError::NotFound(reference.to_owned()),
        }
    }

    /// Any call on one container.
    pub(super) async fn container(
        &self,
        mut req: Request<Body>,
        prefix: &str,
        node_hint: Option<&str>,
        reference: &str,
        rest: &str,
        ctx: &RequestCtx,
    ) -> Response<Body> {
        let found = match self
            .locations
            .resolve(&self.cluster, node_hint, reference, ctx)
            .await
        {
            Ok(f) => f,
            Err(ResolveError::NotFound(_)) if node_hint.is_none() => {
                // No healthy node has it: a node that is down may (as `ps -a` shows it).
                return respond::error(&self.on_a_down_node(reference));
            }
            Err(e) => return respond::error(&e),
        };
        ctx.set_node(found.node.name());
        let method = req.method().clone();
        if is_inspect(&method, rest) {
            return json(StatusCode::OK, &with_node(found.inspect, &found.node));
        }
        let new_name = (method == Method::POST && rest == "rename")
            .then(|| query::param(req.uri().query().unwrap_or(""), "name"))
            .flatten();
        if let Some(name) = &new_name {
            if let Err(rsp) = self.claim_name(name, found.node.name(), ctx).await {
                return rsp;
            }
        }
        if method == Method::DELETE && !rest.is_empty() {
            // `rm --link PARENT/ALIAS`: the engine finds a link by its name, the parent's name
            // and the alias (never by the parent's ID).
            let parent = found.inspect["Name"].as_str().unwrap_or(&found.id);
            retarget(
                &mut req,
                prefix,
                "containers",
                parent.trim_start_matches('/'),
                rest,
            );
        } else {
            retarget(&mut req, prefix, "containers", &found.id, rest);
        }
        let expect = row_change(&method, rest)
            .map(|changed| changed.then(|| self.row_before(found.node.name(), &found.id)));
        let rsp = self.forward(&found.node, req, ctx).await;
        if let Some(name) = &new_name {
            self.release_name(name, found.node.name()).await;
        }
        if let (true, Some(expect)) = (rsp.status().is_success(), expect) {
            let expect = match expect {
                _ if method == Method::DELETE => Expect::Absent,
                Some(before) => Expect::Changed(before),
                None => Expect::Any,
            };
            self.refresh_row(&found.node, &found.id, expect, ctx).await;
        }
        if method == Method::POST && rest == "exec" && rsp.status() == StatusCode::CREATED {
            return self.remember_exec(rsp, &found.node).await;
        }
        rsp
    }

    /// `POST /commit?container=REF`: on the node that has the container, with the reference
    /// made its full ID there (a `node/name` reference included). Without `container`, any
    /// node answers (the engine's own error).
    pub(super) async fn commit(&self, mut req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        let query = req.uri().query().unwrap_or("").to_owned();
        let Some(reference) = query::param(&query, "container").filter(|r| !r.is_empty()) else {
            return match self.cluster.healthy().into_iter().next() {
                Some(node) => self.forward(&node, req, ctx).await,
                None => respond::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No healthy node available in the cluster",
                ),
            };
        };
        let (hint, name) = match reference.split_once('/') {
            Some((node, name)) if self.cluster.node(node).is_some() => (Some(node), name),
            _ => (None, reference.as_str()),
        };
        let found = match self.locations.resolve(&self.cluster, hint, name, ctx).await {
            Ok(f) => f,
            Err(ResolveError::NotFound(_)) if hint.is_none() => {
                return respond::error(&self.on_a_down_node(name))
            }
            Err(e) => return respond::error(&e),
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                !p.is_empty()
                    && busbar_api::query::pairs(p)
                        .next()
                        .is_none_or(|(k, _)| k != "container")
            })
            .collect();
        let mut target = format!(
            "{}?container={}",
            req.uri().path(),
            query::encode(&found.id)
        );
        for pair in kept {
            target.push('&');
            target.push_str(pair);
        }
        *req.uri_mut() = target
            .parse()
            .expect("a valid path and a query of valid pairs make a valid URI");
        self.forward(&found.node, req, ctx).await
    }

    /// Ends a reservation: the container now exists (or not) on its node, where every later
    /// check will see it.
    async fn release_name(&self, name: &str, node: &str) {
        if let Some(names) = &self.names {
            names.release(name, node).await;
        }
    }

    async fn remember_exec(&self, rsp: Response<Body>, node: &Node) -> Response<Body> {
        match calls::read_body(rsp).await {
            Ok((status, headers, body)) => {
                if let Some(id) = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|d| d["Id"].as_str().map(str::to_owned))
                {
                    self.locations.remember_exec(&id, node.name());
                }
                let mut out = Response::new(full(body));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                out
            }
            Err(e) => calls::failed(node.name(), &e),
        }
    }

    /// Reserves `name` for `node` while a create or rename is in flight: first in the store
    /// (so a concurrent claim, on this gateway or another, loses), then a live check of every
    /// node (so an existing container keeps its name). The caller releases it when the call is
    /// done. Each claim is counted by outcome (`busbar_name_claims_total`).
    async fn claim_name(
        &self,
        name: &str,
        node: &str,
        ctx: &RequestCtx,
    ) -> Result<(), Response<Body>> {
        let claimed = self.try_claim_name(name, node, ctx).await;
        let outcome = match &claimed {
            Ok(()) => "claimed",
            Err(r) if r.status() == StatusCode::CONFLICT => "conflict",
            Err(r) if r.status() == StatusCode::BAD_REQUEST => "invalid",
            Err(_) => "unavailable",
        };
        busbar_metrics::global()
            .name_claims
            .get_or_create(&busbar_metrics::OutcomeLabels { outcome })
            .inc();
        claimed
    }

    /// [`claim_name`](Self::claim_name), uncounted.
    async fn try_claim_name(
        &self,
        name: &str,
        node: &str,
        ctx: &RequestCtx,
    ) -> Result<(), Response<Body>> {
        let conflict = |by: &str| {
            respond::message(
                StatusCode::CONFLICT,
                &format!("Conflict. The container name \"/{name}\" is already in use {by}. You have to remove (or rename) that container to be able to reuse that name."),
            )
        };
        // Docker's own check and words (a name like `%00` is the client's mistake, a 400).
        if let Err(e) = crate::names::etcd::normalize(name) {
            return Err(respond::message(StatusCode::BAD_REQUEST, &e.to_string()));
        }
        if let Some(names) = &self.names {
            let mut freed_once = false;
            loop {
                match names.reserve(name, node).await {
                    Ok(()) => break,
                    Err(NameError::Taken(t)) if t.age >= STALE_AFTER && !freed_once => {
                        // Older than any create: its gateway died mid-call, or the create
                        // never completed. Free it only if its node has no such container.
                        self.check_stale(name, &t.owner, ctx).await?;
                        freed_once = true;
                    }
                    Err(NameError::Taken(t)) => {
                        return Err(conflict(&format!("on node {}", t.owner)))
                    }
                    Err(e) => {
                        return Err(respond::message(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &e.to_string(),
                        ))
                    }
                }
            }
        }
        let filter = format!(
            "/v1.41/containers/json?all=1&filters={}",
            query::encode(&format!(r#"{{"name":["^/{name}$"]}}"#))
        );
        let answers = calls::fan_out_json(&self.cluster.healthy(), &filter, ctx).await;
        for a in answers {
            match a.result {
                Ok(Value::Array(list)) => {
                    if let Some(c) = list.first() {
                        self.release_name(name, node).await;
                        let id = c["Id"].as_str().unwrap_or("");
                        return Err(conflict(&format!(
                            "by container \"{id}\" on node {}",
                            a.node
                        )));
                    }
                }
                // A node that could not say whether it has the name: never taken as "free".
                failed => {
                    self.release_name(name, node).await;
                    let e = failed.err().unwrap_or_else(|| {
                        CallError::Bad("its container list is not a list".into())
                    });
                    return Err(respond::message(
                        calls::status_of(&e),
                        &format!(
                            "cannot check that the container name \"/{name}\" is free: node {}: {e}",
                            a.node
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Frees the stale reservation of `name` by `owner` if `owner` has no container of that
    /// name; otherwise the answer for the client: the conflict with that container, or why it
    /// cannot be said (the node down or silent: the name stays taken).
    async fn check_stale(
        &self,
        name: &str,
        owner: &str,
        ctx: &RequestCtx,
    ) -> Result<(), Response<Body>> {
        let names = self.names.as_ref().expect("only called with a name store");
        let conflict = |detail: &str| {
            respond::message(
                StatusCode::CONFLICT,
                &format!("Conflict. The container name \"/{name}\" is already in use {detail}"),
            )
        };
        let held = match self.cluster.node(owner) {
            // A node that is not (any more) in the cluster holds nothing here.
            None => None,
            Some(n) => {
                match calls::get_json(&n, &format!("/v1.41/containers/{name}/json"), ctx).await {
                    Ok(doc) => Some(doc["Id"].as_str().unwrap_or("").to_owned()),
                    Err(CallError::Engine { status: 404, .. }) => None,
                    Err(e) => {
                        return Err(conflict(&format!(
                            "(reserved for node {owner}, which cannot say whether it has it: {e})"
                        )))
                    }
                }
            }
        };
        if let Some(id) = held {
            return Err(conflict(&format!(
                "by container \"{id}\" on node {owner}. You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        match names.free_stale(name, owner, STALE_AFTER).await {
            Ok(freed) => {
                if freed {
                    warn!(
                        name,
                        node = owner,
                        "freed a stale name reservation: its node has no such container"
                    );
                }
                Ok(())
            }
            Err(e) => Err(respond::message(
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            )),
        }
    }

    /// `POST /containers/create`: parse the placement, claim the name, choose a node, create.
    pub(super) async fn create(
        &self,
        req: Request<Body>,
        prefix: &str,
        ctx: &RequestCtx,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = match collect_limited(body, MAX_CREATE).await {
            Ok(b) => b,
            Err(e) => {
                return respond::message(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the create request: {e}"),
                )
            }
        };
        // Read as the engine reads it (`hostconfig`, top-level host fields, ...): constraints,
        // volumes and networks are placed by what the engine will use.
        let path = busbar_api::ApiPath::parse(parts.uri.path()).ok();
        let canonical = path.map(|p| busbar_api::body::canonical(&Method::POST, &p, &bytes));
        let bytes = match canonical {
            Some(Ok(Some(respelled))) => Bytes::from(respelled),
            Some(Err(e @ busbar_api::body::BodyError::Duplicate { .. })) => {
                return respond::message(StatusCode::BAD_REQUEST, &e.to_string())
            }
            // Not JSON: the create's own reading says where.
            _ => bytes,
        };
        let mut config = match CreateBody::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => return respond::message(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let mut placement = match Placement::from_create_body(&mut config) {
            Ok(p) => p,
            Err(e) => return respond::message(e.status(), &e.to_string()),
        };
        placement.volume_holders = self.volume_holders(&placement.volumes, ctx).await;
        let name = query::param(parts.uri.query().unwrap_or(""), "name");
        placement.network = match self.network_nodes(&mut config, ctx).await {
            Ok(network) => network,
            Err(rsp) => return rsp,
        };
        let (node, ticket) = match self.choose_among(&placement, None, ctx).await {
            Ok(chosen) => chosen,
            Err(rsp) => return rsp,
        };
        if let Some(name) = &name {
            if let Err(rsp) = self.claim_name(name, node.name(), ctx).await {
                self.unpend(&ticket).await;
                return rsp;
            }
        }
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let body = Bytes::from(config.to_bytes());
        let length = http::HeaderValue::from(body.len());
        let mut req = Request::from_parts(parts, full(body));
        *req.uri_mut() = format!("{prefix}/containers/create{query}")
            .parse()
            .expect("a version prefix and the query of a valid URI make a valid URI");
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, length);
        let sent = tokio::time::timeout(CREATE_TIMEOUT, self.forward(&node, req, ctx)).await;
        let Ok(rsp) = sent else {
            // The engine may still create it: the name's reservation is kept, and freed by a
            // later claim only if the container does not exist (see `check_stale`).
            self.unpend(&ticket).await;
            return respond::message(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "node {}: the create did not complete within {CREATE_TIMEOUT:?}",
                    node.name()
                ),
            );
        };
        let rsp = note_created(rsp, &ticket).await;
        let rsp = name_image_holders(rsp, node.name(), &ticket.image_holders).await;
        // Where it is, by ID and name: the start (or attach) that follows goes there without
        // asking every node, and finds it even if that node is slow to answer right now.
        if let Some(id) = ticket.id.get() {
            self.locations.remember_container(id, node.name());
            if let Some(name) = &name {
                self.locations.remember_container(name, node.name());
            }
        }
        if let Some(id) = ticket.id.get() {
            self.refresh_row(&node, id, Expect::Present, ctx).await;
        }
        self.unpend(&ticket).await;
        if let Some(name) = &name {
            self.release_name(name, node.name()).await;
        }
        debug!(node = %node.name(), status = rsp.status().as_u16(), "create placed");
        rsp
    }

    /// `networks/create` and `volumes/create` with a plain name: the scheduler's choice, with
    /// the Swarm labels of `labels` (`com.docker.swarm.constraints`, as `docker network create
    /// --label` gives them). Objects of one compose project (`com.docker.compose.project`) go
    /// to the nodes that already hold one of its networks or volumes, if any: its containers
    /// need both on one node.
    pub(super) async fn place_object(
        &self,
        labels: &Value,
        ctx: &RequestCtx,
    ) -> Result<std::sync::Arc<Node>, Response<Body>> {
        let placement = Placement::from_labels(labels)
            .map_err(|e| respond::message(e.status(), &e.to_string()))?;
        let project = labels
            .get(COMPOSE_PROJECT)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let only = match project {
            Some(p) => Some(self.project_nodes(&p, ctx).await).filter(|n| !n.is_empty()),
            None => None,
        };
        let (node, ticket) = self.choose_among(&placement, only.as_deref(), ctx).await?;
        self.unpend(&ticket).await;
        Ok(node)
    }

    /// The healthy nodes holding a network or a volume labelled with compose project `project`.
    async fn project_nodes(&self, project: &str, ctx: &RequestCtx) -> Vec<String> {
        let filter = query::encode(
            &serde_json::json!({"label": [format!("{COMPOSE_PROJECT}={project}")]}).to_string(),
        );
        let nodes = self.cluster.healthy();
        let (networks_path, volumes_path) = (
            format!("/v1.41/networks?filters={filter}"),
            format!("/v1.41/volumes?filters={filter}"),
        );
        let (networks, volumes) = tokio::join!(
            calls::fan_out_json(&nodes, &networks_path, ctx),
            calls::fan_out_json(&nodes, &volumes_path, ctx),
        );
        let holds = |a: &crate::model::NodeAnswer<Value>, list: fn(&Value) -> Option<&Value>| {
            a.result
                .as_ref()
                .ok()
                .and_then(list)
                .and_then(Value::as_array)
                .is_some_and(|l| !l.is_empty())
        };
        nodes
            .iter()
            .zip(networks.iter().zip(&volumes))
            .filter(|(_, (n, v))| holds(n, |d| Some(d)) || holds(v, |d| d.get("Volumes")))
            .map(|(node, _)| node.name().to_owned())
            .collect()
    }

    /// `build`: placed by the scheduler, with Swarm's `--build-arg constraint:node==x`.
    pub(super) async fn place_build(
        &self,
        req: &Request<Body>,
        ctx: &RequestCtx,
    ) -> Result<std::sync::Arc<Node>, Response<Body>> {
        let mut args: Value = query::param(req.uri().query().unwrap_or(""), "buildargs")
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        let placement = Placement::from_build_args(&mut args)
            .map_err(|e| respond::message(e.status(), &e.to_string()))?;
        self.place_with(&placement, ctx).await
    }

    async fn place_with(
        &self,
        placement: &Placement,
        ctx: &RequestCtx,
    ) -> Result<std::sync::Arc<Node>, Response<Body>> {
        let (node, ticket) = self.choose_among(placement, None, ctx).await?;
        self.unpend(&ticket).await;
        Ok(node)
    }

    /// Which healthy nodes hold each of `volumes` as a node-local volume (asked of every
    /// healthy node at once, `GET /volumes/{name}`). A volume of `global` scope on any node is
    /// shared storage and held by none; a node that cannot answer is taken as not holding it.
    pub(super) async fn volume_holders(
        &self,
        volumes: &[String],
        ctx: &RequestCtx,
    ) -> std::collections::BTreeMap<String, Vec<String>> {
        let nodes = self.cluster.healthy();
        let asked = volumes.iter().map(|name| {
            let path = format!("/v1.41/volumes/{}", busbar_api::path::encode_segment(name));
            let nodes = &nodes;
            async move { (name.clone(), calls::fan_out_json(nodes, &path, ctx).await) }
        });
        futures_util::future::join_all(asked)
            .await
            .into_iter()
            .map(|(name, answers)| {
                let found: Vec<(String, Value)> = answers
                    .into_iter()
                    .filter_map(|a| a.result.ok().map(|doc| (a.node, doc)))
                    .collect();
                let global = found.iter().any(|(_, doc)| doc["Scope"] == "global");
                let holders = if global {
                    Vec::new()
                } else {
                    found.into_iter().map(|(node, _)| node).collect()
                };
                (name, holders)
            })
            .collect()
    }

    /// A container on a user-defined network must run where the network is (networks are
    /// node-local): the network and the nodes that have `HostConfig.NetworkMode`'s network, or
    /// the one named by a `node/network` form (stripped from the config, as Swarm did). `None`:
    /// any node.
    async fn network_nodes(
        &self,
        config: &mut CreateBody,
        ctx: &RequestCtx,
    ) -> Result<Option<(String, Vec<String>)>, Response<Body>> {
        let Some(mode) = config
            .host_config()
            .and_then(|h| h.network_mode.get())
            .cloned()
        else {
            return Ok(None);
        };
        if ["", "default", "bridge", "host", "none"].contains(&mode.as_str())
            || mode.starts_with("container:")
        {
            return Ok(None);
        }
        if let Some((node, network)) = mode
            .split_once('/')
            .filter(|(n, _)| self.cluster.node(n).is_some())
        {
            config.strip_network_node(&mode, network);
            return Ok(Some((network.to_owned(), vec![node.to_owned()])));
        }
        let path = format!("/v1.41/networks/{}", query::encode(&mode));
        let answers = calls::fan_out_json(&self.cluster.healthy(), &path, ctx).await;
        let holders: Vec<String> = answers
            .into_iter()
            .filter(|a| a.result.is_ok())
            .map(|a| a.node)
            .collect();
        if holders.is_empty() {
            // Not a 404: the docker CLI answers a 404 on create by pulling the image.
            return Err(respond::message(
                StatusCode::BAD_REQUEST,
                &format!("network {mode} not found"),
            ));
        }
        Ok(Some((mode, holders)))
    }

    /// Chooses a node among `only` (all nodes if `None`) under the scheduling lock and records
    /// the placement as in flight until [`Self::unpend`].
    ///
    /// An in-flight create counts once: as pending until its container is in the node's list,
    /// then as listed. The lists are fetched under the lock and an in-flight create leaves only
    /// when it can take the lock, so a create the engine finished during the fetch can be in
    /// both: its ID, recorded as soon as the engine answers ([`note_created`]), tells.
    async fn choose_among(
        &self,
        placement: &Placement,
        only: Option<&[String]>,
        ctx: &RequestCtx,
    ) -> Result<(std::sync::Arc<Node>, Ticket), Response<Body>> {
        let mut pending = self.pending.lock().await;
        let nodes: Vec<_> = self
            .cluster
            .nodes()
            .into_iter()
            .filter(|n| only.is_none_or(|o| o.iter().any(|x| x == n.name())))
            .collect();
        let snapshots: Vec<_> = nodes.iter().map(|n| n.snapshot()).collect();
        let healthy: Vec<_> = nodes.iter().filter(|n| n.is_healthy()).cloned().collect();
        let (containers, images) = tokio::join!(
            calls::fan_out_json(&healthy, "/v1.41/containers/json?all=1", ctx),
            calls::fan_out_json(&healthy, "/v1.41/images/json", ctx),
        );
        let lists = |answers: &[crate::model::NodeAnswer<Value>], node: &str| -> Vec<Value> {
            answers
                .iter()
                .find(|a| a.node == node)
                .and_then(|a| a.result.as_ref().ok())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
        };
        let per_node: Vec<(Vec<Value>, Vec<Value>)> = snapshots
            .iter()
            .map(|s| (lists(&containers, &s.name), lists(&images, &s.name)))
            .collect();
        let candidates: Vec<Candidate> = snapshots
            .iter()
            .zip(&per_node)
            .map(|(node, (c, i))| Candidate {
                node,
                containers: c,
                images: i,
            })
            .collect();
        let listed = |node: &str, id: &str| {
            containers.iter().any(|a| {
                a.node == node
                    && a.result.as_ref().is_ok_and(|l| {
                        l.as_array()
                            .is_some_and(|l| l.iter().any(|c| c["Id"] == id))
                    })
            })
        };
        let counted: Vec<Pending> = pending
            .iter()
            .filter(|f| {
                let twice = f.ticket.id.get().is_some_and(|id| listed(&f.placement.node, id));
                if twice {
                    debug!(node = %f.placement.node, "an in-flight create is already listed: counted once");
                }
                !twice
            })
            .map(|f| f.placement.clone())
            .collect();
        let seed = rand_seed();
        let chosen = schedule::choose(self.strategy, &candidates, placement, &counted, seed);
        busbar_metrics::global()
            .schedule_decisions
            .get_or_create(&busbar_metrics::ScheduleLabels {
                strategy: self.strategy.as_str(),
                outcome: match &chosen {
                    Ok(_) => "placed",
                    Err(e) => e.outcome(),
                },
            })
            .inc();
        let chosen = chosen.map_err(|e| respond::message(e.status(), &e.to_string()))?;
        let mut ticket = Ticket::new();
        if let Some(image) = placement.image.as_deref() {
            ticket.image_holders = per_node
                .iter()
                .zip(&snapshots)
                .filter(|((_, images), _)| schedule::holds_image(images, image))
                .map(|(_, s)| s.name.clone())
                .collect();
        }
        pending.push(InFlight {
            ticket: ticket.clone(),
            placement: placement.pending_on(&chosen),
        });
        let node = self.cluster.node(&chosen).ok_or_else(|| {
            warn!(node = %chosen, "scheduled node vanished");
            respond::message(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("node {chosen} left the cluster"),
            )
        });
        drop(pending);
        match node {
            Ok(node) => Ok((node, ticket)),
            Err(rsp) => {
                self.unpend(&ticket).await;
                Err(rsp)
            }
        }
    }

    async fn unpend(&self, ticket: &Ticket) {
        self.pending
            .lock()
            .await
            .retain(|f| f.ticket.token != ticket.token);
    }
}

/// A placement chosen and not yet answered: counted by the scheduler as a container on its node.
pub(super) struct InFlight {
    ticket: Ticket,
    placement: Pending,
}

/// Names one [`InFlight`] create; carries the container ID once the engine has answered.
#[derive(Clone)]
pub(super) struct Ticket {
    token: u64,
    /// Set without the scheduling lock, so a chooser holding it sees the ID at once.
    id: Arc<OnceLock<String>>,
    /// The healthy nodes holding the create's image when it was placed.
    image_holders: Vec<String>,
}

impl Ticket {
    fn new() -> Ticket {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Ticket {
            token: NEXT.fetch_add(1, Ordering::Relaxed),
            id: Arc::default(),
            image_holders: Vec::new(),
        }
    }
}

/// Whether a successful `method .../containers/{id}/rest` changes the container's
/// `containers/json` row: `Some(true)` if the row shows it once the engine has answered
/// (removed, started, stopped, paused, renamed), `Some(false)` if it may not (`kill`: the
/// container dies later, if at all; `update`), `None` if the row does not change.
fn row_change(method: &Method, rest: &str) -> Option<bool> {
    match (method, rest) {
        (&Method::DELETE, "") => Some(true),
        (&Method::POST, "start" | "stop" | "restart" | "pause" | "unpause" | "rename") => {
            Some(true)
        }
        (&Method::POST, "kill" | "update") => Some(false),
        _ => None,
    }
}

/// Records the ID of a container the engine created (`201 {"Id": ...}`) on `ticket`; the
/// response is passed on unchanged (it is a few bytes, read whole).
async fn note_created(rsp: Response<Body>, ticket: &Ticket) -> Response<Body> {
    if rsp.status() != StatusCode::CREATED {
        return rsp;
    }
    let (mut parts, body) = rsp.into_parts();
    match calls::read_body(Response::new(body)).await {
        Ok((_, _, bytes)) => {
            if let Some(id) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["Id"].as_str().map(str::to_owned))
            {
                let _ = ticket.id.set(id);
            }
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(bytes.len()),
            );
            Response::from_parts(parts, full(bytes))
        }
        Err(e) => respond::message(
            StatusCode::BAD_GATEWAY,
            &format!("reading the create answer: {e}"),
        ),
    }
}

/// A create's `404 No such image` from `node`, when other nodes hold the image (the placement
/// kept the container away from them: a constraint, a port, a network): the message says
/// which, still a 404 (the docker CLI pulls on a 404, as from one engine).
async fn name_image_holders(rsp: Response<Body>, node: &str, holders: &[String]) -> Response<Body> {
    if rsp.status() != StatusCode::NOT_FOUND
        || holders.is_empty()
        || holders.iter().any(|h| h == node)
    {
        return rsp;
    }
    let (parts, body) = rsp.into_parts();
    let bytes = match calls::read_body(Response::new(body)).await {
        Ok((_, _, bytes)) => bytes,
        Err(e) => {
            return respond::message(
                StatusCode::BAD_GATEWAY,
                &format!("reading the create answer: {e}"),
            )
        }
    };
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned));
    match message {
        Some(m) if m.to_ascii_lowercase().starts_with("no such image") => respond::message(
            StatusCode::NOT_FOUND,
            &format!(
                "{m} on node {node}, where the placement put the container; {} {} it",
                holders.join(", "),
                if holders.len() == 1 { "has" } else { "have" }
            ),
        ),
        _ => {
            let mut parts = parts;
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(bytes.len()),
            );
            Response::from_parts(parts, full(bytes))
        }
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http_body_util::BodyExt;

    use super::*;
    use crate::cluster::{Cluster, HealthOptions, Member};
    use crate::schedule::Strategy;

    /// A gateway in front of `names` (agents nobody answers at: every test here is decided
    /// before a node is called).
    fn handler(names: &[&str]) -> ClusterHandler {
        let cluster = Cluster::new(crate::cluster::tests::tls(), HealthOptions::default());
        cluster.set_members(
            &names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let member = Member {
                        addr: format!("127.0.0.{}:9", i + 1),
                        labels: BTreeMap::new(),
                    };
                    ((*n).to_owned(), member)
                })
                .collect(),
        );
        ClusterHandler::new(cluster, Strategy::Spread, None)
    }

    /// `POST /containers/create` with `body` through the whole handler: status and message.
    async fn create(handler: &ClusterHandler, body: String) -> (StatusCode, String) {
        let req = Request::post("/v1.41/containers/create?name=web")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full(body))
            .expect("a valid request");
        let ctx = RequestCtx::with_id("test".into(), tracing::Span::none());
        let rsp = handler.serve(req, &ctx).await;
        let status = rsp.status();
        let bytes = rsp.into_body().collect().await.expect("a body").to_bytes();
        let doc: Value = serde_json::from_slice(&bytes).expect("a JSON error");
        (status, doc["message"].as_str().unwrap_or("").to_owned())
    }

    #[tokio::test]
    async fn a_networking_config_that_is_not_an_object_is_a_400() {
        // With a `node/network` mode, the gateway indexed into NetworkingConfig as an object
        // (serde_json's IndexMut) and panicked on a number.
        let body = r#"{"Image": "busybox", "HostConfig": {"NetworkMode": "node1/net"}, "NetworkingConfig": 5}"#;
        let (status, message) = create(&handler(&["node1"]), body.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with(
                "invalid create request: NetworkingConfig: invalid type: integer `5`, expected a NetworkingConfig object"
            ),
            "{message}"
        );
        for body in [
            r#"{"HostConfig": {"NetworkMode": "node1/net"}, "NetworkingConfig": {"EndpointsConfig": "x"}}"#,
            r#"{"HostConfig": 5}"#,
            r#"{"HostConfig": {"NetworkMode": ["node1/net"]}}"#,
            r#"[]"#,
            r#"{"#,
        ] {
            let (status, message) = create(&handler(&["node1"]), body.into()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {message}");
            assert!(message.starts_with("invalid create request: "), "{message}");
        }
    }

    /// `method target` through the whole handler: the status.
    async fn call(handler: &ClusterHandler, method: Method, target: &str) -> StatusCode {
        let req = Request::builder()
            .method(method)
            .uri(target)
            .body(full(Bytes::new()))
            .expect("a valid request");
        let ctx = RequestCtx::with_id("test".into(), tracing::Span::none());
        handler.serve(req, &ctx).await.status()
    }

    #[tokio::test]
    async fn names_that_need_escaping_reach_the_nodes_escaped() {
        // Decoded path segments (`a b`, `a?b`, `é`) were pasted into the paths of the gateway's
        // own calls, which then were not valid URIs: the request builder's `expect` panicked.
        let handler = handler(&["node1"]);
        handler
            .cluster
            .node("node1")
            .expect("node1")
            .mark_probed_for_tests();
        for (method, target) in [
            (Method::GET, "/v1.41/containers/a%20b/json"),
            (Method::POST, "/v1.41/containers/a%3Fb/kill%20now"),
            (Method::POST, "/v1.41/exec/a%20b/start"),
            (Method::GET, "/v1.41/images/a%20b/json"),
            (Method::DELETE, "/v1.41/images/caf%C3%A9"),
            (Method::GET, "/v1.41/networks/a%20b"),
            (Method::DELETE, "/v1.41/volumes/node1/a%20b"),
            (Method::GET, "/v1.41/volumes/a%20b"),
        ] {
            // node1's agent is not there: any answer but a panic.
            let status = call(&handler, method.clone(), target).await;
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{method} {target}: {status}"
            );
        }
    }

    #[tokio::test]
    async fn a_constraint_too_long_to_match_is_a_400_naming_it() {
        // 100,000 `?` made a glob regex over the regex size limit, and its `expect` panicked.
        let value = "?".repeat(100_000);
        let body =
            serde_json::json!({"Image": "busybox", "Env": [format!("constraint:node=={value}")]});
        let (status, message) = create(&handler(&["node1"]), body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(
            message.starts_with("invalid constraint \"node==???"),
            "{}",
            &message[..200.min(message.len())]
        );
        assert!(message.contains("too long"), "{message}");
        assert!(message.len() < 1000, "the value is not quoted whole");
    }
}
