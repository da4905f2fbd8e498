//! A Docker API request path, read as the engine routes it.
//!
//! dockerd hands its router the *decoded* path (Go's `URL.Path`): `%XX` escapes are
//! undone before routes are matched, so `/v1.41/containers%2Fcreate`, `/v1.41/cr%65ate` and
//! `/%761.41/containers/create` all reach the create handler. A proxy that matched hooks on the
//! raw path would let each of them past a `POST /*/containers/create` hook. So busbar reads
//! every path once, here, and from then on the request carries its canonical form:
//!
//! 1. **Decode** every `%XX` escape, as the engine does. A malformed escape (`%zz`, a lone
//!    `%`) is refused, as the engine refuses it.
//! 2. **Refuse what has no single reading**: an escape that decodes to `/` (it moves the
//!    segment boundaries: the engine routes on the decoded path while tools and logs see the
//!    raw one), a control character (`%00`, `%0A`, ...), bytes that are not UTF-8.
//! 3. **Refuse paths that are not clean**: empty segments (`//`) and `.` or `..` segments,
//!    also when they were escaped (`%2E%2E`). The engine's router never executes those as
//!    written (it redirects or answers 404), no Docker client sends them, and refusing them
//!    means no reader has to agree with another on how to clean them.
//! 4. **Refuse a version that is not written plainly.** The engine compares versions number by
//!    number, so `/v1.41.0/`, `/v01.041/` and `/v1.0041/` all run as 1.41 and would slip past a
//!    hook written for `/v1.41/`; only `vMAJOR.MINOR` without leading zeros is accepted.
//!
//! Raw bytes outside ASCII are refused too (clients percent-encode them). These rules were
//! measured against dockerd 20.10 (Go's `net/http` and gorilla/mux): for every request target
//! tried, the engine executed the endpoint this module names, or nothing.
//!
//! What remains is the canonical path: the one hooks match, the gateway routes, and the engine
//! receives, re-encoded by [`ApiPath::encoded`] so that it decodes to the same bytes (a `%`
//! that came from `%25` goes out as `%25` again, so a double-encoded `%252F` never becomes a
//! `/` one hop later).
//!
//! A path is **versioned** when its first segment is `v` followed by one or more digits and
//! dots, the engine's own route `/v{version:[0-9.]+}`; every endpoint is served both with and
//! without that prefix.

use std::borrow::Cow;
use std::fmt;

/// Why a request path is refused. Shown to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid request path {0:?}: it must start with /")]
    NotAbsolute(String),
    #[error("invalid request path {0:?}: malformed percent-escape")]
    BadEscape(String),
    #[error("invalid request path {0:?}: an escaped '/' (%2F) would change how the path is split; send a real '/' or none")]
    EncodedSlash(String),
    #[error("invalid request path {0:?}: it holds a control character")]
    Control(String),
    #[error("invalid request path {0:?}: it is not ASCII, or not UTF-8 once decoded")]
    NotUtf8(String),
    #[error("invalid request path {0:?}: empty, '.' or '..' segments are not allowed")]
    NotClean(String),
    #[error("invalid request path {0:?}: write the API version as vMAJOR.MINOR (such as v1.41)")]
    Version(String),
}

/// A request path as the engine routes it: decoded, checked, with its version prefix found.
/// Borrows the input when it needed no decoding (the usual case).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiPath<'a> {
    path: Cow<'a, str>,
    /// The length of the version prefix (`/v1.41`), 0 when the path has none.
    version_len: usize,
}

