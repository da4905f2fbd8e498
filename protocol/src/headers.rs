//! busbar's headers on every hook call, beside Powerstrip's JSON (version [`ADAPTER_API`]):
//!
//! ```text
//! X-Busbar-Adapter-Api: 1            the version of these additions
//! X-Request-Id: 6f1c...              the request the hook runs for (as in busbar's logs)
//! X-Busbar-Node: node2               the node whose agent runs the hook (cluster agents only)
//! X-Busbar-Node-Labels: zone=a,ssd=1 its labels
//! X-Busbar-User: alice               the client's verified certificate CN (client TLS only)
//! X-Busbar-Auth-Method: TLS          how it was verified
//! X-Busbar-Role: client              the busbar role that certificate carries, if any
//! traceparent: 00-4bf9...-00f0...-01 the request's W3C trace, the agent's span as parent
//! tracestate: rojo=00f067aa0ba902b7  the client's, when well formed (see [`crate::trace`])
//! ```
//!
//! Values are percent-encoded as in a URL: every byte that is not visible ASCII, and `%`,
//! `,` and `=`, is `%XX` (`Zoë Doe` is `Zo%C3%AB%20Doe`; Python: `urllib.parse.unquote`).
//! Labels are `key=value` pairs joined by `,`, each side encoded so.

use std::collections::BTreeMap;

/// The version of what busbar gives adapters beside Powerstrip's JSON: these headers and a
/// gateway's `/_busbar/v1/...` routes.
pub const ADAPTER_API: &str = "1";

/// Header names, lower-case (as HTTP/2 and `http::HeaderName` want them).
pub const ADAPTER_API_HEADER: &str = "x-busbar-adapter-api";
pub const REQUEST_ID: &str = "x-request-id";
pub const NODE: &str = "x-busbar-node";
pub const NODE_LABELS: &str = "x-busbar-node-labels";
pub const USER: &str = "x-busbar-user";
pub const AUTH_METHOD: &str = "x-busbar-auth-method";
pub const ROLE: &str = "x-busbar-role";

/// Percent-encodes every byte that is not visible ASCII, and `%`, `,` and `=`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b',' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes [`encode`] (and any URL percent-encoding): a malformed escape is kept as written,
/// invalid UTF-8 is replaced.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `X-Busbar-Node-Labels` for these labels.
pub fn encode_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    pairs.join(",")
}

/// The labels an `X-Busbar-Node-Labels` value carries (a pair without `=` is a key with an
/// empty value).
pub fn decode_labels(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_readable_as_urls() {
        for (text, wire) in [
            ("alice", "alice"),
            ("Zoë Doe", "Zo%C3%AB%20Doe"),
            ("100%", "100%25"),
            ("", ""),
            ("a\r\nX-Evil: 1", "a%0D%0AX-Evil:%201"),
            ("a=b,c", "a%3Db%2Cc"),
        ] {
            assert_eq!(encode(text), wire);
            assert_eq!(decode(wire), text);
        }
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn labels_round_trip() {
        let labels: BTreeMap<String, String> = [("zone", "a b"), ("k=1", "v,2"), ("ssd", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let wire = encode_labels(&labels);
        assert_eq!(wire, "k%3D1=v%2C2,ssd=,zone=a%20b");
        assert_eq!(decode_labels(&wire), labels);
        assert!(decode_labels("").is_empty());
    }
}
