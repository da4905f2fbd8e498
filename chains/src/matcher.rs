//! Which endpoints of a [`ChainSet`] a Docker API request matches, and so which adapters run.
//!
//! # Endpoint keys
//!
//! An endpoint key is `METHOD PATTERN`, separated by one space, e.g.
//! `POST /*/containers/create`:
//!
//! - `METHOD` is `*` (any method) or an uppercase HTTP method token (`POST`, `DELETE`, …),
//!   compared exactly. Powerstrip matched the whole key with `fnmatch` against
//!   `"<METHOD> <path>"`; because a request path never contains a space, splitting the key
//!   at its space and matching the two halves separately gives the same answer for every
//!   key we accept. Lowercase or globbed methods (`post`, `P*`) are rejected when the file
//!   is loaded: with a case-sensitive match they would silently never fire.
//! - `PATTERN` starts with `/` or is `*`, and is matched against the request path with the
//!   query removed (everything from the first `?`), in the canonical form the engine routes
//!   on (decoded; see `busbar_api::path`): what a hook matches is what the engine executes.
//!
//! # Pattern syntax: Python's `fnmatch`, exactly
//!
//! Existing `adapters.yml` files were written for Python 2's `fnmatch`, so patterns keep its
//! meaning: the whole path must match (anchored), case-sensitively; `*` matches any
//! sequence **including `/`** (so `DELETE /*/containers/*` covers everything under
//! `containers`); `?` matches one character; `[abc]`, `[a-z]` and `[!abc]` are character
//! classes (a `]` right after `[` or `[!` is a member, a leading `^` is a literal, `-` first
//! or last is a literal); every other character is literal, including `{`, `}`, `,` and `\`.
//! We compile patterns with `globset`, whose syntax differs (`{a,b}` alternates, `\`
//! escapes, `**` directory semantics, `[^...]` negation), so [`PathPattern::parse`]
//! translates the fnmatch pattern into a globset pattern with the same meaning (see
//! `to_globset`). Two patterns are rejected instead: a `[` with no closing `]` (fnmatch
//! would quietly treat it as a literal, almost certainly a typo) and a reversed range such
//! as `[z-a]` (Python raised an error on every request).
//!
//! # Unversioned paths
//!
//! Docker serves each API path both with a version prefix (`/v1.41/containers/create`)
//! and without one (`/containers/create`). Powerstrip configs are written as
//! `/*/containers/create`, which under plain fnmatch needs a segment before `/containers`,
//! so clients that send unversioned paths bypassed every adapter (Powerstrip issue #65).
//! The rule here:
//!
//! > A path is *versioned* when its first segment is `v` followed by one or more digits
//! > and dots (Docker's own route `/v{version:[0-9.]+}`), e.g. `/v1.41/…`. When the path is
//! > **not** versioned and the pattern starts with `/*/`, the pattern also matches if the
//! > rest of it after the leading `/*` matches the whole path.
//!
//! So `/*/containers/create` matches `/v1.41/containers/create` (as written) and
//! `/containers/create` (as `/containers/create`), and `/*/containers/*/start` matches
//! `/containers/abc/start` (as `/containers/*/start`). Nothing else changes: a versioned path
//! is only matched as written, and patterns that do not start with `/*/` (`/v1.41/…`,
//! `/v*/…`, `/containers/…`) mean exactly what fnmatch says. The rule cannot make a pattern
//! match a path with *fewer* literal parts than it names: `/*/containers/create` still does
//! not match `/containers/x/create`. Writing both `/*/x` and `/x` (the Powerstrip-era
//! workaround) still works; the endpoint then simply matches twice, see below.
//!
//! # Several matching endpoints
//!
//! Every matching endpoint contributes its hooks. They run in the order the endpoints
//! appear in the file, then in list order within each endpoint; duplicates are kept
//! (Powerstrip ran a repeated adapter once per mention). Powerstrip's order across
//! endpoints was undefined (a Python set); file order makes it deterministic.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use busbar_api::path::{is_version_segment, strip_query};
use busbar_api::ApiPath;
use globset::{GlobBuilder, GlobMatcher};
use http::Method;

use crate::{Adapter, ChainSet, Endpoint};