impl<'a> ApiPath<'a> {
    /// Reads `raw`, a request path as sent (no query), as the engine would.
    pub fn parse(raw: &'a str) -> Result<ApiPath<'a>, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute(shown(raw)));
        }
        let path = if raw.contains('%') {
            Cow::Owned(decode(raw)?)
        } else {
            if raw.bytes().any(|b| b.is_ascii_control()) {
                return Err(PathError::Control(shown(raw)));
            }
            Cow::Borrowed(raw)
        };
        if !raw.is_ascii() {
            return Err(PathError::NotUtf8(shown(raw)));
        }
        if !is_clean(&path) {
            return Err(PathError::NotClean(shown(raw)));
        }
        let version_len = match path[1..].split_once('/') {
            Some((first, _)) if is_version_segment(first) => {
                if !is_plain_version(&first[1..]) {
                    return Err(PathError::Version(shown(raw)));
                }
                first.len() + 1
            }
            _ => 0,
        };
        Ok(ApiPath { path, version_len })
    }

    /// The canonical (decoded) path, version included: `/v1.41/containers/create`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The API version asked for (`1.41`), if the path has one.
    pub fn version(&self) -> Option<&str> {
        (self.version_len > 0).then(|| &self.path[2..self.version_len])
    }

    /// `/v1.41`, or `""` for an unversioned path.
    pub fn version_prefix(&self) -> &str {
        &self.path[..self.version_len]
    }

    /// The path without its version prefix: `/containers/create` (`/` for `/v1.41` alone).
    pub fn unversioned(&self) -> &str {
        match &self.path[self.version_len..] {
            "" => "/",
            rest => rest,
        }
    }

    /// The segments after the version prefix: `["containers", "create"]`. A path that ends
    /// with `/` has an empty last segment.
    pub fn segments(&self) -> Vec<&str> {
        self.unversioned()[1..].split('/').collect()
    }

    /// The path as it goes upstream: the canonical path with every byte that may not appear
    /// as such in a request target percent-encoded, so that the engine decodes it to exactly
    /// [`as_str`](ApiPath::as_str).
    pub fn encoded(&self) -> Cow<'_, str> {
        if self.path.bytes().all(is_path_char) {
            return Cow::Borrowed(&self.path);
        }
        let mut out = String::with_capacity(self.path.len() + 16);
        for b in self.path.bytes() {
            if is_path_char(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        Cow::Owned(out)
    }

    /// The canonical path itself (borrowed from the input when it needed no decoding).
    pub fn into_cow(self) -> Cow<'a, str> {
        self.path
    }

    /// An owned copy.
    pub fn into_owned(self) -> ApiPath<'static> {
        ApiPath {
            path: Cow::Owned(self.path.into_owned()),
            version_len: self.version_len,
        }
    }
}

impl fmt::Debug for ApiPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiPath({:?})", self.path)
    }
}

impl fmt::Display for ApiPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// The canonical form of a request target (`path?query`, origin-form): the path canonical and
/// encoded as [`ApiPath::encoded`] says, the query as sent. `None` when `target` is already
/// canonical (nothing to replace).
pub fn canonical_target(path: &str, query: Option<&str>) -> Result<Option<String>, PathError> {
    let parsed = ApiPath::parse(path)?;
    let encoded = parsed.encoded();
    if encoded == path {
        return Ok(None);
    }
    Ok(Some(match query {
        Some(q) => format!("{encoded}?{q}"),
        None => encoded.into_owned(),
    }))
}

/// `v1.41`, `v1`, `v.`...: the first segment of a versioned path (the engine's
/// `v{version:[0-9.]+}`).
pub fn is_version_segment(seg: &str) -> bool {
    seg.strip_prefix('v').is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit() || c == b'.')
    })
}

/// `MAJOR.MINOR`, both decimal without leading zeros: how every Docker client writes it.
fn is_plain_version(v: &str) -> bool {
    let plain = |n: &str| {
        !n.is_empty()
            && n.len() <= 9
            && n.bytes().all(|c| c.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'))
    };
    v.split_once('.')
        .is_some_and(|(major, minor)| plain(major) && plain(minor))
}

/// The path of an origin-form request target, without its query.
pub fn strip_query(path_and_query: &str) -> &str {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path)
}

