//! [`Client::watch`]: a stream of the changes to a key or a prefix, from now or from a past
//! revision, as a [`Watcher`] (to cancel it) and a [`WatchStream`] (to read it).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::request;
use crate::client::ResponseHeader;
use crate::gen::etcdserverpb as pb;
use crate::gen::etcdserverpb::watch_client::WatchClient;
use crate::gen::etcdserverpb::watch_request::RequestUnion;
use crate::gen::mvccpb;
use crate::kv::{KeyRange, KeyValue};
use crate::{Client, Error};

/// Requests waiting to be sent on a watch stream (cancel, progress): few at a time.
const REQUESTS: usize = 8;

impl Client {
    /// Watches the key (or with [`WatchOptions::with_prefix`], every key starting with it).
    ///
    /// Returns once etcd has answered that the watch is created; that answer
    /// ([`WatchResponse::created`]) is the stream's first message, and says
    /// [`WatchResponse::canceled`] if etcd refused the watch (a compacted start revision, a
    /// permission denied). The stream stays open while either half is kept.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<(Watcher, WatchStream), Error> {
        let create = options.unwrap_or_default().request(key.into());
        let token = self.token();
        let mut opened = self.open_watch(&create).await?;
        // etcd checks the token of a watch when it creates it, and answers an expired one
        // with a canceled watch rather than an error status: its reason says "invalid auth
        // token" (3.4: "rpc error: code = Unauthenticated desc = etcdserver: invalid auth
        // token"), or "permission denied" in versions that say nothing more precise.
        if self.can_refresh() && denied(&opened.2) {
            self.refresh_token(&token).await?;
            opened = self.open_watch(&create).await?;
        }
        let (requests, responses, first) = opened;
        let Some(first) = first else {
            return Err(Error::StreamClosed("watch"));
        };
        let watcher = Watcher {
            watch_id: first.watch_id,
            requests: requests.clone(),
        };
        let stream = WatchStream {
            first: Some(first),
            responses,
            _requests: requests,
        };
        Ok((watcher, stream))
    }

    async fn open_watch(
        &self,
        create: &pb::WatchCreateRequest,
    ) -> Result<
        (
            mpsc::Sender<pb::WatchRequest>,
            Streaming<pb::WatchResponse>,
            Option<pb::WatchResponse>,
        ),
        Error,
    > {
        self.call(|channel, token| {
            let create = pb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create.clone())),
            };
            async move {
                let (requests, queue) = mpsc::channel(REQUESTS);
                // Cannot fail: the queue is new, with room, and its receiver is right here.
                let _ = requests.try_send(create);
                let outgoing = request(ReceiverStream::new(queue), &token);
                let mut responses = WatchClient::new(channel)
                    .watch(outgoing)
                    .await?
                    .into_inner();
                let first = responses.message().await?;
                Ok((requests, responses, first))
            }
        })
        .await
    }
}

/// Whether the first answer refuses the watch for an invalid token or lack of permission.
fn denied(first: &Option<pb::WatchResponse>) -> bool {
    first.as_ref().is_some_and(|r| {
        r.canceled
            && (r.cancel_reason.contains("invalid auth token")
                || r.cancel_reason.contains("permission denied"))
    })
}

/// Options for [`Client::watch`].
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    range: KeyRange,
    request: pb::WatchCreateRequest,
}

impl WatchOptions {
    pub fn new() -> Self {
        WatchOptions::default()
    }

    /// Every key starting with the key (every key, for an empty one).
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }

    /// Every key from the key on.
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }

    /// The changes from this revision on (inclusive), past ones included; 0 (the default):
    /// from now on.
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.request.start_revision = revision;
        self
    }

    /// Events carry the key as it was before ([`Event::prev_kv`]).
    pub fn with_prev_key(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// etcd sends an empty answer now and then when nothing changes, with the current
    /// revision in its header.
    pub fn with_progress_notify(mut self) -> Self {
        self.request.progress_notify = true;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::WatchCreateRequest {
        let (key, range_end) = self.range.bounds(key);
        pb::WatchCreateRequest {
            key,
            range_end,
            ..self.request.clone()
        }
    }
}

/// The sending half of a watch: cancels it.
#[derive(Debug, Clone)]
pub struct Watcher {
    watch_id: i64,
    requests: mpsc::Sender<pb::WatchRequest>,
}

impl Watcher {
    /// The watch's ID on its stream (in each [`WatchResponse::watch_id`]).
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// Asks etcd to end the watch: the stream then gets a [`WatchResponse::canceled`] answer.
    pub async fn cancel(&self) -> Result<(), Error> {
        let cancel = RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: self.watch_id,
        });
        self.send(cancel).await
    }

    /// Asks etcd for an empty answer with the current revision in its header.
    pub async fn request_progress(&self) -> Result<(), Error> {
        self.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
            .await
    }

    async fn send(&self, request: RequestUnion) -> Result<(), Error> {
        let request = pb::WatchRequest {
            request_union: Some(request),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| Error::StreamClosed("watch"))
    }
}

