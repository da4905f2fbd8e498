//! Headers that describe a connection rather than the message, and upgrade requests.

use http::header::{HeaderName, CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones the
/// `Connection` header names. The framing headers are recomputed by hyper on each side. An
/// upgrade request or `101` keeps `Connection: Upgrade` and `Upgrade`, which the hop needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = wants_upgrade(headers)
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    if let Some(proto) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, proto);
    }
}

/// Whether headers ask for an upgrade (`Connection: upgrade` token and an `Upgrade` header).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Makes a hijack request ask the engine for `101`, the form we can splice.
pub fn ensure_upgrade_headers(headers: &mut HeaderMap) {
    if !wants_upgrade(headers) {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-registry-auth", HeaderValue::from_static("e30="));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-registry-auth"]);
    }

    #[test]
    fn upgrade_survives() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("tcp"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("upgrade").unwrap(), "tcp");
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
        assert!(!wants_upgrade(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(wants_upgrade(&h));
        let mut h = HeaderMap::new();
        ensure_upgrade_headers(&mut h);
        assert!(wants_upgrade(&h));
    }
}
