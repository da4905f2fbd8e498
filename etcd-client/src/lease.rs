//! Leases: [`Client::lease_grant`], [`Client::lease_revoke`],
//! [`Client::lease_time_to_live`], and [`Client::lease_keep_alive`], a stream that renews a
//! lease each time its [`LeaseKeeper`] asks.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::request;
use crate::client::ResponseHeader;
use crate::gen::etcdserverpb as pb;
use crate::gen::etcdserverpb::lease_client::LeaseClient;
use crate::{Client, Error};

/// Keep-alive requests waiting to be sent: the keeper sends one at a time.
const REQUESTS: usize = 4;

impl Client {
    /// A new lease of `ttl` seconds (etcd may grant more: see [`LeaseGrantResponse::ttl`]).
    pub async fn lease_grant(
        &self,
        ttl: i64,
        options: Option<LeaseGrantOptions>,
    ) -> Result<LeaseGrantResponse, Error> {
        let grant = pb::LeaseGrantRequest {
            ttl,
            id: options.map_or(0, |o| o.id),
        };
        let rsp = self
            .call(|channel, token| {
                let grant = request(grant, &token);
                async move { LeaseClient::new(channel).lease_grant(grant).await }
            })
            .await?
            .into_inner();
        Ok(LeaseGrantResponse {
            header: rsp.header.map(ResponseHeader::new),
            id: rsp.id,
            ttl: rsp.ttl,
        })
    }

    /// Ends the lease now: the keys attached to it are deleted.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let rsp = self
            .call(|channel, token| {
                let revoke = request(pb::LeaseRevokeRequest { id }, &token);
                async move { LeaseClient::new(channel).lease_revoke(revoke).await }
            })
            .await?
            .into_inner();
        Ok(LeaseRevokeResponse {
            header: rsp.header.map(ResponseHeader::new),
        })
    }

    /// The lease's remaining time (and with [`LeaseTimeToLiveOptions::with_keys`], its keys).
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        options: Option<LeaseTimeToLiveOptions>,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let keys = options.is_some_and(|o| o.keys);
        let rsp = self
            .call(|channel, token| {
                let ask = request(pb::LeaseTimeToLiveRequest { id, keys }, &token);
                async move { LeaseClient::new(channel).lease_time_to_live(ask).await }
            })
            .await?
            .into_inner();
        Ok(LeaseTimeToLiveResponse {
            header: rsp.header.map(ResponseHeader::new),
            id: rsp.id,
            ttl: rsp.ttl,
            granted_ttl: rsp.granted_ttl,
            keys: rsp.keys,
        })
    }

    /// Opens a keep-alive stream for the lease, renewing it once (that answer is read here:
    /// [`Error::LeaseNotFound`] if the lease is gone). Then each
    /// [`LeaseKeeper::keep_alive`] renews it again, and its answer comes on the
    /// [`LeaseKeepAliveStream`]. The stream stays open while either half is kept.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), Error> {
        let (requests, responses, first) = self
            .call(|channel, token| async move {
                let (requests, queue) = mpsc::channel(REQUESTS);
                // Cannot fail: the queue is new, with room, and its receiver is right here.
                let _ = requests.try_send(pb::LeaseKeepAliveRequest { id });
                let outgoing = request(ReceiverStream::new(queue), &token);
                let mut responses = LeaseClient::new(channel)
                    .lease_keep_alive(outgoing)
                    .await?
                    .into_inner();
                let first = responses.message().await?;
                Ok((requests, responses, first))
            })
            .await?;
        match first {
            Some(first) if first.ttl > 0 => Ok((
                LeaseKeeper {
                    id,
                    requests: requests.clone(),
                },
                LeaseKeepAliveStream {
                    responses,
                    _requests: requests,
                },
            )),
            Some(_) => Err(Error::LeaseNotFound(id)),
            None => Err(Error::StreamClosed("lease keep-alive")),
        }
    }
}

/// Options for [`Client::lease_grant`].
#[derive(Debug, Clone, Default)]
pub struct LeaseGrantOptions {
    id: i64,
}

impl LeaseGrantOptions {
    pub fn new() -> Self {
        LeaseGrantOptions::default()
    }

    /// The lease's ID, instead of one etcd chooses.
    pub fn with_id(mut self, id: i64) -> Self {
        self.id = id;
        self
    }
}

/// The answer to [`Client::lease_grant`].
#[derive(Debug, Clone)]
pub struct LeaseGrantResponse {
    header: Option<ResponseHeader>,
    id: i64,
    ttl: i64,
}

impl LeaseGrantResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// The lease's ID.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The time to live etcd granted, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

/// The answer to [`Client::lease_revoke`].
#[derive(Debug, Clone)]
pub struct LeaseRevokeResponse {
    header: Option<ResponseHeader>,
}

impl LeaseRevokeResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
}

/// Options for [`Client::lease_time_to_live`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseTimeToLiveOptions {
    keys: bool,
}

impl LeaseTimeToLiveOptions {
    pub fn new() -> Self {
        LeaseTimeToLiveOptions::default()
    }

    /// Answers with the keys attached to the lease too.
    pub fn with_keys(mut self) -> Self {
        self.keys = true;
        self
    }
}

/// The answer to [`Client::lease_time_to_live`].
#[derive(Debug, Clone)]
pub struct LeaseTimeToLiveResponse {
    header: Option<ResponseHeader>,
    id: i64,
    ttl: i64,
    granted_ttl: i64,
    keys: Vec<Vec<u8>>,
}

impl LeaseTimeToLiveResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Seconds left; -1 when the lease does not exist (any more).
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// The time to live granted, in seconds.
    pub fn granted_ttl(&self) -> i64 {
        self.granted_ttl
    }

    /// The keys attached, with [`LeaseTimeToLiveOptions::with_keys`].
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }
}

/// The sending half of a keep-alive stream.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    id: i64,
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// The lease kept alive.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Asks etcd to renew the lease; the answer comes on the [`LeaseKeepAliveStream`].
    pub async fn keep_alive(&self) -> Result<(), Error> {
        self.requests
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| Error::StreamClosed("lease keep-alive"))
    }
}

/// The receiving half of a keep-alive stream.
#[derive(Debug)]
pub struct LeaseKeepAliveStream {
    responses: Streaming<pb::LeaseKeepAliveResponse>,
    /// Keeps the request stream open when the [`LeaseKeeper`] is dropped: etcd ends the
    /// stream when the client closes its side.
    _requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
}

impl LeaseKeepAliveStream {
    /// The next answer: `Ok(None)` when etcd ended the stream, an error when the connection
    /// broke.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>, Error> {
        let answer = self.responses.message().await?;
        Ok(answer.map(|r| LeaseKeepAliveResponse {
            header: r.header.map(ResponseHeader::new),
            id: r.id,
            ttl: r.ttl,
        }))
    }
}

/// etcd's answer to one keep-alive.
#[derive(Debug, Clone)]
pub struct LeaseKeepAliveResponse {
    header: Option<ResponseHeader>,
    id: i64,
    ttl: i64,
}

impl LeaseKeepAliveResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The lease's time to live from now, in seconds; 0 when the lease is gone (expired or
    /// revoked).
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_options() {
        assert!(LeaseTimeToLiveOptions::new().with_keys().keys);
        assert!(!LeaseTimeToLiveOptions::default().keys);
        assert_eq!(LeaseGrantOptions::new().with_id(7).id, 7);
    }
}
