//! One node's cached container rows, and how fetched lists change them (pure: no IO, no clock).
//!
//! Every change comes from a fetch of the engine's own list: a full one (`all=1`: the node's
//! every container) or a targeted one (`all=1&filters={"id":[...]}`: the containers some events
//! named, or one a call through the gateway just changed). Rows are never made up from events.
//!
//! Fetches may overlap (the node's follower resyncs while a client's `docker stop` refreshes
//! its container) and finish in any order. Each fetch takes a *stamp* when it starts
//! ([`NodeTable::begin`]), and what it saw is applied only where nothing started later has been
//! applied: a row remembers the stamp that wrote it, and a container a fetch found gone leaves
//! a tombstone with its stamp, so an older fetch still in flight cannot bring it back. A full
//! list removes the rows it does not hold, unless written after it started, and an older fetch
//! cannot add a row that a later full list did not hold. So whatever the
//! order of completion, the table ends as the latest fetch of each container saw it: no row
//! lost, none twice (rows are keyed by ID).
//!
//! Bounded: a node whose list has more than [`Limits::max_rows`] rows, or a row larger than
//! [`Limits::max_row_bytes`], is refused ([`Overflow`]): its cache is then not trusted and the
//! gateway asks it live.

use std::collections::HashMap;

use crate::aggregate::RenderedRow;

use super::status::{Counts, Template};

/// Bounds on what one node may make the gateway hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub max_row_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_rows: 50_000,
            max_row_bytes: 256 * 1024,
        }
    }
}

/// A fetch refused for its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("the node lists {0} containers, more than the cache keeps for one node ({1})")]
    Rows(usize, usize),
    #[error("a container row of {0} bytes, more than the cache keeps ({1})")]
    Row(usize, usize),
}

/// One cached container.
#[derive(Debug, Clone)]
pub struct Row {
    pub row: RenderedRow,
    /// Among rows of equal `Created` (seconds), larger is newer: the engine's order.
    pub order: u64,
    /// How to write `Status` at answer time, if it has a duration.
    pub template: Option<Template>,
    /// The stamp of the fetch that wrote it.
    stamp: u64,
}

impl Row {
    /// `Status` as the engine would write it at `now_ms`, appended to `out`.
    pub fn write_status(&self, now_ms: i64, out: &mut String) {
        match (&self.template, &self.row.status) {
            (Some(t), _) => t.write(now_ms, out),
            (None, Some(status)) => out.push_str(status),
            (None, None) => {}
        }
    }
}

/// Event times per container, to date a status (see [`super::status`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints {
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

/// One node's rows.
#[derive(Debug, Default)]
pub struct NodeTable {
    rows: HashMap<String, Row>,
    /// ID -> the stamp of the fetch that found it gone.
    gone: HashMap<String, u64>,
    next_stamp: u64,
    next_order: u64,
    /// The stamp of the last full list applied, if any.
    full: Option<u64>,
}

/// Tombstones kept at most (then the oldest half is dropped: only fetches that started before
/// them could be misled, and those are seconds old at most).
const MAX_GONE: usize = 10_000;

