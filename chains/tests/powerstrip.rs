//! Powerstrip's own `adapters.yml` examples, the files its tests wrote and those its best-known
//! adapters shipped, and every pattern form its README lists: they load unchanged, without a
//! warning, and match as they did in Powerstrip (fnmatch on `"METHOD path"`, issue 18). The
//! files are transcribed from Powerstrip's README and tests and from the adapters' READMEs.

use busbar_chains::ChainSet;
use http::Method;

fn load(yml: &str) -> ChainSet {
    let set = ChainSet::from_yaml(yml).unwrap_or_else(|e| panic!("{e}\n---\n{yml}"));
    assert!(
        set.warnings().is_empty(),
        "{:?}\n---\n{yml}",
        set.warnings()
    );
    set
}

fn hit(set: &ChainSet, method: Method, path: &str) -> Vec<String> {
    set.hooks_for(&method, path).endpoints
}

/// README "Goal of project", and the "Try it out" file (powerstrip-slowreq).
#[test]
fn the_readme_files() {
    let goal = load(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [flocker, weave]
  "POST /*/containers/*/start":
    post: [weave]
adapters:
  weave: http://weave/extension
  flocker: http://flocker/flocker-adapter
"#,
    );
    let create = goal.hooks_for(&Method::POST, "/v1.16/containers/create?name=db");
    let names: Vec<&str> = create.pre.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["flocker", "weave"]);
    assert_eq!(
        hit(&goal, Method::POST, "/v1.16/containers/abc/start"),
        ["POST /*/containers/*/start"]
    );
    assert!(hit(&goal, Method::GET, "/v1.16/containers/json").is_empty());

    let slowreq = load(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [slowreq]
adapters:
  slowreq: http://slowreq/slowreq-adapter
"#,
    );
    assert_eq!(
        hit(&slowreq, Method::POST, "/v1.17/containers/create"),
        ["POST /*/containers/create"]
    );
}

/// README "Defining Endpoints": the request `POST /v1.16/containers/create` "would be matched
/// by all of the following". fnmatch matched five; `/v[12]/` is one character between `/v`
/// and `/`, so Powerstrip never matched it either (a README mistake, kept as it was).
#[test]
fn the_readme_pattern_list() {
    let forms = [
        ("POST /v1.16/containers/create", true),
        ("POST /v1*/containers/create", true),
        ("POST /*/containers/create", true),
        ("POST /*/*/create", true),
        ("* /*/containers/create", true),
        ("POST /v[12]/containers/create", false),
    ];
    for (key, expected) in forms {
        let set = load(&format!(
            "endpoints:\n  \"{key}\":\n    pre: [a]\nadapters:\n  a: http://a/\n"
        ));
        assert_eq!(
            !hit(&set, Method::POST, "/v1.16/containers/create").is_empty(),
            expected,
            "{key}"
        );
    }
    // "Any of the Docker endpoints can be matched".
    let set = load(
        "endpoints:\n  \"POST /*/containers/create\": {pre: [a]}\n  \"POST /*/containers/*/start\": {pre: [a]}\n  \
         \"POST /*/containers/*/stop\": {pre: [a]}\n  \"POST /*/containers/*/kill\": {pre: [a]}\nadapters:\n  a: http://a/\n",
    );
    for (path, key) in [
        ("/v1.16/containers/create", "POST /*/containers/create"),
        ("/v1.16/containers/c1/start", "POST /*/containers/*/start"),
        ("/v1.16/containers/c1/stop", "POST /*/containers/*/stop"),
        ("/v1.16/containers/c1/kill", "POST /*/containers/*/kill"),
    ] {
        assert_eq!(hit(&set, Method::POST, path), [key]);
    }
}

