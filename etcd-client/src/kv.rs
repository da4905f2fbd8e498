//! Keys and values: [`Client::get`], [`Client::put`], [`Client::delete`] and [`Client::txn`],
//! their options, and what they answer ([`KeyValue`], [`ResponseHeader`], ...).

use crate::client::{request, ResponseHeader};
use crate::gen::etcdserverpb as pb;
use crate::gen::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::gen::etcdserverpb::kv_client::KvClient;
use crate::gen::etcdserverpb::request_op::Request as PbRequest;
use crate::gen::etcdserverpb::response_op::Response as PbResponse;
use crate::gen::mvccpb;
use crate::{Client, Error};

impl Client {
    /// The key, or with [`GetOptions::with_prefix`] every key starting with it.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Error> {
        let range = options.unwrap_or_default().request(key.into());
        let rsp = self
            .call(|channel, token| {
                let range = request(range.clone(), &token);
                async move { KvClient::new(channel).range(range).await }
            })
            .await?;
        Ok(GetResponse::new(rsp.into_inner()))
    }

    /// Sets the key's value.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse, Error> {
        let put = options
            .unwrap_or_default()
            .request(key.into(), value.into());
        let rsp = self
            .call(|channel, token| {
                let put = request(put.clone(), &token);
                async move { KvClient::new(channel).put(put).await }
            })
            .await?;
        Ok(PutResponse::new(rsp.into_inner()))
    }

    /// Deletes the key, or with [`DeleteOptions::with_prefix`] every key starting with it.
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse, Error> {
        let delete = options.unwrap_or_default().request(key.into());
        let rsp = self
            .call(|channel, token| {
                let delete = request(delete.clone(), &token);
                async move { KvClient::new(channel).delete_range(delete).await }
            })
            .await?;
        Ok(DeleteResponse::new(rsp.into_inner()))
    }

    /// Runs a transaction: its comparisons, then its success or failure operations, atomically.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        let rsp = self
            .call(|channel, token| {
                let txn = request(txn.request.clone(), &token);
                async move { KvClient::new(channel).txn(txn).await }
            })
            .await?;
        Ok(TxnResponse::new(rsp.into_inner()))
    }
}

/// The end of the range of keys starting with `key`, as etcd computes it: `key` with its last
/// byte below 0xff incremented and what follows dropped; `"\0"` (every key from `key` on)
/// when all its bytes are 0xff.
pub(crate) fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Which keys, from `key`: the key alone, those with its prefix, or all from it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum KeyRange {
    #[default]
    Key,
    Prefix,
    FromKey,
}

impl KeyRange {
    /// The `(key, range_end)` etcd wants. An empty prefix means every key.
    pub(crate) fn bounds(self, key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::Key => (key, Vec::new()),
            KeyRange::Prefix if key.is_empty() => (vec![0], vec![0]),
            KeyRange::Prefix => {
                let end = prefix_end(&key);
                (key, end)
            }
            KeyRange::FromKey if key.is_empty() => (vec![0], vec![0]),
            KeyRange::FromKey => (key, vec![0]),
        }
    }
}

/// Options for [`Client::get`] (and [`TxnOp::get`]).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    range: KeyRange,
    request: pb::RangeRequest,
}

impl GetOptions {
    pub fn new() -> Self {
        GetOptions::default()
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

    /// As of this revision (0, the default: the latest).
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.request.revision = revision;
        self
    }

    /// At most this many keys ([`GetResponse::more`] says whether there were more).
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.request.limit = limit;
        self
    }

    /// The keys without their values.
    pub fn with_keys_only(mut self) -> Self {
        self.request.keys_only = true;
        self
    }

    /// Only how many keys there are ([`GetResponse::count`]).
    pub fn with_count_only(mut self) -> Self {
        self.request.count_only = true;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::RangeRequest {
        let (key, range_end) = self.range.bounds(key);
        pb::RangeRequest {
            key,
            range_end,
            ..self.request.clone()
        }
    }
}

/// Options for [`Client::put`] (and [`TxnOp::put`]).
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
}

impl PutOptions {
    pub fn new() -> Self {
        PutOptions::default()
    }

    /// Attaches the key to this lease: it is deleted when the lease ends.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    /// Answers with the key's previous value ([`PutResponse::prev_key`]).
    pub fn with_prev_key(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    fn request(&self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ..Default::default()
        }
    }
}

/// Options for [`Client::delete`] (and [`TxnOp::delete`]).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    range: KeyRange,
    prev_kv: bool,
}

