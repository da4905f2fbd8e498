//! The context of one request: its id and the tracing span every log line of it carries.

use std::time::Instant;

use http::header::HeaderName;
use http::Request;
use tracing::{field, info_span, Span};

/// The request id header: taken from the client when present, generated otherwise, and passed
/// on to the engine and to adapters so that every log can be joined.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-request context: its id and the tracing span that every log line of it carries.
pub struct RequestCtx {
    pub id: String,
    pub span: Span,
    pub started: Instant,
}

impl RequestCtx {
    pub fn new<B>(req: &Request<B>) -> Self {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let span = info_span!(
            "req",
            req.id = %id,
            method = %req.method(),
            path = req.uri().path(),
            node = field::Empty,
        );
        RequestCtx {
            id,
            span,
            started: Instant::now(),
        }
    }

    /// A context for a call made on behalf of another request (same id, same span).
    pub fn with_id(id: String, span: Span) -> Self {
        RequestCtx {
            id,
            span,
            started: Instant::now(),
        }
    }
}

/// A new request id: 16 hex digits, a random half drawn once per process and a counter, so
/// that ids are unique within a process and unlikely to repeat across processes, without a
/// system call for randomness on every request.
fn new_request_id() -> String {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let salt = *SALT.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32);
    format!(
        "{salt:08x}{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
