//! A small etcd v3 client for busbar: the part of etcd's API that busbar uses, as a thin typed
//! layer over tonic, with its generated code committed so that building needs no `protoc`.
//!
//! ```no_run
//! # async fn f() -> Result<(), busbar_etcd_client::Error> {
//! use busbar_etcd_client::{Client, GetOptions};
//! let client = Client::connect(["http://127.0.0.1:2379"], None).await?;
//! client.put("/busbar/a", "1", None).await?;
//! let found = client.get("/busbar/", Some(GetOptions::new().with_prefix())).await?;
//! for kv in found.kvs() {
//!     println!("{} = {}", kv.key_str()?, kv.value_str()?);
//! }
//! # Ok(()) }
//! ```
//!
//! The API follows etcd-client's shapes (`Client::connect(endpoints, Option<ConnectOptions>)`,
//! `get(key, Option<GetOptions>)`, ...), so that code written for it moves over mechanically;
//! methods take `&self`.
//!
//! # Layout
//! - `proto/`: the subset of etcd's `.proto` files this crate speaks (packages `etcdserverpb`
//!   and `mvccpb`, as upstream, so the gRPC paths are etcd's own).
//! - [`gen`]: the code generated from them (`src/gen/*.rs`, committed; a test checks it is
//!   current). No build script.
//! - [`options`]: the endpoints, [`ConnectOptions`] and [`TlsOptions`].
//! - [`client`]: how calls go to the endpoints, the authentication token ([`Client`]).
//! - [`kv`]: get, put, delete, transactions; [`watch`]: watches; [`lease`]: leases.
//! - [`error`]: what calls fail with, [`Error`].

pub mod client;
pub mod error;
pub mod gen;
pub mod kv;
pub mod lease;
pub mod options;
pub mod watch;

pub use client::{Client, ResponseHeader, StatusResponse};
pub use error::Error;
pub use kv::{
    Compare, CompareOp, DeleteOptions, DeleteResponse, GetOptions, GetResponse, KeyValue,
    PutOptions, PutResponse, RangeResponse, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
pub use lease::{
    LeaseGrantOptions, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseKeepAliveStream,
    LeaseKeeper, LeaseRevokeResponse, LeaseTimeToLiveOptions, LeaseTimeToLiveResponse,
};
pub use options::{Certificate, ConnectOptions, Identity, TlsOptions};
pub use watch::{Event, EventType, WatchOptions, WatchResponse, WatchStream, Watcher};
