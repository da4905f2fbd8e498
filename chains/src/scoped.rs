//! Adapter chains kept in etcd: scopes, their keys, the merge rule, and the status and
//! last-known-good cache shapes. Pure: the etcd side is the agent's (`busbar_agent::cluster`)
//! and busbarctl's.
//!
//! # Keys
//! - `<prefix>/chains/<scope>`: an `adapters.yml` document (text), one per scope:
//!   `global`, `label:K=V` or `node:NAME`.
//! - `<prefix>/status/<node>`: a [`ChainStatus`] (JSON), written by the node's agent.
//!
//! # Merge rule
//! Every scope's document is a complete, valid `adapters.yml` on its own (references resolve
//! within it). A node applies, in this order: `global`, then each `label:K=V` it carries
//! (sorted by key), then `node:NAME`. Endpoints concatenate in that order: a new key is
//! appended; a key already present gets the later scope's `pre` and `post` hooks appended to
//! its lists (so they run after the earlier scopes'). Adapters merge by name: a later scope's
//! definition replaces an earlier one, for every endpoint that names it. `max_buffer` of the
//! latest scope that sets it wins. The merged document is then validated as a whole. A node
//! with a single scope runs that document as written (the same chain, with its own lines).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use super::ChainSet;

/// Where a chain document applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every node.
    Global,
    /// Nodes with label `K=V`.
    Label(String, String),
    /// One node.
    Node(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad scope {scope:?}: {reason} (expected global, node:NAME or label:KEY=VALUE)")]
pub struct ScopeError {
    pub scope: String,
    pub reason: &'static str,
}

fn good_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        let bad = |reason| {
            Err(ScopeError {
                scope: s.to_owned(),
                reason,
            })
        };
        if s == "global" {
            return Ok(Scope::Global);
        }
        if let Some(name) = s.strip_prefix("node:") {
            if !good_word(name) || name.contains('/') {
                return bad("a node name is letters, digits, '.', '_' and '-'");
            }
            return Ok(Scope::Node(name.to_owned()));
        }
        if let Some(kv) = s.strip_prefix("label:") {
            let Some((k, v)) = kv.split_once('=') else {
                return bad("a label scope is label:KEY=VALUE");
            };
            if !good_word(k) || !(v.is_empty() || good_word(v)) {
                return bad("label keys and values are letters, digits, '.', '_', '-' and '/'");
            }
            return Ok(Scope::Label(k.to_owned(), v.to_owned()));
        }
        bad("unknown scope kind")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Label(k, v) => write!(f, "label:{k}={v}"),
            Scope::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl Scope {
    /// Whether a node with this name and labels applies this scope.
    pub fn matches(&self, node: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Global => true,
            Scope::Label(k, v) => labels.get(k) == Some(v),
            Scope::Node(n) => n == node,
        }
    }
}

/// What an agent reports at `<prefix>/status/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChainStatus {
    pub node: String,
    /// The etcd revision of the view of the chains this node runs (0: none from etcd yet).
    /// The node runs every chain document whose mod revision is at most this.
    #[serde(default)]
    pub revision: i64,
    /// The scopes merged into the running chain, with each document's mod revision.
    #[serde(default)]
    pub scopes: BTreeMap<String, i64>,
    /// Why the latest view was refused (the node keeps running `revision`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The etcd revision of the refused view, with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<i64>,
    /// `etcd`, or `cache` when the node started without etcd and runs its cached chain. In the
    /// agent's own report to gateways (`Describe`, never written to etcd) also `file` (an agent
    /// run with `--config`: then `error` is why the last reload of the file was refused) or
    /// `none`.
    #[serde(default)]
    pub source: String,
    /// The `--config` file, with `source` `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub updated_at: u64,
}

/// The last-known-good chain, cached in `--state-dir` on each apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedChains {
    pub node: String,
    pub revision: i64,
    pub scopes: BTreeMap<String, i64>,
    /// The merged `adapters.yml`.
    pub yaml: String,
    pub written_at: u64,
}

/// One scope's document as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDoc {
    pub text: String,
    pub mod_revision: i64,
}

