//! Where a new container (or build, or network) goes: Swarm classic's scheduler as pure code
//! (swarm.md §1.8, §2.1–2.3). No IO: the gateway fetches each node's container and image lists
//! just before scheduling, holds its scheduling lock, and calls [`choose`] (or [`rank`]).
//!
//! # Pipeline
//! 1. [`Placement::from_create`] reads the create body ([`create::CreateBody`], typed views of
//!    the fields the gateway reads), moving `constraint:…`/`affinity:…` out of `Env` into the
//!    `com.docker.swarm.{constraints,affinities}` labels, as Swarm did.
//! 2. No candidate at all: [`ScheduleError::NoNodes`].
//! 3. The filters run in Swarm's order — health, port, containerslots, dependency, affinity,
//!    constraint — with busbar's network filter after health (a container on a user-defined
//!    network runs where the network is: an error then names the network, so a port taken
//!    on that node says what ties the container there) and its volume filter last, each keeping the nodes that pass. The volume
//!    filter keeps the nodes holding every named volume the container mounts (a volume is one
//!    node's: its data is there); when the client gave a hard constraint or affinity and no
//!    node passing it holds the volumes, the volume filter is skipped and the container goes
//!    where the client said (a portable-volume adapter may bring the data along). The health filter leaving nothing gives
//!    [`ScheduleError::NoHealthyNode`]; any other gives [`ScheduleError::Unsatisfiable`],
//!    listing the conditions of every filter up to the failing one.
//! 4. Of the nodes left, only those holding the create's image are kept, if any does (a
//!    preference, never a reason to fail: an image no node has is pulled by the client).
//! 5. The [`Strategy`] ranks the survivors; none fits the reservations:
//!    [`ScheduleError::NoResources`].
//! 6. Soft expressions (`~value`) count in a first pass; if that pass fails for any reason, a
//!    second pass ignores them and its result (or error) is the answer.
//!
//! [`Pending`] creates (chosen, not answered yet) count everywhere as containers on their node:
//! ports, reservations, container counts, names (`container==`, `--link`) and labels.
//!
//! # Decisions
//! - CPU: Docker's semantics. `NanoCpus / 1e9` is the requested CPUs and is weighed against
//!   `NCPU`; `CpuShares` stays a relative weight and is not reinterpreted as cores (Swarm's
//!   documented difference), so bodies reach the engine unchanged.
//! - Reservations already on a node: what its agent reports (`Describe`: the sums of
//!   `HostConfig.Memory` and `NanoCpus` over all its containers, running or not, as Swarm
//!   counted), or the container list's own `HostConfig` fields if a caller enriched them and
//!   they say more, plus pending creates. Ports: the list shows the published ports of running
//!   containers only.
//! - Status codes ([`ScheduleError::status`]): bad input 400; no (healthy) node 503; a request
//!   no node can satisfy 500, as Swarm and dockerd itself ("port is already allocated") answer.
//!   4xx codes carry meanings to clients (404 makes `docker run` pull, 409 is a name conflict).
//! - Error texts are Swarm's, byte for byte, so scripts and tests written against Swarm match:
//!   constraints are listed as `[node==node-9]`, affinities as `[container==db (soft=false)]`.

pub mod create;
mod expr;
mod filters;
pub mod mounts;
mod placement;
mod strategy;
#[cfg(test)]
mod tests;

use std::fmt;

use http::StatusCode;

use crate::model::NodeSnapshot;

pub use expr::{Expr, ExprError, Op, ValueKind};
pub use filters::{holds_image, CONTAINER_SLOTS_LABEL, MIN_ID_PREFIX};
pub use placement::{
    Dependency, Pending, Placement, PortClaim, AFFINITIES_LABEL, CONSTRAINTS_LABEL,
};
pub use strategy::{Strategy, OVERCOMMIT_PERCENT};

use filters::{NodeView, FILTERS};

/// One node offered to the scheduler, with the lists the gateway fetched just before:
/// `containers` from the engine's `GET /containers/json?all=1`, `images` from `GET /images/json`.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub node: &'a NodeSnapshot,
    pub containers: &'a [serde_json::Value],
    pub images: &'a [serde_json::Value],
}

/// Why nothing can be placed, or why the request is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A `constraint:`/`affinity:` expression (from `Env`, the labels or build args) is invalid.
    #[error("invalid {kind} {expr:?}: {reason}")]
    InvalidExpression {
        kind: &'static str,
        expr: String,
        reason: String,
    },
    /// `com.docker.swarm.constraints`/`affinities` is not a JSON array of strings.
    #[error("invalid label {label}: {reason}")]
    InvalidLabel { label: String, reason: String },
    /// A port in `PortBindings`/`ExposedPorts` cannot be read.
    #[error("invalid port {port:?}: {reason}")]
    InvalidPort { port: String, reason: String },
    /// The body is not shaped like a create body where the scheduler reads it.
    #[error("invalid create body: {0}")]
    InvalidBody(String),
    /// A field of the create body has the wrong JSON type (or the body is not JSON).
    #[error(transparent)]
    InvalidCreate(#[from] create::CreateError),
    /// `--strategy` is not `spread`, `binpack` or `random` (from [`Strategy`]'s `FromStr`).
    #[error("unknown scheduling strategy {0:?}: expected spread, binpack or random")]
    UnknownStrategy(String),
    #[error("No nodes available in the cluster")]
    NoNodes,
    #[error("No healthy node available in the cluster")]
    NoHealthyNode,
    /// One bracketed list per filter up to the one that left no node, each on its own line.
    #[error("Unable to find a node that satisfies the following conditions {}", Conditions(.conditions))]
    Unsatisfiable { conditions: Vec<Vec<String>> },
    /// Every node that passed the filters is too small or too full for the reservations.
    #[error("no resources available to schedule container")]
    NoResources,
}

