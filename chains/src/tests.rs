//! Powerstrip's `test_config.py`, ported, plus every validation rule of this module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// The file of Powerstrip's `ReadAndParseTests` (its `good_config`, as YAML).
const GOOD: &str = r#"endpoints:
  # adapters are applied in order
  "POST /*/containers/create":
    pre: [flocker, weave]
    post: [weave, flocker]
  "DELETE /*/containers/*":
    pre: [flocker, weave]
    post: [weave, flocker]
adapters:
  flocker: http://flocker/flocker-adapter
  weave: http://weave/weave-adapter"#;

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("busbar-chains-{}-{n}.yml", std::process::id()));
        let file = TempFile(path);
        file.write(contents);
        file
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).expect("temp dir is writable");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(yml: &str) -> ChainSet {
    match ChainSet::from_yaml(yml) {
        Ok(chains) => chains,
        Err(e) => panic!("expected a valid file, got:\n{e}"),
    }
}

/// Every problem, rendered as `line N: message`.
fn problems(yml: &str) -> Vec<String> {
    match ChainSet::from_yaml(yml) {
        Ok(_) => panic!("expected an invalid file:\n{yml}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

fn keys(chains: &ChainSet) -> Vec<&str> {
    chains.endpoints().iter().map(|e| e.key.as_str()).collect()
}

fn hooks<'a>(chains: &'a ChainSet, key: &str) -> (&'a [String], &'a [String]) {
    let endpoint = chains.endpoint(key).expect("endpoint exists");
    (&endpoint.pre, &endpoint.post)
}

fn url(chains: &ChainSet, name: &str) -> String {
    chains
        .adapter(name)
        .expect("adapter exists")
        .url
        .to_string()
}

fn assert_good(chains: &ChainSet) {
    assert_eq!(
        keys(chains),
        ["POST /*/containers/create", "DELETE /*/containers/*"]
    );
    for key in keys(chains) {
        assert_eq!(
            hooks(chains, key),
            (
                &["flocker".into(), "weave".into()][..],
                &["weave".into(), "flocker".into()][..]
            )
        );
    }
    assert_eq!(
        chains.adapters().keys().collect::<Vec<_>>(),
        ["flocker", "weave"]
    );
    assert_eq!(url(chains, "flocker"), "http://flocker/flocker-adapter");
    assert_eq!(url(chains, "weave"), "http://weave/weave-adapter");
}

// ---- PluginConfigurationTests ----

#[test]
fn test_read_from_yaml_file_success() {
    let file = TempFile::new(GOOD);
    assert_good(&ChainSet::load(file.path()).expect("valid file"));
    // Powerstrip's fixture was `ducks: cows`, returned as parsed YAML before validation;
    // we parse and validate in one step, and that content is not a chain file.
    let file = TempFile::new("ducks: cows");
    let err = ChainSet::load(file.path()).expect_err("not a chain file");
    assert_eq!(
        err.to_string(),
        format!(
            "{p}: required key \"endpoints\" is missing (write \"endpoints: {{}}\" for none)\n\
             {p}: required key \"adapters\" is missing (write \"adapters: {{}}\" for none)\n\
             {p}: line 1: unknown top-level key \"ducks\" (expected version, endpoints, adapters or max_buffer)",
            p = file.path().display()
        )
    );
}

#[test]
fn test_read_from_yaml_file_missing() {
    let err = ChainSet::load("improbable_chickens").expect_err("no such file");
    assert!(
        matches!(&err, ConfigError::NotFound { path } if path == Path::new("improbable_chickens"))
    );
    assert_eq!(err.to_string(), "chain file improbable_chickens not found");
}

#[test]
fn test_read_from_yaml_file_invalid() {
    let file = TempFile::new("{' unclosed");
    let err = ChainSet::load(file.path()).expect_err("invalid YAML");
    assert!(matches!(&err, ConfigError::Invalid { path: Some(p), .. } if p == file.path()));
    let [problem] = err.problems() else {
        panic!("one problem expected: {err}")
    };
    assert_eq!(problem.line, Some(1));
    assert!(problem.message.starts_with("invalid YAML: "), "{problem}");
    assert!(err.to_string().starts_with(&format!(
        "{}: line 1: invalid YAML: ",
        file.path().display()
    )));
}

// test_read_from_yaml_file_default_file is not ported: the default path is the CLI's
// business (a flag with a default), not this module's.

#[test]
fn test_parse_good_adapters() {
    assert_good(&parse(GOOD));
}

#[test]
fn test_endpoints() {
    // Powerstrip returned a set; we keep file order, which is also the hook order.
    assert_eq!(
        keys(&parse(GOOD)),
        ["POST /*/containers/create", "DELETE /*/containers/*"]
    );
}

#[test]
fn test_endpoint() {
    let chains = parse(GOOD);
    let endpoint = chains
        .endpoint("POST /*/containers/create")
        .expect("configured");
    assert_eq!(endpoint.pre, ["flocker", "weave"]);
    assert_eq!(endpoint.post, ["weave", "flocker"]);
    assert_eq!(endpoint.line, Some(3));
}

#[test]
fn test_endpoint_error() {
    assert!(parse(GOOD).endpoint("POST /*/bogus/expression").is_none());
}

#[test]
fn test_adapters() {
    assert_eq!(
        parse(GOOD).adapters().keys().collect::<Vec<_>>(),
        ["flocker", "weave"]
    );
}

#[test]
fn test_adapter_uri() {
    assert_eq!(
        url(&parse(GOOD), "flocker"),
        "http://flocker/flocker-adapter"
    );
}

#[test]
fn test_adapter_uri_error() {
    assert!(parse(GOOD).adapter("bad_adapter").is_none());
}

// ---- ReadAndParseTests ----

#[test]
fn test_single_run() {
    let file = TempFile::new(GOOD);
    assert_good(&ChainSet::load(file.path()).expect("valid file"));
}

#[test]
fn test_no_config() {
    let err = ChainSet::load("improbable_chickens").expect_err("no such file");
    assert!(matches!(err, ConfigError::NotFound { .. }));
}

#[test]
fn test_bad_config() {
    let file = TempFile::new("this is garbage");
    let err = ChainSet::load(file.path()).expect_err("not a mapping");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: expected a mapping with keys \"endpoints\" and \"adapters\", found the string \"this is garbage\"",
            file.path().display()
        )
    );
}

