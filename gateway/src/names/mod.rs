//! Cluster-wide container names. Two gateways side by side (and two clients racing with
//! `docker run --name x`) must not both create `x`. While a create (or rename) is in flight its
//! name is reserved in a store both gateways share (etcd, see [`etcd`]; or memory,
//! for a gateway alone); once the call is done the container itself holds the name, and every
//! claim also asks the nodes whether a container already has it. So a reservation never
//! outlives its call, and containers made behind the gateways' backs are still seen.

pub mod etcd;

use futures_util::future::BoxFuture;

/// The name is already someone's.
#[derive(Debug, thiserror::Error)]
#[error("the container name is reserved by node {owner}")]
pub struct Taken {
    pub owner: String,
}

/// Where names are reserved.
pub trait NameStore: Send + Sync {
    /// Reserves `name` for a container being created on `node`.
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>>;
    /// Frees `name`, reserved for `node`.
    fn release<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(transparent)]
    Taken(#[from] Taken),
    /// The store could not be asked (etcd unreachable, a timeout, ...): the name's fate is
    /// unknown, so the create is refused rather than risked.
    #[error("cannot reserve the name: {0}")]
    Store(#[from] etcd::ReservationError),
    #[error("cannot reserve the name {0:?}: its reservation keeps changing")]
    Unsettled(String),
}

/// Names reserved in this gateway's memory: enough for one gateway (with several gateways,
/// use etcd). A reservation lives only while its call is in flight.
#[derive(Default)]
pub struct LocalNames {
    /// Short sections, no await inside: a std mutex.
    taken: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl NameStore for LocalNames {
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>> {
        Box::pin(async move {
            let mut taken = self.taken.lock().expect("names lock");
            match taken.get(name) {
                Some(owner) => Err(Taken {
                    owner: owner.clone(),
                }
                .into()),
                None => {
                    taken.insert(name.to_owned(), node.to_owned());
                    Ok(())
                }
            }
        })
    }

    fn release<'a>(&'a self, name: &'a str, _node: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.taken.lock().expect("names lock").remove(name);
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

/// A reservation older than this belongs to a call that can no longer be in flight (the
/// gateway that made it died mid-create): it is freed instead of blocking the name.
const STALE_AFTER_SECS: u64 = 120;

impl NameStore for EtcdNames {
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>> {
        use etcd as reg;
        Box::pin(async move {
            let client = self.client().await?;
            for _ in 0..2 {
                match reg::reserve_name(client, &self.prefix, name, node).await {
                    Ok(_) => return Ok(()),
                    Err(reg::ReservationError::Taken { node: owner, .. }) => {
                        let stale = reg::list_names(client, &self.prefix)
                            .await
                            .ok()
                            .and_then(|all| all.into_iter().find(|r| r.name == name))
                            .filter(|r| {
                                busbar_runtime::unix_now().saturating_sub(r.reserved_at)
                                    > STALE_AFTER_SECS
                            });
                        match stale {
                            Some(r) => {
                                tracing::warn!(name, node = %r.node, "freeing a stale name reservation");
                                let _ = reg::release_reservation(client, &self.prefix, &r).await;
                            }
                            None => return Err(Taken { owner }.into()),
                        }
                    }
                    Err(e) => return Err(NameError::Store(e)),
                }
            }
            Err(NameError::Unsettled(name.to_owned()))
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
