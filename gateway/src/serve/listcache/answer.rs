//! Which `GET /containers/json` queries the cache answers, and the answer (pure).
//!
//! The cache answers a query only where it can match dockerd 20.10 exactly
//! (`daemon/list.go`); anything else goes to the live fan-out, where every engine applies its
//! own filters ([`Plan::of_query`] says which):
//!
//! - `all` (`httputils.BoolValue`): without it, only containers whose `State` is `running`,
//!   `paused` or `restarting` (dockerd's `Running`), unless `limit` is positive or a `status`
//!   filter is given (which sets `all`);
//! - `limit`: the newest N after filtering (a value `strconv.Atoi` refuses goes live, for the
//!   engine's error);
//! - `filters` with the keys `name`, `id`, `label`, `status` and the gateway's own `node`:
//!   `name` and `id` as `filters.Args.Match` (equal, or a regular expression found in the
//!   container's own name `/web`, or `web`, or in its ID; a value Rust's `regex` cannot compile
//!   goes live, since Go's might), `label` as `MatchKVList` (`key` or `key=value`, all of
//!   them), `status` among the seven state names (another value goes live, for the engine's
//!   error);
//! - not answered from the cache: `size` (sizes are not kept), `since`/`before` (parameters or
//!   filters), and every other filter (`ancestor`, `volume`, `network`, `health`, `exited`,
//!   `publish`, `expose`, `is-task`, `isolation`), or a `filters` that is not a JSON object of
//!   lists or of `true` sets.
//!
//! Rows are sorted as [`crate::aggregate::merge_lists`] sorts the live answer: `Created`, newest
//! first; ties by node name, then the engine's own order.

use std::cmp::Reverse;

use regex::Regex;
use serde_json::Value;

use super::table::Row;
use crate::aggregate::{docker_bool, query, HOST_DOWN};

/// The seven values dockerd's `status` filter accepts.
const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// A query the cache can answer.
#[derive(Debug, Default)]
pub struct Plan {
    pub all: bool,
    pub limit: Option<usize>,
    /// The `node` filter: `None` is every node.
    pub nodes: Option<Vec<String>>,
    names: Vec<Term>,
    ids: Vec<Term>,
    labels: Vec<(String, Option<String>)>,
    statuses: Vec<String>,
}

#[derive(Debug)]
struct Term {
    text: String,
    regex: Regex,
}

impl Term {
    fn new(text: String) -> Option<Term> {
        let regex = Regex::new(&text).ok()?;
        Some(Term { text, regex })
    }

    fn matches(&self, s: &str) -> bool {
        self.text == s || self.regex.is_match(s)
    }
}

impl Plan {
    /// The plan for a client's query, or `None` if the cache cannot answer it exactly.
    pub fn of_query(query: &str) -> Option<Plan> {
        let q = query.strip_prefix('?').unwrap_or(query);
        let mut plan = Plan::default();
        for (key, value) in busbar_api::query::pairs(q) {
            // dockerd ignores parameters it does not know.
            match key.as_ref() {
                "since" | "before" => return None,
                "size" if docker_bool(&value) => return None,
                _ => {}
            }
        }
        plan.all = query::param(q, "all").is_some_and(|a| docker_bool(&a));
        if let Some(limit) = query::param(q, "limit").filter(|l| !l.is_empty()) {
            let n: i64 = limit.parse().ok()?;
            plan.limit = usize::try_from(n).ok().filter(|n| *n > 0);
        }
        if let Some(text) = query::param(q, "filters").filter(|f| !f.is_empty()) {
            let filters = match serde_json::from_str::<Value>(&text).ok()? {
                Value::Object(f) => f,
                Value::Null => Default::default(),
                _ => return None,
            };
            for (key, value) in filters {
                let values = values(&value)?;
                if values.is_empty() {
                    continue;
                }
                match key.as_str() {
                    "name" => {
                        plan.names = values.into_iter().map(Term::new).collect::<Option<_>>()?
                    }
                    "id" => plan.ids = values.into_iter().map(Term::new).collect::<Option<_>>()?,
                    "label" => {
                        plan.labels = values
                            .into_iter()
                            .map(|l| match l.split_once('=') {
                                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                                None => (l, None),
                            })
                            .collect()
                    }
                    "status" => {
                        if !values.iter().all(|s| STATES.contains(&s.as_str())) {
                            return None;
                        }
                        plan.statuses = values;
                    }
                    "node" => plan.nodes = Some(values),
                    _ => return None,
                }
            }
        }
        Some(plan)
    }

