//! Query parameters as the engine reads them (Go's `url.ParseQuery` and `Request.FormValue`,
//! and Docker's `httputils.BoolValue`).
//!
//! - Pairs are split on `&`; a pair whose key or value holds a `;`, or a malformed escape, is
//!   dropped (Go 1.17 and later, which dockerd 20.10 is built with).
//! - Keys and values are decoded: `%XX`, and `+` is a space.
//! - The engine reads the **first** value of a repeated key.
//! - A flag is true unless its value, trimmed and lowercased, is empty, `0`, `no`, `false` or
//!   `none`: `follow=yes` follows, `follow=` does not.

use std::borrow::Cow;

/// A query the engine refuses before its handler runs (a `400`): one with a `;`, or with a
/// malformed escape. busbar refuses it too, so that no hook reads parameters the engine would
/// read differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query {0:?}: ';' separators and malformed %-escapes are refused, as the engine refuses them")]
pub struct QueryError(pub String);

/// Whether the engine accepts `query` (see [`QueryError`]).
pub fn check(query: &str) -> Result<(), QueryError> {
    let bad = query.contains(';')
        || query
            .split('&')
            .flat_map(|pair| pair.splitn(2, '='))
            .any(|part| unescape(part).is_none());
    if bad {
        let shown: String = query.chars().take(200).collect();
        return Err(QueryError(shown));
    }
    Ok(())
}

/// The decoded `(key, value)` pairs of a raw query, in order, as the engine keeps them.
pub fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter_map(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return None;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((unescape(k)?, unescape(v)?))
    })
}

/// The first value of `key`, decoded, as `FormValue` gives it; `None` when the key is absent.
pub fn value<'q>(query: Option<&'q str>, key: &str) -> Option<Cow<'q, str>> {
    pairs(query?).find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Docker's `BoolValue`: whether the flag `key` is set to a true value.
pub fn flag(query: Option<&str>, key: &str) -> bool {
    value(query, key).is_some_and(|v| is_true(&v))
}

/// Docker's `BoolValueOrDefault`: `default` when `key` is absent, else [`flag`].
pub fn flag_or(query: Option<&str>, key: &str, default: bool) -> bool {
    match value(query, key) {
        Some(v) => is_true(&v),
        None => default,
    }
}

fn is_true(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
}

/// Go's `QueryUnescape`; `None` for a malformed escape or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
                out.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_docker_reads_them() {
        for yes in [
            "follow=1",
            "follow=true",
            "follow=yes",
            "follow=TRUE",
            "follow=on",
            "follow=%31",
        ] {
            assert!(flag(Some(yes), "follow"), "{yes}");
        }
        for no in [
            "follow=",
            "follow=0",
            "follow=no",
            "follow=False",
            "follow=none",
            "follow",
            "x=1",
            "",
        ] {
            assert!(!flag(Some(no), "follow"), "{no}");
        }
        assert!(!flag(None, "follow"));
        assert!(flag_or(None, "stream", true));
        assert!(flag_or(Some("all=1"), "stream", true));
        assert!(!flag_or(Some("stream="), "stream", true));
        assert!(!flag_or(Some("stream=0"), "stream", true));
    }

    #[test]
    fn queries_the_engine_refuses_are_refused() {
        for bad in ["name=a;name=b", "name=%zz", "a=1&b=%2", "x;=1", "%"] {
            assert!(check(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "all=1",
            "filters=%7B%22label%22%3A%5B%5D%7D",
            "a=b+c&d",
            "name=a&name=b",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_first_value_wins_and_bad_pairs_are_dropped() {
        assert_eq!(value(Some("name=a&name=b"), "name").as_deref(), Some("a"));
        assert_eq!(value(Some("name=a;x&name=b"), "name").as_deref(), Some("b"));
        assert_eq!(value(Some("name=%zz&name=b"), "name").as_deref(), Some("b"));
        assert_eq!(
            value(Some("n%61me=a+b%21"), "name").as_deref(),
            Some("a b!")
        );
        assert_eq!(value(Some("follow"), "follow").as_deref(), Some(""));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `text` form-encoded as a client may write it: unreserved bytes raw or escaped, a space
    /// as `+` or `%20`, everything else escaped.
    fn form_encode(text: &str, pick: &[bool]) -> String {
        let mut out = String::new();
        for (i, b) in text.bytes().enumerate() {
            let escape = pick[i % pick.len()];
            match b {
                b' ' if !escape => out.push('+'),
                b if b.is_ascii_alphanumeric() && !escape => out.push(b as char),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    fn raw_query() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    "[a-z]{0,4}".boxed(),
                    prop::sample::select(vec![
                        "=", "&", ";", "%", "%2", "%zz", "%41", "+", "%FF", "%C3%A9"
                    ])
                    .prop_map(str::to_owned)
                    .boxed(),
                ],
                0..12,
            )
            .prop_map(|p| p.concat()),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(800))]

        #[test]
        fn readers_never_panic(q in raw_query(), key in "[a-z]{1,3}") {
            let checked = check(&q);
            let _ = pairs(&q).count();
            let v = value(Some(&q), &key);
            prop_assert_eq!(flag(Some(&q), &key), v.as_deref().is_some_and(is_true));
            let _ = flag_or(Some(&q), &key, true);
            // A query the engine accepts yields every pair it holds.
            if checked.is_ok() {
                let all = q.split('&').filter(|p| !p.is_empty()).count();
                prop_assert_eq!(pairs(&q).count(), all);
            }
        }

        #[test]
        fn encoded_pairs_read_back(
            kvs in prop::collection::vec(("[a-c]{1,2}", any::<String>()), 0..6),
            pick in prop::collection::vec(any::<bool>(), 1..8),
            key in "[a-c]{1,2}",
        ) {
            let q: Vec<String> = kvs
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k, &pick), form_encode(v, &pick)))
                .collect();
            let q = q.join("&");
            prop_assert!(check(&q).is_ok(), "{}", q);
            let want = kvs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
            let got = value(Some(&q), &key);
            prop_assert_eq!(got.as_deref(), want);
            prop_assert_eq!(flag(Some(&q), &key), want.is_some_and(is_true));
        }
    }
}