impl NodeTable {
    /// A stamp for a fetch starting now.
    pub fn begin(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    pub fn get(&self, id: &str) -> Option<&Row> {
        self.rows.get(id)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether a full list has been applied since `stamp` was taken.
    pub fn synced_since(&self, stamp: u64) -> bool {
        self.full.is_some_and(|f| f >= stamp)
    }

    /// Applies a full list (the engine's order: newest first) fetched with `stamp` at
    /// `fetched_ms`.
    pub fn apply_full(
        &mut self,
        stamp: u64,
        list: Vec<RenderedRow>,
        fetched_ms: i64,
        limits: Limits,
    ) -> Result<(), Overflow> {
        check(&list, limits)?;
        let n = list.len() as u64;
        let base = self.next_order;
        self.next_order += n + 1;
        let mut listed = std::collections::HashSet::with_capacity(list.len());
        for (i, row) in list.into_iter().enumerate() {
            listed.insert(row.id.clone());
            self.upsert(
                stamp,
                row,
                fetched_ms,
                Hints::default(),
                Some(base + n - i as u64),
            );
        }
        self.rows
            .retain(|id, row| row.stamp > stamp || listed.contains(id));
        self.gone.retain(|_, g| *g > stamp);
        self.full = Some(self.full.map_or(stamp, |f| f.max(stamp)));
        Ok(())
    }

    /// Applies a targeted fetch of `asked` (full IDs) fetched with `stamp` at `fetched_ms`:
    /// the rows it returned replace theirs, the asked ones it did not return are gone. Rows
    /// for IDs not asked are ignored.
    pub fn apply_some(
        &mut self,
        stamp: u64,
        asked: &HashMap<String, Hints>,
        list: Vec<RenderedRow>,
        fetched_ms: i64,
        limits: Limits,
    ) -> Result<(), Overflow> {
        check(&list, limits)?;
        let mut returned = std::collections::HashSet::new();
        for row in list {
            let Some(hints) = asked.get(&row.id) else {
                continue;
            };
            if !returned.insert(row.id.clone()) {
                continue; // twice in one answer: the first counts
            }
            if !self.rows.contains_key(&row.id) && self.rows.len() >= limits.max_rows {
                return Err(Overflow::Rows(self.rows.len() + 1, limits.max_rows));
            }
            self.upsert(stamp, row, fetched_ms, *hints, None);
        }
        for id in asked.keys().filter(|id| !returned.contains(*id)) {
            if self.rows.get(id).is_some_and(|r| r.stamp < stamp) {
                self.rows.remove(id);
            }
            if self.rows.contains_key(id) {
                continue; // written by a later fetch
            }
            let g = self.gone.entry(id.clone()).or_insert(stamp);
            *g = (*g).max(stamp);
        }
        if self.gone.len() > MAX_GONE {
            let mut stamps: Vec<u64> = self.gone.values().copied().collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() / 2];
            self.gone.retain(|_, g| *g > cut);
        }
        Ok(())
    }

    fn upsert(
        &mut self,
        stamp: u64,
        row: RenderedRow,
        fetched_ms: i64,
        hints: Hints,
        order: Option<u64>,
    ) {
        if self.gone.get(&row.id).is_some_and(|g| *g > stamp) {
            return; // found gone by a later fetch
        }
        let previous = self.rows.get(&row.id);
        if previous.is_some_and(|p| p.stamp > stamp) {
            return; // written by a later fetch
        }
        if previous.is_none() && self.full.is_some_and(|f| f > stamp) {
            return; // a later full list did not have it: removed since this fetch began
        }
        let template = row.status.as_deref().and_then(|s| {
            Template::of(
                s,
                fetched_ms,
                |counts| match counts {
                    Counts::FromStart => hints.started_ms,
                    Counts::FromFinish => hints.finished_ms,
                },
                previous.and_then(|p| p.template.as_ref()),
            )
        });
        let order = order
            .or_else(|| previous.map(|p| p.order))
            .unwrap_or_else(|| {
                self.next_order += 1;
                self.next_order
            });
        self.gone.remove(&row.id);
        self.rows.insert(
            row.id.clone(),
            Row {
                row,
                order,
                template,
                stamp,
            },
        );
    }
}

fn check(list: &[RenderedRow], limits: Limits) -> Result<(), Overflow> {
    if list.len() > limits.max_rows {
        return Err(Overflow::Rows(list.len(), limits.max_rows));
    }
    for row in list {
        let size = row.head.len() + row.tail.len() + row.status.as_ref().map_or(0, String::len);
        if size > limits.max_row_bytes {
            return Err(Overflow::Row(size, limits.max_row_bytes));
        }
    }
    Ok(())
}