impl DeleteOptions {
    pub fn new() -> Self {
        DeleteOptions::default()
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

    /// Answers with the deleted keys and values ([`DeleteResponse::prev_kvs`]).
    pub fn with_prev_key(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::DeleteRangeRequest {
        let (key, range_end) = self.range.bounds(key);
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

fn header(h: Option<pb::ResponseHeader>) -> Option<ResponseHeader> {
    h.map(ResponseHeader::new)
}

/// A key, its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue(mvccpb::KeyValue);

impl KeyValue {
    pub(crate) fn new(kv: mvccpb::KeyValue) -> Self {
        KeyValue(kv)
    }

    pub fn key(&self) -> &[u8] {
        &self.0.key
    }

    pub fn value(&self) -> &[u8] {
        &self.0.value
    }

    /// The key, if UTF-8.
    pub fn key_str(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.0.key)?)
    }

    /// The value, if UTF-8.
    pub fn value_str(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.0.value)?)
    }

    /// The revision at which the key was last created.
    pub fn create_revision(&self) -> i64 {
        self.0.create_revision
    }

    /// The revision at which the key was last changed.
    pub fn mod_revision(&self) -> i64 {
        self.0.mod_revision
    }

    /// How many times the key was changed since it was created (1 when new).
    pub fn version(&self) -> i64 {
        self.0.version
    }

    /// The lease the key is attached to, 0 for none.
    pub fn lease(&self) -> i64 {
        self.0.lease
    }

    /// The key and the value.
    pub fn into_key_value(self) -> (Vec<u8>, Vec<u8>) {
        (self.0.key, self.0.value)
    }
}

fn kvs(kvs: Vec<mvccpb::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter().map(KeyValue::new).collect()
}

/// The answer to [`Client::get`].
#[derive(Debug, Clone)]
pub struct GetResponse {
    header: Option<ResponseHeader>,
    kvs: Vec<KeyValue>,
    more: bool,
    count: i64,
}

/// etcd's name for [`GetResponse`].
pub type RangeResponse = GetResponse;

impl GetResponse {
    fn new(r: pb::RangeResponse) -> Self {
        GetResponse {
            header: header(r.header),
            kvs: kvs(r.kvs),
            more: r.more,
            count: r.count,
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// The keys found, in key order.
    pub fn kvs(&self) -> &[KeyValue] {
        &self.kvs
    }

    /// The keys found, taken out of the answer.
    pub fn take_kvs(&mut self) -> Vec<KeyValue> {
        std::mem::take(&mut self.kvs)
    }

    /// Whether a limit left keys out.
    pub fn more(&self) -> bool {
        self.more
    }

    /// How many keys the range holds (whatever the limit).
    pub fn count(&self) -> i64 {
        self.count
    }
}

/// The answer to [`Client::put`].
#[derive(Debug, Clone)]
pub struct PutResponse {
    header: Option<ResponseHeader>,
    prev_kv: Option<KeyValue>,
}

impl PutResponse {
    fn new(r: pb::PutResponse) -> Self {
        PutResponse {
            header: header(r.header),
            prev_kv: r.prev_kv.map(KeyValue::new),
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// The key before the put, with [`PutOptions::with_prev_key`] (none for a new key).
    pub fn prev_key(&self) -> Option<&KeyValue> {
        self.prev_kv.as_ref()
    }
}

/// The answer to [`Client::delete`].
#[derive(Debug, Clone)]
pub struct DeleteResponse {
    header: Option<ResponseHeader>,
    deleted: i64,
    prev_kvs: Vec<KeyValue>,
}

impl DeleteResponse {
    fn new(r: pb::DeleteRangeResponse) -> Self {
        DeleteResponse {
            header: header(r.header),
            deleted: r.deleted,
            prev_kvs: kvs(r.prev_kvs),
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// How many keys were deleted.
    pub fn deleted(&self) -> i64 {
        self.deleted
    }

    /// The deleted keys, with [`DeleteOptions::with_prev_key`].
    pub fn prev_kvs(&self) -> &[KeyValue] {
        &self.prev_kvs
    }
}

/// How a [`Compare`] compares the key's field with the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

impl CompareOp {
    fn result(self) -> CompareResult {
        match self {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::Greater => CompareResult::Greater,
            CompareOp::Less => CompareResult::Less,
            CompareOp::NotEqual => CompareResult::NotEqual,
        }
    }
}

/// A condition of a [`Txn`] on one key. A key that does not exist has version, create and
/// mod revisions 0.
#[derive(Debug, Clone)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(key: Vec<u8>, op: CompareOp, target: CompareTarget, value: TargetUnion) -> Self {
        Compare(pb::Compare {
            result: op.result() as i32,
            target: target as i32,
            key,
            target_union: Some(value),
            range_end: Vec::new(),
        })
    }

    /// Compares the key's version (0 when it does not exist).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            CompareTarget::Version,
            TargetUnion::Version(version),
        )
    }

    /// Compares the key's create revision: `create_revision(key, Equal, 0)` holds when the
    /// key does not exist.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision),
        )
    }

