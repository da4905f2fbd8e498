//! What the property tests share: their settings, and generators of the JSON that clients,
//! engines and agents may send.

use proptest::prelude::*;
use serde_json::Value;

/// The property tests' settings: `cases` by default, `PROPTEST_CASES` when set; no
/// regression files written (a failure found becomes a plain test).
pub(crate) fn config(cases: u32) -> proptest::test_runner::Config {
    let default = proptest::test_runner::Config::default();
    proptest::test_runner::Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

/// Any JSON value, at most `depth` levels of arrays and objects deep: every kind of number
/// (huge, negative, fractional), short and arbitrary strings, keys among `keys` or any.
pub(crate) fn json_with_keys(depth: u32, keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let key = if keys.is_empty() {
        "[A-Za-z/0-9]{0,6}".boxed()
    } else {
        prop_oneof![
            3 => prop::sample::select(keys).prop_map(str::to_owned),
            1 => "[A-Za-z/0-9]{0,6}",
        ]
        .boxed()
    };
    leaf.prop_recursive(depth, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Any JSON value, at most `depth` deep.
pub(crate) fn json_value(depth: u32) -> BoxedStrategy<Value> {
    json_with_keys(depth, &[])
}