/// Why an endpoint key could not be parsed. Shown after `endpoint "<key>": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("key must be \"METHOD PATTERN\" with one space, e.g. \"POST /*/containers/create\"")]
    Shape,
    #[error("method {0:?} must be * or an uppercase HTTP method such as POST")]
    Method(String),
    #[error("pattern {0:?} must start with / or be *")]
    Start(String),
    #[error("pattern {0:?} contains whitespace, so it can never match a request path")]
    Whitespace(String),
    #[error("pattern {0:?} has a [ with no closing ] (write [[] for a literal [)")]
    UnclosedClass(String),
    #[error("pattern {pattern:?} has a reversed character range {lo}-{hi}")]
    ReversedRange { pattern: String, lo: char, hi: char },
    #[error("pattern {pattern:?} is not a valid glob: {reason}")]
    Glob { pattern: String, reason: String },
}

/// Splits and compiles an endpoint key such as `POST /*/containers/create`.
pub fn parse_endpoint_key(key: &str) -> Result<(MethodPattern, PathPattern), PatternError> {
    let (method, pattern) = key.split_once(' ').ok_or(PatternError::Shape)?;
    Ok((MethodPattern::parse(method)?, PathPattern::parse(pattern)?))
}

/// The method half of an endpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodPattern {
    /// `*`: every method.
    Any,
    /// One method, compared exactly (case-sensitive, as Powerstrip did).
    Exact(Method),
}

impl MethodPattern {
    pub fn parse(method: &str) -> Result<MethodPattern, PatternError> {
        if method == "*" {
            return Ok(MethodPattern::Any);
        }
        let token = method.starts_with(|c: char| c.is_ascii_uppercase())
            && method
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '-' || c == '_');
        match Method::from_bytes(method.as_bytes()) {
            Ok(m) if token => Ok(MethodPattern::Exact(m)),
            _ => Err(PatternError::Method(method.to_string())),
        }
    }

    pub fn matches(&self, method: &Method) -> bool {
        match self {
            MethodPattern::Any => true,
            MethodPattern::Exact(m) => m == method,
        }
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodPattern::Any => f.write_str("*"),
            MethodPattern::Exact(m) => f.write_str(m.as_str()),
        }
    }
}

/// The path half of an endpoint key: an fnmatch pattern, compiled.
#[derive(Debug, Clone)]
pub struct PathPattern {
    source: String,
    glob: GlobMatcher,
    /// For patterns starting `/*/`: the pattern without its leading `/*`, tried on
    /// unversioned paths (see the module docs).
    unversioned: Option<GlobMatcher>,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
        if !(pattern.starts_with('/') || pattern == "*") {
            return Err(PatternError::Start(pattern.to_string()));
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(PatternError::Whitespace(pattern.to_string()));
        }
        let unversioned = match pattern.strip_prefix("/*") {
            Some(rest) if rest.starts_with('/') => Some(compile(rest, pattern)?),
            _ => None,
        };
        Ok(PathPattern {
            source: pattern.to_string(),
            glob: compile(pattern, pattern)?,
            unversioned,
        })
    }

    /// The pattern as written in the file.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (no query) matches, applying the unversioned-path rule.
    pub fn matches(&self, path: &str) -> bool {
        if self.glob.is_match(path) {
            return true;
        }
        match &self.unversioned {
            Some(rest) => !is_versioned(path) && rest.is_match(path),
            None => false,
        }
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathPattern {}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Whether the first path segment is a Docker API version (`/v1.41/...`).
pub fn is_versioned(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .is_some_and(is_version_segment)
}

/// The hooks a request runs, in order, and the endpoints that contributed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchedChain {
    pub pre: Vec<Arc<Adapter>>,
    pub post: Vec<Arc<Adapter>>,
    /// Keys of the matching endpoints, in file order.
    pub endpoints: Vec<String>,
}

impl MatchedChain {
    /// No hooks at all: the request can be passed straight through.
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }
}

