//! Which endpoints of a [`ChainSet`] a Docker API request matches, and so which adapters run.
//!
//! # Endpoint keys: Python's `fnmatch`, exactly
//!
//! Powerstrip matched every endpoint key with Python's `fnmatch` against the string
//! `"<METHOD> <path>"`, so a key is one pattern over that whole string, and busbar matches it
//! the same way: `POST /*/containers/create`, `* */containers/create`,
//! `POST */containers/create` and `*` all mean what they meant to Powerstrip. Every key is
//! accepted, since fnmatch accepts every pattern; a key that can never match a request the
//! engine executes (`/containers/create` with no method, `post /x` in lowercase) is loaded
//! with a warning ([`KeyPattern::warnings`]) rather than refused, as Powerstrip loaded it.
//!
//! The syntax is Python 3's `fnmatch.translate`, and the table in `tests/fnmatch/` (made by
//! Python's own `fnmatch`, see `cases.py` there) checks it: the whole string must match
//! (anchored), case-sensitively; `*` matches any sequence **including `/` and the space**
//! (so `DELETE /*/containers/*` covers everything under `containers`); `?` matches one
//! character; `[abc]`, `[a-z]` and `[!abc]` are character classes (a `]` right after `[` or
//! `[!` is a member, `-` first or last is a literal, `^` is a literal); a `[` with no closing
//! `]` is a literal `[`; every other character is literal, including `{`, `}`, `,` and `\`.
//! A reversed range (`[z-a]`) is dropped from its class as Python 3 drops it (Python 2, which
//! Powerstrip ran, failed every request on it); both are warned about.
//!
//! The matcher is a small one of our own (tokens and the classic star-backtracking walk,
//! `O(key × path)` at worst): glob crates each have their own syntax (`{a,b}`, `**`, `\`
//! escapes, `[^...]`) and match bytes, where fnmatch matches characters.
//!
//! The path matched is the request's path without its query, in the canonical form the
//! engine routes on (decoded; see `busbar_api::path`): what a hook matches is what the engine
//! executes.
//!
//! # Unversioned paths
//!
//! Docker serves each API path both with a version prefix (`/v1.41/containers/create`)
//! and without one (`/containers/create`). Powerstrip configs are written as
//! `POST /*/containers/create`, which under plain fnmatch needs a segment before
//! `/containers`, so clients that send unversioned paths bypassed every adapter (Powerstrip
//! issue #65). The rule here:
//!
//! > A path is *versioned* when its first segment is `v` followed by one or more digits
//! > and dots (Docker's own route `/v{version:[0-9.]+}`), e.g. `/v1.41/…`. When the path is
//! > **not** versioned and the key's path part (after its first space) starts with `/*/`,
//! > the key also matches if it does with that leading `/*` taken out.
//!
//! So `POST /*/containers/create` matches `/v1.41/containers/create` (as written) and
//! `/containers/create` (as `POST /containers/create`), and `* /*/containers/*/start` matches
//! `/containers/abc/start`. Nothing else changes: a versioned path is only matched as
//! written, and keys whose path part does not start with `/*/` (`/v1.41/…`, `/v*/…`,
//! `/containers/…`, `*/containers/…`) mean exactly what fnmatch says. The rule cannot make a
//! key match a path with *fewer* literal parts than it names: `/*/containers/create` still
//! does not match `/containers/x/create`. Writing both `/*/x` and `/x` (the Powerstrip-era
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
use http::Method;

use crate::{Adapter, ChainSet, Endpoint};

/// One element of an fnmatch pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*`: any sequence (runs of `*` are one).
    Star,
    /// `?`: any one character.
    One,
    Char(char),
    /// `[...]`: one character in (or, negated, not in) the inclusive ranges. An empty
    /// non-negated class matches nothing; an empty negated one any character.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::One => true,
            Token::Char(x) => *x == c,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A compiled endpoint key, such as `POST /*/containers/create`.