/// `segment` as one segment of a request path the engine decodes back to exactly `segment`:
/// every byte that [`ApiPath::encoded`] would escape, and `/` too, percent-encoded. For names
/// and IDs put into a path that is built rather than received (a `/` in such a name would
/// otherwise split it).
pub fn encode_segment(segment: &str) -> Cow<'_, str> {
    if segment.bytes().all(|b| b != b'/' && is_path_char(b)) {
        return Cow::Borrowed(segment);
    }
    let mut out = String::with_capacity(segment.len() + 16);
    for b in segment.bytes() {
        if b != b'/' && is_path_char(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Bytes that stand for themselves in a request path: RFC 3986 `pchar` and `/`, minus `%`.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

fn decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(PathError::BadEscape(shown(raw)));
            };
            let decoded = (hi * 16 + lo) as u8;
            if decoded == b'/' {
                return Err(PathError::EncodedSlash(shown(raw)));
            }
            out.push(decoded);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|b| b.is_ascii_control()) {
        return Err(PathError::Control(shown(raw)));
    }
    let text = String::from_utf8(out).map_err(|_| PathError::NotUtf8(shown(raw)))?;
    // C1 controls (U+0080..U+009F) too: no name holds them, and terminals and logs act on them.
    if text.chars().any(char::is_control) {
        return Err(PathError::Control(shown(raw)));
    }
    Ok(text)
}

/// No empty, `.` or `..` segment; a single trailing `/` is allowed (it is part of what the
/// engine routes on), the root `/` too.
fn is_clean(path: &str) -> bool {
    let body = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    path == "/"
        || body
            .split('/')
            .all(|s| !(s.is_empty() || s == "." || s == ".."))
}

