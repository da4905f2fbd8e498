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
