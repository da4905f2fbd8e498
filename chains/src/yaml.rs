//! `adapters.yml` text -> a validated [`ChainSet`], or every [`Problem`] found.
//!
//! The text is parsed into a `serde_yaml::Value` and then walked by hand rather than
//! deserialized into structs: derived `Deserialize` stops at the first error and cannot
//! tell the operator "this key is unknown" and "that adapter is missing" in one pass. Each
//! check records a problem and carries on with what it can, so one run reports everything.
//! The rules themselves are listed in the [module docs](super).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use super::locate::Locator;
use super::{
    units, Adapter, BasicAuth, ChainSet, Endpoint, OnError, Problem, DEFAULT_MAX_BUFFER,
    DEFAULT_TIMEOUT,
};
use crate::matcher::KeyPattern;

/// Parses and validates; on failure the problems are sorted by line (file-wide ones first).
/// Returns the parsed document too.
pub(super) fn parse(src: &str) -> Result<(Value, ChainSet), Vec<Problem>> {
    let root: Value = match serde_yaml::from_str(src) {
        Ok(root) => root,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            return Err(vec![Problem {
                line,
                message: format!("invalid YAML: {e}"),
            }]);
        }
    };
    let set = check(&root, src)?;
    Ok((root, set))
}

/// Validates a document already parsed from `src` (which gives the problems their lines;
/// `""` for a document with no text of its own).
pub(super) fn check(root: &Value, src: &str) -> Result<ChainSet, Vec<Problem>> {
    let mut checker = Checker {
        loc: Locator::new(src),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    match checker.document(root) {
        Some(mut chains) if checker.problems.is_empty() => {
            checker.warnings.sort_by_key(|p| p.line);
            chains.warnings = checker.warnings;
            Ok(chains)
        }
        _ => {
            let mut problems = checker.problems;
            problems.sort_by_key(|p| p.line);
            Err(problems)
        }
    }
}

struct Checker<'a> {
    loc: Locator<'a>,
    problems: Vec<Problem>,
    /// What loads but is probably a mistake (see [`ChainSet::warnings`]).
    warnings: Vec<Problem>,
}

/// The `adapters` section: the valid adapters, and every defined name (valid or not), or
/// `None` when the section is missing or not a mapping, so references cannot be checked.
struct Adapters {
    valid: BTreeMap<String, Arc<Adapter>>,
    names: Option<BTreeSet<String>>,
}

type Section<'v> = Option<(Option<usize>, &'v Value)>;