/// Swarm's `listAllFilters`: `\n[a b]\n[c]`.
struct Conditions<'c>(&'c [Vec<String>]);

impl fmt::Display for Conditions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for list in self.0 {
            write!(f, "\n[{}]", list.join(" "))?;
        }
        Ok(())
    }
}

impl ScheduleError {
    /// The outcome of a decision that failed, as the metrics label it: `invalid` (the
    /// client's create cannot be read), `no_node` (none, or none healthy), `unsatisfiable`
    /// (the filters left no node), `no_resources`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ScheduleError::NoNodes | ScheduleError::NoHealthyNode => "no_node",
            ScheduleError::Unsatisfiable { .. } => "unsatisfiable",
            ScheduleError::NoResources => "no_resources",
            _ => "invalid",
        }
    }

    /// The HTTP status the gateway answers with (see the module docs for why).
    pub fn status(&self) -> StatusCode {
        match self {
            ScheduleError::InvalidExpression { .. }
            | ScheduleError::InvalidLabel { .. }
            | ScheduleError::InvalidPort { .. }
            | ScheduleError::InvalidBody(_)
            | ScheduleError::InvalidCreate(_)
            | ScheduleError::UnknownStrategy(_) => StatusCode::BAD_REQUEST,
            ScheduleError::NoNodes | ScheduleError::NoHealthyNode => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ScheduleError::Unsatisfiable { .. } | ScheduleError::NoResources => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The node to create on: the first of [`rank`].
pub fn choose(
    strategy: Strategy,
    candidates: &[Candidate],
    placement: &Placement,
    pending: &[Pending],
    rng_seed: u64,
) -> Result<String, ScheduleError> {
    let ranked = rank(strategy, candidates, placement, pending, rng_seed)?;
    Ok(ranked
        .into_iter()
        .next()
        .expect("rank returns at least one node or an error"))
}

/// Every node that can take the placement, best first (never empty): the caller may fall back
/// to the next one if the first fails in a way that is the node's fault.
pub fn rank(
    strategy: Strategy,
    candidates: &[Candidate],
    placement: &Placement,
    pending: &[Pending],
    rng_seed: u64,
) -> Result<Vec<String>, ScheduleError> {
    if candidates.is_empty() {
        return Err(ScheduleError::NoNodes);
    }
    let views: Vec<NodeView> = candidates
        .iter()
        .map(|c| NodeView::new(*c, pending))
        .collect();
    let pass = |soft: bool| -> Result<Vec<String>, ScheduleError> {
        let mut nodes = filter(&views, placement, soft)?;
        // Among the nodes that pass, those holding the image: `docker build -t app . && docker
        // run app` runs where the build left it (an image that cannot be pulled is only there).
        if let Some(image) = placement.image.as_deref() {
            if nodes.iter().any(|n| holds_image(n.cand.images, image)) {
                nodes.retain(|n| holds_image(n.cand.images, image));
            }
        }
        let ranked = strategy::rank(strategy, nodes, placement, rng_seed)?;
        Ok(ranked.into_iter().map(|n| n.name().to_owned()).collect())
    };
    match pass(true) {
        Err(_) if placement.has_soft() => pass(false),
        result => result,
    }
}

fn filter<'v, 'a>(
    views: &'v [NodeView<'a>],
    p: &Placement,
    soft: bool,
) -> Result<Vec<&'v NodeView<'a>>, ScheduleError> {
    let mut nodes: Vec<&NodeView> = views.iter().collect();
    for (i, f) in FILTERS.iter().enumerate() {
        if *f == filters::Filter::Volume
            && p.has_hard_expressions()
            && !nodes.iter().any(|n| f.accepts(p, n, soft))
        {
            // The client placed it elsewhere on purpose: it goes there.
            continue;
        }
        nodes.retain(|n| f.accepts(p, n, soft));
        if nodes.is_empty() {
            if *f == filters::Filter::Health {
                return Err(ScheduleError::NoHealthyNode);
            }
            let conditions = FILTERS[..=i]
                .iter()
                .map(|f| f.conditions(p, views))
                .filter(|list| !list.is_empty())
                .collect();
            return Err(ScheduleError::Unsatisfiable { conditions });
        }
    }
    Ok(nodes)
}