impl ChainSet {
    /// The endpoints a request matches, in file order. `path_and_query` is the request
    /// target in origin form (`/v1.41/containers/json?all=1`); the query is ignored.
    pub fn matching_endpoints<'a>(
        &'a self,
        method: &'a Method,
        path_and_query: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        let path = strip_query(path_and_query);
        // Patterns match the decoded path the engine routes on; the request carries it
        // encoded for the wire (see `busbar_api::path`).
        let path = ApiPath::parse(path).map_or(Cow::Borrowed(path), ApiPath::into_cow);
        self.endpoints()
            .iter()
            .filter(move |e| e.method.matches(method) && e.pattern.matches(&path))
    }

    /// The pre- and post-hooks for a request: those of every matching endpoint, in file
    /// order, then list order.
    pub fn hooks_for(&self, method: &Method, path_and_query: &str) -> MatchedChain {
        let mut chain = MatchedChain::default();
        for endpoint in self.matching_endpoints(method, path_and_query) {
            chain
                .pre
                .extend(endpoint.pre.iter().map(|name| self.resolve(name)));
            chain
                .post
                .extend(endpoint.post.iter().map(|name| self.resolve(name)));
            chain.endpoints.push(endpoint.key.clone());
        }
        chain
    }

    /// Whether two request targets match exactly the same endpoints for `method`. The hook
    /// engine uses this to refuse a pre-hook's `ModifiedClientRequest.Request` that would
    /// change which endpoints (and so which adapters) apply, as the Powerstrip README
    /// requires ("must not change the scope of which endpoint is being matched").
    pub fn matches_same_endpoints(&self, method: &Method, a: &str, b: &str) -> bool {
        self.matching_endpoints(method, a)
            .map(|e| &e.key)
            .eq(self.matching_endpoints(method, b).map(|e| &e.key))
    }

    fn resolve(&self, name: &str) -> Arc<Adapter> {
        self.adapter(name)
            .cloned()
            .expect("ChainSet::from_yaml checks that every referenced adapter is defined")
    }
}

/// Compiles an fnmatch pattern. `shown` is the pattern as written, for error messages.
fn compile(pattern: &str, shown: &str) -> Result<GlobMatcher, PatternError> {
    let glob = to_globset(pattern, shown)?;
    GlobBuilder::new(&glob)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| PatternError::Glob {
            pattern: shown.to_string(),
            reason: e.kind().to_string(),
        })
}

/// Translates an fnmatch pattern into a globset pattern with the same meaning.
///
/// Runs of `*` become one `*` (same meaning in fnmatch; avoids globset's `**` rules);
/// characters globset would treat specially are wrapped in a one-character class;
/// classes are re-emitted in a canonical form (see [`push_class`]).
fn to_globset(pattern: &str, shown: &str) -> Result<String, PatternError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                out.push('*');
                while chars.get(i + 1) == Some(&'*') {
                    i += 1;
                }
            }
            '?' => out.push('?'),
            '[' => {
                let close = class_end(&chars, i)
                    .ok_or_else(|| PatternError::UnclosedClass(shown.to_string()))?;
                let class = Class::parse(&chars[i + 1..close]).map_err(|(lo, hi)| {
                    PatternError::ReversedRange {
                        pattern: shown.to_string(),
                        lo,
                        hi,
                    }
                })?;
                push_class(&mut out, &class);
                i = close;
            }
            c => push_literal(&mut out, c),
        }
        i += 1;
    }
    Ok(out)
}

/// The index of the `]` closing the class opened at `open`, found as fnmatch does: a `]`
/// right after `[` or `[!` belongs to the class.
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    (j..chars.len()).find(|&k| chars[k] == ']')
}

fn push_literal(out: &mut String, c: char) {
    match c {
        '*' | '?' | '[' | '{' | '}' | '\\' | ',' => {
            out.push('[');
            out.push(c);
            out.push(']');
        }
        ']' => out.push_str("[]]"),
        c => out.push(c),
    }
}

