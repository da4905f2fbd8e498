//! The local Docker engine (`--docker`, the node's own socket): inspecting containers, the
//! `busbar` network, and the event stream. The adapter runs on the node beside its engine
//! and calls it directly: these calls run no chain (the agent never sees them).

use std::net::Ipv4Addr;
use std::time::Duration;

use busbar_engine::{EngineAddr, EngineClient, EngineError, EngineOptions};
use bytes::{Buf, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The API version the adapter speaks (dockerd 20.10 and every later one serve it).
const API: &str = "/v1.41";
/// How long one call to the engine may take (the event stream excepted).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read whole.
const MAX_ANSWER: usize = 16 << 20;

/// Why a call to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the Docker engine at {engine}: no answer to {what} within {after:?}")]
    Timeout {
        engine: EngineAddr,
        what: String,
        after: Duration,
    },
    #[error("the Docker engine at {engine}: {what}: {status}: {message}")]
    Status {
        engine: EngineAddr,
        what: String,
        status: StatusCode,
        message: String,
    },
    #[error("the Docker engine at {engine}: {what}: {reason}")]
    Body {
        engine: EngineAddr,
        what: String,
        reason: String,
    },
}

/// What the adapter needs to know of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub running: bool,
    pub pid: u32,
    /// `busbar.net.address`.
    pub address: Option<Ipv4Addr>,
    /// `busbar.net.claim`.
    pub claim: Option<String>,
}

impl Container {
    /// From `GET /containers/{id}/json`; `None` when it does not carry `busbar.net=cluster`.
    pub fn from_inspect(doc: &Value) -> Option<Container> {
        let labels = &doc["Config"]["Labels"];
        if labels[crate::LABEL] != crate::LABEL_VALUE {
            return None;
        }
        Some(Container {
            id: doc["Id"].as_str()?.to_owned(),
            name: doc["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_owned(),
            running: doc["State"]["Running"].as_bool().unwrap_or(false),
            pid: doc["State"]["Pid"].as_u64().unwrap_or(0) as u32,
            address: labels[crate::ADDRESS_LABEL]
                .as_str()
                .and_then(|a| a.parse().ok()),
            claim: labels[crate::CLAIM_LABEL].as_str().map(str::to_owned),
        })
    }
}

/// One container event of the engine's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: String,
    pub id: String,
    pub name: String,
    pub address: Option<Ipv4Addr>,
    pub claim: Option<String>,
}

impl Event {
    /// From one line of `GET /events`.
    pub fn from_json(doc: &Value) -> Option<Event> {
        if doc["Type"] != "container" {
            return None;
        }
        let attrs = &doc["Actor"]["Attributes"];
        Some(Event {
            action: doc["Action"].as_str()?.to_owned(),
            id: doc["Actor"]["ID"].as_str().unwrap_or("").to_owned(),
            name: attrs["name"].as_str().unwrap_or("").to_owned(),
            address: attrs[crate::ADDRESS_LABEL]
                .as_str()
                .and_then(|a| a.parse().ok()),
            claim: attrs[crate::CLAIM_LABEL].as_str().map(str::to_owned),
        })
    }
}

/// The node's engine.
#[derive(Clone)]
pub struct Docker {
    engine: EngineClient,
}

impl Docker {
    pub fn new(addr: EngineAddr) -> Docker {
        Docker {
            engine: EngineClient::new(addr, EngineOptions::default()),
        }
    }

    pub fn addr(&self) -> &EngineAddr {
        self.engine.addr()
    }