    /// Whether stopped containers are listed (`all`, a positive `limit`, a `status` filter).
    fn stopped_too(&self) -> bool {
        self.all || self.limit.is_some() || !self.statuses.is_empty()
    }

    /// Whether `row` is in the answer.
    pub fn admits(&self, row: &Row) -> bool {
        let r = &row.row;
        if !self.stopped_too() && !matches!(r.state.as_str(), "running" | "paused" | "restarting") {
            return false;
        }
        if !self.statuses.is_empty() && !self.statuses.contains(&r.state) {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|t| t.matches(&r.id)) {
            return false;
        }
        if !self.names.is_empty() {
            // The container's own name: the one that is not a link's (`/parent/alias`).
            let own = r
                .names
                .iter()
                .find(|n| !n.trim_start_matches('/').contains('/'))
                .map_or("", String::as_str);
            let hit = self
                .names
                .iter()
                .any(|t| t.matches(own) || t.matches(own.trim_start_matches('/')));
            if !hit {
                return false;
            }
        }
        let holds = |(k, want): &(String, Option<String>)| match (r.labels.get(k), want) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            _ => false,
        };
        self.labels.iter().all(holds)
    }

    /// Whether a node that is down shows its cached rows as Host Down rows (as the live path
    /// shows its last-seen list): only where stopped containers are listed.
    pub fn shows_host_down(&self) -> bool {
        self.stopped_too()
    }

    /// Whether `node` is asked.
    pub fn asks(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == node))
    }
}

/// `["a"]` or `{"a": true}` (a set with a `false` member is left to the engine).
fn values(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(list) => list.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        Value::Object(set) => set
            .iter()
            .map(|(k, on)| (on == &Value::Bool(true)).then(|| k.clone()))
            .collect(),
        _ => None,
    }
}

/// One node's rows for an answer: its name, its rows, whether it is down (Host Down rows).
pub struct Part<'a> {
    pub node: &'a str,
    pub rows: Vec<&'a Row>,
    pub host_down: bool,
}

/// Newest first: `Created`, then the node's rank by name, then the engine's order.
type SortKey = (Reverse<i64>, usize, Reverse<u64>);

/// The answer's JSON array: the admitted rows of every part, newest first, `limit` applied,
/// each `Status` written for `now_ms` (or `Host Down`). Returns the body and its row count.
pub fn write(plan: &Plan, parts: &[Part], now_ms: i64) -> (Vec<u8>, usize) {
    // Nodes ranked by name, so that rows sort on integers alone (30,000 rows at 1,000 nodes).
    let mut by_name: Vec<usize> = (0..parts.len()).collect();
    by_name.sort_unstable_by_key(|&i| parts[i].node);
    let mut rank = vec![0usize; parts.len()];
    for (r, &i) in by_name.iter().enumerate() {
        rank[i] = r;
    }
    let mut rows: Vec<(SortKey, &Row, bool)> = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| plan.asks(p.node) && (!p.host_down || plan.shows_host_down()))
        .flat_map(|(i, p)| {
            let rank = rank[i];
            p.rows.iter().filter(|r| plan.admits(r)).map(move |r| {
                (
                    (Reverse(r.row.created), rank, Reverse(r.order)),
                    *r,
                    p.host_down,
                )
            })
        })
        .collect();
    // Keys are unique (`order` is, within a node): unstable is exact.
    rows.sort_unstable_by_key(|(key, _, _)| *key);
    if let Some(n) = plan.limit {
        rows.truncate(n);
    }
    let size: usize = rows
        .iter()
        .map(|(_, r, _)| r.row.head.len() + r.row.tail.len() + 40)
        .sum();
    let mut body = Vec::with_capacity(size + 2);
    let mut status = String::new();
    body.push(b'[');
    for (i, (_, row, down)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&row.row.head);
        if row.row.status.is_some() {
            status.clear();
            if *down {
                status.push_str(HOST_DOWN);
            } else {
                row.write_status(now_ms, &mut status);
            }
            serde_json::to_writer(&mut body, status.as_str())
                .expect("writing to a Vec cannot fail");
        }
        body.extend_from_slice(&row.row.tail);
    }
    body.push(b']');
    (body, rows.len())
}
