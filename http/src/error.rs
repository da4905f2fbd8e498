//! The one place that turns a busbar error into a response a Docker client understands:
//! `{"message": "..."}` with a status that says whose fault it was. The docker CLI prints the
//! message as `Error response from daemon: ...`, so every message names what is at fault.

use http::{header, Response, StatusCode};

use crate::body::{full, Body};

/// Anything busbar can fail with on the request path, with the status it maps to. Each crate
/// implements it for its own errors (the engine client, the hooks, the hop); the status says
/// whose fault it was: 4xx the client's, 502/503/504 an upstream's (engine, agent, adapter).
pub trait DockerError: std::fmt::Display {
    fn status(&self) -> StatusCode;
}

/// `{"message": "..."}` with the error's status.
pub fn error(err: &dyn DockerError) -> Response<Body> {
    message(err.status(), &err.to_string())
}

/// `outer: inner: innermost` from an error's source chain (hyper's own messages are terse:
/// the useful part, such as "connection refused", is in the sources).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![];
    let mut cur = e.source();
    while let Some(err) = cur {
        parts.push(err.to_string());
        cur = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// A Docker-style error response with an explicit status.
pub fn message(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("a status, two valid headers and a body make a valid response")
}
