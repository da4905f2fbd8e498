//! The query-string side of list endpoints: the `node` filter, which only the gateway knows, and
//! `limit`, which must be applied again after merging.
//!
//! `filters` is URL-encoded JSON. Docker accepts two shapes, and clients send both: a map of
//! lists, `{"node":["node1"]}` (API < 1.22 and hand-written calls), and the map of sets the
//! docker CLI sends today, `{"node":{"node1":true}}`. Several values mean "any of them".
//!
//! Engines reject filter keys they don't know: dockerd 20.10 answers `400 {"message":"Invalid
//! filter 'node'"}` to `containers/json`, `images/json`, `networks` and `volumes` alike (checked
//! against a real engine). So the gateway takes the `node` filter out with [`strip_node_filter`]
//! before the query goes to engines, and uses [`node_filter`] to choose which nodes to ask.

use serde_json::{Map, Value};

/// The values of one filter key, in either shape Docker accepts (`["a"]` or `{"a":true}`).
pub fn filter_values(value: &Value) -> Vec<String> {
    match value {
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::Object(set) => set
            .iter()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// The node names a `node` filter asks for, or `None` if the query has no (non-empty) `node`
/// filter. Names are matched exactly (Swarm matched them as regular expressions, so `node1` also
/// picked `node10`; exact names are what users mean).
pub fn node_filter(query: &str) -> Option<Vec<String>> {
    let filters = filters_of(query)?;
    let names = filter_values(filters.get("node")?);
    if names.is_empty() {
        None
    } else {
        Some(names)
    }
}

/// `query` without the `node` key in its `filters`: what the engines are sent. Everything else
/// is kept byte for byte, in order; a `filters` left empty is dropped. A leading `?` is kept.
pub fn strip_node_filter(query: &str) -> String {
    let (lead, body) = match query.strip_prefix('?') {
        Some(body) => ("?", body),
        None => ("", query),
    };
    let mut kept: Vec<String> = Vec::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded = busbar_api::query::pairs(pair).next();
        if let Some((_, value)) = decoded.filter(|(k, _)| k == "filters") {
            if let Ok(Value::Object(mut filters)) = serde_json::from_str::<Value>(&value) {
                if filters.remove("node").is_some() {
                    if !filters.is_empty() {
                        kept.push(format!(
                            "{key}={}",
                            encode(&Value::Object(filters).to_string())
                        ));
                    }
                    continue;
                }
            }
        }
        kept.push(pair.to_owned());
    }
    if kept.is_empty() {
        String::new()
    } else {
        format!("{lead}{}", kept.join("&"))
    }
}

/// `limit` (`docker ps -n N`; `-l` sends `limit=1`), if positive: Docker ignores 0 and negatives.
pub fn limit(query: &str) -> Option<usize> {
    let value = param(query, "limit")?;
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| usize::try_from(n).ok())
}

/// The decoded value of the first `key` parameter, as the engine reads it
/// ([`busbar_api::query::value`]).
pub fn param(query: &str, key: &str) -> Option<String> {
    let body = query.strip_prefix('?').unwrap_or(query);
    busbar_api::query::value(Some(body), key).map(std::borrow::Cow::into_owned)
}

fn filters_of(query: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(&param(query, "filters")?) {
        Ok(Value::Object(filters)) => Some(filters),
        _ => None,
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // What docker CLI 28 sends for `docker ps -a --filter node=node1 --filter status=exited`.
    const CLI_QUERY: &str =
        "all=1&filters=%7B%22node%22%3A%7B%22node1%22%3Atrue%7D%2C%22status%22%3A%7B%22exited%22%3Atrue%7D%7D";

    #[test]
    fn node_filter_reads_both_filter_shapes() {
        assert_eq!(node_filter(CLI_QUERY), Some(vec!["node1".to_owned()]));
        let lists = format!("filters={}", encode(r#"{"node":["node1","node3"]}"#));
        assert_eq!(
            node_filter(&lists),
            Some(vec!["node1".to_owned(), "node3".to_owned()])
        );
        assert_eq!(
            node_filter("?filters=%7B%22node%22%3A%5B%22n2%22%5D%7D"),
            Some(vec!["n2".to_owned()])
        );
    }

    #[test]
    fn node_filter_is_none_without_a_node_key() {
        assert_eq!(node_filter(""), None);
        assert_eq!(node_filter("all=1"), None);
        assert_eq!(
            node_filter("filters=%7B%22status%22%3A%5B%22exited%22%5D%7D"),
            None
        );
        assert_eq!(node_filter("filters=%7B%22node%22%3A%5B%5D%7D"), None);
        assert_eq!(node_filter("filters=not-json"), None);
    }

    #[test]
    fn strip_node_filter_keeps_everything_else() {
        let stripped = strip_node_filter(CLI_QUERY);
        assert_eq!(
            stripped,
            "all=1&filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D"
        );
        assert_eq!(node_filter(&stripped), None);
        assert_eq!(
            param(&stripped, "filters").as_deref(),
            Some(r#"{"status":{"exited":true}}"#)
        );
    }

    #[test]
    fn strip_node_filter_drops_a_filters_left_empty() {
        assert_eq!(
            strip_node_filter("filters=%7B%22node%22%3A%5B%22node1%22%5D%7D&limit=2"),
            "limit=2"
        );
        assert_eq!(
            strip_node_filter("?filters=%7B%22node%22%3A%5B%22node1%22%5D%7D"),
            ""
        );
    }

    #[test]
    fn strip_node_filter_leaves_other_queries_untouched() {
        for q in [
            "",
            "all=1&size=0",
            "?all=1",
            "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D",
            "filters=garbage%ZZ",
        ] {
            assert_eq!(strip_node_filter(q), q);
        }
    }

    #[test]
    fn limit_is_positive_or_absent() {
        assert_eq!(limit("all=1&limit=3"), Some(3));
        assert_eq!(limit("?limit=1"), Some(1));
        assert_eq!(limit("limit=-1"), None);
        assert_eq!(limit("limit=0"), None);
        assert_eq!(limit("all=1"), None);
    }

    #[test]
    fn encode_round_trips_through_the_engines_reading() {
        let text = r#"{"a":"b c/└+%"}"#;
        assert_eq!(
            param(&format!("k={}", encode(text)), "k").as_deref(),
            Some(text)
        );
    }
}
