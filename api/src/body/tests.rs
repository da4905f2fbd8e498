use http::Method;
use proptest::prelude::*;

use super::*;

fn create(body: &str) -> Result<Option<String>, BodyError> {
    let path = ApiPath::parse("/v1.41/containers/create").unwrap();
    canonical(&Method::POST, &path, body.as_bytes())
        .map(|b| b.map(|b| String::from_utf8(b).unwrap()))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn a_canonical_body_is_left_alone() {
    for body in [
        r#"{"Image":"busybox","Cmd":["echo","hi"],"HostConfig":{"Binds":["/a:/b"],"Privileged":false}}"#,
        r#"{"Image":"busybox","Labels":{"privileged":"yes","HOSTCONFIG":"x"}}"#,
        r#"{"Image":"busybox","SomeFutureField":{"privileged":true}}"#,
        "",
        "  ",
    ] {
        assert_eq!(create(body), Ok(None), "{body}");
    }
}

#[test]
fn keys_are_read_as_go_reads_them() {
    let got =
        create(r#"{"image":"busybox","hostconfig":{"PRIVILEGED":true,"Bind\u017f":["/etc:/x"]}}"#)
            .unwrap()
            .unwrap();
    assert_eq!(
        json(&got),
        json(r#"{"Image":"busybox","HostConfig":{"Privileged":true,"Binds":["/etc:/x"]}}"#)
    );
    // The Kelvin sign is a k; map keys stay as written; lists of structs are walked.
    let got = create(
        r#"{"Image":"x","HostConfig":{"Mounts":[{"type":"bind","source":"/","target":"/h"}],"Lin\u212as":["a:b"],"Sysctls":{"net.Ipv4":"1"}}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        json(&got),
        json(
            r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}],"Links":["a:b"],"Sysctls":{"net.Ipv4":"1"}}}"#
        )
    );
    // A character that merely looks like a letter names nothing: kept, unknown to the engine.
    assert_eq!(
        create(r#"{"Image":"x","HostConfig":{"Pr\u0456vileged":true}}"#),
        Ok(None)
    );
}