/// The input for an error message, cut to a readable length.
fn shown(raw: &str) -> String {
    const MAX: usize = 200;
    if raw.len() <= MAX {
        return raw.to_owned();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &raw[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> String {
        ApiPath::parse(raw).unwrap().as_str().to_owned()
    }

    #[test]
    fn escapes_are_read_as_the_engine_reads_them() {
        assert_eq!(
            canonical("/v1.41/containers/cr%65ate"),
            "/v1.41/containers/create"
        );
        assert_eq!(
            canonical("/%761.41/containers/create"),
            "/v1.41/containers/create"
        );
        assert_eq!(
            canonical("/v1.41/containers/a%20b/json"),
            "/v1.41/containers/a b/json"
        );
        assert_eq!(
            canonical("/v1.41/containers/a%252Fb"),
            "/v1.41/containers/a%2Fb"
        );
        // `+` is a plus in a path, not a space.
        assert_eq!(canonical("/images/a+b/json"), "/images/a+b/json");
    }

    #[test]
    fn what_has_no_single_reading_is_refused() {
        for (raw, want) in [
            ("/v1.41/containers%2Fcreate", "escaped '/'"),
            ("/v1.41%2fcontainers/create", "escaped '/'"),
            ("/v1.41/containers/a%00", "control"),
            ("/v1.41/containers/a%0Ab", "control"),
            ("/v1.41/containers/a%C2%85b", "control"),
            ("/v1.41/containers/%zz", "percent-escape"),
            ("/v1.41/containers/%2", "percent-escape"),
            ("/v1.41/containers/%", "percent-escape"),
            ("/v1.41/containers/%FF", "UTF-8"),
            ("/v1.41//containers/create", "segments"),
            ("//v1.41/containers/create", "segments"),
            ("/v1.41/containers/./create", "segments"),
            ("/v1.41/images/../containers/create", "segments"),
            ("/v1.41/images/%2E%2E/containers/create", "segments"),
            ("/v1.41/containers/..", "segments"),
            ("v1.41/containers/create", "start with /"),
            ("/v1.41.0/containers/create", "vMAJOR.MINOR"),
            ("/v01.041/containers/create", "vMAJOR.MINOR"),
            ("/v1.0041/containers/create", "vMAJOR.MINOR"),
            ("/v1./containers/create", "vMAJOR.MINOR"),
            ("/v1/containers/create", "vMAJOR.MINOR"),
            ("/v./containers/create", "vMAJOR.MINOR"),
            ("/v1.41/containers/cr\u{e9}ate", "ASCII"),
        ] {
            let err = ApiPath::parse(raw).expect_err(raw).to_string();
            assert!(err.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn versions_as_the_engine_routes_them() {
        let p = ApiPath::parse("/v1.41/containers/json").unwrap();
        assert_eq!(p.version(), Some("1.41"));
        assert_eq!(p.version_prefix(), "/v1.41");
        assert_eq!(p.unversioned(), "/containers/json");
        assert_eq!(p.segments(), ["containers", "json"]);
        let p = ApiPath::parse("/containers/json").unwrap();
        assert_eq!((p.version(), p.version_prefix()), (None, ""));
        // A version is only a version with something after it (the engine's routes).
        assert_eq!(ApiPath::parse("/v1.41").unwrap().version(), None);
        assert_eq!(ApiPath::parse("/v1.41/").unwrap().unversioned(), "/");
        assert_eq!(
            ApiPath::parse("/v1.24/info").unwrap().version(),
            Some("1.24")
        );
        assert_eq!(
            ApiPath::parse("/v%31.41/info").unwrap().version(),
            Some("1.41")
        );
        for not in [
            "/V1.41/info",
            "/v/info",
            "/v1.41x/info",
            "/version",
            "/1.41/info",
        ] {
            assert_eq!(ApiPath::parse(not).unwrap().version(), None, "{not}");
        }
    }

    #[test]
    fn encoded_decodes_back_to_the_canonical_path() {
        for raw in [
            "/v1.41/containers/a%20b/json",
            "/v1.41/containers/a%252Fb",
            "/v1.41/containers/%3F%23x",
            "/v1.41/containers/caf%C3%A9",
            "/v1.41/images/library/busybox:latest/json",
        ] {
            let p = ApiPath::parse(raw).unwrap();
            let again = ApiPath::parse(&p.encoded()).unwrap().into_owned();
            assert_eq!(again.as_str(), p.as_str(), "{raw}");
        }
        let p = ApiPath::parse("/v1.41/containers/a%252Fb").unwrap();
        assert_eq!(p.encoded(), "/v1.41/containers/a%252Fb");
    }

    #[test]
    fn canonical_targets_keep_the_query() {
        assert_eq!(canonical_target("/v1.41/info", None).unwrap(), None);
        assert_eq!(
            canonical_target("/v1.41/containers/cr%65ate", Some("name=x")).unwrap(),
            Some("/v1.41/containers/create?name=x".to_owned())
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Pieces a hostile or careless client may put in a path, and plain ones.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z0-9]{1,8}",
            2 => prop::sample::select(vec![
                "/", "//", ".", "..", "v1.41", "v01.41", "v1.41.0", "v1", "v", "%", "%2", "%zz",
                "%2F", "%2f", "%2E", "%2E%2E", "%25", "%252F", "%00", "%0A", "%7F", "%C3%A9",
                "%FF", "%C3", "\u{e9}", " ", "\u{0}", "\u{7f}", "\u{85}", "~", "?", "#", "+",
                "containers", "create", "exec", "attach",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn raw_path() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(piece(), 0..10).prop_map(|p| p.concat()),
            prop::collection::vec(piece(), 0..8).prop_map(|p| format!("/{}", p.join("/"))),
            any::<String>(),
        ]
    }

    /// A canonical (decoded) path: clean segments of any characters but `/` and controls.
    fn canonical_path() -> impl Strategy<Value = String> {
        let segment =
            "[^/\\p{Cc}]{1,10}".prop_filter("not a dot segment", |s| s != "." && s != "..");
        (
            prop::option::of(Just("/v1.41")),
            prop::collection::vec(segment, 0..6),
            any::<bool>(),
        )
            .prop_filter("no version-like first segment", |(v, segs, _)| {
                v.is_some() || segs.first().is_none_or(|s| !is_version_segment(s))
            })
            .prop_map(|(version, segs, slash)| {
                let mut p = format!("{}/{}", version.unwrap_or(""), segs.join("/"));
                if slash && !p.ends_with('/') {
                    p.push('/');
                }
                p
            })
    }

    /// `path` written with each byte either as itself (where a client may send it raw) or as a
    /// `%XX` escape, as `pick` says; `/` always raw.
    fn spelled(path: &str, pick: &[bool]) -> String {
        let mut out = String::new();
        for (i, b) in path.bytes().enumerate() {
            let raw_ok = b == b'/' || (b.is_ascii() && !b.is_ascii_control() && b != b'%');
            if raw_ok && (b == b'/' || !pick.get(i % pick.len().max(1)).copied().unwrap_or(false)) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        }
        out
    }

    fn check_clean(p: &ApiPath<'_>) {
        let s = p.as_str();
        assert!(s.starts_with('/'), "{s:?}");
        for bad in ["//", "/./", "/../"] {
            assert!(!s.contains(bad), "{s:?} holds {bad}");
        }
        assert!(!s.ends_with("/.") && !s.ends_with("/.."), "{s:?}");
        assert!(!s.bytes().any(|b| b.is_ascii_control()), "{s:?}");
        let segs = p.segments();
        for (i, seg) in segs.iter().enumerate() {
            assert!(*seg != "." && *seg != "..", "{s:?}");
            assert!(
                !seg.is_empty() || i + 1 == segs.len(),
                "{s:?}: empty segment"
            );
        }
        if let Some(v) = p.version() {
            assert!(is_plain_version(v), "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(1000))]

        #[test]
        fn parse_never_panics_and_what_parses_is_clean(raw in raw_path()) {
            let Ok(p) = ApiPath::parse(&raw) else { return Ok(()) };
            check_clean(&p);
            let encoded = p.encoded();
            prop_assert!(encoded.bytes().all(|b| b == b'%' || is_path_char(b)));
            let again = ApiPath::parse(&encoded).expect("an encoded path parses");
            prop_assert_eq!(again.as_str(), p.as_str());
            prop_assert_eq!(again.version(), p.version());
            prop_assert_eq!(again.segments(), p.segments());
            prop_assert_eq!(again.encoded(), encoded.clone());
        }

        #[test]
        fn any_spelling_of_a_canonical_path_reads_as_that_path(
            path in canonical_path(),
            pick in prop::collection::vec(any::<bool>(), 1..16),
        ) {
            let raw = spelled(&path, &pick);
            let p = ApiPath::parse(&raw).map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?;
            prop_assert_eq!(p.as_str(), path.as_str());
            check_clean(&p);
        }

        #[test]
        fn canonical_targets_are_valid_request_targets(raw in raw_path(), query in "[a-z0-9=&%+]{0,12}") {
            // What the HTTP server does with a target it received (its `expect` relies on this).
            let target = if query.is_empty() { raw.clone() } else { format!("{raw}?{query}") };
            let Ok(pq) = target.parse::<http::uri::PathAndQuery>() else { return Ok(()) };
            if let Ok(Some(canonical)) = canonical_target(pq.path(), pq.query()) {
                prop_assert!(canonical.parse::<http::Uri>().is_ok(), "{canonical:?}");
            }
        }

        #[test]
        fn an_encoded_segment_is_one_segment_that_decodes_back(seg in any::<String>()) {
            let encoded = encode_segment(&seg);
            prop_assert!(!encoded.contains('/'));
            prop_assert!(encoded.bytes().all(|b| b == b'%' || is_path_char(b)));
            let path = format!("/containers/{encoded}/json");
            prop_assert!(path.parse::<http::Uri>().is_ok());
            // It reads back as itself wherever it would be clean.
            if let Ok(p) = ApiPath::parse(&path) {
                prop_assert_eq!(p.segments(), vec!["containers", seg.as_str(), "json"]);
            }
        }
    }
}
