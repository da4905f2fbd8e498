//! The cache's logic against recorded sequences: fetches that overlap and finish out of
//! order, events twice or out of order, a gap then a full list. No IO.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::{json, Value};

use super::answer::{self, Part, Plan};
use super::table::{Hints, Limits, NodeTable};
use super::*;
use crate::aggregate::{parse_list, render_rows, RenderedRow};

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A row as dockerd 20.10 lists it.
fn doc(n: u8, state: &str, status: &str, created: i64) -> Value {
    json!({
        "Id": id(n), "Names": [format!("/c{n}")], "Image": "busybox", "ImageID": "sha256:aa",
        "Command": "sleep 1", "Created": created, "Ports": [], "Labels": {"n": n.to_string()},
        "State": state, "Status": status, "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {}}, "Mounts": []
    })
}

fn rows(docs: &[Value]) -> Vec<RenderedRow> {
    rows_on("node1", docs)
}

fn rows_on(node: &str, docs: &[Value]) -> Vec<RenderedRow> {
    let body = serde_json::to_vec(docs).unwrap();
    let list = parse_list(&body).unwrap();
    render_rows(&list, node, Some("10.0.0.1"))
}

fn ids(table: &NodeTable) -> BTreeSet<String> {
    table.rows().map(|r| r.row.id.clone()).collect()
}

fn asked(ns: &[u8]) -> HashMap<String, Hints> {
    ns.iter().map(|n| (id(*n), Hints::default())).collect()
}

const L: Limits = Limits {
    max_rows: 100,
    max_row_bytes: 64 * 1024,
};

#[test]
fn a_rendered_row_is_the_cluster_form_with_its_status_written_again() {
    let r = &rows(&[doc(1, "running", "Up 5 seconds", 100)])[0];
    let mut text = r.head.clone();
    text.extend_from_slice(br#""Up 5 seconds""#);
    text.extend_from_slice(&r.tail);
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["Names"], json!(["/node1/c1"]));
    assert_eq!(v["Status"], "Up 5 seconds");
    assert_eq!(v["Labels"], json!({"n": "1"}));
    assert_eq!(r.state, "running");
    assert_eq!(r.created, 100);
}

