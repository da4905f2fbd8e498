//! [`FakeAdapter`]: a Powerstrip adapter that is a test double.
//!
//! It listens on `127.0.0.1:0`; a closure decides each reply from the call it received
//! ([`AdapterCall`]): the Powerstrip JSON of a pre- or post-hook, an HTTP error, garbage, an
//! answer that comes late or never, or a connection closed without an answer. Every call is
//! recorded. Ready-made behaviours: [`pass`], [`rewrite_body`], [`rewrite_response`],
//! [`refuse`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{seq, LIMIT};

/// One call an adapter received.
#[derive(Debug, Clone)]
pub struct AdapterCall {
    /// Its place in [`crate::seq`].
    pub seq: u64,
    /// The body as JSON (`Null` when it was not JSON).
    pub payload: Value,
    /// The body exactly as received.
    pub body: Bytes,
    pub headers: HeaderMap,
}

impl AdapterCall {
    /// `"pre-hook"` or `"post-hook"`.
    pub fn kind(&self) -> &str {
        self.payload["Type"].as_str().unwrap_or("")
    }

    /// `ClientRequest.Request`: the request target the hook was told about.
    pub fn request(&self) -> &str {
        self.payload["ClientRequest"]["Request"]
            .as_str()
            .unwrap_or("")
    }

    /// `ClientRequest.Body`, parsed from its Powerstrip string form (`None` for `null`).
    pub fn client_body(&self) -> Option<Value> {
        self.payload["ClientRequest"]["Body"]
            .as_str()
            .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.to_owned())))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a fake adapter answers.
#[derive(Debug, Clone)]
pub enum AdapterReply {
    /// `200` with this JSON.
    Json(Value),
    /// An HTTP error (or any status) with this body and content type.
    Status {
        status: u16,
        content_type: Option<String>,
        body: String,
    },
    /// `200 application/json` with a body that is not Powerstrip JSON.
    Garbage(String),
    /// The reply, after a delay (the adapter's task waits; `stop` cuts it short).
    Slow(Duration, Box<AdapterReply>),
    /// Closes the connection without an answer.
    HangUp,
}

type Behaviour = Arc<dyn Fn(&AdapterCall) -> AdapterReply + Send + Sync>;

/// A fake Powerstrip adapter; see the [module docs](self).
pub struct FakeAdapter {
    url: String,
    calls: Arc<Mutex<Vec<AdapterCall>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl FakeAdapter {
    /// Starts an adapter on `127.0.0.1:0` that answers each call with `behaviour(call)`.
    pub async fn start(
        behaviour: impl Fn(&AdapterCall) -> AdapterReply + Send + Sync + 'static,
    ) -> FakeAdapter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake adapter's port");
        let url = format!(
            "http://{}/adapter",
            listener.local_addr().expect("a bound address")
        );
        let behaviour: Behaviour = Arc::new(behaviour);
        let calls = Arc::new(Mutex::new(vec![]));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (recorded, stop, t) = (calls.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let io = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((io, _)) => io,
                        Err(_) => return,
                    },
                };
                let (behaviour, recorded, conn_stop) =
                    (behaviour.clone(), recorded.clone(), stop.clone());
                t.spawn(async move {
                    let call_stop = conn_stop.clone();
                    let svc = service_fn(move |req| {
                        answer(req, behaviour.clone(), recorded.clone(), call_stop.clone())
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.cancelled() => {}
                    }
                });
            }
        });
        FakeAdapter {
            url,
            calls,
            shutdown,
            tracker,
        }
    }

    /// The URL to put in a chain file.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<AdapterCall> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Stops accepting, cuts slow answers short, and joins every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(LIMIT, self.tracker.wait())
            .await
            .is_err()
        {
            panic!("the fake adapter's tasks did not end within {LIMIT:?} of its stop");
        }
    }

    /// An `http://` adapter URL on which nothing listens (a port bound and released).
    pub async fn unreachable_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a port to release");
        let addr = l.local_addr().expect("a bound address");
        drop(l);
        format!("http://{addr}/adapter")
    }
}

