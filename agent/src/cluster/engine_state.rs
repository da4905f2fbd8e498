//! What the agent keeps about its engine for the gateways' health probes (`Describe`), so that
//! a probe is answered at once, never queued behind the engine's real load.
//!
//! - **Health** comes from the engine's cheapest call, `GET /_ping`, sent every
//!   [`PING_EVERY`] with a [`PING_TIMEOUT`] ([`EngineState::run_pings`]). The engine is
//!   *unreachable* when a ping cannot connect or is answered with an error (at once), or when
//!   no ping has succeeded for [`ENGINE_STALL`] (an engine that accepts connections but no
//!   longer answers). A slow ping alone is a busy engine, not a dead one.
//! - **Documents** (the engine's `/version` and `/info`, and what the node's containers
//!   reserve) are fetched in the background, one fetch at a time, when a probe finds them older
//!   than it wants ([`EngineState::documents`]). The probe waits for that fetch only as long as
//!   it says (`wait_ms`), then takes the newest documents there are: a fetch that is slow
//!   (dockerd 20.10's `/info` blocks for seconds behind a pull that cannot reach its registry,
//!   and everything is slower under load) delays the documents, never the answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_api::path::encode_segment;
use busbar_http::body::empty;
use futures_util::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::proxy::Proxy;

/// How often the engine is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// How long one ping may take before it counts as unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the engine may leave every ping unanswered (while accepting connections) before it
/// is reported unreachable.
pub const ENGINE_STALL: Duration = Duration::from_secs(5);
/// The longest a fetch of the documents may take; past it the fetch fails (and the next probe
/// that wants newer documents starts another).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many new containers a fetch inspects at once.
const INSPECTS_AT_ONCE: usize = 4;

/// The engine's health, as the pings found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// No ping has finished yet.
    Unknown,
    Reachable,
    Unreachable(String),
}

/// The engine's documents, as one fetch found them.
#[derive(Debug, Default)]
pub struct Documents {
    pub version: Vec<u8>,
    pub info: Vec<u8>,
    /// `(HostConfig.Memory, HostConfig.NanoCpus)` summed over every container.
    pub reserved: (i64, i64),
}

/// The fetches of the documents so far.
#[derive(Debug, Clone)]
struct Fetched {
    /// When the last fetch that ended (with documents or not) began.
    ended_began: Option<Instant>,
    /// The newest documents and when their fetch began.
    docs: Option<(Arc<Documents>, Instant)>,
}

/// What [`EngineState::documents`] found.
pub struct Answer {
    pub docs: Option<Arc<Documents>>,
    /// The documents' fetch began before the request arrived.
    pub cached: bool,
    /// How old the documents are (since their fetch began).
    pub age: Duration,
}

/// The engine's health and documents, kept for `Describe`.
pub struct EngineState {
    proxy: Arc<Proxy>,
    health: watch::Sender<Health>,
    fetched: watch::Sender<Fetched>,
    /// Asks the fetcher for one more fetch.
    wanted: Notify,
    /// Each container's reservation by ID: the engine's list does not carry them, so a
    /// container is inspected once, when first seen.
    reservations: Mutex<HashMap<String, (i64, i64)>>,
}

impl EngineState {
    pub fn new(proxy: Arc<Proxy>) -> Arc<EngineState> {
        Arc::new(EngineState {
            proxy,
            health: watch::channel(Health::Unknown).0,
            fetched: watch::channel(Fetched {
                ended_began: None,
                docs: None,
            })
            .0,
            wanted: Notify::new(),
            reservations: Mutex::default(),
        })
    }

