//! Test doubles for adapters: small Powerstrip v1 HTTP servers on 127.0.0.1, each answering
//! by a closure, recording every call. Real adapters (Flocker, Weave) need their own
//! infrastructure; these exist to misbehave on purpose (fail, stall, answer garbage) and to
//! make a hook's effect visible to the `docker` CLI.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// What a fake adapter answers.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn json(v: Value) -> Answer {
        Answer {
            status: 200,
            body: v.to_string(),
            delay: Duration::ZERO,
        }
    }
}

type Behaviour = dyn Fn(&Value) -> Answer + Send + Sync;

/// A running fake adapter; stops when dropped.
pub struct FakeAdapter {
    pub url: String,
    calls: Arc<Mutex<Vec<Value>>>,
    /// The HTTP headers of each call, in the order of `calls`.
    headers: Arc<Mutex<Vec<hyper::HeaderMap>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeAdapter {
    pub fn start(behaviour: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> FakeAdapter {
        FakeAdapter::start_with(behaviour, None, "127.0.0.1".parse().unwrap())
    }

    /// An adapter on `ip` (port chosen by the system): for agents in another network
    /// namespace, which reach the root namespace at the host's gateway address.
    pub fn start_on(
        ip: std::net::IpAddr,
        behaviour: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    ) -> FakeAdapter {
        FakeAdapter::start_with(behaviour, None, ip)
    }

    /// An `https://` adapter whose certificate (for 127.0.0.1) is `cert`/`key` (PEM files).
    pub fn start_tls(
        behaviour: impl Fn(&Value) -> Answer + Send + Sync + 'static,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> FakeAdapter {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        FakeAdapter::start_with(
            behaviour,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            "127.0.0.1".parse().unwrap(),
        )
    }

    fn start_with(
        behaviour: impl Fn(&Value) -> Answer + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
        ip: std::net::IpAddr,
    ) -> FakeAdapter {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/adapter", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(vec![]));
        let headers = Arc::new(Mutex::new(vec![]));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let recorded = (calls.clone(), headers.clone());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        runtime.spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (behaviour, recorded, tls) = (behaviour.clone(), recorded.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (behaviour, recorded) = (behaviour.clone(), recorded.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let payload: Value =
                                serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            {
                                let mut calls = recorded.0.lock().unwrap();
                                recorded.1.lock().unwrap().push(parts.headers);
                                calls.push(payload.clone());
                            }
                            let answer = behaviour(&payload);
                            tokio::time::sleep(answer.delay).await;
                            let rsp = Response::builder()
                                .status(answer.status)
                                .header("content-type", "application/json; charset=utf-8")
                                .body(Full::new(Bytes::from(answer.body)))
                                .unwrap();
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(io) = acceptor.accept(io).await {
                                let _ = http.serve_connection(TokioIo::new(io), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(io), svc).await;
                        }
                    }
                });
            }
        });
        FakeAdapter {
            url,
            calls,
            headers,
            connections,
            _runtime: runtime,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every payload received so far.
    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }

    /// The HTTP headers of every call so far, in order.
    pub fn headers(&self) -> Vec<hyper::HeaderMap> {
        self.headers.lock().unwrap().clone()
    }

    /// The `ClientRequest.Request` of every call of `kind` ("pre-hook" or "post-hook").
    pub fn requests(&self, kind: &str) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c["Type"] == kind)
            .map(|c| {
                c["ClientRequest"]["Request"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}

/// Passes everything through unchanged (Powerstrip's null adapter).
pub fn null(payload: &Value) -> Answer {
    if payload["Type"] == "pre-hook" {
        Answer::json(
            json!({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": payload["ClientRequest"]}),
        )
    } else {
        Answer::json(
            json!({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": payload["ServerResponse"]}),
        )
    }
}

/// A pre-hook that edits the JSON body (given as the Powerstrip string-in-JSON) with `edit`.
pub fn edit_body(
    edit: impl Fn(&mut Value) + Send + Sync + 'static,
) -> impl Fn(&Value) -> Answer + Send + Sync {
    move |payload| {
        let mut request = payload["ClientRequest"].clone();
        if let Some(body) = request["Body"].as_str() {
            let mut doc: Value = serde_json::from_str(body).unwrap();
            edit(&mut doc);
            request["Body"] = Value::String(doc.to_string());
        }
        Answer::json(json!({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}))
    }
}

/// A post-hook that edits the engine's JSON response with `edit(code, doc)`.
pub fn edit_response(
    edit: impl Fn(u64, &mut Value) + Send + Sync + 'static,
) -> impl Fn(&Value) -> Answer + Send + Sync {
    move |payload| {
        let mut response = payload["ServerResponse"].clone();
        let code = response["Code"].as_u64().unwrap_or(0);
        let mut doc: Value = serde_json::from_str(response["Body"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null);
        edit(code, &mut doc);
        response["Body"] = Value::String(doc.to_string());
        Answer::json(json!({"ModifiedServerResponse": response}))
    }
}

/// Appends `VAR=VALUE` to a create body's `Env`, or extends an existing `VAR=...`.
pub fn append_env(
    var: &'static str,
    value: &'static str,
) -> impl Fn(&Value) -> Answer + Send + Sync {
    edit_body(move |doc| {
        let env = doc["Env"].as_array().cloned().unwrap_or_default();
        let prefix = format!("{var}=");
        let mut found = false;
        let mut env: Vec<Value> = env
            .into_iter()
            .map(|e| match e.as_str() {
                Some(s) if s.starts_with(&prefix) => {
                    found = true;
                    Value::String(format!("{s}{value}"))
                }
                _ => e,
            })
            .collect();
        if !found {
            env.push(Value::String(format!("{var}={value}")));
        }
        doc["Env"] = Value::Array(env);
    })
}
