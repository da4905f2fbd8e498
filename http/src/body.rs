//! The body of every request and response inside busbar, and the ways to make and read one.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response inside busbar.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body received by hyper, as a [`Body`].
pub fn incoming(body: hyper::body::Incoming) -> Body {
    fn boxed(e: hyper::Error) -> BoxError {
        Box::new(e)
    }
    body.map_err(boxed).boxed()
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Broken(BoxError),
}

/// Reads a whole body, refusing more than `limit` bytes.
///
/// A plain frame loop rather than `http_body_util::Limited`: with a boxed error type the latter
/// trips a rustc limitation (a higher-ranked `Send` bound) in spawned connection futures.
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Broken)?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(CollectError::TooLarge { limit });
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