#[test]
fn a_later_fetch_wins_whatever_order_they_finish_in() {
    let mut t = NodeTable::default();
    let full = t.begin(); // a full list starts: c1 running
    let some = t.begin(); // then a targeted fetch: c1 exited
    t.apply_some(
        some,
        &asked(&[1]),
        rows(&[doc(1, "exited", "Exited (0) 1 second ago", 1)]),
        0,
        L,
    )
    .unwrap();
    t.apply_full(full, rows(&[doc(1, "running", "Up 1 second", 1)]), 0, L)
        .unwrap();
    let row = t.rows().next().unwrap();
    assert_eq!(
        row.row.state, "exited",
        "the older full list does not undo the refresh"
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn a_container_found_gone_is_not_brought_back_by_an_older_list() {
    let mut t = NodeTable::default();
    let s0 = t.begin();
    t.apply_full(s0, rows(&[doc(1, "running", "Up 1 second", 1)]), 0, L)
        .unwrap();
    let full = t.begin(); // started while c1 still existed
    let gone = t.begin(); // c1 removed: the refresh finds nothing
    t.apply_some(gone, &asked(&[1]), vec![], 0, L).unwrap();
    assert!(t.is_empty());
    t.apply_full(full, rows(&[doc(1, "running", "Up 1 second", 1)]), 0, L)
        .unwrap();
    assert!(t.is_empty(), "the tombstone outlives the older list");
    // A newer list that has it again (an ID is never reused, but a list is the truth).
    let later = t.begin();
    t.apply_full(later, rows(&[doc(1, "running", "Up 1 second", 1)]), 0, L)
        .unwrap();
    assert_eq!(t.len(), 1);
}

#[test]
fn a_full_list_after_a_gap_removes_what_is_gone_and_adds_what_is_new() {
    let mut t = NodeTable::default();
    let s = t.begin();
    t.apply_full(
        s,
        rows(&[
            doc(1, "running", "Up 1 second", 3),
            doc(2, "running", "Up 1 second", 2),
        ]),
        0,
        L,
    )
    .unwrap();
    // The stream was down: c2 removed, c3 created meanwhile.
    let s = t.begin();
    t.apply_full(
        s,
        rows(&[
            doc(3, "created", "Created", 4),
            doc(1, "exited", "Exited (0) 2 seconds ago", 3),
        ]),
        0,
        L,
    )
    .unwrap();
    assert_eq!(ids(&t), BTreeSet::from([id(1), id(3)]));
}

#[test]
fn rows_not_asked_for_are_ignored_and_duplicates_count_once() {
    let mut t = NodeTable::default();
    let s = t.begin();
    let answer = rows(&[
        doc(1, "running", "Up 1 second", 1),
        doc(1, "exited", "Exited (0) 1 second ago", 1),
        doc(9, "running", "Up 1 second", 1),
    ]);
    t.apply_some(s, &asked(&[1]), answer, 0, L).unwrap();
    assert_eq!(ids(&t), BTreeSet::from([id(1)]));
    assert_eq!(t.rows().next().unwrap().row.state, "running");
}

#[test]
fn too_many_rows_or_a_row_too_large_is_refused() {
    let mut t = NodeTable::default();
    let small = Limits {
        max_rows: 1,
        max_row_bytes: 64 * 1024,
    };
    let s = t.begin();
    let two = rows(&[
        doc(1, "running", "Up 1 second", 1),
        doc(2, "running", "Up 1 second", 1),
    ]);
    assert!(t.apply_full(s, two, 0, small).is_err());
    let tiny = Limits {
        max_rows: 10,
        max_row_bytes: 10,
    };
    assert!(t
        .apply_full(s, rows(&[doc(1, "running", "Up 1 second", 1)]), 0, tiny)
        .is_err());
    assert!(t.is_empty());
}

/// Recorded from dockerd 20.10: `docker run -d --name web busybox sleep 60`, `docker exec`,
/// `docker network connect`, `docker rm -f`.
#[test]
fn events_name_the_containers_to_fetch_again() {
    let web = id(7);
    let lines = [
        json!({"status":"create","id":web,"from":"busybox","Type":"container","Action":"create","Actor":{"ID":web,"Attributes":{"image":"busybox","name":"web"}},"scope":"local","time":1_700_000_000,"timeNano":1_700_000_000_100_000_000_i64}),
        json!({"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":web,"name":"bridge","type":"bridge"}},"scope":"local","time":1_700_000_000,"timeNano":1_700_000_000_200_000_000_i64}),
        json!({"status":"start","id":web,"from":"busybox","Type":"container","Action":"start","Actor":{"ID":web,"Attributes":{"image":"busybox","name":"web"}},"scope":"local","time":1_700_000_000,"timeNano":1_700_000_000_300_000_000_i64}),
        json!({"status":"exec_create: ls","id":id(8),"Type":"container","Action":"exec_create: ls","Actor":{"ID":id(8),"Attributes":{}},"time":1,"timeNano":1}),
        json!({"Type":"network","Action":"create","Actor":{"ID":"n2","Attributes":{"name":"x"}},"time":1,"timeNano":1}),
        json!({"Type":"container","Action":"die","Actor":{"ID":"short","Attributes":{}},"time":1,"timeNano":1}),
    ];
    let mut data = Vec::new();
    for l in &lines {
        data.extend_from_slice(l.to_string().as_bytes());
        data.push(b'\n');
    }
    // Cut mid-line: the rest comes in the next frame.
    let (a, b) = data.split_at(50);
    let (mut line, mut pending) = (Vec::new(), HashMap::new());
    take_lines(a, &mut line, &mut pending).unwrap();
    take_lines(b, &mut line, &mut pending).unwrap();
    assert_eq!(pending.keys().collect::<Vec<_>>(), vec![&web]);
    assert_eq!(pending[&web].started_ms, Some(1_700_000_000_300));
    assert!(take_lines(&vec![b'x'; MAX_EVENT + 1], &mut Vec::new(), &mut pending).is_err());
}