#[test]
fn test_config_change() {
    let file = TempFile::new(GOOD);
    assert_good(&ChainSet::load(file.path()).expect("valid file"));
    file.write(
        "endpoints:\n  # adapters are applied in order\n  \"POST /*/containers/stop\":\n    pre: [flocker]\n\
         adapters:\n  flocker: http://flocker/flocker-adapter",
    );
    let chains = ChainSet::load(file.path()).expect("valid file");
    assert_eq!(keys(&chains), ["POST /*/containers/stop"]);
    assert_eq!(
        hooks(&chains, "POST /*/containers/stop"),
        (&["flocker".into()][..], &[][..])
    );
    assert_eq!(chains.adapters().keys().collect::<Vec<_>>(), ["flocker"]);
}

// ---- ConfigurationValidationTests ----

#[test]
fn test_missing_endpoints() {
    assert_eq!(
        problems("adapters:\n  flocker: http://flocker/flocker-adapter\n"),
        ["required key \"endpoints\" is missing (write \"endpoints: {}\" for none)"]
    );
}

#[test]
fn test_missing_adapters() {
    // No "not defined" noise for each reference when the whole section is missing.
    assert_eq!(
        problems("endpoints:\n  \"POST /*/containers/create\":\n    pre: [flocker]\n"),
        ["required key \"adapters\" is missing (write \"adapters: {}\" for none)"]
    );
}

#[test]
fn test_unkown_endpoint_keys() {
    let yml = GOOD.replace(
        "    post: [weave, flocker]\n  \"DELETE",
        "    post: [weave, flocker]\n    bad_key: value\n  \"DELETE",
    );
    assert_eq!(
        problems(&yml),
        ["line 6: endpoint \"POST /*/containers/create\": unknown key \"bad_key\" (expected pre or post)"]
    );
}

