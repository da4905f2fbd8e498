//! What kind of exchange an endpoint is: one that hijacks the connection, one whose answer
//! streams without end, one whose head the client needs at once; and its template for logs.
//! Decided from the canonical path (see [`crate::path`]) and the query as the engine reads it
//! (see [`crate::query`]).

use http::Method;

use crate::path::ApiPath;
use crate::query;

/// Whether the engine may hijack the connection for this call: `POST
/// /containers/{id}/attach` and `POST /exec/{id}/start` (with or without a version prefix).
pub fn is_hijack(method: &Method, path: &ApiPath<'_>) -> bool {
    method == Method::POST
        && matches!(
            path.segments().as_slice(),
            ["containers", id, "attach"] | ["exec", id, "start"] if !id.is_empty()
        )
}

/// Why this call must never be shown to adapters, if it must not: `POST /auth` (`docker
/// login`) carries the registry password in its body, and its answer may carry an identity
/// token. Registry credentials in headers (`X-Registry-Auth`, `X-Registry-Config`) never
/// reach adapters anyway: hooks see no header of the client's.
pub fn carries_credentials(method: &Method, path: &ApiPath<'_>) -> Option<&'static str> {
    (method == Method::POST && path.segments().as_slice() == ["auth"]).then_some(
        "docker login (/auth) carries the registry password and its answer an identity token",
    )
}

/// Why the engine's answer to this call must reach the client as it comes, never held back
/// until it ends, if it must: streams without an end (`events`, `logs?follow=1`, streaming
/// `stats`, `attach`), and `containers/{id}/wait`, whose head the CLI waits for before it
/// starts the container. `query` is the raw query string.
pub fn must_stream(path: &ApiPath<'_>, query: Option<&str>) -> Option<&'static str> {
    match path.segments().as_slice() {
        ["events"] => Some("endless stream (events)"),
        ["containers", _, "logs"] if query::flag(query, "follow") => {
            Some("endless stream (logs follow)")
        }
        ["containers", _, "stats"] if query::flag_or(query, "stream", true) => {
            Some("endless stream (stats)")
        }
        ["containers", _, "attach"] => Some("endless stream (attach)"),
        ["containers", _, "wait"] => Some("wait: the client needs its head at once"),
        _ => None,
    }
}

/// The path as a template for logs: the unversioned path with the names and ids a client put
/// in it replaced by `{id}` or `{name}` (`/containers/{id}/json`, `/images/{name}/push`), so
/// that lines group by endpoint and name nothing. A path the engine has no endpoint for is `(other)`.
pub fn template(path: &ApiPath<'_>) -> String {
    /// What follows a collection without naming one of its objects.
    const COLLECTION_ACTIONS: &[&str] = &["json", "create", "prune", "load", "get", "search"];
    /// What an image name (which may hold `/`) is followed by.
    const IMAGE_ACTIONS: &[&str] = &["json", "history", "push", "tag", "get"];
    let segs = path.segments();
    let [first, rest @ ..] = segs.as_slice() else {
        return "/".into();
    };
    let object = match *first {
        "containers" | "exec" | "networks" | "services" | "nodes" | "tasks" | "secrets"
        | "configs" => "{id}",
        "volumes" | "plugins" => "{name}",
        "images" | "distribution" => {
            return match rest {
                [] => format!("/{first}"),
                [action] if COLLECTION_ACTIONS.contains(action) => format!("/{first}/{action}"),
                [.., last] if rest.len() > 1 && IMAGE_ACTIONS.contains(last) => {
                    format!("/{first}/{{name}}/{last}")
                }
                _ => format!("/{first}/{{name}}"),
            };
        }
        "_ping" | "version" | "info" | "events" | "auth" | "build" | "commit" | "swarm"
        | "system" | "session" | "grpc" => return path.unversioned().to_owned(),
        "" => return "/".into(),
        _ => return "(other)".into(),
    };
    match rest {
        [] => format!("/{first}"),
        [action] if COLLECTION_ACTIONS.contains(action) => format!("/{first}/{action}"),
        [_, tail @ ..] if tail.len() <= 1 => {
            let mut out = format!("/{first}/{object}");
            for t in tail {
                out.push('/');
                out.push_str(t);
            }
            out
        }
        _ => format!("/{first}/{object}/..."),
    }
}

/// The endpoint's class, for metrics: one of a small fixed set of names (`container_create`,
/// `container_start`, `container_list`, `container_logs`, `exec_create`, `exec_start`,
/// `image_pull`, `ping`, ...; see [`CLASSES`]), never a name or an id the client wrote, so that
/// a label made of it stays bounded whatever clients send. What has no class of its own is
/// `other`.
pub fn class(method: &Method, path: &ApiPath<'_>) -> &'static str {
    let segs = path.segments();
    let delete = method == Method::DELETE;
    match segs.as_slice() {
        ["_ping"] => "ping",
        ["version"] => "version",
        ["info"] => "info",
        ["events"] => "events",
        ["auth"] => "login",
        ["build", ..] => "build",
        ["commit"] => "commit",
        ["system", "df"] => "system_df",
        ["session"] => "session",
        ["containers", "json"] => "container_list",
        ["containers", "create"] => "container_create",
        ["containers", "prune"] => "container_prune",
        ["containers", _] if delete => "container_remove",
        ["containers", _, action] => lookup(CONTAINER_ACTIONS, action),
        ["exec", _, "start"] => "exec_start",
        ["exec", _, "json"] => "exec_inspect",
        ["exec", _, "resize"] => "exec_resize",
        ["images", "json"] => "image_list",
        ["images", "create"] => "image_pull",
        ["images", "load"] => "image_load",
        ["images", "get"] => "image_save",
        ["images", "prune"] => "image_prune",
        ["images", "search"] => "image_search",
        ["images", _, ..] if delete => "image_remove",
        ["images", _, .., "json"] => "image_inspect",
        ["images", _, .., "history"] => "image_history",
        ["images", _, .., "push"] => "image_push",
        ["images", _, .., "tag"] => "image_tag",
        ["images", _, .., "get"] => "image_save",
        ["distribution", ..] => "distribution",
        ["networks"] => "network_list",
        ["networks", "create"] => "network_create",
        ["networks", "prune"] => "network_prune",
        ["networks", _] if delete => "network_remove",
        ["networks", _] => "network_inspect",
        ["networks", _, "connect"] => "network_connect",
        ["networks", _, "disconnect"] => "network_disconnect",
        ["volumes"] => "volume_list",
        ["volumes", "create"] => "volume_create",
        ["volumes", "prune"] => "volume_prune",
        ["volumes", _] if delete => "volume_remove",
        ["volumes", _] => "volume_inspect",
        ["swarm", ..]
        | ["services", ..]
        | ["nodes", ..]
        | ["tasks", ..]
        | ["secrets", ..]
        | ["configs", ..] => "swarm",
        ["plugins", ..] => "plugin",
        _ => "other",
    }
}

/// What `POST /containers/{id}/ACTION` (and `GET`) is, by its last segment.
const CONTAINER_ACTIONS: &[(&str, &str)] = &[
    ("json", "container_inspect"),
    ("start", "container_start"),
    ("stop", "container_stop"),
    ("restart", "container_restart"),
    ("kill", "container_kill"),
    ("wait", "container_wait"),
    ("logs", "container_logs"),
    ("attach", "container_attach"),
    ("top", "container_top"),
    ("stats", "container_stats"),
    ("changes", "container_changes"),
    ("export", "container_export"),
    ("resize", "container_resize"),
    ("pause", "container_pause"),
    ("unpause", "container_unpause"),
    ("update", "container_update"),
    ("rename", "container_rename"),
    ("archive", "container_archive"),
    ("exec", "exec_create"),
];

fn lookup(table: &[(&str, &'static str)], key: &str) -> &'static str {
    table
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("other", |(_, v)| *v)
}

/// Every value [`class`] can return.
pub const CLASSES: &[&str] = &[
    "ping",
    "version",
    "info",
    "events",
    "login",
    "build",
    "commit",
    "system_df",
    "session",
    "container_list",
    "container_create",
    "container_prune",
    "container_remove",
    "container_inspect",
    "container_start",
    "container_stop",
    "container_restart",
    "container_kill",
    "container_wait",
    "container_logs",
    "container_attach",
    "container_top",
    "container_stats",
    "container_changes",
    "container_export",
    "container_resize",
    "container_pause",
    "container_unpause",
    "container_update",
    "container_rename",
    "container_archive",
    "exec_create",
    "exec_start",
    "exec_inspect",
    "exec_resize",
    "image_list",
    "image_pull",
    "image_load",
    "image_save",
    "image_prune",
    "image_search",
    "image_remove",
    "image_inspect",
    "image_history",
    "image_push",
    "image_tag",
    "distribution",
    "network_list",
    "network_create",
    "network_prune",
    "network_remove",
    "network_inspect",
    "network_connect",
    "network_disconnect",
    "volume_list",
    "volume_create",
    "volume_prune",
    "volume_remove",
    "volume_inspect",
    "swarm",
    "plugin",
    "other",
];

#[cfg(test)]
mod tests {
    #[test]
    fn only_login_carries_credentials_in_its_body() {
        use super::*;
        let p = |s| ApiPath::parse(s).unwrap();
        assert!(carries_credentials(&Method::POST, &p("/v1.41/auth")).is_some());
        assert!(carries_credentials(&Method::POST, &p("/auth")).is_some());
        assert!(carries_credentials(&Method::GET, &p("/auth")).is_none());
        assert!(carries_credentials(&Method::POST, &p("/v1.41/containers/create")).is_none());
    }

    #[test]
    fn classes_name_no_object() {
        use super::*;
        let c = |m: &str, s| class(&m.parse().unwrap(), &ApiPath::parse(s).unwrap());
        assert_eq!(c("POST", "/v1.41/containers/create"), "container_create");
        assert_eq!(c("POST", "/containers/web1/start"), "container_start");
        assert_eq!(c("GET", "/v1.41/containers/json"), "container_list");
        assert_eq!(c("GET", "/v1.41/containers/abc/logs"), "container_logs");
        assert_eq!(c("POST", "/v1.41/containers/abc/exec"), "exec_create");
        assert_eq!(c("POST", "/v1.41/exec/e1/start"), "exec_start");
        assert_eq!(c("DELETE", "/v1.41/containers/abc"), "container_remove");
        assert_eq!(c("GET", "/v1.41/containers/abc"), "other");
        assert_eq!(c("POST", "/v1.41/containers/abc/frobnicate"), "other");
        assert_eq!(c("DELETE", "/v1.41/images/library/busybox"), "image_remove");
        assert_eq!(c("GET", "/v1.41/images/reg:5000/a/b/json"), "image_inspect");
        assert_eq!(c("POST", "/v1.41/images/create"), "image_pull");
        assert_eq!(c("GET", "/_ping"), "ping");
        assert_eq!(c("HEAD", "/_ping"), "ping");
        assert_eq!(c("GET", "/v1.41/system/df"), "system_df");
        assert_eq!(c("GET", "/v1.41/system/anything/else"), "other");
        assert_eq!(c("GET", "/v1.41/secret-looking/path/x"), "other");
        assert_eq!(c("GET", "/"), "other");
    }

    #[test]
    fn templates_name_no_object() {
        use super::*;
        let t = |s| template(&ApiPath::parse(s).unwrap());
        assert_eq!(t("/v1.41/containers/create"), "/containers/create");
        assert_eq!(t("/v1.41/containers/json"), "/containers/json");
        assert_eq!(t("/v1.41/containers/web1/json"), "/containers/{id}/json");
        assert_eq!(t("/containers/abc"), "/containers/{id}");
        assert_eq!(t("/v1.41/exec/abc/start"), "/exec/{id}/start");
        assert_eq!(t("/v1.41/volumes/data1"), "/volumes/{name}");
        assert_eq!(
            t("/v1.41/images/library/busybox/json"),
            "/images/{name}/json"
        );
        assert_eq!(t("/v1.41/images/reg:5000/a/b"), "/images/{name}");
        assert_eq!(t("/v1.41/images/create"), "/images/create");
        assert_eq!(t("/v1.41/_ping"), "/_ping");
        assert_eq!(t("/"), "/");
        assert_eq!(t("/v1.41/secret-looking/path/x"), "(other)");
        assert_eq!(t("/containers/a/b/c/d"), "/containers/{id}/...");
    }

    use super::*;

    fn p(s: &str) -> ApiPath<'_> {
        ApiPath::parse(s).unwrap()
    }

    #[test]
    fn attach_and_exec_start_hijack_with_and_without_version() {
        for path in [
            "/v1.41/containers/abc/attach",
            "/containers/abc/attach",
            "/v1.24/exec/e1/start",
            "/exec/e1/start",
            "/v1.41/containers/%61bc/attach",
        ] {
            assert!(is_hijack(&Method::POST, &p(path)), "{path}");
        }
        for path in [
            "/v1.41/containers/abc/start",
            "/containers/json",
            "/exec/e1/json",
        ] {
            assert!(!is_hijack(&Method::POST, &p(path)), "{path}");
        }
        assert!(!is_hijack(&Method::GET, &p("/containers/abc/attach")));
    }

    #[test]
    fn endless_streams_with_the_engine_s_flags() {
        assert!(must_stream(&p("/v1.41/events"), None).is_some());
        assert!(must_stream(&p("/containers/c/logs"), Some("follow=yes")).is_some());
        assert!(must_stream(&p("/containers/c/logs"), Some("follow=0")).is_none());
        assert!(must_stream(&p("/containers/c/stats"), None).is_some());
        assert!(must_stream(&p("/containers/c/stats"), Some("stream=false")).is_none());
        assert!(must_stream(&p("/v1.41/containers/c/wait"), None).is_some());
        assert!(must_stream(&p("/v1.41/containers/json"), Some("all=1")).is_none());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn path() -> impl Strategy<Value = String> {
        let seg = prop_oneof![
            prop::sample::select(vec![
                "containers",
                "exec",
                "attach",
                "start",
                "logs",
                "stats",
                "wait",
                "events",
                "v1.41",
                "json",
                "",
                "%61ttach",
                "c1",
            ])
            .prop_map(str::to_owned),
            "[a-z%0-9]{0,6}",
        ];
        prop::collection::vec(seg, 0..5).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest! {
        #![proptest_config(crate::proptest_config(1000))]

        #[test]
        fn endpoint_kinds_never_panic(
            raw in path(),
            method in prop::sample::select(vec![Method::GET, Method::POST, Method::DELETE, Method::HEAD]),
            query in prop::option::of("[a-z=&01%]{0,12}"),
        ) {
            let Ok(p) = ApiPath::parse(&raw) else { return Ok(()) };
            if is_hijack(&method, &p) {
                prop_assert_eq!(&method, &Method::POST);
                let segs = p.segments();
                prop_assert!(matches!(segs.as_slice(), [_, id, _] if !id.is_empty()));
                prop_assert!(matches!(segs.last(), Some(&"attach" | &"start")));
            }
            let _ = must_stream(&p, query.as_deref());
            prop_assert!(CLASSES.contains(&class(&method, &p)));
        }
    }
}
