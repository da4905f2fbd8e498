//! One hook call, typed: Powerstrip's v1 request ([`Call::request`]) and what busbar says
//! beside it in headers ([`Call::context`]), and the adapter's answer.

use std::collections::BTreeMap;
use std::future::Future;

use busbar_protocol::headers as h;
use busbar_protocol::trace::{TraceParent, TRACEPARENT};
use busbar_protocol::v1::{
    ModifiedClientRequest, ModifiedServerResponse, PostHookRequest, PreHookRequest,
};
use busbar_protocol::{v1, v2};
use http::HeaderMap;
use serde_json::Value;

/// An adapter: what it does on a pre-hook and on a post-hook call. Both default to passing
/// the call on unchanged, so an adapter implements only the phases its chain entries use.
pub trait Adapter: Send + Sync + 'static {
    /// Before the engine: rewrite the client's request, or refuse it.
    fn pre_hook(&self, call: Call<PreHookRequest>) -> impl Future<Output = PreAnswer> + Send {
        async move { Ok(call.unchanged()) }
    }

    /// After the engine: rewrite its response, or replace it with an error.
    fn post_hook(&self, call: Call<PostHookRequest>) -> impl Future<Output = PostAnswer> + Send {
        async move { Ok(call.unchanged()) }
    }

    /// A pre-hook call of protocol 2 (the chain entry says `protocol: 2`): the request's
    /// headers and `Caller` besides v1's. Go on with a request, or answer the client with a
    /// [`v2::Response`] of the adapter's own (the engine is then never called). By default,
    /// [`Adapter::pre_hook`] on the v1 part of the call.
    fn pre_hook_v2(
        &self,
        call: Call<v2::PreHookRequest>,
    ) -> impl Future<Output = PreAnswerV2> + Send {
        async move {
            let r = &call.request.client_request;
            let v1_call = Call {
                request: v1::PreHookRequest::new(v1::ClientRequest {
                    method: r.method.clone(),
                    request: r.request.clone(),
                    body: r.body.clone(),
                }),
                context: call.context,
            };
            self.pre_hook(v1_call).await.map(v2::PreHookReply::Continue)
        }
    }

    /// A post-hook call of protocol 2. By default, [`Adapter::post_hook`] on its v1 part.
    fn post_hook_v2(
        &self,
        call: Call<v2::PostHookRequest>,
    ) -> impl Future<Output = PostAnswer> + Send {
        async move {
            let (r, s) = (&call.request.client_request, &call.request.server_response);
            let v1_call = Call {
                request: v1::PostHookRequest::new(
                    v1::ClientRequest {
                        method: r.method.clone(),
                        request: r.request.clone(),
                        body: r.body.clone(),
                    },
                    v1::ServerResponse {
                        content_type: s.content_type.clone(),
                        body: s.body.clone(),
                        code: s.code,
                    },
                ),
                context: call.context,
            };
            self.post_hook(v1_call).await
        }
    }

    /// Protocol 2: the request this adapter's pre-hook let through failed later (a later
    /// pre-hook or the engine refused it): undo what the pre-hook did. The answer is not
    /// read; by default nothing is done.
    fn unwind(&self, call: Call<v2::UnwindRequest>) -> impl Future<Output = ()> + Send {
        let _ = call;
        async {}
    }
}

/// A v2 pre-hook's answer: go on, or answer the client; or a refusal the client gets.
pub type PreAnswerV2 = Result<v2::PreHookReply, Refusal>;

/// A pre-hook's answer: the request to go on with, or a refusal the client gets.
pub type PreAnswer = Result<ModifiedClientRequest, Refusal>;
/// A post-hook's answer: the response the client gets, or a refusal that replaces it.
pub type PostAnswer = Result<ModifiedServerResponse, Refusal>;

/// An adapter's refusal: busbar stops the chain and the client gets this status with
/// `{"message": ...}`, as Docker words its own errors (the CLI prints the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// A 4xx: the client asked for something this adapter does not allow.
    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(403, message)
    }

    /// A 409: the request conflicts with the cluster's state (a volume in use elsewhere).
    pub fn conflict(message: impl Into<String>) -> Refusal {
        Refusal::new(409, message)
    }

    /// A 500: the adapter could not do its part.
    pub fn failed(message: impl Into<String>) -> Refusal {
        Refusal::new(500, message)
    }
}

/// One call: the Powerstrip document and busbar's context.
#[derive(Debug, Clone)]
pub struct Call<R> {
    pub request: R,
    pub context: Context,
}