#[derive(Debug, Clone)]
pub struct KeyPattern {
    source: String,
    tokens: Vec<Token>,
    /// For keys whose path part starts with `/*/`: the key without that leading `/*`, tried
    /// on unversioned paths (see the module docs).
    unversioned: Option<Vec<Token>>,
    /// What is odd about the key (see [`KeyPattern::warnings`]).
    warnings: Vec<String>,
}

impl KeyPattern {
    /// Compiles a key. Every string is a pattern, as it is to fnmatch.
    pub fn parse(key: &str) -> KeyPattern {
        let mut notes = Notes::default();
        let tokens = tokenize(key, &mut notes);
        let unversioned = key
            .split_once(' ')
            .filter(|(_, rest)| rest.starts_with("/*/"))
            .map(|(head, rest)| tokenize(&format!("{head} {}", &rest[2..]), &mut Notes::default()));
        let mut pattern = KeyPattern {
            source: key.to_string(),
            tokens,
            unversioned,
            warnings: Vec::new(),
        };
        pattern.warnings = notes.into_warnings(&pattern);
        pattern
    }

    /// The key as written in the file.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a request with `method` and `path` (canonical, no query) matches, applying
    /// the unversioned-path rule.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        let subject: Vec<char> = subject(method, path);
        self.matches_subject(&subject, is_versioned(path))
    }

    fn matches_subject(&self, subject: &[char], versioned: bool) -> bool {
        glob(&self.tokens, subject)
            || (!versioned && self.unversioned.as_ref().is_some_and(|u| glob(u, subject)))
    }

    /// Why this key is probably not what its author meant, one sentence each: it can never
    /// match a request the engine executes, or reads differently than it looks. Empty for
    /// ordinary keys. Such a key still loads (Powerstrip loaded it).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether no request the engine executes (an uppercase method, a space, a path
    /// starting with `/` without control characters) can match.
    pub fn never_matches(&self) -> bool {
        !can_match(&self.tokens) && !self.unversioned.as_ref().is_some_and(|u| can_match(u))
    }
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for KeyPattern {}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// `"<METHOD> <path>"`, the string Powerstrip matched keys against, as characters.
fn subject(method: &Method, path: &str) -> Vec<char> {
    let method = method.as_str();
    let mut s = Vec::with_capacity(method.len() + 1 + path.len());
    s.extend(method.chars());
    s.push(' ');
    s.extend(path.chars());
    s
}

/// Whether `tokens` match all of `s`: the classic walk that, on a mismatch, lets the last
/// `*` take one more character. Every token but `*` takes exactly one character, so the
/// leftmost match after a `*` is always as good as any later one.
fn glob(tokens: &[Token], s: &[char]) -> bool {
    let (mut t, mut i) = (0, 0);
    // After the last `*` seen: the token after it, and where in `s` it resumes.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t + 1, i));
                t += 1;
                continue;
            }
            Some(token) if token.matches(s[i]) => {
                t += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after, from)) => {
                t = after;
                i = from + 1;
                star = Some((after, from + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|t| *t == Token::Star)
}

/// Whether `path` (no query) has a version prefix (`/v1.41/...`).
pub fn is_versioned(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .is_some_and(is_version_segment)
}

// ---- parsing: Python 3's fnmatch.translate ----

/// Oddities found while tokenizing, turned into warnings once the key is compiled.
#[derive(Default)]
struct Notes {
    unclosed: bool,
    reversed: Vec<(char, char)>,
}

impl Notes {
    fn into_warnings(self, key: &KeyPattern) -> Vec<String> {
        let mut out = Vec::new();
        if key.never_matches() {
            out.push(never_hint(&key.source));
        }
        if self.unclosed {
            out.push("it has a [ with no closing ], which fnmatch reads as a literal [".into());
        }
        for (lo, hi) in self.reversed {
            out.push(format!(
                "the range {lo}-{hi} is reversed: Python 3's fnmatch drops it (it matches no \
                 character), Python 2's (Powerstrip's) failed every request on it"
            ));
        }
        out
    }
}

fn never_hint(key: &str) -> String {
    let method = key.split(' ').next().unwrap_or_default();
    let why = if !key.contains(' ') && !key.starts_with('*') {
        format!(" (it has no METHOD part: write \"* {key}\" or \"POST {key}\")")
    } else if method.chars().any(|c| c.is_ascii_lowercase()) {
        format!(
            " (methods are uppercase: write \"{}\")",
            key.replacen(method, &method.to_ascii_uppercase(), 1)
        )
    } else {
        String::new()
    };
    format!("it can never match a request, which is \"METHOD /path\" with an uppercase METHOD, so its hooks never run{why}")
}

fn tokenize(pattern: &str, notes: &mut Notes) -> Vec<Token> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        match c {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => out.push(Token::One),
            '[' => {
                let mut j = i;
                if p.get(j) == Some(&'!') {
                    j += 1;
                }
                if p.get(j) == Some(&']') {
                    j += 1;
                }
                while j < p.len() && p[j] != ']' {
                    j += 1;
                }
                if j >= p.len() {
                    notes.unclosed = true;
                    out.push(Token::Char('['));
                } else {
                    out.push(class(&p, i, j, notes));
                    i = j + 1;
                }
            }
            c => out.push(Token::Char(c)),
        }
    }
    out
}