#[test]
fn test_no_endpoint_keys() {
    let yml = GOOD.replace(
        "  \"POST /*/containers/create\":\n    pre: [flocker, weave]\n    post: [weave, flocker]",
        "  \"POST /*/containers/create\": {}",
    );
    assert_eq!(
        problems(&yml),
        ["line 3: endpoint \"POST /*/containers/create\": no hooks configured (expected pre and/or post)"]
    );
}

#[test]
fn test_optional_pre() {
    let chains = parse(&GOOD.replacen("    pre: [flocker, weave]\n", "", 1));
    assert_eq!(
        hooks(&chains, "POST /*/containers/create"),
        (&[][..], &["weave".into(), "flocker".into()][..])
    );
}

#[test]
fn test_optional_post() {
    let chains = parse(&GOOD.replacen("    post: [weave, flocker]\n", "", 1));
    assert_eq!(
        hooks(&chains, "POST /*/containers/create"),
        (&["flocker".into(), "weave".into()][..], &[][..])
    );
}

#[test]
fn test_missing_defined_adapters() {
    let yml = GOOD.replace("  flocker: http://flocker/flocker-adapter\n", "");
    assert_eq!(
        problems(&yml),
        [
            "line 4: endpoint \"POST /*/containers/create\": adapter \"flocker\" is referenced but not defined",
            "line 7: endpoint \"DELETE /*/containers/*\": adapter \"flocker\" is referenced but not defined",
        ]
    );
}

// ---- EndpointConfigurationTests ----

#[test]
fn test_attributes() {
    let chains = parse(GOOD);
    let endpoint = &chains.endpoints()[1];
    assert_eq!(
        (endpoint.pre.as_slice(), endpoint.post.as_slice()),
        hooks(&chains, "DELETE /*/containers/*")
    );
    assert_eq!(endpoint.pattern.as_str(), "DELETE /*/containers/*");
    assert!(endpoint
        .pattern
        .matches(&http::Method::DELETE, "/containers/abc"));
}

// ---- everything a Powerstrip file may be ----

#[test]
fn valid_powerstrip_files_load_unchanged() {
    let chains = parse("version: 1\nendpoints: {}\nadapters: {}\n");
    assert_eq!(chains, ChainSet::empty());
    let chains = parse("endpoints: {}\nadapters:\n  unused: http://unused/\n");
    assert!(chains.endpoints().is_empty());
    assert_eq!(url(&chains, "unused"), "http://unused/");

    // SocketPlane's shipped file: versioned and unversioned twins, both hook kinds.
    let socketplane = parse(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [socketplane]
  "POST /*/containers/*/start":
    post: [socketplane]
  "POST /containers/*/start":
    pre: [socketplane]
    post: [socketplane]
  "DELETE /*/containers/*":
    post: [socketplane]
  "DELETE /containers/*":
    post: [socketplane]
adapters:
  socketplane: http://localhost:6675/adapter
"#,
    );
    assert_eq!(socketplane.endpoints().len(), 5);
    // Powerstrip weave's README, with the `debug` sandwich the debug adapter recommends.
    let weave = parse(
        r#"endpoints:
  "POST /*/containers/create":
    pre: [debug, weave, debug]
  "POST /*/containers/*/start":
    post: [weave]
  "POST /*/containers/*/restart":
    post: [weave]
  "* *":
    pre: [debug]
adapters:
  weave: http://weave/v1/extension
  debug: http://debug/v1/extension
"#,
    );
    assert_eq!(
        hooks(&weave, "POST /*/containers/create").0,
        ["debug", "weave", "debug"]
    );
}

#[test]
fn v1_adapters_get_the_defaults() {
    let chains = parse(GOOD);
    let weave = chains.adapter("weave").expect("defined");
    assert_eq!(weave.name, "weave");
    assert_eq!(weave.timeout, DEFAULT_TIMEOUT);
    assert_eq!(weave.timeout, Duration::from_secs(10));
    assert_eq!(weave.on_error, OnError::Fail);
    assert_eq!(weave.ca_file, None);
    assert_eq!(chains.max_buffer(), DEFAULT_MAX_BUFFER);
    assert_eq!(chains.max_buffer(), 64 * 1024 * 1024);
}

