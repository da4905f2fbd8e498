//! etcd over TLS, with client certificates and authentication, end to end (issue #6): a
//! private etcd (`--client-cert-auth`, `auth enable`, a 2-second token TTL) on free loopback
//! ports with a CA and certificates made here, set up as `deploy/etcd.md` says (a `busbar`
//! user whose role covers only the test's prefix), and the real `busbarctl`, `busbar-agent`
//! and `busbar-gateway` run against it the way an operator would: good settings work, and
//! each usual mistake (no password, a wrong one, no user, a wrong CA, plaintext to a TLS
//! port) gives a one-line error that says so.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::Value;
use support::{binary, make_certs, tls_args, Process, TempDir};
use testbed::{free_port, output_with_timeout, unique_name, wait_until};

/// The password of the `busbar` user.
const PASSWORD: &str = "s3cret-Pass";
/// etcd's token TTL: short, so that the clients' tokens expire during the test and must be
/// fetched again without anyone noticing.
const TOKEN_TTL_SECS: u64 = 2;

/// The PEM files for etcd and its clients.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    /// CN=busbar-ops: not an etcd user, so it grants nothing by itself.
    client: (PathBuf, PathBuf),
    /// A CA that signed nothing etcd has.
    other_ca: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, key)
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    sans: Vec<SanType>,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.subject_alt_names = sans;
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        let (params, key) = ca("etcd test CA");
        let ca_path = dir.join("etcd-ca.pem");
        std::fs::write(&ca_path, params.self_signed(&key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(params, key);
        let loopback = SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // clientAuth too: etcd dials its own client URL with it (its gRPC gateway).
        let both = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server = leaf(dir, "etcd-server", &issuer, both, vec![loopback]);
        let client = leaf(
            dir,
            "busbar-ops",
            &issuer,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            vec![],
        );
        let (other, other_key) = ca("another CA");
        let other_ca = dir.join("other-ca.pem");
        std::fs::write(&other_ca, other.self_signed(&other_key).unwrap().pem()).unwrap();
        Pki {
            ca: ca_path,
            server,
            client,
            other_ca,
        }
    }
}

/// A TLS-only etcd with client certificate auth, killed when dropped.
struct SecureEtcd {
    url: String,
    _process: Process,
}

impl SecureEtcd {
    /// Starts etcd, then makes `root` and a `busbar` user who may read and write `prefix`,
    /// and turns authentication on.
    fn start(dir: &Path, pki: &Pki, prefix: &str) -> SecureEtcd {
        let (port, peer_port) = (free_port(), free_port());
        let url = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let path = |p: &Path| p.display().to_string();
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            "secure",
            "--data-dir",
            &path(&dir.join("etcd-data")),
        ])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("secure={peer}")])
        .args([
            "--cert-file",
            &path(&pki.server.0),
            "--key-file",
            &path(&pki.server.1),
        ])
        .args(["--trusted-ca-file", &path(&pki.ca), "--client-cert-auth"])
        .args(["--auth-token-ttl", &TOKEN_TTL_SECS.to_string()]);
        let process = Process::start_cmd(cmd);
        let etcd = SecureEtcd {
            url,
            _process: process,
        };
        let up = wait_until(Duration::from_secs(20), || {
            etcd.etcdctl(pki, &["endpoint", "health"]).status.success()
        });
        assert!(
            up,
            "the TLS etcd did not become healthy: {}",
            etcd._process.log_tail()
        );
        let (grant, user) = (format!("{prefix}/"), format!("busbar:{PASSWORD}"));
        let setup: [&[&str]; 6] = [
            &["user", "add", "root:root-only"],
            &["role", "add", "busbar"],
            &[
                "role",
                "grant-permission",
                "busbar",
                "--prefix=true",
                "readwrite",
                &grant,
            ],
            &["user", "add", &user],
            &["user", "grant-role", "busbar", "busbar"],
            &["auth", "enable"],
        ];
        for args in setup {
            let out = etcd.etcdctl(pki, args);
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        etcd
    }

    /// `etcdctl` with the client certificate.
    fn etcdctl(&self, pki: &Pki, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.url,
                "--dial-timeout",
                "1s",
                "--command-timeout",
                "2s",
            ])
            .args(["--cacert", &pki.ca.display().to_string()])
            .args([
                "--cert",
                &pki.client.0.display().to_string(),
                "--key",
                &pki.client.1.display().to_string(),
            ])
            .args(args);
        output_with_timeout(&mut cmd, None, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// `--etcd URL --etcd-ca CA --etcd-cert C --etcd-key K --etcd-prefix P`.
fn etcd_args(url: &str, ca: &Path, pki: &Pki, prefix: &str) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        "--etcd".into(),
        url.into(),
        "--etcd-ca".into(),
        p(ca),
        "--etcd-cert".into(),
        p(&pki.client.0),
        "--etcd-key".into(),
        p(&pki.client.1),
        "--etcd-prefix".into(),
        prefix.into(),
    ]
}