/// One class item as `re` would read fnmatch's output: a character, and whether it was
/// escaped (an escaped `-` is a member, an unescaped one between two items a range).
type Item = (char, bool);

/// The class `p[i..j]` (between `[` and `]`), read as Python 3's `fnmatch.translate` writes
/// it for `re` and `re` then reads it.
fn class(p: &[char], mut i: usize, j: usize, notes: &mut Notes) -> Token {
    let stuff = &p[i..j];
    let literal = |chunk: &[char]| -> Vec<Item> {
        chunk.iter().map(|&c| (c, c == '\\' || c == '-')).collect()
    };
    let items: Vec<Item> = if !stuff.contains(&'-') {
        literal(stuff)
    } else {
        // Split at the hyphens that make ranges (never the first character, nor the one
        // right after a range's hyphen).
        let mut chunks: Vec<Vec<char>> = Vec::new();
        let mut k = if p[i] == '!' { i + 2 } else { i + 1 };
        while let Some(at) = (k..j).find(|&x| p[x] == '-') {
            chunks.push(p[i..at].to_vec());
            i = at + 1;
            k = at + 3;
        }
        let chunk = &p[i..j];
        match chunks.last_mut() {
            Some(last) if chunk.is_empty() => last.push('-'),
            _ => chunks.push(chunk.to_vec()),
        }
        // Remove empty (reversed) ranges, as Python 3 does.
        for k in (1..chunks.len()).rev() {
            let (Some(&lo), Some(&hi)) = (chunks[k - 1].last(), chunks[k].first()) else {
                continue;
            };
            if lo > hi {
                notes.reversed.push((lo, hi));
                let tail = chunks.remove(k);
                chunks[k - 1].pop();
                chunks[k - 1].extend_from_slice(&tail[1..]);
            }
        }
        let mut items = Vec::new();
        for (n, chunk) in chunks.iter().enumerate() {
            if n > 0 {
                items.push(('-', false));
            }
            items.extend(literal(chunk));
        }
        items
    };
    let (negated, items) = match items.split_first() {
        None => {
            return Token::Class {
                negated: false,
                ranges: Vec::new(),
            }
        }
        Some((('!', false), rest)) => (true, rest),
        Some(_) => (false, &items[..]),
    };
    // As `re` reads a class: `x-y` is a range unless the `-` is escaped or last.
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < items.len() {
        let lo = items[k].0;
        match (items.get(k + 1), items.get(k + 2)) {
            (Some(('-', false)), Some(&(hi, _))) => {
                // Python 3 removed the reversed ones above; keep the guard for any other.
                if lo <= hi {
                    ranges.push((lo, hi));
                }
                k += 3;
            }
            _ => {
                ranges.push((lo, lo));
                k += 1;
            }
        }
    }
    Token::Class { negated, ranges }
}