impl Checker<'_> {
    fn report(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    fn document(&mut self, root: &Value) -> Option<ChainSet> {
        let map = match root {
            Value::Mapping(map) => map,
            Value::Null => {
                self.report(None, "the file is empty; expected a mapping with keys \"endpoints\" and \"adapters\"");
                return None;
            }
            other => {
                let found = describe(other);
                self.report(
                    None,
                    format!("expected a mapping with keys \"endpoints\" and \"adapters\", found {found}"),
                );
                return None;
            }
        };
        let (mut endpoints, mut adapters): (Section, Section) = (None, None);
        let mut max_buffer = DEFAULT_MAX_BUFFER;
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                self.report(
                    None,
                    format!("top-level keys must be strings, found {}", describe(key)),
                );
                continue;
            };
            let line = self.loc.top_key(name);
            match name {
                "version" => self.version(line, value),
                "endpoints" => endpoints = Some((line, value)),
                "adapters" => adapters = Some((line, value)),
                "max_buffer" => max_buffer = self.max_buffer(line, value),
                other => self.report(
                    line,
                    format!("unknown top-level key {other:?} (expected version, endpoints, adapters or max_buffer)"),
                ),
            }
        }
        for (section, name) in [(endpoints, "endpoints"), (adapters, "adapters")] {
            if section.is_none() {
                self.report(
                    None,
                    format!("required key {name:?} is missing (write \"{name}: {{}}\" for none)"),
                );
            }
        }
        let adapters = match adapters {
            Some((line, value)) => self.adapters(line, value),
            None => Adapters {
                valid: BTreeMap::new(),
                names: None,
            },
        };
        let endpoints = match endpoints {
            Some((line, value)) => self.endpoints(line, value, adapters.names.as_ref()),
            None => Vec::new(),
        };
        Some(ChainSet {
            endpoints,
            adapters: adapters.valid,
            max_buffer,
            warnings: Vec::new(),
        })
    }

    fn version(&mut self, line: Option<usize>, value: &Value) {
        if value.as_u64() != Some(1) {
            self.report(
                line,
                format!("unsupported version: expected 1, found {}", describe(value)),
            );
        }
    }

    fn max_buffer(&mut self, line: Option<usize>, value: &Value) -> u64 {
        units::size(value).unwrap_or_else(|| {
            let found = describe(value);
            self.report(
                line,
                format!(
                    "max_buffer must be a positive size in bytes or like \"64MiB\", found {found}"
                ),
            );
            DEFAULT_MAX_BUFFER
        })
    }

    // ---- endpoints ----

    fn endpoints(
        &mut self,
        line: Option<usize>,
        value: &Value,
        names: Option<&BTreeSet<String>>,
    ) -> Vec<Endpoint> {
        let Value::Mapping(map) = value else {
            let found = describe(value);
            self.report(
                line,
                format!("\"endpoints\" must be a mapping of \"METHOD PATTERN\" keys to hooks, found {found}"),
            );
            return Vec::new();
        };
        map.iter()
            .filter_map(|(key, value)| self.endpoint(line, key, value, names))
            .collect()
    }

    fn endpoint(
        &mut self,
        section: Option<usize>,
        key: &Value,
        value: &Value,
        names: Option<&BTreeSet<String>>,
    ) -> Option<Endpoint> {
        let Some(key) = key.as_str() else {
            let found = describe(key);
            self.report(
                section,
                format!("endpoint keys must be strings like \"POST /*/containers/create\", found {found}"),
            );
            return None;
        };
        let line = self.loc.child_key(section, key);
        let pattern = KeyPattern::parse(key);
        for warning in pattern.warnings() {
            self.warnings.push(Problem {
                line,
                message: format!("endpoint {key:?}: {warning}"),
            });
        }
        let (pre, post) = self.hooks(key, line, value, names)?;
        Some(Endpoint {
            key: key.to_string(),
            pattern,
            pre,
            post,
            line,
        })
    }

    /// The `{pre: [...], post: [...]}` value of an endpoint.
    fn hooks(
        &mut self,
        key: &str,
        line: Option<usize>,
        value: &Value,
        names: Option<&BTreeSet<String>>,
    ) -> Option<(Vec<String>, Vec<String>)> {
        let map = match value {
            Value::Mapping(map) if !map.is_empty() => map,
            Value::Mapping(_) | Value::Null => {
                self.report(
                    line,
                    format!("endpoint {key:?}: no hooks configured (expected pre and/or post)"),
                );
                return None;
            }
            other => {
                let found = describe(other);
                self.report(
                    line,
                    format!(
                        "endpoint {key:?}: expected a mapping with pre and/or post, found {found}"
                    ),
                );
                return None;
            }
        };
        let (mut pre, mut post, mut ok) = (Some(Vec::new()), Some(Vec::new()), true);
        for (field, list) in map {
            match field.as_str() {
                Some("pre") => pre = self.hook_list(key, line, "pre", list),
                Some("post") => post = self.hook_list(key, line, "post", list),
                _ => {
                    self.unknown_key(line, &format!("endpoint {key:?}"), field, "pre or post");
                    ok = false;
                }
            }
        }
        if let Some(names) = names {
            self.undefined(key, line, [("pre", &pre), ("post", &post)], names);
        }
        Some((pre?, post?)).filter(|_| ok)
    }

    fn hook_list(
        &mut self,
        key: &str,
        endpoint: Option<usize>,
        list: &str,
        value: &Value,
    ) -> Option<Vec<String>> {
        let line = self.loc.child_key(endpoint, list);
        let Value::Sequence(items) = value else {
            let hint = match value {
                Value::String(s) => format!(" (write {list}: [{s}] for a one-item list)"),
                _ => String::new(),
            };
            let found = describe(value);
            self.report(
                line,
                format!(
                    "endpoint {key:?}: {list} must be a list of adapter names, found {found}{hint}"
                ),
            );
            return None;
        };
        let mut names = Some(Vec::with_capacity(items.len()));
        for (i, item) in items.iter().enumerate() {
            match (item.as_str(), names.as_mut()) {
                (Some(name), Some(names)) => names.push(name.to_string()),
                (Some(_), None) => {}
                (None, _) => {
                    let found = describe(item);
                    self.report(
                        line,
                        format!(
                            "endpoint {key:?}: {list}[{i}] must be an adapter name, found {found}"
                        ),
                    );
                    names = None;
                }
            }
        }
        names
    }

    /// Reports each adapter an endpoint names but `adapters` does not define, once per
    /// endpoint, on the line of the first list naming it.
    fn undefined(
        &mut self,
        key: &str,
        endpoint: Option<usize>,
        lists: [(&str, &Option<Vec<String>>); 2],
        names: &BTreeSet<String>,
    ) {
        let mut reported = BTreeSet::new();
        for (list, adapters) in lists {
            let line = self.loc.child_key(endpoint, list);
            for adapter in adapters.iter().flatten() {
                if !names.contains(adapter) && reported.insert(adapter) {
                    self.report(
                        line,
                        format!(
                            "endpoint {key:?}: adapter {adapter:?} is referenced but not defined"
                        ),
                    );
                }
            }
        }
    }

    // ---- adapters ----

    fn adapters(&mut self, line: Option<usize>, value: &Value) -> Adapters {
        let Value::Mapping(map) = value else {
            let found = describe(value);
            self.report(
                line,
                format!("\"adapters\" must be a mapping of adapter names to URLs, found {found}"),
            );
            return Adapters {
                valid: BTreeMap::new(),
                names: None,
            };
        };
        let (mut valid, mut names) = (BTreeMap::new(), BTreeSet::new());
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                self.report(
                    line,
                    format!("adapter names must be strings, found {}", describe(key)),
                );
                continue;
            };
            names.insert(name.to_string());
            let adapter_line = self.loc.child_key(line, name);
            if let Some(adapter) = self.adapter(name, adapter_line, value) {
                valid.insert(name.to_string(), Arc::new(adapter));
            }
        }
        Adapters {
            valid,
            names: Some(names),
        }
    }

    fn adapter(&mut self, name: &str, line: Option<usize>, value: &Value) -> Option<Adapter> {
        match value {
            Value::String(url) => {
                let (url, basic_auth) = self.url(name, line, url)?;
                Some(Adapter {
                    name: name.to_string(),
                    url,
                    basic_auth,
                    timeout: DEFAULT_TIMEOUT,
                    on_error: OnError::default(),
                    ca_file: None,
                })
            }
            Value::Mapping(map) => self.adapter_mapping(name, line, map),
            other => {
                let found = describe(other);
                self.report(
                    line,
                    format!(
                        "adapter {name:?}: expected a URL or a mapping with url, found {found}"
                    ),
                );
                None
            }
        }
    }

    /// The extended form `{url, timeout, on_error, ca_file}`.
    fn adapter_mapping(
        &mut self,
        name: &str,
        line: Option<usize>,
        map: &Mapping,
    ) -> Option<Adapter> {
        let what = format!("adapter {name:?}");
        let mut url = None;
        let (mut timeout, mut on_error, mut ca_file) =
            (Some(DEFAULT_TIMEOUT), Some(OnError::default()), Some(None));
        let mut ok = true;
        for (field, value) in map {
            let field_line = field.as_str().and_then(|f| self.loc.child_key(line, f));
            let problem = |expected: &str| {
                format!(
                    "{what}: {} must be {expected}, found {}",
                    field.as_str().unwrap_or_default(),
                    describe(value)
                )
            };
            match field.as_str() {
                Some("url") => {
                    url = Some(match value.as_str() {
                        Some(s) => self.url(name, field_line, s),
                        None => {
                            self.report(field_line, problem("a string"));
                            None
                        }
                    })
                }
                Some("timeout") => {
                    timeout = units::duration(value);
                    if timeout.is_none() {
                        let expected = "a positive number of seconds or a duration like \"10s\", \"500ms\" or \"2m\"";
                        self.report(field_line, problem(expected));
                    }
                }
                Some("on_error") => {
                    on_error = match value.as_str() {
                        Some("fail") => Some(OnError::Fail),
                        Some("skip") => Some(OnError::Skip),
                        _ => {
                            self.report(field_line, problem("\"fail\" or \"skip\""));
                            None
                        }
                    }
                }
                Some("ca_file") => {
                    ca_file = match value.as_str() {
                        Some(path) if !path.is_empty() => Some(Some(PathBuf::from(path))),
                        _ => {
                            self.report(field_line, problem("a file path"));
                            None
                        }
                    }
                }
                _ => {
                    self.unknown_key(line, &what, field, "url, timeout, on_error or ca_file");
                    ok = false;
                }
            }
        }
        let Some(url) = url else {
            self.report(line, format!("{what}: required key \"url\" is missing"));
            return None;
        };
        let ((url, basic_auth), ca_file) = (url?, ca_file?);
        if ca_file.is_some() && url.scheme_str() != Some("https") {
            let ca_line = self.loc.child_key(line, "ca_file");
            self.report(
                ca_line,
                format!("{what}: ca_file is only used with https:// URLs"),
            );
            return None;
        }
        let adapter = Adapter {
            name: name.to_string(),
            url,
            basic_auth,
            timeout: timeout?,
            on_error: on_error?,
            ca_file,
        };
        Some(adapter).filter(|_| ok)
    }

    /// An adapter URL, split from the `user:password@` it may carry. Messages show it with
    /// the credentials masked.
    fn url(
        &mut self,
        name: &str,
        line: Option<usize>,
        url: &str,
    ) -> Option<(http::Uri, Option<BasicAuth>)> {
        let shown = redact_userinfo(url);
        match url.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some_and(|h| !h.is_empty()) =>
            {
                Some(split_userinfo(uri))
            }
            Ok(_) => {
                let message =
                    format!("adapter {name:?}: url {shown:?} must be an absolute http:// or https:// URL with a host");
                self.report(line, message);
                None
            }
            Err(e) => {
                self.report(
                    line,
                    format!("adapter {name:?}: url {shown:?} is not a valid URL ({e})"),
                );
                None
            }
        }
    }

    fn unknown_key(&mut self, parent: Option<usize>, what: &str, field: &Value, expected: &str) {
        let line = field
            .as_str()
            .map_or(parent, |f| self.loc.child_key(parent, f));
        self.report(
            line,
            format!(
                "{what}: unknown key {} (expected {expected})",
                field_str(field)
            ),
        );
    }
}

/// A mapping key for a message: `"pree"`, or a description if it is not a string.
fn field_str(field: &Value) -> String {
    match field.as_str() {
        Some(s) => format!("{s:?}"),
        None => describe(field),
    }
}

/// A YAML value for a message: `null`, `the string "weave"`, `a list`, …
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// `url` with the `user:password` of its authority replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// The URI without its userinfo, and the credentials it held.
fn split_userinfo(uri: http::Uri) -> (http::Uri, Option<BasicAuth>) {
    let Some((userinfo, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return (uri, None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let auth = BasicAuth {
        user: busbar_protocol::headers::decode(user),
        password: busbar_protocol::headers::decode(password),
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    match http::Uri::from_parts(parts) {
        Ok(stripped) => (stripped, Some(auth)),
        Err(_) => (uri, Some(auth)),
    }
}
