//! The cluster's engines as this adapter uses them: JSON calls on any node's engine, and a
//! volume's data streamed from one node's container archive into another's. Through a
//! gateway's adapter API ([`GatewayEngines`]), so no chain runs on the adapter's own calls.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_adapter::gateway::{
    self, encode_segment, error_message, BoxError, Gateway, GatewayError,
};
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

/// Why a call on a node's engine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine answered with an error (its `{"message"}`).
    #[error("{node}: {message}")]
    Status {
        node: String,
        status: u16,
        message: String,
    },
    /// No answer: the gateway, the node's agent or its engine could not be reached, or the
    /// answer broke off.
    #[error("{node}: {reason}")]
    Unreachable { node: String, reason: String },
}

impl EngineError {
    /// The engine's status, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Status { status, .. } => Some(*status),
            EngineError::Unreachable { .. } => None,
        }
    }

    /// True for the engine's 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// Where a volume's data is copied from or to: a (stopped) container of a node and a path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place<'a> {
    pub node: &'a str,
    pub container: &'a str,
    pub path: &'a str,
}

/// The engines of the cluster.
pub trait Engines: Send + Sync + 'static {
    /// `method` on `node`'s engine at `path` (with its query; segments encoded), an optional
    /// JSON body; the answer as JSON (`null` when empty).
    fn call(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> impl Future<Output = Result<Value, EngineError>> + Send;

    /// Streams the archive of `from.path` into `to.path`, never holding it whole; the bytes
    /// moved.
    fn copy(
        &self,
        from: Place<'_>,
        to: Place<'_>,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;
}

/// The engines through a gateway's adapter API.
#[derive(Clone)]
pub struct GatewayEngines {
    gateway: Gateway,
    /// The same gateway with the deadline of a whole copy (the `PUT` of an archive answers
    /// once the engine has unpacked all of it).
    copying: Gateway,
}

impl GatewayEngines {
    /// Calls answer within `timeout`; a copy within `copy_timeout`.
    pub fn new(gateway: Gateway, timeout: Duration, copy_timeout: Duration) -> GatewayEngines {
        GatewayEngines {
            copying: gateway.clone().with_timeout(copy_timeout),
            gateway: gateway.with_timeout(timeout),
        }
    }
}

fn engine_error(node: &str, e: GatewayError) -> EngineError {
    match e {
        GatewayError::Status { status, message } => EngineError::Status {
            node: node.to_owned(),
            status: status.as_u16(),
            message,
        },
        other => EngineError::Unreachable {
            node: node.to_owned(),
            reason: other.to_string(),
        },
    }
}

impl Engines for GatewayEngines {
    async fn call(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EngineError> {
        self.gateway
            .engine(node)
            .json(method, path, body)
            .await
            .map_err(|e| engine_error(node, e))
    }

    async fn copy(&self, from: Place<'_>, to: Place<'_>) -> Result<u64, EngineError> {
        let archive = |p: &Place<'_>| {
            format!(
                "/v1.41/containers/{}/archive?path={}",
                encode_segment(p.container),
                encode_segment(p.path)
            )
        };
        let source = self
            .gateway
            .engine(from.node)
            .send(Method::GET, &archive(&from), gateway::empty())
            .await
            .map_err(|e| engine_error(from.node, e))?;
        if !source.status().is_success() {
            let status = source.status().as_u16();
            let body = source
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(EngineError::Status {
                node: from.node.to_owned(),
                status,
                message: error_message(&body),
            });
        }
        let moved = Arc::new(AtomicU64::new(0));
        let counter = moved.clone();
        // Set when the source's stream breaks off: whatever the target answers then, the copy
        // is not whole.
        let broken = Arc::new(std::sync::Mutex::new(None::<String>));
        let broke = broken.clone();
        let body = source
            .into_body()
            .map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                frame
            })
            .map_err(move |e| {
                *broke.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Box::new(e) as BoxError
            })
            .boxed();
        let put = async {
            let answer = self
                .copying
                .engine(to.node)
                .send_typed(Method::PUT, &archive(&to), "application/x-tar", body)
                .await?;
            gateway::read_json(answer).await
        };
        let result = put.await;
        if let Some(reason) = broken.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(EngineError::Unreachable {
                node: from.node.to_owned(),
                reason: format!(
                    "the archive broke off after {} bytes: {reason}",
                    moved.load(Ordering::Relaxed)
                ),
            });
        }
        result.map_err(|e| engine_error(to.node, e))?;
        Ok(moved.load(Ordering::Relaxed))
    }
}