    /// Pings the engine and fetches documents when asked, until `shutdown`.
    pub fn spawn(self: &Arc<Self>, shutdown: &CancellationToken) {
        let (pings, fetches) = (self.clone(), self.clone());
        let (s1, s2) = (shutdown.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = s1.cancelled() => {}
                _ = pings.run_pings() => {}
            }
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = s2.cancelled() => {}
                _ = fetches.run_fetches() => {}
            }
        });
    }

    /// The engine's health, waiting at most `wait` for the first ping to finish.
    pub async fn health(&self, wait: Duration) -> Health {
        let mut rx = self.health.subscribe();
        let known = tokio::time::timeout(wait, rx.wait_for(|h| *h != Health::Unknown)).await;
        match known {
            Ok(Ok(h)) => h.clone(),
            _ => Health::Unknown,
        }
    }

    /// The documents for a request that arrived at `arrived`: those of a fetch begun at most
    /// `max_age` before it if there are any, else those of a fetch started now (or one already
    /// under way that began late enough), waited for at most `wait`, else the newest there are.
    pub async fn documents(&self, arrived: Instant, max_age: Duration, wait: Duration) -> Answer {
        let oldest = arrived.checked_sub(max_age).unwrap_or(arrived);
        let fresh = |f: &Fetched| f.docs.as_ref().is_some_and(|(_, at)| *at >= oldest);
        let mut rx = self.fetched.subscribe();
        if !fresh(&rx.borrow()) {
            self.wanted.notify_one();
            // A fetch that began late enough and failed ends the wait too.
            let _ = tokio::time::timeout(
                wait,
                rx.wait_for(|f| fresh(f) || f.ended_began.is_some_and(|b| b >= oldest)),
            )
            .await;
        }
        let f = rx.borrow().clone();
        let now = Instant::now();
        match f.docs {
            Some((docs, at)) => Answer {
                docs: Some(docs),
                cached: at < arrived,
                age: now.saturating_duration_since(at),
            },
            None => Answer {
                docs: None,
                cached: true,
                age: Duration::ZERO,
            },
        }
    }

    async fn run_pings(&self) {
        let mut last_ok: Option<Instant> = None;
        let started = Instant::now();
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = tokio::time::timeout(PING_TIMEOUT, self.ping()).await;
            let now = Instant::now();
            let health = match result {
                Ok(Ok(())) => {
                    last_ok = Some(now);
                    Health::Reachable
                }
                Ok(Err(e)) => Health::Unreachable(e),
                Err(_) => {
                    // Busy, or stalled: a stall once no ping has succeeded for a while.
                    let silent_for = now.saturating_duration_since(last_ok.unwrap_or(started));
                    if silent_for >= ENGINE_STALL {
                        Health::Unreachable(format!(
                            "the engine has not answered /_ping for {}s",
                            silent_for.as_secs()
                        ))
                    } else {
                        debug!(?PING_TIMEOUT, "engine ping unanswered in time");
                        continue;
                    }
                }
            };
            self.health.send_if_modified(|h| {
                if *h == health {
                    return false;
                }
                match &health {
                    Health::Reachable if *h != Health::Unknown => info!("engine reachable again"),
                    Health::Unreachable(e) => warn!(error = %e, "engine unreachable"),
                    _ => {}
                }
                *h = health.clone();
                true
            });
        }
    }

    async fn ping(&self) -> Result<(), String> {
        let (status, _) = self.get("/_ping").await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("/_ping: {status}"))
        }
    }

    async fn run_fetches(&self) {
        loop {
            self.wanted.notified().await;
            let began = Instant::now();
            let docs = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
                Ok(Ok(docs)) => Some((Arc::new(docs), began)),
                Ok(Err(e)) => {
                    debug!(error = %e, "fetching the engine's documents failed");
                    None
                }
                Err(_) => {
                    warn!(?FETCH_TIMEOUT, "fetching the engine's documents timed out");
                    None
                }
            };
            self.fetched.send_modify(|f| {
                f.ended_began = Some(began);
                if docs.is_some() {
                    f.docs = docs;
                }
            });
        }
    }

    async fn fetch(&self) -> Result<Documents, String> {
        let version = self.get_ok("/version").await?;
        let info = self.get_ok("/info").await?;
        let reserved = self.reserved().await;
        Ok(Documents {
            version,
            info,
            reserved,
        })
    }

    /// What the node's containers, running or not (as Swarm counted), have reserved: the sums
    /// of their `HostConfig.Memory` and `HostConfig.NanoCpus`. Zero when the list fails; a
    /// container that cannot be inspected (removed meanwhile) counts for nothing.
    async fn reserved(&self) -> (i64, i64) {
        let Ok(list) = self.get_ok("/containers/json?all=1").await else {
            return (0, 0);
        };
        let ids: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&list)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_owned))
            .collect();
        let new: Vec<String> = {
            let mut known = self.reservations.lock().expect("reservations lock");
            known.retain(|id, _| ids.contains(id));
            ids.iter()
                .filter(|id| !known.contains_key(*id))
                .cloned()
                .collect()
        };
        // A few at a time: after a burst of creates there are many.
        let inspects = futures_util::stream::iter(new)
            .map(|id| async move {
                // The ID is the engine's: escaped, so that no answer makes the path invalid.
                let path = format!("/containers/{}/json", encode_segment(&id));
                let doc = self.get_ok(&path).await.ok()?;
                let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap_or_default();
                let field = |f: &str| doc["HostConfig"][f].as_i64().unwrap_or(0).max(0);
                Some((id, (field("Memory"), field("NanoCpus"))))
            })
            .buffer_unordered(INSPECTS_AT_ONCE);
        futures_util::pin_mut!(inspects);
        while let Some(found) = inspects.next().await {
            if let Some((id, reservation)) = found {
                self.reservations
                    .lock()
                    .expect("reservations lock")
                    .insert(id, reservation);
            }
        }
        let known = self.reservations.lock().expect("reservations lock");
        // Saturating: engines report what they like, and an overflow must not panic.
        known.values().fold((0, 0), |(m, c): (i64, i64), (dm, dc)| {
            (m.saturating_add(*dm), c.saturating_add(*dc))
        })
    }

    async fn get_ok(&self, path: &str) -> Result<Vec<u8>, String> {
        let (status, body) = self.get(path).await?;
        if !status.is_success() {
            return Err(format!("{path}: {status}"));
        }
        Ok(body)
    }

    /// A GET straight to the engine (no adapter chains: this is the agent asking, not a client).
    async fn get(&self, path: &str) -> Result<(http::StatusCode, Vec<u8>), String> {
        let req = Request::get(path)
            .body(empty())
            .map_err(|e| format!("{path}: {e}"))?;
        let rsp = self
            .proxy
            .engine()
            .send(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        Ok((status, body.to_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use busbar_engine::{EngineClient, EngineOptions};
    use hyper_util::rt::TokioIo;

    use tokio::net::TcpListener;

    use super::*;

    /// An engine that lists `list` and answers every inspect with `inspect`.
    async fn engine(list: &'static str, inspect: &'static str) -> EngineClient {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let body = if req.uri().path() == "/containers/json" {
                            list
                        } else {
                            inspect
                        };
                        let rsp = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        async move { Ok::<_, Infallible>(rsp) }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        let addr = format!("tcp://{addr}").parse().expect("an engine address");
        EngineClient::new(addr, EngineOptions::default())
    }

    #[tokio::test]
    async fn reservations_survive_any_engine_answer() {
        // IDs that are not path-safe made an invalid request, and its `expect` panicked; sums
        // past i64::MAX overflowed.
        let engine = engine(
            r#"[{"Id": "a b"}, {"Id": "c"}, {"Id": "caf\u00e9/?#"}, {"Id": 5}, {}]"#,
            r#"{"HostConfig": {"Memory": 9223372036854775807, "NanoCpus": 9223372036854775000}}"#,
        )
        .await;
        let state = EngineState::new(Arc::new(Proxy::new(engine)));
        assert_eq!(state.reserved().await, (i64::MAX, i64::MAX));
    }
}
