//! Route patterns of the fakes: `METHOD PATH[?QUERY]`, with `*` (any run of characters,
//! `/` included) in the path and the query; the first `?` starts the query pattern, in which
//! a further `?` matches one character.

use http::Method;

/// A parsed route pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// `None` for `*`: any method.
    method: Option<Method>,
    path: String,
    /// `None`: any query (or none). `Some`: the query must match (`""` when there is none).
    query: Option<String>,
}

impl Pattern {
    /// Parses `"POST /*/containers/create"`; panics on a malformed pattern (a test bug).
    pub(crate) fn parse(pattern: &str) -> Pattern {
        let (method, target) = pattern
            .split_once(' ')
            .unwrap_or_else(|| panic!("route pattern {pattern:?}: expected \"METHOD PATH\""));
        let method = match method {
            "*" => None,
            m => Some(
                Method::from_bytes(m.as_bytes())
                    .unwrap_or_else(|_| panic!("route pattern {pattern:?}: bad method")),
            ),
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        assert!(
            path.starts_with('/'),
            "route pattern {pattern:?}: the path must start with /"
        );
        Pattern {
            method,
            path,
            query,
        }
    }

    /// Whether a request `method` `target` (path and query as received) matches. A path
    /// pattern starting with `/*/` also matches the path without a version prefix, as busbar's
    /// own chains do: `/*/info` matches `/v1.41/info` and `/info`.
    pub(crate) fn matches(&self, method: &Method, target: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        let path_ok = glob(&self.path, path)
            || self
                .path
                .strip_prefix("/*")
                .is_some_and(|rest| rest.starts_with('/') && glob(rest, path));
        path_ok && self.query.as_deref().is_none_or(|q| glob(q, query))
    }
}

/// `*` matches any run of characters (also `/`), `?` exactly one; everything else itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/*/containers/create", "/v1.41/containers/create"));
        assert!(glob(
            "/*/containers/*/attach",
            "/v1.41/containers/c1/attach"
        ));
        assert!(!glob("/*/containers/create", "/v1.41/containers/create/x"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("GET /*/info");
        assert!(p.matches(&Method::GET, "/v1.41/info"));
        assert!(p.matches(&Method::GET, "/info"));
        assert!(p.matches(&Method::GET, "/info?x=1"));
        assert!(!p.matches(&Method::POST, "/info"));
        let q = Pattern::parse("* /containers/json?all=1");
        assert!(q.matches(&Method::GET, "/containers/json?all=1"));
        assert!(!q.matches(&Method::GET, "/containers/json"));
    }
}