impl Drop for FakeAdapter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn answer(
    req: Request<Incoming>,
    behaviour: Behaviour,
    recorded: Arc<Mutex<Vec<AdapterCall>>>,
    stop: CancellationToken,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let call = AdapterCall {
        seq: seq::next(),
        payload: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        body: bytes.clone(),
        headers: parts.headers,
    };
    recorded.lock().expect("calls lock").push(call.clone());
    let mut reply = behaviour(&call);
    loop {
        let rsp = match reply {
            AdapterReply::Slow(delay, then) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(std::io::Error::other("stopped")),
                }
                reply = *then;
                continue;
            }
            AdapterReply::HangUp => return Err(std::io::Error::other("hang up")),
            AdapterReply::Json(v) => response(200, Some("application/json"), v.to_string()),
            AdapterReply::Garbage(text) => response(200, Some("application/json"), text),
            AdapterReply::Status {
                status,
                content_type,
                body,
            } => response(status, content_type.as_deref(), body),
        };
        return Ok(rsp);
    }
}

fn response(status: u16, content_type: Option<&str>, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    if let Some(ct) = content_type {
        rsp.headers_mut()
            .insert("content-type", ct.parse().expect("a valid content type"));
    }
    rsp
}

/// Protocol 2: passes pre- and post-hooks through unchanged, and answers unwind calls.
pub fn pass_v2(call: &AdapterCall) -> AdapterReply {
    match call.kind() {
        "pre-hook" => {
            let mut request = call.payload["ClientRequest"].clone();
            if let Some(m) = request.as_object_mut() {
                m.remove("Headers");
            }
            AdapterReply::Json(
                json!({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}),
            )
        }
        "post-hook" => {
            let mut response = call.payload["ServerResponse"].clone();
            if let Some(m) = response.as_object_mut() {
                m.remove("Headers");
            }
            AdapterReply::Json(
                json!({"PowerstripProtocolVersion": 2, "ModifiedServerResponse": response}),
            )
        }
        _ => AdapterReply::Json(json!({})),
    }
}

/// Protocol 2: a pre-hook that answers the client itself with `code` and this JSON body
/// (and a header `x-answered-by: fake-adapter`); the engine is never called.
pub fn answer_v2(
    code: u16,
    body: Value,
) -> impl Fn(&AdapterCall) -> AdapterReply + Send + Sync + 'static {
    move |call| match call.kind() {
        "pre-hook" => AdapterReply::Json(json!({
            "PowerstripProtocolVersion": 2,
            "Response": {
                "Code": code,
                "ContentType": "application/json",
                "Body": body.to_string(),
                "Headers": {"x-answered-by": ["fake-adapter"]},
            }
        })),
        _ => pass_v2(call),
    }
}

/// Passes everything through unchanged (Powerstrip's null adapter).
pub fn pass(call: &AdapterCall) -> AdapterReply {
    if call.kind() == "pre-hook" {
        AdapterReply::Json(
            json!({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": call.payload["ClientRequest"]}),
        )
    } else {
        AdapterReply::Json(
            json!({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": call.payload["ServerResponse"]}),
        )
    }
}

/// A pre-hook that edits the request's JSON body with `edit`.
pub fn rewrite_body(
    edit: impl Fn(&mut Value) + Send + Sync + 'static,
) -> impl Fn(&AdapterCall) -> AdapterReply + Send + Sync + 'static {
    move |call| {
        let mut request = call.payload["ClientRequest"].clone();
        if let Some(mut doc) = call.client_body() {
            edit(&mut doc);
            request["Body"] = Value::String(doc.to_string());
        }
        AdapterReply::Json(
            json!({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}),
        )
    }
}

/// A post-hook that edits the engine's JSON answer with `edit(code, doc)`; the code it leaves
/// in `code` is the new status.
pub fn rewrite_response(
    edit: impl Fn(&mut u64, &mut Value) + Send + Sync + 'static,
) -> impl Fn(&AdapterCall) -> AdapterReply + Send + Sync + 'static {
    move |call| {
        let server = &call.payload["ServerResponse"];
        let mut code = server["Code"].as_u64().unwrap_or(0);
        let mut doc: Value =
            serde_json::from_str(server["Body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        edit(&mut code, &mut doc);
        AdapterReply::Json(json!({
            "PowerstripProtocolVersion": 1,
            "ModifiedServerResponse": {
                "ContentType": "application/json",
                "Body": doc.to_string(),
                "Code": code,
            }
        }))
    }
}

/// Refuses every call with `status` and this JSON body.
pub fn refuse(
    status: u16,
    body: &str,
) -> impl Fn(&AdapterCall) -> AdapterReply + Send + Sync + 'static {
    let body = body.to_owned();
    move |_| AdapterReply::Status {
        status,
        content_type: Some("application/json".into()),
        body: body.clone(),
    }
}