/// What busbar says about a call beside the JSON (see [`busbar_protocol::headers`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The version of busbar's additions (`X-Busbar-Adapter-Api`), `None` from Powerstrip
    /// itself or a busbar that predates them.
    pub adapter_api: Option<String>,
    /// The request id, as in busbar's logs (`X-Request-Id`).
    pub request_id: Option<String>,
    /// The node whose agent runs the hook (a cluster agent's; `None` on a standalone one).
    pub node: Option<Node>,
    /// The client, when its certificate was verified (client TLS).
    pub client: Option<Client>,
    /// The request's W3C trace (`traceparent`: its trace id, and the agent's span as the
    /// parent), when the call carried a valid one. Its trace id is in the `hook` span of every
    /// log line the kit's server writes for the call.
    pub trace: Option<TraceParent>,
}

/// A node as hook calls name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A client whose certificate busbar verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The certificate's subject CN.
    pub user: String,
    /// `TLS`.
    pub auth_method: String,
    /// The busbar role the certificate carries (`client`, `adapter`), if any.
    pub role: Option<String>,
}

impl Context {
    /// The context the headers of a hook call carry.
    pub fn from_headers(headers: &HeaderMap) -> Context {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(h::decode)
        };
        Context {
            adapter_api: text(h::ADAPTER_API_HEADER),
            request_id: text(h::REQUEST_ID),
            node: text(h::NODE).map(|name| Node {
                name,
                labels: headers
                    .get(h::NODE_LABELS)
                    .and_then(|v| v.to_str().ok())
                    .map(h::decode_labels)
                    .unwrap_or_default(),
            }),
            client: text(h::AUTH_METHOD).map(|auth_method| Client {
                user: text(h::USER).unwrap_or_default(),
                auth_method,
                role: text(h::ROLE),
            }),
            trace: match (
                headers.get_all(TRACEPARENT).iter().next(),
                headers.get_all(TRACEPARENT).iter().nth(1),
            ) {
                (Some(one), None) => TraceParent::parse(one.as_bytes()),
                _ => None,
            },
        }
    }
}

impl<R> Call<R> {
    /// The node that runs the hook, by name.
    pub fn node(&self) -> Option<&str> {
        self.context.node.as_ref().map(|n| n.name.as_str())
    }
}

impl Call<PreHookRequest> {
    /// The client's body as JSON (`None`: no body, or not JSON).
    pub fn body_json(&self) -> Option<Value> {
        body_json(self.request.client_request.body.as_deref())
    }

    /// Go on with the request as it came.
    pub fn unchanged(&self) -> ModifiedClientRequest {
        let r = &self.request.client_request;
        ModifiedClientRequest {
            body: r.body.clone(),
            request: Some(r.request.clone()),
            method: None,
        }
    }

    /// Go on with this body instead.
    pub fn with_body(&self, body: &Value) -> ModifiedClientRequest {
        ModifiedClientRequest {
            body: Some(body.to_string()),
            ..self.unchanged()
        }
    }
}

impl Call<PostHookRequest> {
    /// The engine's body as JSON (`None`: empty, or not JSON).
    pub fn body_json(&self) -> Option<Value> {
        body_json(Some(&self.request.server_response.body))
    }

    /// The body of the client's request as JSON.
    pub fn request_json(&self) -> Option<Value> {
        body_json(self.request.client_request.body.as_deref())
    }

    /// Give the client the engine's response as it came.
    pub fn unchanged(&self) -> ModifiedServerResponse {
        let r = &self.request.server_response;
        ModifiedServerResponse {
            content_type: r.content_type.clone(),
            body: Some(r.body.clone()),
            code: Some(r.code),
        }
    }
}

fn body_json(body: Option<&str>) -> Option<Value> {
    body.filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_str(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_read_from_busbars_headers() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("x-busbar-adapter-api", "1"),
            ("x-request-id", "r1"),
            ("x-busbar-node", "node%201"),
            ("x-busbar-node-labels", "zone=a%2Cb,ssd="),
            ("x-busbar-user", "Zo%C3%AB"),
            ("x-busbar-auth-method", "TLS"),
            ("x-busbar-role", "client"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        let ctx = Context::from_headers(&headers);
        assert_eq!(ctx.adapter_api.as_deref(), Some("1"));
        assert_eq!(ctx.request_id.as_deref(), Some("r1"));
        let node = ctx.node.unwrap();
        assert_eq!(node.name, "node 1");
        assert_eq!(node.labels["zone"], "a,b");
        assert_eq!(node.labels["ssd"], "");
        let client = ctx.client.unwrap();
        assert_eq!(
            (client.user.as_str(), client.role.as_deref()),
            ("Zoë", Some("client"))
        );
        let trace = ctx.trace.unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(Context::from_headers(&HeaderMap::new()), Context::default());
        // An invalid or repeated traceparent is no trace.
        headers.insert("traceparent", "00-nope".parse().unwrap());
        assert_eq!(Context::from_headers(&headers).trace, None);
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", good.parse().unwrap());
        headers.append("traceparent", good.parse().unwrap());
        assert_eq!(Context::from_headers(&headers).trace, None);
    }
}