// ---- can a key match at all? ----

/// Where a request string `"METHOD /path"` is: the states of a tiny automaton for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    /// Nothing read yet: an uppercase letter must come.
    Start,
    /// In the method: more uppercase letters (or `-`, `_`: `M-SEARCH`), or the space.
    Method,
    /// After the space: `/` must come.
    Space,
    /// In the path: any character but a control character.
    Path,
}

impl Part {
    /// The characters that may come next, as inclusive ranges, and the state after them.
    fn next(self) -> &'static [((char, char), Part)] {
        const PATH: Part = Part::Path;
        match self {
            Part::Start => &[(('A', 'Z'), Part::Method)],
            Part::Method => &[
                (('A', 'Z'), Part::Method),
                (('-', '-'), Part::Method),
                (('_', '_'), Part::Method),
                ((' ', ' '), Part::Space),
            ],
            Part::Space => &[(('/', '/'), PATH)],
            Part::Path => &[((' ', '~'), PATH), (('\u{a0}', char::MAX), PATH)],
        }
    }
}

/// Whether some character in `lo..=hi` matches `token`.
fn token_meets(token: &Token, (lo, hi): (char, char)) -> bool {
    match token {
        Token::Star | Token::One => true,
        Token::Char(c) => lo <= *c && *c <= hi,
        Token::Class {
            negated: false,
            ranges,
        } => ranges.iter().any(|&(a, b)| a <= hi && lo <= b),
        Token::Class {
            negated: true,
            ranges,
        } => {
            // Is lo..=hi entirely covered by the ranges? Walk up from lo.
            let mut sorted = ranges.clone();
            sorted.sort();
            let mut next = lo as u32;
            for (a, b) in sorted {
                if a as u32 > next {
                    break;
                }
                next = next.max(b as u32 + 1);
            }
            next <= hi as u32
        }
    }
}

/// Whether `tokens` match some request string: a search over (token, [`Part`]) pairs.
fn can_match(tokens: &[Token]) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![(0usize, Part::Start)];
    while let Some((t, part)) = todo.pop() {
        if !seen.insert((t, part)) {
            continue;
        }
        let Some(token) = tokens.get(t) else {
            if part == Part::Path {
                return true;
            }
            continue;
        };
        if *token == Token::Star {
            todo.push((t + 1, part));
        }
        let after = if *token == Token::Star { t } else { t + 1 };
        for &(range, to) in part.next() {
            if token_meets(token, range) {
                todo.push((after, to));
            }
        }
    }
    false
}

// ---- matching a request against a chain set ----

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
        let versioned = is_versioned(&path);
        let subject = subject(method, &path);
        self.endpoints()
            .iter()
            .filter(move |e| e.pattern.matches_subject(&subject, versioned))
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