/// `test_config.py`, `test_parser.py`, `test_core.py` and `test_passthru.py`.
#[test]
fn the_test_suites_files() {
    let config = load(
        r#"endpoints:
  # comments are allowed
  "POST /*/containers/create":
    pre: [flocker, weave]
    post: [weave]
  "DELETE /*/containers/*":
    pre: [flocker, weave]
  "POST /*/containers/stop":
    pre: [flocker]
adapters:
  flocker: http://flocker/flocker-plugin
  weave: http://weave/weave-plugin
"#,
    );
    assert_eq!(
        hit(&config, Method::DELETE, "/v1.16/containers/abc"),
        ["DELETE /*/containers/*"]
    );
    assert!(hit(&config, Method::POST, "/v1.16/bogus/expression").is_empty());

    let parser = load(
        r#"endpoints:
  "POST /v1.16/containers/create":
    pre: [alpha, beta, gamma]
    post: [alpha, gamma]
  "GET /v1.16/images/*/json":
    pre: [gamma]
  "* /v*/images/*/json":
    post: [beta]
adapters:
  alpha: http://alpha/alpha
  beta: http://beta/beta
  gamma: http://gamma/gamma
"#,
    );
    assert_eq!(
        hit(&parser, Method::POST, "/v1.16/containers/create"),
        ["POST /v1.16/containers/create"]
    );
    assert_eq!(
        hit(&parser, Method::GET, "/v2/images/alpha/json"),
        ["* /v*/images/*/json"]
    );
    assert_eq!(
        hit(&parser, Method::GET, "/v1.16/images/*/json"),
        ["GET /v1.16/images/*/json", "* /v*/images/*/json"]
    );

    // test_core.py hooks an unversioned path, and an endpoint with empty lists.
    let core = load("endpoints:\n  \"POST /towel\":\n    pre: [adder]\n    post: []\nadapters:\n  adder: http://127.0.0.1:4321/adapter\n");
    assert_eq!(hit(&core, Method::POST, "/towel"), ["POST /towel"]);
    let empty = load("endpoints:\n  \"POST /towel\":\n    pre: []\n    post: []\nadapters: {}");
    assert!(empty.hooks_for(&Method::POST, "/towel").is_empty());

    let passthru = load(
        r#"
endpoints:
  "POST /*/containers/*/attach":
    post: [nothing]
adapters:
  nothing: http://devnull/
"#,
    );
    assert_eq!(
        hit(
            &passthru,
            Method::POST,
            "/v1.16/containers/abc/attach?stream=1"
        ),
        ["POST /*/containers/*/attach"]
    );
    let null_twice = load(
        r#"
endpoints:
    "* *":
      pre: [nothing, nothing2]
      post: [nothing, nothing2]
adapters:
    nothing: http://localhost:4321/null-adapter
    nothing2: http://localhost:4321/null-adapter
"#,
    );
    for (method, path) in [
        (Method::GET, "/_ping"),
        (Method::POST, "/v1.16/build"),
        (Method::DELETE, "/images/x"),
    ] {
        assert_eq!(null_twice.hooks_for(&method, path).pre.len(), 2, "{path}");
    }
}

/// The files of adapters that shipped (their READMEs and repositories), including the
/// Powerstrip-era workaround of listing unversioned twins: each path hooks once per key it
/// matches, in file order.
#[test]
fn the_adapters_files() {
    let weave = load(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [weave]
  "POST /*/containers/*/start":
    post: [weave]
  "POST /*/containers/*/restart":
    post: [weave]
adapters:
  weave: http://weave/v1/extension
"#,
    );
    assert_eq!(
        hit(&weave, Method::POST, "/v1.15/containers/c1/restart"),
        ["POST /*/containers/*/restart"]
    );

    let socketplane = load(
        r#"version: 1
endpoints:
  "POST /*/containers/create":
    pre: [socketplane]
  "POST /*/containers/*/start":
    post: [socketplane]
  "DELETE /*/containers/*":
    post: [socketplane]
  "POST /containers/*/start":
    pre: [socketplane]
    post: [socketplane]
  "DELETE /containers/*":
    post: [socketplane]
adapters:
  socketplane: http://localhost:6675/adapter
"#,
    );
    assert_eq!(
        hit(&socketplane, Method::POST, "/containers/c1/start"),
        ["POST /*/containers/*/start", "POST /containers/*/start"]
    );
    assert_eq!(
        hit(&socketplane, Method::POST, "/v1.17/containers/c1/start"),
        ["POST /*/containers/*/start"]
    );
    assert_eq!(
        hit(&socketplane, Method::DELETE, "/containers/c1"),
        ["DELETE /*/containers/*", "DELETE /containers/*"]
    );

    // powerstrip-flocker's k8s-compat branch hooks start too, with unversioned twins.
    let flocker = load(
        r#"endpoints:
  "POST /*/containers/create":
    pre: [flocker]
  "POST /*/containers/*/start":
    pre: [flocker]
  "POST /containers/create":
    pre: [flocker]
  "POST /containers/*/start":
    pre: [flocker]
adapters:
  flocker: http://flocker/flocker-adapter
"#,
    );
    assert_eq!(
        flocker
            .hooks_for(&Method::POST, "/containers/create")
            .pre
            .len(),
        2
    );
    assert_eq!(
        flocker
            .hooks_for(&Method::POST, "/v1.18/containers/create")
            .pre
            .len(),
        1
    );

    // powerstrip-debug's README: debug before and after another adapter.
    let debug = load(
        r#"endpoints:
  "POST /*/containers/create":
    pre: [debug, weave, debug]
adapters:
  debug: http://debug/v1/extension
  weave: http://weave/v1/extension
"#,
    );
    let names: Vec<String> = debug
        .hooks_for(&Method::POST, "/v1.18/containers/create")
        .pre
        .iter()
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(names, ["debug", "weave", "debug"]);
}

/// The keys Powerstrip accepted and busbar refused before issue 18.
#[test]
fn keys_busbar_once_refused() {
    let set = load(
        r#"endpoints:
  "POST */containers/create":
    pre: [a]
  "* */containers/create":
    pre: [a]
  "P* /*/containers/*/start":
    post: [a]
adapters:
  a: http://a/
"#,
    );
    assert_eq!(
        hit(&set, Method::POST, "/v1.41/containers/create"),
        ["POST */containers/create", "* */containers/create"]
    );
    assert_eq!(
        hit(&set, Method::PUT, "/containers/create"),
        ["* */containers/create"]
    );
    assert_eq!(
        hit(&set, Method::POST, "/containers/c/start"),
        ["P* /*/containers/*/start"]
    );
}
