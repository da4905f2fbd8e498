//! Cluster-wide container names. Two gateways side by side (and two clients racing with
//! `docker run --name x`) must not both create `x`. While a create (or rename) is in flight its
//! name is reserved in a store both gateways share (etcd, see [`etcd`]; or memory,
//! for a gateway alone); once the call is done the container itself holds the name, and every
//! claim also asks the nodes whether a container already has it. So a reservation does not
//! outlive its call, and containers made behind the gateways' backs are still seen.
//!
//! A gateway that dies mid-create leaves its reservation behind. A claim that finds one older
//! than [`STALE_AFTER`] (longer than any create may take) asks the node it names whether a
//! container of that name exists; if the node says no, the reservation is freed
//! ([`NameStore::free_stale`]) and the claim goes on; if it cannot say, the name stays taken.

pub mod etcd;

use futures_util::future::BoxFuture;

use std::time::Duration;

/// A reservation older than this belongs to no call in flight (a create through the gateway
/// gives up after [`crate::serve::CREATE_TIMEOUT`], keeping its reservation for this check).
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The name is already someone's.
#[derive(Debug, thiserror::Error)]
#[error("the container name is reserved by node {owner}")]
pub struct Taken {
    pub owner: String,
    /// How long ago it was reserved.
    pub age: Duration,
}

/// Where names are reserved.
pub trait NameStore: Send + Sync {
    /// Reserves `name` for a container being created on `node`.
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>>;
    /// Frees `name`, reserved for `node`.
    fn release<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, ()>;
    /// Frees the reservation of `name` made for `owner` at least `older_than` ago, if it is
    /// still there: never a newer one. Whether one was freed.
    fn free_stale<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<bool, NameError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(transparent)]
    Taken(#[from] Taken),
    /// The store could not be asked (etcd unreachable, a timeout, ...): the name's fate is
    /// unknown, so the create is refused rather than risked.
    #[error("cannot reserve the name: {0}")]
    Store(#[from] etcd::ReservationError),
}

/// Names reserved in this gateway's memory: enough for one gateway (with several gateways,
/// use etcd). A reservation lives only while its call is in flight.
#[derive(Default)]
pub struct LocalNames {
    /// Name -> (node, when reserved). Short sections, no await inside: a std mutex.
    taken: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl NameStore for LocalNames {
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>> {
        Box::pin(async move {
            let mut taken = self.taken.lock().expect("names lock");
            match taken.get(name) {
                Some((owner, at)) => Err(Taken {
                    owner: owner.clone(),
                    age: at.elapsed(),
                }
                .into()),
                None => {
                    taken.insert(
                        name.to_owned(),
                        (node.to_owned(), std::time::Instant::now()),
                    );
                    Ok(())
                }
            }
        })
    }

    fn release<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut taken = self.taken.lock().expect("names lock");
            if taken.get(name).is_some_and(|(owner, _)| owner == node) {
                taken.remove(name);
            }
        })
    }

    fn free_stale<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<bool, NameError>> {
        Box::pin(async move {
            let mut taken = self.taken.lock().expect("names lock");
            let stale = taken
                .get(name)
                .is_some_and(|(o, at)| o == owner && at.elapsed() >= older_than);
            if stale {
                taken.remove(name);
            }
            Ok(stale)
        })
    }
}

/// Names reserved in etcd, shared by every gateway of the cluster. The client is made on
/// first use if etcd did not answer when the gateway started (until it does, a create with a
/// name is refused with a 503 naming etcd).
pub struct EtcdNames {
    etcd: busbar_etcd::conn::EtcdConnection,
    client: tokio::sync::OnceCell<busbar_etcd::client::Client>,
    pub prefix: String,
}

impl EtcdNames {
    /// Names under `prefix` in `etcd`, with `client` if one is connected already.
    pub fn new(
        etcd: busbar_etcd::conn::EtcdConnection,
        client: Option<busbar_etcd::client::Client>,
        prefix: String,
    ) -> EtcdNames {
        EtcdNames {
            etcd,
            client: tokio::sync::OnceCell::new_with(client),
            prefix,
        }
    }

    async fn client(&self) -> Result<&busbar_etcd::client::Client, NameError> {
        self.client
            .get_or_try_init(|| busbar_etcd::conn::connect(&self.etcd))
            .await
            .map_err(|e| NameError::Store(etcd::ReservationError::Etcd(e)))
    }
}

impl NameStore for EtcdNames {
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>> {
        Box::pin(async move {
            let client = self.client().await?;
            match etcd::reserve_name(client, &self.prefix, name, node).await {
                Ok(_) => Ok(()),
                Err(etcd::ReservationError::Taken {
                    node: owner,
                    reserved_at,
                    ..
                }) => Err(Taken {
                    owner,
                    age: Duration::from_secs(
                        busbar_runtime::unix_now().saturating_sub(reserved_at),
                    ),
                }
                .into()),
                Err(e) => Err(NameError::Store(e)),
            }
        })
    }

    fn free_stale<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<bool, NameError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let Some(r) = etcd::get_reservation(client, &self.prefix, name).await? else {
                return Ok(false);
            };
            let age = busbar_runtime::unix_now().saturating_sub(r.reserved_at);
            if r.node != owner || age < older_than.as_secs() {
                return Ok(false);
            }
            Ok(etcd::release_reservation(client, &self.prefix, &r).await?)
        })
    }

    fn release<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(client) = self.client().await else {
                return tracing::warn!(name, "cannot free the name reservation: etcd unreachable");
            };
            if let Err(e) = etcd::release_name(client, &self.prefix, name, node).await {
                tracing::warn!(name, error = %e, "cannot free the name reservation");
            }
        })
    }
}
