//! [`Client`]: the endpoints' channels, the authentication token, and how every call is
//! made: on the endpoint in use, moving on to the next one when that one cannot be reached,
//! and authenticating again once when etcd says the token expired. The calls themselves are
//! in [`crate::kv`], [`crate::watch`], [`crate::lease`] and here ([`Client::status`]).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::debug;

use crate::gen::etcdserverpb as pb;
use crate::gen::etcdserverpb::auth_client::AuthClient;
use crate::gen::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::options::{endpoint_uri, lazy_channel};
use crate::{ConnectOptions, Error};

/// The authentication token sent with each call, if the client has a user.
pub(crate) type Token = Option<AsciiMetadataValue>;

/// The metadata key etcd reads the token from.
const TOKEN_KEY: &str = "token";

/// An etcd client. Cheap to clone: clones share the connections and the token.
///
/// No call has a timeout of its own (give one with `tokio::time::timeout`); streams end when
/// the connection dies, detected with [`ConnectOptions::with_keep_alive`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Member>,
    /// The index in `members` of the endpoint calls go to first.
    current: AtomicUsize,
    user: Option<(String, String)>,
    auto_token_refresh: bool,
    token: RwLock<Token>,
    /// Held while authenticating, so that calls which all find the token expired
    /// authenticate once.
    refreshing: tokio::sync::Mutex<()>,
}

struct Member {
    uri: String,
    channel: Channel,
}