/// Python's `fnmatch.fnmatchcase(name, pattern)`, without busbar's unversioned-path rule:
/// what `tests/fnmatch/cases.tsv` checks the tokenizer and the walk against.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let tokens = tokenize(pattern, &mut Notes::default());
    glob(&tokens, &name.chars().collect::<Vec<_>>())
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

    /// Whether `GET <pattern>` matches a GET of `path`.
    fn path_matches(pattern: &str, path: &str) -> bool {
        KeyPattern::parse(&format!("GET {pattern}")).matches(&Method::GET, path)
    }

    fn key_matches(key: &str, method: &str, path: &str) -> bool {
        let method = Method::from_bytes(method.as_bytes()).expect("test method");
        KeyPattern::parse(key).matches(&method, path)
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
    fn star_star_and_star_match_everything() {
        let chains = chains(
            "endpoints:\n  \"* *\":\n    pre: [echo]\n  \"*\":\n    pre: [echo]\nadapters:\n  echo: http://echo/",
        );
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/_ping"),
            ("POST", "/v1.41/containers/a/b/c"),
            ("HEAD", "/x?y=z"),
        ] {
            assert_eq!(
                matched(&chains, method, path),
                ["* *", "*"],
                "{method} {path}"
            );
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

    // ---- keys Powerstrip accepted that busbar once refused (issue 18) ----

    #[test]
    fn the_whole_key_is_one_fnmatch_pattern() {
        for key in [
            "POST */containers/create",
            "* */containers/create",
            "*/containers/create",
        ] {
            assert!(
                key_matches(key, "POST", "/v1.41/containers/create"),
                "{key}"
            );
            assert!(key_matches(key, "POST", "/containers/create"), "{key}");
            assert!(KeyPattern::parse(key).warnings().is_empty(), "{key}");
        }
        assert!(!key_matches(
            "POST */containers/create",
            "GET",
            "/containers/create"
        ));
        assert!(key_matches(
            "* */containers/create",
            "GET",
            "/v1.41/containers/create"
        ));
        assert!(key_matches(
            "*/containers/create",
            "PUT",
            "/containers/create"
        ));
        // A globbed method, a class in the method.
        assert!(key_matches(
            "P* /*/containers/create",
            "PUT",
            "/v1.41/containers/create"
        ));
        assert!(key_matches(
            "P* /*/containers/create",
            "POST",
            "/containers/create"
        ));
        assert!(!key_matches(
            "P* /*/containers/create",
            "GET",
            "/containers/create"
        ));
        assert!(key_matches("[PG]* /*/info", "GET", "/v1.41/info"));
        assert!(key_matches("?OST /x", "POST", "/x"));
        // `*` crosses the space too.
        assert!(key_matches("*/x", "GET", "/a/x"));
        assert!(key_matches("*T /x", "GET", "/x"));
        assert!(!key_matches("*T /x", "DELETE", "/x"));
    }

    #[test]
    fn keys_that_can_never_match_load_with_a_warning() {
        let warn = |key: &str| KeyPattern::parse(key).warnings().join("; ");
        let never = "it can never match a request";
        for key in [
            "/containers/create",
            "post /*/containers/create",
            "POST x",
            "POST  /x",
            "GET /[z-a]",
            "P[0-9]ST /x",
            "",
        ] {
            assert!(KeyPattern::parse(key).never_matches(), "{key:?}");
            assert!(warn(key).starts_with(never), "{key:?}: {}", warn(key));
        }
        assert!(warn("/containers/create").contains(
            "it has no METHOD part: write \"* /containers/create\" or \"POST /containers/create\""
        ));
        assert!(warn("post /*/containers/create")
            .contains("methods are uppercase: write \"POST /*/containers/create\""));
        for key in [
            "* *",
            "*",
            "* /a b",
            "* [a-z]*",
            "M-SEARCH /x",
            "GET /[!z-a]",
            "POST /*/containers/create",
            "* /*/containers/*/start",
        ] {
            assert!(!KeyPattern::parse(key).never_matches(), "{key:?}");
        }
        assert!(
            warn("POST /x[").contains("a [ with no closing ], which fnmatch reads as a literal [")
        );
        assert!(key_matches("POST /x[", "POST", "/x["));
        assert!(warn("GET /v[9-1]/info").contains("the range 9-1 is reversed"));
        assert_eq!(warn("POST /*/containers/create"), "");
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
        assert!(path_matches("/?", "/\u{e9}"), "one character, not one byte");
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

    /// Expected values computed with Python's `fnmatch`: the places where glob crates' own
    /// syntax differs (the full table is `tests/fnmatch/cases.tsv`).
    #[test]
    fn agrees_with_python_fnmatch_where_glob_crates_differ() {
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
            ("/[z-a]", "/z", false),
            ("/[!z-a]", "/z", true),
            ("/[a-c-e]", "/-", true),
            ("/[a-c-e]", "/d", false),
            ("/[b-a-c]", "/c", true),
            ("/[b-a-c]", "/b", false),
            ("/[", "/[", true),
            ("/[!]", "/[!]", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                fnmatch(path, pattern),
                expected,
                "fnmatch({path:?}, {pattern:?})"
            );
        }
    }
}