    /// Compares the key's mod revision (when it was last changed).
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            CompareTarget::Mod,
            TargetUnion::ModRevision(revision),
        )
    }

    /// Compares the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare::new(
            key.into(),
            op,
            CompareTarget::Value,
            TargetUnion::Value(value.into()),
        )
    }

    /// Compares the key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            CompareTarget::Lease,
            TargetUnion::Lease(lease),
        )
    }

    /// Compares every key starting with the key instead.
    pub fn with_prefix(mut self) -> Self {
        self.0.range_end = prefix_end(&self.0.key);
        self
    }
}

/// An operation of a [`Txn`].
#[derive(Debug, Clone)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    fn new(request: PbRequest) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(request),
        })
    }

    pub fn get(key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Self {
        TxnOp::new(PbRequest::RequestRange(
            options.unwrap_or_default().request(key.into()),
        ))
    }

    pub fn put(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Self {
        TxnOp::new(PbRequest::RequestPut(
            options
                .unwrap_or_default()
                .request(key.into(), value.into()),
        ))
    }

    pub fn delete(key: impl Into<Vec<u8>>, options: Option<DeleteOptions>) -> Self {
        TxnOp::new(PbRequest::RequestDeleteRange(
            options.unwrap_or_default().request(key.into()),
        ))
    }
}

/// A transaction: if every comparison holds ([`Txn::when`]; none: true), the
/// [`Txn::and_then`] operations run, else the [`Txn::or_else`] ones.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    request: pb::TxnRequest,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    /// The comparisons, all of which must hold (added to those given before).
    pub fn when(mut self, compares: impl Into<Vec<Compare>>) -> Self {
        let compares = compares.into().into_iter().map(|c| c.0);
        self.request.compare.extend(compares);
        self
    }

    /// What to do when the comparisons hold (added to those given before).
    pub fn and_then(mut self, ops: impl Into<Vec<TxnOp>>) -> Self {
        self.request
            .success
            .extend(ops.into().into_iter().map(|o| o.0));
        self
    }

    /// What to do when a comparison fails (added to those given before).
    pub fn or_else(mut self, ops: impl Into<Vec<TxnOp>>) -> Self {
        self.request
            .failure
            .extend(ops.into().into_iter().map(|o| o.0));
        self
    }
}

/// The answer to one operation of a [`Txn`].
#[derive(Debug, Clone)]
pub enum TxnOpResponse {
    Put(PutResponse),
    Get(GetResponse),
    Delete(DeleteResponse),
}

/// The answer to [`Client::txn`].
#[derive(Debug, Clone)]
pub struct TxnResponse {
    header: Option<ResponseHeader>,
    succeeded: bool,
    op_responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    fn new(r: pb::TxnResponse) -> Self {
        // Nested transactions are never sent, so never answered.
        let op_responses = r
            .responses
            .into_iter()
            .filter_map(|op| match op.response? {
                PbResponse::ResponseRange(r) => Some(TxnOpResponse::Get(GetResponse::new(r))),
                PbResponse::ResponsePut(r) => Some(TxnOpResponse::Put(PutResponse::new(r))),
                PbResponse::ResponseDeleteRange(r) => {
                    Some(TxnOpResponse::Delete(DeleteResponse::new(r)))
                }
                PbResponse::ResponseTxn(_) => None,
            })
            .collect();
        TxnResponse {
            header: header(r.header),
            succeeded: r.succeeded,
            op_responses,
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// Whether the comparisons held (so the `and_then` operations ran).
    pub fn succeeded(&self) -> bool {
        self.succeeded
    }

    /// The answers to the operations that ran, in order.
    pub fn op_responses(&self) -> &[TxnOpResponse] {
        &self.op_responses
    }

    /// The answers to the operations that ran, taken out of the answer.
    pub fn take_op_responses(&mut self) -> Vec<TxnOpResponse> {
        std::mem::take(&mut self.op_responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"/busbar/nodes/"), b"/busbar/nodes0");
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn get_options_build_the_range_request() {
        let r = GetOptions::new().request(b"k".to_vec());
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"k"[..], &b""[..])
        );
        let r = GetOptions::new()
            .with_prefix()
            .with_revision(7)
            .with_limit(3)
            .with_keys_only()
            .request(b"/a/".to_vec());
        assert_eq!(r.key, b"/a/");
        assert_eq!(r.range_end, b"/a0");
        assert_eq!((r.revision, r.limit, r.keys_only), (7, 3, true));
        let r = GetOptions::new().with_prefix().request(Vec::new());
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        let r = GetOptions::new().with_from_key().request(b"m".to_vec());
        assert_eq!((r.key, r.range_end), (b"m".to_vec(), vec![0]));
        assert!(
            GetOptions::new()
                .with_count_only()
                .request(b"k".to_vec())
                .count_only
        );
    }