impl Client {
    /// A client for the etcd cluster at `endpoints` (`http://HOST:PORT`, `https://HOST:PORT`
    /// or `HOST:PORT`, see [`crate::options`]).
    ///
    /// Nothing is dialled here (each endpoint connects on first use, and again after a
    /// failure), except with a user: then the client authenticates at once, so that a wrong
    /// password, or an etcd that cannot be reached, fails here.
    ///
    /// Calls go to one endpoint; when it cannot be reached, to the next one, which they keep
    /// going to. Give [`ConnectOptions::with_connect_timeout`] so that an endpoint that drops
    /// packets is given up on in time, not after the system's TCP timeout.
    pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(
        endpoints: S,
        options: Option<ConnectOptions>,
    ) -> Result<Client, Error> {
        let options = options.unwrap_or_default();
        let endpoints = endpoints.as_ref();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgs("no etcd endpoint given".into()));
        }
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = endpoint_uri(endpoint.as_ref(), options.tls.is_some())?;
            let channel = lazy_channel(&uri, &options)?;
            members.push(Member { uri, channel });
        }
        let client = Client {
            inner: Arc::new(Inner {
                members,
                current: AtomicUsize::new(0),
                user: options.user,
                auto_token_refresh: options.auto_token_refresh,
                token: RwLock::new(None),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        };
        client.refresh_token(&None).await?;
        Ok(client)
    }

    /// The status of the etcd member that answers.
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        let rsp = self
            .call(|channel, token| async move {
                MaintenanceClient::new(channel)
                    .status(request(pb::StatusRequest {}, &token))
                    .await
            })
            .await?;
        Ok(StatusResponse::new(rsp.into_inner()))
    }

    /// Runs `call` with a channel and the current token: on the endpoint in use, or on the
    /// next ones in turn while an endpoint cannot be reached (the request was never sent, so
    /// trying it elsewhere is safe); once more after authenticating again when etcd says the
    /// token is invalid (expired).
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Channel, Token) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let token = self.token();
        match self.on_any_member(&call, &token).await {
            Err(status) if self.token_expired(&status) => {
                debug!(message = status.message(), "etcd: authenticating again");
                self.refresh_token(&token).await?;
                Ok(self.on_any_member(&call, &self.token()).await?)
            }
            result => Ok(result?),
        }
    }

    async fn on_any_member<T, F, Fut>(&self, call: &F, token: &Token) -> Result<T, Status>
    where
        F: Fn(Channel, Token) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let members = &self.inner.members;
        let first = self.inner.current.load(Ordering::Relaxed) % members.len();
        let mut first_error = None;
        for i in 0..members.len() {
            let at = (first + i) % members.len();
            let member = &members[at];
            match call(member.channel.clone(), token.clone()).await {
                Ok(v) => {
                    if i > 0 {
                        debug!(endpoint = member.uri, "etcd: calls go to this endpoint now");
                        self.inner.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(status) if never_connected(&status) => {
                    debug!(
                        endpoint = member.uri,
                        message = status.message(),
                        "etcd: endpoint unreachable"
                    );
                    first_error.get_or_insert(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(first_error.unwrap_or_else(|| Status::unavailable("no etcd endpoint")))
    }

    pub(crate) fn token(&self) -> Token {
        self.inner
            .token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `status` says the token is no longer valid, and a new one can be fetched.
    fn token_expired(&self, status: &Status) -> bool {
        self.can_refresh()
            && (status.code() == Code::Unauthenticated
                || status.message().contains("invalid auth token"))
    }

    /// Whether the client has a user, and refreshes its token.
    pub(crate) fn can_refresh(&self) -> bool {
        self.inner.user.is_some() && self.inner.auto_token_refresh
    }

    /// Authenticates (with a user), unless the token is not `stale` any more: another call
    /// fetched a new one meanwhile.
    pub(crate) async fn refresh_token(&self, stale: &Token) -> Result<(), Error> {
        let Some((name, password)) = &self.inner.user else {
            return Ok(());
        };
        let _one_at_a_time = self.inner.refreshing.lock().await;
        if self.token() != *stale {
            return Ok(());
        }
        let authenticate = pb::AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        let rsp = self
            .on_any_member(
                &|channel, _| {
                    let authenticate = authenticate.clone();
                    async move { AuthClient::new(channel).authenticate(authenticate).await }
                },
                &None,
            )
            .await?;
        let token = AsciiMetadataValue::try_from(rsp.into_inner().token)
            .map_err(|_| Error::InvalidToken)?;
        *self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(token);
        Ok(())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self.inner.members.iter().map(|m| m.uri.as_str()).collect();
        f.debug_struct("Client")
            .field("endpoints", &endpoints)
            .field("user", &self.inner.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

/// `message` as a request carrying `token`.
pub(crate) fn request<T>(message: T, token: &Token) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(TOKEN_KEY, token.clone());
    }
    request
}

/// Whether the channel failed to connect (TCP or TLS), so the request never left.
fn never_connected(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        if c.is::<tonic::ConnectError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The answer to [`Client::status`].
#[derive(Debug, Clone)]
pub struct StatusResponse {
    header: Option<ResponseHeader>,
    status: pb::StatusResponse,
}

impl StatusResponse {
    fn new(mut status: pb::StatusResponse) -> Self {
        StatusResponse {
            header: status.header.take().map(ResponseHeader::new),
            status,
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// The etcd version of the member that answered.
    pub fn version(&self) -> &str {
        &self.status.version
    }

    /// The member ID of the leader, as the answering member sees it.
    pub fn leader(&self) -> u64 {
        self.status.leader
    }

    /// The size of the member's database, in bytes.
    pub fn db_size(&self) -> i64 {
        self.status.db_size
    }

    pub fn raft_index(&self) -> u64 {
        self.status.raft_index
    }

    pub fn raft_term(&self) -> u64 {
        self.status.raft_term
    }

    pub fn is_learner(&self) -> bool {
        self.status.is_learner
    }

    /// Alarms and health problems the member reports.
    pub fn errors(&self) -> &[String] {
        &self.status.errors
    }
}

/// Where an answer comes from: the cluster, the member, and the store's revision then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader(pb::ResponseHeader);

impl ResponseHeader {
    pub(crate) fn new(header: pb::ResponseHeader) -> Self {
        ResponseHeader(header)
    }

    /// The key-value store's revision when the request was applied.
    pub fn revision(&self) -> i64 {
        self.0.revision
    }

    pub fn cluster_id(&self) -> u64 {
        self.0.cluster_id
    }

    pub fn member_id(&self) -> u64 {
        self.0.member_id
    }

    pub fn raft_term(&self) -> u64 {
        self.0.raft_term
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_travels_as_metadata() {
        let token: Token = Some(AsciiMetadataValue::from_static("abc.1"));
        let r = request((), &token);
        assert_eq!(
            r.metadata().get(TOKEN_KEY).and_then(|v| v.to_str().ok()),
            Some("abc.1")
        );
        assert!(request((), &None).metadata().get(TOKEN_KEY).is_none());
    }

    #[test]
    fn only_connect_errors_count_as_unreachable() {
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(Arc::new(tonic::ConnectError("refused".into())));
        assert!(never_connected(&status));
        assert!(!never_connected(&Status::unavailable(
            "etcdserver: no leader"
        )));
    }

    #[tokio::test]
    async fn connect_checks_its_arguments_and_dials_nothing() {
        let none: [&str; 0] = [];
        let e = Client::connect(none, None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgs(_)), "{e}");
        let e = Client::connect(["http://a:1", "ftp://b:2"], None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e}");
        // Nothing listens there: connecting still succeeds, lazily.
        let c = Client::connect(["127.0.0.1:1", "http://127.0.0.1:2"], None)
            .await
            .unwrap();
        assert!(format!("{c:?}").contains("http://127.0.0.1:2"));
        let e = c.status().await.unwrap_err();
        assert!(
            matches!(&e, Error::Status(s) if s.code() == Code::Unavailable),
            "{e}"
        );
    }

    #[tokio::test]
    async fn unusable_tls_files_fail_at_connect() {
        let tls = crate::TlsOptions::new()
            .ca_certificate(crate::Certificate::from_pem("not a certificate"))
            .identity(crate::Identity::from_pem("not a certificate", "not a key"));
        let options = ConnectOptions::new().with_tls(tls);
        let e = Client::connect(["https://127.0.0.1:1"], Some(options))
            .await
            .unwrap_err();
        println!("{e}");
        assert!(matches!(e, Error::Transport(_)), "{e}");
    }

    /// Compiles only if clients, their calls' futures and the streams can move to other
    /// tasks.
    #[test]
    fn clients_calls_and_streams_can_move_to_other_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        fn sent<T: Send + 'static>() {}
        shared::<Client>();
        shared::<crate::Watcher>();
        shared::<crate::LeaseKeeper>();
        shared::<Error>();
        sent::<crate::WatchStream>();
        sent::<crate::LeaseKeepAliveStream>();
        let c = |c: Client| async move {
            let _ = Client::connect(["x:1"], None).await;
            let _ = c.watch("k", None).await;
            let _ = c.lease_keep_alive(1).await;
            let _ = c.txn(crate::Txn::new()).await;
            let _ = c.status().await;
        };
        fn takes<F: std::future::Future + Send + 'static>(_: &dyn Fn(Client) -> F) {}
        takes(&c);
    }
}