#[test]
fn extensions() {
    let chains = parse(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [secure, quick]
adapters:
  secure:
    url: https://policy.example:8443/hook
    timeout: 30s
    on_error: fail
    ca_file: /etc/busbar/policy-ca.pem
  quick: {url: "http://quick/", timeout: 0.5, on_error: skip}
  plain:
    url: http://plain/
max_buffer: 1MiB
"#,
    );
    let secure = chains.adapter("secure").expect("defined");
    assert_eq!(secure.url, "https://policy.example:8443/hook");
    assert_eq!(secure.timeout, Duration::from_secs(30));
    assert_eq!(secure.on_error, OnError::Fail);
    assert_eq!(
        secure.ca_file.as_deref(),
        Some(Path::new("/etc/busbar/policy-ca.pem"))
    );
    let quick = chains.adapter("quick").expect("defined");
    assert_eq!(
        (quick.timeout, quick.on_error),
        (Duration::from_millis(500), OnError::Skip)
    );
    let plain = chains.adapter("plain").expect("defined");
    assert_eq!(
        (plain.timeout, plain.on_error, plain.ca_file.as_ref()),
        (DEFAULT_TIMEOUT, OnError::Fail, None)
    );
    assert_eq!(chains.max_buffer(), 1 << 20);
    assert_eq!(
        parse("endpoints: {}\nadapters: {}\nmax_buffer: 4096\n").max_buffer(),
        4096
    );
}

#[test]
fn empty_chain_set_matches_nothing() {
    let chains = ChainSet::empty();
    assert!(chains.endpoints().is_empty() && chains.adapters().is_empty());
    assert!(chains
        .hooks_for(&http::Method::POST, "/v1.41/containers/create")
        .is_empty());
    assert_eq!(ChainSet::default(), chains);
}

// ---- every validation error, with its line ----

#[test]
fn not_a_mapping_or_empty() {
    let empty = ["the file is empty; expected a mapping with keys \"endpoints\" and \"adapters\""];
    assert_eq!(problems(""), empty);
    assert_eq!(problems("# nothing yet\n"), empty);
    assert_eq!(problems("~"), empty);
    assert_eq!(
        problems("- endpoints\n- adapters\n"),
        ["expected a mapping with keys \"endpoints\" and \"adapters\", found a list"]
    );
    assert_eq!(
        problems("42"),
        ["expected a mapping with keys \"endpoints\" and \"adapters\", found the number 42"]
    );
}

#[test]
fn yaml_syntax_errors_carry_the_parser_line() {
    let err = ChainSet::from_yaml("endpoints:\n  \"POST /x\":\n    pre: [a\nadapters: {}\n")
        .expect_err("bad YAML");
    let [problem] = err.problems() else {
        panic!("one problem expected: {err}")
    };
    assert_eq!(problem.line, Some(4));
    assert!(
        problem
            .message
            .starts_with("invalid YAML: did not find expected ',' or ']'"),
        "{problem}"
    );

    let err = ChainSet::from_yaml("endpoints: {}\nadapters: {}\nendpoints: {}\n")
        .expect_err("duplicate key");
    assert!(
        err.to_string()
            .contains("duplicate entry with key \"endpoints\""),
        "{err}"
    );
}

#[test]
fn unknown_top_level_keys_are_errors() {
    // Powerstrip ignored these; a typo must not silently disable a setting.
    assert_eq!(
        problems("version: 1\nendpoints: {}\nadapters: {}\nmax_bufer: 1MiB\n"),
        ["line 4: unknown top-level key \"max_bufer\" (expected version, endpoints, adapters or max_buffer)"]
    );
    assert_eq!(
        problems("endpoints: {}\nadpters: {}\n"),
        [
            "required key \"adapters\" is missing (write \"adapters: {}\" for none)",
            "line 2: unknown top-level key \"adpters\" (expected version, endpoints, adapters or max_buffer)",
        ]
    );
}