/// The receiving half of a watch.
#[derive(Debug)]
pub struct WatchStream {
    /// etcd's answer to the creation, read by [`Client::watch`].
    first: Option<pb::WatchResponse>,
    responses: Streaming<pb::WatchResponse>,
    /// Keeps the request stream open when the [`Watcher`] is dropped: etcd ends the watch
    /// when the client closes its side.
    _requests: mpsc::Sender<pb::WatchRequest>,
}

impl WatchStream {
    /// The next answer: `Ok(None)` when etcd ended the stream, an error when the connection
    /// broke.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Error> {
        if let Some(first) = self.first.take() {
            return Ok(Some(WatchResponse::new(first)));
        }
        Ok(self.responses.message().await?.map(WatchResponse::new))
    }
}

/// One answer on a watch stream: events, or news about the watch itself.
#[derive(Debug, Clone)]
pub struct WatchResponse {
    header: Option<ResponseHeader>,
    events: Vec<Event>,
    response: pb::WatchResponse,
}

impl WatchResponse {
    fn new(mut response: pb::WatchResponse) -> Self {
        WatchResponse {
            header: response.header.take().map(ResponseHeader::new),
            events: std::mem::take(&mut response.events)
                .into_iter()
                .map(Event::new)
                .collect(),
            response,
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    pub fn watch_id(&self) -> i64 {
        self.response.watch_id
    }

    /// The answer to the watch's creation.
    pub fn created(&self) -> bool {
        self.response.created
    }

    /// The watch has ended: no more events come ([`Self::cancel_reason`] says why).
    pub fn canceled(&self) -> bool {
        self.response.canceled
    }

    pub fn cancel_reason(&self) -> &str {
        &self.response.cancel_reason
    }

    /// When the start revision was compacted away: the oldest revision left (the watch is
    /// canceled).
    pub fn compact_revision(&self) -> i64 {
        self.response.compact_revision
    }

    /// The changes, in revision order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change to a key.
#[derive(Debug, Clone)]
pub struct Event {
    event_type: EventType,
    kv: Option<KeyValue>,
    prev_kv: Option<KeyValue>,
}

impl Event {
    fn new(event: mvccpb::Event) -> Self {
        let event_type = match event.r#type() {
            mvccpb::event::EventType::Put => EventType::Put,
            mvccpb::event::EventType::Delete => EventType::Delete,
        };
        Event {
            event_type,
            kv: event.kv.map(KeyValue::new),
            prev_kv: event.prev_kv.map(KeyValue::new),
        }
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The key after the change; for a delete, the key with its deletion's mod revision and
    /// no value.
    pub fn kv(&self) -> Option<&KeyValue> {
        self.kv.as_ref()
    }

    /// The key before the change, with [`WatchOptions::with_prev_key`].
    pub fn prev_kv(&self) -> Option<&KeyValue> {
        self.prev_kv.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_options_build_the_create_request() {
        let r = WatchOptions::new()
            .with_prefix()
            .with_start_revision(10)
            .with_prev_key()
            .request(b"/busbar/chains/".to_vec());
        assert_eq!(r.key, b"/busbar/chains/");
        assert_eq!(r.range_end, b"/busbar/chains0");
        assert_eq!((r.start_revision, r.prev_kv), (10, true));
        let r = WatchOptions::new().request(b"k".to_vec());
        assert!(r.range_end.is_empty() && r.start_revision == 0 && !r.prev_kv);
    }

    #[test]
    fn answers_keep_their_events() {
        let r = WatchResponse::new(pb::WatchResponse {
            watch_id: 3,
            canceled: true,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            compact_revision: 5,
            events: vec![mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                kv: Some(mvccpb::KeyValue {
                    key: b"k".to_vec(),
                    ..Default::default()
                }),
                prev_kv: None,
            }],
            ..Default::default()
        });
        assert_eq!(
            (r.watch_id(), r.canceled(), r.compact_revision()),
            (3, true, 5)
        );
        assert!(r.cancel_reason().contains("compacted"));
        assert_eq!(r.events()[0].event_type(), EventType::Delete);
        assert_eq!(r.events()[0].kv().map(|kv| kv.key()), Some(&b"k"[..]));
        assert!(r.events()[0].prev_kv().is_none());
        assert!(denied(&Some(pb::WatchResponse {
            canceled: true,
            cancel_reason: "etcdserver: permission denied".into(),
            ..Default::default()
        })));
        assert!(denied(&Some(pb::WatchResponse {
            canceled: true,
            cancel_reason:
                "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token".into(),
            ..Default::default()
        })));
        assert!(!denied(&None));
    }
}
