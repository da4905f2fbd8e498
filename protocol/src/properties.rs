//! Property tests of what reaches this crate from outside: the replies of adapters.

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::v1::{PostHookReply, PreHookReply};

/// `cases` by default, `PROPTEST_CASES` when set; no regression files written.
fn config(cases: u32) -> Config {
    let default = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

// ---- adapter replies ----

fn reply_member() -> BoxedStrategy<serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        any::<String>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (0u64..700).prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        Just(json!({"a": 1})),
        Just(json!([1])),
        any::<bool>().prop_map(serde_json::Value::from),
    ]
    .boxed()
}

fn reply() -> impl Strategy<Value = Vec<u8>> {
    let member = prop::collection::btree_map(
        prop::sample::select(vec![
            "Body",
            "Request",
            "Method",
            "ContentType",
            "Code",
            "Headers",
            "X",
        ]),
        reply_member(),
        0..5,
    );
    let doc = (
        prop::collection::btree_map(
            prop::sample::select(vec![
                "PowerstripProtocolVersion",
                "ModifiedClientRequest",
                "ModifiedServerResponse",
                "Response",
                "Other",
            ]),
            prop_oneof![
                3 => member.prop_map(|m| serde_json::json!(m)),
                1 => reply_member(),
            ],
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(m, pretty)| {
            let v = serde_json::json!(m);
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        });
    prop_oneof![
        4 => doc,
        1 => any::<Vec<u8>>(),
        1 => "[\\[\\]{}\":, 0-9a-z]{0,30}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn adapter_replies_parse_or_say_why(bytes in reply()) {
        match PreHookReply::from_json(&bytes) {
            Ok(r) => {
                // What was read is what was sent: serialized back, it reads the same.
                let again = serde_json::to_vec(&r).unwrap();
                prop_assert_eq!(PreHookReply::from_json(&again).ok(), Some(r));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // Version 2's pre-hook reply: the same, and it round-trips through its serializer.
        match crate::v2::PreHookReply::from_json(&bytes) {
            Ok(r) => {
                let again = serde_json::to_vec(&r).unwrap();
                prop_assert_eq!(crate::v2::PreHookReply::from_json(&again).ok(), Some(r));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        match PostHookReply::from_json(&bytes) {
            Ok(r) => {
                if let Some(code) = r.modified_server_response.code {
                    prop_assert!((100..=599).contains(&code));
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ---- traceparent and tracestate (client headers) ----

/// Header values a client might send: near-valid `traceparent`s (one byte changed, cut or
/// extended) and arbitrary bytes.
fn trace_header() -> BoxedStrategy<Vec<u8>> {
    const GOOD: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (0..GOOD.len(), any::<u8>()).prop_map(|(i, b)| {
            let mut v = GOOD.to_vec();
            v[i] = b;
            v
        }),
        (0..GOOD.len()).prop_map(|n| GOOD[..n].to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|tail| {
            let mut v = GOOD.to_vec();
            v.extend(tail);
            v
        }),
        "[0-9a-f-]{0,60}".prop_map(String::into_bytes),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(2000))]

    /// Whatever a client sends as `traceparent` and `tracestate`, reading it does not panic;
    /// what is accepted formats back to a valid header of the same trace; the `tracestate`
    /// passed on is bounded and printable.
    #[test]
    fn trace_headers_never_panic_and_round_trip(
        parents in proptest::collection::vec(trace_header(), 0..3),
        states in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..3),
    ) {
        use crate::trace::{Trace, TraceParent, MAX_TRACESTATE};
        for p in &parents {
            if let Some(tp) = TraceParent::parse(p) {
                prop_assert!(tp.trace_id.0 != 0 && tp.parent_id.0 != 0);
            }
        }
        let t = Trace::from_headers(parents.iter().map(Vec::as_slice), states.iter().map(Vec::as_slice));
        let out = t.traceparent();
        let again = TraceParent::parse(&out).expect("what busbar sends is valid");
        prop_assert_eq!(again.trace_id, t.trace_id);
        prop_assert_eq!(again.parent_id, t.span_id);
        if let Some(s) = &t.state {
            prop_assert!(s.len() <= MAX_TRACESTATE);
            prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
    }
}