#[test]
fn a_field_given_twice_is_refused() {
    let e =
        create(r#"{"Image":"x","HostConfig":{"Privileged":false,"privileged":true}}"#).unwrap_err();
    assert_eq!(
        e,
        BodyError::Duplicate {
            at: "HostConfig.Privileged".into(),
            first: "Privileged".into(),
            second: "privileged".into()
        }
    );
    assert!(matches!(
        create(r#"{"HostConfig":{"Binds":["/:/h"]},"hostconfig":{"Privileged":true}}"#),
        Err(BodyError::Duplicate { .. })
    ));
    assert!(matches!(
        create(r#"{"Image":"x","Image":"y"}"#),
        Err(BodyError::Duplicate { .. })
    ));
}

#[test]
fn top_level_host_fields_go_where_the_engine_applies_them() {
    let hoisted = |body: &str| json(&create(body).unwrap().unwrap());
    // No HostConfig (or null): the top level is the host config.
    assert_eq!(
        hoisted(r#"{"Image":"x","privileged":true,"Memory":9}"#),
        json(r#"{"Image":"x","HostConfig":{"Privileged":true,"Memory":9}}"#)
    );
    assert_eq!(
        hoisted(r#"{"Image":"x","HostConfig":null,"Privileged":true}"#),
        json(r#"{"Image":"x","HostConfig":{"Privileged":true}}"#)
    );
    // A HostConfig: only the four fields still read, where it leaves them zero; Cpuset too.
    assert_eq!(
        hoisted(
            r#"{"Image":"x","HostConfig":{"Memory":7},"Memory":8,"MemorySwap":5,"Privileged":true,"Cpuset":"0"}"#
        ),
        json(r#"{"Image":"x","HostConfig":{"Memory":7,"MemorySwap":5,"CpusetCpus":"0"}}"#)
    );
    // Cpuset with no host config at all: ignored by the engine, dropped.
    assert_eq!(
        hoisted(r#"{"Image":"x","Cpuset":"0"}"#),
        json(r#"{"Image":"x"}"#)
    );
}

#[test]
fn only_the_first_json_value_counts() {
    assert_eq!(
        create(r#"{"Image":"x"} {"HostConfig":{"Privileged":true}}"#),
        Ok(Some(r#"{"Image":"x"}"#.into()))
    );
    assert!(matches!(create("{\"Image\":"), Err(BodyError::NotJson(_))));
}

#[test]
fn other_endpoints() {
    let at = |p: &str, body: &str| {
        let path = ApiPath::parse(p).unwrap();
        canonical(&Method::POST, &path, body.as_bytes())
            .unwrap()
            .map(|b| json(std::str::from_utf8(&b).unwrap()))
    };
    assert_eq!(
        at(
            "/containers/abc/exec",
            r#"{"cmd":["sh"],"privileged":true}"#
        ),
        Some(json(r#"{"Cmd":["sh"],"Privileged":true}"#))
    );
    assert_eq!(
        at(
            "/v1.41/containers/abc/update",
            r#"{"memory":1,"restartpolicy":{"name":"always"}}"#
        ),
        Some(json(r#"{"Memory":1,"RestartPolicy":{"Name":"always"}}"#))
    );
    assert_eq!(
        at(
            "/networks/n/connect",
            r#"{"container":"c","endpointconfig":{"ipamconfig":{"ipv4address":"10.0.0.9"}}}"#
        ),
        Some(json(
            r#"{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.0.0.9"}}}"#
        ))
    );
    assert_eq!(at("/containers/abc/start", r#"{"privileged":true}"#), None);
    let get = ApiPath::parse("/containers/create").unwrap();
    assert_eq!(canonical(&Method::GET, &get, b"{\"image\":1}"), Ok(None));
}

/// Go's struct embedding drops a name two embedded structs share: the create's flattened
/// layout must have none, or the module would pick one where the engine picks neither.
#[test]
fn no_field_is_named_twice_in_a_struct() {
    fn check(shape: &'static Shape, at: &str) {
        match shape {
            Struct(groups) => {
                let fields: Vec<_> = groups.iter().flat_map(|g| g.iter()).collect();
                for (i, (a, inner)) in fields.iter().enumerate() {
                    for (b, _) in &fields[..i] {
                        assert!(!names(a, b), "{at}: {a} and {b}");
                    }
                    check(inner, &format!("{at}.{a}"));
                }
            }
            Map(inner) | List(inner) => check(inner, at),
            Leaf => {}
        }
    }
    for (name, shape) in [
        ("create", &CREATE),
        ("update", &UPDATE),
        ("exec", &EXEC),
        ("network create", &NETWORK_CREATE),
        ("network connect", &NETWORK_CONNECT),
        ("volume create", &VOLUME_CREATE),
    ] {
        check(shape, name);
    }
}

/// JSON whose keys are field names in random case (and now and then a long s or a Kelvin
/// sign), nested as the create's fields are.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<bool>(), 0u8..20), name.len()).prop_map(move |flips| {
        name.chars()
            .zip(flips)
            .map(|(c, (upper, odd))| match (c, odd) {
                ('s' | 'S', 0) => '\u{17f}',
                ('k' | 'K', 0) => '\u{212a}',
                _ if upper => c.to_ascii_uppercase(),
                _ => c.to_ascii_lowercase(),
            })
            .collect()
    })
}

fn body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("1e3".to_owned()),
        Just("-12".to_owned()),
        Just("\"a\\u0000b\"".to_owned()),
        Just("[\"/:/h\"]".to_owned()),
    ];
    let key = prop_oneof![
        spelled("Privileged"),
        spelled("Binds"),
        spelled("HostConfig"),
        spelled("Mounts"),
        spelled("Links"),
        spelled("Memory"),
        spelled("Labels"),
        Just("Cpuset".to_owned()),
        "[a-z]{1,3}",
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec((key.clone(), inner.clone()), 0..5).prop_map(|entries| {
                let fields: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
            prop::collection::vec(inner, 0..3).prop_map(|items| format!("[{}]", items.join(","))),
        ]
    })
}

proptest! {
    /// Whatever the body, no panic; what comes out is JSON, has every field under its own
    /// name, and is canonical itself.
    #[test]
    fn canonical_is_a_fixed_point(body in body(), junk in "[ x{}]{0,3}") {
        let input = format!("{body}{junk}");
        if let Ok(Some(out)) = create(&input) {
            let again = create(&out);
            prop_assert_eq!(&again, &Ok(None), "{} -> {}", input, out);
            prop_assert!(serde_json::from_str::<Value>(&out).is_ok(), "{}", out);
        }
    }
}