/// A character class: `negated` plus inclusive ranges (a single character is `(c, c)`).
#[derive(Debug)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    /// Parses the text between `[` and `]` with Python 2 fnmatch/`re` rules: a leading `!`
    /// negates; `a-z` is a range when `-` is neither first nor last; everything else is a
    /// literal member (including `^`, `[` and `\`). A reversed range is an error.
    fn parse(body: &[char]) -> Result<Class, (char, char)> {
        let (negated, items) = match body.split_first() {
            Some(('!', rest)) => (true, rest),
            _ => (false, body),
        };
        let mut ranges = Vec::new();
        let mut k = 0;
        while k < items.len() {
            let lo = items[k];
            match (items.get(k + 1), items.get(k + 2)) {
                (Some('-'), Some(&hi)) => {
                    if lo > hi {
                        return Err((lo, hi));
                    }
                    ranges.push((lo, hi));
                    k += 3;
                }
                _ => {
                    ranges.push((lo, lo));
                    k += 1;
                }
            }
        }
        Ok(Class { negated, ranges })
    }
}

/// Writes a class in a form globset reads with the same meaning. globset gives `]`, `-`,
/// `!` and `^` positional meanings, so those four are taken out of the ranges and placed
/// where they are literal: `]` first, `-` first (or last after `]`), `^` and `!` after at
/// least one other member. A non-negated class of only `^`/`!` is written without brackets.
fn push_class(out: &mut String, class: &Class) {
    let mut ranges = class.ranges.clone();
    let bracket = take_char(&mut ranges, ']');
    let dash = take_char(&mut ranges, '-');
    let caret = take_char(&mut ranges, '^');
    let bang = take_char(&mut ranges, '!');
    if !class.negated && !bracket && !dash && ranges.is_empty() {
        // Only `^` and/or `!`: inside brackets either would read as a negation.
        out.push_str(match (caret, bang) {
            (true, true) => "{^,!}",
            (true, false) => "^",
            _ => "!",
        });
        return;
    }
    out.push('[');
    if class.negated {
        out.push('!');
    }
    if bracket {
        out.push(']');
    } else if dash {
        out.push('-');
    }
    for (lo, hi) in ranges {
        out.push(lo);
        if hi != lo {
            out.push('-');
            out.push(hi);
        }
    }
    if caret {
        out.push('^');
    }
    if bang {
        out.push('!');
    }
    if bracket && dash {
        out.push('-');
    }
    out.push(']');
}