/// Runs `busbarctl` with `args`, the password (if any) in `BUSBAR_ETCD_PASSWORD`.
fn busbarctl(args: &[String], password: Option<&str>) -> Output {
    let mut cmd = Command::new(binary("busbarctl"));
    cmd.args(args).env_remove("BUSBAR_ETCD_PASSWORD");
    if let Some(pw) = password {
        cmd.env("BUSBAR_ETCD_PASSWORD", pw);
    }
    output_with_timeout(&mut cmd, None, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e:#}"))
}

fn with(base: &[String], more: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed run whose one-line error names `url` and says `cause`.
fn assert_refused(out: &Output, code: i32, url: &str, cause: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        err.contains(cause) && err.contains(url),
        "expected {cause:?} naming {url}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// `busbarctl --json nodes`: each node's name and the etcd revision of the chain view it
/// reports (0: none yet), which is at or after the revision of the last document applied.
fn nodes(base: &[String]) -> Vec<(String, i64)> {
    let out = busbarctl(
        &with(base, &["--etcd-user", "busbar", "--json", "nodes"]),
        Some(PASSWORD),
    );
    assert!(out.status.success(), "busbarctl nodes: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"]["name"].as_str().unwrap().to_owned(),
                n["chains"]["revision"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn chain_doc(dir: &TempDir, adapter: &str) -> PathBuf {
    let path = dir.join(&format!("{adapter}.yml"));
    let doc = format!(
        "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [{adapter}]\nadapters:\n  {adapter}: http://127.0.0.1:9/{adapter}\n"
    );
    std::fs::write(&path, doc).unwrap();
    path
}

fn applied_revision(out: &Output) -> i64 {
    assert!(out.status.success(), "chain apply: {}", stderr(out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["revision"]
        .as_i64()
        .unwrap()
}

#[test]
fn tls_client_certificates_and_authentication_work_and_their_failures_are_clear() {
    testbed::e2e!();
    let dir = TempDir::new();
    let pki = Pki::make(&dir.0);
    let prefix = format!("/{}", unique_name("bbsecure"));
    let etcd = SecureEtcd::start(&dir.0, &pki, &prefix);
    let url = etcd.url.clone();
    let good = etcd_args(&url, &pki.ca, &pki, &prefix);
    let password_file = dir.join("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let password_file = password_file.display().to_string();

    // busbarctl with TLS, the client certificate and busbar's password (from the environment,
    // then from a file): apply a chain document, and read it back.
    let first = chain_doc(&dir, "first");
    let out = busbarctl(
        &with(
            &good,
            &[
                "--etcd-user",
                "busbar",
                "--json",
                "chain",
                "apply",
                "-f",
                first.to_str().unwrap(),
            ],
        ),
        Some(PASSWORD),
    );
    let r1 = applied_revision(&out);
    let out = busbarctl(
        &with(
            &good,
            &[
                "--etcd-user",
                "busbar",
                "--etcd-password-file",
                &password_file,
                "chain",
                "get",
            ],
        ),
        None,
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chain get: {}", stderr(&out));
    assert!(
        got.contains("# scope: global") && got.contains("http://127.0.0.1:9/first"),
        "{got}"
    );

    // The usual mistakes, each a one-line error that says what is wrong.
    let out = busbarctl(
        &with(&good, &["--etcd-user", "busbar", "chain", "get"]),
        None,
    );
    assert_refused(&out, 64, "--etcd-user busbar", "no password");
    let out = busbarctl(
        &with(&good, &["--etcd-user", "busbar", "chain", "get"]),
        Some("wrong"),
    );
    assert_refused(&out, 1, &url, "authentication failed");
    let out = busbarctl(&with(&good, &["chain", "get"]), None);
    assert_refused(&out, 1, "etcd: get", "permission denied");
    let wrong_ca = etcd_args(&url, &pki.other_ca, &pki, &prefix);
    let out = busbarctl(
        &with(&wrong_ca, &["--etcd-user", "busbar", "chain", "get"]),
        Some(PASSWORD),
    );
    assert_refused(&out, 1, &url, "certificate not trusted");
    let plain = url.replace("https://", "http://");
    let out = busbarctl(
        &["--etcd".into(), plain.clone(), "chain".into(), "get".into()],
        None,
    );
    assert_refused(&out, 1, &plain, "use https://");
    let missing = dir.join("missing-ca.pem");
    let out = busbarctl(
        &with(&etcd_args(&url, &missing, &pki, &prefix), &["chain", "get"]),
        None,
    );
    assert_refused(&out, 64, "missing-ca.pem", "--etcd-ca");

    // An agent with the same settings (password from a file) registers and runs the chain;
    // `busbarctl nodes` lists it with the revision it applied.
    let busbar_certs = TempDir::new();
    make_certs(&busbar_certs.0, &[("node1", "127.0.0.1")]);
    let state = TempDir::new();
    let agent_cmd = |password_file: &str| {
        let mut cmd = Command::new(binary("busbar-agent"));
        cmd.args(["--docker", "unix:///nonexistent/docker.sock"])
            .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
            .args(tls_args(&busbar_certs.0, "node1"))
            .args(&good)
            .args([
                "--etcd-user",
                "busbar",
                "--etcd-password-file",
                password_file,
            ])
            .args([
                "--state-dir",
                &state.0.display().to_string(),
                "--registration-ttl",
                "2",
            ])
            .env_remove("BUSBAR_ETCD_PASSWORD");
        cmd
    };
    let agent = Process::start_cmd(agent_cmd(&password_file));
    let node1_at =
        |rev: i64| matches!(nodes(&good).as_slice(), [(name, at)] if name == "node1" && *at >= rev);
    let seen = wait_until(Duration::from_secs(10), || node1_at(r1));
    assert!(
        seen,
        "node1 at revision {r1} is not listed: {:?}\n{}",
        nodes(&good),
        agent.log_tail()
    );

    // Past the token TTL, the agent's token has expired: it fetches a new one by itself (its
    // status write, after applying the new document, is what shows the new revision).
    std::thread::sleep(Duration::from_secs(TOKEN_TTL_SECS + 1));
    let second = chain_doc(&dir, "second");
    let out = busbarctl(
        &with(
            &good,
            &[
                "--etcd-user",
                "busbar",
                "--json",
                "chain",
                "apply",
                "-f",
                second.to_str().unwrap(),
            ],
        ),
        Some(PASSWORD),
    );
    let r2 = applied_revision(&out);
    let seen = wait_until(Duration::from_secs(10), || node1_at(r2));
    assert!(
        seen,
        "node1 did not apply revision {r2}: {:?}\n{}",
        nodes(&good),
        agent.log_tail()
    );

    // An agent with a wrong password starts (it serves, on its cached chains) and says why it
    // cannot use etcd, as an error.
    let wrong_file = dir.join("wrong-password");
    std::fs::write(&wrong_file, "nope\n").unwrap();
    let refused = Process::start_cmd(agent_cmd(&wrong_file.display().to_string()));
    let said = wait_until(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&refused.log).unwrap_or_default();
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("authentication failed") && l.contains(&url))
    });
    assert!(
        said,
        "no clear error from the agent with a wrong password:\n{}",
        refused.log_tail()
    );
    // ... and it runs its cached chain, saying why without calling etcd unreachable.
    let cached = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&refused.log)
            .unwrap_or_default()
            .contains(
                "etcd refused this agent: using the last-known-good adapter chains from the cache",
            )
    });
    let log = std::fs::read_to_string(&refused.log).unwrap_or_default();
    assert!(
        cached && !log.contains("etcd unreachable"),
        "the agent with a wrong password did not say it runs its cache because etcd refused it:\n{}",
        refused.log_tail()
    );
    drop(refused);

    // A gateway with the wrong CA stops at start, naming etcd and the cause.
    let mut gateway = Command::new(binary("busbar-gateway"));
    gateway
        .args(["--listen", &format!("tcp://127.0.0.1:{}", free_port())])
        .args(tls_args(&busbar_certs.0, "gateway"))
        .args(&wrong_ca)
        .args([
            "--etcd-user",
            "busbar",
            "--etcd-password-file",
            &password_file,
        ]);
    let out = output_with_timeout(&mut gateway, None, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("certificate not trusted") && err.contains(&url),
        "{err}"
    );

    // With the right settings the gateway starts and serves the cluster from the TLS etcd.
    let mut args = tls_args(&busbar_certs.0, "gateway");
    args.extend(good.iter().cloned());
    args.extend([
        "--etcd-user".into(),
        "busbar".into(),
        "--etcd-password-file".into(),
        password_file.clone(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Process::gateway(&args);
    let log = std::fs::read_to_string(&gateway.log).unwrap_or_default();
    assert!(
        log.contains("serving a cluster") && log.contains(&url),
        "{log}"
    );
    drop(agent);
}
