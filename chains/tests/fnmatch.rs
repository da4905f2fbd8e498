//! busbar's endpoint matcher against Python's own `fnmatch`: every row of
//! `tests/fnmatch/cases.tsv`, which `tests/fnmatch/cases.py` wrote by asking Python (issue 18:
//! every pattern Powerstrip accepted must match as it did).

use busbar_chains::matcher::{fnmatch, KeyPattern};

const CASES: &str = include_str!("fnmatch/cases.tsv");

#[test]
fn every_case_of_pythons_table_agrees() {
    let (mut plain, mut keys, mut wrong) = (0, 0, Vec::new());
    for (n, line) in CASES.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [kind, pattern, name, expected] = fields[..] else {
            panic!("cases.tsv line {}: expected 4 fields: {line:?}", n + 1);
        };
        let expected = expected == "1";
        let got = match kind {
            "fnmatch" => {
                plain += 1;
                fnmatch(name, pattern)
            }
            "key" => {
                keys += 1;
                let (method, path) = name.split_once(' ').expect("METHOD PATH");
                let method = http::Method::from_bytes(method.as_bytes()).expect("a method");
                KeyPattern::parse(pattern).matches(&method, path)
            }
            other => panic!("cases.tsv line {}: unknown kind {other:?}", n + 1),
        };
        if got != expected {
            wrong.push(format!(
                "line {}: {kind} {pattern:?} on {name:?}: Python says {expected}, busbar {got}",
                n + 1
            ));
        }
    }
    assert!(
        plain > 1000 && keys > 500,
        "the table is short: {plain} + {keys}"
    );
    assert!(
        wrong.is_empty(),
        "{} of {} cases disagree:\n{}",
        wrong.len(),
        plain + keys,
        wrong.join("\n")
    );
}

/// A key that Python's fnmatch can match with some request never gets a never-match warning
/// (the warning is never wrong), over the whole table.
#[test]
fn no_key_that_matches_a_request_is_called_never_matching() {
    for line in CASES.lines().filter(|l| l.starts_with("key\t")) {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields[3] == "1" {
            assert!(!KeyPattern::parse(fields[1]).never_matches(), "{line}");
        }
    }
}
