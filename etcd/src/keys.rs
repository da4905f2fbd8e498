//! The layout of busbar's keys in etcd, in one place. Every key lives under the cluster's
//! prefix (`--etcd-prefix`, default [`DEFAULT_PREFIX`]); several clusters can share an etcd
//! with different prefixes.
//!
//! | key | value | written by | lifetime |
//! | --- | --- | --- | --- |
//! | `<prefix>/nodes/<node>` | a [`NodeEntry`](crate::registry::NodeEntry) (JSON) | the node's agent | a lease the agent keeps alive |
//! | `<prefix>/names/<container-name>` | a name reservation (JSON) | gateways | while a create or rename is in flight |
//! | `<prefix>/chains/<scope>` | an `adapters.yml` document (YAML text) | `busbarctl chain apply` | until replaced |
//! | `<prefix>/status/<node>` | the chain status the node's agent runs (JSON) | the node's agent | kept (last report) |

use crate::EtcdError;

/// The prefix of every busbar key in etcd (`--etcd-prefix`).
pub const DEFAULT_PREFIX: &str = "/busbar";

/// Checks `--etcd-prefix` (`/busbar`, `/team/busbar`, ...). Pure: for config validation.
pub fn check_prefix(prefix: &str) -> Result<(), EtcdError> {
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err(EtcdError::BadPrefix {
            prefix: prefix.to_owned(),
        });
    }
    Ok(())
}

/// `<prefix>/nodes/`: where node entries live.
pub fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}/nodes/")
}

/// `<prefix>/nodes/<name>`.
pub fn node_key(prefix: &str, name: &str) -> String {
    format!("{prefix}/nodes/{name}")
}

/// `<prefix>/names/`: where container name reservations live.
pub fn names_prefix(prefix: &str) -> String {
    format!("{prefix}/names/")
}

/// `<prefix>/names/<name>`.
pub fn name_key(prefix: &str, name: &str) -> String {
    format!("{prefix}/names/{name}")
}

/// `<prefix>/chains/`.
pub fn chains_prefix(prefix: &str) -> String {
    format!("{prefix}/chains/")
}

/// `<prefix>/chains/<scope>`.
pub fn chain_key(prefix: &str, scope: &impl std::fmt::Display) -> String {
    format!("{prefix}/chains/{scope}")
}

/// `<prefix>/status/`.
pub fn status_prefix(prefix: &str) -> String {
    format!("{prefix}/status/")
}

/// `<prefix>/status/<node>`.
pub fn status_key(prefix: &str, node: &str) -> String {
    format!("{prefix}/status/{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for good in ["/busbar", "/a/b"] {
            check_prefix(good).unwrap();
        }
        for bad in ["busbar", "/busbar/", "/", "/a//b", ""] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(node_key("/busbar", "n1"), "/busbar/nodes/n1");
        assert!(node_key("/busbar", "n1").starts_with(&nodes_prefix("/busbar")));
    }
}
