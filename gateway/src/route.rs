//! Which kind of call a Docker API request is, for the cluster: answered by the gateway,
//! aggregated over every node, routed to the node that owns an object, scheduled, or
//! broadcast. Pure: a function of method and the canonical path ([`ApiPath`]: decoded, as
//! the engine routes it) and of the node names, for `node/name` refs.
//!
//! The API version prefix (`/v1.41`) is optional, as for the engine, and kept when the
//! request is forwarded.

use busbar_api::ApiPath;
use http::Method;

/// A request's class. Strings are path segments, decoded (as the engine reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    Events,
    SystemDf,
    /// `POST /{containers,images,networks,volumes,build}/prune`: on every node, merged.
    Prune(&'static str),
    ContainerList,
    ContainerCreate,
    /// Anything under `/containers/{ref}`; `rest` is what follows the ref ("" for DELETE),
    /// `node` the node named by a `node/name` ref.
    Container {
        node: Option<String>,
        reference: String,
        rest: String,
    },
    /// `POST /commit?container=REF`: on the node that has the container.
    Commit,
    /// `/exec/{id}/...`.
    Exec {
        id: String,
        rest: String,
    },
    ImageList,
    /// Pull, import, load: on every healthy node.
    ImageBroadcast,
    /// `/images/{name}/...` and `DELETE /images/{name}`.
    Image {
        name: String,
        rest: String,
    },
    Build,
    NetworkList,
    NetworkCreate,
    Network {
        node: Option<String>,
        reference: String,
        rest: String,
    },
    VolumeList,
    VolumeCreate,
    Volume {
        node: Option<String>,
        reference: String,
    },
    /// Swarm-mode APIs (`/swarm`, `/services`, `/nodes`, `/tasks`, `/secrets`, `/configs`):
    /// answered as an engine outside swarm mode answers them. `init_or_join`: `POST
    /// /swarm/init` or `/swarm/join`, which would turn a node into a swarm member; `leave`:
    /// `POST /swarm/leave`.
    Swarm {
        init_or_join: bool,
        leave: bool,
    },
    /// Plugin APIs: not a cluster-of-engines concept.
    Unsupported,
    /// Anything else (auth, search, distribution, session): any healthy node.
    AnyNode,
}