fn plan(q: &str) -> Option<Plan> {
    Plan::of_query(q)
}

fn enc(s: &str) -> String {
    crate::aggregate::query::encode(s)
}

#[test]
fn only_queries_matched_exactly_are_answered() {
    for q in [
        "",
        "all=1",
        "all=1&limit=3",
        "limit=-1&size=0",
        &format!("all=1&filters={}", enc(r#"{"name":{"web":true}}"#)),
        &format!(
            "filters={}",
            enc(r#"{"status":["exited"],"label":["a=b"],"id":["ab"]}"#)
        ),
        &format!("filters={}", enc(r#"{"node":["node1"]}"#)),
        "all=1&unknown=1",
    ] {
        assert!(plan(q).is_some(), "{q}");
    }
    for q in [
        "size=1",
        "all=1&since=abc",
        "before=abc",
        "limit=x",
        &format!("filters={}", enc(r#"{"ancestor":["busybox"]}"#)),
        &format!("filters={}", enc(r#"{"status":["up"]}"#)),
        &format!("filters={}", enc(r#"{"name":{"web":false}}"#)),
        &format!("filters={}", enc(r#"{"name":["(?=a)"]}"#)),
        "filters=garbage",
        &format!("filters={}", enc("[1]")),
    ] {
        assert!(plan(q).is_none(), "{q}");
    }
}

fn table_of(node: &str, docs: &[Value]) -> NodeTable {
    let mut t = NodeTable::default();
    let s = t.begin();
    t.apply_full(s, rows_on(node, docs), 1_000_000, L).unwrap();
    t
}

fn answer_ids(q: &str, parts: &[Part]) -> Vec<String> {
    let (body, n) = answer::write(&plan(q).unwrap(), parts, 1_000_000);
    let list: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.len(), n);
    list.iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn answers_filter_sort_and_limit_as_the_engine_does() {
    let t1 = table_of(
        "node1",
        &[
            doc(1, "running", "Up 1 second", 50),
            doc(2, "exited", "Exited (0) 1 second ago", 40),
            doc(3, "paused", "Up 3 seconds (Paused)", 40),
        ],
    );
    let t2 = table_of(
        "node2",
        &[
            doc(4, "restarting", "Restarting (1) 1 second ago", 60),
            doc(5, "created", "Created", 40),
        ],
    );
    let parts = |down: bool| {
        vec![
            Part {
                node: "node1",
                rows: t1.rows().collect(),
                host_down: false,
            },
            Part {
                node: "node2",
                rows: t2.rows().collect(),
                host_down: down,
            },
        ]
    };
    let p = parts(false);
    assert_eq!(answer_ids("", &p), ["/node2/c4", "/node1/c1", "/node1/c3"]);
    assert_eq!(
        answer_ids("all=1", &p),
        [
            "/node2/c4",
            "/node1/c1",
            "/node1/c2",
            "/node1/c3",
            "/node2/c5"
        ]
    );
    assert_eq!(answer_ids("limit=2", &p), ["/node2/c4", "/node1/c1"]);
    let f = |j: &str| format!("all=1&filters={}", enc(j));
    assert_eq!(
        answer_ids(&f(r#"{"status":["exited","created"]}"#), &p),
        ["/node1/c2", "/node2/c5"]
    );
    assert_eq!(
        answer_ids(&f(r#"{"name":["^/c[12]$"]}"#), &p),
        ["/node1/c1", "/node1/c2"]
    );
    assert_eq!(answer_ids(&f(r#"{"name":{"c5":true}}"#), &p), ["/node2/c5"]);
    assert_eq!(answer_ids(&f(r#"{"label":["n=3"]}"#), &p), ["/node1/c3"]);
    assert_eq!(answer_ids(&f(r#"{"id":["0404"]}"#), &p), ["/node2/c4"]);
    assert_eq!(
        answer_ids(&f(r#"{"node":["node2"]}"#), &p),
        ["/node2/c4", "/node2/c5"]
    );
    // A node that is down: its rows are Host Down rows, only where stopped ones are listed.
    let p = parts(true);
    assert_eq!(answer_ids("", &p), ["/node1/c1", "/node1/c3"]);
    let (body, _) = answer::write(&plan("all=1").unwrap(), &p, 1_000_000);
    let list: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["Status"], "Host Down");
    assert_eq!(list[0]["State"], "restarting");
}

/// A fetch begun: its stamp, the container it asks (`None`: all), what it saw, the engine then.
type Fetch = (u64, Option<u8>, Vec<Value>, HashMap<u8, &'static str>);

proptest! {
    #![proptest_config(crate::strategies::config(200))]

    /// Any interleaving of fetches (full lists and targeted ones, each seeing the engine at the
    /// moment it started, finishing in any order, some applied twice) ends with each
    /// container as the latest fetch that covered it saw it: present once, in that state, or
    /// absent. No row lost, none twice, none brought back.
    #[test]
    fn any_order_of_fetches_ends_as_the_latest_fetch_saw_it(
        ops in prop::collection::vec((0u8..6, 0u8..3, any::<bool>()), 1..30),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        // The engine: id -> state; each op changes one container, then a fetch starts.
        let mut engine: HashMap<u8, &str> = HashMap::new();
        let mut t = NodeTable::default();
        let mut fetches: Vec<Fetch> = vec![];
        for (n, what, full) in &ops {
            match what {
                0 => { engine.remove(n); }
                1 => { engine.insert(*n, "running"); }
                _ => { engine.insert(*n, "exited"); }
            }
            let only = (!full).then_some(*n);
            let mut v: Vec<&u8> = engine.keys().filter(|k| only.is_none_or(|o| o == **k)).collect();
            v.sort();
            let docs = v.into_iter().map(|k| doc(*k, engine[k], "Created", i64::from(*k))).collect();
            fetches.push((t.begin(), only, docs, engine.clone()));
        }
        // Finish them in a shuffled order, some twice, then the rest.
        let mut pending: Vec<usize> = (0..fetches.len()).collect();
        let mut applied: Vec<usize> = vec![];
        for ix in &order {
            if pending.is_empty() { break; }
            let i = ix.index(pending.len());
            applied.push(pending[i]);
            if ix.index(3) != 0 { pending.swap_remove(i); }
        }
        applied.extend(pending);
        for k in applied {
            let (stamp, only, docs, _) = &fetches[k];
            match only {
                None => t.apply_full(*stamp, rows(docs), 0, L).unwrap(),
                Some(n) => t.apply_some(*stamp, &asked(&[*n]), rows(docs), 0, L).unwrap(),
            }
        }
        let mut want: HashMap<String, &str> = HashMap::new();
        for n in 0u8..6 {
            let latest = fetches.iter().rev().find(|(_, only, _, _)| only.is_none_or(|o| o == n));
            if let Some(state) = latest.and_then(|(_, _, _, seen)| seen.get(&n)) {
                want.insert(id(n), state);
            }
        }
        let have: HashMap<String, &str> = t.rows().map(|r| (r.row.id.clone(), r.row.state.as_str())).collect();
        prop_assert_eq!(t.len(), have.len());
        prop_assert_eq!(have, want);
    }
}

#[test]
fn a_build_distrusts_its_node_until_a_full_list_begun_after_it_ended() {
    let cache = Arc::new(NodeCache::new());
    cache.set_distrust(None);
    assert!(cache.trusted());
    let build = BuildGuard::start(cache.clone());
    assert!(!cache.trusted(), "a build runs");
    // A full list that began while the build ran does not make the node trusted again.
    let ended_at_start = cache.builds_ended.load(Ordering::Acquire);
    drop(build);
    cache
        .listed_after
        .fetch_max(ended_at_start, Ordering::AcqRel);
    assert!(!cache.trusted(), "listed before the build ended");
    // One begun after it does.
    let ended_at_start = cache.builds_ended.load(Ordering::Acquire);
    cache
        .listed_after
        .fetch_max(ended_at_start, Ordering::AcqRel);
    assert!(cache.trusted());
}
