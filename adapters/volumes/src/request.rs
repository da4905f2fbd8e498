//! What a hook call is about, read from Powerstrip's `Request` and `Body` (pure, no IO): which
//! Docker API call ([`Call`]), which named volumes a container create mounts
//! ([`named_volumes`]), and whether a volume create asks for a portable volume.

use serde_json::Value;

/// The label that makes a volume portable (`docker volume create --label busbar.portable=true`).
pub const PORTABLE_LABEL: &str = "busbar.portable";

/// The Docker API calls this adapter has a part in; anything else passes untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `POST /volumes/create`
    VolumeCreate,
    /// `GET /volumes`
    VolumeList,
    /// `GET /volumes/{name}`
    VolumeInspect(String),
    /// `DELETE /volumes/{name}`
    VolumeRemove(String),
    /// `POST /volumes/prune`
    VolumePrune,
    /// `POST /containers/create`
    ContainerCreate,
    Other,
}

impl Call {
    /// The call that `method` on `request` (Powerstrip's request target: path and query, the
    /// version prefix optional) is.
    pub fn of(method: &str, request: &str) -> Call {
        let path = request.split(['?', '#']).next().unwrap_or("");
        let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments
            .first()
            .is_some_and(|s| s.starts_with('v') && s[1..].contains('.'))
        {
            segments.remove(0);
        }
        match (method, segments.as_slice()) {
            ("POST", ["volumes", "create"]) => Call::VolumeCreate,
            ("POST", ["volumes", "prune"]) => Call::VolumePrune,
            ("GET", ["volumes"]) => Call::VolumeList,
            ("GET", ["volumes", name]) => Call::VolumeInspect(decode(name)),
            ("DELETE", ["volumes", name]) => Call::VolumeRemove(decode(name)),
            ("POST", ["containers", "create"]) => Call::ContainerCreate,
            _ => Call::Other,
        }
    }
}

/// Whether a volume (a create's body, or the engine's description) carries the portable label.
pub fn is_portable(volume: &Value) -> bool {
    volume["Labels"][PORTABLE_LABEL]
        .as_str()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether `name` is a name Docker gives a volume (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`): what a
/// create's mount source must be to name a volume rather than a host path.
pub fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The named volumes a container create's body mounts, sorted, each once: the sources of
/// `HostConfig.Binds` (`data1:/data[:ro]`) that are volume names, not host paths, and of
/// `HostConfig.Mounts` of type `volume` (`--mount source=data1,target=/data`).
pub fn named_volumes(body: &Value) -> Vec<String> {
    let host = &body["HostConfig"];
    let binds = host["Binds"].as_array().into_iter().flatten();
    let from_binds = binds
        .filter_map(Value::as_str)
        .filter_map(|b| b.split(':').next());
    let mounts = host["Mounts"].as_array().into_iter().flatten();
    let from_mounts = mounts
        .filter(|m| m["Type"].as_str().unwrap_or("volume") == "volume")
        .filter_map(|m| m["Source"].as_str());
    let mut names: Vec<String> = from_binds
        .chain(from_mounts)
        .filter(|n| is_volume_name(n))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Undoes percent-encoding in a path segment (a malformed escape is kept as written).
fn decode(segment: &str) -> String {
    busbar_adapter::headers::decode(segment)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn calls_are_known_by_method_and_path_with_or_without_a_version() {
        let cases = [
            ("POST", "/v1.41/volumes/create", Call::VolumeCreate),
            ("POST", "/volumes/create", Call::VolumeCreate),
            ("GET", "/v1.41/volumes?filters=%7B%7D", Call::VolumeList),
            (
                "GET",
                "/v1.41/volumes/data1",
                Call::VolumeInspect("data1".into()),
            ),
            (
                "DELETE",
                "/v1.41/volumes/data1?force=1",
                Call::VolumeRemove("data1".into()),
            ),
            ("POST", "/v1.41/volumes/prune", Call::VolumePrune),
            (
                "POST",
                "/v1.41/containers/create?name=web",
                Call::ContainerCreate,
            ),
            ("POST", "/containers/create", Call::ContainerCreate),
            ("POST", "/v1.41/containers/web/start", Call::Other),
            ("GET", "/v1.41/volumes/a/b", Call::Other),
            ("PUT", "/v1.41/volumes/data1", Call::Other),
            ("GET", "", Call::Other),
        ];
        for (method, request, call) in cases {
            assert_eq!(Call::of(method, request), call, "{method} {request}");
        }
    }

    #[test]
    fn a_create_mounts_the_named_volumes_of_binds_and_mounts_not_host_paths() {
        let body = json!({
            "Image": "busybox",
            "HostConfig": {
                "Binds": ["data1:/data", "/srv:/srv:ro", "logs:/logs:ro", "data1:/again", "./rel:/x"],
                "Mounts": [
                    {"Type": "volume", "Source": "cache", "Target": "/cache"},
                    {"Type": "bind", "Source": "/etc", "Target": "/e"},
                    {"Type": "tmpfs", "Target": "/t"},
                    {"Type": "volume", "Target": "/anonymous"},
                    {"Source": "typeless", "Target": "/tl"}
                ]
            }
        });
        assert_eq!(named_volumes(&body), ["cache", "data1", "logs", "typeless"]);
        assert!(named_volumes(&json!({"Image": "busybox"})).is_empty());
        assert!(
            named_volumes(&json!({"HostConfig": {"Binds": null, "Mounts": [1, "x"]}})).is_empty()
        );
        assert!(named_volumes(&json!("not an object")).is_empty());
    }

    #[test]
    fn portable_means_the_label_says_true() {
        assert!(is_portable(&json!({"Labels": {"busbar.portable": "true"}})));
        assert!(is_portable(&json!({"Labels": {"busbar.portable": "TRUE"}})));
        assert!(!is_portable(&json!({"Labels": {"busbar.portable": "no"}})));
        assert!(!is_portable(&json!({"Labels": null})));
        assert!(!is_portable(&json!({})));
        assert!(is_volume_name("data1") && is_volume_name("a_b.c-d"));
        assert!(!is_volume_name("") && !is_volume_name("/srv") && !is_volume_name(".x"));
        assert!(!is_volume_name("node1/data1"));
    }
}
