//! Security, the Docker way, with the real `docker` CLI against the test bed's engine:
//!
//! - `docker --tlsverify` through a gateway (and a standalone agent) with a client
//!   certificate works; without one, or with one from another CA, the handshake refuses;
//! - the adapter (run by the agent, across the gateway's gRPC hop) is told who the client is,
//!   and a client that sends the identity headers itself (the CLI's `HttpHeaders`) does not
//!   get them through;
//! - the default embedded gateway serves its unix socket to the `docker` group and refuses
//!   everyone else;
//! - `docker pull` and `docker login` credentials reach neither adapters nor a debug log.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::adapters::{null, FakeAdapter};
use support::{binary, busbarctl, expose, make_certs, tls_args, Process, TempDir};
use testbed::{docker_command, docker_ok, free_port, output_with_timeout, Testbed, DOCKER_TIMEOUT};

/// Runs `docker -H url ARGS` with `DOCKER_CONFIG` (and any other variables) set.
fn docker_env(url: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = docker_command(url, args);
    cmd.envs(env.iter().copied());
    output_with_timeout(&mut cmd, stdin, DOCKER_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--tlsverify --tlscacert CA [--tlscert C --tlskey K]`, as Docker's CLI takes them.
fn tls_flags(ca: &Path, me: Option<(&Path, &Path)>) -> Vec<String> {
    let mut f = vec![
        "--tlsverify".to_string(),
        "--tlscacert".into(),
        ca.display().to_string(),
    ];
    if let Some((cert, key)) = me {
        f.extend([
            "--tlscert".into(),
            cert.display().to_string(),
            "--tlskey".into(),
            key.display().to_string(),
        ]);
    }
    f
}

fn with<'a>(flags: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    flags
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect()
}

/// A chain file in `dir` with a pre-hook on every create, to `url`.
fn create_chain(dir: &TempDir, url: &str) -> String {
    let path = dir.join("adapters.yml");
    std::fs::write(
        &path,
        format!("endpoints:\n  \"POST /*/containers/create\":\n    pre: [who]\nadapters:\n  who: {url}\n"),
    )
    .unwrap();
    path.display().to_string()
}

/// A Docker CLI configuration directory whose `config.json` is `json`.
fn docker_config(dir: &TempDir, json: &str) -> String {
    let d = dir.join("docker-config");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), json).unwrap();
    d.display().to_string()
}

/// The identity headers of the adapter's calls, one `(user, method)` per call.
fn identities(adapter: &FakeAdapter) -> Vec<(Option<String>, Option<String>)> {
    let value =
        |h: &hyper::HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    adapter
        .headers()
        .iter()
        .map(|h| (value(h, "x-busbar-user"), value(h, "x-busbar-auth-method")))
        .collect()
}

#[test]
fn docker_tlsverify_through_the_gateway_names_the_client_to_the_agents_adapter() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let certs = TempDir::new();
    let addr = host.addr().unwrap().to_string();
    make_certs(&certs.0, &[("node1", &addr)]);
    let d = certs.0.display().to_string();
    for (name, role, san) in [
        ("front", "gateway", Some("127.0.0.1")),
        ("alice", "client", None),
    ] {
        let mut args = vec![
            "certs", "issue", "--dir", &d, "--name", name, "--role", role,
        ];
        if let Some(san) = san {
            args.extend(["--san", san]);
        }
        assert!(busbarctl(&args).status.success(), "issue {name}");
    }
    let adapter = FakeAdapter::start(null);
    let chains = TempDir::new();
    let url = expose(&adapter.url, host.gateway_addr().unwrap());
    let config = create_chain(&chains, &url);
    let (_agent, agent_addr) = Process::agent_in(host, "node1", &certs.0, &["--config", &config]);
    let port = free_port();
    let f = |name: &str| certs.join(name).display().to_string();
    let mut args = vec!["--agent".to_string(), format!("node1={agent_addr}")];
    args.extend(tls_args(&certs.0, "gateway"));
    args.extend([
        "--tls-listen".into(),
        format!("127.0.0.1:{port}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        f("ca.pem"),
        "--tlscert".into(),
        f("front.pem"),
        "--tlskey".into(),
        f("front-key.pem"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    let tls_url = format!("tcp://127.0.0.1:{port}");

    // alice, with her client certificate: works, and the adapter behind the agent knows her.
    let ca = certs.join("ca.pem");
    let alice = tls_flags(
        &ca,
        Some((&certs.join("alice.pem"), &certs.join("alice-key.pem"))),
    );
    assert_eq!(
        docker_ok(
            &tls_url,
            &with(&alice, &["run", "--rm", "busybox", "echo", "hello"])
        ),
        "hello"
    );
    assert_eq!(
        identities(&adapter).last().cloned(),
        Some((Some("alice".into()), Some("TLS".into())))
    );
    // Claiming to be root in headers the CLI sends (config.json HttpHeaders) changes nothing.
    let forging = TempDir::new();
    let config_dir = docker_config(
        &forging,
        r#"{"HttpHeaders": {"X-Busbar-User": "root", "X-Busbar-Auth-Method": "TLS"}}"#,
    );
    let out = docker_env(
        &tls_url,
        &with(&alice, &["run", "--rm", "busybox", "true"]),
        &[("DOCKER_CONFIG", &config_dir)],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        identities(&adapter).last().cloned(),
        Some((Some("alice".into()), Some("TLS".into())))
    );
    // On the gateway's plain loopback listener there is no identity, and a forged one is
    // dropped.
    let out = docker_env(
        &gateway.url,
        &["run", "--rm", "busybox", "true"],
        &[("DOCKER_CONFIG", &config_dir)],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(identities(&adapter).last().cloned(), Some((None, None)));
    for h in adapter.headers() {
        for secret in ["authorization", "x-registry-auth", "cookie"] {
            assert!(!h.contains_key(secret), "{secret} reached the adapter");
        }
    }

    // No client certificate: refused in the handshake.
    let out = docker_env(&tls_url, &with(&tls_flags(&ca, None), &["ps"]), &[], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("certificate required"),
        "{}",
        text(&out)
    );
    // A client certificate from another CA: refused too.
    let other = TempDir::new();
    let o = other.0.display().to_string();
    assert!(busbarctl(&["certs", "init", "--dir", &o]).status.success());
    assert!(
        busbarctl(&["certs", "issue", "--dir", &o, "--name", "mallory", "--role", "client"])
            .status
            .success()
    );
    let mallory = tls_flags(
        &ca,
        Some((&other.join("mallory.pem"), &other.join("mallory-key.pem"))),
    );
    let out = docker_env(&tls_url, &with(&mallory, &["ps"]), &[], None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tls:"), "{}", text(&out));
    // The cluster CA is busbar's: the node's own certificate is no client's.
    let node = tls_flags(
        &ca,
        Some((&certs.join("node1.pem"), &certs.join("node1-key.pem"))),
    );
    let out = docker_env(&tls_url, &with(&node, &["ps"]), &[], None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        gateway
            .log_text()
            .contains("peer certificate CN=node1 has role agent; only client may connect"),
        "{}",
        gateway.log_tail()
    );
}

/// An operator's CA made with openssl, as Docker's "Protect the Docker daemon socket" does:
/// `ca.pem`; `server.pem`/`server-key.pem` for 127.0.0.1; and, laid out for
/// `DOCKER_CERT_PATH`, `client/{ca,cert,key}.pem` with CN=carol.
fn openssl_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    std::fs::create_dir_all(dir.join("client")).unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Example Corp CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=docker-host",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client/key.pem",
        "-out",
        "client.csr",
        "-subj",
        "/CN=carol",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        "client/cert.pem",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
    std::fs::copy(dir.join("ca.pem"), dir.join("client/ca.pem")).unwrap();
}

#[test]
fn a_standalone_agent_serves_docker_tlsverify_to_an_openssl_cas_client_in_docker_cert_path() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let pki = TempDir::new();
    openssl_ca(&pki.0);
    let adapter = FakeAdapter::start(null);
    let chains = TempDir::new();
    let config = create_chain(&chains, &adapter.url);
    let port = free_port();
    let f = |name: &str| pki.join(name).display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let _agent = Process::agent(
        &engine,
        &[
            "--tls-listen",
            &listen,
            "--tlsverify",
            "--tlscacert",
            &f("ca.pem"),
            "--tlscert",
            &f("server.pem"),
            "--tlskey",
            &f("server-key.pem"),
            "--config",
            &config,
        ],
    );
    let tls_url = format!("tcp://{listen}");

    // DOCKER_CERT_PATH with ca.pem, cert.pem, key.pem and DOCKER_TLS_VERIFY=1: the CLI's
    // own convention.
    let cert_path = f("client");
    let out = docker_env(
        &tls_url,
        &["run", "--rm", "busybox", "echo", "hello"],
        &[("DOCKER_CERT_PATH", &cert_path), ("DOCKER_TLS_VERIFY", "1")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    assert_eq!(
        identities(&adapter).last().cloned(),
        Some((Some("carol".into()), Some("TLS".into())))
    );

    // Without a client certificate, or with busbar's (another CA): refused.
    let ca = pki.join("ca.pem");
    let out = docker_env(&tls_url, &with(&tls_flags(&ca, None), &["ps"]), &[], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("certificate required"),
        "{}",
        text(&out)
    );
    let busbar = TempDir::new();
    make_certs(&busbar.0, &[]);
    let ops = tls_flags(
        &ca,
        Some((&busbar.join("ops.pem"), &busbar.join("ops-key.pem"))),
    );
    let out = docker_env(&tls_url, &with(&ops, &["ps"]), &[], None);
    assert!(!out.status.success(), "{}", text(&out));

    // TLS that would authenticate no one is refused beyond loopback, as plain TCP is.
    let out = Command::new(binary("busbar-agent"))
        .args([
            "--docker",
            &engine,
            "--tls-listen",
            "0.0.0.0",
            "--tlscert",
            &f("server.pem"),
            "--tlskey",
            &f("server-key.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("without --tlsverify"), "{}", text(&out));
}

/// A throwaway local account, removed (with its group) when dropped.
struct User {
    name: String,
}

impl User {
    fn new(prefix: &str, groups: &[&str]) -> User {
        let name = format!("{prefix}{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let mut cmd = Command::new("useradd");
        cmd.args(["--no-create-home", "--shell", "/usr/sbin/nologin"]);
        if !groups.is_empty() {
            cmd.args(["--groups", &groups.join(",")]);
        }
        let out = cmd.arg(&name).output().expect("useradd runs");
        assert!(out.status.success(), "useradd {name}: {}", text(&out));
        User { name }
    }

    /// `docker -H url ARGS` run as this user (its own groups only), via setpriv.
    fn docker(&self, url: &str, args: &[&str], config: &str) -> Output {
        let gid = Command::new("id")
            .args(["-g", &self.name])
            .output()
            .unwrap();
        let gid = String::from_utf8_lossy(&gid.stdout).trim().to_owned();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", &self.name, "--regid", &gid, "--init-groups"])
            .arg(testbed::docker::docker_program())
            .args(["-H", url])
            .args(args)
            .env_remove("DOCKER_HOST")
            .env("DOCKER_CONFIG", config)
            .env("DOCKER_CLI_HINTS", "false");
        output_with_timeout(&mut cmd, None, DOCKER_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The group `docker`, made for the test if the machine has none (and removed after).
struct DockerGroup {
    made: bool,
}

impl DockerGroup {
    fn ensure() -> DockerGroup {
        let exists = Command::new("getent")
            .args(["group", "docker"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let out = Command::new("groupadd").arg("docker").output().unwrap();
            assert!(out.status.success(), "groupadd docker: {}", text(&out));
        }
        DockerGroup { made: !exists }
    }
}

impl Drop for DockerGroup {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("groupdel").arg("docker").output();
        }
    }
}

#[test]
fn the_default_socket_serves_the_docker_group_and_refuses_everyone_else() {
    testbed::e2e!();
    const SOCKET: &str = "/run/busbar.sock";
    assert!(
        std::os::unix::net::UnixStream::connect(SOCKET).is_err(),
        "another busbar serves {SOCKET}: stop it to run this test"
    );
    let engine = Testbed::shared().hosts()[0].docker_url();
    let group = DockerGroup::ensure();
    let member = User::new("bbtm", &["docker"]);
    let stranger = User::new("bbto", &[]);
    let config = TempDir::new();
    std::fs::write(config.join("config.json"), "{}").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            config.join("config.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let config = config.0.display().to_string();

    // busbar-gateway with no --listen: the Quick start's command.
    let mut cmd = Command::new(binary("busbar-gateway"));
    cmd.args(["--docker", &engine]);
    let mut gateway = Process::start_cmd(cmd);
    let up = testbed::wait_until(Duration::from_secs(15), || {
        std::os::unix::net::UnixStream::connect(SOCKET).is_ok()
    });
    assert!(up, "no socket at {SOCKET}:\n{}", gateway.log_tail());
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(SOCKET).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        let docker_gid = Command::new("getent")
            .args(["group", "docker"])
            .output()
            .unwrap();
        let docker_gid: u32 = String::from_utf8_lossy(&docker_gid.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("the docker group's gid");
        assert_eq!(meta.gid(), docker_gid, "the socket's group is docker");
    }
    let url = format!("unix://{SOCKET}");

    let out = member.docker(&url, &["run", "--rm", "busybox", "echo", "hello"], &config);
    assert!(
        out.status.success(),
        "a docker group member: {}",
        text(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    let out = stranger.docker(&url, &["run", "--rm", "busybox", "echo", "hello"], &config);
    assert!(
        !out.status.success(),
        "a non-member got through: {}",
        text(&out)
    );
    assert!(text(&out).contains("permission denied"), "{}", text(&out));

    assert!(
        gateway.log_text().contains("members of group docker"),
        "{}",
        gateway.log_tail()
    );
    gateway.terminate();
    assert!(
        !Path::new(SOCKET).exists(),
        "the socket is removed on SIGTERM"
    );
    drop(group);
}

#[test]
fn pull_and_login_credentials_reach_neither_adapters_nor_the_debug_log() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let adapter = FakeAdapter::start(null);
    let chains = TempDir::new();
    let path = chains.join("adapters.yml");
    // Hooks on every call: even a catch-all chain gets no credential.
    std::fs::write(
        &path,
        format!(
            "endpoints:\n  \"* /*\":\n    pre: [all]\n    post: [all]\nadapters:\n  all: {}\n",
            adapter.url
        ),
    )
    .unwrap();
    let agent = Process::agent_env(
        &engine,
        &["--config", path.to_str().unwrap()],
        &[("RUST_LOG", "debug")],
    );
    // The CLI finds these credentials for the registry and sends them as X-Registry-Auth.
    let dir = TempDir::new();
    let basic = "Ym9iOnNlY3JldC1wdWxsLXBhc3N3b3Jk"; // bob:secret-pull-password
    let config = docker_config(
        &dir,
        &format!(r#"{{"auths": {{"127.0.0.1:1": {{"auth": "{basic}"}}}}}}"#),
    );
    let env = [("DOCKER_CONFIG", config.as_str())];
    // The engine cannot reach the registry (there is none): the calls fail, after busbar
    // carried them, which is what is checked here.
    let out = docker_env(&agent.url, &["pull", "127.0.0.1:1/app:1"], &env, None);
    assert!(!out.status.success(), "{}", text(&out));
    let out = docker_env(
        &agent.url,
        &[
            "login",
            "127.0.0.1:1",
            "--username",
            "bob",
            "--password-stdin",
        ],
        &env,
        Some(b"secret-login-password\n"),
    );
    assert!(!out.status.success(), "{}", text(&out));

    let requests = adapter.requests("pre-hook");
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/images/create?fromImage=")),
        "the pull ran its hooks: {requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("/auth")),
        "no adapter sees a login: {requests:?}"
    );
    for (call, headers) in adapter.calls().iter().zip(adapter.headers()) {
        assert!(!headers.contains_key("x-registry-auth"), "{call}");
        assert!(!call.to_string().contains("secret"), "{call}");
    }
    let log = agent.log_text();
    assert!(log.contains("response head"), "a debug log:\n{log}");
    assert!(log.contains("hooks skipped"), "{log}");
    for secret in ["secret", basic, "eyJ"] {
        assert!(
            !log.contains(secret),
            "{secret:?} is in the debug log:\n{log}"
        );
    }
}