    /// `method path` with a JSON body; the answer's status and JSON (`null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), DockerError> {
        let what = format!("{method} {path}");
        let body = body.map_or_else(busbar_http::body::empty, |b| {
            busbar_http::body::full(b.to_string())
        });
        let req = Request::builder()
            .method(method)
            .uri(format!("{API}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("a valid request");
        let timeout = |what: String| DockerError::Timeout {
            engine: self.addr().clone(),
            what,
            after: CALL_TIMEOUT,
        };
        let read = async {
            let rsp = self.engine.send(req).await?;
            let status = rsp.status();
            let bytes = http_body_util::Limited::new(rsp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| DockerError::Body {
                    engine: self.addr().clone(),
                    what: what.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            let doc = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            Ok::<_, DockerError>((status, doc))
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| timeout(what.clone()))?
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DockerError> {
        let (status, doc) = self.call(method.clone(), path, body).await?;
        if !status.is_success() {
            return Err(DockerError::Status {
                engine: self.addr().clone(),
                what: format!("{method} {path}"),
                status,
                message: doc["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(doc)
    }

    /// The container `id` (or name), if it exists and carries the label.
    pub async fn labelled(&self, id: &str) -> Result<Option<Container>, DockerError> {
        let path = format!(
            "/containers/{}/json",
            busbar_adapter::gateway::encode_segment(id)
        );
        let (status, doc) = self.call(Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(DockerError::Status {
                engine: self.addr().clone(),
                what: format!("GET {path}"),
                status,
                message: doc["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(Container::from_inspect(&doc))
    }

    /// Every container on the node carrying the label, running or not.
    pub async fn all_labelled(&self) -> Result<Vec<Container>, DockerError> {
        let filters = json!({"label": [format!("{}={}", crate::LABEL, crate::LABEL_VALUE)]});
        let path = format!(
            "/containers/json?all=1&filters={}",
            busbar_adapter::gateway::encode_segment(&filters.to_string())
        );
        let list = self.ok(Method::GET, &path, None).await?;
        let mut out = vec![];
        for c in list.as_array().into_iter().flatten() {
            let Some(id) = c["Id"].as_str() else { continue };
            if let Some(c) = self.labelled(id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The network `name`, if it exists.
    pub async fn network(&self, name: &str) -> Result<Option<Value>, DockerError> {
        let path = format!(
            "/networks/{}",
            busbar_adapter::gateway::encode_segment(name)
        );
        let (status, doc) = self.call(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(doc)),
            status => Err(DockerError::Status {
                engine: self.addr().clone(),
                what: format!("GET {path}"),
                status,
                message: doc["message"].as_str().unwrap_or("").to_owned(),
            }),
        }
    }

    /// Creates a network from its `POST /networks/create` document.
    pub async fn create_network(&self, doc: &Value) -> Result<(), DockerError> {
        self.ok(Method::POST, "/networks/create", Some(doc)).await?;
        Ok(())
    }

    /// Streams the engine's container events carrying the label into `tx`, until the stream
    /// ends or breaks (the caller reconnects) or `tx` closes.
    pub async fn events(&self, tx: &mpsc::Sender<Event>) -> Result<(), DockerError> {
        let filters = json!({
            "type": ["container"],
            "label": [format!("{}={}", crate::LABEL, crate::LABEL_VALUE)],
        });
        let path = format!(
            "{API}/events?filters={}",
            busbar_adapter::gateway::encode_segment(&filters.to_string())
        );
        let req = Request::builder()
            .uri(path.clone())
            .body(busbar_http::body::empty())
            .expect("a valid request");
        let rsp = tokio::time::timeout(CALL_TIMEOUT, self.engine.send(req))
            .await
            .map_err(|_| DockerError::Timeout {
                engine: self.addr().clone(),
                what: "GET /events".into(),
                after: CALL_TIMEOUT,
            })??;
        if !rsp.status().is_success() {
            return Err(DockerError::Status {
                engine: self.addr().clone(),
                what: "GET /events".into(),
                status: rsp.status(),
                message: String::new(),
            });
        }
        let mut body = rsp.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| DockerError::Body {
                engine: self.addr().clone(),
                what: "GET /events".into(),
                reason: e.to_string(),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            if buf.len() > MAX_ANSWER {
                buf.clear();
            }
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(end + 1);
                let event = serde_json::from_slice::<Value>(&line[..end])
                    .ok()
                    .as_ref()
                    .and_then(Event::from_json);
                if let Some(event) = event {
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if buf.has_remaining() && buf.len() > MAX_ANSWER {
                buf.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_labelled_container_and_ignores_others() {
        let doc = json!({
            "Id": "abc", "Name": "/web",
            "State": {"Running": true, "Pid": 42},
            "Config": {"Labels": {
                "busbar.net": "cluster",
                "busbar.net.address": "10.232.1.5",
                "busbar.net.claim": "k1",
            }},
        });
        let c = Container::from_inspect(&doc).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.address, Some(Ipv4Addr::new(10, 232, 1, 5)));
        assert_eq!(
            (c.running, c.pid, c.claim.as_deref()),
            (true, 42, Some("k1"))
        );
        let plain = json!({"Id": "x", "Config": {"Labels": {"busbar.net": "other"}}});
        assert_eq!(Container::from_inspect(&plain), None);
        assert_eq!(
            Container::from_inspect(&json!({"Id": "x", "Config": {}})),
            None
        );
    }

    #[test]
    fn reads_an_event_line() {
        let doc = json!({
            "Type": "container", "Action": "destroy",
            "Actor": {"ID": "abc", "Attributes": {
                "name": "web", "busbar.net": "cluster",
                "busbar.net.address": "10.232.1.5", "busbar.net.claim": "k1",
            }},
        });
        let e = Event::from_json(&doc).unwrap();
        assert_eq!(e.action, "destroy");
        assert_eq!(e.address, Some(Ipv4Addr::new(10, 232, 1, 5)));
        assert_eq!(Event::from_json(&json!({"Type": "network"})), None);
    }
}