/// Validates each document, merges them in scope order (see the module docs) and validates
/// the result. Returns the chain set and the merged text (a single document's own text);
/// errors name the scope at fault.
pub fn merge(docs: &BTreeMap<Scope, ScopeDoc>) -> Result<(ChainSet, String), String> {
    let mut endpoints = Mapping::new();
    let mut adapters = Mapping::new();
    let mut max_buffer = None;
    let mut version = 1;
    let mut problems = vec![];
    for (scope, doc) in docs {
        // Each document is parsed once, validated as it is, then merged as a tree.
        let (root, set) = match ChainSet::from_yaml_tree(&doc.text) {
            Ok(read) => read,
            Err(e) => {
                problems.push(format!(
                    "scope {scope} (revision {}): {e}",
                    doc.mod_revision
                ));
                continue;
            }
        };
        // One scope (the usual cluster: `global` alone): its document, just validated, is the
        // merge as written, with its own lines.
        if docs.len() == 1 {
            return Ok((set, doc.text.clone()));
        }
        // A scope whose adapters speak protocol 2 says `version: 2`; so does the merge.
        version = version.max(set.version());
        let Value::Mapping(root) = root else {
            problems.push(format!(
                "scope {scope} (revision {}): not a mapping",
                doc.mod_revision
            ));
            continue;
        };
        if let Some(Value::Mapping(eps)) = root.get("endpoints") {
            for (key, hooks) in eps {
                match endpoints.get_mut(key) {
                    Some(Value::Mapping(existing)) => {
                        for side in ["pre", "post"] {
                            let more = hooks
                                .get(side)
                                .and_then(Value::as_sequence)
                                .cloned()
                                .unwrap_or_default();
                            if more.is_empty() {
                                continue;
                            }
                            let mut list = existing
                                .get(side)
                                .and_then(Value::as_sequence)
                                .cloned()
                                .unwrap_or_default();
                            list.extend(more);
                            existing.insert(Value::from(side), Value::Sequence(list));
                        }
                    }
                    _ => {
                        endpoints.insert(key.clone(), hooks.clone());
                    }
                }
            }
        }
        if let Some(Value::Mapping(ads)) = root.get("adapters") {
            for (name, def) in ads {
                adapters.insert(name.clone(), def.clone());
            }
        }
        if let Some(mb) = root.get("max_buffer") {
            max_buffer = Some(mb.clone());
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut root = Mapping::new();
    root.insert("version".into(), version.into());
    root.insert("endpoints".into(), Value::Mapping(endpoints));
    root.insert("adapters".into(), Value::Mapping(adapters));
    if let Some(mb) = max_buffer {
        root.insert("max_buffer".into(), mb);
    }
    let merged = Value::Mapping(root);
    let scopes: Vec<String> = docs.keys().map(|s| s.to_string()).collect();
    let set = ChainSet::from_tree(&merged)
        .map_err(|e| format!("the merge of {} is invalid: {e}", scopes.join(", ")))?;
    let text = serde_yaml::to_string(&merged).map_err(|e| format!("merging the scopes: {e}"))?;
    Ok((set, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, rev: i64) -> ScopeDoc {
        ScopeDoc {
            text: text.to_owned(),
            mod_revision: rev,
        }
    }

    #[test]
    fn scopes_parse_print_order_and_match() {
        for s in ["global", "node:node1", "label:zone=a", "label:k="] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "globl",
            "node:",
            "node:a/b",
            "label:zone",
            "label:=a",
            "label:a b=c",
            "x:y",
        ] {
            let e = bad.parse::<Scope>().unwrap_err().to_string();
            assert!(e.contains("bad scope"), "{bad}: {e}");
        }
        let mut v: Vec<Scope> = ["node:a", "label:z=1", "global", "label:a=9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let shown: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["global", "label:a=9", "label:z=1", "node:a"]);
        let labels: BTreeMap<String, String> = [("zone".to_owned(), "a".to_owned())].into();
        assert!(Scope::Label("zone".into(), "a".into()).matches("n1", &labels));
        assert!(!Scope::Label("zone".into(), "b".into()).matches("n1", &labels));
        assert!(
            Scope::Node("n1".into()).matches("n1", &labels)
                && !Scope::Node("n2".into()).matches("n1", &labels)
        );
        assert_eq!(Scope::Global.to_string(), "global");
    }

    #[test]
    fn merge_concatenates_endpoints_and_later_adapters_win() {
        let mut docs = BTreeMap::new();
        docs.insert(
            Scope::Node("n1".into()),
            doc("endpoints:\n  \"POST /*/containers/create\":\n    pre: [b]\nadapters:\n  b: http://node/b\n  a: http://node/a\n", 9),
        );
        docs.insert(
            Scope::Global,
            doc("endpoints:\n  \"POST /*/containers/create\":\n    pre: [a]\n  \"GET /*/info\":\n    post: [a]\nadapters:\n  a: http://global/a\nmax_buffer: 1MiB\n", 3),
        );
        let (set, _text) = merge(&docs).unwrap();
        let create = set.endpoint("POST /*/containers/create").unwrap();
        assert_eq!(create.pre, ["a", "b"]);
        assert_eq!(set.endpoints()[1].key, "GET /*/info");
        assert_eq!(set.adapter("a").unwrap().url.to_string(), "http://node/a");
        assert_eq!(set.max_buffer(), 1024 * 1024);
        assert!(merge(&BTreeMap::new()).unwrap().0.endpoints().is_empty());
    }

    #[test]
    fn a_single_scope_is_its_own_merge() {
        let text = "# the cluster's chain\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [a]\nadapters:\n  a: http://a/\n";
        let docs: BTreeMap<Scope, ScopeDoc> = [(Scope::Global, doc(text, 4))].into();
        let (set, merged) = merge(&docs).unwrap();
        assert_eq!(merged, text);
        assert_eq!(set, ChainSet::from_yaml(text).unwrap());
        let bad: BTreeMap<Scope, ScopeDoc> = [(Scope::Global, doc("endpoints: {}\n", 5))].into();
        assert!(merge(&bad)
            .unwrap_err()
            .contains("scope global (revision 5)"));
    }

    #[test]
    fn an_invalid_scope_document_names_its_scope() {
        let mut docs = BTreeMap::new();
        docs.insert(Scope::Global, doc("endpoints: {}\nadapters: {}\n", 2));
        docs.insert(
            Scope::Label("zone".into(), "a".into()),
            doc(
                "endpoints:\n  \"POST /x\":\n    pre: [nope]\nadapters: {}\n",
                7,
            ),
        );
        let e = merge(&docs).unwrap_err();
        assert!(
            e.contains("label:zone=a (revision 7)") && e.contains("nope"),
            "{e}"
        );
    }
}
