//! What is never shown as it is: credentials in headers, and the values of a container's
//! environment in the hook call log.
//!
//! - [`CREDENTIAL_HEADERS`]: `Authorization`, `Proxy-Authorization`, `X-Registry-Auth` (the
//!   registry credentials of `docker pull`/`push`), `X-Registry-Config` (those of `build`),
//!   `Cookie` and `Set-Cookie`. A v2 adapter is given every other header as it is, and these
//!   as [`REDACTED`] unless its chain entry reveals them (`reveal_headers`); the hook call log
//!   always shows them as [`REDACTED`].
//! - [`env_values`]: `Env` lists (`["KEY=value", ...]`, in a create's body, an exec's, an
//!   inspect's `Config`) keep their keys and lose their values in the call log, unless asked.

use serde_json::Value;

/// What a hidden value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Headers that carry credentials (lower-case).
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-registry-auth",
    "x-registry-config",
    "cookie",
    "set-cookie",
];

/// Whether `name` (any case) is one of [`CREDENTIAL_HEADERS`].
pub fn is_credential(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(name))
}

/// Replaces the value of every `"Env": ["KEY=value", ...]` list in `doc`, at any depth, with
/// `KEY=<redacted>`.
pub fn env_values(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::Array(items) if key == "Env" => {
                        for item in items.iter_mut() {
                            if let Value::String(s) = item {
                                let name = s.split_once('=').map_or(s.as_str(), |(k, _)| k);
                                *s = format!("{name}={REDACTED}");
                            }
                        }
                    }
                    other => env_values(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(env_values),
        _ => {}
    }
}

/// [`env_values`] on a Powerstrip body, JSON text inside a string: the text is parsed,
/// redacted and written again when it holds an `Env`; left as it is otherwise.
pub fn env_in_text(text: &str) -> Option<String> {
    if !text.contains("\"Env\"") {
        return None;
    }
    let mut doc: Value = serde_json::from_str(text).ok()?;
    env_values(&mut doc);
    Some(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_values_go_and_keys_stay_at_any_depth() {
        let mut doc =
            json!({"Env": ["A=1", "B"], "Config": {"Env": ["PASSWORD=s3cret=x"]}, "Cmd": ["A=1"]});
        env_values(&mut doc);
        assert_eq!(
            doc,
            json!({"Env": ["A=<redacted>", "B=<redacted>"], "Config": {"Env": ["PASSWORD=<redacted>"]}, "Cmd": ["A=1"]})
        );
        let text = env_in_text(r#"{"Image":"busybox","Env":["TOKEN=abc"]}"#).unwrap();
        assert!(!text.contains("abc"), "{text}");
        assert_eq!(env_in_text(r#"{"Image":"busybox"}"#), None);
    }

    #[test]
    fn credential_headers_in_any_case() {
        assert!(is_credential("Authorization"));
        assert!(is_credential("X-REGISTRY-AUTH"));
        assert!(!is_credential("content-type"));
    }
}