#[test]
fn unsupported_versions() {
    let yml = |v: &str| format!("version: {v}\nendpoints: {{}}\nadapters: {{}}\n");
    assert_eq!(
        problems(&yml("2")),
        ["line 1: unsupported version: expected 1, found the number 2"]
    );
    assert_eq!(
        problems(&yml("\"1\"")),
        ["line 1: unsupported version: expected 1, found the string \"1\""]
    );
    assert_eq!(
        problems(&yml("")),
        ["line 1: unsupported version: expected 1, found null"]
    );
}

#[test]
fn sections_of_the_wrong_type() {
    assert_eq!(
        problems("endpoints:\nadapters: [weave]\n"),
        [
            "line 1: \"endpoints\" must be a mapping of \"METHOD PATTERN\" keys to hooks, found null",
            "line 2: \"adapters\" must be a mapping of adapter names to URLs, found a list",
        ]
    );
}

#[test]
fn endpoints_with_no_hooks() {
    assert_eq!(
        problems("endpoints:\n  \"POST /x\":\n  \"GET /y\": [a]\n  \"GET /z\": {}\nadapters:\n  a: http://a/\n"),
        [
            "line 2: endpoint \"POST /x\": no hooks configured (expected pre and/or post)",
            "line 3: endpoint \"GET /y\": expected a mapping with pre and/or post, found a list",
            "line 4: endpoint \"GET /z\": no hooks configured (expected pre and/or post)",
        ]
    );
}

#[test]
fn unknown_endpoint_keys_block_and_flow_style() {
    assert_eq!(
        problems(
            "endpoints:\n  \"POST /x\":\n    pre: [a]\n    pots: [a]\n  \"GET /y\": {pre: [a], hook: [a]}\n\
             adapters:\n  a: http://a/\n"
        ),
        [
            "line 4: endpoint \"POST /x\": unknown key \"pots\" (expected pre or post)",
            "line 5: endpoint \"GET /y\": unknown key \"hook\" (expected pre or post)",
        ]
    );
}

#[test]
fn hook_lists_must_be_lists_of_names() {
    assert_eq!(
        problems(
            "endpoints:\n  \"POST /a\":\n    pre: weave\n  \"POST /b\":\n    pre:\n    post: [weave]\n  \"POST /c\":\n    \
             post: [weave, 7, [x]]\nadapters:\n  weave: http://weave/\n"
        ),
        [
            // Powerstrip read `pre: weave` as the list [w, e, a, v, e].
            "line 3: endpoint \"POST /a\": pre must be a list of adapter names, found the string \"weave\" \
             (write pre: [weave] for a one-item list)",
            "line 5: endpoint \"POST /b\": pre must be a list of adapter names, found null",
            "line 8: endpoint \"POST /c\": post[1] must be an adapter name, found the number 7",
            "line 8: endpoint \"POST /c\": post[2] must be an adapter name, found a list",
        ]
    );
}

#[test]
fn each_undefined_adapter_is_reported_once_per_endpoint() {
    assert_eq!(
        problems("endpoints:\n  \"POST /*/containers/create\":\n    pre: [weave, flocker, weave]\n    post: [weave]\nadapters: {}\n"),
        [
            "line 3: endpoint \"POST /*/containers/create\": adapter \"weave\" is referenced but not defined",
            "line 3: endpoint \"POST /*/containers/create\": adapter \"flocker\" is referenced but not defined",
        ]
    );
}

#[test]
fn an_invalid_adapter_is_still_defined() {
    // Only the URL is wrong; the reference to "weave" is fine.
    assert_eq!(
        problems("endpoints:\n  \"POST /x\":\n    pre: [weave]\nadapters:\n  weave: weave:80\n"),
        ["line 5: adapter \"weave\": url \"weave:80\" must be an absolute http:// or https:// URL with a host"]
    );
}

