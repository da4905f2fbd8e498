//! Container name reservations in etcd: `<prefix>/names/<name>`, so that two creates of the
//! same name on different nodes cannot both succeed, as on one engine.
//!
//! The life of a name, as the gateway uses it:
//! 1. `POST /containers/create?name=x`: [`reserve_name`] (one etcd transaction: create the key
//!    only if it does not exist). If another create holds it: [`ReservationError::Taken`], a `409`.
//! 2. The create goes to the chosen node. If it fails, [`release_reservation`] frees the name;
//!    if it succeeds, [`set_name_owner`] records the container id.
//! 3. `DELETE /containers/x` (and a rename's old name): [`release_name`] once the node has
//!    removed the container.
//!
//! Reservations have no lease: a name belongs to a container, not to a gateway process, so
//! it must outlive gateway restarts. The price is that a gateway that crashes between 1 and 2
//! leaves a reservation with no container id behind. Such a reservation is *stale* when no
//! node has a container of that name: a checker lists them ([`list_names`]: `id` is `None`,
//! `reserved_at` is old enough for any create to have finished), asks the nodes, and frees
//! the stale ones with [`release_reservation`], which deletes only that very reservation
//! (compared by its creation revision), never a newer one made meanwhile.

use busbar_etcd::client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use busbar_etcd::error::call;
use busbar_etcd::keys::{name_key, names_prefix};
use busbar_etcd::EtcdError;
use busbar_runtime::unix_now;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// The value at `<prefix>/names/<name>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The node the container is (being) created on.
    pub node: String,
    /// The container id, once the create succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When the name was reserved, in seconds since the Unix epoch.
    #[serde(default)]
    pub reserved_at: u64,
}

/// A name held in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The container name, without Docker's leading `/`.
    pub name: String,
    pub node: String,
    pub id: Option<String>,
    pub reserved_at: u64,
    /// The key's creation revision: identifies this reservation among all that ever held the
    /// name, so that freeing or updating it never touches a newer one.
    pub revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// Docker's own wording (and a `409`), plus where the holder is.
    #[error("Conflict. The container name \"/{name}\" is already in use{}", holder(node, id.as_deref()))]
    Taken {
        name: String,
        node: String,
        id: Option<String>,
        /// When the holder reserved it (seconds since the Unix epoch; 0 if unknown).
        reserved_at: u64,
    },
    /// Docker's own wording (and a `400`).
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    Invalid { name: String },
    /// The reservation was freed (or replaced) before the container id could be recorded.
    #[error("the reservation of container name \"/{name}\" is gone from etcd")]
    Lost { name: String },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

fn holder(node: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!(
            " by container \"{id}\" on node {node}. You have to remove (or rename) that container to be able to reuse that name."
        ),
        None => format!(" (on node {node})"),
    }
}

impl ReservationError {
    /// The HTTP status Docker uses for this error: 409, 400, or 503 when etcd failed.
    pub fn status(&self) -> u16 {
        match self {
            ReservationError::Taken { .. } => 409,
            ReservationError::Invalid { .. } => 400,
            ReservationError::Lost { .. } => 409,
            ReservationError::Etcd(_) => 503,
        }
    }
}

/// `name` without its optional leading `/`, if Docker would accept it
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn normalize(name: &str) -> Result<&str, ReservationError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = n.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(n)
    } else {
        Err(ReservationError::Invalid {
            name: name.to_owned(),
        })
    }
}

fn parse(key: &str, value: &[u8]) -> Result<NameEntry, EtcdError> {
    serde_json::from_slice(value).map_err(|e| EtcdError::BadEntry {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Reserves `name` (Docker's `/name` accepted) for a container about to be created on `node`.
/// Exactly one of several concurrent reservations of a name wins; the others get
/// [`ReservationError::Taken`] naming the winner's node.
pub async fn reserve_name(
    client: &Client,
    prefix: &str,
    name: &str,
    node: &str,
) -> Result<Reservation, ReservationError> {
    let name = normalize(name)?;
    let key = name_key(prefix, name);
    let entry = NameEntry {
        node: node.to_owned(),
        id: None,
        reserved_at: unix_now(),
    };
    let value = serde_json::to_string(&entry).expect("a NameEntry always serializes");
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), value, None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let rsp = call("reserve", &key, client.clone().txn(txn)).await?;
    if rsp.succeeded() {
        let revision = rsp.header().map_or(0, |h| h.revision());
        debug!(name, node, revision, "container name reserved");
        return Ok(Reservation {
            name: name.to_owned(),
            node: entry.node,
            id: None,
            reserved_at: entry.reserved_at,
            revision,
        });
    }
    let held = rsp.op_responses().iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| parse(&key, kv.value())),
        _ => None,
    });
    match held {
        Some(Ok(e)) => Err(ReservationError::Taken {
            name: name.to_owned(),
            node: e.node,
            id: e.id,
            reserved_at: e.reserved_at,
        }),
        Some(Err(e)) => {
            warn!("{e}");
            Err(ReservationError::Taken {
                name: name.to_owned(),
                node: "(unreadable reservation)".into(),
                id: None,
                reserved_at: 0,
            })
        }
        // Cannot happen: the transaction's compare and get see the same revision.
        None => Err(ReservationError::Taken {
            name: name.to_owned(),
            node: "(unknown)".into(),
            id: None,
            reserved_at: 0,
        }),
    }
}