/// Classifies `method path`. `is_node` says whether a name is a node.
pub fn classify(method: &Method, path: &ApiPath<'_>, is_node: impl Fn(&str) -> bool) -> Route {
    let segs = path.segments();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let rest_of = |from: usize| segs[from..].join("/");
    match segs.as_slice() {
        ["_ping"] => Route::Ping,
        ["version"] => Route::Version,
        ["info"] => Route::Info,
        ["events"] => Route::Events,
        ["system", "df"] => Route::SystemDf,
        [kind @ ("containers" | "images" | "networks" | "volumes" | "build"), "prune"] if post => {
            Route::Prune(match *kind {
                "containers" => "containers",
                "images" => "images",
                "networks" => "networks",
                "volumes" => "volumes",
                _ => "build",
            })
        }
        ["containers", "json"] | ["containers", "ps"] if get => Route::ContainerList,
        ["containers", "create"] if post => Route::ContainerCreate,
        ["containers", first, ..] => {
            let node_form =
                is_node(first) && segs.len() >= if method == Method::DELETE { 3 } else { 4 };
            if node_form {
                Route::Container {
                    node: Some(first.to_string()),
                    reference: segs[2].to_owned(),
                    rest: rest_of(3),
                }
            } else {
                Route::Container {
                    node: None,
                    reference: first.to_string(),
                    rest: rest_of(2),
                }
            }
        }
        ["commit"] if post => Route::Commit,
        ["exec", id, ..] => Route::Exec {
            id: id.to_string(),
            rest: rest_of(2),
        },
        ["images", "json"] if get => Route::ImageList,
        ["images", "create"] | ["images", "load"] if post => Route::ImageBroadcast,
        ["images", "get"] if get => Route::AnyNode,
        ["images", "search"] => Route::AnyNode,
        ["images", ..] if segs.len() >= 2 => {
            // Image names contain slashes: the action is the last segment, except for DELETE.
            let actions = ["json", "history", "get", "push", "tag"];
            match segs.last() {
                Some(last)
                    if method != Method::DELETE && segs.len() >= 3 && actions.contains(last) =>
                {
                    Route::Image {
                        name: segs[1..segs.len() - 1].join("/"),
                        rest: last.to_string(),
                    }
                }
                _ => Route::Image {
                    name: rest_of(1),
                    rest: String::new(),
                },
            }
        }
        ["build"] if post => Route::Build,
        ["networks"] if get => Route::NetworkList,
        ["networks", "create"] if post => Route::NetworkCreate,
        ["networks", first, ..] => {
            if is_node(first) && segs.len() >= 3 {
                Route::Network {
                    node: Some(first.to_string()),
                    reference: segs[2].to_owned(),
                    rest: rest_of(3),
                }
            } else {
                Route::Network {
                    node: None,
                    reference: first.to_string(),
                    rest: rest_of(2),
                }
            }
        }
        ["volumes"] if get => Route::VolumeList,
        ["volumes", "create"] if post => Route::VolumeCreate,
        ["volumes", first, second] if is_node(first) => Route::Volume {
            node: Some(first.to_string()),
            reference: second.to_string(),
        },
        ["volumes", name] => Route::Volume {
            node: None,
            reference: name.to_string(),
        },
        ["swarm", rest @ ..] => Route::Swarm {
            init_or_join: post && matches!(rest, ["init"] | ["join"]),
            leave: post && rest == ["leave"],
        },
        ["services", ..] | ["nodes", ..] | ["tasks", ..] | ["secrets", ..] | ["configs", ..] => {
            Route::Swarm {
                init_or_join: false,
                leave: false,
            }
        }
        ["plugins", ..] => Route::Unsupported,
        _ => Route::AnyNode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, path: &str) -> Route {
        let path = ApiPath::parse(path).expect("a canonical path");
        classify(&method, &path, |n| n == "node1" || n == "node2")
    }

    #[test]
    fn versioned_and_not() {
        assert_eq!(c(Method::GET, "/v1.41/_ping"), Route::Ping);
        assert_eq!(c(Method::HEAD, "/_ping"), Route::Ping);
    }

    #[test]
    fn containers() {
        assert_eq!(
            c(Method::GET, "/v1.41/containers/json"),
            Route::ContainerList
        );
        assert_eq!(
            c(Method::POST, "/v1.41/containers/create"),
            Route::ContainerCreate
        );
        assert_eq!(
            c(Method::GET, "/v1.41/containers/web/json"),
            Route::Container {
                node: None,
                reference: "web".into(),
                rest: "json".into()
            }
        );
        assert_eq!(
            c(Method::GET, "/v1.41/containers/node1/web/json"),
            Route::Container {
                node: Some("node1".into()),
                reference: "web".into(),
                rest: "json".into()
            }
        );
        assert_eq!(
            c(Method::DELETE, "/v1.41/containers/node1/web"),
            Route::Container {
                node: Some("node1".into()),
                reference: "web".into(),
                rest: "".into()
            }
        );
        // A container named like a node, addressed directly.
        assert_eq!(
            c(Method::GET, "/containers/node1/json"),
            Route::Container {
                node: None,
                reference: "node1".into(),
                rest: "json".into()
            }
        );
        assert_eq!(
            c(Method::POST, "/containers/abc/attach"),
            Route::Container {
                node: None,
                reference: "abc".into(),
                rest: "attach".into()
            }
        );
        assert_eq!(
            c(Method::POST, "/v1.41/containers/prune"),
            Route::Prune("containers")
        );
    }

    #[test]
    fn images_with_slashes() {
        assert_eq!(
            c(Method::GET, "/v1.41/images/library/busybox:latest/json"),
            Route::Image {
                name: "library/busybox:latest".into(),
                rest: "json".into()
            }
        );
        assert_eq!(
            c(Method::DELETE, "/v1.41/images/busybox:latest"),
            Route::Image {
                name: "busybox:latest".into(),
                rest: "".into()
            }
        );
        assert_eq!(
            c(Method::POST, "/v1.41/images/busybox/tag"),
            Route::Image {
                name: "busybox".into(),
                rest: "tag".into()
            }
        );
        assert_eq!(c(Method::POST, "/v1.41/images/load"), Route::ImageBroadcast);
        assert_eq!(
            c(Method::POST, "/v1.41/images/create"),
            Route::ImageBroadcast
        );
        assert_eq!(c(Method::GET, "/v1.41/images/json"), Route::ImageList);
    }

    #[test]
    fn exec_networks_volumes_and_the_rest() {
        assert_eq!(
            c(Method::POST, "/v1.41/exec/e1/start"),
            Route::Exec {
                id: "e1".into(),
                rest: "start".into()
            }
        );
        assert_eq!(c(Method::GET, "/v1.41/networks"), Route::NetworkList);
        assert_eq!(
            c(Method::GET, "/v1.41/networks/node2/bridge"),
            Route::Network {
                node: Some("node2".into()),
                reference: "bridge".into(),
                rest: "".into()
            }
        );
        assert_eq!(
            c(Method::GET, "/v1.41/volumes/node1/v"),
            Route::Volume {
                node: Some("node1".into()),
                reference: "v".into()
            }
        );
        let not_swarm = |init_or_join, leave| Route::Swarm {
            init_or_join,
            leave,
        };
        assert_eq!(c(Method::GET, "/v1.41/swarm"), not_swarm(false, false));
        assert_eq!(
            c(Method::POST, "/v1.41/swarm/leave"),
            not_swarm(false, true)
        );
        assert_eq!(c(Method::POST, "/swarm/init"), not_swarm(true, false));
        assert_eq!(c(Method::GET, "/v1.41/services"), not_swarm(false, false));
        assert_eq!(c(Method::GET, "/v1.41/plugins"), Route::Unsupported);
        assert_eq!(c(Method::POST, "/v1.41/auth"), Route::AnyNode);
        assert_eq!(c(Method::POST, "/v1.41/commit"), Route::Commit);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "containers", "images", "networks", "volumes", "exec", "build", "json", "create",
                "prune", "node1", "node2", "web", "start", "attach", "tag", "push", "get", "load",
                "search", "history", "ps", "swarm", "plugins", "_ping", "version", "info", "system",
                "df", "events", "",
            ])
            .prop_map(str::to_owned),
            1 => "[a-z0-9:.@ %?é-]{1,8}",
        ]
    }

    proptest! {
        #![proptest_config(crate::strategies::config(2000))]

        /// Any canonical path and method is classified, and what the route names is the path:
        /// node, reference and rest put back together give its segments.
        #[test]
        fn classification_keeps_the_path(
            version in prop::option::of(Just("/v1.41")),
            segs in prop::collection::vec(segment(), 1..6),
            method in prop::sample::select(vec![
                Method::GET, Method::HEAD, Method::POST, Method::DELETE, Method::PUT,
            ]),
        ) {
            let segs: Vec<_> = segs.iter().map(|s| busbar_api::path::encode_segment(s)).collect();
            let target = format!("{}/{}", version.unwrap_or(""), segs.join("/"));
            // Empty segments and the like are refused before classification.
            let Ok(path) = ApiPath::parse(&target) else { return Ok(()) };
            let is_node = |n: &str| n == "node1" || n == "node2";
            let route = classify(&method, &path, is_node);
            let segs = path.segments();
            // A trailing `/` (an empty last segment) may be dropped by the object routes: the
            // call is then forwarded without it.
            let trimmed = match segs.split_last() {
                Some((&"", init)) if init.len() > 1 => init.to_vec(),
                _ => segs.clone(),
            };
            let same = |got: Vec<String>| got == segs || got == trimmed;
            let rebuilt = |kind: &str, node: &Option<String>, name: &str, rest: &str| {
                let mut v = vec![kind.to_owned()];
                v.extend(node.clone());
                v.push(name.to_owned());
                if !rest.is_empty() {
                    v.extend(rest.split('/').map(str::to_owned));
                }
                v
            };
            match &route {
                Route::Container { node, reference, rest } => {
                    prop_assert!(node.as_deref().is_none_or(is_node));
                    prop_assert!(same(rebuilt("containers", node, reference, rest)), "{:?}", segs);
                }
                Route::Network { node, reference, rest } => {
                    prop_assert!(node.as_deref().is_none_or(is_node));
                    prop_assert!(same(rebuilt("networks", node, reference, rest)), "{:?}", segs);
                }
                Route::Volume { node, reference } => {
                    prop_assert!(same(rebuilt("volumes", node, reference, "")), "{:?}", segs);
                }
                Route::Exec { id, rest } => {
                    prop_assert!(same(rebuilt("exec", &None, id, rest)), "{:?}", segs);
                }
                Route::Image { name, rest } => {
                    let mut want = vec!["images".to_owned()];
                    want.extend(name.split('/').map(str::to_owned));
                    if !rest.is_empty() {
                        want.push(rest.clone());
                    }
                    prop_assert!(same(want), "{:?}", segs);
                }
                _ => {}
            }
        }
    }
}
