//! Serving the Docker API from an agent across the gRPC hop.
//!
//! For now one agent stands behind the gateway (the cluster, with routing, aggregation and
//! scheduling across many, is the next step); every call goes to it and its node name is
//! recorded in the request's span.

use busbar_http::error as respond;
use busbar_http::server::Handler;
use busbar_http::{Body, RequestCtx};
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tracing::warn;

use crate::hop::AgentLink;

/// Sends every request to one agent.
pub struct Remote {
    pub agent: AgentLink,
}

impl Handler for Remote {
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(async move {
            ctx.set_node(self.agent.node());
            let (req, fault) = crate::serve::watch_client_body(req);
            let rsp = match self.agent.exchange(req, ctx).await {
                Ok(rsp) => rsp,
                Err(e) => {
                    warn!(error = %e, "agent call failed");
                    respond::error(&e)
                }
            };
            crate::serve::blame_the_body(rsp, &fault)
        })
    }

    fn upstream(&self) -> String {
        format!("agent {}", self.agent.node())
    }
}