/// Records the id of the container created under `reservation`. Fails with
/// [`ReservationError::Lost`] if that reservation no longer exists (freed as stale meanwhile).
pub async fn set_name_owner(
    client: &Client,
    prefix: &str,
    reservation: &Reservation,
    id: &str,
) -> Result<Reservation, ReservationError> {
    let key = name_key(prefix, &reservation.name);
    let entry = NameEntry {
        node: reservation.node.clone(),
        id: Some(id.to_owned()),
        reserved_at: reservation.reserved_at,
    };
    let value = serde_json::to_string(&entry).expect("a NameEntry always serializes");
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            reservation.revision,
        )])
        .and_then([TxnOp::put(key.as_str(), value, None)]);
    let rsp = call("record the container of", &key, client.clone().txn(txn)).await?;
    if !rsp.succeeded() {
        return Err(ReservationError::Lost {
            name: reservation.name.clone(),
        });
    }
    Ok(Reservation {
        id: Some(id.to_owned()),
        ..reservation.clone()
    })
}

/// Frees exactly this reservation (after a failed create, or a stale one); a newer
/// reservation of the same name is left alone. Returns whether it was deleted.
pub async fn release_reservation(
    client: &Client,
    prefix: &str,
    reservation: &Reservation,
) -> Result<bool, ReservationError> {
    let key = name_key(prefix, &reservation.name);
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            reservation.revision,
        )])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    let rsp = call("release", &key, client.clone().txn(txn)).await?;
    Ok(rsp.succeeded())
}

/// Frees `name` if `node` holds it (after `rm` of the container on that node). Returns
/// whether it was deleted: `false` if the name was free or is held by another node.
pub async fn release_name(
    client: &Client,
    prefix: &str,
    name: &str,
    node: &str,
) -> Result<bool, ReservationError> {
    let name = normalize(name)?;
    let key = name_key(prefix, name);
    let c = client.clone();
    // A concurrent set_name_owner may change the key between our read and our delete: read
    // again then. Three rounds are plenty; nothing else writes a held name.
    for _ in 0..3 {
        let got = call("read", &key, c.get(key.as_str(), None)).await?;
        let Some(kv) = got.kvs().first() else {
            return Ok(false);
        };
        match parse(&key, kv.value()) {
            Ok(e) if e.node == node => {}
            Ok(e) => {
                debug!(name, node, holder = %e.node, "name held by another node; not released");
                return Ok(false);
            }
            Err(e) => warn!("{e}; releasing it anyway"),
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if call("release", &key, c.txn(txn)).await?.succeeded() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The reservation of `name`, if there is one.
pub async fn get_reservation(
    client: &Client,
    prefix: &str,
    name: &str,
) -> Result<Option<Reservation>, ReservationError> {
    let name = normalize(name)?;
    let key = name_key(prefix, name);
    let got = call("read", &key, client.get(key.as_str(), None)).await?;
    let Some(kv) = got.kvs().first() else {
        return Ok(None);
    };
    let e = parse(&key, kv.value())?;
    Ok(Some(Reservation {
        name: name.to_owned(),
        node: e.node,
        id: e.id,
        reserved_at: e.reserved_at,
        revision: kv.create_revision(),
    }))
}

/// Every reservation, in name order. Entries that do not parse are skipped with a warning.
pub async fn list_names(client: &Client, prefix: &str) -> Result<Vec<Reservation>, EtcdError> {
    let dir = names_prefix(prefix);
    let got = call(
        "list",
        &dir,
        client
            .clone()
            .get(dir.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut out = vec![];
    for kv in got.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let Some(name) = key.strip_prefix(&dir) else {
            continue;
        };
        match parse(&key, kv.value()) {
            Ok(e) => out.push(Reservation {
                name: name.to_owned(),
                node: e.node,
                id: e.id,
                reserved_at: e.reserved_at,
                revision: kv.create_revision(),
            }),
            Err(e) => warn!("{e}; skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dockers() {
        assert_eq!(normalize("/web-1").unwrap(), "web-1");
        assert_eq!(normalize("a.b_c").unwrap(), "a.b_c");
        for bad in ["", "/", "a", "-x", "/x/y", "a b", "ä1", "//ab"] {
            assert!(
                matches!(normalize(bad), Err(ReservationError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn taken_reads_like_docker() {
        let e = ReservationError::Taken {
            name: "web".into(),
            node: "n1".into(),
            id: None,
            reserved_at: 0,
        };
        assert_eq!(
            e.to_string(),
            "Conflict. The container name \"/web\" is already in use (on node n1)"
        );
        assert_eq!(e.status(), 409);
        let e = ReservationError::Taken {
            name: "web".into(),
            node: "n1".into(),
            id: Some("abc".into()),
            reserved_at: 0,
        };
        assert!(e
            .to_string()
            .starts_with("Conflict. The container name \"/web\" is already in use by container \"abc\" on node n1."));
    }

    #[test]
    fn entries_without_an_id_omit_it() {
        let e = NameEntry {
            node: "n1".into(),
            id: None,
            reserved_at: 5,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"node":"n1","reserved_at":5}"#
        );
    }
}
