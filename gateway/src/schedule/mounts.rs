//! The named volumes a create mounts, read as dockerd reads them, so that the scheduler can put
//! the container where its volumes are (see [`super::Placement::volumes`]).
//!
//! Two places name a volume in a create body:
//! - `HostConfig.Binds`: `NAME:/dest[:mode]` (the `-v` form). As dockerd's Linux parser has
//!   it, the source is a named volume when it is not an absolute path; a single `/dest` (or
//!   `/dest:mode`) is an anonymous volume, which no node holds yet.
//! - `HostConfig.Mounts`: `{"Type": "volume", "Source": NAME, "Target": "/dest"}` (the
//!   `--mount` form); an empty `Source` is an anonymous volume.
//!
//! Keys are matched as Go's `encoding/json` matches them: the exact key first, else any key
//! equal to it ignoring ASCII case (`"binds"`, `"hostconfig"`, `"type"` are what the engine
//! reads as `Binds`, `HostConfig`, `Type`). A value of the wrong JSON type is a 400 naming
//! the field, as the engine answers it.

use serde_json::{Map, Value};

use super::create::CreateBody;
use super::ScheduleError;

/// The value of `key` in `object` as Go decodes a struct field: the exact key, else the first
/// key equal to it ignoring ASCII case.
pub fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The named volumes `body` mounts, in order, each once.
pub fn named_volumes(body: &CreateBody) -> Result<Vec<String>, ScheduleError> {
    let host_config = match body.host_config.get() {
        Some(h) => {
            Some(serde_json::to_value(h).map_err(|e| ScheduleError::InvalidBody(e.to_string()))?)
        }
        None => field(&body.rest, "HostConfig").cloned(),
    };
    let Some(Value::Object(host_config)) = host_config else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    };
    let wrong = |what: &str, expected: &str| {
        ScheduleError::InvalidBody(format!("HostConfig.{what}: expected {expected}"))
    };
    match field(&host_config, "Binds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(binds)) => {
            for bind in binds {
                let bind = bind
                    .as_str()
                    .ok_or_else(|| wrong("Binds", "a list of strings"))?;
                if let Some(name) = bind_volume(bind) {
                    add(name);
                }
            }
        }
        Some(_) => return Err(wrong("Binds", "a list of strings")),
    }
    match field(&host_config, "Mounts") {
        None | Some(Value::Null) => {}
        Some(Value::Array(mounts)) => {
            for mount in mounts {
                let mount = mount
                    .as_object()
                    .ok_or_else(|| wrong("Mounts", "a list of objects"))?;
                let text = |key: &str| match field(mount, key) {
                    None | Some(Value::Null) => Ok(""),
                    Some(Value::String(s)) => Ok(s.as_str()),
                    Some(_) => Err(wrong(&format!("Mounts[].{key}"), "a string")),
                };
                let (kind, source) = (text("Type")?, text("Source")?);
                if kind == "volume" && !source.is_empty() {
                    add(source);
                }
            }
        }
        Some(_) => return Err(wrong("Mounts", "a list of objects")),
    }
    Ok(names)
}

/// The volume name of a `-v` bind, if it names one: `data:/d`, `data:/d:ro`.
fn bind_volume(bind: &str) -> Option<&str> {
    let mut parts = bind.split(':');
    let source = parts.next()?;
    let dest = parts.next()?;
    (!source.is_empty() && !source.starts_with('/') && dest.starts_with('/')).then_some(source)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn volumes(body: Value) -> Result<Vec<String>, ScheduleError> {
        named_volumes(&CreateBody::from_value(body).expect("a create body"))
    }

    #[test]
    fn binds_and_mounts_name_volumes() {
        let body = json!({"Image": "busybox", "HostConfig": {
            "Binds": ["data:/d", "/host:/h", "/anon", "/anon2:ro", "logs:/l:ro,z", "data:/again"],
            "Mounts": [
                {"Type": "volume", "Source": "cache", "Target": "/c"},
                {"Type": "volume", "Source": "", "Target": "/anonymous"},
                {"Type": "bind", "Source": "/srv", "Target": "/srv"},
                {"Type": "tmpfs", "Target": "/t"},
            ],
        }});
        assert_eq!(volumes(body).unwrap(), ["data", "logs", "cache"]);
    }

    #[test]
    fn keys_are_read_as_go_reads_them() {
        let body = json!({"hostconfig": {"binds": ["a:/a"], "MOUNTS": [{"type": "volume", "source": "b", "target": "/b"}]}});
        assert_eq!(volumes(body).unwrap(), ["a", "b"]);
        let body = json!({"HostConfig": {"binds": ["a:/a"]}});
        assert_eq!(volumes(body).unwrap(), ["a"]);
    }

    #[test]
    fn nothing_mounted_is_no_volume_and_wrong_types_are_400s() {
        assert!(volumes(json!({"Image": "busybox"})).unwrap().is_empty());
        assert!(
            volumes(json!({"HostConfig": {"Binds": null, "Mounts": null}}))
                .unwrap()
                .is_empty()
        );
        for body in [
            json!({"HostConfig": {"Binds": "a:/a"}}),
            json!({"HostConfig": {"Binds": [5]}}),
            json!({"HostConfig": {"Mounts": [5]}}),
            json!({"HostConfig": {"Mounts": [{"Type": 1}]}}),
        ] {
            let e = volumes(body.clone()).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
        }
    }
}