/// Every key loads, as every string is an fnmatch pattern and Powerstrip loaded it (issue
/// 18); those that can never match, or read oddly, come with a warning on their line.
#[test]
fn every_endpoint_key_loads_and_odd_ones_are_warned_about() {
    let yml = "endpoints:\n  /containers/create: {pre: [a]}\n  post /x: {pre: [a]}\n  \"POST x\": {pre: [a]}\n  \
               \"* /a b\": {pre: [a]}\n  \"GET /v[9-1]/info\": {pre: [a]}\n  \"POST /*/containers/[abc\": {pre: [a]}\n  \
               \"* */containers/create\": {pre: [a]}\n  \"POST */containers/create\": {pre: [a]}\nadapters:\n  a: http://a/\n";
    let chains = parse(yml);
    assert_eq!(chains.endpoints().len(), 8);
    let warnings: Vec<String> = chains.warnings().iter().map(|w| w.to_string()).collect();
    let never = "it can never match a request, which is \"METHOD /path\" with an uppercase METHOD, so its hooks never run";
    assert_eq!(
        warnings,
        [
            format!("line 2: endpoint \"/containers/create\": {never} (it has no METHOD part: write \"* /containers/create\" or \"POST /containers/create\")"),
            format!("line 3: endpoint \"post /x\": {never} (methods are uppercase: write \"POST /x\")"),
            format!("line 4: endpoint \"POST x\": {never}"),
            format!("line 6: endpoint \"GET /v[9-1]/info\": {never}"),
            "line 6: endpoint \"GET /v[9-1]/info\": the range 9-1 is reversed: Python 3's fnmatch drops it (it matches no character), Python 2's (Powerstrip's) failed every request on it".to_string(),
            "line 7: endpoint \"POST /*/containers/[abc\": it has a [ with no closing ], which fnmatch reads as a literal [".to_string(),
        ]
    );
    let hit = |m: http::Method, p: &str| chains.hooks_for(&m, p).endpoints;
    assert_eq!(
        hit(http::Method::POST, "/containers/create"),
        ["* */containers/create", "POST */containers/create"]
    );
    assert_eq!(
        hit(http::Method::GET, "/v1.41/containers/create"),
        ["* */containers/create"]
    );
    assert_eq!(hit(http::Method::PUT, "/a%20b"), ["* /a b"]);
    assert!(hit(http::Method::POST, "/x").is_empty());
    assert!(
        parse("endpoints: {\"POST /x\": {pre: [a]}}\nadapters: {a: http://a/}")
            .warnings()
            .is_empty()
    );
}

#[test]
fn bad_adapter_urls() {
    let yml = r#"endpoints: {}
adapters:
  none:
  number: 80
  relative: /adapter
  bare: weave
  ftp: ftp://weave/adapter
  nohost: "http:///adapter"
  spaces: "http://we ave/"
  empty: ""
"#;
    let shape = "must be an absolute http:// or https:// URL with a host";
    assert_eq!(
        problems(yml),
        [
            "line 3: adapter \"none\": expected a URL or a mapping with url, found null".to_string(),
            "line 4: adapter \"number\": expected a URL or a mapping with url, found the number 80".to_string(),
            format!("line 5: adapter \"relative\": url \"/adapter\" {shape}"),
            format!("line 6: adapter \"bare\": url \"weave\" {shape}"),
            format!("line 7: adapter \"ftp\": url \"ftp://weave/adapter\" {shape}"),
            "line 8: adapter \"nohost\": url \"http:///adapter\" is not a valid URL (invalid format)".to_string(),
            "line 9: adapter \"spaces\": url \"http://we ave/\" is not a valid URL (invalid uri character)".to_string(),
            "line 10: adapter \"empty\": url \"\" is not a valid URL (empty string)".to_string(),
        ]
    );
}

#[test]
fn bad_adapter_extensions() {
    let yml = r#"endpoints: {}
adapters:
  a:
    url: http://a/
    timout: 10s
    timeout: 10 parsecs
    on_error: ignore
  b:
    timeout: 5
  c:
    url: http://c/
    ca_file: /etc/ca.pem
  d:
    url: 42
    ca_file: ""
  e: {url: "https://e/", timeout: 0}
"#;
    assert_eq!(
        problems(yml),
        [
            "line 5: adapter \"a\": unknown key \"timout\" (expected url, timeout, on_error or ca_file)",
            "line 6: adapter \"a\": timeout must be a positive number of seconds or a duration like \"10s\", \
             \"500ms\" or \"2m\", found the string \"10 parsecs\"",
            "line 7: adapter \"a\": on_error must be \"fail\" or \"skip\", found the string \"ignore\"",
            "line 8: adapter \"b\": required key \"url\" is missing",
            "line 12: adapter \"c\": ca_file is only used with https:// URLs",
            "line 14: adapter \"d\": url must be a string, found the number 42",
            "line 15: adapter \"d\": ca_file must be a file path, found the string \"\"",
            "line 16: adapter \"e\": timeout must be a positive number of seconds or a duration like \"10s\", \
             \"500ms\" or \"2m\", found the number 0",
        ]
    );
}