    #[test]
    fn put_and_delete_options_build_their_requests() {
        let r = PutOptions::new()
            .with_lease(42)
            .with_prev_key()
            .request(b"k".to_vec(), b"v".to_vec());
        assert_eq!((r.lease, r.prev_kv), (42, true));
        assert_eq!((r.key, r.value), (b"k".to_vec(), b"v".to_vec()));
        let r = DeleteOptions::new()
            .with_prefix()
            .with_prev_key()
            .request(b"a\xff".to_vec());
        assert_eq!((r.range_end, r.prev_kv), (b"b".to_vec(), true));
    }

    #[test]
    fn a_txn_holds_its_compares_and_both_branches() {
        let txn = Txn::new()
            .when([
                Compare::create_revision("k", CompareOp::Equal, 0),
                Compare::mod_revision("k", CompareOp::Less, 9),
                Compare::value("k", CompareOp::NotEqual, "x"),
            ])
            .and_then([TxnOp::put("k", "v", Some(PutOptions::new().with_lease(5)))])
            .or_else([TxnOp::get("k", None), TxnOp::delete("k", None)]);
        let r = &txn.request;
        assert_eq!(r.compare.len(), 3);
        assert_eq!(r.compare[0].target, CompareTarget::Create as i32);
        assert_eq!(r.compare[0].result, CompareResult::Equal as i32);
        assert_eq!(
            r.compare[0].target_union,
            Some(TargetUnion::CreateRevision(0))
        );
        assert_eq!(r.compare[1].result, CompareResult::Less as i32);
        assert_eq!(
            r.compare[2].target_union,
            Some(TargetUnion::Value(b"x".to_vec()))
        );
        assert!(matches!(
            &r.success[0].request,
            Some(PbRequest::RequestPut(p)) if p.lease == 5 && p.value == b"v"
        ));
        assert!(matches!(
            r.failure[0].request,
            Some(PbRequest::RequestRange(_))
        ));
        assert!(matches!(
            r.failure[1].request,
            Some(PbRequest::RequestDeleteRange(_))
        ));
        let c = Compare::version("/p/", CompareOp::Greater, 0).with_prefix();
        assert_eq!(c.0.range_end, b"/p0");
    }

    #[test]
    fn txn_answers_map_to_their_kinds() {
        let kv = mvccpb::KeyValue {
            key: b"k".to_vec(),
            value: b"\xff".to_vec(),
            ..Default::default()
        };
        let r = TxnResponse::new(pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                revision: 12,
                ..Default::default()
            }),
            succeeded: false,
            responses: vec![
                pb::ResponseOp {
                    response: Some(PbResponse::ResponseRange(pb::RangeResponse {
                        kvs: vec![kv],
                        count: 1,
                        ..Default::default()
                    })),
                },
                pb::ResponseOp {
                    response: Some(PbResponse::ResponsePut(pb::PutResponse::default())),
                },
            ],
        });
        assert!(!r.succeeded());
        assert_eq!(r.header().map(|h| h.revision()), Some(12));
        let TxnOpResponse::Get(get) = &r.op_responses()[0] else {
            panic!("a get answer first: {r:?}");
        };
        assert_eq!(get.kvs()[0].key_str().unwrap(), "k");
        let e = get.kvs()[0].value_str().unwrap_err();
        assert!(matches!(e, Error::Utf8(_)), "{e}");
        assert!(matches!(r.op_responses()[1], TxnOpResponse::Put(_)));
    }
}