/// Removes `c` from every range that contains it; returns whether any did.
fn take_char(ranges: &mut Vec<(char, char)>, c: char) -> bool {
    // `c` is one of the ASCII punctuation marks above, so its neighbours are characters too.
    let before = char::from_u32(c as u32 - 1).expect("neighbour of ASCII punctuation");
    let after = char::from_u32(c as u32 + 1).expect("neighbour of ASCII punctuation");
    let mut found = false;
    let mut kept = Vec::with_capacity(ranges.len() + 1);
    for &(lo, hi) in ranges.iter() {
        if lo <= c && c <= hi {
            found = true;
            if lo < c {
                kept.push((lo, before));
            }
            if c < hi {
                kept.push((after, hi));
            }
        } else {
            kept.push((lo, hi));
        }
    }
    *ranges = kept;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of Powerstrip's `test_parser.py`.
    const PARSER_YML: &str = r#"endpoints:
  "POST /v1.16/containers/create":
    pre: [alpha, beta, gamma]
    post: [alpha, gamma]
  "GET /v1.16/images/*/json":
    pre: [gamma]
  "* /v*/images/*/json":
    post: [beta]
adapters:
  alpha: http://alpha/alpha
  beta: http://beta/beta
  gamma: http://gamma/gamma"#;

    fn chains(yml: &str) -> ChainSet {
        ChainSet::from_yaml(yml).expect("test config is valid")
    }

    fn matched(chains: &ChainSet, method: &str, path: &str) -> Vec<String> {
        let method = Method::from_bytes(method.as_bytes()).expect("test method");
        chains
            .matching_endpoints(&method, path)
            .map(|e| e.key.clone())
            .collect()
    }

    fn names(adapters: &[Arc<Adapter>]) -> Vec<&str> {
        adapters.iter().map(|a| a.name.as_str()).collect()
    }

    fn path_matches(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern)
            .expect("test pattern")
            .matches(path)
    }

    // ---- ported from powerstrip/test/test_parser.py ----

    #[test]
    fn test_exact() {
        let chains = chains(PARSER_YML);
        assert_eq!(
            matched(&chains, "POST", "/v1.16/containers/create"),
            ["POST /v1.16/containers/create"]
        );
    }

    #[test]
    fn test_matched() {
        let chains = chains(PARSER_YML);
        assert_eq!(
            matched(&chains, "GET", "/v2/images/alpha/json"),
            ["* /v*/images/*/json"]
        );
    }

    #[test]
    fn test_multiple() {
        // Powerstrip returned a set; we return file order.
        let chains = chains(PARSER_YML);
        assert_eq!(
            matched(&chains, "GET", "/v1.16/images/*/json"),
            ["GET /v1.16/images/*/json", "* /v*/images/*/json"]
        );
    }

    #[test]
    fn test_config_changed() {
        // Powerstrip re-read its file under the parser; here a reload is a new ChainSet.
        let old = chains(PARSER_YML);
        assert_eq!(
            matched(&old, "POST", "/v1.16/containers/create"),
            ["POST /v1.16/containers/create"]
        );
        let new = chains(
            "endpoints:\n  \"GET /info\":\n    post: [gamma]\nadapters:\n  alpha: http://alpha/alpha\n  \
             beta: http://beta/beta\n  gamma: http://gamma/gamma",
        );
        assert_eq!(matched(&new, "GET", "/info"), ["GET /info"]);
        assert!(matched(&new, "POST", "/v1.16/containers/create").is_empty());
    }

    #[test]
    fn test_query_error() {
        // Intentional difference: Powerstrip's matcher raised InvalidRequest on a `?`
        // (its proxy stripped the query first); ours takes the request target and strips it.
        let chains = chains("endpoints:\n  \"GET /foo\": {post: [a]}\nadapters:\n  a: http://a/");
        assert_eq!(matched(&chains, "GET", "/foo?bar"), ["GET /foo"]);
        assert_eq!(matched(&chains, "GET", "/foo?"), ["GET /foo"]);
        assert!(matched(&chains, "GET", "/foo/?bar").is_empty());
    }

    // ---- hooks_for ----

    #[test]
    fn hooks_run_in_file_order_then_list_order_with_duplicates() {
        let chains = chains(
            "endpoints:
  \"* /*/containers/*\":
    pre: [debug]
  \"POST /*/containers/create\":
    pre: [flocker, weave, debug]
    post: [weave]
  \"POST /*/containers/*\":
    post: [debug]
adapters:
  debug: http://debug/
  flocker: http://flocker/flocker-adapter
  weave: http://weave/v1/extension",
        );
        let chain = chains.hooks_for(&Method::POST, "/v1.41/containers/create?name=web");
        assert_eq!(names(&chain.pre), ["debug", "flocker", "weave", "debug"]);
        assert_eq!(names(&chain.post), ["weave", "debug"]);
        assert_eq!(
            chain.endpoints,
            [
                "* /*/containers/*",
                "POST /*/containers/create",
                "POST /*/containers/*"
            ]
        );
        assert!(
            Arc::ptr_eq(&chain.pre[0], &chain.pre[3]),
            "adapters are shared, not copied"
        );

        let start = chains.hooks_for(&Method::POST, "/containers/abc/start");
        assert_eq!(names(&start.pre), ["debug"]);
        assert_eq!(names(&start.post), ["debug"]);

        let none = chains.hooks_for(&Method::GET, "/v1.41/info");
        assert!(none.is_empty());
        assert!(none.endpoints.is_empty());
    }

    #[test]
    fn star_star_matches_everything() {
        let chains =
            chains("endpoints:\n  \"* *\":\n    pre: [echo]\nadapters:\n  echo: http://echo/");
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/_ping"),
            ("POST", "/v1.41/containers/a/b/c"),
            ("HEAD", "/x?y=z"),
        ] {
            assert_eq!(matched(&chains, method, path), ["* *"], "{method} {path}");
        }
    }

    #[test]
    fn method_star_is_any_method_and_a_named_method_is_exact() {
        let chains = chains(PARSER_YML);
        for method in ["GET", "POST", "DELETE", "PROPFIND"] {
            assert_eq!(
                matched(&chains, method, "/v1.41/images/x/json"),
                ["* /v*/images/*/json"]
            );
        }
        assert!(matched(&chains, "GET", "/v1.16/containers/create").is_empty());
    }

    #[test]
    fn matches_same_endpoints_compares_the_matched_keys() {
        let chains = chains(PARSER_YML);
        let same = |a, b| chains.matches_same_endpoints(&Method::GET, a, b);
        assert!(same("/v1.16/images/a/json", "/v1.16/images/b/json?x=1"));
        assert!(same("/v1.16/images/a/json", "/v1.16/images/a/json"));
        assert!(
            !same("/v1.16/images/a/json", "/v1.17/images/a/json"),
            "drops GET /v1.16/images/*/json"
        );
        assert!(!same("/v1.17/images/a/json", "/info"));
        assert!(same("/info", "/version"), "both match nothing");
    }

    // ---- the unversioned-path rule ----

    #[test]
    fn slash_star_slash_patterns_also_match_unversioned_paths() {
        let create = "/*/containers/create";
        assert!(path_matches(create, "/v1.41/containers/create"));
        assert!(path_matches(create, "/v1.16/containers/create"));
        assert!(path_matches(create, "/containers/create"));
        assert!(!path_matches(create, "/containers/x/create"));
        assert!(!path_matches(create, "/v1.41/containers/x/create"));
        assert!(!path_matches(create, "/containers/created"));

        let start = "/*/containers/*/start";
        assert!(path_matches(start, "/v1.41/containers/abc/start"));
        assert!(path_matches(start, "/containers/abc/start"));
        assert!(
            path_matches(start, "/containers/a/b/start"),
            "* crosses / in fnmatch"
        );
        assert!(!path_matches(start, "/containers/abc/stop"));

        let delete = "/*/containers/*";
        assert!(path_matches(delete, "/containers/abc"));
        assert!(path_matches(delete, "/v1.41/containers/abc/json"));
        assert!(!path_matches(delete, "/images/abc"));
    }

    #[test]
    fn the_rule_only_applies_to_unversioned_paths_and_slash_star_slash_patterns() {
        // A versioned path is matched only as written.
        assert!(!path_matches("/*/v1.41/info", "/v1.41/info"));
        assert!(path_matches("/*/v1.41/info", "/x/v1.41/info"));
        // Other patterns mean exactly what fnmatch says.
        assert!(!path_matches("/v*/images/*/json", "/images/x/json"));
        assert!(!path_matches(
            "/v1.41/containers/create",
            "/containers/create"
        ));
        assert!(path_matches("/containers/create", "/containers/create"));
        assert!(!path_matches(
            "/containers/create",
            "/v1.41/containers/create"
        ));
        // `/*/x` and `/x` together (the Powerstrip-era workaround) both still match.
        assert!(path_matches("/*/info", "/info"));
        assert!(path_matches("/*/info", "/v1.41/info"));
    }

    #[test]
    fn versioned_means_v_then_digits_and_dots() {
        for path in ["/v1.41/info", "/v1/info", "/v1.41", "/v2.0.1/x", "/v./x"] {
            assert!(is_versioned(path), "{path}");
        }
        for path in [
            "/info",
            "/v/info",
            "/vx/info",
            "/version",
            "/v1a/info",
            "/",
            "",
            "v1.41/info",
        ] {
            assert!(!is_versioned(path), "{path}");
        }
        // `/version` is a real unversioned endpoint: `/*/version` matches it.
        assert!(path_matches("/*/version", "/version"));
    }

    // ---- fnmatch semantics ----

    #[test]
    fn star_crosses_slashes_and_question_mark_is_one_char() {
        assert!(path_matches("/*", "/v1.41/containers/json"));
        assert!(path_matches(
            "/v1.41/containers/?/start",
            "/v1.41/containers/a/start"
        ));
        assert!(!path_matches(
            "/v1.41/containers/?/start",
            "/v1.41/containers/ab/start"
        ));
        assert!(path_matches("/v1.4?/info", "/v1.41/info"));
    }

    #[test]
    fn character_classes() {
        assert!(path_matches("/v1.[0-9][0-9]/info", "/v1.41/info"));
        assert!(!path_matches("/v1.[0-9][0-9]/info", "/v1.4/info"));
        assert!(path_matches(
            "/*/containers/[abc]*/start",
            "/v1.41/containers/beef/start"
        ));
        assert!(!path_matches(
            "/*/containers/[abc]*/start",
            "/v1.41/containers/dead/start"
        ));
        assert!(path_matches(
            "/*/containers/[!abc]*/start",
            "/v1.41/containers/dead/start"
        ));
        assert!(!path_matches(
            "/*/containers/[!abc]*/start",
            "/v1.41/containers/beef/start"
        ));
        // Powerstrip's README example: a class is one character, so this cannot match /v1.16.
        assert!(!path_matches(
            "/v[12]/containers/create",
            "/v1.16/containers/create"
        ));
        assert!(path_matches(
            "/v[12]/containers/create",
            "/v2/containers/create"
        ));
    }

    #[test]
    fn matching_is_anchored_and_case_sensitive() {
        assert!(!path_matches(
            "/*/containers/create",
            "/v1.41/containers/create/x"
        ));
        assert!(!path_matches("/containers/create", "/x/containers/create"));
        assert!(!path_matches(
            "/*/Containers/create",
            "/v1.41/containers/create"
        ));
        let chains = chains(PARSER_YML);
        let lower = Method::from_bytes(b"post").expect("extension method");
        assert!(chains
            .matching_endpoints(&lower, "/v1.16/containers/create")
            .next()
            .is_none());
    }

    /// Expected values computed with Python 2.7's `fnmatch` (what Powerstrip ran): the
    /// places where globset's own syntax would differ.
    #[test]
    fn agrees_with_python_fnmatch_where_globset_differs() {
        let cases = [
            ("/{a,b}", "/{a,b}", true),
            ("/{a,b}", "/a", false),
            ("/a\\b", "/a\\b", true),
            ("/a/**/b", "/a/b", false),
            ("/a/**/b", "/a/x/y/b", true),
            ("**/x", "/x", true),
            ("/[^a]", "/^", true),
            ("/[^a]", "/b", false),
            ("/[]]", "/]", true),
            ("/[!]]", "/]", false),
            ("/[!]]", "/x", true),
            ("/[a-]", "/-", true),
            ("/[!a]", "//", true),
            ("/?", "//", true),
            ("/[*]", "/*", true),
            ("/[*]", "/a", false),
            ("/[^!]", "/!", true),
            ("/[^!]", "/^", true),
            ("/[^!]", "/a", false),
            ("/a,b", "/a,b", true),
            ("/[--/]", "/.", true),
            ("/[]-a]", "/_", true),
            ("/[!^]", "/^", false),
            ("/[!^]", "/a", true),
        ];
        for (pattern, path, expected) in cases {
            let glob = compile(pattern, pattern).expect("valid fnmatch pattern");
            assert_eq!(
                glob.is_match(path),
                expected,
                "fnmatch({path:?}, {pattern:?})"
            );
        }
    }

    #[test]
    fn bad_keys_are_rejected_with_a_reason() {
        let err = |key: &str| {
            parse_endpoint_key(key)
                .expect_err("must be rejected")
                .to_string()
        };
        assert_eq!(err("/containers/create"), PatternError::Shape.to_string());
        assert_eq!(
            err("post /x"),
            "method \"post\" must be * or an uppercase HTTP method such as POST"
        );
        assert_eq!(
            err("P* /x"),
            "method \"P*\" must be * or an uppercase HTTP method such as POST"
        );
        assert_eq!(err("POST x"), "pattern \"x\" must start with / or be *");
        assert_eq!(err("POST  /x"), "pattern \" /x\" must start with / or be *");
        assert_eq!(
            err("POST /a b"),
            "pattern \"/a b\" contains whitespace, so it can never match a request path"
        );
        assert_eq!(
            err("POST /x["),
            "pattern \"/x[\" has a [ with no closing ] (write [[] for a literal [)"
        );
        assert_eq!(
            err("GET /v[9-1]/info"),
            "pattern \"/v[9-1]/info\" has a reversed character range 9-1"
        );
        assert!(parse_endpoint_key("M-SEARCH /x").is_ok());
        assert!(parse_endpoint_key("* *").is_ok());
    }
}