#[test]
fn bad_max_buffer() {
    assert_eq!(
        problems("endpoints: {}\nadapters: {}\nmax_buffer: 64 parsecs\n"),
        ["line 3: max_buffer must be a positive size in bytes or like \"64MiB\", found the string \"64 parsecs\""]
    );
    assert_eq!(
        problems("endpoints: {}\nadapters: {}\nmax_buffer: 0\n"),
        ["line 3: max_buffer must be a positive size in bytes or like \"64MiB\", found the number 0"]
    );
}

#[test]
fn all_problems_are_reported_together_in_line_order() {
    let yml = r#"version: 2
adapters:
  weave: weave
  flocker:
    url: http://flocker/
    on_error: retry
endpoints:
  "POST /*/containers/create":
    pre: [flocker, weave, calico]
  "post /*/containers/*/start":
    post: weave
  "DELETE /*/containers/*": {}
extra: true
"#;
    let err = ChainSet::from_yaml(yml).expect_err("many problems");
    let expected = [
        "line 1: unsupported version: expected 1, found the number 2",
        "line 3: adapter \"weave\": url \"weave\" must be an absolute http:// or https:// URL with a host",
        "line 6: adapter \"flocker\": on_error must be \"fail\" or \"skip\", found the string \"retry\"",
        "line 9: endpoint \"POST /*/containers/create\": adapter \"calico\" is referenced but not defined",
        "line 11: endpoint \"post /*/containers/*/start\": post must be a list of adapter names, found the string \
         \"weave\" (write post: [weave] for a one-item list)",
        "line 12: endpoint \"DELETE /*/containers/*\": no hooks configured (expected pre and/or post)",
        "line 13: unknown top-level key \"extra\" (expected version, endpoints, adapters or max_buffer)",
    ];
    assert_eq!(err.to_string(), expected.join("\n"));
}

#[test]
fn problems_without_a_findable_line() {
    // A flow-style top level: lines cannot be found, the problems are still all there
    // (line-less problems keep the order they were found in).
    assert_eq!(
        problems("{endpoints: {\"POST /x\": {pre: [a]}}, adapters: {}, verbose: true}"),
        [
            "unknown top-level key \"verbose\" (expected version, endpoints, adapters or max_buffer)",
            "endpoint \"POST /x\": adapter \"a\" is referenced but not defined",
        ]
    );
}

#[test]
fn read_errors_name_the_file() {
    let dir = std::env::temp_dir();
    let err = ChainSet::load(&dir).expect_err("a directory is not a file");
    assert!(matches!(&err, ConfigError::Read { path, .. } if path == &dir));
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read chain file {}: ", dir.display())),
        "{err}"
    );
    assert!(err.problems().is_empty());
}

#[test]
fn credentials_in_an_adapter_url_are_kept_apart_and_never_shown() {
    let chains = parse(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [a]\nadapters:\n  a: http://flocker:s%3Acret@adapter.lan:9000/hook\n",
    );
    let a = chains.adapter("a").unwrap();
    assert_eq!(a.url.to_string(), "http://adapter.lan:9000/hook");
    let auth = a.basic_auth.as_ref().unwrap();
    assert_eq!(
        (auth.user.as_str(), auth.password.as_str()),
        ("flocker", "s:cret")
    );
    assert!(!format!("{a:?}").contains("s:cret"), "{a:?}");

    let bad = problems(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [a]\nadapters:\n  a: ftp://flocker:s3cret@adapter.lan/hook\n",
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("ftp://***@adapter.lan/hook"), "{bad:?}");
    assert!(!bad[0].contains("s3cret"), "{bad:?}");
}
