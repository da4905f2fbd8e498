//! The keys of protocol version 2 and of the hook call log: `version: 2`, an adapter's
//! `protocol`, `reveal_headers`, `debug`, `debug_env`; and how scopes merge them.

use super::*;

fn problems(yml: &str) -> Vec<String> {
    match ChainSet::from_yaml(yml) {
        Ok(_) => panic!("expected an invalid file:\n{yml}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

const V2: &str = r#"version: 2
endpoints:
  "POST /*/containers/create":
    pre: [ipam, flocker]
adapters:
  flocker: http://flocker/flocker-adapter
  ipam:
    url: http://ipam:8080/hook
    protocol: 2
    reveal_headers: [X-Registry-Auth]
    debug: true
    debug_env: true
"#;

#[test]
fn a_version_2_file_with_a_v2_adapter_loads() {
    let set = ChainSet::from_yaml(V2).unwrap();
    assert_eq!(set.version(), 2);
    let ipam = set.adapter("ipam").unwrap();
    assert_eq!(ipam.protocol, 2);
    assert_eq!(ipam.reveal_headers, ["x-registry-auth"]);
    assert!(ipam.debug && ipam.debug_env);
    let flocker = set.adapter("flocker").unwrap();
    assert_eq!(
        (
            flocker.protocol,
            flocker.debug,
            flocker.reveal_headers.len()
        ),
        (1, false, 0)
    );
    // Powerstrip's files have no version: 1.
    let v1 = ChainSet::from_yaml("endpoints: {}\nadapters: {}\n").unwrap();
    assert_eq!(v1.version(), 1);
}

#[test]
fn protocol_2_needs_version_2_and_reveal_headers_needs_protocol_2() {
    assert_eq!(
        problems(&V2.replace("version: 2", "version: 1")),
        ["line 7: adapter \"ipam\" speaks protocol 2: say \"version: 2\" at the top of the file"]
    );
    assert_eq!(
        problems(&V2.replace("protocol: 2", "protocol: 1")),
        ["line 10: adapter \"ipam\": reveal_headers needs protocol: 2 (a v1 adapter is never given headers)"]
    );
}

#[test]
fn bad_values_say_what_is_expected() {
    assert_eq!(
        problems(&V2.replace("protocol: 2", "protocol: 3")),
        ["line 9: adapter \"ipam\": protocol must be 1 or 2, found the number 3"]
    );
    let p = problems(&V2.replace("[X-Registry-Auth]", "[User-Agent]"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("line 10: adapter \"ipam\": reveal_headers must be a list of credential header names (authorization, "),
        "{p:?}"
    );
    assert_eq!(
        problems(&V2.replace("debug: true", "debug: yes please")),
        ["line 11: adapter \"ipam\": debug must be true or false, found the string \"yes please\""]
    );
}

#[test]
fn a_merge_with_a_version_2_scope_is_version_2() {
    use crate::scoped::{merge, Scope, ScopeDoc};
    let global = "endpoints:\n  \"POST /*/containers/create\":\n    pre: [flocker]\nadapters:\n  flocker: http://flocker/a\n";
    let docs = [(Scope::Global, global), (Scope::Node("n1".into()), V2)]
        .into_iter()
        .map(|(scope, text)| {
            (
                scope,
                ScopeDoc {
                    text: text.to_owned(),
                    mod_revision: 1,
                },
            )
        })
        .collect();
    let (set, _) = merge(&docs).unwrap();
    assert_eq!(set.version(), 2);
    assert_eq!(set.adapter("ipam").unwrap().protocol, 2);
}
