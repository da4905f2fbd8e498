//! Swarm's placement expressions: `<key><op><value>` as written after `constraint:` or
//! `affinity:` (swarm.md §2.3).
//!
//! - `op` is `==` or `!=`. As in Swarm, `==` is looked for first, anywhere in the text, and the
//!   text is split at its first occurrence; only then is `!=` tried.
//! - `key` matches `[A-Za-z_][A-Za-z0-9-_.]*` and is kept as written (label keys are
//!   case-sensitive in Docker).
//! - `value` is non-empty; a leading `~` makes the expression *soft* (dropped on the second
//!   scheduling pass) and is not part of the value.
//! - `/…/` values are regular expressions (Rust `regex`, close to Swarm's RE2: `(?i)` works),
//!   matched **unanchored** as Swarm did (`/^node-[12]$/` to anchor).
//! - Other values are globs matched against the whole string: `*` is any run of characters and
//!   `?` any one character; everything else is literal. (Swarm pasted the value into a regex
//!   with `*` replaced by `.*`, so `.` and `[`…`]` were accidentally regex syntax; we treat them
//!   literally, and users who want classes write a `/regex/`.)
//!
//! An expression matches a *list* of strings (a node's name and ID; every container name on a
//! node): `==` holds when any of them matches, `!=` when none does.

use std::fmt;

use regex::Regex;

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "==",
            Op::NotEq => "!=",
        })
    }
}

/// How an expression's value is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// No wildcard: an exact string (also eligible for ID-prefix matching by the filters).
    Plain,
    /// Contains `*` or `?`.
    Glob,
    /// Written `/…/`.
    Regex,
}

/// One parsed, validated expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pub key: String,
    pub op: Op,
    /// The value without the soft marker `~` (and with the slashes of a `/regex/`).
    pub value: String,
    pub soft: bool,
    pub kind: ValueKind,
    /// What the source text compiled to; globs become anchored regexes.
    pattern: Regex,
}

/// Why an expression is not valid (wrapped into `ScheduleError::InvalidExpression`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError(pub String);

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Expr {
    /// Parses `key==value`, `key!=~value`, `key==/re/`, etc.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let (key, op, raw) = if let Some((k, v)) = text.split_once("==") {
            (k, Op::Eq, v)
        } else if let Some((k, v)) = text.split_once("!=") {
            (k, Op::NotEq, v)
        } else {
            return Err(ExprError("one of the operators ==, != is expected".into()));
        };
        if !valid_key(key) {
            return Err(ExprError(format!(
                "key {key:?} is invalid: it must start with a letter or '_' and contain only letters, digits, \
                 '-', '_' and '.'"
            )));
        }
        let (soft, value) = match raw.strip_prefix('~') {
            Some(v) => (true, v),
            None => (false, raw),
        };
        if value.is_empty() {
            return Err(ExprError("the value is empty".into()));
        }
        if value.chars().any(char::is_control) {
            return Err(ExprError("the value contains control characters".into()));
        }
        let (kind, pattern) = if value.len() >= 2 && value.starts_with('/') && value.ends_with('/')
        {
            let inner = &value[1..value.len() - 1];
            let re = Regex::new(inner).map_err(|e| {
                ExprError(shown(
                    &format!("invalid regular expression /{inner}/: {e}"),
                    MAX_SHOWN,
                ))
            })?;
            (ValueKind::Regex, re)
        } else if value.contains(['*', '?']) {
            (ValueKind::Glob, glob_regex(value)?)
        } else {
            (ValueKind::Plain, glob_regex(value)?)
        };
        Ok(Expr {
            key: key.to_owned(),
            op,
            value: value.to_owned(),
            soft,
            kind,
            pattern,
        })
    }

    /// Whether the value matches this one string (before the operator is applied).
    pub fn value_matches(&self, what: &str) -> bool {
        self.pattern.is_match(what)
    }

    /// Swarm's `Match(whats...)`: `==` holds if any candidate matches, `!=` if none does.
    pub fn matches<'s>(&self, whats: impl IntoIterator<Item = &'s str>) -> bool {
        self.apply_op(whats.into_iter().any(|w| self.value_matches(w)))
    }

    /// Applies the operator to "some candidate matched".
    pub fn apply_op(&self, any_matched: bool) -> bool {
        match self.op {
            Op::Eq => any_matched,
            Op::NotEq => !any_matched,
        }
    }
}

/// `key op value`, without the soft marker (as Swarm prints it in its error lists).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op, self.value)
    }
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `us*` -> `^us.*$`, with every other character literal (a run of `*` is one `.*`). Valid
/// syntax always, but a long enough value (100,000 `?`) exceeds the regex size limit: then an
/// error, as for a `/regex/` too large.
fn glob_regex(glob: &str) -> Result<Regex, ExprError> {
    let mut re = String::with_capacity(glob.len() + 8);
    re.push('^');
    let mut literal = [0u8; 4];
    let mut star = false;
    for c in glob.chars() {
        match c {
            '*' if star => {}
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            _ => re.push_str(&regex::escape(c.encode_utf8(&mut literal))),
        }
        star = c == '*';
    }
    re.push('$');
    // `(?s)` so that `*` also spans newlines; values cannot hold control characters anyway.
    Regex::new(&format!("(?s){re}")).map_err(|e| match e {
        regex::Error::CompiledTooBig(limit) => ExprError(format!(
            "the value is too long to match ({} characters; its matcher would exceed {limit} bytes)",
            glob.chars().count()
        )),
        other => ExprError(shown(
            &format!("the value cannot be matched: {other}"),
            MAX_SHOWN,
        )),
    })
}

/// The longest text of a value or reason quoted back in an error.
pub(crate) const MAX_SHOWN: usize = 200;

/// `text`, cut to `max` characters (`...` marks the cut): values quoted in errors are the
/// client's, and may be megabytes long.
pub(crate) fn shown(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}...", &text[..end]),
    }
}
